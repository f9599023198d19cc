//! Configuration: the TOML file, `${ENV}` substitution, and the validated immutable [`Config`].
//!
//! The file's keys are documented on the raw serde structs (`raw.rs`); `config/agentgate.toml`
//! is the embedded default ([`DEFAULT_CONFIG`]). Every problem is reported as
//! `FILE:LINE:COL: reason`, all of them at once when validation finds several.

pub mod defaults;
mod env;
mod error;
mod model;
mod raw;
mod secret;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use env::{process_env, EnvError, EnvLookup};
pub use error::{ConfigError, Diagnostic};
pub use model::{
    AdminConfig, AgentConfig, AgentCredits, FrontConfig, KeyLimits, LogFormat, Rate,
    RateLimitConfig, ReserveMode, ServerConfig, StoreConfig, StoreUrl, TeamConfig, TlsConfig,
    Upstream, UpstreamTimeouts,
};
pub use secret::Secret;

use error::SourceMap;

/// The embedded default configuration (`config/agentgate.toml`): used by `serve` when no
/// `--config` is given and no file is found.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/agentgate.toml");

/// The config file `serve` and the admin subcommands read by default; when it is absent, the
/// embedded [`DEFAULT_CONFIG`] is used instead.
pub const DEFAULT_CONFIG_PATH: &str = "config/agentgate.toml";

/// The origin [`Config::embedded`] names in its messages.
pub const DEFAULT_CONFIG_ORIGIN: &str = "<embedded config/agentgate.toml>";

/// A validated configuration snapshot. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    server: ServerConfig,
    store: StoreConfig,
    rate_limit: RateLimitConfig,
    fronts: Vec<FrontConfig>,
    agents: Vec<AgentConfig>,
    teams: Vec<TeamConfig>,
    agent_index: HashMap<String, usize>,
    team_index: HashMap<String, usize>,
    base_dir: PathBuf,
}

impl Config {
    /// Reads and validates the file at `path`, with the process environment for `${ENV}`.
    /// Relative paths in it start at the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// [`Config::load`] with another source of `${ENV}` values.
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self::parse_with(&text, &path.display().to_string(), &base_dir, env)
    }

    /// Validates `text`; `origin` names it in messages. Relative paths start at the current
    /// directory; `${ENV}` reads the process environment.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::parse_with(text, origin, &base_dir, &process_env)
    }

    /// [`Config::parse`] with an explicit base directory and source of `${ENV}` values.
    pub fn parse_with(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let map = SourceMap::new(origin, text);
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(vec![map.toml_error(&e)]))?;
        validate::validate(raw, &map, env, base_dir).map_err(ConfigError::Invalid)
    }

    /// The embedded default configuration ([`DEFAULT_CONFIG`]), relative to the current
    /// directory.
    pub fn embedded() -> Result<Config, ConfigError> {
        Self::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN)
    }

    /// The config at `path`; the embedded quick start when `path` does not exist and is the
    /// default path (`config/agentgate.toml`), so the binary runs from anywhere.
    pub fn load_or_embedded(path: &Path) -> Result<Config, ConfigError> {
        if path == Path::new(DEFAULT_CONFIG_PATH) && !path.exists() {
            return Self::embedded();
        }
        Self::load(path)
    }

    pub(crate) fn from_parts(
        server: ServerConfig,
        store: StoreConfig,
        rate_limit: RateLimitConfig,
        fronts: Vec<FrontConfig>,
        agents: Vec<AgentConfig>,
        teams: Vec<TeamConfig>,
        base_dir: PathBuf,
    ) -> Config {
        let agent_index = index_by_id(agents.iter().map(|a| a.id.as_str()));
        let team_index = index_by_id(teams.iter().map(|t| t.id.as_str()));
        Config {
            server,
            store,
            rate_limit,
            fronts,
            agents,
            teams,
            agent_index,
            team_index,
            base_dir,
        }
    }

    pub fn server(&self) -> &ServerConfig {
        &self.server
    }

    pub fn store(&self) -> &StoreConfig {
        &self.store
    }

    pub fn rate_limit(&self) -> &RateLimitConfig {
        &self.rate_limit
    }

    /// The fronts, in file order.
    pub fn fronts(&self) -> &[FrontConfig] {
        &self.fronts
    }

    /// The agents, in file order.
    pub fn agents(&self) -> &[AgentConfig] {
        &self.agents
    }

    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agent_index.get(id).and_then(|&i| self.agents.get(i))
    }

    /// The agent a client or operator names: by its exact id, or — when the id is a UUID in
    /// its hyphenated form — by the same UUID in either case (`…000A` is `…000a`).
    pub fn find_agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agent(id).or_else(|| {
            let uuid = (id.len() == 36).then(|| uuid::Uuid::parse_str(id).ok())??;
            self.agents.iter().find(|a| a.uuid() == Some(uuid))
        })
    }

    /// The teams, in file order.
    pub fn teams(&self) -> &[TeamConfig] {
        &self.teams
    }

    pub fn team(&self, id: &str) -> Option<&TeamConfig> {
        self.team_index.get(id).and_then(|&i| self.teams.get(i))
    }

    /// This config with `[server] listen` replaced by `listen` (`serve --listen`): the fronts
    /// served on the old main listener move with it.
    pub fn with_listen(mut self, listen: SocketAddr) -> Config {
        let old = std::mem::replace(&mut self.server.listen, listen);
        for front in self.fronts.iter_mut().filter(|f| f.listen == old) {
            front.listen = listen;
        }
        self
    }

    /// Every client listener: `[server] listen` first, then each other front listener once,
    /// in file order. (The admin listener is [`ServerConfig::admin`].)
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let mut listeners = vec![self.server.listen];
        for front in &self.fronts {
            if !listeners.contains(&front.listen) {
                listeners.push(front.listen);
            }
        }
        listeners
    }

    /// The fronts served on `listen`, in file order.
    pub fn fronts_on(&self, listen: SocketAddr) -> impl Iterator<Item = &FrontConfig> {
        self.fronts.iter().filter(move |f| f.listen == listen)
    }

    /// The directory relative paths were resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }
}

fn index_by_id<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    ids.enumerate().map(|(i, id)| (id.to_owned(), i)).collect()
}

#[cfg(test)]
mod tests;
