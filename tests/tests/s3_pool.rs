//! S3 cold storage through real, sandboxed hounds against a real S3-compatible server (rclone,
//! started on 127.0.0.1 by scripts/s3-server.sh): evacuate / restore / erase, then an outage
//! (the envelope is spooled, the outcome says so), then recovery (an idle hound uploads the
//! spool under the same key).

use std::time::{Duration, Instant};

use houndpool::{ColdConfig, Job, OutcomeKind, PoolConfig, S3Target};
use houndpool_tests::s3::{free_port, Server, AK, SK};
use houndpool_tests::*;

fn completed(o: &houndpool::Outcome) -> houndpool::Receipt {
    match &o.result {
        OutcomeKind::Completed(r) => r.clone(),
        other => panic!(
            "{} {:?}: expected Completed, got {other:?}",
            o.job_id, o.kind
        ),
    }
}

#[test]
fn evacuate_restore_erase_and_survive_an_outage_through_sandboxed_hounds() {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(port, data.path());
    let config = PoolConfig {
        cold: ColdConfig::S3(S3Target {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "houndpool".into(),
            prefix: "evidence/".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: AK.into(),
            secret_key: SK.into(),
            session_token: None,
            spool_dir: Some(spool.path().display().to_string()),
            spool_limit_bytes: 64 << 20,
        }),
        ..test_config(data.path())
    };
    let (pool, rx) = start(config);
    // The sandbox holds with the S3 backend too (network restricted to the endpoint's port).
    let report = pool.stats().sandbox.unwrap();
    let landlock = report
        .layers
        .iter()
        .find(|l| l.layer == houndpool::Layer::Landlock)
        .unwrap();
    assert_eq!(
        landlock.status,
        houndpool::LayerStatus::Enforced,
        "{landlock:?}"
    );

    let evidence = houndpool::synth::EvidenceGenerator::new(5).request(20_000);
    let t = pool.submit(&Job::evacuate(&evidence)).unwrap();
    let r = completed(&collect(&rx, 1, Duration::from_secs(20)).pop().unwrap());
    assert!(!r.spooled);
    let key = r.key.unwrap();
    let object = data.path().join("houndpool").join(&key);
    houndpool_protocol::envelope::verify(&std::fs::read(&object).unwrap()).unwrap();

    pool.submit(&Job::restore(t.evidence_id)).unwrap();
    let r = completed(&collect(&rx, 1, Duration::from_secs(20)).pop().unwrap());
    assert_eq!(r.payload.as_deref(), Some(&evidence[..]));
    pool.submit(&Job::erase(t.evidence_id)).unwrap();
    let r = completed(&collect(&rx, 1, Duration::from_secs(20)).pop().unwrap());
    assert_eq!(r.existed, Some(true));
    assert!(!object.exists());

    // Outage: the envelope goes to the spool, and the outcome says so.
    server.stop();
    let t2 = pool.submit(&Job::evacuate(&evidence)).unwrap();
    let r = completed(&collect(&rx, 1, Duration::from_secs(30)).pop().unwrap());
    assert!(r.spooled, "evacuate during an outage must be spooled");
    let key2 = r.key.unwrap();
    let object2 = data.path().join("houndpool").join(&key2);
    assert!(!object2.exists());

    // Recovery: an idle hound drains the spool to the same key.
    let _server = Server::start(port, data.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !object2.exists() {
        assert!(
            Instant::now() < deadline,
            "spooled envelope was not uploaded after the server came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.submit(&Job::restore(t2.evidence_id)).unwrap();
    let r = completed(&collect(&rx, 1, Duration::from_secs(20)).pop().unwrap());
    assert_eq!(r.payload.as_deref(), Some(&evidence[..]));
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.failed, 0);
    assert_no_hounds_left();
}
