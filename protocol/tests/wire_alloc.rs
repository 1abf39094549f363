//! Decoding a body that announces a 2^40-byte string or a 2^40-element sequence is refused
//! without allocating anything near that size. A counting global allocator records the largest
//! single allocation made while decoding.
//!
//! This file holds a single test so no other test allocates concurrently.

use houndpool_protocol::codec;
use houndpool_protocol::control::{Message, MAX_CONTROL_BODY};
use houndpool_protocol::frame::write_frame;
use houndpool_protocol::frame::MessageKind;
use houndpool_protocol::{ProtocolError, HOUND_PROTOCOL_VERSION};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call unchanged to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Largest single allocation made by `f`.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    let r = f();
    (r, LARGEST.load(Ordering::SeqCst))
}

const HUGE: u64 = 1 << 40;
const MIB: usize = 1 << 20;

fn datagram(kind: MessageKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(kind, body, &mut out).unwrap();
    out
}

fn assert_malformed(r: Result<Message, ProtocolError>) {
    assert!(
        matches!(r, Err(ProtocolError::MalformedBody { .. })),
        "{r:?}"
    );
}

#[test]
fn announced_lengths_do_not_drive_allocation() {
    // Fatal { message } announcing a 2^40-byte string: refused by the limit before any buffer.
    let fatal = datagram(MessageKind::Fatal, &HUGE.to_le_bytes());
    let (r, largest) = largest_allocation(|| Message::from_datagram(&fatal));
    assert_malformed(r);
    assert!(largest < 4096, "largest allocation {largest} bytes");

    // Ready whose sandbox report announces 2^40 layers: message sequences reserve nothing
    // up front, so the input simply runs out.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend(HOUND_PROTOCOL_VERSION.to_le_bytes());
    body.extend(HUGE.to_le_bytes());
    let ready = datagram(MessageKind::Ready, &body);
    let (r, largest) = largest_allocation(|| Message::from_datagram(&ready));
    assert_malformed(r);
    assert!(largest < 4096, "largest allocation {largest} bytes");

    // Same for a Setup whose sandbox policy announces 2^40 (layer, mode) pairs, with its
    // fixed-size prefix present: version, limits, ColdTarget::None.
    // (This build's version, as a real Setup carries.)
    let mut body = HOUND_PROTOCOL_VERSION.to_le_bytes().to_vec();
    body.extend([0u8; 25 + 4]);
    body.extend(HUGE.to_le_bytes());
    let setup = datagram(MessageKind::Setup, &body);
    let (r, largest) = largest_allocation(|| Message::from_datagram(&setup));
    assert_malformed(r);
    assert!(largest < 4096, "largest allocation {largest} bytes");
    // With one honest pair and the tuning it decodes, so the case above failed on the length.
    let mut body = HOUND_PROTOCOL_VERSION.to_le_bytes().to_vec();
    body.extend([0u8; 25 + 4]);
    body.extend(1u64.to_le_bytes());
    body.extend([0u8; 8 + 8 + 2 + 4 + 4]);
    assert!(Message::from_datagram(&datagram(MessageKind::Setup, &body)).is_ok());

    // The codec itself, for generic types: a string is never allocated beyond the input; a
    // plain serde Vec reserves at most serde's 1 MiB cap, even with an unbounded limit.
    let announce = HUGE.to_le_bytes();
    let limit = u64::from(MAX_CONTROL_BODY);
    let (r, largest) = largest_allocation(|| codec::decode::<Vec<u8>>("v", &announce, limit));
    assert!(r.is_err());
    assert!(largest <= MIB, "largest allocation {largest} bytes");
    let (r, largest) = largest_allocation(|| codec::decode::<String>("s", &announce, u64::MAX));
    assert!(r.is_err());
    assert!(largest < 4096, "largest allocation {largest} bytes");
    let (r, largest) = largest_allocation(|| codec::decode::<Vec<u64>>("v", &announce, u64::MAX));
    assert!(r.is_err());
    assert!(largest <= MIB, "largest allocation {largest} bytes");
}
