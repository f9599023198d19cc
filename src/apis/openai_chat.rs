//! openai-chat (SPEC §10), an upstream API only: a backend speaking OpenAI's Chat Completions
//! (vLLM, llama.cpp server, Ollama, LiteLLM, OpenAI itself) is POSTed
//! `{upstream}/v1/chat/completions` with `model` = the agent's `upstream_agent_id`, the
//! conversation's recorded messages then the new one as `messages`, `stream: true` and
//! `stream_options.include_usage`, and streams `chat.completion.chunk`s back. Chat Completions
//! keeps no conversation, so the history is what continues one.

use http::Method;
use serde_json::{json, Map, Value};

use super::shared::last_user_text;
use super::request::{check_length, malformed};
use super::{
    bool_field, ApiError, ChatApi, ChatRequest, Conversation, DemoRead, RouteDef, RouteKind,
    UpstreamChat,
};
use crate::formats::{chat_completion_body, Aggregate, EncodeOptions, Format, SyncContext};

pub struct OpenAiChat;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/v1/chat/completions",
    RouteKind::Chat { stream_path: false },
)];

/// The text of the last `user` message of a Chat Completions body's `messages`.
fn last_user_message(body: &Value) -> Option<String> {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| last_user_text(m))
}

/// Encoder options for the demo's answer to an OpenAI request body: its `model`, and the
/// usage chunk (the gateway always asks for it).
pub(super) fn answer_options(body: &Value) -> EncodeOptions {
    EncodeOptions {
        include_usage: true,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .map(std::sync::Arc::from),
        ..EncodeOptions::default()
    }
}

impl ChatApi for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai-chat"
    }
    fn title(&self) -> &'static str {
        "OpenAiChat"
    }
    fn default_format(&self) -> Format {
        Format::OpenAiChat
    }
    fn routes(&self) -> &'static [RouteDef] {
        ROUTES
    }
    fn is_front(&self) -> bool {
        false
    }
    fn upstream_agent_id_is_model(&self) -> bool {
        true
    }

    /// A Chat Completions request, read as the demo backend reads it: the last `user`
    /// message's text is the message. (Never a front: see [`ChatApi::is_front`].)
    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let body: Value = serde_json::from_slice(body).map_err(|e| malformed(self, e))?;
        let message = last_user_message(&body)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| self.invalid("`messages` must end with a `user` message".into()))?;
        check_length(self, &message)?;
        Ok(ChatRequest {
            message: Some(message),
            conversation: Conversation::New,
            stream: bool_field(&body, "stream").unwrap_or(false),
            user_id: None,
            options: Map::new(),
        })
    }

    fn upstream_takes_history(&self) -> bool {
        true
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let mut messages: Vec<Value> = call.history.iter().map(|m| json!(m)).collect();
        messages.push(json!({ "role": "user", "content": call.message.unwrap_or_default() }));
        json!({
            "model": call.agent_id,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        })
    }

    /// The `chat.completion` object (what the demo backend answers a non-stream call).
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let options = EncodeOptions {
            response_id: ctx.message_id.as_deref().map(std::sync::Arc::from),
            model: ctx.agent_id.as_deref().map(std::sync::Arc::from),
            ..EncodeOptions::default()
        };
        chat_completion_body(aggregate, &options, ctx)
    }

    fn chat_how(&self) -> &'static str {
        "Streams `chat.completion.chunk` objects when `stream` is true, else answers a \
         `chat.completion` object."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "OpenAI's Chat Completions request; the last `user` message is the \
                            message.",
            "required": ["model", "messages"],
            "properties": {
                "model": { "type": "string" },
                "messages": { "type": "array", "minItems": 1, "items": { "type": "object" } },
                "stream": { "type": "boolean" },
                "stream_options": { "type": "object" }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": { "type": "string" },
                "object": { "const": "chat.completion" },
                "created": { "type": "integer" },
                "model": { "type": "string" },
                "choices": { "type": "array" },
                "usage": { "type": "object" }
            }
        })
    }

    fn demo_message(&self, body: &Value) -> String {
        last_user_message(body).unwrap_or_default()
    }

    /// The turn is the number of `user` messages sent: the gateway sends the history.
    fn demo_turn(&self, body: &Value) -> Option<u32> {
        let messages = body.get("messages").and_then(Value::as_array)?;
        let users = messages
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .count();
        Some(u32::try_from(users).unwrap_or(u32::MAX))
    }

    fn demo_options(&self, body: &Value) -> EncodeOptions {
        answer_options(body)
    }

    fn demo_read(&self, body: &Value, _wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: None,
            stream: bool_field(body, "stream").unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{upstream_path, Api, HistoryMessage, HistoryRole};
    use super::*;

    fn call<'a>(history: &'a [HistoryMessage], options: &'a Map<String, Value>) -> UpstreamChat<'a> {
        UpstreamChat {
            agent_id: "llama-3.1-8b",
            message: Some("and now?"),
            conversation: Some("ignored"),
            user_id: Some("u1"),
            options,
            history,
        }
    }

    #[test]
    fn upstream_is_chat_completions_streaming_with_usage_and_the_history_first() {
        assert_eq!(upstream_path(Api::OpenAiChat, "a%20b"), "/v1/chat/completions");
        assert!(!Api::OpenAiChat.is_front());
        let history = [
            HistoryMessage {
                role: HistoryRole::User,
                content: "hi".into(),
            },
            HistoryMessage {
                role: HistoryRole::Assistant,
                content: "hello ✓".into(),
            },
        ];
        let options = Map::new();
        let body = OpenAiChat.upstream_body(&call(&history, &options));
        assert_eq!(
            body,
            json!({
                "model": "llama-3.1-8b",
                "messages": [
                    { "role": "user", "content": "hi" },
                    { "role": "assistant", "content": "hello ✓" },
                    { "role": "user", "content": "and now?" },
                ],
                "stream": true,
                "stream_options": { "include_usage": true },
            })
        );
        let first = OpenAiChat.upstream_body(&call(&[], &options));
        assert_eq!(first["messages"], json!([{ "role": "user", "content": "and now?" }]));
    }

    #[test]
    fn the_demo_counts_turns_by_user_messages_and_reads_the_last() {
        let body = json!({ "model": "m", "stream": true, "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "one" },
            { "role": "assistant", "content": "Echo (turn 1): one" },
            { "role": "user", "content": [{ "type": "text", "text": "two" }] },
        ]});
        assert_eq!(OpenAiChat.demo_turn(&body), Some(2));
        assert_eq!(OpenAiChat.demo_message(&body), "two");
        assert!(OpenAiChat.demo_read(&body, false, false).stream);
        let req = OpenAiChat
            .parse_chat(body.to_string().as_bytes(), false, false)
            .unwrap();
        assert_eq!(req.message.as_deref(), Some("two"));
        let err = OpenAiChat
            .parse_chat(br#"{"messages":[{"role":"assistant","content":"x"}]}"#, false, false)
            .unwrap_err();
        assert_eq!(err.status, 400);
    }
}
