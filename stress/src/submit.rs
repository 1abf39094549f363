//! `submit`: the latency of `Pool::submit` itself (an `Instant` around the call), with capacity,
//! at exhaustion under each `PoolExhaustedAction`, and while one hound is stopped.
//!
//! Exhaustion is produced deterministically: a one-hound pool with a 4-job ring limit whose
//! hound is stopped (SIGSTOP, watchdog far away) once its ring is full, so the hound uses no
//! CPU while the refusals are timed. Every stopped hound is resumed before the pool shuts down.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use houndpool::{Job, Outcome, Pool, PoolConfig, PoolExhaustedAction, SubmitError};

use crate::report::{SubmitResult, NOISE_FLOOR};
use crate::util::{
    bench_config, histogram, next_outcome, percentiles, record, wait_all_pids, Ctx, Result,
    Stopped, StressError,
};

/// Body of every timed job.
const BODY: [u8; 64] = [0x5a; 64];
/// Ring limit of the exhaustion pools.
const RING_JOBS: usize = 4;
/// Calls made before timing starts (first-touch page faults of rings and queues).
const WARMUP: usize = 1_000;

/// Runs every case.
pub fn run(ctx: &Ctx) -> Result<Vec<SubmitResult>> {
    let samples = ctx.pick(20_000, 200_000);
    let bar = ctx.bar(6, "submit");
    let mut out = Vec::new();
    let (capacity, floor) = flowing(samples, false)?;
    out.push(result("capacity", &capacity));
    out.push(result(NOISE_FLOOR, &floor));
    bar.inc(1);
    out.push(result(
        "exhausted_drop",
        &exhausted(samples, PoolExhaustedAction::Drop, Expect::Refused)?,
    ));
    bar.inc(1);
    out.push(result(
        "exhausted_escalate",
        &exhausted(samples, PoolExhaustedAction::Escalate, Expect::Refused)?,
    ));
    bar.inc(1);
    out.push(result(
        "exhausted_defer_queued",
        &exhausted(
            samples,
            PoolExhaustedAction::Defer {
                limit: samples + WARMUP + 16,
            },
            Expect::Accepted,
        )?,
    ));
    bar.inc(1);
    out.push(result(
        "exhausted_defer_full",
        &exhausted(
            samples,
            PoolExhaustedAction::Defer { limit: 64 },
            Expect::Refused,
        )?,
    ));
    bar.inc(1);
    out.push(result("hound_stopped", &flowing(samples, true)?.0));
    bar.inc(1);
    bar.finish_and_clear();
    Ok(out)
}

fn result(case: &str, h: &Histogram<u64>) -> SubmitResult {
    let (p50, p99, p999, max) = percentiles(h, 1.0);
    SubmitResult {
        case: case.to_string(),
        p50_ns: p50,
        p99_ns: p99,
        p999_ns: p999,
        max_ns: max,
    }
}

fn outcomes(pool: &Pool) -> Result<Receiver<Outcome>> {
    pool.outcomes()
        .ok_or_else(|| StressError::Unexpected("outcome channel disabled".into()))
}

/// A two-hound pool with room: submit, keep at most 16 of our jobs outstanding on the live
/// hound(s). With `stop_one`, hound 0 is stopped for the whole measurement. Returns the submit
/// latencies and, timed the same way right after each submit, those of an empty call (the
/// noise floor).
fn flowing(samples: usize, stop_one: bool) -> Result<(Histogram<u64>, Histogram<u64>)> {
    let pool = Pool::builder()
        .config(PoolConfig {
            exhausted: PoolExhaustedAction::Drop,
            job_timeout: Duration::from_secs(60),
            ..bench_config(2)
        })
        .build()?;
    let rx = outcomes(&pool)?;
    let pids = wait_all_pids(&pool, Duration::from_secs(10))?;
    let mut stopped = Stopped::default();
    if stop_one && !stopped.stop(pids[0]) {
        return Err(StressError::Unexpected("could not stop hound 0".into()));
    }
    // Jobs parked in the stopped hound's ring never return while it is stopped.
    let limit = 16 + if stop_one { 64 } else { 0 };
    let job = Job::noop(&BODY);
    let mut h = histogram();
    let mut floor = histogram();
    let mut outstanding = 0usize;
    for i in 0..WARMUP + samples {
        let t = Instant::now();
        let r = pool.submit(&job);
        let d = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(&job);
        let empty = t.elapsed();
        if i >= WARMUP {
            record(&mut h, d);
            record(&mut floor, empty);
        }
        match r {
            Ok(_) => outstanding += 1,
            Err(SubmitError::PoolExhausted) => {}
            Err(e) => return Err(e.into()),
        }
        while rx.try_recv().is_ok() {
            outstanding = outstanding.saturating_sub(1);
        }
        while outstanding >= limit {
            next_outcome(&rx, Duration::from_micros(50), Duration::from_secs(20))?;
            outstanding -= 1;
        }
    }
    stopped.resume_all();
    pool.shutdown(Duration::from_secs(10));
    Ok((h, floor))
}

/// What every timed call must return in an exhaustion case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Refused,
    Accepted,
}

/// A one-hound pool whose ring is full and whose hound is stopped.
fn exhausted(
    samples: usize,
    action: PoolExhaustedAction,
    expect: Expect,
) -> Result<Histogram<u64>> {
    let pool = Pool::builder()
        .config(PoolConfig {
            exhausted: action,
            max_in_flight_per_hound: RING_JOBS,
            job_timeout: Duration::from_secs(60),
            ..bench_config(1)
        })
        .build()?;
    let pids = wait_all_pids(&pool, Duration::from_secs(10))?;
    let mut stopped = Stopped::default();
    if !stopped.stop(pids[0]) {
        return Err(StressError::Unexpected("could not stop the hound".into()));
    }
    let job = Job::noop(&BODY);
    // Fill the ring (and, when refusals are timed under Defer, the queue) until the first
    // refusal; when acceptances are timed, just the ring. The collector may hold a deferred
    // job in hand while it looks for ring space, so fill by result, not by count.
    match expect {
        Expect::Accepted => {
            for _ in 0..RING_JOBS {
                pool.submit(&job)?;
            }
        }
        Expect::Refused => {
            let bound = RING_JOBS
                + 16
                + match action {
                    PoolExhaustedAction::Defer { limit } => limit,
                    _ => 0,
                };
            let mut refused = false;
            for _ in 0..bound {
                match pool.submit(&job) {
                    Ok(_) => {}
                    Err(SubmitError::PoolExhausted | SubmitError::DeferQueueFull { .. }) => {
                        refused = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !refused {
                return Err(StressError::Unexpected(format!(
                    "exhaustion case {action:?}: still accepting after {bound} jobs"
                )));
            }
        }
    }
    let mut h = histogram();
    let mut unexpected = 0usize;
    for i in 0..WARMUP + samples {
        let t = Instant::now();
        let r = pool.submit(&job);
        let d = t.elapsed();
        if i >= WARMUP {
            record(&mut h, d);
        }
        let ok = match (r, expect) {
            (Ok(_), Expect::Accepted) => true,
            (Err(SubmitError::PoolExhausted), Expect::Refused) => {
                !matches!(action, PoolExhaustedAction::Defer { .. })
            }
            (Err(SubmitError::DeferQueueFull { .. }), Expect::Refused) => {
                matches!(action, PoolExhaustedAction::Defer { .. })
            }
            _ => false,
        };
        unexpected += usize::from(!ok);
    }
    let in_rings = pool.stats().in_rings;
    stopped.resume_all();
    let stats = pool.shutdown(Duration::from_secs(30));
    // The collector takes a deferred job out of the queue while it looks for ring space and
    // puts it back when there is none; a submit in that instant finds a free queue place. So a
    // few acceptances in the queue-full case are legitimate; anything more means the case did
    // not measure exhaustion.
    if unexpected > samples / 100 || in_rings != RING_JOBS as u64 {
        return Err(StressError::Unexpected(format!(
            "exhaustion case {action:?}: {unexpected} calls did not return the expected result \
             ({expect:?}); {in_rings} jobs in the ring (expected {RING_JOBS})"
        )));
    }
    if stats.in_flight != 0 || stats.completed != stats.accepted {
        return Err(StressError::Unexpected(format!(
            "exhaustion case {action:?}: after shutdown {} accepted, {} completed, {} in flight",
            stats.accepted, stats.completed, stats.in_flight
        )));
    }
    Ok(h)
}
