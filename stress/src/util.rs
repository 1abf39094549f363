//! Shared pieces: the error type, histograms, progress bars, outcome waiting, /proc helpers and
//! the guard that resumes stopped hounds.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use hdrhistogram::Histogram;
use houndpool::{Outcome, PoolConfig, PoolError, SubmitError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Everything that can stop a scenario.
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// Building or running a pool failed.
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    /// `submit` refused a job where the scenario needs it accepted.
    #[error("submit refused: {0}")]
    Submit(#[from] SubmitError),
    /// A frame could not be written or parsed.
    #[error("protocol: {0}")]
    Protocol(#[from] houndpool_protocol::ProtocolError),
    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The `--plot` picture could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// Something the scenario did not expect (a wrong outcome, a peer that misbehaved, a
    /// timeout).
    #[error("{0}")]
    Unexpected(String),
}

impl StressError {
    /// An `Io` error from a nix errno.
    pub fn os(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> StressError {
        move |e| StressError::Io {
            op,
            source: std::io::Error::from(e),
        }
    }
    /// An `Io` error from a std error.
    pub fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StressError {
        move |source| StressError::Io { op, source }
    }
}

/// Result of this crate.
pub type Result<T, E = StressError> = std::result::Result<T, E>;

/// Options every scenario sees.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Short runs (CI, smoke).
    pub quick: bool,
    /// Whether progress bars are drawn.
    pub progress: bool,
    /// Logical CPUs.
    pub cores: usize,
}

impl Ctx {
    /// `quick` if quick, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// A progress bar of `len` steps, hidden unless progress is enabled.
    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:<32} [{bar:30}] {pos}/{len} {elapsed_precise}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_string());
        bar
    }
}

/// Whether progress bars should be drawn: not with `--json`, not when stderr is no terminal.
pub fn want_progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A histogram of values from 1 to one hour in nanoseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Infallible: constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // sigfig <= 5).
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant histogram bounds")
}

/// Records `d` (saturating at the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

/// (p50, p99, p99.9, max) of a nanosecond histogram, divided by `unit` (1 for ns, 1e3 for µs,
/// 1e6 for ms).
pub fn percentiles(h: &Histogram<u64>, unit: f64) -> (f64, f64, f64, f64) {
    let q = |p: f64| h.value_at_quantile(p) as f64 / unit;
    (q(0.5), q(0.99), q(0.999), h.max() as f64 / unit)
}

/// Waits for the next outcome: spins on `try_recv` for up to `spin`, then blocks up to
/// `timeout`. Spinning keeps the measurement about the transport, not about this thread's
/// wake-up.
pub fn next_outcome(rx: &Receiver<Outcome>, spin: Duration, timeout: Duration) -> Result<Outcome> {
    let start = Instant::now();
    let mut i = 0u32;
    loop {
        match rx.try_recv() {
            Ok(o) => return Ok(o),
            Err(TryRecvError::Disconnected) => {
                return Err(StressError::Unexpected("outcome channel closed".into()))
            }
            Err(TryRecvError::Empty) => {}
        }
        i = i.wrapping_add(1);
        if i.is_multiple_of(64) && start.elapsed() >= spin {
            break;
        }
        std::thread::yield_now();
    }
    rx.recv_timeout(timeout).map_err(|_| {
        StressError::Unexpected(format!("no outcome within {timeout:?} (pool stalled?)"))
    })
}

/// Returns an error unless `o` completed.
pub fn expect_completed(o: &Outcome) -> Result<()> {
    match &o.result {
        houndpool::OutcomeKind::Completed(_) => Ok(()),
        other => Err(StressError::Unexpected(format!(
            "{} ended {}: {other:?}",
            o.job_id,
            other.name()
        ))),
    }
}

/// A pool configuration for benchmarks: no cold storage, hound stderr shown, everything else
/// the production default.
pub fn bench_config(hounds: usize) -> PoolConfig {
    PoolConfig {
        size: houndpool::PoolSize::Fixed(hounds),
        cold: houndpool::ColdConfig::None,
        ..PoolConfig::default()
    }
}

/// `bench_config` for scenarios that kill hounds on purpose (respawn, chaos): the pool-wide
/// restart-intensity circuit is lifted, because these scenarios measure respawn mechanics and
/// exactly-once delivery under constant external kills, not the crash-loop policy (which would,
/// correctly, open the circuit after 10 restarts in 10 s and hold slots empty for its cool-down).
/// The per-slot respawn back-off stays in force.
pub fn fault_injection_config(hounds: usize) -> PoolConfig {
    PoolConfig {
        restart_intensity: houndpool::config::RestartIntensity {
            max_restarts: u32::MAX,
            within: std::time::Duration::from_millis(100),
        },
        ..bench_config(hounds)
    }
}

/// Parent pid of `pid` and its state letter, from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, char, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    Some((ppid, state, fields))
}

/// Whether `pid` is a live (not zombie) child of this process — checked right before every
/// signal so that a recycled pid is never signalled.
pub fn is_our_child(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((ppid, state, _)) if ppid == std::process::id() && state != 'Z')
}

/// Sends `sig` to `pid` if it is still a live child of ours. Returns whether it was sent.
pub fn signal_child(pid: u32, sig: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    is_our_child(pid) && kill(Pid::from_raw(raw), sig).is_ok()
}

/// User + system CPU time of `pid` (or of this process with `None`), from /proc.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let text = match pid {
        Some(p) => std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?,
        None => std::fs::read_to_string("/proc/self/stat").ok()?,
    };
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the ')': state is field 3 of stat(5), utime 14 and stime 15 → indexes 11 and 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 on every architecture it supports.
    Some(Duration::from_millis(ticks * 10))
}

/// Processes left behind by this process: children (live or zombie) whose command line marks
/// them as hounds, plus any process among `seen` (pids of hounds observed during the run) that
/// still runs as a hound. Returns `(pid, state, command)`.
pub fn leftover_hounds(seen: &[u32]) -> Vec<(u32, char, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((ppid, state, _)) = proc_stat(pid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        // A zombie has no command line left; its name is still in /proc/PID/comm.
        let cmdline = if cmdline.trim().is_empty() {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| format!("[{}]", c.trim()))
                .unwrap_or_default()
        } else {
            cmdline
        };
        let is_hound = cmdline.contains(houndpool_hound::HOUND_ARG);
        let ours = ppid == me || seen.contains(&pid);
        // A zombie child of ours is left behind whatever it ran; a live process only if it is
        // a hound (the cmdline of a zombie is empty).
        if (ppid == me && state == 'Z') || (ours && is_hound) {
            out.push((pid, state, cmdline.trim().to_string()));
        }
    }
    out
}

/// Resumes (SIGCONT) the hounds it holds when dropped, so no scenario leaves one stopped.
#[derive(Debug, Default)]
pub struct Stopped(Vec<u32>);

impl Stopped {
    /// Stops `pid` (SIGSTOP) and remembers to resume it. Returns whether it was stopped.
    pub fn stop(&mut self, pid: u32) -> bool {
        let ok = signal_child(pid, Signal::SIGSTOP);
        if ok {
            self.0.push(pid);
        }
        ok
    }
    /// Resumes every held hound now.
    pub fn resume_all(&mut self) {
        for pid in self.0.drain(..) {
            signal_child(pid, Signal::SIGCONT);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume_all();
    }
}

/// Waits until every slot of `pool` has a hound, up to `timeout`; returns the pids.
pub fn wait_all_pids(pool: &houndpool::Pool, timeout: Duration) -> Result<Vec<u32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids: Option<Vec<u32>> = pool.stats().hounds.iter().map(|h| h.pid).collect();
        if let Some(p) = pids {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(StressError::Unexpected(format!(
                "not every hound slot was filled within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut h = histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_nanos(i * 1000));
        }
        let (p50, p99, p999, max) = percentiles(&h, 1_000.0);
        assert!((p50 - 500.0).abs() < 1.0, "{p50}");
        assert!((p99 - 990.0).abs() < 2.0, "{p99}");
        assert!((p999 - 999.0).abs() < 2.0, "{p999}");
        assert!((max - 1000.0).abs() < 2.0, "{max}");
    }

    #[test]
    fn own_process_is_not_our_child_and_has_cpu_time() {
        assert!(!is_our_child(std::process::id()));
        assert!(cpu_time(None).is_some());
        assert!(!signal_child(std::process::id(), Signal::SIGCONT));
    }

    #[test]
    fn a_live_child_is_ours_and_a_reaped_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        assert!(is_our_child(pid));
        assert!(cpu_time(Some(pid)).is_some());
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!is_our_child(pid));
    }
}
