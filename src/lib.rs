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
//! - [`app`]: the composition root: store, policy, metrics, snapshot and gateway from a config.
//! - [`server`]: listeners, TLS, graceful shutdown, the admin listener.
//! - [`reload`]: live config reload (SIGHUP, file change) with an atomic snapshot swap.
//! - [`health`]: backend health checks.
//! - [`telemetry`]: optional OpenTelemetry export (cargo feature `otlp`).
//! - [`demo`]: the echo backend behind the quick start and the tests.
//! - [`store`]: durable policy state (keys, ledger, idempotency): SQLite (group-committed) by
//!   default, PostgreSQL shared by replicas (one-statement ops, LISTEN/NOTIFY, credit leases).
//! - [`auth`]: API keys (format, hashing, cached authentication), scopes and agent access.
//! - [`credits`]: the two-phase credit ledger (reserve, then settle exactly once), credit leases
//!   and idempotency.
//! - [`limits`]: GCRA rate limits per key and per agent (in process, or fleet-wide in Redis),
//!   concurrent-stream caps.
//! - [`metrics`]: Prometheus metrics, served on the admin listener.
//! - [`admin`]: the operator surface: the admin HTTP API and the console.
//! - [`cli`]: the binary's command line: every subcommand (`serve`, `keys`, `transcode`, …).
//! - `fuzzing` (hidden): output checks shared by the fuzz target and the tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod apis;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credits;
pub mod demo;
pub mod formats;
pub mod fronts;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod transcode;
pub mod upstream;
