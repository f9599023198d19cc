//! History, conversations, inbox and mark-read on the `agents` front, sessions on `guayaba`
//! (SPEC §1 "The rest of each API", §7), served from the conversation store whatever API the
//! backend speaks. Order of checks as for chats: key 401 → scope 403 → agent 404 (guayaba
//! 403) → body/query 400 (guayaba 422) → conversation 404.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::conversations::{find_session, new_id, session_key, DEFAULT_CONVERSATION};
use super::error::{store_unavailable, GatewayError};
use super::request::{read_body, Ctx};
use super::response::{json_response, GatewayBody};
use super::snapshot::{Agent, Snapshot};
use super::Gateway;
use crate::auth::{KeyInfo, Scopes};
use crate::config::FrontConfig;
use crate::credits::from_milli;
use crate::fronts::{Api, ApiError, Route};
use crate::store::time::format_rfc3339;
use crate::store::{
    now_ms, ConversationOutcome, ConversationRecord, ConversationWrite, MessageRecord, StoreError,
};

/// Page size when `limit` is absent, and its most (SPEC §7).
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
/// Longest conversation title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Who asks: the account, and the key (none on an open front).
pub(super) struct Caller {
    pub account: String,
    pub key: Option<KeyInfo>,
}

impl Gateway {
    /// Authenticates (401) and checks `scope` (403); on an open front, the anonymous account.
    pub(super) async fn caller(
        &self,
        front: &FrontConfig,
        headers: &http::HeaderMap,
        scope: Scopes,
    ) -> Result<Caller, GatewayError> {
        if !front.require_key {
            return Ok(Caller {
                account: super::policy::ANONYMOUS.to_owned(),
                key: None,
            });
        }
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let key = self
            .policy
            .authenticate_for(front.api, authorization, scope)
            .await?;
        Ok(Caller {
            account: key.account().to_owned(),
            key: Some(key),
        })
    }

    /// The agent as this front names it, within the key's agents (404; on guayaba 404 when
    /// no such agent exists, 403 when it is outside the key's agents).
    pub(super) fn agent_for<'s>(
        snap: &'s Snapshot,
        api: Api,
        key: Option<&KeyInfo>,
        agent_id: &str,
    ) -> Result<&'s Agent, GatewayError> {
        let agent = snap
            .agent(agent_id)
            .ok_or_else(|| GatewayError::Invalid(ApiError::agent_not_found(api, false)))?;
        match key.is_none_or(|k| k.may_access(&agent.config.id)) {
            true => Ok(agent),
            false => Err(GatewayError::Invalid(ApiError::agent_not_found(api, true))),
        }
    }

    /// Serves one of the paths of [`Route`] other than team chat: checks the caller, the agent
    /// and the query, reads the body, then hands the route to its handler.
    pub(super) async fn conversations_api(
        self: Arc<Self>,
        snap: &Snapshot,
        front: &FrontConfig,
        route: Route,
        req: Request<Incoming>,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let api = front.api;
        let method = req.method().clone();
        let scope = match method {
            Method::GET => Scopes::CONVERSATIONS_READ,
            _ => Scopes::CONVERSATIONS_WRITE,
        };
        let caller = self.caller(front, req.headers(), scope).await?;
        let agent_id = route_agent_id(&route)?;
        let agent = Self::agent_for(snap, api, caller.key.as_ref(), &agent_id)?;
        let agent_id = agent.config.id.clone();
        ctx.agent = Some(agent.label.clone());
        ctx.span.record("agent", agent_id.as_str());
        let query = Query::parse(api, req.uri().query())?;
        let (parts, body) = req.into_parts();
        let body = match method {
            Method::GET | Method::DELETE => Bytes::new(),
            _ => read_body(api, body, &parts.headers, snap.config.server()).await?,
        };
        let asked = Asked {
            api,
            account: &caller.account,
            agent_id: &agent_id,
            query,
            body,
        };
        let route = self.resolve_session(&asked, route).await?;
        self.serve_route(&asked, route, method).await
    }

    /// A session as guayaba lists it: another front's id behind `api:` is that id.
    async fn resolve_session(&self, a: &Asked<'_>, route: Route) -> Result<Route, GatewayError> {
        Ok(match route {
            Route::Session { agent_id, key } => {
                let found = find_session(&self.policy.store, a.account, a.agent_id, &key)
                    .await
                    .map_err(store_unavailable)?;
                Route::Session {
                    agent_id,
                    key: found.map_or(key, |c| c.id),
                }
            }
            other => other,
        })
    }

    /// Hands a checked request to the handler of its route and method (405 otherwise).
    async fn serve_route(
        &self,
        a: &Asked<'_>,
        route: Route,
        method: Method,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        match (route, method) {
            (Route::History { .. }, Method::GET) => self.get_history(a).await,
            (Route::Conversations { .. }, Method::GET) => self.get_conversations(a).await,
            (Route::Conversations { .. }, Method::POST) => self.post_conversation(a).await,
            (Route::Conversation { id, .. }, Method::PUT) => self.put_conversation(a, &id).await,
            (Route::Conversation { id, .. }, Method::DELETE)
            | (Route::Session { key: id, .. }, Method::DELETE) => {
                self.delete_conversation(a, id).await
            }
            (Route::Inbox { .. }, Method::GET) => self.get_inbox(a).await,
            (Route::MarkRead { .. }, Method::POST) => self.post_mark_read(a).await,
            (Route::Sessions { .. }, Method::GET) => self.get_sessions(a).await,
            (Route::Session { key, .. }, Method::PATCH) => self.patch_session(a, &key).await,
            (route, _) => Err(method_not_allowed(&route)),
        }
    }

    /// `GET history`: one page of a conversation's messages, oldest first.
    async fn get_history(&self, a: &Asked<'_>) -> Result<Response<GatewayBody>, GatewayError> {
        let (api, query, store) = (a.api, &a.query, &self.policy.store);
        let conversation = query
            .conversation_id
            .clone()
            .unwrap_or_else(|| DEFAULT_CONVERSATION.to_owned());
        let known = store
            .conversation(a.account, a.agent_id, &conversation)
            .await
            .map_err(store_unavailable)?;
        if known.is_none() && conversation != DEFAULT_CONVERSATION {
            return Err(not_found("conversation"));
        }
        let before = query.cursor_seq(api)?;
        let mut rows = store
            .history(
                a.account,
                a.agent_id,
                &conversation,
                before,
                query.limit + 1,
            )
            .await
            .map_err(store_unavailable)?;
        let more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        rows.reverse();
        let next = more
            .then(|| rows.first().map(|m| format!("s{}", m.seq)))
            .flatten();
        Ok(ok(json!({
            "conversation_id": conversation,
            "messages": rows.iter().map(message_json).collect::<Vec<_>>(),
            "next_cursor": next,
        })))
    }

    /// `GET conversations`: one page of them, newest first.
    async fn get_conversations(
        &self,
        a: &Asked<'_>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let page = self
            .list(a.account, a.agent_id, None, &a.query, a.api)
            .await?;
        Ok(ok(json!({
            "conversations": page.0.iter().map(conversation_json).collect::<Vec<_>>(),
            "next_cursor": page.1,
        })))
    }

    /// `POST conversations`: a new one, with its optional title (201).
    async fn post_conversation(
        &self,
        a: &Asked<'_>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let api = a.api;
        let title = parse_title_body(api, &a.body, false)?.title;
        let created = self
            .policy
            .store
            .conversation_write(ConversationWrite::Create {
                account: a.account.to_owned(),
                agent_id: a.agent_id.to_owned(),
                id: new_id(api),
                front: api.as_str().to_owned(),
                title,
                now: now_ms(),
            })
            .await
            .map_err(store_unavailable)?;
        match created {
            ConversationOutcome::Conversation(Some(c)) => {
                Ok(with_status(StatusCode::CREATED, conversation_json(&c)))
            }
            _ => Err(store_unavailable(StoreError::Corrupt(
                "conversation not created".into(),
            ))),
        }
    }

    /// `PUT conversations/{id}`: renames it.
    async fn put_conversation(
        &self,
        a: &Asked<'_>,
        id: &str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let update = parse_title_body(a.api, &a.body, true)?;
        let c = self
            .update(a.account, a.agent_id, id, update.title, None)
            .await?
            .ok_or_else(|| not_found("conversation"))?;
        Ok(ok(conversation_json(&c)))
    }

    /// `DELETE` of a conversation or a session (204, or 404 when there is none).
    async fn delete_conversation(
        &self,
        a: &Asked<'_>,
        id: String,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let deleted = self
            .policy
            .store
            .conversation_write(ConversationWrite::Delete {
                account: a.account.to_owned(),
                agent_id: a.agent_id.to_owned(),
                id,
            })
            .await
            .map_err(store_unavailable)?;
        match deleted {
            ConversationOutcome::Deleted(true) => Ok(no_content()),
            _ => Err(not_found(a.api.conversation_noun())),
        }
    }

    /// `GET inbox`: one page of the agent's messages, oldest first, after the cursor.
    async fn get_inbox(&self, a: &Asked<'_>) -> Result<Response<GatewayBody>, GatewayError> {
        let query = &a.query;
        let after = query.cursor_after(a.api)?;
        let mut rows = self
            .policy
            .store
            .inbox(a.account, a.agent_id, after, query.limit + 1)
            .await
            .map_err(store_unavailable)?;
        let more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        let next = more
            .then(|| rows.last().map(|m| format!("{}:{}", m.created_at, m.id)))
            .flatten();
        Ok(ok(json!({
            "messages": rows.iter().map(message_json).collect::<Vec<_>>(),
            "next_cursor": next,
        })))
    }

    /// `POST mark-read`: the given messages, or all, read; answers how many.
    async fn post_mark_read(&self, a: &Asked<'_>) -> Result<Response<GatewayBody>, GatewayError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            message_ids: Option<Vec<String>>,
        }
        let b: Body = parse_json(a.api, &a.body)?.unwrap_or(Body { message_ids: None });
        let marked = self
            .policy
            .store
            .conversation_write(ConversationWrite::MarkRead {
                account: a.account.to_owned(),
                agent_id: a.agent_id.to_owned(),
                message_ids: b.message_ids,
                now: now_ms(),
            })
            .await
            .map_err(store_unavailable)?;
        let n = match marked {
            ConversationOutcome::Marked(n) => n,
            _ => 0,
        };
        Ok(ok(json!({ "marked": n })))
    }

    /// `GET sessions` (guayaba): one page, the archived ones only when asked.
    async fn get_sessions(&self, a: &Asked<'_>) -> Result<Response<GatewayBody>, GatewayError> {
        let archived = Some(a.query.archived.unwrap_or(false));
        let page = self
            .list(a.account, a.agent_id, archived, &a.query, a.api)
            .await?;
        Ok(ok(json!({
            "sessions": page.0.iter().map(session_json).collect::<Vec<_>>(),
            "next_cursor": page.1,
        })))
    }

    /// `PATCH sessions/{key}` (guayaba): its title and/or archived flag.
    async fn patch_session(
        &self,
        a: &Asked<'_>,
        key: &str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            title: Option<String>,
            archived: Option<bool>,
        }
        let api = a.api;
        let b: Body = parse_json(api, &a.body)?
            .ok_or_else(|| ApiError::invalid(api, "a JSON body is required"))?;
        if b.title.is_none() && b.archived.is_none() {
            return Err(GatewayError::Invalid(ApiError::invalid(
                api,
                "give `title` and/or `archived` to change",
            )));
        }
        if let Some(t) = &b.title {
            check_title(api, t)?;
        }
        let s = self
            .update(a.account, a.agent_id, key, b.title, b.archived)
            .await?
            .ok_or_else(|| not_found("session"))?;
        Ok(ok(session_json(&s)))
    }

    /// One page of conversations, newest first, and the cursor of the next.
    async fn list(
        &self,
        account: &str,
        agent_id: &str,
        archived: Option<bool>,
        query: &Query,
        api: Api,
    ) -> Result<(Vec<ConversationRecord>, Option<String>), GatewayError> {
        let before = query.cursor_after(api)?;
        let mut rows = self
            .policy
            .store
            .list_conversations(account, agent_id, archived, before, query.limit + 1)
            .await
            .map_err(store_unavailable)?;
        let more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        let next = more
            .then(|| rows.last().map(|c| format!("{}:{}", c.created_at, c.id)))
            .flatten();
        Ok((rows, next))
    }

    async fn update(
        &self,
        account: &str,
        agent_id: &str,
        id: &str,
        title: Option<String>,
        archived: Option<bool>,
    ) -> Result<Option<ConversationRecord>, GatewayError> {
        let out = self
            .policy
            .store
            .conversation_write(ConversationWrite::Update {
                account: account.to_owned(),
                agent_id: agent_id.to_owned(),
                id: id.to_owned(),
                title,
                archived,
                now: now_ms(),
            })
            .await
            .map_err(store_unavailable)?;
        Ok(match out {
            ConversationOutcome::Conversation(c) => c,
            _ => None,
        })
    }
}

/// `limit`, `cursor`, `conversation_id`, `archived`.
struct Query {
    limit: u32,
    cursor: Option<String>,
    conversation_id: Option<String>,
    archived: Option<bool>,
}

impl Query {
    fn parse(api: Api, query: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            cursor: None,
            conversation_id: None,
            archived: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    let n: u32 = v.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        ApiError::invalid(api, "`limit` must be a positive integer")
                    })?;
                    q.limit = n.min(MAX_LIMIT);
                }
                "cursor" if !v.is_empty() => q.cursor = Some(v.into_owned()),
                "conversation_id" if !v.is_empty() => q.conversation_id = Some(v.into_owned()),
                "archived" => {
                    q.archived = Some(match v.as_ref() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::invalid(api, "`archived` must be true or false"))
                        }
                    })
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn bad_cursor(api: Api) -> ApiError {
        ApiError::invalid(api, "`cursor` is not one this list gave out")
    }

    /// A list cursor: `created_at:id` of the last row of the previous page.
    fn cursor_after(&self, api: Api) -> Result<Option<(i64, String)>, ApiError> {
        let Some(c) = &self.cursor else {
            return Ok(None);
        };
        let (at, id) = c.split_once(':').ok_or_else(|| Self::bad_cursor(api))?;
        let at = at.parse().map_err(|_| Self::bad_cursor(api))?;
        Ok(Some((at, id.to_owned())))
    }

    /// A history cursor: `s<seq>` of the oldest message of the previous page.
    fn cursor_seq(&self, api: Api) -> Result<Option<i64>, ApiError> {
        let Some(c) = &self.cursor else {
            return Ok(None);
        };
        c.strip_prefix('s')
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Self::bad_cursor(api))
    }
}

/// A conversations request after its checks: whose, which agent, its query and its body.
struct Asked<'a> {
    api: Api,
    account: &'a str,
    agent_id: &'a str,
    query: Query,
    body: Bytes,
}

/// The agent a route names; team chat and the models are not served here (404).
fn route_agent_id(route: &Route) -> Result<String, GatewayError> {
    match route {
        Route::History { agent_id }
        | Route::Conversations { agent_id }
        | Route::Conversation { agent_id, .. }
        | Route::Inbox { agent_id }
        | Route::MarkRead { agent_id }
        | Route::Sessions { agent_id }
        | Route::Session { agent_id, .. } => Ok(agent_id.clone()),
        Route::TeamChat { .. } | Route::Models | Route::Model { .. } => Err(GatewayError::Invalid(
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        )),
    }
}

/// 404 for a missing `what`.
fn not_found(what: &str) -> GatewayError {
    GatewayError::Invalid(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} not found"),
    ))
}

/// 405 with an `Allow` of the route's methods.
fn method_not_allowed(route: &Route) -> GatewayError {
    let allow = route
        .methods()
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allow}"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&allow) {
        e = e.with_header(http::header::ALLOW, v);
    }
    GatewayError::Invalid(e)
}

/// A JSON body, `None` when empty.
fn parse_json<T: for<'de> Deserialize<'de>>(api: Api, body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::invalid(api, format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TitleBody {
    title: Option<String>,
}

fn parse_title_body(api: Api, body: &[u8], required: bool) -> Result<TitleBody, ApiError> {
    let b: TitleBody = parse_json(api, body)?.unwrap_or(TitleBody { title: None });
    match &b.title {
        Some(t) => check_title(api, t)?,
        None if required => return Err(ApiError::invalid(api, "`title` is required")),
        None => {}
    }
    Ok(b)
}

fn check_title(api: Api, title: &str) -> Result<(), ApiError> {
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(
            api,
            format!("`title` must be 1 to {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(())
}

fn message_json(m: &MessageRecord) -> Value {
    let mut v = json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "created_at": format_rfc3339(m.created_at),
    });
    // The AI SDK `UIMessage` parts, so that a `useChat` app restores the chat from history.
    v["parts"] = m
        .parts
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .unwrap_or_else(|| json!([{ "type": "text", "text": m.content }]));
    if let Some(calls) = m
        .tool_calls
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        v["tool_calls"] = calls;
    }
    if m.role == "assistant" {
        if let Some(c) = m.credits {
            v["usage"] = json!({ "credits": credits_json(from_milli(c)) });
        }
        v["read"] = json!(m.read_at.is_some());
        if m.truncated {
            v["truncated"] = json!(true);
        }
    }
    v
}

/// Credits as every body shows them: an integer when whole.
pub(super) fn credits_json(credits: f64) -> Value {
    if credits.fract() == 0.0 && credits.abs() < 9e15 {
        json!(credits as i64)
    } else {
        json!(credits)
    }
}

fn conversation_json(c: &ConversationRecord) -> Value {
    json!({
        "id": c.id,
        "title": c.title,
        "archived": c.archived,
        "created_at": format_rfc3339(c.created_at),
        "updated_at": format_rfc3339(c.updated_at),
    })
}

fn session_json(c: &ConversationRecord) -> Value {
    json!({
        "sessionKey": session_key(&c.id),
        "title": c.title,
        "archived": c.archived,
        "createdAt": format_rfc3339(c.created_at),
        "updatedAt": format_rfc3339(c.updated_at),
    })
}

fn ok(v: Value) -> Response<GatewayBody> {
    with_status(StatusCode::OK, v)
}

fn with_status(status: StatusCode, v: Value) -> Response<GatewayBody> {
    json_response(status, Bytes::from(v.to_string()))
}

fn no_content() -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}
