//! The `seqpacket` row: a SOCK_SEQPACKET socketpair to an echo process, one datagram per frame.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use houndpool_protocol::frame::{write_frame, FRAME_HEADER_LEN};
use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, send, setsockopt, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
};

use super::peer::{check_frame, recv_datagram, Peer};
use super::{time_each, Row, Samples, ECHO_KIND, SIZES, WINDOW};
use crate::report::Transport;
use crate::util::{Result, StressError};

/// Our end of the socketpair, the echo process on the other, and the send buffer we got.
pub(super) struct SeqpacketRow {
    socket: OwnedFd,
    sndbuf: usize,
    frame: Vec<u8>,
    buf: Vec<u8>,
    /// Dropped after `socket` (field order): the peer sees EOF, then is reaped.
    _peer: Peer,
}

impl SeqpacketRow {
    /// Creates the socketpair (asking for send buffers that fit the largest frame) and starts
    /// the echo process on the other end.
    pub(super) fn start() -> Result<Self> {
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
        Ok(Self {
            socket: ours,
            sndbuf,
            frame: Vec::new(),
            buf: Vec::new(),
            _peer: peer,
        })
    }

    /// Prepares the frame for `body` and a receive buffer one byte larger (to see truncation).
    fn prepare(&mut self, body: &[u8]) -> Result<()> {
        self.frame.clear();
        write_frame(ECHO_KIND, body, &mut self.frame)?;
        self.buf.resize(self.frame.len() + 1, 0);
        Ok(())
    }

    /// Sends the frame; `Ok(false)` when the socket is full and `flags` asked not to wait.
    fn send_one(&self, flags: MsgFlags) -> Result<bool> {
        loop {
            match send(
                self.socket.as_raw_fd(),
                &self.frame,
                flags | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(k) if k == self.frame.len() => return Ok(true),
                Ok(k) => {
                    return Err(StressError::Unexpected(format!(
                        "short datagram send: {k} of {}",
                        self.frame.len()
                    )))
                }
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(StressError::os("send")(e)),
            }
        }
    }

    /// Receives one echo and checks it.
    fn recv_one(&mut self, size: usize) -> Result<()> {
        let k = recv_datagram(self.socket.as_raw_fd(), &mut self.buf)?;
        if k == 0 {
            return Err(StressError::Unexpected(
                "echo peer closed the socket".into(),
            ));
        }
        check_frame(&self.buf[..k], size)
    }
}

impl Row for SeqpacketRow {
    fn transport(&self) -> Transport {
        Transport::Seqpacket
    }

    fn carries(&self, size: usize) -> Result<()> {
        if FRAME_HEADER_LEN + size + 64 > self.sndbuf {
            return Err(StressError::Unexpected(format!(
                "SO_SNDBUF is {} bytes (raise net.core.wmem_max)",
                self.sndbuf
            )));
        }
        Ok(())
    }

    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration> {
        self.prepare(body)?;
        let start = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        while done < n {
            // Never block in send: the peer may be blocked sending replies to us.
            while sent < n && sent - done < WINDOW {
                if !self.send_one(MsgFlags::MSG_DONTWAIT)? {
                    break;
                }
                sent += 1;
            }
            self.recv_one(body.len())?;
            done += 1;
        }
        Ok(start.elapsed())
    }

    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
        self.prepare(body)?;
        time_each(n, hist, || {
            self.send_one(MsgFlags::empty())?;
            self.recv_one(body.len())
        })
    }
}
