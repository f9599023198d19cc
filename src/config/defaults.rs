//! Every default value of the configuration, in one place.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// `[server] listen`: `127.0.0.1:8080`.
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// `[server] drain_timeout_s`.
pub const DRAIN_TIMEOUT_S: u64 = 30;
/// `[server] max_body_bytes` (1 MiB).
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// `[server] max_answer_bytes` (8 MiB).
pub const MAX_ANSWER_BYTES: u64 = 8 << 20;
/// `[server] header_read_timeout_s`.
pub const HEADER_READ_TIMEOUT_S: u64 = 10;
/// `[server] idle_timeout_s`.
pub const IDLE_TIMEOUT_S: u64 = 60;
/// `[server] body_read_timeout_s`.
pub const BODY_READ_TIMEOUT_S: u64 = 30;
/// `[server] max_connections`.
pub const MAX_CONNECTIONS: u64 = 10_000;
/// Shortest `[server] admin_token` accepted, in characters.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// `[store] url`: `sqlite://data/agentgate.db`, this SQLite file (relative to the config
/// file's directory).
pub const SQLITE_PATH: &str = "data/agentgate.db";
/// `[store] reservation_timeout_s`.
pub const RESERVATION_TIMEOUT_S: u64 = 900;
/// `[store] lease_credits` (0: one reservation per request).
pub const LEASE_CREDITS: f64 = 0.0;
/// `[store] lease_timeout_s`.
pub const LEASE_TIMEOUT_S: u64 = 30;
/// `[store] idempotency_ttl_s` (a day).
pub const IDEMPOTENCY_TTL_S: u64 = 86_400;

/// `[rate_limit] key_prefix`.
pub const KEY_PREFIX: &str = "agentgate";

/// `[[front]] prefix`.
pub const FRONT_PREFIX: &str = "";

/// `[[agent]] credits_per_message`.
pub const CREDITS_PER_MESSAGE: f64 = 1.0;
/// `[[agent]] max_usage_credits`.
pub const MAX_USAGE_CREDITS: f64 = 10.0;
/// `[[agent]] credits_per_1k_output_chars`.
pub const CREDITS_PER_1K_OUTPUT_CHARS: f64 = 0.0;
/// `[[agent]] credits_per_1k_input_tokens`.
pub const CREDITS_PER_1K_INPUT_TOKENS: f64 = 0.0;
/// `[[agent]] credits_per_1k_output_tokens`.
pub const CREDITS_PER_1K_OUTPUT_TOKENS: f64 = 0.0;
/// `[[agent]] history_messages`.
pub const HISTORY_MESSAGES: u32 = 50;
/// The most `[[agent]] history_messages` may be.
pub const MAX_HISTORY_MESSAGES: u32 = 1000;
/// `[[agent]] connect_timeout_ms`.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// `[[agent]] first_byte_timeout_ms`.
pub const FIRST_BYTE_TIMEOUT_MS: u64 = 30_000;
/// `[[agent]] idle_timeout_ms`.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// `[[agent]] enabled`.
pub const AGENT_ENABLED: bool = true;
/// `[[agent]] health_interval_ms`.
pub const HEALTH_INTERVAL_MS: u64 = 10_000;
/// `[server] watch_config`.
pub const WATCH_CONFIG: bool = true;
/// `[[agent]] record`.
pub const AGENT_RECORD: bool = true;

/// `[[team]] modes`.
pub const TEAM_MODES: &[&str] = &["brainstorm"];
