//! agents (seed 003): `POST /api/agents/{id}/chat` (JSON unless `"stream": true`) and
//! `/chat/stream`, text-done stream; plus history, conversations, inbox, mark-read and team
//! chat (SPEC §7), and a default conversation per account and agent.

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{malformed, required_message};
use super::shared::{message_schema, usage_ref, SyncCommon};
use super::{str_field, DemoRead, ApiError, ChatApi, ChatRequest, Conversation, RouteDef, RouteKind, UpstreamChat};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct Agents;

const ROUTES: &[RouteDef] = &[
    RouteDef::new(
        &[Method::POST],
        "/api/agents/{id}/chat",
        RouteKind::Chat { stream_path: false },
    ),
    RouteDef::new(
        &[Method::POST],
        "/api/agents/{id}/chat/stream",
        RouteKind::Chat { stream_path: true },
    ),
    RouteDef::new(&[Method::GET], "/api/agents/{id}/history", RouteKind::History),
    RouteDef::new(
        &[Method::GET, Method::POST],
        "/api/agents/{id}/conversations",
        RouteKind::Conversations,
    ),
    RouteDef::new(
        &[Method::PUT, Method::DELETE],
        "/api/agents/{id}/conversations/{conv_id}",
        RouteKind::Conversation,
    ),
    RouteDef::new(&[Method::GET], "/api/agents/{id}/inbox", RouteKind::Inbox),
    RouteDef::new(
        &[Method::POST],
        "/api/agents/{id}/mark-read",
        RouteKind::MarkRead,
    ),
    RouteDef::new(
        &[Method::POST],
        "/api/teams/{id}/chat",
        RouteKind::TeamChat { stream_path: false },
    ),
    RouteDef::new(
        &[Method::POST],
        "/api/teams/{id}/chat/stream",
        RouteKind::TeamChat { stream_path: true },
    ),
];

#[derive(Deserialize)]
struct Body {
    message: Option<Value>,
    conversation_id: Option<String>,
    stream: Option<bool>,
}

impl ChatApi for Agents {
    fn name(&self) -> &'static str {
        "agents"
    }
    fn title(&self) -> &'static str {
        "Agents"
    }
    fn default_format(&self) -> Format {
        Format::TextDone
    }
    fn routes(&self) -> &'static [RouteDef] {
        ROUTES
    }

    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let b: Body = serde_json::from_slice(body).map_err(|e| malformed(self, e))?;
        let message = required_message(self, b.message)?;
        Ok(ChatRequest {
            message: Some(message),
            conversation: match b.conversation_id {
                Some(id) => Conversation::Existing(id),
                None => Conversation::New,
            },
            stream: stream_path || b.stream.unwrap_or(false),
            user_id: None,
            options: Map::new(),
            agent: None,
        })
    }

    fn has_default_conversation(&self) -> bool {
        true
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let mut body = json!({ "message": call.message.unwrap_or_default() });
        if let Some(c) = call.conversation {
            body["conversation_id"] = json!(c);
        }
        body
    }

    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let c = SyncCommon::of(aggregate, ctx);
        json!({
            "response": aggregate.text,
            "agent_id": ctx.agent_id,
            "agent_name": ctx.agent_name,
            "conversation_id": c.conversation_id,
            "usage": c.usage,
        })
    }

    fn chat_how(&self) -> &'static str {
        "Answers with the whole answer as JSON, or streams with `\"stream\": true` (or on \
         `/chat/stream`)."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": message_schema(),
                "conversation_id": {
                    "type": "string",
                    "description": "Continue this conversation; without it, the account's \
                                    default conversation with the agent (id `default`)."
                },
                "stream": { "type": "boolean", "default": false }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["response", "agent_id", "agent_name", "conversation_id", "usage"],
            "properties": {
                "response": { "type": "string" },
                "agent_id": { "type": "string" },
                "agent_name": { "type": "string" },
                "conversation_id": { "type": "string" },
                "usage": usage_ref()
            }
        })
    }

    fn demo_metadata(&self, conversation: &str) -> Option<Value> {
        Some(json!({ "conversation_id": conversation }))
    }

    fn demo_read(&self, body: &Value, _wants_sse: bool, stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "conversation_id"),
            stream: stream_path,
        }
    }
}
