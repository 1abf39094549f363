//! The validated settings, one struct per section, and [`Config`], all of them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use houndpool_protocol::control::SandboxPolicy;

/// How many hounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSizeSetting {
    /// From the process's cgroup limits (CPU and memory), ARCHITECTURE §3.5.
    Auto,
    /// Exactly this many (1..=256).
    Fixed(usize),
}

/// `[pool] exhausted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedSetting {
    /// Bounded defer queue of `defer_limit` jobs.
    Defer,
    /// Refuse.
    Drop,
    /// Refuse and escalate.
    Escalate,
}

impl ExhaustedSetting {
    /// The word used in the file.
    pub fn name(self) -> &'static str {
        match self {
            ExhaustedSetting::Defer => "defer",
            ExhaustedSetting::Drop => "drop",
            ExhaustedSetting::Escalate => "escalate",
        }
    }
}

/// `[pool]`: the pool itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Number of hounds.
    pub size: PoolSizeSetting,
    /// Memory kept for the host when `size` is `Auto`, bytes.
    pub host_reserve_bytes: u64,
    /// Exhaustion behaviour.
    pub exhausted: ExhaustedSetting,
    /// Defer queue capacity (1..=10 000 000).
    pub defer_limit: usize,
    /// Largest evidence body (1 B..=256 MiB).
    pub max_evidence_bytes: usize,
    /// Largest decoded output (1 B..=256 MiB).
    pub max_output_bytes: usize,
    /// gzip level (0..=9).
    pub gzip_level: u8,
    /// Watchdog deadline (10 ms..=1 h).
    pub job_timeout: Duration,
    /// Ring depth per hound (1..=65 536).
    pub max_in_flight_per_hound: usize,
    /// Outcome channel capacity (1..=16 777 216).
    pub outcome_capacity: usize,
    /// Hound spin before sleeping (≤ 100 ms).
    pub hound_spin: Duration,
    /// Hound idle poll (1 ms..=60 s).
    pub hound_idle_poll: Duration,
    /// Collector spin (≤ 100 ms).
    pub collector_spin: Duration,
    /// Handshake deadline (100 ms..=10 min).
    pub start_timeout: Duration,
    /// RLIMIT_AS of each hound, bytes; 0 = unlimited.
    pub hound_memory_budget_bytes: u64,
    /// Hound executable; `None` = automatic.
    pub hound_binary: Option<PathBuf>,
    /// Hounds' stderr passed through.
    pub hound_stderr: bool,
    /// One hound kept started ahead of demand (fast replacement).
    pub prestart: bool,
}

/// S3 credentials, taken from the standard AWS environment variables. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN`, if set.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key", &"<redacted>")
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// S3-compatible cold storage settings (`[cold] backend = "s3"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL (http:// or https://).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Signing region (resolved: never empty).
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Spool directory (absolute), if any.
    pub spool_dir: Option<PathBuf>,
    /// Spool size limit, bytes.
    pub spool_limit_bytes: u64,
    /// Credentials from the environment.
    pub credentials: S3Credentials,
    /// CA bundle trusted in addition to the built-in web roots, if any.
    pub ca_file: Option<PathBuf>,
    /// Re-resolution period of the endpoint's host name.
    pub resolve_interval: std::time::Duration,
    /// Most uploads each hound runs at once (`cold.s3_concurrency`).
    pub concurrency: u16,
}

/// Which cold store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdBackend {
    /// None: evacuate, restore and erase fail.
    None,
    /// A directory.
    Filesystem {
        /// The directory (relative paths are relative to the daemon's working directory).
        path: PathBuf,
    },
    /// An S3-compatible service.
    S3(S3Settings),
}

/// `[cold]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSettings {
    /// The backend and its settings.
    pub backend: ColdBackend,
    /// Object key prefix (empty, or a valid key prefix).
    pub prefix: String,
    /// How the filesystem store commits (`cold.fs_commit`).
    pub fs_commit: houndpool_protocol::control::FsCommit,
}

/// `[daemon]`: the Unix-socket server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Socket path.
    pub socket: PathBuf,
    /// Socket file mode (≤ 0o777).
    pub socket_mode: u32,
    /// Allowed peer uids; empty = no uid check.
    pub allowed_uids: Vec<u32>,
    /// Connections at once (1..=65 536).
    pub max_connections: usize,
    /// Per-connection bound on accepted, not yet written outcomes (1..=1 048 576).
    pub outcome_buffer: usize,
    /// Write stall after which a client is disconnected (100 ms..=10 min).
    pub write_stall_timeout: Duration,
    /// Largest client frame body; `None` = derived from the pool limits.
    pub max_frame_bytes: Option<u32>,
    /// Drain grace on SIGTERM / SIGINT (≤ 1 h).
    pub drain_grace: Duration,
    /// Connections per peer uid; 0 = no cap.
    pub max_connections_per_uid: usize,
    /// Time allowed to complete a started frame (100 ms..=10 min).
    pub frame_timeout: Duration,
    /// Idle time after which a connection with nothing in flight is closed (1 s..=24 h).
    pub idle_timeout: Duration,
    /// Daemon-wide buffer budget; `None` = derived from `pool.host_reserve_bytes`.
    pub buffer_budget_bytes: Option<u64>,
}

/// `[ops]`: the HTTP operations endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsSettings {
    /// Listen address; `None` = disabled.
    pub addr: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// tracing filter directives (validated by the daemon, which owns the subscriber).
    pub level: String,
    /// One JSON object per line instead of text (`log.format = "json"`).
    pub json: bool,
}

/// The whole daemon configuration, validated: every value is within its documented range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[pool]`.
    pub pool: PoolSettings,
    /// `[cold]`.
    pub cold: ColdSettings,
    /// `[sandbox]`: per-layer modes.
    pub sandbox: SandboxPolicy,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[ops]`.
    pub ops: OpsSettings,
    /// `[log]`.
    pub log: LogSettings,
}
