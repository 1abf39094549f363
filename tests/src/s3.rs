//! A real S3-compatible server for end-to-end tests: rclone on 127.0.0.1, started and stopped
//! by scripts/s3-server.sh, and a pool configuration that evacuates to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use houndpool::{ColdConfig, PoolConfig, S3Target};

/// Access key the test server accepts.
pub const AK: &str = "houndpool-ak";
/// Secret key the test server accepts.
pub const SK: &str = "houndpool-sk";
/// Bucket the tests use (a directory below the server's data directory).
pub const BUCKET: &str = "houndpool";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh")
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running rclone S3 server on 127.0.0.1; stopped on drop.
pub struct Server {
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts the server on `port`, serving `dir` (buckets are its subdirectories). Panics
    /// with the script's error when rclone is missing.
    pub fn start(port: u16, dir: &Path) -> Server {
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .arg(dir)
            .env("HOUNDPOOL_S3_ACCESS_KEY", AK)
            .env("HOUNDPOOL_S3_SECRET_KEY", SK)
            .output()
            .expect("run scripts/s3-server.sh");
        assert!(
            out.status.success(),
            "could not start the S3 test server (scripts/s3-server.sh needs rclone): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Server { port }
    }

    /// Stops the server (idempotent).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.port.to_string()])
            .status();
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
