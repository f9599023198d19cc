//! agentgate: a gateway for AI agent chat APIs.
//!
//! Crate map:
//! - [`sse`]: incremental server-sent-event parser and writer (no I/O).
//! - [`formats`]: canonical agent events; a decoder and an encoder per stream format (no I/O).
//! - [`transcode`]: parser → decoder → meter → encoder, the streaming transform (no I/O).
//! - [`fronts`]: the four chat APIs: routes, request validation, error bodies.
//! - [`config`]: TOML config → validated immutable [`config::Config`].
//! - [`proxy`]: the request pipeline, the metering hook and the streaming response body.
//! - [`upstream`]: requests rewritten into each backend API; the pooled client.
//! - [`server`]: listeners, TLS, graceful shutdown.
//! - [`demo`]: the echo backend behind the quick start and the tests.
//! - `fuzzing` (hidden): output checks shared by the fuzz target and the tests.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod formats;
pub mod fronts;
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod transcode;
pub mod upstream;
