//! Filesystem cold store (the embedded default).
//!
//! Layout: the object under key `k` is the regular file `<root>/k`; '/' in a key makes
//! subdirectories. Writes are atomic and durable:
//! 1. create the key's missing parent directories one by one, fsyncing each new directory's
//!    parent so the new entry survives a crash;
//! 2. create a fresh temp file `.tmp-<pid>-<random hex>` in the target directory (`O_EXCL`);
//! 3. write the whole envelope, `fsync` the file;
//! 4. `rename` it onto the final name (atomic replace within one directory);
//! 5. `fsync` the directory so the rename itself is durable.
//!
//! On any failure before the rename the temp file is removed, so no partial object is ever
//! visible under the key (a reader sees the old object or the new one, never a mix). A failure
//! of step 5 is reported although the complete object is already visible; retrying the put is
//! idempotent. Temp files left behind by a crash are never listed and never returned.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{validate_key, ColdStore, PutOutcome};
use crate::SharedError;

/// File-name prefix of in-flight writes. Keys with a segment starting with it are refused, so
/// an object can never be mistaken for a temp file (or vice versa).
pub const TEMP_PREFIX: &str = ".tmp-";

/// How many random temp names `put` tries before giving up (a collision needs the same pid and
/// the same 64 random bits, so more than one attempt is already paranoia).
const TEMP_ATTEMPTS: u32 = 8;

/// A directory of envelopes. Keys map to paths below `root` ('/' in keys makes subdirectories).
///
/// Invariants: `root` is the canonical absolute path of an existing directory, fixed at
/// [`FsStore::open`]; every path the store touches is `root` joined with a key accepted by
/// [`validate_key`] (hence relative and free of `.`/`..`), so it stays below `root` unless an
/// operator placed symlinks inside it.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) the store rooted at `root`.
    ///
    /// Creates `root` and its missing ancestors, then remembers its canonical path (symlinks
    /// and `..` resolved), so later changes of the working directory do not matter. Fails with
    /// [`SharedError::ColdIo`] when it cannot be created or is not a directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, SharedError> {
        let root = root.as_ref();
        let shown = || root.display().to_string();
        fs::create_dir_all(root).map_err(|e| cold_io("open: create root", shown(), e))?;
        let root = fs::canonicalize(root).map_err(|e| cold_io("open: canonicalize", shown(), e))?;
        let meta = fs::metadata(&root).map_err(|e| cold_io("open: stat", shown(), e))?;
        if !meta.is_dir() {
            return Err(cold_io(
                "open",
                shown(),
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Ok(Self { root })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`'s object, after validating the key.
    fn path_of(&self, key: &str) -> Result<PathBuf, SharedError> {
        validate_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(TEMP_PREFIX)) {
            return Err(SharedError::InvalidKey {
                key: key.chars().take(200).collect(),
                reason: "a segment starts with the temp-file prefix \".tmp-\"",
            });
        }
        Ok(self.root.join(key))
    }

    /// Creates the directories of `key`'s parent segments that are missing, fsyncing the
    /// parent of each one created. An existing non-directory in the way makes a later step
    /// fail with `ENOTDIR`.
    fn create_parents(&self, key: &str) -> Result<(), SharedError> {
        let Some((dirs, _file)) = key.rsplit_once('/') else {
            return Ok(());
        };
        let mut dir = self.root.clone();
        for seg in dirs.split('/') {
            let parent = dir.clone();
            dir.push(seg);
            match fs::create_dir(&dir) {
                Ok(()) => sync_dir(&parent).map_err(|e| cold_io("put: fsync dir", key, e))?,
                // Possibly created concurrently by another hound; if it is not a directory
                // the next step fails with ENOTDIR.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cold_io("put: create dir", key, e)),
            }
        }
        Ok(())
    }
}

impl ColdStore for FsStore {
    /// Atomic, durable put (see the module docs for the exact sequence). Replaces an existing
    /// object under the same key atomically. Never leaves a temp file behind on error (short of
    /// a crash, and of the cleanup `unlink` itself failing).
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, SharedError> {
        let path = self.path_of(key)?;
        // `path` is `root` joined with a non-empty relative key, so it always has a parent.
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_parents(key)?;

        let (tmp_path, mut file) =
            create_temp(&dir).map_err(|e| cold_io("put: create temp", key, e))?;
        let written = file
            .write_all(envelope)
            .map_err(|e| ("put: write", e))
            .and_then(|()| file.sync_all().map_err(|e| ("put: fsync", e)));
        drop(file);
        let renamed =
            written.and_then(|()| fs::rename(&tmp_path, &path).map_err(|e| ("put: rename", e)));
        if let Err((op, e)) = renamed {
            // Best effort: the error that matters is the original one.
            let _ = fs::remove_file(&tmp_path);
            return Err(cold_io(op, key, e));
        }
        sync_dir(&dir).map_err(|e| cold_io("put: fsync dir", key, e))?;
        Ok(PutOutcome::Stored)
    }

    /// Reads the object. Refuses with [`SharedError::ObjectTooLarge`] when the file's size is
    /// above `max_len`, before reading any of it, and never reads more than `max_len + 1`
    /// bytes even if the file grows meanwhile. A missing key, a key below a non-directory, or
    /// a key naming a directory is [`SharedError::NotFound`].
    fn get(&mut self, key: &str, max_len: usize) -> Result<Vec<u8>, SharedError> {
        let path = self.path_of(key)?;
        let not_found = || SharedError::NotFound {
            key: key.to_owned(),
        };
        let mut file = match OpenOptions::new()
            .read(true)
            // Never block in open() should someone have put a FIFO in the store; no effect on
            // regular files.
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(cold_io("get: open", key, e)),
        };
        let meta = file.metadata().map_err(|e| cold_io("get: stat", key, e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let max = max_len as u64;
        if meta.len() > max {
            return Err(SharedError::ObjectTooLarge {
                key: key.to_owned(),
                len: meta.len(),
                max,
            });
        }
        // meta.len() <= max_len, a usize.
        let mut buf = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| cold_io("get: read", key, e))?;
        if buf.len() > max_len {
            return Err(SharedError::ObjectTooLarge {
                key: key.to_owned(),
                len: buf.len() as u64,
                max,
            });
        }
        Ok(buf)
    }

    /// Removes the object and fsyncs its directory. `Ok(false)` when there was no object under
    /// the key (missing, below a non-directory, or a directory). Empty parent directories are
    /// left in place.
    fn delete(&mut self, key: &str) -> Result<bool, SharedError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                let dir = path.parent().unwrap_or(&self.root);
                sync_dir(dir).map_err(|e| cold_io("delete: fsync dir", key, e))?;
                Ok(true)
            }
            Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(false),
            Err(e) => Err(cold_io("delete", key, e)),
        }
    }

    /// Walks the tree below the root and returns the keys of regular files that start with
    /// `prefix`. Skips temp files, symlinks, names that are not UTF-8 and names that are not
    /// valid keys; descends only into directories that can hold matching keys. Entries that
    /// vanish during the walk are skipped.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, SharedError> {
        let mut keys = Vec::new();
        // (directory, its key prefix ending in '/' or empty for the root)
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = pending.pop() {
            let shown = || dir.display().to_string();
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) && !rel.is_empty() => continue,
                Err(e) => return Err(cold_io("list", shown(), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| cold_io("list", shown(), e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let file_type = match entry.file_type() {
                    Ok(t) => t,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(cold_io("list", shown(), e)),
                };
                let key = format!("{rel}{name}");
                if file_type.is_dir() {
                    let sub = key + "/";
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push((entry.path(), sub));
                    }
                } else if file_type.is_file()
                    && key.starts_with(prefix)
                    && validate_key(&key).is_ok()
                {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// `filesystem <canonical root>`.
    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }
}

/// Creates a new, empty temp file in `dir` with a name no other writer uses.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..TEMP_ATTEMPTS {
        let name = format!(
            "{TEMP_PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Makes `dir`'s entries (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// ENOENT, or ENOTDIR from a key whose parent path runs through a regular file.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn cold_io(op: &'static str, key: impl Into<String>, source: io::Error) -> SharedError {
    SharedError::ColdIo {
        op,
        key: key.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_prefixed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _fa) = create_temp(dir.path()).unwrap();
        let (b, _fb) = create_temp(dir.path()).unwrap();
        assert_ne!(a, b);
        for p in [a, b] {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                name.starts_with(&format!(".tmp-{}-", std::process::id())),
                "{name}"
            );
            assert_eq!(p.parent(), Some(dir.path()));
        }
    }

    #[test]
    fn keys_with_temp_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for k in [".tmp-1-2", "a/.tmp-x/b", "a/.tmp-"] {
            assert!(
                matches!(store.path_of(k), Err(SharedError::InvalidKey { .. })),
                "{k}"
            );
        }
        assert!(store.path_of("a/.tmpfoo").is_ok());
    }

    #[test]
    fn missing_means_enoent_or_enotdir_only() {
        assert!(is_missing(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(is_missing(&io::Error::from(io::ErrorKind::NotADirectory)));
        assert!(!is_missing(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }
}
