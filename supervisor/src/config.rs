//! Pool configuration and its validation.

use std::path::PathBuf;
use std::time::Duration;

use houndpool_protocol::control::{FsCommit, S3Target, SandboxPolicy};
use houndpool_protocol::region::RegionLayout;
use houndpool_protocol::{job, ring};

use crate::{keys, PoolError};

/// How many hounds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolSize {
    /// Exactly this many (1..=256).
    Fixed(usize),
    /// Decided at build from the process's own cgroup limits (ARCHITECTURE §3.5):
    /// `n = clamp(min(cpu, (memory_limit − host_reserve) / per_hound_budget), min, max)`.
    ///
    /// `per_hound_budget` is everything one hound may use, its two rings included (their memfd
    /// pages are charged to the container): it becomes the hound's address-space rlimit
    /// (`hound_memory_budget` is ignored) and caps its cgroup memory limit. Slots are allocated
    /// for `max` hounds so the target can move between `min` and the computed size later
    /// (high-water mark).
    Auto {
        /// Memory one hound may use, rings included, in bytes (≥ ring memory + 64 MiB).
        per_hound_budget: u64,
        /// Memory kept for the host process, subtracted from the container limit.
        host_reserve: u64,
        /// Fewest hounds (≥ 1).
        min: usize,
        /// Most hounds (min..=256).
        max: usize,
    },
}

impl PoolSize {
    /// The default: `Auto` with a 256 MiB budget per hound (rings included), 256 MiB kept for
    /// the host, at least 1 hound and at most one per CPU this process may use. In a container
    /// with no memory limit this is one hound per CPU.
    pub fn auto() -> Self {
        PoolSize::Auto {
            per_hound_budget: 256 << 20,
            host_reserve: 256 << 20,
            min: 1,
            max: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 256),
        }
    }
}

impl Default for PoolSize {
    fn default() -> Self {
        PoolSize::auto()
    }
}

/// Restart intensity (ARCHITECTURE §3.3): more than `max_restarts` hound restarts pool-wide
/// within `within` opens the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed in the window (≥ 1).
    pub max_restarts: u32,
    /// The sliding window (100 ms to 1 hour).
    pub within: Duration,
}

/// When a hound is retired and replaced although healthy (ARCHITECTURE §3.3). Each limit gets
/// ±10 % jitter per hound so hounds do not retire together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Retire after about this many completed jobs (≥ 1 when set).
    pub after_jobs: Option<u64>,
    /// Retire after about this long (≥ 100 ms when set).
    pub after: Option<Duration>,
}

/// What `submit` does when no hound has ring space (ARCHITECTURE §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolExhaustedAction {
    /// Refuse with `SubmitError::PoolExhausted` and count a drop.
    Drop,
    /// Queue up to `limit` jobs in memory (severity lanes); drained as rings free up.
    Defer {
        /// Queue bound.
        limit: usize,
    },
    /// Refuse with `SubmitError::PoolExhausted` and emit an escalation event.
    Escalate,
}

/// Which executable runs as the hound.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoundBinary {
    /// `$HOUNDPOOL_HOUND_BIN` if set; else a `hound` file beside the current executable (or
    /// beside its `deps/` parent, for test binaries); else the current executable itself if it
    /// called `run_hound_if_requested()`.
    Auto,
    /// This file.
    Path(PathBuf),
    /// The current executable, which must call `run_hound_if_requested()` first in `main`.
    CurrentExe,
}

/// Where evacuated evidence goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColdConfig {
    /// No cold storage: Evacuate, Restore and Erase fail with `cold_storage_unavailable`.
    None,
    /// A local directory (the embedded default: `./houndpool-data`).
    Filesystem {
        /// Directory (made absolute at build).
        root: PathBuf,
        /// Key prefix.
        prefix: String,
    },
    /// An S3-compatible object store.
    S3(S3Target),
}

/// Everything a pool is built from. Defaults are production values; see each field.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of hounds. Default `Fixed(available_parallelism)`.
    pub size: PoolSize,
    /// Exhaustion behaviour. Default `Defer { limit: 4096 }`.
    pub exhausted: PoolExhaustedAction,
    /// Hound executable. Default `Auto`.
    pub hound_binary: HoundBinary,
    /// Cold storage. Default filesystem at `./houndpool-data`, prefix `evidence/`.
    pub cold: ColdConfig,
    /// Largest evidence body accepted by submit. Default 1 MiB.
    pub max_evidence_bytes: usize,
    /// Largest decoded output (Restore, Decode). Default 1 MiB.
    pub max_output_bytes: usize,
    /// gzip level for Encode / Evacuate. Default 6.
    pub gzip_level: u8,
    /// A hound whose current job makes no progress for this long is killed. Default 10 s.
    pub job_timeout: Duration,
    /// Jobs queued in one hound's ring at most. Default 64.
    pub max_in_flight_per_hound: usize,
    /// Capacity of the outcome channel; `None` disables the channel (callback only). Default 65 536.
    pub outcome_capacity: Option<usize>,
    /// How long an idle hound spins before sleeping. The spin yields the CPU to any other
    /// runnable thread on every turn (`sched_yield`), so it only burns a core nobody else
    /// wants. Default 50 µs.
    pub hound_spin: Duration,
    /// Longest sleep of an idle hound between checks. Default 100 ms.
    pub hound_idle_poll: Duration,
    /// How long the supervisor's collector spins before sleeping (yielding, like the hound's;
    /// not at all while hounds are busy on every CPU). Default 50 µs.
    pub collector_spin: Duration,
    /// Time allowed for a hound to start and complete its handshake. Default 10 s.
    pub start_timeout: Duration,
    /// Address-space budget of each hound (RLIMIT_AS). Default 1 GiB.
    pub hound_memory_budget: u64,
    /// Sandbox layer modes. Default: [`SandboxPolicy::safe_default`] — `no_new_privs`,
    /// `capabilities`, `landlock` and `seccomp` required, `namespaces` required when this
    /// process runs as root, the rest best-effort. A hound that cannot enforce a required layer
    /// makes `build` fail with [`crate::PoolError::SandboxRequirement`]; opt out per layer with
    /// `sandbox: SandboxPolicy::safe_default(..).with(layer, LayerMode::BestEffort)`.
    pub sandbox: SandboxPolicy,
    /// Whether hounds' stderr goes to the supervisor's stderr (else /dev/null). Default true.
    pub hound_stderr: bool,
    /// Keep one hound started, placed in its cgroup and waiting for its handshake ahead of
    /// demand, so that replacing a dead hound costs only the handshake and the sandbox
    /// (~1.3 ms) instead of a full spawn (on cgroup v1, placing a process in a cgroup after a
    /// quiet spell waits for an RCU grace period: 7-24 ms measured). Costs one idle process
    /// (a few MiB, no job code, no rings touched). Default true.
    pub prestart: bool,
    /// Memory limit of each hound's own cgroup, where per-hound cgroups are available (capped
    /// by the address-space budget when that is lower). Default 512 MiB.
    pub hound_cgroup_memory: u64,
    /// Pids limit (processes + threads) of each hound's cgroup. Default 32.
    pub hound_pids_limit: u32,
    /// High-water mark as a share of the container's memory limit (0 < mark ≤ 1): above it the
    /// supervisor retires the largest hound and lowers the target size. Default 0.9.
    pub high_water_mark: f64,
    /// The target grows again once usage is below `high_water_mark − high_water_hysteresis`.
    /// Default 0.1.
    pub high_water_hysteresis: f64,
    /// Restart intensity that opens the circuit. Default 10 restarts in 10 s.
    pub restart_intensity: RestartIntensity,
    /// How long an open circuit waits before a probe hound (half-open). Default 5 s.
    pub circuit_cooldown: Duration,
    /// Rotation of healthy hounds. Default none.
    pub rotation: Rotation,
    /// How long a retiring hound (rotation, high-water mark) or one that reported a fatal
    /// error may take to exit after being asked to (or after its `Fatal`) before it is
    /// SIGKILLed (counted in `PoolStats::retire_kills`). Default 2 s.
    pub retire_grace: Duration,
    /// Name resolution and TLS roots of an S3 cold target. Default: system resolver every
    /// 30 s, built-in web roots.
    pub cold_net: crate::cold::net::ColdNet,
    /// How a filesystem cold store commits evacuations (`cold.fs_commit`). Default
    /// [`FsCommit::Journal`]: each hound appends a batch to its own journal with one write and
    /// one fdatasync, and the pool turns journals into key files in the background
    /// (docs/ARCHITECTURE.md, "Cold store commit journal"). Ignored by other targets.
    pub fs_commit: FsCommit,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: PoolSize::auto(),
            // Every default below that has a houndd key comes from the key table.
            exhausted: PoolExhaustedAction::Defer {
                limit: keys::POOL_DEFER_LIMIT.int_default() as usize,
            },
            hound_binary: HoundBinary::Auto,
            cold: ColdConfig::Filesystem {
                root: PathBuf::from(keys::COLD_PATH.str_default()),
                prefix: keys::COLD_PREFIX.str_default().into(),
            },
            max_evidence_bytes: keys::POOL_MAX_EVIDENCE_BYTES.int_default() as usize,
            max_output_bytes: keys::POOL_MAX_OUTPUT_BYTES.int_default() as usize,
            gzip_level: keys::POOL_GZIP_LEVEL.int_default() as u8,
            job_timeout: Duration::from_millis(keys::POOL_JOB_TIMEOUT_MS.int_default()),
            max_in_flight_per_hound: keys::POOL_MAX_IN_FLIGHT_PER_HOUND.int_default() as usize,
            outcome_capacity: Some(keys::POOL_OUTCOME_CAPACITY.int_default() as usize),
            hound_spin: Duration::from_micros(keys::POOL_HOUND_SPIN_US.int_default()),
            hound_idle_poll: Duration::from_millis(keys::POOL_HOUND_IDLE_POLL_MS.int_default()),
            collector_spin: Duration::from_micros(keys::POOL_COLLECTOR_SPIN_US.int_default()),
            start_timeout: Duration::from_millis(keys::POOL_START_TIMEOUT_MS.int_default()),
            hound_memory_budget: keys::POOL_HOUND_MEMORY_BUDGET_BYTES.int_default(),
            sandbox: SandboxPolicy::safe_default(nix::unistd::geteuid().is_root()),
            hound_stderr: keys::POOL_HOUND_STDERR.bool_default(),
            prestart: keys::POOL_PRESTART.bool_default(),
            hound_cgroup_memory: 512 << 20,
            hound_pids_limit: 32,
            high_water_mark: 0.9,
            high_water_hysteresis: 0.1,
            restart_intensity: RestartIntensity {
                max_restarts: 10,
                within: Duration::from_secs(10),
            },
            circuit_cooldown: Duration::from_secs(5),
            rotation: Rotation::default(),
            retire_grace: Duration::from_secs(2),
            cold_net: crate::cold::net::ColdNet::default(),
            fs_commit: match keys::COLD_FS_COMMIT.str_default() {
                "per-file" => FsCommit::PerFile,
                _ => FsCommit::Journal,
            },
        }
    }
}

impl PoolConfig {
    /// The number of hound slots this configuration asks for: `n` for `Fixed(n)`, `max` for
    /// `Auto` (the running target is in `PoolStats::size`).
    pub fn hound_count(&self) -> usize {
        match self.size {
            PoolSize::Fixed(n) => n,
            PoolSize::Auto { min, max, .. } => max.max(min),
        }
    }

    /// The address-space budget each hound gets: `per_hound_budget` with `Auto`, else
    /// `hound_memory_budget` (0 = unlimited).
    pub fn effective_memory_budget(&self) -> u64 {
        match self.size {
            PoolSize::Auto {
                per_hound_budget, ..
            } => per_hound_budget,
            PoolSize::Fixed(_) => self.hound_memory_budget,
        }
    }

    /// The memory limit of a hound's cgroup: `hound_cgroup_memory`, capped by the address-space
    /// budget when one is set (RSS never exceeds the address space).
    pub fn effective_cgroup_memory(&self) -> u64 {
        match self.effective_memory_budget() {
            0 => self.hound_cgroup_memory,
            b => self.hound_cgroup_memory.min(b),
        }
    }

    /// Ring sizes that fit the largest request (header + max evidence) and the largest
    /// completion (header + the larger of an envelope of max evidence and max output).
    pub fn region_layout(&self) -> RegionLayout {
        let req = job::REQUEST_HEADER_LEN + self.max_evidence_bytes;
        let out = houndpool_protocol::envelope::max_envelope_len(
            self.max_evidence_bytes.max(self.max_output_bytes),
        );
        let cmp = job::COMPLETION_HEADER_LEN + out;
        let cap = |payload: usize| -> usize {
            // max_payload(cap) = cap/2 - 8 >= payload  <=>  cap >= 2 * (payload + 8)
            (2 * (payload + ring::RECORD_HEADER_LEN))
                .next_power_of_two()
                .max(64 * 1024)
        };
        RegionLayout {
            request_capacity: cap(req),
            completion_capacity: cap(cmp),
        }
    }

    /// Checks every value; the error names the setting, the value and what is allowed.
    pub fn validate(&self) -> Result<(), PoolError> {
        let bad = |key: &'static str, value: String, allowed: &str| {
            Err(PoolError::InvalidConfig {
                key,
                value,
                allowed: allowed.into(),
            })
        };
        let n = self.hound_count();
        if let PoolSize::Auto { min, max, .. } = self.size {
            if min == 0 || max < min {
                return bad(
                    "size.auto",
                    format!("min {min}, max {max}"),
                    "1 <= min <= max <= 256",
                );
            }
        }
        if !(1..=256).contains(&n) {
            return bad("size", n.to_string(), "1 to 256 hounds");
        }
        if self.hound_cgroup_memory < (16 << 20) {
            return bad(
                "hound_cgroup_memory",
                self.hound_cgroup_memory.to_string(),
                "at least 16 MiB",
            );
        }
        if !(1..=4096).contains(&self.hound_pids_limit) {
            return bad(
                "hound_pids_limit",
                self.hound_pids_limit.to_string(),
                "1 to 4096",
            );
        }
        let conc = self.cold_net.s3_concurrency;
        if !(1..=crate::cold::net::MAX_S3_CONCURRENCY).contains(&conc) {
            return bad("cold_net.s3_concurrency", conc.to_string(), "1 to 64");
        }
        if matches!(self.cold, ColdConfig::S3(_)) && u32::from(conc) >= self.hound_pids_limit {
            // The hound and its upload threads all count against its pids cgroup.
            return bad(
                "cold_net.s3_concurrency",
                conc.to_string(),
                "below hound_pids_limit (a hound's upload threads count against it)",
            );
        }
        let mark = self.high_water_mark;
        if !(mark > 0.0 && mark <= 1.0) {
            return bad("high_water_mark", mark.to_string(), "a share in (0, 1]");
        }
        let hyst = self.high_water_hysteresis;
        if !(0.0..mark).contains(&hyst) {
            return bad(
                "high_water_hysteresis",
                hyst.to_string(),
                "0 <= hysteresis < high_water_mark",
            );
        }
        let ri = self.restart_intensity;
        if ri.max_restarts == 0
            || ri.within < Duration::from_millis(100)
            || ri.within > Duration::from_secs(3600)
        {
            return bad(
                "restart_intensity",
                format!("{} in {:?}", ri.max_restarts, ri.within),
                "at least 1 restart in a window of 100 ms to 1 hour",
            );
        }
        if self.circuit_cooldown < Duration::from_millis(10)
            || self.circuit_cooldown > Duration::from_secs(3600)
        {
            return bad(
                "circuit_cooldown",
                format!("{:?}", self.circuit_cooldown),
                "10 ms to 1 hour",
            );
        }
        if self.retire_grace < Duration::from_millis(10)
            || self.retire_grace > Duration::from_secs(600)
        {
            return bad(
                "retire_grace",
                format!("{:?}", self.retire_grace),
                "10 ms to 10 minutes",
            );
        }
        if self.rotation.after_jobs == Some(0) {
            return bad("rotation.after_jobs", "0".into(), "at least 1, or None");
        }
        if self
            .rotation
            .after
            .is_some_and(|d| d < Duration::from_millis(100))
        {
            return bad(
                "rotation.after",
                format!("{:?}", self.rotation.after),
                "at least 100 ms, or None",
            );
        }
        // The ranges of the fields that are configuration keys of houndd come from the key
        // table (one declaration); a value is shown as given and in the key's unit.
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut checks: Vec<(&'static str, &keys::KeyInfo, u64, String)> = vec![
            (
                "max_evidence_bytes",
                &keys::POOL_MAX_EVIDENCE_BYTES,
                self.max_evidence_bytes as u64,
                self.max_evidence_bytes.to_string(),
            ),
            (
                "max_output_bytes",
                &keys::POOL_MAX_OUTPUT_BYTES,
                self.max_output_bytes as u64,
                self.max_output_bytes.to_string(),
            ),
            (
                "gzip_level",
                &keys::POOL_GZIP_LEVEL,
                u64::from(self.gzip_level),
                self.gzip_level.to_string(),
            ),
            (
                "job_timeout",
                &keys::POOL_JOB_TIMEOUT_MS,
                ms(self.job_timeout),
                format!("{:?}", self.job_timeout),
            ),
            (
                "max_in_flight_per_hound",
                &keys::POOL_MAX_IN_FLIGHT_PER_HOUND,
                self.max_in_flight_per_hound as u64,
                self.max_in_flight_per_hound.to_string(),
            ),
            (
                "hound_spin",
                &keys::POOL_HOUND_SPIN_US,
                us(self.hound_spin),
                format!("{:?}", self.hound_spin),
            ),
            (
                "collector_spin",
                &keys::POOL_COLLECTOR_SPIN_US,
                us(self.collector_spin),
                format!("{:?}", self.collector_spin),
            ),
            (
                "hound_idle_poll",
                &keys::POOL_HOUND_IDLE_POLL_MS,
                ms(self.hound_idle_poll),
                format!("{:?}", self.hound_idle_poll),
            ),
        ];
        if let PoolExhaustedAction::Defer { limit } = self.exhausted {
            checks.push((
                "exhausted.defer.limit",
                &keys::POOL_DEFER_LIMIT,
                limit as u64,
                limit.to_string(),
            ));
        }
        for (field, key, value, shown) in checks {
            if !key.range.is_some_and(|r| r.contains(value)) {
                return bad(
                    field,
                    shown,
                    &format!("{} (houndd: {})", key.allowed(), key.dotted()),
                );
            }
        }
        if self.outcome_capacity == Some(0) {
            return bad("outcome_capacity", "0".into(), "at least 1, or None");
        }
        let layout = self.region_layout();
        let budget = self.effective_memory_budget();
        if budget != 0 && budget < (layout.memory_bytes() as u64).saturating_add(64 << 20) {
            return bad(
                match self.size {
                    PoolSize::Auto { .. } => "size.auto.per_hound_budget",
                    PoolSize::Fixed(_) => "hound_memory_budget",
                },
                budget.to_string(),
                &format!(
                    "0 (unlimited) or at least the ring memory ({} bytes) plus 64 MiB",
                    layout.memory_bytes()
                ),
            );
        }
        if let ColdConfig::Filesystem { prefix, .. } = &self.cold {
            if !prefix.is_empty() {
                houndpool_cold::validate_key(&format!("{prefix}x"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_fits_one_mib_evidence() {
        let c = PoolConfig::default();
        let l = c.region_layout();
        assert!(l.max_request_payload() >= job::REQUEST_HEADER_LEN + (1 << 20));
        assert!(
            l.max_completion_payload()
                >= job::COMPLETION_HEADER_LEN
                    + houndpool_protocol::envelope::max_envelope_len(1 << 20)
        );
        assert_eq!(l.request_capacity, 4 << 20);
    }

    #[test]
    fn validation_names_the_setting() {
        let c = PoolConfig {
            size: PoolSize::Fixed(0),
            ..PoolConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("size") && e.contains("1 to 256"), "{e}");
        let c = PoolConfig {
            gzip_level: 12,
            ..PoolConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("gzip_level"));
        let c = PoolConfig {
            exhausted: PoolExhaustedAction::Defer { limit: 0 },
            ..PoolConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("defer"));
    }

    #[test]
    fn isolation_settings_are_validated() {
        let bad = |f: fn(&mut PoolConfig)| {
            let mut c = PoolConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.high_water_mark = 0.0).contains("high_water_mark"));
        assert!(bad(|c| c.high_water_mark = f64::NAN).contains("high_water_mark"));
        assert!(bad(|c| c.high_water_hysteresis = 0.95).contains("hysteresis"));
        assert!(bad(|c| c.restart_intensity.max_restarts = 0).contains("restart_intensity"));
        assert!(bad(|c| c.rotation.after_jobs = Some(0)).contains("rotation"));
        assert!(bad(|c| c.retire_grace = Duration::ZERO).contains("retire_grace"));
        assert!(bad(|c| c.hound_pids_limit = 0).contains("hound_pids_limit"));
        assert!(bad(|c| c.cold_net.s3_concurrency = 0).contains("s3_concurrency"));
        assert!(bad(|c| c.cold_net.s3_concurrency = 65).contains("s3_concurrency"));
        assert!(bad(|c| {
            c.size = PoolSize::Auto {
                per_hound_budget: 1 << 30,
                host_reserve: 0,
                min: 3,
                max: 2,
            }
        })
        .contains("size.auto"));
        // An Auto budget must hold the rings plus 64 MiB; it replaces hound_memory_budget.
        let mut c = PoolConfig {
            size: PoolSize::Auto {
                per_hound_budget: 32 << 20,
                host_reserve: 0,
                min: 1,
                max: 4,
            },
            ..PoolConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("per_hound_budget"));
        c.size = PoolSize::Auto {
            per_hound_budget: 256 << 20,
            host_reserve: 0,
            min: 1,
            max: 4,
        };
        c.validate().unwrap();
        assert_eq!(c.hound_count(), 4);
        assert_eq!(c.effective_memory_budget(), 256 << 20);
        assert_eq!(c.effective_cgroup_memory(), 256 << 20);
        // The default is Auto with a 256 MiB budget, which caps the 512 MiB cgroup default.
        assert_eq!(PoolConfig::default().effective_cgroup_memory(), 256 << 20);
    }
}
