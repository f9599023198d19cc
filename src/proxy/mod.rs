//! The request pipeline (SPEC §5), one job per file:
//!
//! - [`router`]: CORS, health and readiness, which front and endpoint a path names; every
//!   answer counted, logged and given its `x-request-id`.
//! - [`chat`]: the chat pipeline in phases — authenticate → validate → admit → call upstream
//!   → transcode (stream) or aggregate (sync) → settle.
//! - [`call`]: the upstream request and its deadlines; [`aggregate`]: a sync answer read whole;
//!   [`body`]: the streaming body that transcodes; [`settlement`]: a stream's end.
//! - [`teams`]: team chat, through the same admission and upstream call; [`history`]: the
//!   conversations API; [`models`]: the `openai` front's model list.
//! - [`policy`]: keys, limits, credits; [`error`]: the one error type and its rendering;
//!   [`snapshot`]: the config snapshot a request runs on; [`request`]: a request's ids, log
//!   line and body; [`response`]: response bodies and helpers.

mod aggregate;
mod body;
mod call;
mod chat;
mod conversations;
mod cutoff;
mod error;
mod history;
mod idempotency;
mod meter;
mod models;
mod policy;
mod request;
mod response;
mod router;
mod settlement;
mod snapshot;
mod teams;

pub use body::{StreamEnd, TranscodeBody};
pub use cutoff::Cutoff;
pub use error::{GatewayError, Limit, Timeout};
pub use meter::{ChatMeter, Ids};
pub use policy::{Admission, Limiter, Policy, Pruned};
pub use request::MAX_REQUEST_ID_LEN;
pub use response::{error_response, json_response, GatewayBody};
pub use settlement::StreamSettlement;
pub use snapshot::{HealthTarget, Snapshot};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::fronts::cors::ConsoleOrigin;
use crate::metrics::Metrics;

/// Everything a request needs: the current config snapshot and the state that outlives it.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    /// Cancelled when the drain timeout of a shutdown has passed: open streams end then.
    streams_end: Cutoff,
    /// Set when a shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// The admin listener's address, once bound: the console there may call the fronts (CORS).
    console: std::sync::OnceLock<ConsoleOrigin>,
}

impl Gateway {
    pub fn new(
        snapshot: Snapshot,
        policy: Arc<Policy>,
        metrics: Arc<Metrics>,
        streams_end: Cutoff,
    ) -> Self {
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            policy,
            metrics,
            streams_end,
            draining: AtomicBool::new(false),
            console: std::sync::OnceLock::new(),
        }
    }

    /// A shutdown has begun: `/readyz` says so (503), so load balancers stop sending.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot: requests that arrive from now on use it; requests and
    /// streams already running keep theirs.
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.snapshot.swap(Arc::new(snapshot))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Allows the console served at `admin` (the admin listener's bound address) to call the
    /// fronts from the browser (CORS). Set once, when the admin listener is bound.
    pub fn allow_console(&self, admin: SocketAddr) {
        let _ = self.console.set(ConsoleOrigin(admin));
    }
}
