//! A live `houndd run`: the Cancel message over the socket (each branch, reply before the
//! outcome, only the connection's own jobs), the new metric families, and the Grafana
//! dashboard in deploy/grafana, whose every query must name a metric the daemon exports.

mod daemon_support;

use std::collections::BTreeSet;

use daemon_support::*;
use houndpool::daemon::client::Event;
use houndpool::{JobKind, Severity};
use houndpool_protocol::daemon::{CancelResult, DropKind, OutcomeResult};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Pids of `parent`'s children named `hound`.
fn hounds_of(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if &stat[open + 1..close] == "hound" && rest.get(1) == Some(&parent.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

fn is_cancelled(r: &OutcomeResult) -> bool {
    matches!(
        r,
        OutcomeResult::Dropped {
            reason: DropKind::Cancelled,
            by: None
        }
    )
}

#[test]
fn cancel_over_the_socket_dequeues_kills_and_answers_before_the_outcome() {
    // One hound, no spare, two jobs per ring, no watchdog in the way.
    let d = Daemon::start_with(
        |base| {
            base.replace(
                "size = 2",
                "size = 1\nprestart = false\nmax_in_flight_per_hound = 2",
            )
            .replace("job_timeout_ms = 5000", "job_timeout_ms = 120000")
        },
        &[],
    );
    let houndd = d.child.as_ref().unwrap().id();
    let hounds = hounds_of(houndd);
    assert_eq!(hounds.len(), 1, "{hounds:?}");
    kill(Pid::from_raw(hounds[0]), Signal::SIGSTOP).unwrap();

    let mut c = d.client();
    let mut submit = |body: &[u8]| {
        c.submit(JobKind::Encode, Severity::Medium, body.to_vec())
            .unwrap()
            .unwrap()
    };
    let head = submit(b"head");
    let behind = submit(b"behind");
    let deferred = submit(b"deferred");
    let survivor = submit(b"survivor");

    // Another connection cannot cancel this one's jobs.
    let mut other = d.client();
    assert_eq!(other.cancel(deferred).unwrap(), CancelResult::NotFound);
    assert_eq!(other.cancel(1 << 40).unwrap(), CancelResult::NotFound);

    // The reply comes before the outcome.
    c.send_cancel(deferred).unwrap();
    match c.next_event().unwrap() {
        Event::Cancelled(r) => assert_eq!(r.result, CancelResult::Dequeued),
        e => panic!("expected the cancel reply first, got {e:?}"),
    }
    match c.next_event().unwrap() {
        Event::Outcome(o) => {
            assert_eq!(o.job_id, deferred);
            assert!(is_cancelled(&o.result), "{o:?}");
            assert_eq!(o.attempt, 0);
        }
        e => panic!("expected the cancelled outcome, got {e:?}"),
    }
    assert_eq!(c.cancel(behind).unwrap(), CancelResult::Dequeued);
    assert_eq!(c.cancel(head).unwrap(), CancelResult::Killed);
    assert!(
        !std::path::Path::new(&format!("/proc/{}", hounds[0])).exists(),
        "the running job's hound was killed and reaped"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let o = c.next_outcome().unwrap();
        if o.job_id == survivor {
            assert!(matches!(o.result, OutcomeResult::Completed(_)), "{o:?}");
        } else {
            assert!(is_cancelled(&o.result), "{o:?}");
        }
        assert!(seen.insert(o.job_id), "two outcomes for {}", o.job_id);
    }
    assert_eq!(seen, BTreeSet::from([head, behind, survivor]));
    assert_eq!(c.cancel(survivor).unwrap(), CancelResult::NotFound);
    let s = c.stats().unwrap();
    assert_eq!(
        (s.accepted, s.completed, s.dropped, s.in_flight),
        (4, 1, 3, 0)
    );

    let (_, body) = d.get("/metrics");
    for family in [
        "houndpool_job_latency_seconds_bucket{kind=\"encode\",le=\"+Inf\"} 4",
        "houndpool_job_latency_seconds_count{kind=\"encode\"} 4",
        "houndpool_pool_circuit_state{state=\"closed\"} 1",
        "houndpool_hound_oom_kills_total 0",
        "houndpool_hound_rotations_total 0",
        "houndpool_hound_high_water_retirements_total 0",
        "houndpool_pool_size_computed 1",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
}

/// Metric names in a PromQL expression: identifiers that start with `houndpool_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("houndpool_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_grafana_query_names_a_metric_the_daemon_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/houndpool.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");

    let d = Daemon::start(&[]);
    let mut c = d.client();
    c.submit(JobKind::Evacuate, Severity::Low, b"GET / HTTP/1.1".to_vec())
        .unwrap()
        .unwrap();
    c.next_outcome().unwrap();
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    let samples: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // Present only where the cgroup provides the value (exported by daemon/metrics.rs).
    let conditional = include_str!("../../supervisor/src/daemon/metrics.rs");
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query names no metric: {q}");
        for name in names {
            let ok = samples.contains(name.as_str())
                || (name.starts_with("houndpool_container_")
                    && conditional.contains(&format!("\"{name}\"")));
            assert!(ok, "{name} (in `{q}`) is not exported:\n{body}");
        }
    }
}
