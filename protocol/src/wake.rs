//! eventfd doorbells. A consumer that found its ring empty announces it is about to sleep
//! (a flag in shared memory), re-checks the ring, and waits on its doorbell; a producer rings
//! the doorbell only if it sees the flag after publishing. See `region` for the ordering proof.
//!
//! The eventfd counter keeps every ring until it is drained, so a ring that arrives before the
//! consumer actually blocks makes its wait return at once: a ring is never lost, at worst a wait
//! returns for a signal that an earlier cycle already served (a spurious wake-up, harmless
//! because the consumer always re-checks its ring).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::ProtocolError;

/// An eventfd used as a wake-up signal. Non-blocking, close-on-exec.
#[derive(Debug)]
pub struct Doorbell {
    /// The eventfd; `File` gives plain read(2)/write(2) without unsafe code.
    fd: File,
}

impl Doorbell {
    /// Creates a new eventfd doorbell (EFD_NONBLOCK | EFD_CLOEXEC).
    pub fn new() -> Result<Self, ProtocolError> {
        // SAFETY: eventfd takes two integers and touches no memory of this process.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(ProtocolError::Os {
                op: "eventfd",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by eventfd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd: File::from(fd) })
    }
    /// Adopts an inherited eventfd (the hound side). The fd should be a non-blocking eventfd
    /// (as [`Doorbell::new`] creates); on another kind of fd the methods return errors or
    /// nonsense counts but stay memory-safe.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd: File::from(fd) }
    }
    /// Signals the doorbell (one `write` syscall). Never blocks. A counter already at its
    /// maximum (EAGAIN) counts as success: the doorbell is signalled either way.
    pub fn ring(&self) -> Result<(), ProtocolError> {
        let one = 1u64.to_ne_bytes();
        loop {
            match (&self.fd).write(&one) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(source) => {
                    return Err(ProtocolError::Os {
                        op: "write(eventfd)",
                        source,
                    })
                }
            }
        }
    }
    /// Consumes pending signals; returns how many were pending (0 if none). Never blocks.
    /// A read error other than "nothing pending" also yields 0.
    pub fn drain(&self) -> u64 {
        let mut buf = [0u8; 8];
        loop {
            match (&self.fd).read(&mut buf) {
                Ok(8) => return u64::from_ne_bytes(buf),
                Ok(_) => return 0,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            }
        }
    }
    /// Waits until the doorbell is signalled or `timeout` passes; returns true if signalled.
    /// Does not consume the signal (call `drain`). Interrupted waits resume with the remaining
    /// time; the timeout is rounded up to whole milliseconds, so it never returns early.
    pub fn wait(&self, timeout: Duration) -> Result<bool, ProtocolError> {
        // `None`: the deadline is not representable, i.e. wait forever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let ms: libc::c_int = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid, initialised pollfd that lives across the call, and the
            // count passed is 1; the fd is owned by `self` and open.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(ProtocolError::Os {
                    op: "poll(eventfd)",
                    source: e,
                });
            }
            if pfd.revents & libc::POLLIN != 0 {
                return Ok(true);
            }
            if pfd.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
                return Err(ProtocolError::Os {
                    op: "poll(eventfd)",
                    source: std::io::Error::other(format!(
                        "unexpected poll events {:#x}",
                        pfd.revents
                    )),
                });
            }
            // Timed out (r == 0): done unless the clamp to c_int::MAX ms cut the wait short.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wait_drain() {
        let d = Doorbell::new().unwrap();
        assert_eq!(d.drain(), 0);
        let t = Instant::now();
        assert!(!d.wait(Duration::from_millis(20)).unwrap());
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "never returns early"
        );
        assert!(!d.wait(Duration::ZERO).unwrap());
        d.ring().unwrap();
        d.ring().unwrap();
        assert!(d.wait(Duration::from_secs(5)).unwrap());
        assert!(d.wait(Duration::ZERO).unwrap(), "wait does not consume");
        assert_eq!(d.drain(), 2);
        assert_eq!(d.drain(), 0);
        assert!(!d.wait(Duration::ZERO).unwrap());
    }

    #[test]
    fn ring_from_another_thread_wakes_waiter() {
        let d = std::sync::Arc::new(Doorbell::new().unwrap());
        let d2 = std::sync::Arc::clone(&d);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            d2.ring().unwrap();
        });
        let t = Instant::now();
        assert!(d.wait(Duration::from_secs(10)).unwrap());
        assert!(t.elapsed() < Duration::from_secs(5));
        h.join().unwrap();
        assert_eq!(d.drain(), 1);
    }

    #[test]
    fn shared_fd_and_saturated_counter() {
        let d = Doorbell::new().unwrap();
        let dup = d.as_fd().try_clone_to_owned().unwrap();
        let other = Doorbell::from_fd(dup);
        other.ring().unwrap();
        assert!(d.wait(Duration::ZERO).unwrap());
        assert_eq!(d.drain(), 1);
        // Saturate the counter (max is u64::MAX - 1): a further ring gets EAGAIN, still Ok.
        (&d.fd).write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
        other.ring().unwrap();
        assert_eq!(d.drain(), u64::MAX - 1);
    }

    #[test]
    fn from_non_eventfd_errors_without_panicking() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(r);
        let d = Doorbell::from_fd(w);
        // Writing into a pipe without reader: EPIPE (SIGPIPE is ignored by the Rust runtime).
        assert!(d.ring().is_err());
        assert_eq!(d.drain(), 0);
    }
}
