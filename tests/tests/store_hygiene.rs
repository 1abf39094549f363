//! Filesystem store hygiene with real hounds: temp files of hounds SIGKILLed mid-evacuation
//! are swept (after each death, and at pool start for earlier runs), and evidence on disk is
//! private (files 0600, directories 0700).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use houndpool::{Job, OutcomeKind, PoolConfig};
use houndpool_tests::*;

/// Every (path, is_dir) below `root`.
fn walk(root: &Path) -> Vec<(std::path::PathBuf, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let is_dir = e.file_type().unwrap().is_dir();
            if is_dir {
                stack.push(e.path());
            }
            out.push((e.path(), is_dir));
        }
    }
    out
}

#[test]
fn killed_hounds_leave_no_temp_files_and_evidence_is_private() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    // A temp file left by a writer of an earlier run that is gone: swept at pool start.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(".writing"))
            .unwrap();
    }
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = root.join(format!(".writing/.tmp-{dead}-00000000deadbeef"));
    std::fs::write(&stale, b"partial").unwrap();

    let config = PoolConfig {
        max_evidence_bytes: 256 * 1024,
        job_timeout: Duration::from_secs(20),
        ..test_config(&root)
    };
    let (pool, rx) = start(config);
    assert!(!stale.exists(), "the stale temp file survived pool start");

    // Large, poorly compressible evidence so that writes take a while; hounds are SIGKILLed
    // every 150 ms while evacuations stream in.
    let evidence: Vec<u8> = (0..128 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut accepted = 0usize;
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(3);
    let mut next_kill = Instant::now() + Duration::from_millis(150);
    while Instant::now() < end {
        if pool.submit(&Job::evacuate(&evidence)).is_ok() {
            accepted += 1;
        }
        if Instant::now() >= next_kill {
            let slot = kills % 2;
            if let Some(pid) = pool.stats().hounds[slot as usize].pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                kills += 1;
            }
            next_kill += Duration::from_millis(150);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let outcomes = collect(&rx, accepted, Duration::from_secs(120));
    assert_eq!(
        outcomes.len(),
        accepted,
        "every accepted job has an outcome"
    );
    let completed = outcomes
        .iter()
        .filter(|o| matches!(o.result, OutcomeKind::Completed(_)))
        .count();
    assert!(kills >= 10, "only {kills} kills");
    assert!(completed > 0);
    pool.shutdown(Duration::from_secs(10));

    let entries = walk(&root);
    let temps: Vec<_> = entries
        .iter()
        .filter(|(p, is_dir)| {
            !is_dir
                && p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(".tmp-")
        })
        .collect();
    assert!(
        temps.is_empty(),
        "{} temp files left: {temps:?}",
        temps.len()
    );
    let mut objects = 0;
    for (p, is_dir) in &entries {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        if *is_dir {
            assert_eq!(mode, 0o700, "{}", p.display());
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
            houndpool_protocol::envelope::verify(&std::fs::read(p).unwrap()).unwrap();
            objects += 1;
        }
    }
    assert!(
        objects >= completed,
        "{objects} objects for {completed} completions"
    );
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
