//! Per-job handles (`Pool::submit_tracked`) and `Pool::cancel`, with real hounds: every
//! accepted job still gets exactly one outcome, delivered to its handle instead of the shared
//! channel, and each cancel branch (deferred, queued behind another job, running, unknown)
//! does what it says.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use houndpool::{CancelResult, DropReason, Job, JobId, OutcomeKind, PoolConfig, PoolSize};
use houndpool_tests::*;
use nix::sys::signal::Signal;

/// A minimal executor: polls on this thread, parks until woken. Proves `Tracked` needs no
/// runtime. The timeout is a hang guard only.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "future never became ready");
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[test]
fn tracked_jobs_resolve_their_handles_and_bypass_the_shared_channel() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let evidence = b"GET /etc/passwd HTTP/1.1\r\n\r\n";

    // Blocking wait with a timeout.
    let t = pool.submit_tracked(&Job::evacuate(evidence)).unwrap();
    let ticket = t.ticket();
    let outcome = t.wait_timeout(Duration::from_secs(30)).expect("evacuated");
    assert_eq!(outcome.job_id, ticket.job_id);
    let receipt = outcome.into_result().expect("completed");
    assert!(receipt.key.is_some());

    // As a Future on a hand-rolled executor.
    let restore = pool
        .submit_tracked(&Job::restore(ticket.evidence_id))
        .unwrap();
    let restored = block_on(restore).into_result().expect("restored");
    assert_eq!(restored.payload.as_deref(), Some(&evidence[..]));

    // Plain wait, and an untracked job next to it still uses the channel.
    let plain = pool.submit(&Job::encode(evidence)).unwrap();
    let t = pool.submit_tracked(&Job::encode(evidence)).unwrap();
    assert!(matches!(t.wait().result, OutcomeKind::Completed(_)));
    let o = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(o.job_id, plain.job_id);

    // A dropped handle loses nothing from the accounting.
    drop(pool.submit_tracked(&Job::encode(evidence)).unwrap());
    let stats = pool.shutdown(Duration::from_secs(10));
    assert!(
        rx.try_recv().is_err(),
        "tracked outcomes never reach the channel"
    );
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.completed, 5);
    assert_eq!(stats.tracked_unclaimed, 1);
    assert_eq!(stats.undelivered, 0);
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_no_hounds_left();
}

#[test]
fn wait_timeout_hands_the_handle_back_while_the_hound_is_stopped() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        size: PoolSize::Fixed(1),
        job_timeout: Duration::from_secs(120),
        ..test_config(dir.path())
    };
    let (pool, _rx) = start(config);
    let hound = pid_of(&pool, 0);
    signal(hound, Signal::SIGSTOP);
    let t = pool.submit_tracked(&Job::encode(b"held")).unwrap();
    let t = t
        .wait_timeout(Duration::from_millis(50))
        .expect_err("no outcome while the hound is stopped");
    assert!(!t.is_ready());
    signal(hound, Signal::SIGCONT);
    let o = t.wait_timeout(Duration::from_secs(30)).expect("outcome");
    assert!(matches!(o.result, OutcomeKind::Completed(_)));
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn cancel_kills_a_running_job_withdraws_queued_ones_and_knows_finished_ones() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        size: PoolSize::Fixed(1),
        max_in_flight_per_hound: 2,
        // The stopped hound must be ended by the cancel, not the watchdog.
        job_timeout: Duration::from_secs(120),
        ..test_config(dir.path())
    };
    let (pool, rx) = start(config);
    let hound = pid_of(&pool, 0);
    signal(hound, Signal::SIGSTOP);
    // Ring holds two (head and one behind it); the rest is deferred.
    let head = pool.submit_tracked(&Job::encode(b"head")).unwrap();
    let behind = pool.submit_tracked(&Job::encode(b"behind")).unwrap();
    let deferred = pool.submit_tracked(&Job::encode(b"deferred")).unwrap();
    let survivor = pool.submit(&Job::encode(b"survivor")).unwrap();
    assert_eq!(pool.stats().deferred, 2);

    assert_eq!(
        pool.cancel(deferred.ticket().job_id),
        CancelResult::Dequeued
    );
    assert_eq!(pool.cancel(behind.ticket().job_id), CancelResult::Dequeued);
    assert_eq!(pool.cancel(behind.ticket().job_id), CancelResult::NotFound);
    assert_eq!(pool.cancel(JobId(1 << 40)), CancelResult::NotFound);
    assert_eq!(pool.cancel(head.ticket().job_id), CancelResult::Killed);
    assert!(
        !std::path::Path::new(&format!("/proc/{hound}")).exists(),
        "the cancelled job's hound was killed and reaped"
    );

    for t in [head, behind, deferred] {
        let o = t.wait_timeout(Duration::from_secs(30)).expect("outcome");
        assert_eq!(
            o.result,
            OutcomeKind::Dropped(DropReason::Cancelled),
            "{o:?}"
        );
    }
    // The job that was not cancelled runs on the replacement hound.
    let o = rx.recv_timeout(Duration::from_secs(30)).expect("survivor");
    assert_eq!(o.job_id, survivor.job_id);
    assert!(matches!(o.result, OutcomeKind::Completed(_)), "{o:?}");
    assert_eq!(pool.cancel(survivor.job_id), CancelResult::NotFound);

    let stats = pool.shutdown(Duration::from_secs(10));
    assert_eq!(stats.dropped, 3);
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.watchdog_kills, 0);
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert!(rx.try_recv().is_err(), "exactly one outcome each");
    assert_eq!(pool.cancel(survivor.job_id), CancelResult::NotFound);
    assert_no_hounds_left();
}
