//! A latency-injecting HTTP/1.1 proxy on loopback: each request is held for a fixed delay
//! before it is forwarded, so a local S3 server answers as if it were a network away.
//!
//! The delay is per request, not per connection: the client → server direction is parsed just
//! far enough to find where each request ends (the header block, then a `Content-Length` body
//! or a chunked body with its trailers), so every request on a kept-alive connection waits its
//! own delay. The body is streamed, not buffered, so `Expect: 100-continue` still works. The
//! server → client direction is piped back unchanged. Two threads per connection; the proxy
//! only ever listens on and connects to loopback addresses given to it.
//!
//! A request the parser cannot frame (a malformed or conflicting length, a header block or
//! chunk line past its bound, a body cut short) closes that connection and is counted in
//! [`Proxy::errors`]; it never takes the proxy down.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request header block (request line and headers) the proxy accepts, bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size or trailer line, bytes.
const MAX_LINE: usize = 4 * 1024;
/// How long the proxy waits to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a request's body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`, or a length of zero).
    Empty,
    /// Exactly this many bytes follow the header block.
    Length(u64),
    /// `Transfer-Encoding: chunked`: chunks up to the last (zero-size) chunk and its trailers.
    Chunked,
}

/// Reads the header block of the next request from `r` (up to and including the empty line).
/// `Ok(None)` at a clean end of stream before any byte of a new request.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed inside a request header"))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(bad("request header block larger than 64 KiB"));
        }
        if !head.ends_with(b"\n") {
            return Err(bad("connection closed inside a request header"));
        }
        let line = &head[before..];
        // Blank lines before a request line are ignored (RFC 9112 §2.2).
        if before == 0 && (line == b"\r\n" || line == b"\n") {
            head.clear();
            continue;
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

/// The body framing a request header block announces.
pub fn framing(head: &[u8]) -> io::Result<Framing> {
    let text = std::str::from_utf8(head).map_err(|_| bad("request header is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let version = request_line.rsplit(' ').next().unwrap_or_default();
    if request_line.split(' ').count() != 3 || !version.starts_with("HTTP/1.") {
        return Err(bad(format!(
            "not an HTTP/1.x request line: {request_line:?}"
        )));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    // The header section ends at the first empty line; anything after it is not header.
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("header line without a colon: {line:?}")))?;
        if name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Err(bad(format!("malformed header name: {name:?}")));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is allowed (RFC 9110 §8.6); anything else is not.
            for v in value.split(',').map(|v| v.trim_matches([' ', '\t'])) {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("bad Content-Length: {value:?}")));
                }
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("Content-Length out of range: {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
                if coding.is_empty() {
                    continue;
                }
                if chunked {
                    return Err(bad("a transfer coding after chunked"));
                }
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    other_coding = true;
                }
            }
        }
    }
    match (chunked, other_coding, length) {
        (true, _, _) => Ok(Framing::Chunked),
        // A request whose transfer coding is not chunked has no length a server can find.
        (false, true, _) => Err(bad("Transfer-Encoding without chunked")),
        (false, false, Some(0) | None) => Ok(Framing::Empty),
        (false, false, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// Copies one request body of `framing` from `r` to `w`, byte for byte.
pub fn copy_body(r: &mut impl BufRead, w: &mut impl Write, framing: Framing) -> io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => copy_exact(r, w, n),
        Framing::Chunked => loop {
            let line = read_line(r, "chunk size")?;
            w.write_all(&line)?;
            let text = std::str::from_utf8(&line).map_err(|_| bad("chunk size is not ASCII"))?;
            let digits = text
                .split(';')
                .next()
                .unwrap_or_default()
                .trim_end_matches(['\r', '\n'])
                .trim_matches([' ', '\t']);
            let size = u64::from_str_radix(digits, 16)
                .map_err(|_| bad(format!("bad chunk size: {digits:?}")))?;
            if size == 0 {
                // Trailer section, then the empty line that ends the request.
                loop {
                    let line = read_line(r, "trailer")?;
                    w.write_all(&line)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            copy_exact(r, w, size)?;
            let end = read_line(r, "chunk end")?;
            if end != b"\r\n" && end != b"\n" {
                return Err(bad("chunk data longer than its size"));
            }
            w.write_all(&end)?;
        },
    }
}

/// Forwards every request from `r` to `w`, calling `before_each` after a request's header block
/// has been read and before any of it is written. Returns the number of requests forwarded when
/// `r` ends cleanly between requests.
pub fn forward_requests(
    r: &mut impl BufRead,
    w: &mut impl Write,
    mut before_each: impl FnMut(),
) -> io::Result<u64> {
    let mut n = 0u64;
    while let Some(head) = read_head(r)? {
        let framing = framing(&head)?;
        before_each();
        w.write_all(&head)?;
        copy_body(r, w, framing)?;
        w.flush()?;
        n += 1;
    }
    Ok(n)
}

fn copy_exact(r: &mut impl Read, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), w)?;
    if copied == n {
        Ok(())
    } else {
        Err(bad("connection closed inside a request body"))
    }
}

fn read_line(r: &mut impl BufRead, what: &str) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.len() > MAX_LINE {
        return Err(bad(format!("{what} line longer than {MAX_LINE} bytes")));
    }
    if !line.ends_with(b"\n") {
        return Err(bad(format!("connection closed inside a {what} line")));
    }
    Ok(line)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Live connections: both sockets of each, so that dropping the proxy can close them.
type Conns = Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>;

/// A running proxy: listens on an ephemeral loopback port, forwards to one server address.
/// Dropping it stops accepting and closes every connection it holds.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    conns: Conns,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` that delays each request by
    /// `latency`. Costs one thread, plus two per open connection.
    pub fn start(upstream: SocketAddr, latency: Duration) -> io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let conns: Conns = Arc::default();
        let accept = {
            let (stop, requests, errors, conns) = (
                stop.clone(),
                requests.clone(),
                errors.clone(),
                conns.clone(),
            );
            std::thread::Builder::new()
                .name("s3-proxy".into())
                .spawn(move || {
                    let mut next_id = 0u64;
                    for client in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(client) = client else {
                            // Out of descriptors or a connection reset before accept: do not
                            // spin on it.
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        next_id += 1;
                        let shared = Shared {
                            requests: requests.clone(),
                            errors: errors.clone(),
                            conns: conns.clone(),
                        };
                        if connection(next_id, client, upstream, latency, shared).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })?
        };
        Ok(Proxy {
            addr,
            stop,
            requests,
            errors,
            conns,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests forwarded so far (each after its delay).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connections closed because a request could not be framed or the server could not be
    /// reached.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop; it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(PoisonError::into_inner));
        for (client, server) in conns.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

/// What every connection's threads share with the proxy.
struct Shared {
    requests: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    conns: Conns,
}

/// Connects to the server and starts the two pumps of one client connection.
fn connection(
    id: u64,
    client: TcpStream,
    upstream: SocketAddr,
    latency: Duration,
    shared: Shared,
) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT)?;
    // Requests are written in pieces (head, body): without NODELAY a small body would wait
    // for the head's ACK (Nagle + delayed ACK), adding tens of ms of delay nobody asked for.
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let (client_r, client_w) = (client.try_clone()?, client.try_clone()?);
    let (server_r, server_w) = (server.try_clone()?, server.try_clone()?);
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, (client, server));
    let Shared {
        requests,
        errors,
        conns,
    } = shared;
    std::thread::Builder::new()
        .name("s3-proxy-req".into())
        .spawn(move || {
            let mut r = BufReader::with_capacity(64 * 1024, client_r);
            let mut w = server_w;
            let result = forward_requests(&mut r, &mut w, || {
                std::thread::sleep(latency);
                requests.fetch_add(1, Ordering::Relaxed);
            });
            match result {
                // The client is done sending: pass the half-close on, let responses finish.
                Ok(_) => {
                    let _ = w.shutdown(Shutdown::Write);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = w.shutdown(Shutdown::Both);
                    let _ = r.get_ref().shutdown(Shutdown::Both);
                }
            }
        })?;
    std::thread::Builder::new()
        .name("s3-proxy-resp".into())
        .spawn(move || {
            let (mut r, mut w) = (server_r, client_w);
            let _ = io::copy(&mut r, &mut w);
            // The server closed (or failed): the connection is over in both directions.
            let _ = w.shutdown(Shutdown::Both);
            let _ = r.shutdown(Shutdown::Both);
            conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const PUT: &[u8] =
        b"PUT /b/k1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Amz-Date: 1\r\n\r\nhello";
    const CHUNKED: &[u8] = b"PUT /b/k2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n";
    const HEAD: &[u8] = b"HEAD /b/k3 HTTP/1.1\r\nHost: x\r\n\r\n";

    fn pipelined() -> Vec<u8> {
        [PUT, CHUNKED, HEAD].concat()
    }

    #[test]
    fn pipelined_requests_are_forwarded_byte_for_byte_one_hook_call_each() {
        let input = pipelined();
        let mut out = Vec::new();
        let mut calls = 0;
        let n = forward_requests(&mut Cursor::new(&input), &mut out, || calls += 1).unwrap();
        assert_eq!(n, 3);
        assert_eq!(calls, 3);
        assert_eq!(out, input);
    }

    #[test]
    fn the_hook_runs_before_each_request_is_written() {
        // Each call sees exactly the bytes of the requests before it already forwarded.
        let input = pipelined();
        let out = std::cell::RefCell::new(Vec::<u8>::new());
        let mut seen = Vec::new();
        struct W<'a>(&'a std::cell::RefCell<Vec<u8>>);
        impl Write for W<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        forward_requests(&mut Cursor::new(&input), &mut W(&out), || {
            seen.push(out.borrow().len())
        })
        .unwrap();
        assert_eq!(seen, [0, PUT.len(), PUT.len() + CHUNKED.len()]);
    }

    #[test]
    fn framing_of_each_kind() {
        assert_eq!(framing(PUT).unwrap(), Framing::Length(5));
        assert_eq!(framing(CHUNKED).unwrap(), Framing::Chunked);
        assert_eq!(framing(HEAD).unwrap(), Framing::Empty);
        let zero = b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(zero).unwrap(), Framing::Empty);
        let same_twice = b"PUT / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n";
        assert_eq!(framing(same_twice).unwrap(), Framing::Length(7));
        // Chunked wins over a length (RFC 9112 §6.3).
        let both = b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(framing(both).unwrap(), Framing::Chunked);
    }

    #[test]
    fn unframeable_requests_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "out of range",
            ),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "without chunked",
            ),
            (
                b"PUT / HTTP/1.1\r\nno colon here\r\n\r\n",
                "without a colon",
            ),
            (b"hello\r\n\r\n", "not an HTTP/1.x request line"),
        ];
        for (head, why) in cases {
            let e = framing(head).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(why), "{e} does not say {why:?}");
        }
    }

    #[test]
    fn truncated_and_oversized_input_is_an_error_not_a_hang() {
        let cut = &PUT[..PUT.len() - 2];
        let e = forward_requests(&mut Cursor::new(cut), &mut Vec::new(), || {}).unwrap_err();
        assert!(e.to_string().contains("inside a request body"), "{e}");
        let e =
            forward_requests(&mut Cursor::new(&HEAD[..10]), &mut Vec::new(), || {}).unwrap_err();
        assert!(e.to_string().contains("inside a request header"), "{e}");
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let e = forward_requests(&mut Cursor::new(&huge), &mut Vec::new(), || {}).unwrap_err();
        assert!(e.to_string().contains("64 KiB"), "{e}");
        let bad_chunk = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let e = forward_requests(&mut Cursor::new(bad_chunk), &mut Vec::new(), || {}).unwrap_err();
        assert!(e.to_string().contains("bad chunk size"), "{e}");
        let long_chunk = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n";
        let e = forward_requests(&mut Cursor::new(long_chunk), &mut Vec::new(), || {}).unwrap_err();
        assert!(e.to_string().contains("longer than its size"), "{e}");
    }

    #[test]
    fn an_empty_stream_and_leading_blank_lines_are_fine() {
        assert_eq!(
            forward_requests(&mut Cursor::new(b""), &mut Vec::new(), || {}).unwrap(),
            0
        );
        let mut out = Vec::new();
        let input = [b"\r\n".as_slice(), HEAD].concat();
        assert_eq!(
            forward_requests(&mut Cursor::new(&input), &mut out, || {}).unwrap(),
            1
        );
        assert_eq!(out, HEAD);
    }

    /// Over real loopback sockets: three requests on one kept-alive connection are three
    /// delayed requests, and each response comes back.
    #[test]
    fn a_kept_alive_connection_counts_each_request() {
        let server = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let upstream = server.local_addr().unwrap();
        // A minimal HTTP server: answers each request it can frame with an empty 200.
        let srv = std::thread::spawn(move || {
            let (s, _) = server.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = Vec::new();
            while let Some(head) = read_head(&mut r).unwrap() {
                got.extend_from_slice(&head);
                copy_body(&mut r, &mut got, framing(&head).unwrap()).unwrap();
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
            got
        });
        let proxy = Proxy::start(upstream, Duration::from_millis(1)).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(&pipelined()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answers = String::new();
        c.read_to_string(&mut answers).unwrap();
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 3, "{answers}");
        assert_eq!(srv.join().unwrap(), pipelined());
        assert_eq!(proxy.requests(), 3);
        assert_eq!(proxy.errors(), 0);
    }

    #[test]
    fn a_malformed_request_closes_its_connection_and_is_counted() {
        let server = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let upstream = server.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        });
        let proxy = Proxy::start(upstream, Duration::ZERO).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(b"PUT / HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        // The proxy closes the connection: read ends (EOF or reset), it does not hang.
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(srv.join().unwrap().is_empty(), "nothing reached the server");
        assert_eq!(proxy.requests(), 0);
        assert_eq!(proxy.errors(), 1);
    }
}
