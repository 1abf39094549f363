//! The local spool of the S3 store: envelopes whose upload failed because the target was
//! unreachable, kept durably until the drainer uploads them under their original key.
//!
//! Layout of the spool directory (created on first use, mode 0700):
//! - `<h>.spool`: one pending envelope, `h` = lowercase hex SHA-256 of its object key, so the
//!   same key always maps to the same file (records are create-only: spooling a key again
//!   with the same bytes is a no-op, with other bytes it is refused);
//! - `<h>.spool.claim-<pid>-<unix-secs>-<random>`: an entry a drainer has claimed (atomic
//!   rename; the random part keeps two claims of successive records of one key distinct);
//! - `.tmp-<pid>-<random>`: a record being written (never read; removed when stale);
//! - `quarantine/`: records that failed verification, kept for an operator.
//!
//! A record is `"HPSPOOL1"`, the key length (u16 big-endian), the key (UTF-8), then the
//! envelope bytes. Records are written atomically: temp file (0600), write, fsync, link
//! (never replacing), fsync directory. The spool directory is created 0700 and its parent
//! fsynced, so the new directory survives a crash together with the first record. The key stored inside must hash to the file name, otherwise the record
//! is treated as corrupt.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::ColdError;
use crate::MAX_KEY_LEN;

/// First bytes of every spool record.
const MAGIC: &[u8; 8] = b"HPSPOOL1";
/// Suffix of a pending entry.
const SUFFIX: &str = ".spool";
/// Marker between an entry name and its claimant.
const CLAIM_MARK: &str = ".claim-";
/// Prefix of records being written.
const TMP_PREFIX: &str = ".tmp-";
/// Suffix of an erasure's tombstone (`<stem>.erased`, see [`Spool::remove_all`]).
const TOMBSTONE: &str = ".erased";
/// A tombstone is kept this many times a claim's staleness age, and at least
/// [`TOMBSTONE_KEPT_AT_LEAST`] (then removed by [`Spool::reclaim_stale`]).
const TOMBSTONE_KEPT: u32 = 4;
/// See [`TOMBSTONE_KEPT`].
const TOMBSTONE_KEPT_AT_LEAST: Duration = Duration::from_secs(3600);
/// Subdirectory of records that failed verification.
pub(super) const QUARANTINE_DIR: &str = "quarantine";

/// How many times [`Spool::read`] looks again when a record moves while it looks.
const SCAN_ROUNDS: usize = 4;

/// Length of the record header for a key of `key_len` bytes.
fn header_len(key_len: usize) -> usize {
    MAGIC.len() + 2 + key_len
}

/// The largest record holding an envelope of at most `max_envelope` bytes (under the longest
/// key): what a drainer reads at most.
pub(super) fn record_limit(max_envelope: usize) -> u64 {
    (header_len(MAX_KEY_LEN) as u64).saturating_add(max_envelope as u64)
}

/// Lowercase hex SHA-256 of the key: the stem of its spool file name.
fn stem_of(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn is_stem(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a file name in the spool directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// `<stem>.spool`
    Entry { stem: String },
    /// `<stem>.spool.claim-<pid>-<secs>-<random hex>`
    Claim { stem: String, secs: u64 },
    /// `<stem>.erased`: the key was erased while records of it were spooled.
    Tombstone,
    /// `.tmp-…`
    Temp,
    /// Anything else (ignored).
    Other,
}

fn parse_name(name: &str) -> Name {
    if name.starts_with(TMP_PREFIX) {
        return Name::Temp;
    }
    if let Some(stem) = name.strip_suffix(SUFFIX) {
        if is_stem(stem) {
            return Name::Entry { stem: stem.into() };
        }
        return Name::Other;
    }
    if name.strip_suffix(TOMBSTONE).is_some_and(is_stem) {
        return Name::Tombstone;
    }
    let Some((entry, claimant)) = name.split_once(CLAIM_MARK) else {
        return Name::Other;
    };
    let Some(stem) = entry.strip_suffix(SUFFIX) else {
        return Name::Other;
    };
    let mut parts = claimant.split('-');
    let (Some(pid), Some(secs), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Name::Other;
    };
    let nonce_ok = !nonce.is_empty() && nonce.bytes().all(|b| b.is_ascii_hexdigit());
    match (pid.parse::<u32>(), secs.parse::<u64>()) {
        (Ok(_), Ok(secs)) if nonce_ok && is_stem(stem) => Name::Claim {
            stem: stem.into(),
            secs,
        },
        _ => Name::Other,
    }
}

/// A pending entry, as listed for draining.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// File name (`<stem>.spool`).
    pub name: String,
    /// Modification time: when the record was written.
    pub written: SystemTime,
    /// Its length when listed, bytes (records are written once, so this is its length unless
    /// something other than a spool wrote it).
    pub len: u64,
}

/// An entry this process has claimed.
#[derive(Debug)]
pub(super) struct Claim {
    /// The entry's own name, to put it back.
    entry: String,
    /// The claim file's name.
    name: String,
    /// When it was claimed (Unix seconds, as in its name).
    secs: u64,
}

impl Claim {
    /// The claimed file's name (for reports).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a spool holds ([`Spool::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCensus {
    /// Records waiting for a drainer.
    pub pending: u64,
    /// Records a drainer is uploading now (or a dead drainer left, until they are stale).
    pub claimed: u64,
    /// Bytes of the pending and claimed records.
    pub bytes: u64,
    /// Files in `quarantine/` (records that failed verification, were longer than any
    /// envelope, or whose key holds other bytes at the target), kept for an operator.
    pub quarantined: u64,
    /// Their bytes.
    pub quarantined_bytes: u64,
}

/// Why a record could not be spooled.
#[derive(Debug)]
pub(super) enum StoreError {
    /// Accepting it would take the spool above its limit.
    Full { used: u64, record: u64, limit: u64 },
    /// A record with other bytes is already spooled for the key.
    Exists,
    /// A filesystem operation failed.
    Io(io::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Full {
                used,
                record,
                limit,
            } => write!(
                f,
                "spool full: {used} bytes used + {record} bytes record > limit {limit}"
            ),
            StoreError::Exists => write!(f, "another record is spooled for the key"),
            StoreError::Io(e) => write!(f, "spool write failed: {e}"),
        }
    }
}

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// The object key the envelope belongs under.
    pub key: String,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// Parses the header of a record: the key and the header length. `stem` is the file's stem,
/// which must be the hash of the key.
fn parse_header(bytes: &[u8], stem: &str) -> Result<(String, usize), &'static str> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err("bad magic");
    };
    let [hi, lo, rest @ ..] = rest else {
        return Err("truncated header");
    };
    let key_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if key_len == 0 || key_len > MAX_KEY_LEN {
        return Err("bad key length");
    }
    let Some(key) = rest.get(..key_len) else {
        return Err("truncated key");
    };
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8")?;
    if stem_of(key) != stem {
        return Err("key does not match the file name");
    }
    Ok((key.to_owned(), header_len(key_len)))
}

/// The spool directory and its size limit.
#[derive(Debug, Clone)]
pub(super) struct Spool {
    dir: PathBuf,
    limit: u64,
}

impl Spool {
    /// A spool at `dir` (must be absolute) holding at most `limit` bytes. Touches nothing.
    pub fn new(dir: &str, limit: u64) -> Result<Self, ColdError> {
        let path = PathBuf::from(dir);
        if !path.is_absolute() {
            return Err(ColdError::InvalidConfig {
                key: "cold.s3.spool_dir".into(),
                value: dir.into(),
                allowed: "an absolute directory path".into(),
            });
        }
        Ok(Spool { dir: path, limit })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_err(op: &'static str, path: &Path, source: io::Error) -> ColdError {
        ColdError::ColdIo {
            op,
            key: path.display().to_string(),
            source,
        }
    }

    /// Creates the spool directory (0700) if missing and fsyncs its parent, so the directory
    /// entry is as durable as the records written into it.
    fn ensure_dir(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        match self.dir.parent() {
            Some(parent) => Self::sync_dir(parent),
            None => Ok(()),
        }
    }

    fn sync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// File names in the spool directory; an absent directory is empty.
    fn names(&self) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for ent in rd {
            // Names that are not UTF-8 are not ours.
            if let Ok(name) = ent?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Bytes used by every regular file of the spool, quarantine included.
    pub fn usage(&self) -> io::Result<u64> {
        let mut used = 0u64;
        for dir in [self.dir.clone(), self.dir.join(QUARANTINE_DIR)] {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let md = match ent?.metadata() {
                    Ok(md) => md,
                    // Removed by a concurrent drainer between readdir and stat.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if md.is_file() {
                    used = used.saturating_add(md.len());
                }
            }
        }
        Ok(used)
    }

    /// Writes `envelope` for `key` atomically and create-only: if a pending record of the key
    /// exists, the same bytes are success (nothing written) and other bytes
    /// [`StoreError::Exists`]. Refuses when the spool would exceed its limit. `key` must be valid (at most
    /// [`MAX_KEY_LEN`] bytes).
    pub fn store(&self, key: &str, envelope: &[u8]) -> Result<(), StoreError> {
        let key_len = u16::try_from(key.len())
            .map_err(|_| StoreError::Io(io::Error::other("key too long for the spool")))?;
        let record = (header_len(key.len()) as u64).saturating_add(envelope.len() as u64);
        self.ensure_dir().map_err(StoreError::Io)?;
        let used = self.usage().map_err(StoreError::Io)?;
        if used.saturating_add(record) > self.limit {
            return Err(StoreError::Full {
                used,
                record,
                limit: self.limit,
            });
        }
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&key_len.to_be_bytes())?;
            f.write_all(key.as_bytes())?;
            f.write_all(envelope)?;
            f.sync_all()?;
            drop(f);
            let dest = self.dir.join(format!("{}{SUFFIX}", stem_of(key)));
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => Self::sync_dir(&self.dir).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        // Best effort: the temp file may not exist (open failed); linked or not, its name is
        // no longer needed.
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(true) => Ok(()),
            Ok(false) => match self.read(key, envelope.len()) {
                Ok(Some(existing)) if existing == envelope => Ok(()),
                Ok(Some(_)) | Err(ColdError::ObjectTooLarge { .. }) => Err(StoreError::Exists),
                // Uploaded (or erased) since: nothing spooled any more, try again once.
                Ok(None) => self.store(key, envelope),
                Err(e) => Err(StoreError::Io(io::Error::other(e.to_string()))),
            },
            Err(e) => Err(StoreError::Io(e)),
        }
    }

    /// Names of the pending file and of every claim of `key` present now.
    fn files_of(&self, key: &str) -> io::Result<Vec<String>> {
        let stem = stem_of(key);
        Ok(self
            .names()?
            .into_iter()
            .filter(|n| match parse_name(n) {
                Name::Entry { stem: s } | Name::Claim { stem: s, .. } => s == stem,
                _ => false,
            })
            .collect())
    }

    /// The envelope spooled for `key`, if any (pending or claimed by a drainer), read only if
    /// it is at most `max_len` bytes.
    pub fn read(&self, key: &str, max_len: usize) -> Result<Option<Vec<u8>>, ColdError> {
        let pending = format!("{}{SUFFIX}", stem_of(key));
        // A drainer moves a record pending -> claim (claim), claim -> pending (unclaim) and
        // removes a claim once the upload landed. Each look must therefore follow a miss of
        // the one before: the pending file first, the claims listed only after it was found
        // missing (a list taken earlier can predate the claim's rename and miss the record
        // in both places). A file that vanishes between the listing and the open was moved
        // under us: look again, a bounded number of times (then the record is gone or keeps
        // moving; the caller's HEAD check covers a record that was uploaded and removed).
        for _ in 0..SCAN_ROUNDS {
            if let Some(envelope) = self.read_file(key, &pending, max_len)? {
                return Ok(Some(envelope));
            }
            let claims: Vec<String> = self
                .files_of(key)
                .map_err(|e| Self::io_err("spool list", &self.dir, e))?
                .into_iter()
                .filter(|n| n.contains(CLAIM_MARK))
                .collect();
            let mut moved = false;
            for name in &claims {
                match self.read_file(key, name, max_len)? {
                    Some(envelope) => return Ok(Some(envelope)),
                    None => moved = true,
                }
            }
            if !moved && !self.dir.join(&pending).exists() {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// One spooled file of `key` under `name`: `None` if it does not exist (any more).
    fn read_file(
        &self,
        key: &str,
        name: &str,
        max_len: usize,
    ) -> Result<Option<Vec<u8>>, ColdError> {
        let stem = stem_of(key);
        let path = self.dir.join(name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_err("spool read", &path, e)),
        };
        let size = f
            .metadata()
            .map_err(|e| Self::io_err("spool stat", &path, e))?
            .len();
        let hlen = header_len(key.len()) as u64;
        let corrupt = |why: &str| ColdError::ColdIo {
            op: "spool read",
            key: path.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidData, why.to_owned()),
        };
        if size < hlen {
            return Err(corrupt("record shorter than its header"));
        }
        let body = size - hlen;
        if body > max_len as u64 {
            return Err(ColdError::ObjectTooLarge {
                key: key.into(),
                len: body,
                max: max_len as u64,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut f)
            .take(size.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Self::io_err("spool read", &path, e))?;
        if buf.len() as u64 != size {
            return Err(corrupt("record changed while being read"));
        }
        let (k, h) = parse_header(&buf, &stem).map_err(corrupt)?;
        if k != key {
            return Err(corrupt("record holds another key"));
        }
        buf.drain(..h);
        Ok(Some(buf))
    }

    /// Removes every record of `key`, pending and claimed (erasure). Returns whether any
    /// existed. A drainer whose claim vanishes this way deletes what it uploaded.
    ///
    /// A claim also vanishes when another drainer takes it back as stale (its drainer was
    /// frozen past `claim_stale_after`, [`Self::reclaim_stale`]), and then the record is that
    /// drainer's: deleting the object would lose it. So before it removes anything, an
    /// erasure leaves a tombstone (`<stem>.erased`, its time the erasure's), which
    /// [`Self::erased_since`] tells the two cases apart by.
    pub fn remove_all(&self, key: &str) -> io::Result<bool> {
        let files = self.files_of(key)?;
        if !files.is_empty() {
            let tombstone = self.dir.join(format!("{}{TOMBSTONE}", stem_of(key)));
            // Created or truncated: either way its time is now.
            File::create(&tombstone)?.set_modified(SystemTime::now())?;
        }
        let mut any = false;
        for name in files {
            match fs::remove_file(self.dir.join(&name)) {
                Ok(()) => any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if any {
            Self::sync_dir(&self.dir)?;
        }
        Ok(any)
    }

    /// Keys of every record (pending or claimed) that start with `prefix`. Records that
    /// cannot be read as ours are skipped (the drainer quarantines them).
    pub fn keys(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let stem = match parse_name(&name) {
                Name::Entry { stem } | Name::Claim { stem, .. } => stem,
                _ => continue,
            };
            let mut f = match File::open(self.dir.join(&name)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut head = Vec::with_capacity(header_len(MAX_KEY_LEN));
            (&mut f)
                .take(header_len(MAX_KEY_LEN) as u64)
                .read_to_end(&mut head)?;
            if let Ok((key, _)) = parse_header(&head, &stem) {
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    /// Pending entries, oldest first (by write time, then name).
    pub fn pending(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in self.names()? {
            if !matches!(parse_name(&name), Name::Entry { .. }) {
                continue;
            }
            let (written, len) = match fs::symlink_metadata(self.dir.join(&name)) {
                Ok(md) if md.is_file() => (md.modified()?, md.len()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(Entry { name, written, len });
        }
        out.sort_by(|a, b| a.written.cmp(&b.written).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// What the spool holds now: records pending and claimed, records in `quarantine/`, and
    /// their bytes. Cost: one listing of each directory and a `stat` per file.
    pub fn census(&self) -> io::Result<SpoolCensus> {
        let mut c = SpoolCensus::default();
        for (dir, quarantine) in [
            (self.dir.clone(), false),
            (self.dir.join(QUARANTINE_DIR), true),
        ] {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let ent = ent?;
                let md = match ent.metadata() {
                    Ok(md) if md.is_file() => md,
                    Ok(_) => continue,
                    // Moved by a drainer between the listing and the stat.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let name = ent.file_name();
                let (records, bytes) = if quarantine {
                    (&mut c.quarantined, &mut c.quarantined_bytes)
                } else {
                    match parse_name(&name.to_string_lossy()) {
                        Name::Entry { .. } => (&mut c.pending, &mut c.bytes),
                        Name::Claim { .. } => (&mut c.claimed, &mut c.bytes),
                        _ => continue,
                    }
                };
                *records += 1;
                *bytes = bytes.saturating_add(md.len());
            }
        }
        Ok(c)
    }

    /// Number of records waiting (pending or claimed).
    pub fn count(&self) -> io::Result<usize> {
        Ok(self
            .names()?
            .iter()
            .filter(|n| matches!(parse_name(n), Name::Entry { .. } | Name::Claim { .. }))
            .count())
    }

    /// Claims `entry` for this process by renaming it. `None` if another process took it (or
    /// it was erased) first: rename is atomic, so exactly one claimant wins.
    pub fn claim(&self, entry: &Entry) -> io::Result<Option<Claim>> {
        let secs = unix_secs(SystemTime::now());
        let name = format!(
            "{}{CLAIM_MARK}{}-{}-{:08x}",
            entry.name,
            std::process::id(),
            secs,
            fastrand::u32(..)
        );
        match fs::rename(self.dir.join(&entry.name), self.dir.join(&name)) {
            Ok(()) => Ok(Some(Claim {
                entry: entry.name.clone(),
                name,
                secs,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a claimed record of at most `max_len` bytes; `Err(reason)` if it is not a valid
    /// record of ours, or longer (then nothing of it is read: whoever can write the spool
    /// directory chooses a file's length, up to a sparse file of any size, and reading it
    /// whole would cost that much memory).
    pub fn read_claim(
        &self,
        claim: &Claim,
        max_len: u64,
    ) -> io::Result<Result<Record, &'static str>> {
        let stem = claim
            .entry
            .strip_suffix(SUFFIX)
            .unwrap_or(claim.entry.as_str());
        let file = File::open(self.dir.join(&claim.name))?;
        let len = file.metadata()?.len();
        if len > max_len {
            return Ok(Err("longer than the largest record this drainer reads"));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // `take`: the file may grow after the `fstat`; nothing beyond `max_len` is read.
        file.take(max_len.saturating_add(1))
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_len {
            return Ok(Err("longer than the largest record this drainer reads"));
        }
        Ok(parse_header(&bytes, stem).map(|(key, h)| {
            // The envelope in place: no second copy of the record.
            bytes.drain(..h);
            Record {
                key,
                envelope: bytes,
            }
        }))
    }

    /// Puts a claimed entry back (its upload failed). If a newer record of the same key was
    /// spooled meanwhile, that one wins and the claim is dropped; if the claim vanished
    /// (erased), nothing is restored.
    pub fn unclaim(&self, claim: Claim) -> io::Result<()> {
        self.restore(&claim.name, &claim.entry)
    }

    /// Moves `from` back to `to` without replacing an existing `to` (link + unlink).
    fn restore(&self, from: &str, to: &str) -> io::Result<()> {
        match fs::hard_link(self.dir.join(from), self.dir.join(to)) {
            Ok(()) => {}
            // A newer record of the key exists: it supersedes ours.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // The claim was erased: nothing to restore.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.dir.join(from)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Self::sync_dir(&self.dir)
    }

    /// Removes a claim after its upload succeeded. Returns `false` if the claim had already
    /// vanished, which means the key was erased while it was being uploaded.
    pub fn finish(&self, claim: &Claim) -> io::Result<bool> {
        match fs::remove_file(self.dir.join(&claim.name)) {
            Ok(()) => {
                Self::sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the file `name` if it was last modified more than `age` before `now`.
    fn remove_older_than(&self, name: &str, now: SystemTime, age: Duration) -> io::Result<()> {
        let path = self.dir.join(name);
        let old = fs::symlink_metadata(&path)
            .and_then(|md| md.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|a| a > age);
        if old {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the key of `claim` was erased ([`Self::remove_all`]) since it was claimed: the
    /// question for a drainer whose claim vanished. `false` means another drainer took the
    /// claim back as stale and the record is now its own (or the erasure was longer ago than
    /// tombstones are kept: then the object an erasure should have removed is left, never
    /// one that should stay deleted).
    pub fn erased_since(&self, claim: &Claim) -> io::Result<bool> {
        let stem = claim.entry.strip_suffix(SUFFIX).unwrap_or(&claim.entry);
        match fs::symlink_metadata(self.dir.join(format!("{stem}{TOMBSTONE}"))) {
            Ok(md) => Ok(unix_secs(md.modified()?) >= claim.secs),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a claimed record that failed verification to `quarantine/`; returns its new path.
    pub fn quarantine(&self, claim: Claim) -> io::Result<PathBuf> {
        let qdir = self.dir.join(QUARANTINE_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&qdir)?;
        let dest = qdir.join(format!(
            "{}.{}-{:08x}",
            claim.entry,
            unix_secs(SystemTime::now()),
            fastrand::u32(..)
        ));
        fs::rename(self.dir.join(&claim.name), &dest)?;
        Self::sync_dir(&qdir)?;
        Self::sync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Returns claims older than `stale_after` to the pending state (their claimant died or
    /// hung) and removes temp files older than that. Returns how many claims were reclaimed.
    pub fn reclaim_stale(&self, stale_after: Duration) -> io::Result<usize> {
        let now = SystemTime::now();
        let now_secs = unix_secs(now);
        let mut reclaimed = 0;
        for name in self.names()? {
            match parse_name(&name) {
                Name::Claim { stem, secs } => {
                    if now_secs.saturating_sub(secs) > stale_after.as_secs() {
                        tracing::warn!(claim = %name, "reclaiming a stale spool claim");
                        self.restore(&name, &format!("{stem}{SUFFIX}"))?;
                        reclaimed += 1;
                    }
                }
                Name::Temp => self.remove_older_than(&name, now, stale_after)?,
                Name::Tombstone => self.remove_older_than(
                    &name,
                    now,
                    (stale_after * TOMBSTONE_KEPT).max(TOMBSTONE_KEPT_AT_LEAST),
                )?,
                Name::Entry { .. } | Name::Other => {}
            }
        }
        Ok(reclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(limit: u64) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let sp = Spool::new(dir.path().join("spool").to_str().unwrap(), limit).unwrap();
        (dir, sp)
    }

    #[test]
    fn relative_dir_is_refused() {
        assert!(matches!(
            Spool::new("rel/spool", 10),
            Err(ColdError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn names_parse() {
        let h = stem_of("a/b.thcs");
        assert_eq!(
            parse_name(&format!("{h}.spool")),
            Name::Entry { stem: h.clone() }
        );
        assert_eq!(
            parse_name(&format!("{h}.spool.claim-12-34-0a1b")),
            Name::Claim {
                stem: h.clone(),
                secs: 34
            }
        );
        assert_eq!(parse_name(".tmp-1-ff"), Name::Temp);
        assert_eq!(parse_name(&format!("{h}.erased")), Name::Tombstone);
        for other in [
            "x.spool",
            "x.erased",
            &format!("{h}.erased.spool"),
            "quarantine",
            &format!("{h}.spool.claim-x-1"),
            &format!("{h}.spool.claim-1"),
            &format!("{h}.spool.claim-1-2"),
            &format!("{h}.spool.claim-1-2-zz"),
            &format!("{h}.spool.claim-1-2-3-4"),
            &format!("{}.spool", h.to_uppercase()),
        ] {
            assert_eq!(parse_name(other), Name::Other, "{other}");
        }
    }

    #[test]
    fn store_read_replace_remove() {
        let (_d, sp) = spool(1 << 20);
        assert_eq!(sp.read("k/1", 100).unwrap(), None);
        sp.store("k/1", b"second").unwrap();
        sp.store("k/1", b"second").unwrap();
        assert!(matches!(sp.store("k/1", b"other"), Err(StoreError::Exists)));
        assert_eq!(sp.count().unwrap(), 1, "create-only: one record per key");
        assert_eq!(
            sp.read("k/1", 100).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert!(matches!(
            sp.read("k/1", 5),
            Err(ColdError::ObjectTooLarge { len: 6, max: 5, .. })
        ));
        sp.store("k/2", b"").unwrap();
        let mut keys = sp.keys("k/").unwrap();
        keys.sort();
        assert_eq!(keys, vec!["k/1".to_string(), "k/2".to_string()]);
        assert!(sp.keys("z").unwrap().is_empty());
        assert!(sp.remove_all("k/1").unwrap());
        assert!(!sp.remove_all("k/1").unwrap());
        assert_eq!(sp.read("k/1", 100).unwrap(), None);
        assert!(sp.remove_all("k/2").unwrap());
        assert_eq!(sp.count().unwrap(), 0);
    }

    #[test]
    fn records_are_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"x").unwrap();
        let p = sp.dir().join(format!("{}.spool", stem_of("k")));
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(sp.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn limit_is_enforced_before_writing() {
        let (_d, sp) = spool(100);
        // header 8 + 2 + 1 = 11 bytes, so 89 bytes of envelope fit exactly.
        sp.store("a", &[0u8; 89]).unwrap();
        match sp.store("b", &[0u8; 1]) {
            Err(StoreError::Full {
                used: 100,
                record: 12,
                limit: 100,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(sp.count().unwrap(), 1);
        assert_eq!(sp.usage().unwrap(), 100);
    }

    #[test]
    fn claim_is_exclusive_and_unclaim_restores() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"env").unwrap();
        let entries = sp.pending().unwrap();
        assert_eq!(entries.len(), 1);
        let c = sp.claim(&entries[0]).unwrap().unwrap();
        assert!(
            sp.claim(&entries[0]).unwrap().is_none(),
            "second claim loses"
        );
        assert!(sp.pending().unwrap().is_empty());
        // A claimed record is still readable and listed.
        assert_eq!(sp.read("k", 10).unwrap().as_deref(), Some(&b"env"[..]));
        assert_eq!(sp.keys("").unwrap(), vec!["k".to_string()]);
        let rec = sp.read_claim(&c, u64::MAX).unwrap().unwrap();
        assert_eq!(
            rec,
            Record {
                key: "k".into(),
                envelope: b"env".to_vec()
            }
        );
        sp.unclaim(c).unwrap();
        assert_eq!(sp.pending().unwrap().len(), 1);
        assert_eq!(sp.count().unwrap(), 1);
    }

    #[test]
    fn a_claim_is_read_only_up_to_its_bound() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"env").unwrap();
        let entry = &sp.pending().unwrap()[0];
        let exact = header_len(1) as u64 + 3;
        assert_eq!(entry.len, exact, "listed with its length");
        assert!(record_limit(3) >= exact, "the limit covers the longest key");
        let c = sp.claim(entry).unwrap().unwrap();
        assert_eq!(
            sp.read_claim(&c, exact - 1).unwrap(),
            Err("longer than the largest record this drainer reads")
        );
        assert_eq!(sp.read_claim(&c, exact).unwrap().unwrap().envelope, b"env");
    }

    #[test]
    fn unclaim_never_overwrites_a_newer_record() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"old").unwrap();
        let c = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        sp.store("k", b"new").unwrap();
        sp.unclaim(c).unwrap();
        assert_eq!(sp.count().unwrap(), 1);
        assert_eq!(sp.read("k", 10).unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn claims_of_successive_records_of_one_key_are_distinct() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"v1").unwrap();
        let c1 = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        sp.store("k", b"v2").unwrap();
        let c2 = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        assert_ne!(c1.name(), c2.name());
        assert_eq!(
            sp.read_claim(&c1, u64::MAX).unwrap().unwrap().envelope,
            b"v1"
        );
        assert!(sp.finish(&c1).unwrap());
        assert_eq!(
            sp.read_claim(&c2, u64::MAX).unwrap().unwrap().envelope,
            b"v2"
        );
        assert!(
            sp.finish(&c2).unwrap(),
            "the second claim survived the first"
        );
    }

    #[test]
    fn finish_reports_erasure_during_upload() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"e").unwrap();
        let c = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        assert!(sp.remove_all("k").unwrap(), "erasure removes claims too");
        assert!(!sp.finish(&c).unwrap());
        assert!(
            sp.erased_since(&c).unwrap(),
            "the tombstone tells it was erased"
        );
        sp.store("k", b"e").unwrap();
        let c = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        assert!(sp.finish(&c).unwrap());
        assert_eq!(sp.count().unwrap(), 0);
    }

    /// A drainer frozen past `claim_stale_after` loses its claim to another drainer, which
    /// uploads and removes the record. The frozen one then finds its claim gone: not an
    /// erasure, so the object it (and the other) uploaded must stay.
    #[test]
    fn a_claim_taken_back_as_stale_is_not_an_erasure() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"e").unwrap();
        let frozen = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        // Claims are timed in whole seconds: one must pass before it is older than zero.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(sp.reclaim_stale(Duration::ZERO).unwrap(), 1);
        let other = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        assert!(sp.finish(&other).unwrap());
        assert!(!sp.finish(&frozen).unwrap());
        assert!(!sp.erased_since(&frozen).unwrap());
        // An erasure long before the claim does not count either.
        sp.store("j", b"e").unwrap();
        assert!(sp.remove_all("j").unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        sp.store("j", b"e").unwrap();
        let later = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        sp.reclaim_stale(Duration::from_secs(3600)).unwrap();
        assert!(sp.finish(&later).unwrap());
        assert!(
            !sp.erased_since(&later).unwrap(),
            "the erasure came before the claim"
        );
    }

    #[test]
    fn tombstones_are_no_records_and_go_after_four_staleness_ages_or_an_hour() {
        let (d, sp) = spool(1 << 20);
        sp.store("k", b"e").unwrap();
        assert!(sp.remove_all("k").unwrap());
        let tomb = d
            .path()
            .join("spool")
            .join(format!("{}{TOMBSTONE}", stem_of("k")));
        assert!(tomb.exists(), "{tomb:?}");
        assert!(sp.pending().unwrap().is_empty());
        assert!(sp.keys("").unwrap().is_empty());
        assert_eq!(sp.count().unwrap(), 0);
        assert_eq!(sp.census().unwrap(), SpoolCensus::default());
        assert!(
            !sp.remove_all("k").unwrap(),
            "nothing left, no new tombstone needed"
        );
        let age = |secs| SystemTime::now() - Duration::from_secs(secs);
        let set_age = |secs| {
            File::options()
                .write(true)
                .open(&tomb)
                .unwrap()
                .set_modified(age(secs))
                .unwrap()
        };
        set_age(3000);
        sp.reclaim_stale(Duration::from_secs(1000)).unwrap();
        assert!(tomb.exists(), "kept four staleness ages");
        set_age(3599);
        sp.reclaim_stale(Duration::from_secs(10)).unwrap();
        assert!(tomb.exists(), "kept an hour at least");
        set_age(3601);
        sp.reclaim_stale(Duration::from_secs(10)).unwrap();
        assert!(!tomb.exists());
    }

    #[test]
    fn stale_claims_are_reclaimed_fresh_ones_kept() {
        let (_d, sp) = spool(1 << 20);
        sp.store("fresh", b"1").unwrap();
        let fresh = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        // A claim by a dead process long ago.
        sp.store("stale", b"2").unwrap();
        let stem = stem_of("stale");
        fs::rename(
            sp.dir().join(format!("{stem}.spool")),
            sp.dir().join(format!("{stem}.spool.claim-999999-1000-ab")),
        )
        .unwrap();
        assert_eq!(sp.reclaim_stale(Duration::from_secs(600)).unwrap(), 1);
        let pending = sp.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].name, format!("{stem}.spool"));
        assert!(sp.dir().join(fresh.name()).exists());
    }

    #[test]
    fn quarantine_moves_the_record_out_of_the_queue() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"bad").unwrap();
        let c = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
        let dest = sp.quarantine(c).unwrap();
        assert!(dest.starts_with(sp.dir().join(QUARANTINE_DIR)));
        assert_eq!(sp.count().unwrap(), 0);
        assert!(
            sp.usage().unwrap() > 0,
            "quarantine counts against the limit"
        );
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let (_d, sp) = spool(1 << 20);
        sp.store("k", b"x").unwrap();
        let p = sp.dir().join(format!("{}.spool", stem_of("k")));
        // Wrong key inside (hash mismatch), truncated, bad magic.
        for bytes in [
            {
                let mut v = MAGIC.to_vec();
                v.extend_from_slice(&1u16.to_be_bytes());
                v.extend_from_slice(b"j");
                v
            },
            MAGIC[..5].to_vec(),
            b"XXXXXXXX\x00\x01k".to_vec(),
        ] {
            fs::write(&p, &bytes).unwrap();
            assert!(
                matches!(sp.read("k", 100), Err(ColdError::ColdIo { .. })),
                "{bytes:?}"
            );
            assert!(sp.keys("").unwrap().is_empty());
            let c = sp.claim(&sp.pending().unwrap()[0]).unwrap().unwrap();
            assert!(sp.read_claim(&c, u64::MAX).unwrap().is_err());
            sp.unclaim(c).unwrap();
        }
    }

    #[test]
    fn header_parser_rejects_bad_lengths() {
        let stem = stem_of("k");
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&0u16.to_be_bytes());
        assert!(parse_header(&v, &stem).is_err());
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse_header(&v, &stem).is_err());
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&1u16.to_be_bytes());
        v.push(b'k');
        assert_eq!(parse_header(&v, &stem), Ok(("k".to_string(), 11)));
    }
}
