//! The chat pipeline, in the order of SPEC §5: authenticate → validate → admit (limits,
//! reservation, conversation) → call upstream → transcode (a stream) or aggregate (a sync
//! answer) → settle. Each phase is one function; [`Gateway::chat`] runs them in order.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::aggregate::{aggregate, SyncFailure};
use super::error::GatewayError;
use super::history::credits_json;
use super::idempotency::{self, IdemGuard};
use super::meter::{ChatMeter, Ids};
use super::policy::{self, Admission};
use super::request::{log_request, read_body, Ctx};
use super::response::{json_response, replay, stream_response, with_headers, GatewayBody};
use super::settlement::StreamSettlement;
use super::snapshot::{Agent, Snapshot};
use super::{conversations, Gateway, TranscodeBody};
use crate::apis::HistoryMessage;
use crate::apis::{check_conversation_key, Conversation};
use crate::auth::KeyInfo;
use crate::config::FrontConfig;
use crate::formats::{EncodeOptions, SyncContext};
use crate::fronts::{self, Api, ApiError, ChatRequest};
use crate::telemetry::TraceContext;
use crate::transcode::Transcoder;

/// A chat's body, read and parsed.
struct ReadChat {
    parts: http::request::Parts,
    body: Bytes,
    chat: ChatRequest,
}

/// A chat that passed validation: who asks, which agent, what.
struct Validated<'s> {
    agent: &'s Agent,
    key: Option<KeyInfo>,
    chat: ChatRequest,
    /// The claimed `Idempotency-Key`, if the client sent one.
    idempotency: Option<IdemGuard>,
}

/// A chat admitted to run: its reservation and rate-limit headers, its conversation, and the
/// ids its answer carries.
struct Admitted<'s> {
    agent: &'s Agent,
    chat: ChatRequest,
    idempotency: Option<IdemGuard>,
    admission: Admission,
    conversation: conversations::Resolved,
    /// Meters the answer: usage, charge, and its transcript when the agent records.
    meter: ChatMeter,
}

impl Gateway {
    /// One chat, phase by phase.
    pub(super) async fn chat(
        self: Arc<Self>,
        snap: &Snapshot,
        front: &FrontConfig,
        route: fronts::ChatRoute,
        req: Request<Incoming>,
        trace: &TraceContext,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let key = self.authenticate(front, req.headers()).await?;
        let (agent, read) = match route.agent_id.as_deref() {
            Some(id) => {
                let agent = Self::chat_agent(snap, front.api, key.as_ref(), id, ctx)?;
                (
                    agent,
                    self.read_chat(snap, front.api, &route, req, ctx).await?,
                )
            }
            // The body names the agent (the OpenAI APIs' `model`): it is read first.
            None => {
                let read = self.read_chat(snap, front.api, &route, req, ctx).await?;
                let id = snap.model_agent(read.chat.agent.as_deref().unwrap_or_default());
                let agent = Self::chat_agent(snap, front.api, key.as_ref(), id, ctx)?;
                (agent, read)
            }
        };
        let validated = match self.validate(front, agent, key, read).await? {
            Ok(validated) => validated,
            Err(replayed) => return Ok(replayed),
        };
        let mut admitted = self.admit(snap, front.api, validated, ctx).await?;
        let backend_conversation = admitted.conversation.backend_id.clone();
        let history = self.upstream_history(snap, &admitted).await?;
        let response = self
            .call_upstream(
                admitted.agent,
                &admitted.chat,
                backend_conversation.as_deref(),
                &history,
                trace,
                ctx,
            )
            .await?;
        let mut headers = std::mem::take(&mut admitted.admission.headers);
        if let Some(name) = front.api.conversation_header() {
            let id = &admitted.meter.ids().conversation_id;
            if let Ok(value) = http::HeaderValue::from_str(id) {
                headers.insert(name, value);
            }
        }
        let response = match admitted.chat.stream {
            true => self.transcode(snap, front, admitted, response.into_body(), ctx),
            false => {
                self.answer(snap, front.api, admitted, response, ctx)
                    .await?
            }
        };
        Ok(with_headers(response, headers))
    }

    /// The conversation's recorded messages, oldest first, for a backend that keeps no
    /// conversation (openai-chat, SPEC §10): at most the agent's `history_messages`, and at
    /// most `[server] max_answer_bytes` of text. Empty for other backends and new
    /// conversations.
    async fn upstream_history(
        &self,
        snap: &Snapshot,
        a: &Admitted<'_>,
    ) -> Result<Vec<HistoryMessage>, GatewayError> {
        let config = &a.agent.config;
        if !config.upstream_api.upstream_takes_history()
            || a.conversation.existing.is_none()
            || config.history_messages == 0
        {
            return Ok(Vec::new());
        }
        conversations::recent_messages(
            &self.policy.store,
            a.admission.account(),
            &config.id,
            &a.conversation.client_id,
            config.history_messages,
            snap.config.server().max_answer_bytes,
        )
        .await
        .map_err(|e| GatewayError::store("the conversation store is unavailable", e))
    }

    /// Authenticate (401) and authorise the chat scope (403); no key on an open front.
    async fn authenticate(
        &self,
        front: &FrontConfig,
        headers: &http::HeaderMap,
    ) -> Result<Option<KeyInfo>, GatewayError> {
        if !front.require_key {
            return Ok(None);
        }
        let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(Some(
            self.policy.authenticate(front.api, authorization).await?,
        ))
    }

    /// The agent, as this front names it, within the key's agents (404; 403 on guayaba).
    fn chat_agent<'s>(
        snap: &'s Snapshot,
        api: Api,
        key: Option<&KeyInfo>,
        agent_id: &str,
        ctx: &mut Ctx,
    ) -> Result<&'s Agent, GatewayError> {
        if !api.agent_id_valid(agent_id) {
            return Err(GatewayError::Invalid(ApiError::agent_not_found(api, false)));
        }
        let agent = Self::agent_for(snap, api, key, agent_id)?;
        ctx.agent = Some(agent.label.clone());
        ctx.upstream_api = Some(agent.config.upstream_api);
        ctx.span.record("agent", agent.config.id.as_str());
        Ok(agent)
    }

    /// Reads and parses the body (413, 400/422); the conversation a header names where the
    /// API reads one ([`crate::apis::ChatApi::conversation_header`]) and the body names none.
    async fn read_chat(
        &self,
        snap: &Snapshot,
        api: Api,
        route: &fronts::ChatRoute,
        req: Request<Incoming>,
        ctx: &mut Ctx,
    ) -> Result<ReadChat, GatewayError> {
        let wants_sse = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let (parts, body) = req.into_parts();
        let reading = std::time::Instant::now();
        let body = read_body(api, body, &parts.headers, snap.config.server()).await?;
        ctx.waited += reading.elapsed();
        let mut chat = fronts::parse_chat(api, &body, wants_sse, route.stream_path)
            .map_err(GatewayError::Invalid)?;
        let header = api.conversation_header().and_then(|h| parts.headers.get(h));
        if let (Conversation::New, Some(value)) = (&chat.conversation, header) {
            let id = value.to_str().unwrap_or_default();
            check_conversation_key(api.spec(), "x-conversation-id", id)
                .map_err(GatewayError::Invalid)?;
            chat.conversation = Conversation::Existing(id.to_owned());
        }
        Ok(ReadChat { parts, body, chat })
    }

    /// Validates a chat read: a message where the backend needs one, the stream scope. A retry
    /// of an answered request is answered again (`Err` with the replay), not run nor charged
    /// again; but only to a key that may have made it: the stream scope is checked first.
    async fn validate<'s>(
        &self,
        front: &FrontConfig,
        agent: &'s Agent,
        key: Option<KeyInfo>,
        read: ReadChat,
    ) -> Result<Result<Validated<'s>, Response<GatewayBody>>, GatewayError> {
        let api = front.api;
        let ReadChat { parts, body, chat } = read;
        // chatbase continues after a tool result without a message (seed 002); only a chatbase
        // backend can be asked to.
        if chat.message.is_none() && !agent.config.upstream_api.continues_without_message() {
            return Err(GatewayError::Invalid(ApiError::invalid(
                api,
                format!(
                    "`message` is required: this agent's backend ({}) cannot continue a \
                     conversation without one",
                    agent.config.upstream_api
                ),
            )));
        }
        policy::stream_scope(key.as_ref(), chat.stream)?;
        let idempotency = match parts.headers.get("idempotency-key") {
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
                    } => return Ok(Err(replay(front.format, status, &content_type, body))),
                }
            }
        };
        Ok(Ok(Validated {
            agent,
            key,
            chat,
            idempotency,
        }))
    }

    /// Stream scope (403), rate limits (429), credits (402), a running agent (409): the
    /// admission every chat with an agent passes, team members' included. From here on the
    /// reservation settles when it is dropped, at 0 until the backend answers: every early
    /// return after it charges nothing.
    pub(super) async fn admit_agent(
        &self,
        key: Option<KeyInfo>,
        agent: &Agent,
        stream: bool,
        request_id: &str,
    ) -> Result<Admission, GatewayError> {
        let mut admission = self
            .policy
            .admit(key, &agent.config, stream, request_id)
            .await?;
        admission.count_credits(&self.metrics, &agent.label);
        if !agent.running() {
            return Err(GatewayError::AgentNotRunning);
        }
        Ok(admission)
    }

    /// Admission, then the conversation the chat continues (404 when it is not the account's)
    /// and the ids of its answer.
    async fn admit<'s>(
        &self,
        snap: &Snapshot,
        api: Api,
        v: Validated<'s>,
        ctx: &Ctx,
    ) -> Result<Admitted<'s>, GatewayError> {
        let Validated {
            agent,
            key,
            mut chat,
            idempotency,
        } = v;
        let admission = self.admit_agent(key, agent, chat.stream, &ctx.id).await?;
        let store = &self.policy.store;
        let (account, agent_id) = (admission.account(), agent.config.id.as_str());
        let unavailable = |e| GatewayError::store("the conversation store is unavailable", e);
        let conversation =
            conversations::resolve(store, account, agent_id, api, &chat.conversation)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    GatewayError::Invalid(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "conversation not found",
                    ))
                })?;
        // The conversation keeps the `userId` it was opened with (SPEC §11).
        if let Some(stored) = &conversation.existing {
            chat.user_id = stored.clone();
        }
        let user_message_id = match chat.message {
            Some(_) => None,
            None if conversation.backend_id.is_none() => {
                return Err(GatewayError::Invalid(ApiError::invalid(
                    api,
                    "`message` is required: this conversation has no answer to continue",
                )));
            }
            None => {
                conversations::last_user_message(store, account, agent_id, &conversation.client_id)
                    .await
                    .map_err(unavailable)?
            }
        };
        let new_id = || format!("msg_{}", uuid::Uuid::now_v7().simple());
        let ids = Ids {
            conversation_id: api
                .client_conversation_id(&conversation.client_id)
                .into_owned(),
            message_id: new_id(),
            user_message_id: user_message_id.unwrap_or_else(new_id),
            user_id: chat.user_id.clone(),
        };
        let meter = Self::meter(snap, api, agent, &admission, ids);
        Ok(Admitted {
            agent,
            chat,
            idempotency,
            admission,
            conversation,
            meter,
        })
    }

    /// The meter of an admitted chat's answer: usage shown = credits charged (nothing on a
    /// front that requires no key, and never more than was reserved), and its transcript when
    /// the agent records conversations.
    fn meter(
        snap: &Snapshot,
        api: Api,
        agent: &Agent,
        admission: &Admission,
        ids: Ids,
    ) -> ChatMeter {
        let meter = ChatMeter::new(api, ids, admission.pricing(agent.config.credits))
            .answer_id_continues(
                agent
                    .config
                    .upstream_api
                    .upstream_continues_from_answer_id(),
            );
        match agent.config.record {
            true => meter.keep_transcript(snap.config.server().max_answer_bytes),
            false => meter,
        }
    }

    /// The exchange to record when the answer is complete.
    fn pending(api: Api, a: &Admitted<'_>, ctx: &Ctx) -> conversations::Pending {
        conversations::Pending {
            account: a.admission.account().to_owned(),
            agent_id: a.agent.config.id.clone(),
            front: api,
            conversation_id: a.conversation.client_id.clone(),
            user_message: a.chat.message.clone(),
            user_id: a.chat.user_id.clone(),
            started_at: ctx.started_ms,
            record: a.agent.config.record,
        }
    }

    /// The reservation is extended while the request lives, whatever the client's pace.
    fn keep_alive(
        &self,
        snap: &Snapshot,
        admission: &Admission,
    ) -> Option<tokio_util::sync::DropGuard> {
        admission
            .reservation
            .as_ref()
            .map(|r| policy::keep_alive(r.extender(), snap.config.store().reservation_timeout))
    }

    /// A stream: the upstream body transcoded into the front's format as the client reads it;
    /// the [`StreamSettlement`] settles it when the body is dropped.
    fn transcode(
        &self,
        snap: &Snapshot,
        front: &FrontConfig,
        a: Admitted<'_>,
        upstream: Incoming,
        ctx: &Ctx,
    ) -> Response<GatewayBody> {
        let pending = Self::pending(front.api, &a, ctx);
        let keepalive = self.keep_alive(snap, &a.admission);
        let ids = a.meter.ids().finish_ids();
        let options = EncodeOptions {
            event_lines: front.event_lines,
            tools_as_text: front.tools_as_text,
            ..front.api.encode_options(&a.chat, &ids, &a.agent.config.id)
        };
        let transcoder = Transcoder::new(
            crate::upstream::stream_format(a.agent.config.upstream_api),
            front.format,
            options,
            a.meter,
        );
        let settlement = StreamSettlement::open(
            a.admission,
            keepalive,
            a.idempotency,
            self.metrics.clone(),
            ctx,
            a.agent.label.clone(),
        );
        let body = TranscodeBody::new(
            upstream,
            transcoder,
            a.agent.config.timeouts.idle,
            self.streams_end.clone(),
            settlement,
        )
        // The exchange is durable before the client sees the answer's end.
        .commit_before_end(pending.commit_hook(self.policy.store.clone()));
        stream_response(front.format, body)
    }

    /// A sync answer: the whole upstream stream read into the front's JSON body, recorded,
    /// then settled.
    async fn answer(
        &self,
        snap: &Snapshot,
        api: Api,
        a: Admitted<'_>,
        upstream: Response<Incoming>,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let pending = Self::pending(api, &a, ctx);
        let keepalive = self.keep_alive(snap, &a.admission);
        let max_answer = snap.config.server().max_answer_bytes;
        let upstream_format = crate::upstream::stream_format(a.agent.config.upstream_api);
        let idle = a.agent.config.timeouts.idle;
        let body = upstream.into_body();
        let read = aggregate(
            body,
            upstream_format,
            a.meter,
            idle,
            max_answer,
            &mut ctx.waited,
        );
        let answer = read.await;
        drop(keepalive);
        let (aggregate, meter) = match answer {
            Ok(answer) => answer,
            Err(failure) => return Err(sync_failure(failure, a.admission, max_answer)),
        };
        // The exchange is durable before the client gets the answer; if it cannot be made
        // so, the client gets an error (and is charged nothing), never an answer that
        // history will not have.
        if let Some(exchange) = pending.exchange(&meter, crate::store::now_ms()) {
            if let Err(e) = self.policy.store.record_exchange(exchange).await {
                return Err(GatewayError::store(
                    "the answer could not be recorded (the conversation store is unavailable)",
                    e,
                ));
            }
        }
        let charged = a.admission.settle(meter.final_charge());
        let ids = meter.ids();
        let sync = SyncContext {
            conversation_id: Some(ids.conversation_id.clone()),
            message_id: Some(ids.message_id.clone()),
            user_message_id: Some(ids.user_message_id.clone()),
            run_id: Some(ids.message_id.clone()),
            user_id: ids.user_id.clone(),
            agent_id: Some(a.agent.config.id.clone()),
            agent_name: Some(a.agent.config.name.clone()),
            credits: Some(charged),
        };
        let body = Bytes::from(api.sync_body(&aggregate, &sync).to_string());
        if let Some(guard) = a.idempotency {
            guard.complete(StatusCode::OK, "application/json", body.clone());
        }
        log_request(ctx, StatusCode::OK, body.len() as u64, None, None);
        Ok(json_response(StatusCode::OK, body))
    }
}

/// A sync answer not given: a backend failure charges nothing (502); one too large is charged
/// for what was produced (the 502 shows it).
fn sync_failure(failure: SyncFailure, admission: Admission, max_answer: usize) -> GatewayError {
    match failure {
        SyncFailure::Backend(e) => {
            GatewayError::Upstream(ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e))
        }
        SyncFailure::TooLarge(meter) => {
            let charged = admission.settle(meter.final_charge());
            GatewayError::AnswerTooLarge(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "answer_too_large",
                    format!(
                        "the agent's answer is larger than {max_answer} bytes \
                         ([server] max_answer_bytes)"
                    ),
                )
                .with_details(serde_json::json!({
                    "max_answer_bytes": max_answer,
                    "usage": { "credits": credits_json(charged) },
                })),
            )
        }
    }
}
