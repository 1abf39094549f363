#![no_main]
//! Fuzzes control-message decoding as the supervisor does it for a hound's datagram
//! (`Message::from_datagram`, supervisor/src/collector/control.rs `read_control` and the handshake's
//! `recv_message`): any bytes, up to one frame header plus `MAX_CONTROL_BODY` plus one byte
//! (the receive buffer). An accepted message must re-encode and decode to an equal message;
//! `Fatal` text must be a valid string of bounded size. Any panic is a bug.

use houndpool_protocol::frame::FRAME_HEADER_LEN;
use houndpool_protocol::control::{Message, MAX_CONTROL_BODY};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limit = FRAME_HEADER_LEN + MAX_CONTROL_BODY as usize + 1;
    let data = &data[..data.len().min(limit)];
    let Ok(msg) = Message::from_datagram(data) else {
        return;
    };
    if let Message::Fatal(f) = &msg {
        assert!(f.message.len() <= MAX_CONTROL_BODY as usize);
    }
    let mut frame = Vec::new();
    msg.encode_frame(&mut frame)
        .expect("a decoded message re-encodes");
    let again = Message::from_datagram(&frame).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
});
