//! Filesystem cold store (the embedded default).
//!
//! Layout: the object under key `k` is the regular file `<root>/k`; '/' in a key makes
//! subdirectories. In-flight writes live in `<root>/.writing/` (a name no key can take).
//! Writes are create-only, atomic and durable:
//! 1. create the key's missing parent directories one by one (mode 0700), fsyncing each new
//!    directory's parent so the new entry survives a crash;
//! 2. create a fresh temp file `.writing/.tmp-<pid>-<random hex>` (`O_EXCL`, mode 0600): the
//!    writer's pid is part of the name so that [`sweep_temps`] can remove the temp files of
//!    writers that died;
//! 3. write the whole envelope, `fsync` the file;
//! 4. `link(2)` it to the final name, which never replaces an existing entry (`EEXIST`);
//! 5. `fsync` the object's directory so the new entry is durable, then unlink the temp file.
//!
//! When the final name already exists, its bytes are compared with the envelope: the same
//! bytes are an idempotent success (a retry after a crash), other bytes are
//! [`SharedError::AlreadyExists`] and the stored object is left untouched. No partial object
//! is ever visible under a key. Temp files left behind by a crash are never listed and never
//! returned; [`sweep_temps`] removes them once their writer is gone.
//!
//! Modes: objects 0600, directories created by the store 0700 (evidence is private to the
//! user the hounds run as).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{validate_key, ColdStore, PutOutcome};
use crate::SharedError;

/// File-name prefix of in-flight writes. Keys with a segment starting with it are refused, so
/// an object can never be mistaken for a temp file (or vice versa).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Directory below the root holding in-flight writes (starts with [`TEMP_PREFIX`], so no
/// key can name it and `list` never descends into it).
pub const TEMP_DIR: &str = ".writing";

/// Mode of stored objects.
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories the store creates.
pub const DIR_MODE: u32 = 0o700;

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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(root)
            .map_err(|e| cold_io("open: create root", shown(), e))?;
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

    /// Whether the regular file at `path` holds exactly `bytes` (reads at most
    /// `bytes.len() + 1` bytes of it).
    fn same_bytes(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the key names something that is not a regular file",
            ));
        }
        let mut existing = Vec::with_capacity(bytes.len());
        file.take(bytes.len() as u64 + 1)
            .read_to_end(&mut existing)?;
        Ok(existing == bytes)
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
            match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
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
    /// Create-only, atomic, durable put (see the module docs for the exact sequence). An
    /// existing object with the same bytes is an idempotent success; with other bytes the put
    /// fails with [`SharedError::AlreadyExists`] and the object is unchanged. Never leaves a
    /// temp file behind on error (short of a crash, and of the cleanup `unlink` itself
    /// failing). Costs one extra read of the existing object when the key is taken.
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, SharedError> {
        let path = self.path_of(key)?;
        // `path` is `root` joined with a non-empty relative key, so it always has a parent.
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_parents(key)?;
        let temp_dir = self.root.join(TEMP_DIR);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&temp_dir) {
            Ok(()) => sync_dir(&self.root).map_err(|e| cold_io("put: fsync dir", key, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cold_io("put: create temp dir", key, e)),
        }

        let (tmp_path, mut file) =
            create_temp(&temp_dir).map_err(|e| cold_io("put: create temp", key, e))?;
        let written = file
            .write_all(envelope)
            .map_err(|e| ("put: write", e))
            .and_then(|()| file.sync_all().map_err(|e| ("put: fsync", e)));
        drop(file);
        let linked = written.and_then(|()| match fs::hard_link(&tmp_path, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(("put: link", e)),
        });
        // The temp name is never needed again: linked, refused, or failed.
        let removed = fs::remove_file(&tmp_path);
        let created = linked.map_err(|(op, e)| cold_io(op, key, e))?;
        if !created {
            return match self.same_bytes(&path, envelope) {
                Ok(true) => Ok(PutOutcome::Stored),
                Ok(false) => Err(SharedError::AlreadyExists { key: key.into() }),
                Err(e) => Err(cold_io("put: compare existing", key, e)),
            };
        }
        sync_dir(&dir).map_err(|e| cold_io("put: fsync dir", key, e))?;
        if let Err(e) = removed {
            // The object is stored; a leftover temp file is swept once this writer is gone.
            tracing::debug!(temp = %tmp_path.display(), error = %e, "temp file not removed");
        }
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
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Removes the temp files of writers that are gone: every `.tmp-<pid>-…` in
/// `<root>/.writing/` whose `pid` makes `gone(pid)` true. Returns how many were removed.
/// Names that do not parse are left alone. Cost: one `readdir` of the temp directory (it only
/// ever holds in-flight writes), no walk of the store. A missing root or temp directory is
/// nothing to sweep.
///
/// The supervisor calls it before its first hound starts (with "no such process" as `gone`)
/// and after each hound death (with that hound's pid).
pub fn sweep_temps(root: &Path, gone: impl Fn(u32) -> bool) -> io::Result<usize> {
    let dir = root.join(TEMP_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if gone(pid) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether no process with this pid exists (`kill(pid, 0)` fails with `ESRCH`). A pid that
/// exists (even one we may not signal) counts as alive, so a sweep never removes the temp
/// file of a live writer of this pid namespace.
pub fn pid_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
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
