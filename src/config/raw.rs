//! The configuration file as written: serde shapes, one per TOML table. The field comments are
//! the user documentation of every key.
//!
//! Free-form string values (addresses, URLs, paths, ids, names, tokens) go through `${ENV}`
//! substitution; enum values (`api`, `format`, `log_format`, `upstream_api`) do not. Values keep
//! their source span so that validation can point at them.

use serde::Deserialize;
use toml::Spanned;

use crate::formats::Format;
use crate::fronts::Api;

use super::model::ReserveMode;

/// A string value with its location in the file.
pub(crate) type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Listeners, TLS, shutdown and request limits.
    #[serde(default)]
    pub server: RawServer,
    /// Where keys, credits and conversations are kept.
    #[serde(default)]
    pub store: RawStore,
    /// Fleet-wide rate limiting and the default limits of new keys.
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// The chat APIs clients call, each on a path prefix and/or its own listener.
    #[serde(default)]
    pub front: Vec<RawFront>,
    /// The agents agentgate proxies, and the backend behind each.
    #[serde(default)]
    pub agent: Vec<RawAgent>,
    /// Teams of agents answering together (`POST {prefix}/api/teams/{id}/chat` on an `agents` front).
    #[serde(default)]
    pub team: Vec<RawTeam>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Main listener, `IP:PORT` (default `127.0.0.1:8080`). Fronts without a `listen` of their own
    /// are served here, as are `/healthz` and `/readyz`.
    pub listen: Option<Str>,
    /// Admin listener, `IP:PORT` (optional): `/metrics`, `/healthz`, `/readyz` and the admin API
    /// under `/admin/v1/`. Never served with TLS; keep it on a private interface.
    pub admin_listen: Option<Str>,
    /// Bearer token of the admin API; required when `admin_listen` is set, at least 16
    /// characters. Use `${ENV}` rather than writing it in the file.
    pub admin_token: Option<Str>,
    /// Instead of `admin_token`: a file holding it (relative to this file's directory),
    /// created with a random token when it does not exist yet.
    pub admin_token_file: Option<Str>,
    /// Seconds given to in-flight requests and streams to finish on shutdown (default 30).
    pub drain_timeout_s: Option<u64>,
    /// Largest request body accepted, in bytes (default 1048576); larger bodies get 413.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Largest answer kept whole, in bytes (default 8388608): a sync answer past it is 502, a
    /// stream goes on but its transcript is cut there and marked truncated.
    pub max_answer_bytes: Option<Spanned<u64>>,
    /// Seconds a new connection gets to send its first request's headers (TLS handshake and
    /// HTTP/2 preface included; default 10); a silent or half-open connection is closed.
    pub header_read_timeout_s: Option<Spanned<u64>>,
    /// Seconds a connection may stay open with no request in flight (HTTP/1.1 keep-alive and
    /// HTTP/2; default 60); it is then closed gracefully.
    pub idle_timeout_s: Option<Spanned<u64>>,
    /// Seconds a client gets to send a request body once its headers are in (default 30);
    /// slower bodies get 408.
    pub body_read_timeout_s: Option<Spanned<u64>>,
    /// Open connections accepted on the main and front listeners together (default 10000);
    /// beyond it new connections are closed at once. The admin listener is not counted.
    pub max_connections: Option<Spanned<u64>>,
    /// Log output: `"text"` (default) or `"json"`.
    pub log_format: Option<RawLogFormat>,
    /// TLS for the main listener and every front listener (optional).
    pub tls: Option<RawTls>,
    /// Reload the config when its file changes (polled every second; default true). SIGHUP
    /// reloads it too. A config that fails validation is refused and the running one stays.
    pub watch_config: Option<bool>,
}

/// `log_format` values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogFormat {
    Text,
    Json,
}

/// `[server.tls]`: both keys are required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// PEM certificate chain; relative paths start at the config file's directory.
    pub cert: Str,
    /// PEM private key; relative paths start at the config file's directory.
    pub key: Str,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    /// `sqlite://PATH` (relative to the config file's directory; `sqlite:///abs/path` for an
    /// absolute one), `sqlite::memory:` (nothing kept; tests), or `postgres://USER:PASS@HOST/DB`
    /// (shared by replicas). Default `sqlite://data/agentgate.db`.
    pub url: Option<Str>,
    /// Seconds after which an unsettled credit reservation (a crashed replica's) is settled to
    /// the agent's base cost (default 900). A live stream extends its own.
    pub reservation_timeout_s: Option<Spanned<u64>>,
    /// Credits a replica leases from an account's balance at once, to serve requests without a
    /// store round trip each (default 0: one reservation per request). PostgreSQL only.
    pub lease_credits: Option<Spanned<f64>>,
    /// Seconds an unused lease is kept before its rest returns to the balance (default 30).
    pub lease_timeout_s: Option<Spanned<u64>>,
    /// Seconds an `Idempotency-Key` answer is kept for replay before it is deleted and the key
    /// can be used again (default 86400).
    pub idempotency_ttl_s: Option<Spanned<u64>>,
}

/// `[rate_limit]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    /// `redis://` or `rediss://` URL of a Redis shared by replicas for global limits
    /// (optional; absent: each replica limits locally). Redis unreachable: limits fail open.
    pub redis_url: Option<Str>,
    /// Prefix of every Redis key agentgate writes (default `agentgate`).
    pub key_prefix: Option<Str>,
    /// Requests per second allowed to a key created without its own rate (optional).
    pub key_rate_per_second: Option<Spanned<f64>>,
    /// Burst allowed to such a key (default: the rate, rounded up).
    pub key_rate_burst: Option<Spanned<u32>>,
    /// Concurrent streams allowed to a key created without its own cap (optional).
    pub key_max_streams: Option<Spanned<u32>>,
}

/// `[[front]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFront {
    /// The chat API clients speak: `pharen`, `chatbase`, `agents` or `guayaba`.
    pub api: Spanned<Api>,
    /// Path prefix of every path of this front: `""` or `/segment[/segment…]`, no trailing
    /// slash (default `""`). Two fronts on one listener need different prefixes.
    pub prefix: Option<Str>,
    /// A listener of its own, `IP:PORT`, instead of `[server] listen` (optional).
    pub listen: Option<Str>,
    /// Stream format sent to clients: `ui-message`, `session-delta` or `text-done` (default:
    /// the API's own: `ui-message` for pharen and chatbase, `text-done` for agents,
    /// `session-delta` for guayaba).
    pub format: Option<Format>,
    /// `ui-message` only: also write an `event: <type>` line before each `data:` line, as
    /// seed 002 shows (default false; the AI SDK writes `data:` only).
    pub event_lines: Option<Spanned<bool>>,
    /// `text-done` only: render tool calls and reasoning as text instead of dropping them
    /// (default false).
    pub tools_as_text: Option<Spanned<bool>>,
    /// Whether clients must send an API key (default true). `false` opens the front: no key,
    /// no scopes, no credits, no per-key limits (agents' own rate limits still apply). For a
    /// trusted network only; requests run as account `anonymous`.
    pub require_key: Option<bool>,
    /// Browser origins allowed to call this front (CORS): `scheme://host[:port]` entries, or
    /// `["*"]` for any (default none: no CORS headers). The console's origin (the admin
    /// listener's) is always allowed.
    pub cors_origins: Option<Vec<Str>>,
}

/// `[[agent]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    /// The agent's id in every front's paths: 1 to 128 of `A-Z a-z 0-9 . _ -`. A `pharen` front
    /// only reaches agents whose id is a UUID.
    pub id: Str,
    /// Display name (default: the id); the `agents` API returns it as `agent_name`.
    pub name: Option<Str>,
    /// Base URL of the backend (`http://` or `https://`, may carry a base path), or `"demo"`:
    /// an echo backend speaking `upstream_api`, started inside `agentgate serve`.
    pub upstream: Str,
    /// The chat API the backend speaks: `pharen`, `chatbase`, `agents`, `guayaba`, `ag-ui`,
    /// `openai-chat` (`POST {upstream}/v1/chat/completions`) or `openai-responses`
    /// (`POST {upstream}/v1/responses`); for the last two `upstream` is the server's base URL
    /// without `/v1`.
    pub upstream_api: Api,
    /// The agent's id on the backend (default: `id`); a UUID when `upstream_api` is `pharen`;
    /// the `model` sent to an `openai-chat` or `openai-responses` backend.
    pub upstream_agent_id: Option<Str>,
    /// Credential sent to the backend as `Authorization: Bearer <token>` (optional). Use
    /// `${ENV}`. The client's own key never reaches the backend.
    pub upstream_token: Option<Str>,
    /// Base cost of one chat, in credits (default 1).
    pub credits_per_message: Option<Spanned<f64>>,
    /// Most credits charged for the usage the backend reports, on top of the base cost
    /// (default 10). The reservation made before a call is base cost + this cap.
    pub max_usage_credits: Option<Spanned<f64>>,
    /// Credits per 1000 characters of answer, metered while streaming (default 0).
    pub credits_per_1k_output_chars: Option<Spanned<f64>>,
    /// Credits per 1000 input (prompt) tokens the backend reports in its usage (default 0;
    /// `openai-chat`, `openai-responses`). Within `max_usage_credits`.
    pub credits_per_1k_input_tokens: Option<Spanned<f64>>,
    /// Credits per 1000 output (completion) tokens the backend reports in its usage (default
    /// 0). Within `max_usage_credits`. An answer whose backend reports no output tokens is
    /// priced at one token per 4 characters of output.
    pub credits_per_1k_output_tokens: Option<Spanned<f64>>,
    /// Most recorded messages (user and assistant, the newest) sent before the new one to an
    /// `openai-chat` backend, which keeps no conversation itself (default 50, at most 1000;
    /// 0: none).
    pub history_messages: Option<Spanned<u32>>,
    /// What a chat reserves before the backend is called: `"cap"` (default), base cost +
    /// `max_usage_credits`; or `"available"`, base cost + what the account holds up to that
    /// cap — a small balance can still chat, the answer is cut off (and its usage clamped)
    /// when that reservation is spent.
    pub reserve: Option<ReserveMode>,
    /// Requests per second allowed to this agent, all keys together, a real number (`0.2`:
    /// one request every 5 s; optional).
    pub rate_per_second: Option<Spanned<f64>>,
    /// Burst allowed to this agent (default: the rate, rounded up).
    pub rate_burst: Option<Spanned<u32>>,
    /// Concurrent streams allowed to this agent, all keys together (optional).
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// Milliseconds to connect to the backend (default 2000); past it: 504.
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// Milliseconds from the connection being ready (new, or taken from the pool) to the
    /// answer's head (default 30000); past it: 504. Not added to `connect_timeout_ms`.
    pub first_byte_timeout_ms: Option<Spanned<u64>>,
    /// Milliseconds of silence allowed inside a streamed answer (default 30000); past it the
    /// stream ends with an error event.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// `false`: every chat gets 409 "agent is not running" (default true).
    pub enabled: Option<bool>,
    /// `false`: conversations with this agent are not stored, so history, inbox and sessions
    /// stay empty (default true).
    pub record: Option<bool>,
    /// Path on the backend polled for health (optional, e.g. `/health`); while it fails,
    /// chats get 409.
    pub health_check: Option<Str>,
    /// Milliseconds between health checks (default 10000); needs `health_check`. One failed
    /// check (an error, a timeout or a status other than 2xx) marks the agent down, one
    /// passed check marks it up again.
    pub health_interval_ms: Option<Spanned<u64>>,
}

/// `[[team]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTeam {
    /// The team's id in `/api/teams/{id}/chat`: 1 to 128 of `A-Z a-z 0-9 . _ -`.
    pub id: Str,
    /// Display name (default: the id).
    pub name: Option<Str>,
    /// Ids of the agents that answer, concurrently (at least one, no repeats).
    pub members: Spanned<Vec<Str>>,
    /// Modes a request may ask for; the first is used when a request names none (default
    /// `["brainstorm"]`). Lower-case letters, digits, `-` and `_`.
    pub modes: Option<Spanned<Vec<Str>>>,
    /// Id of an agent that summarises the members' answers (optional).
    pub summarizer: Option<Str>,
    /// Milliseconds a member may take before its entry becomes an error (optional; default:
    /// the member's own timeouts).
    pub member_timeout_ms: Option<Spanned<u64>>,
}
