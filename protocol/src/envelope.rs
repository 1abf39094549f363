//! The THCS version 1 evidence envelope, byte-compatible with the origin project:
//! ```text
//! offset size  field
//! 0      4     magic "THCS"
//! 4      2     version, u16 big-endian = 1
//! 6      4     original size, u32 big-endian
//! 10     4     compressed size, u32 big-endian
//! 14     64    SHA-256 of the compressed bytes, lowercase hex ASCII
//! 78     N     gzip stream of the original bytes
//! ```
//! Reading verifies length and hash before any decompression; decompression stops at the
//! recorded original size (bomb guard).
//!
//! Reading order, enforced by [`decode_into`]:
//! 1. [`parse_header`]: at least [`HEADER_LEN`] bytes, magic, version, a well-formed hash field
//!    (64 lowercase hex digits) and `compressed size == bytes after the header`.
//! 2. [`verify`]: SHA-256 of the bytes after the header equals the header's hash. Nothing is
//!    inflated before this holds.
//! 3. The declared original size is compared with the caller's `max_output`; a larger
//!    declaration is refused before inflating.
//! 4. The gzip stream is inflated through a reader that can yield at most
//!    `original size + 1` bytes, so a stream that inflates to more than it declares (a
//!    decompression bomb) is stopped after one byte of excess. The output must be exactly the
//!    declared size, the gzip CRC-32 and length trailer must match, and nothing may follow the
//!    single gzip member (the origin writes exactly one member; trailing bytes, including a
//!    second member, are refused so that every reader sees the same content).

use std::io::{Read, Write};

use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::ProtocolError;

/// "THCS".
pub const MAGIC: [u8; 4] = *b"THCS";
/// The only version.
pub const VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 78;
/// The largest possible envelope: the header plus the largest compressed size the u32 field
/// can declare. Anything longer is not a THCS v1 envelope and need not be read to know it.
pub const MAX_ENVELOPE_LEN: u64 = HEADER_LEN as u64 + u32::MAX as u64;

/// gzip's framing around the deflate stream: a 10-byte header and an 8-byte trailer (CRC-32
/// and size), as flate2 writes them.
pub const GZIP_FRAME_LEN: usize = 18;

/// Slack above the computed worst case in [`max_envelope_len`].
const ENVELOPE_SLACK: usize = 64;

/// The largest envelope that can legitimately decode to `max_output` bytes: deflate's
/// worst-case expansion of stored blocks is 5 bytes per 65 535 (bounded here by 5 per 16 000),
/// plus [`GZIP_FRAME_LEN`] and the [`HEADER_LEN`]-byte THCS header, plus 64 bytes of slack.
/// Used to size the completion ring, a hound's file-size limit and the daemon's frame and
/// outcome reservations, and to refuse oversized objects on restore before reading them.
/// Saturates at `usize::MAX`; costs a few additions.
pub fn max_envelope_len(max_output: usize) -> usize {
    max_output
        .saturating_add(max_output / 16_000 * 5)
        .saturating_add(HEADER_LEN + GZIP_FRAME_LEN + ENVELOPE_SLACK)
}

/// Highest gzip level; levels above it are clamped to it.
pub const MAX_LEVEL: u32 = 9;

/// Byte offsets of the header fields.
const OFF_VERSION: usize = 4;
const OFF_ORIGINAL: usize = 6;
const OFF_COMPRESSED: usize = 10;
const OFF_HASH: usize = 14;

/// Upper bound of the DEFLATE expansion ratio (a 258-byte match costs at least two bits, and
/// then some block overhead): about 1032:1. Used only to cap the output pre-allocation, so that
/// a small envelope declaring a huge original size cannot make us reserve memory it could
/// never fill. Correctness never depends on it.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// A parsed, length-checked (not yet hash-verified) envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Declared original size.
    pub original_size: u32,
    /// Declared compressed size (equals the bytes after the header).
    pub compressed_size: u32,
    /// SHA-256 of the compressed bytes (decoded from hex).
    pub sha256: [u8; 32],
}

/// Encodes evidence at gzip `level` (0..=9, clamped) into a new envelope.
///
/// The envelope is at most [`max_envelope_len`]`(evidence.len())` bytes: when the compressor
/// would produce more (incompressible evidence at level 1), the evidence is encoded again at
/// level 0 (stored blocks), which costs one more pass over it.
///
/// Errors: [`ProtocolError::EvidenceTooLarge`] when the evidence (or its compressed form) does
/// not fit the header's u32 size fields.
pub fn encode(evidence: &[u8], level: u32) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    encode_into(evidence, level, &mut out)?;
    Ok(out)
}

/// Like [`encode`], appending to `out` (clears it first) so a caller can reuse its buffer.
/// Returns the header that was written.
///
/// The gzip stream is compressed directly after a header placeholder in `out` and the header is
/// filled in afterwards, so the compressed bytes are never copied. The gzip member carries no
/// file name and mtime 0, so equal input and level give equal bytes with the same deflate
/// backend. On error `out` is left empty.
pub fn encode_into(
    evidence: &[u8],
    level: u32,
    out: &mut Vec<u8>,
) -> Result<EnvelopeHeader, ProtocolError> {
    out.clear();
    let original_size = u32::try_from(evidence.len()).map_err(|_| too_large(evidence.len()))?;
    // Typical HTTP evidence compresses better than 2:1; Vec growth covers the rest, and a
    // reused buffer already has its capacity.
    out.reserve(HEADER_LEN + 32 + evidence.len() / 2);
    out.resize(HEADER_LEN, 0);

    let level = Compression::new(level.min(MAX_LEVEL));
    let mut gz = flate2::write::GzEncoder::new(&mut *out, level);
    let written = gz.write_all(evidence).and_then(|()| gz.try_finish());
    drop(gz);
    if let Err(e) = written {
        out.clear();
        // Writing into a Vec cannot fail for I/O reasons; only the compressor could complain.
        return Err(ProtocolError::EncodeFailed {
            kind: "envelope",
            reason: e.to_string(),
        });
    }

    if out.len() > max_envelope_len(evidence.len()) && level.level() > 0 {
        // The deflate backend coded the evidence larger than stored blocks would: zlib-rs at
        // level 1 uses fixed Huffman codes only, which expand incompressible bytes by up to
        // 1/8. Stored blocks (level 0) always fit the bound the rings and limits are sized by.
        return encode_into(evidence, 0, out);
    }
    let compressed = &out[HEADER_LEN..];
    let Ok(compressed_size) = u32::try_from(compressed.len()) else {
        // Incompressible evidence close to 4 GiB can grow past the u32 field.
        out.clear();
        return Err(too_large(evidence.len()));
    };
    let sha256: [u8; 32] = Sha256::digest(compressed).into();

    let header = EnvelopeHeader {
        original_size,
        compressed_size,
        sha256,
    };
    write_header(&header, &mut out[..HEADER_LEN]);
    Ok(header)
}

/// Parses the header and checks the envelope's length against it. No hashing.
///
/// Checks, in order: at least [`HEADER_LEN`] bytes ([`ProtocolError::EnvelopeTruncated`]),
/// magic ([`ProtocolError::EnvelopeBadMagic`]), version
/// ([`ProtocolError::EnvelopeUnsupportedVersion`]), hash field of 64 lowercase hex digits
/// ([`ProtocolError::EnvelopeBadHashField`]), then the compressed size against the bytes after
/// the header: fewer bytes is [`ProtocolError::EnvelopeTruncated`] (with `needed` the full
/// declared length), more is [`ProtocolError::EnvelopeLengthMismatch`].
pub fn parse_header(envelope: &[u8]) -> Result<EnvelopeHeader, ProtocolError> {
    let Some(head) = envelope.first_chunk::<HEADER_LEN>() else {
        return Err(ProtocolError::EnvelopeTruncated {
            len: envelope.len(),
            needed: HEADER_LEN,
        });
    };
    let magic = [head[0], head[1], head[2], head[3]];
    if magic != MAGIC {
        return Err(ProtocolError::EnvelopeBadMagic { found: magic });
    }
    let version = u16::from_be_bytes([head[OFF_VERSION], head[OFF_VERSION + 1]]);
    if version != VERSION {
        return Err(ProtocolError::EnvelopeUnsupportedVersion { found: version });
    }
    let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let original_size = be32(OFF_ORIGINAL);
    let compressed_size = be32(OFF_COMPRESSED);

    let hash_field = &head[OFF_HASH..HEADER_LEN];
    // `hex` also accepts uppercase; the format says lowercase, so check first.
    if !hash_field
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(ProtocolError::EnvelopeBadHashField);
    }
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(hash_field, &mut sha256)
        .map_err(|_| ProtocolError::EnvelopeBadHashField)?;

    let actual = envelope.len() - HEADER_LEN;
    let declared = u64::from(compressed_size);
    match (actual as u64).cmp(&declared) {
        std::cmp::Ordering::Equal => {}
        std::cmp::Ordering::Less => {
            return Err(ProtocolError::EnvelopeTruncated {
                len: envelope.len(),
                // u32 + 78 fits usize on every platform this crate builds for (64-bit Linux).
                needed: HEADER_LEN.saturating_add(compressed_size as usize),
            });
        }
        std::cmp::Ordering::Greater => {
            return Err(ProtocolError::EnvelopeLengthMismatch {
                declared,
                actual: actual as u64,
            });
        }
    }
    Ok(EnvelopeHeader {
        original_size,
        compressed_size,
        sha256,
    })
}

/// Parses the header, checks length, and verifies the SHA-256 of the compressed bytes.
/// Never decompresses.
///
/// Errors: everything [`parse_header`] returns, and [`ProtocolError::EnvelopeHashMismatch`]
/// when the digest differs (an integrity violation).
pub fn verify(envelope: &[u8]) -> Result<EnvelopeHeader, ProtocolError> {
    let header = parse_header(envelope)?;
    let actual: [u8; 32] = Sha256::digest(&envelope[HEADER_LEN..]).into();
    if actual != header.sha256 {
        return Err(ProtocolError::EnvelopeHashMismatch {
            expected: hex::encode(header.sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(header)
}

/// Verifies, then decompresses into a new buffer, refusing to produce more than the declared
/// original size or more than `max_output` bytes (checked before inflating), and requiring the
/// output to be exactly the declared size.
pub fn decode(envelope: &[u8], max_output: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    decode_into(envelope, max_output, &mut out)?;
    Ok(out)
}

/// Like [`decode`], writing into `out` (cleared first).
///
/// Guarantees: nothing is inflated unless [`verify`] succeeds; nothing is inflated when the
/// declared original size exceeds `max_output` ([`ProtocolError::EnvelopeOutputLimit`]); at
/// most `original size + 1` bytes are ever produced; on success `out` holds exactly the
/// declared number of bytes and the gzip CRC-32/length trailer matched. Output that would
/// exceed the declared size, or falls short of it, is
/// [`ProtocolError::EnvelopeSizeMismatch`]; a corrupt gzip stream or bytes after the gzip
/// member are [`ProtocolError::EnvelopeInflate`]. On any error `out` is left empty.
pub fn decode_into(
    envelope: &[u8],
    max_output: usize,
    out: &mut Vec<u8>,
) -> Result<EnvelopeHeader, ProtocolError> {
    out.clear();
    let header = verify(envelope)?;
    let declared = u64::from(header.original_size);
    if declared > max_output as u64 {
        return Err(ProtocolError::EnvelopeOutputLimit {
            original_size: declared,
            max_output: max_output as u64,
        });
    }
    let ratio_cap = u64::from(header.compressed_size).saturating_mul(MAX_DEFLATE_RATIO);
    // declared <= max_output (a usize), so the minimum fits usize.
    out.reserve(declared.min(ratio_cap) as usize);

    let result = inflate_bounded(&envelope[HEADER_LEN..], declared, out);
    if result.is_err() {
        out.clear();
    }
    result.map(|()| header)
}

/// Inflates the single gzip member in `compressed` into `out`, producing at most
/// `declared + 1` bytes, and checks the exact size and the absence of trailing bytes.
fn inflate_bounded(
    compressed: &[u8],
    declared: u64,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    // The bufread decoder consumes exactly the member from the slice, so what is left of the
    // slice afterwards is trailing data.
    let mut limited = flate2::bufread::GzDecoder::new(compressed).take(declared + 1);
    limited
        .read_to_end(out)
        .map_err(|e| ProtocolError::EnvelopeInflate {
            reason: e.to_string(),
        })?;
    let produced = out.len() as u64;
    if produced != declared {
        return Err(ProtocolError::EnvelopeSizeMismatch {
            declared,
            produced,
            exceeded: produced > declared,
        });
    }
    // produced == declared and the reader returned end-of-stream with one byte of limit
    // left, so the decoder reached its end state (trailer checked).
    let rest = limited.into_inner().into_inner();
    if !rest.is_empty() {
        return Err(ProtocolError::EnvelopeInflate {
            reason: format!("{} bytes after the gzip member", rest.len()),
        });
    }
    Ok(())
}

fn write_header(header: &EnvelopeHeader, dst: &mut [u8]) {
    dst[..4].copy_from_slice(&MAGIC);
    dst[OFF_VERSION..OFF_ORIGINAL].copy_from_slice(&VERSION.to_be_bytes());
    dst[OFF_ORIGINAL..OFF_COMPRESSED].copy_from_slice(&header.original_size.to_be_bytes());
    dst[OFF_COMPRESSED..OFF_HASH].copy_from_slice(&header.compressed_size.to_be_bytes());
    // The destination is exactly 2 * 32 bytes, the only way encode_to_slice can fail.
    let hex_ok = hex::encode_to_slice(header.sha256, &mut dst[OFF_HASH..HEADER_LEN]);
    debug_assert!(hex_ok.is_ok());
}

fn too_large(len: usize) -> ProtocolError {
    ProtocolError::EvidenceTooLarge { len: len as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Vec<u8> {
        encode(b"hello houndpool", 6).unwrap()
    }

    #[test]
    fn round_trip_and_header_fields() {
        let evidence = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".repeat(20);
        let mut env = Vec::new();
        let h = encode_into(&evidence, 6, &mut env).unwrap();
        assert_eq!(&env[..4], b"THCS");
        assert_eq!(h.original_size as usize, evidence.len());
        assert_eq!(h.compressed_size as usize, env.len() - HEADER_LEN);
        assert_eq!(parse_header(&env).unwrap(), h);
        assert_eq!(verify(&env).unwrap(), h);
        assert_eq!(decode(&env, evidence.len()).unwrap(), evidence);
    }

    #[test]
    fn max_envelope_len_bounds_incompressible_evidence() {
        let mut rng = fastrand::Rng::with_seed(0x7e57);
        for len in [0, 1, 100, 15_999, 16_000, 65_535, 65_536, 200_003, 1 << 20] {
            let evidence: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            for level in [0, 1, 9] {
                let env = encode(&evidence, level).unwrap();
                assert!(
                    env.len() <= max_envelope_len(len),
                    "{len} bytes at level {level}: envelope {} > bound {}",
                    env.len(),
                    max_envelope_len(len)
                );
                assert_eq!(
                    decode(&env, len).unwrap(),
                    evidence,
                    "{len} at level {level}"
                );
            }
        }
        // Bytes >= 144 take 9 bits each in deflate's fixed Huffman code: the worst case of
        // zlib-rs's level 1, which would be 1/8 larger than the evidence.
        let high: Vec<u8> = std::iter::repeat_with(|| rng.u8(144..))
            .take(1 << 20)
            .collect();
        let env = encode(&high, 1).unwrap();
        assert!(env.len() <= max_envelope_len(high.len()));
        assert_eq!(decode(&env, high.len()).unwrap(), high);
        // Evidence that compresses keeps its level-1 compression (no fallback to stored).
        let text = b"GET /search?q=houndpool HTTP/1.1\r\nHost: example.com\r\n".repeat(1000);
        assert!(encode(&text, 1).unwrap().len() < text.len() / 4);
        assert!(max_envelope_len(1 << 20) > (1 << 20) + HEADER_LEN + GZIP_FRAME_LEN);
        assert_eq!(max_envelope_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn encode_into_reuses_and_clears_the_buffer() {
        let mut buf = vec![0xAA; 10_000];
        encode_into(b"abc", 6, &mut buf).unwrap();
        assert_eq!(decode(&buf, 3).unwrap(), b"abc");
        assert!(buf.capacity() >= 10_000, "buffer was reallocated");
    }

    #[test]
    fn levels_above_nine_are_clamped() {
        let data =
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".repeat(50);
        assert_eq!(encode(&data, 9).unwrap(), encode(&data, 1000).unwrap());
        assert_eq!(
            decode(&encode(&data, u32::MAX).unwrap(), data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn empty_evidence_round_trips() {
        let env = encode(b"", 6).unwrap();
        assert_eq!(parse_header(&env).unwrap().original_size, 0);
        assert_eq!(decode(&env, 0).unwrap(), b"");
    }

    #[test]
    fn uppercase_hash_field_is_refused() {
        let mut env = hello();
        env[OFF_HASH..HEADER_LEN].make_ascii_uppercase();
        // This input's digest (f6f86fb3...) has a-f digits, so uppercasing really changes it.
        assert_ne!(&env[OFF_HASH..HEADER_LEN], &hello()[OFF_HASH..HEADER_LEN]);
        assert!(matches!(
            parse_header(&env),
            Err(ProtocolError::EnvelopeBadHashField)
        ));
    }

    #[test]
    fn non_hex_hash_field_is_refused() {
        let mut env = hello();
        env[HEADER_LEN - 1] = b'g';
        assert!(matches!(
            parse_header(&env),
            Err(ProtocolError::EnvelopeBadHashField)
        ));
    }

    #[test]
    fn bad_magic_and_version_are_typed() {
        let mut env = hello();
        env[0] = b'X';
        assert!(matches!(
            parse_header(&env),
            Err(ProtocolError::EnvelopeBadMagic { found }) if found == *b"XHCS"
        ));
        let mut env = hello();
        env[OFF_VERSION + 1] = 2;
        assert!(matches!(
            parse_header(&env),
            Err(ProtocolError::EnvelopeUnsupportedVersion { found: 2 })
        ));
    }

    #[test]
    fn length_disagreements_are_typed() {
        let env = hello();
        let short = &env[..env.len() - 1];
        assert!(matches!(
            parse_header(short),
            Err(ProtocolError::EnvelopeTruncated { len, needed })
                if len == env.len() - 1 && needed == env.len()
        ));
        let mut long = env.clone();
        long.push(0);
        let declared = (env.len() - HEADER_LEN) as u64;
        assert!(matches!(
            parse_header(&long),
            Err(ProtocolError::EnvelopeLengthMismatch { declared: d, actual })
                if d == declared && actual == declared + 1
        ));
    }

    #[test]
    fn flipped_body_bit_is_a_hash_mismatch() {
        let mut env = hello();
        let last = env.len() - 1;
        env[last] ^= 1;
        assert!(matches!(
            verify(&env),
            Err(ProtocolError::EnvelopeHashMismatch { .. })
        ));
        assert!(matches!(
            decode(&env, 1 << 20),
            Err(ProtocolError::EnvelopeHashMismatch { .. })
        ));
    }

    /// Rewrites the original-size field; the hash covers only the compressed bytes, so the
    /// envelope still verifies.
    fn with_original_size(mut env: Vec<u8>, size: u32) -> Vec<u8> {
        env[OFF_ORIGINAL..OFF_COMPRESSED].copy_from_slice(&size.to_be_bytes());
        env
    }

    #[test]
    fn output_shorter_than_declared_is_a_size_mismatch() {
        let env = with_original_size(hello(), 16);
        let mut out = vec![1, 2, 3];
        let err = decode_into(&env, 1 << 20, &mut out).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::EnvelopeSizeMismatch {
                declared: 16,
                produced: 15,
                exceeded: false
            }
        ));
        assert!(out.is_empty(), "partial output left behind");
    }

    #[test]
    fn output_longer_than_declared_stops_one_byte_over() {
        let env = with_original_size(hello(), 5);
        assert!(matches!(
            decode(&env, 1 << 20),
            Err(ProtocolError::EnvelopeSizeMismatch {
                declared: 5,
                produced: 6,
                exceeded: true
            })
        ));
    }

    #[test]
    fn output_limit_is_checked_against_the_declaration() {
        let env = hello();
        assert!(matches!(
            decode(&env, 14),
            Err(ProtocolError::EnvelopeOutputLimit {
                original_size: 15,
                max_output: 14
            })
        ));
        assert_eq!(decode(&env, 15).unwrap(), b"hello houndpool");
    }

    /// Builds a correctly hashed envelope around arbitrary "gzip" bytes.
    fn wrap(gzip: &[u8], original_size: u32) -> Vec<u8> {
        let mut env = vec![0u8; HEADER_LEN];
        let header = EnvelopeHeader {
            original_size,
            compressed_size: gzip.len() as u32,
            sha256: Sha256::digest(gzip).into(),
        };
        write_header(&header, &mut env);
        env.extend_from_slice(gzip);
        env
    }

    #[test]
    fn trailing_bytes_and_second_members_are_refused() {
        let env = hello();
        let gz = &env[HEADER_LEN..];

        let mut garbage = gz.to_vec();
        garbage.extend_from_slice(b"junk");
        assert!(matches!(
            decode(&wrap(&garbage, 15), 1 << 20),
            Err(ProtocolError::EnvelopeInflate { reason }) if reason.contains("4 bytes after")
        ));

        let mut two = gz.to_vec();
        two.extend_from_slice(gz);
        // Declared as the first member's size: refused for the second member.
        assert!(matches!(
            decode(&wrap(&two, 15), 1 << 20),
            Err(ProtocolError::EnvelopeInflate { .. })
        ));
        // Declared as both members' size: the first member alone is too short.
        assert!(matches!(
            decode(&wrap(&two, 30), 1 << 20),
            Err(ProtocolError::EnvelopeSizeMismatch {
                produced: 15,
                exceeded: false,
                ..
            })
        ));
    }

    #[test]
    fn corrupt_gzip_trailer_is_an_inflate_error() {
        let env = hello();
        let mut gz = env[HEADER_LEN..].to_vec();
        let crc_at = gz.len() - 8;
        gz[crc_at] ^= 0xFF;
        assert!(matches!(
            decode(&wrap(&gz, 15), 1 << 20),
            Err(ProtocolError::EnvelopeInflate { .. })
        ));
    }

    #[test]
    fn empty_body_is_an_inflate_error_not_a_panic() {
        let env = wrap(b"", 0);
        assert!(verify(&env).is_ok());
        assert!(matches!(
            decode(&env, 10),
            Err(ProtocolError::EnvelopeInflate { .. })
        ));
    }
}
