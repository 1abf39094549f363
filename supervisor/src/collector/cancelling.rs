//! `Pool::cancel`: the collector's half (the caller's is `crate::cancel`). Runs on the
//! collector thread, which owns the retry queue and every hound, so the job cannot complete,
//! be retried or be placed while its cancel is decided.

use std::sync::atomic::Ordering;

use super::{Collector, KillCause};
use crate::job::{CancelResult, DropReason, OutcomeKind};
use crate::state::Books;

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

    fn cancel_one(&mut self, id: u64) -> CancelResult {
        let sh = self.sh.clone();
        // Retry queue: it ran once on a hound that died; it is not on any hound now.
        if let Some(k) = self.retry.iter().position(|p| p.meta.job_id == id) {
            if let Some(p) = self.retry.remove(k) {
                sh.retrying.store(self.retry.len(), Ordering::Relaxed);
                let o = Books::outcome_for(
                    &p.meta,
                    p.meta.tries.saturating_sub(1),
                    OutcomeKind::Dropped(DropReason::Cancelled),
                );
                sh.deliver(o);
                return CancelResult::Dequeued;
            }
        }
        if crate::cancel::from_defer_queue(&sh, id) {
            return CancelResult::Dequeued;
        }
        // In a ring: first take what its hound has already finished.
        for i in 0..sh.slots.len() {
            let pos = {
                let guard = sh.slots[i].lock();
                guard.as_ref().and_then(|c| {
                    c.inflight
                        .iter()
                        .position(|m| m.job_id == id && !m.cancelled)
                })
            };
            if pos.is_none() {
                continue;
            }
            self.collect_all();
            let marked = {
                let mut guard = sh.slots[i].lock();
                let Some(conn) = guard.as_mut() else {
                    return CancelResult::NotFound; // its hound died: settled by on_exit
                };
                let Some(k) = conn
                    .inflight
                    .iter()
                    .position(|m| m.job_id == id && !m.cancelled)
                else {
                    return CancelResult::NotFound; // completed meanwhile
                };
                if k == 0 {
                    None
                } else {
                    let m = &mut conn.inflight[k];
                    m.cancelled = true;
                    Some(*m)
                }
            };
            return match marked {
                // Behind another job: withdrawn; what the hound reports for it is discarded.
                Some(meta) => {
                    let o = Books::outcome_for(
                        &meta,
                        meta.tries.saturating_sub(1),
                        OutcomeKind::Dropped(DropReason::Cancelled),
                    );
                    sh.deliver(o);
                    CancelResult::Dequeued
                }
                // At the head: kill its hound, as the watchdog does. If the hound published
                // the job's completion before it died, that completion is its outcome.
                None => {
                    self.cancel_hit = false;
                    tracing::info!(
                        slot = i,
                        job = id,
                        "cancel: killing the hound running the job"
                    );
                    self.kill_and_reap(i, Some(KillCause::Cancelled(id)));
                    if std::mem::take(&mut self.cancel_hit) {
                        CancelResult::Killed
                    } else {
                        CancelResult::NotFound
                    }
                }
            };
        }
        CancelResult::NotFound
    }
}
