//! OpenAPI 3.1 documents of the fronts as mounted: each front's paths under its prefix, request
//! and response bodies, the error body of every status SPEC §5 gives, and bearer security when
//! the front requires a key. Served unauthenticated at `{prefix}/openapi.json`.
//!
//! The paths come from the front's API's route table ([`crate::apis::ChatApi::routes`]): each
//! route kind and method has one operation builder here ([`endpoints`]); what differs per API
//! (request and answer schemas, error meanings, the agent id's schema) comes from its
//! [`crate::apis::ChatApi`]. An [`Endpoint`] carries its method, its path (relative to the
//! prefix), its operation object and the component schemas it names.

use serde_json::{json, Map, Value};

use crate::apis::shared::message_schema;
use crate::apis::{RouteDef, RouteKind};
use crate::config::FrontConfig;
use crate::formats::Format;

/// Where a front serves its own document, relative to its prefix.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// One operation of a front.
pub struct Endpoint {
    /// Lower-case HTTP method, as OpenAPI names it (`post`, `get`, …).
    pub method: &'static str,
    /// Path relative to the front's prefix, with `{param}` templates.
    pub path: &'static str,
    /// The OpenAPI operation object.
    pub operation: Value,
    /// Component schemas the operation refers to (`#/components/schemas/<name>`).
    pub schemas: Vec<(String, Value)>,
}

/// The operations of `front`, as it is mounted: one per route and method of its API's table
/// (see [`operation`]), plus the document itself. A new route kind gets an [`Endpoint`] builder
/// with its operation object (its error answers from [`error_response`], which refer to the shared
/// `Error` schema) and the component schemas it names; the prefix, security and shared
/// components come from [`document`].
pub fn endpoints(front: &FrontConfig) -> Vec<Endpoint> {
    let mut list = Vec::new();
    for route in front.api.routes() {
        let served = route.via.map(|api| front.served_by(api));
        for method in route.methods {
            list.push(operation(served.as_ref().unwrap_or(front), route, method));
        }
    }
    list.push(document_endpoint());
    list
}

/// The operation serving `method` on `route` (a path of the front's API).
fn operation(front: &FrontConfig, route: &RouteDef, method: &http::Method) -> Endpoint {
    let path = route.path;
    match (route.kind, method.as_str()) {
        (RouteKind::Chat { .. }, _) => chat(front, route),
        (RouteKind::Models, _) => models(front, path),
        (RouteKind::Model, _) => model(front, path),
        (RouteKind::History, _) => history(front, path),
        (RouteKind::Conversations, "POST") => conversation_create(front, path),
        (RouteKind::Conversations, _) => conversations_list(front, path),
        (RouteKind::Conversation, "DELETE") => conversation_delete(front, path),
        (RouteKind::Conversation, _) => conversation_update(front, path),
        (RouteKind::Inbox, _) => inbox(front, path),
        (RouteKind::MarkRead, _) => mark_read(front, path),
        (RouteKind::Sessions, _) => sessions_list(front, path),
        (RouteKind::Session, "DELETE") => session_delete(front, path),
        (RouteKind::Session, _) => session_update(front, path),
        (RouteKind::TeamChat { stream_path }, _) => team_chat(front, path, stream_path),
    }
}

/// The OpenAPI 3.1 document of `front`.
pub fn document(front: &FrontConfig) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), front.api.error_schema());
    schemas.insert("Usage".into(), usage_schema());
    for endpoint in endpoints(front) {
        let path = format!("{}{}", front.prefix, endpoint.path);
        let item = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[endpoint.method] = endpoint.operation;
        for (name, schema) in endpoint.schemas {
            schemas.insert(name, schema);
        }
    }
    let api = front.api;
    let mut components = json!({
        "schemas": schemas,
        "headers": {
            "X-Request-Id": {
                "description": "The request's id: the client's `x-request-id` if it sent one of \
                                1 to 128 characters of `[A-Za-z0-9._:-]`, else a new UUID. It \
                                names the request in the logs; nothing is stored under it.",
                "schema": { "type": "string" }
            },
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": { "type": "integer", "minimum": 0 }
            },
            "RateLimit-Policy": {
                "description": "The rate limit that applies (IETF draft `RateLimit` headers).",
                "schema": { "type": "string" }
            },
            "RateLimit": {
                "description": "What is left of the rate limit (IETF draft `RateLimit` headers).",
                "schema": { "type": "string" }
            }
        }
    });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("agentgate: the {api} front"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The `{api}` chat API as agentgate serves it under `{prefix}`: requests are \
                 checked (key, scope, agent, body, limits, credits) in the order of SPEC §5, \
                 rewritten into the API of the agent's backend, and its answer is transcoded \
                 into `{format}`. Every error has the body of the `Error` schema.",
                prefix = if front.prefix.is_empty() { "/" } else { &front.prefix },
                format = front.format.as_str(),
            ),
        },
        "servers": [{ "url": "/", "description": "this gateway (paths carry the front's prefix)" }],
        "paths": paths,
    });
    if front.require_key {
        components["securitySchemes"] = json!({
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": if api.bare_key_auth() {
                    "An agentgate key (`agk_…`) as `Authorization: Bearer KEY`; this front also \
                     takes the bare key as `Authorization: KEY`."
                } else {
                    "An agentgate key (`agk_…`) as `Authorization: Bearer KEY`."
                },
            }
        });
        doc["security"] = json!([{ "bearerAuth": [] }]);
    }
    doc["components"] = components;
    doc
}

fn chat(front: &FrontConfig, route: &RouteDef) -> Endpoint {
    let api = front.api;
    let path = route.path;
    let param = route.params().next().unwrap_or("id");
    let param_schema = api.agent_id_schema();
    let request = format!("{}ChatRequest", api.title());
    let response = format!("{}ChatResponse", api.title());
    let stream = route.kind == RouteKind::Chat { stream_path: true };
    let how = match stream {
        true => "Always answers with a stream.",
        false => api.chat_how(),
    };
    let mut parameters = Vec::new();
    if route.params().next().is_some() {
        parameters.push(json!({
            "name": param,
            "in": "path",
            "required": true,
            "description": "The agent's id, as configured in `[[agent]] id`.",
            "schema": param_schema,
        }));
    }
    parameters.push(json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "A retry with the same key and body gets the first answer again and is \
                        not charged; 409 while the first runs, 422 with another body.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 255 },
    }));
    if let Some(header) = api.conversation_header() {
        parameters.push(json!({
            "name": header,
            "in": "header",
            "required": false,
            "description": "Continue this conversation (when the body names none).",
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,256}$" },
        }));
    }
    let mut ok = Map::new();
    if !stream {
        ok.insert(
            "application/json".into(),
            json!({ "schema": { "$ref": format!("#/components/schemas/{response}") } }),
        );
    }
    ok.insert("text/event-stream".into(), stream_media(front.format));
    let mut responses = Map::new();
    let mut answered = json!({
            "description": "The agent's answer: JSON, or a `text/event-stream` in the front's format.",
            "headers": {
                "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" },
                "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" },
                "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                "Idempotent-Replayed": {
                    "description": "`true` when this is the stored answer to an earlier request \
                                    with the same `Idempotency-Key` (not charged again).",
                    "schema": { "type": "string", "enum": ["true"] }
                }
            },
            "content": ok,
    });
    if let Some(header) = api.conversation_header() {
        answered["headers"][header] = json!({
            "description": "The conversation's id: send it back (header or \
                            `metadata.conversation_id`) to continue it.",
            "schema": { "type": "string" }
        });
    }
    responses.insert("200".into(), answered);
    for (status, description) in chat_errors(front) {
        responses.insert(status.to_string(), error_response(status, description));
    }
    let operation_id = match (route.via, stream) {
        // Two chat paths on one front: each named by its API.
        (Some(api), _) => format!("chat{}", api.title()),
        (None, true) => "chatStream".into(),
        (None, false) => "chat".into(),
    };
    let schemas = vec![
        (request.clone(), api.request_schema()),
        (response.clone(), api.sync_schema()),
    ];
    let summary = if stream {
        "Chat with an agent, streamed"
    } else {
        "Chat with an agent"
    };
    Endpoint {
        method: "post",
        path,
        operation: json!({
            "operationId": operation_id,
            "summary": summary,
            "description": format!(
                "Sends a message to the agent and returns its answer. {how} A stream needs the \
                 `agents:stream` scope and is `{}`. Costs the agent's `credits_per_message` plus \
                 the usage its backend reports (capped); the answer's `usage.credits` is what \
                 was charged.",
                front.format.as_str()
            ),
            "parameters": parameters,
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": {
                        "schema": { "$ref": format!("#/components/schemas/{request}") }
                    }
                }
            },
            "responses": responses,
        }),
        schemas,
    }
}

/// The error statuses of a chat call on `front` (SPEC §5), with what each means there.
fn chat_errors(front: &FrontConfig) -> Vec<(u16, &'static str)> {
    let docs = front.api.error_docs();
    let keyed = front.require_key;
    let mut errors = vec![(400, docs.bad_request)];
    if keyed {
        errors.push((
            401,
            "No key, or an unknown, malformed, expired or revoked key.",
        ));
        errors.push((
            402,
            "Not enough credits for the agent's base cost plus its usage cap; the backend was \
             not called.",
        ));
        errors.push((403, docs.forbidden));
    }
    errors.push((404, docs.not_found));
    errors.push((
        409,
        "The agent is not running, or a request with the same `Idempotency-Key` is still running.",
    ));
    errors.push((413, "The body is larger than `[server] max_body_bytes`."));
    errors.push((422, docs.unprocessable));
    errors.push((
        429,
        "A rate limit or a concurrent-stream cap was reached; see `Retry-After`.",
    ));
    errors.push((
        502,
        "The agent's backend is unreachable or answered with an error before its answer began.",
    ));
    errors.push((503, "The key store or the credit ledger is unavailable."));
    errors.push((504, "The agent's backend did not answer in time."));
    errors
}

/// An error answer: `status` with the front's error body (`#/components/schemas/Error`).
pub fn error_response(status: u16, description: &str) -> Value {
    let mut headers = json!({ "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } });
    if status == 429 {
        headers["Retry-After"] = json!({ "$ref": "#/components/headers/Retry-After" });
        headers["RateLimit-Policy"] = json!({ "$ref": "#/components/headers/RateLimit-Policy" });
        headers["RateLimit"] = json!({ "$ref": "#/components/headers/RateLimit" });
    }
    json!({
        "description": description,
        "headers": headers,
        "content": {
            "application/json": { "schema": { "$ref": "#/components/schemas/Error" } }
        }
    })
}

/// The error body of seed 000, which every front but the OpenAI one answers with.
pub fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error of every front (seed 000's error body).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "A stable code: `bad_request`, `validation_error`, \
                                        `unauthorized`, `forbidden`, `not_found`, \
                                        `insufficient_credits`, `rate_limited`, …",
                        "examples": ["forbidden"]
                    },
                    "message": { "type": "string" },
                    "details": { "type": "object", "additionalProperties": true }
                }
            }
        }
    })
}

fn usage_schema() -> Value {
    json!({
        "type": "object",
        "description": "What this answer was charged.",
        "required": ["credits"],
        "properties": { "credits": { "type": "number", "minimum": 0 } }
    })
}

/// The `text/event-stream` media type of a front's stream. As OpenAPI 3.1 has no `itemSchema`,
/// its `schema` describes one event (the reading OpenAPI 3.2 makes explicit and schema-based
/// tools apply): `event`, `data`, `id`, `retry`, with `data` a JSON chunk of the format (or
/// `[DONE]`) given as `contentMediaType`/`contentSchema`.
fn stream_media(format: Format) -> Value {
    let (description, example, chunk, done_marker) = match format {
        Format::UiMessage => (
            "Vercel AI SDK UIMessage stream (`x-vercel-ai-ui-message-stream: v1`): one JSON \
             chunk per `data:` line (`start`, `text-start`, `text-delta`, `text-end`, \
             `reasoning-*`, `tool-input-*`, `tool-output-available`, `tool-output-error`, \
             `start-step`, `finish-step`, `message-metadata`, `finish` with `messageMetadata` \
             carrying the ids and `usage.credits`, `error`, `abort`), ended by `data: [DONE]`.",
            "data: {\"type\":\"start\",\"messageId\":\"msg_1\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"t\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"Hello\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"t\"}\n\n\
             data: {\"type\":\"finish\",\"messageMetadata\":{\"usage\":{\"credits\":1}}}\n\n\
             data: [DONE]\n\n",
            json!({
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": [
                            "start", "text-start", "text-delta", "text-end", "reasoning-start",
                            "reasoning-delta", "reasoning-end", "tool-input-start",
                            "tool-input-delta", "tool-input-available", "tool-output-available",
                            "tool-output-error", "start-step", "finish-step", "message-metadata",
                            "finish", "error", "abort"
                        ]
                    },
                    "messageId": { "type": "string" },
                    "id": { "type": "string" },
                    "delta": { "type": "string" },
                    "toolCallId": { "type": "string" },
                    "toolName": { "type": "string" },
                    "inputTextDelta": { "type": "string" },
                    "errorText": { "type": "string" },
                    "finishReason": { "type": "string" },
                    "messageMetadata": {}
                }
            }),
            true,
        ),
        Format::SessionDelta => (
            "`session` (first, with `sessionKey`), `delta` (`text`: the answer so far), `tool` \
             (`phase` `start` or `result`), `done` (last, with `usage.credits`); each as \
             `event: <type>` + `data: {\"type\":\"<type>\",…}`. A failure is an `error` event, \
             then `done`.",
            "event: session\ndata: {\"type\":\"session\",\"sessionKey\":\"api:1\"}\n\n\
             event: delta\ndata: {\"type\":\"delta\",\"text\":\"Hello\"}\n\n\
             event: done\ndata: {\"type\":\"done\",\"usage\":{\"credits\":1}}\n\n",
            json!({
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": { "type": "string", "enum": ["session", "delta", "tool", "done", "error"] },
                    "sessionKey": { "type": "string", "pattern": "^api:" },
                    "text": { "type": "string" },
                    "phase": { "type": "string", "enum": ["start", "result"] },
                    "toolCallId": { "type": "string" },
                    "name": { "type": "string" },
                    "input": {},
                    "output": {},
                    "error": { "type": "string" },
                    "usage": { "$ref": "#/components/schemas/Usage" },
                    "finishReason": { "type": "string" },
                    "message": { "type": "string" }
                }
            }),
            false,
        ),
        Format::TextDone => (
            "`data: {\"type\":\"text\",\"content\":\"…\"}` per text delta, then \
             `data: {\"type\":\"done\",…}` (with `conversation_id` and `usage.credits`) and \
             `data: [DONE]`. A failure is an `error` event, then `done` and `[DONE]`.",
            "data: {\"type\":\"text\",\"content\":\"Hello\"}\n\n\
             data: {\"type\":\"done\",\"content\":\"\"}\n\n\
             data: [DONE]\n\n",
            json!({
                "type": "object",
                "required": ["type", "content"],
                "properties": {
                    "type": { "type": "string", "enum": ["text", "done", "error"] },
                    "content": { "type": "string" },
                    "conversation_id": { "type": "string" },
                    "usage": { "$ref": "#/components/schemas/Usage" },
                    "finishReason": { "type": "string" }
                }
            }),
            true,
        ),
        Format::AgUi => (
            "AG-UI events (`@ag-ui/core` 1.x), one JSON object per `data:` line: `RUN_STARTED` \
             (`threadId` = the conversation), `TEXT_MESSAGE_START`/`_CONTENT`/`_END`, \
             `REASONING_*`, `TOOL_CALL_*`, `STEP_*`, state and custom events, then \
             `RUN_FINISHED` (`result.usage.credits`) or `RUN_ERROR`. No `[DONE]`.",
            "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t1\",\"runId\":\"r1\"}\n\n\
             data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"r1-text-1\",\"role\":\"assistant\"}\n\n\
             data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"r1-text-1\",\"delta\":\"Hello\"}\n\n\
             data: {\"type\":\"TEXT_MESSAGE_END\",\"messageId\":\"r1-text-1\"}\n\n\
             data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t1\",\"runId\":\"r1\"}\n\n",
            json!({
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": { "type": "string" },
                    "threadId": { "type": "string" },
                    "runId": { "type": "string" },
                    "messageId": { "type": "string" },
                    "delta": { "type": "string" },
                    "toolCallId": { "type": "string" },
                    "toolCallName": { "type": "string" },
                    "content": {},
                    "stepName": { "type": "string" },
                    "result": {},
                    "message": { "type": "string" }
                }
            }),
            false,
        ),
        Format::OpenAiChat => (
            "OpenAI Chat Completions stream: `chat.completion.chunk` objects (one `id`, the role \
             in the first delta, `content`, `reasoning_content`, `tool_calls` deltas, then a \
             chunk with `finish_reason`, the usage chunk with `choices: []` and `usage.credits` \
             when asked), ended by `data: [DONE]`. A failure is `{\"error\":{…}}`, then \
             `[DONE]`.",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"agent\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
             data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"agent\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n\
             data: [DONE]\n\n",
            json!({
                "type": "object",
                "properties": {
                    "id": { "type": "string" },
                    "object": { "type": "string", "enum": ["chat.completion.chunk"] },
                    "created": { "type": "integer" },
                    "model": { "type": "string" },
                    "choices": { "type": "array" },
                    "usage": { "type": "object" },
                    "error": { "type": "object" }
                }
            }),
            true,
        ),
        Format::OpenAiResponses => (
            "OpenAI Responses stream: `event: <type>` and a JSON event with `type` and \
             `sequence_number` (`response.created`, `response.in_progress`, \
             `response.output_item.added`, `response.content_part.added`, \
             `response.output_text.delta`, `response.reasoning_text.delta`, \
             `response.function_call_arguments.delta`, their `.done` events, then \
             `response.completed`, `response.incomplete` or `response.failed` with the whole \
             Response object and `usage.credits`).",
            "event: response.output_text.delta\n\
             data: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_0\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello\",\"logprobs\":[],\"sequence_number\":4}\n\n",
            json!({
                "type": "object",
                "required": ["type", "sequence_number"],
                "properties": {
                    "type": { "type": "string" },
                    "sequence_number": { "type": "integer", "minimum": 0 },
                    "response": { "type": "object" }
                }
            }),
            false,
        ),
    };
    let json_data = json!({
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": chunk,
    });
    let data = if done_marker {
        json!({
            "type": "string",
            "if": { "const": "[DONE]" },
            "else": json_data,
        })
    } else {
        json_data
    };
    json!({
        "schema": {
            "type": "object",
            "description": format!("One event of the stream. {description}\n\nFor example:\n\n```\n{example}```"),
            "required": ["data"],
            "properties": {
                "event": { "type": "string" },
                "data": data,
                "id": { "type": "string" },
                "retry": { "type": "integer", "minimum": 0 }
            }
        },
    })
}

/// An operation served from the conversation store (SPEC §7): history, conversations, inbox
/// and mark-read on `agents`, sessions on `guayaba`. Checked in the order of chats: key 401 →
/// scope 403 → agent 404 (guayaba 403) → query/body 400 (guayaba 422) → conversation 404.
struct StoreOp {
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Parameters besides the agent's `id` (path or query).
    params: Vec<Value>,
    /// The request body's schema and whether the body is required.
    body: Option<(Value, bool)>,
    /// The success status, its description and its JSON schema (none for 204).
    ok: (u16, &'static str, Option<Value>),
    /// What 400 (422 on guayaba) means here.
    invalid: &'static str,
    /// What 404 means here besides the agent (agents) or the path (guayaba).
    not_found: Option<&'static str>,
    schemas: Vec<(String, Value)>,
}

/// The most items of one page (SPEC §7).
const MAX_PAGE: u32 = 100;
/// The longest conversation or session title, in characters.
const MAX_TITLE_CHARS: u32 = 200;

fn store_op(front: &FrontConfig, op: StoreOp) -> Endpoint {
    let api = front.api;
    let scope = if op.method == "get" {
        "conversations:read"
    } else {
        "conversations:write"
    };
    let mut parameters = vec![agent_param("id")];
    parameters.extend(op.params);
    let mut responses = Map::new();
    let (status, description, schema) = op.ok;
    let mut ok = json!({
        "description": description,
        "headers": { "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } },
    });
    if let Some(schema) = schema {
        ok["content"] = json!({ "application/json": { "schema": schema } });
    }
    responses.insert(status.to_string(), ok);
    let invalid = api.invalid(String::new()).status.as_u16();
    let mut errors: Vec<(u16, String)> = vec![(invalid, op.invalid.to_owned())];
    if front.require_key {
        errors.push((401, UNAUTHORIZED.to_owned()));
    }
    if front.require_key {
        errors.push((
            403,
            match api.agent_not_found(true).status == http::StatusCode::FORBIDDEN {
                true => format!("The key lacks the `{scope}` scope, or cannot access this agent."),
                false => format!("The key lacks the `{scope}` scope."),
            },
        ));
    }
    let not_found = (api.error_docs().store_not_found)(op.not_found);
    errors.push((404, not_found));
    if op.body.is_some() {
        errors.push((
            413,
            "The body is larger than `[server] max_body_bytes`.".to_owned(),
        ));
    }
    errors.push((
        503,
        "The key store or the conversation store is unavailable.".to_owned(),
    ));
    for (status, description) in errors {
        responses.insert(status.to_string(), error_response(status, &description));
    }
    let mut operation = json!({
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": format!(
            "{} Needs the `{scope}` scope{}. Served from the conversation store, whatever API \
             the agent's backend speaks; free of charge. Another method on this path: 405 \
             with `Allow`.",
            op.description,
            if front.require_key { "" } else { " (not checked: this front takes no key)" },
        ),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some((schema, required)) = op.body {
        operation["requestBody"] = json!({
            "required": required,
            "content": { "application/json": { "schema": schema } }
        });
    }
    Endpoint {
        method: op.method,
        path: op.path,
        operation,
        schemas: op.schemas,
    }
}

const UNAUTHORIZED: &str = "No key, or an unknown, malformed, expired or revoked key.";

/// The `{name}` path parameter naming an agent.
fn agent_param(name: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": "The agent's id, as configured in `[[agent]] id`.",
        "schema": { "type": "string", "minLength": 1 },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": { "type": "string", "minLength": 1 },
    })
}

/// `limit` and `cursor` of a paginated list.
fn page_params(what: &str) -> Vec<Value> {
    vec![
        json!({
            "name": "limit",
            "in": "query",
            "required": false,
            "description": format!("How many {what} per page (default 20; more than 100 is taken as 100)."),
            "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 20 },
        }),
        json!({
            "name": "cursor",
            "in": "query",
            "required": false,
            "description": "The `next_cursor` of the previous page (opaque; another value is 400/422).",
            "schema": { "type": "string" },
        }),
    ]
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn next_cursor_schema() -> Value {
    json!({
        "type": ["string", "null"],
        "description": "The `cursor` of the next page; null on the last page."
    })
}

fn credits_only_schema() -> Value {
    json!({
        "type": "object",
        "required": ["credits"],
        "properties": { "credits": { "type": "number", "minimum": 0 } }
    })
}

fn title_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS })
}

fn message_record_schema() -> (String, Value) {
    (
        "Message".into(),
        json!({
            "type": "object",
            "description": "A stored message of a conversation.",
            "required": ["id", "conversation_id", "role", "content", "created_at", "parts"],
            "properties": {
                "id": { "type": "string" },
                "conversation_id": { "type": "string" },
                "role": { "type": "string", "examples": ["user", "assistant"] },
                "content": { "type": "string" },
                "parts": {
                    "type": "array",
                    "items": { "type": "object", "required": ["type"] },
                    "description": "The message's parts in the AI SDK `UIMessage` form (text, reasoning, tool-<name>, sources, file, data-*, step-start), as `readUIMessageStream` assembles them."
                },
                "created_at": { "type": "string", "format": "date-time" },
                "tool_calls": { "description": "The tool calls of an assistant message, as stored." },
                "usage": credits_only_schema(),
                "read": {
                    "type": "boolean",
                    "description": "On assistant messages: whether it was marked read."
                }
            }
        }),
    )
}

fn conversation_schema() -> (String, Value) {
    (
        "Conversation".into(),
        json!({
            "type": "object",
            "required": ["id", "title", "archived", "created_at", "updated_at"],
            "properties": {
                "id": { "type": "string" },
                "title": { "type": ["string", "null"] },
                "archived": { "type": "boolean" },
                "created_at": { "type": "string", "format": "date-time" },
                "updated_at": { "type": "string", "format": "date-time" }
            }
        }),
    )
}

fn session_schema() -> (String, Value) {
    (
        "Session".into(),
        json!({
            "type": "object",
            "required": ["sessionKey", "title", "archived", "createdAt", "updatedAt"],
            "properties": {
                "sessionKey": { "type": "string" },
                "title": { "type": ["string", "null"] },
                "archived": { "type": "boolean" },
                "createdAt": { "type": "string", "format": "date-time" },
                "updatedAt": { "type": "string", "format": "date-time" }
            }
        }),
    )
}

fn messages_page_schema(name: &str, with_conversation: bool) -> (String, Value) {
    let mut schema = json!({
        "type": "object",
        "required": ["messages", "next_cursor"],
        "properties": {
            "messages": { "type": "array", "items": schema_ref("Message") },
            "next_cursor": next_cursor_schema()
        }
    });
    if with_conversation {
        schema["required"] = json!(["conversation_id", "messages", "next_cursor"]);
        schema["properties"]["conversation_id"] = json!({ "type": "string" });
    }
    (name.into(), schema)
}

const QUERY_INVALID: &str =
    "A `limit` that is not a positive integer, or a `cursor` this list did not give out.";
const CONVERSATION_NOT_FOUND: &str = "the conversation does not exist (or is another account's)";

fn history(front: &FrontConfig, path: &'static str) -> Endpoint {
    let mut params = page_params("messages");
    params.push(json!({
        "name": "conversation_id",
        "in": "query",
        "required": false,
        "description": "The conversation; absent: the account's default conversation with the \
                        agent (id `default`).",
        "schema": { "type": "string" },
    }));
    store_op(
        front,
        StoreOp {
            method: "get",
            path,
            operation_id: "history",
            summary: "A conversation's messages",
            description: "The newest `limit` messages of a conversation, oldest first; \
                          `next_cursor` pages back to older ones.",
            params,
            body: None,
            ok: (200, "The messages.", Some(schema_ref("History"))),
            invalid: QUERY_INVALID,
            not_found: Some(CONVERSATION_NOT_FOUND),
            schemas: vec![
                message_record_schema(),
                messages_page_schema("History", true),
            ],
        },
    )
}

fn conversations_list(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "get",
            path,
            operation_id: "listConversations",
            summary: "The account's conversations with the agent",
            description: "Newest first, one page of `limit`.",
            params: page_params("conversations"),
            body: None,
            ok: (
                200,
                "One page of conversations.",
                Some(schema_ref("ConversationList")),
            ),
            invalid: QUERY_INVALID,
            not_found: None,
            schemas: vec![
                conversation_schema(),
                (
                    "ConversationList".into(),
                    json!({
                        "type": "object",
                        "required": ["conversations", "next_cursor"],
                        "properties": {
                            "conversations": {
                                "type": "array",
                                "items": schema_ref("Conversation")
                            },
                            "next_cursor": next_cursor_schema()
                        }
                    }),
                ),
            ],
        },
    )
}

fn conversation_create(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "post",
            path,
            operation_id: "createConversation",
            summary: "Start a conversation",
            description: "Creates an empty conversation (its id goes in a chat's \
                          `conversation_id`). The body is optional.",
            params: Vec::new(),
            body: Some((
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "title": title_schema() }
                }),
                false,
            )),
            ok: (
                201,
                "The new conversation.",
                Some(schema_ref("Conversation")),
            ),
            invalid: "Malformed JSON, an unknown field, or a `title` that is not 1 to 200 \
                      characters.",
            not_found: None,
            schemas: vec![conversation_schema()],
        },
    )
}

const CONV_ID: &str = "The conversation's id (as a list or a chat answer gave it).";

fn conversation_update(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "put",
            path,
            operation_id: "renameConversation",
            summary: "Rename a conversation",
            description: "Sets the conversation's title.",
            params: vec![path_param("conv_id", CONV_ID)],
            body: Some((
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["title"],
                    "properties": { "title": title_schema() }
                }),
                true,
            )),
            ok: (200, "The conversation.", Some(schema_ref("Conversation"))),
            invalid: "Malformed JSON, an unknown field, or a missing `title` or one that is \
                      not 1 to 200 characters.",
            not_found: Some(CONVERSATION_NOT_FOUND),
            schemas: vec![conversation_schema()],
        },
    )
}

fn conversation_delete(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "delete",
            path,
            operation_id: "deleteConversation",
            summary: "Delete a conversation",
            description: "Deletes the conversation and its messages.",
            params: vec![path_param("conv_id", CONV_ID)],
            body: None,
            ok: (204, "Deleted, with its messages.", None),
            invalid: QUERY_INVALID,
            not_found: Some(CONVERSATION_NOT_FOUND),
            schemas: Vec::new(),
        },
    )
}

fn inbox(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "get",
            path,
            operation_id: "inbox",
            summary: "Unread answers",
            description: "The agent's assistant messages not yet marked read, oldest first.",
            params: page_params("messages"),
            body: None,
            ok: (
                200,
                "One page of unread messages.",
                Some(schema_ref("Inbox")),
            ),
            invalid: QUERY_INVALID,
            not_found: None,
            schemas: vec![
                message_record_schema(),
                messages_page_schema("Inbox", false),
            ],
        },
    )
}

fn mark_read(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "post",
            path,
            operation_id: "markRead",
            summary: "Mark answers read",
            description: "Marks the named assistant messages read, or all of the agent's when \
                          `message_ids` (or the whole body) is omitted.",
            params: Vec::new(),
            body: Some((
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "message_ids": { "type": ["array", "null"], "items": { "type": "string" } }
                    }
                }),
                false,
            )),
            ok: (
                200,
                "How many messages were marked read.",
                Some(json!({
                    "type": "object",
                    "required": ["marked"],
                    "properties": { "marked": { "type": "integer", "minimum": 0 } }
                })),
            ),
            invalid: "Malformed JSON or an unknown field.",
            not_found: None,
            schemas: Vec::new(),
        },
    )
}

const SESSION_KEY: &str = "The session's key (`api:…`, as a chat answer or the list gave it).";
const SESSION_NOT_FOUND: &str = "The session does not exist (or is another account's)";

fn sessions_list(front: &FrontConfig, path: &'static str) -> Endpoint {
    let mut params = vec![json!({
        "name": "archived",
        "in": "query",
        "required": false,
        "description": "List the archived sessions instead of the others.",
        "schema": { "type": "boolean", "default": false },
    })];
    params.extend(page_params("sessions"));
    store_op(
        front,
        StoreOp {
            method: "get",
            path,
            operation_id: "listSessions",
            summary: "The account's sessions with the agent",
            description: "Newest first, one page of `limit`.",
            params,
            body: None,
            ok: (
                200,
                "One page of sessions.",
                Some(schema_ref("SessionList")),
            ),
            invalid: "An `archived` that is not `true` or `false`, a `limit` that is not a \
                      positive integer, or a `cursor` this list did not give out.",
            not_found: None,
            schemas: vec![
                session_schema(),
                (
                    "SessionList".into(),
                    json!({
                        "type": "object",
                        "required": ["sessions", "next_cursor"],
                        "properties": {
                            "sessions": { "type": "array", "items": schema_ref("Session") },
                            "next_cursor": next_cursor_schema()
                        }
                    }),
                ),
            ],
        },
    )
}

fn session_update(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "patch",
            path,
            operation_id: "updateSession",
            summary: "Rename or archive a session",
            description: "Changes the session's `title` and/or `archived`.",
            params: vec![path_param("sessionKey", SESSION_KEY)],
            body: Some((
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "minProperties": 1,
                    "properties": {
                        "title": title_schema(),
                        "archived": { "type": "boolean" }
                    }
                }),
                true,
            )),
            ok: (200, "The session.", Some(schema_ref("Session"))),
            invalid: "No body, malformed JSON, an unknown field, neither `title` nor \
                      `archived`, or a `title` that is not 1 to 200 characters.",
            not_found: Some(SESSION_NOT_FOUND),
            schemas: vec![session_schema()],
        },
    )
}

fn session_delete(front: &FrontConfig, path: &'static str) -> Endpoint {
    store_op(
        front,
        StoreOp {
            method: "delete",
            path,
            operation_id: "deleteSession",
            summary: "Delete a session",
            description: "Deletes the session and its messages.",
            params: vec![path_param("sessionKey", SESSION_KEY)],
            body: None,
            ok: (204, "Deleted, with its messages.", None),
            invalid: QUERY_INVALID,
            not_found: Some(SESSION_NOT_FOUND),
            schemas: Vec::new(),
        },
    )
}

/// A team chat on `path` (`stream_path`: always a stream).
fn team_chat(front: &FrontConfig, path: &'static str, stream_path: bool) -> Endpoint {
    let mut ok = Map::new();
    if !stream_path {
        ok.insert(
            "application/json".into(),
            json!({ "schema": schema_ref("TeamChatResponse") }),
        );
    }
    // A team's stream is a ui-message stream whatever the front's format.
    ok.insert("text/event-stream".into(), stream_media(Format::UiMessage));
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "Every member's answer (a member that failed or timed out has \
                            `error` instead of `content`) and the summariser's: JSON, or a \
                            ui-message stream with one text part per member (id: the agent's \
                            id) and `summary`, whose `finish` carries `mode`, `responses` \
                            (without content) and `usage` in `messageMetadata`.",
            "headers": { "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } },
            "content": ok,
        }),
    );
    let mut errors = vec![(
        400,
        "Malformed JSON, a missing, empty or too long `message`, a `stream` that is not a \
         boolean, or a `mode` that is not one of the team's (`details.modes` lists them).",
    )];
    if front.require_key {
        errors.push((401, UNAUTHORIZED));
        errors.push((
            403,
            "The key lacks the `teams:run` scope, or asks for a stream without `agents:stream`.",
        ));
    }
    errors.push((
        404,
        "No such team, or one of its members or its summariser is outside the key's access \
         target.",
    ));
    errors.push((413, "The body is larger than `[server] max_body_bytes`."));
    errors.push((503, "The key store is unavailable."));
    for (status, description) in errors {
        responses.insert(status.to_string(), error_response(status, description));
    }
    let (operation_id, summary) = if stream_path {
        ("teamChatStream", "Ask a team, streamed")
    } else {
        ("teamChat", "Ask a team")
    };
    Endpoint {
        method: "post",
        path,
        operation: json!({
            "operationId": operation_id,
            "summary": summary,
            "description": format!(
                "Asks every member of the team (`[[team]]`) concurrently, each through the same \
                 admission as a chat with it (rate limits, credits: a member refused or failing \
                 is reported in its entry, charged nothing), then the summariser with their \
                 answers. {} Needs the `teams:run` scope (and `agents:stream` for a stream). \
                 `usage.credits` is the sum charged.",
                if stream_path {
                    "Always answers with a stream."
                } else {
                    "Answers as JSON, or streams with `\"stream\": true`."
                }
            ),
            "parameters": [path_param("id", "The team's id, as configured in `[[team]] id`.")],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema_ref("TeamChatRequest") } }
            },
            "responses": responses,
        }),
        schemas: vec![
            (
                "TeamChatRequest".into(),
                json!({
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": message_schema(),
                        "mode": {
                            "type": ["string", "null"],
                            "description": "One of the team's `modes`; absent: its first."
                        },
                        "stream": { "type": "boolean", "default": false }
                    }
                }),
            ),
            (
                "TeamChatResponse".into(),
                json!({
                    "type": "object",
                    "required": ["responses", "summary", "mode", "usage"],
                    "properties": {
                        "responses": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["agent_id", "agent_name", "usage"],
                                "properties": {
                                    "agent_id": { "type": "string" },
                                    "agent_name": { "type": "string" },
                                    "content": { "type": "string" },
                                    "error": schema_ref("TeamError"),
                                    "usage": credits_only_schema()
                                }
                            }
                        },
                        "summary": {
                            "type": ["string", "null"],
                            "description": "The summariser's answer; null without one or when \
                                            it failed (then `summary_error`)."
                        },
                        "summary_error": schema_ref("TeamError"),
                        "mode": { "type": "string" },
                        "usage": credits_only_schema()
                    }
                }),
            ),
            (
                "TeamError".into(),
                json!({
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "examples": ["timeout", "insufficient_credits"] },
                        "message": { "type": "string" }
                    }
                }),
            ),
        ],
    }
}

/// `GET /v1/models`: the agents the key may use, as OpenAI's model list.
fn models(front: &FrontConfig, path: &'static str) -> Endpoint {
    let list = json!({
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": { "const": "list" },
            "data": { "type": "array", "items": schema_ref("Model") }
        }
    });
    Endpoint {
        method: "get",
        path,
        operation: json!({
            "operationId": "listModels",
            "summary": "The agents the key may use",
            "description": "Every configured agent within the key's agents, in file order, as \
                            an OpenAI model: its `id` is what `model` takes (so is its `name`).",
            "responses": model_responses(front, "The models.", schema_ref("ModelList"), false),
        }),
        schemas: vec![model_schema(), ("ModelList".into(), list)],
    }
}

/// `GET /v1/models/{model}`: one agent, by id or name.
fn model(front: &FrontConfig, path: &'static str) -> Endpoint {
    Endpoint {
        method: "get",
        path,
        operation: json!({
            "operationId": "retrieveModel",
            "summary": "One agent the key may use",
            "parameters": [path_param("model", "The agent's id or name.")],
            "responses": model_responses(front, "The model.", schema_ref("Model"), true),
        }),
        schemas: vec![model_schema()],
    }
}

/// The answers of the model endpoints: 200 with `ok`, the key's errors, 404 for one model.
fn model_responses(front: &FrontConfig, description: &str, ok: Value, one: bool) -> Value {
    let mut responses = json!({
        "200": {
            "description": description,
            "headers": { "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } },
            "content": { "application/json": { "schema": ok } }
        }
    });
    if front.require_key {
        responses["401"] = error_response(401, "No key, or an unknown or revoked key.");
        responses["403"] = error_response(403, "The key lacks the `agents:run` scope.");
    }
    if one {
        responses["404"] = error_response(404, "No agent the key may use has this id or name.");
    }
    responses
}

fn model_schema() -> (String, Value) {
    (
        "Model".into(),
        json!({
            "type": "object",
            "description": "An agent, as OpenAI's model object.",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": { "type": "string", "description": "The agent's id." },
                "object": { "const": "model" },
                "created": {
                    "type": "integer",
                    "description": "When the running configuration was loaded (Unix seconds)."
                },
                "owned_by": { "const": "agentgate" },
                "name": { "type": "string", "description": "The agent's name." }
            }
        }),
    )
}

fn document_endpoint() -> Endpoint {
    Endpoint {
        method: "get",
        path: DOCUMENT_PATH,
        operation: json!({
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of this front.",
                    "content": { "application/json": { "schema": { "type": "object" } } }
                }
            }
        }),
        schemas: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::Api;

    fn front(api: Api, prefix: &str, require_key: bool) -> FrontConfig {
        FrontConfig {
            api,
            prefix: prefix.into(),
            listen: ([127, 0, 0, 1], 0).into(),
            format: api.default_format(),
            event_lines: false,
            tools_as_text: false,
            require_key,
            cors_origins: Vec::new(),
        }
    }

    #[test]
    fn paths_sit_under_the_prefix_and_every_ref_resolves() {
        for api in Api::fronts() {
            let doc = document(&front(api, "/x", true));
            let paths = doc["paths"].as_object().unwrap();
            assert!(paths.keys().all(|p| p.starts_with("/x/")), "{paths:?}");
            let text = doc.to_string();
            for piece in text.split("\"$ref\":\"#/").skip(1) {
                let pointer = &piece[..piece.find('"').unwrap()];
                assert!(
                    doc.pointer(&format!("/{pointer}")).is_some(),
                    "{api}: dangling $ref {pointer}"
                );
            }
        }
    }

    #[test]
    fn store_and_team_paths_are_documented_on_their_fronts_only() {
        let doc = document(&front(Api::Agents, "/a", true));
        let paths = &doc["paths"];
        let base = "/a/api/agents/{id}";
        for (path, method, ok, scope) in [
            (
                format!("{base}/history"),
                "get",
                "200",
                "conversations:read",
            ),
            (
                format!("{base}/conversations"),
                "get",
                "200",
                "conversations:read",
            ),
            (
                format!("{base}/conversations"),
                "post",
                "201",
                "conversations:write",
            ),
            (
                format!("{base}/conversations/{{conv_id}}"),
                "put",
                "200",
                "conversations:write",
            ),
            (
                format!("{base}/conversations/{{conv_id}}"),
                "delete",
                "204",
                "conversations:write",
            ),
            (format!("{base}/inbox"), "get", "200", "conversations:read"),
            (
                format!("{base}/mark-read"),
                "post",
                "200",
                "conversations:write",
            ),
            ("/a/api/teams/{id}/chat".into(), "post", "200", "teams:run"),
            (
                "/a/api/teams/{id}/chat/stream".into(),
                "post",
                "200",
                "teams:run",
            ),
        ] {
            let op = &paths[path.as_str()][method];
            let responses = op["responses"].as_object().expect("responses");
            for status in [ok, "400", "401", "403", "404", "503"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
            let description = op["description"].as_str().unwrap();
            assert!(
                description.contains(scope),
                "{method} {path}: {description}"
            );
        }
        let limit = paths[format!("{base}/history")]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 100);

        let doc = document(&front(Api::Guayaba, "", false));
        let op = &doc["paths"]["/api/v1/agents/{id}/sessions/{sessionKey}"]["patch"];
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("422") && !responses.contains_key("400"));
        assert!(!responses.contains_key("401"), "an open front takes no key");
        assert!(doc["paths"]["/api/v1/agents/{id}/sessions"]["get"].is_object());

        for api in [Api::Pharen, Api::Chatbase] {
            let doc = document(&front(api, "", true));
            let keys = doc["paths"].as_object().unwrap().keys();
            assert!(keys
                .clone()
                .all(|p| !p.contains("history") && !p.contains("teams")));
        }
    }

    #[test]
    fn an_open_front_has_no_security_nor_key_errors() {
        let doc = document(&front(Api::Chatbase, "", false));
        assert!(doc.get("security").is_none());
        let responses = &doc["paths"]["/api/v2/agents/{agentId}/chat"]["post"]["responses"];
        assert!(responses.get("401").is_none() && responses.get("402").is_none());
        let keyed = document(&front(Api::Chatbase, "", true));
        let responses = &keyed["paths"]["/api/v2/agents/{agentId}/chat"]["post"]["responses"];
        assert!(responses.get("401").is_some() && responses.get("402").is_some());
    }
}
