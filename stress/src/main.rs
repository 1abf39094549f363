//! hound-stress: houndpool's load, chaos and benchmark harness (issue 5, design §4).
//!
//! Scenarios: `ipc`, `encode`, `s3`, `submit`, `respawn`, `chaos`; without a subcommand all of
//! them run in that order. `--quick` keeps each short (CI, smoke), `--json` prints one JSON
//! object of the shape documented in docs/BENCHMARKS.md instead of the table, `--plot FILE`
//! writes an SVG of jobs/s by pool size. The exit status is non-zero if a scenario could not
//! run, the chaos run found a violation, or the plot could not be written.
//!
//! The executable is also its own hound when no `hound` binary sits beside it
//! (`houndpool::run_hound_if_requested`), and its own echo peer for the socket and pipe
//! transports (the hidden `__echo-peer` subcommand).
#![forbid(unsafe_code)]

mod chaos;
mod encode;
mod ipc;
mod ledger;
mod plot;
mod report;
mod respawn;
mod s3;
mod submit;
mod util;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::report::{Machine, Report};
use crate::util::{want_progress, Ctx, StressError};

/// houndpool's benchmarks and chaos test.
#[derive(Debug, Parser)]
#[command(name = "hound-stress", version, about)]
struct Cli {
    /// Run each scenario briefly (the whole set well under a minute).
    #[arg(long, global = true)]
    quick: bool,
    /// Print one JSON object (stable shape, see docs/BENCHMARKS.md) on stdout; the table goes
    /// to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Write an SVG of jobs/s by pool size (encode, evacuate-fs, evacuate-s3: whichever the
    /// run measured) to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
    /// Delay the `s3` scenario's proxy adds to each HTTP request, milliseconds.
    #[arg(long, global = true, default_value_t = s3::DEFAULT_LATENCY_MS,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    s3_latency_ms: u64,
    /// Scenario to run; all of them in sequence when omitted.
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Transports alone: shared-memory rings vs SOCK_SEQPACKET vs pipes (Noop echo).
    Ipc(IpcArgs),
    /// Encode and Evacuate throughput of pools of 1..=cores hounds vs in-process encoding.
    Encode(EncodeArgs),
    /// Evacuation of 4 KiB evidence to S3 (rclone on loopback behind a latency proxy) through
    /// pools of 1..=cores hounds; skipped if rclone is not found.
    S3,
    /// Latency of `submit` with capacity, at exhaustion, and with a stopped hound.
    Submit,
    /// Time from a hound's death to a ready replacement.
    Respawn,
    /// Jobs under SIGKILL/SIGSTOP of hounds; fails on any accounting violation.
    Chaos(ChaosArgs),
    /// Echo frames back (the socket and pipe peer of `ipc`; started by hound-stress itself).
    #[command(name = "__echo-peer", hide = true)]
    EchoPeer {
        /// `seqpacket` (stdin is the socket) or `pipe` (stdin → stdout).
        #[arg(long)]
        mode: String,
    },
}

#[derive(Debug, Args, Clone, Default)]
struct IpcArgs {
    /// How long the shm pool's hound and collector, and the thread waiting for outcomes,
    /// busy-wait before sleeping, microseconds [default: the pool's default, 50].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    spin_us: Option<u64>,
    /// Payload sizes to measure, comma-separated, each one of 64, 1024, 16384, 262144
    /// [default: all].
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Transports to measure, comma-separated: shm, shm-single, ring, seqpacket, pipe
    /// [default: all].
    #[arg(long, value_delimiter = ',', value_parser = parse_transport)]
    transports: Vec<report::Transport>,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if ipc::SIZES.contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not one of {:?}", ipc::SIZES))
    }
}

fn parse_transport(s: &str) -> Result<report::Transport, String> {
    use report::Transport::*;
    [Shm, ShmSingle, Ring, Seqpacket, Pipe]
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| format!("unknown transport {s:?}"))
}

#[derive(Debug, Args, Clone, Default)]
struct EncodeArgs {
    /// Job kinds to measure, comma-separated: encode, evacuate [default: both].
    #[arg(long, value_delimiter = ',', value_parser = parse_encode_kind)]
    kinds: Vec<report::EncodeKind>,
    /// Corpora to measure, comma-separated: 4k, mixed [default: both].
    #[arg(long, value_delimiter = ',', value_parser = ["4k", "mixed"])]
    corpora: Vec<String>,
    /// Pool sizes to measure, comma-separated, each within 1..=cores [default: all].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=256))]
    pools: Vec<u64>,
    /// Jobs outstanding per hound in every row [default: 16 for encode, the pool's
    /// max_in_flight_per_hound (64) for evacuate].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: Option<u64>,
}

fn parse_encode_kind(s: &str) -> Result<report::EncodeKind, String> {
    use report::EncodeKind::*;
    [Encode, Evacuate]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| format!("unknown kind {s:?}"))
}

#[derive(Debug, Args, Clone, Default)]
struct ChaosArgs {
    /// Jobs to get accepted [default: 1000000, 20000 with --quick].
    #[arg(long)]
    jobs: Option<u64>,
    /// One fault (3/4 SIGKILL, 1/4 SIGSTOP) every this many milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    kill_every_ms: u64,
    /// Hounds in the chaos pool [default: max(2, cores)].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    hounds: Option<u64>,
    /// Watchdog deadline of the chaos pool, milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..))]
    job_timeout_ms: u64,
}

impl ChaosArgs {
    fn opts(&self, ctx: &Ctx) -> chaos::ChaosOpts {
        chaos::ChaosOpts {
            jobs: self.jobs.unwrap_or(ctx.pick(20_000, 1_000_000)),
            kill_every: Duration::from_millis(self.kill_every_ms),
            hounds: self.hounds.map(|h| h as usize).unwrap_or(ctx.cores.max(2)),
            min_duration: ctx.pick(Duration::from_secs(2), Duration::ZERO),
            job_timeout: Duration::from_millis(self.job_timeout_ms),
        }
    }
}

fn main() -> ExitCode {
    houndpool::run_hound_if_requested();
    let cli = Cli::parse();
    if let Some(Cmd::EchoPeer { mode }) = &cli.cmd {
        return ipc::echo_peer(mode);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ctx = Ctx {
        quick: cli.quick,
        progress: want_progress(cli.json),
        cores,
    };
    let mut report = Report {
        machine: Machine::detect(cli.quick, hound_binary()),
        ipc: Vec::new(),
        encode: Vec::new(),
        submit: Vec::new(),
        respawn: None,
        chaos: None,
        idle: None,
        s3: Vec::new(),
        s3_skipped: None,
        s3_drain: None,
    };
    let all = cli.cmd.is_none();
    let wants = |name: &str| {
        all || matches!(
            (&cli.cmd, name),
            (Some(Cmd::Ipc(_)), "ipc")
                | (Some(Cmd::Encode(_)), "encode")
                | (Some(Cmd::S3), "s3")
                | (Some(Cmd::Submit), "submit")
                | (Some(Cmd::Respawn), "respawn")
                | (Some(Cmd::Chaos(_)), "chaos")
        )
    };
    let (spin, filter) = match &cli.cmd {
        Some(Cmd::Ipc(a)) => (
            a.spin_us.map(Duration::from_micros),
            ipc::Filter {
                sizes: a.sizes.clone(),
                transports: a.transports.clone(),
            },
        ),
        _ => (None, ipc::Filter::default()),
    };
    let encode_filter = match &cli.cmd {
        Some(Cmd::Encode(a)) => encode::Filter {
            kinds: a.kinds.clone(),
            corpora: a.corpora.clone(),
            pools: a.pools.iter().map(|&n| n as usize).collect(),
            window: a.window.map(|n| n as usize),
        },
        _ => encode::Filter::default(),
    };
    let chaos_args = match &cli.cmd {
        Some(Cmd::Chaos(a)) => a.clone(),
        _ => ChaosArgs {
            kill_every_ms: 50,
            job_timeout_ms: 200,
            ..ChaosArgs::default()
        },
    };

    let mut failures: Vec<String> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<(), String>| {
        if !wants(name) {
            return;
        }
        let t = Instant::now();
        eprintln!("hound-stress: {name} ...");
        if let Err(e) = f() {
            eprintln!("hound-stress: {name} FAILED: {e}");
            failures.push(format!("{name}: {e}"));
        }
        eprintln!(
            "hound-stress: {name} took {:.1} s",
            t.elapsed().as_secs_f64()
        );
    };
    step("ipc", &mut || {
        let (r, idle) = ipc::run(&ctx, spin, &filter).map_err(|e| e.to_string())?;
        report.ipc = r;
        report.idle = idle;
        Ok(())
    });
    step("encode", &mut || {
        report.encode = encode::run(&ctx, &encode_filter).map_err(|e| e.to_string())?;
        Ok(())
    });
    step("s3", &mut || {
        let run = s3::run(&ctx, cli.s3_latency_ms).map_err(|e| e.to_string())?;
        report.s3 = run.results;
        report.s3_skipped = run.skipped;
        report.s3_drain = run.drain;
        Ok(())
    });
    step("submit", &mut || {
        report.submit = submit::run(&ctx).map_err(|e| e.to_string())?;
        Ok(())
    });
    step("respawn", &mut || {
        report.respawn = Some(respawn::run(&ctx).map_err(|e| e.to_string())?);
        Ok(())
    });
    step("chaos", &mut || {
        let run = chaos::run(&ctx, chaos_args.opts(&ctx)).map_err(|e| e.to_string())?;
        report.chaos = Some(run.result);
        if run.violations.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} violation(s):\n  {}",
                run.violations.len(),
                run.violations.join("\n  ")
            ))
        }
    });

    if let Some(path) = &cli.plot {
        let written = plot::svg(&report).and_then(|doc| {
            std::fs::write(path, doc).map_err(StressError::io("write the --plot file"))
        });
        match written {
            Ok(()) => eprintln!("hound-stress: plot written to {}", path.display()),
            Err(e) => {
                eprintln!("hound-stress: --plot {} FAILED: {e}", path.display());
                failures.push(format!("plot: {e}"));
            }
        }
    }
    if cli.json {
        // The table goes to stderr, so one run gives both: `--json > run.json 2> run.txt`.
        eprint!("{}", report.table());
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("hound-stress: cannot serialise the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.table());
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("hound-stress: {} scenario(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        ExitCode::FAILURE
    }
}

/// The hound executable `HoundBinary::Auto` will pick (same rules as the supervisor): for the
/// report only.
fn hound_binary() -> String {
    if let Some(p) = std::env::var_os("HOUNDPOOL_HOUND_BIN") {
        return format!("{} (HOUNDPOOL_HOUND_BIN)", p.to_string_lossy());
    }
    let Ok(exe) = std::env::current_exe() else {
        return "unknown".into();
    };
    match exe.parent().map(|d| d.join("hound")) {
        Some(h) if h.is_file() => h.display().to_string(),
        _ => format!("{} (multi-call)", exe.display()),
    }
}
