//! `Auto` sizing and the high-water mark inside a real memory cgroup that the test creates
//! (cgroup v1 or v2): the test re-executes itself as a child placed in a new memory cgroup
//! with a 512 MiB limit; the child builds an `Auto` pool, prints the decision, shows that a
//! hound exceeding its budget is killed while the supervisor lives, and moves the high-water
//! mark to make the target shrink and grow back.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use houndpool::{FailReason, HoundBinary, Job, OutcomeKind, Pool, PoolSize};
use houndpool_tests::*;

const CHILD_ENV: &str = "HOUNDPOOL_SIZING_CHILD";
const LIMIT: u64 = 512 << 20;

/// The test process's own memory cgroup directory (v1 memory hierarchy or v2), if writable.
fn own_memory_cgroup() -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        if ctrl.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            return dir.is_dir().then_some((dir, false));
        }
    }
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    dir.join("memory.max").exists().then_some((dir, true))
}

#[test]
fn auto_sizing_and_high_water_mark_in_a_512_mib_memory_cgroup() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let _g = serial();
    let Some((own, v2)) = own_memory_cgroup() else {
        panic!("no writable memory cgroup on this machine");
    };
    let memcg = own.join(format!("houndpool-sizing-test-{}", std::process::id()));
    std::fs::create_dir(&memcg).expect("create the test memory cgroup");
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::write(memcg.join(limit_file), LIMIT.to_string()).unwrap();
    // Build the helper binary before the child starts (the child only finds it).
    let escape = escape_binary();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "auto_sizing_and_high_water_mark_in_a_512_mib_memory_cgroup",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("HOUNDPOOL_ESCAPE_BIN", &escape)
        .env("HOUNDPOOL_HOUND_BIN", hound_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Into the cgroup before it does anything: it waits for "go" on stdin.
    std::fs::write(memcg.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = out.lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    // Remove the test cgroup (the pool removed its own directories at shutdown).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(&memcg).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = lines.join("\n");
    println!("{text}");
    assert!(status.success(), "child failed:\n{text}");
    assert!(text.contains("CHILD OK"), "child did not finish:\n{text}");
    assert!(!memcg.exists(), "test cgroup left behind");
}

fn line(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

fn child() {
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Auto {
        per_hound_budget: 96 << 20,
        host_reserve: 128 << 20,
        min: 1,
        max: 8,
    };
    config.high_water_hysteresis = 0.005;
    config.hound_binary =
        HoundBinary::Path(std::env::var_os("HOUNDPOOL_ESCAPE_BIN").unwrap().into());
    let pool = Pool::builder().config(config).build().unwrap();
    let s = pool.stats();
    line(&format!(
        "DECISION size {} (slots {}): {}",
        s.size.computed, s.size.slots, s.size.explanation
    ));
    // (512 − 128) MiB / 96 MiB = 4 hounds by memory; the CPU bound may be lower.
    assert_eq!(s.memory_limit, Some(LIMIT), "{s:?}");
    assert!(
        s.size.explanation.contains("512 MiB"),
        "{}",
        s.size.explanation
    );
    assert!(s.size.computed <= 4 && s.size.computed >= 1);
    let computed = s.size.computed;
    assert_eq!(s.size.target, computed);
    let rx = pool.outcomes().unwrap();

    // A hound that exceeds its budget dies; the supervisor lives and replaces it.
    let bad = pool
        .submit(&Job::noop(b"hostile:alloc_over_budget"))
        .unwrap();
    let o = collect(&rx, 1, Duration::from_secs(20));
    assert_eq!(o[0].job_id, bad.job_id);
    assert!(
        matches!(o[0].result, OutcomeKind::Failed(FailReason::OutOfMemory)),
        "{:?}",
        o[0]
    );
    line("OOM: the hound exceeding its budget was killed; supervisor alive");
    let ok = pool.submit(&Job::noop(b"still serving")).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(20));
    assert_eq!(o[0].job_id, ok.job_id);
    assert!(matches!(o[0].result, OutcomeKind::Completed(_)));

    // High-water mark below the current usage: the target shrinks to the minimum.
    if computed > 1 {
        // 1 % of 512 MiB is about 5 MiB: below what the supervisor and its hounds use.
        assert!(pool.set_high_water_mark(0.01));
        wait_for(
            &pool,
            |s| s.size.target == 1 && s.size.actual == 1,
            "shrink",
        );
        let s = pool.stats();
        line(&format!(
            "SHRUNK target {} actual {} usage {:?} mark {:?}",
            s.size.target, s.size.actual, s.memory_usage, s.high_water_bytes
        ));
        assert!(s.high_water_retirements >= (computed - 1) as u64);
        // Raised well above the usage: it grows back to the computed size.
        assert!(pool.set_high_water_mark(1.0));
        wait_for(
            &pool,
            |s| s.size.target == computed && s.size.actual == computed,
            "grow",
        );
        line(&format!("GREW target {computed}"));
    }
    let s = pool.shutdown(Duration::from_secs(5));
    assert!(s.identity_holds());
    line("CHILD OK");
}

fn wait_for(pool: &Pool, cond: impl Fn(&houndpool::PoolStats) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = pool.stats();
        if cond(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
