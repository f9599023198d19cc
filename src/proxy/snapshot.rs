//! The config snapshot a request runs on: the config, its agents (each with its backend and
//! connection pool) and the fronts' OpenAPI documents. A reload builds a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Response, StatusCode, Uri};

use super::response::{error_response, json_response, GatewayBody};
use crate::config::{AgentConfig, Config, FrontConfig, Upstream};
use crate::fronts::ApiError;
use crate::upstream;

/// An agent with its resolved backend and its own connection pool.
pub(super) struct Agent {
    pub(super) config: AgentConfig,
    pub(super) base: Uri,
    pub(super) client: upstream::Client,
    /// The agent's id as a metrics label, interned once.
    pub(super) label: Arc<str>,
    /// False while its health check fails (shared with the checker; kept across reloads).
    pub(super) up: Arc<AtomicBool>,
}

/// What a config snapshot builds: the config and its agents. A reload swaps it whole; a
/// request loads it once, when it arrives, and keeps it to its end.
pub struct Snapshot {
    pub(super) config: Arc<Config>,
    pub(super) agents: HashMap<String, Agent>,
    /// Each front's OpenAPI document, by (listener, prefix).
    openapi: HashMap<(SocketAddr, String), Bytes>,
    /// When it was built, in Unix seconds (the OpenAI models' `created`).
    pub(super) loaded_at: u64,
}

/// An agent's health check, as the checker runs it.
pub struct HealthTarget {
    pub agent: Arc<str>,
    pub uri: Uri,
    pub client: upstream::Client,
    pub up: Arc<AtomicBool>,
    pub every: Duration,
    pub timeout: Duration,
    /// The agent's `upstream_token`, sent as with chats.
    pub token: Option<crate::config::Secret>,
}

impl Snapshot {
    /// `demo` maps the ids of `upstream = "demo"` agents to where their demo backend listens.
    /// An agent of `previous` with the same backend keeps its connection pool and health.
    pub fn build(
        config: Arc<Config>,
        demo: &HashMap<String, SocketAddr>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let mut agents = HashMap::new();
        for a in config.agents() {
            let base = match &a.upstream {
                Upstream::Http(uri) => uri.clone(),
                Upstream::Demo => {
                    let addr = demo
                        .get(&a.id)
                        .ok_or_else(|| format!("agent {}: demo backend not started", a.id))?;
                    format!("http://{addr}")
                        .parse()
                        .map_err(|e| format!("agent {}: {e}", a.id))?
                }
            };
            let old = previous.and_then(|p| p.agents.get(&a.id));
            let client = match old {
                Some(old)
                    if old.base == base && old.config.timeouts.connect == a.timeouts.connect =>
                {
                    old.client.clone()
                }
                _ => upstream::client(a.timeouts.connect),
            };
            let up = match old {
                Some(old) if old.base == base && old.config.health_check == a.health_check => {
                    old.up.clone()
                }
                _ => Arc::new(AtomicBool::new(true)),
            };
            agents.insert(
                a.id.clone(),
                Agent {
                    config: a.clone(),
                    base,
                    client,
                    label: Arc::from(a.id.as_str()),
                    up,
                },
            );
        }
        let openapi = config
            .fronts()
            .iter()
            .map(|f| {
                let doc = Bytes::from(crate::openapi::document(f).to_string());
                ((f.listen, f.prefix.clone()), doc)
            })
            .collect();
        Ok(Snapshot {
            config,
            agents,
            openapi,
            loaded_at: u64::try_from(crate::store::now_ms() / 1000).unwrap_or(0),
        })
    }

    /// The id of the agent a `model` names (the OpenAI APIs): an agent's id (or UUID), else
    /// the first agent, in file order, with that `name`; else `model` as it stands.
    pub(super) fn model_agent<'a>(&'a self, model: &'a str) -> &'a str {
        if self.agent(model).is_some() {
            return model;
        }
        let named = self.config.agents().iter().find(|a| a.name == model);
        named.map_or(model, |a| a.id.as_str())
    }

    /// The agent a path names (see [`Config::find_agent`]: a UUID in either case).
    pub(super) fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents
            .get(id)
            .or_else(|| self.agents.get(&self.config.find_agent(id)?.id))
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// `{prefix}/openapi.json`: the front's OpenAPI document, unauthenticated.
    pub(super) fn openapi_document(
        &self,
        front: &FrontConfig,
        method: &Method,
    ) -> Response<GatewayBody> {
        if method != Method::GET && method != Method::HEAD {
            return error_response(
                &ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                )
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD")),
            );
        }
        let doc = self
            .openapi
            .get(&(front.listen, front.prefix.clone()))
            .cloned()
            .unwrap_or_else(|| Bytes::from(crate::openapi::document(front).to_string()));
        json_response(StatusCode::OK, doc)
    }

    /// False while the agent's health check fails (true for an agent without one).
    pub fn agent_up(&self, id: &str) -> bool {
        self.agents
            .get(id)
            .is_some_and(|a| a.up.load(Ordering::Relaxed))
    }

    /// The health checks of this snapshot's agents that have one.
    pub fn health_targets(&self) -> Vec<HealthTarget> {
        let mut targets = Vec::new();
        for agent in self.agents.values() {
            let Some(path) = &agent.config.health_check else {
                continue;
            };
            let base_path = agent.base.path().trim_end_matches('/');
            let uri = Uri::builder()
                .scheme(agent.base.scheme_str().unwrap_or("http"))
                .authority(agent.base.authority().map_or("", |a| a.as_str()))
                .path_and_query(format!("{base_path}{path}"))
                .build();
            let Ok(uri) = uri else {
                tracing::warn!(agent = %agent.config.id, "health check URL is invalid; not checked");
                continue;
            };
            let t = agent.config.timeouts;
            targets.push(HealthTarget {
                agent: agent.label.clone(),
                uri,
                client: agent.client.clone(),
                up: agent.up.clone(),
                every: agent.config.health_interval,
                timeout: (t.connect + t.first_byte).min(agent.config.health_interval),
                token: agent.config.upstream_token.clone(),
            });
        }
        targets
    }
}

impl Agent {
    /// False while the agent is disabled or its health check fails.
    pub(super) fn running(&self) -> bool {
        self.config.enabled && self.up.load(Ordering::Relaxed)
    }
}
