//! Length-prefixed frames for the control channel (SOCK_SEQPACKET) and the daemon socket.
//!
//! Layout (all little-endian), 16-byte header then `body_len` bytes of body:
//! ```text
//! offset size field
//! 0      4    magic  = FRAME_MAGIC ("HPFR" read as u32 LE)
//! 4      2    version = PROTOCOL_VERSION
//! 6      2    kind (MessageKind as u16)
//! 8      4    body_len (u32, must be <= the receiver's limit)
//! 12     4    reserved, must be 0
//! ```
//! A header is validated in this order, and the first failure is the error reported: magic
//! ([`ProtocolError::BadFrameMagic`]), version ([`ProtocolError::UnsupportedVersion`]),
//! reserved ([`ProtocolError::ReservedNonZero`]), kind ([`ProtocolError::UnknownMessageKind`]),
//! length against the receiver's limit ([`ProtocolError::FrameTooLarge`]).

use crate::ProtocolError;

/// Frame magic: the bytes "HPFR" read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"HPFR");
/// Size of the fixed frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 16;
/// Default limit on a frame body (control channel); the daemon configures its own.
pub const DEFAULT_MAX_BODY: u32 = 1 << 20;

/// The kind field of a frame header: which message the body holds, and so which channel it
/// belongs to (1–6 the control channel, [`crate::control`]; 16–23 the daemon socket,
/// [`crate::daemon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageKind {
    /// supervisor → hound: the slot a (possibly prestarted) hound now serves
    /// ([`Hello`](crate::control::Hello)).
    Hello = 1,
    /// hound → supervisor: sandbox applied, ready for jobs.
    Ready = 2,
    /// supervisor → hound: finish what is in the ring, then exit 0.
    Shutdown = 3,
    /// hound → supervisor: last words before exiting non-zero.
    Fatal = 4,
    /// supervisor → hound: the pool-wide settings the hound confines itself with, queued
    /// before the hound is started ([`Setup`](crate::control::Setup)).
    Setup = 5,
    /// supervisor → hound: resolved addresses of the S3 endpoint and the private CA
    /// ([`ColdEndpoints`](crate::control::ColdEndpoints)); after Hello, and again whenever
    /// re-resolution changes them.
    ColdEndpoints = 6,
    /// client → houndd: run a job ([`Submit`](crate::daemon::Submit)).
    Submit = 16,
    /// houndd → client: accepted or refused ([`SubmitReply`](crate::daemon::SubmitReply)).
    SubmitReply = 17,
    /// houndd → client: the outcome of an accepted job
    /// ([`JobOutcome`](crate::daemon::JobOutcome)).
    Outcome = 18,
    /// client → houndd: ask for counters ([`StatsRequest`](crate::daemon::StatsRequest)).
    StatsRequest = 19,
    /// houndd → client: counters ([`StatsReply`](crate::daemon::StatsReply)).
    Stats = 20,
    /// houndd → client: last frame before the daemon closes the connection
    /// ([`ErrorNotice`](crate::daemon::ErrorNotice)).
    Error = 21,
    /// client → houndd: cancel a job this connection submitted
    /// ([`Cancel`](crate::daemon::Cancel)).
    Cancel = 22,
    /// houndd → client: what the cancel did ([`CancelReply`](crate::daemon::CancelReply)).
    CancelReply = 23,
}

impl MessageKind {
    /// Maps a wire value to a kind; unknown values are `UnknownMessageKind`.
    pub fn from_u16(value: u16) -> Result<Self, ProtocolError> {
        match value {
            1 => Ok(MessageKind::Hello),
            2 => Ok(MessageKind::Ready),
            3 => Ok(MessageKind::Shutdown),
            4 => Ok(MessageKind::Fatal),
            5 => Ok(MessageKind::Setup),
            6 => Ok(MessageKind::ColdEndpoints),
            16 => Ok(MessageKind::Submit),
            17 => Ok(MessageKind::SubmitReply),
            18 => Ok(MessageKind::Outcome),
            19 => Ok(MessageKind::StatsRequest),
            20 => Ok(MessageKind::Stats),
            21 => Ok(MessageKind::Error),
            22 => Ok(MessageKind::Cancel),
            23 => Ok(MessageKind::CancelReply),
            kind => Err(ProtocolError::UnknownMessageKind { kind }),
        }
    }
    /// Stable lowercase name for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Hello => "hello",
            MessageKind::Ready => "ready",
            MessageKind::Shutdown => "shutdown",
            MessageKind::Fatal => "fatal",
            MessageKind::Setup => "setup",
            MessageKind::ColdEndpoints => "cold_endpoints",
            MessageKind::Submit => "submit",
            MessageKind::SubmitReply => "submit_reply",
            MessageKind::Outcome => "outcome",
            MessageKind::StatsRequest => "stats_request",
            MessageKind::Stats => "stats",
            MessageKind::Error => "error",
            MessageKind::Cancel => "cancel",
            MessageKind::CancelReply => "cancel_reply",
        }
    }
    /// Whether this kind belongs to the daemon socket (16–23) rather than the control channel.
    pub fn is_daemon(self) -> bool {
        (self as u16) >= 16
    }

    /// The error for a frame of this kind on the other channel (`channel` names the one it
    /// arrived on).
    pub(crate) fn not_of_channel(self, channel: &str) -> ProtocolError {
        ProtocolError::MalformedBody {
            kind: self.name(),
            reason: format!("not a message of the {channel}"),
        }
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message kind (validated against `MessageKind`).
    pub kind: MessageKind,
    /// Body length in bytes (validated against the limit).
    pub body_len: u32,
}

/// Why a header was refused. `Copy`, so a dead [`FrameDecoder`] can report it again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderFault {
    Magic(u32),
    Version(u16),
    Reserved(u32),
    Kind(u16),
    TooLarge { len: u32, max: u32 },
}

impl From<HeaderFault> for ProtocolError {
    fn from(fault: HeaderFault) -> Self {
        match fault {
            HeaderFault::Magic(found) => ProtocolError::BadFrameMagic {
                found,
                expected: FRAME_MAGIC,
            },
            HeaderFault::Version(found) => ProtocolError::UnsupportedVersion {
                found,
                supported: crate::PROTOCOL_VERSION,
            },
            HeaderFault::Reserved(found) => ProtocolError::ReservedNonZero { found },
            HeaderFault::Kind(kind) => ProtocolError::UnknownMessageKind { kind },
            HeaderFault::TooLarge { len, max } => ProtocolError::FrameTooLarge {
                len: u64::from(len),
                max: u64::from(max),
            },
        }
    }
}

fn le_u16(bytes: &[u8; FRAME_HEADER_LEN], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8; FRAME_HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn parse_header(bytes: &[u8; FRAME_HEADER_LEN], max_body: u32) -> Result<FrameHeader, HeaderFault> {
    let magic = le_u32(bytes, 0);
    if magic != FRAME_MAGIC {
        return Err(HeaderFault::Magic(magic));
    }
    let version = le_u16(bytes, 4);
    if version != crate::PROTOCOL_VERSION {
        return Err(HeaderFault::Version(version));
    }
    let reserved = le_u32(bytes, 12);
    if reserved != 0 {
        return Err(HeaderFault::Reserved(reserved));
    }
    let raw_kind = le_u16(bytes, 6);
    let kind = MessageKind::from_u16(raw_kind).map_err(|_| HeaderFault::Kind(raw_kind))?;
    let body_len = le_u32(bytes, 8);
    if body_len > max_body {
        return Err(HeaderFault::TooLarge {
            len: body_len,
            max: max_body,
        });
    }
    Ok(FrameHeader { kind, body_len })
}

/// The first [`FRAME_HEADER_LEN`] bytes of `bytes` as an array, if there are that many.
fn header_bytes(bytes: &[u8]) -> Option<&[u8; FRAME_HEADER_LEN]> {
    bytes.get(..FRAME_HEADER_LEN)?.try_into().ok()
}

impl FrameHeader {
    /// Parses and validates a header from exactly [`FRAME_HEADER_LEN`] bytes.
    ///
    /// Checks, in order: magic, version (must be [`crate::PROTOCOL_VERSION`]), reserved (must
    /// be 0), kind (must be a known [`MessageKind`]), `body_len <= max_body`. Returns the
    /// typed error of the first check that fails.
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN], max_body: u32) -> Result<Self, ProtocolError> {
        parse_header(bytes, max_body).map_err(ProtocolError::from)
    }
    /// Writes this header (magic, current protocol version, kind, body length, reserved 0).
    pub fn write(&self, out: &mut [u8; FRAME_HEADER_LEN]) {
        out[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&crate::PROTOCOL_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&0u32.to_le_bytes());
    }

    /// Checks that `body` is exactly the `body_len` bytes this header announces:
    /// [`ProtocolError::Truncated`] if shorter, [`ProtocolError::TrailingBytes`] if longer.
    pub(crate) fn check_body(&self, body: &[u8]) -> Result<(), ProtocolError> {
        let announced = self.body_len as usize;
        match body.len().cmp(&announced) {
            std::cmp::Ordering::Less => Err(ProtocolError::Truncated {
                needed: announced,
                available: body.len(),
            }),
            std::cmp::Ordering::Greater => Err(ProtocolError::TrailingBytes {
                expected: announced,
                found: body.len(),
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}

/// Appends one complete frame (header + body) to `out`.
///
/// Fails with [`ProtocolError::FrameTooLarge`] (and leaves `out` untouched) only if `body`
/// does not fit the u32 length field; the receiver's own limit is the receiver's business.
pub fn write_frame(kind: MessageKind, body: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let body_len = u32::try_from(body.len()).map_err(|_| ProtocolError::FrameTooLarge {
        len: body.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    FrameHeader { kind, body_len }.write(&mut header);
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(())
}

/// Parses exactly one frame from `bytes` (one SEQPACKET datagram). Trailing bytes are an error.
///
/// Errors: [`ProtocolError::Truncated`] if the header or the announced body is incomplete,
/// any header error of [`FrameHeader::parse`], [`ProtocolError::TrailingBytes`] if bytes follow
/// the body. On success the returned body is exactly `header.body_len` bytes.
pub fn parse_frame(bytes: &[u8], max_body: u32) -> Result<(FrameHeader, &[u8]), ProtocolError> {
    let header_bytes = header_bytes(bytes).ok_or(ProtocolError::Truncated {
        needed: FRAME_HEADER_LEN,
        available: bytes.len(),
    })?;
    let header = FrameHeader::parse(header_bytes, max_body)?;
    let frame_len = FRAME_HEADER_LEN + header.body_len as usize;
    match bytes.len().cmp(&frame_len) {
        std::cmp::Ordering::Less => Err(ProtocolError::Truncated {
            needed: frame_len,
            available: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(ProtocolError::TrailingBytes {
            expected: frame_len,
            found: bytes.len(),
        }),
        std::cmp::Ordering::Equal => Ok((header, &bytes[FRAME_HEADER_LEN..])),
    }
}

/// Streaming decoder for byte streams (the daemon's SOCK_STREAM socket): feed bytes in
/// arbitrary chunks, take complete frames out. Memory is bounded by `FRAME_HEADER_LEN +
/// max_body` plus what the caller feeds before taking frames out; a header announcing more
/// than `max_body` is an error before any body byte is buffered.
///
/// Every header is validated by [`FrameDecoder::push`] as soon as its 16 bytes are in; bytes
/// after an invalid header are never buffered. Frames that precede an invalid header are still
/// returned, in order; after them [`FrameDecoder::next_frame`] returns the header's error on
/// every call (the stream is dead and further pushes are ignored). Total copying is linear in
/// the bytes pushed: consumed bytes are dropped once they are at least half of the buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    max_body: u32,
    /// Received bytes. `buf[read..]` has not been returned yet.
    buf: Vec<u8>,
    /// Start of the first frame not yet returned.
    read: usize,
    /// Start of the first frame not yet complete; `buf[read..scan]` holds complete, validated
    /// frames and `buf[scan..]` a prefix of the next one.
    scan: usize,
    /// Header of the frame at `scan`, once its 16 bytes are in and valid.
    scan_header: Option<FrameHeader>,
    /// The stream is dead: this header fault is reported once the frames before it are taken.
    fault: Option<HeaderFault>,
}

impl FrameDecoder {
    /// A decoder that refuses bodies larger than `max_body`.
    pub fn new(max_body: u32) -> Self {
        FrameDecoder {
            max_body,
            buf: Vec::new(),
            read: 0,
            scan: 0,
            scan_header: None,
            fault: None,
        }
    }

    /// Appends received bytes.
    ///
    /// Validates each frame header as soon as it is complete; stops buffering at the first
    /// invalid one. Ignores its input once the stream is dead.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.fault.is_some() {
            return;
        }
        self.compact();
        while !bytes.is_empty() {
            // `buf[scan..]` is a prefix of the frame being assembled; never take more than
            // that frame still needs, so a bad header is seen before anything after it is kept.
            let frame_len = match self.scan_header {
                None => FRAME_HEADER_LEN,
                Some(h) => FRAME_HEADER_LEN + h.body_len as usize,
            };
            let have = self.buf.len() - self.scan;
            let take = (frame_len - have).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if have + take < frame_len {
                break;
            }
            match self.scan_header {
                Some(_) => {
                    self.scan = self.buf.len();
                    self.scan_header = None;
                }
                None => {
                    let parsed = match header_bytes(&self.buf[self.scan..]) {
                        Some(h) => parse_header(h, self.max_body),
                        // Unreachable: exactly FRAME_HEADER_LEN bytes follow `scan` here.
                        None => break,
                    };
                    match parsed {
                        Ok(h) if h.body_len == 0 => self.scan = self.buf.len(),
                        Ok(h) => self.scan_header = Some(h),
                        Err(fault) => {
                            self.buf.truncate(self.scan);
                            self.fault = Some(fault);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Returns the next complete frame as (header, body), `Ok(None)` if more bytes are
    /// needed, or the first error (after which the stream must be closed).
    ///
    /// Once an error has been returned, every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Vec<u8>)>, ProtocolError> {
        if self.read < self.scan {
            let frame = &self.buf[self.read..self.scan];
            // Frames before `scan` were validated by `push`; parsing again cannot fail, but
            // any error is propagated rather than assumed away.
            let header_bytes = header_bytes(frame).ok_or(ProtocolError::Truncated {
                needed: FRAME_HEADER_LEN,
                available: frame.len(),
            })?;
            let header = FrameHeader::parse(header_bytes, self.max_body)?;
            let end = FRAME_HEADER_LEN + header.body_len as usize;
            let body = frame
                .get(FRAME_HEADER_LEN..end)
                .ok_or(ProtocolError::Truncated {
                    needed: end,
                    available: frame.len(),
                })?
                .to_vec();
            self.read += end;
            if self.read == self.buf.len() {
                self.buf.clear();
                self.read = 0;
                self.scan = 0;
            }
            return Ok(Some((header, body)));
        }
        match self.fault {
            Some(fault) => Err(fault.into()),
            None => Ok(None),
        }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.read
    }

    /// Drops consumed bytes once they are at least as many as the unconsumed ones, so each
    /// byte is moved at most a constant number of times on average.
    fn compact(&mut self) {
        if self.read > 0 && self.read >= self.buf.len() - self.read {
            self.buf.drain(..self.read);
            self.scan -= self.read;
            self.read = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [MessageKind; 5] = [
        MessageKind::Hello,
        MessageKind::Ready,
        MessageKind::Shutdown,
        MessageKind::Fatal,
        MessageKind::Setup,
    ];

    #[test]
    fn kind_wire_values_and_names() {
        for kind in KINDS {
            assert_eq!(MessageKind::from_u16(kind as u16).unwrap(), kind);
        }
        let names: Vec<_> = KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["hello", "ready", "shutdown", "fatal", "setup"]);
        for bad in [0u16, 7, 0x100, u16::MAX] {
            assert!(matches!(
                MessageKind::from_u16(bad),
                Err(ProtocolError::UnknownMessageKind { kind }) if kind == bad
            ));
        }
    }

    #[test]
    fn daemon_kinds_keep_their_wire_values() {
        let kinds = [
            (MessageKind::Submit, 16, "submit"),
            (MessageKind::SubmitReply, 17, "submit_reply"),
            (MessageKind::Outcome, 18, "outcome"),
            (MessageKind::StatsRequest, 19, "stats_request"),
            (MessageKind::Stats, 20, "stats"),
            (MessageKind::Error, 21, "error"),
            (MessageKind::Cancel, 22, "cancel"),
            (MessageKind::CancelReply, 23, "cancel_reply"),
        ];
        for (k, v, name) in kinds {
            assert_eq!(k as u16, v);
            assert_eq!(MessageKind::from_u16(v).unwrap(), k);
            assert_eq!(k.name(), name);
        }
        for k in KINDS {
            assert!(!k.is_daemon());
        }
        for bad in [7u16, 15, 24] {
            assert!(MessageKind::from_u16(bad).is_err());
        }
    }

    fn frame(kind: MessageKind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(kind, body, &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout() {
        let f = frame(MessageKind::Fatal, b"xyz");
        assert_eq!(
            f,
            [b'H', b'P', b'F', b'R', 1, 0, 4, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'x', b'y', b'z']
        );
        let (h, body) = parse_frame(&f, 16).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                kind: MessageKind::Fatal,
                body_len: 3
            }
        );
        assert_eq!(body, b"xyz");
    }

    #[test]
    fn validation_order() {
        // Everything wrong at once: magic is reported first, then version, reserved, kind, length.
        let mut h = [0xffu8; FRAME_HEADER_LEN];
        assert!(matches!(
            FrameHeader::parse(&h, 0),
            Err(ProtocolError::BadFrameMagic { .. })
        ));
        h[0..4].copy_from_slice(b"HPFR");
        assert!(matches!(
            FrameHeader::parse(&h, 0),
            Err(ProtocolError::UnsupportedVersion {
                found: 0xffff,
                supported: 1
            })
        ));
        h[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert!(matches!(
            FrameHeader::parse(&h, 0),
            Err(ProtocolError::ReservedNonZero { found: u32::MAX })
        ));
        h[12..16].copy_from_slice(&[0; 4]);
        assert!(matches!(
            FrameHeader::parse(&h, 0),
            Err(ProtocolError::UnknownMessageKind { kind: 0xffff })
        ));
        h[6..8].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(
            FrameHeader::parse(&h, 0),
            Err(ProtocolError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 0
            })
        ));
        assert!(FrameHeader::parse(&h, u32::MAX).is_ok());
    }

    #[test]
    fn decoder_rejects_oversized_header_before_body() {
        let mut d = FrameDecoder::new(8);
        let f = frame(MessageKind::Ready, &[0; 9]);
        d.push(&f[..FRAME_HEADER_LEN - 1]);
        assert!(d.next_frame().unwrap().is_none());
        d.push(&f[FRAME_HEADER_LEN - 1..]);
        assert_eq!(d.buffered(), 0, "no byte of the refused frame is kept");
        for _ in 0..3 {
            assert!(matches!(
                d.next_frame(),
                Err(ProtocolError::FrameTooLarge { len: 9, max: 8 })
            ));
        }
        d.push(&frame(MessageKind::Ready, &[]));
        assert_eq!(d.buffered(), 0, "a dead stream buffers nothing");
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn decoder_returns_good_frames_before_the_error() {
        let mut bytes = frame(MessageKind::Hello, b"a");
        bytes.extend(frame(MessageKind::Ready, b""));
        bytes.extend(b"XXXXXXXXXXXXXXXXXXXXXXXX");
        let mut d = FrameDecoder::new(16);
        d.push(&bytes);
        assert_eq!(d.buffered(), 2 * FRAME_HEADER_LEN + 1);
        assert_eq!(d.next_frame().unwrap().unwrap().1, b"a");
        assert_eq!(d.next_frame().unwrap().unwrap().0.kind, MessageKind::Ready);
        assert!(matches!(
            d.next_frame(),
            Err(ProtocolError::BadFrameMagic { .. })
        ));
        assert!(matches!(
            d.next_frame(),
            Err(ProtocolError::BadFrameMagic { .. })
        ));
    }

    #[test]
    fn decoder_compacts_and_stays_bounded() {
        let f = frame(MessageKind::Fatal, &[7; 100]);
        let stream: Vec<u8> = (0..3000).flat_map(|_| f.clone()).collect();
        let mut d = FrameDecoder::new(100);
        let mut taken = 0;
        // Chunks of a frame and a half leave a partial frame behind after every drain, so the
        // decoder must compact instead of clearing; its buffer must stay a few frames long.
        for chunk in stream.chunks(f.len() * 3 / 2) {
            d.push(chunk);
            while let Some((h, body)) = d.next_frame().unwrap() {
                assert_eq!(h.body_len, 100);
                assert_eq!(body, [7; 100]);
                taken += 1;
            }
            assert!(d.buffered() < f.len());
            assert!(d.buf.len() <= 4 * f.len(), "buffer {}", d.buf.len());
            assert!(
                d.buf.capacity() <= 8 * f.len(),
                "capacity {}",
                d.buf.capacity()
            );
        }
        assert_eq!(taken, 3000);
        assert_eq!(d.buffered(), 0);
    }
}
