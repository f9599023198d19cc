//! PostgreSQL backend: the store shared by several replicas.
//!
//! Same operations and callbacks as the SQLite writer, different concurrency: PostgreSQL
//! already group-commits concurrent transactions (one WAL flush for many commits), so instead
//! of one writer batching ops into one transaction, every op is its own short transaction on a
//! pooled connection, many in flight at once. Each credit op is one conditional statement:
//!
//! - reserve: `UPDATE accounts … WHERE balance >= n RETURNING` and the reservation `INSERT`
//!   in one statement (a data-modifying CTE), so however many replicas race, the row lock on the
//!   account serialises them and the balance never goes below zero (`CHECK` backs it);
//! - settle: `UPDATE reservations … WHERE state = 'pending'` and the refund in one statement, so
//!   a reservation settles exactly once whoever (owner, recovery on any replica) gets there;
//! - recovery: the same settle, conditional on `expires_at`, so a live stream that extended its
//!   reservation is left alone and several replicas recovering at once settle each row once.
//!
//! The backend owns a small tokio runtime: its pool, its dispatcher and its LISTEN connection
//! live there whatever runtime (or none) the caller runs in, and dropping the store drains the
//! queue without needing the caller's runtime. Revocations and credit changes are announced
//! with `NOTIFY` in the same transaction; every replica `LISTEN`s and hears them on commit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    pg_schema, AccountSums, FilterValue, IdemClaim, IdemCompletion, IdemOutcome, KeyRecord, Msg,
    NewGrant, NewReservation, ReservationRecord, ReserveOutcome, RevokeOutcome, SettleOutcome,
    SettleRequest, StoreError, StoreEvent, StoredResponse, UsageBucket, UsageFilter, UsageRow,
    WriteOp, WriteQueue,
};

/// The NOTIFY channel every replica listens on.
pub(crate) const CHANNEL: &str = "agentgate_events";

/// Connections per replica (plus one for LISTEN). Three replicas stay far below PostgreSQL's
/// default `max_connections` of 100.
const POOL_SIZE: usize = 8;

/// A `pg_advisory_xact_lock` key, so that replicas starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6167_656e_7467_6174; // "agentgat"

/// How long the dispatcher waits for in-flight writes when the store is dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// When a failed op may be tried again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The op is safe to repeat (conditional on state): retry transient failures a few times.
    Idempotent,
    /// Fire-and-forget: retry transient failures for as long as the process lives.
    Forever,
    /// Repeating could apply it twice (a grant): retry only when no connection was obtained.
    ConnectOnly,
}

pub(crate) struct Shared {
    pool: Pool,
    /// Set when the store is closing: `Forever` ops then give up after a few tries.
    stopping: AtomicBool,
    events: broadcast::Sender<StoreEvent>,
    /// Names this process in the config announcements it sends, so that it ignores them.
    instance: String,
}

pub(crate) struct PgStore {
    tx: Option<mpsc::Sender<Msg>>,
    dispatcher: Option<JoinHandle<()>>,
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Duplicate("row"),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => StoreError::Unavailable(message),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => StoreError::Unavailable(message),
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
            StoreError::Unavailable(message)
        }
        Some(_) => StoreError::Postgres(message),
        // No SQLSTATE: the connection failed or closed.
        None => StoreError::Unavailable(message),
    }
}

pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

fn opt_u32(v: Option<i64>, what: &str) -> Result<Option<u32>, StoreError> {
    v.map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n}"))))
        .transpose()
}

impl PgStore {
    /// Connects, migrates (one replica at a time) and starts the dispatcher and the listener.
    pub(crate) fn open(url: &str) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Url(format!("postgres url: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("agentgate-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let tls = tls_for(&config)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            pool,
            stopping: AtomicBool::new(false),
            events,
            instance: uuid::Uuid::new_v4().simple().to_string(),
        });
        {
            let shared = Arc::clone(&shared);
            rt.block_on(async move {
                let mut client = shared
                    .pool
                    .get()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                migrate(&mut client).await
            })?;
        }
        // Serve only once revocations by other replicas are heard (the poller covers a LISTEN
        // connection that takes longer).
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        rt.spawn(listen_loop(config, tls, Arc::clone(&shared), ready_tx));
        let listening = rt.block_on(tokio::time::timeout(Duration::from_secs(5), ready_rx));
        if !matches!(listening, Ok(Ok(()))) {
            tracing::warn!("postgres LISTEN not established yet; revocations are polled meanwhile");
        }
        let (tx, rx) = mpsc::channel();
        let handle = rt.handle().clone();
        let dispatch_shared = Arc::clone(&shared);
        let dispatcher = std::thread::Builder::new()
            .name("agentgate-pg-dispatch".into())
            .spawn(move || dispatch_loop(rx, handle, dispatch_shared))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(PgStore {
            tx: Some(tx),
            dispatcher: Some(dispatcher),
            rt: Some(rt),
            shared,
        })
    }

    pub(crate) fn queue(&self) -> WriteQueue {
        match &self.tx {
            Some(tx) => WriteQueue(tx.clone()),
            None => WriteQueue(mpsc::channel().0),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.events.subscribe()
    }

    /// `NOTIFY config:<instance>:<sha256>`, heard by every other replica.
    pub(crate) async fn announce_config(&self, sha256: &str) -> Result<(), StoreError> {
        let payload = Arc::new(notify_payload(
            "config",
            &format!("{}:{sha256}", self.shared.instance),
        ));
        self.run(true, move |c| {
            let payload = Arc::clone(&payload);
            async move {
                c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &*payload])
                    .await
                    .map_err(pg_err)?;
                Ok(())
            }
        })
        .await
    }

    /// Runs a read on the backend's runtime, retrying transient failures.
    pub(crate) async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        self.run(true, f).await
    }

    /// Runs an op on the backend's runtime; `idempotent`: retry transient failures, else only
    /// failures to connect.
    pub(crate) async fn run<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let shared = Arc::clone(&self.shared);
        let rt = self.rt.as_ref().ok_or(StoreError::Closed)?;
        let mode = if idempotent {
            Retry::Idempotent
        } else {
            Retry::ConnectOnly
        };
        rt.spawn(async move { attempt(&shared, mode, f).await })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

impl Drop for PgStore {
    /// Drains the queue (every write enqueued before the last handle went away is tried), then
    /// stops the runtime.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown);
        }
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(pg_err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let current: i64 = col(&row, 0)?;
    if current > pg_schema::latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: pg_schema::latest(),
        });
    }
    for (version, sql) in pg_schema::MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[version, &super::now_ms()],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

/// TLS for `sslmode=require`: rustls with the system's roots (add a private CA with
/// `SSL_CERT_FILE`), the server's certificate and name verified. Without `sslmode=require` the
/// connection is plain (`prefer` does not try TLS: an unverifiable certificate would otherwise
/// fail where plain text was acceptable).
fn tls_for(config: &tokio_postgres::Config) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(StoreError::Url(
            "sslmode=require, but no trusted root certificates were found (SSL_CERT_FILE)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Url(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}

fn transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

/// Gets a connection and runs `f` on it, retrying transient failures as `mode` allows.
async fn attempt<T, F, Fut>(sh: &Shared, mode: Retry, f: F) -> Result<T, StoreError>
where
    F: Fn(Object) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(10);
    let mut tries = 0u32;
    loop {
        let (result, connected) = match sh.pool.get().await {
            Ok(c) => (f(c).await, true),
            Err(e) => (Err(StoreError::Unavailable(e.to_string())), false),
        };
        let again = match &result {
            Err(e) if transient(e) => match mode {
                Retry::Idempotent => tries < 5,
                Retry::Forever => tries < 5 || !sh.stopping.load(Ordering::Acquire),
                Retry::ConnectOnly => !connected && tries < 5,
            },
            _ => false,
        };
        if !again {
            return result;
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, tries, "postgres store op failed; retrying");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        tries += 1;
    }
}

// ---- the dispatcher -----------------------------------------------------------------------

/// Counts the writes in flight so that `Flush` and shutdown can wait for them.
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.count.lock() {
            *n -= 1;
            if *n == 0 {
                self.0.idle.notify_all();
            }
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        InFlightGuard(Arc::clone(self))
    }

    /// Waits until nothing is in flight (or `limit` passed). Returns whether it is idle.
    fn wait_idle(&self, limit: Duration) -> bool {
        let Ok(n) = self.count.lock() else {
            return false;
        };
        match self.idle.wait_timeout_while(n, limit, |n| *n > 0) {
            Ok((n, _)) => *n == 0,
            Err(_) => false,
        }
    }
}

/// Takes ops off the queue and runs each as its own task; `Flush` waits for every op queued
/// before it. Ops for one reservation never race: the ledger only settles a reservation after
/// its reserve has answered, and settling is conditional anyway.
fn dispatch_loop(rx: Receiver<Msg>, rt: tokio::runtime::Handle, sh: Arc<Shared>) {
    let inflight = Arc::new(InFlight {
        count: Mutex::new(0),
        idle: Condvar::new(),
    });
    let spawn = |op: WriteOp| {
        let guard = inflight.start();
        let sh = Arc::clone(&sh);
        rt.spawn(async move {
            exec(&sh, op).await;
            drop(guard);
        });
    };
    loop {
        match rx.recv() {
            Ok(Msg::Op(WriteOp::Flush(done))) => {
                // Callbacks of the ops waited for may queue more ops (a void); those come
                // after this flush in the queue, as they would with SQLite.
                inflight.wait_idle(Duration::MAX);
                done(Ok(()));
            }
            Ok(Msg::Op(op)) => spawn(op),
            Ok(Msg::Shutdown) | Err(_) => {
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Op(WriteOp::Flush(done)) => done(Ok(())),
                        Msg::Op(op) => spawn(op),
                        Msg::Shutdown => {}
                    }
                }
                sh.stopping.store(true, Ordering::Release);
                if !inflight.wait_idle(DRAIN_LIMIT) {
                    tracing::error!(
                        "postgres store closing with writes in flight; recovery will settle them"
                    );
                }
                return;
            }
        }
    }
}

async fn exec(sh: &Shared, op: WriteOp) {
    match op {
        WriteOp::Reserve(r, done) => done(reserve_retrying(sh, &r).await),
        WriteOp::Settle(s, done) => {
            // Money is never dropped: retried until it lands, whoever waits for it.
            let s = &s;
            let r = attempt(sh, Retry::Forever, |c| async move { settle(&c, s).await }).await;
            match done {
                Some(done) => done(r),
                None => {
                    if let Err(e) = r {
                        tracing::error!(request_id = %s.id, error = %e, "settlement failed");
                    }
                }
            }
        }
        WriteOp::Extend {
            id,
            expires_at,
            done,
        } => {
            let mode = if done.is_none() {
                Retry::Forever
            } else {
                Retry::Idempotent
            };
            let id = &id;
            let r = attempt(sh, mode, |c| async move {
                let st = c
                    .prepare_cached(
                        "UPDATE reservations SET expires_at = $1 WHERE id = $2 AND state = 'pending'",
                    )
                    .await
                    .map_err(pg_err)?;
                Ok(c.execute(&st, &[&expires_at, id]).await.map_err(pg_err)? == 1)
            })
            .await;
            if let Some(done) = done {
                done(r);
            }
        }
        WriteOp::Grant(g, done) => {
            let g = &g;
            done(attempt(sh, Retry::ConnectOnly, |c| async move { grant(c, g).await }).await)
        }
        WriteOp::InsertKey(k, done) => {
            let k = &k;
            done(
                attempt(
                    sh,
                    Retry::ConnectOnly,
                    |c| async move { insert_key(c, k).await },
                )
                .await,
            )
        }
        WriteOp::RevokeKey {
            public_id,
            now,
            done,
        } => {
            let id = &public_id;
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    revoke_key(c, id, now).await
                })
                .await,
            )
        }
        WriteOp::IdemBegin(claim, done) => {
            let claim = &claim;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    idem_begin(c, claim).await
                })
                .await,
            )
        }
        WriteOp::IdemComplete(comp, done) => {
            let comp = &comp;
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    idem_complete(&c, comp).await
                })
                .await,
            )
        }
        WriteOp::IdemAbort {
            account,
            idem_key,
            owner,
            done,
        } => {
            let mode = if done.is_none() {
                Retry::Forever
            } else {
                Retry::Idempotent
            };
            let (a, k, o) = (&account, &idem_key, &owner);
            let r = attempt(sh, mode, |c| async move {
                let st = c
                    .prepare_cached(
                        "DELETE FROM idempotency
                         WHERE account = $1 AND idem_key = $2 AND owner = $3 AND state = 'in_flight'",
                    )
                    .await
                    .map_err(pg_err)?;
                Ok(c.execute(&st, &[a, k, o]).await.map_err(pg_err)? == 1)
            })
            .await;
            if let Some(done) = done {
                done(r);
            }
        }
        WriteOp::IdemExpire {
            created_before,
            now,
            limit,
            done,
        } => {
            let (before, now, limit) = (&created_before, &now, &limit);
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    let st = c
                        .prepare_cached(
                            "DELETE FROM idempotency WHERE ctid IN (
                                 SELECT ctid FROM idempotency
                                 WHERE created_at < $1 AND (state = 'complete' OR locked_until < $2)
                                 LIMIT $3)",
                        )
                        .await
                        .map_err(pg_err)?;
                    c.execute(&st, &[before, now, limit]).await.map_err(pg_err)
                })
                .await,
            )
        }
        WriteOp::Conversation(w, done) => {
            let w = &w;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    super::pg_conversations::apply(c, w).await
                })
                .await,
            )
        }
        WriteOp::Flush(done) => done(Ok(())),
        WriteOp::Probe(done) => done(
            attempt(sh, Retry::Idempotent, |c| async move {
                c.execute(PROBE_SQL, &[&super::now_ms()])
                    .await
                    .map_err(pg_err)
                    .map(drop)
            })
            .await,
        ),
    }
}

/// `/readyz`'s write: one counter row, overwritten.
const PROBE_SQL: &str = "INSERT INTO counters (name, value) VALUES ('ready_probe', $1)
     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";

// ---- writes ---------------------------------------------------------------------------------

/// The reservation: one statement that locks the account row, takes the amount only if the
/// balance holds it, and inserts the pending row only if it did. `cur` reads the row with
/// `FOR UPDATE`, so under concurrency it sees the newest committed balance (not the
/// statement's snapshot): the balance a refusal reports is the one that refused it.
const RESERVE_SQL: &str = "
WITH cur AS (
    SELECT id, balance FROM accounts WHERE id = $2::TEXT FOR UPDATE
), debit AS (
    UPDATE accounts SET balance = accounts.balance - $5::BIGINT
    FROM cur
    WHERE accounts.id = cur.id AND cur.balance >= $5::BIGINT
    RETURNING accounts.balance
), ins AS (
    INSERT INTO reservations
        (id, account, key_id, agent_id, reserved, fallback, charged, state,
         created_at, expires_at, settled_at)
    SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::BIGINT, $6::BIGINT, NULL, 'pending',
           $7::BIGINT, $8::BIGINT, NULL
    FROM debit
    RETURNING id
)
SELECT (SELECT balance FROM debit), (SELECT balance FROM cur), (SELECT count(*) FROM ins)";

async fn reserve(c: &Object, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
    let st = c.prepare_cached(RESERVE_SQL).await.map_err(pg_err)?;
    let row = c
        .query_one(
            &st,
            &[
                &r.id,
                &r.account,
                &r.key_id,
                &r.agent_id,
                &r.reserved,
                &r.fallback,
                &r.created_at,
                &r.expires_at,
            ],
        )
        .await
        .map_err(|e| match pg_err(e) {
            StoreError::Duplicate(_) => StoreError::Duplicate("reservation id"),
            other => other,
        })?;
    let after: Option<i64> = col(&row, 0)?;
    match after {
        Some(balance_after) => Ok(ReserveOutcome::Reserved { balance_after }),
        None => Ok(ReserveOutcome::Insufficient {
            balance: col::<Option<i64>>(&row, 1)?.unwrap_or(0),
        }),
    }
}

/// A reserve whose answer was lost (the connection broke after the commit) is retried; if the
/// retry finds its own row, it did commit.
async fn reserve_retrying(sh: &Shared, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
    let tried = AtomicBool::new(false);
    let tried = &tried;
    let out = attempt(sh, Retry::Idempotent, |c| async move {
        let again = tried.swap(true, Ordering::AcqRel);
        match reserve(&c, r).await {
            Err(StoreError::Duplicate(_)) if again => {
                let mine = reservation(&c, &r.id).await?.is_some_and(|x| {
                    x.account == r.account && x.reserved == r.reserved && x.state == "pending"
                });
                if !mine {
                    return Err(StoreError::Duplicate("reservation id"));
                }
                let balance = balance(&c, &r.account).await?.unwrap_or(0);
                Ok(ReserveOutcome::Reserved {
                    balance_after: balance,
                })
            }
            other => other,
        }
    })
    .await;
    out
}

/// Settles a pending reservation and refunds the rest, in one statement; nothing happens if
/// it is no longer pending (or, for recovery, not yet expired).
const SETTLE_SQL: &str = "
WITH r AS (
    UPDATE reservations
    SET charged = LEAST(GREATEST(COALESCE($2::BIGINT, fallback), 0), reserved),
        state = CASE WHEN LEAST(GREATEST(COALESCE($2::BIGINT, fallback), 0), reserved) > 0
                     THEN 'posted' ELSE 'voided' END,
        settled_at = $3::BIGINT
    WHERE id = $1::TEXT AND state = 'pending'
      AND ($4::BIGINT IS NULL OR expires_at <= $4::BIGINT)
    RETURNING account, reserved, charged
), a AS (
    UPDATE accounts SET balance = accounts.balance + (r.reserved - r.charged)
    FROM r WHERE accounts.id = r.account
    RETURNING accounts.balance
)
SELECT r.account, r.reserved, r.charged, a.balance FROM r CROSS JOIN a";

async fn settle(c: &Object, s: &SettleRequest) -> Result<SettleOutcome, StoreError> {
    let st = c.prepare_cached(SETTLE_SQL).await.map_err(pg_err)?;
    let row = c
        .query_opt(&st, &[&s.id, &s.charge, &s.now, &s.expired_before])
        .await
        .map_err(pg_err)?;
    let Some(row) = row else {
        return Ok(SettleOutcome::NotPending);
    };
    Ok(SettleOutcome::Settled {
        account: col(&row, 0)?,
        reserved: col(&row, 1)?,
        charged: col(&row, 2)?,
        balance_after: col(&row, 3)?,
    })
}

fn notify_payload(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

async fn grant(mut c: Object, g: &NewGrant) -> Result<i64, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_one(
            "INSERT INTO accounts (id, balance, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance
             RETURNING balance",
            &[&g.account, &g.amount, &g.now],
        )
        .await
        .map_err(pg_err)?;
    let balance: i64 = col(&row, 0)?;
    if balance > crate::credits::MAX_BALANCE_MILLI {
        // Dropping the transaction rolls the grant back.
        return Err(StoreError::Limit(super::sqlite::BALANCE_LIMIT));
    }
    tx.execute(
        "INSERT INTO grants (id, account, amount, memo, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &uuid::Uuid::new_v4().to_string(),
            &g.account,
            &g.amount,
            &g.memo,
            &g.now,
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &notify_payload("credits", &g.account)],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(balance)
}

async fn insert_key(mut c: Object, k: &KeyRecord) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    tx.execute(
        "INSERT INTO accounts (id, balance, created_at) VALUES ($1, 0, $2)
         ON CONFLICT (id) DO NOTHING",
        &[&k.account, &k.created_at],
    )
    .await
    .map_err(pg_err)?;
    let limit = |v: Option<u32>| v.map(i64::from);
    tx.execute(
        "INSERT INTO api_keys
             (public_id, hash, account, kind, scopes, agents, created_at, expires_at,
              revoked_at, rate_per_second, rate_burst, max_streams, rate_per_second_exact)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &k.public_id,
            &k.hash,
            &k.account,
            &k.kind,
            &k.scopes,
            &k.agents,
            &k.created_at,
            &k.expires_at,
            &k.revoked_at,
            &limit(k.whole_rate()),
            &limit(k.rate_burst),
            &limit(k.max_streams),
            &k.rate_per_second,
        ],
    )
    .await
    .map_err(|e| match pg_err(e) {
        StoreError::Duplicate(_) => StoreError::Duplicate("key id"),
        other => other,
    })?;
    tx.commit().await.map_err(pg_err)
}

async fn revoke_key(mut c: Object, public_id: &str, now: i64) -> Result<RevokeOutcome, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_opt(
            "SELECT revoked_at FROM api_keys WHERE public_id = $1 FOR UPDATE",
            &[&public_id],
        )
        .await
        .map_err(pg_err)?;
    let Some(row) = row else {
        return Ok(RevokeOutcome::NotFound);
    };
    if col::<Option<i64>>(&row, 0)?.is_some() {
        return Ok(RevokeOutcome::AlreadyRevoked);
    }
    tx.execute(
        "UPDATE api_keys SET revoked_at = $1 WHERE public_id = $2",
        &[&now, &public_id],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'revocations'",
        &[],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &notify_payload("revoke", public_id)],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(RevokeOutcome::Revoked)
}

async fn idem_begin(mut c: Object, cl: &IdemClaim) -> Result<IdemOutcome, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let inserted = tx
        .execute(
            "INSERT INTO idempotency
                 (account, idem_key, body_hash, state, owner, status, content_type, response,
                  created_at, locked_until)
             VALUES ($1, $2, $3, 'in_flight', $4, NULL, NULL, NULL, $5, $6)
             ON CONFLICT (account, idem_key) DO NOTHING",
            &[
                &cl.account,
                &cl.idem_key,
                &cl.body_hash,
                &cl.owner,
                &cl.now,
                &cl.locked_until,
            ],
        )
        .await
        .map_err(pg_err)?;
    if inserted == 1 {
        tx.commit().await.map_err(pg_err)?;
        return Ok(IdemOutcome::Claimed);
    }
    let row = tx
        .query_one(
            "SELECT body_hash, state, status, content_type, response, locked_until
             FROM idempotency WHERE account = $1 AND idem_key = $2 FOR UPDATE",
            &[&cl.account, &cl.idem_key],
        )
        .await
        .map_err(pg_err)?;
    let hash: String = col(&row, 0)?;
    let state: String = col(&row, 1)?;
    let outcome = if hash != cl.body_hash {
        IdemOutcome::Conflict
    } else if state == "complete" {
        let status = col::<Option<i64>>(&row, 2)?
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency status".into()))?;
        IdemOutcome::Replay(StoredResponse {
            status,
            content_type: col::<Option<String>>(&row, 3)?.unwrap_or_default(),
            body: col::<Option<Vec<u8>>>(&row, 4)?.unwrap_or_default(),
        })
    } else if col::<i64>(&row, 5)? > cl.now {
        IdemOutcome::InFlight
    } else {
        // The previous claim was abandoned (its process died): take it over.
        tx.execute(
            "UPDATE idempotency SET owner = $1, created_at = $2, locked_until = $3
             WHERE account = $4 AND idem_key = $5 AND state = 'in_flight'",
            &[
                &cl.owner,
                &cl.now,
                &cl.locked_until,
                &cl.account,
                &cl.idem_key,
            ],
        )
        .await
        .map_err(pg_err)?;
        IdemOutcome::Claimed
    };
    tx.commit().await.map_err(pg_err)?;
    Ok(outcome)
}

async fn idem_complete(c: &Object, cm: &IdemCompletion) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "UPDATE idempotency
             SET state = 'complete', status = $1, content_type = $2, response = $3
             WHERE account = $4 AND idem_key = $5 AND owner = $6 AND state = 'in_flight'",
        )
        .await
        .map_err(pg_err)?;
    let n = c
        .execute(
            &st,
            &[
                &i64::from(cm.response.status),
                &cm.response.content_type,
                &cm.response.body,
                &cm.account,
                &cm.idem_key,
                &cm.owner,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(n == 1)
}

// ---- credit leases --------------------------------------------------------------------------

/// A new lease: takes `LEAST(balance, amount)` from the account (locked) and records it.
const LEASE_CREATE_SQL: &str = "
WITH cur AS (
    SELECT id, balance FROM accounts WHERE id = $2::TEXT FOR UPDATE
), take AS (
    UPDATE accounts SET balance = accounts.balance - LEAST(cur.balance, $4::BIGINT)
    FROM cur WHERE accounts.id = cur.id AND cur.balance > 0
    RETURNING LEAST(cur.balance, $4::BIGINT) AS taken, accounts.balance AS after
), ins AS (
    INSERT INTO leases (id, account, holder, amount, created_at, expires_at)
    SELECT $1::TEXT, $2::TEXT, $3::TEXT, taken, $5::BIGINT, $6::BIGINT FROM take
    RETURNING id
)
SELECT 1::BIGINT, (SELECT taken FROM take), (SELECT after FROM take), (SELECT count(*) FROM ins)";

/// A top-up: the same, only while the lease still exists (locked first), and renewed.
/// Parameters: lease id, account, amount, new expiry.
const LEASE_TOPUP_SQL: &str = "
WITH l AS (
    SELECT id FROM leases WHERE id = $1::TEXT FOR UPDATE
), cur AS (
    SELECT a.id, a.balance FROM accounts a
    WHERE a.id = $2::TEXT AND EXISTS (SELECT 1 FROM l) FOR UPDATE
), take AS (
    UPDATE accounts SET balance = accounts.balance - LEAST(cur.balance, $3::BIGINT)
    FROM cur WHERE accounts.id = cur.id AND cur.balance > 0
    RETURNING LEAST(cur.balance, $3::BIGINT) AS taken, accounts.balance AS after
), upd AS (
    UPDATE leases SET amount = leases.amount + take.taken, expires_at = $4::BIGINT
    FROM take WHERE leases.id = $1::TEXT
    RETURNING leases.id
)
SELECT (SELECT count(*) FROM l), (SELECT taken FROM take), (SELECT after FROM take),
       (SELECT count(*) FROM upd)";

pub(crate) async fn lease_take(
    c: &Object,
    t: &super::LeaseTake,
) -> Result<super::LeaseTaken, StoreError> {
    let row = if t.create {
        let st = c.prepare_cached(LEASE_CREATE_SQL).await.map_err(pg_err)?;
        c.query_one(
            &st,
            &[
                &t.lease_id,
                &t.account,
                &t.holder,
                &t.amount,
                &t.now,
                &t.expires_at,
            ],
        )
        .await
    } else {
        let st = c.prepare_cached(LEASE_TOPUP_SQL).await.map_err(pg_err)?;
        c.query_one(&st, &[&t.lease_id, &t.account, &t.amount, &t.expires_at])
            .await
    }
    .map_err(pg_err)?;
    if col::<i64>(&row, 0)? == 0 {
        return Ok(super::LeaseTaken::Lost);
    }
    let taken: Option<i64> = col(&row, 1)?;
    let after: Option<i64> = col(&row, 2)?;
    Ok(super::LeaseTaken::Taken {
        taken: taken.unwrap_or(0),
        balance_after: after.unwrap_or(0),
    })
}

/// Posts a lease's settled charges and renews it, in one transaction; `false` if it is gone.
pub(crate) async fn lease_sync(
    mut c: Object,
    lease_id: &str,
    account: &str,
    usage: &[super::LeaseUsage],
    now: i64,
    expires_at: i64,
) -> Result<bool, StoreError> {
    let charged: i64 = usage.iter().map(|u| u.charged).sum();
    let tx = c.transaction().await.map_err(pg_err)?;
    let n = tx
        .execute(
            "UPDATE leases SET amount = amount - $2, expires_at = $3 WHERE id = $1",
            &[&lease_id, &charged, &expires_at],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 {
        return Ok(false);
    }
    for u in usage.iter().filter(|u| u.requests > 0) {
        tx.execute(
            "INSERT INTO lease_usage
                 (id, lease_id, account, key_id, agent_id, requests, charged, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &uuid::Uuid::new_v4().to_string(),
                &lease_id,
                &account,
                &u.key_id,
                &u.agent_id,
                &u.requests,
                &u.charged,
                &now,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(true)
}

/// Deletes one lease (`id`) or every lease expired at `now`, and returns what they held to
/// their accounts, in one statement. Returns the millicredits returned.
pub(crate) async fn return_leases(
    c: &Object,
    id: Option<&str>,
    now: i64,
) -> Result<i64, StoreError> {
    let st = c
        .prepare_cached(
            "WITH gone AS (
                 DELETE FROM leases
                 WHERE ($1::TEXT IS NOT NULL AND id = $1::TEXT)
                    OR ($1::TEXT IS NULL AND expires_at <= $2::BIGINT)
                 RETURNING account, amount
             ), sums AS (
                 SELECT account, SUM(amount)::BIGINT AS amount FROM gone GROUP BY account
             ), refund AS (
                 UPDATE accounts SET balance = accounts.balance + sums.amount
                 FROM sums WHERE accounts.id = sums.account
                 RETURNING sums.amount
             )
             SELECT COALESCE(SUM(amount), 0)::BIGINT FROM refund",
        )
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&st, &[&id, &now]).await.map_err(pg_err)?;
    col(&row, 0)
}

// ---- reads ----------------------------------------------------------------------------------

const KEY_COLUMNS: &str = "public_id, hash, account, kind, scopes, agents, created_at, \
                           expires_at, revoked_at, rate_per_second, rate_burst, max_streams, \
                           rate_per_second_exact";

fn key_row(r: &Row) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        public_id: col(r, 0)?,
        hash: col(r, 1)?,
        account: col(r, 2)?,
        kind: col(r, 3)?,
        scopes: col(r, 4)?,
        agents: col(r, 5)?,
        created_at: col(r, 6)?,
        expires_at: col(r, 7)?,
        revoked_at: col(r, 8)?,
        rate_per_second: super::stored_rate(col(r, 12)?, opt_u32(col(r, 9)?, "rate_per_second")?),
        rate_burst: opt_u32(col(r, 10)?, "rate_burst")?,
        max_streams: opt_u32(col(r, 11)?, "max_streams")?,
    })
}

pub(crate) async fn get_key(c: &Object, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE public_id = $1"
        ))
        .await
        .map_err(pg_err)?;
    c.query_opt(&st, &[&public_id])
        .await
        .map_err(pg_err)?
        .map(|r| key_row(&r))
        .transpose()
}

pub(crate) async fn list_keys(
    c: &Object,
    account: Option<&str>,
) -> Result<Vec<KeyRecord>, StoreError> {
    let rows = match account {
        Some(a) => c
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE account = $1
                     ORDER BY created_at, public_id"
                ),
                &[&a],
            )
            .await
            .map_err(pg_err)?,
        None => c
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY account, created_at, public_id"
                ),
                &[],
            )
            .await
            .map_err(pg_err)?,
    };
    rows.iter().map(key_row).collect()
}

pub(crate) async fn revocation_counter(c: &Object) -> Result<u64, StoreError> {
    let st = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'revocations'")
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&st, &[]).await.map_err(pg_err)?;
    Ok(u64::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
}

pub(crate) async fn balance(c: &Object, account: &str) -> Result<Option<i64>, StoreError> {
    let st = c
        .prepare_cached("SELECT balance FROM accounts WHERE id = $1")
        .await
        .map_err(pg_err)?;
    c.query_opt(&st, &[&account])
        .await
        .map_err(pg_err)?
        .map(|r| col(&r, 0))
        .transpose()
}

pub(crate) async fn expired_pending(
    c: &Object,
    now: i64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT id FROM reservations WHERE state = 'pending' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
            &[&now, &i64::from(limit)],
        )
        .await
        .map_err(pg_err)?;
    rows.iter().map(|r| col(r, 0)).collect()
}

pub(crate) async fn reservation(
    c: &Object,
    id: &str,
) -> Result<Option<ReservationRecord>, StoreError> {
    let row = c
        .query_opt(
            "SELECT id, account, key_id, agent_id, reserved, fallback, charged, state,
                    created_at, expires_at, settled_at
             FROM reservations WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_err)?;
    row.map(|r| {
        Ok(ReservationRecord {
            id: col(&r, 0)?,
            account: col(&r, 1)?,
            key_id: col(&r, 2)?,
            agent_id: col(&r, 3)?,
            reserved: col(&r, 4)?,
            fallback: col(&r, 5)?,
            charged: col(&r, 6)?,
            state: col(&r, 7)?,
            created_at: col(&r, 8)?,
            expires_at: col(&r, 9)?,
            settled_at: col(&r, 10)?,
        })
    })
    .transpose()
}

pub(crate) async fn pending_count(c: &Object) -> Result<i64, StoreError> {
    let row = c
        .query_one(
            "SELECT COUNT(*) FROM reservations WHERE state = 'pending'",
            &[],
        )
        .await
        .map_err(pg_err)?;
    col(&row, 0)
}

pub(crate) async fn usage(c: &Object, f: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
    // Requests charged from a lease are posted in batches (`lease_usage`), each batch one row
    // with its count.
    let mut sql = String::from(
        "SELECT account, key_id, agent_id, SUM(requests)::BIGINT, SUM(charged)::BIGINT,
                SUM(pending)::BIGINT
         FROM (
             SELECT account, key_id, agent_id, 1 AS requests,
                    CASE WHEN state = 'posted' THEN charged ELSE 0 END AS charged,
                    CASE WHEN state = 'pending' THEN 1 ELSE 0 END AS pending, created_at
             FROM reservations
             UNION ALL
             SELECT account, key_id, agent_id, requests, charged, 0, created_at
             FROM lease_usage
         ) u WHERE 1 = 1",
    );
    let conditions = f.conditions();
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    for (clause, value) in &conditions {
        args.push(match value {
            FilterValue::Text(t) => t,
            FilterValue::Time(t) => t,
        });
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    }
    sql.push_str(" GROUP BY account, key_id, agent_id ORDER BY account, key_id, agent_id");
    let rows = c.query(&sql, &args).await.map_err(pg_err)?;
    rows.iter()
        .map(|r| {
            Ok(UsageRow {
                account: col(r, 0)?,
                key_id: col(r, 1)?,
                agent_id: col(r, 2)?,
                requests: col(r, 3)?,
                charged: col(r, 4)?,
                pending: col(r, 5)?,
            })
        })
        .collect()
}

pub(crate) async fn usage_buckets(
    c: &Object,
    f: &UsageFilter,
    bucket_ms: i64,
) -> Result<Vec<UsageBucket>, StoreError> {
    // As `usage`: lease batches count with their number of requests.
    let mut sql = String::from(
        "SELECT (created_at / $1) * $1 AS bucket, agent_id, SUM(requests)::BIGINT,
                SUM(charged)::BIGINT
         FROM (
             SELECT account, key_id, agent_id, 1 AS requests,
                    CASE WHEN state = 'posted' THEN charged ELSE 0 END AS charged, created_at
             FROM reservations
             UNION ALL
             SELECT account, key_id, agent_id, requests, charged, created_at
             FROM lease_usage
         ) u WHERE 1 = 1",
    );
    let conditions = f.conditions();
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&bucket_ms];
    for (clause, value) in &conditions {
        args.push(match value {
            FilterValue::Text(t) => t,
            FilterValue::Time(t) => t,
        });
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    }
    sql.push_str(" GROUP BY bucket, agent_id ORDER BY bucket, agent_id");
    let rows = c.query(&sql, &args).await.map_err(pg_err)?;
    rows.iter()
        .map(|r| {
            Ok(UsageBucket {
                start: col(r, 0)?,
                agent_id: col(r, 1)?,
                requests: col(r, 2)?,
                charged: col(r, 3)?,
            })
        })
        .collect()
}

pub(crate) async fn account_sums(mut c: Object) -> Result<Vec<AccountSums>, StoreError> {
    // One repeatable-read snapshot, so that the sums agree with each other.
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)?;
    let rows = tx
        .query(
            "SELECT a.id, a.balance,
                 COALESCE((SELECT SUM(g.amount) FROM grants g WHERE g.account = a.id), 0)::BIGINT,
                 COALESCE((SELECT SUM(r.charged) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'posted'), 0)::BIGINT
                 + COALESCE((SELECT SUM(u.charged) FROM lease_usage u
                             WHERE u.account = a.id), 0)::BIGINT,
                 COALESCE((SELECT SUM(r.reserved) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'pending'), 0)::BIGINT
                 + COALESCE((SELECT SUM(l.amount) FROM leases l
                             WHERE l.account = a.id), 0)::BIGINT
             FROM accounts a ORDER BY a.id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let sums = rows
        .iter()
        .map(|r| {
            Ok(AccountSums {
                account: col(r, 0)?,
                balance: col(r, 1)?,
                granted: col(r, 2)?,
                posted: col(r, 3)?,
                pending: col(r, 4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    tx.commit().await.map_err(pg_err)?;
    Ok(sums)
}

// ---- LISTEN ---------------------------------------------------------------------------------

fn parse_event(payload: &str) -> Option<StoreEvent> {
    let (kind, id) = payload.split_once(':')?;
    match kind {
        "revoke" => Some(StoreEvent::KeyRevoked(id.to_owned())),
        "credits" => Some(StoreEvent::CreditsChanged(id.to_owned())),
        "config" => {
            let (instance, sha256) = id.split_once(':')?;
            Some(StoreEvent::ConfigApplied {
                instance: instance.to_owned(),
                sha256: sha256.to_owned(),
            })
        }
        _ => None,
    }
}

/// Keeps one connection `LISTEN`ing and turns notifications into [`StoreEvent`]s. After every
/// (re)connection it sends `Resync`: whatever happened while it was away was not heard, so
/// subscribers drop their caches.
async fn listen_loop(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    sh: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut delay = Duration::from_millis(100);
    let mut ready = Some(ready);
    loop {
        if sh.stopping.load(Ordering::Acquire) {
            return;
        }
        match listen_once(&config, tls.as_ref(), &sh, &mut ready).await {
            Ok(()) => delay = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "postgres LISTEN connection failed; reconnecting");
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
    sh: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), StoreError> {
    match tls {
        Some(tls) => {
            let (client, conn) = config.connect(tls.clone()).await.map_err(pg_err)?;
            listen_on(client, conn, sh, ready).await
        }
        None => {
            let (client, conn) = config.connect(NoTls).await.map_err(pg_err)?;
            listen_on(client, conn, sh, ready).await
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    sh: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), StoreError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if ntx.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg_err)?;
    let _ = sh.events.send(StoreEvent::Resync);
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    while let Some(payload) = nrx.recv().await {
        match parse_event(&payload) {
            Some(StoreEvent::ConfigApplied { instance, .. }) if instance == sh.instance => {}
            Some(ev) => {
                let _ = sh.events.send(ev);
            }
            None => tracing::debug!(%payload, "unknown store notification"),
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(pg_err(e)),
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(
            parse_event("revoke:agk_1"),
            Some(StoreEvent::KeyRevoked("agk_1".into()))
        );
        assert_eq!(
            parse_event(&notify_payload("credits", "acme:eu")),
            Some(StoreEvent::CreditsChanged("acme:eu".into()))
        );
        assert_eq!(
            parse_event(&notify_payload("config", "abc:0123ef")),
            Some(StoreEvent::ConfigApplied {
                instance: "abc".into(),
                sha256: "0123ef".into()
            })
        );
        assert_eq!(parse_event("config:no-hash"), None);
        assert_eq!(parse_event("nonsense"), None);
    }
}
