//! `encode`: end-to-end `Encode` and `Evacuate` of the demo generator's evidence through pools
//! of 1..=cores hounds, against in-process `envelope::encode` of the same corpus on one thread
//! in the same run (measured right before and right after each pool measurement, averaged).
//!
//! Pool rates are steady-state: the clock starts once the submit window has filled and the
//! first completions are in, and stops after the measuring interval; jobs still outstanding
//! then are drained but not counted.

use std::time::{Duration, Instant};

use houndpool::synth::EvidenceGenerator;
use houndpool::{ColdConfig, Job, Pool, PoolConfig, PoolExhaustedAction, SubmitError};
use houndpool_protocol::envelope;

use crate::report::{EncodeKind, EncodeResult};
use crate::util::{bench_config, expect_completed, next_outcome, Ctx, Result, StressError};

/// gzip level of every measurement (the pool's default).
const LEVEL: u8 = 6;
/// Items per corpus (cycled).
const CORPUS_ITEMS: usize = 256;
/// Outstanding jobs per hound while streaming Encode jobs (the harness's choice: enough to keep
/// a hound busy between its doorbells).
const PER_HOUND_WINDOW: usize = 16;

/// Outstanding jobs per hound while streaming Evacuate jobs: the pool's own limit,
/// `pool.max_in_flight_per_hound` (64 by default), i.e. what a hound's ring holds when a burst
/// of evidence arrives faster than the pool stores it, which is the case the issue is about.
/// A hound stores what waits in its ring as one batch with one journal sync; with only 16
/// outstanding it had nothing to do after each batch until the caller had consumed the batch's
/// outcomes and submitted again, which measured the harness's round trip as much as the pool.
/// `hound-stress encode --window 16` measures the old way.
fn evacuate_window() -> usize {
    PoolConfig::default().max_in_flight_per_hound
}

/// A named corpus.
struct Corpus {
    name: &'static str,
    items: Vec<Vec<u8>>,
}

/// The fixed-size corpus: `CORPUS_ITEMS` synthetic 4 KiB requests (also the `s3` scenario's).
pub(crate) fn four_k_items() -> Vec<Vec<u8>> {
    let mut g = EvidenceGenerator::new(0x5eed_4b1d);
    (0..CORPUS_ITEMS).map(|_| g.request(4096)).collect()
}

fn corpora() -> Vec<Corpus> {
    let mut g = EvidenceGenerator::new(0x5eed_313d);
    let mixed = (0..CORPUS_ITEMS).map(|_| g.next_mixed().bytes).collect();
    vec![
        Corpus {
            name: "4k",
            items: four_k_items(),
        },
        Corpus {
            name: "mixed",
            items: mixed,
        },
    ]
}

/// Which rows an `encode` run measures (`hound-stress encode --kinds evacuate --corpora 4k
/// --pools 2`, e.g. to profile one row); everything by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Job kinds; both when empty.
    pub kinds: Vec<EncodeKind>,
    /// Corpus names (`4k`, `mixed`); both when empty.
    pub corpora: Vec<String>,
    /// Pool sizes (those within 1..=cores); all of 1..=cores when empty.
    pub pools: Vec<usize>,
    /// Outstanding jobs per hound for every row, instead of [`PER_HOUND_WINDOW`] (Encode) and
    /// [`evacuate_window`] (Evacuate).
    pub window: Option<usize>,
}

/// Runs every (corpus, kind, pool size) combination `filter` admits.
pub fn run(ctx: &Ctx, filter: &Filter) -> Result<Vec<EncodeResult>> {
    let corpora: Vec<Corpus> = corpora()
        .into_iter()
        .filter(|c| filter.corpora.is_empty() || filter.corpora.iter().any(|n| n == c.name))
        .collect();
    let kinds: Vec<EncodeKind> = [EncodeKind::Encode, EncodeKind::Evacuate]
        .into_iter()
        .filter(|k| filter.kinds.is_empty() || filter.kinds.contains(k))
        .collect();
    let sizes: Vec<usize> = (1..=ctx.cores)
        .filter(|n| filter.pools.is_empty() || filter.pools.contains(n))
        .collect();
    let steps = corpora.len() * (1 + kinds.len() * sizes.len());
    let bar = ctx.bar(steps as u64, "encode");
    let mut out = Vec::new();
    // The baseline is measured right before and right after each pool measurement and the two
    // are averaged: this VM's single-core speed drifts by tens of percent within a minute
    // (seen here: 9 500 to 14 000 jobs/s), so one baseline for the whole scenario made the
    // ratio drift with it.
    let baseline_secs = ctx.pick(0.25, 1.5);
    for corpus in &corpora {
        let mut before = inprocess_rate(corpus, baseline_secs)?;
        bar.inc(1);
        for &kind in &kinds {
            for &n in &sizes {
                let (jobs_per_sec, bytes_per_sec) = pool_rate(ctx, kind, corpus, n, filter.window)?;
                let after = inprocess_rate(corpus, baseline_secs)?;
                let inprocess = (before.0 + after.0) / 2.0;
                let inprocess_bytes = (before.1 + after.1) / 2.0;
                before = after;
                out.push(EncodeResult {
                    kind,
                    corpus: corpus.name.to_string(),
                    pool: n,
                    jobs_per_sec,
                    mb_per_sec: bytes_per_sec / 1e6,
                    inprocess_jobs_per_sec: inprocess,
                    // By evidence bytes: equal to the job ratio for the fixed-size corpus,
                    // and not skewed by which sizes of the mixed corpus fell in the interval.
                    efficiency: bytes_per_sec
                        / (n.min(ctx.cores) as f64 * inprocess_bytes).max(1e-9),
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// (jobs/s, evidence bytes/s) of `envelope::encode` over the corpus on this thread for at
/// least `secs` and at least one whole pass over the corpus.
fn inprocess_rate(corpus: &Corpus, secs: f64) -> Result<(f64, f64)> {
    // Let the kernel finish tearing down the previous pool first (namespaces, cgroups, address
    // spaces of killed hounds run in kernel workers for a few hundred ms): measured right after
    // a shutdown this thread ran ~13 % slower than 500 ms later (10 805 vs 12 435 jobs/s).
    std::thread::sleep(Duration::from_millis(500));
    let dur = Duration::from_secs_f64(secs);
    // The same call as the hound's job loop, with a reused output buffer: the baseline is the
    // best this thread can do, not one that pays an allocation per envelope.
    let mut out = Vec::with_capacity(64 * 1024);
    // Warm caches and the allocator, untimed.
    for item in corpus.items.iter().take(16) {
        envelope::encode_into(item, u32::from(LEVEL), &mut out)?;
        std::hint::black_box(&out);
    }
    let start = Instant::now();
    let (mut jobs, mut bytes) = (0u64, 0u64);
    'outer: loop {
        for item in &corpus.items {
            envelope::encode_into(std::hint::black_box(item), u32::from(LEVEL), &mut out)?;
            std::hint::black_box(&out);
            jobs += 1;
            bytes += item.len() as u64;
            if start.elapsed() >= dur && jobs as usize >= corpus.items.len() {
                break 'outer;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((jobs as f64 / secs, bytes as f64 / secs))
}

/// (jobs/s, evidence bytes/s) through a pool of `hounds`.
fn pool_rate(
    ctx: &Ctx,
    kind: EncodeKind,
    corpus: &Corpus,
    hounds: usize,
    per_hound_window: Option<usize>,
) -> Result<(f64, f64)> {
    let dir = tempfile::Builder::new()
        .prefix("hound-stress-evacuate-")
        .tempdir()
        .map_err(StressError::io("create temporary cold storage"))?;
    let cold = match kind {
        EncodeKind::Encode => ColdConfig::None,
        EncodeKind::Evacuate => ColdConfig::Filesystem {
            root: dir.path().to_path_buf(),
            prefix: "evidence/".into(),
        },
    };
    let pool = Pool::builder()
        .config(PoolConfig {
            cold,
            exhausted: PoolExhaustedAction::Drop,
            gzip_level: LEVEL,
            ..bench_config(hounds)
        })
        .build()?;
    let per_hound = per_hound_window.unwrap_or(match kind {
        EncodeKind::Encode => PER_HOUND_WINDOW,
        EncodeKind::Evacuate => evacuate_window(),
    });
    let window = hounds * per_hound;
    let plan = Plan {
        label: format!("{} pool of {hounds}", kind.name()),
        kind,
        items: &corpus.items,
        window,
        warm_jobs: 2 * window,
        measure: Duration::from_secs_f64(ctx.pick(0.5, 5.0)),
    };
    let r = stream(&pool, &plan, &mut |_| Ok(()));
    let stats = pool.shutdown(Duration::from_secs(10));
    // The pool is down before the directory goes.
    drop(dir);
    let r = r?;
    if stats.failed + stats.timed_out + stats.dropped > 0 {
        return Err(StressError::Unexpected(format!(
            "{} pool of {hounds}: {} failed, {} timed out, {} dropped",
            kind.name(),
            stats.failed,
            stats.timed_out,
            stats.dropped
        )));
    }
    Ok(r)
}

/// How one pool is streamed and measured.
pub(crate) struct Plan<'a> {
    /// What is measured, for error messages (`evacuate pool of 2`).
    pub label: String,
    /// The job each item becomes.
    pub kind: EncodeKind,
    /// The evidence, cycled.
    pub items: &'a [Vec<u8>],
    /// Jobs outstanding at most.
    pub window: usize,
    /// Completions before the clock starts.
    pub warm_jobs: usize,
    /// How long completions are counted once the clock runs.
    pub measure: Duration,
}

/// Streams `plan` through `pool`: keeps `window` jobs outstanding, requires every outcome to be
/// `Completed` (and passes its receipt to `on_completed`, which may refuse it), and returns the
/// steady-state (jobs/s, evidence bytes/s) over the measuring interval. Jobs outstanding when
/// the interval ends are drained (and checked) but not counted.
pub(crate) fn stream(
    pool: &Pool,
    plan: &Plan<'_>,
    on_completed: &mut dyn FnMut(&houndpool::Receipt) -> Result<()>,
) -> Result<(f64, f64)> {
    let rx = pool
        .outcomes()
        .ok_or_else(|| StressError::Unexpected("outcome channel disabled".into()))?;
    if plan.items.is_empty() {
        return Err(StressError::Unexpected(format!(
            "{}: empty corpus",
            plan.label
        )));
    }
    let (window, warm_jobs, measure) = (plan.window, plan.warm_jobs, plan.measure);
    // Block for outcomes, as an application's outcome thread would: with pool = cores every
    // core belongs to a hound, and a spinning caller would take one from them.
    let spin = Duration::ZERO;
    let timeout = Duration::from_secs(30);
    let (mut sent, mut done) = (0usize, 0usize);
    let mut next = 0usize;
    // Completions in (t_start, last] are counted; t_start is the completion that ends warm-up.
    let mut t_start: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut over = false;
    let (mut jobs, mut bytes) = (0u64, 0u64);
    loop {
        while !over && sent - done < window {
            let body = &plan.items[next % plan.items.len()];
            match pool.submit(&job_of(plan.kind, body)) {
                Ok(_) => {
                    sent += 1;
                    next += 1;
                }
                Err(SubmitError::PoolExhausted) if sent > done => break,
                Err(e) => return Err(e.into()),
            }
        }
        if done == sent {
            break;
        }
        let first = next_outcome(&rx, spin, timeout)?;
        let more = std::iter::from_fn(|| rx.try_recv().ok());
        for o in std::iter::once(first).chain(more) {
            expect_completed(&o)?;
            if let houndpool::OutcomeKind::Completed(r) = &o.result {
                on_completed(r)?;
            }
            done += 1;
            let now = Instant::now();
            match t_start {
                None if done >= warm_jobs => t_start = Some(now),
                Some(t) if !over => {
                    if now.duration_since(t) < measure {
                        jobs += 1;
                        if let houndpool::OutcomeKind::Completed(r) = &o.result {
                            bytes += r.original_size.unwrap_or(0);
                        }
                        last = Some(now);
                    } else {
                        over = true;
                    }
                }
                _ => {}
            }
        }
    }
    let elapsed = match (t_start, last) {
        (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
        _ => {
            return Err(StressError::Unexpected(format!(
                "{}: too few completions to measure",
                plan.label
            )))
        }
    };
    Ok((jobs as f64 / elapsed, bytes as f64 / elapsed))
}

fn job_of(kind: EncodeKind, body: &[u8]) -> Job<'_> {
    match kind {
        EncodeKind::Encode => Job::encode(body),
        EncodeKind::Evacuate => Job::evacuate(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpora_are_deterministic_and_sized() {
        let a = corpora();
        let b = corpora();
        assert_eq!(a.len(), 2);
        assert!(a[0].items.iter().all(|i| i.len() == 4096));
        assert_eq!(a[1].items, b[1].items);
        let sizes: Vec<usize> = a[1].items.iter().map(Vec::len).collect();
        assert!(sizes.iter().any(|&s| s < 2048) && sizes.iter().any(|&s| s > 32 * 1024));
    }
}
