//! PostgreSQL backend: the store shared by several replicas.
//!
//! Same operations and callbacks as the SQLite writer, different concurrency. The writes
//! every answer makes (its reservation, its settlement, its exchange) are group-committed by
//! a batcher (`batch.rs`): whatever of them is queued goes out pipelined on one connection in
//! one transaction, in one lock order, so that a hot account's row is locked once per batch
//! instead of once per op. Every other op is its own short transaction on a pooled
//! connection, many in flight at once. Each credit op is one conditional statement:
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
//!
//! Split by job: this file holds the handle (open, drop, running an op on the backend's
//! runtime) and implements [`StoreBackend`]; `connect.rs` is TLS, the pool and migrations,
//! `runtime.rs` the dispatcher and retries, `batch.rs` the answers' group commit, `ledger.rs`
//! the credit, key and idempotency statements and reads, `leases.rs` credit leases,
//! `transcripts.rs` conversations and `listen.rs` `LISTEN`/`NOTIFY`.

mod batch;
mod connect;
mod leases;
mod ledger;
mod listen;
mod runtime;
mod transcripts;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::backend::{BoxFuture, StoreBackend};
use super::transcripts::{After, ConversationRecord, MessageRecord};
use super::{
    rows, AccountSums, KeyRecord, LeaseTake, LeaseTaken, LeaseUsage, Msg, ReservationRecord,
    StoreError, StoreEvent, UnixMs, UsageBucket, UsageFilter, UsageRow, WriteQueue,
};
use runtime::Retry;

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
        let tls = connect::tls_for(&config)?;
        let pool = connect::pool(&config, tls.as_ref())?;
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
                connect::migrate(&mut client).await
            })?;
        }
        // Serve only once revocations by other replicas are heard (the poller covers a LISTEN
        // connection that takes longer).
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        rt.spawn(listen::listen_loop(
            config,
            tls,
            Arc::clone(&shared),
            ready_tx,
        ));
        let listening = rt.block_on(tokio::time::timeout(Duration::from_secs(5), ready_rx));
        if !matches!(listening, Ok(Ok(()))) {
            tracing::warn!("postgres LISTEN not established yet; revocations are polled meanwhile");
        }
        let (tx, rx) = mpsc::channel();
        let handle = rt.handle().clone();
        let dispatch_shared = Arc::clone(&shared);
        let dispatcher = std::thread::Builder::new()
            .name("agentgate-pg-dispatch".into())
            .spawn(move || runtime::dispatch_loop(rx, handle, dispatch_shared))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(PgStore {
            tx: Some(tx),
            dispatcher: Some(dispatcher),
            rt: Some(rt),
            shared,
        })
    }

    fn writes(&self) -> WriteQueue {
        match &self.tx {
            Some(tx) => WriteQueue(tx.clone()),
            None => WriteQueue(mpsc::channel().0),
        }
    }

    /// `NOTIFY config:<instance>:<sha256>`, heard by every other replica.
    async fn announce(&self, sha256: &str) -> Result<(), StoreError> {
        let payload = Arc::new(listen::notify_payload(
            "config",
            &format!("{}:{sha256}", self.shared.instance),
        ));
        self.run(true, move |c| {
            let payload = Arc::clone(&payload);
            async move {
                c.execute("SELECT pg_notify($1, $2)", &[&listen::CHANNEL, &*payload])
                    .await
                    .map_err(pg_err)?;
                Ok(())
            }
        })
        .await
    }

    /// Runs a read on the backend's runtime, retrying transient failures.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        self.run(true, f).await
    }

    /// Runs an op on the backend's runtime; `idempotent`: retry transient failures, else only
    /// failures to connect.
    async fn run<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, StoreError>
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
        rt.spawn(async move { runtime::attempt(&shared, mode, f).await })
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

impl rows::Columns for Row {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        col(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        col(self, i)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        col(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        col(self, i)
    }
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        col(self, i)
    }
    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        col(self, i)
    }
}

impl StoreBackend for PgStore {
    fn queue(&self) -> WriteQueue {
        self.writes()
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.shared.events.subscribe())
    }

    fn announce_config<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.announce(sha256))
    }

    fn get_key<'a>(&'a self, public_id: &'a str) -> BoxFuture<'a, Option<KeyRecord>> {
        let id = Arc::new(public_id.to_owned());
        Box::pin(self.read(move |c| {
            let id = Arc::clone(&id);
            async move { ledger::get_key(&c, &id).await }
        }))
    }

    fn list_keys<'a>(&'a self, account: Option<&'a str>) -> BoxFuture<'a, Vec<KeyRecord>> {
        let account = Arc::new(account.map(str::to_owned));
        Box::pin(self.read(move |c| {
            let account = Arc::clone(&account);
            async move { ledger::list_keys(&c, account.as_deref()).await }
        }))
    }

    fn revocation_counter(&self) -> BoxFuture<'_, u64> {
        Box::pin(self.read(|c| async move { ledger::revocation_counter(&c).await }))
    }

    fn balance<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Option<i64>> {
        let account = Arc::new(account.to_owned());
        Box::pin(self.read(move |c| {
            let account = Arc::clone(&account);
            async move { ledger::balance(&c, &account).await }
        }))
    }

    fn expired_pending(&self, now: UnixMs, limit: u32) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.read(move |c| async move { ledger::expired_pending(&c, now, limit).await }))
    }

    fn reservation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<ReservationRecord>> {
        let id = Arc::new(id.to_owned());
        Box::pin(self.read(move |c| {
            let id = Arc::clone(&id);
            async move { ledger::reservation(&c, &id).await }
        }))
    }

    fn pending_count(&self) -> BoxFuture<'_, i64> {
        Box::pin(self.read(|c| async move { ledger::pending_count(&c).await }))
    }

    fn usage(&self, f: UsageFilter) -> BoxFuture<'_, Vec<UsageRow>> {
        let f = Arc::new(f);
        Box::pin(self.read(move |c| {
            let f = Arc::clone(&f);
            async move { ledger::usage(&c, &f).await }
        }))
    }

    fn usage_buckets(&self, f: UsageFilter, bucket_ms: i64) -> BoxFuture<'_, Vec<UsageBucket>> {
        let f = Arc::new(f);
        Box::pin(self.read(move |c| {
            let f = Arc::clone(&f);
            async move { ledger::usage_buckets(&c, &f, bucket_ms).await }
        }))
    }

    fn account_sums(&self) -> BoxFuture<'_, Vec<AccountSums>> {
        Box::pin(self.read(ledger::account_sums))
    }

    fn conversation<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Option<ConversationRecord>> {
        let args = Arc::new((account.to_owned(), agent_id.to_owned(), id.to_owned()));
        Box::pin(self.read(move |c| {
            let args = Arc::clone(&args);
            async move { transcripts::get_conversation(&c, &args.0, &args.1, &args.2).await }
        }))
    }

    fn list_conversations<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        archived: Option<bool>,
        before: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<ConversationRecord>> {
        let args = Arc::new((account.to_owned(), agent_id.to_owned(), before));
        Box::pin(self.read(move |c| {
            let args = Arc::clone(&args);
            async move {
                let (account, agent_id, before) = &*args;
                transcripts::list_conversations(
                    &c,
                    account,
                    agent_id,
                    archived,
                    before.as_ref(),
                    limit,
                )
                .await
            }
        }))
    }

    fn history<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        conversation_id: &'a str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>> {
        let args = Arc::new((
            account.to_owned(),
            agent_id.to_owned(),
            conversation_id.to_owned(),
        ));
        Box::pin(self.read(move |c| {
            let args = Arc::clone(&args);
            async move {
                let (account, agent_id, conversation) = &*args;
                transcripts::history(&c, account, agent_id, conversation, before_seq, limit).await
            }
        }))
    }

    fn inbox<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        after: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>> {
        let args = Arc::new((account.to_owned(), agent_id.to_owned(), after));
        Box::pin(self.read(move |c| {
            let args = Arc::clone(&args);
            async move {
                let (account, agent_id, after) = &*args;
                transcripts::inbox(&c, account, agent_id, after.as_ref(), limit).await
            }
        }))
    }

    fn lease_take(&self, t: LeaseTake) -> BoxFuture<'_, LeaseTaken> {
        let t = Arc::new(t);
        Box::pin(self.run(false, move |c| {
            let t = Arc::clone(&t);
            async move { leases::lease_take(&c, &t).await }
        }))
    }

    fn lease_sync<'a>(
        &'a self,
        lease_id: &'a str,
        account: &'a str,
        usage: &'a [LeaseUsage],
        now: UnixMs,
        expires_at: UnixMs,
    ) -> BoxFuture<'a, bool> {
        let args = Arc::new((lease_id.to_owned(), account.to_owned(), usage.to_vec()));
        Box::pin(self.run(false, move |c| {
            let args = Arc::clone(&args);
            async move { leases::lease_sync(c, &args.0, &args.1, &args.2, now, expires_at).await }
        }))
    }

    fn lease_release<'a>(&'a self, lease_id: &'a str) -> BoxFuture<'a, i64> {
        let id = Arc::new(lease_id.to_owned());
        Box::pin(self.run(true, move |c| {
            let id = Arc::clone(&id);
            async move { leases::return_leases(&c, Some(&id), 0).await }
        }))
    }

    fn recover_leases(&self, now: UnixMs) -> BoxFuture<'_, i64> {
        Box::pin(self.run(true, move |c| async move {
            leases::return_leases(&c, None, now).await
        }))
    }
}
