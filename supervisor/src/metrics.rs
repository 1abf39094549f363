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
//! per scrape; nothing is updated on the submit path). `houndd` registers the same families.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{CircuitState, Pool};

/// Registers the pool's metrics in `registry`: outcomes, refusals, queue depths and
/// supervision counters (the `core` families), plus the submit→outcome latency histogram by
/// job kind, circuit state, OOM kills, high-water retirements, rotations and the size target.
pub fn register(registry: &mut Registry, pool: Arc<Pool>) {
    registry.register_collector(Box::new(PoolMetrics { pool, core: true }));
}

/// Reads a pool at scrape time. `core: false` encodes only the families `houndd`'s own pool
/// collector does not (latency, circuit, OOM kills, retirements, rotations).
pub(crate) struct PoolMetrics {
    pub(crate) pool: Arc<Pool>,
    pub(crate) core: bool,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
}

impl Collector for PoolMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.pool.stats();
        if self.core {
            counter(
                &mut e,
                "houndpool_pool_submitted",
                "Calls to submit.",
                s.submitted,
            )?;
            counter(
                &mut e,
                "houndpool_pool_accepted",
                "Jobs accepted.",
                s.accepted,
            )?;
            {
                let mut m = e.encode_descriptor(
                    "houndpool_pool_outcomes",
                    "Outcomes of accepted jobs, by kind.",
                    None,
                    MetricType::Counter,
                )?;
                for (kind, v) in [
                    ("completed", s.completed),
                    ("failed", s.failed),
                    ("timed_out", s.timed_out),
                    ("dropped", s.dropped),
                ] {
                    ConstCounter::new(v).encode(m.encode_family(&[("kind", kind)])?)?;
                }
            }
            {
                let mut m = e.encode_descriptor(
                    "houndpool_pool_refused",
                    "Submits refused, by reason.",
                    None,
                    MetricType::Counter,
                )?;
                for (reason, v) in [
                    ("exhausted", s.refused.exhausted),
                    ("defer_full", s.refused.defer_full),
                    ("too_large", s.refused.too_large),
                    ("invalid", s.refused.invalid),
                    ("shutdown", s.refused.shutdown),
                ] {
                    ConstCounter::new(v).encode(m.encode_family(&[("reason", reason)])?)?;
                }
            }
            gauge(
                &mut e,
                "houndpool_pool_in_flight",
                "Accepted jobs without an outcome yet.",
                s.in_flight,
            )?;
            gauge(
                &mut e,
                "houndpool_pool_deferred",
                "Jobs in the defer queue.",
                s.deferred,
            )?;
            counter(
                &mut e,
                "houndpool_pool_undelivered",
                "Outcomes that found the outcome channel full or closed.",
                s.undelivered,
            )?;
            counter(
                &mut e,
                "houndpool_hound_watchdog_kills",
                "Hounds killed by the watchdog.",
                s.watchdog_kills,
            )?;
            gauge(
                &mut e,
                "houndpool_pool_size_target",
                "Hounds the pool aims to run now (lowered above the high-water mark).",
                s.size.target as u64,
            )?;
            gauge(
                &mut e,
                "houndpool_pool_size_ready",
                "Hounds accepting jobs now.",
                s.size.actual as u64,
            )?;
        }
        gauge(
            &mut e,
            "houndpool_pool_size_computed",
            "Pool size decided at start (Fixed, or Auto from the container's limits).",
            s.size.computed as u64,
        )?;
        {
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
        }
        counter(
            &mut e,
            "houndpool_pool_circuit_opens",
            "Times the restart circuit opened.",
            s.circuit_opens,
        )?;
        counter(
            &mut e,
            "houndpool_hound_oom_kills",
            "Hounds that ran out of memory (budget or cgroup OOM killer).",
            s.oom_kills,
        )?;
        counter(
            &mut e,
            "houndpool_hound_high_water_retirements",
            "Hounds retired because the container's memory crossed the high-water mark.",
            s.high_water_retirements,
        )?;
        counter(
            &mut e,
            "houndpool_hound_rotations",
            "Hounds retired by rotation (after N jobs or T seconds).",
            s.rotations,
        )?;
        counter(
            &mut e,
            "houndpool_pool_tracked_unclaimed",
            "Outcomes of tracked jobs whose handle had been dropped.",
            s.tracked_unclaimed,
        )?;
        {
            let mut m = e.encode_descriptor(
                "houndpool_job_latency_seconds",
                "Time from submit to outcome, by job kind.",
                None,
                MetricType::Histogram,
            )?;
            for h in self.pool.latency() {
                // The snapshot's buckets are cumulative; the encoder accumulates itself and
                // takes each bucket's own count.
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
                    .encode_histogram::<Vec<(String, String)>>(
                        h.sum_seconds,
                        h.count,
                        &own,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}
