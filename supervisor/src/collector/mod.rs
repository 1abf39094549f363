//! The collector thread: the only consumer of completion rings and the owner of every hound
//! process. Everything a hound writes is validated here; a hound that writes something
//! impossible is killed (`ProtocolViolation`), never trusted and never the cause of a panic.
//!
//! This file holds the loop, its sleep and its per-pass budgets; one concern per file below it:
//! `spawner` (the spawner thread), `completion` (checking completions), `control` (control
//! sockets and violations), `settle` (a hound's death), `reaping` (hounds that do not die at
//! once), `supervision` (respawn, circuit,
//! rotation, high-water mark, retirement), `shutdown` (drain and finish), `cancelling`
//! (`Pool::cancel`). The job's states and transitions are in `crate::job`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use houndpool_protocol::control::MAX_CONTROL_DATAGRAM;
use houndpool_protocol::job::COMPLETION_HEADER_LEN;
use houndpool_protocol::region::{CompletionWatch, HoundState};
use houndpool_protocol::wake::BellListener;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tracing::{debug, warn};

use crate::cgroup::Placed;
use crate::circuit::Circuit;
use crate::job::machine::{JobState, KillCause};
use crate::spawn::ChildGuard;
use crate::state::{Books, Pending, CALLER_LEASE};
use crate::PoolError;
use completion::handle_completion;
use control::LogBudget;
use spawner::{spawner_loop, SpawnOrder, SpawnResult};

// Pool::cancel, the collector's half.
mod cancelling;
pub(crate) mod completion;
mod control;
mod reaping;
mod settle;
mod shutdown;
mod spawner;
mod supervision;

/// Completions consumed from one hound before looking at the others (a hound can only
/// complete jobs it holds, so this also bounds to `max_in_flight_per_hound`).
pub(crate) const COLLECT_BUDGET: usize = 256;
/// Control datagrams read from one hound per housekeeping pass: the only legitimate one after
/// `Ready` is a single `Fatal`, so a hound flooding its socket costs a few `recv` per pass.
const CONTROL_BUDGET: usize = 4;
/// Period of housekeeping (control sockets, watchdog, stats mirrors) while busy.
const HOUSEKEEPING: Duration = Duration::from_millis(2);
/// Longest sleep of an idle collector.
const IDLE_SLEEP: Duration = Duration::from_millis(100);
/// Period of the container memory sample (high-water mark).
const MEMORY_SAMPLE: Duration = Duration::from_millis(250);

/// The collector's view of a live hound.
struct HoundProc {
    child: ChildGuard,
    pid: u32,
    generation: u64,
    control: OwnedFd,
    /// The completion ring seen without consuming it (flags, counters, pending); the reader
    /// itself is in the slot's `consumer` lock, shared with callers' threads.
    watch: CompletionWatch,
    /// Our read end of the hound's completion doorbell (never shared: drains never block).
    completion_bell: BellListener,
    kill_cause: Option<KillCause>,
    /// The hound's `Fatal` report (truncated, escaped). At most one per hound: any control
    /// datagram after it is a protocol violation.
    fatal: Option<String>,
    /// When a hound asked to exit (retirement) or that reported `Fatal` is SIGKILLed if it is
    /// still alive (`PoolConfig::retire_grace`).
    exit_by: Option<Instant>,
    started: Instant,
    /// Its cgroup (removed after the hound is reaped).
    placed: Option<Placed>,
    /// Retired (rotation or high-water mark): takes no new jobs, is stopped once its ring is
    /// empty, and its exit is expected.
    retiring: bool,
    /// Whether `Shutdown` was sent to this retiring hound.
    shutdown_sent: bool,
    /// Rotation thresholds with jitter: completed jobs (on this slot's counter) and time.
    rotate_after_completed: Option<u64>,
    rotate_at: Option<Instant>,
}

struct Collector {
    sh: Arc<Books>,
    hounds: Vec<Option<HoundProc>>,
    retry: VecDeque<Pending>,
    orders: Option<Sender<SpawnOrder>>,
    results: Receiver<SpawnResult>,
    recent_restarts: Vec<VecDeque<Instant>>,
    next_generation: Vec<u64>,
    buf: Vec<u8>,
    ctrl_buf: Vec<u8>,
    /// Set when the head of the retry/defer queue could not be placed; cleared when space may
    /// have freed (a completion, a new hound). Keeps an idle collector from spinning on it.
    blocked: bool,
    next_deadline: Option<Instant>,
    finishing: bool,
    /// Restart intensity and the circuit (pool-wide).
    circuit: Circuit,
    /// Slots that should hold a hound (the first `target` at start).
    wanted: Vec<bool>,
    /// Slots whose respawn the open circuit holds back.
    held: VecDeque<usize>,
    /// A rotation in progress: (old slot, replacement slot).
    rotating: Option<(usize, usize)>,
    /// Last sample of the container's memory against the high-water mark.
    last_memory_sample: Instant,
    /// CPUs this process may use (`available_parallelism`, which honours quotas and cpusets).
    cores: usize,
    /// Set by `on_exit` when it delivered a `KillCause::Cancelled` job's `Dropped(Cancelled)`.
    cancel_hit: bool,
    /// Per-slot budget of hound-triggered log lines.
    log_budget: Vec<LogBudget>,
    /// First slot `collect_all` looks at (rotates, so no slot is always served first).
    collect_start: usize,
    /// Which resolved S3 endpoint set the hounds have.
    endpoints: crate::cold::Pusher,
    /// When this thread last took a record a caller's thread left to it (too large for the
    /// caller: `state::caller_max_record`).
    last_handover: Option<Instant>,
    /// SIGKILLed hounds that had not exited yet (stuck in the kernel), reaped later.
    unreaped: Vec<reaping::Unreaped>,
}

/// Starts the spawner thread, has it start every initial hound (waiting for all handshakes),
/// then starts the collector. On failure nothing is left running: the spawner stops and every
/// started hound is killed and reaped by its guard.
pub(crate) fn start(
    sh: Arc<Books>,
    binary: PathBuf,
    pool_id: [u8; 16],
) -> Result<(JoinHandle<()>, JoinHandle<()>), PoolError> {
    let n = sh.slots.len();
    let (order_tx, order_rx) = crossbeam_channel::unbounded();
    let (result_tx, result_rx) = crossbeam_channel::unbounded();
    let os = |source| PoolError::Os {
        op: "spawn thread",
        source,
    };
    let sh2 = sh.clone();
    let spawner = std::thread::Builder::new()
        .name("houndpool-spawner".into())
        .spawn(move || spawner_loop(sh2, binary, pool_id, order_rx, result_tx))
        .map_err(os)?;
    let now = Instant::now();
    let target = sh.target.load(Ordering::Relaxed).clamp(1, n);
    for slot in 0..target as u32 {
        let _ = order_tx.send(SpawnOrder {
            slot,
            generation: 1,
            not_before: now,
        });
    }
    let wait = sh.config.start_timeout + Duration::from_secs(5);
    let mut spawned = Vec::with_capacity(target);
    let mut failure = None;
    for _ in 0..target {
        match result_rx.recv_timeout(wait) {
            Ok(Ok(s)) => spawned.push(s),
            Ok(Err((_, _, e))) => {
                failure = Some(e);
                break;
            }
            Err(_) => {
                failure = Some(PoolError::SpawnFailed {
                    slot: spawned.len() as u32,
                    reason: format!("no hound ready within {wait:?}"),
                });
                break;
            }
        }
    }
    if let Some(e) = failure {
        drop(order_tx);
        drop(spawned); // guards kill and reap
        let _ = spawner.join();
        while let Ok(r) = result_rx.try_recv() {
            drop(r);
        }
        return Err(e);
    }
    let mut c = Collector {
        sh: sh.clone(),
        hounds: (0..n).map(|_| None).collect(),
        retry: VecDeque::new(),
        orders: Some(order_tx),
        results: result_rx,
        recent_restarts: vec![VecDeque::new(); n],
        next_generation: vec![1; n],
        buf: Vec::with_capacity(64 * 1024),
        ctrl_buf: vec![0; MAX_CONTROL_DATAGRAM + 1],
        blocked: false,
        next_deadline: None,
        finishing: false,
        circuit: Circuit::new(
            sh.config.restart_intensity.max_restarts,
            sh.config.restart_intensity.within,
            sh.config.circuit_cooldown,
        ),
        wanted: (0..n).map(|i| i < target).collect(),
        held: VecDeque::new(),
        rotating: None,
        last_memory_sample: Instant::now(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cancel_hit: false,
        log_budget: vec![LogBudget::new(); n],
        collect_start: 0,
        endpoints: crate::cold::Pusher::default(),
        last_handover: None,
        unreaped: Vec::new(),
    };
    for s in spawned {
        c.install(s);
    }
    let collector = std::thread::Builder::new()
        .name("houndpool-collector".into())
        .spawn(move || c.run())
        .map_err(os)?;
    Ok((collector, spawner))
}

impl Collector {
    fn run(mut self) {
        let mut last_work = Instant::now();
        let mut last_housekeeping = Instant::now();
        loop {
            let mut work = self.collect_all();
            work |= self.install_spawned();
            work |= self.place_pending();
            work |= self.serve_cancels();
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.housekeeping();
                last_housekeeping = Instant::now();
            }
            if self.sh.is_draining() && self.drain_done() {
                self.finish();
                return;
            }
            if work {
                last_work = Instant::now();
                continue;
            }
            // A caller's thread consuming completions itself needs no collector spinning next
            // to it (three threads on fewer cores): sleep at once.
            let spin = self.sh.config.collector_spin;
            let handing_over = self.last_handover.is_some_and(|t| t.elapsed() < spin);
            if last_work.elapsed() < spin
                && !self.cores_busy()
                && (handing_over || !self.sh.caller_consuming())
            {
                std::thread::yield_now();
                continue;
            }
            self.sleep();
            // Completions first, then the watchdog: a hound may have published completions
            // without ringing (batched doorbells) and then stopped, and a job whose completion
            // is in the ring must not be charged with a timeout.
            self.collect_all();
            self.housekeeping();
            last_housekeeping = Instant::now();
            last_work = Instant::now();
        }
    }

    /// Whether hounds are executing jobs on every core, judged from the states they report
    /// (untrusted, but only a scheduling hint: a lying hound can at worst make the collector
    /// sleep sooner or spin longer). Spinning then would take a core from a hound whose
    /// completion the collector is waiting for, so the collector sleeps at once and the hound
    /// rings its doorbell when it publishes.
    fn cores_busy(&self) -> bool {
        let busy = self
            .hounds
            .iter()
            .flatten()
            .filter(|h| h.watch.status().state == HoundState::Busy as u32)
            .count();
        busy >= self.cores
    }

    /// Announce sleep on every completion ring and the pool's doorbell, re-check, then poll.
    ///
    /// While a caller's thread consumes completions itself (`Pool::recv_outcomes`, its lease
    /// in `Books`), hounds are not asked to ring: the caller takes their completions, and a
    /// doorbell would only wake this thread for nothing. It then sleeps at most
    /// [`CALLER_LEASE`] at a time and looks again; a caller that stops consuming to block on
    /// the channel ends its lease and wakes it (`Books::end_caller_lease`).
    fn sleep(&mut self) {
        self.sh.collector_sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let caller = self.sh.caller_consuming();
        if !caller {
            for h in self.hounds.iter().flatten() {
                h.watch.announce_sleep();
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let pending = (!caller
            && self
                .hounds
                .iter()
                .flatten()
                .any(|h| !matches!(h.watch.has_pending(), Ok(false))))
            || self.handovers()
            || !self.results.is_empty()
            || self.sh.cancels.pending()
            || (!self.blocked && (!self.retry.is_empty() || self.defer_len() > 0));
        if !pending {
            let mut timeout = IDLE_SLEEP;
            if let Some(d) = self.next_deadline {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            if self.sh.is_draining() {
                timeout = timeout.min(Duration::from_millis(5));
            }
            if caller {
                timeout = timeout.min(CALLER_LEASE);
            }
            let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = Vec::with_capacity(1 + 2 * self.hounds.len());
            fds.push(PollFd::new(self.sh.wake.as_fd(), PollFlags::POLLIN));
            for h in self.hounds.iter().flatten() {
                fds.push(PollFd::new(h.completion_bell.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(h.control.as_fd(), PollFlags::POLLIN));
            }
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        }
        self.sh.collector_sleeping.store(false, Ordering::SeqCst);
        self.sh.wake.drain();
        let mut hung_up = Vec::new();
        for (i, h) in self.hounds.iter().enumerate() {
            let Some(h) = h else {
                continue;
            };
            h.watch.cancel_sleep();
            // Our own non-blocking end: returns at once whatever the hound did to its end.
            if h.completion_bell.drain().hung_up {
                hung_up.push(i);
            }
        }
        self.blocked = false;
        // A hound that closed its doorbell's write end would make every later poll return at
        // once (a busy collector); like a closed control socket, it means the hound is done.
        for i in hung_up {
            debug!(slot = i, "hound closed its completion doorbell; reaping it");
            self.kill_and_reap(i, None);
        }
    }

    fn defer_len(&self) -> usize {
        self.sh
            .defer
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()).len())
            .unwrap_or(0)
    }

    /// Consumes completions from every live hound.
    fn collect_all(&mut self) -> bool {
        let mut work = false;
        let n = self.hounds.len();
        self.collect_start = (self.collect_start + 1) % n.max(1);
        for k in 0..n {
            let i = (self.collect_start + k) % n;
            if self.hounds[i].is_none() {
                continue;
            }
            let sh = self.sh.clone();
            let mut guard = match sh.slots[i].consumer.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                // A caller's thread is consuming this ring right now.
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            let Some(c) = guard.as_mut() else {
                continue;
            };
            // A violation a caller's thread found: acted on here (kill, settle). It stays set
            // until the kill takes the consumer, so nobody consumes from this ring meanwhile.
            let mut violation = c.violation.clone();
            if std::mem::take(&mut c.handed_over) {
                // A caller left a large record to this thread: more may follow at once, so
                // spin for them as without a caller (see `run`).
                self.last_handover = Some(Instant::now());
            }
            let mut head = [0u8; COMPLETION_HEADER_LEN];
            let mut batch = completion::Batch::default();
            for _ in 0..COLLECT_BUDGET {
                if violation.is_some() {
                    break;
                }
                if sh.payloads.active() {
                    // The length decides the buffer, so the record copied must be the one
                    // measured: an empty look ends the pass (a record published after it is
                    // taken on the next one).
                    match c.reader.next_len() {
                        Ok(None) => break,
                        Ok(Some(len)) => self.reuse_payload_buffer(&sh, len),
                        // `pop_split_deferred` reports it (the same validation).
                        Err(_) => {}
                    }
                }
                match c.reader.pop_split_deferred(&mut head, &mut self.buf) {
                    Ok(Some(len)) => {
                        work = true;
                        self.blocked = false;
                        let head = &head[..len.min(COMPLETION_HEADER_LEN)];
                        if let Err(v) =
                            handle_completion(&sh, i, &c.reader, head, &mut self.buf, &mut batch)
                        {
                            violation = Some(v);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        violation = Some(completion::Violation::Malformed(e.to_string()));
                    }
                }
            }
            batch.finish(&mut c.reader);
            if violation.is_some() && c.violation.is_none() {
                // Found here: the same rule (nobody consumes until the kill).
                c.violation.clone_from(&violation);
            }
            // The kill takes the consumer lock again (settling).
            drop(guard);
            if let Some(v) = violation {
                self.violation(i, v);
                work = true;
            }
        }
        work
    }

    /// Before a completion of `len` bytes (untrusted: it only picks the buffer, the copy
    /// validates it again) is copied out, once the embedder gives payload buffers back
    /// ([`crate::recycle`]): if the scratch buffer is too small for it (it went out with the
    /// last payload), a recycled one takes its place instead of a new allocation.
    fn reuse_payload_buffer(&mut self, sh: &Books, len: usize) {
        if self.buf.capacity() < len {
            if let Some(b) = sh.payloads.take_for(len) {
                self.buf = b;
            }
        }
    }

    /// Whether a caller's thread left work for this thread: a violation to act on, or a record
    /// too large for the caller (`handed_over`). Checked by `sleep` after `collector_sleeping`
    /// is set, so a record handed over while this thread was awake is taken before it sleeps:
    /// the caller rings the bell only if it sees this thread asleep, and drops its lease only
    /// after the hand-over, so `sleep` could otherwise find the lease still running, ask no
    /// hound to ring, and sleep out the lease with the record waiting (the 256 KiB row's slow
    /// mode). A lock held right now counts as no: the caller holding it loads
    /// `collector_sleeping` (SeqCst) after it releases the lock and rings.
    fn handovers(&self) -> bool {
        self.sh.slots.iter().any(|s| {
            s.consumer.try_lock().is_ok_and(|c| {
                c.as_ref()
                    .is_some_and(|c| c.violation.is_some() || c.handed_over)
            })
        })
    }

    /// Places retries (oldest first), then deferred jobs, into rings with room.
    fn place_pending(&mut self) -> bool {
        if self.sh.space_freed.swap(false, Ordering::AcqRel) {
            // A caller's thread consumed completions: ring space may have freed.
            self.blocked = false;
        }
        if self.blocked {
            return false;
        }
        let mut work = false;
        while let Some(p) = self.retry.front() {
            let from = JobState::Retrying {
                history: p.meta.history,
            };
            if self.sh.try_place(&[&p.bytes], p.meta, from) {
                self.retry.pop_front();
                work = true;
            } else {
                self.blocked = true;
                break;
            }
        }
        self.sh.retrying.store(self.retry.len(), Ordering::Relaxed);
        if !self.retry.is_empty() {
            return work;
        }
        if let Some(defer) = &self.sh.defer {
            // Place under the queue's lock and pop only what was placed. Lock order is defer →
            // slot here; `submit` never holds a slot lock while taking the defer lock.
            let mut q = defer.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(p) = q.front() {
                let from = JobState::Deferred {
                    lane: p.meta.severity,
                };
                if self.sh.try_place(&[&p.bytes], p.meta, from) {
                    q.pop();
                    work = true;
                } else {
                    self.blocked = true;
                    break;
                }
            }
        }
        work
    }

    /// Control sockets (Fatal messages, hang-ups), the watchdog, and stats mirrors.
    fn housekeeping(&mut self) {
        self.circuit_tick();
        self.reap_stuck();
        if !self.finishing && !self.sh.is_draining() {
            self.rotation_tick();
            if self.last_memory_sample.elapsed() >= MEMORY_SAMPLE {
                self.last_memory_sample = Instant::now();
                self.high_water_tick();
            }
            self.retire_tick();
        }
        let hounds = self.hounds.iter().flatten().map(|h| &h.control);
        self.endpoints.push(&self.sh.config, hounds);
        // Control sockets: a readable socket carries a message or an EOF.
        let mut readable = Vec::new();
        {
            let mut fds = Vec::with_capacity(self.hounds.len());
            let mut idx = Vec::with_capacity(self.hounds.len());
            for (i, h) in self.hounds.iter().enumerate() {
                if let Some(h) = h {
                    fds.push(PollFd::new(h.control.as_fd(), PollFlags::POLLIN));
                    idx.push(i);
                }
            }
            if !fds.is_empty() && nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0 {
                for (fd, i) in fds.iter().zip(idx) {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        readable.push(i);
                    }
                }
            }
        }
        for i in readable {
            self.read_control(i);
        }
        // Watchdog.
        let now = Instant::now();
        let timeout = self.sh.config.job_timeout;
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        let mut overstayed = Vec::new();
        for (i, h) in self.hounds.iter().enumerate() {
            let Some(h) = h else {
                continue;
            };
            if let Some(by) = h.exit_by {
                if now >= by {
                    overstayed.push(i);
                    continue;
                }
                next = Some(next.map_or(by, |n: Instant| n.min(by)));
            }
            let slot = &self.sh.slots[i];
            let st = h.watch.status();
            slot.reported_state.store(st.state, Ordering::Relaxed);
            slot.heartbeat.store(st.heartbeat, Ordering::Relaxed);
            let guard = slot.lock();
            let Some(conn) = guard.as_ref() else {
                continue;
            };
            let Some(front) = conn.front() else {
                continue;
            };
            let deadline = conn.front_since() + timeout;
            if now >= deadline {
                // The job charged is the one at the front now, under the slot lock.
                expired.push((i, front.job_id));
            } else {
                next = Some(next.map_or(deadline, |n: Instant| n.min(deadline)));
            }
        }
        self.next_deadline = next;
        for (i, job_id) in expired {
            self.sh.counters.watchdog_kills.inc();
            warn!(
                slot = i,
                job = job_id,
                ?timeout,
                "hound made no progress before the deadline; killing it"
            );
            self.kill_and_reap(i, Some(KillCause::Watchdog { job_id }));
        }
        for i in overstayed {
            self.sh.counters.retire_kills.inc();
            warn!(
                slot = i,
                grace = ?self.sh.config.retire_grace,
                "hound did not exit within the grace after Shutdown or Fatal; killing it"
            );
            self.kill_and_reap(i, Some(KillCause::ExitDeadline));
        }
    }
}
