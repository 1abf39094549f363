//! S3 cold storage reached BY NAME through real, sandboxed hounds (which have no resolver):
//! the supervisor resolves, hounds connect to the addresses it sends and keep the name for
//! Host, SigV4 and TLS. Real rclone S3 servers on loopback; TLS with a CA the test generates
//! (openssl); path and virtual-host style; a DNS answer that changes mid-run (resolver seam);
//! a name that does not resolve at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use houndpool::cold::{ColdNet, Resolve};
use houndpool::{ColdConfig, Job, OutcomeKind, PoolConfig, PoolError, S3Target};
use houndpool_tests::*;

const AK: &str = "houndpool-ak";
const SK: &str = "houndpool-sk";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rclone S3 server serving `dir` (bucket `houndpool`) on `ip:port`; killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(ip: &str, port: u16, dir: &Path, tls: Option<&Pki>, path_style: bool) -> Server {
        std::fs::create_dir_all(dir.join("houndpool")).unwrap();
        let mut cmd = houndpool_tests::s3::rclone_command(&houndpool_tests::s3::rclone());
        cmd.args(["serve", "s3"])
            .arg(dir)
            .args(["--addr", &format!("{ip}:{port}")])
            .args(["--auth-key", &format!("{AK},{SK}")])
            .args(["--config", "/dev/null"])
            .arg(format!("--force-path-style={path_style}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pki) = tls {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        let child = cmd.spawn().expect("spawn rclone");
        let server = Server { child };
        wait_for("rclone to listen", || {
            std::net::TcpStream::connect((ip, port)).ok()
        });
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA and a server certificate for `localhost` (and `*.localhost`) signed by it.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the TLS test needs the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn generate_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=houndpool test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:*.localhost\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    Pki {
        ca: d.join("ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server.key"),
        _dir: dir,
    }
}

/// A resolver whose answer the test changes; counts lookups.
#[derive(Debug, Default)]
struct TestResolver {
    answer: Mutex<Vec<std::net::IpAddr>>,
    lookups: Mutex<Vec<String>>,
}

impl Resolve for TestResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.lookups.lock().unwrap().push(host.to_owned());
        Ok(self
            .answer
            .lock()
            .unwrap()
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect())
    }
}

fn target(endpoint: String, path_style: bool, spool: Option<&Path>) -> S3Target {
    S3Target {
        endpoint,
        bucket: "houndpool".into(),
        prefix: "evidence/".into(),
        region: "us-east-1".into(),
        path_style,
        access_key: AK.into(),
        secret_key: SK.into(),
        session_token: None,
        spool_dir: spool.map(|p| p.display().to_string()),
        spool_limit_bytes: 64 << 20,
    }
}

fn outcome(rx: &crossbeam_channel::Receiver<houndpool::Outcome>) -> houndpool::Outcome {
    collect(rx, 1, Duration::from_secs(30))
        .pop()
        .expect("an outcome within 30 s")
}

fn completed(o: &houndpool::Outcome) -> houndpool::Receipt {
    match &o.result {
        OutcomeKind::Completed(r) => r.clone(),
        other => panic!("{:?}: expected Completed, got {other:?}", o.kind),
    }
}

/// Evacuates and restores one piece of evidence; returns the stored object's path.
fn round_trip(
    pool: &houndpool::Pool,
    rx: &crossbeam_channel::Receiver<houndpool::Outcome>,
    data: &Path,
) -> PathBuf {
    let evidence = houndpool::synth::EvidenceGenerator::new(7).request(8_000);
    let t = pool.submit(&Job::evacuate(&evidence)).unwrap();
    let r = completed(&outcome(rx));
    assert!(!r.spooled, "stored directly, not spooled");
    let object = data.join("houndpool").join(r.key.unwrap());
    houndpool_protocol::envelope::verify(&std::fs::read(&object).unwrap()).unwrap();
    pool.submit(&Job::restore(t.evidence_id)).unwrap();
    let r = completed(&outcome(rx));
    assert_eq!(r.payload.as_deref(), Some(&evidence[..]));
    object
}

#[test]
fn evacuate_and_restore_by_name_over_http_and_https_with_a_private_ca() {
    let _g = serial();
    let pki = generate_pki();
    for tls in [false, true] {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let _server = Server::start("127.0.0.1", port, data.path(), tls.then_some(&pki), true);
        let scheme = if tls { "https" } else { "http" };
        let config = PoolConfig {
            cold: ColdConfig::S3(target(format!("{scheme}://localhost:{port}"), true, None)),
            cold_net: ColdNet {
                ca_file: tls.then(|| pki.ca.clone()),
                ..Default::default()
            },
            ..test_config(data.path())
        };
        let (pool, rx) = start(config);
        round_trip(&pool, &rx, data.path());
        pool.shutdown(Duration::from_secs(10));
    }
}

#[test]
fn https_without_the_private_ca_is_refused_not_spooled() {
    let _g = serial();
    let pki = generate_pki();
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server::start("127.0.0.1", port, data.path(), Some(&pki), true);
    let config = PoolConfig {
        cold: ColdConfig::S3(target(
            format!("https://localhost:{port}"),
            true,
            Some(spool.path()),
        )),
        ..test_config(data.path())
    };
    let (pool, rx) = start(config);
    pool.submit(&Job::evacuate(b"evidence")).unwrap();
    match outcome(&rx).result {
        OutcomeKind::Failed(houndpool::FailReason::Job { code, message }) => {
            assert_eq!(code, houndpool::FailCode::ColdStorageRejected, "{message}");
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    pool.shutdown(Duration::from_secs(10));
}

#[test]
fn virtual_host_style_resolves_bucket_dot_host() {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server::start("127.0.0.1", port, data.path(), None, false);
    let resolver = Arc::new(TestResolver::default());
    *resolver.answer.lock().unwrap() = vec!["127.0.0.1".parse().unwrap()];
    let config = PoolConfig {
        cold: ColdConfig::S3(target(format!("http://localhost:{port}"), false, None)),
        cold_net: ColdNet {
            resolver: resolver.clone(),
            ..Default::default()
        },
        ..test_config(data.path())
    };
    let (pool, rx) = start(config);
    round_trip(&pool, &rx, data.path());
    assert_eq!(resolver.lookups.lock().unwrap()[0], "houndpool.localhost");
    pool.shutdown(Duration::from_secs(10));
}

#[test]
fn a_changed_dns_answer_moves_evacuations_to_the_new_address() {
    let _g = serial();
    // Two servers on one port, on 127.0.0.1 and 127.0.0.2: the name moves from one to the
    // other while the pool runs.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_a = Server::start("127.0.0.1", port, a.path(), None, true);
    let _server_b = Server::start("127.0.0.2", port, b.path(), None, true);
    let resolver = Arc::new(TestResolver::default());
    *resolver.answer.lock().unwrap() = vec!["127.0.0.1".parse().unwrap()];
    let config = PoolConfig {
        cold: ColdConfig::S3(target(
            format!("http://s3.test.invalid:{port}"),
            true,
            Some(spool.path()),
        )),
        cold_net: ColdNet {
            resolver: resolver.clone(),
            resolve_interval: Duration::from_secs(1),
            ..Default::default()
        },
        ..test_config(a.path())
    };
    let (pool, rx) = start(config);
    round_trip(&pool, &rx, a.path());

    *resolver.answer.lock().unwrap() = vec!["127.0.0.2".parse().unwrap()];
    drop(server_a);
    // Evacuations land on B once the new answer reached the hounds (earlier ones may be
    // spooled while A is gone, and are then uploaded to B by an idle hound).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = pool.submit(&Job::evacuate(b"moved evidence")).unwrap();
        let r = completed(&outcome(&rx));
        let key = r.key.unwrap();
        let at_b = b.path().join("houndpool").join(&key);
        if !r.spooled {
            assert!(at_b.exists(), "stored directly, so at B");
            break;
        }
        let _ = t;
        assert!(Instant::now() < deadline, "never moved to the new address");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(resolver.lookups.lock().unwrap().len() >= 2, "re-resolved");
    pool.shutdown(Duration::from_secs(10));
}

#[test]
fn a_name_that_does_not_resolve_at_start_is_a_startup_error() {
    let _g = serial();
    let data = tempfile::tempdir().unwrap();
    let resolver = Arc::new(TestResolver::default()); // answers nothing
    let config = PoolConfig {
        cold: ColdConfig::S3(target(
            "http://nowhere.test.invalid:9000".into(),
            true,
            None,
        )),
        cold_net: ColdNet {
            resolver,
            ..Default::default()
        },
        ..test_config(data.path())
    };
    match houndpool::Pool::builder().config(config).build() {
        Err(PoolError::ColdEndpoint { host, .. }) => assert_eq!(host, "nowhere.test.invalid"),
        Err(other) => panic!("expected ColdEndpoint, got {other}"),
        Ok(_) => panic!("a pool started with an unresolvable endpoint"),
    }
    assert_no_hounds_left();
}

/// An outage's spool drained by name over HTTPS with a private CA: records spooled while
/// nothing served `localhost:PORT` are uploaded by an idle pool's hounds, several at once on
/// threads sharing each hound's TLS agent and the addresses the supervisor resolved, each under
/// its key and byte for byte.
#[test]
fn a_spool_drains_by_name_over_https_with_a_private_ca() {
    let _g = serial();
    let pki = generate_pki();
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = target(
        format!("https://localhost:{port}"),
        true,
        Some(spool.path()),
    );
    // Nothing listens yet: every put is spooled at once.
    let sent = houndpool_tests::s3::spool_while_down(&target, "evidence/tls", 120, 11);

    let _server = Server::start("127.0.0.1", port, data.path(), Some(&pki), true);
    let config = PoolConfig {
        cold: ColdConfig::S3(target),
        cold_net: ColdNet {
            ca_file: Some(pki.ca.clone()),
            s3_concurrency: 8,
            ..Default::default()
        },
        ..test_config(data.path())
    };
    let (pool, _rx) = start(config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let spooled = || {
        std::fs::read_dir(spool.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".spool"))
            })
            .count()
    };
    while spooled() > 0 {
        assert!(Instant::now() < deadline, "{} still spooled", spooled());
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.shutdown(Duration::from_secs(10));
    for (key, env) in &sent {
        let object = data.path().join("houndpool").join(key);
        assert_eq!(&std::fs::read(&object).unwrap(), env, "{key}");
    }
}
