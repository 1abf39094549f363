//! Control messages: proptest round trips of every message type, whole-stream decoding, exact
//! bytes of the documented examples, and the typed errors of malformed bodies.

use houndpool_protocol::control::*;
use houndpool_protocol::frame::{
    parse_frame, write_frame, FrameDecoder, FrameHeader, MessageKind, FRAME_HEADER_LEN,
};
use houndpool_protocol::{ProtocolError, HOUND_PROTOCOL_VERSION};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn layer() -> impl Strategy<Value = Layer> {
    prop::sample::select(Layer::ALL.to_vec())
}

fn layer_mode() -> impl Strategy<Value = LayerMode> {
    prop_oneof![
        Just(LayerMode::Required),
        Just(LayerMode::BestEffort),
        Just(LayerMode::Off)
    ]
}

fn layer_status() -> impl Strategy<Value = LayerStatus> {
    prop_oneof![
        Just(LayerStatus::Enforced),
        Just(LayerStatus::Unavailable),
        Just(LayerStatus::Disabled)
    ]
}

fn limits() -> impl Strategy<Value = HoundLimits> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(a, b, c, d, e, f)| HoundLimits {
            max_evidence_bytes: a,
            max_output_bytes: b,
            memory_budget_bytes: c,
            max_open_files: d,
            max_processes: e,
            gzip_level: f,
        })
}

fn s3() -> impl Strategy<Value = S3Target> {
    (
        (text(), text(), text(), text(), any::<bool>()),
        (
            text(),
            text(),
            prop::option::of(text()),
            prop::option::of(text()),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((endpoint, bucket, prefix, region, path_style), (ak, sk, tok, spool, lim))| {
                S3Target {
                    endpoint,
                    bucket,
                    prefix,
                    region,
                    path_style,
                    access_key: ak,
                    secret_key: sk,
                    session_token: tok,
                    spool_dir: spool,
                    spool_limit_bytes: lim,
                }
            },
        )
}

fn cold() -> impl Strategy<Value = ColdTarget> {
    prop_oneof![
        Just(ColdTarget::None),
        (text(), text()).prop_map(|(root, prefix)| ColdTarget::Filesystem { root, prefix }),
        s3().prop_map(ColdTarget::S3),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<u16>(),
        limits(),
        cold(),
        prop::collection::vec((layer(), layer_mode()), 0..12),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(|(protocol_version, limits, cold, layers, t)| Setup {
            protocol_version,
            limits,
            cold,
            sandbox: SandboxPolicy { layers },
            tuning: HoundTuning {
                spin_us: t.0,
                idle_poll_ms: t.1,
                s3_concurrency: 16,
                fs_commit: FsCommit::Journal,
                s3_deadline_ms: 5000,
            },
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), any::<[u8; 16]>(), any::<u32>(), any::<u64>()).prop_map(
        |(protocol_version, pool_id, hound_id, generation)| Hello {
            protocol_version,
            pool_id,
            hound_id,
            generation,
        },
    )
}

fn ready() -> impl Strategy<Value = Ready> {
    (
        any::<u32>(),
        any::<u16>(),
        prop::collection::vec(
            (layer(), layer_status(), text()).prop_map(|(layer, status, detail)| LayerReport {
                layer,
                status,
                detail,
            }),
            0..12,
        ),
    )
        .prop_map(|(pid, protocol_version, layers)| Ready {
            pid,
            protocol_version,
            sandbox: SandboxReport { layers },
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        setup().prop_map(Message::Setup),
        ready().prop_map(Message::Ready),
        any::<u32>().prop_map(|grace_ms| Message::Shutdown(Shutdown { grace_ms })),
        "\\PC{0,200}".prop_map(|message| Message::Fatal(Fatal { message })),
    ]
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_frame(&mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = encode(&m);
        let (h, body) = parse_frame(&bytes, MAX_CONTROL_BODY).unwrap();
        prop_assert_eq!(h.kind, m.kind());
        prop_assert_eq!(Message::decode(&h, body).unwrap(), m.clone());
        prop_assert_eq!(Message::from_datagram(&bytes).unwrap(), m);
    }

    #[test]
    fn stream_of_messages_split_anywhere(
        msgs in prop::collection::vec(message(), 0..20),
        chunk_sizes in prop::collection::vec(1usize..300, 1..16),
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut d = FrameDecoder::new(MAX_CONTROL_BODY);
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut sizes = chunk_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            while let Some((h, body)) = d.next_frame().unwrap() {
                got.push(Message::decode(&h, &body).unwrap());
            }
        }
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn every_strict_prefix_of_a_body_is_refused(m in message()) {
        // No message body has a proper prefix that also decodes: truncation is always caught.
        let bytes = encode(&m);
        let (h, body) = parse_frame(&bytes, MAX_CONTROL_BODY).unwrap();
        for cut in 0..body.len() {
            let short = FrameHeader { kind: h.kind, body_len: cut as u32 };
            let is_malformed = matches!(
                Message::decode(&short, &body[..cut]),
                Err(ProtocolError::MalformedBody { .. })
            );
            prop_assert!(is_malformed, "cut at {}", cut);
        }
    }
}

/// Worked example of docs/PROTOCOL.md (part 1): `Shutdown { grace_ms: 5000 }`.
#[test]
fn documented_shutdown_example_bytes() {
    let bytes = encode(&Message::Shutdown(Shutdown { grace_ms: 5000 }));
    assert_eq!(
        hex::encode(&bytes),
        "48504652\
         0100\
         0300\
         04000000\
         00000000\
         88130000"
    );
}

/// Second example of docs/PROTOCOL.md (part 1): a string field, `Fatal { message: "oops" }`.
#[test]
fn documented_fatal_example_bytes() {
    let bytes = encode(&Message::Fatal(Fatal {
        message: "oops".into(),
    }));
    assert_eq!(
        hex::encode(&bytes),
        "48504652\
         0100\
         0400\
         0c000000\
         00000000\
         0400000000000000\
         6f6f7073"
    );
}

/// Third example of docs/PROTOCOL.md (part 1): a Setup exercising enums, options and tuples.
#[test]
fn documented_setup_example_bytes() {
    let setup = Setup {
        protocol_version: HOUND_PROTOCOL_VERSION,
        limits: HoundLimits {
            max_evidence_bytes: 0x0010_0000,
            max_output_bytes: 0x0040_0000,
            memory_budget_bytes: 0,
            max_open_files: 64,
            max_processes: 1,
            gzip_level: 6,
        },
        cold: ColdTarget::Filesystem {
            root: "/d".into(),
            prefix: "p/".into(),
        },
        sandbox: SandboxPolicy {
            layers: vec![(Layer::Seccomp, LayerMode::Required)],
        },
        tuning: HoundTuning {
            spin_us: 50,
            idle_poll_ms: 100,
            s3_concurrency: 16,
            fs_commit: FsCommit::Journal,
            s3_deadline_ms: 5000,
        },
    };
    let bytes = encode(&Message::Setup(setup.clone()));
    let body = [
        "0300",             // protocol_version
        "00001000",         // limits.max_evidence_bytes
        "00004000",         // limits.max_output_bytes
        "0000000000000000", // limits.memory_budget_bytes
        "40000000",         // limits.max_open_files
        "01000000",         // limits.max_processes
        "06",               // limits.gzip_level
        "01000000",         // cold: variant 1 = Filesystem
        "0200000000000000", //   root length
        "2f64",             //   "/d"
        "0200000000000000", //   prefix length
        "702f",             //   "p/"
        "0100000000000000", // sandbox.layers length
        "07000000",         //   Layer::Seccomp = 7
        "00000000",         //   LayerMode::Required = 0
        "32000000",         // tuning.spin_us
        "64000000",         // tuning.idle_poll_ms
        "1000",             // tuning.s3_concurrency
        "00000000",         // tuning.fs_commit = Journal
        "88130000",         // tuning.s3_deadline_ms = 5000
    ]
    .concat();
    // magic, version 1, kind 5 = Setup, body_len 85, reserved.
    let header = "48504652 0100 0500 55000000 00000000".replace(' ', "");
    assert_eq!(body.len() / 2, 85);
    assert_eq!(hex::encode(&bytes), format!("{header}{body}"));
    assert_eq!(
        documented_hex("A `Setup` with an enum, a tuple vector and an unset limit — 16 + 85 bytes"),
        hex::encode(&bytes)
    );
    assert_eq!(
        Message::from_datagram(&bytes).unwrap(),
        Message::Setup(setup)
    );
}

/// Fourth example of docs/PROTOCOL.md (part 1): the slot-only Hello.
#[test]
fn documented_hello_example_bytes() {
    let hello = Hello {
        protocol_version: HOUND_PROTOCOL_VERSION,
        pool_id: [0x11; 16],
        hound_id: 2,
        generation: 3,
    };
    let bytes = encode(&Message::Hello(hello.clone()));
    let body = [
        "0300",                             // protocol_version
        "11111111111111111111111111111111", // pool_id
        "02000000",                         // hound_id
        "0300000000000000",                 // generation
    ]
    .concat();
    // magic, version 1, kind 1 = Hello, body_len 30, reserved.
    let header = "48504652 0100 0100 1e000000 00000000".replace(' ', "");
    assert_eq!(body.len() / 2, 30);
    assert_eq!(hex::encode(&bytes), format!("{header}{body}"));
    assert_eq!(
        documented_hex(
            "The `Hello` that later gives that hound slot 2, generation 3 — 16 + 30 bytes"
        ),
        hex::encode(&bytes)
    );
    assert_eq!(
        Message::from_datagram(&bytes).unwrap(),
        Message::Hello(hello)
    );
}

fn malformed_kind(r: Result<Message, ProtocolError>) -> &'static str {
    match r {
        Err(ProtocolError::MalformedBody { kind, .. }) => kind,
        other => panic!("expected MalformedBody, got {other:?}"),
    }
}

fn datagram(kind: MessageKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(kind, body, &mut out).unwrap();
    out
}

#[test]
fn bodies_that_do_not_decode() {
    // Shutdown needs 4 bytes.
    assert_eq!(
        malformed_kind(Message::from_datagram(&datagram(
            MessageKind::Shutdown,
            &[1, 2, 3]
        ))),
        "shutdown"
    );
    // Body longer than the struct (trailing bytes inside the body).
    assert_eq!(
        malformed_kind(Message::from_datagram(&datagram(
            MessageKind::Shutdown,
            &[1, 2, 3, 4, 5]
        ))),
        "shutdown"
    );
    // A Shutdown body sent as Hello.
    assert_eq!(
        malformed_kind(Message::from_datagram(&datagram(
            MessageKind::Hello,
            &[1, 2, 3, 4]
        ))),
        "hello"
    );
    // Fatal with invalid UTF-8.
    let mut body = 1u64.to_le_bytes().to_vec();
    body.push(0xff);
    assert_eq!(
        malformed_kind(Message::from_datagram(&datagram(MessageKind::Fatal, &body))),
        "fatal"
    );
    // Ready with an unknown Layer index (10) in its report.
    let mut body = Vec::new();
    body.extend(7u32.to_le_bytes());
    body.extend(HOUND_PROTOCOL_VERSION.to_le_bytes());
    body.extend(1u64.to_le_bytes());
    body.extend(10u32.to_le_bytes()); // layer: no such variant
    body.extend(0u32.to_le_bytes()); // status
    body.extend(0u64.to_le_bytes()); // detail ""
    assert_eq!(
        malformed_kind(Message::from_datagram(&datagram(MessageKind::Ready, &body))),
        "ready"
    );
    // Same with a valid layer decodes, so the case above failed for the right reason.
    body[14..18].copy_from_slice(&9u32.to_le_bytes());
    assert!(Message::from_datagram(&datagram(MessageKind::Ready, &body)).is_ok());
}

#[test]
fn non_canonical_bool_and_option_refused() {
    let m = Message::Setup(Setup {
        protocol_version: 1,
        limits: HoundLimits {
            max_evidence_bytes: 0,
            max_output_bytes: 0,
            memory_budget_bytes: 0,
            max_open_files: 0,
            max_processes: 0,
            gzip_level: 0,
        },
        cold: ColdTarget::S3(S3Target {
            endpoint: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            region: String::new(),
            path_style: true,
            access_key: String::new(),
            secret_key: String::new(),
            session_token: None,
            spool_dir: None,
            spool_limit_bytes: 0,
        }),
        sandbox: SandboxPolicy::default(),
        tuning: HoundTuning {
            spin_us: 0,
            idle_poll_ms: 0,
            s3_concurrency: 16,
            fs_commit: FsCommit::Journal,
            s3_deadline_ms: 5000,
        },
    });
    let bytes = encode(&m);
    // Offsets in the body: 2, limits 25 → 27, cold tag 4 → 31, four empty strings 32 → 63:
    // path_style; then two empty strings → 80: session_token tag.
    let path_style = FRAME_HEADER_LEN + 63;
    let token_tag = FRAME_HEADER_LEN + 80;
    assert_eq!(bytes[path_style], 1);
    assert_eq!(bytes[token_tag], 0);
    let mut bad = bytes.clone();
    bad[path_style] = 2;
    assert_eq!(malformed_kind(Message::from_datagram(&bad)), "setup");
    let mut bad = bytes.clone();
    bad[token_tag] = 2;
    assert_eq!(malformed_kind(Message::from_datagram(&bad)), "setup");
    assert_eq!(Message::from_datagram(&bytes).unwrap(), m);
}

#[test]
fn datagram_errors_are_typed() {
    let good = encode(&Message::Shutdown(Shutdown { grace_ms: 1 }));
    // Truncated header / body.
    assert!(matches!(
        Message::from_datagram(&good[..10]),
        Err(ProtocolError::Truncated {
            needed: 16,
            available: 10
        })
    ));
    assert!(matches!(
        Message::from_datagram(&good[..18]),
        Err(ProtocolError::Truncated {
            needed: 20,
            available: 18
        })
    ));
    // Trailing bytes after the frame.
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        Message::from_datagram(&long),
        Err(ProtocolError::TrailingBytes {
            expected: 20,
            found: 21
        })
    ));
    // Over the control limit, refused from the header alone.
    let mut huge = good[..FRAME_HEADER_LEN].to_vec();
    huge[8..12].copy_from_slice(&(MAX_CONTROL_BODY + 1).to_le_bytes());
    assert!(matches!(
        Message::from_datagram(&huge),
        Err(ProtocolError::FrameTooLarge { len, max })
            if len == u64::from(MAX_CONTROL_BODY) + 1 && max == u64::from(MAX_CONTROL_BODY)
    ));
    // Header errors pass through.
    let mut bad = good.clone();
    bad[6] = 42;
    assert!(matches!(
        Message::from_datagram(&bad),
        Err(ProtocolError::UnknownMessageKind { kind: 42 })
    ));
}

#[test]
fn announced_huge_string_is_refused() {
    // A Fatal whose string announces 2^40 bytes in an 8-byte body.
    let body = (1u64 << 40).to_le_bytes();
    let e = Message::from_datagram(&datagram(MessageKind::Fatal, &body)).unwrap_err();
    match e {
        ProtocolError::MalformedBody { kind, reason } => {
            assert_eq!(kind, "fatal");
            assert_eq!(reason, "unexpected end of body");
        }
        other => panic!("{other:?}"),
    }
}

/// The hex of the worked example that follows `title` in docs/PROTOCOL.md: the leading
/// two-digit hex tokens of each line of the next ```text block.
fn documented_hex(title: &str) -> String {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let at = doc.find(title).expect("example title in docs/PROTOCOL.md");
    let rest = &doc[at..];
    let start = rest.find("```text\n").expect("example block") + "```text\n".len();
    let block = &rest[start..start + rest[start..].find("```").expect("block end")];
    let mut hex = String::new();
    for line in block.lines() {
        for tok in line.split_whitespace() {
            if tok.len() == 2 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                hex.push_str(tok);
            } else {
                break;
            }
        }
    }
    hex
}

#[test]
fn protocol_doc_examples_match_the_encoder() {
    let shutdown = encode(&Message::Shutdown(Shutdown { grace_ms: 5000 }));
    assert_eq!(
        documented_hex("`Shutdown { grace_ms: 5000 }` — 20 bytes"),
        hex::encode(&shutdown)
    );
    let fatal = encode(&Message::Fatal(Fatal {
        message: "oops".into(),
    }));
    assert_eq!(
        documented_hex("`Fatal { message: \"oops\" }` — 28 bytes"),
        hex::encode(&fatal)
    );
}

/// A hound from the previous build gets a `Setup` one field longer than it knows (and a newer
/// hound one shorter): the decode fails, and the error names both versions instead of
/// "malformed". The same for `Hello` and for the `Ready` a supervisor reads.
#[test]
fn a_handshake_of_another_layout_names_both_versions() {
    let setup = Setup {
        protocol_version: HOUND_PROTOCOL_VERSION - 1,
        limits: HoundLimits {
            max_evidence_bytes: 1,
            max_output_bytes: 1,
            memory_budget_bytes: 0,
            max_open_files: 64,
            max_processes: 1,
            gzip_level: 6,
        },
        cold: ColdTarget::None,
        sandbox: SandboxPolicy { layers: vec![] },
        tuning: HoundTuning {
            spin_us: 50,
            idle_poll_ms: 100,
            s3_concurrency: 1,
            fs_commit: FsCommit::Journal,
            s3_deadline_ms: 5000,
        },
    };
    let full = encode(&Message::Setup(setup));
    let (header, body) = parse_frame(&full, MAX_CONTROL_BODY).unwrap();
    // The previous layout: without the last field.
    let old = &body[..body.len() - 4];
    let mut h = header;
    h.body_len = old.len() as u32;
    let names_both = |r: Result<Message, ProtocolError>| match r {
        Err(ProtocolError::MalformedBody { reason, .. }) => {
            reason.contains(&format!(
                "version field reads {}",
                HOUND_PROTOCOL_VERSION - 1
            )) && reason.contains(&format!("this build speaks {HOUND_PROTOCOL_VERSION}"))
        }
        other => panic!("{other:?}"),
    };
    assert!(names_both(Message::decode(&h, old)));
    // The same bytes with this build's version are malformed, and say nothing of versions.
    let mut same = old.to_vec();
    same[..2].copy_from_slice(&HOUND_PROTOCOL_VERSION.to_le_bytes());
    match Message::decode(&h, &same) {
        Err(ProtocolError::MalformedBody { reason, .. }) => {
            assert!(!reason.contains("version field"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // Ready: pid first, then the version; a body cut short.
    let mut ready = 7u32.to_le_bytes().to_vec();
    ready.extend((HOUND_PROTOCOL_VERSION + 1).to_le_bytes());
    let rh = FrameHeader {
        kind: MessageKind::Ready,
        body_len: ready.len() as u32,
    };
    match Message::decode(&rh, &ready) {
        Err(ProtocolError::MalformedBody { kind, reason }) => {
            assert_eq!(kind, "ready");
            assert!(
                reason.contains(&format!("reads {}", HOUND_PROTOCOL_VERSION + 1)),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}
