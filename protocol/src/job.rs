//! Fixed little-endian headers of the records that travel through the rings.
//!
//! A request record's payload is a [`RequestHeader`] (32 bytes), then the evidence key if the
//! header announces one (`key_len` bytes of ASCII, see [`check_evidence_key`]; Evacuate,
//! Restore and Erase only), then the job body (evidence bytes for Noop / Encode / Evacuate, an
//! envelope for Decode, nothing for Restore and Erase, which name their object by key or by
//! `evidence_id`). A completion record's payload is a
//! [`CompletionHeader`] (16 bytes) followed by a body that depends on kind and status:
//!
//! | kind      | ok body                         | failed body             |
//! |-----------|---------------------------------|-------------------------|
//! | Noop      | the request body, echoed        | UTF-8 message (≤ 512 B) |
//! | Encode    | THCS envelope                   | same                    |
//! | Evacuate  | [`EvacuateReceipt`] (72 bytes)  | same                    |
//! | Restore   | original evidence bytes         | same                    |
//! | Decode    | original evidence bytes         | same                    |
//! | Erase     | one byte: 1 if the object existed, else 0 | same          |
//!
//! Completion records are written by the hound and are untrusted: `CompletionHeader::parse`
//! and `EvacuateReceipt::parse` validate every field.
//!
//! Every parse failure is [`ProtocolError::MalformedRecord`] with a fixed reason naming the
//! field and the rule it broke.

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
        match v {
            0 => Ok(JobKind::Noop),
            1 => Ok(JobKind::Encode),
            2 => Ok(JobKind::Evacuate),
            3 => Ok(JobKind::Restore),
            4 => Ok(JobKind::Erase),
            5 => Ok(JobKind::Decode),
            _ => Err(malformed("job kind is not 0..=5")),
        }
    }
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::Encode => "encode",
            JobKind::Evacuate => "evacuate",
            JobKind::Restore => "restore",
            JobKind::Erase => "erase",
            JobKind::Decode => "decode",
        }
    }
}

fn malformed(reason: &'static str) -> ProtocolError {
    ProtocolError::MalformedRecord { reason }
}

// The readers below index `b[at..at + N]`; every caller has checked the record length first,
// so the indices are in bounds.
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
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
        match v {
            0 => Ok(Severity::Low),
            1 => Ok(Severity::Medium),
            2 => Ok(Severity::High),
            3 => Ok(Severity::Critical),
            _ => Err(malformed("severity is not 0..=3")),
        }
    }
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Size of [`RequestHeader`] on the wire.
pub const REQUEST_HEADER_LEN: usize = 32;
/// Offset of the `attempt` byte in a request header (see [`RequestHeader::mark_retry`]).
const OFF_ATTEMPT: usize = 11;

/// Header of a request record.
/// ```text
/// 0  8  job_id u64
/// 8  1  kind u8
/// 9  1  gzip level u8 (0..=9)
/// 10 1  severity u8
/// 11 1  attempt u8 (0 first try, 1 retry)
/// 12 2  key_len u16 (0: the object is named by evidence_id)
/// 14 1  flags u8: bit 0 = the pool generated evidence_id (see `pool_evidence_id`)
/// 15 1  reserved, 0
/// 16 16 evidence_id (UUID bytes)
/// ```
/// `parse` enforces: known kind and severity, level `0..=9`, attempt `0..=1`, no flag but
/// bit 0, bit 0 only without a key, reserved 0,
/// `key_len` 0 except for Evacuate, Restore and Erase, at least `key_len` bytes after the
/// header, and for Restore and Erase nothing after the key. The key text itself is checked
/// by [`RequestHeader::split_key`].
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
    /// Length of the evidence key that follows the header (0: none).
    pub key_len: u16,
    /// The pool generated `evidence_id` for this job (a fresh UUIDv7) rather than taking it
    /// from the submitter, and no key was given: the object it names is written by this job's
    /// attempts and nobody else's, so a store needs no check that the name is free before
    /// writing it (the S3 store skips its HEAD). Byte 14, bit 0.
    pub pool_evidence_id: bool,
}

/// Offset of the flags byte in a request header.
const OFF_FLAGS: usize = 14;
/// Flags bit: [`RequestHeader::pool_evidence_id`].
const FLAG_POOL_EVIDENCE_ID: u8 = 1;

/// Longest caller-chosen evidence key.
pub const MAX_EVIDENCE_KEY: usize = 200;

/// Checks a caller-chosen evidence key: 1..=200 bytes of ASCII letters, digits and `- _ . :`,
/// the first one a letter or digit, no `..`. Such a key is one path segment with no tricks,
/// and `<category>:<64 hex sha256>` (the origin's evidence signature) is one. Returns what is
/// wrong otherwise.
pub fn check_evidence_key(key: &[u8]) -> Result<&str, &'static str> {
    if key.is_empty() {
        return Err("evidence key is empty");
    }
    if key.len() > MAX_EVIDENCE_KEY {
        return Err("evidence key is longer than 200 bytes");
    }
    if !key[0].is_ascii_alphanumeric() {
        return Err("evidence key does not start with a letter or digit");
    }
    if !key
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    {
        return Err("evidence key has a character other than A-Z a-z 0-9 - _ . :");
    }
    if key.windows(2).any(|w| w == b"..") {
        return Err("evidence key contains \"..\"");
    }
    // All ASCII, checked above.
    std::str::from_utf8(key).map_err(|_| "evidence key is not UTF-8")
}

impl RequestHeader {
    /// Serialises into exactly `REQUEST_HEADER_LEN` bytes.
    ///
    /// Writes the fields as they are; a header that breaks a rule of `parse` (e.g. level 10)
    /// is written faithfully and refused by the reader.
    pub fn to_bytes(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..8].copy_from_slice(&self.job_id.to_le_bytes());
        b[8] = self.kind as u8;
        b[9] = self.level;
        b[10] = self.severity as u8;
        b[OFF_ATTEMPT] = self.attempt;
        b[12..14].copy_from_slice(&self.key_len.to_le_bytes());
        if self.pool_evidence_id {
            b[OFF_FLAGS] = FLAG_POOL_EVIDENCE_ID;
        }
        // b[15]: reserved, 0.
        b[16..32].copy_from_slice(&self.evidence_id);
        b
    }
    /// Parses the header at the start of `payload`; returns it and the body after it.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        if payload.len() < REQUEST_HEADER_LEN {
            return Err(malformed("request shorter than its 32-byte header"));
        }
        let (b, body) = payload.split_at(REQUEST_HEADER_LEN);
        let kind =
            JobKind::from_u8(b[8]).map_err(|_| malformed("request job kind is not 0..=5"))?;
        let level = b[9];
        if level > 9 {
            return Err(malformed("request gzip level is above 9"));
        }
        let severity =
            Severity::from_u8(b[10]).map_err(|_| malformed("request severity is not 0..=3"))?;
        let attempt = b[OFF_ATTEMPT];
        if attempt > 1 {
            return Err(malformed("request attempt is neither 0 nor 1"));
        }
        let flags = b[OFF_FLAGS];
        if flags & !FLAG_POOL_EVIDENCE_ID != 0 {
            return Err(malformed("request flags has a bit other than bit 0"));
        }
        if b[15] != 0 {
            return Err(malformed("request reserved byte 15 is not 0"));
        }
        let key_len = le_u16(b, 12);
        let pool_evidence_id = flags & FLAG_POOL_EVIDENCE_ID != 0;
        if pool_evidence_id && key_len != 0 {
            return Err(malformed(
                "request marks a pool evidence id but carries a key",
            ));
        }
        if key_len != 0 && !matches!(kind, JobKind::Evacuate | JobKind::Restore | JobKind::Erase) {
            return Err(malformed("request key on a job that stores nothing"));
        }
        if body.len() < usize::from(key_len) {
            return Err(malformed("request shorter than its announced key"));
        }
        if matches!(kind, JobKind::Restore | JobKind::Erase) && body.len() != usize::from(key_len) {
            return Err(malformed("restore or erase request carries a body"));
        }
        let mut evidence_id = [0u8; 16];
        evidence_id.copy_from_slice(&b[16..32]);
        let header = RequestHeader {
            job_id: le_u64(b, 0),
            kind,
            level,
            severity,
            attempt,
            evidence_id,
            key_len,
            pool_evidence_id,
        };
        Ok((header, body))
    }
}

impl RequestHeader {
    /// Marks a request record (a header as written by [`Self::to_bytes`], then key and body)
    /// as the retry: sets its `attempt` field to 1 in place and leaves every other byte as it
    /// is. Used on the supervisor's own copy of a record that is placed again after its hound
    /// died. Fails with [`ProtocolError::MalformedRecord`] (and changes nothing) if `record`
    /// is shorter than a header.
    pub fn mark_retry(record: &mut [u8]) -> Result<(), ProtocolError> {
        if record.len() < REQUEST_HEADER_LEN {
            return Err(malformed("request shorter than its 32-byte header"));
        }
        record[OFF_ATTEMPT] = 1;
        Ok(())
    }

    /// Splits what follows the header into the evidence key (checked with
    /// [`check_evidence_key`]) and the body. `rest` is the body returned by [`Self::parse`].
    pub fn split_key<'a>(
        &self,
        rest: &'a [u8],
    ) -> Result<(Option<&'a str>, &'a [u8]), ProtocolError> {
        if self.key_len == 0 {
            return Ok((None, rest));
        }
        let n = usize::from(self.key_len);
        let (key, body) = rest
            .split_at_checked(n)
            .ok_or_else(|| malformed("request shorter than its announced key"))?;
        let key = check_evidence_key(key).map_err(malformed)?;
        Ok((Some(key), body))
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
    /// (9) Create-only evacuate: other bytes are already stored under the object key (the
    /// stored object is unchanged).
    AlreadyExists = 9,
}

impl FailCode {
    /// Wire value → code.
    pub fn from_u16(v: u16) -> Result<Self, ProtocolError> {
        match v {
            1 => Ok(FailCode::InvalidRequest),
            2 => Ok(FailCode::EvidenceTooLarge),
            3 => Ok(FailCode::IntegrityViolation),
            4 => Ok(FailCode::DecompressionLimit),
            5 => Ok(FailCode::ColdStorageUnavailable),
            6 => Ok(FailCode::NotFound),
            7 => Ok(FailCode::ColdStorageRejected),
            8 => Ok(FailCode::Internal),
            9 => Ok(FailCode::AlreadyExists),
            _ => Err(malformed("fail code is not 1..=9")),
        }
    }
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            FailCode::InvalidRequest => "invalid_request",
            FailCode::EvidenceTooLarge => "evidence_too_large",
            FailCode::IntegrityViolation => "integrity_violation",
            FailCode::DecompressionLimit => "decompression_limit",
            FailCode::ColdStorageUnavailable => "cold_storage_unavailable",
            FailCode::NotFound => "not_found",
            FailCode::ColdStorageRejected => "cold_storage_rejected",
            FailCode::Internal => "internal",
            FailCode::AlreadyExists => "already_exists",
        }
    }
}

impl FailCode {
    /// All codes, in wire order.
    pub const ALL: [FailCode; 9] = [
        FailCode::InvalidRequest,
        FailCode::EvidenceTooLarge,
        FailCode::IntegrityViolation,
        FailCode::DecompressionLimit,
        FailCode::ColdStorageUnavailable,
        FailCode::NotFound,
        FailCode::ColdStorageRejected,
        FailCode::Internal,
        FailCode::AlreadyExists,
    ];
}

/// Largest failure message a completion may carry.
pub const MAX_FAIL_MESSAGE: usize = 512;

/// The longest prefix of `message` that is a valid failure body: at most
/// [`MAX_FAIL_MESSAGE`] bytes, cut on a character boundary (so still UTF-8).
pub fn truncate_fail_message(message: &str) -> &str {
    if message.len() <= MAX_FAIL_MESSAGE {
        return message;
    }
    let mut end = MAX_FAIL_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Header of a completion record.
/// ```text
/// 0  8  job_id u64
/// 8  1  kind u8
/// 9  1  status u8 (0 ok, 1 failed)
/// 10 2  fail code u16 (0 when ok)
/// 12 4  flags u32: bit 0 = spooled (Evacuate written to the local spool); others 0
/// ```
/// `parse` enforces: known kind; status 0 or 1; fail code 0 when ok and a known code
/// (1..=9) when failed; no flag bits but bit 0, and bit 0 only on an ok Evacuate; and the
/// body shape of the module table: an ok Evacuate body is exactly
/// [`EVACUATE_RECEIPT_LEN`] bytes (its fields are checked by [`EvacuateReceipt::parse`]), an
/// ok Erase body is one byte, 0 or 1 (whether the object existed), a failed body is UTF-8 of at most [`MAX_FAIL_MESSAGE`] bytes (see
/// [`truncate_fail_message`]). That the job id and kind match an outstanding request is
/// the caller's check.
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
    ///
    /// Writes the fields as they are; `parse` decides whether they are acceptable.
    pub fn to_bytes(&self) -> [u8; COMPLETION_HEADER_LEN] {
        let (status, code) = match self.status {
            CompletionStatus::Ok => (0u8, 0u16),
            CompletionStatus::Failed(code) => (1, code as u16),
        };
        let mut b = [0u8; COMPLETION_HEADER_LEN];
        b[0..8].copy_from_slice(&self.job_id.to_le_bytes());
        b[8] = self.kind as u8;
        b[9] = status;
        b[10..12].copy_from_slice(&code.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
    /// Parses and validates an untrusted completion payload; returns the header and body.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        if payload.len() < COMPLETION_HEADER_LEN {
            return Err(malformed("completion shorter than its 16-byte header"));
        }
        let (b, body) = payload.split_at(COMPLETION_HEADER_LEN);
        Ok((Self::parse_parts(b, body)?, body))
    }
    /// [`Self::parse`] for a payload already split into its header bytes `head` and its `body`
    /// (as `region::CompletionReader::pop_split` copies it out): the same checks, the header
    /// against the body included. `head` must be exactly `COMPLETION_HEADER_LEN` bytes.
    pub fn parse_parts(head: &[u8], body: &[u8]) -> Result<Self, ProtocolError> {
        if head.len() != COMPLETION_HEADER_LEN {
            return Err(malformed("completion shorter than its 16-byte header"));
        }
        let b = head;
        let kind =
            JobKind::from_u8(b[8]).map_err(|_| malformed("completion job kind is not 0..=5"))?;
        let code = le_u16(b, 10);
        let status = match b[9] {
            0 if code != 0 => return Err(malformed("ok completion carries a nonzero fail code")),
            0 => CompletionStatus::Ok,
            1 if code == 0 => return Err(malformed("failed completion carries fail code 0")),
            1 => CompletionStatus::Failed(
                FailCode::from_u16(code)
                    .map_err(|_| malformed("failed completion fail code is not 1..=9"))?,
            ),
            _ => {
                return Err(malformed(
                    "completion status is neither 0 (ok) nor 1 (failed)",
                ))
            }
        };
        let flags = le_u32(b, 12);
        if flags & !COMPLETION_FLAG_SPOOLED != 0 {
            return Err(malformed("completion flags has reserved bits set"));
        }
        let ok = status == CompletionStatus::Ok;
        if flags & COMPLETION_FLAG_SPOOLED != 0 && !(ok && kind == JobKind::Evacuate) {
            return Err(malformed(
                "spooled flag on a completion that is not an ok evacuate",
            ));
        }
        match (status, kind) {
            (CompletionStatus::Failed(_), _) => {
                if body.len() > MAX_FAIL_MESSAGE {
                    return Err(malformed("failure message longer than 512 bytes"));
                }
                if std::str::from_utf8(body).is_err() {
                    return Err(malformed("failure message is not UTF-8"));
                }
            }
            (CompletionStatus::Ok, JobKind::Evacuate) if body.len() != EVACUATE_RECEIPT_LEN => {
                return Err(malformed("evacuate receipt is not exactly 72 bytes"));
            }
            (CompletionStatus::Ok, JobKind::Erase) if !matches!(body, [0] | [1]) => {
                return Err(malformed("ok erase completion body is not one 0/1 byte"));
            }
            (CompletionStatus::Ok, _) => {}
        }
        Ok(CompletionHeader {
            job_id: le_u64(b, 0),
            kind,
            status,
            flags,
        })
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
        let mut b = [0u8; EVACUATE_RECEIPT_LEN];
        b[0..16].copy_from_slice(&self.evidence_id);
        b[16..20].copy_from_slice(&self.original_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.compressed_size.to_le_bytes());
        b[24..56].copy_from_slice(&self.sha256);
        b[56..64].copy_from_slice(&self.encode_ns.to_le_bytes());
        b[64..72].copy_from_slice(&self.store_ns.to_le_bytes());
        b
    }
    /// Parses an untrusted receipt body (must be exactly `EVACUATE_RECEIPT_LEN` bytes).
    ///
    /// Every bit pattern of the fields is representable, so the length is the only rule
    /// checked here; whether the evidence id, sizes and hash are the expected ones is the
    /// caller's check.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() != EVACUATE_RECEIPT_LEN {
            return Err(malformed("evacuate receipt is not exactly 72 bytes"));
        }
        let mut evidence_id = [0u8; 16];
        evidence_id.copy_from_slice(&body[0..16]);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&body[24..56]);
        Ok(EvacuateReceipt {
            evidence_id,
            original_size: le_u32(body, 16),
            compressed_size: le_u32(body, 20),
            sha256,
            encode_ns: le_u64(body, 56),
            store_ns: le_u64(body, 64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_wire_values_and_names() {
        for (i, k) in JobKind::ALL.iter().enumerate() {
            assert_eq!(*k as u8 as usize, i);
            assert_eq!(JobKind::from_u8(i as u8).unwrap(), *k);
        }
        let names: Vec<_> = JobKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            ["noop", "encode", "evacuate", "restore", "erase", "decode"]
        );
        for (i, s) in Severity::ALL.iter().enumerate() {
            assert_eq!(Severity::from_u8(i as u8).unwrap(), *s);
        }
        let names: Vec<_> = Severity::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["low", "medium", "high", "critical"]);
        for (i, c) in FailCode::ALL.iter().enumerate() {
            assert_eq!(*c as u16 as usize, i + 1);
            assert_eq!(FailCode::from_u16(i as u16 + 1).unwrap(), *c);
        }
        let names: Vec<_> = FailCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "invalid_request",
                "evidence_too_large",
                "integrity_violation",
                "decompression_limit",
                "cold_storage_unavailable",
                "not_found",
                "cold_storage_rejected",
                "internal",
                "already_exists"
            ]
        );
        assert!(JobKind::from_u8(6).is_err());
        assert!(Severity::from_u8(4).is_err());
        assert!(FailCode::from_u16(0).is_err());
        assert!(FailCode::from_u16(10).is_err());
    }

    #[test]
    fn parse_parts_checks_the_header_against_the_body_like_parse() {
        let ok = |kind| CompletionHeader {
            job_id: 9,
            kind,
            status: CompletionStatus::Ok,
            flags: 0,
        };
        let cases: [(CompletionHeader, &[u8]); 4] = [
            (ok(JobKind::Evacuate), &[0u8; EVACUATE_RECEIPT_LEN]),
            (ok(JobKind::Evacuate), &[0u8; 3]),
            (ok(JobKind::Erase), &[1]),
            (ok(JobKind::Erase), &[2]),
        ];
        for (h, body) in cases {
            let head = h.to_bytes();
            let mut whole = head.to_vec();
            whole.extend_from_slice(body);
            let split = CompletionHeader::parse_parts(&head, body).ok();
            let joined = CompletionHeader::parse(&whole).ok().map(|(h, _)| h);
            assert_eq!(split, joined, "{h:?} with {} body bytes", body.len());
        }
        assert!(CompletionHeader::parse_parts(&[0u8; 15], &[]).is_err());
    }

    #[test]
    fn mark_retry_sets_only_the_attempt() {
        let first = RequestHeader {
            job_id: 0x0102_0304_0506_0708,
            kind: JobKind::Evacuate,
            level: 9,
            severity: Severity::Critical,
            attempt: 0,
            evidence_id: [0xee; 16],
            key_len: 3,
            pool_evidence_id: false,
        };
        let mut record = first.to_bytes().to_vec();
        record.extend_from_slice(b"keybody");
        let before = record.clone();
        RequestHeader::mark_retry(&mut record).unwrap();
        let (parsed, rest) = RequestHeader::parse(&record).unwrap();
        assert_eq!(
            parsed,
            RequestHeader {
                attempt: 1,
                ..first
            }
        );
        assert_eq!(rest, b"keybody");
        let changed: Vec<usize> = (0..record.len())
            .filter(|&i| record[i] != before[i])
            .collect();
        assert_eq!(changed, [OFF_ATTEMPT]);
        // Marking twice is marking once.
        RequestHeader::mark_retry(&mut record).unwrap();
        assert_eq!(RequestHeader::parse(&record).unwrap().0.attempt, 1);
        // Too short for a header: an error, nothing written.
        let mut short = before[..REQUEST_HEADER_LEN - 1].to_vec();
        assert!(matches!(
            RequestHeader::mark_retry(&mut short),
            Err(ProtocolError::MalformedRecord { .. })
        ));
        assert_eq!(short, before[..REQUEST_HEADER_LEN - 1]);
    }

    #[test]
    fn truncate_fail_message_keeps_utf8() {
        assert_eq!(truncate_fail_message("short"), "short");
        let exact = "a".repeat(MAX_FAIL_MESSAGE);
        assert_eq!(truncate_fail_message(&exact), exact);
        // 511 ASCII bytes then a 3-byte character straddling the limit.
        let straddle = format!("{}€tail", "a".repeat(MAX_FAIL_MESSAGE - 1));
        let t = truncate_fail_message(&straddle);
        assert_eq!(t.len(), MAX_FAIL_MESSAGE - 1);
        assert!(straddle.starts_with(t));
    }
}
