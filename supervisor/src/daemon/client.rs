//! A blocking client of `houndd` (used by `houndd submit`; usable from any Rust program).
//!
//! ```no_run
//! use houndpool::daemon::client::{Client, Event};
//! use houndpool::{JobKind, Severity};
//!
//! let mut c = Client::connect("/run/houndpool/houndd.sock")?;
//! let accepted = c.submit(JobKind::Evacuate, Severity::High, b"GET /admin HTTP/1.1\r\n\r\n".to_vec())?;
//! let job_id = accepted.map_err(|(reason, msg)| format!("refused: {}: {msg}", reason.name()))?;
//! let outcome = c.next_outcome()?;
//! assert_eq!(outcome.job_id, job_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The protocol (docs/PROTOCOL.md, Part 4) lets a client pipeline: [`Client::send_submit`]
//! writes a submit without waiting, and [`Client::next_event`] returns replies, outcomes and
//! stats in the order the daemon wrote them (a job's reply always precedes its outcome).
//! [`Client::submit`] and [`Client::stats`] wait for their own reply and keep the outcomes
//! that arrive meanwhile for [`Client::next_outcome`].

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use houndpool_protocol::daemon::{
    Cancel, CancelReply, CancelResult, DaemonMessage, JobOutcome, RefuseReason, StatsReply,
    StatsRequest, Submit, SubmitReply, SubmitResult,
};
use houndpool_protocol::frame::FrameDecoder;

use super::DaemonError;
use crate::{JobKind, Severity};

/// Largest frame body this client accepts by default: the largest the daemon can be
/// configured to produce (256 MiB of output plus framing).
pub const DEFAULT_MAX_FRAME: u32 = (256 << 20) + (1 << 20);

/// One message from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The answer to a submit.
    Reply(SubmitReply),
    /// The outcome of an accepted job.
    Outcome(JobOutcome),
    /// The answer to a stats request.
    Stats(StatsReply),
    /// The answer to a cancel.
    Cancelled(CancelReply),
}

/// A connection to `houndd`. Not thread-safe; open one per thread.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    next_request: u64,
    held: VecDeque<Event>,
    buf: Vec<u8>,
    max_frame: u32,
}

/// What [`Client::submit`] returns: the job id, or the refusal reason and message.
pub type Accepted = Result<u64, (RefuseReason, String)>;

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, DaemonError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(super::io_err("connect", path))?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            next_request: 1,
            held: VecDeque::new(),
            buf: vec![0; 64 * 1024],
            max_frame: DEFAULT_MAX_FRAME,
        })
    }

    /// Sets a read timeout (`None`: wait forever). A read that times out is an
    /// [`DaemonError::Io`] of kind `WouldBlock` / `TimedOut`.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), DaemonError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(super::io_err("set timeout", "socket"))
    }

    fn send(&mut self, msg: &DaemonMessage) -> Result<(), DaemonError> {
        let mut out = Vec::new();
        msg.encode_frame(&mut out, self.max_frame)?;
        self.stream
            .write_all(&out)
            .map_err(super::io_err("write", "socket"))
    }

    /// Writes a submit without waiting for its reply; returns its request id.
    pub fn send_submit(
        &mut self,
        kind: JobKind,
        severity: Severity,
        evidence_id: Option<[u8; 16]>,
        level: Option<u8>,
        body: Vec<u8>,
    ) -> Result<u64, DaemonError> {
        self.send_submit_full(kind, severity, evidence_id, None, level, body)
    }

    /// Like [`Client::send_submit`], naming the object by a caller-chosen evidence `key`
    /// (Evacuate, Restore, Erase; the object is `<prefix><key>.thcs`, e.g. the origin's
    /// `<category>:<sha256 hex>`). The daemon refuses a bad key (`invalid_job`, saying why);
    /// with a key, `evidence_id` must be `None`.
    pub fn send_submit_full(
        &mut self,
        kind: JobKind,
        severity: Severity,
        evidence_id: Option<[u8; 16]>,
        key: Option<String>,
        level: Option<u8>,
        body: Vec<u8>,
    ) -> Result<u64, DaemonError> {
        let request_id = self.next_request;
        self.next_request += 1;
        self.send(&DaemonMessage::Submit(Submit {
            request_id,
            kind,
            severity,
            evidence_id,
            level,
            body,
            key,
        }))?;
        Ok(request_id)
    }

    /// Submits one job and waits for the daemon's answer (outcomes arriving meanwhile are kept
    /// for [`Client::next_outcome`]).
    pub fn submit(
        &mut self,
        kind: JobKind,
        severity: Severity,
        body: Vec<u8>,
    ) -> Result<Accepted, DaemonError> {
        let id = self.send_submit(kind, severity, None, None, body)?;
        self.wait_reply(id)
    }

    /// Waits for the reply to `request_id`, keeping other events.
    pub fn wait_reply(&mut self, request_id: u64) -> Result<Accepted, DaemonError> {
        if let Some(i) = self
            .held
            .iter()
            .position(|e| matches!(e, Event::Reply(r) if r.request_id == request_id))
        {
            if let Some(Event::Reply(r)) = self.held.remove(i) {
                return Ok(accepted(r));
            }
        }
        loop {
            match self.read_event()? {
                Event::Reply(r) if r.request_id == request_id => return Ok(accepted(r)),
                other => self.held.push_back(other),
            }
        }
    }

    /// Asks for the daemon's counters and waits for them.
    pub fn stats(&mut self) -> Result<StatsReply, DaemonError> {
        let request_id = self.next_request;
        self.next_request += 1;
        self.send(&DaemonMessage::StatsRequest(StatsRequest { request_id }))?;
        loop {
            match self.read_event()? {
                Event::Stats(s) if s.request_id == request_id => return Ok(s),
                other => self.held.push_back(other),
            }
        }
    }

    /// Writes a cancel of `job_id` (a job this connection submitted) without waiting; returns
    /// its request id. The answer arrives as [`Event::Cancelled`].
    pub fn send_cancel(&mut self, job_id: u64) -> Result<u64, DaemonError> {
        let request_id = self.next_request;
        self.next_request += 1;
        self.send(&DaemonMessage::Cancel(Cancel { request_id, job_id }))?;
        Ok(request_id)
    }

    /// Cancels `job_id` and waits for the answer (other events are kept). With `Dequeued` or
    /// `Killed`, the job's outcome `Dropped { reason: Cancelled }` follows on this connection.
    pub fn cancel(&mut self, job_id: u64) -> Result<CancelResult, DaemonError> {
        let request_id = self.send_cancel(job_id)?;
        loop {
            match self.read_event()? {
                Event::Cancelled(r) if r.request_id == request_id => return Ok(r.result),
                other => self.held.push_back(other),
            }
        }
    }

    /// The next outcome (held ones first), waiting for it.
    pub fn next_outcome(&mut self) -> Result<JobOutcome, DaemonError> {
        if let Some(i) = self
            .held
            .iter()
            .position(|e| matches!(e, Event::Outcome(_)))
        {
            if let Some(Event::Outcome(o)) = self.held.remove(i) {
                return Ok(o);
            }
        }
        loop {
            match self.read_event()? {
                Event::Outcome(o) => return Ok(o),
                other => self.held.push_back(other),
            }
        }
    }

    /// The next event: held ones first, then from the socket in the daemon's order.
    pub fn next_event(&mut self) -> Result<Event, DaemonError> {
        match self.held.pop_front() {
            Some(e) => Ok(e),
            None => self.read_event(),
        }
    }

    /// Tells the daemon this client submits nothing more (half-close): the daemon writes the
    /// outcomes of the jobs already accepted, then closes the connection.
    pub fn finish_submitting(&mut self) -> Result<(), DaemonError> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(super::io_err("shutdown", "socket"))
    }

    fn read_event(&mut self) -> Result<Event, DaemonError> {
        loop {
            if let Some((header, body)) = self.decoder.next_frame()? {
                return match DaemonMessage::decode(&header, &body, self.max_frame)? {
                    DaemonMessage::SubmitReply(r) => Ok(Event::Reply(r)),
                    DaemonMessage::Outcome(o) => Ok(Event::Outcome(o)),
                    DaemonMessage::Stats(s) => Ok(Event::Stats(s)),
                    DaemonMessage::CancelReply(r) => Ok(Event::Cancelled(r)),
                    DaemonMessage::Error(e) => Err(DaemonError::Remote {
                        code: e.code.name(),
                        message: e.message,
                    }),
                    other => Err(DaemonError::Unexpected(other.kind().name())),
                };
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .map_err(super::io_err("read", "socket"))?;
            if n == 0 {
                return Err(DaemonError::Closed);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }
}

fn accepted(r: SubmitReply) -> Accepted {
    match r.result {
        SubmitResult::Accepted { job_id, .. } => Ok(job_id),
        SubmitResult::Refused { reason, message } => Err((reason, message)),
    }
}
