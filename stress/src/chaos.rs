//! `chaos`: a stream of jobs while hounds are killed (SIGKILL) and stopped (SIGSTOP, resumed
//! after the job deadline) at a fixed rate; afterwards every accepted job must have exactly one
//! outcome, every completed echo must be its own job's body, the stats identity must hold, and
//! no hound may be left behind.
//!
//! Three threads: this one submits (backing off when the defer queue refuses — refusals are
//! not acceptances, so they are not violations), one collects outcomes, one injects faults.
//! Tickets and outcomes are reconciled by [`Ledger`] after the pool has shut down.
//!
//! Both ways in and both ways out are used, so faults meet every path a job can take:
//! blocks of [`BLOCK`] jobs alternate between one `submit_batch` and one `submit` per job,
//! and the collecting thread alternates, every [`PHASE`], between `recv_outcomes` (its own
//! thread consumes the completion rings) and the outcome channel alone (the pool's collector
//! consumes them). Every completed outcome is given back with `Pool::recycle`, so payloads
//! above 4 KiB come in recycled buffers; [`echo`] checks each one byte for byte.

mod echo;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use houndpool::synth::EvidenceGenerator;
use houndpool::{
    Job, JobKind, Outcome, OutcomeKind, Pool, PoolConfig, PoolExhaustedAction, Severity,
    SubmitError, Ticket,
};
use nix::sys::signal::Signal;

use crate::ledger::Ledger;
use crate::report::ChaosResult;
use crate::util::{
    fault_injection_config, leftover_hounds, signal_child, Ctx, Result, StressError,
};

/// Jobs per block; blocks alternate between `submit_batch` and `submit`.
const BLOCK: u64 = 32;
/// How long the collecting thread keeps to one way of taking outcomes before it switches.
const PHASE: Duration = Duration::from_millis(40);
/// Most outcomes one `recv_outcomes` call takes.
const TAKE: usize = 256;

/// Settings of a chaos run.
#[derive(Debug, Clone, Copy)]
pub struct ChaosOpts {
    /// Jobs to get accepted.
    pub jobs: u64,
    /// One fault (kill or stop) every this many milliseconds.
    pub kill_every: Duration,
    /// Hounds in the pool.
    pub hounds: usize,
    /// Spread the jobs over at least this long (so that even a short run sees many faults).
    pub min_duration: Duration,
    /// The watchdog deadline of the chaos pool.
    pub job_timeout: Duration,
}

/// The outcome of a chaos run: the report's numbers and every violation found.
#[derive(Debug)]
pub struct ChaosRun {
    /// Numbers for the report.
    pub result: ChaosResult,
    /// Human-readable violations; empty means the run passed.
    pub violations: Vec<String>,
}

/// Per-kind outcome counts seen by the collecting thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    completed: u64,
    failed: u64,
    timed_out: u64,
    dropped: u64,
}

/// What the fault injector did.
#[derive(Debug, Default)]
struct Faults {
    kills: u64,
    stops: u64,
    pids: Vec<u32>,
    identity_breaks: Vec<String>,
}

/// Runs the scenario. Errors are reserved for failures to run at all; accounting problems are
/// returned as violations.
pub fn run(ctx: &Ctx, opts: ChaosOpts) -> Result<ChaosRun> {
    let pool = Arc::new(
        Pool::builder()
            .config(PoolConfig {
                exhausted: PoolExhaustedAction::Defer { limit: 8192 },
                job_timeout: opts.job_timeout,
                outcome_capacity: Some(1 << 18),
                ..fault_injection_config(opts.hounds)
            })
            .build()?,
    );
    let rx = pool
        .outcomes()
        .ok_or_else(|| StressError::Unexpected("outcome channel disabled".into()))?;
    let mut violations = Vec::new();

    let all_sent = Arc::new(AtomicBool::new(false));
    let collector = {
        let all_sent = all_sent.clone();
        let pool = pool.clone();
        std::thread::Builder::new()
            .name("chaos-outcomes".into())
            .spawn(move || collect(Some(&pool), rx, &all_sent, opts.jobs as usize))
            .map_err(StressError::io("spawn outcome thread"))?
    };
    let stop_faults = Arc::new(AtomicBool::new(false));
    let injector = {
        let pool = pool.clone();
        let stop = stop_faults.clone();
        std::thread::Builder::new()
            .name("chaos-faults".into())
            .spawn(move || inject(&pool, &stop, opts))
            .map_err(StressError::io("spawn fault thread"))?
    };

    let mut ledger = Ledger::with_capacity(opts.jobs as usize);
    let mut sent = Vec::with_capacity(opts.jobs as usize);
    let submitted = submit_all(ctx, &pool, opts, &mut ledger, &mut sent);

    stop_faults.store(true, Ordering::Release);
    let faults = match injector.join() {
        Ok(f) => f,
        Err(_) => {
            violations.push("the fault-injection thread panicked".into());
            Faults::default()
        }
    };
    let stats = pool.shutdown(Duration::from_secs(60));
    all_sent.store(true, Ordering::Release);
    let (ids, seen, echoes) = match collector.join() {
        Ok(r) => r,
        Err(_) => {
            violations.push("the outcome thread panicked".into());
            (Vec::new(), Seen::default(), echo::Echoes::default())
        }
    };
    if let Err(e) = submitted {
        violations.push(format!("submitting stopped: {e}"));
    }
    violations.extend(faults.identity_breaks.iter().cloned());

    ledger.extend_outcomes(ids);
    let verdict = ledger.reconcile();
    if !verdict.is_clean() {
        violations.push(format!("accounting: {}", verdict.describe()));
    }
    violations.extend(
        echoes
            .reconcile(sent)
            .into_iter()
            .map(|v| format!("echoes: {v}")),
    );
    // The pool's own books must agree with what this process saw.
    if !stats.identity_holds() || stats.in_flight != 0 {
        violations.push(format!(
            "stats after shutdown: accepted {} != completed {} + failed {} + timed out {} + \
             dropped {} (in flight {})",
            stats.accepted,
            stats.completed,
            stats.failed,
            stats.timed_out,
            stats.dropped,
            stats.in_flight
        ));
    }
    let queued = stats.in_rings + stats.deferred + stats.retrying;
    if queued != 0 {
        violations.push(format!(
            "after shutdown {} jobs in rings, {} deferred, {} retrying",
            stats.in_rings, stats.deferred, stats.retrying
        ));
    }
    if stats.accepted != verdict.accepted {
        violations.push(format!(
            "pool counted {} accepted jobs, submit returned {} tickets",
            stats.accepted, verdict.accepted
        ));
    }
    let pool_seen = Seen {
        completed: stats.completed,
        failed: stats.failed,
        timed_out: stats.timed_out,
        dropped: stats.dropped,
    };
    if pool_seen != seen {
        violations.push(format!(
            "outcomes by kind: pool counted {pool_seen:?}, this process received {seen:?}"
        ));
    }
    if stats.undelivered != 0 {
        violations.push(format!("{} outcomes undelivered", stats.undelivered));
    }
    drop(pool);
    let left = leftover_hounds(&faults.pids);
    if !left.is_empty() {
        // Say whether they go away by themselves (late reaping) or stay.
        std::thread::sleep(Duration::from_millis(500));
        let still = leftover_hounds(&faults.pids);
        violations.push(format!(
            "processes left behind after shutdown: {} ({} still there 500 ms later)",
            left.iter()
                .map(|(pid, state, cmd)| {
                    let seen = if faults.pids.contains(pid) {
                        "hound"
                    } else {
                        "child"
                    };
                    format!("{pid} ({state}, {seen}) {cmd}")
                })
                .collect::<Vec<_>>()
                .join("; "),
            still.len()
        ));
    }

    Ok(ChaosRun {
        result: ChaosResult {
            accepted: verdict.accepted,
            completed: seen.completed,
            failed: seen.failed,
            timed_out: seen.timed_out,
            dropped: seen.dropped,
            lost: verdict.lost,
            duplicates: verdict.reported_duplicates(),
            kills: faults.kills,
            stops: faults.stops,
        },
        violations,
    })
}

/// Whether job `i` of the stream encodes evidence (one in ten) rather than echoing.
fn is_encode(i: u64) -> bool {
    i.is_multiple_of(10)
}

/// What the stream's jobs carry: small evidence to encode, and the echo bodies of the block
/// being submitted ([`echo::body`], one buffer per position, reused from block to block).
struct Bodies {
    evidence: Vec<Vec<u8>>,
    echoes: Vec<Vec<u8>>,
}

impl Bodies {
    fn new() -> Self {
        let mut g = EvidenceGenerator::new(0xc4a0_5eed);
        Bodies {
            evidence: (0..8).map(|i| g.request(512 + 256 * i)).collect(),
            echoes: (0..BLOCK).map(|_| Vec::new()).collect(),
        }
    }

    /// Writes the echo bodies of the block starting at job `first`.
    fn fill_block(&mut self, first: u64) {
        for (i, buf) in (first..).zip(&mut self.echoes) {
            echo::body(i, buf);
        }
    }

    /// Job `i` of the block starting at `first` (filled by [`Self::fill_block`]): one in ten
    /// encodes evidence, severities rotate.
    fn job(&self, first: u64, i: u64) -> Job<'_> {
        let sev = [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][(i % 4) as usize];
        let j = if is_encode(i) {
            Job::encode(&self.evidence[(i / 10) as usize % self.evidence.len()])
        } else {
            Job::noop(&self.echoes[(i - first) as usize])
        };
        j.with_severity(sev)
    }
}

/// Submits until `opts.jobs` were accepted, pacing to `opts.min_duration`, block by block
/// (even blocks with one `submit_batch`, odd ones one `submit` per job). Records every ticket
/// in `ledger`, and (job id, stream index) of every accepted Noop in `sent`.
fn submit_all(
    ctx: &Ctx,
    pool: &Pool,
    opts: ChaosOpts,
    ledger: &mut Ledger,
    sent: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let mut bodies = Bodies::new();
    let bar = ctx.bar(opts.jobs, "chaos");
    let start = Instant::now();
    let mut last_accept = Instant::now();
    let stall = Duration::from_secs(60);
    let mut results: Vec<std::result::Result<Ticket, SubmitError>> = Vec::new();
    let mut pending: Vec<u64> = Vec::with_capacity(BLOCK as usize);
    let mut refused: Vec<u64> = Vec::with_capacity(BLOCK as usize);
    for first in (0..opts.jobs).step_by(BLOCK as usize) {
        // Pacing: job i is not submitted before i/jobs of the minimum duration has passed.
        let due = opts
            .min_duration
            .mul_f64(first as f64 / opts.jobs.max(1) as f64);
        let ahead = due.saturating_sub(start.elapsed());
        if ahead > Duration::from_millis(1) {
            std::thread::sleep(ahead);
        }
        let batched = (first / BLOCK).is_multiple_of(2);
        bodies.fill_block(first);
        pending.clear();
        pending.extend(first..(first + BLOCK).min(opts.jobs));
        while !pending.is_empty() {
            let jobs: Vec<Job<'_>> = pending.iter().map(|&i| bodies.job(first, i)).collect();
            if batched {
                pool.submit_batch(&jobs, &mut results);
            } else {
                // One at a time, stopping at the first refusal (the rest wait with it).
                results.clear();
                for job in &jobs {
                    let r = pool.submit(job);
                    let stop = r.is_err();
                    results.push(r);
                    if stop {
                        break;
                    }
                }
            }
            refused.clear();
            let mut tried = results.drain(..);
            for &i in &pending {
                match tried.next() {
                    Some(Ok(t)) => {
                        ledger.accepted(t.job_id.0);
                        if !is_encode(i) {
                            sent.push((t.job_id.0, i));
                        }
                        last_accept = Instant::now();
                    }
                    Some(Err(SubmitError::DeferQueueFull { .. } | SubmitError::PoolExhausted))
                    | None => refused.push(i),
                    Some(Err(e)) => {
                        bar.abandon();
                        return Err(e.into());
                    }
                }
            }
            drop(tried);
            std::mem::swap(&mut pending, &mut refused);
            if !pending.is_empty() {
                if last_accept.elapsed() > stall {
                    bar.abandon();
                    return Err(StressError::Unexpected(format!(
                        "the pool accepted nothing for {stall:?} ({} jobs accepted)",
                        ledger.accepted_count()
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if (first / BLOCK).is_multiple_of(32) {
            bar.set_position(first);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Receives outcomes until the pool has shut down and the channel is empty, alternating every
/// [`PHASE`] between `recv_outcomes` and the channel alone. Checks every completed echo and
/// gives every outcome back to the pool. Without a pool (unit tests), the channel alone.
fn collect(
    pool: Option<&Pool>,
    rx: Receiver<Outcome>,
    all_sent: &AtomicBool,
    capacity: usize,
) -> (Vec<u64>, Seen, echo::Echoes) {
    let mut ids = Vec::with_capacity(capacity);
    let mut seen = Seen::default();
    let mut echoes = echo::Echoes::default();
    let mut take = |o: Outcome, ids: &mut Vec<u64>| {
        ids.push(o.job_id.0);
        match &o.result {
            OutcomeKind::Completed(r) => {
                seen.completed += 1;
                if o.kind == JobKind::Noop {
                    echoes.record(o.job_id.0, r.payload.as_deref());
                }
            }
            OutcomeKind::Failed(_) => seen.failed += 1,
            OutcomeKind::TimedOut => seen.timed_out += 1,
            OutcomeKind::Dropped(_) => seen.dropped += 1,
            // `OutcomeKind` is non-exhaustive: a kind added later counts as a failure.
            _ => seen.failed += 1,
        }
        if let Some(pool) = pool {
            pool.recycle(o);
        }
    };
    let start = Instant::now();
    let mut buf = Vec::with_capacity(TAKE);
    let wait = Duration::from_millis(20);
    loop {
        let on_rings = (start.elapsed().as_millis() / PHASE.as_millis()).is_multiple_of(2);
        let got = if let (Some(pool), true) = (pool, on_rings) {
            pool.recv_outcomes(&mut buf, TAKE, wait);
            let n = buf.len();
            for o in buf.drain(..) {
                take(o, &mut ids);
            }
            n > 0
        } else {
            match rx.recv_timeout(wait) {
                Ok(o) => {
                    take(o, &mut ids);
                    true
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        // Once the pool has shut down every outcome is in the channel already.
        if !got && all_sent.load(Ordering::Acquire) {
            while let Ok(o) = rx.try_recv() {
                take(o, &mut ids);
            }
            break;
        }
    }
    (ids, seen, echoes)
}

/// Kills or stops a random hound every `opts.kill_every` until told to stop; resumes every
/// stopped hound once its deadline has passed (and all of them at the end). Also checks the
/// stats identity on every snapshot it takes.
fn inject(pool: &Pool, stop: &AtomicBool, opts: ChaosOpts) -> Faults {
    let mut f = Faults::default();
    let mut rng = fastrand::Rng::with_seed(0xdead_beef);
    let mut stopped: Vec<(u32, Instant)> = Vec::new();
    let resume_after = opts.job_timeout + Duration::from_millis(50);
    let mut next = Instant::now() + opts.kill_every;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        stopped.retain(|&(pid, due)| {
            if now >= due {
                signal_child(pid, Signal::SIGCONT);
                false
            } else {
                true
            }
        });
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(5)));
            continue;
        }
        next += opts.kill_every;
        let stats = pool.stats();
        if !stats.identity_holds() && f.identity_breaks.len() < 8 {
            f.identity_breaks.push(format!(
                "stats identity broken during the run: accepted {} vs completed {} + failed {} \
                 + timed out {} + dropped {} + in flight {}",
                stats.accepted,
                stats.completed,
                stats.failed,
                stats.timed_out,
                stats.dropped,
                stats.in_flight
            ));
        }
        for h in &stats.hounds {
            if let Some(p) = h.pid {
                if !f.pids.contains(&p) {
                    f.pids.push(p);
                }
            }
        }
        let live: Vec<u32> = stats.hounds.iter().filter_map(|h| h.pid).collect();
        if live.is_empty() {
            continue;
        }
        let pid = live[rng.usize(..live.len())];
        if rng.u8(..4) == 0 {
            if !stopped.iter().any(|&(p, _)| p == pid) && signal_child(pid, Signal::SIGSTOP) {
                f.stops += 1;
                stopped.push((pid, Instant::now() + resume_after));
            }
        } else if signal_child(pid, Signal::SIGKILL) {
            f.kills += 1;
        }
    }
    for (pid, _) in stopped {
        signal_child(pid, Signal::SIGCONT);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_mixes_kinds_and_severities() {
        let mut b = Bodies::new();
        b.fill_block(32);
        let jobs: Vec<Job<'_>> = (32..64).map(|i| b.job(32, i)).collect();
        let encodes = jobs
            .iter()
            .filter(|j| j.kind == houndpool::JobKind::Encode)
            .count();
        assert_eq!(encodes, 3, "jobs 40, 50 and 60");
        for (i, j) in (32..).zip(&jobs) {
            if j.kind == houndpool::JobKind::Noop {
                assert_eq!(
                    echo::read(j.body),
                    Ok(i),
                    "job {i} carries its own echo body"
                );
            }
        }
        assert!(jobs.iter().any(|j| j.severity == Severity::Critical));
        assert!(jobs.iter().any(|j| j.severity == Severity::Low));
        assert!(jobs.iter().all(|j| !j.body.is_empty()));
    }

    #[test]
    fn collect_drains_everything_sent_before_the_flag() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let flag = AtomicBool::new(false);
        let outcome = |id: u64, result: OutcomeKind| Outcome {
            job_id: houndpool::JobId(id),
            evidence_id: Default::default(),
            kind: houndpool::JobKind::Noop,
            severity: Severity::Low,
            attempts: 1,
            latency: Duration::ZERO,
            result,
        };
        tx.send(outcome(1, OutcomeKind::TimedOut)).unwrap();
        let mut done = houndpool::Receipt::default();
        let mut body = Vec::new();
        echo::body(7, &mut body);
        done.payload = Some(body);
        tx.send(outcome(2, OutcomeKind::Completed(done))).unwrap();
        tx.send(outcome(
            3,
            OutcomeKind::Dropped(houndpool::DropReason::Shutdown),
        ))
        .unwrap();
        flag.store(true, Ordering::Release);
        let (ids, seen, echoes) = collect(None, rx, &flag, 3);
        assert_eq!(echoes.named, [(2, 7)]);
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            seen,
            Seen {
                completed: 1,
                failed: 0,
                timed_out: 1,
                dropped: 1
            }
        );
    }
}
