//! The hound's self-confinement. PLACEHOLDER until the sandbox branch merges: same API, every
//! layer reported unavailable.

use std::os::fd::RawFd;
use std::path::PathBuf;

use houndpool_protocol::messages::{
    HoundLimits, Layer, LayerReport, LayerStatus, SandboxPolicy, SandboxReport,
};

/// What the sandbox needs to know about the hound it confines.
#[derive(Debug, Clone)]
pub struct SandboxContext {
    /// Descriptors that stay open.
    pub keep_fds: Vec<RawFd>,
    /// Directories the hound may read and write (cold store root, spool).
    pub rw_dirs: Vec<PathBuf>,
    /// TCP port the hound may connect to (S3 backend).
    pub tcp_connect_port: Option<u16>,
    /// Resource limits.
    pub limits: HoundLimits,
    /// The supervisor's pid.
    pub expected_parent: i32,
}

/// Applies the sandbox (placeholder).
pub fn apply(
    policy: &SandboxPolicy,
    ctx: &SandboxContext,
) -> Result<SandboxReport, crate::HoundError> {
    let _ = (policy, ctx);
    Ok(SandboxReport {
        layers: Layer::ALL[..8]
            .iter()
            .map(|l| LayerReport {
                layer: *l,
                status: LayerStatus::Unavailable,
                detail: "not built".into(),
            })
            .collect(),
    })
}
