//! Team chat on the `agents` front (SPEC §1, §7): `POST {prefix}/api/teams/{id}/chat`.
//!
//! Every member is asked concurrently, each through its own upstream API and through the same
//! admission as a chat with it (rate limits, credit reservation, settlement exactly once); a
//! member that fails or times out is reported in its entry and the others go on. The optional
//! summariser is then asked with the members' answers. The reply is
//! `{responses, summary, mode}`; with `"stream": true` (or `/chat/stream`) it is a `ui-message`
//! stream instead: one text part per member (deltas interleaved as they arrive), the summary as
//! the last part, and `finish` carrying `mode` and `responses` (without their content).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::aggregate::aggregate_with;
use super::error::GatewayError;
use super::history::credits_json;
use super::meter::{ChatMeter, Ids};
use super::request::{read_body, Ctx};
use super::response::{json_response, GatewayBody};
use super::snapshot::Snapshot;
use super::Gateway;
use crate::auth::{KeyInfo, Scopes};
use crate::config::{FrontConfig, TeamConfig};
use crate::formats::{EncodeOptions, Encoder, Event, FinishReason, Format, Json, Usage};
use crate::fronts::{Api, ApiError, ChatRequest, Conversation, Route, MAX_MESSAGE_CHARS};
use crate::telemetry::TraceContext;

/// How one member (or the summariser) did.
#[derive(Debug, Clone)]
struct Outcome {
    agent_id: String,
    agent_name: String,
    result: Result<String, (String, String)>,
    credits: f64,
}

/// What members report to the coordinator while they run.
enum Progress {
    Delta(usize, String),
    Done(usize, Outcome),
}

#[derive(Deserialize)]
struct TeamBody {
    message: Option<Value>,
    mode: Option<Value>,
    stream: Option<bool>,
}

impl Gateway {
    /// `POST teams/{id}/chat`: checks the route, the caller and the team, parses the body,
    /// then runs the team and answers, as a stream or as one body.
    pub(super) async fn team_chat(
        self: Arc<Self>,
        snap: &Arc<Snapshot>,
        front: &FrontConfig,
        route: Route,
        req: Request<Incoming>,
        trace: TraceContext,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, ApiError> {
        let (team_id, stream_path) = team_route(route, req.method())?;
        let api = front.api;
        let caller = self.caller(front, req.headers(), Scopes::TEAMS_RUN).await?;
        let team = team_for(snap, &team_id, caller.key.as_ref())?;
        let (parts, body) = req.into_parts();
        let body = read_body(api, body, &parts.headers, snap.config.server()).await?;
        let ask = TeamAsk::parse(api, &body, &team)?;
        let stream = stream_path || ask.stream;
        if stream
            && caller
                .key
                .as_ref()
                .is_some_and(|k| !k.has_scope(Scopes::AGENTS_STREAM))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API key does not allow streaming (agents:stream scope)",
            ));
        }
        let run = TeamRun {
            gateway: self.clone(),
            snap: snap.clone(),
            key: caller.key,
            team,
            mode: ask.mode,
            message: ask.message,
            trace,
            request_id: ctx.request_id.clone(),
            id: ctx.id.clone(),
        };
        run.answer(stream).await
    }
}

/// The team and whether the path asks for a stream; 404 for another route, 405 for a
/// method other than POST.
fn team_route(route: Route, method: &Method) -> Result<(String, bool), ApiError> {
    let Route::TeamChat {
        team_id,
        stream_path,
    } = route
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        ));
    };
    if method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        )
        .with_header(http::header::ALLOW, HeaderValue::from_static("POST")));
    }
    Ok((team_id, stream_path))
}

/// The team, when every agent it asks is within the key's agents (404 otherwise).
fn team_for(snap: &Snapshot, team_id: &str, key: Option<&KeyInfo>) -> Result<TeamConfig, ApiError> {
    snap.config
        .team(team_id)
        .filter(|t| {
            t.members
                .iter()
                .chain(t.summarizer.iter())
                .all(|a| key.is_none_or(|k| k.may_access(a)))
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "team not found or outside the key's access target",
            )
        })
}

/// A team chat's body, checked: the message, the mode (the team's default when absent) and
/// whether it asks for a stream.
struct TeamAsk {
    message: String,
    mode: String,
    stream: bool,
}

impl TeamAsk {
    fn parse(api: Api, body: &[u8], team: &TeamConfig) -> Result<TeamAsk, ApiError> {
        let b: TeamBody = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(api, format!("malformed JSON body: {e}")))?;
        let message = match b.message {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => {
                return Err(ApiError::invalid(api, "`message` must not be empty"))
            }
            Some(_) => return Err(ApiError::invalid(api, "`message` must be a string")),
            None => return Err(ApiError::invalid(api, "`message` is required")),
        };
        let chars = message.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(ApiError::invalid(
                api,
                format!("`message` is {chars} characters long; the maximum is {MAX_MESSAGE_CHARS}"),
            ));
        }
        let mode = match b.mode {
            None | Some(Value::Null) => team.default_mode().to_owned(),
            Some(Value::String(m)) if team.has_mode(&m) => m,
            Some(_) => {
                return Err(
                    ApiError::invalid(api, "`mode` is not one of the team's modes")
                        .with_details(json!({ "modes": team.modes })),
                )
            }
        };
        Ok(TeamAsk {
            message,
            mode,
            stream: b.stream.unwrap_or(false),
        })
    }
}

/// One team chat, owned so that it can run in its own task.
struct TeamRun {
    gateway: Arc<Gateway>,
    /// The config the team chat started with; it runs to its end on it.
    snap: Arc<Snapshot>,
    key: Option<KeyInfo>,
    team: TeamConfig,
    mode: String,
    message: String,
    /// The trace context passed on to the backends.
    trace: TraceContext,
    /// The client-facing id (echoed, logged, sent to the backends).
    request_id: String,
    /// agentgate's own id of the team chat; members' reservation ids derive from it.
    id: String,
}

impl TeamRun {
    /// Runs the team chat: a `ui-message` stream fed by its own task, or the sync body.
    async fn answer(self, stream: bool) -> Result<Response<GatewayBody>, ApiError> {
        if !stream {
            let body = self.sync().await?;
            return Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())));
        }
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(self.stream(tx));
        let mut r = Response::new(GatewayBody::Channel(rx));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
        Ok(r)
    }

    /// The sync body; 402 when every member was refused for want of credits (no answer at
    /// all is not a 200), with each member's entry in `details`.
    async fn sync(self) -> Result<Value, ApiError> {
        let (members, summary) = self.run(None).await;
        let all_refused = members
            .iter()
            .all(|m| matches!(&m.result, Err((code, _)) if code == "insufficient_credits"));
        if all_refused {
            return Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                "insufficient credits for every member of the team",
            )
            .with_details(self.reply(&members, None, false)));
        }
        Ok(self.reply(&members, summary.as_ref(), true))
    }

    async fn stream(self, tx: mpsc::Sender<Bytes>) {
        let (deltas_tx, mut deltas) = mpsc::unbounded_channel::<(String, Option<String>)>();
        let mut encoder = Encoder::new(
            Format::UiMessage,
            EncodeOptions {
                ..Default::default()
            },
        );
        let mut out = BytesMut::new();
        let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        encoder.encode(
            &Event::Start {
                message_id: Some(message_id.as_str().into()),
                conversation_id: None,
            },
            &mut out,
        );
        let _ = tx.send(out.split().freeze()).await;
        // Writes each member's deltas as they arrive, each in its own text part; a `None`
        // ends that part. A client gone away only stops the writing: members still finish
        // and settle.
        let writer = async {
            while let Some((part, delta)) = deltas.recv().await {
                match delta {
                    Some(d) => encoder.encode(
                        &Event::TextDelta {
                            id: part.as_str().into(),
                            delta: d.as_str().into(),
                        },
                        &mut out,
                    ),
                    None => encoder.encode(
                        &Event::TextEnd {
                            id: part.as_str().into(),
                        },
                        &mut out,
                    ),
                }
                if !out.is_empty() {
                    let _ = tx.send(out.split().freeze()).await;
                }
            }
            (encoder, out)
        };
        let run = self.run(Some(deltas_tx));
        let ((members, summary), (mut encoder, mut out)) = tokio::join!(run, writer);
        let meta = self.reply(&members, summary.as_ref(), false);
        let total = meta["usage"]["credits"].as_f64().unwrap_or(0.0);
        encoder.encode(
            &Event::Finish {
                reason: Some(FinishReason::Stop),
                usage: Some(Usage::credits(total)),
                metadata: Some(Json::from_value(&meta)),
            },
            &mut out,
        );
        let _ = tx.send(out.split().freeze()).await;
    }

    /// Asks every member concurrently, then the summariser. `deltas`: where to send text
    /// as it arrives (part id, delta; `None` ends the part).
    async fn run(
        &self,
        deltas: Option<mpsc::UnboundedSender<(String, Option<String>)>>,
    ) -> (Vec<Outcome>, Option<Outcome>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = self.team.members.len();
        for (i, agent_id) in self.team.members.iter().enumerate() {
            self.spawn_ask(
                i,
                agent_id,
                self.message.clone(),
                deltas.is_some(),
                tx.clone(),
            );
        }
        // Only the members hold senders now: a member task that died ends the wait.
        drop(tx);
        let mut members: Vec<Option<Outcome>> = vec![None; n];
        let mut left = n;
        while left > 0 {
            match rx.recv().await {
                Some(Progress::Delta(i, d)) => {
                    if let Some(tx) = &deltas {
                        let _ = tx.send((self.team.members[i].clone(), Some(d)));
                    }
                }
                Some(Progress::Done(i, outcome)) => {
                    if let Some(tx) = &deltas {
                        let _ = tx.send((self.team.members[i].clone(), None));
                    }
                    members[i] = Some(outcome);
                    left -= 1;
                }
                None => break,
            }
        }
        let members: Vec<Outcome> = members
            .into_iter()
            .zip(&self.team.members)
            .map(|(o, id)| {
                o.unwrap_or_else(|| Outcome {
                    agent_id: id.clone(),
                    agent_name: id.clone(),
                    result: Err(("internal".into(), "the member's task ended".into())),
                    credits: 0.0,
                })
            })
            .collect();
        let summary = match &self.team.summarizer {
            Some(s) if members.iter().any(|m| m.result.is_ok()) => {
                let prompt = summary_prompt(&self.mode, &self.message, &members);
                let (tx, mut rx) = mpsc::unbounded_channel();
                self.spawn_ask(n, s, prompt, deltas.is_some(), tx);
                let mut outcome = None;
                while let Some(p) = rx.recv().await {
                    match p {
                        Progress::Delta(_, d) => {
                            if let Some(tx) = &deltas {
                                let _ = tx.send(("summary".into(), Some(d)));
                            }
                        }
                        Progress::Done(_, o) => {
                            if let Some(tx) = &deltas {
                                let _ = tx.send(("summary".into(), None));
                            }
                            outcome = Some(o);
                            break;
                        }
                    }
                }
                outcome
            }
            _ => None,
        };
        (members, summary)
    }

    /// Asks one agent in its own task, reporting deltas (when `stream`) and its outcome.
    fn spawn_ask(
        &self,
        index: usize,
        agent_id: &str,
        message: String,
        stream: bool,
        tx: mpsc::UnboundedSender<Progress>,
    ) {
        let gateway = self.gateway.clone();
        let snap = self.snap.clone();
        let key = self.key.clone();
        let agent_id = agent_id.to_owned();
        let timeout = self.team.member_timeout;
        let trace = self.trace.clone();
        let ids = (
            format!("{}-{index}", self.request_id),
            format!("{}-{index}", self.id),
        );
        tokio::spawn(async move {
            let name = snap
                .agents
                .get(&agent_id)
                .map_or_else(|| agent_id.clone(), |a| a.config.name.clone());
            let deltas = tx.clone();
            let on_text = move |d: &str| {
                if stream {
                    let _ = deltas.send(Progress::Delta(index, d.to_owned()));
                }
            };
            let ask = ask(
                &gateway,
                &snap,
                key,
                &agent_id,
                message,
                (trace, ids),
                on_text,
            );
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, ask).await.unwrap_or_else(|_| {
                    Err((
                        "timeout".into(),
                        format!("no complete answer within {} s", t.as_secs_f64()),
                    ))
                }),
                None => ask.await,
            };
            let (result, credits) = match result {
                Ok((text, credits)) => (Ok(text), credits),
                Err(e) => (Err(e), 0.0),
            };
            let _ = tx.send(Progress::Done(
                index,
                Outcome {
                    agent_id,
                    agent_name: name,
                    result,
                    credits,
                },
            ));
        });
    }

    /// The sync body (`with_content`) or the stream's finish metadata.
    fn reply(&self, members: &[Outcome], summary: Option<&Outcome>, with_content: bool) -> Value {
        let entry = |o: &Outcome| {
            let mut e = json!({
                "agent_id": o.agent_id,
                "agent_name": o.agent_name,
                "usage": { "credits": credits_json(o.credits) },
            });
            match &o.result {
                Ok(text) if with_content => e["content"] = json!(text),
                Ok(_) => {}
                Err((code, message)) => e["error"] = json!({ "code": code, "message": message }),
            }
            e
        };
        let total: f64 = members
            .iter()
            .chain(summary)
            .map(|o| o.credits)
            .sum::<f64>();
        let total = crate::credits::from_milli(crate::credits::to_milli(total));
        let mut v = json!({
            "responses": members.iter().map(entry).collect::<Vec<_>>(),
            "mode": self.mode,
            "usage": { "credits": credits_json(total) },
        });
        if with_content {
            v["summary"] = json!(summary.and_then(|s| s.result.as_ref().ok()));
        }
        if let Some(Outcome {
            result: Err((code, message)),
            ..
        }) = summary
        {
            v["summary_error"] = json!({ "code": code, "message": message });
        }
        v
    }
}

/// Asks one agent through the same admission as a chat with it: rate limits and a credit
/// reservation (402 becomes this member's error), then the backend, then settlement. Returns
/// the answer and the credits charged.
async fn ask(
    gateway: &Arc<Gateway>,
    snap: &Snapshot,
    key: Option<KeyInfo>,
    agent_id: &str,
    message: String,
    (trace, (request_id, id)): (TraceContext, (String, String)),
    mut on_text: impl FnMut(&str) + Send,
) -> Result<(String, f64), (String, String)> {
    let fail = |e: GatewayError| e.code_and_message(Api::Agents);
    let agent = snap
        .agents
        .get(agent_id)
        .ok_or_else(|| ("not_found".to_owned(), "agent not configured".to_owned()))?;
    let admission = gateway
        .admit_agent(key, agent, false, &id)
        .await
        .map_err(fail)?;
    let chat = ChatRequest {
        message: Some(message),
        conversation: Conversation::New,
        stream: true,
        user_id: None,
        options: Map::new(),
        agent: None,
    };
    let mut ctx = Ctx::new(request_id, id, Api::Agents, tracing::Span::current());
    let response = gateway
        .call_upstream(agent, &chat, None, &[], &trace, &mut ctx)
        .await
        .map_err(fail)?;
    let pricing = admission.pricing(agent.config.credits);
    let ids = Ids {
        conversation_id: String::new(),
        message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        user_message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        user_id: None,
    };
    let meter = ChatMeter::new(Api::Agents, ids, pricing);
    let format = crate::upstream::stream_format(agent.config.upstream_api);
    let idle = agent.config.timeouts.idle;
    // A member that fails is charged nothing, as a sync chat that fails (the reservation,
    // dropped with `admission`, settles at 0).
    let waited = &mut ctx.waited;
    let (answer, meter) = aggregate_with(
        response.into_body(),
        format,
        meter,
        idle,
        snap.config.server().max_answer_bytes,
        waited,
        &mut |e| {
            if let Event::TextDelta { delta, .. } = e {
                on_text(delta);
            }
        },
    )
    .await
    .map_err(|e| ("bad_gateway".to_owned(), e.to_string()))?;
    let charged = admission.settle(meter.final_charge());
    Ok((answer.text, charged))
}

/// What the summariser is asked: the mode, the question and every answer (within the message
/// limit).
fn summary_prompt(mode: &str, message: &str, members: &[Outcome]) -> String {
    let mut p = format!(
        "Summarise the answers of a team of agents (mode: {mode}).\n\nQuestion: {message}\n"
    );
    for m in members {
        if let Ok(text) = &m.result {
            p.push_str(&format!("\n{}: {}\n", m.agent_name, text));
        }
    }
    if p.chars().count() > MAX_MESSAGE_CHARS {
        p = p.chars().take(MAX_MESSAGE_CHARS).collect();
    }
    p
}
