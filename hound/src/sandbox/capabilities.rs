//! The capabilities layer: the hound holds no capability at all.
//!
//! A hound started by a supervisor running as root inherits every capability (root's
//! effective, permitted and bounding sets are full). This layer, applied after namespaces
//! (which need CAP_SYS_ADMIN as root) and before Landlock and seccomp (which forbid the calls it
//! uses), empties them:
//! 1. the bounding set is cleared (`PR_CAPBSET_DROP` for every capability the kernel knows),
//!    which needs CAP_SETPCAP: root has it, and so has an unprivileged hound inside the user
//!    namespace it created; an unprivileged hound outside one has nothing to drop and keeps its
//!    bounding set (it only limits what `execve` could grant, and exec kills the hound);
//! 2. the ambient set is cleared (`PR_CAP_AMBIENT_CLEAR_ALL`);
//! 3. `capset` empties the effective, permitted and inheritable sets;
//! 4. the result is read back (`capget`, `PR_CAPBSET_READ`) and anything left is an error.
//!
//! The hound keeps its uid, so files it creates keep their owner; without CAP_DAC_OVERRIDE /
//! CAP_FOWNER it can only open what plain permission bits allow, and Landlock narrows that to the
//! cold-storage directory.

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit words.
const CAP_VERSION_3: u32 = 0x2008_0522;
/// CAP_SETPCAP: needed to drop from the bounding set.
const CAP_SETPCAP: u32 = 8;
/// Capability numbers are below 64 (two 32-bit words).
const CAP_LIMIT: u32 = 64;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`, one per 32-bit word.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The three sets of the calling thread, 64 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn join(words: [CapData; 2], pick: impl Fn(&CapData) -> u32) -> u64 {
    u64::from(pick(&words[0])) | (u64::from(pick(&words[1])) << 32)
}

fn capget() -> Result<Sets, String> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header and two data words (version 3) into the valid,
    // properly aligned #[repr(C)] structs passed; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    Ok(Sets {
        effective: join(data, |d| d.effective),
        permitted: join(data, |d| d.permitted),
        inheritable: join(data, |d| d.inheritable),
    })
}

fn capset_empty() -> Result<(), String> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads one header and two data words (version 3) from the valid #[repr(C)]
    // structs passed; it only changes the calling thread's credentials (the process is
    // single-threaded, checked by `sandbox::apply_into`).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "capset(all empty): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `prctl(option, arg2, 0, 0, 0)`; returns the result or the errno.
fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<libc::c_int, std::io::Error> {
    let zero: libc::c_ulong = 0;
    // SAFETY: the prctl options used here (PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_CAP_AMBIENT)
    // take integer arguments only and touch no memory of this process.
    let rc = unsafe { libc::prctl(option, arg2, zero, zero, zero) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Capabilities still in the bounding set, and how many the kernel knows.
fn bounding_set() -> Result<(u64, u32), String> {
    let mut set = 0u64;
    for cap in 0..CAP_LIMIT {
        match prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap)) {
            Ok(1) => set |= 1 << cap,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok((set, cap)),
            Err(e) => return Err(format!("prctl(PR_CAPBSET_READ, {cap}): {e}")),
        }
    }
    Ok((set, CAP_LIMIT))
}

/// Applies the layer. Returns the report detail, or why the hound still holds a capability.
pub(crate) fn apply() -> Result<String, String> {
    let before = capget()?;
    let (bounding_before, known) = bounding_set()?;
    let can_drop_bounding = before.effective & (1 << CAP_SETPCAP) != 0;
    if can_drop_bounding {
        for cap in 0..known {
            prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))
                .map_err(|e| format!("prctl(PR_CAPBSET_DROP, {cap}): {e}"))?;
        }
    }
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    ) {
        Ok(_) => {}
        // Kernels before 4.3 have no ambient set: nothing to clear.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(format!("prctl(PR_CAP_AMBIENT_CLEAR_ALL): {e}")),
    }
    capset_empty()?;

    let after = capget()?;
    let (bounding_after, _) = bounding_set()?;
    if after.effective != 0 || after.permitted != 0 || after.inheritable != 0 {
        return Err(format!(
            "capabilities left after capset: effective {:#x}, permitted {:#x}, inheritable {:#x}",
            after.effective, after.permitted, after.inheritable
        ));
    }
    if can_drop_bounding && bounding_after != 0 {
        return Err(format!(
            "bounding set still {bounding_after:#x} after PR_CAPBSET_DROP"
        ));
    }
    let held = before.effective | before.permitted | before.inheritable;
    let mut detail = format!(
        "effective, permitted, inheritable and ambient sets empty (held {:#x} before)",
        held
    );
    if can_drop_bounding {
        detail.push_str(&format!(
            "; bounding set cleared ({} capabilities dropped)",
            bounding_before.count_ones()
        ));
    } else {
        detail.push_str(
            "; bounding set left as is: without CAP_SETPCAP it cannot be changed, and it only \
             limits what exec could grant (exec kills the hound, no_new_privs forbids gains)",
        );
    }
    Ok(detail)
}
