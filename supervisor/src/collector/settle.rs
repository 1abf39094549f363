//! A hound's death: kill and reap it, take the completions it published, and settle every job
//! it held (retry, or its one outcome: [`machine::hound_died`] decides).

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;

use houndpool_protocol::job::{RequestHeader, COMPLETION_HEADER_LEN};
use tracing::{debug, warn};

use super::completion::{self, handle_completion};
use super::reaping::kill_briefly;
use super::{Collector, HoundProc};
use crate::cgroup::Placed;
use crate::job::machine::{self, JobState, KillCause, Rule};
use crate::job::HoundDeath;
use crate::state::Pending;

impl Collector {
    /// SIGKILLs the hound of slot `i` (harmless if it already exited), reaps it, and settles
    /// every job it held. A hound that does not exit within `reaping::REAP_WAIT` (stuck in the
    /// kernel) is settled all the same and reaped later (`reaping`).
    pub(super) fn kill_and_reap(&mut self, i: usize, cause: Option<KillCause>) {
        let slot = &self.sh.slots[i];
        slot.accepting.store(false, Ordering::Release);
        let Some(mut h) = self.hounds[i].take() else {
            return;
        };
        // Before the reap: once reaped, its pid may be reused, and `stats()` must never name
        // a pid that is not this slot's hound (an operator signalling it would hit another
        // process, or get ESRCH).
        slot.pid.store(0, Ordering::Relaxed);
        if h.kill_cause.is_none() {
            h.kill_cause = cause;
        }
        // Never a blocking wait: a hound stuck in the kernel is settled now and reaped later.
        let (status, stuck) = match h.child.0.take() {
            Some(mut child) => match kill_briefly(&mut child) {
                Some(status) => (Some(status), None),
                None => (None, Some(child)),
            },
            None => (None, None),
        };
        let death = match status {
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => HoundDeath::Exited(c),
                (_, Some(s)) => HoundDeath::Signaled(s),
                _ => HoundDeath::Exited(-1),
            },
            // Killed for certain (SIGKILL is pending), only not exited yet.
            None if stuck.is_some() => HoundDeath::Signaled(libc::SIGKILL),
            None => HoundDeath::Exited(-1),
        };
        if let Some(child) = stuck {
            let placed = h.placed.take();
            self.keep_unreaped(i, h.pid, child, placed);
        }
        self.on_exit(i, h, death);
    }

    pub(super) fn on_exit(&mut self, i: usize, mut h: HoundProc, death: HoundDeath) {
        let sh = self.sh.clone();
        let slot = &sh.slots[i];
        sh.counters.hound_exits.inc();
        // Its temp files are swept and its journals (a gone writer's now) materialised on the
        // materialiser's thread: file system work never runs on the collector.
        sh.journal.hound_died(h.pid);
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
        // The ring's consumer: from here on this thread's alone (a caller's thread that was
        // consuming finished its pass before the lock was ours, and finds the slot empty).
        let taken = slot
            .consumer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut reader = None;
        let mut lying = matches!(h.kill_cause, Some(KillCause::Violation(_)));
        if let Some(consumer) = taken {
            if let Some(v) = consumer.violation {
                // Found lying (by a caller's thread, or by this one just before this kill):
                // its completions after the bad record are not results. Normally the kill
                // cause says so already; a hound that died on its own meanwhile gets it too.
                lying = true;
                if h.kill_cause.is_none() {
                    sh.counters.protocol_violations.inc();
                    let detail = crate::hound_text::hound_text(&v.to_string());
                    warn!(slot = i, %detail, "hound violated the protocol");
                    h.kill_cause = Some(KillCause::Violation(detail));
                }
            }
            reader = Some(consumer.reader);
        }
        // Completions the hound wrote before dying are real results: take them first, unless
        // the hound was killed for lying.
        if let Some(reader) = reader.as_mut().filter(|_| !lying) {
            let mut head = [0u8; COMPLETION_HEADER_LEN];
            let mut batch = completion::Batch::default();
            while let Ok(Some(len)) = reader.pop_split_deferred(&mut head, &mut self.buf) {
                let head = &head[..len.min(COMPLETION_HEADER_LEN)];
                if handle_completion(&sh, i, reader, head, &mut self.buf, &mut batch).is_err() {
                    break;
                }
            }
            batch.finish(reader);
        }
        let conn = slot.take_conn();
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
            for (k, mut meta) in conn.into_jobs().into_iter().enumerate() {
                // A record `Pool::cancel` withdrew is `Done` already: nothing happens to it.
                let from = meta.state_in_ring(i as u32, k == 0);
                let step = machine::hound_died(
                    meta.job_id,
                    &from,
                    h.kill_cause.as_ref(),
                    death,
                    out_of_memory,
                );
                match step.rule {
                    Rule::CancelledKill => self.cancel_hit = true,
                    Rule::Poison => sh.counters.poison.inc(),
                    _ => {}
                }
                let from = sh.conclude(&meta, step);
                let JobState::Retrying { history } = from else {
                    continue;
                };
                meta.history = history;
                if self.finishing {
                    sh.conclude(&meta, machine::shutdown(&from));
                    continue;
                }
                // Re-read our own record (the hound could not modify it: read-only mapping).
                let read = match &reader {
                    Some(r) => r.read_request(meta.pos.start, &mut bytes),
                    // Unreachable: a live hound's consumer is installed with it.
                    None => Err(houndpool_protocol::ProtocolError::RingCorrupt {
                        what: "no completion consumer for a dead hound's slot",
                        position: meta.pos.start,
                        value: 0,
                    }),
                };
                match read.and_then(|_| RequestHeader::mark_retry(&mut bytes)) {
                    Ok(()) => {
                        let owned = std::mem::take(&mut bytes);
                        sh.counters.retries.inc();
                        debug!(job = meta.job_id, slot = i, "job queued for retry");
                        sh.spans.event(meta.job_id, "hound died: queued for retry");
                        self.retry.push_back(Pending { bytes: owned, meta });
                    }
                    Err(e) => {
                        let detail = format!("request record unreadable after hound death: {e}");
                        sh.conclude(&meta, machine::record_lost(&from, detail));
                    }
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
