//! A real `houndd run` process for the daemon tests: built on demand like the hound binary,
//! configured in a temporary directory, stopped (SIGKILL) if a test leaves it running.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use houndpool::daemon::client::Client;

/// The `houndd` executable of this workspace (`HOUNDD_BIN` if set), built like the hound
/// binary when missing or older than its sources ([`houndpool_tests::workspace_binary`]), so
/// that a test run never relinks it with other features, and never tests a stale daemon.
pub fn houndd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("HOUNDD_BIN") {
        Some(p) => PathBuf::from(p),
        None => houndpool_tests::workspace_binary(
            "houndd",
            &["supervisor", "hound", "protocol", "cold"],
        ),
    })
    .clone()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A running `houndd run`.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub ops: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The base configuration of every test daemon: 2 hounds, 64 KiB evidence, files in `dir`.
pub fn base_config(dir: &Path, socket: &Path, ops: SocketAddr) -> String {
    format!(
        "[pool]\nsize = 2\nmax_evidence_bytes = 65536\nmax_output_bytes = 65536\njob_timeout_ms = 5000\n\
         [cold]\npath = \"{}\"\n\
         [daemon]\nsocket = \"{}\"\ndrain_grace_ms = 5000\n\
         [ops]\naddr = \"{ops}\"\n\
         [log]\nlevel = \"info\"\n",
        dir.join("cold").display(),
        socket.display(),
    )
}

impl Daemon {
    /// Starts a daemon with the base configuration and `extra_env` (e.g.
    /// `HOUNDPOOL_DAEMON_OUTCOME_BUFFER`), and waits until it is ready.
    pub fn start(extra_env: &[(&str, &str)]) -> Daemon {
        Self::start_with(|_| String::new(), extra_env)
    }

    /// As [`Daemon::start`], with `edit` turning the base configuration into the file written.
    pub fn start_with(edit: impl FnOnce(String) -> String, extra_env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::spawn(edit, extra_env);
        d.wait_ready();
        d
    }

    /// Spawns without waiting.
    pub fn spawn(edit: impl FnOnce(String) -> String, extra_env: &[(&str, &str)]) -> Daemon {
        Self::spawn_under(&[], edit, extra_env)
    }

    /// Spawns without waiting, as `prefix… houndd run …` (e.g. `prlimit --nofile=…`).
    pub fn spawn_under(
        prefix: &[&str],
        edit: impl FnOnce(String) -> String,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("houndd.sock");
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let base = base_config(dir.path(), &socket, ops);
        let text = edit(base.clone());
        let text = if text.is_empty() { base } else { text };
        let config = dir.path().join("houndd.toml");
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("houndd.log");
        let mut cmd = Self::command(&config, &log, extra_env);
        if let Some((first, rest)) = prefix.split_first() {
            let inner = cmd;
            cmd = Command::new(first);
            cmd.args(rest)
                .arg(inner.get_program())
                .args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
            let err = std::fs::File::create(&log).expect("create log");
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(err));
        }
        let child = cmd.spawn().expect("spawn houndd");
        Daemon {
            child: Some(child),
            dir,
            socket,
            ops,
            config,
            log,
        }
    }

    /// `houndd run --config FILE` with stderr to `log`, the environment cleared of
    /// `HOUNDPOOL_*` variables of the caller, plus `env`.
    pub fn command(config: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(houndd_binary());
        cmd.args(["run", "--config"]).arg(config);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOUNDPOOL_") && k != "HOUNDPOOL_HOUND_BIN" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let err = std::fs::File::create(log).expect("create log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        cmd
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until /readyz answers 200 (and the socket accepts), at most 30 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "houndd exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok((200, _)) = http_get(self.ops, "/readyz") {
                if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                    // That probe connection is accepted and closed asynchronously: wait until
                    // the daemon has seen both, so no test counts it as one of its own.
                    let settled = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < settled
                        && !(self
                            .metric("houndpool_daemon_connections_total")
                            .is_some_and(|n| n >= 1.0)
                            && self.metric("houndpool_daemon_connections_open") == Some(0.0))
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "houndd not ready after 30 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client connected to the daemon.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(&self.socket).expect("connect to houndd");
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
    }

    /// Waits for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "houndd did not exit within {timeout:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` on the ops endpoint.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.ops, path).expect("ops endpoint reachable")
    }

    /// The value of one sample in /metrics (`name{labels}` exactly as printed), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 request; returns status and body.
pub fn http_request(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// GET `path`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// One encoded submit frame (the daemon's frame limit in tests is far above `body`).
pub fn submit_frame(request_id: u64, kind: houndpool::JobKind, body: Vec<u8>) -> Vec<u8> {
    let mut f = Vec::new();
    houndpool_protocol::daemon::DaemonMessage::Submit(houndpool_protocol::daemon::Submit {
        request_id,
        kind,
        severity: houndpool::Severity::Medium,
        evidence_id: None,
        level: None,
        body,
        key: None,
    })
    .encode_frame(&mut f, 1 << 24)
    .expect("encode a submit");
    f
}

/// Reads frames from a raw stream until the daemon closes it (or `limit` passes); returns the
/// decoded messages. `pause` is slept after each read of at most `chunk` bytes.
pub fn read_frames(
    s: &mut std::os::unix::net::UnixStream,
    chunk: usize,
    pause: Duration,
    limit: Duration,
) -> Vec<houndpool_protocol::daemon::DaemonMessage> {
    use houndpool_protocol::daemon::DaemonMessage;
    let deadline = Instant::now() + limit;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = houndpool_protocol::frame::FrameDecoder::new(1 << 24);
    let mut buf = vec![0u8; chunk];
    let mut out = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the daemon did not close within {limit:?}"
        );
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        };
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some((h, body)) = dec.next_frame().expect("well-formed frames") {
            out.push(DaemonMessage::decode(&h, &body, 1 << 24).expect("decodable frame"));
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    out
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Daemon {
    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the metric sample equals `value` (at most 20 s).
    pub fn wait_metric(&self, sample: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.metric(sample) != Some(value) {
            assert!(
                Instant::now() < deadline,
                "{sample} never became {value}:\n{}",
                self.get("/metrics").1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
