//! Resource limits. Limits are only ever lowered: the hound may lack CAP_SYS_RESOURCE (root on
//! the reference machine does), and a sandbox has no business loosening anything.

use houndpool_protocol::messages::HoundLimits;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// The value both soft and hard limit are set to: the request, but never above the current
/// soft limit (which is itself never above the hard limit), so nothing is raised.
pub(crate) fn lowered(requested: u64, current_soft: u64) -> u64 {
    requested.min(current_soft)
}

fn show(v: u64) -> String {
    if v == RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn set(resource: Resource, name: &str, requested: u64) -> Result<String, String> {
    let (soft, _hard) = getrlimit(resource).map_err(|e| format!("getrlimit({name}): {e}"))?;
    let value = lowered(requested, soft);
    setrlimit(resource, value, value).map_err(|e| format!("setrlimit({name}, {value}): {e}"))?;
    Ok(if value == requested {
        format!("{name}={}", show(value))
    } else {
        format!(
            "{name}={} (requested {}, kept the lower existing limit)",
            show(value),
            show(requested)
        )
    })
}

/// Applies CORE=0 always; NOFILE, AS and NPROC when the configured value is non-zero (zero
/// means "leave as is"). Soft and hard limits are both set, so the hound cannot raise them
/// back. Returns the report detail.
pub(crate) fn apply(limits: &HoundLimits) -> Result<String, String> {
    let mut parts = vec![set(Resource::RLIMIT_CORE, "core", 0)?];
    if limits.max_open_files > 0 {
        parts.push(set(
            Resource::RLIMIT_NOFILE,
            "nofile",
            u64::from(limits.max_open_files),
        )?);
    }
    if limits.memory_budget_bytes > 0 {
        parts.push(set(Resource::RLIMIT_AS, "as", limits.memory_budget_bytes)?);
    }
    if limits.max_processes > 0 {
        parts.push(set(
            Resource::RLIMIT_NPROC,
            "nproc",
            u64::from(limits.max_processes),
        )?);
    }
    Ok(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_raises() {
        assert_eq!(lowered(64, 1024), 64);
        assert_eq!(lowered(4096, 1024), 1024);
        assert_eq!(lowered(0, RLIM_INFINITY), 0);
        assert_eq!(lowered(1 << 30, RLIM_INFINITY), 1 << 30);
    }
}
