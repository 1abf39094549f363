//! The network settings of an S3 cold target as the pool's configuration holds them
//! ([`ColdNet`]: CA file, re-resolution interval, resolver) and the running endpoint set they
//! lead to. Depends on nothing else of the supervisor, so `config` can hold a [`ColdNet`]
//! while the resolution code in the parent module reads the configuration.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use houndpool_protocol::control::ColdEndpoints;

/// Looks a host name up. The seam for tests (a resolver whose answer changes mid-run);
/// production uses [`SystemResolver`].
pub trait Resolve: Send + Sync + fmt::Debug {
    /// The addresses of `host` (port `port`), in preference order. May block (it runs on the
    /// resolver thread only).
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, DNS, as the host is configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Network settings of an S3 cold target (ignored for other targets).
#[derive(Debug, Clone)]
pub struct ColdNet {
    /// PEM file of the CA(s) the hounds trust for `https` endpoints in addition to the built-in
    /// web roots (`cold.ca_file`). Read by the supervisor at build (at most 48 KiB, at least
    /// one certificate); certificates are verified inside the hound. Default none.
    pub ca_file: Option<PathBuf>,
    /// How often the endpoint's name is re-resolved (`cold.resolve_interval_ms`). Default 30 s.
    pub resolve_interval: Duration,
    /// The resolver. Default [`SystemResolver`].
    pub resolver: Arc<dyn Resolve>,
    /// The running resolution: set by the pool at build; leave it at its default.
    pub live: Live,
}

/// The running resolution of a built pool (opaque; empty in a configuration that was not
/// built yet).
#[derive(Debug, Clone, Default)]
pub struct Live(pub(super) Option<Endpoints>);

impl Default for ColdNet {
    fn default() -> Self {
        ColdNet {
            ca_file: None,
            resolve_interval: Duration::from_millis(
                crate::keys::COLD_RESOLVE_INTERVAL_MS.int_default(),
            ),
            resolver: Arc::new(SystemResolver),
            live: Live::default(),
        }
    }
}

/// The current endpoint set, shared by the pool's threads and the resolver thread.
#[derive(Clone)]
pub(crate) struct Endpoints(pub(super) Arc<Inner>);

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("host", &self.0.host)
            .field("generation", &self.0.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) ca_pem: Option<String>,
    pub(super) generation: AtomicU64,
    pub(super) state: Mutex<State>,
    pub(super) wake: Condvar,
}

pub(super) struct State {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) refresh: bool,
}

impl Endpoints {
    pub(super) fn current(&self) -> ColdEndpoints {
        let state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        ColdEndpoints {
            host: self.0.host.clone(),
            addresses: state.addrs.clone(),
            ca_pem: self.0.ca_pem.clone(),
        }
    }
}
