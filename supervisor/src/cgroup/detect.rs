//! Detection of the process's own cgroup limits from /proc/self/cgroup, /proc/self/mountinfo
//! and the limit files along the cgroup path.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{keyed_value, parse_err, parse_limit, parse_u64, read_opt};
use super::{CgroupVersion, ContainerLimits};
use crate::PoolError;

const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
const PROC_SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// Default `cpu.max` period when the file gives only a quota.
const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// Reads the limits of the running process's cgroup from the real /proc and cgroupfs.
///
/// A system without cgroup information (no /proc/self/cgroup, nothing mounted) yields
/// [`ContainerLimits::unlimited`]. Missing limit files mean "no limit"; malformed content is a
/// [`PoolError::CgroupParse`] naming the file; other I/O failures a [`PoolError::Cgroup`].
pub fn detect() -> Result<ContainerLimits, PoolError> {
    let read = |p: &str| read_opt(Path::new(p)).map(Option::unwrap_or_default);
    let cgroup = read(PROC_SELF_CGROUP)?;
    let mountinfo = read(PROC_SELF_MOUNTINFO)?;
    detect_in(&cgroup, &mountinfo, Path::new("/"))
}

/// Like [`detect`], over given contents of /proc/self/cgroup and /proc/self/mountinfo, with
/// `fs_root` prepended to every mount point (for fixture trees; `/` for the real system).
///
/// For each controller (memory, cpu, cpuset, pids) the v1 hierarchy carrying it is used when
/// there is one, else the unified (v2) hierarchy if the controller is enabled there. The
/// process's cgroup path has the mount's root stripped (in a container the mount root is the
/// container's cgroup), and every limit is the minimum from the process's cgroup up to the
/// cgroup at the mount point.
pub fn detect_in(
    proc_self_cgroup: &str,
    mountinfo: &str,
    fs_root: &Path,
) -> Result<ContainerLimits, PoolError> {
    let entries = parse_proc_self_cgroup(proc_self_cgroup)?;
    let mounts = parse_mountinfo(mountinfo)?;
    let view = View {
        entries: &entries,
        mounts: &mounts,
        fs_root,
    };

    let memory = view.locate("memory")?;
    let cpu = view.locate("cpu")?;
    let cpuset = view.locate("cpuset")?;
    let pids = view.locate("pids")?;
    tracing::debug!(?memory, ?cpu, ?cpuset, ?pids, "cgroup directories located");

    let version = match &memory {
        Some(chain) => chain.version,
        None if view.has_v2() => CgroupVersion::V2,
        None if view.has_v1() => CgroupVersion::V1,
        None => CgroupVersion::V2,
    };
    let mut limits = ContainerLimits::unlimited(version);
    if let Some(chain) = &memory {
        read_memory(chain, &mut limits)?;
    }
    if let Some(chain) = &cpu {
        limits.cpu_quota_cores = read_cpu_quota(chain)?;
    }
    if let Some(chain) = &cpuset {
        limits.cpuset_cpus = read_cpuset(chain)?;
    }
    if let Some(chain) = &pids {
        limits.pids_dir = chain.leaf().is_dir().then(|| chain.leaf().to_path_buf());
    }
    Ok(limits)
}

/// Current memory usage of the process's memory cgroup (v1 `memory.usage_in_bytes`, v2
/// `memory.current`), in bytes. `None` when there is no memory cgroup or it cannot be read.
/// Includes page cache; see [`memory_working_set`] for the reclaim-aware figure.
pub fn memory_usage(limits: &ContainerLimits) -> Option<u64> {
    let dir = limits.memory_dir.as_deref()?;
    read_usage(dir, limits.version).ok().flatten()
}

/// [`memory_usage`] minus inactive file-backed pages (v1 `total_inactive_file`, v2
/// `inactive_file` of `memory.stat`), the "working set" the kubelet compares against the limit:
/// page cache that the kernel drops before it OOM-kills. Falls back to the plain usage when
/// `memory.stat` cannot be read. `None` as for [`memory_usage`].
pub fn memory_working_set(limits: &ContainerLimits) -> Option<u64> {
    let dir = limits.memory_dir.as_deref()?;
    let usage = read_usage(dir, limits.version).ok().flatten()?;
    let key = match limits.version {
        CgroupVersion::V1 => "total_inactive_file",
        CgroupVersion::V2 => "inactive_file",
    };
    let path = dir.join("memory.stat");
    let inactive = read_opt(&path)
        .ok()
        .flatten()
        .and_then(|text| keyed_value(&path, &text, key).ok().flatten())
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// Reads the memory usage counter of a memory cgroup directory.
pub(super) fn read_usage(dir: &Path, version: CgroupVersion) -> Result<Option<u64>, PoolError> {
    let file = match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    let path = dir.join(file);
    read_opt(&path)?
        .map(|text| parse_u64(&path, &text))
        .transpose()
}

/// One line of /proc/self/cgroup: `hierarchy-id:controller-list:cgroup-path`.
#[derive(Debug)]
struct ProcEntry {
    id: u32,
    /// Empty for the unified hierarchy (`0::/path`).
    controllers: Vec<String>,
    path: String,
}

impl ProcEntry {
    fn is_unified(&self) -> bool {
        self.id == 0 && self.controllers.is_empty()
    }
}

fn parse_proc_self_cgroup(text: &str) -> Result<Vec<ProcEntry>, PoolError> {
    let what = Path::new(PROC_SELF_CGROUP);
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: &str| parse_err(what, format!("line {}: {detail}: {line:?}", n + 1));
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected id:controllers:path"));
        };
        let id: u32 = id
            .parse()
            .map_err(|_| bad("hierarchy id is not a number"))?;
        if !path.starts_with('/') {
            return Err(bad("cgroup path is not absolute"));
        }
        entries.push(ProcEntry {
            id,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    Ok(entries)
}

#[derive(Debug, PartialEq)]
enum MountKind {
    /// A v1 hierarchy and the controllers (and `name=` options) in its super options.
    V1(Vec<String>),
    V2,
}

/// A cgroup mount from /proc/self/mountinfo.
#[derive(Debug)]
struct CgroupMount {
    /// The cgroup at the mount point, as a path of the hierarchy (`/` on the host, the
    /// container's cgroup inside a container without cgroup namespace).
    root: Vec<u8>,
    /// Where it is mounted (escapes decoded).
    mount_point: PathBuf,
    kind: MountKind,
}

/// Decodes the octal escapes (`\040` for a space…) that mountinfo uses in paths.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, PoolError> {
    let what = Path::new(PROC_SELF_MOUNTINFO);
    let mut mounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: &str| parse_err(what, format!("line {}: {detail}: {line:?}", n + 1));
        let (left, right) = line
            .split_once(" - ")
            .ok_or_else(|| bad("no \" - \" separator"))?;
        let left: Vec<&str> = left.split(' ').collect();
        if left.len() < 6 {
            return Err(bad("fewer than 6 fields before the separator"));
        }
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let _source = right.next();
        let super_options = right.next().unwrap_or("");
        let kind = match fstype {
            "cgroup" => MountKind::V1(
                super_options
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            "cgroup2" => MountKind::V2,
            "" => return Err(bad("no filesystem type")),
            _ => continue,
        };
        mounts.push(CgroupMount {
            root: unescape(left[3]),
            mount_point: PathBuf::from(OsStr::from_bytes(&unescape(left[4]))),
            kind,
        });
    }
    Ok(mounts)
}

/// The components of `path` below `root`, if `path` is `root` or lies under it and contains
/// no `.`/`..` component (a path outside our view, as cgroup namespaces print with `/..`).
fn relative_components<'a>(root: &[u8], path: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    let comps = |p: &'a [u8]| p.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let root_comps: Vec<&[u8]> = root
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut path_comps = comps(path);
    for r in &root_comps {
        if path_comps.next() != Some(*r) {
            return None;
        }
    }
    let rest: Vec<&[u8]> = path_comps.collect();
    if rest.iter().any(|c| *c == b"." || *c == b"..") {
        return None;
    }
    Some(rest)
}

/// The directories of one controller's view, from the mount point down to the process's
/// cgroup (both included).
#[derive(Debug)]
struct Chain {
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
}

impl Chain {
    fn leaf(&self) -> &Path {
        // `dirs` always holds at least the mount directory (see `View::chain`); the fallback
        // is never taken.
        self.dirs.last().map_or(Path::new("/"), PathBuf::as_path)
    }
}

struct View<'a> {
    entries: &'a [ProcEntry],
    mounts: &'a [CgroupMount],
    fs_root: &'a Path,
}

impl View<'_> {
    fn has_v1(&self) -> bool {
        self.entries.iter().any(|e| !e.is_unified())
            && self
                .mounts
                .iter()
                .any(|m| matches!(m.kind, MountKind::V1(_)))
    }

    fn has_v2(&self) -> bool {
        self.entries.iter().any(ProcEntry::is_unified)
            && self.mounts.iter().any(|m| m.kind == MountKind::V2)
    }

    /// Builds the chain for `entry` under the best mount among `candidates`: the one whose
    /// root is the longest prefix of the entry's path.
    fn chain<'m>(
        &self,
        version: CgroupVersion,
        entry: &ProcEntry,
        candidates: impl Iterator<Item = &'m CgroupMount>,
    ) -> Option<Chain> {
        let (mount, rest) = candidates
            .filter_map(|m| relative_components(&m.root, entry.path.as_bytes()).map(|r| (m, r)))
            .max_by_key(|(m, _)| m.root.len())?;
        let mount_point = mount
            .mount_point
            .strip_prefix("/")
            .unwrap_or(&mount.mount_point);
        let mut dir = self.fs_root.join(mount_point);
        let mut dirs = vec![dir.clone()];
        for c in rest {
            dir.push(OsStr::from_bytes(c));
            dirs.push(dir.clone());
        }
        Some(Chain { version, dirs })
    }

    /// Where `controller` is for this process: its v1 hierarchy if it has one, else the unified
    /// hierarchy when the controller is enabled there (or `cgroup.controllers` is unreadable).
    fn locate(&self, controller: &str) -> Result<Option<Chain>, PoolError> {
        let v1_entry = self
            .entries
            .iter()
            .find(|e| !e.is_unified() && e.controllers.iter().any(|c| c == controller));
        let v1_mounts = || {
            self.mounts.iter().filter(move |m| match &m.kind {
                MountKind::V1(opts) => opts.iter().any(|o| o == controller),
                MountKind::V2 => false,
            })
        };
        if let Some(entry) = v1_entry {
            if v1_mounts().next().is_some() {
                // The controller is bound to this v1 hierarchy; it cannot also be in v2.
                return Ok(self.chain(CgroupVersion::V1, entry, v1_mounts()));
            }
        }
        let Some(entry) = self.entries.iter().find(|e| e.is_unified()) else {
            return Ok(None);
        };
        let v2_mounts = self.mounts.iter().filter(|m| m.kind == MountKind::V2);
        let Some(chain) = self.chain(CgroupVersion::V2, entry, v2_mounts) else {
            return Ok(None);
        };
        let enabled = match read_opt(&chain.leaf().join("cgroup.controllers"))? {
            Some(list) => list.split_whitespace().any(|c| c == controller),
            None => true,
        };
        Ok(enabled.then_some(chain))
    }
}

fn min_opt<T: PartialOrd>(acc: Option<T>, v: Option<T>) -> Option<T> {
    match (acc, v) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn read_memory(chain: &Chain, limits: &mut ContainerLimits) -> Result<(), PoolError> {
    let read_limit = |dir: &Path, file: &str| -> Result<Option<u64>, PoolError> {
        let path = dir.join(file);
        Ok(match read_opt(&path)? {
            Some(text) => parse_limit(&path, &text)?,
            None => None,
        })
    };
    for dir in &chain.dirs {
        match chain.version {
            CgroupVersion::V1 => {
                let v = read_limit(dir, "memory.limit_in_bytes")?;
                limits.memory_limit = min_opt(limits.memory_limit, v);
            }
            CgroupVersion::V2 => {
                let max = read_limit(dir, "memory.max")?;
                limits.memory_limit = min_opt(limits.memory_limit, max);
                let high = read_limit(dir, "memory.high")?;
                limits.memory_high = min_opt(limits.memory_high, high);
            }
        }
    }
    let leaf = chain.leaf();
    limits.memory_usage = read_usage(leaf, chain.version)?;
    limits.memory_dir = leaf.is_dir().then(|| leaf.to_path_buf());
    Ok(())
}

/// Cores of one level's quota, validating that both numbers are positive.
fn cores(path: &Path, quota: u64, period: u64) -> Result<f64, PoolError> {
    if quota == 0 || period == 0 {
        return Err(parse_err(
            path,
            format!("quota {quota} / period {period}: both must be positive"),
        ));
    }
    // Microsecond counts are far below 2^53: the conversions are exact.
    Ok(quota as f64 / period as f64)
}

fn read_cpu_quota(chain: &Chain) -> Result<Option<f64>, PoolError> {
    let mut best = None;
    for dir in &chain.dirs {
        let level = match chain.version {
            CgroupVersion::V1 => {
                let qpath = dir.join("cpu.cfs_quota_us");
                let Some(q) = read_opt(&qpath)? else { continue };
                let q = q.trim();
                if q == "-1" {
                    continue;
                }
                let quota: u64 = q.parse().map_err(|_| {
                    parse_err(
                        &qpath,
                        format!("expected -1 or a positive number, got {q:?}"),
                    )
                })?;
                let ppath = dir.join("cpu.cfs_period_us");
                let Some(p) = read_opt(&ppath)? else { continue };
                let period = parse_u64(&ppath, &p)?;
                cores(&ppath, quota, period)?
            }
            CgroupVersion::V2 => {
                let path = dir.join("cpu.max");
                let Some(text) = read_opt(&path)? else {
                    continue;
                };
                let fields: Vec<&str> = text.split_whitespace().collect();
                let bad = || {
                    parse_err(
                        &path,
                        format!("expected \"<quota|max> [period]\", got {text:?}"),
                    )
                };
                let (quota, period) = match fields.as_slice() {
                    [q] => (*q, None),
                    [q, p] => (*q, Some(*p)),
                    _ => return Err(bad()),
                };
                let period = match period {
                    Some(p) => p.parse::<u64>().map_err(|_| bad())?,
                    None => DEFAULT_CPU_PERIOD_US,
                };
                if quota == "max" {
                    if period == 0 {
                        return Err(bad());
                    }
                    continue;
                }
                cores(&path, quota.parse().map_err(|_| bad())?, period)?
            }
        };
        best = min_opt(best, Some(level));
    }
    Ok(best)
}

/// A CPU list (`0-3,6`) as sorted, disjoint, inclusive ranges.
type CpuRanges = Vec<(u32, u32)>;

fn parse_cpulist(path: &Path, text: &str) -> Result<CpuRanges, PoolError> {
    let t = text.trim();
    let mut ranges = Vec::new();
    if t.is_empty() {
        return Ok(ranges);
    }
    for item in t.split(',') {
        let bad = || parse_err(path, format!("bad CPU list item {item:?} in {t:?}"));
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        ranges.push((a, b));
    }
    ranges.sort_unstable();
    let mut merged: CpuRanges = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged)
}

fn intersect(x: &[(u32, u32)], y: &[(u32, u32)]) -> CpuRanges {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < x.len() && j < y.len() {
        let lo = x[i].0.max(y[j].0);
        let hi = x[i].1.min(y[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn count_cpus(ranges: &[(u32, u32)]) -> usize {
    ranges
        .iter()
        .map(|&(a, b)| {
            usize::try_from(b - a)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        })
        .fold(0usize, usize::saturating_add)
}

fn read_cpuset(chain: &Chain) -> Result<Option<usize>, PoolError> {
    let (effective, configured) = match chain.version {
        CgroupVersion::V1 => ("cpuset.effective_cpus", "cpuset.cpus"),
        CgroupVersion::V2 => ("cpuset.cpus.effective", "cpuset.cpus"),
    };
    let leaf_effective = chain.leaf().join(effective);
    if let Some(text) = read_opt(&leaf_effective)? {
        let ranges = parse_cpulist(&leaf_effective, &text)?;
        if !ranges.is_empty() {
            return Ok(Some(count_cpus(&ranges)));
        }
    }
    // No effective list: intersect the configured lists (an empty list means "inherit").
    let mut set: Option<CpuRanges> = None;
    for dir in &chain.dirs {
        let path = dir.join(configured);
        let Some(text) = read_opt(&path)? else {
            continue;
        };
        let ranges = parse_cpulist(&path, &text)?;
        if ranges.is_empty() {
            continue;
        }
        set = Some(match set {
            Some(s) => intersect(&s, &ranges),
            None => ranges,
        });
    }
    Ok(set.map(|s| count_cpus(&s)).filter(|&n| n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_cgroup_lines_parse() {
        let e =
            parse_proc_self_cgroup("12:pids:/a\n4:cpu,cpuacct:/b:c\n1:name=systemd:/\n0::/x/y\n\n")
                .unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(e[1].path, "/b:c");
        assert!(e[3].is_unified());
        assert!(!e[0].is_unified());
        for bad in ["x:memory:/", "4:memory", "4:memory:relative"] {
            let err = parse_proc_self_cgroup(bad).unwrap_err().to_string();
            assert!(err.contains("/proc/self/cgroup"), "{err}");
        }
    }

    #[test]
    fn mountinfo_lines_parse_with_optional_fields_and_escapes() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 master:2 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /mnt/my\\040cg rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].root, b"/docker/abc");
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(
            m[0].kind,
            MountKind::V1(vec!["rw".into(), "cpu".into(), "cpuacct".into()])
        );
        assert_eq!(m[1].mount_point, Path::new("/mnt/my cg"));
        assert_eq!(m[1].kind, MountKind::V2);
        for bad in [
            "31 23 0:28 / /x rw",
            "31 23 / /x - cgroup2 c rw",
            "1 2 3 / /x rw - ",
        ] {
            let err = parse_mountinfo(bad).unwrap_err().to_string();
            assert!(err.contains("/proc/self/mountinfo"), "{bad}: {err}");
        }
    }

    #[test]
    fn unescape_handles_edges() {
        assert_eq!(unescape(r"a\040b"), b"a b");
        assert_eq!(unescape(r"\134"), b"\\");
        assert_eq!(unescape(r"a\04"), b"a\\04");
        assert_eq!(unescape(r"a\9xx"), b"a\\9xx");
        assert_eq!(unescape(r"\777"), b"\\777");
    }

    #[test]
    fn relative_paths_strip_the_mount_root() {
        let r = relative_components(b"/", b"/a/b").unwrap();
        assert_eq!(r, [b"a".as_slice(), b"b".as_slice()]);
        assert!(relative_components(b"/a", b"/a").unwrap().is_empty());
        assert_eq!(
            relative_components(b"/a", b"/a/b/").unwrap(),
            [b"b".as_slice()]
        );
        assert!(relative_components(b"/a", b"/ab").is_none());
        assert!(relative_components(b"/a/b", b"/a").is_none());
        assert!(relative_components(b"/", b"/../../x").is_none());
    }

    #[test]
    fn cpulists_parse_merge_and_intersect() {
        let p = Path::new("cpuset.cpus");
        let r = parse_cpulist(p, "6,0-3\n").unwrap();
        assert_eq!(r, [(0, 3), (6, 6)]);
        assert_eq!(count_cpus(&r), 5);
        assert_eq!(parse_cpulist(p, "0-2,1-4,5").unwrap(), [(0, 5)]);
        assert!(parse_cpulist(p, "  ").unwrap().is_empty());
        for bad in ["3-1", "a", "1,,2", "-1", "0-"] {
            assert!(parse_cpulist(p, bad).is_err(), "{bad}");
        }
        let a = parse_cpulist(p, "0-7").unwrap();
        let b = parse_cpulist(p, "2-3,6-9").unwrap();
        assert_eq!(intersect(&a, &b), [(2, 3), (6, 7)]);
        assert!(intersect(&a, &parse_cpulist(p, "8-9").unwrap()).is_empty());
        assert_eq!(count_cpus(&[(0, u32::MAX)]), 1usize << 32);
    }

    #[test]
    fn min_opt_prefers_present_and_lower() {
        assert_eq!(min_opt(None, Some(3)), Some(3));
        assert_eq!(min_opt(Some(2), None), Some(2));
        assert_eq!(min_opt(Some(2), Some(1)), Some(1));
        assert_eq!(min_opt::<u64>(None, None), None);
    }
}
