//! Doorbells: wake-up signals between a ring's producer and its sleeping consumer. A consumer
//! that found its ring empty announces it is about to sleep (a flag in shared memory),
//! re-checks the ring, and waits on its doorbell; a producer rings the doorbell only if it sees
//! the flag after publishing. See `region` for the ordering proof.
//!
//! # Two kinds, one rule: no open file description is shared with a hound
//!
//! File status flags such as `O_NONBLOCK` live on the *open file description*, not on the
//! descriptor: every process holding a dup of a description (by `dup`, by inheritance, by
//! `pidfd_getfd`) can flip them for all holders. A hound that clears `O_NONBLOCK` on a shared
//! eventfd makes the supervisor's next `read` on it block forever. Hence:
//!
//! * [`bell_pipe`] — the doorbell between a supervisor and a hound: one pipe per direction per
//!   hound. The two ends of a pipe are two distinct descriptions. The side that rings holds the
//!   write end ([`BellRinger`]), the side that sleeps the read end ([`BellListener`]); the
//!   supervisor keeps only its own end of each pipe (request direction: the write end;
//!   completion direction: the read end) and passes the other end to the hound, never both.
//!   Whatever the hound does to its ends, the supervisor's ends stay non-blocking, so every
//!   supervisor-side `ring`/`drain` is non-blocking by construction. No pipe is shared between
//!   two hounds either (each hound gets its own two pipes), so no hound can fill or block
//!   another's doorbell.
//! * [`Doorbell`] — an eventfd for wake-ups inside one process (the collector's own bell, rung
//!   by submitters and the spawner). It is close-on-exec and never handed to a hound.
//!
//! Both keep every ring until it is drained (the eventfd counter; the bytes in the pipe), so a
//! ring that arrives before the consumer actually blocks makes its wait return at once: a ring
//! is never lost, at worst a wait returns for a signal that an earlier cycle already served (a
//! spurious wake-up, harmless because the consumer always re-checks its ring). A pipe that is
//! full (64 KiB of unread rings) refuses a further ring with `EAGAIN`, which counts as
//! success: the doorbell is signalled either way.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::ProtocolError;

/// An eventfd used as a wake-up signal inside one process. Non-blocking, close-on-exec.
/// Never hand it to a hound: its description would be shared (use [`bell_pipe`]).
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
        poll_in(self.fd.as_raw_fd(), timeout, false)
    }
}

/// Polls one fd for `POLLIN` until `timeout`; `hup_is_ready`: a hang-up counts as readable
/// (a pipe whose writers are gone) instead of an error (an eventfd never hangs up).
fn poll_in(
    fd: std::os::fd::RawFd,
    timeout: Duration,
    hup_is_ready: bool,
) -> Result<bool, ProtocolError> {
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
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised pollfd that lives across the call, and the
        // count passed is 1; the fd is owned by the caller and open.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(ProtocolError::Os {
                op: "poll(doorbell)",
                source: e,
            });
        }
        if pfd.revents & libc::POLLIN != 0 || (hup_is_ready && pfd.revents & libc::POLLHUP != 0) {
            return Ok(true);
        }
        if pfd.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
            return Err(ProtocolError::Os {
                op: "poll(doorbell)",
                source: std::io::Error::other(format!("unexpected poll events {:#x}", pfd.revents)),
            });
        }
        // Timed out (r == 0): done unless the clamp to c_int::MAX ms cut the wait short.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Bytes read from a pipe doorbell per `read` call in [`BellListener::drain`].
const DRAIN_CHUNK: usize = 512;
/// `read` calls per [`BellListener::drain`]: a peer that rings without pause cannot keep one
/// drain going (at most `DRAIN_CHUNK * DRAIN_READS` bytes per call).
const DRAIN_READS: usize = 8;

/// Creates a one-way doorbell: a pipe whose two ends are two open file descriptions, both
/// non-blocking and close-on-exec. Keep one end, hand the other to the peer (make an
/// inheritable copy of it for the spawn and close the original right after): the peer can then
/// change the flags of its own description only.
pub fn bell_pipe() -> Result<(BellRinger, BellListener), ProtocolError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes; no other memory is touched.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r != 0 {
        return Err(ProtocolError::Os {
            op: "pipe2",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both descriptors were just returned by pipe2; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((
        BellRinger {
            fd: File::from(write),
        },
        BellListener {
            fd: File::from(read),
        },
    ))
}

/// The ringing end of a pipe doorbell (its write end).
#[derive(Debug)]
pub struct BellRinger {
    fd: File,
}

impl BellRinger {
    /// Adopts an inherited write end (the hound side). On another kind of fd `ring` returns
    /// errors but stays memory-safe.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd: File::from(fd) }
    }

    /// Signals the doorbell: one `write(2)` of one byte. Never blocks on a non-blocking end (as
    /// [`bell_pipe`] creates; the supervisor's ends are never shared, so they stay so). A full
    /// pipe (`EAGAIN`) counts as success: the listener has unread rings anyway. A listener
    /// that is gone (`EPIPE`; SIGPIPE is ignored by the Rust runtime) is an error.
    pub fn ring(&self) -> Result<(), ProtocolError> {
        loop {
            match (&self.fd).write(&[1u8]) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(source) => {
                    return Err(ProtocolError::Os {
                        op: "write(doorbell pipe)",
                        source,
                    })
                }
            }
        }
    }
}

impl AsFd for BellRinger {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What [`BellListener::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Rings consumed (bytes read; a hostile peer may write any bytes, they only count).
    pub rings: u64,
    /// Every write end is closed: the peer is gone or closed its doorbell. Poll reports such a
    /// pipe readable forever, so a consumer must stop waiting on it.
    pub hung_up: bool,
}

/// The sleeping end of a pipe doorbell (its read end).
#[derive(Debug)]
pub struct BellListener {
    fd: File,
}

impl BellListener {
    /// Adopts an inherited read end (the hound side). On another kind of fd the methods return
    /// errors or nonsense counts but stay memory-safe.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd: File::from(fd) }
    }

    /// Consumes pending rings, with a budget: at most a few bounded `read(2)` calls, so a peer
    /// that rings without pause cannot hold the caller here. Never blocks on a non-blocking end
    /// (see [`BellRinger::ring`]). A read error other than "nothing pending" counts as nothing
    /// pending.
    pub fn drain(&self) -> Drained {
        let mut buf = [0u8; DRAIN_CHUNK];
        let mut out = Drained::default();
        let mut reads = 0;
        while reads < DRAIN_READS {
            match (&self.fd).read(&mut buf) {
                Ok(0) => {
                    out.hung_up = true;
                    break;
                }
                Ok(n) => {
                    out.rings += n as u64;
                    reads += 1;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => reads += 1,
                Err(_) => break,
            }
        }
        out
    }

    /// Waits until the doorbell is rung (or hung up) or `timeout` passes; returns true if so.
    /// Does not consume the ring (call `drain`). Same rounding as [`Doorbell::wait`].
    pub fn wait(&self, timeout: Duration) -> Result<bool, ProtocolError> {
        poll_in(self.fd.as_raw_fd(), timeout, true)
    }
}

impl AsFd for BellListener {
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

    fn clear_nonblock(fd: BorrowedFd<'_>) {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL / F_SETFL on an open fd take and return integers.
        unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            assert!(fl >= 0);
            assert_eq!(libc::fcntl(raw, libc::F_SETFL, fl & !libc::O_NONBLOCK), 0);
        }
    }

    fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFL on an open fd returns an integer.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        fl & libc::O_NONBLOCK != 0
    }

    #[test]
    fn pipe_ring_wait_drain() {
        let (ringer, listener) = bell_pipe().unwrap();
        assert_eq!(listener.drain(), Drained::default());
        assert!(!listener.wait(Duration::ZERO).unwrap());
        ringer.ring().unwrap();
        ringer.ring().unwrap();
        assert!(listener.wait(Duration::from_secs(5)).unwrap());
        assert!(
            listener.wait(Duration::ZERO).unwrap(),
            "wait does not consume"
        );
        assert_eq!(listener.drain().rings, 2);
        assert!(!listener.wait(Duration::ZERO).unwrap());
        drop(ringer);
        assert!(
            listener.wait(Duration::ZERO).unwrap(),
            "a hang-up wakes the listener"
        );
        assert!(listener.drain().hung_up);
    }

    /// The attack of issue 9: the peer clears O_NONBLOCK on every end it holds. With one
    /// shared eventfd this made the supervisor's read block forever; with a pipe per direction
    /// the supervisor's own ends keep their flag and its calls return at once.
    #[test]
    fn peer_clearing_o_nonblock_cannot_block_our_ends() {
        // Request direction: we ring, the peer listens. Completion: the peer rings, we listen.
        let (our_ringer, peer_listener) = bell_pipe().unwrap();
        let (peer_ringer, our_listener) = bell_pipe().unwrap();
        // The peer's inherited copies (dup: same descriptions as the originals we close).
        let peer_l = peer_listener.as_fd().try_clone_to_owned().unwrap();
        let peer_r = peer_ringer.as_fd().try_clone_to_owned().unwrap();
        drop((peer_listener, peer_ringer));
        clear_nonblock(peer_l.as_fd());
        clear_nonblock(peer_r.as_fd());
        assert!(is_nonblocking(our_ringer.as_fd()));
        assert!(is_nonblocking(our_listener.as_fd()));
        // Nothing pending: returns at once (a blocking read would hang this test).
        assert_eq!(our_listener.drain(), Drained::default());
        // The peer never drains: fill its pipe; further rings still return (EAGAIN = Ok).
        for _ in 0..(1 << 17) {
            our_ringer.ring().unwrap();
        }
        // A flood from the peer is drained with a budget, the rest stays for the next drain.
        let flood = BellRinger::from_fd(peer_r);
        for _ in 0..(DRAIN_CHUNK * DRAIN_READS + 100) {
            flood.ring().unwrap();
        }
        let first = our_listener.drain();
        assert_eq!(first.rings, (DRAIN_CHUNK * DRAIN_READS) as u64);
        assert_eq!(our_listener.drain().rings, 100);
        drop(peer_l);
        assert!(
            our_ringer.ring().is_err(),
            "EPIPE once the listener is gone"
        );
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
