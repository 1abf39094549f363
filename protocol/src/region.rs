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
//! Each region is one [`REGION_HEADER_LEN`]-byte header page followed by the ring's data area;
//! the field offsets are in [`offsets`] and the byte layout is documented in
//! the shared-memory section of docs/PROTOCOL.md. All positions start at 0 when the regions are
//! created.
//!
//! # Wake-up ordering (why no wake-up is lost)
//!
//! Consumer (about to sleep): `sleeping.store(1, SeqCst)`; `fence(SeqCst)` (= `F_c`); load the
//! producer's tail; if the ring is empty wait on the doorbell; afterwards `sleeping.store(0)`.
//! Producer: write the record; `tail.store(new, Release)`; `fence(SeqCst)` (= `F_p`); load
//! `sleeping`; if it is 1, ring the doorbell.
//!
//! The two SeqCst fences are totally ordered in the single order S (C++20 [atomics.order]/4,
//! which Rust adopts): for a store A sequenced before fence X and a load B sequenced after fence
//! Y, if X precedes Y in S then B sees A or a later value. So either `F_p` precedes `F_c`, and
//! the consumer's re-check sees the new tail (it does not sleep), or `F_c` precedes `F_p`, and
//! the producer's load sees `sleeping == 1` — or the consumer's later `0`, which it stores only
//! after it stopped waiting and before it re-checks the ring again — and rings. The doorbell
//! (a pipe per direction, see `wake`) keeps a ring until it is drained, so a ring that lands
//! between the re-check and the `poll` is not lost either: `poll` returns at once. Both regions live in one physical memory
//! shared by the two processes, so the hardware ordering the fences emit (`mfence` / `dmb ish`)
//! holds across processes exactly as across threads. Loads of fields this process may not write
//! are `Relaxed` (required for read-only mappings) followed by an `Acquire` fence where the
//! value publishes data, which gives the same guarantee as an `Acquire` load.

use std::cell::Cell;
use std::ffi::CString;
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::ring::{self, RingMemory};
use crate::ProtocolError;

// The hound reads header fields of its read-only mapping with `AtomicU64::load(Relaxed)`, which
// is only defined on read-only memory where a 64-bit load is a single plain load instruction.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("houndpool shared-memory regions require a 64-bit target");

/// Bytes of the header page at the start of each region; the ring data follows it.
pub const REGION_HEADER_LEN: usize = 4096;
/// Magic at offset 0 of the request region.
pub const REQUEST_REGION_MAGIC: [u8; 8] = *b"HPREQRGN";
/// Magic at offset 0 of the completion region.
pub const COMPLETION_REGION_MAGIC: [u8; 8] = *b"HPCMPRGN";
/// Layout version at offset 8 of both regions: bumped when the region or ring layout changes.
pub const REGION_VERSION: u32 = 1;
/// Smallest ring data area of a region.
pub const MIN_REGION_CAPACITY: usize = 4096;
/// Largest ring data area of a region (1 GiB).
pub const MAX_REGION_CAPACITY: usize = 1 << 30;
/// Seals of the request region once it is shared.
pub const REQUEST_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL;
/// Seals of the completion region once it is shared.
pub const COMPLETION_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Byte offsets of the header fields (all integers little-endian; the atomics are naturally
/// aligned). `REQ_*` are in the request region, `CMP_*` in the completion region.
pub mod offsets {
    /// `[u8; 8]` magic (both regions).
    pub const MAGIC: usize = 0;
    /// `u32` layout version (both regions).
    pub const VERSION: usize = 8;
    /// `u32` reserved, zero (both regions).
    pub const RESERVED: usize = 12;
    /// `u64` request ring capacity.
    pub const REQ_REQUEST_CAPACITY: usize = 16;
    /// `u64` completion ring capacity.
    pub const REQ_COMPLETION_CAPACITY: usize = 24;
    /// `AtomicU64` request ring producer position (supervisor writes).
    pub const REQ_TAIL: usize = 64;
    /// `AtomicU64` completion ring consumer position (supervisor writes).
    pub const REQ_CMP_HEAD: usize = 128;
    /// `AtomicU32` supervisor sleeping flag, 0 or 1 (supervisor writes).
    pub const REQ_SUPERVISOR_SLEEPING: usize = 192;
    /// `AtomicU64` request space released by the supervisor (informational).
    pub const REQ_RELEASED: usize = 256;
    /// `u64` completion ring capacity (copy in the completion region).
    pub const CMP_COMPLETION_CAPACITY: usize = 16;
    /// `AtomicU64` completion ring producer position (hound writes).
    pub const CMP_TAIL: usize = 64;
    /// `AtomicU32` hound sleeping flag, 0 or 1 (hound writes).
    pub const CMP_HOUND_SLEEPING: usize = 128;
    /// `AtomicU32` hound state (`HoundState` value; hound writes).
    pub const CMP_STATE: usize = 192;
    /// `AtomicU64` heartbeat counter (hound writes).
    pub const CMP_HEARTBEAT: usize = 200;
    /// `AtomicU64` completed-jobs counter (hound writes).
    pub const CMP_JOBS_DONE: usize = 208;
    /// `AtomicU64` current job id, 0 = none (hound writes).
    pub const CMP_CURRENT_JOB: usize = 216;
}

use offsets::*;

// Every atomic field is naturally aligned and lies inside the header page (checked at compile
// time; `Header::u64`/`u32` rely on it).
const _: () = {
    let u64s = [
        REQ_TAIL,
        REQ_CMP_HEAD,
        REQ_RELEASED,
        CMP_TAIL,
        CMP_HEARTBEAT,
        CMP_JOBS_DONE,
        CMP_CURRENT_JOB,
        REQ_REQUEST_CAPACITY,
        REQ_COMPLETION_CAPACITY,
        CMP_COMPLETION_CAPACITY,
        MAGIC,
    ];
    let mut i = 0;
    while i < u64s.len() {
        assert!(u64s[i].is_multiple_of(8) && u64s[i] + 8 <= REGION_HEADER_LEN);
        i += 1;
    }
    let u32s = [
        REQ_SUPERVISOR_SLEEPING,
        CMP_HOUND_SLEEPING,
        CMP_STATE,
        VERSION,
        RESERVED,
    ];
    let mut i = 0;
    while i < u32s.len() {
        assert!(u32s[i].is_multiple_of(4) && u32s[i] + 4 <= REGION_HEADER_LEN);
        i += 1;
    }
};

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
        for (which, cap) in [
            ("request", self.request_capacity),
            ("completion", self.completion_capacity),
        ] {
            if !cap.is_power_of_two() || !(MIN_REGION_CAPACITY..=MAX_REGION_CAPACITY).contains(&cap)
            {
                return Err(ProtocolError::InvalidRegion {
                    reason: format!(
                        "{which} ring capacity {cap} is not a power of two in \
                         {MIN_REGION_CAPACITY}..={MAX_REGION_CAPACITY}"
                    ),
                });
            }
        }
        Ok(())
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
    /// Saturates instead of overflowing for an unvalidated layout.
    pub fn memory_bytes(&self) -> usize {
        (2 * REGION_HEADER_LEN)
            .saturating_add(self.request_capacity)
            .saturating_add(self.completion_capacity)
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

impl HoundState {
    /// Raw value → state; `None` for a value no hound should write.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Starting,
            1 => Self::Idle,
            2 => Self::Busy,
            3 => Self::Sleeping,
            4 => Self::Draining,
            _ => return None,
        })
    }
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

// ---- header access ---------------------------------------------------------------------

/// The header page of a mapped region, accessed only through atomics.
///
/// Invariant (established by the `unsafe` constructor): `base` is the page-aligned start of a
/// live shared mapping of at least `REGION_HEADER_LEN` bytes that outlives this value, and
/// nothing in this process accesses the header fields other than through these atomics.
/// Whether stores are allowed is decided by the two wrappers below: only an [`OwnHeader`]
/// (over a writable mapping) hands out the atomics themselves.
#[derive(Debug)]
struct Header {
    base: *mut u8,
}

impl Header {
    /// # Safety
    /// See the type's invariant.
    unsafe fn new(base: *mut u8) -> Self {
        Self { base }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= REGION_HEADER_LEN);
        // SAFETY: `off` is one of the `offsets` constants, checked at compile time to be 8-aligned
        // and inside the header page; `base` is page-aligned, so the address is aligned for
        // AtomicU64 and inside the mapping, which lives at least as long as `&self` (type
        // invariant). This process accesses the field only atomically; the peer process sees
        // the same physical memory and can at worst store arbitrary values, every bit pattern
        // being a valid u64.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) }
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= REGION_HEADER_LEN);
        // SAFETY: as in `u64`, with 4-byte alignment.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }
}

/// A header this process may write (its own region, mapped read-write).
#[derive(Debug)]
struct OwnHeader(Header);

/// A header this process only reads. Only `Relaxed` loads are issued, which are defined even on
/// a read-only mapping (std `sync::atomic` docs, "atomic accesses to read-only memory").
#[derive(Debug)]
struct PeerHeader(Header);

impl OwnHeader {
    fn u64(&self, off: usize) -> &AtomicU64 {
        self.0.u64(off)
    }
    fn u32(&self, off: usize) -> &AtomicU32 {
        self.0.u32(off)
    }
}

impl PeerHeader {
    fn load_u64(&self, off: usize) -> u64 {
        self.0.u64(off).load(Ordering::Relaxed)
    }
    fn load_u32(&self, off: usize) -> u32 {
        self.0.u32(off).load(Ordering::Relaxed)
    }
}

// SAFETY: a Header is a pointer into a mapping owned by the same struct that owns the Header
// (SupervisorMappings / HoundMappings); the mapping is process-wide, not tied to a thread, and all
// accesses are atomic, so moving it to another thread is sound. Not Sync by itself: sharing is
// argued on the types that share it.
unsafe impl Send for Header {}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> ProtocolError {
    move |source| ProtocolError::Os { op, source }
}

fn last_os(op: &'static str) -> ProtocolError {
    ProtocolError::Os {
        op,
        source: std::io::Error::last_os_error(),
    }
}

fn invalid(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidRegion {
        reason: reason.into(),
    }
}

fn add_seals(file: &File, seals: libc::c_int) -> Result<(), ProtocolError> {
    // SAFETY: F_ADD_SEALS takes an int argument and touches no memory of this process; the fd
    // is valid for the duration of the call (borrowed from `file`).
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if r < 0 {
        return Err(last_os("fcntl(F_ADD_SEALS)"));
    }
    Ok(())
}

/// The seals currently set on `fd`.
pub fn get_seals(fd: BorrowedFd<'_>) -> Result<libc::c_int, ProtocolError> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory of this process; the fd is
    // valid for the duration of the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(last_os("fcntl(F_GET_SEALS)"));
    }
    Ok(r)
}

/// memfd_create + ftruncate + SHRINK/GROW seals + read-write mapping.
fn create_region_file(name: &str, capacity: usize) -> Result<(File, MmapMut), ProtocolError> {
    let cname =
        CString::new(name).map_err(|_| invalid(format!("memfd name {name:?} contains NUL")))?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call; memfd_create has no
    // other memory preconditions.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(last_os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create; nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let size = REGION_HEADER_LEN + capacity; // <= 4 KiB + 1 GiB: no overflow
    file.set_len(size as u64).map_err(os("ftruncate"))?;
    // Size is final from here on: the mapping below can never lose its backing (no SIGBUS).
    add_seals(&file, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
    // SAFETY: memmap2's map_mut is unsafe because another party may truncate or modify the file.
    // Truncation is impossible (F_SEAL_SHRINK above). Modification by the hound is the point of
    // the completion region, and the supervisor treats every byte of it as untrusted: header
    // fields are read with atomics, ring data only through validated copies, never through a
    // Rust reference held across a possible change.
    let map = unsafe { MmapOptions::new().len(size).map_mut(&file) }.map_err(os("mmap"))?;
    Ok((file, map))
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

// ---- supervisor side -------------------------------------------------------------------

/// Everything the two supervisor halves share.
#[derive(Debug)]
struct SupervisorMappings {
    layout: RegionLayout,
    /// Request region header (supervisor-owned).
    req_hdr: OwnHeader,
    /// Completion region header (hound-written: untrusted).
    cmp_hdr: PeerHeader,
    /// Request ring data (supervisor writes, hound reads).
    req_ring: RingMemory,
    /// Completion ring data (hound writes, supervisor copies out).
    cmp_ring: RingMemory,
    /// Private authoritative copy of the released request position (written by the
    /// CompletionReader, read by the RequestWriter). Never read from shared memory.
    released: AtomicU64,
    /// Private copy of the published request tail (written by the RequestWriter after each
    /// push, read by the CompletionReader for `read_request`/`release_requests`).
    published_tail: AtomicU64,
    _req_map: MmapMut,
    _cmp_map: MmapMut,
}

/// The supervisor's handle on a freshly created pair of regions (before splitting).
#[derive(Debug)]
pub struct SupervisorRegions {
    req_file: File,
    cmp_file: File,
    shared: SupervisorMappings,
}

impl SupervisorRegions {
    /// Creates both memfds (MFD_CLOEXEC | MFD_ALLOW_SEALING), sizes them, maps them, writes the
    /// headers, and seals them as described in the module docs. `name` is used for the memfd
    /// names (visible in /proc/PID/fd), e.g. "houndpool-3" gives "houndpool-3-req" and
    /// "houndpool-3-cmp". Fails with `InvalidRegion` for a bad layout or a name containing NUL,
    /// and with `Os` when the kernel refuses a step (for instance a kernel older than 5.1 that
    /// lacks `F_SEAL_FUTURE_WRITE`: the regions are never handed out unsealed).
    pub fn create(layout: RegionLayout, name: &str) -> Result<Self, ProtocolError> {
        layout.validate()?;
        let (req_file, mut req_map) =
            create_region_file(&format!("{name}-req"), layout.request_capacity)?;
        let (cmp_file, mut cmp_map) =
            create_region_file(&format!("{name}-cmp"), layout.completion_capacity)?;

        // Headers are written with plain stores before the fds exist anywhere else; the hound
        // gets them only after exec/fd passing, which orders these writes before its reads.
        // Positions, flags and counters stay 0 (ftruncate zero-fills).
        req_map[MAGIC..MAGIC + 8].copy_from_slice(&REQUEST_REGION_MAGIC);
        req_map[VERSION..VERSION + 4].copy_from_slice(&REGION_VERSION.to_le_bytes());
        req_map[REQ_REQUEST_CAPACITY..REQ_REQUEST_CAPACITY + 8]
            .copy_from_slice(&(layout.request_capacity as u64).to_le_bytes());
        req_map[REQ_COMPLETION_CAPACITY..REQ_COMPLETION_CAPACITY + 8]
            .copy_from_slice(&(layout.completion_capacity as u64).to_le_bytes());
        cmp_map[MAGIC..MAGIC + 8].copy_from_slice(&COMPLETION_REGION_MAGIC);
        cmp_map[VERSION..VERSION + 4].copy_from_slice(&REGION_VERSION.to_le_bytes());
        cmp_map[CMP_COMPLETION_CAPACITY..CMP_COMPLETION_CAPACITY + 8]
            .copy_from_slice(&(layout.completion_capacity as u64).to_le_bytes());

        // The supervisor's writable mapping of the request region exists now; from here on no
        // new writable mapping (nor write(2), nor hole punching) is possible, so the hound can
        // only map it read-only.
        add_seals(&req_file, REQUEST_SEALS)?;
        add_seals(&cmp_file, COMPLETION_SEALS)?;

        let req_base = req_map.as_mut_ptr();
        let cmp_base = cmp_map.as_mut_ptr();
        // SAFETY: both bases are the page-aligned starts of live shared mappings of
        // REGION_HEADER_LEN + capacity bytes, moved into the same SupervisorMappings as the
        // headers and rings built from them (moving an MmapMut does not move the mapping), so
        // they outlive them. The header page is from now on accessed only through the atomics
        // of Header. The data areas start at REGION_HEADER_LEN and span exactly `capacity`
        // bytes. The supervisor is the only writer of the request ring in this process and
        // never writes the completion ring (RingMemory's single-producer discipline, upheld by
        // RequestWriter / CompletionReader).
        let shared = unsafe {
            SupervisorMappings {
                layout,
                req_hdr: OwnHeader(Header::new(req_base)),
                cmp_hdr: PeerHeader(Header::new(cmp_base)),
                req_ring: RingMemory::new(
                    req_base.add(REGION_HEADER_LEN),
                    layout.request_capacity,
                )?,
                cmp_ring: RingMemory::new(
                    cmp_base.add(REGION_HEADER_LEN),
                    layout.completion_capacity,
                )?,
                released: AtomicU64::new(0),
                published_tail: AtomicU64::new(0),
                _req_map: req_map,
                _cmp_map: cmp_map,
            }
        };
        Ok(Self {
            req_file,
            cmp_file,
            shared,
        })
    }
    /// The request region's fd, to be inherited by the hound.
    pub fn request_fd(&self) -> BorrowedFd<'_> {
        self.req_file.as_fd()
    }
    /// The completion region's fd, to be inherited by the hound.
    pub fn completion_fd(&self) -> BorrowedFd<'_> {
        self.cmp_file.as_fd()
    }
    /// The layout these regions were created with.
    pub fn layout(&self) -> RegionLayout {
        self.shared.layout
    }
    /// Splits into the submit-side writer and the collector-side reader. The mappings live as
    /// long as either half; the fds are closed (the hound has its own copies by now).
    pub fn split(self) -> (RequestWriter, CompletionReader) {
        #[expect(
            clippy::arc_with_non_send_sync,
            reason = "the shared part is deliberately not Sync; the halves are Send by the \
                      argument on their unsafe impls"
        )]
        let shared = Arc::new(self.shared);
        (
            RequestWriter {
                shared: Arc::clone(&shared),
                tail: 0,
            },
            CompletionReader {
                shared,
                head: 0,
                _not_sync: PhantomData,
            },
        )
        // req_file and cmp_file drop here: the fds close, the mappings stay.
    }
}

/// Supervisor: produces request records. One owner at a time (`&mut self`), typically behind
/// the hound slot's lock. `Send`.
///
/// Free space is computed only from the supervisor's private positions (`tail`, and the
/// released position set by [`CompletionReader::release_requests`]): nothing the hound writes
/// can make it report or use space that is not free.
#[derive(Debug)]
pub struct RequestWriter {
    shared: Arc<SupervisorMappings>,
    /// Private producer position (authoritative; the shared tail is a published copy).
    tail: u64,
}

// SAFETY: a RequestWriter and the CompletionReader split from the same SupervisorRegions share
// one SupervisorMappings through the Arc and may live on two threads. Neither is Sync, so each is
// used by one thread at a time, and what the two threads touch is partitioned:
// * request ring data: the writer writes only free space `[tail, released + capacity)`
//   (`write_record` with `head = released`); the reader reads only `[released,
//   published_tail)` (`read_request`). The writer stores `published_tail` with Release after
//   writing a record and the reader loads it with Acquire; the reader stores `released` with
//   Release after its last read of that space and the writer loads it with Acquire. So every
//   byte is written and read in happens-before order, never concurrently.
// * completion ring data: only the reader touches it in this process (validated copies).
// * header fields and `released` / `published_tail`: atomics only.
// Everything else in SupervisorMappings is immutable after construction, and the mappings are
// unmapped only when the last Arc clone drops.
unsafe impl Send for RequestWriter {}

impl RequestWriter {
    /// Largest payload `try_push` accepts.
    pub fn max_payload(&self) -> usize {
        ring::max_payload(self.shared.layout.request_capacity)
    }
    /// Bytes currently free (ignoring padding that a push may need). Never more than
    /// `capacity - (tail - released)`, computed from private state only.
    pub fn free_bytes(&self) -> usize {
        let released = self.shared.released.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(released);
        // `released` never passes the published tail (release_requests clamps), so
        // `used <= capacity`; saturate rather than trust that.
        (self.shared.layout.request_capacity as u64).saturating_sub(used) as usize
    }
    /// Copies `parts` (concatenated) in as one record and publishes it (Release store of the
    /// tail). `Ok(None)` if it does not fit now; `Err(RecordTooLarge)` if it never will.
    /// No syscall, no allocation.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<Option<RecordPos>, ProtocolError> {
        let sh = &*self.shared;
        let released = sh.released.load(Ordering::Acquire);
        let Some((start, end)) = sh.req_ring.write_record(released, self.tail, parts)? else {
            return Ok(None);
        };
        self.tail = end;
        // Publish to the hound (its Acquire fence after loading pairs with this) ...
        sh.req_hdr.u64(REQ_TAIL).store(end, Ordering::Release);
        // ... and to the CompletionReader of this process.
        sh.published_tail.store(end, Ordering::Release);
        Ok(Some(RecordPos { start, end }))
    }
    /// After a push: issues a SeqCst fence and reads the hound's sleeping flag. True means the
    /// caller must ring the hound's request doorbell. The flag is hound-written: any non-zero
    /// value counts as sleeping (a lying hound only earns itself extra or missing wake-ups).
    pub fn hound_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        self.shared.cmp_hdr.load_u32(CMP_HOUND_SLEEPING) != 0
    }
}

/// Supervisor: consumes completion records (hostile producer), frees request space, re-reads
/// its own request records, reads hound counters. `Send`.
#[derive(Debug)]
pub struct CompletionReader {
    shared: Arc<SupervisorMappings>,
    /// Private consumer position (authoritative; the shared `cmp_head` is a published copy).
    head: u64,
    /// Not Sync: `read_request` and `release_requests` take `&self` and must not run on two
    /// threads at once (see the Send argument on RequestWriter).
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: see the argument on `impl Send for RequestWriter`.
unsafe impl Send for CompletionReader {}

impl CompletionReader {
    /// Copies the next completion record's payload into `out` and publishes the new consumer
    /// position. `Ok(false)` when empty; `Err(RingCorrupt)` when the hound wrote impossible
    /// indices or headers — the caller must kill that hound. The payload is at most the
    /// completion ring's maximum payload; `out` is untouched unless `Ok(true)`.
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        let sh = &*self.shared;
        let tail = sh.cmp_hdr.load_u64(CMP_TAIL);
        fence(Ordering::Acquire);
        match sh.cmp_ring.read_record_copy(self.head, tail, out)? {
            Some(next) => {
                self.head = next;
                // Release: the copy above completes before the hound may reuse the space.
                sh.req_hdr.u64(REQ_CMP_HEAD).store(next, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Like [`Self::pop`], but copies the record's first `header.len()` bytes into `header`
    /// and the rest into `body` (cleared first), each byte once: a caller that hands the body
    /// on (an outcome's payload) takes it out of the ring without a second copy. Returns the
    /// payload's total length (which may be shorter than `header`: check it before parsing),
    /// `Ok(None)` when empty; errors as for `pop`.
    pub fn pop_split(
        &mut self,
        header: &mut [u8],
        body: &mut Vec<u8>,
    ) -> Result<Option<usize>, ProtocolError> {
        let sh = &*self.shared;
        let tail = sh.cmp_hdr.load_u64(CMP_TAIL);
        fence(Ordering::Acquire);
        match sh
            .cmp_ring
            .read_record_split(self.head, tail, header, body)?
        {
            Some((next, len)) => {
                self.head = next;
                // Release: the copy above completes before the hound may reuse the space.
                sh.req_hdr.u64(REQ_CMP_HEAD).store(next, Ordering::Release);
                Ok(Some(len))
            }
            None => Ok(None),
        }
    }
    /// Whether a completion is waiting (validates the tail like `pop`, and the next record's
    /// header too: `Ok(true)` means a `pop` now returns `Ok(true)` unless the hound rewrites
    /// the record in between).
    pub fn has_pending(&self) -> Result<bool, ProtocolError> {
        let sh = &*self.shared;
        let tail = sh.cmp_hdr.load_u64(CMP_TAIL);
        fence(Ordering::Acquire);
        sh.cmp_ring.has_record(self.head, tail)
    }
    /// The payload length of the next completion record, validated as [`Self::pop`] validates
    /// it, without consuming it (`Ok(None)` when empty). Untrusted like the record: the hound
    /// may rewrite it before the `pop`, which validates again; a caller uses it only to decide
    /// who consumes the record.
    pub fn next_len(&self) -> Result<Option<usize>, ProtocolError> {
        let sh = &*self.shared;
        let tail = sh.cmp_hdr.load_u64(CMP_TAIL);
        fence(Ordering::Acquire);
        sh.cmp_ring.record_len(self.head, tail)
    }
    /// Frees request ring space up to `upto` (a `RecordPos::end`), with a Release store.
    /// Positions only move forward: an `upto` that is not 8-aligned or not in
    /// `[released, tail]` is ignored (it cannot be a `RecordPos::end` of an unreleased record).
    pub fn release_requests(&self, upto: u64) {
        let sh = &*self.shared;
        // Only this (non-Sync) reader stores `released`.
        let released = sh.released.load(Ordering::Relaxed);
        let tail = sh.published_tail.load(Ordering::Acquire);
        if !upto.is_multiple_of(ring::RECORD_ALIGN as u64)
            || upto.wrapping_sub(released) > tail.wrapping_sub(released)
        {
            return;
        }
        // Release: this thread's reads of the released records (read_request) happen before
        // the writer may overwrite them.
        sh.released.store(upto, Ordering::Release);
        sh.req_hdr.u64(REQ_RELEASED).store(upto, Ordering::Relaxed);
    }
    /// Re-reads the supervisor's own request record starting at `start` (trusted memory: the
    /// hound maps it read-only). Copies the payload into `out`; returns the position after it.
    /// `start` must lie in `[released, tail)`; otherwise, or if `start` is not a record
    /// boundary, the result is `Err(RingCorrupt)` (here meaning a caller bug, not a hostile
    /// hound: the request region cannot be written by the hound).
    pub fn read_request(&self, start: u64, out: &mut Vec<u8>) -> Result<u64, ProtocolError> {
        let sh = &*self.shared;
        let released = sh.released.load(Ordering::Relaxed);
        let tail = sh.published_tail.load(Ordering::Acquire);
        if start.wrapping_sub(released) >= tail.wrapping_sub(released) {
            return Err(ProtocolError::RingCorrupt {
                what: "request position outside the unreleased range",
                position: start,
                value: tail,
            });
        }
        match sh.req_ring.read_record_copy(start, tail, out)? {
            Some(next) => Ok(next),
            // Unreachable: `start != tail` was checked, so the ring is not empty from `start`.
            None => Err(ProtocolError::RingCorrupt {
                what: "no request record at position",
                position: start,
                value: tail,
            }),
        }
    }
    /// Sets the supervisor's sleeping flag (SeqCst store, then SeqCst fence). After this the
    /// caller re-checks `has_pending` before actually sleeping.
    pub fn announce_sleep(&self) {
        self.shared.announce_sleep();
    }
    /// Clears the supervisor's sleeping flag. (A hound that reads a stale 1 only rings an
    /// extra time, so no ordering is needed.)
    pub fn cancel_sleep(&self) {
        self.shared.cancel_sleep();
    }
    /// Snapshot of the hound's counters (untrusted values).
    pub fn status(&self) -> HoundStatus {
        self.shared.status()
    }
    /// A view of this ring for a thread that does not consume it (the supervisor's collector
    /// while the reader sits behind a lock another thread may hold): the sleeping flag, the
    /// hound's counters and whether a completion waits.
    pub fn watch(&self) -> CompletionWatch {
        CompletionWatch {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl SupervisorMappings {
    /// The supervisor's sleeping flag, set: SeqCst store, then SeqCst fence, so the re-check
    /// of the ring that follows cannot be ordered before it (the Dekker pair with the hound's
    /// publish-then-read-flag, argued at the module top).
    fn announce_sleep(&self) {
        self.req_hdr
            .u32(REQ_SUPERVISOR_SLEEPING)
            .store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
    /// The supervisor's sleeping flag, cleared (Relaxed: a stale 1 only costs an extra ring).
    fn cancel_sleep(&self) {
        self.req_hdr
            .u32(REQ_SUPERVISOR_SLEEPING)
            .store(0, Ordering::Relaxed);
    }
    fn status(&self) -> HoundStatus {
        let h = &self.cmp_hdr;
        HoundStatus {
            state: h.load_u32(CMP_STATE),
            heartbeat: h.load_u64(CMP_HEARTBEAT),
            jobs_done: h.load_u64(CMP_JOBS_DONE),
            current_job: h.load_u64(CMP_CURRENT_JOB),
        }
    }
}

/// Supervisor: a view of one completion ring that consumes nothing (see
/// [`CompletionReader::watch`]). It announces and cancels the supervisor's sleep exactly as
/// the reader does, reads the hound's counters, and tells whether a completion waits after the
/// consumer position last *published* (`REQ_CMP_HEAD`, which only the supervisor writes): a
/// reader on another thread may have consumed more since, so `has_pending` may answer `true`
/// for a record already taken (never `false` for one that waits at the published position).
/// That errs on the side of staying awake, which is what a sleep re-check needs. `Send`.
#[derive(Debug)]
pub struct CompletionWatch {
    shared: Arc<SupervisorMappings>,
}

// SAFETY: a CompletionWatch touches only header atomics (the sleeping flag, the published
// consumer position, the hound's tail and counters) and *reads* completion ring bytes through
// `RingMemory::has_record`, which validates whatever it finds (the hound may be writing there at
// any time; a CompletionReader on another thread of this process only reads them too). It never
// touches `released` / `published_tail` nor any ring byte the RequestWriter writes, so the
// partition argued on `impl Send for RequestWriter` still holds; the mappings live as long as
// the Arc. Not Sync: one thread at a time, like the halves.
unsafe impl Send for CompletionWatch {}

impl CompletionWatch {
    /// As [`CompletionReader::announce_sleep`].
    pub fn announce_sleep(&self) {
        self.shared.announce_sleep();
    }
    /// As [`CompletionReader::cancel_sleep`].
    pub fn cancel_sleep(&self) {
        self.shared.cancel_sleep();
    }
    /// Snapshot of the hound's counters (untrusted values).
    pub fn status(&self) -> HoundStatus {
        self.shared.status()
    }
    /// Whether a completion waits at the last published consumer position (see the type's
    /// docs); validates like [`CompletionReader::has_pending`].
    pub fn has_pending(&self) -> Result<bool, ProtocolError> {
        let sh = &*self.shared;
        // Stored with Release by whichever thread consumed last.
        let head = sh.req_hdr.u64(REQ_CMP_HEAD).load(Ordering::Acquire);
        let tail = sh.cmp_hdr.load_u64(CMP_TAIL);
        fence(Ordering::Acquire);
        sh.cmp_ring.has_record(head, tail)
    }
}

// ---- hound side ------------------------------------------------------------------------

/// Everything the three hound halves share.
#[derive(Debug)]
struct HoundMappings {
    layout: RegionLayout,
    /// Request region header (read-only mapping).
    req_hdr: PeerHeader,
    /// Completion region header (hound-owned).
    cmp_hdr: OwnHeader,
    /// Request ring over the read-only mapping: only ever read.
    req_ring: RingMemory,
    /// Completion ring (hound writes).
    cmp_ring: RingMemory,
    _req_map: Mmap,
    _cmp_map: MmapMut,
}

/// The hound's handle on the two regions it inherited.
#[derive(Debug)]
pub struct HoundRegions {
    shared: HoundMappings,
}

/// Reads the first bytes of a region file with pread (before mapping anything).
fn read_prefix(file: &File, which: &str) -> Result<[u8; 32], ProtocolError> {
    let mut b = [0u8; 32];
    file.read_exact_at(&mut b, 0)
        .map_err(|e| invalid(format!("cannot read the {which} region header: {e}")))?;
    Ok(b)
}

fn check_magic_version(b: &[u8; 32], magic: &[u8; 8], which: &str) -> Result<(), ProtocolError> {
    if &b[MAGIC..MAGIC + 8] != magic {
        return Err(invalid(format!(
            "{which} region magic is {:02x?}, expected {:?}",
            &b[MAGIC..MAGIC + 8],
            String::from_utf8_lossy(magic)
        )));
    }
    let version = le_u32(b, VERSION);
    if version != REGION_VERSION {
        return Err(invalid(format!(
            "{which} region version {version}, this build speaks {REGION_VERSION}"
        )));
    }
    Ok(())
}

fn check_seals(file: &File, want: libc::c_int, which: &str) -> Result<(), ProtocolError> {
    let have = get_seals(file.as_fd())?;
    if have & want != want {
        return Err(invalid(format!(
            "{which} region seals are {have:#x}, expected at least {want:#x}"
        )));
    }
    Ok(())
}

fn check_size(file: &File, capacity: usize, which: &str) -> Result<usize, ProtocolError> {
    let want = REGION_HEADER_LEN + capacity;
    let have = file.metadata().map_err(os("fstat"))?.len();
    if have != want as u64 {
        return Err(invalid(format!(
            "{which} region file is {have} bytes, expected {want}"
        )));
    }
    Ok(want)
}

impl HoundRegions {
    /// Maps the request region read-only and the completion region read-write, validating both
    /// headers (magic, version, capacities, sizes of the files). Takes ownership of the fds and
    /// closes them after mapping.
    ///
    /// Also requires the seals the supervisor sets ([`REQUEST_SEALS`], [`COMPLETION_SEALS`]):
    /// they guarantee the files cannot shrink under the mappings. Everything is checked with
    /// `pread`/`fstat`/`fcntl` before anything is mapped.
    pub fn map(request_fd: OwnedFd, completion_fd: OwnedFd) -> Result<Self, ProtocolError> {
        let req_file = File::from(request_fd);
        let cmp_file = File::from(completion_fd);
        check_seals(&req_file, REQUEST_SEALS, "request")?;
        check_seals(&cmp_file, COMPLETION_SEALS, "completion")?;

        let rh = read_prefix(&req_file, "request")?;
        check_magic_version(&rh, &REQUEST_REGION_MAGIC, "request")?;
        let cap = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let layout = RegionLayout {
            request_capacity: cap(le_u64(&rh, REQ_REQUEST_CAPACITY)),
            completion_capacity: cap(le_u64(&rh, REQ_COMPLETION_CAPACITY)),
        };
        layout.validate()?;
        let ch = read_prefix(&cmp_file, "completion")?;
        check_magic_version(&ch, &COMPLETION_REGION_MAGIC, "completion")?;
        let cmp_cap = le_u64(&ch, CMP_COMPLETION_CAPACITY);
        if cmp_cap != layout.completion_capacity as u64 {
            return Err(invalid(format!(
                "completion region says capacity {cmp_cap}, request region says {}",
                layout.completion_capacity
            )));
        }
        let req_len = check_size(&req_file, layout.request_capacity, "request")?;
        let cmp_len = check_size(&cmp_file, layout.completion_capacity, "completion")?;

        // SAFETY: memmap2's map is unsafe because the file may be truncated or modified under
        // the mapping. Truncation is impossible (F_SEAL_SHRINK checked above). The request
        // region is modified only by the supervisor, which writes only free ring space and
        // atomic header fields; the hound reads header fields atomically and ring records only
        // within [head, tail) (see RequestReader::peek).
        let req_map = unsafe { MmapOptions::new().len(req_len).map(&req_file) }
            .map_err(os("mmap (request region)"))?;
        // SAFETY: as above; the completion region is written by this process (ring free space
        // and its own atomic header fields) and read by the supervisor.
        let mut cmp_map = unsafe { MmapOptions::new().len(cmp_len).map_mut(&cmp_file) }
            .map_err(os("mmap (completion region)"))?;

        let req_base = req_map.as_ptr().cast_mut();
        let cmp_base = cmp_map.as_mut_ptr();
        // SAFETY: both bases are the page-aligned starts of live shared mappings of
        // REGION_HEADER_LEN + capacity bytes (sizes checked above), moved into the same
        // HoundMappings as everything built from them, so they outlive them. The request mapping
        // is read-only: it is wrapped only in a PeerHeader (Relaxed loads only) and in a
        // RingMemory on which nothing ever calls write_record (only RequestReader uses it, to
        // read). The hound is the only writer of the completion ring in this process.
        let shared = unsafe {
            HoundMappings {
                layout,
                req_hdr: PeerHeader(Header::new(req_base)),
                cmp_hdr: OwnHeader(Header::new(cmp_base)),
                req_ring: RingMemory::new(
                    req_base.add(REGION_HEADER_LEN),
                    layout.request_capacity,
                )?,
                cmp_ring: RingMemory::new(
                    cmp_base.add(REGION_HEADER_LEN),
                    layout.completion_capacity,
                )?,
                _req_map: req_map,
                _cmp_map: cmp_map,
            }
        };
        Ok(Self { shared })
        // The files drop here: the fds close, the mappings stay.
    }
    /// The layout read from the request region header.
    pub fn layout(&self) -> RegionLayout {
        self.shared.layout
    }
    /// Splits into the job-loop halves.
    pub fn split(self) -> (RequestReader, CompletionWriter, StatusWriter) {
        #[expect(
            clippy::arc_with_non_send_sync,
            reason = "the shared part is deliberately not Sync; the halves are Send by the \
                      argument on their unsafe impls"
        )]
        let shared = Arc::new(self.shared);
        (
            RequestReader {
                shared: Arc::clone(&shared),
                head: 0,
                peeked: None,
            },
            CompletionWriter {
                shared: Arc::clone(&shared),
                tail: 0,
            },
            StatusWriter { shared },
        )
    }
}

// SAFETY: the three hound halves share one HoundMappings through the Arc and may live on
// different threads. RequestReader and CompletionWriter are not Sync (one thread at a time each);
// StatusWriter is Sync because its `&self` methods only perform atomic operations. What they
// touch in this process is partitioned: RequestReader only reads the read-only request mapping
// (which no thread of this process can write); CompletionWriter alone writes completion ring
// data (free space only) and the completion tail; StatusWriter only touches the atomic state,
// counter and sleeping fields. The mappings are unmapped only when the last Arc clone drops.
unsafe impl Send for RequestReader {}
// SAFETY: see above.
unsafe impl Send for CompletionWriter {}
// SAFETY: see above.
unsafe impl Send for StatusWriter {}
// SAFETY: see above: every `&self` method of StatusWriter is a single atomic operation on a
// header field of the completion region.
unsafe impl Sync for StatusWriter {}

/// Hound: reads request records in order (zero-copy: the region is immutable to the hound).
/// Its read cursor is private and never published: the supervisor frees request space only on
/// consuming the completion for a request.
#[derive(Debug)]
pub struct RequestReader {
    shared: Arc<HoundMappings>,
    head: u64,
    /// Position after the record returned by the last successful `peek`.
    peeked: Option<u64>,
}

impl RequestReader {
    /// The record at the read cursor, or `None` if the ring is empty. Does not advance.
    ///
    /// The slice stays valid and unchanged until the supervisor consumes the completion the
    /// hound writes for this request; push that completion only after you are done reading the
    /// slice. `Err(RingCorrupt)` if the supervisor's positions or headers are impossible.
    pub fn peek(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        self.peeked = None;
        let tail = self.shared.req_hdr.load_u64(REQ_TAIL);
        fence(Ordering::Acquire);
        // SAFETY: the request mapping is read-only in this process, and the supervisor writes
        // only free ring space: the record at `head` lies in `[released, tail)`, which it does
        // not touch until it has consumed this hound's completion for the record (pushed only
        // after the hound is done with the slice, as documented above). The Acquire fence
        // after loading `tail` makes the record's bytes, written before the supervisor's
        // Release store of `tail`, visible.
        match unsafe { self.shared.req_ring.read_record_ref(self.head, tail) }? {
            Some((_, payload, next)) => {
                self.peeked = Some(next);
                Ok(Some(payload))
            }
            None => Ok(None),
        }
    }
    /// Moves the cursor past the record returned by the last `peek` (no-op if that `peek`
    /// returned no record).
    pub fn advance(&mut self) {
        if let Some(next) = self.peeked.take() {
            self.head = next;
        }
    }
    /// Whether a record is waiting (Acquire load of the tail). An impossible tail also counts as
    /// pending, so that the next `peek` reports it.
    pub fn has_pending(&self) -> bool {
        let tail = self.shared.req_hdr.load_u64(REQ_TAIL);
        fence(Ordering::Acquire);
        tail != self.head
    }
}

/// Hound: produces completion records.
#[derive(Debug)]
pub struct CompletionWriter {
    shared: Arc<HoundMappings>,
    /// Private producer position.
    tail: u64,
}

impl CompletionWriter {
    /// Largest payload `try_push` accepts.
    pub fn max_payload(&self) -> usize {
        ring::max_payload(self.shared.layout.completion_capacity)
    }
    /// Writes one record (concatenated `parts`) and publishes it. `Ok(false)` if full now.
    /// `Err(RecordTooLarge)` if it never fits; `Err(RingCorrupt)` if the supervisor's consumer
    /// position is impossible.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<bool, ProtocolError> {
        let sh = &*self.shared;
        let head = sh.req_hdr.load_u64(REQ_CMP_HEAD);
        // Pairs with the supervisor's Release store of cmp_head: its copy-out is complete
        // before this process overwrites the space.
        fence(Ordering::Acquire);
        match sh.cmp_ring.write_record(head, self.tail, parts)? {
            Some((_, end)) => {
                self.tail = end;
                sh.cmp_hdr.u64(CMP_TAIL).store(end, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// After a push: SeqCst fence, then reads the supervisor's sleeping flag.
    pub fn supervisor_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        self.shared.req_hdr.load_u32(REQ_SUPERVISOR_SLEEPING) != 0
    }
}

/// Hound: writes its state and counters and its sleeping flag.
#[derive(Debug)]
pub struct StatusWriter {
    shared: Arc<HoundMappings>,
}

impl StatusWriter {
    fn hdr(&self) -> &OwnHeader {
        &self.shared.cmp_hdr
    }
    /// Stores the state.
    pub fn set_state(&self, state: HoundState) {
        self.hdr()
            .u32(CMP_STATE)
            .store(state as u32, Ordering::Relaxed);
    }
    /// Increments the heartbeat (wrapping).
    pub fn beat(&self) {
        self.hdr()
            .u64(CMP_HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }
    /// Records the job being worked on (0 = none).
    pub fn set_current_job(&self, job_id: u64) {
        self.hdr()
            .u64(CMP_CURRENT_JOB)
            .store(job_id, Ordering::Relaxed);
    }
    /// Increments the completed-jobs counter (wrapping).
    pub fn job_done(&self) {
        self.hdr()
            .u64(CMP_JOBS_DONE)
            .fetch_add(1, Ordering::Relaxed);
    }
    /// Sets the hound's sleeping flag (SeqCst store + SeqCst fence); re-check the ring after.
    pub fn announce_sleep(&self) {
        self.hdr()
            .u32(CMP_HOUND_SLEEPING)
            .store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
    /// Clears the sleeping flag.
    pub fn cancel_sleep(&self) {
        self.hdr()
            .u32(CMP_HOUND_SLEEPING)
            .store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(r: usize, c: usize) -> RegionLayout {
        RegionLayout {
            request_capacity: r,
            completion_capacity: c,
        }
    }

    #[test]
    fn layout_validation() {
        assert!(layout(4096, 4096).validate().is_ok());
        assert!(layout(1 << 30, 1 << 20).validate().is_ok());
        for (r, c) in [
            (2048, 4096),
            (4096, 0),
            (4096, 6000),
            (1 << 31, 4096),
            (4096, usize::MAX),
        ] {
            assert!(
                matches!(
                    layout(r, c).validate(),
                    Err(ProtocolError::InvalidRegion { .. })
                ),
                "{r} {c}"
            );
        }
        assert_eq!(layout(4096, 8192).memory_bytes(), 8192 + 4096 + 8192);
        assert_eq!(layout(usize::MAX, 4096).memory_bytes(), usize::MAX);
        assert_eq!(layout(4096, 8192).max_request_payload(), 2040);
        assert_eq!(layout(4096, 8192).max_completion_payload(), 4088);
    }

    #[test]
    fn hound_state_round_trip() {
        for s in [
            HoundState::Starting,
            HoundState::Idle,
            HoundState::Busy,
            HoundState::Sleeping,
            HoundState::Draining,
        ] {
            assert_eq!(HoundState::from_u32(s as u32), Some(s));
        }
        assert_eq!(HoundState::from_u32(5), None);
    }

    #[test]
    fn create_rejects_bad_input() {
        assert!(matches!(
            SupervisorRegions::create(layout(100, 4096), "x"),
            Err(ProtocolError::InvalidRegion { .. })
        ));
        assert!(matches!(
            SupervisorRegions::create(layout(4096, 4096), "a\0b"),
            Err(ProtocolError::InvalidRegion { .. })
        ));
    }

    #[test]
    fn release_requests_ignores_impossible_positions() {
        let sup = SupervisorRegions::create(layout(4096, 4096), "hp-test-release").unwrap();
        let (mut w, r) = sup.split();
        let p = w.try_push(&[&[1u8; 100]]).unwrap().unwrap();
        assert_eq!(p, RecordPos { start: 0, end: 112 });
        assert_eq!(w.free_bytes(), 4096 - 112);
        r.release_requests(120); // beyond tail
        r.release_requests(4); // unaligned
        r.release_requests(u64::MAX - 7); // "behind" released
        assert_eq!(w.free_bytes(), 4096 - 112);
        let mut out = Vec::new();
        assert_eq!(r.read_request(0, &mut out).unwrap(), 112);
        assert_eq!(out, [1u8; 100]);
        assert!(r.read_request(112, &mut out).is_err());
        r.release_requests(112);
        assert_eq!(w.free_bytes(), 4096);
        assert!(r.read_request(0, &mut out).is_err());
        r.release_requests(0); // backwards: ignored
        assert_eq!(w.free_bytes(), 4096);
    }
}
