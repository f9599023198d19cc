//! Request ids and the seeds' last details (issue 12 items 1–7, issue 19 item 9; SPEC §5, §11),
//! over real sockets: a client's `x-request-id` is echoed and logged, never stored, and only
//! taken when it is of a safe form; chatbase `userId` is fixed when a conversation opens; a
//! chatbase continuation without `message`; guayaba's 404/403, its session keys (bounded,
//! percent-encoded in paths) and every id its sessions list shows; pharen's typed options.

mod harness;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

/// Each answer of these agents costs 2 (base) + 1 (the demo's usage).
const PRICED: &str = "credits_per_message = 2\nmax_usage_credits = 5\n";

fn master(account: &str) -> NewKeySpec {
    NewKeySpec {
        account: account.into(),
        kind: KeyKind::Master,
        scopes: Scopes::ALL,
        agents: None,
        expires_at: None,
        limits: KeyLimits::default(),
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

// ------------------------------------------------------------------------------ request ids --

/// Two requests with one `x-request-id` — from one account or two, chats and team chats — are
/// two requests: each answered, each charged, the id echoed back each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_request_id_on_many_requests_and_accounts_is_many_requests() {
    let pharen = demo_agent(Api::Pharen).await;
    let chatbase = demo_agent(Api::Chatbase).await;
    let tables = vec![
        agent(
            &agent_id(1),
            &format!("http://{pharen}"),
            Api::Pharen,
            PRICED,
        ),
        agent(
            &agent_id(2),
            &format!("http://{chatbase}"),
            Api::Chatbase,
            PRICED,
        ),
        format!(
            "[[team]]\nid = \"pair\"\nmembers = [\"{}\", \"{}\"]\nmodes = [\"brainstorm\"]\n",
            agent_id(1),
            agent_id(2)
        ),
    ];
    let gw = spawn_gateway(&config("", &tables)).await;
    let other = create_key(&gw.running, master("other")).await;
    gw.running
        .policy
        .ledger
        .grant("other", 100.0, None)
        .await
        .expect("grant");
    let (mine, theirs) = (client(), client_with(&other));
    let before = (
        balance(&gw.running, TEST_ACCOUNT).await,
        balance(&gw.running, "other").await,
    );
    let chat = gw.url(&chat_path(Api::Agents, &agent_id(2), false));
    for (c, n) in [(&mine, 1), (&mine, 2), (&theirs, 3)] {
        let r = c
            .post(&chat)
            .header("x-request-id", "retry-42")
            .json(&json!({ "message": format!("hello {n}") }))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            r.headers()["x-request-id"],
            "retry-42",
            "the client's id is echoed"
        );
        let v = json_of(r).await;
        assert!(v["response"].as_str().unwrap_or_default().contains("hello"));
    }
    let team = gw.url("/agents/api/teams/pair/chat");
    for c in [&mine, &theirs] {
        let r = c
            .post(&team)
            .header("x-request-id", "retry-42")
            .json(&json!({ "message": "names?" }))
            .send()
            .await
            .expect("answer");
        let v = json_of(r).await;
        for member in v["responses"].as_array().expect("responses") {
            assert!(member["content"].is_string(), "every member answered: {v}");
        }
    }
    let after = (
        balance(&gw.running, TEST_ACCOUNT).await,
        balance(&gw.running, "other").await,
    );
    // Two chats and one team chat of two members each; one chat and one team chat.
    assert_eq!(before.0 - after.0, 4.0 * 3.0, "{before:?} → {after:?}");
    assert_eq!(before.1 - after.1, 3.0 * 3.0, "{before:?} → {after:?}");
}

/// Removes ANSI colour sequences from a log line.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The real binary with text logs: a request id that could forge log fields, or is too long,
/// is replaced by a generated one (echoed), a safe one is kept; log values are quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_request_ids_are_replaced_and_text_logs_quote_them() {
    let upstream = demo_agent(Api::Agents).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agentgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{LOOPBACK}\"\nlog_format = \"text\"\n\n\
             [[front]]\napi = \"agents\"\nprefix = \"/agents\"\nrequire_key = false\n\n{}\n\
             [store]\nurl = \"sqlite://{}\"\n",
            agent(&agent_id(1), &format!("http://{upstream}"), Api::Agents, ""),
            dir.path().join("agentgate.db").display()
        ),
    )
    .expect("config written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentgate serve starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines").push(plain(&line));
        }
    });
    let wait_for = |what: &dyn Fn(&str) -> bool| -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if let Some(l) = lines.lock().expect("lines").iter().find(|l| what(l)) {
                return Some(l.clone());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    };
    let listening = wait_for(&|l: &str| l.contains("listening") && l.contains("bound="));
    let listening = listening.expect("the gateway logs its address");
    let addr = listening
        .split("bound=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("bound address")
        .to_owned();
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client");
    let url = format!(
        "http://{addr}{}",
        chat_path(Api::Agents, &agent_id(1), false)
    );
    let forged = r#"x status=200 agent="forged""#;
    let long = "a".repeat(129);
    let safe = "ok-1.2:3_Z";
    let mut echoed = Vec::new();
    for id in [forged, long.as_str(), "", safe] {
        let r = c
            .post(&url)
            .header("x-request-id", id)
            .json(&json!({ "message": "hi" }))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        let got = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        echoed.push(got);
    }
    for got in &echoed[..3] {
        assert!(
            uuid::Uuid::parse_str(got).is_ok(),
            "an unsafe id is replaced by a generated one: {got:?}"
        );
    }
    assert_eq!(echoed[3], safe, "a safe id is kept");
    for id in &echoed {
        let line = wait_for(&|l: &str| {
            l.contains(&format!("request_id=\"{id}\"")) && l.contains("status=200")
        });
        assert!(line.is_some(), "a quoted request line for {id}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.lock().expect("lines").join("\n");
    assert!(
        !all.contains("forged"),
        "no forged field in the logs:\n{all}"
    );
}

// -------------------------------------------------------------------------- chatbase userId --

/// `userId` is set when a conversation opens and never changes: later answers (sync and
/// stream) report the stored value whatever they send, a pattern-invalid one included; on a
/// new conversation an invalid one is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatbase_user_id_is_fixed_when_the_conversation_opens() {
    let upstream = demo_agent(Api::Guayaba).await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{upstream}"), Api::Guayaba, "")],
    ))
    .await;
    let c = client();
    let url = gw.url(&chat_path(Api::Chatbase, &id, false));
    let sync = |body: Value| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let mut body = body;
            body["stream"] = json!(false);
            json_of(c.post(&url).json(&body).send().await.expect("answer")).await
        }
    };
    let first = sync(json!({ "message": "hi", "userId": "alice.01_x-y" })).await;
    assert_eq!(first["userId"], "alice.01_x-y");
    let conv = first["conversationId"].as_str().expect("id").to_owned();
    for later in [
        json!({ "message": "again", "conversationId": conv, "userId": "bob" }),
        json!({ "message": "again", "conversationId": conv }),
        json!({ "message": "again", "conversationId": conv, "userId": "not valid/!" }),
    ] {
        let v = sync(later.clone()).await;
        assert_eq!(v["userId"], "alice.01_x-y", "{later} → {v}");
    }
    // The stream's finish metadata too.
    let r = c
        .post(&url)
        .json(&json!({ "message": "s", "conversationId": conv, "userId": "bob" }))
        .send()
        .await
        .expect("answer");
    let body = r.text().await.expect("stream");
    let finish = read_sse(&body)
        .into_iter()
        .find(|e| e.ty().as_deref() == Some("finish"))
        .and_then(|e| e.json())
        .expect("a finish event");
    assert_eq!(
        finish["messageMetadata"]["userId"], "alice.01_x-y",
        "{finish}"
    );
    // Opened without one: null for good.
    let none = sync(json!({ "message": "hi" })).await;
    assert!(none["userId"].is_null());
    let conv = none["conversationId"].as_str().expect("id");
    let v = sync(json!({ "message": "x", "conversationId": conv, "userId": "bob" })).await;
    assert!(v["userId"].is_null(), "{v}");
    // A new conversation checks the pattern.
    let r = c
        .post(&url)
        .json(&json!({ "message": "hi", "userId": "a b", "stream": false }))
        .send()
        .await
        .expect("answer");
    assert_error(r, 400).await;
}

// ------------------------------------------------------- chatbase: continuing without message --

/// After a tool result, chatbase continues without `message` (seed 002): the backend is asked
/// to continue its conversation without a message, no user message is recorded, and
/// `userMessageId` names the last user message. A backend that cannot continue without a
/// message is a 400, never an empty message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatbase_continues_without_a_message_as_the_seed_says() {
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let guayaba = demo_agent(Api::Guayaba).await;
    let (cb, gy) = (agent_id(1), agent_id(2));
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(&cb, &mock.url(), Api::Chatbase, ""),
            agent(&gy, &format!("http://{guayaba}"), Api::Guayaba, ""),
        ],
    ))
    .await;
    let c = client();
    let url = gw.url(&chat_path(Api::Chatbase, &cb, false));
    let first = json_of(
        c.post(&url)
            .json(&json!({ "message": "call the tool", "stream": false }))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    let conv = first["conversationId"].as_str().expect("id").to_owned();
    let user_message = first["userMessageId"].as_str().expect("id").to_owned();
    let next = json_of(
        c.post(&url)
            .json(&json!({ "conversationId": conv, "stream": false }))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(next["userMessageId"], user_message.as_str(), "{next}");
    assert_eq!(next["conversationId"], conv.as_str());
    let sent = mock.requests();
    assert_eq!(sent.len(), 2);
    let body = sent[1].json();
    assert!(body.get("message").is_none(), "no message sent: {body}");
    assert_eq!(body["conversationId"], "up-conv", "{body}");
    // The transcript: one user message, two answers.
    let history = json_of(
        c.get(gw.url(&format!(
            "/agents/api/agents/{cb}/history?conversation_id={conv}"
        )))
        .send()
        .await
        .expect("history"),
    )
    .await;
    let roles: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(roles, ["user", "assistant", "assistant"], "{history}");
    assert_eq!(history["messages"][0]["id"], user_message.as_str());
    // A guayaba backend has no such continuation.
    let url = gw.url(&chat_path(Api::Chatbase, &gy, false));
    let first = json_of(
        c.post(&url)
            .json(&json!({ "message": "hi", "stream": false }))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    let r = c
        .post(&url)
        .json(&json!({ "conversationId": first["conversationId"], "stream": false }))
        .send()
        .await
        .expect("answer");
    let e = assert_error(r, 400).await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`message`"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------- guayaba --

/// Seed 004: an agent that does not exist is 404 "Agent not found"; one outside the key's
/// agents is 403 "cannot access this agent" — on chat and on the sessions endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guayaba_tells_an_unknown_agent_from_one_outside_the_key() {
    let upstream = demo_agent(Api::Guayaba).await;
    let (mine, other) = (agent_id(1), agent_id(2));
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(&mine, &format!("http://{upstream}"), Api::Guayaba, ""),
            agent(&other, &format!("http://{upstream}"), Api::Guayaba, ""),
        ],
    ))
    .await;
    let key = create_key(
        &gw.running,
        NewKeySpec {
            kind: KeyKind::Agent,
            agents: Some(vec![mine.clone()]),
            ..master(TEST_ACCOUNT)
        },
    )
    .await;
    let c = client_with(&key);
    let unknown = agent_id(9);
    for (agent, status, words) in [
        (&unknown, 404, "Agent not found"),
        (&other, 403, "cannot access this agent"),
    ] {
        let base = gw.url(&format!("/guayaba/api/v1/agents/{agent}"));
        let requests = [
            c.post(format!("{base}/chat"))
                .json(&json!({ "message": "hi" })),
            c.get(format!("{base}/sessions")),
            c.patch(format!("{base}/sessions/api:x"))
                .json(&json!({ "title": "t" })),
            c.delete(format!("{base}/sessions/api:x")),
        ];
        for request in requests {
            let e = assert_error(request.send().await.expect("answer"), status).await;
            let message = e["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(words), "{agent}: {e}");
        }
    }
    // The key's own agent answers.
    let r = c
        .post(gw.url(&chat_path(Api::Guayaba, &mine, false)))
        .json(&json!({ "message": "hi" }))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

/// `sessionKey` is at most 256 characters of `[A-Za-z0-9._:-]` after `api:` (else 422), and
/// session paths take the key percent-encoded. The AI SDK chat id follows the same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_are_bounded_and_managed_percent_encoded() {
    let upstream = demo_agent(Api::Agents).await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{upstream}"), Api::Agents, "")],
    ))
    .await;
    let c = client();
    let chat = gw.url(&chat_path(Api::Guayaba, &id, false));
    let longest = format!("api:{}", "k".repeat(252));
    for bad in [
        format!("api:{}", "k".repeat(253)),
        "api:a b".to_owned(),
        "api:a/b".to_owned(),
        "api:é".to_owned(),
    ] {
        let r = c
            .post(&chat)
            .json(&json!({ "message": "hi", "sessionKey": bad }))
            .send()
            .await
            .expect("answer");
        let e = assert_error(r, 422).await;
        assert!(e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sessionKey"));
    }
    for good in [longest.as_str(), "api:x.y_z-1:2"] {
        let v = json_of(
            c.post(&chat)
                .json(&json!({ "message": "hi", "sessionKey": good }))
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(v["sessionKey"], good);
    }
    let session = gw.url(&format!(
        "/guayaba/api/v1/agents/{id}/sessions/api%3Ax.y_z-1%3A2"
    ));
    let v = json_of(
        c.patch(&session)
            .json(&json!({ "title": "renamed" }))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(v["sessionKey"], "api:x.y_z-1:2");
    assert_eq!(v["title"], "renamed");
    let r = c.delete(&session).send().await.expect("answer");
    assert_eq!(r.status(), 204);
    // The AI SDK's chat id on chatbase.
    let r = c
        .post(gw.url(&chat_path(Api::Chatbase, &id, false)))
        .json(&json!({
            "id": "a b",
            "messages": [{ "role": "user", "parts": [{ "type": "text", "text": "hi" }] }]
        }))
        .send()
        .await
        .expect("answer");
    assert_error(r, 400).await;
}

/// Every conversation guayaba's sessions list shows — opened on guayaba or on another front
/// (`conv_…`, a UUID, `default`) — is listed in guayaba's form and continues on guayaba by that
/// key, as the same conversation; it can be renamed and deleted by it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guayaba_continues_every_session_it_lists() {
    let upstream = demo_agent(Api::Chatbase).await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{upstream}"), Api::Chatbase, "")],
    ))
    .await;
    let c = client();
    for front in [Api::Agents, Api::Chatbase, Api::Pharen, Api::Guayaba] {
        let r = send_chat(&c, &gw, front, &id, "first", None, false).await;
        assert_eq!(r.status(), 200, "{front}");
    }
    let sessions = gw.url(&format!("/guayaba/api/v1/agents/{id}/sessions"));
    let list = json_of(c.get(&sessions).send().await.expect("list")).await;
    let keys: Vec<String> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["sessionKey"].as_str().expect("key").to_owned())
        .collect();
    assert_eq!(keys.len(), 4, "{list}");
    assert!(keys.contains(&"api:default".to_owned()), "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("api:"), "{key}");
        let v = json_of(
            c.post(gw.url(&chat_path(Api::Guayaba, &id, false)))
                .json(&json!({ "message": "again", "sessionKey": key }))
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(v["sessionKey"], key.as_str());
        let text = v["response"].as_str().unwrap_or_default();
        assert!(text.contains("turn 2"), "{key} continued: {text}");
    }
    // Still four sessions, each renamed and deleted by its listed key.
    let list = json_of(c.get(&sessions).send().await.expect("list")).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(4), "{list}");
    for key in &keys {
        let url = format!("{sessions}/{key}");
        let v = json_of(
            c.patch(&url)
                .json(&json!({ "title": "t" }))
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(v["sessionKey"], key.as_str());
        assert_eq!(c.delete(&url).send().await.expect("answer").status(), 204);
    }
    let list = json_of(c.get(&sessions).send().await.expect("list")).await;
    assert_eq!(list["sessions"], json!([]));
}

// ----------------------------------------------------------------------------------- pharen --

/// Seed 000 types pharen's optional fields: a wrong type is 400 naming the field, in pharen's
/// error body, and nothing reaches the backend; the right types are passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pharen_optional_fields_are_type_checked() {
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config("", &[agent(&id, &mock.url(), Api::Pharen, "")])).await;
    let c = client();
    let url = gw.url(&chat_path(Api::Pharen, &id, false));
    for (field, bad) in [
        ("page_context", json!("str")),
        ("context", json!([1])),
        ("enable_thinking", json!("yes")),
        ("model", json!(5)),
        ("artifact_mode", json!(1)),
        ("artifact_category", json!({})),
        ("conversation_uuid", json!(7)),
        ("conversation_id", json!(null)),
    ] {
        let mut body = json!({ "message": "x" });
        body[field] = bad;
        let r = c.post(&url).json(&body).send().await.expect("answer");
        let e = assert_error(r, 400).await;
        assert_eq!(e["error"]["details"]["field"], field, "{e}");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(field));
    }
    assert!(mock.requests().is_empty(), "nothing reached the backend");
    let good = json!({
        "message": "x", "page_context": { "url": "/a" }, "context": {}, "enable_thinking": true,
        "model": "m", "artifact_mode": false, "artifact_category": "doc"
    });
    let r = c.post(&url).json(&good).send().await.expect("answer");
    assert_eq!(r.status(), 200);
    let sent = mock.requests()[0].json();
    for field in [
        "page_context",
        "context",
        "enable_thinking",
        "model",
        "artifact_mode",
    ] {
        assert_eq!(sent[field], good[field], "{field} passed on");
    }
}
