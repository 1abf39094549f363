//! Fixed little-endian headers of the records that travel through the rings.
//!
//! A request record's payload is a [`RequestHeader`] (32 bytes) followed by the job body
//! (evidence bytes for Noop / Encode / Evacuate, an envelope for Decode, nothing for Restore
//! and Erase, which name their object by `evidence_id`). A completion record's payload is a
//! [`CompletionHeader`] (16 bytes) followed by a body that depends on kind and status:
//!
//! | kind      | ok body                         | failed body             |
//! |-----------|---------------------------------|-------------------------|
//! | Noop      | the request body, echoed        | UTF-8 message (≤ 512 B) |
//! | Encode    | THCS envelope                   | same                    |
//! | Evacuate  | [`EvacuateReceipt`] (72 bytes)  | same                    |
//! | Restore   | original evidence bytes         | same                    |
//! | Decode    | original evidence bytes         | same                    |
//! | Erase     | empty                           | same                    |
//!
//! Completion records are written by the hound and are untrusted: `CompletionHeader::parse`
//! and `EvacuateReceipt::parse` validate every field.
//! STUB CONTRACT: types and signatures fixed; the helper implements bodies and tests.

use crate::ProtocolError;

/// Job kinds. Wire value in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum JobKind {
    /// (0) Echo the body: measures the transport alone.
    Noop = 0,
    /// (1) Evidence → THCS envelope, returned in the completion.
    Encode = 1,
    /// (2) Evidence → envelope → cold storage; returns a receipt.
    Evacuate = 2,
    /// (3) Read an envelope from cold storage, verify, decode, return the original.
    Restore = 3,
    /// (4) Delete an evidence object from cold storage.
    Erase = 4,
    /// (5) Verify and decode an envelope carried in the request body.
    Decode = 5,
}

impl JobKind {
    /// All kinds.
    pub const ALL: [JobKind; 6] = [
        JobKind::Noop,
        JobKind::Encode,
        JobKind::Evacuate,
        JobKind::Restore,
        JobKind::Erase,
        JobKind::Decode,
    ];
    /// Wire value → kind.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        let _ = v;
        todo!()
    }
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Severity lanes (used by the defer queue). Ordered: `Low < Medium < High < Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum Severity {
    /// (0)
    Low = 0,
    /// (1)
    Medium = 1,
    /// (2)
    High = 2,
    /// (3)
    Critical = 3,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    /// Wire value → severity.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        let _ = v;
        todo!()
    }
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Size of [`RequestHeader`] on the wire.
pub const REQUEST_HEADER_LEN: usize = 32;

/// Header of a request record.
/// ```text
/// 0  8  job_id u64
/// 8  1  kind u8
/// 9  1  gzip level u8 (0..=9)
/// 10 1  severity u8
/// 11 1  attempt u8 (0 first try, 1 retry)
/// 12 4  reserved, 0
/// 16 16 evidence_id (UUID bytes)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Pool-unique job id.
    pub job_id: u64,
    /// Job kind.
    pub kind: JobKind,
    /// gzip level.
    pub level: u8,
    /// Severity.
    pub severity: Severity,
    /// 0 on the first attempt, 1 on the retry.
    pub attempt: u8,
    /// Evidence id (UUID bytes).
    pub evidence_id: [u8; 16],
}

impl RequestHeader {
    /// Serialises into exactly `REQUEST_HEADER_LEN` bytes.
    pub fn to_bytes(&self) -> [u8; REQUEST_HEADER_LEN] {
        todo!()
    }
    /// Parses the header at the start of `payload`; returns it and the body after it.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        let _ = payload;
        todo!()
    }
}

/// Size of [`CompletionHeader`] on the wire.
pub const COMPLETION_HEADER_LEN: usize = 16;

/// Completion status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    /// The job succeeded; the body is the kind's ok body.
    Ok,
    /// The job failed; the body is a UTF-8 message.
    Failed(FailCode),
}

/// Why a hound says a job failed. Wire value in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u16)]
pub enum FailCode {
    /// (1) The request was malformed.
    InvalidRequest = 1,
    /// (2) Evidence larger than the hound's limit.
    EvidenceTooLarge = 2,
    /// (3) Stored envelope failed verification (hash, length, structure).
    IntegrityViolation = 3,
    /// (4) Decoding would exceed the declared size or the output limit (bomb guard).
    DecompressionLimit = 4,
    /// (5) Cold storage unreachable after retries (nothing partial is visible).
    ColdStorageUnavailable = 5,
    /// (6) The object does not exist.
    NotFound = 6,
    /// (7) Cold storage refused the request (credentials, permissions, bad bucket).
    ColdStorageRejected = 7,
    /// (8) Any other failure inside the hound (I/O error, caught panic).
    Internal = 8,
}

impl FailCode {
    /// Wire value → code.
    pub fn from_u16(v: u16) -> Result<Self, ProtocolError> {
        let _ = v;
        todo!()
    }
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Largest failure message a completion may carry.
pub const MAX_FAIL_MESSAGE: usize = 512;

/// Header of a completion record.
/// ```text
/// 0  8  job_id u64
/// 8  1  kind u8
/// 9  1  status u8 (0 ok, 1 failed)
/// 10 2  fail code u16 (0 when ok)
/// 12 4  flags u32: bit 0 = spooled (Evacuate written to the local spool); others 0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionHeader {
    /// The job this completes.
    pub job_id: u64,
    /// Kind echoed from the request.
    pub kind: JobKind,
    /// Outcome.
    pub status: CompletionStatus,
    /// Flag bits (see [`COMPLETION_FLAG_SPOOLED`]).
    pub flags: u32,
}

/// Completion flag: the evacuated envelope went to the local spool, not (yet) to the target.
pub const COMPLETION_FLAG_SPOOLED: u32 = 1;

impl CompletionHeader {
    /// Serialises into exactly `COMPLETION_HEADER_LEN` bytes.
    pub fn to_bytes(&self) -> [u8; COMPLETION_HEADER_LEN] {
        todo!()
    }
    /// Parses and validates an untrusted completion payload; returns the header and body.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        let _ = payload;
        todo!()
    }
}

/// Size of [`EvacuateReceipt`] on the wire.
pub const EVACUATE_RECEIPT_LEN: usize = 72;

/// What an Evacuate job returns. The object key is not carried: the supervisor derives it
/// from its own configuration and the evidence id it assigned.
/// ```text
/// 0  16 evidence_id
/// 16 4  original_size u32
/// 20 4  compressed_size u32
/// 24 32 sha256 of the compressed bytes (raw)
/// 56 8  encode_ns u64
/// 64 8  store_ns u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvacuateReceipt {
    /// Evidence id.
    pub evidence_id: [u8; 16],
    /// Original evidence size.
    pub original_size: u32,
    /// gzip stream size.
    pub compressed_size: u32,
    /// SHA-256 of the gzip stream.
    pub sha256: [u8; 32],
    /// Time spent compressing and hashing, ns.
    pub encode_ns: u64,
    /// Time spent writing to cold storage, ns.
    pub store_ns: u64,
}

impl EvacuateReceipt {
    /// Serialises into exactly `EVACUATE_RECEIPT_LEN` bytes.
    pub fn to_bytes(&self) -> [u8; EVACUATE_RECEIPT_LEN] {
        todo!()
    }
    /// Parses an untrusted receipt body (must be exactly `EVACUATE_RECEIPT_LEN` bytes).
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let _ = body;
        todo!()
    }
}
