//! Frame layer: round trips, the streaming decoder under arbitrary chunking, and the typed
//! error of every malformed frame.
#![allow(clippy::type_complexity)] // tables of (name, bytes, predicate) read best inline

use houndpool_protocol::frame::MessageKind;
use houndpool_protocol::frame::{
    parse_frame, write_frame, FrameDecoder, FrameHeader, DEFAULT_MAX_BODY, FRAME_HEADER_LEN,
    FRAME_MAGIC,
};
use houndpool_protocol::{ProtocolError, PROTOCOL_VERSION};
use proptest::prelude::*;

const KINDS: [MessageKind; 4] = [
    MessageKind::Hello,
    MessageKind::Ready,
    MessageKind::Shutdown,
    MessageKind::Fatal,
];

fn kind() -> impl Strategy<Value = MessageKind> {
    prop::sample::select(KINDS.to_vec())
}

fn frames() -> impl Strategy<Value = Vec<(MessageKind, Vec<u8>)>> {
    prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..300)), 0..40)
}

fn frame(kind: MessageKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(kind, body, &mut out).unwrap();
    out
}

/// A raw header with every field chosen by the caller.
fn raw_header(magic: u32, version: u16, kind: u16, body_len: u32, reserved: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(FRAME_HEADER_LEN);
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&kind.to_le_bytes());
    h.extend_from_slice(&body_len.to_le_bytes());
    h.extend_from_slice(&reserved.to_le_bytes());
    h
}

/// Feeds `bytes` to a fresh decoder in chunks of the given sizes (cycled) and collects frames
/// until the input is exhausted or an error occurs.
fn decode_stream(
    bytes: &[u8],
    chunk_sizes: &[usize],
    max_body: u32,
) -> (Vec<(FrameHeader, Vec<u8>)>, Option<ProtocolError>, usize) {
    let mut d = FrameDecoder::new(max_body);
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunk_sizes.iter().cycle();
    loop {
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => return (out, Some(e), d.buffered()),
            }
        }
        if rest.is_empty() {
            return (out, None, d.buffered());
        }
        let n = (*sizes.next().unwrap()).min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_round_trip(kind in kind(), body in prop::collection::vec(any::<u8>(), 0..2000)) {
        let bytes = frame(kind, &body);
        prop_assert_eq!(bytes.len(), FRAME_HEADER_LEN + body.len());
        let (h, b) = parse_frame(&bytes, DEFAULT_MAX_BODY).unwrap();
        prop_assert_eq!(h, FrameHeader { kind, body_len: body.len() as u32 });
        prop_assert_eq!(b, &body[..]);
        // The header re-serialises to the same bytes.
        let mut again = [0u8; FRAME_HEADER_LEN];
        h.write(&mut again);
        prop_assert_eq!(&again[..], &bytes[..FRAME_HEADER_LEN]);
    }

    #[test]
    fn decoder_yields_exactly_the_frames(
        frames in frames(),
        chunk_sizes in prop::collection::vec(1usize..400, 1..20),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|(k, b)| frame(*k, b)).collect();
        let (got, err, left) = decode_stream(&stream, &chunk_sizes, 300);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(left, 0);
        let got: Vec<(MessageKind, Vec<u8>)> = got
            .into_iter()
            .map(|(h, b)| {
                assert_eq!(h.body_len as usize, b.len());
                (h.kind, b)
            })
            .collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn decoder_one_byte_at_a_time(frames in frames()) {
        let stream: Vec<u8> = frames.iter().flat_map(|(k, b)| frame(*k, b)).collect();
        let (got, err, _) = decode_stream(&stream, &[1], 300);
        prop_assert!(err.is_none());
        prop_assert_eq!(got.len(), frames.len());
    }

    #[test]
    fn decoder_stops_at_first_bad_header(
        good in frames(),
        chunk_sizes in prop::collection::vec(1usize..400, 1..20),
        junk in prop::collection::vec(any::<u8>(), 0..500),
    ) {
        // Good frames, then an over-limit header, then anything: exactly the good frames come
        // out, then FrameTooLarge, and the junk after the bad header is never buffered.
        let mut stream: Vec<u8> = good.iter().flat_map(|(k, b)| frame(*k, b)).collect();
        stream.extend(raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 1, 301, 0));
        stream.extend(&junk);
        let (got, err, left) = decode_stream(&stream, &chunk_sizes, 300);
        prop_assert_eq!(got.len(), good.len());
        let is_too_large = matches!(err, Some(ProtocolError::FrameTooLarge { len: 301, max: 300 }));
        prop_assert!(is_too_large, "{:?}", err);
        prop_assert_eq!(left, 0);
    }
}

#[test]
fn decoder_memory_is_bounded_by_one_frame_while_assembling() {
    let max = 10_000u32;
    let f = frame(MessageKind::Fatal, &vec![0xab; max as usize]);
    let mut d = FrameDecoder::new(max);
    for chunk in f.chunks(7) {
        assert!(d.next_frame().unwrap().is_none());
        d.push(chunk);
        assert!(d.buffered() <= FRAME_HEADER_LEN + max as usize);
    }
    let (h, b) = d.next_frame().unwrap().unwrap();
    assert_eq!(h.body_len, max);
    assert_eq!(b.len(), max as usize);
    assert_eq!(d.buffered(), 0);
}

/// A header that fails validation, the error it must give, and the limit to parse it with.
fn bad_headers() -> Vec<(&'static str, Vec<u8>, fn(&ProtocolError) -> bool)> {
    vec![
        (
            "bad magic",
            raw_header(u32::from_le_bytes(*b"HPFX"), PROTOCOL_VERSION, 1, 0, 0),
            |e| {
                matches!(e, ProtocolError::BadFrameMagic { found, expected }
                    if *found == u32::from_le_bytes(*b"HPFX") && *expected == FRAME_MAGIC)
            },
        ),
        (
            "unknown version",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION + 1, 1, 0, 0),
            |e| {
                matches!(e, ProtocolError::UnsupportedVersion { found, supported }
                    if *found == PROTOCOL_VERSION + 1 && *supported == PROTOCOL_VERSION)
            },
        ),
        ("version 0", raw_header(FRAME_MAGIC, 0, 1, 0, 0), |e| {
            matches!(e, ProtocolError::UnsupportedVersion { found: 0, .. })
        }),
        (
            "unknown kind",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 99, 0, 0),
            |e| matches!(e, ProtocolError::UnknownMessageKind { kind: 99 }),
        ),
        (
            "kind 0",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 0, 0, 0),
            |e| matches!(e, ProtocolError::UnknownMessageKind { kind: 0 }),
        ),
        (
            "reserved nonzero",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 1, 0, 0x100),
            |e| matches!(e, ProtocolError::ReservedNonZero { found: 0x100 }),
        ),
        (
            "over-limit length",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 3, 1001, 0),
            |e| {
                matches!(
                    e,
                    ProtocolError::FrameTooLarge {
                        len: 1001,
                        max: 1000
                    }
                )
            },
        ),
        (
            "maximal length",
            raw_header(FRAME_MAGIC, PROTOCOL_VERSION, 3, u32::MAX, 0),
            |e| matches!(e, ProtocolError::FrameTooLarge { len, max: 1000 } if *len == u64::from(u32::MAX)),
        ),
    ]
}

#[test]
fn every_bad_header_gives_its_error_everywhere() {
    for (what, header, check) in bad_headers() {
        let arr: [u8; FRAME_HEADER_LEN] = header.clone().try_into().unwrap();
        let e = FrameHeader::parse(&arr, 1000).unwrap_err();
        assert!(check(&e), "{what}: FrameHeader::parse gave {e:?}");

        // parse_frame with the body it announces (capped) still fails on the header.
        let mut datagram = header.clone();
        datagram.extend(vec![0; 32]);
        let e = parse_frame(&datagram, 1000).unwrap_err();
        assert!(check(&e), "{what}: parse_frame gave {e:?}");

        // The streaming decoder reports it once the 16 header bytes are in, buffers nothing
        // after it, and keeps reporting it.
        let mut d = FrameDecoder::new(1000);
        d.push(&header[..FRAME_HEADER_LEN - 1]);
        assert!(d.next_frame().unwrap().is_none(), "{what}");
        d.push(&datagram[FRAME_HEADER_LEN - 1..]);
        assert_eq!(d.buffered(), 0, "{what}");
        for _ in 0..3 {
            let e = d.next_frame().unwrap_err();
            assert!(check(&e), "{what}: decoder gave {e:?}");
        }
        d.push(&frame(MessageKind::Ready, b""));
        assert!(d.next_frame().is_err(), "{what}: dead stream revived");
    }
}

#[test]
fn truncated_header() {
    let f = frame(MessageKind::Shutdown, &[1, 2, 3, 4]);
    for n in 0..FRAME_HEADER_LEN {
        match parse_frame(&f[..n], 1000) {
            Err(ProtocolError::Truncated { needed, available }) => {
                assert_eq!((needed, available), (FRAME_HEADER_LEN, n));
            }
            other => panic!("{n} bytes: {other:?}"),
        }
    }
}

#[test]
fn truncated_body() {
    let f = frame(MessageKind::Shutdown, &[1, 2, 3, 4]);
    for n in FRAME_HEADER_LEN..f.len() {
        match parse_frame(&f[..n], 1000) {
            Err(ProtocolError::Truncated { needed, available }) => {
                assert_eq!((needed, available), (f.len(), n));
            }
            other => panic!("{n} bytes: {other:?}"),
        }
    }
    // The stream decoder simply waits for the rest.
    let mut d = FrameDecoder::new(1000);
    d.push(&f[..f.len() - 1]);
    assert!(d.next_frame().unwrap().is_none());
    assert_eq!(d.buffered(), f.len() - 1);
}

#[test]
fn trailing_bytes_after_datagram() {
    let mut f = frame(MessageKind::Ready, &[9; 5]);
    f.push(0);
    match parse_frame(&f, 1000) {
        Err(ProtocolError::TrailingBytes { expected, found }) => {
            assert_eq!(
                (expected, found),
                (FRAME_HEADER_LEN + 5, FRAME_HEADER_LEN + 6)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn limit_is_inclusive() {
    let f = frame(MessageKind::Ready, &[0; 100]);
    assert!(parse_frame(&f, 100).is_ok());
    assert!(matches!(
        parse_frame(&f, 99),
        Err(ProtocolError::FrameTooLarge { len: 100, max: 99 })
    ));
    let empty = frame(MessageKind::Ready, &[]);
    let (h, b) = parse_frame(&empty, 0).unwrap();
    assert_eq!(h.body_len, 0);
    assert!(b.is_empty());
}
