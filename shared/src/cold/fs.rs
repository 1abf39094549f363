//! Filesystem cold store (the embedded default).
//! STUB CONTRACT: the helper implements atomic put (temp file in the same directory, write,
//! fsync, rename, fsync directory), get with a size check before reading, delete (fsync dir),
//! list (recursive, keys relative to the root with '/' separators, temp files excluded).

use super::{ColdStore, PutOutcome};
use crate::SharedError;

/// A directory of envelopes. Keys map to paths below `root` ('/' in keys makes subdirectories).
#[derive(Debug)]
pub struct FsStore {
    _private: (),
}

impl FsStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl AsRef<std::path::Path>) -> Result<Self, SharedError> {
        let _ = root;
        todo!()
    }
}

impl ColdStore for FsStore {
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, SharedError> {
        let _ = (key, envelope);
        todo!()
    }
    fn get(&mut self, key: &str, max_len: usize) -> Result<Vec<u8>, SharedError> {
        let _ = (key, max_len);
        todo!()
    }
    fn delete(&mut self, key: &str) -> Result<bool, SharedError> {
        let _ = key;
        todo!()
    }
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, SharedError> {
        let _ = prefix;
        todo!()
    }
    fn describe(&self) -> String {
        todo!()
    }
}
