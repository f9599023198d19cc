//! The validated configuration: plain immutable data, every default applied, every path resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::formats::Format;
use crate::fronts::Api;

use super::secret::Secret;

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Main listener: fronts without their own, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// Admin listener and its token, when configured.
    pub admin: Option<AdminConfig>,
    /// Time given to in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    /// Largest answer kept whole: a sync answer past it is 502; a stream's transcript is cut.
    pub max_answer_bytes: usize,
    /// Time a new connection gets to send its first request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Time a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// Open connections on the main and front listeners together.
    pub max_connections: usize,
    pub log_format: LogFormat,
    /// TLS for the main listener and every front listener.
    pub tls: Option<TlsConfig>,
    /// Reload the config when its file changes.
    pub watch_config: bool,
}

/// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/admin/v1/…`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Expected `Authorization: Bearer` value of the admin API.
    pub token: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// PEM files, resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[store]`
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// Age past which an unsettled reservation is settled to the base cost.
    pub reservation_timeout: Duration,
    /// Credits leased at once (0: a reservation per request).
    pub lease_credits: f64,
    pub lease_timeout: Duration,
    /// Age past which an idempotent answer is deleted (its key can then be used again).
    pub idempotency_ttl: Duration,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// SQLite database file (resolved against the config file's directory).
    Sqlite(PathBuf),
    /// SQLite in memory (`sqlite::memory:`): nothing survives the process.
    SqliteMemory,
    /// PostgreSQL connection URL (`postgres://` or `postgresql://`); it may carry a password.
    Postgres(Secret),
}

/// `[rate_limit]`
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Shared Redis for global limits; `None`: limits are local to each replica.
    pub redis_url: Option<Secret>,
    pub key_prefix: String,
    /// Limits of keys created without their own.
    pub key_defaults: KeyLimits,
}

/// Limits of one API key.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KeyLimits {
    pub rate: Option<Rate>,
    pub max_streams: Option<u32>,
}

/// A GCRA rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Finite and > 0.
    pub per_second: f64,
    /// ≥ 1.
    pub burst: u32,
}

/// `[[front]]`: a chat API served to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConfig {
    pub api: Api,
    /// `""` or `/segment[/segment…]`, without a trailing slash.
    pub prefix: String,
    /// The listener serving it: its own, or `[server] listen`.
    pub listen: SocketAddr,
    /// Stream format sent to clients.
    pub format: Format,
    /// `ui-message`: write `event: <type>` lines too.
    pub event_lines: bool,
    /// `text-done`: render tool calls and reasoning as text.
    pub tools_as_text: bool,
    /// Clients must send an API key (keys, scopes, credits, per-key limits apply).
    pub require_key: bool,
    /// Browser origins allowed (CORS), normalised: `scheme://host[:port]` or `*`.
    pub cors_origins: Vec<String>,
}

impl FrontConfig {
    /// The front as one of its paths served by another API's module sees it
    /// ([`crate::apis::RouteDef::via`]): that API, in its own stream format.
    pub fn served_by(&self, api: Api) -> FrontConfig {
        FrontConfig {
            api,
            format: api.default_format(),
            ..self.clone()
        }
    }
}

/// `[[agent]]`
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Path id on every front.
    pub id: String,
    pub name: String,
    pub upstream: Upstream,
    /// The chat API the backend speaks.
    pub upstream_api: Api,
    /// The agent's id on the backend.
    pub upstream_agent_id: String,
    /// Sent to the backend as `Authorization: Bearer`.
    pub upstream_token: Option<Secret>,
    pub credits: AgentCredits,
    /// Most recorded messages sent as history to a backend that keeps no conversation
    /// (`openai-chat`).
    pub history_messages: u32,
    /// How much a chat reserves.
    pub reserve: ReserveMode,
    pub rate: Option<Rate>,
    pub max_concurrent_streams: Option<u32>,
    pub timeouts: UpstreamTimeouts,
    /// `false`: chats get 409 "agent is not running".
    pub enabled: bool,
    /// Store this agent's conversations.
    pub record: bool,
    /// Path polled on the backend (starts with `/`).
    pub health_check: Option<String>,
    /// Time between two health checks.
    pub health_interval: Duration,
}

impl AgentConfig {
    /// The id as a UUID: only such agents are reachable through a `pharen` front.
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.id).ok()
    }
}

/// Where an agent's backend is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `http://` or `https://` base URL: scheme and authority, maybe a base path (no trailing
    /// slash), no query.
    Http(http::Uri),
    /// The in-process echo backend started by `serve`, speaking the agent's `upstream_api`.
    Demo,
}

/// What a chat with an agent costs. All values finite and ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentCredits {
    /// Base cost of one chat.
    pub per_message: f64,
    /// Cap on the usage the backend reports.
    pub max_usage: f64,
    /// Output pricing, metered while streaming.
    pub per_1k_output_chars: f64,
    /// Pricing of the input tokens the backend reports.
    pub per_1k_input_tokens: f64,
    /// Pricing of the output tokens the backend reports (estimated from the output's
    /// characters while streaming, and when it reports none).
    pub per_1k_output_tokens: f64,
}

impl AgentCredits {
    /// Nothing charged, nothing shown: an open front's answers.
    pub const FREE: AgentCredits = AgentCredits {
        per_message: 0.0,
        max_usage: 0.0,
        per_1k_output_chars: 0.0,
        per_1k_input_tokens: 0.0,
        per_1k_output_tokens: 0.0,
    };

    /// What a chat reserves before it reaches the backend: base cost + usage cap.
    pub fn reservation(&self) -> f64 {
        self.per_message + self.max_usage
    }

    /// This pricing for an answer whose reservation holds `reserved` credits: the usage cap
    /// lowered to what the reservation covers beyond the base cost (`reserve = "available"`).
    pub fn within(&self, reserved: f64) -> AgentCredits {
        AgentCredits {
            max_usage: self.max_usage.min((reserved - self.per_message).max(0.0)),
            ..*self
        }
    }
}

/// `[[agent]] reserve`: how much a chat reserves before the backend is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReserveMode {
    /// Base cost + the usage cap: any answer is covered (SPEC §4).
    #[default]
    Cap,
    /// Base cost + what the account holds beyond it, up to the cap: the mid-stream limit ends
    /// an answer that spends it, and usage is clamped to it.
    Available,
}

/// Time limits of calls to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    /// Longest silence inside a stream.
    pub idle: Duration,
}

/// `[[team]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamConfig {
    pub id: String,
    pub name: String,
    /// Agent ids, all configured, no repeats, at least one.
    pub members: Vec<String>,
    /// At least one, no repeats; the first is the default.
    pub modes: Vec<String>,
    /// Agent id of the summariser.
    pub summarizer: Option<String>,
    /// Per-member time limit; `None`: the member's own timeouts.
    pub member_timeout: Option<Duration>,
}

impl TeamConfig {
    /// The mode used when a request names none.
    pub fn default_mode(&self) -> &str {
        self.modes.first().map(String::as_str).unwrap_or_default()
    }

    pub fn has_mode(&self, mode: &str) -> bool {
        self.modes.iter().any(|m| m == mode)
    }
}
