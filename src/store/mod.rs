//! Durable state (accounts, keys, ledger, idempotency, conversations and transcripts) behind
//! one cloneable handle.
//!
//! Writes go through a queue drained by one writer that commits whatever is queued in one
//! transaction (group commit); a caller that needs durability awaits its batch's commit, a
//! caller that does not (a settlement from a `Drop` guard) only enqueues. Reads use separate
//! connections. SQLite is the embedded default; PostgreSQL (`postgres://…`, module `postgres`) is
//! the store of several replicas: the same operations and callbacks; the answers' writes are
//! batched into one pipelined transaction, the rest run as short transactions on a pool (see
//! that module).
//!
//! What survives a crash: every write a caller was told about (an awaited op) is on disk, with
//! `synchronous=FULL` even across power loss. A fire-and-forget settlement still queued at
//! `kill -9` is lost with the process; its reservation stays `pending` and recovery settles it
//! to its fallback once it expires, so a request is never charged twice nor left open.
//!
//! Layout: [`StoreBackend`](backend) is the one interface both stores implement (`sqlite/`,
//! `postgres/`); `types.rs` the records and write ops, `transcripts.rs` the conversation
//! records, `rows.rs` the row mapping both share, `schema.rs` the one migration list, and this
//! file the handle every caller holds.

mod backend;
mod error;
mod postgres;
mod rows;
mod schema;
mod sqlite;
pub mod time;
mod transcripts;
mod types;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use backend::StoreBackend;
pub use error::{StoreError, StoreErrorKind};
pub use schema::POSTGRES_ONLY_TABLES;
pub use sqlite::{SqliteOptions, Synchronous};
pub use time::{now_ms, UnixMs};
pub use transcripts::{
    After, ConversationOutcome, ConversationRecord, ConversationWrite, Exchange, MessageRecord,
    NewMessage,
};
pub use types::{
    AccountSums, Done, IdemClaim, IdemCompletion, IdemOutcome, KeyRecord, LeaseTake, LeaseTaken,
    LeaseUsage, NewGrant, NewReservation, ReservationRecord, ReserveOutcome, RevokeOutcome,
    SettleOutcome, SettleRequest, StoreEvent, StoredResponse, UsageBucket, UsageFilter, UsageRow,
    WriteOp, WriteQueue, MAX_BALANCE_MILLI,
};
pub(crate) use types::{FilterValue, Msg, BALANCE_LIMIT, LINGER};

/// Most idempotency records one expiry write deletes.
const IDEM_EXPIRE_BATCH: i64 = 1000;

struct StoreInner {
    backend: Box<dyn StoreBackend>,
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
    fn new(backend: impl StoreBackend, url: String) -> Store {
        Store {
            inner: Arc::new(StoreInner {
                backend: Box::new(backend),
                url,
                local_revocations: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

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
        Ok(Store::new(store, url))
    }

    /// Connects to PostgreSQL, creating and migrating the schema if needed (replicas starting
    /// together take turns). The URL may carry a password; it is never logged or shown.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let owned = url.to_owned();
        let store = blocking(move || postgres::PgStore::open(&owned)).await?;
        Ok(Store::new(store, redact(url)))
    }

    /// Whether this store is shared by replicas through a database server (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.inner.backend.is_shared()
    }

    /// Events announced by other processes sharing the store; `None` for SQLite, which has
    /// no such channel (its readers poll).
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.inner.backend.subscribe()
    }

    /// Tells the other replicas sharing the store that this one applied the config whose text
    /// has SHA-256 `sha256` (hex), so that they re-read theirs. Nothing to do for SQLite.
    pub async fn announce_config(&self, sha256: &str) -> Result<(), StoreError> {
        self.inner.backend.announce_config(sha256).await
    }

    /// The URL this store was opened with (a password replaced by `***`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A handle that only enqueues writes (for callbacks and guards).
    pub fn queue(&self) -> WriteQueue {
        self.inner.backend.queue()
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

    /// Takes up to `amount` from the balance into a lease, in one conditional statement.
    pub async fn lease_take(&self, t: LeaseTake) -> Result<LeaseTaken, StoreError> {
        self.inner.backend.lease_take(t).await
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
        self.inner
            .backend
            .lease_sync(lease_id, account, usage, now, expires_at)
            .await
    }

    /// Returns the rest of a lease to its account and removes it. Returns the amount.
    pub async fn lease_release(&self, lease_id: &str) -> Result<i64, StoreError> {
        self.inner.backend.lease_release(lease_id).await
    }

    /// Returns every lease that expired at or before `now` to its account (a crashed
    /// replica's). Returns the millicredits returned. Nothing to do on SQLite.
    pub async fn recover_leases(&self, now: UnixMs) -> Result<i64, StoreError> {
        self.inner.backend.recover_leases(now).await
    }

    // ---- reads --------------------------------------------------------------------------

    pub async fn get_key(&self, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.backend.get_key(public_id).await
    }

    pub async fn list_keys(&self, account: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.backend.list_keys(account).await
    }

    /// A counter bumped by every revocation, by any process sharing the store.
    pub async fn revocation_counter(&self) -> Result<u64, StoreError> {
        self.inner.backend.revocation_counter().await
    }

    /// The committed balance in millicredits; `None` for an account never seen.
    pub async fn balance(&self, account: &str) -> Result<Option<i64>, StoreError> {
        self.inner.backend.balance(account).await
    }

    /// Ids of pending reservations whose `expires_at` is at or before `now`, oldest first.
    pub async fn expired_pending(
        &self,
        now: UnixMs,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.backend.expired_pending(now, limit).await
    }

    pub async fn reservation(&self, id: &str) -> Result<Option<ReservationRecord>, StoreError> {
        self.inner.backend.reservation(id).await
    }

    /// Number of reservations still pending.
    pub async fn pending_count(&self) -> Result<i64, StoreError> {
        self.inner.backend.pending_count().await
    }

    pub async fn usage(&self, f: UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        self.inner.backend.usage(f).await
    }

    pub async fn conversation(
        &self,
        account: &str,
        agent_id: &str,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner.backend.conversation(account, agent_id, id).await
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
        self.inner
            .backend
            .list_conversations(account, agent_id, archived, before, limit)
            .await
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
        self.inner
            .backend
            .history(account, agent_id, conversation_id, before_seq, limit)
            .await
    }

    /// Unread assistant messages of an account with an agent, oldest first, after `after`.
    pub async fn inbox(
        &self,
        account: &str,
        agent_id: &str,
        after: Option<After>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner
            .backend
            .inbox(account, agent_id, after, limit)
            .await
    }

    /// Usage matching `f` per agent and per `bucket_ms`-long bucket (by the request's start),
    /// oldest first; buckets without requests are left out.
    pub async fn usage_buckets(
        &self,
        f: UsageFilter,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        self.inner.backend.usage_buckets(f, bucket_ms.max(1)).await
    }

    /// Balance, grants, posted charges and pending reservations of every account.
    pub async fn account_sums(&self) -> Result<Vec<AccountSums>, StoreError> {
        self.inner.backend.account_sums().await
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
