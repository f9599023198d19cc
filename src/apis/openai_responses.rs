//! openai-responses (SPEC §10), an upstream API only: a backend speaking OpenAI's Responses API
//! is POSTed `{upstream}/v1/responses` with `model` = the agent's `upstream_agent_id`, the
//! message as `input`, `stream: true` and, when the conversation continues,
//! `previous_response_id` = the id of the backend's last response in it (the backend
//! conversation id, replaced by each answer's `response.created` id).

use http::Method;
use serde_json::{json, Map, Value};

use super::openai_chat::answer_options;
use super::request::{check_length, malformed};
use super::shared::last_user_text;
use super::{
    bool_field, str_field, ApiError, ChatApi, ChatRequest, Conversation, DemoRead, RouteDef,
    RouteKind, UpstreamChat,
};
use crate::formats::{response_body, Aggregate, EncodeOptions, Format, SyncContext};

pub struct OpenAiResponses;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/v1/responses",
    RouteKind::Chat { stream_path: false },
)];

/// The text of a Responses `input`: a string, or the last `user` message item's text.
fn input_text(body: &Value) -> Option<String> {
    match body.get("input")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => last_user_text(items),
        _ => None,
    }
}

impl ChatApi for OpenAiResponses {
    fn name(&self) -> &'static str {
        "openai-responses"
    }
    fn title(&self) -> &'static str {
        "OpenAiResponses"
    }
    fn default_format(&self) -> Format {
        Format::OpenAiResponses
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

    /// A Responses request, read as the demo backend reads it: the `input` text is the
    /// message. (Never a front: see [`ChatApi::is_front`].)
    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let body: Value = serde_json::from_slice(body).map_err(|e| malformed(self, e))?;
        let message = input_text(&body)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| self.invalid("`input` must hold a user text".into()))?;
        check_length(self, &message)?;
        Ok(ChatRequest {
            message: Some(message),
            conversation: match str_field(&body, "previous_response_id") {
                Some(id) => Conversation::Existing(id),
                None => Conversation::New,
            },
            stream: bool_field(&body, "stream").unwrap_or(false),
            user_id: None,
            options: Map::new(),
        })
    }

    fn upstream_continues_from_answer_id(&self) -> bool {
        true
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let mut body = json!({
            "model": call.agent_id,
            "input": call.message.unwrap_or_default(),
            "stream": true,
        });
        if let Some(previous) = call.conversation {
            body["previous_response_id"] = json!(previous);
        }
        body
    }

    /// The Response object (what the demo backend answers a non-stream call).
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let options = EncodeOptions {
            response_id: ctx.message_id.as_deref().map(std::sync::Arc::from),
            model: ctx.agent_id.as_deref().map(std::sync::Arc::from),
            ..EncodeOptions::default()
        };
        response_body(aggregate, &options, ctx)
    }

    fn chat_how(&self) -> &'static str {
        "Streams Responses events (`response.created` … `response.completed`) when `stream` is \
         true, else answers a Response object."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "OpenAI's Responses request; the `input` text is the message.",
            "required": ["model", "input"],
            "properties": {
                "model": { "type": "string" },
                "input": {},
                "previous_response_id": { "type": "string" },
                "stream": { "type": "boolean" }
            }
        })
    }
    fn sync_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "model", "output"],
            "properties": {
                "id": { "type": "string" },
                "object": { "const": "response" },
                "created_at": { "type": "integer" },
                "model": { "type": "string" },
                "output": { "type": "array" },
                "usage": { "type": "object" }
            }
        })
    }

    fn demo_message(&self, body: &Value) -> String {
        input_text(body).unwrap_or_default()
    }

    fn demo_options(&self, body: &Value) -> EncodeOptions {
        answer_options(body)
    }

    fn demo_answer_id(&self) -> Option<String> {
        Some(format!("resp_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The conversation is the response it continues.
    fn demo_read(&self, body: &Value, _wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "previous_response_id"),
            stream: bool_field(body, "stream").unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{upstream_path, Api};
    use super::*;

    fn call(conversation: Option<&str>) -> Value {
        OpenAiResponses.upstream_body(&UpstreamChat {
            agent_id: "gpt-4.1-mini",
            message: Some("hi ✓"),
            conversation,
            user_id: None,
            options: &Map::new(),
            history: &[],
        })
    }

    #[test]
    fn upstream_is_responses_streaming_continuing_the_last_response() {
        assert_eq!(upstream_path(Api::OpenAiResponses, "a"), "/v1/responses");
        assert!(!Api::OpenAiResponses.is_front());
        assert!(Api::OpenAiResponses.upstream_continues_from_answer_id());
        assert_eq!(
            call(None),
            json!({ "model": "gpt-4.1-mini", "input": "hi ✓", "stream": true })
        );
        assert_eq!(
            call(Some("resp_1")),
            json!({
                "model": "gpt-4.1-mini", "input": "hi ✓", "stream": true,
                "previous_response_id": "resp_1",
            })
        );
    }

    #[test]
    fn input_is_a_string_or_the_last_user_item() {
        let items = json!({ "input": [
            { "role": "user", "content": "old" },
            { "role": "user", "content": [
                { "type": "input_text", "text": "new " }, { "type": "input_image" },
                { "type": "input_text", "text": "one" }
            ]},
        ], "previous_response_id": "resp_9", "stream": true });
        assert_eq!(OpenAiResponses.demo_message(&items), "new one");
        let read = OpenAiResponses.demo_read(&items, false, false);
        assert_eq!(read.conversation.as_deref(), Some("resp_9"));
        assert!(read.stream);
        assert_eq!(OpenAiResponses.demo_message(&json!({ "input": "plain" })), "plain");
        let req = OpenAiResponses
            .parse_chat(items.to_string().as_bytes(), false, false)
            .unwrap();
        assert_eq!(req.conversation, Conversation::Existing("resp_9".into()));
        assert!(OpenAiResponses
            .parse_chat(br#"{"input":5}"#, false, false)
            .is_err());
    }
}
