//! Draining the spool: uploading what an outage left behind, several records at once (see
//! docs/S3.md, "Drainer").
//!
//! A round takes pending records oldest first and uploads up to
//! [`S3Tuning::concurrency`](super::S3Tuning::concurrency) of them at once, on the same kind
//! of scoped threads as `put_batch`. Each record goes through the same steps as when it was
//! drained one at a time: claimed by an atomic rename (of two drainers, in one process or
//! two, exactly one gets it), read, verified, uploaded create-only, removed. Concurrency
//! changes none of the per-record rules, only how many records are between claim and finish
//! at once:
//! - a transient failure puts its record back and ends the round: no new record is claimed,
//!   the uploads already running finish (each bounded by the operation's deadline);
//! - a refusal (403, …) puts its record back and is returned, after the running uploads;
//! - whatever ends the round, every claimed record is finished, quarantined or put back
//!   before the round returns: a claim is never left behind by a live drainer.
//!
//! Memory: a record is read whole before its upload, so the records of a round's running
//! uploads together are held to [`BYTES_IN_FLIGHT`] (a worker waits for room; one record
//! alone always fits), and no record longer than
//! [`S3Tuning::max_envelope_bytes`](super::S3Tuning::max_envelope_bytes) under the longest
//! key is read at all: it is quarantined unread. The spool directory is shared with every
//! other hound of the pool, any of which may be compromised and plant a file of any length
//! there (a sparse one costs no disk).
//!
//! Background rounds (the hound's idle time, `ColdStore::background_work`) keep the sorted
//! listing between rounds, so a large backlog is listed (a `stat` per record) once per pass
//! over it rather than once per round.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::retry::Fail;
use super::spool::{record_limit, Claim, Entry, Spool};
use super::upload::on_workers;
use super::{fail_into, spool_io, DrainReport, S3Store, MAX_CONCURRENCY};
use crate::{validate_key, ColdError, KeyOrigin};

/// Most bytes of records one round holds in memory at once (one record alone always fits).
pub const BYTES_IN_FLIGHT: u64 = 64 << 20;
/// How often a worker waiting for room looks whether the round was stopped meanwhile.
const ROOM_RECHECK: Duration = Duration::from_millis(50);

/// What became of one claimed record.
enum Drained {
    /// Uploaded and removed from the spool.
    Uploaded,
    /// Moved to `quarantine/` (failed verification, or other bytes hold its key).
    Quarantined,
    /// Erased while it was uploaded: the upload was deleted again.
    Erased,
    /// Taken back as stale by another drainer while this one uploaded it (this one was
    /// frozen past `claim_stale_after`): the record, and the object, are that drainer's.
    TakenBack,
    /// The target is unavailable (transient failure); the record was put back.
    Unavailable(String),
}

/// The shared state of one round's workers.
struct Round<'a> {
    /// Pending records, oldest first.
    entries: &'a [Entry],
    /// Index of the next entry to try.
    next: AtomicUsize,
    /// Records claimed (or about to be) this round, bounded by the round's `max_items`.
    taken: AtomicUsize,
    /// Set when the round must claim nothing more (a transient failure or an error).
    stop: AtomicBool,
    report: Mutex<DrainReport>,
    /// The first error, returned once every worker has finished.
    error: Mutex<Option<ColdError>>,
    /// Bytes of records read (or about to be) by running uploads, at most [`BYTES_IN_FLIGHT`]
    /// unless a single record is larger; `room` is notified when some are released.
    held: Mutex<u64>,
    room: Condvar,
}

impl<'a> Round<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        Round {
            entries,
            next: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            report: Mutex::new(DrainReport::default()),
            error: Mutex::new(None),
            held: Mutex::new(0),
            room: Condvar::new(),
        }
    }

    fn fail(&self, e: ColdError) {
        self.stop.store(true, Ordering::Relaxed);
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn count(&self, f: impl FnOnce(&mut DrainReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Waits until `bytes` more fit in [`BYTES_IN_FLIGHT`] (or nothing is held), then holds
    /// them. `false` if the round was stopped or its time to claim ran out meanwhile.
    fn hold(&self, bytes: u64, claim_until: Option<Instant>) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.load(Ordering::Relaxed) || claim_until.is_some_and(|u| Instant::now() >= u)
            {
                return false;
            }
            if *held == 0 || held.saturating_add(bytes) <= BYTES_IN_FLIGHT {
                *held = held.saturating_add(bytes);
                return true;
            }
            held = self
                .room
                .wait_timeout(held, ROOM_RECHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        *held = held.saturating_sub(bytes);
        self.room.notify_all();
    }
}

impl S3Store {
    /// One round of [`S3Store::drain_spool`] over `entries` (pending records, oldest first):
    /// no record is claimed after `claim_until`, and every upload ends by `upload_until` as
    /// well as by its own [`S3Tuning::operation_deadline`](super::S3Tuning::operation_deadline).
    /// Returns the report and how many of `entries` were looked at (claimed, found taken, or
    /// passed over when the round ended: those stay pending and come again in a later
    /// listing).
    pub(super) fn drain_round(
        &self,
        spool: &Spool,
        entries: &[Entry],
        max_items: usize,
        claim_until: Option<Instant>,
        upload_until: Option<Instant>,
    ) -> (Result<DrainReport, ColdError>, usize) {
        let round = Round::new(entries);
        let workers = self
            .tuning
            .concurrency
            .clamp(1, MAX_CONCURRENCY)
            .min(max_items)
            .min(entries.len());
        on_workers(workers, "s3-drain", || {
            self.drain_worker(spool, &round, max_items, claim_until, upload_until)
        });
        let tried = round.next.load(Ordering::Relaxed).min(entries.len());
        if let Some(e) = round.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return (Err(e), tried);
        }
        let mut report = round.report.into_inner().unwrap_or_else(|p| p.into_inner());
        match spool.count() {
            Ok(n) => report.remaining = n,
            Err(e) => return (Err(spool_io("spool count", spool, e)), tried),
        }
        (Ok(report), tried)
    }

    /// One worker of a round: claims the next record and drains it, until the entries, the
    /// round's `max_items` or its time to claim run out, or the round is stopped.
    fn drain_worker(
        &self,
        spool: &Spool,
        round: &Round<'_>,
        max_items: usize,
        claim_until: Option<Instant>,
        upload_until: Option<Instant>,
    ) {
        loop {
            if round.stop.load(Ordering::Relaxed)
                || claim_until.is_some_and(|u| Instant::now() >= u)
            {
                return;
            }
            let Some(entry) = round
                .entries
                .get(round.next.fetch_add(1, Ordering::Relaxed))
            else {
                return;
            };
            // A place in the round is reserved before the claim, so that no more than
            // `max_items` records are ever claimed at once.
            if round.taken.fetch_add(1, Ordering::Relaxed) >= max_items {
                return;
            }
            // Room for the record in memory before the claim (an oversized one is never
            // read: it takes none).
            let limit = record_limit(self.tuning.max_envelope_bytes);
            let bytes = if entry.len > limit { 0 } else { entry.len };
            if !round.hold(bytes, claim_until) {
                return;
            }
            let claim = match spool.claim(entry) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // Another drainer took it, or it was erased.
                    round.release(bytes);
                    round.taken.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    round.release(bytes);
                    return round.fail(spool_io("spool claim", spool, e));
                }
            };
            let deadline = match (self.tuning.deadline_from_now(), upload_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let drained = if entry.len > limit {
                quarantine_unread(spool, claim, entry.len, limit)
            } else {
                self.drain_claimed(spool, claim, entry.len, deadline)
            };
            round.release(bytes);
            match drained {
                Ok(Drained::Uploaded) => round.count(|r| r.uploaded += 1),
                Ok(Drained::Quarantined) => round.count(|r| r.quarantined += 1),
                Ok(Drained::Erased | Drained::TakenBack) => {}
                Ok(Drained::Unavailable(reason)) => {
                    round.stop.store(true, Ordering::Relaxed);
                    round.count(|r| {
                        r.unavailable.get_or_insert(reason);
                    });
                }
                Err(e) => return round.fail(e),
            }
        }
    }

    /// Reads (at most `len` bytes, its length when listed), checks and uploads one claimed
    /// record, and finishes, quarantines or puts back its claim accordingly (every path ends
    /// the claim, errors included, except one that cannot be put back: it returns to the
    /// queue once stale).
    fn drain_claimed(
        &self,
        spool: &Spool,
        claim: Claim,
        len: u64,
        deadline: Option<Instant>,
    ) -> Result<Drained, ColdError> {
        let io = |op: &'static str, e| spool_io(op, spool, e);
        let record = match spool.read_claim(&claim, len) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(why)) => Err(why.to_owned()),
            Err(e) => {
                // Best effort: the read error is the one to report.
                let _ = spool.unclaim(claim);
                return Err(io("spool read", e));
            }
        };
        let checked = record.and_then(|r| {
            validate_key(&r.key).map_err(|e| e.to_string())?;
            (self.verify)(&r.envelope).map_err(|e| e.to_string())?;
            Ok(r)
        });
        let record = match checked {
            Ok(r) => r,
            Err(why) => {
                let name = claim.name().to_owned();
                let dest = spool
                    .quarantine(claim)
                    .map_err(|e| io("spool quarantine", e))?;
                tracing::error!(record = %name, to = %dest.display(), reason = %why,
                    "spooled envelope failed verification; quarantined, not uploaded");
                return Ok(Drained::Quarantined);
            }
        };
        // A spooled record does not say who named it: checked as any key.
        match self.put_create_only(
            &record.key,
            &record.envelope,
            KeyOrigin::SubmitterId,
            deadline,
        ) {
            Ok(()) => {
                if spool.finish(&claim).map_err(|e| io("spool remove", e))? {
                    tracing::info!(key = %record.key, "spooled envelope uploaded");
                    Ok(Drained::Uploaded)
                } else if spool
                    .erased_since(&claim)
                    .map_err(|e| io("spool tombstone", e))?
                {
                    // Erased while we uploaded: the erasure must win.
                    tracing::warn!(key = %record.key,
                        "spooled envelope erased during upload; deleting the upload");
                    self.delete_remote(&record.key, deadline)
                        .map_err(fail_into)?;
                    Ok(Drained::Erased)
                } else {
                    // Not erased: taken back as stale while this drainer was frozen. Another
                    // drainer owns the record now (and may have uploaded and removed it):
                    // deleting the object here would lose it.
                    tracing::warn!(key = %record.key,
                        "spool claim taken back as stale during upload; the object stays");
                    Ok(Drained::TakenBack)
                }
            }
            Err(Fail::Transient(reason)) => {
                spool.unclaim(claim).map_err(|e| io("spool unclaim", e))?;
                tracing::warn!(%reason, "cold target unavailable; draining stopped");
                Ok(Drained::Unavailable(reason))
            }
            Err(Fail::Final(ColdError::AlreadyExists { key })) => {
                // Other bytes reached the target under this key first; the spooled
                // evidence is kept for an operator, never dropped or forced over it.
                let name = claim.name().to_owned();
                let dest = spool
                    .quarantine(claim)
                    .map_err(|e| io("spool quarantine", e))?;
                tracing::error!(record = %name, %key, to = %dest.display(),
                    "another object with different bytes exists under the spooled key; \
                     quarantined, not uploaded");
                Ok(Drained::Quarantined)
            }
            Err(Fail::Final(e)) => {
                spool.unclaim(claim).map_err(|e| io("spool unclaim", e))?;
                Err(e)
            }
        }
    }
}

/// Moves a claimed record of `len` bytes, longer than `limit`, to `quarantine/` without
/// reading it.
fn quarantine_unread(
    spool: &Spool,
    claim: Claim,
    len: u64,
    limit: u64,
) -> Result<Drained, ColdError> {
    let name = claim.name().to_owned();
    let dest = spool
        .quarantine(claim)
        .map_err(|e| spool_io("spool quarantine", spool, e))?;
    tracing::error!(record = %name, to = %dest.display(), bytes = len, limit,
        "spooled record longer than any this drainer reads; quarantined unread");
    Ok(Drained::Quarantined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(entries: &[Entry]) -> Round<'_> {
        Round::new(entries)
    }

    #[test]
    fn one_record_always_fits_and_the_next_waits_for_room() {
        let r = round(&[]);
        assert!(r.hold(3 * BYTES_IN_FLIGHT, None), "alone, any record fits");
        let waited = AtomicBool::new(true);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let ok = r.hold(1, None);
                waited.store(false, Ordering::SeqCst);
                ok
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(waited.load(Ordering::SeqCst), "held while the large one is");
            r.release(3 * BYTES_IN_FLIGHT);
            assert!(t.join().unwrap());
        });
        assert!(r.hold(BYTES_IN_FLIGHT - 1, None), "1 + (limit - 1) fits");
        assert_eq!(*r.held.lock().unwrap(), BYTES_IN_FLIGHT);
    }

    #[test]
    fn a_stopped_or_timed_out_round_gives_no_room() {
        let r = round(&[]);
        assert!(r.hold(BYTES_IN_FLIGHT, None));
        assert!(!r.hold(1, Some(Instant::now())), "time to claim is over");
        std::thread::scope(|s| {
            let t = s.spawn(|| r.hold(1, None));
            std::thread::sleep(Duration::from_millis(20));
            r.stop.store(true, Ordering::Relaxed);
            assert!(!t.join().unwrap(), "a stop ends the wait");
        });
    }
}
