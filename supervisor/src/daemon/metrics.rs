//! Prometheus metrics of the daemon (crate `prometheus-client`, text format 0.0.4).
//!
//! Three sources:
//! * the daemon's own counters (frames, submits, refusals by reason, outcomes written,
//!   connections), kept as `prometheus-client` metrics and updated as things happen;
//! * the pool's families, exactly as an embedder registers them ([`crate::metrics`]: one
//!   snapshot of [`crate::Pool::stats`] per scrape);
//! * the daemon's state and the container's memory, read at scrape time by [`HostCollector`],
//!   and the client buffer budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cgroup::{self, ContainerLimits};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::flow::Budget;
use crate::metrics::{counter, gauge};
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

/// Reads the daemon's draining flag and its container's memory at scrape time.
pub(crate) struct HostCollector {
    pub draining: Arc<AtomicBool>,
    /// The process's cgroup (read once at start); usage is read from it at each scrape.
    pub limits: Option<ContainerLimits>,
}

impl std::fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostCollector")
    }
}

impl Collector for HostCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "houndpool_daemon_draining",
            "1 while the daemon drains (SIGTERM or SIGINT received).",
            u64::from(self.draining.load(Ordering::Relaxed)),
        )?;
        if let Some(limits) = &self.limits {
            if let Some(usage) = cgroup::memory_usage(limits) {
                gauge(
                    &mut e,
                    "houndpool_container_memory_usage_bytes",
                    "Memory charged to the daemon's cgroup, hounds and rings included (page cache too).",
                    usage,
                )?;
            }
            if let Some(ws) = cgroup::memory_working_set(limits) {
                gauge(
                    &mut e,
                    "houndpool_container_memory_working_set_bytes",
                    "Memory charged to the daemon's cgroup minus inactive page cache: what the kubelet and the OOM decision weigh.",
                    ws,
                )?;
            }
            if let Some(limit) = limits.memory_limit {
                gauge(
                    &mut e,
                    "houndpool_container_memory_limit_bytes",
                    "Memory limit of the daemon's cgroup (the tightest along its path).",
                    limit,
                )?;
            }
            if let Some(high) = limits.memory_high {
                gauge(
                    &mut e,
                    "houndpool_container_memory_high_bytes",
                    "memory.high of the daemon's cgroup (throttling threshold, cgroup v2).",
                    high,
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
            self.0.used() as u64,
        )?;
        gauge(
            &mut e,
            "houndpool_daemon_buffer_budget_bytes",
            "The daemon-wide buffer budget (daemon.buffer_budget_bytes, else pool.host_reserve_bytes / 2).",
            self.0.total() as u64,
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
            self.0.paused.load(Ordering::SeqCst) as u64,
        )
    }
}

/// The registry of a daemon: its own counters, the buffer budget, the pool's families (as
/// [`crate::metrics::register`] gives an embedder) and the host collector.
pub(crate) fn registry(
    budget: &Arc<Budget>,
    daemon: &Arc<DaemonMetrics>,
    pool: Arc<Pool>,
    host: HostCollector,
) -> Registry {
    let mut r = Registry::default();
    daemon.register(&mut r);
    r.register_collector(Box::new(FlowCollector(budget.clone())));
    crate::metrics::register(&mut r, pool);
    r.register_collector(Box::new(host));
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
