//! The pool: shared state, the submit path, building and shutting down.
//!
//! Threads: the caller's threads run `submit`; one **collector** thread (`houndpool-collector`)
//! consumes completions, delivers outcomes, watches hounds, retries and drains the defer queue;
//! one **spawner** thread (`houndpool-spawner`) starts replacement hounds so that a slow spawn
//! never stalls completions. See docs/ARCHITECTURE.md for who owns what.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use houndpool_protocol::job::{JobKind, RequestHeader, Severity, REQUEST_HEADER_LEN};
use houndpool_protocol::messages::{LayerReport, SandboxReport};
use houndpool_protocol::region::{RecordPos, RequestWriter};
use houndpool_protocol::wake::{BellRinger, Doorbell};
use houndpool_shared::cgroup::{ContainerLimits, HoundCgroups, SizingDecision};
use tracing::{info, warn};
use uuid::Uuid;

use crate::circuit::CircuitState;
use crate::config::{ColdConfig, PoolConfig, PoolExhaustedAction};
use crate::defer::{DeferQueue, Pushed};
use crate::job::{CancelResult, DropReason, Job, JobId, Outcome, OutcomeKind, Ticket};
use crate::stats::{Counters, HoundStats, PoolStats, SizeStats};
use crate::tracked::Tracked;
use crate::{cgroups, collector, spawn, PoolError, SubmitError};

pub(crate) const RUNNING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const STOPPED: u8 = 2;

/// Bookkeeping of one accepted job while it is in a ring, the defer queue or the retry queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) job_id: u64,
    pub(crate) evidence_id: [u8; 16],
    pub(crate) kind: JobKind,
    pub(crate) severity: Severity,
    pub(crate) body_len: u32,
    pub(crate) pos: RecordPos,
    /// Hound deaths this job was at the front of the ring for.
    pub(crate) deaths: u8,
    /// Hounds this job has been given to (1 on first placement).
    pub(crate) tries: u8,
    pub(crate) submitted_at: Instant,
    /// `Pool::cancel` withdrew it while it sat behind another job in a ring: its outcome was
    /// delivered then; whatever the hound reports for it later is discarded.
    pub(crate) cancelled: bool,
}

/// Evidence keys of accepted jobs that have one, by job id. Unkeyed jobs never take the
/// lock (one relaxed load of the count).
#[derive(Debug, Default)]
pub(crate) struct JobKeys {
    count: AtomicUsize,
    map: Mutex<std::collections::HashMap<u64, Box<str>>>,
}

impl JobKeys {
    pub(crate) fn insert(&self, job_id: u64, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(job_id, key.into());
        self.count.store(map.len(), Ordering::Relaxed);
    }
    pub(crate) fn remove(&self, job_id: u64) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&job_id);
        self.count.store(map.len(), Ordering::Relaxed);
    }
    /// The key of a job, if it has one.
    pub(crate) fn get(&self, job_id: u64) -> Option<Box<str>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&job_id).cloned()
    }
}

/// A job that passed validation: its request header, key bytes and bookkeeping (built by
/// `Shared::admit`, placed by `submit` or `batch::submit_batch`).
pub(crate) struct Admitted<'j> {
    pub(crate) header: [u8; REQUEST_HEADER_LEN],
    pub(crate) key: &'j [u8],
    pub(crate) meta: InFlight,
    pub(crate) ticket: Ticket,
}

/// A job held in supervisor memory (defer queue or retry queue): header + body bytes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) bytes: Vec<u8>,
    pub(crate) meta: InFlight,
}

/// The submit-side half of a live hound.
pub(crate) struct SlotConn {
    pub(crate) writer: RequestWriter,
    /// Our end of the hound's request doorbell (never shared: rings never block).
    pub(crate) bell: BellRinger,
    pub(crate) inflight: VecDeque<InFlight>,
    /// When the job at the front of `inflight` became the front (watchdog reference).
    pub(crate) front_since: Instant,
}

/// One hound slot, shared by submitters and the collector.
pub(crate) struct Slot {
    pub(crate) id: u32,
    /// False while the slot is empty, being refilled, or its hound is being killed.
    pub(crate) accepting: AtomicBool,
    /// Mirror of `conn.inflight.len()` for lock-free load balancing.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) conn: Mutex<Option<SlotConn>>,
    pub(crate) pid: AtomicU32,
    pub(crate) generation: AtomicU64,
    pub(crate) completed: AtomicU64,
    /// Mirrors of the hound's self-reported state and heartbeat (untrusted, for stats).
    pub(crate) reported_state: AtomicU32,
    pub(crate) heartbeat: AtomicU64,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<SlotConn>> {
        // A panic while holding this lock cannot leave the ring inconsistent (the writer
        // publishes atomically), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An escalation event (`PoolExhaustedAction::Escalate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationEvent {
    /// Kind of the refused job.
    pub kind: JobKind,
    /// Severity of the refused job.
    pub severity: Severity,
    /// Its body length.
    pub body_len: usize,
    /// Jobs in rings at the time.
    pub in_rings: usize,
    /// Total escalations so far (including this one).
    pub count: u64,
}

type Callback = Box<dyn Fn(&Outcome) + Send + Sync>;

/// Delivers outcomes without ever blocking.
pub(crate) struct OutcomeSink {
    tx: Option<Sender<Outcome>>,
    callback: Option<Callback>,
}

/// State shared by the pool handle, the collector and the spawner.
pub(crate) struct Shared {
    pub(crate) config: PoolConfig,
    pub(crate) slots: Box<[Slot]>,
    pub(crate) counters: Counters,
    next_job: AtomicU64,
    rr: AtomicUsize,
    pub(crate) defer: Option<Mutex<DeferQueue<Pending>>>,
    /// Rung to wake the collector (deferred work, spawns, shutdown).
    pub(crate) wake: Doorbell,
    pub(crate) collector_sleeping: AtomicBool,
    pub(crate) state: AtomicU8,
    pub(crate) drain_deadline: Mutex<Option<Instant>>,
    pub(crate) outcomes: OutcomeSink,
    escalation_tx: Sender<EscalationEvent>,
    /// Largest body per kind class: evidence (Noop/Encode/Evacuate) and envelope (Decode).
    max_evidence: usize,
    max_envelope: usize,
    pub(crate) key_prefix: Option<String>,
    /// Evidence keys of accepted keyed jobs, until their outcome.
    pub(crate) keys: JobKeys,
    pub(crate) sandbox_report: Mutex<Option<SandboxReport>>,
    /// Jobs in the collector's retry queue (mirror for stats).
    pub(crate) retrying: AtomicUsize,
    /// Per-hound cgroups (the manager is taken and removed at shutdown).
    pub(crate) cgroups: PoolCgroupsShared,
    /// The size decision made at build.
    pub(crate) sizing: SizingDecision,
    /// Hounds the pool aims to run now (≤ slots).
    pub(crate) target: AtomicUsize,
    /// Mirror of the collector's circuit state (`CircuitState::to_u8`).
    pub(crate) circuit: AtomicU8,
    /// The high-water mark share in force (`f64` bits); starts at the configured one.
    pub(crate) high_water: AtomicU64,
    /// Pid of the spawner's prestarted spare hound, 0 when there is none (mirror for stats).
    pub(crate) spare_pid: AtomicU32,
    /// Per-job handles of tracked jobs without an outcome yet.
    pub(crate) tracked: crate::tracked::Registry,
    /// Cancel requests for the collector.
    pub(crate) cancels: crate::cancel::Requests,
    /// Submit→outcome latency by job kind.
    pub(crate) latency: crate::latency::Latency,
    /// Per-job tracing spans (only while a subscriber enables them).
    pub(crate) spans: crate::spans::Spans,
}

/// The cgroup part of [`Shared`].
pub(crate) struct PoolCgroupsShared {
    pub(crate) manager: Mutex<Option<HoundCgroups>>,
    pub(crate) layer: LayerReport,
    pub(crate) limits: Option<ContainerLimits>,
}

impl Shared {
    // The suggested collapse would move `outcome` inside a match guard.
    pub(crate) fn deliver(&self, outcome: Outcome) {
        self.keys.remove(outcome.job_id.0);
        let c = &self.counters;
        match &outcome.result {
            OutcomeKind::Completed(_) => c.completed.inc_sc(),
            OutcomeKind::Failed(_) => c.failed.inc_sc(),
            OutcomeKind::TimedOut => c.timed_out.inc_sc(),
            OutcomeKind::Dropped(_) => c.dropped.inc_sc(),
        }
        self.latency.record(outcome.kind, outcome.latency);
        self.spans.close(&outcome);
        // A panicking callback must not take the collector down (nor leave other outcomes
        // undelivered): contained, counted, logged (on the 1st, 2nd, 4th, 8th, … panic, so a
        // callback that always panics cannot flood the log), and delivery goes on.
        let mut callback_ok = false;
        if let Some(cb) = &self.outcomes.callback {
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&outcome)));
            callback_ok = called.is_ok();
            if let Err(panic) = called {
                c.callback_panics.inc();
                let n = c.callback_panics.get();
                if n.is_power_of_two() {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    warn!(
                        job = outcome.job_id.0,
                        panics = n,
                        panic = %what,
                        "on_outcome callback panicked; contained, delivery goes on"
                    );
                }
            }
        }
        // A tracked job's outcome goes to its handle, not the shared channel.
        let Some(outcome) = self.tracked.offer(outcome) else {
            return;
        };
        // Never blocks: a full channel counts the outcome as undelivered. It was counted in
        // its terminal counter above either way, so the accounting identity stays exact;
        // `undelivered` says how many of those the consumer never saw.
        let delivered = match &self.outcomes.tx {
            Some(tx) => tx.try_send(outcome).is_ok(),
            None => callback_ok,
        };
        if !delivered {
            c.undelivered.inc();
        }
    }

    pub(crate) fn outcome_for(meta: &InFlight, attempts: u8, result: OutcomeKind) -> Outcome {
        Outcome {
            job_id: JobId(meta.job_id),
            evidence_id: Uuid::from_bytes(meta.evidence_id),
            kind: meta.kind,
            severity: meta.severity,
            attempts,
            latency: meta.submitted_at.elapsed(),
            result,
        }
    }

    /// Rings the collector's doorbell if it announced sleep.
    pub(crate) fn nudge_collector(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.collector_sleeping.load(Ordering::SeqCst) {
            let _ = self.wake.ring();
        }
    }

    /// Copies `parts` into the least-loaded accepting hound's ring. Returns false if no hound
    /// has room. Critical sections are a bounded memcpy plus O(1) bookkeeping.
    pub(crate) fn try_place(&self, parts: &[&[u8]], meta: InFlight) -> bool {
        let n = self.slots.len();
        let max = self.config.max_in_flight_per_hound;
        let start = self.rr.fetch_add(1, Ordering::Relaxed) % n;
        // Pick the least loaded accepting slot, ties broken by the rotating start.
        let mut best: Option<(usize, usize)> = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let s = &self.slots[idx];
            if !s.accepting.load(Ordering::Acquire) {
                continue;
            }
            let load = s.in_flight.load(Ordering::Relaxed);
            if load < max && best.is_none_or(|(_, b)| load < b) {
                best = Some((idx, load));
                if load == 0 {
                    break;
                }
            }
        }
        let Some((first, _)) = best else {
            return false;
        };
        let order =
            std::iter::once(first).chain((0..n).map(|i| (start + i) % n).filter(|&i| i != first));
        // First pass: never wait for a slot lock the collector holds (it may be preempted
        // holding it, and a contended std mutex sleeps on a futex: a wake-up costs tens of µs on
        // a VM) — take the next slot instead. Only if every slot was busy, wait in a second
        // pass (the critical sections are a memcpy and O(1) bookkeeping).
        for wait in [false, true] {
            if let Some(placed) = self.try_place_pass(order.clone(), parts, meta, wait) {
                return placed;
            }
        }
        false
    }

    /// One pass of [`Self::try_place`] over `order`: `Some(true)` placed, `Some(false)` no slot
    /// with room exists, `None` some slot was skipped because its lock was taken (`!wait`).
    fn try_place_pass(
        &self,
        order: impl Iterator<Item = usize>,
        parts: &[&[u8]],
        meta: InFlight,
        wait: bool,
    ) -> Option<bool> {
        let max = self.config.max_in_flight_per_hound;
        let mut skipped = false;
        for idx in order {
            let slot = &self.slots[idx];
            if !slot.accepting.load(Ordering::Acquire) {
                continue;
            }
            let mut guard = if wait {
                slot.lock()
            } else {
                match slot.conn.try_lock() {
                    Ok(g) => g,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        skipped = true;
                        continue;
                    }
                }
            };
            let Some(conn) = guard.as_mut() else {
                continue;
            };
            if conn.inflight.len() >= max {
                continue;
            }
            match conn.writer.try_push(parts) {
                Ok(Some(pos)) => {
                    if conn.inflight.is_empty() {
                        conn.front_since = Instant::now();
                    }
                    conn.inflight.push_back(InFlight { pos, ..meta });
                    slot.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
                    if conn.writer.hound_sleeping() {
                        let _ = conn.bell.ring();
                    }
                    return Some(true);
                }
                Ok(None) | Err(_) => continue,
            }
        }
        (!skipped).then_some(false)
    }

    /// Validates `job` (refusals are counted, with their reason) and, if it is acceptable,
    /// assigns its job id and builds its request header and bookkeeping. Shared by `submit`
    /// and `submit_batch`. No allocation, no lock.
    pub(crate) fn admit<'j>(&self, job: &Job<'j>) -> Result<Admitted<'j>, SubmitError> {
        let sh = self;
        let max = match job.kind {
            JobKind::Encode | JobKind::Evacuate => {
                if job.body.is_empty() {
                    return Err(sh.refuse(SubmitError::EmptyEvidence { kind: job.kind }));
                }
                sh.max_evidence
            }
            JobKind::Decode => {
                if job.body.is_empty() {
                    return Err(sh.refuse(SubmitError::EmptyEvidence { kind: job.kind }));
                }
                sh.max_envelope
            }
            JobKind::Noop => sh.max_evidence,
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
        let job_id = sh.next_job.fetch_add(1, Ordering::Relaxed);
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
        }
        .to_bytes();
        let meta = InFlight {
            job_id,
            evidence_id: *evidence_id.as_bytes(),
            kind: job.kind,
            severity: job.severity,
            body_len: job.body.len() as u32,
            pos: RecordPos { start: 0, end: 0 },
            deaths: 0,
            tries: 1,
            submitted_at: Instant::now(),
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

    pub(crate) fn refuse(&self, e: SubmitError) -> SubmitError {
        let c = &self.counters;
        match e {
            SubmitError::PoolExhausted => c.refused_exhausted.inc(),
            SubmitError::DeferQueueFull { .. } => c.refused_defer_full.inc(),
            SubmitError::EvidenceTooLarge { .. } => c.refused_too_large.inc(),
            SubmitError::EmptyEvidence { .. }
            | SubmitError::InvalidJob { .. }
            | SubmitError::InvalidKey { .. } => c.refused_invalid.inc(),
            SubmitError::ShutDown => c.refused_shutdown.inc(),
        }
        e
    }

    /// The high-water mark share in force.
    pub(crate) fn high_water_mark(&self) -> f64 {
        f64::from_bits(self.high_water.load(Ordering::Relaxed))
    }

    /// The fewest hounds the high-water mark may shrink the pool to.
    pub(crate) fn min_size(&self) -> usize {
        match self.config.size {
            crate::config::PoolSize::Auto { min, .. } => min.max(1),
            crate::config::PoolSize::Fixed(_) => 1,
        }
    }

    pub(crate) fn in_rings(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// A pool of sandboxed hound processes. Cheap to share (`&Pool` is `Sync`); dropping it shuts
/// the pool down with no grace period.
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
    pub(crate) outcome_rx: Option<Receiver<Outcome>>,
    escalation_rx: Receiver<EscalationEvent>,
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

/// Builds a [`Pool`].
pub struct PoolBuilder {
    config: PoolConfig,
    callback: Option<Callback>,
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
        crate::cold::sweep_temps(&config, houndpool_shared::cold::fs::pid_gone);
        crate::cold::start(&mut config)?;
        let binary = spawn::resolve_binary(&config.hound_binary)?;
        let pool_id = *Uuid::now_v7().as_bytes();
        // One spare slot for rotation, so a replacement starts before its predecessor retires.
        let rotation = config.rotation.after_jobs.is_some() || config.rotation.after.is_some();
        let n = config.hound_count() + usize::from(rotation);
        let pool_cgroups = cgroups::setup(&mut config, &pool_id, n)?;
        let sizing = cgroups::decide_size(&config, pool_cgroups.limits.as_ref());
        let target = sizing.size.clamp(1, config.hound_count());
        let high_water_bits = config.high_water_mark.to_bits();
        let layout = config.region_layout();
        let ring_body = layout
            .max_request_payload()
            .saturating_sub(REQUEST_HEADER_LEN);
        let max_evidence = config.max_evidence_bytes.min(ring_body);
        let max_envelope =
            houndpool_shared::cold::max_envelope_len(config.max_output_bytes).min(ring_body);
        let key_prefix = match &config.cold {
            ColdConfig::None => None,
            ColdConfig::Filesystem { prefix, .. } => Some(prefix.clone()),
            ColdConfig::S3(t) => Some(t.prefix.clone()),
        };

        let (outcome_tx, outcome_rx) = match config.outcome_capacity {
            Some(cap) => {
                let (t, r) = crossbeam_channel::bounded(cap);
                (Some(t), Some(r))
            }
            None => (None, None),
        };
        let (escalation_tx, escalation_rx) = crossbeam_channel::bounded(1024);
        let defer = match config.exhausted {
            PoolExhaustedAction::Defer { limit } => Some(Mutex::new(DeferQueue::new(limit))),
            _ => None,
        };
        let slots = (0..n as u32)
            .map(|id| Slot {
                id,
                accepting: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                conn: Mutex::new(None),
                pid: AtomicU32::new(0),
                generation: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                reported_state: AtomicU32::new(0),
                heartbeat: AtomicU64::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            slots,
            counters: Counters::default(),
            next_job: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            defer,
            wake: Doorbell::new()?,
            collector_sleeping: AtomicBool::new(false),
            state: AtomicU8::new(RUNNING),
            drain_deadline: Mutex::new(None),
            outcomes: OutcomeSink {
                tx: outcome_tx,
                callback: self.callback,
            },
            escalation_tx,
            max_evidence,
            max_envelope,
            key_prefix,
            keys: JobKeys::default(),
            sandbox_report: Mutex::new(None),
            retrying: AtomicUsize::new(0),
            cgroups: PoolCgroupsShared {
                manager: Mutex::new(pool_cgroups.manager),
                layer: pool_cgroups.layer,
                limits: pool_cgroups.limits,
            },
            sizing,
            target: AtomicUsize::new(target),
            circuit: AtomicU8::new(CircuitState::Closed.to_u8()),
            high_water: AtomicU64::new(high_water_bits),
            spare_pid: AtomicU32::new(0),
            tracked: Default::default(),
            cancels: Default::default(),
            latency: Default::default(),
            spans: Default::default(),
        });
        // Every hound, the initial ones included, is spawned by the long-lived spawner thread:
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawning on the caller's
        // thread would kill the hounds when that thread ends.
        let (collector, spawner) = collector::start(shared.clone(), binary, pool_id)?;
        shared.cancels.set_collector(collector.thread().id());
        info!(
            hounds = target,
            slots = n,
            sizing = %shared.sizing.explanation,
            "houndpool started"
        );
        Ok(Pool {
            shared,
            outcome_rx,
            escalation_rx,
            threads: Mutex::new(Some((collector, spawner))),
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
        if sh.state.load(Ordering::Acquire) != RUNNING {
            return Err(sh.refuse(SubmitError::ShutDown));
        }
        let Admitted {
            header,
            key,
            meta,
            ticket,
        } = sh.admit(job)?;
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
        if sh.try_place(&[header, key, job.body], meta) {
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
                let _ = sh.escalation_tx.try_send(EscalationEvent {
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
                let (pushed, was_empty) = {
                    let mut q = defer.lock().unwrap_or_else(|p| p.into_inner());
                    let was_empty = q.len() == 0;
                    (q.push(job.severity, Pending { bytes, meta }), was_empty)
                };
                match pushed {
                    Pushed::Queued => {}
                    Pushed::Evicted(victim) => {
                        let o = Shared::outcome_for(
                            &victim.meta,
                            0,
                            OutcomeKind::Dropped(DropReason::Evicted { by: job.severity }),
                        );
                        sh.deliver(o);
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
                .and_then(houndpool_shared::cgroup::memory_working_set),
            memory_limit: sh
                .cgroups
                .limits
                .as_ref()
                .and_then(|l| l.effective_memory_limit()),
            high_water_bytes: None,
            hounds: Vec::with_capacity(sh.slots.len()),
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
                in_flight: slot.in_flight.load(Ordering::Relaxed),
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
        sh.high_water.store(share.to_bits(), Ordering::Relaxed);
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
        self.shared.state.load(Ordering::Acquire) != RUNNING
    }

    fn stop(&self, grace: Duration) {
        let sh = &self.shared;
        if sh
            .state
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            *sh.drain_deadline.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + grace);
            info!(?grace, "houndpool draining");
        }
        let _ = sh.wake.ring();
        // Whoever takes the handles joins; concurrent callers wait on the lock until the pool
        // has stopped, so every caller returns after every outcome was delivered.
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((collector, spawner)) = threads.take() {
            let _ = collector.join();
            let _ = spawner.join();
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
