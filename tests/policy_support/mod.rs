//! Shared helpers for the policy tests: real SQLite files in temporary directories, and real
//! PostgreSQL databases created per test (and dropped after it).
#![allow(dead_code)]

use std::time::Duration;

use agentgate::credits::{Ledger, LedgerConfig, ReserveRequest};
use agentgate::store::{SqliteOptions, Store};
use tempfile::TempDir;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Fixture {
    pub store: Store,
    pub ledger: Ledger,
    pub dir: TempDir,
    /// The store's URL (a second handle, the CLI or a child process opens this).
    pub store_url: String,
    /// Dropped last: the PostgreSQL database goes with the fixture.
    pub pg: Option<PgDb>,
}

impl Fixture {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("agentgate.db")
    }

    pub fn url(&self) -> String {
        self.store_url.clone()
    }

    /// A second, independent handle on the same store (what the CLI or another replica would
    /// open).
    pub async fn second_handle(&self) -> Store {
        Store::open(&self.store_url)
            .await
            .expect("second handle opens")
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(LedgerConfig::default()).await
}

pub async fn fixture_with(cfg: LedgerConfig) -> Fixture {
    fixture_on(Backend::Sqlite, cfg)
        .await
        .expect("SQLite is always there")
}

/// A fixture on `backend`; `None` (with the reason printed) when PostgreSQL is unreachable,
/// so that the calling test skips.
pub async fn fixture_on(backend: Backend, cfg: LedgerConfig) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, store_url, pg) = match backend {
        Backend::Sqlite => {
            let path = dir.path().join("agentgate.db");
            let store = Store::open_sqlite(&path, SqliteOptions::default())
                .await
                .expect("store opens");
            (store, format!("sqlite://{}", path.display()), None)
        }
        Backend::Postgres => {
            let db = PgDb::create().await?;
            let store = Store::open(&db.url).await.expect("postgres store opens");
            (store, db.url.clone(), Some(db))
        }
    };
    let ledger = Ledger::new(store.clone(), cfg);
    Some(Fixture {
        store,
        ledger,
        dir,
        store_url,
        pg,
    })
}

pub fn short_timeouts() -> LedgerConfig {
    LedgerConfig {
        reservation_timeout: Duration::from_secs(1),
        idempotency_timeout: Duration::from_millis(300),
        idempotency_ttl: Duration::from_secs(86_400),
        estimate_freshness: Duration::from_millis(100),
        lease: None,
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

/// The server the PostgreSQL tests use: `AGENTGATE_TEST_PG` or the CI default.
pub fn pg_admin_url() -> String {
    std::env::var("AGENTGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own for one test: `agentgate_test_<random>`, dropped with this value.
pub struct PgDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl PgDb {
    /// `None` (the reason printed) when the server is unreachable.
    pub async fn create() -> Option<PgDb> {
        let admin = pg_admin_url();
        let client = match pg_connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: PostgreSQL at {admin} is unreachable ({e})");
                return None;
            }
        };
        let name = format!("agentgate_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let server = base
            .rsplit_once('/')
            .map(|(server, _db)| server)
            .filter(|s| s.contains("://") && !s.ends_with('/'))
            .unwrap_or_else(|| panic!("AGENTGATE_TEST_PG must name a database: {admin}"));
        let url = format!("{server}/{name}{query}");
        Some(PgDb { name, url, admin })
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, conn) = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: this may run inside (or after) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = pg_connect(&admin).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs a test body on both stores: `mod NAME { fn sqlite(); fn postgres() }`. The PostgreSQL
/// run skips (printing why) when the server is unreachable.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body(super::policy_support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body(super::policy_support::Backend::Postgres).await
            }
        }
    };
}
