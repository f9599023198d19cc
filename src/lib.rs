//! agentgate: a gateway for AI agent chat APIs.
pub mod sse;
