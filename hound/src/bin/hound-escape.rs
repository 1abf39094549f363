//! `hound-escape`: TEST-ONLY probe (feature `escape-test`). Applies the hound's real sandbox
//! (`houndpool_hound::sandbox::apply_into`) to itself, then attempts one attack and prints the
//! outcome. The production `hound` binary contains none of this code.
//!
//! Usage: `hound-escape <rw_dir> <attack> [flags]`
//!
//! Output on stdout: one `LAYER <name> <status> <detail>` line per sandbox layer, then either
//! `RESULT <attack> allowed`, `RESULT <attack> denied <ERRNO>`, or nothing (the process was
//! killed). If a `required` layer is unavailable: `SANDBOX_ERROR <message>` and exit code 3.
//! Usage errors exit with 2.
//!
//! Flags:
//! - `--tcp-port P`: configure an outbound TCP endpoint (S3 mode) on port P.
//! - `--connect-port Q`: port `socket_inet` connects to (default: P, else 9).
//! - `--budget BYTES`: memory budget (RLIMIT_AS), default 256 MiB.
//! - `--off LAYER` / `--require LAYER`: layer modes (default best-effort).
//! - `--expected-parent PID`: override the parent pid given to the death-signal check.
//! - `--target PATH`: file `write_outside` tries to create (default /tmp/hound-escape-outside).
//! - `--deny-before unshare|landlock`: before sandboxing, install a seccomp filter that makes
//!   `unshare` fail with EPERM (as Docker's default profile does) or the Landlock syscalls fail
//!   with ENOSYS (as on a kernel without Landlock), to exercise unavailable layers honestly.
//! - `--as-nobody`: drop to uid/gid 65534 first (exercises the user-namespace path).
//! - `--threads`: confine as an S3 hound with upload threads (seccomp allows `clone` with the
//!   thread flags only).
//!
//! Process-creation attacks: `fork` (libc), `fork_raw` / `vfork_raw` (the x86-64 syscalls),
//! `clone_process` (`clone(SIGCHLD)`), `clone_no_thread` (the thread flags without
//! `CLONE_THREAD`); `thread` starts a std thread (allowed with `--threads` only).
//!
//! Attacks include `read_mode_000` (a mode-0000 file in rw_dir: needs a capability),
//! `write_huge_file` (past RLIMIT_FSIZE), `fcntl_setfl`, `madvise_hwpoison` and
//! `madvise_dontneed` (the allocator's advice, must stay allowed).
//!
//! Hostile-hound mode: started by a pool (`HoundBinary::Path`) as
//! `hound-escape --houndpool-hound CTRL,REQ,CMP,REQBELL,CMPBELL`, it plays a *compromised*
//! hound: it reads the real `Setup`, applies the real sandbox, waits for `Hello`, then serves `Noop` jobs by
//! echoing them — except a job whose body is `hostile:<attack>`, which makes it misbehave (see
//! [`hostile`]). This is how the supervisor-side escape tests simulate a hound taken over by
//! a payload: the production hound contains none of this.

use houndpool_hound::sandbox::{self, SandboxContext};
use houndpool_protocol::control::{HoundLimits, Layer, LayerMode, SandboxPolicy, SandboxReport};
use nix::errno::Errno;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// File `read_cwd_file` reads from the working directory.
const CWD_SECRET: &str = "hound-escape-secret.txt";

struct Options {
    rw_dir: PathBuf,
    attack: String,
    tcp_port: Option<u16>,
    connect_port: Option<u16>,
    budget: u64,
    policy: SandboxPolicy,
    expected_parent: i32,
    target: PathBuf,
    deny_before: Option<String>,
    as_nobody: bool,
    threads: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("hound-escape: {msg}");
    std::process::exit(2);
}

fn layer_by_name(name: &str) -> Layer {
    Layer::ALL
        .into_iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| usage(&format!("unknown layer {name}")))
}

fn parse() -> Options {
    let mut args = std::env::args().skip(1);
    let rw_dir = PathBuf::from(args.next().unwrap_or_else(|| usage("missing rw_dir")));
    let attack = args.next().unwrap_or_else(|| usage("missing attack"));
    let mut o = Options {
        rw_dir,
        attack,
        tcp_port: None,
        connect_port: None,
        budget: 256 << 20,
        policy: SandboxPolicy::default(),
        expected_parent: nix::unistd::getppid().as_raw(),
        target: PathBuf::from("/tmp/hound-escape-outside"),
        deny_before: None,
        as_nobody: false,
        threads: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| -> u64 { v.parse().unwrap_or_else(|_| usage("bad number")) };
        match flag.as_str() {
            "--tcp-port" => o.tcp_port = Some(number(value()) as u16),
            "--connect-port" => o.connect_port = Some(number(value()) as u16),
            "--budget" => o.budget = number(value()),
            "--off" => o
                .policy
                .layers
                .push((layer_by_name(&value()), LayerMode::Off)),
            "--require" => o
                .policy
                .layers
                .push((layer_by_name(&value()), LayerMode::Required)),
            "--expected-parent" => o.expected_parent = number(value()) as i32,
            "--target" => o.target = PathBuf::from(value()),
            "--deny-before" => o.deny_before = Some(value()),
            "--as-nobody" => o.as_nobody = true,
            "--threads" => o.threads = true,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    o
}

/// Simulates a hostile environment (container runtime profile / old kernel) before sandboxing.
fn deny_before(what: &str) {
    use seccompiler::{SeccompAction, SeccompFilter};
    let (calls, errno) = match what {
        "unshare" => (vec![libc::SYS_unshare], libc::EPERM),
        "landlock" => (
            vec![
                libc::SYS_landlock_create_ruleset,
                libc::SYS_landlock_add_rule,
                libc::SYS_landlock_restrict_self,
            ],
            libc::ENOSYS,
        ),
        other => usage(&format!("unknown --deny-before {other}")),
    };
    let filter = SeccompFilter::new(
        calls.into_iter().map(|nr| (nr, vec![])).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        std::env::consts::ARCH
            .try_into()
            .unwrap_or_else(|_| usage("arch")),
    )
    .unwrap_or_else(|e| usage(&format!("filter: {e}")));
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .unwrap_or_else(|e| usage(&format!("compile: {e}")));
    seccompiler::apply_filter(&program).unwrap_or_else(|e| usage(&format!("install: {e}")));
}

fn become_nobody() {
    let nobody = nix::unistd::Gid::from_raw(65534);
    nix::unistd::setgroups(&[]).unwrap_or_else(|e| usage(&format!("setgroups: {e}")));
    nix::unistd::setgid(nobody).unwrap_or_else(|e| usage(&format!("setgid: {e}")));
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))
        .unwrap_or_else(|e| usage(&format!("setuid: {e}")));
    // Changing uid makes the process non-dumpable, which would make /proc/self/uid_map
    // root-owned; a hound started as an ordinary user is dumpable, so restore that.
    nix::sys::prctl::set_dumpable(true).unwrap_or_else(|e| usage(&format!("dumpable: {e}")));
}

fn print_report(report: &SandboxReport) {
    let mut out = std::io::stdout().lock();
    for l in &report.layers {
        let _ = writeln!(
            out,
            "LAYER {} {} {}",
            l.layer.name(),
            l.status.name(),
            l.detail
        );
    }
}

enum Outcome {
    Allowed,
    Denied(Errno),
}

fn from_io(e: &std::io::Error) -> Outcome {
    Outcome::Denied(Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn last() -> Outcome {
    Outcome::Denied(Errno::last())
}

fn io<T>(r: std::io::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Allowed,
        Err(e) => from_io(&e),
    }
}

/// A full atomic cold-store write inside the rw dir: must succeed.
fn write_inside(dir: &std::path::Path) -> std::io::Result<()> {
    let sub = dir.join("prefix");
    std::fs::create_dir_all(&sub)?;
    let tmp = sub.join(".object.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(b"THCS evidence")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, sub.join("object.thcs"))?;
    std::fs::File::open(&sub)?.sync_all()?;
    if std::fs::read(sub.join("object.thcs"))? != b"THCS evidence" {
        return Err(std::io::Error::other("read back differs"));
    }
    let listed = std::fs::read_dir(&sub)?.count();
    if listed != 1 {
        return Err(std::io::Error::other("listing differs"));
    }
    std::fs::write(sub.join("erase-me"), b"x")?;
    std::fs::remove_file(sub.join("erase-me"))
}

/// A raw process-creating syscall (no libc wrapper, so no fallback hides the verdict). A child
/// that was created exits at once; the parent reports `Allowed`.
fn raw_child(nr: libc::c_long, args: [libc::c_long; 5]) -> Outcome {
    // SAFETY: every tried call either fails (nothing happens) or creates a child that runs
    // only the `_exit` below: with a null stack argument a clone child runs on a copy of the
    // parent's stack (or, with CLONE_VM, on the same one, which it leaves at once through a
    // raw exit without returning from this frame).
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    match rc {
        -1 => last(),
        // SAFETY: _exit is async-signal-safe and never returns. (Were a clone with CLONE_VM
        // allowed, parent and child would briefly share this stack: the test fails then
        // either way, by the `allowed` line or by a crash.)
        0 => unsafe { libc::_exit(0) },
        _ => Outcome::Allowed,
    }
}

fn attack(o: &Options) -> Outcome {
    let ppid = nix::unistd::getppid().as_raw();
    match o.attack.as_str() {
        "report" => Outcome::Allowed,
        "read_etc_passwd" => io(std::fs::read("/etc/passwd")),
        "read_cwd_file" => io(std::fs::read(CWD_SECRET)),
        "write_outside" => io(std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&o.target)),
        "write_inside" => io(write_inside(&o.rw_dir)),
        "exec_sh" => {
            let argv = [
                c"/bin/sh".as_ptr(),
                c"-c".as_ptr(),
                c"exit 0".as_ptr(),
                std::ptr::null(),
            ];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated argv / envp arrays of valid C strings that outlive the call.
            unsafe { libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            last()
        }
        "socket_inet" => {
            let port = o.connect_port.or(o.tcp_port).unwrap_or(9);
            io(std::net::TcpStream::connect(("127.0.0.1", port)))
        }
        "socket_udp" => io(std::net::UdpSocket::bind("127.0.0.1:0")),
        "socket_unix" => io(std::os::unix::net::UnixDatagram::unbound()),
        "ptrace_parent" => {
            // SAFETY: PTRACE_ATTACH takes no pointers.
            let rc = unsafe {
                libc::ptrace(
                    libc::PTRACE_ATTACH,
                    ppid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            if rc == 0 {
                Outcome::Allowed
            } else {
                last()
            }
        }
        // SIGCONT: a real signal whose delivery would be harmless to the test harness.
        "kill_parent" => match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ppid),
            nix::sys::signal::Signal::SIGCONT,
        ) {
            Ok(()) => Outcome::Allowed,
            Err(e) => Outcome::Denied(e),
        },
        "fork" => {
            // SAFETY: the child only calls _exit, which is async-signal-safe.
            match unsafe { libc::fork() } {
                -1 => last(),
                // SAFETY: in the forked child, _exit ends it at once (no destructors, no
                // atexit handlers); it is async-signal-safe and takes an int.
                0 => unsafe { libc::_exit(0) },
                _ => Outcome::Allowed,
            }
        }
        "thread" => match std::thread::Builder::new().spawn(|| 7) {
            // Joined, so a thread that started also ran to its end under the filters.
            Ok(handle) => match handle.join() {
                Ok(7) => Outcome::Allowed,
                _ => Outcome::Denied(Errno::EIO),
            },
            Err(e) => io::<()>(Err(e)),
        },
        #[cfg(target_arch = "x86_64")]
        "fork_raw" => raw_child(libc::SYS_fork, [0; 5]),
        #[cfg(target_arch = "x86_64")]
        "vfork_raw" => raw_child(libc::SYS_vfork, [0; 5]),
        "clone_process" => raw_child(libc::SYS_clone, [libc::SIGCHLD as libc::c_long, 0, 0, 0, 0]),
        "clone_no_thread" => {
            // The thread flags minus CLONE_THREAD (and CLONE_SIGHAND, which needs it without
            // CLONE_VM sharing rules): a process sharing memory, as an attacker would try.
            let flags = libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SYSVSEM
                | libc::SIGCHLD;
            raw_child(libc::SYS_clone, [flags as libc::c_long, 0, 0, 0, 0])
        }
        "mount" => {
            let dir = CString::new(o.rw_dir.as_os_str().as_bytes())
                .unwrap_or_else(|_| usage("rw_dir contains NUL"));
            // SAFETY: valid C strings; a null data pointer is allowed for tmpfs.
            let rc = unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc == 0 {
                Outcome::Allowed
            } else {
                last()
            }
        }
        "unshare" => match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
            Ok(()) => Outcome::Allowed,
            Err(e) => Outcome::Denied(e),
        },
        "mmap_exec" => {
            // SAFETY: anonymous private mapping, no existing memory is touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                last()
            } else {
                Outcome::Allowed
            }
        }
        "alloc_over_budget" => {
            let len = (o.budget as usize).saturating_mul(2);
            // SAFETY: anonymous private mapping; on success it is only written within `len`.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return last();
            }
            for off in (0..len).step_by(4096) {
                // SAFETY: off < len, inside the mapping just created.
                unsafe { p.cast::<u8>().add(off).write_volatile(1) };
            }
            Outcome::Allowed
        }
        "alloc_abort" => {
            // Infallible allocation beyond the budget: std aborts (SIGABRT via tgkill on self).
            let v = vec![1u8; (o.budget as usize).saturating_mul(2)];
            std::hint::black_box(&v);
            Outcome::Allowed
        }
        "unlisted_syscall" => {
            // SAFETY: utsname is plain data; uname writes only into it.
            let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer to a utsname.
            if unsafe { libc::uname(&mut uts) } == 0 {
                Outcome::Allowed
            } else {
                last()
            }
        }
        "read_mode_000" => {
            // A file nobody may read by its permission bits (created by the test, as root):
            // only CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH would open it.
            io(std::fs::read(o.rw_dir.join("mode-000")))
        }
        "write_huge_file" => {
            // Twice the largest envelope: RLIMIT_FSIZE stops the write with EFBIG.
            let path = o.rw_dir.join("huge");
            let chunk = vec![0x5a; 1 << 20];
            io(std::fs::File::create(&path).and_then(|mut f| {
                for _ in 0..4 {
                    f.write_all(&chunk)?;
                }
                Ok(())
            }))
        }
        "fcntl_setfl" => {
            // Clearing O_NONBLOCK on an inherited descriptor (stdout stands for a doorbell):
            // file status flags live on the open file description, shared with its opener.
            match nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty())) {
                Ok(_) => Outcome::Allowed,
                Err(e) => Outcome::Denied(e),
            }
        }
        "madvise_hwpoison" => {
            // SAFETY: anonymous private mapping of one page, only advised on.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return last();
            }
            // SAFETY: p is the page just mapped.
            if unsafe { libc::madvise(p, 4096, libc::MADV_HWPOISON) } == 0 {
                Outcome::Allowed
            } else {
                last()
            }
        }
        "madvise_dontneed" => {
            // What the allocator does: must stay allowed.
            let v = vec![1u8; 1 << 20];
            let p = v.as_ptr() as usize & !4095;
            // SAFETY: a page-aligned range inside the live allocation `v` (rounded down to a
            // page boundary, which is still the heap mapping); DONTNEED on private anonymous
            // memory only zero-fills it, and `v` is not read afterwards.
            let rc = unsafe {
                libc::madvise((p + 8192) as *mut libc::c_void, 4096, libc::MADV_DONTNEED)
            };
            std::hint::black_box(&v);
            if rc == 0 {
                Outcome::Allowed
            } else {
                last()
            }
        }
        "backtrace" => {
            let text = std::backtrace::Backtrace::force_capture().to_string();
            std::hint::black_box(text);
            Outcome::Allowed
        }
        "pause" => {
            std::thread::sleep(std::time::Duration::from_secs(30));
            Outcome::Allowed
        }
        other => usage(&format!("unknown attack {other}")),
    }
}

/// Allocation failures end the process with `EXIT_OUT_OF_MEMORY` once `oom::install` ran
/// (hostile mode only; the probe mode keeps the default abort).
#[global_allocator]
static ALLOCATOR: houndpool_hound::oom::OomAwareAllocator = houndpool_hound::oom::OomAwareAllocator;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(houndpool_hound::HOUND_ARG) {
        houndpool_hound::oom::install();
        std::process::exit(hostile::run());
    }
    let o = parse();
    if o.attack == "read_cwd_file" && std::fs::metadata(CWD_SECRET).is_err() {
        usage("read_cwd_file needs hound-escape-secret.txt in the working directory");
    }
    if o.as_nobody {
        become_nobody();
    }
    if let Some(what) = &o.deny_before {
        deny_before(what);
    }
    let ctx = SandboxContext {
        keep_fds: vec![1, 2],
        rw_dirs: vec![o.rw_dir.clone()],
        tcp_connect_port: o.tcp_port,
        threads: o.threads,
        limits: HoundLimits {
            max_evidence_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            memory_budget_bytes: o.budget,
            max_open_files: 64,
            max_processes: 16,
            gzip_level: 6,
        },
        expected_parent: o.expected_parent,
    };
    let mut report = SandboxReport::default();
    let applied = sandbox::apply_into(&o.policy, &ctx, &mut report);
    print_report(&report);
    if let Err(e) = applied {
        println!("SANDBOX_ERROR {e}");
        std::process::exit(3);
    }
    match attack(&o) {
        Outcome::Allowed => println!("RESULT {} allowed", o.attack),
        Outcome::Denied(errno) => println!("RESULT {} denied {errno:?}", o.attack),
    }
}

/// The hostile hound (see the module docs). Every failure to even start is exit code 3.
mod hostile {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::path::PathBuf;
    use std::time::Duration;

    use houndpool_hound::sandbox::{self, SandboxContext};
    use houndpool_protocol::control::{ColdTarget, Message, Ready, MAX_CONTROL_BODY};
    use houndpool_protocol::job::{CompletionHeader, CompletionStatus, RequestHeader};
    use houndpool_protocol::region::{HoundRegions, HoundState};
    use houndpool_protocol::wake::{BellListener, BellRinger};
    use houndpool_protocol::HOUND_PROTOCOL_VERSION;
    use nix::sys::socket::{recv, send, MsgFlags};

    fn die(msg: &str) -> i32 {
        eprintln!("hostile hound: {msg}");
        3
    }

    fn send_raw(fd: RawFd, bytes: &[u8]) {
        let _ = send(fd, bytes, MsgFlags::MSG_NOSIGNAL);
    }

    pub(super) fn run() -> i32 {
        let parent = nix::unistd::getppid().as_raw();
        let Some(arg) = std::env::args().nth(2) else {
            return die("missing fd list");
        };
        let fds: Vec<RawFd> = arg.split(',').filter_map(|f| f.parse().ok()).collect();
        if fds.len() != 5 {
            return die("bad fd list");
        }
        // SAFETY: the supervisor passed these five descriptors for this process to own; each
        // is wrapped exactly once.
        let [control, req, cmp, req_bell, cmp_bell] =
            [0, 1, 2, 3, 4].map(|i| unsafe { OwnedFd::from_raw_fd(fds[i]) });
        let mut buf = vec![0u8; 128 * 1024];
        // Setup is queued before the start: read it, confine, then wait for Hello confined.
        let mut next_message = |timeout_ms: u16| -> Option<Message> {
            let mut pfd = [nix::poll::PollFd::new(
                control.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(timeout_ms));
            let n = recv(control.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
            Message::from_datagram(&buf[..n]).ok()
        };
        let Some(Message::Setup(setup)) = next_message(10_000) else {
            return die("expected Setup");
        };
        // A second, private read-write view of the completion region: the "compromised" hound
        // can scribble over all of it, ring indices included.
        let raw_cmp = match cmp.try_clone() {
            Ok(f) => f,
            Err(e) => return die(&format!("dup: {e}")),
        };
        let cmp_len = match nix::sys::stat::fstat(raw_cmp.as_raw_fd()) {
            Ok(st) => st.st_size as usize,
            Err(e) => return die(&format!("fstat: {e}")),
        };
        // SAFETY: a shared mapping of a memfd we own, `cmp_len` bytes long (its size); written
        // only within that length below.
        let raw_map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cmp_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw_cmp.as_raw_fd(),
                0,
            )
        };
        let regions = match HoundRegions::map(req, cmp) {
            Ok(r) => r,
            Err(e) => return die(&format!("map: {e}")),
        };
        let (mut reader, mut writer, status) = regions.split();
        let req_bell = BellListener::from_fd(req_bell);
        let cmp_bell = BellRinger::from_fd(cmp_bell);
        let rw_dirs = match &setup.cold {
            ColdTarget::Filesystem { root, .. } => vec![PathBuf::from(root)],
            _ => vec![],
        };
        let ctx = SandboxContext {
            keep_fds: vec![
                control.as_raw_fd(),
                req_bell.as_fd().as_raw_fd(),
                cmp_bell.as_fd().as_raw_fd(),
                raw_cmp.as_raw_fd(),
            ],
            rw_dirs,
            tcp_connect_port: None,
            threads: false,
            limits: setup.limits.clone(),
            expected_parent: parent,
        };
        // A cold directory named `deny-landlock` simulates a kernel without Landlock (as the
        // probe's `--deny-before landlock`), to test the supervisor's refusal end to end.
        if ctx.rw_dirs.iter().any(|d| d.ends_with("deny-landlock")) {
            super::deny_before("landlock");
        }
        let mut report = houndpool_protocol::control::SandboxReport::default();
        let applied = sandbox::apply_into(&setup.sandbox, &ctx, &mut report);
        let mut frame = Vec::new();
        // A cold directory named `old-protocol` plays a hound from an older build.
        let protocol_version = if ctx.rw_dirs.iter().any(|d| d.ends_with("old-protocol")) {
            HOUND_PROTOCOL_VERSION - 1
        } else {
            HOUND_PROTOCOL_VERSION
        };
        let ready = Message::Ready(Ready {
            pid: std::process::id(),
            protocol_version,
            sandbox: report,
        });
        if ready.encode_frame(&mut frame).is_err() {
            return die("encode Ready");
        }
        if let Err(e) = applied {
            // As the real hound: the partial report at once, then exit.
            send_raw(control.as_raw_fd(), &frame);
            return die(&format!("sandbox: {e}"));
        }
        let Some(Message::Hello(_)) = next_message(u16::MAX) else {
            return die("expected Hello");
        };
        send_raw(control.as_raw_fd(), &frame);
        status.set_state(HoundState::Idle);
        let budget = setup.limits.memory_budget_bytes as usize;
        // Set by `hostile:ignore_shutdown`: from then on `Shutdown` is ignored.
        let mut ignore_shutdown = false;
        // Set by `hostile:flood_temps`: exit once this job's completion is published.
        let mut exit_after_completion = false;
        loop {
            let payload = match reader.peek() {
                Ok(Some(p)) => p.to_vec(),
                Ok(None) => {
                    let mut pfd = [
                        nix::poll::PollFd::new(req_bell.as_fd(), nix::poll::PollFlags::POLLIN),
                        nix::poll::PollFd::new(control.as_fd(), nix::poll::PollFlags::POLLIN),
                    ];
                    status.announce_sleep();
                    if !reader.has_pending() {
                        let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(20u16));
                    }
                    status.cancel_sleep();
                    req_bell.drain();
                    if pfd[1].revents().is_some_and(|r| !r.is_empty()) {
                        match recv(control.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                            Ok(0) => return 0,
                            Ok(n) => {
                                if let Ok(Message::Shutdown(_)) = Message::from_datagram(&buf[..n])
                                {
                                    if !ignore_shutdown {
                                        return 0;
                                    }
                                }
                            }
                            Err(_) => {}
                        }
                    }
                    continue;
                }
                Err(e) => return die(&format!("request ring: {e}")),
            };
            let Ok((req, body)) = RequestHeader::parse(&payload) else {
                return die("bad request");
            };
            let mut hdr = CompletionHeader {
                job_id: req.job_id,
                kind: req.kind,
                status: CompletionStatus::Ok,
                flags: 0,
            };
            if body.starts_with(b"hostile:") {
                // Let the supervisor consume the earlier completions first: a violation is
                // charged to the job at the front of the hound's ring, which should be this
                // one, not an earlier job whose completion is still unread (or overwritten).
                std::thread::sleep(Duration::from_millis(300));
            }
            let attack = body.strip_prefix(b"hostile:");
            if let Some(a) = attack {
                // The supervisor-side attacks (descriptors, budgets, deadlines) live apart;
                // those that return let the job complete normally below.
                let _ = supervisor_attacks::run(a, control.as_raw_fd(), &mut ignore_shutdown);
            }
            match attack {
                None => {}
                Some(b"garbage_completion") => {
                    if raw_map != libc::MAP_FAILED {
                        // SAFETY: inside the `cmp_len`-byte mapping created above.
                        unsafe { std::ptr::write_bytes(raw_map.cast::<u8>(), 0xA5, cmp_len) };
                    }
                    let _ = cmp_bell.ring();
                    std::thread::sleep(Duration::from_secs(30));
                }
                Some(b"wrong_job_id") => hdr.job_id = req.job_id.wrapping_add(1000),
                Some(b"malformed_frame") => {
                    send_raw(control.as_raw_fd(), &[0xFF; 48]);
                    std::thread::sleep(Duration::from_secs(30));
                }
                Some(b"oversized_frame") => {
                    send_raw(
                        control.as_raw_fd(),
                        &vec![0x5A; MAX_CONTROL_BODY as usize + 4096],
                    );
                    std::thread::sleep(Duration::from_secs(30));
                }
                Some(b"exec_sh") => {
                    let argv = [c"/bin/sh".as_ptr(), std::ptr::null()];
                    let envp = [std::ptr::null()];
                    // SAFETY: NUL-terminated argv / envp arrays of valid C strings.
                    unsafe { libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                }
                Some(b"ptrace_parent") => {
                    // SAFETY: PTRACE_ATTACH takes no pointers.
                    unsafe {
                        libc::ptrace(
                            libc::PTRACE_ATTACH,
                            parent,
                            std::ptr::null_mut::<libc::c_void>(),
                            std::ptr::null_mut::<libc::c_void>(),
                        )
                    };
                }
                Some(b"alloc_over_budget") => {
                    // Infallible allocation past RLIMIT_AS: null → abort → EXIT_OUT_OF_MEMORY.
                    let v = vec![1u8; budget.saturating_mul(2).max(1 << 30)];
                    std::hint::black_box(&v);
                }
                Some(b"madvise_hwpoison") if raw_map != libc::MAP_FAILED => {
                    // Poison a page of the shared completion region: with CAP_SYS_ADMIN this
                    // would SIGBUS the supervisor at its next read. seccomp kills us first.
                    // SAFETY: the first page of the mapping created above; madvise does not
                    // touch memory this process reads afterwards (it is killed).
                    unsafe { libc::madvise(raw_map, 4096, libc::MADV_HWPOISON) };
                }
                Some(b"flood_temps") => {
                    // Fill the store's temp directory with files named as this hound's own
                    // temp files (the supervisor sweeps a dead hound's), then complete the job
                    // and exit: the sweep must not hold up other hounds' outcomes.
                    if let Some(root) = ctx.rw_dirs.first() {
                        let dir = root.join(".writing");
                        let _ = std::fs::create_dir(&dir);
                        let me = std::process::id();
                        for i in 0..FLOOD_TEMPS {
                            let _ = std::fs::File::create(dir.join(format!(".tmp-{me}-{i}")));
                        }
                    }
                    exit_after_completion = true;
                }
                Some(b"cgroup_oom") => {
                    // Touch memory in 1 MiB steps, within RLIMIT_AS, past the cgroup limit.
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    for _ in 0..(budget >> 20).saturating_sub(64) {
                        keep.push(vec![7u8; 1 << 20]);
                    }
                    std::hint::black_box(&keep);
                }
                Some(_) => {}
            }
            let head = hdr.to_bytes();
            loop {
                match writer.try_push(&[&head, body]) {
                    Ok(true) => break,
                    Ok(false) => std::thread::sleep(Duration::from_micros(100)),
                    Err(e) => return die(&format!("completion ring: {e}")),
                }
            }
            if writer.supervisor_sleeping() {
                let _ = cmp_bell.ring();
            }
            reader.advance();
            status.job_done();
            status.beat();
            if exit_after_completion {
                // Give the supervisor time to take the completion first, so that no job is
                // charged with this exit.
                std::thread::sleep(Duration::from_millis(300));
                std::process::exit(0);
            }
        }
    }

    /// Files `hostile:flood_temps` creates.
    const FLOOD_TEMPS: usize = 60_000;

    /// Attacks on the supervisor's descriptors, budgets and deadlines (issue 9, items 1-3).
    /// Kept apart from the other hostile cases so the two halves of the escape suite merge
    /// cleanly. `run` returns true if `attack` is one of these; it returns only for attacks
    /// that then let the job complete normally.
    mod supervisor_attacks {
        use std::os::fd::RawFd;
        use std::time::{Duration, Instant};

        use houndpool_protocol::control::{Fatal, Message, MAX_CONTROL_BODY};
        use nix::sys::socket::{send, MsgFlags};

        pub(crate) fn run(attack: &[u8], control: RawFd, ignore_shutdown: &mut bool) -> bool {
            match attack {
                b"block_fds" => {
                    block_every_fd();
                    // Stop answering: the job never completes, no doorbell is rung.
                    std::thread::sleep(Duration::from_secs(120));
                    true
                }
                b"fatal_flood" => {
                    fatal_flood(control, Duration::from_secs(5));
                    std::thread::sleep(Duration::from_secs(120));
                    true
                }
                b"fatal_then_stall" => {
                    // One well-formed Fatal (a legitimate last word), then no exit: the
                    // supervisor must kill it once the retire grace has passed.
                    send_fatal(control, "hostile hound: fatal, and staying");
                    std::thread::sleep(Duration::from_secs(120));
                    true
                }
                b"ignore_shutdown" => {
                    *ignore_shutdown = true;
                    true
                }
                b"close_doorbell" => {
                    // Close our end of the completion doorbell pipe (the fifth inherited fd),
                    // keep the control socket open, and stop answering. A supervisor polling
                    // the read end would see it readable (hung up) forever.
                    let fd = std::env::args()
                        .nth(2)
                        .and_then(|a| a.split(',').nth(4).and_then(|f| f.parse::<RawFd>().ok()));
                    if let Some(fd) = fd {
                        // SAFETY: closing a descriptor this process owns; the `BellRinger`
                        // wrapping it is never used again (this attack never returns).
                        unsafe { libc::close(fd) };
                    }
                    std::thread::sleep(Duration::from_secs(120));
                    true
                }
                _ => false,
            }
        }

        /// Clears O_NONBLOCK on every descriptor this process holds (fds 0..64: /proc is not
        /// reachable inside the sandbox). With descriptions shared with the supervisor, this
        /// would make the supervisor's reads and writes on them block.
        pub(crate) fn block_every_fd() -> usize {
            let mut cleared = 0;
            for fd in 0..64 {
                // SAFETY: F_GETFL / F_SETFL take and return integers; an unused fd gives EBADF.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                if flags < 0 {
                    continue;
                }
                // SAFETY: as above.
                if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } == 0 {
                    cleared += 1;
                }
            }
            eprintln!("hostile hound: cleared O_NONBLOCK on {cleared} descriptors");
            cleared
        }

        /// Sends one `Fatal` frame carrying `message` on the control socket.
        fn send_fatal(control: RawFd, message: &str) {
            let mut frame = Vec::new();
            let fatal = Message::Fatal(Fatal {
                message: message.to_owned(),
            });
            if fatal.encode_frame(&mut frame).is_ok() {
                let sent = send(control, &frame, MsgFlags::MSG_NOSIGNAL);
                eprintln!("hostile hound: one Fatal sent ({sent:?})");
            }
        }

        /// Sends near-maximal `Fatal` frames on the control socket for `how_long`.
        fn fatal_flood(control: RawFd, how_long: Duration) {
            // 11 KiB, as in the reproduction from outside.
            let message = "F".repeat((11 * 1024).min(MAX_CONTROL_BODY as usize - 64));
            let mut frame = Vec::new();
            if Message::Fatal(Fatal { message })
                .encode_frame(&mut frame)
                .is_err()
            {
                return;
            }
            let until = Instant::now() + how_long;
            let mut sent = 0u64;
            while Instant::now() < until {
                match send(
                    control,
                    &frame,
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(_) => sent += 1,
                    Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(50)),
                    Err(_) => break,
                }
            }
            eprintln!("hostile hound: sent {sent} Fatal frames");
        }
    }
}
