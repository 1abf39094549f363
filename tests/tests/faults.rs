//! Hounds that die or hang: nothing accepted is lost, every job gets exactly one outcome, and
//! the hound is replaced.

use std::time::Duration;

use crossbeam_channel::Receiver;
use houndpool::{DropReason, Job, Outcome, OutcomeKind, Pool, PoolConfig, PoolSize};
use houndpool_tests::*;
use nix::sys::signal::Signal;

fn wait_for_new_pid(pool: &Pool, slot: u32, old: i32) -> i32 {
    wait_for(&format!("slot {slot} was not refilled"), || {
        pool.stats().hounds[slot as usize]
            .pid
            .map(|p| p as i32)
            .filter(|&p| p != old)
    })
}

/// Submits 20 small encode jobs to a pool whose hound 0 no longer runs (stopped, or stuck in
/// the kernel) and checks what the watchdog makes of them within `within`: exactly one (the
/// job that hound held at its front) times out, every other one is retried and completes,
/// each with exactly one outcome.
fn only_the_front_job_times_out(pool: &Pool, rx: &Receiver<Outcome>, within: Duration) {
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            pool.submit(&Job::encode(b"evidence under a hound that does not run"))
                .unwrap()
                .job_id,
        );
    }
    let outs = collect(rx, ids.len(), within);
    let by_id = assert_exactly_one_each(&ids, &outs);
    let count = |kind: fn(&OutcomeKind) -> bool| by_id.values().filter(|o| kind(&o.result)).count();
    assert_eq!(
        count(|k| *k == OutcomeKind::TimedOut),
        1,
        "exactly the job the hound held at its front"
    );
    assert_eq!(
        count(|k| matches!(k, OutcomeKind::Completed(_))),
        ids.len() - 1,
        "the others were retried and completed"
    );
    assert!(
        by_id.values().any(|o| o.attempts == 2),
        "some job was retried"
    );
}

#[test]
fn sigkill_mid_stream_loses_nothing_and_the_hound_is_replaced() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let victim = pid_of(&pool, 0);
    let evidence = houndpool::synth::EvidenceGenerator::new(3).request(8 * 1024);
    let mut ids = Vec::new();
    for i in 0..4000 {
        ids.push(pool.submit(&Job::encode(&evidence)).unwrap().job_id);
        if i == 1000 {
            signal(victim, Signal::SIGKILL);
        }
    }
    let outs = collect(&rx, ids.len(), Duration::from_secs(60));
    let by_id = assert_exactly_one_each(&ids, &outs);
    // A killed hound's jobs are retried once elsewhere; none should fail as poison here.
    let completed = by_id
        .values()
        .filter(|o| matches!(o.result, OutcomeKind::Completed(_)))
        .count();
    assert_eq!(completed, ids.len(), "every job completes after one retry");
    let fresh = wait_for_new_pid(&pool, 0, victim);
    assert_ne!(fresh, victim);
    assert!(
        !std::path::Path::new(&format!("/proc/{victim}")).exists(),
        "victim not reaped"
    );
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert!(stats.hound_exits >= 1 && stats.hound_spawns >= 3);
    assert_no_hounds_left();
}

#[test]
fn sigstop_makes_the_front_job_time_out_and_the_hound_is_replaced() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        job_timeout: Duration::from_millis(300),
        ..test_config(dir.path())
    };
    let (pool, rx) = start(config);
    let stopped = pid_of(&pool, 0);
    signal(stopped, Signal::SIGSTOP);
    only_the_front_job_times_out(&pool, &rx, Duration::from_secs(30));
    wait_for_new_pid(&pool, 0, stopped);
    let stats = pool.shutdown(Duration::from_secs(5));
    assert_eq!(stats.watchdog_kills, 1);
    assert_eq!(stats.timed_out, 1);
    assert_no_hounds_left();
}

#[test]
fn shutdown_with_jobs_in_flight_delivers_an_outcome_for_every_one() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        size: PoolSize::Fixed(2),
        ..test_config(dir.path())
    };
    let (pool, rx) = start(config);
    let evidence = houndpool::synth::EvidenceGenerator::new(9).request(60 * 1024);
    let mut ids = Vec::new();
    for _ in 0..2000 {
        ids.push(pool.submit(&Job::evacuate(&evidence)).unwrap().job_id);
    }
    // No grace: what has not finished is dropped, but still gets its outcome.
    let stats = pool.shutdown(Duration::ZERO);
    let outs = collect(&rx, ids.len(), Duration::from_secs(5));
    let by_id = assert_exactly_one_each(&ids, &outs);
    let dropped = by_id
        .values()
        .filter(|o| o.result == OutcomeKind::Dropped(DropReason::Shutdown))
        .count();
    let completed = by_id
        .values()
        .filter(|o| matches!(o.result, OutcomeKind::Completed(_)))
        .count();
    assert_eq!(dropped + completed, ids.len());
    assert!(
        dropped > 0,
        "2000 × 60 KiB cannot all finish with zero grace"
    );
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.dropped as usize, dropped);
    assert_no_hounds_left();
}

#[test]
fn shutdown_with_grace_finishes_everything() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let mut ids = Vec::new();
    for i in 0..500u32 {
        ids.push(
            pool.submit(&Job::encode(&i.to_le_bytes().repeat(100)))
                .unwrap()
                .job_id,
        );
    }
    let stats = pool.shutdown(Duration::from_secs(30));
    let outs = collect(&rx, ids.len(), Duration::from_secs(5));
    let by_id = assert_exactly_one_each(&ids, &outs);
    assert!(by_id
        .values()
        .all(|o| matches!(o.result, OutcomeKind::Completed(_))));
    assert_eq!(stats.completed, 500);
    assert_eq!(stats.dropped, 0);
    assert_no_hounds_left();
}

/// Waits until the pool reports a prestarted spare other than `not`.
fn wait_for_spare(pool: &Pool, not: Option<u32>) -> u32 {
    wait_for("no spare hound was started", || {
        pool.stats().spare_pid.filter(|&p| Some(p) != not)
    })
}

#[test]
fn a_prestarted_spare_replaces_a_dead_hound_and_is_itself_replaced() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Fixed(1);
    let (pool, rx) = start(config);
    let victim = pid_of(&pool, 0);
    let spare = wait_for_spare(&pool, None);
    assert_ne!(spare as i32, victim);
    // The spare is a live child of ours, waiting for its handshake.
    assert!(hound_children().contains(&(spare as i32)));

    signal(victim, Signal::SIGKILL);
    let fresh = wait_for_new_pid(&pool, 0, victim);
    assert_eq!(
        fresh, spare as i32,
        "the replacement is the prestarted spare"
    );
    // A new spare is started behind it, and the replacement does real work.
    let next = wait_for_spare(&pool, Some(spare));
    assert_ne!(next as i32, fresh);
    let t = pool
        .submit(&Job::encode(b"evidence after the swap"))
        .unwrap();
    let outs = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(outs[0].job_id, t.job_id);
    assert!(matches!(outs[0].result, OutcomeKind::Completed(_)));

    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.spare_pid, None, "the spare is stopped at shutdown");
    // The spare never got a slot: it is killed and reaped with the pool.
    assert!(!std::path::Path::new(&format!("/proc/{next}")).exists());
    assert_no_hounds_left();
}

/// A spare that dies while it waits for a slot (killed by an operator, by the host's OOM
/// killer) is noticed, reaped and replaced while the pool is idle: `spare_pid` (and the
/// `houndpool_pool_spare_ready` gauge) never names a dead process, and the next respawn is
/// still served by a live spare. Before, the dead spare stayed a zombie named as ready until
/// the next respawn found its handshake failing.
#[test]
fn a_spare_that_dies_while_waiting_is_reaped_and_replaced() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Fixed(1);
    let (pool, rx) = start(config);
    let first = wait_for_spare(&pool, None);
    signal(first as i32, Signal::SIGKILL);
    let second = wait_for_spare(&pool, Some(first));
    assert_ne!(second, first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead spare {first} was never reaped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The replacement serves the next respawn.
    let victim = pid_of(&pool, 0);
    signal(victim, Signal::SIGKILL);
    assert_eq!(wait_for_new_pid(&pool, 0, victim), second as i32);
    let t = pool.submit(&Job::encode(b"after two spares")).unwrap();
    let outs = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(outs[0].job_id, t.job_id);
    assert!(matches!(outs[0].result, OutcomeKind::Completed(_)));
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds());
    assert_no_hounds_left();
}

#[test]
fn without_prestart_no_spare_is_kept() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.size = PoolSize::Fixed(1);
    config.prestart = false;
    let (pool, _rx) = start(config);
    let victim = pid_of(&pool, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.stats().spare_pid, None);
    assert_eq!(hound_children(), vec![victim]);
    signal(victim, Signal::SIGKILL);
    let fresh = wait_for_new_pid(&pool, 0, victim);
    assert_ne!(fresh, victim);
    assert_eq!(pool.stats().spare_pid, None);
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

/// A cgroup v1 freezer group holding one process: a frozen task sleeps uninterruptibly (D
/// state) and a SIGKILL takes effect only when it is thawed, exactly like a hound blocked in
/// `fdatasync` on a stalled disk. Thawed and removed on drop, so a failing test leaves no
/// process stuck.
struct Frozen {
    dir: std::path::PathBuf,
}

impl Frozen {
    /// `None` when this machine has no cgroup v1 freezer (the test then says so and passes:
    /// it needs the kernel's help to make a process unkillable).
    fn freeze(pid: i32) -> Option<Frozen> {
        let root = std::path::Path::new("/sys/fs/cgroup/freezer");
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("houndpool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("freezer cgroup");
        let frozen = Frozen { dir };
        std::fs::write(frozen.dir.join("cgroup.procs"), pid.to_string()).expect("move");
        std::fs::write(frozen.dir.join("freezer.state"), "FROZEN").expect("freeze");
        wait_for("the hound to freeze", || {
            let state = std::fs::read_to_string(frozen.dir.join("freezer.state")).ok()?;
            (state.trim() == "FROZEN").then_some(())
        });
        Some(frozen)
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
        // Emptied when the process exits (it was SIGKILLed); then the group can go.
        for _ in 0..500 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A hound the kernel will not let die yet (SIGKILLed while in uninterruptible sleep) must
/// not stall the pool: the collector settles its jobs at once, keeps serving the other hound,
/// replaces it, and reaps it when it finally exits. Before the fix the collector blocked in
/// `waitpid` after the SIGKILL and no outcome at all arrived until the thaw.
#[test]
fn a_hound_stuck_in_the_kernel_does_not_stall_the_pool() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        size: PoolSize::Fixed(2),
        job_timeout: Duration::from_millis(300),
        ..test_config(dir.path())
    };
    let (pool, rx) = start(config);
    let stuck = pid_of(&pool, 0);
    let Some(frozen) = Frozen::freeze(stuck) else {
        eprintln!("no cgroup v1 freezer here: cannot make a hound unkillable; skipped");
        return;
    };
    // Every job's outcome, while the stuck hound is still not dead.
    only_the_front_job_times_out(&pool, &rx, Duration::from_secs(20));
    let status = std::fs::read_to_string(format!("/proc/{stuck}/status")).unwrap_or_default();
    assert!(
        status.contains("State:\tD"),
        "the killed hound is still alive, stuck in the kernel:\n{status}"
    );
    // The slot is refilled meanwhile, and the pool keeps working on both hounds.
    wait_for_new_pid(&pool, 0, stuck);
    let more = pool
        .submit(&Job::encode(b"after the replacement"))
        .unwrap()
        .job_id;
    let out = collect(&rx, 1, Duration::from_secs(10));
    assert_exactly_one_each(&[more], &out);
    // Thawed, it dies of the pending SIGKILL and the collector reaps it: no zombie.
    frozen.thaw();
    wait_for("the stuck hound to be reaped", || {
        (!std::path::Path::new(&format!("/proc/{stuck}")).exists()).then_some(())
    });
    drop(frozen);
    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.watchdog_kills, 1);
    assert_no_hounds_left();
}

/// Stopping a pool whose hound is stuck in the kernel returns without waiting for the kernel,
/// and the hound is still reaped (by a background thread) once it can exit.
#[test]
fn shutdown_does_not_wait_for_a_hound_stuck_in_the_kernel() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let stuck = pid_of(&pool, 0);
    let Some(frozen) = Frozen::freeze(stuck) else {
        eprintln!("no cgroup v1 freezer here: cannot make a hound unkillable; skipped");
        return;
    };
    let id = pool.submit(&Job::encode(b"evidence")).unwrap().job_id;
    let started = std::time::Instant::now();
    let stats = pool.shutdown(Duration::from_millis(200));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    let out = collect(&rx, 1, Duration::from_secs(1));
    assert_exactly_one_each(&[id], &out);
    assert!(stats.identity_holds() && stats.in_flight == 0);
    frozen.thaw();
    wait_for("the stuck hound to be reaped after the stop", || {
        (!std::path::Path::new(&format!("/proc/{stuck}")).exists()).then_some(())
    });
    drop(frozen);
    assert_no_hounds_left();
}
