//! OpenAPI 3.1 documents of the fronts as mounted: each front's paths under its prefix, request
//! and response bodies, the error body of every status SPEC §5 gives, and bearer security when
//! the front requires a key. Served unauthenticated at `{prefix}/openapi.json`.
//!
//! Every operation a front serves is listed in one place, [`endpoints`]: an [`Endpoint`] carries
//! its method, its path (relative to the prefix), its operation object and the component schemas
//! it names, so adding an endpoint is adding one entry there.

use serde_json::{json, Map, Value};

use crate::config::FrontConfig;
use crate::formats::Format;
use crate::fronts::{Api, MAX_MESSAGE_CHARS, MAX_USER_ID_CHARS};

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

/// The operations of `front`, as it is mounted. Add new endpoints here: an [`Endpoint`] with
/// its operation object (its error answers from [`error_response`], which refer to the shared
/// `Error` schema) and the component schemas it names; the prefix, security and shared
/// components come from [`document`].
pub fn endpoints(front: &FrontConfig) -> Vec<Endpoint> {
    let mut list = match front.api {
        Api::Pharen => vec![chat(
            front,
            "/api/agents/{agent_uuid}/chat/",
            ChatMode::Negotiated,
        )],
        Api::Chatbase => vec![chat(
            front,
            "/api/v2/agents/{agentId}/chat",
            ChatMode::Negotiated,
        )],
        Api::Agents => vec![
            chat(front, "/api/agents/{id}/chat", ChatMode::Negotiated),
            chat(front, "/api/agents/{id}/chat/stream", ChatMode::StreamOnly),
        ],
        Api::Guayaba => vec![chat(
            front,
            "/api/v1/agents/{id}/chat",
            ChatMode::Negotiated,
        )],
    };
    list.push(document_endpoint());
    list
}

/// The OpenAPI 3.1 document of `front`.
pub fn document(front: &FrontConfig) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
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
                "description": "The request's id: the client's `x-request-id` if it sent one \
                                (≤ 128 bytes), else a new UUID. It names the request in the logs.",
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
                 into `{format}`. Every error has the body `{{\"error\":{{\"code\",\"message\",\
                 \"details\"}}}}`.",
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
                "description": if api == Api::Pharen {
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

/// How a chat path chooses between a JSON answer and a stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChatMode {
    /// From the body's `stream` (or, on pharen, the `Accept` header).
    Negotiated,
    /// Always a stream (`agents` `/chat/stream`).
    StreamOnly,
}

fn chat(front: &FrontConfig, path: &'static str, mode: ChatMode) -> Endpoint {
    let api = front.api;
    let (param, param_schema) = match api {
        Api::Pharen => ("agent_uuid", json!({ "type": "string", "format": "uuid" })),
        Api::Chatbase => ("agentId", json!({ "type": "string", "minLength": 1 })),
        Api::Agents | Api::Guayaba => ("id", json!({ "type": "string", "minLength": 1 })),
    };
    let request = format!("{}ChatRequest", api_title(api));
    let response = format!("{}ChatResponse", api_title(api));
    let stream = mode == ChatMode::StreamOnly;
    let how = match (api, stream) {
        (_, true) => "Always answers with a stream.",
        (Api::Pharen, _) => {
            "Answers with a stream when the request has `Accept: text/event-stream`, else with \
             the whole answer as JSON."
        }
        (Api::Chatbase, _) => "Streams unless the body says `\"stream\": false`.",
        (Api::Agents, _) => {
            "Answers with the whole answer as JSON, or streams with `\"stream\": true` (or on \
             `/chat/stream`)."
        }
        (Api::Guayaba, _) => "Answers as JSON unless the body says `\"stream\": true`.",
    };
    let mut ok = Map::new();
    if !stream {
        ok.insert(
            "application/json".into(),
            json!({ "schema": { "$ref": format!("#/components/schemas/{response}") } }),
        );
    }
    ok.insert("text/event-stream".into(), stream_media(front));
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
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
        }),
    );
    for (status, description) in chat_errors(front) {
        responses.insert(status.to_string(), error_response(status, description));
    }
    let operation_id = match (api, stream) {
        (Api::Agents, true) => "chatStream".to_string(),
        _ => "chat".to_string(),
    };
    let schemas = vec![
        (request.clone(), request_schema(api)),
        (response.clone(), sync_schema(api)),
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
            "parameters": [
                {
                    "name": param,
                    "in": "path",
                    "required": true,
                    "description": "The agent's id, as configured in `[[agent]] id`.",
                    "schema": param_schema,
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "description": "A retry with the same key and body gets the first answer \
                                    again and is not charged; 409 while the first runs, 422 \
                                    with another body.",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 255 },
                },
            ],
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

fn api_title(api: Api) -> &'static str {
    match api {
        Api::Pharen => "Pharen",
        Api::Chatbase => "Chatbase",
        Api::Agents => "Agents",
        Api::Guayaba => "Guayaba",
    }
}

/// The error statuses of a chat call on `front` (SPEC §5), with what each means there.
fn chat_errors(front: &FrontConfig) -> Vec<(u16, &'static str)> {
    let api = front.api;
    let keyed = front.require_key;
    let mut errors = Vec::new();
    let invalid = "Malformed JSON, a missing, empty or too long `message`, or a field that \
                   breaks its rule (`userId`, `sessionKey`, …).";
    if api == Api::Guayaba {
        errors.push((400, "An empty or over-long `Idempotency-Key`."));
    } else {
        errors.push((400, invalid));
    }
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
    }
    match (api, keyed) {
        (Api::Guayaba, true) => errors.push((
            403,
            "The key lacks the chat scope (`agents:run`), asks for a stream without \
             `agents:stream`, or cannot access this agent (also: no such agent).",
        )),
        (Api::Guayaba, false) => errors.push((403, "No such agent.")),
        (_, true) => errors.push((
            403,
            "The key lacks the `agents:run` scope, or asks for a stream without `agents:stream`.",
        )),
        (_, false) => {}
    }
    errors.push((
        404,
        if api == Api::Guayaba {
            "No such endpoint."
        } else {
            "The agent does not exist or is outside the key's access target, or the named \
             conversation does not exist."
        },
    ));
    errors.push((
        409,
        "The agent is not running, or a request with the same `Idempotency-Key` is still running.",
    ));
    errors.push((413, "The body is larger than `[server] max_body_bytes`."));
    errors.push((
        422,
        if api == Api::Guayaba {
            "Validation error: malformed JSON, a missing, empty or too long `message`, a \
             `sessionKey` without the `api:` prefix; or an `Idempotency-Key` reused with another body."
        } else {
            "An `Idempotency-Key` reused with another body."
        },
    ));
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

fn error_schema() -> Value {
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

fn message_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_MESSAGE_CHARS,
        "description": "The user message (at most 32,000 characters)."
    })
}

fn request_schema(api: Api) -> Value {
    match api {
        Api::Pharen => json!({
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
        }),
        Api::Chatbase => json!({
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
                "id": { "type": "string", "description": "AI SDK chat id." },
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
        }),
        Api::Agents => json!({
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": message_schema(),
                "conversation_id": {
                    "type": "string",
                    "description": "Continue this conversation; without it, the account's \
                                    default conversation with the agent (id `default`)."
                },
                "stream": { "type": "boolean", "default": false }
            }
        }),
        Api::Guayaba => json!({
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": message_schema(),
                "sessionKey": {
                    "type": "string",
                    "pattern": "^api:",
                    "minLength": 5,
                    "description": "Reuse a session; generated (with the `api:` prefix) when omitted."
                },
                "stream": { "type": "boolean", "default": false }
            }
        }),
    }
}

fn sync_schema(api: Api) -> Value {
    let usage = json!({ "$ref": "#/components/schemas/Usage" });
    match api {
        Api::Pharen => json!({
            "type": "object",
            "required": ["message", "conversation_id", "run_id", "usage"],
            "properties": {
                "message": { "type": "string", "description": "The answer's text." },
                "conversation_id": { "type": "string" },
                "run_id": { "type": "string" },
                "usage": usage
            }
        }),
        Api::Chatbase => json!({
            "type": "object",
            "required": ["messageId", "userMessageId", "conversationId", "userId", "usage", "text"],
            "properties": {
                "messageId": { "type": "string" },
                "userMessageId": { "type": "string" },
                "conversationId": { "type": "string" },
                "userId": { "type": ["string", "null"] },
                "usage": usage,
                "text": { "type": "string", "description": "The answer's text." }
            }
        }),
        Api::Agents => json!({
            "type": "object",
            "required": ["response", "agent_id", "agent_name", "conversation_id", "usage"],
            "properties": {
                "response": { "type": "string" },
                "agent_id": { "type": "string" },
                "agent_name": { "type": "string" },
                "conversation_id": { "type": "string" },
                "usage": usage
            }
        }),
        Api::Guayaba => json!({
            "type": "object",
            "required": ["sessionKey", "response", "toolCalls", "usage"],
            "properties": {
                "sessionKey": { "type": "string", "pattern": "^api:" },
                "response": { "type": "string" },
                "toolCalls": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["toolCallId", "name", "input"],
                        "properties": {
                            "toolCallId": { "type": "string" },
                            "name": { "type": "string" },
                            "input": {},
                            "output": {},
                            "error": { "type": "string" }
                        }
                    }
                },
                "usage": usage
            }
        }),
    }
}

/// The `text/event-stream` media type of a front's stream. As OpenAPI 3.1 has no `itemSchema`,
/// its `schema` describes one event (the reading OpenAPI 3.2 makes explicit and schema-based
/// tools apply): `event`, `data`, `id`, `retry`, with `data` a JSON chunk of the format (or
/// `[DONE]`) given as `contentMediaType`/`contentSchema`.
fn stream_media(front: &FrontConfig) -> Value {
    let (description, example, chunk, done_marker) = match front.format {
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

    fn front(api: Api, prefix: &str, require_key: bool) -> FrontConfig {
        FrontConfig {
            api,
            prefix: prefix.into(),
            listen: ([127, 0, 0, 1], 0).into(),
            format: api.default_format(),
            event_lines: false,
            tools_as_text: false,
            require_key,
        }
    }

    #[test]
    fn paths_sit_under_the_prefix_and_every_ref_resolves() {
        for api in Api::ALL {
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
