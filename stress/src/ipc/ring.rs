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
use std::time::Instant;

use hdrhistogram::Histogram;
use houndpool_protocol::region::{
    CompletionReader, CompletionWriter, HoundRegions, RegionLayout, RequestReader, RequestWriter,
    SupervisorRegions,
};
use houndpool_protocol::ProtocolError;
use indicatif::ProgressBar;

use super::{counts, payload, payload_last, result, warm_up, OUTCOME_TIMEOUT, WINDOW};
use crate::report::{IpcResult, Transport};
use crate::util::{histogram, record, Ctx, Result, StressError};

/// Runs the bare ring at each of `sizes` with `layout` (the shm pool's ring sizes).
pub(super) fn run(
    ctx: &Ctx,
    layout: RegionLayout,
    bar: &ProgressBar,
    sizes: &[usize],
) -> Result<Vec<IpcResult>> {
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
    let (mut writer, mut reader) = sup.split();
    let (h_reader, h_writer, _status) = hound.split();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let echo = std::thread::Builder::new()
        .name("ring-echo".into())
        .spawn(move || echo(h_reader, h_writer, &stop2))
        .map_err(StressError::io("spawn ring echo thread"))?;
    let mut side = Side {
        writer: &mut writer,
        reader: &mut reader,
        ends: VecDeque::with_capacity(WINDOW),
        released: None,
        buf: Vec::new(),
    };
    let mut out = Vec::new();
    let mut r = Ok(());
    for &size in sizes {
        let (n, samples) = counts(ctx, size);
        match side.measure(size, n, samples) {
            Ok(row) => out.push(row),
            Err(e) => {
                r = Err(e);
                break;
            }
        }
        bar.inc(1);
    }
    stop.store(true, Ordering::Relaxed);
    let echoed = echo
        .join()
        .map_err(|_| StressError::Unexpected("ring echo thread panicked".into()))?;
    r?;
    echoed?;
    Ok(out)
}

/// Completions the echo thread stages before it publishes them (the hound's loop uses the same
/// bound, `hound::run::PUBLISH_BATCH`). Publishing only when the whole window is echoed made
/// the two threads take turns (each spun while the other worked through 32 records); a batch
/// of 8 lets the submitter's refill overlap the rest of the echo, at one cache-line transfer of
/// the tail per 8 records.
const ECHO_BATCH: usize = 8;

/// The echo thread: copies every request payload into the completion ring, spinning while
/// either ring is empty or full, until `stop`. Completions are staged and published once per
/// batch: every [`ECHO_BATCH`] records, when the requests it knows of are done (before it looks
/// for more), or when the completion ring is full.
fn echo(
    mut requests: RequestReader,
    mut completions: CompletionWriter,
    stop: &AtomicBool,
) -> std::result::Result<(), ProtocolError> {
    let mut idle = 0u32;
    let mut staged = 0usize;
    while !stop.load(Ordering::Relaxed) {
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
            if stop.load(Ordering::Relaxed) {
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
struct Side<'a> {
    writer: &'a mut RequestWriter,
    reader: &'a mut CompletionReader,
    /// End positions of the requests in flight, oldest first.
    ends: VecDeque<u64>,
    /// End of the last request whose completion was taken, not yet released.
    released: Option<u64>,
    buf: Vec<u8>,
}

impl Side<'_> {
    fn measure(&mut self, size: usize, n: usize, samples: usize) -> Result<IpcResult> {
        let body = payload(size);
        self.exchange(&body, warm_up(n), WINDOW, None)?;
        let start = Instant::now();
        self.exchange(&body, n, WINDOW, None)?;
        let elapsed = start.elapsed();
        let mut h = histogram();
        self.exchange(&body, samples / 10, 1, None)?;
        self.exchange(&body, samples, 1, Some(&mut h))?;
        Ok(result(Transport::Ring, size, n, elapsed, &h))
    }

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
