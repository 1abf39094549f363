//! The journal writer ([`super::Commit::Journal`]) and the journal side of the readers.
//!
//! # A batch, step by step (checked by the unit test `journal_appends_syncs_then_reports`)
//! 1. Each item: validate the key. If its key file exists, keep the per-file semantics: the
//!    same bytes are an idempotent `Stored` (after an fsync of its directory, as the per-file
//!    path does for an object another writer may have linked without syncing yet), other
//!    bytes are `AlreadyExists`. If this writer's current journal, or an earlier item of this
//!    batch, already holds the key, the same comparison applies against those bytes (read
//!    back from the journal with `pread`: they are in the page cache). A record longer than
//!    the journal bound goes through the per-file path instead (never with default limits),
//!    and so does an item whose key the submitter chose ([`crate::KeyOrigin::SubmitterKey`]): two
//!    jobs may race for such a key with different bytes, and only the per-file path's
//!    create-only `link` answers `AlreadyExists` to the second across writers. Keys derived
//!    from pool-generated evidence ids (UUID v7) are unique per job; a retried job encodes the
//!    same bytes again, which is an idempotent success.
//! 2. Rotation: the current journal is sealed (renamed with the `.sealed` suffix) when it is
//!    older than `max_age`, or when the next record would take it beyond `max_bytes`. A new
//!    journal is created `O_EXCL`, mode 0600, and its directory (created 0700 and its parent
//!    fsynced on first use) is fsynced, so the journal's name survives a crash once a record
//!    in it is reported. The seal rename is not synced: should it be lost in a crash, the
//!    journal's writer is gone, which makes the journal sealed just the same.
//! 3. Every new record of the batch is appended with ONE `write` (a batch larger than the room
//!    left is cut into several appends, each to its own journal), then ONE `fdatasync` of
//!    the journal: data and file size, which is all a reader needs (the name was made durable
//!    in step 2).
//! 4. Only after the `fdatasync` returned are those items reported `Stored`.
//!
//! A failed write or sync fails the items of that append; the journal is truncated back to
//! its last synced length (best effort) and sealed, so that no later append lands after a
//! torn record (which would hide it from readers, who stop at the first damaged record). A
//! crash in the middle of step 3 leaves a torn tail, which readers ignore: none of its records
//! was reported.
//!
//! # Erasure
//! `delete` of a key that has records in journals cannot edit those journals (they belong to
//! other writers, and readers stop at the first damaged record). It writes an erasure record
//! instead: `<root>/.tmp-erased/<random>.erased`, durably (temp file, fsync, link, directory
//! fsync), naming the key and each of its journal records by (journal base name, offset); it
//! then removes the key file. Readers and the materialiser skip erased records. A later put of
//! the same key is a new record, not erased. The materialiser re-reads the erasure records
//! after it linked key files and removes any it finds erased: an erasure that races a
//! materialisation either is seen by that re-check, or comes after it and removes the key
//! file itself. An erasure record whose journals are all gone is removed by the materialiser.
//!
//! The size bound keeps a journal below the hound's RLIMIT_FSIZE (see [`super::journal_bound`]):
//! a journal write never fails with `EFBIG`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::journal::{self, JournalName, Records, ERASED_DIR, JOURNAL_DIR};
#[cfg(test)]
use super::Op;
use super::{cold_io, is_missing, sync_dir, Commit, FsStore, DIR_MODE, FILE_MODE};
use crate::{ColdError, KeyOrigin, PutItem, PutOutcome};

/// The journal a store appends to.
#[derive(Debug)]
pub struct Active {
    name: JournalName,
    path: PathBuf,
    file: File,
    /// Bytes written and synced (the file's length after the last successful append).
    len: u64,
    opened: Instant,
    /// For the records of this journal: a later put of the same key is compared with them.
    /// Key -> (offset of its record, offset of its envelope, envelope length) in this
    /// journal.
    index: HashMap<String, (u64, u64, usize)>,
}

/// An erased journal record: its journal's base name and its offset there.
pub(crate) type Erased = (String, u64);

/// A journal record and where it is.
pub(crate) struct Located<'a> {
    pub(crate) key: &'a str,
    pub(crate) envelope: &'a [u8],
    /// Base name of its journal.
    pub(crate) journal: &'a str,
    /// Offset of the record in the journal.
    pub(crate) offset: u64,
}

/// What step 1 decided for an item.
enum Plan {
    /// Decided already (error, or stored before).
    Done(Result<PutOutcome, ColdError>),
    /// The key file holds the same bytes: stored once its directory is synced.
    SyncDir(PathBuf),
    /// Same key and bytes as an earlier item of this batch: that item's result.
    Alias(usize),
    /// Append to the journal.
    Append,
    /// Too long for a journal: per-file path.
    PerFile,
}

impl FsStore {
    /// [`super::ColdStore::put_batch`] in journal mode; see the module docs for the steps.
    pub(crate) fn put_batch_journal(
        &mut self,
        items: &[PutItem<'_>],
        max_bytes: u64,
        max_age: Duration,
    ) -> Vec<Result<PutOutcome, ColdError>> {
        // 1. decide each item.
        let mut plans = Vec::with_capacity(items.len());
        let mut in_batch: HashMap<&str, usize> = HashMap::new();
        for idx in 0..items.len() {
            let plan = self.plan(items, idx, max_bytes, &mut in_batch);
            plans.push(plan);
        }
        let mut results: Vec<Option<Result<PutOutcome, ColdError>>> =
            items.iter().map(|_| None).collect();
        // Existing objects with the same bytes: one sync per distinct directory.
        let mut dirs: Vec<PathBuf> = Vec::new();
        for plan in &plans {
            if let Plan::SyncDir(d) = plan {
                if !dirs.contains(d) {
                    dirs.push(d.clone());
                }
            }
        }
        let dir_results: Vec<io::Result<()>> = dirs.iter().map(|d| sync_dir(d)).collect();
        // Items too long for a journal: the per-file path, as one batch.
        let per_file: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(plans[i], Plan::PerFile))
            .collect();
        if !per_file.is_empty() {
            let sub: Vec<PutItem<'_>> = per_file.iter().map(|&i| items[i]).collect();
            for (&i, r) in per_file.iter().zip(self.put_batch_per_file(&sub)) {
                results[i] = Some(r);
            }
        }
        // 2-4. appends.
        let append: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(plans[i], Plan::Append))
            .collect();
        if self
            .journal
            .as_ref()
            .is_some_and(|j| j.opened.elapsed() >= max_age)
        {
            self.seal_journal();
        }
        let mut next = 0;
        while next < append.len() {
            let first_len = record_len_of(&items[append[next]]) as u64;
            if self
                .journal
                .as_ref()
                .is_some_and(|j| j.len + first_len > max_bytes)
            {
                self.seal_journal();
            }
            if self.journal.is_none() {
                if let Err(e) = self.new_journal() {
                    for &i in &append[next..] {
                        let e = io::Error::new(e.kind(), e.to_string());
                        results[i] = Some(Err(cold_io("put: create journal", items[i].key, e)));
                    }
                    break;
                }
                note!(self, Op::NewJournal);
            }
            let Some(j) = self.journal.as_mut() else {
                break;
            };
            let room = max_bytes.saturating_sub(j.len);
            // Reused across batches (a fresh buffer of up to a few hundred KiB per batch was
            // freed at once, which made the allocator return and re-fault those pages).
            let mut buf = std::mem::take(&mut self.append_buf);
            buf.clear();
            let mut members: Vec<(usize, u64)> = Vec::new();
            while let Some(&i) = append.get(next) {
                let len = record_len_of(&items[i]) as u64;
                if !members.is_empty() && buf.len() as u64 + len > room {
                    break;
                }
                let at = buf.len() as u64;
                if journal::encode_into(&mut buf, items[i].key, items[i].envelope).is_none() {
                    // Validated keys are 1..=1024 bytes and envelopes below the bound: cannot
                    // happen, but never append what could not be read back.
                    results[i] = Some(Err(cold_io(
                        "put: journal record",
                        items[i].key,
                        io::Error::other("record not encodable"),
                    )));
                } else {
                    let env_at = at + (journal::HEADER_LEN + items[i].key.len()) as u64;
                    members.push((i, env_at));
                }
                next += 1;
            }
            if members.is_empty() {
                self.append_buf = buf;
                continue;
            }
            let written = j.file.write_all(&buf);
            let synced = written.and_then(|()| j.file.sync_data());
            note!(self, Op::Append(members.len()));
            match synced {
                Ok(()) => {
                    note!(self, Op::JournalSync);
                    let Some(j) = self.journal.as_mut() else {
                        break;
                    };
                    for &(i, env_at) in &members {
                        let rec_at = env_at - (journal::HEADER_LEN + items[i].key.len()) as u64;
                        j.index.insert(
                            items[i].key.to_owned(),
                            (j.len + rec_at, j.len + env_at, items[i].envelope.len()),
                        );
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                    j.len += buf.len() as u64;
                    self.append_buf = buf;
                }
                Err(e) => {
                    for &(i, _) in &members {
                        let e = io::Error::new(e.kind(), e.to_string());
                        results[i] = Some(Err(cold_io("put: journal append", items[i].key, e)));
                    }
                    if let Some(j) = self.journal.as_ref() {
                        let _ = j.file.set_len(j.len);
                    }
                    self.seal_journal();
                }
            }
        }
        let mut aliases = Vec::new();
        for (idx, plan) in plans.into_iter().enumerate() {
            match plan {
                Plan::Done(r) => results[idx] = Some(r),
                Plan::SyncDir(d) => {
                    let synced = dirs
                        .iter()
                        .position(|x| *x == d)
                        .and_then(|k| dir_results.get(k));
                    results[idx] = Some(match synced {
                        Some(Ok(())) => Ok(PutOutcome::Stored),
                        Some(Err(e)) => Err(cold_io(
                            "put: fsync dir",
                            items[idx].key,
                            io::Error::new(e.kind(), e.to_string()),
                        )),
                        None => Err(cold_io(
                            "put: fsync dir",
                            items[idx].key,
                            io::Error::other("no directory result"),
                        )),
                    });
                }
                Plan::Alias(j) => aliases.push((idx, j)),
                Plan::Append | Plan::PerFile => {}
            }
        }
        // An alias points at an earlier item that is not an alias: its result is final.
        for (idx, j) in aliases {
            results[idx] = Some(match &results[j] {
                Some(Ok(o)) => Ok(*o),
                Some(Err(e)) => Err(cold_io(
                    "put: same key earlier in the batch",
                    items[idx].key,
                    io::Error::other(e.to_string()),
                )),
                None => Err(cold_io(
                    "put",
                    items[idx].key,
                    io::Error::other("no result recorded"),
                )),
            });
        }
        note!(self, Op::Results);
        super::batch_results(results, items)
    }

    /// Step 1 for one item.
    fn plan<'i>(
        &self,
        items: &[PutItem<'i>],
        idx: usize,
        max_bytes: u64,
        in_batch: &mut HashMap<&'i str, usize>,
    ) -> Plan {
        let item = &items[idx];
        let key = item.key;
        let path = match self.path_of(key) {
            Ok(p) => p,
            Err(e) => return Plan::Done(Err(e)),
        };
        match self.same_bytes(&path, item.envelope) {
            Ok(true) => {
                return Plan::SyncDir(path.parent().unwrap_or(&self.root).to_path_buf());
            }
            Ok(false) => return Plan::Done(Err(ColdError::AlreadyExists { key: key.into() })),
            Err(e) if is_missing(&e) => {}
            Err(e) => return Plan::Done(Err(cold_io("put: compare existing", key, e))),
        }
        if let Some(&earlier) = in_batch.get(key) {
            return if items[earlier].envelope == item.envelope {
                Plan::Alias(earlier)
            } else {
                Plan::Done(Err(ColdError::AlreadyExists { key: key.into() }))
            };
        }
        if let Some(j) = &self.journal {
            let hit = j.index.get(key).copied();
            // Committed by an earlier batch of this writer, unless erased since (erasure
            // files are rare: usually this reads a directory that does not exist).
            let live = hit.filter(|&(rec_at, _, _)| {
                !self
                    .erased()
                    .is_ok_and(|e| e.contains(&(j.name.base_name(), rec_at)))
            });
            if let Some((_, at, len)) = live {
                return Plan::Done(if len != item.envelope.len() {
                    Err(ColdError::AlreadyExists { key: key.into() })
                } else {
                    let mut existing = vec![0u8; len];
                    match j.file.read_exact_at(&mut existing, at) {
                        Ok(()) if existing == item.envelope => Ok(PutOutcome::Stored),
                        Ok(()) => Err(ColdError::AlreadyExists { key: key.into() }),
                        Err(e) => Err(cold_io("put: compare journaled", key, e)),
                    }
                });
            }
        }
        in_batch.insert(key, idx);
        if item.origin == KeyOrigin::SubmitterKey || record_len_of(item) as u64 > max_bytes {
            Plan::PerFile
        } else {
            Plan::Append
        }
    }

    /// Creates this writer's next journal (and the journal directory on first use), fsyncing
    /// the directory that got a new entry.
    fn new_journal(&mut self) -> io::Result<()> {
        let dir = self.root.join(JOURNAL_DIR);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => sync_dir(&self.root)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..super::TEMP_ATTEMPTS {
            let name = JournalName::fresh();
            let path = dir.join(name.file_name());
            // Readable too: a later put of a key it holds is compared with its bytes.
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
            {
                Ok(file) => {
                    sync_dir(&dir)?;
                    self.journal = Some(Active {
                        name,
                        path,
                        file,
                        len: 0,
                        opened: Instant::now(),
                        index: HashMap::new(),
                    });
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// How long the current journal has been open, if there is one with records in it.
    pub(crate) fn journal_age(&self) -> Option<Duration> {
        self.journal
            .as_ref()
            .filter(|j| j.len > 0)
            .map(|j| j.opened.elapsed())
    }

    /// Seals the current journal (renames it with the sealed suffix; it is never written
    /// again), if there is one. An empty journal is removed instead. Errors are logged: a
    /// journal whose rename failed is still sealed once its writer is gone.
    pub(crate) fn seal_journal(&mut self) {
        let Some(j) = self.journal.take() else {
            return;
        };
        drop(j.file);
        if j.len == 0 {
            let _ = fs::remove_file(&j.path);
            return;
        }
        let mut sealed = j.name;
        sealed.sealed = true;
        let to = j.path.with_file_name(sealed.file_name());
        if let Err(e) = fs::rename(&j.path, &to) {
            tracing::warn!(journal = %j.path.display(), error = %e, "could not seal a journal");
        }
        note!(self, Op::Seal);
    }

    /// The envelope of `key`'s first record in the journals (oldest journal first), if any.
    /// A record longer than `max_len` is [`ColdError::ObjectTooLarge`]. Journals that vanish
    /// meanwhile (materialised) are skipped; other read errors fail.
    pub(crate) fn get_journaled(
        &self,
        key: &str,
        max_len: usize,
    ) -> Result<Option<Vec<u8>>, ColdError> {
        self.path_of(key)?;
        let mut found = None;
        self.each_record(|rec| {
            if rec.key != key {
                return true;
            }
            found = Some(if rec.envelope.len() > max_len {
                Err(ColdError::ObjectTooLarge {
                    key: key.to_owned(),
                    len: rec.envelope.len() as u64,
                    max: max_len as u64,
                })
            } else {
                Ok(rec.envelope.to_vec())
            });
            false
        })
        .map_err(|e| cold_io("get: read journals", key, e))?;
        found.transpose()
    }

    /// The valid keys of every journal record not erased (repeats possible).
    pub(crate) fn journaled_keys(&self) -> Result<Vec<String>, ColdError> {
        let mut keys = Vec::new();
        self.each_record(|rec| {
            if self.path_of(rec.key).is_ok() {
                keys.push(rec.key.to_owned());
            }
            true
        })
        .map_err(|e| cold_io("list", self.root.join(JOURNAL_DIR).display().to_string(), e))?;
        Ok(keys)
    }

    /// The journal records of `key` not erased yet: (journal base name, offset).
    pub(crate) fn journal_records_of(&self, key: &str) -> Result<Vec<(String, u64)>, ColdError> {
        let mut found = Vec::new();
        self.each_record(|rec| {
            if rec.key == key {
                found.push((rec.journal.to_owned(), rec.offset));
            }
            true
        })
        .map_err(|e| cold_io("delete: read journals", key, e))?;
        Ok(found)
    }

    /// Calls `f` with every valid, not erased record of every journal, oldest journal first,
    /// until it returns false. Journals that vanish meanwhile (materialised) are skipped.
    fn each_record(&self, mut f: impl FnMut(&Located<'_>) -> bool) -> io::Result<()> {
        let journals = journal::list_journals(&self.root)?;
        if journals.is_empty() {
            return Ok(());
        }
        let erased = self.erased()?;
        for (name, path) in journals {
            let base = name.base_name();
            let Some(bytes) = read_listed_journal(&name, &path)? else {
                continue;
            };
            let mut records = Records::new(&bytes, self.journal_max_envelope);
            loop {
                let offset = records.offset() as u64;
                let Some(rec) = records.next() else { break };
                if erased.contains(&(base.clone(), offset)) {
                    continue;
                }
                let located = Located {
                    key: rec.key,
                    envelope: rec.envelope,
                    journal: &base,
                    offset,
                };
                if !f(&located) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Writes the erasure record of `key`'s journal `records`, durably.
    pub(crate) fn write_erasure(
        &self,
        key: &str,
        records: &[(String, u64)],
    ) -> Result<(), ColdError> {
        let dir = self.root.join(ERASED_DIR);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => sync_dir(&self.root).map_err(|e| cold_io("delete: fsync dir", key, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cold_io("delete: create erasure dir", key, e)),
        }
        let mut text = format!("{key}\n");
        for (base, at) in records {
            text.push_str(&format!("{base} {at}\n"));
        }
        let (tmp, mut file) =
            super::create_temp(&dir).map_err(|e| cold_io("delete: create erasure", key, e))?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        drop(file);
        let name = format!(
            "{:016x}{:016x}.erased",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let linked = written.and_then(|()| fs::hard_link(&tmp, dir.join(name)));
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| cold_io("delete: write erasure", key, e))?;
        sync_dir(&dir).map_err(|e| cold_io("delete: fsync dir", key, e))
    }

    /// Every erased journal record: (journal base name, offset). Lines that do not parse
    /// erase nothing.
    pub(crate) fn erased(&self) -> io::Result<HashSet<Erased>> {
        Ok(self
            .erasure_files()?
            .into_iter()
            .flat_map(|(_, records)| records)
            .collect())
    }

    /// The erasure files and the records each names.
    pub(crate) fn erasure_files(&self) -> io::Result<Vec<(PathBuf, Vec<Erased>)>> {
        let Some(entries) = super::read_dir_if_any(&self.root.join(ERASED_DIR))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "erased") {
                continue;
            }
            let Some(bytes) = journal::read_capped(&path, 1 << 20)? else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let records = text
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let (base, at) = l.split_once(' ')?;
                    Some((base.to_owned(), at.parse::<u64>().ok()?))
                })
                .collect();
            out.push((path, records));
        }
        Ok(out)
    }

    /// The journal this store appends to (tests and diagnostics).
    pub fn active_journal(&self) -> Option<&Path> {
        self.journal.as_ref().map(|j| j.path.as_path())
    }
}

/// Reads a journal file up to [`super::JOURNAL_READ_CAP`]; `None` if it vanished.
pub(crate) fn read_journal(path: &Path) -> io::Result<Option<Vec<u8>>> {
    journal::read_capped(path, super::JOURNAL_READ_CAP)
}

/// Reads a journal found by a listing, following its seal: a live journal listed unsealed may
/// be renamed with the sealed suffix before it is opened, and skipping it then would make a
/// key it holds look missing to `get` (Restore answered NotFound for a `Completed` key once in
/// `tests/tests/journal.rs`). `None` only when neither name exists any more: materialised
/// (its key files were written before it was removed) or erased.
fn read_listed_journal(name: &JournalName, path: &Path) -> io::Result<Option<Vec<u8>>> {
    if let Some(bytes) = read_journal(path)? {
        return Ok(Some(bytes));
    }
    if name.sealed {
        return Ok(None);
    }
    let sealed = JournalName {
        sealed: true,
        ..*name
    };
    read_journal(&path.with_file_name(sealed.file_name()))
}

fn record_len_of(item: &PutItem<'_>) -> usize {
    journal::record_len(item.key.len(), item.envelope.len())
}

/// Whether the commit mode is the journal (for callers that show it).
pub fn is_journal(commit: Commit) -> bool {
    matches!(commit, Commit::Journal { .. })
}

#[cfg(test)]
mod tests {
    use super::super::journal::CONFLICT_DIR;
    use super::super::materialise;
    use super::*;
    use crate::ColdStore;

    const LIMIT: u64 = 64 * 1024;

    /// A journal sealed between the listing and the read is read under its sealed name.
    #[test]
    fn a_journal_sealed_after_the_listing_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        let items = [item("a/1.thcs", b"one")];
        assert!(store.put_batch(&items).iter().all(Result::is_ok));
        let listed = journal::list_journals(dir.path()).unwrap();
        let [(name, path)] = &listed[..] else {
            panic!("one journal: {listed:?}")
        };
        assert!(!name.sealed);
        store.seal_journal();
        assert!(read_journal(path).unwrap().is_none(), "renamed away");
        let bytes = read_listed_journal(name, path)
            .unwrap()
            .expect("read as sealed");
        let mut records = Records::new(&bytes, 1 << 20);
        assert_eq!(records.next().map(|r| r.key), Some("a/1.thcs"));
    }

    fn journaled(dir: &Path) -> FsStore {
        let mut s = FsStore::open(dir).unwrap();
        s.set_commit(Commit::Journal {
            max_bytes: LIMIT,
            max_age: Duration::from_secs(3600),
        });
        s
    }

    fn item<'a>(key: &'a str, envelope: &'a [u8]) -> PutItem<'a> {
        PutItem {
            key,
            envelope,
            origin: KeyOrigin::PoolId,
        }
    }

    fn accept_all(_: &[u8]) -> Result<(), ColdError> {
        Ok(())
    }

    /// The journal order: every record of the batch appended (one append), then one sync,
    /// then the results; existing keys keep their per-file semantics.
    #[test]
    fn journal_appends_syncs_then_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        let mut plain = FsStore::open(dir.path()).unwrap();
        plain.put("a/taken.thcs", b"old").unwrap();
        plain.put("a/same.thcs", b"same").unwrap();
        let items = [
            item("a/1.thcs", b"one"),
            item("b/c/2.thcs", b"two"),
            item("a/taken.thcs", b"new"),
            item("a/same.thcs", b"same"),
            item("../bad", b"x"),
            item("a/1.thcs", b"one"),
            item("a/1.thcs", b"uno"),
        ];
        let results = store.put_batch(&items);
        assert!(matches!(results[0], Ok(PutOutcome::Stored)), "{results:?}");
        assert!(matches!(results[1], Ok(PutOutcome::Stored)));
        assert!(matches!(results[2], Err(ColdError::AlreadyExists { .. })));
        assert!(matches!(results[3], Ok(PutOutcome::Stored)));
        assert!(matches!(results[4], Err(ColdError::InvalidKey { .. })));
        assert!(
            matches!(results[5], Ok(PutOutcome::Stored)),
            "same key, same bytes"
        );
        assert!(matches!(results[6], Err(ColdError::AlreadyExists { .. })));
        assert_eq!(
            store.ops,
            vec![Op::NewJournal, Op::Append(2), Op::JournalSync, Op::Results],
            "one append and one sync, before the results"
        );
        assert!(!dir.path().join("a/1.thcs").exists(), "no key file yet");
        // A later batch: compared with the journal's bytes.
        store.ops.clear();
        let r = store.put_batch(&[item("a/1.thcs", b"one"), item("b/c/2.thcs", b"zwei")]);
        assert!(matches!(r[0], Ok(PutOutcome::Stored)));
        assert!(matches!(r[1], Err(ColdError::AlreadyExists { .. })));
        assert_eq!(store.ops, vec![Op::Results]);
        // Readers see journaled objects.
        assert_eq!(store.get("a/1.thcs", 10).unwrap(), b"one");
        assert!(matches!(
            store.get("a/1.thcs", 2),
            Err(ColdError::ObjectTooLarge { .. })
        ));
        assert!(matches!(
            store.get("a/none", 10),
            Err(ColdError::NotFound { .. })
        ));
        let mut keys = plain.list("").unwrap();
        keys.sort();
        assert_eq!(
            keys,
            ["a/1.thcs", "a/same.thcs", "a/taken.thcs", "b/c/2.thcs"]
        );
        // The live writer's journal is not materialised; sealed, it is.
        let r = plain.materialise(&|_| false, accept_all, 1000).unwrap();
        assert_eq!(r.journals, 0);
        store.seal_journal();
        let r = plain.materialise(&|_| false, accept_all, 1000).unwrap();
        assert_eq!((r.journals, r.stored, r.conflicts), (1, 2, 0), "{r:?}");
        assert_eq!(fs::read(dir.path().join("a/1.thcs")).unwrap(), b"one");
        assert_eq!(fs::read(dir.path().join("b/c/2.thcs")).unwrap(), b"two");
        assert!(journal::list_journals(dir.path()).unwrap().is_empty());
        assert!(plain.delete("a/1.thcs").unwrap());
    }

    #[test]
    fn journals_rotate_on_size_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        let env = vec![7u8; 20 * 1024];
        let keys: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
        let items: Vec<_> = keys.iter().map(|k| item(k, &env)).collect();
        assert!(store.put_batch(&items).iter().all(|r| r.is_ok()));
        let names = journal::list_journals(dir.path()).unwrap();
        assert!(names.len() >= 3, "{names:?}");
        for (n, p) in &names {
            assert!(fs::metadata(p).unwrap().len() <= LIMIT, "{n:?}");
        }
        assert_eq!(names.iter().filter(|(n, _)| !n.sealed).count(), 1);
        // Age: a batch after max_age seals first.
        store.set_commit(Commit::Journal {
            max_bytes: LIMIT,
            max_age: Duration::ZERO,
        });
        store.put("late", b"x").unwrap();
        let after = journal::list_journals(dir.path()).unwrap();
        assert_eq!(after.len(), names.len() + 1);
        // A record too long for any journal goes per file.
        let big = vec![1u8; LIMIT as usize];
        store.put("big", &big).unwrap();
        assert_eq!(fs::read(dir.path().join("big")).unwrap(), big);
        for k in &keys {
            assert_eq!(store.get(k, 1 << 20).unwrap(), env);
        }
    }

    /// An idle writer seals its journal once it is old enough, not before; an empty or absent
    /// journal is left alone.
    #[test]
    fn idle_work_seals_a_journal_old_enough() {
        use crate::ColdStore;
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        store.background_work().unwrap();
        assert!(journal::list_journals(dir.path()).unwrap().is_empty());
        store.put("idle/1", b"one").unwrap();
        store.background_work().unwrap();
        let open = journal::list_journals(dir.path()).unwrap();
        assert_eq!(open.len(), 1);
        assert!(!open[0].0.sealed, "sealed at once: {open:?}");
        std::thread::sleep(super::super::IDLE_SEAL_AGE);
        store.background_work().unwrap();
        let sealed = journal::list_journals(dir.path()).unwrap();
        assert_eq!(sealed.len(), 1);
        assert!(sealed[0].0.sealed, "{sealed:?}");
        assert!(store.active_journal().is_none());
        assert_eq!(store.get("idle/1", 10).unwrap(), b"one");
    }

    /// A journal of a gone writer with a torn tail: every complete record is materialised.
    #[test]
    fn torn_tail_keeps_complete_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        store.put_batch(&[item("x/1", b"one"), item("x/2", b"two")]);
        let path = store.active_journal().unwrap().to_path_buf();
        drop(store);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"HPJ1\x03\x00\xff\xff\xff\x7fgarbage").unwrap();
        drop(f);
        let mut plain = FsStore::open(dir.path()).unwrap();
        assert_eq!(plain.get("x/2", 10).unwrap(), b"two");
        let r = plain.materialise(&|_| true, accept_all, 1000).unwrap();
        assert_eq!((r.stored, r.torn, r.journals), (2, 1, 1), "{r:?}");
        assert_eq!(fs::read(dir.path().join("x/2")).unwrap(), b"two");
    }

    /// Two writers, one key, different bytes: the older journal wins, the other envelope is
    /// kept in the conflicts area.
    #[test]
    fn conflicting_journals_keep_both_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = journaled(dir.path());
        let mut b = journaled(dir.path());
        assert!(a.put("k", b"first").is_ok());
        assert!(
            b.put("k", b"second").is_ok(),
            "the journal's one change of semantics"
        );
        a.seal_journal();
        b.seal_journal();
        let mut plain = FsStore::open(dir.path()).unwrap();
        assert_eq!(
            plain.get("k", 10).unwrap(),
            b"first",
            "what materialisation keeps"
        );
        let r = plain.materialise(&|_| false, accept_all, 1000).unwrap();
        assert_eq!((r.stored, r.conflicts), (1, 1), "{r:?}");
        assert_eq!(fs::read(dir.path().join("k")).unwrap(), b"first");
        let c = materialise::conflicts(dir.path()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].key.as_str(), c[0].envelope.as_slice()),
            ("k", &b"second"[..])
        );
        assert!(c[0].file.starts_with(dir.path().join(CONFLICT_DIR)));
        assert_eq!(
            plain.list("").unwrap(),
            ["k"],
            "the conflicts area holds no key"
        );
    }

    /// Hostile records: a huge length, a key with `..`, an envelope the verifier refuses.
    #[test]
    fn hostile_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut plain = FsStore::open(&root).unwrap();
        let jdir = root.join(JOURNAL_DIR);
        fs::create_dir(&jdir).unwrap();
        let mut bytes = Vec::new();
        journal::encode_into(&mut bytes, "../escape", b"good").unwrap();
        journal::encode_into(&mut bytes, "bad-envelope", b"bad").unwrap();
        journal::encode_into(&mut bytes, "fine", b"good").unwrap();
        let mut huge = Vec::new();
        journal::encode_into(&mut huge, "huge", b"good").unwrap();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend(huge);
        journal::encode_into(&mut bytes, "after-huge", b"good").unwrap();
        let name = JournalName {
            created: 1,
            pid: 1,
            random: 1,
            sealed: true,
        };
        fs::write(jdir.join(name.file_name()), &bytes).unwrap();
        fn only_good(e: &[u8]) -> Result<(), ColdError> {
            if e == b"good" {
                Ok(())
            } else {
                Err(ColdError::ColdUnavailable {
                    reason: "not an envelope".into(),
                })
            }
        }
        plain.set_journal_max_envelope(1 << 20);
        let r = plain.materialise(&|_| false, only_good, 1000).unwrap();
        assert_eq!((r.stored, r.skipped, r.torn), (1, 2, 1), "{r:?}");
        assert_eq!(fs::read(root.join("fine")).unwrap(), b"good");
        assert!(!dir.path().join("escape").exists());
        assert!(
            !root.join("after-huge").exists(),
            "nothing after a damaged record"
        );
        let mut all = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    all.push(e.path());
                }
            }
        }
        assert_eq!(all, [root.join("fine")], "nothing else written anywhere");
    }

    /// Erasing a journaled key: gone for readers and never materialised; a later put of the
    /// key is a new object.
    #[test]
    fn erased_records_stay_erased() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = journaled(dir.path());
        store.put("e/k", b"v1").unwrap();
        assert!(store.delete("e/k").unwrap());
        assert!(matches!(
            store.get("e/k", 10),
            Err(ColdError::NotFound { .. })
        ));
        assert!(store.list("").unwrap().is_empty());
        assert!(!store.delete("e/k").unwrap(), "erased already");
        store.put("e/k", b"v2").unwrap();
        assert_eq!(store.get("e/k", 10).unwrap(), b"v2");
        store.seal_journal();
        let mut plain = FsStore::open(dir.path()).unwrap();
        let r = plain.materialise(&|_| false, accept_all, 1000).unwrap();
        assert_eq!(r.stored, 1, "{r:?}");
        assert_eq!(fs::read(dir.path().join("e/k")).unwrap(), b"v2");
        assert_eq!(
            fs::read_dir(dir.path().join(super::ERASED_DIR))
                .unwrap()
                .count(),
            0,
            "stale erasure removed with its journal"
        );
    }
}
