//! Round trips against a real S3-compatible server (rclone serve s3, started by the test).

mod s3_support;

use houndpool_cold::ColdError;
use houndpool_cold::{ColdStore, PutOutcome};
use s3_support::{bytes, Server};

#[test]
fn put_get_list_delete_round_trip() {
    let server = Server::start();
    let mut s = server.store(None, 0);
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("ev/empty.thcs".into(), Vec::new()),
        ("ev/small.thcs".into(), bytes(1, 77)),
        ("ev/big.thcs".into(), bytes(2, 3 * 1024 * 1024 + 5)),
        ("ev/sub/dir/x.thcs".into(), bytes(3, 1000)),
        // Characters that need URL encoding in the path and in the signature.
        ("ev/a b+c%d=e&f~g.thcs".into(), bytes(4, 10)),
        ("ev/ünï-cødé.thcs".into(), bytes(5, 10)),
        ("other/y.thcs".into(), bytes(6, 10)),
    ];
    for (k, v) in &objects {
        assert_eq!(s.put(k, v).unwrap(), PutOutcome::Stored, "{k}");
    }
    for (k, v) in &objects {
        assert_eq!(&s.get(k, v.len()).unwrap(), v, "{k}");
    }
    // The bytes really are at the key on the server, not just echoed by a cache.
    assert_eq!(
        std::fs::read(server.object_path("ev/small.thcs")).unwrap(),
        objects[1].1
    );

    let mut want: Vec<String> = objects
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("ev/"))
        .collect();
    want.sort();
    assert_eq!(s.list("ev/").unwrap(), want);
    assert_eq!(s.list("ev/sub/").unwrap(), vec!["ev/sub/dir/x.thcs"]);
    assert!(s.list("nothing/").unwrap().is_empty());
    assert_eq!(s.list("").unwrap().len(), objects.len());

    // Create-only: other bytes under a taken key are refused and the object stays; the same
    // bytes again (a retry after a crash) are an idempotent success.
    let before = s.get("ev/small.thcs", 100).unwrap();
    assert!(matches!(
        s.put("ev/small.thcs", b"replaced"),
        Err(ColdError::AlreadyExists { .. })
    ));
    assert_eq!(s.get("ev/small.thcs", 100).unwrap(), before);
    s.put("ev/small.thcs", &before).unwrap();

    // Erase: existed, then gone, then "did not exist".
    assert!(s.delete("ev/small.thcs").unwrap());
    assert!(matches!(
        s.get("ev/small.thcs", 100),
        Err(ColdError::NotFound { .. })
    ));
    assert!(!s.delete("ev/small.thcs").unwrap());
    assert!(!server.object_path("ev/small.thcs").exists());
    assert!(!s
        .list("ev/")
        .unwrap()
        .contains(&"ev/small.thcs".to_string()));
    assert!(s.describe().contains("bucket=evidence"));
}

#[test]
fn get_refuses_objects_above_the_limit_and_reports_missing_keys() {
    let server = Server::start();
    let mut s = server.store(None, 0);
    let v = bytes(9, 4096);
    s.put("ev/k.thcs", &v).unwrap();
    match s.get("ev/k.thcs", 4095) {
        Err(ColdError::ObjectTooLarge { len, max, .. }) => assert_eq!((len, max), (4096, 4095)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.get("ev/k.thcs", 4096).unwrap(),
        v,
        "exactly the limit is fine"
    );
    assert!(matches!(
        s.get("ev/missing.thcs", 10),
        Err(ColdError::NotFound { .. })
    ));
}

#[test]
fn list_follows_pagination() {
    // ListObjectsV2 returns at most 1000 keys per page.
    let server = Server::start();
    let mut s = server.store(None, 0);
    let n = 1003;
    for i in 0..n {
        s.put(&format!("ev/p/{i:05}.thcs"), &[i as u8]).unwrap();
    }
    let keys = s.list("ev/p/").unwrap();
    assert_eq!(keys.len(), n);
    assert_eq!(keys[0], "ev/p/00000.thcs");
    assert_eq!(keys[n - 1], format!("ev/p/{:05}.thcs", n - 1));
}
