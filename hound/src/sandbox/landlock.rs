//! Landlock: read-write access under the configured directories and nothing else; TCP connect
//! only to the S3 port (no TCP at all without it, never bind); signals and abstract unix
//! sockets scoped to the sandbox.
//!
//! The ruleset asks for every right the `landlock` crate knows (ABI v10) in best-effort mode;
//! the crate keeps what the running kernel supports. Descriptors opened before this layer (the
//! channel, memfds, doorbells, /dev/null on 0–2) stay usable: Landlock checks at open time.

use ::landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort, PathBeneath,
    PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope, ABI,
};
use std::path::PathBuf;

/// The newest ABI whose rights are requested (the crate downgrades to the kernel's).
const TARGET: ABI = ABI::V10;

fn restrict(
    rw_dirs: &[PathBuf],
    tcp_port: Option<u16>,
) -> Result<(RestrictionStatus, Vec<String>, Vec<String>), RulesetError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))?
        .handle_access(AccessNet::from_all(TARGET))?
        .scope(Scope::from_all(TARGET))?
        .create()?;
    let (mut granted, mut skipped) = (Vec::new(), Vec::new());
    for dir in rw_dirs {
        match PathFd::new(dir) {
            Ok(fd) => {
                ruleset = ruleset.add_rule(PathBeneath::new(fd, AccessFs::from_all(TARGET)))?;
                granted.push(dir.display().to_string());
            }
            // A missing directory gets no rule: nothing there is accessible (fail closed).
            Err(e) => skipped.push(format!("{} ({e})", dir.display())),
        }
    }
    if let Some(port) = tcp_port {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    Ok((ruleset.restrict_self()?, granted, skipped))
}

/// Applies the layer. With `required`, a kernel that cannot enforce a rule this configuration
/// depends on (TCP port rule with an S3 endpoint: ABI >= 4) is an error even though the
/// filesystem rules are in force.
pub(crate) fn apply(
    rw_dirs: &[PathBuf],
    tcp_port: Option<u16>,
    required: bool,
) -> Result<String, String> {
    let (status, granted, skipped) =
        restrict(rw_dirs, tcp_port).map_err(|e| format!("landlock: {e}"))?;
    let (abi, kernel_abi) = match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => (effective_abi, kernel_abi),
        LandlockStatus::NotEnabled => {
            return Err("Landlock is built into the kernel but not enabled at boot".into())
        }
        LandlockStatus::NotImplemented => {
            return Err("the kernel does not implement Landlock".into())
        }
    };
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(format!("Landlock ABI {abi}: ruleset not enforced"));
    }

    let mut parts = vec![match kernel_abi {
        Some(k) => format!("ABI {abi} (kernel {k})"),
        None => format!("ABI {abi}"),
    }];
    parts.push(if granted.is_empty() {
        "filesystem: nothing readable or writable".into()
    } else {
        format!(
            "filesystem: read-write under {} only, nothing else readable",
            granted.join(", ")
        )
    });
    if !skipped.is_empty() {
        parts.push(format!("missing, no access: {}", skipped.join(", ")));
    }
    let mut gaps = Vec::new();
    if abi >= ABI::V4 {
        parts.push(match tcp_port {
            Some(p) => format!("TCP: connect to port {p} only, no bind"),
            None => "TCP: no connect, no bind".into(),
        });
    } else if let Some(p) = tcp_port {
        gaps.push(format!("TCP port rule (connect to {p} only) needs ABI 4"));
    }
    if abi >= ABI::V6 {
        parts.push("scoped: signals, abstract unix sockets".into());
    }
    if abi >= ABI::V10 {
        parts.push("UDP: no bind, no send".into());
    }
    if !gaps.is_empty() {
        let gaps = gaps.join("; ");
        if required {
            return Err(format!(
                "{} — but not enforceable here: {gaps}",
                parts.join("; ")
            ));
        }
        parts.push(format!("not enforceable here: {gaps}"));
    }
    Ok(parts.join("; "))
}

/// Confines the **calling thread** (not the process: Landlock domains belong to a thread's
/// credentials, and `landlock_restrict_self` changes only the caller's) so that every
/// filesystem access it makes from now on must resolve to a file beneath `dir`. Used by the
/// supervisor's journal materialiser, which writes and removes files at paths inside a store
/// whose directories a compromised hound may have replaced with symlinks: with the rule in
/// force, a path that leads outside `dir` fails with `EACCES` instead of writing there,
/// whatever the race. Sets no-new-privs on the thread (required by Landlock without
/// CAP_SYS_ADMIN; harmless for a thread that never execs). Network and scopes are left
/// alone. Fails when the kernel does not enforce the rule: the caller must then not do the
/// work.
pub fn confine_thread_beneath(dir: &std::path::Path) -> Result<(), String> {
    let shown = || dir.display().to_string();
    let fd = PathFd::new(dir).map_err(|e| format!("landlock beneath {}: {e}", shown()))?;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(fd, AccessFs::from_all(TARGET))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock beneath {}: {e}", shown()))?;
    match status.ruleset {
        // Partial: the kernel lacks some of the newest rights; every right it has is handled
        // (and denied outside `dir`), which includes creating, writing, linking and removing.
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        other => Err(format!(
            "landlock beneath {}: ruleset {other:?} on this kernel",
            shown()
        )),
    }
}
