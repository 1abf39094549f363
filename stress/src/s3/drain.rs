//! The `s3` scenario's recovery row: how fast idle hounds upload what an outage left in the
//! spool, through the same latency proxy.
//!
//! The spool is filled first, with the endpoint down: an [`S3Store`] of this process (one
//! attempt per put, so each envelope is spooled at once) points at a loopback port nothing
//! listens on and puts `envelopes` 4 KiB-evidence envelopes, each of which must come back
//! `Spooled`. Then a pool of `hounds` starts with that spool and the proxy as its endpoint,
//! and is left idle: the clock runs from the pool being ready until the spool directory holds
//! no record (pending or claimed). Checked, or the row fails: every key is then on the
//! server's disk and verifies as an envelope, nothing was quarantined, and the proxy
//! forwarded at least one request per envelope.

use std::path::Path;
use std::time::{Duration, Instant};

use houndpool::{ColdConfig, Pool, PoolConfig, S3Target};
use houndpool_cold::s3::{S3Store, S3Tuning};
use houndpool_cold::{ColdStore, PutOutcome};
use houndpool_protocol::envelope;

use super::{check_object, free_port, proxy, Rclone, ACCESS_KEY, BUCKET};
use crate::report::S3DrainResult;
use crate::util::{bench_config, Result, StressError};

/// Longest the spool may take to empty before the row fails.
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);
/// How often the spool directory is counted.
const POLL: Duration = Duration::from_millis(10);

/// The S3 target of both the filling store and the pool: `endpoint`, and a spool in `spool`.
fn target(endpoint: String, secret: &str, spool: &Path) -> S3Target {
    S3Target {
        endpoint,
        bucket: BUCKET.into(),
        prefix: "drain/".into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key: ACCESS_KEY.into(),
        secret_key: secret.into(),
        session_token: None,
        spool_dir: Some(spool.display().to_string()),
        spool_limit_bytes: 1 << 30,
    }
}

/// Records in the spool directory, pending or claimed (temp files and `quarantine/` are not).
fn spooled(spool: &Path) -> Result<usize> {
    let names = std::fs::read_dir(spool).map_err(StressError::io("list the spool"))?;
    Ok(names
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".spool"))
        .count())
}

/// Fills a spool with `envelopes` envelopes, starts a pool of `hounds` on it behind the
/// proxy, and measures how long the idle pool takes to upload them all.
pub(super) fn measure(
    server: &Rclone,
    proxy: &proxy::Proxy,
    root: &Path,
    items: &[Vec<u8>],
    hounds: usize,
    envelopes: usize,
    latency_ms: u64,
) -> Result<S3DrainResult> {
    let label = format!("s3 drain, pool of {hounds}");
    let fail = |what: String| StressError::Unexpected(format!("{label}: {what}"));
    let spool = tempfile::Builder::new()
        .prefix("hound-stress-spool-")
        .tempdir()
        .map_err(StressError::io("create the spool directory"))?;
    // The outage: a port that was free a moment ago and that nothing serves.
    let down = free_port()?;
    let mut filler = S3Store::open_with(
        &target(format!("http://{down}"), &server.secret, spool.path()),
        S3Tuning {
            attempts: 1,
            ..S3Tuning::default()
        },
    )
    .map_err(|e| fail(format!("open the filling store: {e}")))?;
    let mut keys = Vec::with_capacity(envelopes);
    for i in 0..envelopes {
        let env = envelope::encode(&items[i % items.len()], 6)
            .map_err(|e| fail(format!("encode: {e}")))?;
        let key = format!("drain/{i:06}");
        match filler.put(&key, &env) {
            Ok(PutOutcome::Spooled) => keys.push(key),
            other => return Err(fail(format!("put {key} while down: {other:?}"))),
        }
    }
    drop(filler);
    if spooled(spool.path())? != envelopes {
        return Err(fail("the spool does not hold every envelope put".into()));
    }

    let requests_before = proxy.requests();
    let pool = Pool::builder()
        .config(PoolConfig {
            cold: ColdConfig::S3(target(
                format!("http://{}", proxy.addr()),
                &server.secret,
                spool.path(),
            )),
            ..bench_config(hounds)
        })
        .build()?;
    let start = Instant::now();
    while spooled(spool.path())? > 0 {
        if start.elapsed() > DRAIN_DEADLINE {
            pool.shutdown(Duration::from_secs(10));
            return Err(fail(format!(
                "{} of {envelopes} envelopes still spooled after {DRAIN_DEADLINE:?}",
                spooled(spool.path())?
            )));
        }
        std::thread::sleep(POLL);
    }
    let seconds = start.elapsed().as_secs_f64();
    pool.shutdown(Duration::from_secs(10));

    let quarantine = spool.path().join("quarantine");
    if std::fs::read_dir(&quarantine).is_ok_and(|mut d| d.next().is_some()) {
        return Err(fail("records were quarantined instead of uploaded".into()));
    }
    let forwarded = proxy.requests() - requests_before;
    if forwarded < envelopes as u64 {
        return Err(fail(format!(
            "{envelopes} uploads but only {forwarded} requests through the proxy"
        )));
    }
    for key in &keys {
        check_object(root, key).map_err(fail)?;
    }
    Ok(S3DrainResult {
        latency_ms,
        pool: hounds,
        envelopes,
        seconds,
        envelopes_per_sec: envelopes as f64 / seconds.max(f64::MIN_POSITIVE),
    })
}
