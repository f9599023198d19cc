//! The request pipeline, in the order of SPEC §5: route → authenticate → authorise → validate →
//! limit → reserve → call upstream → transcode → settle.

mod body;
mod conversations;
mod history;
mod idempotency;
mod meter;
mod policy;
mod teams;

pub use body::{StreamEnd, TranscodeBody};
pub use meter::{GatewayMeter, Ids};
pub use policy::{Admission, Limiter, Policy, Pruned};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{AgentConfig, Config, FrontConfig, Upstream};
use crate::formats::{Aggregate, DecodeError, Decoder, EncodeOptions, Format, SyncContext};
use crate::fronts::cors::{ConsoleOrigin, Cors};
use crate::fronts::{self, Api, ApiError, ChatRequest};
use crate::metrics::{
    FrontAgent, FrontLabel, Metrics, RateLimitLabels, RequestLabels, UpstreamLabels,
};
use crate::sse;
use crate::transcode::{Meter, Transcoder};
use crate::upstream::{self, Call};

/// An agent with its resolved backend and its own connection pool.
struct Agent {
    config: AgentConfig,
    base: Uri,
    client: upstream::Client,
    /// The agent's id as a metrics label, interned once.
    label: Arc<str>,
    /// False while its health check fails (shared with the checker; kept across reloads).
    up: Arc<AtomicBool>,
}

/// What a config snapshot builds: the config and its agents. A reload swaps it whole; a
/// request loads it once, when it arrives, and keeps it to its end.
pub struct Snapshot {
    config: Arc<Config>,
    agents: HashMap<String, Agent>,
    /// Each front's OpenAPI document, by (listener, prefix).
    openapi: HashMap<(SocketAddr, String), Bytes>,
}

/// An agent's health check, as the checker runs it.
pub struct HealthTarget {
    pub agent: Arc<str>,
    pub uri: Uri,
    pub client: upstream::Client,
    pub up: Arc<AtomicBool>,
    pub every: Duration,
    pub timeout: Duration,
    /// The agent's `upstream_token`, sent as with chats.
    pub token: Option<crate::config::Secret>,
}

impl Snapshot {
    /// `demo` maps the ids of `upstream = "demo"` agents to where their demo backend listens.
    /// An agent of `previous` with the same backend keeps its connection pool and health.
    pub fn build(
        config: Arc<Config>,
        demo: &HashMap<String, SocketAddr>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let mut agents = HashMap::new();
        for a in config.agents() {
            let base = match &a.upstream {
                Upstream::Http(uri) => uri.clone(),
                Upstream::Demo => {
                    let addr = demo
                        .get(&a.id)
                        .ok_or_else(|| format!("agent {}: demo backend not started", a.id))?;
                    format!("http://{addr}")
                        .parse()
                        .map_err(|e| format!("agent {}: {e}", a.id))?
                }
            };
            let old = previous.and_then(|p| p.agents.get(&a.id));
            let client = match old {
                Some(old)
                    if old.base == base && old.config.timeouts.connect == a.timeouts.connect =>
                {
                    old.client.clone()
                }
                _ => upstream::client(a.timeouts.connect),
            };
            let up = match old {
                Some(old) if old.base == base && old.config.health_check == a.health_check => {
                    old.up.clone()
                }
                _ => Arc::new(AtomicBool::new(true)),
            };
            agents.insert(
                a.id.clone(),
                Agent {
                    config: a.clone(),
                    base,
                    client,
                    label: Arc::from(a.id.as_str()),
                    up,
                },
            );
        }
        let openapi = config
            .fronts()
            .iter()
            .map(|f| {
                let doc = Bytes::from(crate::openapi::document(f).to_string());
                ((f.listen, f.prefix.clone()), doc)
            })
            .collect();
        Ok(Snapshot {
            config,
            agents,
            openapi,
        })
    }

    /// The agent a path names (see [`Config::find_agent`]: a UUID in either case).
    fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents
            .get(id)
            .or_else(|| self.agents.get(&self.config.find_agent(id)?.id))
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// `{prefix}/openapi.json`: the front's OpenAPI document, unauthenticated.
    fn openapi_document(&self, front: &FrontConfig, method: &Method) -> Response<GatewayBody> {
        if method != Method::GET && method != Method::HEAD {
            return error_response(
                &ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                )
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD")),
            );
        }
        let doc = self
            .openapi
            .get(&(front.listen, front.prefix.clone()))
            .cloned()
            .unwrap_or_else(|| Bytes::from(crate::openapi::document(front).to_string()));
        json_response(StatusCode::OK, doc)
    }

    /// False while the agent's health check fails (true for an agent without one).
    pub fn agent_up(&self, id: &str) -> bool {
        self.agents
            .get(id)
            .is_some_and(|a| a.up.load(Ordering::Relaxed))
    }

    /// The health checks of this snapshot's agents that have one.
    pub fn health_targets(&self) -> Vec<HealthTarget> {
        let mut targets = Vec::new();
        for agent in self.agents.values() {
            let Some(path) = &agent.config.health_check else {
                continue;
            };
            let base_path = agent.base.path().trim_end_matches('/');
            let uri = Uri::builder()
                .scheme(agent.base.scheme_str().unwrap_or("http"))
                .authority(agent.base.authority().map_or("", |a| a.as_str()))
                .path_and_query(format!("{base_path}{path}"))
                .build();
            let Ok(uri) = uri else {
                tracing::warn!(agent = %agent.config.id, "health check URL is invalid; not checked");
                continue;
            };
            let t = agent.config.timeouts;
            targets.push(HealthTarget {
                agent: agent.label.clone(),
                uri,
                client: agent.client.clone(),
                up: agent.up.clone(),
                every: agent.config.health_interval,
                timeout: (t.connect + t.first_byte).min(agent.config.health_interval),
                token: agent.config.upstream_token.clone(),
            });
        }
        targets
    }
}

/// Everything a request needs: the current config snapshot and the state that outlives it.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    /// Cancelled when the drain timeout of a shutdown has passed: open streams end then.
    streams_end: CancellationToken,
    /// Set when a shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// The admin listener's address, once bound: the console there may call the fronts (CORS).
    console: std::sync::OnceLock<ConsoleOrigin>,
}

/// Per-request facts carried through the pipeline and into the log line.
struct Ctx {
    /// The id echoed in `x-request-id` and logged: the client's, when it is a safe one
    /// ([`client_request_id`]), else [`Ctx::id`].
    request_id: String,
    /// agentgate's own id of the request: the id of everything stored for it (its credit
    /// reservation, team members' ids), never the client's (SPEC §11).
    id: String,
    started: Instant,
    started_ms: crate::store::UnixMs,
    front: Api,
    agent: Option<Arc<str>>,
    upstream_api: Option<Api>,
    /// Time spent waiting on the client's body and on the backend (not gateway overhead).
    waited: Duration,
    span: tracing::Span,
}

impl Ctx {
    fn new(request_id: String, id: String, front: Api, span: tracing::Span) -> Ctx {
        Ctx {
            request_id,
            id,
            started: Instant::now(),
            started_ms: crate::store::now_ms(),
            front,
            agent: None,
            upstream_api: None,
            waited: Duration::ZERO,
            span,
        }
    }

    /// A copy for the log line written when a stream ends.
    fn for_stream_end(&self) -> Ctx {
        Ctx {
            request_id: self.request_id.clone(),
            id: self.id.clone(),
            started: self.started,
            started_ms: self.started_ms,
            front: self.front,
            agent: self.agent.clone(),
            upstream_api: self.upstream_api,
            waited: self.waited,
            span: self.span.clone(),
        }
    }
}

/// What a path of a front asks for: a chat, or one of the other endpoints.
enum Work {
    Chat(fronts::ChatRoute),
    Other(fronts::Route),
}

/// The W3C trace context passed on to backends: `traceparent` and `tracestate`.
type Trace = (HeaderValue, Option<HeaderValue>);

impl Gateway {
    pub fn new(
        snapshot: Snapshot,
        policy: Arc<Policy>,
        metrics: Arc<Metrics>,
        streams_end: CancellationToken,
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
            return error_response(&ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no API is mounted at this path",
            ));
        };
        if rest == crate::openapi::DOCUMENT_PATH {
            return snap.openapi_document(front, req.method());
        }
        let work = match fronts::match_chat(front.api, rest) {
            Some(chat) => Work::Chat(chat),
            None => match fronts::match_route(front.api, rest) {
                Some(route) => Work::Other(route),
                None => {
                    return error_response(&ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "no such endpoint",
                    ))
                }
            },
        };
        if matches!(work, Work::Chat(_)) && req.method() != Method::POST {
            return error_response(
                &ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use POST",
                )
                .with_header(http::header::ALLOW, HeaderValue::from_static("POST")),
            );
        }
        let front = front.clone();
        let (mut ctx, trace) = begin(&req, front.api);
        let span = ctx.span.clone();
        let gateway = self.clone();
        let result = match work {
            // A chat logs its own answer (a stream's at its end).
            // Boxed: hyper keeps an HTTP/1.1 connection's request future allocated for the
            // connection's life, so the pipeline's (≈ 2.7 KiB) is freed once it has answered.
            Work::Chat(route) => {
                Box::pin(
                    gateway
                        .chat(&snap, &front, route, req, &trace, &mut ctx)
                        .instrument(span.clone()),
                )
                .await
            }
            Work::Other(route) => {
                let result = match route {
                    fronts::Route::TeamChat { .. } => {
                        Box::pin(
                            gateway
                                .team_chat(&snap, &front, route, req, trace, &mut ctx)
                                .instrument(span.clone()),
                        )
                        .await
                    }
                    _ => {
                        Box::pin(
                            gateway
                                .conversations_api(&snap, &front, route, req, &mut ctx)
                                .instrument(span.clone()),
                        )
                        .await
                    }
                };
                if let Ok(r) = &result {
                    span.in_scope(|| log_request(&ctx, r.status(), 0, None));
                }
                result
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                if e.status == StatusCode::TOO_MANY_REQUESTS {
                    self.metrics
                        .rate_limited
                        .get_or_create(&RateLimitLabels {
                            front: front.api.as_str(),
                            agent: ctx.agent.clone().unwrap_or_else(no_agent),
                            limit: policy::refusing_limit(&e),
                        })
                        .inc();
                }
                span.in_scope(|| log_request(&ctx, e.status, 0, Some(&e.message)));
                error_response(&e)
            }
        };
        let status = response.status();
        span.record("status", status.as_u16());
        self.metrics.request(&RequestLabels {
            front: front.api.as_str(),
            agent: ctx.agent.clone().unwrap_or_else(no_agent),
            upstream_api: ctx
                .upstream_api
                .map_or(crate::metrics::NO_AGENT, Api::as_str),
            status: status.as_u16(),
        });
        // A stream's overhead is counted at its end (it goes on in the body).
        if !matches!(response.body(), GatewayBody::Stream(_)) && status.is_success() {
            let overhead = ctx.started.elapsed().saturating_sub(ctx.waited);
            Metrics::observe(
                &self.metrics.overhead.get_or_create(&FrontLabel {
                    front: front.api.as_str(),
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

    async fn chat(
        self: Arc<Self>,
        snap: &Snapshot,
        front: &FrontConfig,
        route: fronts::ChatRoute,
        req: Request<Incoming>,
        trace: &Trace,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, ApiError> {
        let api = front.api;
        // Authenticate (401) and authorise the chat scope (403).
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let key = match front.require_key {
            true => Some(self.policy.authenticate(api, authorization).await?),
            false => None,
        };

        // The agent, as this front names it, within the key's agents (404; 403 on guayaba).
        if !api.agent_id_valid(&route.agent_id) {
            return Err(ApiError::agent_not_found(api, false));
        }
        let agent = Self::agent_for(snap, api, key.as_ref(), &route.agent_id)?;
        ctx.agent = Some(agent.label.clone());
        ctx.upstream_api = Some(agent.config.upstream_api);
        ctx.span.record("agent", agent.config.id.as_str());

        // Validate the body (413, 400/422).
        let wants_sse = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let (parts, body) = req.into_parts();
        let reading = Instant::now();
        let body = read_body(api, body, &parts.headers, snap.config.server()).await?;
        ctx.waited += reading.elapsed();
        let mut chat = fronts::parse_chat(api, &body, wants_sse, route.stream_path)?;
        // chatbase continues after a tool result without a message (seed 002); only a chatbase
        // backend can be asked to.
        if chat.message.is_none() && !agent.config.upstream_api.continues_without_message() {
            return Err(ApiError::invalid(
                api,
                format!(
                    "`message` is required: this agent's backend ({}) cannot continue a \
                     conversation without one",
                    agent.config.upstream_api
                ),
            ));
        }

        // A retry of an answered request is answered again, not run (nor charged) again; but
        // only to a key that may have made it: the stream scope is checked first.
        policy::stream_scope(key.as_ref(), chat.stream)?;
        let idem = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let value = value.to_str().unwrap_or_default();
                let account = key.as_ref().map_or(policy::ANONYMOUS, |k| k.account());
                let path = parts.uri.path();
                match idempotency::claim(&self.policy.ledger, account, value, path, &body).await? {
                    idempotency::Claim::Run(guard) => Some(guard),
                    idempotency::Claim::Replay {
                        status,
                        content_type,
                        body,
                    } => return Ok(replay(front.format, status, &content_type, body)),
                }
            }
        };

        // Stream scope (403), rate limits (429), credits (402). From here on the reservation
        // settles when it is dropped, at 0 until the backend answers: every early return
        // below charges nothing.
        let mut admission = self
            .policy
            .admit(key, &agent.config, chat.stream, &ctx.id)
            .await?;
        admission.count_credits(&self.metrics, &agent.label);
        if !agent.config.enabled || !agent.up.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "agent_not_running",
                "agent is not running",
            ));
        }
        let account = admission.account().to_owned();
        let conversation = conversations::resolve(
            &self.policy.store,
            &account,
            &agent.config.id,
            api,
            &chat.conversation,
        )
        .await
        .map_err(store_unavailable)?
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "conversation not found")
        })?;
        // The conversation keeps the `userId` it was opened with (SPEC §11).
        if let Some(stored) = &conversation.existing {
            chat.user_id = stored.clone();
        }
        let user_message_id = match chat.message {
            Some(_) => None,
            None => {
                if conversation.backend_id.is_none() {
                    return Err(ApiError::invalid(
                        api,
                        "`message` is required: this conversation has no answer to continue",
                    ));
                }
                conversations::last_user_message(
                    &self.policy.store,
                    &account,
                    &agent.config.id,
                    &conversation.client_id,
                )
                .await
                .map_err(store_unavailable)?
            }
        };
        let ids = Ids {
            conversation_id: api
                .client_conversation_id(&conversation.client_id)
                .into_owned(),
            message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            user_message_id: user_message_id
                .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple())),
            user_id: chat.user_id.clone(),
        };
        let backend_conversation = conversation.backend_id.as_deref();
        let response = self
            .call_upstream(agent, &chat, backend_conversation, trace, ctx)
            .await?;
        // Usage shown = credits charged: nothing on a front that requires no key, and never
        // more than was reserved.
        let pricing = admission.pricing(agent.config.credits);
        let meter = GatewayMeter::new(api, ids, pricing);
        let max_answer = snap.config.server().max_answer_bytes;
        let meter = match agent.config.record {
            true => meter.keep_transcript(max_answer),
            false => meter,
        };
        // The reservation is extended while the request lives, whatever the client's pace.
        let keepalive = admission.reservation.as_ref().map(|r| {
            policy::keep_alive(
                self.policy.store.clone(),
                r.request_id().to_owned(),
                snap.config.store().reservation_timeout,
            )
        });
        let upstream_format = upstream::stream_format(agent.config.upstream_api);
        let rate_headers = std::mem::take(&mut admission.headers);
        let idem_requested = idem.is_some();
        let pending = conversations::Pending {
            account,
            agent_id: agent.config.id.clone(),
            front: api,
            conversation_id: conversation.client_id,
            user_message: chat.message.clone(),
            user_id: chat.user_id.clone(),
            started_at: ctx.started_ms,
            record: agent.config.record,
        };
        if chat.stream {
            let transcoder = Transcoder::new(
                upstream_format,
                front.format,
                EncodeOptions {
                    event_lines: front.event_lines,
                    tools_as_text: front.tools_as_text,
                    ..Default::default()
                },
                meter,
            );
            let log_ctx = ctx.for_stream_end();
            // Gateway time before the stream starts: everything so far but the waits.
            let before_stream = ctx.started.elapsed().saturating_sub(ctx.waited);
            let metrics = self.metrics.clone();
            let stream_labels = FrontAgent {
                front: api.as_str(),
                agent: agent.label.clone(),
            };
            let open_streams = metrics.open_streams.get_or_create_owned(&FrontLabel {
                front: api.as_str(),
            });
            open_streams.inc();
            let agent_streams =
                metrics
                    .agent_open_streams
                    .get_or_create_owned(&crate::metrics::AgentLabel {
                        agent: agent.label.clone(),
                    });
            agent_streams.inc();
            // Runs when the response body is dropped, however the stream ended (finished,
            // failed, client gone): the one place a streamed answer is settled, exactly once
            // (`settle_now` consumes the reservation).
            let on_end = Box::new(move |end: StreamEnd<'_>| {
                drop(keepalive);
                // Only an answer the client got whole is kept for replay.
                if let (Some(guard), Some(bytes)) = (idem, end.captured) {
                    if end.delivered && end.failure.is_none() && end.meter.finished() {
                        guard.complete(StatusCode::OK, "text/event-stream", bytes);
                    }
                }
                let charged = admission.settle(end.meter.final_charge());
                open_streams.dec();
                agent_streams.dec();
                let m = &metrics;
                Metrics::observe(
                    &m.stream_duration.get_or_create(&stream_labels),
                    log_ctx.started.elapsed(),
                );
                if let Some(first) = end.first_byte {
                    Metrics::observe(
                        &m.stream_first_byte.get_or_create(&stream_labels),
                        first.saturating_duration_since(log_ctx.started),
                    );
                }
                Metrics::observe(
                    &m.overhead.get_or_create(&FrontLabel {
                        front: stream_labels.front,
                    }),
                    before_stream + end.busy,
                );
                log_ctx.span.in_scope(|| {
                    log_request(&log_ctx, StatusCode::OK, end.bytes_out, end.failure);
                    tracing::debug!(charged, "settled");
                });
            });
            let capture = idem_requested;
            let body = TranscodeBody::new(
                response.into_body(),
                transcoder,
                agent.config.timeouts.idle,
                self.streams_end.clone(),
                on_end,
            );
            let body = if capture { body.capture_output() } else { body };
            // The exchange is durable before the client sees the answer's end.
            let body = body.commit_before_end(pending.commit_hook(self.policy.store.clone()));
            Ok(with_headers(
                stream_response(front.format, body),
                rate_headers,
            ))
        } else {
            let answer = aggregate(
                response.into_body(),
                upstream_format,
                meter,
                agent.config.timeouts.idle,
                max_answer,
                &mut ctx.waited,
            )
            .await;
            drop(keepalive);
            let (aggregate, meter) = match answer {
                Ok(answer) => answer,
                // The client gets a 502 and no answer: nothing is charged.
                Err(SyncFailure::Backend(e)) => {
                    return Err(ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e))
                }
                // Too large to give: charged for what was produced (the 502 shows it).
                Err(SyncFailure::TooLarge(meter)) => {
                    let charged = admission.settle(meter.final_charge());
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "answer_too_large",
                        format!(
                            "the agent's answer is larger than {max_answer} bytes \
                             ([server] max_answer_bytes)"
                        ),
                    )
                    .with_details(serde_json::json!({
                        "max_answer_bytes": max_answer,
                        "usage": { "credits": history::credits_json(charged) },
                    })));
                }
            };
            // The exchange is durable before the client gets the answer; if it cannot be
            // made so, the client gets an error (and is charged nothing), never an answer
            // that history will not have.
            if let Some(exchange) = pending.exchange(&meter, crate::store::now_ms()) {
                if let Err(e) = self.policy.store.record_exchange(exchange).await {
                    tracing::error!(error = %e, "exchange not recorded");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the answer could not be recorded (the conversation store is unavailable)",
                    ));
                }
            }
            let charged = admission.settle(meter.final_charge());
            let ids = meter.ids();
            let sync = SyncContext {
                conversation_id: Some(ids.conversation_id.clone()),
                message_id: Some(ids.message_id.clone()),
                user_message_id: Some(ids.user_message_id.clone()),
                run_id: Some(ids.message_id.clone()),
                user_id: ids.user_id.clone(),
                agent_id: Some(agent.config.id.clone()),
                agent_name: Some(agent.config.name.clone()),
                credits: Some(charged),
            };
            let body = Bytes::from(api.sync_body(&aggregate, &sync).to_string());
            if let Some(guard) = idem {
                guard.complete(StatusCode::OK, "application/json", body.clone());
            }
            log_request(ctx, StatusCode::OK, body.len() as u64, None);
            Ok(with_headers(
                json_response(StatusCode::OK, body),
                rate_headers,
            ))
        }
    }

    async fn call_upstream(
        &self,
        agent: &Agent,
        chat: &ChatRequest,
        backend_conversation: Option<&str>,
        trace: &Trace,
        ctx: &mut Ctx,
    ) -> Result<Response<Incoming>, ApiError> {
        let call = Call {
            api: agent.config.upstream_api,
            base: &agent.base,
            agent_id: &agent.config.upstream_agent_id,
            token: agent.config.upstream_token.as_ref().map(|t| t.expose()),
            message: chat.message.as_deref(),
            conversation: backend_conversation,
            user_id: chat.user_id.as_deref(),
            options: &chat.options,
            request_id: &ctx.request_id,
            traceparent: Some(&trace.0),
            tracestate: trace.1.as_ref(),
        };
        let request = call
            .request()
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()))?;
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
            .map_err(|phase| {
                let message = match phase {
                    TimedOut::Connecting => "connecting to the agent's backend timed out",
                    TimedOut::FirstByte => "the agent's backend did not answer in time",
                };
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", message)
            })?
            .map_err(|e| {
                let timed_out = std::error::Error::source(&e)
                    .map(|s| s.to_string().contains("timed out"))
                    .unwrap_or(false);
                if timed_out {
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        "connecting to the agent's backend timed out",
                    )
                } else if head_too_large(&e) {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the agent's backend answered with response headers too large to accept",
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the agent's backend is unreachable",
                    )
                }
            })?;
        if !response.status().is_success() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the agent's backend answered with an error",
            )
            .with_details(serde_json::json!({ "upstream_status": response.status().as_u16() })));
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
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the agent's backend answered with something other than an event stream",
                )
                .with_details(serde_json::json!({
                    "upstream_content_type": String::from_utf8_lossy(ct.as_bytes()),
                })));
            }
        }
        Ok(response)
    }
}

/// Which wait of [`send_upstream`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimedOut {
    Connecting,
    FirstByte,
}

/// Sends `request` with two consecutive deadlines: `connect` for a connection (a new one, or
/// one taken from the pool), then `first_byte` for the response head, counted from the moment
/// the connection is ready — so `first_byte_timeout_ms` holds on its own, not added to the
/// connect timeout.
async fn send_upstream(
    client: &upstream::Client,
    mut request: Request<http_body_util::Full<Bytes>>,
    timeouts: crate::config::UpstreamTimeouts,
) -> Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, TimedOut> {
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
        Err(_) => Err(TimedOut::Connecting),
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => tokio::time::timeout(timeouts.first_byte, send)
            .await
            .map_err(|_| TimedOut::FirstByte),
    }
}

/// Why a sync answer was not given.
enum SyncFailure {
    /// The backend failed (error, timeout, a stream that is not one): nothing is charged.
    Backend(String),
    /// The answer passed `[server] max_answer_bytes`; reading stopped there.
    TooLarge(Box<GatewayMeter>),
}

impl std::fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncFailure::Backend(e) => f.write_str(e),
            SyncFailure::TooLarge(_) => f.write_str("the answer is larger than max_answer_bytes"),
        }
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

/// Reads a whole upstream stream into an answer, for sync requests.
async fn aggregate(
    body: Incoming,
    format: Format,
    meter: GatewayMeter,
    idle: Duration,
    limit: usize,
    waited: &mut Duration,
) -> Result<(Aggregate, GatewayMeter), SyncFailure> {
    aggregate_with(body, format, meter, idle, limit, waited, &mut |_| {}).await
}

/// [`aggregate`], showing each event (after metering) to `on_event` as it arrives. At most
/// `limit` answer bytes are gathered: past them reading stops ([`SyncFailure::TooLarge`]).
async fn aggregate_with(
    mut body: Incoming,
    format: Format,
    mut meter: GatewayMeter,
    idle: Duration,
    limit: usize,
    waited: &mut Duration,
    on_event: &mut (dyn FnMut(&crate::formats::Event<'_>) + Send),
) -> Result<(Aggregate, GatewayMeter), SyncFailure> {
    let mut parser = sse::Parser::default();
    let mut decoder = Decoder::new(format);
    let mut aggregate = Aggregate::default();
    let mut bytes = 0usize;
    let mut too_large = false;
    loop {
        let reading = Instant::now();
        let frame = tokio::time::timeout(idle, body.frame()).await;
        *waited += reading.elapsed();
        let frame = match frame {
            Err(_) => {
                return Err(SyncFailure::Backend(format!(
                    "upstream sent nothing for {} s",
                    idle.as_secs_f64()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(SyncFailure::Backend(format!(
                    "upstream connection failed: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        parser
            .feed::<DecodeError, _>(data, |e| {
                decoder.decode_chunks(&e, &mut |mut ev, chunk| {
                    if too_large {
                        return;
                    }
                    bytes += meter::answer_bytes(&ev);
                    if bytes > limit {
                        too_large = true;
                        return;
                    }
                    let _ = meter.on_event(&mut ev, chunk);
                    on_event(&ev);
                    aggregate.push(&ev);
                })
            })
            .map_err(|e| SyncFailure::Backend(e.to_string()))?;
        if too_large {
            return Err(SyncFailure::TooLarge(Box::new(meter)));
        }
        if aggregate.finished || aggregate.error.is_some() {
            break;
        }
    }
    if !aggregate.finished && aggregate.error.is_none() {
        decoder
            .end()
            .map_err(|e| SyncFailure::Backend(e.to_string()))?;
    }
    if let Some(e) = &aggregate.error {
        return Err(SyncFailure::Backend(format!(
            "the agent's backend failed: {e}"
        )));
    }
    Ok((aggregate, meter))
}

async fn read_body(
    api: Api,
    body: Incoming,
    headers: &http::HeaderMap,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, ApiError> {
    let max = server.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let reading = http_body_util::Limited::new(body, max).collect();
    let Ok(collected) = tokio::time::timeout(server.body_read_timeout, reading).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                server.body_read_timeout.as_secs()
            ),
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(
            api,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// The fronts on `listen` whose prefix starts `path` (the longest wins), and the rest of it.
fn front_for<'c, 'p>(
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

fn no_agent() -> Arc<str> {
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

/// The W3C trace context passed to the backend: the client's `traceparent` (and `tracestate`)
/// when it is valid (`true`), else a new trace started here (and no `tracestate`, as the spec
/// says).
fn trace_context(headers: &http::HeaderMap) -> (HeaderValue, Option<HeaderValue>, bool) {
    if let Some(tp) = headers.get("traceparent") {
        if valid_traceparent(tp.as_bytes()) {
            return (tp.clone(), headers.get("tracestate").cloned(), true);
        }
    }
    let trace: u128 = rand::random::<u128>().max(1);
    let parent: u64 = rand::random::<u64>().max(1);
    let value = format!("00-{trace:032x}-{parent:016x}-01");
    (
        HeaderValue::from_str(&value).expect("hex digits and dashes are a valid header value"),
        None,
        false,
    )
}

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero, version not `ff`
/// (a longer value is allowed for versions after 00, as the spec asks).
fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |b: &[u8]| b.iter().all(|&c| c == b'0');
    if v.len() < 55 || (v.len() > 55 && (&v[..2] == b"00" || v[55] != b'-')) {
        return false;
    }
    hex(&v[..2])
        && &v[..2] != b"ff"
        && v[2] == b'-'
        && hex(&v[3..35])
        && !zero(&v[3..35])
        && v[35] == b'-'
        && hex(&v[36..52])
        && !zero(&v[36..52])
        && v[52] == b'-'
        && hex(&v[53..55])
}

/// The trace id of a valid `traceparent`.
fn trace_id(tp: &HeaderValue) -> &str {
    tp.to_str().ok().and_then(|s| s.get(3..35)).unwrap_or("-")
}

/// The store failed a read or write a request needs: 503 in the front's error body.
fn store_unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the conversation store is unavailable",
    )
}

/// Longest client `x-request-id` taken as the request's id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `x-request-id` when it is 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._:-]` (so it cannot forge fields in a log line); `None` otherwise.
fn client_request_id(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get("x-request-id")?.to_str().ok()?;
    let safe = (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    safe.then_some(v)
}

/// The start of a request: its ids (the client's safe `X-Request-Id` to echo and log, else a
/// new one; agentgate's own for what it stores), its span and the trace context passed on to
/// backends.
fn begin<B>(req: &Request<B>, front: Api) -> (Ctx, Trace) {
    let id = uuid::Uuid::new_v4().to_string();
    let request_id = client_request_id(req.headers()).map_or_else(|| id.clone(), str::to_owned);
    let (traceparent, tracestate, given) = trace_context(req.headers());
    // `&str` values, which text logs print quoted.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_str(),
        front = front.as_str(),
        trace_id = tracing::field::Empty,
        agent = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let client_tp = given.then(|| traceparent.clone());
    let traceparent = crate::telemetry::link(&span, client_tp.as_ref(), traceparent);
    span.record("trace_id", trace_id(&traceparent));
    (
        Ctx::new(request_id, id, front, span),
        (traceparent, tracestate),
    )
}

fn log_request(ctx: &Ctx, status: StatusCode, bytes: u64, failure: Option<&str>) {
    tracing::info!(
        request_id = ctx.request_id.as_str(),
        front = ctx.front.as_str(),
        agent = ctx.agent.as_deref().unwrap_or("-"),
        upstream_api = ctx.upstream_api.map_or("-", Api::as_str),
        status = status.as_u16(),
        bytes,
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        failure,
        "request"
    );
}

/// A response body: a whole JSON body, a live transcoded stream, or chunks written by a task
/// (team chat's stream).
pub enum GatewayBody {
    Full(Option<Bytes>),
    Stream(Box<TranscodeBody>),
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GatewayBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
            GatewayBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Stream(s) => s.is_end_stream(),
            GatewayBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Stream(s) => s.size_hint(),
            GatewayBody::Channel(_) => SizeHint::default(),
        }
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::Full(Some(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error_response(e: &ApiError) -> Response<GatewayBody> {
    let mut r = json_response(e.status, e.body());
    for (name, value) in &e.headers {
        r.headers_mut().append(name, value.clone());
    }
    r
}

fn stream_response(format: Format, body: TranscodeBody) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::Stream(Box::new(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if format == Format::UiMessage {
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
    }
    r
}

/// An answer given before, sent again for a retry with the same `Idempotency-Key`.
fn replay(
    format: Format,
    status: StatusCode,
    content_type: &str,
    body: Bytes,
) -> Response<GatewayBody> {
    let mut r = json_response(status, body);
    let h = r.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, ct);
    }
    if content_type == "text/event-stream" && format == Format::UiMessage {
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

fn with_headers(mut r: Response<GatewayBody>, headers: http::HeaderMap) -> Response<GatewayBody> {
    r.headers_mut().extend(headers);
    r
}

fn with_request_id(mut r: Response<GatewayBody>, request_id: &str) -> Response<GatewayBody> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation_follows_w3c() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok.as_bytes()));
        // A later version may append fields after a dash.
        assert!(valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 has no tail
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(!valid_traceparent(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn only_safe_client_request_ids_are_taken() {
        let id = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-request-id", HeaderValue::from_str(v).unwrap());
            client_request_id(&headers).map(str::to_owned)
        };
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        for ok in ["abc", "A-1.b_2:c", longest.as_str()] {
            assert_eq!(id(ok).as_deref(), Some(ok));
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            "",
            "a b",
            r#"x status=200 agent="forged""#,
            "a/b",
            long.as_str(),
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        assert_eq!(client_request_id(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_missing_or_bad_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("tracestate", HeaderValue::from_static("a=1"));
        let (tp, ts, given) = trace_context(&headers);
        assert!(!given);
        assert!(valid_traceparent(tp.as_bytes()), "{tp:?}");
        assert_eq!(ts, None);
        assert_eq!(trace_id(&tp).len(), 32);
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        let (tp2, _, _) = trace_context(&headers);
        assert!(valid_traceparent(tp2.as_bytes()) && tp2 != tp);
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        headers.insert("traceparent", HeaderValue::from_static(given));
        let (tp3, ts3, was_given) = trace_context(&headers);
        assert!(was_given);
        assert_eq!(tp3, given);
        assert_eq!(ts3, Some(HeaderValue::from_static("a=1")));
        assert_eq!(trace_id(&tp3), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
