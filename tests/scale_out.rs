//! Scale-out: three real `agentgate serve` processes on loopback ports sharing one PostgreSQL
//! database (its own, per test) and one Redis key prefix (its own, per test), in front of an
//! echo backend. Proves across replicas: no overdraw, exactly-once settling after `kill -9`,
//! revocation everywhere within a second, one rate limit for the whole fleet. Each test skips
//! (printing why) when PostgreSQL or Redis is unreachable.

mod policy_support;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentgate::auth::{create_key, KeyKind, KeyLimits, NewKeySpec, Scopes, SecretKey};
use agentgate::credits::{to_milli, Ledger, LedgerConfig};
use agentgate::demo::DemoAgent;
use agentgate::fronts::Api;
use agentgate::store::{Store, UsageFilter};
use policy_support::PgDb;
use serde_json::Value;

const AGENT: &str = "00000000-0000-4000-8000-000000000001";
const ADMIN_TOKEN: &str = "scale-out-admin-token-0123456789";
const PATIENCE: Duration = Duration::from_secs(20);

/// A gateway process; killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Replica {
    child: Option<std::process::Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    /// The `message` of every log line so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    fn start(config: &Path) -> Replica {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agentgate serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"].is_string() {
                    // The whole line: its message and its fields (an error's text).
                    seen.lock().expect("logs").push(line.clone());
                }
                let which = match v["fields"]["message"].as_str() {
                    Some("listening") => "main",
                    Some("admin listener") => "admin",
                    _ => continue,
                };
                if let Some(Ok(bound)) = v["fields"]["bound"].as_str().map(str::parse) {
                    let _ = tx.send((which, bound));
                }
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (which, bound) = rx
                .recv_timeout(PATIENCE)
                .expect("the replica logs its bound addresses");
            if which == "main" {
                addr = Some(bound);
            } else {
                admin = Some(bound);
            }
        }
        Replica {
            child: Some(child),
            addr: addr.expect("main"),
            admin: admin.expect("admin"),
            logs,
        }
    }

    fn logged(&self, part: &str) -> bool {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .any(|m| m.contains(part))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then wait for the graceful shutdown (drain, leases returned).
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .expect("kill -TERM");
            assert!(status.success());
            let deadline = Instant::now() + PATIENCE;
            while child.try_wait().expect("wait").is_none() {
                assert!(Instant::now() < deadline, "replica did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three replicas on one database and one Redis prefix, and the test's own store handle.
struct Fleet {
    replicas: Vec<Replica>,
    store: Store,
    ledger: Ledger,
    key: SecretKey,
    prefix: String,
    _dir: tempfile::TempDir,
    // Declared last: dropped after the replicas and the store.
    _db: PgDb,
}

impl Fleet {
    /// Leases in the database (what a DBA would look at).
    async fn lease_count(&self) -> i64 {
        let (client, conn) = tokio_postgres::connect(&self._db.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT count(*) FROM leases", &[])
            .await
            .expect("count");
        row.get(0)
    }
}

struct FleetSpec {
    credits: f64,
    /// `[[agent]]` lines beyond the basics.
    agent_extra: &'static str,
    backend_delay: Duration,
    reservation_timeout_s: u64,
    /// `[store]` lines beyond the basics (lease mode).
    store_extra: &'static str,
}

/// The Redis the tests use: `AGENTGATE_TEST_REDIS` or the CI default.
fn redis_url() -> String {
    std::env::var("AGENTGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

async fn redis_reachable() -> bool {
    let probe = async {
        let client = redis::Client::open(redis_url()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(_))
    )
}

impl Fleet {
    async fn start(spec: FleetSpec) -> Option<Fleet> {
        let db = PgDb::create().await?;
        if !redis_reachable().await {
            eprintln!("SKIPPED: Redis at {} is unreachable", redis_url());
            return None;
        }
        let prefix = format!("agentgate-test-{}", uuid::Uuid::new_v4().simple());
        let backend = DemoAgent::new(Api::Agents, spec.backend_delay)
            .spawn(([127, 0, 0, 1], 0).into())
            .await
            .expect("backend");
        let store = Store::open(&db.url).await.expect("store");
        let ledger = Ledger::new(store.clone(), LedgerConfig::default());
        let (key, _) = create_key(
            &store,
            NewKeySpec {
                account: "acme".into(),
                kind: KeyKind::Master,
                scopes: Scopes::ALL,
                agents: None,
                expires_at: None,
                limits: KeyLimits::default(),
            },
        )
        .await
        .expect("key");
        ledger
            .grant("acme", spec.credits, Some("scale-out test"))
            .await
            .expect("grant");
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("agentgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.2:0"
admin_token = "{ADMIN_TOKEN}"
log_format = "json"
drain_timeout_s = 1

[store]
url = "{url}"
reservation_timeout_s = {timeout}
{store_extra}

[rate_limit]
redis_url = "{redis}"
key_prefix = "{prefix}"

[[front]]
api = "agents"
prefix = "/agents"

[[agent]]
id = "{AGENT}"
upstream = "http://{backend}"
upstream_api = "agents"
credits_per_message = 1
{extra}
"#,
                url = db.url,
                timeout = spec.reservation_timeout_s,
                store_extra = spec.store_extra,
                redis = redis_url(),
                extra = spec.agent_extra,
            ),
        )
        .expect("config");
        let replicas = (0..3).map(|_| Replica::start(&config)).collect();
        Some(Fleet {
            replicas,
            store,
            ledger,
            key,
            prefix,
            _dir: dir,
            _db: db,
        })
    }

    fn client(&self) -> reqwest::Client {
        client_for(&self.key)
    }

    async fn balance_milli(&self) -> i64 {
        self.store
            .balance("acme")
            .await
            .expect("balance")
            .unwrap_or(0)
    }

    async fn cleanup_redis(&self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).query_async::<i64>(&mut c).await;
        }
    }
}

fn client_for(key: &SecretKey) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.expose()).parse().expect("header"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .timeout(PATIENCE)
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

fn sync_chat(
    client: &reqwest::Client,
    replica: &Replica,
    message: &str,
) -> reqwest::RequestBuilder {
    client
        .post(replica.url(&format!("/agents/api/agents/{AGENT}/chat")))
        .json(&serde_json::json!({ "message": message }))
}

/// Balance samples taken while `stop` is false; every one must be ≥ 0.
fn sample_balance(store: Store, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, i64)> {
    tokio::spawn(async move {
        let (mut n, mut lowest) = (0, i64::MAX);
        while !stop.load(Ordering::Acquire) {
            let b = store.balance("acme").await.expect("read").unwrap_or(0);
            lowest = lowest.min(b);
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (n, lowest)
    })
}

/// Every reservation settled, and balance = grants − posted charges.
async fn assert_ledger_balanced(fleet: &Fleet, granted: f64) -> i64 {
    let deadline = Instant::now() + PATIENCE;
    while fleet.store.pending_count().await.expect("count") > 0 {
        assert!(Instant::now() < deadline, "reservations left pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.ledger.check_invariants().await.expect("ledger sums");
    let rows = fleet
        .store
        .usage(UsageFilter::default())
        .await
        .expect("usage");
    let charged: i64 = rows.iter().map(|r| r.charged).sum();
    assert_eq!(fleet.balance_milli().await, to_milli(granted) - charged);
    charged
}

// ------------------------------------------------------------- 1. no overdraw, fleet-wide --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_over_three_replicas_spend_exactly_the_credits() {
    thousand_requests_against_a_hundred_credits("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_in_lease_mode() {
    thousand_requests_against_a_hundred_credits("lease_credits = 10\nlease_timeout_s = 5").await;
}

async fn thousand_requests_against_a_hundred_credits(store_extra: &'static str) {
    let lease_mode = !store_extra.is_empty();
    let Some(mut fleet) = Fleet::start(FleetSpec {
        credits: 100.0,
        agent_extra: "max_usage_credits = 0",
        backend_delay: Duration::ZERO,
        reservation_timeout_s: 30,
        store_extra,
    })
    .await
    else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_balance(fleet.store.clone(), Arc::clone(&stop));
    let client = fleet.client();
    let limit = Arc::new(tokio::sync::Semaphore::new(48));
    let (ok, poor) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        let req = sync_chat(&client, &fleet.replicas[i % 3], "hello");
        let (limit, ok, poor) = (Arc::clone(&limit), Arc::clone(&ok), Arc::clone(&poor));
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.expect("permit");
            let r = req.send().await.expect("answer");
            match r.status().as_u16() {
                200 => ok.fetch_add(1, Ordering::Relaxed),
                402 => poor.fetch_add(1, Ordering::Relaxed),
                s => panic!(
                    "unexpected status {s}: {}",
                    r.text().await.unwrap_or_default()
                ),
            };
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    stop.store(true, Ordering::Release);
    let (samples, lowest) = sampler.await.expect("sampler");
    assert_eq!(
        ok.load(Ordering::Relaxed),
        100,
        "exactly the credits' worth served"
    );
    assert_eq!(poor.load(Ordering::Relaxed), 900);
    assert!(lowest >= 0, "balance went below zero: {lowest}");
    if lease_mode {
        // Graceful shutdown posts each replica's charges and returns its lease.
        for r in &mut fleet.replicas {
            r.terminate();
        }
    }
    // The replicas' batches lock rows in one order: none deadlocked with another (40P01 is
    // PostgreSQL's deadlock; a deadlock's victim logs it, retried or not).
    for (i, r) in fleet.replicas.iter().enumerate() {
        assert!(!r.logged("40P01"), "replica {i} hit a deadlock");
    }
    let charged = assert_ledger_balanced(&fleet, 100.0).await;
    assert_eq!(charged, 100_000);
    assert_eq!(fleet.balance_milli().await, 0);
    let rows = fleet
        .store
        .usage(UsageFilter::default())
        .await
        .expect("usage");
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i64>(), 100);
    eprintln!(
        "scale-out race (lease mode: {lease_mode}): 100 served, 900 refused; {samples} balance \
         samples, lowest {lowest}"
    );
    fleet.cleanup_redis().await;
}

// ----------------------------------------------------------------- 2. kill -9 mid-stream --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_replica_mid_stream_settles_its_requests_on_the_others() {
    let Some(mut fleet) = Fleet::start(FleetSpec {
        credits: 1000.0,
        agent_extra: "max_usage_credits = 4",
        backend_delay: Duration::from_millis(100),
        reservation_timeout_s: 1,
        store_extra: "",
    })
    .await
    else {
        return;
    };
    let client = fleet.client();
    // Three streams per replica, every one under way before the kill.
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for i in 0..9usize {
        let replica = i % 3;
        let req = client
            .post(fleet.replicas[replica].url(&format!("/agents/api/agents/{AGENT}/chat/stream")))
            .json(&serde_json::json!({ "message": "tell me a long story about replicas" }));
        let started = Arc::clone(&started);
        tasks.push(tokio::spawn(async move {
            let mut r = req.send().await.expect("stream head");
            assert_eq!(r.status(), 200);
            let mut first = true;
            let mut body = String::new();
            while let Ok(Some(c)) = r.chunk().await {
                body.push_str(&String::from_utf8_lossy(&c));
                if std::mem::take(&mut first) {
                    started.add_permits(1);
                }
            }
            (replica, body)
        }));
    }
    let _all = tokio::time::timeout(PATIENCE, started.acquire_many(9))
        .await
        .expect("every stream under way")
        .expect("semaphore");
    let pending_at_kill = fleet.store.pending_count().await.expect("count");
    assert!(
        pending_at_kill >= 3,
        "streams hold reservations: {pending_at_kill}"
    );
    let killed_at = agentgate::store::now_ms();
    fleet.replicas[0].kill();
    let mut finished = 0;
    for t in tasks {
        let (replica, body) = t.await.expect("stream task");
        if replica != 0 {
            assert!(
                body.contains("done"),
                "replica {replica}'s stream ended properly: {body}"
            );
            finished += 1;
        }
    }
    assert_eq!(finished, 6);
    // The killed replica's reservations expire (1 s) and the survivors settle them.
    let charged = assert_ledger_balanced(&fleet, 1000.0).await;
    let recovered_after = agentgate::store::now_ms() - killed_at;
    let rows = fleet
        .store
        .usage(UsageFilter::default())
        .await
        .expect("usage");
    assert_eq!(
        rows.iter().map(|r| r.requests).sum::<i64>(),
        9,
        "one entry per request"
    );
    assert_eq!(rows.iter().map(|r| r.pending).sum::<i64>(), 0);
    // Finished streams: 1 credit base + usage (clamped to 4); recovered: the base cost.
    assert!((9_000..=9 * 5_000).contains(&charged), "charged {charged}");
    eprintln!("kill -9: 3 streams recovered by the other replicas within {recovered_after} ms");
    fleet.cleanup_redis().await;
}

// ------------------------------------------------------------ 3. revocation everywhere --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_replica_is_refused_by_the_others_within_a_second() {
    let Some(fleet) = Fleet::start(FleetSpec {
        credits: 100.0,
        agent_extra: "max_usage_credits = 0",
        backend_delay: Duration::ZERO,
        reservation_timeout_s: 30,
        store_extra: "",
    })
    .await
    else {
        return;
    };
    let (agent_key, info) = create_key(
        &fleet.store,
        NewKeySpec {
            account: "acme".into(),
            kind: KeyKind::Agent,
            scopes: Scopes::AGENTS_RUN,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await
    .expect("agent key");
    let client = client_for(&agent_key);
    // Every replica has the key cached.
    for r in &fleet.replicas {
        let resp = sync_chat(&client, r, "hi").send().await.expect("answer");
        assert_eq!(resp.status(), 200);
    }
    let admin = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("admin client");
    let t0 = Instant::now();
    let resp = admin
        .post(format!(
            "http://{}/admin/v1/keys/{}/revoke",
            fleet.replicas[0].admin,
            info.public_id()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
    let mut seen = Vec::new();
    for r in &fleet.replicas[1..] {
        loop {
            let status = sync_chat(&client, r, "hi")
                .send()
                .await
                .expect("answer")
                .status();
            if status == 401 {
                seen.push(t0.elapsed());
                break;
            }
            assert_eq!(status, 200);
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "still accepted after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(seen.iter().all(|d| *d < Duration::from_secs(1)), "{seen:?}");
    let r0 = sync_chat(&client, &fleet.replicas[0], "hi")
        .send()
        .await
        .expect("answer");
    assert_eq!(r0.status(), 401);
    eprintln!("revocation seen by the other replicas after {seen:?}");
    fleet.cleanup_redis().await;
}

// ------------------------------------------------------------------ 4. one fleet limit --

/// The agent's limit is 100 requests per second with a burst of 10, kept in Redis. Clients
/// offer up to ~1,000 requests per second spread over the three replicas for three seconds; a
/// loaded machine may offer far less, and late, so nothing here depends on the load reached or
/// on when answers arrive. Each decision was made between a request's sending and its answer,
/// so with GCRA (at most `burst + rate × t` admitted in any `t` seconds):
/// - the requests admitted whose whole exchange lies within any one second are at most
///   100 + 10 (burst) + a margin of 10 for the store's clock;
/// - a request is refused only after the limit was reached: at least `burst` admitted answers
///   overlap the second before it (GCRA's bucket cannot fill from fewer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_limit_of_100_per_second_holds_across_three_replicas() {
    let Some(fleet) = Fleet::start(FleetSpec {
        credits: 100_000.0,
        agent_extra: "max_usage_credits = 0\nrate_per_second = 100\nrate_burst = 10",
        backend_delay: Duration::ZERO,
        reservation_timeout_s: 30,
        store_extra: "",
    })
    .await
    else {
        return;
    };
    let client = fleet.client();
    let t0 = Instant::now();
    // (sent, answered, admitted) for every request.
    let exchanges: Arc<Mutex<Vec<(Duration, Duration, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let secs = 3;
    let mut workers = Vec::new();
    for w in 0..48usize {
        let (client, exchanges) = (client.clone(), Arc::clone(&exchanges));
        let urls: Vec<String> = fleet
            .replicas
            .iter()
            .map(|r| r.url(&format!("/agents/api/agents/{AGENT}/chat")))
            .collect();
        workers.push(tokio::spawn(async move {
            // Each worker offers up to ~21 requests per second: ~1,000 per second in all.
            let mut tick = tokio::time::interval(Duration::from_micros(48_000));
            let mut i = w;
            while t0.elapsed() < Duration::from_secs(secs) {
                tick.tick().await;
                i += 1;
                let sent = t0.elapsed();
                let r = client
                    .post(&urls[i % 3])
                    .json(&serde_json::json!({ "message": "hi" }))
                    .send()
                    .await
                    .expect("answer");
                let admitted = match r.status().as_u16() {
                    200 => true,
                    429 => {
                        assert!(r.headers().contains_key("retry-after"));
                        false
                    }
                    s => panic!("unexpected status {s}"),
                };
                exchanges
                    .lock()
                    .expect("lock")
                    .push((sent, t0.elapsed(), admitted));
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let exchanges = exchanges.lock().expect("lock").clone();
    let admitted: Vec<_> = exchanges.iter().filter(|e| e.2).collect();
    let refused: Vec<_> = exchanges.iter().filter(|e| !e.2).collect();
    let mut per_second = vec![0usize; elapsed.ceil() as usize + 1];
    for (_, answered, _) in &admitted {
        per_second[answered.as_secs() as usize] += 1;
    }
    eprintln!(
        "fleet limit: offered {} in {elapsed:.1} s ({:.0}/s), admitted (by answer's second) \
         {per_second:?}, {} refused",
        exchanges.len(),
        exchanges.len() as f64 / elapsed,
        refused.len()
    );
    let second = Duration::from_secs(1);
    // Upper bound: within any second (starting at an admitted request's sending).
    for (start, _, _) in &admitted {
        let inside = admitted
            .iter()
            .filter(|(sent, answered, _)| sent >= start && *answered <= *start + second)
            .count();
        assert!(
            inside <= 120,
            "{inside} admitted within the second from {start:?}: more than 100 + 10 + margin"
        );
    }
    // Lower bound: every refusal came after the limit was reached.
    for (sent, answered, _) in &refused {
        let before = sent.saturating_sub(second);
        let overlapping = admitted
            .iter()
            .filter(|(s, a, _)| *a >= before && s <= answered)
            .count();
        assert!(
            overlapping >= 10,
            "a request sent at {sent:?} was refused with only {overlapping} admitted around it"
        );
    }
    assert!(admitted.len() >= 10, "at least the burst was admitted");
    fleet.cleanup_redis().await;
}

/// Lease mode, one replica killed with SIGKILL while holding a lease: the survivors keep
/// serving, and once the lease's timeout passes their recovery returns what it held. Charges
/// the dead replica had not yet posted are lost in the customer's favour; nothing is charged
/// twice and the sums match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_lease_mode_returns_the_lease_after_its_timeout() {
    let Some(mut fleet) = Fleet::start(FleetSpec {
        credits: 1000.0,
        agent_extra: "max_usage_credits = 0",
        backend_delay: Duration::ZERO,
        reservation_timeout_s: 1,
        store_extra: "lease_credits = 100\nlease_timeout_s = 1",
    })
    .await
    else {
        return;
    };
    let client = fleet.client();
    let mut served = [0i64; 3];
    for i in 0..150usize {
        let r = sync_chat(&client, &fleet.replicas[i % 3], "hi")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        served[i % 3] += 1;
    }
    assert_eq!(fleet.lease_count().await, 3, "every replica holds a lease");
    let killed_at = Instant::now();
    fleet.replicas[0].kill();
    for i in 0..100usize {
        let replica = 1 + i % 2;
        let r = sync_chat(&client, &fleet.replicas[replica], "hi")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        served[replica] += 1;
    }
    // The dead replica's lease expires (1 s after its last sync); a survivor returns it.
    let deadline = Instant::now() + PATIENCE;
    while fleet.lease_count().await > 2 {
        assert!(
            Instant::now() < deadline,
            "the dead replica's lease never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let returned_after = killed_at.elapsed();
    // Stop the survivors gracefully: their leases return too.
    for r in &mut fleet.replicas[1..] {
        r.terminate();
    }
    assert_eq!(fleet.lease_count().await, 0);
    fleet.ledger.check_invariants().await.expect("ledger sums");
    let sums = fleet.store.account_sums().await.expect("sums");
    let acme = sums.iter().find(|s| s.account == "acme").expect("acme");
    assert_eq!(acme.pending, 0, "no lease left");
    let total: i64 = served.iter().sum();
    // Charged at most what was served (1 credit each), at least what the survivors served.
    assert!(acme.posted <= total * 1000, "{acme:?}");
    assert!(acme.posted >= (served[1] + served[2]) * 1000, "{acme:?}");
    assert_eq!(acme.balance, 1_000_000 - acme.posted);
    eprintln!(
        "lease kill -9: served {served:?}; posted {} credits ({} of the dead replica's not yet \
         posted); its lease returned {returned_after:?} after the kill",
        acme.posted / 1000,
        total - acme.posted / 1000
    );
    fleet.cleanup_redis().await;
}

// ------------------------------------------------------- 5. config changes everywhere --

const AGENT_2: &str = "00000000-0000-4000-8000-000000000002";

/// One config file for the three replicas, with `watch_config = false`: only replica 1's
/// announcement can make the others re-read it. No Redis needed.
fn fleet_config(db_url: &str, backend: SocketAddr, agents: &[&str], extra: &str) -> String {
    fleet_config_watching(db_url, backend, agents, extra, false)
}

fn fleet_config_watching(
    db_url: &str,
    backend: SocketAddr,
    agents: &[&str],
    extra: &str,
    watch: bool,
) -> String {
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.2:0"
admin_token = "{ADMIN_TOKEN}"
log_format = "json"
drain_timeout_s = 1
watch_config = {watch}

[store]
url = "{db_url}"

[[front]]
api = "agents"
prefix = "/agents"
"#
    );
    for id in agents {
        text.push_str(&format!(
            "\n[[agent]]\nid = \"{id}\"\nupstream = \"http://{backend}\"\nupstream_api = \"agents\"\ncredits_per_message = 1\nmax_usage_credits = 0\n{extra}\n"
        ));
    }
    text
}

async fn chat_status(client: &reqwest::Client, replica: &Replica, agent: &str) -> u16 {
    client
        .post(replica.url(&format!("/agents/api/agents/{agent}/chat")))
        .json(&serde_json::json!({ "message": "hi" }))
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

async fn config_status(admin: &reqwest::Client, replica: &Replica) -> Value {
    admin
        .get(format!("http://{}/admin/v1/config", replica.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("config status")
        .json()
        .await
        .expect("json")
}

/// A key of account `acme` with credits, in the database at `url`.
async fn fleet_key(url: &str) -> SecretKey {
    let store = Store::open(url).await.expect("store");
    let (key, _) = create_key(
        &store,
        NewKeySpec {
            account: "acme".into(),
            kind: KeyKind::Master,
            scopes: Scopes::ALL,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await
    .expect("key");
    Ledger::new(store.clone(), LedgerConfig::default())
        .grant("acme", 1000.0, Some("fleet config test"))
        .await
        .expect("grant");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_applied_by_one_replica_is_applied_by_the_others_within_a_second() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let backend = DemoAgent::new(Api::Agents, Duration::ZERO)
        .spawn(([127, 0, 0, 1], 0).into())
        .await
        .expect("backend");
    let key = fleet_key(&db.url).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agentgate.toml");
    std::fs::write(&path, fleet_config(&db.url, backend, &[AGENT], "")).expect("config");
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&path)).collect();
    let client = client_for(&key);
    let admin = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("admin client");
    let generations: Vec<u64> = {
        let mut g = Vec::new();
        for r in &replicas {
            assert_eq!(chat_status(&client, r, AGENT).await, 200);
            assert_eq!(chat_status(&client, r, AGENT_2).await, 404);
            g.push(
                config_status(&admin, r).await["generation"]
                    .as_u64()
                    .expect("generation"),
            );
        }
        g
    };

    // A valid change, applied by SIGHUP on replica 1 only.
    let new_text = fleet_config(&db.url, backend, &[AGENT, AGENT_2], "");
    std::fs::write(&path, &new_text).expect("rewrite");
    let t0 = Instant::now();
    let pid = replicas[0].child.as_ref().expect("running").id();
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let mut seen = Vec::new();
    for r in &replicas[1..] {
        loop {
            let status = chat_status(&client, r, AGENT_2).await;
            if status == 200 {
                seen.push(t0.elapsed());
                break;
            }
            assert_eq!(status, 404);
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "the new agent is not served after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(seen.iter().all(|d| *d < Duration::from_secs(1)), "{seen:?}");
    eprintln!("config change applied by the other replicas after {seen:?}");
    // Replica 1 applied it by SIGHUP, the others on its announcement: all on the same text.
    let hex = agentgate::auth::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(new_text.as_bytes()));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = config_status(&admin, &replicas[0]).await;
        if s["sha256"] == hex.as_str() {
            assert_eq!(s["last_reload"]["trigger"], "sighup");
            break;
        }
        assert!(Instant::now() < deadline, "replica 1 did not apply: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (r, g) in replicas.iter().zip(&generations).skip(1) {
        let s = config_status(&admin, r).await;
        assert_eq!(s["sha256"], hex.as_str(), "{s}");
        assert_eq!(s["last_reload"]["trigger"], "fleet", "{s}");
        assert_eq!(s["last_reload"]["result"], "ok", "{s}");
        assert_eq!(s["generation"].as_u64(), Some(g + 1), "{s}");
    }

    // An invalid change is refused by replica 1 and never announced: the others keep serving
    // the config they run and do not even try the file.
    let bad_text = fleet_config(
        &db.url,
        backend,
        &[AGENT, AGENT_2],
        "credits_per_message = -1",
    );
    std::fs::write(&path, &bad_text).expect("rewrite");
    let resp = admin
        .post(format!(
            "http://{}/admin/v1/config/reload",
            replicas[0].admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 422);
    // Longer than a valid change took to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (r, g) in replicas.iter().zip(&generations).skip(1) {
        let s = config_status(&admin, r).await;
        assert_eq!(s["sha256"], hex.as_str(), "{s}");
        assert_eq!(s["last_reload"]["trigger"], "fleet", "{s}");
        assert_eq!(s["generation"].as_u64(), Some(g + 1), "{s}");
        assert_eq!(chat_status(&client, r, AGENT_2).await, 200);
    }
    assert_eq!(chat_status(&client, &replicas[0], AGENT_2).await, 200);
    for r in &mut replicas {
        r.terminate();
    }
}

/// Like a Kubernetes ConfigMap volume that reaches the nodes at different times: two replicas
/// with a file each (both watched). Replica 1's file changes and is applied; replica 2 hears
/// the announcement, finds its own file not matching yet, says so and keeps serving; once its
/// file catches up its watcher applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_file_lags_behind_the_announcement_waits_for_its_file() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let backend = DemoAgent::new(Api::Agents, Duration::ZERO)
        .spawn(([127, 0, 0, 1], 0).into())
        .await
        .expect("backend");
    let key = fleet_key(&db.url).await;
    let dir = tempfile::tempdir().expect("dir");
    let paths = [dir.path().join("a.toml"), dir.path().join("b.toml")];
    let old = fleet_config_watching(&db.url, backend, &[AGENT], "", true);
    let new = fleet_config_watching(&db.url, backend, &[AGENT, AGENT_2], "", true);
    for p in &paths {
        std::fs::write(p, &old).expect("config");
    }
    let mut replicas: Vec<Replica> = paths.iter().map(|p| Replica::start(p)).collect();
    let client = client_for(&key);
    let admin = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("admin client");
    let generation = config_status(&admin, &replicas[1]).await["generation"].as_u64();
    std::fs::write(&paths[0], &new).expect("rewrite");
    let resp = admin
        .post(format!(
            "http://{}/admin/v1/config/reload",
            replicas[0].admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + PATIENCE;
    while !replicas[1].logged("does not match yet") {
        assert!(
            Instant::now() < deadline,
            "replica 2 never heard the announcement"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = config_status(&admin, &replicas[1]).await;
    assert_eq!(s["generation"].as_u64(), generation, "{s}");
    assert_eq!(chat_status(&client, &replicas[1], AGENT_2).await, 404);
    // Its file catches up: its own watcher applies it.
    std::fs::write(&paths[1], &new).expect("catch up");
    loop {
        if chat_status(&client, &replicas[1], AGENT_2).await == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 2 never applied its file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = config_status(&admin, &replicas[1]).await;
    assert_eq!(s["last_reload"]["trigger"], "file", "{s}");
    for r in &mut replicas {
        r.terminate();
    }
}
