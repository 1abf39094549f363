//! The pool's metrics for an embedder's `prometheus-client` registry (feature `metrics`).
//!
//! ```no_run
//! # fn f(pool: std::sync::Arc<houndpool::Pool>) {
//! let mut registry = prometheus_client::registry::Registry::default();
//! houndpool::metrics::register(&mut registry, pool);
//! # }
//! ```
//!
//! Everything is read from [`Pool::stats`] and [`Pool::latency`] at scrape time (one snapshot
//! per scrape; nothing is updated on the submit path). This is the one declaration of the
//! pool's families: `houndd` registers exactly these, plus its own (`houndpool_daemon_*`,
//! `houndpool_container_*`), so an embedder and an operator of the daemon read the same names.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{CircuitState, Pool, PoolStats};

/// Registers the pool's metrics in `registry`:
/// * jobs: submitted, accepted, refused by reason, outcomes by kind, in flight, queue depth
///   by queue (rings, deferred, retrying), undelivered, escalations, retries, poison, tracked
///   outcomes nobody claimed, and the submit→outcome latency histogram by job kind;
/// * hounds: spawns, exits, spawn failures, watchdog kills, protocol violations, OOM kills,
///   high-water retirements, rotations, restarts and jobs in flight by slot, the sandbox
///   layers of the latest hound;
/// * size and supervision: the size computed at start, the target now, the hounds ready, the
///   prestarted spare, the restart circuit's state and openings;
/// * the filesystem store's commit journals: backlog files and bytes, conflicts;
/// * the S3 store's spool: records and bytes pending, claimed by a drainer and quarantined
///   (read from the spool directory at scrape time: one listing and a `stat` per file; zero
///   without a spool).
pub fn register(registry: &mut Registry, pool: Arc<Pool>) {
    registry.register_collector(Box::new(PoolMetrics { pool }));
}

/// Reads a pool at scrape time (see [`register`]).
pub(crate) struct PoolMetrics {
    pub(crate) pool: Arc<Pool>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

/// Encodes one counter family without labels.
pub(crate) fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// Encodes one gauge family without labels (a count, saturating at `i64::MAX`).
pub(crate) fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(gauge_value(v)).encode(m)
}

/// A count as a gauge value (saturating).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One family with one label: a counter (`ty` = `Counter`) or a gauge (anything else) per
/// `(label value, count)` pair.
fn by_label(
    e: &mut DescriptorEncoder,
    (name, help, ty): (&str, &str, MetricType),
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for &(value, v) in values {
        let labels = [(label, value)];
        let one = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(one)?,
            _ => ConstGauge::new(gauge_value(v)).encode(one)?,
        }
    }
    Ok(())
}

impl Collector for PoolMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.pool.stats();
        encode_jobs(&mut e, &s)?;
        encode_hounds(&mut e, &s)?;
        encode_size(&mut e, &s)?;
        encode_journal(&mut e, &s)?;
        encode_spool(&mut e, &self.pool)?;
        encode_latency(&mut e, &self.pool)
    }
}

fn encode_jobs(e: &mut DescriptorEncoder, s: &PoolStats) -> std::fmt::Result {
    counter(
        e,
        "houndpool_pool_submitted",
        "Calls to submit.",
        s.submitted,
    )?;
    counter(
        e,
        "houndpool_pool_accepted",
        "Jobs the pool accepted (each gets exactly one outcome).",
        s.accepted,
    )?;
    by_label(
        e,
        (
            "houndpool_pool_refused",
            "Jobs the pool refused at submit, by reason.",
            MetricType::Counter,
        ),
        "reason",
        &[
            ("exhausted", s.refused.exhausted),
            ("defer_full", s.refused.defer_full),
            ("too_large", s.refused.too_large),
            ("invalid", s.refused.invalid),
            ("shutdown", s.refused.shutdown),
        ],
    )?;
    by_label(
        e,
        (
            "houndpool_pool_outcomes",
            "Outcomes of accepted jobs, by kind.",
            MetricType::Counter,
        ),
        "kind",
        &[
            ("completed", s.completed),
            ("failed", s.failed),
            ("timed_out", s.timed_out),
            ("dropped", s.dropped),
        ],
    )?;
    gauge(
        e,
        "houndpool_pool_in_flight",
        "Accepted jobs without an outcome yet.",
        s.in_flight,
    )?;
    by_label(
        e,
        (
            "houndpool_pool_queue_depth",
            "Jobs waiting, by queue: hound rings, the defer queue, the retry queue.",
            MetricType::Gauge,
        ),
        "queue",
        &[
            ("rings", s.in_rings),
            ("deferred", s.deferred),
            ("retrying", s.retrying),
        ],
    )?;
    counter(
        e,
        "houndpool_pool_undelivered",
        "Outcomes that found the outcome channel full or closed.",
        s.undelivered,
    )?;
    counter(
        e,
        "houndpool_pool_escalations",
        "Escalation events (exhausted = escalate).",
        s.escalations,
    )?;
    counter(
        e,
        "houndpool_pool_retries",
        "Jobs re-run after their hound died.",
        s.retries,
    )?;
    counter(
        e,
        "houndpool_pool_poison",
        "Jobs failed as poison (killed two hounds).",
        s.poison,
    )?;
    counter(
        e,
        "houndpool_pool_tracked_unclaimed",
        "Outcomes of tracked jobs whose handle had been dropped.",
        s.tracked_unclaimed,
    )
}

fn encode_hounds(e: &mut DescriptorEncoder, s: &PoolStats) -> std::fmt::Result {
    counter(
        e,
        "houndpool_hound_spawns",
        "Hounds started, initial ones included.",
        s.hound_spawns,
    )?;
    counter(
        e,
        "houndpool_hound_exits",
        "Hounds that exited or were killed.",
        s.hound_exits,
    )?;
    counter(
        e,
        "houndpool_hound_spawn_failures",
        "Failed hound spawn attempts.",
        s.spawn_failures,
    )?;
    counter(
        e,
        "houndpool_hound_watchdog_kills",
        "Hounds killed by the watchdog.",
        s.watchdog_kills,
    )?;
    counter(
        e,
        "houndpool_hound_protocol_violations",
        "Hounds killed for protocol violations.",
        s.protocol_violations,
    )?;
    counter(
        e,
        "houndpool_hound_oom_kills",
        "Hounds that ran out of memory (budget or cgroup OOM killer).",
        s.oom_kills,
    )?;
    counter(
        e,
        "houndpool_hound_high_water_retirements",
        "Hounds retired because the container's memory crossed the high-water mark.",
        s.high_water_retirements,
    )?;
    counter(
        e,
        "houndpool_hound_rotations",
        "Hounds retired by rotation (after N jobs or T seconds).",
        s.rotations,
    )?;
    let slots: Vec<(String, u64, u64)> = s
        .hounds
        .iter()
        .map(|h| {
            (
                h.slot.to_string(),
                h.generation.saturating_sub(1),
                h.in_flight as u64,
            )
        })
        .collect();
    let restarts: Vec<(&str, u64)> = slots.iter().map(|(n, r, _)| (n.as_str(), *r)).collect();
    by_label(
        e,
        (
            "houndpool_hound_restarts",
            "Times each slot's hound was replaced.",
            MetricType::Counter,
        ),
        "slot",
        &restarts,
    )?;
    let in_flight: Vec<(&str, u64)> = slots.iter().map(|(n, _, f)| (n.as_str(), *f)).collect();
    by_label(
        e,
        (
            "houndpool_hound_in_flight",
            "Jobs in each slot's ring.",
            MetricType::Gauge,
        ),
        "slot",
        &in_flight,
    )?;
    if let Some(report) = &s.sandbox {
        let mut m = e.encode_descriptor(
            "houndpool_sandbox_layer",
            "Sandbox layers of the most recently started hound: 1 for the layer's status.",
            None,
            MetricType::Gauge,
        )?;
        for l in &report.layers {
            ConstGauge::new(1i64).encode(
                m.encode_family(&[("layer", l.layer.name()), ("status", l.status.name())])?,
            )?;
        }
    }
    Ok(())
}

fn encode_size(e: &mut DescriptorEncoder, s: &PoolStats) -> std::fmt::Result {
    gauge(
        e,
        "houndpool_pool_size_computed",
        "Pool size decided at start (Fixed, or Auto from the container's limits).",
        s.size.computed as u64,
    )?;
    gauge(
        e,
        "houndpool_pool_size_target",
        "Hounds the pool aims to run now (lowered above the high-water mark).",
        s.size.target as u64,
    )?;
    gauge(
        e,
        "houndpool_pool_size_ready",
        "Hounds accepting jobs now.",
        s.size.actual as u64,
    )?;
    gauge(
        e,
        "houndpool_pool_spare_ready",
        "1 while a prestarted hound waits to replace the next one that dies (pool.prestart).",
        u64::from(s.spare_pid.is_some()),
    )?;
    let mut m = e.encode_descriptor(
        "houndpool_pool_circuit_state",
        "Restart circuit: 1 for the current state (closed, open, half_open).",
        None,
        MetricType::Gauge,
    )?;
    for st in [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ] {
        ConstGauge::new(i64::from(s.circuit == st))
            .encode(m.encode_family(&[("state", st.name())])?)?;
    }
    counter(
        e,
        "houndpool_pool_circuit_opens",
        "Times the restart circuit opened.",
        s.circuit_opens,
    )
}

fn encode_journal(e: &mut DescriptorEncoder, s: &PoolStats) -> std::fmt::Result {
    gauge(
        e,
        "houndpool_journal_backlog_files",
        "Filesystem-store commit journals waiting to become key files.",
        s.journal_backlog,
    )?;
    gauge(
        e,
        "houndpool_journal_backlog_bytes",
        "Bytes of the commit journals waiting to become key files.",
        s.journal_backlog_bytes,
    )?;
    counter(
        e,
        "houndpool_journal_conflicts",
        "Journal records moved to the conflicts area (a key stored twice with different bytes).",
        s.journal_conflicts,
    )
}

/// The spool families, from a listing of the spool directory now. A snapshot: a record a
/// drainer claims or puts back (a rename) while the listing runs may be missed in it. A
/// spool that cannot be read (permissions, I/O) leaves the families out of this scrape
/// rather than reporting zeros it did not see.
fn encode_spool(e: &mut DescriptorEncoder, pool: &Pool) -> std::fmt::Result {
    let census = match &pool.config().cold {
        crate::ColdConfig::S3(t) => match &t.spool_dir {
            Some(dir) => houndpool_cold::s3::spool_census(std::path::Path::new(dir)),
            None => Ok(Default::default()),
        },
        _ => Ok(Default::default()),
    };
    let Ok(c) = census else {
        return Ok(());
    };
    by_label(
        e,
        (
            "houndpool_spool_records",
            "S3 spool records: pending (waiting for a drainer), claimed (being uploaded, or \
             left by a drainer that died until they are stale), quarantined (kept for an \
             operator, never uploaded).",
            MetricType::Gauge,
        ),
        "state",
        &[
            ("pending", c.pending),
            ("claimed", c.claimed),
            ("quarantined", c.quarantined),
        ],
    )?;
    by_label(
        e,
        (
            "houndpool_spool_bytes",
            "Bytes of the S3 spool's records, by the state of houndpool_spool_records \
             (pending and claimed together as waiting).",
            MetricType::Gauge,
        ),
        "state",
        &[("waiting", c.bytes), ("quarantined", c.quarantined_bytes)],
    )
}

fn encode_latency(e: &mut DescriptorEncoder, pool: &Pool) -> std::fmt::Result {
    let mut m = e.encode_descriptor(
        "houndpool_job_latency_seconds",
        "Time from submit to outcome, by job kind.",
        None,
        MetricType::Histogram,
    )?;
    for h in pool.latency() {
        // The snapshot's buckets are cumulative; the encoder accumulates itself and takes
        // each bucket's own count.
        let mut below = 0;
        let own: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = cumulative;
                (bound, n)
            })
            .collect();
        m.encode_family(&[("kind", h.kind.name())])?
            .encode_histogram::<Vec<(String, String)>>(h.sum_seconds, h.count, &own, None)?;
    }
    Ok(())
}
