//! The pool: the submit path, building and shutting down (the books they share with the
//! collector are in `state.rs`).
//!
//! Threads: the caller's threads run `submit`; one **collector** thread (`houndpool-collector`)
//! consumes completions, delivers outcomes, watches hounds, retries and drains the defer queue;
//! one **spawner** thread (`houndpool-spawner`) starts replacement hounds so that a slow spawn
//! never stalls completions. See docs/ARCHITECTURE.md for who owns what.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use houndpool_protocol::job::{JobKind, RequestHeader, REQUEST_HEADER_LEN};
use houndpool_protocol::region::RecordPos;
use tracing::{info, warn};
use uuid::Uuid;

use crate::circuit::CircuitState;
use crate::config::{ColdConfig, PoolConfig, PoolExhaustedAction};
use crate::defer::Pushed;
use crate::job::machine::{self, History, JobState};
use crate::job::{CancelResult, Job, JobId, Outcome, Ticket};
use crate::state::{BodyLimits, Books, EscalationEvent, InFlight, OutcomeSink, Pending};
use crate::stats::{HoundStats, PoolStats, SizeStats};
use crate::tracked::Tracked;
use crate::{cgroup, collector, spawn, PoolError, SubmitError};

/// A pool of sandboxed hound processes. Cheap to share (`&Pool` is `Sync`); dropping it shuts
/// the pool down with no grace period.
pub struct Pool {
    pub(crate) shared: Arc<Books>,
    pub(crate) outcome_rx: Option<Receiver<Outcome>>,
    escalation_rx: Receiver<EscalationEvent>,
    /// Collector, spawner and (filesystem targets) journal materialiser threads.
    threads: Mutex<Option<Threads>>,
}

/// The threads a pool joins when it stops.
struct Threads {
    collector: JoinHandle<()>,
    spawner: JoinHandle<()>,
    journal: Option<JoinHandle<()>>,
}

/// Builds a [`Pool`].
pub struct PoolBuilder {
    config: PoolConfig,
    callback: Option<crate::state::Callback>,
}

impl PoolBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }
    /// Edits the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut PoolConfig)) -> Self {
        f(&mut self.config);
        self
    }
    /// Calls `f` with every outcome on the collector thread, in addition to the channel. It must
    /// return quickly and must not block: it runs on the thread that consumes completions.
    pub fn on_outcome(mut self, f: impl Fn(&Outcome) + Send + Sync + 'static) -> Self {
        self.callback = Some(Box::new(f));
        self
    }

    /// Validates the configuration, starts every hound, waits for their handshakes, and starts
    /// the collector and spawner threads. Fails if any hound cannot start or a `required`
    /// sandbox layer is missing; no process is left behind on failure.
    pub fn build(self) -> Result<Pool, PoolError> {
        let mut config = self.config;
        config.validate()?;
        if let ColdConfig::Filesystem { root, .. } = &mut config.cold {
            // 0700: evidence is private to the user the hounds run as (the store creates
            // its files 0600 and directories 0700 too).
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&*root)
            .map_err(|source| PoolError::Os {
                op: "create cold storage directory",
                source,
            })?;
            *root = std::fs::canonicalize(&*root).map_err(|source| PoolError::Os {
                op: "canonicalize cold storage directory",
                source,
            })?;
        }
        crate::cold::sweep_temps(&config, houndpool_cold::fs::pid_gone);
        crate::cold::start(&mut config)?;
        let binary = spawn::resolve_binary(&config.hound_binary)?;
        let pool_id = *Uuid::now_v7().as_bytes();
        // One spare slot for rotation, so a replacement starts before its predecessor retires.
        let rotation = config.rotation.after_jobs.is_some() || config.rotation.after.is_some();
        let n = config.hound_count() + usize::from(rotation);
        let pool_cgroups = cgroup::setup(&mut config, &pool_id, n)?;
        let sizing = cgroup::decide_size(&config, pool_cgroups.limits.as_ref());
        let layout = config.region_layout();
        let ring_body = layout
            .max_request_payload()
            .saturating_sub(REQUEST_HEADER_LEN);
        let limits = BodyLimits {
            evidence: config.max_evidence_bytes.min(ring_body),
            envelope: houndpool_protocol::envelope::max_envelope_len(config.max_output_bytes)
                .min(ring_body),
        };
        let (outcome_tx, outcome_rx) = match config.outcome_capacity {
            Some(cap) => {
                let (t, r) = crossbeam_channel::bounded(cap);
                (Some(t), Some(r))
            }
            None => (None, None),
        };
        let (escalation_tx, escalation_rx) = crossbeam_channel::bounded(1024);
        let outcomes = OutcomeSink::new(outcome_tx, self.callback);
        let shared = Arc::new(Books::new(
            config,
            n,
            outcomes,
            escalation_tx,
            limits,
            pool_cgroups,
            sizing,
        )?);
        // Journals of earlier runs become key files before any hound starts, then the
        // background materialiser takes over (docs/ARCHITECTURE.md, "Cold store commit
        // journal").
        shared.journal.recover();
        let books = Arc::downgrade(&shared);
        let journal = shared.journal.start(Box::new(move || {
            books.upgrade().map_or(0, |b| {
                b.slots
                    .iter()
                    .map(|s| s.evacuated.load(Ordering::Relaxed))
                    .sum()
            })
        }))?;
        // Every hound, the initial ones included, is spawned by the long-lived spawner thread:
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawning on the caller's
        // thread would kill the hounds when that thread ends.
        let (collector, spawner) = match collector::start(shared.clone(), binary, pool_id) {
            Ok(t) => t,
            Err(e) => {
                shared.journal.finish(journal);
                return Err(e);
            }
        };
        shared.cancels.set_collector(collector.thread().id());
        info!(
            hounds = shared.target.load(Ordering::Relaxed),
            slots = n,
            sizing = %shared.sizing.explanation,
            "houndpool started"
        );
        Ok(Pool {
            shared,
            outcome_rx,
            escalation_rx,
            threads: Mutex::new(Some(Threads {
                collector,
                spawner,
                journal,
            })),
        })
    }
}

impl Pool {
    /// A builder with the default configuration.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            config: PoolConfig::default(),
            callback: None,
        }
    }

    /// Submits a job. Never blocks on a hound or the collector: it validates, copies the body
    /// into the least-loaded hound's ring (one memcpy, no allocation) and wakes that hound only
    /// if it announced it is asleep (the only syscall). When no ring has room the configured
    /// [`PoolExhaustedAction`] applies at once. An `Ok` ticket means exactly one outcome will
    /// be delivered for it.
    pub fn submit(&self, job: &Job<'_>) -> Result<Ticket, SubmitError> {
        self.submit_inner(job, None)
    }

    /// Submits a job like [`submit`](Self::submit) and returns a handle that receives its
    /// outcome: wait for it ([`Tracked::wait`], [`Tracked::wait_timeout`]) or `.await` it on any
    /// executor. The outcome goes to the handle and the `on_outcome` callback, not to the
    /// shared channel. Costs one small allocation (the handle's shared cell) and one hash-map
    /// insertion under a lock more than `submit`.
    pub fn submit_tracked(&self, job: &Job<'_>) -> Result<Tracked, SubmitError> {
        let cell = Arc::new(crate::tracked::Cell::default());
        let ticket = self.submit_inner(job, Some(&cell))?;
        Ok(Tracked::new(ticket, cell))
    }

    /// Cancels job `id`: a job not started yet (defer queue, retry queue, or queued in a ring
    /// behind another job) is withdrawn ([`CancelResult::Dequeued`]); a job at the head of a
    /// hound's ring (running, or about to) has its hound SIGKILLed as the watchdog would
    /// ([`CancelResult::Killed`]; that hound's other jobs are retried elsewhere). Either way
    /// its one outcome, `Dropped(Cancelled)`, has been delivered when this returns. An unknown
    /// id, or one whose outcome was already delivered, is [`CancelResult::NotFound`].
    ///
    /// A job withdrawn from behind another in a ring may still be executed by its hound (a
    /// ring record cannot be recalled without racing the hound); its result is discarded.
    ///
    /// Waits for the collector thread (a few milliseconds; a kill includes reaping the hound).
    /// Called from the `on_outcome` callback, which runs on that thread, it can only withdraw
    /// jobs from the defer queue and returns `NotFound` for the others.
    pub fn cancel(&self, id: JobId) -> CancelResult {
        crate::cancel::request(&self.shared, id.0)
    }

    fn submit_inner(
        &self,
        job: &Job<'_>,
        track: Option<&Arc<crate::tracked::Cell>>,
    ) -> Result<Ticket, SubmitError> {
        let sh = &*self.shared;
        sh.counters.submitted.inc();
        if !sh.is_running() {
            return Err(sh.refuse(SubmitError::ShutDown));
        }
        let Admitted {
            header,
            key,
            meta,
            ticket,
        } = admit(sh, job, Instant::now())?;
        let job_id = meta.job_id;
        if let Some(cell) = track {
            sh.tracked.register(job_id, cell.clone());
        }
        sh.spans
            .open(job_id, job.kind, job.severity, job.body.len());
        let r = self.place_or_apply(job, ticket, &header, key, meta);
        if r.is_err() {
            sh.spans.discard(job_id);
            if track.is_some() {
                sh.tracked.unregister(job_id);
            }
        }
        r
    }

    /// The second half of submit: place the validated job, or apply the exhaustion action.
    pub(crate) fn place_or_apply(
        &self,
        job: &Job<'_>,
        ticket: Ticket,
        header: &[u8],
        key: &[u8],
        meta: InFlight,
    ) -> Result<Ticket, SubmitError> {
        let sh = &*self.shared;
        let job_id = meta.job_id;
        // Count the acceptance before the job becomes visible to the collector, so no snapshot
        // sees its outcome before its acceptance; undone if it is not accepted after all.
        sh.counters.accepted.inc_sc();
        if let Some(k) = job.key {
            // Keyed jobs only (the receipt names the object by it); removed at the outcome.
            sh.keys.insert(job_id, k);
        }
        if sh.try_place(&[header, key, job.body], meta, JobState::Submitted) {
            sh.spans.event(meta.job_id, "placed in a ring");
            return Ok(ticket);
        }
        match sh.config.exhausted {
            PoolExhaustedAction::Drop => {
                sh.counters.accepted.dec_sc();
                sh.keys.remove(job_id);
                Err(sh.refuse(SubmitError::PoolExhausted))
            }
            PoolExhaustedAction::Escalate => {
                sh.counters.accepted.dec_sc();
                sh.keys.remove(job_id);
                sh.counters.escalations.inc();
                let count = sh.counters.escalations.get();
                let in_rings = sh.in_rings();
                warn!(
                    kind = job.kind.name(),
                    severity = job.severity.name(),
                    in_rings,
                    count,
                    "houndpool exhausted: job refused and escalated"
                );
                sh.escalate(EscalationEvent {
                    kind: job.kind,
                    severity: job.severity,
                    body_len: job.body.len(),
                    in_rings,
                    count,
                });
                Err(sh.refuse(SubmitError::PoolExhausted))
            }
            PoolExhaustedAction::Defer { limit } => {
                let Some(defer) = &sh.defer else {
                    sh.counters.accepted.dec_sc();
                    sh.keys.remove(job_id);
                    return Err(sh.refuse(SubmitError::PoolExhausted));
                };
                let mut bytes = Vec::with_capacity(REQUEST_HEADER_LEN + key.len() + job.body.len());
                bytes.extend_from_slice(header);
                bytes.extend_from_slice(key);
                bytes.extend_from_slice(job.body);
                // Its lane in the queue: the state machine's `Deferred { lane }`.
                let lane = match machine::defer(&JobState::Submitted, job.severity).next {
                    JobState::Deferred { lane } => lane,
                    _ => job.severity,
                };
                let (pushed, was_empty) = {
                    let mut q = defer.lock().unwrap_or_else(|p| p.into_inner());
                    let was_empty = q.len() == 0;
                    (q.push(lane, Pending { bytes, meta }), was_empty)
                };
                match pushed {
                    Pushed::Queued => {}
                    Pushed::Evicted(victim) => {
                        let from = JobState::Deferred {
                            lane: victim.meta.severity,
                        };
                        sh.conclude(&victim.meta, machine::evict(&from, job.severity));
                    }
                    Pushed::Refused(_) => {
                        sh.counters.accepted.dec_sc();
                        sh.keys.remove(job_id);
                        return Err(sh.refuse(SubmitError::DeferQueueFull { limit }));
                    }
                    // Shutdown drained and closed the queue after our state check: refused,
                    // never accepted (no outcome is owed).
                    Pushed::Closed(_) => {
                        sh.counters.accepted.dec_sc();
                        return Err(sh.refuse(SubmitError::ShutDown));
                    }
                }
                sh.counters.deferred_total.inc();
                sh.spans.event(meta.job_id, "deferred");
                // Only a job that lands in an empty queue needs to wake the collector: with
                // jobs already queued it is either awake or asleep because they cannot be
                // placed, and what frees ring space (a completion, a new hound) wakes it. This
                // keeps a stream of deferred submits free of syscalls.
                if was_empty {
                    sh.nudge_collector();
                }
                Ok(ticket)
            }
        }
    }

    /// The outcome stream (a clone of the pool's receiver), or `None` if the channel was
    /// disabled (`outcome_capacity: None`). Outcomes that find the channel full are counted
    /// as `undelivered`, never waited for.
    pub fn outcomes(&self) -> Option<Receiver<Outcome>> {
        self.outcome_rx.clone()
    }

    /// Escalation events (`PoolExhaustedAction::Escalate`); bounded, oldest kept.
    pub fn escalations(&self) -> Receiver<EscalationEvent> {
        self.escalation_rx.clone()
    }

    /// A snapshot of counters and hounds. Takes each slot's lock briefly.
    pub fn stats(&self) -> PoolStats {
        let sh = &*self.shared;
        let mut s = PoolStats {
            submitted: 0,
            accepted: 0,
            refused: Default::default(),
            completed: 0,
            failed: 0,
            timed_out: 0,
            dropped: 0,
            in_flight: 0,
            in_rings: 0,
            deferred: 0,
            retrying: 0,
            undelivered: 0,
            tracked_unclaimed: sh.tracked.unclaimed.load(Ordering::Relaxed),
            escalations: 0,
            deferred_total: 0,
            retries: 0,
            poison: 0,
            hound_spawns: 0,
            hound_exits: 0,
            spawn_failures: 0,
            watchdog_kills: 0,
            protocol_violations: 0,
            oom_kills: 0,
            restarts: 0,
            circuit_opens: 0,
            rotations: 0,
            high_water_retirements: 0,
            retire_kills: 0,
            callback_panics: 0,
            hound_log_suppressed: 0,
            circuit: CircuitState::from_u8(sh.circuit.load(Ordering::Relaxed)),
            degraded: false,
            size: SizeStats {
                target: sh.target.load(Ordering::Relaxed),
                actual: 0,
                computed: sh.sizing.size,
                slots: sh.slots.len(),
                explanation: sh.sizing.explanation.clone(),
            },
            memory_usage: sh
                .cgroups
                .limits
                .as_ref()
                .and_then(crate::cgroup::memory_working_set),
            memory_limit: sh
                .cgroups
                .limits
                .as_ref()
                .and_then(|l| l.effective_memory_limit()),
            high_water_bytes: None,
            hounds: Vec::with_capacity(sh.slots.len()),
            journal_backlog: 0,
            journal_backlog_bytes: 0,
            journal_conflicts: 0,
            spare_pid: match sh.spare_pid.load(Ordering::Relaxed) {
                0 => None,
                p => Some(p),
            },
            sandbox: sh
                .sandbox_report
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        sh.counters.snapshot_into(&mut s);
        s.in_rings = sh.in_rings() as u64;
        s.deferred = sh
            .defer
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
            .unwrap_or(0);
        s.retrying = sh.retrying.load(Ordering::Relaxed) as u64;
        let journal = sh.journal.snapshot();
        s.journal_backlog = journal.backlog_files;
        s.journal_backlog_bytes = journal.backlog_bytes;
        s.journal_conflicts = journal.conflicts;
        s.degraded = s.circuit != CircuitState::Closed;
        s.high_water_bytes = s
            .memory_limit
            .map(|l| (l as f64 * sh.high_water_mark()) as u64);
        s.size.actual = sh
            .slots
            .iter()
            .filter(|sl| sl.accepting.load(Ordering::Relaxed))
            .count();
        for slot in sh.slots.iter() {
            let pid = slot.pid.load(Ordering::Relaxed);
            s.hounds.push(HoundStats {
                slot: slot.id,
                pid: (pid != 0).then_some(pid),
                generation: slot.generation.load(Ordering::Relaxed),
                in_flight: slot.in_flight(),
                completed: slot.completed.load(Ordering::Relaxed),
                reported_state: slot.reported_state.load(Ordering::Relaxed),
                heartbeat: slot.heartbeat.load(Ordering::Relaxed),
            });
        }
        s
    }

    /// Changes the high-water mark (a share of the container's memory limit, in (0, 1]) while
    /// the pool runs; the collector applies it at its next sample (every 250 ms). Returns false
    /// and changes nothing for a value outside (0, 1] or not above the configured hysteresis.
    pub fn set_high_water_mark(&self, share: f64) -> bool {
        let sh = &self.shared;
        if !(share > sh.config.high_water_hysteresis && share <= 1.0) {
            return false;
        }
        sh.set_high_water_mark(share);
        info!(share, "high-water mark changed");
        true
    }

    /// Submit→outcome latency histograms, one per job kind (cumulative buckets, seconds).
    /// Recording costs three relaxed atomic additions per outcome.
    pub fn latency(&self) -> Vec<crate::latency::LatencySnapshot> {
        self.shared.latency.snapshot()
    }

    /// The configuration the pool runs with (after validation and path canonicalisation).
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Stops accepting, lets hounds finish what is in their rings, in the retry queue and in the
    /// defer queue for up to `grace`, then drops what is left (`Dropped(Shutdown)`), stops every
    /// hound and reaps it. Every accepted job has its outcome delivered before this returns.
    /// Returns the final stats. Idempotent: later calls (and `Drop`) only return the stats;
    /// `submit` refuses with `SubmitError::ShutDown` from the moment the first call begins.
    pub fn shutdown(&self, grace: Duration) -> PoolStats {
        self.stop(grace);
        self.stats()
    }

    /// Whether `shutdown` has begun (or finished).
    pub fn is_shut_down(&self) -> bool {
        !self.shared.is_running()
    }

    fn stop(&self, grace: Duration) {
        let sh = &self.shared;
        if sh.begin_drain(grace) {
            info!(?grace, "houndpool draining");
        }
        let _ = sh.wake.ring();
        // Whoever takes the handles joins; concurrent callers wait on the lock until the pool
        // has stopped, so every caller returns after every outcome was delivered.
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Threads {
            collector,
            spawner,
            journal,
        }) = threads.take()
        {
            let _ = collector.join();
            let _ = spawner.join();
            // Every hound is reaped: what they journaled becomes key files now.
            sh.journal.finish(journal);
            // Every hound is reaped and its cgroup removed: remove the pool directory.
            let manager = sh
                .cgroups
                .manager
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(m) = manager {
                if let Err(e) = m.remove_pool() {
                    warn!(error = %e, "cannot remove the pool's cgroup directory");
                }
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// A job that passed validation: its request header, key bytes and bookkeeping (built by
/// [`admit`], placed by `submit` or `batch::submit_batch`).
pub(crate) struct Admitted<'j> {
    pub(crate) header: [u8; REQUEST_HEADER_LEN],
    pub(crate) key: &'j [u8],
    pub(crate) meta: InFlight,
    pub(crate) ticket: Ticket,
}

/// Validates `job` (refusals are counted, with their reason) and, if it is acceptable,
/// assigns its job id and builds its request header and bookkeeping. Shared by `submit` and
/// `submit_batch`. No allocation, no lock. `now` is its submission time (the outcome's latency
/// starts there): `submit` reads the clock, a batch reads it once for all its jobs.
pub(crate) fn admit<'j>(
    sh: &Books,
    job: &Job<'j>,
    now: Instant,
) -> Result<Admitted<'j>, SubmitError> {
    let max = match job.kind {
        JobKind::Encode | JobKind::Evacuate => {
            if job.body.is_empty() {
                return Err(sh.refuse(SubmitError::EmptyEvidence { kind: job.kind }));
            }
            sh.limits().evidence
        }
        JobKind::Decode => {
            if job.body.is_empty() {
                return Err(sh.refuse(SubmitError::EmptyEvidence { kind: job.kind }));
            }
            sh.limits().envelope
        }
        JobKind::Noop => sh.limits().evidence,
        JobKind::Restore | JobKind::Erase => {
            if job.evidence_id.is_none() == job.key.is_none() || !job.body.is_empty() {
                return Err(sh.refuse(SubmitError::InvalidJob { kind: job.kind }));
            }
            0
        }
    };
    if job.body.len() > max {
        return Err(sh.refuse(SubmitError::EvidenceTooLarge {
            len: job.body.len(),
            max,
        }));
    }
    let key = match job.key {
        None => &[][..],
        Some(_)
            if !matches!(
                job.kind,
                JobKind::Evacuate | JobKind::Restore | JobKind::Erase
            ) =>
        {
            return Err(sh.refuse(SubmitError::InvalidKey {
                reason: "a key is allowed only for evacuate, restore and erase",
            }))
        }
        Some(k) => match houndpool_protocol::job::check_evidence_key(k.as_bytes()) {
            Ok(k) => k.as_bytes(),
            Err(reason) => return Err(sh.refuse(SubmitError::InvalidKey { reason })),
        },
    };
    let job_id = sh.next_job_id();
    let evidence_id = job.evidence_id.unwrap_or_else(Uuid::now_v7);
    let header = RequestHeader {
        job_id,
        kind: job.kind,
        level: job.level.unwrap_or(sh.config.gzip_level).min(9),
        severity: job.severity,
        attempt: 0,
        evidence_id: *evidence_id.as_bytes(),
        // At most MAX_EVIDENCE_KEY (200) bytes, checked above.
        key_len: key.len() as u16,
        pool_evidence_id: job.evidence_id.is_none() && key.is_empty(),
    }
    .to_bytes();
    let meta = InFlight {
        job_id,
        evidence_id: *evidence_id.as_bytes(),
        kind: job.kind,
        severity: job.severity,
        body_len: job.body.len() as u32,
        pos: RecordPos { start: 0, end: 0 },
        history: History::default(),
        submitted_at: now,
        cancelled: false,
    };
    let ticket = Ticket {
        job_id: JobId(job_id),
        evidence_id,
    };
    Ok(Admitted {
        header,
        key,
        meta,
        ticket,
    })
}
