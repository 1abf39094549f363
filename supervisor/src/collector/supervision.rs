//! Supervision: installing spawned hounds, respawn with back-off, the restart-intensity
//! circuit, rotation, the high-water mark and retirement.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use houndpool_protocol::control::{Message, Shutdown};
use nix::sys::socket::{send, MsgFlags};
use tracing::{debug, info, warn};

use super::spawner::SpawnOrder;
use super::{Collector, HoundProc};
use crate::circuit::Transition;
use crate::spawn::Spawned;
use crate::state::SlotConn;

/// `x` with ±10 % uniform jitter.
fn jitter(x: f64) -> f64 {
    x * (0.9 + 0.2 * fastrand::f64())
}

impl Collector {
    pub(super) fn install_spawned(&mut self) -> bool {
        let mut work = false;
        while let Ok(r) = self.results.try_recv() {
            work = true;
            match r {
                Ok(s) => {
                    if self.finishing {
                        drop(s); // killed and reaped by its guard
                    } else {
                        self.install(s);
                    }
                }
                Err((slot, generation, error)) => {
                    self.sh.counters.spawn_failures.inc();
                    warn!(slot, generation, %error, "hound failed to start; will retry");
                    self.note_restart(slot as usize, false);
                    self.schedule_respawn(slot as usize);
                }
            }
        }
        work
    }

    pub(super) fn install(&mut self, s: Spawned) {
        let i = s.slot as usize;
        let pid = s.child.id();
        let slot = &self.sh.slots[i];
        slot.install(SlotConn::new(
            s.writer,
            s.request_bell,
            self.sh.config.max_in_flight_per_hound,
        ));
        slot.pid.store(pid, Ordering::Relaxed);
        slot.generation.store(s.generation, Ordering::Relaxed);
        self.next_generation[i] = self.next_generation[i].max(s.generation);
        info!(
            slot = i,
            pid,
            generation = s.generation,
            spawn_us = s.spawn_time.as_micros() as u64,
            "hound ready"
        );
        *self
            .sh
            .sandbox_report
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(s.ready.sandbox);
        let watch = s.reader.watch();
        *slot.consumer.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::state::Consumer {
            reader: s.reader,
            violation: None,
            handed_over: false,
        });
        self.hounds[i] =
            Some(HoundProc {
                child: s.child,
                pid,
                generation: s.generation,
                control: s.control,
                watch,
                completion_bell: s.completion_bell,
                kill_cause: None,
                fatal: None,
                exit_by: None,
                started: Instant::now(),
                placed: s.placed,
                retiring: false,
                shutdown_sent: false,
                rotate_after_completed: self.sh.config.rotation.after_jobs.map(|n| {
                    slot.completed.load(Ordering::Relaxed) + jitter(n as f64).max(1.0) as u64
                }),
                rotate_at: self
                    .sh
                    .config
                    .rotation
                    .after
                    .map(|d| Instant::now() + Duration::from_secs_f64(jitter(d.as_secs_f64()))),
            });
        self.circuit.hound_started(i, Instant::now());
        if !self.wanted[i] {
            // The slot stopped being wanted while this hound was starting (target lowered).
            self.retire(i);
            return;
        }
        self.sh.counters.hound_spawns.inc();
        self.blocked = false;
        slot.accepting.store(true, Ordering::Release);
    }

    pub(super) fn schedule_respawn(&mut self, i: usize) {
        if self.finishing || !self.wanted[i] {
            return;
        }
        if !self.circuit.allows_respawn(i) {
            if !self.held.contains(&i) {
                self.held.push_back(i);
            }
            return;
        }
        let Some(orders) = &self.orders else {
            return;
        };
        let now = Instant::now();
        let recent = &mut self.recent_restarts[i];
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            recent.pop_front();
        }
        recent.push_back(now);
        // Immediate for the first few restarts of a slot in a second, then exponential with
        // jitter, capped at 5 s, so a crash loop never turns into a fork loop.
        let delay = if recent.len() <= 3 {
            Duration::ZERO
        } else {
            let exp = (recent.len() - 4).min(9) as u32;
            let base = Duration::from_millis(10) * 2u32.pow(exp);
            let base = base.min(Duration::from_secs(5));
            base + base.mul_f64(fastrand::f64() * 0.25)
        };
        self.next_generation[i] += 1;
        let _ = orders.send(SpawnOrder {
            slot: i as u32,
            generation: self.next_generation[i],
            not_before: now + delay,
        });
    }

    /// Counts a restart (an unexpected hound exit when `died`, else a failed spawn) against the
    /// restart intensity; opens the circuit when it is exceeded.
    pub(super) fn note_restart(&mut self, i: usize, died: bool) {
        if died {
            self.sh.counters.restarts.inc();
        }
        if self.circuit.record_restart(i, Instant::now()) == Transition::Opened {
            self.sh.counters.circuit_opens.inc();
            let ri = self.sh.config.restart_intensity;
            warn!(
                slot = i,
                max_restarts = ri.max_restarts,
                within = ?ri.within,
                cooldown = ?self.sh.config.circuit_cooldown,
                "restart intensity exceeded: circuit open, pool degraded, respawns held"
            );
        }
        self.publish_circuit();
    }

    /// Time-driven circuit transitions: the probe after the cool-down, refilling on close.
    pub(super) fn circuit_tick(&mut self) {
        match self.circuit.tick(Instant::now()) {
            Transition::HalfOpened => match self.held.pop_front() {
                Some(i) => {
                    self.circuit.set_probe(i);
                    info!(slot = i, "circuit half-open: starting a probe hound");
                    self.schedule_respawn(i);
                }
                None => {
                    self.circuit.close();
                    info!("circuit closed (no slot waiting)");
                }
            },
            Transition::Closed => {
                info!(
                    refill = self.held.len(),
                    "circuit closed: the probe hound is up; refilling held slots"
                );
                let held: Vec<usize> = self.held.drain(..).collect();
                for i in held {
                    self.schedule_respawn(i);
                }
            }
            Transition::Opened | Transition::None => {}
        }
        self.publish_circuit();
    }

    /// Rotation: a hound past its (jittered) job count or age gets a replacement in a free
    /// slot first; once that one accepts jobs, the old one is retired. One at a time.
    pub(super) fn rotation_tick(&mut self) {
        if let Some((old, new)) = self.rotating {
            if self.hounds[new].is_some() {
                self.rotating = None;
                if self.hounds[old].as_ref().is_some_and(|h| !h.retiring) {
                    self.sh.counters.rotations.inc();
                    info!(
                        slot = old,
                        replacement = new,
                        "rotating hound: replacement ready"
                    );
                    self.retire(old);
                }
            } else if !self.wanted[new] {
                self.rotating = None;
            }
            return;
        }
        if self.circuit.state() != crate::circuit::CircuitState::Closed {
            return;
        }
        let now = Instant::now();
        let due = self.hounds.iter().enumerate().find_map(|(i, h)| {
            let h = h.as_ref()?;
            let done = self.sh.slots[i].completed.load(Ordering::Relaxed);
            let by_jobs = h.rotate_after_completed.is_some_and(|n| done >= n);
            let by_age = h.rotate_at.is_some_and(|t| now >= t);
            (!h.retiring && self.wanted[i] && (by_jobs || by_age)).then_some(i)
        });
        let Some(old) = due else {
            return;
        };
        let Some(new) = self.free_slot() else {
            return;
        };
        self.wanted[new] = true;
        self.rotating = Some((old, new));
        debug!(
            slot = old,
            replacement = new,
            "rotation due: starting the replacement"
        );
        self.schedule_respawn(new);
    }

    /// A slot that should hold no hound and holds none (and is not awaiting a spawn).
    pub(super) fn free_slot(&self) -> Option<usize> {
        (0..self.hounds.len()).find(|&j| {
            !self.wanted[j] && self.hounds[j].is_none() && self.rotating.is_none_or(|r| r.1 != j)
        })
    }

    /// Marks hound `i` retiring: no new jobs; stopped by `retire_tick` once its ring is empty.
    pub(super) fn retire(&mut self, i: usize) {
        self.wanted[i] = false;
        self.sh.slots[i].accepting.store(false, Ordering::Release);
        if let Some(h) = self.hounds[i].as_mut() {
            h.retiring = true;
        }
    }

    /// Sends `Shutdown` to retiring hounds whose rings are empty (their exit is then seen as a
    /// control-socket hang-up and reaped as expected).
    pub(super) fn retire_tick(&mut self) {
        let mut frame = Vec::new();
        for (i, h) in self.hounds.iter_mut().enumerate() {
            let Some(h) = h.as_mut() else {
                continue;
            };
            if !h.retiring || h.shutdown_sent {
                continue;
            }
            if self.sh.slots[i].in_flight() > 0 {
                continue;
            }
            if frame.is_empty()
                && Message::Shutdown(Shutdown { grace_ms: 1000 })
                    .encode_frame(&mut frame)
                    .is_err()
            {
                return;
            }
            // MSG_DONTWAIT: a hound that stopped reading its socket cannot block us; if the
            // frame does not go out, the grace below still ends the hound.
            let _ = send(
                h.control.as_raw_fd(),
                &frame,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
            h.shutdown_sent = true;
            let by = Instant::now() + self.sh.config.retire_grace;
            h.exit_by = Some(h.exit_by.map_or(by, |t| t.min(by)));
            debug!(slot = i, pid = h.pid, "retired hound asked to stop");
        }
    }

    /// The high-water mark: above it, retire the largest hound and lower the target (not below
    /// the minimum); below mark − hysteresis, raise the target again (not above the computed
    /// size). One step per sample, and none while a retirement is still in progress.
    pub(super) fn high_water_tick(&mut self) {
        let sh = self.sh.clone();
        let Some(limits) = sh.cgroups.limits.as_ref() else {
            return;
        };
        let (Some(limit), Some(usage)) = (
            limits.effective_memory_limit(),
            crate::cgroup::memory_working_set(limits),
        ) else {
            return;
        };
        let mark = sh.high_water_mark();
        let high = limit as f64 * mark;
        let low = limit as f64 * (mark - sh.config.high_water_hysteresis).max(0.0);
        let target = sh.target.load(Ordering::Relaxed);
        let retiring = self.hounds.iter().flatten().any(|h| h.retiring);
        if usage as f64 > high && target > sh.min_size() && !retiring {
            // The largest hound by its cgroup's usage; any if unknown.
            let victim = self
                .hounds
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let h = h.as_ref()?;
                    (self.wanted[i] && !h.retiring).then(|| {
                        let mem = h.placed.as_ref().and_then(|p| p.cgroup.memory_usage());
                        (i, mem.unwrap_or(0))
                    })
                })
                .max_by_key(|&(_, m)| m);
            let Some((i, mem)) = victim else {
                return;
            };
            sh.target.store(target - 1, Ordering::Relaxed);
            sh.counters.high_water_retirements.inc();
            warn!(
                usage,
                limit,
                mark,
                slot = i,
                hound_memory = mem,
                target = target - 1,
                "memory above the high-water mark: retiring the largest hound"
            );
            self.retire(i);
        } else if (usage as f64) < low && target < sh.sizing.size.min(self.hounds.len()) {
            let Some(j) = self.free_slot() else {
                return;
            };
            sh.target.store(target + 1, Ordering::Relaxed);
            info!(
                usage,
                limit,
                mark,
                slot = j,
                target = target + 1,
                "memory below the high-water mark: growing the pool"
            );
            self.wanted[j] = true;
            self.schedule_respawn(j);
        }
    }

    pub(super) fn publish_circuit(&self) {
        self.sh
            .circuit
            .store(self.circuit.state().to_u8(), Ordering::Relaxed);
    }
}
