//! Flow control of the daemon socket: the daemon-wide buffer budget, each connection's fair
//! share of it, and what each job reserves (docs/PROTOCOL.md, Part 4 §5).
//!
//! Every byte the daemon buffers for a client is reserved here before it exists: the body of
//! a frame before it is read, and for an accepted job the worst case of its outcome before the
//! job is submitted. A reservation is released when the outcome has been written in full (or
//! the connection is closed). A connection that cannot reserve is simply not read: its kernel
//! socket buffer fills and then its `send` blocks. Nothing is ever dropped to make room.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::JobKind;
use tokio::sync::{Notify, Semaphore};

/// Bytes reserved per outcome beyond its payload: the frame header, the fixed fields, the
/// object key and a failure message (capped at [`MAX_MESSAGE`]).
pub const OUTCOME_OVERHEAD: usize = 4096;
/// Longest failure message copied into an outcome, bytes (longer ones are truncated).
pub const MAX_MESSAGE: usize = 1024;

/// The worst-case size of the outcome of a job of `kind` with a body of `body_len` bytes,
/// in a pool whose restore / decode output is at most `max_output` bytes.
pub fn outcome_reservation(kind: JobKind, body_len: usize, max_output: usize) -> usize {
    let payload = match kind {
        JobKind::Noop => body_len,
        JobKind::Encode => houndpool_protocol::envelope::max_envelope_len(body_len),
        JobKind::Restore | JobKind::Decode => max_output,
        JobKind::Evacuate | JobKind::Erase => 0,
    };
    payload.saturating_add(OUTCOME_OVERHEAD)
}

/// The daemon-wide budget of buffered bytes, shared by all connections.
///
/// Fairness: a connection may hold at most `total / (open connections + 1)` bytes (so there
/// is always room left for a connection that arrives), except that a connection holding
/// nothing may always reserve for one frame (so every connection makes progress); the sum
/// over all connections never exceeds `total` (a FIFO semaphore).
#[derive(Debug)]
pub struct Budget {
    total: usize,
    sem: Semaphore,
    used: AtomicUsize,
    released: Notify,
    /// Connections not read now because of backpressure (budget, or a per-connection bound).
    pub paused: AtomicUsize,
    /// Times a connection stopped being read because of backpressure.
    pub pauses: AtomicU64,
}

/// A connection's side of the budget: what it holds now.
#[derive(Debug, Default)]
pub struct Held {
    bytes: AtomicUsize,
}

impl Held {
    /// Bytes this connection holds.
    pub fn get(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Budget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: usize) -> Budget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            total,
            sem: Semaphore::new(total),
            used: AtomicUsize::new(0),
            released: Notify::new(),
            paused: AtomicUsize::new(0),
            pauses: AtomicU64::new(0),
        }
    }

    /// The whole budget, bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved now, all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// What one reservation of `n` bytes really takes (a single reservation larger than the
    /// whole budget takes the whole budget, so that it can ever be granted).
    pub fn clamp(&self, n: usize) -> usize {
        n.min(self.total).min(u32::MAX as usize)
    }

    /// Reserves `n` bytes for a connection: waits until the connection is within its fair
    /// share (`total / (open + 1)`) and the daemon-wide budget has room. Returns the bytes really
    /// reserved (see [`Budget::clamp`]); pass that to [`Budget::release`].
    /// Cancel-safe: nothing is reserved unless it returns.
    pub async fn reserve(&self, held: &Held, n: usize, open: &AtomicUsize) -> usize {
        let n = self.clamp(n);
        if n == 0 {
            return 0;
        }
        let mut paused = None;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let h = held.get();
            let share = self.total / open.load(Ordering::SeqCst).saturating_add(1);
            if h == 0 || h.saturating_add(n) <= share {
                break;
            }
            paused.get_or_insert_with(|| Paused::new(self));
            notified.await;
        }
        let permit = match self.sem.try_acquire_many(n as u32) {
            Ok(p) => p,
            Err(_) => {
                paused.get_or_insert_with(|| Paused::new(self));
                match self.sem.acquire_many(n as u32).await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return 0,
                }
            }
        };
        permit.forget();
        held.bytes.fetch_add(n, Ordering::SeqCst);
        self.used.fetch_add(n, Ordering::SeqCst);
        n
    }

    /// Returns `n` bytes a connection held (as returned by [`Budget::reserve`]).
    pub fn release(&self, held: &Held, n: usize) {
        if n == 0 {
            return;
        }
        held.bytes.fetch_sub(n, Ordering::SeqCst);
        self.used.fetch_sub(n, Ordering::SeqCst);
        self.sem.add_permits(n);
        self.released.notify_waiters();
    }

    /// Returns everything a connection holds (when it is closed).
    pub fn release_all(&self, held: &Held) -> usize {
        let n = held.bytes.swap(0, Ordering::SeqCst);
        if n > 0 {
            self.used.fetch_sub(n, Ordering::SeqCst);
            self.sem.add_permits(n);
            self.released.notify_waiters();
        }
        n
    }

    /// Wakes connections waiting for their fair share (the number of connections changed).
    pub fn shares_changed(&self) {
        self.released.notify_waiters();
    }
}

/// Counts a connection in [`Budget::paused`] while it waits (also when the wait is
/// cancelled), and the wait in [`Budget::pauses`].
pub struct Paused<'a>(&'a AtomicUsize);

impl<'a> Paused<'a> {
    /// Starts counting a pause.
    pub fn new(b: &'a Budget) -> Self {
        b.paused.fetch_add(1, Ordering::SeqCst);
        b.pauses.fetch_add(1, Ordering::Relaxed);
        Paused(&b.paused)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes the allocator return large freed buffers to the kernel (see
/// [`super::alloc::tune`]); called once at start.
pub fn tune_allocator() {
    super::alloc::tune();
}

/// Returns free heap pages to the kernel (after a connection that held large buffers closed).
pub fn trim() {
    super::alloc::trim();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn shares_and_total_are_respected() {
        let b = Budget::new(1000);
        let open = AtomicUsize::new(2);
        let (a, c) = (Held::default(), Held::default());
        assert_eq!(b.reserve(&a, 400, &open).await, 400);
        // Over its share (1000 / 3): not granted while nothing is released.
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            b.reserve(&a, 200, &open),
        )
        .await;
        assert!(r.is_err());
        // A connection holding nothing may reserve even beyond its share.
        assert_eq!(b.reserve(&c, 600, &open).await, 600);
        assert_eq!(b.used(), 1000);
        b.release(&a, 400);
        assert_eq!(b.reserve(&a, 200, &open).await, 200);
        assert_eq!(b.release_all(&c), 600);
        assert_eq!(b.used(), 200);
        // A reservation larger than the budget takes the whole budget.
        assert_eq!(b.clamp(5000), 1000);
    }

    #[test]
    fn outcome_reservations_cover_the_payload() {
        assert_eq!(
            outcome_reservation(JobKind::Noop, 10, 99),
            10 + OUTCOME_OVERHEAD
        );
        assert!(outcome_reservation(JobKind::Encode, 1 << 20, 0) > (1 << 20) + OUTCOME_OVERHEAD);
        assert_eq!(
            outcome_reservation(JobKind::Restore, 0, 1 << 20),
            (1 << 20) + OUTCOME_OVERHEAD
        );
        assert_eq!(
            outcome_reservation(JobKind::Evacuate, 1 << 20, 1 << 20),
            OUTCOME_OVERHEAD
        );
    }
}
