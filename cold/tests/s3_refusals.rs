//! Refusals by a real S3 server are typed errors and never fill the spool.

mod s3_support;

use houndpool_cold::s3::S3Store;
use houndpool_cold::ColdError;
use houndpool_cold::ColdStore;
use s3_support::{fast_tuning, spool_files, Server, AK, SK};
use std::time::{Duration, Instant};

fn assert_rejected(r: Result<impl std::fmt::Debug, ColdError>, op: &str, statuses: &[u16]) {
    match r {
        Err(ColdError::ColdRejected {
            op: got_op, status, ..
        }) => {
            assert_eq!(got_op, op);
            assert!(
                statuses.contains(&status),
                "status {status} not in {statuses:?}"
            );
        }
        other => panic!("expected ColdRejected for {op}, got {other:?}"),
    }
}

#[test]
fn wrong_credentials_are_rejected_and_never_spooled() {
    let server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    for (ak, sk) in [(AK, "wrong-secret"), ("unknown-key", SK)] {
        let target = server.target_with(ak, sk, Some(&spool_dir), 1 << 20);
        // A long backoff: if a refusal were retried, the elapsed time would show it.
        let mut tuning = fast_tuning();
        tuning.base_delay = Duration::from_secs(4);
        tuning.max_delay = Duration::from_secs(4);
        tuning.retry_budget = Duration::from_secs(20);
        let mut s = S3Store::open_with(&target, tuning).unwrap();
        let started = Instant::now();
        // A put is create-only: its HEAD check is the first request the server refuses.
        assert_rejected(s.put("ev/a.thcs", b"data"), "head", &[403]);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a refusal was retried"
        );
        assert!(
            spool_files(&spool_dir).is_empty(),
            "a refused put was spooled"
        );
        assert_rejected(s.get("ev/a.thcs", 10), "get", &[403]);
        assert_rejected(s.list("ev/"), "list", &[403]);
        assert_rejected(s.delete("ev/a.thcs"), "head", &[403]);
        assert_eq!(s.drain_spool(10).unwrap().remaining, 0);
    }
    assert!(!server.object_path("ev/a.thcs").exists());
}

#[test]
fn a_missing_bucket_is_rejected_not_spooled() {
    let server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut target = server.target_with(AK, SK, Some(spool.path()), 1 << 20);
    target.bucket = "no-such-bucket".into();
    let mut s = S3Store::open_with(&target, fast_tuning()).unwrap();
    assert_rejected(s.put("ev/a.thcs", b"data"), "put", &[404]);
    assert!(spool_files(spool.path()).is_empty());
    // A missing bucket on GET is a configuration error, not a missing object.
    assert_rejected(s.get("ev/a.thcs", 10), "get", &[404]);
}

/// The Content-MD5 header the store sends is what protects uploads from damage in transit;
/// check that the test server really enforces it (400 BadDigest), with a hand-made request.
#[test]
fn the_server_refuses_a_body_that_does_not_match_its_content_md5() {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    let server = Server::start();
    let bucket = Bucket::new(
        server.endpoint().parse().unwrap(),
        UrlStyle::Path,
        s3_support::BUCKET,
        "us-east-1",
    )
    .unwrap();
    let creds = Credentials::new(AK, SK);
    // MD5 of "hello", sent with "hellp".
    let md5 = "XUFAKrxLKna5cZ2REBfFkg==";
    let mut action = bucket.put_object(Some(&creds), "ev/damaged.thcs");
    action.headers_mut().insert("content-md5", md5);
    let url = action.sign(Duration::from_secs(60));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .put(url.as_str())
        .header("content-md5", md5)
        .send(&b"hellp"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(!server.object_path("ev/damaged.thcs").exists());
    // The same request with the right body is accepted.
    let resp = agent
        .put(url.as_str())
        .header("content-md5", md5)
        .send(&b"hello"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// HTTPS goes through rustls with the built-in web PKI roots: a self-signed server is a
/// final refusal (status 0), neither retried nor spooled.
#[test]
fn an_untrusted_https_endpoint_is_rejected_not_spooled() {
    let server = Server::start_tls();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 1 << 20);
    match s.put("ev/a.thcs", b"data") {
        Err(ColdError::ColdRejected { op, status, reason }) => {
            // The create-only HEAD check is the first request; TLS refuses it.
            assert_eq!((op, status), ("head", 0));
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(spool_files(spool.path()).is_empty());
    assert!(!server.object_path("ev/a.thcs").exists());
}
