//! Restart intensity and the respawn circuit (ARCHITECTURE §3.3), as in OTP supervisors.
//!
//! More than `max_restarts` hound restarts (unexpected exits and failed spawns, pool-wide)
//! within `within` opens the circuit: the pool is degraded and no hound is respawned. After
//! `cooldown` the circuit is half-open: one probe hound is started; if it stays up for
//! [`Circuit::probe_time`] the circuit closes and every held slot is refilled, if it dies the
//! circuit opens again for another cool-down. The circuit never gives up for good.
//!
//! Pure logic over `Instant`s, driven by the collector, so it is tested without processes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The circuit's state as shown in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CircuitState {
    /// Normal: hounds are respawned as they exit.
    #[default]
    Closed,
    /// Restart intensity exceeded: no respawns until the cool-down ends; the pool is degraded.
    Open,
    /// One probe hound is being tried; the others wait for it.
    HalfOpen,
}

impl CircuitState {
    /// "closed" / "open" / "half_open".
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        probe: Option<usize>,
        started: Option<Instant>,
    },
}

/// What a call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    HalfOpened,
    Closed,
}

/// Restart bookkeeping and circuit state.
///
/// Invariants: `restarts` holds only instants within `within` of the latest one recorded; at
/// most one probe slot exists, and only in the half-open state.
#[derive(Debug)]
pub(crate) struct Circuit {
    max_restarts: u32,
    within: Duration,
    cooldown: Duration,
    restarts: VecDeque<Instant>,
    state: State,
}

impl Circuit {
    pub(crate) fn new(max_restarts: u32, within: Duration, cooldown: Duration) -> Self {
        Circuit {
            max_restarts: max_restarts.max(1),
            within,
            cooldown,
            restarts: VecDeque::new(),
            state: State::Closed,
        }
    }

    /// How long a probe hound must stay up for the circuit to close.
    pub(crate) fn probe_time(&self) -> Duration {
        Duration::from_millis(500).min(self.cooldown)
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Records a restart of `slot`'s hound at `now`.
    pub(crate) fn record_restart(&mut self, slot: usize, now: Instant) -> Transition {
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.within)
        {
            self.restarts.pop_front();
        }
        match self.state {
            State::Closed if self.restarts.len() > self.max_restarts as usize => {
                self.state = State::Open {
                    until: now + self.cooldown,
                };
                Transition::Opened
            }
            State::HalfOpen { probe, .. } if probe == Some(slot) => {
                self.state = State::Open {
                    until: now + self.cooldown,
                };
                Transition::Opened
            }
            _ => Transition::None,
        }
    }

    /// Whether `slot` may be respawned now.
    pub(crate) fn allows_respawn(&self, slot: usize) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { probe, .. } => probe == Some(slot),
        }
    }

    /// Makes `slot` the probe of a half-open circuit (no effect otherwise).
    pub(crate) fn set_probe(&mut self, slot: usize) {
        if let State::HalfOpen { probe, started } = &mut self.state {
            *probe = Some(slot);
            *started = None;
        }
    }

    /// A hound of `slot` completed its handshake at `now`.
    pub(crate) fn hound_started(&mut self, slot: usize, now: Instant) {
        if let State::HalfOpen { probe, started } = &mut self.state {
            if *probe == Some(slot) {
                *started = Some(now);
            }
        }
    }

    /// Closes the circuit and forgets past restarts.
    pub(crate) fn close(&mut self) {
        self.state = State::Closed;
        self.restarts.clear();
    }

    /// Time-driven transitions: open → half-open after the cool-down, half-open → closed once
    /// the probe has stayed up for [`Self::probe_time`].
    pub(crate) fn tick(&mut self, now: Instant) -> Transition {
        match self.state {
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    probe: None,
                    started: None,
                };
                Transition::HalfOpened
            }
            State::HalfOpen {
                started: Some(t), ..
            } if now.saturating_duration_since(t) >= self.probe_time() => {
                self.close();
                Transition::Closed
            }
            _ => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_more_than_r_restarts_in_t() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, 1000 * MS, 200 * MS);
        for k in 0..3 {
            assert_eq!(c.record_restart(0, t0 + k * MS), Transition::None);
        }
        assert!(c.allows_respawn(0));
        assert_eq!(c.record_restart(1, t0 + 3 * MS), Transition::Opened);
        assert_eq!(c.state(), CircuitState::Open);
        assert!(!c.allows_respawn(0) && !c.allows_respawn(1));
    }

    #[test]
    fn old_restarts_fall_out_of_the_window() {
        let t0 = Instant::now();
        let mut c = Circuit::new(2, 100 * MS, 200 * MS);
        for k in 0..10u32 {
            // One restart every 60 ms: never more than 2 within 100 ms.
            assert_eq!(c.record_restart(0, t0 + k * 60 * MS), Transition::None);
        }
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, 1000 * MS, 200 * MS);
        c.record_restart(0, t0);
        assert_eq!(c.record_restart(0, t0), Transition::Opened);
        assert_eq!(c.tick(t0 + 100 * MS), Transition::None);
        assert_eq!(c.tick(t0 + 200 * MS), Transition::HalfOpened);
        assert!(!c.allows_respawn(2));
        c.set_probe(2);
        assert!(c.allows_respawn(2) && !c.allows_respawn(0));
        // The probe dies: open again.
        assert_eq!(c.record_restart(2, t0 + 250 * MS), Transition::Opened);
        assert_eq!(c.tick(t0 + 450 * MS), Transition::HalfOpened);
        c.set_probe(2);
        c.hound_started(2, t0 + 460 * MS);
        assert_eq!(c.tick(t0 + 500 * MS), Transition::None);
        assert_eq!(c.tick(t0 + 660 * MS), Transition::Closed);
        assert_eq!(c.state(), CircuitState::Closed);
        // Restarts before closing are forgotten.
        assert_eq!(c.record_restart(0, t0 + 700 * MS), Transition::None);
    }

    #[test]
    fn state_round_trips_through_u8() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            assert_eq!(CircuitState::from_u8(s.to_u8()), s);
        }
    }
}
