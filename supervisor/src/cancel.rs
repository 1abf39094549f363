//! `Pool::cancel`: the caller's half. A cancel request is handed to the collector thread —
//! the owner of the retry queue and of every hound — which answers it between two passes of its
//! loop, so a cancel never races a completion or a hound death (see
//! `collector/cancelling.rs` for the collector's half).

use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use crate::job::machine::{self, JobState};
use crate::job::CancelResult;
use crate::state::Books;

/// How often a waiting `cancel` checks whether the pool stopped under it.
const POLL: Duration = Duration::from_millis(50);

/// Withdraws job `id` from the defer queue, delivering `Dropped(Cancelled)`.
pub(crate) fn from_defer_queue(sh: &Books, id: u64) -> bool {
    let Some(defer) = &sh.defer else {
        return false;
    };
    let taken = defer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove_first(|p| p.meta.job_id == id);
    match taken {
        Some(p) => {
            let from = JobState::Deferred {
                lane: p.meta.severity,
            };
            sh.conclude(&p.meta, machine::cancel(&from));
            true
        }
        None => false,
    }
}

/// `Pool::cancel`.
pub(crate) fn request(sh: &Books, id: u64) -> CancelResult {
    if sh.is_stopped() {
        return CancelResult::NotFound;
    }
    if sh.cancels.on_collector_thread() {
        // On the collector thread (an on_outcome callback): waiting would deadlock.
        return if from_defer_queue(sh, id) {
            CancelResult::Dequeued
        } else {
            CancelResult::NotFound
        };
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    sh.cancels.push((id, tx));
    let _ = sh.wake.ring();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Disconnected) => return CancelResult::NotFound,
            Err(RecvTimeoutError::Timeout) => {
                // A stopped pool has delivered every outcome: nothing is left to cancel.
                if sh.is_stopped() {
                    return rx.try_recv().unwrap_or(CancelResult::NotFound);
                }
            }
        }
    }
}
