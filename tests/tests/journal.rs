//! The filesystem store's commit journal (`cold.fs_commit = "journal"`, the default) with real
//! hounds and real pools:
//! - hounds SIGKILLed mid-batch under load: every `Completed` key restores through a Restore
//!   job while its record may still be in a journal, is a verified key file after a clean
//!   shutdown (which materialised everything, leaving no journal or temp file), and restores
//!   again after a restart; every job got exactly one outcome;
//! - recovery at pool start: a journal of a writer that is gone, with a torn tail, becomes key
//!   files before the first hound starts, the tail ignored;
//! - hostile journals: a huge length field, a key with `..`, a checksummed record that is not
//!   an envelope: skipped, nothing written outside the root, the pool works;
//! - two journals with one key and different envelopes: one is the object, the other is kept
//!   in the conflicts area and `houndd verify` reports it.
//!
//! The order of operations inside a journaled batch (one append, one fdatasync, then the
//! results) is checked by the store's unit test `journal_appends_syncs_then_reports`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use houndpool::{Job, OutcomeKind, PoolConfig, Uuid};
use houndpool_cold::fs::journal::{self, JournalName, JOURNAL_DIR};
use houndpool_tests::*;

/// Evidence of job `n`: 4 KiB, distinct per job.
fn evidence(n: u32) -> Vec<u8> {
    evidence_4k("journal job ", n)
}

/// Every regular file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Journal and temp files left under `root`.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    files_below(root)
        .into_iter()
        .filter(|p| {
            p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with(".tmp-"))
                || p.to_string_lossy().contains("/.writing/")
        })
        .collect()
}

/// A pid no process has now (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Writes `records` as the sealed-or-not journal of writer `pid` created at `created`.
fn write_journal(root: &Path, pid: u32, created: u64, bytes: &[u8]) -> PathBuf {
    let dir = root.join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let name = JournalName {
        created,
        pid,
        random: 7,
        sealed: false,
    };
    let path = dir.join(name.file_name());
    std::fs::write(&path, bytes).unwrap();
    path
}

fn record(out: &mut Vec<u8>, key: &str, envelope: &[u8]) {
    journal::encode_into(out, key, envelope).expect("encodable record");
}

fn restore(
    pool: &houndpool::Pool,
    rx: &crossbeam_channel::Receiver<houndpool::Outcome>,
    id: Uuid,
) -> Vec<u8> {
    pool.submit(&Job::restore(id)).unwrap();
    let o = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("restore outcome");
    match o.result {
        OutcomeKind::Completed(r) => r.payload.expect("restored evidence"),
        other => panic!("restore of {id} failed: {other:?}"),
    }
}

#[test]
fn sigkill_mid_batch_completed_keys_restore_before_and_after_restart() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let config = PoolConfig {
        job_timeout: Duration::from_secs(20),
        ..test_config(&root)
    };
    let (pool, rx) = start(config.clone());
    let KilledRun {
        accepted,
        evidence_of,
        kills,
    } = evacuate_under_kills(&pool, evidence, Duration::from_secs(2));
    let outcomes = collect(&rx, accepted.len(), Duration::from_secs(180));
    let by_id = assert_exactly_one_each(&accepted, &outcomes);
    assert!(kills >= 5, "only {kills} kills");
    let completed: Vec<_> = by_id
        .iter()
        .filter_map(|(id, o)| match &o.result {
            OutcomeKind::Completed(r) => Some((*id, r.key.clone().expect("receipt key"))),
            _ => None,
        })
        .collect();
    assert!(!completed.is_empty(), "nothing completed");
    // While the pool runs (records possibly still in journals): restores through hounds.
    let sample: Vec<_> = completed
        .iter()
        .step_by(completed.len().div_ceil(150))
        .collect();
    for (id, _) in &sample {
        let (evidence_id, ev) = &evidence_of[id];
        assert_eq!(
            &restore(&pool, &rx, *evidence_id),
            ev,
            "restore while running"
        );
    }
    let stats = pool.shutdown(Duration::from_secs(30));
    assert_eq!(stats.journal_conflicts, 0);
    // After a clean shutdown: key files only.
    for (id, key) in &completed {
        let (_, ev) = &evidence_of[id];
        let bytes = std::fs::read(root.join(key))
            .unwrap_or_else(|e| panic!("Completed key {key} is not a key file: {e}"));
        houndpool_protocol::envelope::verify(&bytes)
            .unwrap_or_else(|e| panic!("Completed key {key} does not verify: {e}"));
        assert_eq!(
            &houndpool_protocol::envelope::decode(&bytes, 1 << 20).unwrap(),
            ev
        );
    }
    let left = leftovers(&root);
    assert!(left.is_empty(), "journal or temp files left: {left:?}");
    // A restarted pool (recovery finds nothing) restores them too.
    let (pool, rx) = start(config);
    for (id, _) in &sample {
        let (evidence_id, ev) = &evidence_of[id];
        assert_eq!(
            &restore(&pool, &rx, *evidence_id),
            ev,
            "restore after restart"
        );
    }
    assert_eq!(pool.stats().journal_backlog, 0);
    pool.shutdown(Duration::from_secs(10));
    eprintln!(
        "{} accepted, {} completed, {kills} kills, {} restored twice",
        accepted.len(),
        completed.len(),
        sample.len()
    );
}

#[test]
fn recovery_materialises_a_gone_writers_journal_and_ignores_its_torn_tail() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let mut bytes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let env = houndpool_protocol::envelope::encode(&evidence(i as u32), 6).unwrap();
        record(
            &mut bytes,
            &format!("evidence/{}.thcs", id.hyphenated()),
            &env,
        );
    }
    // A torn record after the complete ones: its header announces more than is there.
    let mut torn = Vec::new();
    record(&mut torn, "evidence/torn.thcs", &[9u8; 500]);
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    let journal = write_journal(&root, dead_pid(), 1, &bytes);

    let (pool, rx) = start(test_config(&root));
    // Recovery ran before the first hound: key files exist, the journal is gone.
    assert!(
        !journal.exists(),
        "journal of a gone writer not materialised"
    );
    for (i, id) in ids.iter().enumerate() {
        let path = root.join(format!("evidence/{}.thcs", id.hyphenated()));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        houndpool_protocol::envelope::verify(&bytes).unwrap();
        assert_eq!(restore(&pool, &rx, *id), evidence(i as u32));
    }
    assert!(!root.join("evidence/torn.thcs").exists());
    pool.shutdown(Duration::from_secs(10));
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

#[test]
fn hostile_journal_is_skipped_without_harm() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let good = houndpool_protocol::envelope::encode(b"good evidence", 6).unwrap();
    let mut bytes = Vec::new();
    record(&mut bytes, "evidence/good.thcs", &good);
    record(&mut bytes, "../escape.thcs", &good);
    record(&mut bytes, "evidence/../../escape2.thcs", &good);
    record(&mut bytes, "/abs.thcs", &good);
    record(
        &mut bytes,
        "evidence/not-an-envelope.thcs",
        b"checksummed, but no THCS",
    );
    let mut huge = Vec::new();
    record(&mut huge, "evidence/huge.thcs", &good);
    huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&huge);
    record(&mut bytes, "evidence/after-huge.thcs", &good);
    let journal = write_journal(&root, dead_pid(), 1, &bytes);

    let (pool, rx) = start(test_config(&root));
    assert!(!journal.exists());
    assert_eq!(
        std::fs::read(root.join("evidence/good.thcs")).unwrap(),
        good
    );
    let files = files_below(dir.path());
    assert_eq!(
        files,
        [root.join("evidence/good.thcs")],
        "nothing else written, inside or outside the root"
    );
    // The pool works.
    let t = pool
        .submit(&Job::evacuate(b"after the hostile journal"))
        .unwrap();
    let o = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(matches!(o.result, OutcomeKind::Completed(_)), "{o:?}");
    assert_eq!(
        restore(&pool, &rx, t.evidence_id),
        b"after the hostile journal"
    );
    pool.shutdown(Duration::from_secs(10));
}

#[test]
fn a_hounds_symlink_never_makes_the_materialiser_write_outside_the_root() {
    let _g = serial();
    // A compromised hound may create symlinks below the store root (its Landlock rule grants
    // every right beneath it) and write any journal. The materialiser runs in the unconfined
    // supervisor: following `evil -> outside` it would create `outside/pwned.thcs` (and an
    // erasure record could make it unlink there). It must not.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    std::fs::write(outside.join("victim"), b"not the store's").unwrap();
    let good = houndpool_protocol::envelope::encode(b"planted evidence", 6).unwrap();
    let mut bytes = Vec::new();
    record(&mut bytes, "evil/pwned.thcs", &good);
    record(&mut bytes, "evil/deeper/pwned.thcs", &good);
    record(&mut bytes, "evidence/fine.thcs", &good);
    write_journal(&root, dead_pid(), 1, &bytes);

    let (pool, rx) = start(test_config(&root));
    let t = pool.submit(&Job::evacuate(b"after the symlink")).unwrap();
    let o = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(matches!(o.result, OutcomeKind::Completed(_)), "{o:?}");
    assert_eq!(restore(&pool, &rx, t.evidence_id), b"after the symlink");
    pool.shutdown(Duration::from_secs(10));

    let mut outside_files: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside_files.sort();
    assert_eq!(outside_files, ["victim"], "written outside the root");
    assert_eq!(
        std::fs::read(root.join("evidence/fine.thcs")).unwrap(),
        good,
        "the record below a real directory is still stored"
    );
}

#[test]
fn conflicting_journals_keep_both_envelopes_and_verify_reports_it() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let id = Uuid::now_v7();
    let key = format!("evidence/{}.thcs", id.hyphenated());
    let first = houndpool_protocol::envelope::encode(b"first writer", 6).unwrap();
    let second = houndpool_protocol::envelope::encode(b"second writer", 6).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    record(&mut a, &key, &first);
    record(&mut b, &key, &second);
    write_journal(&root, dead_pid(), 1, &a);
    write_journal(&root, dead_pid(), 2, &b);

    let (pool, rx) = start(test_config(&root));
    assert_eq!(
        std::fs::read(root.join(&key)).unwrap(),
        first,
        "the older journal wins"
    );
    assert_eq!(restore(&pool, &rx, id), b"first writer");
    let stats = pool.shutdown(Duration::from_secs(10));
    assert_eq!(stats.journal_conflicts, 1);
    let conflicts = houndpool_cold::fs::materialise::conflicts(&root).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].key, key);
    assert_eq!(conflicts[0].envelope, second);

    let houndd = workspace_binary("houndd", &["supervisor", "hound", "protocol", "cold"]);
    let out = std::process::Command::new(houndd)
        .arg("verify")
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify must fail on a conflict: {stdout}"
    );
    assert!(
        stdout.contains("CONFLICT") && stdout.contains(&key),
        "{stdout}"
    );
    assert!(stdout.contains("1 envelopes verified"), "{stdout}");
}
