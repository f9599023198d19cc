//! Live reload of the real `agentgate serve` process: a run of streams while its config file
//! changes five times (by file writes and SIGHUP; one change invalid). No stream fails, the
//! invalid config is refused with its file:line:col reason while the old one keeps serving,
//! new agents are served after the swap, and rate-limit, stream-cap and credit state survive.

mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes, SecretKey};
use agentgate::credits::{Ledger, LedgerConfig};
use agentgate::fronts::Api;
use agentgate::store::{SqliteOptions, Store};
use harness::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "reload-test-admin-token-0123456789";
const ACCOUNT: &str = "reload";
const GRANTED: f64 = 1_000_000.0;

/// The agents every version of the config has; `extra` is appended.
fn config_text(db: &Path, alpha: &str, capped: &str, alpha_price: u32, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.2:0"
admin_token = "{ADMIN_TOKEN}"
log_format = "json"

[store]
url = "sqlite://{db}"

[[front]]
api = "chatbase"
prefix = "/chatbase"

[[front]]
api = "agents"
prefix = "/agents"

[[agent]]
id = "alpha"
upstream = "{alpha}"
upstream_api = "agents"
credits_per_message = {alpha_price}
max_usage_credits = 5

[[agent]]
id = "limited"
upstream = "{alpha}"
upstream_api = "agents"
rate_per_second = 1
rate_burst = 2

[[agent]]
id = "capped"
upstream = "{capped}"
upstream_api = "chatbase"
max_concurrent_streams = 1
{extra}"#,
        db = db.display()
    )
}

fn agent_table(id: &str, upstream: &str) -> String {
    format!("\n[[agent]]\nid = \"{id}\"\nupstream = \"{upstream}\"\nupstream_api = \"agents\"\n")
}

struct Process {
    child: Child,
    main: SocketAddr,
    admin: SocketAddr,
    /// Every JSON log line so far.
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Process {
    fn start(config: &Path) -> Process {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agentgate serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let (mut main, mut admin) = (None, None);
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let bound = v["fields"]["bound"].as_str().map(str::to_owned);
                match v["fields"]["message"].as_str() {
                    Some("listening") => main = bound,
                    Some("admin listener") => admin = bound,
                    Some(m) if m.starts_with("serving") => {
                        if let (Some(tx), Some(main), Some(admin)) = (tx.take(), &main, &admin) {
                            let _ = tx.send((main.clone(), admin.clone()));
                        }
                    }
                    _ => {}
                }
                sink.lock().expect("lock").push(v);
            }
        });
        let (main, admin) = rx
            .recv_timeout(PATIENCE)
            .expect("the gateway logs its addresses and that it serves");
        Process {
            child,
            main: main.parse().expect("address"),
            admin: admin.parse().expect("address"),
            logs,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    async fn status(&self) -> Value {
        plain()
            .get(format!("http://{}/admin/v1/config", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("json")
    }

    /// Waits (up to PATIENCE) until the config status satisfies `done`.
    async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "waited for {what}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().expect("reaped");
        assert!(status.success(), "clean exit after SIGTERM: {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

fn keyed(key: &SecretKey) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.expose()).parse().expect("header"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(h)
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

fn has_agent(status: &Value, id: &str) -> bool {
    status["agents"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["id"] == id))
}

fn generation(status: &Value) -> u64 {
    status["generation"].as_u64().expect("generation")
}

/// A sync chat on the agents front: (status, credits shown).
async fn sync_chat(client: &reqwest::Client, base: &str, agent: &str) -> (u16, f64) {
    let r = client
        .post(format!("{base}/agents/api/agents/{agent}/chat"))
        .json(&serde_json::json!({"message": "hi"}))
        .send()
        .await
        .expect("answer");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    (status, body["usage"]["credits"].as_f64().unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("agentgate.db");
    let path = dir.path().join("agentgate.toml");
    let backend = demo_agent_with_delay(Api::Agents, Duration::from_millis(5)).await;
    let alpha = format!("http://{backend}");
    // A stream that stays open (its backend hangs after a few events): it holds `capped`'s one
    // stream slot across the reloads.
    let hanging = MockUpstream::sse(ui_fixture_prefix())
        .then_hang()
        .spawn()
        .await;
    let capped = hanging.url();
    let write_priced = |price: u32, extra: &str| {
        std::fs::write(&path, config_text(&db, &alpha, &capped, price, extra))
            .expect("config written")
    };
    let write = |extra: &str| write_priced(1, extra);
    write("");

    let store = Store::open_sqlite(&db, SqliteOptions::default())
        .await
        .expect("store");
    let ledger = Ledger::new(store.clone(), LedgerConfig::default());
    let spec = NewKeySpec {
        account: ACCOUNT.into(),
        kind: KeyKind::Master,
        scopes: Scopes::ALL,
        agents: None,
        expires_at: None,
        limits: KeyLimits::default(),
    };
    let key = agentgate::auth::create_key(&store, spec)
        .await
        .expect("key")
        .0;
    ledger.grant(ACCOUNT, GRANTED, None).await.expect("grant");

    let gw = Process::start(&path);
    let base = format!("http://{}", gw.main);
    let client = keyed(&key);
    assert_eq!(generation(&gw.status().await), 1);

    // The load: streams on alpha from 4 clients until told to stop; every one must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let streams = Arc::new(AtomicUsize::new(0));
    let shown = Arc::new(Mutex::new(0.0f64));
    let mut load = Vec::new();
    for c in 0..4 {
        let (client, base) = (client.clone(), base.clone());
        let (stop, streams, shown) = (stop.clone(), streams.clone(), shown.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post(format!("{base}/chatbase/api/v2/agents/alpha/chat"))
                    .json(&serde_json::json!({
                        "message": format!("client {c} stream {n} one two three four five six"),
                        "stream": true,
                    }))
                    .send()
                    .await
                    .expect("stream head");
                assert_eq!(r.status(), 200, "client {c} stream {n}");
                let answer = read_stream("ui-message", &r.text().await.expect("stream body"));
                assert!(
                    answer.ended_properly && answer.errors.is_empty(),
                    "client {c} stream {n}: {}",
                    answer.raw
                );
                *shown.lock().expect("lock") += answer.credits.expect("credits shown");
                streams.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let mut charged_sync = 0.0;

    // Hold capped's only stream slot; its first events have passed, so when the client leaves
    // it is charged the base cost (SPEC: never zero where the backend produced output).
    let mut held = client
        .post(format!("{base}/chatbase/api/v2/agents/capped/chat"))
        .json(&serde_json::json!({"message": "hold", "stream": true}))
        .send()
        .await
        .expect("held stream");
    assert_eq!(held.status(), 200);
    assert!(held.chunk().await.expect("first events").is_some());
    charged_sync += 1.0;

    // Change 1 (file write, picked up by the watcher): a new agent, served after the swap.
    let beta = agent_table("beta", &alpha);
    write(&beta);
    gw.wait_status("beta", |s| has_agent(s, "beta")).await;
    let (status, credits) = sync_chat(&client, &base, "beta").await;
    assert_eq!(status, 200);
    charged_sync += credits;

    // Change 2 (file write and SIGHUP): invalid. Refused with its reason; the old config
    // keeps serving.
    let invalid = format!("{beta}credits_per_message = -1\n");
    write(&invalid);
    gw.signal("HUP");
    let status = gw
        .wait_status("the refusal", |s| s["last_reload"]["result"] == "error")
        .await;
    let reason = status["last_reload"]["error"].as_str().expect("reason");
    let text = config_text(&db, &alpha, &capped, 1, &invalid);
    let line = text
        .lines()
        .position(|l| l.starts_with("credits_per_message = -1"))
        .expect("the bad line")
        + 1;
    assert!(
        reason.contains(&format!("agentgate.toml:{line}:"))
            && reason.contains("credits_per_message: must be a finite number ≥ 0"),
        "{reason}"
    );
    assert!(has_agent(&status, "beta"), "the old config stays: {status}");
    let (status, credits) = sync_chat(&client, &base, "beta").await;
    assert_eq!(status, 200, "beta still served on the old config");
    charged_sync += credits;
    let logged = gw.logs.lock().expect("lock").iter().any(|v| {
        v["fields"]["message"] == "config reload refused; the running config stays"
            && v["fields"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("credits_per_message"))
    });
    assert!(logged, "the refusal is logged with its reason");
    // JSON logs: each request's line carries its span (request id, front, agent, trace id).
    let spanned = gw.logs.lock().expect("lock").iter().any(|v| {
        let span = &v["span"];
        v["fields"]["message"] == "request"
            && span["name"] == "request"
            && span["request_id"].as_str().is_some_and(|id| !id.is_empty())
            && span["front"] == "agents"
            && span["agent"] == "beta"
            && span["trace_id"].as_str().is_some_and(|t| t.len() == 32)
    });
    assert!(spanned, "request lines carry the request span");

    // Change 3 (file write, then SIGHUP): fixed, and a third agent.
    let gamma = format!("{beta}{}", agent_table("gamma", &alpha));
    write(&gamma);
    gw.signal("HUP");
    let status = gw.wait_status("gamma", |s| has_agent(s, "gamma")).await;
    assert!(generation(&status) >= 3, "{status}");
    let (status, credits) = sync_chat(&client, &base, "gamma").await;
    assert_eq!(status, 200);
    charged_sync += credits;

    // The stream slot taken before the reloads is still taken: capped refuses a second one.
    let second = client
        .post(format!("{base}/chatbase/api/v2/agents/capped/chat"))
        .json(&serde_json::json!({"message": "second", "stream": true}))
        .send()
        .await
        .expect("answer");
    assert_eq!(second.status(), 429, "stream caps survive reloads");
    drop(held);

    // Rate-limit state survives a reload: `limited` allows a burst of 2 at 1/s; two requests,
    // a reload (change 4: SIGHUP, same file), a third within the second must be refused. On a
    // slow machine the third may come late enough to be allowed; then try again.
    let mut proven = false;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2100)).await; // the bucket refills
        let before = gw.status().await;
        let burst = Instant::now();
        for _ in 0..2 {
            let (status, credits) = sync_chat(&client, &base, "limited").await;
            assert_eq!(status, 200);
            charged_sync += credits;
        }
        gw.signal("HUP");
        gw.wait_status("the SIGHUP reload", |s| generation(s) > generation(&before))
            .await;
        let (status, credits) = sync_chat(&client, &base, "limited").await;
        charged_sync += credits;
        if burst.elapsed() < Duration::from_millis(900) {
            assert_eq!(status, 429, "the limiter's state survived the reload");
            proven = true;
            break;
        }
    }
    assert!(proven, "could not fit a burst and a reload within a second");

    // Change 5 (file write and SIGHUP): beta removed, alpha's base price 1 → 3. A stream that started
    // before the swap finishes on its own config (price 1); the same chat after it costs 2 more.
    // 400 words at 5 ms each: the stream runs ~2 s, the SIGHUP swap takes milliseconds.
    let long_message = vec!["word"; 400].join(" ");
    let long_stream = |client: reqwest::Client, base: String, message: String| async move {
        let r = client
            .post(format!("{base}/chatbase/api/v2/agents/alpha/chat"))
            .json(&serde_json::json!({"message": message, "stream": true}))
            .send()
            .await
            .expect("stream head");
        assert_eq!(r.status(), 200);
        r
    };
    let mut before = long_stream(client.clone(), base.clone(), long_message.clone()).await;
    let mut early = String::new();
    let first = before.chunk().await.expect("read").expect("first events");
    early.push_str(&String::from_utf8_lossy(&first));
    let without_beta = agent_table("gamma", &alpha);
    write_priced(3, &without_beta);
    gw.signal("HUP");
    gw.wait_status("beta gone", |s| !has_agent(s, "beta")).await;
    let rest = before.text().await.expect("rest of the stream");
    let old_price = read_stream("ui-message", &format!("{early}{rest}"));
    assert!(
        old_price.ended_properly && old_price.errors.is_empty(),
        "{}",
        old_price.raw
    );
    let after = long_stream(client.clone(), base.clone(), long_message).await;
    let new_price = read_stream("ui-message", &after.text().await.expect("stream"));
    let (old_credits, new_credits) = (
        old_price.credits.expect("credits"),
        new_price.credits.expect("credits"),
    );
    assert!(
        (new_credits - old_credits - 2.0).abs() < 1e-9,
        "a stream keeps its config: {old_credits} before the swap, {new_credits} after"
    );
    charged_sync += old_credits + new_credits;
    assert_eq!(sync_chat(&client, &base, "beta").await.0, 404);
    let (status, credits) = sync_chat(&client, &base, "gamma").await;
    assert_eq!(status, 200);
    charged_sync += credits;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no stream failed");
    }
    let streams = streams.load(Ordering::Relaxed);
    assert!(
        streams >= 20,
        "only {streams} streams ran during the reloads"
    );

    let metrics = plain()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let reloads = |result: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "agentgate_config_reloads_total{{result=\"{result}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(reloads("error") >= 1.0, "{metrics}");
    assert!(reloads("ok") >= 4.0, "{metrics}");
    gw.stop();

    // Credits survive too: what the ledger took is exactly what the answers showed.
    ledger.flush().await.expect("flush");
    let spent = GRANTED - ledger.balance(ACCOUNT).await.expect("balance");
    let shown = *shown.lock().expect("lock") + charged_sync;
    assert!(
        (spent - shown).abs() < 1e-6,
        "ledger {spent} vs shown {shown} over {streams} streams"
    );
    eprintln!("{streams} streams across five config changes; {spent} credits charged = shown");
}
