//! The chat APIs of SPEC §1, one module each, behind one trait.
//!
//! What one chat API *is* — its paths, how it reads a chat request, what it sends a backend
//! speaking it, its sync answer and finish metadata, its conversation ids, the statuses of its
//! errors, its OpenAPI schemas, how the demo backend answers it — lives in its module, as an
//! implementation of [`ChatApi`]. [`Api`] is a `Copy` handle on one of them: the router
//! ([`match_chat`], [`match_route`]), the OpenAPI document and the demo backend are derived from
//! each API's [`ChatApi::routes`] table.
//!
//! **Adding an API** is one new file implementing [`ChatApi`] (see `agents.rs` for a full one)
//! plus one line in the [`registry!`] call below (`Variant => module::Type,`), which also
//! declares the module.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::formats::{Aggregate, EncodeOptions, Format, SyncContext};

mod request;
mod routes;
pub mod shared;

pub(crate) use request::check_conversation_key;
pub use request::{
    ChatRequest, Conversation, MAX_CONVERSATION_KEY_LEN, MAX_MESSAGE_CHARS, MAX_USER_ID_CHARS,
};
pub use routes::{match_chat, match_route, segment, ChatRoute, Route, RouteDef, RouteKind};

/// One chat API. Implemented by a unit struct in its own module and named in [`registry!`].
pub trait ChatApi: Sync + 'static {
    // ---- What it is -------------------------------------------------------------------------

    /// Its name in configuration, metrics and logs (`api = "pharen"`).
    fn name(&self) -> &'static str;
    /// Its name in titles and OpenAPI schema names (`Pharen` → `PharenChatRequest`).
    fn title(&self) -> &'static str;
    /// The stream format it speaks by default (a front's `format`, a backend's stream).
    fn default_format(&self) -> Format;
    /// Its paths (relative to a front's prefix): the router, the OpenAPI document, the
    /// upstream path and the demo backend are all derived from this table.
    fn routes(&self) -> &'static [RouteDef];

    // ---- Requests from clients ----------------------------------------------------------------

    /// Parses and validates a chat body. `wants_sse`: the client sent
    /// `Accept: text/event-stream`; `stream_path`: the request came on a streaming chat path.
    fn parse_chat(
        &self,
        body: &[u8],
        wants_sse: bool,
        stream_path: bool,
    ) -> Result<ChatRequest, ApiError>;
    /// Whether `id` can name an agent on this API (pharen: a UUID); else 404, and a config
    /// error for a backend's agent id.
    fn agent_id_valid(&self, _id: &str) -> bool {
        true
    }
    /// What [`ChatApi::agent_id_valid`] asks for, in words (`a UUID`).
    fn agent_id_rule(&self) -> &'static str {
        "any id"
    }
    /// Whether a key may come as a bare `Authorization: KEY` (pharen) besides `Bearer KEY`.
    fn bare_key_auth(&self) -> bool {
        false
    }
    /// Whether clients may call agentgate with it (a `[[front]]`); `false` for an API that is
    /// only ever an agent's `upstream_api` (the OpenAI upstreams: clients reach agentgate
    /// with OpenAI's APIs through the `openai` front of SPEC §10).
    fn is_front(&self) -> bool {
        true
    }
    /// Whether an agent's backend may speak it (`upstream_api`); `false` for a front that is
    /// only a door onto other APIs (the `openai` front, whose endpoints are served by the
    /// openai-chat and openai-responses modules).
    fn is_upstream(&self) -> bool {
        true
    }

    // ---- Errors -------------------------------------------------------------------------------

    /// A malformed body or a failed validation.
    fn invalid(&self, message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// An agent that does not exist, or (`exists`) lies outside the key's agents.
    fn agent_not_found(&self, _exists: bool) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "agent not found or outside the key's access target",
        )
    }

    /// The JSON body of an error on this front (SPEC §5: seed 000's
    /// `{"error":{"code","message","details"}}` unless the API has its own).
    fn error_body(&self, e: &ApiError) -> Value {
        json!({ "error": { "code": e.code, "message": e.message, "details": e.details } })
    }

    /// The JSON schema of [`ChatApi::error_body`] (the OpenAPI `Error` component).
    fn error_schema(&self) -> Value {
        crate::openapi::error_schema()
    }

    // ---- Conversations ------------------------------------------------------------------------

    /// A fresh conversation id in this API's form.
    fn new_conversation_id(&self) -> String {
        format!("conv_{}", uuid::Uuid::now_v7().simple())
    }
    /// A chat naming no conversation goes to the account's default one (`agents`).
    fn has_default_conversation(&self) -> bool {
        false
    }
    /// A stored conversation id as this API shows it to clients.
    fn client_conversation_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(id)
    }
    /// A client-chosen key may wrap another front's conversation id (guayaba `api:<id>`).
    fn keys_wrap_other_ids(&self) -> bool {
        false
    }
    /// A request header that may name the conversation when the body does not, and that
    /// carries the conversation's id back on every chat answer (the OpenAI APIs:
    /// `x-conversation-id`, SPEC §10).
    fn conversation_header(&self) -> Option<&'static str> {
        None
    }
    /// What this API calls a conversation in its errors (`conversation`, `session`).
    fn conversation_noun(&self) -> &'static str {
        "conversation"
    }

    // ---- Backends speaking it -----------------------------------------------------------------

    /// A backend speaking this API can continue a conversation without a message (chatbase,
    /// after a tool result).
    fn continues_without_message(&self) -> bool {
        false
    }
    /// The JSON body of a chat sent to a backend speaking this API (always asking for a
    /// stream); the path is [`upstream_path`].
    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value;
    /// A backend speaking this API is called on its `upstream` URL as it stands, not on a
    /// path of [`ChatApi::routes`] (ag-ui: one URL per agent; `upstream_agent_id` unused).
    fn upstream_uses_base_path(&self) -> bool {
        false
    }
    /// The agent's id on the backend is the body's `model`, any text (a model server's
    /// `meta-llama/Llama-3.1-8B-Instruct`), not a path segment (the OpenAI APIs).
    fn upstream_agent_id_is_model(&self) -> bool {
        false
    }
    /// A backend speaking this API keeps no conversation: every call carries the
    /// conversation's recorded messages ([`UpstreamChat::history`]; openai-chat).
    fn upstream_takes_history(&self) -> bool {
        false
    }
    /// The id of each answer (the canonical start's message id) is what continues the
    /// conversation next turn: it becomes the backend conversation id, replaced every turn
    /// (openai-responses' `previous_response_id`).
    fn upstream_continues_from_answer_id(&self) -> bool {
        false
    }

    // ---- Answers ------------------------------------------------------------------------------

    /// How this API's stream of one answer is written, beyond the front's settings: the ids,
    /// model and usage chunk the OpenAI formats carry. `agent_id` is the agent's configured id.
    fn encode_options(
        &self,
        _chat: &ChatRequest,
        _ids: &FinishIds<'_>,
        _agent_id: &str,
    ) -> EncodeOptions {
        EncodeOptions::default()
    }

    /// A whole (non-streamed) answer as this API's JSON body.
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value;
    /// The metadata of a stream's finish carrying the gateway's ids and `usage` (`None`: this
    /// API's stream carries none).
    fn finish_metadata(&self, _ids: &FinishIds<'_>, _usage: Value) -> Option<Value> {
        None
    }

    // ---- OpenAPI ------------------------------------------------------------------------------

    /// The schema of the agent id in a chat path.
    fn agent_id_schema(&self) -> Value {
        json!({ "type": "string", "minLength": 1 })
    }
    /// How a chat answers: JSON or a stream (a sentence of the chat operation's description).
    fn chat_how(&self) -> &'static str;
    /// The chat request body.
    fn request_schema(&self) -> Value;
    /// The sync answer ([`ChatApi::sync_body`]).
    fn sync_schema(&self) -> Value;
    /// What each error status means on a chat of this API.
    fn error_docs(&self) -> ErrorDocs {
        ErrorDocs::DEFAULT
    }

    // ---- Demo backend -------------------------------------------------------------------------

    /// How the demo backend reads a chat sent to it (leniently: it trusts the gateway): the
    /// conversation the body names and whether to stream. `stream_path`: it came on a
    /// streaming chat path.
    fn demo_read(&self, body: &Value, wants_sse: bool, stream_path: bool) -> DemoRead;

    /// The user message the demo backend answers (its `message` field, leniently).
    fn demo_message(&self, body: &Value) -> String {
        str_field(body, "message").unwrap_or_default()
    }

    /// Metadata the demo backend sends before its finish (`agents`: the conversation id).
    fn demo_metadata(&self, _conversation: &str) -> Option<Value> {
        None
    }

    /// The turn the demo backend answers when the body itself tells it (openai-chat: the
    /// `user` messages sent, history included); else the demo counts a conversation's turns.
    fn demo_turn(&self, _body: &Value) -> Option<u32> {
        None
    }

    /// The encoder options of the demo backend's answer (the OpenAI formats: `model`, the
    /// usage chunk).
    fn demo_options(&self, _body: &Value) -> EncodeOptions {
        EncodeOptions::default()
    }

    /// A fresh id for the demo backend's answer that continues the conversation next turn
    /// ([`ChatApi::upstream_continues_from_answer_id`]; openai-responses: `resp_…`).
    fn demo_answer_id(&self) -> Option<String> {
        None
    }
}

/// The descriptions of a chat's error statuses in the OpenAPI document (SPEC §5).
#[derive(Debug, Clone, Copy)]
pub struct ErrorDocs {
    pub bad_request: &'static str,
    /// 403 when the front takes keys.
    pub forbidden: &'static str,
    pub not_found: &'static str,
    pub unprocessable: &'static str,
    /// 404 of a conversation-store operation: `Some(what)` besides the agent, or `None`.
    pub store_not_found: fn(Option<&str>) -> String,
}

impl ErrorDocs {
    pub const DEFAULT: ErrorDocs = ErrorDocs {
        bad_request: "Malformed JSON, a missing, empty or too long `message`, or a field that \
                      breaks its rule (`userId`, `sessionKey`, …).",
        forbidden: "The key lacks the `agents:run` scope, or asks for a stream without \
                    `agents:stream`.",
        not_found: "The agent does not exist or is outside the key's access target, or the \
                    named conversation does not exist.",
        unprocessable: "An `Idempotency-Key` reused with another body.",
        store_not_found: |what| {
            format!(
                "The agent does not exist or is outside the key's access target{}.",
                what.map(|w| format!("; or {w}")).unwrap_or_default()
            )
        },
    };
}

/// What the gateway sends a backend for one chat (the API-neutral part of
/// [`crate::upstream::Call`]).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamChat<'a> {
    /// The agent's id on the backend (`upstream_agent_id`; the `model` of the OpenAI APIs).
    pub agent_id: &'a str,
    pub message: Option<&'a str>,
    /// The backend's own conversation id, when the conversation continues.
    pub conversation: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// pharen options (passed on only to a pharen backend).
    pub options: &'a Map<String, Value>,
    /// The conversation's recorded messages, oldest first, when the backend takes them
    /// ([`ChatApi::upstream_takes_history`]); empty otherwise.
    pub history: &'a [HistoryMessage],
}

/// One recorded message of a conversation, as sent to a backend that keeps no conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryMessage {
    pub role: HistoryRole,
    pub content: String,
}

/// Who said a [`HistoryMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryRole {
    User,
    Assistant,
}

/// What the demo backend reads from a chat body ([`ChatApi::demo_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoRead {
    pub conversation: Option<String>,
    pub stream: bool,
}

/// The string field `name` of a JSON body.
pub fn str_field(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The boolean field `name` of a JSON body.
pub fn bool_field(body: &Value, name: &str) -> Option<bool> {
    body.get(name).and_then(Value::as_bool)
}

/// The ids a stream's finish metadata carries.
#[derive(Debug, Clone, Copy)]
pub struct FinishIds<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub user_message_id: &'a str,
    pub user_id: Option<&'a str>,
}

/// The path (template filled with the percent-encoded agent id) a backend speaking `api` is
/// called on: its streaming chat route if it has one, else its chat route; empty when the
/// backend is called on its base URL as it stands ([`ChatApi::upstream_uses_base_path`]).
pub fn upstream_path(api: Api, encoded_agent_id: &str) -> String {
    if api.upstream_uses_base_path() {
        return String::new();
    }
    let chat = |stream| {
        api.routes().iter().find(|r| {
            r.kind
                == RouteKind::Chat {
                    stream_path: stream,
                }
        })
    };
    let route = chat(true)
        .or_else(|| chat(false))
        .unwrap_or_else(|| unreachable!("every API has a chat route"));
    route.fill(&[encoded_agent_id])
}

/// Declares the APIs: each line `Variant => module::Type,` declares `mod module`, the variant
/// of [`Api`] and its entry in [`Api::ALL`].
macro_rules! registry {
    ($($variant:ident => $module:ident :: $ty:ident,)+) => {
        $(pub mod $module;)+

        /// One of the chat APIs: a cheap handle on its [`ChatApi`] (`api.spec()`, or any trait
        /// method through `Deref`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Api {
            $($variant,)+
        }

        impl Api {
            pub const ALL: [Api; [$(stringify!($variant),)+].len()] = [$(Api::$variant,)+];

            /// The API's implementation.
            pub fn spec(self) -> &'static dyn ChatApi {
                match self {
                    $(Api::$variant => &$module::$ty,)+
                }
            }
        }
    };
}

registry! {
    Pharen => pharen::Pharen,
    Chatbase => chatbase::Chatbase,
    Agents => agents::Agents,
    Guayaba => guayaba::Guayaba,
    AgUi => ag_ui::AgUi,
    OpenAiChat => openai_chat::OpenAiChat,
    OpenAiResponses => openai_responses::OpenAiResponses,
    OpenAi => openai::OpenAi,
}

impl std::ops::Deref for Api {
    type Target = dyn ChatApi;
    fn deref(&self) -> &Self::Target {
        self.spec()
    }
}

impl Api {
    pub fn as_str(self) -> &'static str {
        self.spec().name()
    }

    /// The stream format this API speaks by default.
    pub fn default_format(self) -> Format {
        self.spec().default_format()
    }

    /// The APIs clients may call agentgate with ([`ChatApi::is_front`]).
    pub fn fronts() -> impl Iterator<Item = Api> {
        Api::ALL.into_iter().filter(|api| api.is_front())
    }

    /// The APIs an agent's backend may speak ([`ChatApi::is_upstream`]).
    pub fn upstreams() -> impl Iterator<Item = Api> {
        Api::ALL.into_iter().filter(|api| api.is_upstream())
    }

    /// An error as this API answers it: its status, headers and [`ChatApi::error_body`].
    pub fn error_bytes(self, e: &ApiError) -> Bytes {
        Bytes::from(self.spec().error_body(e).to_string())
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(api) = Api::ALL.into_iter().find(|a| a.as_str() == s) {
            return Ok(api);
        }
        let names: Vec<&str> = Api::ALL.iter().map(|a| a.as_str()).collect();
        let expected = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(format!("unknown API `{s}` (expected {expected})"))
    }
}

impl<'de> serde::Deserialize<'de> for Api {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses and validates a chat body of `api` (see [`ChatApi::parse_chat`]).
pub fn parse_chat(
    api: Api,
    body: &[u8],
    wants_sse: bool,
    stream_path: bool,
) -> Result<ChatRequest, ApiError> {
    api.spec().parse_chat(body, wants_sse, stream_path)
}

/// An error as a front answers it: a status and `{"error":{"code","message","details"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A malformed body or a failed validation, as `api` answers it ([`ChatApi::invalid`]).
    pub fn invalid(api: Api, message: impl Into<String>) -> Self {
        api.spec().invalid(message.into())
    }

    /// An unknown agent, as `api` answers it ([`ChatApi::agent_not_found`]).
    pub fn agent_not_found(api: Api, exists: bool) -> Self {
        api.spec().agent_not_found(exists)
    }

    pub fn body(&self) -> Bytes {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        Bytes::from(body.to_string())
    }
}

#[cfg(test)]
mod tests;
