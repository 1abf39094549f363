#![no_main]
//! Fuzzes the ring consumer over untrusted memory.
//!
//! Input: `[tail: u64 LE][head: u64 LE][ring bytes...]`. The ring bytes fill (a prefix of) a
//! 4096-byte data area; `read_record_copy` is then called repeatedly, advancing `head`, until
//! the ring is empty or reports corruption. It must never panic, and every record it returns
//! must respect the ring's bounds.

use houndpool_protocol::ring::{max_payload, record_size, RingMemory};

const CAP: usize = 4096;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&data[..8]);
    let tail = u64::from_le_bytes(word);
    word.copy_from_slice(&data[8..16]);
    let mut head = u64::from_le_bytes(word);

    // u64 storage keeps the data area 8-aligned, like a real mapping.
    let mut mem = vec![0u64; CAP / 8];
    let bytes = &data[16..];
    for (i, chunk) in bytes.chunks(8).take(CAP / 8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        mem[i] = u64::from_ne_bytes(w);
    }
    // SAFETY: `mem` holds CAP bytes, outlives `ring`, and nothing else accesses it meanwhile.
    let ring = match unsafe { RingMemory::new(mem.as_mut_ptr().cast(), CAP) } {
        Ok(r) => r,
        Err(_) => return,
    };

    let mut out = Vec::new();
    // Each record advances head by at least 8 and at most CAP bytes lie between head and tail,
    // so this terminates; the bound is a second guard.
    for _ in 0..=CAP / 8 {
        let before = tail.wrapping_sub(head);
        match ring.read_record_copy(head, tail, &mut out) {
            Ok(Some(next)) => {
                assert!(out.len() <= max_payload(CAP));
                let step = next.wrapping_sub(head);
                assert!(step >= record_size(out.len()) as u64 && step <= before);
                assert!(out.capacity() <= 2 * max_payload(CAP));
                head = next;
            }
            Ok(None) => {
                assert_eq!(head, tail);
                break;
            }
            Err(_) => break,
        }
    }
});
