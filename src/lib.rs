//! agentgate: a gateway for AI agent chat APIs.
//!
//! Crate map:
//! - [`sse`]: incremental server-sent-event parser and writer (no I/O).
//! - [`formats`]: canonical agent events; a decoder and an encoder per stream format (no I/O).
//! - [`fronts`]: the four chat APIs.
//! - [`store`]: durable policy state (keys, ledger, idempotency), group-committed, SQLite by default.
//! - [`auth`]: API keys (format, hashing, cached authentication), scopes and agent access.
//! - [`credits`]: the two-phase credit ledger (reserve, then settle exactly once) and idempotency.
//! - [`limits`]: GCRA rate limits per key and per agent, concurrent-stream caps.
//! - [`admin`]: the operator surface: CLI subcommands and the admin HTTP API.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod credits;
pub mod formats;
pub mod fronts;
pub mod limits;
pub mod sse;
pub mod store;
