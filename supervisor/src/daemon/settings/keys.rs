//! The table of every configuration key: section, name, TOML type, default and meaning; the
//! environment variable of each is derived from its section and name.

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
