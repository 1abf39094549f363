//! A hound's death: kill and reap it, take the completions it published, and settle every job
//! it held (retry, or its one outcome).

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::completion::handle_completion;
use super::{Collector, HoundProc, KillCause};
use crate::cgroups::Placed;
use crate::job::{DropReason, FailReason, HoundDeath, OutcomeKind};
use crate::state::{Books, Pending};

/// What a hound's death means for one job it held (pure; see `Collector::on_exit`).
#[derive(Debug, Clone, PartialEq)]
enum Settle {
    /// The job ends with this outcome.
    Outcome(OutcomeKind),
    /// The job dies with the hound a second time: `Failed(Poison)`.
    Poison,
    /// The job goes to another hound; `charged`: this death counts against it.
    Retry { charged: bool },
}

/// Settles job `job_id` (`front`: at the front of the ring; `deaths`: deaths it was already
/// charged with) after its hound died with `death`, killed for `cause` if the supervisor
/// killed it.
fn settle(
    cause: Option<&KillCause>,
    front: bool,
    job_id: u64,
    deaths: u8,
    out_of_memory: bool,
    death: HoundDeath,
) -> Settle {
    match (cause, front) {
        (Some(KillCause::Shutdown), _) => {
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Shutdown))
        }
        // `Pool::cancel` killed the hound for this job; its other jobs are retried uncharged.
        (Some(KillCause::Cancelled(id)), _) if *id == job_id => {
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Cancelled))
        }
        // Only the job that was at the front when the deadline passed: if it completed between
        // the check and the kill, the job now at the front did not time out.
        (Some(KillCause::Watchdog { job_id: late }), true) if *late == job_id => {
            Settle::Outcome(OutcomeKind::TimedOut)
        }
        (Some(KillCause::Watchdog { .. }), _) => Settle::Retry { charged: false },
        (Some(KillCause::Violation(d)), true) => {
            Settle::Outcome(OutcomeKind::Failed(FailReason::ProtocolViolation {
                detail: d.clone(),
            }))
        }
        (None | Some(KillCause::ExitDeadline), true) if out_of_memory => {
            Settle::Outcome(OutcomeKind::Failed(FailReason::OutOfMemory))
        }
        (None | Some(KillCause::ExitDeadline), true) => match death {
            HoundDeath::Signaled(sig) if sig == libc::SIGSYS => {
                Settle::Outcome(OutcomeKind::Failed(FailReason::HoundKilled { signal: sig }))
            }
            _ if deaths.saturating_add(1) >= 2 => Settle::Poison,
            _ => Settle::Retry { charged: true },
        },
        _ => Settle::Retry { charged: false },
    }
}

impl Collector {
    /// SIGKILLs the hound of slot `i` (harmless if it already exited), reaps it, and settles
    /// every job it held.
    pub(super) fn kill_and_reap(&mut self, i: usize, cause: Option<KillCause>) {
        let slot = &self.sh.slots[i];
        slot.accepting.store(false, Ordering::Release);
        let Some(mut h) = self.hounds[i].take() else {
            return;
        };
        if h.kill_cause.is_none() {
            h.kill_cause = cause;
        }
        let status = match h.child.0.as_mut() {
            Some(child) => {
                let _ = child.kill();
                child.wait().ok()
            }
            None => None,
        };
        h.child.0 = None;
        let death = match status {
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => HoundDeath::Exited(c),
                (_, Some(s)) => HoundDeath::Signaled(s),
                _ => HoundDeath::Exited(-1),
            },
            None => HoundDeath::Exited(-1),
        };
        self.on_exit(i, h, death);
    }

    pub(super) fn on_exit(&mut self, i: usize, mut h: HoundProc, death: HoundDeath) {
        let sh = self.sh.clone();
        let slot = &sh.slots[i];
        sh.counters.hound_exits.inc();
        crate::cold::sweep_temps(&sh.config, |pid| pid == h.pid);
        // The hound is reaped: read its cgroup's OOM counter now; the cgroup itself is removed
        // after the respawn is ordered (rmdir of a memory cgroup costs milliseconds while the
        // kernel offlines it, and `remove` retries on EBUSY), so it never delays the
        // replacement.
        let cgroup_oom = h.placed.as_ref().is_some_and(Placed::oom_killed);
        let placed = h.placed.take();
        let out_of_memory = h.kill_cause.is_none()
            && (death == HoundDeath::Exited(houndpool_hound::EXIT_OUT_OF_MEMORY)
                || (death == HoundDeath::Signaled(libc::SIGKILL) && cgroup_oom));
        if out_of_memory {
            sh.counters.oom_kills.inc();
            warn!(
                slot = i,
                pid = h.pid,
                %death,
                by = if cgroup_oom { "cgroup OOM killer" } else { "address-space budget" },
                "hound ran out of memory"
            );
        }
        // Completions the hound wrote before dying are real results: take them first, unless
        // the hound was killed for lying.
        if !matches!(h.kill_cause, Some(KillCause::Violation(_))) {
            while let Ok(true) = h.reader.pop(&mut self.buf) {
                if handle_completion(&sh, i, &h, &self.buf).is_err() {
                    break;
                }
            }
        }
        let conn = slot.lock().take();
        slot.in_flight.store(0, Ordering::Relaxed);
        slot.pid.store(0, Ordering::Relaxed);
        let expected = matches!(
            h.kill_cause,
            Some(KillCause::Shutdown) | Some(KillCause::Cancelled(_))
        )
            || (self.finishing && death == HoundDeath::Exited(0))
            // A retired hound asked to stop: its exit is expected however it ends (the
            // collector may SIGKILL it while it is still exiting after closing its socket).
            || (h.retiring && h.shutdown_sent && h.kill_cause.is_none());
        if !expected && !self.finishing {
            self.note_restart(i, true);
        }
        if expected {
            debug!(slot = i, pid = h.pid, %death, "hound stopped");
        } else {
            warn!(
                slot = i,
                pid = h.pid,
                generation = h.generation,
                %death,
                cause = ?h.kill_cause,
                fatal = h.fatal.as_deref().unwrap_or(""),
                uptime_ms = h.started.elapsed().as_millis() as u64,
                "hound exited"
            );
        }
        if let Some(conn) = conn {
            let mut bytes = Vec::new();
            for (k, mut meta) in conn.inflight.into_iter().enumerate() {
                if meta.cancelled {
                    continue; // its outcome was delivered when it was cancelled
                }
                let settled = settle(
                    h.kill_cause.as_ref(),
                    k == 0,
                    meta.job_id,
                    meta.deaths,
                    out_of_memory,
                    death,
                );
                let verdict = match settled {
                    Settle::Outcome(o) => {
                        if matches!(o, OutcomeKind::Dropped(DropReason::Cancelled)) {
                            self.cancel_hit = true;
                        }
                        Some(o)
                    }
                    Settle::Poison => {
                        meta.deaths = meta.deaths.saturating_add(1);
                        sh.counters.poison.inc();
                        Some(OutcomeKind::Failed(FailReason::Poison {
                            last_death: death,
                        }))
                    }
                    Settle::Retry { charged } => {
                        if charged {
                            meta.deaths = meta.deaths.saturating_add(1);
                        }
                        None
                    }
                };
                if let Some(result) = verdict {
                    sh.deliver(Books::outcome_for(&meta, meta.tries, result));
                    continue;
                }
                if self.finishing {
                    sh.deliver(Books::outcome_for(
                        &meta,
                        meta.tries,
                        OutcomeKind::Dropped(DropReason::Shutdown),
                    ));
                    continue;
                }
                // Re-read our own record (the hound could not modify it: read-only mapping).
                match h.reader.read_request(meta.pos.start, &mut bytes) {
                    Ok(_) => {
                        let mut owned = std::mem::take(&mut bytes);
                        // RequestHeader byte 11 is the attempt flag: 0 first try, 1 retry
                        // (the hound refuses any other value).
                        if let Some(a) = owned.get_mut(11) {
                            *a = 1;
                        }
                        meta.tries = meta.tries.saturating_add(1);
                        sh.counters.retries.inc();
                        debug!(job = meta.job_id, slot = i, "job queued for retry");
                        sh.spans.event(meta.job_id, "hound died: queued for retry");
                        self.retry.push_back(Pending { bytes: owned, meta });
                    }
                    Err(e) => sh.deliver(Books::outcome_for(
                        &meta,
                        meta.tries,
                        OutcomeKind::Failed(FailReason::ProtocolViolation {
                            detail: format!("request record unreadable after hound death: {e}"),
                        }),
                    )),
                }
            }
        }
        sh.retrying.store(self.retry.len(), Ordering::Relaxed);
        self.blocked = false;
        drop(h);
        self.schedule_respawn(i);
        if let Some(p) = placed {
            p.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: HoundDeath = HoundDeath::Signaled(libc::SIGKILL);

    #[test]
    fn a_timeout_is_charged_only_to_the_job_at_the_front_at_the_deadline() {
        let cause = KillCause::Watchdog { job_id: 7 };
        // Job 7 was late and is still at the front: it timed out.
        assert_eq!(
            settle(Some(&cause), true, 7, 0, false, KILL),
            Settle::Outcome(OutcomeKind::TimedOut)
        );
        // Job 7 completed between the check and the kill: job 8, now at the front, did not
        // time out and is not charged with the death either.
        assert_eq!(
            settle(Some(&cause), true, 8, 0, false, KILL),
            Settle::Retry { charged: false }
        );
        assert_eq!(
            settle(Some(&cause), false, 9, 1, false, KILL),
            Settle::Retry { charged: false }
        );
    }

    #[test]
    fn crash_verdicts() {
        // First death at the front: retried, charged; second: poison.
        assert_eq!(
            settle(None, true, 1, 0, false, KILL),
            Settle::Retry { charged: true }
        );
        assert_eq!(settle(None, true, 1, 1, false, KILL), Settle::Poison);
        // Jobs behind the front are retried uncharged.
        assert_eq!(
            settle(None, false, 2, 1, false, KILL),
            Settle::Retry { charged: false }
        );
        // A hound that overstayed its exit grace is settled as a crash.
        assert_eq!(
            settle(Some(&KillCause::ExitDeadline), true, 1, 0, false, KILL),
            Settle::Retry { charged: true }
        );
        assert_eq!(
            settle(None, true, 1, 0, true, KILL),
            Settle::Outcome(OutcomeKind::Failed(FailReason::OutOfMemory))
        );
        assert_eq!(
            settle(None, true, 1, 0, false, HoundDeath::Signaled(libc::SIGSYS)),
            Settle::Outcome(OutcomeKind::Failed(FailReason::HoundKilled {
                signal: libc::SIGSYS
            }))
        );
        assert_eq!(
            settle(Some(&KillCause::Shutdown), false, 3, 0, false, KILL),
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Shutdown))
        );
        let v = KillCause::Violation("x".into());
        assert!(matches!(
            settle(Some(&v), true, 1, 0, false, KILL),
            Settle::Outcome(OutcomeKind::Failed(FailReason::ProtocolViolation { .. }))
        ));
        assert_eq!(
            settle(Some(&v), false, 2, 0, false, KILL),
            Settle::Retry { charged: false }
        );
    }
}
