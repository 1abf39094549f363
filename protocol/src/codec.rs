//! The single module that knows bincode.
//!
//! bincode 1.3.3 is flagged unmaintained (RUSTSEC-2025-0141); its maintainers consider it
//! complete. It is used here with explicit options — fixed-width little-endian integers, a
//! size limit, trailing bytes rejected — so that its wire format is fully specified in
//! docs/PROTOCOL.md and a replacement is a change to this file alone.
//! STUB CONTRACT (helper implements bodies; signatures are fixed).

use crate::ProtocolError;

/// Encodes `value` with the protocol's bincode options; fails if it exceeds `limit` bytes.
pub fn encode<T: serde::Serialize>(
    kind: &'static str,
    value: &T,
    limit: u64,
) -> Result<Vec<u8>, ProtocolError> {
    let _ = (kind, value, limit);
    todo!()
}

/// Decodes `bytes` as a `T`; refuses trailing bytes and any allocation beyond `limit`.
pub fn decode<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
    limit: u64,
) -> Result<T, ProtocolError> {
    let _ = (kind, bytes, limit);
    todo!()
}
