#![no_main]
//! Feeds arbitrary bytes to every parser of untrusted wire input.
//!
//! The first input byte chooses chunk sizes: the rest is pushed into a [`FrameDecoder`] in
//! chunks of 1..=N bytes (N from the seed), every complete frame's body is decoded as a
//! [`Message`], and an accepted message must re-encode to the very bytes it came from. The
//! same bytes also go through `parse_frame`, `Message::from_datagram` and the job record
//! parsers (`RequestHeader`, `CompletionHeader`, `EvacuateReceipt`); an accepted header must
//! re-serialise to its input. Any panic is a bug.

use houndpool_protocol::frame::{parse_frame, FrameDecoder, FRAME_HEADER_LEN};
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, JobKind, RequestHeader,
    COMPLETION_HEADER_LEN, REQUEST_HEADER_LEN,
};
use houndpool_protocol::control::{Message, MAX_CONTROL_BODY};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };

    // Streaming decoder, chunk sizes varying with position so splits land everywhere.
    let mut decoder = FrameDecoder::new(MAX_CONTROL_BODY);
    let max_chunk = usize::from(seed) + 1;
    let mut offset = 0;
    let mut input = rest;
    while !input.is_empty() {
        let n = 1 + (offset * 31 + usize::from(seed)) % max_chunk;
        let n = n.min(input.len());
        decoder.push(&input[..n]);
        input = &input[n..];
        offset += 1;
        loop {
            match decoder.next_frame() {
                Ok(Some((header, body))) => {
                    assert_eq!(body.len(), header.body_len as usize);
                    if let Ok(message) = Message::decode(&header, &body) {
                        let mut again = Vec::new();
                        message
                            .encode_frame(&mut again)
                            .expect("decoded message re-encodes");
                        assert_eq!(&again[FRAME_HEADER_LEN..], &body[..]);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // The stream is dead: it must stay dead.
                    assert!(decoder.next_frame().is_err());
                    break;
                }
            }
        }
        assert!(decoder.buffered() <= FRAME_HEADER_LEN + MAX_CONTROL_BODY as usize + n);
    }

    // Whole-datagram parsers.
    let _ = parse_frame(rest, MAX_CONTROL_BODY);
    if let Ok(message) = Message::from_datagram(rest) {
        let mut again = Vec::new();
        message
            .encode_frame(&mut again)
            .expect("decoded message re-encodes");
        assert_eq!(again, rest);
    }

    // Job records.
    if let Ok((header, _)) = RequestHeader::parse(rest) {
        assert_eq!(header.to_bytes(), rest[..REQUEST_HEADER_LEN]);
    }
    if let Ok((header, body)) = CompletionHeader::parse(rest) {
        assert_eq!(header.to_bytes(), rest[..COMPLETION_HEADER_LEN]);
        if header.kind == JobKind::Evacuate && header.status == CompletionStatus::Ok {
            let receipt = EvacuateReceipt::parse(body).expect("validated receipt length");
            assert_eq!(receipt.to_bytes(), body);
        }
    }
    let _ = EvacuateReceipt::parse(rest);
});
