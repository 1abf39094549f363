//! `houndd run`: a pool served to clients in any language over a Unix socket, with an HTTP
//! operations endpoint, configuration from a TOML file and `HOUNDPOOL_*` variables, drain on
//! SIGTERM / SIGINT and live reload on SIGHUP (ARCHITECTURE §3.8).
//!
//! ```text
//!  clients ──Unix socket (frames)──► server: one reader + one writer task per connection
//!                                        │ submit (non-blocking) ▲ outcome frames
//!                                        ▼                       │ per-connection bounded queue
//!                                       Pool ──outcome channel──► bridge thread (routes by job id)
//!  kubelet / Prometheus ──HTTP──► ops: /metrics /healthz /readyz
//! ```
//!
//! The socket side runs on one current-thread tokio runtime: the work per frame is a
//! bounded copy into a hound's ring (`Pool::submit` never blocks), so one thread serves many
//! clients, and the pool's own threads do the heavy lifting. The ops endpoint has its own
//! thread and runtime, so probes answer however busy the socket side is. The pool's outcome
//! channel is a crossbeam channel; one blocking thread (`houndd-bridge`) routes each outcome to
//! the connection that submitted the job. A connection's queue never refuses an outcome: the
//! room for it was reserved in the daemon-wide buffer budget when the job was accepted.
//!
//! Guarantees (also in docs/PROTOCOL.md, Part 4):
//! * every submit gets exactly one [`SubmitReply`](houndpool_protocol::daemon::SubmitReply),
//!   written before anything else about that job;
//! * every accepted job's outcome is written to the submitting connection exactly once while
//!   that connection lives; a connection that cannot take more is not read (backpressure)
//!   instead of being disconnected. Outcomes not written in full because the connection closed
//!   are counted in `houndpool_daemon_outcomes_undelivered_total`;
//! * client buffers stay within the budget (`daemon.buffer_budget_bytes`, else
//!   `pool.host_reserve_bytes / 2`) plus fixed per-connection buffers;
//! * every connection the daemon closes itself gets a final `Error` frame naming the reason
//!   (write stall, frame or idle timeout, eviction, drain, malformed input, admission).

mod alloc;
pub mod client;
pub mod config;
mod flow;
mod logjson;
mod metrics;
mod ops;
mod server;
pub mod settings;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use settings::Config;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{Pool, PoolError};

pub use config::Prepared;

/// After the pool has drained, how long connections get to write their last outcomes before
/// they are closed regardless (their unwritten outcomes are counted as undelivered).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the daemon and of its client.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configuration value is not allowed (the message names the key, or the variable it
    /// came from, the value and what is allowed).
    #[error("invalid configuration: {key} = {value:?}: {allowed}")]
    InvalidConfig {
        /// Dotted key, e.g. `pool.size`, or the environment variable that set it.
        key: String,
        /// The offending value as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The configuration file is not valid TOML.
    #[error("invalid TOML in configuration: {detail}")]
    ConfigParse {
        /// The parser's message (with line and column).
        detail: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The pool could not be built.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or address concerned.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process accepts connections on the socket path.
    #[error("socket {0} is in use by a running daemon")]
    SocketInUse(String),
    /// A frame from the peer could not be decoded or encoded.
    #[error(transparent)]
    Protocol(#[from] houndpool_protocol::ProtocolError),
    /// The daemon closed the connection with an error frame.
    #[error("daemon closed the connection: {code}: {message}")]
    Remote {
        /// The error code's name.
        code: &'static str,
        /// Its message.
        message: String,
    },
    /// The daemon sent a message a client does not expect.
    #[error("unexpected {0} message from the daemon")]
    Unexpected(&'static str),
    /// The connection ended.
    #[error("connection closed by the daemon")]
    Closed,
}

fn io_err(op: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> DaemonError {
    let path = path.as_ref().display().to_string();
    move |source| DaemonError::Io { op, path, source }
}

/// Settings a reload changes on the running daemon (see [`config::is_live`]).
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub allowed_uids: Vec<u32>,
    pub max_connections: usize,
    pub outcome_buffer: usize,
    pub write_stall: Duration,
    pub max_frame: u32,
    pub drain_grace: Duration,
    pub max_connections_per_uid: usize,
    pub frame_timeout: Duration,
    pub idle_timeout: Duration,
    /// Largest restore / decode output (the worst case an outcome reserves for those kinds).
    pub max_output: usize,
}

impl Live {
    /// The live settings of a running configuration (its frame limit derived from its own
    /// pool section, which is the running pool's).
    fn from(c: &Config) -> Self {
        let d = &c.daemon;
        Live {
            allowed_uids: d.allowed_uids.clone(),
            max_connections: d.max_connections,
            outcome_buffer: d.outcome_buffer,
            write_stall: d.write_stall_timeout,
            max_frame: config::max_frame(c),
            drain_grace: d.drain_grace,
            max_connections_per_uid: d.max_connections_per_uid,
            frame_timeout: d.frame_timeout,
            idle_timeout: d.idle_timeout,
            max_output: c.pool.max_output_bytes,
        }
    }
}

/// Everything the daemon's tasks share.
pub(crate) struct State {
    pub pool: Arc<Pool>,
    pub metrics: Arc<metrics::DaemonMetrics>,
    pub registry: Registry,
    pub draining: Arc<AtomicBool>,
    pub live: Mutex<Live>,
    pub router: server::Router,
    pub conns_open: AtomicUsize,
    /// The daemon-wide buffer budget (docs/PROTOCOL.md, Part 4 §5).
    pub budget: Arc<flow::Budget>,
    /// Open connections and connections per uid.
    pub conns: server::Registry,
    /// Start of the daemon's millisecond clock ([`State::now_ms`]).
    pub epoch: Instant,
}

impl State {
    pub(crate) fn live(&self) -> Live {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Milliseconds since the daemon started.
    pub(crate) fn now_ms(&self) -> u64 {
        config::millis(self.epoch.elapsed())
    }
}

/// Changes the log filter of the running process (installed by [`init_logging`]).
pub struct LogControl {
    set: Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

impl LogControl {
    /// A control that changes nothing (for embedding without a global subscriber).
    pub fn none() -> Self {
        LogControl {
            set: Box::new(|_| Ok(())),
        }
    }
}

/// Installs the global tracing subscriber (to stderr) with a filter that reloads can change.
/// Fails if a global subscriber is already installed.
pub fn init_logging(level: &str) -> Result<LogControl, DaemonError> {
    init_logging_as(level, false)
}

/// As [`init_logging`], with `json` selecting one JSON object per line (`log.format = "json"`).
pub fn init_logging_as(level: &str, json: bool) -> Result<LogControl, DaemonError> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| DaemonError::InvalidConfig {
            key: "log.level".into(),
            value: level.into(),
            allowed: format!("tracing directives ({e})"),
        })?;
    let (layer, handle) = tracing_subscriber::reload::Layer::new(filter);
    let (text, json) = if json {
        let l = tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(false)
            .event_format(logjson::Json);
        (None, Some(l))
    } else {
        let l = tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
        (Some(l), None)
    };
    tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init()
        .map_err(|e| DaemonError::Io {
            op: "install the log subscriber",
            path: String::new(),
            source: io::Error::other(e.to_string()),
        })?;
    Ok(LogControl {
        set: Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
    })
}

/// Loads and checks the configuration as `houndd run` and `houndd config check` do: the file
/// (or none), then the process environment.
pub fn load_config(path: Option<&Path>) -> Result<Prepared, DaemonError> {
    config::prepare(Config::load_file(path)?)
}

/// Removes the socket file when the daemon stops, however it stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the Unix socket with `mode`: a stale socket file (nobody accepting) is replaced, a
/// live one is [`DaemonError::SocketInUse`], any other file is left alone and is an error.
/// The socket is created under umask 0o177 so that it is never more open than 0600 before
/// its mode is set; call this before any other thread exists (the umask is process-wide).
fn bind_socket(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(DaemonError::Io {
                op: "bind",
                path: path.display().to_string(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket exists there",
                ),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create socket directory", dir))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io_err("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("set non-blocking", path))?;
    Ok(listener)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and refuses a configuration whose
/// connections, ops endpoint and hounds cannot all have their descriptors
/// ([`config::descriptors_needed`]).
fn fit_descriptors(prepared: &Prepared) -> Result<(), DaemonError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| DaemonError::Io {
        op: "getrlimit",
        path: "RLIMIT_NOFILE".into(),
        source: e.into(),
    })?;
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                warn!(soft, hard, error = %e, "cannot raise the soft RLIMIT_NOFILE to the hard limit");
                soft
            }
        }
    } else {
        soft
    };
    let needed = config::descriptors_needed(&prepared.config, prepared.pool.hound_count());
    if needed > limit {
        let fit =
            config::max_connections_fitting(&prepared.config, prepared.pool.hound_count(), limit);
        return Err(DaemonError::InvalidConfig {
            key: "daemon.max_connections".into(),
            value: prepared.config.daemon.max_connections.to_string(),
            allowed: format!(
                "at most {fit} here: the descriptor limit (RLIMIT_NOFILE, hard {hard}) is {limit} and this configuration needs {needed} \
                 (connections + eviction margin + ops endpoint + hounds + base, docs/CONFIGURATION.md); lower daemon.max_connections or raise the limit"
            ),
        });
    }
    info!(
        limit,
        needed, "descriptor limit (RLIMIT_NOFILE) fits the configuration"
    );
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT, then drains: stops accepting connections and
/// submits, lets the pool finish (or drop, after `daemon.drain_grace_ms`) every accepted job,
/// writes the remaining outcomes (for at most [`FLUSH_TIMEOUT`]), removes the socket and
/// returns `Ok`. SIGHUP re-reads `config_path` (and the environment) and applies what can
/// change live; an invalid file is refused with an error log and changes nothing.
///
/// Must be called before the process starts any other thread (the socket is bound under a
/// temporary umask).
pub fn run(
    prepared: Prepared,
    config_path: Option<PathBuf>,
    log: LogControl,
) -> Result<(), DaemonError> {
    flow::tune_allocator();
    fit_descriptors(&prepared)?;
    let socket_path = prepared.config.daemon.socket.clone();
    let std_listener = bind_socket(&socket_path, prepared.config.daemon.socket_mode)?;
    let socket_guard = SocketFile(socket_path.clone());
    let ops_listener = match prepared.config.ops.addr {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                info!(%addr, "ops endpoint listens on a non-loopback address");
            }
            let l = std::net::TcpListener::bind(addr)
                .map_err(io_err("bind ops endpoint", addr.to_string()))?;
            l.set_nonblocking(true)
                .map_err(io_err("set non-blocking", addr.to_string()))?;
            Some(l)
        }
        None => None,
    };

    if let Some(d) = &prepared.sizing {
        info!(size = d.size, "{}", d.explanation);
    }
    let pool = Arc::new(Pool::builder().config(prepared.pool.clone()).build()?);
    let outcomes = pool.outcomes().ok_or_else(|| DaemonError::InvalidConfig {
        key: "pool.outcome_capacity".into(),
        value: "none".into(),
        allowed: "the daemon needs the outcome channel".into(),
    })?;
    let draining = Arc::new(AtomicBool::new(false));
    let daemon_metrics = Arc::new(metrics::DaemonMetrics::default());
    let budget_bytes = config::buffer_budget(&prepared.config);
    let budget = Arc::new(flow::Budget::new(
        usize::try_from(budget_bytes).unwrap_or(usize::MAX),
    ));
    info!(
        budget_bytes,
        max_connections = prepared.config.daemon.max_connections,
        "client buffer budget (daemon.buffer_budget_bytes, else pool.host_reserve_bytes / 2)"
    );
    let registry = metrics::registry(
        &budget,
        &daemon_metrics,
        pool.clone(),
        metrics::HostCollector {
            draining: draining.clone(),
            limits: crate::cgroup::detect()
                .map_err(|e| warn!(error = %e, "cannot read the cgroup limits; no container memory metrics"))
                .ok(),
        },
    );
    let state = Arc::new(State {
        pool: pool.clone(),
        metrics: daemon_metrics,
        registry,
        draining,
        live: Mutex::new(Live::from(&prepared.config)),
        router: server::Router::default(),
        conns_open: AtomicUsize::new(0),
        budget,
        conns: server::Registry::default(),
        epoch: Instant::now(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("start runtime", "tokio"))?;
    let bridge_stop = Arc::new(AtomicBool::new(false));
    let bridge = {
        let (state, stop) = (state.clone(), bridge_stop.clone());
        std::thread::Builder::new()
            .name("houndd-bridge".into())
            .spawn(move || server::bridge(outcomes, &state, &stop))
            .map_err(io_err("spawn thread", "houndd-bridge"))?
    };
    let ops_addr = ops_listener.as_ref().and_then(|l| l.local_addr().ok());
    // The ops endpoint runs on its own thread and runtime: probes are answered however busy
    // the socket side is.
    let (stop_ops_tx, stop_ops) = watch::channel(false);
    let ops_thread = match ops_listener {
        Some(l) => {
            let state = state.clone();
            Some(
                std::thread::Builder::new()
                    .name("houndd-ops".into())
                    .spawn(move || ops::run(l, state, stop_ops))
                    .map_err(io_err("spawn thread", "houndd-ops"))?,
            )
        }
        None => None,
    };
    let s = pool.stats();
    info!(
        socket = %socket_path.display(),
        ops = ?ops_addr,
        hounds = s.hounds.len(),
        sandbox = ?s.sandbox.as_ref().map(|r| r.layers.iter().map(|l| format!("{}={}", l.layer.name(), l.status.name())).collect::<Vec<_>>()),
        "houndd ready"
    );

    let result = runtime.block_on(main_loop(
        state.clone(),
        std_listener,
        prepared,
        config_path,
        log,
        &socket_path,
        bridge_stop.clone(),
    ));
    // The pool has shut down inside main_loop (or is shut down here on an early error);
    // wait for the bridge to route the last outcomes.
    pool.shutdown(Duration::ZERO);
    bridge_stop.store(true, Ordering::SeqCst);
    let _ = bridge.join();
    let _ = stop_ops_tx.send(true);
    if let Some(t) = ops_thread {
        let _ = t.join();
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    drop(socket_guard);
    result
}

#[allow(clippy::too_many_arguments)]
async fn main_loop(
    state: Arc<State>,
    std_listener: std::os::unix::net::UnixListener,
    prepared: Prepared,
    config_path: Option<PathBuf>,
    log: LogControl,
    socket_path: &Path,
    bridge_stop: Arc<AtomicBool>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .map_err(io_err("register socket", socket_path))?;
    let sig = |k| signal(k).map_err(io_err("install signal handler", "SIGTERM/SIGINT/SIGHUP"));
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    let (stop_accept_tx, stop_accept) = watch::channel(false);
    let (close_conns_tx, close_conns) = watch::channel(false);
    let accept_task = tokio::spawn(server::accept_loop(
        listener,
        state.clone(),
        stop_accept,
        close_conns,
    ));

    let mut running = prepared.config;
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reload(&state, config_path.as_deref(), &mut running, &log, socket_path),
        }
    };

    // Drain.
    let grace = state.live().drain_grace;
    info!(
        signal = signal_name,
        grace_ms = config::millis(grace),
        "draining"
    );
    state.draining.store(true, Ordering::SeqCst);
    let _ = stop_accept_tx.send(true);
    let pool = state.pool.clone();
    let mut drain = tokio::task::spawn_blocking(move || pool.shutdown(grace));
    let drained = loop {
        tokio::select! {
            r = &mut drain => break r,
            _ = term.recv() => info!("already draining"),
            _ = int.recv() => info!("already draining"),
            _ = hup.recv() => info!("draining: reload ignored"),
        }
    };
    match drained {
        Ok(s) => info!(
            accepted = s.accepted,
            completed = s.completed,
            failed = s.failed,
            timed_out = s.timed_out,
            dropped = s.dropped,
            "pool drained"
        ),
        Err(e) => error!("pool shutdown task failed: {e}"),
    }
    // Every outcome is in the pool's channel now: let the bridge route the rest and stop, and
    // let connections write what they hold (bounded by FLUSH_TIMEOUT in the accept loop).
    bridge_stop.store(true, Ordering::SeqCst);
    let _ = close_conns_tx.send(true);
    let _ = accept_task.await;
    Ok(())
}

/// SIGHUP: re-read, check in full, apply what can change live, log every change.
fn reload(
    state: &State,
    path: Option<&Path>,
    running: &mut Config,
    log: &LogControl,
    socket_path: &Path,
) {
    let refused = |what: String| {
        error!("configuration reload refused, running configuration unchanged: {what}");
        state
            .metrics
            .reloads
            .get_or_create(&[("result", "refused")])
            .inc();
    };
    let prepared = match load_config(path) {
        Ok(p) => p,
        Err(e) => return refused(e.to_string()),
    };
    let new = &prepared.config;
    if new.daemon.max_connections != running.daemon.max_connections {
        // The running pool's size, and the limit raised at start.
        if let Ok((limit, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            let hounds = state.pool.config().hound_count();
            let needed = config::descriptors_needed(new, hounds);
            if needed > limit {
                return refused(format!(
                    "daemon.max_connections = {}: needs {needed} descriptors, RLIMIT_NOFILE is {limit} (at most {} fit)",
                    new.daemon.max_connections,
                    config::max_connections_fitting(new, hounds, limit)
                ));
            }
        }
    }
    let changes = config::changes(running, new);
    if changes.is_empty() {
        info!("configuration reloaded: no change");
    }
    // What will run: the live keys from the new file, everything else as it runs now.
    let mut next = running.clone();
    next.log = new.log.clone();
    next.log.json = running.log.json; // log.format takes a restart
    next.daemon = settings::DaemonSettings {
        socket: running.daemon.socket.clone(),
        ..new.daemon.clone()
    };
    // Apply; the step that can fail for reasons outside the file (chmod) goes first, so a
    // refusal changes nothing.
    if next.daemon.socket_mode != running.daemon.socket_mode {
        if let Err(e) = std::fs::set_permissions(
            socket_path,
            std::fs::Permissions::from_mode(next.daemon.socket_mode),
        ) {
            return refused(format!(
                "daemon.socket_mode: chmod {}: {e}",
                socket_path.display()
            ));
        }
    }
    if next.log.level != running.log.level {
        if let Err(e) = config::log_filter(&next)
            .map_err(|e| e.to_string())
            .and_then(|f| (log.set)(f))
        {
            return refused(format!("log.level: {e}"));
        }
    }
    *state.live.lock().unwrap_or_else(|p| p.into_inner()) = Live::from(&next);
    *running = next;
    for c in &changes {
        if c.live {
            info!(key = %c.key, old = %c.old, new = %c.new, "configuration change applied");
        } else {
            warn!(key = %c.key, old = %c.old, new = %c.new, "configuration change needs a restart of houndd; not applied");
        }
    }
    state
        .metrics
        .reloads
        .get_or_create(&[("result", "applied")])
        .inc();
}
