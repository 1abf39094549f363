//! Executes one request record: the only code that touches job bytes.

use std::time::Instant;

use houndpool_cold::ColdError;
use houndpool_cold::{self as cold, ColdStore, PutOutcome};
use houndpool_protocol::control::HoundLimits;
use houndpool_protocol::envelope;
use houndpool_protocol::job::{
    CompletionHeader, CompletionStatus, EvacuateReceipt, FailCode, JobKind, RequestHeader,
    COMPLETION_FLAG_SPOOLED,
};
use houndpool_protocol::ProtocolError;

/// Where the body of a completion lives.
pub(crate) enum Body {
    /// The request's own body (Noop echo).
    Echo,
    /// The runner's output buffer (envelope or decoded evidence).
    Output,
    /// An Evacuate receipt.
    Receipt([u8; houndpool_protocol::job::EVACUATE_RECEIPT_LEN]),
    /// One byte (Erase: 1 if the object existed).
    Byte([u8; 1]),
    /// A failure message.
    Message(String),
}

/// Result of executing one request.
pub(crate) struct Executed {
    pub(crate) header: CompletionHeader,
    pub(crate) body: Body,
}

/// Runs jobs with reusable buffers.
pub(crate) struct JobRunner {
    limits: HoundLimits,
    store: Result<Box<dyn ColdStore>, String>,
    prefix: String,
    output: Vec<u8>,
    fetched: Vec<u8>,
}

impl JobRunner {
    pub(crate) fn new(
        limits: HoundLimits,
        store: Result<Box<dyn ColdStore>, String>,
        prefix: String,
    ) -> Self {
        JobRunner {
            limits,
            store,
            prefix,
            output: Vec::new(),
            fetched: Vec::new(),
        }
    }

    /// The output buffer of the last job (valid for `Body::Output`).
    pub(crate) fn output(&self) -> &[u8] {
        &self.output
    }

    /// Gives the store a chance to do background work (S3 spool drain) while idle. A failure
    /// there (target still down) is not the business of any job: it is retried next time.
    pub(crate) fn idle(&mut self) {
        if let Ok(store) = &mut self.store {
            let _ = store.background_work();
        }
    }

    /// Takes new S3 endpoint addresses / CA from the supervisor. A CA the store refuses
    /// makes every later storage job fail with that reason (the supervisor checked the PEM
    /// already, so this does not happen in practice).
    pub(crate) fn set_endpoints(&mut self, endpoints: &houndpool_protocol::control::ColdEndpoints) {
        if let Ok(store) = &mut self.store {
            if let Err(e) = store.set_endpoints(endpoints) {
                self.store = Err(e.to_string());
            }
        }
    }

    /// Executes the job whose header is `req` and body `body` (which starts with the evidence
    /// key when the header announces one).
    pub(crate) fn execute(&mut self, req: &RequestHeader, body: &[u8]) -> Executed {
        let (key, body) = match req.split_key(body) {
            Ok(split) => split,
            Err(e) => {
                return Executed {
                    header: CompletionHeader {
                        job_id: req.job_id,
                        kind: req.kind,
                        status: CompletionStatus::Failed(FailCode::InvalidRequest),
                        flags: 0,
                    },
                    body: Body::Message(e.to_string()),
                }
            }
        };
        let ok = |body| Executed {
            header: CompletionHeader {
                job_id: req.job_id,
                kind: req.kind,
                status: CompletionStatus::Ok,
                flags: 0,
            },
            body,
        };
        let result = match req.kind {
            JobKind::Noop => Ok(ok(Body::Echo)),
            JobKind::Encode => self.encode(req, body).map(|()| ok(Body::Output)),
            JobKind::Decode => self.decode(body).map(|()| ok(Body::Output)),
            JobKind::Evacuate => self.evacuate(req, key, body).map(|(receipt, spooled)| {
                let mut e = ok(Body::Receipt(receipt.to_bytes()));
                if spooled {
                    e.header.flags |= COMPLETION_FLAG_SPOOLED;
                }
                e
            }),
            JobKind::Restore => self.restore(req, key).map(|()| ok(Body::Output)),
            JobKind::Erase => self
                .erase(req, key)
                .map(|existed| ok(Body::Byte([existed as u8]))),
        };
        result.unwrap_or_else(|(code, message)| Executed {
            header: CompletionHeader {
                job_id: req.job_id,
                kind: req.kind,
                status: CompletionStatus::Failed(code),
                flags: 0,
            },
            body: Body::Message(
                houndpool_protocol::job::truncate_fail_message(&message).to_string(),
            ),
        })
    }

    fn check_evidence(&self, body: &[u8]) -> Result<(), (FailCode, String)> {
        if body.len() > self.limits.max_evidence_bytes as usize {
            return Err((
                FailCode::EvidenceTooLarge,
                format!(
                    "evidence of {} bytes exceeds the limit of {} bytes",
                    body.len(),
                    self.limits.max_evidence_bytes
                ),
            ));
        }
        Ok(())
    }

    fn encode(&mut self, req: &RequestHeader, body: &[u8]) -> Result<(), (FailCode, String)> {
        self.check_evidence(body)?;
        envelope::encode_into(body, u32::from(req.level), &mut self.output)
            .map(|_| ())
            .map_err(|e| classify_protocol(&e))
    }

    fn decode(&mut self, env: &[u8]) -> Result<(), (FailCode, String)> {
        envelope::decode_into(env, self.limits.max_output_bytes as usize, &mut self.output)
            .map(|_| ())
            .map_err(|e| classify_protocol(&e))
    }

    fn store(&mut self) -> Result<&mut Box<dyn ColdStore>, (FailCode, String)> {
        match &mut self.store {
            Ok(s) => Ok(s),
            Err(why) => Err((FailCode::ColdStorageUnavailable, why.clone())),
        }
    }

    fn evacuate(
        &mut self,
        req: &RequestHeader,
        key: Option<&str>,
        body: &[u8],
    ) -> Result<(EvacuateReceipt, bool), (FailCode, String)> {
        self.check_evidence(body)?;
        let t0 = Instant::now();
        let header = envelope::encode_into(body, u32::from(req.level), &mut self.output)
            .map_err(|e| classify_protocol(&e))?;
        let encode_ns = elapsed_ns(t0);
        let key = cold::object_key_for(&self.prefix, &req.evidence_id, key);
        let t1 = Instant::now();
        // Split borrows: the store and the output buffer are distinct fields.
        let envelope_bytes = &self.output;
        let outcome = match &mut self.store {
            Ok(s) => s.put(&key, envelope_bytes).map_err(|e| classify_cold(&e))?,
            Err(why) => return Err((FailCode::ColdStorageUnavailable, why.clone())),
        };
        let store_ns = elapsed_ns(t1);
        Ok((
            EvacuateReceipt {
                evidence_id: req.evidence_id,
                original_size: header.original_size,
                compressed_size: header.compressed_size,
                sha256: header.sha256,
                encode_ns,
                store_ns,
            },
            outcome == PutOutcome::Spooled,
        ))
    }

    fn restore(
        &mut self,
        req: &RequestHeader,
        key: Option<&str>,
    ) -> Result<(), (FailCode, String)> {
        let key = cold::object_key_for(&self.prefix, &req.evidence_id, key);
        let max_envelope = cold::max_envelope_len(self.limits.max_output_bytes as usize);
        let fetched = self
            .store()?
            .get(&key, max_envelope)
            .map_err(|e| classify_cold(&e))?;
        self.fetched = fetched;
        envelope::decode_into(
            &self.fetched,
            self.limits.max_output_bytes as usize,
            &mut self.output,
        )
        .map(|_| ())
        .map_err(|e| classify_protocol(&e))
    }

    fn erase(
        &mut self,
        req: &RequestHeader,
        key: Option<&str>,
    ) -> Result<bool, (FailCode, String)> {
        let key = cold::object_key_for(&self.prefix, &req.evidence_id, key);
        self.store()?.delete(&key).map_err(|e| classify_cold(&e))
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Maps an envelope error to the fail code the supervisor reports.
pub(crate) fn classify_protocol(e: &ProtocolError) -> (FailCode, String) {
    let code = match e {
        ProtocolError::EnvelopeOutputLimit { .. }
        | ProtocolError::EnvelopeSizeMismatch { exceeded: true, .. } => {
            FailCode::DecompressionLimit
        }
        ProtocolError::EvidenceTooLarge { .. } => FailCode::EvidenceTooLarge,
        ProtocolError::EnvelopeTruncated { .. }
        | ProtocolError::EnvelopeBadMagic { .. }
        | ProtocolError::EnvelopeUnsupportedVersion { .. }
        | ProtocolError::EnvelopeLengthMismatch { .. }
        | ProtocolError::EnvelopeBadHashField
        | ProtocolError::EnvelopeHashMismatch { .. }
        | ProtocolError::EnvelopeSizeMismatch { .. }
        | ProtocolError::EnvelopeInflate { .. } => FailCode::IntegrityViolation,
        _ => FailCode::Internal,
    };
    (code, e.to_string())
}

/// Maps a cold-storage error to the fail code the supervisor reports.
pub(crate) fn classify_cold(e: &ColdError) -> (FailCode, String) {
    let code = match e {
        ColdError::NotFound { .. } => FailCode::NotFound,
        ColdError::ColdUnavailable { .. } | ColdError::ColdNotConfigured => {
            FailCode::ColdStorageUnavailable
        }
        ColdError::ColdRejected { .. } => FailCode::ColdStorageRejected,
        ColdError::ObjectTooLarge { .. } => FailCode::DecompressionLimit,
        ColdError::AlreadyExists { .. } => FailCode::AlreadyExists,
        ColdError::Protocol(p) => return classify_protocol(p),
        _ => FailCode::Internal,
    };
    (code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bound_covers_incompressible_data() {
        assert!(cold::max_envelope_len(1 << 20) > (1 << 20) + envelope::HEADER_LEN + 18);
    }

    #[test]
    fn error_classes() {
        let (c, _) = classify_protocol(&ProtocolError::EnvelopeHashMismatch {
            expected: "a".into(),
            actual: "b".into(),
        });
        assert_eq!(c, FailCode::IntegrityViolation);
        let (c, _) = classify_protocol(&ProtocolError::EnvelopeSizeMismatch {
            declared: 1,
            produced: 2,
            exceeded: true,
        });
        assert_eq!(c, FailCode::DecompressionLimit);
        let (c, _) = classify_cold(&ColdError::NotFound { key: "k".into() });
        assert_eq!(c, FailCode::NotFound);
        let (c, _) = classify_cold(&ColdError::ColdUnavailable { reason: "x".into() });
        assert_eq!(c, FailCode::ColdStorageUnavailable);
    }
}
