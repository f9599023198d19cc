//! agentgate: a gateway for AI agent chat APIs.
//!
//! Crate map:
//! - [`sse`]: incremental server-sent-event parser and writer (no I/O).
//! - [`formats`]: canonical agent events; a decoder and an encoder per stream format (no I/O).
//! - [`fronts`]: the four chat APIs.
#![forbid(unsafe_code)]

pub mod config;
pub mod formats;
pub mod fronts;
pub mod sse;
