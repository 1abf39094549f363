//! The hound's end of the control socketpair (SOCK_SEQPACKET: one frame per datagram).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use houndpool_protocol::control::{Message, MAX_CONTROL_DATAGRAM};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use crate::HoundError;

/// The control channel to the supervisor.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// What a non-blocking look at the channel found.
#[derive(Debug)]
pub(crate) enum Polled {
    /// Nothing to read.
    Nothing,
    /// A message arrived.
    Message(Box<Message>),
    /// The supervisor closed its end.
    Closed,
}

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Channel {
            fd,
            buf: vec![0; MAX_CONTROL_DATAGRAM + 1],
        }
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends one message as one datagram.
    pub(crate) fn send(&self, msg: &Message) -> Result<(), HoundError> {
        let mut out = Vec::with_capacity(256);
        msg.encode_frame(&mut out)?;
        let n = send(self.fd.as_raw_fd(), &out, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| HoundError::Channel(format!("send: {e}")))?;
        if n != out.len() {
            return Err(HoundError::Channel(format!(
                "short send: {n} of {} bytes",
                out.len()
            )));
        }
        Ok(())
    }

    /// Waits up to `timeout` for one message.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Result<Polled, HoundError> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(Polled::Nothing),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Polled::Nothing),
            Err(e) => return Err(HoundError::Channel(format!("poll: {e}"))),
        }
        self.try_recv()
    }

    /// Reads one message if one is waiting, without blocking.
    pub(crate) fn try_recv(&mut self) -> Result<Polled, HoundError> {
        let fd = self.fd.as_raw_fd();
        match recv(
            fd,
            &mut self.buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(0) => Ok(Polled::Closed),
            Ok(n) if n > self.buf.len() => Err(HoundError::Channel(format!(
                "control datagram of {n} bytes exceeds the {} byte limit",
                self.buf.len()
            ))),
            Ok(n) => Ok(Polled::Message(Box::new(Message::from_datagram(
                &self.buf[..n],
            )?))),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(Polled::Nothing),
            Err(nix::errno::Errno::ECONNRESET) => Ok(Polled::Closed),
            Err(e) => Err(HoundError::Channel(format!("recv: {e}"))),
        }
    }
}
