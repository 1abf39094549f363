//! Every configuration key of `houndd`, declared once: section, name, TOML type, default,
//! allowed range (as numbers) or words, whether a reload applies it live, and a one-line
//! meaning. Everything else is derived from this table: the environment variable
//! ([`KeyInfo::env_name`]), the daemon's validation and its error messages
//! ([`KeyInfo::allowed`]), `houndd config check` and `houndd config docs`, the key tables of
//! docs/CONFIGURATION.md ([`markdown`], checked by a test) and the defaults of
//! [`PoolConfig`](crate::PoolConfig) for the keys that map to a pool field.
//!
//! This module is compiled without the `daemon` feature too, so the library's defaults come
//! from the same declarations as the daemon's.

use std::fmt;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "HOUNDPOOL_";

/// The sections of the file, in the order they are documented and printed.
pub const SECTIONS: [&str; 6] = ["pool", "cold", "sandbox", "daemon", "ops", "log"];

/// The TOML type a key takes. Values from environment variables are converted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A non-negative integer (the variable's text in decimal; `_` separators allowed).
    Integer,
    /// An integer, or one of the key's [`KeyInfo::choices`] (e.g. `auto`).
    IntegerOrWord,
    /// `true` or `false`.
    Bool,
    /// A string (one of [`KeyInfo::choices`] when that is not empty).
    String,
    /// A list of integers (in a variable: comma-separated).
    IntegerList,
}

/// A key's default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// An integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
    /// A string (or the word of an integer-or-word key).
    Str(&'static str),
    /// An empty list.
    EmptyList,
}

/// As written in TOML: `6`, `true`, `"defer"`, `[]` (defaults hold no quote or backslash).
impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::Int(n) => write!(f, "{n}"),
            DefaultValue::Bool(b) => write!(f, "{b}"),
            DefaultValue::Str(s) => write!(f, "\"{s}\""),
            DefaultValue::EmptyList => f.write_str("[]"),
        }
    }
}

/// What an integer key counts (the unit is also in the key's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain number.
    Count,
    /// Bytes (`_bytes`).
    Bytes,
    /// Milliseconds (`_ms`).
    Millis,
    /// Microseconds (`_us`).
    Micros,
}

/// The values an integer key allows: `min..=max`, and 0 as well when `zero` says what 0 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Smallest value allowed (besides 0 with `zero`).
    pub min: u64,
    /// Largest value allowed.
    pub max: u64,
    /// What the number counts.
    pub unit: Unit,
    /// The meaning of 0 when 0 is allowed below `min`.
    pub zero: Option<&'static str>,
}

impl Range {
    /// Whether `n` is allowed.
    pub fn contains(&self, n: u64) -> bool {
        (self.min..=self.max).contains(&n) || (n == 0 && self.zero.is_some())
    }
}

/// One configuration key: where it lives, its type, default, range and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Section name, one of [`SECTIONS`].
    pub section: &'static str,
    /// Key name inside the section (lowercase snake case).
    pub key: &'static str,
    /// Its type.
    pub kind: ValueKind,
    /// The default.
    pub default: DefaultValue,
    /// For integer keys: the values allowed.
    pub range: Option<Range>,
    /// For string keys: the words allowed (empty: any string the key's reader accepts); for
    /// integer-or-word keys: the words allowed besides the range.
    pub choices: &'static [&'static str],
    /// Whether a reload (SIGHUP) applies a change at once (else it needs a restart).
    pub live: bool,
    /// One-line meaning (what is allowed is derived: [`KeyInfo::allowed`]).
    pub doc: &'static str,
}

/// A number as the allowed-values prose writes it: large round byte counts get their binary
/// unit in parentheses, powers of two from 2^40 on are written as such.
fn number(n: u64, unit: Unit) -> String {
    const KIB: u64 = 1 << 10;
    if unit != Unit::Bytes || n < MIB {
        return n.to_string();
    }
    if n.is_power_of_two() && n >= 1 << 41 {
        return format!("2^{}", n.trailing_zeros());
    }
    let parts: Vec<String> = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (MIB, "MiB"),
        (KIB, "KiB"),
    ]
    .iter()
    .scan(n, |rest, &(size, name)| {
        let whole = *rest / size;
        *rest %= size;
        Some((whole > 0).then(|| format!("{whole} {name}")))
    })
    .flatten()
    .collect();
    if n.is_multiple_of(KIB) {
        format!("{n} ({})", parts.join(" + "))
    } else {
        n.to_string()
    }
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

    /// What the key allows, in words, from its type, range and choices (the text of error
    /// messages and of the documentation's "allowed" column).
    pub fn allowed(&self) -> String {
        let words = self
            .choices
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>();
        let words = words.join(", ");
        match (self.kind, self.range) {
            (ValueKind::Bool, _) => "true or false".into(),
            (ValueKind::Integer | ValueKind::IntegerOrWord, Some(r)) => {
                let n = |v| number(v, r.unit);
                let span = match r.unit {
                    Unit::Count => format!("an integer from {} to {}", n(r.min), n(r.max)),
                    Unit::Bytes => format!("bytes from {} to {}", n(r.min), n(r.max)),
                    Unit::Millis => format!("milliseconds from {} to {}", n(r.min), n(r.max)),
                    Unit::Micros => format!("microseconds from {} to {}", n(r.min), n(r.max)),
                };
                let span = match r.zero {
                    Some(zero) => format!("0 ({zero}) or {span}"),
                    None => span,
                };
                if words.is_empty() {
                    span
                } else {
                    format!("{span}, or {words}")
                }
            }
            (ValueKind::String, _) if !words.is_empty() => format!("one of {words}"),
            (ValueKind::IntegerList, _) => "a list of integers".into(),
            _ => "a string".into(),
        }
    }

    /// The default of an integer key (0 for other keys).
    pub const fn int_default(&self) -> u64 {
        match self.default {
            DefaultValue::Int(n) => n,
            _ => 0,
        }
    }

    /// The default of a boolean key (false for other keys).
    pub const fn bool_default(&self) -> bool {
        matches!(self.default, DefaultValue::Bool(true))
    }

    /// The default of a string key ("" for other keys).
    pub const fn str_default(&self) -> &'static str {
        match self.default {
            DefaultValue::Str(s) => s,
            _ => "",
        }
    }
}

/// The information about `section.key`, if it is a key.
pub fn key_info(section: &str, key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.section == section && k.key == key)
}

/// Every environment variable name that configures something, in [`KEYS`] order.
pub fn env_names() -> Vec<String> {
    KEYS.iter().map(KeyInfo::env_name).collect()
}

/// The keys a reload applies at once, as `section.key`, in [`KEYS`] order.
pub fn live_keys() -> Vec<String> {
    KEYS.iter()
        .filter(|k| k.live)
        .map(KeyInfo::dotted)
        .collect()
}

/// The key tables of docs/CONFIGURATION.md: one Markdown table per section.
pub fn markdown() -> String {
    let mut out = String::new();
    for section in SECTIONS {
        out.push_str(&format!(
            "### [{section}]\n\n| key | variable | default | allowed | reload | meaning |\n|---|---|---|---|---|---|\n"
        ));
        for k in KEYS.iter().filter(|k| k.section == section) {
            out.push_str(&format!(
                "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
                k.key,
                k.env_name(),
                k.default,
                k.allowed().replace('|', "\\|"),
                if k.live { "live" } else { "restart" },
                k.doc.replace('|', "\\|"),
            ));
        }
        out.push('\n');
    }
    out
}

const MIB: u64 = 1 << 20;
const LIVE: bool = true;
const RESTART: bool = false;

/// `pool.size`.
pub const POOL_SIZE: KeyInfo = KeyInfo {
    section: "pool",
    key: "size",
    kind: ValueKind::IntegerOrWord,
    default: DefaultValue::Str("auto"),
    range: Some(Range { min: 1, max: 256, unit: Unit::Count, zero: None }),
    choices: &["auto"],
    live: RESTART,
    doc: "number of hounds, or \"auto\": min(CPUs, (memory limit − host_reserve_bytes) / (hound_memory_budget_bytes + ring memory)) from the process's cgroup limits",
};

/// `pool.host_reserve_bytes`.
pub const POOL_HOST_RESERVE_BYTES: KeyInfo = KeyInfo {
    section: "pool",
    key: "host_reserve_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(268435456),
    range: Some(Range { min: 0, max: 1 << 50, unit: Unit::Bytes, zero: None }),
    choices: &[],
    live: RESTART,
    doc: "memory kept for houndd itself (defer queue and outcome buffers included) when size = \"auto\" divides the memory limit among hounds",
};

/// `pool.exhausted`.
pub const POOL_EXHAUSTED: KeyInfo = KeyInfo {
    section: "pool",
    key: "exhausted",
    kind: ValueKind::String,
    default: DefaultValue::Str("defer"),
    range: None,
    choices: &["defer", "drop", "escalate"],
    live: RESTART,
    doc: "what submit does when no hound has ring space: \"defer\" (bounded queue with severity lanes), \"drop\" (refuse) or \"escalate\" (refuse and emit an escalation event)",
};

/// `pool.defer_limit`.
pub const POOL_DEFER_LIMIT: KeyInfo = KeyInfo {
    section: "pool",
    key: "defer_limit",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(4096),
    range: Some(Range {
        min: 1,
        max: 10_000_000,
        unit: Unit::Count,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "capacity of the defer queue, jobs (exhausted = \"defer\")",
};

/// `pool.max_evidence_bytes`.
pub const POOL_MAX_EVIDENCE_BYTES: KeyInfo = KeyInfo {
    section: "pool",
    key: "max_evidence_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(1048576),
    range: Some(Range {
        min: 1,
        max: 256 * MIB,
        unit: Unit::Bytes,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "largest evidence body accepted by submit, bytes",
};

/// `pool.max_output_bytes`.
pub const POOL_MAX_OUTPUT_BYTES: KeyInfo = KeyInfo {
    section: "pool",
    key: "max_output_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(1048576),
    range: Some(Range {
        min: 1,
        max: 256 * MIB,
        unit: Unit::Bytes,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "largest decoded output of restore and decode jobs, bytes",
};

/// `pool.gzip_level`.
pub const POOL_GZIP_LEVEL: KeyInfo = KeyInfo {
    section: "pool",
    key: "gzip_level",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(6),
    range: Some(Range {
        min: 0,
        max: 9,
        unit: Unit::Count,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "gzip level of encode and evacuate jobs",
};

/// `pool.job_timeout_ms`.
pub const POOL_JOB_TIMEOUT_MS: KeyInfo = KeyInfo {
    section: "pool",
    key: "job_timeout_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(10000),
    range: Some(Range { min: 10, max: 3_600_000, unit: Unit::Millis, zero: None }),
    choices: &[],
    live: RESTART,
    doc: "a hound whose current job makes no progress for this long is killed (job outcome timed_out)",
};

/// `pool.max_in_flight_per_hound`.
pub const POOL_MAX_IN_FLIGHT_PER_HOUND: KeyInfo = KeyInfo {
    section: "pool",
    key: "max_in_flight_per_hound",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(64),
    range: Some(Range {
        min: 1,
        max: 65_536,
        unit: Unit::Count,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "jobs queued in one hound's ring at most",
};

/// `pool.outcome_capacity`.
pub const POOL_OUTCOME_CAPACITY: KeyInfo = KeyInfo {
    section: "pool",
    key: "outcome_capacity",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(65536),
    range: Some(Range { min: 1, max: 16 * MIB, unit: Unit::Count, zero: None }),
    choices: &[],
    live: RESTART,
    doc: "capacity of the pool's outcome channel; outcomes that find it full are counted as undelivered",
};

/// `pool.hound_spin_us`.
pub const POOL_HOUND_SPIN_US: KeyInfo = KeyInfo {
    section: "pool",
    key: "hound_spin_us",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(50),
    range: Some(Range {
        min: 0,
        max: 100_000,
        unit: Unit::Micros,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "how long an idle hound spins before it sleeps, microseconds",
};

/// `pool.hound_idle_poll_ms`.
pub const POOL_HOUND_IDLE_POLL_MS: KeyInfo = KeyInfo {
    section: "pool",
    key: "hound_idle_poll_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(100),
    range: Some(Range {
        min: 1,
        max: 60_000,
        unit: Unit::Millis,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "longest sleep of an idle hound between checks, milliseconds",
};

/// `pool.collector_spin_us`.
pub const POOL_COLLECTOR_SPIN_US: KeyInfo = KeyInfo {
    section: "pool",
    key: "collector_spin_us",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(50),
    range: Some(Range {
        min: 0,
        max: 100_000,
        unit: Unit::Micros,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "how long the supervisor's collector spins before it sleeps, microseconds",
};

/// `pool.start_timeout_ms`.
pub const POOL_START_TIMEOUT_MS: KeyInfo = KeyInfo {
    section: "pool",
    key: "start_timeout_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(10000),
    range: Some(Range {
        min: 100,
        max: 600_000,
        unit: Unit::Millis,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "time a hound has to start and complete its handshake",
};

/// `pool.hound_memory_budget_bytes`.
pub const POOL_HOUND_MEMORY_BUDGET_BYTES: KeyInfo = KeyInfo {
    section: "pool",
    key: "hound_memory_budget_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(1073741824),
    range: Some(Range {
        min: 1,
        max: 1 << 50,
        unit: Unit::Bytes,
        zero: Some("unlimited"),
    }),
    choices: &[],
    live: RESTART,
    doc: "address-space limit (RLIMIT_AS) of each hound, bytes; 0 leaves it unlimited",
};

/// `pool.hound_binary`.
pub const POOL_HOUND_BINARY: KeyInfo = KeyInfo {
    section: "pool",
    key: "hound_binary",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "path of the hound executable; empty: $HOUNDPOOL_HOUND_BIN, else `hound` beside houndd, else houndd itself",
};

/// `pool.hound_stderr`.
pub const POOL_HOUND_STDERR: KeyInfo = KeyInfo {
    section: "pool",
    key: "hound_stderr",
    kind: ValueKind::Bool,
    default: DefaultValue::Bool(true),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "whether hounds' standard error goes to the daemon's standard error (else /dev/null)",
};

/// `pool.prestart`.
pub const POOL_PRESTART: KeyInfo = KeyInfo {
    section: "pool",
    key: "prestart",
    kind: ValueKind::Bool,
    default: DefaultValue::Bool(true),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "keep one hound started ahead of demand, so a dead hound is replaced in about a millisecond (one idle process)",
};

/// `cold.backend`.
pub const COLD_BACKEND: KeyInfo = KeyInfo {
    section: "cold",
    key: "backend",
    kind: ValueKind::String,
    default: DefaultValue::Str("filesystem"),
    range: None,
    choices: &["filesystem", "s3", "none"],
    live: RESTART,
    doc: "which cold store the hounds write to",
};

/// `cold.path`.
pub const COLD_PATH: KeyInfo = KeyInfo {
    section: "cold",
    key: "path",
    kind: ValueKind::String,
    default: DefaultValue::Str("houndpool-data"),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "directory of the filesystem store (created if missing)",
};

/// `cold.prefix`.
pub const COLD_PREFIX: KeyInfo = KeyInfo {
    section: "cold",
    key: "prefix",
    kind: ValueKind::String,
    default: DefaultValue::Str("evidence/"),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "object key prefix; objects are <prefix><evidence-id>.thcs",
};

/// `cold.endpoint`.
pub const COLD_ENDPOINT: KeyInfo = KeyInfo {
    section: "cold",
    key: "endpoint",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "S3 endpoint URL, http:// or https:// (required for backend = \"s3\")",
};

/// `cold.bucket`.
pub const COLD_BUCKET: KeyInfo = KeyInfo {
    section: "cold",
    key: "bucket",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "S3 bucket (required for backend = \"s3\")",
};

/// `cold.region`.
pub const COLD_REGION: KeyInfo = KeyInfo {
    section: "cold",
    key: "region",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "S3 signing region; empty: $AWS_REGION, else $AWS_DEFAULT_REGION, else \"us-east-1\"",
};

/// `cold.path_style`.
pub const COLD_PATH_STYLE: KeyInfo = KeyInfo {
    section: "cold",
    key: "path_style",
    kind: ValueKind::Bool,
    default: DefaultValue::Bool(true),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "S3 path-style addressing (endpoint/bucket/key) instead of virtual-host style",
};

/// `cold.spool_dir`.
pub const COLD_SPOOL_DIR: KeyInfo = KeyInfo {
    section: "cold",
    key: "spool_dir",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "absolute directory where envelopes wait while S3 is unreachable; empty: no spool (evacuations fail instead)",
};

/// `cold.spool_limit_bytes`.
pub const COLD_SPOOL_LIMIT_BYTES: KeyInfo = KeyInfo {
    section: "cold",
    key: "spool_limit_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(1073741824),
    range: Some(Range {
        min: 0,
        max: 1 << 50,
        unit: Unit::Bytes,
        zero: None,
    }),
    choices: &[],
    live: RESTART,
    doc: "most bytes the spool may hold",
};

/// `cold.ca_file`.
pub const COLD_CA_FILE: KeyInfo = KeyInfo {
    section: "cold",
    key: "ca_file",
    kind: ValueKind::String,
    default: DefaultValue::Str(""),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "PEM file of CA certificate(s) trusted for an https:// S3 endpoint in addition to the built-in web roots; empty: the built-in roots only",
};

/// `cold.resolve_interval_ms`.
pub const COLD_RESOLVE_INTERVAL_MS: KeyInfo = KeyInfo {
    section: "cold",
    key: "resolve_interval_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(30000),
    range: Some(Range { min: 1000, max: 86_400_000, unit: Unit::Millis, zero: None }),
    choices: &[],
    live: RESTART,
    doc: "how often the supervisor re-resolves the S3 endpoint's host name for the hounds, milliseconds (also soon after a hound finds the endpoint unreachable)",
};

/// `sandbox.fd_hygiene`.
pub const SANDBOX_FD_HYGIENE: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "fd_hygiene",
    kind: ValueKind::String,
    default: DefaultValue::Str("best_effort"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "close every inherited descriptor",
};

/// `sandbox.environment`.
pub const SANDBOX_ENVIRONMENT: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "environment",
    kind: ValueKind::String,
    default: DefaultValue::Str("best_effort"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "clear the environment",
};

/// `sandbox.no_new_privs`.
pub const SANDBOX_NO_NEW_PRIVS: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "no_new_privs",
    kind: ValueKind::String,
    default: DefaultValue::Str("required"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "PR_SET_NO_NEW_PRIVS",
};

/// `sandbox.death_signal`.
pub const SANDBOX_DEATH_SIGNAL: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "death_signal",
    kind: ValueKind::String,
    default: DefaultValue::Str("best_effort"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "die with the supervisor (PR_SET_PDEATHSIG)",
};

/// `sandbox.rlimits`.
pub const SANDBOX_RLIMITS: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "rlimits",
    kind: ValueKind::String,
    default: DefaultValue::Str("best_effort"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "core 0, few files, memory budget, file size, nproc (not for uid 0)",
};

/// `sandbox.namespaces`.
pub const SANDBOX_NAMESPACES: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "namespaces",
    kind: ValueKind::String,
    default: DefaultValue::Str("auto"),
    range: None,
    choices: &["required", "best_effort", "off", "auto"],
    live: RESTART,
    doc: "user, net, ipc and mount namespaces (required when houndd runs as root, else best_effort: container runtimes refuse unshare to unprivileged processes)",
};

/// `sandbox.capabilities`.
pub const SANDBOX_CAPABILITIES: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "capabilities",
    kind: ValueKind::String,
    default: DefaultValue::Str("required"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "no capabilities (effective, permitted, inheritable, ambient; bounding set cleared where possible)",
};

/// `sandbox.landlock`.
pub const SANDBOX_LANDLOCK: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "landlock",
    kind: ValueKind::String,
    default: DefaultValue::Str("required"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "Landlock file (and TCP port) rules",
};

/// `sandbox.seccomp`.
pub const SANDBOX_SECCOMP: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "seccomp",
    kind: ValueKind::String,
    default: DefaultValue::Str("required"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "seccomp-bpf system-call allow-list",
};

/// `sandbox.cgroup`.
pub const SANDBOX_CGROUP: KeyInfo = KeyInfo {
    section: "sandbox",
    key: "cgroup",
    kind: ValueKind::String,
    default: DefaultValue::Str("best_effort"),
    range: None,
    choices: &["required", "best_effort", "off"],
    live: RESTART,
    doc: "a cgroup per hound where the hierarchy is writable",
};

/// `daemon.socket`.
pub const DAEMON_SOCKET: KeyInfo = KeyInfo {
    section: "daemon",
    key: "socket",
    kind: ValueKind::String,
    default: DefaultValue::Str("/run/houndpool/houndd.sock"),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "path of the Unix socket clients connect to",
};

/// `daemon.socket_mode`.
pub const DAEMON_SOCKET_MODE: KeyInfo = KeyInfo {
    section: "daemon",
    key: "socket_mode",
    kind: ValueKind::String,
    default: DefaultValue::Str("0600"),
    range: None,
    choices: &[],
    live: LIVE,
    doc: "file mode of the socket, octal",
};

/// `daemon.allowed_uids`.
pub const DAEMON_ALLOWED_UIDS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "allowed_uids",
    kind: ValueKind::IntegerList,
    default: DefaultValue::EmptyList,
    range: None,
    choices: &[],
    live: LIVE,
    doc: "peer uids allowed to connect (checked with SO_PEERCRED); empty: any uid the socket's file mode lets in",
};

/// `daemon.max_connections`.
pub const DAEMON_MAX_CONNECTIONS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "max_connections",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(256),
    range: Some(Range { min: 1, max: 65_536, unit: Unit::Count, zero: None }),
    choices: &[],
    live: LIVE,
    doc: "client connections served at once; at the limit a new connection closes the longest-quiet one (nothing in flight, quiet for 1 s), else it is refused with an error frame",
};

/// `daemon.outcome_buffer`.
pub const DAEMON_OUTCOME_BUFFER: KeyInfo = KeyInfo {
    section: "daemon",
    key: "outcome_buffer",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(1024),
    range: Some(Range { min: 1, max: MIB, unit: Unit::Count, zero: None }),
    choices: &[],
    live: LIVE,
    doc: "per connection: jobs accepted and not yet written back; at the limit the daemon stops reading the connection until an outcome is written",
};

/// `daemon.write_stall_timeout_ms`.
pub const DAEMON_WRITE_STALL_TIMEOUT_MS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "write_stall_timeout_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(10000),
    range: Some(Range { min: 100, max: 600_000, unit: Unit::Millis, zero: None }),
    choices: &[],
    live: LIVE,
    doc: "a client that has not taken written bytes for this long is disconnected (error write_stalled); its outcomes not written in full are counted as undelivered",
};

/// `daemon.max_frame_bytes`.
pub const DAEMON_MAX_FRAME_BYTES: KeyInfo = KeyInfo {
    section: "daemon",
    key: "max_frame_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(0),
    range: Some(Range { min: 4096, max: 256 * MIB + 64 * 1024, unit: Unit::Bytes, zero: Some("derived from the pool limits") }),
    choices: &[],
    live: LIVE,
    doc: "largest frame body a client may send; 0: max_evidence_bytes (or the decode envelope limit) plus 64 KiB",
};

/// `daemon.drain_grace_ms`.
pub const DAEMON_DRAIN_GRACE_MS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "drain_grace_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(25000),
    range: Some(Range {
        min: 0,
        max: 3_600_000,
        unit: Unit::Millis,
        zero: None,
    }),
    choices: &[],
    live: LIVE,
    doc: "on SIGTERM or SIGINT, time allowed to finish accepted jobs before the rest are dropped",
};

/// `daemon.max_connections_per_uid`.
pub const DAEMON_MAX_CONNECTIONS_PER_UID: KeyInfo = KeyInfo {
    section: "daemon",
    key: "max_connections_per_uid",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(0),
    range: Some(Range {
        min: 1,
        max: 65_536,
        unit: Unit::Count,
        zero: Some("no cap"),
    }),
    choices: &[],
    live: LIVE,
    doc: "connections one peer uid (SO_PEERCRED) may hold at once; 0: no per-uid cap",
};

/// `daemon.frame_timeout_ms`.
pub const DAEMON_FRAME_TIMEOUT_MS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "frame_timeout_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(5000),
    range: Some(Range { min: 100, max: 600_000, unit: Unit::Millis, zero: None }),
    choices: &[],
    live: LIVE,
    doc: "a client that started a frame must complete it within this long (time the daemon itself waits for buffer budget not counted), else it is closed (error frame_timeout)",
};

/// `daemon.idle_timeout_ms`.
pub const DAEMON_IDLE_TIMEOUT_MS: KeyInfo = KeyInfo {
    section: "daemon",
    key: "idle_timeout_ms",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(300000),
    range: Some(Range { min: 1000, max: 86_400_000, unit: Unit::Millis, zero: None }),
    choices: &[],
    live: LIVE,
    doc: "a connection with no job in flight that sends nothing for this long is closed (error idle_timeout)",
};

/// `daemon.buffer_budget_bytes`.
pub const DAEMON_BUFFER_BUDGET_BYTES: KeyInfo = KeyInfo {
    section: "daemon",
    key: "buffer_budget_bytes",
    kind: ValueKind::Integer,
    default: DefaultValue::Int(0),
    range: Some(Range { min: 4 * MIB, max: 1 << 40, unit: Unit::Bytes, zero: Some("pool.host_reserve_bytes / 2") }),
    choices: &[],
    live: RESTART,
    doc: "daemon-wide bytes reserved for buffered submits and outcomes of all connections; 0: pool.host_reserve_bytes / 2",
};

/// `ops.addr`.
pub const OPS_ADDR: KeyInfo = KeyInfo {
    section: "ops",
    key: "addr",
    kind: ValueKind::String,
    default: DefaultValue::Str("127.0.0.1:9464"),
    range: None,
    choices: &[],
    live: RESTART,
    doc: "address of the HTTP endpoint (/metrics, /healthz, /readyz); \"off\" disables it",
};

/// `log.level`.
pub const LOG_LEVEL: KeyInfo = KeyInfo {
    section: "log",
    key: "level",
    kind: ValueKind::String,
    default: DefaultValue::Str("info"),
    range: None,
    choices: &[],
    live: LIVE,
    doc: "log filter: a level (error, warn, info, debug, trace) or tracing directives such as \"info,houndpool=debug\"",
};

/// `log.format`.
pub const LOG_FORMAT: KeyInfo = KeyInfo {
    section: "log",
    key: "format",
    kind: ValueKind::String,
    default: DefaultValue::Str("text"),
    range: None,
    choices: &["text", "json"],
    live: RESTART,
    doc: "log line format on stderr: \"text\" (human-readable) or \"json\" (one JSON object per line: timestamp, level, target, message, fields, spans)",
};

/// Every configuration key, in the order they are documented and printed. A key not listed
/// here is refused, in the file and in the environment alike.
pub static KEYS: &[KeyInfo] = &[
    POOL_SIZE,
    POOL_HOST_RESERVE_BYTES,
    POOL_EXHAUSTED,
    POOL_DEFER_LIMIT,
    POOL_MAX_EVIDENCE_BYTES,
    POOL_MAX_OUTPUT_BYTES,
    POOL_GZIP_LEVEL,
    POOL_JOB_TIMEOUT_MS,
    POOL_MAX_IN_FLIGHT_PER_HOUND,
    POOL_OUTCOME_CAPACITY,
    POOL_HOUND_SPIN_US,
    POOL_HOUND_IDLE_POLL_MS,
    POOL_COLLECTOR_SPIN_US,
    POOL_START_TIMEOUT_MS,
    POOL_HOUND_MEMORY_BUDGET_BYTES,
    POOL_HOUND_BINARY,
    POOL_HOUND_STDERR,
    POOL_PRESTART,
    COLD_BACKEND,
    COLD_PATH,
    COLD_PREFIX,
    COLD_ENDPOINT,
    COLD_BUCKET,
    COLD_REGION,
    COLD_PATH_STYLE,
    COLD_SPOOL_DIR,
    COLD_SPOOL_LIMIT_BYTES,
    COLD_CA_FILE,
    COLD_RESOLVE_INTERVAL_MS,
    SANDBOX_FD_HYGIENE,
    SANDBOX_ENVIRONMENT,
    SANDBOX_NO_NEW_PRIVS,
    SANDBOX_DEATH_SIGNAL,
    SANDBOX_RLIMITS,
    SANDBOX_NAMESPACES,
    SANDBOX_CAPABILITIES,
    SANDBOX_LANDLOCK,
    SANDBOX_SECCOMP,
    SANDBOX_CGROUP,
    DAEMON_SOCKET,
    DAEMON_SOCKET_MODE,
    DAEMON_ALLOWED_UIDS,
    DAEMON_MAX_CONNECTIONS,
    DAEMON_OUTCOME_BUFFER,
    DAEMON_WRITE_STALL_TIMEOUT_MS,
    DAEMON_MAX_FRAME_BYTES,
    DAEMON_DRAIN_GRACE_MS,
    DAEMON_MAX_CONNECTIONS_PER_UID,
    DAEMON_FRAME_TIMEOUT_MS,
    DAEMON_IDLE_TIMEOUT_MS,
    DAEMON_BUFFER_BUDGET_BYTES,
    OPS_ADDR,
    LOG_LEVEL,
    LOG_FORMAT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_sorted_by_section_and_their_defaults_allowed() {
        let mut seen = std::collections::BTreeSet::new();
        let mut last_section = 0;
        for k in KEYS {
            assert!(seen.insert(k.dotted()), "{} twice", k.dotted());
            let s = SECTIONS.iter().position(|s| *s == k.section).unwrap();
            assert!(s >= last_section, "{} out of section order", k.dotted());
            last_section = s;
            match (k.kind, k.default, k.range) {
                (ValueKind::Integer, DefaultValue::Int(n), Some(r)) => {
                    assert!(
                        r.contains(n),
                        "{}: default {n} outside its range",
                        k.dotted()
                    )
                }
                (ValueKind::IntegerOrWord, DefaultValue::Str(w), Some(_))
                | (ValueKind::String, DefaultValue::Str(w), _) => assert!(
                    k.choices.is_empty() || k.choices.contains(&w),
                    "{}: default {w} not among its words",
                    k.dotted()
                ),
                (ValueKind::Bool, DefaultValue::Bool(_), None)
                | (ValueKind::IntegerList, DefaultValue::EmptyList, None) => {}
                other => panic!("{}: inconsistent declaration {other:?}", k.dotted()),
            }
            assert!(!k.doc.is_empty() && !k.doc.contains('\n'), "{}", k.dotted());
        }
    }

    #[test]
    fn allowed_prose_is_derived_from_the_numbers() {
        assert_eq!(POOL_GZIP_LEVEL.allowed(), "an integer from 0 to 9");
        assert_eq!(POOL_SIZE.allowed(), "an integer from 1 to 256, or \"auto\"");
        assert_eq!(
            DAEMON_MAX_FRAME_BYTES.allowed(),
            "0 (derived from the pool limits) or bytes from 4096 to 268500992 (256 MiB + 64 KiB)"
        );
        assert_eq!(
            DAEMON_BUFFER_BUDGET_BYTES.allowed(),
            "0 (pool.host_reserve_bytes / 2) or bytes from 4194304 (4 MiB) to 1099511627776 (1 TiB)"
        );
        assert_eq!(
            POOL_HOUND_MEMORY_BUDGET_BYTES.allowed(),
            "0 (unlimited) or bytes from 1 to 2^50"
        );
        assert_eq!(
            POOL_EXHAUSTED.allowed(),
            "one of \"defer\", \"drop\", \"escalate\""
        );
        assert_eq!(POOL_PRESTART.allowed(), "true or false");
        let r = DAEMON_MAX_CONNECTIONS_PER_UID.range.unwrap();
        assert!(r.contains(0) && r.contains(65_536) && !r.contains(65_537));
        let r = DAEMON_MAX_FRAME_BYTES.range.unwrap();
        assert!(!r.contains(4095) && r.contains(4096));
    }

    #[test]
    fn variables_and_live_keys_come_from_the_table() {
        assert_eq!(POOL_GZIP_LEVEL.env_name(), "HOUNDPOOL_POOL_GZIP_LEVEL");
        let live = live_keys();
        assert!(live.contains(&"log.level".to_string()));
        assert!(!live.contains(&"pool.size".to_string()));
        assert_eq!(env_names().len(), KEYS.len());
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/CONFIGURATION.md holds [`super::markdown`] between its markers. With
    /// `HOUNDPOOL_WRITE_DOCS=1` the test rewrites the file instead of failing.
    #[test]
    fn configuration_md_holds_the_generated_key_tables() {
        const BEGIN: &str = "<!-- BEGIN KEYS: generated from supervisor/src/keys.rs by `houndd config docs`; a test fails when this differs -->\n";
        const END: &str = "<!-- END KEYS -->";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
        let end = doc.find(END).expect("end marker");
        let generated = super::markdown();
        if doc[start..end] != generated {
            if std::env::var_os("HOUNDPOOL_WRITE_DOCS").is_some() {
                let new = format!("{}{generated}{}", &doc[..start], &doc[end..]);
                std::fs::write(&path, new).unwrap();
            } else {
                panic!(
                    "docs/CONFIGURATION.md's key tables differ from the key table: run \
                     `HOUNDPOOL_WRITE_DOCS=1 cargo test -p houndpool-supervisor --lib keys` \
                     (or paste `houndd config docs`)"
                );
            }
        }
    }
}
