//! The hound's command line: which inherited descriptors are which.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::HoundError;

/// The five descriptors a hound inherits, owned.
#[derive(Debug)]
pub struct HoundFds {
    /// Control socket (SOCK_SEQPACKET).
    pub control: OwnedFd,
    /// Request region memfd.
    pub request_region: OwnedFd,
    /// Completion region memfd.
    pub completion_region: OwnedFd,
    /// Request doorbell: the read end of a pipe whose write end only the supervisor holds.
    pub request_bell: OwnedFd,
    /// Completion doorbell: the write end of a pipe whose read end only the supervisor holds.
    pub completion_bell: OwnedFd,
}

impl HoundFds {
    /// Formats descriptor numbers as the command-line value the hound expects.
    pub fn format_arg(fds: [RawFd; 5]) -> String {
        fds.map(|fd| fd.to_string()).join(",")
    }
}

/// Parses `argv` (`[exe, "--houndpool-hound", "a,b,c,d,e"]`) and adopts the descriptors.
pub(crate) fn parse(argv: &[String]) -> Result<HoundFds, HoundError> {
    if argv.len() != 3 || argv[1] != crate::HOUND_ARG {
        return Err(HoundError::Usage(format!(
            "expected exactly `{} <5 fds>`, got {} argument(s)",
            crate::HOUND_ARG,
            argv.len().saturating_sub(1)
        )));
    }
    let mut nums = [0 as RawFd; 5];
    let parts: Vec<&str> = argv[2].split(',').collect();
    if parts.len() != 5 {
        return Err(HoundError::Usage(format!(
            "expected 5 comma-separated descriptors, got {:?}",
            argv[2]
        )));
    }
    for (slot, part) in nums.iter_mut().zip(&parts) {
        let fd: RawFd = part
            .parse()
            .map_err(|_| HoundError::Usage(format!("descriptor {part:?} is not a number")))?;
        if fd < 3 {
            return Err(HoundError::Usage(format!(
                "descriptor {fd} is a standard stream, not an inherited channel"
            )));
        }
        // Probe that the number names an open descriptor before anyone adopts it.
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(HoundError::Usage(format!("descriptor {fd} is not open")));
        }
        *slot = fd;
    }
    for i in 0..5 {
        if nums[..i].contains(&nums[i]) {
            return Err(HoundError::Usage(format!(
                "descriptor {} is listed twice",
                nums[i]
            )));
        }
    }
    // SAFETY: each number was checked to be an open descriptor (F_GETFD succeeded), none is a
    // standard stream, they are pairwise distinct, and nothing else in this process has taken
    // ownership of them: they were inherited from the supervisor precisely for the hound, and
    // parse() is called once, before any other code runs. Each becomes owned exactly once.
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(HoundFds {
        control: own(nums[0]),
        request_region: own(nums[1]),
        completion_region: own(nums[2]),
        request_bell: own(nums[3]),
        completion_bell: own(nums[4]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn refuses_wrong_shapes() {
        for a in [
            argv(&["hound"]),
            argv(&["hound", "--other", "3,4,5,6,7"]),
            argv(&["hound", crate::HOUND_ARG, "3,4,5"]),
            argv(&["hound", crate::HOUND_ARG, "3,4,x,6,7"]),
            argv(&["hound", crate::HOUND_ARG, "0,4,5,6,7"]),
            argv(&["hound", crate::HOUND_ARG, "999,998,997,996,995"]),
        ] {
            assert!(matches!(parse(&a), Err(HoundError::Usage(_))), "{a:?}");
        }
    }

    #[test]
    fn format_round_trips_numbers() {
        assert_eq!(HoundFds::format_arg([3, 4, 5, 6, 7]), "3,4,5,6,7");
    }
}
