//! Proves the seccomp allow-list (and the other layers) leave room for the job loop: a child
//! process confines itself with the real sandbox, every layer enforced, and then does what a
//! hound does with the real crates — memmap2 over a memfd ring, eventfd doorbells, a
//! SOCK_SEQPACKET channel, poll, flate2 + sha2, an atomic filesystem cold-store write, read
//! back through a mapping, listing and erasure, HashMap seeding, clocks and sleeps.
//!
//! `harness = false`: the child must be single-threaded like a hound (libtest runs tests on
//! extra threads, which the sandbox refuses).

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use houndpool_hound::sandbox::{self, SandboxContext};
use houndpool_protocol::control::{HoundLimits, Layer, LayerMode, LayerStatus, SandboxPolicy};
use houndpool_protocol::envelope::HEADER_LEN;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::Path;
use std::process::Command;

const CHILD_FLAG: &str = "--sandbox-workload-child";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == CHILD_FLAG) {
        let dir = args.get(pos + 1).expect("child needs a directory");
        match child(Path::new(dir)) {
            Ok(()) => {
                println!("WORKLOAD OK");
                std::process::exit(0);
            }
            Err(e) => {
                println!("WORKLOAD FAIL {e}");
                std::process::exit(1);
            }
        }
    }
    // Parent: honour `cargo test <filter>` loosely (run unless filtered to something else).
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"job_loop_workload_runs_confined".contains(f.as_str())) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .arg(CHILD_FLAG)
        .arg(dir.path())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("WORKLOAD OK"),
        "workload failed under the sandbox: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    println!("test job_loop_workload_runs_confined ... ok");
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn child(dir: &Path) -> R<()> {
    let cold = dir.join("cold");
    std::fs::create_dir(&cold)?;

    // What the supervisor hands a hound: two region memfds, two doorbells, a channel.
    // SAFETY: memfd_create with a valid C string; the returned fd is owned by the File below.
    let raw = unsafe { libc::memfd_create(c"ring".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create");
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let ring = unsafe { std::fs::File::from_raw_fd(raw) };
    ring.set_len(1 << 20)?;
    let bell = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let (chan_a, chan_b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;

    let ctx = SandboxContext {
        keep_fds: vec![
            1,
            2,
            ring.as_raw_fd(),
            bell.as_fd().as_raw_fd(),
            chan_a.as_raw_fd(),
            chan_b.as_raw_fd(),
        ],
        rw_dirs: vec![cold.clone()],
        tcp_connect_port: None,
        limits: HoundLimits {
            max_evidence_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            memory_budget_bytes: 1 << 30,
            max_open_files: 64,
            max_processes: 16,
            gzip_level: 6,
        },
        expected_parent: nix::unistd::getppid().as_raw(),
    };
    let policy = SandboxPolicy {
        layers: Layer::ALL
            .iter()
            .filter(|l| **l != Layer::Cgroup)
            .map(|l| (*l, LayerMode::Required))
            .collect(),
    };
    let report = sandbox::apply(&policy, &ctx)?;
    for l in &report.layers {
        if l.status != LayerStatus::Enforced {
            return Err(format!("layer {} not enforced: {}", l.layer.name(), l.detail).into());
        }
    }

    // Ring: the supervisor would have written a request; read it through a shared mapping.
    // SAFETY: the memfd is private to this process; nothing truncates it while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&ring)? };
    let evidence: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 % 17)
        .collect();
    map[64..64 + evidence.len()].copy_from_slice(&evidence);
    map.flush()?;
    bell.write(1)?;
    let mut fds = [PollFd::new(bell.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(1000u16))? != 1 {
        return Err("doorbell not readable".into());
    }
    bell.read()?;

    // Encode: gzip + SHA-256, the THCS envelope.
    let payload = map[64..64 + evidence.len()].to_vec();
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&payload)?;
    let gz = enc.finish()?;
    let hash = Sha256::digest(&gz);
    let mut envelope = b"THCS".to_vec();
    envelope.extend_from_slice(&1u16.to_be_bytes());
    envelope.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    envelope.extend_from_slice(&(gz.len() as u32).to_be_bytes());
    envelope.extend_from_slice(hex::encode(hash).as_bytes());
    envelope.extend_from_slice(&gz);

    // Evacuate: atomic write into the cold store.
    let prefix = cold.join("evidence");
    std::fs::create_dir_all(&prefix)?;
    let tmp = prefix.join(".0192.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(&envelope)?;
    f.sync_all()?;
    drop(f);
    let object = prefix.join("0192.thcs");
    std::fs::rename(&tmp, &object)?;
    std::fs::File::open(&prefix)?.sync_all()?;

    // Restore: map the object, verify, decompress with a size guard.
    let file = std::fs::File::open(&object)?;
    // SAFETY: the object is not modified while mapped (this process is its only writer).
    let mapped = unsafe { memmap2::Mmap::map(&file)? };
    if Sha256::digest(&mapped[HEADER_LEN..]).as_slice() != hash.as_slice() {
        return Err("hash mismatch".into());
    }
    let mut restored = Vec::new();
    GzDecoder::new(&mapped[HEADER_LEN..])
        .take(payload.len() as u64)
        .read_to_end(&mut restored)?;
    if restored != payload {
        return Err("restore differs".into());
    }
    drop(mapped);

    // List and erase.
    let listed: Vec<_> = std::fs::read_dir(&prefix)?.collect::<Result<_, _>>()?;
    if listed.len() != 1 {
        return Err(format!("listed {} objects", listed.len()).into());
    }
    std::fs::remove_file(&object)?;

    // Control channel: a frame each way, plain send/recv and via std's File (read/write).
    send(chan_a.as_raw_fd(), b"READY", MsgFlags::empty())?;
    let mut buf = [0u8; 64];
    let n = recv(chan_b.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    if &buf[..n] != b"READY" {
        return Err("channel frame differs".into());
    }

    // Misc std machinery the loop touches: RandomState, clocks, sleep, large realloc.
    let mut stats: HashMap<&str, usize> = HashMap::new();
    stats.insert("bytes", restored.len());
    let t = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let _ = std::time::SystemTime::now();
    if t.elapsed().as_millis() < 2 {
        return Err("sleep too short".into());
    }
    let mut grow = Vec::with_capacity(1 << 20);
    for i in 0..(8usize << 20) {
        grow.push(i as u8);
    }
    std::hint::black_box(&grow);
    drop(grow);
    map[0] = 1;
    drop(map);
    Ok(())
}
