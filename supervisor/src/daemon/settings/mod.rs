//! The configuration of the `houndd` daemon: a TOML file whose every key can be overridden by an
//! environment variable `HOUNDPOOL_<SECTION>_<KEY>` (the Kubernetes ConfigMap style).
//!
//! * Sections: `[pool]`, `[cold]`, `[sandbox]`, `[daemon]`, `[ops]`, `[log]`. Every key is declared
//!   once in [`crate::keys`] (type, default, range or words, live flag, meaning); the checks here
//!   and their messages take the allowed values from there, and docs/CONFIGURATION.md's tables
//!   are generated from it.
//! * An empty file is valid: every key has a default.
//! * `HOUNDPOOL_POOL_SIZE=4` overrides `[pool] size`; the key part is the key in upper case.
//!   Variables whose section part is not a known section (`HOUNDPOOL_HOUND_BIN`, `HOUNDPOOL_LOG`)
//!   are not configuration and are ignored here; a variable naming a known section but an
//!   unknown key is an error, so that a misspelt ConfigMap entry fails loudly.
//! * Every error names the key (and the variable, when the value came from one), the bad value
//!   and what is allowed ([`DaemonError::InvalidConfig`]).
//! * S3 credentials are never part of the file: they come from `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, and are never printed.
//!
//! This module only parses and validates. Turning a [`Config`] into a running pool is
//! [`crate::daemon::config`]'s job.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use houndpool_protocol::control::{Layer, LayerMode};
use toml::Value;

use crate::daemon::DaemonError;

mod sections;
mod types;
mod values;

pub use crate::keys::{env_names, key_info, KeyInfo, ValueKind, ENV_PREFIX, KEYS, SECTIONS};
use sections::{
    auto_namespaces, cold_settings, daemon_settings, log_settings, ops_settings, pool_settings,
    sandbox_settings,
};
pub use types::{
    ColdBackend, ColdSettings, Config, DaemonSettings, ExhaustedSetting, LogSettings, OpsSettings,
    PoolSettings, PoolSizeSetting, S3Credentials, S3Settings,
};
use values::{invalid, Values};

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

impl Config {
    /// Parses `text` (TOML) and applies the `HOUNDPOOL_*` variables among `env`; the AWS
    /// variables among `env` supply S3 credentials and region. Other variables are ignored.
    /// Pure: reads nothing but its arguments.
    pub fn load(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, DaemonError> {
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
    pub fn load_file(path: Option<&Path>) -> Result<Config, DaemonError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| DaemonError::ConfigRead {
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

    fn from_values(values: &Values, env: &BTreeMap<String, String>) -> Result<Config, DaemonError> {
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
                ("cold", "fs_commit") => s(match self.cold.fs_commit {
                    houndpool_protocol::control::FsCommit::Journal => "journal",
                    houndpool_protocol::control::FsCommit::PerFile => "per-file",
                }),
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
                ("cold", "s3_concurrency") => int(s3.map_or(16, |t| u64::from(t.concurrency))),
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
    /// [`Config::load`] reads back to an equal value. Each line ends with a comment taken from
    /// the key's declaration: its variable, whether a reload applies it, and its default when
    /// the value differs. Credentials are shown only as present or absent.
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
            // From the key's declaration: its variable, whether a reload applies it, and
            // its default when the effective value differs.
            let mut note = format!(
                "{}; {}",
                info.env_name(),
                if info.live {
                    "live"
                } else {
                    "restart to change"
                }
            );
            if value.to_string() != info.default.to_string() {
                note.push_str(&format!("; default {}", info.default));
            }
            out.push_str(&format!("{} = {value}  # {note}\n", info.key));
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
    use std::path::PathBuf;

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
        let text = c.render();
        assert!(
            text.contains("size = 2  # HOUNDPOOL_POOL_SIZE; restart to change; default \"auto\"\n"),
            "{text}"
        );
        assert!(
            text.contains("level = \"info\"  # HOUNDPOOL_LOG_LEVEL; live\n"),
            "{text}"
        );
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
