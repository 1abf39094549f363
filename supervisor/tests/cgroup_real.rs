//! Per-hound cgroups on the real machine. They need a writable memory cgroup (root on a host
//! with cgroupfs mounted read-write); where that is missing the tests FAIL with the reason, on
//! purpose: the CI machine is expected to provide it.

// Inside a module so that the `cgroup` name filter of the verification command selects them.
mod cgroup_real {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;

    use houndpool::cgroup::{detect, CgroupSetup, ContainerLimits, HoundCgroups, POOL_DIR_PREFIX};

    const MIB: u64 = 1 << 20;

    /// Serialises the tests of this file: the stale-pool test must not see another test's
    /// pool while it is momentarily empty.
    static LOCK: Mutex<()> = Mutex::new(());

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool_name(tag: &str) -> String {
        format!("test-{}-{tag}", std::process::id())
    }

    fn limits() -> ContainerLimits {
        let l = detect().expect("cgroup detection failed on this machine");
        assert!(
            l.memory_dir.is_some(),
            "this machine has no memory cgroup for the test process: {l:?}"
        );
        l
    }

    fn pool(limits: &ContainerLimits, name: &str) -> HoundCgroups {
        match HoundCgroups::setup(name, limits).expect("cgroup setup failed") {
            CgroupSetup::Ready(p) => p,
            CgroupSetup::Unavailable(reason) => panic!(
                "per-hound cgroups are unavailable on this machine ({reason}); the real cgroup \
                 tests need a writable memory cgroup (limits: {limits:?})"
            ),
        }
    }

    /// Kills and reaps the child if a test fails half-way.
    struct Reaper(Option<Child>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn python() -> &'static str {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    #[test]
    fn cgroup_detect_reads_this_machine() {
        let l = limits();
        let dir = l.memory_dir.clone().unwrap();
        assert!(dir.is_dir(), "{}", dir.display());
        assert!(
            l.memory_usage.is_some_and(|u| u > 0),
            "memory usage of {}: {:?}",
            dir.display(),
            l.memory_usage
        );
        assert!(houndpool::cgroup::memory_usage(&l).is_some());
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = houndpool::cgroup::decide_pool_size(
            &l,
            parallelism,
            &houndpool::cgroup::PoolSizing {
                per_hound_budget: 256 * MIB,
                host_reserve: 256 * MIB,
                min: 1,
                max: 64,
            },
        );
        eprintln!("{l:?}\n{}", d.explanation);
        assert!((1..=64).contains(&d.size));
    }

    #[test]
    fn hound_over_its_memory_limit_is_oom_killed_and_cgroup_removed() {
        let _g = lock();
        let limits = limits();
        let pool = pool(&limits, &pool_name("oom"));
        assert_eq!(pool.cleanup_leftovers(), 0, "fresh pool has no leftovers");
        let cg = pool
            .create(1, 1, 64 * MIB, 16)
            .expect("create hound cgroup");
        assert_eq!(cg.memory_limit(), 64 * MIB);
        assert_eq!(cg.pids_limit(), Some(16), "pids: {}", pool.describe());
        let mech = cg.mechanisms();
        assert!(mech.contains("memory limit 64 MiB"), "{mech}");
        assert!(mech.contains("pids limit 16"), "{mech}");
        let pids_max = std::fs::read_to_string(cg.pids_dir().unwrap().join("pids.max")).unwrap();
        assert_eq!(pids_max.trim(), "16");
        assert_eq!(cg.oom_kills(), 0);

        // Held at `read` until it is in the cgroup; then allocates and touches 256 MiB.
        let script = format!(
            "read x; exec {} -c 'import time; b = b\"x\" * (256 << 20); time.sleep(5)'",
            python()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let mut child = Reaper(Some(child));
        let c = child.0.as_mut().unwrap();
        let pid = i32::try_from(c.id()).unwrap();
        cg.add_process(pid).expect("add process");
        assert_eq!(cg.procs().unwrap(), [pid]);
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let status = c.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the hound should be OOM-killed, got {status:?}"
        );
        assert!(cg.oom_kills() >= 1, "oom_kill counter: {}", cg.oom_kills());
        child.0 = None;

        let dirs: Vec<PathBuf> = std::iter::once(cg.memory_dir().to_path_buf())
            .chain(cg.pids_dir().map(Path::to_path_buf))
            .collect();
        cg.remove().expect("remove hound cgroup");
        for d in &dirs {
            assert!(!d.exists(), "{} still exists", d.display());
        }
        let pool_dir = pool.memory_pool_dir().to_path_buf();
        pool.remove_pool().unwrap();
        assert!(!pool_dir.exists());
    }

    #[test]
    fn cleanup_leftovers_kills_and_removes_a_previous_run() {
        let _g = lock();
        let limits = limits();
        let name = pool_name("leftover");
        let first_run = pool(&limits, &name);
        let cg = first_run.create(7, 3, 64 * MIB, 16).unwrap();
        let child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let mut child = Reaper(Some(child));
        let pid = i32::try_from(child.0.as_ref().unwrap().id()).unwrap();
        cg.add_process(pid).unwrap();
        let dirs: Vec<PathBuf> = std::iter::once(cg.memory_dir().to_path_buf())
            .chain(cg.pids_dir().map(Path::to_path_buf))
            .collect();
        // The "previous run" ends without removing anything.
        drop(cg);
        drop(first_run);

        let second_run = pool(&limits, &name);
        assert_eq!(second_run.cleanup_leftovers(), 1);
        for d in &dirs {
            assert!(!d.exists(), "{} still exists", d.display());
        }
        let status = child.0.take().unwrap().wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert_eq!(second_run.cleanup_leftovers(), 0);
        second_run.remove_pool().unwrap();
    }

    #[test]
    fn stale_pools_are_removed_unless_they_hold_processes() {
        let _g = lock();
        let limits = limits();
        let own = pool(&limits, &pool_name("own"));
        let stale = pool(&limits, &pool_name("stale"));
        stale.create(1, 1, 64 * MIB, 16).unwrap();
        let busy = pool(&limits, &pool_name("busy"));
        let busy_cg = busy.create(1, 1, 64 * MIB, 16).unwrap();
        let child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let mut child = Reaper(Some(child));
        busy_cg
            .add_process(i32::try_from(child.0.as_ref().unwrap().id()).unwrap())
            .unwrap();

        let removed = HoundCgroups::cleanup_stale_pools(&limits, own.pool_name());
        assert!(removed >= 1, "removed {removed}");
        assert!(!stale.memory_pool_dir().exists(), "stale pool kept");
        if let Some(p) = stale.pids_pool_dir() {
            assert!(!p.exists(), "stale pids pool kept");
        }
        assert!(busy.memory_pool_dir().exists(), "busy pool removed");
        assert!(own.memory_pool_dir().exists(), "own pool removed");
        let prefix = format!("{POOL_DIR_PREFIX}{}", pool_name(""));
        assert!(own
            .memory_pool_dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&prefix));

        // The busy pool's hound is still alive, then removed with its pool.
        assert_eq!(busy_cg.procs().unwrap().len(), 1);
        assert_eq!(busy_cg.kill_all(), 1);
        let status = child.0.take().unwrap().wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        busy_cg.remove().unwrap();
        busy.remove_pool().unwrap();
        own.remove_pool().unwrap();
        // A vanished pool directory is re-created on demand by `create`.
        let again = stale
            .create(2, 1, 64 * MIB, 16)
            .expect("create after pool removal");
        again.remove().unwrap();
        stale.remove_pool().unwrap();
    }
}
