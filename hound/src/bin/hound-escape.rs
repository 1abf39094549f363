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

use houndpool_hound::sandbox::{self, SandboxContext};
use houndpool_protocol::messages::{HoundLimits, Layer, LayerMode, SandboxPolicy, SandboxReport};
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
                0 => unsafe { libc::_exit(0) },
                _ => Outcome::Allowed,
            }
        }
        "thread" => io(std::thread::Builder::new().spawn(|| ())),
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

fn main() {
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
