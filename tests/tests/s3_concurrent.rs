//! Concurrent S3 uploads per hound (`cold.s3_concurrency`) against a real rclone server on
//! 127.0.0.1, through real sandboxed hounds: exactly one outcome per job, each hound's
//! completions in request order, every object verifies and holds its job's evidence; and with
//! the server stopped mid-run the spool semantics are unchanged (every evacuation completes,
//! stored or spooled, and the spool drains to the same keys once the server is back).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use houndpool::{Job, JobId, Outcome, OutcomeKind, Receipt};
use houndpool_tests::s3::{free_port, s3_config, Server, BUCKET};
use houndpool_tests::*;

/// Evidence of job `n`: 2 KiB, distinct per job.
fn evidence(n: u32) -> Vec<u8> {
    evidence_of("s3 job ", n, 2048)
}

fn receipt(o: &Outcome) -> &Receipt {
    match &o.result {
        OutcomeKind::Completed(r) => r,
        other => panic!("job {}: expected Completed, got {other:?}", o.job_id),
    }
}

/// Each hound's completions arrive in the order its jobs were submitted (job ids grow with
/// submission, and a hound's ring is a queue).
fn assert_in_request_order_per_hound(outcomes: &[Outcome]) {
    let mut last: HashMap<u32, JobId> = HashMap::new();
    for o in outcomes {
        let hound = receipt(o).hound;
        if let Some(prev) = last.insert(hound, o.job_id) {
            assert!(
                prev < o.job_id,
                "hound {hound}: job {} completed after job {prev}",
                o.job_id
            );
        }
    }
}

/// The stored object of `o` verifies and decodes to `ev`.
fn assert_object(data: &Path, o: &Outcome, ev: &[u8]) {
    let key = receipt(o).key.as_deref().expect("receipt names its key");
    let bytes = std::fs::read(data.join(BUCKET).join(key))
        .unwrap_or_else(|e| panic!("{key} is not stored: {e}"));
    let header = houndpool_protocol::envelope::verify(&bytes)
        .unwrap_or_else(|e| panic!("{key} does not verify: {e}"));
    assert_eq!(Some(header.sha256), receipt(o).sha256, "{key}");
    assert_eq!(
        houndpool_protocol::envelope::decode(&bytes, 1 << 20).unwrap(),
        ev,
        "{key}"
    );
}

#[test]
fn concurrent_uploads_are_exactly_once_in_order_and_verified() {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server::start(port, data.path());
    let (pool, rx) = start(s3_config(data.path(), port, None, 8));

    let mut accepted = Vec::new();
    let mut evidence_of = HashMap::new();
    for n in 0..200 {
        let ev = evidence(n);
        let t = pool.submit(&Job::evacuate(&ev)).unwrap();
        accepted.push(t.job_id);
        evidence_of.insert(t.job_id, ev);
    }
    let outcomes = collect(&rx, accepted.len(), Duration::from_secs(120));
    assert_eq!(outcomes.len(), accepted.len(), "every job has an outcome");
    assert_exactly_one_each(&accepted, &outcomes);
    assert_in_request_order_per_hound(&outcomes);
    for o in &outcomes {
        assert!(!receipt(o).spooled);
        assert_object(data.path(), o, &evidence_of[&o.job_id]);
    }
    let stats = pool.shutdown(Duration::from_secs(10));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.failed, 0);
}

#[test]
fn server_stopped_mid_run_spools_and_drains_as_before() {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(port, data.path());
    let (pool, rx) = start(s3_config(data.path(), port, Some(spool.path()), 8));

    let mut accepted = Vec::new();
    let mut evidence_of = HashMap::new();
    let mut submit = |from: u32, to: u32| {
        for n in from..to {
            let ev = evidence(n);
            let t = pool.submit(&Job::evacuate(&ev)).unwrap();
            accepted.push(t.job_id);
            evidence_of.insert(t.job_id, ev);
        }
    };
    submit(0, 100);
    let mut outcomes = collect(&rx, 20, Duration::from_secs(60));
    server.stop();
    submit(100, 200);
    let total = accepted.len();
    outcomes.extend(collect(
        &rx,
        total - outcomes.len(),
        Duration::from_secs(180),
    ));
    assert_eq!(outcomes.len(), total, "every job has an outcome");
    assert_exactly_one_each(&accepted, &outcomes);
    assert_in_request_order_per_hound(&outcomes);
    let spooled: Vec<&Outcome> = outcomes.iter().filter(|o| receipt(o).spooled).collect();
    assert!(!spooled.is_empty(), "the outage spooled nothing");

    // Back up: idle hounds drain the spool under the same keys.
    let _server = Server::start(port, data.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    for o in &spooled {
        let key = receipt(o).key.clone().unwrap();
        while !data.path().join(BUCKET).join(&key).exists() {
            assert!(
                Instant::now() < deadline,
                "{key} was never uploaded from the spool"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Give the drainer's last rename a moment, then check every object.
    std::thread::sleep(Duration::from_millis(200));
    for o in &outcomes {
        assert_object(data.path(), o, &evidence_of[&o.job_id]);
    }
    let stats = pool.shutdown(Duration::from_secs(10));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.failed, 0);
}
