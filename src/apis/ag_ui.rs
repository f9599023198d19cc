//! ag-ui (SPEC §9): `POST /api/agents/{id}/run` with AG-UI's `RunAgentInput`, always an ag-ui
//! stream; `threadId` is the conversation, as a key the client chooses. A backend speaking it is
//! POSTed a `RunAgentInput` on its `upstream` URL as it stands (one URL per agent).

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{check_conversation_key, check_length, malformed};
use super::shared::{last_user_text, message_schema, usage_ref, SyncCommon};
use super::{
    str_field, ApiError, ChatApi, ChatRequest, Conversation, DemoRead, FinishIds, RouteDef,
    RouteKind, UpstreamChat, MAX_CONVERSATION_KEY_LEN,
};
use crate::formats::{Aggregate, Format, SyncContext};

pub struct AgUi;

const ROUTES: &[RouteDef] = &[RouteDef::new(
    &[Method::POST],
    "/api/agents/{id}/run",
    RouteKind::Chat { stream_path: true },
)];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    thread_id: Option<String>,
    #[serde(default)]
    messages: Vec<Value>,
    tools: Option<Vec<Value>>,
    context: Option<Vec<Value>>,
    state: Option<Value>,
    forwarded_props: Option<Value>,
}

/// Where a `RunAgentInput`'s `tools`, `context`, `state` and `forwardedProps` wait in
/// [`ChatRequest::options`] for an ag-ui backend (the other backends have no place for them).
const RUN_EXTRAS: &str = "ag-ui";

/// The `RunAgentInput` fields passed on to an ag-ui backend as the client sent them, and
/// whether AG-UI's empty value for one the client left out is a list (else an object).
const EXTRAS: [(&str, bool); 4] = [
    ("tools", true),
    ("context", true),
    ("state", false),
    ("forwardedProps", false),
];

impl ChatApi for AgUi {
    fn name(&self) -> &'static str {
        "ag-ui"
    }
    fn title(&self) -> &'static str {
        "AgUi"
    }
    fn default_format(&self) -> Format {
        Format::AgUi
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
        let message = last_user_text(&b.messages).ok_or_else(|| {
            self.invalid("`messages` must hold a `user` message with text content".into())
        })?;
        if message.is_empty() {
            return Err(self.invalid("the last `user` message must not be empty".into()));
        }
        check_length(self, &message)?;
        let conversation = match b.thread_id {
            Some(id) if !id.is_empty() => {
                check_conversation_key(self, "threadId", &id)?;
                Conversation::ClientKey(id)
            }
            _ => Conversation::New,
        };
        let mut extras = Map::new();
        let given = [
            ("tools", b.tools.map(Value::Array)),
            ("context", b.context.map(Value::Array)),
            ("state", b.state),
            ("forwardedProps", b.forwarded_props),
        ];
        for (name, value) in given {
            if let Some(v) = value.filter(|v| !v.is_null()) {
                extras.insert(name.into(), v);
            }
        }
        let mut options = Map::new();
        if !extras.is_empty() {
            options.insert(RUN_EXTRAS.into(), Value::Object(extras));
        }
        Ok(ChatRequest {
            message: Some(message),
            conversation,
            stream: true,
            user_id: None,
            options,
            agent: None,
        })
    }

    fn conversation_noun(&self) -> &'static str {
        "thread"
    }

    fn upstream_uses_base_path(&self) -> bool {
        true
    }

    fn upstream_body(&self, call: &UpstreamChat<'_>) -> Value {
        let thread = call
            .conversation
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut body = json!({
            "threadId": thread,
            "runId": uuid::Uuid::new_v4().to_string(),
            "messages": [{
                "id": uuid::Uuid::new_v4().to_string(),
                "role": "user",
                "content": call.message.unwrap_or_default(),
            }],
        });
        // An ag-ui front's client tools, context, state and forwarded props, as it sent them.
        let extras = call.options.get(RUN_EXTRAS);
        for (name, list) in EXTRAS {
            body[name] = match extras.and_then(|e| e.get(name)) {
                Some(v) => v.clone(),
                None if list => json!([]),
                None => json!({}),
            };
        }
        body
    }

    /// `RUN_FINISHED.result` (SPEC §9): the usage, and `creditsExhausted` where the run was
    /// cut at the credit limit.
    fn finish_metadata(&self, _ids: &FinishIds<'_>, usage: Value) -> Option<Value> {
        Some(json!({ "usage": usage }))
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
        "Always streams AG-UI events (`RUN_STARTED` … `RUN_FINISHED` or `RUN_ERROR`)."
    }
    fn request_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "AG-UI's `RunAgentInput`; the last `user` message is the message.",
            "required": ["messages"],
            "properties": {
                "threadId": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9._:-]+$",
                    "minLength": 1,
                    "maxLength": MAX_CONVERSATION_KEY_LEN,
                    "description": "The conversation: a thread this account does not know \
                                    opens a new conversation under this id."
                },
                "runId": { "type": "string" },
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "id": { "type": "string" },
                            "role": { "type": "string" },
                            "content": {
                                "oneOf": [
                                    message_schema(),
                                    {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "type": { "type": "string" },
                                                "text": { "type": "string" }
                                            }
                                        }
                                    }
                                ]
                            }
                        }
                    }
                },
                "tools": { "type": "array" },
                "context": { "type": "array" },
                "state": {},
                "forwardedProps": {}
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

    fn demo_message(&self, body: &Value) -> String {
        body.get("messages")
            .and_then(Value::as_array)
            .and_then(|m| last_user_text(m))
            .unwrap_or_default()
    }

    fn demo_read(&self, body: &Value, _wants_sse: bool, _stream_path: bool) -> DemoRead {
        DemoRead {
            conversation: str_field(body, "threadId"),
            stream: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_chat, upstream_path, Api};
    use super::*;

    #[test]
    fn run_agent_input_takes_last_user_text_and_thread() {
        let body = br#"{"threadId":"t-1","runId":"r","messages":[
            {"id":"1","role":"user","content":"first"},
            {"id":"2","role":"assistant","content":"answer"},
            {"id":"3","role":"user","content":[{"type":"text","text":"sec"},{"type":"binary","mimeType":"x"},{"type":"text","text":"ond"}]}],
            "tools":[],"context":[],"state":{},"forwardedProps":{}}"#;
        let req = parse_chat(Api::AgUi, body, false, false).unwrap();
        assert_eq!(req.message.as_deref(), Some("second"));
        assert_eq!(req.conversation, Conversation::ClientKey("t-1".into()));
        assert!(req.stream);
    }

    #[test]
    fn client_tools_context_state_and_props_reach_an_ag_ui_backend_only() {
        let body = br#"{"threadId":"t","messages":[{"id":"1","role":"user","content":"hi"}],
            "tools":[{"name":"confirm","description":"ask","parameters":{"type":"object"}}],
            "context":[{"description":"page","value":"/home"}],
            "state":{"step":2},"forwardedProps":{"x":1}}"#;
        let req = parse_chat(Api::AgUi, body, false, false).unwrap();
        let call = UpstreamChat {
            agent_id: "agent",
            message: req.message.as_deref(),
            conversation: Some("t"),
            user_id: None,
            options: &req.options,
            history: &[],
        };
        let sent = AgUi.upstream_body(&call);
        assert_eq!(sent["tools"][0]["name"], "confirm");
        assert_eq!(sent["context"][0]["value"], "/home");
        assert_eq!(sent["state"], json!({"step": 2}));
        assert_eq!(sent["forwardedProps"], json!({"x": 1}));
        // Not to a pharen backend, whose options they are not.
        let pharen = super::super::pharen::Pharen.upstream_body(&call);
        assert_eq!(pharen, json!({"message": "hi", "conversation_uuid": "t"}));
    }

    #[test]
    fn run_agent_input_errors() {
        for body in [
            &br#"{"messages":[{"role":"assistant","content":"x"}]}"#[..],
            br#"{"messages":[{"role":"user","content":""}]}"#,
            br#"{"threadId":"a b","messages":[{"role":"user","content":"x"}]}"#,
            br#"{"messages":5}"#,
            br#"{"messages":[{"role":"user","content":"x"}],"tools":{}}"#,
        ] {
            let err = parse_chat(Api::AgUi, body, false, false).unwrap_err();
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn upstream_is_the_base_url_and_a_run_agent_input() {
        assert_eq!(upstream_path(Api::AgUi, "a"), "");
        let body = AgUi.upstream_body(&UpstreamChat {
            agent_id: "a",
            message: Some("hi"),
            conversation: Some("thread-9"),
            user_id: None,
            options: &Map::new(),
            history: &[],
        });
        assert_eq!(body["threadId"], "thread-9");
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"][0]["content"], "hi");
        assert_eq!(body["tools"], json!([]));
        assert_eq!(body["state"], json!({}));
        let fresh = AgUi.upstream_body(&UpstreamChat {
            agent_id: "a",
            message: Some("hi"),
            conversation: None,
            user_id: None,
            options: &Map::new(),
            history: &[],
        });
        assert!(uuid::Uuid::parse_str(fresh["threadId"].as_str().unwrap()).is_ok());
    }
}
