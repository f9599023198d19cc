//! Fleet-wide rate limits: the same GCRA as the local limiter, its state in Redis so that every
//! replica spends from one allowance.
//!
//! One Lua script per check decides for the key's and the agent's policy at once, with Redis's
//! own clock (`TIME`), so replicas with skewed clocks agree and no two checks interleave.
//! Unlike the local limiter, a request refused by the agent's policy spends nothing from its
//! key's (the script writes only when every policy admits).
//!
//! Redis down, slow (> 250 ms) or refusing: the check fails **open** — the request passes,
//! a warning is logged (at most once a second) and [`FleetLimiter::fail_open_count`] counts
//! it — because a rate limit protects capacity, not money; credits fail closed in the store.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Allowed, PolicyState, RateLimited, RateQuota};

/// Longest a check waits for Redis before failing open.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// `KEYS`: one per policy; `ARGV`: per policy, its emission interval (µs) and burst.
/// Returns `{1, remaining, reset_us, …}` (two numbers per policy) or `{0, policy, retry_us}`.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now < allow_at then
    return {0, i, allow_at - now}
  end
  tats[i] = new_tat
  out[#out + 1] = math.floor((now - allow_at) / interval)
  out[#out + 1] = new_tat - now
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1)
end
return out
";

/// GCRA limits per key and per agent, shared by every replica through Redis.
pub struct FleetLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    fail_open: AtomicU64,
    last_warning_ms: AtomicI64,
}

/// A Redis URL that cannot be used at all (checked at startup).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct FleetError(String);

impl FleetLimiter {
    /// Sets up the connection (established lazily, re-established in the background after a
    /// failure); every Redis key starts with `prefix:`. Must run inside a tokio runtime.
    pub fn new(url: &str, prefix: &str) -> Result<FleetLimiter, FleetError> {
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; agentgate uses ring everywhere.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url).map_err(|e| FleetError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CHECK_TIMEOUT))
            .set_response_timeout(Some(CHECK_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| FleetError(e.to_string()))?;
        Ok(FleetLimiter {
            conn,
            prefix: prefix.to_owned(),
            script: redis::Script::new(GCRA_LUA),
            fail_open: AtomicU64::new(0),
            last_warning_ms: AtomicI64::new(0),
        })
    }

    /// Checks that failed open (Redis unreachable, slow or in error) since start.
    pub fn fail_open_count(&self) -> u64 {
        self.fail_open.load(Ordering::Relaxed)
    }

    /// The Redis key holding one policy's state.
    pub fn redis_key(&self, policy: &str, id: &str) -> String {
        format!("{}:rl:{policy}:{id}", self.prefix)
    }

    /// Checks the key's quota and the agent's in one atomic step. `None` quota: unlimited.
    pub async fn check(
        &self,
        key_id: &str,
        key_quota: Option<RateQuota>,
        agent_id: &str,
        agent_quota: Option<RateQuota>,
    ) -> Result<Allowed, RateLimited> {
        let policies: Vec<(&'static str, &str, RateQuota)> = [
            key_quota.map(|q| ("key", key_id, q)),
            agent_quota.map(|q| ("agent", agent_id, q)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if policies.is_empty() {
            return Ok(Allowed { tightest: None });
        }
        let mut call = self.script.prepare_invoke();
        for (policy, id, quota) in &policies {
            // The emission interval in µs: exact for fractional rates (0.2/s → 5,000,000).
            let interval_us = u64::try_from(quota.interval().as_micros()).unwrap_or(u64::MAX);
            call.key(self.redis_key(policy, id))
                .arg(interval_us.max(1))
                .arg(quota.burst());
        }
        let mut conn = self.conn.clone();
        let answer = tokio::time::timeout(CHECK_TIMEOUT, call.invoke_async::<Vec<i64>>(&mut conn));
        let out = match answer.await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Ok(self.failed_open(&e.to_string())),
            Err(_) => return Ok(self.failed_open("timed out")),
        };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        match out.as_slice() {
            [0, i, retry] => {
                let (policy, _, quota) = usize::try_from(*i - 1)
                    .ok()
                    .and_then(|i| policies.get(i))
                    .copied()
                    .unwrap_or(policies[0]);
                let retry_after = micros(*retry);
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
            [1, rest @ ..] if rest.len() == 2 * policies.len() => {
                let tightest = policies
                    .iter()
                    .zip(rest.chunks(2))
                    .map(|((policy, _, quota), v)| PolicyState {
                        policy,
                        quota: *quota,
                        remaining: u32::try_from(v[0].max(0)).unwrap_or(u32::MAX),
                        reset: micros(v[1]),
                    })
                    .min_by_key(|p| p.remaining);
                Ok(Allowed { tightest })
            }
            other => Ok(self.failed_open(&format!("unexpected script answer {other:?}"))),
        }
    }

    fn failed_open(&self, why: &str) -> Allowed {
        self.fail_open.fetch_add(1, Ordering::Relaxed);
        let now = crate::store::now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %why,
                failed_open = self.fail_open_count(),
                "fleet rate limit unavailable; request admitted without it (fail open)"
            );
        }
        Allowed { tightest: None }
    }
}
