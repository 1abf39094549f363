//! The pool's books: the state that `submit` (caller threads), the collector and the spawner
//! share — hound slots with their request rings and in-flight lists, the defer queue, the
//! outcome sink, counters and the pool's lifecycle. Uses neither `pool` nor `collector`: both
//! use it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::cgroup::{ContainerLimits, HoundCgroups, SizingDecision};
use crossbeam_channel::Sender;
use houndpool_protocol::control::{LayerReport, SandboxReport};
use houndpool_protocol::job::{JobKind, Severity};
use houndpool_protocol::region::{CompletionReader, RecordPos, RequestWriter};
use houndpool_protocol::wake::{BellRinger, Doorbell};
use tracing::warn;
use uuid::Uuid;

use crate::cgroup::PoolCgroups;
use crate::circuit::CircuitState;
use crate::config::{ColdConfig, PoolConfig, PoolExhaustedAction};
use crate::defer::DeferQueue;
use crate::job::machine::{self, History, JobState, Step};
use crate::job::{CancelResult, JobId, Outcome, OutcomeKind};
use crate::stats::Counters;
use crate::violation::Violation;
use crate::{PoolError, SubmitError};

/// The pool's lifecycle (`Books::lifecycle`): accepting jobs, then draining after `shutdown`
/// began, then stopped (every outcome delivered, every hound reaped).
const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPED: u8 = 2;

/// Bookkeeping of one accepted job while it is in a ring, the defer queue or the retry queue.
/// Where it is says its [`JobState`] (see [`InFlight::state_in_ring`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) job_id: u64,
    pub(crate) evidence_id: [u8; 16],
    pub(crate) kind: JobKind,
    pub(crate) severity: Severity,
    pub(crate) body_len: u32,
    pub(crate) pos: RecordPos,
    /// Hounds it was given to, and deaths charged to it.
    pub(crate) history: History,
    pub(crate) submitted_at: Instant,
    /// `Pool::cancel` withdrew it while it sat behind another job in a ring: its outcome was
    /// delivered then; whatever the hound reports for it later is discarded.
    pub(crate) cancelled: bool,
}

impl InFlight {
    /// Its state at position `front` (or behind it) of `slot`'s in-flight list.
    pub(crate) fn state_in_ring(&self, slot: u32, front: bool) -> JobState {
        JobState::in_ring(slot, front, self.history, self.cancelled)
    }
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

/// A job held in supervisor memory (defer queue or retry queue): header + body bytes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) bytes: Vec<u8>,
    pub(crate) meta: InFlight,
}

/// The submit-side half of a live hound. Its in-flight list is changed only through
/// [`Slot`]'s methods, which keep `Slot::in_flight` and `front_since` right.
pub(crate) struct SlotConn {
    writer: RequestWriter,
    /// Our end of the hound's request doorbell (never shared: rings never block).
    bell: BellRinger,
    inflight: VecDeque<InFlight>,
    /// When the job at the front of `inflight` became the front (watchdog reference).
    front_since: Instant,
}

impl SlotConn {
    /// A live hound's request ring writer and doorbell, with room for `capacity` jobs.
    pub(crate) fn new(writer: RequestWriter, bell: BellRinger, capacity: usize) -> Self {
        SlotConn {
            writer,
            bell,
            inflight: VecDeque::with_capacity(capacity),
            front_since: Instant::now(),
        }
    }

    /// The job at the front of the ring (running, or the next the hound takes).
    pub(crate) fn front(&self) -> Option<&InFlight> {
        self.inflight.front()
    }

    /// Since when the front job has been the front (the watchdog's reference).
    pub(crate) fn front_since(&self) -> Instant {
        self.front_since
    }

    /// Position of job `job_id` in the ring, unless it was cancelled already.
    pub(crate) fn position_live(&self, job_id: u64) -> Option<usize> {
        self.inflight
            .iter()
            .position(|m| m.job_id == job_id && !m.cancelled)
    }

    /// The job at position `k` (0: the front).
    pub(crate) fn job(&self, k: usize) -> Option<&InFlight> {
        self.inflight.get(k)
    }

    /// Marks the job at position `k` cancelled: its record stays until the hound passes it,
    /// and whatever the hound reports for it is discarded.
    pub(crate) fn mark_cancelled(&mut self, k: usize) {
        if let Some(m) = self.inflight.get_mut(k) {
            m.cancelled = true;
        }
    }

    /// The jobs it held, front first (the hound is gone).
    pub(crate) fn into_jobs(self) -> VecDeque<InFlight> {
        self.inflight
    }
}

/// The consumer side of a live hound's completion ring: whoever holds the slot's `consumer`
/// lock consumes (the collector, or a caller's thread in `Pool::recv_outcomes`). Lock order:
/// `consumer` before the slot's `conn` lock, never the other way round.
pub(crate) struct Consumer {
    pub(crate) reader: CompletionReader,
    /// A protocol violation a caller's thread found, for the collector to act on (kill the
    /// hound, settle its jobs). While it is set nobody consumes from this ring.
    pub(crate) violation: Option<Violation>,
    /// A caller's thread left the next record to the collector (larger than
    /// [`caller_max_record`]) and woke it; cleared when the collector consumes from this ring.
    pub(crate) handed_over: bool,
}

/// Largest completion a caller's thread consumes itself while payload buffers are fresh
/// allocations; larger ones are left to the collector. A fresh large buffer is fresh pages: the
/// copy out faults them in and has them zeroed, the most expensive part of the round trip, and
/// on the collector that runs on the other core, in parallel with the caller's copy into the
/// request ring (the caller doing both halved the 256 KiB rate). Once the embedder gives
/// payload buffers back ([`crate::recycle`]) the copy lands in mapped memory and the hand-over
/// costs more than it saves (a wake-up of the collector, a hop through the channel): callers
/// then consume records up to [`caller_max_record`].
pub(crate) const CALLER_MAX_RECORD: usize = 64 * 1024;

/// Largest completion a caller's thread consumes itself now: [`CALLER_MAX_RECORD`], or once
/// payload buffers are recycled the largest the stash serves ([`crate::recycle::LARGEST`]).
/// `hound-stress ipc`, 256 KiB, alternating full-length runs with recycling: 25-36 k msg/s
/// consumed by the caller against 17-26 k handed over.
pub(crate) fn caller_max_record(sh: &Books) -> usize {
    if sh.payloads.active() {
        crate::recycle::LARGEST
    } else {
        CALLER_MAX_RECORD
    }
}

/// One hound slot, shared by submitters and the collector.
pub(crate) struct Slot {
    pub(crate) id: u32,
    /// False while the slot is empty, being refilled, or its hound is being killed.
    pub(crate) accepting: AtomicBool,
    /// Mirror of `conn.inflight.len()` for lock-free load balancing.
    in_flight: AtomicUsize,
    conn: Mutex<Option<SlotConn>>,
    /// The completion ring's consumer while the hound lives (taken by the collector when it
    /// dies).
    pub(crate) consumer: Mutex<Option<Consumer>>,
    pub(crate) pid: AtomicU32,
    pub(crate) generation: AtomicU64,
    pub(crate) completed: AtomicU64,
    /// Evacuate completions consumed from this slot's ring (the journal materialiser yields
    /// while this grows, see `cold::journal`).
    pub(crate) evacuated: AtomicU64,
    /// Mirrors of the hound's self-reported state and heartbeat (untrusted, for stats).
    pub(crate) reported_state: AtomicU32,
    pub(crate) heartbeat: AtomicU64,
}

impl Slot {
    /// An empty slot.
    pub(crate) fn new(id: u32) -> Self {
        Slot {
            id,
            accepting: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            conn: Mutex::new(None),
            consumer: Mutex::new(None),
            pid: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            evacuated: AtomicU64::new(0),
            reported_state: AtomicU32::new(0),
            heartbeat: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<SlotConn>> {
        // A panic while holding this lock cannot leave the ring inconsistent (the writer
        // publishes atomically), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs in this slot's ring (a relaxed mirror, for load balancing and stats).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Gives the slot a new hound's connection (empty ring).
    pub(crate) fn install(&self, conn: SlotConn) {
        let mut guard = self.lock();
        self.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
        *guard = Some(conn);
    }

    /// Takes the connection of a dead hound, with the jobs it held.
    pub(crate) fn take_conn(&self) -> Option<SlotConn> {
        let conn = self.lock().take();
        self.in_flight.store(0, Ordering::Relaxed);
        conn
    }

    /// Removes the front job of `conn` (this slot's, locked by the caller): the next job
    /// becomes the front now.
    /// `now` is the time it happens (read by the caller once for a completion: the new front's
    /// clock and the outcome's latency).
    pub(crate) fn pop_front(&self, conn: &mut SlotConn, now: Instant) -> Option<InFlight> {
        let meta = conn.inflight.pop_front()?;
        conn.front_since = now;
        self.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
        Some(meta)
    }

    /// One job of a `submit_batch` run into `conn` (this slot's, locked by the caller): placed
    /// as a fresh submission ([`machine::place`] from `Submitted`) if the in-flight bound
    /// (`max`) and the ring have room now. The record is staged, not published, and the hound
    /// is not rung: the run publishes all its records with one store and rings once at its end
    /// ([`Self::publish_run`]), before it unlocks. Returns whether it was placed.
    ///
    /// A staged job is in the in-flight list before the hound can see it; that is safe because
    /// nothing looks at the list without this lock, which the run holds until it published.
    /// (A panic in between leaves the records staged: the lock is used poisoned, and the next
    /// push into this ring publishes them with its own.)
    pub(crate) fn push_in_run(
        &self,
        conn: &mut SlotConn,
        parts: &[&[u8]],
        meta: InFlight,
        max: usize,
    ) -> bool {
        if conn.inflight.len() >= max {
            return false;
        }
        match conn.writer.stage(parts) {
            Ok(Some(pos)) => {
                let history = machine::place(&JobState::Submitted, self.id).next.history();
                self.push_back(
                    conn,
                    InFlight {
                        pos,
                        history,
                        ..meta
                    },
                );
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Whether `conn` (locked by the caller) takes no job now for its in-flight bound `max`.
    pub(crate) fn at_bound(conn: &SlotConn, max: usize) -> bool {
        conn.inflight.len() >= max
    }

    /// After a run of pushes: publishes the run's staged records with one tail store, then one
    /// fence and one look at the hound's flag for the whole run (the tail store precedes the
    /// fence: see the wake-up argument in `protocol::region`), and a ring if it announced sleep.
    pub(crate) fn publish_run(conn: &mut SlotConn) {
        conn.writer.publish();
        if conn.writer.hound_sleeping() {
            let _ = conn.bell.ring();
        }
    }

    /// Appends a placed job to `conn` (this slot's, locked by the caller).
    fn push_back(&self, conn: &mut SlotConn, meta: InFlight) {
        if conn.inflight.is_empty() {
            conn.front_since = Instant::now();
        }
        conn.inflight.push_back(meta);
        self.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
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

pub(crate) type Callback = Box<dyn Fn(&Outcome) + Send + Sync>;

/// Delivers outcomes without ever blocking.
pub(crate) struct OutcomeSink {
    tx: Option<Sender<Outcome>>,
    callback: Option<Callback>,
}

impl OutcomeSink {
    /// Outcomes go to `tx` (if any) and `callback` (if any).
    pub(crate) fn new(tx: Option<Sender<Outcome>>, callback: Option<Callback>) -> Self {
        OutcomeSink { tx, callback }
    }
}

/// State shared by the pool handle, the collector and the spawner.
pub(crate) struct Books {
    pub(crate) config: PoolConfig,
    pub(crate) slots: Box<[Slot]>,
    pub(crate) counters: Counters,
    next_job: AtomicU64,
    rr: AtomicUsize,
    pub(crate) defer: Option<Mutex<DeferQueue<Pending>>>,
    /// Rung to wake the collector (deferred work, spawns, shutdown).
    pub(crate) wake: Doorbell,
    pub(crate) collector_sleeping: AtomicBool,
    /// RUNNING, DRAINING or STOPPED (only ever forward).
    lifecycle: AtomicU8,
    drain_deadline: Mutex<Option<Instant>>,
    outcomes: OutcomeSink,
    escalation_tx: Sender<EscalationEvent>,
    /// Largest body per kind class: evidence (Noop/Encode/Evacuate) and envelope (Decode).
    limits: BodyLimits,
    pub(crate) key_prefix: Option<String>,
    /// Evidence keys of accepted keyed jobs, until their outcome.
    pub(crate) keys: JobKeys,
    pub(crate) sandbox_report: Mutex<Option<SandboxReport>>,
    /// Jobs in the collector's retry queue (mirror for stats).
    pub(crate) retrying: AtomicUsize,
    /// Per-hound cgroups (the manager is taken and removed at shutdown).
    pub(crate) cgroups: CgroupState,
    /// The size decision made at build.
    pub(crate) sizing: SizingDecision,
    /// Hounds the pool aims to run now (≤ slots).
    pub(crate) target: AtomicUsize,
    /// Mirror of the collector's circuit state (`CircuitState::to_u8`).
    pub(crate) circuit: AtomicU8,
    /// The high-water mark share in force (`f64` bits); starts at the configured one.
    high_water: AtomicU64,
    /// Pid of the spawner's prestarted spare hound, 0 when there is none (mirror for stats).
    pub(crate) spare_pid: AtomicU32,
    /// The materialiser of the filesystem store's commit journals.
    pub(crate) journal: crate::cold::journal::Journal,
    /// Per-job handles of tracked jobs without an outcome yet.
    pub(crate) tracked: crate::tracked::Registry,
    /// Cancel requests for the collector.
    pub(crate) cancels: Requests,
    /// Submit→outcome latency by job kind.
    pub(crate) latency: crate::latency::Latency,
    /// Per-job tracing spans (only while a subscriber enables them).
    pub(crate) spans: crate::spans::Spans,
    /// Set by a caller's thread that consumed completions (ring space freed): the collector
    /// then retries placing its retry and defer queues.
    pub(crate) space_freed: AtomicBool,
    /// Until when (nanoseconds since `epoch`) a caller's thread is taken to be consuming
    /// completion rings itself (`Pool::recv_outcomes`); 0: none. While it runs the collector
    /// sleeps without asking hounds to ring it, for at most [`CALLER_LEASE`] at a time.
    caller_lease: AtomicU64,
    /// When (nanoseconds since `epoch`) a caller last left a large record to the collector.
    last_handover: AtomicU64,
    epoch: Instant,
    /// Payload buffers given back with `Pool::recycle`, for the next completions that carry a
    /// payload (collector and callers' threads alike).
    pub(crate) payloads: crate::recycle::PayloadStash,
}

/// How long one drain pass of a caller's thread counts as "a caller is consuming": the longest
/// a completion can wait for the collector after that caller went away without blocking.
pub(crate) const CALLER_LEASE: Duration = Duration::from_millis(1);

/// One pending request: the job id and where the answer goes.
pub(crate) type Request = (u64, Sender<CancelResult>);

/// Cancel requests waiting for the collector (`Pool::cancel`; see `cancel.rs`).
#[derive(Default)]
pub(crate) struct Requests {
    queue: Mutex<Vec<Request>>,
    collector: OnceLock<ThreadId>,
}

impl Requests {
    /// Records the collector thread (a cancel from it must not wait for itself).
    pub(crate) fn set_collector(&self, id: ThreadId) {
        let _ = self.collector.set(id);
    }

    /// Takes every pending request (collector).
    pub(crate) fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Queues a request (`Pool::cancel`).
    pub(crate) fn push(&self, request: Request) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }

    /// Whether the calling thread is the collector (a cancel from it must not wait for itself).
    pub(crate) fn on_collector_thread(&self) -> bool {
        self.collector.get() == Some(&std::thread::current().id())
    }

    /// Whether a request waits (collector, before it sleeps).
    pub(crate) fn pending(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// The largest job body `submit` accepts, per kind class (each also fits a ring record).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Evidence (Noop, Encode, Evacuate).
    pub(crate) evidence: usize,
    /// An envelope (Decode).
    pub(crate) envelope: usize,
}

/// The cgroup part of [`Books`].
pub(crate) struct CgroupState {
    pub(crate) manager: Mutex<Option<HoundCgroups>>,
    pub(crate) layer: LayerReport,
    pub(crate) limits: Option<ContainerLimits>,
}

impl Books {
    /// The books of a pool of `slots` slots (all empty) that runs with `config`, delivers
    /// outcomes to `outcomes` and escalations to `escalation_tx`, accepts bodies up to
    /// `limits`, places hounds in `cgroups` and aims at the size of `sizing`.
    pub(crate) fn new(
        config: PoolConfig,
        slots: usize,
        outcomes: OutcomeSink,
        escalation_tx: Sender<EscalationEvent>,
        limits: BodyLimits,
        cgroups: PoolCgroups,
        sizing: SizingDecision,
    ) -> Result<Self, PoolError> {
        let target = sizing.size.clamp(1, config.hound_count());
        let key_prefix = match &config.cold {
            ColdConfig::None => None,
            ColdConfig::Filesystem { prefix, .. } => Some(prefix.clone()),
            ColdConfig::S3(t) => Some(t.prefix.clone()),
        };
        let defer = match config.exhausted {
            PoolExhaustedAction::Defer { limit } => Some(Mutex::new(DeferQueue::new(limit))),
            _ => None,
        };
        Ok(Books {
            slots: (0..slots as u32).map(Slot::new).collect(),
            counters: Counters::default(),
            next_job: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            defer,
            wake: Doorbell::new()?,
            collector_sleeping: AtomicBool::new(false),
            lifecycle: AtomicU8::new(RUNNING),
            drain_deadline: Mutex::new(None),
            outcomes,
            escalation_tx,
            limits,
            key_prefix,
            keys: JobKeys::default(),
            sandbox_report: Mutex::new(None),
            retrying: AtomicUsize::new(0),
            cgroups: CgroupState {
                manager: Mutex::new(cgroups.manager),
                layer: cgroups.layer,
                limits: cgroups.limits,
            },
            sizing,
            target: AtomicUsize::new(target),
            circuit: AtomicU8::new(CircuitState::Closed.to_u8()),
            high_water: AtomicU64::new(config.high_water_mark.to_bits()),
            spare_pid: AtomicU32::new(0),
            journal: crate::cold::journal::Journal::new(&config),
            tracked: Default::default(),
            cancels: Default::default(),
            latency: Default::default(),
            spans: Default::default(),
            space_freed: AtomicBool::new(false),
            caller_lease: AtomicU64::new(0),
            last_handover: AtomicU64::new(0),
            epoch: Instant::now(),
            payloads: crate::recycle::PayloadStash::new(),
            config,
        })
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A caller's thread is consuming completion rings (for the next [`CALLER_LEASE`]).
    pub(crate) fn extend_caller_lease(&self) {
        let now = self.nanos();
        let lease = CALLER_LEASE.as_nanos() as u64;
        let until = now.saturating_add(lease);
        self.caller_lease.fetch_max(until, Ordering::SeqCst);
    }

    /// A caller's thread stops consuming and is about to block until the collector delivers:
    /// ends the lease, and wakes the collector if it sleeps without asking hounds to ring it
    /// (it then sleeps again the ordinary way). Dekker with the collector's `sleep`: the lease
    /// store and the collector's `collector_sleeping` store each precede a SeqCst fence and
    /// the other's load, so either the collector sees no lease or this sees it asleep.
    pub(crate) fn end_caller_lease(&self) {
        // No lease (none taken, or dropped for a large record): the collector sleeps, if it
        // does, the ordinary way, and needs no wake-up.
        let had = self.caller_lease.swap(0, Ordering::SeqCst) != 0;
        std::sync::atomic::fence(Ordering::SeqCst);
        if had && self.collector_sleeping.load(Ordering::SeqCst) {
            let _ = self.wake.ring();
        }
    }

    /// A caller left a large record to the collector (and woke it): ends the lease, and no
    /// caller consumes (nor takes a lease) for the next [`CALLER_LEASE`], so that while large
    /// records come the collector consumes, spins and sleeps as it does without a caller.
    pub(crate) fn drop_caller_lease(&self) {
        self.last_handover.store(self.nanos(), Ordering::Relaxed);
        self.caller_lease.store(0, Ordering::SeqCst);
    }

    /// Whether a caller left a large record to the collector within the last
    /// [`CALLER_LEASE`]: callers then leave the rings to the collector altogether (their
    /// `try_lock` on a ring would only make the collector miss it).
    pub(crate) fn recent_handover(&self) -> bool {
        let last = self.last_handover.load(Ordering::Relaxed);
        last != 0 && self.nanos().saturating_sub(last) < CALLER_LEASE.as_nanos() as u64
    }

    /// Whether a caller's lease runs (the collector, after its own SeqCst fence).
    pub(crate) fn caller_consuming(&self) -> bool {
        self.caller_lease.load(Ordering::SeqCst) > self.nanos()
    }

    /// A caller's thread consumed completions: ring space freed, so the collector's blocked
    /// retry and defer queues may fit now; wake it if one waits.
    pub(crate) fn note_space_freed(&self) {
        self.space_freed.store(true, Ordering::Release);
        let waiting = self.retrying.load(Ordering::Relaxed) > 0
            || self.defer.as_ref().is_some_and(|d| match d.try_lock() {
                Ok(q) => q.len() > 0,
                Err(_) => true,
            });
        if waiting {
            self.nudge_collector();
        }
    }

    /// Whether outcomes may be delivered on a caller's thread: not with an `on_outcome`
    /// callback, which is documented to run on the collector thread.
    pub(crate) fn caller_may_consume(&self) -> bool {
        self.outcomes.callback.is_none()
    }

    /// Whether the pool still accepts jobs (`shutdown` has not begun).
    pub(crate) fn is_running(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == RUNNING
    }

    /// Whether `shutdown` began and the collector has not finished yet.
    pub(crate) fn is_draining(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == DRAINING
    }

    /// Whether the pool stopped: every outcome delivered, every hound reaped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == STOPPED
    }

    /// Begins the drain with `grace` to finish what is accepted; false if it had begun.
    pub(crate) fn begin_drain(&self, grace: Duration) -> bool {
        let began = self
            .lifecycle
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if began {
            *self
                .drain_deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
        }
        began
    }

    /// Whether the drain's grace period is over.
    pub(crate) fn grace_over(&self) -> bool {
        let deadline = *self
            .drain_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Marks the pool stopped (the collector, when it finished).
    pub(crate) fn mark_stopped(&self) {
        self.lifecycle.store(STOPPED, Ordering::Release);
    }

    /// A new pool-unique job number (from 1).
    pub(crate) fn next_job_id(&self) -> u64 {
        self.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// The body limits `submit` enforces.
    pub(crate) fn limits(&self) -> BodyLimits {
        self.limits
    }

    /// Sends an escalation event; never blocks (a full channel keeps the oldest events).
    pub(crate) fn escalate(&self, event: EscalationEvent) {
        let _ = self.escalation_tx.try_send(event);
    }

    /// Sets the high-water mark share in force (checked by the caller).
    pub(crate) fn set_high_water_mark(&self, share: f64) {
        self.high_water.store(share.to_bits(), Ordering::Relaxed);
    }

    // The suggested collapse would move `outcome` inside a match guard. Inlined into
    // `conclude_at` (its one caller), so the ~200-byte outcome is built where it is delivered
    // instead of being copied at each call boundary.
    #[inline]
    fn deliver(&self, outcome: Outcome) {
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
        let outcome = if self.tracked.any() {
            match self.tracked.offer(outcome) {
                Some(o) => o,
                None => return,
            }
        } else {
            outcome
        };
        // Never blocks: a full channel counts the outcome as undelivered. It was counted in
        // its terminal counter above either way, so the accounting identity stays exact;
        // `undelivered` says how many of those the consumer never saw.
        // On a caller's thread inside `recv_outcomes`, straight into its buffer (the channel's
        // send and receive would only move it twice more); otherwise the channel.
        let delivered = match &self.outcomes.tx {
            Some(tx) => match crate::direct::deliver(crate::direct::owner_of(self), outcome) {
                None => true,
                Some(outcome) => tx.try_send(outcome).is_ok(),
            },
            None => callback_ok,
        };
        if !delivered {
            c.undelivered.inc();
        }
    }

    #[inline]
    fn outcome_for(meta: &InFlight, attempts: u8, result: OutcomeKind, now: Instant) -> Outcome {
        Outcome {
            job_id: JobId(meta.job_id),
            evidence_id: Uuid::from_bytes(meta.evidence_id),
            kind: meta.kind,
            severity: meta.severity,
            attempts,
            latency: now.saturating_duration_since(meta.submitted_at),
            result,
        }
    }

    /// Delivers the outcome `step` names for the job of `meta`, if it names one. Returns
    /// where the job is now.
    pub(crate) fn conclude(&self, meta: &InFlight, step: Step) -> JobState {
        self.conclude_at(meta, step, Instant::now())
    }

    /// [`Self::conclude`] at `now` (the outcome's latency ends there).
    #[inline]
    pub(crate) fn conclude_at(&self, meta: &InFlight, step: Step, now: Instant) -> JobState {
        if let Some(v) = step.outcome {
            self.deliver(Self::outcome_for(meta, v.attempts, v.result, now));
        }
        step.next
    }

    /// Rings the collector's doorbell if it announced sleep.
    pub(crate) fn nudge_collector(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.collector_sleeping.load(Ordering::SeqCst) {
            let _ = self.wake.ring();
        }
    }

    /// Copies `parts` into the least-loaded accepting hound's ring: the job, in state `from`
    /// (`Submitted`, `Deferred` or `Retrying`), is placed ([`machine::place`]). Returns false if
    /// no hound has room. Critical sections are a bounded memcpy plus O(1) bookkeeping.
    pub(crate) fn try_place(&self, parts: &[&[u8]], meta: InFlight, from: JobState) -> bool {
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
            let load = s.in_flight();
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
            if let Some(placed) = self.try_place_pass(order.clone(), parts, meta, from, wait) {
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
        from: JobState,
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
                    let history = machine::place(&from, slot.id).next.history();
                    slot.push_back(
                        conn,
                        InFlight {
                            pos,
                            history,
                            ..meta
                        },
                    );
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
        self.slots.iter().map(Slot::in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use houndpool_protocol::region::SupervisorRegions;
    use houndpool_protocol::wake::bell_pipe;

    use super::*;

    fn job(job_id: u64, pos: RecordPos) -> InFlight {
        InFlight {
            job_id,
            evidence_id: [0; 16],
            kind: JobKind::Noop,
            severity: Severity::Medium,
            body_len: 1,
            pos,
            history: History::default(),
            submitted_at: Instant::now(),
            cancelled: false,
        }
    }

    /// A slot with a live connection to a real (hound-less) request ring.
    fn slot() -> Slot {
        let layout = PoolConfig::default().region_layout();
        let regions = SupervisorRegions::create(layout, "state-test").expect("regions");
        let (writer, _reader) = regions.split();
        let (bell, _listener) = bell_pipe().expect("bell");
        let slot = Slot::new(0);
        slot.install(SlotConn::new(writer, bell, 4));
        slot
    }

    #[test]
    fn the_in_flight_mirror_and_the_front_time_follow_every_change() {
        let slot = slot();
        assert_eq!(slot.in_flight(), 0);
        let mut guard = slot.lock();
        let conn = guard.as_mut().expect("installed");
        for id in 1..=3 {
            let pos = conn.writer.try_push(&[b"x"]).expect("push").expect("room");
            slot.push_back(conn, job(id, pos));
        }
        assert_eq!(slot.in_flight(), 3);
        assert_eq!(conn.front().map(|j| j.job_id), Some(1));
        let first_front = conn.front_since();
        // Pushing behind the front does not restart the front's clock.
        std::thread::sleep(Duration::from_millis(2));
        let pos = conn.writer.try_push(&[b"y"]).expect("push").expect("room");
        slot.push_back(conn, job(4, pos));
        assert_eq!(conn.front_since(), first_front);
        // Popping the front makes the next job the front now.
        assert_eq!(
            slot.pop_front(conn, Instant::now()).map(|j| j.job_id),
            Some(1)
        );
        assert_eq!(slot.in_flight(), 3);
        assert!(conn.front_since() > first_front);
        assert_eq!(conn.front().map(|j| j.job_id), Some(2));
        // A cancelled record stays, but is no longer found live.
        assert_eq!(conn.position_live(3), Some(1));
        conn.mark_cancelled(1);
        assert_eq!(conn.position_live(3), None);
        assert_eq!(slot.in_flight(), 3);
        drop(guard);
        // A dead hound's connection is taken with its jobs; the mirror drops to zero.
        let taken = slot.take_conn().expect("connection");
        assert_eq!(slot.in_flight(), 0);
        let ids: Vec<u64> = taken.into_jobs().iter().map(|j| j.job_id).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert!(slot.lock().is_none());
    }
}
