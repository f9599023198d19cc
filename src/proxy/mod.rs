//! The request pipeline, in the order of SPEC §5: route → authenticate → authorise → validate →
//! limit → reserve → call upstream → transcode → settle.

mod body;
mod conversations;
mod idempotency;
mod meter;
mod policy;

pub use body::{KeepAlive, StreamEnd, TranscodeBody};
pub use conversations::Conversations;
pub use meter::{GatewayMeter, Ids};
pub use policy::{Admission, Policy};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Config, FrontConfig, Upstream};
use crate::formats::{Aggregate, DecodeError, Decoder, EncodeOptions, Format, SyncContext};
use crate::fronts::{self, Api, ApiError, ChatRequest};
use crate::sse;
use crate::transcode::{Meter, Transcoder};
use crate::upstream::{self, Call};

/// An agent with its resolved backend and its own connection pool.
struct Agent {
    config: AgentConfig,
    base: Uri,
    client: upstream::Client,
}

/// Everything a request needs, built from one config snapshot.
pub struct Gateway {
    config: Arc<Config>,
    agents: HashMap<String, Agent>,
    conversations: Conversations,
    policy: Arc<Policy>,
    /// Cancelled when the drain timeout of a shutdown has passed: open streams end then.
    streams_end: CancellationToken,
    /// Each front's OpenAPI document, by (listener, prefix).
    openapi: HashMap<(SocketAddr, String), Bytes>,
}

/// Per-request facts carried through the pipeline and into the log line.
struct Ctx {
    request_id: String,
    started: Instant,
    front: Api,
    agent: Option<String>,
    upstream_api: Option<Api>,
}

impl Gateway {
    /// `demo` maps the ids of `upstream = "demo"` agents to where their demo backend listens.
    pub fn new(
        config: Arc<Config>,
        demo: &HashMap<String, SocketAddr>,
        policy: Arc<Policy>,
        streams_end: CancellationToken,
    ) -> Result<Self, String> {
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
            let client = upstream::client(a.timeouts.connect);
            agents.insert(
                a.id.clone(),
                Agent {
                    config: a.clone(),
                    base,
                    client,
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
        Ok(Gateway {
            openapi,
            config,
            agents,
            conversations: Conversations::default(),
            policy,
            streams_end,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves one request that arrived on the listener configured as `listen`.
    pub async fn handle(
        self: Arc<Self>,
        listen: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<GatewayBody> {
        let path = req.uri().path();
        if matches!(path, "/healthz" | "/readyz") {
            return json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"));
        }
        let Some((front, rest)) = self.front_for(listen, path) else {
            return error_response(&ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no API is mounted at this path",
            ));
        };
        if rest == crate::openapi::DOCUMENT_PATH {
            return self.openapi_document(front, req.method());
        }
        let Some(route) = fronts::match_chat(front.api, rest) else {
            return error_response(&ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            ));
        };
        if req.method() != Method::POST {
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
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut ctx = Ctx {
            request_id,
            started: Instant::now(),
            front: front.api,
            agent: None,
            upstream_api: None,
        };
        // Boxed: hyper keeps an HTTP/1.1 connection's request future allocated for the
        // connection's life, so the pipeline's (≈ 2.7 KiB) is freed once it has answered.
        let chat = Box::pin(self.clone().chat(&front, route, req, &mut ctx));
        let response = match chat.await {
            Ok(response) => response,
            Err(e) => {
                log_request(&ctx, e.status, 0, Some(&e.message));
                error_response(&e)
            }
        };
        with_request_id(response, &ctx.request_id)
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

    fn front_for<'p>(&self, listen: SocketAddr, path: &'p str) -> Option<(&FrontConfig, &'p str)> {
        self.config
            .fronts_on(listen)
            .filter_map(|f| {
                let rest = path.strip_prefix(f.prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some((f, rest))
            })
            .max_by_key(|(f, _)| f.prefix.len())
    }

    async fn chat(
        self: Arc<Self>,
        front: &FrontConfig,
        route: fronts::ChatRoute,
        req: Request<Incoming>,
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
        let agent = self
            .agents
            .get(&route.agent_id)
            .filter(|_| api != Api::Pharen || uuid::Uuid::parse_str(&route.agent_id).is_ok())
            .filter(|a| key.as_ref().is_none_or(|k| k.may_access(&a.config.id)))
            .ok_or_else(|| ApiError::agent_not_found(api))?;
        ctx.agent = Some(agent.config.id.clone());
        ctx.upstream_api = Some(agent.config.upstream_api);

        // Validate the body (413, 400/422).
        let wants_sse = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let (parts, body) = req.into_parts();
        let body = read_body(
            api,
            body,
            &parts.headers,
            self.config.server().max_body_bytes,
        )
        .await?;
        let chat = fronts::parse_chat(api, &body, wants_sse, route.stream_path)?;

        // A retry of an answered request is answered again, not run (nor charged) again.
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
            .admit(key, &agent.config, chat.stream, &ctx.request_id)
            .await?;
        if !agent.config.enabled {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "agent_not_running",
                "agent is not running",
            ));
        }
        let account = admission.account().to_owned();
        let conversation = self
            .conversations
            .resolve(&account, &agent.config.id, api, &chat.conversation)
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "conversation not found")
            })?;
        let ids = Ids {
            conversation_id: conversation.client_id.clone(),
            message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            user_message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            user_id: chat.user_id.clone(),
        };
        let backend_conversation = conversation.backend_id.as_deref();
        let response = self
            .call_upstream(agent, &chat, backend_conversation, &parts, ctx)
            .await?;
        // Usage shown = credits charged: nothing on a front that requires no key.
        let pricing = match admission.reservation {
            Some(_) => agent.config.credits,
            None => crate::config::AgentCredits {
                per_message: 0.0,
                max_usage: 0.0,
                per_1k_output_chars: 0.0,
            },
        };
        let meter = GatewayMeter::new(api, ids, pricing);
        let upstream_format = upstream::stream_format(agent.config.upstream_api);
        let rate_headers = std::mem::take(&mut admission.headers);
        let idem_requested = idem.is_some();
        let record = {
            let gateway = self.clone();
            let agent_id = agent.config.id.clone();
            let client_id = conversation.client_id;
            move |meter: &GatewayMeter| {
                if meter.finished() || meter.backend_conversation.is_some() {
                    let backend = meter.backend_conversation.as_deref();
                    gateway
                        .conversations
                        .record(&account, &agent_id, &client_id, backend);
                }
            }
        };
        if chat.stream {
            let transcoder = Transcoder::new(
                upstream_format,
                front.format,
                EncodeOptions {
                    event_lines: front.event_lines,
                    tools_as_text: front.tools_as_text,
                },
                meter,
            );
            let log_ctx = Ctx {
                request_id: ctx.request_id.clone(),
                started: ctx.started,
                front: ctx.front,
                agent: ctx.agent.clone(),
                upstream_api: ctx.upstream_api,
            };
            let keepalive = admission.reservation.as_ref().map(|reservation| {
                let store = self.policy.store.clone();
                let id = reservation.request_id().to_owned();
                let timeout = self.config.store().reservation_timeout;
                KeepAlive {
                    every: timeout / 3,
                    hook: Box::new(move || {
                        let (store, id) = (store.clone(), id.clone());
                        let expires_at = crate::store::now_ms()
                            .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                        tokio::spawn(async move {
                            if let Err(e) = store.extend(&id, expires_at).await {
                                tracing::warn!(request_id = %id, error = %e, "reservation not extended");
                            }
                        });
                    }),
                }
            });
            // Runs when the response body is dropped, however the stream ended (finished,
            // failed, client gone): the one place a streamed answer is settled, exactly once
            // (`settle_now` consumes the reservation).
            let on_end = Box::new(move |end: StreamEnd<'_>| {
                record(end.meter);
                // Only an answer the client got whole is kept for replay.
                if let (Some(guard), Some(bytes)) = (idem, end.captured) {
                    if end.delivered && end.failure.is_none() && end.meter.finished() {
                        guard.complete(StatusCode::OK, "text/event-stream", bytes);
                    }
                }
                let charged = admission.settle(end.meter.final_charge());
                log_request(&log_ctx, StatusCode::OK, end.bytes_out, end.failure);
                tracing::debug!(charged, "settled");
            });
            let capture = idem_requested;
            let body = TranscodeBody::new(
                response.into_body(),
                transcoder,
                agent.config.timeouts.idle,
                self.streams_end.clone(),
                on_end,
                keepalive,
            );
            let body = if capture { body.capture_output() } else { body };
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
            )
            .await;
            // The client gets a 502 and no answer: nothing is charged.
            let (aggregate, meter) =
                answer.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e))?;
            record(&meter);
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
            let body = Bytes::from(aggregate.body(api, &sync).to_string());
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
        parts: &http::request::Parts,
        ctx: &Ctx,
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
            traceparent: parts.headers.get("traceparent"),
            tracestate: parts.headers.get("tracestate"),
        };
        let request = call
            .request()
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()))?;
        let timeouts = agent.config.timeouts;
        let response = tokio::time::timeout(
            timeouts.connect + timeouts.first_byte,
            agent.client.request(request),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the agent's backend did not answer in time",
            )
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
        Ok(response)
    }
}

/// Reads a whole upstream stream into an answer, for sync requests.
async fn aggregate(
    mut body: Incoming,
    format: Format,
    mut meter: GatewayMeter,
    idle: Duration,
) -> Result<(Aggregate, GatewayMeter), String> {
    let mut parser = sse::Parser::default();
    let mut decoder = Decoder::new(format);
    let mut aggregate = Aggregate::default();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(format!(
                    "upstream sent nothing for {} s",
                    idle.as_secs_f64()
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("upstream connection failed: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        parser
            .feed::<DecodeError, _>(data, |e| {
                decoder.decode(&e, &mut |mut ev| {
                    let _ = meter.on_event(&mut ev);
                    aggregate.push(&ev);
                })
            })
            .map_err(|e| e.to_string())?;
        if aggregate.finished || aggregate.error.is_some() {
            break;
        }
    }
    if !aggregate.finished && aggregate.error.is_none() {
        decoder.end().map_err(|e| e.to_string())?;
    }
    if let Some(e) = &aggregate.error {
        return Err(format!("the agent's backend failed: {e}"));
    }
    Ok((aggregate, meter))
}

async fn read_body(
    api: Api,
    body: Incoming,
    headers: &http::HeaderMap,
    max: usize,
) -> Result<Bytes, ApiError> {
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
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(
            api,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn log_request(ctx: &Ctx, status: StatusCode, bytes: u64, failure: Option<&str>) {
    tracing::info!(
        request_id = %ctx.request_id,
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

/// A response body: a whole JSON body, or a live transcoded stream.
pub enum GatewayBody {
    Full(Option<Bytes>),
    Stream(Box<TranscodeBody>),
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Stream(s) => s.size_hint(),
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
