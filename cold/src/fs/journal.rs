//! The commit journal of the filesystem store: its record format (pure functions, no I/O,
//! fuzzed by `fuzz/fuzz_targets/journal.rs`), the names of journal files, and the reader.
//!
//! # Why a journal
//! Creating a file costs an inode allocation and a directory entry, and making it durable a
//! data sync plus a directory sync; on the disks measured for issue 11 that bounds
//! file-per-key commits to a few thousand objects per second whatever the batching. Appending
//! the records of a whole batch to one file and syncing it once costs one write and one
//! `fdatasync`. So a hound commits a batch by appending it to its own journal; the supervisor
//! later turns journals into ordinary key files ([`super::materialise`]).
//!
//! # Record format
//! ```text
//! magic        4 bytes  "HPJ1"
//! key_len      u16 LE   1 ..= MAX_KEY_LEN (1024)
//! envelope_len u32 LE   0 ..= the reader's bound (passed in), never more than u32::MAX
//! key          key_len bytes, UTF-8
//! envelope     envelope_len bytes
//! checksum     32 bytes: SHA-256 of everything above (magic through envelope)
//! ```
//! A journal file is a sequence of records and nothing else. The checksum is there to find the
//! end of what was written completely (a crash can leave a torn last record, or a record whose
//! pages were only partly written back); it is not an authentication of the writer: a hound
//! that writes a journal can write any record it likes, which is why the materialiser treats
//! every field as hostile (key validation, envelope verification). SHA-256 rather than a CRC
//! because `sha2` is already a dependency and the CPUs it runs on hash at GB/s (SHA-NI): the
//! cost next to gzip is noise, and a forged-looking match by accident is out of the question.
//!
//! # Reading
//! [`Records`] yields the valid records of a byte slice in order and stops at the first one
//! that is incomplete or invalid; [`Records::stop`] says why. Both lengths are checked against
//! their bounds *before* anything is allocated or sliced, so a huge length field costs
//! nothing. Stopping at the first invalid record (rather than searching for the next magic)
//! is what makes the reader never yield a record that was not written: anything after a
//! damaged record could start inside an envelope whose bytes happen to look like a record.
//! A writer only ever appends whole records and makes them durable before reporting them, so
//! every reported record comes before the first damaged one.
//!
//! # Names
//! `<root>/.tmp-journal/.tmp-<pid>-<created>-<random>` while its writer appends to it, and the
//! same name with [`SEALED_SUFFIX`] once the writer rotated away from it (it is never written
//! again). `<pid>` is the writer's process id, so the supervisor can tell whether the writer
//! is gone (like temp files, see [`super::sweep_temps`]); `<created>` (16 hex digits,
//! nanoseconds since the epoch) orders journals oldest first for readers and the
//! materialiser; `<random>` (8 hex digits) keeps two journals of one writer apart. The
//! directory's name starts with [`super::TEMP_PREFIX`], so no key can name it or anything in
//! it, and `list` never descends into it.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::MAX_KEY_LEN;

/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"HPJ1";
/// Bytes before the key: magic, key length, envelope length.
pub const HEADER_LEN: usize = 4 + 2 + 4;
/// Bytes after the envelope: the SHA-256 checksum.
pub const CHECKSUM_LEN: usize = 32;
/// Directory below the store's root that holds journals.
pub const JOURNAL_DIR: &str = ".tmp-journal";
/// Directory below the store's root that holds envelopes the materialiser could not store
/// because their key already held other bytes (see [`super::materialise`]).
pub const CONFLICT_DIR: &str = ".tmp-conflicts";
/// Directory below the store's root that holds erasure records: which journal records a
/// `delete` erased (see [`super::writer`]).
pub const ERASED_DIR: &str = ".tmp-erased";
/// Suffix of a journal its writer rotated away from.
pub const SEALED_SUFFIX: &str = ".sealed";

/// One record as read: borrowed from the journal's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key as written (valid UTF-8 of 1 to [`MAX_KEY_LEN`] bytes; NOT yet validated as a
    /// key: a reader that acts on it must call `validate_key`).
    pub key: &'a str,
    /// The envelope as written (not verified).
    pub envelope: &'a [u8],
}

/// Why a reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every byte was part of a valid record.
    End,
    /// The last record is incomplete (`have` of at least `need` bytes): a torn tail, normal
    /// after a crash.
    Torn {
        /// Bytes present from the record's start.
        have: usize,
        /// Bytes the record's header announces (or the header's length when it is cut).
        need: usize,
    },
    /// The record does not start with [`MAGIC`].
    BadMagic,
    /// The key length is 0 or above [`MAX_KEY_LEN`].
    KeyLength(usize),
    /// The envelope length is above the reader's bound.
    EnvelopeTooLarge {
        /// Announced length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// The checksum does not match: damaged (or torn) record.
    Checksum,
    /// The key is not UTF-8.
    KeyNotUtf8,
}

impl Stop {
    /// Whether the reader consumed everything (no damaged or torn tail).
    pub fn is_clean(&self) -> bool {
        *self == Stop::End
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::End => f.write_str("end of journal"),
            Stop::Torn { have, need } => {
                write!(f, "torn record ({have} of {need} bytes)")
            }
            Stop::BadMagic => f.write_str("bad record magic"),
            Stop::KeyLength(n) => write!(f, "key length {n} outside 1..={MAX_KEY_LEN}"),
            Stop::EnvelopeTooLarge { len, max } => {
                write!(f, "envelope length {len} above the bound of {max}")
            }
            Stop::Checksum => f.write_str("record checksum mismatch"),
            Stop::KeyNotUtf8 => f.write_str("record key is not UTF-8"),
        }
    }
}

/// Length of the record of a `key_len`-byte key and an `envelope_len`-byte envelope.
pub fn record_len(key_len: usize, envelope_len: usize) -> usize {
    HEADER_LEN + key_len + envelope_len + CHECKSUM_LEN
}

/// Appends the record of `key` / `envelope` to `out`. `None` (and `out` unchanged) when the
/// key is empty or longer than [`MAX_KEY_LEN`], or the envelope does not fit a u32 length:
/// such a record could not be read back.
pub fn encode_into(out: &mut Vec<u8>, key: &str, envelope: &[u8]) -> Option<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return None;
    }
    let env_len = u32::try_from(envelope.len()).ok()?;
    let start = out.len();
    out.reserve(record_len(key.len(), envelope.len()));
    out.extend_from_slice(&MAGIC);
    // key.len() <= MAX_KEY_LEN (1024) < u16::MAX.
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&env_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    let sum = Sha256::digest(&out[start..]);
    out.extend_from_slice(&sum);
    Some(())
}

/// Decodes the record at the start of `buf`, accepting envelopes of at most `max_envelope`
/// bytes. Returns the record and its length, or why there is no valid record there
/// ([`Stop::End`] for an empty `buf`). Never panics, never allocates.
pub fn decode(buf: &[u8], max_envelope: usize) -> Result<(Record<'_>, usize), Stop> {
    if buf.is_empty() {
        return Err(Stop::End);
    }
    let Some(head) = buf.get(..HEADER_LEN) else {
        // A prefix of a header: torn, unless even the magic is wrong.
        let m = buf.len().min(MAGIC.len());
        if buf[..m] != MAGIC[..m] {
            return Err(Stop::BadMagic);
        }
        return Err(Stop::Torn {
            have: buf.len(),
            need: HEADER_LEN,
        });
    };
    if head[..4] != MAGIC {
        return Err(Stop::BadMagic);
    }
    let key_len = usize::from(u16::from_le_bytes([head[4], head[5]]));
    let env_len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
    if key_len == 0 || key_len > MAX_KEY_LEN {
        return Err(Stop::KeyLength(key_len));
    }
    if u64::from(env_len) > max_envelope as u64 {
        return Err(Stop::EnvelopeTooLarge {
            len: u64::from(env_len),
            max: max_envelope,
        });
    }
    // env_len <= max_envelope, a usize; key_len <= 1024: no overflow below.
    let env_len = env_len as usize;
    let need = record_len(key_len, env_len);
    let Some(rec) = buf.get(..need) else {
        return Err(Stop::Torn {
            have: buf.len(),
            need,
        });
    };
    let body_end = need - CHECKSUM_LEN;
    let sum = Sha256::digest(&rec[..body_end]);
    if sum.as_slice() != &rec[body_end..] {
        return Err(Stop::Checksum);
    }
    let key = std::str::from_utf8(&rec[HEADER_LEN..HEADER_LEN + key_len])
        .map_err(|_| Stop::KeyNotUtf8)?;
    Ok((
        Record {
            key,
            envelope: &rec[HEADER_LEN + key_len..body_end],
        },
        need,
    ))
}

/// The valid records at the start of a journal's bytes, in order; stops at the first torn or
/// invalid one.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    max_envelope: usize,
    stop: Option<Stop>,
}

impl<'a> Records<'a> {
    /// Reads `buf`, accepting envelopes of at most `max_envelope` bytes.
    pub fn new(buf: &'a [u8], max_envelope: usize) -> Self {
        Records {
            buf,
            pos: 0,
            max_envelope,
            stop: None,
        }
    }

    /// Why the iteration ended (`None` while it has not).
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Offset of the first byte not yet consumed (after the end: where the valid prefix ends).
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.stop.is_some() {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match decode(rest, self.max_envelope) {
            Ok((rec, len)) => {
                self.pos += len;
                Some(rec)
            }
            Err(stop) => {
                self.stop = Some(stop);
                None
            }
        }
    }
}

/// What a journal's file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalName {
    /// Creation time (nanoseconds since the epoch, as the writer saw it): the order of
    /// journals, oldest first.
    pub created: u64,
    /// The writer's process id.
    pub pid: u32,
    /// The random part.
    pub random: u32,
    /// Whether the writer rotated away from it.
    pub sealed: bool,
}

impl JournalName {
    /// A new name for a journal of this process, created now.
    pub fn fresh() -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        JournalName {
            created,
            pid: std::process::id(),
            random: fastrand::u32(..),
            sealed: false,
        }
    }

    /// Parses a file name of the journal directory; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let (name, sealed) = match name.strip_suffix(SEALED_SUFFIX) {
            Some(n) => (n, true),
            None => (name, false),
        };
        let rest = name.strip_prefix(super::TEMP_PREFIX)?;
        let mut parts = rest.split('-');
        let pid = parts.next()?.parse::<u32>().ok()?;
        let created = parts.next().filter(|p| p.len() == 16)?;
        let random = parts.next().filter(|p| p.len() == 8)?;
        if parts.next().is_some() {
            return None;
        }
        Some(JournalName {
            created: u64::from_str_radix(created, 16).ok()?,
            pid,
            random: u32::from_str_radix(random, 16).ok()?,
            sealed,
        })
    }

    /// The file name without the sealed suffix: what names the journal for erasure records,
    /// sealed or not.
    pub fn base_name(&self) -> String {
        JournalName {
            sealed: false,
            ..*self
        }
        .file_name()
    }

    /// The file name (with the sealed suffix when sealed).
    pub fn file_name(&self) -> String {
        format!(
            "{}{}-{:016x}-{:08x}{}",
            super::TEMP_PREFIX,
            self.pid,
            self.created,
            self.random,
            if self.sealed { SEALED_SUFFIX } else { "" }
        )
    }
}

/// The journals under `root`, oldest first (by the creation time in their names). A missing
/// journal directory is no journal; names that do not parse are left out.
pub fn list_journals(root: &Path) -> io::Result<Vec<(JournalName, PathBuf)>> {
    let Some(entries) = super::read_dir_if_any(&root.join(JOURNAL_DIR))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str().and_then(JournalName::parse) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads at most `cap` bytes of the journal at `path` (a writer never makes one longer; what
/// lies beyond is ignored, and ends the reading like a torn record would). Opened
/// `O_NONBLOCK | O_NOFOLLOW`: a FIFO or a symlink planted in the journal directory cannot
/// block the reader or send it elsewhere. `Ok(None)` when the file vanished meanwhile (it was
/// materialised).
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "journal is not a regular file",
        ));
    }
    let len = meta.len().min(cap);
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(key: &str, env: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(&mut v, key, env).unwrap();
        v
    }

    #[test]
    fn round_trip_and_layout() {
        let r = record("a/b.thcs", b"envelope");
        assert_eq!(r.len(), record_len(8, 8));
        assert_eq!(&r[..4], b"HPJ1");
        assert_eq!(&r[4..6], &8u16.to_le_bytes());
        assert_eq!(&r[6..10], &8u32.to_le_bytes());
        let (rec, len) = decode(&r, 100).unwrap();
        assert_eq!(len, r.len());
        assert_eq!(rec.key, "a/b.thcs");
        assert_eq!(rec.envelope, b"envelope");
    }

    #[test]
    fn unencodable_records_are_refused() {
        let mut v = Vec::new();
        assert!(encode_into(&mut v, "", b"x").is_none());
        assert!(encode_into(&mut v, &"k".repeat(MAX_KEY_LEN + 1), b"x").is_none());
        assert!(v.is_empty());
    }

    #[test]
    fn stops_name_the_reason() {
        let good = record("k", b"abc");
        assert_eq!(decode(&[], 10).unwrap_err(), Stop::End);
        assert_eq!(
            decode(&good[..3], 10).unwrap_err(),
            Stop::Torn { have: 3, need: 10 }
        );
        assert_eq!(
            decode(&good[..good.len() - 1], 10).unwrap_err(),
            Stop::Torn {
                have: good.len() - 1,
                need: good.len()
            }
        );
        assert_eq!(decode(b"XYZW", 10).unwrap_err(), Stop::BadMagic);
        assert_eq!(
            decode(&good, 2).unwrap_err(),
            Stop::EnvelopeTooLarge { len: 3, max: 2 }
        );
        let mut huge = good.clone();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&huge, 1 << 20).unwrap_err(),
            Stop::EnvelopeTooLarge { .. }
        ));
        let mut zero_key = good.clone();
        zero_key[4..6].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(decode(&zero_key, 10).unwrap_err(), Stop::KeyLength(0));
        let mut long_key = good.clone();
        long_key[4..6].copy_from_slice(&2000u16.to_le_bytes());
        assert_eq!(decode(&long_key, 10).unwrap_err(), Stop::KeyLength(2000));
        let mut flipped = good.clone();
        flipped[11] ^= 1;
        assert_eq!(decode(&flipped, 10).unwrap_err(), Stop::Checksum);
        // A right checksum over a key that is not UTF-8.
        let mut bad_utf8 = Vec::new();
        bad_utf8.extend_from_slice(&MAGIC);
        bad_utf8.extend_from_slice(&1u16.to_le_bytes());
        bad_utf8.extend_from_slice(&0u32.to_le_bytes());
        bad_utf8.push(0xff);
        let sum = Sha256::digest(&bad_utf8);
        bad_utf8.extend_from_slice(&sum);
        assert_eq!(decode(&bad_utf8, 10).unwrap_err(), Stop::KeyNotUtf8);
    }

    #[test]
    fn reader_yields_the_valid_prefix_then_stops() {
        let mut j = record("a", b"1");
        j.extend(record("b", b"22"));
        let valid = j.len();
        j.extend_from_slice(b"HPJ1\x05");
        let mut it = Records::new(&j, 10);
        let keys: Vec<_> = it.by_ref().map(|r| r.key.to_owned()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(it.offset(), valid);
        assert!(matches!(it.stop(), Some(Stop::Torn { .. })));
        assert!(it.next().is_none());
        let mut clean = Records::new(&j[..valid], 10);
        assert_eq!(clean.by_ref().count(), 2);
        assert!(clean.stop().unwrap().is_clean());
    }

    #[test]
    fn names_round_trip_and_order() {
        let mut n = JournalName::fresh();
        assert_eq!(JournalName::parse(&n.file_name()), Some(n));
        n.sealed = true;
        assert!(n.file_name().ends_with(".sealed"));
        assert_eq!(JournalName::parse(&n.file_name()), Some(n));
        for bad in [
            "x",
            ".tmp-1-2",
            ".tmp-1-0000000000000001-0000000g",
            ".tmp-a-0000000000000001-00000001",
            ".tmp-1-0000000000000001-00000001-x",
        ] {
            assert_eq!(JournalName::parse(bad), None, "{bad}");
        }
        let old = JournalName::parse(".tmp-9-0000000000000001-00000001").unwrap();
        let new = JournalName::parse(".tmp-1-0000000000000002-00000000").unwrap();
        assert!(old < new, "ordered by creation time first");
    }

    fn entries() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        proptest::collection::vec(
            (
                "[a-z0-9/._-]{1,40}",
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            0..8,
        )
    }

    proptest! {
        /// Written records come back in order, and a clean end is reported.
        #[test]
        fn round_trip(entries in entries()) {
            let mut j = Vec::new();
            for (k, e) in &entries {
                encode_into(&mut j, k, e).unwrap();
            }
            let mut it = Records::new(&j, 300);
            let back: Vec<_> = it.by_ref().map(|r| (r.key.to_owned(), r.envelope.to_vec())).collect();
            prop_assert_eq!(&back, &entries);
            prop_assert_eq!(it.stop(), Some(Stop::End));
        }

        /// A truncation and a bit flip never panic, and everything read is a prefix of what
        /// was written (never a record that was not written).
        #[test]
        fn damage_yields_only_written_records(
            entries in entries(),
            cut in any::<proptest::sample::Index>(),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
            do_flip in any::<bool>(),
        ) {
            let mut j = Vec::new();
            for (k, e) in &entries {
                encode_into(&mut j, k, e).unwrap();
            }
            let mut damaged = j.clone();
            if !damaged.is_empty() {
                damaged.truncate(cut.index(damaged.len() + 1));
                if do_flip && !damaged.is_empty() {
                    let i = flip.index(damaged.len());
                    damaged[i] ^= 1 << bit;
                }
            }
            let back: Vec<_> = Records::new(&damaged, 300)
                .map(|r| (r.key.to_owned(), r.envelope.to_vec()))
                .collect();
            prop_assert!(back.len() <= entries.len());
            prop_assert_eq!(&back[..], &entries[..back.len()]);
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let n = Records::new(&bytes, 1 << 20).count();
            prop_assert!(n <= bytes.len() / record_len(1, 0));
        }
    }
}
