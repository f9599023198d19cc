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
    // A team of the working agent and the unreachable one (whose entry is an error), with
    // the working one as summariser.
    let team = format!(
        "\n[[team]]\nid = \"duo\"\nmembers = [\"{}\", \"{}\"]\nmodes = [\"brainstorm\", \"debate\"]\nsummarizer = \"{}\"\n",
        agents.ok, agents.unreachable, agents.ok
    );
    let toml = format!(
        "{}{OPEN_FRONT}{team}",
        config("max_body_bytes = 200000", &tables)
    );
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
    exchange_as(doc, "post", request, path, expect).await.0
}

/// [`exchange`] for any `method`; `path` without its query. Returns the status and the JSON
/// body (null when there is none or it is a stream).
async fn exchange_as(
    doc: &Value,
    method: &str,
    request: reqwest::RequestBuilder,
    path: &str,
    expect: Option<u16>,
) -> (u16, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let upper = method.to_uppercase();
    if let Some(expect) = expect {
        assert_eq!(status, expect, "{upper} {path}: {text}");
    }
    let what = format!("{upper} {path} → {status} {content_type}");
    let documented = &operation(doc, method, path)["responses"][status.to_string()];
    assert!(documented.is_object(), "{what}: status not documented");
    if documented.get("content").is_none() {
        assert!(
            text.is_empty(),
            "{what}: a body where none is documented: {text}"
        );
        return (status, Value::Null);
    }
    let media = &documented["content"][content_type.as_str()];
    assert!(media.is_object(), "{what}: content type not documented");
    if content_type == "application/json" {
        let body: Value = serde_json::from_str(&text).expect("a JSON body");
        check(doc, &media["schema"], &body, &what);
        (status, body)
    } else {
        assert_eq!(content_type, "text/event-stream", "{what}");
        check_stream(doc, &media["schema"], &text, &what);
        (status, Value::Null)
    }
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
            Api::AgUi => &["/api/agents/{id}/run"],
            Api::OpenAi => &["/v1/chat/completions", "/v1/responses"],
            Api::OpenAiChat | Api::OpenAiResponses => unreachable!("{api} is no front"),
        };
        for path in chat_paths {
            let op = &doc["paths"][format!("{prefix}{path}")]["post"];
            assert!(op.is_object(), "{prefix}{path} missing");
            let statuses: Vec<&String> = op["responses"].as_object().expect("r").keys().collect();
            let want: &[&str] = match (api, keyed) {
                (Api::Guayaba, _) => &["200", "404", "422", "409", "429", "502", "504"],
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
            // Not mounted here: tests/ag_ui_front.rs and tests/openai_front.rs check theirs.
            Api::AgUi | Api::OpenAi => continue,
            Api::OpenAiChat | Api::OpenAiResponses => unreachable!("{api} is no front"),
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
            Api::Guayaba => assert_eq!(
                request["properties"]["sessionKey"]["pattern"],
                "^api:[A-Za-z0-9._:-]+$"
            ),
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
        // guayaba: 404 for no such agent, 403 for one outside the key (seed 004).
        let outside = if api == Api::Guayaba { 403 } else { 404 };

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
        // 404: no such agent; 404: no such conversation.
        let p = path(&agent_id(99), false);
        let r = post(&client, &p, &sync_body("hi"), false);
        exchange(&doc, r, &p, Some(404)).await;
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
            exchange(&doc, r, &p, Some(outside)).await;
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

/// A key of `account` with only `scopes`, for the agent `ok`.
async fn scoped_key(gateway: &Gateway, account: &str, scopes: Scopes, ok: &str) -> String {
    let key = create_key(
        &gateway.running,
        NewKeySpec {
            account: account.into(),
            kind: KeyKind::Agent,
            scopes,
            agents: Some(vec![ok.to_owned()]),
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await;
    format!("Bearer {}", key.expose())
}

/// History, conversations, inbox, mark-read and team chat on `agents`, sessions on `guayaba`
/// (SPEC §7): every success and error status they can be made to give over loopback is
/// documented for that path, method and status, and the answer matches its schema.
#[tokio::test]
async fn conversation_session_and_team_answers_match_the_documented_schemas() {
    let (gateway, agents, _silent) = gateway().await;
    let ok = agents.ok.as_str();
    let reader = scoped_key(&gateway, TEST_ACCOUNT, Scopes::CONVERSATIONS_READ, ok).await;
    let runner = scoped_key(&gateway, TEST_ACCOUNT, Scopes::AGENTS_RUN, ok).await;
    // Another account, with every scope: another's conversations are 404 to it.
    let other = scoped_key(&gateway, "other", Scopes::ALL, ok).await;
    let client = client();
    let bare = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = |p: &str| gateway.url(p);

    // ---- agents: a chat first, so that history and inbox hold messages.
    let doc = fetch_document(&gateway, "/agents").await;
    let chat = format!("/agents/api/agents/{ok}/chat");
    for message in ["one", "two"] {
        let r = client.post(url(&chat)).json(&json!({ "message": message }));
        exchange(&doc, r, &chat, Some(200)).await;
    }
    let base = format!("/agents/api/agents/{ok}");
    let history = format!("{base}/history");
    let (_, page) = exchange_as(
        &doc,
        "get",
        client.get(url(&format!("{history}?limit=1"))),
        &history,
        Some(200),
    )
    .await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let r = client
        .get(url(&history))
        .query(&[("limit", "100"), ("cursor", cursor.as_str())]);
    let (_, page) = exchange_as(&doc, "get", r, &history, Some(200)).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3), "{page}");
    for query in ["limit=0", "limit=x", "cursor=nope"] {
        let r = client.get(url(&format!("{history}?{query}")));
        exchange_as(&doc, "get", r, &history, Some(400)).await;
    }
    let r = client.get(url(&format!("{history}?conversation_id=no-such")));
    exchange_as(&doc, "get", r, &history, Some(404)).await;
    let r = bare.get(url(&history));
    exchange_as(&doc, "get", r, &history, Some(401)).await;
    let r = bare.get(url(&history)).header("authorization", &runner);
    exchange_as(&doc, "get", r, &history, Some(403)).await;
    let nobody = format!("/agents/api/agents/{}/history", agent_id(99));
    exchange_as(&doc, "get", client.get(url(&nobody)), &nobody, Some(404)).await;

    // Conversations: create (with and without a body), list, rename, delete.
    let list = format!("{base}/conversations");
    let r = client.post(url(&list)).json(&json!({ "title": "Plans" }));
    let (_, created) = exchange_as(&doc, "post", r, &list, Some(201)).await;
    let conv = created["id"].as_str().expect("an id").to_owned();
    exchange_as(&doc, "post", client.post(url(&list)), &list, Some(201)).await;
    for body in [json!({ "title": "" }), json!({ "name": "x" })] {
        let r = client.post(url(&list)).json(&body);
        exchange_as(&doc, "post", r, &list, Some(400)).await;
    }
    let r = client
        .post(url(&list))
        .header("content-type", "application/json")
        .body("{not json");
    exchange_as(&doc, "post", r, &list, Some(400)).await;
    let r = bare.post(url(&list)).header("authorization", &reader);
    exchange_as(&doc, "post", r, &list, Some(403)).await;
    let (_, listed) = exchange_as(&doc, "get", client.get(url(&list)), &list, Some(200)).await;
    assert!(
        listed["conversations"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == conv.as_str())),
        "{listed}"
    );
    let r = client.get(url(&format!("{list}?limit=101")));
    exchange_as(&doc, "get", r, &list, Some(200)).await;
    let one = format!("{list}/{conv}");
    let r = client.put(url(&one)).json(&json!({ "title": "Renamed" }));
    let (_, renamed) = exchange_as(&doc, "put", r, &one, Some(200)).await;
    assert_eq!(renamed["title"], "Renamed");
    let r = client.put(url(&one)).json(&json!({}));
    exchange_as(&doc, "put", r, &one, Some(400)).await;
    let r = bare
        .put(url(&one))
        .header("authorization", &other)
        .json(&json!({ "title": "Mine" }));
    exchange_as(&doc, "put", r, &one, Some(404)).await;
    let r = bare.delete(url(&one)).header("authorization", &other);
    exchange_as(&doc, "delete", r, &one, Some(404)).await;
    exchange_as(&doc, "delete", client.delete(url(&one)), &one, Some(204)).await;
    exchange_as(&doc, "delete", client.delete(url(&one)), &one, Some(404)).await;
    // A method the path does not serve: 405 with `Allow`, in the error shape.
    let response = client.delete(url(&history)).send().await.expect("answer");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let body: Value = response.json().await.expect("JSON");
    check(
        &doc,
        &json!({ "$ref": "#/components/schemas/Error" }),
        &body,
        "405",
    );

    // Inbox and mark-read.
    let inbox = format!("{base}/inbox");
    let (_, unread) = exchange_as(&doc, "get", client.get(url(&inbox)), &inbox, Some(200)).await;
    let first = unread["messages"][0]["id"]
        .as_str()
        .expect("unread")
        .to_owned();
    let r = client.get(url(&format!("{inbox}?limit=500000000000")));
    exchange_as(&doc, "get", r, &inbox, Some(400)).await;
    let mark = format!("{base}/mark-read");
    let r = client
        .post(url(&mark))
        .json(&json!({ "message_ids": [first] }));
    let (_, marked) = exchange_as(&doc, "post", r, &mark, Some(200)).await;
    assert_eq!(marked["marked"], 1);
    let (_, marked) = exchange_as(&doc, "post", client.post(url(&mark)), &mark, Some(200)).await;
    assert_eq!(marked["marked"], 1);
    let r = client.post(url(&mark)).json(&json!({ "ids": [] }));
    exchange_as(&doc, "post", r, &mark, Some(400)).await;
    let r = bare.post(url(&mark)).header("authorization", &reader);
    exchange_as(&doc, "post", r, &mark, Some(403)).await;

    // Team chat: JSON (one member's entry an error) and a stream, then its errors.
    let team = "/agents/api/teams/duo/chat";
    let stream = "/agents/api/teams/duo/chat/stream";
    let r = client
        .post(url(team))
        .json(&json!({ "message": "hi", "mode": "debate" }));
    let (_, answer) = exchange_as(&doc, "post", r, team, Some(200)).await;
    assert!(answer["responses"][0]["content"].is_string(), "{answer}");
    assert!(answer["responses"][1]["error"].is_object(), "{answer}");
    assert!(answer["summary"].is_string(), "{answer}");
    let r = client.post(url(stream)).json(&json!({ "message": "hi" }));
    exchange_as(&doc, "post", r, stream, Some(200)).await;
    let r = client
        .post(url(team))
        .json(&json!({ "message": "hi", "stream": true }));
    exchange_as(&doc, "post", r, team, Some(200)).await;
    for body in [
        json!({}),
        json!({ "message": "" }),
        json!({ "message": "hi", "mode": "chat" }),
        json!({ "message": "hi", "stream": "yes" }),
    ] {
        let r = client.post(url(team)).json(&body);
        exchange_as(&doc, "post", r, team, Some(400)).await;
    }
    let nope = "/agents/api/teams/nope/chat";
    let r = client.post(url(nope)).json(&json!({ "message": "hi" }));
    exchange_as(&doc, "post", r, nope, Some(404)).await;
    let r = bare.post(url(team)).json(&json!({ "message": "hi" }));
    exchange_as(&doc, "post", r, team, Some(401)).await;
    let r = bare
        .post(url(stream))
        .header("authorization", &runner)
        .json(&json!({ "message": "hi" }));
    exchange_as(&doc, "post", r, stream, Some(403)).await;

    // ---- guayaba: a chat makes a session.
    let doc = fetch_document(&gateway, "/guayaba").await;
    let chat = format!("/guayaba/api/v1/agents/{ok}/chat");
    let r = client.post(url(&chat)).json(&json!({ "message": "hi" }));
    let response = r.send().await.expect("answer");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    let session = answer["sessionKey"].as_str().expect("a session").to_owned();
    let sessions = format!("/guayaba/api/v1/agents/{ok}/sessions");
    let (_, listed) = exchange_as(
        &doc,
        "get",
        client.get(url(&sessions)),
        &sessions,
        Some(200),
    )
    .await;
    assert_eq!(listed["sessions"][0]["sessionKey"], session.as_str());
    for query in ["archived=maybe", "limit=0", "cursor=nope"] {
        let r = client.get(url(&format!("{sessions}?{query}")));
        exchange_as(&doc, "get", r, &sessions, Some(422)).await;
    }
    let r = bare.get(url(&sessions));
    exchange_as(&doc, "get", r, &sessions, Some(401)).await;
    let r = bare.get(url(&sessions)).header("authorization", &runner);
    exchange_as(&doc, "get", r, &sessions, Some(403)).await;
    let nobody = format!("/guayaba/api/v1/agents/{}/sessions", agent_id(99));
    exchange_as(&doc, "get", client.get(url(&nobody)), &nobody, Some(404)).await;
    let one = format!("{sessions}/{session}");
    let r = client
        .patch(url(&one))
        .json(&json!({ "archived": true, "title": "Old" }));
    let (_, patched) = exchange_as(&doc, "patch", r, &one, Some(200)).await;
    assert_eq!(patched["archived"], true);
    let r = client.get(url(&format!("{sessions}?archived=true&limit=5")));
    let (_, archived) = exchange_as(&doc, "get", r, &sessions, Some(200)).await;
    assert_eq!(archived["sessions"][0]["sessionKey"], session.as_str());
    for body in [json!({}), json!({ "title": "" }), json!({ "pinned": true })] {
        let r = client.patch(url(&one)).json(&body);
        exchange_as(&doc, "patch", r, &one, Some(422)).await;
    }
    exchange_as(&doc, "patch", client.patch(url(&one)), &one, Some(422)).await;
    let r = bare
        .patch(url(&one))
        .header("authorization", &reader)
        .json(&json!({ "archived": false }));
    exchange_as(&doc, "patch", r, &one, Some(403)).await;
    let r = bare
        .patch(url(&one))
        .header("authorization", &other)
        .json(&json!({ "archived": false }));
    exchange_as(&doc, "patch", r, &one, Some(404)).await;
    let r = bare.delete(url(&one)).header("authorization", &other);
    exchange_as(&doc, "delete", r, &one, Some(404)).await;
    exchange_as(&doc, "delete", client.delete(url(&one)), &one, Some(204)).await;
    exchange_as(&doc, "delete", client.delete(url(&one)), &one, Some(404)).await;
    gateway.running.shutdown().await;
}
