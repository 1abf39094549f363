//! The hound: a sandboxed child process that runs evidence jobs for the supervisor.
//!
//! Started as `<exe> --houndpool-hound CTRL,REQ,CMP,REQBELL,CMPBELL` where the five numbers are
//! inherited file descriptors: the control socket (SOCK_SEQPACKET), the request region memfd,
//! the completion region memfd, the request doorbell and the completion doorbell (one end each
//! of two pipes; the supervisor keeps the other ends, so no open file description is shared).
//! Its life: read the `Setup` (pool-wide settings, queued by the supervisor before the start),
//! map the regions, open the cold store, confine itself (see [`sandbox`]), wait — confined —
//! for the `Hello` that assigns its slot, answer `Ready` with the sandbox report, then serve the
//! request ring until told to shut down or until its supervisor disappears.
//!
//! Nothing a job carries can steer the hound into anything but the job: requests are parsed
//! with typed errors, outputs are bounded by the limits of the `Setup`, and a panic inside a
//! job is reported as that job's failure, after which the hound exits non-zero.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod args;
mod channel;
mod error;
mod jobs;
pub mod oom;
mod run;
pub mod sandbox;

pub use args::HoundFds;
pub use error::HoundError;
pub use run::{HELLO_TIMEOUT, SETUP_TIMEOUT};

/// argv[1] that marks a process as a hound (used by the `hound` binary and by multi-call
/// executables through `houndpool::run_hound_if_requested`).
pub const HOUND_ARG: &str = "--houndpool-hound";

/// Exit code: bad command line or unusable descriptors.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the handshake failed (version, regions, cold store).
pub const EXIT_HANDSHAKE: i32 = 3;
/// Exit code: a `required` sandbox layer could not be enforced.
pub const EXIT_SANDBOX: i32 = 4;
/// Exit code: the job loop failed (ring corruption, channel error) or a job panicked.
pub const EXIT_RUNTIME: i32 = 5;
/// Exit code: an allocation failed against the memory budget (see [`oom`]).
pub const EXIT_OUT_OF_MEMORY: i32 = oom::EXIT_OUT_OF_MEMORY;
/// Exit code: the supervisor died before the death signal was armed.
pub const EXIT_ORPHANED: i32 = sandbox::EXIT_ORPHANED;

/// Entry point of a hound process: parses `std::env::args`, runs the hound, returns the exit
/// code (0 after an orderly shutdown).
pub fn main_from_env() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let fds = match args::parse(&args) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("hound: {e}");
            eprintln!(
                "hound: this program is started by the houndpool supervisor, not by hand \
                 (usage: hound {HOUND_ARG} CTRL,REQ,CMP,REQBELL,CMPBELL)"
            );
            return EXIT_USAGE;
        }
    };
    run::run(fds)
}
