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
//! STUB CONTRACT: signatures fixed; the helper implements.

use crate::ProtocolError;

/// "THCS".
pub const MAGIC: [u8; 4] = *b"THCS";
/// The only version.
pub const VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 78;

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
pub fn encode(evidence: &[u8], level: u32) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    encode_into(evidence, level, &mut out)?;
    Ok(out)
}

/// Like [`encode`], appending to `out` (clears it first) so a caller can reuse its buffer.
/// Returns the header that was written.
pub fn encode_into(
    evidence: &[u8],
    level: u32,
    out: &mut Vec<u8>,
) -> Result<EnvelopeHeader, ProtocolError> {
    let _ = (evidence, level, out);
    todo!()
}

/// Parses the header and checks the envelope's length against it. No hashing.
pub fn parse_header(envelope: &[u8]) -> Result<EnvelopeHeader, ProtocolError> {
    let _ = envelope;
    todo!()
}

/// Parses the header, checks length, and verifies the SHA-256 of the compressed bytes.
/// Never decompresses.
pub fn verify(envelope: &[u8]) -> Result<EnvelopeHeader, ProtocolError> {
    let _ = envelope;
    todo!()
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
pub fn decode_into(
    envelope: &[u8],
    max_output: usize,
    out: &mut Vec<u8>,
) -> Result<EnvelopeHeader, ProtocolError> {
    let _ = (envelope, max_output, out);
    todo!()
}
