//! `ipc`: the transport alone. The real pool's shared-memory rings carrying `Noop` jobs, side by
//! side with a SOCK_SEQPACKET socketpair and a pair of pipes carrying the protocol's frames
//! (`frame::write_frame` + parse) to an echo process — a re-exec of this binary
//! (`hound-stress __echo-peer`), so every transport crosses a real process boundary.
//! The pool runs twice per size: `shm` through its fastest public API (`submit_batch` +
//! `recv_outcomes`), `shm-single` with one `submit` per job and the per-outcome channel. The
//! `ring` row is the bare ring between two threads (see [`ring`]): the physical limit.
//!
//! Streaming keeps a window of requests outstanding and counts round trips per second; the
//! round-trip latency is measured one request at a time. The pipe peer batches: it answers
//! every frame of one `read` with one `write`, which is the best a stdio transport can do.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use houndpool::{Job, OutcomeKind, Pool, PoolConfig, PoolExhaustedAction, SubmitError};
use houndpool_protocol::frame::MessageKind;
use houndpool_protocol::frame::{
    parse_frame, write_frame, FrameDecoder, DEFAULT_MAX_BODY, FRAME_HEADER_LEN,
};
use indicatif::ProgressBar;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    getsockopt, recv, send, setsockopt, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockType,
};

use crate::report::{IdleResult, IpcResult, Transport};

mod ring;
use crate::util::{
    bench_config, cpu_time, expect_completed, histogram, next_outcome, percentiles, record, Ctx,
    Result, StressError,
};

/// Payload sizes of issue 5.
pub const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 256 * 1024];
/// Requests outstanding while streaming (below the pool's 64 per hound).
const WINDOW: usize = 32;
/// The frame kind the echo frames carry. Bodies are opaque bytes here (never decoded as
/// control messages); the kind only has to be one the frame parser accepts.
const ECHO_KIND: MessageKind = MessageKind::Hello;
/// Largest frame body the peers accept.
const MAX_BODY: u32 = DEFAULT_MAX_BODY;
/// Hidden subcommand that runs an echo peer.
pub const ECHO_PEER_CMD: &str = "__echo-peer";

/// (streamed messages, round-trip samples) for a payload size.
fn counts(ctx: &Ctx, size: usize) -> (usize, usize) {
    let budget = ctx.pick(48usize << 20, 2usize << 30);
    let stream = (budget / size).clamp(ctx.pick(200, 2_000), ctx.pick(30_000, 1_000_000));
    let rtt = ctx.pick(1_500, 20_000);
    (stream, rtt)
}

/// Untimed round trips streamed before a timed stream of `n`.
fn warm_up(n: usize) -> usize {
    (n / 10).max(4 * WINDOW)
}

/// A payload of `size` bytes with a recognisable pattern.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Which rows an `ipc` run measures (`hound-stress ipc --sizes 64 --transports shm`, e.g. to
/// profile one row); everything by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Payload sizes (each one of [`SIZES`]); all of them when empty.
    pub sizes: Vec<usize>,
    /// Transports; all of them when empty.
    pub transports: Vec<Transport>,
}

impl Filter {
    fn sizes(&self) -> Vec<usize> {
        SIZES
            .into_iter()
            .filter(|s| self.sizes.is_empty() || self.sizes.contains(s))
            .collect()
    }
    fn wants(&self, t: Transport) -> bool {
        self.transports.is_empty() || self.transports.contains(&t)
    }
}

/// Runs every transport at every size (or those `filter` names). Results are ordered by size,
/// then transport. `spin` overrides how long the shm pool's hound and collector, and the thread
/// waiting for outcomes, busy-wait before sleeping (the production default, 50 µs, when `None`).
/// The idle figure is measured only when an shm row ran (`None` otherwise).
pub fn run(
    ctx: &Ctx,
    spin: Option<Duration>,
    filter: &Filter,
) -> Result<(Vec<IpcResult>, Option<IdleResult>)> {
    let sizes = filter.sizes();
    let bar = ctx.bar((sizes.len() * 4) as u64, "ipc");
    let mut results = Vec::new();
    let mut idle = None;
    if filter.wants(Transport::Shm) || filter.wants(Transport::ShmSingle) {
        let (r, i) = shm(ctx, spin, &bar, filter, &sizes)?;
        results.extend(r);
        idle = Some(i);
    }
    if filter.wants(Transport::Ring) {
        results.extend(ring::run(
            ctx,
            shm_config(spin).region_layout(),
            &bar,
            &sizes,
        )?);
    }
    if filter.wants(Transport::Seqpacket) {
        results.extend(seqpacket(ctx, &bar, &sizes)?);
    }
    if filter.wants(Transport::Pipe) {
        results.extend(pipe(ctx, &bar, &sizes)?);
    }
    bar.finish_and_clear();
    let order = |t: Transport| match t {
        Transport::Shm => 0,
        Transport::ShmSingle => 1,
        Transport::Ring => 2,
        Transport::Seqpacket => 3,
        Transport::Pipe => 4,
    };
    results.sort_by_key(|r| (r.size, order(r.transport)));
    Ok((results, idle))
}

fn result(
    transport: Transport,
    size: usize,
    msgs: usize,
    elapsed: Duration,
    h: &Histogram<u64>,
) -> IpcResult {
    let msgs_per_sec = msgs as f64 / elapsed.as_secs_f64().max(1e-9);
    let (p50, p99, p999, max) = percentiles(h, 1_000.0);
    IpcResult {
        transport,
        size,
        msgs_per_sec,
        bytes_per_sec: msgs_per_sec * size as f64,
        rtt_p50_us: p50,
        rtt_p99_us: p99,
        rtt_p999_us: p999,
        rtt_max_us: max,
    }
}

// ---------------------------------------------------------------------------------------------
// shm: the real pool

const OUTCOME_TIMEOUT: Duration = Duration::from_secs(20);

fn check_echo(o: &houndpool::Outcome, size: usize) -> Result<()> {
    expect_completed(o)?;
    match &o.result {
        OutcomeKind::Completed(r) if r.payload.as_ref().map(Vec::len) == Some(size) => Ok(()),
        _ => Err(StressError::Unexpected(format!(
            "{}: echo of the wrong length",
            o.job_id
        ))),
    }
}

/// Takes at least one outcome into `buf`, and everything else that is waiting, up to
/// `WINDOW`: one `recv_outcomes`, which consumes the completion rings on this thread and spins
/// (the pool's `collector_spin`, which `--spin-us` sets) before it blocks.
fn take_outcomes(pool: &Pool, buf: &mut Vec<houndpool::Outcome>) -> Result<()> {
    if pool.recv_outcomes(buf, WINDOW, OUTCOME_TIMEOUT) == 0 {
        return Err(StressError::Unexpected(format!(
            "no outcome within {OUTCOME_TIMEOUT:?} (pool stalled?)"
        )));
    }
    Ok(())
}

/// The `shm` row: the window refilled with one `submit_batch` after every take of outcomes,
/// outcomes taken with `recv_outcomes`; the round trip is a batch of one.
fn shm_batched(pool: &Pool, body: &[u8], n: usize, samples: usize) -> Result<IpcResult> {
    let size = body.len();
    let jobs = vec![Job::noop(body); WINDOW];
    let mut results = Vec::with_capacity(WINDOW);
    let mut outcomes = Vec::with_capacity(WINDOW);
    let mut elapsed = Duration::ZERO;
    // An untimed warm-up first: a size's first jobs pay first-touch costs (ring pages,
    // allocator growth) that a short run would otherwise count.
    for (n, timed) in [(warm_up(n), false), (n, true)] {
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        // What the rings are believed to have room for: after a refusal, only as many as outcomes
        // freed since (a caller that backs off when told the pool is exhausted; at 256 KiB the
        // rings hold 3 jobs, and offering the whole window each time would spend the time on
        // refusals).
        let mut room = WINDOW;
        while done < n {
            let outstanding = sent - done;
            let k = (n - sent)
                .min(WINDOW - outstanding)
                .min(room.max(usize::from(outstanding == 0)));
            if k > 0 {
                pool.submit_batch(&jobs[..k], &mut results);
                let mut refused = false;
                for r in results.drain(..) {
                    match r {
                        Ok(_) => sent += 1,
                        // Rings full: the outcomes below make room.
                        Err(SubmitError::PoolExhausted) if sent > done => refused = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                room = if refused { 0 } else { room.saturating_sub(k) };
            }
            outcomes.clear();
            take_outcomes(pool, &mut outcomes)?;
            for o in &outcomes {
                check_echo(o, size)?;
            }
            done += outcomes.len();
            room += outcomes.len();
        }
        if timed {
            elapsed = start.elapsed();
        }
    }

    let mut h = histogram();
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        pool.submit_batch(&jobs[..1], &mut results);
        if let Some(Err(e)) = results.pop() {
            return Err(e.into());
        }
        outcomes.clear();
        take_outcomes(pool, &mut outcomes)?;
        let d = t.elapsed();
        for o in &outcomes {
            check_echo(o, size)?;
        }
        if i >= samples / 10 {
            record(&mut h, d);
        }
    }
    Ok(result(Transport::Shm, size, n, elapsed, &h))
}

/// The `shm-single` row: one `submit` per job, outcomes from the per-outcome channel.
fn shm_single(
    pool: &Pool,
    rx: &houndpool::Receiver<houndpool::Outcome>,
    body: &[u8],
    n: usize,
    samples: usize,
    spin: Duration,
) -> Result<IpcResult> {
    let size = body.len();
    let job = Job::noop(body);
    let mut elapsed = Duration::ZERO;
    // An untimed warm-up first: a size's first jobs pay first-touch costs (ring pages,
    // allocator growth) that a short run would otherwise count.
    for (n, timed) in [(warm_up(n), false), (n, true)] {
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        while done < n {
            while sent < n && sent - done < WINDOW {
                match pool.submit(&job) {
                    Ok(_) => sent += 1,
                    Err(SubmitError::PoolExhausted) if sent > done => break,
                    Err(e) => return Err(e.into()),
                }
            }
            // Take every outcome that is there, then refill the window in one go.
            let o = next_outcome(rx, spin, OUTCOME_TIMEOUT)?;
            check_echo(&o, size)?;
            done += 1;
            while let Ok(o) = rx.try_recv() {
                check_echo(&o, size)?;
                done += 1;
            }
        }
        if timed {
            elapsed = start.elapsed();
        }
    }

    let mut h = histogram();
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        pool.submit(&job)?;
        let o = next_outcome(rx, spin, OUTCOME_TIMEOUT)?;
        let d = t.elapsed();
        check_echo(&o, size)?;
        if i >= samples / 10 {
            record(&mut h, d);
        }
    }
    Ok(result(Transport::ShmSingle, size, n, elapsed, &h))
}

/// The shm pool's configuration (its ring sizes are the `ring` row's too).
fn shm_config(spin: Option<Duration>) -> PoolConfig {
    let max = *SIZES.iter().max().unwrap_or(&(256 * 1024));
    let defaults = bench_config(1);
    PoolConfig {
        max_evidence_bytes: max,
        max_output_bytes: max,
        exhausted: PoolExhaustedAction::Drop,
        hound_spin: spin.unwrap_or(defaults.hound_spin),
        collector_spin: spin.unwrap_or(defaults.collector_spin),
        ..defaults
    }
}

fn shm(
    ctx: &Ctx,
    spin: Option<Duration>,
    bar: &ProgressBar,
    filter: &Filter,
    sizes: &[usize],
) -> Result<(Vec<IpcResult>, IdleResult)> {
    let config = shm_config(spin);
    // This thread busy-waits for outcomes as long as the pool's threads do.
    let outcome_spin = config.collector_spin;
    let pool = Pool::builder().config(config).build()?;
    let rx = pool
        .outcomes()
        .ok_or_else(|| StressError::Unexpected("outcome channel disabled".into()))?;
    let mut out = Vec::new();
    for &size in sizes {
        let body = payload(size);
        let (n, samples) = counts(ctx, size);
        if filter.wants(Transport::ShmSingle) {
            out.push(shm_single(&pool, &rx, &body, n, samples, outcome_spin)?);
        }
        if filter.wants(Transport::Shm) {
            out.push(shm_batched(&pool, &body, n, samples)?);
        }
        bar.inc(1);
    }

    // Idle cost: let the spinners give up, then measure CPU time over a quiet interval.
    let pid = pool.stats().hounds.first().and_then(|h| h.pid);
    std::thread::sleep(Duration::from_millis(300));
    let seconds = ctx.pick(1.0, 3.0);
    let h0 = pid.and_then(|p| cpu_time(Some(p)));
    let s0 = cpu_time(None);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let elapsed = t0.elapsed().as_secs_f64();
    let h1 = pid.and_then(|p| cpu_time(Some(p)));
    let s1 = cpu_time(None);
    let pct = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() / elapsed * 100.0,
        _ => f64::NAN,
    };
    let idle = IdleResult {
        hound_cpu_percent: pct(h0, h1),
        host_cpu_percent: pct(s0, s1),
        seconds: elapsed,
    };
    pool.shutdown(Duration::from_secs(5));
    Ok((out, idle))
}

// ---------------------------------------------------------------------------------------------
// Echo peers (child processes)

/// A child echo process; killed and reaped when dropped.
struct Peer(Child);

impl Peer {
    fn spawn(mode: &str, stdin: Stdio, stdout: Stdio) -> Result<Peer> {
        let exe = std::env::current_exe().map_err(StressError::io("current_exe"))?;
        let child = Command::new(exe)
            .args([ECHO_PEER_CMD, "--mode", mode])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(StressError::io("spawn echo peer"))?;
        Ok(Peer(child))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The peer exits on EOF; give it a moment, then make sure.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of `hound-stress __echo-peer --mode seqpacket|pipe`: echoes frames until EOF.
/// In `seqpacket` mode stdin is the socket (one datagram per frame); in `pipe` mode frames
/// arrive on stdin and go back on stdout.
pub fn echo_peer(mode: &str) -> ExitCode {
    let r = match mode {
        "seqpacket" => echo_seqpacket(),
        "pipe" => echo_pipe(),
        other => Err(StressError::Unexpected(format!(
            "unknown echo mode {other:?}"
        ))),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hound-stress echo peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn echo_seqpacket() -> Result<()> {
    let fd = std::io::stdin().as_raw_fd();
    let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_BODY as usize + 1];
    let mut reply = Vec::with_capacity(buf.len());
    loop {
        let n = recv_datagram(fd, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let (h, body) = parse_frame(&buf[..n], MAX_BODY)?;
        reply.clear();
        write_frame(h.kind, body, &mut reply)?;
        loop {
            match send(fd, &reply, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Ok(()),
                Err(e) => return Err(StressError::os("echo send")(e)),
            }
        }
    }
}

fn echo_pipe() -> Result<()> {
    let mut input = File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(StressError::io("dup stdin"))?,
    );
    let mut output = File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(StressError::io("dup stdout"))?,
    );
    let mut dec = FrameDecoder::new(MAX_BODY);
    let mut buf = vec![0u8; 256 * 1024];
    let mut reply = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(StressError::io("echo read")(e)),
        };
        dec.push(&buf[..n]);
        reply.clear();
        while let Some((h, body)) = dec.next_frame()? {
            write_frame(h.kind, &body, &mut reply)?;
        }
        if !reply.is_empty() {
            match output.write_all(&reply) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(StressError::io("echo write")(e)),
            }
        }
    }
}

/// One datagram into `buf`; 0 at EOF; an error if it was truncated.
fn recv_datagram(fd: i32, buf: &mut [u8]) -> Result<usize> {
    loop {
        match recv(fd, buf, MsgFlags::MSG_TRUNC) {
            Ok(n) if n > buf.len() => {
                return Err(StressError::Unexpected(format!(
                    "datagram of {n} bytes exceeds the {}-byte buffer",
                    buf.len()
                )))
            }
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(StressError::os("recv")(e)),
        }
    }
}

fn check_frame(bytes: &[u8], size: usize) -> Result<()> {
    let (h, body) = parse_frame(bytes, MAX_BODY)?;
    check_body(h.kind, body, size)
}

fn check_body(kind: MessageKind, body: &[u8], size: usize) -> Result<()> {
    if kind != ECHO_KIND || body.len() != size || body.last() != payload_last(size).as_ref() {
        return Err(StressError::Unexpected(format!(
            "echo peer returned a wrong frame ({} bytes, expected {size})",
            body.len()
        )));
    }
    Ok(())
}

fn payload_last(size: usize) -> Option<u8> {
    size.checked_sub(1).map(|i| (i % 251) as u8)
}

// ---------------------------------------------------------------------------------------------
// SOCK_SEQPACKET

fn seqpacket(ctx: &Ctx, bar: &ProgressBar, sizes: &[usize]) -> Result<Vec<IpcResult>> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(StressError::os("socketpair"))?;
    // A Unix datagram must fit the sender's buffer: ask for room for the largest frame.
    let want = 4usize << 20;
    for fd in [&ours, &theirs] {
        let _ = setsockopt(fd, sockopt::SndBuf, &want);
        let got = getsockopt(fd, sockopt::SndBuf).unwrap_or(0);
        if got < FRAME_HEADER_LEN + SIZES[3] + 4096 {
            // Beyond net.core.wmem_max: root may force it.
            let _ = setsockopt(fd, sockopt::SndBufForce, &want);
        }
    }
    let sndbuf = getsockopt(&ours, sockopt::SndBuf).unwrap_or(0);
    let peer = Peer::spawn("seqpacket", Stdio::from(theirs), Stdio::null())?;
    let mut out = Vec::new();
    for &size in sizes {
        if FRAME_HEADER_LEN + size + 64 > sndbuf {
            eprintln!(
                "hound-stress: ipc seqpacket {size} B skipped: SO_SNDBUF is {sndbuf} bytes \
                 (raise net.core.wmem_max)"
            );
            bar.inc(1);
            continue;
        }
        let (n, samples) = counts(ctx, size);
        out.push(seqpacket_size(&ours, size, n, samples)?);
        bar.inc(1);
    }
    drop(ours);
    drop(peer);
    Ok(out)
}

fn seqpacket_size(fd: &OwnedFd, size: usize, n: usize, samples: usize) -> Result<IpcResult> {
    let raw = fd.as_raw_fd();
    let body = payload(size);
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + size);
    write_frame(ECHO_KIND, &body, &mut frame)?;
    let mut buf = vec![0u8; FRAME_HEADER_LEN + size + 1];
    let send_one = |flags: MsgFlags| -> Result<bool> {
        loop {
            match send(raw, &frame, flags | MsgFlags::MSG_NOSIGNAL) {
                Ok(k) if k == frame.len() => return Ok(true),
                Ok(k) => {
                    return Err(StressError::Unexpected(format!(
                        "short datagram send: {k} of {}",
                        frame.len()
                    )))
                }
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(StressError::os("send")(e)),
            }
        }
    };
    let recv_one = |buf: &mut [u8]| -> Result<()> {
        let k = recv_datagram(raw, buf)?;
        if k == 0 {
            return Err(StressError::Unexpected(
                "echo peer closed the socket".into(),
            ));
        }
        check_frame(&buf[..k], size)
    };

    // Streaming: never block in send (the peer may be blocked sending replies to us).
    let mut elapsed = Duration::ZERO;
    // An untimed warm-up first: a size's first jobs pay first-touch costs (ring pages,
    // allocator growth) that a short run would otherwise count.
    for (n, timed) in [(warm_up(n), false), (n, true)] {
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        while done < n {
            while sent < n && sent - done < WINDOW {
                if !send_one(MsgFlags::MSG_DONTWAIT)? {
                    break;
                }
                sent += 1;
            }
            recv_one(&mut buf)?;
            done += 1;
        }
        if timed {
            elapsed = start.elapsed();
        }
    }

    let mut h = histogram();
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        send_one(MsgFlags::empty())?;
        recv_one(&mut buf)?;
        if i >= samples / 10 {
            record(&mut h, t.elapsed());
        }
    }
    Ok(result(Transport::Seqpacket, size, n, elapsed, &h))
}

// ---------------------------------------------------------------------------------------------
// Pipes

fn pipe(ctx: &Ctx, bar: &ProgressBar, sizes: &[usize]) -> Result<Vec<IpcResult>> {
    let mut peer = Peer::spawn("pipe", Stdio::piped(), Stdio::piped())?;
    let (Some(mut stdin), Some(mut stdout)) = (peer.0.stdin.take(), peer.0.stdout.take()) else {
        return Err(StressError::Unexpected("echo peer pipes missing".into()));
    };
    let flags = fcntl(stdin.as_raw_fd(), FcntlArg::F_GETFL).map_err(StressError::os("F_GETFL"))?;
    fcntl(
        stdin.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(StressError::os("F_SETFL"))?;
    let mut out = Vec::new();
    for &size in sizes {
        let (n, samples) = counts(ctx, size);
        pipe_exchange(&mut stdin, &mut stdout, size, warm_up(n), WINDOW, None)?;
        let start = Instant::now();
        pipe_exchange(&mut stdin, &mut stdout, size, n, WINDOW, None)?;
        let elapsed = start.elapsed();
        let mut h = histogram();
        pipe_exchange(&mut stdin, &mut stdout, size, samples / 10, 1, None)?;
        pipe_exchange(&mut stdin, &mut stdout, size, samples, 1, Some(&mut h))?;
        out.push(result(Transport::Pipe, size, n, elapsed, &h));
        bar.inc(1);
    }
    drop(stdin);
    drop(stdout);
    drop(peer);
    Ok(out)
}

/// Sends `n` frames with at most `window` outstanding and takes the echoes; with a histogram,
/// records each frame's round trip (meaningful with a window of 1). `stdin` is non-blocking,
/// so this never blocks writing while the peer waits for us to read.
fn pipe_exchange(
    stdin: &mut ChildStdin,
    stdout: &mut ChildStdout,
    size: usize,
    n: usize,
    window: usize,
    mut hist: Option<&mut Histogram<u64>>,
) -> Result<()> {
    let body = payload(size);
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + size);
    write_frame(ECHO_KIND, &body, &mut frame)?;
    let mut pending: Vec<u8> = Vec::new();
    let mut off = 0usize;
    let mut dec = FrameDecoder::new(MAX_BODY);
    let mut rbuf = vec![0u8; 256 * 1024];
    let mut stamps: VecDeque<Instant> = VecDeque::with_capacity(window);
    let (mut sent, mut done) = (0usize, 0usize);
    while done < n {
        while sent < n && sent - done < window {
            pending.extend_from_slice(&frame);
            stamps.push_back(Instant::now());
            sent += 1;
        }
        while off < pending.len() {
            match stdin.write(&pending[off..]) {
                Ok(0) => return Err(StressError::Unexpected("echo pipe closed".into())),
                Ok(k) => off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(StressError::io("pipe write")(e)),
            }
        }
        if off == pending.len() {
            pending.clear();
            off = 0;
        }
        let readable = if off < pending.len() {
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLOUT),
                PollFd::new(stdout.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(StressError::os("poll")(e)),
            }
            fds[1].revents().is_some_and(|r| !r.is_empty())
        } else {
            true
        };
        if !readable {
            continue;
        }
        let k = match stdout.read(&mut rbuf) {
            Ok(0) => {
                return Err(StressError::Unexpected(
                    "echo peer closed its stdout".into(),
                ))
            }
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(StressError::io("pipe read")(e)),
        };
        dec.push(&rbuf[..k]);
        while let Some((h, body)) = dec.next_frame()? {
            check_body(h.kind, &body, size)?;
            let t = stamps.pop_front();
            if let (Some(hist), Some(t)) = (hist.as_deref_mut(), t) {
                record(hist, t.elapsed());
            }
            done += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_scale_with_size_and_mode() {
        let quick = Ctx {
            quick: true,
            progress: false,
            cores: 2,
        };
        let full = Ctx {
            quick: false,
            ..quick
        };
        let (q64, _) = counts(&quick, 64);
        let (q256k, _) = counts(&quick, 256 * 1024);
        assert!(q64 > q256k && q256k >= 200);
        assert_eq!(counts(&full, 64).0, 1_000_000);
        assert!(counts(&full, 64).1 > counts(&quick, 64).1);
    }

    #[test]
    fn payload_pattern_is_checked() {
        let body = payload(300);
        assert_eq!(body.len(), 300);
        assert!(check_body(ECHO_KIND, &body, 300).is_ok());
        assert!(check_body(ECHO_KIND, &body[..299], 300).is_err());
        let mut bad = body.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(check_body(ECHO_KIND, &bad, 300).is_err());
    }
}
