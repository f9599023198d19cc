//! The OpenAPI documents the gateway serves at `{prefix}/openapi.json`: each validates as
//! OpenAPI 3.1 (against the OpenAPI Initiative's own JSON Schema, vendored in
//! `tests/fixtures/openapi-3.1-schema.json`), each schema in it is valid JSON Schema 2020-12,
//! and what the gateway really answers — a sync body, a stream, and every error status of
//! SPEC §5 it can be made to give over loopback — is documented for that path and status and
//! matches the documented schema.

mod harness;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

const OAS_31_SCHEMA: &str = include_str!("fixtures/openapi-3.1-schema.json");

/// An open chatbase front beside the four keyed ones.
const OPEN_FRONT: &str =
    "\n[[front]]\napi = \"chatbase\"\nprefix = \"/open\"\nrequire_key = false\n";

/// The mounted fronts: (prefix, api, requires a key).
const MOUNTED: [(&str, Api, bool); 5] = [
    ("/pharen", Api::Pharen, true),
    ("/chatbase", Api::Chatbase, true),
    ("/agents", Api::Agents, true),
    ("/guayaba", Api::Guayaba, true),
    ("/open", Api::Chatbase, false),
];

/// Agents: a working one, one too dear for the test account, a disabled one, a rate-limited
/// one, one whose backend refuses connections and one whose backend never answers.
struct Agents {
    ok: String,
    dear: String,
    disabled: String,
    limited: String,
    unreachable: String,
    silent: String,
}

async fn gateway() -> (Gateway, Agents, Mock) {
    let echo = demo_agent(Api::Chatbase).await;
    let silent = MockUpstream::silent().spawn().await;
    let agents = Agents {
        ok: agent_id(1),
        dear: agent_id(2),
        disabled: agent_id(3),
        limited: agent_id(4),
        unreachable: agent_id(5),
        silent: agent_id(6),
    };
    let echo_url = format!("http://{echo}");
    let tables = [
        agent(&agents.ok, &echo_url, Api::Chatbase, ""),
        agent(
            &agents.dear,
            &echo_url,
            Api::Chatbase,
            "credits_per_message = 1e12",
        ),
        agent(
            &agents.disabled,
            &echo_url,
            Api::Chatbase,
            "enabled = false",
        ),
        agent(
            &agents.limited,
            &echo_url,
            Api::Chatbase,
            "rate_per_second = 0.01\nrate_burst = 1",
        ),
        agent(
            &agents.unreachable,
            &format!("http://{}", MockUpstream::refusing()),
            Api::Chatbase,
            "",
        ),
        agent(
            &agents.silent,
            &silent.url(),
            Api::Chatbase,
            "first_byte_timeout_ms = 300",
        ),
    ];
    let toml = format!("{}{OPEN_FRONT}", config("max_body_bytes = 200000", &tables));
    (spawn_gateway(&toml).await, agents, silent)
}

async fn fetch_document(gateway: &Gateway, prefix: &str) -> Value {
    // Unauthenticated: no key at all.
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(gateway.url(&format!("{prefix}/openapi.json")))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200, "{prefix}/openapi.json");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("a JSON document")
}

thread_local! {
    /// Compiled validators, by document title and schema: compiling one means compiling the
    /// whole document its `$ref`s point into.
    static VALIDATORS: RefCell<HashMap<String, Rc<jsonschema::Validator>>> =
        RefCell::new(HashMap::new());
}

/// Validates `instance` against `schema` (an object of `doc`, whose `$ref`s point into `doc`).
fn check(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let key = format!("{}{schema}", doc["info"]["title"]);
    let validator = VALIDATORS.with(|cache| {
        cache
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let mut root = doc.clone();
                for (k, v) in schema.as_object().expect("a schema object") {
                    root[k] = v.clone();
                }
                Rc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| {
                    panic!("{what}: the documented schema does not compile: {e}")
                }))
            })
            .clone()
    });
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer breaks its documented schema: {errors:?}\n{instance}"
    );
}

/// Checks every event of a stream against the documented event schema, and each JSON `data`
/// against its `contentSchema` (which JSON Schema only annotates, so it is applied here).
fn check_stream(doc: &Value, event_schema: &Value, body: &str, what: &str) {
    let events = read_sse(body);
    assert!(events.len() >= 2, "{what}: {body}");
    let data_schema = &event_schema["properties"]["data"];
    let content = data_schema
        .get("contentSchema")
        .or_else(|| data_schema["else"].get("contentSchema"))
        .unwrap_or_else(|| panic!("{what}: no contentSchema for `data`"));
    for e in events {
        let mut event = json!({ "data": e.data });
        if let Some(name) = &e.event {
            event["event"] = json!(name);
        }
        check(doc, event_schema, &event, what);
        if e.data != "[DONE]" {
            let chunk: Value = serde_json::from_str(&e.data)
                .unwrap_or_else(|err| panic!("{what}: data is not JSON ({err}): {}", e.data));
            check(doc, content, &chunk, what);
        }
    }
}

/// The operation of `doc` whose path template matches `path`.
fn operation<'d>(doc: &'d Value, method: &str, path: &str) -> &'d Value {
    let segments: Vec<&str> = path.split('/').collect();
    let (_, item) = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .find(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .unwrap_or_else(|| panic!("{path} is not documented"));
    item.get(method)
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

/// Sends `body` to `path` and checks the answer against `doc`: its status is documented for
/// that operation, and a JSON body matches the documented schema, a stream its media type.
/// Returns the status.
async fn exchange(
    doc: &Value,
    request: reqwest::RequestBuilder,
    path: &str,
    expect: Option<u16>,
) -> u16 {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    if let Some(expect) = expect {
        assert_eq!(status, expect, "POST {path}: {text}");
    }
    let what = format!("POST {path} → {status} {content_type}");
    let documented = &operation(doc, "post", path)["responses"][status.to_string()];
    assert!(documented.is_object(), "{what}: status not documented");
    let media = &documented["content"][content_type.as_str()];
    assert!(media.is_object(), "{what}: content type not documented");
    if content_type == "application/json" {
        let body: Value = serde_json::from_str(&text).expect("a JSON body");
        check(doc, &media["schema"], &body, &what);
    } else {
        assert_eq!(content_type, "text/event-stream", "{what}");
        check_stream(doc, &media["schema"], &text, &what);
    }
    status
}

#[tokio::test]
async fn every_front_serves_a_valid_openapi_31_document() {
    let (gateway, _agents, _silent) = gateway().await;
    let meta: Value = serde_json::from_str(OAS_31_SCHEMA).expect("vendored OAS schema");
    let oas = jsonschema::draft202012::new(&meta).expect("the OAS 3.1 schema compiles");
    for (prefix, api, keyed) in MOUNTED {
        let doc = fetch_document(&gateway, prefix).await;
        let errors: Vec<String> = oas.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{prefix}: not OpenAPI 3.1: {errors:?}");
        assert_eq!(doc["openapi"], "3.1.0");
        // Every schema in it is a valid JSON Schema 2020-12 (the OAS schema only says
        // "object or boolean" of them).
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            assert!(
                jsonschema::meta::is_valid(schema),
                "{prefix}: schema {name} is not valid JSON Schema"
            );
        }
        let paths = doc["paths"].as_object().expect("paths");
        assert!(
            paths.keys().all(|p| p.starts_with(&format!("{prefix}/"))),
            "{prefix}: a path outside the prefix: {:?}",
            paths.keys()
        );
        let chat_paths: &[&str] = match api {
            Api::Pharen => &["/api/agents/{agent_uuid}/chat/"],
            Api::Chatbase => &["/api/v2/agents/{agentId}/chat"],
            Api::Agents => &["/api/agents/{id}/chat", "/api/agents/{id}/chat/stream"],
            Api::Guayaba => &["/api/v1/agents/{id}/chat"],
        };
        for path in chat_paths {
            let op = &doc["paths"][format!("{prefix}{path}")]["post"];
            assert!(op.is_object(), "{prefix}{path} missing");
            let statuses: Vec<&String> = op["responses"].as_object().expect("r").keys().collect();
            let want: &[&str] = match (api, keyed) {
                (Api::Guayaba, _) => &["200", "403", "422", "409", "429", "502", "504"],
                (_, true) => &[
                    "200", "400", "401", "402", "403", "404", "409", "429", "502",
                ],
                (_, false) => &["200", "400", "404", "409", "429", "502", "504"],
            };
            for s in want {
                assert!(
                    statuses.iter().any(|k| k == s),
                    "{prefix}{path}: {s} missing"
                );
            }
            if !keyed {
                assert!(!statuses.iter().any(|k| *k == "401" || *k == "402"));
            }
        }
        // Security as mounted: bearer when a key is required, nothing otherwise.
        if keyed {
            assert_eq!(doc["security"], json!([{ "bearerAuth": [] }]), "{prefix}");
            assert_eq!(
                doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
                "bearer"
            );
        } else {
            assert!(doc.get("security").is_none(), "{prefix}");
        }
        // The seed's constraints travel into the request schemas.
        let schemas = &doc["components"]["schemas"];
        let request = match api {
            Api::Pharen => &schemas["PharenChatRequest"],
            Api::Chatbase => &schemas["ChatbaseChatRequest"],
            Api::Agents => &schemas["AgentsChatRequest"],
            Api::Guayaba => &schemas["GuayabaChatRequest"],
        };
        assert_eq!(request["properties"]["message"]["maxLength"], 32000);
        match api {
            Api::Chatbase => {
                assert_eq!(
                    request["properties"]["userId"]["pattern"],
                    "^[a-zA-Z0-9._-]+$"
                );
                assert_eq!(request["properties"]["userId"]["maxLength"], 128);
            }
            Api::Guayaba => assert_eq!(request["properties"]["sessionKey"]["pattern"], "^api:"),
            _ => {}
        }
        // The document answers GET only.
        let post = client()
            .post(gateway.url(&format!("{prefix}/openapi.json")))
            .send()
            .await
            .expect("answer");
        assert_eq!(post.status(), 405);
    }
    gateway.running.shutdown().await;
}

#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    let (gateway, agents, _silent) = gateway().await;
    let no_stream = create_key(
        &gateway.running,
        NewKeySpec {
            account: TEST_ACCOUNT.into(),
            kind: KeyKind::Agent,
            scopes: Scopes::AGENTS_RUN,
            agents: Some(vec![agents.ok.clone()]),
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await;
    let no_stream = format!("Bearer {}", no_stream.expose());
    let client = client();
    let bare = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (prefix, api, keyed) in MOUNTED {
        let doc = fetch_document(&gateway, prefix).await;
        let path = |agent: &str, stream: bool| {
            chat_path(api, agent, stream).replacen(&format!("/{api}"), prefix, 1)
        };
        let sync_body = |message: &str| {
            let mut body = json!({ "message": message });
            if matches!(api, Api::Chatbase) {
                body["stream"] = json!(false);
            }
            body
        };
        let stream_body = || {
            let mut body = json!({ "message": "hi" });
            if matches!(api, Api::Chatbase | Api::Guayaba) {
                body["stream"] = json!(true);
            }
            body
        };
        let post = |client: &reqwest::Client, p: &str, body: &Value, stream: bool| {
            let mut r = client.post(gateway.url(p)).json(body);
            if stream {
                r = r.header("accept", "text/event-stream");
            }
            r
        };
        let invalid = if api == Api::Guayaba { 422 } else { 400 };
        let no_agent = if api == Api::Guayaba { 403 } else { 404 };

        // 200: the whole answer as JSON, and a stream.
        let p = path(&agents.ok, false);
        let ok = post(&client, &p, &sync_body("Hello"), false);
        exchange(&doc, ok, &p, Some(200)).await;
        let p = path(&agents.ok, true);
        let ok = post(&client, &p, &stream_body(), true);
        exchange(&doc, ok, &p, Some(200)).await;

        // 400/422: malformed JSON, a missing, empty or too long message, bad fields.
        let p = path(&agents.ok, false);
        let raw = client
            .post(gateway.url(&p))
            .header("content-type", "application/json")
            .body("{not json");
        exchange(&doc, raw, &p, Some(invalid)).await;
        for body in [
            json!({}),
            json!({ "message": "" }),
            sync_body(&"x".repeat(32_001)),
        ] {
            let r = post(&client, &p, &body, false);
            exchange(&doc, r, &p, Some(invalid)).await;
        }
        let field = match api {
            Api::Chatbase => Some(json!({ "message": "hi", "userId": "a b" })),
            Api::Guayaba => Some(json!({ "message": "hi", "sessionKey": "web:1" })),
            _ => None,
        };
        if let Some(body) = field {
            exchange(&doc, post(&client, &p, &body, false), &p, Some(invalid)).await;
        }
        // 404 (403 on guayaba): no such agent; 404: no such conversation.
        let p = path(&agent_id(99), false);
        let r = post(&client, &p, &sync_body("hi"), false);
        exchange(&doc, r, &p, Some(no_agent)).await;
        if api != Api::Guayaba {
            let p = path(&agents.ok, false);
            let mut body = sync_body("hi");
            body[conversation_field(api)] = json!("no-such-conversation");
            exchange(&doc, post(&client, &p, &body, false), &p, Some(404)).await;
        }
        // 413: a body over `max_body_bytes`.
        let p = path(&agents.ok, false);
        let big = post(&client, &p, &json!({ "pad": "x".repeat(300_000) }), false);
        exchange(&doc, big, &p, Some(413)).await;
        // 409: a disabled agent. 502: a backend that refuses. 504: one that never answers.
        for (agent, status) in [
            (&agents.disabled, 409),
            (&agents.unreachable, 502),
            (&agents.silent, 504),
        ] {
            let p = path(agent, false);
            let r = post(&client, &p, &sync_body("hi"), false);
            exchange(&doc, r, &p, Some(status)).await;
        }
        // 429: the agent's rate limit (one a second, shared by every front).
        let p = path(&agents.limited, false);
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let r = post(&client, &p, &sync_body("hi"), false);
            statuses.push(exchange(&doc, r, &p, None).await);
        }
        assert_eq!(statuses.last(), Some(&429), "{prefix}: {statuses:?}");

        if keyed {
            // 401: no key, and a made-up one.
            let p = path(&agents.ok, false);
            let r = post(&bare, &p, &sync_body("hi"), false);
            exchange(&doc, r, &p, Some(401)).await;
            let r = post(&bare, &p, &sync_body("hi"), false)
                .header("authorization", "Bearer agk_nothing_here");
            exchange(&doc, r, &p, Some(401)).await;
            // 403: a stream without `agents:stream`; guayaba also for an agent outside the key.
            let p = path(&agents.ok, true);
            let r = post(&bare, &p, &stream_body(), true).header("authorization", &no_stream);
            exchange(&doc, r, &p, Some(403)).await;
            let p = path(&agents.dear, false);
            let r = post(&bare, &p, &sync_body("hi"), false).header("authorization", &no_stream);
            exchange(&doc, r, &p, Some(no_agent)).await;
            // 402: more than the account holds.
            let r = post(&client, &p, &sync_body("hi"), false);
            exchange(&doc, r, &p, Some(402)).await;
        }
        // An Idempotency-Key reused with another body: 422.
        let p = path(&agents.ok, false);
        let key = format!("idem-{prefix}");
        let r = post(&client, &p, &sync_body("one"), false).header("idempotency-key", &key);
        exchange(&doc, r, &p, Some(200)).await;
        let r = post(&client, &p, &sync_body("two"), false).header("idempotency-key", &key);
        exchange(&doc, r, &p, Some(422)).await;
    }
    gateway.running.shutdown().await;
}
