//! The `ring` row: the bare shared-memory ring, no pool. The protocol crate's supervisor-side
//! `RequestWriter` / `CompletionReader` and hound-side `RequestReader` / `CompletionWriter` over
//! the same memfd regions (the pool's ring sizes for the same payloads), driven by two threads
//! of this process: this one submits and takes completions (copied out, as the pool's collector
//! copies them), an echo thread copies each request's payload into the completion ring. Both
//! spin (no doorbells, no bookkeeping, no headers) and use the rings' batch calls (stage and
//! publish once, consume a batch and publish the position once), which the pool uses too: what
//! is left is the cost of the ring itself, the physical limit the `shm` rows are compared with.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use houndpool_protocol::region::{
    CompletionReader, CompletionWriter, HoundRegions, RegionLayout, RequestReader, RequestWriter,
    SupervisorRegions,
};
use houndpool_protocol::ProtocolError;

use super::{payload_last, Row, Samples, OUTCOME_TIMEOUT, WINDOW};
use crate::report::Transport;
use crate::util::{record, Result, StressError};

/// What the echo thread is told: spin (this row's turn), park (another row's turn), or stop.
struct Control {
    /// True while this row is measured; between its turns the echo thread parks, so it does
    /// not take a core from the rows measured in between.
    active: AtomicBool,
    stop: AtomicBool,
}

/// The bare ring: the submitting side on the calling thread, the echo thread on the other.
pub(super) struct RingRow {
    side: Side,
    control: Arc<Control>,
    echo: JoinHandle<std::result::Result<(), ProtocolError>>,
}

impl RingRow {
    /// Creates the regions with `layout` (the shm pool's ring sizes), maps the hound's side
    /// too, and starts the (parked) echo thread on it.
    pub(super) fn start(layout: RegionLayout) -> Result<Self> {
        let sup = SupervisorRegions::create(layout, "hound-stress-ring")?;
        let req = sup
            .request_fd()
            .try_clone_to_owned()
            .map_err(StressError::io("dup request region"))?;
        let cmp = sup
            .completion_fd()
            .try_clone_to_owned()
            .map_err(StressError::io("dup completion region"))?;
        let hound = HoundRegions::map(req, cmp)?;
        let (writer, reader) = sup.split();
        let (h_reader, h_writer, _status) = hound.split();
        let control = Arc::new(Control {
            active: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let c = Arc::clone(&control);
        let echo = std::thread::Builder::new()
            .name("ring-echo".into())
            .spawn(move || echo(h_reader, h_writer, &c))
            .map_err(StressError::io("spawn ring echo thread"))?;
        Ok(Self {
            side: Side {
                writer,
                reader,
                ends: VecDeque::with_capacity(WINDOW),
                released: None,
                buf: Vec::new(),
            },
            control,
            echo,
        })
    }

    /// Stops and joins the echo thread; its error, if it had one.
    pub(super) fn finish(self) -> Result<()> {
        self.control.stop.store(true, Ordering::Relaxed);
        self.echo.thread().unpark();
        let echoed = self
            .echo
            .join()
            .map_err(|_| StressError::Unexpected("ring echo thread panicked".into()))?;
        Ok(echoed?)
    }

    /// Runs `f` with the echo thread spinning; parks it again afterwards.
    fn turn<T>(&mut self, f: impl FnOnce(&mut Side) -> Result<T>) -> Result<T> {
        self.control.active.store(true, Ordering::Relaxed);
        self.echo.thread().unpark();
        let r = f(&mut self.side);
        // Every request sent in the turn has been echoed (the exchange waits for all), so the
        // echo thread has nothing left to do when it sees this.
        self.control.active.store(false, Ordering::Relaxed);
        r
    }
}

impl Row for RingRow {
    fn transport(&self) -> Transport {
        Transport::Ring
    }

    fn stream(&mut self, body: &[u8], n: usize) -> Result<Duration> {
        self.turn(|side| {
            let start = Instant::now();
            side.exchange(body, n, WINDOW, None)?;
            Ok(start.elapsed())
        })
    }

    fn one_at_a_time(&mut self, body: &[u8], n: usize, hist: Samples<'_>) -> Result<()> {
        self.turn(|side| side.exchange(body, n, 1, hist))
    }
}

/// Completions the echo thread stages before it publishes them (the hound's loop uses the same
/// bound, `hound::run::PUBLISH_BATCH`). Publishing only when the whole window is echoed made
/// the two threads take turns (each spun while the other worked through 32 records); a batch
/// of 8 lets the submitter's refill overlap the rest of the echo, at one cache-line transfer of
/// the tail per 8 records.
const ECHO_BATCH: usize = 8;

/// The echo thread: copies every request payload into the completion ring, spinning while
/// either ring is empty or full during the row's turns and parked between them, until `stop`. Completions are staged and published once per
/// batch: every [`ECHO_BATCH`] records, when the requests it knows of are done (before it looks
/// for more), or when the completion ring is full.
fn echo(
    mut requests: RequestReader,
    mut completions: CompletionWriter,
    control: &Control,
) -> std::result::Result<(), ProtocolError> {
    let mut idle = 0u32;
    let mut staged = 0usize;
    while !control.stop.load(Ordering::Relaxed) {
        if !control.active.load(Ordering::Relaxed) && !requests.has_pending() {
            completions.publish();
            staged = 0;
            // Woken by `turn` and `finish`; the timeout only bounds a missed unpark.
            std::thread::park_timeout(Duration::from_millis(10));
            continue;
        }
        if staged >= ECHO_BATCH || !requests.has_known_next() {
            // Everything known is done (publish before looking for more), or a batch is: the
            // submitter refills its window while the rest is echoed.
            completions.publish();
            staged = 0;
        }
        let Some(payload) = requests.peek()? else {
            idle = idle.wrapping_add(1);
            if idle.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        };
        let mut full = 0u32;
        while !completions.stage(&[payload])? {
            completions.publish();
            if control.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            full = full.wrapping_add(1);
            if full.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        requests.advance();
        staged += 1;
    }
    Ok(())
}

/// The submitting side: pushes requests, copies completions out, frees request space.
struct Side {
    writer: RequestWriter,
    reader: CompletionReader,
    /// End positions of the requests in flight, oldest first.
    ends: VecDeque<u64>,
    /// End of the last request whose completion was taken, not yet released.
    released: Option<u64>,
    buf: Vec<u8>,
}

impl Side {
    /// `n` round trips with at most `window` in flight; with a histogram, records each one
    /// (meaningful with a window of 1). The window is refilled with staged records and one
    /// publish; completions are taken as a batch (everything the ring shows) and the consumer
    /// position published and the request space released once per batch.
    fn exchange(
        &mut self,
        body: &[u8],
        n: usize,
        window: usize,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> Result<()> {
        let (mut sent, mut done) = (0usize, 0usize);
        let mut t = Instant::now();
        while done < n {
            while sent < n && sent - done < window {
                let Some(pos) = self.writer.stage(&[body])? else {
                    break;
                };
                if sent == done {
                    t = Instant::now();
                }
                self.ends.push_back(pos.end);
                sent += 1;
            }
            self.writer.publish();
            self.take_one(body)?;
            done += 1;
            if let Some(h) = hist.as_deref_mut() {
                record(h, t.elapsed());
            }
            // Everything else already there, without waiting.
            while done < sent && self.reader.pop_deferred(&mut self.buf)? {
                self.check(body)?;
                done += 1;
            }
            self.reader.publish_head();
            if let Some(end) = self.released.take() {
                self.reader.release_requests(end);
            }
        }
        Ok(())
    }

    /// Waits (spinning) for one completion and consumes it (not yet published).
    fn take_one(&mut self, body: &[u8]) -> Result<()> {
        let start = Instant::now();
        let mut spins = 0u32;
        while !self.reader.pop_deferred(&mut self.buf)? {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                // On a machine with other work, a spinner that never yields can hold the core
                // the echo thread needs for a whole time slice.
                std::thread::yield_now();
                if start.elapsed() > OUTCOME_TIMEOUT {
                    return Err(StressError::Unexpected(format!(
                        "no completion from the ring echo thread within {OUTCOME_TIMEOUT:?}"
                    )));
                }
            } else {
                std::hint::spin_loop();
            }
        }
        self.check(body)
    }

    /// Checks a completion and notes its request's end for the batch's release.
    fn check(&mut self, body: &[u8]) -> Result<()> {
        if self.buf.len() != body.len() || self.buf.last() != payload_last(body.len()).as_ref() {
            return Err(StressError::Unexpected(format!(
                "ring echo of {} bytes, expected {}",
                self.buf.len(),
                body.len()
            )));
        }
        if let Some(end) = self.ends.pop_front() {
            self.released = Some(end);
        }
        Ok(())
    }
}
