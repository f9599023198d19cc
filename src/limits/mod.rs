//! Rate limits (GCRA per key and per agent, via governor) and concurrent-stream caps per key.
//!
//! Each key and each agent gets its own direct GCRA limiter with its own quota (quotas differ
//! per key), held in a `DashMap`. The key is checked before the agent; a request refused by the
//! agent's limit has still spent one cell of its key's. Refusals carry what the 429 needs:
//! `Retry-After` and the `RateLimit-Policy`/`RateLimit` headers of
//! draft-ietf-httpapi-ratelimit-headers (structured fields, named policies). With
//! `[rate_limit] redis_url` the same GCRA runs in Redis for the whole fleet ([`FleetLimiter`]).

mod fleet;
mod streams;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

pub use fleet::{FleetError, FleetLimiter};
pub use streams::{SlotGuard, StreamSlots};

/// The longest emission interval: one request a day.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// A GCRA quota: a sustained rate — a real number of requests per second, so `0.2` is one
/// request every 5 s — and a burst. Kept as the emission interval (the time one request's
/// allowance takes to come back), which is exact for any rate and comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateQuota {
    interval: Duration,
    burst: NonZeroU32,
}

impl RateQuota {
    /// `None` unless `per_second` is finite and > 0 and `burst` ≥ 1. The interval is kept
    /// within [1 ns, 1 day]: a rate below one request a day counts as one a day.
    pub fn new(per_second: f64, burst: u32) -> Option<RateQuota> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(MAX_INTERVAL)
            .clamp(Duration::from_nanos(1), MAX_INTERVAL);
        Some(RateQuota {
            interval,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// From optional per-key settings: the burst defaults to the rate (rounded up).
    pub fn from_parts(per_second: Option<f64>, burst: Option<u32>) -> Option<RateQuota> {
        let rate = per_second?;
        RateQuota::new(rate, burst.unwrap_or_else(|| default_burst(rate)))
    }

    /// Requests per second, sustained.
    pub fn per_second(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The policy window: the time a full burst takes to replenish, in whole seconds (≥ 1,
    /// rounded up): 5 for one request per 5 s.
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.interval.saturating_mul(self.burst.get())).max(1)
    }

    /// The quota of the policy window: the burst, or what the rate allows in the window when
    /// that is more (a window rounded up to a second can hold more than one burst).
    pub fn window_quota(&self) -> u64 {
        let window = Duration::from_secs(self.window_secs());
        let by_rate = window.as_nanos() / self.interval.as_nanos().max(1);
        u64::try_from(by_rate)
            .unwrap_or(u64::MAX)
            .max(u64::from(self.burst.get()))
    }

    fn governor(&self) -> Option<Quota> {
        Quota::with_period(self.interval).map(|q| q.allow_burst(self.burst))
    }
}

/// The burst of a rate given without one: the rate rounded up (at least 1).
pub fn default_burst(per_second: f64) -> u32 {
    // `as` saturates: a huge rate gets the largest burst.
    (per_second.ceil() as u32).max(1)
}

/// One policy's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    /// `key` or `agent`.
    pub policy: &'static str,
    pub quota: RateQuota,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Time until the quota is whole again (for a refusal: until the next request may pass).
    pub reset: Duration,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl PolicyState {
    fn write(&self, headers: &mut HeaderMap) {
        let policy = format!(
            "\"{}\";q={};w={}",
            self.policy,
            self.quota.window_quota(),
            self.quota.window_secs()
        );
        let state = format!(
            "\"{}\";r={};t={}",
            self.policy,
            self.remaining,
            ceil_secs(self.reset)
        );
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
}

/// A request within its limits; `tightest` is the policy with the least room left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub tightest: Option<PolicyState>,
}

impl Allowed {
    /// Adds `RateLimit-Policy` and `RateLimit` for the tightest policy (nothing if unlimited).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(p) = &self.tightest {
            p.write(headers);
        }
    }
}

/// A refusal: 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited by the {} policy; retry after {retry_after:?}", state.policy)]
pub struct RateLimited {
    /// Exactly when a request may pass again (from the decision's instant).
    pub retry_after: Duration,
    pub state: PolicyState,
}

impl RateLimited {
    /// The policy name (`key` or `agent`).
    pub fn policy(&self) -> &'static str {
        self.state.policy
    }

    /// `Retry-After` in whole seconds, rounded up so that a client honouring it is never early.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after)
    }

    /// Adds `Retry-After`, `RateLimit-Policy` and `RateLimit`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
        self.state.write(headers);
    }

    /// The same headers as a list.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut map = HeaderMap::new();
        self.write_headers(&mut map);
        map.into_iter()
            .filter_map(|(name, value)| Some((name?, value)))
            .collect()
    }
}

type Gcra<C> = governor::RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

struct Bucket<C: Clock> {
    quota: RateQuota,
    limiter: Gcra<C>,
    /// When it was last checked, in nanoseconds since the limiter's start.
    last_used: AtomicU64,
}

/// GCRA limiters per key and per agent, generic over governor's clock (tests use
/// `governor::clock::FakeRelativeClock`).
pub struct RateLimiter<C: Clock + Clone = DefaultClock> {
    clock: C,
    start: C::Instant,
    keys: DashMap<String, Arc<Bucket<C>>>,
    agents: DashMap<String, Arc<Bucket<C>>>,
}

impl RateLimiter<DefaultClock> {
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for RateLimiter<DefaultClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(clock: C) -> Self {
        RateLimiter {
            start: clock.now(),
            clock,
            keys: DashMap::new(),
            agents: DashMap::new(),
        }
    }

    fn bucket(
        &self,
        map: &DashMap<String, Arc<Bucket<C>>>,
        id: &str,
        quota: RateQuota,
    ) -> Arc<Bucket<C>> {
        if let Some(b) = map.get(id) {
            if b.quota == quota {
                return Arc::clone(b.value());
            }
        }
        // New id, or its quota changed (config reload): start a fresh limiter.
        let fresh = || {
            // `RateQuota` keeps its interval non-zero, so governor always takes it.
            let q = quota
                .governor()
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
            Arc::new(Bucket {
                quota,
                limiter: Gcra::new(q, InMemoryState::default(), self.clock.clone()),
                last_used: AtomicU64::new(0),
            })
        };
        let mut entry = map.entry(id.to_owned()).or_insert_with(fresh);
        if entry.quota != quota {
            *entry = fresh();
        }
        Arc::clone(entry.value())
    }

    fn check_one(
        &self,
        map: &DashMap<String, Arc<Bucket<C>>>,
        policy: &'static str,
        id: &str,
        quota: RateQuota,
    ) -> Result<PolicyState, RateLimited> {
        let bucket = self.bucket(map, id, quota);
        bucket
            .last_used
            .store(self.elapsed_nanos(), Ordering::Release);
        let per_cell = quota.interval();
        match bucket.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(PolicyState {
                    policy,
                    quota,
                    remaining,
                    reset: per_cell * quota.burst().saturating_sub(remaining),
                })
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                Err(RateLimited {
                    retry_after,
                    state: PolicyState {
                        policy,
                        quota,
                        remaining: 0,
                        reset: retry_after,
                    },
                })
            }
        }
    }

    fn elapsed_nanos(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Drops the limiters of keys and agents that are idle: unused for as long as a whole
    /// burst takes to come back, so they are full again and a fresh limiter would decide the
    /// same. Then gives the maps' spare capacity back. Returns how many it dropped.
    pub fn prune(&self) -> usize {
        let now = self.elapsed_nanos();
        let mut dropped = 0;
        for map in [&self.keys, &self.agents] {
            let before = map.len();
            map.retain(|_, b| {
                let refill = b.quota.interval().saturating_mul(b.quota.burst());
                let refill = u64::try_from(refill.as_nanos()).unwrap_or(u64::MAX);
                let idle = now.saturating_sub(b.last_used.load(Ordering::Acquire)) >= refill;
                // A check holding the bucket right now keeps it (the map holds one reference).
                !(idle && Arc::strong_count(b) == 1)
            });
            dropped += before.saturating_sub(map.len());
            map.shrink_to_fit();
        }
        dropped
    }

    /// Keys and agents with a limiter now.
    pub fn tracked(&self) -> usize {
        self.keys.len() + self.agents.len()
    }

    /// Checks the key's quota, then the agent's. `None` quota: that dimension is unlimited.
    pub fn check(
        &self,
        key_id: &str,
        key_quota: Option<RateQuota>,
        agent_id: &str,
        agent_quota: Option<RateQuota>,
    ) -> Result<Allowed, RateLimited> {
        let key = key_quota
            .map(|q| self.check_one(&self.keys, "key", key_id, q))
            .transpose()?;
        let agent = agent_quota
            .map(|q| self.check_one(&self.agents, "agent", agent_id, q))
            .transpose()?;
        let tightest = match (key, agent) {
            (Some(k), Some(a)) => Some(if a.remaining < k.remaining { a } else { k }),
            (k, a) => k.or(a),
        };
        Ok(Allowed { tightest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn headers_render_structured_fields() {
        let clock = FakeRelativeClock::default();
        let rl = RateLimiter::with_clock(clock);
        let q = RateQuota::new(2.0, 4);
        for _ in 0..4 {
            rl.check("k", q, "a", None).expect("within burst");
        }
        let refused = rl.check("k", q, "a", None).expect_err("over burst");
        let mut h = HeaderMap::new();
        refused.write_headers(&mut h);
        assert_eq!(h["retry-after"], "1");
        assert_eq!(h["ratelimit-policy"], "\"key\";q=4;w=2");
        assert_eq!(h["ratelimit"], "\"key\";r=0;t=1");
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.headers().len(), 3);
    }

    #[test]
    fn fractional_rates_are_enforced_and_shown_as_they_are() {
        let clock = FakeRelativeClock::default();
        let rl = RateLimiter::with_clock(clock.clone());
        // One request per 5 s.
        let q = RateQuota::new(0.2, 1);
        let allowed = rl.check("k", q, "a", None).expect("first");
        let mut h = HeaderMap::new();
        allowed.write_headers(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"key\";q=1;w=5");
        assert_eq!(h["ratelimit"], "\"key\";r=0;t=5");
        let refused = rl.check("k", q, "a", None).expect_err("within 5 s");
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        assert_eq!(refused.retry_after_secs(), 5);
        clock.advance(Duration::from_millis(4999));
        rl.check("k", q, "a", None).expect_err("still within 5 s");
        clock.advance(Duration::from_millis(1));
        rl.check("k", q, "a", None).expect("after 5 s");
        // 2.5/s with a burst of 1: a window of 1 s holds 2 requests at that rate.
        let q = RateQuota::new(2.5, 1).expect("valid");
        assert_eq!((q.window_quota(), q.window_secs()), (2, 1));
        assert_eq!(q.interval(), Duration::from_millis(400));
        // Out of range.
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateQuota::new(bad, 1).is_none(), "{bad}");
        }
        assert!(RateQuota::new(1.0, 0).is_none());
        assert_eq!(
            RateQuota::new(1e-12, 1).expect("valid").interval(),
            MAX_INTERVAL
        );
        assert_eq!(
            RateQuota::from_parts(Some(0.5), None).map(|q| q.burst()),
            Some(1)
        );
    }

    #[test]
    fn idle_limiters_are_pruned_once_full_again() {
        let clock = FakeRelativeClock::default();
        let rl = RateLimiter::with_clock(clock.clone());
        // One request per second, burst 2: full again 2 s after its last use.
        let q = RateQuota::new(1.0, 2);
        rl.check("k", q, "a", q).expect("first");
        rl.check("k", q, "a", q).expect("second");
        assert_eq!(rl.tracked(), 2);
        clock.advance(Duration::from_millis(1999));
        assert_eq!(rl.prune(), 0, "not full yet: its state still matters");
        rl.check("k", q, "a", None).expect("one cell back");
        clock.advance(Duration::from_millis(1999));
        assert_eq!(
            rl.prune(),
            1,
            "the agent is full again; the key was just used"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(rl.prune(), 1);
        assert_eq!(rl.tracked(), 0);
        rl.check("k", q, "a", q).expect("a fresh limiter");
    }

    #[test]
    fn allowed_reports_tightest() {
        let rl = RateLimiter::with_clock(FakeRelativeClock::default());
        let a = rl
            .check("k", RateQuota::new(10.0, 10), "a", RateQuota::new(1.0, 2))
            .expect("allowed");
        let t = a.tightest.expect("limited");
        assert_eq!((t.policy, t.remaining), ("agent", 1));
        let mut h = HeaderMap::new();
        a.write_headers(&mut h);
        assert_eq!(h["ratelimit"], "\"agent\";r=1;t=1");
        assert!(rl
            .check("k", None, "a", None)
            .expect("unlimited")
            .tightest
            .is_none());
    }
}
