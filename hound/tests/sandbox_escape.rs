//! Escape tests: the test-only `hound-escape` binary confines itself with the hound's real
//! sandbox and then attempts one attack; each attempt must be denied or get it killed, while
//! the legitimate control (writing inside the cold directory) succeeds. The test process is
//! the probe's parent, standing in for the supervisor (and surviving every attempt).
//!
//! These expectations are for a machine like the reference one (root, kernel 6.x with
//! Landlock ABI >= 6, seccomp, namespaces); the report test asserts that first.

use houndpool_hound::sandbox::EXIT_ORPHANED;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hound-escape");
const SIGSYS: i32 = libc::SIGSYS;

/// A cold directory `rw/` inside a temporary working directory that also holds a secret file.
struct Fixture {
    tmp: tempfile::TempDir,
    rw: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rw = tmp.path().join("rw");
        std::fs::create_dir(&rw).expect("rw dir");
        std::fs::write(tmp.path().join("hound-escape-secret.txt"), "secret").expect("secret");
        // Traversable and writable for the unprivileged (nobody) variant.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        std::fs::set_permissions(&rw, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        Fixture { tmp, rw }
    }

    fn run(&self, attack: &str, extra: &[&str]) -> Run {
        let out = Command::new(BIN)
            .arg(&self.rw)
            .arg(attack)
            .args(extra)
            .current_dir(self.tmp.path())
            .output()
            .expect("spawn hound-escape");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// (name, status, detail) per reported layer.
    fn layers(&self) -> Vec<(String, String, String)> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("LAYER "))
            .map(|l| {
                let mut it = l.splitn(3, ' ');
                let name = it.next().unwrap_or_default().to_string();
                let status = it.next().unwrap_or_default().to_string();
                (name, status, it.next().unwrap_or_default().to_string())
            })
            .collect()
    }

    fn layer(&self, name: &str) -> (String, String) {
        self.layers()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s, d))
            .unwrap_or_else(|| panic!("no layer {name} in report: {self}"))
    }

    fn result(&self) -> Option<&str> {
        self.stdout.lines().find_map(|l| l.strip_prefix("RESULT "))
    }

    /// Asserts the attack ran to completion and was refused with `errno`.
    fn assert_denied(&self, attack: &str, errno: &str) {
        assert_eq!(
            self.result(),
            Some(format!("{attack} denied {errno}").as_str()),
            "{self}"
        );
        assert!(self.status.success(), "{self}");
    }

    /// Asserts the attack succeeded (controls only).
    fn assert_allowed(&self, attack: &str) {
        assert_eq!(
            self.result(),
            Some(format!("{attack} allowed").as_str()),
            "{self}"
        );
        assert!(self.status.success(), "{self}");
    }

    /// Asserts the probe was killed by `signal` before reporting any result.
    fn assert_killed(&self, signal: i32) {
        assert_eq!(self.status.signal(), Some(signal), "{self}");
        assert_eq!(self.result(), None, "{self}");
        // It did get past the sandbox setup: the full report was printed.
        assert_eq!(self.layers().len(), 9, "{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\nstdout:\n{}stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

#[test]
fn every_layer_is_enforced_on_this_machine() {
    let fx = Fixture::new();
    let run = fx.run("report", &[]);
    run.assert_allowed("report");
    let names: Vec<String> = run.layers().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        [
            "fd_hygiene",
            "environment",
            "no_new_privs",
            "death_signal",
            "rlimits",
            "namespaces",
            "capabilities",
            "landlock",
            "seccomp"
        ],
        "{run}"
    );
    for (name, status, detail) in run.layers() {
        assert_eq!(status, "enforced", "{name}: {detail}");
    }
    let (_, landlock) = run.layer("landlock");
    let abi: u32 = landlock
        .strip_prefix("ABI ")
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ABI in {landlock}"));
    assert!(abi >= 6, "{landlock}");
    assert!(landlock.contains("scoped: signals"), "{landlock}");
    assert!(run.layer("namespaces").1.contains("net"), "{run}");
    assert!(run.layer("rlimits").1.contains("core=0"), "{run}");
    assert!(run.layer("rlimits").1.contains("fsize="), "{run}");
    assert!(run.layer("seccomp").1.contains("-> EPERM"), "{run}");
}

#[test]
fn reading_outside_the_cold_directory_is_denied() {
    let fx = Fixture::new();
    fx.run("read_etc_passwd", &[])
        .assert_denied("read_etc_passwd", "EACCES");
    fx.run("read_cwd_file", &[])
        .assert_denied("read_cwd_file", "EACCES");
}

#[test]
fn writing_is_confined_to_the_cold_directory() {
    let fx = Fixture::new();
    let outside = fx.tmp.path().join("outside.txt");
    fx.run(
        "write_outside",
        &["--target", outside.to_str().expect("utf-8")],
    )
    .assert_denied("write_outside", "EACCES");
    assert!(!outside.exists());

    // Control: the atomic cold-store write inside the directory works.
    fx.run("write_inside", &[]).assert_allowed("write_inside");
    let object = std::fs::read(fx.rw.join("prefix/object.thcs")).expect("object written");
    assert_eq!(object, b"THCS evidence");
}

#[test]
fn attacker_only_syscalls_kill_the_hound() {
    let fx = Fixture::new();
    for attack in ["exec_sh", "ptrace_parent", "mount", "unshare"] {
        fx.run(attack, &[]).assert_killed(SIGSYS);
    }
}

#[test]
fn no_network_without_an_endpoint() {
    let fx = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    fx.run("socket_inet", &["--connect-port", &port])
        .assert_denied("socket_inet", "EPERM");
    fx.run("socket_udp", &[])
        .assert_denied("socket_udp", "EPERM");
    fx.run("socket_unix", &[])
        .assert_denied("socket_unix", "EPERM");
    // Three independent barriers: with seccomp off Landlock refuses the connect, and with
    // Landlock off as well the empty network namespace has no route to the listener.
    fx.run(
        "socket_inet",
        &["--connect-port", &port, "--off", "seccomp"],
    )
    .assert_denied("socket_inet", "EACCES");
    fx.run(
        "socket_inet",
        &[
            "--connect-port",
            &port,
            "--off",
            "seccomp",
            "--off",
            "landlock",
        ],
    )
    .assert_denied("socket_inet", "ENETUNREACH");
}

#[test]
fn with_an_endpoint_only_its_tcp_port_is_reachable() {
    let fx = Fixture::new();
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = endpoint.local_addr().expect("addr").port().to_string();
    let other = other.local_addr().expect("addr").port().to_string();

    let run = fx.run("socket_inet", &["--tcp-port", &endpoint]);
    run.assert_allowed("socket_inet");
    assert!(
        run.layer("namespaces").1.contains("host network kept"),
        "{run}"
    );
    assert!(
        run.layer("landlock")
            .1
            .contains(&format!("TCP: connect to port {endpoint} only")),
        "{run}"
    );

    fx.run(
        "socket_inet",
        &["--tcp-port", &endpoint, "--connect-port", &other],
    )
    .assert_denied("socket_inet", "EACCES");
    fx.run("socket_udp", &["--tcp-port", &endpoint])
        .assert_denied("socket_udp", "EPERM");
    fx.run("socket_unix", &["--tcp-port", &endpoint])
        .assert_denied("socket_unix", "EPERM");
}

#[test]
fn no_signals_to_the_parent_and_no_new_processes() {
    let fx = Fixture::new();
    fx.run("kill_parent", &[])
        .assert_denied("kill_parent", "EPERM");
    // Defence in depth: with seccomp off, Landlock's signal scope still refuses.
    fx.run("kill_parent", &["--off", "seccomp"])
        .assert_denied("kill_parent", "EPERM");
    fx.run("fork", &[]).assert_denied("fork", "EPERM");
    // clone3 -> ENOSYS makes glibc fall back to clone, which is refused: a clean error.
    fx.run("thread", &[]).assert_denied("thread", "EPERM");
}

#[test]
fn memory_beyond_the_budget_is_refused() {
    let fx = Fixture::new();
    let budget = (256u64 << 20).to_string();
    fx.run("alloc_over_budget", &["--budget", &budget])
        .assert_denied("alloc_over_budget", "ENOMEM");
    // An infallible allocation aborts — by SIGABRT (abort() may signal itself), not SIGSYS.
    fx.run("alloc_abort", &["--budget", &budget])
        .assert_killed(libc::SIGABRT);
    fx.run("mmap_exec", &[]).assert_denied("mmap_exec", "EPERM");
}

#[test]
fn unlisted_syscalls_fail_with_eperm_and_backtraces_survive() {
    let fx = Fixture::new();
    fx.run("unlisted_syscall", &[])
        .assert_denied("unlisted_syscall", "EPERM");
    // Symbolisation tries readlink(/proc/self/exe), getcwd, /proc/self/maps: denied, not fatal.
    fx.run("backtrace", &[]).assert_allowed("backtrace");
}

#[test]
fn landlock_still_stops_exec_when_seccomp_is_off() {
    let fx = Fixture::new();
    let run = fx.run("exec_sh", &["--off", "seccomp"]);
    assert_eq!(run.layer("seccomp").0, "disabled", "{run}");
    run.assert_denied("exec_sh", "EACCES");
}

#[test]
fn a_required_layer_that_is_impossible_fails_start_up() {
    let fx = Fixture::new();
    // As under Docker's default seccomp profile, unshare is refused before the hound starts.
    let run = fx.run(
        "report",
        &["--deny-before", "unshare", "--require", "namespaces"],
    );
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(
        run.stdout
            .contains("SANDBOX_ERROR required sandbox layer namespaces unavailable: unshare("),
        "{run}"
    );
    let layers = run.layers();
    assert_eq!(layers.len(), 6, "stops at the failed layer: {run}");
    assert_eq!(layers[5].1, "unavailable", "{run}");
    assert_eq!(run.result(), None);

    // The same environment with the layer best-effort: reported, and the rest still holds.
    let run = fx.run("read_etc_passwd", &["--deny-before", "unshare"]);
    assert_eq!(run.layer("namespaces").0, "unavailable", "{run}");
    assert_eq!(run.layer("landlock").0, "enforced", "{run}");
    assert_eq!(run.layer("seccomp").0, "enforced", "{run}");
    run.assert_denied("read_etc_passwd", "EACCES");
}

#[test]
fn a_kernel_without_landlock_is_reported_and_can_be_refused() {
    let fx = Fixture::new();
    let run = fx.run(
        "report",
        &["--deny-before", "landlock", "--require", "landlock"],
    );
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(
        run.stdout
            .contains("SANDBOX_ERROR required sandbox layer landlock unavailable"),
        "{run}"
    );
    // Best-effort: the report is the warning — and filesystem confinement is indeed gone,
    // which is why a deployment that depends on it should mark Landlock `required`.
    let run = fx.run("read_etc_passwd", &["--deny-before", "landlock"]);
    let (status, detail) = run.layer("landlock");
    assert_eq!(status, "unavailable", "{run}");
    assert!(detail.contains("does not implement Landlock"), "{run}");
    run.assert_allowed("read_etc_passwd");
}

#[test]
fn an_unprivileged_hound_confines_itself_through_a_user_namespace() {
    let fx = Fixture::new();
    let run = fx.run("write_inside", &["--as-nobody"]);
    for (name, status, detail) in run.layers() {
        assert_eq!(status, "enforced", "{name}: {detail}");
    }
    let (_, ns) = run.layer("namespaces");
    assert!(ns.contains("new user, net, ipc, mount namespaces"), "{run}");
    assert!(ns.contains("uid 65534"), "{run}");
    run.assert_allowed("write_inside");
    fx.run("read_etc_passwd", &["--as-nobody"])
        .assert_denied("read_etc_passwd", "EACCES");
    fx.run("exec_sh", &["--as-nobody"]).assert_killed(SIGSYS);
}

#[test]
fn a_hound_whose_supervisor_is_already_gone_exits() {
    let fx = Fixture::new();
    // The parent is not the "supervisor" pid 1 the hound expects: it must not run.
    let run = fx.run("report", &["--expected-parent", "1"]);
    assert_eq!(run.status.code(), Some(EXIT_ORPHANED), "{run}");
    assert_eq!(run.result(), None, "{run}");
}

#[test]
fn the_death_signal_kills_the_hound_with_its_parent() {
    // Adopt orphans so that the probe, once its shell parent is gone, can be waited for here.
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let fx = Fixture::new();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#""$0" "$1" pause >/dev/null 2>&1 & echo $!; sleep 1"#)
        .arg(BIN)
        .arg(&fx.rw)
        .current_dir(fx.tmp.path())
        .output()
        .expect("spawn sh");
    assert!(out.status.success());
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => {
                assert!(Instant::now() < deadline, "probe outlived its parent");
                std::thread::sleep(Duration::from_millis(20));
            }
            WaitStatus::Signaled(_, signal, _) => {
                assert_eq!(signal, nix::sys::signal::Signal::SIGKILL);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

// ---- capabilities, madvise, fcntl, file size (issue 9, confinement side) -------------------

#[test]
fn a_root_hound_holds_no_capability() {
    let fx = Fixture::new();
    // A file no permission bit lets anyone read: only CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH
    // open it (the test runs as root, like the reference machine).
    let secret = fx.rw.join("mode-000");
    std::fs::write(&secret, "root-only").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let run = fx.run("read_mode_000", &[]);
    let (status, detail) = run.layer("capabilities");
    assert_eq!(status, "enforced", "{run}");
    if nix::unistd::geteuid().is_root() {
        assert!(detail.contains("bounding set cleared"), "{run}");
        run.assert_denied("read_mode_000", "EACCES");
        // Control: with the layer off, root's capabilities open it (the test can fail).
        fx.run("read_mode_000", &["--off", "capabilities"])
            .assert_allowed("read_mode_000");
    }
}

#[test]
fn madvise_hwpoison_kills_and_the_allocators_advice_stays_allowed() {
    let fx = Fixture::new();
    fx.run("madvise_hwpoison", &[]).assert_killed(SIGSYS);
    fx.run("madvise_dontneed", &[])
        .assert_allowed("madvise_dontneed");
}

#[test]
fn clearing_file_status_flags_is_denied() {
    let fx = Fixture::new();
    fx.run("fcntl_setfl", &[])
        .assert_denied("fcntl_setfl", "EPERM");
    // Control: seccomp is what refuses it.
    fx.run("fcntl_setfl", &["--off", "seccomp"])
        .assert_allowed("fcntl_setfl");
}

#[test]
fn a_file_larger_than_the_largest_envelope_cannot_be_written() {
    let fx = Fixture::new();
    let run = fx.run("write_huge_file", &[]);
    run.assert_denied("write_huge_file", "EFBIG");
    let limit =
        houndpool_hound::sandbox::file_size_limit(&houndpool_protocol::control::HoundLimits {
            max_evidence_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            memory_budget_bytes: 0,
            max_open_files: 64,
            max_processes: 16,
            gzip_level: 6,
        });
    let written = std::fs::metadata(fx.rw.join("huge"))
        .expect("partial file")
        .len();
    assert!(written <= limit, "{written} > {limit}");
    assert!(
        run.layer("rlimits").1.contains(&format!("fsize={limit}")),
        "{run}"
    );
}
