//! The `shm` and `shm-single` rows: the real pool (one hound) carrying `Noop` jobs, and the
//! idle figure measured on it afterwards.

use std::time::{Duration, Instant};

use houndpool::{Job, Outcome, OutcomeKind, Pool, PoolConfig, PoolExhaustedAction, SubmitError};

use super::{time_each, Row, Samples, OUTCOME_TIMEOUT, SIZES, WINDOW};
use crate::report::{IdleResult, Transport};
use crate::util::{
    bench_config, cpu_time, expect_completed, next_outcome, Ctx, Result, StressError,
};

/// The shm pool's configuration (its ring sizes are the `ring` row's too). `spin` overrides
/// the busy-wait of the hound, the collector and the thread waiting for outcomes.
pub(super) fn config(spin: Option<Duration>) -> PoolConfig {
    let max = *SIZES.iter().max().unwrap_or(&(256 * 1024));
    let defaults = bench_config(1);
    PoolConfig {
        max_evidence_bytes: max,
        max_output_bytes: max,
        exhausted: PoolExhaustedAction::Drop,
        hound_spin: spin.unwrap_or(defaults.hound_spin),
        collector_spin: spin.unwrap_or(defaults.collector_spin),
        ..defaults
    }
}

/// The pool both shm rows use.
pub(super) struct Rig {
    pool: Pool,
    /// How long the thread waiting for outcomes busy-waits (as long as the pool's threads do).
    outcome_spin: Duration,
}

impl Rig {
    /// Builds the pool of one hound.
    pub(super) fn start(config: PoolConfig) -> Result<Self> {
        let outcome_spin = config.collector_spin;
        let pool = Pool::builder().config(config).build()?;
        Ok(Self { pool, outcome_spin })
    }

    /// The `shm` row.
    pub(super) fn batched(&self) -> Batched<'_> {
        Batched {
            pool: &self.pool,
            results: Vec::with_capacity(WINDOW),
            outcomes: Vec::with_capacity(WINDOW),
        }
    }

    /// The `shm-single` row.
    pub(super) fn single(&self) -> Result<Single<'_>> {
        let rx = self
            .pool
            .outcomes()
            .ok_or_else(|| StressError::Unexpected("outcome channel disabled".into()))?;
        Ok(Single {
            pool: &self.pool,
            rx,
            spin: self.outcome_spin,
        })
    }

    /// The idle cost: lets the spinners give up, measures the hound's and this process's CPU
    /// time over a quiet interval, then shuts the pool down.
    pub(super) fn idle_and_stop(self, ctx: &Ctx) -> IdleResult {
        let pid = self.pool.stats().hounds.first().and_then(|h| h.pid);
        std::thread::sleep(Duration::from_millis(300));
        let seconds = ctx.pick(1.0, 3.0);
        let h0 = pid.and_then(|p| cpu_time(Some(p)));
        let s0 = cpu_time(None);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let elapsed = t0.elapsed().as_secs_f64();
        let h1 = pid.and_then(|p| cpu_time(Some(p)));
        let s1 = cpu_time(None);
        let pct = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() / elapsed * 100.0,
            _ => f64::NAN,
        };
        self.pool.shutdown(Duration::from_secs(5));
        IdleResult {
            hound_cpu_percent: pct(h0, h1),
            host_cpu_percent: pct(s0, s1),
            seconds: elapsed,
        }
    }
}

fn check_echo(o: &Outcome, size: usize) -> Result<()> {
    expect_completed(o)?;
    match &o.result {
        OutcomeKind::Completed(r) if r.payload.as_ref().map(Vec::len) == Some(size) => Ok(()),
        _ => Err(StressError::Unexpected(format!(
            "{}: echo of the wrong length",
            o.job_id
        ))),
    }
}

/// The `shm` row: the window refilled with one `submit_batch` after every take of outcomes,
/// outcomes taken with `recv_outcomes`; the round trip is a batch of one.
pub(super) struct Batched<'p> {
    pool: &'p Pool,
    results: Vec<std::result::Result<houndpool::Ticket, SubmitError>>,
    outcomes: Vec<Outcome>,
}

impl Batched<'_> {
    /// Takes at least one outcome, and everything else that is waiting, up to [`WINDOW`]: one
    /// `recv_outcomes`, which consumes the completion rings on this thread and spins (the
    /// pool's `collector_spin`, which `--spin-us` sets) before it blocks.
    fn take_outcomes(&mut self, size: usize) -> Result<usize> {
        self.outcomes.clear();
        if self
            .pool
            .recv_outcomes(&mut self.outcomes, WINDOW, OUTCOME_TIMEOUT)
            == 0
        {
            return Err(StressError::Unexpected(format!(
                "no outcome within {OUTCOME_TIMEOUT:?} (pool stalled?)"
            )));
        }
        let n = self.outcomes.len();
        for o in self.outcomes.drain(..) {
            check_echo(&o, size)?;
            self.pool.recycle(o);
        }
        Ok(n)
    }
}

impl Row for Batched<'_> {
    fn transport(&self) -> Transport {
        Transport::Shm
    }

    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration> {
        let jobs = vec![Job::noop(body); WINDOW];
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        // What the rings are believed to have room for: after a refusal, only as many as
        // outcomes freed since (a caller that backs off when told the pool is exhausted; at
        // 256 KiB the rings hold 3 jobs, and offering the whole window each time would spend
        // the time on refusals).
        let mut room = WINDOW;
        while done < n {
            let outstanding = sent - done;
            let k = (n - sent)
                .min(WINDOW - outstanding)
                .min(room.max(usize::from(outstanding == 0)));
            if k > 0 {
                self.pool.submit_batch(&jobs[..k], &mut self.results);
                let mut refused = false;
                for r in self.results.drain(..) {
                    match r {
                        Ok(_) => sent += 1,
                        // Rings full: the outcomes below make room.
                        Err(SubmitError::PoolExhausted) if sent > done => refused = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                room = if refused { 0 } else { room.saturating_sub(k) };
            }
            let taken = self.take_outcomes(body.len())?;
            done += taken;
            room += taken;
        }
        Ok(start.elapsed())
    }

    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
        let job = [Job::noop(body)];
        time_each(n, hist, || {
            self.pool.submit_batch(&job, &mut self.results);
            if let Some(Err(e)) = self.results.pop() {
                return Err(e.into());
            }
            self.take_outcomes(body.len()).map(drop)
        })
    }
}

/// The `shm-single` row: one `submit` per job, outcomes from the per-outcome channel.
pub(super) struct Single<'p> {
    pool: &'p Pool,
    rx: houndpool::Receiver<Outcome>,
    spin: Duration,
}

impl Row for Single<'_> {
    fn transport(&self) -> Transport {
        Transport::ShmSingle
    }

    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration> {
        let size = body.len();
        let job = Job::noop(body);
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        while done < n {
            while sent < n && sent - done < WINDOW {
                match self.pool.submit(&job) {
                    Ok(_) => sent += 1,
                    Err(SubmitError::PoolExhausted) if sent > done => break,
                    Err(e) => return Err(e.into()),
                }
            }
            // Take every outcome that is there, then refill the window in one go.
            let o = next_outcome(&self.rx, self.spin, OUTCOME_TIMEOUT)?;
            check_echo(&o, size)?;
            self.pool.recycle(o);
            done += 1;
            while let Ok(o) = self.rx.try_recv() {
                check_echo(&o, size)?;
                self.pool.recycle(o);
                done += 1;
            }
        }
        Ok(start.elapsed())
    }

    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
        let job = Job::noop(body);
        time_each(n, hist, || {
            self.pool.submit(&job)?;
            let o = next_outcome(&self.rx, self.spin, OUTCOME_TIMEOUT)?;
            check_echo(&o, body.len())?;
            self.pool.recycle(o);
            Ok(())
        })
    }
}
