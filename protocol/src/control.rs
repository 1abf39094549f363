//! The control channel: the messages between the supervisor and one hound over their
//! private socketpair (SOCK_SEQPACKET, one frame per datagram), frame kinds 1–6.
//!
//! The supervisor queues [`Setup`] before the hound starts; the hound confines itself, waits
//! for [`Hello`] and answers [`Ready`] with its [`SandboxReport`]. [`ColdEndpoints`] follows
//! when the cold target is S3, [`Shutdown`] ends the hound's life, and [`Fatal`] carries its
//! last words. Each frame body is the bincode encoding (see [`crate::codec`] and
//! docs/PROTOCOL.md, Part 1) of the struct its [`Message`] variant carries, at most
//! [`MAX_CONTROL_BODY`] bytes. A daemon kind (16–23, [`crate::daemon`]) is refused here.

use crate::codec;
use crate::frame::{parse_frame, write_frame, FrameHeader, MessageKind};
use crate::ProtocolError;
use serde::{Deserialize, Serialize};

/// Limit on any control message body, in bytes.
pub const MAX_CONTROL_BODY: u32 = 64 * 1024;

/// The largest control datagram: a frame header and a body of [`MAX_CONTROL_BODY`] bytes.
/// A receive buffer one byte longer tells a datagram that was cut short from one that fits.
pub const MAX_CONTROL_DATAGRAM: usize = crate::frame::FRAME_HEADER_LEN + MAX_CONTROL_BODY as usize;

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
        header.check_body(body)?;
        let (name, limit) = (header.kind.name(), u64::from(MAX_CONTROL_BODY));
        // A handshake message of another layout fails to decode; its version field (at a
        // fixed place in every version) says why, which beats a bare "malformed".
        let handshake = |at: usize, e: ProtocolError| match (e, body.get(at..at + 2)) {
            (ProtocolError::MalformedBody { kind, reason }, Some(v))
                if u16::from_le_bytes([v[0], v[1]]) != crate::HOUND_PROTOCOL_VERSION =>
            {
                ProtocolError::MalformedBody {
                    kind,
                    reason: format!(
                        "{reason}; its hound protocol version field reads {}, this build \
                         speaks {} (a hound binary from another build?)",
                        u16::from_le_bytes([v[0], v[1]]),
                        crate::HOUND_PROTOCOL_VERSION
                    ),
                }
            }
            (e, _) => e,
        };
        Ok(match header.kind {
            // Hello and Setup begin with the version; Ready with the pid (u32), then it.
            MessageKind::Hello => {
                Message::Hello(codec::decode(name, body, limit).map_err(|e| handshake(0, e))?)
            }
            MessageKind::Ready => {
                Message::Ready(codec::decode(name, body, limit).map_err(|e| handshake(4, e))?)
            }
            MessageKind::Shutdown => Message::Shutdown(codec::decode(name, body, limit)?),
            MessageKind::Fatal => Message::Fatal(codec::decode(name, body, limit)?),
            MessageKind::Setup => {
                Message::Setup(codec::decode(name, body, limit).map_err(|e| handshake(0, e))?)
            }
            MessageKind::ColdEndpoints => Message::ColdEndpoints(codec::decode(name, body, limit)?),
            MessageKind::Submit
            | MessageKind::SubmitReply
            | MessageKind::Outcome
            | MessageKind::StatsRequest
            | MessageKind::Stats
            | MessageKind::Error
            | MessageKind::Cancel
            | MessageKind::CancelReply => {
                return Err(header.kind.not_of_channel("control channel"))
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
    /// Must equal [`crate::HOUND_PROTOCOL_VERSION`].
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
    /// Must equal [`crate::HOUND_PROTOCOL_VERSION`].
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
    /// How a filesystem cold store commits Evacuate batches (`cold.fs_commit`). Ignored by
    /// other cold targets.
    pub fs_commit: FsCommit,
    /// Longest one S3 store operation may take, milliseconds (0: no bound): a put's every
    /// request, retry and backoff, after which it spools. The supervisor sets half its
    /// `job_timeout`, so an unreachable or stalled endpoint ends in the spool before the
    /// watchdog kills the hound. Ignored by other cold targets.
    pub s3_deadline_ms: u32,
}

/// How a hound's filesystem cold store commits (`cold.fs_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FsCommit {
    /// Append each batch to the hound's own journal: one write and one fdatasync per batch;
    /// the supervisor turns journals into key files later. The default.
    #[default]
    Journal,
    /// A durable file per key (temp file, fdatasync, link, directory fsync).
    PerFile,
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
    #[serde(deserialize_with = "vec_without_prealloc")]
    pub addresses: Vec<std::net::SocketAddr>,
    /// PEM certificates (`cold.ca_file`) trusted in addition to the built-in web roots; `None`:
    /// the built-in roots.
    pub ca_pem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
