//! The supervisor's side of per-hound cgroups (ARCHITECTURE §3.5) and `Auto` sizing.
//!
//! At build: detect the process's own limits, decide the pool size, set up the pool's cgroup
//! directory (named after the pool id) and remove what earlier runs left behind. Per hound (see
//! `spawn::spawn_hound`): a child cgroup with a memory and a pids limit, the hound placed in it
//! before its `Hello` is sent, so it reads no job outside it. After the hound is reaped, the
//! collector reads the cgroup's OOM-kill counter and removes the cgroup.

use crate::cgroup::{
    self, CgroupSetup, ContainerLimits, HoundCgroup, HoundCgroups, PoolSizing, SizingDecision,
};
use houndpool_protocol::control::{Layer, LayerMode, LayerReport, LayerStatus};
use tracing::{info, warn};

use crate::config::{PoolConfig, PoolSize};
use crate::PoolError;

/// The pool's cgroup state, fixed at build.
///
/// Invariant: `manager` is `Some` exactly when `layer.status` is `Enforced` (per-hound cgroups
/// can be created); otherwise `layer.detail` says why not.
#[derive(Debug)]
pub(crate) struct PoolCgroups {
    /// Creates per-hound cgroups; `None` when unavailable or disabled.
    pub(crate) manager: Option<HoundCgroups>,
    /// The `cgroup` layer of the pool as a whole (each hound's report carries its own entry).
    pub(crate) layer: LayerReport,
    /// The container's limits, when detection worked.
    pub(crate) limits: Option<ContainerLimits>,
}

/// Detects limits and sets up the pool's cgroup directory. Lowers
/// `config.hound_cgroup_memory` to each of the `slots` hounds' share of the container's memory
/// limit when it is above it (a hound's cgroup never allows more than its share).
///
/// Fails with `SandboxRequirement` when the `cgroup` layer is `required` and per-hound cgroups
/// are not possible here; with `best-effort` the reason is reported and hounds run without.
pub(crate) fn setup(
    config: &mut PoolConfig,
    pool_id: &[u8; 16],
    slots: usize,
) -> Result<PoolCgroups, PoolError> {
    let limits = match cgroup::detect() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "cannot detect the container's cgroup limits");
            None
        }
    };
    if let Some(share) = container_share(config, limits.as_ref(), slots) {
        if share < config.hound_cgroup_memory {
            info!(
                configured = config.hound_cgroup_memory,
                share, "per-hound cgroup memory lowered to the container's share"
            );
            config.hound_cgroup_memory = share;
        }
    }
    let mode = config.sandbox.mode(Layer::Cgroup);
    let report = |status, detail: String| LayerReport {
        layer: Layer::Cgroup,
        status,
        detail,
    };
    if mode == LayerMode::Off {
        return Ok(PoolCgroups {
            manager: None,
            layer: report(LayerStatus::Disabled, "disabled by config".into()),
            limits,
        });
    }
    let name = pool_name(pool_id);
    let (manager, layer) = match &limits {
        None => (
            None,
            report(
                LayerStatus::Unavailable,
                "cgroup limits could not be detected".into(),
            ),
        ),
        Some(l) => match HoundCgroups::setup(&name, l)? {
            CgroupSetup::Ready(m) => {
                let stale = HoundCgroups::cleanup_stale_pools(l, &name);
                let leftovers = m.cleanup_leftovers();
                if stale + leftovers > 0 {
                    info!(
                        stale_pools = stale,
                        leftover_hounds = leftovers,
                        "removed cgroups of earlier runs"
                    );
                }
                let detail = format!(
                    "{}; per hound: memory {} bytes, pids {}",
                    m.describe(),
                    config.effective_cgroup_memory(),
                    config.hound_pids_limit
                );
                (Some(m), report(LayerStatus::Enforced, detail))
            }
            CgroupSetup::Unavailable(reason) => (None, report(LayerStatus::Unavailable, reason)),
        },
    };
    if mode == LayerMode::Required && layer.status != LayerStatus::Enforced {
        return Err(PoolError::SandboxRequirement {
            slot: 0,
            layer: Layer::Cgroup.name(),
            detail: layer.detail,
        });
    }
    info!(status = layer.status.name(), detail = %layer.detail, "per-hound cgroups");
    Ok(PoolCgroups {
        manager,
        layer,
        limits,
    })
}

/// The cgroup directory name of a pool: its id in hex (32 characters of `[0-9a-f]`).
pub(crate) fn pool_name(pool_id: &[u8; 16]) -> String {
    hex::encode(pool_id)
}

/// The sizing decision for `Auto` (or a trivial one for `Fixed`), logged with its inputs.
pub(crate) fn decide_size(config: &PoolConfig, limits: Option<&ContainerLimits>) -> SizingDecision {
    let parallelism = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match config.size {
        PoolSize::Fixed(n) => SizingDecision {
            size: n,
            cpu_bound: parallelism,
            memory_bound: None,
            explanation: format!("fixed size {n}"),
        },
        PoolSize::Auto {
            per_hound_budget,
            host_reserve,
            min,
            max,
        } => {
            let unlimited = ContainerLimits::unlimited(cgroup::CgroupVersion::V2);
            let d = cgroup::decide_pool_size(
                limits.unwrap_or(&unlimited),
                parallelism,
                &PoolSizing {
                    per_hound_budget,
                    host_reserve,
                    min,
                    max,
                },
            );
            info!(
                size = d.size,
                cpu_bound = d.cpu_bound,
                memory_bound = ?d.memory_bound,
                per_hound_budget,
                host_reserve,
                min,
                max,
                explanation = %d.explanation,
                "auto pool size decided"
            );
            d
        }
    }
}

/// Each of `slots` hounds' share of the container's memory limit (after the host reserve of
/// `Auto`; at least a quarter of the limit when the reserve would leave less), or `None` when
/// the limit is unknown or absent. Never below 1 MiB.
pub(crate) fn container_share(
    config: &PoolConfig,
    limits: Option<&ContainerLimits>,
    slots: usize,
) -> Option<u64> {
    let limit = limits?.effective_memory_limit()?;
    let reserve = match config.size {
        PoolSize::Auto { host_reserve, .. } => host_reserve,
        PoolSize::Fixed(_) => 0,
    };
    let available = limit.saturating_sub(reserve).max(limit / 4);
    Some((available / slots.max(1) as u64).max(1 << 20))
}

/// A hound's cgroup with the OOM-kill count read right after creation.
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) cgroup: HoundCgroup,
    pub(crate) oom_before: u64,
}

impl Placed {
    /// Whether the kernel OOM-killed something in this cgroup since it was created.
    pub(crate) fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > self.oom_before
    }

    /// Removes the cgroup (after the hound was reaped); failures are logged, the next run's
    /// cleanup removes what is left.
    pub(crate) fn remove(self) {
        if let Err(e) = self.cgroup.remove() {
            warn!(error = %e, "cannot remove a hound cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_name_is_hex_of_the_id() {
        let mut id = [0u8; 16];
        id[0] = 0xab;
        id[15] = 0x01;
        let n = pool_name(&id);
        assert_eq!(n.len(), 32);
        assert!(n.starts_with("ab") && n.ends_with("01"));
    }

    #[test]
    fn auto_size_respects_the_bounds() {
        let c = PoolConfig {
            size: PoolSize::Auto {
                per_hound_budget: 128 << 20,
                host_reserve: 64 << 20,
                min: 1,
                max: 3,
            },
            ..PoolConfig::default()
        };
        let mut l = ContainerLimits::unlimited(cgroup::CgroupVersion::V1);
        l.memory_limit = Some(320 << 20);
        l.cpu_quota_cores = Some(8.0);
        let d = decide_size(&c, Some(&l));
        // (320 − 64) / 128 = 2 hounds by memory, below cpu 8 and max 3.
        assert_eq!(d.size, 2, "{}", d.explanation);
        assert_eq!(d.memory_bound, Some(2));
        let d = decide_size(&c, None);
        assert!((1..=3).contains(&d.size));
    }

    #[test]
    fn container_share_divides_the_limit_after_the_reserve() {
        let mut c = PoolConfig {
            size: PoolSize::Fixed(2),
            ..PoolConfig::default()
        };
        let mut l = ContainerLimits::unlimited(cgroup::CgroupVersion::V1);
        assert_eq!(container_share(&c, Some(&l), 2), None);
        assert_eq!(container_share(&c, None, 2), None);
        l.memory_limit = Some(256 << 20);
        // The case: 256 MiB container, 2 hounds: 128 MiB each, not 512.
        assert_eq!(container_share(&c, Some(&l), 2), Some(128 << 20));
        c.size = PoolSize::Auto {
            per_hound_budget: 128 << 20,
            host_reserve: 64 << 20,
            min: 1,
            max: 3,
        };
        assert_eq!(container_share(&c, Some(&l), 3), Some(64 << 20));
    }
}
