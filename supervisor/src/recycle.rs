//! Payload buffers an embedder gives back ([`crate::Pool::recycle`]) so that later outcomes
//! reuse them instead of allocating.
//!
//! # Why
//!
//! Every outcome that carries a payload (a Noop echo, an Encode's envelope) owns a fresh
//! `Vec<u8>`: the supervisor copies the hound's completion out of shared memory into it before
//! validating (the hound may rewrite the ring at any time). When a burst of such payloads is
//! freed, glibc's malloc coalesces them at the top of the heap and, past its trim threshold
//! (128 KiB at start), gives the pages back to the kernel; above its mmap threshold a payload
//! is a mapping of its own. Either way the next payloads fault their pages in again and have
//! them zeroed. `hound-stress ipc` measured it on the batched shm row (`submit_batch` +
//! `recv_outcomes`, up to 32 outcomes freed at once): about 370 000 page faults for 131 072
//! echoes of 16 KiB, and at 256 KiB a throughput that fell from 25 000 to 10 000 msg/s in
//! some runs of one build, with 70 000 to 220 000 faults a run. Given back, the same buffers
//! go round and the faults stop.
//!
//! # What is kept
//!
//! Buffers are kept in power-of-two size classes from [`SMALLEST`] (exclusive: a smaller
//! payload comes from malloc's bins without touching the kernel) to [`LARGEST`] (a larger one
//! costs far more to produce than to allocate). Each class keeps at most [`CLASS_BYTES`] of
//! buffers (at least 2, at most 64), so the stash pins at most about 26 MiB, and only as much
//! as the embedder gave back. A buffer given back lands in the largest class its capacity
//! covers; one outside the range is dropped, as is one given back to a full class.
//!
//! A completion of `len` bytes takes a buffer of the class `len.next_power_of_two()`. Once
//! anything was given back, a completion whose class is empty gets a new buffer of the class's
//! full size, so that it lands in that class when it comes back: payloads then carry up to
//! twice their length in capacity. Before anything is given back, nothing changes: payloads
//! are allocated at their exact length, as they always were.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{bounded, Receiver, Sender};

/// Payloads of at most this many bytes are not served from the stash.
pub(crate) const SMALLEST: usize = 4 * 1024;
/// The largest class.
pub(crate) const LARGEST: usize = 4 * 1024 * 1024;
/// Bytes of buffers one class keeps at most (but at least 2 and at most 64 buffers).
pub(crate) const CLASS_BYTES: usize = 2 * 1024 * 1024;

/// One size class: a bounded lock-free queue (crossbeam's array channel) of empty buffers
/// whose capacity is at least the class's size.
struct Class {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

/// The stash: one [`Class`] per power of two in `2 * SMALLEST ..= LARGEST`.
pub(crate) struct PayloadStash {
    classes: Box<[Class]>,
    /// Set by the first buffer given back; from then on a completion whose class is empty gets
    /// a buffer of the class's full size.
    active: AtomicBool,
}

/// The class index of a buffer of `capacity` bytes: the largest class it covers, `None` when
/// it covers none (too small) or is larger than [`LARGEST`] allows.
fn class_of_capacity(capacity: usize) -> Option<usize> {
    if !(2 * SMALLEST..=2 * LARGEST).contains(&capacity) {
        return None;
    }
    let floor = usize::BITS - 1 - capacity.leading_zeros();
    let index = floor as usize - (2 * SMALLEST).trailing_zeros() as usize;
    Some(index.min(class_count() - 1))
}

/// The class index serving a completion of `len` bytes, `None` outside the served range.
fn class_of_len(len: usize) -> Option<usize> {
    if !(SMALLEST + 1..=LARGEST).contains(&len) {
        return None;
    }
    let ceil = len.next_power_of_two().trailing_zeros();
    Some(ceil as usize - (2 * SMALLEST).trailing_zeros() as usize)
}

/// The size of class `index`.
fn class_size(index: usize) -> usize {
    (2 * SMALLEST) << index
}

fn class_count() -> usize {
    (LARGEST.trailing_zeros() - (2 * SMALLEST).trailing_zeros()) as usize + 1
}

impl PayloadStash {
    /// An empty stash.
    pub(crate) fn new() -> Self {
        let classes = (0..class_count())
            .map(|i| {
                let (tx, rx) = bounded((CLASS_BYTES / class_size(i)).clamp(2, 64));
                Class { tx, rx }
            })
            .collect();
        Self {
            classes,
            active: AtomicBool::new(false),
        }
    }

    /// Keeps `buf` (emptied) in the largest class its capacity covers, if that class has room;
    /// drops it otherwise. Never blocks, never allocates.
    /// Any payload given back, kept or not, marks the embedder as one that recycles.
    pub(crate) fn put(&self, mut buf: Vec<u8>) {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::Relaxed);
        }
        let Some(i) = class_of_capacity(buf.capacity()) else {
            return;
        };
        buf.clear();
        let _ = self.classes[i].tx.try_send(buf);
    }

    /// Whether anything was ever given back (one load: the consumers ask before they look at
    /// the next record's length).
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// A buffer for a completion of `len` bytes: a kept one of its class, or a new one of the
    /// class's size (see the module doc). `None` for a length outside the served range, or
    /// before anything was given back.
    pub(crate) fn take_for(&self, len: usize) -> Option<Vec<u8>> {
        if !self.active() {
            return None;
        }
        let i = class_of_len(len)?;
        Some(
            self.classes[i]
                .rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(class_size(i))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_the_served_range() {
        assert_eq!(class_of_len(SMALLEST), None);
        assert_eq!(class_of_len(SMALLEST + 1), Some(0));
        assert_eq!(class_of_len(2 * SMALLEST), Some(0));
        assert_eq!(class_of_len(2 * SMALLEST + 1), Some(1));
        assert_eq!(class_of_len(LARGEST), Some(class_count() - 1));
        assert_eq!(class_of_len(LARGEST + 1), None);
        assert_eq!(class_of_capacity(2 * SMALLEST - 1), None);
        assert_eq!(class_of_capacity(2 * SMALLEST), Some(0));
        assert_eq!(class_of_capacity(4 * SMALLEST - 1), Some(0));
        assert_eq!(class_of_capacity(LARGEST + 5), Some(class_count() - 1));
        assert_eq!(class_of_capacity(2 * LARGEST + 1), None);
        // Every length's class has a size at least the length and below twice it.
        for len in [SMALLEST + 1, 5000, 16 * 1024, 65_537, 262_144, LARGEST] {
            let size = class_size(class_of_len(len).unwrap());
            assert!(size >= len && size < 2 * len, "{len} -> {size}");
        }
    }

    #[test]
    fn nothing_is_served_until_something_is_given_back() {
        let s = PayloadStash::new();
        assert!(s.take_for(100 * 1024).is_none());
        s.put(Vec::with_capacity(100)); // too small to keep, but the embedder recycles
        assert!(s.active());
        let b = s.take_for(100 * 1024).unwrap();
        assert_eq!(b.capacity(), 128 * 1024, "a new buffer of the class's size");
        assert!(
            s.take_for(SMALLEST).is_none(),
            "a small record takes no buffer"
        );
    }

    #[test]
    fn a_buffer_given_back_serves_its_class_and_classes_are_bounded() {
        let s = PayloadStash::new();
        let b = vec![7u8; 256 * 1024];
        let ptr = b.as_ptr();
        s.put(b);
        let again = s.take_for(200 * 1024).unwrap();
        assert_eq!(again.as_ptr(), ptr, "the kept buffer");
        assert!(again.is_empty());
        let keep = CLASS_BYTES / (256 * 1024);
        for _ in 0..keep + 5 {
            s.put(Vec::with_capacity(256 * 1024));
        }
        let kept: Vec<_> = (0..keep + 5)
            .map(|_| s.take_for(256 * 1024).unwrap())
            .collect();
        // The first `keep` come from the class, the rest are new (same class size).
        assert!(kept.iter().all(|b| b.capacity() == 256 * 1024));
        assert_eq!(s.classes[class_of_len(256 * 1024).unwrap()].rx.len(), 0);
    }
}
