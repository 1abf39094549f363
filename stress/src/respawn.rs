//! `respawn`: time from a hound's death (SIGKILL) to its replacement being ready — the moment
//! the slot shows a new pid in `stats()`, which the supervisor sets only after the new hound
//! completed its handshake and confined itself. Polled every 50 µs.
//!
//! The supervisor restarts a slot at once for its first three restarts within a second and
//! backs off after that (crash-loop protection). To measure the spawn and not the back-off,
//! kills go round-robin over four hounds, one every 100 ms, so each slot dies at most every
//! 400 ms.

use std::time::{Duration, Instant};

use houndpool::Pool;
use nix::sys::signal::Signal;

use crate::report::RespawnResult;
use crate::util::{
    fault_injection_config, histogram, percentiles, record, signal_child, wait_all_pids, Ctx,
    Result, StressError,
};

const HOUNDS: usize = 4;
const KILL_INTERVAL: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_micros(50);
const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills `kills` hounds one after another and measures each replacement.
pub fn run(ctx: &Ctx) -> Result<RespawnResult> {
    let kills = ctx.pick(20, 200);
    let pool = Pool::builder()
        .config(fault_injection_config(HOUNDS))
        .build()?;
    let r = measure(ctx, &pool, kills);
    pool.shutdown(Duration::from_secs(5));
    r
}

fn measure(ctx: &Ctx, pool: &Pool, kills: usize) -> Result<RespawnResult> {
    let bar = ctx.bar(kills as u64, "respawn");
    let mut h = histogram();
    wait_all_pids(pool, REPLACEMENT_TIMEOUT)?;
    let start = Instant::now();
    for i in 0..kills {
        // Pace the kills (see the module doc).
        let due = start + KILL_INTERVAL * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let slot = i % HOUNDS;
        let old = wait_all_pids(pool, REPLACEMENT_TIMEOUT)?[slot];
        if !signal_child(old, Signal::SIGKILL) {
            return Err(StressError::Unexpected(format!(
                "hound {old} of slot {slot} is not a live child of this process"
            )));
        }
        let killed = Instant::now();
        loop {
            let pid = pool.stats().hounds.get(slot).and_then(|h| h.pid);
            if pid.is_some_and(|p| p != old) {
                record(&mut h, killed.elapsed());
                break;
            }
            if killed.elapsed() > REPLACEMENT_TIMEOUT {
                return Err(StressError::Unexpected(format!(
                    "slot {slot}: no replacement within {REPLACEMENT_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (p50, p99, _, _) = percentiles(&h, 1e6);
    Ok(RespawnResult {
        p50_ms: p50,
        p99_ms: p99,
    })
}
