//! The one error type of this crate.

/// Why a hound cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum HoundError {
    /// The command line does not carry the expected descriptors.
    #[error("bad hound command line: {0}")]
    Usage(String),
    /// A sandbox layer configured `required` could not be enforced.
    #[error("required sandbox layer {layer} unavailable: {detail}")]
    RequiredLayerUnavailable {
        /// Layer name.
        layer: &'static str,
        /// Why.
        detail: String,
    },
    /// A system call needed to set up the sandbox failed.
    #[error("sandbox setup {op} failed: {source}")]
    SandboxOs {
        /// What was attempted.
        op: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control channel failed or the supervisor sent something unusable.
    #[error("control channel: {0}")]
    Channel(String),
    /// Wire format error.
    #[error(transparent)]
    Protocol(#[from] houndpool_protocol::ProtocolError),
    /// Cold storage error.
    #[error(transparent)]
    Cold(#[from] houndpool_cold::ColdError),
}
