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
