//! Completions: each one (untrusted) is checked against the job at the front of its hound's
//! ring and turned into that job's outcome, or into the reason the hound must be killed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use houndpool_protocol::envelope;
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, JobKind, COMPLETION_FLAG_SPOOLED,
    MAX_FAIL_MESSAGE,
};

use super::HoundProc;
use crate::job::{FailReason, OutcomeKind, Receipt};
use crate::state::Books;

/// Validates one completion (untrusted) against the job at the front of slot `i`'s ring,
/// delivers its outcome and frees its ring space. `Err` means the hound must be killed.
pub(super) fn handle_completion(
    sh: &Books,
    i: usize,
    h: &HoundProc,
    payload: &[u8],
) -> Result<(), String> {
    let (hdr, body) = CompletionHeader::parse(payload).map_err(|e| e.to_string())?;
    let slot = &sh.slots[i];
    let (meta, result) = {
        let mut guard = slot.lock();
        let conn = guard
            .as_mut()
            .ok_or_else(|| "completion from a hound whose slot is closed".to_string())?;
        let front = conn
            .inflight
            .front()
            .ok_or_else(|| format!("completion for job {} with no job in flight", hdr.job_id))?;
        if front.job_id != hdr.job_id {
            return Err(format!(
                "completion for job {} but job {} is next",
                hdr.job_id, front.job_id
            ));
        }
        if front.kind != hdr.kind {
            return Err(format!(
                "completion kind {} for a {} job",
                hdr.kind.name(),
                front.kind.name()
            ));
        }
        let result = interpret(sh, i as u32, front, &hdr, body)?;
        let meta = conn
            .inflight
            .pop_front()
            .ok_or_else(|| "in-flight queue emptied under the lock".to_string())?;
        conn.front_since = Instant::now();
        slot.in_flight.store(conn.inflight.len(), Ordering::Relaxed);
        (meta, result)
    };
    h.reader.release_requests(meta.pos.end);
    slot.completed.fetch_add(1, Ordering::Relaxed);
    if meta.cancelled {
        return Ok(()); // withdrawn by Pool::cancel: its outcome was delivered then
    }
    sh.deliver(Books::outcome_for(&meta, meta.tries, result));
    Ok(())
}

/// Turns a validated completion into an outcome; `Err` if the body is impossible for the job.
fn interpret(
    sh: &Books,
    hound: u32,
    job: &crate::state::InFlight,
    hdr: &CompletionHeader,
    body: &[u8],
) -> Result<OutcomeKind, String> {
    if hdr.flags & COMPLETION_FLAG_SPOOLED != 0 && job.kind != JobKind::Evacuate {
        return Err("spooled flag on a job that stores nothing".into());
    }
    let code = match hdr.status {
        CompletionStatus::Ok => None,
        CompletionStatus::Failed(code) => Some(code),
    };
    if code == Some(houndpool_protocol::job::FailCode::ColdStorageUnavailable)
        || hdr.flags & COMPLETION_FLAG_SPOOLED != 0
    {
        crate::cold::note_unreachable(&sh.config);
    }
    if let Some(code) = code {
        if body.len() > MAX_FAIL_MESSAGE {
            return Err(format!("failure message of {} bytes", body.len()));
        }
        return Ok(OutcomeKind::Failed(FailReason::Job {
            code,
            message: String::from_utf8_lossy(body).into_owned(),
        }));
    }
    let key = || {
        sh.key_prefix.as_deref().map(|p| {
            let key = sh.keys.get(job.job_id);
            houndpool_shared::cold::object_key_for(p, &job.evidence_id, key.as_deref())
        })
    };
    let mut r = Receipt {
        hound,
        ..Receipt::default()
    };
    match job.kind {
        JobKind::Noop => {
            if body.len() != job.body_len as usize {
                return Err(format!(
                    "echo of {} bytes for a {}-byte request",
                    body.len(),
                    job.body_len
                ));
            }
            r.payload = Some(body.to_vec());
        }
        JobKind::Encode => {
            let eh = envelope::parse_header(body).map_err(|e| format!("envelope: {e}"))?;
            if eh.original_size != job.body_len {
                return Err(format!(
                    "envelope of {} original bytes for {} bytes of evidence",
                    eh.original_size, job.body_len
                ));
            }
            r.original_size = Some(u64::from(eh.original_size));
            r.compressed_size = Some(u64::from(eh.compressed_size));
            r.sha256 = Some(eh.sha256);
            r.payload = Some(body.to_vec());
        }
        JobKind::Evacuate => {
            let rc = EvacuateReceipt::parse(body).map_err(|e| e.to_string())?;
            if rc.evidence_id != job.evidence_id {
                return Err("receipt names another evidence id".into());
            }
            if rc.original_size != job.body_len {
                return Err(format!(
                    "receipt says {} original bytes for {} bytes of evidence",
                    rc.original_size, job.body_len
                ));
            }
            r.key = key();
            r.original_size = Some(u64::from(rc.original_size));
            r.compressed_size = Some(u64::from(rc.compressed_size));
            r.sha256 = Some(rc.sha256);
            r.encode_time = Some(Duration::from_nanos(rc.encode_ns));
            r.store_time = Some(Duration::from_nanos(rc.store_ns));
            r.spooled = hdr.flags & COMPLETION_FLAG_SPOOLED != 0;
        }
        JobKind::Restore | JobKind::Decode => {
            if body.len() > sh.config.max_output_bytes {
                return Err(format!(
                    "decoded output of {} bytes exceeds the limit of {}",
                    body.len(),
                    sh.config.max_output_bytes
                ));
            }
            if job.kind == JobKind::Restore {
                r.key = key();
            }
            r.original_size = Some(body.len() as u64);
            r.payload = Some(body.to_vec());
        }
        JobKind::Erase => {
            match body {
                [0] => r.existed = Some(false),
                [1] => r.existed = Some(true),
                _ => return Err("erase completion body is not one 0/1 byte".into()),
            }
            r.key = key();
        }
    }
    Ok(OutcomeKind::Completed(r))
}
