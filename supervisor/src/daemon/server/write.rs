//! A connection's writer: drains the connection's queue in order, in batches, counts each
//! outcome delivered once written in full (or undelivered), releases its reservation, and
//! closes the connection with its final error frame when the reader says so.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use houndpool_protocol::daemon::{DaemonMessage, ErrorCode};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tracing::warn;

use super::conn::{Conn, Item};
use super::wire::{error_frame, outcome_kind_name, to_wire};
use crate::daemon::State;

/// Bytes gathered into one write; a writer keeps at most this much buffer capacity between
/// writes (fixed per connection).
const WRITE_BATCH: usize = 64 * 1024;
/// Outcome frames are encoded with this body limit: the daemon never refuses to send what
/// the pool produced; clients size their frame limit from the pool's limits (PROTOCOL.md).
const OUTCOME_ENCODE_LIMIT: u32 = u32::MAX;

/// Why a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriterEnd {
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
pub(super) enum Ending {
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

pub(super) async fn write_loop(
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
                        crate::daemon::config::millis(stall)
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
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
