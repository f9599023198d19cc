//! Durable state (accounts, keys, ledger, idempotency, conversations and transcripts) behind
//! one cloneable handle.
//!
//! Writes go through a queue drained by one writer that commits whatever is queued in one
//! transaction (group commit); a caller that needs durability awaits its batch's commit, a
//! caller that does not (a settlement from a `Drop` guard) only enqueues. Reads use separate
//! connections. SQLite is the embedded default; PostgreSQL (`postgres://…`, module `postgres`) is
//! the store of several replicas: the same operations and callbacks, each op its own short
//! transaction on a pool instead of one writer's batch (see that module).
//!
//! What survives a crash: every write a caller was told about (an awaited op) is on disk, with
//! `synchronous=FULL` even across power loss. A fire-and-forget settlement still queued at
//! `kill -9` is lost with the process; its reservation stays `pending` and recovery settles it
//! to its fallback once it expires, so a request is never charged twice nor left open.

mod conversations;
mod pg_conversations;
mod pg_schema;
mod postgres;
mod schema;
mod sqlite;
pub mod time;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

pub use conversations::{
    After, ConversationOutcome, ConversationRecord, ConversationWrite, Exchange, MessageRecord,
    NewMessage,
};
pub use sqlite::{SqliteOptions, Synchronous};
pub use time::{now_ms, UnixMs};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store url `{0}` (expected sqlite://PATH or postgres://…)")]
    Url(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused the statement.
    #[error("postgres: {0}")]
    Postgres(String),
    /// PostgreSQL could not be reached, or the connection broke (worth retrying).
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    #[error("store writer has stopped")]
    Closed,
    #[error("write batch failed: {0}")]
    Batch(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The SQLite file at the store's path is no longer the one it opened (deleted or
    /// replaced): writes would go to an unlinked file, so none is made.
    #[error("the store file {0} was deleted or replaced since it was opened")]
    Replaced(String),
    /// The op would pass a limit (e.g. a balance above the maximum); nothing was written.
    #[error("{0}")]
    Limit(&'static str),
    #[error("blocking task failed: {0}")]
    Task(String),
    /// The store file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A completion callback, run by the writer after its batch committed (or failed). It must be
/// cheap and must not block: it runs on the writer thread.
pub type Done<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send + 'static>;

/// A key row as stored. Kinds and scopes are kept as text so that the store does not depend on
/// the auth layer; `agents` is a comma-separated list, `None` meaning every agent of the account.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub public_id: String,
    /// Lower-case hex SHA-256 of the full key.
    pub hash: String,
    pub account: String,
    pub kind: String,
    pub scopes: String,
    pub agents: Option<String>,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
    pub revoked_at: Option<UnixMs>,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<u32>,
    pub max_streams: Option<u32>,
}

impl KeyRecord {
    /// The rate as binaries before schema version 3 read it (`rate_per_second`, a whole
    /// number): rounded up. The exact rate goes to `rate_per_second_exact`.
    pub(crate) fn whole_rate(&self) -> Option<u32> {
        // `as` saturates: a huge rate stays huge.
        self.rate_per_second.map(|r| (r.ceil() as u32).max(1))
    }
}

/// A key's rate as read back: the exact one, or for a key written before schema version 3
/// the whole number it had.
pub(crate) fn stored_rate(exact: Option<f64>, whole: Option<u32>) -> Option<f64> {
    exact.or(whole.map(f64::from))
}

/// A reservation to write: `reserved` millicredits are taken from the account if it holds them.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: String,
    pub account: String,
    pub key_id: String,
    pub agent_id: String,
    pub reserved: i64,
    /// What recovery charges if the request never settles (the agent's base cost).
    pub fallback: i64,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
}

/// What a reservation write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved { balance_after: i64 },
    Insufficient { balance: i64 },
}

/// Settle a pending reservation: post `charge` (clamped to `[0, reserved]`; `None` = its
/// fallback) and return the rest to the balance.
#[derive(Debug, Clone)]
pub struct SettleRequest {
    pub id: String,
    pub charge: Option<i64>,
    pub now: UnixMs,
    /// Recovery only: settle only if the reservation's `expires_at` is at or before this time, so
    /// a live stream that extended its reservation meanwhile is left alone.
    pub expired_before: Option<UnixMs>,
}

/// What a settlement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    Settled {
        account: String,
        reserved: i64,
        charged: i64,
        balance_after: i64,
    },
    /// Already settled (or unknown, or not yet expired for a recovery settle): nothing changed.
    NotPending,
}

/// A credit grant (or, with a negative amount, an adjustment; the balance stays ≥ 0).
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub account: String,
    pub amount: i64,
    pub memo: Option<String>,
    pub now: UnixMs,
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

/// Claim an idempotency key for one request.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    pub account: String,
    pub idem_key: String,
    pub body_hash: String,
    /// Random token naming this claim; `complete`/`abort` must present it.
    pub owner: String,
    pub now: UnixMs,
    /// An in-flight claim older than this is considered abandoned (its process crashed).
    pub locked_until: UnixMs,
}

/// The stored answer of a completed idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemOutcome {
    /// The claim is ours (first use, or an abandoned claim taken over).
    Claimed,
    InFlight,
    Conflict,
    Replay(StoredResponse),
}

/// Store the answer under a claim.
#[derive(Debug, Clone)]
pub struct IdemCompletion {
    pub account: String,
    pub idem_key: String,
    pub owner: String,
    pub response: StoredResponse,
}

/// Most idempotency records one expiry write deletes.
const IDEM_EXPIRE_BATCH: i64 = 1000;

/// A write for the writer. Each carries the callback to run once its batch has committed.
pub enum WriteOp {
    Reserve(NewReservation, Done<ReserveOutcome>),
    /// Never dropped: retried (with a bounded backoff) until it commits while the process
    /// lives; its callback (`None`: fire-and-forget) hears of it once it has.
    Settle(SettleRequest, Option<Done<SettleOutcome>>),
    Extend {
        id: String,
        expires_at: UnixMs,
        done: Option<Done<bool>>,
    },
    Grant(NewGrant, Done<i64>),
    InsertKey(KeyRecord, Done<()>),
    RevokeKey {
        public_id: String,
        now: UnixMs,
        done: Done<RevokeOutcome>,
    },
    IdemBegin(IdemClaim, Done<IdemOutcome>),
    IdemComplete(IdemCompletion, Done<bool>),
    IdemAbort {
        account: String,
        idem_key: String,
        owner: String,
        done: Option<Done<bool>>,
    },
    /// Deletes at most `limit` idempotency records created before `created_before` (complete,
    /// or abandoned: in flight with their lock past `now`). Reports how many it deleted.
    IdemExpire {
        created_before: UnixMs,
        now: UnixMs,
        limit: i64,
        done: Done<u64>,
    },
    /// Conversations and transcripts (see `conversations.rs`).
    Conversation(ConversationWrite, Done<ConversationOutcome>),
    /// Completes once everything queued before it has committed.
    Flush(Done<()>),
    /// A real (tiny) write, committed like any other: `/readyz` asks whether the store can
    /// write.
    Probe(Done<()>),
}

impl WriteOp {
    /// Ops retried until they commit, never failed: settlements (money must never be lost,
    /// whoever waits for them) and the fire-and-forget ops that have nobody to report to.
    pub(crate) fn is_retried_until_committed(&self) -> bool {
        matches!(
            self,
            WriteOp::Settle(..)
                | WriteOp::Extend { done: None, .. }
                | WriteOp::IdemAbort { done: None, .. }
        )
    }
}

/// What the writer's queue carries.
// `Shutdown` is sent once; boxing every op to shrink it would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Op(WriteOp),
    /// Sent when the last store handle goes: commit what is queued, then stop.
    Shutdown,
}

/// A cheap handle that can enqueue writes; what callbacks and guards hold instead of a [`Store`].
#[derive(Clone)]
pub struct WriteQueue(std::sync::mpsc::Sender<Msg>);

impl WriteQueue {
    /// Enqueues a write without waiting. Fails only when the writer has stopped.
    pub fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        self.0.send(Msg::Op(op)).map_err(|_| StoreError::Closed)
    }
}

/// Which rows `usage` aggregates.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub account: Option<String>,
    pub key_id: Option<String>,
    pub agent_id: Option<String>,
    pub since: Option<UnixMs>,
    pub until: Option<UnixMs>,
}

/// A value a [`UsageFilter`] compares a column with.
pub(crate) enum FilterValue<'a> {
    Text(&'a str),
    Time(UnixMs),
}

impl UsageFilter {
    /// The filter's conditions: a column with its comparison (`"account ="`), and the value.
    pub(crate) fn conditions(&self) -> Vec<(&'static str, FilterValue<'_>)> {
        let texts = [
            ("account =", &self.account),
            ("key_id =", &self.key_id),
            ("agent_id =", &self.agent_id),
        ];
        let times = [("created_at >=", self.since), ("created_at <", self.until)];
        texts
            .into_iter()
            .filter_map(|(c, v)| Some((c, FilterValue::Text(v.as_deref()?))))
            .chain(
                times
                    .into_iter()
                    .filter_map(|(c, v)| Some((c, FilterValue::Time(v?)))),
            )
            .collect()
    }
}

/// Requests and charges per (account, key, agent), amounts in millicredits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub account: String,
    pub key_id: String,
    pub agent_id: String,
    pub requests: i64,
    pub charged: i64,
    pub pending: i64,
}

/// Requests and posted charges of one agent in one time bucket (amounts in millicredits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    /// Start of the bucket: a multiple of the bucket length since the Unix epoch.
    pub start: UnixMs,
    pub agent_id: String,
    pub requests: i64,
    pub charged: i64,
}

/// One reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    pub id: String,
    pub account: String,
    pub key_id: String,
    pub agent_id: String,
    pub reserved: i64,
    pub fallback: i64,
    pub charged: Option<i64>,
    pub state: String,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
    pub settled_at: Option<UnixMs>,
}

/// Per-account sums for reconciling the ledger (millicredits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSums {
    pub account: String,
    pub balance: i64,
    pub granted: i64,
    pub posted: i64,
    pub pending: i64,
}

/// Take credits for a lease (`create`: a new lease row; else top up `lease_id`).
#[derive(Debug, Clone)]
pub struct LeaseTake {
    pub lease_id: String,
    pub account: String,
    /// The process holding it (for operators looking at the table).
    pub holder: String,
    /// Most millicredits to take; less is taken when the balance holds less.
    pub amount: i64,
    pub create: bool,
    pub now: UnixMs,
    pub expires_at: UnixMs,
}

/// What taking lease credits did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseTaken {
    Taken {
        taken: i64,
        balance_after: i64,
    },
    /// The lease to top up no longer exists (recovery took it back after it expired).
    Lost,
}

/// Charges settled from a lease for one (key, agent), posted in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseUsage {
    pub key_id: String,
    pub agent_id: String,
    pub requests: i64,
    pub charged: i64,
}

/// What other processes sharing the store did, as far as caches care (PostgreSQL
/// `LISTEN`/`NOTIFY`; a SQLite store announces nothing and is polled instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A key was revoked (by any replica or the CLI).
    KeyRevoked(String),
    /// Credits of this account were granted or adjusted.
    CreditsChanged(String),
    /// A replica applied a new config: `sha256` (hex) of its file's text, announced by the
    /// store instance `instance` (a process never hears its own announcements).
    ConfigApplied { instance: String, sha256: String },
    /// The event connection was (re)established: anything may have been missed.
    Resync,
}

/// The backends, implementing the same operations.
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

struct StoreInner {
    backend: Backend,
    url: String,
    /// Revocations committed through this process; lets the key cache drop entries at once.
    local_revocations: Arc<AtomicU64>,
}

/// The store handle: `Clone + Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.url)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

impl Store {
    /// Opens the store named by a URL: `sqlite://PATH` (relative or absolute path) or
    /// `postgres://…` / `postgresql://…`. A SQLite file is required (no in-memory database) so
    /// that the CLI and the server can share it.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::open_postgres(url).await;
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| StoreError::Url(url.to_owned()))?;
        Self::open_sqlite(path, SqliteOptions::default()).await
    }

    /// Opens (creating and migrating if needed) a SQLite store file.
    pub async fn open_sqlite(
        path: impl AsRef<Path>,
        opts: SqliteOptions,
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let url = format!("sqlite://{}", path.display());
        let store = blocking(move || sqlite::SqliteStore::open(&path, opts)).await?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                backend: Backend::Sqlite(store),
                url,
                local_revocations: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// Connects to PostgreSQL, creating and migrating the schema if needed (replicas starting
    /// together take turns). The URL may carry a password; it is never logged or shown.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let owned = url.to_owned();
        let store = blocking(move || postgres::PgStore::open(&owned)).await?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                backend: Backend::Postgres(store),
                url: redact(url),
                local_revocations: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// Whether this store is shared by replicas through a database server (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Postgres(_))
    }

    /// Events announced by other processes sharing the store; `None` for SQLite, which has
    /// no such channel (its readers poll).
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        match &self.inner.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.subscribe()),
        }
    }

    /// Tells the other replicas sharing the store that this one applied the config whose text
    /// has SHA-256 `sha256` (hex), so that they re-read theirs. Nothing to do for SQLite.
    pub async fn announce_config(&self, sha256: &str) -> Result<(), StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(p) => p.announce_config(sha256).await,
        }
    }

    /// The URL this store was opened with (a password replaced by `***`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A handle that only enqueues writes (for callbacks and guards).
    pub fn queue(&self) -> WriteQueue {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.queue(),
            Backend::Postgres(p) => p.queue(),
        }
    }

    /// Enqueues a write without waiting for it.
    pub fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        self.queue().submit(op)
    }

    /// Enqueues a write and waits for its batch to commit.
    async fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Done<T>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(make(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Revocations committed through this process so far.
    pub fn local_revocations(&self) -> u64 {
        self.inner.local_revocations.load(Ordering::Acquire)
    }

    // ---- writes -------------------------------------------------------------------------

    pub async fn reserve(&self, r: NewReservation) -> Result<ReserveOutcome, StoreError> {
        self.call(|done| WriteOp::Reserve(r, done)).await
    }

    pub async fn settle(&self, s: SettleRequest) -> Result<SettleOutcome, StoreError> {
        self.call(|done| WriteOp::Settle(s, Some(done))).await
    }

    pub async fn extend(&self, id: &str, expires_at: UnixMs) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(|done| WriteOp::Extend {
            id,
            expires_at,
            done: Some(done),
        })
        .await
    }

    /// Adds credits; creates the account if needed. Returns the new balance.
    pub async fn grant(&self, g: NewGrant) -> Result<i64, StoreError> {
        self.call(|done| WriteOp::Grant(g, done)).await
    }

    /// Inserts a key; creates its account if needed.
    pub async fn insert_key(&self, k: KeyRecord) -> Result<(), StoreError> {
        self.call(|done| WriteOp::InsertKey(k, done)).await
    }

    pub async fn revoke_key(
        &self,
        public_id: &str,
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError> {
        let public_id = public_id.to_owned();
        let counter = Arc::clone(&self.inner.local_revocations);
        self.call(move |done: Done<RevokeOutcome>| WriteOp::RevokeKey {
            public_id,
            now,
            done: Box::new(move |r| {
                if matches!(r, Ok(RevokeOutcome::Revoked)) {
                    counter.fetch_add(1, Ordering::AcqRel);
                }
                done(r)
            }),
        })
        .await
    }

    pub async fn idem_begin(&self, c: IdemClaim) -> Result<IdemOutcome, StoreError> {
        self.call(|done| WriteOp::IdemBegin(c, done)).await
    }

    pub async fn idem_complete(&self, c: IdemCompletion) -> Result<bool, StoreError> {
        self.call(|done| WriteOp::IdemComplete(c, done)).await
    }

    pub async fn idem_abort(
        &self,
        account: &str,
        idem_key: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let (account, idem_key, owner) =
            (account.to_owned(), idem_key.to_owned(), owner.to_owned());
        self.call(|done| WriteOp::IdemAbort {
            account,
            idem_key,
            owner,
            done: Some(done),
        })
        .await
    }

    /// Deletes idempotency records created before `created_before`: complete ones, and claims
    /// abandoned at `now` (a live claim stays). In batches of `IDEM_EXPIRE_BATCH`, so the writer
    /// is never held long. Returns how many it deleted.
    pub async fn expire_idempotency(
        &self,
        created_before: UnixMs,
        now: UnixMs,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let n = self
                .call(|done| WriteOp::IdemExpire {
                    created_before,
                    now,
                    limit: IDEM_EXPIRE_BATCH,
                    done,
                })
                .await?;
            deleted += n;
            if n < IDEM_EXPIRE_BATCH.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }

    /// Records a completed exchange (conversation row, user message, answer) in one
    /// transaction; returns once it is durable.
    pub async fn record_exchange(&self, x: Exchange) -> Result<(), StoreError> {
        self.conversation_write(ConversationWrite::Record(Box::new(x)))
            .await
            .map(drop)
    }

    /// Any conversation write, awaited until durable.
    pub async fn conversation_write(
        &self,
        w: ConversationWrite,
    ) -> Result<ConversationOutcome, StoreError> {
        self.call(|done| WriteOp::Conversation(w, done)).await
    }

    /// Waits until every write queued before this call has committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(WriteOp::Flush).await
    }

    /// Commits a tiny write (and, for SQLite, checks that the file at the path is still the
    /// one opened): whether the store can take writes now.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.call(WriteOp::Probe).await
    }

    // ---- credit leases (PostgreSQL) ------------------------------------------------------

    fn postgres(&self) -> Result<&postgres::PgStore, StoreError> {
        match &self.inner.backend {
            Backend::Postgres(p) => Ok(p),
            Backend::Sqlite(_) => Err(StoreError::Unsupported(
                "credit leases need a PostgreSQL store",
            )),
        }
    }

    /// Takes up to `amount` from the balance into a lease, in one conditional statement.
    pub async fn lease_take(&self, t: LeaseTake) -> Result<LeaseTaken, StoreError> {
        let t = Arc::new(t);
        self.postgres()?
            .run(false, move |c| {
                let t = Arc::clone(&t);
                async move { postgres::lease_take(&c, &t).await }
            })
            .await
    }

    /// Posts charges settled from a lease and renews it until `expires_at`; `false` if the
    /// lease is gone (taken back by recovery).
    pub async fn lease_sync(
        &self,
        lease_id: &str,
        account: &str,
        usage: &[LeaseUsage],
        now: UnixMs,
        expires_at: UnixMs,
    ) -> Result<bool, StoreError> {
        let args = Arc::new((lease_id.to_owned(), account.to_owned(), usage.to_vec()));
        self.postgres()?
            .run(false, move |c| {
                let args = Arc::clone(&args);
                async move {
                    postgres::lease_sync(c, &args.0, &args.1, &args.2, now, expires_at).await
                }
            })
            .await
    }

    /// Returns the rest of a lease to its account and removes it. Returns the amount.
    pub async fn lease_release(&self, lease_id: &str) -> Result<i64, StoreError> {
        let id = lease_id.to_owned();
        self.postgres()?
            .run(true, move |c| {
                let id = id.clone();
                async move { postgres::return_leases(&c, Some(&id), 0).await }
            })
            .await
    }

    /// Returns every lease that expired at or before `now` to its account (a crashed
    /// replica's). Returns the millicredits returned. Nothing to do on SQLite.
    pub async fn recover_leases(&self, now: UnixMs) -> Result<i64, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(_) => Ok(0),
            Backend::Postgres(p) => {
                p.run(true, move |c| async move {
                    postgres::return_leases(&c, None, now).await
                })
                .await
            }
        }
    }

    // ---- reads --------------------------------------------------------------------------

    pub async fn get_key(&self, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = public_id.to_owned();
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(move |c| sqlite::get_key(c, &id)).await,
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let id = id.clone();
                    async move { postgres::get_key(&c, &id).await }
                })
                .await
            }
        }
    }

    pub async fn list_keys(&self, account: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let account = account.map(str::to_owned);
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| sqlite::list_keys(c, account.as_deref()))
                    .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let account = account.clone();
                    async move { postgres::list_keys(&c, account.as_deref()).await }
                })
                .await
            }
        }
    }

    /// A counter bumped by every revocation, by any process sharing the store.
    pub async fn revocation_counter(&self) -> Result<u64, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(sqlite::revocation_counter).await,
            Backend::Postgres(p) => {
                p.read(|c| async move { postgres::revocation_counter(&c).await })
                    .await
            }
        }
    }

    /// The committed balance in millicredits; `None` for an account never seen.
    pub async fn balance(&self, account: &str) -> Result<Option<i64>, StoreError> {
        let account = account.to_owned();
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(move |c| sqlite::balance(c, &account)).await,
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let account = account.clone();
                    async move { postgres::balance(&c, &account).await }
                })
                .await
            }
        }
    }

    /// Ids of pending reservations whose `expires_at` is at or before `now`, oldest first.
    pub async fn expired_pending(
        &self,
        now: UnixMs,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| sqlite::expired_pending(c, now, limit))
                    .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| async move { postgres::expired_pending(&c, now, limit).await })
                    .await
            }
        }
    }

    pub async fn reservation(&self, id: &str) -> Result<Option<ReservationRecord>, StoreError> {
        let id = id.to_owned();
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(move |c| sqlite::reservation(c, &id)).await,
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let id = id.clone();
                    async move { postgres::reservation(&c, &id).await }
                })
                .await
            }
        }
    }

    /// Number of reservations still pending.
    pub async fn pending_count(&self) -> Result<i64, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(sqlite::pending_count).await,
            Backend::Postgres(p) => {
                p.read(|c| async move { postgres::pending_count(&c).await })
                    .await
            }
        }
    }

    pub async fn usage(&self, f: UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(move |c| sqlite::usage(c, &f)).await,
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let f = f.clone();
                    async move { postgres::usage(&c, &f).await }
                })
                .await
            }
        }
    }

    pub async fn conversation(
        &self,
        account: &str,
        agent_id: &str,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let (account, agent_id, id) = (account.to_owned(), agent_id.to_owned(), id.to_owned());
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| conversations::get_conversation(c, &account, &agent_id, &id))
                    .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let (account, agent_id, id) = (account.clone(), agent_id.clone(), id.clone());
                    async move {
                        pg_conversations::get_conversation(&c, &account, &agent_id, &id).await
                    }
                })
                .await
            }
        }
    }

    /// An account's conversations with an agent, newest first, the page after `before`.
    pub async fn list_conversations(
        &self,
        account: &str,
        agent_id: &str,
        archived: Option<bool>,
        before: Option<After>,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let (account, agent_id) = (account.to_owned(), agent_id.to_owned());
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    conversations::list_conversations(
                        c,
                        &account,
                        &agent_id,
                        archived,
                        before.as_ref(),
                        limit,
                    )
                })
                .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let (account, agent_id, before) =
                        (account.clone(), agent_id.clone(), before.clone());
                    async move {
                        pg_conversations::list_conversations(
                            &c,
                            &account,
                            &agent_id,
                            archived,
                            before.as_ref(),
                            limit,
                        )
                        .await
                    }
                })
                .await
            }
        }
    }

    /// The newest `limit` messages of a conversation (before `before_seq`), newest first.
    pub async fn history(
        &self,
        account: &str,
        agent_id: &str,
        conversation_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let (account, agent_id, conversation_id) = (
            account.to_owned(),
            agent_id.to_owned(),
            conversation_id.to_owned(),
        );
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    conversations::history(
                        c,
                        &account,
                        &agent_id,
                        &conversation_id,
                        before_seq,
                        limit,
                    )
                })
                .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let (account, agent_id, conversation_id) =
                        (account.clone(), agent_id.clone(), conversation_id.clone());
                    async move {
                        pg_conversations::history(
                            &c,
                            &account,
                            &agent_id,
                            &conversation_id,
                            before_seq,
                            limit,
                        )
                        .await
                    }
                })
                .await
            }
        }
    }

    /// Unread assistant messages of an account with an agent, oldest first, after `after`.
    pub async fn inbox(
        &self,
        account: &str,
        agent_id: &str,
        after: Option<After>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let (account, agent_id) = (account.to_owned(), agent_id.to_owned());
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| conversations::inbox(c, &account, &agent_id, after.as_ref(), limit))
                    .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let (account, agent_id, after) =
                        (account.clone(), agent_id.clone(), after.clone());
                    async move {
                        pg_conversations::inbox(&c, &account, &agent_id, after.as_ref(), limit)
                            .await
                    }
                })
                .await
            }
        }
    }

    /// Usage matching `f` per agent and per `bucket_ms`-long bucket (by the request's start),
    /// oldest first; buckets without requests are left out.
    pub async fn usage_buckets(
        &self,
        f: UsageFilter,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        match &self.inner.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| sqlite::usage_buckets(c, &f, bucket_ms))
                    .await
            }
            Backend::Postgres(p) => {
                p.read(move |c| {
                    let f = f.clone();
                    async move { postgres::usage_buckets(&c, &f, bucket_ms).await }
                })
                .await
            }
        }
    }

    /// Balance, grants, posted charges and pending reservations of every account.
    pub async fn account_sums(&self) -> Result<Vec<AccountSums>, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(s) => s.read(sqlite::account_sums).await,
            Backend::Postgres(p) => p.read(postgres::account_sums).await,
        }
    }
}

/// A URL with its password (if any) replaced by `***`, fit for logs and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/gw?x=1"),
            "postgres://app:***@db:5432/gw?x=1"
        );
        assert_eq!(
            super::redact("postgres://app@db/gw"),
            "postgres://app@db/gw"
        );
        assert_eq!(super::redact("sqlite://data/a.db"), "sqlite://data/a.db");
    }
}
