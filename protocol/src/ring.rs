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
//!
//! Wire details (all integers little-endian; see the shared-memory section of docs/PROTOCOL.md):
//! * A padding record's `len` is the number of padding bytes after its header, so the padding
//!   record as a whole ends exactly at the end of the data area. When the contiguous space left
//!   is exactly zero (the tail index is 0) no padding is written.
//! * A padding record is always published together with the data record that follows it: a
//!   consumer that finds padding reaching up to (or past) the published tail reports corruption.
//! * Positions wrap around `u64` with ordinary wrapping arithmetic; only differences of positions
//!   are ever compared, so a ring may start at any 8-aligned position.

use crate::ProtocolError;

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Alignment of every record.
pub const RECORD_ALIGN: usize = 8;
/// Tag of a data record.
pub const TAG_RECORD: u32 = 0x5245_4331; // "REC1"
/// Tag of a padding record (skip to index 0).
pub const TAG_PADDING: u32 = 0x5041_4431; // "PAD1"
/// Smallest data area a ring accepts.
pub const MIN_RING_CAPACITY: usize = 64;
/// Largest data area [`RingMemory::new`] accepts (4 GiB): keeps every payload length within the
/// `u32` length field.
pub const MAX_RING_CAPACITY: u64 = 1 << 32;

/// Largest payload a ring of `capacity` bytes accepts.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER_LEN
}

/// Bytes a record with `payload_len` bytes of payload occupies (header + payload, aligned).
pub const fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Shorthand for a [`ProtocolError::RingCorrupt`].
fn corrupt(what: &'static str, position: u64, value: u64) -> ProtocolError {
    ProtocolError::RingCorrupt {
        what,
        position,
        value,
    }
}

/// A validated data record found by [`RingMemory::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Located {
    /// Position of the data record's header (after any padding).
    start: u64,
    /// Index into the data area of the first payload byte.
    payload_index: usize,
    /// Payload length; `<= max_payload(capacity)`.
    len: usize,
    /// Position just after the record.
    next: u64,
}

/// Raw data area of one ring, living in a shared mapping.
///
/// It is a pointer and a length, nothing more: it neither owns nor frees the memory. Every
/// method bounds-checks indices against `capacity` before touching memory, so the only
/// obligations are those stated on [`RingMemory::new`].
#[derive(Debug)]
pub struct RingMemory {
    /// Start of the data area.
    ptr: *mut u8,
    /// Data area bytes: a power of two in `MIN_RING_CAPACITY..=MAX_RING_CAPACITY`.
    capacity: usize,
}

// SAFETY: RingMemory only holds a pointer into a mapping kept alive by its owner (the contract
// of `new`); nothing about that memory is tied to the creating thread, so moving the value to
// another thread is sound. It is deliberately not `Sync`: `write_record` takes `&self`, and two
// threads writing the same ring at once would race. The region types that share one ring
// between a producer and a consumer thread state their own (narrower) argument.
unsafe impl Send for RingMemory {}

impl RingMemory {
    /// Wraps `capacity` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads (and, for producers, writes) of `capacity` bytes for as long
    /// as the returned value and anything derived from it lives; `capacity` must be a power of
    /// two ≥ 64 (checked: returns `InvalidRegion` otherwise, as it does for a null `ptr` and for
    /// a capacity above [`MAX_RING_CAPACITY`]).
    ///
    /// Within this process, the caller keeps the single-producer discipline: at most one thread
    /// calls [`Self::write_record`] at a time, it passes a `head` no older than what the consumer
    /// still reads, and no thread of this process reads bytes that `write_record` may be writing.
    /// Another *process* may write the memory at any time: [`Self::read_record_copy`] is built
    /// for that; [`Self::read_record_ref`] carries its own obligation.
    pub unsafe fn new(ptr: *mut u8, capacity: usize) -> Result<Self, ProtocolError> {
        if ptr.is_null() {
            return Err(ProtocolError::InvalidRegion {
                reason: "ring data pointer is null".into(),
            });
        }
        if !capacity.is_power_of_two()
            || capacity < MIN_RING_CAPACITY
            || capacity as u64 > MAX_RING_CAPACITY
        {
            return Err(ProtocolError::InvalidRegion {
                reason: format!(
                    "ring capacity {capacity} is not a power of two in \
                     {MIN_RING_CAPACITY}..={MAX_RING_CAPACITY}"
                ),
            });
        }
        Ok(Self { ptr, capacity })
    }

    /// Data area size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Index into the data area of position `pos`; always `< capacity`.
    fn index(&self, pos: u64) -> usize {
        // The mask is < capacity, which is a usize, so the cast cannot truncate.
        (pos & (self.capacity as u64 - 1)) as usize
    }

    /// Reads the record header at the 8-aligned index `idx` exactly once.
    fn read_header(&self, idx: usize) -> (u32, u32) {
        debug_assert!(idx.is_multiple_of(RECORD_ALIGN) && idx < self.capacity);
        // SAFETY: `idx` is a multiple of 8 below `capacity`, and `capacity` is a multiple of 8,
        // so `idx + 8 <= capacity` and the 8 bytes lie inside the area `new` was promised is
        // readable. `[u8; 8]` has alignment 1, so any address is suitably aligned. The read is
        // volatile so that the compiler fetches the bytes exactly once into this local copy:
        // a peer process may change them right after, but every later check and use works on
        // the copy, so a concurrent change can make the record look corrupt, never make a check
        // and a use disagree (no double fetch).
        let bytes = unsafe { std::ptr::read_volatile(self.ptr.add(idx).cast::<[u8; 8]>()) };
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let tag = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        (len, tag)
    }

    /// Producer: writes one record whose payload is the concatenation of `parts` at `tail`,
    /// given that the consumer has freed everything before `head`. Inserts a padding record when
    /// needed. Returns `Ok(Some((record_start, new_tail)))` — `record_start` is where the data
    /// record's header begins (after any padding) — `Ok(None)` when there is not enough free
    /// space now, `Err(RecordTooLarge)` when the payload can never fit. Does not publish: the
    /// caller stores `new_tail` with `Release` ordering.
    ///
    /// `head` may come from the peer (the hound reads the supervisor's consumer position), so it
    /// is validated like a consumer validates a tail: `tail - head` must be at most `capacity`
    /// and both must be 8-aligned, else `Err(RingCorrupt)` and nothing is written. Nothing is
    /// written either when the result is `Ok(None)`.
    pub fn write_record(
        &self,
        head: u64,
        tail: u64,
        parts: &[&[u8]],
    ) -> Result<Option<(u64, u64)>, ProtocolError> {
        let max = max_payload(self.capacity);
        let len = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
            .unwrap_or(usize::MAX);
        if len > max {
            return Err(ProtocolError::RecordTooLarge { len, max });
        }
        if !head.is_multiple_of(RECORD_ALIGN as u64) {
            return Err(corrupt("consumer position not 8-byte aligned", tail, head));
        }
        if !tail.is_multiple_of(RECORD_ALIGN as u64) {
            return Err(corrupt("producer position not 8-byte aligned", tail, tail));
        }
        let cap = self.capacity as u64;
        let used = tail.wrapping_sub(head);
        if used > cap {
            return Err(corrupt(
                "consumer position ahead of producer or more than capacity behind",
                tail,
                head,
            ));
        }
        let free = cap - used;
        // `len <= cap/2 - 8`, so `size <= cap/2` and nothing below overflows.
        let size = record_size(len) as u64;
        let idx = self.index(tail);
        let contiguous = cap - idx as u64;
        let pad = if size > contiguous { contiguous } else { 0 };
        if pad + size > free {
            return Ok(None);
        }
        if pad > 0 {
            // `pad` is a non-zero multiple of 8 (idx and cap are), so it holds a header.
            let pad_len = (pad - RECORD_HEADER_LEN as u64) as u32; // < cap/2 <= u32::MAX
            self.write_bytes(idx, &header_bytes(pad_len, TAG_PADDING));
        }
        let start = tail.wrapping_add(pad);
        let mut at = self.index(start);
        // `len <= max_payload(cap) < 2^31` because cap <= MAX_RING_CAPACITY.
        self.write_bytes(at, &header_bytes(len as u32, TAG_RECORD));
        at += RECORD_HEADER_LEN;
        for part in parts {
            self.write_bytes(at, part);
            at += part.len();
        }
        // Zero the alignment bytes so no stale data of an older record reaches the consumer.
        let end = self.index(start) + size as usize;
        self.write_bytes(at, &[0u8; RECORD_ALIGN][..end - at]);
        Ok(Some((start, start.wrapping_add(size))))
    }

    /// Copies `bytes` to data-area index `idx`.
    fn write_bytes(&self, idx: usize, bytes: &[u8]) {
        // Callers only pass ranges inside the record they are writing, which was checked to
        // lie within the data area and within the free space.
        debug_assert!(idx <= self.capacity && bytes.len() <= self.capacity - idx);
        // SAFETY: `idx + bytes.len() <= capacity` (checked by `write_record` before any write:
        // the record plus any padding does not cross the end of the data area), so the
        // destination lies inside the area `new` was promised is writable. The range lies in
        // free space (`pad + size <= free`), which the consumer does not read until the caller
        // publishes the new tail, and the single-producer discipline of `new` rules out a
        // second writer. `bytes` is a distinct Rust allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(idx), bytes.len());
        }
    }

    /// Validates the positions and the record at `head` (skipping one padding record) without
    /// copying anything. `Ok(None)` when the ring is empty.
    fn locate(&self, head: u64, tail: u64) -> Result<Option<Located>, ProtocolError> {
        let cap = self.capacity as u64;
        if !head.is_multiple_of(RECORD_ALIGN as u64) {
            return Err(corrupt("consumer position not 8-byte aligned", head, head));
        }
        if !tail.is_multiple_of(RECORD_ALIGN as u64) {
            return Err(corrupt("producer position not 8-byte aligned", head, tail));
        }
        let mut avail = tail.wrapping_sub(head);
        if avail > cap {
            return Err(corrupt(
                "producer position behind consumer or more than capacity ahead",
                head,
                tail,
            ));
        }
        if avail == 0 {
            return Ok(None);
        }
        // From here `avail` is a non-zero multiple of 8: the header lies wholly before `tail`.
        let mut pos = head;
        let mut idx = self.index(pos);
        let (mut len, mut tag) = self.read_header(idx);
        if tag == TAG_PADDING {
            let to_end = cap - idx as u64;
            if u64::from(len) + RECORD_HEADER_LEN as u64 != to_end {
                return Err(corrupt(
                    "padding does not end at the end of the data area",
                    pos,
                    u64::from(len),
                ));
            }
            if to_end >= avail {
                return Err(corrupt(
                    "padding not followed by a published record",
                    pos,
                    tail,
                ));
            }
            pos = pos.wrapping_add(to_end);
            avail -= to_end;
            idx = self.index(pos); // == 0
            (len, tag) = self.read_header(idx);
            if tag == TAG_PADDING {
                return Err(corrupt("padding follows padding", pos, u64::from(tag)));
            }
        }
        if tag != TAG_RECORD {
            return Err(corrupt("unknown record tag", pos, u64::from(tag)));
        }
        let max = max_payload(self.capacity);
        let len = match usize::try_from(len) {
            Ok(l) if l <= max => l,
            _ => return Err(corrupt("record length above maximum", pos, u64::from(len))),
        };
        let size = record_size(len) as u64; // <= cap/2
        if size > avail {
            return Err(corrupt(
                "record runs past the producer position",
                pos,
                len as u64,
            ));
        }
        if idx as u64 + size > cap {
            return Err(corrupt(
                "record crosses the end of the data area",
                pos,
                len as u64,
            ));
        }
        Ok(Some(Located {
            start: pos,
            payload_index: idx + RECORD_HEADER_LEN,
            len,
            next: pos.wrapping_add(size),
        }))
    }

    /// Validates the record at `head` like [`Self::read_record_copy`] without copying it: `true`
    /// when a valid data record is waiting, `false` when the ring is empty.
    pub fn has_record(&self, head: u64, tail: u64) -> Result<bool, ProtocolError> {
        Ok(self.locate(head, tail)?.is_some())
    }

    /// Validates the record at `head` like [`Self::read_record_copy`] without copying it and
    /// returns its payload length (at most the ring's maximum payload), `None` when the ring is
    /// empty. The peer may rewrite the record afterwards: a later read validates again.
    pub fn record_len(&self, head: u64, tail: u64) -> Result<Option<usize>, ProtocolError> {
        Ok(self.locate(head, tail)?.map(|r| r.len))
    }

    /// Consumer over untrusted memory: reads the record at `head` given a `tail` loaded with
    /// `Acquire` from memory the peer writes. Padding records are skipped transparently. On a
    /// data record its payload is copied into `out` (cleared first) and `Ok(Some(next_head))` is
    /// returned; `Ok(None)` when the ring is empty. Any impossible value — tail behind head or
    /// more than `capacity` ahead, unaligned positions, an unknown tag, a length that runs past
    /// `tail` or past the end of the data area, padding that does not end exactly at the end of
    /// the data area — is `Err(RingCorrupt)`. Never panics, never allocates more than the ring's
    /// maximum payload.
    ///
    /// `out` is left untouched unless the result is `Ok(Some(_))`.
    pub fn read_record_copy(
        &self,
        head: u64,
        tail: u64,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, ProtocolError> {
        let Some(rec) = self.locate(head, tail)? else {
            return Ok(None);
        };
        self.copy_out(rec.payload_index, rec.len, out);
        Ok(Some(rec.next))
    }

    /// Like [`Self::read_record_copy`], but the payload is copied in two parts: its first
    /// `min(len, prefix.len())` bytes into `prefix`, the rest into `rest` (cleared first).
    /// Returns `Ok(Some((next_head, len)))` with the payload's total length, `Ok(None)` when
    /// the ring is empty. Each byte is copied once, so a caller that wants the body after a
    /// fixed-size header in a buffer of its own (to hand it on without another copy) gets it
    /// straight out of the ring. Same validation and guarantees as `read_record_copy`;
    /// `prefix` and `rest` are left untouched unless the result is `Ok(Some(_))`.
    pub fn read_record_split(
        &self,
        head: u64,
        tail: u64,
        prefix: &mut [u8],
        rest: &mut Vec<u8>,
    ) -> Result<Option<(u64, usize)>, ProtocolError> {
        let Some(rec) = self.locate(head, tail)? else {
            return Ok(None);
        };
        let first = rec.len.min(prefix.len());
        // SAFETY: the source range `payload_index .. payload_index + first` lies inside the
        // record, which `locate` checked lies inside the data area `new` was promised is
        // readable; the destination is `first <= prefix.len()` bytes of a private slice, so
        // the ranges cannot overlap. Concurrent writes by the peer can only change the byte
        // values copied (see `copy_out`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add(rec.payload_index),
                prefix.as_mut_ptr(),
                first,
            );
        }
        self.copy_out(rec.payload_index + first, rec.len - first, rest);
        Ok(Some((rec.next, rec.len)))
    }

    /// Copies `len` bytes of the data area from index `idx` into `out` (cleared first).
    /// `idx + len` must lie within a record `locate` validated.
    fn copy_out(&self, idx: usize, len: usize, out: &mut Vec<u8>) {
        debug_assert!(idx <= self.capacity && len <= self.capacity - idx);
        out.clear();
        // `len <= max_payload(capacity)`: bounded allocation whatever the peer wrote.
        out.reserve(len);
        // SAFETY: source: `idx + len <= capacity` (callers pass a range inside a record that
        // `locate` checked does not cross the end of the data area), so it lies inside the
        // readable area promised to `new`. Destination: `out` has capacity >= len after
        // `reserve` and is a private allocation, so the ranges cannot overlap. The peer
        // process may be writing these bytes concurrently (a hostile hound, or a bug): that
        // can only yield arbitrary byte values in the copy — every `u8` is valid — and nothing
        // in this process acts on the shared bytes themselves: the length was fixed from the
        // single header read in `locate`, and callers interpret only the private copy. A
        // well-behaved producer does not write the range at all until the consumer position
        // moves past it. `set_len` is sound because exactly `len` bytes were just initialised.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(idx), out.as_mut_ptr(), len);
            out.set_len(len);
        }
    }

    /// Consumer over memory the peer cannot modify (the hound reading the request region, which
    /// it maps read-only): like [`Self::read_record_copy`] but returns the payload borrowed in
    /// place, with the same validation. Returns `(record_start, payload, next_head)`.
    ///
    /// # Safety
    /// No one may write the returned bytes while the borrow lives (the supervisor never rewrites
    /// a record before the hound's completion for it has been consumed).
    #[expect(
        clippy::type_complexity,
        reason = "signature fixed by the crate's API contract"
    )]
    pub unsafe fn read_record_ref(
        &self,
        head: u64,
        tail: u64,
    ) -> Result<Option<(u64, &[u8], u64)>, ProtocolError> {
        let Some(rec) = self.locate(head, tail)? else {
            return Ok(None);
        };
        // SAFETY: the range `payload_index .. payload_index + len` lies inside the data area
        // (checked by `locate`), which `new`'s contract keeps valid for reads while `self`
        // lives; the returned borrow is tied to `&self`. `u8` has no invalid values and
        // alignment 1. Immutability for the borrow's lifetime is the caller's obligation.
        let payload =
            unsafe { std::slice::from_raw_parts(self.ptr.add(rec.payload_index), rec.len) };
        Ok(Some((rec.start, payload, rec.next)))
    }
}

/// The 8 header bytes of a record.
fn header_bytes(len: u32, tag: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&tag.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 8-aligned heap buffer with a ring over it.
    struct Buf {
        mem: Vec<u64>,
        cap: usize,
    }

    impl Buf {
        fn new(cap: usize) -> Self {
            Self {
                mem: vec![0u64; cap / 8],
                cap,
            }
        }
        fn ring(&mut self) -> RingMemory {
            // SAFETY: the buffer holds `cap` bytes and outlives every use in a test.
            unsafe { RingMemory::new(self.mem.as_mut_ptr().cast(), self.cap).unwrap() }
        }
        fn put(&mut self, idx: usize, bytes: &[u8]) {
            let b: &mut [u8] = bytemuck_slice(&mut self.mem);
            b[idx..idx + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn bytemuck_slice(v: &mut [u64]) -> &mut [u8] {
        let len = v.len() * 8;
        // SAFETY: u64 storage reinterpreted as bytes, same lifetime, no invalid values.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), len) }
    }

    fn what(e: ProtocolError) -> &'static str {
        match e {
            ProtocolError::RingCorrupt { what, .. } => what,
            other => panic!("expected RingCorrupt, got {other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(record_size(9), 24);
        assert_eq!(max_payload(64), 24);
        assert_eq!(max_payload(4096), 2040);
    }

    #[test]
    fn new_rejects_bad_capacity_and_null() {
        let mut b = Buf::new(128);
        for cap in [0usize, 8, 32, 63, 96, 100] {
            // SAFETY: never dereferenced: construction fails.
            let r = unsafe { RingMemory::new(b.mem.as_mut_ptr().cast(), cap) };
            assert!(
                matches!(r, Err(ProtocolError::InvalidRegion { .. })),
                "{cap}"
            );
        }
        // SAFETY: null is rejected before use.
        let r = unsafe { RingMemory::new(std::ptr::null_mut(), 64) };
        assert!(matches!(r, Err(ProtocolError::InvalidRegion { .. })));
        assert_eq!(b.ring().capacity(), 128);
    }

    #[test]
    fn write_then_read_round_trip_with_padding() {
        let mut b = Buf::new(64);
        let r = b.ring();
        let mut out = Vec::new();
        // Record of 16 payload bytes at 0 -> occupies 24.
        let (s, t) = r
            .write_record(0, 0, &[b"0123456789", b"abcdef"])
            .unwrap()
            .unwrap();
        assert_eq!((s, t), (0, 24));
        assert_eq!(r.read_record_copy(0, t, &mut out).unwrap(), Some(24));
        assert_eq!(out, b"0123456789abcdef");
        // Next: 24 bytes payload (32 total) at idx 24: fits (24+32 = 56 <= 64), no padding.
        let (s, t2) = r.write_record(24, 24, &[&[7u8; 24]]).unwrap().unwrap();
        assert_eq!((s, t2), (24, 56));
        // Next record of 8 bytes (16 total) at idx 56: 8 contiguous -> padding of 8 (len 0).
        let (s, t3) = r.write_record(56, 56, &[b"xyzxyzxy"]).unwrap().unwrap();
        assert_eq!((s, t3), (64, 80));
        // The padding header sits at idx 56.
        // SAFETY: the buffer holds 64 initialised bytes and nothing writes it meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts(b.mem.as_ptr().cast::<u8>(), 64) };
        assert_eq!(&bytes[56..64], &header_bytes(0, TAG_PADDING));
        assert_eq!(r.read_record_copy(24, t3, &mut out).unwrap(), Some(56));
        assert_eq!(out, [7u8; 24]);
        assert_eq!(r.read_record_copy(56, t3, &mut out).unwrap(), Some(80));
        assert_eq!(out, b"xyzxyzxy");
        // SAFETY: nothing writes the buffer while `p` lives.
        let (start, p, next) = unsafe { r.read_record_ref(56, t3) }.unwrap().unwrap();
        assert_eq!((start, p, next), (64, &b"xyzxyzxy"[..], 80));
        assert_eq!(r.read_record_copy(80, 80, &mut out).unwrap(), None);
    }

    #[test]
    fn exact_fit_at_end_needs_no_padding() {
        let mut b = Buf::new(64);
        let r = b.ring();
        // Tail at idx 40, record of 16 payload (24 total) ends exactly at 64.
        let (s, t) = r.write_record(40, 40, &[&[1u8; 16]]).unwrap().unwrap();
        assert_eq!((s, t), (40, 64));
        // Next at idx 0: contiguous is 64, no padding.
        let (s, t) = r.write_record(64, 64, &[&[2u8; 16]]).unwrap().unwrap();
        assert_eq!((s, t), (64, 88));
    }

    #[test]
    fn full_and_too_large() {
        let mut b = Buf::new(64);
        let r = b.ring();
        assert!(matches!(
            r.write_record(0, 0, &[&[0u8; 25]]),
            Err(ProtocolError::RecordTooLarge { len: 25, max: 24 })
        ));
        // Max payload at every index of an empty ring fits.
        for start in (0..64u64).step_by(8) {
            let pos = 1_000_000 * 64 + start;
            let got = r.write_record(pos, pos, &[&[3u8; 24]]).unwrap();
            assert!(
                got.is_some(),
                "max record must fit in empty ring at idx {start}"
            );
        }
        // Two max records fill 64 bytes exactly when aligned at 0.
        let (_, t) = r.write_record(0, 0, &[&[3u8; 24]]).unwrap().unwrap();
        let (_, t) = r.write_record(0, t, &[&[4u8; 24]]).unwrap().unwrap();
        assert_eq!(t, 64);
        assert_eq!(r.write_record(0, t, &[]).unwrap(), None);
        // Needs padding (idx 40, 24 contiguous, record 32): 56 bytes, but only 40 free -> None,
        // although the record alone would fit.
        assert_eq!(r.write_record(16, 40, &[&[0u8; 24]]).unwrap(), None);
        assert_eq!(
            r.write_record(40, 40, &[&[0u8; 24]]).unwrap(),
            Some((64, 96))
        );
    }

    #[test]
    fn producer_rejects_impossible_head() {
        let mut b = Buf::new(64);
        let r = b.ring();
        assert!(r.write_record(8, 0, &[b"a"]).is_err()); // head ahead of tail
        assert!(r.write_record(0, 72, &[b"a"]).is_err()); // more than cap behind
        assert!(r.write_record(3, 8, &[b"a"]).is_err());
        assert!(r.write_record(0, 9, &[b"a"]).is_err());
    }

    #[test]
    fn consumer_rejects_bad_positions() {
        let mut b = Buf::new(64);
        let r = b.ring();
        let mut out = Vec::new();
        assert_eq!(
            what(r.read_record_copy(8, 0, &mut out).unwrap_err()),
            "producer position behind consumer or more than capacity ahead"
        );
        assert_eq!(
            what(r.read_record_copy(0, 72, &mut out).unwrap_err()),
            "producer position behind consumer or more than capacity ahead"
        );
        assert_eq!(
            what(r.read_record_copy(4, 8, &mut out).unwrap_err()),
            "consumer position not 8-byte aligned"
        );
        assert_eq!(
            what(r.read_record_copy(0, 12, &mut out).unwrap_err()),
            "producer position not 8-byte aligned"
        );
        // tail == head + cap is allowed (full ring).
        b.put(0, &header_bytes(24, TAG_RECORD));
        let r = b.ring();
        assert_eq!(r.read_record_copy(0, 64, &mut out).unwrap(), Some(32));
        assert!(out.len() == 24);
    }

    #[test]
    fn consumer_rejects_bad_headers() {
        let mut out = vec![9u8; 3];
        let cases: Vec<(usize, [u8; 8], u64, u64, &str)> = vec![
            (0, header_bytes(0, 0xdead), 0, 8, "unknown record tag"),
            (
                0,
                header_bytes(25, TAG_RECORD),
                0,
                64,
                "record length above maximum",
            ),
            (
                0,
                header_bytes(u32::MAX, TAG_RECORD),
                0,
                64,
                "record length above maximum",
            ),
            (
                0,
                header_bytes(8, TAG_RECORD),
                0,
                8,
                "record runs past the producer position",
            ),
            (
                0,
                header_bytes(1, TAG_RECORD),
                0,
                8,
                "record runs past the producer position",
            ),
            (
                48,
                header_bytes(16, TAG_RECORD),
                48,
                80,
                "record crosses the end of the data area",
            ),
            (
                48,
                header_bytes(0, TAG_PADDING),
                48,
                80,
                "padding does not end at the end of the data area",
            ),
            (
                48,
                header_bytes(8, TAG_PADDING),
                48,
                64,
                "padding not followed by a published record",
            ),
            (
                0,
                header_bytes(56, TAG_PADDING),
                0,
                64,
                "padding not followed by a published record",
            ),
        ];
        for (idx, hdr, head, tail, expected) in cases {
            let mut b = Buf::new(64);
            b.put(idx, &hdr);
            let r = b.ring();
            let e = r.read_record_copy(head, tail, &mut out).unwrap_err();
            assert_eq!(what(e), expected, "idx {idx} head {head} tail {tail}");
            assert!(r.has_record(head, tail).is_err());
            // SAFETY: nothing writes the buffer.
            assert!(unsafe { r.read_record_ref(head, tail) }.is_err());
            assert_eq!(out, [9u8; 3], "out untouched on error");
        }
        // Padding followed by padding.
        let mut b = Buf::new(64);
        b.put(48, &header_bytes(8, TAG_PADDING));
        b.put(0, &header_bytes(8, TAG_PADDING));
        let r = b.ring();
        assert_eq!(
            what(r.read_record_copy(48, 96, &mut out).unwrap_err()),
            "padding follows padding"
        );
        // Padding followed by an unknown tag.
        b.put(0, &header_bytes(8, 7));
        let r = b.ring();
        assert_eq!(
            what(r.read_record_copy(48, 96, &mut out).unwrap_err()),
            "unknown record tag"
        );
        // Padding followed by a record that runs past tail.
        b.put(0, &header_bytes(9, TAG_RECORD));
        let r = b.ring();
        assert_eq!(
            what(r.read_record_copy(48, 80, &mut out).unwrap_err()),
            "record runs past the producer position"
        );
        assert_eq!(r.read_record_copy(48, 88, &mut out).unwrap(), Some(88));
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn split_read_copies_prefix_and_rest() {
        let mut b = Buf::new(64);
        let r = b.ring();
        let (_, t) = r.write_record(0, 0, &[b"headbody!"]).unwrap().unwrap();
        let mut prefix = [0u8; 4];
        let mut rest = vec![7u8; 100];
        assert_eq!(
            r.read_record_split(0, t, &mut prefix, &mut rest).unwrap(),
            Some((t, 9))
        );
        assert_eq!((&prefix, &rest[..]), (b"head", &b"body!"[..]));
        // A record shorter than the prefix: only its bytes are written, `rest` is empty.
        let (_, t2) = r.write_record(t, t, &[b"ab"]).unwrap().unwrap();
        let mut prefix = [0u8; 4];
        assert_eq!(
            r.read_record_split(t, t2, &mut prefix, &mut rest).unwrap(),
            Some((t2, 2))
        );
        assert_eq!((&prefix, rest.len()), (b"ab\0\0", 0));
        assert_eq!(
            r.read_record_split(t2, t2, &mut prefix, &mut rest).unwrap(),
            None
        );
        // Corruption is reported and leaves both buffers untouched.
        b.put(24, &header_bytes(0, 0xdead));
        let r = b.ring();
        rest = vec![1];
        assert!(r.read_record_split(24, 32, &mut prefix, &mut rest).is_err());
        assert_eq!((&prefix, &rest[..]), (b"ab\0\0", &[1u8][..]));
    }

    #[test]
    fn positions_wrap_around_u64() {
        let mut b = Buf::new(64);
        let r = b.ring();
        let mut out = Vec::new();
        let mut head = u64::MAX - 7; // 8-aligned, index 56
        let mut tail = head;
        for i in 0..100u8 {
            let payload = vec![i; (i as usize * 7) % 25];
            let (_, t) = r.write_record(head, tail, &[&payload]).unwrap().unwrap();
            tail = t;
            let next = r.read_record_copy(head, tail, &mut out).unwrap().unwrap();
            assert_eq!(out, payload);
            head = next;
            assert_eq!(head, tail);
        }
        assert!(head < 100 * 64, "positions wrapped through zero");
    }
}
