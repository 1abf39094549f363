//! Single-producer single-consumer byte rings of length-prefixed, 8-byte-aligned records.
//!
//! Positions are monotonically increasing `u64` byte counters; the index into the data area is
//! `pos & (capacity - 1)`. `capacity` is a power of two, at least 64. A record is an 8-byte
//! header — `len: u32` (payload bytes), `tag: u32` (`TAG_RECORD` or `TAG_PADDING`) — followed by
//! the payload, the whole rounded up to 8 bytes. A record never wraps: when the contiguous space
//! left before the end of the data area is too small, the producer writes one padding record that
//! covers exactly that space and continues at index 0. The largest payload is
//! [`max_payload`]`(capacity)` = `capacity / 2 - 8`, which guarantees that an empty ring always
//! accepts a record of maximal size whatever its current index.
//!
//! This module is the pure ring arithmetic over raw memory; [`crate::region`] decides where the
//! positions live and who may write them. The consumer functions here are safe against a
//! hostile producer: every position and length read from shared memory is bounds-checked, and
//! payload bytes are copied out before anyone interprets them.
//! STUB CONTRACT: signatures are fixed; the helper implements bodies, SAFETY comments, tests.

use crate::ProtocolError;

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Alignment of every record.
pub const RECORD_ALIGN: usize = 8;
/// Tag of a data record.
pub const TAG_RECORD: u32 = 0x5245_4331; // "REC1"
/// Tag of a padding record (skip to index 0).
pub const TAG_PADDING: u32 = 0x5041_4431; // "PAD1"

/// Largest payload a ring of `capacity` bytes accepts.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER_LEN
}

/// Bytes a record with `payload_len` bytes of payload occupies (header + payload, aligned).
pub const fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Raw data area of one ring, living in a shared mapping.
#[derive(Debug)]
pub struct RingMemory {
    _private: (),
}

// SAFETY (for the helper to state): RingMemory only holds a pointer into a mapping kept alive by
// its owner; all access goes through explicit copies.

impl RingMemory {
    /// Wraps `capacity` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads (and, for producers, writes) of `capacity` bytes for as long
    /// as the returned value and anything derived from it lives; `capacity` must be a power of
    /// two ≥ 64 (checked: returns `InvalidRegion` otherwise).
    pub unsafe fn new(ptr: *mut u8, capacity: usize) -> Result<Self, ProtocolError> {
        let _ = (ptr, capacity);
        todo!()
    }

    /// Data area size in bytes.
    pub fn capacity(&self) -> usize {
        todo!()
    }

    /// Producer: writes one record whose payload is the concatenation of `parts` at `tail`,
    /// given that the consumer has freed everything before `head`. Inserts a padding record when
    /// needed. Returns `Ok(Some((record_start, new_tail)))` — `record_start` is where the data
    /// record's header begins (after any padding) — `Ok(None)` when there is not enough free
    /// space now, `Err(RecordTooLarge)` when the payload can never fit. Does not publish: the
    /// caller stores `new_tail` with `Release` ordering.
    pub fn write_record(
        &self,
        head: u64,
        tail: u64,
        parts: &[&[u8]],
    ) -> Result<Option<(u64, u64)>, ProtocolError> {
        let _ = (head, tail, parts);
        todo!()
    }

    /// Consumer over untrusted memory: reads the record at `head` given a `tail` loaded with
    /// `Acquire` from memory the peer writes. Padding records are skipped transparently. On a
    /// data record its payload is copied into `out` (cleared first) and `Ok(Some(next_head))` is
    /// returned; `Ok(None)` when the ring is empty. Any impossible value — tail behind head or
    /// more than `capacity` ahead, unaligned positions, an unknown tag, a length that runs past
    /// `tail` or past the end of the data area, padding that does not end exactly at the end of
    /// the data area — is `Err(RingCorrupt)`. Never panics, never allocates more than the ring's
    /// maximum payload.
    pub fn read_record_copy(
        &self,
        head: u64,
        tail: u64,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, ProtocolError> {
        let _ = (head, tail, out);
        todo!()
    }

    /// Consumer over memory the peer cannot modify (the hound reading the request region, which
    /// it maps read-only): like [`Self::read_record_copy`] but returns the payload borrowed in
    /// place, with the same validation. Returns `(record_start, payload, next_head)`.
    ///
    /// # Safety
    /// No one may write the returned bytes while the borrow lives (the supervisor never rewrites
    /// a record before the hound's completion for it has been consumed).
    pub unsafe fn read_record_ref(
        &self,
        head: u64,
        tail: u64,
    ) -> Result<Option<(u64, &[u8], u64)>, ProtocolError> {
        let _ = (head, tail);
        todo!()
    }
}
