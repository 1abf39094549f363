//! S3-compatible cold store (rusty-s3 signing + ureq blocking HTTP).
//! STUB: implemented with the daemon / S3 issue.

use super::{ColdStore, PutOutcome};
use crate::SharedError;
use houndpool_protocol::messages::S3Target;

/// An S3 bucket (and prefix) reached over HTTP(S).
#[derive(Debug)]
pub struct S3Store {
    _private: (),
}

impl S3Store {
    /// Prepares a client for `target` (no network traffic yet).
    pub fn open(target: &S3Target) -> Result<Self, SharedError> {
        let _ = target;
        Err(SharedError::ColdUnavailable {
            reason: "the S3 backend is not built yet".into(),
        })
    }
}

impl ColdStore for S3Store {
    fn put(&mut self, _key: &str, _envelope: &[u8]) -> Result<PutOutcome, SharedError> {
        Err(SharedError::ColdNotConfigured)
    }
    fn get(&mut self, _key: &str, _max_len: usize) -> Result<Vec<u8>, SharedError> {
        Err(SharedError::ColdNotConfigured)
    }
    fn delete(&mut self, _key: &str) -> Result<bool, SharedError> {
        Err(SharedError::ColdNotConfigured)
    }
    fn list(&mut self, _prefix: &str) -> Result<Vec<String>, SharedError> {
        Err(SharedError::ColdNotConfigured)
    }
    fn describe(&self) -> String {
        "s3 (not built)".into()
    }
}
