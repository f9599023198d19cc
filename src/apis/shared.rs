//! Pieces several APIs' answers and OpenAPI schemas share.

use serde_json::{json, Value};

use super::MAX_MESSAGE_CHARS;
use crate::formats::{Aggregate, SyncContext};

/// The ids and usage every sync body carries, the gateway's ([`SyncContext`]) before the
/// stream's.
pub struct SyncCommon {
    pub conversation_id: Option<String>,
    pub message_id: Option<String>,
    /// `{"credits": …}`: what the answer was charged.
    pub usage: Value,
}

impl SyncCommon {
    pub fn of(aggregate: &Aggregate, ctx: &SyncContext) -> Self {
        let credits = ctx.credits.or(aggregate.credits).unwrap_or(0.0);
        SyncCommon {
            conversation_id: ctx
                .conversation_id
                .clone()
                .or_else(|| aggregate.conversation_id.clone()),
            message_id: ctx
                .message_id
                .clone()
                .or_else(|| aggregate.message_id.clone()),
            usage: json!({ "credits": Credits(credits) }),
        }
    }
}

/// Credits, written as an integer when whole.
struct Credits(f64);

impl serde::Serialize for Credits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::formats::serialize_credits(&self.0, s)
    }
}

/// The schema of a chat's `message`.
pub fn message_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_MESSAGE_CHARS,
        "description": "The user message (at most 32,000 characters)."
    })
}

/// A reference to the shared `Usage` schema.
pub fn usage_ref() -> Value {
    json!({ "$ref": "#/components/schemas/Usage" })
}

/// The text of a chat message's `content`: a string, or its text parts (`text`, or the
/// Responses API's `input_text`) concatenated.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("text" | "input_text")
                    )
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

/// The text of the last `user` message of `messages`, if there is one: AG-UI's messages,
/// Chat Completions' `messages` and Responses' `input` items alike.
pub fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(content_text)
}
