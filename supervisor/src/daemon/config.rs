//! From the daemon's configuration file ([`super::settings::Config`]) to what runs:
//! the [`PoolConfig`] of the pool, the server's limits, and which changes a reload (SIGHUP)
//! can apply to a running daemon.

use std::path::PathBuf;
use std::time::Duration;

use super::settings::{ColdBackend, Config, ExhaustedSetting, PoolSizeSetting};
use super::DaemonError;
use crate::cgroup::{self, CgroupVersion, ContainerLimits, PoolSizing, SizingDecision};
use crate::keys::KEYS;
use houndpool_protocol::control::S3Target;

use crate::{ColdConfig, HoundBinary, PoolConfig, PoolError, PoolExhaustedAction, PoolSize};

/// Frame overhead allowed above the largest body a submit can carry (metadata, ids, framing).
pub const FRAME_SLACK: u32 = 64 * 1024;

/// A configuration checked in full: the file's values, the pool configuration built from
/// them (validated by [`PoolConfig::validate`]), the log filter (parsed), and the derived
/// server limits. Building one touches no running state.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The configuration as read.
    pub config: Config,
    /// What the pool is built from.
    pub pool: PoolConfig,
    /// Largest client frame body the server accepts.
    pub max_frame: u32,
    /// How `pool.size = "auto"` was decided (`None` for a fixed size).
    pub sizing: Option<SizingDecision>,
}

/// The pool key each [`PoolConfig::validate`] setting name comes from, so that its errors
/// name the file's key.
fn file_key(pool_key: &str) -> String {
    match pool_key {
        "size" => "pool.size".into(),
        "exhausted.defer.limit" => "pool.defer_limit".into(),
        "job_timeout" => "pool.job_timeout_ms".into(),
        "hound_spin" => "pool.hound_spin_us".into(),
        "collector_spin" => "pool.collector_spin_us".into(),
        "hound_idle_poll" => "pool.hound_idle_poll_ms".into(),
        "hound_memory_budget" => "pool.hound_memory_budget_bytes".into(),
        other => format!("pool.{other}"),
    }
}

/// Builds the pool configuration, sizing an `auto` pool from the process's own cgroup limits
/// (read once here); every error names the file's key.
pub fn pool_config(c: &Config) -> Result<(PoolConfig, Option<SizingDecision>), DaemonError> {
    let limits = match c.pool.size {
        PoolSizeSetting::Fixed(_) => ContainerLimits::unlimited(CgroupVersion::V2),
        PoolSizeSetting::Auto => cgroup::detect().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the cgroup limits; sizing by CPU count only");
            ContainerLimits::unlimited(CgroupVersion::V2)
        }),
    };
    let parallelism = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    pool_config_for(c, &limits, parallelism)
}

/// [`pool_config`] for given limits and CPU count (pure: tests and `config check` use it).
///
/// `auto` follows ARCHITECTURE §3.5: `min(cpu, (memory limit − pool.host_reserve_bytes) /
/// per-hound budget)` clamped to 1..=256, where the per-hound budget is
/// `pool.hound_memory_budget_bytes` plus the hound's ring memory (memfd pages count against the
/// container), and `cpu` is the CPU quota rounded up, the cpuset, or `parallelism`.
pub fn pool_config_for(
    c: &Config,
    limits: &ContainerLimits,
    parallelism: usize,
) -> Result<(PoolConfig, Option<SizingDecision>), DaemonError> {
    let p = &c.pool;
    // An auto pool's size depends on its ring memory, which does not depend on the size.
    let initial = match p.size {
        PoolSizeSetting::Fixed(n) => n,
        PoolSizeSetting::Auto => 1,
    };
    let mut pool = build_pool_config(c, initial);
    let sizing = match p.size {
        PoolSizeSetting::Fixed(_) => None,
        PoolSizeSetting::Auto => {
            let rings = pool.region_layout().memory_bytes() as u64;
            let budget = match p.hound_memory_budget_bytes {
                0 => 0,
                b => b.saturating_add(rings),
            };
            let d = cgroup::decide_pool_size(
                limits,
                parallelism,
                &PoolSizing {
                    per_hound_budget: budget,
                    host_reserve: p.host_reserve_bytes,
                    min: 1,
                    max: 256,
                },
            );
            pool.size = PoolSize::Fixed(d.size);
            Some(d)
        }
    };
    validate(pool).map(|pool| (pool, sizing))
}

fn validate(pool: PoolConfig) -> Result<PoolConfig, DaemonError> {
    match pool.validate() {
        Ok(()) => Ok(pool),
        Err(PoolError::InvalidConfig {
            key,
            value,
            allowed,
        }) => Err(DaemonError::InvalidConfig {
            key: file_key(key),
            value,
            allowed,
        }),
        Err(other) => Err(DaemonError::InvalidConfig {
            key: "pool".into(),
            value: String::new(),
            allowed: other.to_string(),
        }),
    }
}

/// The pool configuration with `size` hounds (no validation).
fn build_pool_config(c: &Config, size: usize) -> PoolConfig {
    let p = &c.pool;
    let cold = match &c.cold.backend {
        ColdBackend::None => ColdConfig::None,
        ColdBackend::Filesystem { path } => ColdConfig::Filesystem {
            root: path.clone(),
            prefix: c.cold.prefix.clone(),
        },
        ColdBackend::S3(s) => ColdConfig::S3(S3Target {
            endpoint: s.endpoint.clone(),
            bucket: s.bucket.clone(),
            prefix: c.cold.prefix.clone(),
            region: s.region.clone(),
            path_style: s.path_style,
            access_key: s.credentials.access_key.clone(),
            secret_key: s.credentials.secret_key.clone(),
            session_token: s.credentials.session_token.clone(),
            spool_dir: s
                .spool_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
            spool_limit_bytes: s.spool_limit_bytes,
        }),
    };
    PoolConfig {
        size: PoolSize::Fixed(size),
        exhausted: match p.exhausted {
            ExhaustedSetting::Defer => PoolExhaustedAction::Defer {
                limit: p.defer_limit,
            },
            ExhaustedSetting::Drop => PoolExhaustedAction::Drop,
            ExhaustedSetting::Escalate => PoolExhaustedAction::Escalate,
        },
        hound_binary: match &p.hound_binary {
            Some(path) => HoundBinary::Path(PathBuf::from(path)),
            None => HoundBinary::Auto,
        },
        cold,
        cold_net: match &c.cold.backend {
            ColdBackend::S3(s) => crate::cold::ColdNet {
                ca_file: s.ca_file.clone(),
                resolve_interval: s.resolve_interval,
                s3_concurrency: s.concurrency,
                ..Default::default()
            },
            _ => Default::default(),
        },
        max_evidence_bytes: p.max_evidence_bytes,
        max_output_bytes: p.max_output_bytes,
        gzip_level: p.gzip_level,
        job_timeout: p.job_timeout,
        max_in_flight_per_hound: p.max_in_flight_per_hound,
        outcome_capacity: Some(p.outcome_capacity),
        hound_spin: p.hound_spin,
        hound_idle_poll: p.hound_idle_poll,
        collector_spin: p.collector_spin,
        start_timeout: p.start_timeout,
        hound_memory_budget: p.hound_memory_budget_bytes,
        sandbox: c.sandbox.clone(),
        hound_stderr: p.hound_stderr,
        prestart: p.prestart,
        fs_commit: c.cold.fs_commit,
        // Cgroup limits, high-water mark, restart intensity and rotation keep the library's
        // defaults until the file grows keys for them.
        ..PoolConfig::default()
    }
}

/// Checks the log filter the way the daemon will install it.
pub fn log_filter(c: &Config) -> Result<tracing_subscriber::EnvFilter, DaemonError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(&c.log.level)
        .map_err(|e| DaemonError::InvalidConfig {
            key: "log.level".into(),
            value: c.log.level.clone(),
            allowed: format!(
                "a level (error, warn, info, debug, trace) or tracing directives ({e})"
            ),
        })
}

/// The largest client frame body: the configured one, or the largest submit body the pool
/// can accept (evidence, or an envelope for decode) plus [`FRAME_SLACK`].
pub fn max_frame(c: &Config) -> u32 {
    if let Some(n) = c.daemon.max_frame_bytes {
        return n;
    }
    let body = c
        .pool
        .max_evidence_bytes
        .max(houndpool_cold::max_envelope_len(c.pool.max_output_bytes));
    u32::try_from(body)
        .unwrap_or(u32::MAX)
        .saturating_add(FRAME_SLACK)
}

/// The daemon-wide budget of bytes buffered for clients (frames being read, and the
/// reserved worst case of every accepted job's body and outcome): `daemon.buffer_budget_bytes`,
/// or half of `pool.host_reserve_bytes` (the other half is left for the daemon's own heap,
/// the per-connection fixed buffers and the pool's books).
pub fn buffer_budget(c: &Config) -> u64 {
    c.daemon
        .buffer_budget_bytes
        .unwrap_or(c.pool.host_reserve_bytes / 2)
        .max(1)
}

/// Descriptors the daemon process itself uses besides connections and hounds (standard
/// streams, the listeners, the runtime's epoll and eventfd, log and cgroup files, the store).
pub const BASE_DESCRIPTORS: u64 = 64;
/// Descriptors the supervisor holds per hound (control socket, memfd, eventfds, pidfd, pipes),
/// with room to spare.
pub const DESCRIPTORS_PER_HOUND: u64 = 12;

/// Descriptors a daemon with this configuration and `hounds` hounds may need at once:
/// `max_connections` + eviction margin (`max_connections / 8 + 8`) + refusals in progress
/// + ops connections + (`hounds` + 1 spare) × per-hound + base.
pub fn descriptors_needed(c: &Config, hounds: usize) -> u64 {
    descriptors_for(c.daemon.max_connections as u64, hounds)
}

/// Refusals (error frame + linger) in progress at most; beyond, a refused connection is
/// closed at once without an error frame, so refusals cannot exhaust descriptors.
pub const MAX_REFUSING: usize = 32;

/// Connections being evicted at most at once (each holds its descriptor until it is closed):
/// the eviction margin of [`descriptors_needed`].
pub fn eviction_margin(max_connections: usize) -> usize {
    max_connections / 8 + 8
}

fn descriptors_for(connections: u64, hounds: usize) -> u64 {
    connections
        + eviction_margin(connections as usize) as u64
        + MAX_REFUSING as u64
        + super::ops::MAX_OPS_CONNECTIONS as u64
        + (hounds as u64 + 1) * DESCRIPTORS_PER_HOUND
        + BASE_DESCRIPTORS
}

/// The largest `max_connections` whose descriptors fit `limit`.
pub fn max_connections_fitting(_c: &Config, hounds: usize, limit: u64) -> u64 {
    let fixed = descriptors_for(0, hounds);
    // connections × 9/8 + fixed <= limit
    limit.saturating_sub(fixed) * 8 / 9
}

/// Checks everything that can be checked without starting anything.
pub fn prepare(config: Config) -> Result<Prepared, DaemonError> {
    let (pool, sizing) = pool_config(&config)?;
    log_filter(&config)?;
    let max_frame = max_frame(&config);
    Ok(Prepared {
        config,
        pool,
        max_frame,
        sizing,
    })
}

/// Whether a reload applies a change of `key` (`section.key`) to the running daemon: the
/// key's `live` flag in the key table ([`crate::keys`]). Every other key needs a restart.
///
/// * `log.level` — the log filter is swapped.
/// * `daemon.socket_mode` — the socket file is chmod-ed.
/// * `daemon.allowed_uids`, `daemon.max_connections`, `daemon.max_connections_per_uid` —
///   checked for each new connection.
/// * `daemon.outcome_buffer`, `daemon.write_stall_timeout_ms`, `daemon.max_frame_bytes`,
///   `daemon.frame_timeout_ms`, `daemon.idle_timeout_ms` — apply to connections opened after
///   the reload.
/// * `daemon.drain_grace_ms` — used by the next drain.
///
/// `daemon.buffer_budget_bytes` needs a restart (the budget is sized once). The pool keys
/// (size, exhaustion action, deadlines, …) are fixed when the pool is built: the pool's API
/// has no live reconfiguration yet, so a reload reports them as needing a restart.
pub fn is_live(key: &str) -> bool {
    KEYS.iter().any(|k| k.live && k.dotted() == key)
}

/// One changed key found by a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `section.key`.
    pub key: String,
    /// Old value (TOML).
    pub old: String,
    /// New value (TOML).
    pub new: String,
    /// Whether the running daemon applies it (see [`is_live`]).
    pub live: bool,
}

/// The changes from `old` to `new`, each marked live or needing a restart.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    old.diff(new)
        .into_iter()
        .map(|(key, old, new)| Change {
            live: is_live(&key),
            key,
            old,
            new,
        })
        .collect()
}

/// A duration as whole milliseconds, for logs.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        Config::load(text, Vec::new()).unwrap()
    }

    fn fixed(c: &Config) -> PoolConfig {
        pool_config(c).unwrap().0
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let limits = ContainerLimits::unlimited(CgroupVersion::V2);
        let parallelism = std::thread::available_parallelism().unwrap().get();
        let (p, sizing) = pool_config_for(&Config::default(), &limits, parallelism).unwrap();
        assert!(sizing.is_some());
        let d = PoolConfig::default();
        // The library's default is Auto; without limits it is one hound per CPU, as here.
        assert_eq!(p.size, PoolSize::Fixed(d.hound_count()));
        assert_eq!(p.exhausted, d.exhausted);
        assert_eq!(p.hound_binary, d.hound_binary);
        assert_eq!(p.cold, d.cold);
        assert_eq!(p.max_evidence_bytes, d.max_evidence_bytes);
        assert_eq!(p.max_output_bytes, d.max_output_bytes);
        assert_eq!(p.gzip_level, d.gzip_level);
        assert_eq!(p.job_timeout, d.job_timeout);
        assert_eq!(p.max_in_flight_per_hound, d.max_in_flight_per_hound);
        assert_eq!(p.outcome_capacity, d.outcome_capacity);
        assert_eq!(p.hound_spin, d.hound_spin);
        assert_eq!(p.hound_idle_poll, d.hound_idle_poll);
        assert_eq!(p.collector_spin, d.collector_spin);
        assert_eq!(p.start_timeout, d.start_timeout);
        assert_eq!(p.hound_memory_budget, d.hound_memory_budget);
        assert_eq!(p.hound_stderr, d.hound_stderr);
        assert_eq!(p.prestart, d.prestart);
        // The same safe defaults, layer by layer (namespaces "auto" = the library's root rule).
        for layer in houndpool_protocol::control::Layer::ALL {
            assert_eq!(
                p.sandbox.mode(layer),
                d.sandbox.mode(layer),
                "{}",
                layer.name()
            );
        }
    }

    #[test]
    fn pool_validation_errors_name_the_file_key() {
        let c = load("[pool]\nhound_memory_budget_bytes = 1000\n");
        let e = pool_config(&c).unwrap_err().to_string();
        assert!(e.contains("pool.hound_memory_budget_bytes"), "{e}");
        let _ = fixed;
        let c = load("[log]\nlevel = \"info,[\"\n");
        let e = prepare(c).unwrap_err().to_string();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn s3_settings_become_the_s3_target() {
        let c = Config::load(
            "[cold]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"ev\"\nprefix = \"p/\"\nspool_dir = \"/var/spool/x\"\n",
            vec![
                ("AWS_ACCESS_KEY_ID".into(), "AK".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "SK".into()),
            ],
        )
        .unwrap();
        let ColdConfig::S3(t) = fixed(&c).cold else {
            panic!("not s3")
        };
        assert_eq!(
            (t.endpoint.as_str(), t.bucket.as_str(), t.prefix.as_str()),
            ("http://127.0.0.1:9000", "ev", "p/")
        );
        assert_eq!((t.access_key.as_str(), t.secret_key.as_str()), ("AK", "SK"));
        assert_eq!(t.region, "us-east-1");
        assert!(t.path_style);
        assert_eq!(t.spool_dir.as_deref(), Some("/var/spool/x"));
    }

    #[test]
    fn auto_size_divides_the_memory_limit_as_the_kubernetes_example_says() {
        // docs/KUBERNETES.md: 2 GiB limit, 2 CPUs, 512 MiB reserve, 384 MiB budget + 8 MiB rings.
        let c =
            load("[pool]\nhost_reserve_bytes = 536870912\nhound_memory_budget_bytes = 402653184\n");
        let mut limits = ContainerLimits::unlimited(CgroupVersion::V2);
        limits.memory_limit = Some(2 << 30);
        limits.cpu_quota_cores = Some(2.0);
        let (p, d) = pool_config_for(&c, &limits, 64).unwrap();
        let d = d.unwrap();
        let rings = p.region_layout().memory_bytes();
        assert!(
            (8 << 20..(8 << 20) + (64 << 10)).contains(&rings),
            "{rings}"
        );
        assert_eq!((d.cpu_bound, d.memory_bound), (2, Some(3)));
        assert_eq!(p.hound_count(), 2);
        limits.cpu_quota_cores = Some(3.5);
        let (p, _) = pool_config_for(&c, &limits, 64).unwrap();
        assert_eq!(p.hound_count(), 3);
        // A fixed size ignores the limits.
        let c = load("[pool]\nsize = 7\n");
        let (p, d) = pool_config_for(&c, &limits, 64).unwrap();
        assert_eq!((p.hound_count(), d), (7, None));
    }

    #[test]
    fn budget_and_descriptors_follow_the_documented_formulas() {
        let c = Config::default();
        assert_eq!(buffer_budget(&c), c.pool.host_reserve_bytes / 2);
        let c = load("[daemon]\nbuffer_budget_bytes = 8388608\n");
        assert_eq!(buffer_budget(&c), 8 << 20);
        let c = load("[daemon]\nmax_connections = 256\n");
        let n = descriptors_needed(&c, 2);
        assert_eq!(
            n,
            256 + 32 + 8 + 32 + 32 + 3 * DESCRIPTORS_PER_HOUND + BASE_DESCRIPTORS
        );
        let fit = max_connections_fitting(&c, 2, n);
        assert!(fit <= 256 && descriptors_for(fit, 2) <= n, "{fit}");
        assert!(descriptors_for(fit + 1, 2) > n || fit == 256);
    }

    #[test]
    fn frame_limit_covers_the_largest_submit() {
        let c = Config::default();
        let m = max_frame(&c) as usize;
        assert!(m > c.pool.max_evidence_bytes + 1024);
        let c = load("[daemon]\nmax_frame_bytes = 8192\n");
        assert_eq!(max_frame(&c), 8192);
    }

    #[test]
    fn reload_changes_are_classified() {
        assert!(is_live("log.level") && !is_live("pool.size") && !is_live("nope.x"));
        let a = Config::default();
        let b = load("[log]\nlevel = \"debug\"\n[pool]\nsize = 2\n");
        let ch = changes(&a, &b);
        assert_eq!(ch.len(), 2);
        let live: Vec<_> = ch
            .iter()
            .filter(|c| c.live)
            .map(|c| c.key.as_str())
            .collect();
        let restart: Vec<_> = ch
            .iter()
            .filter(|c| !c.live)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(live, ["log.level"]);
        assert_eq!(restart, ["pool.size"]);
    }
}
