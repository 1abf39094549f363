#![no_main]
//! Commit journal records (`houndpool_cold::fs::journal`) through the reader: arbitrary bytes
//! never panic it, and every record it yields re-encodes to exactly the bytes it was read
//! from (so it never invents a record). The first input byte chooses how the rest is used:
//! - even: as a journal, as is;
//! - odd: the rest is split into (key, envelope) pairs that are encoded as a journal, which
//!   is then cut at an input-chosen length: the reader must yield a prefix of the pairs.

use houndpool_cold::fs::journal::{self, Records};

const MAX_ENVELOPE: usize = 1 << 16;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let mut records = Records::new(rest, MAX_ENVELOPE);
        let mut at = 0;
        for rec in records.by_ref() {
            let mut again = Vec::new();
            journal::encode_into(&mut again, rec.key, rec.envelope).expect("re-encodable");
            assert_eq!(&rest[at..at + again.len()], &again[..]);
            at += again.len();
        }
        assert_eq!(records.offset(), at);
        assert!(records.stop().is_some());
        return;
    }
    let mut pairs = Vec::new();
    let mut bytes = rest;
    while bytes.len() >= 2 {
        let k = usize::from(bytes[0] % 32) + 1;
        let e = usize::from(bytes[1]);
        bytes = &bytes[2..];
        if bytes.len() < k + e {
            break;
        }
        let key = String::from_utf8_lossy(&bytes[..k]).into_owned();
        pairs.push((key, bytes[k..k + e].to_vec()));
        bytes = &bytes[k + e..];
    }
    let mut encoded = Vec::new();
    for (k, e) in &pairs {
        journal::encode_into(&mut encoded, k, e).expect("encodable");
    }
    let cut = usize::from(mode >> 1) * encoded.len() / 127;
    let read: Vec<_> = Records::new(&encoded[..cut.min(encoded.len())], MAX_ENVELOPE)
        .map(|r| (r.key.to_owned(), r.envelope.to_vec()))
        .collect();
    assert!(read.len() <= pairs.len());
    assert_eq!(&read[..], &pairs[..read.len()]);
});
