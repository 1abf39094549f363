//! The operations endpoint: a minimal HTTP/1.1 responder on a TCP address.
//!
//! * `GET /metrics` — Prometheus text format 0.0.4 ([`super::metrics`]).
//! * `GET /healthz` — 200 while the process serves HTTP at all.
//! * `GET /readyz` — 200 when the pool has at least one ready hound and the daemon is not
//!   draining, 503 otherwise (the body says why).
//!
//! One request per connection (`Connection: close`), `GET` and `HEAD` only, request head at
//! most [`MAX_REQUEST_HEAD`] bytes read within [`REQUEST_TIMEOUT`], at most
//! [`MAX_OPS_CONNECTIONS`] connections at once: the endpoint cannot be used to exhaust the
//! daemon. It never reads a request body.
//!
//! The endpoint has its own thread and runtime ([`run`]) and its own descriptors (counted in
//! the daemon's descriptor check), so probes are answered however busy or saturated the
//! socket side is. When all [`MAX_OPS_CONNECTIONS`] are taken, a new connection closes the
//! oldest one still in progress: half-sent requests cannot keep probes out.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::State;

/// Largest request head read.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head (and to take the response).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed at once.
pub const MAX_OPS_CONNECTIONS: usize = 32;

/// A response: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Why the daemon is not ready, or `None` when it is.
pub(crate) fn not_ready_reason(state: &State) -> Option<String> {
    if state.draining.load(Ordering::Relaxed) {
        return Some("draining".into());
    }
    let s = state.pool.stats();
    let ready = s.hounds.iter().filter(|h| h.pid.is_some()).count();
    if ready == 0 {
        return Some(format!(
            "no ready hound (0 of {} hounds past their handshake)",
            s.hounds.len()
        ));
    }
    None
}

/// Routes one parsed request line.
pub(crate) fn route(state: &State, method: &str, target: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return text(405, "only GET and HEAD\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: super::metrics::render(&state.registry),
        },
        "/healthz" => text(200, "ok\n"),
        "/readyz" => match not_ready_reason(state) {
            None => text(200, "ready\n"),
            Some(why) => text(503, format!("not ready: {why}\n")),
        },
        _ => text(404, "not found; try /metrics, /healthz or /readyz\n"),
    }
}

/// Parses the request line out of a request head: `(method, target)`.
pub(crate) fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target))
}

/// Reads the request head (up to the blank line), bounded in size.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, u16> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(431);
        }
    }
}

async fn handle(mut stream: TcpStream, state: Arc<State>) {
    let (resp, head_only) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
            Err(_) => (text(408, "request timeout\n"), false),
            Ok(Err(status)) => (text(status, "bad request\n"), false),
            Ok(Ok(head)) => match parse_request_line(&head) {
                None => (text(400, "bad request line\n"), false),
                Some((method, target)) => (route(&state, method, target), method == "HEAD"),
            },
        };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(resp.body.as_bytes());
    }
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Runs the endpoint on the calling thread (its own current-thread runtime) until `stop`
/// turns true.
pub(crate) fn run(listener: std::net::TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "ops endpoint: cannot start its runtime; no /metrics, /healthz, /readyz");
            return;
        }
    };
    runtime.block_on(async move {
        match TcpListener::from_std(listener) {
            Ok(l) => serve(l, state, stop).await,
            Err(e) => tracing::error!(error = %e, "ops endpoint: cannot register the listener"),
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}

/// Serves the endpoint until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    // Requests in progress, oldest first.
    let mut active: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    active.retain(|h| !h.is_finished());
                    if active.len() >= MAX_OPS_CONNECTIONS {
                        if let Some(oldest) = active.pop_front() {
                            oldest.abort();
                        }
                    }
                    let state = state.clone();
                    let task = tokio::spawn(handle(stream, state));
                    active.push_back(task.abort_handle());
                }
                Err(e) => {
                    if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "ops endpoint: accept failed (logged every 10 s at most)");
                        last_warn = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"HEAD /readyz?x=1 HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/readyz?x=1"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / HTTP/1.1 x\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / HTTP/1.1"), None);
    }
}
