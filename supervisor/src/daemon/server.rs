//! The Unix-socket server: connections, the per-connection queue, and the outcome router.
//!
//! Per connection, one reader task and one writer task share a bounded FIFO queue of
//! [`Item`]s. The reader decodes frames, calls `Pool::submit` (which never blocks), queues the
//! reply and only then registers the job with the [`Router`]; the bridge thread routes each
//! outcome into the queue of the connection that submitted it with `try_send`. Because the
//! reply is queued before the route exists and the queue is FIFO, a client always reads a
//! job's reply before its outcome, on any runtime.
//!
//! Bounds (docs/PROTOCOL.md, Part 4):
//! * accepted jobs without a written outcome, per connection: `daemon.outcome_buffer`
//!   (further submits are refused with `connection_busy`);
//! * queue capacity: `2 × outcome_buffer + REPLY_SLACK` frames; the reader waits for queue
//!   space before it handles the next frame, so a client that does not read stops being read;
//!   an outcome that finds the queue full disconnects the client (never waits);
//! * a write that makes no progress for `daemon.write_stall_timeout_ms` disconnects the client.
//!
//! Outcomes that cannot be written (connection gone, disconnected as too slow, or closed for
//! a malformed frame) are counted in `houndpool_daemon_outcomes_undelivered_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use houndpool_protocol::frame::{FrameDecoder, FrameHeader};
use houndpool_protocol::messages::{
    DaemonMessage, DropKind, ErrorCode, ErrorNotice, FailureKind, JobOutcome, OutcomeReceipt,
    OutcomeResult, RefuseReason, StatsReply, Submit, SubmitReply, SubmitResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::metrics::DaemonMetrics;
use super::{Live, State, FLUSH_TIMEOUT};
use crate::{DropReason, FailReason, Job, Outcome, OutcomeKind, SubmitError};

/// Queue slots beyond twice the outcome buffer, for replies and stats.
pub const REPLY_SLACK: usize = 64;
/// Bytes read from a client per read call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 256 * 1024;
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

/// What a connection's writer writes, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// An encoded reply (SubmitReply, Stats).
    Frame(Vec<u8>),
    /// An encoded error frame; the connection is closed after it.
    Fatal(Vec<u8>),
    /// An outcome of a job this connection submitted, with the submit's request id.
    Outcome(u64, Outcome),
    /// The reader has finished (client half-closed, or the daemon is shutting down): close once
    /// every accepted job's outcome is written.
    ReaderDone,
}

/// The part of a connection the router and the bridge thread see.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    tx: mpsc::Sender<Item>,
    /// Accepted jobs whose outcome has not been taken by the writer yet.
    in_flight: AtomicUsize,
    /// Asks the writer to disconnect, with a reason.
    kill: watch::Sender<Option<&'static str>>,
}

impl Conn {
    /// Queues an outcome without waiting; a full queue disconnects the client, a closed one
    /// means it is gone. Either way the outcome is counted as undelivered.
    fn offer(&self, request_id: u64, outcome: Outcome, metrics: &DaemonMetrics) {
        match self.tx.try_send(Item::Outcome(request_id, outcome)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.undelivered.inc();
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = self.kill.send(Some("queue_full"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics.undelivered.inc();
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

#[derive(Default)]
struct RouterInner {
    routes: HashMap<u64, (Arc<Conn>, u64)>,
    early: HashMap<u64, Outcome>,
}

/// Job id → (connection, request id). Shared by connection readers (register) and the bridge
/// thread (deliver); the lock is held for a hash-map operation only, never across a send.
#[derive(Default)]
pub(crate) struct Router {
    inner: Mutex<RouterInner>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the outcome of `job_id` to `conn` from now on (or at once, if it has arrived).
    fn register(&self, job_id: u64, conn: &Arc<Conn>, request_id: u64, metrics: &DaemonMetrics) {
        let mut g = self.lock();
        match g.early.remove(&job_id) {
            Some(o) => {
                drop(g);
                conn.offer(request_id, o, metrics);
            }
            None => {
                g.routes.insert(job_id, (conn.clone(), request_id));
            }
        }
    }

    /// Sends one outcome to the connection that submitted its job.
    pub(crate) fn deliver(&self, o: Outcome, metrics: &DaemonMetrics) {
        let mut g = self.lock();
        match g.routes.remove(&o.job_id.0) {
            Some((conn, request_id)) => {
                drop(g);
                conn.offer(request_id, o, metrics);
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
            let message = reason.to_string();
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
    };
    JobOutcome {
        request_id,
        job_id: o.job_id.0,
        evidence_id: *o.evidence_id.as_bytes(),
        kind: o.kind,
        severity: o.severity,
        attempts: o.attempts,
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
/// reserved queue space for the reply.
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
    if conn.in_flight.load(Ordering::SeqCst) >= live.outcome_buffer {
        return refused(
            RefuseReason::ConnectionBusy,
            format!(
                "this connection has {} jobs awaiting their outcome (daemon.outcome_buffer); read outcomes before submitting more",
                live.outcome_buffer
            ),
        );
    }
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
#[derive(Clone, Copy)]
enum ReaderEnd {
    Eof,
    Shutdown,
    Malformed,
    Io,
    WriterGone,
}

/// Handles one frame. `Err` ends the reader.
async fn handle_frame(
    state: &State,
    conn: &Arc<Conn>,
    live: &Live,
    header: &FrameHeader,
    body: &[u8],
) -> Result<(), ReaderEnd> {
    let msg = match DaemonMessage::decode(header, body, live.max_frame) {
        Ok(m) => m,
        Err(e) => {
            warn!(conn = conn.id, error = %e, "malformed frame; closing the connection");
            let _ = conn
                .tx
                .send(Item::Fatal(error_frame(
                    ErrorCode::MalformedFrame,
                    e.to_string(),
                )))
                .await;
            return Err(ReaderEnd::Malformed);
        }
    };
    // Reserve the reply's queue slot first: while the client does not read, it is not read.
    let permit = conn.tx.reserve().await.map_err(|_| ReaderEnd::WriterGone)?;
    match msg {
        DaemonMessage::Submit(s) => {
            // From here to `register` nothing awaits: the reply is queued before the route
            // exists, so the job's outcome can only be queued after its reply.
            let (reply, accepted) = submit(state, conn, live, &s);
            match encode(&DaemonMessage::SubmitReply(reply), live.max_frame) {
                Some(frame) => permit.send(Item::Frame(frame)),
                None => drop(permit),
            }
            if let Some(job_id) = accepted {
                state
                    .router
                    .register(job_id, conn, s.request_id, &state.metrics);
            }
            Ok(())
        }
        DaemonMessage::StatsRequest(r) => {
            state.metrics.stats_requests.inc();
            let in_flight = conn.in_flight.load(Ordering::SeqCst) as u64;
            let reply = DaemonMessage::Stats(stats_reply(state, r.request_id, in_flight));
            match encode(&reply, live.max_frame) {
                Some(frame) => permit.send(Item::Frame(frame)),
                None => drop(permit),
            }
            Ok(())
        }
        other => {
            let kind = other.kind().name();
            warn!(
                conn = conn.id,
                kind, "client sent a message only the daemon sends; closing the connection"
            );
            permit.send(Item::Fatal(error_frame(
                ErrorCode::UnexpectedMessage,
                format!("{kind} is not a client message; clients send submit and stats_request"),
            )));
            Err(ReaderEnd::Malformed)
        }
    }
}

/// Counts the outcomes left in a connection's queue as undelivered when its writer ends,
/// however it ends (returned, or aborted at the flush deadline).
struct QueueGuard {
    rx: mpsc::Receiver<Item>,
    state: Arc<State>,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if matches!(item, Item::Outcome(..)) {
                self.state.metrics.undelivered.inc();
            }
        }
    }
}

/// Why a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// Reader done and every accepted job's outcome written.
    Done,
    /// An error frame was written; the connection closes.
    Fatal,
    /// No progress writing for the stall timeout.
    TooSlow,
    /// Disconnected by the router (queue full).
    Killed(&'static str),
    /// The socket failed.
    Io,
}

impl WriterEnd {
    fn name(self) -> &'static str {
        match self {
            WriterEnd::Done => "closed",
            WriterEnd::Fatal => "error_frame",
            WriterEnd::TooSlow => "too_slow",
            WriterEnd::Killed(why) => why,
            WriterEnd::Io => "io_error",
        }
    }
}

/// What [`add_item`] found.
enum Added {
    Frame,
    Fatal,
    ReaderDone,
}

/// Appends one queue item to the write batch. Outcomes are encoded here (not on the bridge
/// thread) and leave the connection's in-flight count as they are taken.
fn add_item(
    item: Item,
    buf: &mut Vec<u8>,
    kinds: &mut Vec<&'static str>,
    conn: &Conn,
    metrics: &DaemonMetrics,
) -> Added {
    match item {
        Item::Frame(f) => {
            buf.extend_from_slice(&f);
            Added::Frame
        }
        Item::Fatal(f) => {
            buf.extend_from_slice(&f);
            Added::Fatal
        }
        Item::Outcome(request_id, o) => {
            conn.in_flight.fetch_sub(1, Ordering::SeqCst);
            let wire = to_wire(request_id, o);
            let kind = outcome_kind_name(&wire.result);
            match DaemonMessage::Outcome(wire).encode_frame(buf, OUTCOME_ENCODE_LIMIT) {
                Ok(()) => kinds.push(kind),
                Err(e) => {
                    metrics.undelivered.inc();
                    warn!(conn = conn.id, error = %e, "cannot encode an outcome; counted as undelivered");
                }
            }
            Added::Frame
        }
        Item::ReaderDone => Added::ReaderDone,
    }
}

/// Writes `buf`, failing if a single write makes no progress for `stall`.
async fn write_with_stall(
    wr: &mut OwnedWriteHalf,
    buf: &[u8],
    stall: Duration,
) -> Result<(), WriterEnd> {
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout(stall, wr.write(&buf[off..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(WriterEnd::Io),
            Ok(Ok(n)) => off += n,
            Err(_) => return Err(WriterEnd::TooSlow),
        }
    }
    Ok(())
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    rx: mpsc::Receiver<Item>,
    mut kill: watch::Receiver<Option<&'static str>>,
    conn: Arc<Conn>,
    state: Arc<State>,
    stall: Duration,
) -> WriterEnd {
    let mut q = QueueGuard {
        rx,
        state: state.clone(),
    };
    let metrics = &state.metrics;
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut reader_done = false;
    let end = loop {
        if reader_done && conn.in_flight.load(Ordering::SeqCst) == 0 && q.rx.is_empty() {
            break WriterEnd::Done;
        }
        buf.clear();
        kinds.clear();
        let mut fatal = false;
        let first = tokio::select! {
            biased;
            r = kill.changed() => {
                let why = if r.is_ok() { (*kill.borrow()).unwrap_or("killed") } else { "killed" };
                break WriterEnd::Killed(why);
            }
            item = q.rx.recv() => match item {
                Some(item) => item,
                None => break WriterEnd::Done,
            }
        };
        // Gather what is queued without waiting, in queue order; an error frame ends the
        // batch (nothing is written after it).
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match add_item(item, &mut buf, &mut kinds, &conn, metrics) {
                Added::Fatal => fatal = true,
                Added::ReaderDone => reader_done = true,
                Added::Frame => {}
            }
            if fatal || buf.len() >= WRITE_BATCH {
                break;
            }
            next = q.rx.try_recv().ok();
        }
        if !buf.is_empty() {
            if let Err(end) = write_with_stall(&mut wr, &buf, stall).await {
                for _ in &kinds {
                    metrics.undelivered.inc();
                }
                break end;
            }
            for k in &kinds {
                metrics.delivered.get_or_create(&[("kind", k)]).inc();
            }
        }
        if fatal {
            break WriterEnd::Fatal;
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

/// Decrements the open-connection gauges when a connection task ends or is aborted.
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.conns_open.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.connections_open.dec();
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

async fn serve_conn(
    stream: UnixStream,
    id: u64,
    state: Arc<State>,
    live: Live,
    mut close: watch::Receiver<bool>,
) {
    let _open = OpenGuard(state.clone());
    if !live.allowed_uids.is_empty() {
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        if !uid.is_some_and(|u| live.allowed_uids.contains(&u)) {
            warn!(
                conn = id,
                ?uid,
                "peer uid is not in daemon.allowed_uids; connection refused"
            );
            disconnect(&state, "permission_denied");
            refuse_connection(
                stream,
                ErrorCode::PermissionDenied,
                format!("uid {uid:?} is not allowed to use this daemon"),
            )
            .await;
            return;
        }
    }
    debug!(conn = id, "client connected");
    let (mut rd, wr) = stream.into_split();
    let cap = live
        .outcome_buffer
        .saturating_mul(2)
        .saturating_add(REPLY_SLACK);
    let (tx, rx) = mpsc::channel(cap);
    let (kill_tx, kill_rx) = watch::channel(None);
    let conn = Arc::new(Conn {
        id,
        tx,
        in_flight: AtomicUsize::new(0),
        kill: kill_tx,
    });
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(
        wr,
        rx,
        kill_rx,
        conn.clone(),
        state.clone(),
        live.write_stall,
    )));
    let mut decoder = FrameDecoder::new(live.max_frame);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut writer_end = None;
    let reader_end = 'read: loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => break 'read ReaderEnd::Eof,
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some((header, body))) => {
                                if let Err(end) = handle_frame(&state, &conn, &live, &header, &body).await {
                                    break 'read end;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                warn!(conn = id, error = %e, "malformed frame; closing the connection");
                                let _ = conn.tx.send(Item::Fatal(error_frame(ErrorCode::MalformedFrame, e.to_string()))).await;
                                break 'read ReaderEnd::Malformed;
                            }
                        }
                    }
                }
                Err(_) => break 'read ReaderEnd::Io,
            },
            r = close.changed() => {
                if r.is_err() || *close.borrow() {
                    break 'read ReaderEnd::Shutdown;
                }
            }
            r = &mut writer.0 => {
                writer_end = Some(r.unwrap_or(WriterEnd::Io));
                break 'read ReaderEnd::WriterGone;
            }
        }
    };
    match reader_end {
        // The client is done (or the daemon is): write what is owed, then close.
        ReaderEnd::Eof | ReaderEnd::Shutdown => {
            let _ = conn.tx.send(Item::ReaderDone).await;
        }
        // The socket failed: the writer would wait for nothing.
        ReaderEnd::Io => {
            let _ = conn.kill.send(Some("io_error"));
        }
        // The writer ends by itself after the error frame, or has ended.
        ReaderEnd::Malformed | ReaderEnd::WriterGone => {}
    }
    let writer_end = match writer_end {
        Some(e) => e,
        None => (&mut writer.0).await.unwrap_or(WriterEnd::Io),
    };
    let reason = match (reader_end, writer_end) {
        (ReaderEnd::Malformed, _) => "malformed_frame",
        (ReaderEnd::Eof, WriterEnd::Done) => "client_closed",
        (ReaderEnd::Shutdown, WriterEnd::Done) => "shutdown",
        (ReaderEnd::Io, _) => "io_error",
        (_, end) => end.name(),
    };
    if matches!(writer_end, WriterEnd::TooSlow | WriterEnd::Killed(_)) {
        warn!(
            conn = id,
            reason, "client disconnected: it does not take its outcomes"
        );
    } else {
        debug!(conn = id, reason, "client disconnected");
    }
    disconnect(&state, reason);
    if matches!(reader_end, ReaderEnd::Malformed) {
        linger(&mut rd).await;
    }
}

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
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _addr)) => {
                    state.metrics.connections.inc();
                    let live = state.live();
                    if state.conns_open.load(Ordering::SeqCst) >= live.max_connections {
                        warn!(max = live.max_connections, "connection refused: daemon.max_connections reached");
                        disconnect(&state, "too_many_connections");
                        conns.spawn(refuse_connection(
                            stream,
                            ErrorCode::TooManyConnections,
                            format!("the daemon serves {} connections at most", live.max_connections),
                        ));
                        continue;
                    }
                    state.conns_open.fetch_add(1, Ordering::SeqCst);
                    state.metrics.connections_open.inc();
                    let id = next_id;
                    next_id += 1;
                    conns.spawn(serve_conn(stream, id, state.clone(), live, close_conns.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
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
}
