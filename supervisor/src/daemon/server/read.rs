//! A connection's reader: reads one frame at a time (idle and frame deadlines, the budget
//! reserved before a body is read), handles it (submit, cancel, stats), and waits instead of
//! reading while the client does not take what it is owed.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use houndpool_protocol::daemon::{
    DaemonMessage, ErrorCode, RefuseReason, Submit, SubmitReply, SubmitResult,
};
use houndpool_protocol::frame::{FrameHeader, FRAME_HEADER_LEN};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::watch;
use tracing::warn;
use uuid::Uuid;

use super::cancel;
use super::conn::{Conn, Item};
use super::wire::{encode, refuse_reason, stats_reply};
use super::write::{AbortOnDrop, WriterEnd};
use crate::daemon::{flow, Live, State};
use crate::Job;

/// Replies (submit replies, stats) that may wait in a connection's queue; beyond, the client
/// is not read until it takes some.
pub const REPLY_LIMIT: usize = 64;

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
pub(super) enum ReaderEnd {
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
                if conn.is_quiet() && quiet_ms >= crate::daemon::config::millis(live.idle_timeout) {
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
                crate::daemon::config::millis(live.frame_timeout)
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

/// Reads and handles frames until the client, the daemon or an error ends the conversation.
pub(super) async fn read_loop(
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
