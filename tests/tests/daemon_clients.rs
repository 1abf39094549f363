//! `houndd run` with real clients: every job kind through the Rust client, typed refusals,
//! the operations endpoint, and the `houndd submit` / `houndd config check` command lines.

mod daemon_support;

use std::process::Command;
use std::time::Duration;

use daemon_support::*;
use houndpool::{JobKind, Severity};
use houndpool_protocol::daemon::{OutcomeResult, RefuseReason};
use houndpool_protocol::envelope;
use houndpool_tests::{object_exists, stored_object};

fn completed(r: &OutcomeResult) -> &houndpool_protocol::daemon::OutcomeReceipt {
    match r {
        OutcomeResult::Completed(rc) => rc,
        other => panic!("expected completed, got {other:?}"),
    }
}

#[test]
fn rust_client_runs_every_job_kind_and_stats_add_up() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let evidence = b"POST /login HTTP/1.1\r\nHost: x\r\n\r\nuser=admin'--".repeat(40);

    // Evacuate: the envelope lands at <cold>/<prefix><evidence-id>.thcs and verifies.
    let id = c
        .send_submit(
            JobKind::Evacuate,
            Severity::High,
            None,
            None,
            evidence.clone(),
        )
        .unwrap();
    let job = c.wait_reply(id).unwrap().expect("evacuate accepted");
    let o = c.next_outcome().unwrap();
    assert_eq!((o.job_id, o.request_id), (job, id));
    assert_eq!((o.kind, o.severity), (JobKind::Evacuate, Severity::High));
    let r = completed(&o.result);
    let evidence_id = uuid::Uuid::from_bytes(o.evidence_id);
    let key = format!("evidence/{}.thcs", evidence_id.hyphenated());
    assert_eq!(r.key.as_deref(), Some(key.as_str()));
    assert_eq!(r.original_size, Some(evidence.len() as u64));
    let stored = stored_object(&d.dir.path().join("cold"), &key);
    assert_eq!(envelope::decode(&stored, 1 << 20).unwrap(), evidence);

    // Encode returns the envelope; Decode inside a hound gives the evidence back.
    let job = c
        .submit(JobKind::Encode, Severity::Low, evidence.clone())
        .unwrap()
        .unwrap();
    let o = c.next_outcome().unwrap();
    assert_eq!(o.job_id, job);
    let env = completed(&o.result).payload.clone().expect("envelope");
    assert_eq!(&env[..4], b"THCS");
    c.submit(JobKind::Decode, Severity::Low, env)
        .unwrap()
        .unwrap();
    let o = c.next_outcome().unwrap();
    assert_eq!(completed(&o.result).payload.as_deref(), Some(&evidence[..]));

    // Noop echoes.
    c.submit(JobKind::Noop, Severity::Medium, b"ping".to_vec())
        .unwrap()
        .unwrap();
    let o = c.next_outcome().unwrap();
    assert_eq!(completed(&o.result).payload.as_deref(), Some(&b"ping"[..]));

    // Restore and erase by evidence id.
    let id = c
        .send_submit(
            JobKind::Restore,
            Severity::Medium,
            Some(*evidence_id.as_bytes()),
            None,
            Vec::new(),
        )
        .unwrap();
    c.wait_reply(id).unwrap().unwrap();
    let o = c.next_outcome().unwrap();
    assert_eq!(completed(&o.result).payload.as_deref(), Some(&evidence[..]));
    let id = c
        .send_submit(
            JobKind::Erase,
            Severity::Medium,
            Some(*evidence_id.as_bytes()),
            None,
            Vec::new(),
        )
        .unwrap();
    c.wait_reply(id).unwrap().unwrap();
    let o = c.next_outcome().unwrap();
    assert_eq!(completed(&o.result).existed, Some(true));
    assert!(!d.dir.path().join("cold").join(&key).exists());

    let s = c.stats().unwrap();
    assert_eq!(s.accepted, 6);
    assert_eq!(s.completed, 6);
    assert_eq!(
        s.accepted,
        s.completed + s.failed + s.timed_out + s.dropped + s.in_flight
    );
    assert_eq!((s.hounds_target, s.hounds_ready), (2, 2));
    assert_eq!(s.connection_in_flight, 0);
    assert!(!s.draining);
}

#[test]
fn pipelined_submits_get_exactly_one_reply_and_outcome_each_reply_first() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let n = 300u64;
    let mut ids = Vec::new();
    for i in 0..n {
        let body = format!("evidence number {i}").repeat(50).into_bytes();
        ids.push(
            c.send_submit(JobKind::Encode, Severity::Medium, None, None, body)
                .unwrap(),
        );
    }
    c.finish_submitting().unwrap();
    let mut replied = std::collections::HashMap::new();
    let mut outcomes = std::collections::HashSet::new();
    loop {
        match c.next_event() {
            Ok(houndpool::daemon::client::Event::Reply(r)) => {
                let job = match r.result {
                    houndpool_protocol::daemon::SubmitResult::Accepted { job_id, .. } => job_id,
                    other => panic!("refused: {other:?}"),
                };
                assert!(replied.insert(job, r.request_id).is_none());
            }
            Ok(houndpool::daemon::client::Event::Outcome(o)) => {
                assert_eq!(
                    replied.get(&o.job_id),
                    Some(&o.request_id),
                    "outcome before its reply"
                );
                assert!(outcomes.insert(o.job_id), "two outcomes for {}", o.job_id);
                completed(&o.result);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            // The daemon closes after the last outcome of a half-closed connection.
            Err(houndpool::daemon::DaemonError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(replied.len() as u64, n);
    assert_eq!(outcomes.len() as u64, n);
}

#[test]
fn refusals_are_typed_and_counted() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let refused = |r: houndpool::daemon::client::Accepted| r.expect_err("refused").0;
    assert_eq!(
        refused(
            c.submit(JobKind::Encode, Severity::Low, Vec::new())
                .unwrap()
        ),
        RefuseReason::EmptyEvidence
    );
    assert_eq!(
        refused(
            c.submit(JobKind::Evacuate, Severity::Low, vec![b'x'; 65537])
                .unwrap()
        ),
        RefuseReason::EvidenceTooLarge
    );
    assert_eq!(
        refused(
            c.submit(JobKind::Restore, Severity::Low, Vec::new())
                .unwrap()
        ),
        RefuseReason::InvalidJob
    );
    let id = c
        .send_submit(
            JobKind::Encode,
            Severity::Low,
            None,
            Some(12),
            b"x".to_vec(),
        )
        .unwrap();
    assert_eq!(refused(c.wait_reply(id).unwrap()), RefuseReason::InvalidJob);
    let s = c.stats().unwrap();
    assert_eq!(s.accepted, 0);
    assert_eq!(
        d.metric("houndpool_daemon_refused_total{reason=\"invalid_job\"}"),
        Some(2.0)
    );
    assert_eq!(
        d.metric("houndpool_daemon_refused_total{reason=\"empty_evidence\"}"),
        Some(1.0)
    );
    assert_eq!(d.metric("houndpool_daemon_submits_total"), Some(4.0));
}

#[test]
fn ops_endpoint_serves_metrics_health_and_readiness() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    c.submit(JobKind::Evacuate, Severity::Low, b"GET / HTTP/1.1".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
    // Counted once the daemon's write has returned (the client may read the bytes first).
    d.wait_metric(
        "houndpool_daemon_outcomes_delivered_total{kind=\"completed\"}",
        1.0,
    );
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "houndpool_daemon_submits_total 1",
        "houndpool_daemon_accepted_total 1",
        "houndpool_daemon_outcomes_delivered_total{kind=\"completed\"} 1",
        "houndpool_pool_outcomes_total{kind=\"completed\"} 1",
        "houndpool_pool_refused_total{reason=\"exhausted\"} 0",
        "houndpool_pool_queue_depth{queue=\"rings\"} 0",
        "houndpool_pool_queue_depth{queue=\"deferred\"} 0",
        "houndpool_hound_restarts_total{slot=\"0\"} 0",
        "houndpool_hound_restarts_total{slot=\"1\"} 0",
        "houndpool_pool_size_target 2",
        "houndpool_pool_size_ready 2",
        "# TYPE houndpool_pool_spare_ready gauge",
        "houndpool_daemon_draining 0",
        "houndpool_daemon_connections_open 1",
        "houndpool_sandbox_layer{layer=\"seccomp\",status=",
        "# TYPE houndpool_pool_in_flight gauge",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    assert_eq!(d.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(d.get("/readyz"), (200, "ready\n".into()));
    assert_eq!(d.get("/nope").0, 404);
    let (status, _) = http_request(
        d.ops,
        "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 405);
    let (status, _) = http_request(d.ops, "garbage\r\n\r\n").unwrap();
    assert_eq!(status, 400);
}

#[test]
fn houndd_submit_prints_one_line_per_file() {
    let d = Daemon::start(&[]);
    let a = d.dir.path().join("a.bin");
    let b = d.dir.path().join("b.bin");
    std::fs::write(&a, b"GET /etc/passwd HTTP/1.1\r\n\r\n".repeat(10)).unwrap();
    std::fs::write(&b, b"DELETE / HTTP/1.1\r\n\r\n").unwrap();
    let out = Command::new(houndd_binary())
        .arg("submit")
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["result"], "completed", "{l}");
        let key = l["key"].as_str().unwrap();
        assert!(object_exists(&d.dir.path().join("cold"), key), "{key}");
    }
    // A refused file makes the exit status 1.
    let empty = d.dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let out = Command::new(houndd_binary())
        .args(["submit", "--socket"])
        .arg(&d.socket)
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused (empty_evidence)"));
}

#[test]
fn config_check_prints_the_effective_configuration_or_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(&file, "").unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(houndd_binary());
        cmd.args(["config", "check"]).arg(&file);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOUNDPOOL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let out = run(&[("HOUNDPOOL_DAEMON_SOCKET", "/tmp/x.sock")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[pool]\nsize = \"auto\""), "{text}");
    assert!(text.contains("socket = \"/tmp/x.sock\""), "{text}");
    assert!(text.contains("[ops]\naddr = \"127.0.0.1:9464\""), "{text}");

    let out = run(&[("HOUNDPOOL_POOL_SIZE", "0")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("pool.size (from HOUNDPOOL_POOL_SIZE) = \"0\"") && err.contains("1 to 256"),
        "{err}"
    );
    std::fs::write(&file, "[cold]\nbackend = \"tape\"\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cold.backend") && err.contains("tape") && err.contains("\"s3\""),
        "{err}"
    );
    let _ = Duration::ZERO;
}
