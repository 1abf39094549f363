//! Starting one hound: regions, doorbells, socketpair, a plain spawn, the handshake.
//!
//! The hound is started with `posix_spawn` (`crate::hound_process`): the five descriptors it
//! needs stay close-on-exec in the supervisor and reach the hound, under the same numbers,
//! through the spawn's `dup2(fd, fd)` file actions, so no other child of the embedding process
//! can ever inherit them; everything else the supervisor owns is close-on-exec. Of the two doorbell pipes
//! the hound gets one end each and the supervisor keeps the other: no open file description
//! the supervisor reads or writes is ever held by a hound (see `houndpool_protocol::wake`).
//! The pool-wide `Setup` is queued on the control socket before the spawn, so the hound
//! confines itself right after exec, before it waits for anything (see
//! `houndpool_hound::sandbox`); only the slot-specific `Hello` comes later.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use houndpool_hound::{HoundFds, HOUND_ARG};
use houndpool_protocol::control::{
    ColdTarget, Hello, HoundLimits, HoundTuning, LayerMode, LayerStatus, Message, Ready, Setup,
    MAX_CONTROL_DATAGRAM,
};
use houndpool_protocol::region::{CompletionReader, RequestWriter, SupervisorRegions};
use houndpool_protocol::wake::{bell_pipe, BellListener, BellRinger};
use houndpool_protocol::HOUND_PROTOCOL_VERSION;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::cgroup::HoundCgroups;
use crate::cgroup::Placed;
use crate::config::{ColdConfig, HoundBinary, PoolConfig};
use crate::hound_process::{HoundProcess, Stderr};
use crate::PoolError;
use houndpool_protocol::control::{Layer, LayerReport};

/// Set by `run_hound_if_requested` when the current executable can serve as a hound.
pub(crate) static MULTICALL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A hound that completed its handshake. Dropping it (a spawn result nobody takes, e.g. at
/// shutdown) kills and reaps the process through its guard: no zombie on any path.
pub(crate) struct Spawned {
    pub(crate) slot: u32,
    pub(crate) generation: u64,
    pub(crate) child: ChildGuard,
    pub(crate) control: OwnedFd,
    pub(crate) writer: RequestWriter,
    pub(crate) reader: CompletionReader,
    /// Our write end of the request doorbell pipe (the hound holds the read end).
    pub(crate) request_bell: BellRinger,
    /// Our read end of the completion doorbell pipe (the hound holds the write end).
    pub(crate) completion_bell: BellListener,
    pub(crate) ready: Ready,
    pub(crate) spawn_time: Duration,
    /// The hound's cgroup, when per-hound cgroups are available.
    pub(crate) placed: Option<Placed>,
}

/// Resolves which executable to start as a hound.
pub(crate) fn resolve_binary(which: &HoundBinary) -> Result<PathBuf, PoolError> {
    let exe = || {
        std::env::current_exe().map_err(|e| {
            PoolError::HoundBinaryNotFound(format!("cannot determine the current executable: {e}"))
        })
    };
    match which {
        HoundBinary::Path(p) => {
            if p.is_file() {
                Ok(p.clone())
            } else {
                Err(PoolError::HoundBinaryNotFound(format!(
                    "{} is not a file",
                    p.display()
                )))
            }
        }
        HoundBinary::CurrentExe => exe(),
        HoundBinary::Auto => {
            if let Some(p) = std::env::var_os("HOUNDPOOL_HOUND_BIN") {
                return resolve_binary(&HoundBinary::Path(PathBuf::from(p)));
            }
            let exe = exe()?;
            let dir = exe.parent().unwrap_or(Path::new("."));
            let mut candidates = vec![dir.join("hound")];
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(up) = dir.parent() {
                    candidates.push(up.join("hound"));
                }
            }
            if let Some(found) = candidates.iter().find(|c| c.is_file()) {
                return Ok(found.clone());
            }
            if MULTICALL.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(exe);
            }
            Err(PoolError::HoundBinaryNotFound(format!(
                "no hound executable: set HOUNDPOOL_HOUND_BIN, build the `hound` binary next to \
                 {} (cargo build --bins), or call houndpool::run_hound_if_requested() first in \
                 main to use this executable (looked at: {})",
                exe.display(),
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// What every hound of the pool confines itself with (see [`Setup`]); nothing slot-specific.
pub(crate) fn setup(config: &PoolConfig) -> Setup {
    let cold = match &config.cold {
        ColdConfig::None => ColdTarget::None,
        ColdConfig::Filesystem { root, prefix } => ColdTarget::Filesystem {
            root: root.display().to_string(),
            prefix: prefix.clone(),
        },
        ColdConfig::S3(t) => ColdTarget::S3(t.clone()),
    };
    let clamp_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let s3_concurrency = config.cold_net.s3_concurrency.max(1);
    // An S3 hound with concurrent uploads starts threads, which RLIMIT_NPROC counts (per
    // user, with every other process of the user): no useful value allows them, so it is
    // left as inherited there. Processes stay impossible (seccomp admits `clone` with the
    // thread flags only); the pids cgroup bounds the threads. See docs/SECURITY.md.
    let threads = matches!(config.cold, ColdConfig::S3(_)) && s3_concurrency > 1;
    Setup {
        protocol_version: HOUND_PROTOCOL_VERSION,
        limits: HoundLimits {
            max_evidence_bytes: clamp_u32(config.max_evidence_bytes),
            max_output_bytes: clamp_u32(config.max_output_bytes),
            memory_budget_bytes: config.effective_memory_budget(),
            max_open_files: 64,
            // The hound itself: it starts no process (seccomp denies fork and clone without
            // the thread flags as well). The kernel ignores RLIMIT_NPROC for uid 0; the pids
            // cgroup bounds root hounds. 0 = left as inherited (upload threads, above).
            max_processes: if threads { 0 } else { 1 },
            gzip_level: config.gzip_level,
        },
        cold,
        sandbox: config.sandbox.clone(),
        tuning: HoundTuning {
            spin_us: clamp_u32(config.hound_spin.as_micros() as usize),
            idle_poll_ms: clamp_u32(config.hound_idle_poll.as_millis() as usize).max(1),
            s3_concurrency,
            fs_commit: config.fs_commit,
            s3_deadline_ms: s3_deadline_ms(config.job_timeout),
        },
    }
}

/// The longest one S3 store operation of a hound may take: half the pool's `job_timeout`.
///
/// The watchdog kills a hound whose front job exceeds `job_timeout`, and a killed hound's
/// uploads end `TimedOut`: their evidence is neither stored nor spooled. An endpoint that
/// accepts and never answers (or drops packets) would otherwise hold every attempt for the
/// store's own socket timeouts (5 s connect, 30 s per read), well past the default 10 s job
/// timeout. Bounded to half, a put gives up and spools with the other half left for the
/// spool write (an fsync) and for reporting on a loaded machine. At least 1 ms (0 would mean
/// no bound).
fn s3_deadline_ms(job_timeout: Duration) -> u32 {
    u32::try_from((job_timeout / 2).as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// What to add when a hound could not read our `Setup` or `Hello`: a hound binary of
/// another build fails there before it can compare versions (the layouts differ), so its
/// own words say only "malformed".
fn stale_binary_hint(message: &str) -> String {
    if message.contains("malformed setup body") || message.contains("malformed hello body") {
        format!(
            " (this supervisor speaks hound protocol {HOUND_PROTOCOL_VERSION}: is `hound_binary` \
             from the same build?)"
        )
    } else {
        String::new()
    }
}

/// The Hello a hound of `slot` receives: only what depends on the slot.
pub(crate) fn hello(pool_id: [u8; 16], slot: u32, generation: u64) -> Hello {
    Hello {
        protocol_version: HOUND_PROTOCOL_VERSION,
        pool_id,
        hound_id: slot,
        generation,
    }
}

fn os(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> PoolError {
    move |e| PoolError::Os {
        op,
        source: std::io::Error::from(e),
    }
}

/// A hound started and placed in its cgroup, not yet told who it is: the first half of a spawn.
///
/// The supervisor keeps one of these ahead of demand (`PoolConfig::prestart`), because the
/// expensive part of a spawn on cgroup v1 is not `posix_spawn` (~0.3 ms) but the first write to
/// `cgroup.procs` after a quiet spell, which waits for an RCU grace period (the kernel's
/// `cgroup_threadgroup_rwsem`; 7-24 ms measured on this project's machines). A replacement
/// then costs only the handshake and the hound's self-confinement (~1.3 ms).
///
/// The hound confines itself at once (its `Setup` is queued before the spawn) and then waits
/// for its `Hello` without running any job code, for at most `houndpool_hound::HELLO_TIMEOUT`;
/// the spawner replaces a spare older than ten minutes. It exits when the control socket
/// closes (this value dropped, or the supervisor gone). Dropping it kills and reaps the
/// process first (`child` is declared first, so it drops first), then removes the cgroup.
pub(crate) struct Prestarted {
    child: ChildGuard,
    placed: PlacedGuard,
    regions: SupervisorRegions,
    request_bell: BellRinger,
    completion_bell: BellListener,
    control: OwnedFd,
    cgroup_layer: LayerReport,
    started: Instant,
    spawn_time: Duration,
}

impl Prestarted {
    /// When the process was started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it already has (reaped by this call: `waitpid` with `WNOHANG`).
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.0.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            _ => None,
        }
    }
}

/// Starts one hound process and places it in its own cgroup (when `cgroups` is given): every
/// step of a spawn that does not depend on which slot the hound will serve. `name` names its
/// memfds and its cgroup (`hound-<slot>-g<generation>` or `spare-<n>`); `slot` is only used
/// in errors.
pub(crate) fn prestart(
    config: &PoolConfig,
    binary: &Path,
    slot: u32,
    cgroup_name: &str,
    cgroups: Option<&HoundCgroups>,
    pool_layer: &LayerReport,
) -> Result<Prestarted, PoolError> {
    let started = Instant::now();
    let failed = |reason: String| PoolError::SpawnFailed { slot, reason };
    let regions =
        SupervisorRegions::create(config.region_layout(), &format!("houndpool-{cgroup_name}"))?;
    // One pipe per direction (see `houndpool_protocol::wake`): we keep the end we use and
    // hand the hound the other, so no open file description is shared with it.
    let (request_bell, hound_request_bell) = bell_pipe()?;
    let (hound_completion_bell, completion_bell) = bell_pipe()?;
    let (control, hound_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(os("socketpair"))?;
    // Queued before the spawn: the hound finds its Setup waiting and confines itself before
    // it waits for anything. A fresh socket buffer always has room for one control datagram.
    let mut frame = Vec::with_capacity(512);
    Message::Setup(setup(config)).encode_frame(&mut frame)?;
    send(
        control.as_raw_fd(),
        &frame,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(|e| failed(format!("queueing Setup: {e}")))?;

    let child = {
        // Close-on-exec here, passed under the same numbers by the spawn's file actions: no
        // other child of this process can inherit them (`crate::hound_process`).
        let kept = [
            hound_end.as_fd(),
            regions.request_fd(),
            regions.completion_fd(),
            hound_request_bell.as_fd(),
            hound_completion_bell.as_fd(),
        ];
        let arg = HoundFds::format_arg(kept.map(|f| f.as_raw_fd()));
        let stderr = if config.hound_stderr {
            Stderr::Inherit
        } else {
            Stderr::Null
        };
        HoundProcess::spawn(
            binary,
            &[OsStr::new(HOUND_ARG), OsStr::new(&arg)],
            &kept,
            stderr,
        )
        .map_err(|e| failed(e.to_string()))?
    };
    // The hound's ends are the hound's alone from here on.
    drop((hound_end, hound_request_bell, hound_completion_bell));
    let pid = child.id();
    let guard = ChildGuard(Some(child));

    // Placement before Hello: the hound reads no job before its handshake, so it executes no
    // job code outside its cgroup. A failure kills the hound (guard) unless best-effort.
    let mut cgroup_layer = pool_layer.clone();
    let placed = match cgroups {
        None => None,
        Some(m) => {
            let placed = m
                .create_named(
                    cgroup_name,
                    slot,
                    0,
                    config.effective_cgroup_memory(),
                    config.hound_pids_limit,
                )
                .and_then(|cg| {
                    let pid = i32::try_from(pid).unwrap_or(-1);
                    match cg.add_process(pid) {
                        Ok(()) => Ok(cg),
                        Err(e) => {
                            let _ = cg.remove();
                            Err(e)
                        }
                    }
                });
            match placed {
                Ok(cg) => {
                    cgroup_layer.status = LayerStatus::Enforced;
                    cgroup_layer.detail = cg.mechanisms();
                    let oom_before = cg.oom_kills();
                    Some(Placed {
                        cgroup: cg,
                        oom_before,
                    })
                }
                Err(e) => {
                    cgroup_layer.status = LayerStatus::Unavailable;
                    cgroup_layer.detail = format!("cannot place the hound in its cgroup: {e}");
                    None
                }
            }
        }
    };
    Ok(Prestarted {
        child: guard,
        placed: PlacedGuard(placed),
        regions,
        request_bell,
        completion_bell,
        control,
        cgroup_layer,
        started,
        spawn_time: started.elapsed(),
    })
}

/// Completes a spawn: tells a prestarted (already confined) hound its slot and generation
/// (`Hello`), waits at most `start_timeout` for its `Ready` and checks its sandbox report (with
/// the supervisor's `cgroup` entry) against the configured requirements: every `required`
/// layer must be reported and enforced. Any failure kills and reaps the hound and removes its
/// cgroup.
pub(crate) fn handshake(
    p: Prestarted,
    config: &PoolConfig,
    pool_id: [u8; 16],
    slot: u32,
    generation: u64,
) -> Result<Spawned, PoolError> {
    let begun = Instant::now();
    let failed = |reason: String| PoolError::SpawnFailed { slot, reason };
    let Prestarted {
        child: mut guard,
        placed: mut placed_guard,
        regions,
        request_bell,
        completion_bell,
        control,
        cgroup_layer,
        started: _,
        spawn_time,
    } = p;

    // A spare's cgroup takes the slot's name where the kernel allows renaming (v1), so
    // operators find `hound-<slot>-g<generation>` for every serving hound.
    if let Some(p) = placed_guard.0.as_mut() {
        let name = format!("hound-{slot}-g{generation}");
        if p.cgroup.memory_dir().file_name() != Some(std::ffi::OsStr::new(&name)) {
            if let Err(e) = p.cgroup.rename(&name, slot, generation) {
                tracing::debug!(error = %e, "hound cgroup keeps its spare name");
            }
        }
    }
    let mut frame = Vec::with_capacity(128);
    Message::Hello(hello(pool_id, slot, generation)).encode_frame(&mut frame)?;
    // A hound that could not confine itself has already answered (Ready with its partial
    // report, or Fatal) and exited: a failed send is not the end, what it sent is still queued.
    let sent = send(
        control.as_raw_fd(),
        &frame,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
    if sent.is_ok() {
        crate::cold::send_to(&control, config).map_err(failed)?;
    }

    let mut ready = match recv_message(&control, config.start_timeout) {
        Ok(Some(Message::Ready(r))) => r,
        Ok(Some(Message::Fatal(f))) => {
            // Hound text: truncated and escaped before it reaches an error or a log line.
            return Err(failed(format!(
                "hound refused to start: {}{}",
                crate::hound_text::hound_text(&f.message),
                stale_binary_hint(&f.message)
            )));
        }
        Ok(Some(other)) => {
            return Err(failed(format!(
                "expected Ready, got {}",
                other.kind().name()
            )))
        }
        Ok(None) => {
            let sent = match sent {
                Ok(_) => String::new(),
                Err(e) => format!("; sending Hello failed: {e}"),
            };
            return Err(failed(format!(
                "no Ready within {:?} (or the hound exited: {}){sent}",
                config.start_timeout,
                guard.exit_status()
            )));
        }
        Err(e) => return Err(failed(e)),
    };
    if ready.protocol_version != HOUND_PROTOCOL_VERSION {
        return Err(failed(format!(
            "hound speaks protocol {}, supervisor {}",
            ready.protocol_version, HOUND_PROTOCOL_VERSION
        )));
    }
    // The hound does not report the cgroup layer (the supervisor applies it); an entry it
    // sent anyway is replaced by the supervisor's own.
    ready.sandbox.layers.retain(|l| l.layer != Layer::Cgroup);
    ready.sandbox.layers.push(cgroup_layer);
    check_required(&ready, config, slot)?;
    if let Err(e) = sent {
        return Err(failed(format!("sending Hello: {e}")));
    }
    let (writer, reader) = regions.split();
    Ok(Spawned {
        slot,
        generation,
        child: guard,
        control,
        writer,
        reader,
        request_bell,
        completion_bell,
        ready,
        spawn_time: spawn_time + begun.elapsed(),
        placed: placed_guard.take(),
    })
}

/// Refuses a report in which a `required` layer is not enforced, or missing (a hound that
/// stopped before reaching it).
fn check_required(ready: &Ready, config: &PoolConfig, slot: u32) -> Result<(), PoolError> {
    for layer in Layer::ALL {
        if config.sandbox.mode(layer) != LayerMode::Required {
            continue;
        }
        match ready.sandbox.layers.iter().find(|l| l.layer == layer) {
            Some(l) if l.status == LayerStatus::Enforced => {}
            Some(l) => {
                return Err(PoolError::SandboxRequirement {
                    slot,
                    layer: layer.name(),
                    detail: l.detail.clone(),
                })
            }
            None => {
                return Err(PoolError::SandboxRequirement {
                    slot,
                    layer: layer.name(),
                    detail: "not reported by the hound (it stopped before this layer)".into(),
                })
            }
        }
    }
    Ok(())
}

/// Starts one hound for `slot` from scratch: [`prestart`] then [`handshake`].
pub(crate) fn spawn_hound(
    config: &PoolConfig,
    binary: &Path,
    pool_id: [u8; 16],
    slot: u32,
    generation: u64,
    cgroups: Option<&HoundCgroups>,
    pool_layer: &LayerReport,
) -> Result<Spawned, PoolError> {
    let name = format!("hound-{slot}-g{generation}");
    let p = prestart(config, binary, slot, &name, cgroups, pool_layer)?;
    handshake(p, config, pool_id, slot, generation)
}

/// Removes a hound's cgroup on a failed spawn. It drops before the `ChildGuard` (declared
/// later), which is harmless: removal SIGKILLs whatever is still inside and retries `rmdir`
/// while the kernel tears it down; the `ChildGuard` then reaps the hound.
struct PlacedGuard(Option<Placed>);

impl PlacedGuard {
    fn take(mut self) -> Option<Placed> {
        self.0.take()
    }
}

impl Drop for PlacedGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.remove();
        }
    }
}

/// Receives one control message, waiting at most `timeout`. `Ok(None)` on timeout or hang-up.
pub(crate) fn recv_message(fd: &OwnedFd, timeout: Duration) -> Result<Option<Message>, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_CONTROL_DATAGRAM + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        match recv_control_datagram(fd.as_fd(), &mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) if n > buf.len() => {
                return Err(format!("control datagram of {n} bytes exceeds the limit"))
            }
            Ok(n) => {
                return Message::from_datagram(&buf[..n])
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Receives one datagram from a control socket without blocking (`MSG_TRUNC`: the result is
/// the datagram's full length, which may exceed `buf`). `Ok(0)` means the hound closed its end
/// and every datagram it sent has been read.
///
/// A hound that exits while a datagram we sent is still unread in its queue makes the kernel
/// flag our socket with `ECONNRESET` (`unix_release_sock`), and the next `recv` reports that
/// error *before* the datagrams the hound queued for us, even its last word: the reason it
/// could not sandbox itself, or its `Fatal`. Reading the error clears it, so on `ECONNRESET`
/// we read again and get those datagrams, then the end-of-file. The reset is reported at most
/// once per close, so this retries once.
pub(crate) fn recv_control_datagram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
    match recv(fd.as_raw_fd(), buf, flags) {
        Err(nix::errno::Errno::ECONNRESET) => match recv(fd.as_raw_fd(), buf, flags) {
            // The error was already taken; nothing queued and no EOF yet is still a hang-up.
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::ECONNRESET) => Ok(0),
            other => other,
        },
        other => other,
    }
}

/// Kills and reaps a child unless it is taken out: no hound outlives a failed handshake and
/// none is left a zombie.
pub(crate) struct ChildGuard(pub(crate) Option<HoundProcess>);

impl ChildGuard {
    /// The process id, if the guard still holds a child.
    pub(crate) fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, HoundProcess::id)
    }

    fn exit_status(&mut self) -> String {
        match self.0.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => st.to_string(),
            Some(Ok(None)) => "still running".into(),
            Some(Err(e)) => format!("unknown: {e}"),
            None => "gone".into(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use houndpool_protocol::control::{Fatal, SandboxPolicy, SandboxReport};

    #[test]
    fn a_hound_that_cannot_read_our_handshake_is_pointed_at_its_build() {
        let hint =
            stale_binary_hint("waiting for setup: malformed setup body: Slice had bytes remaining");
        assert!(
            hint.contains(&format!("hound protocol {HOUND_PROTOCOL_VERSION}")),
            "{hint}"
        );
        assert!(stale_binary_hint("waiting for hello: malformed hello body: x").contains("build"));
        assert_eq!(stale_binary_hint("seccomp: required layer unavailable"), "");
    }

    #[test]
    fn s3_operations_get_half_the_job_timeout_and_never_an_unbounded_zero() {
        assert_eq!(s3_deadline_ms(Duration::from_secs(10)), 5_000);
        assert_eq!(s3_deadline_ms(Duration::from_millis(10)), 5);
        assert_eq!(s3_deadline_ms(Duration::from_millis(1)), 1);
        assert_eq!(s3_deadline_ms(Duration::from_secs(3_600)), 1_800_000);
        let config = PoolConfig {
            job_timeout: Duration::from_secs(3),
            ..PoolConfig::default()
        };
        assert_eq!(setup(&config).tuning.s3_deadline_ms, 1_500);
    }

    /// The hound's last word survives a hang-up that the kernel reports as a reset: it sent
    /// its reason and exited with our Setup still unread (the CI flake in
    /// `a_required_layer_the_kernel_lacks_fails_build_naming_layer_and_opt_out`).
    #[test]
    fn a_last_word_sent_before_a_reset_is_still_received() {
        let (ours, hounds) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        send(
            ours.as_raw_fd(),
            b"setup the hound never reads",
            MsgFlags::empty(),
        )
        .expect("send");
        let last = Message::Fatal(Fatal {
            message: "landlock: not supported by this kernel".into(),
        });
        let mut frame = Vec::new();
        last.encode_frame(&mut frame).expect("encode");
        send(hounds.as_raw_fd(), &frame, MsgFlags::empty()).expect("send");
        drop(hounds);
        let got = recv_message(&ours, Duration::from_secs(1)).expect("no recv error");
        assert_eq!(got, Some(last));
        assert_eq!(recv_message(&ours, Duration::from_millis(10)), Ok(None));
    }

    fn ready(layers: &[(Layer, LayerStatus)]) -> Ready {
        Ready {
            pid: 1,
            protocol_version: HOUND_PROTOCOL_VERSION,
            sandbox: SandboxReport {
                layers: layers
                    .iter()
                    .map(|(layer, status)| LayerReport {
                        layer: *layer,
                        status: status.clone(),
                        detail: format!("{} said so", layer.name()),
                    })
                    .collect(),
            },
        }
    }

    fn config() -> PoolConfig {
        PoolConfig {
            sandbox: SandboxPolicy::safe_default(false),
            ..PoolConfig::default()
        }
    }

    #[test]
    fn every_required_layer_must_be_reported_enforced() {
        let all: Vec<_> = Layer::ALL
            .iter()
            .map(|l| (*l, LayerStatus::Enforced))
            .collect();
        assert!(check_required(&ready(&all), &config(), 0).is_ok());

        // A hound that stopped at Landlock: the partial report names it unavailable.
        let partial: Vec<_> = Layer::ALL
            .iter()
            .take_while(|l| **l != Layer::Landlock)
            .map(|l| (*l, LayerStatus::Enforced))
            .chain([(Layer::Landlock, LayerStatus::Unavailable)])
            .collect();
        let err = check_required(&ready(&partial), &config(), 3).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, PoolError::SandboxRequirement { slot: 3, layer: "landlock", detail } if detail == "landlock said so"),
            "{err:?}"
        );
        assert!(
            text.contains("HOUNDPOOL_SANDBOX_LANDLOCK=best_effort"),
            "{text}"
        );

        // Seccomp missing from the report altogether is refused too.
        let no_seccomp: Vec<_> = all
            .iter()
            .filter(|(l, _)| *l != Layer::Seccomp)
            .cloned()
            .collect();
        let err = check_required(&ready(&no_seccomp), &config(), 0).unwrap_err();
        assert!(
            matches!(&err, PoolError::SandboxRequirement { layer: "seccomp", detail, .. } if detail.contains("not reported")),
            "{err:?}"
        );

        // Best-effort layers may be unavailable or missing.
        let relaxed = PoolConfig {
            sandbox: SandboxPolicy::safe_default(false)
                .with(Layer::Landlock, LayerMode::BestEffort),
            ..PoolConfig::default()
        };
        let mut partial = partial;
        partial.extend(
            Layer::ALL
                .iter()
                .skip_while(|l| **l != Layer::Landlock)
                .skip(1)
                .map(|l| (*l, LayerStatus::Enforced)),
        );
        assert!(check_required(&ready(&partial), &relaxed, 0).is_ok());
    }
}
