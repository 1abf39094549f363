//! The outside-crate check (issue: embedders): `tests/embedder` depends on the library with
//! `default-features = false`, awaits one evacuate with `wait_timeout` and one restore as a
//! Future. Built and run here for real, against real hounds; and the lean build's dependency
//! tree must not contain the daemon's crates.

use std::path::PathBuf;

use houndpool_tests::*;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

#[test]
fn an_outside_crate_without_default_features_awaits_jobs() {
    let _g = serial();
    let ws = workspace();
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_command()
        .args(["run", "--quiet", "--offline", "--manifest-path"])
        .arg(ws.join("tests/embedder/Cargo.toml"))
        .arg("--")
        .arg(hound_binary())
        .arg(dir.path())
        // Share the workspace's compiled dependencies.
        .env("CARGO_TARGET_DIR", ws.join("target"))
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "embedder failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_hounds_left();
}

#[test]
fn the_lean_library_has_none_of_the_daemon_crates() {
    let out = cargo_command()
        .args([
            "tree",
            "--offline",
            "-p",
            "houndpool-supervisor",
            "-e",
            "normal",
            "--no-default-features",
            "--prefix",
            "none",
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("houndpool-supervisor"), "{tree}");
    for name in [
        "tokio",
        "prometheus-client",
        "clap",
        "indicatif",
        "hdrhistogram",
    ] {
        assert!(
            !tree.lines().any(|l| l.split(' ').next() == Some(name)),
            "{name} in the lean tree:\n{tree}"
        );
    }
}
