//! The accounting checker: every accepted job must have exactly one outcome.
//!
//! Tickets (accepted job ids) and outcome ids are recorded by different threads in whatever
//! order they happen — an outcome may well be seen before the submitter has recorded its
//! ticket — and are reconciled once, after the pool has shut down.

/// Ids recorded during a run.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    accepted: Vec<u64>,
    outcomes: Vec<u64>,
}

/// The result of reconciling a [`Ledger`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Distinct accepted job ids.
    pub accepted: u64,
    /// Accepted jobs with no outcome.
    pub lost: u64,
    /// Outcomes beyond the first for one accepted job.
    pub duplicates: u64,
    /// Outcomes for ids that were never accepted.
    pub unknown: u64,
    /// Tickets handed out more than once for the same id (beyond the first).
    pub duplicate_tickets: u64,
    /// Up to eight example ids per problem, for the error message.
    pub examples: Vec<(Problem, u64)>,
}

/// What went wrong with one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Accepted, no outcome.
    Lost,
    /// More than one outcome.
    Duplicate,
    /// Outcome without acceptance.
    Unknown,
    /// Same id accepted twice.
    DuplicateTicket,
}

impl Verdict {
    /// Whether every accepted job had exactly one outcome and nothing else arrived.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.unknown == 0 && self.duplicate_tickets == 0
    }

    /// Duplicates as the report counts them: second outcomes plus outcomes for unknown ids.
    pub fn reported_duplicates(&self) -> u64 {
        self.duplicates + self.unknown + self.duplicate_tickets
    }

    /// A one-line description of every violation (empty when clean).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what, p) in [
            (self.lost, "accepted jobs without an outcome", Problem::Lost),
            (self.duplicates, "duplicate outcomes", Problem::Duplicate),
            (
                self.unknown,
                "outcomes for never-accepted ids",
                Problem::Unknown,
            ),
            (
                self.duplicate_tickets,
                "job ids accepted twice",
                Problem::DuplicateTicket,
            ),
        ] {
            if n > 0 {
                let ex: Vec<String> = self
                    .examples
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, id)| id.to_string())
                    .collect();
                parts.push(format!("{n} {what} (e.g. job {})", ex.join(", ")));
            }
        }
        parts.join("; ")
    }
}

impl Ledger {
    /// An empty ledger with room for `n` jobs.
    pub fn with_capacity(n: usize) -> Self {
        Ledger {
            accepted: Vec::with_capacity(n),
            outcomes: Vec::with_capacity(n),
        }
    }

    /// Records a ticket.
    pub fn accepted(&mut self, id: u64) {
        self.accepted.push(id);
    }

    /// Tickets recorded so far.
    pub fn accepted_count(&self) -> usize {
        self.accepted.len()
    }

    /// Adds the outcomes recorded by another thread.
    pub fn extend_outcomes(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.outcomes.extend(ids);
    }

    /// Reconciles tickets and outcomes (O(n log n), sorting both lists).
    pub fn reconcile(mut self) -> Verdict {
        self.accepted.sort_unstable();
        self.outcomes.sort_unstable();
        let mut v = Verdict::default();
        let note = |v: &mut Verdict, p: Problem, id: u64| {
            if v.examples.iter().filter(|(q, _)| *q == p).count() < 8 {
                v.examples.push((p, id));
            }
        };
        let (a, o) = (&self.accepted, &self.outcomes);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < o.len() {
            let id = match (a.get(i), o.get(j)) {
                (Some(&x), Some(&y)) => x.min(y),
                (Some(&x), None) => x,
                (None, Some(&y)) => y,
                (None, None) => break,
            };
            let na = a[i..].iter().take_while(|&&x| x == id).count() as u64;
            let no = o[j..].iter().take_while(|&&y| y == id).count() as u64;
            i += na as usize;
            j += no as usize;
            if na == 0 {
                v.unknown += no;
                note(&mut v, Problem::Unknown, id);
                continue;
            }
            v.accepted += 1;
            if na > 1 {
                v.duplicate_tickets += na - 1;
                note(&mut v, Problem::DuplicateTicket, id);
            }
            match no {
                0 => {
                    v.lost += 1;
                    note(&mut v, Problem::Lost, id);
                }
                1 => {}
                n => {
                    v.duplicates += n - 1;
                    note(&mut v, Problem::Duplicate, id);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(accepted: &[u64], outcomes: &[u64]) -> Verdict {
        let mut l = Ledger::with_capacity(accepted.len());
        accepted.iter().for_each(|&id| l.accepted(id));
        l.extend_outcomes(outcomes.iter().copied());
        l.reconcile()
    }

    #[test]
    fn exactly_one_outcome_each_is_clean_in_any_order() {
        let v = ledger(&[3, 1, 2, 10], &[10, 2, 3, 1]);
        assert!(v.is_clean(), "{v:?}");
        assert_eq!(v.accepted, 4);
        assert_eq!(v.describe(), "");
    }

    #[test]
    fn a_missing_outcome_is_lost() {
        let v = ledger(&[1, 2, 3, 4], &[1, 3]);
        assert_eq!(v.lost, 2);
        assert_eq!(v.duplicates, 0);
        assert!(!v.is_clean());
        assert!(v.examples.contains(&(Problem::Lost, 2)));
        assert!(v.examples.contains(&(Problem::Lost, 4)));
        assert!(v.describe().contains("2 accepted jobs without an outcome"));
    }

    #[test]
    fn a_second_outcome_is_a_duplicate() {
        let v = ledger(&[1, 2], &[1, 2, 2, 2]);
        assert_eq!(v.duplicates, 2);
        assert_eq!(v.lost, 0);
        assert_eq!(v.reported_duplicates(), 2);
        assert!(v.examples.contains(&(Problem::Duplicate, 2)));
    }

    #[test]
    fn outcomes_for_unaccepted_ids_and_repeated_tickets_are_violations() {
        let v = ledger(&[5, 5, 6], &[5, 6, 7]);
        assert_eq!(v.unknown, 1);
        assert_eq!(v.duplicate_tickets, 1);
        assert_eq!(v.accepted, 2);
        assert_eq!(v.reported_duplicates(), 2);
        assert!(!v.is_clean());
        let d = v.describe();
        assert!(d.contains("never-accepted") && d.contains("job 7"), "{d}");
    }

    #[test]
    fn lost_and_duplicate_together() {
        let v = ledger(&[1, 2, 3], &[1, 1, 3]);
        assert_eq!((v.lost, v.duplicates), (1, 1));
        assert_eq!(v.accepted, 3);
    }

    #[test]
    fn examples_are_bounded() {
        let accepted: Vec<u64> = (0..100).collect();
        let v = ledger(&accepted, &[]);
        assert_eq!(v.lost, 100);
        assert_eq!(v.examples.len(), 8);
    }
}
