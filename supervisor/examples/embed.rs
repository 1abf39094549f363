//! A complete embedding of houndpool: the example docs/USAGE.md walks through.
//!
//! Run with `cargo run --example embed -p houndpool-supervisor`. It uses its own executable as
//! the hound (multi-call mode) unless a `hound` binary sits beside it.

use std::time::Duration;

use houndpool::{
    CancelResult, ColdConfig, FailReason, Job, OutcomeKind, Pool, PoolConfig, PoolExhaustedAction,
    Severity, SubmitError,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Let this executable serve as a hound when the pool starts it as one.
    houndpool::run_hound_if_requested();

    // 2. Configure and start the pool. `build` returns once every hound is sandboxed and ready.
    let data = std::env::temp_dir().join("houndpool-embed-example");
    let pool = Pool::builder()
        .config(PoolConfig {
            // `size` defaults to `PoolSize::auto()`: sized from this container's cgroup limits.
            exhausted: PoolExhaustedAction::Defer { limit: 1024 },
            cold: ColdConfig::Filesystem {
                root: data.clone(),
                prefix: "evidence/".into(),
            },
            job_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        })
        .on_outcome(|o| {
            // Runs on the collector thread: keep it short and non-blocking.
            if let OutcomeKind::Failed(reason) = &o.result {
                eprintln!("{} failed: {reason}", o.job_id);
            }
        })
        .build()?;
    let outcomes = pool.outcomes().ok_or("outcome channel disabled")?;

    // 3. Submit from the hot path: this copies the bytes into a hound's ring and returns.
    let request = b"POST /login HTTP/1.1\r\nHost: shop.example\r\n\r\nuser=admin'--";
    let ticket = match pool.submit(&Job::evacuate(request).with_severity(Severity::High)) {
        Ok(t) => t,
        Err(SubmitError::DeferQueueFull { .. }) => return Err("shedding load".into()),
        Err(e) => return Err(e.into()),
    };

    // 4. Every accepted job gets exactly one outcome.
    let outcome = outcomes.recv_timeout(Duration::from_secs(10))?;
    assert_eq!(outcome.job_id, ticket.job_id);
    match &outcome.result {
        OutcomeKind::Completed(receipt) => println!(
            "stored {} bytes as {} ({} compressed) in {:?}",
            receipt.original_size.unwrap_or(0),
            receipt.key.as_deref().unwrap_or("?"),
            receipt.compressed_size.unwrap_or(0),
            outcome.latency
        ),
        OutcomeKind::Failed(FailReason::Job { code, message }) => {
            println!("the hound refused: {} ({message})", code.name())
        }
        other => println!("outcome: {other:?}"),
    }

    // 5. Read it back — decoding stored data happens inside a sandboxed hound too. A tracked
    //    job's outcome goes to its own handle (wait, wait_timeout, or `.await` it).
    let restore = pool.submit_tracked(&Job::restore(ticket.evidence_id))?;
    match restore.wait_timeout(Duration::from_secs(10)) {
        Ok(outcome) => {
            let receipt = outcome.into_result()?;
            assert_eq!(receipt.payload.as_deref(), Some(&request[..]));
        }
        Err(still_running) => {
            // Give up on it: cancel withdraws or kills it; its outcome is `Dropped(Cancelled)`.
            let job = still_running.ticket().job_id;
            if pool.cancel(job) != CancelResult::NotFound {
                println!("{job} cancelled: {:?}", still_running.wait().result);
            }
        }
    }

    // 6. Stats hold the accounting identity at every snapshot.
    let stats = pool.stats();
    assert!(stats.identity_holds());

    // 7. Drain and stop: every accepted job has its outcome before this returns.
    let stats = pool.shutdown(Duration::from_secs(5));
    println!(
        "accepted {} completed {} failed {}",
        stats.accepted, stats.completed, stats.failed
    );
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
