//! Raw file → validated [`Config`]: `${ENV}` substitution, defaults, path resolution, and every
//! rule the types alone cannot state. Problems are collected, not returned at the first one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::formats::Format;
use crate::fronts::{cors, Api};
use crate::limits::default_burst;

use super::defaults;
use super::env::{self, EnvLookup};
use super::error::{Diagnostic, SourceMap};
use super::model::*;
use super::raw::*;
use super::secret::Secret;
use super::Config;

/// Validates `raw`, read from the text behind `map`. Relative paths start at `base_dir`.
pub(crate) fn validate(
    raw: RawConfig,
    map: &SourceMap<'_>,
    env: EnvLookup<'_>,
    base_dir: &Path,
) -> Result<Config, Vec<Diagnostic>> {
    let mut v = Validator {
        map,
        env,
        base_dir,
        errors: Vec::new(),
    };
    let config = v.config(raw);
    match config {
        Some(config) if v.errors.is_empty() => Ok(config),
        _ => {
            v.errors.sort_by_key(|d| (d.line, d.column));
            Err(v.errors)
        }
    }
}

struct Validator<'a> {
    map: &'a SourceMap<'a>,
    env: EnvLookup<'a>,
    base_dir: &'a Path,
    errors: Vec<Diagnostic>,
}

/// A front that passed validation, with the span its conflicts are reported at.
struct PlacedFront {
    front: FrontConfig,
    span: Range<usize>,
}

impl Validator<'_> {
    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.main_listen(&raw.server);
        let server = self.server(&raw.server, listen);
        let store = self.store(&raw.store);
        let rate_limit = self.rate_limit(&raw.rate_limit);
        let (agents, agent_ids) = self.agents(&raw.agent);
        let admin_listen = server
            .as_ref()
            .and_then(|s| s.admin.as_ref())
            .map(|a| a.listen);
        let fronts = self.fronts(&raw.front, listen, admin_listen);
        let teams = self.teams(&raw.team, &agent_ids);
        Some(Config::from_parts(
            server?,
            store?,
            rate_limit?,
            fronts,
            agents,
            teams,
            self.base_dir.to_path_buf(),
        ))
    }

    // ----- primitives -------------------------------------------------------------------------

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.map.diagnostic(span, message));
    }

    /// Records `key: message` at `span` and returns `None`.
    fn fail<T>(&mut self, span: Range<usize>, key: &str, message: impl AsRef<str>) -> Option<T> {
        self.error(span, format!("{key}: {}", message.as_ref()));
        None
    }

    /// A string value after `${ENV}` substitution.
    fn text(&mut self, key: &str, value: &Str) -> Option<String> {
        match env::expand(value.get_ref(), self.env) {
            Ok(text) => Some(text),
            Err(e) => self.fail(value.span(), key, e.to_string()),
        }
    }

    /// A string value, substituted, then checked or converted by `check`.
    fn checked<T>(
        &mut self,
        key: &str,
        value: &Str,
        check: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(key, value)?;
        match check(text) {
            Ok(t) => Some(t),
            Err(reason) => self.fail(value.span(), key, reason),
        }
    }

    fn addr(&mut self, key: &str, value: &Str) -> Option<SocketAddr> {
        self.checked(key, value, |text| parse_addr(&text))
    }

    fn path(&mut self, key: &str, value: &Str) -> Option<PathBuf> {
        let base_dir = self.base_dir;
        self.checked(key, value, |text| {
            if text.is_empty() {
                Err("the path is empty".into())
            } else {
                Ok(base_dir.join(text))
            }
        })
    }

    /// A whole number of `unit`s, > 0.
    fn duration(
        &mut self,
        key: &str,
        value: Option<&Spanned<u64>>,
        default: u64,
        unit: fn(u64) -> Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(unit(default)),
            Some(v) => self.positive_duration(key, v, unit),
        }
    }

    fn positive_duration(
        &mut self,
        key: &str,
        value: &Spanned<u64>,
        unit: fn(u64) -> Duration,
    ) -> Option<Duration> {
        match *value.get_ref() {
            0 => self.fail(value.span(), key, "must be greater than 0"),
            n => Some(unit(n)),
        }
    }

    /// A count that must be ≥ 1 when given.
    fn count(&mut self, key: &str, value: Option<&Spanned<u32>>) -> Option<Option<u32>> {
        match value {
            None => Some(None),
            Some(v) if *v.get_ref() == 0 => self.fail(v.span(), key, "must be at least 1"),
            Some(v) => Some(Some(*v.get_ref())),
        }
    }

    /// An amount of credits: finite and ≥ 0.
    fn credits(&mut self, key: &str, value: Option<&Spanned<f64>>, default: f64) -> Option<f64> {
        let Some(v) = value else {
            return Some(default);
        };
        let amount = *v.get_ref();
        if amount.is_finite() && amount >= 0.0 {
            Some(amount)
        } else {
            self.fail(v.span(), key, "must be a finite number ≥ 0")
        }
    }

    /// A GCRA rate from its two keys; the burst defaults to the rate rounded up.
    fn rate(
        &mut self,
        (rate_key, per_second): (&str, Option<&Spanned<f64>>),
        (burst_key, burst): (&str, Option<&Spanned<u32>>),
    ) -> Option<Option<Rate>> {
        let Some(per_second) = per_second else {
            return match burst {
                None => Some(None),
                Some(b) => self.fail(b.span(), burst_key, format!("needs `{rate_key}`")),
            };
        };
        let rate = *per_second.get_ref();
        let rate_ok = rate.is_finite() && rate > 0.0;
        if !rate_ok {
            self.error(
                per_second.span(),
                format!("{rate_key}: must be a finite number > 0"),
            );
        }
        let burst = match burst {
            None => Some(default_burst(rate)),
            Some(b) if *b.get_ref() == 0 => self.fail(b.span(), burst_key, "must be at least 1"),
            Some(b) => Some(*b.get_ref()),
        };
        match (rate_ok, burst) {
            (true, Some(burst)) => Some(Some(Rate {
                per_second: rate,
                burst,
            })),
            _ => None,
        }
    }

    // ----- [server] ---------------------------------------------------------------------------

    fn main_listen(&mut self, raw: &RawServer) -> Option<SocketAddr> {
        match &raw.listen {
            Some(v) => self.addr("listen", v),
            None => Some(defaults::LISTEN),
        }
    }

    fn server(&mut self, raw: &RawServer, listen: Option<SocketAddr>) -> Option<ServerConfig> {
        let admin = self.admin(raw, listen);
        let max_body_bytes = self.max_body_bytes(raw.max_body_bytes.as_ref());
        let max_answer_bytes = self.byte_limit(
            "max_answer_bytes",
            raw.max_answer_bytes.as_ref(),
            defaults::MAX_ANSWER_BYTES,
        );
        let header_read_timeout = self.positive_s(
            "header_read_timeout_s",
            raw.header_read_timeout_s.as_ref(),
            defaults::HEADER_READ_TIMEOUT_S,
        );
        let idle_timeout = self.positive_s(
            "idle_timeout_s",
            raw.idle_timeout_s.as_ref(),
            defaults::IDLE_TIMEOUT_S,
        );
        let body_read_timeout = self.positive_s(
            "body_read_timeout_s",
            raw.body_read_timeout_s.as_ref(),
            defaults::BODY_READ_TIMEOUT_S,
        );
        let max_connections = self.max_connections(raw.max_connections.as_ref());
        let tls = match &raw.tls {
            Some(tls) => self.tls(tls).map(Some),
            None => Some(None),
        };
        Some(ServerConfig {
            listen: listen?,
            admin: admin?,
            drain_timeout: Duration::from_secs(
                raw.drain_timeout_s.unwrap_or(defaults::DRAIN_TIMEOUT_S),
            ),
            max_body_bytes: max_body_bytes?,
            max_answer_bytes: max_answer_bytes?,
            header_read_timeout: header_read_timeout?,
            idle_timeout: idle_timeout?,
            body_read_timeout: body_read_timeout?,
            max_connections: max_connections?,
            log_format: match raw.log_format {
                Some(RawLogFormat::Json) => LogFormat::Json,
                Some(RawLogFormat::Text) | None => LogFormat::Text,
            },
            tls: tls?,
            watch_config: raw.watch_config.unwrap_or(defaults::WATCH_CONFIG),
        })
    }

    fn admin(
        &mut self,
        raw: &RawServer,
        main_listen: Option<SocketAddr>,
    ) -> Option<Option<AdminConfig>> {
        let token_value = match (&raw.admin_token, &raw.admin_token_file) {
            (Some(_), Some(file)) => {
                return self.fail(
                    file.span(),
                    "admin_token_file",
                    "set either `admin_token` or `admin_token_file`, not both",
                )
            }
            (token, file) => token
                .as_ref()
                .map(|t| (t, false))
                .or(file.as_ref().map(|f| (f, true))),
        };
        match (&raw.admin_listen, token_value) {
            (None, None) => Some(None),
            (None, Some((token, file))) => self.fail(
                token.span(),
                if file { "admin_token_file" } else { "admin_token" },
                "is set but `admin_listen` is not (the admin API is off)",
            ),
            (Some(listen), None) => self.fail(
                listen.span(),
                "admin_listen",
                "needs `admin_token` (use `${ENV}` to keep it out of the file) or `admin_token_file`",
            ),
            (Some(listen_value), Some((token_value, file))) => {
                let listen = self.addr("admin_listen", listen_value).and_then(|listen| {
                    if Some(listen) == main_listen {
                        self.fail(
                            listen_value.span(),
                            "admin_listen",
                            "must differ from `listen`",
                        )
                    } else {
                        Some(listen)
                    }
                });
                let token = if file {
                    let path = self.path("admin_token_file", token_value);
                    path.and_then(|path| {
                        self.checked("admin_token_file", token_value, |_| {
                            read_or_create_token(&path).and_then(admin_token)
                        })
                    })
                } else {
                    self.checked("admin_token", token_value, admin_token)
                };
                Some(Some(AdminConfig {
                    listen: listen?,
                    token: token?,
                }))
            }
        }
    }

    fn max_body_bytes(&mut self, value: Option<&Spanned<u64>>) -> Option<usize> {
        let Some(v) = value else {
            return usize::try_from(defaults::MAX_BODY_BYTES).ok();
        };
        match usize::try_from(*v.get_ref()) {
            Ok(0) => self.fail(v.span(), "max_body_bytes", "must be greater than 0"),
            Ok(n) => Some(n),
            Err(_) => self.fail(v.span(), "max_body_bytes", "is too large for this machine"),
        }
    }

    /// A size in bytes, > 0 and addressable here.
    fn byte_limit(
        &mut self,
        name: &str,
        value: Option<&Spanned<u64>>,
        default: u64,
    ) -> Option<usize> {
        let Some(v) = value else {
            return usize::try_from(default).ok();
        };
        match usize::try_from(*v.get_ref()) {
            Ok(0) => self.fail(v.span(), name, "must be greater than 0"),
            Ok(n) => Some(n),
            Err(_) => self.fail(v.span(), name, "is too large for this machine"),
        }
    }

    /// A timeout in whole seconds, at least 1 (and at most a day).
    fn positive_s(
        &mut self,
        key: &'static str,
        value: Option<&Spanned<u64>>,
        default: u64,
    ) -> Option<Duration> {
        match value.map(|v| (v, *v.get_ref())) {
            None => Some(Duration::from_secs(default)),
            Some((v, 0)) => self.fail(v.span(), key, "must be at least 1"),
            Some((v, n)) if n > 86_400 => self.fail(v.span(), key, "must be at most 86400"),
            Some((_, n)) => Some(Duration::from_secs(n)),
        }
    }

    fn max_connections(&mut self, value: Option<&Spanned<u64>>) -> Option<usize> {
        let Some(v) = value else {
            return usize::try_from(defaults::MAX_CONNECTIONS).ok();
        };
        match usize::try_from(*v.get_ref()) {
            Ok(0) => self.fail(v.span(), "max_connections", "must be at least 1"),
            // Above the semaphore's own bound.
            Ok(n) if n <= tokio::sync::Semaphore::MAX_PERMITS => Some(n),
            _ => self.fail(v.span(), "max_connections", "is too large"),
        }
    }

    fn tls(&mut self, raw: &RawTls) -> Option<TlsConfig> {
        let cert = self.path("cert", &raw.cert);
        let key = self.path("key", &raw.key);
        Some(TlsConfig {
            cert: cert?,
            key: key?,
        })
    }

    // ----- [store] and [rate_limit] -----------------------------------------------------------

    fn store(&mut self, raw: &RawStore) -> Option<StoreConfig> {
        let base_dir = self.base_dir;
        let url = match &raw.url {
            Some(v) => self.checked("url", v, |text| parse_store_url(text, base_dir)),
            None => Some(StoreUrl::Sqlite(base_dir.join(defaults::SQLITE_PATH))),
        };
        let reservation_timeout = self.duration(
            "reservation_timeout_s",
            raw.reservation_timeout_s.as_ref(),
            defaults::RESERVATION_TIMEOUT_S,
            Duration::from_secs,
        );
        let lease_credits = self.credits(
            "lease_credits",
            raw.lease_credits.as_ref(),
            defaults::LEASE_CREDITS,
        );
        let lease_timeout = self.duration(
            "lease_timeout_s",
            raw.lease_timeout_s.as_ref(),
            defaults::LEASE_TIMEOUT_S,
            Duration::from_secs,
        );
        let idempotency_ttl = self.duration(
            "idempotency_ttl_s",
            raw.idempotency_ttl_s.as_ref(),
            defaults::IDEMPOTENCY_TTL_S,
            Duration::from_secs,
        );
        Some(StoreConfig {
            url: url?,
            reservation_timeout: reservation_timeout?,
            lease_credits: lease_credits?,
            lease_timeout: lease_timeout?,
            idempotency_ttl: idempotency_ttl?,
        })
    }

    fn rate_limit(&mut self, raw: &RawRateLimit) -> Option<RateLimitConfig> {
        let redis_url = match &raw.redis_url {
            Some(v) => self.checked("redis_url", v, parse_redis_url).map(Some),
            None => Some(None),
        };
        let key_prefix = match &raw.key_prefix {
            Some(v) => self.checked("key_prefix", v, key_prefix),
            None => Some(defaults::KEY_PREFIX.to_owned()),
        };
        let rate = self.rate(
            ("key_rate_per_second", raw.key_rate_per_second.as_ref()),
            ("key_rate_burst", raw.key_rate_burst.as_ref()),
        );
        let max_streams = self.count("key_max_streams", raw.key_max_streams.as_ref());
        Some(RateLimitConfig {
            redis_url: redis_url?,
            key_prefix: key_prefix?,
            key_defaults: KeyLimits {
                rate: rate?,
                max_streams: max_streams?,
            },
        })
    }

    // ----- [[front]] --------------------------------------------------------------------------

    /// The fronts; `main_listen` is `None` when `[server] listen` is invalid (already
    /// reported): fronts on it are then checked alone, not against each other.
    fn fronts(
        &mut self,
        raw: &[RawFront],
        main_listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    ) -> Vec<FrontConfig> {
        let placed: Vec<PlacedFront> = raw
            .iter()
            .filter_map(|front| self.front(front, main_listen, admin_listen))
            .collect();
        self.check_front_conflicts(&placed);
        placed.into_iter().map(|p| p.front).collect()
    }

    fn front(
        &mut self,
        raw: &RawFront,
        main_listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    ) -> Option<PlacedFront> {
        let api = *raw.api.get_ref();
        if !api.is_front() {
            return self.fail(
                raw.api.span(),
                "api",
                format!("`{api}` is an upstream API only (an agent's `upstream_api`), not a front"),
            );
        }
        let prefix = match &raw.prefix {
            Some(v) => self.checked("prefix", v, |text| check_prefix(&text).map(|()| text)),
            None => Some(defaults::FRONT_PREFIX.to_owned()),
        };
        let listen = match &raw.listen {
            Some(v) => self.front_listen(v, admin_listen),
            None => main_listen,
        };
        let format = raw.format.unwrap_or_else(|| api.default_format());
        let event_lines = self.format_flag(
            "event_lines",
            raw.event_lines.as_ref(),
            format,
            Format::UiMessage,
        );
        let tools_as_text = self.format_flag(
            "tools_as_text",
            raw.tools_as_text.as_ref(),
            format,
            Format::TextDone,
        );
        let cors_origins: Option<Vec<String>> = raw
            .cors_origins
            .iter()
            .flatten()
            .map(|v| self.checked("cors_origins", v, |t| cors::normalize_origin(&t)))
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let span = raw
            .prefix
            .as_ref()
            .map_or_else(|| raw.api.span(), Spanned::span);
        Some(PlacedFront {
            front: FrontConfig {
                api,
                prefix: prefix?,
                listen: listen?,
                format,
                event_lines: event_lines?,
                tools_as_text: tools_as_text?,
                require_key: raw.require_key.unwrap_or(true),
                cors_origins: cors_origins?,
            },
            span,
        })
    }

    fn front_listen(&mut self, value: &Str, admin: Option<SocketAddr>) -> Option<SocketAddr> {
        let listen = self.addr("listen", value)?;
        if Some(listen) == admin {
            return self.fail(value.span(), "listen", "is the admin listener");
        }
        Some(listen)
    }

    /// A front flag that only means something for one stream format.
    fn format_flag(
        &mut self,
        key: &str,
        value: Option<&Spanned<bool>>,
        format: Format,
        applies_to: Format,
    ) -> Option<bool> {
        match value {
            Some(v) if *v.get_ref() && format != applies_to => self.fail(
                v.span(),
                key,
                format!("applies to the {applies_to} format only, and this front sends {format}"),
            ),
            Some(v) => Some(*v.get_ref()),
            None => Some(false),
        }
    }

    /// Two fronts on one listener may neither share a prefix nor hide each other's paths.
    fn check_front_conflicts(&mut self, fronts: &[PlacedFront]) {
        for (i, later) in fronts.iter().enumerate() {
            for earlier in &fronts[..i] {
                if earlier.front.listen != later.front.listen {
                    continue;
                }
                if let Some(message) = front_conflict(&earlier.front, &later.front) {
                    let (line, _) = self.map.locate(earlier.span.start);
                    self.error(later.span.clone(), format!("{message} (line {line})"));
                    break;
                }
            }
        }
    }

    // ----- [[agent]] --------------------------------------------------------------------------

    /// The valid agents, and every agent id the file names (valid or not), so that teams do
    /// not repeat an agent's own error.
    fn agents(&mut self, raw: &[RawAgent]) -> (Vec<AgentConfig>, HashSet<String>) {
        let mut first_seen: HashMap<String, Range<usize>> = HashMap::new();
        let mut agents = Vec::with_capacity(raw.len());
        for agent in raw {
            let id = self.checked("id", &agent.id, check_id);
            if let Some(id) = &id {
                if let Some(first) = first_seen.get(id) {
                    let (line, _) = self.map.locate(first.start);
                    self.error(
                        agent.id.span(),
                        format!("id: duplicate agent id `{id}` (first defined at line {line})"),
                    );
                } else {
                    first_seen.insert(id.clone(), agent.id.span());
                }
            }
            if let Some(agent) = self.agent(agent, id) {
                agents.push(agent);
            }
        }
        (agents, first_seen.into_keys().collect())
    }

    fn agent(&mut self, raw: &RawAgent, id: Option<String>) -> Option<AgentConfig> {
        if !raw.upstream_api.is_upstream() {
            let api = raw.upstream_api;
            let upstreams: Vec<&str> = Api::upstreams().map(Api::as_str).collect();
            return self.fail(
                raw.id.span(),
                "upstream_api",
                format!(
                    "`{api}` is a front only; a backend speaks one of: {}",
                    upstreams.join(", ")
                ),
            );
        }
        let name = self.name(raw.name.as_ref(), id.as_deref());
        let upstream = self.checked("upstream", &raw.upstream, parse_upstream);
        let upstream_agent_id = self.upstream_agent_id(raw, id.as_deref());
        let upstream_token = match &raw.upstream_token {
            Some(v) => self.checked("upstream_token", v, upstream_token).map(Some),
            None => Some(None),
        };
        let credits = self.agent_credits(raw);
        let history_messages = match &raw.history_messages {
            Some(v) if *v.get_ref() > defaults::MAX_HISTORY_MESSAGES => self.fail(
                v.span(),
                "history_messages",
                format!("must be at most {}", defaults::MAX_HISTORY_MESSAGES),
            ),
            Some(v) => Some(*v.get_ref()),
            None => Some(defaults::HISTORY_MESSAGES),
        };
        let upstream = match upstream {
            Some(Upstream::Http(uri))
                if crate::apis::upstream_path(raw.upstream_api, "").starts_with("/v1/")
                    && uri.path().trim_end_matches('/').ends_with("/v1") =>
            {
                self.fail(
                    raw.upstream.span(),
                    "upstream",
                    format!(
                        "ends with `/v1`, which the {} API adds itself (`{}`): give the \
                         server's base URL without it",
                        raw.upstream_api,
                        crate::apis::upstream_path(raw.upstream_api, "")
                    ),
                )
            }
            other => other,
        };
        let rate = self.rate(
            ("rate_per_second", raw.rate_per_second.as_ref()),
            ("rate_burst", raw.rate_burst.as_ref()),
        );
        let max_concurrent_streams = self.count(
            "max_concurrent_streams",
            raw.max_concurrent_streams.as_ref(),
        );
        let timeouts = self.upstream_timeouts(raw);
        let health_check = self.health_check(raw.health_check.as_ref(), upstream.as_ref());
        let health_interval = match (&raw.health_interval_ms, &raw.health_check) {
            (Some(v), None) => self.fail(v.span(), "health_interval_ms", "needs `health_check`"),
            (v, _) => self.duration(
                "health_interval_ms",
                v.as_ref(),
                defaults::HEALTH_INTERVAL_MS,
                Duration::from_millis,
            ),
        };
        Some(AgentConfig {
            id: id?,
            name: name?,
            upstream: upstream?,
            upstream_api: raw.upstream_api,
            upstream_agent_id: upstream_agent_id?,
            upstream_token: upstream_token?,
            credits: credits?,
            history_messages: history_messages?,
            reserve: raw.reserve.unwrap_or_default(),
            rate: rate?,
            max_concurrent_streams: max_concurrent_streams?,
            timeouts: timeouts?,
            enabled: raw.enabled.unwrap_or(defaults::AGENT_ENABLED),
            record: raw.record.unwrap_or(defaults::AGENT_RECORD),
            health_check: health_check?,
            health_interval: health_interval?,
        })
    }

    /// A display name; the id when absent.
    fn name(&mut self, value: Option<&Str>, id: Option<&str>) -> Option<String> {
        match value {
            Some(v) => self.checked("name", v, |text| {
                if text.trim().is_empty() {
                    Err("is empty".into())
                } else {
                    Ok(text)
                }
            }),
            None => id.map(str::to_owned),
        }
    }

    fn upstream_agent_id(&mut self, raw: &RawAgent, id: Option<&str>) -> Option<String> {
        let api = raw.upstream_api;
        let rule = api.agent_id_rule();
        match &raw.upstream_agent_id {
            Some(v) if api.upstream_agent_id_is_model() => {
                self.checked("upstream_agent_id", v, |text| {
                    check_model(&text).map(|()| text)
                })
            }
            Some(v) => self.checked("upstream_agent_id", v, |text| {
                check_upstream_agent_id(&text)?;
                if !api.agent_id_valid(&text) {
                    return Err(format!("`{text}` is not {rule}, which the {api} API needs"));
                }
                Ok(text)
            }),
            None => {
                let id = id?;
                if !api.agent_id_valid(id) {
                    return self.fail(
                        raw.id.span(),
                        "id",
                        format!(
                            "`{id}` is also the backend's agent id (no `upstream_agent_id`), \
                             and the {api} API needs {rule} there"
                        ),
                    );
                }
                Some(id.to_owned())
            }
        }
    }

    fn agent_credits(&mut self, raw: &RawAgent) -> Option<AgentCredits> {
        let per_message = self.credits(
            "credits_per_message",
            raw.credits_per_message.as_ref(),
            defaults::CREDITS_PER_MESSAGE,
        );
        let max_usage = self.credits(
            "max_usage_credits",
            raw.max_usage_credits.as_ref(),
            defaults::MAX_USAGE_CREDITS,
        );
        let per_1k_output_chars = self.credits(
            "credits_per_1k_output_chars",
            raw.credits_per_1k_output_chars.as_ref(),
            defaults::CREDITS_PER_1K_OUTPUT_CHARS,
        );
        let per_1k_input_tokens = self.credits(
            "credits_per_1k_input_tokens",
            raw.credits_per_1k_input_tokens.as_ref(),
            defaults::CREDITS_PER_1K_INPUT_TOKENS,
        );
        let per_1k_output_tokens = self.credits(
            "credits_per_1k_output_tokens",
            raw.credits_per_1k_output_tokens.as_ref(),
            defaults::CREDITS_PER_1K_OUTPUT_TOKENS,
        );
        Some(AgentCredits {
            per_message: per_message?,
            max_usage: max_usage?,
            per_1k_output_chars: per_1k_output_chars?,
            per_1k_input_tokens: per_1k_input_tokens?,
            per_1k_output_tokens: per_1k_output_tokens?,
        })
    }

    fn upstream_timeouts(&mut self, raw: &RawAgent) -> Option<UpstreamTimeouts> {
        let connect = self.duration(
            "connect_timeout_ms",
            raw.connect_timeout_ms.as_ref(),
            defaults::CONNECT_TIMEOUT_MS,
            Duration::from_millis,
        );
        let first_byte = self.duration(
            "first_byte_timeout_ms",
            raw.first_byte_timeout_ms.as_ref(),
            defaults::FIRST_BYTE_TIMEOUT_MS,
            Duration::from_millis,
        );
        let idle = self.duration(
            "idle_timeout_ms",
            raw.idle_timeout_ms.as_ref(),
            defaults::IDLE_TIMEOUT_MS,
            Duration::from_millis,
        );
        Some(UpstreamTimeouts {
            connect: connect?,
            first_byte: first_byte?,
            idle: idle?,
        })
    }

    fn health_check(
        &mut self,
        value: Option<&Str>,
        upstream: Option<&Upstream>,
    ) -> Option<Option<String>> {
        let Some(v) = value else {
            return Some(None);
        };
        let path = self.checked("health_check", v, check_health_path)?;
        if upstream == Some(&Upstream::Demo) {
            return self.fail(
                v.span(),
                "health_check",
                "the demo upstream runs in process and has nothing to poll",
            );
        }
        Some(Some(path))
    }

    // ----- [[team]] ---------------------------------------------------------------------------

    fn teams(&mut self, raw: &[RawTeam], agent_ids: &HashSet<String>) -> Vec<TeamConfig> {
        let mut first_seen: HashMap<String, Range<usize>> = HashMap::new();
        let mut teams = Vec::with_capacity(raw.len());
        for team in raw {
            let id = self.checked("id", &team.id, check_id);
            if let Some(id) = &id {
                if let Some(first) = first_seen.get(id) {
                    let (line, _) = self.map.locate(first.start);
                    self.error(
                        team.id.span(),
                        format!("id: duplicate team id `{id}` (first defined at line {line})"),
                    );
                } else {
                    first_seen.insert(id.clone(), team.id.span());
                }
            }
            if let Some(team) = self.team(team, id, agent_ids) {
                teams.push(team);
            }
        }
        teams
    }

    fn team(
        &mut self,
        raw: &RawTeam,
        id: Option<String>,
        agent_ids: &HashSet<String>,
    ) -> Option<TeamConfig> {
        let name = self.name(raw.name.as_ref(), id.as_deref());
        let members = self.members(&raw.members, agent_ids);
        let modes = self.modes(raw.modes.as_ref());
        let summarizer = match &raw.summarizer {
            Some(v) => self.agent_ref("summarizer", v, agent_ids).map(Some),
            None => Some(None),
        };
        let member_timeout = match &raw.member_timeout_ms {
            Some(v) => self
                .positive_duration("member_timeout_ms", v, Duration::from_millis)
                .map(Some),
            None => Some(None),
        };
        Some(TeamConfig {
            id: id?,
            name: name?,
            members: members?,
            modes: modes?,
            summarizer: summarizer?,
            member_timeout: member_timeout?,
        })
    }

    fn members(
        &mut self,
        raw: &Spanned<Vec<Str>>,
        agent_ids: &HashSet<String>,
    ) -> Option<Vec<String>> {
        if raw.get_ref().is_empty() {
            return self.fail(raw.span(), "members", "a team needs at least one agent");
        }
        let members: Vec<Option<String>> = raw
            .get_ref()
            .iter()
            .map(|member| self.agent_ref("members", member, agent_ids))
            .collect();
        self.no_repeats("members", raw.get_ref(), &members);
        members.into_iter().collect()
    }

    fn modes(&mut self, raw: Option<&Spanned<Vec<Str>>>) -> Option<Vec<String>> {
        let Some(raw) = raw else {
            return Some(defaults::TEAM_MODES.iter().map(|m| m.to_string()).collect());
        };
        if raw.get_ref().is_empty() {
            return self.fail(raw.span(), "modes", "a team needs at least one mode");
        }
        let modes: Vec<Option<String>> = raw
            .get_ref()
            .iter()
            .map(|mode| self.checked("modes", mode, check_mode))
            .collect();
        self.no_repeats("modes", raw.get_ref(), &modes);
        modes.into_iter().collect()
    }

    /// Reports every value of a list that repeats an earlier one.
    fn no_repeats(&mut self, key: &str, raw: &[Str], values: &[Option<String>]) {
        let mut seen = HashSet::new();
        for (value, raw) in values.iter().zip(raw) {
            if let Some(value) = value {
                if !seen.insert(value) {
                    self.error(raw.span(), format!("{key}: `{value}` is listed twice"));
                }
            }
        }
    }

    /// The id of a configured agent.
    fn agent_ref(&mut self, key: &str, value: &Str, agent_ids: &HashSet<String>) -> Option<String> {
        self.checked(key, value, |text| {
            if agent_ids.contains(&text) {
                Ok(text)
            } else {
                Err(format!("no [[agent]] has the id `{text}`"))
            }
        })
    }
}

// ----- pure checks -------------------------------------------------------------------------------

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not an IP:PORT address (like 127.0.0.1:8080 or [::]:8080)")
    })
}

/// The admin token kept in `path`: read (trimmed), or, when the file does not exist, a new
/// random token written there (mode 0600 on Unix), as the quick start's console needs one.
fn read_or_create_token(path: &Path) -> Result<String, String> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    if path.exists() {
        return read(path);
    }
    let token = crate::auth::random_base62(32);
    // Written whole to a file of our own, then linked into place: another process starting
    // at the same moment never reads a half-written file, and one of the two tokens wins.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            // A secret's directory, often the store's too: owner only (0700), as the store's.
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&tmp)?, format!("{token}\n").as_bytes())?;
        std::fs::hard_link(&tmp, path)
    };
    let written = write();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

fn admin_token(text: String) -> Result<Secret, String> {
    if text.chars().count() < defaults::MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "must be at least {} characters long",
            defaults::MIN_ADMIN_TOKEN_CHARS
        ));
    }
    if !is_header_safe(&text) {
        return Err("may only contain visible ASCII characters".into());
    }
    Ok(Secret::new(text))
}

fn upstream_token(text: String) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("is empty (leave the key out to send no token)".into());
    }
    if !is_header_safe(&text) {
        return Err("may only contain visible ASCII characters".into());
    }
    Ok(Secret::new(text))
}

/// Visible ASCII only: fits an `Authorization: Bearer` header as is.
fn is_header_safe(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_store_url(text: String, base_dir: &Path) -> Result<StoreUrl, String> {
    if text == "sqlite::memory:" {
        return Ok(StoreUrl::SqliteMemory);
    }
    if let Some(path) = text.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("`sqlite://` needs a file path, like sqlite://data/agentgate.db".into());
        }
        return Ok(StoreUrl::Sqlite(base_dir.join(path)));
    }
    let is_postgres = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme));
    if is_postgres {
        return Ok(StoreUrl::Postgres(Secret::new(text)));
    }
    Err("expected sqlite://PATH, sqlite::memory: or postgres://…".into())
}

fn parse_redis_url(text: String) -> Result<Secret, String> {
    let is_redis = ["redis://", "rediss://"]
        .iter()
        .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme));
    if is_redis {
        Ok(Secret::new(text))
    } else {
        Err("expected a redis:// or rediss:// URL".into())
    }
}

fn key_prefix(text: String) -> Result<String, String> {
    if text.is_empty() || !is_header_safe(&text) {
        Err("must be non-empty visible ASCII".into())
    } else {
        Ok(text)
    }
}

fn parse_upstream(text: String) -> Result<Upstream, String> {
    if text == "demo" {
        return Ok(Upstream::Demo);
    }
    const EXPECTED: &str = "expected an http:// or https:// base URL, or \"demo\"";
    let uri: http::Uri = text.parse().map_err(|_| format!("not a URL; {EXPECTED}"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(EXPECTED.into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("has no host; {EXPECTED}"))?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials; use `upstream_token`".into());
    }
    if authority.host().is_empty() {
        return Err(format!("has no host; {EXPECTED}"));
    }
    if uri.query().is_some() {
        return Err("a base URL takes no query string".into());
    }
    let path = uri.path();
    if path == "/" || !path.ends_with('/') {
        return Ok(Upstream::Http(uri));
    }
    let base = match path.trim_end_matches('/') {
        "" => "/",
        base => base,
    };
    format!("{scheme}://{authority}{base}")
        .parse()
        .map(Upstream::Http)
        .map_err(|_| format!("not a URL; {EXPECTED}"))
}

/// Agent and team ids: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn check_id(text: String) -> Result<String, String> {
    let valid = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "`{text}` is not a valid id (1 to 128 of A-Z a-z 0-9 . _ -)"
        ))
    }
}

/// One URL path segment, written without percent-encoding (RFC 3986 `pchar`).
fn check_upstream_agent_id(text: &str) -> Result<(), String> {
    let valid = !text.is_empty()
        && text.len() <= 256
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not a usable path segment (1 to 256 of A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @)"
        ))
    }
}

/// A `model` sent in a body (the OpenAI upstreams): any text but empty, overlong or control
/// characters.
fn check_model(text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
        Err("must be a model name of 1 to 256 bytes, without control characters".into())
    } else {
        Ok(())
    }
}

fn check_health_path(text: String) -> Result<String, String> {
    if text.starts_with('/') && is_header_safe(&text) && !text.contains('#') {
        Ok(text)
    } else {
        Err("must be a path starting with `/`, like /health".into())
    }
}

fn check_mode(text: String) -> Result<String, String> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "`{text}` is not a valid mode (1 to 64 of a-z 0-9 - _)"
        ))
    }
}

/// `""` or `/segment[/segment…]`, segments of unreserved URL characters, no `.`/`..`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err(format!("`{prefix}` must start with `/` (or be empty)"))
        };
    };
    if prefix.ends_with('/') {
        return Err(format!("`{prefix}` must not end with `/`"));
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("`{prefix}` has an empty, `.` or `..` segment"));
        }
        let valid = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !valid {
            return Err(format!(
                "`{prefix}` may only use A-Z a-z 0-9 - . _ ~ between its slashes"
            ));
        }
    }
    Ok(())
}

/// Why `later` cannot share a listener with `earlier`, if it cannot.
fn front_conflict(earlier: &FrontConfig, later: &FrontConfig) -> Option<String> {
    let other = format!(
        "the {} front at prefix `{}` on {}",
        earlier.api, earlier.prefix, earlier.listen
    );
    if earlier.prefix == later.prefix {
        return Some(format!("prefix: same prefix and listener as {other}"));
    }
    if hides(&earlier.prefix, &later.prefix) || hides(&later.prefix, &earlier.prefix) {
        return Some(format!(
            "prefix: `{}` overlaps {other}: the longer prefix would catch paths of the shorter",
            later.prefix
        ));
    }
    None
}

/// Whether a front at prefix `inner` catches paths of a front at `outer` (whose paths are
/// `{outer}/api/…` and `{outer}/openapi.json`).
fn hides(outer: &str, inner: &str) -> bool {
    let rest = inner
        .strip_prefix(outer)
        .and_then(|rest| rest.strip_prefix('/'));
    matches!(
        rest.and_then(|rest| rest.split('/').next()),
        Some("api" | "openapi.json")
    )
}

/// The burst of a rate given without one: the rate, rounded up, at least 1.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["", "/a", "/pharen", "/v1/chat-x", "/a.b/c_d~"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "a", "/", "/a/", "//a", "/a//b", "/./a", "/a/..", "/a b", "/a?b", "/é",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_urls() {
        let http = |text: &str| match parse_upstream(text.to_owned()) {
            Ok(Upstream::Http(uri)) => uri.to_string(),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(http("http://127.0.0.1:7001"), "http://127.0.0.1:7001/");
        assert_eq!(http("https://api.example.com/"), "https://api.example.com/");
        assert_eq!(
            http("https://example.com/base/"),
            "https://example.com/base"
        );
        assert_eq!(
            http("https://example.com/base//"),
            "https://example.com/base"
        );
        assert_eq!(http("https://example.com/a/b"), "https://example.com/a/b");
        assert_eq!(parse_upstream("demo".into()), Ok(Upstream::Demo));
        for bad in [
            "",
            "example.com",
            "/path",
            "ftp://example.com",
            "http://user:pw@example.com",
            "http://example.com/?x=1",
            "http://",
            "not a url",
        ] {
            assert!(parse_upstream(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_urls() {
        let base = Path::new("/etc/agentgate");
        assert_eq!(
            parse_store_url("sqlite://data/x.db".into(), base),
            Ok(StoreUrl::Sqlite(PathBuf::from("/etc/agentgate/data/x.db")))
        );
        assert_eq!(
            parse_store_url("sqlite:///var/lib/x.db".into(), base),
            Ok(StoreUrl::Sqlite(PathBuf::from("/var/lib/x.db")))
        );
        assert_eq!(
            parse_store_url("sqlite::memory:".into(), base),
            Ok(StoreUrl::SqliteMemory)
        );
        assert!(matches!(
            parse_store_url("postgresql://u:p@db/x".into(), base),
            Ok(StoreUrl::Postgres(url)) if url.expose() == "postgresql://u:p@db/x"
        ));
        for bad in ["sqlite://", "postgres://", "mysql://db/x", "data/x.db", ""] {
            assert!(parse_store_url(bad.into(), base).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_modes() {
        assert!(check_id("00000000-0000-4000-8000-000000000001".into()).is_ok());
        assert!(check_id("a.b_c-D9".into()).is_ok());
        assert!(check_id("x".repeat(128)).is_ok());
        assert!(check_id("x".repeat(129)).is_err());
        assert!(check_id(String::new()).is_err());
        assert!(check_id("a b".into()).is_err());
        assert!(check_id("a/b".into()).is_err());
        assert!(check_upstream_agent_id("bot:1@x").is_ok());
        assert!(check_upstream_agent_id("a/b").is_err());
        assert!(check_upstream_agent_id("a%20b").is_err());
        assert!(check_mode("debate_2".into()).is_ok());
        assert!(check_mode("Debate".into()).is_err());
    }

    #[test]
    fn default_bursts() {
        assert_eq!(default_burst(0.5), 1);
        assert_eq!(default_burst(10.0), 10);
        assert_eq!(default_burst(10.2), 11);
        assert_eq!(default_burst(1e20), u32::MAX);
    }
}
