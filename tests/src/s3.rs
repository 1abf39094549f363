//! A real S3-compatible server for end-to-end tests: `rclone serve s3` on loopback, a child of
//! the test process that dies with it, and a pool configuration that evacuates to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use houndpool::{ColdConfig, PoolConfig, S3Target};

/// Access key the test server accepts.
pub const AK: &str = "houndpool-ak";
/// Secret key the test server accepts.
pub const SK: &str = "houndpool-sk";
/// Bucket the tests use (a directory below the server's data directory).
pub const BUCKET: &str = "houndpool";

/// How long a server may take to answer on its port.
const START_WAIT: Duration = Duration::from_secs(20);

/// The rclone binary: `$HOUNDPOOL_RCLONE`, else what `scripts/s3-server.sh rclone-path` finds
/// (PATH, or installed with pip). Panics with the script's error when there is none.
pub fn rclone() -> PathBuf {
    if let Some(p) = std::env::var_os("HOUNDPOOL_RCLONE") {
        return p.into();
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh"))
        .arg("rclone-path")
        .output()
        .expect("run scripts/s3-server.sh rclone-path");
    assert!(
        out.status.success(),
        "no rclone (set HOUNDPOOL_RCLONE): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A command running `rclone` that dies with the thread that spawns it: through `setpriv
/// --pdeathsig KILL` (util-linux) where that is installed, so a test process that is killed
/// (SIGKILL from a timeout, ^C twice) leaves no server holding a port. The parent-death
/// signal follows the spawning thread, so a server must live no longer than the test (thread)
/// that started it; every test here owns its servers. Without `setpriv` rclone runs plainly
/// and is still killed on drop.
pub fn rclone_command(rclone: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).is_file() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--"]).arg(rclone);
        c
    } else {
        Command::new(rclone)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running rclone S3 server on 127.0.0.1, a child of this process; killed and reaped by
/// [`Server::stop`] or on drop.
pub struct Server {
    /// Its port.
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl Server {
    /// Starts the server on `port`, serving `dir` (buckets are its subdirectories; [`BUCKET`]
    /// is created), and waits until it answers. Panics when rclone is missing or does not
    /// answer, with the end of its log.
    pub fn start(port: u16, dir: &Path) -> Server {
        std::fs::create_dir_all(dir.join(BUCKET)).expect("create the bucket directory");
        let log_path = std::env::temp_dir().join(format!("houndpool-s3-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("create the rclone log");
        let child = rclone_command(&rclone())
            .args(["serve", "s3"])
            .arg(dir)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--auth-key", &format!("{AK},{SK}")])
            .args(["--config", "/dev/null", "--log-level", "NOTICE"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rclone");
        let server = Server {
            port,
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + START_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "the S3 test server did not answer on 127.0.0.1:{port} ({}); its log {}:\n{log}",
                    if exited { "rclone exited" } else { "timed out" },
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Stops the server: SIGKILL and reap (idempotent).
    pub fn stop(&self) {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`crate::test_config`] evacuating to the server on `port` (bucket [`BUCKET`], prefix
/// `evidence/`), spooling to `spool` if given, with `concurrency` uploads per hound.
pub fn s3_config(dir: &Path, port: u16, spool: Option<&Path>, concurrency: u16) -> PoolConfig {
    let mut config = PoolConfig {
        cold: ColdConfig::S3(S3Target {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: BUCKET.into(),
            prefix: "evidence/".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: AK.into(),
            secret_key: SK.into(),
            session_token: None,
            spool_dir: spool.map(|p| p.display().to_string()),
            spool_limit_bytes: 256 << 20,
        }),
        ..crate::test_config(dir)
    };
    config.cold_net.s3_concurrency = concurrency;
    config
}

/// Spools `n` envelopes of generated evidence (`seed`) under `{key_prefix}{i:05}` through a
/// store of this process for `target`, whose endpoint must be down: one attempt each, so
/// each put is spooled at once. Returns them as (key, envelope), in order.
pub fn spool_while_down(
    target: &S3Target,
    key_prefix: &str,
    n: usize,
    seed: u64,
) -> Vec<(String, Vec<u8>)> {
    use houndpool_cold::s3::{S3Store, S3Tuning};
    use houndpool_cold::{ColdStore, PutOutcome};

    let mut filler = S3Store::open_with(
        target,
        S3Tuning {
            attempts: 1,
            ..S3Tuning::default()
        },
    )
    .expect("a store for the target");
    let mut g = houndpool::synth::EvidenceGenerator::new(seed);
    (0..n)
        .map(|i| {
            let key = format!("{key_prefix}{i:05}");
            let env =
                houndpool_protocol::envelope::encode(&g.request(300 + i % 700), 1).expect("encode");
            let put = filler.put(&key, &env).expect("a put while down");
            assert_eq!(put, PutOutcome::Spooled, "{key}");
            (key, env)
        })
        .collect()
}
