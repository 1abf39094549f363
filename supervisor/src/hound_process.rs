//! Starting a hound process with exactly the descriptors it needs, and waiting for it.
//!
//! `std::process::Command` can pass a descriptor to a child only if it is inheritable in the
//! parent: the five descriptors a hound needs (control socket, request and completion rings,
//! two doorbell ends) had to lose close-on-exec for the duration of the spawn. Any other
//! child the embedding application started on another thread in that window inherited them
//! too: a hound's rings (which hold evidence) and its control socket in an unrelated process
//! (`tests/tests/fd_hygiene.rs` saw it in about one child in ten while pools were spawning).
//!
//! So hounds are started with `posix_spawn` directly, and the descriptors stay close-on-exec
//! in the supervisor at all times. For each of them the spawn's file actions hold a
//! `dup2(fd, fd)`, which POSIX (Issue 8; glibc since 2.29, musl) defines to clear close-on-exec
//! in the new process only, so the hound gets them under the same numbers and nothing else
//! does. stdin and stdout are `/dev/null`, stderr is the supervisor's or `/dev/null`, the
//! environment is empty, the signal mask is cleared and SIGPIPE is set back to its default (as
//! std does). glibc's `posix_spawn` is a `clone(CLONE_VM | CLONE_VFORK)`: as fast as the
//! posix_spawn path std took before.
//!
//! [`HoundProcess`] then does what `std::process::Child` did for a hound: signal it only while
//! it has not been reaped (a reaped pid may already name another process) and wait for it.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A started hound process, until it is reaped.
#[derive(Debug)]
pub(crate) struct HoundProcess {
    pid: Pid,
    /// Set once reaped: the pid is then no longer ours to signal.
    status: Option<ExitStatus>,
}

/// Where the hound's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stderr {
    /// The supervisor's own stderr.
    Inherit,
    /// `/dev/null`.
    Null,
}

fn c_string(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Turns a `posix_spawn*` return value (0 or an errno) into a result.
fn check(op: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(rc);
        Err(io::Error::new(e.kind(), format!("{op}: {e}")))
    }
}

/// The spawn's file actions, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: zeroed storage is what `posix_spawn_file_actions_init` expects to initialise
        // (the type is a plain C struct); it is not used before init succeeded.
        let mut fa = FileActions(unsafe { std::mem::zeroed() });
        // SAFETY: `fa.0` is valid, writable storage for one file-actions object.
        check("posix_spawn_file_actions_init", unsafe {
            libc::posix_spawn_file_actions_init(&mut fa.0)
        })?;
        Ok(fa)
    }

    /// `dup2(fd, fd)` in the child: `fd` survives exec there (close-on-exec cleared).
    fn keep(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let fd = fd.as_raw_fd();
        // SAFETY: `self.0` was initialised by `new`; `fd` is an open descriptor the caller
        // keeps open until the spawn returns (the borrow says so).
        check("posix_spawn_file_actions_adddup2", unsafe {
            libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, fd)
        })
    }

    /// `open(path, flags)` onto `fd` in the child.
    fn open(&mut self, fd: libc::c_int, path: &CString, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: `self.0` was initialised by `new`; glibc copies `path` into the action, and
        // `path` outlives the call anyway.
        check("posix_spawn_file_actions_addopen", unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised by `new` (a `FileActions` exists only after init succeeded) and
        // destroyed exactly once, here.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.0);
        }
    }
}

/// The spawn's attributes, destroyed on drop.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    /// Empty signal mask; SIGPIPE back to its default action (std's runtime ignores it in the
    /// supervisor, and a hound must not inherit that).
    fn new() -> io::Result<Self> {
        // SAFETY: as for `FileActions::new`: zeroed storage, initialised before any use.
        let mut at = Attributes(unsafe { std::mem::zeroed() });
        // SAFETY: `at.0` is valid, writable storage for one attributes object.
        check("posix_spawnattr_init", unsafe {
            libc::posix_spawnattr_init(&mut at.0)
        })?;
        // SAFETY: zeroed `sigset_t` storage for `sigemptyset` to initialise.
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: zeroed `sigset_t` storage for `sigemptyset`/`sigaddset` to initialise.
        let mut default: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid storage; the calls only write them. SIGPIPE is a valid
        // signal number, so `sigaddset` cannot fail.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
        }
        // SAFETY: `at.0` is initialised; the sets are initialised and copied by the calls.
        check("posix_spawnattr_setsigmask", unsafe {
            libc::posix_spawnattr_setsigmask(&mut at.0, &empty)
        })?;
        // SAFETY: as above.
        check("posix_spawnattr_setsigdefault", unsafe {
            libc::posix_spawnattr_setsigdefault(&mut at.0, &default)
        })?;
        let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        // SAFETY: `at.0` is initialised; the flags are ones glibc defines.
        check("posix_spawnattr_setflags", unsafe {
            libc::posix_spawnattr_setflags(&mut at.0, flags)
        })?;
        Ok(at)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised by `new` and destroyed exactly once, here.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.0);
        }
    }
}

impl HoundProcess {
    /// Starts `program` with `args` (after `argv[0]`, which is `program`), an empty
    /// environment, stdin and stdout on `/dev/null`, stderr as `stderr` says, and of the
    /// supervisor's descriptors exactly `keep` (same numbers; they stay close-on-exec here).
    /// `program` without a `/` is looked up in `PATH`, as `Command::new` does. Errors name the
    /// step that failed (an exec failure, e.g. a missing binary, is reported by the spawn).
    pub(crate) fn spawn(
        program: &Path,
        args: &[&OsStr],
        keep: &[BorrowedFd<'_>],
        stderr: Stderr,
    ) -> io::Result<HoundProcess> {
        let path = c_string("the hound binary's path", program.as_os_str().as_bytes())?;
        let mut argv_owned = vec![path.clone()];
        for a in args {
            argv_owned.push(c_string("a hound argument", a.as_bytes())?);
        }
        let mut argv: Vec<*mut libc::c_char> =
            argv_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        let mut envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];

        let dev_null = c_string("/dev/null", b"/dev/null")?;
        let mut actions = FileActions::new()?;
        actions.open(0, &dev_null, libc::O_RDONLY)?;
        actions.open(1, &dev_null, libc::O_WRONLY)?;
        if stderr == Stderr::Null {
            actions.open(2, &dev_null, libc::O_WRONLY)?;
        }
        for fd in keep {
            actions.keep(*fd)?;
        }
        let attributes = Attributes::new()?;

        let mut pid: libc::pid_t = 0;
        // SAFETY: `pid` is writable; `path` and every `argv` entry are NUL-terminated strings
        // owned by `path`/`argv_owned`, alive until the call returns; `argv` and `envp` are
        // NULL-terminated arrays (posix_spawn does not write through them despite the `*mut`);
        // `actions` and `attributes` are initialised; the `keep` descriptors are open for the
        // duration (borrowed). The child runs only the file actions, then exec.
        let rc = unsafe {
            libc::posix_spawnp(
                &mut pid,
                path.as_ptr(),
                &actions.0,
                &attributes.0,
                argv.as_mut_ptr(),
                envp.as_mut_ptr(),
            )
        };
        check(&format!("spawn {}", program.display()), rc)?;
        Ok(HoundProcess {
            pid: Pid::from_raw(pid),
            status: None,
        })
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// SIGKILL, unless it was reaped already (then nothing: the pid may be another process's).
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(self.pid, Signal::SIGKILL).map_err(io::Error::from)
    }

    /// Reaps it if it has exited; `Ok(None)` while it runs.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_with(Some(WaitPidFlag::WNOHANG))
    }

    /// Waits for it to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_with(None)? {
                return Ok(status);
            }
        }
    }

    fn wait_with(&mut self, flags: Option<WaitPidFlag>) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let raw = match waitpid(self.pid, flags) {
            Ok(WaitStatus::Exited(_, code)) => (code & 0xff) << 8,
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                signal as i32 | if core { 0x80 } else { 0 }
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            // Stopped / continued (not asked for) or ptrace events: still there.
            Ok(_) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        };
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(Some(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Only the descriptors asked for reach the child, under their numbers, though they are
    /// close-on-exec here; the environment is empty; the exit status comes back.
    #[test]
    fn the_child_gets_exactly_the_descriptors_asked_for() {
        let (kept, _) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (other, _) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let k = kept.as_raw_fd();
        let o = other.as_raw_fd();
        let script = format!(
            "test -e /proc/self/fd/{k} || exit 3; test -e /proc/self/fd/{o} && exit 4; \
             test -z \"$HOME\" || exit 5; exit 7"
        );
        let mut child = HoundProcess::spawn(
            Path::new("sh"),
            &[OsStr::new("-c"), OsStr::new(&script)],
            &[kept.as_fd()],
            Stderr::Inherit,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(7), "{status}");
        // Reaped: a second wait answers from memory and kill signals nothing.
        assert_eq!(child.try_wait().unwrap(), Some(status));
        child.kill().unwrap();
    }

    #[test]
    fn a_killed_child_reports_the_signal_and_a_missing_binary_is_an_error() {
        let mut child =
            HoundProcess::spawn(Path::new("sleep"), &[OsStr::new("10")], &[], Stderr::Null)
                .unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let err = HoundProcess::spawn(Path::new("/nonexistent/hound"), &[], &[], Stderr::Null)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/hound"), "{err}");
    }
}
