//! The state machine without processes: one test per transition of [`TRANSITIONS`], the table
//! against the functions and the docs, and exactly-once accounting over random sequences.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::job::Receipt;

const KILL: HoundDeath = HoundDeath::Signaled(libc::SIGKILL);
const H1: History = History {
    attempt: 1,
    deaths: 0,
};

fn running(history: History) -> JobState {
    JobState::Running { slot: 0, history }
}

fn queued(history: History) -> JobState {
    JobState::Queued { slot: 0, history }
}

fn retrying(history: History) -> JobState {
    JobState::Retrying { history }
}

fn deferred() -> JobState {
    JobState::Deferred {
        lane: Severity::Low,
    }
}

fn completed() -> OutcomeKind {
    OutcomeKind::Completed(Receipt::default())
}

/// `s` took the arrow `from --rule--> to`.
#[track_caller]
fn check(s: &Step, from: Phase, rule: Rule, to: Phase) {
    assert_eq!(s.rule, rule, "rule");
    assert_eq!(s.next.phase(), to, "next");
    assert!(
        TRANSITIONS.contains(&(from, rule, to)),
        "row {from} {rule:?} {to}"
    );
}

/// The outcome's attempts and phase.
#[track_caller]
fn verdict(s: &Step) -> (u8, Phase) {
    let v = s.outcome.as_ref().expect("an outcome");
    (v.attempts, Phase::of_outcome(&v.result))
}

#[test]
fn submitted_placed_in_a_ring_is_queued_on_its_first_hound() {
    let s = place(&JobState::Submitted, 3);
    check(&s, Phase::Submitted, Rule::Place, Phase::Queued);
    assert_eq!(
        s.next,
        JobState::Queued {
            slot: 3,
            history: H1
        }
    );
    assert!(s.outcome.is_none());
}

#[test]
fn submitted_without_room_is_deferred_in_its_lane() {
    let s = defer(&JobState::Submitted, Severity::High);
    check(&s, Phase::Submitted, Rule::Defer, Phase::Deferred);
    assert_eq!(
        s.next,
        JobState::Deferred {
            lane: Severity::High
        }
    );
}

#[test]
fn deferred_placed_is_queued_on_its_first_hound() {
    let s = place(&deferred(), 1);
    check(&s, Phase::Deferred, Rule::Place, Phase::Queued);
    assert_eq!(s.next.history(), H1);
}

#[test]
fn deferred_evicted_is_dropped_evicted() {
    let s = evict(&deferred(), Severity::Critical);
    check(&s, Phase::Deferred, Rule::Evict, Phase::DroppedEvicted);
    assert_eq!(verdict(&s), (0, Phase::DroppedEvicted));
}

#[test]
fn deferred_cancelled_is_dropped_cancelled_never_started() {
    let s = cancel(&deferred());
    check(&s, Phase::Deferred, Rule::Cancel, Phase::DroppedCancelled);
    assert_eq!(verdict(&s), (0, Phase::DroppedCancelled));
}

#[test]
fn deferred_at_shutdown_is_dropped_shutdown() {
    let s = shutdown(&deferred());
    check(&s, Phase::Deferred, Rule::Shutdown, Phase::DroppedShutdown);
    assert_eq!(verdict(&s), (0, Phase::DroppedShutdown));
}

#[test]
fn queued_at_the_front_is_running() {
    let s = front(&queued(H1));
    check(&s, Phase::Queued, Rule::Front, Phase::Running);
    assert_eq!(JobState::in_ring(0, true, H1, false), running(H1));
    assert_eq!(JobState::in_ring(0, false, H1, false), queued(H1));
    assert_eq!(
        JobState::in_ring(0, true, H1, true),
        JobState::Done(Phase::DroppedCancelled)
    );
}

#[test]
fn queued_cancelled_is_dropped_and_its_unstarted_attempt_does_not_count() {
    let s = cancel(&queued(H1));
    check(&s, Phase::Queued, Rule::Cancel, Phase::DroppedCancelled);
    assert_eq!(verdict(&s), (0, Phase::DroppedCancelled));
    let retried = History {
        attempt: 2,
        deaths: 1,
    };
    assert_eq!(
        verdict(&cancel(&queued(retried))),
        (1, Phase::DroppedCancelled)
    );
}

#[test]
fn queued_when_its_hound_dies_is_retried_uncharged() {
    for cause in [
        None,
        Some(KillCause::ExitDeadline),
        Some(KillCause::Violation("x".into())),
        Some(KillCause::Watchdog { job_id: 1 }),
        Some(KillCause::Cancelled(1)),
    ] {
        let s = hound_died(2, &queued(H1), cause.as_ref(), KILL, true);
        check(&s, Phase::Queued, Rule::NotCharged, Phase::Retrying);
        assert_eq!(s.next, retrying(H1), "{cause:?}");
    }
}

#[test]
fn queued_at_shutdown_is_dropped_shutdown() {
    let s = hound_died(2, &queued(H1), Some(&KillCause::Shutdown), KILL, false);
    check(&s, Phase::Queued, Rule::Shutdown, Phase::DroppedShutdown);
    assert_eq!(verdict(&s), (1, Phase::DroppedShutdown));
}

#[test]
fn running_completion_is_completed() {
    let s = complete(&running(H1), completed());
    check(&s, Phase::Running, Rule::Complete, Phase::Completed);
    assert_eq!(verdict(&s), (1, Phase::Completed));
}

#[test]
fn running_failure_report_is_failed_job() {
    let failed = OutcomeKind::Failed(FailReason::Job {
        code: crate::job::FailCode::IntegrityViolation,
        message: "bad".into(),
    });
    let s = complete(&running(H1), failed);
    check(&s, Phase::Running, Rule::Complete, Phase::FailedJob);
}

#[test]
fn running_cancelled_kills_its_hound_and_waits_for_the_death() {
    let s = cancel(&running(H1));
    check(&s, Phase::Running, Rule::CancelKill, Phase::Running);
    assert!(s.outcome.is_none());
}

#[test]
fn running_whose_hound_was_killed_for_its_cancel_is_dropped_cancelled() {
    let cause = KillCause::Cancelled(7);
    let s = hound_died(7, &running(H1), Some(&cause), KILL, false);
    check(
        &s,
        Phase::Running,
        Rule::CancelledKill,
        Phase::DroppedCancelled,
    );
    assert_eq!(verdict(&s), (1, Phase::DroppedCancelled));
    // The hound's other jobs are retried uncharged.
    let other = hound_died(8, &queued(H1), Some(&cause), KILL, false);
    assert_eq!(other.next, retrying(H1));
}

#[test]
fn a_timeout_is_charged_only_to_the_job_at_the_front_at_the_deadline() {
    let cause = KillCause::Watchdog { job_id: 7 };
    // Job 7 was late and is still at the front: it timed out.
    let s = hound_died(7, &running(H1), Some(&cause), KILL, false);
    check(&s, Phase::Running, Rule::Watchdog, Phase::TimedOut);
    // Job 7 completed between the check and the kill: job 8, now at the front, did not time
    // out and is not charged with the death either.
    let s = hound_died(8, &running(H1), Some(&cause), KILL, false);
    check(&s, Phase::Running, Rule::NotCharged, Phase::Retrying);
    assert_eq!(s.next, retrying(H1));
}

#[test]
fn running_first_crash_is_retried_and_charged() {
    let s = hound_died(1, &running(H1), None, KILL, false);
    check(&s, Phase::Running, Rule::Crash, Phase::Retrying);
    assert_eq!(
        s.next,
        retrying(History {
            attempt: 1,
            deaths: 1
        })
    );
    // A hound that overstayed its exit grace is settled as a crash.
    let s = hound_died(1, &running(H1), Some(&KillCause::ExitDeadline), KILL, false);
    check(&s, Phase::Running, Rule::Crash, Phase::Retrying);
}

#[test]
fn running_second_crash_is_a_poison_job() {
    let once = History {
        attempt: 2,
        deaths: 1,
    };
    let s = hound_died(1, &running(once), None, KILL, false);
    check(&s, Phase::Running, Rule::Poison, Phase::FailedPoison);
    assert_eq!(verdict(&s), (2, Phase::FailedPoison));
}

#[test]
fn running_when_its_hound_runs_out_of_memory_fails_out_of_memory() {
    let s = hound_died(1, &running(H1), None, KILL, true);
    check(
        &s,
        Phase::Running,
        Rule::OutOfMemory,
        Phase::FailedOutOfMemory,
    );
}

#[test]
fn running_when_its_hound_is_killed_by_sigsys_fails_hound_killed() {
    let sigsys = HoundDeath::Signaled(libc::SIGSYS);
    let s = hound_died(1, &running(H1), None, sigsys, false);
    check(&s, Phase::Running, Rule::Sigsys, Phase::FailedHoundKilled);
    assert_eq!(
        s.outcome.map(|v| v.result),
        Some(OutcomeKind::Failed(FailReason::HoundKilled {
            signal: libc::SIGSYS
        }))
    );
}

#[test]
fn running_when_its_hound_broke_the_protocol_fails_protocol_violation() {
    let v = KillCause::Violation("x".into());
    let s = hound_died(1, &running(H1), Some(&v), KILL, false);
    check(
        &s,
        Phase::Running,
        Rule::Violation,
        Phase::FailedProtocolViolation,
    );
}

#[test]
fn running_at_shutdown_is_dropped_shutdown() {
    let s = hound_died(1, &running(H1), Some(&KillCause::Shutdown), KILL, false);
    check(&s, Phase::Running, Rule::Shutdown, Phase::DroppedShutdown);
}

#[test]
fn retrying_placed_is_queued_on_one_more_hound() {
    let h = History {
        attempt: 1,
        deaths: 1,
    };
    let s = place(&retrying(h), 2);
    check(&s, Phase::Retrying, Rule::Place, Phase::Queued);
    assert_eq!(
        s.next,
        JobState::Queued {
            slot: 2,
            history: History {
                attempt: 2,
                deaths: 1
            }
        }
    );
}

#[test]
fn retrying_cancelled_is_dropped_cancelled() {
    let s = cancel(&retrying(H1));
    check(&s, Phase::Retrying, Rule::Cancel, Phase::DroppedCancelled);
    assert_eq!(verdict(&s), (1, Phase::DroppedCancelled));
}

#[test]
fn retrying_at_shutdown_is_dropped_shutdown() {
    let s = shutdown(&retrying(H1));
    check(&s, Phase::Retrying, Rule::Shutdown, Phase::DroppedShutdown);
    assert_eq!(verdict(&s), (1, Phase::DroppedShutdown));
}

#[test]
fn retrying_whose_record_is_lost_fails_protocol_violation() {
    let s = record_lost(&retrying(H1), "gone".into());
    check(
        &s,
        Phase::Retrying,
        Rule::RecordLost,
        Phase::FailedProtocolViolation,
    );
}

#[test]
fn a_cancelled_record_discards_its_completion_and_its_death() {
    let done = JobState::Done(Phase::DroppedCancelled);
    let s = complete(&done, completed());
    check(
        &s,
        Phase::DroppedCancelled,
        Rule::Discard,
        Phase::DroppedCancelled,
    );
    assert!(s.outcome.is_none());
    let s = hound_died(1, &done, None, KILL, false);
    check(
        &s,
        Phase::DroppedCancelled,
        Rule::Discard,
        Phase::DroppedCancelled,
    );
    assert!(s.outcome.is_none());
}

/// Every input the functions can meet in the books, and the rows they produce.
fn produced() -> HashSet<(Phase, Rule, Phase)> {
    let histories = [
        History::default(),
        H1,
        History {
            attempt: 2,
            deaths: 1,
        },
    ];
    let mut from = vec![
        JobState::Submitted,
        deferred(),
        JobState::Done(Phase::DroppedCancelled),
    ];
    for h in histories {
        from.extend([queued(h), running(h), retrying(h)]);
    }
    let causes = [
        None,
        Some(KillCause::Watchdog { job_id: 1 }),
        Some(KillCause::Watchdog { job_id: 2 }),
        Some(KillCause::Violation("x".into())),
        Some(KillCause::Shutdown),
        Some(KillCause::Cancelled(1)),
        Some(KillCause::Cancelled(2)),
        Some(KillCause::ExitDeadline),
    ];
    let mut rows = HashSet::new();
    let mut see = |f: &JobState, s: Step| rows.insert((f.phase(), s.rule, s.next.phase()));
    for f in &from {
        match f {
            JobState::Submitted => {
                see(f, place(f, 0));
                see(f, defer(f, Severity::Low));
            }
            JobState::Deferred { .. } => {
                see(f, place(f, 0));
                see(f, evict(f, Severity::High));
                see(f, cancel(f));
                see(f, shutdown(f));
            }
            JobState::Retrying { .. } => {
                see(f, place(f, 0));
                see(f, cancel(f));
                see(f, shutdown(f));
                see(f, record_lost(f, "x".into()));
            }
            JobState::Queued { .. } | JobState::Running { .. } => {
                if matches!(f, JobState::Queued { .. }) {
                    see(f, front(f));
                }
                see(f, cancel(f));
                for c in &causes {
                    for death in [KILL, HoundDeath::Signaled(libc::SIGSYS)] {
                        for oom in [false, true] {
                            see(f, hound_died(1, f, c.as_ref(), death, oom));
                        }
                    }
                }
                if matches!(f, JobState::Running { .. }) {
                    see(f, complete(f, completed()));
                    let failed = OutcomeKind::Failed(FailReason::Job {
                        code: crate::job::FailCode::Internal,
                        message: String::new(),
                    });
                    see(f, complete(f, failed));
                }
            }
            JobState::Done(_) => {
                see(f, complete(f, completed()));
                see(f, hound_died(1, f, None, KILL, false));
            }
        }
    }
    rows
}

#[test]
fn the_table_is_exactly_what_the_functions_do() {
    let table: HashSet<_> = TRANSITIONS.iter().copied().collect();
    assert_eq!(table.len(), TRANSITIONS.len(), "duplicate rows");
    let produced = produced();
    let missing: Vec<_> = table.difference(&produced).collect();
    let extra: Vec<_> = produced.difference(&table).collect();
    assert!(missing.is_empty(), "rows no function produces: {missing:?}");
    assert!(
        extra.is_empty(),
        "transitions missing from the table: {extra:?}"
    );
}

#[test]
fn the_docs_diagram_is_the_table() {
    let docs = include_str!("../../../../docs/ARCHITECTURE.md");
    let diagram = render();
    assert!(
        docs.contains(&diagram),
        "docs/ARCHITECTURE.md must contain the job transitions exactly as generated:\n{diagram}"
    );
    // And no transition line that the table does not have.
    let ours: HashSet<&str> = diagram.lines().collect();
    for line in docs
        .lines()
        .filter(|l| l.contains("──► ") && l.contains(" ──"))
    {
        let from = line.split_whitespace().next().unwrap_or("");
        let is_state = TRANSITIONS.iter().any(|(f, _, _)| f.name() == from);
        assert!(
            !is_state || ours.contains(line),
            "stale diagram line: {line}"
        );
    }
}

// Exactly-once accounting over random sequences of events on model books.

/// An event in the model books.
#[derive(Debug, Clone)]
enum Op {
    /// `submit`: into ring `slot` if `room`, else deferred (evicting when the queue is full).
    Submit { room: bool, slot: usize, lane: u8 },
    /// The hound of `slot` reports its front job.
    Complete { slot: usize, ok: bool },
    /// The hound of `slot` dies: `cause` 0 crash, 1 watchdog (front), 2 violation, 3 exit
    /// deadline; with `oom` / SIGSYS.
    Die {
        slot: usize,
        cause: u8,
        oom: bool,
        sigsys: bool,
    },
    /// The collector places the oldest retry, else the oldest deferred job, into `slot`.
    PlacePending { slot: usize },
    /// `Pool::cancel` of job number `job` (modulo the jobs so far).
    Cancel { job: usize },
}

const SLOTS: usize = 3;
const DEFER_LIMIT: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 0..SLOTS, 0u8..4).prop_map(|(room, slot, lane)| Op::Submit {
            room,
            slot,
            lane
        }),
        (0..SLOTS, any::<bool>()).prop_map(|(slot, ok)| Op::Complete { slot, ok }),
        (0..SLOTS, 0u8..4, any::<bool>(), any::<bool>()).prop_map(|(slot, cause, oom, sigsys)| {
            Op::Die {
                slot,
                cause,
                oom,
                sigsys,
            }
        }),
        (0..SLOTS).prop_map(|slot| Op::PlacePending { slot }),
        (0..64usize).prop_map(|job| Op::Cancel { job }),
    ]
}

/// A record in a ring (`InFlight`) or a queue (`Pending`).
#[derive(Debug, Clone, Copy)]
struct Rec {
    job: usize,
    history: History,
    cancelled: bool,
}

#[derive(Default)]
struct Books {
    /// The state the steps left each accepted job in.
    states: Vec<JobState>,
    /// Outcomes delivered per job.
    outcomes: Vec<u32>,
    rings: [Vec<Rec>; SLOTS],
    defer: Vec<(Severity, Rec)>,
    retry: Vec<Rec>,
}

impl Books {
    fn apply(&mut self, job: usize, s: &Step) {
        if s.outcome.is_some() {
            self.outcomes[job] += 1;
        }
        self.states[job] = s.next;
    }

    fn lane(l: u8) -> Severity {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][usize::from(l) % 4]
    }

    fn push_ring(&mut self, slot: usize, job: usize, from: &JobState) {
        let s = place(from, slot as u32);
        let history = s.next.history();
        self.apply(job, &s);
        self.rings[slot].push(Rec {
            job,
            history,
            cancelled: false,
        });
    }

    fn die(&mut self, slot: usize, cause: Option<KillCause>, death: HoundDeath, oom: bool) {
        let ring = std::mem::take(&mut self.rings[slot]);
        for (k, r) in ring.into_iter().enumerate() {
            let from = JobState::in_ring(slot as u32, k == 0, r.history, r.cancelled);
            let s = hound_died(r.job as u64, &from, cause.as_ref(), death, oom);
            if let JobState::Retrying { history } = s.next {
                self.retry.push(Rec { history, ..r });
            }
            if !r.cancelled {
                self.apply(r.job, &s);
            }
        }
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Submit { room, slot, lane } => {
                let job = self.states.len();
                self.states.push(JobState::Submitted);
                self.outcomes.push(0);
                let lane = Self::lane(lane);
                if room {
                    self.push_ring(slot, job, &JobState::Submitted);
                    return;
                }
                if self.defer.len() >= DEFER_LIMIT {
                    // Evict the oldest of the lowest lane strictly below, else refuse.
                    let victim = (0..self.defer.len())
                        .filter(|&i| self.defer[i].0 < lane)
                        .min_by_key(|&i| self.defer[i].0);
                    let Some(i) = victim else {
                        // Refused: never accepted, no outcome owed.
                        self.states.pop();
                        self.outcomes.pop();
                        return;
                    };
                    let (l, v) = self.defer.remove(i);
                    let s = evict(&JobState::Deferred { lane: l }, lane);
                    self.apply(v.job, &s);
                }
                let s = defer(&JobState::Submitted, lane);
                self.apply(job, &s);
                let rec = Rec {
                    job,
                    history: History::default(),
                    cancelled: false,
                };
                self.defer.push((lane, rec));
            }
            Op::Complete { slot, ok } => {
                if self.rings[slot].is_empty() {
                    return;
                }
                let r = self.rings[slot].remove(0);
                let from = JobState::in_ring(slot as u32, true, r.history, r.cancelled);
                let result = if ok {
                    completed()
                } else {
                    OutcomeKind::Failed(FailReason::Job {
                        code: crate::job::FailCode::Internal,
                        message: String::new(),
                    })
                };
                let s = complete(&from, result);
                if !r.cancelled {
                    self.apply(r.job, &s);
                }
            }
            Op::Die {
                slot,
                cause,
                oom,
                sigsys,
            } => {
                let front = self.rings[slot].first().map_or(0, |r| r.job as u64);
                let cause = match cause {
                    0 => None,
                    1 => Some(KillCause::Watchdog { job_id: front }),
                    2 => Some(KillCause::Violation("x".into())),
                    _ => Some(KillCause::ExitDeadline),
                };
                let death = if sigsys {
                    HoundDeath::Signaled(libc::SIGSYS)
                } else {
                    KILL
                };
                let oom = oom && matches!(cause, None | Some(KillCause::ExitDeadline));
                self.die(slot, cause, death, oom);
            }
            Op::PlacePending { slot } => {
                if !self.retry.is_empty() {
                    let r = self.retry.remove(0);
                    self.push_ring(slot, r.job, &JobState::Retrying { history: r.history });
                } else if !self.defer.is_empty() {
                    let (lane, r) = self.defer.remove(0);
                    self.push_ring(slot, r.job, &JobState::Deferred { lane });
                }
            }
            Op::Cancel { job } => {
                if self.states.is_empty() {
                    return;
                }
                let job = job % self.states.len();
                if let Some(i) = self.defer.iter().position(|(_, r)| r.job == job) {
                    let (lane, _) = self.defer.remove(i);
                    let s = cancel(&JobState::Deferred { lane });
                    self.apply(job, &s);
                    return;
                }
                if let Some(i) = self.retry.iter().position(|r| r.job == job) {
                    let r = self.retry.remove(i);
                    let s = cancel(&JobState::Retrying { history: r.history });
                    self.apply(job, &s);
                    return;
                }
                for slot in 0..SLOTS {
                    let Some(k) = self.rings[slot]
                        .iter()
                        .position(|r| r.job == job && !r.cancelled)
                    else {
                        continue;
                    };
                    let r = self.rings[slot][k];
                    let from = JobState::in_ring(slot as u32, k == 0, r.history, false);
                    let s = cancel(&from);
                    if s.rule == Rule::CancelKill {
                        self.die(slot, Some(KillCause::Cancelled(job as u64)), KILL, false);
                    } else {
                        self.rings[slot][k].cancelled = true;
                        self.apply(job, &s);
                    }
                    return;
                }
            }
        }
    }

    /// Jobs accepted and not yet done.
    fn in_flight(&self) -> usize {
        self.states
            .iter()
            .filter(|s| !matches!(s, JobState::Done(_)))
            .count()
    }

    /// Every job at most one outcome, one exactly when done; accepted = done + in flight.
    fn check(&self) {
        let delivered: u32 = self.outcomes.iter().sum();
        for (j, (n, s)) in self.outcomes.iter().zip(&self.states).enumerate() {
            assert!(*n <= 1, "job {j}: {n} outcomes");
            assert_eq!(*n == 1, matches!(s, JobState::Done(_)), "job {j}: {s:?}");
        }
        assert_eq!(self.states.len(), delivered as usize + self.in_flight());
    }

    fn shut_down(&mut self) {
        for slot in 0..SLOTS {
            self.die(slot, Some(KillCause::Shutdown), KILL, false);
        }
        for r in std::mem::take(&mut self.retry) {
            let s = shutdown(&JobState::Retrying { history: r.history });
            self.apply(r.job, &s);
        }
        for (lane, r) in std::mem::take(&mut self.defer) {
            let s = shutdown(&JobState::Deferred { lane });
            self.apply(r.job, &s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_accepted_job_gets_exactly_one_outcome(ops in proptest::collection::vec(op(), 0..80)) {
        let mut books = Books::default();
        for op in &ops {
            books.run(op);
            books.check();
        }
        books.shut_down();
        books.check();
        prop_assert_eq!(books.in_flight(), 0);
        prop_assert!(books.outcomes.iter().all(|&n| n == 1));
    }
}
