//! The filesystem cold store: round trips, listing, deletion, limits, key validation, and
//! atomicity under failures and concurrent readers.

use std::path::Path;

use houndpool_cold::fs::FsStore;
use houndpool_cold::ColdError;
use houndpool_cold::{self as cold, ColdStore, PutOutcome};
use houndpool_protocol::control::ColdTarget;

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

/// Temp files (not the temp directory itself) anywhere below `root`.
fn temp_files(root: &Path) -> Vec<String> {
    all_names(root)
        .into_iter()
        .filter(|n| n.rsplit('/').next().unwrap().starts_with(".tmp-"))
        .filter(|n| !root.join(n).is_dir())
        .collect()
}

/// Every name below `root` but the (possibly present) temp directory.
fn visible_names(root: &Path) -> Vec<String> {
    all_names(root)
        .into_iter()
        .filter(|n| n != ".writing")
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
        Err(ColdError::ColdIo { .. })
    ));
}

#[test]
fn round_trip_create_only_and_no_temp_files_left() {
    let (_d, mut s) = store();
    let key = "evidence/2026/0190a0b0-0000-7000-8000-000000000001.thcs";
    assert_eq!(s.put(key, b"first version").unwrap(), PutOutcome::Stored);
    assert_eq!(s.get(key, 1024).unwrap(), b"first version");
    assert_eq!(std::fs::read(s.root().join(key)).unwrap(), b"first version");
    // The same bytes again: idempotent success (the retry after a crash).
    assert_eq!(s.put(key, b"first version").unwrap(), PutOutcome::Stored);
    // Other bytes (longer, shorter, same length): refused, the object unchanged.
    for other in [&b"second"[..], b"first version, longer", b"FIRST VERSION"] {
        match s.put(key, other) {
            Err(ColdError::AlreadyExists { key: k }) => assert_eq!(k, key),
            got => panic!("expected AlreadyExists, got {got:?}"),
        }
    }
    assert_eq!(s.get(key, 1024).unwrap(), b"first version");
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
        Err(ColdError::NotFound { key }) if key == "ev/x.thcs"
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
            matches!(s.get(key, 10), Err(ColdError::NotFound { .. })),
            "{key}"
        );
    }
    // Parent path runs through a regular file (ENOTDIR): still just not found.
    s.put("file.thcs", b"x").unwrap();
    assert!(matches!(
        s.get("file.thcs/child", 10),
        Err(ColdError::NotFound { .. })
    ));
    assert!(!s.delete("file.thcs/child").unwrap());
    // A directory is not an object either.
    s.put("d/e.thcs", b"x").unwrap();
    assert!(matches!(s.get("d", 10), Err(ColdError::NotFound { .. })));
}

#[test]
fn objects_above_the_limit_are_refused() {
    let (_d, mut s) = store();
    s.put("big.thcs", &[7u8; 1000]).unwrap();
    match s.get("big.thcs", 999) {
        Err(ColdError::ObjectTooLarge { key, len, max }) => {
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
        let invalid = |r: Result<(), ColdError>| matches!(r, Err(ColdError::InvalidKey { .. }));
        assert!(invalid(s.put(key, b"x").map(drop)), "put {key:?}");
        assert!(invalid(s.get(key, 10).map(drop)), "get {key:?}");
        assert!(invalid(s.delete(key).map(drop)), "delete {key:?}");
    }
    let long = "k".repeat(cold::MAX_KEY_LEN + 1);
    assert!(matches!(
        s.put(&long, b"x"),
        Err(ColdError::InvalidKey { .. })
    ));
    assert!(
        visible_names(s.root()).is_empty(),
        "{:?}",
        all_names(s.root())
    );
}

#[test]
fn failed_directory_creation_leaves_nothing_visible() {
    let (_d, mut s) = store();
    // The key's parent path is an existing regular file: creating the directory fails (the
    // test runs as root, so permission bits would not stop anything).
    std::fs::write(s.root().join("blocker"), b"not a directory").unwrap();
    for key in ["blocker/x.thcs", "blocker/sub/x.thcs"] {
        match s.put(key, b"envelope") {
            Err(ColdError::ColdIo { key: k, .. }) => assert_eq!(k, key),
            other => panic!("expected ColdIo for {key}, got {other:?}"),
        }
    }
    assert_eq!(visible_names(s.root()), ["blocker"]);
    assert!(s.list("").unwrap() == ["blocker"]);
}

#[test]
fn failed_link_after_writing_removes_the_temp_file() {
    let (_d, mut s) = store();
    // The final name is a directory: the temp file is created, written and fsynced, then
    // link(2) finds the name taken by something that is not an object. The temp file must be
    // gone afterwards and the directory untouched.
    std::fs::create_dir_all(s.root().join("ev/target.thcs/inner")).unwrap();
    match s.put("ev/target.thcs", &[1u8; 4096]) {
        Err(ColdError::ColdIo { op, key, .. }) => {
            assert_eq!(op, "put: compare existing");
            assert_eq!(key, "ev/target.thcs");
        }
        other => panic!("expected ColdIo, got {other:?}"),
    }
    assert!(temp_files(s.root()).is_empty(), "{:?}", all_names(s.root()));
    assert_eq!(
        visible_names(s.root()),
        ["ev", "ev/target.thcs", "ev/target.thcs/inner"]
    );
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn concurrent_writers_of_one_key_one_wins_the_others_are_refused_or_idempotent() {
    let (_d, writer) = store();
    let root = writer.root().to_path_buf();
    let key = "ev/hot.thcs";
    // Eight writers race on one key: four with bytes A, four with bytes B. Exactly one
    // version is stored; writers of that version succeed (created or idempotent), writers
    // of the other one get AlreadyExists. Readers meanwhile see nothing or a whole version.
    let a = vec![b'a'; 256 * 1024];
    let b = vec![b'b'; 128 * 1024];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<(bool, Result<PutOutcome, ColdError>)> = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reader = FsStore::open(&root).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match reader.get(key, 1 << 20) {
                    Ok(got) => assert!(got == a || got == b, "torn read of {} bytes", got.len()),
                    Err(ColdError::NotFound { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (root, a, b) = (&root, &a, &b);
                scope.spawn(move || {
                    let mut w = FsStore::open(root).unwrap();
                    let is_a = i % 2 == 0;
                    (is_a, w.put(key, if is_a { a } else { b }))
                })
            })
            .collect();
        let results = writers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
        results
    });
    let stored = std::fs::read(root.join(key)).unwrap();
    let winner_is_a = stored == a;
    assert!(winner_is_a || stored == b);
    for (is_a, r) in results {
        if is_a == winner_is_a {
            assert_eq!(r.unwrap(), PutOutcome::Stored);
        } else {
            assert!(matches!(r, Err(ColdError::AlreadyExists { .. })), "{r:?}");
        }
    }
    assert!(temp_files(&root).is_empty(), "{:?}", all_names(&root));
}

#[test]
fn objects_are_0600_and_directories_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut s = FsStore::open(dir.path().join("new/root")).unwrap();
    s.put("ev/2026/x.thcs", b"envelope").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.root().join("ev/2026/x.thcs")), 0o600);
    for d in ["", "ev", "ev/2026", ".writing"] {
        assert_eq!(mode(&s.root().join(d)), 0o700, "{d:?}");
    }
    assert_eq!(mode(&dir.path().join("new")), 0o700);
}

#[test]
fn sweep_removes_only_temp_files_of_gone_writers() {
    use houndpool_cold::fs::{pid_gone, sweep_temps};
    let (_d, mut s) = store();
    s.put("ev/x.thcs", b"kept").unwrap();
    let tmp = s.root().join(".writing");
    let me = std::process::id();
    // A writer that is gone: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(pid_gone(dead));
    assert!(!pid_gone(me));
    for name in [
        format!(".tmp-{dead}-00000000000000aa"),
        format!(".tmp-{me}-00000000000000bb"),
        ".tmp-notapid-cc".to_string(),
    ] {
        std::fs::write(tmp.join(name), b"partial").unwrap();
    }
    assert_eq!(sweep_temps(s.root(), pid_gone).unwrap(), 1);
    let mut left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            format!(".tmp-{me}-00000000000000bb"),
            ".tmp-notapid-cc".into()
        ]
    );
    assert_eq!(s.get("ev/x.thcs", 10).unwrap(), b"kept");
    // A store that never wrote anything has nothing to sweep.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(sweep_temps(empty.path(), |_| true).unwrap(), 0);
}

/// A hound can create anything beneath the root, so `.writing` may be its symlink to a
/// directory outside the store: the unconfined supervisor's sweep must remove nothing there.
#[test]
fn a_symlinked_temp_directory_never_makes_the_sweep_remove_outside_the_root() {
    use houndpool_cold::fs::sweep_temps;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join(".tmp-1-00000000000000aa");
    std::fs::write(&victim, b"not the store's").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join(".writing")).unwrap();
    let err = sweep_temps(root.path(), |_| true).expect_err("a symlinked .writing is refused");
    assert!(err.to_string().contains(".writing"), "{err}");
    assert!(victim.exists(), "the sweep removed a file outside the root");
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
