//! S3-compatible cold store: rusty-s3 (sans-IO SigV4 presigning) + ureq (blocking HTTP/1.1,
//! rustls for `https` endpoints). No async: one [`ureq::Agent`] per store, its connections
//! reused. [`ColdStore::put_batch`] runs up to [`S3Tuning::concurrency`] create-only uploads
//! at once on scoped threads that live for the batch (every other call is one request at a
//! time on the caller's thread).
//!
//! Keys are used verbatim: the caller builds them with [`crate::cold::object_key`] from the
//! target's prefix, exactly as for the filesystem store.
//!
//! Transient failures (connection refused or reset, timeouts, HTTP 5xx, 429, 408) are retried
//! with exponential backoff and jitter within [`S3Tuning`]. A `put` that still fails
//! transiently is written to the local spool (if one is configured and has room) and reported
//! as [`PutOutcome::Spooled`]; [`S3Store::drain_spool`] uploads spooled envelopes later under
//! the same key. Refusals (403, 404 bucket, 400, redirects) are [`ColdError::ColdRejected`]
//! and are never spooled. See docs/S3.md.

mod drain;
pub mod net;
mod retry;
mod spool;
mod upload;

use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use self::retry::{classify_status, classify_ureq, s3_error, Fail, Policy};
use self::spool::Spool;
pub use self::spool::SpoolCensus;
use super::{validate_key, ColdStore, PutItem, PutOutcome};
use crate::{ColdError, KeyOrigin};
use houndpool_protocol::control::{ColdEndpoints, S3Target};

/// Lifetime of each presigned request URL. A URL is signed right before it is sent, so this
/// only has to cover clock skew between this host and the server.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Largest error body read to explain a refusal.
const ERROR_BODY_LIMIT: u64 = 8 * 1024;
/// Largest ListObjectsV2 page accepted (1000 keys of 1024 bytes, XML-escaped, fit easily).
const LIST_PAGE_LIMIT: u64 = 16 * 1024 * 1024;
/// Most pages one `list` follows (1000 keys each): a server that never stops paginating
/// cannot keep a hound busy forever.
const LIST_MAX_PAGES: usize = 100_000;

/// Retry, timeout and spool-claim tuning of an [`S3Store`]. [`Default`] is the production
/// policy; tests use shorter delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Tuning {
    /// Attempts per request in all, the first included (values below 1 count as 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles per attempt, jittered into `[d/2, d]`.
    pub base_delay: Duration,
    /// Cap of a single backoff.
    pub max_delay: Duration,
    /// No new attempt of a request starts once this much time has passed since its first.
    pub retry_budget: Duration,
    /// TCP (and TLS) connection setup timeout per attempt.
    pub connect_timeout: Duration,
    /// Longest wait for any single socket read or write once connected.
    pub io_timeout: Duration,
    /// Longest one store operation may take — a `put` (HEAD, PUT, the comparing GET, every
    /// retry and backoff), a `get`, a `delete`, one page of a `list` — or `None` for no bound
    /// beyond `retry_budget` and the per-read/write timeouts. With a bound, every attempt's
    /// whole exchange (connect, send, the answer) is cut at what remains, so a server that
    /// accepts and never answers costs at most this long, after which a `put` spools. A
    /// hound sets it below the pool's `job_timeout`, so an outage ends in the spool rather
    /// than in the watchdog (docs/S3.md). Cost: a large upload on a link too slow to finish
    /// within it fails (and spools) instead of trickling on.
    pub operation_deadline: Option<Duration>,
    /// A drainer's claim older than this is taken to belong to a dead or frozen process and
    /// is returned to the queue. Should exceed the longest upload (attempts × I/O time): a
    /// claim taken back while its drainer still uploads costs a second upload of the same
    /// bytes (the first drainer then leaves the object, docs/S3.md "Erasure wins"). A hound
    /// uses twelve operation deadlines, between one and fifteen minutes.
    pub claim_stale_after: Duration,
    /// Most create-only uploads one [`ColdStore::put_batch`] runs at once, each on its own
    /// thread (values below 1 count as 1, above [`MAX_CONCURRENCY`] as that). 1 uploads one
    /// after the other on the caller's thread, starting no thread. Pool key
    /// `cold.s3_concurrency`. A spool drain uploads as many records at once.
    pub concurrency: usize,
    /// Largest envelope a spool drain reads: a record longer than this envelope under the
    /// longest key is moved to `quarantine/` unread (whoever can write the spool directory
    /// chooses a file's length; reading one whole would cost that much memory). A hound sets
    /// it to the largest envelope its pool's `max_evidence_bytes` produces.
    pub max_envelope_bytes: usize,
}

/// [`S3Tuning::max_envelope_bytes`] by default: the envelope of the largest evidence a pool
/// accepts (`pool.max_evidence_bytes` at most 256 MiB).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 257 << 20;

/// Largest accepted [`S3Tuning::concurrency`].
pub const MAX_CONCURRENCY: usize = 64;

impl Default for S3Tuning {
    /// 4 attempts, 200 ms base backoff capped at 5 s, 30 s budget, 5 s connect timeout,
    /// 30 s I/O timeout, no operation deadline, claims stale after 15 minutes, 16 uploads at
    /// once per batch, envelopes of up to [`DEFAULT_MAX_ENVELOPE_BYTES`] drained.
    fn default() -> Self {
        S3Tuning {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            retry_budget: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            operation_deadline: None,
            claim_stale_after: Duration::from_secs(15 * 60),
            concurrency: 16,
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
        }
    }
}

impl S3Tuning {
    fn policy(&self, deadline: Option<Instant>) -> Policy {
        Policy {
            attempts: self.attempts,
            base_delay: self.base_delay,
            max_delay: self.max_delay,
            budget: self.retry_budget,
            deadline,
        }
    }

    /// When an operation starting now must be over ([`S3Tuning::operation_deadline`]).
    fn deadline_from_now(&self) -> Option<Instant> {
        self.operation_deadline
            .and_then(|d| Instant::now().checked_add(d))
    }
}

/// Checks a spooled envelope before the drainer uploads it. The default is
/// [`default_spool_verifier`] (`envelope::verify`: length and SHA-256, no decompression).
pub type SpoolVerifier = fn(&[u8]) -> Result<(), ColdError>;

/// The default [`SpoolVerifier`]: [`houndpool_protocol::envelope::verify`].
pub fn default_spool_verifier(envelope: &[u8]) -> Result<(), ColdError> {
    houndpool_protocol::envelope::verify(envelope)
        .map(|_| ())
        .map_err(ColdError::from)
}

/// What one [`S3Store::drain_spool`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Envelopes uploaded under their key and removed from the spool.
    pub uploaded: usize,
    /// Records still in the spool afterwards (pending or claimed by another drainer).
    pub remaining: usize,
    /// Records that failed verification and were moved to `quarantine/` (never uploaded).
    pub quarantined: usize,
    /// Why draining stopped early, if the target became unavailable (the record being
    /// uploaded was put back).
    pub unavailable: Option<String>,
}

/// An S3 bucket reached over HTTP(S), with an optional local spool for outages.
///
/// Guarantees: `put` either stores the whole object (`Stored`), or durably spools it
/// (`Spooled`), or returns an error and leaves nothing new visible under the key; spooled
/// envelopes are uploaded only under their original key.
pub struct S3Store {
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    tuning: S3Tuning,
    spool: Option<Spool>,
    verify: SpoolVerifier,
    description: String,
    /// When `background_work` may drain the spool next (`None`: at once).
    next_drain: Option<Instant>,
    /// Pending records of the last listing not yet tried by `background_work`, oldest first
    /// (listed again once tried, or after a round that did not go through).
    backlog: Vec<spool::Entry>,
    /// Addresses handed in by [`S3Store::set_endpoints`] (or the system resolver).
    resolver: net::PinnedResolver,
    /// The private CA PEM the agent trusts, if any (see [`S3Store::set_endpoints`]).
    ca_pem: Option<String>,
}

/// The HTTP agent of a store: no proxy, no redirects, statuses classified by us, the given
/// resolver, and the built-in web roots, plus the certificates of `ca` when there is one.
fn build_agent(
    tuning: &S3Tuning,
    resolver: net::PinnedResolver,
    ca: Option<Vec<ureq::tls::Certificate<'static>>>,
) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(private) = ca {
        // ureq trusts either its built-in roots or a list: the list is the same Mozilla
        // roots (compiled in, no file is read under the sandbox) followed by the private CA.
        let mut certs: Vec<ureq::tls::Certificate<'static>> =
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()))
                .collect();
        certs.extend(private);
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        // Statuses are classified here (transient / refusal), not turned into errors.
        .http_status_as_error(false)
        // A redirect from S3 means a wrong region or endpoint; presigned URLs cannot
        // follow it anyway. The 3xx answer is returned and classified as a refusal.
        .max_redirects(0)
        // The hound's environment is empty; never pick a proxy up from variables.
        .proxy(None)
        .timeout_connect(Some(tuning.connect_timeout))
        .timeout_per_read(Some(tuning.io_timeout))
        .timeout_per_write(Some(tuning.io_timeout))
        .user_agent(concat!("houndpool/", env!("CARGO_PKG_VERSION")))
        // One kept-alive connection per concurrent upload, so a batch reuses them.
        .max_idle_connections(tuning.concurrency.clamp(2, MAX_CONCURRENCY))
        .max_idle_connections_per_host(tuning.concurrency.clamp(2, MAX_CONCURRENCY))
        .tls_config(tls.build())
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        resolver,
    )
}

impl fmt::Debug for S3Store {
    /// Never prints credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("target", &self.description)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &str, value: &str, allowed: &str) -> ColdError {
    ColdError::InvalidConfig {
        key: format!("cold.s3.{key}"),
        value: value.into(),
        allowed: allowed.into(),
    }
}

impl S3Store {
    /// Prepares a client for `target` with the default [`S3Tuning`] (no network traffic,
    /// no filesystem access yet).
    pub fn open(target: &S3Target) -> Result<Self, ColdError> {
        Self::open_with(target, S3Tuning::default())
    }

    /// Like [`S3Store::open`] with explicit tuning. Validates the endpoint (http or https
    /// URL with a host), bucket, region and credentials; the spool directory must be
    /// absolute. Errors are [`ColdError::InvalidConfig`] naming the field (secrets are
    /// never echoed).
    pub fn open_with(target: &S3Target, tuning: S3Tuning) -> Result<Self, ColdError> {
        let mut endpoint = url::Url::parse(&target.endpoint).map_err(|e| {
            invalid(
                "endpoint",
                &target.endpoint,
                &format!("an http:// or https:// URL ({e})"),
            )
        })?;
        if target.bucket.is_empty() {
            return Err(invalid("bucket", "", "a bucket name"));
        }
        if target.region.is_empty() {
            return Err(invalid("region", "", "a signing region, e.g. us-east-1"));
        }
        if target.access_key.is_empty() {
            return Err(invalid("access_key", "", "a non-empty access key id"));
        }
        if target.secret_key.is_empty() {
            return Err(invalid("secret_key", "", "a non-empty secret key"));
        }
        // Credentials in the URL would be logged by describe() and are ignored by rusty-s3.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(invalid(
                "endpoint",
                "<redacted>",
                "a URL without user:password (use access_key / secret_key)",
            ));
        }
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        let style = if target.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint.clone(),
            style,
            target.bucket.clone(),
            target.region.clone(),
        )
        .map_err(|e| {
            invalid(
                "endpoint",
                endpoint.as_str(),
                &format!(
                    "an http(s) URL with a host; virtual-host style needs a DNS name and a \
                     bucket name valid in one ({e:?})"
                ),
            )
        })?;
        let credentials = match &target.session_token {
            Some(token) => Credentials::new_with_token(
                target.access_key.clone(),
                target.secret_key.clone(),
                token.clone(),
            ),
            None => Credentials::new(target.access_key.clone(), target.secret_key.clone()),
        };
        let spool = target
            .spool_dir
            .as_deref()
            .map(|dir| Spool::new(dir, target.spool_limit_bytes))
            .transpose()?;
        let resolver = net::PinnedResolver::default();
        let agent = build_agent(&tuning, resolver.clone(), None);
        let description = format!(
            "s3 {}://{}{} bucket={} prefix={:?} region={} {} spool={}",
            endpoint.scheme(),
            endpoint.host_str().unwrap_or(""),
            endpoint.port().map(|p| format!(":{p}")).unwrap_or_default(),
            target.bucket,
            target.prefix,
            target.region,
            if target.path_style {
                "path-style"
            } else {
                "virtual-host"
            },
            match &spool {
                Some(s) => format!(
                    "{} (limit {} bytes)",
                    s.dir().display(),
                    target.spool_limit_bytes
                ),
                None => "none".into(),
            },
        );
        Ok(S3Store {
            bucket,
            credentials,
            agent,
            tuning,
            spool,
            verify: default_spool_verifier,
            description,
            next_drain: None,
            backlog: Vec::new(),
            resolver,
            ca_pem: None,
        })
    }

    /// Like [`S3Store::open_with`], for a process without a resolver (the hound): host
    /// names are never looked up, only the addresses given by [`S3Store::set_endpoints`]
    /// are used (until then a named endpoint is a transient "host not found").
    pub fn open_pinned(target: &S3Target, tuning: S3Tuning) -> Result<Self, ColdError> {
        let store = Self::open_with(target, tuning)?;
        let mut state = store
            .resolver
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner());
        state.addrs = Some((String::new(), Vec::new()));
        drop(state);
        Ok(store)
    }

    /// Uses `endpoints.addresses` for `endpoints.host` from now on (the host keeps being
    /// used for `Host`, SigV4 and TLS SNI and certificate checks), and trusts exactly the
    /// certificates of `endpoints.ca_pem` in addition to the built-in web roots when it is set.
    /// Changing the CA rebuilds the HTTP agent (open connections are dropped); changing only
    /// the addresses affects new connections. Fails with [`ColdError::InvalidConfig`]
    /// (`cold.ca_file`) on a PEM without certificates; the store is then unchanged.
    pub fn set_endpoints(&mut self, endpoints: &ColdEndpoints) -> Result<(), ColdError> {
        if endpoints.ca_pem != self.ca_pem {
            let certs = endpoints.ca_pem.as_deref().map(net::parse_ca).transpose()?;
            self.agent = build_agent(&self.tuning, self.resolver.clone(), certs);
            self.ca_pem = endpoints.ca_pem.clone();
        }
        let mut state = self
            .resolver
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner());
        state.addrs = Some((endpoints.host.clone(), endpoints.addresses.clone()));
        Ok(())
    }

    /// Replaces the check applied to spooled envelopes before upload (default
    /// [`default_spool_verifier`]). A record the verifier refuses is quarantined.
    pub fn set_spool_verifier(&mut self, verify: SpoolVerifier) {
        self.verify = verify;
    }

    /// The spool directory, if one is configured.
    pub fn spool_dir(&self) -> Option<&Path> {
        self.spool.as_ref().map(|s| s.dir())
    }

    /// Number of records in the spool (pending or being uploaded); 0 without a spool.
    pub fn spooled(&self) -> Result<usize, ColdError> {
        match &self.spool {
            Some(s) => s.count().map_err(|e| spool_io("spool count", s, e)),
            None => Ok(0),
        }
    }

    fn policy(&self, deadline: Option<Instant>) -> Policy {
        self.tuning.policy(deadline)
    }

    /// Reads a small answer body, for classification or to free the connection for reuse
    /// (never fails: an unreadable body just gives a less precise reason).
    fn error_body(resp: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
        resp.body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_vec()
            .unwrap_or_default()
    }

    /// One create-only PutObject, retried: `Ok(true)` when this request created the object
    /// (2xx), `Ok(false)` when the server refused because the key exists (412 to
    /// `If-None-Match: *`). A server that ignores the header answers 2xx and replaces; the
    /// HEAD check in [`S3Store::put_create_only`] covers those (with a race window).
    fn put_remote(
        &self,
        key: &str,
        envelope: &[u8],
        deadline: Option<Instant>,
    ) -> Result<bool, Fail> {
        // Content-MD5 makes the server refuse (400 BadDigest) a body damaged in transit.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(envelope));
        self.policy(deadline).run(|left| {
            let mut action = self.bucket.put_object(Some(&self.credentials), key);
            action.headers_mut().insert("content-md5", md5.as_str());
            let url = action.sign(PRESIGN_EXPIRY);
            let mut resp = self
                .agent
                .put(url.as_str())
                .config()
                .timeout_global(left)
                .build()
                .header("content-md5", md5.as_str())
                // Create-only (RFC 9110 13.1.2): S3 answers 412 if the key exists.
                .header("if-none-match", "*")
                .send(envelope)
                .map_err(|e| classify_ureq("put", e))?;
            let status = resp.status().as_u16();
            // Read the (small) body either way so the connection can be reused.
            let body = Self::error_body(&mut resp);
            if resp.status().is_success() {
                return Ok(true);
            }
            match status {
                412 => Ok(false),
                // AWS: a concurrent conditional write of the same key is in progress.
                409 => Err(Fail::Transient(format!(
                    "put: HTTP 409: concurrent conditional write of {key}"
                ))),
                _ => Err(classify_status("put", status, &body)),
            }
        })
    }

    /// Whether the object under `key` holds exactly `envelope` (GET bounded by its length).
    fn remote_equals(
        &self,
        key: &str,
        envelope: &[u8],
        deadline: Option<Instant>,
    ) -> Result<bool, Fail> {
        match self.get_remote(key, envelope.len(), deadline) {
            Ok(existing) => Ok(existing == envelope),
            Err(Fail::Final(ColdError::ObjectTooLarge { .. })) => Ok(false),
            // Deleted between the refusal and the GET: the caller may try again.
            Err(Fail::Final(ColdError::NotFound { .. })) => Err(Fail::Transient(format!(
                "put: {key} vanished while being compared"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Create-only upload: HEAD, then a conditional PUT. An existing object with the same
    /// bytes is success (idempotent retry), with other bytes [`ColdError::AlreadyExists`];
    /// the stored object is never replaced by a server that honours `If-None-Match`. Cost:
    /// one HEAD more than a plain PUT, and one GET when the key is taken.
    ///
    /// For a [`KeyOrigin::PoolId`] key the HEAD is skipped: only this job's attempts write
    /// that name, so the conditional PUT alone decides (412, then the same comparison, on a
    /// server that honours it; a replaced earlier attempt of the same evidence on one that
    /// does not). Half the requests, and half the latency, per upload.
    fn put_create_only(
        &self,
        key: &str,
        envelope: &[u8],
        origin: KeyOrigin,
        deadline: Option<Instant>,
    ) -> Result<(), Fail> {
        let check_first = origin != KeyOrigin::PoolId;
        let created = if check_first && self.head_remote(key, deadline)? {
            false
        } else {
            self.put_remote(key, envelope, deadline)?
        };
        if created || self.remote_equals(key, envelope, deadline)? {
            Ok(())
        } else {
            Err(Fail::Final(ColdError::AlreadyExists { key: key.into() }))
        }
    }

    /// One GetObject, retried, refusing objects above `max_len` bytes.
    fn get_remote(
        &self,
        key: &str,
        max_len: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, Fail> {
        let max = max_len as u64;
        self.policy(deadline).run(|left| {
            let url = self
                .bucket
                .get_object(Some(&self.credentials), key)
                .sign(PRESIGN_EXPIRY);
            let mut resp = self
                .agent
                .get(url.as_str())
                .config()
                .timeout_global(left)
                .build()
                .call()
                .map_err(|e| classify_ureq("get", e))?;
            let status = resp.status().as_u16();
            if status == 404 {
                let body = Self::error_body(&mut resp);
                return Err(not_found_or_rejected("get", key, &body));
            }
            if !resp.status().is_success() {
                return Err(classify_status("get", status, &Self::error_body(&mut resp)));
            }
            if let Some(len) = resp.body().content_length() {
                if len > max {
                    return Err(Fail::Final(ColdError::ObjectTooLarge {
                        key: key.into(),
                        len,
                        max,
                    }));
                }
            }
            match resp.body_mut().with_config().limit(max).read_to_vec() {
                Ok(v) => Ok(v),
                // No (or a lying) Content-Length: the size is only known to exceed `max`.
                Err(ureq::Error::BodyExceedsLimit(_)) => {
                    Err(Fail::Final(ColdError::ObjectTooLarge {
                        key: key.into(),
                        len: max.saturating_add(1),
                        max,
                    }))
                }
                Err(e) => Err(classify_ureq("get", e)),
            }
        })
    }

    /// HeadObject, retried: whether the object exists.
    fn head_remote(&self, key: &str, deadline: Option<Instant>) -> Result<bool, Fail> {
        self.policy(deadline).run(|left| {
            let url = self
                .bucket
                .head_object(Some(&self.credentials), key)
                .sign(PRESIGN_EXPIRY);
            let resp = self
                .agent
                .head(url.as_str())
                .config()
                .timeout_global(left)
                .build()
                .call()
                .map_err(|e| classify_ureq("head", e))?;
            match resp.status().as_u16() {
                200..=299 => Ok(true),
                // HEAD has no body, so a missing bucket looks like a missing key here; the
                // DELETE that follows tells them apart.
                404 => Ok(false),
                s => Err(classify_status("head", s, b"")),
            }
        })
    }

    /// DeleteObject, retried. A missing key is success (S3 answers 204 either way).
    fn delete_remote(&self, key: &str, deadline: Option<Instant>) -> Result<(), Fail> {
        self.policy(deadline).run(|left| {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), key)
                .sign(PRESIGN_EXPIRY);
            let mut resp = self
                .agent
                .delete(url.as_str())
                .config()
                .timeout_global(left)
                .build()
                .call()
                .map_err(|e| classify_ureq("delete", e))?;
            let status = resp.status().as_u16();
            let body = Self::error_body(&mut resp);
            if resp.status().is_success() {
                return Ok(());
            }
            if status == 404 {
                return match not_found_or_rejected("delete", key, &body) {
                    Fail::Final(ColdError::NotFound { .. }) => Ok(()),
                    other => Err(other),
                };
            }
            Err(classify_status("delete", status, &body))
        })
    }

    /// ListObjectsV2 over every page, each page retried.
    fn list_remote(&self, prefix: &str) -> Result<Vec<String>, Fail> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..LIST_MAX_PAGES {
            let page = self.policy(self.tuning.deadline_from_now()).run(|left| {
                let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
                if !prefix.is_empty() {
                    action.with_prefix(prefix);
                }
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(PRESIGN_EXPIRY);
                let mut resp = self
                    .agent
                    .get(url.as_str())
                    .config()
                    .timeout_global(left)
                    .build()
                    .call()
                    .map_err(|e| classify_ureq("list", e))?;
                let status = resp.status().as_u16();
                if !resp.status().is_success() {
                    return Err(classify_status(
                        "list",
                        status,
                        &Self::error_body(&mut resp),
                    ));
                }
                let body = match resp
                    .body_mut()
                    .with_config()
                    .limit(LIST_PAGE_LIMIT)
                    .read_to_string()
                {
                    Ok(b) => b,
                    Err(ureq::Error::BodyExceedsLimit(_)) => {
                        return Err(Fail::Final(ColdError::ColdRejected {
                            op: "list",
                            status,
                            reason: format!("listing page larger than {LIST_PAGE_LIMIT} bytes"),
                        }))
                    }
                    Err(e) => return Err(classify_ureq("list", e)),
                };
                // A garbled page is most likely a transport hiccup: retried like one.
                rusty_s3::actions::ListObjectsV2::parse_response(&body).map_err(|e| {
                    Fail::Transient(format!("list: malformed ListObjectsV2 page: {e}"))
                })
            })?;
            keys.extend(
                page.contents
                    .into_iter()
                    .map(|c| c.key)
                    .filter(|k| k.starts_with(prefix)),
            );
            match page.next_continuation_token {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(Fail::Final(ColdError::ColdRejected {
                        op: "list",
                        status: 200,
                        reason: "the server repeated a continuation token".into(),
                    }))
                }
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
        Err(Fail::Final(ColdError::ColdRejected {
            op: "list",
            status: 200,
            reason: format!("more than {LIST_MAX_PAGES} listing pages"),
        }))
    }

    /// Uploads up to `max_items` spooled envelopes, oldest first, each under the key it was
    /// spooled for, and removes them from the spool once the target acknowledged them.
    ///
    /// Each record is first claimed by an atomic rename (so concurrent drainers never upload
    /// the same record twice at once), checked with the [`SpoolVerifier`] (a refused record is
    /// moved to `quarantine/` and counted, never uploaded), then uploaded. On a transient
    /// failure the record is put back and draining stops ([`DrainReport::unavailable`]); on a
    /// refusal (e.g. 403) it is put back and the refusal returned. Claims older than
    /// [`S3Tuning::claim_stale_after`] (their drainer died) are returned to the queue first.
    /// If a record is erased while it is being uploaded, the uploaded object is deleted again.
    /// Each record's upload is bounded by [`S3Tuning::operation_deadline`]. Up to
    /// [`S3Tuning::concurrency`] records are uploaded at once (module `drain`); whatever ends
    /// the call, every record it claimed is uploaded, quarantined or put back by then.
    pub fn drain_spool(&mut self, max_items: usize) -> Result<DrainReport, ColdError> {
        let Some(spool) = self.spool.clone() else {
            return Ok(DrainReport::default());
        };
        let io = |op: &'static str, e| spool_io(op, &spool, e);
        spool
            .reclaim_stale(self.tuning.claim_stale_after)
            .map_err(|e| io("spool reclaim", e))?;
        let entries = spool.pending().map_err(|e| io("spool list", e))?;
        self.drain_round(&spool, &entries, max_items, None, None).0
    }
}

/// What the spool directory `dir` holds now (records pending and claimed, quarantined files,
/// and their bytes), read from the directory alone: usable by a process that does not drain
/// it (the supervisor's metrics). A directory not created yet holds nothing. Cost: one
/// listing of the directory and of its `quarantine/`, and a `stat` per file.
pub fn spool_census(dir: &Path) -> std::io::Result<SpoolCensus> {
    match Spool::new(&dir.to_string_lossy(), 0) {
        Ok(spool) => spool.census(),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

fn spool_io(op: &'static str, spool: &Spool, source: std::io::Error) -> ColdError {
    ColdError::ColdIo {
        op,
        key: spool.dir().display().to_string(),
        source,
    }
}

/// A 404 is a missing key unless S3 says the bucket is missing (a configuration error).
fn not_found_or_rejected(op: &'static str, key: &str, body: &[u8]) -> Fail {
    match s3_error(body) {
        (Some(code), msg) if code == "NoSuchBucket" => Fail::Final(ColdError::ColdRejected {
            op,
            status: 404,
            reason: match msg {
                Some(m) => format!("{code}: {m}"),
                None => code,
            },
        }),
        _ => Fail::Final(ColdError::NotFound { key: key.into() }),
    }
}

/// The error a caller sees when retries are exhausted (no spooling involved).
fn fail_into(f: Fail) -> ColdError {
    match f {
        Fail::Transient(reason) => ColdError::ColdUnavailable { reason },
        Fail::Final(e) => e,
    }
}

impl ColdStore for S3Store {
    /// Create-only upload; after transient failures the envelope is spooled (if possible).
    ///
    /// A record already spooled (or being uploaded by a drainer) for the key counts as the
    /// stored object: the same bytes are an idempotent `Spooled`, other bytes
    /// [`ColdError::AlreadyExists`]. So a direct put never races a drainer uploading an
    /// older record of the same key: both are create-only, and whichever lands first wins
    /// while the other is refused (or found identical).
    fn put(&mut self, key: &str, envelope: &[u8]) -> Result<PutOutcome, ColdError> {
        self.put_shared(key, envelope, KeyOrigin::SubmitterId, &Mutex::new(()))
    }

    /// Runs up to [`S3Tuning::concurrency`] [`ColdStore::put`]s at once: that many scoped
    /// threads (the caller's among them) take the items in turn and each does exactly what
    /// `put` does for its item (HEAD + conditional PUT, the HEAD skipped for a
    /// [`KeyOrigin::PoolId`] key; retries, spooling), over the agent's
    /// shared keep-alive connections. Returns when every item has its result, in item order.
    /// Spool writes are serialised (its size limit is checked per write). A thread that cannot
    /// be started (the sandbox's limits) only lowers the concurrency; with none the caller
    /// uploads everything itself. Cost: one thread start per extra worker per batch.
    fn put_batch(&mut self, items: &[PutItem<'_>]) -> Vec<Result<PutOutcome, ColdError>> {
        self.put_concurrently(items)
    }

    /// The spooled record first (newest version, and readable while the target is down),
    /// then GetObject. 404 `NoSuchKey` → `NotFound`; `NoSuchBucket` → `ColdRejected`.
    fn get(&mut self, key: &str, max_len: usize) -> Result<Vec<u8>, ColdError> {
        validate_key(key)?;
        if let Some(spool) = &self.spool {
            if let Some(envelope) = spool.read(key, max_len)? {
                return Ok(envelope);
            }
        }
        self.get_remote(key, max_len, self.tuning.deadline_from_now())
            .map_err(fail_into)
    }

    /// Removes every spooled record of the key, then HEAD + DELETE at the target. Returns
    /// whether the key existed in the spool or (per the HEAD just before the DELETE) at the
    /// target.
    fn delete(&mut self, key: &str) -> Result<bool, ColdError> {
        validate_key(key)?;
        let spooled = match &self.spool {
            Some(spool) => spool
                .remove_all(key)
                .map_err(|e| spool_io("spool remove", spool, e))?,
            None => false,
        };
        let deadline = self.tuning.deadline_from_now();
        let remote = self.head_remote(key, deadline).map_err(fail_into)?;
        self.delete_remote(key, deadline).map_err(fail_into)?;
        Ok(spooled || remote)
    }

    /// Every key under `prefix` at the target (all pages) plus spooled keys, sorted, without
    /// duplicates.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ColdError> {
        let mut keys: std::collections::BTreeSet<String> = self
            .list_remote(prefix)
            .map_err(fail_into)?
            .into_iter()
            .collect();
        if let Some(spool) = &self.spool {
            keys.extend(
                spool
                    .keys(prefix)
                    .map_err(|e| spool_io("spool list", spool, e))?,
            );
        }
        Ok(keys.into_iter().collect())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    /// [`S3Tuning::concurrency`] (clamped to 1..=[`MAX_CONCURRENCY`]): one round of uploads.
    fn max_batch(&self) -> usize {
        self.tuning.concurrency.clamp(1, MAX_CONCURRENCY)
    }

    fn set_endpoints(&mut self, endpoints: &ColdEndpoints) -> Result<(), ColdError> {
        S3Store::set_endpoints(self, endpoints)
    }

    /// One round of the spool's drain (module `drain`), so that an idle hound uploads what
    /// an outage left behind:
    /// - up to [`S3Tuning::concurrency`] uploads at once, up to [`BACKGROUND_DRAIN_ITEMS`]
    ///   records a round;
    /// - no record is claimed after [`BACKGROUND_ROUND`] (nor after half the
    ///   [`S3Tuning::operation_deadline`]), and with an operation deadline every upload of
    ///   the round ends within half of it. A job that arrives meanwhile waits for the round's
    ///   running uploads (at most half the deadline), so the two together stay within the
    ///   pool's `job_timeout` (the hound's deadline is half of it);
    /// - returns `true` when the round made progress and records remain: the owner calls
    ///   again as soon as it has no job of its own, and a backlog drains at the target's
    ///   speed. Otherwise (an empty spool, the target still down, nothing this process could
    ///   claim) the next round waits [`BACKGROUND_DRAIN_PERIOD`].
    ///
    /// The sorted listing is kept between rounds and taken again once every record in it was
    /// tried, or after a round that did not go through (so a record put back is retried in
    /// age order).
    fn background_work(&mut self) -> Result<bool, ColdError> {
        let Some(spool) = self.spool.clone() else {
            return Ok(false);
        };
        let start = Instant::now();
        if self.next_drain.is_some_and(|t| start < t) {
            return Ok(false);
        }
        self.next_drain = start.checked_add(BACKGROUND_DRAIN_PERIOD);
        if self.backlog.is_empty() {
            let io = |op: &'static str, e| spool_io(op, &spool, e);
            spool
                .reclaim_stale(self.tuning.claim_stale_after)
                .map_err(|e| io("spool reclaim", e))?;
            self.backlog = spool.pending().map_err(|e| io("spool list", e))?;
            if self.backlog.is_empty() {
                return Ok(false);
            }
        }
        let half = self.tuning.operation_deadline.map(|d| d / 2);
        let upload_until = half.and_then(|h| start.checked_add(h));
        let claim_until =
            start.checked_add(half.map_or(BACKGROUND_ROUND, |h| h.min(BACKGROUND_ROUND)));
        let entries = std::mem::take(&mut self.backlog);
        let (report, tried) = self.drain_round(
            &spool,
            &entries,
            BACKGROUND_DRAIN_ITEMS,
            claim_until,
            upload_until,
        );
        self.backlog = entries;
        let report = match report {
            Ok(r) if r.unavailable.is_none() => r,
            other => {
                self.backlog.clear();
                return other.map(|_| false);
            }
        };
        self.backlog.drain(..tried);
        if report.uploaded > 0 || report.quarantined > 0 {
            tracing::info!(
                uploaded = report.uploaded,
                quarantined = report.quarantined,
                remaining = report.remaining,
                "spool drained"
            );
        }
        let more = report.remaining > 0 && report.uploaded + report.quarantined > 0;
        if more {
            self.next_drain = None;
        }
        Ok(more)
    }
}

/// Most spooled envelopes one idle-time round uploads ([`BACKGROUND_ROUND`] ends it first
/// unless the target is fast).
pub const BACKGROUND_DRAIN_ITEMS: usize = 1024;
/// How long one idle-time round claims records (then its running uploads finish).
pub const BACKGROUND_ROUND: std::time::Duration = std::time::Duration::from_millis(250);
/// Least time between two idle-time rounds when the last one did not make progress.
pub const BACKGROUND_DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> S3Target {
        S3Target {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            prefix: "ev/".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: "AK".into(),
            secret_key: "very-secret".into(),
            session_token: None,
            spool_dir: None,
            spool_limit_bytes: 0,
        }
    }

    #[test]
    fn open_validates_configuration() {
        assert!(S3Store::open(&target()).is_ok());
        type Mutation = fn(&mut S3Target);
        let cases: Vec<(Mutation, &str)> = vec![
            (|t| t.endpoint = "not a url".into(), "cold.s3.endpoint"),
            (|t| t.endpoint = "ftp://h/".into(), "cold.s3.endpoint"),
            (|t| t.endpoint = "http://u:p@h/".into(), "cold.s3.endpoint"),
            (|t| t.path_style = false, "cold.s3.endpoint"), // IP host + virtual-host style
            (|t| t.bucket.clear(), "cold.s3.bucket"),
            (|t| t.region.clear(), "cold.s3.region"),
            (|t| t.access_key.clear(), "cold.s3.access_key"),
            (|t| t.secret_key.clear(), "cold.s3.secret_key"),
            (
                |t| t.spool_dir = Some("relative".into()),
                "cold.s3.spool_dir",
            ),
        ];
        for (mutate, want) in cases {
            let mut t = target();
            mutate(&mut t);
            match S3Store::open(&t) {
                Err(ColdError::InvalidConfig { key, value, .. }) => {
                    assert_eq!(key, want);
                    assert!(!value.contains("u:p"), "credentials echoed: {value}");
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn describe_and_debug_never_show_secrets() {
        let mut t = target();
        t.session_token = Some("tok-secret".into());
        let s = S3Store::open(&t).unwrap();
        for text in [s.describe(), format!("{s:?}")] {
            assert!(
                !text.contains("very-secret") && !text.contains("tok-secret"),
                "{text}"
            );
            assert!(text.contains("bucket=b"), "{text}");
        }
    }

    #[test]
    fn invalid_keys_are_refused_before_any_io() {
        let mut s = S3Store::open(&target()).unwrap();
        assert!(matches!(
            s.put("../x", b""),
            Err(ColdError::InvalidKey { .. })
        ));
        assert!(matches!(s.get("", 1), Err(ColdError::InvalidKey { .. })));
        assert!(matches!(s.delete("/a"), Err(ColdError::InvalidKey { .. })));
    }

    #[test]
    fn default_tuning_is_bounded() {
        let t = S3Tuning::default();
        assert!(t.attempts >= 2);
        assert!(t.retry_budget <= Duration::from_secs(60));
        assert!(t.claim_stale_after > t.retry_budget + t.io_timeout * t.attempts);
    }

    #[test]
    fn not_found_distinguishes_missing_bucket() {
        let body = b"<Error><Code>NoSuchBucket</Code><Message>no</Message></Error>";
        assert!(matches!(
            not_found_or_rejected("get", "k", body),
            Fail::Final(ColdError::ColdRejected { status: 404, .. })
        ));
        assert!(matches!(
            not_found_or_rejected("get", "k", b"<Error><Code>NoSuchKey</Code></Error>"),
            Fail::Final(ColdError::NotFound { .. })
        ));
        assert!(matches!(
            not_found_or_rejected("get", "k", b""),
            Fail::Final(ColdError::NotFound { .. })
        ));
    }
}
