//! Lost-wake-up stress test over a real region pair, in both directions.
//!
//! A producer thread pushes many small records with random short pauses and rings the doorbell
//! only when it sees the consumer's sleeping flag after publishing. The consumer spins a random
//! short time when the ring is empty, then announces sleep, re-checks, and waits on its
//! doorbell with a long (2 s) timeout. If the protocol could lose a wake-up, some wait would
//! end by timeout with data pending: that count must be 0, and every record must arrive, in
//! order.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastrand::Rng;
use houndpool_protocol::region::{HoundRegions, RegionLayout, SupervisorRegions};
use houndpool_protocol::wake::bell_pipe;

const RECORDS: u64 = 200_000;
const WAIT: Duration = Duration::from_secs(2);
/// Safety net against a hang (a broken protocol costs 2 s per lost wake-up, not forever).
const GIVE_UP: Duration = Duration::from_secs(60);

/// Producer-side pause between records: mostly none, sometimes a spin or a yield, rarely a
/// sleep long enough for the consumer to go to sleep.
fn producer_pause(rng: &mut Rng) {
    match rng.u64(..1000) {
        0..=899 => {}
        900..=979 => {
            for _ in 0..rng.u64(..300) {
                std::hint::spin_loop();
            }
        }
        980..=995 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(20 + rng.u64(..80))),
    }
}

/// Per record: does the producer end a burst here and wait until the consumer has drained
/// the ring? Records come in blocks of 1024; a quarter of the blocks stream without waiting
/// (the ring fills up and the consumer runs behind), the others come in bursts of ~8 records.
/// Waiting for the drain makes the producer idle right after a burst, so a wake-up lost on a
/// burst's last record cannot be healed by a later push: it surfaces as a timed-out wait with
/// the record pending.
fn end_of_burst(seq: u64, rng: &mut Rng) -> bool {
    let block = seq / 1024;
    let streaming = block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 == 0;
    !streaming && rng.u64(..8) == 0
}

/// Spins (yielding) until `consumed` reaches `target`.
fn wait_drained(consumed: &AtomicU64, target: u64, failed: &AtomicBool, t0: Instant) {
    while consumed.load(Ordering::Acquire) < target {
        assert!(!failed.load(Ordering::Relaxed), "consumer failed");
        assert!(
            t0.elapsed() < GIVE_UP,
            "producer stuck waiting for the drain"
        );
        std::thread::yield_now();
    }
}

/// Work the consumer does between its last look at the ring and announcing sleep (a real hound
/// sets its state there): a window in which a record can arrive unseen, which only the
/// re-check after the announcement catches.
fn consumer_gap(rng: &mut Rng) {
    if rng.u64(..2) == 0 {
        for _ in 0..rng.u64(..500) {
            std::hint::spin_loop();
        }
    }
}

/// How long the consumer spins on an empty ring before announcing sleep.
fn consumer_spins(rng: &mut Rng) -> u64 {
    match rng.u64(..4) {
        0 => 0,
        1 => rng.u64(..50),
        _ => rng.u64(..2000),
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend(std::iter::repeat_n(seq as u8, (seq % 25) as usize));
    p
}

fn check(seq: u64, got: &[u8]) {
    assert_eq!(
        got,
        payload(seq).as_slice(),
        "record {seq} wrong or out of order"
    );
}

fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid borrowed fd; touches no memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    assert!(r >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(r) }
}

fn regions(name: &str) -> (SupervisorRegions, HoundRegions) {
    let layout = RegionLayout {
        request_capacity: 4096,
        completion_capacity: 4096,
    };
    let sup = SupervisorRegions::create(layout, name).unwrap();
    let hound = HoundRegions::map(dup(sup.request_fd()), dup(sup.completion_fd())).unwrap();
    (sup, hound)
}

#[derive(Debug, Default)]
struct SleepStats {
    /// Announce → re-check → wait cycles that actually blocked in `wait`.
    waits: u64,
    /// Waits that ended by timeout.
    timeouts: u64,
    /// Waits that ended by timeout while a record was pending: lost wake-ups.
    lost: u64,
}

/// Supervisor → hound: the hound sleeps on its request doorbell.
#[test]
fn request_ring_no_lost_wakeup() {
    let t0 = Instant::now();
    let (sup, hound) = regions("hp-wake-req");
    let (mut rw, cr) = sup.split();
    let (mut rr, _cw, st) = hound.split();
    // One pipe per direction: the supervisor keeps the write end, the hound the read end.
    let (bell, hound_bell) = bell_pipe().unwrap();
    let consumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));

    let hound_consumed = Arc::clone(&consumed);
    let hound_failed = Arc::clone(&failed);
    let consumer = std::thread::spawn(move || {
        let guard = FailFlag(Some(hound_failed));
        let mut rng = Rng::with_seed(0x1234_5678_9abc_def1);
        let mut stats = SleepStats::default();
        let mut seq = 0u64;
        while seq < RECORDS {
            if let Some(p) = rr.peek().unwrap() {
                check(seq, p);
                rr.advance();
                seq += 1;
                hound_consumed.store(seq, Ordering::Release);
                continue;
            }
            let spins = consumer_spins(&mut rng);
            let mut i = 0;
            while i < spins && !rr.has_pending() {
                std::hint::spin_loop();
                i += 1;
            }
            if rr.has_pending() {
                continue;
            }
            consumer_gap(&mut rng);
            st.announce_sleep();
            if rr.has_pending() {
                st.cancel_sleep();
                continue;
            }
            stats.waits += 1;
            let signalled = hound_bell.wait(WAIT).unwrap();
            st.cancel_sleep();
            hound_bell.drain();
            if !signalled {
                stats.timeouts += 1;
                if rr.has_pending() {
                    stats.lost += 1;
                    panic!("lost wake-up: timed out with a record pending ({stats:?})");
                }
            }
        }
        guard.ok();
        stats
    });

    // Producer: the supervisor's submit path; frees request space as the hound consumes.
    let mut rng = Rng::with_seed(0x0fed_cba9_8765_4321);
    let mut ends: VecDeque<u64> = VecDeque::new();
    let mut released = 0u64;
    let (mut full, mut bursts) = (0u64, 0u64);
    for seq in 0..RECORDS {
        let p = payload(seq);
        loop {
            if let Some(pos) = rw.try_push(&[&p]).unwrap() {
                ends.push_back(pos.end);
                break;
            }
            // Full: release what the hound has finished, as completions would.
            let done = consumed.load(Ordering::Acquire);
            while released < done {
                let end = ends.pop_front().unwrap();
                cr.release_requests(end);
                released += 1;
            }
            full += 1;
            assert!(!failed.load(Ordering::Relaxed), "consumer failed");
            assert!(t0.elapsed() < GIVE_UP, "producer stuck");
            std::thread::yield_now();
        }
        if rw.hound_sleeping() {
            bell.ring().unwrap();
        }
        if end_of_burst(seq, &mut rng) {
            wait_drained(&consumed, seq + 1, &failed, t0);
            bursts += 1;
        } else {
            producer_pause(&mut rng);
        }
    }
    let stats = consumer.join().unwrap();
    eprintln!(
        "request ring: {RECORDS} records in {:?}, {stats:?}, {bursts} drained bursts, \
         {full} full-ring retries",
        t0.elapsed()
    );
    assert!(full > 0 && bursts > 1000, "{full} {bursts}");
    assert_eq!(stats.lost, 0, "lost wake-ups: {stats:?}");
    assert!(stats.waits >= 500, "sleep path barely exercised: {stats:?}");
}

/// Hound → supervisor: the supervisor sleeps on its completion doorbell.
#[test]
fn completion_ring_no_lost_wakeup() {
    let t0 = Instant::now();
    let (sup, hound) = regions("hp-wake-cmp");
    let (_rw, mut cr) = sup.split();
    let (_rr, mut cw, _st) = hound.split();
    // The hound keeps the write end, the supervisor the read end.
    let (hound_bell, bell) = bell_pipe().unwrap();
    let failed = Arc::new(AtomicBool::new(false));

    let consumed = Arc::new(AtomicU64::new(0));
    let prod_failed = Arc::clone(&failed);
    let prod_consumed = Arc::clone(&consumed);
    let producer = std::thread::spawn(move || {
        let guard = FailFlag(Some(Arc::clone(&prod_failed)));
        let mut rng = Rng::with_seed(0x5555_aaaa_3333_cccc);
        let (mut full, mut bursts) = (0u64, 0u64);
        for seq in 0..RECORDS {
            let p = payload(seq);
            while !cw.try_push(&[&p]).unwrap() {
                full += 1;
                assert!(!prod_failed.load(Ordering::Relaxed), "consumer failed");
                assert!(t0.elapsed() < GIVE_UP, "producer stuck");
                std::thread::yield_now();
            }
            if cw.supervisor_sleeping() {
                hound_bell.ring().unwrap();
            }
            if end_of_burst(seq, &mut rng) {
                wait_drained(&prod_consumed, seq + 1, &prod_failed, t0);
                bursts += 1;
            } else {
                producer_pause(&mut rng);
            }
        }
        guard.ok();
        (full, bursts)
    });
    let main_guard = FailFlag(Some(Arc::clone(&failed)));

    let mut rng = Rng::with_seed(0x7777_1111_9999_2222);
    let mut stats = SleepStats::default();
    let mut out = Vec::new();
    let mut seq = 0u64;
    while seq < RECORDS {
        if cr.pop(&mut out).unwrap() {
            check(seq, &out);
            seq += 1;
            consumed.store(seq, Ordering::Release);
            continue;
        }
        assert!(!failed.load(Ordering::Relaxed), "producer failed");
        let spins = consumer_spins(&mut rng);
        let mut i = 0;
        while i < spins && !cr.has_pending().unwrap() {
            std::hint::spin_loop();
            i += 1;
        }
        if cr.has_pending().unwrap() {
            continue;
        }
        consumer_gap(&mut rng);
        cr.announce_sleep();
        if cr.has_pending().unwrap() {
            cr.cancel_sleep();
            continue;
        }
        stats.waits += 1;
        let signalled = bell.wait(WAIT).unwrap();
        cr.cancel_sleep();
        bell.drain();
        if !signalled {
            stats.timeouts += 1;
            if cr.has_pending().unwrap() {
                stats.lost += 1;
                panic!("lost wake-up: timed out with a record pending ({stats:?})");
            }
        }
        assert!(t0.elapsed() < GIVE_UP, "consumer stuck");
    }
    main_guard.ok();
    let (full, bursts) = producer.join().unwrap();
    eprintln!(
        "completion ring: {RECORDS} records in {:?}, {stats:?}, {bursts} drained bursts, \
         {full} full-ring retries",
        t0.elapsed()
    );
    assert!(full > 0 && bursts > 1000, "{full} {bursts}");
    assert_eq!(stats.lost, 0, "lost wake-ups: {stats:?}");
    assert!(stats.waits >= 500, "sleep path barely exercised: {stats:?}");
}

/// Sets the shared flag if the thread unwinds before `ok()`, so the other side stops waiting.
struct FailFlag(Option<Arc<AtomicBool>>);
impl FailFlag {
    fn ok(mut self) {
        self.0 = None;
    }
}
impl Drop for FailFlag {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}
