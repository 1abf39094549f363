//! `chaos`: a stream of jobs while hounds are killed (SIGKILL) and stopped (SIGSTOP, resumed
//! after the job deadline) at a fixed rate; afterwards every accepted job must have exactly one
//! outcome, the stats identity must hold, and no hound may be left behind.
//!
//! Three threads: this one submits (backing off when the defer queue refuses — refusals are
//! not acceptances, so they are not violations), one collects outcomes, one injects faults.
//! Tickets and outcomes are reconciled by [`Ledger`] after the pool has shut down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use houndpool::synth::EvidenceGenerator;
use houndpool::{
    Job, Outcome, OutcomeKind, Pool, PoolConfig, PoolExhaustedAction, Severity, SubmitError,
};
use nix::sys::signal::Signal;

use crate::ledger::Ledger;
use crate::report::ChaosResult;
use crate::util::{
    fault_injection_config, leftover_hounds, signal_child, Ctx, Result, StressError,
};

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
        std::thread::Builder::new()
            .name("chaos-outcomes".into())
            .spawn(move || collect(rx, &all_sent, opts.jobs as usize))
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
    let submitted = submit_all(ctx, &pool, opts, &mut ledger);

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
    let (ids, seen) = match collector.join() {
        Ok(r) => r,
        Err(_) => {
            violations.push("the outcome thread panicked".into());
            (Vec::new(), Seen::default())
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

/// Bodies the stream cycles through: Noop echoes of several sizes and small evidence to encode.
struct Bodies {
    noop: Vec<Vec<u8>>,
    evidence: Vec<Vec<u8>>,
}

impl Bodies {
    fn new() -> Self {
        let mut g = EvidenceGenerator::new(0xc4a0_5eed);
        Bodies {
            noop: [64usize, 256, 1024, 4096]
                .iter()
                .map(|&n| vec![0xc3; n])
                .collect(),
            evidence: (0..8).map(|i| g.request(512 + 256 * i)).collect(),
        }
    }

    /// Job `i` of the stream: one in ten encodes evidence, severities rotate.
    fn job(&self, i: u64) -> Job<'_> {
        let sev = [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][(i % 4) as usize];
        let j = if i.is_multiple_of(10) {
            Job::encode(&self.evidence[(i / 10) as usize % self.evidence.len()])
        } else {
            Job::noop(&self.noop[(i % 7) as usize % self.noop.len()])
        };
        j.with_severity(sev)
    }
}

/// Submits until `opts.jobs` were accepted, pacing to `opts.min_duration`.
fn submit_all(ctx: &Ctx, pool: &Pool, opts: ChaosOpts, ledger: &mut Ledger) -> Result<()> {
    let bodies = Bodies::new();
    let bar = ctx.bar(opts.jobs, "chaos");
    let start = Instant::now();
    let mut last_accept = Instant::now();
    let stall = Duration::from_secs(60);
    for i in 0..opts.jobs {
        // Pacing: job i is not submitted before i/jobs of the minimum duration has passed.
        let due = opts
            .min_duration
            .mul_f64(i as f64 / opts.jobs.max(1) as f64);
        let ahead = due.saturating_sub(start.elapsed());
        if ahead > Duration::from_millis(1) {
            std::thread::sleep(ahead);
        }
        let job = bodies.job(i);
        loop {
            match pool.submit(&job) {
                Ok(t) => {
                    ledger.accepted(t.job_id.0);
                    last_accept = Instant::now();
                    break;
                }
                Err(SubmitError::DeferQueueFull { .. }) | Err(SubmitError::PoolExhausted) => {
                    if last_accept.elapsed() > stall {
                        bar.abandon();
                        return Err(StressError::Unexpected(format!(
                            "the pool accepted nothing for {stall:?} ({i} jobs accepted)"
                        )));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e.into());
                }
            }
        }
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Receives outcomes until the pool has shut down and the channel is empty.
fn collect(rx: Receiver<Outcome>, all_sent: &AtomicBool, capacity: usize) -> (Vec<u64>, Seen) {
    let mut ids = Vec::with_capacity(capacity);
    let mut seen = Seen::default();
    let mut take = |o: Outcome, ids: &mut Vec<u64>| {
        ids.push(o.job_id.0);
        match o.result {
            OutcomeKind::Completed(_) => seen.completed += 1,
            OutcomeKind::Failed(_) => seen.failed += 1,
            OutcomeKind::TimedOut => seen.timed_out += 1,
            OutcomeKind::Dropped(_) => seen.dropped += 1,
            // `OutcomeKind` is non-exhaustive: a kind added later counts as a failure.
            _ => seen.failed += 1,
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(o) => take(o, &mut ids),
            Err(RecvTimeoutError::Timeout) => {
                // Once the pool has shut down every outcome is in the channel already.
                if all_sent.load(Ordering::Acquire) {
                    while let Ok(o) = rx.try_recv() {
                        take(o, &mut ids);
                    }
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    (ids, seen)
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
        let b = Bodies::new();
        let jobs: Vec<Job<'_>> = (0..40).map(|i| b.job(i)).collect();
        let encodes = jobs
            .iter()
            .filter(|j| j.kind == houndpool::JobKind::Encode)
            .count();
        assert_eq!(encodes, 4);
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
        tx.send(outcome(2, OutcomeKind::Completed(Default::default())))
            .unwrap();
        tx.send(outcome(
            3,
            OutcomeKind::Dropped(houndpool::DropReason::Shutdown),
        ))
        .unwrap();
        flag.store(true, Ordering::Release);
        let (ids, seen) = collect(rx, &flag, 3);
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
