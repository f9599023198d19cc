//! What the store reads and writes: records, write ops and their outcomes. Shared by both
//! backends; nothing here knows SQL.

use super::transcripts::{ConversationOutcome, ConversationWrite};
use super::{StoreError, UnixMs};

/// The most millicredits an account may hold (`credits::MAX_BALANCE_CREDITS`): a grant past
/// it is refused (far below where integer millicredits would overflow).
pub const MAX_BALANCE_MILLI: i64 = 1_000_000_000_000_000_000;

/// Why a grant past [`MAX_BALANCE_MILLI`] is refused.
pub(crate) const BALANCE_LIMIT: &str =
    "the balance would exceed 1e15 credits (MAX_BALANCE_CREDITS)";

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
    /// Nobody waits for it (a stream's settlement at its end): the writer may hold it back
    /// briefly so that it shares the next commit instead of paying an fsync of its own.
    pub lazy: bool,
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
    /// Ops nobody waits for, which may wait briefly for company in the next commit (SQLite's
    /// writer, PostgreSQL's batcher; [`LINGER`]): a stream's settlement, a keepalive's
    /// extension.
    /// Their durability is what it was (a queued settlement lost at `kill -9` is recovered to
    /// its fallback); what changes is that an idle writer does not pay an fsync for them alone
    /// when the next request's reservation is about to come.
    pub(crate) fn may_linger(&self) -> bool {
        matches!(
            self,
            WriteOp::Settle(SettleRequest { lazy: true, .. }, _)
                | WriteOp::Extend { done: None, .. }
        )
    }

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

/// How long a batch of [`WriteOp::may_linger`] ops waits for an op that someone awaits
/// (typically the next request's reservation) before it is committed alone: the SQLite
/// writer's default (`SqliteOptions::linger`) and the PostgreSQL batcher's.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

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
pub struct WriteQueue(pub(crate) std::sync::mpsc::Sender<Msg>);

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
