//! Stream formats: canonical agent events and one decoder and one encoder per wire format.

use std::fmt;
use std::str::FromStr;

/// One of the three agent stream formats agentgate speaks (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Vercel AI SDK UIMessage stream (`data:` JSON chunks, `[DONE]`).
    UiMessage,
    /// `session` / `delta` (accumulated text) / `tool` / `done` (seed 004).
    SessionDelta,
    /// `text` / `done` / `[DONE]` (seed 003).
    TextDone,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::UiMessage, Format::SessionDelta, Format::TextDone];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::UiMessage => "ui-message",
            Format::SessionDelta => "session-delta",
            Format::TextDone => "text-done",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ui-message" | "ui" => Ok(Format::UiMessage),
            "session-delta" | "sd" => Ok(Format::SessionDelta),
            "text-done" | "td" => Ok(Format::TextDone),
            other => Err(format!(
                "unknown stream format `{other}` (expected ui-message, session-delta or text-done)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
