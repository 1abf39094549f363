//! One `tracing` span per job, from submit to outcome (target `houndpool::job`, level DEBUG),
//! with placement, deferral, retry and the outcome recorded as events inside it.
//!
//! Cheap when disabled: `submit` asks the span's callsite whether any subscriber wants it (a
//! cached answer: one load); only when one does is the span created and kept in a side table
//! until the outcome, so the ring bookkeeping (`InFlight`, `Copy`) carries nothing extra.
//! `deliver` looks the table up only while it holds spans (one relaxed load otherwise).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use houndpool_protocol::job::{JobKind, Severity};
use tracing::Span;

use crate::job::Outcome;

/// Spans of jobs without an outcome yet (only while a subscriber enables them).
#[derive(Default)]
pub(crate) struct Spans {
    live: AtomicUsize,
    map: Mutex<HashMap<u64, Span>>,
}

impl Spans {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Span>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the span of an accepted job (nothing if no subscriber wants it).
    #[inline]
    pub(crate) fn open(&self, job_id: u64, kind: JobKind, severity: Severity, len: usize) {
        let span = tracing::debug_span!(
            target: "houndpool::job",
            "job",
            id = job_id,
            kind = kind.name(),
            severity = severity.name(),
            bytes = len,
        );
        if span.is_disabled() {
            return;
        }
        let mut m = self.lock();
        m.insert(job_id, span);
        self.live.store(m.len(), Ordering::Release);
    }

    /// Records an event in the span of `job_id`, if it has one.
    #[inline]
    pub(crate) fn event(&self, job_id: u64, what: &'static str) {
        if self.live.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(span) = self.lock().get(&job_id) {
            span.in_scope(|| tracing::debug!(target: "houndpool::job", "{what}"));
        }
    }

    /// Records the outcome and closes the span.
    #[inline]
    pub(crate) fn close(&self, o: &Outcome) {
        if self.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let span = {
            let mut m = self.lock();
            let s = m.remove(&o.job_id.0);
            self.live.store(m.len(), Ordering::Release);
            s
        };
        if let Some(span) = span {
            span.in_scope(|| {
                tracing::debug!(
                    target: "houndpool::job",
                    result = o.result.name(),
                    attempts = o.attempts,
                    latency_us = o.latency.as_micros() as u64,
                    "outcome"
                )
            });
        }
    }

    /// Forgets the span of a job that was not accepted after all.
    pub(crate) fn discard(&self, job_id: u64) {
        if self.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut m = self.lock();
        m.remove(&job_id);
        self.live.store(m.len(), Ordering::Release);
    }
}
