//! Batches: many jobs per call, many outcomes per wake-up.
//!
//! [`Pool::submit_batch`] fills rings with runs of jobs under one slot lock and rings each
//! hound's doorbell at most once per run; [`Pool::recv_outcomes`] takes every outcome that is
//! waiting (up to a bound) in one call. Both keep every contract of the one-job calls: each
//! job is accepted or refused on its own, with its own reason, and every accepted job gets
//! exactly one outcome.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::job::{Job, Outcome, Ticket};
use crate::pool::{admit, Admitted, Pool};
use crate::state::{Books, Slot};
use crate::SubmitError;

impl Pool {
    /// Submits `jobs` in order, each as [`submit`](Self::submit) would, and writes one result
    /// per job to `results` (cleared first): `results[i]` is job `i`'s ticket or the reason it
    /// was refused. Returns how many were accepted. Every `Ok` ticket gets exactly one outcome,
    /// as with `submit`; a refusal of one job never stops the others (an oversized job in the
    /// middle of a batch is refused with `EvidenceTooLarge`, the jobs around it go on).
    ///
    /// What it saves: jobs are copied into a hound's ring in runs, under one lock, published to
    /// the hound with one store per run, and the hound's doorbell is rung at most once per run
    /// (only if it announced sleep); the clock is read once per call (the jobs' submission
    /// time). Runs are spread over the accepting hounds (least loaded first, about an equal
    /// share each), so jobs of one batch are not all queued behind each other. Jobs that fit
    /// no ring get the configured [`PoolExhaustedAction`](crate::PoolExhaustedAction) one by
    /// one, exactly as consecutive `submit` calls would: with `Drop`, a later smaller job may
    /// still be accepted after an earlier one was refused.
    ///
    /// Cost: bounded by `jobs.len()` memcpys and O(1) bookkeeping each; no allocation per job
    /// (the caller's `results` grows only if it is too small, keyed jobs store their key as
    /// with `submit`). Never blocks on a hound; a slot lock is held for at most one run: up to
    /// 64 KiB of job bodies (or one larger job), then it is released (and the hound rung if it
    /// sleeps) before the next run, so the collector never waits long for it.
    pub fn submit_batch(
        &self,
        jobs: &[Job<'_>],
        results: &mut Vec<Result<Ticket, SubmitError>>,
    ) -> usize {
        let sh = &*self.shared;
        results.clear();
        results.reserve(jobs.len());
        let mut next = 0usize;
        // A job admitted (id assigned) but not yet placed: carried to the next slot.
        let mut held: Option<Admitted<'_>> = None;
        // The batch's submission time, read once: every job of one call is submitted at the
        // same moment as far as its latency is concerned.
        let now = Instant::now();
        let n = sh.slots.len();
        let first = least_loaded(sh);
        for visit in 0..n {
            if next >= jobs.len() {
                break;
            }
            let idx = (first + visit) % n;
            let left = n - visit;
            let mut quota = (jobs.len() - next).div_ceil(left);
            // Runs on one slot until its share is placed or it is full; each run releases
            // the lock after RUN_BYTES, so the collector never waits long for it.
            while fill_slot(
                sh, idx, jobs, now, &mut next, &mut quota, &mut held, results,
            ) {}
        }
        // What fits no ring: the exhaustion action, job by job (as `submit` would).
        while next < jobs.len() {
            let job = &jobs[next];
            let a = match held.take() {
                Some(a) => Ok(a),
                None => admit_counted(sh, job, now),
            };
            let r = a.and_then(|a| {
                let job_id = a.meta.job_id;
                sh.spans
                    .open(job_id, job.kind, job.severity, job.body.len());
                let r = self.place_or_apply(job, a.ticket, &a.header, a.key, a.meta);
                if r.is_err() {
                    sh.spans.discard(job_id);
                }
                r
            });
            results.push(r);
            next += 1;
        }
        results.iter().filter(|r| r.is_ok()).count()
    }

    /// Gives an outcome you are done with back to the pool, so that its payload buffer holds
    /// a later outcome's payload instead of a new allocation. Worth it for payloads above
    /// 4 KiB taken in bursts (echoes, Encode envelopes): freed together, such buffers go back
    /// to the kernel and the next ones are faulted in and zeroed page by page (measured:
    /// about 3 page faults per 16 KiB outcome through `recv_outcomes`, and 256 KiB echoes
    /// at 10 000 instead of 25 000 a second in some runs); recycled, the same buffers go
    /// round, already mapped.
    ///
    /// Buffers are kept by power-of-two size class (8 KiB to 4 MiB, at most 2 MiB of buffers
    /// per class, at least 2 and at most 64 buffers, about 26 MiB in all); an outcome without
    /// a payload or with a buffer outside the classes, or one given back to a full class, is
    /// simply dropped. Once anything was given back, payloads above 4 KiB come in a buffer of
    /// their class's size: up to twice their length in capacity (`shrink_to_fit` one you
    /// keep for long). A payload of 4 KiB or less never carries a kept buffer. Cost: one
    /// lock-free push, never blocks, never allocates. Outcomes not given back are freed as
    /// usual, and a pool that never sees `recycle` allocates exactly as before.
    pub fn recycle(&self, outcome: Outcome) {
        if let crate::OutcomeKind::Completed(r) = outcome.result {
            if let Some(p) = r.payload {
                self.recycle_payload(p);
            }
        }
    }

    /// [`recycle`](Self::recycle) for a payload already taken out of its outcome (any
    /// `Vec<u8>` will do: it is kept by the same rules, emptied first, in the largest class its
    /// capacity covers, so a buffer of odd capacity holds up to twice its class's size and the
    /// 26 MiB bound becomes at most twice that).
    pub fn recycle_payload(&self, payload: Vec<u8>) {
        self.shared.payloads.put(payload);
    }

    /// Takes up to `max` outcomes into `buf` (appended; `buf` is not cleared): waits up to
    /// `timeout` for the first one, then takes whatever else is waiting without waiting
    /// again. Returns how many were added (0: none within `timeout`, or the outcome channel is
    /// disabled or closed). Outcomes of tracked jobs go to their handles, not here.
    ///
    /// One call drains a burst of outcomes for one wake-up of the caller's thread, so a
    /// consumer that pairs it with [`submit_batch`](Self::submit_batch) pays the channel's
    /// wake-up once per burst instead of once per job. Mixes freely with receivers from
    /// [`outcomes`](Self::outcomes): each outcome goes to exactly one of them.
    ///
    /// Unless the pool has an [`on_outcome`](crate::PoolBuilder::on_outcome) callback (which
    /// runs on the collector thread), the calling thread first consumes the hounds' completion
    /// rings itself, for every ring no other thread is consuming at that moment: each
    /// completion is copied out, checked and turned into its outcome exactly as the collector
    /// does it, without waiting for the collector thread to be scheduled, and the outcome is
    /// appended to `buf` directly (not through the channel) while `buf` has room. A hound that
    /// wrote something impossible is not acted on here: the collector kills it and settles its
    /// jobs.
    /// While waiting, the thread keeps consuming, yielding its CPU between looks, for up to
    /// `collector_spin` (the collector sleeps meanwhile); then it blocks on the channel and
    /// the collector delivers. Allocates only if `buf` must grow (and, as the collector does,
    /// one buffer per outcome payload).
    pub fn recv_outcomes(&self, buf: &mut Vec<Outcome>, max: usize, timeout: Duration) -> usize {
        let Some(rx) = self.outcome_rx.as_ref() else {
            return 0;
        };
        if max == 0 {
            return 0;
        }
        let sh = &*self.shared;
        let consume = sh.caller_may_consume();
        let before = buf.len();
        let take = |buf: &mut Vec<Outcome>| {
            while buf.len() - before < max {
                match rx.try_recv() {
                    Ok(o) => buf.push(o),
                    Err(_) => break,
                }
            }
        };
        if consume {
            self.consume_into(buf, before + max, true);
        }
        take(buf);
        if buf.len() > before || timeout.is_zero() {
            return buf.len() - before;
        }
        let start = Instant::now();
        if consume {
            // Keep consuming (the collector does not spin meanwhile), then block.
            let spin = sh.config.collector_spin.min(timeout);
            while start.elapsed() < spin {
                std::thread::yield_now();
                self.consume_into(buf, before + max, true);
                take(buf);
                if buf.len() > before {
                    return buf.len() - before;
                }
            }
            sh.end_caller_lease();
            // What arrived between the last look and the end of the lease.
            self.consume_into(buf, before + max, false);
            take(buf);
            if buf.len() > before {
                return buf.len() - before;
            }
        }
        match rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
            Ok(o) => buf.push(o),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return 0,
        }
        take(buf);
        buf.len() - before
    }

    /// [`Self::consume_rings`] with the outcomes it concludes for the channel appended to
    /// `buf` directly, as long as `buf` holds fewer than `limit` (the rest, and outcomes of
    /// tracked jobs, go where they always go). `buf` is lent for the pass
    /// ([`crate::direct::lend`]) and given back when it ends, also by unwinding.
    fn consume_into(&self, buf: &mut Vec<Outcome>, limit: usize, lease: bool) {
        let _back = crate::direct::lend(crate::direct::owner_of(&*self.shared), buf, limit);
        self.consume_rings(lease);
    }

    /// One pass of the caller's thread over the completion rings (see
    /// [`recv_outcomes`](Self::recv_outcomes)). With `lease`, marks a caller as consuming for a
    /// while (the collector sleeps without doorbells meanwhile) — unless the pass left a large
    /// record to the collector: then the lease ends and for a while callers do not consume at
    /// all, so that the collector consumes, spins and sleeps as it does without a caller while
    /// large records come.
    fn consume_rings(&self, lease: bool) -> usize {
        let sh = &*self.shared;
        if sh.recent_handover() {
            return 0;
        }
        let (consumed, handed) = CALLER_BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut b) => crate::collector::completion::drain_on_caller(sh, &mut b),
            // Re-entered from inside a drain (a tracked job's waker that polls inline).
            Err(_) => crate::collector::completion::drain_on_caller(sh, &mut Vec::new()),
        });
        if handed {
            sh.drop_caller_lease();
        } else if lease {
            sh.extend_caller_lease();
        }
        consumed
    }
}

thread_local! {
    /// A caller's scratch buffer for completion bodies (a payload-carrying outcome takes it
    /// as its payload; the next body gets a fresh one).
    static CALLER_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `submit`'s preamble for one job of a batch: counts it, refuses after shutdown, validates.
fn admit_counted<'j>(sh: &Books, job: &Job<'j>, now: Instant) -> Result<Admitted<'j>, SubmitError> {
    sh.counters.submitted.inc();
    if !sh.is_running() {
        return Err(sh.refuse(SubmitError::ShutDown));
    }
    admit(sh, job, now)
}

/// Index of the least-loaded accepting slot (0 if none accepts: `fill_slot` skips those).
fn least_loaded(sh: &Books) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in sh.slots.iter().enumerate() {
        if !s.accepting.load(Ordering::Acquire) {
            continue;
        }
        let load = s.in_flight();
        if best.is_none_or(|(_, b)| load < b) {
            best = Some((i, load));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Bytes of job bodies one run copies under a slot lock (at least one job, whatever its size):
/// the collector needs that lock for every completion, and a contended lock costs it a futex
/// sleep and wake-up.
const RUN_BYTES: usize = 64 * 1024;

/// One run: places up to `quota` jobs (decremented per placed job) from `jobs[*next..]` into
/// slot `idx` under one lock, writing each refused-at-admission job's error and each placed
/// job's ticket to `results`. Stops early when the slot's ring or in-flight bound is full,
/// leaving the admitted job that did not fit in `held`. Rings the hound's doorbell once at the
/// end if anything was placed and it sleeps. Returns true when it stopped only because the run
/// copied [`RUN_BYTES`]: the caller runs again on the same slot.
#[expect(
    clippy::too_many_arguments,
    reason = "one run's inputs and the cursor state it shares with submit_batch"
)]
fn fill_slot<'j>(
    sh: &Books,
    idx: usize,
    jobs: &[Job<'j>],
    now: Instant,
    next: &mut usize,
    quota: &mut usize,
    held: &mut Option<Admitted<'j>>,
    results: &mut Vec<Result<Ticket, SubmitError>>,
) -> bool {
    let slot = &sh.slots[idx];
    if !slot.accepting.load(Ordering::Acquire) {
        return false;
    }
    let max = sh.config.max_in_flight_per_hound;
    let mut guard = slot.lock();
    let Some(conn) = guard.as_mut() else {
        return false;
    };
    let mut placed = 0usize;
    let mut bytes = 0usize;
    let mut budget_spent = false;
    while *next < jobs.len() && *quota > 0 && !Slot::at_bound(conn, max) {
        if bytes >= RUN_BYTES {
            budget_spent = true;
            break;
        }
        let job = &jobs[*next];
        let a = match held.take() {
            Some(a) => a,
            None => match admit_counted(sh, job, now) {
                Ok(a) => a,
                Err(e) => {
                    results.push(Err(e));
                    *next += 1;
                    continue;
                }
            },
        };
        // Counted before the job becomes visible to the collector (as in `place_or_apply`).
        sh.counters.accepted.inc_sc();
        if let Some(k) = job.key {
            sh.keys.insert(a.meta.job_id, k);
        }
        sh.spans
            .open(a.meta.job_id, job.kind, job.severity, job.body.len());
        if slot.push_in_run(conn, &[&a.header, a.key, job.body], a.meta, max) {
            sh.spans.event(a.meta.job_id, "placed in a ring");
            results.push(Ok(a.ticket));
            *next += 1;
            placed += 1;
            *quota -= 1;
            bytes += job.body.len();
        } else {
            // Full now (or a record this ring can never hold, which admission rules out):
            // not accepted here; the next slot or the exhaustion action decides.
            sh.counters.accepted.dec_sc();
            sh.keys.remove(a.meta.job_id);
            sh.spans.discard(a.meta.job_id);
            *held = Some(a);
            break;
        }
    }
    if placed > 0 {
        Slot::publish_run(conn);
    }
    budget_spent
}
