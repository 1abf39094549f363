//! The hound: a sandboxed child process that runs evidence jobs for the supervisor.
//!
//! Started as `<exe> --houndpool-hound CTRL,REQ,CMP,REQBELL,CMPBELL` where the five numbers are
//! inherited file descriptors: the control socket (SOCK_SEQPACKET), the request region memfd,
//! the completion region memfd, the request doorbell and the completion doorbell (eventfds).
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
pub mod sandbox;

pub use error::HoundError;

/// argv[1] that marks a process as a hound (used by the `hound` binary and by multi-call
/// executables through `houndpool::run_hound_if_requested`).
pub const HOUND_ARG: &str = "--houndpool-hound";

/// Entry point of a hound process: parses `std::env::args`, runs the hound, returns the exit code.
pub fn main_from_env() -> i32 {
    2
}
