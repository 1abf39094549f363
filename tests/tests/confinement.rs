//! Confined from the start: every hound process of a running pool, the prestarted spare
//! included, is seen from outside (/proc) with seccomp in filter mode, no_new_privs, its own
//! network namespace and, when the supervisor is root, no capability at all. And a machine that
//! cannot provide a required layer fails at `build`, naming the layer and the opt-out.

use std::path::Path;
use std::time::Duration;

use houndpool::{
    HoundBinary, Job, Layer, LayerMode, OutcomeKind, Pool, PoolConfig, PoolError, PoolSize,
    SandboxPolicy,
};
use houndpool_tests::*;

/// What /proc says about one process.
#[derive(Debug)]
struct Seen {
    seccomp: Option<u32>,
    no_new_privs: Option<u32>,
    cap_eff: Option<u64>,
    cap_prm: Option<u64>,
    cap_bnd: Option<u64>,
    net_ns: Option<String>,
}

fn field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn seen(pid: i32) -> Option<Seen> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let dec = |n: &str| field(&status, n).and_then(|v| v.parse().ok());
    let hex = |n: &str| field(&status, n).and_then(|v| u64::from_str_radix(&v, 16).ok());
    Some(Seen {
        seccomp: dec("Seccomp"),
        no_new_privs: dec("NoNewPrivs"),
        cap_eff: hex("CapEff"),
        cap_prm: hex("CapPrm"),
        cap_bnd: hex("CapBnd"),
        net_ns: std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|p| p.display().to_string()),
    })
}

fn own_net_ns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("own net namespace")
        .display()
        .to_string()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `s` shows a confined hound (see the module docs).
fn confined(s: &Seen, supervisor_net: &str) -> bool {
    let caps_ok =
        !is_root() || (s.cap_eff == Some(0) && s.cap_prm == Some(0) && s.cap_bnd == Some(0));
    s.seccomp == Some(2)
        && s.no_new_privs == Some(1)
        && s.net_ns.as_deref().is_some_and(|n| n != supervisor_net)
        && caps_ok
}

#[test]
fn every_hound_and_the_spare_are_confined() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        prestart: true,
        ..test_config(dir.path())
    };
    // The default policy is the safe one: nothing relaxed here.
    assert_eq!(config.sandbox.mode(Layer::Seccomp), LayerMode::Required);
    let (pool, rx) = start(config);
    let supervisor_net = own_net_ns();
    let spare = wait_for("a prestarted spare", || pool.stats().spare_pid) as i32;
    let mut pids: Vec<i32> = (0..2).map(|slot| pid_of(&pool, slot)).collect();
    pids.push(spare);
    // Every hound child of this process is one of them: nothing else runs unconfined.
    let mut children = hound_children();
    children.sort_unstable();
    let mut expected = pids.clone();
    expected.sort_unstable();
    assert_eq!(children, expected, "hound children vs slots + spare");
    for pid in &pids {
        // A hound is unconfined only for its first milliseconds after exec.
        wait_for(&format!("hound {pid} confined"), || {
            seen(*pid).filter(|s| confined(s, &supervisor_net))
        });
        let s = seen(*pid).expect("hound alive");
        assert!(confined(&s, &supervisor_net), "hound {pid}: {s:?}");
    }
    // The pool still works, and the spare takes a slot confined as it was.
    let t = pool.submit(&Job::encode(b"confined")).unwrap();
    let out = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].job_id, t.job_id);
    assert!(
        matches!(out[0].result, OutcomeKind::Completed(_)),
        "{:?}",
        out[0]
    );
    pool.shutdown(Duration::from_secs(5));
}

/// The hostile test hound simulates a kernel without Landlock when its cold directory is named
/// `deny-landlock` (see hound-escape.rs).
fn no_landlock_config(dir: &Path, policy: SandboxPolicy) -> PoolConfig {
    let cold = dir.join("deny-landlock");
    std::fs::create_dir_all(&cold).unwrap();
    PoolConfig {
        size: PoolSize::Fixed(1),
        prestart: false,
        hound_binary: HoundBinary::Path(escape_binary()),
        sandbox: policy,
        ..test_config(&cold)
    }
}

#[test]
fn a_required_layer_the_kernel_lacks_fails_build_naming_layer_and_opt_out() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let default = PoolConfig::default().sandbox;
    let err = Pool::builder()
        .config(no_landlock_config(dir.path(), default.clone()))
        .build()
        .map(|_| ())
        .expect_err("a required layer the kernel lacks must fail build");
    match &err {
        PoolError::SandboxRequirement { layer, detail, .. } => {
            assert_eq!(*layer, "landlock");
            assert!(detail.contains("Landlock"), "{detail}");
        }
        other => panic!("expected SandboxRequirement, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("[sandbox] landlock = \"best_effort\"")
            && text.contains("HOUNDPOOL_SANDBOX_LANDLOCK=best_effort"),
        "{text}"
    );
    assert_no_hounds_left();

    // Best-effort is an explicit choice, and then the pool starts and says what is missing.
    let relaxed = default.with(Layer::Landlock, LayerMode::BestEffort);
    let pool = Pool::builder()
        .config(no_landlock_config(dir.path(), relaxed))
        .build()
        .expect("best-effort Landlock starts without it");
    let report = pool.stats().sandbox.expect("sandbox report");
    let landlock = report
        .layers
        .iter()
        .find(|l| l.layer == Layer::Landlock)
        .expect("landlock reported");
    assert_eq!(landlock.status.name(), "unavailable", "{landlock:?}");
    pool.shutdown(Duration::from_secs(5));
}

/// One thread as /proc sees it: (tid, Seccomp, NoNewPrivs).
type ThreadSeen = (i32, Option<u32>, Option<u32>);

/// Seccomp / NoNewPrivs of every thread of `pid` (from /proc/PID/task/*/status), or `None`
/// once the process is gone.
fn threads_of(pid: i32) -> Option<Vec<ThreadSeen>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let dec = |n: &str| field(&status, n).and_then(|v| v.parse().ok());
        out.push((tid, dec("Seccomp"), dec("NoNewPrivs")));
    }
    Some(out)
}

/// An S3 hound with concurrent uploads starts threads after confinement: seen from outside
/// while it uploads, every one of its threads is in seccomp filter mode with no_new_privs.
#[test]
fn upload_threads_of_an_s3_hound_are_confined() {
    use houndpool_tests::s3::{free_port, s3_config, Server};
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server::start(port, data.path());
    let config = PoolConfig {
        size: PoolSize::Fixed(1),
        prestart: false,
        ..s3_config(data.path(), port, None, 8)
    };
    let (pool, rx) = start(config);
    let pid = pid_of(&pool, 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (most, checked) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let (mut most, mut checked) = (0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(threads) = threads_of(pid) else {
                    break;
                };
                for (tid, seccomp, nnp) in &threads {
                    assert_eq!(*seccomp, Some(2), "hound {pid} thread {tid}: Seccomp");
                    assert_eq!(*nnp, Some(1), "hound {pid} thread {tid}: NoNewPrivs");
                    checked += 1;
                }
                most = most.max(threads.len());
            }
            (most, checked)
        });
        let mut accepted = 0;
        for round in 0..20u32 {
            for n in 0..32u32 {
                let ev = format!("upload {round} {n} ").repeat(64);
                if pool.submit(&Job::evacuate(ev.as_bytes())).is_ok() {
                    accepted += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = collect(&rx, accepted, Duration::from_secs(120));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(out.len(), accepted);
        for o in &out {
            assert!(matches!(o.result, OutcomeKind::Completed(_)), "{o:?}");
        }
        watcher.join().expect("watcher")
    });
    assert!(most > 1, "never saw an upload thread (at most {most} task)");
    assert!(checked > 0);
    pool.shutdown(Duration::from_secs(5));
}

/// A hound binary from another build (`hound_binary` pointing at an old hound) is refused at
/// the handshake with both versions named, not met later as a stream of protocol violations.
#[test]
fn a_hound_of_another_protocol_version_fails_build_naming_both() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("old-protocol");
    std::fs::create_dir_all(&cold).unwrap();
    let config = PoolConfig {
        size: PoolSize::Fixed(1),
        prestart: false,
        hound_binary: HoundBinary::Path(escape_binary()),
        ..test_config(&cold)
    };
    let err = Pool::builder()
        .config(config)
        .build()
        .map(|_| ())
        .expect_err("a hound of another protocol version must fail build");
    let text = err.to_string();
    let ours = houndpool_protocol::HOUND_PROTOCOL_VERSION;
    assert!(
        text.contains(&format!(
            "hound speaks protocol {}, supervisor {ours}",
            ours - 1
        )),
        "{text}"
    );
    assert_no_hounds_left();
}
