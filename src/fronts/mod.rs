//! The four chat APIs, as fronts (towards clients) and upstream APIs (towards backends).

use std::fmt;
use std::str::FromStr;

use crate::formats::Format;

/// One of the four chat APIs of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// seed 000: `POST /api/agents/{agent_uuid}/chat/`
    Pharen,
    /// seeds 001/002: `POST /api/v2/agents/{agentId}/chat`
    Chatbase,
    /// seed 003: `POST /api/agents/{id}/chat` and `/chat/stream`
    Agents,
    /// seed 004: `POST /api/v1/agents/{id}/chat`
    Guayaba,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Pharen => "pharen",
            Api::Chatbase => "chatbase",
            Api::Agents => "agents",
            Api::Guayaba => "guayaba",
        }
    }

    /// The stream format this API speaks by default.
    pub fn default_format(self) -> Format {
        match self {
            Api::Pharen | Api::Chatbase => Format::UiMessage,
            Api::Agents => Format::TextDone,
            Api::Guayaba => Format::SessionDelta,
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pharen" => Ok(Api::Pharen),
            "chatbase" => Ok(Api::Chatbase),
            "agents" => Ok(Api::Agents),
            "guayaba" => Ok(Api::Guayaba),
            other => Err(format!(
                "unknown API `{other}` (expected pharen, chatbase, agents or guayaba)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Api {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub mod cors;
mod request;
mod routes;

pub use request::{
    parse_chat, ChatRequest, Conversation, MAX_CONVERSATION_KEY_LEN, MAX_MESSAGE_CHARS,
    MAX_USER_ID_CHARS,
};
pub use routes::{match_route, Route};

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// A request that matched one of a front's chat paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRoute {
    pub agent_id: String,
    /// `agents` has a separate `/chat/stream` path; others decide from the body or headers.
    pub stream_path: bool,
}

/// Matches `path` (already stripped of the front's prefix) against `api`'s chat path.
pub fn match_chat(api: Api, path: &str) -> Option<ChatRoute> {
    // Percent-decoded, as the other routes' ids.
    let route = |id: &str, stream_path| {
        (!id.contains('/')).then_some(())?;
        Some(ChatRoute {
            agent_id: routes::segment(id)?,
            stream_path,
        })
    };
    match api {
        Api::Pharen => {
            let rest = path.strip_prefix("/api/agents/")?;
            let id = rest
                .strip_suffix("/chat/")
                .or_else(|| rest.strip_suffix("/chat"))?;
            route(id, false)
        }
        Api::Chatbase => route(
            path.strip_prefix("/api/v2/agents/")?
                .strip_suffix("/chat")?,
            false,
        ),
        Api::Agents => {
            let rest = path.strip_prefix("/api/agents/")?;
            if let Some(id) = rest.strip_suffix("/chat/stream") {
                route(id, true)
            } else {
                route(rest.strip_suffix("/chat")?, false)
            }
        }
        Api::Guayaba => route(
            path.strip_prefix("/api/v1/agents/")?
                .strip_suffix("/chat")?,
            false,
        ),
    }
}

/// An error as a front answers it: a status and `{"error":{"code","message","details"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A malformed body or a failed validation: 400, or 422 on `guayaba` (seed 004).
    pub fn invalid(api: Api, message: impl Into<String>) -> Self {
        match api {
            Api::Guayaba => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                message,
            ),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message),
        }
    }

    /// An agent that does not exist, or (`exists`) lies outside the key's agents: 404; on
    /// `guayaba` 404 "Agent not found" and 403 "cannot access this agent" (seed 004).
    pub fn agent_not_found(api: Api, exists: bool) -> Self {
        match api {
            Api::Guayaba if exists => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key cannot access this agent",
            ),
            Api::Guayaba => ApiError::new(StatusCode::NOT_FOUND, "not_found", "Agent not found"),
            _ => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "agent not found or outside the key's access target",
            ),
        }
    }

    pub fn body(&self) -> Bytes {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        Bytes::from(body.to_string())
    }
}
