//! THCS v1 envelope: golden bytes, verify-before-inflate, decompression-bomb guards,
//! truncation, and interoperability with gzip streams from other encoders.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flate2::Compression;
use houndpool_protocol::envelope::{self, HEADER_LEN, MAGIC, VERSION};
use houndpool_protocol::ProtocolError;
use sha2::{Digest, Sha256};

/// The exact 78 header bytes of `encode(b"hello houndpool", 6)`.
///
/// The hash field pins the compressed bytes, which depend on the deflate backend (the
/// workspace uses flate2's `zlib-rs`; miniz_oxide would produce other, equally valid bytes).
/// If the backend or its version changes this constant must be recomputed on purpose; readers
/// are unaffected because they never depend on the exact compressed bytes.
const HELLO_HEADER: [u8; HEADER_LEN] = {
    let fixed: [u8; 14] = [
        b'T', b'H', b'C', b'S', // magic
        0x00, 0x01, // version 1, big-endian
        0x00, 0x00, 0x00, 0x0f, // original size 15, big-endian
        0x00, 0x00, 0x00, 0x23, // compressed size 35, big-endian
    ];
    let hash = b"f6f86fb38e1ddffbf303beb67f895776b19089fb22b0a63700f04e52681dda95";
    let mut h = [0u8; HEADER_LEN];
    let mut i = 0;
    while i < 14 {
        h[i] = fixed[i];
        i += 1;
    }
    while i < HEADER_LEN {
        h[i] = hash[i - 14];
        i += 1;
    }
    h
};

/// Builds an envelope by hand (independently of the crate's encoder) around `gzip`.
fn hand_envelope(gzip: &[u8], original_size: u32, hash_of: &[u8]) -> Vec<u8> {
    let mut env = Vec::with_capacity(HEADER_LEN + gzip.len());
    env.extend_from_slice(b"THCS");
    env.extend_from_slice(&1u16.to_be_bytes());
    env.extend_from_slice(&original_size.to_be_bytes());
    env.extend_from_slice(&(gzip.len() as u32).to_be_bytes());
    env.extend_from_slice(hex::encode(Sha256::digest(hash_of)).as_bytes());
    env.extend_from_slice(gzip);
    env
}

fn correct_envelope(gzip: &[u8], original_size: u32) -> Vec<u8> {
    hand_envelope(gzip, original_size, gzip)
}

#[test]
fn golden_header_bytes_for_hello() {
    let env = envelope::encode(b"hello houndpool", 6).unwrap();
    assert_eq!(env.len(), HEADER_LEN + 35);
    assert_eq!(&env[..HEADER_LEN], &HELLO_HEADER[..]);
    assert_eq!(MAGIC, *b"THCS");
    assert_eq!(VERSION, 1);
    // The hash field is the lowercase hex SHA-256 of exactly the bytes after the header.
    assert_eq!(
        &env[14..HEADER_LEN],
        hex::encode(Sha256::digest(&env[HEADER_LEN..])).as_bytes()
    );
    // gzip member: magic, deflate, no flags, mtime 0, OS unknown (255).
    assert_eq!(&env[HEADER_LEN..HEADER_LEN + 4], &[0x1f, 0x8b, 0x08, 0x00]);
    assert_eq!(&env[HEADER_LEN + 4..HEADER_LEN + 8], &[0, 0, 0, 0]);
    assert_eq!(env[HEADER_LEN + 9], 0xff);
    let h = envelope::parse_header(&env).unwrap();
    assert_eq!((h.original_size, h.compressed_size), (15, 35));
    assert_eq!(envelope::decode(&env, 15).unwrap(), b"hello houndpool");
}

#[test]
fn wrong_hash_is_rejected_before_any_decompression() {
    // Not gzip at all: if anything tried to inflate it, the error would be EnvelopeInflate.
    let body = b"definitely not a gzip stream, not even the magic";
    let env = hand_envelope(body, 10, b"some other bytes");
    assert!(matches!(
        envelope::verify(&env),
        Err(ProtocolError::EnvelopeHashMismatch { .. })
    ));
    match envelope::decode(&env, 1 << 20) {
        Err(ProtocolError::EnvelopeHashMismatch { expected, actual }) => {
            assert_eq!(expected, hex::encode(Sha256::digest(b"some other bytes")));
            assert_eq!(actual, hex::encode(Sha256::digest(body)));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    // Control: with a correct hash the very same body reaches the inflater and fails there,
    // so the hash error above really came first.
    assert!(matches!(
        envelope::decode(&correct_envelope(body, 10), 1 << 20),
        Err(ProtocolError::EnvelopeInflate { .. })
    ));
}

const GIB: usize = 1 << 30;
const MIB: usize = 1 << 20;

/// A single gzip member that inflates to 1 GiB of zeros, built by streaming 1 MiB chunks into
/// a level-9 encoder (about 1 MB of output). Built once per test binary.
///
/// A 1 KiB envelope cannot be such a bomb: one DEFLATE layer expands at most about 1032:1
/// (a 258-byte match costs at least ~2 bits), so 1 GiB of output needs about 1 MB of stream.
fn gigabyte_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let zeros = vec![0u8; MIB];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::new(9));
        for _ in 0..GIB / MIB {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    })
}

#[test]
fn bomb_declaring_1_kib_is_stopped_after_one_byte_of_excess() {
    let bomb = gigabyte_bomb();
    assert!(bomb.len() < 2 * MIB, "bomb stream is {} bytes", bomb.len());
    let env = correct_envelope(bomb, 1024);
    assert!(envelope::verify(&env).is_ok());

    let started = Instant::now();
    let mut out = Vec::new();
    // The caller's limit is not what stops it: the declared size is.
    let err = envelope::decode_into(&env, usize::MAX, &mut out).unwrap_err();
    let elapsed = started.elapsed();
    match err {
        ProtocolError::EnvelopeSizeMismatch {
            declared,
            produced,
            exceeded,
        } => {
            assert_eq!(declared, 1024);
            assert!(exceeded);
            assert!(produced <= 1025, "produced {produced} bytes");
        }
        other => panic!("expected EnvelopeSizeMismatch, got {other:?}"),
    }
    assert!(out.is_empty());
    assert!(
        out.capacity() < 64 * 1024,
        "output buffer grew to {} bytes",
        out.capacity()
    );
    // Hashing ~1 MB and inflating ~1 KiB; inflating the whole GiB would take seconds. The
    // bound is generous because the test machine is shared and loaded.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn bomb_declaring_1_gib_is_refused_by_the_output_limit_without_inflating() {
    let bomb = gigabyte_bomb();
    let env = correct_envelope(bomb, GIB as u32);
    let started = Instant::now();
    let mut out = Vec::new();
    assert!(matches!(
        envelope::decode_into(&env, MIB, &mut out),
        Err(ProtocolError::EnvelopeOutputLimit {
            original_size,
            max_output,
        }) if original_size == GIB as u64 && max_output == MIB as u64
    ));
    assert!(out.capacity() == 0, "allocated {} bytes", out.capacity());
    assert!(started.elapsed() < Duration::from_secs(3));

    // The limit is checked before inflating: a body that is not gzip at all (correctly
    // hashed) gives the same limit error, not an inflate error.
    let garbage = correct_envelope(b"not gzip", GIB as u32);
    assert!(matches!(
        envelope::decode(&garbage, MIB),
        Err(ProtocolError::EnvelopeOutputLimit { .. })
    ));
}

#[test]
fn truncation_at_every_offset_is_a_typed_error() {
    let env = envelope::encode(b"hello houndpool, truncated at every offset", 6).unwrap();
    for n in 0..env.len() {
        let prefix = &env[..n];
        let expected_needed = if n < HEADER_LEN {
            HEADER_LEN
        } else {
            env.len()
        };
        for result in [
            envelope::parse_header(prefix).map(drop),
            envelope::verify(prefix).map(drop),
            envelope::decode(prefix, 1 << 20).map(drop),
        ] {
            match result {
                Err(ProtocolError::EnvelopeTruncated { len, needed }) => {
                    assert_eq!((len, needed), (n, expected_needed), "prefix of {n}");
                }
                other => panic!("prefix of {n}: expected EnvelopeTruncated, got {other:?}"),
            }
        }
    }
    assert!(envelope::decode(&env, 1 << 20).is_ok());
}

#[test]
fn the_gzip_part_decodes_with_a_plain_gzip_decoder() {
    let evidence = b"POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nuser=admin%27--&pass=x".repeat(30);
    for level in [0, 1, 6, 9] {
        let env = envelope::encode(&evidence, level).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&env[HEADER_LEN..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, evidence, "level {level}");
    }
}

#[test]
fn envelopes_around_other_encoders_streams_decode() {
    let evidence = b"GET /search?q=%3Cscript%3E HTTP/1.1\r\nHost: shop.example\r\n\r\n".repeat(40);
    let n = evidence.len() as u32;

    // flate2 at level 1, and a stored (level 0) stream whose blocks are not compressed.
    for level in [1, 0] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::new(level));
        gz.write_all(&evidence).unwrap();
        let stream = gz.finish().unwrap();
        if level == 0 {
            assert!(stream.len() > evidence.len(), "level 0 is not stored");
        }
        let env = correct_envelope(&stream, n);
        assert_eq!(envelope::decode(&env, evidence.len()).unwrap(), evidence);
    }

    // A header with the optional fields an origin-side tool might set: name, comment, mtime,
    // extra field, header CRC.
    let mut gz = flate2::GzBuilder::new()
        .filename("evidence.bin")
        .comment("captured")
        .mtime(1_700_000_000)
        .extra(vec![1, 2, 3, 4])
        .write(Vec::new(), Compression::new(5));
    gz.write_all(&evidence).unwrap();
    let env = correct_envelope(&gz.finish().unwrap(), n);
    assert_eq!(envelope::decode(&env, evidence.len()).unwrap(), evidence);

    // GNU gzip 1.x output, captured once: `printf 'hello from gnu gzip\n' | gzip -9 -n`.
    const GNU_GZIP_N: [u8; 40] = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9,
        0x57, 0x48, 0x2b, 0xca, 0xcf, 0x55, 0x48, 0xcf, 0x2b, 0x55, 0x48, 0xaf, 0xca, 0x2c, 0xe0,
        0x02, 0x00, 0xf8, 0xf9, 0x22, 0x09, 0x14, 0x00, 0x00, 0x00,
    ];
    let env = correct_envelope(&GNU_GZIP_N, 20);
    assert_eq!(
        envelope::decode(&env, 20).unwrap(),
        b"hello from gnu gzip\n"
    );

    // GNU gzip with a file name and mtime: `gzip -c -1 evidence.txt`.
    const GNU_GZIP_NAMED: [u8; 60] = [
        0x1f, 0x8b, 0x08, 0x08, 0x25, 0x7d, 0x93, 0x65, 0x04, 0x03, 0x65, 0x76, 0x69, 0x64, 0x65,
        0x6e, 0x63, 0x65, 0x2e, 0x74, 0x78, 0x74, 0x00, 0xcb, 0x4b, 0xcc, 0x4d, 0x4d, 0x51, 0xc8,
        0x4d, 0xcd, 0x4d, 0x4a, 0x2d, 0x52, 0x48, 0x2b, 0xca, 0xcf, 0x55, 0x48, 0xcf, 0x2b, 0x55,
        0x48, 0xaf, 0xca, 0x2c, 0xe0, 0x02, 0x00, 0xd8, 0x65, 0x0b, 0xf5, 0x1b, 0x00, 0x00, 0x00,
    ];
    let env = correct_envelope(&GNU_GZIP_NAMED, 27);
    assert_eq!(
        envelope::decode(&env, 27).unwrap(),
        b"named member from gnu gzip\n"
    );
}

#[test]
fn evidence_over_four_gib_is_refused_before_compressing() {
    let len = u32::MAX as usize + 1;
    let layout = std::alloc::Layout::array::<u8>(len).unwrap();
    // calloc-backed: the kernel maps zero pages lazily, so this reserves address space only
    // (nothing is touched because the length is checked first). Skip where it cannot.
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        eprintln!("skipped: cannot reserve 4 GiB of address space");
        return;
    }
    // SAFETY: `ptr` was just allocated by the global allocator with exactly `layout` (len
    // bytes, align 1) and alloc_zeroed initialised every byte; the Vec takes ownership.
    let evidence = unsafe { Vec::from_raw_parts(ptr, len, len) };
    let started = Instant::now();
    let mut out = vec![1u8; 16];
    assert!(matches!(
        envelope::encode_into(&evidence, 6, &mut out),
        Err(ProtocolError::EvidenceTooLarge { len: l }) if l == len as u64
    ));
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(1), "it compressed");
}
