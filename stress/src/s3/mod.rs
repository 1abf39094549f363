//! `s3`: `Evacuate` of 4 KiB evidence to an S3-compatible server through pools of 1..=cores
//! hounds, with every HTTP request held for a fixed latency on its way there (issue 11).
//!
//! The server is rclone (`rclone serve s3`, as the tests and `scripts/s3-server.sh` start it)
//! on an ephemeral loopback port, serving a temporary directory; the hounds' S3 endpoint is a
//! [`proxy::Proxy`] in front of it that delays each request (20 ms by default), so the pool
//! sees the round trips of a real object store while every byte stays on loopback. The pools
//! use the default configuration apart from size and cold target, so whatever the default S3
//! client does (one or several uploads in flight per hound) is what is measured.
//!
//! Checked, not assumed: every accepted job ends `Completed`, uploaded and not spooled (there
//! is no spool: an upload that fails fails the job, and the scenario); every receipt's object is
//! on the server's disk and verifies as an envelope; the proxy forwarded at least one request
//! per job; the pool's books balance after shutdown.
//!
//! Without rclone (neither `HOUNDPOOL_RCLONE` nor `rclone` on PATH) the scenario is skipped:
//! a message on stderr, an empty `s3` list and the reason in `s3_skipped`.

mod drain;
pub mod proxy;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use houndpool::{ColdConfig, Pool, PoolConfig, PoolExhaustedAction, S3Target};
use houndpool_protocol::envelope;

use crate::encode::{four_k_items, stream, Plan};
use crate::report::{EncodeKind, S3DrainResult, S3Result};
use crate::util::{bench_config, Ctx, Result, StressError};

/// Delay per request when `--s3-latency-ms` is not given, ms.
pub const DEFAULT_LATENCY_MS: u64 = 20;
/// The bucket (a directory of the served tree).
const BUCKET: &str = "hound-stress";
/// Access key id the server is started with (the secret is random per run).
const ACCESS_KEY: &str = "hound-stress";
/// Outstanding jobs per hound while streaming: deeper than `encode`'s 16, so that a hound that
/// keeps several uploads in flight always has the next jobs waiting in its ring.
const PER_HOUND_WINDOW: usize = 32;
/// Envelopes the recovery row spools and drains (`--quick`, full).
const DRAIN_ENVELOPES_QUICK: usize = 300;
const DRAIN_ENVELOPES: usize = 3_000;
/// How long rclone may take to answer on its port.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// What the scenario produced.
#[derive(Debug, Default)]
pub struct S3Run {
    /// One result per pool size (empty if skipped).
    pub results: Vec<S3Result>,
    /// Why the scenario was skipped, if it was.
    pub skipped: Option<String>,
    /// The recovery row ([`drain`]), at pool = cores.
    pub drain: Option<S3DrainResult>,
}

/// Runs the scenario with `latency_ms` of delay per request.
pub fn run(ctx: &Ctx, latency_ms: u64) -> Result<S3Run> {
    let rclone = match find_rclone()? {
        Some(p) => p,
        None => {
            let why = "rclone not found: set HOUNDPOOL_RCLONE to an rclone binary \
                       (scripts/s3-server.sh rclone-path prints one) or put rclone on PATH"
                .to_string();
            eprintln!("hound-stress: s3 skipped: {why}");
            return Ok(S3Run {
                results: Vec::new(),
                skipped: Some(why),
                drain: None,
            });
        }
    };
    let data = tempfile::Builder::new()
        .prefix("hound-stress-s3-")
        .tempdir()
        .map_err(StressError::io("create the S3 server's directory"))?;
    let server = Rclone::start(&rclone, data.path())?;
    let latency = Duration::from_millis(latency_ms);
    let proxy = proxy::Proxy::start(server.addr, latency)
        .map_err(StressError::io("start the latency proxy"))?;
    let items = four_k_items();
    let bar = ctx.bar(ctx.cores as u64, "s3");
    let mut results = Vec::new();
    for hounds in 1..=ctx.cores {
        let (jobs_per_sec, bytes_per_sec) =
            pool_rate(ctx, &server, &proxy, data.path(), &items, hounds)?;
        results.push(S3Result {
            latency_ms,
            pool: hounds,
            jobs_per_sec,
            mb_per_sec: bytes_per_sec / 1e6,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let drain = drain::measure(
        &server,
        &proxy,
        data.path(),
        &items,
        ctx.cores,
        ctx.pick(DRAIN_ENVELOPES_QUICK, DRAIN_ENVELOPES),
        latency_ms,
    )?;
    if proxy.errors() > 0 {
        return Err(StressError::Unexpected(format!(
            "the latency proxy closed {} connection(s) it could not frame or forward",
            proxy.errors()
        )));
    }
    // Proxy first (its connections point at the server), then the server, then its files.
    drop(proxy);
    drop(server);
    drop(data);
    Ok(S3Run {
        results,
        skipped: None,
        drain: Some(drain),
    })
}

/// (jobs/s, evidence bytes/s) of a pool of `hounds` evacuating to the server through the proxy.
fn pool_rate(
    ctx: &Ctx,
    server: &Rclone,
    proxy: &proxy::Proxy,
    root: &Path,
    items: &[Vec<u8>],
    hounds: usize,
) -> Result<(f64, f64)> {
    let label = format!("s3 pool of {hounds}");
    let prefix = format!("pool-{hounds}/");
    let pool = Pool::builder()
        .config(PoolConfig {
            cold: ColdConfig::S3(S3Target {
                endpoint: format!("http://{}", proxy.addr()),
                bucket: BUCKET.into(),
                prefix: prefix.clone(),
                region: "us-east-1".into(),
                path_style: true,
                access_key: ACCESS_KEY.into(),
                secret_key: server.secret.clone(),
                session_token: None,
                // No spool: an upload that does not succeed fails its job, so a measurement
                // never counts envelopes that only reached the local disk.
                spool_dir: None,
                spool_limit_bytes: 0,
            }),
            exhausted: PoolExhaustedAction::Drop,
            ..bench_config(hounds)
        })
        .build()?;
    let requests_before = proxy.requests();
    let window = hounds * PER_HOUND_WINDOW;
    let plan = Plan {
        label: label.clone(),
        kind: EncodeKind::Evacuate,
        items,
        window,
        // Half a window: the ring is full from the first submit, so the hound is busy at its
        // steady pace from the start; at 20 ms per request completions come slowly, and
        // --quick must stay a few seconds per pool size.
        warm_jobs: window / 2,
        measure: Duration::from_secs_f64(ctx.pick(1.5, 10.0)),
    };
    let mut keys = Vec::new();
    let r = stream(&pool, &plan, &mut |receipt| {
        if receipt.spooled {
            return Err(StressError::Unexpected(format!(
                "{label}: an envelope was spooled instead of uploaded"
            )));
        }
        let key = receipt.key.clone().ok_or_else(|| {
            StressError::Unexpected(format!("{label}: a completed evacuation without a key"))
        })?;
        keys.push(key);
        Ok(())
    });
    let stats = pool.shutdown(Duration::from_secs(30));
    let r = r?;
    if stats.failed + stats.timed_out + stats.dropped > 0
        || stats.in_flight != 0
        || stats.completed != stats.accepted
        || !stats.identity_holds()
    {
        return Err(StressError::Unexpected(format!(
            "{label}: {} accepted, {} completed, {} failed, {} timed out, {} dropped, {} in \
             flight after shutdown",
            stats.accepted,
            stats.completed,
            stats.failed,
            stats.timed_out,
            stats.dropped,
            stats.in_flight
        )));
    }
    if stats.completed != keys.len() as u64 {
        return Err(StressError::Unexpected(format!(
            "{label}: the pool completed {} jobs, the outcome channel delivered {}",
            stats.completed,
            keys.len()
        )));
    }
    let forwarded = proxy.requests() - requests_before;
    if forwarded < keys.len() as u64 {
        return Err(StressError::Unexpected(format!(
            "{label}: {} uploads but only {forwarded} requests through the proxy",
            keys.len()
        )));
    }
    for key in &keys {
        check_object(root, key).map_err(|e| StressError::Unexpected(format!("{label}: {e}")))?;
    }
    Ok(r)
}

/// Whether the object `key` is on the server's disk, with the key's prefix, and verifies.
fn check_object(root: &Path, key: &str) -> std::result::Result<(), String> {
    // Keys come from our own pool's receipts, but stay inside the bucket all the same.
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("receipt key {key:?} is not a plain object key"));
    }
    let path = root.join(BUCKET).join(key);
    let bytes = std::fs::read(&path).map_err(|e| format!("object {key}: {e}"))?;
    envelope::verify(&bytes).map_err(|e| format!("object {key} does not verify: {e}"))?;
    Ok(())
}

/// The rclone binary: `HOUNDPOOL_RCLONE` if set (an error if it is not an executable file),
/// else `rclone` from PATH if it runs, else `None`.
fn find_rclone() -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("HOUNDPOOL_RCLONE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(Some(p))
        } else {
            Err(StressError::Unexpected(format!(
                "HOUNDPOOL_RCLONE={} is not an executable file",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("rclone"))
        .find(|c| is_executable(c));
    // A wrapper on PATH (a version-manager shim) may exist without a working rclone behind it.
    Ok(found.filter(|c| {
        Command::new(c)
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command running `program` that dies with this process: through `setpriv --pdeathsig
/// KILL` (util-linux) where that is installed, so a hound-stress that is itself killed (a
/// SIGKILL from CI's timeout, an operator's `kill -9`) leaves no server holding a port behind.
/// The parent-death signal follows the thread that spawned the child, so this is used only
/// from the thread that owns the server for the whole scenario. Without `setpriv` the
/// program runs plainly (and is still killed on drop).
fn orphan_proof(program: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if is_executable(Path::new(SETPRIV)) {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running `rclone serve s3` on 127.0.0.1; killed and reaped on drop.
struct Rclone {
    child: Child,
    addr: SocketAddr,
    secret: String,
}

impl Rclone {
    /// Serves `root` (its directory `BUCKET` is the bucket) on an ephemeral loopback port.
    fn start(rclone: &Path, root: &Path) -> Result<Rclone> {
        std::fs::create_dir_all(root.join(BUCKET))
            .map_err(StressError::io("create the bucket directory"))?;
        let secret = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let log = root.join("rclone.log");
        let mut last = String::new();
        // The port is picked free and then given to rclone: another process may take it in
        // between, so a start that fails is tried again on a new port.
        for _ in 0..3 {
            let addr = free_port()?;
            let log_file =
                std::fs::File::create(&log).map_err(StressError::io("create the rclone log"))?;
            let child = orphan_proof(rclone)
                .args(["serve", "s3"])
                .arg(root)
                .arg("--addr")
                .arg(addr.to_string())
                // Without --auth-key rclone would serve anonymous requests.
                .arg("--auth-key")
                .arg(format!("{ACCESS_KEY},{secret}"))
                .args(["--config", "/dev/null", "--log-level", "NOTICE"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(StressError::io("start rclone"))?;
            let mut server = Rclone {
                child,
                addr,
                secret: secret.clone(),
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                    last = format!("{e}; rclone log: {}", tail.join(" | "));
                }
            }
        }
        Err(StressError::Unexpected(format!(
            "rclone did not start serving S3: {last}"
        )))
    }

    fn wait_ready(&mut self) -> std::result::Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let answers =
                TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok();
            // Checked after the connect too: what answered must be this rclone, not another
            // process that took the port first (rclone then exits: address in use).
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("rclone exited ({status}) before serving"));
            }
            if answers {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "rclone did not answer on {} within {START_DEADLINE:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(StressError::io("find a free loopback port"))
}
