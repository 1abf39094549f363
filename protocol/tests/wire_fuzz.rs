//! Fuzz-style test: 100 000 random and mutated byte strings through every parser of untrusted
//! wire bytes. None may panic, and whatever is accepted must be canonical (re-encodes to the
//! exact input), which proves no byte was silently ignored.

use houndpool_protocol::control::*;
use houndpool_protocol::frame::{
    parse_frame, write_frame, FrameDecoder, MessageKind, FRAME_HEADER_LEN,
};
use houndpool_protocol::job::*;

/// splitmix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let hello = Hello {
        protocol_version: 1,
        pool_id: [3; 16],
        hound_id: 1,
        generation: 2,
    };
    let setup = Setup {
        protocol_version: 1,
        limits: HoundLimits {
            max_evidence_bytes: 1,
            max_output_bytes: 2,
            memory_budget_bytes: 3,
            max_open_files: 4,
            max_processes: 5,
            gzip_level: 6,
        },
        cold: ColdTarget::S3(S3Target {
            endpoint: "http://e".into(),
            bucket: "b".into(),
            prefix: "p".into(),
            region: "r".into(),
            path_style: true,
            access_key: "a".into(),
            secret_key: "s".into(),
            session_token: Some("t".into()),
            spool_dir: None,
            spool_limit_bytes: 9,
        }),
        sandbox: SandboxPolicy {
            layers: vec![
                (Layer::Seccomp, LayerMode::Required),
                (Layer::Cgroup, LayerMode::Off),
            ],
        },
        tuning: HoundTuning {
            spin_us: 1,
            idle_poll_ms: 2,
            s3_concurrency: 16,
            fs_commit: FsCommit::Journal,
            s3_deadline_ms: 5000,
        },
    };
    let ready = Ready {
        pid: 4,
        protocol_version: 1,
        sandbox: SandboxReport {
            layers: vec![LayerReport {
                layer: Layer::Landlock,
                status: LayerStatus::Unavailable,
                detail: "no".into(),
            }],
        },
    };
    let mut out: Vec<Vec<u8>> = [
        Message::Hello(hello),
        Message::Setup(setup),
        Message::Ready(ready),
        Message::Shutdown(Shutdown { grace_ms: 5 }),
        Message::Fatal(Fatal {
            message: "boom".into(),
        }),
    ]
    .iter()
    .map(|m| {
        let mut v = Vec::new();
        m.encode_frame(&mut v).unwrap();
        v
    })
    .collect();
    let receipt = EvacuateReceipt {
        evidence_id: [1; 16],
        original_size: 2,
        compressed_size: 3,
        sha256: [4; 32],
        encode_ns: 5,
        store_ns: 6,
    };
    let mut evac = CompletionHeader {
        job_id: 1,
        kind: JobKind::Evacuate,
        status: CompletionStatus::Ok,
        flags: COMPLETION_FLAG_SPOOLED,
    }
    .to_bytes()
    .to_vec();
    evac.extend(receipt.to_bytes());
    out.push(evac);
    let mut failed = CompletionHeader {
        job_id: 1,
        kind: JobKind::Noop,
        status: CompletionStatus::Failed(FailCode::Internal),
        flags: 0,
    }
    .to_bytes()
    .to_vec();
    failed.extend(b"oh no");
    out.push(failed);
    out.push(
        RequestHeader {
            job_id: 1,
            kind: JobKind::Erase,
            level: 0,
            severity: Severity::Critical,
            attempt: 1,
            evidence_id: [9; 16],
            key_len: 0,
            pool_evidence_id: true,
        }
        .to_bytes()
        .to_vec(),
    );
    out
}

fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        // Pure noise.
        0 => {
            let n = rng.below(80);
            rng.bytes(n)
        }
        // A valid frame header of a random kind and correct length, random body: exercises
        // the bincode decoders rather than the header checks.
        1 => {
            let n = rng.below(120);
            let body = rng.bytes(n);
            let kind = MessageKind::from_u16(1 + rng.below(4) as u16).unwrap();
            let mut out = Vec::new();
            write_frame(kind, &body, &mut out).unwrap();
            out
        }
        // A valid seed with a few bytes changed, and sometimes cut or extended.
        _ => {
            let mut v = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(v.len());
                v[i] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => v[i] ^ (1 << rng.below(8)),
                    _ => v[i].wrapping_add(1),
                };
            }
            match rng.below(6) {
                0 => v.truncate(rng.below(v.len() + 1)),
                1 => {
                    let n = rng.below(8);
                    v.extend(rng.bytes(n))
                }
                _ => {}
            }
            v
        }
    }
}

#[test]
fn hundred_thousand_inputs_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x686f_756e_6470_6f6f);
    let (mut messages, mut completions, mut requests) = (0, 0, 0);
    for _ in 0..100_000 {
        let data = input(&mut rng, &seeds);

        let _ = parse_frame(&data, MAX_CONTROL_BODY);
        if let Ok(m) = Message::from_datagram(&data) {
            let mut again = Vec::new();
            m.encode_frame(&mut again).unwrap();
            assert_eq!(again, data, "accepted message is not canonical: {m:?}");
            messages += 1;
        }
        if let Ok((h, body)) = CompletionHeader::parse(&data) {
            assert_eq!(h.to_bytes(), data[..COMPLETION_HEADER_LEN]);
            if h.kind == JobKind::Evacuate && h.status == CompletionStatus::Ok {
                let r = EvacuateReceipt::parse(body).unwrap();
                assert_eq!(r.to_bytes(), body);
            }
            completions += 1;
        }
        if let Ok((h, _)) = RequestHeader::parse(&data) {
            assert_eq!(h.to_bytes(), data[..REQUEST_HEADER_LEN]);
            requests += 1;
        }
        let _ = EvacuateReceipt::parse(&data);

        // The stream decoder, fed in two random pieces.
        let mut d = FrameDecoder::new(256);
        let cut = rng.below(data.len() + 1);
        d.push(&data[..cut]);
        d.push(&data[cut..]);
        while let Ok(Some((h, body))) = d.next_frame() {
            assert_eq!(body.len(), h.body_len as usize);
            let _ = Message::decode(&h, &body);
        }
        assert!(d.buffered() <= data.len().max(FRAME_HEADER_LEN + 256));
    }
    // The generator must reach the accepting paths too, or the test proves little.
    assert!(messages > 1_000, "only {messages} messages accepted");
    assert!(
        completions > 1_000,
        "only {completions} completions accepted"
    );
    assert!(requests > 100, "only {requests} requests accepted");
}
