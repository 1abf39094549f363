//! Executes one request record: the only code that touches job bytes.

use std::time::Instant;

use houndpool_cold::ColdError;
use houndpool_cold::{self as cold, ColdStore, KeyOrigin, PutItem, PutOutcome};
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
    /// The Evacuate jobs of the batch being collected, in request order.
    batch: Vec<Staged>,
    /// Envelope buffers, one per batch member, reused across batches.
    envelopes: Vec<Vec<u8>>,
}

/// One Evacuate job of a batch: encoded (waiting for the store) or already failed.
struct Staged {
    req: RequestHeader,
    /// Object key, envelope header and encode time; or why the job failed before storing.
    state: Result<(String, envelope::EnvelopeHeader, u64), (FailCode, String)>,
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
            batch: Vec::new(),
            envelopes: Vec::new(),
        }
    }

    /// Most Evacuate jobs one batch should hold, as the store prefers (1 without a store).
    pub(crate) fn max_batch(&self) -> usize {
        match &self.store {
            Ok(s) => s.max_batch().max(1),
            Err(_) => 1,
        }
    }

    /// Adds the Evacuate job `req` / `body` to the batch: checks and encodes it now (into a
    /// buffer of its own), stores it in [`JobRunner::finish_batch`]. The request bytes are not
    /// needed after this returns.
    pub(crate) fn stage_evacuate(&mut self, req: &RequestHeader, body: &[u8]) {
        let n = self.batch.len();
        if self.envelopes.len() <= n {
            self.envelopes.push(Vec::new());
        }
        let state = req
            .split_key(body)
            .map_err(|e| (FailCode::InvalidRequest, e.to_string()))
            .and_then(|(key, body)| {
                self.check_evidence(body)?;
                let t0 = Instant::now();
                let header =
                    envelope::encode_into(body, u32::from(req.level), &mut self.envelopes[n])
                        .map_err(|e| classify_protocol(&e))?;
                let key = cold::object_key_for(&self.prefix, &req.evidence_id, key);
                Ok((key, header, elapsed_ns(t0)))
            });
        self.batch.push(Staged { req: *req, state });
    }

    /// Stores every encoded envelope of the batch with one [`ColdStore::put_batch`] (group
    /// commit / concurrent uploads) and returns the batch's completions in request order. A
    /// `Completed` is produced only for an item the store reported durable. Each receipt's
    /// `store_ns` is the time of the whole `put_batch` call. Empties the batch.
    pub(crate) fn finish_batch(&mut self) -> Vec<Executed> {
        let batch = std::mem::take(&mut self.batch);
        let items: Vec<PutItem<'_>> = batch
            .iter()
            .zip(&self.envelopes)
            .filter_map(|(st, env)| match &st.state {
                Ok((key, _, _)) => Some(PutItem {
                    key,
                    envelope: env,
                    origin: if st.req.key_len > 0 {
                        // An evidence key chosen by the submitter (create-only decided at once).
                        KeyOrigin::SubmitterKey
                    } else if st.req.pool_evidence_id {
                        KeyOrigin::PoolId
                    } else {
                        KeyOrigin::SubmitterId
                    },
                }),
                Err(_) => None,
            })
            .collect();
        let t1 = Instant::now();
        let mut stored = match &mut self.store {
            Ok(s) if !items.is_empty() => s.put_batch(&items),
            Ok(_) => Vec::new(),
            Err(why) => items
                .iter()
                .map(|_| {
                    Err(houndpool_cold::ColdError::ColdUnavailable {
                        reason: why.clone(),
                    })
                })
                .collect(),
        }
        .into_iter();
        let store_ns = elapsed_ns(t1);
        let store_failed = self.store.is_err();
        batch
            .into_iter()
            .map(|st| {
                let req = st.req;
                let result = st.state.and_then(|(_, header, encode_ns)| {
                    let outcome = match stored.next() {
                        Some(r) => r.map_err(|e| {
                            if store_failed {
                                (FailCode::ColdStorageUnavailable, e.to_string())
                            } else {
                                classify_cold(&e)
                            }
                        })?,
                        None => {
                            return Err((
                                FailCode::Internal,
                                "the store returned fewer results than items".into(),
                            ))
                        }
                    };
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
                });
                match result {
                    Ok((receipt, spooled)) => Executed {
                        header: CompletionHeader {
                            job_id: req.job_id,
                            kind: req.kind,
                            status: CompletionStatus::Ok,
                            flags: if spooled { COMPLETION_FLAG_SPOOLED } else { 0 },
                        },
                        body: Body::Receipt(receipt.to_bytes()),
                    },
                    Err((code, message)) => failed(&req, code, &message),
                }
            })
            .collect()
    }

    /// Forgets a batch that did not finish (after a panic); its jobs' completions are the
    /// caller's.
    pub(crate) fn abandon_batch(&mut self) {
        self.batch.clear();
    }

    /// The output buffer of the last job (valid for `Body::Output`).
    pub(crate) fn output(&self) -> &[u8] {
        &self.output
    }

    /// Gives the store a chance to do background work (S3 spool drain) while idle; returns
    /// whether more is waiting that the store would do right away (the caller then looks at
    /// its ring and comes back instead of sleeping). A failure there (target still down) is
    /// not the business of any job: it is retried after the store's own pause.
    pub(crate) fn idle(&mut self) -> bool {
        match &mut self.store {
            Ok(store) => store.background_work().unwrap_or(false),
            Err(_) => false,
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
        if req.kind == JobKind::Evacuate {
            // A batch of one (the job loop batches several through the same two calls).
            self.stage_evacuate(req, body);
            return match self.finish_batch().pop() {
                Some(done) => done,
                None => failed(req, FailCode::Internal, "evacuation produced no completion"),
            };
        }
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
            JobKind::Evacuate => Err((FailCode::Internal, "evacuation is batched".into())),
            JobKind::Restore => self.restore(req, key).map(|()| ok(Body::Output)),
            JobKind::Erase => self
                .erase(req, key)
                .map(|existed| ok(Body::Byte([existed as u8]))),
        };
        result.unwrap_or_else(|(code, message)| failed(req, code, &message))
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

/// The completion of a job that failed with `code`.
pub(crate) fn failed(req: &RequestHeader, code: FailCode, message: &str) -> Executed {
    Executed {
        header: CompletionHeader {
            job_id: req.job_id,
            kind: req.kind,
            status: CompletionStatus::Failed(code),
            flags: 0,
        },
        body: Body::Message(houndpool_protocol::job::truncate_fail_message(message).to_string()),
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
