//! The policy steps of the pipeline: keys, scopes, rate limits, stream caps and credit
//! reservations, over one store. Their state lives here, outside any config snapshot.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::error::{GatewayError, Limit};
use crate::auth::{AuthError, Authenticator, KeyInfo, Scopes};
use crate::config::{AgentConfig, AgentCredits, Config, Rate, ReserveMode, StoreUrl};
use crate::credits::{
    CreditError, LeaseConfig, Ledger, LedgerConfig, Reservation, ReservationExtender,
    ReserveRequest,
};
use crate::fronts::{Api, ApiError};
use crate::limits::{Allowed, FleetLimiter, RateLimiter, RateQuota, SlotGuard, StreamSlots};
use crate::metrics::Metrics;
use crate::store::Store;

/// How often expired reservations are looked for (and settled to their base cost), at most:
/// a quarter of the reservation timeout when that is shorter, so that a reservation is not
/// left open much past its timeout.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(30);
const MIN_RECOVERY_INTERVAL: Duration = Duration::from_millis(100);

fn recovery_interval(reservation_timeout: Duration) -> Duration {
    (reservation_timeout / 4).clamp(MIN_RECOVERY_INTERVAL, RECOVERY_INTERVAL)
}

pub struct Policy {
    pub store: Store,
    pub auth: Authenticator,
    pub ledger: Ledger,
    limiter: Limiter,
    streams: StreamSlots,
    /// Limits for keys created without their own.
    key_rate: Option<RateQuota>,
    key_max_streams: Option<u32>,
    /// How often idle entries are pruned: the recovery's schedule.
    maintenance_interval: Duration,
}

/// Where rate limits are kept: in this process (governor), or in Redis for the whole fleet
/// (`[rate_limit] redis_url`).
pub enum Limiter {
    Local(RateLimiter),
    Fleet(FleetLimiter),
}

impl Limiter {
    async fn check(
        &self,
        key_id: &str,
        key_quota: Option<RateQuota>,
        agent_id: &str,
        agent_quota: Option<RateQuota>,
    ) -> Result<Allowed, crate::limits::RateLimited> {
        match self {
            Limiter::Local(l) => l.check(key_id, key_quota, agent_id, agent_quota),
            Limiter::Fleet(f) => f.check(key_id, key_quota, agent_id, agent_quota).await,
        }
    }

    /// Drops the local limiters of idle keys and agents (nothing to do in Redis, where they
    /// expire by themselves).
    fn prune(&self) -> usize {
        match self {
            Limiter::Local(l) => l.prune(),
            Limiter::Fleet(_) => 0,
        }
    }

    /// Keys and agents with a local limiter now (0 with Redis).
    pub fn tracked(&self) -> usize {
        match self {
            Limiter::Local(l) => l.tracked(),
            Limiter::Fleet(_) => 0,
        }
    }

    /// Checks admitted without a verdict because Redis was unavailable (0 for local limits).
    pub fn fail_open_count(&self) -> u64 {
        match self {
            Limiter::Local(_) => 0,
            Limiter::Fleet(f) => f.fail_open_count(),
        }
    }
}

/// Entries per key, agent or account, by map: what a clean-up pass dropped, or what is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub limiters: usize,
    pub stream_slots: usize,
    pub cached_keys: usize,
    pub estimates: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.limiters + self.stream_slots + self.cached_keys + self.estimates
    }
}

/// The account of requests on a front that requires no key.
pub const ANONYMOUS: &str = "anonymous";

/// A request admitted by every policy step: what must live as long as the request.
/// `key` and `reservation` are `None` on a front that requires no key.
pub struct Admission {
    pub key: Option<KeyInfo>,
    pub reservation: Option<Reservation>,
    /// Held while a stream is open (per key and per agent caps).
    pub slots: Vec<SlotGuard>,
    /// Rate-limit headers for the response.
    pub headers: http::HeaderMap,
    /// Where the reservation and its settlement are counted, once [`Admission::count_credits`]
    /// has been called.
    credit_metrics: Option<(Arc<Metrics>, Arc<str>)>,
}

impl Policy {
    /// Opens the store of `config`, runs crash recovery once, and starts its periodic run.
    pub async fn open(config: &Config) -> Result<Policy, String> {
        let url = match &config.store().url {
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // The store holds key hashes and the ledger: owner only (0700).
                    let mut builder = std::fs::DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder
                        .create(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                format!("sqlite://{}", path.display())
            }
            StoreUrl::SqliteMemory => {
                return Err(
                    "[store] url: the store needs a file (sqlite://PATH), so that the \
                            CLI and the server can share it"
                        .into(),
                )
            }
            StoreUrl::Postgres(url) => url.expose().to_owned(),
        };
        let store = Store::open(&url)
            .await
            .map_err(|e| format!("store {}: {e}", crate::store::redact(&url)))?;
        let ledger = Ledger::new(
            store.clone(),
            LedgerConfig {
                reservation_timeout: config.store().reservation_timeout,
                idempotency_ttl: config.store().idempotency_ttl,
                lease: lease_config(config, &store)?,
                // Other replicas' refunds do not reach this estimate: trust it for less long,
                // so that a request it refuses early is never refused for long.
                estimate_freshness: if store.is_shared() {
                    Duration::from_millis(250)
                } else {
                    LedgerConfig::default().estimate_freshness
                },
                ..LedgerConfig::default()
            },
        );
        match ledger.recover(crate::store::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(settled = n, "recovered reservations left open by a crash"),
            Err(e) => return Err(format!("store {}: recovery failed: {e}", store.url())),
        }
        ledger.spawn_recovery(recovery_interval(config.store().reservation_timeout));
        let defaults = &config.rate_limit().key_defaults;
        let limiter = match &config.rate_limit().redis_url {
            None => Limiter::Local(RateLimiter::new()),
            Some(url) => Limiter::Fleet(
                FleetLimiter::new(url.expose(), &config.rate_limit().key_prefix)
                    .map_err(|e| format!("[rate_limit] redis_url: {e}"))?,
            ),
        };
        Ok(Policy {
            auth: Authenticator::new(store.clone()),
            store,
            ledger,
            limiter,
            streams: StreamSlots::new(),
            key_rate: defaults.rate.and_then(quota),
            key_max_streams: defaults.max_streams,
            maintenance_interval: recovery_interval(config.store().reservation_timeout),
        })
    }

    /// Authenticates the request's key (401) and checks the chat scope (403).
    pub async fn authenticate(
        &self,
        api: Api,
        authorization: Option<&str>,
    ) -> Result<KeyInfo, GatewayError> {
        self.authenticate_for(api, authorization, Scopes::AGENTS_RUN)
            .await
    }

    /// Authenticates the request's key (401) and checks that it has `scope` (403).
    pub async fn authenticate_for(
        &self,
        api: Api,
        authorization: Option<&str>,
        scope: Scopes,
    ) -> Result<KeyInfo, GatewayError> {
        let key = self
            .auth
            .authenticate(authorization, api.bare_key_auth())
            .await
            .map_err(auth_error)?;
        if !key.has_scope(scope) {
            let name = scope.names().collect::<Vec<_>>().join(",");
            return Err(GatewayError::Auth(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key does not have the {name} scope"),
            )));
        }
        Ok(key)
    }

    /// Stream scope (403), rate limits (429), stream caps (429), then the credit reservation
    /// (402): the steps after validation, in SPEC §5's order. Without a key (an open front)
    /// only the agent's own limits apply.
    pub async fn admit(
        &self,
        key: Option<KeyInfo>,
        agent: &AgentConfig,
        stream: bool,
        request_id: &str,
    ) -> Result<Admission, GatewayError> {
        let Some(key) = key else {
            return self.admit_open(agent, stream).await;
        };
        stream_scope(Some(&key), stream)?;
        let limits = key.limits();
        let key_quota =
            RateQuota::from_parts(limits.rate_per_second, limits.rate_burst).or(self.key_rate);
        let agent_quota = agent.rate.and_then(quota);
        let allowed: Allowed = self
            .limiter
            .check(key.public_id(), key_quota, &agent.id, agent_quota)
            .await
            .map_err(rate_limited)?;
        let mut headers = http::HeaderMap::new();
        allowed.write_headers(&mut headers);
        let mut slots = Vec::new();
        if stream {
            if let Some(cap) = limits.max_streams.or(self.key_max_streams) {
                slots.push(
                    self.streams
                        .try_acquire(key.public_id(), cap)
                        .ok_or_else(|| too_many_streams("key"))?,
                );
            }
            if let Some(cap) = agent.max_concurrent_streams {
                slots.push(
                    self.streams
                        .try_acquire(&format!("agent\u{0}{}", agent.id), cap)
                        .ok_or_else(|| too_many_streams("agent"))?,
                );
            }
        }
        let reservation = self
            .reserve(&key, agent, request_id)
            .await
            .map_err(|e| match e {
                CreditError::Insufficient { balance, needed } => GatewayError::Credits(
                    ApiError::new(
                        StatusCode::PAYMENT_REQUIRED,
                        "insufficient_credits",
                        "insufficient credits",
                    )
                    .with_details(serde_json::json!({ "balance": balance, "needed": needed })),
                ),
                other => {
                    tracing::error!(error = %other, "credit reservation failed");
                    GatewayError::Credits(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the credit ledger is unavailable",
                    ))
                }
            })?;
        // Until the backend answers, a request that ends (refused later, backend unreachable,
        // client gone) is charged nothing; the answer's end sets the real charge. The store's
        // fallback (the base cost) is only for recovery after a crash.
        reservation.set_charge(0.0);
        Ok(Admission {
            key: Some(key),
            reservation: Some(reservation),
            slots,
            headers,
            credit_metrics: None,
        })
    }
}

impl Policy {
    /// Reserves what a chat with `agent` may cost (SPEC §4, §11): base cost + the usage cap,
    /// or with `reserve = "available"` as much of that as the account holds beyond the base
    /// cost. A refusal there says the base cost is what is needed.
    async fn reserve(
        &self,
        key: &KeyInfo,
        agent: &AgentConfig,
        request_id: &str,
    ) -> Result<Reservation, CreditError> {
        let credits = agent.credits;
        let request = |amount| ReserveRequest {
            account: key.account(),
            key_id: key.public_id(),
            agent_id: &agent.id,
            request_id,
            amount,
            fallback: credits.per_message,
        };
        let mut amount = credits.reservation();
        let mut result = self.ledger.reserve(request(amount)).await;
        if agent.reserve == ReserveMode::Available {
            // A refusal tells what the account holds; other requests may take some of it
            // meanwhile, so try again a few times with what is left.
            for _ in 0..3 {
                match result {
                    Err(CreditError::Insufficient { balance, .. })
                        if balance >= credits.per_message && balance < amount =>
                    {
                        amount = balance;
                        result = self.ledger.reserve(request(amount)).await;
                    }
                    _ => break,
                }
            }
            if let Err(CreditError::Insufficient { balance, .. }) = result {
                result = Err(CreditError::Insufficient {
                    balance,
                    needed: credits.per_message,
                });
            }
        }
        result
    }

    /// Starts the periodic clean-up (every `interval`, on the recovery's schedule): idle keys'
    /// and agents' limiters, stream-slot counters, cached keys and balance estimates are
    /// dropped, and expired idempotency records deleted, so that nothing held per key grows
    /// with the number of keys ever seen. Stops when the policy is dropped.
    pub fn spawn_maintenance(policy: &Arc<Policy>) -> tokio::task::JoinHandle<()> {
        let interval = policy.maintenance_interval;
        let weak = Arc::downgrade(policy);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(policy) = weak.upgrade() else { break };
                policy.maintain().await;
            }
        })
    }

    /// One clean-up pass (see [`Policy::spawn_maintenance`]).
    pub async fn maintain(&self) {
        let pruned = self.prune();
        if pruned.total() > 0 {
            tracing::debug!(?pruned, "idle entries pruned");
        }
        match self
            .ledger
            .idempotency()
            .expire(crate::store::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency records deleted"),
            Err(e) => tracing::warn!(error = %e, "idempotency expiry failed"),
        }
    }

    /// Drops what idle keys, agents and accounts hold in memory.
    pub fn prune(&self) -> Pruned {
        Pruned {
            limiters: self.limiter.prune(),
            stream_slots: self.streams.prune(),
            cached_keys: self.auth.prune(),
            estimates: self.ledger.prune(),
        }
    }

    /// Entries held in memory per key, agent or account now.
    pub fn tracked(&self) -> Pruned {
        Pruned {
            limiters: self.limiter.tracked(),
            stream_slots: self.streams.tracked_keys(),
            cached_keys: self.auth.cached(),
            estimates: self.ledger.estimated_accounts(),
        }
    }

    /// Where this gateway keeps its rate limits.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    async fn admit_open(
        &self,
        agent: &AgentConfig,
        stream: bool,
    ) -> Result<Admission, GatewayError> {
        let allowed = self
            .limiter
            .check(ANONYMOUS, None, &agent.id, agent.rate.and_then(quota))
            .await
            .map_err(rate_limited)?;
        let mut headers = http::HeaderMap::new();
        allowed.write_headers(&mut headers);
        let mut slots = Vec::new();
        if let (true, Some(cap)) = (stream, agent.max_concurrent_streams) {
            slots.push(
                self.streams
                    .try_acquire(&format!("agent\u{0}{}", agent.id), cap)
                    .ok_or_else(|| too_many_streams("agent"))?,
            );
        }
        Ok(Admission {
            key: None,
            reservation: None,
            slots,
            headers,
            credit_metrics: None,
        })
    }
}

impl Admission {
    pub fn account(&self) -> &str {
        self.key.as_ref().map_or(ANONYMOUS, KeyInfo::account)
    }

    /// The pricing this answer is metered and shown with: the agent's, its usage cap within
    /// what was reserved; free without a reservation (an open front).
    pub fn pricing(&self, credits: AgentCredits) -> AgentCredits {
        match &self.reservation {
            Some(r) => credits.within(r.reserved()),
            None => AgentCredits::FREE,
        }
    }

    /// Counts the reservation in `metrics` now (reserved) and at its settlement (charged,
    /// refunded), under the agent label `agent`.
    pub fn count_credits(&mut self, metrics: &Arc<Metrics>, agent: &Arc<str>) {
        if let Some(r) = &self.reservation {
            metrics.credits_reserved(agent, r.reserved());
            self.credit_metrics = Some((metrics.clone(), agent.clone()));
        }
    }

    /// Settles the reservation (exactly once: it is consumed) and frees the stream slots.
    /// Returns the credits charged.
    pub fn settle(mut self, credits: f64) -> f64 {
        self.settle_with(|_| credits)
    }

    fn settle_with(&mut self, charge: impl FnOnce(&Reservation) -> f64) -> f64 {
        let Some(reservation) = self.reservation.take() else {
            return 0.0;
        };
        let credits = charge(&reservation);
        let settlement = reservation.settle_now(credits);
        if let Some((metrics, agent)) = &self.credit_metrics {
            metrics.credits_settled(agent, settlement.charged, settlement.refunded);
        }
        settlement.charged
    }
}

impl Drop for Admission {
    /// Not settled explicitly (the request ended before the backend answered): settled at the
    /// charge set so far, which is 0 from admission on, as the reservation's own drop would.
    fn drop(&mut self) {
        self.settle_with(|r| r.meter().get().unwrap_or(0.0));
    }
}

/// Keeps a live request's reservation from being taken for abandoned by recovery: extends it
/// every third of `timeout` on a timer (whatever the client's reading pace or the backend's)
/// until the returned guard is dropped with the request.
pub fn keep_alive(reservation: ReservationExtender, timeout: Duration) -> DropGuard {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let every = (timeout / 3).max(MIN_RECOVERY_INTERVAL);
    let id = reservation.request_id().to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            tokio::select! {
                _ = stopped.cancelled() => return,
                r = tokio::time::timeout(every, reservation.extend(timeout)) => match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(request_id = %id, error = %e, "reservation not extended")
                    }
                    Err(_) => tracing::warn!(request_id = %id, "reservation not extended in time"),
                },
            }
        }
    });
    stop.drop_guard()
}

/// A stream needs a key with `agents:stream` (403). Checked by [`Policy::admit`], and before
/// an idempotent replay, which must pass the checks a fresh request would.
pub fn stream_scope(key: Option<&KeyInfo>, stream: bool) -> Result<(), GatewayError> {
    if stream && key.is_some_and(|k| !k.has_scope(Scopes::AGENTS_STREAM)) {
        return Err(GatewayError::Auth(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key does not allow streaming (agents:stream scope)",
        )));
    }
    Ok(())
}

/// `[store] lease_credits > 0`: lease mode, which needs a store shared through PostgreSQL.
fn lease_config(config: &Config, store: &Store) -> Result<Option<LeaseConfig>, String> {
    let store_cfg = config.store();
    if store_cfg.lease_credits <= 0.0 {
        return Ok(None);
    }
    if !store.is_shared() {
        return Err(
            "[store] lease_credits: credit leases need a PostgreSQL store (postgres://…); \
             with SQLite leave it at 0"
                .into(),
        );
    }
    Ok(Some(LeaseConfig {
        block: crate::credits::to_milli(store_cfg.lease_credits),
        timeout: store_cfg.lease_timeout,
    }))
}

fn rate_limited(refused: crate::limits::RateLimited) -> GatewayError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("rate limit of the {} reached", refused.policy()),
    );
    e.headers = refused.headers();
    let limit = match refused.policy() {
        "agent" => Limit::Agent,
        _ => Limit::Key,
    };
    GatewayError::Limited { limit, error: e }
}

fn quota(rate: Rate) -> Option<RateQuota> {
    RateQuota::new(rate.per_second, rate.burst)
}

fn too_many_streams(whose: &str) -> GatewayError {
    let error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many concurrent streams for this {whose}"),
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    GatewayError::Limited {
        limit: Limit::Streams,
        error,
    }
}

fn auth_error(e: AuthError) -> GatewayError {
    let status = e.status();
    let code = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "unavailable"
    };
    // The message names the kind of failure, never the key.
    let error = ApiError::new(status, code, e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        // RFC 9110 §11.6.1: a 401 names the scheme to authenticate with.
        GatewayError::Auth(error.with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        ))
    } else {
        GatewayError::Auth(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_runs_well_within_short_timeouts() {
        assert_eq!(
            recovery_interval(Duration::from_secs(900)),
            RECOVERY_INTERVAL
        );
        assert_eq!(
            recovery_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(recovery_interval(Duration::ZERO), MIN_RECOVERY_INTERVAL);
    }
}
