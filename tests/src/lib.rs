//! Helpers for houndpool's end-to-end tests: the real `hound` binary, a test configuration,
//! outcome collection, and checks that no hound process outlives its pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub mod s3;

use crossbeam_channel::Receiver;
use houndpool::{
    ColdConfig, HoundBinary, JobId, Outcome, Pool, PoolConfig, PoolExhaustedAction, PoolSize,
};

/// A `cargo` command (the one running the tests, else `cargo` on PATH) without the variables
/// cargo sets for this test crate (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...). Build scripts that
/// declare them with rerun-if-env-changed (ring does) would otherwise be rebuilt by this inner
/// cargo, and again by the next outer one: without them both see the same environment.
pub fn cargo_command() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The crates the `hound` and `hound-escape` executables are built from.
pub const HOUND_CRATES: &[&str] = &["hound", "protocol", "cold"];

/// The real `hound` executable of this workspace (`HOUNDPOOL_HOUND_BIN` if set), built by
/// [`workspace_binary`] when missing or stale.
pub fn hound_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("HOUNDPOOL_HOUND_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_binary("hound", HOUND_CRATES),
    })
    .clone()
}

/// The executable `name` of this workspace in the test's own profile directory
/// (`target/<profile>/<name>`).
///
/// `cargo test --workspace` builds every binary of the workspace (the packages have
/// integration tests, so cargo builds their binaries with the workspace's unified features).
/// It is rebuilt here, with that same command (`cargo build --workspace --bins`, `--release`
/// for a release test), only when missing or older than a source file of `crates` (their
/// `src/` and `Cargo.toml`) or `Cargo.lock`: building it with `-p` alone resolves features
/// differently and would relink it on every run. Panics if the build fails or does not
/// produce the file.
pub fn workspace_binary(name: &str, crates: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let bin = profile_dir.join(name);
    if is_fresh(&bin, crates) {
        return bin;
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = cargo_command();
    cmd.args(["build", "--quiet", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {name}: {e}"));
    assert!(status.success(), "building {name} failed");
    assert!(bin.is_file(), "{name} missing at {}", bin.display());
    bin
}

/// The test-only `hound-escape` binary (hound feature `escape-test`) next to the `hound` binary,
/// built when missing or older than the sources it is made of (same rule as
/// [`workspace_binary`], but with `-p houndpool-hound --features escape-test`: the feature is
/// not part of the workspace build).
pub fn escape_binary() -> PathBuf {
    let bin = hound_binary().with_file_name("hound-escape");
    if !is_fresh(&bin, HOUND_CRATES) {
        let status = cargo_command()
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

/// Whether `bin` exists and is newer than every source file of `crates` and `Cargo.lock`.
fn is_fresh(bin: &Path, crates: &[&str]) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack: Vec<PathBuf> = crates
        .iter()
        .flat_map(|c| [root.join(c).join("src"), root.join(c).join("Cargo.toml")])
        .collect();
    stack.push(root.join("Cargo.lock"));
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return false;
        }
    }
    true
}

/// Serialises process-level tests within one test binary so that the /proc checks see only
/// the current test's hounds.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A small, fast configuration: 2 hounds, 64 KiB evidence, filesystem store in `dir`.
pub fn test_config(dir: &Path) -> PoolConfig {
    PoolConfig {
        size: PoolSize::Fixed(2),
        exhausted: PoolExhaustedAction::Defer { limit: 100_000 },
        hound_binary: HoundBinary::Path(hound_binary()),
        cold: ColdConfig::Filesystem {
            root: dir.to_path_buf(),
            prefix: "evidence/".into(),
        },
        max_evidence_bytes: 64 * 1024,
        max_output_bytes: 64 * 1024,
        job_timeout: Duration::from_secs(5),
        hound_stderr: true,
        ..PoolConfig::default()
    }
}

/// Builds a pool from `config` and returns it with its outcome receiver.
pub fn start(config: PoolConfig) -> (Pool, Receiver<Outcome>) {
    let pool = Pool::builder().config(config).build().expect("pool builds");
    let rx = pool.outcomes().expect("outcome channel enabled");
    (pool, rx)
}

/// Receives outcomes until `n` have arrived or `timeout` passes.
pub fn collect(rx: &Receiver<Outcome>, n: usize, timeout: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(o) => out.push(o),
            Err(_) => break,
        }
    }
    out
}

/// Asserts that every id in `accepted` has exactly one outcome in `outcomes`, and no outcome
/// names another id. Returns the outcomes by id.
pub fn assert_exactly_one_each(
    accepted: &[JobId],
    outcomes: &[Outcome],
) -> HashMap<JobId, Outcome> {
    let mut by_id: HashMap<JobId, Outcome> = HashMap::with_capacity(outcomes.len());
    for o in outcomes {
        assert!(
            by_id.insert(o.job_id, o.clone()).is_none(),
            "duplicate outcome for {}",
            o.job_id
        );
    }
    for id in accepted {
        assert!(by_id.contains_key(id), "no outcome for accepted {id}");
    }
    assert_eq!(
        by_id.len(),
        accepted.len(),
        "outcomes for jobs that were never accepted"
    );
    by_id
}

/// Pids of this process's children whose command name is `hound` (any state, zombies included).
pub fn hound_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ppid = rest.get(1).and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(me) && comm == "hound" {
            pids.push(pid);
        }
    }
    pids
}

/// Asserts that no hound child of this process exists (running or zombie).
pub fn assert_no_hounds_left() {
    let left = hound_children();
    assert!(left.is_empty(), "hound processes left behind: {left:?}");
}

/// Polls `probe` every 5 ms until it returns `Some`, for up to 10 s; panics with `what` then.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid of the hound in `slot`, waiting up to 10 s for the slot to be filled.
pub fn pid_of(pool: &houndpool::Pool, slot: u32) -> i32 {
    wait_for(&format!("slot {slot} never got a hound"), || {
        pool.stats().hounds[slot as usize].pid.map(|p| p as i32)
    })
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

/// A pool of one hound, stopped (SIGSTOP) once it is ready, with room for `in_flight` jobs
/// and `action` once they are taken: the pool is exhausted after `in_flight` submits. Returns
/// the pool and the hound's pid (to SIGCONT it).
pub fn stalled_pool(
    dir: &Path,
    action: houndpool::PoolExhaustedAction,
    in_flight: usize,
) -> (houndpool::Pool, i32) {
    let config = PoolConfig {
        size: houndpool::PoolSize::Fixed(1),
        exhausted: action,
        max_in_flight_per_hound: in_flight,
        job_timeout: std::time::Duration::from_secs(60),
        ..test_config(dir)
    };
    let pool = houndpool::Pool::builder().config(config).build().unwrap();
    let pid = pid_of(&pool, 0);
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    (pool, pid)
}

/// The object stored under `key` in the filesystem store at `root`, read as the store reads
/// it: its key file, else its record in a commit journal not yet materialised (a `Completed`
/// evacuation is readable at once, but its key file may appear only later). Panics if there
/// is none.
pub fn stored_object(root: &Path, key: &str) -> Vec<u8> {
    use houndpool_cold::ColdStore;
    let mut store = houndpool_cold::fs::FsStore::open(root).expect("open the store");
    store
        .get(key, 1 << 30)
        .unwrap_or_else(|e| panic!("object {key} under {}: {e}", root.display()))
}

/// Whether an object is stored under `key` (see [`stored_object`]).
pub fn object_exists(root: &Path, key: &str) -> bool {
    use houndpool_cold::ColdStore;
    houndpool_cold::fs::FsStore::open(root)
        .and_then(|mut s| s.get(key, 1 << 30))
        .is_ok()
}

/// What [`evacuate_under_kills`] submitted: the accepted jobs in order, each one's evidence id
/// and evidence, and how many hounds it SIGKILLed.
pub struct KilledRun {
    /// Accepted job ids, in submission order.
    pub accepted: Vec<JobId>,
    /// Evidence id and evidence of each accepted job.
    pub evidence_of: HashMap<JobId, (houndpool::Uuid, Vec<u8>)>,
    /// Hounds killed.
    pub kills: u32,
}

/// Submits bursts of 32 evacuations of `evidence(n)` to a pool of (at least) two hounds for
/// `run`, sleeping 10 ms between bursts so several jobs wait in each ring and hounds store
/// batches, and SIGKILLs slots 0 and 1 in turn every 100 ms, mostly in the middle of a batch.
/// Refused submits are skipped (not counted as accepted).
pub fn evacuate_under_kills(
    pool: &Pool,
    evidence: impl Fn(u32) -> Vec<u8>,
    run: Duration,
) -> KilledRun {
    let mut out = KilledRun {
        accepted: Vec::new(),
        evidence_of: HashMap::new(),
        kills: 0,
    };
    let mut n = 0u32;
    let end = Instant::now() + run;
    let mut next_kill = Instant::now() + Duration::from_millis(100);
    while Instant::now() < end {
        for _ in 0..32 {
            let ev = evidence(n);
            n += 1;
            if let Ok(ticket) = pool.submit(&houndpool::Job::evacuate(&ev)) {
                out.accepted.push(ticket.job_id);
                out.evidence_of
                    .insert(ticket.job_id, (ticket.evidence_id, ev));
            }
        }
        if Instant::now() >= next_kill {
            if let Some(pid) = pool.stats().hounds[(out.kills % 2) as usize].pid {
                signal(pid as i32, nix::sys::signal::Signal::SIGKILL);
                out.kills += 1;
            }
            next_kill += Duration::from_millis(100);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

/// Evidence of job `n`: 4 KiB, distinct per job and per `tag` (see [`evidence_of`]).
pub fn evidence_4k(tag: &str, n: u32) -> Vec<u8> {
    evidence_of(tag, n, 4096)
}

/// Evidence of job `n`: `len` bytes (at least the prefix), distinct per job and per `tag`,
/// moderately compressible (a text prefix, then xorshift letters from a 16-letter alphabet).
pub fn evidence_of(tag: &str, n: u32, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}{n} ").into_bytes();
    let mut x = n.wrapping_mul(2_654_435_761) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(b'a' + (x % 16) as u8);
    }
    v
}
