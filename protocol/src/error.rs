//! The one error type of this crate.

/// Everything that can be wrong with bytes this crate is asked to interpret.
///
/// Every variant names what was wrong and, where it helps, the offending value and the
/// permitted range. None of them is produced by a panic path: decoding functions return these
/// for any input whatsoever.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    // ---- frames -------------------------------------------------------------------------
    /// The first four bytes of a frame header are not the frame magic.
    #[error("bad frame magic {found:#010x} (expected {expected:#010x})")]
    BadFrameMagic {
        /// Magic read from the wire.
        found: u32,
        /// The magic this crate expects.
        expected: u32,
    },
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version read from the wire.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The frame's message kind is not one this build knows.
    #[error("unknown message kind {kind}")]
    UnknownMessageKind {
        /// Kind read from the wire.
        kind: u16,
    },
    /// A frame header announces a body longer than the configured limit.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: u64,
        /// Configured limit.
        max: u64,
    },
    /// Reserved header bits that must be zero are not.
    #[error("frame header reserved field is {found:#x}, must be 0")]
    ReservedNonZero {
        /// Value read.
        found: u32,
    },
    /// A buffer ended before a complete frame (or structure) was read.
    #[error("truncated input: needed {needed} bytes, had {available}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Input holds more bytes than the one frame (or body) it must contain exactly: a datagram
    /// with bytes after its frame, or a body longer than its header announces.
    #[error("{found} bytes where exactly {expected} were expected (trailing bytes)")]
    TrailingBytes {
        /// Bytes the frame (or body) occupies according to its header.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A frame body could not be decoded as the message its kind announced.
    #[error("malformed {kind} body: {reason}")]
    MalformedBody {
        /// Message kind name.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A message could not be encoded (for example it exceeds the size limit).
    #[error("cannot encode {kind}: {reason}")]
    EncodeFailed {
        /// Message kind name.
        kind: &'static str,
        /// Why.
        reason: String,
    },

    // ---- job records --------------------------------------------------------------------
    /// A ring record's job header is malformed (unknown kind, bad status, short header...).
    #[error("malformed job record: {reason}")]
    MalformedRecord {
        /// What was wrong.
        reason: &'static str,
    },

    // ---- rings and regions --------------------------------------------------------------
    /// A payload can never fit into the ring (larger than its maximum record size).
    #[error("record payload of {len} bytes exceeds the ring's maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload the ring accepts.
        max: usize,
    },
    /// Ring indices or record headers read from shared memory are impossible. The peer that
    /// writes them is broken or hostile; the caller should kill it.
    #[error("ring corrupt: {what} (position {position}, value {value})")]
    RingCorrupt {
        /// Which invariant failed.
        what: &'static str,
        /// Ring position at which it was observed.
        position: u64,
        /// The offending value.
        value: u64,
    },
    /// A region's layout request or mapped header is invalid.
    #[error("invalid shared-memory region: {reason}")]
    InvalidRegion {
        /// What was wrong.
        reason: String,
    },
    /// An operating-system call failed (memfd_create, ftruncate, fcntl seals, mmap, eventfd, pipe2).
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    // ---- evidence envelope --------------------------------------------------------------
    /// The envelope is shorter than its fixed header or than its declared size.
    #[error("envelope truncated: {len} bytes, need at least {needed}")]
    EnvelopeTruncated {
        /// Bytes present.
        len: usize,
        /// Bytes required.
        needed: usize,
    },
    /// The envelope does not start with "THCS".
    #[error("envelope magic is {found:02x?}, expected \"THCS\"")]
    EnvelopeBadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The envelope version is not 1.
    #[error("envelope version {found} is not supported (only 1)")]
    EnvelopeUnsupportedVersion {
        /// Version read.
        found: u16,
    },
    /// The compressed size in the header disagrees with the bytes present.
    #[error("envelope declares {declared} compressed bytes but carries {actual}")]
    EnvelopeLengthMismatch {
        /// Size in the header.
        declared: u64,
        /// Bytes after the header.
        actual: u64,
    },
    /// The hash field is not 64 lowercase hex digits.
    #[error("envelope hash field is not 64 lowercase hex digits")]
    EnvelopeBadHashField,
    /// SHA-256 of the compressed bytes differs from the header: integrity violation.
    #[error("envelope integrity violation: SHA-256 is {actual}, header says {expected}")]
    EnvelopeHashMismatch {
        /// Hex digest in the header.
        expected: String,
        /// Hex digest computed.
        actual: String,
    },
    /// The declared original size exceeds what the caller allows to be produced.
    #[error("envelope declares {original_size} original bytes, above the limit of {max_output}")]
    EnvelopeOutputLimit {
        /// Declared original size.
        original_size: u64,
        /// Caller's limit.
        max_output: u64,
    },
    /// Decompression produced more (bomb) or fewer bytes than the header declares.
    #[error("envelope inflates to {produced}{plus} bytes, header declares {declared}", plus = if *.exceeded { "+" } else { "" })]
    EnvelopeSizeMismatch {
        /// Declared original size.
        declared: u64,
        /// Bytes produced before stopping.
        produced: u64,
        /// True when decoding stopped because output would exceed the declared size.
        exceeded: bool,
    },
    /// The gzip stream is corrupt.
    #[error("envelope gzip stream is corrupt: {reason}")]
    EnvelopeInflate {
        /// What the inflater said.
        reason: String,
    },
    /// Evidence too large for the envelope's u32 size fields.
    #[error("evidence of {len} bytes exceeds the envelope's 4 GiB limit")]
    EvidenceTooLarge {
        /// Evidence length.
        len: u64,
    },
}
