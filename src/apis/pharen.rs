//! pharen (seed 000): `POST /api/agents/{agent_uuid}/chat/`, a stream on
//! `Accept: text/event-stream`, UI-message stream; agent ids are UUIDs, a bare key is accepted.

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{required_message, JsonKind};
use super::shared::{message_schema, usage_ref, SyncCommon};
use super::{str_field, DemoRead, 
    ApiError, ChatApi, ChatRequest, Conversation, FinishIds, RouteDef, RouteKind, UpstreamChat,
};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct Pharen;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/api/agents/{agent_uuid}/chat/",
    RouteKind::Chat { stream_path: false },
)];

/// pharen's optional fields passed on to a pharen backend, with their types (seed 000).
const OPTIONS: [(&str, JsonKind); 6] = [
    ("model", JsonKind::String),
    ("enable_thinking", JsonKind::Bool),
    ("artifact_mode", JsonKind::Bool),
    ("artifact_category", JsonKind::String),
    ("page_context", JsonKind::Object),
    ("context", JsonKind::Object),
];

#[derive(Deserialize)]
struct Body {
    message: Option<Value>,
    /// Everything else: `conversation_uuid`/`conversation_id` and [`OPTIONS`] (a JSON `null`
    /// is a wrong type, not an absent field).
    #[serde(flatten)]
    options: Map<String, Value>,
}

impl ChatApi for Pharen {
    fn name(&self) -> &'static str {
        "pharen"
    }
    fn title(&self) -> &'static str {
        "Pharen"
    }
    fn default_format(&self) -> Format {
        Format::UiMessage
    }
    fn routes(&self) -> &'static [RouteDef] {
        ROUTES
    }

    fn parse_chat(
        &self,
        body: &[u8],
        wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let b: Body = serde_json::from_slice(body).map_err(|e| super::request::malformed(self, e))?;
        let message = required_message(self, b.message)?;
        let mut options = b.options;
        let mut conversation = Conversation::New;
        for field in ["conversation_id", "conversation_uuid"] {
            match options.remove(field) {
                Some(Value::String(id)) => conversation = Conversation::Existing(id),
                Some(v) => JsonKind::String.check(self, field, &v)?,
                None => {}
            }
        }
        options.retain(|k, _| OPTIONS.iter().any(|(name, _)| name == k));
        for (name, kind) in OPTIONS {
            if let Some(v) = options.get(name) {
                kind.check(self, name, v)?;
            }
        }
        Ok(ChatRequest {
            message: Some(message),
            conversation,
            stream: wants_sse,
            user_id: None,
            options,
            agent: None,
        })
    }
    fn agent_id_valid(&self, id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok()
    }
    fn agent_id_rule(&self) -> &'static str {
        "a UUID"
    }
    fn bare_key_auth(&self) -> bool {
        true
    }

    fn new_conversation_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        // pharen's own options only: another front's (ag-ui's run extras) are not for it.
        let mut body: Map<String, Value> = call
            .options
            .iter()
            .filter(|(k, _)| OPTIONS.iter().any(|(name, _)| name == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(m) = call.message {
            body.insert("message".into(), json!(m));
        }
        if let Some(c) = call.conversation {
            body.insert("conversation_uuid".into(), json!(c));
        }
        Value::Object(body)
    }

    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let c = SyncCommon::of(aggregate, ctx);
        // Like agents, it also carries `usage`: what the answer was charged.
        json!({
            "message": aggregate.text,
            "conversation_id": c.conversation_id,
            "run_id": ctx.run_id.clone().or(c.message_id),
            "usage": c.usage,
        })
    }
    fn finish_metadata(&self, ids: &FinishIds<'_>, usage: Value) -> Option<Value> {
        Some(json!({
            "conversation_id": ids.conversation_id,
            "run_id": ids.message_id,
            "usage": usage,
        }))
    }

    fn agent_id_schema(&self) -> Value {
        json!({ "type": "string", "format": "uuid" })
    }
    fn chat_how(&self) -> &'static str {
        "Answers with a stream when the request has `Accept: text/event-stream`, else with the \
         whole answer as JSON."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": message_schema(),
                "conversation_uuid": {
                    "type": "string",
                    "description": "Continue this conversation (an id an earlier answer gave)."
                },
                "conversation_id": {
                    "type": "string",
                    "description": "Same as `conversation_uuid`."
                },
                "model": { "type": "string", "description": "Model override, passed to a pharen backend." },
                "enable_thinking": { "type": "boolean" },
                "artifact_mode": { "type": "boolean" },
                "artifact_category": { "type": "string" },
                "page_context": { "type": "object", "additionalProperties": true },
                "context": { "type": "object", "additionalProperties": true }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["message", "conversation_id", "run_id", "usage"],
            "properties": {
                "message": { "type": "string", "description": "The answer's text." },
                "conversation_id": { "type": "string" },
                "run_id": { "type": "string" },
                "usage": usage_ref()
            }
        })
    }

    fn demo_read(&self, body: &Value, wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "conversation_uuid")
                .or_else(|| str_field(body, "conversation_id")),
            stream: wants_sse,
        }
    }
}
