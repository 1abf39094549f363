//! Classification of S3 failures (transient or final) and the retry loop with exponential
//! backoff and jitter.

use std::io;
use std::time::{Duration, Instant};

use crate::ColdError;

/// The outcome of one failed attempt (or of all of them).
#[derive(Debug)]
pub(super) enum Fail {
    /// Worth retrying: the target may come back (connection refused/reset, timeouts, 5xx,
    /// 429, 408, S3 `RequestTimeout`). After the last attempt it becomes "unavailable".
    Transient(String),
    /// Retrying cannot help: the target refused (4xx, 3xx), the object is missing or too
    /// large, or the local side cannot speak to it at all (TLS, sandbox denial).
    Final(ColdError),
}

/// Retry policy of one operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Attempts in all (at least one is always made).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Largest single backoff.
    pub max_delay: Duration,
    /// No attempt starts after this much time since the first one.
    pub budget: Duration,
    /// When the whole operation must be over (see [`super::S3Tuning::operation_deadline`]):
    /// no attempt starts at or after it, and each attempt is told how much time is left,
    /// which bounds its whole exchange. `None`: only `budget` and the socket timeouts bound it.
    pub deadline: Option<Instant>,
}

impl Policy {
    /// The backoff after failed attempt number `failed` (1-based): the exponential delay
    /// `base * 2^(failed-1)` capped at `max_delay`, jittered uniformly into `[d/2, d]` so that
    /// hounds that failed together do not retry together.
    pub fn backoff(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(30);
        let d = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = d / 2;
        let nanos = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// Runs `attempt` until it succeeds, fails finally, or the attempts, the time budget or
    /// the deadline run out; then the last transient failure is returned, annotated with the
    /// count. `attempt` gets the time left before the deadline (`None` without one), to bound
    /// its request with. A deadline already passed fails transiently without an attempt.
    pub fn run<T>(
        &self,
        mut attempt: impl FnMut(Option<Duration>) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let start = Instant::now();
        let mut failed = 0u32;
        loop {
            let left = match self.deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Fail::Transient(format!(
                            "the operation's deadline passed before attempt {}",
                            failed + 1
                        )));
                    }
                    Some(left)
                }
            };
            match attempt(left) {
                Ok(v) => return Ok(v),
                Err(Fail::Final(e)) => return Err(Fail::Final(e)),
                Err(Fail::Transient(reason)) => {
                    failed += 1;
                    let delay = self.backoff(failed);
                    let out_of_time = start.elapsed().saturating_add(delay) >= self.budget
                        || self.deadline.is_some_and(|d| {
                            Instant::now().checked_add(delay).is_none_or(|t| t >= d)
                        });
                    if failed >= self.attempts.max(1) || out_of_time {
                        return Err(Fail::Transient(format!(
                            "{reason} (gave up after {failed} attempt(s) in {:?})",
                            start.elapsed()
                        )));
                    }
                    tracing::debug!(%reason, attempt = failed, ?delay, "S3 request failed, retrying");
                    std::thread::sleep(delay);
                }
            }
        }
    }
}

/// Classifies a transport-level error of ureq.
pub(super) fn classify_ureq(op: &'static str, e: ureq::Error) -> Fail {
    use ureq::Error as E;
    match e {
        // The sandbox (Landlock, seccomp) or the OS forbids the connection: retrying or
        // spooling would not help, the configuration must change.
        E::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => {
            Fail::Final(ColdError::ColdRejected {
                op,
                status: 0,
                reason: format!("connection not permitted: {io}"),
            })
        }
        // rustls reports handshake failures (untrusted or mismatched certificate, TLS alert)
        // as InvalidData I/O errors: the endpoint is wrong, not down.
        E::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            Fail::Final(ColdError::ColdRejected {
                op,
                status: 0,
                reason: format!("invalid data from the peer (TLS): {io}"),
            })
        }
        E::Io(io) => Fail::Transient(format!("{op}: {io}")),
        E::Timeout(t) => Fail::Transient(format!("{op}: timeout ({t})")),
        E::HostNotFound => Fail::Transient(format!("{op}: host not found")),
        E::ConnectionFailed => Fail::Transient(format!("{op}: connection failed")),
        E::Protocol(p) => Fail::Transient(format!("{op}: HTTP protocol error: {p}")),
        // TLS failures (certificate, handshake), malformed URLs or headers, redirects: the
        // endpoint or configuration is wrong.
        other => Fail::Final(ColdError::ColdRejected {
            op,
            status: 0,
            reason: other.to_string(),
        }),
    }
}

/// Extracts `Code` and `Message` from an S3 XML error body (best effort, no allocation of
/// anything larger than the body).
pub(super) fn s3_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&close)?;
        Some(text[start..start + len].trim().to_owned())
    };
    (field("Code"), field("Message"))
}

/// Whether an HTTP status (with its S3 error code) is worth retrying.
pub(super) fn is_transient_status(status: u16, code: Option<&str>) -> bool {
    matches!(status, 408 | 429 | 500..=599)
        || (status == 400 && matches!(code, Some("RequestTimeout")))
}

/// Classifies a non-success HTTP answer.
pub(super) fn classify_status(op: &'static str, status: u16, body: &[u8]) -> Fail {
    let (code, message) = s3_error(body);
    let reason = match (&code, &message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => http_reason(status).to_owned(),
    };
    if is_transient_status(status, code.as_deref()) {
        Fail::Transient(format!("{op}: HTTP {status}: {reason}"))
    } else {
        Fail::Final(ColdError::ColdRejected { op, status, reason })
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        301 | 307 | 308 => "redirect (wrong region or endpoint?)",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        _ => "unexpected status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, budget_ms: u64) -> Policy {
        Policy {
            attempts,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(8),
            budget: Duration::from_millis(budget_ms),
            deadline: None,
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = Policy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            budget: Duration::from_secs(60),
            deadline: None,
        };
        for _ in 0..200 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.backoff(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
            assert!(p.backoff(u32::MAX) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn transient_failures_are_retried_up_to_the_attempt_limit() {
        let mut calls = 0;
        let r: Result<(), Fail> = policy(3, 10_000).run(|_| {
            calls += 1;
            Err(Fail::Transient("refused".into()))
        });
        assert_eq!(calls, 3);
        match r {
            Err(Fail::Transient(m)) => assert!(m.contains("3 attempt"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn success_after_a_transient_failure() {
        let mut calls = 0;
        let r = policy(3, 10_000).run(|_| {
            calls += 1;
            if calls == 1 {
                Err(Fail::Transient("reset".into()))
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.ok(), Some(7));
        assert_eq!(calls, 2);
    }

    #[test]
    fn final_failures_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), Fail> = policy(5, 10_000).run(|_| {
            calls += 1;
            Err(Fail::Final(ColdError::NotFound { key: "k".into() }))
        });
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(Fail::Final(ColdError::NotFound { .. }))));
    }

    #[test]
    fn the_time_budget_bounds_retries() {
        let mut calls = 0;
        let start = Instant::now();
        let _ = policy(1000, 30).run(|_| -> Result<(), Fail> {
            calls += 1;
            Err(Fail::Transient("down".into()))
        });
        assert!(calls < 1000);
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn the_deadline_bounds_attempts_and_is_passed_to_each() {
        let p = Policy {
            deadline: Some(Instant::now() + Duration::from_millis(60)),
            ..policy(1000, 10_000)
        };
        let start = Instant::now();
        let mut lefts = Vec::new();
        let r: Result<(), Fail> = p.run(|left| {
            lefts.push(left.expect("a deadline gives every attempt its time left"));
            std::thread::sleep(Duration::from_millis(5));
            Err(Fail::Transient("down".into()))
        });
        assert!(matches!(r, Err(Fail::Transient(_))));
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(lefts.len() >= 2, "{lefts:?}");
        assert!(lefts.windows(2).all(|w| w[1] < w[0]), "{lefts:?}");
        assert!(lefts[0] <= Duration::from_millis(60));

        let passed = Policy {
            deadline: Some(Instant::now()),
            ..policy(3, 10_000)
        };
        let mut calls = 0;
        match passed.run(|_| -> Result<(), Fail> {
            calls += 1;
            Ok(())
        }) {
            Err(Fail::Transient(m)) => assert!(m.contains("deadline"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(calls, 0, "no attempt starts after the deadline");
    }

    #[test]
    fn statuses_are_classified() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify_status("put", s, b""), Fail::Transient(_)),
                "{s}"
            );
        }
        let slow = b"<Error><Code>RequestTimeout</Code><Message>idle</Message></Error>";
        assert!(matches!(
            classify_status("put", 400, slow),
            Fail::Transient(_)
        ));
        let denied = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                       <Message>The request signature we calculated does not match</Message></Error>";
        match classify_status("put", 403, denied) {
            Fail::Final(ColdError::ColdRejected { op, status, reason }) => {
                assert_eq!((op, status), ("put", 403));
                assert!(reason.starts_with("SignatureDoesNotMatch: "), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        for s in [301, 400, 404, 405, 411] {
            assert!(
                matches!(
                    classify_status("get", s, b"not xml"),
                    Fail::Final(ColdError::ColdRejected { .. })
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn transport_errors_are_classified() {
        let refused = ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify_ureq("put", refused), Fail::Transient(_)));
        let reset = ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(matches!(classify_ureq("put", reset), Fail::Transient(_)));
        assert!(matches!(
            classify_ureq("put", ureq::Error::HostNotFound),
            Fail::Transient(_)
        ));
        let denied = ureq::Error::Io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(
            classify_ureq("put", denied),
            Fail::Final(ColdError::ColdRejected { status: 0, .. })
        ));
        let tls = ureq::Error::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(matches!(
            classify_ureq("put", tls),
            Fail::Final(ColdError::ColdRejected { status: 0, .. })
        ));
        assert!(matches!(
            classify_ureq("put", ureq::Error::BadUri("x".into())),
            Fail::Final(ColdError::ColdRejected { status: 0, .. })
        ));
    }

    #[test]
    fn s3_error_bodies_parse_leniently() {
        assert_eq!(
            s3_error(b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"),
            (Some("NoSuchKey".into()), Some("gone".into()))
        );
        assert_eq!(s3_error(b"<Code>X"), (None, None));
        assert_eq!(s3_error(&[0xff, 0xfe]), (None, None));
    }
}
