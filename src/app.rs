//! The composition root: from a validated [`Config`], everything a running gateway is made of
//! — the store and the policy over it (keys, limits, credits), the metrics, the config snapshot
//! with its demo backends, the reloader that swaps it, and the [`Gateway`] on it. The server
//! ([`crate::server::start`]) binds the listeners around what this builds.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Policy};
use crate::reload::Reloader;

/// What a config builds, before any listener is bound.
pub struct App {
    pub config: Arc<Config>,
    /// The store, the key cache, the limiters and the credit ledger: state that outlives a
    /// reload.
    pub policy: Arc<Policy>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when a shutdown's drain timeout has passed: open streams end then.
    pub streams_end: crate::proxy::Cutoff,
    /// Swaps the gateway's config snapshot on reload.
    pub reloader: Reloader,
    pub gateway: Arc<Gateway>,
}

impl App {
    /// Opens the store (recovering reservations a crash left open), starts the policy's
    /// maintenance, the demo backends and the gateway on the config's first snapshot.
    pub async fn build(config: Config) -> Result<App, String> {
        let config = Arc::new(config);
        let policy = Arc::new(Policy::open(&config).await?);
        Policy::spawn_maintenance(&policy);
        let streams_end = crate::proxy::Cutoff::new();
        let metrics = Arc::new(Metrics::with_fail_open({
            let policy = policy.clone();
            Box::new(move || policy.limiter().fail_open_count())
        }));
        let reloader = Reloader::start(config.clone(), |snapshot| {
            Arc::new(Gateway::new(
                snapshot,
                policy.clone(),
                metrics.clone(),
                streams_end.clone(),
            ))
        })
        .await?;
        metrics.config_loaded();
        let gateway = reloader.gateway().clone();
        Ok(App {
            config,
            policy,
            metrics,
            streams_end,
            reloader,
            gateway,
        })
    }
}
