//! Uploads of a shared [`S3Store`]: the body of `put` (usable from several threads at once)
//! and the concurrent `put_batch` (see docs/S3.md, "Concurrent uploads").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::retry::Fail;
use super::{spool, S3Store, MAX_CONCURRENCY};
use crate::ColdError;
use crate::{validate_key, KeyOrigin, PutItem, PutOutcome};

/// Stack of an upload thread: ureq, rustls and SigV4 need far less; kept small because a
/// hound's address space is bounded (RLIMIT_AS).
const UPLOAD_STACK: usize = 256 * 1024;

impl S3Store {
    /// [`crate::ColdStore::put`] on a shared store: spool writes take `spool_lock`.
    pub(super) fn put_shared(
        &self,
        key: &str,
        envelope: &[u8],
        origin: KeyOrigin,
        spool_lock: &Mutex<()>,
    ) -> Result<PutOutcome, ColdError> {
        validate_key(key)?;
        if let Some(spool) = &self.spool {
            match spool.read(key, envelope.len()) {
                Ok(Some(spooled)) if spooled == envelope => return Ok(PutOutcome::Spooled),
                Ok(Some(_)) | Err(ColdError::ObjectTooLarge { .. }) => {
                    return Err(ColdError::AlreadyExists { key: key.into() })
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        match self.put_create_only(key, envelope, origin, self.tuning.deadline_from_now()) {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(Fail::Final(e)) => Err(e),
            Err(Fail::Transient(reason)) => {
                let Some(spool) = &self.spool else {
                    return Err(ColdError::ColdUnavailable { reason });
                };
                let stored = {
                    let _one_writer = spool_lock.lock().unwrap_or_else(|e| e.into_inner());
                    spool.store(key, envelope)
                };
                match stored {
                    Ok(()) => {
                        tracing::warn!(%key, %reason, "cold target unavailable; envelope spooled");
                        Ok(PutOutcome::Spooled)
                    }
                    Err(spool::StoreError::Exists) => {
                        Err(ColdError::AlreadyExists { key: key.into() })
                    }
                    Err(e) => Err(ColdError::ColdUnavailable {
                        reason: format!("{reason}; not spooled: {e}"),
                    }),
                }
            }
        }
    }

    /// [`crate::ColdStore::put_batch`] of the S3 store: up to
    /// [`super::S3Tuning::concurrency`] uploads at once on scoped threads (the caller's among
    /// them), each item exactly as `put` would store it; results in item order.
    pub(super) fn put_concurrently(
        &self,
        items: &[PutItem<'_>],
    ) -> Vec<Result<PutOutcome, ColdError>> {
        let spool_lock = Mutex::new(());
        let workers = self
            .tuning
            .concurrency
            .clamp(1, MAX_CONCURRENCY)
            .min(items.len());
        if workers <= 1 {
            return items
                .iter()
                .map(|i| self.put_shared(i.key, i.envelope, i.origin, &spool_lock))
                .collect();
        }
        let results: Vec<Mutex<Option<Result<PutOutcome, ColdError>>>> =
            items.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        on_workers(workers, "s3-upload", || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                break;
            };
            let r = self.put_shared(item.key, item.envelope, item.origin, &spool_lock);
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        results
            .into_iter()
            .zip(items)
            .map(|(r, item)| {
                r.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| {
                        Err(ColdError::ColdUnavailable {
                            reason: format!("put {}: no upload ran", item.key),
                        })
                    })
            })
            .collect()
    }
}

/// Runs `work` on `workers` threads at once, the caller's among them: `workers - 1` scoped
/// threads named `name`, with a small stack ([`UPLOAD_STACK`]), joined before this returns.
/// A thread that cannot be started means fewer at once (`work` must cope with running on
/// fewer threads, down to the caller's alone); `workers` of 0 or 1 runs `work` once here.
pub(super) fn on_workers(workers: usize, name: &str, work: impl Fn() + Sync) {
    if workers <= 1 {
        work();
        return;
    }
    let work = &work;
    std::thread::scope(|scope| {
        for _ in 1..workers {
            let started = std::thread::Builder::new()
                .name(name.into())
                .stack_size(UPLOAD_STACK)
                .spawn_scoped(scope, work);
            if let Err(e) = started {
                tracing::debug!(error = %e, "{name} thread not started; fewer at once");
                break;
            }
        }
        work();
    });
}
