//! What a hound did that it may not: found by the collector, or by a caller's thread that
//! drained a completion ring (`Pool::recv_outcomes`) and hands it over to the collector, which
//! alone kills and settles.

use std::fmt;

use houndpool_protocol::job::JobKind;

/// What a hound did that it may not: the reason it is killed. The job at its front then fails
/// with `ProtocolViolation`, this text (escaped) as the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
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
