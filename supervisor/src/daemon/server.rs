//! The Unix-socket server: connections, flow control, and the outcome router.
//!
//! Per connection, one reader and one writer share a FIFO queue of [`Item`]s. The reader
//! reads one frame at a time, calls `Pool::submit` (which never blocks), queues the reply and
//! only then registers the job with the [`Router`]; the bridge thread appends each outcome to
//! the queue of the connection that submitted it. Because the reply is queued before the route
//! exists and the queue is FIFO, a client always reads a job's reply before its outcome.
//!
//! Flow control (docs/PROTOCOL.md, Part 4 §5): an outcome is never refused by the queue,
//! because every accepted job has reserved the worst case of its outcome in the daemon-wide
//! [`Budget`] before it was submitted. The reader waits (does not read the client) while
//! * the connection has `daemon.outcome_buffer` accepted jobs whose outcome is not written,
//! * [`REPLY_LIMIT`] replies wait in its queue, or
//! * the connection is over its fair share of the budget, or the budget is exhausted.
//!
//! The daemon closes a connection itself only for a reason it names in a final `Error` frame:
//! a malformed frame, a write stall (`daemon.write_stall_timeout_ms`), a frame not completed
//! in time (`daemon.frame_timeout_ms`), idleness (`daemon.idle_timeout_ms`), eviction to admit
//! a new connection at `daemon.max_connections`, or drain. Outcomes that are not written in
//! full are counted in `houndpool_daemon_outcomes_undelivered_total`.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use houndpool_protocol::frame::{FrameHeader, FRAME_HEADER_LEN};
// The Cancel message (kinds 22/23).
mod cancel;
use houndpool_protocol::daemon::{
    DaemonMessage, DropKind, ErrorCode, ErrorNotice, FailureKind, JobOutcome, OutcomeReceipt,
    OutcomeResult, RefuseReason, StatsReply, Submit, SubmitReply, SubmitResult,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::flow::{self, Held};
use super::metrics::DaemonMetrics;
use super::{Live, State, FLUSH_TIMEOUT};
use crate::{DropReason, FailReason, Job, Outcome, OutcomeKind, SubmitError};

/// Replies (submit replies, stats) that may wait in a connection's queue; beyond, the client
/// is not read until it takes some.
pub const REPLY_LIMIT: usize = 64;
/// Buffer of a connection's reader (fixed per connection).
const READ_BUF: usize = 16 * 1024;
/// Bytes gathered into one write; a writer keeps at most this much buffer capacity between
/// writes (fixed per connection).
const WRITE_BATCH: usize = 64 * 1024;
/// Outcomes held for jobs whose route is not registered yet (between `submit` returning and
/// the registration a few instructions later, so in practice at most one per connection).
const EARLY_LIMIT: usize = 4096;
/// Time allowed to write an error frame to a connection that is refused at once.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection closed for an error keeps reading (and discarding) client bytes.
const LINGER: Duration = Duration::from_secs(1);
/// How many client bytes it discards at most meanwhile.
const LINGER_BYTES: usize = 1 << 20;
/// Outcome frames are encoded with this body limit: the daemon never refuses to send what
/// the pool produced; clients size their frame limit from the pool's limits (PROTOCOL.md).
const OUTCOME_ENCODE_LIMIT: u32 = u32::MAX;
/// A connection may be evicted to admit a new one only after this long without traffic.
pub const EVICT_MIN_QUIET: Duration = Duration::from_secs(1);
/// A closing connection that held at least this much asks the allocator to return memory.
const TRIM_AFTER: usize = 4 << 20;

/// What a connection's writer writes, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// An encoded reply (SubmitReply, Stats).
    Frame(Vec<u8>),
    /// An outcome of a job this connection submitted: the submit's request id, and the bytes
    /// the job reserved in the budget (released once the outcome is written in full).
    Outcome(u64, Outcome, usize),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Replies (not outcomes) in `items`.
    replies: usize,
    /// Set when the connection is closed: outcomes offered from then on are undelivered.
    closed: bool,
}

/// The part of a connection the router, the bridge thread and the accept loop see.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    uid: Option<u32>,
    queue: Mutex<Queue>,
    /// Wakes the writer (an item was queued, or the reader finished).
    wake: Notify,
    /// Wakes the reader (the writer took items or wrote an outcome).
    progress: Notify,
    /// Accepted jobs whose outcome has not been written in full.
    in_flight: AtomicUsize,
    /// Bytes this connection holds in the daemon-wide budget.
    held: Held,
    /// Largest `held` seen (to decide whether closing frees enough to trim the heap).
    peak: AtomicUsize,
    /// Milliseconds since the daemon's epoch of the last byte read or written.
    last_active: AtomicU64,
    /// Asked to close to admit a new connection.
    evict: Notify,
    /// Chosen as an eviction victim (counted in [`Registry`] until it is closed).
    evicting: AtomicBool,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item for the writer.
    fn push(&self, item: Item) {
        let mut q = self.lock();
        if matches!(item, Item::Frame(_)) {
            q.replies += 1;
        }
        q.items.push_back(item);
        drop(q);
        self.wake.notify_one();
    }

    /// Queues an outcome; never waits and never refuses while the connection is open (the
    /// job reserved room for it). On a closed connection it is counted as undelivered.
    fn offer(&self, request_id: u64, outcome: Outcome, reserved: usize, metrics: &DaemonMetrics) {
        let mut q = self.lock();
        if q.closed {
            drop(q);
            metrics.undelivered.inc();
            return;
        }
        q.items
            .push_back(Item::Outcome(request_id, outcome, reserved));
        drop(q);
        self.wake.notify_one();
    }

    fn touch(&self, state: &State) {
        self.last_active.store(state.now_ms(), Ordering::Relaxed);
    }

    /// Nothing in flight and nothing queued: closing it loses nothing.
    fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.lock().items.is_empty()
    }
}

#[derive(Default)]
struct RouterInner {
    routes: HashMap<u64, (Arc<Conn>, u64, usize)>,
    early: HashMap<u64, Outcome>,
}

/// Job id → (connection, request id, reserved bytes). Shared by connection readers
/// (register) and the bridge thread (deliver); the lock is held for a hash-map operation only.
#[derive(Default)]
pub(crate) struct Router {
    inner: Mutex<RouterInner>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the outcome of `job_id` to `conn` from now on (or at once, if it has arrived).
    fn register(
        &self,
        job_id: u64,
        conn: &Arc<Conn>,
        request_id: u64,
        reserved: usize,
        metrics: &DaemonMetrics,
    ) {
        let mut g = self.lock();
        match g.early.remove(&job_id) {
            Some(o) => {
                drop(g);
                conn.offer(request_id, o, reserved, metrics);
            }
            None => {
                g.routes
                    .insert(job_id, (conn.clone(), request_id, reserved));
            }
        }
    }

    /// Forgets every route of a closed connection (their outcomes, when they come, are
    /// counted as undelivered).
    fn forget(&self, conn_id: u64) {
        self.lock().routes.retain(|_, (c, _, _)| c.id != conn_id);
    }

    /// Sends one outcome to the connection that submitted its job.
    pub(crate) fn deliver(&self, o: Outcome, metrics: &DaemonMetrics) {
        let mut g = self.lock();
        match g.routes.remove(&o.job_id.0) {
            Some((conn, request_id, reserved)) => {
                drop(g);
                conn.offer(request_id, o, reserved, metrics);
            }
            None if g.early.len() < EARLY_LIMIT => {
                g.early.insert(o.job_id.0, o);
            }
            None => {
                drop(g);
                metrics.undelivered.inc();
                warn!(
                    job = o.job_id.0,
                    "outcome for a job no connection registered; dropped"
                );
            }
        }
    }
}

/// The bridge thread: routes the pool's outcomes until `stop` is set and the channel is empty
/// (or the channel is disconnected). Never blocks on a client.
pub(crate) fn bridge(rx: Receiver<Outcome>, state: &State, stop: &AtomicBool) {
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(o) => state.router.deliver(o, &state.metrics),
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::SeqCst) {
                    while let Ok(o) = rx.try_recv() {
                        state.router.deliver(o, &state.metrics);
                    }
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn encode(msg: &DaemonMessage, limit: u32) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match msg.encode_frame(&mut out, limit) {
        Ok(()) => Some(out),
        Err(e) => {
            warn!(kind = msg.kind().name(), error = %e, "cannot encode a daemon message");
            None
        }
    }
}

fn error_frame(code: ErrorCode, message: impl Into<String>) -> Vec<u8> {
    let msg = DaemonMessage::Error(ErrorNotice {
        code,
        message: message.into(),
    });
    encode(&msg, u32::MAX).unwrap_or_default()
}

fn refuse_reason(e: &SubmitError) -> RefuseReason {
    match e {
        SubmitError::PoolExhausted => RefuseReason::PoolExhausted,
        SubmitError::DeferQueueFull { .. } => RefuseReason::DeferQueueFull,
        SubmitError::EvidenceTooLarge { .. } => RefuseReason::EvidenceTooLarge,
        SubmitError::EmptyEvidence { .. } => RefuseReason::EmptyEvidence,
        SubmitError::InvalidJob { .. } | SubmitError::InvalidKey { .. } => RefuseReason::InvalidJob,
        SubmitError::ShutDown => RefuseReason::ShuttingDown,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The wire form of an outcome.
pub(crate) fn to_wire(request_id: u64, o: Outcome) -> JobOutcome {
    let result = match o.result {
        OutcomeKind::Completed(r) => OutcomeResult::Completed(OutcomeReceipt {
            hound: r.hound,
            key: r.key,
            original_size: r.original_size,
            compressed_size: r.compressed_size,
            sha256: r.sha256,
            encode_us: r.encode_time.map(micros),
            store_us: r.store_time.map(micros),
            spooled: r.spooled,
            existed: r.existed,
            payload: r.payload,
        }),
        OutcomeKind::Failed(reason) => {
            let mut message = reason.to_string();
            if message.len() > flow::MAX_MESSAGE {
                let mut cut = flow::MAX_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            let (kind, code) = match reason {
                FailReason::Job { code, .. } => (FailureKind::Job, code as u16),
                FailReason::HoundKilled { .. } => (FailureKind::HoundKilled, 0),
                FailReason::OutOfMemory => (FailureKind::OutOfMemory, 0),
                FailReason::ProtocolViolation { .. } => (FailureKind::ProtocolViolation, 0),
                FailReason::Poison { .. } => (FailureKind::Poison, 0),
            };
            OutcomeResult::Failed {
                kind,
                code,
                message,
            }
        }
        OutcomeKind::TimedOut => OutcomeResult::TimedOut,
        OutcomeKind::Dropped(DropReason::Evicted { by }) => OutcomeResult::Dropped {
            reason: DropKind::Evicted,
            by: Some(by),
        },
        OutcomeKind::Dropped(DropReason::Shutdown) => OutcomeResult::Dropped {
            reason: DropKind::Shutdown,
            by: None,
        },
        OutcomeKind::Dropped(DropReason::Cancelled) => OutcomeResult::Dropped {
            reason: DropKind::Cancelled,
            by: None,
        },
    };
    JobOutcome {
        request_id,
        job_id: o.job_id.0,
        evidence_id: *o.evidence_id.as_bytes(),
        kind: o.kind,
        severity: o.severity,
        attempt: o.attempts,
        latency_us: micros(o.latency),
        result,
    }
}

fn outcome_kind_name(r: &OutcomeResult) -> &'static str {
    match r {
        OutcomeResult::Completed(_) => "completed",
        OutcomeResult::Failed { .. } => "failed",
        OutcomeResult::TimedOut => "timed_out",
        OutcomeResult::Dropped { .. } => "dropped",
    }
}

/// Pool and daemon counters for a stats request.
pub(crate) fn stats_reply(state: &State, request_id: u64, connection_in_flight: u64) -> StatsReply {
    let s = state.pool.stats();
    StatsReply {
        request_id,
        submitted: s.submitted,
        accepted: s.accepted,
        refused_exhausted: s.refused.exhausted,
        refused_defer_full: s.refused.defer_full,
        refused_too_large: s.refused.too_large,
        refused_invalid: s.refused.invalid,
        refused_shutdown: s.refused.shutdown,
        completed: s.completed,
        failed: s.failed,
        timed_out: s.timed_out,
        dropped: s.dropped,
        in_flight: s.in_flight,
        in_rings: s.in_rings,
        deferred: s.deferred,
        retrying: s.retrying,
        hounds_target: u32::try_from(state.pool.config().hound_count()).unwrap_or(u32::MAX),
        hounds_ready: u32::try_from(s.hounds.iter().filter(|h| h.pid.is_some()).count())
            .unwrap_or(u32::MAX),
        draining: state.draining.load(Ordering::Relaxed),
        connections_open: state.conns_open.load(Ordering::Relaxed) as u64,
        undelivered: state.metrics.undelivered.get(),
        connection_in_flight,
    }
}

/// Runs one submit against the pool: the reply, and the job id if accepted. The caller has
/// made room for the reply and reserved the job's outcome.
fn submit(state: &State, conn: &Conn, live: &Live, s: &Submit) -> (SubmitReply, Option<u64>) {
    let m = &state.metrics;
    m.submits.inc();
    let refused = |reason: RefuseReason, message: String| {
        m.refused.get_or_create(&[("reason", reason.name())]).inc();
        (
            SubmitReply {
                request_id: s.request_id,
                result: SubmitResult::Refused { reason, message },
            },
            None,
        )
    };
    if state.draining.load(Ordering::SeqCst) {
        return refused(RefuseReason::ShuttingDown, "the daemon is draining".into());
    }
    let _ = live;
    if let Some(level) = s.level.filter(|l| *l > 9) {
        return refused(
            RefuseReason::InvalidJob,
            format!("gzip level {level} is not in 0..=9"),
        );
    }
    if let Some(key) = &s.key {
        if !matches!(
            s.kind,
            houndpool_protocol::job::JobKind::Evacuate
                | houndpool_protocol::job::JobKind::Restore
                | houndpool_protocol::job::JobKind::Erase
        ) {
            return refused(
                RefuseReason::InvalidJob,
                format!(
                    "a key is allowed only for evacuate, restore and erase, not {}",
                    s.kind.name()
                ),
            );
        }
        if s.evidence_id.is_some() {
            return refused(
                RefuseReason::InvalidJob,
                "a job with a key must not also carry an evidence_id".into(),
            );
        }
        if let Err(why) = houndpool_protocol::job::check_evidence_key(key.as_bytes()) {
            return refused(RefuseReason::InvalidJob, why.into());
        }
    }
    let job = Job {
        kind: s.kind,
        severity: s.severity,
        body: &s.body,
        evidence_id: s.evidence_id.map(Uuid::from_bytes),
        level: s.level,
        key: s.key.as_deref(),
    };
    match state.pool.submit(&job) {
        Ok(ticket) => {
            m.accepted.inc();
            conn.in_flight.fetch_add(1, Ordering::SeqCst);
            (
                SubmitReply {
                    request_id: s.request_id,
                    result: SubmitResult::Accepted {
                        job_id: ticket.job_id.0,
                        evidence_id: *ticket.evidence_id.as_bytes(),
                    },
                },
                Some(ticket.job_id.0),
            )
        }
        Err(e) => refused(refuse_reason(&e), e.to_string()),
    }
}

/// Why a connection's reader stopped.
#[derive(Debug)]
enum ReaderEnd {
    /// The client half-closed (or closed) its side.
    Eof,
    /// The daemon closes the connection: write what is owed, then this error frame.
    Close(ErrorCode, String),
    /// The socket failed while reading (`true`: the client reset it).
    Io(bool),
    /// The writer has ended.
    WriterGone,
}

/// Waits until `cond` holds, woken by the connection's writer. The caller is not reading the
/// client meanwhile: that is the backpressure, counted as a pause.
async fn wait_for(state: &State, conn: &Conn, cond: impl Fn() -> bool) {
    let mut paused = None;
    loop {
        let n = conn.progress.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if cond() {
            break;
        }
        paused.get_or_insert_with(|| flow::Paused::new(&state.budget));
        n.await;
    }
}

/// Reads the next frame: waits for its first byte (closing an idle connection after
/// `daemon.idle_timeout_ms`), then reads the header and, once the budget has room for it,
/// the body, all within `daemon.frame_timeout_ms` (time spent waiting for the budget is not
/// counted). Returns the header, the body, and the bytes reserved for the body.
async fn next_frame(
    rd: &mut BufReader<OwnedReadHalf>,
    state: &State,
    conn: &Conn,
    live: &Live,
) -> Result<(FrameHeader, Vec<u8>, usize), ReaderEnd> {
    loop {
        match tokio::time::timeout(live.idle_timeout, rd.fill_buf()).await {
            Ok(Ok([])) => return Err(ReaderEnd::Eof),
            Ok(Ok(_)) => break,
            Ok(Err(e)) => return Err(read_error(&e)),
            Err(_) => {
                let quiet_ms = state
                    .now_ms()
                    .saturating_sub(conn.last_active.load(Ordering::Relaxed));
                if conn.is_quiet() && quiet_ms >= super::config::millis(live.idle_timeout) {
                    return Err(ReaderEnd::Close(
                        ErrorCode::IdleTimeout,
                        format!(
                            "nothing received for {} ms with nothing in flight (daemon.idle_timeout_ms)",
                            quiet_ms
                        ),
                    ));
                }
            }
        }
    }
    conn.touch(state);
    let timeout = || {
        ReaderEnd::Close(
            ErrorCode::FrameTimeout,
            format!(
                "a frame was started and not completed within {} ms (daemon.frame_timeout_ms)",
                super::config::millis(live.frame_timeout)
            ),
        )
    };
    let mut deadline = tokio::time::Instant::now() + live.frame_timeout;
    let mut head = [0u8; FRAME_HEADER_LEN];
    match tokio::time::timeout_at(deadline, rd.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        // The client closed (or half-closed) inside a frame: the partial frame is discarded;
        // what it is owed is still written.
        Ok(Err(e)) if e.kind() == ErrorKind::UnexpectedEof => return Err(ReaderEnd::Eof),
        Ok(Err(e)) => return Err(read_error(&e)),
        Err(_) => return Err(timeout()),
    }
    let header = FrameHeader::parse(&head, live.max_frame)
        .map_err(|e| ReaderEnd::Close(ErrorCode::MalformedFrame, e.to_string()))?;
    let len = header.body_len as usize;
    let waited = Instant::now();
    let reserved = state
        .budget
        .reserve(&conn.held, len + FRAME_HEADER_LEN, &state.conns_open)
        .await;
    conn.peak.fetch_max(conn.held.get(), Ordering::Relaxed);
    deadline += waited.elapsed();
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match tokio::time::timeout_at(deadline, rd.read(&mut body[got..])).await {
            Ok(Ok(0)) => return Err(ReaderEnd::Eof),
            Ok(Ok(n)) => {
                got += n;
                conn.touch(state);
            }
            Ok(Err(e)) => return Err(read_error(&e)),
            Err(_) => return Err(timeout()),
        }
    }
    Ok((header, body, reserved))
}

fn read_error(e: &std::io::Error) -> ReaderEnd {
    ReaderEnd::Io(matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    ))
}

/// Handles one frame whose body holds `reserved` bytes of the budget. `Err` ends the reader.
async fn handle_frame(
    state: &State,
    conn: &Arc<Conn>,
    live: &Live,
    header: &FrameHeader,
    body: Vec<u8>,
    reserved: usize,
) -> Result<(), ReaderEnd> {
    let msg = DaemonMessage::decode(header, &body, live.max_frame);
    drop(body);
    let msg = match msg {
        Ok(m) => m,
        Err(e) => return Err(ReaderEnd::Close(ErrorCode::MalformedFrame, e.to_string())),
    };
    // Room for the reply first: while the client does not take its replies, it is not read.
    wait_for(state, conn, || conn.lock().replies < REPLY_LIMIT).await;
    match msg {
        DaemonMessage::Submit(s) => {
            // At most `outcome_buffer` jobs without a written outcome: wait, do not refuse.
            wait_for(state, conn, || {
                conn.in_flight.load(Ordering::SeqCst) < live.outcome_buffer
            })
            .await;
            // The job keeps its body's reservation (the pool may hold a copy in the defer
            // queue) and adds the worst case of its outcome.
            let extra = flow::outcome_reservation(s.kind, s.body.len(), live.max_output);
            let extra = state
                .budget
                .reserve(&conn.held, extra, &state.conns_open)
                .await;
            conn.peak.fetch_max(conn.held.get(), Ordering::Relaxed);
            let reserved = reserved + extra;
            // From here to `register` nothing awaits: the reply is queued before the route
            // exists, so the job's outcome can only be queued after its reply.
            let (reply, accepted) = submit(state, conn, live, &s);
            if let Some(frame) = encode(&DaemonMessage::SubmitReply(reply), live.max_frame) {
                conn.push(Item::Frame(frame));
            }
            match accepted {
                Some(job_id) => {
                    state
                        .router
                        .register(job_id, conn, s.request_id, reserved, &state.metrics)
                }
                None => state.budget.release(&conn.held, reserved),
            }
            Ok(())
        }
        DaemonMessage::Cancel(c) => {
            state.budget.release(&conn.held, reserved);
            cancel::handle(state, conn, live, &c).await;
            Ok(())
        }
        DaemonMessage::StatsRequest(r) => {
            state.budget.release(&conn.held, reserved);
            state.metrics.stats_requests.inc();
            let in_flight = conn.in_flight.load(Ordering::SeqCst) as u64;
            let reply = DaemonMessage::Stats(stats_reply(state, r.request_id, in_flight));
            if let Some(frame) = encode(&reply, live.max_frame) {
                conn.push(Item::Frame(frame));
            }
            Ok(())
        }
        other => {
            let kind = other.kind().name();
            warn!(
                conn = conn.id,
                kind, "client sent a message only the daemon sends; closing the connection"
            );
            Err(ReaderEnd::Close(
                ErrorCode::UnexpectedMessage,
                format!(
                    "{kind} is not a client message; clients send submit, stats_request and cancel"
                ),
            ))
        }
    }
}

/// Why a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// The client half-closed and every accepted job's outcome was written.
    Done,
    /// The daemon closed the connection after writing everything owed and this error frame.
    Closed(ErrorCode),
    /// No progress writing for the stall timeout.
    Stalled,
    /// The client closed its end (EPIPE / ECONNRESET).
    ClientGone,
    /// The socket failed otherwise.
    Io,
    /// Stopped by the reader (the socket failed there).
    Aborted,
}

/// What the writer does when its queue is empty.
#[derive(Debug)]
enum Next {
    Wait,
    Done,
    Close(ErrorCode, Vec<u8>),
    Abort,
}

/// How the reader tells the writer to finish.
#[derive(Debug)]
enum Ending {
    Eof,
    Close(ErrorCode, Vec<u8>),
    Abort,
}

/// Writes `buf`; `Err((written, end))` if a write fails or makes no progress for `stall`.
async fn write_with_stall(
    wr: &mut OwnedWriteHalf,
    buf: &[u8],
    stall: Duration,
    conn: &Conn,
    state: &State,
) -> Result<(), (usize, WriterEnd)> {
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout(stall, wr.write(&buf[off..])).await {
            Ok(Ok(0)) => return Err((off, WriterEnd::ClientGone)),
            Ok(Err(e)) => {
                let end = match e.kind() {
                    ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted => WriterEnd::ClientGone,
                    _ => WriterEnd::Io,
                };
                return Err((off, end));
            }
            Ok(Ok(n)) => {
                off += n;
                conn.touch(state);
            }
            Err(_) => return Err((off, WriterEnd::Stalled)),
        }
    }
    Ok(())
}

/// One outcome in a write batch: where its frame ends, its kind, its reservation.
struct Written {
    end: usize,
    kind: &'static str,
    reserved: usize,
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    conn: Arc<Conn>,
    state: Arc<State>,
    stall: Duration,
    ending: Arc<Mutex<Option<Ending>>>,
) -> WriterEnd {
    let metrics = &state.metrics;
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    let mut outcomes: Vec<Written> = Vec::new();
    // Frame boundaries of the batch (an error frame may follow only at one).
    let mut ends: Vec<usize> = Vec::new();
    let end = loop {
        buf.clear();
        outcomes.clear();
        ends.clear();
        let mut took_reply = false;
        // Gather what is queued, in queue order, up to WRITE_BATCH bytes.
        while buf.len() < WRITE_BATCH {
            let item = {
                let mut q = conn.lock();
                let item = q.items.pop_front();
                if matches!(item, Some(Item::Frame(_))) {
                    q.replies -= 1;
                }
                item
            };
            match item {
                None => break,
                Some(Item::Frame(f)) => {
                    took_reply = true;
                    buf.extend_from_slice(&f);
                }
                Some(Item::Outcome(request_id, o, reserved)) => {
                    let wire = to_wire(request_id, o);
                    let kind = outcome_kind_name(&wire.result);
                    match DaemonMessage::Outcome(wire).encode_frame(&mut buf, OUTCOME_ENCODE_LIMIT)
                    {
                        Ok(()) => outcomes.push(Written {
                            end: buf.len(),
                            kind,
                            reserved,
                        }),
                        Err(e) => {
                            metrics.undelivered.inc();
                            conn.in_flight.fetch_sub(1, Ordering::SeqCst);
                            state.budget.release(&conn.held, reserved);
                            warn!(conn = conn.id, error = %e, "cannot encode an outcome; counted as undelivered");
                        }
                    }
                }
            }
            ends.push(buf.len());
        }
        if took_reply {
            conn.progress.notify_one();
        }
        if buf.is_empty() {
            // Nothing queued: finish, or wait for more.
            let next = {
                let q = conn.lock();
                let owed = conn.in_flight.load(Ordering::SeqCst) > 0 || !q.items.is_empty();
                let mut e = ending.lock().unwrap_or_else(|p| p.into_inner());
                match e.as_ref() {
                    Some(Ending::Abort) => Next::Abort,
                    Some(_) if owed => Next::Wait,
                    Some(Ending::Eof) => Next::Done,
                    Some(Ending::Close(..)) => match e.take() {
                        Some(Ending::Close(code, frame)) => Next::Close(code, frame),
                        _ => Next::Abort,
                    },
                    None => Next::Wait,
                }
            };
            match next {
                Next::Wait => {
                    conn.wake.notified().await;
                    continue;
                }
                Next::Done => break WriterEnd::Done,
                Next::Abort => break WriterEnd::Aborted,
                Next::Close(code, frame) => {
                    break match write_with_stall(&mut wr, &frame, stall, &conn, &state).await {
                        Ok(()) => WriterEnd::Closed(code),
                        Err((_, end)) => end,
                    };
                }
            }
        }
        let result = write_with_stall(&mut wr, &buf, stall, &conn, &state).await;
        let written = match result {
            Ok(()) => buf.len(),
            Err((n, _)) => n,
        };
        let mut freed = false;
        for w in &outcomes {
            if w.end <= written {
                metrics.delivered.get_or_create(&[("kind", w.kind)]).inc();
                conn.in_flight.fetch_sub(1, Ordering::SeqCst);
                state.budget.release(&conn.held, w.reserved);
                freed = true;
            } else {
                // Not written in full: undelivered (its reservation goes when the
                // connection is closed).
                metrics.undelivered.inc();
                conn.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if freed {
            conn.progress.notify_one();
        }
        if buf.capacity() > WRITE_BATCH {
            buf = Vec::with_capacity(WRITE_BATCH);
        }
        if let Err((n, end)) = result {
            if end == WriterEnd::Stalled && (n == 0 || ends.contains(&n)) {
                // Best effort: the client may still find out why it was cut off.
                let frame = error_frame(
                    ErrorCode::WriteStalled,
                    format!(
                        "the client took no bytes for {} ms (daemon.write_stall_timeout_ms)",
                        super::config::millis(stall)
                    ),
                );
                let _ = wr.try_write(&frame);
            }
            break end;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), wr.shutdown()).await;
    end
}

/// Aborts a task when dropped (so aborting a connection task also stops its writer).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The open connections (for eviction) and the connections per peer uid.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    conns: HashMap<u64, Arc<Conn>>,
    uids: HashMap<u32, usize>,
    /// Victims chosen and not closed yet.
    evicting: usize,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uid_count(&self, uid: u32) -> usize {
        self.lock().uids.get(&uid).copied().unwrap_or(0)
    }

    /// Chooses and marks a victim: the quiet connection (nothing in flight or queued) with
    /// the oldest traffic, if it has been quiet for at least [`EVICT_MIN_QUIET`] and fewer than
    /// `max_in_progress` victims are still closing (each holds its descriptor until then).
    fn evict_one(&self, state: &State, max_in_progress: usize) -> Option<Arc<Conn>> {
        let limit = state
            .now_ms()
            .saturating_sub(super::config::millis(EVICT_MIN_QUIET));
        let mut g = self.lock();
        if g.evicting >= max_in_progress {
            return None;
        }
        let victim = g
            .conns
            .values()
            .filter(|c| {
                !c.evicting.load(Ordering::SeqCst)
                    && c.last_active.load(Ordering::Relaxed) <= limit
                    && c.is_quiet()
            })
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
            .cloned()?;
        victim.evicting.store(true, Ordering::SeqCst);
        g.evicting += 1;
        Some(victim)
    }
}

/// Closes a connection's books however its task ends (returned, or aborted at the flush
/// deadline): outcomes left in its queue and outcomes still to come are undelivered, its
/// budget is released, its routes are forgotten, the open-connection gauges go down.
struct ConnGuard {
    conn: Arc<Conn>,
    state: Arc<State>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let (state, conn) = (&self.state, &self.conn);
        let left = {
            let mut q = conn.lock();
            q.closed = true;
            q.replies = 0;
            std::mem::take(&mut q.items)
        };
        for item in left {
            if matches!(item, Item::Outcome(..)) {
                state.metrics.undelivered.inc();
            }
        }
        state.router.forget(conn.id);
        state.budget.release_all(&conn.held);
        {
            let mut r = state.conns.lock();
            r.conns.remove(&conn.id);
            if conn.evicting.load(Ordering::SeqCst) {
                r.evicting = r.evicting.saturating_sub(1);
            }
            if let Some(uid) = conn.uid {
                if let Some(n) = r.uids.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        r.uids.remove(&uid);
                    }
                }
            }
        }
        state.conns_open.fetch_sub(1, Ordering::SeqCst);
        state.metrics.connections_open.dec();
        state.budget.shares_changed();
        if conn.peak.load(Ordering::Relaxed) >= TRIM_AFTER {
            flow::trim();
        }
    }
}

/// Writes one error frame to a connection that is refused at once, then closes it.
async fn refuse_connection(mut stream: UnixStream, code: ErrorCode, message: String) {
    let frame = error_frame(code, message);
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
    linger(&mut stream).await;
}

/// After an error frame and a write shutdown, reads and discards what the client still sends
/// (at most [`LINGER_BYTES`] for at most [`LINGER`]) before the socket is closed. Closing at
/// once would make the client's next write fail (EPIPE / reset), and many clients then never
/// read the error frame that explains why.
async fn linger(rd: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    let _ = tokio::time::timeout(LINGER, async {
        while total < LINGER_BYTES {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

fn disconnect(state: &State, reason: &'static str) {
    state
        .metrics
        .disconnects
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// Reads and handles frames until the client, the daemon or an error ends the conversation.
async fn read_loop(
    rd: &mut BufReader<OwnedReadHalf>,
    state: &Arc<State>,
    conn: &Arc<Conn>,
    live: &Live,
    close: &mut watch::Receiver<bool>,
    writer: &mut AbortOnDrop<WriterEnd>,
) -> (ReaderEnd, Option<WriterEnd>) {
    loop {
        if *close.borrow() {
            return (
                ReaderEnd::Close(
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down".into(),
                ),
                None,
            );
        }
        let step = async {
            let (header, body, reserved) = next_frame(rd, state, conn, live).await?;
            handle_frame(state, conn, live, &header, body, reserved).await
        };
        tokio::select! {
            r = step => if let Err(end) = r {
                return (end, None);
            },
            r = close.changed() => if r.is_err() || *close.borrow() {
                return (
                    ReaderEnd::Close(ErrorCode::ShuttingDown, "the daemon is shutting down".into()),
                    None,
                );
            },
            _ = conn.evict.notified() => {
                return (
                    ReaderEnd::Close(
                        ErrorCode::Evicted,
                        "closed to admit a new connection: the daemon is at daemon.max_connections and this connection was the longest quiet".into(),
                    ),
                    None,
                );
            }
            r = &mut writer.0 => {
                return (ReaderEnd::WriterGone, Some(r.unwrap_or(WriterEnd::Io)));
            }
        }
    }
}

async fn serve_conn(
    stream: UnixStream,
    conn: Arc<Conn>,
    state: Arc<State>,
    live: Live,
    mut close: watch::Receiver<bool>,
) {
    let _guard = ConnGuard {
        conn: conn.clone(),
        state: state.clone(),
    };
    let id = conn.id;
    debug!(conn = id, "client connected");
    let (rd, wr) = stream.into_split();
    let ending = Arc::new(Mutex::new(None));
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(
        wr,
        conn.clone(),
        state.clone(),
        live.write_stall,
        ending.clone(),
    )));
    let mut rd = BufReader::with_capacity(READ_BUF, rd);
    let (reader_end, writer_end) =
        read_loop(&mut rd, &state, &conn, &live, &mut close, &mut writer).await;
    if let ReaderEnd::Close(ErrorCode::MalformedFrame, message) = &reader_end {
        warn!(conn = id, error = %message, "malformed frame; closing the connection");
    }
    let e = match &reader_end {
        ReaderEnd::Eof => Some(Ending::Eof),
        ReaderEnd::Close(code, message) => {
            Some(Ending::Close(*code, error_frame(*code, message.clone())))
        }
        ReaderEnd::Io(_) => Some(Ending::Abort),
        ReaderEnd::WriterGone => None,
    };
    if let Some(e) = e {
        *ending.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        conn.wake.notify_one();
    }
    let writer_end = match writer_end {
        Some(e) => e,
        None => (&mut writer.0).await.unwrap_or(WriterEnd::Io),
    };
    let reason = match (&reader_end, writer_end) {
        (_, WriterEnd::Closed(code)) => match code {
            ErrorCode::ShuttingDown => "shutdown",
            other => other.name(),
        },
        (ReaderEnd::Eof, WriterEnd::Done) => "client_closed",
        (ReaderEnd::Io(true), _) | (_, WriterEnd::ClientGone) => "client_closed",
        (ReaderEnd::Io(false), _) | (_, WriterEnd::Io) => "io_error",
        (_, WriterEnd::Stalled) => "write_stalled",
        (_, WriterEnd::Done | WriterEnd::Aborted) => "client_closed",
    };
    match writer_end {
        WriterEnd::Stalled => warn!(
            conn = id,
            reason, "client disconnected: it does not take its outcomes"
        ),
        WriterEnd::Closed(code) if code != ErrorCode::ShuttingDown => {
            info!(conn = id, reason, "connection closed by the daemon")
        }
        _ => debug!(conn = id, reason, "client disconnected"),
    }
    disconnect(&state, reason);
    if matches!(writer_end, WriterEnd::Closed(_)) {
        linger(&mut rd).await;
    }
}

/// Why a new connection is not admitted: the error code, its message and the disconnect
/// reason.
fn admit(state: &State, live: &Live, uid: Option<u32>) -> Result<(), (ErrorCode, String)> {
    if !live.allowed_uids.is_empty() && !uid.is_some_and(|u| live.allowed_uids.contains(&u)) {
        let who = match uid {
            Some(u) => format!("uid {u}"),
            None => "a peer whose uid cannot be read".into(),
        };
        warn!(%who, "peer uid is not in daemon.allowed_uids; connection refused");
        return Err((
            ErrorCode::PermissionDenied,
            format!("{who} is not allowed to use this daemon (daemon.allowed_uids)"),
        ));
    }
    if let (Some(u), n) = (uid, live.max_connections_per_uid) {
        if n > 0 && state.conns.uid_count(u) >= n {
            warn!(
                uid = u,
                max = n,
                "connection refused: daemon.max_connections_per_uid reached"
            );
            return Err((
                ErrorCode::TooManyConnectionsForUid,
                format!(
                    "uid {u} already has {n} connections open (daemon.max_connections_per_uid)"
                ),
            ));
        }
    }
    if state.conns_open.load(Ordering::SeqCst) >= live.max_connections {
        match state
            .conns
            .evict_one(state, super::config::eviction_margin(live.max_connections))
        {
            Some(victim) => {
                info!(
                    victim = victim.id,
                    "daemon.max_connections reached: closing the longest quiet connection"
                );
                victim.evict.notify_one();
            }
            None => {
                warn!(max = live.max_connections, "connection refused: daemon.max_connections reached and every connection is busy");
                return Err((
                    ErrorCode::TooManyConnections,
                    format!(
                        "the daemon serves {} connections at most and none of them is quiet",
                        live.max_connections
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refusals (error frame + linger) in progress at most; beyond, a refused connection is
/// closed at once without an error frame, so refusals cannot exhaust descriptors.
pub const MAX_REFUSING: usize = 32;

/// Accepts connections until `stop_accept`; then waits for `close_conns` (the pool has
/// drained), tells every connection to finish, and gives them [`FLUSH_TIMEOUT`] to write
/// their last outcomes before it aborts them.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    state: Arc<State>,
    mut stop_accept: watch::Receiver<bool>,
    close_conns: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut next_id = 1u64;
    let mut accept_errors = 0u64;
    let mut last_accept_warn: Option<Instant> = None;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _addr)) => {
                    state.metrics.connections.inc();
                    let live = state.live();
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    if let Err((code, message)) = admit(&state, &live, uid) {
                        disconnect(&state, code.name());
                        if refusals.len() < MAX_REFUSING {
                            refusals.spawn(refuse_connection(stream, code, message));
                        }
                        continue;
                    }
                    state.conns_open.fetch_add(1, Ordering::SeqCst);
                    state.metrics.connections_open.inc();
                    state.budget.shares_changed();
                    let id = next_id;
                    next_id += 1;
                    let conn = Arc::new(Conn {
                        id,
                        uid,
                        queue: Mutex::new(Queue::default()),
                        wake: Notify::new(),
                        progress: Notify::new(),
                        in_flight: AtomicUsize::new(0),
                        held: Held::default(),
                        peak: AtomicUsize::new(0),
                        last_active: AtomicU64::new(state.now_ms()),
                        evict: Notify::new(),
                        evicting: AtomicBool::new(false),
                    });
                    {
                        let mut r = state.conns.lock();
                        r.conns.insert(id, conn.clone());
                        if let Some(u) = uid {
                            *r.uids.entry(u).or_insert(0) += 1;
                        }
                    }
                    conns.spawn(serve_conn(stream, conn, state.clone(), live, close_conns.clone()));
                }
                Err(e) => {
                    accept_errors += 1;
                    if last_accept_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        warn!(error = %e, failures = accept_errors, "accept failed (repeated failures are logged every 10 s)");
                        last_accept_warn = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            r = stop_accept.changed() => {
                if r.is_err() || *stop_accept.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let mut close = close_conns;
    while !*close.borrow() {
        tokio::select! {
            r = close.changed() => if r.is_err() { break },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
        }
    }
    let open = conns.len();
    if open > 0 {
        info!(
            connections = open,
            "writing the last outcomes to connected clients"
        );
    }
    let deadline = tokio::time::sleep(FLUSH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = conns.join_next() => if r.is_none() { break },
            _ = &mut deadline => {
                warn!(connections = conns.len(), "closing connections that did not take their last outcomes in time");
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                break;
            }
        }
    }
    refusals.abort_all();
}
