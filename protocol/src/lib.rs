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

/// Version of the frame format, the ring layout and the job record layout together.
/// A peer that announces another version is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 1;
