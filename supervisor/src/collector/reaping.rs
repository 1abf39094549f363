//! Hounds that do not die at once. SIGKILL is final, but a process in uninterruptible sleep
//! (D state: an `fdatasync` on a stalled disk, a hung network filesystem, a frozen cgroup)
//! exits only when the kernel lets it go. A `waitpid` that waited for it would stall the
//! collector, and with it every other hound's completions, the watchdog and respawns.
//!
//! So [`kill_briefly`] waits at most [`REAP_WAIT`] for the exit. A hound still there is
//! settled as killed anyway: with SIGKILL pending it runs no more user code, so it can publish
//! no completion and take no job, and the collector stops reading its rings. Its process is
//! kept in [`Unreaped`] with its cgroup (removing a cgroup that still holds a process would
//! spin on EBUSY) and reaped by [`Collector::reap_stuck`] on later housekeeping passes. What it
//! costs meanwhile: its memory and pid stay in use while its replacement runs, which an
//! operator sees in the warning logged at once and again if it is still stuck after
//! [`STUCK_WARN`].

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Collector;
use crate::cgroup::Placed;
use crate::hound_process::HoundProcess;

/// Longest wait for a SIGKILLed hound to exit before it is settled as killed and reaped later.
/// A hound's exit takes well under a millisecond here (its address space is bounded by
/// `RLIMIT_AS`); this bounds the collector's stall per kill.
pub(super) const REAP_WAIT: Duration = Duration::from_millis(20);
/// A hound still unreaped this long after its SIGKILL is reported again.
const STUCK_WARN: Duration = Duration::from_secs(10);
/// At the end of the pool, how long `finish` waits for stuck hounds before leaving them.
const FINISH_REAP_WAIT: Duration = Duration::from_secs(2);

/// A SIGKILLed hound that had not exited within [`REAP_WAIT`]: its jobs are settled, its slot
/// refilled; only the process (and its cgroup) remain.
pub(super) struct Unreaped {
    pub(super) child: HoundProcess,
    pub(super) pid: u32,
    pub(super) slot: usize,
    /// Its cgroup, removed once the process is reaped.
    pub(super) placed: Option<Placed>,
    pub(super) since: Instant,
    pub(super) warned_again: bool,
}

/// Sends SIGKILL (harmless if the hound already exited) and waits at most [`REAP_WAIT`] for
/// it to exit. `Some(status)` when it was reaped; `None` when it is still there (the caller
/// keeps the process to reap later) or cannot be waited for.
pub(super) fn kill_briefly(child: &mut HoundProcess) -> Option<ExitStatus> {
    let _ = child.kill();
    let deadline = Instant::now() + REAP_WAIT;
    let mut pause = Duration::from_micros(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Ok(None) => return None,
            // ECHILD: not ours to wait for (cannot happen for a child we spawned and nobody
            // else reaps); treated as gone.
            Err(_) => return None,
        }
    }
}

impl Collector {
    /// Keeps a SIGKILLed hound that has not exited yet (see the module docs).
    pub(super) fn keep_unreaped(
        &mut self,
        slot: usize,
        pid: u32,
        child: HoundProcess,
        placed: Option<Placed>,
    ) {
        warn!(
            slot,
            pid,
            wait_ms = REAP_WAIT.as_millis() as u64,
            "hound did not exit after SIGKILL (stuck in the kernel?); its jobs are settled and \
             its slot refilled, it is reaped when it exits"
        );
        self.unreaped.push(Unreaped {
            child,
            pid,
            slot,
            placed,
            since: Instant::now(),
            warned_again: false,
        });
    }

    /// Reaps the stuck hounds that exited since the last pass and removes their cgroups;
    /// reports once more any still stuck after [`STUCK_WARN`]. Never blocks.
    pub(super) fn reap_stuck(&mut self) {
        if self.unreaped.is_empty() {
            return;
        }
        let sh = self.sh.clone();
        self.unreaped.retain_mut(|u| match u.child.try_wait() {
            Ok(None) => {
                if !u.warned_again && u.since.elapsed() >= STUCK_WARN {
                    u.warned_again = true;
                    warn!(
                        slot = u.slot,
                        pid = u.pid,
                        stuck_s = u.since.elapsed().as_secs(),
                        "SIGKILLed hound still has not exited"
                    );
                }
                true
            }
            done => {
                let status = match done {
                    Ok(Some(st)) => st.to_string(),
                    _ => "not waitable".to_owned(),
                };
                info!(slot = u.slot, pid = u.pid, %status,
                    after_ms = u.since.elapsed().as_millis() as u64, "stuck hound reaped");
                if let Some(p) = u.placed.take() {
                    p.remove();
                }
                // Its journals now belong to a gone writer, and its temp files (skipped while it
                // existed) can go: the materialiser's thread does both.
                sh.journal.hound_died(u.pid);
                false
            }
        });
    }

    /// At the end of the pool: waits up to [`FINISH_REAP_WAIT`] for the stuck hounds, then
    /// hands each one left to a detached thread that reaps it whenever it exits (no zombie
    /// outlives it, and the pool's stop does not wait for the kernel). Their cgroups are left
    /// to the pool's own removal.
    pub(super) fn reap_stuck_at_finish(&mut self) {
        let deadline = Instant::now() + FINISH_REAP_WAIT;
        loop {
            self.reap_stuck();
            if self.unreaped.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for mut u in self.unreaped.drain(..) {
            warn!(
                slot = u.slot,
                pid = u.pid,
                "pool stopped with a SIGKILLed hound still stuck in the kernel; a background \
                 thread reaps it when it exits"
            );
            let reaper = std::thread::Builder::new()
                .name("houndpool-reap".into())
                .spawn(move || {
                    let _ = u.child.wait();
                });
            if let Err(e) = reaper {
                warn!(pid = u.pid, error = %e,
                    "cannot start a reaper thread; the hound stays a zombie until this process exits");
            }
        }
    }
}
