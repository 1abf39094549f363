//! cgroup detection (v1 and v2), pool sizing from container limits, and per-hound cgroups.
//!
//! Implemented directly over the cgroupfs files, without the `cgroups-rs` crate (0.5.1 pulls
//! in zbus and a second `nix`, reads only the leaf cgroup, hard-codes the v2 root and does not
//! read v2 `memory.events`); docs/CGROUPS.md records the decision.
//!
//! - [`detect`] / [`detect_in`]: the process's own limits ([`ContainerLimits`]), taken as the
//!   minimum along the whole cgroup path from the process's cgroup up to the mount point.
//! - [`decide_pool_size`]: `Auto` pool sizing from those limits ([`SizingDecision`]).
//! - [`HoundCgroups`] / [`HoundCgroup`]: one child cgroup per hound with a memory and a pids
//!   limit, where the process's cgroup subtree is writable.

mod detect;
mod files;
mod manager;
mod pool_cgroups;
mod sizing;
mod tree;

use std::path::PathBuf;

pub use detect::{detect, detect_in, memory_usage, memory_working_set};
pub use manager::{CgroupSetup, HoundCgroup, HoundCgroups, POOL_DIR_PREFIX};
pub use sizing::{decide_pool_size, PoolSizing, SizingDecision};

pub(crate) use pool_cgroups::{decide_size, setup, Placed, PoolCgroups};

/// Which cgroup interface a controller is used through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "daemon", derive(serde::Serialize, serde::Deserialize))]
pub enum CgroupVersion {
    /// Legacy hierarchies, one mount per controller (or controller group), e.g.
    /// `/sys/fs/cgroup/memory`.
    V1,
    /// The unified hierarchy (`cgroup2`).
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// The resource limits of the process's own cgroup, as read by [`detect`].
///
/// Invariants:
/// - every limit is the tightest one found along the cgroup path from the process's cgroup up
///   to (and including) the cgroup at the mount point: a parent may be tighter than the leaf;
/// - `None` means "no limit found" (file missing, `max`, v1 `-1`, or a v1 "unlimited" sentinel
///   of 2^62 bytes or more such as 9223372036854771712), never zero;
/// - `cpu_quota_cores` is quota / period as read (fractional, e.g. 1.5), always > 0 when set;
/// - `cpuset_cpus` is the number of CPUs in the effective cpuset, > 0 when set.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "daemon", derive(serde::Serialize))]
pub struct ContainerLimits {
    /// The interface of the memory controller (hybrid hosts can mix: v1 memory with a
    /// controller-less cgroup2 mount is reported as `V1`). `V2` when no hierarchy was found.
    pub version: CgroupVersion,
    /// Hard memory limit in bytes: v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_limit: Option<u64>,
    /// v2 `memory.high` (throttling threshold) in bytes; always `None` on v1.
    pub memory_high: Option<u64>,
    /// Memory charged to the process's cgroup when detected (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub memory_usage: Option<u64>,
    /// CPU bandwidth limit in cores: v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, v2 `cpu.max`.
    pub cpu_quota_cores: Option<f64>,
    /// Number of CPUs the cpuset allows.
    pub cpuset_cpus: Option<usize>,
    /// The process's own cgroup directory in the memory hierarchy, when the memory controller
    /// is available there and the directory exists.
    pub memory_dir: Option<PathBuf>,
    /// The process's own cgroup directory in the pids hierarchy (equal to `memory_dir` on v2),
    /// when the pids controller is available there and the directory exists.
    pub pids_dir: Option<PathBuf>,
}

impl ContainerLimits {
    /// Limits of a process with no cgroup information at all: every field `None`.
    pub fn unlimited(version: CgroupVersion) -> Self {
        ContainerLimits {
            version,
            memory_limit: None,
            memory_high: None,
            memory_usage: None,
            cpu_quota_cores: None,
            cpuset_cpus: None,
            memory_dir: None,
            pids_dir: None,
        }
    }

    /// The memory the container may use before the kernel throttles or kills: the lower of
    /// `memory_limit` and `memory_high`, `None` when neither is set.
    pub fn effective_memory_limit(&self) -> Option<u64> {
        match (self.memory_limit, self.memory_high) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Formats a byte count for logs and explanations in the largest binary unit not above it:
/// exact when that unit divides it (`256 MiB`), otherwise with two decimals (`1.50 GiB`).
pub(crate) fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            if bytes.is_multiple_of(unit) {
                return format!("{} {name}", bytes / unit);
            }
            // Precision loss of the u64 → f64 conversion is irrelevant for a log line.
            return format!("{:.2} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_formatted_exactly_when_possible() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(256 << 20), "256 MiB");
        assert_eq!(fmt_bytes(3 << 29), "1.50 GiB");
        assert_eq!(fmt_bytes((1 << 30) + 1), "1.00 GiB");
        assert_eq!(fmt_bytes(1 << 40), "1 TiB");
    }

    #[test]
    fn effective_memory_limit_takes_the_lower() {
        let mut l = ContainerLimits::unlimited(CgroupVersion::V2);
        assert_eq!(l.effective_memory_limit(), None);
        l.memory_high = Some(100);
        assert_eq!(l.effective_memory_limit(), Some(100));
        l.memory_limit = Some(50);
        assert_eq!(l.effective_memory_limit(), Some(50));
        l.memory_limit = Some(500);
        assert_eq!(l.effective_memory_limit(), Some(100));
    }
}
