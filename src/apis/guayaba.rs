//! guayaba (seed 004): `POST /api/v1/agents/{id}/chat` (JSON unless `"stream": true`),
//! session-delta stream, `api:` session keys, 422 for invalid bodies and 403 for an agent
//! outside the key's agents; plus its sessions (SPEC §7).

use std::borrow::Cow;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{check_conversation_key, malformed, required_message};
use super::shared::{message_schema, usage_ref, SyncCommon};
use super::{bool_field, str_field, DemoRead, 
    ApiError, ChatApi, ChatRequest, Conversation, ErrorDocs, RouteDef, RouteKind, UpstreamChat,
    MAX_CONVERSATION_KEY_LEN,
};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct Guayaba;

const ROUTES: &[RouteDef] = &[
    RouteDef::new(
        &[Method::POST],
        "/api/v1/agents/{id}/chat",
        RouteKind::Chat { stream_path: false },
    ),
    RouteDef::new(
        &[Method::GET],
        "/api/v1/agents/{id}/sessions",
        RouteKind::Sessions,
    ),
    RouteDef::new(
        &[Method::PATCH, Method::DELETE],
        "/api/v1/agents/{id}/sessions/{sessionKey}",
        RouteKind::Session,
    ),
];

/// The prefix of every guayaba `sessionKey` (seed 004).
pub const SESSION_PREFIX: &str = "api:";

/// guayaba's form of a stored conversation id (SPEC §11: every id a front lists can be
/// continued on that front): its own `api:…` keys as they are; any other id (`conv_…`, a UUID,
/// `default`, an AI SDK chat id) behind `api:`, which `find_session` maps back.
pub fn session_key(id: &str) -> Cow<'_, str> {
    match id.starts_with(SESSION_PREFIX) {
        true => Cow::Borrowed(id),
        false => Cow::Owned(format!("{SESSION_PREFIX}{id}")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    message: Option<Value>,
    session_key: Option<String>,
    stream: Option<bool>,
}

impl ChatApi for Guayaba {
    fn name(&self) -> &'static str {
        "guayaba"
    }
    fn title(&self) -> &'static str {
        "Guayaba"
    }
    fn default_format(&self) -> Format {
        Format::SessionDelta
    }
    fn routes(&self) -> &'static [RouteDef] {
        ROUTES
    }

    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let b: Body = serde_json::from_slice(body).map_err(|e| malformed(self, e))?;
        let message = required_message(self, b.message)?;
        let conversation = match b.session_key {
            Some(key) if key.starts_with(SESSION_PREFIX) && key.len() > SESSION_PREFIX.len() => {
                check_conversation_key(self, "sessionKey", &key)?;
                Conversation::ClientKey(key)
            }
            Some(_) => return Err(self.invalid("`sessionKey` must start with `api:`".into())),
            None => Conversation::New,
        };
        Ok(ChatRequest {
            message: Some(message),
            conversation,
            stream: b.stream.unwrap_or(false),
            user_id: None,
            options: Map::new(),
            agent: None,
        })
    }

    fn invalid(&self, message: String) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }
    fn agent_not_found(&self, exists: bool) -> ApiError {
        match exists {
            true => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key cannot access this agent",
            ),
            false => ApiError::new(StatusCode::NOT_FOUND, "not_found", "Agent not found"),
        }
    }

    fn new_conversation_id(&self) -> String {
        format!("{SESSION_PREFIX}{}", uuid::Uuid::now_v7())
    }
    fn client_conversation_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        session_key(id)
    }
    fn keys_wrap_other_ids(&self) -> bool {
        true
    }
    fn conversation_noun(&self) -> &'static str {
        "session"
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let mut body = json!({ "message": call.message.unwrap_or_default(), "stream": true });
        if let Some(c) = call.conversation {
            body["sessionKey"] = json!(c);
        }
        body
    }

    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let c = SyncCommon::of(aggregate, ctx);
        json!({
            "sessionKey": c.conversation_id,
            "response": aggregate.text,
            "toolCalls": aggregate.tool_calls.iter().map(|c| {
                let mut o = json!({ "toolCallId": c.id, "name": c.name, "input": c.input });
                if let Some(out) = &c.output { o["output"] = out.clone(); }
                if let Some(err) = &c.error { o["error"] = json!(err); }
                o
            }).collect::<Vec<_>>(),
            "usage": c.usage,
        })
    }

    fn chat_how(&self) -> &'static str {
        "Answers as JSON unless the body says `\"stream\": true`."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": message_schema(),
                "sessionKey": {
                    "type": "string",
                    "pattern": "^api:[A-Za-z0-9._:-]+$",
                    "minLength": 5,
                    "maxLength": MAX_CONVERSATION_KEY_LEN,
                    "description": "Reuse a session (any `sessionKey` the sessions list shows); \
                                    generated (with the `api:` prefix) when omitted."
                },
                "stream": { "type": "boolean", "default": false }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["sessionKey", "response", "toolCalls", "usage"],
            "properties": {
                "sessionKey": { "type": "string", "pattern": "^api:" },
                "response": { "type": "string" },
                "toolCalls": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["toolCallId", "name", "input"],
                        "properties": {
                            "toolCallId": { "type": "string" },
                            "name": { "type": "string" },
                            "input": {},
                            "output": {},
                            "error": { "type": "string" }
                        }
                    }
                },
                "usage": usage_ref()
            }
        })
    }
    fn error_docs(&self) -> ErrorDocs {
        ErrorDocs {
            bad_request: "An empty or over-long `Idempotency-Key`.",
            forbidden: "The key lacks the chat scope (`agents:run`), asks for a stream without \
                        `agents:stream`, or cannot access this agent.",
            not_found: "No such agent (\"Agent not found\"), or no such endpoint.",
            unprocessable: "Validation error: malformed JSON, a missing, empty or too long \
                            `message`, a `sessionKey` without the `api:` prefix or not of its \
                            form; or an `Idempotency-Key` reused with another body.",
            store_not_found: |what| match what {
                Some(what) => {
                    format!("{what} (or no such agent, \"Agent not found\", or no such endpoint).")
                }
                None => "No such agent (\"Agent not found\"), or no such endpoint.".to_owned(),
            },
        }
    }

    fn demo_read(&self, body: &Value, _wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "sessionKey"),
            stream: bool_field(body, "stream").unwrap_or(false),
        }
    }
}
