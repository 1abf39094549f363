//! Counters and the `stats()` snapshot.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

use houndpool_protocol::control::SandboxReport;

/// A relaxed event counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Sequentially consistent increment, for the accounting counters (accepted and the
    /// terminal ones) so that a snapshot never sees a terminal event before its acceptance.
    #[inline]
    pub(crate) fn inc_sc(&self) {
        self.0.fetch_add(1, SeqCst);
    }
    /// Undoes an `inc_sc` (a job counted as accepted that could not be placed after all).
    #[inline]
    pub(crate) fn dec_sc(&self) {
        self.0.fetch_sub(1, SeqCst);
    }
    #[inline]
    pub(crate) fn get_sc(&self) -> u64 {
        self.0.load(SeqCst)
    }
}

/// All pool counters. Terminal counters are incremented before the outcome is delivered, so
/// a caller that has received N outcomes sees at least N terminal events counted.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: Counter,
    pub(crate) accepted: Counter,
    pub(crate) refused_exhausted: Counter,
    pub(crate) refused_defer_full: Counter,
    pub(crate) refused_too_large: Counter,
    pub(crate) refused_invalid: Counter,
    pub(crate) refused_shutdown: Counter,
    pub(crate) completed: Counter,
    pub(crate) failed: Counter,
    pub(crate) timed_out: Counter,
    pub(crate) dropped: Counter,
    pub(crate) undelivered: Counter,
    pub(crate) escalations: Counter,
    pub(crate) deferred_total: Counter,
    pub(crate) retries: Counter,
    pub(crate) poison: Counter,
    pub(crate) hound_spawns: Counter,
    pub(crate) hound_exits: Counter,
    pub(crate) spawn_failures: Counter,
    pub(crate) watchdog_kills: Counter,
    pub(crate) protocol_violations: Counter,
    pub(crate) oom_kills: Counter,
    pub(crate) restarts: Counter,
    pub(crate) circuit_opens: Counter,
    pub(crate) rotations: Counter,
    pub(crate) high_water_retirements: Counter,
    pub(crate) retire_kills: Counter,
    pub(crate) callback_panics: Counter,
    pub(crate) hound_log_suppressed: Counter,
}

/// Pool size: what was decided at build and what runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeStats {
    /// Hounds the pool aims to run now (lowered above the high-water mark).
    pub target: usize,
    /// Hounds accepting jobs now.
    pub actual: usize,
    /// The size decided at build (`Fixed(n)` → n; `Auto` → from the container's limits).
    pub computed: usize,
    /// Slots allocated (the most hounds the pool can ever run at once).
    pub slots: usize,
    /// The sizing decision with its inputs, in words.
    pub explanation: String,
}

/// Refusals at submit, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedStats {
    /// `PoolExhausted` (Drop and Escalate).
    pub exhausted: u64,
    /// `DeferQueueFull`.
    pub defer_full: u64,
    /// `EvidenceTooLarge`.
    pub too_large: u64,
    /// `EmptyEvidence` and `InvalidJob`.
    pub invalid: u64,
    /// `ShutDown`.
    pub shutdown: u64,
}

/// One hound as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoundStats {
    /// Slot number.
    pub slot: u32,
    /// Process id (None while the slot is being refilled).
    pub pid: Option<u32>,
    /// Times this slot has been (re)filled.
    pub generation: u64,
    /// Jobs in its ring.
    pub in_flight: usize,
    /// Completions the supervisor consumed from this hound.
    pub completed: u64,
    /// Raw state value the hound reports (untrusted; see `protocol::region::HoundState`).
    pub reported_state: u32,
    /// Heartbeat the hound reports (untrusted).
    pub heartbeat: u64,
}

/// A consistent-enough snapshot of the pool. `in_flight` is derived so that
/// `accepted == completed + failed + timed_out + dropped + in_flight` holds in every snapshot;
/// `in_rings + deferred + retrying` is counted independently and equals `in_flight` when the
/// pool is quiescent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Calls to `submit`.
    pub submitted: u64,
    /// Jobs accepted (each gets exactly one outcome).
    pub accepted: u64,
    /// Refusals by reason.
    pub refused: RefusedStats,
    /// Outcomes `Completed`.
    pub completed: u64,
    /// Outcomes `Failed`.
    pub failed: u64,
    /// Outcomes `TimedOut`.
    pub timed_out: u64,
    /// Outcomes `Dropped`.
    pub dropped: u64,
    /// Accepted jobs without an outcome yet.
    pub in_flight: u64,
    /// Jobs in hound rings now.
    pub in_rings: u64,
    /// Jobs in the defer queue now.
    pub deferred: u64,
    /// Jobs waiting to be retried on another hound now.
    pub retrying: u64,
    /// Outcomes that could not be delivered (channel full or closed).
    pub undelivered: u64,
    /// Outcomes of tracked jobs whose [`crate::Tracked`] handle had been dropped (counted in
    /// the outcome counters like any other, then discarded).
    pub tracked_unclaimed: u64,
    /// Escalation events emitted.
    pub escalations: u64,
    /// Jobs ever placed in the defer queue.
    pub deferred_total: u64,
    /// Jobs re-run after their hound died.
    pub retries: u64,
    /// Jobs failed as poison.
    pub poison: u64,
    /// Hounds started (including the initial ones).
    pub hound_spawns: u64,
    /// Hounds that exited or were killed.
    pub hound_exits: u64,
    /// Failed spawn attempts.
    pub spawn_failures: u64,
    /// Hounds killed by the watchdog.
    pub watchdog_kills: u64,
    /// Hounds killed for protocol violations.
    pub protocol_violations: u64,
    /// Hounds that ran out of memory (cgroup OOM kill or address-space budget).
    pub oom_kills: u64,
    /// Unexpected hound exits (each counts against the restart intensity).
    pub restarts: u64,
    /// Times the restart intensity opened the circuit.
    pub circuit_opens: u64,
    /// Healthy hounds retired by rotation.
    pub rotations: u64,
    /// Hounds retired because memory usage was above the high-water mark.
    pub high_water_retirements: u64,
    /// Hounds SIGKILLed because they had not exited `retire_grace` after `Shutdown` (retired
    /// by rotation or the high-water mark) or after their `Fatal` report.
    pub retire_kills: u64,
    /// `on_outcome` callback calls that panicked (contained; the outcome still went to the
    /// channel).
    pub callback_panics: u64,
    /// Log lines about hound-supplied text (Fatal messages, violation details) left out by
    /// the per-slot rate limit.
    pub hound_log_suppressed: u64,
    /// The respawn circuit's state now.
    pub circuit: crate::CircuitState,
    /// True while the circuit is not closed (respawns held back).
    pub degraded: bool,
    /// Target and actual size, and the sizing decision.
    pub size: SizeStats,
    /// The container's memory working set now (cgroup), when known.
    pub memory_usage: Option<u64>,
    /// The container's effective memory limit, when known.
    pub memory_limit: Option<u64>,
    /// The high-water mark in bytes (limit × mark share in force), when the limit is known.
    pub high_water_bytes: Option<u64>,
    /// Per-hound view.
    pub hounds: Vec<HoundStats>,
    /// Pid of the hound kept started ahead of demand (`PoolConfig::prestart`), if one is
    /// waiting now; the next replacement hound is this process.
    pub spare_pid: Option<u32>,
    /// Commit journals of the filesystem store waiting to become key files (as of the
    /// materialiser's last run, every 500 ms; always 0 for other targets). Grows while hounds journal faster than key files can be written, and
    /// drains when the load drops; the pool's shutdown materialises what is left.
    pub journal_backlog: u64,
    /// Bytes of those journals.
    pub journal_backlog_bytes: u64,
    /// Journal records the materialiser moved to `<root>/.tmp-conflicts/` because their key
    /// already held other bytes (two hounds stored one key differently; logged at error and
    /// reported by `houndd verify`). Should stay 0.
    pub journal_conflicts: u64,
    /// The sandbox report of the most recently started hound.
    pub sandbox: Option<SandboxReport>,
}

impl PoolStats {
    /// Whether the accounting identity holds (it does by construction of `in_flight`; tests
    /// also compare `in_flight` with the independently counted gauges when quiescent).
    pub fn identity_holds(&self) -> bool {
        self.accepted
            == self.completed + self.failed + self.timed_out + self.dropped + self.in_flight
    }
}

impl Counters {
    /// Reads terminal counters before `accepted`, so `in_flight` never goes negative.
    pub(crate) fn snapshot_into(&self, s: &mut PoolStats) {
        s.completed = self.completed.get_sc();
        s.failed = self.failed.get_sc();
        s.timed_out = self.timed_out.get_sc();
        s.dropped = self.dropped.get_sc();
        s.accepted = self.accepted.get_sc();
        s.submitted = self.submitted.get();
        let terminal = s.completed + s.failed + s.timed_out + s.dropped;
        s.in_flight = s.accepted.saturating_sub(terminal);
        // A terminal event counted before its acceptance became visible can make accepted
        // appear smaller for an instant; never report it that way.
        if s.accepted < terminal {
            s.accepted = terminal;
        }
        s.refused = RefusedStats {
            exhausted: self.refused_exhausted.get(),
            defer_full: self.refused_defer_full.get(),
            too_large: self.refused_too_large.get(),
            invalid: self.refused_invalid.get(),
            shutdown: self.refused_shutdown.get(),
        };
        s.undelivered = self.undelivered.get();
        s.escalations = self.escalations.get();
        s.deferred_total = self.deferred_total.get();
        s.retries = self.retries.get();
        s.poison = self.poison.get();
        s.hound_spawns = self.hound_spawns.get();
        s.hound_exits = self.hound_exits.get();
        s.spawn_failures = self.spawn_failures.get();
        s.watchdog_kills = self.watchdog_kills.get();
        s.protocol_violations = self.protocol_violations.get();
        s.oom_kills = self.oom_kills.get();
        s.restarts = self.restarts.get();
        s.circuit_opens = self.circuit_opens.get();
        s.rotations = self.rotations.get();
        s.high_water_retirements = self.high_water_retirements.get();
        s.retire_kills = self.retire_kills.get();
        s.callback_panics = self.callback_panics.get();
        s.hound_log_suppressed = self.hound_log_suppressed.get();
    }
}
