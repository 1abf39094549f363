//! The message paths before the control channel and the daemon socket got a module each:
//! re-exports only, so that code written against `messages::*` still builds while it moves
//! to [`crate::control`], [`crate::daemon`] and [`crate::frame::MessageKind`]. Nothing is
//! declared here; new code should not use it.

pub use crate::control::*;
pub use crate::daemon::*;
pub use crate::frame::MessageKind;
