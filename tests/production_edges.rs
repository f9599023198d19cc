//! Edges real deployments trip on (issue 12 items 8–11 and 13, issue 19 item 12), over real
//! loopback sockets: timeouts that hold on their own, fractional rates, reservations sized to
//! the balance, demo streams whose steps close, and what a refused key is told.

mod harness;

use std::time::{Duration, Instant};

use agentgate::fronts::Api;
use harness::*;

// ------------------------------------------------------------------------- first-byte timeout --

/// `first_byte_timeout_ms = 1500` with the default 2 s connect timeout: a backend that accepts
/// and never answers gets a 504 at 1.5 s on every front, streamed and sync — not at
/// connect + first byte (3.5 s). The upper bound is generous (a loaded machine), yet well
/// below the 3.5 s the two timeouts added up to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_holds_on_its_own_on_every_front() {
    let mock = MockUpstream::silent().spawn().await;
    let id = agent_id(42);
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &id,
            &mock.url(),
            Api::Chatbase,
            "first_byte_timeout_ms = 1500",
        )],
    ))
    .await;
    let gw = std::sync::Arc::new(gw);
    let mut runs = Vec::new();
    for front in SEED_FRONTS {
        for stream in [true, false] {
            let (gw, id) = (gw.clone(), id.clone());
            runs.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = send_chat(&client(), &gw, front, &id, "hi", None, stream).await;
                let elapsed = t0.elapsed();
                let body = assert_error(r, 504).await;
                (front, stream, elapsed, body)
            }));
        }
    }
    for run in runs {
        let (front, stream, elapsed, body) = run.await.expect("request task");
        assert_eq!(body["error"]["code"], "gateway_timeout", "{front} {body}");
        assert!(
            elapsed >= Duration::from_millis(1500),
            "{front} stream={stream}: 504 after {elapsed:?}, before the timeout"
        );
        assert!(
            elapsed < Duration::from_millis(2200),
            "{front} stream={stream}: 504 after {elapsed:?}, not within the 1.5 s timeout"
        );
    }
    assert_eq!(mock.requests().len(), 8, "each chat reached the backend");
}

// ------------------------------------------------------------------------------ demo steps --

/// The pharen and chatbase demo backends (ui-message) on the weather path: every step they
/// open is closed, and the AI SDK's own reader takes the stream without a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backends_close_every_step_they_open() {
    for api in [Api::Pharen, Api::Chatbase] {
        let addr = demo_agent(api).await;
        let path = chat_path(api, &agent_id(1), true).replacen(&format!("/{api}"), "", 1);
        let body = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("client")
            .post(format!("http://{addr}{path}"))
            .header("accept", "text/event-stream")
            .json(&chat_body(api, "What is the weather in Paris?", None, true))
            .send()
            .await
            .expect("demo backend answers")
            .text()
            .await
            .expect("stream read");
        let types: Vec<String> = read_sse(&body).iter().filter_map(Sse::ty).collect();
        let count = |t: &str| types.iter().filter(|x| *x == t).count();
        assert!(
            count("tool-input-available") > 0,
            "{api}: weather path {types:?}"
        );
        assert_eq!(count("start-step"), 2, "{api}: {types:?}");
        assert_eq!(
            count("finish-step"),
            count("start-step"),
            "{api}: {types:?}"
        );
        // Steps nest nowhere: each finish-step closes the step opened before it.
        let mut open = 0i32;
        for t in &types {
            match t.as_str() {
                "start-step" => open += 1,
                "finish-step" => open -= 1,
                _ => {}
            }
            assert!((0..=1).contains(&open), "{api}: {types:?}");
        }
        assert_eq!(open, 0, "{api}: {types:?}");
        if let Some(verdict) = check_ui_stream(&body).await {
            assert_eq!(verdict["ok"], true, "{api}: AI SDK verdict {verdict}");
        }
    }
}

// --------------------------------------------------------------------- keys and their refusals --

/// A key with a valid checksum for `public_id` and a made-up secret (what a client probing
/// for ids could build: the checksum is public knowledge, CRC32 in base62).
fn forged_key(public_id: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("agk_{public_id}_{}", "Z".repeat(22));
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    let key = format!("{body}{}", String::from_utf8_lossy(&sum));
    agentgate::auth::parse_key(&key).expect("the forged key is well-formed");
    key
}

async fn refused(gw: &Gateway, authorization: Option<&str>, front: Api) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client")
        .post(gw.url(&chat_path(front, &agent_id(1), false)))
        .json(&chat_body(front, "hi", None, false));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.send().await.expect("gateway answers")
}

/// Every 401 names the scheme (`WWW-Authenticate: Bearer`); a bare key where only `Bearer`
/// is taken is told how to send it; unknown and revoked keys get the same message; and an id
/// no key has costs what a known id does — one store lookup, then the cache and a
/// constant-time compare — so the answer's timing does not tell whether the id exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_are_told_alike_and_how_to_send_a_key() {
    let demo = demo_agent(Api::Agents).await;
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &agent_id(1),
            &format!("http://{demo}"),
            Api::Agents,
            "",
        )],
    ))
    .await;
    let running = &gw.running;
    let spec = |account: &str| agentgate::auth::NewKeySpec {
        account: account.into(),
        kind: agentgate::auth::KeyKind::Master,
        scopes: agentgate::auth::Scopes::ALL,
        agents: None,
        expires_at: None,
        limits: Default::default(),
    };
    let known = create_key(running, spec("acme")).await;

    // A bare key on every front but pharen: 401 saying how to send it.
    for front in [Api::Chatbase, Api::Agents, Api::Guayaba] {
        let r = refused(&gw, Some(known.expose()), front).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{front}");
        let body = assert_error(r, 401).await;
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("Authorization: Bearer"),
            "{front}: {message}"
        );
    }
    // No key, and a malformed one: 401 with the scheme too.
    for auth in [None, Some("Bearer nope")] {
        let r = refused(&gw, auth, Api::Pharen).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{auth:?}");
        assert_error(r, 401).await;
    }

    // An id no key has, and a known id with a wrong secret: after the first presentation
    // neither costs a store lookup — an unknown id is cached (against a hash no key has)
    // exactly as a known one is. (No revocation happens meanwhile to empty the cache.)
    let unknown_id = forged_key(agentgate::auth::SecretKey::generate().public_id());
    let wrong_secret = forged_key(known.public_id());
    let auth = &running.policy.auth;
    let mut messages = Vec::new();
    for key in [&unknown_id, &wrong_secret] {
        let header = format!("Bearer {key}");
        let body = assert_error(refused(&gw, Some(&header), Api::Agents).await, 401).await;
        messages.push(body["error"]["message"].clone());
        let before = auth.store_lookups();
        for _ in 0..3 {
            let r = refused(&gw, Some(&header), Api::Agents).await;
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            assert_eq!(r.status(), 401);
        }
        assert_eq!(auth.store_lookups(), before, "{key}: looked up again");
    }

    // A revoked key is told what an unknown one is.
    let revoked = create_key(running, spec("acme")).await;
    running
        .policy
        .store
        .revoke_key(revoked.public_id(), agentgate::store::now_ms())
        .await
        .expect("revoked");
    let header = format!("Bearer {}", revoked.expose());
    let body = assert_error(refused(&gw, Some(&header), Api::Agents).await, 401).await;
    messages.push(body["error"]["message"].clone());
    assert_eq!(messages[0], messages[1], "{messages:?}");
    assert_eq!(messages[0], messages[2], "{messages:?}");

    // The real key still works.
    running
        .policy
        .ledger
        .grant("acme", 100.0, None)
        .await
        .expect("granted");
    let ok = send_chat(
        &client_with(&known),
        &gw,
        Api::Agents,
        &agent_id(1),
        "hi",
        None,
        false,
    )
    .await;
    assert_eq!(ok.status(), 200);
}

/// A UUID agent id in upper case names the same agent, on chat and history paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upper_case_agent_uuid_is_the_same_agent() {
    let demo = demo_agent(Api::Agents).await;
    let id = "00000000-0000-4000-8000-00000000000a";
    let gw = spawn_gateway(&config(
        "",
        &[agent(id, &format!("http://{demo}"), Api::Agents, "")],
    ))
    .await;
    let upper = id.to_uppercase();
    let c = client();
    for front in SEED_FRONTS {
        let r = send_chat(&c, &gw, front, &upper, "hi", None, false).await;
        assert_eq!(
            r.status(),
            200,
            "{front}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let history = c
        .get(gw.url(&format!("/agents/api/agents/{upper}/history")))
        .send()
        .await
        .expect("history");
    assert_eq!(history.status(), 200);
    let body: serde_json::Value = history.json().await.expect("json");
    // The agents front's chat went to the default conversation: it is the same agent's.
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2), "{body}");
    // Another UUID is still unknown.
    let other = "00000000-0000-4000-8000-00000000000B";
    let r = send_chat(&c, &gw, Api::Agents, other, "hi", None, false).await;
    assert_error(r, 404).await;
}

// ------------------------------------------------------------------------------ operator CLI --

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(args)
        .output()
        .expect("agentgate runs")
}

/// `keys create --agents` refuses agents the config does not know (and takes a UUID in either
/// case as the config's agent); `credits balance` of an unknown account says so, exit 1.
#[test]
fn cli_refuses_unknown_agents_and_accounts() {
    let dir = tempfile::tempdir().expect("dir");
    let store = format!("sqlite://{}", dir.path().join("agentgate.db").display());
    let config = dir.path().join("agentgate.toml");
    let id = "00000000-0000-4000-8000-00000000000a";
    std::fs::write(
        &config,
        config_text(&[agent(id, "http://127.0.0.1:9", Api::Agents, "")]),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let create = |agents: &str| {
        cli(&[
            "keys",
            "create",
            "--store",
            &store,
            "--config",
            config,
            "--account",
            "acme",
            "--agents",
            agents,
        ])
    };
    let out = create("00000000-0000-4000-8000-00000000000b");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`00000000-0000-4000-8000-00000000000b` is not an agent") && err.contains(id),
        "{err}"
    );
    let out = create(&id.to_uppercase());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cli(&[
        "keys",
        "list",
        "--store",
        &store,
        "--account",
        "acme",
        "--format",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("keys list JSON");
    assert_eq!(
        listed["keys"][0]["agents"],
        serde_json::json!([id]),
        "{listed}"
    );

    let out = cli(&[
        "credits",
        "grant",
        "--store",
        &store,
        "--account",
        "acme",
        "--credits",
        "5",
    ]);
    assert!(out.status.success());
    let out = cli(&["credits", "balance", "--store", &store, "--account", "acme"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    let out = cli(&[
        "credits",
        "balance",
        "--store",
        &store,
        "--account",
        "acme2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no account `acme2`"), "{err}");
}

/// The whole config text of [`config`] with a `[store]` of its own absent (the CLI is given
/// `--store`).
fn config_text(agents: &[String]) -> String {
    config("", agents)
}

// ------------------------------------------------------------------------------ recovery log --

/// Recovery at start logs what it charged in credits (0.5), not millicredits (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_logs_credits() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("agentgate.db");
    {
        let store = agentgate::store::Store::open(&format!("sqlite://{}", db.display()))
            .await
            .expect("store");
        let ledger = agentgate::credits::Ledger::new(store.clone(), Default::default());
        ledger.grant("acme", 10.0, None).await.expect("granted");
        let now = agentgate::store::now_ms();
        store
            .reserve(agentgate::store::NewReservation {
                id: "orphan".into(),
                account: "acme".into(),
                key_id: "k".into(),
                agent_id: "a".into(),
                reserved: 3000,
                fallback: 500,
                created_at: now - 10_000,
                expires_at: now - 1,
            })
            .await
            .expect("an open reservation a crash left behind");
        ledger.flush().await.expect("durable");
    }
    let path = dir.path().join("agentgate.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[store]\nurl = \"sqlite://{}\"\n",
            config(
                "log_format = \"json\"",
                &[agent(&agent_id(1), "http://127.0.0.1:9", Api::Agents, "")]
            ),
            db.display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if message == "recovered an expired reservation" || message == "listening" {
                let _ = tx.send(v);
            }
        }
    });
    // Recovery runs before the listeners open: stop at the first of the two lines.
    let recovered = rx
        .recv_timeout(PATIENCE)
        .ok()
        .filter(|line| line["fields"]["message"] == "recovered an expired reservation");
    let _ = child.kill();
    let _ = child.wait();
    let line = recovered.expect("the recovery is logged before the gateway listens");
    assert_eq!(line["fields"]["account"], "acme", "{line}");
    assert_eq!(line["fields"]["charged"].as_f64(), Some(0.5), "{line}");
}

// ----------------------------------------------------------------------------- fractional rates --

/// Sends a sync chat with `key` to the agents front and returns status and headers.
async fn chat_headers(gw: &Gateway, key: &str, agent: &str) -> (u16, reqwest::header::HeaderMap) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client")
        .post(gw.url(&chat_path(Api::Agents, agent, false)))
        .bearer_auth(key)
        .json(&chat_body(Api::Agents, "hi", None, false))
        .send()
        .await
        .expect("gateway answers");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let _ = r.text().await;
    (status, headers)
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
}

/// Right after an admitted request, the next is refused until the real interval has passed:
/// its `Retry-After` covers what is left of it. Asserts nothing about throughput: only what
/// the two answers say, allowing for however long the machine took between them.
fn assert_refused_for_the_interval(
    (status, h): (u16, reqwest::header::HeaderMap),
    interval_secs: u64,
    between: Duration,
) {
    assert_eq!(status, 429, "{h:?}");
    let retry: u64 = header(&h, "retry-after").parse().expect("whole seconds");
    assert!(retry <= interval_secs, "Retry-After {retry}");
    assert!(
        retry + between.as_secs() >= interval_secs,
        "Retry-After {retry} after {between:?}: not the {interval_secs} s interval"
    );
}

/// `rate_per_second = 0.2`, `rate_burst = 1` on an agent: one request per 5 s, and the
/// headers say so (`q=1;w=5`), with local limits and with the fleet's (Redis) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fractional_agent_rate_is_one_request_per_interval() {
    let demo = demo_agent(Api::Agents).await;
    let redis = redis_reachable().await;
    for fleet in [false, true] {
        if fleet && redis.is_none() {
            eprintln!("SKIPPED (fleet half): Redis is unreachable");
            continue;
        }
        let rate_limit = match &redis {
            Some(url) if fleet => format!(
                "\n[rate_limit]\nredis_url = \"{url}\"\nkey_prefix = \"agentgate-test-{}\"\n",
                uuid::Uuid::new_v4().simple()
            ),
            _ => String::new(),
        };
        let id = agent_id(7);
        let gw = spawn_gateway(&format!(
            "{}{rate_limit}",
            config(
                "",
                &[agent(
                    &id,
                    &format!("http://{demo}"),
                    Api::Agents,
                    "rate_per_second = 0.2\nrate_burst = 1",
                )],
            )
        ))
        .await;
        let t0 = std::time::Instant::now();
        let (status, h) = chat_headers(&gw, test_key().expose(), &id).await;
        assert_eq!(status, 200, "fleet={fleet}");
        assert_eq!(
            header(&h, "ratelimit-policy"),
            "\"agent\";q=1;w=5",
            "fleet={fleet}"
        );
        assert_eq!(
            header(&h, "ratelimit"),
            "\"agent\";r=0;t=5",
            "fleet={fleet}"
        );
        let second = chat_headers(&gw, test_key().expose(), &id).await;
        let between = t0.elapsed();
        assert_eq!(
            header(&second.1, "ratelimit-policy"),
            "\"agent\";q=1;w=5",
            "fleet={fleet}"
        );
        assert_refused_for_the_interval(second, 5, between);
    }
}

/// `keys create --rate-per-second 0.5` is accepted, and the key gets one request per 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_with_a_fractional_rate_is_limited_to_it() {
    let demo = demo_agent(Api::Agents).await;
    let id = agent_id(7);
    let gw = spawn_gateway(&config(
        "",
        &[agent(&id, &format!("http://{demo}"), Api::Agents, "")],
    ))
    .await;
    let store = format!("sqlite://{}", gw.dir.path().join("agentgate.db").display());
    let out = cli(&[
        "keys",
        "create",
        "--store",
        &store,
        "--account",
        harness::TEST_ACCOUNT,
        "--kind",
        "master",
        "--rate-per-second",
        "0.5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .expect("key line")
        .trim();
    let key = agentgate::auth::parse_key(secret).expect("a key");
    let listed = cli(&["keys", "list", "--store", &store, "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let mine = listed["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["public_id"] == key.public_id()))
        .expect("listed");
    assert_eq!(mine["rate_per_second"].as_f64(), Some(0.5), "{mine}");
    let t0 = std::time::Instant::now();
    let (status, h) = chat_headers(&gw, secret, &id).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "ratelimit-policy"), "\"key\";q=1;w=2");
    let second = chat_headers(&gw, secret, &id).await;
    assert_refused_for_the_interval(second, 2, t0.elapsed());
}

/// The Redis of the fleet tests, if one answers.
async fn redis_reachable() -> Option<String> {
    let url =
        std::env::var("AGENTGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let ping = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Some(_)) => Some(url),
        _ => None,
    }
}

// ------------------------------------------------------------------- reserve = "available" --

/// A master key of `account`, which is granted `credits`.
async fn funded_key(gw: &Gateway, account: &str, credits: f64) -> agentgate::auth::SecretKey {
    let key = create_key(
        &gw.running,
        agentgate::auth::NewKeySpec {
            account: account.into(),
            kind: agentgate::auth::KeyKind::Master,
            scopes: agentgate::auth::Scopes::ALL,
            agents: None,
            expires_at: None,
            limits: Default::default(),
        },
    )
    .await;
    gw.running
        .policy
        .ledger
        .grant(account, credits, None)
        .await
        .expect("granted");
    key
}

/// With 3 credits, a chat that costs 2 (base 1 + the demo's usage 1) is refused by an agent
/// reserving base + cap (11), and served by one with `reserve = "available"`, which reserves
/// what the account holds and charges what the answer cost; usage past what is left is
/// clamped to the reservation, and an account below the base cost gets 402 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_available_serves_a_small_balance() {
    let demo = demo_agent(Api::Agents).await;
    let url = format!("http://{demo}");
    let (cap, available) = (agent_id(1), agent_id(2));
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(&cap, &url, Api::Agents, ""),
            agent(&available, &url, Api::Agents, "reserve = \"available\""),
        ],
    ))
    .await;
    let key = funded_key(&gw, "small", 3.0).await;
    let c = client_with(&key);
    let r = send_chat(&c, &gw, Api::Chatbase, &cap, "hi", None, false).await;
    let body = assert_error(r, 402).await;
    assert_eq!(
        body["error"]["details"]["needed"].as_f64(),
        Some(11.0),
        "{body}"
    );

    let chat = |agent: String| {
        let c = c.clone();
        let gw = &gw;
        async move {
            let r = send_chat(&c, gw, Api::Chatbase, &agent, "hi", None, false).await;
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.expect("json");
            read_sync(Api::Chatbase, &v).credits
        }
    };
    assert_eq!(chat(available.clone()).await, Some(2.0));
    assert_eq!(balance(&gw.running, "small").await, 1.0);
    // 1 credit left, the base cost: the demo's usage (1) is clamped to the reservation (0).
    assert_eq!(chat(available.clone()).await, Some(1.0));
    assert_eq!(balance(&gw.running, "small").await, 0.0);
    let r = send_chat(&c, &gw, Api::Chatbase, &available, "hi", None, false).await;
    let body = assert_error(r, 402).await;
    assert_eq!(
        body["error"]["details"]["needed"].as_f64(),
        Some(1.0),
        "{body}"
    );
    assert_eq!(balance(&gw.running, "small").await, 0.0);
}

/// `reserve = "available"` with output pricing: the stream is ended properly by the
/// mid-stream credit limit once the account's credits are spent, and charges exactly them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_available_ends_a_stream_when_the_credits_are_spent() {
    let demo = demo_agent(Api::Agents).await;
    let id = agent_id(3);
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &id,
            &format!("http://{demo}"),
            Api::Agents,
            "reserve = \"available\"\ncredits_per_1k_output_chars = 100",
        )],
    ))
    .await;
    let key = funded_key(&gw, "tiny", 1.5).await;
    let r = send_chat(
        &client_with(&key),
        &gw,
        Api::Chatbase,
        &id,
        "a message long enough to spend the half credit left",
        None,
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("stream");
    let answer = read_stream("ui-message", &body);
    assert!(answer.ended_properly, "{body}");
    assert_eq!(answer.credits, Some(1.5), "{body}");
    assert!(body.contains("\"finishReason\":\"length\""), "{body}");
    assert!(body.contains("\"creditsExhausted\":true"), "{body}");
    assert_eq!(balance(&gw.running, "tiny").await, 0.0);
}

/// A team chat where every member is refused for want of credits answers 402, not 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_chat_with_every_member_refused_is_402() {
    let demo = demo_agent(Api::Agents).await;
    let url = format!("http://{demo}");
    let (a, b) = (agent_id(1), agent_id(2));
    let gw = spawn_gateway(&format!(
        "{}\n[[team]]\nid = \"duo\"\nmembers = [\"{a}\", \"{b}\"]\n",
        config(
            "",
            &[
                agent(&a, &url, Api::Agents, ""),
                agent(&b, &url, Api::Agents, ""),
            ],
        )
    ))
    .await;
    let key = funded_key(&gw, "poor", 0.5).await;
    let r = client_with(&key)
        .post(gw.url("/agents/api/teams/duo/chat"))
        .json(&serde_json::json!({ "message": "Name ideas?" }))
        .send()
        .await
        .expect("answer");
    let body = assert_error(r, 402).await;
    let responses = body["error"]["details"]["responses"]
        .as_array()
        .expect("each member's refusal");
    assert_eq!(responses.len(), 2, "{body}");
    for m in responses {
        assert_eq!(m["error"]["code"], "insufficient_credits", "{body}");
    }
    assert_eq!(balance(&gw.running, "poor").await, 0.5);
}
