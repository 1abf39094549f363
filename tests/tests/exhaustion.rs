//! PoolExhaustedAction: Drop, Escalate, and Defer with severity lanes (ARCHITECTURE §3.1).

use std::time::Duration;

use houndpool::{DropReason, Job, OutcomeKind, Pool, PoolExhaustedAction, Severity, SubmitError};
use houndpool_tests::*;
use nix::sys::signal::Signal;

#[test]
fn drop_refuses_at_once_and_counts() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Drop, 2);
    let rx = pool.outcomes().unwrap();
    let a = pool.submit(&Job::encode(b"a")).unwrap();
    let b = pool.submit(&Job::encode(b"b")).unwrap();
    assert_eq!(
        pool.submit(&Job::encode(b"c")),
        Err(SubmitError::PoolExhausted)
    );
    assert_eq!(
        pool.submit(&Job::encode(b"d")),
        Err(SubmitError::PoolExhausted)
    );
    let s = pool.stats();
    assert_eq!((s.accepted, s.refused.exhausted, s.in_rings), (2, 2, 2));
    signal(pid, Signal::SIGCONT);
    let outs = collect(&rx, 2, Duration::from_secs(10));
    assert_exactly_one_each(&[a.job_id, b.job_id], &outs);
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn escalate_refuses_and_emits_an_event() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Escalate, 1);
    let events = pool.escalations();
    pool.submit(&Job::encode(b"a")).unwrap();
    assert_eq!(
        pool.submit(&Job::encode(b"bb").with_severity(Severity::Critical)),
        Err(SubmitError::PoolExhausted)
    );
    let e = events.try_recv().expect("an escalation event");
    assert_eq!(e.severity, Severity::Critical);
    assert_eq!(e.body_len, 2);
    assert_eq!(e.count, 1);
    assert_eq!(pool.stats().escalations, 1);
    signal(pid, Signal::SIGCONT);
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn defer_queues_evicts_lower_lanes_and_serves_highest_first() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Defer { limit: 3 }, 1);
    let rx = pool.outcomes().unwrap();
    let sub = |body: &'static [u8], sev| pool.submit(&Job::encode(body).with_severity(sev));
    let a = sub(b"A", Severity::Low).unwrap(); // into the ring
    let b = sub(b"B", Severity::Low).unwrap(); // deferred
    let c = sub(b"C", Severity::Medium).unwrap(); // deferred
    let d = sub(b"D", Severity::Low).unwrap(); // deferred: queue full (3)
    let e = sub(b"E", Severity::High).unwrap(); // evicts B (oldest of the lowest lane)
    assert_eq!(
        sub(b"F", Severity::Low),
        Err(SubmitError::DeferQueueFull { limit: 3 })
    );
    let g = sub(b"G", Severity::Critical).unwrap(); // evicts D
    let s = pool.stats();
    assert_eq!(s.deferred, 3);
    assert_eq!(s.refused.defer_full, 1);
    assert_eq!(s.dropped, 2);
    let evicted = collect(&rx, 2, Duration::from_secs(5));
    assert_eq!(evicted[0].job_id, b.job_id);
    assert_eq!(
        evicted[0].result,
        OutcomeKind::Dropped(DropReason::Evicted { by: Severity::High })
    );
    assert_eq!(evicted[1].job_id, d.job_id);
    assert_eq!(
        evicted[1].result,
        OutcomeKind::Dropped(DropReason::Evicted {
            by: Severity::Critical
        })
    );
    signal(pid, Signal::SIGCONT);
    let done = collect(&rx, 4, Duration::from_secs(10));
    let order: Vec<_> = done.iter().map(|o| o.job_id).collect();
    // The ring's job first, then the defer queue by severity: Critical, High, Medium.
    assert_eq!(order, vec![a.job_id, g.job_id, e.job_id, c.job_id]);
    assert!(done
        .iter()
        .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.accepted, 6);
    assert_no_hounds_left();
}

#[test]
fn submit_refuses_once_shutdown_began_and_shutdown_is_idempotent() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pool = std::sync::Arc::new(
        Pool::builder()
            .config(test_config(dir.path()))
            .build()
            .unwrap(),
    );
    let rx = pool.outcomes().unwrap();
    let t = pool.submit(&Job::encode(b"before")).unwrap();
    let p2 = pool.clone();
    let stopper = std::thread::spawn(move || p2.shutdown(Duration::from_secs(5)));
    // Wait until the drain has begun, then every submit is refused with ShutDown.
    while !pool.is_shut_down() {
        std::thread::yield_now();
    }
    assert_eq!(
        pool.submit(&Job::encode(b"after")),
        Err(SubmitError::ShutDown)
    );
    let stats = stopper.join().unwrap();
    assert_eq!(stats.refused.shutdown, 1);
    assert_eq!(stats.accepted, 1);
    let again = pool.shutdown(Duration::from_secs(5));
    assert_eq!(again.accepted, 1);
    let outs = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(outs[0].job_id, t.job_id);
    assert_no_hounds_left();
}
