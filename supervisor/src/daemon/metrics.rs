//! Prometheus metrics of the daemon (crate `prometheus-client`, text format 0.0.4).
//!
//! Two sources:
//! * the daemon's own counters (frames, submits, refusals by reason, outcomes written,
//!   connections), kept as `prometheus-client` metrics and updated as things happen;
//! * the pool's snapshot ([`crate::Pool::stats`]), the sandbox report and the container's memory,
//!   read at scrape time by [`PoolCollector`], so a scrape always shows one consistent snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cgroup::{self, ContainerLimits};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::flow::Budget;
use crate::Pool;

/// A label set of one label.
pub(crate) type Label = [(&'static str, &'static str); 1];

/// The daemon's own counters. Cheap to update (atomics; a family lookup takes a read lock).
#[derive(Debug, Default)]
pub(crate) struct DaemonMetrics {
    /// Submit frames received (decoded).
    pub submits: Counter,
    /// Submits the pool accepted.
    pub accepted: Counter,
    /// Submits refused, by reason (`RefuseReason::name`).
    pub refused: Family<Label, Counter>,
    /// Outcome frames written to clients, by outcome kind.
    pub delivered: Family<Label, Counter>,
    /// Outcomes not written in full because their connection closed first.
    pub undelivered: Counter,
    /// Connections accepted on the socket.
    pub connections: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections closed, by reason.
    pub disconnects: Family<Label, Counter>,
    /// Stats requests answered.
    pub stats_requests: Counter,
    /// Configuration reloads, by result (`applied`, `refused`).
    pub reloads: Family<Label, Counter>,
}

impl DaemonMetrics {
    /// Registers every metric of `self` in `registry`.
    pub(crate) fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "houndpool_daemon_submits",
            "Submit frames received from clients",
            self.submits.clone(),
        );
        registry.register(
            "houndpool_daemon_accepted",
            "Submits accepted by the pool",
            self.accepted.clone(),
        );
        registry.register(
            "houndpool_daemon_refused",
            "Submits refused, by reason",
            self.refused.clone(),
        );
        registry.register(
            "houndpool_daemon_outcomes_delivered",
            "Outcome frames written to clients, by kind",
            self.delivered.clone(),
        );
        registry.register(
            "houndpool_daemon_outcomes_undelivered",
            "Outcomes of accepted jobs not written in full to their client because its connection closed first (client gone, write stalled, or closed by the daemon with an error)",
            self.undelivered.clone(),
        );
        registry.register(
            "houndpool_daemon_connections",
            "Client connections accepted",
            self.connections.clone(),
        );
        registry.register(
            "houndpool_daemon_connections_open",
            "Client connections open now",
            self.connections_open.clone(),
        );
        registry.register(
            "houndpool_daemon_disconnects",
            "Client connections closed, by reason",
            self.disconnects.clone(),
        );
        registry.register(
            "houndpool_daemon_stats_requests",
            "Stats requests answered",
            self.stats_requests.clone(),
        );
        registry.register(
            "houndpool_daemon_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            self.reloads.clone(),
        );
    }
}

/// Reads the pool's snapshot at scrape time.
pub(crate) struct PoolCollector {
    pub pool: Arc<Pool>,
    pub draining: Arc<AtomicBool>,
    /// The process's cgroup (read once at start); usage is read from it at each scrape.
    pub limits: Option<ContainerLimits>,
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

fn gauge_i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for PoolCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.pool.stats();
        counter(
            &mut e,
            "houndpool_pool_submitted",
            "Calls to Pool::submit.",
            s.submitted,
        )?;
        counter(
            &mut e,
            "houndpool_pool_accepted",
            "Jobs the pool accepted (each gets exactly one outcome).",
            s.accepted,
        )?;
        {
            let mut m = e.encode_descriptor(
                "houndpool_pool_refused",
                "Jobs the pool refused at submit, by reason.",
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
        gauge(
            &mut e,
            "houndpool_pool_in_flight",
            "Accepted jobs without an outcome yet.",
            gauge_i(s.in_flight),
        )?;
        {
            let mut m = e.encode_descriptor(
                "houndpool_pool_queue_depth",
                "Jobs waiting, by queue: hound rings, the defer queue, the retry queue.",
                None,
                MetricType::Gauge,
            )?;
            for (queue, v) in [
                ("rings", s.in_rings),
                ("deferred", s.deferred),
                ("retrying", s.retrying),
            ] {
                ConstGauge::new(gauge_i(v)).encode(m.encode_family(&[("queue", queue)])?)?;
            }
        }
        counter(
            &mut e,
            "houndpool_pool_undelivered",
            "Outcomes the pool could not put in its outcome channel.",
            s.undelivered,
        )?;
        counter(
            &mut e,
            "houndpool_pool_escalations",
            "Escalation events (exhausted = escalate).",
            s.escalations,
        )?;
        counter(
            &mut e,
            "houndpool_pool_retries",
            "Jobs re-run after their hound died.",
            s.retries,
        )?;
        counter(
            &mut e,
            "houndpool_pool_poison",
            "Jobs failed as poison (killed two hounds).",
            s.poison,
        )?;
        counter(
            &mut e,
            "houndpool_hound_spawns",
            "Hounds started, initial ones included.",
            s.hound_spawns,
        )?;
        counter(
            &mut e,
            "houndpool_hound_exits",
            "Hounds that exited or were killed.",
            s.hound_exits,
        )?;
        counter(
            &mut e,
            "houndpool_hound_spawn_failures",
            "Failed hound spawn attempts.",
            s.spawn_failures,
        )?;
        counter(
            &mut e,
            "houndpool_hound_watchdog_kills",
            "Hounds killed by the watchdog.",
            s.watchdog_kills,
        )?;
        counter(
            &mut e,
            "houndpool_hound_protocol_violations",
            "Hounds killed for protocol violations.",
            s.protocol_violations,
        )?;
        let target = self.pool.config().hound_count() as u64;
        let ready = s.hounds.iter().filter(|h| h.pid.is_some()).count() as u64;
        gauge(
            &mut e,
            "houndpool_pool_size_target",
            "Hounds the pool is configured to run.",
            gauge_i(target),
        )?;
        gauge(
            &mut e,
            "houndpool_pool_size_ready",
            "Hounds running and past their handshake now.",
            gauge_i(ready),
        )?;
        gauge(
            &mut e,
            "houndpool_pool_spare_ready",
            "1 while a prestarted hound waits to replace the next one that dies (pool.prestart).",
            gauge_i(u64::from(s.spare_pid.is_some())),
        )?;
        gauge(
            &mut e,
            "houndpool_journal_backlog_files",
            "Filesystem-store commit journals waiting to become key files.",
            gauge_i(s.journal_backlog),
        )?;
        gauge(
            &mut e,
            "houndpool_journal_backlog_bytes",
            "Bytes of the commit journals waiting to become key files.",
            gauge_i(s.journal_backlog_bytes),
        )?;
        counter(
            &mut e,
            "houndpool_journal_conflicts",
            "Journal records moved to the conflicts area (a key stored twice with different bytes).",
            s.journal_conflicts,
        )?;
        {
            let mut m = e.encode_descriptor(
                "houndpool_hound_restarts",
                "Times each slot's hound was replaced.",
                None,
                MetricType::Counter,
            )?;
            for h in &s.hounds {
                let slot = h.slot.to_string();
                ConstCounter::new(h.generation.saturating_sub(1))
                    .encode(m.encode_family(&[("slot", slot.as_str())])?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "houndpool_hound_in_flight",
                "Jobs in each slot's ring.",
                None,
                MetricType::Gauge,
            )?;
            for h in &s.hounds {
                let slot = h.slot.to_string();
                ConstGauge::new(gauge_i(h.in_flight as u64))
                    .encode(m.encode_family(&[("slot", slot.as_str())])?)?;
            }
        }
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
        gauge(
            &mut e,
            "houndpool_daemon_draining",
            "1 while the daemon drains (SIGTERM or SIGINT received).",
            i64::from(self.draining.load(Ordering::Relaxed)),
        )?;
        if let Some(limits) = &self.limits {
            if let Some(usage) = cgroup::memory_usage(limits) {
                gauge(
                    &mut e,
                    "houndpool_container_memory_usage_bytes",
                    "Memory charged to the daemon's cgroup, hounds and rings included (page cache too).",
                    gauge_i(usage),
                )?;
            }
            if let Some(ws) = cgroup::memory_working_set(limits) {
                gauge(
                    &mut e,
                    "houndpool_container_memory_working_set_bytes",
                    "Memory charged to the daemon's cgroup minus inactive page cache: what the kubelet and the OOM decision weigh.",
                    gauge_i(ws),
                )?;
            }
            if let Some(limit) = limits.memory_limit {
                gauge(
                    &mut e,
                    "houndpool_container_memory_limit_bytes",
                    "Memory limit of the daemon's cgroup (the tightest along its path).",
                    gauge_i(limit),
                )?;
            }
            if let Some(high) = limits.memory_high {
                gauge(
                    &mut e,
                    "houndpool_container_memory_high_bytes",
                    "memory.high of the daemon's cgroup (throttling threshold, cgroup v2).",
                    gauge_i(high),
                )?;
            }
        }
        Ok(())
    }
}

/// Reads the buffer budget at scrape time.
#[derive(Debug)]
struct FlowCollector(Arc<Budget>);

impl Collector for FlowCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "houndpool_daemon_buffer_bytes",
            "Bytes reserved now for client buffers: frames being read and the worst case of every accepted job's body and outcome not yet written.",
            gauge_i(self.0.used() as u64),
        )?;
        gauge(
            &mut e,
            "houndpool_daemon_buffer_budget_bytes",
            "The daemon-wide buffer budget (daemon.buffer_budget_bytes, else pool.host_reserve_bytes / 2).",
            gauge_i(self.0.total() as u64),
        )?;
        counter(
            &mut e,
            "houndpool_daemon_backpressure_pauses",
            "Times a connection stopped being read because of backpressure (outcome_buffer, queued replies, fair share or budget).",
            self.0.pauses.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "houndpool_daemon_connections_paused",
            "Connections not read now because of backpressure (outcome_buffer, queued replies, fair share or budget).",
            gauge_i(self.0.paused.load(Ordering::SeqCst) as u64),
        )
    }
}

/// The registry of a daemon: its own counters, the buffer budget and the pool collector.
pub(crate) fn registry(
    budget: &Arc<Budget>,
    daemon: &Arc<DaemonMetrics>,
    pool: PoolCollector,
) -> Registry {
    let mut r = Registry::default();
    daemon.register(&mut r);
    r.register_collector(Box::new(FlowCollector(budget.clone())));
    // Latency histogram, circuit, OOM kills, retirements, rotations (crate::metrics).
    let extra = crate::metrics::PoolMetrics {
        pool: pool.pool.clone(),
        core: false,
    };
    r.register_collector(Box::new(pool));
    r.register_collector(Box::new(extra));
    r
}

/// Renders `registry` in the Prometheus text format 0.0.4.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail; an Err could only come from a collector, and ours
    // return Err only when the writer does.
    if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
        out.push_str("# error: metrics encoding failed\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_counters_render_with_labels() {
        let d = Arc::new(DaemonMetrics::default());
        let mut r = Registry::default();
        d.register(&mut r);
        d.submits.inc();
        d.refused
            .get_or_create(&[("reason", "connection_busy")])
            .inc();
        let text = render(&r);
        assert!(text.contains("houndpool_daemon_submits_total 1"), "{text}");
        assert!(
            text.contains("houndpool_daemon_refused_total{reason=\"connection_busy\"} 1"),
            "{text}"
        );
    }
}
