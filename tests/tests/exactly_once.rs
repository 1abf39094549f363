//! Exactly one outcome per accepted job at the edges (issue 9, item 6, library part): submits
//! racing shutdown, a panicking `on_outcome` callback, a full outcome channel. Real hounds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use houndpool::{Job, OutcomeKind, Pool, PoolExhaustedAction, SubmitError};
use houndpool_tests::*;

/// Submitters hammer the pool (rings of one job per hound, so most jobs go through the defer
/// queue) while it shuts down with no grace. Every `Ok` ticket must get exactly one outcome;
/// a submit that loses the race is refused (`ShutDown`), never accepted and forgotten.
#[test]
fn submits_racing_shutdown_each_get_exactly_one_outcome() {
    let _g = serial();
    for round in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.max_in_flight_per_hound = 1;
        config.exhausted = PoolExhaustedAction::Defer { limit: 5_000 };
        config.outcome_capacity = Some(1 << 20);
        config.prestart = false;
        let (pool, rx) = start(config);
        let accepted = Mutex::new(Vec::new());
        let refused_after = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (pool, accepted, refused_after) = (&pool, &accepted, &refused_after);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let body = format!("round {round} thread {t}");
                    loop {
                        match pool.submit(&Job::noop(body.as_bytes())) {
                            Ok(ticket) => mine.push(ticket.job_id),
                            Err(SubmitError::ShutDown) => {
                                refused_after.store(true, Ordering::Relaxed);
                                break;
                            }
                            Err(SubmitError::DeferQueueFull { .. }) => std::thread::yield_now(),
                            Err(e) => panic!("unexpected refusal: {e}"),
                        }
                    }
                    accepted.lock().unwrap().extend(mine);
                });
            }
            // Let the queue fill, then shut down while the submitters are still going.
            std::thread::sleep(Duration::from_millis(5 + round * 3));
            let stats = pool.shutdown(Duration::ZERO);
            assert!(stats.identity_holds(), "{stats:?}");
        });
        assert!(refused_after.load(Ordering::Relaxed));
        let ids = accepted.into_inner().unwrap();
        let outs: Vec<_> = rx.try_iter().collect();
        let by_id = assert_exactly_one_each(&ids, &outs);
        assert!(by_id.values().all(|o| matches!(
            o.result,
            OutcomeKind::Completed(_) | OutcomeKind::Dropped(_)
        )));
        let stats = pool.stats();
        assert_eq!(stats.in_flight, 0, "round {round}: {stats:?}");
        assert_eq!(stats.accepted, ids.len() as u64, "round {round}: {stats:?}");
        assert_eq!(stats.undelivered, 0);
    }
}

/// A callback that panics on every other outcome: contained and counted; every outcome still
/// reaches the channel and the collector keeps serving.
#[test]
fn a_panicking_callback_is_contained_and_counted() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::builder()
        .config(test_config(dir.path()))
        .on_outcome(|o| {
            if o.job_id.0.is_multiple_of(2) {
                panic!("on_outcome panics on purpose (job {})", o.job_id.0);
            }
        })
        .build()
        .unwrap();
    let rx = pool.outcomes().unwrap();
    let ids: Vec<_> = (0..40)
        .map(|i| {
            pool.submit(&Job::noop(format!("job {i}").as_bytes()))
                .unwrap()
                .job_id
        })
        .collect();
    let outs = collect(&rx, ids.len(), Duration::from_secs(30));
    let by_id = assert_exactly_one_each(&ids, &outs);
    assert!(by_id
        .values()
        .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
    let even = ids.iter().filter(|id| id.0.is_multiple_of(2)).count() as u64;
    // The collector is alive: one more job completes.
    let after = pool.submit(&Job::noop(b"after the panics")).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(30));
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].job_id, after.job_id);
    let stats = pool.shutdown(Duration::from_secs(5));
    let panics = even + u64::from(after.job_id.0.is_multiple_of(2));
    assert_eq!(stats.callback_panics, panics, "{stats:?}");
    assert_eq!(stats.undelivered, 0, "{stats:?}");
    assert!(stats.identity_holds());
}

/// A full outcome channel never blocks the collector: the outcomes that do not fit are counted
/// in their terminal counter and in `undelivered`, so the identity stays exact.
#[test]
fn a_full_outcome_channel_counts_undelivered_exactly() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.outcome_capacity = Some(4);
    let (pool, rx) = start(config);
    for i in 0..20 {
        pool.submit(&Job::noop(format!("job {i}").as_bytes()))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.stats().in_flight > 0 {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = pool.shutdown(Duration::from_secs(5));
    assert_eq!(stats.completed, 20, "{stats:?}");
    assert_eq!(stats.undelivered, 16, "{stats:?}");
    assert_eq!(rx.try_iter().count(), 4);
    assert!(stats.identity_holds());
}
