//! Supervisor-side escape tests: a compromised hound (the test-only `hound-escape` binary in
//! hostile-hound mode, speaking the real handshake under the real sandbox) misbehaves when a
//! job tells it to. Each case: the supervisor survives, records the typed reason, replaces the
//! hound, and the other jobs complete. Results are tabulated in docs/SECURITY.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use houndpool::{FailReason, HoundBinary, Job, OutcomeKind, Pool, PoolConfig, PoolSize};
use houndpool_tests::*;

/// The `hound-escape` binary (feature `escape-test`), built if missing or stale.
fn escape_binary() -> PathBuf {
    let hound = hound_binary();
    let bin = hound.with_file_name("hound-escape");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hound/src");
    let newest_src = walk_newest(&src);
    let fresh = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .is_ok_and(|built| newest_src.is_none_or(|s| s <= built));
    if !fresh {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "houndpool-hound",
                "--features",
                "escape-test",
                "--bin",
                "hound-escape",
            ])
            .status()
            .expect("cargo build hound-escape");
        assert!(status.success(), "building hound-escape failed");
    }
    bin
}

fn walk_newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = Some(newest.map_or(m, |n: std::time::SystemTime| n.max(m)));
        }
    }
    newest
}

fn hostile_config(dir: &Path) -> PoolConfig {
    PoolConfig {
        size: PoolSize::Fixed(2),
        hound_binary: HoundBinary::Path(escape_binary()),
        job_timeout: Duration::from_secs(10),
        // The allocation attacks: RLIMIT_AS 256 MiB, cgroup limit 96 MiB.
        hound_memory_budget: 256 << 20,
        hound_cgroup_memory: 96 << 20,
        ..test_config(dir)
    }
}

/// Runs 10 good jobs, one hostile job, 10 good jobs; returns the hostile job's failure.
fn run_attack(attack: &str) -> (OutcomeKind, houndpool::PoolStats) {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::builder()
        .config(hostile_config(dir.path()))
        .build()
        .unwrap();
    let rx = pool.outcomes().unwrap();
    let hostile_body = format!("hostile:{attack}");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            pool.submit(&Job::noop(format!("before {i}").as_bytes()))
                .unwrap()
                .job_id,
        );
    }
    let bad = pool
        .submit(&Job::noop(hostile_body.as_bytes()))
        .unwrap()
        .job_id;
    ids.push(bad);
    for i in 0..10 {
        ids.push(
            pool.submit(&Job::noop(format!("after {i}").as_bytes()))
                .unwrap()
                .job_id,
        );
    }
    let outs = collect(&rx, ids.len(), Duration::from_secs(30));
    let by_id = assert_exactly_one_each(&ids, &outs);
    for (id, o) in &by_id {
        if *id != bad {
            assert!(
                matches!(o.result, OutcomeKind::Completed(_)),
                "{attack}: good job {id} got {:?}",
                o.result
            );
        }
    }
    // The hound was replaced: both slots serve again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().size.actual < 2 {
        assert!(Instant::now() < deadline, "{attack}: hound not replaced");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = pool.submit(&Job::noop(b"after the replacement")).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].job_id, after.job_id);
    assert!(matches!(o[0].result, OutcomeKind::Completed(_)));
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds());
    assert!(stats.hound_spawns >= 3, "{attack}: {stats:?}");
    (by_id[&bad].result.clone(), stats)
}

fn assert_violation(attack: &str) {
    let _g = serial();
    let (r, s) = run_attack(attack);
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::ProtocolViolation { .. })),
        "{attack}: {r:?}"
    );
    assert!(s.protocol_violations >= 1);
}

#[test]
fn garbage_over_the_completion_region_is_a_protocol_violation() {
    assert_violation("garbage_completion");
}

#[test]
fn a_completion_for_the_wrong_job_is_a_protocol_violation() {
    assert_violation("wrong_job_id");
}

#[test]
fn a_malformed_control_frame_is_a_protocol_violation() {
    assert_violation("malformed_frame");
}

#[test]
fn an_oversized_control_frame_is_a_protocol_violation() {
    assert_violation("oversized_frame");
}

#[test]
fn execve_kills_the_hound_with_sigsys() {
    let _g = serial();
    let (r, _) = run_attack("exec_sh");
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::HoundKilled { signal }) if signal == libc::SIGSYS),
        "{r:?}"
    );
}

#[test]
fn ptrace_of_the_supervisor_kills_the_hound_with_sigsys() {
    let _g = serial();
    let (r, _) = run_attack("ptrace_parent");
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::HoundKilled { signal }) if signal == libc::SIGSYS),
        "{r:?}"
    );
}

#[test]
fn allocating_past_the_address_space_budget_is_out_of_memory() {
    let _g = serial();
    let (r, s) = run_attack("alloc_over_budget");
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::OutOfMemory)),
        "{r:?}"
    );
    assert!(s.oom_kills >= 1);
}

#[test]
fn exceeding_the_cgroup_limit_is_out_of_memory() {
    let _g = serial();
    let (r, s) = run_attack("cgroup_oom");
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::OutOfMemory)),
        "{r:?}"
    );
    assert!(s.oom_kills >= 1);
}

#[test]
fn madvise_hwpoison_on_a_ring_page_kills_the_hound_with_sigsys() {
    let _g = serial();
    let (r, _) = run_attack("madvise_hwpoison");
    assert!(
        matches!(r, OutcomeKind::Failed(FailReason::HoundKilled { signal }) if signal == libc::SIGSYS),
        "{r:?}"
    );
}
