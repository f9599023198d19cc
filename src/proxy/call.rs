//! Calling the agent's backend: the upstream request, its two deadlines (connect, first byte)
//! and the checks of its answer's head.

use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::{GatewayError, Timeout};
use super::request::Ctx;
use super::snapshot::Agent;
use super::Gateway;
use crate::apis::HistoryMessage;
use crate::fronts::{ApiError, ChatRequest};
use crate::metrics::{Metrics, UpstreamLabels};
use crate::telemetry::TraceContext;
use crate::upstream::{self, Call};

impl Gateway {
    /// Calls the agent's backend with the chat, and checks its answer's head: 504 when a
    /// wait runs out, 502 when it cannot be reached or answers with an error or with something
    /// other than an event stream. Counts the backend's latency.
    pub(super) async fn call_upstream(
        &self,
        agent: &Agent,
        chat: &ChatRequest,
        backend_conversation: Option<&str>,
        history: &[HistoryMessage],
        trace: &TraceContext,
        ctx: &mut Ctx,
    ) -> Result<Response<Incoming>, GatewayError> {
        let call = Call {
            api: agent.config.upstream_api,
            base: &agent.base,
            agent_id: &agent.config.upstream_agent_id,
            token: agent.config.upstream_token.as_ref().map(|t| t.expose()),
            message: chat.message.as_deref(),
            conversation: backend_conversation,
            user_id: chat.user_id.as_deref(),
            options: &chat.options,
            history,
            request_id: &ctx.request_id,
            traceparent: Some(&trace.traceparent),
            tracestate: trace.tracestate.as_ref(),
        };
        let request = call.request().map_err(|e| bad_gateway(e.to_string()))?;
        let sent = Instant::now();
        let response = send_upstream(&agent.client, request, agent.config.timeouts).await;
        let latency = sent.elapsed();
        ctx.waited += latency;
        if let Ok(Ok(_)) = &response {
            Metrics::observe(
                &self
                    .metrics
                    .upstream_latency
                    .get_or_create(&UpstreamLabels {
                        agent: agent.label.clone(),
                        upstream_api: agent.config.upstream_api.as_str(),
                    }),
                latency,
            );
        }
        let response = response
            .map_err(GatewayError::UpstreamTimeout)?
            .map_err(send_failed)?;
        check_head(response)
    }
}

/// 504 when the connect deadline ran out, 502 when the head was too large or the backend
/// could not be reached.
fn send_failed(e: hyper_util::client::legacy::Error) -> GatewayError {
    if connect_timed_out(&e) {
        GatewayError::UpstreamTimeout(Timeout::Connect)
    } else if head_too_large(&e) {
        bad_gateway("the agent's backend answered with response headers too large to accept")
    } else {
        bad_gateway("the agent's backend is unreachable")
    }
}

/// The answer's head, checked: 502 for an error status or for something other than an event
/// stream.
fn check_head(response: Response<Incoming>) -> Result<Response<Incoming>, GatewayError> {
    if !response.status().is_success() {
        return Err(GatewayError::Upstream(
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the agent's backend answered with an error",
            )
            .with_details(serde_json::json!({ "upstream_status": response.status().as_u16() })),
        ));
    }
    // An answer that is not an event stream (e.g. an HTML error page with 200) is a failed
    // answer before any output, stream or sync alike: 502, nothing charged.
    if let Some(ct) = response.headers().get(CONTENT_TYPE) {
        let event_stream = ct.to_str().is_ok_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        });
        if !event_stream {
            return Err(GatewayError::Upstream(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the agent's backend answered with something other than an event stream",
                )
                .with_details(serde_json::json!({
                    "upstream_content_type": String::from_utf8_lossy(ct.as_bytes()),
                })),
            ));
        }
    }
    Ok(response)
}

/// Sends `request` with two consecutive deadlines: `connect` for a connection (a new one, or
/// one taken from the pool), then `first_byte` for the response head, counted from the moment
/// the connection is ready — so `first_byte_timeout_ms` holds on its own, not added to the
/// connect timeout.
async fn send_upstream(
    client: &upstream::Client,
    mut request: Request<http_body_util::Full<Bytes>>,
    timeouts: crate::config::UpstreamTimeouts,
) -> Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, Timeout> {
    let mut connected = hyper_util::client::legacy::connect::capture_connection(&mut request);
    let send = client.request(request);
    tokio::pin!(send);
    let connecting = async {
        tokio::select! {
            answer = &mut send => Some(answer),
            _ = connected.wait_for_connection_metadata() => None,
        }
    };
    match tokio::time::timeout(timeouts.connect, connecting).await {
        Err(_) => Err(Timeout::Connect),
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => tokio::time::timeout(timeouts.first_byte, send)
            .await
            .map_err(|_| Timeout::FirstByte),
    }
}

/// Whether the backend's answer failed because its head (status line and headers) was larger
/// than hyper accepts.
fn head_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the connection failed because the connector's own connect timeout ran out (an
/// `io::ErrorKind::TimedOut` in the error's sources).
fn connect_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = e.source();
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A 502 for a backend that failed before answering.
fn bad_gateway(message: impl Into<String>) -> GatewayError {
    GatewayError::Upstream(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        message,
    ))
}
