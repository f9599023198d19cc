//! Shared helpers for the policy tests: real SQLite files in temporary directories.
#![allow(dead_code)]

use std::time::Duration;

use agentgate::credits::{Ledger, LedgerConfig, ReserveRequest};
use agentgate::store::{SqliteOptions, Store};
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
    pub store: Store,
    pub ledger: Ledger,
}

impl Fixture {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("agentgate.db")
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }

    /// A second, independent handle on the same file (what the CLI would open).
    pub async fn second_handle(&self) -> Store {
        Store::open_sqlite(self.path(), SqliteOptions::default())
            .await
            .expect("second handle opens")
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(LedgerConfig::default()).await
}

pub async fn fixture_with(cfg: LedgerConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(dir.path().join("agentgate.db"), SqliteOptions::default())
        .await
        .expect("store opens");
    let ledger = Ledger::new(store.clone(), cfg);
    Fixture { dir, store, ledger }
}

pub fn short_timeouts() -> LedgerConfig {
    LedgerConfig {
        reservation_timeout: Duration::from_secs(1),
        idempotency_timeout: Duration::from_millis(300),
        estimate_freshness: Duration::from_millis(100),
    }
}

pub fn req<'a>(
    account: &'a str,
    request_id: &'a str,
    amount: f64,
    fallback: f64,
) -> ReserveRequest<'a> {
    ReserveRequest {
        account,
        key_id: "key1",
        agent_id: "agent1",
        request_id,
        amount,
        fallback,
    }
}
