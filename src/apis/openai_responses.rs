//! openai-responses (SPEC §10), an upstream API only: a backend speaking OpenAI's Responses API
//! is POSTed `{upstream}/v1/responses` with `model` = the agent's `upstream_agent_id`, the
//! message as `input`, `stream: true` and, when the conversation continues,
//! `previous_response_id` = the id of the backend's last response in it (the backend
//! conversation id, replaced by each answer's `response.created` id).
//!
//! It also serves the `openai` front's `POST /v1/responses` (see `openai.rs`): `model` names
//! the agent, `input` (a string, or items whose last `user` text is the message),
//! `previous_response_id` continues the conversation of a response agentgate gave out (its id
//! carries the conversation's: [`response_id`]), and the answer is a Response object or its
//! events.

use http::Method;
use serde_json::{json, Map, Value};

use super::openai::{self, id_core, invalid_param, Common};
use super::openai_chat::answer_options;
use super::request::is_conversation_key;
use super::shared::last_user_text;
use super::{
    bool_field, str_field, ApiError, ChatApi, ChatRequest, Conversation, DemoRead,
    FinishIds, RouteDef, RouteKind, UpstreamChat, MAX_CONVERSATION_KEY_LEN,
};
use crate::formats::{response_body, Aggregate, EncodeOptions, Format, SyncContext};

pub struct OpenAiResponses;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/v1/responses",
    RouteKind::Chat { stream_path: false },
)];

/// The id of a Responses answer agentgate gives out: `resp_`, the answer's message id's 32 hex
/// digits, then the conversation's id, so that `previous_response_id` names its conversation
/// without a lookup (also where transcripts are not recorded). It gives a client no more than
/// `metadata.conversation_id` would: the conversation is still looked up under the key's
/// account and the agent. (The demo backend's answer ids are `resp_…` already: kept.)
pub(super) fn response_id(message_id: &str, conversation_id: Option<&str>) -> String {
    if message_id.starts_with("resp_") {
        return message_id.to_owned();
    }
    format!(
        "resp_{}{}",
        id_core(message_id),
        conversation_id.unwrap_or_default()
    )
}

/// The longest [`response_id`] agentgate makes: `resp_`, 32 hex digits, a conversation id.
const MAX_RESPONSE_ID_LEN: usize = 5 + 32 + MAX_CONVERSATION_KEY_LEN;

/// The conversation a [`response_id`] carries; `None` for an id agentgate did not make (its
/// conversation part must be a conversation id: at most [`MAX_CONVERSATION_KEY_LEN`] bytes of
/// `[A-Za-z0-9._:-]`).
fn conversation_of(response_id: &str) -> Option<&str> {
    let rest = response_id.strip_prefix("resp_")?;
    let (core, conversation) = rest.split_at_checked(32)?;
    (core.bytes().all(|b| b.is_ascii_hexdigit()) && is_conversation_key(conversation))
        .then_some(conversation)
}

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

    /// A Responses request on the `openai` front: `model`, `input`, `stream`,
    /// `previous_response_id` (or `metadata.conversation_id`); the other fields are the
    /// backend's business and not read.
    fn parse_chat(
        &self,
        body: &[u8],
        _wants_sse: bool,
        _stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        let mut common = Common::parse(self, body)?;
        let message = match common.body.get("input") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => last_user_text(items),
            _ => {
                return Err(invalid_param(
                    "input",
                    "`input` is required: a string or an array of input items".into(),
                ))
            }
        };
        match common.body.get("previous_response_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) => {
                let conversation = conversation_of(id).ok_or_else(|| {
                    // An id of any length may come: it is echoed only when it could be ours.
                    let shown = match id.len() <= MAX_RESPONSE_ID_LEN {
                        true => format!(" '{id}'"),
                        false => String::new(),
                    };
                    invalid_param(
                        "previous_response_id",
                        format!("Previous response with id{shown} not found."),
                    )
                })?;
                common.conversation = Conversation::Existing(conversation.to_owned());
            }
            Some(_) => {
                return Err(invalid_param(
                    "previous_response_id",
                    "`previous_response_id` must be a string".into(),
                ))
            }
        }
        common.request(self, message, "input", Map::new())
    }
    openai::openai_errors_and_conversations!();

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

    /// The response's `id` ([`response_id`]) and `model` (the agent's id).
    fn encode_options(
        &self,
        _chat: &ChatRequest,
        ids: &FinishIds<'_>,
        agent_id: &str,
    ) -> EncodeOptions {
        EncodeOptions {
            model: Some(agent_id.into()),
            response_id: Some(response_id(ids.message_id, Some(ids.conversation_id)).into()),
            ..EncodeOptions::default()
        }
    }

    /// The Response object (the front's answer to a non-stream call, and the demo backend's).
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        let id = ctx
            .message_id
            .as_deref()
            .map(|m| response_id(m, ctx.conversation_id.as_deref()));
        let options = EncodeOptions {
            response_id: id.map(std::sync::Arc::from),
            model: ctx.agent_id.as_deref().map(std::sync::Arc::from),
            ..EncodeOptions::default()
        };
        response_body(aggregate, &options, ctx)
    }

    fn chat_how(&self) -> &'static str {
        "Streams Responses events (`response.created` … `response.completed`, each with its \
         `sequence_number`) when `stream` is true, else answers a Response object. `model` is \
         the agent's id or name; `previous_response_id` continues that response's \
         conversation; `usage` carries the backend's token counts and `credits`, what was \
         charged. The conversation's id comes back in `x-conversation-id`."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "OpenAI's Responses request; the `input` text is the message.",
            "required": ["model", "input"],
            "properties": {
                "model": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The agent: its id or name (`GET /v1/models`)."
                },
                "input": {
                    "oneOf": [
                        { "type": "string", "minLength": 1 },
                        { "type": "array", "items": { "type": "object" } }
                    ]
                },
                "previous_response_id": {
                    "type": "string",
                    "description": "Continue the conversation of this response (an id \
                                    agentgate gave out)."
                },
                "stream": { "type": "boolean", "default": false },
                "metadata": {
                    "type": "object",
                    "properties": { "conversation_id": { "type": "string" } }
                }
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
        assert!(OpenAiResponses
            .parse_chat(br#"{"model":"a","input":5}"#, false, false)
            .is_err());
    }

    #[test]
    fn previous_response_id_names_the_conversation_its_response_was_in() {
        let id = response_id("msg_0123456789abcdef0123456789abcdef", Some("conv_7"));
        assert_eq!(id, "resp_0123456789abcdef0123456789abcdefconv_7");
        let body = json!({ "model": "helper", "input": "again", "previous_response_id": id });
        let req = OpenAiResponses
            .parse_chat(body.to_string().as_bytes(), false, false)
            .unwrap();
        assert_eq!(req.conversation, Conversation::Existing("conv_7".into()));
        assert_eq!(req.agent.as_deref(), Some("helper"));
        assert_eq!(req.message.as_deref(), Some("again"));
        let long = format!("resp_0123456789abcdef0123456789abcdef{}", "c".repeat(257));
        let spaced = "resp_0123456789abcdef0123456789abcdefconv 1";
        for bad in ["resp_9", "resp_0123456789abcdef0123456789abcdef", "chatcmpl-1", "", spaced, &long] {
            let body = json!({ "model": "m", "input": "x", "previous_response_id": bad });
            let err = OpenAiResponses
                .parse_chat(body.to_string().as_bytes(), false, false)
                .unwrap_err();
            assert_eq!((err.status.as_u16(), err.details["field"].as_str()), (400, Some("previous_response_id")), "{bad}");
            // An overlong id is not echoed back.
            assert!(err.message.len() < 40 + MAX_RESPONSE_ID_LEN, "{}", err.message.len());
        }
    }
}
