//! Materialising the filesystem store's commit journals ([`houndpool_cold::fs::materialise`])
//! from the supervisor: when, on which thread, and what an operator sees of it.
//!
//! When:
//! * **pool start** ([`Journal::recover`]), before any hound starts, synchronously: journals left by
//!   an earlier run (a crash, a power cut, a kill) become key files first. Journals of writers
//!   that still exist (another pool on the same root) are left alone.
//! * **a hound's death** ([`Journal::hound_died`]): the collector only kicks the background
//!   thread (a lock held for a flag, a condvar notify) and never waits for materialisation;
//!   the dead hound is reaped by then, so its journals count as gone.
//! * **periodically** (every [`PERIOD`]): the background thread `houndpool-journal` takes the
//!   journals live hounds rotated away from (sealed), at most [`BUDGET`] records per wake (plus
//!   the rest of a journal once started), so it never monopolises the disk. It **yields to
//!   evacuations**: a wake that finds Evacuate jobs completed since the last wake does
//!   nothing while the backlog is below [`DEFER_LIMIT_BYTES`]. Other jobs do not defer it
//!   (a Restore of a journaled record searches the journals, and reads faster once they
//!   are key files). Materialising costs a
//!   temp file, an `fdatasync` (a device cache flush) and a directory sync per object: in the
//!   issue 11 profile it took as much CPU as a hound got, and its ~4 300 flushes in half a
//!   second made the hounds' own journal syncs wait 2.5 ms instead of a few hundred µs.
//!   Everything it would have done is durable and readable in the journals meanwhile; the
//!   first quiet wake (or the limit, or shutdown) catches up.
//! * **pool shutdown** ([`Journal::finish`]), after every hound was reaped: everything left, so
//!   that an operator finds key files after a clean stop.
//!
//! The same thread sweeps the temp files of dead hounds ([`Journal::hound_died`] names the
//! pid): a readdir of the store's temp directory and an unlink per file, which a hostile hound
//! can make as long as it likes (tens of thousands of files named as its own temp files) and a
//! stalled disk longer still. On the collector thread it held up every outcome of the pool
//! (`tests/escape.rs`, `sweeping_a_dead_hounds_temp_flood_does_not_hold_up_outcomes`).
//!
//! The backlog (journal files and bytes waiting) and the conflicts found are published in
//! [`crate::PoolStats`] (`journal_backlog`, `journal_backlog_bytes`, `journal_conflicts`) and
//! as the daemon's metrics `houndpool_journal_backlog_files` / `_bytes` and
//! `houndpool_journal_conflicts`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use houndpool_cold::fs::{self, FsStore};

use crate::config::{ColdConfig, PoolConfig};
use crate::PoolError;

/// How often the background thread looks for sealed journals.
pub(crate) const PERIOD: Duration = Duration::from_millis(500);

/// Records materialised per wake of the background thread (about 1 s of one disk's per-file
/// commits measured here; the rest waits for the next wake).
pub(crate) const BUDGET: usize = 2048;

/// Journal bytes waiting above which a periodic wake materialises even while the pool is busy
/// (about 15 000 envelopes of 4 KiB evidence): bounds the backlog a reader may have to search
/// and a shutdown has to finish, under a burst that never pauses.
pub(crate) const DEFER_LIMIT_BYTES: u64 = 32 << 20;

/// What the pool is doing, for the materialiser's yield (see the module docs): Evacuate jobs
/// completed so far.
pub(crate) type ActivityProbe = Box<dyn Fn() -> u64 + Send>;

/// The pool's materialiser: shared by the pool handle, the collector and its thread.
#[derive(Debug, Default)]
pub(crate) struct Journal(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_envelope: usize,
    state: Mutex<State>,
    wake: Condvar,
    backlog_files: AtomicU64,
    backlog_bytes: AtomicU64,
    conflicts: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// A hound died: run now.
    kick: bool,
    /// Pids of dead hounds whose temp files are still to be swept.
    sweep: Vec<u32>,
    /// The pool is stopping: exit.
    stop: bool,
}

/// What the pool's stats show of the journals.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub(crate) backlog_files: u64,
    pub(crate) backlog_bytes: u64,
    pub(crate) conflicts: u64,
}

impl Journal {
    /// The materialiser of a filesystem target (none for other targets).
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let ColdConfig::Filesystem { root, .. } = &config.cold else {
            return Journal(None);
        };
        Journal(Some(Arc::new(Inner {
            root: root.clone(),
            max_envelope: max_envelope(config),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            backlog_files: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        })))
    }

    /// Starts the background thread (filesystem targets only); `activity` tells it whether the
    /// pool is busy (it then defers periodic runs, see the module docs).
    pub(crate) fn start(
        &self,
        activity: ActivityProbe,
    ) -> Result<Option<JoinHandle<()>>, PoolError> {
        let Some(inner) = self.0.clone() else {
            return Ok(None);
        };
        std::thread::Builder::new()
            .name("houndpool-journal".into())
            .spawn(move || run(&inner, &activity))
            .map(Some)
            .map_err(|source| PoolError::Os {
                op: "start the journal materialiser thread",
                source,
            })
    }

    /// Materialises every journal whose writer is gone; run before the pool's first hound
    /// starts. Failures are logged, never fatal: the journals stay, readers still find their
    /// records, and the next run retries.
    pub(crate) fn recover(&self) {
        if let Some(inner) = &self.0 {
            once(inner, usize::MAX);
        }
    }

    /// Hound `pid` died: its temp files are to be swept and its journals can be materialised,
    /// both on the background thread. Never waits for the work (a lock held to push the pid
    /// and set a flag, a condvar notify). A pid that still exists when the sweep runs (a hound
    /// stuck in the kernel, not reaped yet; or the pid already reused) is left for a later
    /// call: the reaper names a stuck hound again once it is gone.
    pub(crate) fn hound_died(&self, pid: u32) {
        if let Some(inner) = &self.0 {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.kick = true;
            st.sweep.push(pid);
            inner.wake.notify_one();
        }
    }

    /// Stops the background thread and materialises everything whose writer is gone (every
    /// hound of this pool was reaped before this is called).
    pub(crate) fn finish(&self, thread: Option<JoinHandle<()>>) {
        let Some(inner) = &self.0 else { return };
        {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.stop = true;
            inner.wake.notify_one();
        }
        if let Some(t) = thread {
            let _ = t.join();
        }
        let dead = {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut st.sweep)
        };
        sweep(inner, &dead);
        once(inner, usize::MAX);
    }

    /// Backlog and conflicts as last measured.
    pub(crate) fn snapshot(&self) -> Snapshot {
        match &self.0 {
            Some(i) => Snapshot {
                backlog_files: i.backlog_files.load(Ordering::Relaxed),
                backlog_bytes: i.backlog_bytes.load(Ordering::Relaxed),
                conflicts: i.conflicts.load(Ordering::Relaxed),
            },
            None => Snapshot::default(),
        }
    }
}

/// The longest envelope a record of this pool's hounds can hold.
fn max_envelope(config: &PoolConfig) -> usize {
    houndpool_cold::max_envelope_len(config.max_evidence_bytes.max(config.max_output_bytes))
}

/// The background thread: a run per wake until the pool stops; a periodic wake while the pool
/// is busy runs only when the backlog reached [`DEFER_LIMIT_BYTES`].
fn run(inner: &Inner, activity: &ActivityProbe) {
    let mut last_done = activity();
    loop {
        let (kicked, dead) = {
            let st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let (mut st, _) = inner
                .wake
                .wait_timeout_while(st, PERIOD, |s| !s.kick && !s.stop)
                .unwrap_or_else(|p| p.into_inner());
            if st.stop {
                return;
            }
            (std::mem::take(&mut st.kick), std::mem::take(&mut st.sweep))
        };
        sweep(inner, &dead);
        let done = activity();
        let busy = done != last_done;
        last_done = done;
        if busy && !kicked {
            let backlog = fs::materialise::backlog(&inner.root).ok();
            if let Some(b) = backlog {
                inner.backlog_files.store(b.journals, Ordering::Relaxed);
                inner.backlog_bytes.store(b.bytes, Ordering::Relaxed);
            }
            if defer(busy, kicked, backlog.map(|b| b.bytes)) {
                continue;
            }
        }
        once(inner, BUDGET);
    }
}

/// Removes the temp files of the hounds `dead` names, of those that are gone now.
fn sweep(inner: &Inner, dead: &[u32]) {
    if !dead.is_empty() {
        crate::cold::sweep_temps_in(&inner.root, |pid| dead.contains(&pid) && fs::pid_gone(pid));
    }
}

/// Whether a wake of the background thread leaves the journals for later: only a periodic
/// wake (not a hound's death) while the pool is busy, with a backlog known to be below
/// [`DEFER_LIMIT_BYTES`].
fn defer(busy: bool, kicked: bool, backlog_bytes: Option<u64>) -> bool {
    busy && !kicked && backlog_bytes.is_some_and(|b| b < DEFER_LIMIT_BYTES)
}

/// One materialisation run over journals of gone or rotated writers, then the backlog, on a
/// thread of its own confined beneath the store root (see [`materialise_confined`]).
fn once(inner: &Inner, budget: usize) {
    let ran = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("houndpool-journal-run".into())
            .spawn_scoped(scope, || materialise_confined(inner, budget))
            .map(|t| t.join())
    });
    match ran {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::error!("the journal materialiser panicked; retried later"),
        Err(e) => tracing::warn!(error = %e, "could not start a journal materialiser run"),
    }
    if let Ok(b) = fs::materialise::backlog(&inner.root) {
        inner.backlog_files.store(b.journals, Ordering::Relaxed);
        inner.backlog_bytes.store(b.bytes, Ordering::Relaxed);
    }
}

/// The body of [`once`], on a fresh thread that first confines itself with Landlock to the
/// store root (`houndpool_hound::sandbox::confine_thread_beneath`).
///
/// Why: journals, erasure records and every directory below the root are written by hounds,
/// which may be compromised and which may create symlinks there (their own Landlock rule
/// grants every right beneath the root; Landlock checks where a path resolves, so a hound
/// cannot use a symlink itself). This thread runs in the unconfined supervisor: following
/// `root/evil -> /etc` while linking a key file or removing an erased one would write or
/// unlink outside the store with the supervisor's privileges. Checking each path component
/// for symlinks first would race a live hound; the kernel's rule does not. Confinement is
/// per thread, so the rest of the supervisor is untouched, and a fresh thread per run keeps
/// the rule off every other code path. When the kernel cannot enforce it, nothing is
/// materialised: the journals stay (readers still find their records) and an error is logged.
fn materialise_confined(inner: &Inner, budget: usize) {
    if let Err(e) = houndpool_hound::sandbox::confine_thread_beneath(&inner.root) {
        tracing::error!(root = %inner.root.display(), error = %e,
            "journals not materialised: the materialiser cannot confine itself to the store");
        return;
    }
    let result = FsStore::open(&inner.root).and_then(|mut store| {
        store.set_journal_max_envelope(inner.max_envelope);
        store.materialise(
            &fs::pid_gone,
            houndpool_cold::s3::default_spool_verifier,
            budget,
        )
    });
    match result {
        Ok(r) => {
            if r.conflicts > 0 {
                inner
                    .conflicts
                    .fetch_add(r.conflicts as u64, Ordering::Relaxed);
            }
            if r.journals > 0 || r.skipped > 0 {
                tracing::debug!(
                    journals = r.journals,
                    stored = r.stored,
                    conflicts = r.conflicts,
                    skipped = r.skipped,
                    torn = r.torn,
                    left = r.left,
                    "journals materialised"
                );
            }
        }
        Err(e) => tracing::warn!(root = %inner.root.display(), error = %e,
            "could not materialise the cold store's journals; retried later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_pools_defer_until_the_backlog_limit() {
        assert!(defer(true, false, Some(0)));
        assert!(defer(true, false, Some(DEFER_LIMIT_BYTES - 1)));
        assert!(
            !defer(true, false, Some(DEFER_LIMIT_BYTES)),
            "limit reached"
        );
        assert!(!defer(false, false, Some(0)), "idle pool: run");
        assert!(!defer(true, true, Some(0)), "a hound died: run");
        assert!(!defer(true, false, None), "backlog unknown: run");
    }
}
