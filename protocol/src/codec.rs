//! The single module that knows bincode.
//!
//! bincode 1.3.3 is flagged unmaintained (RUSTSEC-2025-0141); its maintainers consider it
//! complete. It is used here with explicit options — fixed-width little-endian integers, a
//! size limit, trailing bytes rejected — so that its wire format is fully specified in
//! docs/PROTOCOL.md and a replacement is a change to this file alone.
//!
//! Encoding rules these options produce (the normative copy is docs/PROTOCOL.md):
//! integers are fixed-width little-endian; `bool` is one byte 0/1; `String` and `Vec<T>` are a
//! u64 LE element count then the elements; `Option<T>` is a u8 tag 0/1 then the value; an enum
//! is a u32 LE variant index then the variant's fields; arrays, tuples and structs are their
//! fields in order with no padding or length.
//!
//! Decoding guarantees: only the canonical encoding is accepted (a bool byte other than 0/1,
//! an option tag other than 0/1, an unknown enum index, invalid UTF-8 or trailing bytes are
//! errors), so decoding then re-encoding yields the input bytes.
//!
//! Allocation is bounded by the input, never by a length the input announces. Note that
//! bincode 1.3.3 ignores the configured limit when it decodes from a slice (it substitutes an
//! unbounded one): [`decode`] therefore enforces `limit` itself by refusing input longer than
//! it. Within the input, bincode's slice reader checks that an announced string length is
//! present before copying it, and serde caps the up-front reservation of a sequence whose
//! announced length is a lie at 1 MiB; every element actually decoded consumes input bytes.

use crate::ProtocolError;
use bincode::Options;

/// The protocol's bincode configuration with the given byte limit.
fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
        .reject_trailing_bytes()
}

/// Encodes `value` with the protocol's bincode options; fails if it exceeds `limit` bytes.
///
/// Errors are [`ProtocolError::EncodeFailed`] naming `kind`; on success the result is at most
/// `limit` bytes long.
pub fn encode<T: serde::Serialize>(
    kind: &'static str,
    value: &T,
    limit: u64,
) -> Result<Vec<u8>, ProtocolError> {
    options(limit)
        .serialize(value)
        .map_err(|e| ProtocolError::EncodeFailed {
            kind,
            reason: e.to_string(),
        })
}

/// Decodes `bytes` as a `T`; refuses trailing bytes and any allocation beyond `limit`.
///
/// Every failure (short input, non-canonical encoding, trailing bytes, input or announced
/// lengths beyond `limit`) is [`ProtocolError::MalformedBody`] naming `kind`. Never panics.
pub fn decode<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
    limit: u64,
) -> Result<T, ProtocolError> {
    // Input longer than the limit can never decode (every byte read counts against it); refusing
    // it here keeps the work and any allocation proportional to at most `limit`.
    if bytes.len() as u64 > limit {
        return Err(ProtocolError::MalformedBody {
            kind,
            reason: format!("body of {} bytes exceeds the limit of {limit}", bytes.len()),
        });
    }
    options(limit)
        .deserialize(bytes)
        .map_err(|e| ProtocolError::MalformedBody {
            kind,
            reason: describe(&e),
        })
}

/// bincode reports a short slice as an I/O error with an empty message; say what it means.
fn describe(e: &bincode::ErrorKind) -> String {
    match e {
        bincode::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "unexpected end of body".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum E {
        A,
        B(u16),
        C { x: bool },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        a: u8,
        b: u32,
        c: Option<u64>,
        d: String,
        e: Vec<E>,
        f: [u8; 3],
        g: (u16, bool),
    }

    fn sample() -> S {
        S {
            a: 7,
            b: 0x0102_0304,
            c: Some(9),
            d: "hi".into(),
            e: vec![E::A, E::B(0x0506), E::C { x: true }],
            f: [0xaa, 0xbb, 0xcc],
            g: (0x0708, false),
        }
    }

    #[test]
    fn layout_is_fixint_little_endian() {
        let bytes = encode("s", &sample(), 1024).unwrap();
        let expected: Vec<u8> = [
            &[7u8][..],
            &[4, 3, 2, 1],
            &[1, 9, 0, 0, 0, 0, 0, 0, 0],
            &[2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i'],
            &[3, 0, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0],
            &[1, 0, 0, 0, 6, 5],
            &[2, 0, 0, 0, 1],
            &[0xaa, 0xbb, 0xcc],
            &[8, 7, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(decode::<S>("s", &bytes, 1024).unwrap(), sample());
    }

    #[test]
    fn encode_over_limit_fails() {
        let bytes = encode("s", &sample(), 1024).unwrap();
        let err = encode("s", &sample(), bytes.len() as u64 - 1).unwrap_err();
        assert!(
            matches!(err, ProtocolError::EncodeFailed { kind: "s", .. }),
            "{err:?}"
        );
        assert!(encode("s", &sample(), bytes.len() as u64).is_ok());
    }

    fn malformed_reason<T: serde::de::DeserializeOwned + std::fmt::Debug>(
        bytes: &[u8],
        limit: u64,
    ) -> String {
        match decode::<T>("k", bytes, limit) {
            Err(ProtocolError::MalformedBody { kind: "k", reason }) => reason,
            other => panic!("expected MalformedBody, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode("s", &sample(), 1024).unwrap();
        bytes.push(0);
        let reason = malformed_reason::<S>(&bytes, 1024);
        assert!(reason.contains("remaining"), "{reason}");
    }

    #[test]
    fn truncated_rejected() {
        let bytes = encode("s", &sample(), 1024).unwrap();
        for cut in 0..bytes.len() {
            let reason = malformed_reason::<S>(&bytes[..cut], 1024);
            assert_eq!(reason, "unexpected end of body", "cut at {cut}");
        }
    }

    #[test]
    fn non_canonical_values_rejected() {
        // bool 2
        malformed_reason::<bool>(&[2], 16);
        // option tag 2
        malformed_reason::<Option<u8>>(&[2, 0], 16);
        // unknown enum index 3
        malformed_reason::<E>(&[3, 0, 0, 0], 16);
        // invalid UTF-8
        malformed_reason::<String>(&[1, 0, 0, 0, 0, 0, 0, 0, 0xff], 16);
    }

    #[test]
    fn input_longer_than_limit_rejected() {
        let reason = malformed_reason::<[u8; 8]>(&[0; 8], 7);
        assert!(reason.contains("limit"), "{reason}");
        assert_eq!(decode::<[u8; 8]>("k", &[1; 8], 8).unwrap(), [1; 8]);
    }

    #[test]
    fn huge_announced_string_refused() {
        // Announces 2^40 bytes; the slice reader checks they are present before copying them
        // (tests/wire_alloc.rs proves nothing large is allocated).
        let body = (1u64 << 40).to_le_bytes();
        for limit in [64 * 1024, u64::MAX] {
            let reason = malformed_reason::<String>(&body, limit);
            assert_eq!(reason, "unexpected end of body");
        }
    }

    #[test]
    fn huge_announced_vec_refused() {
        let body = (1u64 << 40).to_le_bytes();
        malformed_reason::<Vec<u8>>(&body, 64 * 1024);
        malformed_reason::<Vec<E>>(&body, 64 * 1024);
        malformed_reason::<Vec<u64>>(&body, u64::MAX);
    }
}
