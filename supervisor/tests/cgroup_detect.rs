//! cgroup detection over fixture trees (supervisor/tests/fixtures/cgroup/<case>/): each case holds
//! a `proc_self_cgroup`, a `mountinfo` and a `sys/fs/cgroup/...` tree.

// Inside a module so that the `cgroup` name filter of the verification command selects them.
mod cgroup_fixtures {
    use std::path::{Path, PathBuf};

    use houndpool::cgroup::{
        decide_pool_size, detect_in, memory_usage, memory_working_set, CgroupVersion,
        ContainerLimits, PoolSizing,
    };
    use houndpool::PoolError;

    const MIB: u64 = 1 << 20;

    fn case_dir(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(case)
    }

    fn detect_case(case: &str) -> Result<ContainerLimits, PoolError> {
        let dir = case_dir(case);
        let cgroup = std::fs::read_to_string(dir.join("proc_self_cgroup")).unwrap();
        let mountinfo = std::fs::read_to_string(dir.join("mountinfo")).unwrap();
        detect_in(&cgroup, &mountinfo, &dir)
    }

    #[test]
    fn v1_takes_the_tighter_parent_and_fractional_quota() {
        let l = detect_case("v1_nested").unwrap();
        let root = case_dir("v1_nested").join("sys/fs/cgroup");
        assert_eq!(l.version, CgroupVersion::V1);
        // Leaf 1 GiB, parent pod 512 MiB: the parent wins.
        assert_eq!(l.memory_limit, Some(512 * MIB));
        assert_eq!(l.memory_high, None, "v1 has no memory.high");
        assert_eq!(l.memory_usage, Some(100 * MIB));
        // Leaf 150000/100000, pod 400000/100000, others -1.
        assert_eq!(l.cpu_quota_cores, Some(1.5));
        // Root 0-7, pod empty (inherit), leaf 0-3,6.
        assert_eq!(l.cpuset_cpus, Some(5));
        assert_eq!(
            l.memory_dir.as_deref(),
            Some(root.join("memory/kubepods/burstable/pod1/ctr").as_path())
        );
        assert_eq!(
            l.pids_dir.as_deref(),
            Some(root.join("pids/kubepods/burstable/pod1/ctr").as_path())
        );
        assert_eq!(memory_usage(&l), Some(100 * MIB));

        let sizing = PoolSizing {
            per_hound_budget: 64 * MIB,
            host_reserve: 128 * MIB,
            min: 1,
            max: 32,
        };
        let d = decide_pool_size(&l, 1, &sizing);
        assert_eq!(d.cpu_bound, 2, "ceil(1.5), cpuset 5 is looser");
        assert_eq!(d.memory_bound, Some(6), "(512 - 128) / 64");
        assert_eq!(d.size, 2);
    }

    #[test]
    fn v2_nested_reads_max_high_and_the_tighter_parent() {
        let l = detect_case("v2_nested").unwrap();
        assert_eq!(l.version, CgroupVersion::V2);
        // Leaf memory.max "max", pod2.slice 768 MiB.
        assert_eq!(l.memory_limit, Some(768 * MIB));
        // Leaf memory.high 640 MiB, parents "max".
        assert_eq!(l.memory_high, Some(640 * MIB));
        assert_eq!(l.memory_usage, Some(50 * MIB));
        // cpu.max "max 100000" everywhere.
        assert_eq!(l.cpu_quota_cores, None);
        // Effective cpuset of the leaf wins over the root's.
        assert_eq!(l.cpuset_cpus, Some(2));
        let leaf = case_dir("v2_nested").join("sys/fs/cgroup/kubepods.slice/pod2.slice/ctr.scope");
        assert_eq!(l.memory_dir.as_deref(), Some(leaf.as_path()));
        assert_eq!(l.pids_dir.as_deref(), Some(leaf.as_path()));
        assert_eq!(l.effective_memory_limit(), Some(640 * MIB));

        let sizing = PoolSizing {
            per_hound_budget: 128 * MIB,
            host_reserve: 128 * MIB,
            min: 1,
            max: 16,
        };
        let d = decide_pool_size(&l, 8, &sizing);
        assert_eq!(
            d.memory_bound,
            Some(4),
            "(640 - 128) / 128 using memory.high"
        );
        assert_eq!(d.cpu_bound, 2, "cpuset");
        assert_eq!(d.size, 2);
        // The worked example of docs/CGROUPS.md.
        assert_eq!(
            d.explanation,
            "pool size 2 = clamp(min(cpu 2, memory 4), min 1, max 16) [cgroup v2; cpu quota \
             none, cpuset 2 cpus, available_parallelism 8 (not used); memory limit 640 MiB \
             (max 768 MiB, high 640 MiB), host reserve 128 MiB, per-hound budget 128 MiB]"
        );
    }

    #[test]
    fn v2_in_a_container_strips_the_mount_root() {
        let l = detect_case("v2_container_root").unwrap();
        let root = case_dir("v2_container_root").join("sys/fs/cgroup");
        assert_eq!(l.version, CgroupVersion::V2);
        // The container cgroup (mount root) has 256 MiB and 1.5 cores; the app child "max". The
        // decoy mount /mnt/other (root /kubepods, a shorter prefix) must not be used.
        assert_eq!(l.memory_limit, Some(256 * MIB));
        assert_eq!(l.memory_high, None);
        assert_eq!(l.cpu_quota_cores, Some(1.5));
        assert_eq!(l.cpuset_cpus, None);
        assert_eq!(l.memory_usage, Some(MIB));
        assert_eq!(l.memory_dir.as_deref(), Some(root.join("app").as_path()));

        let d = decide_pool_size(
            &l,
            1,
            &PoolSizing {
                per_hound_budget: 32 * MIB,
                host_reserve: 64 * MIB,
                min: 1,
                max: 8,
            },
        );
        assert_eq!((d.cpu_bound, d.memory_bound, d.size), (2, Some(6), 2));
    }

    #[test]
    fn hybrid_host_uses_v1_memory_and_ignores_the_controllerless_unified_mount() {
        let l = detect_case("hybrid_v1_memory").unwrap();
        let root = case_dir("hybrid_v1_memory").join("sys/fs/cgroup");
        assert_eq!(l.version, CgroupVersion::V1);
        assert_eq!(
            l.memory_limit, None,
            "PAGE_COUNTER_MAX sentinel is no limit"
        );
        assert_eq!(l.memory_usage, Some(4_608_000));
        assert_eq!(l.cpu_quota_cores, None);
        assert_eq!(l.cpuset_cpus, Some(2));
        assert_eq!(
            l.memory_dir.as_deref(),
            Some(root.join("memory/process_api/abc").as_path())
        );
        assert_eq!(l.pids_dir.as_deref(), Some(root.join("pids").as_path()));

        let d = decide_pool_size(
            &l,
            2,
            &PoolSizing {
                per_hound_budget: 64 * MIB,
                host_reserve: 64 * MIB,
                min: 1,
                max: 8,
            },
        );
        assert_eq!((d.cpu_bound, d.memory_bound, d.size), (2, None, 2));
    }

    #[test]
    fn missing_files_mean_no_limits() {
        let l = detect_case("missing_files").unwrap();
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(l.memory_limit, None);
        assert_eq!(l.memory_high, None);
        assert_eq!(l.memory_usage, None);
        assert_eq!(l.cpu_quota_cores, None);
        assert_eq!(l.cpuset_cpus, None);
        // The directory exists (controllers unknown), so it is reported; usage reads give None.
        let leaf = case_dir("missing_files").join("sys/fs/cgroup/a/b");
        assert_eq!(l.memory_dir.as_deref(), Some(leaf.as_path()));
        assert_eq!(memory_usage(&l), None);
        assert_eq!(memory_working_set(&l), None);
        assert_eq!(
            decide_pool_size(
                &l,
                3,
                &PoolSizing {
                    per_hound_budget: MIB,
                    host_reserve: 0,
                    min: 1,
                    max: 8
                }
            )
            .size,
            3
        );
    }

    #[test]
    fn nothing_mounted_or_cgroup_not_visible_gives_unlimited() {
        let empty = tempfile::tempdir().unwrap();
        let l = detect_in("", "", empty.path()).unwrap();
        assert_eq!(l, ContainerLimits::unlimited(CgroupVersion::V2));

        // The process's cgroup lies outside the mount's root (cgroup namespace "/.." paths).
        let l = detect_in(
            "0::/../../elsewhere\n",
            "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            empty.path(),
        )
        .unwrap();
        assert_eq!(l.memory_dir, None);
        assert_eq!(l.memory_limit, None);
    }

    #[test]
    fn malformed_fixture_names_the_file() {
        let err = detect_case("malformed_v2").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PoolError::CgroupParse { .. }), "{err:?}");
        assert!(msg.contains("svc/memory.max"), "{msg}");
        assert!(msg.contains("12abc"), "{msg}");
    }

    /// Writes a one-level v2 tree with the given files and detects it.
    fn detect_v2_files(
        files: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<ContainerLimits, PoolError>) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("sys/fs/cgroup/svc");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let r = detect_in(
            "0::/svc\n",
            "30 23 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n",
            t.path(),
        );
        (t, r)
    }

    #[test]
    fn malformed_values_are_errors_naming_the_file() {
        for (file, content) in [
            ("cpu.max", "100000 0\n"),
            ("cpu.max", "0 100000\n"),
            ("cpu.max", "abc 100000\n"),
            ("cpu.max", "1 2 3\n"),
            ("cpu.max", "\n"),
            ("memory.high", "-5\n"),
            ("memory.current", "lots\n"),
            ("cpuset.cpus.effective", "3-1\n"),
            ("cpuset.cpus", "0-2,x\n"),
        ] {
            let (_t, r) = detect_v2_files(&[(file, content)]);
            let err = r.expect_err(&format!("{file} = {content:?} accepted"));
            assert!(matches!(err, PoolError::CgroupParse { .. }), "{err:?}");
            assert!(err.to_string().contains(file), "{file}: {err}");
        }
    }

    #[test]
    fn v2_cpu_max_forms() {
        for (content, want) in [
            ("max 100000\n", None),
            ("max\n", None),
            ("150000 100000\n", Some(1.5)),
            ("50000\n", Some(0.5)),
            ("250000 1000000\n", Some(0.25)),
        ] {
            let (_t, r) = detect_v2_files(&[("cpu.max", content)]);
            assert_eq!(r.unwrap().cpu_quota_cores, want, "{content:?}");
        }
    }

    #[test]
    fn v1_quota_forms_and_errors() {
        let run = |quota: &str, period: Option<&str>| {
            let t = tempfile::tempdir().unwrap();
            let dir = t.path().join("sys/fs/cgroup/cpu/svc");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota).unwrap();
            if let Some(p) = period {
                std::fs::write(dir.join("cpu.cfs_period_us"), p).unwrap();
            }
            detect_in(
                "3:cpu:/svc\n",
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
                t.path(),
            )
            .map(|l| l.cpu_quota_cores)
        };
        assert_eq!(run("-1\n", Some("100000\n")).unwrap(), None);
        assert_eq!(run("250000\n", Some("100000\n")).unwrap(), Some(2.5));
        assert_eq!(
            run("50000\n", None).unwrap(),
            None,
            "no period: cannot compute"
        );
        for (q, p) in [
            ("-5\n", "100000\n"),
            ("x\n", "100000\n"),
            ("1000\n", "0\n"),
            ("1000\n", "y\n"),
        ] {
            let err = run(q, Some(p)).unwrap_err().to_string();
            assert!(err.contains("cpu.cfs_"), "{q:?}/{p:?}: {err}");
        }
    }

    #[test]
    fn malformed_proc_files_name_them() {
        let t = tempfile::tempdir().unwrap();
        let err = detect_in("garbage\n", "", t.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/self/cgroup"), "{err}");
        let err = detect_in("0::/\n", "1 2 0:3 / /x rw no-separator\n", t.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/self/mountinfo"), "{err}");
    }

    #[test]
    fn working_set_subtracts_inactive_file() {
        let (_t, r) = detect_v2_files(&[
            ("memory.current", "1000000\n"),
            (
                "memory.stat",
                "anon 400000\nfile 600000\ninactive_file 300000\nactive_file 300000\n",
            ),
        ]);
        let l = r.unwrap();
        assert_eq!(memory_usage(&l), Some(1_000_000));
        assert_eq!(memory_working_set(&l), Some(700_000));
    }
}
