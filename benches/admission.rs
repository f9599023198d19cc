//! Admission cost per request (key check on a cache hit + rate limit + the in-memory part of a
//! reservation), and durable reserve+settle throughput with group commit vs one transaction
//! per operation.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentgate::auth::{create_key, Authenticator, KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::credits::{Ledger, LedgerConfig, PendingReservation, ReserveRequest};
use agentgate::limits::{RateLimiter, RateQuota};
use agentgate::store::{SqliteOptions, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

struct Setup {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    auth: Authenticator,
    ledger: Ledger,
    header: String,
    key_id: String,
}

fn setup(opts: SqliteOptions) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (auth, ledger, header, key_id) = rt.block_on(async {
        let store = Store::open_sqlite(dir.path().join("bench.db"), opts)
            .await
            .expect("store");
        let ledger = Ledger::new(store.clone(), LedgerConfig::default());
        ledger.grant("acme", 1e12, None).await.expect("grant");
        let (secret, info) = create_key(
            &store,
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
        .expect("key");
        let auth = Authenticator::new(store);
        let header = format!("Bearer {}", secret.expose());
        auth.authenticate(Some(&header), false)
            .await
            .expect("warm cache");
        (auth, ledger, header, info.public_id().to_owned())
    });
    Setup {
        _dir: dir,
        rt,
        auth,
        ledger,
        header,
        key_id,
    }
}

/// Waits for the reservations admitted during a sample and settles them (outside the timing).
async fn drain(ledger: &Ledger, pending: Vec<PendingReservation>) {
    for p in pending {
        if let Ok(r) = p.durable().await {
            r.settle_now(0.0);
        }
    }
    ledger.flush().await.expect("flush");
}

fn admission(c: &mut Criterion) {
    let s = setup(SqliteOptions::default());
    let limiter = RateLimiter::new();
    let quota = RateQuota::new(f64::from(u32::MAX), u32::MAX);
    let seq = AtomicU64::new(0);
    let mut g = c.benchmark_group("admission");
    g.throughput(Throughput::Elements(1));

    g.bench_function("key_check_cache_hit", |b| {
        b.iter(|| {
            s.rt.block_on(s.auth.authenticate(Some(black_box(&s.header)), false))
                .expect("ok")
        })
    });
    g.bench_function("rate_limit_key_and_agent", |b| {
        b.iter(|| {
            limiter
                .check(black_box(&s.key_id), quota, "agent1", quota)
                .expect("allowed")
        })
    });
    g.bench_function("request_in_memory_path", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let mut pending = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    let key = s
                        .auth
                        .authenticate(Some(&s.header), false)
                        .await
                        .expect("ok");
                    limiter
                        .check(key.public_id(), quota, "agent1", quota)
                        .expect("allowed");
                    let id = seq.fetch_add(1, Ordering::Relaxed).to_string();
                    pending.push(
                        s.ledger
                            .admit(&ReserveRequest {
                                account: key.account(),
                                key_id: key.public_id(),
                                agent_id: "agent1",
                                request_id: &id,
                                amount: 11.0,
                                fallback: 1.0,
                            })
                            .expect("admitted"),
                    );
                }
                let elapsed = start.elapsed();
                drain(&s.ledger, pending).await;
                elapsed
            })
        })
    });
    g.finish();
}

/// `requests` concurrent tasks each reserve (awaiting durability) and settle (durably).
fn durable_round(s: &Setup, seq: &AtomicU64, requests: u64) -> Duration {
    s.rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..requests)
            .map(|_| {
                let ledger = s.ledger.clone();
                let id = seq.fetch_add(1, Ordering::Relaxed).to_string();
                tokio::spawn(async move {
                    let r = ledger
                        .reserve(ReserveRequest {
                            account: "acme",
                            key_id: "k",
                            agent_id: "a",
                            request_id: &id,
                            amount: 11.0,
                            fallback: 1.0,
                        })
                        .await
                        .expect("reserved");
                    r.settle(3.0).await.expect("settled");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

fn settling(c: &mut Criterion) {
    let mut g = c.benchmark_group("reserve_settle_durable");
    g.sample_size(10);
    let seq = Arc::new(AtomicU64::new(0));
    for (name, max_batch, requests) in [("group_commit", 1024, 256u64), ("txn_per_op", 1, 64)] {
        let s = setup(SqliteOptions {
            max_batch,
            ..SqliteOptions::default()
        });
        g.throughput(Throughput::Elements(requests));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| durable_round(&s, &seq, requests)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, admission, settling);
criterion_main!(benches);
