//! Materialisation: turning sealed journals into ordinary key files (run by the supervisor).
//!
//! The supervisor is trusted, but a journal's bytes were written by a hound that may be
//! compromised, so everything in it is hostile input: the record reader bounds both lengths
//! before it slices anything and stops at the first damaged record; each record's key is
//! validated like any key (no `..`, no absolute path, no temp segment, at most 1024 bytes),
//! so nothing outside the root is ever written; each envelope is checked by the verifier the
//! caller passes (the supervisor passes the S3 spool's, `envelope::verify`: structure and
//! SHA-256). A record that fails is logged with its reason and skipped.
//!
//! # Which journals
//! Sealed ones only: named with the sealed suffix (its writer rotated away from it and never
//! writes it again), or whose writer is gone (`gone(pid)`: at pool start, after a hound's
//! death, at shutdown after every hound exited). The journal a live writer appends to is
//! never touched: materialising then deleting it could lose records appended in between.
//!
//! # Order and durability
//! Journals are processed oldest first (creation time in the name), records in file order.
//! Each record is stored by the per-file path ([`FsStore::put_batch_per_file`]: temp file,
//! sync, create-only link, directory sync), whose "same bytes are an idempotent success" makes
//! a second run over a journal that a crash interrupted harmless. Only when every record of a
//! journal is durable as a key file (or as a conflict, below) is the journal removed and its
//! directory fsynced. An I/O error leaves the journal in place for the next run.
//!
//! # Conflicts
//! A record whose key already holds OTHER bytes was reported stored to its writer (two writers
//! journaled the key before either was materialised: see the store's module docs), so it must
//! not be lost: its record is written, durably, to `<root>/.tmp-conflicts/<sha256>.conflict`
//! (one journal record: key and envelope; named after the record's checksum, so a rerun
//! writes the same name), and logged at error with the key. `houndd verify` reports every
//! conflict file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::journal::{self, JournalName, Records, CONFLICT_DIR, JOURNAL_DIR};
use super::{cold_io, sync_dir, FsStore, DIR_MODE};
use crate::{ColdError, KeyOrigin, PutItem};

/// Checks an envelope before it becomes a key file (`houndpool_cold::s3::default_spool_verifier`
/// in the supervisor).
pub type Verifier = fn(&[u8]) -> Result<(), ColdError>;

/// Items stored per per-file batch during materialisation.
const CHUNK: usize = 64;

/// What one materialisation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Journals materialised and removed.
    pub journals: usize,
    /// Records stored as key files (or already there with the same bytes).
    pub stored: usize,
    /// Records moved to the conflicts area.
    pub conflicts: usize,
    /// Records skipped (invalid key, envelope refused by the verifier).
    pub skipped: usize,
    /// Journals whose tail after the last valid record was torn or damaged (the valid records
    /// before it were materialised).
    pub torn: usize,
    /// Journals left for a later run: the record budget ran out, or an I/O error (logged).
    pub left: usize,
}

/// The journals waiting to be materialised (sealed or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Journal files.
    pub journals: u64,
    /// Their total size.
    pub bytes: u64,
}

/// Counts the journal files under `root` and their bytes (one `readdir`, one `stat` each).
pub fn backlog(root: &Path) -> io::Result<Backlog> {
    let mut b = Backlog::default();
    for (_, path) in journal::list_journals(root)? {
        if let Ok(m) = fs::symlink_metadata(&path) {
            b.journals += 1;
            b.bytes += m.len();
        }
    }
    Ok(b)
}

impl FsStore {
    /// Materialises the sealed journals (see the module docs), oldest first, until about
    /// `budget` records were handled (a journal is always finished once started, so the
    /// work per call is bounded by `budget` plus one journal). `gone(pid)` says whether a
    /// writer is gone; `verify` checks each envelope. Fails only when the journal directory
    /// cannot be listed; a journal that cannot be processed is logged and left.
    pub fn materialise(
        &mut self,
        gone: &dyn Fn(u32) -> bool,
        verify: Verifier,
        budget: usize,
    ) -> Result<Report, ColdError> {
        let shown = || self.root.join(JOURNAL_DIR).display().to_string();
        let journals = journal::list_journals(&self.root)
            .map_err(|e| cold_io("materialise: list", shown(), e))?;
        let mut report = Report::default();
        let mut handled = 0usize;
        for (name, path) in journals {
            if !(name.sealed || gone(name.pid)) {
                continue;
            }
            if handled >= budget {
                report.left += 1;
                continue;
            }
            match self.materialise_one(&name, &path, verify, &mut report) {
                Ok(n) => {
                    handled += n;
                    report.journals += 1;
                }
                Err(e) => {
                    report.left += 1;
                    tracing::warn!(journal = %path.display(), error = %e,
                        "journal not materialised; retried at the next run");
                }
            }
        }
        Ok(report)
    }

    /// Materialises one journal and removes it; returns how many records it held.
    fn materialise_one(
        &mut self,
        name: &JournalName,
        path: &Path,
        verify: Verifier,
        report: &mut Report,
    ) -> Result<usize, ColdError> {
        let shown = path.display().to_string();
        let Some(bytes) = super::writer::read_journal(path)
            .map_err(|e| cold_io("materialise: read", &shown, e))?
        else {
            return Ok(0);
        };
        let base = name.base_name();
        let erased = self
            .erased()
            .map_err(|e| cold_io("materialise: read erasures", &shown, e))?;
        let mut records = Records::new(&bytes, self.journal_max_envelope);
        let mut items: Vec<PutItem<'_>> = Vec::new();
        let mut offsets: Vec<u64> = Vec::new();
        let mut count = 0;
        loop {
            let at = records.offset() as u64;
            let Some(rec) = records.next() else { break };
            count += 1;
            if erased.contains(&(base.clone(), at)) {
                continue;
            }
            if let Err(e) = self.path_of(rec.key) {
                report.skipped += 1;
                tracing::warn!(journal = %shown, pid = name.pid, error = %e,
                    "journal record skipped: invalid key");
                continue;
            }
            if let Err(e) = verify(rec.envelope) {
                report.skipped += 1;
                tracing::warn!(journal = %shown, pid = name.pid, key = rec.key, error = %e,
                    "journal record skipped: the envelope does not verify");
                continue;
            }
            items.push(PutItem {
                key: rec.key,
                envelope: rec.envelope,
                // Journals hold only items a pool or submitter id named (never a submitter key).
                origin: KeyOrigin::SubmitterId,
            });
            offsets.push(at);
        }
        let stop = records.stop().unwrap_or(journal::Stop::End);
        if !stop.is_clean() {
            report.torn += 1;
            tracing::warn!(journal = %shown, pid = name.pid, at = records.offset(),
                reason = %stop, ignored_bytes = bytes.len() - records.offset(),
                "journal tail ignored after its last valid record");
        }
        for (chunk, at) in items.chunks(CHUNK).zip(offsets.chunks(CHUNK)) {
            let results = self.put_batch_per_file(chunk);
            // An erasure written while these were being linked: undo what it erased.
            let erased = self
                .erased()
                .map_err(|e| cold_io("materialise: read erasures", &shown, e))?;
            for ((item, r), &at) in chunk.iter().zip(results).zip(at) {
                if erased.contains(&(base.clone(), at)) {
                    if r.is_ok() {
                        self.delete_file(item.key)?;
                    }
                    continue;
                }
                match r {
                    Ok(_) => report.stored += 1,
                    Err(ColdError::AlreadyExists { .. }) => {
                        self.keep_conflict(item)?;
                        report.conflicts += 1;
                        tracing::error!(key = item.key, journal = %shown, pid = name.pid,
                            root = %self.root.display(),
                            "two writers stored different envelopes under one key: the first \
                             is the key's object, this one was moved to the conflicts area \
                             (.tmp-conflicts); its job had been reported completed");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        fs::remove_file(path).map_err(|e| cold_io("materialise: remove journal", &shown, e))?;
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| cold_io("materialise: fsync dir", &shown, e))?;
        self.drop_stale_erasures();
        Ok(count)
    }

    /// Removes the erasure files whose journals are all gone (best effort).
    fn drop_stale_erasures(&self) {
        let Ok(files) = self.erasure_files() else {
            return;
        };
        let Ok(journals) = journal::list_journals(&self.root) else {
            return;
        };
        let live: std::collections::HashSet<String> =
            journals.iter().map(|(n, _)| n.base_name()).collect();
        for (path, records) in files {
            if records.iter().all(|(base, _)| !live.contains(base)) {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Writes `item` durably to the conflicts area (temp file, fsync, link, directory fsync).
    fn keep_conflict(&self, item: &PutItem<'_>) -> Result<(), ColdError> {
        let key = item.key;
        let mut record = Vec::new();
        if journal::encode_into(&mut record, key, item.envelope).is_none() {
            return Err(cold_io(
                "conflict: encode",
                key,
                io::Error::other("not encodable"),
            ));
        }
        let dir = self.root.join(CONFLICT_DIR);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => sync_dir(&self.root).map_err(|e| cold_io("conflict: fsync dir", key, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cold_io("conflict: create dir", key, e)),
        }
        let name = format!("{}.conflict", hex::encode(Sha256::digest(&record)));
        let (tmp, mut file) =
            super::create_temp(&dir).map_err(|e| cold_io("conflict: create", key, e))?;
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        drop(file);
        let linked = written.and_then(|()| match fs::hard_link(&tmp, dir.join(&name)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| cold_io("conflict: write", key, e))?;
        sync_dir(&dir).map_err(|e| cold_io("conflict: fsync dir", key, e))
    }
}

/// A conflict kept aside: its key and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The conflict file.
    pub file: std::path::PathBuf,
    /// The key both writers used.
    pub key: String,
    /// The envelope that was not stored under it.
    pub envelope: Vec<u8>,
}

/// The conflicts kept under `root` (files that do not parse are reported with an empty key
/// and envelope, so they are not overlooked).
pub fn conflicts(root: &Path) -> io::Result<Vec<Conflict>> {
    let Some(entries) = super::read_dir_if_any(&root.join(CONFLICT_DIR))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "conflict") {
            continue;
        }
        let bytes = journal::read_capped(&path, super::JOURNAL_READ_CAP)?.unwrap_or_default();
        let (key, envelope) = match journal::decode(&bytes, super::JOURNAL_READ_CAP as usize) {
            Ok((rec, _)) => (rec.key.to_owned(), rec.envelope.to_vec()),
            Err(_) => (String::new(), Vec::new()),
        };
        out.push(Conflict {
            file: path,
            key,
            envelope,
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}
