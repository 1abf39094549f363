//! Per-hound cgroups and the supervision policy, with real hounds and real cgroups.

use std::time::{Duration, Instant};

use houndpool::{
    CircuitState, Job, Layer, LayerStatus, OutcomeKind, Pool, PoolSize, RestartIntensity,
};
use houndpool_tests::*;
use nix::sys::signal::Signal;

/// The cgroup directory names of `pid` (one per hierarchy line of /proc/PID/cgroup).
fn cgroup_paths(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn each_hound_runs_in_its_own_cgroup_and_the_report_says_so() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::builder()
        .config(test_config(dir.path()))
        .build()
        .unwrap();
    let stats = pool.stats();
    let report = stats.sandbox.clone().expect("sandbox report");
    let cg = report
        .layers
        .iter()
        .find(|l| l.layer == Layer::Cgroup)
        .expect("cgroup layer in the report");
    // This machine has a writable cgroup v1 memory controller: the layer must hold here.
    assert_eq!(cg.status, LayerStatus::Enforced, "{}", cg.detail);
    assert!(cg.detail.contains("memory limit"), "{}", cg.detail);
    let mut seen = Vec::new();
    for slot in 0..2 {
        let pid = pid_of(&pool, slot);
        let paths = cgroup_paths(pid);
        let own = paths
            .iter()
            .find(|p| p.contains("/houndpool-") && p.contains(&format!("/hound-{slot}-g")))
            .unwrap_or_else(|| panic!("hound {pid} not in its cgroup: {paths:?}"))
            .clone();
        seen.push(own);
    }
    assert_ne!(seen[0], seen[1], "hounds share a cgroup");
    assert_eq!(stats.size.target, 2);
    assert_eq!(stats.size.computed, 2);
    assert_eq!(stats.circuit, CircuitState::Closed);
    assert!(!stats.degraded);
    // A killed hound's cgroup is replaced by the new generation's.
    let victim = pid_of(&pool, 0);
    signal(victim, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        if let Some(pid) = pool.stats().hounds[0].pid {
            if pid as i32 != victim {
                break pid as i32;
            }
        }
        assert!(Instant::now() < deadline, "slot 0 not refilled");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        cgroup_paths(fresh)
            .iter()
            .any(|p| p.contains("/hound-0-g") && !seen.contains(p)),
        "the new hound is not in a fresh cgroup"
    );
    // The memory hierarchy's pool directory disappears with the pool.
    let memory_mount = "/sys/fs/cgroup/memory";
    let pool_dir = seen[1].rsplit_once('/').map(|(d, _)| d.to_owned()).unwrap();
    let on_disk = format!("{memory_mount}{pool_dir}");
    let had_dir = std::path::Path::new(&on_disk).is_dir();
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds());
    if had_dir {
        assert!(
            !std::path::Path::new(&on_disk).exists(),
            "{on_disk} left behind"
        );
    }
    assert_no_hounds_left();
}

#[test]
fn restart_intensity_opens_the_circuit_and_a_probe_closes_it() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Fixed(2);
    config.restart_intensity = RestartIntensity {
        max_restarts: 2,
        within: Duration::from_secs(30),
    };
    config.circuit_cooldown = Duration::from_millis(700);
    let pool = Pool::builder().config(config).build().unwrap();
    let rx = pool.outcomes().unwrap();
    // Three unexpected deaths within the window: more than 2 → open.
    let mut opened_at = None;
    for _ in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let s = pool.stats();
            if let Some(pid) = s.hounds.iter().find_map(|h| h.pid) {
                break pid as i32;
            }
            assert!(Instant::now() < deadline, "no live hound to kill");
            std::thread::sleep(Duration::from_millis(5));
        };
        signal(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.stats().restarts < pool.stats().hound_exits
            && Instant::now() < deadline
            && std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
        let s = pool.stats();
        if s.circuit == CircuitState::Open && opened_at.is_none() {
            // Open: degraded, and the dead hound's slot is held empty (no fork loop).
            assert!(s.degraded, "{s:?}");
            assert_eq!(s.size.actual, 1, "a slot was refilled while open: {s:?}");
            opened_at = Some(Instant::now());
        }
    }
    let s = pool.stats();
    assert!(s.restarts >= 3, "{s:?}");
    assert_eq!(s.circuit_opens, 1, "circuit did not open: {s:?}");
    assert!(opened_at.is_some(), "the open circuit was never observed");
    // Jobs submitted meanwhile still get exactly one outcome each (defer policy applies).
    let ids: Vec<_> = (0..20)
        .map(|i| {
            pool.submit(&Job::noop(format!("job {i}").as_bytes()))
                .unwrap()
                .job_id
        })
        .collect();
    // After the cool-down a probe hound starts; once it has been up a moment the circuit
    // closes and the held slot is refilled.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = pool.stats();
        if s.circuit == CircuitState::Closed && s.size.actual == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "circuit never closed: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let outs = collect(&rx, ids.len(), Duration::from_secs(20));
    let by_id = assert_exactly_one_each(&ids, &outs);
    assert!(by_id
        .values()
        .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
    let s = pool.shutdown(Duration::from_secs(5));
    assert!(!s.degraded && s.identity_holds());
    assert_no_hounds_left();
}

#[test]
fn rotation_replaces_hounds_without_a_capacity_dip() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Fixed(2);
    config.rotation = houndpool::Rotation {
        after_jobs: Some(200),
        after: None,
    };
    config.max_in_flight_per_hound = 16;
    let pool = Pool::builder().config(config).build().unwrap();
    let rx = pool.outcomes().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ids, min_accepting, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut min = usize::MAX;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                min = min.min(pool.stats().size.actual);
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (min, n)
        });
        // Real encode work, so a hound's ~200 jobs take longer than a replacement's start.
        let evidence = houndpool::synth::EvidenceGenerator::new(7).request(32 * 1024);
        let mut ids = Vec::new();
        let mut outs = Vec::new();
        for _ in 0..2000u32 {
            ids.push(pool.submit(&Job::encode(&evidence)).unwrap().job_id);
        }
        outs.extend(collect(&rx, ids.len(), Duration::from_secs(60)));
        // On a loaded machine 2000 jobs can finish before a replacement hound has started;
        // keep streaming (bounded) until a few rotations have happened.
        let deadline = Instant::now() + Duration::from_secs(15);
        while pool.stats().rotations < 2 && Instant::now() < deadline {
            let batch: Vec<_> = (0..200)
                .map(|_| pool.submit(&Job::encode(&evidence)).unwrap().job_id)
                .collect();
            outs.extend(collect(&rx, batch.len(), Duration::from_secs(30)));
            ids.extend(batch);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (min, n) = sampler.join().unwrap();
        let by_id = assert_exactly_one_each(&ids, &outs);
        assert!(by_id
            .values()
            .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
        (ids, min, n)
    });
    let s = pool.shutdown(Duration::from_secs(5));
    assert!(samples > 10, "too few samples ({samples})");
    assert!(
        min_accepting >= 2,
        "capacity dipped to {min_accepting} hounds"
    );
    // Rotation after ~200 jobs (±10 %), one rotation at a time: jobs can outpace a
    // replacement's start, so fewer than jobs/200 rotations happen, but several do.
    assert!(s.rotations >= 2, "rotations: {}", s.rotations);
    assert_eq!(s.restarts, 0, "a rotation is not a restart");
    assert_eq!(s.completed, ids.len() as u64);
    assert_no_hounds_left();
}
