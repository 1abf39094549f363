//! Cold storage: where evacuated evidence envelopes live. This crate is what the hound links
//! for it; the supervisor uses only its object keys and size bounds.
//!
//! Objects are THCS envelopes stored under `<prefix><evidence-id>.thcs`. Backends: [`fs`]
//! (the embedded default) and [`s3`] (any S3-compatible service). The hound opens the backend
//! named in its handshake; the supervisor never touches object contents.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
pub mod fs;
pub mod s3;

pub use error::ColdError;
use houndpool_protocol::control::{ColdEndpoints, ColdTarget};

/// Longest object key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// What `put` did with the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object is durably stored at the target.
    Stored,
    /// The target was unreachable; the envelope is durably in the local spool and will be
    /// uploaded by the drainer.
    Spooled,
}

/// One envelope of a [`ColdStore::put_batch`].
#[derive(Debug, Clone, Copy)]
pub struct PutItem<'a> {
    /// Object key (validated by the backend, as for `put`).
    pub key: &'a str,
    /// The envelope bytes.
    pub envelope: &'a [u8],
    /// Who named the object, which decides what a store must check before writing it.
    pub origin: KeyOrigin,
}

/// Who named the object a [`PutItem`] stores. Every origin gets create-only semantics (an
/// existing object with other bytes is [`ColdError::AlreadyExists`] where the store can see
/// it); the origin says how soon a store must be able to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The submitter chose the key (an evidence key). Two jobs may race for one key with
    /// different bytes, and create-only must be decided at once: the filesystem store's
    /// journal mode stores such items per file (a create-only `link`), never in a journal,
    /// whose writer cannot see the other writers' journals.
    SubmitterKey,
    /// Derived from an evidence id the submitter gave: unique only as far as the submitter
    /// keeps its ids unique, so a store checks that the name is free as for any key (the S3
    /// store's HEAD before its conditional PUT).
    SubmitterId,
    /// Derived from an evidence id the pool generated for this job (a fresh UUIDv7): nobody
    /// but this job's own attempts, with the same evidence, writes it. A store may skip
    /// checking that the name is free: the S3 store sends its conditional PUT without the
    /// HEAD, and a server that ignores `If-None-Match` at worst replaces an earlier attempt's
    /// envelope of the same evidence.
    PoolId,
}

/// A cold-storage backend. Implementations must make `put` atomic: after an error no partial
/// object is visible under the key.
pub trait ColdStore: Send {
    /// Stores `envelope` under `key`, atomically, replacing nothing partial.
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, ColdError>;
    /// Stores several envelopes; returns one result per item, in the order of `items`, each
    /// with exactly the meaning [`ColdStore::put`] would give it. Nothing is returned before
    /// every `Ok` in the answer is as durable as `put` makes it, so a caller may report them
    /// in any order once this returns. Backends override it to share work between the items
    /// (the filesystem store syncs a batch together, the S3 store uploads several at once);
    /// the default calls `put` for each item in turn.
    fn put_batch(&mut self, items: &[PutItem<'_>]) -> Vec<Result<PutOutcome, ColdError>> {
        items.iter().map(|i| self.put(i.key, i.envelope)).collect()
    }
    /// Most items a caller should pass to one [`ColdStore::put_batch`]: more would only make
    /// the first of them wait longer for its result. Default: no limit of the store's own (the
    /// filesystem store; the caller bounds its batches). The S3 store answers its upload
    /// concurrency, so a batch takes about as long as one upload (retries included) and a
    /// job's result is never held back behind a queue of uploads.
    fn max_batch(&self) -> usize {
        usize::MAX
    }
    /// Reads the object under `key`; refuses objects larger than `max_len` without reading them.
    fn get(&mut self, key: &str, max_len: usize) -> Result<Vec<u8>, ColdError>;
    /// Deletes the object; returns whether it existed.
    fn delete(&mut self, key: &str) -> Result<bool, ColdError>;
    /// Lists keys that start with `prefix`, in no particular order.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ColdError>;
    /// One-line description for logs (no secrets).
    fn describe(&self) -> String;
    /// Housekeeping the owner runs while idle (the S3 backend uploads its spool). Must return
    /// quickly: implementations bound the work they do per call. Returns whether more is
    /// waiting that another call right away would do: the owner then calls again as soon as
    /// it has no work of its own, instead of after its idle period. Default: nothing
    /// (`false`).
    fn background_work(&mut self) -> Result<bool, ColdError> {
        Ok(false)
    }
    /// Takes the resolved addresses and trusted CA of a network target (control message
    /// `ColdEndpoints`). Default: nothing to do (the filesystem store).
    fn set_endpoints(&mut self, _endpoints: &ColdEndpoints) -> Result<(), ColdError> {
        Ok(())
    }
}

/// The object key of an evidence id: `<prefix><uuid>.thcs` (hyphenated lowercase UUID).
pub fn object_key(prefix: &str, evidence_id: &[u8; 16]) -> String {
    format!(
        "{prefix}{}.thcs",
        uuid::Uuid::from_bytes(*evidence_id).hyphenated()
    )
}

/// The object key of a job: `<prefix><key>.thcs` for a caller-chosen evidence key (checked
/// by `houndpool_protocol::job::check_evidence_key` before it gets here), else
/// [`object_key`] of the evidence id.
pub fn object_key_for(prefix: &str, evidence_id: &[u8; 16], key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{prefix}{k}.thcs"),
        None => object_key(prefix, evidence_id),
    }
}

/// Checks that a key is usable by every backend: non-empty, at most [`MAX_KEY_LEN`] bytes, no
/// NUL, not absolute, no `.` or `..` or empty path segment.
pub fn validate_key(key: &str) -> Result<(), ColdError> {
    let bad = |reason| {
        Err(ColdError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    if key.starts_with('/') {
        return bad("absolute");
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Opens the backend a hound was told to use.
pub fn open(target: &ColdTarget) -> Result<Box<dyn ColdStore>, ColdError> {
    match target {
        ColdTarget::None => Err(ColdError::ColdNotConfigured),
        ColdTarget::Filesystem { root, .. } => Ok(Box::new(fs::FsStore::open(root)?)),
        ColdTarget::S3(t) => Ok(Box::new(s3::S3Store::open(t)?)),
    }
}

/// Opens the backend inside a hound: like [`open`], but an S3 store never looks names up
/// (the sandbox has no resolver); it connects only to the addresses the supervisor sends
/// (`ColdEndpoints`, see [`ColdStore::set_endpoints`]), runs up to `s3_concurrency`
/// uploads at once ([`s3::S3Tuning::concurrency`]) and bounds each operation by
/// `s3_deadline` ([`s3::S3Tuning::operation_deadline`]) and drains spooled envelopes of at
/// most `max_envelope` bytes ([`s3::S3Tuning::max_envelope_bytes`]); a filesystem store
/// commits as `fs_commit` says ([`fs::FsStore::set_commit`]).
pub fn open_for_hound(
    target: &ColdTarget,
    s3_concurrency: usize,
    s3_deadline: Option<std::time::Duration>,
    max_envelope: usize,
    fs_commit: fs::Commit,
) -> Result<Box<dyn ColdStore>, ColdError> {
    match target {
        ColdTarget::Filesystem { root, .. } => {
            let mut store = fs::FsStore::open(root)?;
            store.set_commit(fs_commit);
            Ok(Box::new(store))
        }
        ColdTarget::S3(t) => Ok(Box::new(s3::S3Store::open_pinned(
            t,
            hound_s3_tuning(s3_concurrency, s3_deadline, max_envelope),
        )?)),
        other => open(other),
    }
}

/// A hound's S3 tuning ([`open_for_hound`]). With an operation deadline, a claim on a spool
/// record is taken back as stale after twelve deadlines (at least a minute, at most the
/// default 15 minutes): no upload of a hound lasts that long, so such a claim belongs to a
/// hound that died (SIGKILL, OOM) or is frozen, and its records drain a minute later rather
/// than fifteen. Taking back the claim of a drainer that is merely slow (another process
/// without a deadline) costs a second upload of the same bytes, never the object (a drainer
/// whose claim was taken back leaves it: docs/S3.md, "Erasure wins").
fn hound_s3_tuning(
    concurrency: usize,
    deadline: Option<std::time::Duration>,
    max_envelope: usize,
) -> s3::S3Tuning {
    let default = s3::S3Tuning::default();
    s3::S3Tuning {
        concurrency,
        operation_deadline: deadline,
        max_envelope_bytes: max_envelope,
        claim_stale_after: deadline.map_or(default.claim_stale_after, |d| {
            d.saturating_mul(12).clamp(
                std::time::Duration::from_secs(60),
                default.claim_stale_after,
            )
        }),
        ..default
    }
}

/// The envelope bound, declared once in the protocol crate (re-exported for this crate's
/// users).
pub use houndpool_protocol::envelope::max_envelope_len;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hounds_claims_go_stale_after_twelve_deadlines_within_one_to_fifteen_minutes() {
        use std::time::Duration;
        let stale = |d: Option<u64>| {
            hound_s3_tuning(4, d.map(Duration::from_secs), 1 << 20).claim_stale_after
        };
        assert_eq!(stale(Some(5)), Duration::from_secs(60));
        assert_eq!(stale(Some(1)), Duration::from_secs(60));
        assert_eq!(stale(Some(30)), Duration::from_secs(360));
        assert_eq!(stale(Some(3600)), Duration::from_secs(900));
        assert_eq!(stale(None), Duration::from_secs(900));
        let t = hound_s3_tuning(4, Some(Duration::from_secs(5)), 1 << 20);
        assert_eq!((t.concurrency, t.max_envelope_bytes), (4, 1 << 20));
    }

    #[test]
    fn keys_are_prefix_uuid_thcs() {
        let id = [0x11u8; 16];
        assert_eq!(
            object_key("ev/", &id),
            "ev/11111111-1111-1111-1111-111111111111.thcs"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_reason() {
        for k in ["", "/abs", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(
                matches!(validate_key(k), Err(ColdError::InvalidKey { .. })),
                "{k:?}"
            );
        }
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(validate_key("evidence/2026/abc.thcs").is_ok());
    }
}
