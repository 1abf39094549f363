//! What other processes of the embedder can see of a pool: a child the host application
//! starts while the pool is spawning hounds must inherit none of a hound's descriptors (its
//! control socket, its request and completion rings, which hold evidence, its doorbells).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use houndpool::{Pool, PoolConfig, PoolSize};
use houndpool_tests::*;

/// Descriptors of this process that any child inherits (no close-on-exec): whatever started
/// the test may have left some open, and they are not the pool's.
fn inheritable_here() -> Vec<u32> {
    use std::os::fd::RawFd;
    let mut fds = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD);
        if flags.is_ok_and(|f| f & libc::FD_CLOEXEC == 0) {
            fds.push(fd as u32);
        }
    }
    fds
}

/// The descriptors `pid` holds besides 0, 1, 2 and `ignore`, as `fd -> target`.
fn extra_fds(pid: u32, ignore: &[u32]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|fd| fd > 2 && !ignore.contains(&fd))
        })
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect()
}

#[test]
fn a_child_the_embedder_starts_during_hound_spawns_inherits_no_hound_descriptor() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // The embedder's own children, started while pools spawn hounds on another thread. The
    // test's own descriptors are close-on-exec (std opens everything so), so anything past
    // stdio in a child came from a pool's spawn.
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut pools = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let config = PoolConfig {
                    size: PoolSize::Fixed(2),
                    prestart: false,
                    ..test_config(&root)
                };
                let pool = Pool::builder().config(config).build().expect("pool builds");
                pool.shutdown(Duration::ZERO);
                pools += 1;
            }
            pools
        })
    };
    let ignore = inheritable_here();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut leaks = Vec::new();
    let mut children = 0u32;
    while Instant::now() < deadline {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cat");
        children += 1;
        // One line through it: `cat` is past its dynamic loader's own descriptors and in its
        // main loop, holding exactly what it inherited.
        let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        input.write_all(b"x\n").expect("write to cat");
        let mut echoed = [0u8; 2];
        output.read_exact(&mut echoed).expect("read from cat");
        let seen = extra_fds(child.id(), &ignore);
        if !seen.is_empty() {
            leaks.push(seen);
        }
        drop(input);
        let _ = child.kill();
        let _ = child.wait();
        // Leave the pools' thread some of the two cores.
        std::thread::sleep(Duration::from_micros(500));
    }
    stop.store(true, Ordering::Relaxed);
    let pools = spawner.join().expect("spawner thread");
    assert!(
        pools >= 3 && children >= 100,
        "{pools} pools, {children} children"
    );
    assert!(
        leaks.is_empty(),
        "{} of {children} children (during {pools} pool starts) inherited descriptors, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
    assert_no_hounds_left();
}
