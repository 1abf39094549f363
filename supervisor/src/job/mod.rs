//! Jobs: what callers submit and get back (`types`, the public API), and the job state machine
//! (`machine`: one enum of states, one function per transition, the table the docs' diagram is
//! checked against).

pub(crate) mod machine;
mod types;

pub use types::*;
