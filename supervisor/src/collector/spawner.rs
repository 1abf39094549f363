//! The spawner thread: starts hounds on the collector's order (and keeps one prestarted spare),
//! so that a slow spawn never stalls completions.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use crate::spawn::{handshake, prestart, spawn_hound, Prestarted, Spawned};
use crate::state::Books;
use crate::PoolError;

/// A request to (re)fill a slot.
pub(super) struct SpawnOrder {
    pub(super) slot: u32,
    pub(super) generation: u64,
    pub(super) not_before: Instant,
}

pub(super) type SpawnResult = Result<Spawned, (u32, u64, PoolError)>;

/// How long a prestarted spare may wait for its slot before it is replaced by a fresh one
/// (well below the hound's own `Hello` wait, [`houndpool_hound::HELLO_TIMEOUT`]).
const SPARE_MAX_AGE: Duration = Duration::from_secs(600);

/// How often an idle spawner looks whether its spare is still alive (one `waitpid(WNOHANG)`):
/// a spare killed while it waits (an operator, the host's OOM killer) is reaped and replaced
/// within this, instead of being reported ready until the next respawn finds it dead.
const SPARE_CHECK: Duration = Duration::from_secs(1);

/// Spares in a row that may die before serving a slot; then no new one is started until the
/// next order (a hound binary that cannot stay up must not make the spawner fork-loop).
const SPARE_DEATHS_IN_A_ROW: u32 = 2;

pub(super) fn spawner_loop(
    sh: Arc<Books>,
    binary: PathBuf,
    pool_id: [u8; 16],
    orders: Receiver<SpawnOrder>,
    results: Sender<SpawnResult>,
) {
    let mut due: Vec<SpawnOrder> = Vec::new();
    // One hound started and placed ahead of demand (see `spawn::Prestarted`).
    let mut spare: Option<Prestarted> = None;
    let mut spare_seq: u64 = 0;
    // Set when starting a spare failed: no new attempt until the next order, so a machine that
    // cannot start hounds does not make the spawner fork-loop (orders carry the back-off).
    let mut spare_failed = false;
    let mut spare_deaths = 0u32;
    loop {
        if let Some(status) = spare.as_mut().and_then(Prestarted::exited) {
            sh.spare_pid.store(0, Ordering::Relaxed);
            spare = None; // reaped by `exited`; its cgroup is removed as it drops
            spare_deaths += 1;
            spare_failed = spare_deaths >= SPARE_DEATHS_IN_A_ROW;
            warn!(%status, replaced = !spare_failed, "the spare hound died while waiting for a slot");
        }
        due.sort_by_key(|o| o.not_before);
        let mut wait = due
            .first()
            .map(|o| o.not_before.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        // Start a spare whenever nothing is due right now.
        if sh.config.prestart && !spare_failed && !wait.is_zero() {
            if spare
                .as_ref()
                .is_some_and(|p| p.started().elapsed() > SPARE_MAX_AGE)
            {
                sh.spare_pid.store(0, Ordering::Relaxed);
                spare = None; // killed, reaped, cgroup removed
            }
            if spare.is_none() && sh.is_running() {
                spare_seq += 1;
                let name = format!("spare-{spare_seq}");
                let span = tracing::debug_span!("hound_prestart", spare = spare_seq);
                let _e = span.enter();
                let manager = sh.cgroups.manager.lock().unwrap_or_else(|p| p.into_inner());
                match prestart(
                    &sh.config,
                    &binary,
                    u32::MAX,
                    &name,
                    manager.as_ref(),
                    &sh.cgroups.layer,
                ) {
                    Ok(p) => {
                        sh.spare_pid.store(p.pid(), Ordering::Relaxed);
                        spare = Some(p);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot start a spare hound; spawning on demand");
                        spare_failed = true;
                    }
                }
                continue; // the spare took time: look at the orders again
            }
            wait = wait.min(SPARE_MAX_AGE);
        }
        if spare.is_some() {
            wait = wait.min(SPARE_CHECK);
        }
        if due.is_empty() || !wait.is_zero() {
            match orders.recv_timeout(wait) {
                Ok(o) => {
                    due.push(o);
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    sh.spare_pid.store(0, Ordering::Relaxed);
                    return; // the spare, if any, is killed and reaped as it drops
                }
            }
        }
        if due.first().is_none_or(|o| o.not_before > Instant::now()) {
            continue;
        }
        let o = due.remove(0);
        spare_failed = false;
        let span = tracing::info_span!("hound_spawn", slot = o.slot, generation = o.generation);
        let _e = span.enter();
        let r = {
            let mut r = None;
            if let Some(p) = spare.take() {
                sh.spare_pid.store(0, Ordering::Relaxed);
                match handshake(p, &sh.config, pool_id, o.slot, o.generation) {
                    Ok(s) => {
                        spare_deaths = 0;
                        r = Some(Ok(s));
                    }
                    // A spare that died or misbehaved while waiting is not the slot's failure:
                    // fall through to a fresh spawn.
                    Err(e) => {
                        warn!(error = %e, "the spare hound failed its handshake; spawning anew")
                    }
                }
            }
            r.unwrap_or_else(|| {
                let manager = sh.cgroups.manager.lock().unwrap_or_else(|p| p.into_inner());
                spawn_hound(
                    &sh.config,
                    &binary,
                    pool_id,
                    o.slot,
                    o.generation,
                    manager.as_ref(),
                    &sh.cgroups.layer,
                )
            })
            .map_err(|e| (o.slot, o.generation, e))
        };
        // A result the collector no longer takes is dropped here, and the ChildGuard inside a
        // Spawned kills and reaps its process.
        if results.send(r).is_err() {
            sh.spare_pid.store(0, Ordering::Relaxed);
            return;
        }
        let _ = sh.wake.ring();
    }
}
