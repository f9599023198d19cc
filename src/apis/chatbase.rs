//! chatbase (seeds 001/002): `POST /api/v2/agents/{agentId}/chat`, streams unless
//! `"stream": false`; also takes the Vercel AI SDK's `DefaultChatTransport` body; can continue
//! after a tool result without a message.

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{
    check_conversation_key, check_length, malformed, message_string, MAX_CONVERSATION_KEY_LEN,
    MAX_USER_ID_CHARS,
};
use super::shared::{message_schema, usage_ref, SyncCommon};
use super::{bool_field, str_field, DemoRead, 
    ApiError, ChatApi, ChatRequest, Conversation, FinishIds, RouteDef, RouteKind, UpstreamChat,
};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct Chatbase;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/api/v2/agents/{agentId}/chat",
    RouteKind::Chat { stream_path: false },
)];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    message: Option<Value>,
    conversation_id: Option<String>,
    stream: Option<bool>,
    user_id: Option<String>,
    /// The AI SDK's `DefaultChatTransport` body: `{id, messages, trigger}`.
    id: Option<String>,
    messages: Option<Vec<UiMessage>>,
}

#[derive(Deserialize)]
struct UiMessage {
    role: String,
    #[serde(default)]
    parts: Vec<UiPart>,
}

#[derive(Deserialize)]
struct UiPart {
    #[serde(rename = "type")]
    ty: String,
    text: Option<String>,
}

impl ChatApi for Chatbase {
    fn name(&self) -> &'static str {
        "chatbase"
    }
    fn title(&self) -> &'static str {
        "Chatbase"
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
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let b: Body = serde_json::from_slice(body).map_err(|e| malformed(self, e))?;
        // `userId` applies only to a conversation being opened; with a `conversationId` it is
        // ignored, even when it breaks the pattern (seed 001).
        let user_id = match (&b.messages, &b.conversation_id) {
            (None, Some(_)) => None,
            _ => b.user_id,
        };
        if let Some(user_id) = &user_id {
            self.validate_user_id(user_id)?;
        }
        let (message, conversation) = match b.messages {
            Some(messages) => {
                let text = last_user_text(&messages).ok_or_else(|| {
                    self.invalid("`messages` has no user message with text".into())
                })?;
                check_length(self, &text)?;
                let conversation = match b.id.or(b.conversation_id) {
                    Some(id) => {
                        check_conversation_key(self, "id", &id)?;
                        Conversation::ClientKey(id)
                    }
                    None => Conversation::New,
                };
                (Some(text), conversation)
            }
            None => {
                let message = match b.message {
                    None => None,
                    Some(v) => Some(message_string(self, v)?),
                };
                if message.is_none() && b.conversation_id.is_none() {
                    return Err(self.invalid(
                        "`message` is required when no `conversationId` is given".into(),
                    ));
                }
                let conversation = match b.conversation_id {
                    Some(id) => Conversation::Existing(id),
                    None => Conversation::New,
                };
                (message, conversation)
            }
        };
        Ok(ChatRequest {
            message,
            conversation,
            stream: b.stream.unwrap_or(true),
            user_id,
            options: Map::new(),
            agent: None,
        })
    }

    fn continues_without_message(&self) -> bool {
        true
    }
    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let mut body = json!({ "stream": true });
        if let Some(m) = call.message {
            body["message"] = json!(m);
        }
        if let Some(c) = call.conversation {
            body["conversationId"] = json!(c);
        } else if let Some(u) = call.user_id {
            body["userId"] = json!(u);
        }
        body
    }

    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let c = SyncCommon::of(aggregate, ctx);
        json!({
            "messageId": c.message_id,
            "userMessageId": ctx.user_message_id,
            "conversationId": c.conversation_id,
            "userId": ctx.user_id,
            "usage": c.usage,
            "text": aggregate.text,
        })
    }
    fn finish_metadata(&self, ids: &FinishIds<'_>, usage: Value) -> Option<Value> {
        Some(json!({
            "messageId": ids.message_id,
            "userMessageId": ids.user_message_id,
            "conversationId": ids.conversation_id,
            "userId": ids.user_id,
            "usage": usage,
        }))
    }

    fn chat_how(&self) -> &'static str {
        "Streams unless the body says `\"stream\": false`."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "Either chatbase's own body (`message`, `conversationId`) or the \
                            Vercel AI SDK's `DefaultChatTransport` body (`id`, `messages`, \
                            `trigger`): then the last user message's text is the message and \
                            `id` names the conversation.",
            "anyOf": [
                { "required": ["message"] },
                { "required": ["conversationId"] },
                { "required": ["messages"] }
            ],
            "properties": {
                "message": message_schema(),
                "conversationId": {
                    "type": "string",
                    "description": "Continue this conversation; without `message`, continue \
                                    after a tool result."
                },
                "stream": { "type": "boolean", "default": true },
                "userId": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_USER_ID_CHARS,
                    "pattern": "^[a-zA-Z0-9._-]+$"
                },
                "id": {
                    "type": "string",
                    "maxLength": MAX_CONVERSATION_KEY_LEN,
                    "pattern": "^[A-Za-z0-9._:-]+$",
                    "description": "AI SDK chat id."
                },
                "trigger": { "type": "string" },
                "messages": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "id": { "type": "string" },
                            "role": { "type": "string" },
                            "parts": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["type"],
                                    "properties": {
                                        "type": { "type": "string" },
                                        "text": { "type": "string" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["messageId", "userMessageId", "conversationId", "userId", "usage", "text"],
            "properties": {
                "messageId": { "type": "string" },
                "userMessageId": { "type": "string" },
                "conversationId": { "type": "string" },
                "userId": { "type": ["string", "null"] },
                "usage": usage_ref(),
                "text": { "type": "string", "description": "The answer's text." }
            }
        })
    }

    fn demo_read(&self, body: &Value, _wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "conversationId"),
            stream: bool_field(body, "stream").unwrap_or(true),
        }
    }
}

impl Chatbase {
    fn validate_user_id(&self, user_id: &str) -> Result<(), ApiError> {
        let ok = !user_id.is_empty()
            && user_id.chars().count() <= MAX_USER_ID_CHARS
            && user_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        match ok {
            true => Ok(()),
            false => Err(self.invalid(
                "`userId` must be 1 to 128 characters of letters, digits, `.`, `_` or `-`".into(),
            )),
        }
    }
}

fn last_user_text(messages: &[UiMessage]) -> Option<String> {
    let last = messages.iter().rev().find(|m| m.role == "user")?;
    let text: String = last
        .parts
        .iter()
        .filter(|p| p.ty == "text")
        .filter_map(|p| p.text.as_deref())
        .collect();
    (!text.is_empty()).then_some(text)
}
