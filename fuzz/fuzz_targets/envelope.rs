#![no_main]
//! Arbitrary bytes through every envelope reader: parse_header, verify and decode with a
//! 1 MiB output limit. None of them may panic, and their verdicts must agree.

use houndpool_protocol::envelope;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parsed = envelope::parse_header(data);
    let verified = envelope::verify(data);
    let decoded = envelope::decode(data, 1 << 20);
    // Each stage only adds checks to the previous one.
    if parsed.is_err() {
        assert!(verified.is_err());
    }
    if verified.is_err() {
        assert!(decoded.is_err());
    }
    if let Ok(out) = decoded {
        let header = parsed.expect("decode succeeded, so the header parsed");
        assert_eq!(out.len(), header.original_size as usize);
        assert!(out.len() <= 1 << 20);
    }
});
