//! Resource limits. Limits are only ever lowered: the hound may lack CAP_SYS_RESOURCE (root on
//! the reference machine does), and a sandbox has no business loosening anything.

use houndpool_protocol::control::HoundLimits;
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

/// Room above the largest envelope in [`file_size_limit`]: a stored envelope is never larger
/// than `max_envelope_len`, so this is slack, not a budget anything relies on.
const FSIZE_MARGIN: u64 = 64 * 1024;

/// RLIMIT_FSIZE of a hound: the largest envelope its evidence limit allows, at least
/// `houndpool_cold::fs::JOURNAL_MIN_BYTES` (3 MiB), plus [`FSIZE_MARGIN`]. Every file a hound
/// writes is one envelope (cold-store object, its temp file, or a spool entry) or a commit
/// journal, which the store seals before it would outgrow that bound minus 32 KiB
/// (`houndpool_cold::fs::journal_bound`), so a write beyond this is an attack or a bug.
pub fn file_size_limit(limits: &HoundLimits) -> u64 {
    let largest =
        houndpool_protocol::envelope::max_envelope_len(limits.max_evidence_bytes as usize);
    (largest as u64)
        .max(houndpool_cold::fs::JOURNAL_MIN_BYTES)
        .saturating_add(FSIZE_MARGIN)
}

/// Makes writes beyond RLIMIT_FSIZE fail with `EFBIG` instead of killing the hound with
/// SIGXFSZ: the job that wrote fails with a typed storage error and the hound lives on.
fn ignore_sigxfsz() -> Result<(), String> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety question arises; the
    // process is single-threaded while the sandbox is applied.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(|e| format!("signal(SIGXFSZ, SIG_IGN): {e}"))
}

/// Applies CORE=0 and FSIZE ([`file_size_limit`]) always; NOFILE, AS and NPROC when the
/// configured value is non-zero (zero means "leave as is"). NPROC is not applied to uid 0,
/// which the kernel exempts from it (the report says so; seccomp denies clone / fork and the
/// pids cgroup bounds processes there). Soft and hard limits are both set, so the hound cannot
/// raise them back. Returns the report detail.
pub(crate) fn apply(limits: &HoundLimits) -> Result<String, String> {
    let mut parts = vec![set(Resource::RLIMIT_CORE, "core", 0)?];
    ignore_sigxfsz()?;
    parts.push(set(
        Resource::RLIMIT_FSIZE,
        "fsize",
        file_size_limit(limits),
    )?);
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
    if limits.max_processes > 0 && nix::unistd::getuid().is_root() {
        parts.push("nproc not applied (the kernel exempts uid 0 from RLIMIT_NPROC)".into());
    } else if limits.max_processes > 0 {
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

    #[test]
    fn file_size_limit_covers_the_largest_envelope() {
        let limits = HoundLimits {
            max_evidence_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            memory_budget_bytes: 0,
            max_open_files: 64,
            max_processes: 1,
            gzip_level: 6,
        };
        let fsize = file_size_limit(&limits);
        // Incompressible evidence: the envelope is larger than the evidence itself.
        let noise: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let env = houndpool_protocol::envelope::encode(&noise, 9).unwrap();
        assert!(env.len() as u64 <= fsize, "{} > {fsize}", env.len());
        let journal = houndpool_cold::fs::journal_bound(env.len());
        assert!(
            journal + 32 * 1024 <= fsize,
            "{journal}: a journal stops 32 KiB below {fsize}"
        );
        assert!(
            fsize < 4 << 20,
            "{fsize}: the escape suite's 4 MiB write must be refused"
        );
    }
}
