//! The filesystem cold store: round trips, listing, deletion, limits, key validation, and
//! atomicity under failures and concurrent readers.

use std::path::Path;

use houndpool_shared::cold::fs::FsStore;
use houndpool_shared::cold::{self, ColdStore, PutOutcome};
use houndpool_shared::protocol::messages::ColdTarget;
use houndpool_shared::SharedError;

fn store() -> (tempfile::TempDir, FsStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("cold")).unwrap();
    (dir, store)
}

/// Every file name below `root`, recursively, relative with '/' separators.
fn all_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = format!("{rel}{}", e.file_name().to_str().unwrap());
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), format!("{name}/")));
            }
            out.push(name);
        }
    }
    out.sort();
    out
}

fn temp_files(root: &Path) -> Vec<String> {
    all_names(root)
        .into_iter()
        .filter(|n| n.rsplit('/').next().unwrap().starts_with(".tmp-"))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn open_creates_and_canonicalises_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let twisty = dir.path().join("a/b/../c/root");
    let store = FsStore::open(&twisty).unwrap();
    let canonical = dir.path().canonicalize().unwrap().join("a/c/root");
    assert_eq!(store.root(), canonical);
    assert!(canonical.is_dir());
    assert_eq!(
        store.describe(),
        format!("filesystem {}", canonical.display())
    );
    // Opening again is fine; opening a regular file as root is not.
    FsStore::open(&twisty).unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        FsStore::open(&file),
        Err(SharedError::ColdIo { .. })
    ));
}

#[test]
fn round_trip_overwrite_and_no_temp_files_left() {
    let (_d, mut s) = store();
    let key = "evidence/2026/0190a0b0-0000-7000-8000-000000000001.thcs";
    assert_eq!(s.put(key, b"first version").unwrap(), PutOutcome::Stored);
    assert_eq!(s.get(key, 1024).unwrap(), b"first version");
    assert_eq!(std::fs::read(s.root().join(key)).unwrap(), b"first version");
    s.put(key, b"second").unwrap();
    assert_eq!(s.get(key, 1024).unwrap(), b"second");
    s.put("top-level.thcs", b"").unwrap();
    assert_eq!(s.get("top-level.thcs", 0).unwrap(), b"");
    assert!(temp_files(s.root()).is_empty(), "{:?}", all_names(s.root()));
}

#[test]
fn list_filters_by_prefix_across_nested_directories() {
    let (_d, mut s) = store();
    let keys = [
        "ev/2025/a.thcs",
        "ev/2026/b.thcs",
        "ev/2026/deep/c.thcs",
        "ev/top.thcs",
        "other/d.thcs",
        "root.thcs",
    ];
    for k in keys {
        s.put(k, k.as_bytes()).unwrap();
    }
    // A stale temp file from a crashed writer and an empty directory are not objects.
    std::fs::write(s.root().join("ev/2026/.tmp-1-deadbeef"), b"partial").unwrap();
    std::fs::create_dir_all(s.root().join("ev/empty")).unwrap();

    assert_eq!(sorted(s.list("").unwrap()), keys);
    assert_eq!(
        sorted(s.list("ev/").unwrap()),
        [
            "ev/2025/a.thcs",
            "ev/2026/b.thcs",
            "ev/2026/deep/c.thcs",
            "ev/top.thcs"
        ]
    );
    assert_eq!(
        sorted(s.list("ev/2026/").unwrap()),
        ["ev/2026/b.thcs", "ev/2026/deep/c.thcs"]
    );
    // A prefix that ends inside a segment.
    assert_eq!(
        sorted(s.list("ev/202").unwrap()),
        ["ev/2025/a.thcs", "ev/2026/b.thcs", "ev/2026/deep/c.thcs"]
    );
    assert_eq!(s.list("ev/t").unwrap(), ["ev/top.thcs"]);
    assert_eq!(
        s.list("ev/2026/deep/c.thcs").unwrap(),
        ["ev/2026/deep/c.thcs"]
    );
    assert!(s.list("nothing/").unwrap().is_empty());
    assert!(s.list("ev/empty/").unwrap().is_empty());
}

#[test]
fn delete_twice_then_get_is_not_found() {
    let (_d, mut s) = store();
    s.put("ev/x.thcs", b"data").unwrap();
    assert!(s.delete("ev/x.thcs").unwrap());
    assert!(!s.root().join("ev/x.thcs").exists());
    assert!(!s.delete("ev/x.thcs").unwrap());
    assert!(matches!(
        s.get("ev/x.thcs", 100),
        Err(SharedError::NotFound { key }) if key == "ev/x.thcs"
    ));
    // A key naming a directory is not an object.
    s.put("ev/sub/y.thcs", b"y").unwrap();
    assert!(!s.delete("ev/sub").unwrap());
    assert!(s.root().join("ev/sub/y.thcs").exists());
}

#[test]
fn get_of_missing_keys_is_not_found() {
    let (_d, mut s) = store();
    for key in ["never.thcs", "no/such/dir.thcs"] {
        assert!(
            matches!(s.get(key, 10), Err(SharedError::NotFound { .. })),
            "{key}"
        );
    }
    // Parent path runs through a regular file (ENOTDIR): still just not found.
    s.put("file.thcs", b"x").unwrap();
    assert!(matches!(
        s.get("file.thcs/child", 10),
        Err(SharedError::NotFound { .. })
    ));
    assert!(!s.delete("file.thcs/child").unwrap());
    // A directory is not an object either.
    s.put("d/e.thcs", b"x").unwrap();
    assert!(matches!(s.get("d", 10), Err(SharedError::NotFound { .. })));
}

#[test]
fn objects_above_the_limit_are_refused() {
    let (_d, mut s) = store();
    s.put("big.thcs", &[7u8; 1000]).unwrap();
    match s.get("big.thcs", 999) {
        Err(SharedError::ObjectTooLarge { key, len, max }) => {
            assert_eq!((key.as_str(), len, max), ("big.thcs", 1000, 999));
        }
        other => panic!("expected ObjectTooLarge, got {other:?}"),
    }
    assert_eq!(s.get("big.thcs", 1000).unwrap().len(), 1000);
    assert_eq!(s.get("big.thcs", usize::MAX).unwrap().len(), 1000);
}

#[test]
fn invalid_keys_are_refused_everywhere() {
    let (_d, mut s) = store();
    for key in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a//b",
        "./a",
        "a\0b",
        ".tmp-123-abc",
        "ev/.tmp-1-2/x",
    ] {
        let invalid = |r: Result<(), SharedError>| matches!(r, Err(SharedError::InvalidKey { .. }));
        assert!(invalid(s.put(key, b"x").map(drop)), "put {key:?}");
        assert!(invalid(s.get(key, 10).map(drop)), "get {key:?}");
        assert!(invalid(s.delete(key).map(drop)), "delete {key:?}");
    }
    let long = "k".repeat(cold::MAX_KEY_LEN + 1);
    assert!(matches!(
        s.put(&long, b"x"),
        Err(SharedError::InvalidKey { .. })
    ));
    assert!(all_names(s.root()).is_empty(), "{:?}", all_names(s.root()));
}

#[test]
fn failed_directory_creation_leaves_nothing_visible() {
    let (_d, mut s) = store();
    // The key's parent path is an existing regular file: creating the directory fails (the
    // test runs as root, so permission bits would not stop anything).
    std::fs::write(s.root().join("blocker"), b"not a directory").unwrap();
    for key in ["blocker/x.thcs", "blocker/sub/x.thcs"] {
        match s.put(key, b"envelope") {
            Err(SharedError::ColdIo { key: k, .. }) => assert_eq!(k, key),
            other => panic!("expected ColdIo for {key}, got {other:?}"),
        }
    }
    assert_eq!(all_names(s.root()), ["blocker"]);
    assert!(s.list("").unwrap() == ["blocker"]);
}

#[test]
fn failed_rename_after_writing_removes_the_temp_file() {
    let (_d, mut s) = store();
    // The final name is a non-empty directory: the temp file is created, written and
    // fsynced, then rename(2) fails (EISDIR). The temp file must be gone afterwards.
    std::fs::create_dir_all(s.root().join("ev/target.thcs/inner")).unwrap();
    match s.put("ev/target.thcs", &[1u8; 4096]) {
        Err(SharedError::ColdIo { op, key, .. }) => {
            assert_eq!(op, "put: rename");
            assert_eq!(key, "ev/target.thcs");
        }
        other => panic!("expected ColdIo, got {other:?}"),
    }
    assert!(temp_files(s.root()).is_empty(), "{:?}", all_names(s.root()));
    assert_eq!(
        all_names(s.root()),
        ["ev", "ev/target.thcs", "ev/target.thcs/inner"]
    );
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn readers_never_see_a_partial_object_while_it_is_replaced() {
    let (_d, mut writer) = store();
    let root = writer.root().to_path_buf();
    let key = "ev/hot.thcs";
    let a = vec![b'a'; 256 * 1024];
    let b = vec![b'b'; 128 * 1024];
    writer.put(key, &a).unwrap();

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reader = FsStore::open(&root).unwrap();
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = reader.get(key, 1 << 20).unwrap();
                assert!(got == a || got == b, "torn read of {} bytes", got.len());
                reads += 1;
            }
            reads
        });
        for i in 0..60 {
            writer.put(key, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert!(temp_files(&root).is_empty());
}

#[test]
fn opened_through_the_cold_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = ColdTarget::Filesystem {
        root: dir.path().join("via-target").to_str().unwrap().to_owned(),
        prefix: "ev/".into(),
    };
    let mut store = cold::open(&target).unwrap();
    let key = cold::object_key("ev/", &[0x42; 16]);
    store.put(&key, b"envelope").unwrap();
    assert_eq!(store.list("ev/").unwrap(), std::slice::from_ref(&key));
    assert_eq!(store.get(&key, 100).unwrap(), b"envelope");
    assert!(store.describe().starts_with("filesystem /"));
}
