//! Completions: each one (untrusted) is checked against the job at the front of its hound's
//! ring and turned into that job's outcome, or into the reason the hound must be killed.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use houndpool_protocol::envelope;
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, JobKind, COMPLETION_FLAG_SPOOLED,
    MAX_FAIL_MESSAGE,
};

use super::HoundProc;
use crate::job::machine;
use crate::job::{FailReason, OutcomeKind, Receipt};
use crate::state::{Books, InFlight};

/// What a hound did that it may not: the reason it is killed. The job at its front then fails
/// with `ProtocolViolation`, this text (escaped) as the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Violation {
    /// The completion ring, a record in it or a completion header is malformed.
    Malformed(String),
    /// A completion from a hound whose slot is closed.
    SlotClosed,
    /// A completion while no job is in flight.
    NothingInFlight { job_id: u64 },
    /// A completion for another job than the one at the front.
    NotNext { job_id: u64, next: u64 },
    /// A completion of another kind than its job's.
    WrongKind { reported: JobKind, job: JobKind },
    /// The spooled flag on a job that stores nothing.
    SpooledWithoutStore,
    /// A failure message longer than `MAX_FAIL_MESSAGE`.
    FailMessageTooLong { len: usize },
    /// A Noop echo of another length than the request.
    EchoLength { len: usize, request: u32 },
    /// An Encode envelope whose header does not parse.
    Envelope(String),
    /// An envelope naming another original size than the evidence's.
    EnvelopeSize { original: u32, evidence: u32 },
    /// An Evacuate receipt that does not parse.
    Receipt(String),
    /// A receipt naming another evidence id.
    ReceiptEvidenceId,
    /// A receipt naming another original size than the evidence's.
    ReceiptSize { original: u32, evidence: u32 },
    /// Decoded output above `max_output_bytes`.
    OutputTooLarge { len: usize, max: usize },
    /// An Erase body other than one 0/1 byte.
    EraseBody,
    /// A control datagram larger than the receive buffer.
    ControlDatagram { len: usize },
    /// A second `Fatal` message.
    SecondFatal,
    /// A message after `Fatal`.
    AfterFatal { kind: &'static str },
    /// A control message a hound may not send after `Ready`.
    UnexpectedControl { kind: &'static str },
    /// A control frame that does not decode.
    MalformedControl(String),
    /// The control socket failed.
    ControlSocket(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed(e) => f.write_str(e),
            Violation::SlotClosed => f.write_str("completion from a hound whose slot is closed"),
            Violation::NothingInFlight { job_id } => {
                write!(f, "completion for job {job_id} with no job in flight")
            }
            Violation::NotNext { job_id, next } => {
                write!(f, "completion for job {job_id} but job {next} is next")
            }
            Violation::WrongKind { reported, job } => write!(
                f,
                "completion kind {} for a {} job",
                reported.name(),
                job.name()
            ),
            Violation::SpooledWithoutStore => {
                f.write_str("spooled flag on a job that stores nothing")
            }
            Violation::FailMessageTooLong { len } => write!(f, "failure message of {len} bytes"),
            Violation::EchoLength { len, request } => {
                write!(f, "echo of {len} bytes for a {request}-byte request")
            }
            Violation::Envelope(e) => write!(f, "envelope: {e}"),
            Violation::EnvelopeSize { original, evidence } => write!(
                f,
                "envelope of {original} original bytes for {evidence} bytes of evidence"
            ),
            Violation::Receipt(e) => f.write_str(e),
            Violation::ReceiptEvidenceId => f.write_str("receipt names another evidence id"),
            Violation::ReceiptSize { original, evidence } => write!(
                f,
                "receipt says {original} original bytes for {evidence} bytes of evidence"
            ),
            Violation::OutputTooLarge { len, max } => write!(
                f,
                "decoded output of {len} bytes exceeds the limit of {max}"
            ),
            Violation::EraseBody => f.write_str("erase completion body is not one 0/1 byte"),
            Violation::ControlDatagram { len } => write!(f, "control datagram of {len} bytes"),
            Violation::SecondFatal => f.write_str("a second Fatal message"),
            Violation::AfterFatal { kind } => write!(f, "{kind} message after Fatal"),
            Violation::UnexpectedControl { kind } => {
                write!(f, "unexpected control message {kind}")
            }
            Violation::MalformedControl(e) => write!(f, "malformed control frame: {e}"),
            Violation::ControlSocket(e) => write!(f, "control socket error: {e}"),
        }
    }
}

/// Validates one completion (untrusted) against the job at the front of slot `i`'s ring,
/// delivers its outcome ([`machine::complete`]) and frees its ring space. `Err` means the
/// hound must be killed. `head` is the completion's header (as many bytes of it as the record
/// had) and `body` the rest, both private copies out of the ring
/// (`CompletionReader::pop_split`); a payload-carrying receipt takes `body`'s buffer as it is
/// (no second copy), leaving the caller's `body` empty.
pub(super) fn handle_completion(
    sh: &Books,
    i: usize,
    h: &HoundProc,
    head: &[u8],
    body: &mut Vec<u8>,
) -> Result<(), Violation> {
    let hdr = CompletionHeader::parse_parts(head, body)
        .map_err(|e| Violation::Malformed(e.to_string()))?;
    let slot = &sh.slots[i];
    let (meta, result) = {
        let mut guard = slot.lock();
        let conn = guard.as_mut().ok_or(Violation::SlotClosed)?;
        let no_job = Violation::NothingInFlight { job_id: hdr.job_id };
        let front = conn.front().ok_or(no_job.clone())?;
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
        let meta = slot.pop_front(conn).ok_or(no_job)?;
        (meta, result)
    };
    h.reader.release_requests(meta.pos.end);
    slot.completed.fetch_add(1, Ordering::Relaxed);
    // A record `Pool::cancel` withdrew is discarded: its outcome was delivered then.
    let step = machine::complete(&meta.state_in_ring(i as u32, true), result);
    sh.conclude(&meta, step);
    Ok(())
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
