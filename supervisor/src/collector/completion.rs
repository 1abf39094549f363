//! Completions: each one (untrusted) is checked against the job at the front of its hound's
//! ring and turned into that job's outcome, or into the reason the hound must be killed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use houndpool_protocol::envelope;
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, JobKind, COMPLETION_FLAG_SPOOLED,
    MAX_FAIL_MESSAGE,
};

use houndpool_protocol::job::COMPLETION_HEADER_LEN;
use houndpool_protocol::region::CompletionReader;

use super::COLLECT_BUDGET;
use crate::job::machine;
use crate::job::{FailReason, OutcomeKind, Receipt};
use crate::state::{caller_max_record, Books, InFlight};
pub(crate) use crate::violation::Violation;

/// Validates one completion (untrusted) against the job at the front of slot `i`'s ring,
/// frees its request ring space and then delivers its outcome ([`machine::complete`]): whoever
/// sees the outcome may rely on the space being free (a caller that got every outcome finds
/// the rings empty). `Err` means the hound must be killed. `head` is the
/// completion's header (as many bytes of it as the record had) and `body` the rest, both
/// private copies out of the ring (`CompletionReader::pop_split_deferred`); a payload-carrying
/// receipt takes `body`'s buffer as it is (no second copy), leaving the caller's `body` empty.
/// `batch` gives the time the completion was taken (one clock read per batch).
pub(super) fn handle_completion(
    sh: &Books,
    i: usize,
    reader: &CompletionReader,
    head: &[u8],
    body: &mut Vec<u8>,
    batch: &mut Batch,
) -> Result<(), Violation> {
    let hdr = CompletionHeader::parse_parts(head, body)
        .map_err(|e| Violation::Malformed(e.to_string()))?;
    let slot = &sh.slots[i];
    // One clock read per batch of completions taken together: the next front's clock and
    // the outcomes' latency.
    let now = batch.now();
    let (meta, result) = {
        let mut guard = slot.lock();
        let conn = guard.as_mut().ok_or(Violation::SlotClosed)?;
        let no_job = || Violation::NothingInFlight { job_id: hdr.job_id };
        let front = conn.front().ok_or_else(no_job)?;
        if front.job_id != hdr.job_id {
            return Err(Violation::NotNext {
                job_id: hdr.job_id,
                next: front.job_id,
            });
        }
        if front.kind != hdr.kind {
            return Err(Violation::WrongKind {
                reported: hdr.kind,
                job: front.kind,
            });
        }
        let result = interpret(sh, i as u32, front, &hdr, body)?;
        let meta = slot.pop_front(conn, now).ok_or_else(no_job)?;
        (meta, result)
    };
    // Before the outcome is delivered (see above). The request side only reads the private
    // `released`, so this is no cache-line transfer to the hound.
    reader.release_requests(meta.pos.end);
    slot.completed.fetch_add(1, Ordering::Relaxed);
    if hdr.kind == JobKind::Evacuate {
        slot.evacuated.fetch_add(1, Ordering::Relaxed);
    }
    // A record `Pool::cancel` withdrew is discarded: its outcome was delivered then.
    let step = machine::complete(&meta.state_in_ring(i as u32, true), result);
    sh.conclude_at(&meta, step, now);
    Ok(())
}

/// A batch of completions taken from one ring in one pass: the consumer position is published
/// to the hound once, when the batch ends ([`Self::finish`]), instead of once per record, and
/// the clock is read once.
#[derive(Default)]
pub(super) struct Batch {
    /// When the batch's completions were taken (read at the first one).
    now: Option<Instant>,
}

impl Batch {
    /// The batch's time: the clock is read once, at its first completion (a pass that finds
    /// nothing reads no clock). Its completions are taken within one pass over the ring, so
    /// their outcomes' latencies end there.
    pub(super) fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }
    /// Ends the batch: publishes the consumer position to the hound (Release: the copies out
    /// of every consumed record complete before it may reuse their space). Every consumer
    /// calls it before it lets go of the ring (unlocks, sleeps or kills), so a hound never
    /// waits long on space already consumed.
    pub(super) fn finish(self, reader: &mut CompletionReader) {
        reader.publish_head();
    }
}

/// Consumes completions on a caller's thread (`Pool::recv_outcomes`), so that a caller waiting
/// for outcomes does not wait for the collector thread too: for each slot whose ring nobody
/// else is consuming (`try_lock`), up to [`COLLECT_BUDGET`] completions, each checked and
/// delivered by [`handle_completion`] exactly as the collector would (copy out, validate
/// against the front of the in-flight list, the state machine, the books; the outcome goes to
/// the channel or its tracked handle). A record larger than [`caller_max_record`] is left to
/// the collector, which is woken for it. What a hound did wrong is not acted on here: the
/// violation is left in the slot's [`crate::state::Consumer`] (nobody consumes that ring any
/// more) and the collector is woken, which kills the hound and settles its jobs. Returns how
/// many completions were consumed, and whether a record was left to the collector. `buf` is
/// the caller's scratch buffer for record bodies.
pub(crate) fn drain_on_caller(sh: &Books, buf: &mut Vec<u8>) -> (usize, bool) {
    let max_record = caller_max_record(sh);
    let mut consumed = 0usize;
    let mut violated = false;
    let mut handed = false;
    for (i, slot) in sh.slots.iter().enumerate() {
        let mut guard = match slot.consumer.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            // The collector (or another caller) is consuming this ring right now.
            Err(std::sync::TryLockError::WouldBlock) => continue,
        };
        let Some(c) = guard.as_mut() else {
            continue;
        };
        if c.violation.is_some() || c.handed_over {
            continue;
        }
        let mut head = [0u8; COMPLETION_HEADER_LEN];
        let mut batch = Batch::default();
        for _ in 0..COLLECT_BUDGET {
            match c.reader.next_len() {
                Ok(Some(len)) if len > max_record => {
                    c.handed_over = true;
                    handed = true;
                    break;
                }
                // A recycled buffer instead of a new one, as the collector does.
                Ok(Some(len)) if buf.capacity() < len => {
                    if let Some(b) = sh.payloads.take_for(len) {
                        *buf = b;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // `pop_split` below reports it (the same validation).
                Err(_) => {}
            }
            match c.reader.pop_split_deferred(&mut head, buf) {
                Ok(Some(len)) => {
                    let head = &head[..len.min(COMPLETION_HEADER_LEN)];
                    match handle_completion(sh, i, &c.reader, head, buf, &mut batch) {
                        Ok(()) => consumed += 1,
                        Err(v) => {
                            c.violation = Some(v);
                            violated = true;
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    c.violation = Some(Violation::Malformed(e.to_string()));
                    violated = true;
                    break;
                }
            }
        }
        batch.finish(&mut c.reader);
    }
    // A violation: whether or not it sleeps (an awake collector drains the bell at its next
    // sleep). A record left to it: only if it sleeps (awake, it takes the record on its next
    // pass), which may be without doorbells while a caller's lease ran.
    if violated
        || (handed
            && sh
                .collector_sleeping
                .load(std::sync::atomic::Ordering::SeqCst))
    {
        let _ = sh.wake.ring();
    }
    if consumed > 0 {
        sh.note_space_freed();
    }
    (consumed, handed)
}

/// Turns a validated completion into an outcome; `Err` if the body is impossible for the job.
fn interpret(
    sh: &Books,
    hound: u32,
    job: &InFlight,
    hdr: &CompletionHeader,
    body_buf: &mut Vec<u8>,
) -> Result<OutcomeKind, Violation> {
    let body: &[u8] = body_buf;
    if hdr.flags & COMPLETION_FLAG_SPOOLED != 0 && job.kind != JobKind::Evacuate {
        return Err(Violation::SpooledWithoutStore);
    }
    let code = match hdr.status {
        CompletionStatus::Ok => None,
        CompletionStatus::Failed(code) => Some(code),
    };
    if code == Some(houndpool_protocol::job::FailCode::ColdStorageUnavailable)
        || hdr.flags & COMPLETION_FLAG_SPOOLED != 0
    {
        crate::cold::note_unreachable(&sh.config);
    }
    if let Some(code) = code {
        if body.len() > MAX_FAIL_MESSAGE {
            return Err(Violation::FailMessageTooLong { len: body.len() });
        }
        return Ok(OutcomeKind::Failed(FailReason::Job {
            code,
            message: String::from_utf8_lossy(body).into_owned(),
        }));
    }
    let key = || {
        sh.key_prefix.as_deref().map(|p| {
            let key = sh.keys.get(job.job_id);
            houndpool_cold::object_key_for(p, &job.evidence_id, key.as_deref())
        })
    };
    let mut r = Receipt {
        hound,
        ..Receipt::default()
    };
    match job.kind {
        JobKind::Noop => {
            if body.len() != job.body_len as usize {
                return Err(Violation::EchoLength {
                    len: body.len(),
                    request: job.body_len,
                });
            }
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Encode => {
            let eh =
                envelope::parse_header(body).map_err(|e| Violation::Envelope(e.to_string()))?;
            if eh.original_size != job.body_len {
                return Err(Violation::EnvelopeSize {
                    original: eh.original_size,
                    evidence: job.body_len,
                });
            }
            r.original_size = Some(u64::from(eh.original_size));
            r.compressed_size = Some(u64::from(eh.compressed_size));
            r.sha256 = Some(eh.sha256);
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Evacuate => {
            let rc = EvacuateReceipt::parse(body).map_err(|e| Violation::Receipt(e.to_string()))?;
            if rc.evidence_id != job.evidence_id {
                return Err(Violation::ReceiptEvidenceId);
            }
            if rc.original_size != job.body_len {
                return Err(Violation::ReceiptSize {
                    original: rc.original_size,
                    evidence: job.body_len,
                });
            }
            r.key = key();
            r.original_size = Some(u64::from(rc.original_size));
            r.compressed_size = Some(u64::from(rc.compressed_size));
            r.sha256 = Some(rc.sha256);
            r.encode_time = Some(Duration::from_nanos(rc.encode_ns));
            r.store_time = Some(Duration::from_nanos(rc.store_ns));
            r.spooled = hdr.flags & COMPLETION_FLAG_SPOOLED != 0;
        }
        JobKind::Restore | JobKind::Decode => {
            if body.len() > sh.config.max_output_bytes {
                return Err(Violation::OutputTooLarge {
                    len: body.len(),
                    max: sh.config.max_output_bytes,
                });
            }
            if job.kind == JobKind::Restore {
                r.key = key();
            }
            r.original_size = Some(body.len() as u64);
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Erase => {
            match body {
                [0] => r.existed = Some(false),
                [1] => r.existed = Some(true),
                _ => return Err(Violation::EraseBody),
            }
            r.key = key();
        }
    }
    Ok(OutcomeKind::Completed(r))
}
