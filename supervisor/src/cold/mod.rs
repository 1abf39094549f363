//! The supervisor's side of cold storage: resolving the S3 endpoint for the hounds (which
//! have no resolver under their sandbox), and sweeping temp files of dead hounds out of the
//! filesystem store.
//!
//! Resolution: at [`start`] (pool build) the host the hounds connect to is resolved once; a
//! name that does not resolve then is a startup error ([`PoolError::ColdEndpoint`]). A
//! background thread re-resolves every [`ColdNet::resolve_interval`] and soon after a hound
//! reports the target unreachable ([`note_unreachable`]), at most once per
//! [`MIN_REFRESH_GAP`]. Lookups run only on that thread, never in `submit`. Every hound gets
//! the current set (and the private CA) right after its `Hello` ([`send_to`]); the collector
//! pushes a changed set to every live hound ([`Pusher`]). A failed re-resolution keeps the
//! last good set (the hounds' retries and spool cover the outage).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use houndpool_protocol::control::Message;
use nix::sys::socket::{send, MsgFlags};

use crate::config::{ColdConfig, PoolConfig};
use crate::PoolError;

pub(crate) mod journal;
pub(crate) mod net;

pub use net::{ColdNet, Live, Resolve, SystemResolver};
use net::{Endpoints, Inner, State};

/// Least time between two re-resolutions asked for by failures.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

fn lookup(resolver: &dyn Resolve, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match resolver.resolve(host, port) {
        Ok(a) if a.is_empty() => Err("no addresses".into()),
        Ok(a) => Ok(a),
        Err(e) => Err(e.to_string()),
    }
}

/// Resolves an S3 target's host and starts the re-resolution thread; reads `cold.ca_file`.
/// Nothing to do for other targets. Fails when the name does not resolve now, or the CA file
/// is unreadable or holds no certificate.
pub(crate) fn start(config: &mut PoolConfig) -> Result<(), PoolError> {
    let ColdConfig::S3(target) = &config.cold else {
        return Ok(());
    };
    let (host, port) = houndpool_cold::s3::net::connect_host(target)?;
    let ca_pem = match &config.cold_net.ca_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| PoolError::InvalidConfig {
                key: "cold.ca_file",
                value: path.display().to_string(),
                allowed: format!("a readable PEM file ({e})"),
            })?;
            houndpool_cold::s3::net::parse_ca(&pem)?;
            Some(pem)
        }
        None => None,
    };
    let resolver = config.cold_net.resolver.clone();
    let addrs = lookup(&*resolver, &host, port).map_err(|reason| PoolError::ColdEndpoint {
        host: host.clone(),
        reason,
    })?;
    tracing::info!(%host, port, addresses = ?addrs, "cold storage endpoint resolved");
    let inner = Arc::new(Inner {
        host,
        port,
        ca_pem,
        generation: AtomicU64::new(1),
        state: Mutex::new(State {
            addrs,
            refresh: false,
        }),
        wake: Condvar::new(),
    });
    let weak = Arc::downgrade(&inner);
    let interval = config.cold_net.resolve_interval.max(MIN_REFRESH_GAP);
    std::thread::Builder::new()
        .name("houndpool-resolve".into())
        .spawn(move || resolve_loop(weak, resolver, interval))
        .map_err(|source| PoolError::Os {
            op: "start the endpoint resolver thread",
            source,
        })?;
    config.cold_net.live = Live(Some(Endpoints(inner)));
    Ok(())
}

/// Re-resolves until the pool (every strong reference) is gone.
fn resolve_loop(weak: Weak<Inner>, resolver: Arc<dyn Resolve>, interval: Duration) {
    let mut last = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        {
            let state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let due = last + interval;
            let wait = due.saturating_duration_since(Instant::now());
            let (mut state, _) = inner
                .wake
                .wait_timeout_while(state, wait.min(MIN_REFRESH_GAP * 5), |s| !s.refresh)
                .unwrap_or_else(|e| e.into_inner());
            let asked = state.refresh && last.elapsed() >= MIN_REFRESH_GAP;
            if !asked && Instant::now() < due {
                // Woken early (or to check whether the pool is gone): rate-limit refreshes.
                drop(state);
                drop(inner);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            state.refresh = false;
        }
        last = Instant::now();
        let found = lookup(&*resolver, &inner.host, inner.port);
        let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        match found {
            Ok(addrs) if addrs != state.addrs => {
                tracing::info!(host = %inner.host, from = ?state.addrs, to = ?addrs,
                    "cold storage endpoint re-resolved to new addresses");
                state.addrs = addrs;
                inner.generation.fetch_add(1, Ordering::Release);
            }
            Ok(_) => {}
            Err(reason) => tracing::warn!(host = %inner.host, %reason,
                "re-resolving the cold storage endpoint failed; keeping the last addresses"),
        }
    }
}

/// A hound reported the target unreachable: re-resolve soon (never blocks).
pub(crate) fn note_unreachable(config: &PoolConfig) {
    if let Some(live) = &config.cold_net.live.0 {
        let mut state = live.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refresh = true;
        live.0.wake.notify_one();
    }
}

fn frame(live: &Endpoints) -> Result<Vec<u8>, PoolError> {
    let mut frame = Vec::with_capacity(256);
    Message::ColdEndpoints(live.current()).encode_frame(&mut frame)?;
    Ok(frame)
}

/// Sends the current endpoints to a hound that just got its `Hello` (S3 targets only).
pub(crate) fn send_to(control: &impl AsRawFd, config: &PoolConfig) -> Result<(), String> {
    let Some(live) = &config.cold_net.live.0 else {
        return Ok(());
    };
    let frame = frame(live).map_err(|e| e.to_string())?;
    send(
        control.as_raw_fd(),
        &frame,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
    .map(drop)
    .map_err(|e| format!("sending ColdEndpoints: {e}"))
}

/// Remembers which endpoint set the live hounds have; pushes a newer one to all of them.
#[derive(Debug)]
pub(crate) struct Pusher {
    sent: u64,
}

impl Default for Pusher {
    /// Every hound got at least the set of the first resolution (generation 1) at its
    /// handshake; a newer one is pushed (a hound may get a set twice: harmless).
    fn default() -> Self {
        Pusher { sent: 1 }
    }
}

impl Pusher {
    /// If the set changed since the last push, sends it to every control socket in `hounds`
    /// (non-blocking; a hound whose socket is full keeps its old set until the next change).
    pub(crate) fn push<'a>(
        &mut self,
        config: &PoolConfig,
        hounds: impl Iterator<Item = &'a std::os::fd::OwnedFd>,
    ) {
        let Some(live) = &config.cold_net.live.0 else {
            return;
        };
        let generation = live.0.generation.load(Ordering::Acquire);
        if generation == self.sent {
            return;
        }
        self.sent = generation;
        let Ok(frame) = frame(live) else { return };
        for fd in hounds {
            let _ = send(
                fd.as_raw_fd(),
                &frame,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
        }
    }
}

/// Removes temp files of writers that are gone from a filesystem store (logged, never fatal).
/// `gone(pid)` decides which writers are gone. Nothing to do for other targets.
pub(crate) fn sweep_temps(config: &PoolConfig, gone: impl Fn(u32) -> bool) {
    if let ColdConfig::Filesystem { root, .. } = &config.cold {
        sweep_temps_in(root, gone);
    }
}

/// [`sweep_temps`] of the store at `root`.
pub(crate) fn sweep_temps_in(root: &std::path::Path, gone: impl Fn(u32) -> bool) {
    match houndpool_cold::fs::sweep_temps(root, gone) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, root = %root.display(),
            "removed temp files of dead hounds from the cold store"),
        Err(e) => tracing::warn!(error = %e, root = %root.display(),
            "could not sweep temp files of dead hounds"),
    }
}
