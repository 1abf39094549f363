//! `Auto` pool sizing from the container's limits.

use super::{fmt_bytes, ContainerLimits};

/// Inputs of `Auto` pool sizing besides the detected limits.
///
/// `min`/`max` bound the result; a `max` below `min` is treated as `min`, and a `min` of 0 as
/// 1 (a pool always has a hound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "daemon", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolSizing {
    /// Memory one hound may use (its rlimit / cgroup budget), in bytes. 0 disables the memory
    /// bound.
    pub per_hound_budget: u64,
    /// Memory kept for the host process (and rings), subtracted from the container limit.
    pub host_reserve: u64,
    /// Fewest hounds.
    pub min: usize,
    /// Most hounds.
    pub max: usize,
}

/// The result of [`decide_pool_size`], with its inputs in words for logs and stats.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "daemon", derive(serde::Serialize))]
pub struct SizingDecision {
    /// The pool size: within `[max(min, 1), max(max, min, 1)]`.
    pub size: usize,
    /// Hounds the CPU allows (≥ 1).
    pub cpu_bound: usize,
    /// Hounds the memory allows, `None` without a memory limit (or with a zero budget).
    pub memory_bound: Option<usize>,
    /// One line naming every input and how the size follows from them.
    pub explanation: String,
}

/// Decides the pool size:
/// `n = clamp(min(cpu, (memory_limit − host_reserve) / per_hound_budget), min, max)`.
///
/// - `cpu` is `ceil(cpu_quota_cores)` and/or the cpuset's CPU count (the lower when both are
///   known), otherwise `available_parallelism`; never 0. The quota is rounded *up* here, which
///   is why it is not taken from `available_parallelism` (std rounds a fractional quota down).
/// - `memory_limit` is the lower of `memory_limit` and `memory_high`; the subtraction
///   saturates at 0, so a reserve above the limit yields a memory bound of 0 and the pool gets
///   `min` hounds.
/// - Never panics, whatever the inputs (NaN or negative quotas are ignored).
pub fn decide_pool_size(
    limits: &ContainerLimits,
    available_parallelism: usize,
    sizing: &PoolSizing,
) -> SizingDecision {
    let quota = limits
        .cpu_quota_cores
        .filter(|q| q.is_finite() && *q > 0.0)
        // Float-to-int `as` saturates; ceil of a positive value is ≥ 1 unless tiny, hence max.
        .map(|q| (q.ceil() as usize).max(1));
    let cpuset = limits.cpuset_cpus.filter(|&n| n > 0);
    let fallback = available_parallelism.max(1);
    let cpu_bound = match (quota, cpuset) {
        (Some(q), Some(s)) => q.min(s),
        (Some(q), None) => q,
        (None, Some(s)) => s,
        (None, None) => fallback,
    };
    let cpu_text = {
        let q = match limits.cpu_quota_cores {
            Some(c) => format!("cpu quota {c:.2} cores (ceil {})", quota.unwrap_or(0)),
            None => "cpu quota none".to_owned(),
        };
        let s = match cpuset {
            Some(n) => format!("cpuset {n} cpus"),
            None => "cpuset none".to_owned(),
        };
        let used = if quota.is_none() && cpuset.is_none() {
            "used"
        } else {
            "not used"
        };
        format!("{q}, {s}, available_parallelism {available_parallelism} ({used})")
    };

    let mem_limit = limits.effective_memory_limit();
    let memory_bound = match mem_limit {
        Some(limit) if sizing.per_hound_budget > 0 => {
            let n = limit.saturating_sub(sizing.host_reserve) / sizing.per_hound_budget;
            Some(usize::try_from(n).unwrap_or(usize::MAX))
        }
        _ => None,
    };
    let opt_bytes = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), fmt_bytes);
    let mem_text = format!(
        "memory limit {} (max {}, high {}), host reserve {}, per-hound budget {}",
        opt_bytes(mem_limit),
        opt_bytes(limits.memory_limit),
        opt_bytes(limits.memory_high),
        fmt_bytes(sizing.host_reserve),
        fmt_bytes(sizing.per_hound_budget),
    );

    let lo = sizing.min.max(1);
    let hi = sizing.max.max(lo);
    let unclamped = cpu_bound.min(memory_bound.unwrap_or(usize::MAX));
    let size = unclamped.clamp(lo, hi);
    let memory_word = match memory_bound {
        Some(m) => m.to_string(),
        None if mem_limit.is_some() => "unbounded (zero budget)".to_owned(),
        None => "unbounded".to_owned(),
    };
    let explanation = format!(
        "pool size {size} = clamp(min(cpu {cpu_bound}, memory {memory_word}), min {}, max {}) \
         [cgroup {}; {cpu_text}; {mem_text}]",
        sizing.min, sizing.max, limits.version,
    );
    SizingDecision {
        size,
        cpu_bound,
        memory_bound,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupVersion;

    const MIB: u64 = 1 << 20;

    fn limits() -> ContainerLimits {
        ContainerLimits::unlimited(CgroupVersion::V2)
    }

    fn sizing(budget: u64, reserve: u64, min: usize, max: usize) -> PoolSizing {
        PoolSizing {
            per_hound_budget: budget,
            host_reserve: reserve,
            min,
            max,
        }
    }

    #[test]
    fn no_limits_gives_the_cpu_bound() {
        let d = decide_pool_size(&limits(), 6, &sizing(256 * MIB, 256 * MIB, 1, 64));
        assert_eq!(d.size, 6);
        assert_eq!(d.cpu_bound, 6);
        assert_eq!(d.memory_bound, None);
        assert!(
            d.explanation.contains("available_parallelism 6 (used)"),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn fractional_quotas_round_up_never_to_zero() {
        for (q, want) in [
            (0.001, 1),
            (0.5, 1),
            (1.0, 1),
            (1.5, 2),
            (2.0001, 3),
            (7.9, 8),
        ] {
            let mut l = limits();
            l.cpu_quota_cores = Some(q);
            let d = decide_pool_size(&l, 64, &sizing(0, 0, 1, 100));
            assert_eq!(d.cpu_bound, want, "quota {q}");
            assert_eq!(d.size, want, "quota {q}");
        }
        let d = decide_pool_size(&limits(), 0, &sizing(0, 0, 0, 100));
        assert_eq!(d.cpu_bound, 1);
        assert_eq!(d.size, 1);
    }

    #[test]
    fn nonsense_quotas_are_ignored() {
        for q in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            let mut l = limits();
            l.cpu_quota_cores = Some(q);
            let d = decide_pool_size(&l, 3, &sizing(0, 0, 1, 100));
            assert_eq!(d.cpu_bound, 3, "quota {q}");
        }
        let mut l = limits();
        l.cpu_quota_cores = Some(1e300);
        assert_eq!(decide_pool_size(&l, 3, &sizing(0, 0, 1, 100)).size, 100);
    }

    #[test]
    fn cpuset_and_quota_take_the_lower() {
        let mut l = limits();
        l.cpu_quota_cores = Some(3.5);
        l.cpuset_cpus = Some(2);
        assert_eq!(decide_pool_size(&l, 16, &sizing(0, 0, 1, 100)).cpu_bound, 2);
        l.cpuset_cpus = Some(8);
        assert_eq!(decide_pool_size(&l, 16, &sizing(0, 0, 1, 100)).cpu_bound, 4);
        l.cpu_quota_cores = None;
        assert_eq!(decide_pool_size(&l, 16, &sizing(0, 0, 1, 100)).cpu_bound, 8);
    }

    #[test]
    fn memory_bound_limits_the_size() {
        let mut l = limits();
        l.cpu_quota_cores = Some(8.0);
        l.memory_limit = Some(1024 * MIB);
        let d = decide_pool_size(&l, 8, &sizing(256 * MIB, 256 * MIB, 1, 16));
        assert_eq!(d.memory_bound, Some(3));
        assert_eq!(d.size, 3);
        // memory.high tighter than memory.max counts.
        l.memory_high = Some(768 * MIB);
        let d = decide_pool_size(&l, 8, &sizing(256 * MIB, 256 * MIB, 1, 16));
        assert_eq!(d.memory_bound, Some(2));
        assert_eq!(d.size, 2);
        // memory.high alone counts too.
        l.memory_limit = None;
        assert_eq!(
            decide_pool_size(&l, 8, &sizing(256 * MIB, 256 * MIB, 1, 16)).memory_bound,
            Some(2)
        );
    }

    #[test]
    fn memory_bound_below_min_clamps_to_min() {
        let mut l = limits();
        l.memory_limit = Some(600 * MIB);
        let d = decide_pool_size(&l, 8, &sizing(256 * MIB, 256 * MIB, 2, 16));
        assert_eq!(d.memory_bound, Some(1));
        assert_eq!(d.size, 2);
    }

    #[test]
    fn reserve_above_the_limit_gives_min() {
        let mut l = limits();
        l.memory_limit = Some(128 * MIB);
        let d = decide_pool_size(&l, 8, &sizing(64 * MIB, 512 * MIB, 3, 16));
        assert_eq!(d.memory_bound, Some(0));
        assert_eq!(d.size, 3);
        let d = decide_pool_size(&l, 8, &sizing(64 * MIB, u64::MAX, 0, 16));
        assert_eq!(d.size, 1, "a pool always has one hound");
    }

    #[test]
    fn max_bounds_and_inverted_bounds_do_not_panic() {
        let d = decide_pool_size(&limits(), 64, &sizing(1, 0, 1, 4));
        assert_eq!(d.size, 4);
        let d = decide_pool_size(&limits(), 64, &sizing(1, 0, 10, 4));
        assert_eq!(d.size, 10, "max below min is treated as min");
        let mut l = limits();
        l.memory_limit = Some(u64::MAX / 2);
        let d = decide_pool_size(&l, 2, &sizing(1, 0, 1, usize::MAX));
        assert_eq!(d.size, 2);
        assert_eq!(d.memory_bound, Some(usize::try_from(u64::MAX / 2).unwrap()));
    }

    #[test]
    fn zero_budget_disables_the_memory_bound() {
        let mut l = limits();
        l.memory_limit = Some(MIB);
        let d = decide_pool_size(&l, 4, &sizing(0, 0, 1, 16));
        assert_eq!(d.memory_bound, None);
        assert_eq!(d.size, 4);
        assert!(d.explanation.contains("zero budget"), "{}", d.explanation);
    }

    #[test]
    fn explanation_names_every_input() {
        let mut l = limits();
        l.memory_limit = Some(1024 * MIB);
        l.memory_high = Some(768 * MIB);
        l.cpu_quota_cores = Some(1.5);
        l.cpuset_cpus = Some(5);
        let d = decide_pool_size(&l, 8, &sizing(128 * MIB, 256 * MIB, 1, 16));
        assert_eq!(d.size, 2);
        assert_eq!(d.memory_bound, Some(4));
        for needle in [
            "pool size 2",
            "cpu 2",
            "memory 4",
            "min 1",
            "max 16",
            "cgroup v2",
            "cpu quota 1.50 cores (ceil 2)",
            "cpuset 5 cpus",
            "available_parallelism 8 (not used)",
            "memory limit 768 MiB",
            "max 1 GiB",
            "high 768 MiB",
            "host reserve 256 MiB",
            "per-hound budget 128 MiB",
        ] {
            assert!(
                d.explanation.contains(needle),
                "{needle:?} not in {}",
                d.explanation
            );
        }
    }
}
