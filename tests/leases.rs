//! Credit lease mode on a real PostgreSQL database (skipped when unreachable): replicas serve
//! from blocks of credits taken from the balance, never more than the account holds, settle
//! each request once, give the rest back on shutdown, and a crashed replica's lease comes back
//! after its timeout.

mod policy_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentgate::credits::{CreditError, LeaseConfig, Ledger, LedgerConfig};
use agentgate::store::{now_ms, UsageFilter};
use policy_support::{fixture_on, req, Backend};

fn lease_config(block_credits: i64, timeout: Duration) -> LedgerConfig {
    LedgerConfig {
        lease: Some(LeaseConfig {
            block: block_credits * 1000,
            timeout,
        }),
        ..LedgerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_leasing_never_overdraw_and_settle_each_request_once() {
    let Some(fx) = fixture_on(Backend::Postgres, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 100.0, None).await.expect("grant");
    let cfg = lease_config(7, Duration::from_secs(30));
    let replicas = [
        Ledger::new(fx.second_handle().await, cfg.clone()),
        Ledger::new(fx.second_handle().await, cfg),
    ];
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        let (ledger, served) = (replicas[i % 2].clone(), Arc::clone(&served));
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i}");
            match ledger.reserve(req("acme", &id, 1.0, 1.0)).await {
                Ok(r) => {
                    // Half report less usage than reserved: the rest returns to the lease.
                    let s = r
                        .settle(if i % 2 == 0 { 1.0 } else { 0.5 })
                        .await
                        .expect("settle");
                    assert!(s.charged > 0.0);
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Err(CreditError::Insufficient { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Nothing more than the 100 granted credits could be spent (0.5 or 1 each): between 100
    // and 200 requests were served, and the balance never went below zero (CHECK).
    let n = served.load(Ordering::Relaxed);
    assert!((100..=200).contains(&n), "served {n}");
    // Shutdown: post the charges, give the rest back.
    for r in &replicas {
        r.release_leases().await.expect("released");
    }
    fx.ledger.check_invariants().await.expect("sums match");
    let rows = fx.store.usage(UsageFilter::default()).await.expect("usage");
    let charged: i64 = rows.iter().map(|r| r.charged).sum();
    let requests: i64 = rows.iter().map(|r| r.requests).sum();
    assert_eq!(requests, n as i64, "every served request posted once");
    assert_eq!(
        fx.store.balance("acme").await.expect("b").expect("exists"),
        100_000 - charged
    );
    // What is left (less than one request's worth) is back in the balance, not in a lease.
    assert!(100_000 - charged < 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_lease_returns_after_its_timeout() {
    let Some(fx) = fixture_on(Backend::Postgres, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 50.0, None).await.expect("grant");
    let timeout = Duration::from_millis(800);
    // The "crashed" replica runs on a runtime of its own, which then stops dead: no release,
    // no more syncs.
    let url = fx.url();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let store = agentgate::store::Store::open(&url).await.expect("store");
            let crashed = Ledger::new(store, lease_config(20, timeout));
            let r = crashed
                .reserve(req("acme", "a", 2.0, 1.0))
                .await
                .expect("from a lease");
            r.settle(2.0).await.expect("settled");
            // Let one sync post the charge.
            tokio::time::sleep(timeout / 2).await;
            std::mem::forget(crashed);
        });
        rt.shutdown_background();
    })
    .join()
    .expect("crashed replica ran");
    // The lease holds 20 of the 50 credits.
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 30.0);
    // Not yet expired: recovery on another replica leaves it alone.
    let survivor = Ledger::new(fx.second_handle().await, LedgerConfig::default());
    survivor.recover(now_ms()).await.expect("recover");
    assert_eq!(survivor.balance("acme").await.expect("b"), 30.0);
    tokio::time::sleep(timeout + Duration::from_millis(100)).await;
    survivor.recover(now_ms()).await.expect("recover");
    // 50 granted − 2 posted: the lease's 18 unused credits are back.
    assert_eq!(survivor.balance("acme").await.expect("b"), 48.0);
    survivor.check_invariants().await.expect("sums match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_mode_refuses_a_sqlite_store() {
    let fx = policy_support::fixture().await;
    let store = fx.store.clone();
    let e = store
        .lease_take(agentgate::store::LeaseTake {
            lease_id: "l".into(),
            account: "acme".into(),
            holder: "h".into(),
            amount: 1,
            create: true,
            now: now_ms(),
            expires_at: now_ms(),
        })
        .await
        .expect_err("SQLite has no leases");
    assert!(e.to_string().contains("PostgreSQL"), "{e}");
    assert_eq!(
        store.recover_leases(now_ms()).await.expect("nothing to do"),
        0
    );
}

/// A stream's keep-alive goes through the ledger: a reservation's expiry moves in the store
/// while it is pending and not after it settled; in lease mode there is no reservation row
/// and extending does nothing (it reports success without asking the store, which knows no
/// such reservation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_extends_through_the_ledger_and_does_nothing_in_lease_mode() {
    let Some(fx) = fixture_on(Backend::Postgres, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 10.0, None).await.expect("grant");
    let r = fx
        .ledger
        .reserve(req("acme", "plain", 1.0, 1.0))
        .await
        .expect("reserved");
    let before = fx.store.reservation("plain").await.expect("read");
    let before = before.expect("row").expires_at;
    let extender = r.extender();
    assert!(!extender.is_noop());
    // The default reservation timeout is 15 minutes: an hour is later whatever the clock.
    assert!(extender
        .extend(Duration::from_secs(3600))
        .await
        .expect("extended"));
    let after = fx.store.reservation("plain").await.expect("read");
    assert!(after.expect("row").expires_at > before);
    r.settle(1.0).await.expect("settled");
    assert!(!extender
        .extend(Duration::from_secs(3600))
        .await
        .expect("ran"));

    let leased = Ledger::new(
        fx.second_handle().await,
        lease_config(5, Duration::from_secs(30)),
    );
    let r = leased
        .reserve(req("acme", "leased", 1.0, 1.0))
        .await
        .expect("reserved from a lease");
    let extender = r.extender();
    assert!(extender.is_noop());
    assert!(extender
        .extend(Duration::from_secs(3600))
        .await
        .expect("nothing to do"));
    assert!(r.extend().await.expect("nothing to do"));
    assert!(fx
        .store
        .reservation("leased")
        .await
        .expect("read")
        .is_none());
    r.settle(1.0).await.expect("settled into the lease");
    leased.release_leases().await.expect("released");
    fx.ledger.check_invariants().await.expect("sums match");
}
