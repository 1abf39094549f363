//! Model test of the ring arithmetic: random interleavings of push and pop with random payload
//! sizes on small rings, checked against a `VecDeque` of payloads and an independent account of
//! the bytes each record (plus padding) occupies. Positions start anywhere, including just
//! below `u64::MAX`, so indices wrap many times and positions wrap through zero.

use std::collections::VecDeque;

use houndpool_protocol::ring::{max_payload, record_size, RingMemory, RECORD_HEADER_LEN};
use houndpool_protocol::ProtocolError;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[derive(Debug, Clone)]
enum Op {
    /// Push a payload of this many bytes (taken modulo `max_payload + 2`, so "too large" occurs).
    Push(usize),
    /// Push a payload of exactly the maximum size.
    PushMax,
    /// Pop one record.
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => any::<usize>().prop_map(Op::Push),
        1 => Just(Op::PushMax),
        5 => Just(Op::Pop),
    ]
}

fn start_pos() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (0u64..1 << 20).prop_map(|x| x * 8),
        (0u64..4096).prop_map(|x| u64::MAX - 7 - x * 8),
        any::<u64>().prop_map(|x| x & !7),
    ]
}

/// Payload bytes that identify the record (sequence number and offset).
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31) as usize + i * 7) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn ring_matches_model(
        cap_log in 6u32..=12,
        start in start_pos(),
        ops in prop::collection::vec(op(), 1..400),
        split in any::<prop::sample::Index>(),
    ) {
        let cap = 1usize << cap_log;
        let max = max_payload(cap);
        let mut mem = vec![0u64; cap / 8];
        // SAFETY: `mem` holds `cap` bytes and outlives `ring`; one thread.
        let ring = unsafe { RingMemory::new(mem.as_mut_ptr().cast(), cap) }.unwrap();

        let mut head = start;
        let mut tail = start;
        // Model: payloads in order, each with the bytes it occupies (padding + record).
        let mut model: VecDeque<(Vec<u8>, u64)> = VecDeque::new();
        let mut used: u64 = 0;
        let mut seq = 0u64;
        let mut out = Vec::new();
        for op in &ops {
            match op {
                Op::Push(_) | Op::PushMax => {
                    let len = match op { Op::Push(n) => n % (max + 2), _ => max };
                    let p = payload(seq, len);
                    // Split the payload into two parts at a random point.
                    let at = split.index(len + 1);
                    let res = ring.write_record(head, tail, &[&p[..at], &p[at..]]);
                    if len > max {
                        let too_large = matches!(
                            res,
                            Err(ProtocolError::RecordTooLarge { len: l, max: m }) if l == len && m == max
                        );
                        prop_assert!(too_large);
                        continue;
                    }
                    // Independent expectation: a record never crosses the end of the data area.
                    let size = record_size(len) as u64;
                    let idx = tail % cap as u64;
                    let contiguous = cap as u64 - idx;
                    let pad = if size <= contiguous { 0 } else { contiguous };
                    let fits = used + pad + size <= cap as u64;
                    match res.unwrap() {
                        Some((rstart, new_tail)) => {
                            prop_assert!(fits, "accepted a record that does not fit");
                            prop_assert_eq!(rstart, tail.wrapping_add(pad));
                            prop_assert_eq!(new_tail, rstart.wrapping_add(size));
                            prop_assert_eq!(rstart % 8, 0);
                            prop_assert!(rstart % cap as u64 + size <= cap as u64);
                            tail = new_tail;
                            used += pad + size;
                            model.push_back((p, pad + size));
                            seq += 1;
                        }
                        None => {
                            prop_assert!(!fits, "refused a record that fits");
                            prop_assert!(!model.is_empty(), "an empty ring accepts every record <= max");
                        }
                    }
                }
                Op::Pop => {
                    prop_assert_eq!(ring.has_record(head, tail).unwrap(), !model.is_empty());
                    // SAFETY: nothing writes `mem` while the borrow lives.
                    let by_ref = unsafe { ring.read_record_ref(head, tail) }
                        .unwrap()
                        .map(|(s, p, n)| (s, p.to_vec(), n));
                    match ring.read_record_copy(head, tail, &mut out).unwrap() {
                        Some(next) => {
                            let (expected, occupied) = model.pop_front().unwrap();
                            prop_assert_eq!(&out, &expected);
                            prop_assert_eq!(next.wrapping_sub(head), occupied);
                            let (s, p, n) = by_ref.unwrap();
                            prop_assert_eq!(n, next);
                            prop_assert_eq!(p, expected);
                            prop_assert_eq!(next.wrapping_sub(s), record_size(out.len()) as u64);
                            head = next;
                            used -= occupied;
                        }
                        None => {
                            prop_assert!(model.is_empty());
                            prop_assert!(by_ref.is_none());
                            prop_assert_eq!(head, tail);
                        }
                    }
                }
            }
            prop_assert_eq!(tail.wrapping_sub(head), used);
            prop_assert!(used <= cap as u64);
        }
        // Drain: everything that went in comes out, in order.
        while let Some((expected, occupied)) = model.pop_front() {
            let next = ring.read_record_copy(head, tail, &mut out).unwrap().unwrap();
            prop_assert_eq!(&out, &expected);
            prop_assert_eq!(next.wrapping_sub(head), occupied);
            head = next;
        }
        prop_assert_eq!(ring.read_record_copy(head, tail, &mut out).unwrap(), None);
        prop_assert_eq!(head, tail);
    }
}

/// Deterministic sweep: fill to full with records of every size at every start index, checking
/// that a full ring refuses and frees exactly what was consumed.
#[test]
fn fill_drain_every_size_every_index() {
    for cap in [64usize, 128, 256] {
        let max = max_payload(cap);
        let mut mem = vec![0u64; cap / 8];
        // SAFETY: `mem` holds `cap` bytes and outlives `ring`.
        let ring = unsafe { RingMemory::new(mem.as_mut_ptr().cast(), cap) }.unwrap();
        let mut out = Vec::new();
        for len in 0..=max {
            for start_idx in (0..cap as u64).step_by(8) {
                let start = u64::MAX - (cap as u64 * 3) + 1 + start_idx; // near wrap
                let (mut head, mut tail) = (start, start);
                let mut pushed = 0u64;
                while let Some((_, t)) = ring.write_record(head, tail, &[&vec![0xab; len]]).unwrap()
                {
                    tail = t;
                    pushed += 1;
                    assert!(tail.wrapping_sub(head) <= cap as u64);
                }
                assert!(pushed >= 1, "empty ring took nothing: cap {cap} len {len}");
                // Full: the rest is smaller than one record plus the padding it would need.
                let free = cap as u64 - tail.wrapping_sub(head);
                let idx = tail % cap as u64;
                let size = record_size(len) as u64;
                let need = if size <= cap as u64 - idx {
                    size
                } else {
                    cap as u64 - idx + size
                };
                assert!(free < need);
                let mut popped = 0u64;
                while let Some(n) = ring.read_record_copy(head, tail, &mut out).unwrap() {
                    assert_eq!(out, vec![0xab; len]);
                    assert!(out.len() + RECORD_HEADER_LEN <= cap / 2);
                    head = n;
                    popped += 1;
                }
                assert_eq!((popped, head), (pushed, tail));
            }
        }
    }
}
