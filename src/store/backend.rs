//! The one interface both stores implement ([`StoreBackend`]); [`super::Store`] is a cheap
//! handle on an `Arc<dyn StoreBackend>` and adds nothing backend-specific.
//!
//! Writes are not methods: every write is a [`WriteOp`](super::WriteOp) sent through the
//! backend's [`WriteQueue`], so that callers that must not wait (a settlement from a `Drop`)
//! and callers that wait for durability use the same path. Reads are async methods. What only
//! a shared store does (events, config announcements, credit leases) has a default for a
//! store that is not shared.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::broadcast;

use super::transcripts::{After, ConversationRecord, MessageRecord};
use super::{
    AccountSums, KeyRecord, LeaseTake, LeaseTaken, LeaseUsage, ReservationRecord, StoreError,
    StoreEvent, UnixMs, UsageBucket, UsageFilter, UsageRow, WriteQueue,
};

/// What a backend's async method returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A future that is ready at once.
pub(crate) fn ready<'a, T: Send + 'a>(v: Result<T, StoreError>) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

/// A store: SQLite (`sqlite/`) or PostgreSQL (`postgres/`).
pub(crate) trait StoreBackend: Send + Sync + 'static {
    /// Where writes go.
    fn queue(&self) -> WriteQueue;

    /// Whether replicas share this store through a database server.
    fn is_shared(&self) -> bool {
        false
    }

    /// Events announced by other processes sharing the store; `None` where there is no such
    /// channel (readers poll).
    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        None
    }

    /// Tells the other replicas that this one applied the config with this SHA-256 (hex).
    fn announce_config<'a>(&'a self, _sha256: &'a str) -> BoxFuture<'a, ()> {
        ready(Ok(()))
    }

    // ---- credits, keys -----------------------------------------------------------------

    fn get_key<'a>(&'a self, public_id: &'a str) -> BoxFuture<'a, Option<KeyRecord>>;
    fn list_keys<'a>(&'a self, account: Option<&'a str>) -> BoxFuture<'a, Vec<KeyRecord>>;
    /// A counter bumped by every revocation, by any process sharing the store.
    fn revocation_counter(&self) -> BoxFuture<'_, u64>;
    fn balance<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Option<i64>>;
    /// Ids of pending reservations whose `expires_at` is at or before `now`, oldest first.
    fn expired_pending(&self, now: UnixMs, limit: u32) -> BoxFuture<'_, Vec<String>>;
    fn reservation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<ReservationRecord>>;
    fn pending_count(&self) -> BoxFuture<'_, i64>;
    fn usage(&self, f: UsageFilter) -> BoxFuture<'_, Vec<UsageRow>>;
    /// `bucket_ms` ≥ 1.
    fn usage_buckets(&self, f: UsageFilter, bucket_ms: i64) -> BoxFuture<'_, Vec<UsageBucket>>;
    /// From one snapshot.
    fn account_sums(&self) -> BoxFuture<'_, Vec<AccountSums>>;

    // ---- conversations -----------------------------------------------------------------

    fn conversation<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Option<ConversationRecord>>;
    fn list_conversations<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        archived: Option<bool>,
        before: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<ConversationRecord>>;
    fn history<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        conversation_id: &'a str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>>;
    fn inbox<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        after: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>>;

    // ---- credit leases (shared stores only) --------------------------------------------

    fn lease_take(&self, _t: LeaseTake) -> BoxFuture<'_, LeaseTaken> {
        ready(Err(LEASES_NEED_POSTGRES))
    }
    fn lease_sync<'a>(
        &'a self,
        _lease_id: &'a str,
        _account: &'a str,
        _usage: &'a [LeaseUsage],
        _now: UnixMs,
        _expires_at: UnixMs,
    ) -> BoxFuture<'a, bool> {
        ready(Err(LEASES_NEED_POSTGRES))
    }
    fn lease_release<'a>(&'a self, _lease_id: &'a str) -> BoxFuture<'a, i64> {
        ready(Err(LEASES_NEED_POSTGRES))
    }
    /// Returns every lease expired at `now` to its account; nothing to do without leases.
    fn recover_leases(&self, _now: UnixMs) -> BoxFuture<'_, i64> {
        ready(Ok(0))
    }
}

const LEASES_NEED_POSTGRES: StoreError =
    StoreError::Unsupported("credit leases need a PostgreSQL store");
