//! The signal that ends every open stream once a shutdown's drain timeout has passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

/// A cancellation token with a flag beside it. Every poll of every open stream asks whether
/// the streams are being cut off, and the token's own `is_cancelled` takes a lock that all of
/// them share; the flag is one atomic load.
#[derive(Clone, Default)]
pub struct Cutoff {
    token: CancellationToken,
    cut: Arc<AtomicBool>,
}

impl Cutoff {
    pub fn new() -> Cutoff {
        Cutoff::default()
    }

    /// Cuts the streams off: the flag first, so that a stream woken by the token sees it.
    pub fn cancel(&self) {
        self.cut.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn cancelled_owned(self) -> WaitForCancellationFutureOwned {
        self.token.cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cutoff_is_seen_by_its_clones_and_wakes_their_waits() {
        let cutoff = Cutoff::new();
        let clone = cutoff.clone();
        let wait = tokio::spawn(clone.clone().cancelled_owned());
        assert!(!clone.is_cancelled());
        cutoff.cancel();
        assert!(clone.is_cancelled());
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the wait ends")
            .unwrap();
        clone.cancelled().await;
    }
}
