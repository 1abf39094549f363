//! `houndd run` under misbehaving clients and signals: malformed frames, a client that stops
//! reading, SIGTERM drain, SIGHUP reload, the socket file and the uid allow-list.

mod daemon_support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemon_support::*;
use houndpool::daemon::client::Event;
use houndpool::daemon::DaemonError;
use houndpool::{JobKind, Severity};
use houndpool_protocol::daemon::{DaemonMessage, ErrorCode, OutcomeResult, RefuseReason};
use houndpool_protocol::frame::FrameDecoder;
use nix::sys::signal::Signal;

/// Reads frames from a raw stream until EOF; returns the decoded messages.
fn read_all_frames(s: &mut UnixStream) -> Vec<DaemonMessage> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = FrameDecoder::new(1 << 24);
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = s.read(&mut buf).expect("read until the daemon closes");
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some((h, body)) = dec.next_frame().unwrap() {
            out.push(DaemonMessage::decode(&h, &body, 1 << 24).unwrap());
        }
    }
    out
}

#[test]
fn malformed_frames_close_only_that_connection_with_an_error_frame() {
    let d = Daemon::start(&[]);
    let mut good = d.client();
    // Bad magic.
    let mut bad = UnixStream::connect(&d.socket).unwrap();
    bad.write_all(&[0xAB; 16]).unwrap();
    let msgs = read_all_frames(&mut bad);
    assert!(
        matches!(&msgs[..], [DaemonMessage::Error(e)] if e.code == ErrorCode::MalformedFrame),
        "{msgs:?}"
    );
    // A message only the daemon sends.
    let mut bad = UnixStream::connect(&d.socket).unwrap();
    let mut frame = Vec::new();
    DaemonMessage::Stats(Default::default())
        .encode_frame(&mut frame, 1 << 20)
        .unwrap();
    bad.write_all(&frame).unwrap();
    let msgs = read_all_frames(&mut bad);
    assert!(
        matches!(&msgs[..], [DaemonMessage::Error(e)] if e.code == ErrorCode::UnexpectedMessage),
        "{msgs:?}"
    );
    // The other connection is unaffected.
    good.submit(JobKind::Noop, Severity::Low, b"still here".to_vec())
        .unwrap()
        .unwrap();
    assert!(matches!(
        good.next_outcome().unwrap().result,
        OutcomeResult::Completed(_)
    ));
    // Disconnects are counted under the error code's name.
    d.wait_metric(
        "houndpool_daemon_disconnects_total{reason=\"malformed_frame\"}",
        1.0,
    );
    d.wait_metric(
        "houndpool_daemon_disconnects_total{reason=\"unexpected_message\"}",
        1.0,
    );
    assert!(d.log_text().contains("malformed frame"), "{}", d.log_text());
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_counted_others_are_served() {
    let mut d = Daemon::start(&[
        ("HOUNDPOOL_DAEMON_OUTCOME_BUFFER", "64"),
        ("HOUNDPOOL_DAEMON_WRITE_STALL_TIMEOUT_MS", "300"),
    ]);
    // The slow client writes submits with 60 KiB noop bodies (echoed back in the outcomes)
    // from a thread and never reads.
    let slow = UnixStream::connect(&d.socket).unwrap();
    let writer = {
        let mut s = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            let body = vec![b'e'; 60 * 1024];
            for i in 0..2000u64 {
                let mut f = Vec::new();
                DaemonMessage::Submit(houndpool_protocol::daemon::Submit {
                    request_id: i,
                    kind: JobKind::Noop,
                    severity: Severity::Low,
                    evidence_id: None,
                    level: None,
                    body: body.clone(),
                    key: None,
                })
                .encode_frame(&mut f, 1 << 20)
                .unwrap();
                if s.write_all(&f).is_err() {
                    return i;
                }
            }
            2000
        })
    };
    // Meanwhile another client is served promptly.
    let mut fast = d.client();
    let start = Instant::now();
    for _ in 0..20 {
        fast.submit(JobKind::Noop, Severity::High, b"hi".to_vec())
            .unwrap()
            .unwrap();
        fast.next_outcome().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    // The slow client is cut off after the stall timeout; its writes then fail.
    let sent = writer.join().unwrap();
    assert!(
        sent < 2000,
        "the daemon never stopped reading the slow client"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric("houndpool_daemon_disconnects_total{reason=\"write_stalled\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", d.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let undelivered = d
        .metric("houndpool_daemon_outcomes_undelivered_total")
        .unwrap();
    assert!(undelivered > 0.0);
    drop(slow);
    // Accounting still holds, and every accepted job has its outcome counted somewhere.
    let s = fast.stats().unwrap();
    assert_eq!(
        s.accepted,
        s.completed + s.failed + s.timed_out + s.dropped + s.in_flight
    );
    assert!(d.log_text().contains("does not take its outcomes"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn sigterm_drains_every_accepted_job_then_exits_zero() {
    let mut d = Daemon::start(&[]);
    let mut c = d.client();
    let n = 400u64;
    let body = b"GET /?q=<script> HTTP/1.1\r\n\r\n".repeat(100);
    for _ in 0..n {
        c.send_submit(
            JobKind::Evacuate,
            Severity::Medium,
            None,
            None,
            body.clone(),
        )
        .unwrap();
    }
    d.signal(Signal::SIGTERM);
    let (mut accepted, mut refused) = (HashSet::new(), 0u64);
    let mut outcomes = HashSet::new();
    loop {
        match c.next_event() {
            Ok(Event::Reply(r)) => match r.result {
                houndpool_protocol::daemon::SubmitResult::Accepted { job_id, .. } => {
                    accepted.insert(job_id);
                }
                houndpool_protocol::daemon::SubmitResult::Refused { reason, .. } => {
                    assert_eq!(reason, RefuseReason::ShuttingDown);
                    refused += 1;
                }
            },
            Ok(Event::Outcome(o)) => {
                assert!(accepted.contains(&o.job_id));
                assert!(outcomes.insert(o.job_id), "two outcomes for {}", o.job_id);
                assert!(matches!(
                    o.result,
                    OutcomeResult::Completed(_) | OutcomeResult::Dropped { .. }
                ));
            }
            Ok(other) => panic!("{other:?}"),
            // The daemon ends the connection it closes with an error frame naming why.
            Err(DaemonError::Remote { code, .. }) => {
                assert_eq!(code, "shutting_down");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted.len() as u64 + refused, n, "a submit got no reply");
    assert_eq!(outcomes, accepted, "an accepted job got no outcome");
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log_text());
    assert!(!d.socket.exists(), "socket file left behind");
    assert!(d.log_text().contains("draining"));
}

#[test]
fn sighup_applies_live_keys_logs_restart_keys_and_refuses_invalid_files() {
    let mut d = Daemon::start(&[]);
    let base = std::fs::read_to_string(&d.config).unwrap();
    let uid = nix::unistd::getuid().as_raw();

    // Valid: a live key (log.level, allowed_uids) and a restart key (pool.size).
    let changed = base
        .replace("size = 2", "size = 3")
        .replace("level = \"info\"", "level = \"debug\"")
        .replace(
            "drain_grace_ms = 5000",
            &format!("drain_grace_ms = 5000\nallowed_uids = [{}]", uid + 1),
        );
    std::fs::write(&d.config, &changed).unwrap();
    d.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric("houndpool_daemon_config_reloads_total{result=\"applied\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log_text();
    assert!(
        log.contains("configuration change applied") && log.contains("key=log.level"),
        "{log}"
    );
    assert!(
        log.contains("needs a restart") && log.contains("key=pool.size"),
        "{log}"
    );
    // The allow-list applies to new connections: ours is refused now.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let msgs = read_all_frames(&mut s);
    assert!(
        matches!(&msgs[..], [DaemonMessage::Error(e)] if e.code == ErrorCode::PermissionDenied
            && e.message.starts_with(&format!("uid {uid} is not allowed"))),
        "{msgs:?}"
    );
    // The pool still runs with 2 hounds (size needs a restart).
    assert_eq!(d.metric("houndpool_pool_size_target"), Some(2.0));

    // Invalid: refused, nothing changes (our uid is still refused).
    std::fs::write(&d.config, changed.replace("size = 3", "size = 0")).unwrap();
    d.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric("houndpool_daemon_config_reloads_total{result=\"refused\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log_text().contains("reload refused"));
    let mut s = UnixStream::connect(&d.socket).unwrap();
    assert!(matches!(
        &read_all_frames(&mut s)[..],
        [DaemonMessage::Error(e)] if e.code == ErrorCode::PermissionDenied
    ));

    // Back to a file that lets us in.
    std::fs::write(
        &d.config,
        changed.replace(
            &format!("allowed_uids = [{}]", uid + 1),
            &format!("allowed_uids = [{uid}]"),
        ),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric("houndpool_daemon_config_reloads_total{result=\"applied\"}") != Some(2.0) {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"ok".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn socket_is_private_and_a_second_daemon_does_not_steal_it() {
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second daemon on the same socket path refuses to start and leaves the first alone.
    let log = d.dir.path().join("second.log");
    let config = d.dir.path().join("second.toml");
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace(&d.ops.to_string(), &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&config, text).unwrap();
    let status = Daemon::command(&config, &log, &[]).status().unwrap();
    assert_eq!(status.code(), Some(2));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("in use"), "{err}");
    let mut c = d.client();
    c.submit(JobKind::Noop, Severity::Low, b"x".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
}

#[test]
fn a_stale_socket_file_is_replaced_and_an_allowed_uid_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let uid = nix::unistd::getuid().as_raw();
    let mut d = Daemon::spawn(
        |base| {
            base.replace(
                "drain_grace_ms = 5000",
                &format!("drain_grace_ms = 5000\nallowed_uids = [{uid}]\nsocket_mode = \"0660\""),
            )
        },
        &[("HOUNDPOOL_DAEMON_SOCKET", stale.to_str().unwrap())],
    );
    d.socket = stale.clone();
    d.wait_ready();
    let mode = std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut c = houndpool::daemon::client::Client::connect(&stale).unwrap();
    c.submit(JobKind::Noop, Severity::Low, b"x".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
    drop(d);
}
