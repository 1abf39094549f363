//! `Pool::cancel`: the collector's half (the caller's is `crate::cancel`). Runs on the
//! collector thread, which owns the retry queue and every hound, so the job cannot complete,
//! be retried or be placed while its cancel is decided.

use std::sync::atomic::Ordering;

use super::Collector;
use crate::job::machine::{self, JobState, KillCause, Rule};
use crate::job::CancelResult;

impl Collector {
    /// Answers every pending cancel request. Returns whether there was any.
    pub(super) fn serve_cancels(&mut self) -> bool {
        let requests = self.sh.cancels.take();
        let work = !requests.is_empty();
        for (id, reply) in requests {
            let r = self.cancel_one(id);
            tracing::debug!(job = id, result = r.name(), "cancel");
            let _ = reply.send(r);
        }
        work
    }

    /// Cancels job `id` wherever it is; [`machine::cancel`] says what that means.
    fn cancel_one(&mut self, id: u64) -> CancelResult {
        let sh = self.sh.clone();
        // Retry queue: it ran on a hound that died; it is not on any hound now.
        if let Some(k) = self.retry.iter().position(|p| p.meta.job_id == id) {
            if let Some(p) = self.retry.remove(k) {
                sh.retrying.store(self.retry.len(), Ordering::Relaxed);
                let from = JobState::Retrying {
                    history: p.meta.history,
                };
                sh.conclude(&p.meta, machine::cancel(&from));
                return CancelResult::Dequeued;
            }
        }
        if crate::cancel::from_defer_queue(&sh, id) {
            return CancelResult::Dequeued;
        }
        // In a ring: first take what its hound has already finished.
        for i in 0..sh.slots.len() {
            let found = sh.slots[i]
                .lock()
                .as_ref()
                .and_then(|c| c.position_live(id));
            if found.is_none() {
                continue;
            }
            self.collect_all();
            let step = {
                let mut guard = sh.slots[i].lock();
                let Some(conn) = guard.as_mut() else {
                    return CancelResult::NotFound; // its hound died: settled by on_exit
                };
                let Some(k) = conn.position_live(id) else {
                    return CancelResult::NotFound; // completed meanwhile
                };
                let Some(meta) = conn.job(k).copied() else {
                    return CancelResult::NotFound;
                };
                let step = machine::cancel(&meta.state_in_ring(i as u32, k == 0));
                if step.rule != Rule::CancelKill {
                    // Behind another job, not started: withdrawn now; its record stays in the
                    // ring and what the hound reports for it is discarded.
                    conn.mark_cancelled(k);
                    drop(guard);
                    sh.conclude(&meta, step);
                    return CancelResult::Dequeued;
                }
                step
            };
            // At the head: kill its hound, as the watchdog does. If the hound published the
            // job's completion before it died, that completion is its outcome.
            debug_assert_eq!(step.rule, Rule::CancelKill);
            self.cancel_hit = false;
            tracing::info!(
                slot = i,
                job = id,
                "cancel: killing the hound running the job"
            );
            self.kill_and_reap(i, Some(KillCause::Cancelled(id)));
            return if std::mem::take(&mut self.cancel_hit) {
                CancelResult::Killed
            } else {
                CancelResult::NotFound
            };
        }
        CancelResult::NotFound
    }
}
