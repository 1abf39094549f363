//! Small helpers over cgroupfs files: optional reads, single-write updates, value parsing.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::PoolError;

/// Values at or above this many bytes are "unlimited": v1 reports `PAGE_COUNTER_MAX` pages in
/// bytes (9223372036854771712 with 4 KiB pages, slightly less with larger pages).
pub(crate) const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Whether an I/O error means "the file is not there" (missing controller, missing cgroup).
pub(crate) fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Whether an I/O error means "we may not change this" (read-only cgroupfs, no permission).
pub(crate) fn is_denied(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

/// Builds the crate error for a failed cgroupfs operation.
pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> PoolError {
    PoolError::Cgroup {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Builds the crate error for unparsable content of `path`.
pub(crate) fn parse_err(path: &Path, detail: impl Into<String>) -> PoolError {
    PoolError::CgroupParse {
        what: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Reads a (small) cgroup file. Missing file or directory → `Ok(None)`; any other failure is
/// an error naming the file.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, PoolError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(io_err("read", path, e)),
    }
}

/// Writes `value` to an existing cgroup file in one `write(2)` (cgroupfs takes a value per
/// write). Never creates the file.
pub(crate) fn write_value(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(std::io::Error::new(
            ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Parses a byte limit: `max` → `None`; a decimal at or above [`UNLIMITED_THRESHOLD`] → `None`;
/// anything else must be a plain decimal.
pub(crate) fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, PoolError> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let v: u64 = t
        .parse()
        .map_err(|_| parse_err(path, format!("expected a byte count or \"max\", got {t:?}")))?;
    Ok((v < UNLIMITED_THRESHOLD).then_some(v))
}

/// Parses a plain decimal counter (e.g. `memory.current`).
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, PoolError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| parse_err(path, format!("expected a decimal number, got {t:?}")))
}

/// Finds `key value` in a flat-keyed file (`memory.events`, `memory.oom_control`,
/// `memory.stat`). `Ok(None)` when the key is absent; an error when its value is not a number.
pub(crate) fn keyed_value(path: &Path, text: &str, key: &str) -> Result<Option<u64>, PoolError> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return v
                .parse()
                .map(Some)
                .map_err(|_| parse_err(path, format!("value of {key:?} is not a number: {v:?}")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_max_sentinels_and_numbers() {
        let p = Path::new("memory.max");
        assert_eq!(parse_limit(p, "max\n").unwrap(), None);
        assert_eq!(parse_limit(p, "9223372036854771712\n").unwrap(), None);
        assert_eq!(parse_limit(p, "9223372036854710272").unwrap(), None);
        assert_eq!(parse_limit(p, "4611686018427387904").unwrap(), None);
        assert_eq!(
            parse_limit(p, "4611686018427387903").unwrap(),
            Some((1 << 62) - 1)
        );
        assert_eq!(parse_limit(p, "268435456\n").unwrap(), Some(256 << 20));
        for bad in ["", "-1", "12abc", "1 2", "0x10"] {
            let e = parse_limit(p, bad).unwrap_err().to_string();
            assert!(e.contains("memory.max"), "{e}");
        }
    }

    #[test]
    fn keyed_values_are_found_or_absent() {
        let p = Path::new("memory.events");
        let text = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(p, text, "oom_kill").unwrap(), Some(1));
        assert_eq!(keyed_value(p, text, "oom").unwrap(), Some(2));
        assert_eq!(keyed_value(p, text, "nope").unwrap(), None);
        assert!(keyed_value(p, "oom_kill x\n", "oom_kill").is_err());
        assert!(keyed_value(p, "oom_kill\n", "oom_kill").is_err());
    }
}
