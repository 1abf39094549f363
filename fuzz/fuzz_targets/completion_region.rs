#![no_main]
//! Fuzzes everything a hound writes into its completion region through the real
//! supervisor-side reader (`CompletionReader` over a real sealed memfd region pair).
//!
//! Input layout (missing bytes are zero):
//! `[0..32)` the header's first 32 bytes (magic, version, reserved, capacity copy);
//! `[32..40)` completion tail; `[40..44)` the hound's sleeping flag; `[44..48)` state;
//! `[48..56)` heartbeat; `[56..64)` jobs done; `[64..72)` current job; `[72..80)` a second
//! tail, written after the first pass (a hound moving its tail under the reader);
//! `[80..)` the ring's data area. A tail whose first byte is even is taken as a small
//! 8-aligned position (its next two bytes, low 3 bits cleared), so the fuzzer reaches valid
//! records quickly; an odd first byte takes the next 7 bytes raw (any value a hound can
//! write).
//!
//! Each pass does what the collector does: `status`, `has_pending`, then `pop` with the
//! collector's budget, parsing every record as the collector does (`CompletionHeader::parse`,
//! then the body as an envelope header, an evacuate receipt, or an erase byte). The reader
//! must never panic, and every record it returns must fit the ring.

use std::fs::File;
use std::os::unix::fs::FileExt;

use houndpool_protocol::envelope;
use houndpool_protocol::job::{CompletionHeader, EvacuateReceipt, JobKind};
use houndpool_protocol::region::{offsets, RegionLayout, SupervisorRegions, REGION_HEADER_LEN};

const CAP: usize = 4096;
/// The collector's per-hound budget per pass (supervisor/src/collector/mod.rs).
const COLLECT_BUDGET: usize = 256;

fn field(data: &[u8], from: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    if from < data.len() {
        let n = (data.len() - from).min(len);
        v[..n].copy_from_slice(&data[from..from + n]);
    }
    v
}

/// A tail value from 8 input bytes (see the module docs).
fn tail(b: &[u8]) -> [u8; 8] {
    if b[0].is_multiple_of(2) {
        let v = u64::from(u16::from_le_bytes([b[1], b[2]]) & !7);
        v.to_le_bytes()
    } else {
        let mut w = [0u8; 8];
        w[..7].copy_from_slice(&b[1..8]);
        w
    }
}

fn pass(reader: &mut houndpool_protocol::region::CompletionReader, out: &mut Vec<u8>) {
    let _ = reader.status();
    let _ = reader.has_pending();
    for _ in 0..COLLECT_BUDGET {
        match reader.pop(out) {
            Ok(true) => {
                assert!(out.len() <= houndpool_protocol::ring::max_payload(CAP));
                let Ok((hdr, body)) = CompletionHeader::parse(out) else {
                    return;
                };
                match hdr.kind {
                    JobKind::Encode => {
                        let _ = envelope::parse_header(body);
                    }
                    JobKind::Evacuate => {
                        let _ = EvacuateReceipt::parse(body);
                    }
                    JobKind::Erase => {
                        let _ = matches!(body, [0] | [1]);
                    }
                    _ => {}
                }
            }
            Ok(false) | Err(_) => return,
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let layout = RegionLayout {
        request_capacity: CAP,
        completion_capacity: CAP,
    };
    let Ok(regions) = SupervisorRegions::create(layout, "houndpool-fuzz") else {
        return;
    };
    // The hound's view: a writable handle on the completion memfd.
    let Ok(cmp) = regions.completion_fd().try_clone_to_owned() else {
        return;
    };
    let cmp = File::from(cmp);
    let (_writer, mut reader) = regions.split();

    let put = |off: usize, bytes: &[u8]| {
        let _ = cmp.write_all_at(bytes, off as u64);
    };
    put(0, &field(data, 0, 32));
    put(offsets::CMP_TAIL, &tail(&field(data, 32, 8)));
    put(offsets::CMP_HOUND_SLEEPING, &field(data, 40, 4));
    put(offsets::CMP_STATE, &field(data, 44, 4));
    put(offsets::CMP_HEARTBEAT, &field(data, 48, 8));
    put(offsets::CMP_JOBS_DONE, &field(data, 56, 8));
    put(offsets::CMP_CURRENT_JOB, &field(data, 64, 8));
    if data.len() > 80 {
        let ring = &data[80..];
        put(REGION_HEADER_LEN, &ring[..ring.len().min(CAP)]);
    }
    let mut out = Vec::new();
    pass(&mut reader, &mut out);
    put(offsets::CMP_TAIL, &tail(&field(data, 72, 8)));
    pass(&mut reader, &mut out);
});
