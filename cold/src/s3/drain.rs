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
//! Background rounds (the hound's idle time, [`S3Store::background_round`]) keep the sorted
//! listing between rounds, so a large backlog is listed (a `stat` per record) once per pass
//! over it rather than once per round.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::retry::Fail;
use super::spool::{Claim, Entry, Spool};
use super::upload::on_workers;
use super::{fail_into, spool_io, DrainReport, S3Store, MAX_CONCURRENCY};
use crate::{validate_key, ColdError, KeyOrigin};

/// What became of one claimed record.
enum Drained {
    /// Uploaded and removed from the spool.
    Uploaded,
    /// Moved to `quarantine/` (failed verification, or other bytes hold its key).
    Quarantined,
    /// Erased while it was uploaded: the upload was deleted again.
    Erased,
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
}

impl Round<'_> {
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
}

impl S3Store {
    /// One round of [`S3Store::drain_spool`] over `entries` (pending records, oldest first):
    /// no record is claimed after `claim_until`, and every upload ends by `upload_until` as
    /// well as by its own [`S3Tuning::operation_deadline`](super::S3Tuning::operation_deadline).
    /// Returns the report and how many of `entries` were tried.
    pub(super) fn drain_round(
        &self,
        spool: &Spool,
        entries: &[Entry],
        max_items: usize,
        claim_until: Option<Instant>,
        upload_until: Option<Instant>,
    ) -> (Result<DrainReport, ColdError>, usize) {
        let round = Round {
            entries,
            next: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            report: Mutex::new(DrainReport::default()),
            error: Mutex::new(None),
        };
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
            let claim = match spool.claim(entry) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // Another drainer took it, or it was erased.
                    round.taken.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return round.fail(spool_io("spool claim", spool, e)),
            };
            let deadline = match (self.tuning.deadline_from_now(), upload_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match self.drain_claimed(spool, claim, deadline) {
                Ok(Drained::Uploaded) => round.count(|r| r.uploaded += 1),
                Ok(Drained::Quarantined) => round.count(|r| r.quarantined += 1),
                Ok(Drained::Erased) => {}
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

    /// Reads, checks and uploads one claimed record, and finishes, quarantines or puts back
    /// its claim accordingly (every path ends the claim, errors included, except one that
    /// cannot be put back: it returns to the queue once stale).
    fn drain_claimed(
        &self,
        spool: &Spool,
        claim: Claim,
        deadline: Option<Instant>,
    ) -> Result<Drained, ColdError> {
        let io = |op: &'static str, e| spool_io(op, spool, e);
        let record = match spool.read_claim(&claim) {
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
                if spool.finish(claim).map_err(|e| io("spool remove", e))? {
                    tracing::info!(key = %record.key, "spooled envelope uploaded");
                    Ok(Drained::Uploaded)
                } else {
                    // Erased while we uploaded: the erasure must win.
                    tracing::warn!(key = %record.key,
                        "spooled envelope erased during upload; deleting the upload");
                    self.delete_remote(&record.key, deadline)
                        .map_err(fail_into)?;
                    Ok(Drained::Erased)
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
