//! Per-job handles ([`Tracked`]): the outcome of one job delivered to whoever holds its handle,
//! by blocking wait, wait with a timeout, or as a `Future` on any executor.
//!
//! A tracked job registers one small shared cell under its job id *before* it becomes visible
//! to a hound (so its outcome can never arrive first). `Shared::deliver` looks the id up only
//! while at least one tracked job is outstanding, so untracked jobs pay one relaxed atomic load.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::job::{Outcome, Ticket};

#[derive(Default)]
struct CellState {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    /// The handle was dropped: an arriving outcome is counted and discarded.
    abandoned: bool,
}

/// Where one tracked job's outcome lands.
#[derive(Default)]
pub(crate) struct Cell {
    state: Mutex<CellState>,
    ready: Condvar,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Job id → cell of every tracked job without an outcome yet.
#[derive(Default)]
pub(crate) struct Registry {
    /// Mirror of `map.len()`: lets `take` skip the lock when nothing is tracked.
    live: AtomicUsize,
    map: Mutex<HashMap<u64, Arc<Cell>>>,
    /// Outcomes delivered to a handle that had been dropped.
    pub(crate) unclaimed: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Cell>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `job_id` (before the job becomes visible to the collector).
    pub(crate) fn register(&self, job_id: u64, cell: Arc<Cell>) {
        let mut m = self.lock();
        m.insert(job_id, cell);
        self.live.store(m.len(), Ordering::Release);
    }

    /// Removes `job_id` (submit refused it after all).
    pub(crate) fn unregister(&self, job_id: u64) {
        let mut m = self.lock();
        m.remove(&job_id);
        self.live.store(m.len(), Ordering::Release);
    }

    /// Whether any tracked job waits for its outcome (when not, `offer` gives every outcome
    /// back: the caller skips it, and the outcome is not moved in and out for nothing).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.live.load(Ordering::Acquire) != 0
    }

    /// Hands `outcome` to its handle if the job is tracked (`None`); gives it back otherwise.
    pub(crate) fn offer(&self, outcome: Outcome) -> Option<Outcome> {
        if !self.any() {
            return Some(outcome);
        }
        let cell = {
            let mut m = self.lock();
            let cell = m.remove(&outcome.job_id.0);
            self.live.store(m.len(), Ordering::Release);
            cell
        };
        let Some(cell) = cell else {
            return Some(outcome);
        };
        let waker = {
            let mut st = cell.lock();
            if st.abandoned {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            st.outcome = Some(outcome);
            st.waker.take()
        };
        cell.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        None
    }
}

/// The handle of one job submitted with [`Pool::submit_tracked`](crate::Pool::submit_tracked):
/// its outcome is delivered here (and to the `on_outcome` callback), never to the shared
/// outcome channel.
///
/// Wait for it with [`wait`](Self::wait), [`wait_timeout`](Self::wait_timeout), or `.await`
/// it: `Tracked` is a `Future<Output = Outcome>` that stores the task's waker and needs no
/// particular runtime. The outcome always comes — the pool delivers one for every accepted job,
/// at the latest when it shuts down (`Dropped(Shutdown)`), which dropping the pool also does.
/// Dropping the handle is allowed: the outcome is still counted in the pool's stats (and in
/// `PoolStats::tracked_unclaimed`), then discarded.
#[must_use = "dropping a Tracked discards its outcome; use `submit` if you do not want it"]
pub struct Tracked {
    ticket: Ticket,
    cell: Arc<Cell>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("ticket", &self.ticket)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Tracked {
    pub(crate) fn new(ticket: Ticket, cell: Arc<Cell>) -> Self {
        Tracked { ticket, cell }
    }

    /// The job's ticket (job id, for `Pool::cancel`, and evidence id).
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Whether the outcome has arrived (a following `wait` returns at once).
    pub fn is_ready(&self) -> bool {
        self.cell.lock().outcome.is_some()
    }

    /// Blocks the calling thread until the outcome arrives.
    pub fn wait(self) -> Outcome {
        let mut st = self.cell.lock();
        loop {
            if let Some(o) = st.outcome.take() {
                return o;
            }
            st = self.cell.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until the outcome arrives or `timeout` passes; on timeout the handle comes back
    /// so the caller can wait again, `.await` it, cancel the job or drop it.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Outcome, Tracked> {
        let deadline = Instant::now().checked_add(timeout);
        {
            let mut st = self.cell.lock();
            loop {
                if let Some(o) = st.outcome.take() {
                    return Ok(o);
                }
                let left = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => Duration::MAX,
                };
                if left.is_zero() {
                    break;
                }
                st = self
                    .cell
                    .ready
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        Err(self)
    }
}

impl Future for Tracked {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut st = self.cell.lock();
        if let Some(o) = st.outcome.take() {
            return Poll::Ready(o);
        }
        match &mut st.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut st = self.cell.lock();
        st.waker = None;
        st.abandoned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{DropReason, JobId, OutcomeKind};
    use houndpool_protocol::job::{JobKind, Severity};
    use std::task::Wake;
    use uuid::Uuid;

    fn outcome(id: u64) -> Outcome {
        Outcome {
            job_id: JobId(id),
            evidence_id: Uuid::nil(),
            kind: JobKind::Noop,
            severity: Severity::Low,
            attempts: 0,
            latency: Duration::ZERO,
            result: OutcomeKind::Dropped(DropReason::Shutdown),
        }
    }

    fn tracked(reg: &Registry, id: u64) -> Tracked {
        let cell = Arc::new(Cell::default());
        reg.register(id, cell.clone());
        Tracked::new(
            Ticket {
                job_id: JobId(id),
                evidence_id: Uuid::nil(),
            },
            cell,
        )
    }

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn untracked_outcomes_are_given_back() {
        let reg = Registry::default();
        assert!(reg.offer(outcome(1)).is_some());
        let _t = tracked(&reg, 2);
        assert!(reg.offer(outcome(1)).is_some());
    }

    #[test]
    fn wait_timeout_returns_the_handle_then_the_outcome() {
        let reg = Registry::default();
        let t = tracked(&reg, 3);
        let t = t.wait_timeout(Duration::from_millis(1)).unwrap_err();
        assert!(reg.offer(outcome(3)).is_none());
        assert_eq!(t.wait_timeout(Duration::ZERO).unwrap().job_id, JobId(3));
        assert_eq!(reg.live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn poll_stores_the_waker_and_delivery_wakes_it() {
        let reg = Registry::default();
        let mut t = tracked(&reg, 4);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut t).poll(&mut cx).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        assert!(reg.offer(outcome(4)).is_none());
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(matches!(Pin::new(&mut t).poll(&mut cx), Poll::Ready(o) if o.job_id == JobId(4)));
    }

    #[test]
    fn a_dropped_handle_counts_its_outcome_as_unclaimed() {
        let reg = Registry::default();
        drop(tracked(&reg, 5));
        assert!(reg.offer(outcome(5)).is_none());
        assert_eq!(reg.unclaimed.load(Ordering::Relaxed), 1);
    }
}
