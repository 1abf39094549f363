//! `ipc`: the transport alone. The real pool's shared-memory rings carrying `Noop` jobs, side by
//! side with a SOCK_SEQPACKET socketpair and a pair of pipes carrying the protocol's frames
//! (`frame::write_frame` + parse) to an echo process — a re-exec of this binary
//! (`hound-stress __echo-peer`), so every transport crosses a real process boundary.
//! The pool is measured twice per size: `shm` through its fastest public API (`submit_batch` +
//! `recv_outcomes`), `shm-single` with one `submit` per job and the per-outcome channel. The
//! `ring` row is the bare ring between two threads (see [`ring`]): the physical limit.
//!
//! Streaming keeps a window of requests outstanding and counts round trips per second; the
//! round-trip latency is measured one request at a time. The pipe peer batches: it answers
//! every frame of one `read` with one `write`, which is the best a stdio transport can do.
//!
//! # Rows are interleaved
//!
//! Every transport is set up once, then each size is measured in [`rounds`]: in every round
//! each row streams its share of the messages and takes its share of the round-trip samples,
//! in an order that rotates from round to round. A row's figure is its messages over the sum
//! of its rounds' times. On this VM the cost of copying memory changes several-fold from one
//! second to the next (the bare ring's 256 KiB round trip read 17 µs in one run and 150 µs in
//! the next, with no syscall and no page fault in its loop), so rows measured one after the
//! other compared whatever the host was doing in their half second; interleaved, the rows of
//! one run share those conditions and their ratios mean something.

use std::time::Duration;

use hdrhistogram::Histogram;
use houndpool_protocol::frame::{MessageKind, DEFAULT_MAX_BODY};

use crate::report::{IdleResult, IpcResult, Transport};
use crate::util::{histogram, percentiles, Ctx, Result};

mod peer;
mod pipe;
mod ring;
mod seqpacket;
mod shm;

pub use peer::echo_peer;

/// Payload sizes of issue 5.
pub const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 256 * 1024];
/// Requests outstanding while streaming (below the pool's 64 per hound).
const WINDOW: usize = 32;
/// The frame kind the echo frames carry. Bodies are opaque bytes here (never decoded as
/// control messages); the kind only has to be one the frame parser accepts.
const ECHO_KIND: MessageKind = MessageKind::Hello;
/// Largest frame body the peers accept.
const MAX_BODY: u32 = DEFAULT_MAX_BODY;
/// Hidden subcommand that runs an echo peer.
pub const ECHO_PEER_CMD: &str = "__echo-peer";
/// How long any row waits for one echo before it reports the transport stalled.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(20);

/// (streamed messages, round-trip samples) for a payload size.
fn counts(ctx: &Ctx, size: usize) -> (usize, usize) {
    let budget = ctx.pick(48usize << 20, 2usize << 30);
    let stream = (budget / size).clamp(ctx.pick(200, 2_000), ctx.pick(30_000, 1_000_000));
    let rtt = ctx.pick(1_500, 20_000);
    (stream, rtt)
}

/// Rounds each size is measured in (see the module doc): enough that a change of the host's
/// state lands on every row, few enough that a round's stream stays many windows long.
fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(5, 10)
}

/// Untimed pause before every row's turn: longer than the pool's caller lease (1 ms, taken by
/// `recv_outcomes`: the collector sleeps without doorbells while it runs) and its spins
/// (50 µs), so that no row starts inside the state the previous one left (the `shm-single`
/// row after the batched one waited up to 1 ms for its first completion in every round).
const TURN_GAP: Duration = Duration::from_millis(3);

/// Untimed round trips streamed before a size's timed rounds.
fn warm_up(n: usize) -> usize {
    (n / 10).max(4 * WINDOW)
}

/// A payload of `size` bytes with a recognisable pattern.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// The last byte of [`payload`]`(size)`, which every row checks on every echo.
fn payload_last(size: usize) -> Option<u8> {
    size.checked_sub(1).map(|i| (i % 251) as u8)
}

/// Which rows an `ipc` run measures (`hound-stress ipc --sizes 64 --transports shm`, e.g. to
/// profile one row); everything by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Payload sizes (each one of [`SIZES`]); all of them when empty.
    pub sizes: Vec<usize>,
    /// Transports; all of them when empty.
    pub transports: Vec<Transport>,
}

impl Filter {
    fn sizes(&self) -> Vec<usize> {
        SIZES
            .into_iter()
            .filter(|s| self.sizes.is_empty() || self.sizes.contains(s))
            .collect()
    }
    fn wants(&self, t: Transport) -> bool {
        self.transports.is_empty() || self.transports.contains(&t)
    }
}

/// Where `one_at_a_time` records each round trip (nowhere for untimed warm-ups).
type Samples<'h> = Option<&'h mut Histogram<u64>>;

/// One transport under measurement: set up once, then driven size by size and round by round.
trait Row {
    /// The transport this row measures.
    fn transport(&self) -> Transport;
    /// Whether the row can carry a payload of `size` bytes (a seqpacket datagram must fit the
    /// socket's send buffer). A row that cannot is skipped at that size with a message.
    fn carries(&self, _size: usize) -> Result<()> {
        Ok(())
    }
    /// `n` round trips of `body` with at most [`WINDOW`] outstanding; the time they took.
    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration>;
    /// `n` round trips of `body`, one at a time; each recorded in `hist` when given.
    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()>;
}

/// Runs every transport at every size (or those `filter` names). Results are ordered by size,
/// then transport. `spin` overrides how long the shm pool's hound and collector, and the thread
/// waiting for outcomes, busy-wait before sleeping (the production default, 50 µs, when `None`).
/// The idle figure is measured only when an shm row ran (`None` otherwise).
pub fn run(
    ctx: &Ctx,
    spin: Option<Duration>,
    filter: &Filter,
) -> Result<(Vec<IpcResult>, Option<IdleResult>)> {
    let sizes = filter.sizes();
    let bar = ctx.bar(sizes.len() as u64, "ipc");
    let config = shm::config(spin);
    let layout = config.region_layout();
    let pool = if filter.wants(Transport::Shm) || filter.wants(Transport::ShmSingle) {
        Some(shm::Rig::start(config)?)
    } else {
        None
    };
    let mut rows: Vec<Box<dyn Row + '_>> = Vec::new();
    if let Some(rig) = &pool {
        if filter.wants(Transport::Shm) {
            rows.push(Box::new(rig.batched()));
        }
        if filter.wants(Transport::ShmSingle) {
            rows.push(Box::new(rig.single()?));
        }
    }
    if filter.wants(Transport::Seqpacket) {
        rows.push(Box::new(seqpacket::SeqpacketRow::start()?));
    }
    if filter.wants(Transport::Pipe) {
        rows.push(Box::new(pipe::PipeRow::start()?));
    }
    // Last: nothing after it can fail and leave its echo thread running.
    let mut ring = None;
    if filter.wants(Transport::Ring) {
        ring = Some(ring::RingRow::start(layout)?);
    }

    let mut results = Vec::new();
    let mut failure = None;
    {
        let mut all: Vec<&mut dyn Row> =
            rows.iter_mut().map(|r| &mut **r as &mut dyn Row).collect();
        if let Some(r) = ring.as_mut() {
            all.push(r);
        }
        for &size in &sizes {
            match measure(ctx, &mut all, size) {
                Ok(r) => results.extend(r),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    // Stop every other transport (the ring's echo thread spins) before the idle figure.
    drop(rows);
    let ring_stopped = ring.map(ring::RingRow::finish);
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(r) = ring_stopped {
        r?;
    }
    let idle = pool.map(|rig| rig.idle_and_stop(ctx));
    let order = |t: Transport| match t {
        Transport::Shm => 0,
        Transport::ShmSingle => 1,
        Transport::Ring => 2,
        Transport::Seqpacket => 3,
        Transport::Pipe => 4,
    };
    results.sort_by_key(|r| (r.size, order(r.transport)));
    Ok((results, idle))
}

/// Measures one size on every row that carries it: a warm-up each (untimed: a size's first
/// messages pay first-touch costs), then [`rounds`] rounds in a rotating order.
fn measure(ctx: &Ctx, rows: &mut [&mut dyn Row], size: usize) -> Result<Vec<IpcResult>> {
    let body = payload(size);
    let (n, samples) = counts(ctx, size);
    let rounds = rounds(ctx);
    let (per_round, samples_per_round) = (n.div_ceil(rounds), samples.div_ceil(rounds));
    let mut live = Vec::new();
    for (i, row) in rows.iter_mut().enumerate() {
        match row.carries(size) {
            Ok(()) => live.push(i),
            Err(e) => eprintln!(
                "hound-stress: ipc {} {size} B skipped: {e}",
                row.transport().name()
            ),
        }
    }
    for &i in &live {
        std::thread::sleep(TURN_GAP);
        rows[i].stream(&body, warm_up(n))?;
        rows[i].one_at_a_time(&body, samples / 10, None)?;
    }
    let mut elapsed = vec![Duration::ZERO; live.len()];
    let mut spread = vec![(f64::INFINITY, 0.0f64); live.len()];
    let mut hists: Vec<Histogram<u64>> = live.iter().map(|_| histogram()).collect();
    for round in 0..rounds {
        for k in 0..live.len() {
            let j = (round + k) % live.len();
            let row = &mut rows[live[j]];
            std::thread::sleep(TURN_GAP);
            let t = row.stream(&body, per_round)?;
            elapsed[j] += t;
            let rate = per_round as f64 / t.as_secs_f64().max(1e-9);
            spread[j] = (spread[j].0.min(rate), spread[j].1.max(rate));
            row.one_at_a_time(&body, samples_per_round, Some(&mut hists[j]))?;
        }
    }
    Ok(live
        .iter()
        .enumerate()
        .map(|(j, &i)| IpcResult {
            round_min_msgs_per_sec: spread[j].0,
            round_max_msgs_per_sec: spread[j].1,
            ..result(
                rows[i].transport(),
                size,
                per_round * rounds,
                elapsed[j],
                &hists[j],
            )
        })
        .collect())
}

/// Calls `one` (one round trip) `n` times, recording each call's time in `hist` when given.
fn time_each(
    n: usize,
    mut hist: Option<&mut Histogram<u64>>,
    mut one: impl FnMut() -> Result<()>,
) -> Result<()> {
    for _ in 0..n {
        let t = std::time::Instant::now();
        one()?;
        if let Some(h) = hist.as_deref_mut() {
            crate::util::record(h, t.elapsed());
        }
    }
    Ok(())
}

fn result(
    transport: Transport,
    size: usize,
    msgs: usize,
    elapsed: Duration,
    h: &Histogram<u64>,
) -> IpcResult {
    let msgs_per_sec = msgs as f64 / elapsed.as_secs_f64().max(1e-9);
    let (p50, p99, p999, max) = percentiles(h, 1_000.0);
    IpcResult {
        transport,
        size,
        msgs_per_sec,
        round_min_msgs_per_sec: msgs_per_sec,
        round_max_msgs_per_sec: msgs_per_sec,
        bytes_per_sec: msgs_per_sec * size as f64,
        rtt_p50_us: p50,
        rtt_p99_us: p99,
        rtt_p999_us: p999,
        rtt_max_us: max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::StressError;

    #[test]
    fn counts_scale_with_size_and_mode() {
        let quick = Ctx {
            quick: true,
            progress: false,
            cores: 2,
        };
        let full = Ctx {
            quick: false,
            ..quick
        };
        let (q64, _) = counts(&quick, 64);
        let (q256k, _) = counts(&quick, 256 * 1024);
        assert!(q64 > q256k && q256k >= 200);
        assert_eq!(counts(&full, 64).0, 1_000_000);
        assert!(counts(&full, 64).1 > counts(&quick, 64).1);
        // A round streams several windows even at the largest size.
        assert!(q256k / rounds(&quick) >= WINDOW);
    }

    /// A row that sleeps a fixed time per message and counts what it was asked to do.
    struct Fixed {
        per_msg: Duration,
        streamed: usize,
        sampled: usize,
        refuses: Option<usize>,
    }

    impl Row for Fixed {
        fn transport(&self) -> Transport {
            Transport::Pipe
        }
        fn carries(&self, size: usize) -> Result<()> {
            match self.refuses {
                Some(s) if s == size => Err(StressError::Unexpected("too large".into())),
                _ => Ok(()),
            }
        }
        fn stream(&mut self, _body: &[u8], n: usize) -> Result<Duration> {
            self.streamed += n;
            Ok(self.per_msg * n as u32)
        }
        fn one_at_a_time(&mut self, _body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
            self.sampled += n;
            if let Some(h) = hist {
                for _ in 0..n {
                    crate::util::record(h, self.per_msg);
                }
            }
            Ok(())
        }
    }

    #[test]
    fn measure_sums_the_rounds_and_skips_rows_that_cannot_carry_a_size() {
        let ctx = Ctx {
            quick: true,
            progress: false,
            cores: 2,
        };
        let mut a = Fixed {
            per_msg: Duration::from_micros(10),
            streamed: 0,
            sampled: 0,
            refuses: None,
        };
        let mut b = Fixed {
            per_msg: Duration::from_micros(40),
            streamed: 0,
            sampled: 0,
            refuses: Some(1024),
        };
        let mut rows: Vec<&mut dyn Row> = vec![&mut a, &mut b];
        let r = measure(&ctx, &mut rows, 64).unwrap();
        assert_eq!(r.len(), 2);
        assert!(
            (r[0].msgs_per_sec - 100_000.0).abs() < 1.0,
            "{}",
            r[0].msgs_per_sec
        );
        assert!(
            (r[1].msgs_per_sec - 25_000.0).abs() < 1.0,
            "{}",
            r[1].msgs_per_sec
        );
        assert!((r[0].rtt_p50_us - 10.0).abs() < 0.1);
        assert!((r[0].round_min_msgs_per_sec - 100_000.0).abs() < 1.0);
        assert!((r[0].round_max_msgs_per_sec - 100_000.0).abs() < 1.0);
        let r = measure(&ctx, &mut rows, 1024).unwrap();
        assert_eq!(r.len(), 1, "the row that cannot carry 1 KiB is skipped");
        let (n, samples) = counts(&ctx, 64);
        assert_eq!(
            a.streamed,
            warm_up(n)
                + n.div_ceil(5) * 5
                + warm_up(counts(&ctx, 1024).0)
                + counts(&ctx, 1024).0.div_ceil(5) * 5
        );
        assert_eq!(b.sampled, samples / 10 + samples.div_ceil(5) * 5);
    }

    #[test]
    fn payload_pattern_is_checked() {
        let body = payload(300);
        assert_eq!(body.len(), 300);
        assert!(peer::check_body(ECHO_KIND, &body, 300).is_ok());
        assert!(peer::check_body(ECHO_KIND, &body[..299], 300).is_err());
        let mut bad = body.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(peer::check_body(ECHO_KIND, &bad, 300).is_err());
    }
}
