//! Failure classification against a scripted fake HTTP server (no signature checks): which
//! answers are retried, which are final, and that size limits hold against lying servers.
//! The real-server behaviour is covered by the other s3_* tests.

mod s3_support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest as _, Md5};

use houndpool_cold::s3::{S3Store, S3Tuning};
use houndpool_cold::ColdError;
use houndpool_cold::{ColdStore, KeyOrigin, PutItem, PutOutcome};
use s3_support::{fast_tuning, spool_files};

/// What the fake server does with the next request.
#[derive(Clone)]
enum Act {
    /// Answer with this status, extra headers and body (Content-Length set).
    Status(u16, &'static str, &'static [u8]),
    /// Answer with raw bytes (status line and headers included), then close.
    Raw(&'static [u8]),
    /// Read the request, then close without answering.
    Hangup,
    /// Read the request, then hold the connection open without answering (for 30 s).
    Stall,
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Fake {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Serves `script` in order (one connection per request), then 500s.
    fn start(script: Vec<Act>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut script: VecDeque<Act> = script.into();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let act = script
                    .pop_front()
                    .unwrap_or(Act::Status(500, "", b"script exhausted"));
                if let Some(req) = read_request(&conn) {
                    log.lock().unwrap().push(req);
                }
                if matches!(act, Act::Stall) {
                    // Keep serving the script while this connection hangs.
                    std::thread::spawn(move || respond(conn, act));
                } else {
                    respond(conn, act);
                }
            }
        });
        Fake { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn store(&self, spool: Option<&std::path::Path>) -> S3Store {
        self.store_with(spool, fast_tuning())
    }

    fn store_with(&self, spool: Option<&std::path::Path>, tuning: S3Tuning) -> S3Store {
        let target = houndpool_protocol::control::S3Target {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            bucket: "b".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: "AK".into(),
            secret_key: "SK".into(),
            session_token: None,
            spool_dir: spool.map(|p| p.to_str().unwrap().to_owned()),
            spool_limit_bytes: 1 << 20,
        };
        S3Store::open_with(&target, tuning).unwrap()
    }
}

fn read_request(conn: &TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

fn respond(mut conn: TcpStream, act: Act) {
    match act {
        Act::Status(code, extra, body) => {
            let head = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body);
        }
        Act::Raw(bytes) => {
            let _ = conn.write_all(bytes);
        }
        Act::Hangup => {}
        Act::Stall => std::thread::sleep(Duration::from_secs(30)),
    }
    let _ = conn.flush();
    // Dropping the stream closes the connection.
}

const OK: Act = Act::Status(200, "", b"");
/// The HEAD of a create-only put finding no object.
const ABSENT: Act = Act::Status(404, "", b"");

#[test]
fn server_errors_and_throttling_are_retried_with_the_same_signed_upload() {
    let fake = Fake::start(vec![
        ABSENT,
        Act::Status(503, "", b"<Error><Code>SlowDown</Code></Error>"),
        Act::Status(429, "", b""),
        OK,
    ]);
    let mut s = fake.store(None);
    let body = b"envelope bytes";
    assert_eq!(s.put("ev/k.thcs", body).unwrap(), PutOutcome::Stored);
    let mut seen = fake.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.remove(0).method, "HEAD", "create-only: HEAD first");
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
    for req in &seen {
        assert_eq!(req.method, "PUT");
        assert!(req.path.starts_with("/b/ev/k.thcs?"), "{}", req.path);
        assert!(
            req.path.contains("X-Amz-Signature="),
            "presigned: {}",
            req.path
        );
        assert!(req.path.contains("content-md5"), "Content-MD5 is signed");
        assert_eq!(req.header("content-md5"), Some(md5.as_str()));
        assert_eq!(req.header("content-length"), Some("14"));
        assert_eq!(req.body, body);
        assert_eq!(req.header("if-none-match"), Some("*"), "conditional put");
    }
}

#[test]
fn a_taken_key_is_compared_same_bytes_succeed_other_bytes_are_refused() {
    // The server honours If-None-Match (412), then the GET tells same from different bytes.
    let same = Fake::start(vec![
        ABSENT,
        Act::Status(412, "", b"<Error><Code>PreconditionFailed</Code></Error>"),
        Act::Status(200, "", b"envelope"),
    ]);
    assert_eq!(
        same.store(None).put("k", b"envelope").unwrap(),
        PutOutcome::Stored
    );
    let methods: Vec<_> = same.seen().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "PUT", "GET"]);
    // HEAD finds it (a server without conditional puts): no PUT at all.
    let other = Fake::start(vec![OK, Act::Status(200, "", b"other bytes")]);
    match other.store(None).put("k", b"envelope") {
        Err(ColdError::AlreadyExists { key }) => assert_eq!(key, "k"),
        got => panic!("expected AlreadyExists, got {got:?}"),
    }
    let methods: Vec<_> = other.seen().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[test]
fn a_pool_named_key_is_put_without_a_head_and_others_keep_it() {
    // A key named by a pool-generated evidence id: the conditional PUT alone.
    let fake = Fake::start(vec![OK]);
    let mut s = fake.store(None);
    let item = |origin| PutItem {
        key: "ev/0190.thcs",
        envelope: b"envelope",
        origin,
    };
    let got = s.put_batch(&[item(KeyOrigin::PoolId)]);
    assert!(matches!(got[..], [Ok(PutOutcome::Stored)]), "{got:?}");
    let seen = fake.seen();
    let methods: Vec<_> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["PUT"]);
    assert_eq!(
        seen[0].header("if-none-match"),
        Some("*"),
        "still conditional"
    );
    // Taken (a retry of the same job after its hound died): 412, then compared, as before.
    let taken = Fake::start(vec![
        Act::Status(412, "", b"<Error><Code>PreconditionFailed</Code></Error>"),
        Act::Status(200, "", b"envelope"),
    ]);
    let got = taken.store(None).put_batch(&[item(KeyOrigin::PoolId)]);
    assert!(matches!(got[..], [Ok(PutOutcome::Stored)]), "{got:?}");
    let methods: Vec<_> = taken.seen().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["PUT", "GET"]);
    // Named by the submitter (its key, or its evidence id): HEAD first.
    for origin in [KeyOrigin::SubmitterKey, KeyOrigin::SubmitterId] {
        let fake = Fake::start(vec![ABSENT, OK]);
        let got = fake.store(None).put_batch(&[item(origin)]);
        assert!(matches!(got[..], [Ok(PutOutcome::Stored)]), "{got:?}");
        let methods: Vec<_> = fake.seen().into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["HEAD", "PUT"], "{origin:?}");
    }
}

#[test]
fn hangups_and_request_timeouts_are_transient() {
    let fake = Fake::start(vec![
        ABSENT,
        Act::Hangup,
        Act::Status(
            400,
            "",
            b"<Error><Code>RequestTimeout</Code><Message>idle</Message></Error>",
        ),
        OK,
    ]);
    let mut s = fake.store(None);
    assert_eq!(s.put("k", b"x").unwrap(), PutOutcome::Stored);
    assert_eq!(fake.seen().len(), 4);
}

#[test]
fn persistent_server_errors_end_in_the_spool_after_the_attempt_limit() {
    let fake = Fake::start(vec![Act::Status(500, "", b""); 10]);
    let spool = tempfile::tempdir().unwrap();
    let mut s = fake.store(Some(spool.path()));
    assert_eq!(s.put("k", b"x").unwrap(), PutOutcome::Spooled);
    assert_eq!(fake.seen().len(), fast_tuning().attempts as usize);
    assert_eq!(spool_files(spool.path()).len(), 1);
}

/// A server that reads the request and never answers holds an attempt for the whole I/O
/// timeout (10 s in these tunings); the operation deadline cuts the whole put (HEAD, PUT,
/// retries) at what it allows, after which the envelope is spooled; a get fails as
/// unavailable in the same time.
#[test]
fn the_operation_deadline_cuts_a_stalled_server_and_the_put_spools() {
    let deadline = Duration::from_millis(600);
    let tuning = S3Tuning {
        operation_deadline: Some(deadline),
        ..fast_tuning()
    };
    let fake = Fake::start(vec![Act::Stall; 12]);
    let spool = tempfile::tempdir().unwrap();
    let mut s = fake.store_with(Some(spool.path()), tuning);
    let t = Instant::now();
    assert_eq!(s.put("k", b"x").unwrap(), PutOutcome::Spooled);
    let took = t.elapsed();
    assert!(
        took >= deadline && took < tuning.io_timeout,
        "the put took {took:?}: cut at the deadline ({deadline:?}), not at the I/O timeout"
    );
    assert_eq!(spool_files(spool.path()).len(), 1);

    let t = Instant::now();
    match s.get("other", 1024) {
        Err(ColdError::ColdUnavailable { reason }) => {
            assert!(
                reason.contains("timeout") || reason.contains("deadline"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() < tuning.io_timeout,
        "the get took {:?}",
        t.elapsed()
    );
}

#[test]
fn refusals_and_redirects_are_final_and_not_followed() {
    for (act, status) in [
        (
            Act::Status(403, "", b"<Error><Code>AccessDenied</Code></Error>"),
            403,
        ),
        (
            Act::Status(400, "", b"<Error><Code>BadDigest</Code></Error>"),
            400,
        ),
        (
            Act::Status(301, "Location: http://127.0.0.1:9/elsewhere\r\n", b""),
            301,
        ),
    ] {
        let fake = Fake::start(vec![act]);
        let spool = tempfile::tempdir().unwrap();
        let mut s = fake.store(Some(spool.path()));
        match s.put("k", b"x") {
            Err(ColdError::ColdRejected { status: got, .. }) => assert_eq!(got, status),
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(fake.seen().len(), 1, "{status}: retried or redirected");
        assert!(spool_files(spool.path()).is_empty());
    }
}

#[test]
fn get_size_guard_holds_against_large_and_lying_servers() {
    // Declared too large: refused from the header, the body is never read.
    let fake = Fake::start(vec![Act::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\npartial",
    )]);
    match fake.store(None).get("k", 100) {
        Err(ColdError::ObjectTooLarge { len, max, .. }) => {
            assert_eq!((len, max), (1_000_000_000, 100))
        }
        other => panic!("{other:?}"),
    }
    // No length declared (chunked): reading stops after the limit.
    let fake = Fake::start(vec![Act::Raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          80\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
          xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
    )]);
    match fake.store(None).get("k", 100) {
        Err(ColdError::ObjectTooLarge { len, max, .. }) => assert_eq!((len, max), (101, 100)),
        other => panic!("{other:?}"),
    }
    // A body cut short of its Content-Length is a transport failure, not data.
    let fake = Fake::start(vec![
        Act::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort"),
        Act::Status(200, "", b"0123456789"),
    ]);
    assert_eq!(fake.store(None).get("k", 100).unwrap(), b"0123456789");
}
