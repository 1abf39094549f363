//! Namespaces: IPC and mount always, network unless the hound needs an outbound TCP endpoint,
//! user when the hound is not privileged enough to create the others (the user namespace is
//! created first by the kernel and owns the others; its uid/gid maps are written here, before
//! Landlock, which would refuse the writes to /proc).

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{geteuid, getgid, getuid};

fn names(flags: CloneFlags) -> String {
    let mut v = Vec::new();
    for (f, n) in [
        (CloneFlags::CLONE_NEWUSER, "user"),
        (CloneFlags::CLONE_NEWNET, "net"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNS, "mount"),
    ] {
        if flags.contains(f) {
            v.push(n);
        }
    }
    v.join(", ")
}

fn write_maps(uid: u32, gid: u32) -> Result<(), String> {
    // Map the hound's own ids onto themselves, so files it creates keep their real owner.
    let write = |path: &str, content: String| {
        std::fs::write(path, content).map_err(|e| format!("writing {path}: {e}"))
    };
    write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    // setgroups must be denied before an unprivileged process may write gid_map.
    write("/proc/self/setgroups", "deny".to_string())?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Unshares the namespaces. `keep_host_network` leaves the network namespace alone (an S3
/// endpoint must stay reachable). Returns the report detail and whether a user namespace was
/// entered (a credential change, after which the death signal is re-checked).
pub(crate) fn apply(keep_host_network: bool) -> Result<(String, bool), String> {
    let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNS;
    if !keep_host_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    // Root normally has CAP_SYS_ADMIN; inside a container it may not, and an unprivileged hound
    // never has it: then a user namespace (which it owns) provides it.
    let first = if geteuid().is_root() {
        unshare(flags).map(|()| flags)
    } else {
        Err(Errno::EPERM)
    };
    let done = match first {
        Err(Errno::EPERM) => {
            let with_user = flags | CloneFlags::CLONE_NEWUSER;
            unshare(with_user)
                .map(|()| with_user)
                .map_err(|e| format!("unshare({}): {e}", names(with_user)))?
        }
        other => other.map_err(|e| format!("unshare({}): {e}", names(flags)))?,
    };
    let user = done.contains(CloneFlags::CLONE_NEWUSER);
    if user {
        write_maps(uid, gid)?;
    }
    let mut detail = format!("new {} namespaces", names(done));
    if user {
        detail.push_str(&format!("; uid {uid} and gid {gid} mapped onto themselves"));
    }
    if keep_host_network {
        detail.push_str("; host network kept for the TCP endpoint (Landlock limits the port)");
    }
    Ok((detail, user))
}
