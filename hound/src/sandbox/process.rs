//! Process-attribute layers: empty environment, no_new_privs, parent death signal.

use nix::sys::signal::Signal;

/// Exit code of a hound whose parent is not the expected supervisor when the death signal is
/// armed (the supervisor died before the hound could arm it, and the hound was re-parented).
pub const EXIT_ORPHANED: i32 = 97;

/// Clears the environment. Returns the report detail.
///
/// Precondition (from `sandbox::apply`): the process is single-threaded, so nothing can read
/// the environment concurrently.
pub(crate) fn clear_environment() -> Result<String, String> {
    let before = std::env::vars_os().count();
    // SAFETY: clearenv only resets glibc's `environ`; the caller guarantees the process is
    // single-threaded, so no other thread can be reading or writing the environment now.
    // (libc's clearenv is used instead of std::env::remove_var because remove_var panics on
    // names containing '=' and the environment comes from outside the process.)
    let rc = unsafe { libc::clearenv() };
    if rc != 0 {
        return Err(format!(
            "clearenv failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let left = std::env::vars_os().count();
    if left != 0 {
        return Err(format!("{left} variables survived clearenv"));
    }
    Ok(format!("removed {before} variables; environment empty"))
}

/// Sets PR_SET_NO_NEW_PRIVS and checks it stuck.
pub(crate) fn no_new_privs() -> Result<String, String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    match nix::sys::prctl::get_no_new_privs() {
        Ok(true) => Ok("PR_SET_NO_NEW_PRIVS set: execve can never grant privileges".into()),
        Ok(false) => Err("PR_GET_NO_NEW_PRIVS reads 0 after setting it".into()),
        Err(e) => Err(format!("prctl(PR_GET_NO_NEW_PRIVS): {e}")),
    }
}

/// Arms SIGKILL as the parent death signal, then closes the race with a parent that died
/// before it was armed: if the parent is no longer `expected_parent`, the process exits at
/// once with [`EXIT_ORPHANED`]. `expected_parent <= 0` skips the check (reported).
pub(crate) fn death_signal(expected_parent: i32) -> Result<String, String> {
    arm_death_signal()?;
    if expected_parent <= 0 {
        return Ok("SIGKILL on parent death; parent check skipped (no expected parent)".into());
    }
    check_parent(expected_parent);
    Ok(format!(
        "SIGKILL on parent death; parent is the expected supervisor (pid {expected_parent})"
    ))
}

fn arm_death_signal() -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    match nix::sys::prctl::get_pdeathsig() {
        Ok(Some(Signal::SIGKILL)) => Ok(()),
        Ok(other) => Err(format!(
            "PR_GET_PDEATHSIG reads {other:?} after setting SIGKILL"
        )),
        Err(e) => Err(format!("prctl(PR_GET_PDEATHSIG): {e}")),
    }
}

/// Exits with [`EXIT_ORPHANED`] if the parent is not `expected_parent`.
pub(crate) fn check_parent(expected_parent: i32) {
    if expected_parent > 0 && nix::unistd::getppid().as_raw() != expected_parent {
        std::process::exit(EXIT_ORPHANED);
    }
}

/// Re-arms the death signal if a credential change (e.g. entering a user namespace) cleared
/// it, and re-checks the parent. Returns a note for the report when it had to re-arm.
pub(crate) fn rearm_death_signal(expected_parent: i32) -> Result<Option<String>, String> {
    match nix::sys::prctl::get_pdeathsig() {
        Ok(Some(Signal::SIGKILL)) => Ok(None),
        _ => {
            arm_death_signal()?;
            check_parent(expected_parent);
            Ok(Some(
                "death signal re-armed after the credential change".into(),
            ))
        }
    }
}
