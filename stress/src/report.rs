//! The report: the stable JSON shape (issue 5, documented in docs/BENCHMARKS.md), machine
//! information, the readable table and the target checks.
//!
//! Every key of the shape is always present: scenarios that did not run appear as an empty
//! list (`ipc`, `encode`, `submit`, `s3`) or `null` (`respawn`, `chaos`, `idle`,
//! `s3_skipped`, `s3_drain`). `idle` is an addition to the shape of issue 5 (the idle-cost
//! target has no field there); `s3_skipped` and `s3_drain` are additions to the shape of
//! issue 11 (the reason a run without rclone has an empty `s3` list, and the spool's
//! recovery rate).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One complete run: the single JSON object `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where and when it ran.
    pub machine: Machine,
    /// Transport results, one per (transport, size).
    pub ipc: Vec<IpcResult>,
    /// Encoding throughput, one per (kind, corpus, pool size).
    pub encode: Vec<EncodeResult>,
    /// Submit latency, one per case.
    pub submit: Vec<SubmitResult>,
    /// Respawn latency (`null` if not run).
    pub respawn: Option<RespawnResult>,
    /// Chaos accounting (`null` if not run).
    pub chaos: Option<ChaosResult>,
    /// CPU cost of an idle pool, measured after the `ipc` scenario (`null` if not run).
    pub idle: Option<IdleResult>,
    /// Evacuation to S3 behind a latency proxy, one per pool size (issue 11); empty if not run
    /// or skipped.
    pub s3: Vec<S3Result>,
    /// Why the `s3` scenario was skipped (no rclone), `null` if it was not.
    pub s3_skipped: Option<String>,
    /// The `s3` scenario's recovery row: idle hounds uploading an outage's spool through the
    /// same latency proxy (`null` if not run or skipped).
    pub s3_drain: Option<S3DrainResult>,
}

/// Machine information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Kernel name and release (`Linux 6.1.0-…`).
    pub kernel: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Start of the run, UTC, RFC 3339 (`2025-01-31T12:00:00Z`).
    pub date: String,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// The hound executable the pools started.
    pub hound_binary: String,
}

/// The transport being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The real pool's shared-memory rings (Noop jobs) through its fastest public API:
    /// `submit_batch` and `recv_outcomes`.
    Shm,
    /// The real pool with one `submit` per job and the per-outcome channel.
    #[serde(rename = "shm-single")]
    ShmSingle,
    /// The bare ring code (the protocol crate's region writer/reader over a memfd) between
    /// two threads of one process, no pool: the physical limit of the shm rows.
    Ring,
    /// A SOCK_SEQPACKET socketpair to an echo process.
    Seqpacket,
    /// A pair of pipes (stdin/stdout) to an echo process: the origin's transport.
    Pipe,
}

impl Transport {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::ShmSingle => "shm-single",
            Transport::Ring => "ring",
            Transport::Seqpacket => "seqpacket",
            Transport::Pipe => "pipe",
        }
    }
}

/// One `ipc` measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpcResult {
    /// Which transport.
    pub transport: Transport,
    /// Payload size in bytes (the frame or job body; headers not counted).
    pub size: usize,
    /// Streaming throughput with a window of outstanding requests (round trips per second):
    /// all rounds' messages over the sum of their times (the rows are interleaved in rounds).
    pub msgs_per_sec: f64,
    /// The slowest round's streaming throughput (0 in reports written before rounds existed).
    #[serde(default)]
    pub round_min_msgs_per_sec: f64,
    /// The fastest round's streaming throughput: with the slowest, how far the host's state
    /// moved this row during the run.
    #[serde(default)]
    pub round_max_msgs_per_sec: f64,
    /// `msgs_per_sec × size`.
    pub bytes_per_sec: f64,
    /// Round trip, one request at a time: median, µs.
    pub rtt_p50_us: f64,
    /// 99th percentile, µs.
    pub rtt_p99_us: f64,
    /// 99.9th percentile, µs.
    pub rtt_p999_us: f64,
    /// Maximum, µs.
    pub rtt_max_us: f64,
}

/// Which end-to-end job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodeKind {
    /// `Job::encode`: the envelope comes back in the outcome.
    Encode,
    /// `Job::evacuate`: the envelope is written to cold storage (a temporary directory).
    Evacuate,
}

impl EncodeKind {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            EncodeKind::Encode => "encode",
            EncodeKind::Evacuate => "evacuate",
        }
    }
}

/// One `encode` measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeResult {
    /// Encode or Evacuate.
    pub kind: EncodeKind,
    /// Corpus name (`4k`, `mixed`).
    pub corpus: String,
    /// Hounds in the pool.
    pub pool: usize,
    /// Completed jobs per second through the pool.
    pub jobs_per_sec: f64,
    /// Evidence (uncompressed) megabytes (10^6) per second through the pool.
    pub mb_per_sec: f64,
    /// In-process `envelope::encode` on one thread, same corpus, same run.
    pub inprocess_jobs_per_sec: f64,
    /// `pool rate / (min(pool, cores) × in-process rate)`, rates in evidence bytes per second
    /// (the same as the job-rate ratio for a fixed-size corpus).
    pub efficiency: f64,
}

/// The `submit` case that times an empty call the same way, interleaved with the `capacity`
/// submits: what this machine's scheduler alone adds to a timed interval (preemption, vCPU
/// steal). Declared here, beside the result it names, so that the report does not import the
/// scenario (the `submit` scenario imports the report).
pub const NOISE_FLOOR: &str = "noise_floor";

/// One `submit` latency case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// Case name (see docs/BENCHMARKS.md).
    pub case: String,
    /// Median latency of one `submit` call, ns.
    pub p50_ns: f64,
    /// 99th percentile, ns.
    pub p99_ns: f64,
    /// 99.9th percentile, ns.
    pub p999_ns: f64,
    /// Maximum, ns.
    pub max_ns: f64,
}

/// One `s3` measurement: 4 KiB `Job::evacuate` to an S3 server on loopback, every request
/// delayed by `latency_ms` on its way there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Result {
    /// Delay added to each HTTP request, ms.
    pub latency_ms: u64,
    /// Hounds in the pool.
    pub pool: usize,
    /// Completed (uploaded, not spooled) jobs per second through the pool.
    pub jobs_per_sec: f64,
    /// Evidence (uncompressed) megabytes (10^6) per second through the pool.
    pub mb_per_sec: f64,
}

/// The `s3` recovery row: envelopes spooled while the endpoint was down, uploaded by an idle
/// pool once it is back (behind the same per-request delay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3DrainResult {
    /// Delay added to each HTTP request, ms.
    pub latency_ms: u64,
    /// Hounds in the pool.
    pub pool: usize,
    /// Envelopes in the spool when the pool started.
    pub envelopes: usize,
    /// From the pool being ready to the spool holding no record.
    pub seconds: f64,
    /// `envelopes / seconds`.
    pub envelopes_per_sec: f64,
}

/// Respawn latency: from SIGKILL of a hound to its replacement being ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RespawnResult {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Chaos accounting after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosResult {
    /// Jobs `submit` accepted.
    pub accepted: u64,
    /// Outcomes `Completed`.
    pub completed: u64,
    /// Outcomes `Failed`.
    pub failed: u64,
    /// Outcomes `TimedOut`.
    pub timed_out: u64,
    /// Outcomes `Dropped`.
    pub dropped: u64,
    /// Accepted jobs without an outcome (must be 0).
    pub lost: u64,
    /// Outcomes beyond the first for a job, plus outcomes for jobs never accepted (must be 0).
    pub duplicates: u64,
    /// SIGKILLs sent to hounds.
    pub kills: u64,
    /// SIGSTOPs sent to hounds (each resumed after the job deadline).
    pub stops: u64,
}

/// CPU cost of an idle pool (one hound), measured from /proc over a quiet interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleResult {
    /// CPU time of the idle hound as a percentage of one core.
    pub hound_cpu_percent: f64,
    /// CPU time of the whole host process (collector, spawner) as a percentage of one core.
    pub host_cpu_percent: f64,
    /// Length of the interval, seconds.
    pub seconds: f64,
}

impl Machine {
    /// Reads the machine's description. Missing files give `"unknown"`, never an error.
    pub fn detect(quick: bool, hound_binary: String) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        let kernel = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease")
        );
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| cpu_model(&s))
            .unwrap_or_else(|| "unknown".into());
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Machine {
            cores,
            kernel,
            cpu_model,
            date: rfc3339_utc(secs),
            quick,
            hound_binary,
        }
    }
}

/// The first `model name` line of /proc/cpuinfo (x86) or `CPU part`/`Hardware` elsewhere.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "CPU part"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_string())
            })
        })
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp (civil-from-days, proleptic Gregorian).
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// One issue-5 target, evaluated from measurements of the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// What is aimed at.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Whether the goal is met.
    pub met: bool,
}

impl Report {
    /// Evaluates every target of issues 5 and 11 whose measurements are in this report.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        let ipc = |t: Transport, size: usize| {
            self.ipc.iter().find(|r| r.transport == t && r.size == size)
        };
        for (size, factor) in [(64usize, 10.0f64), (16 * 1024, 3.0)] {
            if let (Some(shm), Some(pipe)) = (ipc(Transport::Shm, size), ipc(Transport::Pipe, size))
            {
                let ratio = shm.msgs_per_sec / pipe.msgs_per_sec.max(f64::MIN_POSITIVE);
                // The bare ring is the ceiling of any pool over the same rings: shown beside
                // the ratio, it says whether the goal was reachable at all in this run.
                let ceiling = ipc(Transport::Ring, size)
                    .map(|ring| {
                        let r = ring.msgs_per_sec / pipe.msgs_per_sec.max(f64::MIN_POSITIVE);
                        format!(" (bare ring: {r:.2}x)")
                    })
                    .unwrap_or_default();
                out.push(TargetCheck {
                    goal: format!(
                        "ipc: shm streaming >= {factor}x pipe at {}",
                        human_size(size)
                    ),
                    measured: format!("{ratio:.2}x{ceiling}"),
                    met: ratio >= factor,
                });
            }
        }
        if let (Some(shm), Some(ring)) = (ipc(Transport::Shm, 64), ipc(Transport::Ring, 64)) {
            let ratio = shm.msgs_per_sec / ring.msgs_per_sec.max(f64::MIN_POSITIVE);
            out.push(TargetCheck {
                goal: "ipc: shm streaming >= 0.2x the bare ring (64 B)".into(),
                measured: format!("{ratio:.2}x"),
                met: ratio >= 0.2,
            });
        }
        if let (Some(shm), Some(seq)) = (
            ipc(Transport::Shm, 256 * 1024),
            ipc(Transport::Seqpacket, 256 * 1024),
        ) {
            let ratio = shm.msgs_per_sec / seq.msgs_per_sec.max(f64::MIN_POSITIVE);
            out.push(TargetCheck {
                goal: "ipc: shm streaming >= seqpacket (256 KiB)".into(),
                measured: format!("{ratio:.2}x"),
                met: ratio >= 1.0,
            });
        }
        if let Some(shm) = ipc(Transport::Shm, 64) {
            out.push(TargetCheck {
                goal: "ipc: shm round trip p50 <= 2 us (64 B)".into(),
                measured: format!("{:.2} us", shm.rtt_p50_us),
                met: shm.rtt_p50_us <= 2.0,
            });
        }
        if let Some(idle) = &self.idle {
            out.push(TargetCheck {
                goal: "ipc: idle hound < 1% of a core".into(),
                measured: format!("{:.2}%", idle.hound_cpu_percent),
                met: idle.hound_cpu_percent < 1.0,
            });
        }
        let cores = self.machine.cores;
        if let Some(e) = self
            .encode
            .iter()
            .find(|e| e.kind == EncodeKind::Encode && e.corpus == "4k" && e.pool == cores)
        {
            out.push(TargetCheck {
                goal: format!("encode: efficiency >= 0.85 at pool = cores ({cores}), 4 KiB"),
                measured: format!("{:.3}", e.efficiency),
                met: e.efficiency >= 0.85,
            });
        }
        if let Some(r) = self.s3.iter().find(|r| r.pool == cores) {
            let per_hound = r.jobs_per_sec / r.pool.max(1) as f64;
            out.push(TargetCheck {
                goal: format!(
                    "s3: >= 200 jobs/s per hound at {} ms, pool = cores ({cores})",
                    r.latency_ms
                ),
                measured: format!("{per_hound:.0} jobs/s per hound"),
                met: per_hound >= 200.0,
            });
        }
        if let Some(c) = self.submit.iter().find(|s| s.case == "capacity") {
            out.push(TargetCheck {
                goal: "submit: p99.9 <= 1 us with capacity".into(),
                measured: format!("{:.0} ns", c.p999_ns),
                met: c.p999_ns <= 1_000.0,
            });
        }
        if !self.submit.is_empty() {
            let worst = self
                .submit
                .iter()
                .filter(|s| s.case != NOISE_FLOOR)
                .max_by(|a, b| a.max_ns.total_cmp(&b.max_ns));
            let floor = self
                .submit
                .iter()
                .find(|s| s.case == NOISE_FLOOR)
                .map(|f| format!("; empty call max {:.1} us", f.max_ns / 1_000.0))
                .unwrap_or_default();
            if let Some(w) = worst {
                out.push(TargetCheck {
                    goal: "submit: never above 50 us (max over every case)".into(),
                    measured: format!("{:.1} us ({}){floor}", w.max_ns / 1_000.0, w.case),
                    met: w.max_ns <= 50_000.0,
                });
            }
        }
        if let Some(r) = &self.respawn {
            out.push(TargetCheck {
                goal: "respawn: p50 <= 4 ms, p99 <= 15 ms".into(),
                measured: format!("p50 {:.2} ms, p99 {:.2} ms", r.p50_ms, r.p99_ms),
                met: r.p50_ms <= 4.0 && r.p99_ms <= 15.0,
            });
        }
        if let Some(c) = &self.chaos {
            out.push(TargetCheck {
                goal: "chaos: >= 1 M jobs, 0 lost, 0 duplicated".into(),
                measured: format!(
                    "{} accepted, {} lost, {} duplicated",
                    c.accepted, c.lost, c.duplicates
                ),
                met: c.accepted >= 1_000_000 && c.lost == 0 && c.duplicates == 0,
            });
        }
        out
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "machine: {} cores, {}, {}, {}{}",
            m.cores,
            m.cpu_model,
            m.kernel,
            m.date,
            if m.quick { " (quick)" } else { "" }
        );
        let _ = writeln!(s, "hound binary: {}", m.hound_binary);
        if !self.ipc.is_empty() {
            let _ = writeln!(
                s,
                "\nipc (Noop round trips)\n{:<10} {:>8} {:>12} {:>21} {:>10} {:>9} {:>9} {:>9} {:>9}",
                "transport",
                "size",
                "msgs/s",
                "rounds min-max",
                "MB/s",
                "p50 us",
                "p99 us",
                "p99.9 us",
                "max us"
            );
            for r in &self.ipc {
                let _ = writeln!(
                    s,
                    "{:<10} {:>8} {:>12.0} {:>21} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
                    r.transport.name(),
                    human_size(r.size),
                    r.msgs_per_sec,
                    format!(
                        "{:.0}-{:.0}",
                        r.round_min_msgs_per_sec, r.round_max_msgs_per_sec
                    ),
                    r.bytes_per_sec / 1e6,
                    r.rtt_p50_us,
                    r.rtt_p99_us,
                    r.rtt_p999_us,
                    r.rtt_max_us
                );
            }
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                s,
                "\nidle pool over {:.1} s: hound {:.2}% of a core, host process {:.2}%",
                i.seconds, i.hound_cpu_percent, i.host_cpu_percent
            );
        }
        if !self.encode.is_empty() {
            let _ = writeln!(
                s,
                "\nencode (gzip level 6 + SHA-256)\n{:<9} {:<6} {:>5} {:>10} {:>9} {:>14} {:>10}",
                "kind", "corpus", "pool", "jobs/s", "MB/s", "in-process/s", "efficiency"
            );
            for r in &self.encode {
                let _ = writeln!(
                    s,
                    "{:<9} {:<6} {:>5} {:>10.0} {:>9.1} {:>14.0} {:>10.3}",
                    r.kind.name(),
                    r.corpus,
                    r.pool,
                    r.jobs_per_sec,
                    r.mb_per_sec,
                    r.inprocess_jobs_per_sec,
                    r.efficiency
                );
            }
        }
        if !self.s3.is_empty() {
            let _ = writeln!(
                s,
                "\ns3 evacuation (4 KiB, each request delayed by a proxy)\n{:>10} {:>5} {:>10} {:>9} {:>16}",
                "latency ms", "pool", "jobs/s", "MB/s", "jobs/s per hound"
            );
            for r in &self.s3 {
                let _ = writeln!(
                    s,
                    "{:>10} {:>5} {:>10.0} {:>9.2} {:>16.0}",
                    r.latency_ms,
                    r.pool,
                    r.jobs_per_sec,
                    r.mb_per_sec,
                    r.jobs_per_sec / r.pool.max(1) as f64
                );
            }
        }
        if let Some(d) = &self.s3_drain {
            let _ = writeln!(
                s,
                "\ns3 spool drain after an outage ({} ms per request, pool {}): {} envelopes \
                 in {:.2} s, {:.0} envelopes/s",
                d.latency_ms, d.pool, d.envelopes, d.seconds, d.envelopes_per_sec
            );
        }
        if let Some(why) = &self.s3_skipped {
            let _ = writeln!(s, "\ns3: skipped: {why}");
        }
        if !self.submit.is_empty() {
            let _ = writeln!(
                s,
                "\nsubmit latency\n{:<24} {:>9} {:>9} {:>9} {:>10}",
                "case", "p50 ns", "p99 ns", "p99.9 ns", "max ns"
            );
            for r in &self.submit {
                let _ = writeln!(
                    s,
                    "{:<24} {:>9.0} {:>9.0} {:>9.0} {:>10.0}",
                    r.case, r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns
                );
            }
        }
        if let Some(r) = &self.respawn {
            let _ = writeln!(
                s,
                "\nrespawn (SIGKILL to ready replacement): p50 {:.2} ms, p99 {:.2} ms",
                r.p50_ms, r.p99_ms
            );
        }
        if let Some(c) = &self.chaos {
            let _ = writeln!(
                s,
                "\nchaos: accepted {}, completed {}, failed {}, timed out {}, dropped {}; \
                 lost {}, duplicates {}; {} kills, {} stops",
                c.accepted,
                c.completed,
                c.failed,
                c.timed_out,
                c.dropped,
                c.lost,
                c.duplicates,
                c.kills,
                c.stops
            );
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(s, "\ntargets (issues 5 and 11)");
            for t in targets {
                let _ = writeln!(
                    s,
                    "  [{}] {:<52} {}",
                    if t.met { "met" } else { "NOT met" },
                    t.goal,
                    t.measured
                );
            }
        }
        s
    }
}

/// `64 B`, `16 KiB`, …
pub fn human_size(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample() -> Report {
        Report {
            machine: Machine {
                cores: 2,
                kernel: "Linux 6.1".into(),
                cpu_model: "Test CPU".into(),
                date: "2025-01-01T00:00:00Z".into(),
                quick: true,
                hound_binary: "/bin/hound".into(),
            },
            ipc: vec![IpcResult {
                transport: Transport::Seqpacket,
                size: 64,
                msgs_per_sec: 1.5,
                round_min_msgs_per_sec: 0.0,
                round_max_msgs_per_sec: 0.0,
                bytes_per_sec: 96.0,
                rtt_p50_us: 1.0,
                rtt_p99_us: 2.0,
                rtt_p999_us: 3.0,
                rtt_max_us: 4.0,
            }],
            encode: vec![EncodeResult {
                kind: EncodeKind::Evacuate,
                corpus: "4k".into(),
                pool: 2,
                jobs_per_sec: 10.0,
                mb_per_sec: 0.04,
                inprocess_jobs_per_sec: 6.0,
                efficiency: 0.83,
            }],
            submit: vec![SubmitResult {
                case: "capacity".into(),
                p50_ns: 100.0,
                p99_ns: 200.0,
                p999_ns: 300.0,
                max_ns: 400.0,
            }],
            respawn: Some(RespawnResult {
                p50_ms: 2.0,
                p99_ms: 9.0,
            }),
            chaos: Some(ChaosResult {
                accepted: 10,
                completed: 7,
                failed: 1,
                timed_out: 1,
                dropped: 1,
                lost: 0,
                duplicates: 0,
                kills: 3,
                stops: 1,
            }),
            idle: None,
            s3: vec![S3Result {
                latency_ms: 20,
                pool: 2,
                jobs_per_sec: 120.0,
                mb_per_sec: 0.49,
            }],
            s3_skipped: None,
            s3_drain: None,
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn json_shape_has_exactly_the_issue_field_names() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            keys(&v),
            [
                "chaos",
                "encode",
                "idle",
                "ipc",
                "machine",
                "respawn",
                "s3",
                "s3_drain",
                "s3_skipped",
                "submit"
            ]
        );
        assert_eq!(
            keys(&v["s3"][0]),
            ["jobs_per_sec", "latency_ms", "mb_per_sec", "pool"]
        );
        assert_eq!(v["s3"][0]["latency_ms"], 20);
        assert!(v["s3_skipped"].is_null());
        assert_eq!(
            keys(&v["machine"]),
            [
                "cores",
                "cpu_model",
                "date",
                "hound_binary",
                "kernel",
                "quick"
            ]
        );
        assert_eq!(
            keys(&v["ipc"][0]),
            [
                "bytes_per_sec",
                "msgs_per_sec",
                "round_max_msgs_per_sec",
                "round_min_msgs_per_sec",
                "rtt_max_us",
                "rtt_p50_us",
                "rtt_p999_us",
                "rtt_p99_us",
                "size",
                "transport"
            ]
        );
        assert_eq!(v["ipc"][0]["transport"], "seqpacket");
        assert_eq!(v["ipc"][0]["size"], 64);
        assert_eq!(
            keys(&v["encode"][0]),
            [
                "corpus",
                "efficiency",
                "inprocess_jobs_per_sec",
                "jobs_per_sec",
                "kind",
                "mb_per_sec",
                "pool"
            ]
        );
        assert_eq!(v["encode"][0]["kind"], "evacuate");
        assert_eq!(
            keys(&v["submit"][0]),
            ["case", "max_ns", "p50_ns", "p999_ns", "p99_ns"]
        );
        assert_eq!(keys(&v["respawn"]), ["p50_ms", "p99_ms"]);
        assert_eq!(
            keys(&v["chaos"]),
            [
                "accepted",
                "completed",
                "dropped",
                "duplicates",
                "failed",
                "kills",
                "lost",
                "stops",
                "timed_out"
            ]
        );
        assert!(v["idle"].is_null());
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        // Unrun scenarios keep their keys.
        let empty = Report {
            ipc: vec![],
            respawn: None,
            chaos: None,
            ..r
        };
        let v = serde_json::to_value(&empty).unwrap();
        assert_eq!(v["ipc"], Value::Array(vec![]));
        assert!(v["respawn"].is_null() && v["chaos"].is_null());
        // A skipped s3 scenario: an empty list and the reason, still parseable.
        let skipped = Report {
            s3: vec![],
            s3_skipped: Some("rclone not found".into()),
            ..sample()
        };
        let v: Value = serde_json::from_str(&serde_json::to_string(&skipped).unwrap()).unwrap();
        assert_eq!(v["s3"], Value::Array(vec![]));
        assert_eq!(v["s3_skipped"], "rclone not found");
        assert!(skipped.table().contains("s3: skipped: rclone not found"));
    }

    #[test]
    fn s3_target_is_per_hound_at_pool_equals_cores() {
        let mut r = sample();
        let t = r.targets();
        let s3 = t.iter().find(|t| t.goal.starts_with("s3")).unwrap();
        assert!(!s3.met, "60 jobs/s per hound is below 200");
        assert_eq!(s3.measured, "60 jobs/s per hound");
        r.s3[0].jobs_per_sec = 400.0;
        assert!(r
            .targets()
            .iter()
            .any(|t| t.goal.starts_with("s3") && t.met));
    }

    #[test]
    fn the_pipe_target_shows_the_bare_rings_ratio_as_its_ceiling() {
        let row = |transport, msgs_per_sec| IpcResult {
            transport,
            msgs_per_sec,
            ..sample().ipc[0].clone()
        };
        let mut r = sample();
        r.ipc = vec![row(Transport::Shm, 2.0e6), row(Transport::Pipe, 1.0e6)];
        let pipe_goal = |r: &Report| {
            r.targets()
                .into_iter()
                .find(|t| t.goal.contains("pipe at 64 B"))
                .unwrap()
        };
        let t = pipe_goal(&r);
        assert!(!t.met);
        assert_eq!(t.measured, "2.00x", "no ring row, no ceiling");
        r.ipc.push(row(Transport::Ring, 6.5e6));
        let t = pipe_goal(&r);
        assert_eq!(t.measured, "2.00x (bare ring: 6.50x)");
        assert!(!t.met, "the ceiling is shown, not judged");
    }

    #[test]
    fn transports_and_kinds_use_lowercase_names() {
        for t in [
            Transport::Shm,
            Transport::ShmSingle,
            Transport::Ring,
            Transport::Seqpacket,
            Transport::Pipe,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        for k in [EncodeKind::Encode, EncodeKind::Evacuate] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn cpu_model_is_read_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Fancy CPU @ 3GHz\n";
        assert_eq!(cpu_model(info).as_deref(), Some("Fancy CPU @ 3GHz"));
        assert_eq!(cpu_model("nothing here"), None);
    }

    #[test]
    fn targets_compare_ratios_from_the_same_run() {
        let mut r = sample();
        r.ipc = vec![
            IpcResult {
                transport: Transport::Shm,
                size: 64,
                msgs_per_sec: 1_000_000.0,
                round_min_msgs_per_sec: 0.0,
                round_max_msgs_per_sec: 0.0,
                bytes_per_sec: 64e6,
                rtt_p50_us: 1.5,
                rtt_p99_us: 3.0,
                rtt_p999_us: 5.0,
                rtt_max_us: 9.0,
            },
            IpcResult {
                transport: Transport::Pipe,
                size: 64,
                msgs_per_sec: 200_000.0,
                round_min_msgs_per_sec: 0.0,
                round_max_msgs_per_sec: 0.0,
                bytes_per_sec: 12.8e6,
                rtt_p50_us: 90.0,
                rtt_p99_us: 120.0,
                rtt_p999_us: 200.0,
                rtt_max_us: 900.0,
            },
        ];
        let t = r.targets();
        let stream = t.iter().find(|t| t.goal.contains("at 64 B")).unwrap();
        assert!(!stream.met, "5x is below the 10x goal");
        assert_eq!(stream.measured, "5.00x");
        let rtt = t.iter().find(|t| t.goal.contains("round trip")).unwrap();
        assert!(rtt.met);
        let chaos = t.iter().find(|t| t.goal.starts_with("chaos")).unwrap();
        assert!(!chaos.met, "10 jobs are not 1 M");
        assert!(r.table().contains("NOT met"));
    }

    #[test]
    fn issue_11_targets_use_the_ring_and_seqpacket_rows() {
        let row = |transport, size, msgs_per_sec| IpcResult {
            transport,
            size,
            msgs_per_sec,
            round_min_msgs_per_sec: 0.0,
            round_max_msgs_per_sec: 0.0,
            bytes_per_sec: 0.0,
            rtt_p50_us: 1.0,
            rtt_p99_us: 1.0,
            rtt_p999_us: 1.0,
            rtt_max_us: 1.0,
        };
        let mut r = sample();
        r.ipc = vec![
            row(Transport::Shm, 64, 3_000_000.0),
            row(Transport::Ring, 64, 20_000_000.0),
            row(Transport::Shm, 256 * 1024, 30_000.0),
            row(Transport::Seqpacket, 256 * 1024, 40_000.0),
        ];
        let t = r.targets();
        let ring = t.iter().find(|t| t.goal.contains("bare ring")).unwrap();
        assert_eq!((ring.measured.as_str(), ring.met), ("0.15x", false));
        let big = t.iter().find(|t| t.goal.contains("256 KiB")).unwrap();
        assert_eq!((big.measured.as_str(), big.met), ("0.75x", false));
        r.ipc[0].msgs_per_sec = 4_000_000.0;
        r.ipc[2].msgs_per_sec = 40_000.0;
        assert!(r
            .targets()
            .iter()
            .filter(|t| t.goal.contains("bare ring") || t.goal.contains("256 KiB"))
            .all(|t| t.met));
        assert_eq!(
            serde_json::to_value(Transport::ShmSingle).unwrap(),
            "shm-single"
        );
    }
}
