//! Rate limits with a fake clock, and the concurrent-stream cap under a burst.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use agentgate::limits::{RateLimiter, RateQuota, StreamSlots};
use governor::clock::FakeRelativeClock;

#[test]
fn never_allowed_before_the_advertised_wait_and_allowed_at_it() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimiter::with_clock(clock.clone());
    for (rate, burst) in [(1, 1), (5, 10), (3, 7), (1000, 50)] {
        let q = RateQuota::new(f64::from(rate), burst);
        let key = format!("k{rate}-{burst}");
        for _ in 0..burst {
            rl.check(&key, q, "agent", None).expect("within burst");
        }
        for round in 0..100u64 {
            let refused = rl.check(&key, q, "agent", None).expect_err("burst spent");
            let wait = refused.retry_after;
            assert!(wait > Duration::ZERO);
            assert_eq!(refused.policy(), "key");
            assert_eq!(refused.state.remaining, 0);
            // Any instant before the advertised wait: still refused.
            let early = wait - Duration::from_nanos(1 + round % 3);
            clock.advance(early);
            let again = rl.check(&key, q, "agent", None).expect_err("early");
            assert_eq!(again.retry_after, wait - early);
            // At the wait: allowed.
            clock.advance(wait - early);
            rl.check(&key, q, "agent", None)
                .expect("allowed at retry_after");
        }
        // Honouring the rounded-up Retry-After header is always enough.
        let refused = rl.check(&key, q, "agent", None).expect_err("spent");
        clock.advance(Duration::from_secs(refused.retry_after_secs()));
        rl.check(&key, q, "agent", None)
            .expect("allowed after Retry-After");
        clock.advance(Duration::from_secs(3600));
    }
}

#[test]
fn keys_and_agents_are_limited_independently() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimiter::with_clock(clock.clone());
    let one = RateQuota::new(1.0, 1);
    rl.check("k1", one, "a", None).expect("k1 first");
    rl.check("k2", one, "a", None).expect("k2 unaffected by k1");
    assert_eq!(
        rl.check("k1", one, "a", None)
            .expect_err("k1 spent")
            .policy(),
        "key"
    );
    // The agent's quota binds across keys.
    rl.check("k3", None, "shared", one)
        .expect("first call of the agent");
    let e = rl
        .check("k4", None, "shared", one)
        .expect_err("agent spent");
    assert_eq!(e.policy(), "agent");
    assert_eq!(e.retry_after, Duration::from_secs(1));
    // A changed quota (config reload) starts fresh.
    rl.check("k1", RateQuota::new(10.0, 10), "a", None)
        .expect("new quota");
}

#[test]
fn stream_cap_is_exact_under_a_burst() {
    let slots = StreamSlots::new();
    for cap in [1u32, 7, 50, 199] {
        let n = 200;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (slots, barrier) = (slots.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    slots.try_acquire("key", cap)
                })
            })
            .collect();
        let guards: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(guards.len(), cap as usize, "cap {cap}");
        assert_eq!(slots.in_use("key"), cap);
        assert!(slots.try_acquire("key", cap).is_none());
        assert!(slots.try_acquire("other", 1).is_some());
        drop(guards);
        assert_eq!(slots.in_use("key"), 0);
    }
    assert_eq!(slots.tracked_keys(), 0, "idle keys are forgotten");
}

#[test]
fn stream_slots_churn_concurrently_without_leaks() {
    let slots = StreamSlots::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let slots = slots.clone();
            std::thread::spawn(move || {
                let mut max = 0;
                for _ in 0..5000 {
                    if let Some(g) = slots.try_acquire("k", 3) {
                        max = max.max(slots.in_use("k"));
                        drop(g);
                    }
                }
                max
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("thread") <= 3);
    }
    assert_eq!(slots.in_use("k"), 0);
    assert_eq!(slots.tracked_keys(), 0);
}
