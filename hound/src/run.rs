//! The hound's life: setup, confinement, handshake, job loop.

use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use houndpool_cold as cold;
use houndpool_protocol::control::{
    ColdTarget, Fatal, FsCommit, HoundTuning, Message, Ready, SandboxReport,
};
use houndpool_protocol::frame::MessageKind;
use houndpool_protocol::job::{JobKind, RequestHeader, COMPLETION_HEADER_LEN};
use houndpool_protocol::region::{
    CompletionWriter, HoundRegions, HoundState, RequestReader, StatusWriter,
};
use houndpool_protocol::wake::{BellListener, BellRinger};
use houndpool_protocol::HOUND_PROTOCOL_VERSION;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::channel::{Channel, Polled};
use crate::jobs::{Body, JobRunner};
use crate::sandbox::{self, SandboxContext};
use crate::{HoundError, HoundFds};
use crate::{EXIT_HANDSHAKE, EXIT_ORPHANED, EXIT_RUNTIME, EXIT_SANDBOX};

/// How long a hound waits for its `Setup`: a hang guard only, because the supervisor queues
/// `Setup` on the control socket before it starts the hound.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a confined hound waits for its `Hello`. Long, because the supervisor keeps one
/// hound started ahead of demand (`PoolConfig::prestart`) and replaces it after ten minutes;
/// the hound also exits at once when the control socket closes (supervisor gone). It waits
/// confined: the sandbox is applied before this wait begins.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(900);

/// Waits for the next control message until `timeout` (poll's timeout is capped well below
/// it, so it waits in steps).
fn recv_within(channel: &mut Channel, timeout: Duration) -> Result<Polled, HoundError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match channel.recv_timeout(left.min(Duration::from_secs(60)))? {
            Polled::Nothing if !left.is_zero() => continue,
            other => return Ok(other),
        }
    }
}

/// The first message of kind `expected` within `timeout`, or the exit code after telling the
/// supervisor why not (`Fatal`).
fn expect_message(
    channel: &mut Channel,
    timeout: Duration,
    expected: MessageKind,
) -> Result<Message, i32> {
    match recv_within(channel, timeout) {
        Ok(Polled::Message(m)) if m.kind() == expected => Ok(*m),
        Ok(Polled::Message(m)) => Err(fatal(
            channel,
            EXIT_HANDSHAKE,
            format!("expected {}, got {}", expected.name(), m.kind().name()),
        )),
        Ok(Polled::Nothing) => Err(fatal(
            channel,
            EXIT_HANDSHAKE,
            format!("no {} within {timeout:?}", expected.name()),
        )),
        Ok(Polled::Closed) => Err(EXIT_ORPHANED),
        Err(e) => Err(fatal(
            channel,
            EXIT_HANDSHAKE,
            format!("waiting for {}: {e}", expected.name()),
        )),
    }
}

/// Refuses a peer speaking another protocol version.
fn check_version(channel: &Channel, what: &str, version: u16) -> Result<(), i32> {
    if version == HOUND_PROTOCOL_VERSION {
        return Ok(());
    }
    Err(fatal(
        channel,
        EXIT_HANDSHAKE,
        format!(
            "supervisor's {what} speaks protocol {version}, this hound {HOUND_PROTOCOL_VERSION}"
        ),
    ))
}

/// Runs a hound to completion; returns the process exit code.
///
/// Order: `Setup` (already queued) → map regions, open the store → confine ([`sandbox`]) →
/// wait for `Hello`, confined (a prestarted spare waits here) → `Ready` with the sandbox
/// report → job loop. A `required` layer that cannot be enforced is answered at once with a
/// `Ready` carrying the report up to the failed layer (which the supervisor refuses, naming
/// the layer), and the hound exits with `EXIT_SANDBOX` without waiting for `Hello`.
pub(crate) fn run(fds: HoundFds) -> i32 {
    // Read before anything else: the supervisor that started us, for the death-signal check.
    let parent = nix::unistd::getppid().as_raw();
    let HoundFds {
        control,
        request_region,
        completion_region,
        request_bell,
        completion_bell,
    } = fds;
    let mut channel = Channel::new(control);

    let setup = match expect_message(&mut channel, SETUP_TIMEOUT, MessageKind::Setup) {
        Ok(Message::Setup(s)) => s,
        Ok(_) => return EXIT_HANDSHAKE, // expect_message returns only the expected kind
        Err(code) => return code,
    };
    if let Err(code) = check_version(&channel, "setup", setup.protocol_version) {
        return code;
    }
    let regions = match HoundRegions::map(request_region, completion_region) {
        Ok(r) => r,
        Err(e) => return fatal(&channel, EXIT_HANDSHAKE, format!("mapping regions: {e}")),
    };
    let (reader, writer, status) = regions.split();
    // Our ends of the two doorbell pipes: we sleep on the request one and ring the completion
    // one; the supervisor holds the other ends (no description is shared with it).
    let request_bell = BellListener::from_fd(request_bell);
    let completion_bell = BellRinger::from_fd(completion_bell);

    // Open the store before confinement: it may create its root directory.
    let (store, prefix) = open_store(&setup.cold, &setup.tuning, &setup.limits);
    let ctx = SandboxContext {
        keep_fds: vec![
            channel.raw_fd(),
            request_bell.as_fd_raw(),
            completion_bell.as_fd_raw(),
        ],
        rw_dirs: rw_dirs(&setup.cold),
        tcp_connect_port: tcp_port(&setup.cold),
        threads: matches!(setup.cold, ColdTarget::S3(_)) && setup.tuning.s3_concurrency > 1,
        limits: setup.limits.clone(),
        expected_parent: parent,
    };
    let mut report = SandboxReport::default();
    match sandbox::apply_into(&setup.sandbox, &ctx, &mut report) {
        Ok(()) => {}
        Err(HoundError::RequiredLayerUnavailable { .. }) => {
            // The report names the failed layer and what the kernel said; the supervisor turns
            // it into its typed refusal. Best effort: it may already be gone.
            let _ = channel.send(&ready(report));
            return EXIT_SANDBOX;
        }
        Err(e) => return fatal(&channel, EXIT_SANDBOX, e.to_string()),
    }

    // Confined from here on: wait for the slot.
    let hello = match expect_message(&mut channel, HELLO_TIMEOUT, MessageKind::Hello) {
        Ok(Message::Hello(h)) => h,
        Ok(_) => return EXIT_HANDSHAKE,
        Err(code) => return code,
    };
    if let Err(code) = check_version(&channel, "hello", hello.protocol_version) {
        return code;
    }
    if let Err(e) = channel.send(&ready(report)) {
        return fatal(&channel, EXIT_HANDSHAKE, e.to_string());
    }

    if ctx.threads {
        limit_malloc_arenas();
    }
    let mut runner = JobRunner::new(setup.limits.clone(), store, prefix);
    if matches!(setup.cold, ColdTarget::S3(_)) {
        // The supervisor sends the S3 endpoint's addresses right after Hello (we cannot
        // resolve names under the sandbox); later changes arrive while idle.
        match channel.recv_timeout(SETUP_TIMEOUT) {
            Ok(Polled::Message(m)) => match *m {
                Message::ColdEndpoints(e) => runner.set_endpoints(&e),
                other => {
                    return fatal(
                        &channel,
                        EXIT_HANDSHAKE,
                        format!("expected ColdEndpoints, got {:?}", other.kind()),
                    )
                }
            },
            Ok(Polled::Nothing) => {
                return fatal(
                    &channel,
                    EXIT_HANDSHAKE,
                    "no ColdEndpoints after Hello".into(),
                )
            }
            Ok(Polled::Closed) => return EXIT_ORPHANED,
            Err(e) => return fatal(&channel, EXIT_HANDSHAKE, format!("handshake: {e}")),
        }
    }
    let mut lp = JobLoop {
        tuning: setup.tuning,
        channel,
        reader,
        writer,
        status,
        request_bell,
        completion_bell,
        runner,
        unannounced: Unannounced::default(),
        staged: 0,
    };
    lp.serve()
}

/// Caps glibc's malloc at two arenas before upload threads exist. Each new arena reserves 64 MiB
/// of address space, which counts against the hound's RLIMIT_AS memory budget: sixteen upload
/// threads could otherwise reserve most of it and leave a large envelope's allocation to fail.
/// Upload threads mostly wait on the network, so sharing arenas costs nothing measurable.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; it is called while the hound
        // is still single-threaded (before any upload thread starts).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The `Ready` answer carrying `report`.
fn ready(report: SandboxReport) -> Message {
    Message::Ready(Ready {
        pid: std::process::id(),
        protocol_version: HOUND_PROTOCOL_VERSION,
        sandbox: report,
    })
}

/// Opens the cold store the supervisor named. A filesystem store commits through the journal
/// unless `cold.fs_commit` says per file; a journal is sealed before it would outgrow one
/// envelope of this hound's evidence limit plus 32 KiB ([`cold::fs::journal_bound`]), which
/// keeps it 32 KiB below RLIMIT_FSIZE (`sandbox::rlimits::file_size_limit`).
fn open_store(
    target: &ColdTarget,
    tuning: &HoundTuning,
    limits: &houndpool_protocol::control::HoundLimits,
) -> (Result<Box<dyn houndpool_cold::ColdStore>, String>, String) {
    let fs_commit = match tuning.fs_commit {
        FsCommit::PerFile => cold::fs::Commit::PerFile,
        FsCommit::Journal => cold::fs::Commit::Journal {
            max_bytes: cold::fs::journal_bound(cold::max_envelope_len(
                limits.max_evidence_bytes as usize,
            )),
            max_age: cold::fs::JOURNAL_MAX_AGE,
        },
    };
    let prefix = match target {
        ColdTarget::None => String::new(),
        ColdTarget::Filesystem { prefix, .. } => prefix.clone(),
        ColdTarget::S3(t) => t.prefix.clone(),
    };
    (
        cold::open_for_hound(
            target,
            usize::from(tuning.s3_concurrency),
            (tuning.s3_deadline_ms > 0)
                .then(|| Duration::from_millis(u64::from(tuning.s3_deadline_ms))),
            cold::max_envelope_len(limits.max_evidence_bytes as usize),
            fs_commit,
        )
        .map_err(|e| e.to_string()),
        prefix,
    )
}

fn rw_dirs(target: &ColdTarget) -> Vec<PathBuf> {
    match target {
        ColdTarget::None => vec![],
        ColdTarget::Filesystem { root, .. } => vec![PathBuf::from(root)],
        ColdTarget::S3(t) => t.spool_dir.iter().map(PathBuf::from).collect(),
    }
}

fn tcp_port(target: &ColdTarget) -> Option<u16> {
    let ColdTarget::S3(t) = target else {
        return None;
    };
    let url = url::Url::parse(&t.endpoint).ok()?;
    url.port_or_known_default()
}

fn fatal(channel: &Channel, code: i32, message: String) -> i32 {
    // Best effort: the supervisor may already be gone.
    let _ = channel.send(&Message::Fatal(Fatal { message }));
    code
}

trait RawDoorbell {
    fn as_fd_raw(&self) -> std::os::fd::RawFd;
}
impl<T: std::os::fd::AsFd> RawDoorbell for T {
    fn as_fd_raw(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

struct JobLoop {
    tuning: HoundTuning,
    channel: Channel,
    reader: RequestReader,
    writer: CompletionWriter,
    status: StatusWriter,
    request_bell: BellListener,
    completion_bell: BellRinger,
    runner: JobRunner,
    /// Completions published while the supervisor slept, not yet announced by its doorbell.
    unannounced: Unannounced,
    /// Completions staged in the completion ring and not yet published (see
    /// [`PUBLISH_BATCH`]).
    staged: u32,
}

/// Most completions staged before they are published with one store of the tail.
///
/// Publishing moves the cache line with the completion tail to the supervisor's core; for a
/// job that is only a copy (a Noop echo) that costs as much as the job, so while the next
/// request is already known to be waiting and is a Noop, a completion is staged and published
/// with the next ones, up to this many. Any other next job (an encode costs tens of
/// microseconds even for a small body, against about 0.1 µs for a publish), an empty ring, a
/// full completion ring and an error publish at once. Same bound as the `ring` row's echo
/// thread in hound-stress.
pub(crate) const PUBLISH_BATCH: u32 = 8;

/// Completions a sleeping supervisor has not been woken for.
///
/// Waking the supervisor costs two context switches on a busy machine, more than a small job.
/// While the next request in this hound's ring is a quick one (CPU-only, body at most
/// [`QUICK_BODY`]), the doorbell is deferred until [`RING_BATCH`] completions or
/// [`RING_DELAY`] have accumulated; a hound whose ring runs empty, whose next job may block on
/// storage, or whose completion ring is full, rings at once. So a completion waits for its
/// doorbell at most for one quick job beyond the delay bound.
#[derive(Default)]
struct Unannounced {
    count: u32,
    since: Option<Instant>,
}

/// Completions that may wait for one doorbell while more requests are queued.
const RING_BATCH: u32 = 4;
/// Largest body of a job that counts as quick for deferring the doorbell (a 64 KiB encode
/// takes well under a millisecond on one core).
const QUICK_BODY: usize = 64 * 1024;
/// The longest a completion may wait for its doorbell while more requests are queued (checked
/// when the next job finishes).
const RING_DELAY: Duration = Duration::from_micros(200);

/// What one look at the request ring produced.
enum Step {
    Worked,
    Empty,
    Panicked,
}

impl JobLoop {
    fn serve(&mut self) -> i32 {
        let spin = Duration::from_micros(u64::from(self.tuning.spin_us));
        let idle_poll = Duration::from_millis(u64::from(self.tuning.idle_poll_ms.max(1)));
        let mut draining = false;
        let mut last_work = Instant::now();
        // Work since the clock was last read: the spin is timed from the first empty look
        // after work (one clock read per run of jobs, not one per job).
        let mut worked = false;
        self.status.set_state(HoundState::Idle);
        loop {
            match self.step() {
                Ok(Step::Worked) => {
                    worked = true;
                    continue;
                }
                Ok(Step::Panicked) => return EXIT_RUNTIME,
                Ok(Step::Empty) => {}
                Err(e) => {
                    // What is done is reported (best effort: the error may be the ring's).
                    let _ = self.flush();
                    return fatal(&self.channel, EXIT_RUNTIME, e.to_string());
                }
            }
            if std::mem::take(&mut worked) {
                last_work = Instant::now();
            }
            if draining {
                return 0;
            }
            if last_work.elapsed() < spin {
                std::thread::yield_now();
                continue;
            }
            // Announce, re-check, then sleep (see protocol::region for the ordering argument).
            self.status.set_state(HoundState::Sleeping);
            self.status.announce_sleep();
            if self.reader.has_pending() {
                self.status.cancel_sleep();
                self.status.set_state(HoundState::Idle);
                continue;
            }
            // With more background work waiting (a spool backlog), the poll only looks at
            // the doorbell and the control channel (a Shutdown is seen between rounds), and
            // the loop comes back to the ring, then to the next round.
            let wait = if self.runner.idle() {
                Duration::ZERO
            } else {
                idle_poll
            };
            let control_ready = match self.sleep(wait) {
                Ok(r) => r,
                Err(e) => return fatal(&self.channel, EXIT_RUNTIME, e.to_string()),
            };
            self.status.cancel_sleep();
            self.request_bell.drain();
            self.status.beat();
            self.status.set_state(HoundState::Idle);
            last_work = Instant::now();
            if control_ready {
                match self.channel.try_recv() {
                    Ok(Polled::Nothing) => {}
                    Ok(Polled::Message(m)) => match *m {
                        Message::Shutdown(_) => {
                            self.status.set_state(HoundState::Draining);
                            draining = true;
                        }
                        Message::ColdEndpoints(e) => self.runner.set_endpoints(&e),
                        other => {
                            return fatal(
                                &self.channel,
                                EXIT_RUNTIME,
                                format!("unexpected control message {:?}", other.kind()),
                            )
                        }
                    },
                    Ok(Polled::Closed) => return EXIT_ORPHANED,
                    Err(e) => return fatal(&self.channel, EXIT_RUNTIME, e.to_string()),
                }
            }
        }
    }

    /// Publishes the staged completions (one tail store), counts them done and announces
    /// them ([`Self::announce`]). A no-op when none is staged.
    fn flush(&mut self) -> Result<(), HoundError> {
        if self.staged == 0 {
            return Ok(());
        }
        let n = std::mem::take(&mut self.staged);
        self.writer.publish();
        self.status.jobs_done(u64::from(n));
        self.status.beat();
        self.announce(n)
    }

    /// After a job's completion was staged: publishes now unless the next request is already
    /// known to wait and is a Noop and fewer than [`PUBLISH_BATCH`] are staged.
    fn staged_one(&mut self) -> Result<(), HoundError> {
        self.staged += 1;
        if self.staged < PUBLISH_BATCH && self.reader.has_known_next() && self.next_is_noop() {
            return Ok(());
        }
        self.flush()
    }

    /// Rings the supervisor's doorbell for the `n` completions just published if it announced
    /// sleep, unless more requests are queued and the batch bounds are not reached (see
    /// [`Unannounced`]).
    fn announce(&mut self, n: u32) -> Result<(), HoundError> {
        if !self.writer.supervisor_sleeping() {
            // Awake: it will see every completion published so far (the Dekker re-check in
            // `protocol::region` covers one it is about to sleep over).
            self.unannounced = Unannounced::default();
            return Ok(());
        }
        let u = &mut self.unannounced;
        u.count = u.count.saturating_add(n);
        let since = *u.since.get_or_insert_with(Instant::now);
        let (count, since) = (u.count, since);
        if count >= RING_BATCH || since.elapsed() >= RING_DELAY || !self.next_is_quick() {
            self.unannounced = Unannounced::default();
            self.completion_bell.ring()?;
        }
        Ok(())
    }

    /// Whether the next queued request is a Noop (see [`PUBLISH_BATCH`]). False for an empty
    /// ring and for anything unreadable (the next `step` reports that).
    fn next_is_noop(&mut self) -> bool {
        match self.reader.peek() {
            Ok(Some(payload)) => {
                RequestHeader::parse(payload).is_ok_and(|(req, _)| req.kind == JobKind::Noop)
            }
            _ => false,
        }
    }

    /// Whether the next queued request is a quick CPU-only job (see [`Unannounced`]). False for
    /// an empty ring and for anything unreadable (the next `step` reports that).
    fn next_is_quick(&mut self) -> bool {
        match self.reader.peek() {
            Ok(Some(payload)) => RequestHeader::parse(payload).is_ok_and(|(req, body)| {
                matches!(req.kind, JobKind::Noop | JobKind::Encode | JobKind::Decode)
                    && body.len() <= QUICK_BODY
            }),
            _ => false,
        }
    }

    /// Sleeps on the request doorbell and the control socket. Returns whether the control
    /// socket is readable (or hung up).
    fn sleep(&self, timeout: Duration) -> Result<bool, HoundError> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(
                std::os::fd::AsFd::as_fd(&self.request_bell),
                PollFlags::POLLIN,
            ),
            PollFd::new(self.channel.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(HoundError::Channel(format!("poll: {e}"))),
        }
        Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
    }

    /// Executes the record at the head of the request ring, if any (a run of Evacuate jobs
    /// as one batch, see [`JobLoop::step_batch`]).
    fn step(&mut self) -> Result<Step, HoundError> {
        let Some(payload) = self.reader.peek()? else {
            return Ok(Step::Empty);
        };
        self.status.set_state(HoundState::Busy);
        let (req, body) = RequestHeader::parse(payload)?;
        if req.kind == JobKind::Evacuate {
            return self.step_batch();
        }
        self.status.set_current_job(req.job_id);
        let runner = &mut self.runner;
        let executed = catch_unwind(AssertUnwindSafe(|| runner.execute(&req, body)));
        let (executed, panicked) = match executed {
            Ok(e) => (e, false),
            Err(panic) => {
                let what = panic_text(&*panic);
                (
                    crate::jobs::Executed {
                        header: houndpool_protocol::job::CompletionHeader {
                            job_id: req.job_id,
                            kind: req.kind,
                            status: houndpool_protocol::job::CompletionStatus::Failed(
                                houndpool_protocol::job::FailCode::Internal,
                            ),
                            flags: 0,
                        },
                        body: Body::Message(format!("hound panicked: {what}")),
                    },
                    true,
                )
            }
        };
        let head: [u8; COMPLETION_HEADER_LEN] = executed.header.to_bytes();
        let body_bytes: &[u8] = match &executed.body {
            Body::Echo => body,
            Body::Output => self.runner.output(),
            Body::Receipt(r) => r,
            Body::Byte(b) => b,
            Body::Message(m) => m.as_bytes(),
        };
        stage_completion(
            &mut self.writer,
            &self.completion_bell,
            &mut self.channel,
            &[&head, body_bytes],
        )?;
        self.reader.advance();
        self.status.set_current_job(0);
        if panicked {
            self.staged += 1;
            self.flush()?;
            return Ok(Step::Panicked);
        }
        self.staged_one()?;
        Ok(Step::Worked)
    }
}

/// Most Evacuate jobs stored as one batch (one group commit, or one round of concurrent
/// uploads).
const BATCH_MAX_JOBS: usize = 64;
/// A batch takes no further job once its evidence adds up to this many bytes (its first job
/// is always taken, whatever its size), bounding the envelope buffers a batch holds.
const BATCH_MAX_BYTES: usize = 4 << 20;

impl JobLoop {
    /// Stores the Evacuate jobs waiting at the head of the request ring as one batch: takes
    /// what is there now (never waits for more), up to [`BATCH_MAX_JOBS`] (or the store's
    /// `max_batch`, the S3 upload concurrency) / [`BATCH_MAX_BYTES`], stopping at the first job of another kind; encodes each as it is
    /// taken; stores them all with one `put_batch`; then publishes their completions in
    /// request order (the supervisor matches each completion with the front of its
    /// in-flight queue). A job alone is a batch of one, so it is not delayed.
    ///
    /// The request cursor moves past each job as it is taken: the supervisor keeps a record's
    /// bytes until it consumes the record's completion, and only the hound reads its cursor.
    fn step_batch(&mut self) -> Result<Step, HoundError> {
        let runner = &mut self.runner;
        let reader = &mut self.reader;
        let status = &self.status;
        let mut taken: Vec<RequestHeader> = Vec::new();
        let collected = catch_unwind(AssertUnwindSafe(|| {
            let mut bytes = 0usize;
            let max_jobs = BATCH_MAX_JOBS.min(runner.max_batch());
            while taken.len() < max_jobs && bytes < BATCH_MAX_BYTES {
                // A record that cannot be read or parsed ends the batch; the next `step`
                // reports it.
                let Ok(Some(payload)) = reader.peek() else {
                    break;
                };
                let Ok((req, body)) = RequestHeader::parse(payload) else {
                    break;
                };
                if req.kind != JobKind::Evacuate
                    || (!taken.is_empty() && bytes.saturating_add(body.len()) > BATCH_MAX_BYTES)
                {
                    break;
                }
                status.set_current_job(req.job_id);
                taken.push(req);
                runner.stage_evacuate(&req, body);
                bytes = bytes.saturating_add(body.len());
                reader.advance();
                status.beat();
            }
            runner.finish_batch()
        }));
        let (done, panicked) = match collected {
            Ok(done) => (done, false),
            Err(panic) => {
                self.runner.abandon_batch();
                let what = panic_text(&*panic);
                let done = taken
                    .iter()
                    .map(|req| {
                        crate::jobs::failed(
                            req,
                            houndpool_protocol::job::FailCode::Internal,
                            &format!("hound panicked: {what}"),
                        )
                    })
                    .collect();
                (done, true)
            }
        };
        for executed in done {
            let head: [u8; COMPLETION_HEADER_LEN] = executed.header.to_bytes();
            let body_bytes: &[u8] = match &executed.body {
                Body::Receipt(r) => r,
                Body::Message(m) => m.as_bytes(),
                // Evacuate completions carry a receipt or a message only.
                Body::Echo | Body::Output | Body::Byte(_) => &[],
            };
            stage_completion(
                &mut self.writer,
                &self.completion_bell,
                &mut self.channel,
                &[&head, body_bytes],
            )?;
            self.staged += 1;
        }
        // The batch's completions are all ready now: one publish for them.
        self.flush()?;
        self.status.set_current_job(0);
        Ok(if panicked {
            Step::Panicked
        } else {
            Step::Worked
        })
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Stages a completion (published by `JobLoop::flush`), waiting (spin, then short sleeps) while
/// the ring is full. A full ring first publishes what is staged, then rings the supervisor's
/// doorbell if it announced sleep (it may be sleeping over deferred completions); announcing
/// the new one is the caller's (`JobLoop::flush`).
fn stage_completion(
    writer: &mut CompletionWriter,
    bell: &BellRinger,
    channel: &mut Channel,
    parts: &[&[u8]],
) -> Result<(), HoundError> {
    let mut waited = 0u32;
    while !writer.stage(parts)? {
        // The supervisor frees space only for what it can see: publish before waiting (and
        // before the fence in `supervisor_sleeping`, as the wake-up argument requires).
        writer.publish();
        if waited == 0 && writer.supervisor_sleeping() {
            bell.ring()?;
        }
        waited += 1;
        if waited < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(50));
            // Every ~50 ms, make sure there is still someone to consume.
            if waited.is_multiple_of(1000) {
                if let Polled::Closed = channel.try_recv()? {
                    return Err(HoundError::Channel(
                        "supervisor closed the channel while the completion ring was full".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}
