//! The end of the pool: when the drain is done, and `finish` (drop what is left, stop and reap
//! every hound).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use houndpool_protocol::control::{Message, Shutdown};
use nix::sys::socket::{send, MsgFlags};
use tracing::{info, warn};

use super::Collector;
use crate::job::machine::{self, JobState, KillCause};

impl Collector {
    pub(super) fn drain_done(&self) -> bool {
        if self.sh.grace_over() {
            return true;
        }
        self.retry.is_empty() && self.defer_len() == 0 && self.sh.in_rings() == 0
    }

    /// Ends the pool: drops what is left, stops and reaps every hound.
    pub(super) fn finish(&mut self) {
        self.finishing = true;
        let sh = self.sh.clone();
        for s in sh.slots.iter() {
            s.accepting.store(false, Ordering::Release);
        }
        // Hounds still holding jobs: the grace period is over.
        for i in 0..self.hounds.len() {
            if self.hounds[i].is_some() && sh.slots[i].in_flight() > 0 {
                self.kill_and_reap(i, Some(KillCause::Shutdown));
            }
        }
        for p in self.retry.drain(..) {
            let from = JobState::Retrying {
                history: p.meta.history,
            };
            sh.conclude(&p.meta, machine::shutdown(&from));
        }
        if let Some(defer) = &sh.defer {
            // Closed under the same lock: a `submit` that passed its state check before the
            // drain finds the queue closed and refuses (`ShutDown`) instead of queueing a job
            // nobody would ever settle.
            let left = {
                let mut q = defer.lock().unwrap_or_else(|p| p.into_inner());
                q.close();
                q.drain_all()
            };
            for p in left {
                let from = JobState::Deferred {
                    lane: p.meta.severity,
                };
                sh.conclude(&p.meta, machine::shutdown(&from));
            }
        }
        sh.retrying.store(0, Ordering::Relaxed);
        // Ask the idle hounds to exit, give them a moment, then make sure.
        let mut frame = Vec::new();
        let _ = Message::Shutdown(Shutdown { grace_ms: 1000 }).encode_frame(&mut frame);
        for h in self.hounds.iter().flatten() {
            let _ = send(
                h.control.as_raw_fd(),
                &frame,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
        }
        let until = Instant::now() + Duration::from_secs(1);
        for i in 0..self.hounds.len() {
            let Some(h) = self.hounds[i].as_mut() else {
                continue;
            };
            let mut exited = false;
            while Instant::now() < until {
                match h.child.0.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(_))) | None => {
                        exited = true;
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            if !exited {
                warn!(slot = i, "hound did not exit after Shutdown; killing it");
            }
            self.kill_and_reap(i, None);
        }
        self.reap_stuck_at_finish();
        self.orders = None;
        while let Ok(r) = self.results.try_recv() {
            drop(r);
        }
        sh.mark_stopped();
        info!(stats = ?sh.counters.completed.get(), "houndpool stopped");
    }
}
