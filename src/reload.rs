//! Live reload: a new config is validated, then swapped in atomically (one `ArcSwap` store).
//!
//! - A config that fails validation, or that changes what cannot change while running
//!   (listeners, TLS, the admin listener and token, the store, `[rate_limit]`, `log_format`,
//!   `watch_config`), is refused with its reason; the running config keeps serving.
//! - Requests and streams already running keep the snapshot they started with; requests that
//!   arrive after the swap use the new one.
//! - Keys, credits, reservations, rate-limit buckets, stream slots and conversations live outside
//!   the snapshot (keyed by key and agent ids), so a reload resets none of them.
//! - Triggers: SIGHUP, a change of the file (polled every second), `POST /admin/v1/config/reload`.
//! - Replicas sharing a PostgreSQL store: a replica that applies its file announces the file's
//!   SHA-256 (`NOTIFY`); every other replica then re-reads and applies its own file at once
//!   (trigger `fleet`, never announced again). A replica whose file does not match the
//!   announced hash yet (a ConfigMap volume updates later) says so and keeps its file watching.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Upstream};
use crate::demo::DemoAgent;
use crate::fronts::Api;
use crate::metrics::AgentLabel;
use crate::proxy::{Gateway, Snapshot};
use crate::store::StoreEvent;

/// How long a demo backend pauses between words in the quick start.
pub const DEMO_DELAY: Duration = Duration::from_millis(25);

/// How often the config file is looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Applies configs to a running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Arc<Gateway>,
    /// Demo backends started so far: agent id → (API, address). Its lock also serialises
    /// reloads.
    demo: tokio::sync::Mutex<HashMap<String, (Api, SocketAddr)>>,
    /// Stops the health checks of the current snapshot.
    health: Mutex<CancellationToken>,
    status: Mutex<Status>,
    /// The file `serve` read, when it read one.
    path: Mutex<Option<PathBuf>>,
    /// `serve --listen`: replaces `[server] listen` of every config read.
    listen: Mutex<Option<SocketAddr>>,
}

#[derive(Default)]
struct Status {
    /// 1 for the config the gateway started with, +1 per applied reload.
    generation: u64,
    applied_at_ms: i64,
    /// SHA-256 (hex) of the file text of the running config, when it came from a file.
    sha256: Option<String>,
    last: Option<Attempt>,
}

struct Attempt {
    at_ms: i64,
    trigger: &'static str,
    error: Option<String>,
}

/// A reload that was not applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Reloader {
    /// Starts the demo backends of `config`, builds its snapshot and the gateway on it.
    pub async fn start(
        config: Arc<Config>,
        build: impl FnOnce(Snapshot) -> Arc<Gateway>,
    ) -> Result<Reloader, String> {
        let mut demo = HashMap::new();
        start_demo_agents(&config, &mut demo).await?;
        let snapshot = Snapshot::build(config, &addresses(&demo), None)?;
        let gateway = build(snapshot);
        let reloader = Reloader {
            inner: Arc::new(Inner {
                gateway,
                demo: tokio::sync::Mutex::new(demo),
                health: Mutex::new(CancellationToken::new()),
                status: Mutex::new(Status::default()),
                path: Mutex::new(None),
                listen: Mutex::new(None),
            }),
        };
        reloader.installed();
        Ok(reloader)
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.inner.gateway
    }

    /// Whether `serve` started with demo agents (the quick start's key is then created).
    pub async fn has_demo_agents(&self) -> bool {
        !self.inner.demo.lock().await.is_empty()
    }

    /// The file reloads read (SIGHUP, the watcher, the admin endpoint).
    pub fn set_path(&self, path: PathBuf) {
        lock(&self.inner.status).sha256 = read_if_present(&path).map(|t| sha256_hex(&t));
        *lock(&self.inner.path) = Some(path);
    }

    /// Replaces `[server] listen` of the configs reloaded from now on (`serve --listen`).
    pub fn set_listen_override(&self, listen: SocketAddr) {
        *lock(&self.inner.listen) = Some(listen);
    }

    pub fn path(&self) -> Option<PathBuf> {
        lock(&self.inner.path).clone()
    }

    /// Reads, validates and applies the config file. `trigger` names the cause in logs and in
    /// `/admin/v1/config`. An applied file is announced to the other replicas sharing the store.
    pub async fn reload_file(&self, trigger: &'static str) -> Result<(), Refused> {
        let sha256 = self.reload_path(trigger).await?;
        // Announced in the background: a slow or unreachable store never holds up a reload.
        let store = self.inner.gateway.policy().store.clone();
        if store.is_shared() {
            tokio::spawn(async move {
                match store.announce_config(&sha256).await {
                    Ok(()) => {
                        tracing::debug!(%sha256, "config change announced to the other replicas")
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "config applied here but not announced to the other replicas; \
                         they apply it on their own reload or file change"
                    ),
                }
            });
        }
        Ok(())
    }

    /// Reads, validates and applies the config file; returns the SHA-256 of the applied text.
    async fn reload_path(&self, trigger: &'static str) -> Result<String, Refused> {
        let Some(path) = self.path() else {
            let refused =
                Refused("no config file to reload: agentgate runs on the embedded config".into());
            self.refused(trigger, &refused);
            return Err(refused);
        };
        // The hash of the text read just before it is parsed (a write in between is seen by the
        // next reload or file change).
        let sha256 = read_if_present(&path).map(|t| sha256_hex(&t));
        let listen = *lock(&self.inner.listen);
        match Config::load(&path) {
            Ok(config) => {
                let config = match listen {
                    Some(listen) => config.with_listen(listen),
                    None => config,
                };
                self.apply(config, trigger).await?;
                let sha256 = sha256.unwrap_or_default();
                lock(&self.inner.status).sha256 = Some(sha256.clone());
                Ok(sha256)
            }
            Err(e) => {
                let refused = Refused(e.to_string());
                self.refused(trigger, &refused);
                Err(refused)
            }
        }
    }

    /// Applies a validated config, or refuses it (and keeps the running one).
    pub async fn apply(&self, config: Config, trigger: &'static str) -> Result<(), Refused> {
        let mut demo = self.inner.demo.lock().await;
        let current = self.inner.gateway.snapshot();
        let fixed = fixed_changes(current.config(), &config);
        if !fixed.is_empty() {
            let refused = Refused(format!(
                "{} cannot change while agentgate runs; restart it to apply this config",
                fixed.join(", ")
            ));
            self.refused(trigger, &refused);
            return Err(refused);
        }
        let config = Arc::new(config);
        let built = match start_demo_agents(&config, &mut demo).await {
            Ok(()) => Snapshot::build(config, &addresses(&demo), Some(&current)),
            Err(e) => Err(e),
        };
        let snapshot = match built {
            Ok(s) => s,
            Err(e) => {
                let refused = Refused(e);
                self.refused(trigger, &refused);
                return Err(refused);
            }
        };
        let agents = snapshot.config().agents().len();
        let old = self.inner.gateway.swap(snapshot);
        // Agents that are gone leave the `agent_up` metric.
        let new = self.inner.gateway.snapshot();
        let metrics = self.inner.gateway.metrics();
        for gone in old.config().agents() {
            if new.config().agent(&gone.id).is_none() {
                metrics.agent_up.remove(&AgentLabel {
                    agent: Arc::from(gone.id.as_str()),
                });
            }
        }
        drop(demo);
        self.installed();
        let generation = lock(&self.inner.status).generation;
        tracing::info!(trigger, generation, agents, "config reloaded");
        let mut status = lock(&self.inner.status);
        status.last = Some(Attempt {
            at_ms: crate::store::now_ms(),
            trigger,
            error: None,
        });
        metrics.reload(true);
        Ok(())
    }

    /// Bookkeeping after a snapshot is installed: health checks restarted, status updated.
    fn installed(&self) {
        let gateway = &self.inner.gateway;
        let snapshot = gateway.snapshot();
        let stop = CancellationToken::new();
        let old = std::mem::replace(&mut *lock(&self.inner.health), stop.clone());
        old.cancel();
        let metrics = gateway.metrics();
        for agent in snapshot.config().agents() {
            metrics
                .agent_up
                .get_or_create(&AgentLabel {
                    agent: Arc::from(agent.id.as_str()),
                })
                .set(i64::from(snapshot.agent_up(&agent.id)));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            crate::health::spawn(snapshot.health_targets(), metrics.clone(), stop);
        }
        let mut status = lock(&self.inner.status);
        status.generation += 1;
        status.applied_at_ms = crate::store::now_ms();
    }

    fn refused(&self, trigger: &'static str, refused: &Refused) {
        tracing::error!(trigger, reason = %refused.0, "config reload refused; the running config stays");
        self.inner.gateway.metrics().reload(false);
        lock(&self.inner.status).last = Some(Attempt {
            at_ms: crate::store::now_ms(),
            trigger,
            error: Some(refused.0.clone()),
        });
    }

    /// Stops the health checks (on shutdown).
    pub fn stop_health_checks(&self) {
        lock(&self.inner.health).cancel();
    }

    /// What `GET /admin/v1/config` shows.
    pub fn status_json(&self) -> Value {
        let snapshot = self.inner.gateway.snapshot();
        let config = snapshot.config();
        let status = lock(&self.inner.status);
        let last = status.last.as_ref().map(|a| {
            json!({
                "at": crate::store::time::format_rfc3339(a.at_ms),
                "trigger": a.trigger,
                "result": if a.error.is_some() { "error" } else { "ok" },
                "error": a.error,
            })
        });
        json!({
            "path": self.path().map(|p| p.display().to_string()),
            "generation": status.generation,
            "applied_at": crate::store::time::format_rfc3339(status.applied_at_ms),
            "sha256": status.sha256,
            "fronts": config.fronts().iter().map(|f| json!({
                "api": f.api.as_str(), "prefix": f.prefix, "listen": f.listen.to_string(),
            })).collect::<Vec<_>>(),
            "agents": config.agents().iter().map(|a| json!({
                "id": a.id, "enabled": a.enabled, "up": snapshot.agent_up(&a.id),
            })).collect::<Vec<_>>(),
            "last_reload": last,
        })
    }

    /// Reloads on SIGHUP until `stop` is cancelled. The handler is installed before this
    /// returns, so a SIGHUP sent afterwards never takes the default action (exit).
    #[cfg(unix)]
    pub fn spawn_sighup(self, stop: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading the config");
                let _ = self.reload_file("sighup").await;
            }
        });
    }

    /// Reloads when the file's content changes (looked at every [`WATCH_INTERVAL`]) until
    /// `stop` is cancelled. A half-written file is refused and tried again once it changes.
    pub async fn watch_file(self, stop: CancellationToken) {
        let Some(path) = self.path() else {
            return;
        };
        let mut seen = read_if_present(&path);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = read_if_present(&path);
            if now.is_some() && now != seen {
                seen = now;
                // Already applied (another replica's announcement got there first).
                let sha256 = seen.as_deref().map(sha256_hex);
                if sha256.is_some() && sha256 == lock(&self.inner.status).sha256 {
                    continue;
                }
                tracing::info!(path = %path.display(), "config file changed: reloading");
                let _ = self.reload_file("file").await;
            }
        }
    }
}

impl Reloader {
    /// Follows the config announcements of the other replicas sharing the store (until `stop`
    /// is cancelled): on each, re-reads this replica's own file and applies it if it differs
    /// from the running config. After the event connection was re-established (announcements
    /// may have been missed) the file is looked at the same way.
    pub async fn follow_fleet(self, mut events: Receiver<StoreEvent>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(StoreEvent::ConfigApplied { instance, sha256 }) => {
                    self.fleet_changed(Some((&instance, &sha256))).await;
                }
                Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    self.fleet_changed(None).await;
                }
                Ok(StoreEvent::KeyRevoked(_) | StoreEvent::CreditsChanged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// `announced`: the replica and the SHA-256 it applied.
    async fn fleet_changed(&self, announced: Option<(&str, &str)>) {
        let Some(path) = self.path() else {
            if let Some((replica, sha256)) = announced {
                tracing::info!(
                    replica,
                    sha256,
                    "another replica applied a new config; this one runs on the embedded config"
                );
            }
            return;
        };
        let file = read_if_present(&path).map(|t| sha256_hex(&t));
        let running = lock(&self.inner.status).sha256.clone();
        if let Some((replica, sha256)) = announced {
            if file.as_deref() == Some(sha256) {
                tracing::info!(
                    replica,
                    sha256,
                    "another replica applied a new config: applying the same file here"
                );
            } else {
                let watching = self.inner.gateway.snapshot().config().server().watch_config;
                tracing::info!(
                    replica,
                    announced = sha256,
                    file = file.as_deref().unwrap_or("unreadable"),
                    path = %path.display(),
                    watch_config = watching,
                    "another replica applied a config that this replica's file does not match yet \
                     (a mounted ConfigMap updates later); {}",
                    if watching {
                        "the file watcher applies it when the file changes"
                    } else {
                        "reload (SIGHUP or the admin endpoint) once the file is updated"
                    }
                );
            }
        }
        if file.is_some() && file != running {
            let _ = self.reload_path("fleet").await;
        }
    }
}

fn sha256_hex(text: &[u8]) -> String {
    crate::auth::to_hex(&Sha256::digest(text))
}

impl Drop for Inner {
    /// The gateway is gone: so are its health checks.
    fn drop(&mut self) {
        lock(&self.health).cancel();
    }
}

fn read_if_present(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn addresses(demo: &HashMap<String, (Api, SocketAddr)>) -> HashMap<String, SocketAddr> {
    demo.iter()
        .map(|(id, (_, addr))| (id.clone(), *addr))
        .collect()
}

/// Starts a demo backend for each `upstream = "demo"` agent that has none for its API yet.
async fn start_demo_agents(
    config: &Config,
    demo: &mut HashMap<String, (Api, SocketAddr)>,
) -> Result<(), String> {
    for agent in config.agents() {
        if agent.upstream != Upstream::Demo {
            continue;
        }
        if demo
            .get(&agent.id)
            .is_some_and(|(api, _)| *api == agent.upstream_api)
        {
            continue;
        }
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let addr = DemoAgent::new(agent.upstream_api, DEMO_DELAY)
            .spawn(loopback)
            .await
            .map_err(|e| format!("agent {}: cannot start its demo backend: {e}", agent.id))?;
        demo.insert(agent.id.clone(), (agent.upstream_api, addr));
    }
    Ok(())
}

/// The settings that differ between `old` and `new` and cannot change while running.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let listeners = |c: &Config| {
        let mut l = c.listeners();
        l.sort();
        l
    };
    if listeners(old) != listeners(new) {
        changed.push("the set of listeners ([server] listen, [[front]] listen)");
    }
    let (os, ns) = (old.server(), new.server());
    let admin =
        |s: &crate::config::ServerConfig| s.admin.as_ref().map(|a| (a.listen, a.token.clone()));
    if admin(os) != admin(ns) {
        changed.push("[server] admin_listen/admin_token");
    }
    if os.tls != ns.tls {
        changed.push("[server.tls]");
    }
    if os.log_format != ns.log_format {
        changed.push("[server] log_format");
    }
    if os.watch_config != ns.watch_config {
        changed.push("[server] watch_config");
    }
    let (ost, nst) = (old.store(), new.store());
    if ost.url != nst.url
        || ost.reservation_timeout != nst.reservation_timeout
        || ost.lease_credits != nst.lease_credits
        || ost.lease_timeout != nst.lease_timeout
        || ost.idempotency_ttl != nst.idempotency_ttl
    {
        changed.push("[store]");
    }
    let (orl, nrl) = (old.rate_limit(), new.rate_limit());
    if orl.redis_url != nrl.redis_url
        || orl.key_prefix != nrl.key_prefix
        || orl.key_defaults != nrl.key_defaults
    {
        changed.push("[rate_limit]");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid")
    }

    #[test]
    fn agents_and_fronts_may_change_listeners_and_store_may_not() {
        let base = "[server]\nlisten = \"127.0.0.1:8080\"\n[store]\nurl = \"sqlite:///tmp/a.db\"\n";
        let old = parse(base);
        let more = format!(
            "{base}[[front]]\napi = \"agents\"\n[[agent]]\nid = \"a\"\nupstream = \"demo\"\nupstream_api = \"agents\"\n"
        );
        assert!(fixed_changes(&old, &parse(&more)).is_empty());
        let moved = base.replace("8080", "8081");
        assert_eq!(fixed_changes(&old, &parse(&moved)).len(), 1);
        let store = base.replace("/tmp/a.db", "/tmp/b.db");
        assert_eq!(fixed_changes(&old, &parse(&store)), vec!["[store]"]);
        let json = base.replace("[store]", "log_format = \"json\"\n[store]");
        assert_eq!(
            fixed_changes(&old, &parse(&json)),
            vec!["[server] log_format"]
        );
    }
}
