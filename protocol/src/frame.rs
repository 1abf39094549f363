//! Length-prefixed frames for the control channel (SOCK_SEQPACKET) and the daemon socket.
//!
//! Layout (all little-endian), 16-byte header then `body_len` bytes of body:
//! ```text
//! offset size field
//! 0      4    magic  = FRAME_MAGIC ("HPFR" read as u32 LE)
//! 4      2    version = PROTOCOL_VERSION
//! 6      2    kind (MessageKind as u16)
//! 8      4    body_len (u32, must be <= the receiver's limit)
//! 12     4    reserved, must be 0
//! ```
//! STUB CONTRACT (helper implements bodies; signatures are fixed).

use crate::ProtocolError;

/// Frame magic: the bytes "HPFR" read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"HPFR");
/// Size of the fixed frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 16;
/// Default limit on a frame body (control channel); the daemon configures its own.
pub const DEFAULT_MAX_BODY: u32 = 1 << 20;

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message kind (validated against `MessageKind`).
    pub kind: crate::messages::MessageKind,
    /// Body length in bytes (validated against the limit).
    pub body_len: u32,
}

impl FrameHeader {
    /// Parses and validates a header from exactly [`FRAME_HEADER_LEN`] bytes.
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN], max_body: u32) -> Result<Self, ProtocolError> {
        let _ = (bytes, max_body);
        todo!()
    }
    /// Writes this header.
    pub fn write(&self, out: &mut [u8; FRAME_HEADER_LEN]) {
        let _ = out;
        todo!()
    }
}

/// Appends one complete frame (header + body) to `out`.
pub fn write_frame(
    kind: crate::messages::MessageKind,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let _ = (kind, body, out);
    todo!()
}

/// Parses exactly one frame from `bytes` (one SEQPACKET datagram). Trailing bytes are an error.
pub fn parse_frame(bytes: &[u8], max_body: u32) -> Result<(FrameHeader, &[u8]), ProtocolError> {
    let _ = (bytes, max_body);
    todo!()
}

/// Streaming decoder for byte streams (the daemon's SOCK_STREAM socket): feed bytes in
/// arbitrary chunks, take complete frames out. Memory is bounded by `FRAME_HEADER_LEN +
/// max_body` plus what the caller feeds before taking frames out; a header announcing more
/// than `max_body` is an error before any body byte is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    _private: (),
}

impl FrameDecoder {
    /// A decoder that refuses bodies larger than `max_body`.
    pub fn new(max_body: u32) -> Self {
        let _ = max_body;
        todo!()
    }
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let _ = bytes;
        todo!()
    }
    /// Returns the next complete frame as (header, body), `Ok(None)` if more bytes are
    /// needed, or the first error (after which the stream must be closed).
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Vec<u8>)>, ProtocolError> {
        todo!()
    }
    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        todo!()
    }
}
