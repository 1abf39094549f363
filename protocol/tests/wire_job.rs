//! Job records: exact layouts, proptest round trips, and the precise rejection of every
//! invalid field of the untrusted completion payloads.

use houndpool_protocol::job::*;
use houndpool_protocol::ProtocolError;
use proptest::prelude::*;

fn reason<T: std::fmt::Debug>(r: Result<T, ProtocolError>) -> &'static str {
    match r {
        Err(ProtocolError::MalformedRecord { reason }) => reason,
        other => panic!("expected MalformedRecord, got {other:?}"),
    }
}

fn job_kind() -> impl Strategy<Value = JobKind> {
    prop::sample::select(JobKind::ALL.to_vec())
}

fn fail_code() -> impl Strategy<Value = FailCode> {
    prop::sample::select(FailCode::ALL.to_vec())
}

fn request() -> impl Strategy<Value = (RequestHeader, Vec<u8>)> {
    (
        any::<u64>(),
        job_kind(),
        0u8..=9,
        prop::sample::select(Severity::ALL.to_vec()),
        0u8..=1,
        any::<[u8; 16]>(),
        prop::collection::vec(any::<u8>(), 0..100),
        any::<bool>(),
    )
        .prop_map(
            |(job_id, kind, level, severity, attempt, evidence_id, body, pool_evidence_id)| {
                let body = match kind {
                    JobKind::Restore | JobKind::Erase => Vec::new(),
                    _ => body,
                };
                let h = RequestHeader {
                    job_id,
                    kind,
                    level,
                    severity,
                    attempt,
                    evidence_id,
                    key_len: 0,
                    pool_evidence_id,
                };
                (h, body)
            },
        )
}

fn receipt() -> impl Strategy<Value = EvacuateReceipt> {
    (
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(evidence_id, o, c, sha256, e, s)| EvacuateReceipt {
            evidence_id,
            original_size: o,
            compressed_size: c,
            sha256,
            encode_ns: e,
            store_ns: s,
        })
}

/// A valid completion (header, body) of any kind and status.
fn completion() -> impl Strategy<Value = (CompletionHeader, Vec<u8>)> {
    (
        any::<u64>(),
        job_kind(),
        prop::option::of(fail_code()),
        any::<bool>(),
        receipt(),
        prop::collection::vec(any::<u8>(), 0..100),
        "\\PC{0,100}",
    )
        .prop_map(|(job_id, kind, fail, spooled, receipt, data, msg)| {
            let status = fail.map_or(CompletionStatus::Ok, CompletionStatus::Failed);
            let (flags, body) = match (status, kind) {
                (CompletionStatus::Failed(_), _) => {
                    (0, truncate_fail_message(&msg).as_bytes().to_vec())
                }
                (CompletionStatus::Ok, JobKind::Evacuate) => (
                    if spooled { COMPLETION_FLAG_SPOOLED } else { 0 },
                    receipt.to_bytes().to_vec(),
                ),
                (CompletionStatus::Ok, JobKind::Erase) => (0, vec![u8::from(spooled)]),
                (CompletionStatus::Ok, _) => (0, data),
            };
            let h = CompletionHeader {
                job_id,
                kind,
                status,
                flags,
            };
            (h, body)
        })
}

fn payload(header: &[u8], body: &[u8]) -> Vec<u8> {
    [header, body].concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_round_trip((h, body) in request()) {
        let bytes = payload(&h.to_bytes(), &body);
        let (parsed, rest) = RequestHeader::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, h);
        prop_assert_eq!(rest, &body[..]);
    }

    #[test]
    fn completion_round_trip((h, body) in completion()) {
        let bytes = payload(&h.to_bytes(), &body);
        let (parsed, rest) = CompletionHeader::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, h);
        prop_assert_eq!(rest, &body[..]);
        if h.kind == JobKind::Evacuate && h.status == CompletionStatus::Ok {
            let r = EvacuateReceipt::parse(rest).unwrap();
            prop_assert_eq!(r.to_bytes(), rest);
        }
    }

    #[test]
    fn receipt_round_trip(r in receipt()) {
        prop_assert_eq!(EvacuateReceipt::parse(&r.to_bytes()).unwrap(), r);
    }

    /// Whatever 16 bytes a hound writes, a header that parses re-serialises to exactly those
    /// bytes: no bit is ignored, so every field is validated.
    #[test]
    fn accepted_completion_headers_are_canonical(
        mut raw in any::<[u8; 16]>(),
        small in (0u8..7, 0u8..3, 0u16..10, 0u32..4),
        body_len in prop_oneof![Just(0usize), Just(EVACUATE_RECEIPT_LEN), 0usize..600],
    ) {
        // Bias the fields towards the valid range so both outcomes are exercised.
        raw[8] = small.0;
        raw[9] = small.1;
        raw[10..12].copy_from_slice(&small.2.to_le_bytes());
        raw[12..16].copy_from_slice(&small.3.to_le_bytes());
        let bytes = payload(&raw, &vec![b'a'; body_len]);
        if let Ok((h, body)) = CompletionHeader::parse(&bytes) {
            prop_assert_eq!(h.to_bytes(), raw);
            prop_assert_eq!(body.len(), body_len);
        }
    }

    #[test]
    fn accepted_request_headers_are_canonical(
        mut raw in any::<[u8; 32]>(),
        small in (0u8..7, 0u8..11, 0u8..5, 0u8..3),
        zero_reserved in any::<bool>(),
    ) {
        raw[8] = small.0;
        raw[9] = small.1;
        raw[10] = small.2;
        raw[11] = small.3;
        if zero_reserved {
            raw[12..16].copy_from_slice(&[0; 4]);
        }
        if let Ok((h, body)) = RequestHeader::parse(&raw) {
            prop_assert_eq!(h.to_bytes(), raw);
            prop_assert!(body.is_empty());
        }
    }
}

#[test]
fn request_layout_is_exact() {
    let h = RequestHeader {
        job_id: 0x0102_0304_0506_0708,
        kind: JobKind::Evacuate,
        level: 6,
        severity: Severity::High,
        attempt: 1,
        evidence_id: [0xee; 16],
        key_len: 0x0304,
        pool_evidence_id: false,
    };
    let mut expected = vec![8, 7, 6, 5, 4, 3, 2, 1, 2, 6, 2, 1, 4, 3, 0, 0];
    expected.extend([0xee; 16]);
    assert_eq!(h.to_bytes().to_vec(), expected);
    // A pool-generated evidence id (no key) sets bit 0 of byte 14, nothing else.
    let pooled = RequestHeader {
        key_len: 0,
        pool_evidence_id: true,
        ..h
    };
    expected[12..16].copy_from_slice(&[0, 0, 1, 0]);
    assert_eq!(pooled.to_bytes().to_vec(), expected);
    assert_eq!(RequestHeader::parse(&expected).unwrap().0, pooled);
    assert_eq!(REQUEST_HEADER_LEN, 32);
}

#[test]
fn completion_and_receipt_layout_is_exact() {
    let h = CompletionHeader {
        job_id: 0x0102_0304_0506_0708,
        kind: JobKind::Decode,
        status: CompletionStatus::Failed(FailCode::IntegrityViolation),
        flags: 0,
    };
    assert_eq!(
        h.to_bytes(),
        [8, 7, 6, 5, 4, 3, 2, 1, 5, 1, 3, 0, 0, 0, 0, 0]
    );
    let r = EvacuateReceipt {
        evidence_id: [1; 16],
        original_size: 0x0a0b_0c0d,
        compressed_size: 0x10,
        sha256: [2; 32],
        encode_ns: 0x0102,
        store_ns: 0x0304,
    };
    let mut expected = vec![1u8; 16];
    expected.extend([0x0d, 0x0c, 0x0b, 0x0a, 0x10, 0, 0, 0]);
    expected.extend([2; 32]);
    expected.extend([2, 1, 0, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(r.to_bytes().to_vec(), expected);
}

fn good_request() -> [u8; REQUEST_HEADER_LEN] {
    RequestHeader {
        job_id: 1,
        kind: JobKind::Encode,
        level: 6,
        severity: Severity::Low,
        attempt: 0,
        evidence_id: [0; 16],
        key_len: 0,
        pool_evidence_id: false,
    }
    .to_bytes()
}

#[test]
fn every_invalid_request_field_is_rejected() {
    let good = good_request();
    assert!(RequestHeader::parse(&good).is_ok());
    for n in 0..REQUEST_HEADER_LEN {
        assert_eq!(
            reason(RequestHeader::parse(&good[..n])),
            "request shorter than its 32-byte header"
        );
    }
    let cases: Vec<(usize, u8, &str)> = vec![
        (8, 6, "request job kind is not 0..=5"),
        (8, 255, "request job kind is not 0..=5"),
        (9, 10, "request gzip level is above 9"),
        (9, 255, "request gzip level is above 9"),
        (10, 4, "request severity is not 0..=3"),
        (11, 2, "request attempt is neither 0 nor 1"),
        (12, 1, "request key on a job that stores nothing"),
        (13, 1, "request key on a job that stores nothing"),
        (14, 2, "request flags has a bit other than bit 0"),
        (14, 0x80, "request flags has a bit other than bit 0"),
        (15, 1, "request reserved byte 15 is not 0"),
        (15, 0x80, "request reserved byte 15 is not 0"),
    ];
    for (at, value, why) in cases {
        let mut bad = good;
        bad[at] = value;
        assert_eq!(
            reason(RequestHeader::parse(&bad)),
            why,
            "byte {at} = {value}"
        );
    }
    for kind in [JobKind::Restore, JobKind::Erase] {
        let mut bad = good;
        bad[8] = kind as u8;
        assert!(RequestHeader::parse(&bad).is_ok());
        assert_eq!(
            reason(RequestHeader::parse(&payload(&bad, b"x"))),
            "restore or erase request carries a body"
        );
    }
}

fn completion_bytes(kind: JobKind, status: u8, code: u16, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = 9u64.to_le_bytes().to_vec();
    b.push(kind as u8);
    b.push(status);
    b.extend(code.to_le_bytes());
    b.extend(flags.to_le_bytes());
    b.extend(body);
    b
}

#[test]
fn every_invalid_completion_field_is_rejected() {
    let receipt = [0u8; EVACUATE_RECEIPT_LEN];
    // Sanity: the valid neighbours of the bad cases below parse.
    for ok in [
        completion_bytes(JobKind::Noop, 0, 0, 0, b"echo"),
        completion_bytes(JobKind::Evacuate, 0, 0, 1, &receipt),
        completion_bytes(JobKind::Evacuate, 0, 0, 0, &receipt),
        completion_bytes(JobKind::Erase, 0, 0, 0, &[0]),
        completion_bytes(JobKind::Erase, 0, 0, 0, &[1]),
        completion_bytes(JobKind::Erase, 1, 6, 0, b"not found"),
        completion_bytes(JobKind::Evacuate, 1, 5, 0, &[b'x'; MAX_FAIL_MESSAGE]),
        completion_bytes(JobKind::Decode, 1, 8, 0, "ü".as_bytes()),
    ] {
        CompletionHeader::parse(&ok).unwrap();
    }

    let full = completion_bytes(JobKind::Noop, 0, 0, 0, b"");
    for n in 0..COMPLETION_HEADER_LEN {
        assert_eq!(
            reason(CompletionHeader::parse(&full[..n])),
            "completion shorter than its 16-byte header"
        );
    }
    let mut unknown_kind = full.clone();
    unknown_kind[8] = 6;
    let mut utf8_bad = b"abc".to_vec();
    utf8_bad.push(0xc3); // truncated two-byte sequence
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (unknown_kind, "completion job kind is not 0..=5"),
        (
            completion_bytes(JobKind::Noop, 2, 0, 0, b""),
            "completion status is neither 0 (ok) nor 1 (failed)",
        ),
        (
            completion_bytes(JobKind::Noop, 255, 1, 0, b""),
            "completion status is neither 0 (ok) nor 1 (failed)",
        ),
        (
            completion_bytes(JobKind::Noop, 0, 3, 0, b""),
            "ok completion carries a nonzero fail code",
        ),
        (
            completion_bytes(JobKind::Noop, 1, 0, 0, b""),
            "failed completion carries fail code 0",
        ),
        (
            completion_bytes(JobKind::Noop, 1, 10, 0, b""),
            "failed completion fail code is not 1..=9",
        ),
        (
            completion_bytes(JobKind::Noop, 1, u16::MAX, 0, b""),
            "failed completion fail code is not 1..=9",
        ),
        (
            completion_bytes(JobKind::Noop, 0, 0, 2, b""),
            "completion flags has reserved bits set",
        ),
        (
            completion_bytes(JobKind::Evacuate, 0, 0, 1 << 31, &receipt),
            "completion flags has reserved bits set",
        ),
        (
            completion_bytes(JobKind::Encode, 0, 0, COMPLETION_FLAG_SPOOLED, b""),
            "spooled flag on a completion that is not an ok evacuate",
        ),
        (
            completion_bytes(JobKind::Evacuate, 1, 5, COMPLETION_FLAG_SPOOLED, b""),
            "spooled flag on a completion that is not an ok evacuate",
        ),
        (
            completion_bytes(JobKind::Noop, 1, 8, 0, &[b'x'; MAX_FAIL_MESSAGE + 1]),
            "failure message longer than 512 bytes",
        ),
        (
            completion_bytes(JobKind::Noop, 1, 8, 0, &utf8_bad),
            "failure message is not UTF-8",
        ),
        (
            completion_bytes(JobKind::Evacuate, 0, 0, 0, &receipt[..71]),
            "evacuate receipt is not exactly 72 bytes",
        ),
        (
            completion_bytes(JobKind::Evacuate, 0, 0, 0, &[0; 73]),
            "evacuate receipt is not exactly 72 bytes",
        ),
        (
            completion_bytes(JobKind::Evacuate, 0, 0, 0, b""),
            "evacuate receipt is not exactly 72 bytes",
        ),
        (
            completion_bytes(JobKind::Erase, 0, 0, 0, b"x"),
            "ok erase completion body is not one 0/1 byte",
        ),
        (
            completion_bytes(JobKind::Erase, 0, 0, 0, b""),
            "ok erase completion body is not one 0/1 byte",
        ),
        (
            completion_bytes(JobKind::Erase, 0, 0, 0, &[0, 1]),
            "ok erase completion body is not one 0/1 byte",
        ),
    ];
    for (bytes, why) in cases {
        assert_eq!(
            reason(CompletionHeader::parse(&bytes)),
            why,
            "{}",
            hex::encode(&bytes[..COMPLETION_HEADER_LEN.min(bytes.len())])
        );
    }
}

#[test]
fn receipt_length_must_be_exact() {
    let r = [7u8; EVACUATE_RECEIPT_LEN + 1];
    for n in [0, 1, 71, 73] {
        assert_eq!(
            reason(EvacuateReceipt::parse(&r[..n])),
            "evacuate receipt is not exactly 72 bytes"
        );
    }
    assert!(EvacuateReceipt::parse(&r[..72]).is_ok());
}

#[test]
fn every_fail_code_round_trips_in_a_completion() {
    for code in FailCode::ALL {
        let h = CompletionHeader {
            job_id: u64::MAX,
            kind: JobKind::Restore,
            status: CompletionStatus::Failed(code),
            flags: 0,
        };
        let msg = code.name().as_bytes();
        let bytes = payload(&h.to_bytes(), msg);
        assert_eq!(CompletionHeader::parse(&bytes).unwrap(), (h, msg));
    }
}

#[test]
fn evidence_keys_travel_after_the_header_and_are_checked() {
    let origin = format!("injection:{}", "7e".repeat(32));
    for kind in [JobKind::Evacuate, JobKind::Restore, JobKind::Erase] {
        let h = RequestHeader {
            job_id: 9,
            kind,
            level: 6,
            severity: Severity::High,
            attempt: 0,
            evidence_id: [0; 16],
            key_len: origin.len() as u16,
            pool_evidence_id: false,
        };
        let body: &[u8] = if kind == JobKind::Evacuate {
            b"evidence"
        } else {
            b""
        };
        let mut raw = h.to_bytes().to_vec();
        raw.extend_from_slice(origin.as_bytes());
        raw.extend_from_slice(body);
        let (parsed, rest) = RequestHeader::parse(&raw).unwrap();
        assert_eq!(parsed, h);
        let (key, rest) = parsed.split_key(rest).unwrap();
        assert_eq!((key, rest), (Some(origin.as_str()), body));
        // A key and a pool-generated evidence id exclude each other.
        let mut both = raw.clone();
        both[14] = 1;
        assert_eq!(
            reason(RequestHeader::parse(&both)),
            "request marks a pool evidence id but carries a key"
        );
        // Announced but missing, or followed by a body on restore / erase.
        assert_eq!(
            reason(RequestHeader::parse(&raw[..REQUEST_HEADER_LEN + 3])),
            "request shorter than its announced key"
        );
        if kind != JobKind::Evacuate {
            let mut extra = raw.clone();
            extra.push(b'x');
            assert_eq!(
                reason(RequestHeader::parse(&extra)),
                "restore or erase request carries a body"
            );
        }
    }
    for (bad, why) in [
        (&b""[..], "evidence key is empty"),
        (
            b".hidden",
            "evidence key does not start with a letter or digit",
        ),
        (
            b"a/../b",
            "evidence key has a character other than A-Z a-z 0-9 - _ . :",
        ),
        (b"a..b", "evidence key contains \"..\""),
        (
            b"a b",
            "evidence key has a character other than A-Z a-z 0-9 - _ . :",
        ),
    ] {
        assert_eq!(check_evidence_key(bad), Err(why));
    }
    assert!(check_evidence_key(&[b'a'; 201]).is_err());
    assert!(check_evidence_key(&[b'a'; 200]).is_ok());
    assert!(check_evidence_key(b"0190a0b0-0000-7000-8000-000000000001").is_ok());
}
