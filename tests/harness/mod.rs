//! Test harness for the gateway over real loopback sockets: a gateway on port 0, demo agents,
//! a raw-TCP mock upstream that can misbehave on purpose, and clients that speak each front
//! and read each stream format back (with a small SSE reader of their own, independent of
//! the gateway's).
#![allow(dead_code)] // each test binary uses part of the harness

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentgate::auth::{to_hex_hash, NewKeySpec, Scopes, SecretKey};
use agentgate::config::Config;
use agentgate::demo::DemoAgent;
use agentgate::fronts::Api;
use agentgate::server::{self, Running};
use agentgate::store::{now_ms, KeyRecord, ReservationRecord, Store};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod ag_ui;
#[path = "../common/node.rs"]
mod node;
pub mod process;

#[allow(unused_imports)] // not every test binary uses the AG-UI parties
pub use ag_ui::*;

pub const LOOPBACK: &str = "127.0.0.1:0";

/// A bound on every wait in these tests, so a broken gateway fails a test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------- gateway --

/// A running gateway and the address of its main listener. Its store is a SQLite file in a
/// temporary directory holding [`test_key`] (a master key of account [`TEST_ACCOUNT`]) with
/// ample credits.
pub struct Gateway {
    pub addr: SocketAddr,
    pub running: Running,
    pub dir: tempfile::TempDir,
}

/// The account of [`test_key`].
pub const TEST_ACCOUNT: &str = "test";

/// One master key per test binary, installed in every test gateway's store.
pub fn test_key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

/// `Authorization: Bearer <test key>`, for clients built by hand.
pub fn auth_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {}", test_key().expose());
    h.insert(
        reqwest::header::AUTHORIZATION,
        value.parse().expect("a key is a valid header value"),
    );
    h
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Parses `config_toml` (which should listen on port 0) and starts a gateway with it.
pub async fn spawn_gateway(config_toml: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_toml = if config_toml.contains("[store]") {
        config_toml.to_owned()
    } else {
        let db = dir.path().join("agentgate.db");
        format!(
            "{config_toml}\n[store]\nurl = \"sqlite://{}\"\n",
            db.display()
        )
    };
    let config = Config::parse(&config_toml, "test.toml")
        .unwrap_or_else(|e| panic!("test config refused: {e}\n{config_toml}"));
    let running = server::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
    install_test_key(&running).await;
    let addr = running.main_addr(&config);
    Gateway { addr, running, dir }
}

/// Stores [`test_key`] as a master key of [`TEST_ACCOUNT`] and grants it ample credits.
pub async fn install_test_key(running: &Running) {
    let key = test_key();
    let policy = &running.policy;
    policy
        .store
        .insert_key(KeyRecord {
            public_id: key.public_id().to_owned(),
            hash: to_hex_hash(key),
            account: TEST_ACCOUNT.into(),
            kind: "master".into(),
            scopes: Scopes::ALL.to_string(),
            agents: None,
            created_at: now_ms(),
            expires_at: None,
            revoked_at: None,
            rate_per_second: None,
            rate_burst: None,
            max_streams: None,
        })
        .await
        .expect("test key stored");
    policy
        .ledger
        .grant(TEST_ACCOUNT, 1e9, Some("tests"))
        .await
        .expect("test credits granted");
}

/// Issues a key on a running gateway's store (as `agentgate keys create` would).
pub async fn create_key(running: &Running, spec: NewKeySpec) -> SecretKey {
    agentgate::auth::create_key(&running.policy.store, spec)
        .await
        .expect("key created")
        .0
}

/// An account's committed balance, after every settlement enqueued so far is durable.
pub async fn balance(running: &Running, account: &str) -> f64 {
    let ledger = &running.policy.ledger;
    ledger.flush().await.expect("ledger flushed");
    ledger.balance(account).await.expect("balance read")
}

/// The APIs of the fronts [`FRONTS`] mounts (the four seed APIs; the ag-ui front is mounted
/// by the tests that use it).
pub const SEED_FRONTS: [Api; 4] = [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba];

/// The four fronts on the main listener, each under `/<api name>`.
pub const FRONTS: &str = r#"
[[front]]
api = "pharen"
prefix = "/pharen"

[[front]]
api = "chatbase"
prefix = "/chatbase"

[[front]]
api = "agents"
prefix = "/agents"

[[front]]
api = "guayaba"
prefix = "/guayaba"
"#;

/// A whole config: `[server]` on port 0 plus `server_extra` lines, the four fronts, `agents`.
pub fn config(server_extra: &str, agents: &[String]) -> String {
    format!(
        "[server]\nlisten = \"{LOOPBACK}\"\n{server_extra}\n{FRONTS}\n{}",
        agents.join("\n")
    )
}

/// One `[[agent]]` table; `extra` holds more `key = value` lines.
pub fn agent(id: &str, upstream: &str, upstream_api: Api, extra: &str) -> String {
    format!(
        "[[agent]]\nid = \"{id}\"\nupstream = \"{upstream}\"\nupstream_api = \"{upstream_api}\"\n{extra}\n"
    )
}

/// A UUID agent id (so the `pharen` front reaches it too).
pub fn agent_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Starts an in-process echo backend speaking `api` with no pause between words.
pub async fn demo_agent(api: Api) -> SocketAddr {
    demo_agent_with_delay(api, Duration::ZERO).await
}

pub async fn demo_agent_with_delay(api: Api, delay: Duration) -> SocketAddr {
    DemoAgent::new(api, delay)
        .spawn(LOOPBACK.parse().expect("loopback address"))
        .await
        .expect("demo agent binds")
}

/// A client that never goes through a proxy from the environment.
pub fn client() -> reqwest::Client {
    client_with(test_key())
}

/// A client sending `key` (as `Authorization: Bearer …`) with every request.
pub fn client_with(key: &SecretKey) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.expose())
            .parse()
            .expect("a key is a valid header value"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(h)
        .timeout(PATIENCE)
        .build()
        .expect("reqwest client")
}

// ----------------------------------------------------------------------------- front clients --

/// The chat path of `front` (mounted under `/<api>`) for `agent`.
pub fn chat_path(front: Api, agent: &str, stream: bool) -> String {
    match front {
        Api::Pharen => format!("/pharen/api/agents/{agent}/chat/"),
        Api::Chatbase => format!("/chatbase/api/v2/agents/{agent}/chat"),
        Api::Agents if stream => format!("/agents/api/agents/{agent}/chat/stream"),
        Api::Agents => format!("/agents/api/agents/{agent}/chat"),
        Api::Guayaba => format!("/guayaba/api/v1/agents/{agent}/chat"),
        Api::AgUi => format!("/ag-ui/api/agents/{agent}/run"),
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
            unreachable!("{front}: not a front with agent paths")
        }
    }
}

/// The field a front continues a conversation with.
pub fn conversation_field(front: Api) -> &'static str {
    match front {
        Api::Pharen => "conversation_uuid",
        Api::Chatbase => "conversationId",
        Api::Agents => "conversation_id",
        Api::Guayaba => "sessionKey",
        Api::AgUi => "threadId",
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
            unreachable!("{front}: not a front with agent paths")
        }
    }
}

/// A chat body in `front`'s own shape, asking for a stream or not as that API does.
pub fn chat_body(front: Api, message: &str, conversation: Option<&str>, stream: bool) -> Value {
    if front == Api::AgUi {
        // AG-UI's `RunAgentInput`: always streams; `threadId` is the conversation.
        let mut body = json!({
            "runId": format!("run-{}", uuid::Uuid::new_v4()),
            "messages": [{ "id": "m1", "role": "user", "content": message }],
            "tools": [], "context": [], "state": {}, "forwardedProps": {},
        });
        if let Some(c) = conversation {
            body["threadId"] = json!(c);
        }
        return body;
    }
    let mut body = json!({ "message": message });
    match front {
        // pharen streams on `Accept`, agents on its `/chat/stream` path.
        Api::Pharen | Api::Agents => {}
        Api::Chatbase | Api::Guayaba => body["stream"] = json!(stream),
        Api::AgUi => {}
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
            unreachable!("{front}: not a front with agent paths")
        }
    }
    if let Some(c) = conversation {
        // pharen takes `conversation_uuid` or `conversation_id`: streams use one, sync the other.
        let field = match front {
            Api::Pharen if !stream => "conversation_id",
            _ => conversation_field(front),
        };
        body[field] = json!(c);
    }
    body
}

/// Sends one chat to `front` and returns the response (any status).
pub async fn send_chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
    stream: bool,
) -> reqwest::Response {
    let mut req = client
        .post(gateway.url(&chat_path(front, agent, stream)))
        .json(&chat_body(front, message, conversation, stream));
    if stream {
        req = req.header("accept", "text/event-stream");
    }
    req.send().await.expect("the gateway answers")
}

/// The stream format a front answers in (the fronts here keep their defaults).
pub fn front_format(front: Api) -> &'static str {
    match front {
        Api::Pharen | Api::Chatbase => "ui-message",
        Api::Agents => "text-done",
        Api::Guayaba => "session-delta",
        Api::AgUi => "ag-ui",
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
            unreachable!("{front}: not a front with agent paths")
        }
    }
}

// ---------------------------------------------------------------------------- reading answers --

/// One server-sent event as read back by the test's own reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    pub fn ty(&self) -> Option<String> {
        self.json()?.get("type")?.as_str().map(str::to_owned)
    }
}

/// Splits an SSE body written with `\n` line ends (as the gateway writes) into events.
pub fn read_sse(body: &str) -> Vec<Sse> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim_start().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                } else if !line.starts_with(':') {
                    panic!("unexpected SSE line {line:?} in\n{body}");
                }
            }
            Sse {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// An answer as the client saw it, whatever the front.
#[derive(Debug, Default, Clone)]
pub struct Answer {
    pub text: String,
    /// Tool names whose input the client saw.
    pub tool_inputs: Vec<String>,
    /// Tool call ids whose output the client saw.
    pub tool_outputs: Vec<String>,
    pub credits: Option<f64>,
    /// The conversation id the answer gave, by the front's own name for it.
    pub conversation: Option<String>,
    /// Error events (their message).
    pub errors: Vec<String>,
    /// The stream ended as its format must (`[DONE]`, `done`, …) after a finish or an error.
    pub ended_properly: bool,
    pub raw: String,
}

/// Reads a streamed body in `format` into an [`Answer`].
pub fn read_stream(format: &str, body: &str) -> Answer {
    let events = read_sse(body);
    let mut a = Answer {
        raw: body.to_owned(),
        ..Default::default()
    };
    let ty = |i: usize| events.get(i).and_then(Sse::ty);
    let n = events.len();
    match format {
        "ui-message" => {
            for e in &events {
                if e.data == "[DONE]" {
                    continue;
                }
                let v = e.json().unwrap_or_else(|| panic!("not JSON: {e:?}"));
                match v["type"].as_str().unwrap_or_default() {
                    "text-delta" => a.text.push_str(v["delta"].as_str().unwrap_or_default()),
                    "tool-input-available" => a
                        .tool_inputs
                        .push(v["toolName"].as_str().unwrap_or_default().to_owned()),
                    "tool-output-available" => a
                        .tool_outputs
                        .push(v["toolCallId"].as_str().unwrap_or_default().to_owned()),
                    "finish" => {
                        let meta = &v["messageMetadata"];
                        a.credits = meta["usage"]["credits"].as_f64();
                        a.conversation = meta["conversationId"]
                            .as_str()
                            .or(meta["conversation_id"].as_str())
                            .map(str::to_owned);
                    }
                    "error" => a
                        .errors
                        .push(v["errorText"].as_str().unwrap_or_default().to_owned()),
                    _ => {}
                }
            }
            a.ended_properly = n >= 2
                && events[n - 1].data == "[DONE]"
                && matches!(ty(n - 2).as_deref(), Some("finish" | "error" | "abort"));
        }
        "session-delta" => {
            for e in &events {
                let v = e.json().unwrap_or_else(|| panic!("not JSON: {e:?}"));
                let t = v["type"].as_str().unwrap_or_default().to_owned();
                assert_eq!(
                    e.event.as_deref(),
                    Some(t.as_str()),
                    "event line names the type"
                );
                match t.as_str() {
                    "session" => {
                        a.conversation = v["sessionKey"].as_str().map(str::to_owned);
                    }
                    "delta" => {
                        let text = v["text"].as_str().unwrap_or_default();
                        assert!(
                            text.starts_with(&a.text),
                            "a delta must carry the accumulated text: {text:?} after {:?}",
                            a.text
                        );
                        a.text = text.to_owned();
                    }
                    "tool" => match v["phase"].as_str() {
                        Some("start") => a
                            .tool_inputs
                            .push(v["name"].as_str().unwrap_or_default().to_owned()),
                        Some("result") => a
                            .tool_outputs
                            .push(v["toolCallId"].as_str().unwrap_or_default().to_owned()),
                        other => panic!("tool phase {other:?}"),
                    },
                    "done" => a.credits = v["usage"]["credits"].as_f64(),
                    "error" => a
                        .errors
                        .push(v["message"].as_str().unwrap_or_default().to_owned()),
                    other => panic!("unexpected session-delta event {other}"),
                }
            }
            a.ended_properly = ty(0).as_deref() == Some("session")
                && n >= 2
                && ty(n - 1).as_deref() == Some("done");
        }
        "text-done" => {
            for e in &events {
                if e.data == "[DONE]" {
                    continue;
                }
                let v = e.json().unwrap_or_else(|| panic!("not JSON: {e:?}"));
                match v["type"].as_str().unwrap_or_default() {
                    "text" => a.text.push_str(v["content"].as_str().unwrap_or_default()),
                    "done" => {
                        a.credits = v["usage"]["credits"].as_f64();
                        a.conversation = v["conversation_id"].as_str().map(str::to_owned);
                    }
                    "error" => a
                        .errors
                        .push(v["content"].as_str().unwrap_or_default().to_owned()),
                    other => panic!("unexpected text-done event {other}"),
                }
            }
            a.ended_properly =
                n >= 2 && events[n - 1].data == "[DONE]" && ty(n - 2).as_deref() == Some("done");
        }
        "ag-ui" => {
            for e in &events {
                let v = e.json().unwrap_or_else(|| panic!("not JSON: {e:?}"));
                match v["type"].as_str().unwrap_or_default() {
                    "RUN_STARTED" => {
                        a.conversation = v["threadId"].as_str().map(str::to_owned);
                    }
                    "TEXT_MESSAGE_CONTENT" | "TEXT_MESSAGE_CHUNK" => {
                        a.text.push_str(v["delta"].as_str().unwrap_or_default())
                    }
                    "TOOL_CALL_START" => a
                        .tool_inputs
                        .push(v["toolCallName"].as_str().unwrap_or_default().to_owned()),
                    "TOOL_CALL_RESULT" => a
                        .tool_outputs
                        .push(v["toolCallId"].as_str().unwrap_or_default().to_owned()),
                    "RUN_FINISHED" => {
                        a.credits = v["result"]["usage"]["credits"].as_f64();
                    }
                    "RUN_ERROR" => a
                        .errors
                        .push(v["message"].as_str().unwrap_or_default().to_owned()),
                    _ => {}
                }
            }
            a.ended_properly = matches!(
                ty(n.wrapping_sub(1)).as_deref(),
                Some("RUN_FINISHED" | "RUN_ERROR")
            ) && ty(0).as_deref() == Some("RUN_STARTED");
        }
        other => panic!("unknown format {other}"),
    }
    a
}

/// Reads a front's sync JSON body into an [`Answer`].
pub fn read_sync(front: Api, body: &Value) -> Answer {
    let s = |k: &str| body[k].as_str().map(str::to_owned);
    let mut a = Answer {
        raw: body.to_string(),
        ended_properly: true,
        ..Default::default()
    };
    match front {
        Api::Pharen => {
            a.text = s("message").unwrap_or_default();
            a.conversation = s("conversation_id");
            assert!(s("run_id").is_some(), "pharen body has run_id: {body}");
        }
        Api::Chatbase => {
            a.text = s("text").unwrap_or_default();
            a.conversation = s("conversationId");
            a.credits = body["usage"]["credits"].as_f64();
            assert!(
                s("messageId").is_some(),
                "chatbase body has messageId: {body}"
            );
            assert!(s("userMessageId").is_some(), "{body}");
        }
        // ag-ui always streams; its sync body (for a backend) is agents-style.
        Api::Agents | Api::AgUi => {
            a.text = s("response").unwrap_or_default();
            a.conversation = s("conversation_id");
            assert!(
                s("agent_id").is_some() && s("agent_name").is_some(),
                "{body}"
            );
        }
        Api::Guayaba => {
            a.text = s("response").unwrap_or_default();
            a.conversation = s("sessionKey");
            a.credits = body["usage"]["credits"].as_f64();
            for call in body["toolCalls"].as_array().expect("toolCalls is a list") {
                a.tool_inputs
                    .push(call["name"].as_str().unwrap_or_default().to_owned());
                if !call["output"].is_null() {
                    a.tool_outputs
                        .push(call["toolCallId"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
            unreachable!("{front}: not a front with agent paths")
        }
    }
    a
}

/// Asserts an error response: `status`, JSON `{"error":{"code","message","details"}}`.
pub async fn assert_error(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body = response.text().await.expect("error body");
    assert_eq!(got, status, "status; body: {body}");
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("error body not JSON ({e}): {body}"));
    let e = &v["error"];
    assert!(
        e["code"].is_string() && e["message"].is_string() && e["details"].is_object(),
        "error body shape: {body}"
    );
    v
}

// ---------------------------------------------------------------------------- AI SDK harness --

#[allow(unused_imports)]
pub use node::check_all;
/// Where the Node harness lives, installed on first use; why not when it cannot run here
/// (printed as a skip; a failure under `CI=true`).
pub use node::node_harness;

/// Runs `check-ui-stream.mjs` on a ui-message body: the AI SDK's own parser must accept it.
/// Returns its JSON verdict, or `None` (after printing why) when the harness cannot run.
pub async fn check_ui_stream(body: &str) -> Option<Value> {
    let dir = match node_harness() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("skip AI SDK stream check: {why}");
            return None;
        }
    };
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("check-ui-stream.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body.as_bytes()).await.expect("write body");
    drop(stdin);
    let out = child.wait_with_output().await.expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout);
    let verdict: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "check-ui-stream.mjs printed no JSON ({e}): {line}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some(verdict)
}

// ----------------------------------------------------------------------------- mock upstream --

/// What the mock does after reading a request.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Reads the request and never answers.
    Silent,
    /// Answers with this status and a small JSON body.
    Status(u16),
    /// Answers 200 `text/event-stream`, chunked, with these bytes.
    Sse(Vec<u8>),
    /// Answers 200 `text/event-stream` and writes SSE events as fast as the peer takes them.
    Forever,
}

/// How an `Sse` answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The terminating chunk, then close.
    Complete,
    /// Close the socket without the terminating chunk: the backend died mid-answer.
    Cut,
    /// Keep the socket open and write nothing more: the backend went idle.
    Hang,
}

/// A backend on raw tokio TCP, so it can misbehave in ways a real HTTP server would not.
///
/// `MockUpstream::sse(fixture).chunked_at(&[3, 17]).then_cut().spawn().await`
#[derive(Debug, Clone)]
pub struct MockUpstream {
    behaviour: Behaviour,
    splits: Vec<usize>,
    end: End,
    /// Each event its own HTTP chunk, all written at once.
    chunk_per_event: bool,
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("upstream request body is JSON")
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    bytes_written: AtomicU64,
    connections: AtomicUsize,
    closed: AtomicUsize,
    peer_closed: AtomicBool,
}

/// A running mock upstream.
#[derive(Debug, Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MockUpstream {
    fn new(behaviour: Behaviour) -> Self {
        MockUpstream {
            behaviour,
            splits: Vec::new(),
            end: End::Complete,
            chunk_per_event: false,
        }
    }

    /// A port nothing listens on: bound, then released.
    pub fn refusing() -> SocketAddr {
        let listener = std::net::TcpListener::bind(LOOPBACK).expect("bind");
        listener.local_addr().expect("addr")
    }

    /// Accepts, reads the request, never answers.
    pub fn silent() -> Self {
        Self::new(Behaviour::Silent)
    }

    /// Answers `status` with a JSON error body.
    pub fn status(status: u16) -> Self {
        Self::new(Behaviour::Status(status))
    }

    /// Answers 200 with `body` as a chunked `text/event-stream`.
    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self::new(Behaviour::Sse(body.into()))
    }

    /// Answers 200 `text/event-stream` and then sends `bytes`, which are not SSE at all.
    pub fn garbage(bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(Behaviour::Sse(bytes.into())).then_hang()
    }

    /// Streams ui-message text deltas for as long as the peer reads them, counting bytes.
    pub fn write_forever() -> Self {
        Self::new(Behaviour::Forever)
    }

    /// Writes the body in pieces cut at these byte offsets, each its own chunk and write.
    pub fn chunked_at(mut self, offsets: &[usize]) -> Self {
        self.splits = offsets.to_vec();
        self
    }

    /// Frames each event as its own HTTP chunk, as streaming servers do, but writes them all in
    /// one go: the gateway reads many events at once.
    pub fn chunk_per_event_in_one_write(mut self) -> Self {
        self.chunk_per_event = true;
        self
    }

    /// Closes the connection after the body, without ending the chunked message.
    pub fn then_cut(mut self) -> Self {
        self.end = End::Cut;
        self
    }

    /// Keeps the connection open after the body and sends nothing more.
    pub fn then_hang(mut self) -> Self {
        self.end = End::Hang;
        self
    }

    pub async fn spawn(self) -> Mock {
        let listener = TcpListener::bind(LOOPBACK).await.expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let mock = Mock {
            addr,
            state: state.clone(),
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (this, state) = (self.clone(), state.clone());
                tokio::spawn(async move {
                    this.serve(socket, &state).await;
                    state.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        mock
    }

    async fn serve(&self, mut socket: TcpStream, state: &State) {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        state.requests.lock().expect("lock").push(request);
        match &self.behaviour {
            Behaviour::Silent => wait_for_peer_close(&mut socket).await,
            Behaviour::Status(status) => {
                let body = format!(r#"{{"error":"mock says {status}"}}"#);
                let head = format!(
                    "HTTP/1.1 {status} Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
            }
            Behaviour::Sse(body) => {
                if write_sse_head(&mut socket).await.is_err() {
                    return;
                }
                if self.chunk_per_event {
                    let mut framed = Vec::new();
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let end = rest
                            .windows(2)
                            .position(|w| w == b"\n\n")
                            .map_or(rest.len(), |i| i + 2);
                        let (event, tail) = rest.split_at(end);
                        framed.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
                        framed.extend_from_slice(event);
                        framed.extend_from_slice(b"\r\n");
                        rest = tail;
                    }
                    framed.extend_from_slice(b"0\r\n\r\n");
                    let _ = socket.write_all(&framed).await;
                    state
                        .bytes_written
                        .fetch_add(body.len() as u64, Ordering::SeqCst);
                    wait_for_peer_close(&mut socket).await;
                    return;
                }
                let mut start = 0;
                let mut cuts = self.splits.clone();
                cuts.retain(|&c| c > 0 && c < body.len());
                cuts.sort_unstable();
                cuts.dedup();
                cuts.push(body.len());
                for cut in cuts {
                    let piece = &body[start..cut];
                    start = cut;
                    if write_chunk(&mut socket, piece).await.is_err() {
                        return;
                    }
                    state
                        .bytes_written
                        .fetch_add(piece.len() as u64, Ordering::SeqCst);
                    // Give the gateway a separate read for each piece.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                match self.end {
                    End::Complete => {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                        let _ = socket.flush().await;
                    }
                    End::Cut => {}
                    End::Hang => wait_for_peer_close(&mut socket).await,
                }
            }
            Behaviour::Forever => {
                if write_sse_head(&mut socket).await.is_err() {
                    return;
                }
                write_forever(socket, state).await;
            }
        }
    }
}

impl Mock {
    /// The base URL an agent's `upstream` points at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Body bytes the mock managed to hand to its socket.
    pub fn bytes_written(&self) -> u64 {
        self.state.bytes_written.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// True once the gateway closed a connection the mock was writing to.
    pub fn peer_closed(&self) -> bool {
        self.state.peer_closed.load(Ordering::SeqCst)
    }

    /// Waits (up to [`PATIENCE`]) for the gateway to close the connection; false if it never did.
    pub async fn wait_peer_closed(&self) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if self.peer_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

pub async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

async fn wait_for_peer_close(socket: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = socket.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn write_sse_head(socket: &mut TcpStream) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .await
}

async fn write_chunk(socket: &mut TcpStream, piece: &[u8]) -> std::io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
    framed.extend_from_slice(piece);
    framed.extend_from_slice(b"\r\n");
    socket.write_all(&framed).await?;
    socket.flush().await
}

/// ui-message: a start, then 4 KiB text deltas until the peer goes away.
async fn write_forever(socket: TcpStream, state: &State) {
    let (mut read, mut write) = socket.into_split();
    let prefix = b"data: {\"type\":\"start\"}\n\ndata: {\"type\":\"text-start\",\"id\":\"t\"}\n\n";
    let delta = format!(
        "data: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"{}\"}}\n\n",
        "x".repeat(4096)
    );
    let mut frame = format!("{:x}\r\n", delta.len()).into_bytes();
    frame.extend_from_slice(delta.as_bytes());
    frame.extend_from_slice(b"\r\n");
    let writer = async {
        if write_chunk_raw(&mut write, prefix).await.is_err() {
            return;
        }
        while write.write_all(&frame).await.is_ok() {
            state
                .bytes_written
                .fetch_add(frame.len() as u64, Ordering::SeqCst);
        }
    };
    let reader = async {
        let mut sink = [0u8; 1024];
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    // Either side ends when the gateway drops the connection: a failed write or an EOF.
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    state.peer_closed.store(true, Ordering::SeqCst);
}

async fn write_chunk_raw(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    piece: &[u8],
) -> std::io::Result<()> {
    let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
    framed.extend_from_slice(piece);
    framed.extend_from_slice(b"\r\n");
    write.write_all(&framed).await
}

// --------------------------------------------------------------------------------- fixtures --

/// A complete ui-message answer (as a chatbase backend streams it) with multi-byte text.
pub const UI_FIXTURE: &str = concat!(
    "data: {\"type\":\"start\",\"messageId\":\"up-msg\"}\n\n",
    "data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n",
    "data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"Hola é \"}\n\n",
    "data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"日本語 👋🏽\"}\n\n",
    "data: {\"type\":\"text-end\",\"id\":\"t1\"}\n\n",
    "data: {\"type\":\"finish\",\"messageMetadata\":{\"conversationId\":\"up-conv\",\"usage\":{\"credits\":1}}}\n\n",
    "data: [DONE]\n\n",
);

/// The text of [`UI_FIXTURE`].
pub const UI_FIXTURE_TEXT: &str = "Hola é 日本語 👋🏽";

/// The first events of [`UI_FIXTURE`]: a valid prefix that stops before the finish.
pub fn ui_fixture_prefix() -> &'static str {
    let end = UI_FIXTURE
        .find("data: {\"type\":\"text-end\"")
        .expect("fixture");
    &UI_FIXTURE[..end]
}

/// agentgate's id of a request it answered (the client sent none), which is also the id of
/// its reservation and the `x-request-id` its backend saw.
pub fn request_id_of(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned()
}

/// Waits (up to [`PATIENCE`]) until the reservation of `request_id` is settled, and returns it.
pub async fn settled(store: &Store, request_id: &str) -> ReservationRecord {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let r = store
            .reservation(request_id)
            .await
            .expect("reservation read");
        match r {
            Some(r) if r.state != "pending" => return r,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{request_id} never settled: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
