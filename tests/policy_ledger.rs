//! The credit ledger against a real SQLite file and a real PostgreSQL database (each test runs
//! on both; PostgreSQL skips when unreachable): races, exactly-once settling, idempotency.

mod policy_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentgate::credits::{CreditError, Ledger, LedgerConfig};
use agentgate::idempotency::Begin;
use agentgate::store::{now_ms, SettleOutcome, SettleRequest};
use policy_support::{fixture_on, req, short_timeouts, Backend};
use tokio::sync::Barrier;

crate::on_both_stores!(
    thousand_racing_reservations_against_a_hundred_credits,
    thousand_racing_reservations_against_a_hundred_credits_on
);
async fn thousand_racing_reservations_against_a_hundred_credits_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger
        .grant("acme", 100.0, Some("test"))
        .await
        .expect("granted");

    // Sample the committed balance continuously while the race runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, stop) = (fx.store.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut samples = 0u32;
            while !stop.load(Ordering::Acquire) {
                let b = store.balance("acme").await.expect("read").unwrap_or(0);
                assert!(b >= 0, "balance went negative: {b}");
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };

    let n = 1000;
    let barrier = Arc::new(Barrier::new(n));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (ledger, barrier, refused) = (
            fx.ledger.clone(),
            Arc::clone(&barrier),
            Arc::clone(&refused),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let id = format!("req-{i}");
            match ledger.reserve(req("acme", &id, 1.0, 1.0)).await {
                Ok(r) => Some(r),
                Err(CreditError::Insufficient { balance, needed }) => {
                    assert!(balance >= 0.0 && balance < needed);
                    refused.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Some(r) = t.await.expect("task") {
            held.push(r);
        }
    }
    assert_eq!(
        held.len(),
        100,
        "exactly the affordable reservations succeed"
    );
    assert_eq!(refused.load(Ordering::Relaxed), 900);
    assert_eq!(fx.ledger.balance("acme").await.expect("balance"), 0.0);
    fx.ledger
        .check_invariants()
        .await
        .expect("sums match with 100 pending");

    for r in held {
        let s = r.settle_now(1.0);
        assert_eq!((s.charged, s.refunded), (1.0, 0.0));
    }
    fx.ledger.flush().await.expect("flushed");
    stop.store(true, Ordering::Release);
    assert!(sampler.await.expect("sampler") > 0);
    assert_eq!(fx.ledger.balance("acme").await.expect("balance"), 0.0);
    assert_eq!(fx.store.pending_count().await.expect("count"), 0);
    fx.ledger.check_invariants().await.expect("sums match");
}

crate::on_both_stores!(
    settles_exactly_once_whichever_way,
    settles_exactly_once_whichever_way_on
);
async fn settles_exactly_once_whichever_way_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 50.0, None).await.expect("granted");

    // Explicit settlement: charge clamped to the reservation, rest refunded.
    let r = fx
        .ledger
        .reserve(req("acme", "a", 10.0, 1.0))
        .await
        .expect("reserved");
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 40.0);
    let s = r.settle(25.0).await.expect("settled");
    assert_eq!((s.charged, s.refunded), (10.0, 0.0));
    // A second settlement of the same request (e.g. a late recovery) changes nothing.
    let again = fx
        .store
        .settle(SettleRequest {
            id: "a".into(),
            charge: Some(0),
            now: now_ms(),
            expired_before: None,
            lazy: false,
        })
        .await
        .expect("ran");
    assert_eq!(again, SettleOutcome::NotPending);
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 40.0);

    // Drop with a metered charge: settles to the last charge set.
    let r = fx
        .ledger
        .reserve(req("acme", "b", 10.0, 1.0))
        .await
        .expect("reserved");
    r.set_charge(2.5);
    let meter = r.meter();
    meter.set(3.25);
    assert_eq!(meter.get(), Some(3.25));
    drop(r);
    fx.ledger.flush().await.expect("flushed");
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 36.75);

    // Drop without any charge: settles to the fallback.
    let r = fx
        .ledger
        .reserve(req("acme", "c", 10.0, 1.0))
        .await
        .expect("reserved");
    drop(r);
    fx.ledger.flush().await.expect("flushed");
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 35.75);

    // Untrusted usage: negative and NaN clamp to 0 (voided).
    let r = fx
        .ledger
        .reserve(req("acme", "d", 10.0, 1.0))
        .await
        .expect("reserved");
    r.set_charge(f64::NAN);
    let s = r.settle_now(-4.0);
    assert_eq!(s.charged, 0.0);
    fx.ledger.flush().await.expect("flushed");
    let rec = fx
        .store
        .reservation("d")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((rec.state.as_str(), rec.charged), ("voided", Some(0)));
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 35.75);

    // The same request id cannot reserve twice.
    assert!(fx.ledger.reserve(req("acme", "a", 1.0, 1.0)).await.is_err());
    fx.ledger.check_invariants().await.expect("sums match");
}

crate::on_both_stores!(
    refused_reservation_writes_nothing_and_leaves_the_balance,
    refused_reservation_writes_nothing_and_leaves_the_balance_on
);
async fn refused_reservation_writes_nothing_and_leaves_the_balance_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 5.0, None).await.expect("granted");
    let e = fx
        .ledger
        .reserve(req("acme", "x", 6.0, 1.0))
        .await
        .expect_err("too expensive");
    assert!(
        matches!(e, CreditError::Insufficient { balance, needed } if balance == 5.0 && needed == 6.0)
    );
    assert!(fx.store.reservation("x").await.expect("read").is_none());
    // Unknown account: balance 0.
    assert!(matches!(
        fx.ledger.reserve(req("nobody", "y", 1.0, 1.0)).await,
        Err(CreditError::Insufficient { .. })
    ));
    assert!(matches!(
        fx.ledger.reserve(req("acme", "z", -1.0, 0.0)).await,
        Err(CreditError::InvalidAmount(_))
    ));
    fx.ledger.check_invariants().await.expect("sums match");
}

crate::on_both_stores!(
    credits_granted_by_another_process_are_usable_promptly,
    credits_granted_by_another_process_are_usable_promptly_on
);
async fn credits_granted_by_another_process_are_usable_promptly_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, short_timeouts()).await else {
        return;
    };
    assert!(fx.ledger.reserve(req("acme", "1", 1.0, 1.0)).await.is_err());
    // The CLI grants on its own handle; the gateway's in-memory estimate is stale.
    let cli = Ledger::new(fx.second_handle().await, short_timeouts());
    cli.grant("acme", 3.0, None).await.expect("granted");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = fx
        .ledger
        .reserve(req("acme", "2", 1.0, 1.0))
        .await
        .expect("sees the grant");
    r.settle(1.0).await.expect("settled");
    assert_eq!(cli.balance("acme").await.expect("b"), 2.0);
}

crate::on_both_stores!(
    a_reservation_whose_caller_left_is_voided,
    a_reservation_whose_caller_left_is_voided_on
);
async fn a_reservation_whose_caller_left_is_voided_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    fx.ledger.grant("acme", 10.0, None).await.expect("granted");
    let pending = fx
        .ledger
        .admit(&req("acme", "gone", 4.0, 1.0))
        .expect("admitted");
    drop(pending); // the client disconnected before the reservation committed
    fx.ledger.flush().await.expect("flushed");
    fx.ledger.flush().await.expect("void committed");
    let rec = fx
        .store
        .reservation("gone")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(rec.state, "voided");
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 10.0);

    // Same, but the commit happened before the waiter left.
    let pending = fx
        .ledger
        .admit(&req("acme", "late", 4.0, 1.0))
        .expect("admitted");
    fx.ledger.flush().await.expect("reservation committed");
    drop(pending);
    fx.ledger.flush().await.expect("void committed");
    let rec = fx
        .store
        .reservation("late")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(rec.state, "voided");
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 10.0);
    fx.ledger.check_invariants().await.expect("sums match");
}

crate::on_both_stores!(
    extended_reservations_survive_recovery,
    extended_reservations_survive_recovery_on
);
async fn extended_reservations_survive_recovery_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, short_timeouts()).await else {
        return;
    };
    fx.ledger.grant("acme", 10.0, None).await.expect("granted");
    let live = fx
        .ledger
        .reserve(req("acme", "live", 5.0, 1.0))
        .await
        .expect("reserved");
    let stale = fx
        .ledger
        .reserve(req("acme", "stale", 2.0, 1.0))
        .await
        .expect("reserved");
    let before = fx
        .store
        .reservation("live")
        .await
        .expect("r")
        .expect("exists")
        .expires_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(live.extend().await.expect("extended"));
    let after = fx
        .store
        .reservation("live")
        .await
        .expect("r")
        .expect("exists")
        .expires_at;
    assert!(after > before);
    // Recover at a time past the stale one's expiry but before the live one's new expiry.
    let stale_expiry = fx
        .store
        .reservation("stale")
        .await
        .expect("r")
        .expect("exists")
        .expires_at;
    assert_eq!(fx.ledger.recover(stale_expiry).await.expect("recovered"), 1);
    assert_eq!(
        fx.store
            .reservation("stale")
            .await
            .expect("r")
            .expect("e")
            .charged,
        Some(1000)
    );
    // The guard of the recovered reservation settles nothing more.
    drop(stale);
    let s = live.settle(4.0).await.expect("settled");
    assert_eq!(s.charged, 4.0);
    assert_eq!(fx.ledger.balance("acme").await.expect("b"), 5.0);
    fx.ledger.check_invariants().await.expect("sums match");
}

crate::on_both_stores!(idempotency_states, idempotency_states_on);
async fn idempotency_states_on(backend: Backend) {
    // A claim in flight stays so for a minute here, whatever the machine's speed; abandonment
    // is shown below with a ledger whose claims are abandoned after a millisecond.
    let patient = LedgerConfig {
        idempotency_timeout: Duration::from_secs(60),
        ..short_timeouts()
    };
    let Some(fx) = fixture_on(backend, patient).await else {
        return;
    };
    let l = fx.ledger.idempotency();
    let Begin::New(token) = l.begin("acme", "k1", "hash-a").await.expect("begin") else {
        panic!("first use is new");
    };
    assert!(matches!(
        l.begin("acme", "k1", "hash-a").await.expect("b"),
        Begin::InFlight
    ));
    assert!(matches!(
        l.begin("acme", "k1", "hash-b").await.expect("b"),
        Begin::Conflict
    ));
    // Another account may use the same key.
    assert!(matches!(
        l.begin("other", "k1", "hash-b").await.expect("b"),
        Begin::New(_)
    ));
    assert!(l
        .complete(token, 200, "application/json", b"{\"ok\":true}")
        .await
        .expect("done"));
    match l.begin("acme", "k1", "hash-a").await.expect("b") {
        Begin::Replay {
            status,
            content_type,
            body,
        } => {
            assert_eq!((status, content_type.as_str()), (200, "application/json"));
            assert_eq!(&body[..], b"{\"ok\":true}");
        }
        other => panic!("expected replay, got {other:?}"),
    }
    assert!(matches!(
        l.begin("acme", "k1", "hash-b").await.expect("b"),
        Begin::Conflict
    ));

    // Abandoned (the process died): retryable after the timeout, and the old claim is dead.
    let hasty = Ledger::new(
        fx.store.clone(),
        LedgerConfig {
            idempotency_timeout: Duration::from_millis(1),
            ..short_timeouts()
        },
    );
    let l = hasty.idempotency();
    let Begin::New(old) = l.begin("acme", "k2", "h").await.expect("b") else {
        panic!("new");
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let Begin::New(newer) = l.begin("acme", "k2", "h").await.expect("b") else {
        panic!("abandoned claim is taken over");
    };
    assert!(!l
        .complete(old, 500, "text/plain", b"late")
        .await
        .expect("ran"));
    // Aborting releases the key for an immediate retry.
    assert!(l.abort(newer).await.expect("aborted"));
    assert!(matches!(
        l.begin("acme", "k2", "h").await.expect("b"),
        Begin::New(_)
    ));
}

crate::on_both_stores!(idempotency_records_expire, idempotency_records_expire_on);
async fn idempotency_records_expire_on(backend: Backend) {
    let cfg = LedgerConfig {
        idempotency_ttl: Duration::from_secs(60),
        // A claim stays live for 10 minutes: longer than the TTL.
        idempotency_timeout: Duration::from_secs(600),
        ..short_timeouts()
    };
    let Some(fx) = fixture_on(backend, cfg).await else {
        return;
    };
    let l = fx.ledger.idempotency();
    let Begin::New(done) = l.begin("acme", "done", "h1").await.expect("b") else {
        panic!("new");
    };
    assert!(l.complete(done, 200, "text/plain", b"ok").await.expect("c"));
    let Begin::New(_running) = l.begin("acme", "running", "h").await.expect("b") else {
        panic!("new");
    };
    let now = now_ms();
    assert_eq!(l.expire(now).await.expect("x"), 0, "within the TTL");
    assert!(matches!(
        l.begin("acme", "done", "h2").await.expect("b"),
        Begin::Conflict
    ));
    // Past the TTL: the answer is deleted, the live claim (locked for 10 minutes) stays.
    let later = now + 61_000;
    assert_eq!(l.expire(later).await.expect("x"), 1);
    assert!(matches!(
        l.begin("acme", "running", "h").await.expect("b"),
        Begin::InFlight
    ));
    // The key is free again, with any body.
    assert!(matches!(
        l.begin("acme", "done", "h2").await.expect("b"),
        Begin::New(_)
    ));
    // Once their locks have run out too, the abandoned claims go as well.
    assert_eq!(l.expire(now + 601_000).await.expect("x"), 2);
}

// ---- the SQLite writer's linger -----------------------------------------------------------

/// A settlement of `id` that reports its outcome on the returned receiver.
fn settle_op(
    id: &str,
    lazy: bool,
) -> (
    agentgate::store::WriteOp,
    tokio::sync::oneshot::Receiver<SettleOutcome>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = SettleRequest {
        id: id.into(),
        charge: Some(0),
        now: now_ms(),
        expired_before: None,
        lazy,
    };
    let done: agentgate::store::Done<SettleOutcome> = Box::new(move |r| {
        let _ = tx.send(r.expect("settle committed"));
    });
    (agentgate::store::WriteOp::Settle(req, Some(done)), rx)
}

/// A store whose writer lingers far longer than any of these tests waits, so that what they
/// observe is the linger's effect, not the machine's speed.
async fn lingering_store(dir: &tempfile::TempDir) -> agentgate::store::Store {
    let opts = agentgate::store::SqliteOptions {
        linger: Duration::from_secs(60),
        ..Default::default()
    };
    agentgate::store::Store::open_sqlite(dir.path().join("linger.db"), opts)
        .await
        .expect("store")
}

#[tokio::test]
async fn a_settlement_nobody_awaits_rides_with_the_next_awaited_write() {
    let dir = tempfile::tempdir().expect("dir");
    let store = lingering_store(&dir).await;
    let (op, mut settled) = settle_op("lazy-1", true);
    store.submit(op).expect("queued");
    // Alone, it waits for company (the linger is a minute).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut settled)
            .await
            .is_err(),
        "a lone lazy settlement committed at once instead of lingering"
    );
    // A write somebody awaits commits at once, and takes the settlement with it.
    tokio::time::timeout(Duration::from_secs(20), store.probe())
        .await
        .expect("the awaited write did not wait for the linger")
        .expect("probe");
    let outcome = tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .expect("the settlement committed with the probe")
        .expect("answered");
    assert_eq!(outcome, SettleOutcome::NotPending);
}

#[tokio::test]
async fn an_awaited_settlement_does_not_linger_and_shutdown_commits_a_lingering_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store = lingering_store(&dir).await;
    let (op, settled) = settle_op("awaited-1", false);
    store.submit(op).expect("queued");
    tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .expect("an awaited settlement lingered")
        .expect("answered");
    // A lazy one still lingering when the store closes is committed, not lost.
    let (op, settled) = settle_op("lazy-2", true);
    store.submit(op).expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(store);
    tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .expect("closing waited for the linger")
        .expect("the lingering settlement was dropped at shutdown");
}
