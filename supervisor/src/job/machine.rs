//! The job state machine: one enum of states ([`JobState`]), one function per transition, and
//! the table of every transition ([`TRANSITIONS`]).
//!
//! The books (`crate::state`) keep a job where its state says: the defer queue (`Deferred`), a
//! slot's in-flight list (`Queued` behind another job, `Running` at the front), the collector's
//! retry queue (`Retrying`). `submit` and the collector ask these functions what happens to a
//! job (where it is placed, whether a hound's death is charged to it, retry or poison, which
//! outcome a cancel or the shutdown gives it) and then move it or deliver the outcome the
//! [`Step`] names. The functions are pure: no process, no thread, no lock.
//!
//! Every step is checked against [`TRANSITIONS`] (in debug builds), and a unit test checks
//! that docs/ARCHITECTURE.md shows exactly the lines [`render`] makes of that table.
//!
//! Exactly one outcome per accepted job: a step carries an outcome if and only if it enters
//! `Done`, and `Done` is left by no transition (a completion or a death reported later for a
//! cancelled record is discarded).

use std::fmt;

use houndpool_protocol::job::Severity;

use super::{DropReason, FailReason, HoundDeath, OutcomeKind};

/// Why the supervisor killed a hound: what its death means for the jobs it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KillCause {
    /// The job `job_id` was at the front of the ring when its deadline passed. Only that job
    /// is charged with `TimedOut` (if it completed meanwhile, nobody is).
    Watchdog {
        /// The job that was late.
        job_id: u64,
    },
    /// The hound broke the protocol; the detail (escaped hound text) goes into the outcome of
    /// the job at its front.
    Violation(String),
    /// The shutdown grace was over.
    Shutdown,
    /// `Pool::cancel` of this job, at the head of the hound's ring.
    Cancelled(u64),
    /// Asked to exit (retirement `Shutdown`) or announced its end (`Fatal`), and still alive
    /// `retire_grace` later. Its jobs are settled as after a crash.
    ExitDeadline,
}

/// The hounds a job has met, carried with it wherever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct History {
    /// Hounds the job has been given to: 0 until its first placement, 1 on it, 2 after a retry.
    pub(crate) attempt: u8,
    /// Deaths of hounds while the job was at their front (the second makes it a poison job).
    pub(crate) deaths: u8,
}

/// Where an accepted job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Accepted by `submit`, neither placed nor deferred yet (inside one `submit` call).
    Submitted,
    /// In the defer queue, in the lane of its severity.
    Deferred {
        /// Its lane.
        lane: Severity,
    },
    /// In the ring of `slot`, behind another job: not started.
    Queued {
        /// The slot.
        slot: u32,
        /// Its hounds so far, this one included.
        history: History,
    },
    /// At the front of `slot`'s ring: running, or the next job the hound takes.
    Running {
        /// The slot.
        slot: u32,
        /// Its hounds so far, this one included.
        history: History,
    },
    /// In the collector's retry queue after a hound died holding it.
    Retrying {
        /// Its hounds so far (the next placement adds one).
        history: History,
    },
    /// Its one outcome was delivered.
    Done(Phase),
}

/// The name of a state, with the outcome for `Done`: what the table and the docs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Phase {
    /// [`JobState::Submitted`].
    Submitted,
    /// [`JobState::Deferred`].
    Deferred,
    /// [`JobState::Queued`].
    Queued,
    /// [`JobState::Running`].
    Running,
    /// [`JobState::Retrying`].
    Retrying,
    /// Done: `Completed`.
    Completed,
    /// Done: `Failed(Job{code})`, the hound reported a failure.
    FailedJob,
    /// Done: `Failed(Poison)`.
    FailedPoison,
    /// Done: `Failed(OutOfMemory)`.
    FailedOutOfMemory,
    /// Done: `Failed(HoundKilled)`.
    FailedHoundKilled,
    /// Done: `Failed(ProtocolViolation)`.
    FailedProtocolViolation,
    /// Done: `TimedOut`.
    TimedOut,
    /// Done: `Dropped(Evicted)`.
    DroppedEvicted,
    /// Done: `Dropped(Cancelled)`.
    DroppedCancelled,
    /// Done: `Dropped(Shutdown)`.
    DroppedShutdown,
}

impl Phase {
    /// The name the docs use.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Phase::Submitted => "Submitted",
            Phase::Deferred => "Deferred",
            Phase::Queued => "Queued",
            Phase::Running => "Running",
            Phase::Retrying => "Retrying",
            Phase::Completed => "Completed",
            Phase::FailedJob => "Failed(Job)",
            Phase::FailedPoison => "Failed(Poison)",
            Phase::FailedOutOfMemory => "Failed(OutOfMemory)",
            Phase::FailedHoundKilled => "Failed(HoundKilled)",
            Phase::FailedProtocolViolation => "Failed(ProtocolViolation)",
            Phase::TimedOut => "TimedOut",
            Phase::DroppedEvicted => "Dropped(Evicted)",
            Phase::DroppedCancelled => "Dropped(Cancelled)",
            Phase::DroppedShutdown => "Dropped(Shutdown)",
        }
    }

    /// The `Done` phase of an outcome.
    pub(crate) fn of_outcome(result: &OutcomeKind) -> Phase {
        match result {
            OutcomeKind::Completed(_) => Phase::Completed,
            OutcomeKind::Failed(FailReason::Job { .. }) => Phase::FailedJob,
            OutcomeKind::Failed(FailReason::Poison { .. }) => Phase::FailedPoison,
            OutcomeKind::Failed(FailReason::OutOfMemory) => Phase::FailedOutOfMemory,
            OutcomeKind::Failed(FailReason::HoundKilled { .. }) => Phase::FailedHoundKilled,
            OutcomeKind::Failed(FailReason::ProtocolViolation { .. }) => {
                Phase::FailedProtocolViolation
            }
            OutcomeKind::TimedOut => Phase::TimedOut,
            OutcomeKind::Dropped(DropReason::Evicted { .. }) => Phase::DroppedEvicted,
            OutcomeKind::Dropped(DropReason::Cancelled) => Phase::DroppedCancelled,
            OutcomeKind::Dropped(DropReason::Shutdown) => Phase::DroppedShutdown,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl JobState {
    /// Its phase.
    pub(crate) fn phase(&self) -> Phase {
        match self {
            JobState::Submitted => Phase::Submitted,
            JobState::Deferred { .. } => Phase::Deferred,
            JobState::Queued { .. } => Phase::Queued,
            JobState::Running { .. } => Phase::Running,
            JobState::Retrying { .. } => Phase::Retrying,
            JobState::Done(p) => *p,
        }
    }

    /// The state of a job found in `slot`'s in-flight list: `Running` at its front, `Queued`
    /// behind it, `Done(Dropped(Cancelled))` for a record `Pool::cancel` already withdrew.
    pub(crate) fn in_ring(slot: u32, front: bool, history: History, cancelled: bool) -> Self {
        if cancelled {
            return JobState::Done(Phase::DroppedCancelled);
        }
        let queued = JobState::Queued { slot, history };
        if front {
            self::front(&queued).next
        } else {
            queued
        }
    }

    /// Its history (default for a job that was never placed).
    pub(crate) fn history(&self) -> History {
        match self {
            JobState::Queued { history, .. }
            | JobState::Running { history, .. }
            | JobState::Retrying { history } => *history,
            JobState::Submitted | JobState::Deferred { .. } | JobState::Done(_) => {
                History::default()
            }
        }
    }
}

/// Which rule a transition followed: the label of its arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rule {
    /// Copied into a ring with room.
    Place,
    /// No ring had room and the pool defers.
    Defer,
    /// The jobs ahead of it left the ring.
    Front,
    /// Its hound reported it.
    Complete,
    /// A completion or death for a record already cancelled: nothing happens.
    Discard,
    /// A full defer queue took a job of higher severity instead.
    Evict,
    /// `Pool::cancel` of a job not started.
    Cancel,
    /// `Pool::cancel` of the job at a ring's front: its hound is killed.
    CancelKill,
    /// Its hound, killed for its cancel, died.
    CancelledKill,
    /// Its hound died while it was at the front, for the first time.
    Crash,
    /// Its hound died while it was at the front, for the second time.
    Poison,
    /// Its hound died, and the death is not charged to it (it was behind the front, or the
    /// hound was killed for another job).
    NotCharged,
    /// Its deadline passed while it was at the front: the watchdog killed its hound.
    Watchdog,
    /// Its hound ran out of memory.
    OutOfMemory,
    /// Its hound was killed by SIGSYS (a forbidden system call).
    Sigsys,
    /// Its hound broke the protocol.
    Violation,
    /// The shutdown grace is over.
    Shutdown,
    /// Its own request record could not be read back for the retry.
    RecordLost,
}

impl Rule {
    /// The label of the arrow in the docs.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Rule::Place => "placed in a ring",
            Rule::Defer => "no ring has room (Defer)",
            Rule::Front => "reached the front",
            Rule::Complete => "completion",
            Rule::Discard => "its record's completion or death: discarded",
            Rule::Evict => "evicted by a higher severity",
            Rule::Cancel => "cancel",
            Rule::CancelKill => "cancel: hound SIGKILLed",
            Rule::CancelledKill => "hound killed for its cancel died",
            Rule::Crash => "hound died, 1st death at the front",
            Rule::Poison => "hound died, 2nd death at the front",
            Rule::NotCharged => "hound died, not charged to it",
            Rule::Watchdog => "deadline passed at the front: hound SIGKILLed",
            Rule::OutOfMemory => "hound out of memory",
            Rule::Sigsys => "hound killed by SIGSYS",
            Rule::Violation => "hound broke the protocol",
            Rule::Shutdown => "shutdown grace over",
            Rule::RecordLost => "own request record unreadable",
        }
    }
}

/// Every transition: (from, rule, to). Each [`Step`] is checked against it in debug builds,
/// the docs' diagram is this table ([`render`]), and the unit tests exercise every row.
pub(crate) const TRANSITIONS: &[(Phase, Rule, Phase)] = &[
    (Phase::Submitted, Rule::Place, Phase::Queued),
    (Phase::Submitted, Rule::Defer, Phase::Deferred),
    (Phase::Deferred, Rule::Place, Phase::Queued),
    (Phase::Deferred, Rule::Evict, Phase::DroppedEvicted),
    (Phase::Deferred, Rule::Cancel, Phase::DroppedCancelled),
    (Phase::Deferred, Rule::Shutdown, Phase::DroppedShutdown),
    (Phase::Queued, Rule::Front, Phase::Running),
    (Phase::Queued, Rule::Cancel, Phase::DroppedCancelled),
    (Phase::Queued, Rule::NotCharged, Phase::Retrying),
    (Phase::Queued, Rule::Shutdown, Phase::DroppedShutdown),
    (Phase::Running, Rule::Complete, Phase::Completed),
    (Phase::Running, Rule::Complete, Phase::FailedJob),
    (Phase::Running, Rule::CancelKill, Phase::Running),
    (Phase::Running, Rule::CancelledKill, Phase::DroppedCancelled),
    (Phase::Running, Rule::Watchdog, Phase::TimedOut),
    (Phase::Running, Rule::Crash, Phase::Retrying),
    (Phase::Running, Rule::Poison, Phase::FailedPoison),
    (Phase::Running, Rule::NotCharged, Phase::Retrying),
    (Phase::Running, Rule::OutOfMemory, Phase::FailedOutOfMemory),
    (Phase::Running, Rule::Sigsys, Phase::FailedHoundKilled),
    (
        Phase::Running,
        Rule::Violation,
        Phase::FailedProtocolViolation,
    ),
    (Phase::Running, Rule::Shutdown, Phase::DroppedShutdown),
    (Phase::Retrying, Rule::Place, Phase::Queued),
    (Phase::Retrying, Rule::Cancel, Phase::DroppedCancelled),
    (Phase::Retrying, Rule::Shutdown, Phase::DroppedShutdown),
    (
        Phase::Retrying,
        Rule::RecordLost,
        Phase::FailedProtocolViolation,
    ),
    (
        Phase::DroppedCancelled,
        Rule::Discard,
        Phase::DroppedCancelled,
    ),
];

/// The lines of the docs' diagram, one per row of [`TRANSITIONS`] (the unit tests check that
/// docs/ARCHITECTURE.md holds them).
#[cfg(test)]
pub(crate) fn render() -> String {
    let from_width = TRANSITIONS
        .iter()
        .map(|(from, _, _)| from.name().len())
        .max()
        .unwrap_or(0);
    let label_width = TRANSITIONS
        .iter()
        .map(|(_, rule, _)| rule.label().chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (from, rule, to) in TRANSITIONS {
        let label = rule.label();
        let fill = "─".repeat(label_width - label.chars().count());
        out.push_str(&format!(
            "{:<from_width$} ──{label} {fill}──► {}\n",
            from.name(),
            to.name()
        ));
    }
    out
}

/// A job's one outcome: how many hounds started it and what happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// `Outcome::attempts`.
    pub(crate) attempts: u8,
    /// `Outcome::result`.
    pub(crate) result: OutcomeKind,
}

/// One transition: the rule that applied, the new state, and the outcome to deliver (exactly
/// when `next` is `Done` and the job was not `Done` before).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// The arrow taken.
    pub(crate) rule: Rule,
    /// Where the job is now.
    pub(crate) next: JobState,
    /// The outcome to deliver.
    pub(crate) outcome: Option<Verdict>,
}

/// A step that is checked against [`TRANSITIONS`] (debug builds).
fn step(from: &JobState, rule: Rule, next: JobState, outcome: Option<Verdict>) -> Step {
    debug_assert!(
        TRANSITIONS.contains(&(from.phase(), rule, next.phase())),
        "no transition {} ──{}──► {}",
        from.phase(),
        rule.label(),
        next.phase()
    );
    debug_assert_eq!(
        outcome.is_some(),
        matches!(next, JobState::Done(_)) && !matches!(from, JobState::Done(_)),
        "an outcome exactly when a job becomes done"
    );
    Step {
        rule,
        next,
        outcome,
    }
}

/// A step into `Done` with `result`.
fn finish(from: &JobState, rule: Rule, attempts: u8, result: OutcomeKind) -> Step {
    let next = JobState::Done(Phase::of_outcome(&result));
    step(from, rule, next, Some(Verdict { attempts, result }))
}

/// Placement into `slot`'s ring (from `submit`, the defer queue or the retry queue): the job
/// is given to one more hound.
pub(crate) fn place(from: &JobState, slot: u32) -> Step {
    let mut history = from.history();
    history.attempt = history.attempt.saturating_add(1);
    step(from, Rule::Place, JobState::Queued { slot, history }, None)
}

/// No ring had room and the pool defers: into the lane of `lane`.
pub(crate) fn defer(from: &JobState, lane: Severity) -> Step {
    step(from, Rule::Defer, JobState::Deferred { lane }, None)
}

/// The job reached the front of its ring (`from` is `Queued`; any other state stays).
pub(crate) fn front(from: &JobState) -> Step {
    match *from {
        JobState::Queued { slot, history } => {
            step(from, Rule::Front, JobState::Running { slot, history }, None)
        }
        _ => Step {
            rule: Rule::Front,
            next: *from,
            outcome: None,
        },
    }
}

/// The defer queue evicted the job for one of severity `by`.
pub(crate) fn evict(from: &JobState, by: Severity) -> Step {
    finish(
        from,
        Rule::Evict,
        0,
        OutcomeKind::Dropped(DropReason::Evicted { by }),
    )
}

/// Its hound reported the job with `result` (validated): the outcome, unless the record was
/// cancelled (then the result is discarded).
pub(crate) fn complete(from: &JobState, result: OutcomeKind) -> Step {
    match from {
        JobState::Running { history, .. } => finish(from, Rule::Complete, history.attempt, result),
        _ => step(from, Rule::Discard, *from, None),
    }
}

/// `Pool::cancel` of the job. Not started (defer queue, retry queue, behind the front of a
/// ring): `Dropped(Cancelled)` now. At the front of a ring: [`Rule::CancelKill`], the caller
/// kills the hound with [`KillCause::Cancelled`] and the outcome comes from [`hound_died`].
pub(crate) fn cancel(from: &JobState) -> Step {
    let cancelled = OutcomeKind::Dropped(DropReason::Cancelled);
    match from {
        JobState::Deferred { .. } => finish(from, Rule::Cancel, 0, cancelled),
        JobState::Retrying { history } => finish(from, Rule::Cancel, history.attempt, cancelled),
        // Not started on this hound: it does not count.
        JobState::Queued { history, .. } => finish(
            from,
            Rule::Cancel,
            history.attempt.saturating_sub(1),
            cancelled,
        ),
        JobState::Running { .. } => step(from, Rule::CancelKill, *from, None),
        JobState::Submitted | JobState::Done(_) => step(from, Rule::Discard, *from, None),
    }
}

/// The shutdown grace is over for a job in the defer or retry queue (a job in a ring is
/// settled by [`hound_died`] with [`KillCause::Shutdown`]).
pub(crate) fn shutdown(from: &JobState) -> Step {
    let attempts = from.history().attempt;
    finish(
        from,
        Rule::Shutdown,
        attempts,
        OutcomeKind::Dropped(DropReason::Shutdown),
    )
}

/// The retry's own request record could not be read back from the dead hound's ring.
pub(crate) fn record_lost(from: &JobState, detail: String) -> Step {
    let attempts = from.history().attempt;
    finish(
        from,
        Rule::RecordLost,
        attempts,
        OutcomeKind::Failed(FailReason::ProtocolViolation { detail }),
    )
}

/// What the death of its hound means for job `job_id` in state `from` (`Running` at the front,
/// `Queued` behind it): the hound died with `death`, killed for `cause` if the supervisor
/// killed it; `out_of_memory` if it ran out of memory (only judged when nobody killed it).
///
/// Only the job at the front is charged: hounds run their ring in order, so the others never
/// started. A first charged death retries the job elsewhere, a second makes it a poison job.
pub(crate) fn hound_died(
    job_id: u64,
    from: &JobState,
    cause: Option<&KillCause>,
    death: HoundDeath,
    out_of_memory: bool,
) -> Step {
    let (front, history) = match *from {
        JobState::Running { history, .. } => (true, history),
        JobState::Queued { history, .. } => (false, history),
        _ => return step(from, Rule::Discard, *from, None),
    };
    let attempts = history.attempt;
    let retry = |rule, charged: bool| {
        let mut history = history;
        if charged {
            history.deaths = history.deaths.saturating_add(1);
        }
        step(from, rule, JobState::Retrying { history }, None)
    };
    match (cause, front) {
        (Some(KillCause::Shutdown), _) => finish(
            from,
            Rule::Shutdown,
            attempts,
            OutcomeKind::Dropped(DropReason::Shutdown),
        ),
        // `Pool::cancel` killed the hound for this job; its other jobs are retried uncharged.
        (Some(KillCause::Cancelled(id)), true) if *id == job_id => finish(
            from,
            Rule::CancelledKill,
            attempts,
            OutcomeKind::Dropped(DropReason::Cancelled),
        ),
        // Only the job that was at the front when the deadline passed: if it completed between
        // the check and the kill, the job now at the front did not time out.
        (Some(KillCause::Watchdog { job_id: late }), true) if *late == job_id => {
            finish(from, Rule::Watchdog, attempts, OutcomeKind::TimedOut)
        }
        (Some(KillCause::Violation(d)), true) => finish(
            from,
            Rule::Violation,
            attempts,
            OutcomeKind::Failed(FailReason::ProtocolViolation { detail: d.clone() }),
        ),
        (None | Some(KillCause::ExitDeadline), true) if out_of_memory => finish(
            from,
            Rule::OutOfMemory,
            attempts,
            OutcomeKind::Failed(FailReason::OutOfMemory),
        ),
        (None | Some(KillCause::ExitDeadline), true) => match death {
            HoundDeath::Signaled(sig) if sig == libc::SIGSYS => finish(
                from,
                Rule::Sigsys,
                attempts,
                OutcomeKind::Failed(FailReason::HoundKilled { signal: sig }),
            ),
            _ if history.deaths.saturating_add(1) >= 2 => finish(
                from,
                Rule::Poison,
                attempts,
                OutcomeKind::Failed(FailReason::Poison { last_death: death }),
            ),
            _ => retry(Rule::Crash, true),
        },
        _ => retry(Rule::NotCharged, false),
    }
}

#[cfg(test)]
mod tests;
