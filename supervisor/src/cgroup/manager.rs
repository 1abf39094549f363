//! Per-hound cgroups: a pool directory `houndpool-<pool>` under the process's own cgroup, one
//! child `hound-<id>-g<generation>` per hound with a memory and a pids limit.
//!
//! Layout (v1): `<memory cgroup>/houndpool-<pool>/hound-<id>-g<gen>` and, when the pids
//! hierarchy is writable, the same names under the process's pids cgroup. Layout (v2): one
//! directory `<cgroup>/houndpool-<pool>/hound-<id>-g<gen>` carrying both controllers.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::detect::read_usage;
use super::files::{
    io_err, is_denied, is_missing, keyed_value, parse_err, parse_limit, read_opt, write_value,
};
use super::tree::{kill_procs, read_procs, remove_tree, subdirs, tree_has_procs};
use super::{fmt_bytes, CgroupVersion, ContainerLimits};
use crate::PoolError;

/// Prefix of every pool directory this module creates.
pub const POOL_DIR_PREFIX: &str = "houndpool-";

/// Longest accepted pool name (cgroup names are directory names).
const MAX_POOL_NAME: usize = 64;

/// Outcome of [`HoundCgroups::setup`].
#[derive(Debug)]
pub enum CgroupSetup {
    /// Per-hound cgroups can be created.
    Ready(HoundCgroups),
    /// They cannot, for the reason given (for the sandbox report).
    Unavailable(String),
}

/// The pool's cgroup directories; creates, and cleans up, per-hound cgroups.
///
/// Invariant: the pool directory in the memory hierarchy exists (and on v2 delegates the
/// memory controller, and the pids controller when `pids_pool` is set) at construction.
#[derive(Debug)]
pub struct HoundCgroups {
    pool_name: String,
    version: CgroupVersion,
    memory_pool: PathBuf,
    /// v1: the pool directory in the pids hierarchy; v2: equal to `memory_pool` when the pids
    /// controller is delegated. `None` when no pids limit can be set.
    pids_pool: Option<PathBuf>,
    /// Why `pids_pool` is `None`.
    pids_note: String,
}

/// One hound's cgroup (one directory per hierarchy).
///
/// Dropping it leaves the directories in place ([`HoundCgroups::cleanup_leftovers`] of the
/// next run removes them); call [`HoundCgroup::remove`] after reaping the hound.
#[derive(Debug)]
pub struct HoundCgroup {
    hound_id: u32,
    generation: u64,
    version: CgroupVersion,
    memory_dir: PathBuf,
    /// v1: directory in the pids hierarchy; v2: equal to `memory_dir` when pids is delegated.
    pids_dir: Option<PathBuf>,
    /// The limit the kernel applies (read back: v1 rounds to pages).
    memory_limit: u64,
    pids_limit: Option<u32>,
    swap_capped: bool,
    pids_note: String,
}

fn validate_pool_name(name: &str) -> Result<(), PoolError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POOL_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PoolError::InvalidConfig {
            key: "pool.name",
            value: name.chars().take(100).collect(),
            allowed: format!(
                "1 to {MAX_POOL_NAME} characters of [A-Za-z0-9._-], not starting with '.'"
            ),
        })
    }
}

/// `mkdir`, treating "already exists" as success. Returns whether the directory was created.
fn mkdir_existing_ok(dir: &Path) -> std::io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a space-separated controller list file (`cgroup.controllers`,
/// `cgroup.subtree_control`); missing → empty.
fn controller_list(path: &Path) -> Result<Vec<String>, PoolError> {
    Ok(read_opt(path)?
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// v2: enables `controller` for the children of `dir` unless already enabled.
fn enable_controller(dir: &Path, controller: &str) -> std::io::Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&path)?;
    if current.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    write_value(&path, &format!("+{controller}"))
}

/// Explains a failure to delegate a v2 controller.
fn delegation_failure(dir: &Path, controller: &str, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EBUSY) {
        format!(
            "cannot enable the {controller} controller below {}: the cgroup holds processes \
             (cgroup v2 no-internal-processes rule; only the root cgroup or a cgroup whose \
             processes live in leaf children can delegate)",
            dir.display()
        )
    } else {
        format!(
            "cannot enable the {controller} controller below {}: {e}",
            dir.display()
        )
    }
}

impl HoundCgroups {
    /// Like [`HoundCgroups::setup`], logging the reason and returning `None` when per-hound
    /// cgroups are unavailable (e.g. the memory cgroup directory is not writable).
    pub fn new(pool_name: &str, limits: &ContainerLimits) -> Result<Option<Self>, PoolError> {
        match Self::setup(pool_name, limits)? {
            CgroupSetup::Ready(c) => Ok(Some(c)),
            CgroupSetup::Unavailable(reason) => {
                tracing::info!(pool = pool_name, %reason, "per-hound cgroups unavailable");
                Ok(None)
            }
        }
    }

    /// Creates (or reuses) the pool directory `houndpool-<pool_name>` under the process's own
    /// memory cgroup (`limits.memory_dir`), and on v1 under its pids cgroup when writable.
    /// On v2 it enables the memory (and pids) controller for the children of the process's
    /// cgroup and of the pool directory.
    ///
    /// `Unavailable` (not an error) when the process has no memory cgroup, the directory is
    /// read-only or not permitted, or v2 refuses to delegate the memory controller. Errors:
    /// an invalid pool name (`InvalidConfig`: 1–64 of `[A-Za-z0-9._-]`, not starting with `.`)
    /// and unexpected I/O failures.
    pub fn setup(pool_name: &str, limits: &ContainerLimits) -> Result<CgroupSetup, PoolError> {
        validate_pool_name(pool_name)?;
        let Some(own) = limits.memory_dir.as_deref() else {
            return Ok(CgroupSetup::Unavailable(
                "the process has no memory cgroup (memory controller not found)".into(),
            ));
        };
        let dir_name = format!("{POOL_DIR_PREFIX}{pool_name}");
        let memory_pool = own.join(&dir_name);
        let created = match mkdir_existing_ok(&memory_pool) {
            Ok(created) => created,
            Err(e) if is_denied(&e) || is_missing(&e) => {
                return Ok(CgroupSetup::Unavailable(format!(
                    "cannot create {}: {e} (cgroupfs not writable)",
                    memory_pool.display()
                )))
            }
            Err(e) => return Err(io_err("mkdir", &memory_pool, e)),
        };
        let undo = |reason: String| {
            if created {
                let _ = std::fs::remove_dir(&memory_pool);
            }
            Ok(CgroupSetup::Unavailable(reason))
        };

        let (pids_pool, pids_note) = match limits.version {
            CgroupVersion::V1 => match limits.pids_dir.as_deref() {
                None => (
                    None,
                    "no pids cgroup (pids controller not found)".to_owned(),
                ),
                Some(pids_own) => {
                    let p = pids_own.join(&dir_name);
                    match mkdir_existing_ok(&p) {
                        Ok(_) => (Some(p), String::new()),
                        Err(e) => (None, format!("cannot create {}: {e}", p.display())),
                    }
                }
            },
            CgroupVersion::V2 => {
                if let Err(e) = enable_controller(own, "memory") {
                    return undo(delegation_failure(own, "memory", &e));
                }
                if let Err(e) = enable_controller(&memory_pool, "memory") {
                    return undo(delegation_failure(&memory_pool, "memory", &e));
                }
                let own_controllers = controller_list(&own.join("cgroup.controllers"))?;
                if !own_controllers.iter().any(|c| c == "pids") {
                    (
                        None,
                        "pids controller not enabled for this cgroup".to_owned(),
                    )
                } else {
                    match enable_controller(own, "pids")
                        .and_then(|()| enable_controller(&memory_pool, "pids"))
                    {
                        Ok(()) => (Some(memory_pool.clone()), String::new()),
                        Err(e) => (None, delegation_failure(own, "pids", &e)),
                    }
                }
            }
        };
        let cgroups = HoundCgroups {
            pool_name: pool_name.to_owned(),
            version: limits.version,
            memory_pool,
            pids_pool,
            pids_note,
        };
        tracing::info!(pool = pool_name, placement = %cgroups.describe(), "per-hound cgroups ready");
        Ok(CgroupSetup::Ready(cgroups))
    }

    /// The pool name given at setup.
    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    /// The interface used (that of the memory controller).
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The pool directory in the memory hierarchy.
    pub fn memory_pool_dir(&self) -> &Path {
        &self.memory_pool
    }

    /// The pool directory in the pids hierarchy (v2: the same directory), if pids limits can be
    /// set.
    pub fn pids_pool_dir(&self) -> Option<&Path> {
        self.pids_pool.as_deref()
    }

    /// One line for logs and the sandbox report: version and directories.
    pub fn describe(&self) -> String {
        match (&self.pids_pool, self.version) {
            (Some(p), CgroupVersion::V1) => format!(
                "cgroup v1: memory {}, pids {}",
                self.memory_pool.display(),
                p.display()
            ),
            (Some(_), CgroupVersion::V2) => {
                format!("cgroup v2: {} (memory, pids)", self.memory_pool.display())
            }
            (None, v) => format!(
                "cgroup {v}: memory {} (no pids limit: {})",
                self.memory_pool.display(),
                self.pids_note
            ),
        }
    }

    /// The pool directories, without duplicates (v2 has one).
    fn pool_dirs(&self) -> impl Iterator<Item = &Path> {
        let pids = self
            .pids_pool
            .as_deref()
            .filter(|p| *p != self.memory_pool.as_path());
        std::iter::once(self.memory_pool.as_path()).chain(pids)
    }

    /// Makes sure a pool directory exists (another process may have removed it as stale) and,
    /// on v2, delegates its controllers again.
    fn prepare_pool_dir(&self, dir: &Path) -> std::io::Result<()> {
        mkdir_existing_ok(dir)?;
        if self.version == CgroupVersion::V2 {
            enable_controller(dir, "memory")?;
            if self.pids_pool.is_some() {
                enable_controller(dir, "pids")?;
            }
        }
        Ok(())
    }

    /// Creates `dir/name`, re-creating the pool directory if it vanished and replacing a
    /// leftover of the same name (its processes are killed).
    fn make_hound_dir(&self, pool: &Path, name: &str) -> Result<PathBuf, PoolError> {
        let dir = pool.join(name);
        for attempt in 0..3 {
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < 2 => {
                    self.prepare_pool_dir(pool)
                        .map_err(|e| io_err("mkdir", pool, e))?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 2 => {
                    tracing::warn!(dir = %dir.display(), "replacing a leftover hound cgroup");
                    remove_tree(&dir, true, 0)?;
                }
                Err(e) => return Err(io_err("mkdir", &dir, e)),
            }
        }
        Err(io_err(
            "mkdir",
            &dir,
            std::io::Error::other("directory kept reappearing or vanishing"),
        ))
    }

    /// Creates the cgroup of one hound generation: `hound-<id>-g<generation>` with
    /// `memory_limit` bytes (v1 `memory.limit_in_bytes`, plus `memory.memsw.limit_in_bytes`
    /// when swap accounting exists; v2 `memory.max`, `memory.swap.max = 0` and
    /// `memory.oom.group = 1` where present) and `pids_limit` processes/threads (`pids.max`)
    /// when a pids pool exists.
    ///
    /// Both limits must be positive (`InvalidConfig` otherwise). On any failure the
    /// directories created so far are removed again.
    pub fn create(
        &self,
        hound_id: u32,
        generation: u64,
        memory_limit: u64,
        pids_limit: u32,
    ) -> Result<HoundCgroup, PoolError> {
        self.create_named(
            &format!("hound-{hound_id}-g{generation}"),
            hound_id,
            generation,
            memory_limit,
            pids_limit,
        )
    }

    /// [`Self::create`] under a name of the caller's choice (a single path component such as
    /// `spare-7`, for a hound started ahead of demand before it has a slot). The same limits
    /// and clean-up rules apply; `hound_id` and `generation` are only recorded.
    pub fn create_named(
        &self,
        name: &str,
        hound_id: u32,
        generation: u64,
        memory_limit: u64,
        pids_limit: u32,
    ) -> Result<HoundCgroup, PoolError> {
        if memory_limit == 0 || pids_limit == 0 {
            return Err(PoolError::InvalidConfig {
                key: "hound cgroup limits",
                value: format!("memory {memory_limit}, pids {pids_limit}"),
                allowed: "both greater than zero".into(),
            });
        }
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(PoolError::InvalidConfig {
                key: "hound cgroup name",
                value: name.into(),
                allowed: "one non-empty path component".into(),
            });
        }
        let memory_dir = self.make_hound_dir(&self.memory_pool, name)?;
        let mut cg = HoundCgroup {
            hound_id,
            generation,
            version: self.version,
            memory_dir,
            pids_dir: None,
            memory_limit,
            pids_limit: None,
            swap_capped: false,
            pids_note: self.pids_note.clone(),
        };
        match self.configure(&mut cg, name, memory_limit, pids_limit) {
            Ok(()) => Ok(cg),
            Err(e) => {
                if let Err(undo) = cg.remove_dirs() {
                    tracing::warn!(error = %undo, "cannot remove a half-created hound cgroup");
                }
                Err(e)
            }
        }
    }

    fn configure(
        &self,
        cg: &mut HoundCgroup,
        name: &str,
        memory_limit: u64,
        pids_limit: u32,
    ) -> Result<(), PoolError> {
        let write = |dir: &Path, file: &str, value: &str| {
            let path = dir.join(file);
            write_value(&path, value).map_err(|e| io_err("write", &path, e))
        };
        // Best effort: a file that exists but refuses the value is only logged.
        let try_write = |dir: &Path, file: &str, value: &str| -> bool {
            let path = dir.join(file);
            match write_value(&path, value) {
                Ok(()) => true,
                Err(e) if is_missing(&e) => false,
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "optional cgroup setting refused");
                    false
                }
            }
        };
        let limit = memory_limit.to_string();
        let limit_file = match self.version {
            CgroupVersion::V1 => {
                write(&cg.memory_dir, "memory.limit_in_bytes", &limit)?;
                // memsw must stay ≥ the memory limit, so it is set second.
                cg.swap_capped = try_write(&cg.memory_dir, "memory.memsw.limit_in_bytes", &limit);
                "memory.limit_in_bytes"
            }
            CgroupVersion::V2 => {
                write(&cg.memory_dir, "memory.max", &limit)?;
                cg.swap_capped = try_write(&cg.memory_dir, "memory.swap.max", "0");
                try_write(&cg.memory_dir, "memory.oom.group", "1");
                "memory.max"
            }
        };
        let path = cg.memory_dir.join(limit_file);
        let effective = read_opt(&path)?
            .map(|t| parse_limit(&path, &t))
            .transpose()?
            .flatten()
            .ok_or_else(|| parse_err(&path, "memory limit did not take effect"))?;
        cg.memory_limit = effective;

        if let Some(pids_pool) = &self.pids_pool {
            let dir = if self.version == CgroupVersion::V1 {
                self.make_hound_dir(pids_pool, name)?
            } else {
                cg.memory_dir.clone()
            };
            cg.pids_dir = Some(dir.clone());
            write(&dir, "pids.max", &pids_limit.to_string())?;
            cg.pids_limit = Some(pids_limit);
        }
        Ok(())
    }

    /// Removes every hound cgroup left in this pool's directories by a previous run: processes
    /// still listed in their `cgroup.procs` are SIGKILLed first (never this process), then the
    /// directories are removed, retrying while the kernel finishes the kills. Call it before
    /// creating hounds. Returns how many hound cgroups were removed; failures are logged.
    pub fn cleanup_leftovers(&self) -> usize {
        let mut removed = BTreeSet::new();
        for pool in self.pool_dirs() {
            for child in subdirs(pool) {
                match remove_tree(&child, true, 0) {
                    Ok(()) => {
                        if let Some(name) = child.file_name() {
                            removed.insert(name.to_owned());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot remove a leftover hound cgroup"),
                }
            }
        }
        if !removed.is_empty() {
            tracing::info!(pool = %self.pool_name, count = removed.len(), "removed leftover hound cgroups");
        }
        removed.len()
    }

    /// Removes `houndpool-*` pool directories other than `own_pool_name`'s under the process's
    /// memory and pids cgroups (`limits.memory_dir`, `limits.pids_dir`): those of earlier runs
    /// under other pool names.
    ///
    /// A pool directory that still holds any process is left alone: it may belong to a live
    /// supervisor sharing this cgroup. Nothing is killed here; removal only succeeds for empty
    /// cgroups. (A live supervisor whose pool is momentarily empty may see its pool directory
    /// disappear; [`HoundCgroups::create`] re-creates it.) Returns how many pools were removed.
    pub fn cleanup_stale_pools(limits: &ContainerLimits, own_pool_name: &str) -> usize {
        let own = format!("{POOL_DIR_PREFIX}{own_pool_name}");
        let mut removed = BTreeSet::new();
        let mut parents: Vec<&Path> = limits.memory_dir.iter().map(PathBuf::as_path).collect();
        if let Some(p) = limits.pids_dir.as_deref() {
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
        for parent in parents {
            for pool in subdirs(parent) {
                let Some(name) = pool.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !name.starts_with(POOL_DIR_PREFIX) || name == own {
                    continue;
                }
                match tree_has_procs(&pool, 0) {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(dir = %pool.display(), "pool cgroup in use, kept");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot inspect a pool cgroup, kept");
                        continue;
                    }
                }
                match remove_tree(&pool, false, 0) {
                    Ok(()) => {
                        removed.insert(name.to_owned());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot remove a stale pool cgroup"),
                }
            }
        }
        removed.len()
    }

    /// Removes the pool: kills whatever is left in its hound cgroups, removes them and the pool
    /// directories. For shutdown, after the hounds are reaped.
    pub fn remove_pool(self) -> Result<(), PoolError> {
        for dir in self.pool_dirs() {
            remove_tree(dir, true, 0)?;
        }
        Ok(())
    }
}

impl HoundCgroup {
    /// The hound id given at creation.
    pub fn hound_id(&self) -> u32 {
        self.hound_id
    }

    /// The generation given at creation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The directory in the memory hierarchy (v2: the only one; usable with
    /// `CLONE_INTO_CGROUP`).
    pub fn memory_dir(&self) -> &Path {
        &self.memory_dir
    }

    /// The directory carrying the pids limit, if any (v2: equal to [`Self::memory_dir`]).
    pub fn pids_dir(&self) -> Option<&Path> {
        self.pids_dir.as_deref()
    }

    /// The memory limit the kernel applies, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// The pids limit, `None` when no pids controller was available.
    pub fn pids_limit(&self) -> Option<u32> {
        self.pids_limit
    }

    fn dirs(&self) -> impl Iterator<Item = &Path> {
        let pids = self
            .pids_dir
            .as_deref()
            .filter(|p| *p != self.memory_dir.as_path());
        std::iter::once(self.memory_dir.as_path()).chain(pids)
    }

    /// Moves process `pid` (all its threads) into this cgroup, in every hierarchy. Call it
    /// before the hound runs job code (the supervisor does it before releasing the handshake).
    /// On error the process may be in some hierarchies only: kill it.
    pub fn add_process(&self, pid: i32) -> Result<(), PoolError> {
        for dir in self.dirs() {
            let path = dir.join("cgroup.procs");
            if pid <= 0 {
                return Err(io_err(
                    "attach",
                    &path,
                    std::io::Error::new(ErrorKind::InvalidInput, format!("invalid pid {pid}")),
                ));
            }
            write_value(&path, &pid.to_string()).map_err(|e| io_err("attach", &path, e))?;
        }
        Ok(())
    }

    /// Number of processes the OOM killer killed in this cgroup (v1: `oom_kill` of
    /// `memory.oom_control`; v2: `oom_kill` of `memory.events`). Read it before
    /// [`Self::remove`]; a hound that died by SIGKILL with a count above the one before is an
    /// `OutOfMemory`. 0 when the counter cannot be read (see [`Self::try_oom_kills`]).
    pub fn oom_kills(&self) -> u64 {
        self.try_oom_kills().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the OOM kill counter");
            0
        })
    }

    /// Like [`Self::oom_kills`], reporting why the counter cannot be read. A kernel without the
    /// counter (v1 before 4.13) yields 0.
    pub fn try_oom_kills(&self) -> Result<u64, PoolError> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        let path = self.memory_dir.join(file);
        let text = read_opt(&path)?
            .ok_or_else(|| io_err("read", &path, std::io::Error::from(ErrorKind::NotFound)))?;
        Ok(keyed_value(&path, &text, "oom_kill")?.unwrap_or(0))
    }

    /// Memory currently charged to this cgroup (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`); `None` if unreadable.
    pub fn memory_usage(&self) -> Option<u64> {
        read_usage(&self.memory_dir, self.version).ok().flatten()
    }

    /// Process ids listed in this cgroup (all hierarchies, deduplicated).
    pub fn procs(&self) -> Result<Vec<i32>, PoolError> {
        let mut all = BTreeSet::new();
        for dir in self.dirs() {
            all.extend(read_procs(dir)?);
        }
        Ok(all.into_iter().collect())
    }

    /// SIGKILLs every process in this cgroup (never the calling process). Returns how many
    /// distinct processes were signalled.
    pub fn kill_all(&self) -> usize {
        // On v1 a process is listed in both hierarchies: count it once.
        let signalled: BTreeSet<i32> = self.dirs().flat_map(kill_procs).collect();
        signalled.len()
    }

    /// What this cgroup enforces, for the sandbox report, e.g.
    /// `cgroup v1 memory limit 64 MiB + pids limit 16`.
    pub fn mechanisms(&self) -> String {
        let swap = if self.swap_capped { ", no swap" } else { "" };
        let pids = match self.pids_limit {
            Some(n) => format!("pids limit {n}"),
            None => format!("no pids limit ({})", self.pids_note),
        };
        format!(
            "cgroup {} memory limit {}{swap} + {pids}",
            self.version,
            fmt_bytes(self.memory_limit)
        )
    }

    fn remove_dirs(&self) -> Result<(), PoolError> {
        let mut first_err = None;
        for dir in self.dirs() {
            if let Err(e) = remove_tree(dir, true, 0) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Renames the cgroup (every hierarchy's directory) to `name` in the same pool directory
    /// and records `hound_id` and `generation`, e.g. when a hound started ahead of demand as
    /// `spare-<n>` is given its slot. The processes inside stay where they are. Cgroup v1
    /// supports renaming; cgroup v2 refuses it (the kernel has no rename for it), in which
    /// case this returns the error and the cgroup keeps its old name and identity. If the
    /// second hierarchy's rename fails after the first succeeded, the first is renamed back.
    pub fn rename(&mut self, name: &str, hound_id: u32, generation: u64) -> Result<(), PoolError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(PoolError::InvalidConfig {
                key: "hound cgroup name",
                value: name.into(),
                allowed: "one non-empty path component".into(),
            });
        }
        let renamed = |dir: &Path| dir.with_file_name(name);
        let new_memory = renamed(&self.memory_dir);
        std::fs::rename(&self.memory_dir, &new_memory)
            .map_err(|e| io_err("rename", &self.memory_dir, e))?;
        let pids_separate = self.pids_dir.as_ref().filter(|p| **p != self.memory_dir);
        let new_pids = match pids_separate {
            None => self.pids_dir.as_ref().map(|_| new_memory.clone()),
            Some(old) => {
                let new = renamed(old);
                if let Err(e) = std::fs::rename(old, &new) {
                    let _ = std::fs::rename(&new_memory, &self.memory_dir);
                    return Err(io_err("rename", old, e));
                }
                Some(new)
            }
        };
        self.memory_dir = new_memory;
        self.pids_dir = new_pids;
        self.hound_id = hound_id;
        self.generation = generation;
        Ok(())
    }

    /// Removes the cgroup directories. Call it after reaping the hound: anything still inside
    /// is SIGKILLed, and `rmdir` is retried with short sleeps while the kernel finishes
    /// tearing the processes down (EBUSY), for up to about two seconds. An already removed
    /// directory counts as success.
    pub fn remove(self) -> Result<(), PoolError> {
        self.remove_dirs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_validated() {
        for ok in ["default", "a", "pool-1_x.y", &"p".repeat(64)] {
            validate_pool_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "ü", &"p".repeat(65)] {
            let e = validate_pool_name(bad).unwrap_err();
            assert!(matches!(e, PoolError::InvalidConfig { .. }), "{bad}");
        }
    }

    fn limits_at(dir: &Path, version: CgroupVersion) -> ContainerLimits {
        let mut l = ContainerLimits::unlimited(version);
        l.memory_dir = Some(dir.to_path_buf());
        l
    }

    #[test]
    fn setup_without_memory_cgroup_is_unavailable() {
        let l = ContainerLimits::unlimited(CgroupVersion::V2);
        match HoundCgroups::setup("p", &l).unwrap() {
            CgroupSetup::Unavailable(r) => assert!(r.contains("no memory cgroup"), "{r}"),
            CgroupSetup::Ready(_) => panic!("ready without a memory cgroup"),
        }
        assert!(HoundCgroups::new("p", &l).unwrap().is_none());
    }

    #[test]
    fn setup_in_a_missing_directory_is_unavailable() {
        let t = tempfile::tempdir().unwrap();
        let l = limits_at(&t.path().join("nope"), CgroupVersion::V1);
        assert!(matches!(
            HoundCgroups::setup("p", &l).unwrap(),
            CgroupSetup::Unavailable(_)
        ));
    }

    #[test]
    fn v2_setup_that_cannot_delegate_is_unavailable_and_leaves_nothing() {
        // A plain directory is no cgroup: cgroup.subtree_control is missing, so delegation
        // fails and the pool directory created for the attempt is removed again.
        let t = tempfile::tempdir().unwrap();
        let l = limits_at(t.path(), CgroupVersion::V2);
        match HoundCgroups::setup("p", &l).unwrap() {
            CgroupSetup::Unavailable(r) => assert!(r.contains("memory controller"), "{r}"),
            CgroupSetup::Ready(_) => panic!("ready on a plain directory"),
        }
        assert!(!t.path().join("houndpool-p").exists());
    }
}
