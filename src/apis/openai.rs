//! openai (SPEC §10), a front only: OpenAI's APIs under one prefix. `GET /v1/models` lists the
//! agents the key may use; `POST /v1/chat/completions` is served by the openai-chat module and
//! `POST /v1/responses` by the openai-responses one (each route's [`RouteDef::via`]), so that
//! an endpoint reads requests, writes answers and is called upstream by one module. The body's
//! `model` names the agent (its id or name). What the three share lives here: the request
//! fields they read alike, OpenAI's error body, the answer's ids.

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::request::{check_conversation_key, check_length, malformed};
use super::{
    Api, ApiError, ChatApi, ChatRequest, Conversation, DemoRead, ErrorDocs, RouteDef, RouteKind,
    UpstreamChat,
};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct OpenAi;

const ROUTES: &[RouteDef] = &[
    RouteDef::new(&[Method::GET], "/v1/models", RouteKind::Models),
    RouteDef::new(&[Method::GET], "/v1/models/{model}", RouteKind::Model),
    RouteDef::new(
        &[Method::POST],
        "/v1/chat/completions",
        RouteKind::Chat { stream_path: false },
    )
    .via(Api::OpenAiChat),
    RouteDef::new(
        &[Method::POST],
        "/v1/responses",
        RouteKind::Chat { stream_path: false },
    )
    .via(Api::OpenAiResponses),
];

/// The header naming a conversation in a request, and carrying its id in every chat answer.
pub const CONVERSATION_HEADER: &str = "x-conversation-id";

/// Where a request's `stream_options.include_usage` waits in [`ChatRequest::options`] for the
/// encoder (no backend reads it).
pub(super) const INCLUDE_USAGE: &str = "openai.include_usage";

impl ChatApi for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn title(&self) -> &'static str {
        "OpenAi"
    }
    fn default_format(&self) -> Format {
        Format::OpenAiChat
    }
    fn routes(&self) -> &'static [RouteDef] {
        ROUTES
    }
    fn is_upstream(&self) -> bool {
        false
    }

    /// Never reached: both chat paths are served by their own module ([`RouteDef::via`]).
    fn parse_chat(
        &self,
        body: &[u8],
        wants_sse: bool,
        stream_path: bool,
    ) -> Result<ChatRequest, ApiError> {
        Api::OpenAiChat.parse_chat(body, wants_sse, stream_path)
    }
    openai_errors_and_conversations!();

    /// Never called: `openai` is not an upstream API ([`ChatApi::is_upstream`]).
    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        Api::OpenAiChat.upstream_body(call)
    }
    fn sync_body(&self, aggregate: &Aggregate, ctx: &SyncContext) -> Value {
        Api::OpenAiChat.sync_body(aggregate, ctx)
    }

    fn chat_how(&self) -> &'static str {
        Api::OpenAiChat.chat_how()
    }
    fn request_schema(&self) -> Value {
        Api::OpenAiChat.request_schema()
    }
    fn sync_schema(&self) -> Value {
        Api::OpenAiChat.sync_schema()
    }
    fn demo_read(&self, body: &Value, wants_sse: bool, stream_path: bool) -> DemoRead {
        Api::OpenAiChat.demo_read(body, wants_sse, stream_path)
    }
}

/// The [`ChatApi`] methods the `openai` front and its two endpoint modules share: OpenAI's
/// errors (body, schema, 400 and 404, their meaning per status) and the `x-conversation-id`
/// header.
macro_rules! openai_errors_and_conversations {
    () => {
        fn invalid(&self, message: String) -> $crate::apis::ApiError {
            $crate::apis::openai::invalid(message)
        }
        fn agent_not_found(&self, exists: bool) -> $crate::apis::ApiError {
            $crate::apis::openai::model_not_found(exists)
        }
        fn error_body(&self, e: &$crate::apis::ApiError) -> serde_json::Value {
            $crate::apis::openai::error_body(e)
        }
        fn error_schema(&self) -> serde_json::Value {
            $crate::apis::openai::error_schema()
        }
        fn error_docs(&self) -> $crate::apis::ErrorDocs {
            $crate::apis::openai::ERROR_DOCS
        }
        fn conversation_header(&self) -> Option<&'static str> {
            Some($crate::apis::openai::CONVERSATION_HEADER)
        }
    };
}
pub(super) use openai_errors_and_conversations;

/// What each error status means on the OpenAI endpoints.
pub(super) const ERROR_DOCS: ErrorDocs = ErrorDocs {
    bad_request: "Malformed JSON, no `model`, no user text (`messages` / `input`), a field of \
                  the wrong type, or a `previous_response_id` agentgate did not give out.",
    forbidden: "The key lacks the `agents:run` scope, or asks for a stream without \
                `agents:stream`.",
    not_found: "The `model` names no agent the key may use (`model_not_found`), or the named \
                conversation does not exist.",
    unprocessable: "An `Idempotency-Key` reused with another body.",
    store_not_found: ErrorDocs::DEFAULT.store_not_found,
};

/// 400 as OpenAI words it (`invalid_request_error`).
pub(super) fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// 400 naming the request field at fault (OpenAI's `param`).
pub(super) fn invalid_param(param: &str, message: String) -> ApiError {
    invalid(message).with_details(json!({ "field": param }))
}

/// 404 for a `model` that names no agent the key may use: OpenAI's `model_not_found`, whether
/// the agent exists or not (a key learns nothing of agents outside it).
pub(super) fn model_not_found(_exists: bool) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    )
    .with_details(json!({ "field": "model" }))
}

/// OpenAI's error body, `{"error":{"message","type","code","param"}}`: `type` from the status
/// (as OpenAI's API reference lists them), `code` agentgate's stable code, `param` the field
/// at fault.
pub(super) fn error_body(e: &ApiError) -> Value {
    let ty = match e.status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let param = e.details.get("field").and_then(Value::as_str);
    json!({ "error": { "message": e.message, "type": ty, "code": e.code, "param": param } })
}

/// The JSON schema of OpenAI's error body.
pub fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "OpenAI's error body; `type` follows the status (`invalid_request_error`, \
                        `authentication_error`, `permission_error`, `insufficient_quota`, \
                        `rate_limit_error`, `server_error`), `code` is agentgate's stable code \
                        (`model_not_found`, `insufficient_credits`, `rate_limited`, …), `param` \
                        the request field at fault.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code", "param"],
                "properties": {
                    "message": { "type": "string" },
                    "type": { "type": "string" },
                    "code": { "type": ["string", "null"] },
                    "param": { "type": ["string", "null"] }
                }
            }
        }
    })
}

/// The fields an OpenAI chat request shares, read from its JSON object: `model` (the agent),
/// `stream`, `metadata.conversation_id`.
pub(super) struct Common {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    pub conversation: Conversation,
}

impl Common {
    pub(super) fn parse(api: &dyn ChatApi, body: &[u8]) -> Result<Common, ApiError> {
        let body = match serde_json::from_slice(body).map_err(|e| malformed(api, e))? {
            Value::Object(body) => body,
            _ => return Err(invalid("the body must be a JSON object".into())),
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(invalid_param(
                    "model",
                    "`model` is required: an agent's id or name (GET /v1/models lists them)"
                        .into(),
                ))
            }
            Some(_) => return Err(invalid_param("model", "`model` must be a string".into())),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid_param("stream", "`stream` must be a boolean".into())),
        };
        let conversation = match body.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match m.get("conversation_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => {
                    return Err(invalid_param(
                        "metadata",
                        "`metadata.conversation_id` must be a string".into(),
                    ))
                }
            },
            Some(_) => {
                return Err(invalid_param(
                    "metadata",
                    "`metadata` must be an object".into(),
                ))
            }
        };
        let conversation = match conversation {
            Some(id) => {
                check_conversation_key(api, "metadata.conversation_id", &id)?;
                Conversation::Existing(id)
            }
            None => Conversation::New,
        };
        Ok(Common {
            body,
            model,
            stream,
            conversation,
        })
    }

    /// The request, with `message` (already taken from the body).
    pub(super) fn request(
        self,
        api: &dyn ChatApi,
        message: Option<String>,
        param: &str,
        options: Map<String, Value>,
    ) -> Result<ChatRequest, ApiError> {
        let message = message.filter(|m| !m.is_empty()).ok_or_else(|| {
            invalid_param(param, format!("`{param}` must hold a user message with text"))
        })?;
        check_length(api, &message)?;
        Ok(ChatRequest {
            message: Some(message),
            conversation: self.conversation,
            stream: self.stream,
            user_id: None,
            options,
            agent: Some(self.model),
        })
    }
}

/// The 32 hex digits of an answer's message id (`msg_<hex>`), the core of the ids OpenAI's
/// answers carry (`chatcmpl-<hex>`, `resp_<hex>…`).
pub(super) fn id_core(message_id: &str) -> &str {
    message_id.strip_prefix("msg_").unwrap_or(message_id)
}

#[cfg(test)]
mod tests {
    use super::super::{match_chat, match_route, Route};
    use super::*;

    #[test]
    fn the_chat_paths_are_served_by_their_module_and_name_no_agent() {
        let chat = match_chat(Api::OpenAi, "/v1/chat/completions").unwrap();
        assert_eq!(chat.agent_id, None);
        assert_eq!(chat.api, Some(Api::OpenAiChat));
        let responses = match_chat(Api::OpenAi, "/v1/responses").unwrap();
        assert_eq!(responses.api, Some(Api::OpenAiResponses));
        assert_eq!(match_route(Api::OpenAi, "/v1/models"), Some(Route::Models));
        assert_eq!(
            match_route(Api::OpenAi, "/v1/models/a%20b"),
            Some(Route::Model { id: "a b".into() })
        );
        assert!(Api::OpenAi.is_front() && !Api::OpenAi.is_upstream());
    }

    #[test]
    fn errors_are_in_openai_shape_with_type_from_the_status() {
        let body = error_body(&model_not_found(true));
        assert_eq!(
            body,
            json!({ "error": {
                "message": "The model does not exist or you do not have access to it.",
                "type": "invalid_request_error", "code": "model_not_found", "param": "model",
            }})
        );
        let e = ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_credits", "no");
        assert_eq!(error_body(&e)["error"]["type"], "insufficient_quota");
        assert_eq!(error_body(&e)["error"]["param"], Value::Null);
        let e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no key");
        assert_eq!(error_body(&e)["error"]["type"], "authentication_error");
    }

    #[test]
    fn common_fields_are_type_checked_naming_the_param() {
        let err = |body: &str| Common::parse(&OpenAi, body.as_bytes()).err().unwrap();
        assert_eq!(err(r#"{"messages":[]}"#).details["field"], "model");
        assert_eq!(err(r#"{"model":7}"#).details["field"], "model");
        assert_eq!(err(r#"{"model":"a","stream":"yes"}"#).details["field"], "stream");
        assert_eq!(err(r#"{"model":"a","metadata":[]}"#).details["field"], "metadata");
        assert_eq!(err(r#"[1]"#).status, 400);
        let c = Common::parse(
            &OpenAi,
            br#"{"model":"a","stream":true,"metadata":{"conversation_id":"conv_1"}}"#,
        )
        .unwrap();
        assert!(c.stream);
        assert_eq!(c.conversation, Conversation::Existing("conv_1".into()));
    }
}
