//! Caller-chosen evidence keys through the daemon (Rust client and `houndd submit --key`),
//! against a real daemon with sandboxed hounds and the filesystem store: an origin-style
//! `<category>:<sha256 hex>` envelope written by someone else is restored by its key;
//! evacuate under a key is create-only (same bytes again: completed; other bytes:
//! `already_exists`, the object unchanged); bad keys are refused saying why.

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use daemon_support::*;
use houndpool::{JobKind, Severity};
use houndpool_protocol::daemon::{OutcomeResult, RefuseReason};

/// `<category>:<64 lowercase hex>`, the shape of the origin's evidence signature.
fn origin_key(category: &str, seed: u8) -> String {
    format!("{category}:{}", format!("7e{seed:02x}").repeat(16))
}

fn houndd_submit(d: &Daemon, args: &[&str]) -> (bool, Vec<serde_json::Value>) {
    let out = Command::new(houndd_binary())
        .args(["submit", "--json", "--socket"])
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.success(), lines)
}

#[test]
fn origin_keys_restore_evacuate_create_only_and_erase_through_the_daemon() {
    let d = Daemon::start(&[]);
    let store = d.dir.path().join("cold");
    // An envelope the origin stored under its evidence signature.
    let evidence = b"GET /?q=<script>alert(1)</script> HTTP/1.1\r\n\r\n".repeat(20);
    let key = origin_key("injection", 1);
    std::fs::create_dir_all(store.join("evidence")).unwrap();
    let object = store.join(format!("evidence/{key}.thcs"));
    std::fs::write(
        &object,
        houndpool_protocol::envelope::encode(&evidence, 6).unwrap(),
    )
    .unwrap();

    // Restore by key with the Rust client.
    let mut c = d.client();
    let id = c
        .send_submit_full(
            JobKind::Restore,
            Severity::High,
            None,
            Some(key.clone()),
            None,
            vec![],
        )
        .unwrap();
    let job = c.wait_reply(id).unwrap().expect("accepted");
    let o = c.next_outcome().unwrap();
    assert_eq!(o.job_id, job);
    match &o.result {
        OutcomeResult::Completed(r) => {
            assert_eq!(r.payload.as_deref(), Some(&evidence[..]));
            assert_eq!(r.key.as_deref(), Some(&*format!("evidence/{key}.thcs")));
        }
        other => panic!("{other:?}"),
    }
    // ... and with the CLI.
    let out = d.dir.path().join("restored.bin");
    let (ok, lines) = houndd_submit(
        &d,
        &[
            "--kind",
            "restore",
            "--key",
            &key,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{lines:?}");
    assert_eq!(std::fs::read(&out).unwrap(), evidence);

    // Evacuate under a new key with the CLI: stored 0600 under <prefix><key>.thcs.
    let key2 = origin_key("traversal", 2);
    let a = d.dir.path().join("a.bin");
    let b = d.dir.path().join("b.bin");
    std::fs::write(&a, b"GET /../../etc/passwd HTTP/1.1\r\n\r\n").unwrap();
    std::fs::write(&b, b"other bytes entirely").unwrap();
    let (ok, lines) = houndd_submit(&d, &["--key", &key2, a.to_str().unwrap()]);
    assert!(ok, "{lines:?}");
    assert_eq!(lines[0]["key"], format!("evidence/{key2}.thcs"));
    let stored = store.join(format!("evidence/{key2}.thcs"));
    let first = std::fs::read(&stored).unwrap();
    houndpool_protocol::envelope::verify(&first).unwrap();
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same bytes again: an idempotent success.
    let (ok, lines) = houndd_submit(&d, &["--key", &key2, a.to_str().unwrap()]);
    assert!(ok, "{lines:?}");
    // Other bytes under the same key: already_exists, the object unchanged.
    let (ok, lines) = houndd_submit(&d, &["--key", &key2, b.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(lines[0]["result"], "failed", "{lines:?}");
    assert_eq!(lines[0]["code"], "already_exists", "{lines:?}");
    assert_eq!(std::fs::read(&stored).unwrap(), first);

    // Erase by key.
    let (ok, lines) = houndd_submit(&d, &["--kind", "erase", "--key", &key2]);
    assert!(ok, "{lines:?}");
    assert!(!stored.exists());

    // Bad keys are refused, naming what is wrong.
    for (kind, key, evidence_id, why) in [
        (
            JobKind::Restore,
            "../etc/passwd",
            None,
            "does not start with a letter or digit",
        ),
        (JobKind::Restore, "a/b", None, "character other than"),
        (JobKind::Restore, "a..b", None, "contains \"..\""),
        (JobKind::Evacuate, "", None, "empty"),
        (
            JobKind::Encode,
            "k",
            None,
            "only for evacuate, restore and erase",
        ),
        (
            JobKind::Erase,
            "k",
            Some([1u8; 16]),
            "must not also carry an evidence_id",
        ),
    ] {
        let body = if kind == JobKind::Restore || kind == JobKind::Erase {
            vec![]
        } else {
            b"x".to_vec()
        };
        let id = c
            .send_submit_full(
                kind,
                Severity::Low,
                evidence_id,
                Some(key.into()),
                None,
                body,
            )
            .unwrap();
        match c.wait_reply(id).unwrap() {
            Err((RefuseReason::InvalidJob, message)) => {
                assert!(message.contains(why), "{key:?}: {message}")
            }
            other => panic!("{key:?}: {other:?}"),
        }
    }
    let long = "k".repeat(201);
    let id = c
        .send_submit_full(
            JobKind::Restore,
            Severity::Low,
            None,
            Some(long),
            None,
            vec![],
        )
        .unwrap();
    assert!(matches!(
        c.wait_reply(id).unwrap(),
        Err((RefuseReason::InvalidJob, _))
    ));
}

#[test]
fn verify_refuses_a_file_larger_than_any_envelope_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.thcs");
    std::fs::write(
        &good,
        houndpool_protocol::envelope::encode(b"evidence", 6).unwrap(),
    )
    .unwrap();
    // Sparse: takes no disk space, and reading it would take minutes.
    let huge = std::fs::File::create(dir.path().join("huge.thcs")).unwrap();
    huge.set_len(houndpool_protocol::envelope::MAX_ENVELOPE_LEN + 1)
        .unwrap();
    let out = Command::new(houndd_binary())
        .arg("verify")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("larger than the largest possible envelope"),
        "{text}"
    );
    assert!(text.contains("1 envelopes verified, 1 bad"), "{text}");
}
