//! `houndd run` under slow, silent and hostile clients (issue 14): flow control that never
//! loses an outcome, the daemon-wide buffer budget, frame and idle timeouts, fair admission
//! (eviction, per-uid cap), the descriptor check, and ops probes under load.

mod daemon_support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemon_support::*;
use houndpool::{JobKind, Severity};
use houndpool_protocol::daemon::{DaemonMessage, ErrorCode, SubmitResult};

/// Checks a conversation: every submit of `0..n` got one reply, every accepted job exactly
/// one outcome after its reply. Returns (accepted, refused, error codes).
fn tally(msgs: &[DaemonMessage], n: u64) -> (usize, usize, Vec<ErrorCode>) {
    let mut replies: HashMap<u64, Option<u64>> = HashMap::new();
    let mut outcomes = HashSet::new();
    let mut errors = Vec::new();
    for m in msgs {
        match m {
            DaemonMessage::SubmitReply(r) => {
                let job = match r.result {
                    SubmitResult::Accepted { job_id, .. } => Some(job_id),
                    SubmitResult::Refused { .. } => None,
                };
                assert!(replies.insert(r.request_id, job).is_none(), "two replies");
            }
            DaemonMessage::Outcome(o) => {
                assert_eq!(
                    replies.get(&o.request_id),
                    Some(&Some(o.job_id)),
                    "outcome before its reply"
                );
                assert!(outcomes.insert(o.job_id), "two outcomes for {}", o.job_id);
            }
            DaemonMessage::Error(e) => errors.push(e.code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies.len() as u64, n, "a submit got no reply");
    let accepted: HashSet<u64> = replies.values().flatten().copied().collect();
    assert_eq!(outcomes, accepted, "an accepted job got no outcome");
    (
        accepted.len(),
        replies.values().filter(|r| r.is_none()).count(),
        errors,
    )
}

#[test]
fn a_slow_pipelining_reader_gets_every_reply_and_every_outcome() {
    let d = Daemon::start(&[]);
    let s = UnixStream::connect(&d.socket).unwrap();
    let n = 5000u64;
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let body = vec![b'n'; 1024];
            for i in 0..n {
                w.write_all(&submit_frame(i, JobKind::Noop, body.clone()))
                    .unwrap();
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut r = s;
    let msgs = read_frames(
        &mut r,
        64 * 1024,
        Duration::from_millis(1),
        Duration::from_secs(240),
    );
    writer.join().unwrap();
    let (accepted, refused, errors) = tally(&msgs, n);
    // Backpressure, not refusal: every submit is accepted, nothing is cut off.
    assert_eq!((accepted, refused), (n as usize, 0));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        d.metric("houndpool_daemon_outcomes_undelivered_total"),
        Some(0.0)
    );
    for reason in ["write_stalled", "io_error", "frame_timeout"] {
        let sample = format!("houndpool_daemon_disconnects_total{{reason=\"{reason}\"}}");
        assert_eq!(d.metric(&sample), None, "{sample}");
    }
}

#[test]
fn clients_that_do_not_read_are_paused_within_the_budget_and_lose_nothing() {
    let budget = 16u64 << 20;
    let d = Daemon::start(&[
        ("HOUNDPOOL_DAEMON_BUFFER_BUDGET_BYTES", &budget.to_string()),
        ("HOUNDPOOL_DAEMON_WRITE_STALL_TIMEOUT_MS", "120000"),
    ]);
    let n = 300u64;
    let clients: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let writers: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut w = c.try_clone().unwrap();
            std::thread::spawn(move || {
                let body = vec![b'x'; 60 * 1024];
                for i in 0..n {
                    w.write_all(&submit_frame(i, JobKind::Noop, body.clone()))
                        .unwrap();
                }
                w.shutdown(std::net::Shutdown::Write).unwrap();
            })
        })
        .collect();
    // Nobody reads for 3 s: the daemon stops reading them and stays within its budget.
    let pid = d.pid();
    let mut peak = 0;
    let start = Instant::now();
    let mut paused_seen = 0.0f64;
    while start.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_kib(pid));
        let used = d.metric("houndpool_daemon_buffer_bytes").unwrap();
        assert!(used <= budget as f64, "{used} > {budget}");
        paused_seen = paused_seen.max(d.metric("houndpool_daemon_connections_paused").unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("houndd peak VmRSS while 3 clients did not read: {peak} KiB");
    assert!(paused_seen >= 1.0, "no connection was paused");
    assert!(
        d.metric("houndpool_daemon_backpressure_pauses_total")
            .unwrap()
            >= 1.0
    );
    // A generous bound only (debug build): the budget is 16 MiB.
    assert!(peak < 600 * 1024, "houndd RSS {peak} KiB");
    // Now they read: every accepted job has its outcome, nothing was dropped.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                read_frames(&mut c, 64 * 1024, Duration::ZERO, Duration::from_secs(240))
            })
        })
        .collect();
    for r in readers {
        let msgs = r.join().unwrap();
        let (accepted, refused, errors) = tally(&msgs, n);
        assert_eq!((accepted, refused), (n as usize, 0));
        assert!(errors.is_empty(), "{errors:?}");
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        d.metric("houndpool_daemon_outcomes_undelivered_total"),
        Some(0.0)
    );
    d.wait_metric("houndpool_daemon_buffer_bytes", 0.0);
    d.wait_metric("houndpool_daemon_connections_paused", 0.0);
}

#[test]
fn half_frames_and_idle_connections_are_closed_with_a_reason() {
    let d = Daemon::start(&[
        ("HOUNDPOOL_DAEMON_FRAME_TIMEOUT_MS", "500"),
        ("HOUNDPOOL_DAEMON_IDLE_TIMEOUT_MS", "1000"),
    ]);
    let errors = |s: &mut UnixStream| -> Vec<ErrorCode> {
        read_frames(s, 4096, Duration::ZERO, Duration::from_secs(30))
            .into_iter()
            .map(|m| match m {
                DaemonMessage::Error(e) => e.code,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // 8 header bytes, then silence.
    let mut header_only = UnixStream::connect(&d.socket).unwrap();
    let frame = submit_frame(1, JobKind::Noop, vec![b'h'; 100]);
    header_only.write_all(&frame[..8]).unwrap();
    // A whole header and part of the body.
    let mut body_part = UnixStream::connect(&d.socket).unwrap();
    body_part.write_all(&frame[..40]).unwrap();
    // Nothing at all.
    let mut idle = UnixStream::connect(&d.socket).unwrap();
    assert_eq!(errors(&mut header_only), [ErrorCode::FrameTimeout]);
    assert_eq!(errors(&mut body_part), [ErrorCode::FrameTimeout]);
    assert_eq!(errors(&mut idle), [ErrorCode::IdleTimeout]);
    d.wait_metric(
        "houndpool_daemon_disconnects_total{reason=\"frame_timeout\"}",
        2.0,
    );
    d.wait_metric(
        "houndpool_daemon_disconnects_total{reason=\"idle_timeout\"}",
        1.0,
    );
    // A client that submits in time is served as usual.
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"on time".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
}

#[test]
fn with_every_connection_held_idle_a_new_client_is_still_served() {
    let d = Daemon::start(&[("HOUNDPOOL_DAEMON_MAX_CONNECTIONS", "256")]);
    // The readiness probe's connection is gone.
    d.wait_metric("houndpool_daemon_connections_open", 0.0);
    let mut held = Vec::new();
    for i in 0..256 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        if i % 2 == 0 {
            // Half of them start a frame and go quiet.
            s.write_all(&submit_frame(1, JobKind::Noop, vec![1; 10])[..8])
                .unwrap();
        }
        held.push(s);
    }
    d.wait_metric("houndpool_daemon_connections_open", 256.0);
    // Quiet for longer than the eviction minimum (1 s), well within the 5 s frame timeout.
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"let me in".to_vec())
        .unwrap()
        .expect("accepted");
    c.next_outcome().unwrap();
    eprintln!(
        "submit with 256 idle connections held took {:?}",
        start.elapsed()
    );
    assert!(d.metric("houndpool_daemon_disconnects_total{reason=\"evicted\"}") >= Some(1.0));
    // The evicted connection was told why.
    let evicted = held
        .iter_mut()
        .filter_map(|s| {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            match std::io::Read::read(s, &mut buf) {
                Ok(n) if n > 0 => Some(buf[..n].to_vec()),
                _ => None,
            }
        })
        .collect::<Vec<_>>();
    assert!(!evicted.is_empty(), "no held connection got an error frame");
    let mut dec = houndpool_protocol::frame::FrameDecoder::new(1 << 20);
    dec.push(&evicted[0]);
    let (h, body) = dec.next_frame().unwrap().expect("a whole frame");
    match DaemonMessage::decode(&h, &body, 1 << 20).unwrap() {
        DaemonMessage::Error(e) => assert_eq!(e.code, ErrorCode::Evicted),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_per_uid_cap_refuses_with_its_own_code() {
    let d = Daemon::start(&[("HOUNDPOOL_DAEMON_MAX_CONNECTIONS_PER_UID", "2")]);
    d.wait_metric("houndpool_daemon_connections_open", 0.0);
    let _a = UnixStream::connect(&d.socket).unwrap();
    let b = UnixStream::connect(&d.socket).unwrap();
    d.wait_metric("houndpool_daemon_connections_open", 2.0);
    let mut c = UnixStream::connect(&d.socket).unwrap();
    let msgs = read_frames(&mut c, 4096, Duration::ZERO, Duration::from_secs(10));
    assert!(
        matches!(&msgs[..], [DaemonMessage::Error(e)] if e.code == ErrorCode::TooManyConnectionsForUid && e.message.contains("max_connections_per_uid")),
        "{msgs:?}"
    );
    drop(b);
    d.wait_metric("houndpool_daemon_connections_open", 1.0);
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"x".to_vec())
        .unwrap()
        .unwrap();
}

#[test]
fn descriptors_are_checked_at_start_and_never_run_out() {
    // 256 connections do not fit 200 descriptors: refused at start, naming key and limit.
    let mut d = Daemon::spawn_under(&["prlimit", "--nofile=200:200", "--"], |b| b, &[]);
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("daemon.max_connections") && log.contains("RLIMIT_NOFILE"),
        "{log}"
    );
    // 16 fit: 80 connections at once are served or refused, never an accept failure, and
    // the probes keep answering.
    let mut d = Daemon::spawn_under(
        &["prlimit", "--nofile=200:200", "--"],
        |b| b,
        &[("HOUNDPOOL_DAEMON_MAX_CONNECTIONS", "16")],
    );
    d.wait_ready();
    let held: Vec<UnixStream> = (0..80)
        .filter_map(|_| UnixStream::connect(&d.socket).ok())
        .collect();
    for _ in 0..5 {
        assert_eq!(d.get("/healthz").0, 200);
        assert_eq!(d.get("/readyz").0, 200);
    }
    assert!(
        d.metric("houndpool_daemon_disconnects_total{reason=\"too_many_connections\"}")
            >= Some(1.0)
    );
    drop(held);
    d.wait_metric("houndpool_daemon_connections_open", 0.0);
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"x".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
    assert!(!d.log_text().contains("accept failed"), "{}", d.log_text());
}

#[test]
fn probes_answer_while_the_ops_endpoint_and_the_socket_are_busy() {
    let d = Daemon::start(&[]);
    // Half-sent HTTP requests hold every ops connection slot.
    let _half: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(d.ops).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    // A client pipelines submits meanwhile.
    let busy = {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        std::thread::spawn(move || {
            let writer = {
                let mut w = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        w.write_all(&submit_frame(i, JobKind::Noop, vec![b'b'; 4096]))
                            .unwrap();
                    }
                    w.shutdown(std::net::Shutdown::Write).unwrap();
                })
            };
            let msgs = read_frames(&mut s, 64 * 1024, Duration::ZERO, Duration::from_secs(240));
            writer.join().unwrap();
            msgs
        })
    };
    for _ in 0..10 {
        assert_eq!(d.get("/healthz").0, 200);
        assert_eq!(d.get("/readyz").0, 200);
        let (status, body) = d.get("/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("houndpool_daemon_buffer_bytes"), "{body}");
    }
    let msgs = busy.join().unwrap();
    let (accepted, _, errors) = tally(&msgs, 2000);
    assert_eq!(accepted, 2000);
    assert!(errors.is_empty());
}

#[test]
fn a_connection_holds_exactly_outcome_buffer_jobs_in_flight_and_is_then_not_read() {
    let d = Daemon::start(&[("HOUNDPOOL_DAEMON_OUTCOME_BUFFER", "8")]);
    let n = 100u64;
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            // 60 KiB outcomes: a few fill the socket buffer, then outcomes wait in the daemon.
            for i in 0..n {
                w.write_all(&submit_frame(i, JobKind::Noop, vec![b'o'; 60 * 1024]))
                    .unwrap();
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    // Accepted minus written in full = the connection's jobs in flight: it reaches the bound
    // exactly (not one more), and the connection is paused there.
    let in_flight = |d: &Daemon| {
        d.metric("houndpool_daemon_accepted_total").unwrap()
            - d.metric("houndpool_daemon_outcomes_delivered_total{kind=\"completed\"}")
                .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = in_flight(&d);
        assert!(
            f <= 8.0,
            "{f} jobs in flight with daemon.outcome_buffer = 8"
        );
        if f == 8.0 && d.metric("houndpool_daemon_connections_paused") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", d.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        assert!(in_flight(&d) <= 8.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let msgs = read_frames(&mut s, 64 * 1024, Duration::ZERO, Duration::from_secs(120));
    writer.join().unwrap();
    let (accepted, refused, errors) = tally(&msgs, n);
    assert_eq!((accepted, refused), (n as usize, 0));
    assert!(errors.is_empty(), "{errors:?}");
}
