//! Removing cgroup directories and killing what is inside them: the pool's own tree at start
//! (leftovers of an earlier run), a hound's cgroup after it is reaped, the pool's at shutdown.
//! Removal follows at most [`MAX_TREE_DEPTH`] levels and retries `rmdir` while the kernel
//! finishes tearing a cgroup down; a kill pins each process with a pidfd before it checks the
//! process is still listed, so a reused pid is never signalled.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::{io_err, is_missing, parse_err, read_opt, write_value};
use crate::PoolError;

/// `rmdir` attempts while the kernel finishes tearing a cgroup down (EBUSY).
const RMDIR_ATTEMPTS: u32 = 40;
/// Nesting below a pool directory that removal follows (hounds create no cgroups).
const MAX_TREE_DEPTH: usize = 8;

/// Child directories of `dir` (empty when unreadable).
pub(super) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// The pids in `dir/cgroup.procs`; a missing file (cgroup gone) is empty.
pub(super) fn read_procs(dir: &Path) -> Result<Vec<i32>, PoolError> {
    let path = dir.join("cgroup.procs");
    let Some(text) = read_opt(&path)? else {
        return Ok(Vec::new());
    };
    text.split_whitespace()
        .map(|t| {
            t.parse::<i32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| parse_err(&path, format!("bad pid {t:?}")))
        })
        .collect()
}

pub(super) fn tree_has_procs(dir: &Path, depth: usize) -> Result<bool, PoolError> {
    if depth > MAX_TREE_DEPTH {
        return Ok(true);
    }
    if !read_procs(dir)?.is_empty() {
        return Ok(true);
    }
    for child in subdirs(dir) {
        if tree_has_procs(&child, depth + 1)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes `dir` and its child cgroups, deepest first. With `kill`, processes inside are
/// SIGKILLed whenever `rmdir` reports EBUSY; without, EBUSY after the retries is an error.
pub(super) fn remove_tree(dir: &Path, kill: bool, depth: usize) -> Result<(), PoolError> {
    if depth > MAX_TREE_DEPTH {
        return Err(io_err(
            "rmdir",
            dir,
            std::io::Error::other("cgroup tree nested too deeply"),
        ));
    }
    for child in subdirs(dir) {
        remove_tree(&child, kill, depth + 1)?;
    }
    let attempts = if kill { RMDIR_ATTEMPTS } else { 3 };
    for attempt in 0..attempts {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < attempts => {
                if kill {
                    kill_procs(dir);
                }
                std::thread::sleep(Duration::from_millis(5 * u64::from((attempt + 1).min(10))));
            }
            Err(e) => return Err(io_err("rmdir", dir, e)),
        }
    }
    // Unreachable: the last attempt returns from the loop. Kept as an error, not a panic.
    Err(io_err(
        "rmdir",
        dir,
        std::io::Error::other("retries exhausted"),
    ))
}

/// SIGKILLs every process of `dir` unless the caller is among them; returns the pids
/// signalled. Uses `cgroup.kill` on v2 kernels that have it (atomic, includes concurrent forks).
pub(super) fn kill_procs(dir: &Path) -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let procs = match read_procs(dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list processes to kill");
            return Vec::new();
        }
    };
    if procs.contains(&me) {
        tracing::error!(dir = %dir.display(), "refusing to kill a cgroup containing this process");
        return Vec::new();
    }
    if procs.is_empty() || write_value(&dir.join("cgroup.kill"), "1").is_ok() {
        return procs;
    }
    procs
        .into_iter()
        .filter(|&pid| sys::kill_if_listed(pid, dir))
        .collect()
}

/// The few system calls of this module (the only unsafe code of the cgroup module).
#[allow(unsafe_code)]
mod sys {
    use super::*;

    fn listed(pid: i32, dir: &Path) -> bool {
        read_procs(dir).is_ok_and(|p| p.contains(&pid))
    }

    /// SIGKILLs `pid` if it is (still) listed in `dir/cgroup.procs`, without the pid-reuse race: the
    /// process is pinned by a pidfd before the membership check, so the signal reaches the
    /// process that was checked or nobody.
    pub(super) fn kill_if_listed(pid: i32, dir: &Path) -> bool {
        // SAFETY: pidfd_open(2) takes a pid and flags by value and touches no memory of ours; it
        // returns a new file descriptor or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let Ok(raw) = i32::try_from(ret) else {
            return false;
        };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return false; // ESRCH: already gone.
            }
            // Kernels before 5.3: a plain kill after the membership check (narrow reuse race).
            if !listed(pid, dir) {
                return false;
            }
            // SAFETY: kill(2) takes plain integers; `pid` is positive (read_procs), so this
            // never addresses a process group.
            return unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
        }
        // SAFETY: `raw` is a file descriptor pidfd_open just returned to us and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if !listed(pid, dir) {
            return false;
        }
        // SAFETY: pidfd_send_signal(2) with a pidfd we own, a signal number, a null siginfo
        // (allowed: the kernel fills it in) and flags 0; no memory of ours is written.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        ret == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_files_parse_strictly() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_procs(t.path()).unwrap().is_empty());
        std::fs::write(t.path().join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(read_procs(t.path()).unwrap(), [12, 34]);
        std::fs::write(t.path().join("cgroup.procs"), "12\n-3\n").unwrap();
        assert!(read_procs(t.path()).is_err());
        std::fs::write(t.path().join("cgroup.procs"), "0\n").unwrap();
        assert!(read_procs(t.path()).is_err());
    }

    #[test]
    fn kill_procs_refuses_a_cgroup_holding_this_process() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(kill_procs(t.path()).is_empty());
    }
}
