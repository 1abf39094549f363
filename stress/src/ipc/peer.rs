//! The echo process of the socket and pipe rows (`hound-stress __echo-peer`), and the checks
//! every row applies to an echo.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use houndpool_protocol::frame::FRAME_HEADER_LEN;
use houndpool_protocol::frame::{parse_frame, write_frame, FrameDecoder, MessageKind};
use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};

use super::{payload_last, ECHO_KIND, ECHO_PEER_CMD, MAX_BODY};
use crate::util::{Result, StressError};

/// A child echo process; killed and reaped when dropped.
pub(super) struct Peer(pub(super) Child);

impl Peer {
    /// Starts `hound-stress __echo-peer --mode MODE` with the given stdin and stdout.
    pub(super) fn spawn(mode: &str, stdin: Stdio, stdout: Stdio) -> Result<Peer> {
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

/// Answers every frame of one `read` with one `write` (the best a stdio transport can do).
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
pub(super) fn recv_datagram(fd: i32, buf: &mut [u8]) -> Result<usize> {
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

/// Checks that `bytes` is one echo frame of a `size`-byte payload.
pub(super) fn check_frame(bytes: &[u8], size: usize) -> Result<()> {
    let (h, body) = parse_frame(bytes, MAX_BODY)?;
    check_body(h.kind, body, size)
}

/// Checks an echoed body: the echo kind, the length, the pattern's last byte.
pub(super) fn check_body(kind: MessageKind, body: &[u8], size: usize) -> Result<()> {
    if kind != ECHO_KIND || body.len() != size || body.last() != payload_last(size).as_ref() {
        return Err(StressError::Unexpected(format!(
            "echo peer returned a wrong frame ({} bytes, expected {size})",
            body.len()
        )));
    }
    Ok(())
}
