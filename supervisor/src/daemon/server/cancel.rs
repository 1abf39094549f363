//! The daemon's `Cancel` (wire kind 22): a client cancels a job it submitted on this
//! connection; the answer (`CancelReply`, kind 23) is written before the job's outcome.

use std::sync::Arc;

use super::conn::{Conn, Item, Router};
use super::wire::encode;
use crate::daemon::{Live, State};
use crate::JobId;
use houndpool_protocol::daemon::{Cancel, CancelReply, CancelResult, DaemonMessage};

impl Router {
    /// Removes the route of `job_id` if connection `conn` owns it; returns its request id and
    /// the bytes reserved for its outcome. While it is out, the job's outcome waits in `early`
    /// (re-`register` delivers it).
    fn take_route(&self, job_id: u64, conn: u64) -> Option<(u64, usize)> {
        let mut g = self.lock();
        match g.routes.get(&job_id) {
            Some((c, _, _)) if c.id == conn => g
                .routes
                .remove(&job_id)
                .map(|(_, r, reserved)| (r, reserved)),
            _ => None,
        }
    }
}

fn to_wire(r: crate::CancelResult) -> CancelResult {
    match r {
        crate::CancelResult::NotFound => CancelResult::NotFound,
        crate::CancelResult::Dequeued => CancelResult::Dequeued,
        crate::CancelResult::Killed => CancelResult::Killed,
    }
}

/// Answers `c` (queued on the connection before anything else about the job), then lets the
/// job's outcome (if any) follow. The caller has released the frame's own reservation.
pub(super) async fn handle(state: &State, conn: &Arc<Conn>, live: &Live, c: &Cancel) {
    // Only this connection's jobs whose outcome it has not been handed yet.
    let route = state.router.take_route(c.job_id, conn.id);
    let result = match route {
        None => CancelResult::NotFound,
        Some(_) => {
            let pool = state.pool.clone();
            let id = JobId(c.job_id);
            // `Pool::cancel` waits for the collector (milliseconds; a kill reaps the hound).
            tokio::task::spawn_blocking(move || pool.cancel(id))
                .await
                .map_or(CancelResult::NotFound, to_wire)
        }
    };
    tracing::debug!(
        conn = conn.id,
        job = c.job_id,
        result = result.name(),
        "cancel"
    );
    let reply = DaemonMessage::CancelReply(CancelReply {
        request_id: c.request_id,
        result,
    });
    if let Some(frame) = encode(&reply, live.max_frame) {
        conn.push(Item::Frame(frame));
    }
    if let Some((request_id, reserved)) = route {
        state
            .router
            .register(c.job_id, conn, request_id, reserved, &state.metrics);
    }
}
