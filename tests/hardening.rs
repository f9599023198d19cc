//! Hostile clients and the edges of the HTTP server (issue 19 items 2, 10, 11, 12; issue 12
//! item 16's `--listen`): connections that never send a request are closed, idle ones too,
//! slow bodies get 408, `max_connections` refuses beyond the cap while the admin listener
//! answers, the store and the demo key are private files, a sync request in flight at SIGTERM
//! gets an answer, and the smaller edges (huge upstream headers, percent-encoded agent ids,
//! oversized admin bodies). Everything over real loopback sockets, bounded in count and time.

mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agentgate::fronts::Api;
use harness::process::ServeProcess;
use harness::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_LISTEN: &str = "127.0.0.2:0";
const ADMIN_TOKEN: &str = "hardening-admin-token-0123456789";

/// How long a socket the gateway should close may stay open before the test gives up: far
/// above the 1 s timeouts configured here, so a loaded machine does not fail it.
const CLOSE_PATIENCE: Duration = Duration::from_secs(15);

async fn gateway(server_extra: &str, agents: &[String]) -> (Gateway, SocketAddr) {
    let server = format!(
        "admin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n{server_extra}"
    );
    let gw = spawn_gateway(&config(&server, agents)).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    (gw, admin)
}

/// Reads until the peer closes; `Err` if it is still open after `CLOSE_PATIENCE`. What was
/// read on the way is returned.
async fn closed_by_peer(socket: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + CLOSE_PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "still open after {CLOSE_PATIENCE:?}; read {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`): status and body.
async fn raw_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let got = closed_by_peer(&mut s).await?;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

// ------------------------------------------------------------------ 19.2 connection bounds --

/// A socket that never sends a byte, and one that sends half an HTTP/2 preface, are closed
/// after `header_read_timeout_s` — on the main and on the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_preface_connections_are_closed() {
    let (gw, admin) = gateway("header_read_timeout_s = 1", &[]).await;
    for addr in [gw.addr, admin] {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        let started = Instant::now();
        let (a, b) = tokio::join!(closed_by_peer(&mut silent), closed_by_peer(&mut half));
        a.unwrap_or_else(|e| panic!("{addr}: silent socket {e}"));
        b.unwrap_or_else(|e| panic!("{addr}: half h2 preface {e}"));
        eprintln!("{addr}: both closed after {:?}", started.elapsed());
    }
}

/// The gateway tells HTTP/1.1 from h2c by peeking at a connection's first bytes; bytes that
/// trickle in (a request a byte at a time, a preface in two writes) are served all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_trickle_in_are_served_in_either_protocol() {
    let (gw, _admin) = gateway("", &[]).await;
    // HTTP/1.1 starting with "P", which the preface starts with too: undecided at first.
    let mut h1 = TcpStream::connect(gw.addr).await.expect("connect");
    for byte in
        b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    {
        h1.write_all(&[*byte]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answer = closed_by_peer(&mut h1).await.expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 "),
        "no HTTP/1.1 answer: {text:?}"
    );
    // h2c with prior knowledge, the preface in two writes: the server's SETTINGS come back.
    let mut h2 = TcpStream::connect(gw.addr).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    h2.write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let mut head = [0u8; 9];
    tokio::time::timeout(CLOSE_PATIENCE, h2.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("a frame");
    assert_eq!(head[3], 0x4, "the first frame is SETTINGS: {head:?}");
}

/// A kept-alive HTTP/1.1 connection with nothing in flight is closed after `idle_timeout_s`,
/// and an HTTP/2 connection gets `GOAWAY` and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let (gw, _) = gateway("idle_timeout_s = 1", &[]).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let got = closed_by_peer(&mut s)
        .await
        .unwrap_or_else(|e| panic!("idle HTTP/1.1 connection {e}"));
    assert!(got.starts_with(b"HTTP/1.1 200"), "answered first");

    // HTTP/2 with prior knowledge: preface, SETTINGS, one request, then nothing.
    let mut raw_req = TcpStream::connect(gw.addr).await.expect("connect");
    raw_req
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    // HEADERS (stream 1, END_STREAM|END_HEADERS) for GET http://x/, HPACK-indexed
    // :method GET (0x82), :scheme http (0x86), :path / (0x84), :authority literal "x".
    let block: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    let mut frame = vec![0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, 1];
    frame.extend_from_slice(block);
    raw_req.write_all(&frame).await.expect("write headers");
    // The answer, then — idle — a GOAWAY frame (type 7, no flags, stream 0): the graceful
    // close begins (a client that acks hyper's PING then sees the connection closed).
    let deadline = tokio::time::Instant::now() + CLOSE_PATIENCE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(6).any(|w| w == [0x07, 0x00, 0, 0, 0, 0]) {
        match tokio::time::timeout_at(deadline, raw_req.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => break, // closed: fine too, if a GOAWAY came first
            Err(_) => {
                panic!("no GOAWAY on an idle HTTP/2 connection after {CLOSE_PATIENCE:?}: {got:?}")
            }
        }
    }
    assert!(
        got.windows(6).any(|w| w == [0x07, 0x00, 0, 0, 0, 0]),
        "GOAWAY expected: {got:?}"
    );
}

/// A request body that stops arriving gets 408 in the front's error shape after
/// `body_read_timeout_s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408() {
    let backend = demo_agent(Api::Agents).await;
    let id = agent_id(1);
    let (gw, _) = gateway(
        "body_read_timeout_s = 1",
        &[agent(&id, &format!("http://{backend}"), Api::Agents, "")],
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"message\":",
        chat_path(Api::Agents, &id, false),
        test_key().expose()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let got = closed_by_peer(&mut s)
        .await
        .unwrap_or_else(|e| panic!("stalled body: {e}"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("408 body is JSON ({e}): {text}"));
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

/// Past `max_connections` a new connection is closed at once, unread; the admin listener still
/// answers `/healthz`; once a connection closes, the main listener serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_ones_are_refused_and_admin_still_answers() {
    let (gw, admin) = gateway("max_connections = 4\nheader_read_timeout_s = 60", &[]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    // The fifth: accepted by the kernel, closed by the gateway without an answer.
    let mut fifth = TcpStream::connect(gw.addr).await.expect("connect");
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let got = closed_by_peer(&mut fifth)
        .await
        .unwrap_or_else(|e| panic!("the fifth connection {e}"));
    assert!(got.is_empty(), "refused unanswered: {got:?}");
    assert_eq!(
        raw_get(admin, "/healthz").await.expect("admin").0,
        200,
        "the admin listener is not counted"
    );
    // One of the four leaves: a new connection is served.
    drop(held.pop());
    let deadline = Instant::now() + CLOSE_PATIENCE;
    loop {
        match raw_get(gw.addr, "/healthz").await {
            Ok((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "the main listener did not serve again: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Many silent connections (19.2's 20,000-socket attack, scaled by
/// `AGENTGATE_SILENT_CONNECTIONS`, default 1,000): the real binary still answers `/healthz`
/// (main and admin) and a chat while they are open; its memory is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_while_many_silent_connections_are_open() {
    let n: usize = std::env::var("AGENTGATE_SILENT_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // This process holds one descriptor per connection too.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("fd limit");
    assert!(
        limit as usize > n + 200,
        "the open file limit ({limit}) is too low for {n} connections"
    );
    let backend = demo_agent(Api::Agents).await;
    let id = agent_id(1);
    let dir = tempfile::tempdir().expect("dir");
    let toml = format!(
        "[server]\nlisten = \"{LOOPBACK}\"\nadmin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
         log_format = \"json\"\nmax_connections = {}\nheader_read_timeout_s = 120\n\
         [store]\nurl = \"sqlite://{}\"\n\
         [[front]]\napi = \"agents\"\nprefix = \"/agents\"\nrequire_key = false\n{}",
        n + 100,
        dir.path().join("agentgate.db").display(),
        agent(&id, &format!("http://{backend}"), Api::Agents, "")
    );
    let path = dir.path().join("agentgate.toml");
    std::fs::write(&path, toml).expect("config");
    let gw = ServeProcess::start(&path, true);
    let admin = gw.admin.expect("admin");
    let pid = gw.child.lock().expect("lock").as_ref().expect("child").id();
    let rss_before = rss_kib(pid);
    let opening = Instant::now();
    let mut silent = Vec::with_capacity(n);
    for _ in 0..n {
        silent.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    let opened_in = opening.elapsed();
    let answering = Instant::now();
    let main = raw_get(gw.addr, "/healthz").await.expect("main /healthz");
    let admin_health = raw_get(admin, "/healthz").await.expect("admin /healthz");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client");
    let chat = client
        .post(format!(
            "http://{}{}",
            gw.addr,
            chat_path(Api::Agents, &id, false)
        ))
        .json(&json!({"message": "still here?"}))
        .send()
        .await
        .expect("chat answered");
    let chat_status = chat.status().as_u16();
    let answered_in = answering.elapsed();
    let rss_after = rss_kib(pid);
    eprintln!(
        "{n} silent connections opened in {opened_in:?}; /healthz (main {}, admin {}) and a chat \
         ({chat_status}) answered in {answered_in:?}; gateway RSS {rss_before} KiB -> {rss_after} KiB",
        main.0, admin_health.0
    );
    assert_eq!(main.0, 200);
    assert_eq!(admin_health.0, 200);
    assert_eq!(chat_status, 200);
    drop(silent);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------- 19.10 private files --

/// The store's directory is created 0700, its files 0600, and the demo master key 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_the_demo_key_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("state/data");
    let toml = format!(
        "[server]\nlisten = \"{LOOPBACK}\"\n[store]\nurl = \"sqlite://{}\"\n{FRONTS}\n{}",
        data.join("agentgate.db").display(),
        agent(&agent_id(1), "demo", Api::Agents, "")
    );
    let config = agentgate::config::Config::parse(&toml, "test.toml").expect("config");
    let running = agentgate::server::start(config).await.expect("started");
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(
        mode(&dir.path().join("state")),
        0o700,
        "its parent, created too"
    );
    assert_eq!(mode(&data.join("demo-key.txt")), 0o600, "demo key");
    for file in ["agentgate.db", "agentgate.db-wal", "agentgate.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    assert!(data.join("agentgate.db-wal").exists(), "WAL mode");
    running.shutdown().await;
}

// --------------------------------------------------------------- 19.11 SIGTERM and sync --

/// A config file for the real binary: an open `agents` front, one agent at `upstream`.
fn process_config(
    dir: &Path,
    server_extra: &str,
    upstream: &str,
    agent_extra: &str,
) -> std::path::PathBuf {
    let toml = format!(
        "[server]\nlisten = \"{LOOPBACK}\"\nlog_format = \"json\"\n{server_extra}\n\
         [store]\nurl = \"sqlite://{}\"\n\
         [[front]]\napi = \"agents\"\nprefix = \"/agents\"\nrequire_key = false\n{}",
        dir.join("agentgate.db").display(),
        agent(&agent_id(1), upstream, Api::Agents, agent_extra)
    );
    let path = dir.join("agentgate.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

fn sigterm(gw: &ServeProcess) {
    let pid = gw.child.lock().expect("lock").as_ref().expect("child").id();
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// A sync chat whose backend has not answered when SIGTERM comes: past the drain timeout it
/// gets 503 in the front's shape, not a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_in_flight_at_sigterm_gets_503_after_the_drain_timeout() {
    let mock = MockUpstream::silent().spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = process_config(
        dir.path(),
        "drain_timeout_s = 1",
        &mock.url(),
        "first_byte_timeout_ms = 60000",
    );
    let gw = ServeProcess::start(&path, false);
    let url = format!(
        "{}{}",
        gw.base(),
        chat_path(Api::Agents, &agent_id(1), false)
    );
    let request = tokio::spawn(async move {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("client")
            .post(url)
            .json(&json!({"message": "hello"}))
            .send()
            .await
    });
    let deadline = Instant::now() + PATIENCE;
    while mock.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the backend never got the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&gw);
    let response = request
        .await
        .expect("task")
        .expect("an answer, not a dropped connection");
    assert_eq!(response.headers()["retry-after"], "1");
    let body = assert_error(response, 503).await;
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
}

/// A sync chat that finishes within the drain timeout gets its whole answer after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_in_flight_at_sigterm_is_answered_within_the_drain() {
    let backend = demo_agent_with_delay(Api::Agents, Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = process_config(
        dir.path(),
        "drain_timeout_s = 30",
        &format!("http://{backend}"),
        "",
    );
    let gw = ServeProcess::start(&path, false);
    let url = format!(
        "{}{}",
        gw.base(),
        chat_path(Api::Agents, &agent_id(1), false)
    );
    let request = tokio::spawn(async move {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("client")
            .post(url)
            .json(&json!({"message": "one two three four five six"}))
            .send()
            .await
    });
    // The demo backend is answering word by word.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&gw);
    let response = request.await.expect("task").expect("an answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let answer = read_sync(Api::Agents, &body);
    assert!(answer.text.contains("six"), "the whole answer: {body}");
}

// ------------------------------------------------------------------------- 19.12 edges --

/// A backend whose response head is 1 MB: 502 saying the headers are too large, not that the
/// backend is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_a_huge_header_is_reported_too_large() {
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_request(&mut socket).await.is_some() {
                    let mut head =
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-big: ".to_vec();
                    head.resize(head.len() + (1 << 20), b'a');
                    head.extend_from_slice(b"\r\n\r\n");
                    let _ = socket.write_all(&head).await;
                }
            });
        }
    });
    let id = agent_id(1);
    let (gw, _) = gateway(
        "",
        &[agent(&id, &format!("http://{upstream}"), Api::Agents, "")],
    )
    .await;
    let r = send_chat(&client(), &gw, Api::Agents, &id, "hi", None, false).await;
    let body = assert_error(r, 502).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too large"), "{body}");
}

/// Chat routes percent-decode the agent id, as the history routes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_routes_percent_decode_the_agent_id() {
    let backend = demo_agent(Api::Agents).await;
    let id = agent_id(1);
    let (gw, _) = gateway(
        "",
        &[agent(&id, &format!("http://{backend}"), Api::Agents, "")],
    )
    .await;
    let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
    for front in [Api::Agents, Api::Pharen, Api::Chatbase, Api::Guayaba] {
        let path = chat_path(front, &encoded, false);
        let r = client()
            .post(gw.url(&path))
            .json(&chat_body(front, "hi", None, false))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            r.status(),
            200,
            "{front:?} {path}: {}",
            r.text().await.unwrap_or_default()
        );
    }
}

/// hyper's own answers to requests it cannot parse (400) or whose head is too large (431)
/// carry the fronts' JSON error body, on the main and the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_and_oversized_heads_get_a_json_error_body() {
    let (gw, admin) = gateway("", &[]).await;
    let too_many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "GET / HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            format!("GET / HTTP/1.1\r\nhost: x\r\n{too_many}\r\n"),
            431,
            "request_header_fields_too_large",
        ),
    ];
    for addr in [gw.addr, admin] {
        for (request, status, code) in &cases {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(request.as_bytes()).await.expect("write");
            let got = closed_by_peer(&mut s)
                .await
                .unwrap_or_else(|e| panic!("{addr} {status}: {e}"));
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            assert!(head.contains("content-type: application/json"), "{head}");
            let v: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{addr} {status}: body not JSON ({e}): {text}"));
            assert_eq!(v["error"]["code"], *code, "{v}");
            assert!(v["error"]["message"].is_string() && v["error"]["details"].is_object());
        }
    }
}

/// The admin API answers an oversized body with 413 (not 400), in its error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_oversized_bodies_with_413() {
    let (_gw, admin) = gateway("", &[]).await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{admin}/admin/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .expect("answer");
    let body = assert_error(r, 413).await;
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
}

// -------------------------------------------------------------- 12.16 serve --listen --

/// `AGENTGATE_LISTEN` (`serve --listen`) moves the main listener and its fronts: the image's
/// quick start listens on 0.0.0.0 although the embedded config says 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentgate_listen_moves_the_main_listener_and_its_fronts() {
    let backend = demo_agent(Api::Agents).await;
    let dir = tempfile::tempdir().expect("dir");
    // The file says 127.0.0.3; the environment says 127.0.0.1.
    let path = process_config(dir.path(), "", &format!("http://{backend}"), "");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace(LOOPBACK, "127.0.0.3:0")).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentgate"));
    command.env("AGENTGATE_LISTEN", LOOPBACK);
    let gw = ServeProcess::start_with(command, &path, false);
    assert_eq!(gw.addr.ip().to_string(), "127.0.0.1", "{}", gw.addr);
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client")
        .post(format!(
            "{}{}",
            gw.base(),
            chat_path(Api::Agents, &agent_id(1), false)
        ))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "the fronts moved with the listener");
}
