//! Wire formats of houndpool, shared by the supervisor, the hound and clients.
//!
//! This crate is pure data handling: it defines byte layouts and validates them, and it owns
//! the shared-memory ring code. It makes no policy decisions (who to kill, what to retry):
//! every malformed input is returned as a typed [`ProtocolError`] for the caller to act on.
//!
//! * [`frame`] — the length-prefixed frame of the control channel and the daemon socket
//!   (its header and [`frame::MessageKind`]), with a streaming decoder.
//! * [`codec`] — the single place that knows bincode (see RUSTSEC-2025-0141 in docs).
//! * [`control`] — supervisor ↔ hound messages (Setup, Hello, Ready, ...; the sandbox policy
//!   and report they carry).
//! * [`daemon`] — `houndd` ↔ client messages (Submit, Outcome, Cancel, Stats, Error).
//! * [`job`] — fixed little-endian headers of request and completion records in the rings.
//! * [`ring`] — single-producer single-consumer byte rings of 8-byte-aligned records.
//! * [`region`] — the memfd-backed regions that hold the rings, sealed before sharing.
//! * [`wake`] — doorbells used to wake a sleeping peer (a pipe per direction per hound, so no
//!   open file description is shared with a hound; an eventfd for wake-ups within a process).
//! * [`envelope`] — the THCS v1 evidence envelope (gzip + SHA-256).
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod codec;
pub mod control;
pub mod daemon;
pub mod envelope;
mod error;
pub mod frame;
pub mod job;
pub mod region;
pub mod ring;
pub mod wake;

pub use error::ProtocolError;

/// Version of the frame format: the 16-byte header every frame carries, on the control socket
/// and on the daemon socket alike. A frame of another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Version of the supervisor-hound contract carried inside the frames and the rings: the
/// control messages' bodies, the job record layouts, what a hound does with them. Sent in
/// `Setup`, `Hello` and `Ready`; a hound and a supervisor of different versions (a
/// `hound_binary` from another build) refuse each other at the handshake, naming both versions,
/// instead of meeting as protocol violations later. The shared-memory regions carry their own
/// layout version ([`region::REGION_VERSION`]).
///
/// 2: `Setup` gained `tuning.s3_concurrency` and `tuning.fs_commit`; byte 14 of a request
/// header became its flags (bit 0: the pool generated the evidence id).
/// 3: `Setup` gained `tuning.s3_deadline_ms`.
pub const HOUND_PROTOCOL_VERSION: u16 = 3;
