//! eventfd doorbells. A consumer that found its ring empty announces it is about to sleep
//! (a flag in shared memory), re-checks the ring, and waits on its doorbell; a producer rings
//! the doorbell only if it sees the flag after publishing. See `region` for the ordering proof.
//! STUB CONTRACT: signatures fixed; the helper implements.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::ProtocolError;

/// An eventfd used as a wake-up signal. Non-blocking, close-on-exec.
#[derive(Debug)]
pub struct Doorbell {
    _private: (),
}

impl Doorbell {
    /// Creates a new eventfd doorbell (EFD_NONBLOCK | EFD_CLOEXEC).
    pub fn new() -> Result<Self, ProtocolError> {
        todo!()
    }
    /// Adopts an inherited eventfd (the hound side).
    pub fn from_fd(fd: OwnedFd) -> Self {
        let _ = fd;
        todo!()
    }
    /// Signals the doorbell (one `write` syscall). Never blocks.
    pub fn ring(&self) -> Result<(), ProtocolError> {
        todo!()
    }
    /// Consumes pending signals; returns how many were pending (0 if none). Never blocks.
    pub fn drain(&self) -> u64 {
        todo!()
    }
    /// Waits until the doorbell is signalled or `timeout` passes; returns true if signalled.
    /// Does not consume the signal (call `drain`).
    pub fn wait(&self, timeout: Duration) -> Result<bool, ProtocolError> {
        let _ = timeout;
        todo!()
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        todo!()
    }
}
