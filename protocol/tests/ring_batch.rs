//! Model test of the regions' batch calls: random interleavings of the supervisor staging and
//! publishing requests, the hound echoing them with staged and published completions, and the
//! supervisor consuming completions with deferred head publishes and batched releases, over a
//! real region pair in one thread. Checked against a model of what each side may see: nothing
//! staged is visible to the peer before its publish, everything published arrives intact and in
//! order, no record is overwritten before it is consumed, and once everything is consumed,
//! published and released both rings take a record of maximal size again.

use std::collections::VecDeque;

use houndpool_protocol::region::{
    CompletionReader, CompletionWriter, HoundRegions, RegionLayout, RequestReader, RequestWriter,
    SupervisorRegions,
};
use houndpool_protocol::ring::max_payload;
use proptest::prelude::*;

const CAP: usize = 4096;

#[derive(Debug, Clone)]
enum Op {
    /// Supervisor stages a request of this many bytes (modulo 700).
    Stage(usize),
    /// Supervisor publishes its staged requests.
    Publish,
    /// Hound echoes the next request it sees into a staged completion.
    Echo,
    /// Hound publishes its staged completions.
    HoundPublish,
    /// Supervisor consumes one completion without publishing its position.
    PopDeferred,
    /// Supervisor publishes its consumer position and releases the consumed requests.
    Finish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..700).prop_map(Op::Stage),
        2 => Just(Op::Publish),
        4 => Just(Op::Echo),
        2 => Just(Op::HoundPublish),
        4 => Just(Op::PopDeferred),
        2 => Just(Op::Finish),
    ]
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31) as usize + i * 7) as u8)
        .collect()
}

struct Pair {
    writer: RequestWriter,
    reader: CompletionReader,
    requests: RequestReader,
    completions: CompletionWriter,
}

fn pair() -> Pair {
    let layout = RegionLayout {
        request_capacity: CAP,
        completion_capacity: CAP,
    };
    let sup = SupervisorRegions::create(layout, "ring-batch-test").unwrap();
    let req = sup.request_fd().try_clone_to_owned().unwrap();
    let cmp = sup.completion_fd().try_clone_to_owned().unwrap();
    let hound = HoundRegions::map(req, cmp).unwrap();
    let (writer, reader) = sup.split();
    let (requests, completions, _status) = hound.split();
    Pair {
        writer,
        reader,
        requests,
        completions,
    }
}

/// The model: requests by state, each with its payload and the end of its request record.
#[derive(Default)]
struct Model {
    /// Staged by the supervisor, not published.
    staged: VecDeque<(Vec<u8>, u64)>,
    /// Published, not yet read by the hound.
    published: VecDeque<(Vec<u8>, u64)>,
    /// Echoed into a staged completion.
    echo_staged: VecDeque<(Vec<u8>, u64)>,
    /// Completion published, not consumed.
    echo_published: VecDeque<(Vec<u8>, u64)>,
    /// End of the request of the last consumed completion, not yet released.
    release: Option<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batches_match_model(ops in prop::collection::vec(op(), 1..300)) {
        let mut p = pair();
        let mut m = Model::default();
        let mut seq = 0u64;
        let mut out = Vec::new();
        for op in &ops {
            match op {
                Op::Stage(len) => {
                    let body = payload(seq, *len);
                    if let Some(pos) = p.writer.stage(&[&body]).unwrap() {
                        m.staged.push_back((body, pos.end));
                        seq += 1;
                    }
                    prop_assert_eq!(p.writer.has_staged(), !m.staged.is_empty());
                }
                Op::Publish => {
                    p.writer.publish();
                    m.published.extend(m.staged.drain(..));
                    prop_assert!(!p.writer.has_staged());
                }
                Op::Echo => {
                    // The hound sees exactly the published requests (the fresh look agrees).
                    prop_assert_eq!(p.requests.has_pending(), !m.published.is_empty());
                    let seen = p.requests.peek().unwrap().map(<[u8]>::to_vec);
                    match (seen, m.published.front()) {
                        (None, None) => {}
                        (Some(seen), Some((expected, _))) => {
                            prop_assert_eq!(&seen, expected);
                            if p.completions.stage(&[&seen]).unwrap() {
                                p.requests.advance();
                                let r = m.published.pop_front().unwrap();
                                m.echo_staged.push_back(r);
                            }
                        }
                        (seen, expected) => prop_assert!(
                            false,
                            "hound saw {:?}, model expects {:?}",
                            seen.map(|s| s.len()),
                            expected.map(|e| e.0.len())
                        ),
                    }
                    prop_assert_eq!(p.completions.has_staged(), !m.echo_staged.is_empty());
                }
                Op::HoundPublish => {
                    p.completions.publish();
                    m.echo_published.extend(m.echo_staged.drain(..));
                }
                Op::PopDeferred => {
                    prop_assert_eq!(p.reader.has_pending().unwrap(), !m.echo_published.is_empty());
                    let popped = p.reader.pop_deferred(&mut out).unwrap();
                    prop_assert_eq!(popped, !m.echo_published.is_empty());
                    if popped {
                        let (expected, end) = m.echo_published.pop_front().unwrap();
                        prop_assert_eq!(&out, &expected);
                        m.release = Some(end);
                    }
                }
                Op::Finish => {
                    p.reader.publish_head();
                    if let Some(end) = m.release.take() {
                        p.reader.release_requests(end);
                    }
                }
            }
        }
        // Drain everything through both rings: nothing lost, nothing reordered.
        p.writer.publish();
        m.published.extend(m.staged.drain(..));
        loop {
            let progressed = {
                let mut any = false;
                while let Some(seen) = p.requests.peek().unwrap().map(<[u8]>::to_vec) {
                    if !p.completions.stage(&[&seen]).unwrap() {
                        break;
                    }
                    p.requests.advance();
                    let r = m.published.pop_front().unwrap();
                    prop_assert_eq!(&seen, &r.0);
                    m.echo_staged.push_back(r);
                    any = true;
                }
                p.completions.publish();
                m.echo_published.extend(m.echo_staged.drain(..));
                while p.reader.pop_deferred(&mut out).unwrap() {
                    let (expected, end) = m.echo_published.pop_front().unwrap();
                    prop_assert_eq!(&out, &expected);
                    m.release = Some(end);
                    any = true;
                }
                p.reader.publish_head();
                if let Some(end) = m.release.take() {
                    p.reader.release_requests(end);
                }
                any
            };
            if !progressed {
                break;
            }
        }
        prop_assert!(m.published.is_empty() && m.echo_published.is_empty());
        // Empty again: both rings take a record of maximal size, wherever their positions are.
        let max = max_payload(CAP);
        prop_assert_eq!(p.writer.free_bytes(), CAP);
        let big = vec![7u8; max];
        prop_assert!(p.writer.try_push(&[&big]).unwrap().is_some());
        let seen = p.requests.peek().unwrap().map(<[u8]>::to_vec).unwrap();
        prop_assert_eq!(&seen, &big);
        prop_assert!(p.completions.try_push(&[&seen]).unwrap());
        p.requests.advance();
        prop_assert!(p.reader.pop(&mut out).unwrap());
        prop_assert_eq!(&out, &big);
    }
}
