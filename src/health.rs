//! Backend health checks: one task per agent with a `health_check` path, polling it every
//! `health_interval_ms`. One failed check (an error, a timeout or a status other than 2xx) marks
//! the agent down, and its chats get 409 "agent is not running"; one passed check marks it up.
//! The checks of a config snapshot stop when a reload replaces it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use crate::metrics::{AgentLabel, Metrics};
use crate::proxy::HealthTarget;

/// Starts the checks; they run until `stop` is cancelled.
pub fn spawn(targets: Vec<HealthTarget>, metrics: Arc<Metrics>, stop: CancellationToken) {
    for target in targets {
        tokio::spawn(check_loop(target, metrics.clone(), stop.clone()));
    }
}

async fn check_loop(target: HealthTarget, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(target.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gauge = metrics.agent_up.get_or_create_owned(&AgentLabel {
        agent: target.agent.clone(),
    });
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let failure = tokio::select! {
            _ = stop.cancelled() => return,
            failure = probe(&target) => failure,
        };
        let up = failure.is_none();
        gauge.set(i64::from(up));
        let was_up = target.up.swap(up, Ordering::Relaxed);
        match (&failure, was_up) {
            (Some(reason), true) => tracing::warn!(
                agent = %target.agent,
                url = %target.uri,
                reason = %reason,
                "health check failed: the agent is down (chats get 409)"
            ),
            (None, false) => {
                tracing::info!(agent = %target.agent, "health check passed: the agent is up")
            }
            _ => {}
        }
    }
}

/// One check: `None` when it passed, else why it failed.
async fn probe(target: &HealthTarget) -> Option<String> {
    let mut request = Request::get(target.uri.clone());
    request = request.header(USER_AGENT, HeaderValue::from_static("agentgate-health"));
    if let Some(token) = &target.token {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
            request = request.header(AUTHORIZATION, v);
        }
    }
    let request = match request.body(Full::new(Bytes::new())) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    match tokio::time::timeout(target.timeout, target.client.request(request)).await {
        Err(_) => Some(format!(
            "no answer within {} ms",
            target.timeout.as_millis()
        )),
        Ok(Err(e)) => Some(format!("unreachable: {e}")),
        Ok(Ok(response)) if response.status().is_success() => None,
        Ok(Ok(response)) => Some(format!("status {}", response.status().as_u16())),
    }
}
