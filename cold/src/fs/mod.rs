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
//! 4. give it the final name with `renameat2(RENAME_NOREPLACE)` (`link(2)` where that flag is
//!    not supported), which never replaces an existing entry (`EEXIST`) and, unlike link +
//!    unlink, leaves no deleted inode behind (see [`publish`]);
//! 5. `fsync` the object's directory so the new entry is durable (after a `link`, the temp
//!    name is unlinked).
//!
//! [`ColdStore::put_batch`] runs the same steps for several envelopes as a group commit: every
//! temp file is written first (its writeback started, then closed), then all of them are made
//! durable together (one `fdatasync` round or one `syncfs(2)`, see [`BatchSync`]), then each is linked to its key, then each
//! distinct object directory is fsynced once, and only then are the results returned. So no
//! `Ok` is ever returned for an envelope whose data or directory entry is not yet on disk.
//!
//! When the final name already exists, its bytes are compared with the envelope: the same
//! bytes are an idempotent success (a retry after a crash), other bytes are
//! [`ColdError::AlreadyExists`] and the stored object is left untouched. No partial object
//! is ever visible under a key. Temp files left behind by a crash are never listed and never
//! returned; [`sweep_temps`] removes them once their writer is gone.
//!
//! Modes: objects 0600, directories created by the store 0700 (evidence is private to the
//! user the hounds run as).
//!
//! # Journaled commits ([`Commit::Journal`], what hounds use by default)
//! File-per-key commits cost an inode, a data sync and a directory sync per object, which
//! bounds them to a few thousand objects per second on common disks. In journal mode
//! [`ColdStore::put_batch`] instead appends the records of every new key of the batch to the
//! writer's own journal `<root>/.tmp-journal/.tmp-<pid>-<created>-<random>` with one `write`
//! and makes them durable with one `fdatasync` ([`journal`] has the format and the names;
//! [`writer`] the exact steps and why each is needed). Only then are they reported stored.
//! The durability promise is unchanged: a stored envelope survives a power cut and is
//! readable under its key, because readers fall back to the journals:
//! - `get` reads the key file; when there is none it searches the journals oldest first (the
//!   order the materialiser applies them in, so a read returns the bytes that will end up in
//!   the key file), then looks at the key file once more (a journal materialised and removed
//!   between the two looks left its key file behind before it went);
//! - `list` returns the keys of key files and of journal records;
//! - `delete` refuses a key that is still in a journal (see [`ColdStore::delete`] below).
//!
//! The supervisor turns journals whose writer is gone or rotated away into ordinary key files
//! ([`materialise`]), through the per-file path above, and then removes them.
//!
//! The one change of semantics: a writer checks the key files and its own current journal for
//! an existing object, but cannot see the journals of other writers. When two writers journal
//! the same key with different bytes before either is materialised, both get `Stored` (per
//! file, the second would get `AlreadyExists`); the materialiser keeps the first and moves the
//! other to `<root>/.tmp-conflicts/` (logged at error, reported by `houndd verify`), so no
//! envelope reported stored is ever lost. Keys a submitter chose ([`KeyOrigin::SubmitterKey`])
//! always take the per-file path, so their create-only answer is exact; journaled keys are
//! derived from pool-generated evidence ids, which only collide if a caller reuses an id.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{validate_key, ColdStore, KeyOrigin, PutItem, PutOutcome};
use crate::ColdError;

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
    /// How [`ColdStore::put_batch`] makes a batch's temp files durable.
    batch_sync: BatchSync,
    /// How [`ColdStore::put_batch`] commits: files per key, or the journal.
    commit: Commit,
    /// The journal this store appends to (journal mode, after the first batch).
    journal: Option<writer::Active>,
    /// Longest envelope a journal record may announce when this store reads journals.
    journal_max_envelope: usize,
    /// The journal writer's append buffer, kept between batches.
    append_buf: Vec<u8>,
    /// Every filesystem step of the last puts, in order (unit tests of the ordering only).
    #[cfg(test)]
    ops: Vec<Op>,
}

/// How [`ColdStore::put_batch`] makes the temp files of a batch durable before linking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSync {
    /// `fdatasync` each temp file in turn (data and size; the temp file's own directory entry
    /// is never needed after a crash), their writeback having been started together. The
    /// default, and what hounds use: it touches only the store's own files, so its cost never
    /// depends on other programs' dirty data. (On a shared, busy ext4 disk `syncfs` was
    /// faster for batches of 16 and more, see docs/BENCHMARKS.md; it is not the default
    /// because one call writes back everything dirty on the filesystem.)
    #[default]
    PerFile,
    /// One `syncfs(2)` on the store's filesystem covers every temp file of the batch. Writes
    /// back everything dirty on that filesystem (other programs' data included), so its cost
    /// depends on the neighbours. Not for hounds: their seccomp policy does not allow
    /// `syncfs` (it would let a hound force writeback of everyone's data), so there every
    /// item would fail with `put: syncfs` (EPERM).
    Syncfs,
}

/// How [`ColdStore::put_batch`] commits a batch. Either way nothing is reported stored before
/// it is durable and readable under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commit {
    /// A durable file per key (temp file, sync, link, directory sync). The default of
    /// [`FsStore::open`]: what the supervisor's own writes (materialisation) use.
    #[default]
    PerFile,
    /// Append the batch to this writer's journal, one `write` and one `fdatasync` (see
    /// [`writer`]). What hounds use unless `cold.fs_commit = "per-file"`.
    Journal {
        /// A journal is sealed before it would grow beyond this many bytes (hounds: well
        /// below their RLIMIT_FSIZE, see [`journal_bound`]). A record longer than this goes
        /// through the per-file path.
        max_bytes: u64,
        /// A journal older than this is sealed at the next batch, so that the materialiser
        /// keeps up under light load.
        max_age: Duration,
    },
}

/// The journal size bound for writers whose envelopes are at most `max_envelope` bytes: that
/// (at least [`JOURNAL_MIN_BYTES`]) plus [`JOURNAL_SLACK`], so any one record (header, key of
/// at most 1024 bytes, checksum) fits a fresh journal. A hound's RLIMIT_FSIZE is this bound
/// plus another 32 KiB, so a journal stops growing at least 32 KiB before the limit could
/// refuse a write.
pub fn journal_bound(max_envelope: usize) -> u64 {
    (max_envelope as u64)
        .max(JOURNAL_MIN_BYTES)
        .saturating_add(JOURNAL_SLACK)
}

/// Smallest journal size bound, whatever the envelope limit: every journal is a file creation,
/// and on the issue 11 disk (ext4 without a journal) a creation after a burst of deletions scans
/// past every recently deleted inode of its block group (milliseconds each; a fifth of a
/// hound's CPU at 1 MiB journals in one profile). 3 MiB journals are a third of the creations
/// of the default 1 MiB evidence limit's; it stays below the 4 MiB write the sandbox escape
/// suite expects RLIMIT_FSIZE to refuse.
pub const JOURNAL_MIN_BYTES: u64 = 3 << 20;

/// Room above the largest envelope in [`journal_bound`].
pub const JOURNAL_SLACK: u64 = 32 * 1024;

/// Default age after which a journal is sealed at the next batch.
pub const JOURNAL_MAX_AGE: Duration = Duration::from_secs(1);

/// Most bytes of one journal file a reader looks at: writers stay far below it (their bound
/// is one envelope plus [`JOURNAL_SLACK`]); it only stops a reader from loading an arbitrarily
/// large file someone else put in the journal directory.
pub const JOURNAL_READ_CAP: u64 = 256 << 20;

/// Records a filesystem step for the ordering tests (compiled only in unit tests).
macro_rules! note {
    ($store:expr, $op:expr) => {{
        #[cfg(test)]
        $store.ops.push($op);
    }};
}

/// One filesystem step of a put, as recorded for the ordering tests.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// A temp file was written (key).
    Write(String),
    /// A temp file was synced (key).
    FileSync(String),
    /// The whole filesystem was synced.
    Syncfs,
    /// A temp file was linked to its key (key).
    Link(String),
    /// A directory was fsynced (path relative to the root, "" for the root).
    DirSync(String),
    /// Records were appended to the journal (how many).
    Append(usize),
    /// The journal was synced.
    JournalSync,
    /// A journal was sealed.
    Seal,
    /// A journal was created (and its directory synced).
    NewJournal,
    /// `put_batch` is about to return its results.
    Results,
}

pub mod journal;
pub mod materialise;
pub mod writer;

/// An item of a batch whose temp file was written.
struct Staged {
    /// Index in the batch.
    idx: usize,
    /// Final path of the object.
    path: PathBuf,
    /// Its directory.
    dir: PathBuf,
    /// The temp file's path (written and closed, not yet synced).
    tmp: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) the store rooted at `root`.
    ///
    /// Creates `root` and its missing ancestors, then remembers its canonical path (symlinks
    /// and `..` resolved), so later changes of the working directory do not matter. Fails with
    /// [`ColdError::ColdIo`] when it cannot be created or is not a directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, ColdError> {
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
        Ok(Self {
            root,
            batch_sync: BatchSync::default(),
            commit: Commit::default(),
            journal: None,
            journal_max_envelope: JOURNAL_READ_CAP as usize,
            append_buf: Vec::new(),
            #[cfg(test)]
            ops: Vec::new(),
        })
    }

    /// Chooses how [`ColdStore::put_batch`] commits (default [`Commit::PerFile`]). Switching
    /// away from journal mode seals the current journal.
    pub fn set_commit(&mut self, commit: Commit) {
        if commit == Commit::PerFile {
            self.seal_journal();
        }
        self.commit = commit;
    }

    /// The commit mode.
    pub fn commit(&self) -> Commit {
        self.commit
    }

    /// Longest envelope a journal record may announce when this store reads journals
    /// (`get`, `list`, materialisation); a record announcing more ends the reading of its
    /// journal like a damaged one. Default [`JOURNAL_READ_CAP`].
    pub fn set_journal_max_envelope(&mut self, max: usize) {
        self.journal_max_envelope = max;
    }

    /// Chooses how [`ColdStore::put_batch`] syncs a batch's temp files (default
    /// [`BatchSync::PerFile`]). The durability promise is the same either way.
    pub fn set_batch_sync(&mut self, sync: BatchSync) {
        self.batch_sync = sync;
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`'s object, after validating the key.
    pub(crate) fn path_of(&self, key: &str) -> Result<PathBuf, ColdError> {
        validate_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(TEMP_PREFIX)) {
            return Err(ColdError::InvalidKey {
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
    fn create_parents(&self, key: &str) -> Result<(), ColdError> {
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

    /// Steps 1-2 of a put for one item: validates the key, creates its parent directories and
    /// (once per batch) the temp directory, and writes the envelope to a fresh temp file,
    /// starts its writeback and closes it, not yet synced. Returns the object's path and the
    /// temp file's. On error nothing of the item is left behind.
    fn stage(
        &self,
        item: &PutItem<'_>,
        temp_dir_ready: &mut bool,
    ) -> Result<(PathBuf, PathBuf), ColdError> {
        let key = item.key;
        let path = self.path_of(key)?;
        self.create_parents(key)?;
        let temp_dir = self.root.join(TEMP_DIR);
        if !*temp_dir_ready {
            match fs::DirBuilder::new().mode(DIR_MODE).create(&temp_dir) {
                Ok(()) => sync_dir(&self.root).map_err(|e| cold_io("put: fsync dir", key, e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cold_io("put: create temp dir", key, e)),
            }
            *temp_dir_ready = true;
        }
        let (tmp, mut file) =
            create_temp(&temp_dir).map_err(|e| cold_io("put: create temp", key, e))?;
        if let Err(e) = file.write_all(item.envelope) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(cold_io("put: write", key, e));
        }
        start_writeback(&file);
        Ok((path, tmp))
    }
}

impl FsStore {
    /// Per-file group commit: each item as [`ColdStore::put`] would store it, with the syncs
    /// shared.
    /// Order of steps (checked by a unit test): write every temp file; make them all durable
    /// ([`BatchSync`]); link each to its key (or compare with the object already there) and
    /// remove its temp name; fsync each distinct object directory once; return. An item that
    /// fails at any step gets its own error and takes no further step; the others go on.
    /// Cost for `n` items in `d` directories: `n` temp files, `n` fdatasyncs or one syncfs,
    /// `n` links and unlinks, `d` directory fsyncs.
    pub(crate) fn put_batch_per_file(
        &mut self,
        items: &[PutItem<'_>],
    ) -> Vec<Result<PutOutcome, ColdError>> {
        let mut results: Vec<Option<Result<PutOutcome, ColdError>>> =
            items.iter().map(|_| None).collect();
        // 1. temp files, written but not synced.
        let mut staged = Vec::with_capacity(items.len());
        let mut temp_dir_ready = false;
        for (idx, item) in items.iter().enumerate() {
            match self.stage(item, &mut temp_dir_ready) {
                Ok((path, tmp)) => {
                    note!(self, Op::Write(item.key.to_owned()));
                    // `path` is `root` joined with a non-empty relative key: it has a parent.
                    let dir = path.parent().unwrap_or(&self.root).to_path_buf();
                    staged.push(Staged {
                        idx,
                        path,
                        dir,
                        tmp,
                    });
                }
                Err(e) => results[idx] = Some(Err(e)),
            }
        }
        // 2. one sync round for the batch.
        match self.batch_sync {
            BatchSync::PerFile => {
                // Each temp file's writeback was started when it was written (`stage`), so
                // the filesystem allocated and wrote them together and these fdatasyncs mostly
                // find their data (and the journal commit holding it) done. The file is opened
                // again: a batch never holds more than one descriptor open (RLIMIT_NOFILE).
                for st in &staged {
                    if results[st.idx].is_none() {
                        let synced = File::open(&st.tmp).and_then(|f| f.sync_data());
                        if let Err(e) = synced {
                            results[st.idx] =
                                Some(Err(cold_io("put: fdatasync", items[st.idx].key, e)));
                        } else {
                            note!(self, Op::FileSync(items[st.idx].key.to_owned()));
                        }
                    }
                }
            }
            BatchSync::Syncfs => {
                let synced = if staged.is_empty() {
                    Ok(())
                } else {
                    File::open(&self.root).and_then(|root| syncfs(&root))
                };
                match synced {
                    Ok(()) if !staged.is_empty() => note!(self, Op::Syncfs),
                    Ok(()) => {}
                    Err(e) => {
                        for st in &staged {
                            let e = io::Error::new(e.kind(), e.to_string());
                            results[st.idx] =
                                Some(Err(cold_io("put: syncfs", items[st.idx].key, e)));
                        }
                    }
                }
            }
        }
        // 3. links, in batch order; every temp name is removed (linked, refused or failed).
        let mut dirs: Vec<(PathBuf, Vec<usize>)> = Vec::new();
        for st in &staged {
            let key = items[st.idx].key;
            if results[st.idx].is_none() {
                let linked = match publish(&st.tmp, &st.path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(cold_io("put: link", key, e)),
                };
                note!(self, Op::Link(key.to_owned()));
                let verdict = match linked {
                    Ok(true) => Ok(()),
                    Ok(false) => match self.same_bytes(&st.path, items[st.idx].envelope) {
                        // Possibly linked by a writer that has not synced its directory yet:
                        // the directory sync below covers it before we report it.
                        Ok(true) => Ok(()),
                        Ok(false) => Err(ColdError::AlreadyExists { key: key.into() }),
                        Err(e) => Err(cold_io("put: compare existing", key, e)),
                    },
                    Err(e) => Err(e),
                };
                match verdict {
                    Ok(()) => match dirs.iter_mut().find(|(d, _)| *d == st.dir) {
                        Some((_, members)) => members.push(st.idx),
                        None => dirs.push((st.dir.clone(), vec![st.idx])),
                    },
                    Err(e) => results[st.idx] = Some(Err(e)),
                }
            }
            if let Err(e) = fs::remove_file(&st.tmp).or_else(|e| {
                // Published by a rename: the temp name is gone already.
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }) {
                // Stored or not, a leftover temp file is swept once this writer is gone.
                tracing::debug!(temp = %st.tmp.display(), error = %e, "temp file not removed");
            }
        }
        // 4. each distinct directory once; only then is anything reported stored.
        for (dir, members) in dirs {
            let synced = sync_dir(&dir);
            note!(
                self,
                Op::DirSync(
                    dir.strip_prefix(&self.root)
                        .unwrap_or(&dir)
                        .display()
                        .to_string()
                )
            );
            for idx in members {
                results[idx] = Some(match &synced {
                    Ok(()) => Ok(PutOutcome::Stored),
                    Err(e) => Err(cold_io(
                        "put: fsync dir",
                        items[idx].key,
                        io::Error::new(e.kind(), e.to_string()),
                    )),
                });
            }
        }
        note!(self, Op::Results);
        batch_results(results, items)
    }
}

impl FsStore {
    /// Reads the key file of the object. Refuses with [`ColdError::ObjectTooLarge`] when the file's size is
    /// above `max_len`, before reading any of it, and never reads more than `max_len + 1`
    /// bytes even if the file grows meanwhile. A missing key, a key below a non-directory, or
    /// a key naming a directory is [`ColdError::NotFound`].
    fn get_file(&self, key: &str, max_len: usize) -> Result<Vec<u8>, ColdError> {
        let path = self.path_of(key)?;
        let not_found = || ColdError::NotFound {
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
            return Err(ColdError::ObjectTooLarge {
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
            return Err(ColdError::ObjectTooLarge {
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
    fn delete_file(&self, key: &str) -> Result<bool, ColdError> {
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
    fn list_files(&self, prefix: &str) -> Result<Vec<String>, ColdError> {
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
}

impl ColdStore for FsStore {
    /// Create-only, atomic, durable put (see the module docs for the exact sequence): a batch
    /// of one. An existing object with the same bytes is an idempotent success; with other
    /// bytes the put fails with [`ColdError::AlreadyExists`] and the object is unchanged.
    /// Never leaves a temp file behind on error (short of a crash, and of the cleanup `unlink`
    /// itself failing). Costs one extra read of the existing object when the key is taken.
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, ColdError> {
        self.put_batch(&[PutItem {
            key,
            envelope,
            // A single put with no origin: journaled only when the store is in journal mode,
            // as before; the per-file checks are the same either way.
            origin: KeyOrigin::SubmitterId,
        }])
        .pop()
        .unwrap_or_else(|| Err(cold_io("put", key, io::Error::other("empty batch result"))))
    }

    /// Stores a batch: per file ([`FsStore::put_batch_per_file`]) or through the journal
    /// ([`FsStore::put_batch_journal`]), as [`FsStore::set_commit`] chose.
    fn put_batch(&mut self, items: &[PutItem<'_>]) -> Vec<Result<PutOutcome, ColdError>> {
        match self.commit {
            Commit::PerFile => self.put_batch_per_file(items),
            Commit::Journal { max_bytes, max_age } => {
                self.put_batch_journal(items, max_bytes, max_age)
            }
        }
    }

    /// Reads the object: its key file, else its record in the journals (oldest journal first,
    /// the first record of the key in it: what materialisation will store), else the key file
    /// again (a journal materialised between the two looks). Refuses with
    /// [`ColdError::ObjectTooLarge`] an object larger than `max_len`, before reading it. A
    /// missing key, a key below a non-directory, or a key naming a directory is
    /// [`ColdError::NotFound`].
    fn get(&mut self, key: &str, max_len: usize) -> Result<Vec<u8>, ColdError> {
        match self.get_file(key, max_len) {
            Err(ColdError::NotFound { .. }) => {}
            other => return other,
        }
        // The key file, then the journals, then the key file again: the materialiser writes
        // the key file before it removes a journal, so a record is always in one of them. A
        // journal being sealed (renamed) while the directory is read may be listed under
        // neither name (readdir during a rename), so a miss looks once more before it is
        // NotFound; only a missing key pays for it.
        for _ in 0..2 {
            if let Some(found) = self.get_journaled(key, max_len)? {
                return Ok(found);
            }
            match self.get_file(key, max_len) {
                Err(ColdError::NotFound { .. }) => {}
                other => return other,
            }
        }
        Err(ColdError::NotFound {
            key: key.to_owned(),
        })
    }

    /// Removes the object and fsyncs its directory. `Ok(false)` when there was no object under
    /// the key (missing, below a non-directory, or a directory). Empty parent directories are
    /// left in place.
    ///
    /// A key that still has records in journals (committed, not yet materialised) gets a
    /// durable erasure record naming them first (see [`writer`]: readers and the materialiser
    /// skip erased records), then its key file, if any, is removed; it existed. Costs a read
    /// of the journals (erasure is rare; journals are small while the materialiser keeps up).
    fn delete(&mut self, key: &str) -> Result<bool, ColdError> {
        self.path_of(key)?;
        let records = self.journal_records_of(key)?;
        if records.is_empty() {
            return self.delete_file(key);
        }
        self.write_erasure(key, &records)?;
        self.delete_file(key)?;
        Ok(true)
    }

    /// The keys starting with `prefix`: those of key files (see [`FsStore::list_files`]) and
    /// those of journal records not yet materialised, each once.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ColdError> {
        let mut keys = self.list_files(prefix)?;
        let mut seen: std::collections::HashSet<String> = keys.iter().cloned().collect();
        for key in self.journaled_keys()? {
            if key.starts_with(prefix) && !seen.contains(&key) {
                seen.insert(key.clone());
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// `filesystem <canonical root>`.
    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }

    /// Journal mode: seals the current journal once it is at least [`IDLE_SEAL_AGE`] old, so
    /// that a writer going idle hands its records to the materialiser instead of keeping them
    /// in an open journal until its next batch or its exit (a hound calls this before it
    /// sleeps). Under load the writer rarely sleeps and the age bound keeps it from sealing
    /// a journal per batch. Cost: one `rename` when it seals, nothing otherwise.
    fn background_work(&mut self) -> Result<bool, ColdError> {
        if self.journal_age().is_some_and(|age| age >= IDLE_SEAL_AGE) {
            self.seal_journal();
        }
        Ok(false)
    }
}

/// How old a journal must be before an idle writer seals it ([`ColdStore::background_work`]).
pub const IDLE_SEAL_AGE: std::time::Duration = std::time::Duration::from_millis(200);

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
/// and after each hound death (with that hound's pid), unconfined. Hounds may create anything
/// beneath the root, a symlink named `.writing` included, so the temp directory is opened with
/// `O_NOFOLLOW` and every removal is an `unlinkat` relative to that descriptor: a sweep never
/// removes anything outside the store, even if the name is swapped while it runs (the names
/// are then read elsewhere, but removed only from the directory that was opened). A
/// `.writing` that is a symlink is an error naming it.
pub fn sweep_temps(root: &Path, gone: impl Fn(u32) -> bool) -> io::Result<usize> {
    let temp_dir = root.join(TEMP_DIR);
    let dir = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&temp_dir)
    {
        Ok(dir) => dir,
        // With O_NOFOLLOW | O_DIRECTORY a symlink is ELOOP or ENOTDIR, as is any non-directory.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(io::Error::other(format!(
                "{} is not a directory (a symlink?): not swept",
                temp_dir.display()
            )))
        }
        Err(e) if is_missing(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    let Some(entries) = read_dir_if_any(&temp_dir)? else {
        return Ok(0);
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
            match unlink_beneath(&dir, &entry.file_name()) {
                Ok(()) => removed += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// `unlinkat(dir, name, 0)`: removes the file `name` of the directory `dir` is open on,
/// whatever path now leads there.
fn unlink_beneath(dir: &File, name: &std::ffi::OsStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::other("a directory entry name with a NUL byte"))?;
    // SAFETY: `dir` is an open directory descriptor for the duration of the call and `name` a
    // NUL-terminated string that outlives it; unlinkat reads both and writes nothing of ours.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole of `file`: starts writeback of its
/// dirty pages without waiting and without any durability promise (a hint; errors ignored).
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor number, which `file` keeps open for
    // the call; offset 0 and length 0 mean "to the end of the file".
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// `syncfs(2)` on the filesystem holding `file`: writes back everything dirty on it.
fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the temp file `tmp` the name `path` unless `path` exists (`AlreadyExists` then, and
/// `tmp` stays): `renameat2(RENAME_NOREPLACE)`, create-only like `link(2)`, but it leaves no
/// inode behind to delete. On ext4 without a journal (the issue 11 machine) every inode
/// allocation skips the inodes deleted in the last minute or more (`recently_deleted`), so a
/// temp inode unlinked per object made each later file creation on the filesystem scan past
/// thousands of them (creates of 0.2-6 ms, a third of a hound's CPU in one profile). Falls back
/// to `link(2)` where the filesystem or kernel has no `RENAME_NOREPLACE`; the caller removes
/// the temp name either way (`NotFound` after a rename).
fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(tmp.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let to = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    // SAFETY: both pointers are NUL-terminated strings that live across the call; renameat2
    // only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            fs::hard_link(tmp, path)
        }
        _ => Err(e),
    }
}

/// Makes `dir`'s entries (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The entries of `dir`, or `None` when it does not exist (yet) or is not a directory: the
/// store's side directories (temp files, journals, erasures, conflicts) are created on first
/// use.
fn read_dir_if_any(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `results` of a batch, one per item: an item that no step decided (a bug, never an input)
/// is an error naming its key rather than a panic.
fn batch_results(
    results: Vec<Option<Result<PutOutcome, ColdError>>>,
    items: &[PutItem<'_>],
) -> Vec<Result<PutOutcome, ColdError>> {
    results
        .into_iter()
        .zip(items)
        .map(|(r, item)| {
            r.unwrap_or_else(|| {
                Err(cold_io(
                    "put",
                    item.key,
                    io::Error::other("no result recorded"),
                ))
            })
        })
        .collect()
}

/// ENOENT, or ENOTDIR from a key whose parent path runs through a regular file.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn cold_io(op: &'static str, key: impl Into<String>, source: io::Error) -> ColdError {
    ColdError::ColdIo {
        op,
        key: key.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The create-only publish leaves no temp name and never replaces an object.
    #[test]
    fn publish_is_create_only_and_moves_the_temp_name() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("t");
        let key = dir.path().join("k");
        fs::write(&tmp, b"one").unwrap();
        publish(&tmp, &key).unwrap();
        assert!(!tmp.exists(), "renamed, not linked");
        assert_eq!(fs::read(&key).unwrap(), b"one");
        fs::write(&tmp, b"two").unwrap();
        let e = publish(&tmp, &key).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&key).unwrap(), b"one", "never replaced");
        assert_eq!(
            fs::read(&tmp).unwrap(),
            b"two",
            "the temp name stays for the caller"
        );
    }

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

    /// Positions in `ops` of the steps `pick` selects.
    fn positions(ops: &[Op], pick: impl Fn(&Op) -> bool) -> Vec<usize> {
        ops.iter()
            .enumerate()
            .filter(|(_, o)| pick(o))
            .map(|(i, _)| i)
            .collect()
    }

    /// The group-commit order: every write, then every data sync, then every link, then one
    /// sync per distinct directory, then the results; nothing un-synced is reported.
    #[test]
    fn batch_syncs_files_then_links_then_dirs_then_reports() {
        for mode in [BatchSync::PerFile, BatchSync::Syncfs] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = FsStore::open(dir.path()).unwrap();
            store.set_batch_sync(mode);
            store.put("a/taken.thcs", b"old").unwrap();
            store.put("a/same.thcs", b"same").unwrap();
            store.ops.clear();
            let items = [
                PutItem {
                    key: "a/1.thcs",
                    envelope: b"one",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "b/c/2.thcs",
                    envelope: b"two",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "a/taken.thcs",
                    envelope: b"new",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "a/same.thcs",
                    envelope: b"same",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "../bad",
                    envelope: b"x",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "a/3.thcs",
                    envelope: b"three",
                    origin: KeyOrigin::PoolId,
                },
                PutItem {
                    key: "a/1.thcs",
                    envelope: b"one",
                    origin: KeyOrigin::PoolId,
                },
            ];
            let results = store.put_batch(&items);
            assert_eq!(results.len(), items.len());
            assert!(
                matches!(results[0], Ok(PutOutcome::Stored)),
                "{mode:?} {results:?}"
            );
            assert!(matches!(results[1], Ok(PutOutcome::Stored)));
            assert!(matches!(results[2], Err(ColdError::AlreadyExists { .. })));
            assert!(matches!(results[3], Ok(PutOutcome::Stored)));
            assert!(matches!(results[4], Err(ColdError::InvalidKey { .. })));
            assert!(matches!(results[5], Ok(PutOutcome::Stored)));
            assert!(
                matches!(results[6], Ok(PutOutcome::Stored)),
                "same key, same bytes"
            );

            let ops = &store.ops;
            let writes = positions(ops, |o| matches!(o, Op::Write(_)));
            let syncs = positions(ops, |o| matches!(o, Op::FileSync(_) | Op::Syncfs));
            let links = positions(ops, |o| matches!(o, Op::Link(_)));
            let dirs = positions(ops, |o| matches!(o, Op::DirSync(_)));
            let done = positions(ops, |o| *o == Op::Results);
            assert_eq!(writes.len(), 6, "{ops:?}");
            assert_eq!(syncs.len(), if mode == BatchSync::PerFile { 6 } else { 1 });
            assert_eq!(links.len(), 6);
            assert_eq!(dirs.len(), 2, "one sync per distinct directory: {ops:?}");
            assert_eq!(done.len(), 1);
            let last = |v: &[usize]| *v.last().unwrap();
            assert!(last(&writes) < syncs[0], "{ops:?}");
            assert!(last(&syncs) < links[0], "{ops:?}");
            assert!(last(&links) < dirs[0], "{ops:?}");
            assert!(last(&dirs) < done[0], "{ops:?}");
            let synced: std::collections::BTreeSet<_> = ops
                .iter()
                .filter_map(|o| match o {
                    Op::DirSync(d) => Some(d.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(synced, ["a".to_string(), "b/c".to_string()].into());

            assert_eq!(store.get("a/taken.thcs", 10).unwrap(), b"old");
            assert_eq!(store.get("b/c/2.thcs", 10).unwrap(), b"two");
            let temps = fs::read_dir(dir.path().join(TEMP_DIR)).unwrap().count();
            assert_eq!(temps, 0, "no temp file survives a batch");
        }
    }

    #[test]
    fn empty_batch_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FsStore::open(dir.path()).unwrap();
        assert!(store.put_batch(&[]).is_empty());
        assert_eq!(store.ops, vec![Op::Results]);
    }

    #[test]
    fn keys_with_temp_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for k in [".tmp-1-2", "a/.tmp-x/b", "a/.tmp-"] {
            assert!(
                matches!(store.path_of(k), Err(ColdError::InvalidKey { .. })),
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
