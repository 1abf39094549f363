//! houndd: the houndpool daemon and its tools.
//!
//! * `houndd demo` — runs a pool on the default configuration and streams synthetic evidence
//!   through it for a few seconds, then prints a summary.
//! * `houndd verify DIR` — checks every envelope under DIR (structure and SHA-256).
//! * `houndd restore FILE` — verifies and decodes one envelope inside a sandboxed hound.
//! * `houndd sandbox-check` — starts one hound and prints its sandbox report.
//! * `houndd run --config FILE` — the daemon: a pool served on a Unix socket, an HTTP
//!   operations endpoint, drain on SIGTERM / SIGINT, reload on SIGHUP.
//! * `houndd submit --socket PATH FILE…` — submits files to a running daemon, prints outcomes.
//! * `houndd config check FILE` — prints the effective configuration or the error.
//! * `houndd config docs` — prints the key tables of docs/CONFIGURATION.md (from the key table).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use houndpool::synth::EvidenceGenerator;
use houndpool::{
    ColdConfig, Job, JobKind, Layer, LayerMode, OutcomeKind, Pool, PoolConfig, PoolSize,
    SandboxReport, Severity, SubmitError,
};

#[derive(Parser)]
#[command(name = "houndd", version, about = "houndpool daemon and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pool on the default configuration and stream synthetic evidence through it.
    Demo {
        /// How long to submit evidence, seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Number of hounds (default: one per CPU).
        #[arg(long)]
        hounds: Option<usize>,
        /// Cold storage directory.
        #[arg(long, default_value = "houndpool-data")]
        data_dir: PathBuf,
        /// Seed of the evidence generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check every envelope (*.thcs) under DIR: structure and SHA-256. Exits 1 if any is bad.
    Verify {
        /// Directory to scan recursively.
        dir: PathBuf,
    },
    /// Verify and decode one envelope inside a sandboxed hound; write the evidence to --out or
    /// standard output.
    Restore {
        /// The envelope file.
        file: PathBuf,
        /// Where to write the decoded evidence (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Largest decoded size accepted, bytes.
        #[arg(long, default_value_t = 64 << 20)]
        max_output: usize,
    },
    /// Start one hound and print its sandbox report. Exits non-zero if a required layer is
    /// missing.
    SandboxCheck {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Require these layers (repeatable; e.g. --require seccomp). `all` requires every one.
        #[arg(long)]
        require: Vec<String>,
    },
    /// Run the daemon: a pool served to clients on a Unix socket, with an HTTP operations
    /// endpoint (/metrics, /healthz, /readyz). SIGTERM / SIGINT drain and exit 0; SIGHUP
    /// reloads the configuration.
    Run {
        /// TOML configuration file (default: none, all defaults); `HOUNDPOOL_<SECTION>_<KEY>`
        /// variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Submit files to a running daemon and print one line per file with its outcome. Exits
    /// 1 if any file was refused or did not complete.
    Submit {
        /// The daemon's socket.
        #[arg(long, default_value = "/run/houndpool/houndd.sock")]
        socket: PathBuf,
        /// Job kind: evacuate (to cold storage), encode, decode (FILE is an envelope), noop,
        /// or restore / erase (by --key, no FILE).
        #[arg(long, default_value = "evacuate")]
        kind: String,
        /// Severity: low, medium, high or critical.
        #[arg(long, default_value = "medium")]
        severity: String,
        /// Evidence key naming the object `<prefix><KEY>.thcs` (e.g. the origin's
        /// `injection:<sha256 hex>`): evacuate exactly one FILE under it, or restore / erase it.
        #[arg(long)]
        key: Option<String>,
        /// restore: where to write the restored evidence.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Files to submit, one job each.
        files: Vec<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the effective configuration (the file with `HOUNDPOOL_*` variables applied), or
    /// an error naming the key, the bad value and what is allowed (exit 1).
    Check {
        /// The TOML file (default: none, all defaults).
        file: Option<PathBuf>,
    },
    /// Print the tables of every key (variable, default, allowed values, reload, meaning) as
    /// docs/CONFIGURATION.md holds them; generated from the one declaration of each key.
    Docs,
}

fn main() -> ExitCode {
    houndpool::run_hound_if_requested();
    let cli = Cli::parse();
    if let Command::Run { config } = cli.command {
        return run_daemon(config);
    }
    init_tracing();
    let r = match cli.command {
        Command::Demo {
            seconds,
            hounds,
            data_dir,
            seed,
        } => demo(seconds, hounds, data_dir, seed),
        Command::Verify { dir } => verify(&dir),
        Command::Restore {
            file,
            out,
            max_output,
        } => restore(&file, out.as_deref(), max_output),
        Command::SandboxCheck { json, require } => sandbox_check(json, &require),
        Command::Submit {
            socket,
            kind,
            severity,
            key,
            out,
            json,
            files,
        } => submit(
            &socket,
            &kind,
            &severity,
            key.as_deref(),
            out.as_deref(),
            json,
            &files,
        ),
        Command::Config {
            action: ConfigAction::Check { file },
        } => config_check(file.as_deref()),
        Command::Config {
            action: ConfigAction::Docs,
        } => {
            print!("{}", houndpool::keys::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { .. } => Ok(ExitCode::from(2)),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("houndd: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOUNDPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

fn print_sandbox(report: &SandboxReport) {
    for l in &report.layers {
        println!(
            "  {:<13} {:<11} {}",
            l.layer.name(),
            l.status.name(),
            l.detail
        );
    }
}

fn demo(seconds: f64, hounds: Option<usize>, data_dir: PathBuf, seed: u64) -> Res {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("--seconds {seconds}: must be between 0 and 3600").into());
    }
    let mut config = PoolConfig {
        cold: ColdConfig::Filesystem {
            root: data_dir,
            prefix: "evidence/".into(),
        },
        max_evidence_bytes: 256 * 1024,
        max_output_bytes: 256 * 1024,
        ..PoolConfig::default()
    };
    if let Some(n) = hounds {
        config.size = PoolSize::Fixed(n);
    }
    let pool = Pool::builder().config(config).build()?;
    let outcomes = pool.outcomes().ok_or("outcome channel disabled")?;
    let root = match &pool.config().cold {
        ColdConfig::Filesystem { root, prefix } => root.join(prefix),
        _ => PathBuf::from("?"),
    };
    let size = pool.stats().size;
    println!(
        "houndpool demo: {} hounds ({}), {:.1} s of synthetic evidence, cold storage {}",
        size.target,
        size.explanation,
        seconds,
        root.display()
    );
    if let Some(r) = pool.stats().sandbox {
        println!("sandbox of each hound:");
        print_sandbox(&r);
    }

    // Consume outcomes on their own thread: latency histogram and counts.
    let done = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let bytes_out = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumer = {
        let (done, hist, bytes_out, received) = (
            done.clone(),
            hist.clone(),
            bytes_out.clone(),
            received.clone(),
        );
        std::thread::spawn(move || loop {
            match outcomes.recv_timeout(Duration::from_millis(50)) {
                Ok(o) => {
                    received.fetch_add(1, Ordering::Release);
                    if let OutcomeKind::Completed(r) = &o.result {
                        bytes_out.fetch_add(r.compressed_size.unwrap_or(0), Ordering::Relaxed);
                    }
                    let us = u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX);
                    let _ = hist
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(us.clamp(1, 60_000_000));
                }
                Err(_) if done.load(Ordering::Acquire) && outcomes.is_empty() => return,
                Err(_) => {}
            }
        })
    };

    let bar = indicatif::ProgressBar::new((seconds * 10.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {msg}")?
            .progress_chars("=> "),
    );
    let mut gen = EvidenceGenerator::new(seed);
    let start = Instant::now();
    let run_for = Duration::from_secs_f64(seconds);
    let (mut accepted, mut backpressure, mut bytes_in) = (0u64, 0u64, 0u64);
    let mut last_tick = Instant::now();
    // Pre-generate a corpus so the generator does not compete with the hounds for CPU.
    let corpus: Vec<_> = (0..512).map(|_| gen.next_mixed()).collect();
    let mut i = 0usize;
    // Closed loop: keep a bounded window of jobs outstanding, as a well-behaved producer does;
    // the pool's exhaustion policy is for bursts beyond that.
    let window = (pool.config().hound_count() * 16) as u64;
    while start.elapsed() < run_for {
        if accepted.saturating_sub(received.load(Ordering::Acquire)) >= window {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let ev = &corpus[i % corpus.len()];
        i += 1;
        match pool.submit(&Job::evacuate(&ev.bytes).with_severity(ev.severity)) {
            Ok(_) => {
                accepted += 1;
                bytes_in += ev.bytes.len() as u64;
            }
            Err(SubmitError::DeferQueueFull { .. }) | Err(SubmitError::PoolExhausted) => {
                backpressure += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err(e) => return Err(e.into()),
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            let s = pool.stats();
            bar.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
            bar.set_message(format!(
                "{} accepted, {} completed, {:.0} jobs/s",
                s.accepted,
                s.completed,
                s.completed as f64 / start.elapsed().as_secs_f64()
            ));
        }
    }
    let submit_secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let stats = pool.shutdown(Duration::from_secs(30));
    let total_secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let _ = consumer.join();
    let h = hist.lock().unwrap_or_else(|p| p.into_inner());

    println!();
    println!(
        "jobs        submitted {}  accepted {}  completed {}  failed {}  timed out {}  dropped {}",
        stats.submitted,
        stats.accepted,
        stats.completed,
        stats.failed,
        stats.timed_out,
        stats.dropped
    );
    if backpressure > 0 {
        println!(
            "            refused for backpressure {backpressure} (defer queue full; the generator backed off)"
        );
    }
    println!(
        "throughput  {:.0} jobs/s, {:.1} MB/s of evidence in, {:.1} MB/s of envelopes stored ({:.1} s submitting, {:.1} s with drain)",
        stats.completed as f64 / total_secs,
        bytes_in as f64 / 1e6 / total_secs,
        bytes_out.load(Ordering::Relaxed) as f64 / 1e6 / total_secs,
        submit_secs,
        total_secs
    );
    println!(
        "latency     submit→outcome p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    let per: Vec<String> = stats
        .hounds
        .iter()
        .map(|hs| format!("#{} {} jobs", hs.slot, hs.completed))
        .collect();
    println!(
        "per hound   {}  (spawns {}, exits {})",
        per.join(", "),
        stats.hound_spawns,
        stats.hound_exits
    );
    println!(
        "envelopes   {}  (check them: houndd verify {})",
        root.display(),
        root.display()
    );
    let ok = stats.identity_holds() && stats.in_flight == 0 && accepted == stats.accepted;
    println!(
        "accounting  accepted {} = completed + failed + timed_out + dropped: {}",
        stats.accepted,
        if ok { "holds" } else { "VIOLATED" }
    );
    Ok(if ok && stats.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads a file that should hold one envelope, refusing (before reading any of it) one larger
/// than the largest possible envelope, and never reading more than that bound.
fn read_envelope_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    const MAX: u64 = houndpool_protocol::envelope::MAX_ENVELOPE_LEN;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > MAX {
        return Err(format!(
            "{len} bytes, larger than the largest possible envelope ({MAX} bytes); not read"
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX {
        return Err(format!("grew beyond {MAX} bytes while being read"));
    }
    Ok(bytes)
}

fn verify(dir: &Path) -> Res {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()).into());
    }
    let (mut good, mut bad) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                // Journals, conflicts and temp files (`.tmp-*`) are looked at below.
                if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "thcs") {
                continue;
            }
            let result = read_envelope_file(&path).and_then(|bytes| {
                houndpool_protocol::envelope::verify(&bytes).map_err(|e| e.to_string())
            });
            match result {
                Ok(_) => good += 1,
                Err(reason) => {
                    bad += 1;
                    println!("BAD {}: {reason}", path.display());
                }
            }
        }
    }
    // Committed envelopes not yet materialised (a pool still running, or stopped by a crash:
    // the next pool start materialises them) are objects too.
    let mut journaled = 0u64;
    for (_, path) in houndpool_cold::fs::journal::list_journals(dir)? {
        let Some(bytes) =
            houndpool_cold::fs::journal::read_capped(&path, houndpool_cold::fs::JOURNAL_READ_CAP)?
        else {
            continue;
        };
        let mut records = houndpool_cold::fs::journal::Records::new(
            &bytes,
            houndpool_cold::fs::JOURNAL_READ_CAP as usize,
        );
        for rec in records.by_ref() {
            if !rec.key.ends_with(".thcs") {
                continue;
            }
            match houndpool_protocol::envelope::verify(rec.envelope) {
                Ok(_) => journaled += 1,
                Err(e) => {
                    bad += 1;
                    println!("BAD {} in journal {}: {e}", rec.key, path.display());
                }
            }
        }
    }
    // Envelopes the materialiser could not store because their key held other bytes.
    let conflicts = houndpool_cold::fs::materialise::conflicts(dir)?;
    for c in &conflicts {
        println!(
            "CONFLICT {:?}: another envelope is stored under this key; this one ({} bytes, {}) \
             was kept in {}",
            c.key,
            c.envelope.len(),
            match houndpool_protocol::envelope::verify(&c.envelope) {
                Ok(_) => "verifies".to_string(),
                Err(e) => format!("does not verify: {e}"),
            },
            c.file.display()
        );
    }
    println!(
        "{} envelopes verified, {bad} bad, under {} ({journaled} of them in commit journals \
         not yet materialised, {} conflicts)",
        good + journaled,
        dir.display(),
        conflicts.len(),
    );
    Ok(if bad == 0 && conflicts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn restore(file: &Path, out: Option<&Path>, max_output: usize) -> Res {
    let limit = houndpool_protocol::envelope::max_envelope_len(max_output);
    let meta = std::fs::metadata(file)?;
    if meta.len() > limit as u64 {
        return Err(format!(
            "{} is {} bytes, larger than any envelope of at most {max_output} decoded bytes",
            file.display(),
            meta.len()
        )
        .into());
    }
    let envelope = std::fs::read(file)?;
    let pool = Pool::builder()
        .config(PoolConfig {
            size: PoolSize::Fixed(1),
            cold: ColdConfig::None,
            max_output_bytes: max_output,
            max_evidence_bytes: max_output,
            ..PoolConfig::default()
        })
        .build()?;
    let outcomes = pool.outcomes().ok_or("outcome channel disabled")?;
    pool.submit(&Job::decode(&envelope))?;
    let o = outcomes.recv_timeout(Duration::from_secs(60))?;
    pool.shutdown(Duration::from_secs(1));
    match o.result {
        OutcomeKind::Completed(r) => {
            let bytes = r.payload.unwrap_or_default();
            match out {
                Some(p) => std::fs::write(p, &bytes)?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            eprintln!("restored {} bytes from {}", bytes.len(), file.display());
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!(
                "houndd: {} could not be restored: {:?}",
                file.display(),
                other
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn sandbox_check(json: bool, require: &[String]) -> Res {
    let mut policy = houndpool::SandboxPolicy::default();
    for name in require {
        let layers: Vec<Layer> = if name == "all" {
            Layer::ALL.to_vec()
        } else {
            vec![*Layer::ALL
                .iter()
                .find(|l| l.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown layer {name:?}; layers are: all, {}",
                        Layer::ALL.map(|l| l.name()).join(", ")
                    )
                })?]
        };
        for l in layers {
            policy.layers.retain(|(x, _)| *x != l);
            policy.layers.push((l, LayerMode::Required));
        }
    }
    let built = Pool::builder()
        .config(PoolConfig {
            size: PoolSize::Fixed(1),
            cold: ColdConfig::None,
            sandbox: policy,
            ..PoolConfig::default()
        })
        .build();
    let pool = match built {
        Ok(p) => p,
        Err(e @ houndpool::PoolError::SandboxRequirement { .. }) => {
            eprintln!("houndd: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let report = pool.stats().sandbox.unwrap_or_default();
    pool.shutdown(Duration::from_secs(1));
    if json {
        let layers: serde_json::Map<String, serde_json::Value> = report
            .layers
            .iter()
            .map(|l| {
                (
                    l.layer.name().to_string(),
                    serde_json::json!({"status": l.status.name(), "detail": l.detail}),
                )
            })
            .collect();
        println!("{}", serde_json::json!({ "layers": layers }));
    } else {
        println!("sandbox report of one hound:");
        print_sandbox(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(config: Option<PathBuf>) -> ExitCode {
    let prepared = match houndpool::daemon::load_config(config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("houndd: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match houndpool::daemon::init_logging_as(
        &prepared.config.log.level,
        prepared.config.log.json,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("houndd: {e}");
            return ExitCode::from(2);
        }
    };
    match houndpool::daemon::run(prepared, config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("houndd: {e}");
            ExitCode::from(2)
        }
    }
}

fn config_check(file: Option<&Path>) -> Res {
    match houndpool::daemon::load_config(file) {
        Ok(p) => {
            println!(
                "# effective configuration: {} with HOUNDPOOL_* variables applied",
                file.map(|f| f.display().to_string())
                    .unwrap_or_else(|| "defaults".into())
            );
            println!(
                "# hounds: {}, largest client frame: {} bytes",
                p.pool.hound_count(),
                p.max_frame
            );
            if let Some(d) = &p.sizing {
                println!("# {}", d.explanation);
            }
            print!("{}", p.config.render());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("houndd: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn submit(
    socket: &Path,
    kind: &str,
    severity: &str,
    key: Option<&str>,
    out: Option<&Path>,
    json: bool,
    files: &[PathBuf],
) -> Res {
    use houndpool::daemon::client::Client;
    use houndpool_protocol::daemon::{JobOutcome, OutcomeResult};
    use std::collections::HashMap;

    let kind = [
        JobKind::Evacuate,
        JobKind::Encode,
        JobKind::Decode,
        JobKind::Noop,
        JobKind::Restore,
        JobKind::Erase,
    ]
    .into_iter()
    .find(|k| k.name() == kind)
    .ok_or_else(|| {
        format!("--kind {kind}: one of evacuate, encode, decode, noop, restore, erase")
    })?;
    let by_key = matches!(kind, JobKind::Restore | JobKind::Erase);
    let labels: Vec<PathBuf> = match (kind, key) {
        (JobKind::Restore | JobKind::Erase, Some(k)) if files.is_empty() => vec![PathBuf::from(k)],
        (JobKind::Restore | JobKind::Erase, _) => {
            return Err("--kind restore / erase need --key KEY and no FILE".into())
        }
        (JobKind::Evacuate, Some(_)) if files.len() != 1 => {
            return Err("--key names one object: give exactly one FILE".into())
        }
        (JobKind::Evacuate, _) | (_, None) if !files.is_empty() => files.to_vec(),
        (_, None) => return Err("give at least one FILE".into()),
        (_, Some(_)) => return Err("--key is allowed with evacuate, restore and erase only".into()),
    };
    let severity = Severity::ALL
        .into_iter()
        .find(|s| s.name() == severity)
        .ok_or_else(|| format!("--severity {severity}: one of low, medium, high, critical"))?;
    let mut client = Client::connect(socket)?;
    // Jobs in flight at most: bounded below the daemon's default per-connection buffer.
    const WINDOW: usize = 256;
    let mut pending: HashMap<u64, &Path> = HashMap::new();
    let mut ok = true;
    let print = |file: &Path, o: &JobOutcome| -> bool {
        let id = uuid::Uuid::from_bytes(o.evidence_id);
        let (result, mut done) = match &o.result {
            OutcomeResult::Completed(_) => ("completed", true),
            OutcomeResult::Failed { .. } => ("failed", false),
            OutcomeResult::TimedOut => ("timed_out", false),
            OutcomeResult::Dropped { .. } => ("dropped", false),
        };
        if let (Some(path), OutcomeResult::Completed(r)) = (out, &o.result) {
            if let Some(evidence) = &r.payload {
                if let Err(e) = std::fs::write(path, evidence) {
                    eprintln!("houndd: writing {}: {e}", path.display());
                    done = false;
                }
            }
        }
        if json {
            let mut v = serde_json::json!({
                "file": file.display().to_string(),
                "job_id": o.job_id,
                "evidence_id": id.to_string(),
                "result": result,
                "latency_us": o.latency_us,
            });
            match &o.result {
                OutcomeResult::Completed(r) => {
                    v["key"] = serde_json::json!(r.key);
                    v["original_size"] = serde_json::json!(r.original_size);
                    v["compressed_size"] = serde_json::json!(r.compressed_size);
                    v["sha256"] = serde_json::json!(r.sha256.map(hex::encode));
                    v["spooled"] = serde_json::json!(r.spooled);
                }
                OutcomeResult::Failed {
                    kind,
                    code,
                    message,
                } => {
                    v["reason"] = serde_json::json!(kind.name());
                    if let Ok(c) = houndpool_protocol::job::FailCode::from_u16(*code) {
                        v["code"] = serde_json::json!(c.name());
                    }
                    v["message"] = serde_json::json!(message);
                }
                OutcomeResult::Dropped { reason, .. } => {
                    v["reason"] = serde_json::json!(format!("{reason:?}").to_lowercase());
                }
                OutcomeResult::TimedOut => {}
            }
            println!("{v}");
        } else {
            let detail = match &o.result {
                OutcomeResult::Completed(r) => {
                    let mut d = Vec::new();
                    if let Some(k) = &r.key {
                        d.push(format!("key={k}"));
                    }
                    if let (Some(a), Some(b)) = (r.original_size, r.compressed_size) {
                        d.push(format!("{a} -> {b} bytes"));
                    } else if let Some(a) = r.original_size {
                        d.push(format!("{a} bytes"));
                    }
                    if r.spooled {
                        d.push("spooled".into());
                    }
                    d.join(" ")
                }
                OutcomeResult::Failed { kind, message, .. } => {
                    format!("{}: {message}", kind.name())
                }
                OutcomeResult::TimedOut => "the hound made no progress before the deadline".into(),
                OutcomeResult::Dropped { reason, .. } => format!("{reason:?}").to_lowercase(),
            };
            println!("{}: {result} evidence={id} {detail}", file.display());
        }
        done
    };
    for file in &labels {
        while pending.len() >= WINDOW {
            let o = client.next_outcome()?;
            if let Some(f) = pending.remove(&o.job_id) {
                ok &= print(f, &o);
            }
        }
        let body = if by_key {
            Vec::new()
        } else {
            std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?
        };
        let request =
            client.send_submit_full(kind, severity, None, key.map(str::to_owned), None, body)?;
        match client.wait_reply(request)? {
            Ok(job_id) => {
                pending.insert(job_id, file);
            }
            Err((reason, message)) => {
                ok = false;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": file.display().to_string(), "result": "refused", "reason": reason.name(), "message": message})
                    );
                } else {
                    println!("{}: refused ({}): {message}", file.display(), reason.name());
                }
            }
        }
    }
    client.finish_submitting()?;
    while !pending.is_empty() {
        let o = client.next_outcome()?;
        if let Some(f) = pending.remove(&o.job_id) {
            ok &= print(f, &o);
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
