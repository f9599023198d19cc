//! End-to-end benchmark: a fast SSE backend and the release `agentgate` binary, each its own
//! process, driven by an in-process HTTP load generator; direct against through-agentgate in
//! one run.
//!
//!   cargo bench --bench e2e                    # throughput, then memory
//!   cargo bench --bench e2e -- throughput      # req/s, whole-stream p50/p99, TTFB, CPU/request
//!   cargo bench --bench e2e -- memory          # resident memory per open slow stream
//!
//! Throughput (env: E2E_SECS=5 per run, E2E_ROUNDS=3, E2E_CONNS=32, E2E_EVENTS=50): C
//! connections in a closed loop (HTTP/1.1, keep-alive) each send a chat and read the whole
//! stream, then the next. Scenarios, rotated each round, medians over the rounds:
//! `direct` (the backend itself), `passthrough` (chatbase front, ui-message in and out),
//! `transcode` (guayaba front with `"stream": true`: ui-message in, session-delta out), each
//! with policy off (an open front) and on (a master key: key check, rate limit, a durable
//! credit reservation and its settlement). These are the shapes of `config/bench/*.toml`.
//! CPU per request is utime+stime of the gateway process (of the backend for `direct`) over
//! the run, from /proc/<pid>/stat, divided by the answers completed.
//!
//! Memory (env: E2E_STREAMS=10000): the backend sends one event a second; that many streams
//! are opened through agentgate and held open; the gateway's VmRSS (/proc/<pid>/status) before
//! and with all of them open gives resident memory per stream. Clients reach the gateway over
//! h2c (100 streams per connection) so that the gateway's file descriptors (one per upstream
//! connection) stay under the container's limit; a second run over HTTP/1.1 (one connection
//! per stream, two descriptors per stream in the gateway) opens as many as the limit allows.
//!
//! The backend is this same executable started again with `AGENTGATE_E2E_BACKEND=1`.

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

const AGENTGATE: &str = env!("CARGO_BIN_EXE_agentgate");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var_os("AGENTGATE_E2E_BACKEND").is_some() {
        return backend_main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| {
        let named: Vec<&String> = args
            .iter()
            .filter(|a| *a == "throughput" || *a == "memory")
            .collect();
        named.is_empty() || named.iter().any(|a| *a == name)
    };
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("cannot raise the open-file limit: {e}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if wants("throughput") {
        rt.block_on(throughput());
    }
    if wants("memory") {
        rt.block_on(memory());
    }
}

// ------------------------------------------------------------------------------ processes --

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
    /// Its log, shown if it ended before it was stopped.
    log: Option<std::path::PathBuf>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!("{} had ended on its own: {status}", self.name);
            if let Some(log) = &self.log {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

/// Starts the backend (this executable again) and returns it with its address.
fn spawn_backend() -> (Proc, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env("AGENTGATE_E2E_BACKEND", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("backend starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("backend prints its address");
    let addr = line.trim().parse().expect("an address");
    (
        Proc {
            child,
            name: "backend",
            log: None,
        },
        addr,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The gateway under test: four fronts over one backend agent, policy off and on.
struct GatewayUnderTest {
    proc: Proc,
    addr: SocketAddr,
    key: String,
    _dir: tempfile::TempDir,
}

fn spawn_gateway(backend: SocketAddr, backend_path: &str) -> GatewayUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let store = format!("sqlite://{}", db.display());
    let port = free_port();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
drain_timeout_s = 1

[store]
url = "{store}"

[[front]]
api = "chatbase"
prefix = "/open/ui"
require_key = false

[[front]]
api = "guayaba"
prefix = "/open/sd"
require_key = false

[[front]]
api = "chatbase"
prefix = "/key/ui"

[[front]]
api = "guayaba"
prefix = "/key/sd"

[[agent]]
id = "bench"
upstream = "http://{backend}{backend_path}"
upstream_api = "chatbase"
idle_timeout_ms = 120000
record = {record}
"#,
        // AGENTGATE_E2E_RECORD=0: no transcripts (to measure what recording costs).
        record = env_or("AGENTGATE_E2E_RECORD", 1u8) != 0,
    );
    let path = dir.path().join("agentgate.toml");
    std::fs::write(&path, config).expect("config written");
    let out = Command::new(AGENTGATE)
        .args(["keys", "create", "--store", &store])
        .args(["--account", "bench", "--kind", "master"])
        .output()
        .expect("agentgate keys create");
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key:").map(|k| k.trim().to_owned()))
        .unwrap_or_else(|| panic!("no key in {}", String::from_utf8_lossy(&out.stdout)));
    let status = Command::new(AGENTGATE)
        .args(["credits", "grant", "--store", &store, "--account", "bench"])
        .args(["--credits", "1000000000000"])
        .stdout(Stdio::null())
        .status()
        .expect("agentgate credits grant");
    assert!(status.success());
    let log_path = dir.path().join("agentgate.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(AGENTGATE)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("agentgate serve");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    GatewayUnderTest {
        proc: Proc {
            child,
            name: "agentgate",
            log: Some(log_path),
        },
        addr,
        key,
        _dir: dir,
    }
}

/// utime + stime of a process, in microseconds.
fn cpu_us(pid: u32, tick_us: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) — utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() * tick_us
}

fn tick_us() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    let ticks: u64 = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    1_000_000 / ticks
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ----------------------------------------------------------------------------- throughput --

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    /// Path on the gateway (or the backend, for `direct`).
    path: &'static str,
    body: &'static str,
    keyed: bool,
    direct: bool,
    /// What the last event of a whole answer contains.
    end: &'static str,
}

const UI_BODY: &str = r#"{"message":"Say hello"}"#;
const SD_BODY: &str = r#"{"message":"Say hello","stream":true}"#;

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "direct (the backend, ui-message)",
        path: "/chat",
        body: UI_BODY,
        keyed: false,
        direct: true,
        end: "[DONE]",
    },
    Scenario {
        name: "passthrough ui→ui, policy off",
        path: "/open/ui/api/v2/agents/bench/chat",
        body: UI_BODY,
        keyed: false,
        direct: false,
        end: "[DONE]",
    },
    Scenario {
        name: "transcode ui→session-delta, policy off",
        path: "/open/sd/api/v1/agents/bench/chat",
        body: SD_BODY,
        keyed: false,
        direct: false,
        end: "event: done",
    },
    Scenario {
        name: "passthrough ui→ui, policy on",
        path: "/key/ui/api/v2/agents/bench/chat",
        body: UI_BODY,
        keyed: true,
        direct: false,
        end: "[DONE]",
    },
    Scenario {
        name: "transcode ui→session-delta, policy on",
        path: "/key/sd/api/v1/agents/bench/chat",
        body: SD_BODY,
        keyed: true,
        direct: false,
        end: "event: done",
    },
];

#[derive(Default, Clone)]
struct RunResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ttfb_p50_ms: f64,
    cpu_us_per_req: f64,
    backend_us_per_req: f64,
    errors: u64,
}

struct Target {
    addr: SocketAddr,
    path: String,
    body: &'static str,
    auth: Option<String>,
    end: &'static str,
}

async fn throughput() {
    let secs: u64 = env_or("E2E_SECS", 5);
    let rounds: usize = env_or("E2E_ROUNDS", 3);
    let conns: usize = env_or("E2E_CONNS", 32);
    let events: u32 = env_or("E2E_EVENTS", 50);
    let tick = tick_us();
    let (backend, backend_addr) = spawn_backend();
    let backend_path = format!("/n{events}");
    let gateway = spawn_gateway(backend_addr, &backend_path);
    eprintln!(
        "throughput: {conns} connections, {secs} s per run, {rounds} rounds, {events} text \
         deltas of 16 bytes per answer ({} events)",
        events + 5
    );
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); SCENARIOS.len()];
    for round in 0..rounds {
        for i in 0..SCENARIOS.len() {
            let index = (i + round) % SCENARIOS.len();
            let s = SCENARIOS[index];
            let (addr, path) = if s.direct {
                (backend_addr, format!("{backend_path}{}", s.path))
            } else {
                (gateway.addr, s.path.to_owned())
            };
            let target = Arc::new(Target {
                addr,
                path,
                body: s.body,
                auth: s.keyed.then(|| format!("Bearer {}", gateway.key)),
                end: s.end,
            });
            // Warm up (connections, pools, caches), not recorded.
            load(&target, conns, Duration::from_secs(1)).await;
            let (gw0, up0) = (
                cpu_us(gateway.proc.pid(), tick),
                cpu_us(backend.pid(), tick),
            );
            let started = Instant::now();
            let stats = load(&target, conns, Duration::from_secs(secs)).await;
            let elapsed = started.elapsed().as_secs_f64();
            let gw = cpu_us(gateway.proc.pid(), tick).saturating_sub(gw0);
            let up = cpu_us(backend.pid(), tick).saturating_sub(up0);
            let result = stats.summary(elapsed, if s.direct { 0 } else { gw }, up);
            eprintln!(
                "round {} {:<40} {:>8.1} req/s p50 {:>6.2} ms p99 {:>6.2} ms ttfb {:>5.2} ms \
                 gateway {:>6.1} µs/req backend {:>6.1} µs/req errors {}",
                round + 1,
                s.name,
                result.rps,
                result.p50_ms,
                result.p99_ms,
                result.ttfb_p50_ms,
                result.cpu_us_per_req,
                result.backend_us_per_req,
                result.errors
            );
            results[index].push(result);
        }
    }
    let median = |runs: &[RunResult], f: fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "{conns} connections, {} events per answer, {secs} s × {rounds} rounds, medians",
        events + 5
    );
    println!();
    println!(
        "| scenario | req/s | p50 ms | p99 ms | TTFB p50 ms | agentgate CPU µs/req | backend CPU µs/req | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (s, runs) in SCENARIOS.iter().zip(&results) {
        let gateway_cpu = if s.direct {
            "–".to_owned()
        } else {
            format!("{:.0}", median(runs, |r| r.cpu_us_per_req))
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {gateway_cpu} | {:.0} | {} |",
            s.name,
            median(runs, |r| r.rps),
            median(runs, |r| r.p50_ms),
            median(runs, |r| r.p99_ms),
            median(runs, |r| r.ttfb_p50_ms),
            median(runs, |r| r.backend_us_per_req),
            runs.iter().map(|r| r.errors).sum::<u64>(),
        );
    }
    println!();
    drop(gateway);
    drop(backend);
}

#[derive(Default)]
struct Stats {
    whole_us: Vec<u64>,
    ttfb_us: Vec<u64>,
    errors: u64,
}

impl Stats {
    fn summary(mut self, elapsed: f64, cpu_us: u64, backend_us: u64) -> RunResult {
        self.whole_us.sort_unstable();
        self.ttfb_us.sort_unstable();
        let pct = |v: &[u64], p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        let n = self.whole_us.len();
        RunResult {
            rps: n as f64 / elapsed,
            p50_ms: pct(&self.whole_us, 0.50),
            p99_ms: pct(&self.whole_us, 0.99),
            ttfb_p50_ms: pct(&self.ttfb_us, 0.50),
            cpu_us_per_req: if n == 0 {
                0.0
            } else {
                cpu_us as f64 / n as f64
            },
            backend_us_per_req: if n == 0 {
                0.0
            } else {
                backend_us as f64 / n as f64
            },
            errors: self.errors,
        }
    }
}

/// `conns` connections in a closed loop for `duration`.
async fn load(target: &Arc<Target>, conns: usize, duration: Duration) -> Stats {
    let deadline = Instant::now() + duration;
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for _ in 0..conns {
        let target = target.clone();
        handles.push(local.spawn_local(async move { worker(&target, deadline).await }));
    }
    local
        .run_until(async move {
            let mut all = Stats::default();
            for h in handles {
                let s = h.await.expect("worker");
                all.whole_us.extend(s.whole_us);
                all.ttfb_us.extend(s.ttfb_us);
                all.errors += s.errors;
            }
            all
        })
        .await
}

fn chat_request(target: &Target) -> Request<Full<Bytes>> {
    let mut req = Request::post(&target.path)
        .header("host", target.addr.to_string())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream");
    if let Some(auth) = &target.auth {
        req = req.header("authorization", auth);
    }
    req.body(Full::new(Bytes::from_static(target.body.as_bytes())))
        .expect("request")
}

async fn worker(target: &Target, deadline: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut sender = None;
    while Instant::now() < deadline {
        if sender.is_none() {
            match connect_h1(target.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let started = Instant::now();
        match exchange(s, chat_request(target), target.end).await {
            Ok(ttfb) => {
                stats.ttfb_us.push(ttfb.as_micros() as u64);
                stats.whole_us.push(started.elapsed().as_micros() as u64);
            }
            Err(_) => {
                stats.errors += 1;
                sender = None;
            }
        }
    }
    stats
}

async fn connect_h1(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(conn);
    Ok(sender)
}

/// Sends one chat and reads the whole answer; returns the time to its first body byte.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    end: &str,
) -> Result<Duration, String> {
    let started = Instant::now();
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            ttfb.get_or_insert_with(|| started.elapsed());
            tail.extend_from_slice(data);
            if tail.len() > 256 {
                tail.drain(..tail.len() - 256);
            }
        }
    }
    let whole = std::str::from_utf8(&tail).unwrap_or_default();
    if !whole.contains(end) {
        return Err("the answer did not end properly".into());
    }
    ttfb.ok_or_else(|| "empty answer".into())
}

// --------------------------------------------------------------------------------- memory --

async fn memory() {
    let streams: usize = env_or("E2E_STREAMS", 10_000);
    let (backend, backend_addr) = spawn_backend();
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    // HTTP/1.1: a connection per stream, two file descriptors per stream in the gateway.
    let h1_streams = streams.min((limit as usize).saturating_sub(200) / 2);
    println!();
    println!("| clients | scenario | streams open | RSS before | RSS with all open | per stream |");
    println!("|---|---|---:|---:|---:|---:|");
    for (scenario, path, body, keyed) in [
        (
            "passthrough ui→ui, policy off",
            "/open/ui/api/v2/agents/bench/chat",
            UI_BODY,
            false,
        ),
        (
            "transcode ui→session-delta, policy on",
            "/key/sd/api/v1/agents/bench/chat",
            SD_BODY,
            true,
        ),
    ] {
        for (clients, n) in [("h2c", streams), ("HTTP/1.1", h1_streams)] {
            // A fresh gateway per row, so memory freed by an earlier row does not hide
            // this one's. Streams of an hour, one event a second.
            let gateway = spawn_gateway(backend_addr, "/n3600/d1000");
            let target = Target {
                addr: gateway.addr,
                path: path.to_owned(),
                body,
                auth: keyed.then(|| format!("Bearer {}", gateway.key)),
                end: "",
            };
            let row = hold_streams(&target, gateway.proc.pid(), clients == "h2c", n).await;
            println!(
                "| {clients} | {scenario} | {} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
                row.open,
                row.before_kib as f64 / 1024.0,
                row.with_kib as f64 / 1024.0,
                (row.with_kib.saturating_sub(row.before_kib)) as f64 / row.open.max(1) as f64,
            );
            std::io::stdout().flush().ok();
        }
    }
    println!();
    drop(backend);
}

struct MemoryRow {
    open: usize,
    before_kib: u64,
    with_kib: u64,
}

/// Opens `n` streams through the gateway, waits until each has its first event, measures the
/// gateway's RSS, then closes them all.
async fn hold_streams(target: &Target, pid: u32, h2: bool, n: usize) -> MemoryRow {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kib = rss_kib(pid);
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let local = tokio::task::LocalSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(128));
    let started = Instant::now();
    if h2 {
        let per_conn = 100;
        for c in 0..n.div_ceil(per_conn) {
            let count = per_conn.min(n - c * per_conn);
            let (open, failed, permits) = (open.clone(), failed.clone(), permits.clone());
            let req = chat_request(target);
            local.spawn_local(async move {
                let permit = permits.acquire_owned().await.ok();
                let Ok(stream) = TcpStream::connect(target_addr(&req)).await else {
                    failed.fetch_add(count as u64, Ordering::Relaxed);
                    return;
                };
                let Ok((sender, conn)) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                else {
                    failed.fetch_add(count as u64, Ordering::Relaxed);
                    return;
                };
                tokio::task::spawn_local(conn);
                drop(permit);
                for _ in 0..count {
                    let mut sender = sender.clone();
                    let req = clone_request(&req);
                    let (open, failed) = (open.clone(), failed.clone());
                    tokio::task::spawn_local(async move {
                        match sender.send_request(req).await {
                            Ok(r) => hold(r, &open, &failed).await,
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
        }
    } else {
        for _ in 0..n {
            let (open, failed, permits) = (open.clone(), failed.clone(), permits.clone());
            let req = chat_request(target);
            local.spawn_local(async move {
                let permit = permits.acquire_owned().await.ok();
                let Ok(mut sender) = connect_h1(target_addr(&req)).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                match sender.send_request(req).await {
                    Ok(r) => {
                        drop(permit);
                        hold(r, &open, &failed).await;
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(sender);
            });
        }
    }
    let with_kib = local
        .run_until(async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (o, f) = (open.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                if o + f as usize >= n || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
            }
            // Every stream has had its first event; let each get a couple more, then measure.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss = rss_kib(pid);
            eprintln!(
                "{} streams open ({} failed) after {:.1} s; gateway VmRSS {} KiB",
                open.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64(),
                rss
            );
            rss
        })
        .await;
    let open_now = open.load(Ordering::Relaxed);
    // Dropping the tasks closes every stream.
    drop(local);
    MemoryRow {
        open: open_now,
        before_kib,
        with_kib,
    }
}

fn target_addr(req: &Request<Full<Bytes>>) -> SocketAddr {
    req.headers()["host"]
        .to_str()
        .ok()
        .and_then(|h| h.parse().ok())
        .expect("host header is the address")
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = format!("http://{}{}", target_addr(req), req.uri().path())
        .parse()
        .expect("uri");
    *r.headers_mut() = req.headers().clone();
    r.headers_mut().remove("host");
    r
}

/// Reads a stream's first event, counts it open, and holds it (reading) until dropped.
async fn hold(response: Response<Incoming>, open: &AtomicUsize, failed: &AtomicU64) {
    if response.status() != 200 {
        failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut body = response.into_body();
    match body.frame().await {
        Some(Ok(_)) => {
            open.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    while let Some(Ok(_)) = body.frame().await {}
}

// -------------------------------------------------------------------------------- backend --

/// The backend process: a ui-message SSE server. The path may hold `/n<events>` (text deltas,
/// default 50) and `/d<ms>` (pause between events, default none). It prints its address on
/// stdout and serves until its stdin closes.
fn backend_main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        std::io::stdout().flush().ok();
        // Parent gone (stdin closed): exit.
        std::thread::spawn(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            std::process::exit(0);
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (n, delay) = shape(req.uri().path());
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(SseBody::new(n, delay));
                    r.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("text/event-stream"),
                    );
                    r.headers_mut().insert(
                        "x-vercel-ai-ui-message-stream",
                        http::HeaderValue::from_static("v1"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn shape(path: &str) -> (u32, Option<Duration>) {
    let mut n = 50;
    let mut delay = None;
    for segment in path.split('/') {
        if let Some(v) = segment.strip_prefix('n').and_then(|v| v.parse().ok()) {
            n = v;
        }
        if let Some(v) = segment
            .strip_prefix('d')
            .and_then(|v| v.parse::<u64>().ok())
        {
            delay = (v > 0).then(|| Duration::from_millis(v));
        }
    }
    (n, delay)
}

/// `start`, `text-start`, n × `text-delta` (16 bytes), `text-end`, `finish`, `[DONE]`: each
/// event its own frame, with a turn yielded after each (so each is its own write, as a token
/// stream's would be), or a pause.
struct SseBody {
    next: u32,
    n: u32,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    yielded: bool,
}

impl SseBody {
    fn new(n: u32, delay: Option<Duration>) -> Self {
        SseBody {
            next: 0,
            n,
            delay,
            sleep: None,
            yielded: false,
        }
    }

    fn event(&self, i: u32) -> Option<Bytes> {
        let n = self.n;
        Some(match i {
            0 => Bytes::from_static(b"data: {\"type\":\"start\",\"messageId\":\"msg-bench\"}\n\n"),
            1 => Bytes::from_static(b"data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n"),
            i if i < n + 2 => Bytes::from_static(
                b"data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"hello world 0123\"}\n\n",
            ),
            i if i == n + 2 => {
                Bytes::from_static(b"data: {\"type\":\"text-end\",\"id\":\"t1\"}\n\n")
            }
            i if i == n + 3 => Bytes::from_static(b"data: {\"type\":\"finish\"}\n\n"),
            i if i == n + 4 => Bytes::from_static(b"data: [DONE]\n\n"),
            _ => return None,
        })
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.next > 0 {
            match this.delay {
                Some(delay) => {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
                None if !this.yielded => {
                    this.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                None => {}
            }
        }
        this.yielded = false;
        let event = this.event(this.next);
        this.next += 1;
        Poll::Ready(event.map(|e| Ok(Frame::data(e))))
    }
}
