//! The collector thread: the only consumer of completion rings and the owner of every hound
//! process. Everything a hound writes is validated here; a hound that writes something
//! impossible is killed (`ProtocolViolation`), never trusted and never the cause of a panic.
//!
//! Job state machine (each accepted job is in exactly one place; every arrow that leaves the
//! diagram delivers exactly one outcome):
//! ```text
//! submit ──► ring of hound H ──completion──► Completed / Failed(Job)
//!   │            │ H died (crash)      ──► retry queue ──► ring of hound H' (once)
//!   │            │ H died again        ──► Failed(Poison)
//!   │            │ watchdog killed H   ──► TimedOut (front job) / retry queue (others)
//!   │            │ H killed by SIGSYS  ──► Failed(HoundKilled) (front job)
//!   │            │ H out of memory     ──► Failed(OutOfMemory) (front job)
//!   │            │ H violated protocol ──► Failed(ProtocolViolation) (front job)
//!   └► defer queue ──► ring (when space frees)   └─ evicted ──► Dropped(Evicted)
//! shutdown grace over: anything not finished ──► Dropped(Shutdown)
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use houndpool_protocol::envelope;
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, JobKind, COMPLETION_FLAG_SPOOLED,
    COMPLETION_HEADER_LEN, MAX_FAIL_MESSAGE,
};
use houndpool_protocol::messages::{Message, Shutdown};
use houndpool_protocol::region::{CompletionReader, HoundState};
use houndpool_protocol::wake::BellListener;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use tracing::{debug, info, warn};

use crate::cgroups::Placed;
use crate::circuit::{Circuit, Transition};
use crate::job::{DropReason, FailReason, HoundDeath, OutcomeKind, Receipt};
use crate::pool::{Pending, Shared, SlotConn, DRAINING, STOPPED};
use crate::spawn::{handshake, prestart, spawn_hound, ChildGuard, Prestarted, Spawned};
use crate::PoolError;

// Pool::cancel, the collector's half.
mod cancelling;

/// Completions consumed from one hound before looking at the others (a hound can only
/// complete jobs it holds, so this also bounds to `max_in_flight_per_hound`).
const COLLECT_BUDGET: usize = 256;
/// Control datagrams read from one hound per housekeeping pass: the only legitimate one after
/// `Ready` is a single `Fatal`, so a hound flooding its socket costs a few `recv` per pass.
const CONTROL_BUDGET: usize = 4;
/// Longest hound-supplied text (a `Fatal` message) kept and logged, in bytes.
const HOUND_TEXT_MAX: usize = 512;
/// Per-slot log budget for hound-triggered lines (Fatal text, violations): burst, then one
/// line per `HOUND_LOG_REFILL`. Lines over budget are counted in `hound_log_suppressed`.
const HOUND_LOG_BURST: u32 = 10;
const HOUND_LOG_REFILL: Duration = Duration::from_secs(1);
/// Period of housekeeping (control sockets, watchdog, stats mirrors) while busy.
const HOUSEKEEPING: Duration = Duration::from_millis(2);
/// Longest sleep of an idle collector.
const IDLE_SLEEP: Duration = Duration::from_millis(100);
/// Period of the container memory sample (high-water mark).
const MEMORY_SAMPLE: Duration = Duration::from_millis(250);

/// `x` with ±10 % uniform jitter.
fn jitter(x: f64) -> f64 {
    x * (0.9 + 0.2 * fastrand::f64())
}

/// Why the supervisor killed a hound.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KillCause {
    /// The job `job_id` was at the front of the ring when its deadline passed. Only that job
    /// is charged with `TimedOut` (if it completed meanwhile, nobody is).
    Watchdog {
        job_id: u64,
    },
    Violation(String),
    Shutdown,
    /// `Pool::cancel` of this job, at the head of the hound's ring.
    Cancelled(u64),
    /// Asked to exit (retirement `Shutdown`) or announced its end (`Fatal`), and still alive
    /// `retire_grace` later. Its jobs are settled as after a crash.
    ExitDeadline,
}

/// `text` cut to at most [`HOUND_TEXT_MAX`] bytes (on a char boundary) with control
/// characters escaped, so hound-supplied text can neither flood nor forge log lines.
pub(crate) fn hound_text(text: &str) -> String {
    let mut end = text.len().min(HOUND_TEXT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end].chars().flat_map(char::escape_debug).collect();
    if end < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

/// A token bucket for hound-triggered log lines of one slot.
#[derive(Debug, Clone)]
struct LogBudget {
    tokens: u32,
    last_refill: Instant,
}

impl LogBudget {
    fn new() -> Self {
        LogBudget {
            tokens: HOUND_LOG_BURST,
            last_refill: Instant::now(),
        }
    }

    /// Whether one more line may be logged now (takes a token).
    fn take(&mut self) -> bool {
        let refills = self.last_refill.elapsed().as_nanos() / HOUND_LOG_REFILL.as_nanos();
        if refills > 0 {
            let add = u32::try_from(refills).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(HOUND_LOG_BURST);
            self.last_refill = Instant::now();
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What a hound's death means for one job it held (pure; see `Collector::on_exit`).
#[derive(Debug, Clone, PartialEq)]
enum Settle {
    /// The job ends with this outcome.
    Outcome(OutcomeKind),
    /// The job dies with the hound a second time: `Failed(Poison)`.
    Poison,
    /// The job goes to another hound; `charged`: this death counts against it.
    Retry { charged: bool },
}

/// Settles job `job_id` (`front`: at the front of the ring; `deaths`: deaths it was already
/// charged with) after its hound died with `death`, killed for `cause` if the supervisor
/// killed it.
fn settle(
    cause: Option<&KillCause>,
    front: bool,
    job_id: u64,
    deaths: u8,
    out_of_memory: bool,
    death: HoundDeath,
) -> Settle {
    match (cause, front) {
        (Some(KillCause::Shutdown), _) => {
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Shutdown))
        }
        // `Pool::cancel` killed the hound for this job; its other jobs are retried uncharged.
        (Some(KillCause::Cancelled(id)), _) if *id == job_id => {
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Cancelled))
        }
        // Only the job that was at the front when the deadline passed: if it completed between
        // the check and the kill, the job now at the front did not time out.
        (Some(KillCause::Watchdog { job_id: late }), true) if *late == job_id => {
            Settle::Outcome(OutcomeKind::TimedOut)
        }
        (Some(KillCause::Watchdog { .. }), _) => Settle::Retry { charged: false },
        (Some(KillCause::Violation(d)), true) => {
            Settle::Outcome(OutcomeKind::Failed(FailReason::ProtocolViolation {
                detail: d.clone(),
            }))
        }
        (None | Some(KillCause::ExitDeadline), true) if out_of_memory => {
            Settle::Outcome(OutcomeKind::Failed(FailReason::OutOfMemory))
        }
        (None | Some(KillCause::ExitDeadline), true) => match death {
            HoundDeath::Signaled(sig) if sig == libc::SIGSYS => {
                Settle::Outcome(OutcomeKind::Failed(FailReason::HoundKilled { signal: sig }))
            }
            _ if deaths.saturating_add(1) >= 2 => Settle::Poison,
            _ => Settle::Retry { charged: true },
        },
        _ => Settle::Retry { charged: false },
    }
}

/// A request to (re)fill a slot.
struct SpawnOrder {
    slot: u32,
    generation: u64,
    not_before: Instant,
}

type SpawnResult = Result<Spawned, (u32, u64, PoolError)>;

/// The collector's view of a live hound.
struct HoundProc {
    child: ChildGuard,
    pid: u32,
    generation: u64,
    control: OwnedFd,
    reader: CompletionReader,
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
    sh: Arc<Shared>,
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
}

/// Starts the spawner thread, has it start every initial hound (waiting for all handshakes),
/// then starts the collector. On failure nothing is left running: the spawner stops and every
/// started hound is killed and reaped by its guard.
pub(crate) fn start(
    sh: Arc<Shared>,
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
        ctrl_buf: vec![0; 64 * 1024 + 64],
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

/// How long a prestarted spare may wait for its slot before it is replaced by a fresh one
/// (well below the hound's own `Hello` wait, [`houndpool_hound::HELLO_TIMEOUT`]).
const SPARE_MAX_AGE: Duration = Duration::from_secs(600);

fn spawner_loop(
    sh: Arc<Shared>,
    binary: PathBuf,
    pool_id: [u8; 16],
    orders: Receiver<SpawnOrder>,
    results: Sender<SpawnResult>,
) {
    let mut due: Vec<SpawnOrder> = Vec::new();
    // One hound started and placed ahead of demand (see `spawn::Prestarted`).
    let mut spare: Option<Prestarted> = None;
    let mut spare_seq: u64 = 0;
    // Set when starting a spare failed: no new attempt until the next order, so a machine that
    // cannot start hounds does not make the spawner fork-loop (orders carry the back-off).
    let mut spare_failed = false;
    loop {
        due.sort_by_key(|o| o.not_before);
        let mut wait = due
            .first()
            .map(|o| o.not_before.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        // Start a spare whenever nothing is due right now.
        if sh.config.prestart && !spare_failed && !wait.is_zero() {
            if spare
                .as_ref()
                .is_some_and(|p| p.started().elapsed() > SPARE_MAX_AGE)
            {
                sh.spare_pid.store(0, Ordering::Relaxed);
                spare = None; // killed, reaped, cgroup removed
            }
            if spare.is_none() && sh.state.load(Ordering::Acquire) == crate::pool::RUNNING {
                spare_seq += 1;
                let name = format!("spare-{spare_seq}");
                let span = tracing::debug_span!("hound_prestart", spare = spare_seq);
                let _e = span.enter();
                let manager = sh.cgroups.manager.lock().unwrap_or_else(|p| p.into_inner());
                match prestart(
                    &sh.config,
                    &binary,
                    u32::MAX,
                    &name,
                    manager.as_ref(),
                    &sh.cgroups.layer,
                ) {
                    Ok(p) => {
                        sh.spare_pid.store(p.pid(), Ordering::Relaxed);
                        spare = Some(p);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot start a spare hound; spawning on demand");
                        spare_failed = true;
                    }
                }
                continue; // the spare took time: look at the orders again
            }
            wait = wait.min(SPARE_MAX_AGE);
        }
        if due.is_empty() || !wait.is_zero() {
            match orders.recv_timeout(wait) {
                Ok(o) => {
                    due.push(o);
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    sh.spare_pid.store(0, Ordering::Relaxed);
                    return; // the spare, if any, is killed and reaped as it drops
                }
            }
        }
        if due.first().is_none_or(|o| o.not_before > Instant::now()) {
            continue;
        }
        let o = due.remove(0);
        spare_failed = false;
        let span = tracing::info_span!("hound_spawn", slot = o.slot, generation = o.generation);
        let _e = span.enter();
        let r = {
            let mut r = None;
            if let Some(p) = spare.take() {
                sh.spare_pid.store(0, Ordering::Relaxed);
                match handshake(p, &sh.config, pool_id, o.slot, o.generation) {
                    Ok(s) => r = Some(Ok(s)),
                    // A spare that died or misbehaved while waiting is not the slot's failure:
                    // fall through to a fresh spawn.
                    Err(e) => {
                        warn!(error = %e, "the spare hound failed its handshake; spawning anew")
                    }
                }
            }
            r.unwrap_or_else(|| {
                let manager = sh.cgroups.manager.lock().unwrap_or_else(|p| p.into_inner());
                spawn_hound(
                    &sh.config,
                    &binary,
                    pool_id,
                    o.slot,
                    o.generation,
                    manager.as_ref(),
                    &sh.cgroups.layer,
                )
            })
            .map_err(|e| (o.slot, o.generation, e))
        };
        // A result the collector no longer takes is dropped here, and the ChildGuard inside a
        // Spawned kills and reaps its process.
        if results.send(r).is_err() {
            sh.spare_pid.store(0, Ordering::Relaxed);
            return;
        }
        let _ = sh.wake.ring();
    }
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
            if self.sh.state.load(Ordering::Acquire) == DRAINING && self.drain_done() {
                self.finish();
                return;
            }
            if work {
                last_work = Instant::now();
                continue;
            }
            if last_work.elapsed() < self.sh.config.collector_spin && !self.cores_busy() {
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
            .filter(|h| h.reader.status().state == HoundState::Busy as u32)
            .count();
        busy >= self.cores
    }

    /// Announce sleep on every completion ring and the pool's doorbell, re-check, then poll.
    fn sleep(&mut self) {
        self.sh.collector_sleeping.store(true, Ordering::SeqCst);
        for h in self.hounds.iter().flatten() {
            h.reader.announce_sleep();
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let pending = self
            .hounds
            .iter()
            .flatten()
            .any(|h| !matches!(h.reader.has_pending(), Ok(false)))
            || !self.results.is_empty()
            || self.sh.cancels.pending()
            || (!self.blocked && (!self.retry.is_empty() || self.defer_len() > 0));
        if !pending {
            let mut timeout = IDLE_SLEEP;
            if let Some(d) = self.next_deadline {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            if self.sh.state.load(Ordering::Acquire) == DRAINING {
                timeout = timeout.min(Duration::from_millis(5));
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
            h.reader.cancel_sleep();
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
            let Some(h) = self.hounds[i].as_mut() else {
                continue;
            };
            let mut violation = None;
            let mut head = [0u8; COMPLETION_HEADER_LEN];
            for _ in 0..COLLECT_BUDGET {
                match h.reader.pop_split(&mut head, &mut self.buf) {
                    Ok(Some(len)) => {
                        work = true;
                        self.blocked = false;
                        let head = &head[..len.min(COMPLETION_HEADER_LEN)];
                        if let Err(v) = handle_completion(&self.sh, i, h, head, &mut self.buf) {
                            violation = Some(v);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        violation = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(v) = violation {
                self.violation(i, v);
                work = true;
            }
        }
        work
    }

    fn violation(&mut self, i: usize, detail: String) {
        self.sh.counters.protocol_violations.inc();
        let detail = hound_text(&detail);
        if self.log_budget[i].take() {
            warn!(slot = i, %detail, "hound violated the protocol; killing it");
        } else {
            self.sh.counters.hound_log_suppressed.inc();
        }
        self.kill_and_reap(i, Some(KillCause::Violation(detail)));
    }

    fn install_spawned(&mut self) -> bool {
        let mut work = false;
        while let Ok(r) = self.results.try_recv() {
            work = true;
            match r {
                Ok(s) => {
                    if self.finishing {
                        drop(s); // killed and reaped by its guard
                    } else {
                        self.install(s);
                    }
                }
                Err((slot, generation, error)) => {
                    self.sh.counters.spawn_failures.inc();
                    warn!(slot, generation, %error, "hound failed to start; will retry");
                    self.note_restart(slot as usize, false);
                    self.schedule_respawn(slot as usize);
                }
            }
        }
        work
    }

    fn install(&mut self, s: Spawned) {
        let i = s.slot as usize;
        let pid = s.child.id();
        let slot = &self.sh.slots[i];
        *slot.lock() = Some(SlotConn {
            writer: s.writer,
            bell: s.request_bell,
            inflight: VecDeque::with_capacity(self.sh.config.max_in_flight_per_hound),
            front_since: Instant::now(),
        });
        slot.in_flight.store(0, Ordering::Relaxed);
        slot.pid.store(pid, Ordering::Relaxed);
        slot.generation.store(s.generation, Ordering::Relaxed);
        self.next_generation[i] = self.next_generation[i].max(s.generation);
        info!(
            slot = i,
            pid,
            generation = s.generation,
            spawn_us = s.spawn_time.as_micros() as u64,
            "hound ready"
        );
        *self
            .sh
            .sandbox_report
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(s.ready.sandbox);
        self.hounds[i] =
            Some(HoundProc {
                child: s.child,
                pid,
                generation: s.generation,
                control: s.control,
                reader: s.reader,
                completion_bell: s.completion_bell,
                kill_cause: None,
                fatal: None,
                exit_by: None,
                started: Instant::now(),
                placed: s.placed,
                retiring: false,
                shutdown_sent: false,
                rotate_after_completed: self.sh.config.rotation.after_jobs.map(|n| {
                    slot.completed.load(Ordering::Relaxed) + jitter(n as f64).max(1.0) as u64
                }),
                rotate_at: self
                    .sh
                    .config
                    .rotation
                    .after
                    .map(|d| Instant::now() + Duration::from_secs_f64(jitter(d.as_secs_f64()))),
            });
        self.circuit.hound_started(i, Instant::now());
        if !self.wanted[i] {
            // The slot stopped being wanted while this hound was starting (target lowered).
            self.retire(i);
            return;
        }
        self.sh.counters.hound_spawns.inc();
        self.blocked = false;
        slot.accepting.store(true, Ordering::Release);
    }

    fn schedule_respawn(&mut self, i: usize) {
        if self.finishing || !self.wanted[i] {
            return;
        }
        if !self.circuit.allows_respawn(i) {
            if !self.held.contains(&i) {
                self.held.push_back(i);
            }
            return;
        }
        let Some(orders) = &self.orders else {
            return;
        };
        let now = Instant::now();
        let recent = &mut self.recent_restarts[i];
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            recent.pop_front();
        }
        recent.push_back(now);
        // Immediate for the first few restarts of a slot in a second, then exponential with
        // jitter, capped at 5 s, so a crash loop never turns into a fork loop.
        let delay = if recent.len() <= 3 {
            Duration::ZERO
        } else {
            let exp = (recent.len() - 4).min(9) as u32;
            let base = Duration::from_millis(10) * 2u32.pow(exp);
            let base = base.min(Duration::from_secs(5));
            base + base.mul_f64(fastrand::f64() * 0.25)
        };
        self.next_generation[i] += 1;
        let _ = orders.send(SpawnOrder {
            slot: i as u32,
            generation: self.next_generation[i],
            not_before: now + delay,
        });
    }

    /// Counts a restart (an unexpected hound exit when `died`, else a failed spawn) against the
    /// restart intensity; opens the circuit when it is exceeded.
    fn note_restart(&mut self, i: usize, died: bool) {
        if died {
            self.sh.counters.restarts.inc();
        }
        if self.circuit.record_restart(i, Instant::now()) == Transition::Opened {
            self.sh.counters.circuit_opens.inc();
            let ri = self.sh.config.restart_intensity;
            warn!(
                slot = i,
                max_restarts = ri.max_restarts,
                within = ?ri.within,
                cooldown = ?self.sh.config.circuit_cooldown,
                "restart intensity exceeded: circuit open, pool degraded, respawns held"
            );
        }
        self.publish_circuit();
    }

    /// Time-driven circuit transitions: the probe after the cool-down, refilling on close.
    fn circuit_tick(&mut self) {
        match self.circuit.tick(Instant::now()) {
            Transition::HalfOpened => match self.held.pop_front() {
                Some(i) => {
                    self.circuit.set_probe(i);
                    info!(slot = i, "circuit half-open: starting a probe hound");
                    self.schedule_respawn(i);
                }
                None => {
                    self.circuit.close();
                    info!("circuit closed (no slot waiting)");
                }
            },
            Transition::Closed => {
                info!(
                    refill = self.held.len(),
                    "circuit closed: the probe hound is up; refilling held slots"
                );
                let held: Vec<usize> = self.held.drain(..).collect();
                for i in held {
                    self.schedule_respawn(i);
                }
            }
            Transition::Opened | Transition::None => {}
        }
        self.publish_circuit();
    }

    /// Rotation: a hound past its (jittered) job count or age gets a replacement in a free
    /// slot first; once that one accepts jobs, the old one is retired. One at a time.
    fn rotation_tick(&mut self) {
        if let Some((old, new)) = self.rotating {
            if self.hounds[new].is_some() {
                self.rotating = None;
                if self.hounds[old].as_ref().is_some_and(|h| !h.retiring) {
                    self.sh.counters.rotations.inc();
                    info!(
                        slot = old,
                        replacement = new,
                        "rotating hound: replacement ready"
                    );
                    self.retire(old);
                }
            } else if !self.wanted[new] {
                self.rotating = None;
            }
            return;
        }
        if self.circuit.state() != crate::circuit::CircuitState::Closed {
            return;
        }
        let now = Instant::now();
        let due = self.hounds.iter().enumerate().find_map(|(i, h)| {
            let h = h.as_ref()?;
            let done = self.sh.slots[i].completed.load(Ordering::Relaxed);
            let by_jobs = h.rotate_after_completed.is_some_and(|n| done >= n);
            let by_age = h.rotate_at.is_some_and(|t| now >= t);
            (!h.retiring && self.wanted[i] && (by_jobs || by_age)).then_some(i)
        });
        let Some(old) = due else {
            return;
        };
        let Some(new) = self.free_slot() else {
            return;
        };
        self.wanted[new] = true;
        self.rotating = Some((old, new));
        debug!(
            slot = old,
            replacement = new,
            "rotation due: starting the replacement"
        );
        self.schedule_respawn(new);
    }

    /// A slot that should hold no hound and holds none (and is not awaiting a spawn).
    fn free_slot(&self) -> Option<usize> {
        (0..self.hounds.len()).find(|&j| {
            !self.wanted[j] && self.hounds[j].is_none() && self.rotating.is_none_or(|r| r.1 != j)
        })
    }

    /// Marks hound `i` retiring: no new jobs; stopped by `retire_tick` once its ring is empty.
    fn retire(&mut self, i: usize) {
        self.wanted[i] = false;
        self.sh.slots[i].accepting.store(false, Ordering::Release);
        if let Some(h) = self.hounds[i].as_mut() {
            h.retiring = true;
        }
    }

    /// Sends `Shutdown` to retiring hounds whose rings are empty (their exit is then seen as a
    /// control-socket hang-up and reaped as expected).
    fn retire_tick(&mut self) {
        let mut frame = Vec::new();
        for (i, h) in self.hounds.iter_mut().enumerate() {
            let Some(h) = h.as_mut() else {
                continue;
            };
            if !h.retiring || h.shutdown_sent {
                continue;
            }
            if self.sh.slots[i].in_flight.load(Ordering::Relaxed) > 0 {
                continue;
            }
            if frame.is_empty()
                && Message::Shutdown(Shutdown { grace_ms: 1000 })
                    .encode_frame(&mut frame)
                    .is_err()
            {
                return;
            }
            // MSG_DONTWAIT: a hound that stopped reading its socket cannot block us; if the
            // frame does not go out, the grace below still ends the hound.
            let _ = send(
                h.control.as_raw_fd(),
                &frame,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
            h.shutdown_sent = true;
            let by = Instant::now() + self.sh.config.retire_grace;
            h.exit_by = Some(h.exit_by.map_or(by, |t| t.min(by)));
            debug!(slot = i, pid = h.pid, "retired hound asked to stop");
        }
    }

    /// The high-water mark: above it, retire the largest hound and lower the target (not below
    /// the minimum); below mark − hysteresis, raise the target again (not above the computed
    /// size). One step per sample, and none while a retirement is still in progress.
    fn high_water_tick(&mut self) {
        let sh = self.sh.clone();
        let Some(limits) = sh.cgroups.limits.as_ref() else {
            return;
        };
        let (Some(limit), Some(usage)) = (
            limits.effective_memory_limit(),
            houndpool_shared::cgroup::memory_working_set(limits),
        ) else {
            return;
        };
        let mark = sh.high_water_mark();
        let high = limit as f64 * mark;
        let low = limit as f64 * (mark - sh.config.high_water_hysteresis).max(0.0);
        let target = sh.target.load(Ordering::Relaxed);
        let retiring = self.hounds.iter().flatten().any(|h| h.retiring);
        if usage as f64 > high && target > sh.min_size() && !retiring {
            // The largest hound by its cgroup's usage; any if unknown.
            let victim = self
                .hounds
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let h = h.as_ref()?;
                    (self.wanted[i] && !h.retiring).then(|| {
                        let mem = h.placed.as_ref().and_then(|p| p.cgroup.memory_usage());
                        (i, mem.unwrap_or(0))
                    })
                })
                .max_by_key(|&(_, m)| m);
            let Some((i, mem)) = victim else {
                return;
            };
            sh.target.store(target - 1, Ordering::Relaxed);
            sh.counters.high_water_retirements.inc();
            warn!(
                usage,
                limit,
                mark,
                slot = i,
                hound_memory = mem,
                target = target - 1,
                "memory above the high-water mark: retiring the largest hound"
            );
            self.retire(i);
        } else if (usage as f64) < low && target < sh.sizing.size.min(self.hounds.len()) {
            let Some(j) = self.free_slot() else {
                return;
            };
            sh.target.store(target + 1, Ordering::Relaxed);
            info!(
                usage,
                limit,
                mark,
                slot = j,
                target = target + 1,
                "memory below the high-water mark: growing the pool"
            );
            self.wanted[j] = true;
            self.schedule_respawn(j);
        }
    }

    fn publish_circuit(&self) {
        self.sh
            .circuit
            .store(self.circuit.state().to_u8(), Ordering::Relaxed);
    }

    /// Places retries (oldest first), then deferred jobs, into rings with room.
    fn place_pending(&mut self) -> bool {
        if self.blocked {
            return false;
        }
        let mut work = false;
        while let Some(p) = self.retry.front() {
            if self.sh.try_place(&[&p.bytes], p.meta) {
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
                if self.sh.try_place(&[&p.bytes], p.meta) {
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
        if !self.finishing && self.sh.state.load(Ordering::Acquire) != DRAINING {
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
            let st = h.reader.status();
            slot.reported_state.store(st.state, Ordering::Relaxed);
            slot.heartbeat.store(st.heartbeat, Ordering::Relaxed);
            let guard = slot.lock();
            let Some(conn) = guard.as_ref() else {
                continue;
            };
            if conn.inflight.is_empty() {
                continue;
            }
            let deadline = conn.front_since + timeout;
            if now >= deadline {
                // The job charged is the one at the front now, under the slot lock.
                if let Some(front) = conn.inflight.front() {
                    expired.push((i, front.job_id));
                }
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

    /// Reads at most [`CONTROL_BUDGET`] datagrams from hound `i`'s control socket. After
    /// `Ready` the only message a hound may send is one `Fatal` (its last word, logged once,
    /// truncated); a second `Fatal` or any other message is a protocol violation.
    fn read_control(&mut self, i: usize) {
        for _ in 0..CONTROL_BUDGET {
            let Some(h) = self.hounds[i].as_mut() else {
                return;
            };
            let r = recv(
                h.control.as_raw_fd(),
                &mut self.ctrl_buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            );
            match r {
                Ok(0) | Err(nix::errno::Errno::ECONNRESET) => {
                    // The hound closed its end: it exited, or means to stop talking. Either way
                    // it is finished.
                    self.kill_and_reap(i, None);
                    return;
                }
                Ok(n) if n > self.ctrl_buf.len() => {
                    self.violation(i, format!("control datagram of {n} bytes"));
                    return;
                }
                Ok(n) => match Message::from_datagram(&self.ctrl_buf[..n]) {
                    Ok(Message::Fatal(_)) if h.fatal.is_some() => {
                        self.violation(i, "a second Fatal message".into());
                        return;
                    }
                    Ok(Message::Fatal(f)) => {
                        let message = hound_text(&f.message);
                        if self.log_budget[i].take() {
                            warn!(slot = i, pid = h.pid, %message, "hound reports a fatal error");
                        } else {
                            self.sh.counters.hound_log_suppressed.inc();
                        }
                        h.fatal = Some(message);
                        // Its last word: it must now exit, within the grace.
                        let by = Instant::now() + self.sh.config.retire_grace;
                        h.exit_by = Some(h.exit_by.map_or(by, |t| t.min(by)));
                        let next = self.next_deadline.map_or(by, |n| n.min(by));
                        self.next_deadline = Some(next);
                    }
                    Ok(other) if h.fatal.is_some() => {
                        let kind = other.kind().name();
                        self.violation(i, format!("{kind} message after Fatal"));
                        return;
                    }
                    Ok(other) => {
                        let kind = other.kind().name();
                        self.violation(i, format!("unexpected control message {kind}"));
                        return;
                    }
                    Err(e) => {
                        self.violation(i, format!("malformed control frame: {e}"));
                        return;
                    }
                },
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return,
                Err(e) => {
                    self.violation(i, format!("control socket error: {e}"));
                    return;
                }
            }
        }
    }

    /// SIGKILLs the hound of slot `i` (harmless if it already exited), reaps it, and settles
    /// every job it held.
    fn kill_and_reap(&mut self, i: usize, cause: Option<KillCause>) {
        let slot = &self.sh.slots[i];
        slot.accepting.store(false, Ordering::Release);
        let Some(mut h) = self.hounds[i].take() else {
            return;
        };
        if h.kill_cause.is_none() {
            h.kill_cause = cause;
        }
        let status = match h.child.0.as_mut() {
            Some(child) => {
                let _ = child.kill();
                child.wait().ok()
            }
            None => None,
        };
        h.child.0 = None;
        let death = match status {
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => HoundDeath::Exited(c),
                (_, Some(s)) => HoundDeath::Signaled(s),
                _ => HoundDeath::Exited(-1),
            },
            None => HoundDeath::Exited(-1),
        };
        self.on_exit(i, h, death);
    }

    fn on_exit(&mut self, i: usize, mut h: HoundProc, death: HoundDeath) {
        let sh = self.sh.clone();
        let slot = &sh.slots[i];
        sh.counters.hound_exits.inc();
        crate::cold::sweep_temps(&sh.config, |pid| pid == h.pid);
        // The hound is reaped: read its cgroup's OOM counter now; the cgroup itself is removed
        // after the respawn is ordered (rmdir of a memory cgroup costs milliseconds while the
        // kernel offlines it, and `remove` retries on EBUSY), so it never delays the
        // replacement.
        let cgroup_oom = h.placed.as_ref().is_some_and(Placed::oom_killed);
        let placed = h.placed.take();
        let out_of_memory = h.kill_cause.is_none()
            && (death == HoundDeath::Exited(houndpool_hound::EXIT_OUT_OF_MEMORY)
                || (death == HoundDeath::Signaled(libc::SIGKILL) && cgroup_oom));
        if out_of_memory {
            sh.counters.oom_kills.inc();
            warn!(
                slot = i,
                pid = h.pid,
                %death,
                by = if cgroup_oom { "cgroup OOM killer" } else { "address-space budget" },
                "hound ran out of memory"
            );
        }
        // Completions the hound wrote before dying are real results: take them first, unless
        // the hound was killed for lying.
        if !matches!(h.kill_cause, Some(KillCause::Violation(_))) {
            let mut head = [0u8; COMPLETION_HEADER_LEN];
            while let Ok(Some(len)) = h.reader.pop_split(&mut head, &mut self.buf) {
                let head = &head[..len.min(COMPLETION_HEADER_LEN)];
                if handle_completion(&sh, i, &h, head, &mut self.buf).is_err() {
                    break;
                }
            }
        }
        let conn = slot.lock().take();
        slot.in_flight.store(0, Ordering::Relaxed);
        slot.pid.store(0, Ordering::Relaxed);
        let expected = matches!(
            h.kill_cause,
            Some(KillCause::Shutdown) | Some(KillCause::Cancelled(_))
        )
            || (self.finishing && death == HoundDeath::Exited(0))
            // A retired hound asked to stop: its exit is expected however it ends (the
            // collector may SIGKILL it while it is still exiting after closing its socket).
            || (h.retiring && h.shutdown_sent && h.kill_cause.is_none());
        if !expected && !self.finishing {
            self.note_restart(i, true);
        }
        if expected {
            debug!(slot = i, pid = h.pid, %death, "hound stopped");
        } else {
            warn!(
                slot = i,
                pid = h.pid,
                generation = h.generation,
                %death,
                cause = ?h.kill_cause,
                fatal = h.fatal.as_deref().unwrap_or(""),
                uptime_ms = h.started.elapsed().as_millis() as u64,
                "hound exited"
            );
        }
        if let Some(conn) = conn {
            let mut bytes = Vec::new();
            for (k, mut meta) in conn.inflight.into_iter().enumerate() {
                if meta.cancelled {
                    continue; // its outcome was delivered when it was cancelled
                }
                let settled = settle(
                    h.kill_cause.as_ref(),
                    k == 0,
                    meta.job_id,
                    meta.deaths,
                    out_of_memory,
                    death,
                );
                let verdict = match settled {
                    Settle::Outcome(o) => {
                        if matches!(o, OutcomeKind::Dropped(DropReason::Cancelled)) {
                            self.cancel_hit = true;
                        }
                        Some(o)
                    }
                    Settle::Poison => {
                        meta.deaths = meta.deaths.saturating_add(1);
                        sh.counters.poison.inc();
                        Some(OutcomeKind::Failed(FailReason::Poison {
                            last_death: death,
                        }))
                    }
                    Settle::Retry { charged } => {
                        if charged {
                            meta.deaths = meta.deaths.saturating_add(1);
                        }
                        None
                    }
                };
                if let Some(result) = verdict {
                    sh.deliver(Shared::outcome_for(&meta, meta.tries, result));
                    continue;
                }
                if self.finishing {
                    sh.deliver(Shared::outcome_for(
                        &meta,
                        meta.tries,
                        OutcomeKind::Dropped(DropReason::Shutdown),
                    ));
                    continue;
                }
                // Re-read our own record (the hound could not modify it: read-only mapping).
                match h.reader.read_request(meta.pos.start, &mut bytes) {
                    Ok(_) => {
                        let mut owned = std::mem::take(&mut bytes);
                        // RequestHeader byte 11 is the attempt flag: 0 first try, 1 retry
                        // (the hound refuses any other value).
                        if let Some(a) = owned.get_mut(11) {
                            *a = 1;
                        }
                        meta.tries = meta.tries.saturating_add(1);
                        sh.counters.retries.inc();
                        debug!(job = meta.job_id, slot = i, "job queued for retry");
                        sh.spans.event(meta.job_id, "hound died: queued for retry");
                        self.retry.push_back(Pending { bytes: owned, meta });
                    }
                    Err(e) => sh.deliver(Shared::outcome_for(
                        &meta,
                        meta.tries,
                        OutcomeKind::Failed(FailReason::ProtocolViolation {
                            detail: format!("request record unreadable after hound death: {e}"),
                        }),
                    )),
                }
            }
        }
        sh.retrying.store(self.retry.len(), Ordering::Relaxed);
        self.blocked = false;
        drop(h);
        self.schedule_respawn(i);
        if let Some(p) = placed {
            p.remove();
        }
    }

    fn drain_done(&self) -> bool {
        let deadline = *self
            .sh
            .drain_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        self.retry.is_empty() && self.defer_len() == 0 && self.sh.in_rings() == 0
    }

    /// Ends the pool: drops what is left, stops and reaps every hound.
    fn finish(&mut self) {
        self.finishing = true;
        let sh = self.sh.clone();
        for s in sh.slots.iter() {
            s.accepting.store(false, Ordering::Release);
        }
        // Hounds still holding jobs: the grace period is over.
        for i in 0..self.hounds.len() {
            if self.hounds[i].is_some() && sh.slots[i].in_flight.load(Ordering::Relaxed) > 0 {
                self.kill_and_reap(i, Some(KillCause::Shutdown));
            }
        }
        for p in self.retry.drain(..) {
            sh.deliver(Shared::outcome_for(
                &p.meta,
                p.meta.tries,
                OutcomeKind::Dropped(DropReason::Shutdown),
            ));
        }
        if let Some(defer) = &sh.defer {
            // Closed under the same lock: a `submit` that passed its state check before the
            // drain finds the queue closed and refuses (`ShutDown`) instead of queueing a job
            // nobody would ever settle.
            let left = {
                let mut q = defer.lock().unwrap_or_else(|p| p.into_inner());
                q.close();
                q.drain_all()
            };
            for p in left {
                sh.deliver(Shared::outcome_for(
                    &p.meta,
                    0,
                    OutcomeKind::Dropped(DropReason::Shutdown),
                ));
            }
        }
        sh.retrying.store(0, Ordering::Relaxed);
        // Ask the idle hounds to exit, give them a moment, then make sure.
        let mut frame = Vec::new();
        let _ = Message::Shutdown(Shutdown { grace_ms: 1000 }).encode_frame(&mut frame);
        for h in self.hounds.iter().flatten() {
            let _ = send(
                h.control.as_raw_fd(),
                &frame,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
        }
        let until = Instant::now() + Duration::from_secs(1);
        for i in 0..self.hounds.len() {
            let Some(h) = self.hounds[i].as_mut() else {
                continue;
            };
            let mut exited = false;
            while Instant::now() < until {
                match h.child.0.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(_))) | None => {
                        exited = true;
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            if !exited {
                warn!(slot = i, "hound did not exit after Shutdown; killing it");
            }
            self.kill_and_reap(i, None);
        }
        self.orders = None;
        while let Ok(r) = self.results.try_recv() {
            drop(r);
        }
        sh.state.store(STOPPED, Ordering::Release);
        info!(stats = ?sh.counters.completed.get(), "houndpool stopped");
    }
}

/// Validates one completion (untrusted) against the job at the front of slot `i`'s ring,
/// delivers its outcome and frees its ring space. `Err` means the hound must be killed.
/// Handles one completion: `head` is its header (as many bytes of it as the record had) and
/// `body` the rest, both private copies out of the ring. A payload-carrying receipt takes
/// `body`'s buffer as it is (no second copy); the caller's `body` is then empty.
fn handle_completion(
    sh: &Shared,
    i: usize,
    h: &HoundProc,
    head: &[u8],
    body: &mut Vec<u8>,
) -> Result<(), String> {
    let hdr = CompletionHeader::parse_parts(head, body).map_err(|e| e.to_string())?;
    let slot = &sh.slots[i];
    let (meta, result) = {
        let mut guard = slot.lock();
        let conn = guard
            .as_mut()
            .ok_or_else(|| "completion from a hound whose slot is closed".to_string())?;
        let front = conn
            .inflight
            .front()
            .ok_or_else(|| format!("completion for job {} with no job in flight", hdr.job_id))?;
        if front.job_id != hdr.job_id {
            return Err(format!(
                "completion for job {} but job {} is next",
                hdr.job_id, front.job_id
            ));
        }
        if front.kind != hdr.kind {
            return Err(format!(
                "completion kind {} for a {} job",
                hdr.kind.name(),
                front.kind.name()
            ));
        }
        let result = interpret(sh, i as u32, front, &hdr, body)?;
        let meta = conn
            .inflight
            .pop_front()
            .ok_or_else(|| "in-flight queue emptied under the lock".to_string())?;
        conn.front_since = Instant::now();
        slot.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
        (meta, result)
    };
    h.reader.release_requests(meta.pos.end);
    slot.completed.fetch_add(1, Ordering::Relaxed);
    if meta.cancelled {
        return Ok(()); // withdrawn by Pool::cancel: its outcome was delivered then
    }
    sh.deliver(Shared::outcome_for(&meta, meta.tries, result));
    Ok(())
}

/// Turns a validated completion into an outcome; `Err` if the body is impossible for the job.
fn interpret(
    sh: &Shared,
    hound: u32,
    job: &crate::pool::InFlight,
    hdr: &CompletionHeader,
    body_buf: &mut Vec<u8>,
) -> Result<OutcomeKind, String> {
    let body: &[u8] = body_buf;
    if hdr.flags & COMPLETION_FLAG_SPOOLED != 0 && job.kind != JobKind::Evacuate {
        return Err("spooled flag on a job that stores nothing".into());
    }
    let code = match hdr.status {
        CompletionStatus::Ok => None,
        CompletionStatus::Failed(code) => Some(code),
    };
    if code == Some(houndpool_protocol::job::FailCode::ColdStorageUnavailable)
        || hdr.flags & COMPLETION_FLAG_SPOOLED != 0
    {
        crate::cold::note_unreachable(&sh.config);
    }
    if let Some(code) = code {
        if body.len() > MAX_FAIL_MESSAGE {
            return Err(format!("failure message of {} bytes", body.len()));
        }
        return Ok(OutcomeKind::Failed(FailReason::Job {
            code,
            message: String::from_utf8_lossy(body).into_owned(),
        }));
    }
    let key = || {
        sh.key_prefix.as_deref().map(|p| {
            let key = sh.keys.get(job.job_id);
            houndpool_shared::cold::object_key_for(p, &job.evidence_id, key.as_deref())
        })
    };
    let mut r = Receipt {
        hound,
        ..Receipt::default()
    };
    match job.kind {
        JobKind::Noop => {
            if body.len() != job.body_len as usize {
                return Err(format!(
                    "echo of {} bytes for a {}-byte request",
                    body.len(),
                    job.body_len
                ));
            }
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Encode => {
            let eh = envelope::parse_header(body).map_err(|e| format!("envelope: {e}"))?;
            if eh.original_size != job.body_len {
                return Err(format!(
                    "envelope of {} original bytes for {} bytes of evidence",
                    eh.original_size, job.body_len
                ));
            }
            r.original_size = Some(u64::from(eh.original_size));
            r.compressed_size = Some(u64::from(eh.compressed_size));
            r.sha256 = Some(eh.sha256);
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Evacuate => {
            let rc = EvacuateReceipt::parse(body).map_err(|e| e.to_string())?;
            if rc.evidence_id != job.evidence_id {
                return Err("receipt names another evidence id".into());
            }
            if rc.original_size != job.body_len {
                return Err(format!(
                    "receipt says {} original bytes for {} bytes of evidence",
                    rc.original_size, job.body_len
                ));
            }
            r.key = key();
            r.original_size = Some(u64::from(rc.original_size));
            r.compressed_size = Some(u64::from(rc.compressed_size));
            r.sha256 = Some(rc.sha256);
            r.encode_time = Some(Duration::from_nanos(rc.encode_ns));
            r.store_time = Some(Duration::from_nanos(rc.store_ns));
            r.spooled = hdr.flags & COMPLETION_FLAG_SPOOLED != 0;
        }
        JobKind::Restore | JobKind::Decode => {
            if body.len() > sh.config.max_output_bytes {
                return Err(format!(
                    "decoded output of {} bytes exceeds the limit of {}",
                    body.len(),
                    sh.config.max_output_bytes
                ));
            }
            if job.kind == JobKind::Restore {
                r.key = key();
            }
            r.original_size = Some(body.len() as u64);
            r.payload = Some(std::mem::take(body_buf));
        }
        JobKind::Erase => {
            match body {
                [0] => r.existed = Some(false),
                [1] => r.existed = Some(true),
                _ => return Err("erase completion body is not one 0/1 byte".into()),
            }
            r.key = key();
        }
    }
    Ok(OutcomeKind::Completed(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: HoundDeath = HoundDeath::Signaled(libc::SIGKILL);

    #[test]
    fn a_timeout_is_charged_only_to_the_job_at_the_front_at_the_deadline() {
        let cause = KillCause::Watchdog { job_id: 7 };
        // Job 7 was late and is still at the front: it timed out.
        assert_eq!(
            settle(Some(&cause), true, 7, 0, false, KILL),
            Settle::Outcome(OutcomeKind::TimedOut)
        );
        // Job 7 completed between the check and the kill: job 8, now at the front, did not
        // time out and is not charged with the death either.
        assert_eq!(
            settle(Some(&cause), true, 8, 0, false, KILL),
            Settle::Retry { charged: false }
        );
        assert_eq!(
            settle(Some(&cause), false, 9, 1, false, KILL),
            Settle::Retry { charged: false }
        );
    }

    #[test]
    fn crash_verdicts() {
        // First death at the front: retried, charged; second: poison.
        assert_eq!(
            settle(None, true, 1, 0, false, KILL),
            Settle::Retry { charged: true }
        );
        assert_eq!(settle(None, true, 1, 1, false, KILL), Settle::Poison);
        // Jobs behind the front are retried uncharged.
        assert_eq!(
            settle(None, false, 2, 1, false, KILL),
            Settle::Retry { charged: false }
        );
        // A hound that overstayed its exit grace is settled as a crash.
        assert_eq!(
            settle(Some(&KillCause::ExitDeadline), true, 1, 0, false, KILL),
            Settle::Retry { charged: true }
        );
        assert_eq!(
            settle(None, true, 1, 0, true, KILL),
            Settle::Outcome(OutcomeKind::Failed(FailReason::OutOfMemory))
        );
        assert_eq!(
            settle(None, true, 1, 0, false, HoundDeath::Signaled(libc::SIGSYS)),
            Settle::Outcome(OutcomeKind::Failed(FailReason::HoundKilled {
                signal: libc::SIGSYS
            }))
        );
        assert_eq!(
            settle(Some(&KillCause::Shutdown), false, 3, 0, false, KILL),
            Settle::Outcome(OutcomeKind::Dropped(DropReason::Shutdown))
        );
        let v = KillCause::Violation("x".into());
        assert!(matches!(
            settle(Some(&v), true, 1, 0, false, KILL),
            Settle::Outcome(OutcomeKind::Failed(FailReason::ProtocolViolation { .. }))
        ));
        assert_eq!(
            settle(Some(&v), false, 2, 0, false, KILL),
            Settle::Retry { charged: false }
        );
    }

    #[test]
    fn hound_text_is_bounded_and_escaped() {
        let long = "é".repeat(1000);
        let t = hound_text(&long);
        assert!(t.len() <= HOUND_TEXT_MAX + 32, "{}", t.len());
        assert!(t.ends_with("(2000 bytes)"), "{t}");
        let forged = hound_text("ok\n2026-01-01 INFO forged line\r\u{1b}[31m");
        assert!(!forged.contains('\n') && !forged.contains('\r') && !forged.contains('\u{1b}'));
        assert_eq!(hound_text("short"), "short");
    }

    #[test]
    fn log_budget_allows_a_burst_then_refuses() {
        let mut b = LogBudget::new();
        let allowed = (0..100).filter(|_| b.take()).count();
        assert_eq!(allowed, HOUND_LOG_BURST as usize);
        b.last_refill -= HOUND_LOG_REFILL * 3;
        assert_eq!((0..100).filter(|_| b.take()).count(), 3);
    }
}
