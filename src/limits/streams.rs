//! Concurrent-stream caps: an exact counter per key, released by a guard.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// Open streams per key. Cheap to clone; clones share the counters.
#[derive(Clone, Default)]
pub struct StreamSlots {
    counters: Arc<DashMap<String, Arc<AtomicU32>>>,
}

impl StreamSlots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a slot if fewer than `cap` are taken for this key. Exact under any concurrency:
    /// the check and the increment are one atomic step.
    pub fn try_acquire(&self, key_id: &str, cap: u32) -> Option<SlotGuard> {
        let counter = match self.counters.get(key_id) {
            Some(c) => Arc::clone(c.value()),
            None => Arc::clone(self.counters.entry(key_id.to_owned()).or_default().value()),
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(SlotGuard {
            slots: self.clone(),
            key: key_id.to_owned(),
            counter,
        })
    }

    /// Slots taken now for this key.
    pub fn in_use(&self, key_id: &str) -> u32 {
        self.counters
            .get(key_id)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Keys with a counter entry (idle keys are removed).
    pub fn tracked_keys(&self) -> usize {
        self.counters.len()
    }

    /// Removes the entries no stream holds that the guards' own clean-up missed (a refused
    /// acquisition, or a release racing an acquisition), and gives spare capacity back.
    /// Returns how many it removed.
    pub fn prune(&self) -> usize {
        let before = self.counters.len();
        // Under the shard lock only the map holds an idle counter (an acquisition in progress
        // holds a clone, so its entry stays).
        self.counters
            .retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
        let removed = before.saturating_sub(self.counters.len());
        self.counters.shrink_to_fit();
        removed
    }
}

/// One open stream; releases its slot when dropped.
pub struct SlotGuard {
    slots: StreamSlots,
    key: String,
    counter: Arc<AtomicU32>,
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard").field("key", &self.key).finish()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.counter.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Remove the idle entry unless someone else holds (or is about to use) it: under the
            // shard lock, only the map and this guard hold the counter when it is truly idle.
            let counter = &self.counter;
            self.slots.counters.remove_if(&self.key, |_, c| {
                Arc::ptr_eq(c, counter)
                    && Arc::strong_count(c) == 2
                    && c.load(Ordering::Acquire) == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_release() {
        let s = StreamSlots::new();
        let a = s.try_acquire("k", 2).expect("first");
        let b = s.try_acquire("k", 2).expect("second");
        assert!(s.try_acquire("k", 2).is_none());
        assert!(s.try_acquire("k", 0).is_none());
        drop(a);
        assert_eq!(s.in_use("k"), 1);
        let c = s.try_acquire("k", 2).expect("after release");
        drop((b, c));
        assert_eq!(s.in_use("k"), 0);
        assert_eq!(s.tracked_keys(), 0);
    }

    #[test]
    fn prune_removes_what_no_stream_holds() {
        let s = StreamSlots::new();
        // Refused at a cap of 0: nothing to release, so the entry stays until pruned.
        assert!(s.try_acquire("refused", 0).is_none());
        let held = s.try_acquire("held", 1).expect("first");
        assert_eq!(s.tracked_keys(), 2);
        assert_eq!(s.prune(), 1);
        assert_eq!(s.in_use("held"), 1);
        assert!(
            s.try_acquire("held", 1).is_none(),
            "the held slot still counts"
        );
        drop(held);
        assert_eq!(s.prune(), 0, "the last guard removed its own entry");
        assert_eq!(s.tracked_keys(), 0);
    }
}
