//! The gateway over real loopback sockets: every front against every upstream API, HTTP/2 and
//! TLS, misbehaving backends, a client that stops reading, validation and headers, graceful
//! shutdown, and the Vercel AI SDK's own client.

mod harness;

use std::time::Duration;

use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

const UTF8_MESSAGE: &str = "Hello é 日本語 👋🏽";
const WEATHER_MESSAGE: &str = "What is the weather in Paris?";
const WEATHER_TEXT: &str = "The weather in Paris is sunny, 21 °C.";

/// What the demo echo answers on a turn.
fn echo(turn: u32, message: &str) -> String {
    format!("Echo (turn {turn}): {message}")
}

/// Concatenated text parts of an assembled AI SDK `UIMessage`.
fn ui_message_text(message: &Value) -> String {
    message["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// A streamed chat: checks the response head, reads the body in the front's format and, for
/// ui-message, has the AI SDK's parser accept it.
async fn stream_chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
) -> Answer {
    let response = send_chat(client, gateway, front, agent, message, conversation, true).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("stream body");
    assert_eq!(status, 200, "{front} stream: {body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let format = front_format(front);
    if format == "ui-message" {
        assert_eq!(headers["x-vercel-ai-ui-message-stream"], "v1");
    }
    let answer = read_stream(format, &body);
    if format == "ui-message" {
        if let Some(verdict) = check_ui_stream(&body).await {
            assert_eq!(verdict["ok"], true, "AI SDK refused the stream: {verdict}");
            assert_eq!(verdict["done"], true, "{verdict}");
            if answer.errors.is_empty() {
                assert!(verdict.get("errorChunks").is_none(), "{verdict}");
                assert_eq!(ui_message_text(&verdict["message"]), answer.text);
            }
        }
    }
    answer
}

async fn sync_chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
) -> Answer {
    let response = send_chat(client, gateway, front, agent, message, conversation, false).await;
    let status = response.status();
    let body = response.text().await.expect("sync body");
    assert_eq!(status, 200, "{front} sync: {body}");
    let v: Value = serde_json::from_str(&body).expect("sync body is JSON");
    read_sync(front, &v)
}

// ------------------------------------------------------------------ every front × every API --

/// One front against a demo backend speaking `upstream`: two streamed turns of one
/// conversation, then two sync turns of another, with multi-byte text, a tool call and usage.
async fn front_to_upstream(front: Api, upstream: Api) {
    let backend = demo_agent(upstream).await;
    let id = agent_id(7);
    let agents = [agent(&id, &format!("http://{backend}"), upstream, "")];
    // Tools survive where both the backend's format and the client's carry them.
    let tools_in_stream = upstream != Api::Agents && front != Api::Agents;
    let tools_in_sync = upstream != Api::Agents && front == Api::Guayaba;
    // Usage = charged = credits_per_message (1) + what the demo reports (1, or 2 with a tool).
    let usage_in_sync = matches!(front, Api::Chatbase | Api::Guayaba);
    let c = client();

    // Streaming. (Its own gateway: on `agents` a chat without an id joins the default
    // conversation, which must start fresh here.)
    let gw = spawn_gateway(&config("", &agents)).await;
    let first = stream_chat(&c, &gw, front, &id, UTF8_MESSAGE, None).await;
    assert_eq!(first.text, echo(1, UTF8_MESSAGE), "{}", first.raw);
    assert!(
        first.errors.is_empty() && first.ended_properly,
        "{}",
        first.raw
    );
    assert_eq!(first.credits, Some(2.0), "{}", first.raw);
    assert!(first.tool_inputs.is_empty());
    let conversation = first
        .conversation
        .clone()
        .unwrap_or_else(|| panic!("no conversation id in {}", first.raw));

    let second = stream_chat(&c, &gw, front, &id, WEATHER_MESSAGE, Some(&conversation)).await;
    assert_eq!(
        second.text,
        format!("{WEATHER_TEXT} {}", echo(2, WEATHER_MESSAGE)),
        "{}",
        second.raw
    );
    assert!(
        second.errors.is_empty() && second.ended_properly,
        "{}",
        second.raw
    );
    assert_eq!(second.credits, Some(3.0), "{}", second.raw);
    assert_eq!(second.conversation.as_deref(), Some(conversation.as_str()));
    if tools_in_stream {
        assert_eq!(second.tool_inputs, ["get_weather"], "{}", second.raw);
        assert_eq!(second.tool_outputs.len(), 1, "{}", second.raw);
    } else {
        assert!(second.tool_inputs.is_empty(), "{}", second.raw);
    }
    gw.running.shutdown().await;

    // Sync.
    let gw = spawn_gateway(&config("", &agents)).await;
    let first = sync_chat(&c, &gw, front, &id, WEATHER_MESSAGE, None).await;
    assert_eq!(
        first.text,
        format!("{WEATHER_TEXT} {}", echo(1, WEATHER_MESSAGE)),
        "{}",
        first.raw
    );
    if usage_in_sync {
        assert_eq!(first.credits, Some(3.0), "{}", first.raw);
    }
    if tools_in_sync {
        assert_eq!(first.tool_inputs, ["get_weather"], "{}", first.raw);
        assert_eq!(first.tool_outputs.len(), 1, "{}", first.raw);
    }
    let conversation = first
        .conversation
        .clone()
        .unwrap_or_else(|| panic!("no conversation id in {}", first.raw));
    let second = sync_chat(&c, &gw, front, &id, UTF8_MESSAGE, Some(&conversation)).await;
    assert_eq!(second.text, echo(2, UTF8_MESSAGE), "{}", second.raw);
    assert_eq!(second.conversation.as_deref(), Some(conversation.as_str()));
    if usage_in_sync {
        assert_eq!(second.credits, Some(2.0), "{}", second.raw);
    }
    gw.running.shutdown().await;
}

macro_rules! pairs {
    ($($name:ident: $front:ident from $upstream:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            front_to_upstream(Api::$front, Api::$upstream).await;
        }
    )*};
}

pairs! {
    pharen_front_pharen_backend: Pharen from Pharen;
    pharen_front_chatbase_backend: Pharen from Chatbase;
    pharen_front_agents_backend: Pharen from Agents;
    pharen_front_guayaba_backend: Pharen from Guayaba;
    chatbase_front_pharen_backend: Chatbase from Pharen;
    chatbase_front_chatbase_backend: Chatbase from Chatbase;
    chatbase_front_agents_backend: Chatbase from Agents;
    chatbase_front_guayaba_backend: Chatbase from Guayaba;
    agents_front_pharen_backend: Agents from Pharen;
    agents_front_chatbase_backend: Agents from Chatbase;
    agents_front_agents_backend: Agents from Agents;
    agents_front_guayaba_backend: Agents from Guayaba;
    guayaba_front_pharen_backend: Guayaba from Pharen;
    guayaba_front_chatbase_backend: Guayaba from Chatbase;
    guayaba_front_agents_backend: Guayaba from Agents;
    guayaba_front_guayaba_backend: Guayaba from Guayaba;
}

// ------------------------------------------------------------------------ misbehaving backends --

/// An agent whose backend is `upstream` (a ui-message `chatbase` backend), with short timeouts.
fn mock_agent(id: &str, upstream: &str) -> String {
    agent(
        id,
        upstream,
        Api::Chatbase,
        "upstream_token = \"backend-secret\"\nconnect_timeout_ms = 500\nfirst_byte_timeout_ms = 500\nidle_timeout_ms = 500",
    )
}

async fn gateway_for(upstream: &str) -> (Gateway, String) {
    let id = agent_id(42);
    let gw = spawn_gateway(&config("", &[mock_agent(&id, upstream)])).await;
    (gw, id)
}

/// Every front, streamed and sync, gets `status` in its error body before any byte of answer.
async fn assert_every_front_fails_with(gw: &Gateway, id: &str, status: u16) -> Vec<Value> {
    let c = client();
    let mut bodies = Vec::new();
    for front in SEED_FRONTS {
        for stream in [true, false] {
            let r = send_chat(&c, gw, front, id, "hi", None, stream).await;
            bodies.push(assert_error(r, status).await);
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_refusing_connections_is_502() {
    let dead = MockUpstream::refusing();
    let (gw, id) = gateway_for(&format!("http://{dead}")).await;
    for body in assert_every_front_fails_with(&gw, &id, 502).await {
        assert_eq!(body["error"]["code"], "bad_gateway", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_never_answering_is_504() {
    let mock = MockUpstream::silent().spawn().await;
    let (gw, id) = gateway_for(&mock.url()).await;
    for body in assert_every_front_fails_with(&gw, &id, 504).await {
        assert_eq!(body["error"]["code"], "gateway_timeout", "{body}");
    }
    assert_eq!(mock.requests().len(), 8, "each chat reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_500_is_502() {
    let mock = MockUpstream::status(500).spawn().await;
    let (gw, id) = gateway_for(&mock.url()).await;
    for body in assert_every_front_fails_with(&gw, &id, 502).await {
        assert_eq!(body["error"]["details"]["upstream_status"], 500, "{body}");
    }
}

/// The three client formats, by the fronts that stream them.
const STREAM_FRONTS: [Api; 3] = [Api::Chatbase, Api::Agents, Api::Guayaba];

/// Streams from a backend that misbehaves after its first bytes: every client format ends
/// with an error event and its proper end, after the text that did arrive.
async fn assert_streams_end_with_error(mock: MockUpstream, text_before: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for front in STREAM_FRONTS {
        let mock = mock.clone().spawn().await;
        let (gw, id) = gateway_for(&mock.url()).await;
        let a = stream_chat(&client(), &gw, front, &id, "hi", None).await;
        assert_eq!(a.text, text_before, "{front}: {}", a.raw);
        assert_eq!(a.errors.len(), 1, "{front}: one error event: {}", a.raw);
        assert!(
            a.ended_properly,
            "{front}: proper end after the error: {}",
            a.raw
        );
        if front_format(front) == "ui-message" {
            if let Some(verdict) = check_ui_stream(&a.raw).await {
                assert!(verdict["errorChunks"].is_array(), "{verdict}");
            }
        }
        // A sync chat over the same backend fails as a whole, in the front's error body.
        let r = send_chat(&client(), &gw, front, &id, "hi", None, false).await;
        assert_error(r, 502).await;
        errors.extend(a.errors);
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_stream_ends_the_stream_with_an_error_event() {
    let mock = MockUpstream::sse(ui_fixture_prefix()).then_cut();
    assert_streams_end_with_error(mock, UI_FIXTURE_TEXT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_idle_mid_stream_ends_the_stream_with_an_error_event() {
    let mock = MockUpstream::sse(ui_fixture_prefix()).then_hang();
    let errors = assert_streams_end_with_error(mock, UI_FIXTURE_TEXT).await;
    assert!(
        errors.iter().all(|e| e.contains("sent nothing")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sending_garbage_ends_the_stream_with_an_error_event() {
    // Valid events, then bytes that are no JSON; the connection stays open, so the gateway
    // must notice the garbage itself rather than wait for an idle timeout.
    let mut bytes = ui_fixture_prefix().as_bytes().to_vec();
    bytes.extend_from_slice(b"data: \x00\xff\xfe}{ <html>oops\n\n");
    let errors = assert_streams_end_with_error(MockUpstream::garbage(bytes), UI_FIXTURE_TEXT).await;
    assert!(
        errors.iter().all(|e| !e.contains("sent nothing")),
        "{errors:?}"
    );

    // Garbage from the first byte: no event ever parses.
    let errors = assert_streams_end_with_error(
        MockUpstream::garbage(&b"\x89PNG\r\n\x1a\n\x00\x00garbage: yes\n\ndata: [1,2\n\n"[..]),
        "",
    )
    .await;
    assert!(
        errors.iter().all(|e| !e.contains("sent nothing")),
        "{errors:?}"
    );
}

/// The same answer framed as seed 002 shows it and as SSE allows: a BOM, `\r\n` line ends,
/// `event:` lines, comments, `id:`/`retry:` fields and a `data:` split over two lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_valid_sse_framing_from_the_backend_is_accepted() {
    let fixture = concat!(
        "\u{feff}: a comment first\r\n\r\n",
        "retry: 1000\r\nevent: message-start\r\ndata: {\"type\":\"message-start\",\"messageId\":\"m\"}\r\n\r\n",
        "id: 2\r\nevent: text-delta\r\ndata: {\"type\":\"text-delta\",\r\ndata: \"id\":\"t\",\"delta\":\"Hola é \"}\r\n\r\n",
        ":keep-alive\r\n\r\n",
        "event: text-delta\rdata: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"日本語 👋🏽\"}\r\r",
        "data: {\"type\":\"finish\",\"messageMetadata\":{\"conversationId\":\"c\",\"usage\":{\"credits\":1}}}\n\n",
        "data: [DONE]\n\n",
    );
    let wave = fixture.find("👋").unwrap();
    let crlf = fixture.find("\r\n").unwrap();
    for front in [Api::Chatbase, Api::Agents, Api::Guayaba] {
        let mock = MockUpstream::sse(fixture)
            .chunked_at(&[1, 2, crlf + 1, wave + 2])
            .spawn()
            .await;
        let (gw, id) = gateway_for(&mock.url()).await;
        let a = stream_chat(&client(), &gw, front, &id, "hi", None).await;
        assert_eq!(a.text, UI_FIXTURE_TEXT, "{front}: {}", a.raw);
        assert!(
            a.errors.is_empty() && a.ended_properly,
            "{front}: {}",
            a.raw
        );
        assert_eq!(a.credits, Some(2.0), "{front}: {}", a.raw);
    }
}

/// An event past the parser's bound (1 MiB) ends the stream with an error event instead of
/// growing the gateway's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_backend_event_ends_the_stream() {
    let mut fixture = ui_fixture_prefix().to_owned();
    fixture.push_str("data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"");
    fixture.push_str(&"y".repeat(3 << 20));
    fixture.push_str("\"}\n\n");
    let splits: Vec<usize> = (1..64).map(|i| i * 64 * 1024).collect();
    let errors = assert_streams_end_with_error(
        MockUpstream::sse(fixture).chunked_at(&splits).then_hang(),
        UI_FIXTURE_TEXT,
    )
    .await;
    assert!(
        errors.iter().all(|e| !e.contains("sent nothing")),
        "{errors:?}"
    );
}

/// A fixture split inside multi-byte characters and inside SSE lines reaches every client
/// format intact, with the backend's usage charged on top of the base cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_split_at_awkward_offsets_arrives_intact() {
    let f = UI_FIXTURE;
    let at = |needle: &str| f.find(needle).expect("needle in fixture");
    let e = at("é");
    let wave = at("👋");
    let splits = [
        2,                // inside `data:`
        at("\n\n") + 1,   // between the two line ends of an event
        e + 1,            // inside é
        wave + 1,         // inside 👋
        wave + 3,         //
        wave + 5,         // inside the skin-tone modifier
        at("[DONE]") + 3, // inside the end marker
    ];
    for front in [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba] {
        let mock = MockUpstream::sse(f).chunked_at(&splits).spawn().await;
        let (gw, id) = gateway_for(&mock.url()).await;
        let a = stream_chat(&client(), &gw, front, &id, "hi", None).await;
        assert_eq!(a.text, UI_FIXTURE_TEXT, "{front}: {}", a.raw);
        assert!(
            a.errors.is_empty() && a.ended_properly,
            "{front}: {}",
            a.raw
        );
        assert_eq!(a.credits, Some(2.0), "{front}: {}", a.raw);
        // The client sees agentgate's conversation id, never the backend's.
        let conversation = a.conversation.expect("conversation id");
        assert_ne!(conversation, "up-conv");

        // The next turn reaches the backend with the backend's own id.
        let b = stream_chat(&client(), &gw, front, &id, "again", Some(&conversation)).await;
        assert!(b.errors.is_empty(), "{}", b.raw);
        let requests = mock.requests();
        assert_eq!(requests.len(), 2);
        assert!(requests[0].json().get("conversationId").is_none());
        assert_eq!(requests[1].json()["conversationId"], "up-conv", "{front}");
    }
}

// --------------------------------------------------------------------------- backpressure --

/// What the backend may write to a client that reads nothing: the TCP buffers between it, the
/// gateway and the client (loopback autotuning takes each to a few MB), plus a few small
/// buffers. A gateway that kept reading would pass this many times over in the 2 s the test
/// waits: the backend writes hundreds of MB/s on loopback.
const STALLED_CLIENT_BOUND: u64 = 32 << 20;

/// A client that stops reading stops the backend (backpressure end to end); when it goes away,
/// the upstream request is cancelled: its connection closes (docs/behaviour.md, "Client gone").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_stops_the_backend_and_leaving_cancels_it() {
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .default_headers(auth_headers())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (front, c, version) in [
        (Api::Chatbase, client(), "HTTP/1.1"),
        (Api::Guayaba, client(), "HTTP/1.1"),
        // HTTP/2: flow control instead of TCP buffers; leaving is a stream reset, the
        // connection itself stays open.
        (Api::Chatbase, h2.clone(), "HTTP/2"),
    ] {
        let mock = MockUpstream::write_forever().spawn().await;
        let (gw, id) = gateway_for(&mock.url()).await;
        let response = send_chat(&c, &gw, front, &id, "hi", None, true).await;
        assert_eq!(response.status(), 200);
        // Headers only; then nothing is read for a while.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let written = mock.bytes_written();
        eprintln!("{front} over {version}: backend wrote {written} bytes to a stalled client");
        assert!(written > 0, "the backend started streaming");
        assert!(
            written < STALLED_CLIENT_BOUND,
            "{front} over {version}: backend wrote {written} bytes to a client that reads nothing"
        );
        assert!(
            !mock.peer_closed(),
            "the upstream is kept while the client is there"
        );

        drop(response);
        assert!(
            mock.wait_peer_closed().await,
            "{front} over {version}: the upstream connection closes once the client is gone"
        );
    }
}

// ------------------------------------------------------------------------------- validation --

/// The status a front gives a malformed or invalid body.
fn invalid_status(front: Api) -> u16 {
    if front == Api::Guayaba {
        422
    } else {
        400
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_validation_follows_each_api() {
    let backend = demo_agent(Api::Chatbase).await;
    let id = agent_id(1);
    let agents = [
        agent(&id, &format!("http://{backend}"), Api::Chatbase, ""),
        agent(
            "plain-agent",
            &format!("http://{backend}"),
            Api::Chatbase,
            "",
        ),
    ];
    let gw = spawn_gateway(&config("max_body_bytes = 4096", &agents)).await;
    let c = client();
    let post = |front: Api, agent: &str| c.post(gw.url(&chat_path(front, agent, false)));

    for front in SEED_FRONTS {
        let bad = invalid_status(front);
        // Body too large, declared by Content-Length or only found while reading (chunked).
        let big = json!({ "message": "x".repeat(5000) }).to_string();
        let r = post(front, &id).body(big.clone()).send().await.unwrap();
        assert_error(r, 413).await;
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            chat_path(front, &id, false),
            test_key().expose()
        );
        let mut raw = head.into_bytes();
        for piece in big.as_bytes().chunks(1000) {
            raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            raw.extend_from_slice(piece);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let answer = raw_exchange(gw.addr, &raw).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

        // Malformed JSON, a missing message, a message of the wrong type.
        for body in [
            r#"{"message": "unterminated"#,
            "[1,2]",
            "{}",
            r#"{"message": 42}"#,
        ] {
            let r = post(front, &id).body(body).send().await.unwrap();
            let e = assert_error(r, bad).await;
            assert!(!e["error"]["message"].as_str().unwrap().is_empty());
        }

        // `message` over 32,000 characters (a bigger body limit so the length rule decides).
        let gw_big = spawn_gateway(&config("", &agents)).await;
        let long = json!({ "message": "é".repeat(32_001) });
        let r = c
            .post(gw_big.url(&chat_path(front, &id, false)))
            .json(&long)
            .send()
            .await
            .unwrap();
        assert_error(r, bad).await;
        let at_limit = json!({ "message": "é".repeat(32_000) });
        let r = c
            .post(gw_big.url(&chat_path(front, &id, false)))
            .json(&at_limit)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{front}: 32,000 characters are allowed");

        // Unknown agent: 404 (guayaba's "Agent not found" too, seed 004).
        let r = post(front, "no-such-agent")
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_error(r, 404).await;

        // GET on a chat path.
        let r = c
            .get(gw.url(&chat_path(front, &id, false)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..])
        );
        assert_error(r, 405).await;
    }

    // chatbase `userId`: letters, digits, `.`, `_`, `-`, at most 128.
    for user_id in ["has space", "", "ü", &"a".repeat(129)] {
        let r = post(Api::Chatbase, &id)
            .json(&json!({ "message": "hi", "userId": user_id, "stream": false }))
            .send()
            .await
            .unwrap();
        assert_error(r, 400).await;
    }
    let r = post(Api::Chatbase, &id)
        .json(&json!({ "message": "hi", "userId": "user_1.a-b", "stream": false }))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["userId"], "user_1.a-b", "{v}");

    // guayaba `sessionKey` must start with `api:`.
    for key in ["web:1", "api:", "session"] {
        let r = post(Api::Guayaba, &id)
            .json(&json!({ "message": "hi", "sessionKey": key }))
            .send()
            .await
            .unwrap();
        assert_error(r, 422).await;
    }
    let r = post(Api::Guayaba, &id)
        .json(&json!({ "message": "hi", "sessionKey": "api:my-own" }))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sessionKey"], "api:my-own", "{v}");

    // pharen reaches only UUID agents; the same agent works on chatbase.
    let r = post(Api::Pharen, "plain-agent")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    let r = post(Api::Chatbase, "plain-agent")
        .json(&json!({"message": "hi", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A conversation id the gateway never gave out.
    for front in [Api::Pharen, Api::Chatbase, Api::Agents] {
        let r = post(front, &id)
            .json(&chat_body(
                front,
                "hi",
                Some("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
                false,
            ))
            .send()
            .await
            .unwrap();
        assert_error(r, 404).await;
    }
}

/// Writes `request` on a fresh connection and reads the answer until the server closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it has read everything; that is fine.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

// ---------------------------------------------------------------------------------- headers --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_to_the_backend_carry_ids_and_its_own_credential_only() {
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let (gw, id) = gateway_for(&mock.url()).await;
    let c = client();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (front, stream) in [(Api::Chatbase, true), (Api::Guayaba, false)] {
        let r = c
            .post(gw.url(&chat_path(front, &id, stream)))
            .header("x-request-id", format!("req-{front}"))
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=1")
            .header("cookie", "session=client")
            .header("x-custom", "client-only")
            .json(&chat_body(front, "hi", None, stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let expected_id = format!("req-{front}");
        assert_eq!(
            r.headers()["x-request-id"],
            expected_id.as_str(),
            "echoed back"
        );
        let _ = r.text().await.unwrap();
        let seen = mock.requests().pop().expect("the backend got the request");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, format!("/api/v2/agents/{id}/chat"));
        assert_eq!(seen.header("x-request-id"), Some(expected_id.as_str()));
        assert_eq!(seen.header("authorization"), Some("Bearer backend-secret"));
        assert_eq!(seen.header("traceparent"), Some(traceparent));
        assert_eq!(seen.header("tracestate"), Some("vendor=1"));
        assert_eq!(seen.header("accept"), Some("text/event-stream"));
        assert_eq!(seen.header("cookie"), None);
        assert_eq!(seen.header("x-custom"), None);
        let raw = format!("{:?}", seen.headers);
        assert!(
            !raw.contains(test_key().expose()),
            "the client's key reached the backend: {raw}"
        );
        // The backend is always asked for a stream, even for a sync chat.
        assert_eq!(seen.json()["stream"], true);
        assert_eq!(seen.json()["message"], "hi");
    }

    // Without an X-Request-Id the gateway makes one, sends it on and echoes it.
    let r = send_chat(&c, &gw, Api::Agents, &id, "hi", None, false).await;
    let made = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!made.is_empty());
    let _ = r.text().await.unwrap();
    let seen = mock.requests().pop().unwrap();
    assert_eq!(seen.header("x-request-id"), Some(made.as_str()));
    assert_eq!(seen.header("authorization"), Some("Bearer backend-secret"));

    // An error answer carries the request id too.
    let r = c
        .post(gw.url(&chat_path(Api::Agents, "nobody", false)))
        .header("x-request-id", "req-missing")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-missing");
    assert_error(r, 404).await;
}

// -------------------------------------------------------------------------- graceful shutdown --

/// A shutdown lets open streams run for the drain timeout, then ends each with an error event
/// in its own format and that format's end, not a cut; new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_with_a_terminal_event() {
    let backend = demo_agent_with_delay(Api::Chatbase, Duration::from_millis(100)).await;
    let id = agent_id(3);
    let agents = [agent(&id, &format!("http://{backend}"), Api::Chatbase, "")];
    let gw = spawn_gateway(&config("drain_timeout_s = 1", &agents)).await;
    // 60 words at 100 ms each: far longer than the drain timeout.
    let long_message = vec!["word"; 60].join(" ");
    let c = client();
    let mut open = Vec::new();
    for front in STREAM_FRONTS {
        let mut r = send_chat(&c, &gw, front, &id, &long_message, None, true).await;
        assert_eq!(r.status(), 200);
        let first = r.chunk().await.unwrap().expect("a first chunk");
        open.push((front, r, first));
    }
    let addr = gw.addr;
    let shutdown = tokio::spawn(gw.running.shutdown());
    for (front, r, first) in open {
        let body = rest_of_stream(r, first).await;
        let a = read_stream(front_format(front), &body);
        assert!(a.ended_properly, "{front}: {body}");
        assert_eq!(a.errors.len(), 1, "{front}: {body}");
        assert!(
            a.errors[0].contains("shutting down"),
            "{front}: {:?}",
            a.errors
        );
        let full = echo(1, &long_message);
        assert!(
            a.text.len() < full.len() && full.starts_with(&a.text),
            "{front}: {}",
            a.text
        );
        if front_format(front) == "ui-message" {
            if let Some(verdict) = check_ui_stream(&body).await {
                assert_eq!(verdict["ok"], true, "{verdict}");
            }
        }
    }
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown returns")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Streams whose backend has gone silent end at the drain timeout too, over HTTP/1.1 and over
/// h2 (where each stream is its own task): nothing but the cutoff itself wakes them then, and a
/// stream waiting for it asks for that wake-up once, not on every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_whose_backend_is_silent() {
    let mock = MockUpstream::sse(ui_fixture_prefix())
        .then_hang()
        .spawn()
        .await;
    let id = agent_id(42);
    // Idle for far longer than the drain timeout: only the cutoff can end these streams.
    let silent = agent(&id, &mock.url(), Api::Chatbase, "idle_timeout_ms = 600000");
    let gw = spawn_gateway(&config("drain_timeout_s = 1", &[silent])).await;
    let mut open = Vec::new();
    for (c, version) in [
        (client(), reqwest::Version::HTTP_11),
        (h2c_client(), reqwest::Version::HTTP_2),
    ] {
        let mut r = send_chat(&c, &gw, Api::Chatbase, &id, "hi", None, true).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let first = r.chunk().await.unwrap().expect("a first chunk");
        open.push((version, r, first));
    }
    let shutdown = tokio::spawn(gw.running.shutdown());
    for (version, r, first) in open {
        let body = rest_of_stream(r, first).await;
        let a = read_stream("ui-message", &body);
        assert!(a.ended_properly, "{version:?}: {body}");
        assert_eq!(a.text, UI_FIXTURE_TEXT, "{version:?}: {body}");
        assert_eq!(a.errors.len(), 1, "{version:?}: {body}");
        assert!(
            a.errors[0].contains("shutting down"),
            "{version:?}: {:?}",
            a.errors
        );
    }
    let stopped = tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown returns")
        .unwrap();
    // Ended by the cutoff itself, not by whatever tears the process down after it.
    assert_eq!(stopped.connections_left, 0);
}

/// A client speaking h2c with prior knowledge, with the test key.
fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(auth_headers())
        .http2_prior_knowledge()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// `first`, then the rest of the stream `r` to its end; a cut fails the test.
async fn rest_of_stream(mut r: reqwest::Response, first: bytes::Bytes) -> String {
    let mut body = first.to_vec();
    while let Some(chunk) = r.chunk().await.expect("the stream is ended, not cut") {
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).expect("UTF-8")
}

// -------------------------------------------------------------------------------- HTTP/2, TLS --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_streams() {
    let backend = demo_agent(Api::Guayaba).await;
    let id = agent_id(2);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{backend}"), Api::Guayaba, "")],
    ))
    .await;
    let c = h2c_client();
    for front in SEED_FRONTS {
        let r = send_chat(&c, &gw, front, &id, UTF8_MESSAGE, None, true).await;
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let a = read_stream(front_format(front), &r.text().await.unwrap());
        assert_eq!(a.text, echo(1, UTF8_MESSAGE), "{front}: {}", a.raw);
        assert!(a.ended_properly && a.errors.is_empty(), "{}", a.raw);
        // The next turn, sent the moment the first stream ended, continues the conversation.
        let conversation = a.conversation.expect("conversation id");
        let r = send_chat(&c, &gw, front, &id, "again", Some(&conversation), true).await;
        let b = read_stream(front_format(front), &r.text().await.unwrap());
        assert_eq!(b.text, echo(2, "again"), "{front}: {}", b.raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_negotiates_h2_by_alpn_and_serves_http1_too() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let backend = demo_agent(Api::Chatbase).await;
    let id = agent_id(4);
    let tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let gw = spawn_gateway(&config(
        &tls,
        &[agent(&id, &format!("http://{backend}"), Api::Chatbase, "")],
    ))
    .await;
    let url = format!(
        "https://localhost:{}{}",
        gw.addr.port(),
        chat_path(Api::Chatbase, &id, true)
    );
    let trusting = |http1: bool| {
        let b = reqwest::Client::builder()
            .no_proxy()
            .default_headers(auth_headers())
            .timeout(PATIENCE)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .resolve("localhost", gw.addr);
        if http1 { b.http1_only() } else { b }.build().unwrap()
    };
    for (http1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let r = trusting(http1)
            .post(&url)
            .json(&json!({ "message": UTF8_MESSAGE }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        let a = read_stream("ui-message", &r.text().await.unwrap());
        assert_eq!(a.text, echo(1, UTF8_MESSAGE), "{}", a.raw);
        assert!(a.ended_properly, "{}", a.raw);
    }
    // Plain HTTP on the TLS port gets nothing served.
    let plain = client()
        .post(format!(
            "http://{}{}",
            gw.addr,
            chat_path(Api::Chatbase, &id, true)
        ))
        .json(&json!({ "message": "hi" }))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

// ------------------------------------------------------------------------- the AI SDK client --

/// The chatbase front driven by the Vercel AI SDK's `DefaultChatTransport`, as `useChat` does:
/// body `{id, messages, trigger}`, the chat id naming the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_default_chat_transport_against_the_chatbase_front() {
    let dir = match node_harness() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("skip AI SDK client test: {why}");
            return;
        }
    };
    let backend = demo_agent(Api::Guayaba).await;
    let id = agent_id(5);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{backend}"), Api::Guayaba, "")],
    ))
    .await;
    let url = gw.url(&chat_path(Api::Chatbase, &id, true));
    let use_chat = |text: &'static str| {
        let (dir, url) = (dir.clone(), url.clone());
        async move {
            let out = tokio::process::Command::new("node")
                .arg(dir.join("use-chat.mjs"))
                .args([url.as_str(), test_key().expose(), text, "chat-from-the-sdk"])
                .env("USE_CHAT_TIMEOUT_MS", "15000")
                .output()
                .await
                .expect("node runs");
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
                panic!(
                    "use-chat.mjs: {e}: {line}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(v["ok"], true, "{v}");
            assert!(v.get("errorChunks").is_none(), "{v}");
            assert_eq!(v["message"]["role"], "assistant", "{v}");
            v
        }
    };
    let first = use_chat(UTF8_MESSAGE).await;
    assert_eq!(
        ui_message_text(&first["message"]),
        echo(1, UTF8_MESSAGE),
        "{first}"
    );
    assert_eq!(first["headers"]["x-vercel-ai-ui-message-stream"], "v1");

    let second = use_chat(WEATHER_MESSAGE).await;
    assert_eq!(
        ui_message_text(&second["message"]),
        format!("{WEATHER_TEXT} {}", echo(2, WEATHER_MESSAGE)),
        "{second}"
    );
    let parts = second["message"]["parts"].as_array().unwrap();
    let tool = parts
        .iter()
        .find(|p| p["type"] == "tool-get_weather")
        .unwrap_or_else(|| panic!("a tool part: {second}"));
    assert_eq!(tool["state"], "output-available", "{tool}");
    assert_eq!(tool["input"]["city"], "Paris", "{tool}");
    let finish = second["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "finish")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        finish["messageMetadata"]["conversationId"], "chat-from-the-sdk",
        "{finish}"
    );
    assert_eq!(finish["messageMetadata"]["usage"]["credits"], 3, "{finish}");
}

// ------------------------------------------------------------------ agents: default conversation --

/// On the `agents` front a chat without `conversation_id` goes to the account's default
/// conversation with that agent (SPEC §7), whatever API the backend speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_front_without_conversation_id_continues_the_default_conversation() {
    let mut agents = Vec::new();
    for (n, upstream) in Api::upstreams().enumerate() {
        let backend = demo_agent(upstream).await;
        agents.push(agent(
            &agent_id(n as u32 + 10),
            &format!("http://{backend}"),
            upstream,
            "",
        ));
    }
    let gw = spawn_gateway(&config("", &agents)).await;
    let c = client();
    for n in 0..4 {
        let id = agent_id(n + 10);
        let a = sync_chat(&c, &gw, Api::Agents, &id, "one", None).await;
        assert_eq!(a.text, echo(1, "one"));
        assert_eq!(a.conversation.as_deref(), Some("default"));
        let b = stream_chat(&c, &gw, Api::Agents, &id, "two", None).await;
        assert_eq!(b.text, echo(2, "two"), "{}", b.raw);
        assert_eq!(b.conversation.as_deref(), Some("default"));
        let d = sync_chat(&c, &gw, Api::Agents, &id, "three", Some("default")).await;
        assert_eq!(d.text, echo(3, "three"));
        // Other fronts still start a new conversation without an id.
        let e = sync_chat(&c, &gw, Api::Chatbase, &id, "elsewhere", None).await;
        assert_eq!(e.text, echo(1, "elsewhere"));
    }
}

/// Events that reach the gateway together leave it together: a backend's answer read in one go
/// is written to the client in a few writes, not one per event (each write is a syscall on
/// both sides; see docs/benchmarks.md). Counted as HTTP chunks on a raw connection. How many
/// events one poll finds ready depends on when the backend connection's task last ran, which a
/// loaded machine moves: each front gets three tries, and the fewest writes must be few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_arrive_together_are_written_together() {
    let mut fixture = String::from(
        "data: {\"type\":\"start\"}\n\ndata: {\"type\":\"text-start\",\"id\":\"t\"}\n\n",
    );
    for i in 0..50 {
        fixture.push_str(&format!(
            "data: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"word{i} \"}}\n\n"
        ));
    }
    fixture.push_str("data: {\"type\":\"text-end\",\"id\":\"t\"}\n\ndata: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n");
    let events = fixture.matches("data: ").count();
    for front in STREAM_FRONTS {
        let mut fewest = usize::MAX;
        for _ in 0..3 {
            fewest = fewest.min(writes_of_one_answer(front, &fixture).await);
            if fewest * 4 <= events {
                break;
            }
        }
        assert!(
            fewest * 4 <= events,
            "{front}: {events} upstream events that arrived at once left in {fewest} writes"
        );
    }
}

/// One streamed answer of `fixture` (its events in one write from the backend) on `front`:
/// checked, and the number of HTTP chunks the gateway wrote it in.
async fn writes_of_one_answer(front: Api, fixture: &str) -> usize {
    let mock = MockUpstream::sse(fixture.to_owned())
        .chunk_per_event_in_one_write()
        .spawn()
        .await;
    let (gw, id) = gateway_for(&mock.url()).await;
    let body = chat_body(front, "hi", None, true).to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\naccept: text/event-stream\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        chat_path(front, &id, true),
        test_key().expose(),
        body.len()
    );
    let answer = raw_exchange(gw.addr, request.as_bytes()).await;
    let (head, mut rest) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut chunks = 0;
    let mut sse = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        if size == 0 {
            break;
        }
        chunks += 1;
        sse.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    let a = read_stream(front_format(front), &sse);
    assert!(a.ended_properly && a.errors.is_empty(), "{front}: {sse}");
    assert!(a.text.starts_with("word0 word1 ") && a.text.ends_with("word49 "));
    chunks
}
