//! Operations over real sockets: `/metrics` after a known workload (exact counts), backend
//! health checks (409 while down), `/readyz`, trace context passed to backends, and the drain
//! seen from the admin listener.

mod harness;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "ops-test-admin-token-0123456789";
/// Another loopback address, so that the admin listener (also on port 0) differs from `listen`.
const ADMIN_LISTEN: &str = "127.0.0.2:0";

async fn gateway_with_admin(agents: &[String]) -> (Gateway, SocketAddr) {
    let server = format!("admin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"");
    let gw = spawn_gateway(&config(&server, agents)).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    (gw, admin)
}

async fn scrape(admin: SocketAddr) -> String {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("the admin listener answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("body")
}

/// The value of the sample `name{labels}` (labels in any order, all of them given), if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, got) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')?
                    .split(',')
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>(),
            ),
            None => (series, BTreeSet::new()),
        };
        (series_name == name && got == want).then(|| value.parse().expect("a number"))
    })
}

/// The sum of every sample of `name`.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .map(|l| {
            l.rsplit_once(' ')
                .expect("sample")
                .1
                .parse::<f64>()
                .expect("number")
        })
        .sum()
}

/// Scrapes until `name{labels}` reaches `value` (a stream's metrics are recorded when its body
/// is dropped, just after the client read its end).
async fn scrape_until(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(admin).await;
        if sample(&text, name, labels) == Some(value) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A known workload: 6 answers from agent A on three fronts (one a stream), agent B answered
/// once then rate-limited, one bad key (401), one key without credits (402). /metrics shows
/// exactly these counts, and credits charged equal what the ledger and the answers say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let backend = demo_agent(Api::Agents).await;
    let (a, b) = (agent_id(1), agent_id(2));
    let url = format!("http://{backend}");
    let (gw, admin) = gateway_with_admin(&[
        agent(
            &a,
            &url,
            Api::Agents,
            "credits_per_message = 1\nmax_usage_credits = 2",
        ),
        agent(&b, &url, Api::Agents, "rate_per_second = 1\nrate_burst = 1"),
    ])
    .await;
    let client = client();
    let mut shown = 0.0;
    for (front, n) in [(Api::Agents, 3), (Api::Guayaba, 2)] {
        for _ in 0..n {
            let r = send_chat(&client, &gw, front, &a, "hello", None, false).await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.expect("json");
            shown += body["usage"]["credits"].as_f64().expect("credits shown");
        }
    }
    let r = send_chat(&client, &gw, Api::Chatbase, &a, "hello", None, true).await;
    assert_eq!(r.status(), 200);
    let answer = read_stream("ui-message", &r.text().await.expect("stream"));
    assert!(
        answer.ended_properly && answer.errors.is_empty(),
        "{}",
        answer.raw
    );
    shown += answer.credits.expect("credits shown");

    let bad_key = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(gw.url(&chat_path(Api::Agents, &a, false)))
        .bearer_auth("agk_nothing_here")
        .json(&chat_body(Api::Agents, "hi", None, false))
        .send()
        .await
        .expect("answer");
    assert_eq!(bad_key.status(), 401);
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
    let no_credits = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(gw.url(&chat_path(Api::Agents, &a, false)))
        .bearer_auth(poor.expose())
        .json(&chat_body(Api::Agents, "hi", None, false))
        .send()
        .await
        .expect("answer");
    assert_eq!(no_credits.status(), 402);
    let first = send_chat(&client, &gw, Api::Agents, &b, "hi", None, false).await;
    assert_eq!(first.status(), 200);
    let limited = send_chat(&client, &gw, Api::Agents, &b, "hi", None, false).await;
    assert_eq!(limited.status(), 429);

    let text = scrape_until(
        admin,
        "agentgate_stream_duration_seconds_count",
        &[("front", "chatbase"), ("agent", &a)],
        1.0,
    )
    .await;
    let requests = |front: &str, agent: &str, api: &str, status: &str| {
        sample(
            &text,
            "agentgate_requests_total",
            &[
                ("front", front),
                ("agent", agent),
                ("upstream_api", api),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("agents", &a, "agents", "200"), Some(3.0), "{text}");
    assert_eq!(
        requests("guayaba", &a, "agents", "200"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests("chatbase", &a, "agents", "200"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests("agents", "-", "-", "401"), Some(1.0), "{text}");
    assert_eq!(requests("agents", &a, "agents", "402"), Some(1.0), "{text}");
    assert_eq!(requests("agents", &b, "agents", "200"), Some(1.0), "{text}");
    assert_eq!(requests("agents", &b, "agents", "429"), Some(1.0), "{text}");
    assert_eq!(total(&text, "agentgate_requests_total"), 10.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "agentgate_rate_limited_total",
            &[("front", "agents"), ("agent", &b), ("limit", "agent")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(total(&text, "agentgate_rate_limited_total"), 1.0);

    // Timings: one observation per answered request (per stream for the stream metrics).
    let count = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    let upstream = |agent: &str| {
        count(
            "agentgate_upstream_latency_seconds_count",
            &[("agent", agent), ("upstream_api", "agents")],
        )
    };
    assert_eq!(upstream(&a), Some(6.0), "{text}");
    assert_eq!(upstream(&b), Some(1.0), "{text}");
    let stream = [("front", "chatbase"), ("agent", a.as_str())];
    assert_eq!(
        count("agentgate_stream_first_byte_seconds_count", &stream),
        Some(1.0)
    );
    let overhead = |front: &str| {
        count(
            "agentgate_gateway_overhead_seconds_count",
            &[("front", front)],
        )
    };
    assert_eq!(overhead("agents"), Some(4.0), "{text}");
    assert_eq!(overhead("guayaba"), Some(2.0), "{text}");
    assert_eq!(overhead("chatbase"), Some(1.0), "{text}");
    let stream_secs = count("agentgate_stream_duration_seconds_sum", &stream).expect("sum");
    let first_byte_secs = count("agentgate_stream_first_byte_seconds_sum", &stream).expect("sum");
    assert!(
        first_byte_secs > 0.0 && first_byte_secs <= stream_secs,
        "{text}"
    );
    assert_eq!(
        count("agentgate_open_streams", &[("front", "chatbase")]),
        Some(0.0)
    );

    // Credits: A reserved 3 per admitted request (the 402 reserved nothing); what it charged
    // is what its answers showed, and the ledger agrees for A and B together.
    let credits = |name: &str, agent: &str| count(name, &[("agent", agent)]).unwrap_or(0.0);
    assert_eq!(
        credits("agentgate_credits_reserved_total", &a),
        18.0,
        "{text}"
    );
    let charged_a = credits("agentgate_credits_charged_total", &a);
    assert!(
        (charged_a - shown).abs() < 1e-9,
        "{charged_a} vs shown {shown}"
    );
    let refunded_a = credits("agentgate_credits_refunded_total", &a);
    assert!((charged_a + refunded_a - 18.0).abs() < 1e-9, "{text}");
    assert_eq!(
        credits("agentgate_credits_reserved_total", &b),
        11.0,
        "{text}"
    );
    let charged_b = credits("agentgate_credits_charged_total", &b);
    let spent = 1e9 - balance(&gw.running, TEST_ACCOUNT).await;
    assert!(
        (charged_a + charged_b - spent).abs() < 1e-6,
        "{text}\nspent {spent}"
    );
    assert_eq!(balance(&gw.running, "poor").await, 0.0);

    assert_eq!(count("agentgate_agent_up", &[("agent", &a)]), Some(1.0));
    assert_eq!(total(&text, "agentgate_config_reloads_total"), 0.0);
    assert_eq!(count("agentgate_drains_total", &[]), Some(0.0));
    // Local limits never fail open.
    assert_eq!(
        count("agentgate_rate_limit_fail_open_total", &[]),
        Some(0.0)
    );
    gw.running.shutdown().await;
}

/// Fleet limits with Redis down: requests are admitted without a verdict (fail-open), and
/// `/metrics` counts each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_admitted_while_redis_is_down_are_counted_in_metrics() {
    let backend = demo_agent(Api::Agents).await;
    let a = agent_id(1);
    // Nothing listens on port 1.
    let server = format!(
        "admin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
         [rate_limit]\nredis_url = \"redis://127.0.0.1:1/\""
    );
    let limited = agent(
        &a,
        &format!("http://{backend}"),
        Api::Agents,
        "rate_per_second = 1\nrate_burst = 1",
    );
    let gw = spawn_gateway(&config(&server, &[limited])).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    let fail_open = |text: &str| sample(text, "agentgate_rate_limit_fail_open_total", &[]);
    assert_eq!(fail_open(&scrape(admin).await), Some(0.0));
    let client = client();
    // Over the burst of 1, yet admitted: no verdict without Redis.
    for _ in 0..3 {
        let r = send_chat(&client, &gw, Api::Agents, &a, "hi", None, false).await;
        assert_eq!(r.status(), 200);
    }
    let text = scrape(admin).await;
    assert_eq!(fail_open(&text), Some(3.0), "{text}");
    gw.running.shutdown().await;
}

/// An agent whose backend fails its health check is answered 409 "agent is not running" in
/// the front's error shape, before the backend sees a chat; a healthy one is served. The check
/// carries the agent's upstream token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_its_health_check_gets_409() {
    let sick = MockUpstream::status(503).spawn().await;
    let well = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let (down, up) = (agent_id(1), agent_id(2));
    let health =
        "health_check = \"/healthz\"\nhealth_interval_ms = 100\nupstream_token = \"up-secret\"";
    let (gw, admin) = gateway_with_admin(&[
        agent(&down, &sick.url(), Api::Chatbase, health),
        agent(&up, &well.url(), Api::Chatbase, health),
    ])
    .await;
    // The first check runs at once; wait until it has marked the sick agent down.
    scrape_until(admin, "agentgate_agent_up", &[("agent", &down)], 0.0).await;
    let client = client();
    for front in [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba] {
        let r = send_chat(&client, &gw, front, &down, "hi", None, false).await;
        let body = assert_error(r, 409).await;
        assert_eq!(
            body["error"]["code"], "agent_not_running",
            "{front}: {body}"
        );
        assert_eq!(
            body["error"]["message"], "agent is not running",
            "{front}: {body}"
        );
        let r = send_chat(&client, &gw, front, &up, "hi", None, false).await;
        assert_eq!(r.status(), 200, "{front}");
    }
    assert!(sick
        .requests()
        .iter()
        .all(|r| r.method == "GET" && r.path == "/healthz"));
    let checks: Vec<_> = well
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(!checks.is_empty());
    assert!(checks
        .iter()
        .all(|r| r.path == "/healthz" && r.header("authorization") == Some("Bearer up-secret")));
    let text = scrape(admin).await;
    assert_eq!(
        sample(&text, "agentgate_agent_up", &[("agent", &up)]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "agentgate_requests_total",
            &[
                ("front", "agents"),
                ("agent", &down),
                ("upstream_api", "chatbase"),
                ("status", "409")
            ]
        ),
        Some(1.0)
    );
    // Nothing is charged for a 409.
    assert_eq!(
        sample(
            &text,
            "agentgate_credits_charged_total",
            &[("agent", &down)]
        ),
        Some(0.0)
    );
    gw.running.shutdown().await;
}

/// `/readyz` checks the store on both listeners; `/healthz` only says the process is alive.
/// During a drain, `/readyz` says "draining" (503) and the admin listener still serves the
/// metrics, which count the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_checks_the_store_and_turns_unready_while_draining() {
    let backend = demo_agent_with_delay(Api::Agents, Duration::from_millis(100)).await;
    let a = agent_id(1);
    let (gw, admin) =
        gateway_with_admin(&[agent(&a, &format!("http://{backend}"), Api::Agents, "")]).await;
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for base in [gw.url(""), format!("http://{admin}")] {
        let r = plain
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["checks"]["store"], "ok", "{body}");
        let r = plain
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
    }
    // A stream that outlives the start of the shutdown.
    let stream = send_chat(
        &client(),
        &gw,
        Api::Agents,
        &a,
        "one two three four",
        None,
        true,
    )
    .await;
    assert_eq!(stream.status(), 200);
    let Gateway {
        running, dir: _dir, ..
    } = gw;
    let shutdown = tokio::spawn(running.shutdown());
    let text = scrape_until(admin, "agentgate_drains_total", &[], 1.0).await;
    assert_eq!(
        sample(&text, "agentgate_drains_total", &[]),
        Some(1.0),
        "{text}"
    );
    let r = plain
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "draining");
    let answer = read_stream("text-done", &stream.text().await.expect("stream"));
    assert!(
        answer.ended_properly && answer.errors.is_empty(),
        "{}",
        answer.raw
    );
    shutdown.await.expect("shutdown");
    assert!(plain
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .is_err());
}

/// A valid `traceparent` reaches the backend unchanged (with its `tracestate`); without one, or
/// with a malformed one, the gateway starts a trace and sends a well-formed `traceparent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_backend() {
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let a = agent_id(1);
    let gw = spawn_gateway(&config("", &[agent(&a, &mock.url(), Api::Chatbase, "")])).await;
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases = [
        (Some(given), Some("vendor=1")),
        (None, Some("vendor=2")),
        (
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None,
        ),
        (Some("not a traceparent"), None),
    ];
    for (traceparent, tracestate) in cases {
        let mut req = client()
            .post(gw.url(&chat_path(Api::Chatbase, &a, false)))
            .json(&chat_body(Api::Chatbase, "hi", None, false));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        if let Some(ts) = tracestate {
            req = req.header("tracestate", ts);
        }
        assert_eq!(req.send().await.expect("answer").status(), 200);
    }
    let seen: Vec<_> = mock
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.header("traceparent").map(str::to_owned),
                r.header("tracestate").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[0],
        (Some(given.to_owned()), Some("vendor=1".to_owned()))
    );
    for (tp, ts) in &seen[1..] {
        let tp = tp.as_deref().expect("a traceparent is always sent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert!(parts[1]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(
            parts[1] != "0".repeat(32) && parts[2] != "0".repeat(16),
            "{tp}"
        );
        assert_eq!(ts, &None, "a new trace carries no tracestate");
    }
    assert_ne!(seen[1].0, seen[2].0, "each request starts its own trace");
    gw.running.shutdown().await;
}

/// With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`, the real binary exports each
/// request's span over OTLP/HTTP, in the client's trace, and the backend's `traceparent` names
/// that span as its parent. (`cargo test --features otlp --test ops otlp`; CI builds no feature.)
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_the_request_span_in_the_clients_trace() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    // An OTLP/HTTP collector: records every request body, answers 200.
    let collector = tokio::net::TcpListener::bind(LOOPBACK).await.expect("bind");
    let collector_addr = collector.local_addr().expect("addr");
    let exported: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let sink = exported.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = collector.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut socket).await {
                    sink.lock().expect("lock").push(request);
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agentgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
             [store]\nurl = \"sqlite://{}\"\n\
             [[front]]\napi = \"chatbase\"\nrequire_key = false\n\
             [[agent]]\nid = \"a\"\nupstream = \"{}\"\nupstream_api = \"chatbase\"\n",
            dir.path().join("agentgate.db").display(),
            mock.url()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agentgate serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "listening" {
                let _ = tx.send(v["fields"]["bound"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(PATIENCE).expect("listening");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_parent = "00f067aa0ba902b7";
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{addr}/api/v2/agents/a/chat"))
        .header("traceparent", format!("00-{trace}-{client_parent}-01"))
        .json(&serde_json::json!({"message": "hi", "stream": false}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let sent = mock.requests()[0]
        .header("traceparent")
        .expect("traceparent")
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        parts[1], trace,
        "the backend is in the client's trace: {sent}"
    );
    assert_ne!(
        parts[2], client_parent,
        "its parent is the gateway's span: {sent}"
    );
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let (trace_bytes, span_bytes) = (hex(trace), hex(parts[2]));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let found = loop {
        let found = exported.lock().expect("lock").iter().any(|r| {
            let has = |needle: &[u8]| r.body.windows(needle.len()).any(|w| w == needle);
            r.method == "POST" && r.path == "/v1/traces" && has(&trace_bytes) && has(&span_bytes)
        });
        if found || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "the request span reached the collector");
}

/// `GET /admin/v1/config` and `POST /admin/v1/config/reload` need the admin token; a reload of
/// a good file applies it (new agent served), one that changes the listeners is refused with
/// the reason, and a gateway on no file says there is nothing to reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_config_endpoint_reloads_and_refuses() {
    let backend = demo_agent(Api::Agents).await;
    let url = format!("http://{backend}");
    let a = agent_id(1);
    let (gw, admin) = gateway_with_admin(&[agent(&a, &url, Api::Agents, "")]).await;
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let status = plain
        .get(format!("http://{admin}/admin/v1/config"))
        .send()
        .await
        .expect("answer");
    assert_error(status, 401).await;
    let reload = || {
        plain
            .post(format!("http://{admin}/admin/v1/config/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let body = assert_error(reload().await.expect("answer"), 422).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no config file")),
        "{body}"
    );

    // The same config as the running one (same store file, same listeners), plus an agent.
    let db = gw.dir.path().join("agentgate.db");
    let server = format!("admin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"");
    let b = agent_id(2);
    let text = format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\n",
        config(
            &server,
            &[
                agent(&a, &url, Api::Agents, ""),
                agent(&b, &url, Api::Agents, "")
            ]
        ),
        db.display()
    );
    let path = gw.dir.path().join("agentgate.toml");
    std::fs::write(&path, &text).expect("written");
    gw.running.reloader.set_path(path.clone());
    assert_eq!(
        send_chat(&client(), &gw, Api::Agents, &b, "hi", None, false)
            .await
            .status(),
        404
    );
    let r = reload().await.expect("answer");
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.expect("json");
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert_eq!(status["last_reload"]["trigger"], "admin", "{status}");
    assert_eq!(
        send_chat(&client(), &gw, Api::Agents, &b, "hi", None, false)
            .await
            .status(),
        200
    );

    // Listeners cannot change live: refused, named, and the running config stays.
    std::fs::write(&path, text.replace(ADMIN_LISTEN, "127.0.0.3:0")).expect("written");
    let body = assert_error(reload().await.expect("answer"), 422).await;
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("admin_listen") && message.contains("restart"),
        "{message}"
    );
    let status: Value = plain
        .get(format!("http://{admin}/admin/v1/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["last_reload"]["result"], "error", "{status}");
    assert_eq!(status["last_reload"]["error"], message, "{status}");
    assert_eq!(
        send_chat(&client(), &gw, Api::Agents, &b, "hi", None, false)
            .await
            .status(),
        200
    );
    let text = scrape(admin).await;
    assert_eq!(
        sample(&text, "agentgate_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "agentgate_config_reloads_total",
            &[("result", "error")]
        ),
        Some(2.0)
    );
    gw.running.shutdown().await;
}
