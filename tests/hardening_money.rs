//! Issue 19, money and data, through the real gateway over loopback: bounded answers, a store
//! that fails or disappears, slow readers, grants, idempotent replays and what failed answers
//! cost.

mod harness;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use agentgate::store::Store;
use harness::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An answer of `deltas` text deltas of `size` bytes each, then a finish reporting `usage`.
fn ui_answer(deltas: usize, size: usize, usage: f64) -> Vec<u8> {
    let mut body = String::from(
        "data: {\"type\":\"start\",\"messageId\":\"up\"}\n\n\
         data: {\"type\":\"text-start\",\"id\":\"t\"}\n\n",
    );
    let delta = format!(
        "data: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"{}\"}}\n\n",
        "x".repeat(size)
    );
    for _ in 0..deltas {
        body.push_str(&delta);
    }
    body.push_str(&format!(
        "data: {{\"type\":\"text-end\",\"id\":\"t\"}}\n\n\
         data: {{\"type\":\"finish\",\"messageMetadata\":{{\"usage\":{{\"credits\":{usage}}}}}}}\n\n\
         data: [DONE]\n\n"
    ));
    body.into_bytes()
}

fn store_of(gw: &Gateway) -> &Store {
    &gw.running.policy.store
}

fn chat_req(
    client: &reqwest::Client,
    gw: &Gateway,
    front: Api,
    agent: &str,
    stream: bool,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(gw.url(&chat_path(front, agent, stream)))
        .json(&chat_body(front, "hello", None, stream));
    if stream {
        req = req.header("accept", "text/event-stream");
    }
    req
}

// ------------------------------------------------------------------ 19.1 bounded answers --

/// A sync answer past `max_answer_bytes` is a 502 in the front's error shape that shows what
/// it was charged (and the ledger agrees); the gateway stops reading the backend, which
/// would otherwise stream forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_answer_past_max_answer_bytes_is_502_and_charged_what_it_shows() {
    let mock = MockUpstream::write_forever().spawn().await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config(
        "max_answer_bytes = 1048576",
        &[agent(
            &id,
            &mock.url(),
            Api::Chatbase,
            "credits_per_message = 1\nmax_usage_credits = 100\ncredits_per_1k_output_chars = 0.01",
        )],
    ))
    .await;
    for front in [Api::Agents, Api::Guayaba] {
        let r = chat_req(&client(), &gw, front, &id, false)
            .send()
            .await
            .expect("answer");
        let rid = request_id_of(&r);
        let v = assert_error(r, 502).await;
        assert_eq!(v["error"]["code"], "answer_too_large", "{v}");
        assert_eq!(v["error"]["details"]["max_answer_bytes"], 1048576, "{v}");
        let shown = v["error"]["details"]["usage"]["credits"]
            .as_f64()
            .expect("usage shown");
        // 1 base + at most 1 MiB of output at 0.01 per 1000 characters, to the millicredit.
        assert!(shown > 1.0 && shown <= 1.0 + 10.486, "{v}");
        let r = settled(store_of(&gw), &rid).await;
        assert_eq!(r.charged, Some((shown * 1000.0).round() as i64), "{r:?}");
    }
    assert!(mock.wait_peer_closed().await, "the gateway stopped reading");
}

/// A stream past `max_answer_bytes` goes on to its finish, but the answer recorded in the
/// conversation is cut at the bound (memory per stream stays bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_max_answer_bytes_goes_on_and_its_transcript_is_cut() {
    // 24 MiB of text against a 1 MiB bound.
    let mock = MockUpstream::sse(ui_answer(6 * 1024, 4096, 1.0))
        .spawn()
        .await;
    let id = agent_id(2);
    let gw = spawn_gateway(&config(
        "max_answer_bytes = 1048576",
        &[agent(&id, &mock.url(), Api::Chatbase, "")],
    ))
    .await;
    let r = chat_req(&client(), &gw, Api::Agents, &id, true)
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    let answer = read_stream("text-done", &r.text().await.expect("body"));
    assert!(answer.ended_properly && answer.errors.is_empty());
    assert_eq!(answer.text.len(), 6 * 1024 * 4096, "the client got it all");
    let history: Value = client()
        .get(gw.url(&format!("/agents/api/agents/{id}/history")))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let messages = history["messages"].as_array().expect("messages");
    let answer = messages
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the answer is recorded");
    let kept = answer["content"].as_str().expect("content").len();
    assert!(kept > 0 && kept <= 1048576, "kept {kept} bytes");
    assert_eq!(answer["truncated"], true, "{}", answer["truncated"]);
}

// ------------------------------------------------- 19.3 a store that fails for a while --

/// A backend that sends `head`, then waits for the gate to open before sending `tail` and
/// ending its answer.
struct Gated {
    addr: std::net::SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gated {
    async fn spawn(head: &'static str, tail: &'static str) -> Gated {
        let listener = TcpListener::bind(LOOPBACK).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, gate) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut gate = gate.clone();
                tokio::spawn(async move {
                    if read_request(&mut socket).await.is_none() {
                        return;
                    }
                    let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n{}",
                        chunk(head)
                    );
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = gate.wait_for(|open| *open).await;
                    let tail = format!("{}0\r\n\r\n", chunk(tail));
                    let _ = socket.write_all(tail.as_bytes()).await;
                    let mut sink = [0u8; 1024];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        Gated { addr, open }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

const GATED_HEAD: &str = "data: {\"type\":\"start\"}\n\n\
    data: {\"type\":\"text-start\",\"id\":\"t\"}\n\n\
    data: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"0123456789\"}\n\n";
const GATED_TAIL: &str = "data: {\"type\":\"text-end\",\"id\":\"t\"}\n\n\
    data: {\"type\":\"finish\",\"messageMetadata\":{\"usage\":{\"credits\":2}}}\n\n\
    data: [DONE]\n\n";

/// Reads a streaming response until `needle` has arrived; returns what was read.
async fn read_until(r: &mut reqwest::Response, needle: &str) -> String {
    let mut body = String::new();
    while !body.contains(needle) {
        match tokio::time::timeout(PATIENCE, r.chunk()).await {
            Ok(Ok(Some(c))) => body.push_str(&String::from_utf8_lossy(&c)),
            other => panic!("stream ended before {needle:?}: {other:?}\n{body}"),
        }
    }
    body
}

/// The store's directory is moved away for a few seconds mid-stream (every write fails: the
/// file at the store's path is gone). A stream that completes meanwhile is not told `finish`
/// (its exchange could not be recorded): it gets an error event and the format's end, and is
/// charged nothing. A client that left meanwhile owes the base cost: that settlement is
/// retried until the store is back and lands (it used to be dropped after a few attempts,
/// leaving the reservation to recovery once `reservation_timeout_s` has passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_survive_a_store_outage_and_unrecorded_answers_end_in_an_error() {
    let backend = Gated::spawn(GATED_HEAD, GATED_TAIL).await;
    let endless = MockUpstream::write_forever().spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (id, endless_id) = (agent_id(3), agent_id(13));
    let pricing = "credits_per_message = 1\nmax_usage_credits = 10";
    let toml = format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\n",
        config(
            "",
            &[
                agent(&id, &backend.url(), Api::Chatbase, pricing),
                agent(&endless_id, &endless.url(), Api::Chatbase, pricing),
            ],
        ),
        data.join("agentgate.db").display()
    );
    let gw = spawn_gateway(&toml).await;
    let c = client();
    let mut leaving = chat_req(&c, &gw, Api::Chatbase, &endless_id, true)
        .send()
        .await
        .expect("stream");
    let left_id = request_id_of(&leaving);
    let mut finishing = chat_req(&c, &gw, Api::Chatbase, &id, true)
        .send()
        .await
        .expect("stream");
    let finished_id = request_id_of(&finishing);
    assert_eq!(
        (leaving.status().as_u16(), finishing.status().as_u16()),
        (200, 200)
    );
    read_until(&mut leaving, "xxxx").await;
    let mut body = read_until(&mut finishing, "0123456789").await;

    // The outage: the store's path names nothing.
    let away = dir.path().join("away");
    std::fs::rename(&data, &away).expect("move the store away");
    let outage = Instant::now();
    drop(leaving);
    backend.open.send_replace(true);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(PATIENCE, finishing.chunk()).await {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let answer = read_stream("ui-message", &body);
    assert!(answer.ended_properly, "{body}");
    assert_eq!(answer.credits, None, "no finish: {body}");
    assert_eq!(answer.errors.len(), 1, "{body}");
    assert!(answer.errors[0].contains("could not be recorded"), "{body}");
    let ready = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 503, "not ready while the store is away");
    // Longer than the writer's own attempts at one batch (which used to give up).
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(outage.elapsed())).await;
    let still_pending = store_of(&gw)
        .reservation(&left_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        still_pending.state, "pending",
        "nothing commits during the outage"
    );

    std::fs::rename(&away, &data).expect("bring the store back");
    let left = settled(store_of(&gw), &left_id).await;
    assert_eq!((left.state.as_str(), left.charged), ("posted", Some(1000)));
    let finished = settled(store_of(&gw), &finished_id).await;
    assert_eq!(
        (finished.state.as_str(), finished.charged),
        ("voided", Some(0))
    );
    let listed: Value = c
        .get(gw.url(&format!("/agents/api/agents/{id}/conversations")))
        .send()
        .await
        .expect("conversations")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["conversations"],
        json!([]),
        "nothing was acknowledged"
    );
    let ready = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200, "ready again");
}

// ---------------------------------------------------------------- 19.4 slow readers --

/// A client that stops reading for longer than the reservation timeout: the backend is held
/// back (backpressure), nothing arrives upstream, yet the reservation stays alive and the
/// answer is charged what its finish shows, not recovery's base cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pausing_longer_than_the_reservation_timeout_pays_what_it_was_shown() {
    // 32 MiB: more than every socket buffer between the backend and the client.
    let answer = ui_answer(8 * 1024, 4096, 2.0);
    let total = answer.len() as u64;
    let cuts: Vec<usize> = (1..answer.len() / (256 << 10))
        .map(|i| i * (256 << 10))
        .collect();
    let mock = MockUpstream::sse(answer).chunked_at(&cuts).spawn().await;
    let id = agent_id(4);
    let dir = tempfile::tempdir().expect("dir");
    let gw = spawn_gateway(&format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\nreservation_timeout_s = 2\n",
        config(
            "",
            &[agent(
                &id,
                &mock.url(),
                Api::Chatbase,
                "credits_per_message = 1\nmax_usage_credits = 5",
            )],
        ),
        dir.path().join("slow.db").display()
    ))
    .await;

    // A raw client with a small receive buffer, which reads a little and then pauses.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(gw.addr).await.expect("connect");
    let body = chat_body(Api::Chatbase, "hello", None, true).to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        chat_path(Api::Chatbase, &id, true),
        test_key().expose(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while got.len() < 64 << 10 {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // The reservation's id: the request id agentgate gave the request, echoed in the head.
    let head = String::from_utf8_lossy(&got);
    let request_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id echoed")
        .trim()
        .to_owned();
    // The pause: longer than the reservation timeout and its recovery interval.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        mock.bytes_written() < total,
        "the backend was held back ({} of {total} bytes written)",
        mock.bytes_written()
    );
    let r = store_of(&gw)
        .reservation(&request_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(r.state, "pending", "still alive after the pause: {r:?}");
    stream.read_to_end(&mut got).await.expect("read the rest");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\"usage\":{\"credits\":3}"), "finish shows 3");
    let r = settled(store_of(&gw), &request_id).await;
    assert_eq!(
        (r.state.as_str(), r.charged),
        ("posted", Some(3000)),
        "{r:?}"
    );
}

// ------------------------------------------------------------ 19.5 losing the store --

async fn chat_status(gw: &Gateway, agent: &str) -> u16 {
    client()
        .post(gw.url(&chat_path(Api::Agents, agent, false)))
        .json(&chat_body(Api::Agents, "hello", None, false))
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(gw.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    (r.status().as_u16(), r.json().await.expect("json"))
}

async fn gateway_in(dir: &Path, agent_url: &str, id: &str) -> Gateway {
    spawn_gateway(&format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\n",
        config("", &[agent(id, agent_url, Api::Agents, "")]),
        dir.join("agentgate.db").display()
    ))
    .await
}

/// The data directory deleted, or the database file replaced by another: `/readyz` says so
/// and chats are refused (503), instead of being answered and charged into unlinked files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_chats_fail_closed_when_the_store_file_is_gone_or_replaced() {
    let demo = format!("http://{}", demo_agent(Api::Agents).await);
    let id = agent_id(5);

    // Deleted.
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let gw = gateway_in(&data, &demo, &id).await;
    assert_eq!(chat_status(&gw, &id).await, 200);
    assert_eq!(readyz(&gw).await.0, 200);
    std::fs::remove_dir_all(&data).expect("delete the data directory");
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["store"].as_str().is_some_and(|s| s != "ok"),
        "{body}"
    );
    assert_eq!(chat_status(&gw, &id).await, 503);

    // Replaced (a copy moved over it: same content, another file).
    let dir = tempfile::tempdir().expect("dir");
    let gw = gateway_in(dir.path(), &demo, &id).await;
    assert_eq!(chat_status(&gw, &id).await, 200);
    let db = dir.path().join("agentgate.db");
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).expect("copy");
    std::fs::rename(&copy, &db).expect("replace");
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(chat_status(&gw, &id).await, 503);
}

// --------------------------------------------------------------------- 19.6 grants --

/// Grants must be finite, > 0 and at most 1e12 credits: 400 from the admin API, a clear
/// error (exit 1) from the CLI, and nothing granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_amounts_are_validated_by_the_admin_api_and_the_cli() {
    const TOKEN: &str = "grant-test-admin-token-0123456789";
    let id = agent_id(6);
    let gw = spawn_gateway(&config(
        &format!("admin_listen = \"127.0.0.2:0\"\nadmin_token = \"{TOKEN}\""),
        &[agent(&id, "demo", Api::Agents, "")],
    ))
    .await;
    let admin = gw.running.addrs[&"127.0.0.2:0".parse().expect("addr")];
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{admin}/admin/v1/accounts/granted/credits");
    let grant = |body: String| {
        http.post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for bad in ["1e300", "1e13", "-5", "0", "0.0001", "NaN", "\"10\""] {
        let r = grant(format!("{{\"credits\":{bad}}}"))
            .await
            .expect("grant");
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "invalid_request", "{bad}: {v}");
    }
    let r = grant("{\"credits\":1e12}".into()).await.expect("grant");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["balance"], json!(1e12));

    // The CLI, on the same store.
    let db = gw.dir.path().join("agentgate.db");
    let store = format!("sqlite://{}", db.display());
    for bad in ["1e300", "-5", "0", "NaN", "inf"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args([
                "credits",
                "grant",
                "--store",
                &store,
                "--account",
                "granted",
            ])
            .arg(format!("--credits={bad}"))
            .output()
            .expect("run the CLI");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(stderr.contains("grant must be"), "{bad}: {stderr}");
    }
    assert_eq!(
        balance(&gw.running, "granted").await,
        1e12,
        "nothing more granted"
    );
}

// -------------------------------------------------------------- 19.7 replays and scope --

/// A replay is answered only to a key that could have made the request: a key without
/// `agents:stream` gets 403 for a stream another key of the account made, not the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_replay_passes_the_stream_scope_check() {
    let id = agent_id(7);
    let demo = format!("http://{}", demo_agent(Api::Agents).await);
    let gw = spawn_gateway(&config("", &[agent(&id, &demo, Api::Agents, "")])).await;
    let run_only = create_key(
        &gw.running,
        NewKeySpec {
            account: TEST_ACCOUNT.into(),
            kind: KeyKind::Agent,
            scopes: Scopes::AGENTS_RUN,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await;
    let send = |c: reqwest::Client| {
        c.post(gw.url(&chat_path(Api::Agents, &id, true)))
            .header("idempotency-key", "replayed-stream")
            .json(&chat_body(Api::Agents, "hello", None, true))
            .send()
    };
    let first = send(client()).await.expect("first");
    assert_eq!(first.status(), 200);
    first.text().await.expect("the whole stream");
    // The master key gets the replay (once the first answer is stored: 409 until then).
    let deadline = Instant::now() + PATIENCE;
    let again = loop {
        let r = send(client()).await.expect("again");
        if r.status() != 409 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // The run-only key does not.
    let refused = send(client_with(&run_only)).await.expect("refused");
    assert!(refused.headers().get("idempotent-replayed").is_none());
    let v = assert_error(refused, 403).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("agents:stream")),
        "{v}"
    );
}

// --------------------------------------------------- 19.8 what failed answers cost --

/// One rule, stream and sync alike: a failed answer shows no usage and is charged nothing —
/// a backend that dies mid-answer, or answers 200 with an HTML page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_answers_are_charged_nothing_streamed_or_not() {
    let midway = MockUpstream::sse(ui_fixture_prefix())
        .then_cut()
        .spawn()
        .await;
    let html = Arc::new(TcpListener::bind(LOOPBACK).await.expect("bind"));
    let html_addr = html.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = html.accept().await {
            tokio::spawn(async move {
                if read_request(&mut socket).await.is_some() {
                    let page = "<html><body>Bad gateway</body></html>";
                    let _ = socket
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{page}",
                                page.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                }
            });
        }
    });
    let (dies, serves_html) = (agent_id(8), agent_id(9));
    let pricing = "credits_per_message = 1\nmax_usage_credits = 5";
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(&dies, &midway.url(), Api::Chatbase, pricing),
            agent(
                &serves_html,
                &format!("http://{html_addr}"),
                Api::Chatbase,
                pricing,
            ),
        ],
    ))
    .await;
    let c = client();
    for front in [Api::Chatbase, Api::Guayaba] {
        // Midway, streamed: the text so far, an error and the end; no usage, no charge.
        let r = chat_req(&c, &gw, front, &dies, true)
            .send()
            .await
            .expect("stream");
        assert_eq!(r.status(), 200);
        let rid = request_id_of(&r);
        let answer = read_stream(front_format(front), &r.text().await.expect("body"));
        assert!(answer.ended_properly && answer.errors.len() == 1);
        assert_eq!(answer.credits, None);
        let r = settled(store_of(&gw), &rid).await;
        assert_eq!((r.state.as_str(), r.charged), ("voided", Some(0)), "{rid}");
        // Midway, sync: 502, no charge.
        let r = chat_req(&c, &gw, front, &dies, false)
            .send()
            .await
            .expect("sync");
        let rid = request_id_of(&r);
        assert_error(r, 502).await;
        let r = settled(store_of(&gw), &rid).await;
        assert_eq!((r.state.as_str(), r.charged), ("voided", Some(0)), "{rid}");
        // An HTML page with 200, streamed or not: 502 before any output, no charge.
        for stream in [true, false] {
            let r = chat_req(&c, &gw, front, &serves_html, stream)
                .send()
                .await
                .expect("answer");
            let rid = request_id_of(&r);
            let v = assert_error(r, 502).await;
            assert_eq!(v["error"]["details"]["upstream_content_type"], "text/html");
            let r = settled(store_of(&gw), &rid).await;
            assert_eq!((r.state.as_str(), r.charged), ("voided", Some(0)), "{rid}");
        }
    }
}
