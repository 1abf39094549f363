//! The configuration of the `houndd` daemon: a TOML file whose every key can be overridden by an
//! environment variable `HOUNDPOOL_<SECTION>_<KEY>` (the Kubernetes ConfigMap style).
//!
//! * Sections: `[pool]`, `[cold]`, `[sandbox]`, `[daemon]`, `[ops]`, `[log]`. Every key is listed
//!   in [`KEYS`] with its default and meaning (docs/CONFIGURATION.md is the same list in prose).
//! * An empty file is valid: every key has a default.
//! * `HOUNDPOOL_POOL_SIZE=4` overrides `[pool] size`; the key part is the key in upper case.
//!   Variables whose section part is not a known section (`HOUNDPOOL_HOUND_BIN`, `HOUNDPOOL_LOG`)
//!   are not configuration and are ignored here; a variable naming a known section but an
//!   unknown key is an error, so that a misspelt ConfigMap entry fails loudly.
//! * Every error names the key (and the variable, when the value came from one), the bad value
//!   and what is allowed ([`SharedError::InvalidConfig`]).
//! * S3 credentials are never part of the file: they come from `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, and are never printed.
//!
//! This module only parses and validates. Turning a [`Config`] into a running pool is the
//! supervisor's job (`houndpool::daemon::config`), since this crate cannot depend on it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use houndpool_protocol::control::{Layer, LayerMode, SandboxPolicy};
use toml::Value;

use crate::SharedError;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "HOUNDPOOL_";

/// The sections of the file, in the order they are documented and printed.
pub const SECTIONS: [&str; 6] = ["pool", "cold", "sandbox", "daemon", "ops", "log"];

/// The TOML type a key takes. Values from environment variables are converted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A non-negative integer (the variable's text in decimal; `_` separators allowed).
    Integer,
    /// An integer, or one of the words the key's documentation names (e.g. `auto`).
    IntegerOrWord,
    /// `true` or `false`.
    Bool,
    /// A string.
    String,
    /// A list of integers (in a variable: comma-separated).
    IntegerList,
}

/// One configuration key: where it lives, its type, its default and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Section name, one of [`SECTIONS`].
    pub section: &'static str,
    /// Key name inside the section (lowercase snake case).
    pub key: &'static str,
    /// Its type.
    pub kind: ValueKind,
    /// The default as written in TOML.
    pub default: &'static str,
    /// One-line meaning.
    pub doc: &'static str,
}

impl KeyInfo {
    /// `section.key`.
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
    /// `HOUNDPOOL_SECTION_KEY`.
    pub fn env_name(&self) -> String {
        format!(
            "{ENV_PREFIX}{}_{}",
            self.section.to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }
}

macro_rules! key {
    ($section:literal, $key:literal, $kind:ident, $default:literal, $doc:literal) => {
        KeyInfo {
            section: $section,
            key: $key,
            kind: ValueKind::$kind,
            default: $default,
            doc: $doc,
        }
    };
}

/// Every configuration key. A key not listed here is refused, in the file and in the
/// environment alike.
pub static KEYS: &[KeyInfo] = &[
    // ---- [pool]
    key!("pool", "size", IntegerOrWord, "\"auto\"", "number of hounds, 1 to 256, or \"auto\": min(CPUs, (memory limit − host_reserve_bytes) / (hound_memory_budget_bytes + ring memory)) from the process's cgroup limits"),
    key!("pool", "host_reserve_bytes", Integer, "268435456", "memory kept for houndd itself (defer queue and outcome buffers included) when size = \"auto\" divides the memory limit among hounds"),
    key!("pool", "exhausted", String, "\"defer\"", "what submit does when no hound has ring space: \"defer\" (bounded queue with severity lanes), \"drop\" (refuse) or \"escalate\" (refuse and emit an escalation event)"),
    key!("pool", "defer_limit", Integer, "4096", "capacity of the defer queue, jobs (exhausted = \"defer\")"),
    key!("pool", "max_evidence_bytes", Integer, "1048576", "largest evidence body accepted by submit, bytes"),
    key!("pool", "max_output_bytes", Integer, "1048576", "largest decoded output of restore and decode jobs, bytes"),
    key!("pool", "gzip_level", Integer, "6", "gzip level of encode and evacuate jobs, 0 to 9"),
    key!("pool", "job_timeout_ms", Integer, "10000", "a hound whose current job makes no progress for this long is killed (job outcome timed_out)"),
    key!("pool", "max_in_flight_per_hound", Integer, "64", "jobs queued in one hound's ring at most"),
    key!("pool", "outcome_capacity", Integer, "65536", "capacity of the pool's outcome channel; outcomes that find it full are counted as undelivered"),
    key!("pool", "hound_spin_us", Integer, "50", "how long an idle hound spins before it sleeps, microseconds"),
    key!("pool", "hound_idle_poll_ms", Integer, "100", "longest sleep of an idle hound between checks, milliseconds"),
    key!("pool", "collector_spin_us", Integer, "50", "how long the supervisor's collector spins before it sleeps, microseconds"),
    key!("pool", "start_timeout_ms", Integer, "10000", "time a hound has to start and complete its handshake"),
    key!("pool", "hound_memory_budget_bytes", Integer, "1073741824", "address-space limit (RLIMIT_AS) of each hound, bytes; 0 leaves it unlimited"),
    key!("pool", "hound_binary", String, "\"\"", "path of the hound executable; empty: $HOUNDPOOL_HOUND_BIN, else `hound` beside houndd, else houndd itself"),
    key!("pool", "hound_stderr", Bool, "true", "whether hounds' standard error goes to the daemon's standard error (else /dev/null)"),
    key!("pool", "prestart", Bool, "true", "keep one hound started ahead of demand, so a dead hound is replaced in about a millisecond (one idle process)"),
    // ---- [cold]
    key!("cold", "backend", String, "\"filesystem\"", "cold storage: \"filesystem\", \"s3\" or \"none\""),
    key!("cold", "path", String, "\"houndpool-data\"", "directory of the filesystem store (created if missing)"),
    key!("cold", "prefix", String, "\"evidence/\"", "object key prefix; objects are <prefix><evidence-id>.thcs"),
    key!("cold", "endpoint", String, "\"\"", "S3 endpoint URL, http:// or https:// (required for backend = \"s3\")"),
    key!("cold", "bucket", String, "\"\"", "S3 bucket (required for backend = \"s3\")"),
    key!("cold", "region", String, "\"\"", "S3 signing region; empty: $AWS_REGION, else $AWS_DEFAULT_REGION, else \"us-east-1\""),
    key!("cold", "path_style", Bool, "true", "S3 path-style addressing (endpoint/bucket/key) instead of virtual-host style"),
    key!("cold", "spool_dir", String, "\"\"", "absolute directory where envelopes wait while S3 is unreachable; empty: no spool (evacuations fail instead)"),
    key!("cold", "spool_limit_bytes", Integer, "1073741824", "most bytes the spool may hold"),
    key!("cold", "ca_file", String, "\"\"", "PEM file of CA certificate(s) trusted for an https:// S3 endpoint in addition to the built-in web roots; empty: the built-in roots only"),
    key!("cold", "resolve_interval_ms", Integer, "30000", "how often the supervisor re-resolves the S3 endpoint's host name for the hounds, milliseconds (also soon after a hound finds the endpoint unreachable)"),
    // ---- [sandbox]
    key!("sandbox", "fd_hygiene", String, "\"best_effort\"", "close every inherited descriptor: \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "environment", String, "\"best_effort\"", "clear the environment: \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "no_new_privs", String, "\"required\"", "PR_SET_NO_NEW_PRIVS: \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "death_signal", String, "\"best_effort\"", "die with the supervisor (PR_SET_PDEATHSIG): \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "rlimits", String, "\"best_effort\"", "core 0, few files, memory budget, file size, nproc (not for uid 0): \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "namespaces", String, "\"auto\"", "user, net, ipc and mount namespaces: \"required\", \"best_effort\", \"off\" or \"auto\" (required when houndd runs as root, else best_effort: container runtimes refuse unshare to unprivileged processes)"),
    key!("sandbox", "capabilities", String, "\"required\"", "no capabilities (effective, permitted, inheritable, ambient; bounding set cleared where possible): \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "landlock", String, "\"required\"", "Landlock file (and TCP port) rules: \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "seccomp", String, "\"required\"", "seccomp-bpf system-call allow-list: \"required\", \"best_effort\" or \"off\""),
    key!("sandbox", "cgroup", String, "\"best_effort\"", "a cgroup per hound where the hierarchy is writable: \"required\", \"best_effort\" or \"off\""),
    // ---- [daemon]
    key!("daemon", "socket", String, "\"/run/houndpool/houndd.sock\"", "path of the Unix socket clients connect to"),
    key!("daemon", "socket_mode", String, "\"0600\"", "file mode of the socket, octal"),
    key!("daemon", "allowed_uids", IntegerList, "[]", "peer uids allowed to connect (checked with SO_PEERCRED); empty: any uid the socket's file mode lets in"),
    key!("daemon", "max_connections", Integer, "256", "client connections served at once; at the limit a new connection closes the longest-quiet one (nothing in flight, quiet for 1 s), else it is refused with an error frame"),
    key!("daemon", "outcome_buffer", Integer, "1024", "per connection: jobs accepted and not yet written back; at the limit the daemon stops reading the connection until an outcome is written"),
    key!("daemon", "write_stall_timeout_ms", Integer, "10000", "a client that has not taken written bytes for this long is disconnected (error write_stalled); its outcomes not written in full are counted as undelivered"),
    key!("daemon", "max_frame_bytes", Integer, "0", "largest frame body a client may send; 0: max_evidence_bytes (or the decode envelope limit) plus 64 KiB"),
    key!("daemon", "drain_grace_ms", Integer, "25000", "on SIGTERM or SIGINT, time allowed to finish accepted jobs before the rest are dropped"),
    key!("daemon", "max_connections_per_uid", Integer, "0", "connections one peer uid (SO_PEERCRED) may hold at once; 0: no per-uid cap"),
    key!("daemon", "frame_timeout_ms", Integer, "5000", "a client that started a frame must complete it within this long (time the daemon itself waits for buffer budget not counted), else it is closed (error frame_timeout)"),
    key!("daemon", "idle_timeout_ms", Integer, "300000", "a connection with no job in flight that sends nothing for this long is closed (error idle_timeout)"),
    key!("daemon", "buffer_budget_bytes", Integer, "0", "daemon-wide bytes reserved for buffered submits and outcomes of all connections; 0: pool.host_reserve_bytes / 2"),
    // ---- [ops]
    key!("ops", "addr", String, "\"127.0.0.1:9464\"", "address of the HTTP endpoint (/metrics, /healthz, /readyz); \"off\" disables it"),
    // ---- [log]
    key!("log", "level", String, "\"info\"", "log filter: a level (error, warn, info, debug, trace) or tracing directives such as \"info,houndpool=debug\""),
    key!("log", "format", String, "\"text\"", "log line format on stderr: \"text\" (human-readable) or \"json\" (one JSON object per line: timestamp, level, target, message, fields, spans)"),
];

/// The information about `section.key`, if it is a key.
pub fn key_info(section: &str, key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.section == section && k.key == key)
}

/// Every environment variable name that configures something, in [`KEYS`] order.
pub fn env_names() -> Vec<String> {
    KEYS.iter().map(KeyInfo::env_name).collect()
}

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

impl Default for Config {
    /// All defaults (what an empty file without environment overrides gives).
    fn default() -> Self {
        // The defaults are valid by construction; a unit test checks that an empty file gives
        // exactly this value, so this fallback is never taken.
        match Config::load("", std::iter::empty()) {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are invalid: {e}"),
        }
    }
}

/// Where a value came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Env(String),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    origin: Origin,
}

/// Raw values by (section, key), with their origin; reads are recorded so that a test can
/// prove every key in [`KEYS`] is read and nothing else is.
struct Values {
    map: BTreeMap<(&'static str, &'static str), Entry>,
    read: RefCell<Vec<(&'static str, &'static str)>>,
}

fn invalid(key: String, value: String, allowed: impl Into<String>) -> SharedError {
    SharedError::InvalidConfig {
        key,
        value,
        allowed: allowed.into(),
    }
}

fn section_keys(section: &str) -> String {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Converts a variable's text to the key's TOML type. Text that does not convert is kept as a
/// string, so that the typed getter reports it with the key's allowed values.
fn env_value(kind: ValueKind, text: &str) -> Value {
    let int = |t: &str| t.trim().replace('_', "").parse::<i64>().ok();
    match kind {
        ValueKind::Integer | ValueKind::IntegerOrWord => int(text)
            .map(Value::Integer)
            .unwrap_or_else(|| Value::String(text.to_string())),
        ValueKind::Bool => match text.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => Value::String(text.to_string()),
        },
        ValueKind::String => Value::String(text.to_string()),
        ValueKind::IntegerList => {
            if text.trim().is_empty() {
                return Value::Array(Vec::new());
            }
            let items: Option<Vec<Value>> = text
                .split(',')
                .map(|s| int(s).map(Value::Integer))
                .collect();
            items
                .map(Value::Array)
                .unwrap_or_else(|| Value::String(text.to_string()))
        }
    }
}

impl Values {
    fn new() -> Self {
        Values {
            map: BTreeMap::new(),
            read: RefCell::new(Vec::new()),
        }
    }

    fn insert_file(&mut self, text: &str) -> Result<(), SharedError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| SharedError::ConfigParse {
                    detail: e.to_string().trim_end().to_string(),
                })?;
        for (section, body) in table {
            let Some(sec) = SECTIONS.iter().find(|s| **s == section) else {
                return Err(invalid(
                    section,
                    "(a section)".into(),
                    format!("the sections are [{}]", SECTIONS.join("], [")),
                ));
            };
            let Value::Table(body) = body else {
                return Err(invalid(
                    section.clone(),
                    body.to_string(),
                    format!("[{section}] must be a table of keys"),
                ));
            };
            for (key, value) in body {
                let Some(info) = key_info(sec, &key) else {
                    return Err(invalid(
                        format!("{sec}.{key}"),
                        value.to_string(),
                        format!("not a key; [{sec}] has {}", section_keys(sec)),
                    ));
                };
                self.map.insert(
                    (info.section, info.key),
                    Entry {
                        value,
                        origin: Origin::File,
                    },
                );
            }
        }
        Ok(())
    }

    fn insert_env(&mut self, name: &str, text: &str) -> Result<(), SharedError> {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            let upper = s.to_ascii_uppercase();
            rest.strip_prefix(upper.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            // Not a configuration variable (HOUNDPOOL_HOUND_BIN, HOUNDPOOL_LOG, ...).
            return Ok(());
        };
        let Some(info) = KEYS
            .iter()
            .find(|k| k.section == section && k.key.eq_ignore_ascii_case(key))
        else {
            return Err(invalid(
                name.to_string(),
                text.to_string(),
                format!(
                    "not a configuration variable; [{section}] has {}",
                    section_keys(section)
                ),
            ));
        };
        if key.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(invalid(
                name.to_string(),
                text.to_string(),
                format!("variable names are upper case: {}", info.env_name()),
            ));
        }
        self.map.insert(
            (info.section, info.key),
            Entry {
                value: env_value(info.kind, text),
                origin: Origin::Env(name.to_string()),
            },
        );
        Ok(())
    }

    /// The entry of a key: the configured one, or its parsed default.
    fn get(&self, section: &'static str, key: &'static str) -> Entry {
        self.read.borrow_mut().push((section, key));
        if let Some(e) = self.map.get(&(section, key)) {
            return e.clone();
        }
        let default = key_info(section, key)
            .and_then(|k| {
                format!("v = {}", k.default)
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
            })
            // Only reached for a key missing from KEYS, which the schema test rules out.
            .unwrap_or(Value::String(String::new()));
        Entry {
            value: default,
            origin: Origin::Default,
        }
    }

    fn bad(section: &str, key: &str, entry: &Entry, allowed: impl Into<String>) -> SharedError {
        let name = match &entry.origin {
            Origin::Env(var) => format!("{section}.{key} (from {var})"),
            Origin::File | Origin::Default => format!("{section}.{key}"),
        };
        let value = match &entry.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        invalid(name, value, allowed)
    }

    fn int(
        &self,
        section: &'static str,
        key: &'static str,
        min: u64,
        max: u64,
        allowed: &str,
    ) -> Result<u64, SharedError> {
        let e = self.get(section, key);
        match e.value.as_integer() {
            Some(v) if v >= 0 && (min..=max).contains(&(v as u64)) => Ok(v as u64),
            _ => Err(Self::bad(section, key, &e, allowed)),
        }
    }

    fn ms(
        &self,
        section: &'static str,
        key: &'static str,
        min: u64,
        max: u64,
        allowed: &str,
    ) -> Result<Duration, SharedError> {
        self.int(section, key, min, max, allowed)
            .map(Duration::from_millis)
    }

    fn us(
        &self,
        section: &'static str,
        key: &'static str,
        max: u64,
        allowed: &str,
    ) -> Result<Duration, SharedError> {
        self.int(section, key, 0, max, allowed)
            .map(Duration::from_micros)
    }

    fn boolean(&self, section: &'static str, key: &'static str) -> Result<bool, SharedError> {
        let e = self.get(section, key);
        e.value
            .as_bool()
            .ok_or_else(|| Self::bad(section, key, &e, "true or false"))
    }

    fn string(&self, section: &'static str, key: &'static str) -> Result<String, SharedError> {
        let e = self.get(section, key);
        match &e.value {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            _ => Err(Self::bad(section, key, &e, "a string without NUL")),
        }
    }

    fn choice(
        &self,
        section: &'static str,
        key: &'static str,
        words: &[&'static str],
    ) -> Result<&'static str, SharedError> {
        let e = self.get(section, key);
        let found = e
            .value
            .as_str()
            .and_then(|s| words.iter().copied().find(|w| *w == s));
        found.ok_or_else(|| {
            let list: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            Self::bad(section, key, &e, format!("one of {}", list.join(", ")))
        })
    }
}

const MIB: u64 = 1 << 20;

fn pool_settings(v: &Values) -> Result<PoolSettings, SharedError> {
    let size = {
        let e = v.get("pool", "size");
        match &e.value {
            Value::String(s) if s == "auto" => PoolSizeSetting::Auto,
            Value::Integer(n) if (1..=256).contains(n) => PoolSizeSetting::Fixed(*n as usize),
            _ => {
                return Err(Values::bad(
                    "pool",
                    "size",
                    &e,
                    "an integer from 1 to 256, or \"auto\"",
                ))
            }
        }
    };
    let exhausted = match v.choice("pool", "exhausted", &["defer", "drop", "escalate"])? {
        "drop" => ExhaustedSetting::Drop,
        "escalate" => ExhaustedSetting::Escalate,
        _ => ExhaustedSetting::Defer,
    };
    let bytes = "an integer from 1 to 268435456 (256 MiB)";
    let hound_binary = v.string("pool", "hound_binary")?;
    Ok(PoolSettings {
        size,
        host_reserve_bytes: v.int(
            "pool",
            "host_reserve_bytes",
            0,
            1 << 50,
            "a number of bytes up to 2^50",
        )?,
        exhausted,
        defer_limit: v.int(
            "pool",
            "defer_limit",
            1,
            10_000_000,
            "an integer from 1 to 10000000",
        )? as usize,
        max_evidence_bytes: v.int("pool", "max_evidence_bytes", 1, 256 * MIB, bytes)? as usize,
        max_output_bytes: v.int("pool", "max_output_bytes", 1, 256 * MIB, bytes)? as usize,
        gzip_level: v.int("pool", "gzip_level", 0, 9, "an integer from 0 to 9")? as u8,
        job_timeout: v.ms(
            "pool",
            "job_timeout_ms",
            10,
            3_600_000,
            "milliseconds from 10 to 3600000 (1 hour)",
        )?,
        max_in_flight_per_hound: v.int(
            "pool",
            "max_in_flight_per_hound",
            1,
            65_536,
            "an integer from 1 to 65536",
        )? as usize,
        outcome_capacity: v.int(
            "pool",
            "outcome_capacity",
            1,
            16 * MIB,
            "an integer from 1 to 16777216",
        )? as usize,
        hound_spin: v.us(
            "pool",
            "hound_spin_us",
            100_000,
            "microseconds from 0 to 100000",
        )?,
        hound_idle_poll: v.ms(
            "pool",
            "hound_idle_poll_ms",
            1,
            60_000,
            "milliseconds from 1 to 60000",
        )?,
        collector_spin: v.us(
            "pool",
            "collector_spin_us",
            100_000,
            "microseconds from 0 to 100000",
        )?,
        start_timeout: v.ms(
            "pool",
            "start_timeout_ms",
            100,
            600_000,
            "milliseconds from 100 to 600000",
        )?,
        hound_memory_budget_bytes: v.int(
            "pool",
            "hound_memory_budget_bytes",
            0,
            1 << 50,
            "0 (unlimited) or a number of bytes up to 2^50",
        )?,
        hound_binary: (!hound_binary.is_empty()).then(|| PathBuf::from(hound_binary)),
        hound_stderr: v.boolean("pool", "hound_stderr")?,
        prestart: v.boolean("pool", "prestart")?,
    })
}

/// Reads the AWS variables: the access key and secret are required (non-empty).
fn s3_credentials(env: &BTreeMap<String, String>) -> Result<S3Credentials, SharedError> {
    let need = |name: &str| match env.get(name) {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err(invalid(
            name.to_string(),
            "(unset)".into(),
            "must be set (non-empty) when cold.backend = \"s3\"",
        )),
    };
    Ok(S3Credentials {
        access_key: need("AWS_ACCESS_KEY_ID")?,
        secret_key: need("AWS_SECRET_ACCESS_KEY")?,
        session_token: env
            .get("AWS_SESSION_TOKEN")
            .filter(|t| !t.is_empty())
            .cloned(),
    })
}

fn cold_settings(v: &Values, env: &BTreeMap<String, String>) -> Result<ColdSettings, SharedError> {
    let backend = v.choice("cold", "backend", &["filesystem", "s3", "none"])?;
    let path = v.string("cold", "path")?;
    let prefix = v.string("cold", "prefix")?;
    let endpoint = v.string("cold", "endpoint")?;
    let bucket = v.string("cold", "bucket")?;
    let region = v.string("cold", "region")?;
    let path_style = v.boolean("cold", "path_style")?;
    let spool_dir = v.string("cold", "spool_dir")?;
    let ca_file = v.string("cold", "ca_file")?;
    let resolve_interval_ms = v.int(
        "cold",
        "resolve_interval_ms",
        1000,
        86_400_000,
        "milliseconds from 1000 to 86400000",
    )?;
    let spool_limit_bytes = v.int(
        "cold",
        "spool_limit_bytes",
        0,
        1 << 50,
        "a number of bytes up to 2^50",
    )?;
    if !prefix.is_empty() {
        if let Err(e) = crate::cold::validate_key(&format!("{prefix}x")) {
            let e2 = v.get("cold", "prefix");
            return Err(Values::bad(
                "cold",
                "prefix",
                &e2,
                format!("empty, or a relative key prefix ({e})"),
            ));
        }
    }
    let backend = match backend {
        "none" => ColdBackend::None,
        "filesystem" => {
            if path.is_empty() {
                let e = v.get("cold", "path");
                return Err(Values::bad(
                    "cold",
                    "path",
                    &e,
                    "a directory path (required for backend = \"filesystem\")",
                ));
            }
            ColdBackend::Filesystem {
                path: PathBuf::from(path),
            }
        }
        _ => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || url::Url::parse(&endpoint).is_err()
            {
                let e = v.get("cold", "endpoint");
                return Err(Values::bad(
                    "cold",
                    "endpoint",
                    &e,
                    "an http:// or https:// URL (required for backend = \"s3\")",
                ));
            }
            if bucket.is_empty()
                || bucket.len() > 63
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            {
                let e = v.get("cold", "bucket");
                return Err(Values::bad(
                    "cold",
                    "bucket",
                    &e,
                    "a bucket name of 1 to 63 lowercase letters, digits, '-' and '.' (required for backend = \"s3\")",
                ));
            }
            let spool_dir = if spool_dir.is_empty() {
                None
            } else if Path::new(&spool_dir).is_absolute() {
                Some(PathBuf::from(spool_dir))
            } else {
                let e = v.get("cold", "spool_dir");
                return Err(Values::bad(
                    "cold",
                    "spool_dir",
                    &e,
                    "empty, or an absolute directory path",
                ));
            };
            let region = [
                Some(region),
                env.get("AWS_REGION").cloned(),
                env.get("AWS_DEFAULT_REGION").cloned(),
            ]
            .into_iter()
            .flatten()
            .find(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
            ColdBackend::S3(S3Settings {
                endpoint,
                bucket,
                region,
                path_style,
                spool_dir,
                spool_limit_bytes,
                credentials: s3_credentials(env)?,
                ca_file: (!ca_file.is_empty()).then(|| PathBuf::from(ca_file)),
                resolve_interval: std::time::Duration::from_millis(resolve_interval_ms),
            })
        }
    };
    Ok(ColdSettings { backend, prefix })
}

fn sandbox_settings(v: &Values) -> Result<SandboxPolicy, SharedError> {
    let mut layers = Vec::with_capacity(Layer::ALL.len());
    for layer in Layer::ALL {
        // `KEYS` has one [sandbox] key per layer, named by `Layer::name` (checked by a test).
        let key = KEYS
            .iter()
            .find(|k| k.section == "sandbox" && k.key == layer.name())
            .map(|k| k.key)
            .unwrap_or("?");
        let words: &[&str] = if layer == Layer::Namespaces {
            &["best_effort", "required", "off", "auto"]
        } else {
            &["best_effort", "required", "off"]
        };
        let mode = match v.choice("sandbox", key, words)? {
            "required" => LayerMode::Required,
            "off" => LayerMode::Off,
            "auto" => auto_namespaces(),
            _ => LayerMode::BestEffort,
        };
        layers.push((layer, mode));
    }
    Ok(SandboxPolicy { layers })
}

/// What `[sandbox] namespaces = "auto"` means here: required when this process runs as root
/// (uid 0 can always unshare), best-effort otherwise.
fn auto_namespaces() -> LayerMode {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        LayerMode::Required
    } else {
        LayerMode::BestEffort
    }
}

/// Parses an octal file mode: "0600", "600" or "0o600" (a TOML integer is taken as is).
fn parse_mode(value: &Value) -> Option<u32> {
    let m = match value {
        Value::Integer(n) => u32::try_from(*n).ok()?,
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty() || digits.len() > 4 {
                return None;
            }
            u32::from_str_radix(digits, 8).ok()?
        }
        _ => return None,
    };
    (m <= 0o777).then_some(m)
}

fn daemon_settings(v: &Values) -> Result<DaemonSettings, SharedError> {
    let socket = v.string("daemon", "socket")?;
    if socket.is_empty() || socket.len() > 107 {
        let e = v.get("daemon", "socket");
        return Err(Values::bad(
            "daemon",
            "socket",
            &e,
            "a path of 1 to 107 bytes (the limit of a Unix socket address)",
        ));
    }
    let mode_entry = v.get("daemon", "socket_mode");
    let socket_mode = parse_mode(&mode_entry.value).ok_or_else(|| {
        Values::bad(
            "daemon",
            "socket_mode",
            &mode_entry,
            "an octal file mode from \"0000\" to \"0777\", e.g. \"0600\"",
        )
    })?;
    let uids_entry = v.get("daemon", "allowed_uids");
    let allowed_uids = match &uids_entry.value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n != u32::MAX)
            })
            .collect::<Option<Vec<u32>>>(),
        _ => None,
    }
    .ok_or_else(|| {
        Values::bad(
            "daemon",
            "allowed_uids",
            &uids_entry,
            "a list of uids (0 to 4294967294); in a variable, comma-separated",
        )
    })?;
    let max_frame = v.int(
        "daemon",
        "max_frame_bytes",
        0,
        256 * MIB + 64 * 1024,
        "0 (derived from the pool limits) or bytes from 4096 to 268500992 (256 MiB + 64 KiB)",
    )?;
    if (1..4096).contains(&max_frame) {
        let e = v.get("daemon", "max_frame_bytes");
        return Err(Values::bad(
            "daemon",
            "max_frame_bytes",
            &e,
            "0 (derived from the pool limits) or bytes from 4096 to 268500992 (256 MiB + 64 KiB)",
        ));
    }
    Ok(DaemonSettings {
        socket: PathBuf::from(socket),
        socket_mode,
        allowed_uids,
        max_connections: v.int(
            "daemon",
            "max_connections",
            1,
            65_536,
            "an integer from 1 to 65536",
        )? as usize,
        outcome_buffer: v.int(
            "daemon",
            "outcome_buffer",
            1,
            MIB,
            "an integer from 1 to 1048576",
        )? as usize,
        write_stall_timeout: v.ms(
            "daemon",
            "write_stall_timeout_ms",
            100,
            600_000,
            "milliseconds from 100 to 600000",
        )?,
        max_frame_bytes: (max_frame != 0).then_some(max_frame as u32),
        drain_grace: v.ms(
            "daemon",
            "drain_grace_ms",
            0,
            3_600_000,
            "milliseconds from 0 to 3600000 (1 hour)",
        )?,
        max_connections_per_uid: v.int(
            "daemon",
            "max_connections_per_uid",
            0,
            65_536,
            "0 (no cap) or an integer up to 65536",
        )? as usize,
        frame_timeout: v.ms(
            "daemon",
            "frame_timeout_ms",
            100,
            600_000,
            "milliseconds from 100 to 600000",
        )?,
        idle_timeout: v.ms(
            "daemon",
            "idle_timeout_ms",
            1000,
            86_400_000,
            "milliseconds from 1000 to 86400000 (24 hours)",
        )?,
        buffer_budget_bytes: match v.int(
            "daemon",
            "buffer_budget_bytes",
            0,
            1 << 40,
            "0 (pool.host_reserve_bytes / 2) or bytes from 4194304 (4 MiB) to 1099511627776 (1 TiB)",
        )? {
            0 => None,
            n if n < 4 * MIB => {
                let e = v.get("daemon", "buffer_budget_bytes");
                return Err(Values::bad(
                    "daemon",
                    "buffer_budget_bytes",
                    &e,
                    "0 (pool.host_reserve_bytes / 2) or bytes from 4194304 (4 MiB) to 1099511627776 (1 TiB)",
                ));
            }
            n => Some(n),
        },
    })
}

fn ops_settings(v: &Values) -> Result<OpsSettings, SharedError> {
    let e = v.get("ops", "addr");
    let addr = match e.value.as_str() {
        Some("off") => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
            Values::bad(
                "ops",
                "addr",
                &e,
                "an IP address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\", or \"off\"",
            )
        })?),
        None => {
            return Err(Values::bad(
                "ops",
                "addr",
                &e,
                "a string: an IP address and port, or \"off\"",
            ))
        }
    };
    Ok(OpsSettings { addr })
}

fn log_settings(v: &Values) -> Result<LogSettings, SharedError> {
    let level = v.string("log", "level")?;
    if level.trim().is_empty() {
        let e = v.get("log", "level");
        return Err(Values::bad(
            "log",
            "level",
            &e,
            "a level (error, warn, info, debug, trace) or tracing directives",
        ));
    }
    let json = v.choice("log", "format", &["text", "json"])? == "json";
    Ok(LogSettings { level, json })
}

impl Config {
    /// Parses `text` (TOML) and applies the `HOUNDPOOL_*` variables among `env`; the AWS
    /// variables among `env` supply S3 credentials and region. Other variables are ignored.
    /// Pure: reads nothing but its arguments.
    pub fn load(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, SharedError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut values = Values::new();
        values.insert_file(text)?;
        for (name, text) in &env {
            values.insert_env(name, text)?;
        }
        Self::from_values(&values, &env)
    }

    /// Reads the file at `path` (`None`: no file, all defaults) and applies the process
    /// environment. A `HOUNDPOOL_*` or `AWS_*` variable that is not UTF-8 is an error.
    pub fn load_file(path: Option<&Path>) -> Result<Config, SharedError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| SharedError::ConfigRead {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with(ENV_PREFIX) || name.starts_with("AWS_")) {
                continue;
            }
            let value = value.into_string().map_err(|v| {
                invalid(
                    name.to_string(),
                    v.to_string_lossy().into_owned(),
                    "must be valid UTF-8",
                )
            })?;
            env.push((name.to_string(), value));
        }
        Self::load(&text, env)
    }

    fn from_values(values: &Values, env: &BTreeMap<String, String>) -> Result<Config, SharedError> {
        Ok(Config {
            pool: pool_settings(values)?,
            cold: cold_settings(values, env)?,
            sandbox: sandbox_settings(values)?,
            daemon: daemon_settings(values)?,
            ops: ops_settings(values)?,
            log: log_settings(values)?,
        })
    }

    /// Every key with its effective value, in [`KEYS`] order. Credentials are not keys and
    /// never appear.
    pub fn values(&self) -> Vec<(&'static KeyInfo, Value)> {
        let p = &self.pool;
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let ms = |d: Duration| int(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let us = |d: Duration| int(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let s = |t: &str| Value::String(t.to_string());
        let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
        let s3 = match &self.cold.backend {
            ColdBackend::S3(s3) => Some(s3),
            _ => None,
        };
        let mut out: Vec<(&'static KeyInfo, Value)> = Vec::with_capacity(KEYS.len());
        for info in KEYS {
            let v = match (info.section, info.key) {
                ("pool", "size") => match p.size {
                    PoolSizeSetting::Auto => s("auto"),
                    PoolSizeSetting::Fixed(n) => int(n as u64),
                },
                ("pool", "host_reserve_bytes") => int(p.host_reserve_bytes),
                ("pool", "exhausted") => s(p.exhausted.name()),
                ("pool", "defer_limit") => int(p.defer_limit as u64),
                ("pool", "max_evidence_bytes") => int(p.max_evidence_bytes as u64),
                ("pool", "max_output_bytes") => int(p.max_output_bytes as u64),
                ("pool", "gzip_level") => int(u64::from(p.gzip_level)),
                ("pool", "job_timeout_ms") => ms(p.job_timeout),
                ("pool", "max_in_flight_per_hound") => int(p.max_in_flight_per_hound as u64),
                ("pool", "outcome_capacity") => int(p.outcome_capacity as u64),
                ("pool", "hound_spin_us") => us(p.hound_spin),
                ("pool", "hound_idle_poll_ms") => ms(p.hound_idle_poll),
                ("pool", "collector_spin_us") => us(p.collector_spin),
                ("pool", "start_timeout_ms") => ms(p.start_timeout),
                ("pool", "hound_memory_budget_bytes") => int(p.hound_memory_budget_bytes),
                ("pool", "hound_binary") => p.hound_binary.as_deref().map(path).unwrap_or(s("")),
                ("pool", "hound_stderr") => Value::Boolean(p.hound_stderr),
                ("pool", "prestart") => Value::Boolean(p.prestart),
                ("cold", "backend") => s(match &self.cold.backend {
                    ColdBackend::None => "none",
                    ColdBackend::Filesystem { .. } => "filesystem",
                    ColdBackend::S3(_) => "s3",
                }),
                ("cold", "path") => match &self.cold.backend {
                    ColdBackend::Filesystem { path: p } => path(p),
                    _ => s(""),
                },
                ("cold", "prefix") => s(&self.cold.prefix),
                ("cold", "endpoint") => s(s3.map(|t| t.endpoint.as_str()).unwrap_or("")),
                ("cold", "bucket") => s(s3.map(|t| t.bucket.as_str()).unwrap_or("")),
                ("cold", "region") => s(s3.map(|t| t.region.as_str()).unwrap_or("")),
                ("cold", "path_style") => Value::Boolean(s3.is_none_or(|t| t.path_style)),
                ("cold", "spool_dir") => s3
                    .and_then(|t| t.spool_dir.as_deref())
                    .map(path)
                    .unwrap_or(s("")),
                ("cold", "spool_limit_bytes") => {
                    int(s3.map(|t| t.spool_limit_bytes).unwrap_or(1 << 30))
                }
                ("cold", "ca_file") => s3
                    .and_then(|t| t.ca_file.as_deref())
                    .map(path)
                    .unwrap_or(s("")),
                ("cold", "resolve_interval_ms") => int(s3.map_or(30_000, |t| {
                    u64::try_from(t.resolve_interval.as_millis()).unwrap_or(u64::MAX)
                })),
                ("sandbox", layer) => {
                    let mode = Layer::ALL
                        .iter()
                        .find(|l| l.name() == layer)
                        .map(|l| self.sandbox.mode(*l))
                        .unwrap_or_default();
                    // "auto" stands for the mode it gives on this machine.
                    s(match mode {
                        _ if layer == Layer::Namespaces.name() && mode == auto_namespaces() => {
                            "auto"
                        }
                        LayerMode::Required => "required",
                        LayerMode::BestEffort => "best_effort",
                        LayerMode::Off => "off",
                    })
                }
                ("daemon", "socket") => path(&self.daemon.socket),
                ("daemon", "socket_mode") => s(&format!("{:04o}", self.daemon.socket_mode)),
                ("daemon", "allowed_uids") => Value::Array(
                    self.daemon
                        .allowed_uids
                        .iter()
                        .map(|u| int(u64::from(*u)))
                        .collect(),
                ),
                ("daemon", "max_connections") => int(self.daemon.max_connections as u64),
                ("daemon", "outcome_buffer") => int(self.daemon.outcome_buffer as u64),
                ("daemon", "write_stall_timeout_ms") => ms(self.daemon.write_stall_timeout),
                ("daemon", "max_frame_bytes") => {
                    int(u64::from(self.daemon.max_frame_bytes.unwrap_or(0)))
                }
                ("daemon", "drain_grace_ms") => ms(self.daemon.drain_grace),
                ("daemon", "max_connections_per_uid") => {
                    int(self.daemon.max_connections_per_uid as u64)
                }
                ("daemon", "frame_timeout_ms") => ms(self.daemon.frame_timeout),
                ("daemon", "idle_timeout_ms") => ms(self.daemon.idle_timeout),
                ("daemon", "buffer_budget_bytes") => {
                    int(self.daemon.buffer_budget_bytes.unwrap_or(0))
                }
                ("ops", "addr") => match self.ops.addr {
                    Some(a) => s(&a.to_string()),
                    None => s("off"),
                },
                ("log", "level") => s(&self.log.level),
                ("log", "format") => s(if self.log.json { "json" } else { "text" }),
                // Every key of KEYS is matched above (checked by a test); nothing else exists.
                _ => continue,
            };
            out.push((info, v));
        }
        out
    }

    /// The effective configuration as a TOML document (every key, in [`KEYS`] order), which
    /// [`Config::load`] reads back to an equal value. Credentials are shown only as present or
    /// absent.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for (info, value) in self.values() {
            if info.section != section {
                if !section.is_empty() {
                    out.push('\n');
                }
                section = info.section;
                out.push_str(&format!("[{section}]\n"));
            }
            out.push_str(&format!("{} = {value}\n", info.key));
            if (info.section, info.key) == ("cold", "bucket") {
                if let ColdBackend::S3(t) = &self.cold.backend {
                    out.push_str(&format!(
                        "# credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set{}\n",
                        if t.credentials.session_token.is_some() {
                            ", AWS_SESSION_TOKEN set"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        out
    }

    /// The keys whose effective values differ between `self` and `other`, as
    /// `(dotted key, old value, new value)`. Credentials are compared but reported by name
    /// only (`cold.credentials`), never by value.
    pub fn diff(&self, other: &Config) -> Vec<(String, String, String)> {
        let mut changes: Vec<(String, String, String)> = self
            .values()
            .into_iter()
            .zip(other.values())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((info, a), (_, b))| (info.dotted(), a.to_string(), b.to_string()))
            .collect();
        if let (ColdBackend::S3(a), ColdBackend::S3(b)) = (&self.cold.backend, &other.cold.backend)
        {
            if a.credentials != b.credentials {
                changes.push((
                    "cold.credentials".into(),
                    "<redacted>".into(),
                    "<redacted>".into(),
                ));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn err(text: &str, vars: &[(&str, &str)]) -> String {
        Config::load(text, env(vars)).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::load("", env(&[])).unwrap();
        assert_eq!(c.pool.size, PoolSizeSetting::Auto);
        assert_eq!(c.pool.exhausted, ExhaustedSetting::Defer);
        assert_eq!(c.pool.defer_limit, 4096);
        assert_eq!(c.pool.job_timeout, Duration::from_secs(10));
        assert_eq!(
            c.cold.backend,
            ColdBackend::Filesystem {
                path: "houndpool-data".into()
            }
        );
        assert_eq!(c.cold.prefix, "evidence/");
        assert_eq!(c.daemon.socket_mode, 0o600);
        assert_eq!(c.daemon.drain_grace, Duration::from_secs(25));
        assert_eq!(c.ops.addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log.level, "info");
        assert_eq!(c, Config::default());
        // Every key's documented default is what the empty file gives.
        for (info, value) in c.values() {
            let doc: toml::Table = format!("v = {}", info.default).parse().unwrap();
            assert_eq!(doc["v"], value, "{}", info.dotted());
        }
    }

    #[test]
    fn schema_is_consistent_and_every_key_is_read() {
        let mut seen = std::collections::BTreeSet::new();
        for k in KEYS {
            assert!(SECTIONS.contains(&k.section), "{}", k.dotted());
            assert!(seen.insert((k.section, k.key)), "duplicate {}", k.dotted());
            assert!(k
                .key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            assert!(!k.doc.is_empty());
        }
        for l in Layer::ALL {
            assert!(key_info("sandbox", l.name()).is_some(), "{}", l.name());
        }
        let v = Values::new();
        let e = BTreeMap::new();
        Config::from_values(&v, &e).unwrap();
        let read: std::collections::BTreeSet<_> = v.read.borrow().iter().copied().collect();
        assert_eq!(read, seen, "keys read while building must be exactly KEYS");
        assert_eq!(Config::default().values().len(), KEYS.len());
    }

    #[test]
    fn file_values_and_env_overrides_apply() {
        let text = r#"
            [pool]
            size = 3
            exhausted = "escalate"
            job_timeout_ms = 2500
            [cold]
            path = "/var/lib/houndpool"
            [daemon]
            socket = "/tmp/x.sock"
            allowed_uids = [1000, 1001]
            [sandbox]
            seccomp = "required"
        "#;
        let c = Config::load(
            text,
            env(&[
                ("HOUNDPOOL_POOL_SIZE", "5"),
                ("HOUNDPOOL_DAEMON_SOCKET", "/run/h.sock"),
                ("HOUNDPOOL_OPS_ADDR", "0.0.0.0:9000"),
                ("HOUNDPOOL_COLD_PATH", "/data"),
                ("HOUNDPOOL_DAEMON_ALLOWED_UIDS", "7, 8"),
                ("HOUNDPOOL_POOL_HOUND_STDERR", "false"),
                ("HOUNDPOOL_HOUND_BIN", "/not/config"),
                ("HOUNDPOOL_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.pool.size, PoolSizeSetting::Fixed(5));
        assert_eq!(c.pool.exhausted, ExhaustedSetting::Escalate);
        assert_eq!(c.pool.job_timeout, Duration::from_millis(2500));
        assert!(!c.pool.hound_stderr);
        assert_eq!(c.daemon.socket, PathBuf::from("/run/h.sock"));
        assert_eq!(c.daemon.allowed_uids, vec![7, 8]);
        assert_eq!(c.ops.addr, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(
            c.cold.backend,
            ColdBackend::Filesystem {
                path: "/data".into()
            }
        );
        assert_eq!(c.sandbox.mode(Layer::Seccomp), LayerMode::Required);
        assert_eq!(c.sandbox.mode(Layer::Rlimits), LayerMode::BestEffort);
    }

    #[test]
    fn sandbox_defaults_are_safe_and_can_be_relaxed() {
        let c = Config::load("", env(&[])).unwrap();
        for l in [
            Layer::NoNewPrivs,
            Layer::Capabilities,
            Layer::Landlock,
            Layer::Seccomp,
        ] {
            assert_eq!(c.sandbox.mode(l), LayerMode::Required, "{}", l.name());
        }
        assert_eq!(c.sandbox.mode(Layer::Namespaces), auto_namespaces());
        let relaxed = Config::load(
            "[sandbox]\nlandlock = \"best_effort\"\nnamespaces = \"required\"",
            env(&[("HOUNDPOOL_SANDBOX_SECCOMP", "off")]),
        )
        .unwrap();
        assert_eq!(relaxed.sandbox.mode(Layer::Landlock), LayerMode::BestEffort);
        assert_eq!(relaxed.sandbox.mode(Layer::Seccomp), LayerMode::Off);
        assert_eq!(relaxed.sandbox.mode(Layer::Namespaces), LayerMode::Required);
        assert!(Config::load("[sandbox]\nseccomp = \"auto\"", env(&[])).is_err());
    }

    #[test]
    fn errors_name_key_value_and_what_is_allowed() {
        let e = err("[pool]\nsize = 0\n", &[]);
        assert!(
            e.contains("pool.size") && e.contains("\"0\"") && e.contains("1 to 256"),
            "{e}"
        );
        let e = err("", &[("HOUNDPOOL_POOL_SIZE", "many")]);
        assert!(
            e.contains("pool.size (from HOUNDPOOL_POOL_SIZE)") && e.contains("many"),
            "{e}"
        );
        let e = err("[pool]\nexhausted = \"panic\"\n", &[]);
        assert!(
            e.contains("pool.exhausted") && e.contains("\"defer\", \"drop\", \"escalate\""),
            "{e}"
        );
        let e = err("[pool]\nsiz = 1\n", &[]);
        assert!(
            e.contains("pool.siz") && e.contains("not a key") && e.contains("size"),
            "{e}"
        );
        let e = err("[pools]\n", &[]);
        assert!(e.contains("pools") && e.contains("[pool]"), "{e}");
        let e = err("", &[("HOUNDPOOL_DAEMON_SOKET", "/x")]);
        assert!(
            e.contains("HOUNDPOOL_DAEMON_SOKET") && e.contains("socket"),
            "{e}"
        );
        let e = err("", &[("HOUNDPOOL_OPS_ADDR", "localhost")]);
        assert!(e.contains("ops.addr") && e.contains("localhost"), "{e}");
        let e = err("[daemon]\nsocket_mode = \"0999\"\n", &[]);
        assert!(
            e.contains("daemon.socket_mode") && e.contains("0999"),
            "{e}"
        );
        let e = err("", &[("HOUNDPOOL_POOL_HOUND_STDERR", "yes")]);
        assert!(e.contains("true or false"), "{e}");
        let e = err("[pool]\ngzip_level = \"6\"\n", &[]);
        assert!(e.contains("pool.gzip_level") && e.contains("0 to 9"), "{e}");
        let e = err("[cold]\nprefix = \"../x/\"\n", &[]);
        assert!(e.contains("cold.prefix"), "{e}");
        let e = err("[daemon]\nallowed_uids = [-1]\n", &[]);
        assert!(e.contains("daemon.allowed_uids"), "{e}");
        let e = err("[daemon]\nmax_frame_bytes = 12\n", &[]);
        assert!(e.contains("daemon.max_frame_bytes"), "{e}");
        let e = err("not toml [", &[]);
        assert!(e.contains("TOML"), "{e}");
    }

    #[test]
    fn s3_needs_endpoint_bucket_and_credentials_from_env() {
        let text =
            "[cold]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"ev\"\n";
        let e = err(text, &[]);
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let e = err("[cold]\nbackend = \"s3\"\n", &[]);
        assert!(e.contains("cold.endpoint"), "{e}");
        let c = Config::load(
            text,
            env(&[
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "SECRET-VALUE"),
                ("AWS_REGION", "eu-west-3"),
                ("HOUNDPOOL_COLD_SPOOL_DIR", "/var/spool/h"),
            ]),
        )
        .unwrap();
        let ColdBackend::S3(s3) = &c.cold.backend else {
            panic!("not s3")
        };
        assert_eq!(s3.region, "eu-west-3");
        assert_eq!(s3.credentials.secret_key, "SECRET-VALUE");
        assert_eq!(s3.spool_dir.as_deref(), Some(Path::new("/var/spool/h")));
        let shown = format!("{}{:?}", c.render(), c);
        assert!(
            !shown.contains("SECRET-VALUE") && !shown.contains("\"AK\""),
            "{shown}"
        );
        let e = err(
            text,
            &[
                ("HOUNDPOOL_COLD_SPOOL_DIR", "rel/dir"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
            ],
        );
        assert!(
            e.contains("cold.spool_dir (from HOUNDPOOL_COLD_SPOOL_DIR)"),
            "{e}"
        );
    }

    #[test]
    fn render_round_trips_and_diff_names_changes() {
        let text = "[pool]\nsize = 2\n[daemon]\nallowed_uids = [5]\nsocket_mode = \"0660\"\n[ops]\naddr = \"off\"\n";
        let c = Config::load(text, env(&[])).unwrap();
        let again = Config::load(&c.render(), env(&[])).unwrap();
        assert_eq!(c, again);
        let d = Config::default().diff(&c);
        let keys: Vec<&str> = d.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pool.size",
                "daemon.socket_mode",
                "daemon.allowed_uids",
                "ops.addr"
            ]
        );
        assert_eq!(d[0], ("pool.size".into(), "\"auto\"".into(), "2".into()));
    }
}
