//! `houndpool::metrics::register` gives an embedder the pool's whole metric set — the same
//! families, under the same names, as `houndd`'s `/metrics` (the daemon registers exactly this
//! collector): before, an embedder got 20 families and the daemon 36, two of them under
//! different names.

use std::sync::Arc;
use std::time::Duration;

use houndpool::{Job, OutcomeKind, Pool};
use houndpool_tests::*;
use prometheus_client::registry::Registry;

fn render(r: &Registry) -> String {
    let mut out = String::new();
    // The format houndd serves (Prometheus text 0.0.4).
    prometheus_client::encoding::prometheus_text::encode(&mut out, r).unwrap();
    out
}

#[test]
fn an_embedders_registry_holds_every_pool_family_with_live_values() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(
        Pool::builder()
            .config(test_config(dir.path()))
            .build()
            .unwrap(),
    );
    let rx = pool.outcomes().unwrap();
    for n in 0..5u32 {
        pool.submit(&Job::evacuate(&evidence_of("metrics ", n, 512)))
            .unwrap();
    }
    for _ in 0..5 {
        let o = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(matches!(o.result, OutcomeKind::Completed(_)), "{o:?}");
    }
    let mut registry = Registry::default();
    houndpool::metrics::register(&mut registry, Arc::clone(&pool));
    let text = render(&registry);
    for line in [
        "houndpool_pool_submitted_total 5",
        "houndpool_pool_accepted_total 5",
        "houndpool_pool_outcomes_total{kind=\"completed\"} 5",
        "houndpool_pool_refused_total{reason=\"exhausted\"} 0",
        "houndpool_pool_in_flight 0",
        "houndpool_pool_queue_depth{queue=\"deferred\"} 0",
        "houndpool_pool_retries_total 0",
        "houndpool_pool_poison_total 0",
        "houndpool_pool_escalations_total 0",
        "houndpool_pool_undelivered_total 0",
        "houndpool_pool_tracked_unclaimed_total 0",
        "houndpool_hound_exits_total 0",
        "houndpool_hound_spawn_failures_total 0",
        "houndpool_hound_watchdog_kills_total 0",
        "houndpool_hound_protocol_violations_total 0",
        "houndpool_hound_oom_kills_total 0",
        "houndpool_hound_restarts_total{slot=\"0\"} 0",
        "houndpool_hound_in_flight{slot=\"1\"} 0",
        "houndpool_sandbox_layer{layer=\"seccomp\",status=\"enforced\"} 1",
        "houndpool_pool_size_computed 2",
        "houndpool_pool_size_target 2",
        "houndpool_pool_size_ready 2",
        "houndpool_pool_circuit_state{state=\"closed\"} 1",
        "houndpool_journal_conflicts_total 0",
        "houndpool_job_latency_seconds_count{kind=\"evacuate\"} 5",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let spawns: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("houndpool_hound_spawns_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        spawns >= 2,
        "houndpool_hound_spawns_total {spawns}:\n{text}"
    );
    for family in [
        "houndpool_pool_spare_ready",
        "houndpool_journal_backlog_files",
        "houndpool_journal_backlog_bytes",
        "houndpool_hound_rotations_total",
        "houndpool_hound_high_water_retirements_total",
        "houndpool_pool_circuit_opens_total",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    // Every family once: the daemon registers this same collector, and none of its own.
    let mut helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    let n = helps.len();
    helps.sort_unstable();
    helps.dedup();
    assert_eq!(helps.len(), n, "a family declared twice:\n{text}");
    drop((registry, rx));
    let Ok(pool) = Arc::try_unwrap(pool) else {
        panic!("the registry (dropped) held the only other reference")
    };
    let stats = pool.shutdown(Duration::from_secs(10));
    assert!(stats.identity_holds());
}
