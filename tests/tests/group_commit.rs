//! Group commit of the filesystem store with real hounds: hounds are SIGKILLed while they
//! store batches of evacuations, and afterwards every `Completed` key is on disk and verifies
//! (envelope length + SHA-256, the receipt's hash, and the decoded bytes equal the evidence),
//! every accepted job got exactly one outcome, and no temp file survives the sweep.
//!
//! The order of operations inside a batch (all data syncs, then links, then directory syncs,
//! then results) is checked by the unit test in the store (`cold::fs`); this test checks that
//! what hounds report under SIGKILL is consistent with the disk.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use houndpool::{OutcomeKind, PoolConfig};
use houndpool_tests::*;

/// Evidence of job `n`: 4 KiB, distinct per job, moderately compressible.
fn evidence(n: u32) -> Vec<u8> {
    evidence_4k("job ", n)
}

/// Names of files under `root` (recursively) that start with ".tmp-".
fn temp_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn sigkill_mid_batch_reports_only_durable_envelopes() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cold");
    let config = PoolConfig {
        job_timeout: Duration::from_secs(20),
        ..test_config(&root)
    };
    let (pool, rx) = start(config);

    // Bursts of evacuations keep several jobs waiting in each ring, so hounds store batches;
    // a hound is SIGKILLed every 100 ms, mostly in the middle of one.
    let KilledRun {
        accepted,
        evidence_of,
        kills,
    } = evacuate_under_kills(&pool, evidence, Duration::from_secs(3));
    let outcomes = collect(&rx, accepted.len(), Duration::from_secs(180));
    assert_eq!(
        outcomes.len(),
        accepted.len(),
        "every accepted job has an outcome"
    );
    let by_id = assert_exactly_one_each(&accepted, &outcomes);
    assert!(kills >= 10, "only {kills} kills");
    pool.shutdown(Duration::from_secs(10));

    let mut completed = 0usize;
    // Receipts of one batch share its store time: seeing shared values shows batches formed.
    let mut store_times: HashMap<(u32, Duration), usize> = HashMap::new();
    for (id, outcome) in &by_id {
        let OutcomeKind::Completed(receipt) = &outcome.result else {
            continue;
        };
        completed += 1;
        let (evidence_id, ev) = &evidence_of[id];
        assert_eq!(outcome.evidence_id, *evidence_id);
        let key = receipt
            .key
            .as_deref()
            .expect("an evacuation receipt names its key");
        let bytes = std::fs::read(root.join(key))
            .unwrap_or_else(|e| panic!("Completed key {key} is not on disk: {e}"));
        let header = houndpool_protocol::envelope::verify(&bytes)
            .unwrap_or_else(|e| panic!("Completed key {key} does not verify: {e}"));
        assert_eq!(Some(header.sha256), receipt.sha256, "{key}: receipt hash");
        let decoded = houndpool_protocol::envelope::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(
            &decoded, ev,
            "{key}: stored bytes are another job's evidence"
        );
        if let Some(t) = receipt.store_time {
            *store_times.entry((receipt.hound, t)).or_default() += 1;
        }
    }
    assert!(completed > 0, "nothing completed");
    let batched = store_times.values().filter(|&&c| c > 1).count();
    assert!(
        batched > 0,
        "no two receipts share a batch: the test never exercised a batch"
    );

    let temps = temp_files(&root);
    assert!(
        temps.is_empty(),
        "{} temp files left: {temps:?}",
        temps.len()
    );
    eprintln!(
        "{} accepted, {completed} completed, {kills} kills, {batched} multi-job batches seen",
        accepted.len()
    );
}
