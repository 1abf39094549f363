//! Every job kind round-trips through real, sandboxed hounds; bad input is refused with types.

use std::time::Duration;

use houndpool::{FailCode, FailReason, Job, JobKind, OutcomeKind, Pool, Severity, SubmitError};
use houndpool_protocol::envelope;
use houndpool_tests::*;

fn completed(o: &houndpool::Outcome) -> &houndpool::Receipt {
    match &o.result {
        OutcomeKind::Completed(r) => r,
        other => panic!(
            "{} {:?}: expected Completed, got {other:?}",
            o.job_id, o.kind
        ),
    }
}

#[test]
fn every_job_kind_round_trips() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let evidence = b"POST /login HTTP/1.1\r\nHost: x\r\n\r\nuser=admin'--&pass=x".repeat(20);

    // Noop echoes.
    let t = pool.submit(&Job::noop(b"ping")).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(o.job_id, t.job_id);
    assert_eq!(completed(&o).payload.as_deref(), Some(&b"ping"[..]));

    // Encode returns a verifiable envelope of the evidence.
    let t = pool.submit(&Job::encode(&evidence).with_level(9)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(o.job_id, t.job_id);
    let r = completed(&o);
    let env = r.payload.clone().unwrap();
    assert_eq!(envelope::decode(&env, 1 << 20).unwrap(), evidence);
    assert_eq!(r.original_size, Some(evidence.len() as u64));
    assert_eq!(
        r.compressed_size,
        Some((env.len() - envelope::HEADER_LEN) as u64)
    );

    // Decode inside a hound gives the evidence back.
    pool.submit(&Job::decode(&env)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(completed(&o).payload.as_deref(), Some(&evidence[..]));

    // Evacuate writes an envelope at <root>/<prefix><id>.thcs.
    let t = pool
        .submit(&Job::evacuate(&evidence).with_severity(Severity::Critical))
        .unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(o.evidence_id, t.evidence_id);
    assert_eq!(o.severity, Severity::Critical);
    let r = completed(&o).clone();
    let key = r.key.clone().unwrap();
    assert_eq!(key, format!("evidence/{}.thcs", t.evidence_id.hyphenated()));
    let stored = stored_object(dir.path(), &key);
    let h = envelope::verify(&stored).unwrap();
    assert_eq!(Some(h.sha256), r.sha256);
    assert!(!r.spooled);

    // Restore reads it back through a hound.
    pool.submit(&Job::restore(t.evidence_id)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(completed(&o).payload.as_deref(), Some(&evidence[..]));

    // Erase deletes it; a second erase reports it absent; restore then fails NotFound.
    pool.submit(&Job::erase(t.evidence_id)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(completed(&o).existed, Some(true));
    assert!(!dir.path().join(&key).exists());
    pool.submit(&Job::erase(t.evidence_id)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert_eq!(completed(&o).existed, Some(false));
    pool.submit(&Job::restore(t.evidence_id)).unwrap();
    let o = collect(&rx, 1, Duration::from_secs(10)).pop().unwrap();
    assert!(
        matches!(
            &o.result,
            OutcomeKind::Failed(FailReason::Job {
                code: FailCode::NotFound,
                ..
            })
        ),
        "{:?}",
        o.result
    );

    let stats = pool.shutdown(Duration::from_secs(5));
    assert!(stats.identity_holds());
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.completed, 7);
    assert_eq!(stats.failed, 1);
    assert_no_hounds_left();
}

#[test]
fn tampered_and_bomb_envelopes_fail_inside_the_hound() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let mut env = envelope::encode(b"some evidence bytes", 6).unwrap();
    let last = env.len() - 1;
    env[last] ^= 0xff;
    pool.submit(&Job::decode(&env)).unwrap();
    // A stored object that was tampered with: restore reports an integrity violation.
    let id = uuid::Uuid::now_v7();
    let path = dir
        .path()
        .join(format!("evidence/{}.thcs", id.hyphenated()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &env).unwrap();
    pool.submit(&Job::restore(id)).unwrap();
    let outs = collect(&rx, 2, Duration::from_secs(10));
    assert_eq!(outs.len(), 2);
    for o in &outs {
        assert!(
            matches!(
                &o.result,
                OutcomeKind::Failed(FailReason::Job {
                    code: FailCode::IntegrityViolation,
                    ..
                })
            ),
            "{:?}",
            o.result
        );
    }
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::builder()
        .config(test_config(dir.path()))
        .build()
        .unwrap();
    let big = vec![b'x'; 64 * 1024 + 1];
    assert_eq!(
        pool.submit(&Job::evacuate(&big)),
        Err(SubmitError::EvidenceTooLarge {
            len: 64 * 1024 + 1,
            max: 64 * 1024
        })
    );
    assert_eq!(
        pool.submit(&Job::evacuate(b"")),
        Err(SubmitError::EmptyEvidence {
            kind: JobKind::Evacuate
        })
    );
    assert_eq!(
        pool.submit(&Job::encode(b"")),
        Err(SubmitError::EmptyEvidence {
            kind: JobKind::Encode
        })
    );
    let mut restore_with_body = Job::restore(uuid::Uuid::now_v7());
    restore_with_body.body = b"x";
    assert_eq!(
        pool.submit(&restore_with_body),
        Err(SubmitError::InvalidJob {
            kind: JobKind::Restore
        })
    );
    let s = pool.stats();
    assert_eq!(s.refused.too_large, 1);
    assert_eq!(s.refused.invalid, 3);
    assert_eq!(s.accepted, 0);
    pool.shutdown(Duration::from_secs(5));
    assert_no_hounds_left();
}

#[test]
fn ten_thousand_evacuations_leave_ten_thousand_valid_envelopes() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pool, rx) = start(test_config(dir.path()));
    let mut gen = houndpool::synth::EvidenceGenerator::new(42);
    let corpus: Vec<Vec<u8>> = (0..64).map(|i| gen.request(300 + i * 37)).collect();
    let mut ids = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let t = pool
            .submit(&Job::evacuate(&corpus[i % corpus.len()]))
            .unwrap();
        ids.push(t.job_id);
    }
    let outs = collect(&rx, ids.len(), Duration::from_secs(120));
    let by_id = assert_exactly_one_each(&ids, &outs);
    let mut keys = std::collections::HashSet::new();
    for o in by_id.values() {
        keys.insert(completed(o).key.clone().unwrap());
    }
    assert_eq!(keys.len(), 10_000);
    // Read as the store reads (key files and commit journals not yet materialised).
    let mut verified = 0;
    let mut store = houndpool_cold::fs::FsStore::open(dir.path()).unwrap();
    let listed = houndpool_cold::ColdStore::list(&mut store, "evidence/").unwrap();
    assert_eq!(listed.len(), 10_000);
    for key in listed {
        let bytes = stored_object(dir.path(), &key);
        envelope::verify(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        verified += 1;
    }
    assert_eq!(verified, 10_000);
    let stats = pool.shutdown(Duration::from_secs(5));
    assert_eq!(stats.completed, 10_000);
    assert!(stats.identity_holds() && stats.in_flight == 0);
    assert_no_hounds_left();
}
