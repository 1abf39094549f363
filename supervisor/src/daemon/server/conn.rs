//! A connection's books: the FIFO queue its reader fills and its writer drains ([`Conn`]),
//! the outcome router (job id → connection), the registry of open connections (eviction,
//! connections per uid), and the guard that closes a connection's books however its task ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use crate::daemon::flow::{self, Held};
use crate::daemon::metrics::DaemonMetrics;
use crate::daemon::State;
use crate::Outcome;

/// Outcomes held for jobs whose route is not registered yet (between `submit` returning and
/// the registration a few instructions later, so in practice at most one per connection).
const EARLY_LIMIT: usize = 4096;
/// A connection may be evicted to admit a new one only after this long without traffic.
pub const EVICT_MIN_QUIET: Duration = Duration::from_secs(1);
/// A closing connection that held at least this much asks the allocator to return memory.
const TRIM_AFTER: usize = 4 << 20;

/// What a connection's writer writes, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// An encoded reply (SubmitReply, Stats).
    Frame(Vec<u8>),
    /// An outcome of a job this connection submitted: the submit's request id, and the bytes
    /// the job reserved in the budget (released once the outcome is written in full).
    Outcome(u64, Outcome, usize),
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) items: VecDeque<Item>,
    /// Replies (not outcomes) in `items`.
    pub(super) replies: usize,
    /// Set when the connection is closed: outcomes offered from then on are undelivered.
    pub(super) closed: bool,
}

/// The part of a connection the router, the bridge thread and the accept loop see.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(super) id: u64,
    pub(super) uid: Option<u32>,
    pub(super) queue: Mutex<Queue>,
    /// Wakes the writer (an item was queued, or the reader finished).
    pub(super) wake: Notify,
    /// Wakes the reader (the writer took items or wrote an outcome).
    pub(super) progress: Notify,
    /// Accepted jobs whose outcome has not been written in full.
    pub(super) in_flight: AtomicUsize,
    /// Bytes this connection holds in the daemon-wide budget.
    pub(super) held: Held,
    /// Largest `held` seen (to decide whether closing frees enough to trim the heap).
    pub(super) peak: AtomicUsize,
    /// Milliseconds since the daemon's epoch of the last byte read or written.
    pub(super) last_active: AtomicU64,
    /// Asked to close to admit a new connection.
    pub(super) evict: Notify,
    /// Chosen as an eviction victim (counted in [`Registry`] until it is closed).
    pub(super) evicting: AtomicBool,
}

impl Conn {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item for the writer.
    pub(super) fn push(&self, item: Item) {
        let mut q = self.lock();
        if matches!(item, Item::Frame(_)) {
            q.replies += 1;
        }
        q.items.push_back(item);
        drop(q);
        self.wake.notify_one();
    }

    /// Queues an outcome; never waits and never refuses while the connection is open (the
    /// job reserved room for it). On a closed connection it is counted as undelivered.
    pub(super) fn offer(
        &self,
        request_id: u64,
        outcome: Outcome,
        reserved: usize,
        metrics: &DaemonMetrics,
    ) {
        let mut q = self.lock();
        if q.closed {
            drop(q);
            metrics.undelivered.inc();
            return;
        }
        q.items
            .push_back(Item::Outcome(request_id, outcome, reserved));
        drop(q);
        self.wake.notify_one();
    }

    pub(super) fn touch(&self, state: &State) {
        self.last_active.store(state.now_ms(), Ordering::Relaxed);
    }

    /// Nothing in flight and nothing queued: closing it loses nothing.
    pub(super) fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.lock().items.is_empty()
    }
}

#[derive(Default)]
pub(super) struct RouterInner {
    pub(super) routes: HashMap<u64, (Arc<Conn>, u64, usize)>,
    pub(super) early: HashMap<u64, Outcome>,
}

/// Job id → (connection, request id, reserved bytes). Shared by connection readers
/// (register) and the bridge thread (deliver); the lock is held for a hash-map operation only.
#[derive(Default)]
pub(crate) struct Router {
    inner: Mutex<RouterInner>,
}

impl Router {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, RouterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the outcome of `job_id` to `conn` from now on (or at once, if it has arrived).
    pub(super) fn register(
        &self,
        job_id: u64,
        conn: &Arc<Conn>,
        request_id: u64,
        reserved: usize,
        metrics: &DaemonMetrics,
    ) {
        let mut g = self.lock();
        match g.early.remove(&job_id) {
            Some(o) => {
                drop(g);
                conn.offer(request_id, o, reserved, metrics);
            }
            None => {
                g.routes
                    .insert(job_id, (conn.clone(), request_id, reserved));
            }
        }
    }

    /// Forgets every route of a closed connection (their outcomes, when they come, are
    /// counted as undelivered).
    pub(super) fn forget(&self, conn_id: u64) {
        self.lock().routes.retain(|_, (c, _, _)| c.id != conn_id);
    }

    /// Sends one outcome to the connection that submitted its job.
    pub(crate) fn deliver(&self, o: Outcome, metrics: &DaemonMetrics) {
        let mut g = self.lock();
        match g.routes.remove(&o.job_id.0) {
            Some((conn, request_id, reserved)) => {
                drop(g);
                conn.offer(request_id, o, reserved, metrics);
            }
            None if g.early.len() < EARLY_LIMIT => {
                g.early.insert(o.job_id.0, o);
            }
            None => {
                drop(g);
                metrics.undelivered.inc();
                warn!(
                    job = o.job_id.0,
                    "outcome for a job no connection registered; dropped"
                );
            }
        }
    }
}

/// The open connections (for eviction) and the connections per peer uid.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
pub(super) struct RegistryInner {
    pub(super) conns: HashMap<u64, Arc<Conn>>,
    pub(super) uids: HashMap<u32, usize>,
    /// Victims chosen and not closed yet.
    pub(super) evicting: usize,
}

impl Registry {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn uid_count(&self, uid: u32) -> usize {
        self.lock().uids.get(&uid).copied().unwrap_or(0)
    }

    /// Chooses and marks a victim: the quiet connection (nothing in flight or queued) with
    /// the oldest traffic, if it has been quiet for at least [`EVICT_MIN_QUIET`] and fewer than
    /// `max_in_progress` victims are still closing (each holds its descriptor until then).
    pub(super) fn evict_one(&self, state: &State, max_in_progress: usize) -> Option<Arc<Conn>> {
        let limit = state
            .now_ms()
            .saturating_sub(crate::daemon::config::millis(EVICT_MIN_QUIET));
        let mut g = self.lock();
        if g.evicting >= max_in_progress {
            return None;
        }
        let victim = g
            .conns
            .values()
            .filter(|c| {
                !c.evicting.load(Ordering::SeqCst)
                    && c.last_active.load(Ordering::Relaxed) <= limit
                    && c.is_quiet()
            })
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
            .cloned()?;
        victim.evicting.store(true, Ordering::SeqCst);
        g.evicting += 1;
        Some(victim)
    }
}

/// Closes a connection's books however its task ends (returned, or aborted at the flush
/// deadline): outcomes left in its queue and outcomes still to come are undelivered, its
/// budget is released, its routes are forgotten, the open-connection gauges go down.
pub(super) struct ConnGuard {
    pub(super) conn: Arc<Conn>,
    pub(super) state: Arc<State>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let (state, conn) = (&self.state, &self.conn);
        let left = {
            let mut q = conn.lock();
            q.closed = true;
            q.replies = 0;
            std::mem::take(&mut q.items)
        };
        for item in left {
            if matches!(item, Item::Outcome(..)) {
                state.metrics.undelivered.inc();
            }
        }
        state.router.forget(conn.id);
        state.budget.release_all(&conn.held);
        {
            let mut r = state.conns.lock();
            r.conns.remove(&conn.id);
            if conn.evicting.load(Ordering::SeqCst) {
                r.evicting = r.evicting.saturating_sub(1);
            }
            if let Some(uid) = conn.uid {
                if let Some(n) = r.uids.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        r.uids.remove(&uid);
                    }
                }
            }
        }
        state.conns_open.fetch_sub(1, Ordering::SeqCst);
        state.metrics.connections_open.dec();
        state.budget.shares_changed();
        if conn.peak.load(Ordering::Relaxed) >= TRIM_AFTER {
            flow::trim();
        }
    }
}
