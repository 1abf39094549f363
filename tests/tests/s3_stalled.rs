//! An S3 endpoint that accepts connections and never answers (an overloaded server, a proxy
//! that lost its upstream, a load balancer with no healthy target): what the field sees far
//! more often than a refused connection. The outage must end in the spool, not in the
//! watchdog: every evacuation completes, spooled, before the pool's `job_timeout`, and no
//! hound is killed for it.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use houndpool::{Job, OutcomeKind};
use houndpool_tests::s3::s3_config;
use houndpool_tests::*;

/// A listener on 127.0.0.1 that accepts every connection, reads and discards what arrives,
/// and never writes a byte. Connections stay open until the stall is dropped.
struct Stall {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl Stall {
    fn start() -> Stall {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&accepted));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let mut reader = conn.try_clone().unwrap();
                        a.lock().unwrap().push(conn);
                        // Drain what the client sends so it never blocks writing.
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 64 * 1024];
                            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Stall {
            port,
            stop,
            accepted,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.accepted.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn stalled_endpoint_spools_before_the_watchdog(concurrency: u16) {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let stall = Stall::start();
    let job_timeout = Duration::from_secs(3);
    let config = houndpool::PoolConfig {
        job_timeout,
        ..s3_config(data.path(), stall.port, Some(spool.path()), concurrency)
    };
    let (pool, rx) = start(config);

    let mut accepted = Vec::new();
    for n in 0..6u32 {
        let ev = evidence_of("stalled ", n, 2048);
        accepted.push(pool.submit(&Job::evacuate(&ev)).unwrap().job_id);
    }
    let started = Instant::now();
    let outcomes = collect(&rx, accepted.len(), Duration::from_secs(120));
    assert_eq!(outcomes.len(), accepted.len(), "every job has an outcome");
    assert_exactly_one_each(&accepted, &outcomes);
    for o in &outcomes {
        match &o.result {
            OutcomeKind::Completed(r) => assert!(r.spooled, "{}: not spooled", o.job_id),
            other => panic!(
                "job {} ended {other:?} after {:?}: a stalled endpoint must end in the spool \
                 before job_timeout ({job_timeout:?}), not in the watchdog",
                o.job_id,
                started.elapsed()
            ),
        }
    }
    assert!(
        stall.connections() > 0,
        "the hounds never reached the endpoint"
    );
    let stats = pool.shutdown(Duration::from_secs(10));
    assert_eq!(
        stats.watchdog_kills, 0,
        "no hound is killed for a stalled endpoint"
    );
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_eq!(stats.failed + stats.timed_out, 0);
}

#[test]
fn stalled_endpoint_spools_before_the_watchdog_one_upload_at_a_time() {
    stalled_endpoint_spools_before_the_watchdog(1);
}

#[test]
fn stalled_endpoint_spools_before_the_watchdog_with_concurrent_uploads() {
    stalled_endpoint_spools_before_the_watchdog(4);
}
