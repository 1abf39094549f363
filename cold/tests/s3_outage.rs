//! Outages of a real S3 server: puts spool, spooled envelopes stay readable, the drainer
//! uploads them under their own keys once the server is back, erasure wins over the spool.

mod s3_support;

use houndpool_cold::s3::{S3Store, S3Tuning};
use houndpool_cold::ColdError;
use houndpool_cold::{ColdStore, PutOutcome};
use s3_support::{bytes, fast_tuning, spool_files, Server, AK, SK};

/// Test stand-in for `envelope::verify`: accepts bodies that start with "OK".
fn accept_ok(b: &[u8]) -> Result<(), ColdError> {
    if b.starts_with(b"OK") {
        Ok(())
    } else {
        Err(ColdError::ColdUnavailable {
            reason: "test verifier refused".into(),
        })
    }
}

fn env(seed: u64, len: usize) -> Vec<u8> {
    let mut v = b"OK".to_vec();
    v.extend(bytes(seed, len));
    v
}

#[test]
fn server_stopped_mid_run_spools_then_drains_under_the_same_keys() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let mut s = server.store(Some(&spool_dir), 64 << 20);
    s.set_spool_verifier(accept_ok);

    let a = env(1, 1000);
    assert_eq!(s.put("ev/a.thcs", &a).unwrap(), PutOutcome::Stored);

    server.stop();
    let b = env(2, 200_000);
    let c = env(3, 10);
    assert_eq!(s.put("ev/b.thcs", &b).unwrap(), PutOutcome::Spooled);
    assert_eq!(s.put("ev/c.thcs", &c).unwrap(), PutOutcome::Spooled);
    assert_eq!(spool_files(&spool_dir).len(), 2);
    assert_eq!(s.spooled().unwrap(), 2);

    // A restore right after a spooled evacuate works while the target is still down.
    assert_eq!(s.get("ev/b.thcs", b.len()).unwrap(), b);
    assert!(matches!(
        s.get("ev/b.thcs", b.len() - 1),
        Err(ColdError::ObjectTooLarge { .. })
    ));
    // What only the target has is unavailable, typed as such.
    assert!(matches!(
        s.get("ev/a.thcs", 10_000),
        Err(ColdError::ColdUnavailable { .. })
    ));
    assert!(matches!(
        s.list("ev/"),
        Err(ColdError::ColdUnavailable { .. })
    ));

    // Draining while the target is down uploads nothing and loses nothing.
    let r = s.drain_spool(100).unwrap();
    assert_eq!((r.uploaded, r.remaining, r.quarantined), (0, 2, 0));
    assert!(r.unavailable.is_some());
    assert_eq!(spool_files(&spool_dir).len(), 2, "claim was put back");

    server.restart();
    // list shows spooled keys too, before they are uploaded.
    assert_eq!(
        s.list("ev/").unwrap(),
        vec!["ev/a.thcs", "ev/b.thcs", "ev/c.thcs"]
    );
    let r = s.drain_spool(1).unwrap();
    assert_eq!((r.uploaded, r.remaining, r.quarantined), (1, 1, 0));
    let r = s.drain_spool(100).unwrap();
    assert_eq!((r.uploaded, r.remaining, r.quarantined), (1, 0, 0));
    assert_eq!(r.unavailable, None);
    assert!(spool_files(&spool_dir).is_empty(), "spool not emptied");

    // The objects are on the server at their keys, byte for byte, and nowhere else.
    assert_eq!(std::fs::read(server.object_path("ev/b.thcs")).unwrap(), b);
    assert_eq!(std::fs::read(server.object_path("ev/c.thcs")).unwrap(), c);
    assert_eq!(
        s.list("").unwrap(),
        vec!["ev/a.thcs", "ev/b.thcs", "ev/c.thcs"]
    );
    assert_eq!(s.get("ev/c.thcs", 100).unwrap(), c);

    // Erase of spooled-and-uploaded objects.
    assert!(s.delete("ev/b.thcs").unwrap());
    assert!(s.delete("ev/c.thcs").unwrap());
    assert!(!server.object_path("ev/b.thcs").exists());
    assert!(matches!(
        s.get("ev/c.thcs", 100),
        Err(ColdError::NotFound { .. })
    ));
    assert_eq!(s.list("ev/").unwrap(), vec!["ev/a.thcs"]);
    // Draining again finds nothing.
    assert_eq!(s.drain_spool(100).unwrap().uploaded, 0);
}

#[test]
fn erasing_a_spooled_envelope_before_upload_means_it_is_never_uploaded() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 1 << 20);
    s.set_spool_verifier(accept_ok);
    server.stop();
    assert_eq!(
        s.put("ev/d.thcs", &env(4, 10)).unwrap(),
        PutOutcome::Spooled
    );
    // Erasure needs the target too (it may hold an older copy): unavailable, but the local
    // copy is gone already.
    assert!(matches!(
        s.delete("ev/d.thcs"),
        Err(ColdError::ColdUnavailable { .. })
    ));
    // No record is left; the erasure's tombstone is (docs/S3.md, "Erasure wins").
    let left = spool_files(spool.path());
    assert!(left.len() == 1 && left[0].ends_with(".erased"), "{left:?}");
    assert_eq!(
        s.put("ev/e.thcs", &env(5, 10)).unwrap(),
        PutOutcome::Spooled
    );
    server.restart();
    assert!(s.delete("ev/e.thcs").unwrap(), "existed in the spool");
    let r = s.drain_spool(100).unwrap();
    assert_eq!((r.uploaded, r.remaining), (0, 0));
    assert!(!server.object_path("ev/d.thcs").exists());
    assert!(!server.object_path("ev/e.thcs").exists());
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn a_spooled_record_holds_its_key_against_direct_puts_and_drainers() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 1 << 20);
    s.set_spool_verifier(accept_ok);
    server.stop();
    assert_eq!(s.put("ev/k.thcs", b"OK old").unwrap(), PutOutcome::Spooled);
    server.restart();
    // The spooled evidence was reported stored: other bytes never replace it, the same
    // bytes are an idempotent success.
    assert!(matches!(
        s.put("ev/k.thcs", b"OK new"),
        Err(ColdError::AlreadyExists { .. })
    ));
    assert_eq!(s.put("ev/k.thcs", b"OK old").unwrap(), PutOutcome::Spooled);
    assert_eq!(s.drain_spool(10).unwrap().uploaded, 1);
    assert!(matches!(
        s.put("ev/k.thcs", b"OK new"),
        Err(ColdError::AlreadyExists { .. })
    ));
    assert_eq!(s.get("ev/k.thcs", 100).unwrap(), b"OK old");

    // A drainer uploading a claimed record races direct puts of other bytes from another
    // store on the same spool: whatever the interleaving, the spooled version ends up at the
    // target and every direct put is refused.
    for round in 0..5 {
        let key = format!("ev/race-{round}.thcs");
        server.stop();
        assert_eq!(s.put(&key, b"OK spooled").unwrap(), PutOutcome::Spooled);
        server.restart();
        let mut direct = server.store(Some(spool.path()), 1 << 20);
        std::thread::scope(|scope| {
            let drainer = scope.spawn(|| s.drain_spool(10).unwrap());
            for _ in 0..5 {
                match direct.put(&key, b"OK direct") {
                    Err(ColdError::AlreadyExists { .. }) => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
            drainer.join().unwrap();
        });
        assert_eq!(
            std::fs::read(server.object_path(&key)).unwrap(),
            b"OK spooled"
        );
    }
    assert!(spool_files(spool.path()).is_empty());
}

#[test]
fn a_full_spool_or_no_spool_is_unavailable() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    // Room for one small record only.
    let mut s = server.store(Some(spool.path()), 200);
    let mut bare = server.store(None, 0);
    server.stop();
    assert_eq!(s.put("ev/1.thcs", b"OK tiny").unwrap(), PutOutcome::Spooled);
    match s.put("ev/2.thcs", &env(6, 500)) {
        Err(ColdError::ColdUnavailable { reason }) => {
            assert!(reason.contains("spool full"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(spool_files(spool.path()).len(), 1, "nothing partial left");
    assert!(matches!(
        bare.put("ev/3.thcs", b"OK"),
        Err(ColdError::ColdUnavailable { .. })
    ));
}

#[test]
fn records_failing_verification_are_quarantined_not_uploaded() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 1 << 20);
    s.set_spool_verifier(accept_ok);
    server.stop();
    assert_eq!(
        s.put("ev/good.thcs", b"OK good").unwrap(),
        PutOutcome::Spooled
    );
    assert_eq!(
        s.put("ev/bad.thcs", b"corrupt").unwrap(),
        PutOutcome::Spooled
    );
    server.restart();
    let r = s.drain_spool(10).unwrap();
    assert_eq!((r.uploaded, r.remaining, r.quarantined), (1, 0, 1));
    assert!(server.object_path("ev/good.thcs").exists());
    assert!(!server.object_path("ev/bad.thcs").exists());
    assert_eq!(spool_files(&spool.path().join("quarantine")).len(), 1);
}

#[test]
fn concurrent_drainers_upload_each_record_once() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 64 << 20);
    server.stop();
    let n = 40;
    for i in 0..n {
        let key = format!("ev/c{i:02}.thcs");
        assert_eq!(s.put(&key, &env(i, 100)).unwrap(), PutOutcome::Spooled);
    }
    server.restart();
    let drainers: Vec<_> = (0..3)
        .map(|_| {
            let mut d = server.store(Some(spool.path()), 64 << 20);
            d.set_spool_verifier(accept_ok);
            std::thread::spawn(move || d.drain_spool(usize::MAX).unwrap())
        })
        .collect();
    let reports: Vec<_> = drainers.into_iter().map(|h| h.join().unwrap()).collect();
    let uploaded: usize = reports.iter().map(|r| r.uploaded).sum();
    assert_eq!(uploaded, n as usize, "{reports:?}");
    assert!(reports
        .iter()
        .all(|r| r.quarantined == 0 && r.unavailable.is_none()));
    assert!(spool_files(spool.path()).is_empty());
    for i in 0..n {
        let key = format!("ev/c{i:02}.thcs");
        assert_eq!(
            std::fs::read(server.object_path(&key)).unwrap(),
            env(i, 100)
        );
    }
    assert_eq!(s.list("ev/").unwrap().len(), n as usize);
}

/// Up to `concurrency` (8 here) records are uploaded at once. The server is killed in the
/// middle of such a drain: the drain stops with the target unavailable, every record it had
/// claimed is uploaded or back in the spool (no claim is left to go stale), and nothing is
/// lost; once the server is back, the rest is drained under the same keys.
#[test]
fn an_outage_in_the_middle_of_a_concurrent_drain_loses_nothing_and_leaves_no_claim() {
    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 256 << 20);
    s.set_spool_verifier(accept_ok);
    server.stop();
    let n = 300;
    let key = |i: u64| format!("ev/o{i:03}.thcs");
    // One attempt per put while the server is down: each is spooled at once.
    let mut filler = S3Store::open_with(
        &server.target_with(AK, SK, Some(spool.path()), 256 << 20),
        S3Tuning {
            attempts: 1,
            ..fast_tuning()
        },
    )
    .unwrap();
    for i in 0..n {
        assert_eq!(
            filler.put(&key(i), &env(i, 20_000)).unwrap(),
            PutOutcome::Spooled
        );
    }
    server.restart();
    let first = std::thread::scope(|scope| {
        let drainer = scope.spawn(|| s.drain_spool(usize::MAX));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while spool_files(spool.path()).len() > n as usize - 40 {
            assert!(
                std::time::Instant::now() < deadline,
                "the drain made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.stop();
        drainer.join().unwrap()
    })
    .unwrap();
    assert!(
        first.unavailable.is_some(),
        "the outage ended the drain: {first:?}"
    );
    let left = spool_files(spool.path());
    assert!(
        left.iter().all(|f| f.ends_with(".spool")),
        "only pending records remain, no claim: {left:?}"
    );
    assert_eq!(first.remaining, left.len());
    assert!(!left.is_empty(), "the drain ended before the outage");
    // Every key is on the server (byte for byte) or still spooled, or both (an upload whose
    // answer was lost with the server is put back, and uploaded again later).
    let on_server = (0..n)
        .filter(|&i| match std::fs::read(server.object_path(&key(i))) {
            Ok(b) => {
                assert_eq!(b, env(i, 20_000), "{}", key(i));
                true
            }
            Err(_) => false,
        })
        .count();
    assert!(on_server >= first.uploaded, "{on_server} < {first:?}");
    assert!(
        on_server + left.len() >= n as usize,
        "{on_server} + {} < {n}",
        left.len()
    );

    server.restart();
    let rest = s.drain_spool(usize::MAX).unwrap();
    assert_eq!((rest.remaining, rest.quarantined), (0, 0), "{rest:?}");
    assert_eq!(rest.unavailable, None);
    assert!(spool_files(spool.path()).is_empty());
    for i in 0..n {
        assert_eq!(
            std::fs::read(server.object_path(&key(i))).unwrap(),
            env(i, 20_000)
        );
    }
}

/// Whoever can write the spool directory chooses a file's length (docs/SECURITY.md: any hound
/// of the pool). A well-formed record (its key's name, header and an envelope the verifier
/// accepts) of 300 MiB, sparse, is longer than any record of the largest envelope: the drain
/// quarantines it without reading it (read, it would be uploaded), and drains the rest.
#[test]
fn a_record_longer_than_any_envelope_is_quarantined_unread() {
    use sha2::{Digest, Sha256};
    use std::io::Write as _;

    let mut server = Server::start();
    let spool = tempfile::tempdir().unwrap();
    let mut s = server.store(Some(spool.path()), 64 << 20);
    s.set_spool_verifier(accept_ok);
    server.stop();
    assert_eq!(
        s.put("ev/ok.thcs", &env(5, 100)).unwrap(),
        PutOutcome::Spooled
    );
    let key = "ev/big.thcs";
    let stem = hex::encode(Sha256::digest(key.as_bytes()));
    let planted = spool.path().join(format!("{stem}.spool"));
    let mut f = std::fs::File::create(&planted).unwrap();
    f.write_all(b"HPSPOOL1").unwrap();
    f.write_all(&(key.len() as u16).to_be_bytes()).unwrap();
    f.write_all(key.as_bytes()).unwrap();
    f.write_all(b"OK").unwrap();
    f.set_len(300 << 20).unwrap();
    drop(f);
    server.restart();
    let r = s.drain_spool(10).unwrap();
    assert_eq!((r.uploaded, r.quarantined, r.remaining), (1, 1, 0), "{r:?}");
    assert!(!planted.exists());
    assert!(!server.object_path(key).exists(), "never uploaded");
    let q = spool_files(&spool.path().join("quarantine"));
    assert!(q.len() == 1 && q[0].starts_with(&stem), "{q:?}");
    assert_eq!(
        std::fs::read(server.object_path("ev/ok.thcs")).unwrap(),
        env(5, 100)
    );
}
