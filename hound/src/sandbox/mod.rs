//! The hound's self-confinement (ARCHITECTURE.md §3.4).
//!
//! [`apply`] is called by the hound right after it read its `Setup` (the first control
//! message, queued before the hound was started), before it waits for anything and before it
//! reads any job. It applies, in this order: fd hygiene, empty environment, no_new_privs,
//! parent death signal, rlimits, namespaces, capabilities, Landlock, seccomp — each according
//! to its [`LayerMode`] — and returns a
//! [`SandboxReport`] with one entry per layer it applies. [`Layer::Cgroup`] is not among them:
//! the supervisor places the hound in its cgroup and adds that entry itself.
//!
//! Why this order: no_new_privs before anything that needs it; the death signal early so that
//! a supervisor dying during setup takes the hound with it; rlimits while `setrlimit` is still
//! allowed; namespaces before Landlock (which would refuse writing the user namespace's uid
//! map); capabilities after namespaces (root needs CAP_SYS_ADMIN to unshare; an unprivileged
//! hound gains CAP_SETPCAP in its new user namespace and can then clear its bounding set);
//! seccomp last, because it removes the calls the earlier layers use.

mod capabilities;
mod fds;
mod landlock;
mod namespaces;
mod process;
mod report;
mod rlimits;
mod seccomp;
mod syscalls;

use crate::HoundError;
use houndpool_protocol::control::{HoundLimits, Layer, LayerMode, SandboxPolicy, SandboxReport};
use std::os::fd::RawFd;
use std::path::PathBuf;

pub use landlock::confine_thread_beneath;
pub use process::EXIT_ORPHANED;
pub use report::render_table;
pub use rlimits::file_size_limit;

/// What the hound keeps and needs after confinement.
#[derive(Debug, Clone)]
pub struct SandboxContext {
    /// Descriptors that survive fd hygiene: the channel socket, the two region memfds, the two
    /// doorbell eventfds (and stderr / stdout when the caller reports through them). Every
    /// other descriptor is closed — the caller must not use (or drop an owner of) any other
    /// descriptor afterwards. 0, 1 and 2 not listed here are pointed at /dev/null.
    pub keep_fds: Vec<RawFd>,
    /// Directories the hound may read and write (cold-storage root, spool directory). Nothing
    /// else on the filesystem is readable or writable once Landlock is in force. A directory
    /// that does not exist gets no access at all.
    pub rw_dirs: Vec<PathBuf>,
    /// The S3 endpoint's TCP port when that backend is configured. Then the hound stays in the
    /// host network namespace, Landlock allows TCP connect to this port only and seccomp allows
    /// TCP sockets; with `None` there is no network at all.
    pub tcp_connect_port: Option<u16>,
    /// Whether the hound starts threads after confinement (S3 uploads with
    /// `cold.s3_concurrency` > 1): seccomp then allows `clone` with the thread flags only (see
    /// `syscalls::THREAD_CLONE_FLAGS`), never a new process. Threads created after confinement
    /// inherit every layer (seccomp filters, Landlock domain, no_new_privs, rlimits).
    pub threads: bool,
    /// `memory_budget_bytes` (RLIMIT_AS), `max_open_files` (RLIMIT_NOFILE) and
    /// `max_processes` (RLIMIT_NPROC, not for uid 0) are applied; zero leaves a limit as it
    /// is. RLIMIT_FSIZE follows from `max_evidence_bytes` ([`file_size_limit`]).
    pub limits: HoundLimits,
    /// Pid of the supervisor. After arming the death signal the hound exits with
    /// [`EXIT_ORPHANED`] if its parent is not this process (the supervisor died before the
    /// signal was armed). Zero or negative skips that check.
    pub expected_parent: i32,
}

/// Confines the calling process and reports what holds. See [`apply_into`], which this wraps.
pub fn apply(policy: &SandboxPolicy, ctx: &SandboxContext) -> Result<SandboxReport, HoundError> {
    let mut report = SandboxReport::default();
    apply_into(policy, ctx, &mut report)?;
    Ok(report)
}

/// Confines the calling process layer by layer, appending each layer's outcome to `report`.
///
/// Must be called while the process is single-threaded (user namespaces, Landlock and seccomp
/// act on the calling thread only); a second thread is detected through /proc and refused with
/// [`HoundError::SandboxOs`] before anything is changed.
///
/// A layer whose mode is `Off` is reported `Disabled` and not applied; `BestEffort` layers are
/// reported `Enforced` or `Unavailable` with the reason; a `Required` layer that cannot be
/// enforced stops here with [`HoundError::RequiredLayerUnavailable`] — `report` then holds
/// every layer up to and including the failed one (the earlier ones stay in force), and the
/// caller must exit. Turning `no_new_privs` off does not keep it off when Landlock or seccomp
/// run: the kernel requires it for both, and they set it themselves.
///
/// If the death-signal layer finds the parent is not `ctx.expected_parent`, the process exits
/// immediately with [`EXIT_ORPHANED`] (this function does not return).
pub fn apply_into(
    policy: &SandboxPolicy,
    ctx: &SandboxContext,
    report: &mut SandboxReport,
) -> Result<(), HoundError> {
    ensure_single_threaded()?;
    let mut r = report::Reporter::new(policy, report);
    r.layer(Layer::FdHygiene, || fds::apply(&ctx.keep_fds))?;
    r.layer(Layer::Environment, process::clear_environment)?;
    r.layer(Layer::NoNewPrivs, process::no_new_privs)?;
    let death_signal = r.layer(Layer::DeathSignal, || {
        process::death_signal(ctx.expected_parent)
    })?;
    r.layer(Layer::Rlimits, || rlimits::apply(&ctx.limits))?;
    r.layer(Layer::Namespaces, || {
        let (mut detail, user) = namespaces::apply(ctx.tcp_connect_port.is_some())?;
        if user && death_signal {
            if let Some(note) = process::rearm_death_signal(ctx.expected_parent)? {
                detail.push_str("; ");
                detail.push_str(&note);
            }
        }
        Ok(detail)
    })?;
    r.layer(Layer::Capabilities, capabilities::apply)?;
    let landlock_required = policy.mode(Layer::Landlock) == LayerMode::Required;
    r.layer(Layer::Landlock, || {
        landlock::apply(&ctx.rw_dirs, ctx.tcp_connect_port, landlock_required)
    })?;
    r.layer(Layer::Seccomp, || {
        seccomp::apply(ctx.tcp_connect_port.is_some(), ctx.threads)
    })?;
    Ok(())
}

/// Names (without `SYS_`) of the syscalls the seccomp allow-list admits on this architecture,
/// in list order; `tcp_client` adds the TCP client calls. Arguments may be restricted further
/// (see syscalls.rs). For documentation and diagnostics.
pub fn seccomp_allow_list(tcp_client: bool) -> Vec<&'static str> {
    syscalls::allowed()
        .filter(|a| tcp_client || a.need == syscalls::Need::Always)
        .map(|a| a.sym.trim_start_matches("SYS_"))
        .collect()
}

/// Names (without `SYS_`) of the syscalls that kill the hound (SIGSYS) on this architecture.
pub fn seccomp_kill_list() -> Vec<&'static str> {
    syscalls::killed()
        .map(|k| k.sym.trim_start_matches("SYS_"))
        .collect()
}

/// Refuses to run with more than one thread (when /proc tells).
fn ensure_single_threaded() -> Result<(), HoundError> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Ok(());
    };
    let threads = tasks.count();
    if threads > 1 {
        return Err(HoundError::SandboxOs {
            op: "single-thread check",
            source: std::io::Error::other(format!(
                "{threads} threads: the sandbox would confine only the calling one"
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_names_follow_the_mode() {
        let plain = seccomp_allow_list(false);
        let tcp = seccomp_allow_list(true);
        assert!(plain.contains(&"read") && plain.contains(&"exit_group"));
        assert!(!plain.contains(&"socket") && !plain.contains(&"connect"));
        assert!(tcp.contains(&"socket") && tcp.contains(&"connect"));
        assert!(tcp.len() > plain.len());
        let kill = seccomp_kill_list();
        assert!(kill.contains(&"execve") && kill.contains(&"ptrace"));
        assert!(kill.iter().all(|k| !tcp.contains(k)));
    }
}
