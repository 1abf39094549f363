//! Between the pool's types and the daemon's wire messages: encoding a message (or the final
//! error frame), an outcome's wire form, refusal reasons, and the stats reply.

use std::sync::atomic::Ordering;
use std::time::Duration;

use houndpool_protocol::daemon::{
    DaemonMessage, DropKind, ErrorCode, ErrorNotice, FailureKind, JobOutcome, OutcomeReceipt,
    OutcomeResult, RefuseReason, StatsReply,
};
use tracing::warn;

use crate::daemon::{flow, State};
use crate::{DropReason, FailReason, Outcome, OutcomeKind, SubmitError};

pub(super) fn encode(msg: &DaemonMessage, limit: u32) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match msg.encode_frame(&mut out, limit) {
        Ok(()) => Some(out),
        Err(e) => {
            warn!(kind = msg.kind().name(), error = %e, "cannot encode a daemon message");
            None
        }
    }
}

pub(super) fn error_frame(code: ErrorCode, message: impl Into<String>) -> Vec<u8> {
    let msg = DaemonMessage::Error(ErrorNotice {
        code,
        message: message.into(),
    });
    encode(&msg, u32::MAX).unwrap_or_default()
}

pub(super) fn refuse_reason(e: &SubmitError) -> RefuseReason {
    match e {
        SubmitError::PoolExhausted => RefuseReason::PoolExhausted,
        SubmitError::DeferQueueFull { .. } => RefuseReason::DeferQueueFull,
        SubmitError::EvidenceTooLarge { .. } => RefuseReason::EvidenceTooLarge,
        SubmitError::EmptyEvidence { .. } => RefuseReason::EmptyEvidence,
        SubmitError::InvalidJob { .. } | SubmitError::InvalidKey { .. } => RefuseReason::InvalidJob,
        SubmitError::ShutDown => RefuseReason::ShuttingDown,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The wire form of an outcome.
pub(crate) fn to_wire(request_id: u64, o: Outcome) -> JobOutcome {
    let result = match o.result {
        OutcomeKind::Completed(r) => OutcomeResult::Completed(OutcomeReceipt {
            hound: r.hound,
            key: r.key,
            original_size: r.original_size,
            compressed_size: r.compressed_size,
            sha256: r.sha256,
            encode_us: r.encode_time.map(micros),
            store_us: r.store_time.map(micros),
            spooled: r.spooled,
            existed: r.existed,
            payload: r.payload,
        }),
        OutcomeKind::Failed(reason) => {
            let mut message = reason.to_string();
            if message.len() > flow::MAX_MESSAGE {
                let mut cut = flow::MAX_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            let (kind, code) = match reason {
                FailReason::Job { code, .. } => (FailureKind::Job, code as u16),
                FailReason::HoundKilled { .. } => (FailureKind::HoundKilled, 0),
                FailReason::OutOfMemory => (FailureKind::OutOfMemory, 0),
                FailReason::ProtocolViolation { .. } => (FailureKind::ProtocolViolation, 0),
                FailReason::Poison { .. } => (FailureKind::Poison, 0),
            };
            OutcomeResult::Failed {
                kind,
                code,
                message,
            }
        }
        OutcomeKind::TimedOut => OutcomeResult::TimedOut,
        OutcomeKind::Dropped(DropReason::Evicted { by }) => OutcomeResult::Dropped {
            reason: DropKind::Evicted,
            by: Some(by),
        },
        OutcomeKind::Dropped(DropReason::Shutdown) => OutcomeResult::Dropped {
            reason: DropKind::Shutdown,
            by: None,
        },
        OutcomeKind::Dropped(DropReason::Cancelled) => OutcomeResult::Dropped {
            reason: DropKind::Cancelled,
            by: None,
        },
    };
    JobOutcome {
        request_id,
        job_id: o.job_id.0,
        evidence_id: *o.evidence_id.as_bytes(),
        kind: o.kind,
        severity: o.severity,
        attempt: o.attempts,
        latency_us: micros(o.latency),
        result,
    }
}

pub(super) fn outcome_kind_name(r: &OutcomeResult) -> &'static str {
    match r {
        OutcomeResult::Completed(_) => "completed",
        OutcomeResult::Failed { .. } => "failed",
        OutcomeResult::TimedOut => "timed_out",
        OutcomeResult::Dropped { .. } => "dropped",
    }
}

/// Pool and daemon counters for a stats request.
pub(crate) fn stats_reply(state: &State, request_id: u64, connection_in_flight: u64) -> StatsReply {
    let s = state.pool.stats();
    StatsReply {
        request_id,
        submitted: s.submitted,
        accepted: s.accepted,
        refused_exhausted: s.refused.exhausted,
        refused_defer_full: s.refused.defer_full,
        refused_too_large: s.refused.too_large,
        refused_invalid: s.refused.invalid,
        refused_shutdown: s.refused.shutdown,
        completed: s.completed,
        failed: s.failed,
        timed_out: s.timed_out,
        dropped: s.dropped,
        in_flight: s.in_flight,
        in_rings: s.in_rings,
        deferred: s.deferred,
        retrying: s.retrying,
        hounds_target: u32::try_from(state.pool.config().hound_count()).unwrap_or(u32::MAX),
        hounds_ready: u32::try_from(s.hounds.iter().filter(|h| h.pid.is_some()).count())
            .unwrap_or(u32::MAX),
        draining: state.draining.load(Ordering::Relaxed),
        connections_open: state.conns_open.load(Ordering::Relaxed) as u64,
        undelivered: state.metrics.undelivered.get(),
        connection_in_flight,
    }
}
