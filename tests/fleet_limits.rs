//! Fleet-wide rate limits in a real Redis: two limiters (two replicas) share one allowance,
//! refusals say when to come back, and an unreachable Redis fails open and is counted.
//! Skipped (with the reason) when Redis is unreachable.

use std::time::{Duration, Instant};

use agentgate::limits::{FleetLimiter, RateQuota};

fn redis_url() -> String {
    std::env::var("AGENTGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A key prefix of its own, and its keys deleted afterwards.
struct Prefix(String);

impl Prefix {
    async fn new() -> Option<Prefix> {
        let url = redis_url();
        let reachable = async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        match tokio::time::timeout(Duration::from_secs(2), reachable).await {
            Ok(Some(_)) => Some(Prefix(format!(
                "agentgate-test-{}",
                uuid::Uuid::new_v4().simple()
            ))),
            _ => {
                eprintln!("SKIPPED: Redis at {url} is unreachable");
                None
            }
        }
    }

    async fn cleanup(&self) {
        let client = redis::Client::open(redis_url().as_str()).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query_async(&mut c)
            .await
            .expect("keys");
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<i64>(&mut c)
                .await
                .expect("del");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_allowance() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let a = FleetLimiter::new(&redis_url(), &prefix.0).expect("limiter a");
    let b = FleetLimiter::new(&redis_url(), &prefix.0).expect("limiter b");
    let q = RateQuota::new(2.0, 10);
    // A burst of 10 spread over both replicas: exactly 10 pass, whichever serves them.
    let mut admitted = 0;
    let mut last_retry = Duration::ZERO;
    for i in 0..40 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        match limiter.check("k1", q, "agent", None).await {
            Ok(allowed) => {
                admitted += 1;
                let state = allowed.tightest.expect("limited");
                assert_eq!(state.policy, "key");
                assert_eq!(state.remaining, 10 - admitted, "after {admitted}");
            }
            Err(refused) => {
                assert_eq!(refused.policy(), "key");
                assert!(refused.retry_after <= Duration::from_millis(500));
                last_retry = refused.retry_after;
            }
        }
    }
    assert_eq!(admitted, 10);
    assert!(last_retry > Duration::ZERO);
    // Honouring Retry-After is enough to pass again (one cell every 500 ms).
    tokio::time::sleep(last_retry + Duration::from_millis(20)).await;
    a.check("k1", q, "agent", None)
        .await
        .expect("allowed after the wait");
    assert!(b.check("k1", q, "agent", None).await.is_err());
    // Another key has its own allowance; the agent policy is shared by every key.
    let agent_q = RateQuota::new(1.0, 3);
    for i in 0..3 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        limiter
            .check(&format!("other{i}"), q, "busy-agent", agent_q)
            .await
            .expect("within the agent's burst");
    }
    let refused = a
        .check("other9", q, "busy-agent", agent_q)
        .await
        .expect_err("agent policy spent");
    assert_eq!(refused.policy(), "agent");
    // Refused by the agent: the key's allowance was not spent.
    let allowed = b
        .check("other9", q, "quiet-agent", None)
        .await
        .expect("key other9 untouched");
    assert_eq!(allowed.tightest.expect("key").remaining, 9);
    assert_eq!(a.fail_open_count() + b.fail_open_count(), 0);
    prefix.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_open_and_is_counted() {
    // Nothing listens on port 1.
    let limiter = FleetLimiter::new("redis://127.0.0.1:1/", "agentgate-test-down").expect("url");
    let q = RateQuota::new(1.0, 1);
    let t0 = Instant::now();
    for _ in 0..5 {
        let allowed = limiter.check("k", q, "a", q).await.expect("fails open");
        assert!(allowed.tightest.is_none(), "no verdict, no headers");
    }
    assert_eq!(limiter.fail_open_count(), 5);
    // Each check gives up within the timeout, so a dead Redis cannot stall the gateway.
    assert!(t0.elapsed() < Duration::from_secs(5));
}
