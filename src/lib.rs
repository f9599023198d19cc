//! agentgate: a gateway for AI agent chat APIs.
//!
//! Crate map:
//! - [`sse`]: incremental server-sent-event parser and writer (no I/O).
//! - [`formats`]: canonical agent events; a decoder and an encoder per stream format (no I/O).
//! - [`transcode`]: parser → decoder → meter → encoder, the streaming transform (no I/O).
//! - [`fronts`]: the four chat APIs: routes, request validation, error bodies.
//! - [`openapi`]: the OpenAPI 3.1 document of each front as mounted.
//! - [`config`]: TOML config → validated immutable [`config::Config`].
//! - [`proxy`]: the request pipeline, the metering hook and the streaming response body.
//! - [`upstream`]: requests rewritten into each backend API; the pooled client.
//! - [`server`]: listeners, TLS, graceful shutdown.
//! - [`demo`]: the echo backend behind the quick start and the tests.
//! - [`store`]: durable policy state (keys, ledger, idempotency), group-committed, SQLite by default.
//! - [`auth`]: API keys (format, hashing, cached authentication), scopes and agent access.
//! - [`credits`]: the two-phase credit ledger (reserve, then settle exactly once) and idempotency.
//! - [`limits`]: GCRA rate limits per key and per agent, concurrent-stream caps.
//! - [`admin`]: the operator surface: CLI subcommands and the admin HTTP API.
//! - `fuzzing` (hidden): output checks shared by the fuzz target and the tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credits;
pub mod demo;
pub mod formats;
pub mod fronts;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod openapi;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod store;
pub mod transcode;
pub mod upstream;
