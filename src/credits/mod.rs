//! Prepaid credits as a two-phase ledger: reserve before the backend is called, settle once.
//!
//! Design. The store is the authority: a reservation is a conditional
//! `UPDATE accounts SET balance = balance - r WHERE id = a AND balance >= r` plus a `pending`
//! reservation row, applied by the store's single writer inside a group-committed transaction,
//! so however many requests race (in this process, the CLI, or other replicas) the balance
//! never goes below zero (a `CHECK (balance >= 0)` backs it). `reserve` returns only after that
//! commit. In front of it sits an in-memory estimate per account
//! (`committed − in-flight reservations + in-flight refunds`, refreshed by every commit that
//! touches the account): while it is fresh (< 1 s) and says the balance cannot cover a request,
//! the request is refused at once with no store round trip. The estimate only ever refuses
//! early; it never admits on its own.
//!
//! Settling posts the charge (clamped to `[0, reserved]`) and returns the rest, exactly once:
//! the store only settles a row still `pending`, and [`Reservation`] settles at most once by
//! construction (`settle*` consume it, `Drop` settles what was not). A settlement from `Drop`
//! is enqueued without waiting; the writer retries it until it commits. After a crash,
//! [`Ledger::recover`] settles every expired pending reservation to its fallback (base cost).

mod lease;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

pub use lease::{LeaseAccount, LeaseBook, LeaseConfig};

use crate::idempotency::Idempotency;
use crate::store::{
    now_ms, Done, NewGrant, NewReservation, ReserveOutcome, SettleOutcome, SettleRequest, Store,
    StoreError, StoreEvent, UnixMs, WriteOp, WriteQueue,
};

/// Millicredits per credit: amounts are integers internally, f64 credits at the API edge.
pub const MILLI: i64 = 1000;

/// The most credits one grant may add (CLI `credits grant`, admin API).
pub const MAX_GRANT_CREDITS: f64 = 1e12;

/// The most credits an account may hold: a grant past it is refused (far below where the
/// ledger's integer millicredits would overflow).
pub const MAX_BALANCE_CREDITS: f64 = 1e15;

/// [`MAX_BALANCE_CREDITS`] in millicredits, as the store checks it.
pub const MAX_BALANCE_MILLI: i64 = crate::store::MAX_BALANCE_MILLI;

/// Credits to millicredits, rounded; NaN is 0 and out-of-range values saturate.
pub fn to_milli(credits: f64) -> i64 {
    if credits.is_nan() {
        return 0;
    }
    // `as` saturates for floats.
    (credits * MILLI as f64).round() as i64
}

/// Millicredits to credits.
pub fn from_milli(mc: i64) -> f64 {
    mc as f64 / MILLI as f64
}

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("insufficient credits: balance {balance}, needed {needed}")]
    Insufficient { balance: f64, needed: f64 },
    #[error("invalid amount: {0}")]
    InvalidAmount(&'static str),
    #[error("ledger invariant violated: {0}")]
    Invariant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ledger settings (`[store]` in the config).
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// A reservation not settled within this is settled by recovery to its fallback.
    pub reservation_timeout: Duration,
    /// An in-flight idempotent request older than this is considered abandoned.
    pub idempotency_timeout: Duration,
    /// A stored idempotent answer older than this is deleted (`[store] idempotency_ttl_s`).
    pub idempotency_ttl: Duration,
    /// How long the in-memory balance estimate may refuse without asking the store.
    pub estimate_freshness: Duration,
    /// Credit lease mode (PostgreSQL only): serve from blocks of credits held in memory.
    pub lease: Option<LeaseConfig>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            reservation_timeout: Duration::from_secs(900),
            idempotency_timeout: Duration::from_secs(900),
            idempotency_ttl: Duration::from_secs(86_400),
            estimate_freshness: Duration::from_secs(1),
            lease: None,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// In-memory view of one account's balance, in millicredits.
struct Estimate {
    /// Balance as of the last commit that touched the account.
    committed: AtomicI64,
    /// Reservations enqueued but not yet committed.
    reserving: AtomicI64,
    /// Refunds of settlements enqueued but not yet committed.
    refunding: AtomicI64,
    /// When `committed` was last read from a commit; 0 = never (not trusted).
    refreshed_ms: AtomicI64,
}

impl Estimate {
    fn unknown() -> Estimate {
        Estimate {
            committed: AtomicI64::new(0),
            reserving: AtomicI64::new(0),
            refunding: AtomicI64::new(0),
            refreshed_ms: AtomicI64::new(0),
        }
    }

    fn observe(&self, balance: i64) {
        self.committed.store(balance, Ordering::Release);
        self.refreshed_ms.store(now_ms(), Ordering::Release);
    }
}

struct LedgerInner {
    store: Store,
    queue: WriteQueue,
    cfg: LedgerConfig,
    /// Shared with writer callbacks, which refresh estimates in commit order.
    estimates: Arc<DashMap<String, Arc<Estimate>>>,
    /// Lease mode: the blocks of credits this process holds.
    leases: Option<Arc<LeaseBook>>,
    idempotency: Idempotency,
}

/// The credit ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

/// What `reserve` needs. `amount` is the base cost plus the usage cap; `fallback` (clamped to
/// `[0, amount]`) is what is charged if the request never reports usage (normally the base cost).
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    pub account: &'a str,
    pub key_id: &'a str,
    pub agent_id: &'a str,
    pub request_id: &'a str,
    pub amount: f64,
    pub fallback: f64,
}

/// What settling did (credits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settlement {
    pub charged: f64,
    pub refunded: f64,
}

impl Ledger {
    pub fn new(store: Store, cfg: LedgerConfig) -> Ledger {
        let estimates = Arc::new(DashMap::new());
        if let (Ok(rt), Some(events)) = (tokio::runtime::Handle::try_current(), store.subscribe()) {
            rt.spawn(follow_events(Arc::downgrade(&estimates), events));
        }
        let leases = cfg.lease.map(|l| LeaseBook::new(store.clone(), l));
        let idempotency =
            Idempotency::new(store.clone(), cfg.idempotency_timeout, cfg.idempotency_ttl);
        Ledger {
            inner: Arc::new(LedgerInner {
                idempotency,
                queue: store.queue(),
                store,
                cfg,
                estimates,
                leases,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.inner.cfg
    }

    fn estimate(&self, account: &str) -> Arc<Estimate> {
        if let Some(e) = self.inner.estimates.get(account) {
            return Arc::clone(e.value());
        }
        Arc::clone(
            self.inner
                .estimates
                .entry(account.to_owned())
                .or_insert_with(|| Arc::new(Estimate::unknown()))
                .value(),
        )
    }

    /// The in-memory part of a reservation: the fast refusal and the enqueue. The returned
    /// [`PendingReservation`] resolves once the reservation is durable. Dropping it early is safe:
    /// a reservation that commits after its waiter left is voided.
    pub fn admit(&self, req: &ReserveRequest<'_>) -> Result<PendingReservation, CreditError> {
        if !req.amount.is_finite() || req.amount < 0.0 {
            return Err(CreditError::InvalidAmount(
                "reservation must be finite and >= 0",
            ));
        }
        let amount = to_milli(req.amount);
        let fallback = to_milli(req.fallback).clamp(0, amount);
        let est = self.estimate(req.account);
        let now = now_ms();
        let reserving = est.reserving.fetch_add(amount, Ordering::AcqRel) + amount;
        let available = est.committed.load(Ordering::Acquire) - reserving
            + est.refunding.load(Ordering::Acquire);
        let fresh =
            now - est.refreshed_ms.load(Ordering::Acquire) < ms(self.inner.cfg.estimate_freshness);
        if available < 0 && fresh {
            est.reserving.fetch_sub(amount, Ordering::AcqRel);
            return Err(CreditError::Insufficient {
                balance: from_milli((available + amount).max(0)),
                needed: req.amount,
            });
        }
        let row = NewReservation {
            id: req.request_id.to_owned(),
            account: req.account.to_owned(),
            key_id: req.key_id.to_owned(),
            agent_id: req.agent_id.to_owned(),
            reserved: amount,
            fallback,
            created_at: now,
            expires_at: now.saturating_add(ms(self.inner.cfg.reservation_timeout)),
        };
        let (tx, rx) = oneshot::channel();
        let queue = self.inner.queue.clone();
        let id = row.id.clone();
        let cb_est = Arc::clone(&est);
        let done = Box::new(move |r: Result<ReserveOutcome, StoreError>| {
            // Lower `reserving` before raising `committed`: in between, the estimate errs high,
            // which only sends a request to the store; it never refuses one wrongly.
            cb_est.reserving.fetch_sub(amount, Ordering::AcqRel);
            if let Ok(
                ReserveOutcome::Reserved { balance_after: b }
                | ReserveOutcome::Insufficient { balance: b },
            ) = r
            {
                cb_est.observe(b);
            }
            if let Err(Ok(ReserveOutcome::Reserved { .. })) = tx.send(r) {
                // Nobody is waiting (the request went away): the backend was never called.
                let void = SettleRequest {
                    id,
                    charge: Some(0),
                    now: now_ms(),
                    expired_before: None,
                    lazy: false,
                };
                cb_est.refunding.fetch_add(amount, Ordering::AcqRel);
                let done = settle_callback(Arc::clone(&cb_est), amount, None);
                if queue.submit(WriteOp::Settle(void, Some(done))).is_err() {
                    cb_est.refunding.fetch_sub(amount, Ordering::AcqRel);
                    tracing::error!("store closed; abandoned reservation left to recovery");
                }
            }
        });
        if let Err(e) = self.inner.queue.submit(WriteOp::Reserve(row, done)) {
            est.reserving.fetch_sub(amount, Ordering::AcqRel);
            return Err(e.into());
        }
        Ok(PendingReservation {
            rx,
            guard: Some(Reservation {
                ledger: self.clone(),
                est,
                id: req.request_id.to_owned(),
                account: req.account.to_owned(),
                reserved: amount,
                fallback,
                charge: Arc::new(AtomicI64::new(UNSET)),
                settled: true, // armed once durable
                lease: None,
            }),
            needed: req.amount,
        })
    }

    /// Reserves `amount` credits for one request and returns once the reservation is durable.
    /// Too little balance: [`CreditError::Insufficient`] (402), and nothing was written.
    pub async fn reserve(&self, req: ReserveRequest<'_>) -> Result<Reservation, CreditError> {
        match &self.inner.leases {
            None => self.admit(&req)?.durable().await,
            Some(book) => self.reserve_from_lease(book, &req).await,
        }
    }

    /// Lease mode: the reservation comes from this process's lease on the account (topped up
    /// from the balance when short), without a store round trip when the lease holds it.
    async fn reserve_from_lease(
        &self,
        book: &LeaseBook,
        req: &ReserveRequest<'_>,
    ) -> Result<Reservation, CreditError> {
        if !req.amount.is_finite() || req.amount < 0.0 {
            return Err(CreditError::InvalidAmount(
                "reservation must be finite and >= 0",
            ));
        }
        let amount = to_milli(req.amount);
        let fallback = to_milli(req.fallback).clamp(0, amount);
        match book.reserve(req.account, amount).await? {
            lease::LeaseAdmit::Reserved(account) => Ok(Reservation {
                ledger: self.clone(),
                est: Arc::new(Estimate::unknown()),
                id: req.request_id.to_owned(),
                account: req.account.to_owned(),
                reserved: amount,
                fallback,
                charge: Arc::new(AtomicI64::new(UNSET)),
                settled: false,
                lease: Some(LeaseHold {
                    account,
                    key_id: req.key_id.to_owned(),
                    agent_id: req.agent_id.to_owned(),
                }),
            }),
            lease::LeaseAdmit::Insufficient { balance } => Err(CreditError::Insufficient {
                balance: from_milli(balance.max(0)),
                needed: req.amount,
            }),
        }
    }

    /// Lease mode: posts what was used and returns the rest of every lease to the balance
    /// (on shutdown, after the drain). Returns the credits returned; 0 without lease mode.
    pub async fn release_leases(&self) -> Result<f64, CreditError> {
        match &self.inner.leases {
            None => Ok(0.0),
            Some(book) => Ok(from_milli(book.release_all().await?)),
        }
    }

    /// Adds credits to an account (creating it). Returns the new balance.
    pub async fn grant(
        &self,
        account: &str,
        credits: f64,
        memo: Option<&str>,
    ) -> Result<f64, CreditError> {
        if !credits.is_finite() || to_milli(credits) <= 0 {
            return Err(CreditError::InvalidAmount(
                "grant must be a finite number of credits > 0",
            ));
        }
        if credits > MAX_GRANT_CREDITS {
            return Err(CreditError::InvalidAmount(
                "grant must be at most 1e12 credits (MAX_GRANT_CREDITS)",
            ));
        }
        let grant = NewGrant {
            account: account.to_owned(),
            amount: to_milli(credits),
            memo: memo.map(str::to_owned),
            now: now_ms(),
        };
        let (tx, rx) = oneshot::channel();
        let estimates = Arc::clone(&self.inner.estimates);
        let account = account.to_owned();
        let done: Done<i64> = Box::new(move |r| {
            if let (Ok(balance), Some(e)) = (&r, estimates.get(&account)) {
                e.observe(*balance);
            }
            let _ = tx.send(r);
        });
        self.inner.queue.submit(WriteOp::Grant(grant, done))?;
        match rx.await.map_err(|_| StoreError::Closed)? {
            Ok(balance) => Ok(from_milli(balance)),
            Err(StoreError::Limit(what)) => Err(CreditError::InvalidAmount(what)),
            Err(e) => Err(e.into()),
        }
    }

    /// The committed balance (0 for an unknown account).
    pub async fn balance(&self, account: &str) -> Result<f64, CreditError> {
        Ok(from_milli(
            self.inner.store.balance(account).await?.unwrap_or(0),
        ))
    }

    /// Waits until every settlement enqueued so far is durable.
    pub async fn flush(&self) -> Result<(), CreditError> {
        Ok(self.inner.store.flush().await?)
    }

    /// Settles every pending reservation that expired at or before `now` to its fallback.
    /// Returns how many it settled. Safe to run concurrently with live traffic and on several
    /// replicas: a reservation extended meanwhile, or settled by its owner, is left alone.
    pub async fn recover(&self, now: UnixMs) -> Result<usize, CreditError> {
        let returned = self.inner.store.recover_leases(now).await?;
        if returned > 0 {
            tracing::info!(
                credits = from_milli(returned),
                "returned expired credit leases to their accounts"
            );
        }
        let mut settled = 0;
        loop {
            let ids = self.inner.store.expired_pending(now, 512).await?;
            if ids.is_empty() {
                return Ok(settled);
            }
            let mut waits = Vec::with_capacity(ids.len());
            for id in ids {
                let (tx, rx) = oneshot::channel();
                let req = SettleRequest {
                    id,
                    charge: None,
                    now: now_ms(),
                    expired_before: Some(now),
                    lazy: false,
                };
                let estimates = Arc::clone(&self.inner.estimates);
                let done: Done<SettleOutcome> = Box::new(move |r| {
                    if let Ok(SettleOutcome::Settled {
                        account,
                        balance_after,
                        ..
                    }) = &r
                    {
                        if let Some(e) = estimates.get(account) {
                            e.observe(*balance_after);
                        }
                    }
                    let _ = tx.send(r);
                });
                self.inner.queue.submit(WriteOp::Settle(req, Some(done)))?;
                waits.push(rx);
            }
            let mut progressed = false;
            for rx in waits {
                let outcome = rx.await.map_err(|_| StoreError::Closed)??;
                if let SettleOutcome::Settled {
                    account, charged, ..
                } = outcome
                {
                    tracing::info!(
                        %account,
                        charged = from_milli(charged),
                        "recovered an expired reservation"
                    );
                    settled += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(settled);
            }
        }
    }

    /// Runs [`Ledger::recover`] now and then every `interval`, until the task is aborted.
    pub fn spawn_recovery(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = ledger.recover(now_ms()).await {
                    tracing::warn!(error = %e, "reservation recovery failed");
                }
            }
        })
    }

    /// Checks, from one snapshot, for every account: balance ≥ 0 and
    /// balance == grants − posted charges − pending reservations. Flushes first.
    pub async fn check_invariants(&self) -> Result<(), CreditError> {
        self.flush().await?;
        let mut bad = Vec::new();
        for s in self.inner.store.account_sums().await? {
            if s.balance < 0 || s.balance != s.granted - s.posted - s.pending {
                bad.push(format!(
                    "{}: balance {} != granted {} - posted {} - pending {}",
                    s.account, s.balance, s.granted, s.posted, s.pending
                ));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(CreditError::Invariant(bad.join("; ")))
        }
    }

    /// Drops the balance estimates of accounts that are idle: no reservation of theirs is
    /// held or in the writer's queue, and the estimate is too old to refuse anything (the next
    /// request asks the store, as it would have). Returns how many it dropped.
    pub fn prune(&self) -> usize {
        let estimates = &self.inner.estimates;
        let stale_before = now_ms() - ms(self.inner.cfg.estimate_freshness);
        let before = estimates.len();
        estimates.retain(|_, e| {
            Arc::strong_count(e) > 1
                || e.reserving.load(Ordering::Acquire) != 0
                || e.refunding.load(Ordering::Acquire) != 0
                || e.refreshed_ms.load(Ordering::Acquire) > stale_before
        });
        let dropped = before.saturating_sub(estimates.len());
        estimates.shrink_to_fit();
        dropped
    }

    /// Accounts with a balance estimate now.
    pub fn estimated_accounts(&self) -> usize {
        self.inner.estimates.len()
    }

    /// The idempotency records of this ledger's store, with the `[store]` timeouts.
    pub fn idempotency(&self) -> &Idempotency {
        &self.inner.idempotency
    }
}

/// Credits granted through another replica (PostgreSQL `NOTIFY`): stop trusting that
/// account's estimate, so a request it would have refused asks the store instead.
async fn follow_events(
    weak: std::sync::Weak<DashMap<String, Arc<Estimate>>>,
    mut events: tokio::sync::broadcast::Receiver<StoreEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = events.recv().await;
        let Some(estimates) = weak.upgrade() else {
            return;
        };
        match event {
            Ok(StoreEvent::CreditsChanged(account)) => {
                if let Some(e) = estimates.get(&account) {
                    e.refreshed_ms.store(0, Ordering::Release);
                }
            }
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                for e in estimates.iter() {
                    e.refreshed_ms.store(0, Ordering::Release);
                }
            }
            Ok(StoreEvent::KeyRevoked(_) | StoreEvent::ConfigApplied { .. }) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

fn settle_callback(
    est: Arc<Estimate>,
    refund_estimate: i64,
    tx: Option<oneshot::Sender<Result<SettleOutcome, StoreError>>>,
) -> Done<SettleOutcome> {
    Box::new(move |r| {
        // Raise `committed` before lowering `refunding` (see `admit`).
        if let Ok(SettleOutcome::Settled { balance_after, .. }) = &r {
            est.observe(*balance_after);
        }
        est.refunding.fetch_sub(refund_estimate, Ordering::AcqRel);
        if let Err(e) = &r {
            tracing::error!(error = %e, "settlement failed");
        }
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    })
}

/// A reservation on its way to the store. `durable().await` yields the [`Reservation`].
pub struct PendingReservation {
    rx: oneshot::Receiver<Result<ReserveOutcome, StoreError>>,
    guard: Option<Reservation>,
    needed: f64,
}

impl PendingReservation {
    /// Waits for the reservation's commit.
    pub async fn durable(mut self) -> Result<Reservation, CreditError> {
        let outcome = (&mut self.rx).await.map_err(|_| StoreError::Closed)?;
        let mut guard = self.guard.take().ok_or(StoreError::Closed)?;
        match outcome? {
            ReserveOutcome::Reserved { .. } => {
                guard.settled = false;
                Ok(guard)
            }
            ReserveOutcome::Insufficient { balance } => Err(CreditError::Insufficient {
                balance: from_milli(balance),
                needed: self.needed,
            }),
        }
    }
}

impl Drop for PendingReservation {
    /// The waiter left before `durable` finished (client gone, future cancelled). If the
    /// reservation already committed, void it here; otherwise the writer's callback, finding
    /// nobody to answer, voids it.
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        self.rx.close();
        if let Ok(Ok(ReserveOutcome::Reserved { .. })) = self.rx.try_recv() {
            guard.charge.store(0, Ordering::Release);
            guard.settled = false;
        }
    }
}

const UNSET: i64 = i64::MIN;

/// Clamps a reported charge to `[0, reserved]`, logging anything out of range (usage reported
/// by a backend is untrusted input).
fn clamp_charge(credits: f64, reserved: i64, id: &str) -> i64 {
    let mc = to_milli(credits);
    if !credits.is_finite() || mc < 0 || mc > reserved {
        tracing::warn!(
            request_id = %id,
            reported = credits,
            cap = from_milli(reserved),
            "reported usage out of range; clamped"
        );
    }
    mc.clamp(0, reserved)
}

/// A shareable handle to set the charge of a reservation as usage is metered.
#[derive(Clone, Debug)]
pub struct ChargeHandle {
    charge: Arc<AtomicI64>,
    reserved: i64,
}

impl ChargeHandle {
    /// Sets what will be charged (credits), clamped to `[0, reserved]`.
    pub fn set(&self, credits: f64) {
        self.charge
            .store(clamp_charge(credits, self.reserved, "-"), Ordering::Release);
    }

    /// The charge set so far, if any.
    pub fn get(&self) -> Option<f64> {
        match self.charge.load(Ordering::Acquire) {
            UNSET => None,
            mc => Some(from_milli(mc)),
        }
    }

    /// The reservation's amount: the hard limit for metering.
    pub fn reserved(&self) -> f64 {
        from_milli(self.reserved)
    }
}

/// A durable reservation, settled exactly once: by `settle_now`/`settle`, or by `Drop` with the
/// last charge set (or the fallback if none was).
pub struct Reservation {
    ledger: Ledger,
    est: Arc<Estimate>,
    id: String,
    account: String,
    reserved: i64,
    fallback: i64,
    charge: Arc<AtomicI64>,
    settled: bool,
    /// Lease mode: settled into this lease in memory instead of the store.
    lease: Option<LeaseHold>,
}

/// Extends one reservation's expiry through the ledger's store; see
/// [`Reservation::extender`]. In lease mode there is no reservation row (the lease, renewed by
/// its sync, holds the credits), so extending does nothing.
#[derive(Clone, Debug)]
pub struct ReservationExtender {
    store: Store,
    id: String,
    leased: bool,
}

impl ReservationExtender {
    /// The reservation's request id.
    pub fn request_id(&self) -> &str {
        &self.id
    }

    /// Pushes the expiry to now + `timeout`. Returns false if the reservation is no longer
    /// pending; true without any store write in lease mode.
    pub async fn extend(&self, timeout: Duration) -> Result<bool, StoreError> {
        if self.leased {
            return Ok(true);
        }
        let expires_at = now_ms().saturating_add(ms(timeout));
        self.store.extend(&self.id, expires_at).await
    }

    /// Whether extending writes nothing (lease mode).
    pub fn is_noop(&self) -> bool {
        self.leased
    }
}

struct LeaseHold {
    account: Arc<LeaseAccount>,
    key_id: String,
    agent_id: String,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl Reservation {
    pub fn request_id(&self) -> &str {
        &self.id
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The amount held (credits): the hard limit for what the request may use.
    pub fn reserved(&self) -> f64 {
        from_milli(self.reserved)
    }

    /// Sets what will be charged, clamped to `[0, reserved]`.
    pub fn set_charge(&self, credits: f64) {
        self.charge.store(
            clamp_charge(credits, self.reserved, &self.id),
            Ordering::Release,
        );
    }

    /// A handle to set the charge from elsewhere (e.g. the response body's meter).
    pub fn meter(&self) -> ChargeHandle {
        ChargeHandle {
            charge: Arc::clone(&self.charge),
            reserved: self.reserved,
        }
    }

    /// Pushes the expiry to now + `reservation_timeout` (a live stream calls this
    /// periodically). Returns false if the reservation is no longer pending. Does nothing in
    /// lease mode.
    pub async fn extend(&self) -> Result<bool, CreditError> {
        Ok(self
            .extender()
            .extend(self.ledger.inner.cfg.reservation_timeout)
            .await?)
    }

    /// A handle that extends this reservation from elsewhere (the keep-alive timer of a
    /// stream), without holding the reservation itself.
    pub fn extender(&self) -> ReservationExtender {
        ReservationExtender {
            store: self.ledger.inner.store.clone(),
            id: self.id.clone(),
            leased: self.lease.is_some(),
        }
    }

    fn current_charge(&self) -> i64 {
        match self.charge.load(Ordering::Acquire) {
            UNSET => self.fallback,
            mc => mc,
        }
    }

    /// Enqueues the settlement; returns what it asked for.
    fn enqueue(
        &mut self,
        charge: i64,
        tx: Option<oneshot::Sender<Result<SettleOutcome, StoreError>>>,
    ) -> Settlement {
        self.settled = true;
        let charge = charge.clamp(0, self.reserved);
        let refund = self.reserved - charge;
        if let Some(hold) = &self.lease {
            hold.account
                .settle(self.reserved, charge, &hold.key_id, &hold.agent_id);
            if let Some(tx) = tx {
                let _ = tx.send(Ok(SettleOutcome::NotPending));
            }
            return Settlement {
                charged: from_milli(charge),
                refunded: from_milli(refund),
            };
        }
        self.est.refunding.fetch_add(refund, Ordering::AcqRel);
        let req = SettleRequest {
            id: self.id.clone(),
            charge: Some(charge),
            now: now_ms(),
            expired_before: None,
            lazy: tx.is_none(),
        };
        let done = settle_callback(Arc::clone(&self.est), refund, tx);
        if let Err(e) = self
            .ledger
            .inner
            .queue
            .submit(WriteOp::Settle(req, Some(done)))
        {
            // Only when the store is shutting down; recovery will settle it to the fallback.
            self.est.refunding.fetch_sub(refund, Ordering::AcqRel);
            tracing::error!(request_id = %self.id, error = %e, "settlement not enqueued");
        }
        Settlement {
            charged: from_milli(charge),
            refunded: from_milli(refund),
        }
    }

    /// Settles now with this charge (credits, clamped), without waiting for durability.
    pub fn settle_now(mut self, credits: f64) -> Settlement {
        let charge = clamp_charge(credits, self.reserved, &self.id);
        self.enqueue(charge, None)
    }

    /// Settles with this charge and waits until it is durable.
    pub async fn settle(mut self, credits: f64) -> Result<Settlement, CreditError> {
        let charge = clamp_charge(credits, self.reserved, &self.id);
        let (tx, rx) = oneshot::channel();
        let asked = self.enqueue(charge, Some(tx));
        if self.lease.is_some() {
            return Ok(asked);
        }
        match rx.await.map_err(|_| StoreError::Closed)?? {
            SettleOutcome::Settled {
                charged, reserved, ..
            } => Ok(Settlement {
                charged: from_milli(charged),
                refunded: from_milli(reserved - charged),
            }),
            // Settled elsewhere first (recovery after expiry): nothing more was charged.
            SettleOutcome::NotPending => Ok(Settlement {
                charged: 0.0,
                refunded: 0.0,
            }),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let charge = self.current_charge();
            self.enqueue(charge, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteOptions;

    fn req<'a>(id: &'a str, amount: f64) -> ReserveRequest<'a> {
        ReserveRequest {
            account: "acme",
            key_id: "k",
            agent_id: "a",
            request_id: id,
            amount,
            fallback: 1.0,
        }
    }

    /// After any mix of operations, once the queue is drained, the in-memory estimate equals
    /// the committed balance and nothing is left counted as in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn estimate_converges_to_the_store() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_sqlite(dir.path().join("e.db"), SqliteOptions::default())
            .await
            .expect("store");
        let ledger = Ledger::new(store.clone(), LedgerConfig::default());
        ledger.grant("acme", 20.0, None).await.expect("grant");
        let a = ledger.reserve(req("a", 5.0)).await.expect("a");
        let b = ledger.reserve(req("b", 5.0)).await.expect("b");
        drop(ledger.admit(&req("c", 5.0)).expect("c")); // voided
                                                        // The estimate is fresh (a and b committed): refused in memory.
        assert!(matches!(
            ledger.admit(&req("d", 50.0)),
            Err(CreditError::Insufficient { .. })
        ));
        a.set_charge(2.0);
        drop(a);
        b.settle_now(7.0);
        ledger.grant("acme", 1.0, None).await.expect("grant");
        ledger.flush().await.expect("flush");
        ledger.flush().await.expect("flush voids");
        let est = ledger.estimate("acme");
        let db = store.balance("acme").await.expect("b").expect("exists");
        assert_eq!(db, 21_000 - 2_000 - 5_000);
        assert_eq!(est.reserving.load(Ordering::Acquire), 0);
        assert_eq!(est.refunding.load(Ordering::Acquire), 0);
        assert_eq!(est.committed.load(Ordering::Acquire), db);
        // Fresh and short: refused without a store round trip (nothing is written).
        let before = store.pending_count().await.expect("n");
        assert!(matches!(
            ledger.admit(&req("e", 100.0)),
            Err(CreditError::Insufficient { .. })
        ));
        assert_eq!(store.pending_count().await.expect("n"), before);
        assert!(store.reservation("e").await.expect("r").is_none());
        ledger.check_invariants().await.expect("sums");
    }

    #[test]
    fn milli_conversions() {
        assert_eq!(to_milli(1.0), 1000);
        assert_eq!(to_milli(0.0004), 0);
        assert_eq!(to_milli(f64::NAN), 0);
        assert_eq!(to_milli(f64::INFINITY), i64::MAX);
        assert_eq!(from_milli(1500), 1.5);
    }
}
