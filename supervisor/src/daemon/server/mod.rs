//! The Unix-socket server: connections, flow control, and the outcome router.
//!
//! Per connection, one reader and one writer share a FIFO queue of [`Item`](conn::Item)s.
//! The reader reads one frame at a time, calls `Pool::submit` (which never blocks), queues the
//! reply and only then registers the job with the [`Router`]; the bridge thread appends each
//! outcome to the queue of the connection that submitted it. Because the reply is queued
//! before the route exists and the queue is FIFO, a client always reads a job's reply before
//! its outcome.
//!
//! Flow control (docs/PROTOCOL.md, Part 4 §5): an outcome is never refused by the queue,
//! because every accepted job has reserved the worst case of its outcome in the daemon-wide
//! [`Budget`](super::flow::Budget) before it was submitted. The reader waits (does not read
//! the client) while
//! * the connection has `daemon.outcome_buffer` accepted jobs whose outcome is not written,
//! * [`REPLY_LIMIT`](read::REPLY_LIMIT) replies wait in its queue, or
//! * the connection is over its fair share of the budget, or the budget is exhausted.
//!
//! The daemon closes a connection itself only for a reason it names in a final `Error` frame:
//! a malformed frame, a write stall (`daemon.write_stall_timeout_ms`), a frame not completed
//! in time (`daemon.frame_timeout_ms`), idleness (`daemon.idle_timeout_ms`), eviction to admit
//! a new connection at `daemon.max_connections`, or drain. Outcomes that are not written in
//! full are counted in `houndpool_daemon_outcomes_undelivered_total`.
//!
//! Files: `conn.rs` (a connection's queue, the router, the registry, the guard that closes a
//! connection's books), `read.rs` (the reader: frames, submit, backpressure), `write.rs` (the
//! writer), `wire.rs` (pool types to wire messages), `cancel.rs` (the Cancel message), and
//! here the accept loop, admission, and the bridge thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use houndpool_protocol::daemon::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

// The Cancel message (kinds 22/23).
mod cancel;
mod conn;
mod read;
mod wire;
mod write;

use super::flow::Held;
use super::{Live, State, FLUSH_TIMEOUT};
use crate::Outcome;
use conn::{Conn, ConnGuard, Queue};
pub(crate) use conn::{Registry, Router};
use read::{read_loop, ReaderEnd};
use wire::error_frame;
use write::{write_loop, AbortOnDrop, Ending, WriterEnd};

/// Buffer of a connection's reader (fixed per connection).
const READ_BUF: usize = 16 * 1024;
/// Time allowed to write an error frame to a connection that is refused at once.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection closed for an error keeps reading (and discarding) client bytes.
const LINGER: Duration = Duration::from_secs(1);
/// How many client bytes it discards at most meanwhile.
const LINGER_BYTES: usize = 1 << 20;

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
        match state.conns.evict_one(
            state,
            crate::daemon::config::eviction_margin(live.max_connections),
        ) {
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

use super::config::MAX_REFUSING;

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
