#![no_main]
//! Envelopes through every reader: parse_header, verify and decode with a 1 MiB output limit.
//! None of them may panic, and their verdicts must agree.
//!
//! Random bytes almost never carry a correct SHA-256 of their own tail, so without help the
//! fuzzer stops at the hash check and never reaches inflation. The first input byte therefore
//! chooses how the rest becomes an envelope:
//! - `0`: as is (header parsing and the hash check on arbitrary bytes);
//! - `1`: the header is fixed up — magic, version, compressed size and the SHA-256 of the
//!   compressed bytes are made right, the declared original size is kept from the input — so
//!   verify passes and inflation plus the bomb guard (declared size vs. real output, 1 MiB
//!   limit) see arbitrary deflate data;
//! - `2`: as `1`, with a fixed gzip member header (no name, no mtime) before the fuzzed bytes,
//!   so the deflate decoder itself is reached at once.

use houndpool_protocol::envelope::{self, HEADER_LEN};
use sha2::{Digest, Sha256};

/// The 10-byte gzip member header flate2 writes: magic, deflate, no flags, mtime 0, XFL 0,
/// OS 255.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// Makes `bytes` a well-formed header (magic, version, sizes, hash) over its own tail; the
/// declared original size (bytes 6..10) stays whatever the input said.
fn fix_up(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() < HEADER_LEN {
        bytes.resize(HEADER_LEN, 0);
    }
    bytes[0..4].copy_from_slice(&envelope::MAGIC);
    bytes[4..6].copy_from_slice(&envelope::VERSION.to_be_bytes());
    let compressed = (bytes.len() - HEADER_LEN) as u32;
    bytes[10..14].copy_from_slice(&compressed.to_be_bytes());
    let digest = Sha256::digest(&bytes[HEADER_LEN..]);
    bytes[14..HEADER_LEN].copy_from_slice(hex::encode(digest).as_bytes());
    bytes
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let data = match mode % 3 {
        0 => rest.to_vec(),
        1 => fix_up(rest.to_vec()),
        _ => {
            // Header fields from the first 14 input bytes, then gzip header, then the rest.
            let split = rest.len().min(14);
            let mut v = rest[..split].to_vec();
            v.resize(HEADER_LEN, 0);
            v.extend_from_slice(&GZIP_HEADER);
            v.extend_from_slice(&rest[split..]);
            fix_up(v)
        }
    };
    let parsed = envelope::parse_header(&data);
    let verified = envelope::verify(&data);
    let decoded = envelope::decode(&data, 1 << 20);
    // Each stage only adds checks to the previous one.
    if parsed.is_err() {
        assert!(verified.is_err());
    }
    if verified.is_err() {
        assert!(decoded.is_err());
    }
    // A fixed-up header always parses and verifies: the fuzzer is past the hash.
    if mode % 3 != 0 {
        assert!(verified.is_ok(), "fixed-up envelope refused: {verified:?}");
    }
    if let Ok(out) = decoded {
        let header = parsed.expect("decode succeeded, so the header parsed");
        assert_eq!(out.len(), header.original_size as usize);
        assert!(out.len() <= 1 << 20);
    }
});
