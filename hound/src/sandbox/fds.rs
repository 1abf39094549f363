//! Fd hygiene: close every descriptor the hound does not need.
//!
//! Descriptors 0, 1 and 2 that are not in the keep list are pointed at /dev/null rather than
//! left closed, so that a later `open()` can never land on 0–2 and receive stray
//! `println!` / `eprintln!` output (or be read as stdin). All other descriptors not in the
//! keep list are closed with `close_range(2)`.

use std::os::fd::{AsRawFd, RawFd};

/// Inclusive ranges `[first, last]` of descriptors to close so that exactly `keep` (and
/// nothing else) survives. `keep` may be unsorted and contain duplicates or negative values
/// (ignored).
pub(crate) fn close_ranges(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut next = 0u32;
    for fd in keep {
        if fd > next {
            ranges.push((next, fd - 1));
        }
        // fd came from a non-negative i32, so fd + 1 cannot overflow.
        next = fd + 1;
    }
    ranges.push((next, u32::MAX));
    ranges
}

/// The descriptors open right now, from /proc/self/fd (None without /proc).
fn open_fds() -> Option<Vec<RawFd>> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own directory descriptor was among them and is closed now.
    Some(listed.into_iter().filter(|&fd| is_open(fd)).collect())
}

fn is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

fn close_range(first: u32, last: u32) -> std::io::Result<()> {
    // SAFETY: close_range only closes descriptors; every descriptor in the range is one the
    // caller has decided nobody in this process uses any more (apply's documented contract).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::from(last),
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies the layer. Returns the report detail, or why it could not be completed.
pub(crate) fn apply(keep: &[RawFd]) -> Result<String, String> {
    let before = open_fds();
    let mut redirected = Vec::new();
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    for (fd, name) in [(0, "stdin"), (1, "stdout"), (2, "stderr")] {
        if keep.contains(&fd) {
            continue;
        }
        // Without /dev/null the descriptor is closed below like any other.
        if let Ok(null) = &devnull {
            nix::unistd::dup2(null.as_raw_fd(), fd)
                .map_err(|e| format!("dup2 /dev/null onto {name}: {e}"))?;
            redirected.push(name);
        }
    }
    let mut survivors: Vec<RawFd> = keep.to_vec();
    if devnull.is_ok() {
        survivors.extend([0, 1, 2]);
    }
    // `devnull` itself is not a survivor: it is closed by the ranges below; forget the File so
    // that its drop does not close a recycled number later.
    if let Ok(null) = devnull {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
    }
    for (first, last) in close_ranges(&survivors) {
        if let Err(e) = close_range(first, last) {
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(format!("close_range({first}, {last}): {e}"));
            }
            // Kernel < 5.9: close one by one, up to the highest descriptor that can exist.
            let limit = match &before {
                Some(open) => open.iter().copied().max().map_or(0, |m| m as u64 + 1),
                None => nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(soft, _)| soft.min(1 << 20))
                    .unwrap_or(1 << 16),
            };
            let end = u64::from(last).min(limit.saturating_sub(1));
            for fd in u64::from(first)..=end {
                // EBADF for descriptors that are not open is expected and ignored.
                let _ = nix::unistd::close(fd as RawFd);
            }
        }
    }
    let mut kept: Vec<RawFd> = keep.iter().copied().filter(|&fd| is_open(fd)).collect();
    kept.sort_unstable();
    kept.dedup();
    let closed = match &before {
        Some(open) => format!(
            "closed {} inherited descriptors",
            open.iter()
                .filter(|fd| !kept.contains(fd) && !(0..=2).contains(*fd))
                .count()
        ),
        None => "closed every descriptor (count unknown: no /proc)".to_string(),
    };
    let stdio = if redirected.is_empty() {
        String::new()
    } else {
        format!("; {} -> /dev/null", redirected.join(", "))
    };
    Ok(format!("{closed}; kept {kept:?}{stdio}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_but_the_kept() {
        assert_eq!(close_ranges(&[]), vec![(0, u32::MAX)]);
        assert_eq!(
            close_ranges(&[5, 0, 1, 2, 5, 9, -1]),
            vec![(3, 4), (6, 8), (10, u32::MAX)]
        );
        assert_eq!(close_ranges(&[0]), vec![(1, u32::MAX)]);
        assert_eq!(close_ranges(&[3]), vec![(0, 2), (4, u32::MAX)]);
    }

    #[test]
    fn ranges_handle_the_largest_descriptor() {
        assert_eq!(
            close_ranges(&[i32::MAX]),
            vec![(0, i32::MAX as u32 - 1), (i32::MAX as u32 + 1, u32::MAX)]
        );
    }
}
