//! The `pipe` row: a pair of pipes (the echo process's stdin and stdout), the origin's
//! transport, carrying length-prefixed frames; both sides batch (one `write` per window or per
//! `read`'s worth of frames).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use houndpool_protocol::frame::{write_frame, FrameDecoder, FRAME_HEADER_LEN};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::peer::{check_body, Peer};
use super::{Row, Samples, ECHO_KIND, MAX_BODY, WINDOW};
use crate::report::Transport;
use crate::util::{record, Result, StressError};

/// The echo process and our ends of its stdin (non-blocking) and stdout.
pub(super) struct PipeRow {
    stdin: ChildStdin,
    stdout: ChildStdout,
    rbuf: Vec<u8>,
    /// Dropped after the pipes (field order): the peer sees EOF, then is reaped.
    _peer: Peer,
}

impl PipeRow {
    /// Starts the echo process with piped stdin and stdout; our write end is non-blocking, so
    /// a row never blocks writing while the peer waits for us to read.
    pub(super) fn start() -> Result<Self> {
        let mut peer = Peer::spawn("pipe", Stdio::piped(), Stdio::piped())?;
        let (Some(stdin), Some(stdout)) = (peer.0.stdin.take(), peer.0.stdout.take()) else {
            return Err(StressError::Unexpected("echo peer pipes missing".into()));
        };
        let flags =
            fcntl(stdin.as_raw_fd(), FcntlArg::F_GETFL).map_err(StressError::os("F_GETFL"))?;
        fcntl(
            stdin.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(StressError::os("F_SETFL"))?;
        Ok(Self {
            stdin,
            stdout,
            rbuf: vec![0u8; 256 * 1024],
            _peer: peer,
        })
    }

    /// Sends `n` frames with at most `window` outstanding and takes the echoes; with a
    /// histogram, records each frame's round trip (meaningful with a window of 1).
    fn exchange(
        &mut self,
        body: &[u8],
        n: usize,
        window: usize,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> Result<()> {
        let size = body.len();
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + size);
        write_frame(ECHO_KIND, body, &mut frame)?;
        let mut pending: Vec<u8> = Vec::new();
        let mut off = 0usize;
        let mut dec = FrameDecoder::new(MAX_BODY);
        let mut stamps: VecDeque<Instant> = VecDeque::with_capacity(window);
        let (mut sent, mut done) = (0usize, 0usize);
        while done < n {
            while sent < n && sent - done < window {
                pending.extend_from_slice(&frame);
                stamps.push_back(Instant::now());
                sent += 1;
            }
            while off < pending.len() {
                match self.stdin.write(&pending[off..]) {
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
                    PollFd::new(self.stdin.as_fd(), PollFlags::POLLOUT),
                    PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN),
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
            let k = match self.stdout.read(&mut self.rbuf) {
                Ok(0) => {
                    return Err(StressError::Unexpected(
                        "echo peer closed its stdout".into(),
                    ))
                }
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(StressError::io("pipe read")(e)),
            };
            dec.push(&self.rbuf[..k]);
            while let Some((h, echoed)) = dec.next_frame()? {
                check_body(h.kind, &echoed, size)?;
                let t = stamps.pop_front();
                if let (Some(hist), Some(t)) = (hist.as_deref_mut(), t) {
                    record(hist, t.elapsed());
                }
                done += 1;
            }
        }
        Ok(())
    }
}

impl Row for PipeRow {
    fn transport(&self) -> Transport {
        Transport::Pipe
    }

    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration> {
        let start = Instant::now();
        self.exchange(body, n, WINDOW, None)?;
        Ok(start.elapsed())
    }

    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
        self.exchange(body, n, 1, hist)
    }
}
