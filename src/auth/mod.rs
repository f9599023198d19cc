//! API keys: format, hashing, issuing, and cached authentication with prompt revocation.
//!
//! Cache design: a `DashMap` from public id to the stored key. A hit costs a checksum, one
//! SHA-256 and a constant-time compare, and no store round trip. Revocation reaches the cache
//! two ways: a revocation committed through this process's [`Store`] bumps a local counter
//! that every `authenticate` reads (immediate); a revocation by another process (the CLI on the
//! same file, another replica) bumps a counter in the store that a background task polls every
//! 200 ms. Either change empties the cache and bumps a generation number, so a lookup that
//! raced with the revocation cannot re-insert a stale entry. If the poller has not succeeded
//! for 1 s, entries older than 500 ms are revalidated against the store instead. On
//! PostgreSQL a revocation by any replica is also announced with `NOTIFY` and empties the cache
//! as soon as it is heard; the poller stays as the fallback.

mod key;
mod scopes;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use subtle::ConstantTimeEq;

pub(crate) use key::random_base62;
pub use key::{hash_key, parse_key, to_hex, KeyFormatError, ParsedKey, SecretKey, KEY_LEN, PREFIX};
pub use scopes::{KeyKind, Scopes, UnknownKind, UnknownScope};

use crate::store::{now_ms, KeyRecord, Store, StoreError, StoreEvent, UnixMs};

/// Per-key limits set at creation; `None` falls back to the agent's or the default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyLimits {
    /// Requests per second, a real number (`0.5`: one every 2 s).
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<u32>,
    pub max_streams: Option<u32>,
}

#[derive(Debug, PartialEq)]
struct KeyData {
    public_id: String,
    account: String,
    kind: KeyKind,
    scopes: Scopes,
    agents: Option<Vec<String>>,
    limits: KeyLimits,
    created_at: UnixMs,
    expires_at: Option<UnixMs>,
    revoked_at: Option<UnixMs>,
}

/// An authenticated key (or, from `list`, a stored one). Cheap to clone; holds no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo(Arc<KeyData>);

impl KeyInfo {
    /// The public id: what logs, metrics and the ledger name the key by.
    pub fn public_id(&self) -> &str {
        &self.0.public_id
    }
    pub fn account(&self) -> &str {
        &self.0.account
    }
    pub fn kind(&self) -> KeyKind {
        self.0.kind
    }
    /// Effective scopes: every scope for a master key.
    pub fn scopes(&self) -> Scopes {
        match self.0.kind {
            KeyKind::Master => Scopes::ALL,
            KeyKind::Agent => self.0.scopes,
        }
    }
    /// `None`: every agent of the account.
    pub fn agents(&self) -> Option<&[String]> {
        match self.0.kind {
            KeyKind::Master => None,
            KeyKind::Agent => self.0.agents.as_deref(),
        }
    }
    pub fn limits(&self) -> KeyLimits {
        self.0.limits
    }
    pub fn created_at(&self) -> UnixMs {
        self.0.created_at
    }
    pub fn expires_at(&self) -> Option<UnixMs> {
        self.0.expires_at
    }
    pub fn revoked_at(&self) -> Option<UnixMs> {
        self.0.revoked_at
    }
    pub fn has_scope(&self, scope: Scopes) -> bool {
        self.scopes().contains(scope)
    }
    /// Whether the key may call this agent (the agent's account is checked by the caller).
    pub fn may_access(&self, agent_id: &str) -> bool {
        match self.agents() {
            None => true,
            Some(list) => list.iter().any(|a| a == agent_id),
        }
    }

    fn from_record(r: &KeyRecord) -> Result<(KeyInfo, [u8; 32]), StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key {}: {what}", r.public_id));
        let hash = key::from_hex(&r.hash).ok_or_else(|| corrupt("hash"))?;
        let info = KeyInfo(Arc::new(KeyData {
            public_id: r.public_id.clone(),
            account: r.account.clone(),
            kind: r.kind.parse().map_err(|_| corrupt("kind"))?,
            scopes: r.scopes.parse().map_err(|_| corrupt("scopes"))?,
            agents: r.agents.as_deref().map(|a| {
                a.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            limits: KeyLimits {
                rate_per_second: r.rate_per_second,
                rate_burst: r.rate_burst,
                max_streams: r.max_streams,
            },
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }));
        Ok((info, hash))
    }
}

/// Why a request was not authenticated. Every variant but `Store` is a 401; none carries the key.
/// An unknown and a revoked key are told the same, so a refusal does not reveal which keys exist.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key")]
    Missing,
    #[error("send the API key as `Authorization: Bearer <key>`")]
    NotBearer,
    #[error("malformed API key: {0}")]
    Malformed(#[from] KeyFormatError),
    #[error("unknown or revoked API key")]
    Unknown,
    #[error("unknown or revoked API key")]
    Revoked,
    #[error("expired API key")]
    Expired,
    #[error("key store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Store(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// What `create_key` needs.
#[derive(Debug, Clone)]
pub struct NewKeySpec {
    pub account: String,
    pub kind: KeyKind,
    pub scopes: Scopes,
    /// `None`: every agent of the account.
    pub agents: Option<Vec<String>>,
    pub expires_at: Option<UnixMs>,
    pub limits: KeyLimits,
}

/// Invalid input to `create_key`.
#[derive(Debug, thiserror::Error)]
pub enum KeySpecError {
    #[error("account must be 1..=128 characters of [A-Za-z0-9._:-]")]
    Account,
    #[error("agent ids must be non-empty and contain no comma")]
    Agent,
    #[error("rate limits must be positive (a rate: a finite number of requests per second > 0)")]
    Limit,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Account ids: short, printable, no separators that would need quoting in CSV or URLs.
pub fn valid_account(a: &str) -> bool {
    (1..=128).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The stored form of a key: lower-case hex SHA-256 of the full key.
pub fn to_hex_hash(key: &SecretKey) -> String {
    key::to_hex(&key.hash())
}

/// Issues a new key: stores its hash and returns the full key (to be shown once) and its info.
pub async fn create_key(
    store: &Store,
    spec: NewKeySpec,
) -> Result<(SecretKey, KeyInfo), KeySpecError> {
    if !valid_account(&spec.account) {
        return Err(KeySpecError::Account);
    }
    if let Some(agents) = &spec.agents {
        if agents.iter().any(|a| a.is_empty() || a.contains(',')) {
            return Err(KeySpecError::Agent);
        }
    }
    let l = spec.limits;
    let bad_rate = l
        .rate_per_second
        .is_some_and(|r| crate::limits::RateQuota::new(r, 1).is_none());
    if bad_rate || [l.rate_burst, l.max_streams].contains(&Some(0)) {
        return Err(KeySpecError::Limit);
    }
    let secret = SecretKey::generate();
    let (kind, scopes, agents) = match spec.kind {
        KeyKind::Master => (KeyKind::Master, Scopes::ALL, None),
        KeyKind::Agent => (KeyKind::Agent, spec.scopes, spec.agents),
    };
    let record = KeyRecord {
        public_id: secret.public_id().to_owned(),
        hash: to_hex_hash(&secret),
        account: spec.account,
        kind: kind.as_str().to_owned(),
        scopes: scopes.to_string(),
        agents: agents.map(|a| a.join(",")),
        created_at: now_ms(),
        expires_at: spec.expires_at,
        revoked_at: None,
        rate_per_second: l.rate_per_second,
        rate_burst: l.rate_burst,
        max_streams: l.max_streams,
    };
    let (info, _) = KeyInfo::from_record(&record)?;
    store.insert_key(record).await?;
    Ok((secret, info))
}

/// Lists stored keys (never their secrets, which are not stored).
pub async fn list_keys(store: &Store, account: Option<&str>) -> Result<Vec<KeyInfo>, StoreError> {
    store
        .list_keys(account)
        .await?
        .iter()
        .map(|r| KeyInfo::from_record(r).map(|(i, _)| i))
        .collect()
}

/// A public id as last read from the store: its key, or `None` for an id no key has (cached
/// too, with [`NO_KEY_HASH`], so that an unknown id costs what a known one does: a cache hit
/// and a constant-time compare after its first lookup).
struct CachedKey {
    hash: [u8; 32],
    info: Option<KeyInfo>,
    loaded_ms: UnixMs,
    generation: u64,
    /// Used since the last [`Authenticator::prune`]; an entry unused for a whole pass goes.
    used: AtomicBool,
}

/// The hash an unknown public id is compared against: SHA-256 of a string that is no key.
static NO_KEY_HASH: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| key::hash_key("agentgate: no key has this public id"));

/// Most ids the cache holds (known and unknown): past it the cache is emptied, so that clients
/// presenting made-up ids cannot grow it without bound.
const MAX_CACHED: usize = 100_000;

struct AuthInner {
    store: Store,
    cache: DashMap<String, Arc<CachedKey>>,
    lookups: AtomicU64,
    generation: AtomicU64,
    local_seen: AtomicU64,
    remote_seen: AtomicU64,
    last_poll_ms: AtomicI64,
}

const POLL_EVERY: Duration = Duration::from_millis(200);
const POLL_STALE_MS: i64 = 1000;
const ENTRY_STALE_MS: i64 = 500;
const NEVER: u64 = u64::MAX;

impl AuthInner {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }

    /// Reads the store's revocation counter; a change empties the cache. The first reading
    /// happens before anything is cached (see `check`), so it has nothing to invalidate.
    async fn poll(&self) -> Result<(), StoreError> {
        let counter = self.store.revocation_counter().await?;
        let previous = self.remote_seen.swap(counter, Ordering::AcqRel);
        if previous != NEVER && previous != counter {
            self.invalidate();
        }
        self.last_poll_ms.store(now_ms(), Ordering::Release);
        Ok(())
    }
}

/// Empties the cache when another replica revokes a key (PostgreSQL `NOTIFY`, heard within
/// milliseconds of the commit), or when the event connection was lost and re-established
/// (what happened meanwhile is unknown). Ends with the authenticator.
async fn follow_events(
    weak: std::sync::Weak<AuthInner>,
    mut events: tokio::sync::broadcast::Receiver<StoreEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = events.recv().await;
        let Some(inner) = weak.upgrade() else { return };
        match event {
            Ok(StoreEvent::KeyRevoked(id)) => {
                tracing::debug!(key = %id, "key revoked elsewhere; cache emptied");
                inner.invalidate();
            }
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => inner.invalidate(),
            Ok(StoreEvent::CreditsChanged(_) | StoreEvent::ConfigApplied { .. }) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Authenticates `Authorization` header values against the store, through a cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthInner>,
}

impl Authenticator {
    /// Builds an authenticator. Inside a tokio runtime it also starts the revocation poller,
    /// which stops when the last clone of the authenticator is dropped.
    pub fn new(store: Store) -> Authenticator {
        let inner = Arc::new(AuthInner {
            local_seen: AtomicU64::new(store.local_revocations()),
            store,
            cache: DashMap::new(),
            lookups: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            remote_seen: AtomicU64::new(NEVER),
            last_poll_ms: AtomicI64::new(0),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if let Some(events) = inner.store.subscribe() {
                rt.spawn(follow_events(Arc::downgrade(&inner), events));
            }
            let weak = Arc::downgrade(&inner);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(POLL_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    if let Err(e) = inner.poll().await {
                        tracing::warn!(error = %e, "key revocation poll failed");
                    }
                }
            });
        }
        Authenticator { inner }
    }

    /// How many times a key was fetched from the store (cache misses and revalidations).
    pub fn store_lookups(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    /// Drops the cached ids not used since the previous call (keys that went idle), and gives
    /// the cache's spare capacity back; run periodically. Returns how many it dropped.
    pub fn prune(&self) -> usize {
        let cache = &self.inner.cache;
        let before = cache.len();
        cache.retain(|_, e| e.used.swap(false, Ordering::Relaxed));
        let dropped = before.saturating_sub(cache.len());
        cache.shrink_to_fit();
        dropped
    }

    /// Ids in the cache now.
    pub fn cached(&self) -> usize {
        self.inner.cache.len()
    }

    /// Drops every cached key (e.g. after a revocation made through another path).
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// Authenticates an `Authorization` header value: `Bearer KEY`, or with `allow_bare`
    /// (the `pharen` front) the bare key.
    pub async fn authenticate(
        &self,
        header_value: Option<&str>,
        allow_bare: bool,
    ) -> Result<KeyInfo, AuthError> {
        let raw = header_value.map(str::trim).filter(|v| !v.is_empty());
        let raw = raw.ok_or(AuthError::Missing)?;
        let token = match raw.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ if allow_bare => raw,
            _ => return Err(AuthError::NotBearer),
        };
        let parsed = parse_key(token)?;
        self.check(parsed).await
    }

    /// Authenticates a key already parsed.
    pub async fn check(&self, parsed: ParsedKey<'_>) -> Result<KeyInfo, AuthError> {
        let inner = &self.inner;
        let local = inner.store.local_revocations();
        if inner.local_seen.load(Ordering::Acquire) != local
            && inner.local_seen.swap(local, Ordering::AcqRel) != local
        {
            inner.invalidate();
        }
        let hash = parsed.hash();
        let now = now_ms();
        let generation = inner.generation.load(Ordering::Acquire);
        let cached = inner
            .cache
            .get(parsed.public_id())
            .map(|e| Arc::clone(e.value()));
        if let Some(entry) = cached {
            let poller_alive = now - inner.last_poll_ms.load(Ordering::Acquire) < POLL_STALE_MS;
            let fresh = entry.generation == generation
                && (poller_alive || now - entry.loaded_ms < ENTRY_STALE_MS);
            if fresh {
                entry.used.store(true, Ordering::Relaxed);
                return verdict(&entry.hash, &hash, entry.info.as_ref(), now);
            }
        }
        if inner.remote_seen.load(Ordering::Acquire) == NEVER {
            // Know the revocation counter before caching anything, so that the poller can tell
            // whether a revocation happened after this entry was read.
            inner.poll().await?;
        }
        inner.lookups.fetch_add(1, Ordering::Relaxed);
        let (info, stored_hash) = match inner.store.get_key(parsed.public_id()).await? {
            Some(record) => {
                let (info, stored_hash) = KeyInfo::from_record(&record)?;
                (Some(info), stored_hash)
            }
            None => (None, *NO_KEY_HASH),
        };
        let entry = Arc::new(CachedKey {
            hash: stored_hash,
            info,
            loaded_ms: now,
            generation,
            used: AtomicBool::new(true),
        });
        if inner.cache.len() >= MAX_CACHED {
            inner.invalidate();
        }
        // Insert only if no invalidation happened while we were reading.
        if inner.generation.load(Ordering::Acquire) == generation {
            inner
                .cache
                .insert(parsed.public_id().to_owned(), Arc::clone(&entry));
        }
        verdict(&entry.hash, &hash, entry.info.as_ref(), now)
    }
}

/// Whether the presented key is the stored one, and still valid. An unknown id (`info`
/// `None`) goes through the same constant-time compare, against [`NO_KEY_HASH`].
fn verdict(
    stored: &[u8; 32],
    presented: &[u8; 32],
    info: Option<&KeyInfo>,
    now: UnixMs,
) -> Result<KeyInfo, AuthError> {
    let matches = bool::from(stored.ct_eq(presented));
    let Some(info) = info.filter(|_| matches) else {
        return Err(AuthError::Unknown);
    };
    if info.revoked_at().is_some() {
        return Err(AuthError::Revoked);
    }
    if info.expires_at().is_some_and(|t| t <= now) {
        return Err(AuthError::Expired);
    }
    Ok(info.clone())
}
