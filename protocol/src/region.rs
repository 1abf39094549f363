//! The two memfd-backed regions shared between the supervisor and one hound.
//!
//! * The **request region** is written only by the supervisor. Before it is shared it is sealed
//!   with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL`: the supervisor's own
//!   mapping (made before sealing) stays writable, the hound can only map it read-only. It holds
//!   the request ring (data + tail), the completion ring's consumer position, and the
//!   supervisor's "I am asleep" flag. A hound cannot alter the jobs it was given, so the
//!   supervisor can re-read an unfinished job from its own ring to retry it elsewhere.
//! * The **completion region** is written by the hound (and read by the supervisor as untrusted
//!   bytes). Sealed `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` so it cannot be truncated under
//!   the supervisor. It holds the completion ring (data + tail), the hound's "I am asleep" flag,
//!   and its state / heartbeat / progress counters.
//!
//! Request space is freed by the supervisor itself when it consumes the completion of a job
//! (jobs complete in ring order), so nothing the hound writes can make the supervisor overwrite
//! a live record or believe there is space that is not there.
//!
//! Byte layout of both headers: see docs/PROTOCOL.md (the helper writes that section).
//! STUB CONTRACT: signatures fixed; the helper implements, with SAFETY comments and tests.

use std::os::fd::{BorrowedFd, OwnedFd};

use crate::ProtocolError;

/// Sizes of the two rings of a hound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// Request ring data bytes (power of two, ≥ 4096).
    pub request_capacity: usize,
    /// Completion ring data bytes (power of two, ≥ 4096).
    pub completion_capacity: usize,
}

impl RegionLayout {
    /// Checks capacities (power of two, 4 KiB ..= 1 GiB).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        todo!()
    }
    /// Largest request payload (header + body) one record can carry.
    pub fn max_request_payload(&self) -> usize {
        crate::ring::max_payload(self.request_capacity)
    }
    /// Largest completion payload one record can carry.
    pub fn max_completion_payload(&self) -> usize {
        crate::ring::max_payload(self.completion_capacity)
    }
    /// Total bytes of shared memory both regions use (counts against the container's memory).
    pub fn memory_bytes(&self) -> usize {
        todo!()
    }
}

/// Where a request record sits in the request ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    /// Position of the record header.
    pub start: u64,
    /// Position just after the record (the tail after it was published).
    pub end: u64,
}

/// Hound state values stored in the completion region (untrusted when read by the supervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HoundState {
    /// Mapped, not yet serving.
    Starting = 0,
    /// Serving, ring empty, spinning.
    Idle = 1,
    /// Processing a job.
    Busy = 2,
    /// Asleep on its doorbell.
    Sleeping = 3,
    /// Finishing the ring before exit.
    Draining = 4,
}

/// Snapshot of the hound-written counters. Values are whatever the hound wrote: informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoundStatus {
    /// Raw state value (see [`HoundState`]).
    pub state: u32,
    /// Incremented by the hound on every job-loop iteration that did work or woke up.
    pub heartbeat: u64,
    /// Jobs the hound says it completed.
    pub jobs_done: u64,
    /// Job id the hound says it is working on (0 = none).
    pub current_job: u64,
}

/// The supervisor's handle on a freshly created pair of regions (before splitting).
#[derive(Debug)]
pub struct SupervisorRegions {
    _private: (),
}

impl SupervisorRegions {
    /// Creates both memfds (MFD_CLOEXEC | MFD_ALLOW_SEALING), sizes them, maps them, writes the
    /// headers, and seals them as described in the module docs. `name` is used for the memfd
    /// names (visible in /proc/PID/fd), e.g. "houndpool-3".
    pub fn create(layout: RegionLayout, name: &str) -> Result<Self, ProtocolError> {
        let _ = (layout, name);
        todo!()
    }
    /// The request region's fd, to be inherited by the hound.
    pub fn request_fd(&self) -> BorrowedFd<'_> {
        todo!()
    }
    /// The completion region's fd, to be inherited by the hound.
    pub fn completion_fd(&self) -> BorrowedFd<'_> {
        todo!()
    }
    /// The layout these regions were created with.
    pub fn layout(&self) -> RegionLayout {
        todo!()
    }
    /// Splits into the submit-side writer and the collector-side reader. The mappings live as
    /// long as either half; the fds are closed (the hound has its own copies by now).
    pub fn split(self) -> (RequestWriter, CompletionReader) {
        todo!()
    }
}

/// Supervisor: produces request records. One owner at a time (`&mut self`), typically behind
/// the hound slot's lock. `Send`.
#[derive(Debug)]
pub struct RequestWriter {
    _private: (),
}

impl RequestWriter {
    /// Largest payload `try_push` accepts.
    pub fn max_payload(&self) -> usize {
        todo!()
    }
    /// Bytes currently free (ignoring padding that a push may need).
    pub fn free_bytes(&self) -> usize {
        todo!()
    }
    /// Copies `parts` (concatenated) in as one record and publishes it (Release store of the
    /// tail). `Ok(None)` if it does not fit now; `Err(RecordTooLarge)` if it never will.
    /// No syscall, no allocation.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<Option<RecordPos>, ProtocolError> {
        let _ = parts;
        todo!()
    }
    /// After a push: issues a SeqCst fence and reads the hound's sleeping flag. True means the
    /// caller must ring the hound's request doorbell.
    pub fn hound_sleeping(&self) -> bool {
        todo!()
    }
}

/// Supervisor: consumes completion records (hostile producer), frees request space, re-reads
/// its own request records, reads hound counters. `Send`.
#[derive(Debug)]
pub struct CompletionReader {
    _private: (),
}

impl CompletionReader {
    /// Copies the next completion record's payload into `out` and publishes the new consumer
    /// position. `Ok(false)` when empty; `Err(RingCorrupt)` when the hound wrote impossible
    /// indices or headers — the caller must kill that hound.
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        let _ = out;
        todo!()
    }
    /// Whether a completion is waiting (validates the tail like `pop`).
    pub fn has_pending(&self) -> Result<bool, ProtocolError> {
        todo!()
    }
    /// Frees request ring space up to `upto` (a `RecordPos::end`), with a Release store.
    pub fn release_requests(&self, upto: u64) {
        let _ = upto;
        todo!()
    }
    /// Re-reads the supervisor's own request record starting at `start` (trusted memory: the
    /// hound maps it read-only). Copies the payload into `out`; returns the position after it.
    /// `start` must lie in `[released, tail)`.
    pub fn read_request(&self, start: u64, out: &mut Vec<u8>) -> Result<u64, ProtocolError> {
        let _ = (start, out);
        todo!()
    }
    /// Sets the supervisor's sleeping flag (SeqCst store, then SeqCst fence). After this the
    /// caller re-checks `has_pending` before actually sleeping.
    pub fn announce_sleep(&self) {
        todo!()
    }
    /// Clears the supervisor's sleeping flag.
    pub fn cancel_sleep(&self) {
        todo!()
    }
    /// Snapshot of the hound's counters (untrusted values).
    pub fn status(&self) -> HoundStatus {
        todo!()
    }
}

/// The hound's handle on the two regions it inherited.
#[derive(Debug)]
pub struct HoundRegions {
    _private: (),
}

impl HoundRegions {
    /// Maps the request region read-only and the completion region read-write, validating both
    /// headers (magic, version, capacities, sizes of the files). Takes ownership of the fds and
    /// closes them after mapping.
    pub fn map(request_fd: OwnedFd, completion_fd: OwnedFd) -> Result<Self, ProtocolError> {
        let _ = (request_fd, completion_fd);
        todo!()
    }
    /// Splits into the job-loop halves.
    pub fn split(self) -> (RequestReader, CompletionWriter, StatusWriter) {
        todo!()
    }
}

/// Hound: reads request records in order (zero-copy: the region is immutable to the hound).
#[derive(Debug)]
pub struct RequestReader {
    _private: (),
}

impl RequestReader {
    /// The record at the read cursor, or `None` if the ring is empty. Does not advance.
    pub fn peek(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        todo!()
    }
    /// Moves the cursor past the record returned by the last `peek`.
    pub fn advance(&mut self) {
        todo!()
    }
    /// Whether a record is waiting (Acquire load of the tail).
    pub fn has_pending(&self) -> bool {
        todo!()
    }
}

/// Hound: produces completion records.
#[derive(Debug)]
pub struct CompletionWriter {
    _private: (),
}

impl CompletionWriter {
    /// Largest payload `try_push` accepts.
    pub fn max_payload(&self) -> usize {
        todo!()
    }
    /// Writes one record (concatenated `parts`) and publishes it. `Ok(false)` if full now.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<bool, ProtocolError> {
        let _ = parts;
        todo!()
    }
    /// After a push: SeqCst fence, then reads the supervisor's sleeping flag.
    pub fn supervisor_sleeping(&self) -> bool {
        todo!()
    }
}

/// Hound: writes its state and counters and its sleeping flag.
#[derive(Debug)]
pub struct StatusWriter {
    _private: (),
}

impl StatusWriter {
    /// Stores the state.
    pub fn set_state(&self, state: HoundState) {
        let _ = state;
        todo!()
    }
    /// Increments the heartbeat.
    pub fn beat(&self) {
        todo!()
    }
    /// Records the job being worked on (0 = none).
    pub fn set_current_job(&self, job_id: u64) {
        let _ = job_id;
        todo!()
    }
    /// Increments the completed-jobs counter.
    pub fn job_done(&self) {
        todo!()
    }
    /// Sets the hound's sleeping flag (SeqCst store + SeqCst fence); re-check the ring after.
    pub fn announce_sleep(&self) {
        todo!()
    }
    /// Clears the sleeping flag.
    pub fn cancel_sleep(&self) {
        todo!()
    }
}
