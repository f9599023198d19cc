//! openai-chat (SPEC §10), an upstream API only: a backend speaking OpenAI's Chat Completions
//! (vLLM, llama.cpp server, Ollama, LiteLLM, OpenAI itself) is POSTed
//! `{upstream}/v1/chat/completions` with `model` = the agent's `upstream_agent_id`, the
//! conversation's recorded messages then the new one as `messages`, `stream: true` and
//! `stream_options.include_usage`, and streams `chat.completion.chunk`s back. Chat Completions
//! keeps no conversation, so the history is what continues one.
//!
//! It also serves the `openai` front's `POST /v1/chat/completions` (see `openai.rs`): `model`
//! names the agent, the last `user` message is the message, `metadata.conversation_id` (or the
//! `x-conversation-id` header) continues a conversation, and the answer is a `chat.completion`
//! or its chunks, with `usage.credits` the credits charged.

use http::Method;
use serde_json::{json, Map, Value};

use super::openai::{self, id_core, invalid_param, Common, INCLUDE_USAGE};
use super::shared::last_user_text;
use super::{
    bool_field, ApiError, ChatApi, ChatRequest, DemoRead, FinishIds, RouteDef,
    RouteKind, UpstreamChat,
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

/// The id of a Chat Completions answer: `chatcmpl-` and the answer's message id's hex.
fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{}", id_core(message_id))
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

    /// A Chat Completions request on the `openai` front: `model`, `messages` (the last `user`
    /// message's text is the message), `stream`, `stream_options.include_usage`,
    /// `metadata.conversation_id`; the other fields are the backend's business and not read.
    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let common = Common::parse(self, body)?;
        let messages = match common.body.get("messages") {
            Some(Value::Array(m)) => m,
            _ => {
                return Err(invalid_param(
                    "messages",
                    "`messages` is required: an array of messages".into(),
                ))
            }
        };
        let message = last_user_text(messages);
        let include_usage = match common.body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid_param(
                        "stream_options",
                        "`stream_options.include_usage` must be a boolean".into(),
                    ))
                }
            },
            Some(_) => {
                return Err(invalid_param(
                    "stream_options",
                    "`stream_options` must be an object".into(),
                ))
            }
        };
        let mut options = Map::new();
        if include_usage {
            options.insert(INCLUDE_USAGE.into(), Value::Bool(true));
        }
        common.request(self, message, "messages", options)
    }
    openai::openai_errors_and_conversations!();

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

    /// The chunks' `id` (`chatcmpl-` and the answer's message id), `model` (the agent's id)
    /// and the usage chunk when the client asked for it.
    fn encode_options(
        &self,
        chat: &ChatRequest,
        ids: &FinishIds<'_>,
        agent_id: &str,
    ) -> EncodeOptions {
        EncodeOptions {
            include_usage: chat.options.contains_key(INCLUDE_USAGE),
            model: Some(agent_id.into()),
            response_id: Some(completion_id(ids.message_id).into()),
            ..EncodeOptions::default()
        }
    }

    /// The `chat.completion` object (the front's answer to a non-stream call, and the demo
    /// backend's).
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let options = EncodeOptions {
            response_id: ctx.message_id.as_deref().map(|m| completion_id(m).into()),
            model: ctx.agent_id.as_deref().map(std::sync::Arc::from),
            ..EncodeOptions::default()
        };
        chat_completion_body(aggregate, &options, ctx)
    }

    fn chat_how(&self) -> &'static str {
        "Streams `chat.completion.chunk` objects ending `data: [DONE]` when `stream` is true \
         (the usage chunk, `choices: []`, when `stream_options.include_usage`), else answers a \
         `chat.completion` object. `model` is the agent's id or name; `usage` carries the \
         backend's token counts and `credits`, what was charged. The conversation's id comes \
         back in `x-conversation-id`."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "OpenAI's Chat Completions request; the last `user` message is the \
                            message.",
            "required": ["model", "messages"],
            "properties": {
                "model": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The agent: its id or name (`GET /v1/models`)."
                },
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "role": { "type": "string" },
                            "content": {}
                        }
                    }
                },
                "stream": { "type": "boolean", "default": false },
                "stream_options": {
                    "type": "object",
                    "properties": { "include_usage": { "type": "boolean" } }
                },
                "metadata": {
                    "type": "object",
                    "properties": {
                        "conversation_id": {
                            "type": "string",
                            "description": "Continue this conversation (its id came back in \
                                            `x-conversation-id`)."
                        }
                    }
                }
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
