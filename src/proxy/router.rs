//! The router: CORS, health and readiness, which front a path is mounted on and what it asks
//! for (a chat, a team chat, the conversations API, the OpenAPI document); then the one place
//! every answer is counted, logged and given its `x-request-id`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use super::error::GatewayError;
use super::request::{begin, log_request, Ctx};
use super::response::{json_response, with_request_id, GatewayBody};
use super::{Gateway, Policy};
use crate::config::{Config, FrontConfig};
use crate::fronts::cors::Cors;
use crate::fronts::{self, Api, ApiError};
use crate::metrics::{FrontLabel, Metrics, RateLimitLabels, RequestLabels};

/// What a path of a front asks for: a chat, or one of the other endpoints.
enum Work {
    Chat(fronts::ChatRoute),
    Other(fronts::Route),
}

impl Gateway {
    /// Serves one request that arrived on the listener configured as `listen`: CORS (SPEC §11)
    /// around the front's answer — a preflight from an allowed origin is answered here, before
    /// any key check, and every answer to an allowed origin carries the CORS headers.
    pub async fn handle(
        self: Arc<Self>,
        listen: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<GatewayBody> {
        let cors = {
            let snap = self.snapshot.load();
            let origins = front_for(&snap.config, listen, req.uri().path())
                .map_or(&[][..], |(front, _)| front.cors_origins.as_slice());
            Cors::new(origins, self.console.get().copied(), req.headers())
        };
        if let Some(headers) = cors.preflight(req.method(), req.headers()) {
            let mut r = Response::new(GatewayBody::Full(None));
            *r.status_mut() = StatusCode::NO_CONTENT;
            *r.headers_mut() = headers;
            return r;
        }
        let mut response = self.route(listen, req).await;
        cors.apply(response.headers_mut());
        response
    }

    /// Health, readiness, the front and its endpoint; then the work, and its answer recorded.
    async fn route(
        self: Arc<Self>,
        listen: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<GatewayBody> {
        let path = req.uri().path();
        if path == "/healthz" {
            return json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"));
        }
        if path == "/readyz" {
            let (status, body) = self.readiness().await;
            return json_response(status, body);
        }
        let snap = self.snapshot.load_full();
        let Some((front, rest)) = front_for(&snap.config, listen, path) else {
            return not_found("no API is mounted at this path").into_response(Api::Agents);
        };
        if rest == crate::openapi::DOCUMENT_PATH {
            return snap.openapi_document(front, req.method());
        }
        let work = match endpoint(front, rest, req.method()) {
            Ok(work) => work,
            Err(e) => return e.into_response(front.api),
        };
        // A path served by another API's module is that API's front from here on.
        let front = match &work {
            Work::Chat(fronts::ChatRoute { api: Some(api), .. }) => front.served_by(*api),
            _ => front.clone(),
        };
        let (mut ctx, trace) = begin(&req, front.api);
        let span = ctx.span.clone();
        let gateway = self.clone();
        // The larger arms are boxed so that this future stays small; the server boxes it
        // whole, so that it is freed once it has answered (see `accept_loop`).
        let result = match work {
            // A chat logs its own answer (a stream's at its end).
            Work::Chat(route) => {
                let chat = gateway.chat(&snap, &front, route, req, &trace, &mut ctx);
                Box::pin(chat.instrument(span.clone())).await
            }
            Work::Other(route @ (fronts::Route::Models | fronts::Route::Model { .. })) => {
                let models = gateway.models(&snap, &front, route, req, &mut ctx);
                let result = models.instrument(span.clone()).await;
                logged(&ctx, result)
            }
            Work::Other(route @ fronts::Route::TeamChat { .. }) => {
                let team = gateway.team_chat(&snap, &front, route, req, trace, &mut ctx);
                let result = Box::pin(team.instrument(span.clone())).await;
                logged(&ctx, result.map_err(GatewayError::from))
            }
            Work::Other(route) => {
                let api = gateway.conversations_api(&snap, &front, route, req, &mut ctx);
                let result = Box::pin(api.instrument(span.clone())).await;
                logged(&ctx, result)
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => self.refused(&ctx, e),
        };
        self.answered(&ctx, response)
    }

    /// An error answer: counted when a limit refused it, logged with its kind, rendered in the
    /// front's error body.
    fn refused(&self, ctx: &Ctx, e: GatewayError) -> Response<GatewayBody> {
        if let Some(limit) = e.limit() {
            self.metrics
                .rate_limited
                .get_or_create(&RateLimitLabels {
                    front: ctx.front.as_str(),
                    agent: ctx.agent.clone().unwrap_or_else(no_agent),
                    limit: limit.as_str(),
                })
                .inc();
        }
        let kind = e.kind();
        let error = e.render(ctx.front);
        ctx.span.in_scope(|| {
            log_request(ctx, error.status, 0, Some(&error.message), Some(kind));
        });
        super::response::api_error_response(ctx.front, &error)
    }

    /// Every answer: the request counter, the overhead of a whole answer (a stream's is counted
    /// at its end), and `x-request-id`.
    fn answered(&self, ctx: &Ctx, response: Response<GatewayBody>) -> Response<GatewayBody> {
        let status = response.status();
        ctx.span.record("status", status.as_u16());
        self.metrics.request(&RequestLabels {
            front: ctx.front.as_str(),
            agent: ctx.agent.clone().unwrap_or_else(no_agent),
            upstream_api: ctx
                .upstream_api
                .map_or(crate::metrics::NO_AGENT, Api::as_str),
            status: status.as_u16(),
        });
        if !matches!(response.body(), GatewayBody::Stream(_)) && status.is_success() {
            let overhead = ctx.started.elapsed().saturating_sub(ctx.waited);
            Metrics::observe(
                &self.metrics.overhead.get_or_create(&FrontLabel {
                    front: ctx.front.as_str(),
                }),
                overhead,
            );
        }
        with_request_id(response, &ctx.request_id)
    }

    /// `/readyz`: ready when the config is loaded (always, once serving), the store answers
    /// and no shutdown has begun.
    pub async fn readiness(&self) -> (StatusCode, Bytes) {
        if self.draining.load(Ordering::Relaxed) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"{\"status\":\"draining\"}"),
            );
        }
        readiness(&self.policy).await
    }
}

/// What `rest` (the path after the front's prefix) asks for; 404 for no endpoint, 405 for a
/// chat not POSTed.
fn endpoint(front: &FrontConfig, rest: &str, method: &Method) -> Result<Work, GatewayError> {
    let work = match fronts::match_chat(front.api, rest) {
        Some(chat) => Work::Chat(chat),
        None => match fronts::match_route(front.api, rest) {
            Some(route) => Work::Other(route),
            None => return Err(not_found("no such endpoint")),
        },
    };
    if matches!(work, Work::Chat(_)) && method != Method::POST {
        return Err(GatewayError::Invalid(
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            )
            .with_header(http::header::ALLOW, HeaderValue::from_static("POST")),
        ));
    }
    Ok(work)
}

fn not_found(message: &'static str) -> GatewayError {
    GatewayError::Invalid(ApiError::new(StatusCode::NOT_FOUND, "not_found", message))
}

/// A non-chat answer's log line (an error's is written by [`Gateway::refused`]).
fn logged(
    ctx: &Ctx,
    result: Result<Response<GatewayBody>, GatewayError>,
) -> Result<Response<GatewayBody>, GatewayError> {
    if let Ok(r) = &result {
        ctx.span
            .in_scope(|| log_request(ctx, r.status(), 0, None, None));
    }
    result
}

/// The fronts on `listen` whose prefix starts `path` (the longest wins), and the rest of it.
pub(super) fn front_for<'c, 'p>(
    config: &'c Config,
    listen: SocketAddr,
    path: &'p str,
) -> Option<(&'c FrontConfig, &'p str)> {
    config
        .fronts_on(listen)
        .filter_map(|f| {
            let rest = path.strip_prefix(f.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((f, rest))
        })
        .max_by_key(|(f, _)| f.prefix.len())
}

pub(super) fn no_agent() -> Arc<str> {
    static NO_AGENT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NO_AGENT
        .get_or_init(|| Arc::from(crate::metrics::NO_AGENT))
        .clone()
}

/// 200 when the store commits a write within 2 s (and, for SQLite, the file at its path is
/// still the one it opened), 503 with the reason when not.
async fn readiness(policy: &Policy) -> (StatusCode, Bytes) {
    match tokio::time::timeout(Duration::from_secs(2), policy.store.probe()).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\",\"checks\":{\"config\":\"ok\",\"store\":\"ok\"}}"),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store is not reachable");
            let body = serde_json::json!({
                "status": "unavailable",
                "checks": { "config": "ok", "store": format!("error: {e}") },
            });
            (StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body.to_string()))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(
                b"{\"status\":\"unavailable\",\"checks\":{\"config\":\"ok\",\"store\":\"timeout\"}}",
            ),
        ),
    }
}
