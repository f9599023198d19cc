//! The `ag-ui` front and upstream (SPEC §9) over real loopback sockets: the ag-ui front before
//! an ag-ui backend and before each seed backend, each seed front before an ag-ui backend, a
//! conversation continued by `threadId` (and not reachable from another account), the errors
//! before the stream, the `RunAgentInput` sent to the upstream URL as it stands, and
//! `@ag-ui/client` accepting the front's stream.

mod harness;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

const SEEDS: [Api; 4] = [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba];

fn echo(turn: u32, message: &str) -> String {
    format!("Echo (turn {turn}): {message}")
}

/// A gateway with agent 1 behind an ag-ui demo backend (on a path of its own, called as it
/// stands) and agents 2..=5 behind the four seed demo backends.
async fn gateway() -> Gateway {
    gateway_and(&[]).await
}

/// [`gateway`] with `more` agents besides.
async fn gateway_and(more: &[String]) -> Gateway {
    let ag_ui = demo_agent(Api::AgUi).await;
    let mut agents = vec![agent(
        &agent_id(1),
        &format!("http://{ag_ui}/agents/echo/run"),
        Api::AgUi,
        "",
    )];
    for (i, seed) in SEEDS.into_iter().enumerate() {
        let addr = demo_agent(seed).await;
        agents.push(agent(
            &agent_id(i as u32 + 2),
            &format!("http://{addr}"),
            seed,
            "",
        ));
    }
    agents.extend_from_slice(more);
    spawn_gateway(&config_with_ag_ui("", &agents)).await
}

/// Agent 6: the backend written with `@ag-ui/encoder`.
const ENCODER_AGENT: u32 = 6;

fn encoder_echo(turn: u32, message: &str) -> String {
    format!("Echo (encoder, turn {turn}): {message}")
}

/// A gateway as [`gateway`] with agent 6 behind `tests/js/ag-ui-backend.mjs`; `None` (said why)
/// where node is absent.
async fn gateway_with_encoder() -> Option<(Gateway, EncoderBackend)> {
    let encoder = EncoderBackend::spawn().await?;
    let extra = agent(&agent_id(ENCODER_AGENT), &encoder.url(), Api::AgUi, "");
    Some((gateway_and(&[extra]).await, encoder))
}

/// `HttpAgent` POSTing its own `RunAgentInput` to the front: its verdict, which must be `ok`.
async fn http_agent(gw: &Gateway, agent: &str, message: &str, thread: Option<&str>) -> Value {
    let url = gw.url(&chat_path(Api::AgUi, agent, true));
    let verdict = ag_ui_client_run(&url, test_key().expose(), message, thread)
        .await
        .expect("node ran for the encoder backend");
    assert_eq!(verdict["ok"], true, "@ag-ui/client: {verdict}");
    verdict
}

/// One run on the ag-ui front: 200 `text/event-stream`, read back, properly ended.
async fn run(
    client: &reqwest::Client,
    gw: &Gateway,
    agent: &str,
    message: &str,
    thread: Option<&str>,
) -> Answer {
    let response = send_chat(client, gw, Api::AgUi, agent, message, thread, true).await;
    let status = response.status();
    let content_type = response.headers()["content-type"].clone();
    let body = response.text().await.expect("stream body");
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/event-stream");
    let answer = read_stream("ag-ui", &body);
    assert!(answer.ended_properly, "not ended properly:\n{body}");
    assert!(answer.errors.is_empty(), "{body}");
    if let Some(thread) = thread {
        assert_eq!(answer.conversation.as_deref(), Some(thread), "{body}");
    }
    check_with_ag_ui_client(&body, thread, &answer.text).await;
    answer
}

/// A stream from a seed `front` to `agent`: 200, properly ended, no error, `text`.
async fn stream_from(
    c: &reqwest::Client,
    gw: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    text: &str,
) {
    let response = send_chat(c, gw, front, agent, message, None, true).await;
    assert_eq!(response.status(), 200, "{front}");
    let body = response.text().await.expect("body");
    let a = read_stream(front_format(front), &body);
    assert!(a.ended_properly, "{front}:\n{body}");
    assert!(a.errors.is_empty(), "{front}:\n{body}");
    assert_eq!(a.text, text, "{front} stream:\n{body}");
}

/// `@ag-ui/client`'s `HttpAgent` (verification on) must accept the stream and assemble the
/// same text; skipped (with its reason) where node is absent.
async fn check_with_ag_ui_client(body: &str, thread: Option<&str>, text: &str) {
    let Some(verdict) = check_ag_ui_stream(body, thread).await else {
        return;
    };
    assert_eq!(
        verdict["ok"], true,
        "@ag-ui/client refused:\n{verdict}\n{body}"
    );
    assert_eq!(client_text(&verdict), text, "{verdict}");
}

#[tokio::test]
async fn ag_ui_front_before_an_ag_ui_backend_and_each_seed_backend() {
    let gw = gateway().await;
    let c = client();
    // ag-ui → ag-ui, with a tool call.
    let a = run(&c, &gw, &agent_id(1), "Hello ag-ui é 👋", Some("thread-a")).await;
    assert_eq!(a.text, echo(1, "Hello ag-ui é 👋"));
    assert!(a.raw.trim_end().ends_with("}"));
    assert_eq!(a.raw.matches("RUN_FINISHED").count(), 1);
    let w = run(&c, &gw, &agent_id(1), "weather in Paris?", Some("thread-w")).await;
    assert!(
        w.text.starts_with("The weather in Paris is sunny"),
        "{}",
        w.text
    );
    assert_eq!(w.tool_inputs, ["get_weather"]);
    assert_eq!(w.tool_outputs.len(), 1);
    // ag-ui front → each seed backend; its tool call where the backend's stream carries one
    // (all but `agents`, whose text-done stream has no tool events).
    for (i, seed) in SEEDS.into_iter().enumerate() {
        let id = agent_id(i as u32 + 2);
        let thread = format!("thread-{seed}");
        let a = run(&c, &gw, &id, "to a seed", Some(&thread)).await;
        assert_eq!(a.text, echo(1, "to a seed"), "ag-ui → {seed}");
        let w = run(
            &c,
            &gw,
            &id,
            "weather in Paris?",
            Some(&format!("w-{seed}")),
        )
        .await;
        let tools: &[&str] = match seed {
            Api::Agents => &[],
            _ => &["get_weather"],
        };
        assert_eq!(w.tool_inputs, tools, "ag-ui → {seed}:\n{}", w.raw);
    }
    // No threadId: a new conversation all the same.
    let a = run(&c, &gw, &agent_id(1), "no thread", None).await;
    assert_eq!(a.text, echo(1, "no thread"));
    assert!(a.conversation.is_some());
    gw.running.shutdown().await;
}

#[tokio::test]
async fn each_seed_front_reaches_an_ag_ui_backend() {
    let gw = gateway().await;
    let c = client();
    let id = agent_id(1);
    for front in SEEDS {
        stream_from(&c, &gw, front, &id, "from a seed", &echo(1, "from a seed")).await;
        // The ag-ui backend's tool call, in every seed format that carries tools.
        let response = send_chat(&c, &gw, front, &id, "weather?", None, true).await;
        let body = response.text().await.expect("body");
        let w = read_stream(front_format(front), &body);
        let tools: &[&str] = match front_format(front) {
            "text-done" => &[],
            _ => &["get_weather"],
        };
        assert_eq!(w.tool_inputs, tools, "{front}:\n{body}");
        let response = send_chat(&c, &gw, front, &id, "sync seed", None, false).await;
        assert_eq!(response.status(), 200, "{front}");
        let body: Value = response.json().await.expect("JSON body");
        // agents continues the account's default conversation: the backend's third turn.
        let turn = if front == Api::Agents { 3 } else { 1 };
        assert_eq!(
            read_sync(front, &body).text,
            echo(turn, "sync seed"),
            "{front}"
        );
    }
    gw.running.shutdown().await;
}

#[tokio::test]
async fn thread_id_continues_the_conversation_for_its_account_only() {
    let gw = gateway().await;
    let c = client();
    let id = agent_id(1);
    let thread = "my-thread.1";
    // The demo backend counts turns per threadId it receives: turn 2 means it got the same one.
    assert_eq!(
        run(&c, &gw, &id, "one", Some(thread)).await.text,
        echo(1, "one")
    );
    assert_eq!(
        run(&c, &gw, &id, "two", Some(thread)).await.text,
        echo(2, "two")
    );

    let other = create_key(
        &gw.running,
        NewKeySpec {
            account: "intruder".into(),
            kind: KeyKind::Master,
            scopes: Scopes::ALL,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await;
    gw.running
        .policy
        .ledger
        .grant("intruder", 100.0, None)
        .await
        .expect("grant");
    let o = client_with(&other);
    // The same threadId opens the intruder's own conversation: the backend sees a new thread.
    assert_eq!(
        run(&o, &gw, &id, "let me in", Some(thread)).await.text,
        echo(1, "let me in")
    );
    assert_eq!(
        run(&c, &gw, &id, "three", Some(thread)).await.text,
        echo(3, "three")
    );
    gw.running.shutdown().await;
}

#[tokio::test]
async fn errors_before_the_stream_are_json() {
    let gw = gateway().await;
    let id = agent_id(1);
    let bare = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client");
    let r = send_chat(&bare, &gw, Api::AgUi, &id, "no key", Some("t"), true).await;
    assert_error(r, 401).await;
    let r = send_chat(
        &client(),
        &gw,
        Api::AgUi,
        "no-such-agent",
        "x",
        Some("t"),
        true,
    )
    .await;
    assert_error(r, 404).await;
    let poor = create_key(
        &gw.running,
        NewKeySpec {
            account: "poor".into(),
            kind: KeyKind::Master,
            scopes: Scopes::ALL,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await;
    let r = send_chat(
        &client_with(&poor),
        &gw,
        Api::AgUi,
        &id,
        "broke",
        Some("t"),
        true,
    )
    .await;
    assert_error(r, 402).await;
    // A RunAgentInput without a user message, and a threadId that cannot be a key: 400.
    let url = gw.url(&chat_path(Api::AgUi, &id, true));
    for body in [
        json!({ "threadId": "t", "messages": [{ "id": "1", "role": "assistant", "content": "x" }] }),
        json!({ "threadId": "a b", "messages": [{ "id": "1", "role": "user", "content": "x" }] }),
    ] {
        let r = client()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("answer");
        assert_error(r, 400).await;
    }
    gw.running.shutdown().await;
}

#[tokio::test]
async fn upstream_gets_a_run_agent_input_on_its_url_as_it_stands() {
    let sse = "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"up-1\",\"runId\":\"r1\"}\n\n\
               data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"m1\",\"role\":\"assistant\"}\n\n\
               data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"hi there\"}\n\n\
               data: {\"type\":\"TEXT_MESSAGE_END\",\"messageId\":\"m1\"}\n\n\
               data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"up-1\",\"runId\":\"r1\"}\n\n";
    let mock = MockUpstream::sse(sse).spawn().await;
    let agents = [agent(
        &agent_id(1),
        &format!("{}/langgraph/agent/run", mock.url()),
        Api::AgUi,
        "",
    )];
    let gw = spawn_gateway(&config_with_ag_ui("", &agents)).await;
    let c = client();
    let a = run(&c, &gw, &agent_id(1), "first", Some("client-thread")).await;
    assert_eq!(a.text, "hi there");
    let a = run(&c, &gw, &agent_id(1), "second", Some("client-thread")).await;
    assert_eq!(a.text, "hi there");
    // The client's tools, context, state and forwarded props go on as it sent them.
    let extras = json!({
        "tools": [{ "name": "confirm", "description": "Ask the user", "parameters": { "type": "object" } }],
        "context": [{ "description": "page", "value": "/home" }],
        "state": { "step": 2 },
        "forwardedProps": { "locale": "es" },
    });
    let mut body = chat_body(Api::AgUi, "third", Some("other-thread"), true);
    for (k, v) in extras.as_object().expect("object") {
        body[k] = v.clone();
    }
    let r = c
        .post(gw.url(&chat_path(Api::AgUi, &agent_id(1), true)))
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(read_stream("ag-ui", &r.text().await.expect("body")).ended_properly);
    let seen = mock.requests();
    assert_eq!(seen.len(), 3);
    let third = seen[2].json();
    for (k, v) in extras.as_object().expect("object") {
        assert_eq!(&third[k], v, "{k}: {third}");
    }
    for r in &seen[..2] {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/langgraph/agent/run");
        assert_eq!(r.header("accept"), Some("text/event-stream"));
    }
    let (first, second) = (seen[0].json(), seen[1].json());
    assert!(
        uuid::Uuid::parse_str(first["threadId"].as_str().unwrap()).is_ok(),
        "{first}"
    );
    assert_eq!(
        first["messages"],
        json!([{ "id": first["messages"][0]["id"], "role": "user", "content": "first" }])
    );
    assert_eq!(first["tools"], json!([]));
    assert_eq!(first["context"], json!([]));
    assert_eq!(first["state"], json!({}));
    // The backend's own thread (from its RUN_STARTED) continues the conversation.
    assert_eq!(second["threadId"], "up-1", "{second}");
    assert_ne!(first["runId"], second["runId"]);
    gw.running.shutdown().await;
}

#[tokio::test]
async fn the_front_serves_its_openapi_document() {
    let gw = gateway().await;
    let r = client()
        .get(gw.url("/ag-ui/openapi.json"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.expect("JSON");
    let meta: Value = serde_json::from_str(include_str!("fixtures/openapi-3.1-schema.json"))
        .expect("vendored OAS schema");
    let oas = jsonschema::draft202012::new(&meta).expect("the OAS 3.1 schema compiles");
    let errors: Vec<String> = oas.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "not OpenAPI 3.1: {errors:?}");
    let op = &doc["paths"]["/ag-ui/api/agents/{id}/run"]["post"];
    assert!(op.is_object(), "{doc}");
    for status in ["200", "400", "401", "402", "404"] {
        assert!(op["responses"][status].is_object(), "{status} missing");
    }
    let request = &doc["components"]["schemas"]["AgUiChatRequest"];
    assert_eq!(request["required"], json!(["messages"]));
    assert_eq!(request["properties"]["threadId"]["maxLength"], 256);
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        assert!(jsonschema::meta::is_valid(schema), "schema {name}");
    }
    gw.running.shutdown().await;
}

/// `@ag-ui/client`'s `HttpAgent` calls the front itself (key, `RunAgentInput`, verification
/// on) and gets its answer from every upstream: the four seed backends, the ag-ui demo backend
/// and a backend written with `@ag-ui/encoder`, whose thread it continues and whose tool call
/// and result it assembles. The encoder backend is sent a `RunAgentInput` with the thread it
/// chose, and never the client's key.
#[tokio::test]
async fn http_agent_reaches_every_upstream_and_an_encoder_backend() {
    let Some((gw, encoder)) = gateway_with_encoder().await else {
        return;
    };
    for n in 1..=5 {
        let v = http_agent(&gw, &agent_id(n), "Hi from HttpAgent é 👋", None).await;
        assert_eq!(
            client_text(&v),
            echo(1, "Hi from HttpAgent é 👋"),
            "agent {n}"
        );
    }
    let id = agent_id(ENCODER_AGENT);
    let thread = "encoder-thread";
    let v = http_agent(&gw, &id, "first 日本語", Some(thread)).await;
    assert_eq!(client_text(&v), encoder_echo(1, "first 日本語"));
    assert_eq!(v["threadId"], thread, "{v}");
    let v = http_agent(&gw, &id, "second", Some(thread)).await;
    assert_eq!(client_text(&v), encoder_echo(2, "second"));
    let v = http_agent(&gw, &id, "weather?", Some("weather-thread")).await;
    assert_eq!(
        client_text(&v),
        format!("Sunny in Paris. {}", encoder_echo(1, "weather?"))
    );
    assert_eq!(v["toolCalls"][0]["name"], "get_weather", "{v}");
    assert_eq!(v["toolCalls"][0]["arguments"], r#"{"city":"Paris"}"#, "{v}");
    assert_eq!(v["toolResults"].as_array().map(Vec::len), Some(1), "{v}");

    let seen = encoder.received(3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (one, two) = (&seen[0], &seen[1]);
    assert_eq!(one["path"], "/agent/run");
    assert_eq!(one["headers"]["accept"], "text/event-stream");
    assert!(one["headers"].get("authorization").is_none(), "{one}");
    assert_eq!(one["input"]["messages"][0]["role"], "user");
    assert_eq!(one["input"]["messages"][0]["content"], "first 日本語");
    // The backend's thread (from its RUN_STARTED) continues the conversation.
    assert_eq!(two["input"]["threadId"], one["input"]["threadId"]);
    assert_ne!(seen[2]["input"]["threadId"], one["input"]["threadId"]);
    gw.running.shutdown().await;
}

/// Each seed front streams the encoder backend's answer in its own format.
#[tokio::test]
async fn each_seed_front_reaches_an_encoder_backend() {
    let Some((gw, _encoder)) = gateway_with_encoder().await else {
        return;
    };
    let c = client();
    let id = agent_id(ENCODER_AGENT);
    for front in SEEDS {
        let expected = encoder_echo(1, "from a seed é");
        stream_from(&c, &gw, front, &id, "from a seed é", &expected).await;
    }
    gw.running.shutdown().await;
}

/// The encoder backend drops its connection after the first words: `HttpAgent` sees the words,
/// then `RUN_ERROR` as the stream's proper end, and the run is charged for what was said.
#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_with_run_error() {
    let Some((gw, _encoder)) = gateway_with_encoder().await else {
        return;
    };
    let id = agent_id(ENCODER_AGENT);
    let url = gw.url(&chat_path(Api::AgUi, &id, true));
    let v = ag_ui_client_run(&url, test_key().expose(), "please die", Some("dying"))
        .await
        .expect("node ran");
    assert_eq!(v["ok"], true, "@ag-ui/client: {v}");
    assert_eq!(
        v["types"].as_array().and_then(|t| t.last()),
        Some(&json!("RUN_ERROR")),
        "{v}"
    );
    assert!(v["runError"]["message"].is_string(), "{v}");
    assert_eq!(client_text(&v), "Echo ", "{v}");
    // The same over plain HTTP: a stream that ends, not a cut.
    let r = send_chat(
        &client(),
        &gw,
        Api::AgUi,
        &id,
        "die again",
        Some("dying-2"),
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("a stream that ends");
    let a = read_stream("ag-ui", &body);
    assert!(a.ended_properly, "{body}");
    assert_eq!(a.errors.len(), 1, "{body}");
    gw.running.shutdown().await;
}
