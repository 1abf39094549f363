//! The supervisor's completion consumer against a hostile hound: a real region pair in one
//! process; the "hound" is this test writing arbitrary bytes into its writable mapping of the
//! completion region (data, cmp_tail, and the rest of the header), interleaved with valid
//! records. `CompletionReader` must only ever return a bounded payload, empty, or
//! `RingCorrupt` — no panic, no hang — and while the ring is clean it must return exactly the
//! valid records. The supervisor's request free space must not depend on anything the hound
//! writes.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use fastrand::Rng;
use houndpool_protocol::region::{offsets, HoundRegions, RegionLayout, SupervisorRegions};
use houndpool_protocol::ring::{max_payload, record_size, TAG_PADDING, TAG_RECORD};
use houndpool_protocol::ProtocolError;

const CMP_CAP: usize = 4096;
const REQ_CAP: usize = 4096;
const ITERATIONS: usize = 100_000;

fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid borrowed fd; touches no memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    assert!(r >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(r) }
}

/// Raw shared mapping of a whole region (the hostile hound's view, or a read-only peek).
struct Raw {
    ptr: *mut u8,
    len: usize,
}
impl Raw {
    fn map(fd: BorrowedFd<'_>, len: usize, write: bool) -> Self {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh kernel-chosen mapping; nothing existing is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Self { ptr: p.cast(), len }
    }
    /// Volatile byte write (the supervisor reads this memory concurrently in principle).
    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: in bounds (asserted), writable mapping.
            unsafe { self.ptr.add(off + i).write_volatile(*b) };
        }
    }
    fn read_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: in bounds, 8-aligned (page-aligned mapping), readable.
        unsafe { self.ptr.add(off).cast::<u64>().read_volatile() }
    }
}
impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[test]
fn completion_reader_survives_hostile_hound() {
    let layout = RegionLayout {
        request_capacity: REQ_CAP,
        completion_capacity: CMP_CAP,
    };
    let sup = SupervisorRegions::create(layout, "hp-hostile").unwrap();
    // A genuine hound mapping too (validation passes, then it is abused).
    let hound = HoundRegions::map(dup(sup.request_fd()), dup(sup.completion_fd())).unwrap();
    let cmp = Raw::map(sup.completion_fd(), 4096 + CMP_CAP, true);
    let req_view = Raw::map(sup.request_fd(), 4096 + REQ_CAP, false);
    let (_rr, mut honest_cw, _st) = hound.split();
    let (mut rw, mut cr) = sup.split();

    let max = max_payload(CMP_CAP);
    let data = 4096usize;
    let mut rng = Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();

    // The test-hound's own producer position (may be garbage after corruption).
    let mut hound_tail: u64 = 0;
    // Records expected while the ring is clean (no corruption since the last repair).
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    let mut clean = true;
    let mut stats = [0usize; 4]; // ok(true), ok(false), corrupt, clean records verified

    // Supervisor request side model: free space depends only on pushes and releases.
    let mut req_pushed: VecDeque<u64> = VecDeque::new(); // record ends not yet released
    let mut req_used: u64 = 0;
    let mut req_released: u64 = 0;

    let started = Instant::now();
    for it in 0..ITERATIONS {
        match rng.u64(..100) {
            // Valid record written by hand at the test-hound's tail.
            0..=34 => {
                let head = req_view.read_u64(offsets::REQ_CMP_HEAD);
                let len = if rng.u64(..10) == 0 {
                    max
                } else {
                    rng.u64(..200) as usize
                };
                let payload: Vec<u8> = (0..len).map(|i| (it + i) as u8).collect();
                let size = record_size(len) as u64;
                let idx = (hound_tail % CMP_CAP as u64) as usize;
                let contiguous = (CMP_CAP - idx) as u64;
                let pad = if size > contiguous { contiguous } else { 0 };
                let used = hound_tail.wrapping_sub(head);
                if used <= CMP_CAP as u64
                    && hound_tail.is_multiple_of(8)
                    && used + pad + size <= CMP_CAP as u64
                {
                    if pad > 0 {
                        let mut h = ((pad - 8) as u32).to_le_bytes().to_vec();
                        h.extend_from_slice(&TAG_PADDING.to_le_bytes());
                        cmp.write(data + idx, &h);
                    }
                    let start = hound_tail + pad;
                    let at = data + (start % CMP_CAP as u64) as usize;
                    let mut rec = (len as u32).to_le_bytes().to_vec();
                    rec.extend_from_slice(&TAG_RECORD.to_le_bytes());
                    rec.extend_from_slice(&payload);
                    cmp.write(at, &rec);
                    hound_tail = start + size;
                    cmp.write(offsets::CMP_TAIL, &hound_tail.to_le_bytes());
                    if clean {
                        expected.push_back(payload);
                    }
                }
            }
            // Random bytes anywhere in the data area.
            35..=49 => {
                let n = 1 + rng.u64(..64) as usize;
                let off = rng.u64(..(CMP_CAP - n) as u64) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.u64(..) as u8).collect();
                cmp.write(data + off, &bytes);
                clean = false;
            }
            // A plausible but wrong header at the consumer's next record.
            50..=59 => {
                let head = req_view.read_u64(offsets::REQ_CMP_HEAD);
                let idx = (head % CMP_CAP as u64) as usize;
                let len = match rng.u64(..4) {
                    0 => rng.u64(..) as u32,
                    1 => (max + 1 + rng.u64(..64) as usize) as u32,
                    2 => rng.u64(..CMP_CAP as u64) as u32,
                    _ => (CMP_CAP - idx - 8) as u32,
                };
                let tag = match rng.u64(..3) {
                    0 => TAG_RECORD,
                    1 => TAG_PADDING,
                    _ => rng.u64(..) as u32,
                };
                let mut h = len.to_le_bytes().to_vec();
                h.extend_from_slice(&tag.to_le_bytes());
                cmp.write(data + idx, &h);
                clean = false;
            }
            // Random cmp_tail: garbage, unaligned, behind, far ahead, or just past head.
            60..=74 => {
                let head = req_view.read_u64(offsets::REQ_CMP_HEAD);
                let t = match rng.u64(..5) {
                    0 => rng.u64(..),
                    1 => head.wrapping_add(1 + rng.u64(..7)),
                    2 => head.wrapping_sub(8 * (1 + rng.u64(..4))),
                    3 => head.wrapping_add(CMP_CAP as u64 + 8 * rng.u64(..8)),
                    _ => head.wrapping_add(8 * rng.u64(..CMP_CAP as u64 / 8 + 1)),
                };
                cmp.write(offsets::CMP_TAIL, &t.to_le_bytes());
                hound_tail = t;
                clean = false;
            }
            // Scribble the rest of the completion header (capacity copy, magic, flags...).
            75..=79 => {
                let off = rng.u64(..4096 - 8) as usize;
                if off.abs_diff(offsets::CMP_TAIL) >= 8 {
                    cmp.write(off, &rng.u64(..).to_le_bytes());
                }
            }
            // Repair: the hound resynchronises its tail with the supervisor's head.
            80..=87 => {
                let head = req_view.read_u64(offsets::REQ_CMP_HEAD);
                cmp.write(offsets::CMP_TAIL, &head.to_le_bytes());
                hound_tail = head;
                expected.clear();
                clean = true;
            }
            // The honest CompletionWriter (its private tail may disagree with reality).
            88..=91 => {
                let r = honest_cw.try_push(&[b"honest"]);
                assert!(
                    matches!(r, Ok(_) | Err(ProtocolError::RingCorrupt { .. })),
                    "{r:?}"
                );
                if matches!(r, Ok(true)) {
                    clean = false; // it wrote where *it* thinks the tail is
                }
            }
            // Supervisor request side: push or release; free space follows the model exactly.
            _ => {
                if rng.u64(..2) == 0 {
                    let len = rng.u64(..300) as usize;
                    // Expected from the supervisor's own history only.
                    let tail = req_released + req_used;
                    let size = record_size(len) as u64;
                    let contiguous = REQ_CAP as u64 - tail % REQ_CAP as u64;
                    let pad = if size > contiguous { contiguous } else { 0 };
                    let fits = req_used + pad + size <= REQ_CAP as u64;
                    match rw.try_push(&[&vec![1u8; len]]).unwrap() {
                        Some(p) => {
                            assert!(fits, "writer used space that is not free");
                            assert_eq!((p.start, p.end), (tail + pad, tail + pad + size));
                            req_used += pad + size;
                            req_pushed.push_back(p.end);
                        }
                        None => assert!(!fits, "writer refused space that is free"),
                    }
                } else if let Some(end) = req_pushed.pop_front() {
                    cr.release_requests(end);
                    req_used -= end - req_released;
                    req_released = end;
                }
                assert_eq!(rw.free_bytes() as u64, REQ_CAP as u64 - req_used);
            }
        }

        // The supervisor looks.
        let pending = cr.has_pending();
        assert!(
            matches!(pending, Ok(_) | Err(ProtocolError::RingCorrupt { .. })),
            "{pending:?}"
        );
        let sentinel = vec![0xee_u8; 3];
        out.clone_from(&sentinel);
        match cr.pop(&mut out) {
            Ok(true) => {
                stats[0] += 1;
                assert!(out.len() <= max, "payload {} > max {max}", out.len());
                assert!(out.capacity() <= max.max(sentinel.capacity()) * 2);
                assert!(
                    matches!(pending, Ok(true)),
                    "has_pending disagreed with pop"
                );
                if clean {
                    let want = expected
                        .pop_front()
                        .expect("clean ring yielded an extra record");
                    assert_eq!(
                        out, want,
                        "clean ring returned wrong bytes at iteration {it}"
                    );
                    stats[3] += 1;
                }
            }
            Ok(false) => {
                stats[1] += 1;
                assert_eq!(out, sentinel, "out touched without a record");
                assert!(matches!(pending, Ok(false)));
                if clean {
                    assert!(expected.is_empty(), "clean ring lost records");
                }
            }
            Err(ProtocolError::RingCorrupt { .. }) => {
                stats[2] += 1;
                assert_eq!(out, sentinel, "out touched on error");
                assert!(pending.is_err());
                assert!(!clean, "a clean ring reported corruption at iteration {it}");
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
        let _ = cr.status(); // any values, never a panic
        let _ = rw.hound_sleeping();
    }
    let elapsed = started.elapsed();
    eprintln!("hostile: {ITERATIONS} iterations in {elapsed:?}; ok(true) {}, ok(false) {}, corrupt {}, clean verified {}",
        stats[0], stats[1], stats[2], stats[3]);
    // Every outcome was exercised substantially.
    assert!(
        stats[0] > 5_000 && stats[1] > 5_000 && stats[2] > 5_000,
        "{stats:?}"
    );
    assert!(stats[3] > 2_000, "{stats:?}");
}
