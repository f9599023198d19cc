//! Crash recovery: a process killed with SIGKILL mid-request leaves pending reservations that
//! recovery settles to their base cost, exactly once.

mod policy_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentgate::credits::{Ledger, LedgerConfig, ReserveRequest};
use agentgate::store::{now_ms, NewReservation, SqliteOptions, Store};
use policy_support::{fixture, req};

const CHILD_ENV: &str = "AGENTGATE_POLICY_CRASH_CHILD";
const SEEDS: u64 = 20;

/// In the child: reserve, settle some, leave the rest open mid-"stream", then wait to be killed.
async fn child(path: &str, seed: u64) {
    let store = Store::open_sqlite(path, SqliteOptions::default())
        .await
        .expect("child store");
    let ledger = Ledger::new(
        store,
        LedgerConfig {
            reservation_timeout: Duration::from_secs(1),
            ..LedgerConfig::default()
        },
    );
    let mut open = Vec::new();
    for i in 0..20u64 {
        let id = format!("s{seed}-r{i}");
        let r = ledger
            .reserve(ReserveRequest {
                account: "acme",
                key_id: "k",
                agent_id: "a",
                request_id: &id,
                amount: 5.0,
                fallback: 1.0,
            })
            .await
            .expect("reserved");
        if (i + seed) % 4 == 0 {
            r.settle(2.0).await.expect("settled durably");
        } else {
            r.set_charge(3.0); // metered usage that will be lost with the process
            open.push(r);
        }
    }
    // Straight to the file descriptor: the test harness captures `println!`.
    let mut out = std::io::stdout();
    writeln!(out, "\nCHILD-READY").expect("stdout");
    out.flush().expect("stdout");
    // Keep settling (fire-and-forget, from the guards' Drop) while the parent picks its moment.
    for r in open {
        drop(r);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn recovery_after_kill_9() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (path, seed) = arg.rsplit_once('|').expect("path|seed");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(child(path, seed.parse().expect("seed")));
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("crash.db");
    let granted = 10_000.0;
    rt.block_on(async {
        let ledger = Ledger::new(
            Store::open_sqlite(&path, SqliteOptions::default())
                .await
                .expect("store"),
            LedgerConfig::default(),
        );
        ledger.grant("acme", granted, None).await.expect("granted");
    });

    for seed in 0..SEEDS {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "recovery_after_kill_9",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{seed}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child spawned");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim() == "CHILD-READY");
        assert!(ready, "child reached the crash point");
        std::thread::sleep(Duration::from_millis(seed * 7 % 23));
        child.kill().expect("SIGKILL"); // kill -9
        child.wait().expect("reaped");
    }

    rt.block_on(async {
        let store = Store::open_sqlite(&path, SqliteOptions::default())
            .await
            .expect("reopen");
        let ledger = Ledger::new(store.clone(), LedgerConfig::default());
        let open = store.pending_count().await.expect("count");
        assert!(open > 0, "the crashes left reservations open");
        ledger
            .check_invariants()
            .await
            .expect("sums match before recovery");
        // Nothing is recovered before its timeout.
        assert_eq!(ledger.recover(now_ms() - 60_000).await.expect("early"), 0);
        // Past the timeout: every open reservation settles to its base cost.
        let recovered = ledger.recover(now_ms() + 2_000).await.expect("recovered");
        assert_eq!(recovered as i64, open);
        assert_eq!(store.pending_count().await.expect("count"), 0);
        assert_eq!(ledger.recover(now_ms() + 2_000).await.expect("again"), 0);
        let mut charged = 0;
        let (mut by_guard, mut by_recovery) = (0, 0);
        for seed in 0..SEEDS {
            for i in 0..20u64 {
                let r = store
                    .reservation(&format!("s{seed}-r{i}"))
                    .await
                    .expect("read")
                    .expect("every request has its entry");
                assert_eq!(r.state, "posted", "{}", r.id);
                let c = r.charged.expect("settled");
                if (i + seed) % 4 == 0 {
                    assert_eq!(c, 2000, "durably settled before the crash: {}", r.id);
                } else {
                    // Either its guard's settlement committed before the kill (metered 3
                    // credits) or recovery charged the base cost: never both, never zero.
                    assert!(c == 3000 || c == 1000, "{}: {c}", r.id);
                    if c == 3000 {
                        by_guard += 1
                    } else {
                        by_recovery += 1
                    }
                }
                charged += c;
            }
        }
        assert!(
            by_recovery > 0 && by_guard > 0,
            "kills landed at varied points"
        );
        let balance = ledger.balance("acme").await.expect("balance");
        assert!((balance - (granted - charged as f64 / 1000.0)).abs() < 1e-9);
        ledger
            .check_invariants()
            .await
            .expect("sums match after recovery");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_of_a_dropped_store_and_the_periodic_task() {
    let fx = fixture().await;
    fx.ledger.grant("acme", 10.0, None).await.expect("granted");
    // Write reservations the way a process that then died would have: durable, never settled.
    let now = now_ms();
    for i in 0..3 {
        fx.store
            .reserve(NewReservation {
                id: format!("orphan-{i}"),
                account: "acme".into(),
                key_id: "k".into(),
                agent_id: "a".into(),
                reserved: 3000,
                fallback: 500,
                created_at: now - 10_000,
                expires_at: now - 1,
            })
            .await
            .expect("reserved");
    }
    let path = fx.path();
    drop(fx.ledger);
    drop(fx.store);

    let store = Store::open_sqlite(&path, SqliteOptions::default())
        .await
        .expect("reopen");
    let ledger = Ledger::new(store.clone(), LedgerConfig::default());
    assert_eq!(store.pending_count().await.expect("count"), 3);
    let task = ledger.spawn_recovery(Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.pending_count().await.expect("count") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery task did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(ledger.balance("acme").await.expect("b"), 8.5);
    ledger.check_invariants().await.expect("sums match");
    // A late settle from the dead request's guard can no longer change anything.
    let r = ledger
        .reserve(req("acme", "fresh", 1.0, 1.0))
        .await
        .expect("reserved");
    r.settle(1.0).await.expect("settled");
    assert_eq!(ledger.balance("acme").await.expect("b"), 7.5);
}
