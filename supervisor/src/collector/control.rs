//! Control sockets after `Ready`: the one `Fatal` a hound may send, hang-ups, and protocol
//! violations (logged within a per-slot budget, then the hound is killed).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use houndpool_protocol::control::Message;
use tracing::warn;

use super::completion::Violation;
use super::{Collector, CONTROL_BUDGET};
use crate::hound_text::hound_text;
use crate::job::machine::KillCause;
use crate::spawn::recv_control_datagram;

/// Per-slot log budget for hound-triggered lines (Fatal text, violations): burst, then one
/// line per `HOUND_LOG_REFILL`. Lines over budget are counted in `hound_log_suppressed`.
const HOUND_LOG_BURST: u32 = 10;
const HOUND_LOG_REFILL: Duration = Duration::from_secs(1);

/// A token bucket for hound-triggered log lines of one slot.
#[derive(Debug, Clone)]
pub(super) struct LogBudget {
    tokens: u32,
    last_refill: Instant,
}

impl LogBudget {
    pub(super) fn new() -> Self {
        LogBudget {
            tokens: HOUND_LOG_BURST,
            last_refill: Instant::now(),
        }
    }

    /// Whether one more line may be logged now (takes a token).
    pub(super) fn take(&mut self) -> bool {
        let refills = self.last_refill.elapsed().as_nanos() / HOUND_LOG_REFILL.as_nanos();
        if refills > 0 {
            let add = u32::try_from(refills).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(HOUND_LOG_BURST);
            self.last_refill = Instant::now();
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Collector {
    pub(super) fn violation(&mut self, i: usize, v: Violation) {
        self.sh.counters.protocol_violations.inc();
        let detail = hound_text(&v.to_string());
        if self.log_budget[i].take() {
            warn!(slot = i, %detail, "hound violated the protocol; killing it");
        } else {
            self.sh.counters.hound_log_suppressed.inc();
        }
        self.kill_and_reap(i, Some(KillCause::Violation(detail)));
    }

    /// Reads at most [`CONTROL_BUDGET`] datagrams from hound `i`'s control socket. After
    /// `Ready` the only message a hound may send is one `Fatal` (its last word, logged once,
    /// truncated); a second `Fatal` or any other message is a protocol violation.
    pub(super) fn read_control(&mut self, i: usize) {
        for _ in 0..CONTROL_BUDGET {
            let Some(h) = self.hounds[i].as_mut() else {
                return;
            };
            // A reset is read through, so a Fatal sent just before exit is not lost.
            let r = recv_control_datagram(h.control.as_fd(), &mut self.ctrl_buf);
            match r {
                Ok(0) => {
                    // The hound closed its end and everything it sent is read: it exited, or
                    // means to stop talking. Either way it is finished.
                    self.kill_and_reap(i, None);
                    return;
                }
                Ok(n) if n > self.ctrl_buf.len() => {
                    self.violation(i, Violation::ControlDatagram { len: n });
                    return;
                }
                Ok(n) => match Message::from_datagram(&self.ctrl_buf[..n]) {
                    Ok(Message::Fatal(_)) if h.fatal.is_some() => {
                        self.violation(i, Violation::SecondFatal);
                        return;
                    }
                    Ok(Message::Fatal(f)) => {
                        let message = hound_text(&f.message);
                        if self.log_budget[i].take() {
                            warn!(slot = i, pid = h.pid, %message, "hound reports a fatal error");
                        } else {
                            self.sh.counters.hound_log_suppressed.inc();
                        }
                        h.fatal = Some(message);
                        // Its last word: it must now exit, within the grace.
                        let by = Instant::now() + self.sh.config.retire_grace;
                        h.exit_by = Some(h.exit_by.map_or(by, |t| t.min(by)));
                        let next = self.next_deadline.map_or(by, |n| n.min(by));
                        self.next_deadline = Some(next);
                    }
                    Ok(other) if h.fatal.is_some() => {
                        let kind = other.kind().name();
                        self.violation(i, Violation::AfterFatal { kind });
                        return;
                    }
                    Ok(other) => {
                        let kind = other.kind().name();
                        self.violation(i, Violation::UnexpectedControl { kind });
                        return;
                    }
                    Err(e) => {
                        self.violation(i, Violation::MalformedControl(e.to_string()));
                        return;
                    }
                },
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return,
                Err(e) => {
                    self.violation(i, Violation::ControlSocket(e.to_string()));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_allows_a_burst_then_refuses() {
        let mut b = LogBudget::new();
        let allowed = (0..100).filter(|_| b.take()).count();
        assert_eq!(allowed, HOUND_LOG_BURST as usize);
        b.last_refill -= HOUND_LOG_REFILL * 3;
        assert_eq!((0..100).filter(|_| b.take()).count(), 3);
    }
}
