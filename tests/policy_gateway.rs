//! Keys, scopes, limits and credits proven end to end: real loopback sockets, real SQLite files,
//! the real `agentgate` binary killed with SIGKILL. The library-level properties are in the
//! other `policy_*` tests; these go through the gateway's pipeline and the fronts' wire formats.

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes, SecretKey};
use agentgate::credits::{from_milli, to_milli, Ledger, LedgerConfig};
use agentgate::fronts::Api;
use agentgate::store::{now_ms, SqliteOptions, Store, UsageFilter};
use harness::process::ServeProcess;
use harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};

const ALL_FRONTS: [Api; 4] = [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba];

/// The text of every delta the paced backend writes: 10 characters.
const DELTA: &str = "abcdefghi ";

// ----------------------------------------------------------------------- paced backend --

/// How the paced backend answers.
struct PacedSpec {
    /// Text deltas per answer, unless the message says `deltas=N`.
    deltas: usize,
    /// Pause after each delta.
    pace: Duration,
    /// `usage.credits` reported on the finish.
    usage: f64,
    /// Before delta `.0`, wait for a permit of `.1` (a stream held open on purpose).
    hold: Option<(usize, Arc<Semaphore>)>,
}

/// What the paced backend did for one request, by the `x-request-id` the gateway sent.
#[derive(Debug, Clone, Default)]
struct Served {
    request_id: String,
    /// Deltas handed to the socket.
    written: usize,
    /// The whole answer was written.
    completed: bool,
    /// The gateway closed the connection before the answer was complete.
    peer_closed: bool,
}

/// A ui-message backend (the `chatbase` API) on raw TCP that streams [`DELTA`]s at a pace and
/// notices when the gateway hangs up on it.
#[derive(Clone)]
struct Paced {
    addr: SocketAddr,
    served: Arc<Mutex<Vec<Served>>>,
}

impl Paced {
    async fn spawn(spec: PacedSpec) -> Paced {
        let listener = TcpListener::bind(LOOPBACK)
            .await
            .expect("bind paced backend");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(Mutex::new(Vec::new()));
        let spec = Arc::new(spec);
        let state = served.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(paced_serve(spec.clone(), socket, state.clone()));
            }
        });
        Paced { addr, served }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.served.lock().expect("lock").len()
    }

    fn served(&self, request_id: &str) -> Option<Served> {
        self.served
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.request_id == request_id)
            .cloned()
    }

    /// Waits until the answer to `request_id` was written whole or cut by the gateway.
    async fn outcome(&self, request_id: &str) -> Served {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.served(request_id) {
                if s.completed || s.peer_closed {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "backend never finished nor lost {request_id}: {:?}",
                self.served(request_id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn paced_serve(spec: Arc<PacedSpec>, mut socket: TcpStream, served: Arc<Mutex<Vec<Served>>>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let deltas = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|v| {
            v["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("deltas="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(spec.deltas);
    let index = {
        let mut s = served.lock().expect("lock");
        s.push(Served {
            request_id: request
                .header("x-request-id")
                .unwrap_or_default()
                .to_owned(),
            ..Served::default()
        });
        s.len() - 1
    };
    let update = |f: &dyn Fn(&mut Served)| f(&mut served.lock().expect("lock")[index]);
    let (mut read, mut write) = socket.into_split();
    let writer = async {
        write
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                  transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            )
            .await?;
        let start =
            "data: {\"type\":\"start\"}\n\ndata: {\"type\":\"text-start\",\"id\":\"t\"}\n\n";
        write_chunk_to(&mut write, start).await?;
        let delta =
            format!("data: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"{DELTA}\"}}\n\n");
        for i in 0..deltas {
            if let Some((at, gate)) = &spec.hold {
                if i == *at {
                    let _permit = gate.acquire().await.expect("gate");
                }
            }
            write_chunk_to(&mut write, &delta).await?;
            update(&|s| s.written = i + 1);
            tokio::time::sleep(spec.pace).await;
        }
        let end = format!(
            "data: {{\"type\":\"text-end\",\"id\":\"t\"}}\n\n\
             data: {{\"type\":\"finish\",\"messageMetadata\":{{\"usage\":{{\"credits\":{}}}}}}}\n\n\
             data: [DONE]\n\n",
            spec.usage
        );
        write_chunk_to(&mut write, &end).await?;
        write.write_all(b"0\r\n\r\n").await?;
        write.flush().await
    };
    let reader = async {
        let mut sink = [0u8; 256];
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        written = writer => match written {
            Ok(()) => update(&|s| s.completed = true),
            Err(_) => update(&|s| s.peer_closed = true),
        },
        () = reader => update(&|s| s.peer_closed = true),
    }
}

async fn write_chunk_to(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    piece: &str,
) -> std::io::Result<()> {
    let framed = format!("{:x}\r\n{piece}\r\n", piece.len());
    write.write_all(framed.as_bytes()).await?;
    write.flush().await
}

// ------------------------------------------------------------------------------- helpers --

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

fn agent_key(account: &str, scopes: Scopes, agents: Option<&[&str]>) -> NewKeySpec {
    NewKeySpec {
        kind: KeyKind::Agent,
        scopes,
        agents: agents.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        ..master(account)
    }
}

/// A client that sends no key of its own.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("reqwest client")
}

/// A client that sends `key` as `Authorization: Bearer`.
/// A chat request on `front` carrying our own request id (the gateway adopts it, so the
/// ledger's reservation and the backend's request can be found by it).
fn chat(
    client: &reqwest::Client,
    base: &str,
    front: Api,
    agent: &str,
    stream: bool,
    message: &str,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(format!("{base}{}", chat_path(front, agent, stream)))
        .json(&chat_body(front, message, None, stream));
    if stream {
        req = req.header("accept", "text/event-stream");
    }
    req
}

/// Waits until no reservation of the store is pending.
async fn no_pending(store: &Store, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let n = store.pending_count().await.expect("pending count");
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} reservations still pending after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The part of an SSE body made of whole events.
fn whole_events(body: &str) -> &str {
    body.rfind("\n\n").map_or("", |i| &body[..i + 2])
}

fn store_of(gw: &Gateway) -> &Store {
    &gw.running.policy.store
}

// ------------------------------------------------------- 1. a thousand racing requests --

/// 1,000 requests released at once against 100 credits at 1 credit each, over HTTP/2
/// connections: exactly 100 are admitted and reach the backend, the rest get 402 in their
/// front's error body, the balance sampled throughout never goes below 0 and ends at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_race_for_a_hundred_credits() {
    const N: usize = 1000;
    const ACCOUNT: &str = "hundred";
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let id = agent_id(1);
    // The fixture reports 1 credit of usage; a cap of 0 makes every answer cost exactly 1.
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &id,
            &mock.url(),
            Api::Chatbase,
            "credits_per_message = 1\nmax_usage_credits = 0",
        )],
    ))
    .await;
    let key = create_key(&gw.running, master(ACCOUNT)).await;
    let ledger = gw.running.policy.ledger.clone();
    ledger.grant(ACCOUNT, 100.0, None).await.expect("grant");

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.expose()).parse().expect("header"),
    );
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .default_headers(headers.clone())
            .timeout(PATIENCE)
            .build()
            .expect("h2 client");
        // Open the connection before the race.
        let r = c.get(gw.url("/healthz")).send().await.expect("healthz");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        clients.push(c);
    }

    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (ledger, done) = (ledger.clone(), done.clone());
        async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::Acquire) {
                samples.push(ledger.balance(ACCOUNT).await.expect("balance"));
                tokio::task::yield_now().await;
            }
            samples
        }
    });

    let barrier = Arc::new(Barrier::new(N + 1));
    let base = format!("http://{}", gw.addr);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let client = clients[i % clients.len()].clone();
        let (barrier, base, agent) = (barrier.clone(), base.clone(), id.clone());
        tasks.spawn(async move {
            let front = ALL_FRONTS[i % 4];
            let stream = (i / 4) % 2 == 0;
            let req = chat(&client, &base, front, &agent, stream, "hi");
            barrier.wait().await;
            let response = req.send().await.expect("the gateway answers");
            let rid = request_id_of(&response);
            let status = response.status().as_u16();
            match status {
                200 if stream => {
                    let body = response.text().await.expect("stream");
                    let a = read_stream(front_format(front), &body);
                    assert!(a.ended_properly && a.errors.is_empty(), "{body}");
                }
                200 => {
                    let body: Value = response.json().await.expect("sync body");
                    let a = read_sync(front, &body);
                    assert_eq!(a.text, UI_FIXTURE_TEXT, "{body}");
                }
                402 => {
                    let e = assert_error(response, 402).await;
                    assert_eq!(e["error"]["code"], "insufficient_credits", "{e}");
                }
                other => panic!("{front} request {i}: unexpected status {other}"),
            }
            (rid, status)
        });
    }
    barrier.wait().await;
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (rid, status) = r.expect("request task");
        if status == 200 {
            admitted.push(rid);
        } else {
            refused.push(rid);
        }
    }
    done.store(true, Ordering::Release);
    let samples = sampler.await.expect("sampler");

    assert_eq!(admitted.len(), 100, "exactly the credits' worth admitted");
    assert_eq!(refused.len(), N - 100);
    assert_eq!(
        mock.requests().len(),
        100,
        "only admitted requests reach the backend"
    );
    assert!(samples.len() > 1, "the sampler ran during the race");
    let lowest = samples.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(lowest >= 0.0, "a sampled balance was {lowest}");

    assert_eq!(balance(&gw.running, ACCOUNT).await, 0.0);
    ledger.check_invariants().await.expect("ledger sums");
    let rows = store_of(&gw)
        .usage(UsageFilter {
            account: Some(ACCOUNT.into()),
            ..UsageFilter::default()
        })
        .await
        .expect("usage");
    assert_eq!(rows.iter().map(|r| r.charged).sum::<i64>(), 100_000);
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i64>(), 100);
    assert_eq!(rows.iter().map(|r| r.pending).sum::<i64>(), 0);
    for rid in &admitted {
        let r = settled(store_of(&gw), rid).await;
        assert_eq!(
            (r.state.as_str(), r.charged),
            ("posted", Some(1000)),
            "{rid}"
        );
    }
    for rid in &refused {
        let r = store_of(&gw).reservation(rid).await.expect("read");
        assert!(r.is_none(), "a refused request left a reservation: {r:?}");
    }
    eprintln!(
        "race: {} balance samples, lowest {lowest}, {} admitted",
        samples.len(),
        admitted.len()
    );
}

// ------------------------------------------------------------------- 2. kill -9 mid-stream --

const CRASH_SEEDS: u64 = 20;

/// One seeded run: a gateway process with a finished request and 1–3 open streams is killed
/// with SIGKILL at a random point mid-stream, and restarted on the same SQLite file. Returns
/// the latest settlement after its reservation's expiry (recovery's lag), in ms.
async fn crash_run(seed: u64, backend: &Paced) -> i64 {
    const ACCOUNT: &str = "crash";
    const GRANTED: f64 = 1000.0;
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("agentgate.db");
    let config = dir.path().join("agentgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
log_format = "json"

[store]
url = "sqlite://{db}"
reservation_timeout_s = 1

[[front]]
api = "chatbase"
prefix = "/chatbase"

[[agent]]
id = "crash"
upstream = "{upstream}"
upstream_api = "chatbase"
credits_per_message = 2
max_usage_credits = 50
credits_per_1k_output_chars = 100
"#,
            db = db.display(),
            upstream = backend.url()
        ),
    )
    .expect("config written");
    let store = Store::open_sqlite(&db, SqliteOptions::default())
        .await
        .expect("store");
    let ledger = Ledger::new(store.clone(), LedgerConfig::default());
    let key = agentgate::auth::create_key(&store, master(ACCOUNT))
        .await
        .expect("key")
        .0;
    ledger.grant(ACCOUNT, GRANTED, None).await.expect("grant");

    let gateway = ServeProcess::start(&config, false);
    let base = format!("http://{}", gateway.addr);
    let client = client_with(&key);

    // A request that finishes before the crash.
    let r = chat(&client, &base, Api::Chatbase, "crash", false, "deltas=2")
        .send()
        .await
        .expect("sync answer");
    assert_eq!(r.status(), 200);
    let sync_id = request_id_of(&r);
    let body: Value = r.json().await.expect("sync body");
    let shown = body["usage"]["credits"].as_f64().expect("usage shown");

    // Streams, killed mid-answer.
    let streams = rng.random_range(1..=3usize);
    let mut progress = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (tx, rx) = tokio::sync::watch::channel(0usize);
        progress.push(rx);
        let req = chat(&client, &base, Api::Chatbase, "crash", true, "stream");
        tasks.push(tokio::spawn(async move {
            let mut r = req.send().await.expect("stream head");
            assert_eq!(r.status(), 200);
            let rid = request_id_of(&r);
            let mut body = String::new();
            let mut chunks = 0;
            while let Ok(Some(c)) = r.chunk().await {
                body.push_str(&String::from_utf8_lossy(&c));
                chunks += 1;
                tx.send_replace(chunks);
            }
            (rid, read_stream("ui-message", whole_events(&body)).credits)
        }));
    }
    let at_chunk = rng.random_range(1..=6usize);
    for (s, rx) in progress.iter_mut().enumerate() {
        let need = if s == 0 { at_chunk } else { 1 };
        tokio::time::timeout(PATIENCE, rx.wait_for(|&n| n >= need))
            .await
            .expect("streams under way")
            .expect("stream task alive");
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
    gateway.kill();

    let mut ids = vec![sync_id.clone()];
    for t in tasks {
        let (rid, credits) = t.await.expect("stream task");
        assert_eq!(credits, None, "{rid} finished before the kill");
        ids.push(rid);
    }

    // Restart on the same store; recovery settles what the crash left open.
    // The open reservations expire at most 1 s (the timeout) after the kill; the bound here
    // only keeps a broken recovery from hanging the test.
    let restarted = ServeProcess::start(&config, false);
    no_pending(&store, Duration::from_secs(10)).await;
    restarted.kill();

    let mut lag = 0;
    let mut charged = 0;
    for rid in &ids {
        let r = store
            .reservation(rid)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("seed {seed}: no ledger entry for {rid}"));
        assert_eq!(r.state, "posted", "seed {seed}: {r:?}");
        let c = r.charged.expect("charged");
        charged += c;
        if *rid == sync_id {
            // Settled by the first process (fire-and-forget, committed long before the kill).
            assert_eq!(
                c,
                to_milli(shown),
                "seed {seed}: the finished answer as shown"
            );
        } else {
            // Open at the kill: recovery charges the base cost, once its timeout has passed.
            assert_eq!(c, r.fallback, "seed {seed}: {r:?}");
            assert_eq!(c, 2000);
            let settled_at = r.settled_at.expect("settled_at");
            assert!(
                settled_at >= r.expires_at,
                "seed {seed}: recovered before its timeout: {r:?}"
            );
            lag = lag.max(settled_at - r.expires_at);
        }
    }
    let rows = store
        .usage(UsageFilter::default())
        .await
        .expect("usage rows");
    assert_eq!(
        rows.iter().map(|r| r.requests).sum::<i64>(),
        ids.len() as i64,
        "seed {seed}: one entry per request"
    );
    assert_eq!(rows.iter().map(|r| r.pending).sum::<i64>(), 0);
    assert_eq!(rows.iter().map(|r| r.charged).sum::<i64>(), charged);
    ledger.check_invariants().await.expect("ledger sums");
    assert_eq!(
        to_milli(ledger.balance(ACCOUNT).await.expect("balance")),
        to_milli(GRANTED) - charged,
        "seed {seed}: balance = grants - charges"
    );
    lag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_recovery_settles_every_request_once() {
    let backend = Paced::spawn(PacedSpec {
        deltas: 40,
        pace: Duration::from_millis(15),
        usage: 0.5,
        hold: None,
    })
    .await;
    let mut worst = 0;
    for seed in 0..CRASH_SEEDS {
        worst = worst.max(crash_run(seed, &backend).await);
    }
    eprintln!("crash: {CRASH_SEEDS} runs; recovery settled at most {worst} ms after expiry");
}

// --------------------------------------------------------------- 3. clients that leave --

/// Clients that hang up at seeded random points mid-stream: each answer is settled once, at
/// the base cost plus the output metered up to then (never less than what the client saw,
/// never more than the backend wrote), and the backend's connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_mid_stream_pay_for_the_output_so_far() {
    const RUNS: u64 = 24;
    const DELTAS: usize = 30;
    let backend = Paced::spawn(PacedSpec {
        deltas: DELTAS,
        pace: Duration::from_millis(10),
        usage: 0.0,
        hold: None,
    })
    .await;
    let id = agent_id(3);
    // 1 credit base + 1 credit per 10 characters: every delta costs exactly 1.
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &id,
            &backend.url(),
            Api::Chatbase,
            "credits_per_message = 1\nmax_usage_credits = 100\ncredits_per_1k_output_chars = 100",
        )],
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..RUNS {
        let (base, id) = (base.clone(), id.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000 + seed);
            let front = ALL_FRONTS[seed as usize % 4];
            let want_chars = rng.random_range(0..=20usize) * DELTA.len();
            let linger = Duration::from_millis(rng.random_range(0..=25));
            let mut r = chat(&client(), &base, front, &id, true, "stream")
                .send()
                .await
                .expect("stream head");
            assert_eq!(r.status(), 200);
            let rid = request_id_of(&r);
            let mut body = String::new();
            let seen = |body: &str| {
                read_stream(front_format(front), whole_events(body))
                    .text
                    .chars()
                    .count()
            };
            while seen(&body) < want_chars {
                match r.chunk().await.expect("stream chunk") {
                    Some(c) => body.push_str(&String::from_utf8_lossy(&c)),
                    None => break,
                }
            }
            tokio::time::sleep(linger).await;
            drop(r); // the client is gone
            (rid, seen(&body), body)
        });
    }
    let mut cut = 0;
    while let Some(t) = tasks.join_next().await {
        let (rid, seen_chars, body) = t.expect("client task");
        let served = backend.outcome(&rid).await;
        let r = settled(store_of(&gw), &rid).await;
        let charged = r.charged.expect("charged");
        let seen_deltas = (seen_chars / DELTA.len()) as i64;
        assert_eq!(r.state, "posted", "{rid}: never zero: {r:?}");
        assert!(charged >= 1000, "{rid}: at least the base cost: {r:?}");
        assert!(
            charged >= 1000 + seen_deltas * 1000,
            "{rid}: charged {charged} for {seen_deltas} deltas seen\n{body}"
        );
        assert!(
            charged <= 1000 + served.written as i64 * 1000,
            "{rid}: charged {charged} for {} deltas written",
            served.written
        );
        if served.completed {
            assert!(served.written == DELTAS, "{rid}: completed with {served:?}");
        } else {
            assert!(served.peer_closed, "{rid}: {served:?}");
            cut += 1;
        }
    }
    assert!(
        cut >= RUNS / 2,
        "only {cut} of {RUNS} clients left mid-answer: the test did not exercise disconnects"
    );
    no_pending(store_of(&gw), PATIENCE).await;
    gw.running
        .policy
        .ledger
        .check_invariants()
        .await
        .expect("ledger sums");
    eprintln!("disconnects: {cut} of {RUNS} cut the backend mid-answer");
}

// ------------------------------------------------------ 4. scope × agent × front matrix --

/// Every disallowed (key, agent, front, stream) gets its front's status with 0 backend calls
/// and 0 debits; malformed and checksum-failing keys are refused without a store lookup; a key
/// revoked with `agentgate keys revoke` on the same file while the gateway runs is refused
/// within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_agent_front_matrix_refuses_without_calls_or_debits() {
    const ACCOUNT: &str = "matrix";
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let (a, b) = (agent_id(41), agent_id(42));
    let pricing = "credits_per_message = 1\nmax_usage_credits = 0";
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(&a, &mock.url(), Api::Chatbase, pricing),
            agent(&b, &mock.url(), Api::Chatbase, pricing),
        ],
    ))
    .await;
    gw.running
        .policy
        .ledger
        .grant(ACCOUNT, 1000.0, None)
        .await
        .expect("grant");
    let running = &gw.running;
    let store = store_of(&gw).clone();
    let base = format!("http://{}", gw.addr);

    let single_scopes = [
        ("agents:run", Scopes::AGENTS_RUN),
        ("agents:stream", Scopes::AGENTS_STREAM),
        ("conversations:read", Scopes::CONVERSATIONS_READ),
        ("conversations:write", Scopes::CONVERSATIONS_WRITE),
        ("teams:run", Scopes::TEAMS_RUN),
        ("usage:read", Scopes::USAGE_READ),
    ];

    /// What a request is expected to get.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Expect {
        Ok,
        Status(u16),
        /// 404, or 403 on guayaba.
        OutsideAgents,
    }
    /// Who sends it.
    enum Auth {
        None,
        Header(String),
    }
    struct Case {
        name: String,
        auth: Auth,
        agent: String,
        /// Expected for (sync, stream).
        expect: [Expect; 2],
        /// The request must not reach the key store.
        no_lookup: bool,
    }
    let bearer = |k: &SecretKey| Auth::Header(format!("Bearer {}", k.expose()));
    let mut cases = Vec::new();
    for (name, missing) in single_scopes {
        let scopes = single_scopes
            .iter()
            .filter(|(_, s)| *s != missing)
            .fold(Scopes::NONE, |acc, (_, s)| acc.union(*s));
        let key = create_key(running, agent_key(ACCOUNT, scopes, None)).await;
        let expect = match name {
            "agents:run" => [Expect::Status(403); 2],
            "agents:stream" => [Expect::Ok, Expect::Status(403)],
            _ => [Expect::Ok; 2],
        };
        cases.push(Case {
            name: format!("agent key without {name}"),
            auth: bearer(&key),
            agent: a.clone(),
            expect,
            no_lookup: false,
        });
    }
    let only_a = create_key(running, agent_key(ACCOUNT, Scopes::ALL, Some(&[&a]))).await;
    cases.push(Case {
        name: "key of agent A calling agent B".into(),
        auth: bearer(&only_a),
        agent: b.clone(),
        expect: [Expect::OutsideAgents; 2],
        no_lookup: false,
    });
    cases.push(Case {
        name: "key of agent A calling agent A".into(),
        auth: bearer(&only_a),
        agent: a.clone(),
        expect: [Expect::Ok; 2],
        no_lookup: false,
    });
    let revoked = create_key(running, master(ACCOUNT)).await;
    store
        .revoke_key(revoked.public_id(), now_ms())
        .await
        .expect("revoked");
    cases.push(Case {
        name: "revoked key".into(),
        auth: bearer(&revoked),
        agent: a.clone(),
        expect: [Expect::Status(401); 2],
        no_lookup: false,
    });
    let expired = create_key(
        running,
        NewKeySpec {
            expires_at: Some(now_ms() - 1000),
            ..master(ACCOUNT)
        },
    )
    .await;
    cases.push(Case {
        name: "expired key".into(),
        auth: bearer(&expired),
        agent: a.clone(),
        expect: [Expect::Status(401); 2],
        no_lookup: false,
    });
    cases.push(Case {
        name: "well-formed unknown key".into(),
        auth: bearer(&SecretKey::generate()),
        agent: a.clone(),
        expect: [Expect::Status(401); 2],
        no_lookup: false,
    });
    cases.push(Case {
        name: "no key".into(),
        auth: Auth::None,
        agent: a.clone(),
        expect: [Expect::Status(401); 2],
        no_lookup: true,
    });
    let good = create_key(running, master(ACCOUNT)).await;
    let full = good.expose().to_owned();
    for (name, value) in [
        ("malformed key", "Bearer not-a-key".to_owned()),
        (
            "truncated key",
            format!("Bearer {}", &full[..full.len() - 3]),
        ),
        ("empty bearer", "Bearer ".to_owned()),
        ("other scheme", format!("Basic {full}")),
    ] {
        cases.push(Case {
            name: name.into(),
            auth: Auth::Header(value),
            agent: a.clone(),
            expect: [Expect::Status(401); 2],
            no_lookup: true,
        });
    }
    // One character changed in the checksum, and one in the secret: the checksum fails.
    let mut bad_checksum = full.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let mut bad_secret = full.clone().into_bytes();
    let i = agentgate::auth::PREFIX.len() + 12 + 1 + 3;
    bad_secret[i] = if bad_secret[i] == b'a' { b'b' } else { b'a' };
    for (name, key) in [
        ("checksum-failing key", bad_checksum),
        ("mistyped secret", bad_secret),
    ] {
        let key = String::from_utf8(key).expect("ascii");
        assert_ne!(key, full);
        cases.push(Case {
            name: name.into(),
            auth: Auth::Header(format!("Bearer {key}")),
            agent: a.clone(),
            expect: [Expect::Status(401); 2],
            no_lookup: true,
        });
    }

    let client = bare_client();
    let mut n = 0;
    let mut allowed = 0i64;
    for case in &cases {
        for front in ALL_FRONTS {
            for (mode, stream) in [false, true].into_iter().enumerate() {
                n += 1;
                let what = format!(
                    "{} on {front} ({}), agent {}",
                    case.name,
                    if stream { "stream" } else { "sync" },
                    case.agent
                );
                let calls = mock.requests().len();
                let lookups = running.policy.auth.store_lookups();
                let mut req = chat(&client, &base, front, &case.agent, stream, "hi");
                if let Auth::Header(v) = &case.auth {
                    req = req.header("authorization", v);
                }
                let response = req.send().await.expect("answer");
                let rid = request_id_of(&response);
                let expect = match case.expect[mode] {
                    Expect::OutsideAgents if front == Api::Guayaba => Expect::Status(403),
                    Expect::OutsideAgents => Expect::Status(404),
                    e => e,
                };
                match expect {
                    Expect::Ok => {
                        let status = response.status();
                        let body = response.text().await.expect("body");
                        assert_eq!(status, 200, "{what}: {body}");
                        allowed += 1;
                        assert_eq!(mock.requests().len(), calls + 1, "{what}");
                        let r = settled(&store, &rid).await;
                        assert_eq!(r.charged, Some(1000), "{what}");
                    }
                    Expect::Status(status) => {
                        // Status and the front's error body `{"error":{code,message,details}}`.
                        assert_eq!(response.status().as_u16(), status, "{what}");
                        assert_error(response, status).await;
                        assert_eq!(mock.requests().len(), calls, "{what}: backend called");
                        let r = store.reservation(&rid).await.expect("read");
                        assert!(r.is_none(), "{what}: a debit was reserved: {r:?}");
                        if case.no_lookup {
                            assert_eq!(
                                running.policy.auth.store_lookups(),
                                lookups,
                                "{what}: refused only after a store lookup"
                            );
                        }
                    }
                    Expect::OutsideAgents => unreachable!(),
                }
            }
        }
    }
    // A well-formed key unknown to the store does cost a lookup: the counter is live.
    let lookups = running.policy.auth.store_lookups();
    let r = chat(
        &client_with(&SecretKey::generate()),
        &base,
        Api::Chatbase,
        &a,
        false,
        "hi",
    )
    .send()
    .await
    .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(running.policy.auth.store_lookups(), lookups + 1);

    // 0 debits: only the allowed requests were charged, 1 credit each.
    assert!(allowed > 0);
    assert_eq!(mock.requests().len() as i64, allowed);
    assert_eq!(balance(running, ACCOUNT).await, 1000.0 - allowed as f64);
    let rows = store
        .usage(UsageFilter {
            account: Some(ACCOUNT.into()),
            ..UsageFilter::default()
        })
        .await
        .expect("usage");
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i64>(), allowed);
    assert_eq!(rows.iter().map(|r| r.charged).sum::<i64>(), allowed * 1000);

    // Revoked with the CLI, on the same SQLite file, while the gateway runs.
    let victim = create_key(running, master(ACCOUNT)).await;
    let victim_client = client_with(&victim);
    let r = chat(&victim_client, &base, Api::Chatbase, &a, false, "hi")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "the key works (and is cached) before");
    let db = gw.dir.path().join("agentgate.db");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["keys", "revoke", "--store"])
        .arg(format!("sqlite://{}", db.display()))
        .arg(victim.public_id())
        .output()
        .await
        .expect("agentgate keys revoke runs");
    assert!(
        out.status.success(),
        "keys revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();
    loop {
        let r = chat(&victim_client, &base, Api::Chatbase, &a, false, "hi")
            .send()
            .await
            .expect("answer");
        if r.status() == 401 {
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "a key revoked by the CLI still worked {:?} later",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "matrix: {n} requests, {allowed} allowed; CLI revocation refused after {:?}",
        revoked_at.elapsed()
    );
    gw.running
        .policy
        .ledger
        .check_invariants()
        .await
        .expect("ledger sums");
}

// --------------------------------------------------------------------- 5. rate limits --

/// An agent at 1 request/s with a burst of 2: the third immediate request gets 429 with the
/// IETF draft headers, reaches no backend and debits nothing. A key with `max_streams = 2`:
/// a third stream is refused while two are open, and admitted once they ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_stream_caps_through_the_gateway() {
    let mock = MockUpstream::sse(UI_FIXTURE).spawn().await;
    let gate = Arc::new(Semaphore::new(0));
    let held = Paced::spawn(PacedSpec {
        deltas: 4,
        pace: Duration::from_millis(1),
        usage: 0.0,
        hold: Some((2, gate.clone())),
    })
    .await;
    let (limited, streamed, free) = (agent_id(51), agent_id(52), agent_id(53));
    let gw = spawn_gateway(&config(
        "",
        &[
            agent(
                &limited,
                &mock.url(),
                Api::Chatbase,
                "rate_per_second = 1\nrate_burst = 2",
            ),
            agent(&streamed, &held.url(), Api::Chatbase, ""),
            agent(&free, &mock.url(), Api::Chatbase, ""),
        ],
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let store = store_of(&gw).clone();
    let c = client();
    for _ in 0..2 {
        let r = chat(&c, &base, Api::Chatbase, &limited, false, "hi")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("ratelimit"), "{:?}", r.headers());
        let _ = r.text().await;
    }
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    let r = chat(&c, &base, Api::Chatbase, &limited, false, "hi")
        .send()
        .await
        .expect("answer");
    let refused = request_id_of(&r);
    let h = r.headers().clone();
    assert_error(r, 429).await;
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let policy = h["ratelimit-policy"].to_str().expect("ascii");
    assert_eq!(policy, "\"agent\";q=2;w=2");
    let state = h["ratelimit"].to_str().expect("ascii");
    assert!(state.starts_with("\"agent\";r=0;t="), "RateLimit: {state}");
    assert_eq!(
        mock.requests().len(),
        2,
        "the refused request reached no backend"
    );
    assert!(store.reservation(&refused).await.expect("read").is_none());
    assert_eq!(balance(&gw.running, TEST_ACCOUNT).await, before, "no debit");

    // Concurrent streams of one key.
    let key = create_key(
        &gw.running,
        NewKeySpec {
            limits: KeyLimits {
                max_streams: Some(2),
                ..KeyLimits::default()
            },
            ..master(TEST_ACCOUNT)
        },
    )
    .await;
    let kc = client_with(&key);
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = chat(&kc, &base, Api::Chatbase, &streamed, true, "hold")
            .send()
            .await
            .expect("stream head");
        assert_eq!(r.status(), 200);
        open.push((request_id_of(&r), r));
    }
    let r = chat(&kc, &base, Api::Chatbase, &streamed, true, "hold")
        .send()
        .await
        .expect("answer");
    let refused = request_id_of(&r);
    let h = r.headers().clone();
    assert_error(r, 429).await;
    assert!(h.contains_key("retry-after"));
    assert_eq!(held.requests(), 2, "the third stream reached no backend");
    assert!(store.reservation(&refused).await.expect("read").is_none());
    // A sync request is not a stream: the cap does not apply.
    let r = chat(&kc, &base, Api::Chatbase, &free, false, "hi")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for (rid, r) in open {
        let body = r.text().await.expect("stream body");
        assert!(read_stream("ui-message", &body).ended_properly, "{body}");
        settled(&store, &rid).await;
    }
    let r = chat(&kc, &base, Api::Chatbase, &streamed, true, "hold")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        r.status(),
        200,
        "a slot is free again once the streams ended"
    );
    let body = r.text().await.expect("stream body");
    assert!(read_stream("ui-message", &body).ended_properly, "{body}");
}

// ------------------------------------------------------------ 6. the mid-stream hard limit --

/// Output priced so that the reservation runs out mid-answer: every front's stream (the ag-ui
/// front's too) ends as its format must, the backend's connection is closed, and the charge is
/// the whole reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_limit_ends_every_format_properly_mid_stream() {
    const DELTAS: usize = 20;
    let backend = Paced::spawn(PacedSpec {
        deltas: DELTAS,
        pace: Duration::from_millis(5),
        usage: 0.0,
        hold: None,
    })
    .await;
    let id = agent_id(6);
    // Base 1, cap 5: the 50th character (5th delta) uses the reservation of 6 up.
    let gw = spawn_gateway(&config_with_ag_ui(
        "",
        &[agent(
            &id,
            &backend.url(),
            Api::Chatbase,
            "credits_per_message = 1\nmax_usage_credits = 5\ncredits_per_1k_output_chars = 100",
        )],
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let c = client();
    for front in ALL_FRONTS.into_iter().chain([Api::AgUi]) {
        let r = chat(&c, &base, front, &id, true, "long answer please")
            .send()
            .await
            .expect("stream");
        assert_eq!(r.status(), 200);
        let rid = request_id_of(&r);
        let body = r.text().await.expect("a stream that ends, not a cut");
        let format = front_format(front);
        let answer = read_stream(format, &body);
        let events = read_sse(&body);
        assert!(answer.ended_properly, "{front}: {body}");
        assert!(answer.errors.is_empty(), "{front}: {body}");
        assert_eq!(answer.credits, Some(6.0), "{front}: usage shown: {body}");
        let seen = answer.text.chars().count();
        assert!(
            (1..DELTAS * DELTA.len()).contains(&seen),
            "{front}: cut mid-answer, after {seen} characters"
        );
        let terminal = |ty: &str| {
            events
                .iter()
                .rev()
                .find_map(|e| e.json().filter(|v| v["type"] == ty))
                .unwrap_or_else(|| panic!("{front}: no {ty} event: {body}"))
        };
        match format {
            "ui-message" => {
                let finish = terminal("finish");
                assert_eq!(finish["finishReason"], "length", "{body}");
                assert_eq!(
                    finish["messageMetadata"]["creditsExhausted"], true,
                    "{body}"
                );
                assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
                if let Some(verdict) = check_ui_stream(&body).await {
                    assert_eq!(verdict["ok"], true, "AI SDK refused the stream: {verdict}");
                    assert_eq!(verdict["done"], true, "{verdict}");
                }
            }
            "session-delta" => {
                let done = terminal("done");
                assert_eq!(done["finishReason"], "length", "{body}");
                assert_eq!(
                    events.last().and_then(|e| e.event.clone()).as_deref(),
                    Some("done")
                );
            }
            "text-done" => {
                terminal("done");
                assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
            }
            // SPEC §9: the run finishes (its `result` says why), the last event of the stream.
            "ag-ui" => {
                let finish = terminal("RUN_FINISHED");
                assert_eq!(finish["result"]["creditsExhausted"], true, "{body}");
                assert_eq!(
                    events
                        .last()
                        .and_then(|e| e.json())
                        .map(|v| v["type"].clone()),
                    Some("RUN_FINISHED".into()),
                    "{body}"
                );
                if let Some(verdict) = check_ag_ui_stream(&body, None).await {
                    assert_eq!(verdict["ok"], true, "@ag-ui/client refused: {verdict}");
                    assert_eq!(client_text(&verdict), answer.text, "{verdict}");
                }
            }
            other => panic!("{other}"),
        }
        let served = backend.outcome(&rid).await;
        assert!(
            served.peer_closed && served.written < DELTAS,
            "{front}: the upstream was not cancelled: {served:?}"
        );
        let r = settled(store_of(&gw), &rid).await;
        assert_eq!(
            r.charged,
            Some(r.reserved),
            "{front}: charge = reservation: {r:?}"
        );
        assert_eq!(r.reserved, 6000);
    }
    gw.running
        .policy
        .ledger
        .check_invariants()
        .await
        .expect("ledger sums");
}

// ---------------------------------------------------------------------- 7. charged = shown --

/// For each front, streamed and not: the usage the client sees is what the ledger charged for
/// that request id, to the millicredit (here with fractional usage and output pricing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_shown_is_the_charge() {
    let backend = Paced::spawn(PacedSpec {
        deltas: 3,
        pace: Duration::from_millis(1),
        usage: 0.3333,
        hold: None,
    })
    .await;
    let id = agent_id(7);
    let gw = spawn_gateway(&config(
        "",
        &[agent(
            &id,
            &backend.url(),
            Api::Chatbase,
            "credits_per_message = 1\nmax_usage_credits = 10\ncredits_per_1k_output_chars = 0.7",
        )],
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let c = client();
    // 1 + 0.3333 reported + 30 characters × 0.0007 = 1.3543, charged to the millicredit.
    let expected = 1354;
    let mut compared = 0;
    for front in ALL_FRONTS {
        for stream in [false, true] {
            let r = chat(&c, &base, front, &id, stream, "hello")
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status(), 200);
            let rid = request_id_of(&r);
            let shown = if stream {
                let body = r.text().await.expect("stream");
                let a = read_stream(front_format(front), &body);
                assert!(a.ended_properly, "{body}");
                Some(
                    a.credits
                        .unwrap_or_else(|| panic!("{front}: no usage shown: {body}")),
                )
            } else {
                let body: Value = r.json().await.expect("sync body");
                // Every sync body carries `usage` (pharen's and agents' as an extra field).
                Some(
                    body["usage"]["credits"]
                        .as_f64()
                        .unwrap_or_else(|| panic!("{front}: usage.credits: {body}")),
                )
            };
            let r = settled(store_of(&gw), &rid).await;
            assert_eq!(r.charged, Some(expected), "{front} stream={stream}: {r:?}");
            if let Some(shown) = shown {
                assert_eq!(
                    shown,
                    from_milli(expected),
                    "{front} stream={stream}: shown {shown}, charged {}",
                    from_milli(expected)
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 8, "every stream and every sync body shows usage");
}
