//! Submit→outcome latency by job kind: fixed buckets of relaxed atomic counters, recorded once
//! per outcome on the delivering thread (three relaxed additions, no lock, no allocation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use houndpool_protocol::job::JobKind;

/// Upper bounds of the buckets, in seconds (a last, unbounded bucket is implied).
pub const BOUNDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every job kind, in wire order (the index of a kind's histogram).
pub const KINDS: [JobKind; 6] = [
    JobKind::Noop,
    JobKind::Encode,
    JobKind::Evacuate,
    JobKind::Restore,
    JobKind::Erase,
    JobKind::Decode,
];

#[derive(Default)]
struct One {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// One histogram per job kind.
#[derive(Default)]
pub(crate) struct Latency {
    kinds: [One; KINDS.len()],
}

/// A snapshot of one kind's histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// The job kind.
    pub kind: JobKind,
    /// Outcomes recorded.
    pub count: u64,
    /// Sum of their latencies, seconds.
    pub sum_seconds: f64,
    /// (upper bound in seconds, cumulative count), ending with (+Inf, count).
    pub buckets: Vec<(f64, u64)>,
}

fn index(kind: JobKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Latency {
    /// Records one outcome's latency.
    #[inline]
    pub(crate) fn record(&self, kind: JobKind, latency: Duration) {
        let h = &self.kinds[index(kind)];
        let secs = latency.as_secs_f64();
        let b = BOUNDS
            .iter()
            .position(|&u| secs <= u)
            .unwrap_or(BOUNDS.len());
        h.buckets[b].fetch_add(1, Relaxed);
        h.count.fetch_add(1, Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        h.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Cumulative snapshots, one per kind.
    pub(crate) fn snapshot(&self) -> Vec<LatencySnapshot> {
        KINDS
            .iter()
            .zip(&self.kinds)
            .map(|(&kind, h)| {
                let mut acc = 0;
                let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
                for (i, b) in h.buckets.iter().enumerate() {
                    acc += b.load(Relaxed);
                    buckets.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), acc));
                }
                LatencySnapshot {
                    kind,
                    count: acc,
                    sum_seconds: h.sum_ns.load(Relaxed) as f64 / 1e9,
                    buckets,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let l = Latency::default();
        l.record(JobKind::Encode, Duration::from_micros(50));
        l.record(JobKind::Encode, Duration::from_millis(3));
        l.record(JobKind::Encode, Duration::from_secs(60));
        l.record(JobKind::Erase, Duration::from_millis(1));
        let s = l.snapshot();
        let enc = s.iter().find(|h| h.kind == JobKind::Encode).unwrap();
        assert_eq!(enc.count, 3);
        assert_eq!(enc.buckets[0], (0.0001, 1));
        assert_eq!(enc.buckets[5], (0.005, 2));
        assert_eq!(*enc.buckets.last().unwrap(), (f64::INFINITY, 3));
        assert!((enc.sum_seconds - 60.003_05).abs() < 1e-6);
        let erase = s.iter().find(|h| h.kind == JobKind::Erase).unwrap();
        assert_eq!(erase.buckets[3], (0.001, 1));
    }
}
