//! `Pool::submit_batch` and `Pool::recv_outcomes` with real hounds: each job accepted or
//! refused on its own, exactly one outcome per accepted job, ring order kept.

use std::time::{Duration, Instant};

use houndpool::{
    Job, JobId, JobKind, Outcome, OutcomeKind, Pool, PoolExhaustedAction, SubmitError,
};
use houndpool_tests::*;
use nix::sys::signal::Signal;

/// Takes outcomes with `recv_outcomes` (at most `max` per call, checked) until `n` arrived or
/// `timeout` passed.
fn recv_all(pool: &Pool, n: usize, max: usize, timeout: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n && Instant::now() < deadline {
        let before = out.len();
        let got = pool.recv_outcomes(&mut out, max, Duration::from_millis(200));
        assert_eq!(got, out.len() - before);
        assert!(got <= max, "{got} outcomes for a bound of {max}");
    }
    out
}

fn accepted(results: &[Result<houndpool::Ticket, SubmitError>]) -> Vec<JobId> {
    results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|t| t.job_id))
        .collect()
}

#[test]
fn a_batch_of_1000_jobs_gets_exactly_one_outcome_each() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, _rx) = start(test_config(dir.path()));
    let bodies: Vec<Vec<u8>> = (0..1000usize)
        .map(|i| (0..(1 + i % 700)).map(|j| (i * 7 + j) as u8).collect())
        .collect();
    let jobs: Vec<Job<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                Job::noop(b)
            } else {
                Job::encode(b)
            }
        })
        .collect();
    let mut results = Vec::new();
    // More jobs than the rings hold: the rest goes to the defer queue (test_config defers).
    assert_eq!(pool.submit_batch(&jobs, &mut results), 1000);
    assert_eq!(results.len(), 1000);
    let ids = accepted(&results);
    let outs = recv_all(&pool, 1000, 64, Duration::from_secs(60));
    let by_id = assert_exactly_one_each(&ids, &outs);
    for (i, id) in ids.iter().enumerate() {
        let o = &by_id[id];
        let OutcomeKind::Completed(r) = &o.result else {
            panic!("{id}: {:?}", o.result);
        };
        match o.kind {
            JobKind::Noop => assert_eq!(r.payload.as_deref(), Some(&bodies[i][..])),
            JobKind::Encode => assert_eq!(r.original_size, Some(bodies[i].len() as u64)),
            other => panic!("{id}: unexpected kind {other:?}"),
        }
    }
    let s = pool.shutdown(Duration::from_secs(5));
    assert_eq!((s.submitted, s.accepted, s.completed), (1000, 1000, 1000));
    assert_eq!(s.failed + s.timed_out + s.dropped + s.undelivered, 0);
    assert_no_hounds_left();
}

#[test]
fn refusals_in_the_middle_of_a_batch_leave_the_other_jobs_alone() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Drop, 4);
    let big = vec![1u8; 64 * 1024 + 1];
    let jobs = [
        Job::encode(b"a"),
        Job::encode(&big), // too large
        Job::encode(b""),  // empty evidence
        Job::noop(b"b"),
        Job::encode(b"c"),
        Job::noop(b"d"),
        Job::noop(b"e"), // the hound holds 4: exhausted
        Job::noop(b"f"), // exhausted
    ];
    let mut results = vec![Err(SubmitError::ShutDown); 3]; // cleared by the call
    assert_eq!(pool.submit_batch(&jobs, &mut results), 4);
    assert_eq!(results.len(), jobs.len());
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(SubmitError::EvidenceTooLarge { len, .. }) if len == big.len()
    ));
    assert_eq!(
        results[2],
        Err(SubmitError::EmptyEvidence {
            kind: JobKind::Encode
        })
    );
    assert!(results[3..6].iter().all(Result::is_ok));
    assert_eq!(results[6], Err(SubmitError::PoolExhausted));
    assert_eq!(results[7], Err(SubmitError::PoolExhausted));
    let s = pool.stats();
    assert_eq!((s.submitted, s.accepted, s.in_rings), (8, 4, 4));
    assert_eq!(
        (s.refused.too_large, s.refused.invalid, s.refused.exhausted),
        (1, 1, 2)
    );
    signal(pid, Signal::SIGCONT);
    let ids = accepted(&results);
    let outs = recv_all(&pool, ids.len(), 2, Duration::from_secs(10));
    assert_exactly_one_each(&ids, &outs);
    // One hound: outcomes come in ring order, which is the batch's order.
    let order: Vec<JobId> = outs.iter().map(|o| o.job_id).collect();
    assert_eq!(order, ids);
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn a_full_ring_refuses_a_large_job_and_still_takes_a_smaller_one_after_it() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB evidence: the request ring (256 KiB) holds three 64 KiB jobs, far below the
    // in-flight bound, so the ring's bytes are what runs out.
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Drop, 64);
    let big = vec![7u8; 64 * 1024];
    let jobs = [
        Job::noop(&big),
        Job::noop(&big),
        Job::noop(&big),
        Job::noop(&big),     // no room left for 64 KiB
        Job::noop(b"small"), // but for this
    ];
    let mut results = Vec::new();
    assert_eq!(pool.submit_batch(&jobs, &mut results), 4);
    assert!(results[..3].iter().all(Result::is_ok));
    assert_eq!(results[3], Err(SubmitError::PoolExhausted));
    assert!(results[4].is_ok());
    signal(pid, Signal::SIGCONT);
    let ids = accepted(&results);
    let outs = recv_all(&pool, ids.len(), 8, Duration::from_secs(10));
    assert_exactly_one_each(&ids, &outs);
    let order: Vec<JobId> = outs.iter().map(|o| o.job_id).collect();
    assert_eq!(order, ids, "one hound: ring order");
    let last = &outs[3];
    assert!(matches!(
        &last.result,
        OutcomeKind::Completed(r) if r.payload.as_deref() == Some(&b"small"[..])
    ));
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn what_fits_no_ring_is_deferred_until_the_queue_is_full() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, pid) = stalled_pool(dir.path(), PoolExhaustedAction::Defer { limit: 2 }, 2);
    let jobs = [Job::noop(b"x"); 5];
    let mut results = Vec::new();
    assert_eq!(pool.submit_batch(&jobs, &mut results), 4);
    assert!(results[..4].iter().all(Result::is_ok));
    assert_eq!(results[4], Err(SubmitError::DeferQueueFull { limit: 2 }));
    let s = pool.stats();
    assert_eq!((s.accepted, s.in_rings, s.deferred), (4, 2, 2));
    signal(pid, Signal::SIGCONT);
    let ids = accepted(&results);
    let outs = recv_all(&pool, ids.len(), 16, Duration::from_secs(10));
    let by_id = assert_exactly_one_each(&ids, &outs);
    assert!(by_id
        .values()
        .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn a_batch_after_shutdown_is_refused_job_by_job() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, _rx) = start(test_config(dir.path()));
    pool.shutdown(Duration::from_secs(5));
    let jobs = [Job::noop(b"1"), Job::encode(b"2")];
    let mut results = Vec::new();
    assert_eq!(pool.submit_batch(&jobs, &mut results), 0);
    assert_eq!(
        results,
        vec![Err(SubmitError::ShutDown), Err(SubmitError::ShutDown)]
    );
    assert_eq!(pool.stats().refused.shutdown, 2);
    let mut outs = Vec::new();
    assert_eq!(
        pool.recv_outcomes(&mut outs, 8, Duration::from_millis(10)),
        0
    );
    assert_no_hounds_left();
}

/// Two caller threads consume the completion rings themselves (`recv_outcomes` with a zero
/// timeout, in a loop) while a third submits batches and the hounds are SIGKILLed now and
/// then: every accepted job still gets exactly one outcome (retried jobs included), the
/// callers never see one twice between them, and the books balance.
#[test]
fn callers_consuming_the_rings_while_hounds_die_get_exactly_one_outcome_each() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let total = 4000usize;
    let bodies: Vec<Vec<u8>> = (0..total)
        .map(|i| (0..(1 + i % 300)).map(|j| (i + j) as u8).collect())
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (ids, outs) = std::thread::scope(|s| {
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !done.load(std::sync::atomic::Ordering::Acquire)
                        && Instant::now() < deadline
                    {
                        if pool.recv_outcomes(&mut out, 64, Duration::ZERO) == 0 {
                            std::thread::yield_now();
                        }
                    }
                    out
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut results = Vec::new();
        for (k, chunk) in bodies.chunks(100).enumerate() {
            let jobs: Vec<Job<'_>> = chunk.iter().map(|b| Job::noop(b)).collect();
            pool.submit_batch(&jobs, &mut results);
            ids.extend(accepted(&results));
            if k % 8 == 7 {
                let slot = (k / 8 % 2) as u32;
                signal(pid_of(&pool, slot), Signal::SIGKILL);
            }
        }
        // Wait until every accepted job has its outcome (counted by the pool), then stop the
        // consumers.
        wait_for("every outcome delivered", || {
            let st = pool.stats();
            (st.completed + st.failed + st.timed_out + st.dropped == ids.len() as u64).then_some(())
        });
        // What the last outcomes left in the channel is taken by the consumers' next calls.
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, std::sync::atomic::Ordering::Release);
        let mut outs: Vec<Outcome> = Vec::new();
        for c in consumers {
            outs.extend(c.join().unwrap());
        }
        (ids, outs)
    });
    let mut outs = outs;
    outs.extend(rx.try_iter());
    let by_id = assert_exactly_one_each(&ids, &outs);
    for o in by_id.values() {
        // A job at the front of two killed hounds is poison; nothing else may fail.
        assert!(
            matches!(
                o.result,
                OutcomeKind::Completed(_)
                    | OutcomeKind::Failed(houndpool::FailReason::Poison { .. })
            ),
            "{}: {:?}",
            o.job_id,
            o.result
        );
    }
    let s = pool.shutdown(Duration::from_secs(5));
    assert!(s.identity_holds(), "{s:?}");
    assert_eq!(s.completed + s.failed, ids.len() as u64, "{s:?}");
    assert_eq!(s.undelivered, 0);
    assert!(s.hound_exits >= 4, "{s:?}");
    assert_no_hounds_left();
}

/// Records too large for a caller to consume itself (above 64 KiB) are left to the collector
/// while the caller consumes the small ones around them: mixed sizes through `recv_outcomes`
/// in a loop come back complete, exactly once each, with their own bytes.
#[test]
fn large_completions_are_left_to_the_collector_while_the_caller_consumes_small_ones() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = houndpool::PoolConfig {
        max_evidence_bytes: 256 * 1024,
        max_output_bytes: 256 * 1024,
        ..test_config(dir.path())
    };
    let (pool, _rx) = start(config);
    let bodies: Vec<Vec<u8>> = (0..120usize)
        .map(|i| {
            let len = if i % 3 == 0 { 100 * 1024 + i } else { 1 + i };
            (0..len).map(|j| (i * 13 + j) as u8).collect()
        })
        .collect();
    let jobs: Vec<Job<'_>> = bodies.iter().map(|b| Job::noop(b)).collect();
    let mut results = Vec::new();
    pool.submit_batch(&jobs, &mut results);
    let ids = accepted(&results);
    assert_eq!(ids.len(), bodies.len(), "{results:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut outs = Vec::new();
    while outs.len() < ids.len() && Instant::now() < deadline {
        let want = ids.len() - outs.len();
        if pool.recv_outcomes(&mut outs, want, Duration::ZERO) == 0 {
            std::thread::yield_now();
        }
    }
    let by_id = assert_exactly_one_each(&ids, &outs);
    for (i, id) in ids.iter().enumerate() {
        let OutcomeKind::Completed(r) = &by_id[id].result else {
            panic!("{id}: {:?}", by_id[id].result);
        };
        assert_eq!(r.payload.as_deref(), Some(&bodies[i][..]), "{id}");
    }
    let s = pool.shutdown(Duration::from_secs(5));
    assert!(s.identity_holds(), "{s:?}");
    assert_eq!(s.completed, ids.len() as u64);
}

/// Gives `n` empty buffers of capacity `base + k` (k < n) to `pool`: capacities no
/// allocation of the pool's own has, so a payload that carries one came out of the stash.
fn seed_stash(pool: &Pool, base: usize, n: usize) -> std::collections::HashSet<usize> {
    (0..n)
        .map(|k| {
            pool.recycle_payload(Vec::with_capacity(base + k));
            base + k
        })
        .collect()
}

/// Where the echoes' outcomes are taken from.
enum Take<'a> {
    /// `Pool::recv_outcomes`: the caller's thread consumes the completion rings itself.
    RecvOutcomes,
    /// The outcome channel alone: the collector thread consumes every completion.
    Channel(&'a houndpool::Receiver<Outcome>),
}

/// Echoes `rounds` batches of `per_round` Noop jobs of `len(i)` bytes through `pool` with
/// `submit_batch`, takes the outcomes as `take` says, checks every echo byte for byte, gives
/// each payload back with `give_back`, and returns how many payloads came in a buffer of one
/// of the `seeded` capacities. Bodies differ job by job (length and content), so a buffer
/// handed out twice, or reused before its previous payload was given back, shows as a wrong
/// echo.
fn echo_and_give_back(
    pool: &Pool,
    take: Take<'_>,
    rounds: usize,
    per_round: usize,
    len: impl Fn(usize) -> usize,
    seeded: &std::collections::HashSet<usize>,
    give_back: impl Fn(&Pool, Outcome),
) -> usize {
    let mut from_stash = 0usize;
    let mut results = Vec::new();
    for round in 0..rounds {
        let bodies: Vec<Vec<u8>> = (0..per_round)
            .map(|k| {
                let i = round * per_round + k;
                (0..len(i)).map(|j| (i * 31 + j * 7) as u8).collect()
            })
            .collect();
        let jobs: Vec<Job<'_>> = bodies.iter().map(|b| Job::noop(b)).collect();
        assert_eq!(
            pool.submit_batch(&jobs, &mut results),
            per_round,
            "{results:?}"
        );
        let ids = accepted(&results);
        let outs = match take {
            Take::RecvOutcomes => recv_all(pool, per_round, per_round, Duration::from_secs(30)),
            Take::Channel(rx) => collect(rx, per_round, Duration::from_secs(30)),
        };
        assert_exactly_one_each(&ids, &outs);
        for o in outs {
            let k = ids.iter().position(|id| *id == o.job_id).unwrap();
            let OutcomeKind::Completed(r) = &o.result else {
                panic!("{}: {:?}", o.job_id, o.result);
            };
            let p = r.payload.as_ref().expect("an echo carries its body");
            assert!(
                p[..] == bodies[k][..],
                "{}: echo differs from its body",
                o.job_id
            );
            if seeded.contains(&p.capacity()) {
                from_stash += 1;
            }
            give_back(pool, o);
        }
    }
    from_stash
}

/// A pool of one hound for echoes up to 256 KiB, and its outcome channel.
fn echo_pool(dir: &std::path::Path) -> (Pool, houndpool::Receiver<Outcome>) {
    let mut config = test_config(dir);
    config.size = houndpool::PoolSize::Fixed(1);
    config.max_evidence_bytes = 256 * 1024;
    config.max_output_bytes = 256 * 1024;
    start(config)
}

/// 130 to 256 KiB: above what a caller's thread copies out itself before anything is given
/// back.
fn large(i: usize) -> usize {
    130 * 1024 + (i * 4099) % (126 * 1024)
}

/// `Pool::recycle`, outcomes through the channel (the collector thread copies every
/// completion out): buffers given back carry later large payloads, byte for byte, and a small
/// payload never gets one.
#[test]
fn recycled_payload_buffers_carry_later_large_payloads_intact() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = echo_pool(dir.path());
    // The 256 KiB class keeps 8: at most 3 echoes of 256 KiB are in flight here.
    let seeded = seed_stash(&pool, 256 * 1024 + 100, 8);
    let from_stash = echo_and_give_back(
        &pool,
        Take::Channel(&rx),
        40,
        3,
        large,
        &seeded,
        |pool, o| pool.recycle(o),
    );
    assert_eq!(from_stash, 120, "payloads in a buffer given back");
    // A small echo after all that: its own small buffer, not a kept one.
    pool.submit(&Job::noop(b"small")).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10));
    let OutcomeKind::Completed(r) = &o[0].result else {
        panic!("{:?}", o[0].result);
    };
    let p = r.payload.as_ref().unwrap();
    assert_eq!(&p[..], b"small");
    assert!(p.capacity() < 4096, "capacity {}", p.capacity());
    let s = pool.shutdown(Duration::from_secs(5));
    assert_eq!((s.accepted, s.completed), (121, 121));
    assert_no_hounds_left();
}

/// `Pool::recycle_payload` with `recv_outcomes`: the caller's thread copies completions out
/// itself, medium ones (9 to 16 KiB) always and, once buffers are given back, large ones too
/// (instead of handing them to the collector); the buffers go round, every echo intact.
#[test]
fn payloads_given_back_serve_the_callers_own_copies_too() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, _rx) = echo_pool(dir.path());
    let give_back = |pool: &Pool, o: Outcome| {
        if let OutcomeKind::Completed(r) = o.result {
            pool.recycle_payload(r.payload.unwrap());
        }
    };
    let seeded = seed_stash(&pool, 16 * 1024 + 100, 32);
    let medium = |i: usize| 9 * 1024 + (i * 331) % (7 * 1024);
    let from_stash = echo_and_give_back(
        &pool,
        Take::RecvOutcomes,
        30,
        16,
        medium,
        &seeded,
        give_back,
    );
    // All but at most one: the collector thread may take a record while no caller consumes,
    // and its scratch buffer (64 KiB from the start) holds it without asking the stash.
    assert!(
        from_stash >= 479,
        "{from_stash} of 480 payloads in a buffer given back"
    );
    let seeded = seed_stash(&pool, 256 * 1024 + 100, 8);
    let from_stash =
        echo_and_give_back(&pool, Take::RecvOutcomes, 40, 3, large, &seeded, give_back);
    assert!(
        from_stash >= 119,
        "{from_stash} of 120 payloads in a buffer given back"
    );
    let s = pool.shutdown(Duration::from_secs(5));
    assert_eq!((s.accepted, s.completed), (600, 600));
    assert_no_hounds_left();
}
