//! Message bodies carried in frames. Control messages ([`Message`], kinds 1–5) flow between
//! supervisor and hound over the per-hound socketpair; daemon messages ([`DaemonMessage`],
//! kinds 16–23) between `houndd` and its clients over the daemon's Unix socket.
//!
//! Each message's frame body is the bincode encoding (see [`crate::codec`] and
//! docs/PROTOCOL.md, Part 1) of the struct its variant carries: at most [`MAX_CONTROL_BODY`] bytes
//! for control messages; for daemon messages see [`DaemonMessage::encode_frame`] and
//! docs/PROTOCOL.md, Part 4. Each channel refuses the other channel's kinds.

use crate::codec;
use crate::frame::{parse_frame, write_frame, FrameHeader};
use crate::job::{JobKind, Severity};
use crate::ProtocolError;
use serde::{Deserialize, Serialize};

/// Limit on any control message body, in bytes.
pub const MAX_CONTROL_BODY: u32 = 64 * 1024;

/// Deserializes a sequence without reserving space for the length it announces.
///
/// serde's own `Vec` reserves up to 1 MiB for an announced length before reading any element;
/// a peer can announce 2^40 elements in an 8-byte body. Growing as elements are actually
/// decoded keeps memory proportional to the body, which is at most [`MAX_CONTROL_BODY`].
/// Every `Vec` field of a message uses this.
fn vec_without_prealloc<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Growing<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Growing<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Growing(std::marker::PhantomData))
}

/// The kind field of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageKind {
    /// supervisor → hound: the slot a (possibly prestarted) hound now serves ([`Hello`]).
    Hello = 1,
    /// hound → supervisor: sandbox applied, ready for jobs.
    Ready = 2,
    /// supervisor → hound: finish what is in the ring, then exit 0.
    Shutdown = 3,
    /// hound → supervisor: last words before exiting non-zero.
    Fatal = 4,
    /// supervisor → hound: the pool-wide settings the hound confines itself with, queued
    /// before the hound is started ([`Setup`]).
    Setup = 5,
    /// supervisor → hound: resolved addresses of the S3 endpoint and the private CA
    /// ([`ColdEndpoints`]); after Hello, and again whenever re-resolution changes them.
    ColdEndpoints = 6,
    /// client → houndd: run a job ([`Submit`]).
    Submit = 16,
    /// houndd → client: accepted or refused ([`SubmitReply`]).
    SubmitReply = 17,
    /// houndd → client: the outcome of an accepted job ([`JobOutcome`]).
    Outcome = 18,
    /// client → houndd: ask for counters ([`StatsRequest`]).
    StatsRequest = 19,
    /// houndd → client: counters ([`StatsReply`]).
    Stats = 20,
    /// houndd → client: last frame before the daemon closes the connection ([`ErrorNotice`]).
    Error = 21,
    /// client → houndd: cancel a job this connection submitted ([`Cancel`]).
    Cancel = 22,
    /// houndd → client: what the cancel did ([`CancelReply`]).
    CancelReply = 23,
}

impl MessageKind {
    /// Maps a wire value to a kind; unknown values are `UnknownMessageKind`.
    pub fn from_u16(value: u16) -> Result<Self, ProtocolError> {
        match value {
            1 => Ok(MessageKind::Hello),
            2 => Ok(MessageKind::Ready),
            3 => Ok(MessageKind::Shutdown),
            4 => Ok(MessageKind::Fatal),
            5 => Ok(MessageKind::Setup),
            6 => Ok(MessageKind::ColdEndpoints),
            16 => Ok(MessageKind::Submit),
            17 => Ok(MessageKind::SubmitReply),
            18 => Ok(MessageKind::Outcome),
            19 => Ok(MessageKind::StatsRequest),
            20 => Ok(MessageKind::Stats),
            21 => Ok(MessageKind::Error),
            22 => Ok(MessageKind::Cancel),
            23 => Ok(MessageKind::CancelReply),
            kind => Err(ProtocolError::UnknownMessageKind { kind }),
        }
    }
    /// Stable lowercase name for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Hello => "hello",
            MessageKind::Ready => "ready",
            MessageKind::Shutdown => "shutdown",
            MessageKind::Fatal => "fatal",
            MessageKind::Setup => "setup",
            MessageKind::ColdEndpoints => "cold_endpoints",
            MessageKind::Submit => "submit",
            MessageKind::SubmitReply => "submit_reply",
            MessageKind::Outcome => "outcome",
            MessageKind::StatsRequest => "stats_request",
            MessageKind::Stats => "stats",
            MessageKind::Error => "error",
            MessageKind::Cancel => "cancel",
            MessageKind::CancelReply => "cancel_reply",
        }
    }
    /// Whether this kind belongs to the daemon socket (16–23) rather than the control channel.
    pub fn is_daemon(self) -> bool {
        (self as u16) >= 16
    }
}

/// The frame body must be exactly what the header announces.
fn check_body_len(header: &FrameHeader, body: &[u8]) -> Result<(), ProtocolError> {
    let announced = header.body_len as usize;
    match body.len().cmp(&announced) {
        std::cmp::Ordering::Less => Err(ProtocolError::Truncated {
            needed: announced,
            available: body.len(),
        }),
        std::cmp::Ordering::Greater => Err(ProtocolError::TrailingBytes {
            expected: announced,
            found: body.len(),
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The error for a frame of the other channel's kind.
fn wrong_channel(kind: MessageKind, channel: &str) -> ProtocolError {
    ProtocolError::MalformedBody {
        kind: kind.name(),
        reason: format!("not a message of the {channel}"),
    }
}

/// A decoded message of any kind.
// `Setup` is ~300 bytes and the others are small, but the variant types are part of the fixed
// API and messages are rare (a handshake per hound), so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Ready`].
    Ready(Ready),
    /// See [`Shutdown`].
    Shutdown(Shutdown),
    /// See [`Fatal`].
    Fatal(Fatal),
    /// See [`Setup`].
    Setup(Setup),
    /// See [`ColdEndpoints`].
    ColdEndpoints(ColdEndpoints),
}

impl Message {
    /// The frame kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello(_) => MessageKind::Hello,
            Message::Ready(_) => MessageKind::Ready,
            Message::Shutdown(_) => MessageKind::Shutdown,
            Message::Fatal(_) => MessageKind::Fatal,
            Message::Setup(_) => MessageKind::Setup,
            Message::ColdEndpoints(_) => MessageKind::ColdEndpoints,
        }
    }
    /// Appends this message as one complete frame to `out`.
    ///
    /// Fails with [`ProtocolError::EncodeFailed`] if the body would exceed
    /// [`MAX_CONTROL_BODY`]; `out` is then left untouched.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let kind = self.kind();
        let (name, limit) = (kind.name(), u64::from(MAX_CONTROL_BODY));
        let body = match self {
            Message::Hello(m) => codec::encode(name, m, limit)?,
            Message::Ready(m) => codec::encode(name, m, limit)?,
            Message::Shutdown(m) => codec::encode(name, m, limit)?,
            Message::Fatal(m) => codec::encode(name, m, limit)?,
            Message::Setup(m) => codec::encode(name, m, limit)?,
            Message::ColdEndpoints(m) => codec::encode(name, m, limit)?,
        };
        write_frame(kind, &body, out)
    }
    /// Decodes the body of a frame whose header was already validated.
    ///
    /// `body` must be exactly `header.body_len` bytes ([`ProtocolError::Truncated`] if
    /// shorter, [`ProtocolError::TrailingBytes`] if longer) and must decode as the struct of
    /// `header.kind` within [`MAX_CONTROL_BODY`] ([`ProtocolError::MalformedBody`] otherwise).
    /// Field values are not checked against policy (e.g. `Hello::protocol_version`): that is
    /// the handshake's job. A daemon kind (16–23) is [`ProtocolError::MalformedBody`].
    pub fn decode(header: &FrameHeader, body: &[u8]) -> Result<Self, ProtocolError> {
        check_body_len(header, body)?;
        let (name, limit) = (header.kind.name(), u64::from(MAX_CONTROL_BODY));
        Ok(match header.kind {
            MessageKind::Hello => Message::Hello(codec::decode(name, body, limit)?),
            MessageKind::Ready => Message::Ready(codec::decode(name, body, limit)?),
            MessageKind::Shutdown => Message::Shutdown(codec::decode(name, body, limit)?),
            MessageKind::Fatal => Message::Fatal(codec::decode(name, body, limit)?),
            MessageKind::Setup => Message::Setup(codec::decode(name, body, limit)?),
            MessageKind::ColdEndpoints => Message::ColdEndpoints(codec::decode(name, body, limit)?),
            MessageKind::Submit
            | MessageKind::SubmitReply
            | MessageKind::Outcome
            | MessageKind::StatsRequest
            | MessageKind::Stats
            | MessageKind::Error
            | MessageKind::Cancel
            | MessageKind::CancelReply => {
                return Err(wrong_channel(header.kind, "control channel"))
            }
        })
    }
    /// Parses one whole datagram (header + body) into a message.
    ///
    /// The datagram must hold exactly one frame with a body of at most [`MAX_CONTROL_BODY`]
    /// bytes; errors are those of [`crate::frame::parse_frame`] and [`Message::decode`].
    pub fn from_datagram(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (header, body) = parse_frame(bytes, MAX_CONTROL_BODY)?;
        Message::decode(&header, body)
    }
}

/// The pool-wide settings a hound confines itself with: the first control message, written
/// into the supervisor's end of the socketpair *before* the hound is started, so the hound reads
/// it at once and confines itself before it waits for anything (a prestarted spare waits for
/// its [`Hello`] already confined). Nothing in it depends on the slot the hound will serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Resource and size limits.
    pub limits: HoundLimits,
    /// Where evacuated evidence goes.
    pub cold: ColdTarget,
    /// What the hound must do to itself.
    pub sandbox: SandboxPolicy,
    /// Spin/sleep tuning of the job loop.
    pub tuning: HoundTuning,
}

/// Sent by the supervisor when a confined hound (fresh or the prestarted spare) takes a slot:
/// only the slot-specific details. The hound answers [`Ready`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Identifies the pool (for logs and cgroup names).
    pub pool_id: [u8; 16],
    /// Slot number of this hound in the pool.
    pub hound_id: u32,
    /// Spawn generation (increments each time the slot is refilled).
    pub generation: u64,
}

/// Limits a hound enforces and applies to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoundLimits {
    /// Largest evidence payload accepted.
    pub max_evidence_bytes: u32,
    /// Largest decoded output (restore / decode) produced.
    pub max_output_bytes: u32,
    /// Address-space budget (RLIMIT_AS), bytes; 0 = leave as is.
    pub memory_budget_bytes: u64,
    /// RLIMIT_NOFILE after sandboxing.
    pub max_open_files: u32,
    /// RLIMIT_NPROC after sandboxing (0 = leave as is). The kernel ignores it for uid 0, so a
    /// hound running as root reports it as not applied (seccomp denies clone/fork anyway).
    pub max_processes: u32,
    /// gzip level 0..=9 used by Encode / Evacuate.
    pub gzip_level: u8,
}

/// Job-loop tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoundTuning {
    /// How long the hound spins on an empty request ring before sleeping, microseconds.
    pub spin_us: u32,
    /// Longest single sleep before re-checking the ring and the control channel, milliseconds.
    pub idle_poll_ms: u32,
    /// Most S3 uploads the hound runs at once, each on its own thread (`cold.s3_concurrency`;
    /// 1: one at a time, no thread). Ignored by other cold targets.
    pub s3_concurrency: u16,
}

/// Cold storage target as the hound needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColdTarget {
    /// No cold storage: Evacuate / Restore / Erase fail with `ColdStorageUnavailable`.
    None,
    /// A directory on the local filesystem.
    Filesystem {
        /// Root directory (absolute).
        root: String,
        /// Key prefix (may contain '/').
        prefix: String,
    },
    /// An S3-compatible object store.
    S3(S3Target),
}

/// S3-compatible target. Credentials travel over the private socketpair because the hound's
/// environment is empty. Its `Debug` never shows the secret key or the session token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Target {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// Signing region.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    pub path_style: bool,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Optional session token.
    pub session_token: Option<String>,
    /// Local spool directory for envelopes when the target is unreachable (absolute), if any.
    pub spool_dir: Option<String>,
    /// Largest total size of the spool, bytes.
    pub spool_limit_bytes: u64,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<empty>" };
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &redacted(!self.secret_key.is_empty()))
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("spool_dir", &self.spool_dir)
            .field("spool_limit_bytes", &self.spool_limit_bytes)
            .finish_non_exhaustive()
    }
}

/// The sandbox layers, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layer {
    /// Close every fd but the channel, regions and doorbells.
    FdHygiene,
    /// Empty environment.
    Environment,
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// PR_SET_PDEATHSIG + parent check.
    DeathSignal,
    /// core 0, nofile, address space, file size, nproc (where the kernel applies it).
    Rlimits,
    /// user / net / ipc / mount namespaces where permitted.
    Namespaces,
    /// Landlock filesystem (and TCP port) rules.
    Landlock,
    /// seccomp-bpf allow-list.
    Seccomp,
    /// Per-hound cgroup (applied by the supervisor, reported with the others).
    Cgroup,
    /// No capabilities: effective, permitted, inheritable and ambient sets emptied, bounding
    /// set cleared where the hound holds CAP_SETPCAP. Applied after namespaces, before
    /// Landlock (declared last to keep the wire tags of the older layers).
    Capabilities,
}

impl Layer {
    /// All layers in application order.
    pub const ALL: [Layer; 10] = [
        Layer::FdHygiene,
        Layer::Environment,
        Layer::NoNewPrivs,
        Layer::DeathSignal,
        Layer::Rlimits,
        Layer::Namespaces,
        Layer::Capabilities,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::Cgroup,
    ];
    /// Stable snake_case name used in reports, config keys and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Layer::FdHygiene => "fd_hygiene",
            Layer::Environment => "environment",
            Layer::NoNewPrivs => "no_new_privs",
            Layer::DeathSignal => "death_signal",
            Layer::Rlimits => "rlimits",
            Layer::Namespaces => "namespaces",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Cgroup => "cgroup",
            Layer::Capabilities => "capabilities",
        }
    }
}

/// How much a layer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LayerMode {
    /// Start-up fails if the layer cannot be enforced.
    Required,
    /// Enforce if possible, report why not otherwise.
    #[default]
    BestEffort,
    /// Do not apply.
    Off,
}

/// Per-layer modes. Layers not listed are `BestEffort`; [`SandboxPolicy::safe_default`] lists
/// every layer (the pool's default), `SandboxPolicy::default()` lists none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SandboxPolicy {
    /// (layer, mode) pairs.
    #[serde(deserialize_with = "vec_without_prealloc")]
    pub layers: Vec<(Layer, LayerMode)>,
}

impl SandboxPolicy {
    /// The mode configured for `layer`.
    pub fn mode(&self, layer: Layer) -> LayerMode {
        self.layers
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, m)| *m)
            .unwrap_or_default()
    }

    /// The safe default: `no_new_privs`, `capabilities`, `landlock` and `seccomp` are
    /// `Required`, and so is `namespaces` when `supervisor_is_root` (an unprivileged process in
    /// a container is usually refused `unshare` by the runtime's seccomp profile, so there it
    /// stays `BestEffort`); every other layer is `BestEffort`. Every layer is listed.
    pub fn safe_default(supervisor_is_root: bool) -> Self {
        let required = |layer: Layer| match layer {
            Layer::NoNewPrivs | Layer::Capabilities | Layer::Landlock | Layer::Seccomp => true,
            Layer::Namespaces => supervisor_is_root,
            _ => false,
        };
        SandboxPolicy {
            layers: Layer::ALL
                .into_iter()
                .map(|l| {
                    let mode = if required(l) {
                        LayerMode::Required
                    } else {
                        LayerMode::BestEffort
                    };
                    (l, mode)
                })
                .collect(),
        }
    }

    /// Sets the mode of `layer` (replacing an earlier entry for it) and returns the policy.
    pub fn with(mut self, layer: Layer, mode: LayerMode) -> Self {
        self.layers.retain(|(l, _)| *l != layer);
        self.layers.push((layer, mode));
        self
    }
}

/// Result of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerStatus {
    /// In force.
    Enforced,
    /// Wanted but not possible here; the detail says why.
    Unavailable,
    /// Turned off by configuration.
    Disabled,
}

impl LayerStatus {
    /// "enforced" / "unavailable" / "disabled".
    pub fn name(&self) -> &'static str {
        match self {
            LayerStatus::Enforced => "enforced",
            LayerStatus::Unavailable => "unavailable",
            LayerStatus::Disabled => "disabled",
        }
    }
}

/// One line of a sandbox report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Which layer.
    pub layer: Layer,
    /// What happened.
    pub status: LayerStatus,
    /// Human-readable detail (what is enforced, or why not).
    pub detail: String,
}

/// What the hound did to itself, sent in [`Ready`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SandboxReport {
    /// One entry per layer, in application order.
    #[serde(deserialize_with = "vec_without_prealloc")]
    pub layers: Vec<LayerReport>,
}

/// hound → supervisor after the sandbox is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The hound's own pid as it sees it (informational; the supervisor trusts its own).
    pub pid: u32,
    /// The hound's protocol version.
    pub protocol_version: u16,
    /// Layer results.
    pub sandbox: SandboxReport,
}

/// supervisor → hound: stop taking new records after the ring is empty, exit 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// How long the hound may take, milliseconds (informational; the supervisor enforces it).
    pub grace_ms: u32,
}

/// hound → supervisor: a fatal error (handshake refused, required layer missing, panic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fatal {
    /// Why the hound is about to exit.
    pub message: String,
}

/// supervisor → hound: where the S3 endpoint is and whom to trust there.
///
/// The hound has no resolver (no UDP, no `/etc/hosts` under its sandbox): the supervisor
/// resolves the host the hound connects to (the endpoint's host, or `<bucket>.<host>` in
/// virtual-host style) and sends the addresses; the hound keeps the name for the `Host`
/// header, SigV4 and TLS SNI / certificate verification. Sent after Hello and again whenever
/// re-resolution changes the set. Untrusted input for the hound only in the sense of any
/// supervisor message (the supervisor is trusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdEndpoints {
    /// The host name these addresses belong to (for logs and a consistency check).
    pub host: String,
    /// Addresses to connect to, in preference order (at most 16 are used); empty while the
    /// name does not resolve.
    pub addresses: Vec<std::net::SocketAddr>,
    /// PEM certificates (`cold.ca_file`) trusted in addition to the built-in web roots; `None`:
    /// the built-in roots.
    pub ca_pem: Option<String>,
}

// ---- daemon messages (houndd <-> clients, over the daemon's SOCK_STREAM Unix socket) ---------

/// Limit on the body of a daemon message that carries no evidence ([`SubmitReply`],
/// [`StatsRequest`], [`StatsReply`], [`ErrorNotice`]). [`Submit`] and [`JobOutcome`] carry
/// evidence and are bounded by the receiver's configured frame limit instead.
pub const MAX_DAEMON_CONTROL_BODY: u32 = 64 * 1024;

/// serde helpers that (de)serialize `Vec<u8>` as one length-prefixed byte string: the same
/// bytes on the wire as a `Vec<u8>` sequence (u64 LE length, then the bytes), but decoded in
/// one copy instead of element by element, with nothing reserved before the bytes are present.
mod bytes {
    use serde::{Deserializer, Serializer};

    struct BytesVisitor;

    impl<'de> serde::de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    /// The same for `Option<Vec<u8>>` (a u8 tag 0/1, then the byte string).
    pub(super) mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        struct Borrowed<'a>(&'a [u8]);

        impl Serialize for Borrowed<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        struct Owned(Vec<u8>);

        impl<'de> Deserialize<'de> for Owned {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Owned)
            }
        }

        pub(in super::super) fn serialize<S: Serializer>(
            v: &Option<Vec<u8>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&Borrowed(b)),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Owned>::deserialize(d)?.map(|o| o.0))
        }
    }
}

/// client → daemon: run one job. Answered at once by a [`SubmitReply`] with the same
/// `request_id`; an accepted job's [`JobOutcome`] follows later on the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Chosen by the client, echoed in the reply and the outcome (need not be unique).
    pub request_id: u64,
    /// What to do.
    pub kind: JobKind,
    /// Defer-queue lane.
    pub severity: Severity,
    /// Evidence id: required for Restore and Erase; assigned (UUIDv7) when absent otherwise.
    pub evidence_id: Option<[u8; 16]>,
    /// gzip level 0..=9 for Encode / Evacuate; the daemon's default when absent.
    pub level: Option<u8>,
    /// Evidence (Noop, Encode, Evacuate), an envelope (Decode), or empty (Restore, Erase).
    #[serde(with = "bytes")]
    pub body: Vec<u8>,
    /// A caller-chosen evidence key (Evacuate, Restore, Erase only; then `evidence_id` must
    /// be `None`): the object is `<prefix><key>.thcs`. Rules: [`crate::job::check_evidence_key`].
    pub key: Option<String>,
}

/// Why the daemon did not accept a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseReason {
    /// (0) No hound has ring space (exhaustion action `drop` or `escalate`).
    PoolExhausted,
    /// (1) The defer queue is full and holds nothing of lower severity.
    DeferQueueFull,
    /// (2) The body is larger than the daemon accepts.
    EvidenceTooLarge,
    /// (3) Encode, Evacuate and Decode need a non-empty body.
    EmptyEvidence,
    /// (4) Restore / Erase without an evidence id or with a body, or a gzip level above 9.
    InvalidJob,
    /// (5) The daemon is draining.
    ShuttingDown,
    /// (6) This connection already has as many jobs awaiting their outcome as the daemon's
    /// per-connection buffer holds (`daemon.outcome_buffer`): read outcomes, then submit again.
    ConnectionBusy,
}

impl RefuseReason {
    /// All reasons, in wire order.
    pub const ALL: [RefuseReason; 7] = [
        RefuseReason::PoolExhausted,
        RefuseReason::DeferQueueFull,
        RefuseReason::EvidenceTooLarge,
        RefuseReason::EmptyEvidence,
        RefuseReason::InvalidJob,
        RefuseReason::ShuttingDown,
        RefuseReason::ConnectionBusy,
    ];
    /// Stable snake_case name (metrics labels, logs, clients).
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::PoolExhausted => "pool_exhausted",
            RefuseReason::DeferQueueFull => "defer_queue_full",
            RefuseReason::EvidenceTooLarge => "evidence_too_large",
            RefuseReason::EmptyEvidence => "empty_evidence",
            RefuseReason::InvalidJob => "invalid_job",
            RefuseReason::ShuttingDown => "shutting_down",
            RefuseReason::ConnectionBusy => "connection_busy",
        }
    }
}

/// What became of a submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitResult {
    /// (0) Accepted: exactly one [`JobOutcome`] with this `job_id` will follow on this
    /// connection, unless the connection is closed first.
    Accepted {
        /// Daemon-unique job id.
        job_id: u64,
        /// The evidence id (given or assigned).
        evidence_id: [u8; 16],
    },
    /// (1) Not accepted; no outcome follows.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// Human-readable detail.
        message: String,
    },
}

/// daemon → client: the answer to one [`Submit`], sent before anything else about that job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// The submit's `request_id`.
    pub request_id: u64,
    /// Accepted or refused.
    pub result: SubmitResult,
}

/// What a completed job produced (fields not meaningful for the kind are absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutcomeReceipt {
    /// Slot of the hound that did the job.
    pub hound: u32,
    /// Object key (Evacuate, Restore, Erase).
    pub key: Option<String>,
    /// Original evidence size (Encode, Evacuate, Restore, Decode).
    pub original_size: Option<u64>,
    /// gzip stream size (Encode, Evacuate).
    pub compressed_size: Option<u64>,
    /// SHA-256 of the gzip stream (Encode, Evacuate).
    pub sha256: Option<[u8; 32]>,
    /// Hound-measured encode time, microseconds (Evacuate).
    pub encode_us: Option<u64>,
    /// Hound-measured storage time, microseconds (Evacuate).
    pub store_us: Option<u64>,
    /// Evacuate: the envelope waits in the local spool for upload.
    pub spooled: bool,
    /// Erase: whether the object existed.
    pub existed: Option<bool>,
    /// The envelope (Encode), the original bytes (Restore, Decode) or the echo (Noop).
    #[serde(with = "bytes::option")]
    pub payload: Option<Vec<u8>>,
}

/// Class of a job failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// (0) The hound ran the job and reported a failure; `code` says which.
    Job,
    /// (1) The job made its hound die by a signal (e.g. SIGSYS from the sandbox).
    HoundKilled,
    /// (2) The hound exceeded its memory budget.
    OutOfMemory,
    /// (3) The hound broke the protocol and was killed.
    ProtocolViolation,
    /// (4) The job killed two hounds and is not tried again.
    Poison,
}

impl FailureKind {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Job => "job",
            FailureKind::HoundKilled => "hound_killed",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::ProtocolViolation => "protocol_violation",
            FailureKind::Poison => "poison",
        }
    }
}

/// Why an accepted job was never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DropKind {
    /// (0) Evicted from the defer queue by a job of higher severity.
    Evicted,
    /// (1) The daemon shut down before the job could run.
    Shutdown,
    /// (2) Cancelled by its client ([`Cancel`]): withdrawn before it ran, or its hound killed.
    Cancelled,
}

/// client → daemon: cancel the job `job_id` (from an accepting [`SubmitReply`] on this
/// connection). Answered by one [`CancelReply`] with the same `request_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The job to cancel.
    pub job_id: u64,
}

/// What a [`Cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelResult {
    /// (0) Unknown id (or not this connection's), or its outcome was already produced.
    NotFound,
    /// (1) Removed from the defer queue or a ring before a hound started it; its outcome
    /// `Dropped { reason: Cancelled }` follows.
    Dequeued,
    /// (2) It was running: its hound was killed; its outcome `Dropped { reason: Cancelled }`
    /// follows.
    Killed,
}

impl CancelResult {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            CancelResult::NotFound => "not_found",
            CancelResult::Dequeued => "dequeued",
            CancelResult::Killed => "killed",
        }
    }
}

/// daemon → client: the answer to one [`Cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The cancel's `request_id`.
    pub request_id: u64,
    /// What happened.
    pub result: CancelResult,
}

/// The single final result of an accepted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeResult {
    /// (0) Done.
    Completed(OutcomeReceipt),
    /// (1) Failed.
    Failed {
        /// Class of failure.
        kind: FailureKind,
        /// For `kind = Job`: the hound's [`crate::job::FailCode`] wire value; else 0.
        code: u16,
        /// Human-readable detail (hound text is untrusted, at most 512 bytes of it).
        message: String,
    },
    /// (2) The hound made no progress before the deadline and was killed.
    TimedOut,
    /// (3) Accepted but never run.
    Dropped {
        /// Why.
        reason: DropKind,
        /// For `Evicted`: the severity of the job that took its place.
        by: Option<Severity>,
    },
}

/// daemon → client: the outcome of a job this connection submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// The submit's `request_id`.
    pub request_id: u64,
    /// The job id from the accepting [`SubmitReply`].
    pub job_id: u64,
    /// The evidence id.
    pub evidence_id: [u8; 16],
    /// The job's kind.
    pub kind: JobKind,
    /// The job's severity.
    pub severity: Severity,
    /// Hounds that started it (1 normally, 2 after a retry, 0 if never run).
    pub attempts: u8,
    /// Time from acceptance to outcome, microseconds.
    pub latency_us: u64,
    /// What happened.
    pub result: OutcomeResult,
}

/// client → daemon: ask for a [`StatsReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Echoed in the reply.
    pub request_id: u64,
}

/// daemon → client: counters of the pool and the daemon. Pool counters satisfy
/// `accepted = completed + failed + timed_out + dropped + in_flight`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatsReply {
    /// The request's `request_id`.
    pub request_id: u64,
    /// Calls to the pool's submit.
    pub submitted: u64,
    /// Jobs accepted by the pool.
    pub accepted: u64,
    /// Pool refusals: no ring space (drop / escalate).
    pub refused_exhausted: u64,
    /// Pool refusals: defer queue full.
    pub refused_defer_full: u64,
    /// Pool refusals: body too large.
    pub refused_too_large: u64,
    /// Pool refusals: empty or invalid job.
    pub refused_invalid: u64,
    /// Pool refusals: shutting down.
    pub refused_shutdown: u64,
    /// Outcomes `Completed`.
    pub completed: u64,
    /// Outcomes `Failed`.
    pub failed: u64,
    /// Outcomes `TimedOut`.
    pub timed_out: u64,
    /// Outcomes `Dropped`.
    pub dropped: u64,
    /// Accepted jobs without an outcome yet.
    pub in_flight: u64,
    /// Jobs in hound rings.
    pub in_rings: u64,
    /// Jobs in the defer queue.
    pub deferred: u64,
    /// Jobs waiting to be retried.
    pub retrying: u64,
    /// Hounds configured.
    pub hounds_target: u32,
    /// Hounds running and past their handshake.
    pub hounds_ready: u32,
    /// Whether the daemon is draining.
    pub draining: bool,
    /// Client connections open.
    pub connections_open: u64,
    /// Outcomes the daemon could not write to their client, all connections.
    pub undelivered: u64,
    /// This connection: accepted jobs whose outcome has not been written yet.
    pub connection_in_flight: u64,
}

/// Why the daemon is closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// (0) A frame could not be decoded (bad header, oversized, malformed body).
    MalformedFrame,
    /// (1) A well-formed message a client may not send (only Submit, StatsRequest and Cancel).
    UnexpectedMessage,
    /// (2) The peer's uid is not in the daemon's allow-list.
    PermissionDenied,
    /// (3) The daemon serves its maximum number of connections.
    TooManyConnections,
    /// (4) The daemon is shutting down.
    ShuttingDown,
    /// (5) The client took no bytes for `daemon.write_stall_timeout_ms` (written only if the
    /// socket still takes it).
    WriteStalled,
    /// (6) A frame was started and not completed within `daemon.frame_timeout_ms`.
    FrameTimeout,
    /// (7) Nothing in flight and nothing received for `daemon.idle_timeout_ms`.
    IdleTimeout,
    /// (8) Closed to admit a new connection while the daemon was at `daemon.max_connections`:
    /// this connection had nothing in flight and was the longest quiet.
    Evicted,
    /// (9) The peer's uid already has `daemon.max_connections_per_uid` connections open.
    TooManyConnectionsForUid,
}

impl ErrorCode {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::WriteStalled => "write_stalled",
            ErrorCode::FrameTimeout => "frame_timeout",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::Evicted => "evicted",
            ErrorCode::TooManyConnectionsForUid => "too_many_connections_for_uid",
        }
    }
}

/// daemon → client: the last frame before the daemon closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNotice {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// A daemon message of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonMessage {
    /// See [`Submit`].
    Submit(Submit),
    /// See [`SubmitReply`].
    SubmitReply(SubmitReply),
    /// See [`JobOutcome`].
    Outcome(JobOutcome),
    /// See [`StatsRequest`].
    StatsRequest(StatsRequest),
    /// See [`StatsReply`].
    Stats(StatsReply),
    /// See [`ErrorNotice`].
    Error(ErrorNotice),
    /// See [`Cancel`].
    Cancel(Cancel),
    /// See [`CancelReply`].
    CancelReply(CancelReply),
}

impl DaemonMessage {
    /// The frame kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            DaemonMessage::Submit(_) => MessageKind::Submit,
            DaemonMessage::SubmitReply(_) => MessageKind::SubmitReply,
            DaemonMessage::Outcome(_) => MessageKind::Outcome,
            DaemonMessage::StatsRequest(_) => MessageKind::StatsRequest,
            DaemonMessage::Stats(_) => MessageKind::Stats,
            DaemonMessage::Error(_) => MessageKind::Error,
            DaemonMessage::Cancel(_) => MessageKind::Cancel,
            DaemonMessage::CancelReply(_) => MessageKind::CancelReply,
        }
    }

    /// The body limit of `kind`: `max_body` for Submit and Outcome (which carry evidence),
    /// [`MAX_DAEMON_CONTROL_BODY`] for the others.
    fn limit(kind: MessageKind, max_body: u32) -> u64 {
        match kind {
            MessageKind::Submit | MessageKind::Outcome => u64::from(max_body),
            _ => u64::from(MAX_DAEMON_CONTROL_BODY.min(max_body)),
        }
    }

    /// Appends this message as one complete frame to `out`. Fails with
    /// [`ProtocolError::EncodeFailed`] (and leaves `out` untouched) if the body would exceed
    /// its limit (`max_body`, or [`MAX_DAEMON_CONTROL_BODY`] for messages without evidence).
    pub fn encode_frame(&self, out: &mut Vec<u8>, max_body: u32) -> Result<(), ProtocolError> {
        let kind = self.kind();
        let (name, limit) = (kind.name(), Self::limit(kind, max_body));
        let body = match self {
            DaemonMessage::Submit(m) => codec::encode(name, m, limit)?,
            DaemonMessage::SubmitReply(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Outcome(m) => codec::encode(name, m, limit)?,
            DaemonMessage::StatsRequest(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Stats(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Error(m) => codec::encode(name, m, limit)?,
            DaemonMessage::Cancel(m) => codec::encode(name, m, limit)?,
            DaemonMessage::CancelReply(m) => codec::encode(name, m, limit)?,
        };
        write_frame(kind, &body, out)
    }

    /// Decodes the body of a frame whose header was already validated against `max_body`.
    /// A control-channel kind (Hello, Ready, Shutdown, Fatal) is
    /// [`ProtocolError::MalformedBody`]; a body that is not exactly `header.body_len` bytes or
    /// does not decode as its kind's struct is an error as for [`Message::decode`]. Never
    /// panics; memory is bounded by the body.
    pub fn decode(header: &FrameHeader, body: &[u8], max_body: u32) -> Result<Self, ProtocolError> {
        check_body_len(header, body)?;
        let kind = header.kind;
        let (name, limit) = (kind.name(), Self::limit(kind, max_body));
        Ok(match kind {
            MessageKind::Submit => DaemonMessage::Submit(codec::decode(name, body, limit)?),
            MessageKind::SubmitReply => {
                DaemonMessage::SubmitReply(codec::decode(name, body, limit)?)
            }
            MessageKind::Outcome => DaemonMessage::Outcome(codec::decode(name, body, limit)?),
            MessageKind::StatsRequest => {
                DaemonMessage::StatsRequest(codec::decode(name, body, limit)?)
            }
            MessageKind::Stats => DaemonMessage::Stats(codec::decode(name, body, limit)?),
            MessageKind::Error => DaemonMessage::Error(codec::decode(name, body, limit)?),
            MessageKind::Cancel => DaemonMessage::Cancel(codec::decode(name, body, limit)?),
            MessageKind::CancelReply => {
                DaemonMessage::CancelReply(codec::decode(name, body, limit)?)
            }
            MessageKind::Hello
            | MessageKind::Ready
            | MessageKind::Shutdown
            | MessageKind::Fatal
            | MessageKind::Setup
            | MessageKind::ColdEndpoints => return Err(wrong_channel(kind, "daemon socket")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [MessageKind; 5] = [
        MessageKind::Hello,
        MessageKind::Ready,
        MessageKind::Shutdown,
        MessageKind::Fatal,
        MessageKind::Setup,
    ];

    #[test]
    fn kind_wire_values_and_names() {
        for kind in KINDS {
            assert_eq!(MessageKind::from_u16(kind as u16).unwrap(), kind);
        }
        let names: Vec<_> = KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["hello", "ready", "shutdown", "fatal", "setup"]);
        for bad in [0u16, 7, 0x100, u16::MAX] {
            assert!(matches!(
                MessageKind::from_u16(bad),
                Err(ProtocolError::UnknownMessageKind { kind }) if kind == bad
            ));
        }
    }

    #[test]
    fn body_length_must_match_header() {
        let mut out = Vec::new();
        Message::Shutdown(Shutdown { grace_ms: 1 })
            .encode_frame(&mut out)
            .unwrap();
        let header = FrameHeader {
            kind: MessageKind::Shutdown,
            body_len: 4,
        };
        let body = &out[crate::frame::FRAME_HEADER_LEN..];
        assert_eq!(
            Message::decode(&header, body).unwrap(),
            Message::Shutdown(Shutdown { grace_ms: 1 })
        );
        assert!(matches!(
            Message::decode(&header, &body[..3]),
            Err(ProtocolError::Truncated {
                needed: 4,
                available: 3
            })
        ));
        assert!(matches!(
            Message::decode(&header, &[1, 0, 0, 0, 0]),
            Err(ProtocolError::TrailingBytes {
                expected: 4,
                found: 5
            })
        ));
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let msg = Message::Fatal(Fatal {
            message: "x".repeat(MAX_CONTROL_BODY as usize),
        });
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            msg.encode_frame(&mut out),
            Err(ProtocolError::EncodeFailed { kind: "fatal", .. })
        ));
        assert_eq!(out, [1, 2, 3]);
        // The largest message that fits: 8 bytes of length + the string.
        let msg = Message::Fatal(Fatal {
            message: "x".repeat(MAX_CONTROL_BODY as usize - 8),
        });
        msg.encode_frame(&mut out).unwrap();
        assert_eq!(Message::from_datagram(&out[3..]).unwrap(), msg);
    }

    // ---- daemon messages ------------------------------------------------------------------

    fn daemon_round_trip(m: DaemonMessage) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_frame(&mut out, 1 << 20).unwrap();
        let (h, body) = parse_frame(&out, 1 << 20).unwrap();
        assert_eq!(h.kind, m.kind());
        assert!(h.kind.is_daemon());
        assert_eq!(DaemonMessage::decode(&h, body, 1 << 20).unwrap(), m);
        out
    }

    #[test]
    fn daemon_kinds_keep_their_wire_values() {
        let kinds = [
            (MessageKind::Submit, 16, "submit"),
            (MessageKind::SubmitReply, 17, "submit_reply"),
            (MessageKind::Outcome, 18, "outcome"),
            (MessageKind::StatsRequest, 19, "stats_request"),
            (MessageKind::Stats, 20, "stats"),
            (MessageKind::Error, 21, "error"),
            (MessageKind::Cancel, 22, "cancel"),
            (MessageKind::CancelReply, 23, "cancel_reply"),
        ];
        for (k, v, name) in kinds {
            assert_eq!(k as u16, v);
            assert_eq!(MessageKind::from_u16(v).unwrap(), k);
            assert_eq!(k.name(), name);
        }
        for k in KINDS {
            assert!(!k.is_daemon());
        }
        for bad in [7u16, 15, 24] {
            assert!(MessageKind::from_u16(bad).is_err());
        }
    }

    #[test]
    fn s3_target_debug_redacts_credentials() {
        let t = S3Target {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "b".into(),
            prefix: "p/".into(),
            region: "r".into(),
            path_style: true,
            access_key: "AKID".into(),
            secret_key: "very-secret".into(),
            session_token: Some("tok-secret".into()),
            spool_dir: None,
            spool_limit_bytes: 1,
        };
        let text = format!("{t:?} {t:#?}");
        assert!(
            !text.contains("very-secret") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(
            text.contains("AKID") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn cancel_layout_is_the_documented_bincode() {
        let out = daemon_round_trip(DaemonMessage::Cancel(Cancel {
            request_id: 7,
            job_id: 0x0102,
        }));
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend(0x0102u64.to_le_bytes());
        assert_eq!(&out[out.len() - 16..], &body[..]);
        for (result, tag) in [
            (CancelResult::NotFound, 0u32),
            (CancelResult::Dequeued, 1),
            (CancelResult::Killed, 2),
        ] {
            let out = daemon_round_trip(DaemonMessage::CancelReply(CancelReply {
                request_id: 9,
                result,
            }));
            let mut body = 9u64.to_le_bytes().to_vec();
            body.extend(tag.to_le_bytes());
            assert_eq!(&out[out.len() - 12..], &body[..]);
        }
        let out = daemon_round_trip(DaemonMessage::Outcome(JobOutcome {
            request_id: 1,
            job_id: 2,
            evidence_id: [0; 16],
            kind: JobKind::Evacuate,
            severity: Severity::Low,
            attempts: 0,
            latency_us: 3,
            result: OutcomeResult::Dropped {
                reason: DropKind::Cancelled,
                by: None,
            },
        }));
        // Dropped = 3, Cancelled = 2, by = None.
        let tail: Vec<u8> = [3u32.to_le_bytes(), 2u32.to_le_bytes()].concat();
        assert_eq!(&out[out.len() - 9..out.len() - 1], &tail[..]);
        assert_eq!(out[out.len() - 1], 0);
    }

    #[test]
    fn submit_layout_is_the_documented_bincode() {
        let out = daemon_round_trip(DaemonMessage::Submit(Submit {
            request_id: 5,
            kind: JobKind::Encode,
            severity: Severity::Critical,
            evidence_id: None,
            level: Some(3),
            body: b"ab".to_vec(),
            key: None,
        }));
        // docs/PROTOCOL.md Part 4: request_id u64, kind u32, severity u32, evidence_id option,
        // level option, body as u64 length + bytes, key option. The Node client's test checks
        // the same bytes.
        assert_eq!(
            &out[crate::frame::FRAME_HEADER_LEN..],
            &[
                5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 1, 3, 2, 0, 0, 0, 0, 0, 0, 0,
                b'a', b'b', 0
            ]
        );
        // A byte string is encoded exactly like the `Vec<u8>` sequence it replaces.
        let as_seq = codec::encode("x", &vec![b'a', b'b'], 64).unwrap();
        assert_eq!(as_seq, [2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    }

    /// The hex of the worked example that follows `title` in docs/PROTOCOL.md (the leading
    /// two-digit hex tokens of each line of the next text block).
    fn documented_hex(title: &str) -> String {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let at = doc.find(title).expect("example title in docs/PROTOCOL.md");
        let rest = &doc[at..];
        let start = rest.find("```text\n").expect("example block") + "```text\n".len();
        let block = &rest[start..start + rest[start..].find("```").expect("block end")];
        let mut hex = String::new();
        for line in block.lines() {
            for tok in line.split_whitespace() {
                if tok.len() == 2 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                    hex.push_str(tok);
                } else {
                    break;
                }
            }
        }
        hex
    }

    #[test]
    fn documented_daemon_examples_match_the_encoder() {
        let submit = daemon_round_trip(DaemonMessage::Submit(Submit {
            request_id: 5,
            kind: JobKind::Encode,
            severity: Severity::Critical,
            evidence_id: None,
            level: Some(3),
            body: b"ab".to_vec(),
            key: None,
        }));
        assert_eq!(
            documented_hex("`Submit { request_id: 5, kind: encode, severity: critical, evidence_id: None, level: Some(3), body: \"ab\", key: None }` — 46 bytes"),
            hex::encode(&submit)
        );
        let reply = daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
            request_id: 5,
            result: SubmitResult::Accepted {
                job_id: 7,
                evidence_id: [1; 16],
            },
        }));
        assert_eq!(
            documented_hex("Its reply, accepted as job 7 with evidence id `01…01` — 52 bytes"),
            hex::encode(&reply)
        );
    }

    #[test]
    fn every_daemon_message_round_trips() {
        daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
            request_id: 1,
            result: SubmitResult::Accepted {
                job_id: 9,
                evidence_id: [7; 16],
            },
        }));
        for reason in RefuseReason::ALL {
            daemon_round_trip(DaemonMessage::SubmitReply(SubmitReply {
                request_id: 2,
                result: SubmitResult::Refused {
                    reason,
                    message: reason.name().into(),
                },
            }));
        }
        let outcome = |result| JobOutcome {
            request_id: 3,
            job_id: 4,
            evidence_id: [1; 16],
            kind: JobKind::Evacuate,
            severity: Severity::High,
            attempts: 1,
            latency_us: 1234,
            result,
        };
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Completed(
            OutcomeReceipt {
                hound: 1,
                key: Some("evidence/x.thcs".into()),
                original_size: Some(10),
                compressed_size: Some(8),
                sha256: Some([0xab; 32]),
                encode_us: Some(5),
                store_us: Some(6),
                spooled: true,
                existed: None,
                payload: Some(vec![1, 2, 3]),
            },
        ))));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Failed {
            kind: FailureKind::Job,
            code: 3,
            message: "integrity".into(),
        })));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::TimedOut)));
        daemon_round_trip(DaemonMessage::Outcome(outcome(OutcomeResult::Dropped {
            reason: DropKind::Evicted,
            by: Some(Severity::Critical),
        })));
        daemon_round_trip(DaemonMessage::StatsRequest(StatsRequest { request_id: 8 }));
        daemon_round_trip(DaemonMessage::Stats(StatsReply {
            request_id: 8,
            accepted: 3,
            draining: true,
            ..StatsReply::default()
        }));
        daemon_round_trip(DaemonMessage::Error(ErrorNotice {
            code: ErrorCode::MalformedFrame,
            message: "bad".into(),
        }));
    }

    #[test]
    fn channels_refuse_each_others_kinds() {
        let mut out = Vec::new();
        DaemonMessage::StatsRequest(StatsRequest { request_id: 1 })
            .encode_frame(&mut out, 1 << 20)
            .unwrap();
        assert!(matches!(
            Message::from_datagram(&out),
            Err(ProtocolError::MalformedBody {
                kind: "stats_request",
                ..
            })
        ));
        let mut out = Vec::new();
        Message::Shutdown(Shutdown { grace_ms: 1 })
            .encode_frame(&mut out)
            .unwrap();
        let (h, body) = parse_frame(&out, 1 << 20).unwrap();
        assert!(matches!(
            DaemonMessage::decode(&h, body, 1 << 20),
            Err(ProtocolError::MalformedBody {
                kind: "shutdown",
                ..
            })
        ));
    }

    #[test]
    fn daemon_limits_bound_encoding_and_decoding() {
        let big = DaemonMessage::Submit(Submit {
            request_id: 1,
            kind: JobKind::Noop,
            severity: Severity::Low,
            evidence_id: None,
            level: None,
            body: vec![0; 5000],
            key: None,
        });
        let mut out = Vec::new();
        assert!(matches!(
            big.encode_frame(&mut out, 4096),
            Err(ProtocolError::EncodeFailed { .. })
        ));
        assert!(out.is_empty());
        big.encode_frame(&mut out, 8192).unwrap();
        let (h, body) = parse_frame(&out, 8192).unwrap();
        assert!(DaemonMessage::decode(&h, body, 4096).is_err());
        // A byte string announcing more than the body holds is an error, not an allocation.
        let mut lying = out[crate::frame::FRAME_HEADER_LEN..].to_vec();
        let at = lying.len() - 5000 - 8;
        lying[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let h = FrameHeader {
            kind: MessageKind::Submit,
            body_len: lying.len() as u32,
        };
        assert!(DaemonMessage::decode(&h, &lying, 8192).is_err());
        // Messages without evidence are bounded by MAX_DAEMON_CONTROL_BODY.
        let long = DaemonMessage::Error(ErrorNotice {
            code: ErrorCode::MalformedFrame,
            message: "x".repeat(MAX_DAEMON_CONTROL_BODY as usize),
        });
        assert!(long.encode_frame(&mut Vec::new(), u32::MAX).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn daemon_decoding_never_panics(kind in 16u16..=21, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let h = FrameHeader { kind: MessageKind::from_u16(kind).unwrap(), body_len: body.len() as u32 };
            let _ = DaemonMessage::decode(&h, &body, 1 << 20);
        }
    }
}
