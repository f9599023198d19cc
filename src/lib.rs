//! agentgate: a gateway for AI agent chat APIs.
//!
//! Crate map:
//! - [`sse`]: incremental server-sent-event parser and writer (no I/O).
//! - [`formats`]: canonical agent events; a decoder and an encoder per stream format (no I/O).
//! - [`transcode`]: parser → decoder → meter → encoder, the streaming transform (no I/O).
//! - [`fronts`]: the four chat APIs.
//! - `fuzzing` (hidden): output checks shared by the fuzz target and the tests.
#![forbid(unsafe_code)]

pub mod cli;
pub mod formats;
pub mod fronts;
#[doc(hidden)]
pub mod fuzzing;
pub mod sse;
pub mod transcode;
