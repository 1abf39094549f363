//! The one error type of this crate.

/// Errors of cold storage: keys, objects, the filesystem store, the S3 client and its spool.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    /// A configuration value is not allowed.
    #[error("invalid configuration: {key} = {value:?}: {allowed}")]
    InvalidConfig {
        /// Dotted key, e.g. `pool.size`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// An object key is unusable (empty, absolute, `..`, NUL, too long).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The object does not exist.
    #[error("object {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Create-only write refused: another object with different bytes is already stored under
    /// the key (the same bytes again are an idempotent success, never this error).
    #[error(
        "object {key:?} already exists with different contents; evidence is never overwritten"
    )]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The object is larger than the caller allows to be read.
    #[error("object {key:?} is {len} bytes, above the limit of {max}")]
    ObjectTooLarge {
        /// The key.
        key: String,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A local filesystem operation of the cold store failed.
    #[error("cold store {op} of {key:?} failed: {source}")]
    ColdIo {
        /// Operation (put, get, delete, list, fsync...).
        op: &'static str,
        /// Key or path concerned.
        key: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cold store could not be reached (after retries): transient in nature.
    #[error("cold storage unavailable: {reason}")]
    ColdUnavailable {
        /// What failed last.
        reason: String,
    },
    /// The cold store answered but refused (credentials, permissions, missing bucket).
    #[error("cold storage rejected {op}: HTTP {status}: {reason}")]
    ColdRejected {
        /// Operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Body or reason phrase.
        reason: String,
    },
    /// No cold store is configured.
    #[error("no cold storage is configured")]
    ColdNotConfigured,
    /// Envelope or wire format error.
    #[error(transparent)]
    Protocol(#[from] houndpool_protocol::ProtocolError),
}
