//! The bounded defer queue with severity lanes (`PoolExhaustedAction::Defer`).
//!
//! One FIFO per severity. `push` on a full queue evicts the oldest job of the lowest severity
//! that is strictly lower than the newcomer's; if there is none, the newcomer is refused.
//! `pop` serves the highest severity first, FIFO within a lane. Pure logic: no I/O, no locking.

use std::collections::VecDeque;

use houndpool_protocol::job::Severity;

/// Result of [`DeferQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued; nothing evicted.
    Queued,
    /// Queued after evicting this (older, strictly lower-severity) item.
    Evicted(T),
    /// Not queued: full and nothing of lower severity to evict. The item is handed back.
    Refused(T),
}

/// A bounded multi-lane FIFO.
#[derive(Debug)]
pub struct DeferQueue<T> {
    lanes: [VecDeque<T>; 4],
    len: usize,
    limit: usize,
}

impl<T> DeferQueue<T> {
    /// An empty queue holding at most `limit` items. Each lane is allocated up front (up to
    /// 65 536 entries) so pushes on the submit path do not reallocate under the queue's lock.
    pub fn new(limit: usize) -> Self {
        let cap = limit.min(65_536);
        DeferQueue {
            lanes: std::array::from_fn(|_| VecDeque::with_capacity(cap)),
            len: 0,
            limit,
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `item` in `severity`'s lane, evicting per the module rule when full.
    pub fn push(&mut self, severity: Severity, item: T) -> Pushed<T> {
        if self.len < self.limit {
            self.lanes[severity as usize].push_back(item);
            self.len += 1;
            return Pushed::Queued;
        }
        let victim_lane = Severity::ALL
            .iter()
            .take_while(|s| **s < severity)
            .find(|s| !self.lanes[**s as usize].is_empty());
        match victim_lane.and_then(|s| self.lanes[*s as usize].pop_front()) {
            Some(victim) => {
                self.lanes[severity as usize].push_back(item);
                Pushed::Evicted(victim)
            }
            None => Pushed::Refused(item),
        }
    }

    /// Takes the oldest item of the highest non-empty severity.
    pub fn pop(&mut self) -> Option<T> {
        let item = self.lanes.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        Some(item)
    }

    /// The item `pop` would return, left in place (so a failed placement never has to put it
    /// back, which would let the queue exceed its limit).
    pub fn front(&self) -> Option<&T> {
        self.lanes.iter().rev().find_map(|l| l.front())
    }

    /// Removes and returns everything, highest severity first.
    pub fn drain_all(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(x) = self.pop() {
            out.push(x);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::*;

    #[test]
    fn serves_highest_severity_first_fifo_within_lane() {
        let mut q = DeferQueue::new(10);
        q.push(Low, 1);
        q.push(High, 2);
        q.push(Low, 3);
        q.push(Critical, 4);
        q.push(High, 5);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![4, 2, 5, 1, 3]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn full_queue_evicts_oldest_of_lowest_strictly_lower_lane() {
        let mut q = DeferQueue::new(3);
        assert_eq!(q.push(Medium, "m1"), Pushed::Queued);
        assert_eq!(q.push(Low, "l1"), Pushed::Queued);
        assert_eq!(q.push(Low, "l2"), Pushed::Queued);
        // High evicts the oldest Low first, then the next Low, then Medium.
        assert_eq!(q.push(High, "h1"), Pushed::Evicted("l1"));
        assert_eq!(q.push(High, "h2"), Pushed::Evicted("l2"));
        assert_eq!(q.push(High, "h3"), Pushed::Evicted("m1"));
        // Same severity never evicts.
        assert_eq!(q.push(High, "h4"), Pushed::Refused("h4"));
        assert_eq!(q.push(Low, "l3"), Pushed::Refused("l3"));
        assert_eq!(q.len(), 3);
        assert_eq!(q.push(Critical, "c1"), Pushed::Evicted("h1"));
    }

    #[test]
    fn zero_limit_refuses_everything_it_cannot_evict() {
        let mut q = DeferQueue::new(0);
        assert_eq!(q.push(Critical, 1), Pushed::Refused(1));
    }

    #[test]
    fn front_is_what_pop_returns() {
        let mut q = DeferQueue::new(4);
        assert_eq!(q.front(), None);
        q.push(Low, 1);
        q.push(High, 2);
        assert_eq!(q.front(), Some(&2));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.front(), Some(&1));
        assert_eq!(q.drain_all(), vec![1]);
    }
}
