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

/// An integer key's range: `min..=max` in `unit`.
const fn span(min: u64, max: u64, unit: Unit) -> Option<Range> {
    Some(Range {
        min,
        max,
        unit,
        zero: None,
    })
}

/// An integer key's range: `min..=max` in `unit`, and 0 meaning `zero`.
const fn or_zero(zero: &'static str, min: u64, max: u64, unit: Unit) -> Option<Range> {
    Some(Range {
        min,
        max,
        unit,
        zero: Some(zero),
    })
}

/// No range (not an integer key).
const NONE: Option<Range> = None;

/// Declares each key as a `pub const` named after it and [`KEYS`], the list of them all, in
/// order. One entry per key: name, section, key, type, default, range, words, reload, meaning.
macro_rules! keys {
    ($($name:ident: $section:literal, $key:literal, $kind:ident, $default:expr, $range:expr,
       $choices:expr, $live:expr, $doc:literal;)*) => {
        $(
            #[doc = concat!("`", $section, ".", $key, "`: ", $doc, ".")]
            pub const $name: KeyInfo = KeyInfo {
                section: $section,
                key: $key,
                kind: ValueKind::$kind,
                default: $default,
                range: $range,
                choices: $choices,
                live: $live,
                doc: $doc,
            };
        )*
        /// Every configuration key, in the order they are documented and printed. A key not
        /// listed here is refused, in the file and in the environment alike.
        pub static KEYS: &[KeyInfo] = &[$($name),*];
    };
}

use DefaultValue::{Bool, EmptyList, Int, Str};
use Unit::{Bytes, Count, Micros, Millis};

keys! {
    // ---- [pool]
    POOL_SIZE: "pool", "size", IntegerOrWord, Str("auto"), span(1, 256, Count), &["auto"], RESTART,
        "number of hounds, or \"auto\": min(CPUs, (memory limit − host_reserve_bytes) / (hound_memory_budget_bytes + ring memory)) from the process's cgroup limits";
    POOL_HOST_RESERVE_BYTES: "pool", "host_reserve_bytes", Integer, Int(268435456), span(0, 1 << 50, Bytes), &[], RESTART,
        "memory kept for houndd itself (defer queue and outcome buffers included) when size = \"auto\" divides the memory limit among hounds";
    POOL_EXHAUSTED: "pool", "exhausted", String, Str("defer"), NONE, &["defer", "drop", "escalate"], RESTART,
        "what submit does when no hound has ring space: \"defer\" (bounded queue with severity lanes), \"drop\" (refuse) or \"escalate\" (refuse and emit an escalation event)";
    POOL_DEFER_LIMIT: "pool", "defer_limit", Integer, Int(4096), span(1, 10_000_000, Count), &[], RESTART,
        "capacity of the defer queue, jobs (exhausted = \"defer\")";
    POOL_MAX_EVIDENCE_BYTES: "pool", "max_evidence_bytes", Integer, Int(1048576), span(1, 256 * MIB, Bytes), &[], RESTART,
        "largest evidence body accepted by submit, bytes";
    POOL_MAX_OUTPUT_BYTES: "pool", "max_output_bytes", Integer, Int(1048576), span(1, 256 * MIB, Bytes), &[], RESTART,
        "largest decoded output of restore and decode jobs, bytes";
    POOL_GZIP_LEVEL: "pool", "gzip_level", Integer, Int(6), span(0, 9, Count), &[], RESTART,
        "gzip level of encode and evacuate jobs";
    POOL_JOB_TIMEOUT_MS: "pool", "job_timeout_ms", Integer, Int(10000), span(10, 3_600_000, Millis), &[], RESTART,
        "a hound whose current job makes no progress for this long is killed (job outcome timed_out); an S3 hound bounds each store operation by half of it, so an endpoint that does not answer ends in the spool, not in a kill";
    POOL_MAX_IN_FLIGHT_PER_HOUND: "pool", "max_in_flight_per_hound", Integer, Int(64), span(1, 65_536, Count), &[], RESTART,
        "jobs queued in one hound's ring at most";
    POOL_OUTCOME_CAPACITY: "pool", "outcome_capacity", Integer, Int(65536), span(1, 16 * MIB, Count), &[], RESTART,
        "capacity of the pool's outcome channel; outcomes that find it full are counted as undelivered";
    POOL_HOUND_SPIN_US: "pool", "hound_spin_us", Integer, Int(50), span(0, 100_000, Micros), &[], RESTART,
        "how long an idle hound spins before it sleeps, microseconds";
    POOL_HOUND_IDLE_POLL_MS: "pool", "hound_idle_poll_ms", Integer, Int(100), span(1, 60_000, Millis), &[], RESTART,
        "longest sleep of an idle hound between checks, milliseconds";
    POOL_COLLECTOR_SPIN_US: "pool", "collector_spin_us", Integer, Int(50), span(0, 100_000, Micros), &[], RESTART,
        "how long the supervisor's collector spins before it sleeps, microseconds";
    POOL_START_TIMEOUT_MS: "pool", "start_timeout_ms", Integer, Int(10000), span(100, 600_000, Millis), &[], RESTART,
        "time a hound has to start and complete its handshake";
    POOL_HOUND_MEMORY_BUDGET_BYTES: "pool", "hound_memory_budget_bytes", Integer, Int(1073741824), or_zero("unlimited", 1, 1 << 50, Bytes), &[], RESTART,
        "address-space limit (RLIMIT_AS) of each hound, bytes; 0 leaves it unlimited";
    POOL_HOUND_BINARY: "pool", "hound_binary", String, Str(""), NONE, &[], RESTART,
        "path of the hound executable; empty: $HOUNDPOOL_HOUND_BIN, else `hound` beside houndd, else houndd itself";
    POOL_HOUND_STDERR: "pool", "hound_stderr", Bool, Bool(true), NONE, &[], RESTART,
        "whether hounds' standard error goes to the daemon's standard error (else /dev/null)";
    POOL_PRESTART: "pool", "prestart", Bool, Bool(true), NONE, &[], RESTART,
        "keep one hound started ahead of demand, so a dead hound is replaced in about a millisecond (one idle process)";
    // ---- [cold]
    COLD_BACKEND: "cold", "backend", String, Str("filesystem"), NONE, &["filesystem", "s3", "none"], RESTART,
        "which cold store the hounds write to";
    COLD_PATH: "cold", "path", String, Str("houndpool-data"), NONE, &[], RESTART,
        "directory of the filesystem store (created if missing)";
    COLD_PREFIX: "cold", "prefix", String, Str("evidence/"), NONE, &[], RESTART,
        "object key prefix; objects are <prefix><evidence-id>.thcs";
    COLD_ENDPOINT: "cold", "endpoint", String, Str(""), NONE, &[], RESTART,
        "S3 endpoint URL, http:// or https:// (required for backend = \"s3\")";
    COLD_BUCKET: "cold", "bucket", String, Str(""), NONE, &[], RESTART,
        "S3 bucket (required for backend = \"s3\")";
    COLD_REGION: "cold", "region", String, Str(""), NONE, &[], RESTART,
        "S3 signing region; empty: $AWS_REGION, else $AWS_DEFAULT_REGION, else \"us-east-1\"";
    COLD_PATH_STYLE: "cold", "path_style", Bool, Bool(true), NONE, &[], RESTART,
        "S3 path-style addressing (endpoint/bucket/key) instead of virtual-host style";
    COLD_SPOOL_DIR: "cold", "spool_dir", String, Str(""), NONE, &[], RESTART,
        "absolute directory where envelopes wait while S3 is unreachable; empty: no spool (evacuations fail instead)";
    COLD_SPOOL_LIMIT_BYTES: "cold", "spool_limit_bytes", Integer, Int(1073741824), span(0, 1 << 50, Bytes), &[], RESTART,
        "most bytes the spool may hold";
    COLD_CA_FILE: "cold", "ca_file", String, Str(""), NONE, &[], RESTART,
        "PEM file of CA certificate(s) trusted for an https:// S3 endpoint in addition to the built-in web roots; empty: the built-in roots only";
    COLD_S3_CONCURRENCY: "cold", "s3_concurrency", Integer, Int(16), span(1, 64, Count), &[], RESTART,
        "most S3 uploads each hound runs at once (1: one at a time, no upload threads); must stay below pool.hound_pids_limit";
    COLD_FS_COMMIT: "cold", "fs_commit", String, Str("journal"), NONE, &["journal", "per-file"], RESTART,
        "how the filesystem store commits evacuations: \"journal\" appends each batch to the hound's journal (one write + one fdatasync; the supervisor turns journals into key files in the background), \"per-file\" writes and syncs a file per key";
    COLD_RESOLVE_INTERVAL_MS: "cold", "resolve_interval_ms", Integer, Int(30000), span(1000, 86_400_000, Millis), &[], RESTART,
        "how often the supervisor re-resolves the S3 endpoint's host name for the hounds, milliseconds (also soon after a hound finds the endpoint unreachable)";
    // ---- [sandbox]
    SANDBOX_FD_HYGIENE: "sandbox", "fd_hygiene", String, Str("best_effort"), NONE, &["required", "best_effort", "off"], RESTART,
        "close every inherited descriptor";
    SANDBOX_ENVIRONMENT: "sandbox", "environment", String, Str("best_effort"), NONE, &["required", "best_effort", "off"], RESTART,
        "clear the environment";
    SANDBOX_NO_NEW_PRIVS: "sandbox", "no_new_privs", String, Str("required"), NONE, &["required", "best_effort", "off"], RESTART,
        "PR_SET_NO_NEW_PRIVS";
    SANDBOX_DEATH_SIGNAL: "sandbox", "death_signal", String, Str("best_effort"), NONE, &["required", "best_effort", "off"], RESTART,
        "die with the supervisor (PR_SET_PDEATHSIG)";
    SANDBOX_RLIMITS: "sandbox", "rlimits", String, Str("best_effort"), NONE, &["required", "best_effort", "off"], RESTART,
        "core 0, few files, memory budget, file size, nproc (not for uid 0)";
    SANDBOX_NAMESPACES: "sandbox", "namespaces", String, Str("auto"), NONE, &["required", "best_effort", "off", "auto"], RESTART,
        "user, net, ipc and mount namespaces (required when houndd runs as root, else best_effort: container runtimes refuse unshare to unprivileged processes)";
    SANDBOX_CAPABILITIES: "sandbox", "capabilities", String, Str("required"), NONE, &["required", "best_effort", "off"], RESTART,
        "no capabilities (effective, permitted, inheritable, ambient; bounding set cleared where possible)";
    SANDBOX_LANDLOCK: "sandbox", "landlock", String, Str("required"), NONE, &["required", "best_effort", "off"], RESTART,
        "Landlock file (and TCP port) rules";
    SANDBOX_SECCOMP: "sandbox", "seccomp", String, Str("required"), NONE, &["required", "best_effort", "off"], RESTART,
        "seccomp-bpf system-call allow-list";
    SANDBOX_CGROUP: "sandbox", "cgroup", String, Str("best_effort"), NONE, &["required", "best_effort", "off"], RESTART,
        "a cgroup per hound where the hierarchy is writable";
    // ---- [daemon]
    DAEMON_SOCKET: "daemon", "socket", String, Str("/run/houndpool/houndd.sock"), NONE, &[], RESTART,
        "path of the Unix socket clients connect to";
    DAEMON_SOCKET_MODE: "daemon", "socket_mode", String, Str("0600"), NONE, &[], LIVE,
        "file mode of the socket, octal";
    DAEMON_ALLOWED_UIDS: "daemon", "allowed_uids", IntegerList, EmptyList, NONE, &[], LIVE,
        "peer uids allowed to connect (checked with SO_PEERCRED); empty: any uid the socket's file mode lets in";
    DAEMON_MAX_CONNECTIONS: "daemon", "max_connections", Integer, Int(256), span(1, 65_536, Count), &[], LIVE,
        "client connections served at once; at the limit a new connection closes the longest-quiet one (nothing in flight, quiet for 1 s), else it is refused with an error frame";
    DAEMON_OUTCOME_BUFFER: "daemon", "outcome_buffer", Integer, Int(1024), span(1, MIB, Count), &[], LIVE,
        "per connection: jobs accepted and not yet written back; at the limit the daemon stops reading the connection until an outcome is written";
    DAEMON_WRITE_STALL_TIMEOUT_MS: "daemon", "write_stall_timeout_ms", Integer, Int(10000), span(100, 600_000, Millis), &[], LIVE,
        "a client that has not taken written bytes for this long is disconnected (error write_stalled); its outcomes not written in full are counted as undelivered";
    DAEMON_MAX_FRAME_BYTES: "daemon", "max_frame_bytes", Integer, Int(0), or_zero("derived from the pool limits", 4096, 256 * MIB + 64 * 1024, Bytes), &[], LIVE,
        "largest frame body a client may send; 0: max_evidence_bytes (or the decode envelope limit) plus 64 KiB";
    DAEMON_DRAIN_GRACE_MS: "daemon", "drain_grace_ms", Integer, Int(25000), span(0, 3_600_000, Millis), &[], LIVE,
        "on SIGTERM or SIGINT, time allowed to finish accepted jobs before the rest are dropped";
    DAEMON_MAX_CONNECTIONS_PER_UID: "daemon", "max_connections_per_uid", Integer, Int(0), or_zero("no cap", 1, 65_536, Count), &[], LIVE,
        "connections one peer uid (SO_PEERCRED) may hold at once; 0: no per-uid cap";
    DAEMON_FRAME_TIMEOUT_MS: "daemon", "frame_timeout_ms", Integer, Int(5000), span(100, 600_000, Millis), &[], LIVE,
        "a client that started a frame must complete it within this long (time the daemon itself waits for buffer budget not counted), else it is closed (error frame_timeout)";
    DAEMON_IDLE_TIMEOUT_MS: "daemon", "idle_timeout_ms", Integer, Int(300000), span(1000, 86_400_000, Millis), &[], LIVE,
        "a connection with no job in flight that sends nothing for this long is closed (error idle_timeout)";
    DAEMON_BUFFER_BUDGET_BYTES: "daemon", "buffer_budget_bytes", Integer, Int(0), or_zero("pool.host_reserve_bytes / 2", 4 * MIB, 1 << 40, Bytes), &[], RESTART,
        "daemon-wide bytes reserved for buffered submits and outcomes of all connections; 0: pool.host_reserve_bytes / 2";
    // ---- [ops]
    OPS_ADDR: "ops", "addr", String, Str("127.0.0.1:9464"), NONE, &[], RESTART,
        "address of the HTTP endpoint (/metrics, /healthz, /readyz); \"off\" disables it";
    // ---- [log]
    LOG_LEVEL: "log", "level", String, Str("info"), NONE, &[], LIVE,
        "log filter: a level (error, warn, info, debug, trace) or tracing directives such as \"info,houndpool=debug\"";
    LOG_FORMAT: "log", "format", String, Str("text"), NONE, &["text", "json"], RESTART,
        "log line format on stderr: \"text\" (human-readable) or \"json\" (one JSON object per line: timestamp, level, target, message, fields, spans)";
}

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
