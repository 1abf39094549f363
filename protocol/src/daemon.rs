//! The daemon socket: the messages between `houndd` and its clients over the daemon's Unix
//! socket (SOCK_STREAM, frames read with [`crate::frame::FrameDecoder`]), frame kinds 16–23.
//!
//! A client sends [`Submit`], [`Cancel`] and [`StatsRequest`]; the daemon answers each with
//! [`SubmitReply`], [`CancelReply`] and [`StatsReply`], writes one [`JobOutcome`] per accepted
//! job, and sends [`ErrorNotice`] as the last frame before it closes a connection. Each frame
//! body is the bincode encoding (docs/PROTOCOL.md, Part 4) of the struct its [`DaemonMessage`]
//! variant carries; see [`DaemonMessage::encode_frame`] for the size limits. A control kind
//! (1–6, [`crate::control`]) is refused here.
//!
//! Byte strings (`Submit::body`, `OutcomeReceipt::payload`) go through `serde_bytes`: the same
//! bytes on the wire as a `Vec<u8>` sequence (u64 LE length, then the bytes), decoded in one
//! copy instead of element by element, with nothing reserved before the bytes are present.

use crate::codec;
use crate::frame::{write_frame, FrameHeader, MessageKind};
use crate::job::{JobKind, Severity};
use crate::ProtocolError;
use serde::{Deserialize, Serialize};

/// Limit on the body of a daemon message that carries no evidence ([`SubmitReply`],
/// [`StatsRequest`], [`StatsReply`], [`ErrorNotice`]). [`Submit`] and [`JobOutcome`] carry
/// evidence and are bounded by the receiver's configured frame limit instead.
pub const MAX_DAEMON_CONTROL_BODY: u32 = 64 * 1024;

/// client → daemon: run one job. Answered at once by a [`SubmitReply`] with the same
/// `request_id`; an accepted job's [`JobOutcome`] follows later on the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Chosen by the client, echoed in the reply and the outcome (need not be unique).
    pub request_id: u64,
    /// What to do.
    pub kind: JobKind,
    /// Defer-queue lane.
    pub severity: Severity,
    /// Evidence id: required for Restore and Erase; assigned (UUIDv7) when absent otherwise.
    pub evidence_id: Option<[u8; 16]>,
    /// gzip level 0..=9 for Encode / Evacuate; the daemon's default when absent.
    pub level: Option<u8>,
    /// Evidence (Noop, Encode, Evacuate), an envelope (Decode), or empty (Restore, Erase).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// A caller-chosen evidence key (Evacuate, Restore, Erase only; then `evidence_id` must
    /// be `None`): the object is `<prefix><key>.thcs`. Rules: [`crate::job::check_evidence_key`].
    pub key: Option<String>,
}

/// Why the daemon did not accept a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseReason {
    /// (0) No hound has ring space (exhaustion action `drop` or `escalate`).
    PoolExhausted,
    /// (1) The defer queue is full and holds nothing of lower severity.
    DeferQueueFull,
    /// (2) The body is larger than the daemon accepts.
    EvidenceTooLarge,
    /// (3) Encode, Evacuate and Decode need a non-empty body.
    EmptyEvidence,
    /// (4) Restore / Erase without an evidence id or with a body, or a gzip level above 9.
    InvalidJob,
    /// (5) The daemon is draining.
    ShuttingDown,
    /// (6) This connection already has as many jobs awaiting their outcome as the daemon's
    /// per-connection buffer holds (`daemon.outcome_buffer`): read outcomes, then submit again.
    ConnectionBusy,
}

impl RefuseReason {
    /// All reasons, in wire order.
    pub const ALL: [RefuseReason; 7] = [
        RefuseReason::PoolExhausted,
        RefuseReason::DeferQueueFull,
        RefuseReason::EvidenceTooLarge,
        RefuseReason::EmptyEvidence,
        RefuseReason::InvalidJob,
        RefuseReason::ShuttingDown,
        RefuseReason::ConnectionBusy,
    ];
    /// Stable snake_case name (metrics labels, logs, clients).
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::PoolExhausted => "pool_exhausted",
            RefuseReason::DeferQueueFull => "defer_queue_full",
            RefuseReason::EvidenceTooLarge => "evidence_too_large",
            RefuseReason::EmptyEvidence => "empty_evidence",
            RefuseReason::InvalidJob => "invalid_job",
            RefuseReason::ShuttingDown => "shutting_down",
            RefuseReason::ConnectionBusy => "connection_busy",
        }
    }
}

/// What became of a submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitResult {
    /// (0) Accepted: exactly one [`JobOutcome`] with this `job_id` will follow on this
    /// connection, unless the connection is closed first.
    Accepted {
        /// Daemon-unique job id.
        job_id: u64,
        /// The evidence id (given or assigned).
        evidence_id: [u8; 16],
    },
    /// (1) Not accepted; no outcome follows.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// Human-readable detail.
        message: String,
    },
}

/// daemon → client: the answer to one [`Submit`], sent before anything else about that job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// The submit's `request_id`.
    pub request_id: u64,
    /// Accepted or refused.
    pub result: SubmitResult,
}

/// What a completed job produced (fields not meaningful for the kind are absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutcomeReceipt {
    /// Slot of the hound that did the job.
    pub hound: u32,
    /// Object key (Evacuate, Restore, Erase).
    pub key: Option<String>,
    /// Original evidence size (Encode, Evacuate, Restore, Decode).
    pub original_size: Option<u64>,
    /// gzip stream size (Encode, Evacuate).
    pub compressed_size: Option<u64>,
    /// SHA-256 of the gzip stream (Encode, Evacuate).
    pub sha256: Option<[u8; 32]>,
    /// Hound-measured encode time, microseconds (Evacuate).
    pub encode_us: Option<u64>,
    /// Hound-measured storage time, microseconds (Evacuate).
    pub store_us: Option<u64>,
    /// Evacuate: the envelope waits in the local spool for upload.
    pub spooled: bool,
    /// Erase: whether the object existed.
    pub existed: Option<bool>,
    /// The envelope (Encode), the original bytes (Restore, Decode) or the echo (Noop).
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
}

/// Class of a job failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// (0) The hound ran the job and reported a failure; `code` says which.
    Job,
    /// (1) The job made its hound die by a signal (e.g. SIGSYS from the sandbox).
    HoundKilled,
    /// (2) The hound exceeded its memory budget.
    OutOfMemory,
    /// (3) The hound broke the protocol and was killed.
    ProtocolViolation,
    /// (4) The job killed two hounds and is not tried again.
    Poison,
}

impl FailureKind {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Job => "job",
            FailureKind::HoundKilled => "hound_killed",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::ProtocolViolation => "protocol_violation",
            FailureKind::Poison => "poison",
        }
    }
}

/// Why an accepted job was never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DropKind {
    /// (0) Evicted from the defer queue by a job of higher severity.
    Evicted,
    /// (1) The daemon shut down before the job could run.
    Shutdown,
    /// (2) Cancelled by its client ([`Cancel`]): withdrawn before it ran, or its hound killed.
    Cancelled,
}

/// client → daemon: cancel the job `job_id` (from an accepting [`SubmitReply`] on this
/// connection). Answered by one [`CancelReply`] with the same `request_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The job to cancel.
    pub job_id: u64,
}

/// What a [`Cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelResult {
    /// (0) Unknown id (or not this connection's), or its outcome was already produced.
    NotFound,
    /// (1) Removed from the defer queue or a ring before a hound started it; its outcome
    /// `Dropped { reason: Cancelled }` follows.
    Dequeued,
    /// (2) It was running: its hound was killed; its outcome `Dropped { reason: Cancelled }`
    /// follows.
    Killed,
}

impl CancelResult {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            CancelResult::NotFound => "not_found",
            CancelResult::Dequeued => "dequeued",
            CancelResult::Killed => "killed",
        }
    }
}

/// daemon → client: the answer to one [`Cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The cancel's `request_id`.
    pub request_id: u64,
    /// What happened.
    pub result: CancelResult,
}

/// The single final result of an accepted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeResult {
    /// (0) Done.
    Completed(OutcomeReceipt),
    /// (1) Failed.
    Failed {
        /// Class of failure.
        kind: FailureKind,
        /// For `kind = Job`: the hound's [`crate::job::FailCode`] wire value; else 0.
        code: u16,
        /// Human-readable detail (hound text is untrusted, at most 512 bytes of it).
        message: String,
    },
    /// (2) The hound made no progress before the deadline and was killed.
    TimedOut,
    /// (3) Accepted but never run.
    Dropped {
        /// Why.
        reason: DropKind,
        /// For `Evicted`: the severity of the job that took its place.
        by: Option<Severity>,
    },
}

/// daemon → client: the outcome of a job this connection submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// The submit's `request_id`.
    pub request_id: u64,
    /// The job id from the accepting [`SubmitReply`].
    pub job_id: u64,
    /// The evidence id.
    pub evidence_id: [u8; 16],
    /// The job's kind.
    pub kind: JobKind,
    /// The job's severity.
    pub severity: Severity,
    /// The attempt that produced this outcome, counted from 1: 1 the first try, 2 the retry
    /// on another hound; 0 if no hound started the job. (The request record's
    /// [`crate::job::RequestHeader::attempt`] counts from 0: 0 the first try, 1 the retry.)
    pub attempt: u8,
    /// Time from acceptance to outcome, microseconds.
    pub latency_us: u64,
    /// What happened.
    pub result: OutcomeResult,
}

/// client → daemon: ask for a [`StatsReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Echoed in the reply.
    pub request_id: u64,
}

/// daemon → client: counters of the pool and the daemon. Pool counters satisfy
/// `accepted = completed + failed + timed_out + dropped + in_flight`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatsReply {
    /// The request's `request_id`.
    pub request_id: u64,
    /// Calls to the pool's submit.
    pub submitted: u64,
    /// Jobs accepted by the pool.
    pub accepted: u64,
    /// Pool refusals: no ring space (drop / escalate).
    pub refused_exhausted: u64,
    /// Pool refusals: defer queue full.
    pub refused_defer_full: u64,
    /// Pool refusals: body too large.
    pub refused_too_large: u64,
    /// Pool refusals: empty or invalid job.
    pub refused_invalid: u64,
    /// Pool refusals: shutting down.
    pub refused_shutdown: u64,
    /// Outcomes `Completed`.
    pub completed: u64,
    /// Outcomes `Failed`.
    pub failed: u64,
    /// Outcomes `TimedOut`.
    pub timed_out: u64,
    /// Outcomes `Dropped`.
    pub dropped: u64,
    /// Accepted jobs without an outcome yet.
    pub in_flight: u64,
    /// Jobs in hound rings.
    pub in_rings: u64,
    /// Jobs in the defer queue.
    pub deferred: u64,
    /// Jobs waiting to be retried.
    pub retrying: u64,
    /// Hounds configured.
    pub hounds_target: u32,
    /// Hounds running and past their handshake.
    pub hounds_ready: u32,
    /// Whether the daemon is draining.
    pub draining: bool,
    /// Client connections open.
    pub connections_open: u64,
    /// Outcomes the daemon could not write to their client, all connections.
    pub undelivered: u64,
    /// This connection: accepted jobs whose outcome has not been written yet.
    pub connection_in_flight: u64,
}

/// Why the daemon is closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// (0) A frame could not be decoded (bad header, oversized, malformed body).
    MalformedFrame,
    /// (1) A well-formed message a client may not send (only Submit, StatsRequest and Cancel).
    UnexpectedMessage,
    /// (2) The peer's uid is not in the daemon's allow-list.
    PermissionDenied,
    /// (3) The daemon serves its maximum number of connections.
    TooManyConnections,
    /// (4) The daemon is shutting down.
    ShuttingDown,
    /// (5) The client took no bytes for `daemon.write_stall_timeout_ms` (written only if the
    /// socket still takes it).
    WriteStalled,
    /// (6) A frame was started and not completed within `daemon.frame_timeout_ms`.
    FrameTimeout,
    /// (7) Nothing in flight and nothing received for `daemon.idle_timeout_ms`.
    IdleTimeout,
    /// (8) Closed to admit a new connection while the daemon was at `daemon.max_connections`:
    /// this connection had nothing in flight and was the longest quiet.
    Evicted,
    /// (9) The peer's uid already has `daemon.max_connections_per_uid` connections open.
    TooManyConnectionsForUid,
}

impl ErrorCode {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::WriteStalled => "write_stalled",
            ErrorCode::FrameTimeout => "frame_timeout",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::Evicted => "evicted",
            ErrorCode::TooManyConnectionsForUid => "too_many_connections_for_uid",
        }
    }
}

/// daemon → client: the last frame before the daemon closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNotice {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// A daemon message of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonMessage {
    /// See [`Submit`].
    Submit(Submit),
    /// See [`SubmitReply`].
    SubmitReply(SubmitReply),
    /// See [`JobOutcome`].
    Outcome(JobOutcome),
    /// See [`StatsRequest`].
    StatsRequest(StatsRequest),
    /// See [`StatsReply`].
    Stats(StatsReply),
    /// See [`ErrorNotice`].
    Error(ErrorNotice),
    /// See [`Cancel`].
    Cancel(Cancel),
    /// See [`CancelReply`].
    CancelReply(CancelReply),
}

impl DaemonMessage {
    /// The frame kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            DaemonMessage::Submit(_) => MessageKind::Submit,
            DaemonMessage::SubmitReply(_) => MessageKind::SubmitReply,
            DaemonMessage::Outcome(_) => MessageKind::Outcome,
            DaemonMessage::StatsRequest(_) => MessageKind::StatsRequest,
            DaemonMessage::Stats(_) => MessageKind::Stats,
            DaemonMessage::Error(_) => MessageKind::Error,
            DaemonMessage::Cancel(_) => MessageKind::Cancel,
            DaemonMessage::CancelReply(_) => MessageKind::CancelReply,
        }
    }

    /// The body limit of `kind`: `max_body` for Submit and Outcome (which carry evidence),
    /// [`MAX_DAEMON_CONTROL_BODY`] for the others.
    fn limit(kind: MessageKind, max_body: u32) -> u64 {
        match kind {
            MessageKind::Submit | MessageKind::Outcome => u64::from(max_body),
            _ => u64::from(MAX_DAEMON_CONTROL_BODY.min(max_body)),
        }
    }

    /// Appends this message as one complete frame to `out`. Fails with
    /// [`ProtocolError::EncodeFailed`] (and leaves `out` untouched) if the body would exceed
    /// its limit (`max_body`, or [`MAX_DAEMON_CONTROL_BODY`] for messages without evidence).
    pub fn encode_frame(&self, out: &mut Vec<u8>, max_body: u32) -> Result<(), ProtocolError> {
        let kind = self.kind();
        let (name, limit) = (kind.name(), Self::limit(kind, max_body));
        let body = match self {
            DaemonMessage::Submit(m) => codec::encode(name, m, limit)?,
            DaemonMessage::SubmitReply(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Outcome(m) => codec::encode(name, m, limit)?,
            DaemonMessage::StatsRequest(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Stats(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Error(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Cancel(m) => codec::encode(name, m, limit)?,
            DaemonMessage::CancelReply(m) => codec::encode(name, m, limit)?,
        };
        write_frame(kind, &body, out)
    }

    /// Decodes the body of a frame whose header was already validated against `max_body`.
    /// A control-channel kind (1–6) is [`ProtocolError::MalformedBody`]; a body that is not
    /// exactly `header.body_len` bytes or does not decode as its kind's struct is an error as
    /// for [`Message::decode`](crate::control::Message::decode). Never panics; memory is
    /// bounded by the body.
    pub fn decode(header: &FrameHeader, body: &[u8], max_body: u32) -> Result<Self, ProtocolError> {
        header.check_body(body)?;
        let kind = header.kind;
        let (name, limit) = (kind.name(), Self::limit(kind, max_body));
        Ok(match kind {
            MessageKind::Submit => DaemonMessage::Submit(codec::decode(name, body, limit)?),
            MessageKind::SubmitReply => {
                DaemonMessage::SubmitReply(codec::decode(name, body, limit)?)
            }
            MessageKind::Outcome => DaemonMessage::Outcome(codec::decode(name, body, limit)?),
            MessageKind::StatsRequest => {
                DaemonMessage::StatsRequest(codec::decode(name, body, limit)?)
            }
            MessageKind::Stats => DaemonMessage::Stats(codec::decode(name, body, limit)?),
            MessageKind::Error => DaemonMessage::Error(codec::decode(name, body, limit)?),
            MessageKind::Cancel => DaemonMessage::Cancel(codec::decode(name, body, limit)?),
            MessageKind::CancelReply => {
                DaemonMessage::CancelReply(codec::decode(name, body, limit)?)
            }
            MessageKind::Hello
            | MessageKind::Ready
            | MessageKind::Shutdown
            | MessageKind::Fatal
            | MessageKind::Setup
            | MessageKind::ColdEndpoints => return Err(kind.not_of_channel("daemon socket")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Message, Shutdown};
    use crate::frame::parse_frame;

    fn daemon_round_trip(m: DaemonMessage) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_frame(&mut out, 1 << 20).unwrap();
        let (h, body) = parse_frame(&out, 1 << 20).unwrap();
        assert_eq!(h.kind, m.kind());
        assert!(h.kind.is_daemon());
        assert_eq!(DaemonMessage::decode(&h, body, 1 << 20).unwrap(), m);
        out
    }

    #[test]
    fn cancel_layout_is_the_documented_bincode() {
        let out = daemon_round_trip(DaemonMessage::Cancel(Cancel {
            request_id: 7,
            job_id: 0x0102,
        }));
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend(0x0102u64.to_le_bytes());
        assert_eq!(&out[out.len() - 16..], &body[..]);
        for (result, tag) in [
            (CancelResult::NotFound, 0u32),
            (CancelResult::Dequeued, 1),
            (CancelResult::Killed, 2),
        ] {
            let out = daemon_round_trip(DaemonMessage::CancelReply(CancelReply {
                request_id: 9,
                result,
            }));
            let mut body = 9u64.to_le_bytes().to_vec();
            body.extend(tag.to_le_bytes());
            assert_eq!(&out[out.len() - 12..], &body[..]);
        }
        let out = daemon_round_trip(DaemonMessage::Outcome(JobOutcome {
            request_id: 1,
            job_id: 2,
            evidence_id: [0; 16],
            kind: JobKind::Evacuate,
            severity: Severity::Low,
            attempt: 0,
            latency_us: 3,
            result: OutcomeResult::Dropped {
                reason: DropKind::Cancelled,
                by: None,
            },
        }));
        // Dropped = 3, Cancelled = 2, by = None.
        let tail: Vec<u8> = [3u32.to_le_bytes(), 2u32.to_le_bytes()].concat();
        assert_eq!(&out[out.len() - 9..out.len() - 1], &tail[..]);
        assert_eq!(out[out.len() - 1], 0);
    }

    #[test]
    fn submit_layout_is_the_documented_bincode() {
        let out = daemon_round_trip(DaemonMessage::Submit(Submit {
            request_id: 5,
            kind: JobKind::Encode,
            severity: Severity::Critical,
            evidence_id: None,
            level: Some(3),
            body: b"ab".to_vec(),
            key: None,
        }));
        // docs/PROTOCOL.md Part 4: request_id u64, kind u32, severity u32, evidence_id option,
        // level option, body as u64 length + bytes, key option. The Node client's test checks
        // the same bytes.
        assert_eq!(
            &out[crate::frame::FRAME_HEADER_LEN..],
            &[
                5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 1, 3, 2, 0, 0, 0, 0, 0, 0, 0,
                b'a', b'b', 0
            ]
        );
        // A byte string is encoded exactly like the `Vec<u8>` sequence it replaces.
        let as_seq = codec::encode("x", &vec![b'a', b'b'], 64).unwrap();
        assert_eq!(as_seq, [2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    }

    /// The hex of the worked example that follows `title` in docs/PROTOCOL.md (the leading
    /// two-digit hex tokens of each line of the next text block).
    fn documented_hex(title: &str) -> String {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let at = doc.find(title).expect("example title in docs/PROTOCOL.md");
        let rest = &doc[at..];
        let start = rest.find("```text\n").expect("example block") + "```text\n".len();
        let block = &rest[start..start + rest[start..].find("```").expect("block end")];
        let mut hex = String::new();
        for line in block.lines() {
            for tok in line.split_whitespace() {
                if tok.len() == 2 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                    hex.push_str(tok);
                } else {
                    break;
                }
            }
        }
        hex
    }

    #[test]
    fn documented_daemon_examples_match_the_encoder() {
        let submit = daemon_round_trip(DaemonMessage::Submit(Submit {
            request_id: 5,
            kind: JobKind::Encode,
            severity: Severity::Critical,
            evidence_id: None,
            level: Some(3),
            body: b"ab".to_vec(),
            key: None,
        }));
        assert_eq!(
            documented_hex("`Submit { request_id: 5, kind: encode, severity: critical, evidence_id: None, level: Some(3), body: \"ab\", key: None }` — 46 bytes"),
            hex::encode(&submit)
        );
        let reply = daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
            request_id: 5,
            result: SubmitResult::Accepted {
                job_id: 7,
                evidence_id: [1; 16],
            },
        }));
        assert_eq!(
            documented_hex("Its reply, accepted as job 7 with evidence id `01…01` — 52 bytes"),
            hex::encode(&reply)
        );
    }

    #[test]
    fn every_daemon_message_round_trips() {
        daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
            request_id: 1,
            result: SubmitResult::Accepted {
                job_id: 9,
                evidence_id: [7; 16],
            },
        }));
        for reason in RefuseReason::ALL {
            daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
                request_id: 2,
                result: SubmitResult::Refused {
                    reason,
                    message: reason.name().into(),
                },
            }));
        }
        let outcome = |result| JobOutcome {
            request_id: 3,
            job_id: 4,
            evidence_id: [1; 16],
            kind: JobKind::Evacuate,
            severity: Severity::High,
            attempt: 1,
            latency_us: 1234,
            result,
        };
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Completed(
            OutcomeReceipt {
                hound: 1,
                key: Some("evidence/x.thcs".into()),
                original_size: Some(10),
                compressed_size: Some(8),
                sha256: Some([0xab; 32]),
                encode_us: Some(5),
                store_us: Some(6),
                spooled: true,
                existed: None,
                payload: Some(vec![1, 2, 3]),
            },
        ))));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Failed {
            kind: FailureKind::Job,
            code: 3,
            message: "integrity".into(),
        })));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::TimedOut)));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Dropped {
            reason: DropKind::Evicted,
            by: Some(Severity::Critical),
        })));
        daemon_round_trip(DaemonMessage::StatsRequest(StatsRequest { request_id: 8 }));
        daemon_round_trip(DaemonMessage::Stats(StatsReply {
            request_id: 8,
            accepted: 3,
            draining: true,
            ..StatsReply::default()
        }));
        daemon_round_trip(DaemonMessage::Error(ErrorNotice {
            code: ErrorCode::MalformedFrame,
            message: "bad".into(),
        }));
    }

    #[test]
    fn channels_refuse_each_others_kinds() {
        let mut out = Vec::new();
        DaemonMessage::StatsRequest(StatsRequest { request_id: 1 })
            .encode_frame(&mut out, 1 << 20)
            .unwrap();
        assert!(matches!(
            Message::from_datagram(&out),
            Err(ProtocolError::MalformedBody {
                kind: "stats_request",
                ..
            })
        ));
        let mut out = Vec::new();
        Message::Shutdown(Shutdown { grace_ms: 1 })
            .encode_frame(&mut out)
            .unwrap();
        let (h, body) = parse_frame(&out, 1 << 20).unwrap();
        assert!(matches!(
            DaemonMessage::decode(&h, body, 1 << 20),
            Err(ProtocolError::MalformedBody {
                kind: "shutdown",
                ..
            })
        ));
    }

    #[test]
    fn daemon_limits_bound_encoding_and_decoding() {
        let big = DaemonMessage::Submit(Submit {
            request_id: 1,
            kind: JobKind::Noop,
            severity: Severity::Low,
            evidence_id: None,
            level: None,
            body: vec![0; 5000],
            key: None,
        });
        let mut out = Vec::new();
        assert!(matches!(
            big.encode_frame(&mut out, 4096),
            Err(ProtocolError::EncodeFailed { .. })
        ));
        assert!(out.is_empty());
        big.encode_frame(&mut out, 8192).unwrap();
        let (h, body) = parse_frame(&out, 8192).unwrap();
        assert!(DaemonMessage::decode(&h, body, 4096).is_err());
        // A byte string announcing more than the body holds is an error, not an allocation.
        let mut lying = out[crate::frame::FRAME_HEADER_LEN..].to_vec();
        let at = lying.len() - 5000 - 8;
        lying[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let h = FrameHeader {
            kind: MessageKind::Submit,
            body_len: lying.len() as u32,
        };
        assert!(DaemonMessage::decode(&h, &lying, 8192).is_err());
        // Messages without evidence are bounded by MAX_DAEMON_CONTROL_BODY.
        let long = DaemonMessage::Error(ErrorNotice {
            code: ErrorCode::MalformedFrame,
            message: "x".repeat(MAX_DAEMON_CONTROL_BODY as usize),
        });
        assert!(long.encode_frame(&mut Vec::new(), u32::MAX).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn daemon_decoding_never_panics(kind in 16u16..=21, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let h = FrameHeader { kind: MessageKind::from_u16(kind).unwrap(), body_len: body.len() as u32 };
            let _ = DaemonMessage::decode(&h, &body, 1 << 20);
        }
    }
}
