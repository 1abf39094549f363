//! The spool's drain through real, sandboxed hounds against a real S3-compatible server
//! (rclone on 127.0.0.1): an idle pool uploads an outage's backlog round after round, each
//! record exactly once, and a hound busy with such a backlog still sees a Shutdown between
//! two rounds instead of being killed with a record claimed.

use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use houndpool::ColdConfig;
use houndpool_tests::s3::{free_port, s3_config, Server, BUCKET};
use houndpool_tests::*;

/// An outage's backlog: a directory for the server, and a spool holding `n` envelopes
/// under `evidence/dNNNNN`, spooled while nothing served the returned port. Returns them with
/// the envelopes by key.
fn backlog(n: usize) -> (TempDir, TempDir, u16, Vec<(String, Vec<u8>)>) {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let ColdConfig::S3(target) = s3_config(data.path(), port, Some(spool.path()), 1).cold else {
        unreachable!("s3_config builds an S3 target")
    };
    let sent = houndpool_tests::s3::spool_while_down(&target, "evidence/d", n, 0xd4a1);
    (data, spool, port, sent)
}

/// Waits until 20 of the `sent` records have left the spool: draining has started.
fn wait_draining(spool: &Path, sent: usize) {
    wait_until("draining started", Duration::from_secs(60), || {
        records(spool).len() <= sent - 20
    });
}

/// Names in the spool directory that are records (pending or claimed).
fn records(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".spool"))
        .collect()
}

/// Whether the spool holds no record, in two listings 50 ms apart: a listing taken while a
/// drainer renames a record (claim, put back) may see it under neither name.
fn drained(spool: &Path) -> bool {
    records(spool).is_empty() && {
        std::thread::sleep(Duration::from_millis(50));
        records(spool).is_empty()
    }
}

/// How many of `sent` are on the server's disk; each one that is must be byte for byte the
/// envelope spooled for its key.
fn uploaded(data: &Path, sent: &[(String, Vec<u8>)]) -> usize {
    sent.iter()
        .filter(
            |(key, env)| match std::fs::read(data.join(BUCKET).join(key)) {
                Ok(bytes) => {
                    assert!(
                        &bytes == env,
                        "{key}: the object is not the spooled envelope"
                    );
                    true
                }
                Err(_) => false,
            },
        )
        .count()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_pool_uploads_a_backlog_once_each_from_two_hounds() {
    let _g = serial();
    let (data, spool, port, sent) = backlog(300);
    let _server = Server::start(port, data.path());
    let mut config = s3_config(data.path(), port, Some(spool.path()), 16);
    config.size = houndpool::PoolSize::Fixed(2);
    let (pool, _rx) = start(config);
    wait_until("the spool drained", Duration::from_secs(120), || {
        drained(spool.path())
    });
    let stats = pool.shutdown(Duration::from_secs(5));
    assert_eq!(uploaded(data.path(), &sent), sent.len());
    assert!(
        !spool.path().join("quarantine").exists()
            || std::fs::read_dir(spool.path().join("quarantine"))
                .unwrap()
                .next()
                .is_none(),
        "nothing quarantined"
    );
    assert!(stats.identity_holds(), "{stats:?}");
}

#[test]
fn a_hound_draining_a_backlog_exits_on_shutdown_between_rounds_leaving_no_claim() {
    let _g = serial();
    // One upload at a time: the backlog takes a few seconds (about 3 ms a record here), so
    // it outlasts the 1 s a hound is given after the Shutdown, which comes mid-backlog.
    let (data, spool, port, sent) = backlog(1000);
    let _server = Server::start(port, data.path());
    let (pool, _rx) = start(s3_config(data.path(), port, Some(spool.path()), 1));
    wait_draining(spool.path(), sent.len());
    // The pool gives a hound 1 s after Shutdown before it kills it. A hound that looked at
    // its control channel only when its backlog was gone would be killed mid-upload, its
    // claim left in the spool, invisible to every drainer for `claim_stale_after` (15 min).
    pool.shutdown(Duration::from_secs(5));
    let left = records(spool.path());
    let claims: Vec<&String> = left.iter().filter(|n| n.contains(".claim-")).collect();
    assert!(claims.is_empty(), "claims left behind: {claims:?}");
    assert!(
        !left.is_empty(),
        "the backlog was gone before the Shutdown: the test proves nothing"
    );
    assert_eq!(
        left.len() + uploaded(data.path(), &sent),
        sent.len(),
        "every record is either uploaded or still pending"
    );
}

/// A compromised hound can write anything into the spool it shares with the others (docs/
/// SECURITY.md). Here, what it could plant: a file with a record's name and an 8 GiB body
/// (sparse: no disk needed). Honest hounds draining the spool must quarantine it unread and
/// go on, not read it into memory (which kills the reader at its address-space limit, its
/// claim then stuck for `claim_stale_after`, and the next drainer after it).
#[test]
fn an_oversized_record_planted_in_the_spool_is_quarantined_unread_and_no_hound_dies() {
    let _g = serial();
    let (data, spool, port, sent) = backlog(50);
    let stem = "ab".repeat(32);
    let planted = spool.path().join(format!("{stem}.spool"));
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&planted).unwrap();
        f.write_all(b"HPSPOOL1\x00\x0bevidence/xx").unwrap();
        f.set_len(8 << 30).unwrap();
    }
    let _server = Server::start(port, data.path());
    let mut config = s3_config(data.path(), port, Some(spool.path()), 4);
    config.size = houndpool::PoolSize::Fixed(2);
    let (pool, _rx) = start(config);
    let spawns = pool.stats().hound_spawns;
    wait_until("the spool drained", Duration::from_secs(60), || {
        let s = pool.stats();
        assert_eq!(
            (s.hound_spawns, s.hound_exits),
            (spawns, 0),
            "a hound died draining the spool"
        );
        drained(spool.path())
    });
    pool.shutdown(Duration::from_secs(5));
    assert_eq!(uploaded(data.path(), &sent), sent.len());
    let quarantined: Vec<String> = std::fs::read_dir(spool.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined.len() == 1 && quarantined[0].starts_with(&stem),
        "{quarantined:?}"
    );
}

/// The value of `family{state="..."}` in a scrape.
fn sample(text: &str, family: &str, state: &str) -> u64 {
    let prefix = format!("{family}{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))
}

/// An operator sees the spool in the metrics (`houndpool::metrics`, which houndd serves too):
/// what waits while the target is down, then nothing once an idle pool has drained it; a
/// quarantined record stays counted.
#[test]
fn the_spool_is_counted_at_scrape_time() {
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    let _g = serial();
    let (data, spool, port, sent) = backlog(20);
    let spooled_bytes: u64 = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    std::fs::create_dir(spool.path().join("quarantine")).unwrap();
    std::fs::write(spool.path().join("quarantine").join("old.record"), b"12345").unwrap();
    // The target still down: the pool's hounds try, put back, and wait.
    let (pool, _rx) = start(s3_config(data.path(), port, Some(spool.path()), 4));
    let pool = Arc::new(pool);
    let mut registry = Registry::default();
    houndpool::metrics::register(&mut registry, Arc::clone(&pool));
    let scrape = || {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    };
    // A drainer's claim is a rename: a listing taken while one happens may see the record
    // under neither name. The hounds' failing rounds pause a second between them; a scrape
    // then counts every record.
    let mut text = String::new();
    wait_until(
        "a scrape counting all 20 waiting",
        Duration::from_secs(20),
        || {
            text = scrape();
            sample(&text, "houndpool_spool_records", "pending")
                + sample(&text, "houndpool_spool_records", "claimed")
                == 20
        },
    );
    assert_eq!(
        sample(&text, "houndpool_spool_bytes", "waiting"),
        spooled_bytes
    );
    assert_eq!(sample(&text, "houndpool_spool_records", "quarantined"), 1);
    assert_eq!(sample(&text, "houndpool_spool_bytes", "quarantined"), 5);

    let _server = Server::start(port, data.path());
    wait_until("the spool drained", Duration::from_secs(60), || {
        drained(spool.path())
    });
    let text = scrape();
    for state in ["pending", "claimed"] {
        assert_eq!(sample(&text, "houndpool_spool_records", state), 0, "{text}");
    }
    assert_eq!(sample(&text, "houndpool_spool_bytes", "waiting"), 0);
    assert_eq!(sample(&text, "houndpool_spool_records", "quarantined"), 1);
    assert_eq!(uploaded(data.path(), &sent), sent.len());
    drop(registry);
    let Ok(pool) = Arc::try_unwrap(pool) else {
        panic!("the registry (dropped) held the only other reference")
    };
    pool.shutdown(Duration::from_secs(5));
}

/// Hounds SIGKILLed in the middle of a drain leave their claims behind. A hound takes a claim
/// back as stale after twelve of its operation deadlines, at least a minute (here: the
/// 2.5 s deadline of a 5 s job timeout, so a minute), not the library's default fifteen: the
/// replacements upload those records too, about a minute later. Takes about 65 s.
#[test]
fn claims_of_hounds_killed_mid_drain_come_back_a_minute_later() {
    let _g = serial();
    let (data, spool, port, sent) = backlog(300);
    let _server = Server::start(port, data.path());
    let (pool, _rx) = start(s3_config(data.path(), port, Some(spool.path()), 1));
    wait_draining(spool.path(), sent.len());
    let claims = |dir: &Path| -> Vec<String> {
        records(dir)
            .into_iter()
            .filter(|n| n.contains(".claim-"))
            .collect()
    };
    let mut killed_with_claims = Vec::new();
    for _ in 0..50 {
        for h in pool.stats().hounds {
            if let Some(pid) = h.pid {
                signal(pid as i32, nix::sys::signal::Signal::SIGKILL);
            }
        }
        killed_with_claims = claims(spool.path());
        if !killed_with_claims.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !killed_with_claims.is_empty(),
        "no hound was killed holding a claim: the test proves nothing"
    );
    wait_until("every record uploaded", Duration::from_secs(150), || {
        drained(spool.path())
    });
    pool.shutdown(Duration::from_secs(5));
    assert_eq!(uploaded(data.path(), &sent), sent.len());
}
