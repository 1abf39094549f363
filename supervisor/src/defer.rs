//! The bounded defer queue with severity lanes (`PoolExhaustedAction::Defer`).
//!
//! One FIFO per severity. `push` on a full queue evicts the oldest job of the lowest severity
//! that is strictly lower than the newcomer's; if there is none, the newcomer is refused.
//! `pop` serves the highest severity first, FIFO within a lane. Pure logic: no I/O, no locking.
//!
//! Each lane is a FIFO of fixed-capacity chunks ([`Lane`]), so a push never moves queued jobs:
//! a plain `VecDeque` that doubles copies every queued job while the submit path holds the
//! queue's lock (measured: a 9 ms `submit` at ~131 000 queued jobs).

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
    /// Not queued: the queue was closed (the pool is shutting down). The item is handed back.
    Closed(T),
}

/// Entries per chunk of a lane: 1024 jobs' bookkeeping stays below glibc's mmap threshold, so a
/// new chunk is a heap allocation, not a syscall.
const CHUNK: usize = 1024;

/// A FIFO of fixed-capacity chunks: `push_back` and `pop_front` are O(1) and never move an
/// element; a chunk is allocated once per [`CHUNK`] pushes at most (one emptied chunk is kept
/// for reuse, so a queue that hovers at a chunk boundary does not allocate each time).
#[derive(Debug)]
pub struct Lane<T> {
    /// Invariant: every chunk but the last is full up to `CHUNK` when pushed past; no chunk
    /// grows beyond `CHUNK` (each is allocated with that capacity); no chunk is empty unless it
    /// is the only one.
    chunks: VecDeque<VecDeque<T>>,
    spare: Option<VecDeque<T>>,
}

impl<T> Lane<T> {
    /// An empty lane with its first chunk allocated for `first` entries (at most [`CHUNK`]).
    pub fn with_first_chunk(first: usize) -> Self {
        let mut chunks = VecDeque::with_capacity(4);
        chunks.push_back(VecDeque::with_capacity(first.min(CHUNK)));
        Lane {
            chunks,
            spare: None,
        }
    }

    /// Appends `item`.
    pub fn push_back(&mut self, item: T) {
        let full = self.chunks.back().is_none_or(|c| c.len() >= CHUNK);
        if full {
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
            self.chunks.push_back(chunk);
        }
        if let Some(last) = self.chunks.back_mut() {
            last.push_back(item);
        }
    }

    /// Removes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let item = first.pop_front();
        if first.is_empty() && self.chunks.len() > 1 {
            if let Some(mut empty) = self.chunks.pop_front() {
                // Keep one full-size chunk for reuse.
                if self.spare.is_none() && empty.capacity() >= CHUNK {
                    empty.clear();
                    self.spare = Some(empty);
                }
            }
        }
        item
    }

    /// The oldest item.
    pub fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    /// Removes and returns the oldest item matching `pred` (O(len): for cancellation only).
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let (c, k) = self
            .chunks
            .iter()
            .enumerate()
            .find_map(|(c, chunk)| chunk.iter().position(&mut pred).map(|k| (c, k)))?;
        let item = self.chunks.get_mut(c)?.remove(k)?;
        // Keep the invariant: no empty chunk unless it is the only one.
        if self.chunks.len() > 1 && self.chunks.get(c).is_some_and(VecDeque::is_empty) {
            self.chunks.remove(c);
        }
        Some(item)
    }

    /// Whether the lane holds nothing.
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(VecDeque::is_empty)
    }
}

/// A bounded multi-lane FIFO.
#[derive(Debug)]
pub struct DeferQueue<T> {
    lanes: [Lane<T>; 4],
    len: usize,
    limit: usize,
    /// Set by `close`: every later `push` is refused with [`Pushed::Closed`].
    closed: bool,
}

impl<T> DeferQueue<T> {
    /// An empty queue holding at most `limit` items. Each lane's first chunk is allocated up
    /// front; pushes beyond it allocate one chunk per [`CHUNK`] items and never move queued
    /// items, so the submit path does bounded work under the queue's lock.
    pub fn new(limit: usize) -> Self {
        DeferQueue {
            lanes: std::array::from_fn(|_| Lane::with_first_chunk(limit)),
            len: 0,
            limit,
            closed: false,
        }
    }

    /// Refuses every later `push` ([`Pushed::Closed`]). Call it with the queue's lock held
    /// together with the final `drain_all`, so no item can arrive after the drain.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `item` in `severity`'s lane, evicting per the module rule when full.
    pub fn push(&mut self, severity: Severity, item: T) -> Pushed<T> {
        if self.closed {
            return Pushed::Closed(item);
        }
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

    /// Removes and returns the oldest item matching `pred`, from any lane (O(len)).
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let item = self
            .lanes
            .iter_mut()
            .find_map(|l| l.remove_first(&mut pred))?;
        self.len -= 1;
        Some(item)
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
    fn remove_first_takes_one_item_from_any_lane() {
        let mut q = DeferQueue::new(3000);
        for i in 0..2500u32 {
            q.push(if i % 2 == 0 { Low } else { High }, i);
        }
        assert_eq!(q.remove_first(|&x| x == 1000), Some(1000));
        assert_eq!(q.remove_first(|&x| x == 1001), Some(1001));
        assert_eq!(q.remove_first(|&x| x == 1001), None);
        assert_eq!(q.len(), 2498);
        let rest = q.drain_all();
        assert_eq!(rest.len(), 2498);
        assert!(!rest.contains(&1000) && !rest.contains(&1001));
        let highs: Vec<u32> = rest.iter().copied().filter(|x| x % 2 == 1).collect();
        assert!(highs.windows(2).all(|w| w[0] < w[1]), "FIFO order kept");
    }

    #[test]
    fn lanes_match_a_plain_fifo_across_chunk_boundaries() {
        let mut lane = Lane::with_first_chunk(3);
        let mut model = VecDeque::new();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut next = 0u64;
        for round in 0..40_000 {
            // Phases of growth and shrinkage so the lane crosses many chunk boundaries.
            let push_bias = if (round / 5_000) % 2 == 0 { 3 } else { 1 };
            if rng.u8(0..4) < push_bias {
                lane.push_back(next);
                model.push_back(next);
                next += 1;
            } else {
                assert_eq!(lane.pop_front(), model.pop_front());
            }
            assert_eq!(lane.front(), model.front());
            assert_eq!(lane.is_empty(), model.is_empty());
            assert!(lane.chunks.iter().all(|c| c.len() <= CHUNK));
        }
        while let Some(x) = model.pop_front() {
            assert_eq!(lane.pop_front(), Some(x));
        }
        assert_eq!(lane.pop_front(), None);
        assert!(lane.is_empty());
    }

    #[test]
    fn a_closed_queue_refuses_every_push() {
        let mut q = DeferQueue::new(4);
        q.push(Low, 1);
        q.close();
        assert_eq!(q.drain_all(), vec![1]);
        assert_eq!(q.push(Critical, 2), Pushed::Closed(2));
        assert_eq!(q.len(), 0);
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
