//! Canonical agent events (SPEC §2): what every decoder produces and every encoder consumes.
//!
//! Events borrow from the decoder's input wherever the wire allows it, so a text delta
//! passes from upstream bytes to client bytes without an allocation.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A string borrowed from the input when it has no escapes, owned otherwise.
pub type Str<'a> = Cow<'a, str>;
/// A JSON value kept as its raw text (borrowed from the input where possible).
#[derive(Debug, Clone)]
pub struct Json<'a>(pub Cow<'a, RawValue>);

impl<'a> Json<'a> {
    pub fn borrowed(raw: &'a RawValue) -> Self {
        Json(Cow::Borrowed(raw))
    }
    pub fn owned(raw: Box<RawValue>) -> Json<'static> {
        Json(Cow::Owned(raw))
    }
    /// Serialises `value` into an owned raw value.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Json<'static> {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Json::owned(raw),
            Err(_) => Json::owned(RawValue::NULL.to_owned()),
        }
    }
    pub fn into_owned(self) -> Json<'static> {
        Json(Cow::Owned(self.0.into_owned()))
    }
}

impl std::ops::Deref for Json<'_> {
    type Target = RawValue;
    fn deref(&self) -> &RawValue {
        &self.0
    }
}

/// Raw text equality: the formats pass JSON values through verbatim.
impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// First event of every decoded stream (decoders make one up when the wire has none).
    Start {
        message_id: Option<Str<'a>>,
        conversation_id: Option<Str<'a>>,
    },
    TextStart {
        id: Str<'a>,
    },
    TextDelta {
        id: Str<'a>,
        delta: Str<'a>,
    },
    TextEnd {
        id: Str<'a>,
    },
    ReasoningStart {
        id: Str<'a>,
    },
    ReasoningDelta {
        id: Str<'a>,
        delta: Str<'a>,
    },
    ReasoningEnd {
        id: Str<'a>,
    },
    ToolInputStart {
        call_id: Str<'a>,
        name: Str<'a>,
    },
    ToolInputDelta {
        call_id: Str<'a>,
        delta: Str<'a>,
    },
    ToolInputAvailable {
        call_id: Str<'a>,
        name: Str<'a>,
        input: Json<'a>,
    },
    ToolOutput {
        call_id: Str<'a>,
        output: Json<'a>,
    },
    /// The tool's execution failed (ui-message `tool-output-error`).
    ToolError {
        call_id: Str<'a>,
        error: Str<'a>,
    },
    /// The tool's input could not be read or validated (ui-message `tool-input-error`).
    ToolInputError {
        call_id: Str<'a>,
        name: Str<'a>,
        input: Json<'a>,
        error: Str<'a>,
    },
    /// The user denied the tool's execution (ui-message `tool-output-denied`).
    ToolDenied {
        call_id: Str<'a>,
    },
    StepStart,
    StepFinish,
    /// Discards the text, reasoning and tool calls of the current step (since the last
    /// `StepStart`); ui-message `reset-step` (SPEC §8).
    ResetStep,
    /// A ui-message chunk with no event of its own, kept whole as its JSON object: `data-*`,
    /// sources, files, tool approvals, `custom`, `steering-message`, and types this version
    /// does not know. Only ui-message (and the transcript's parts) carry it; the other formats
    /// leave it out.
    Part {
        /// The chunk's `type`.
        ty: Str<'a>,
        chunk: Json<'a>,
    },
    Metadata {
        metadata: Json<'a>,
    },
    /// The answer is complete. Terminal.
    Finish {
        reason: Option<FinishReason>,
        usage: Option<Usage>,
        /// Extra metadata for formats that carry it (ui-message `messageMetadata`).
        metadata: Option<Json<'a>>,
    },
    /// The answer failed. Terminal.
    Error {
        message: Str<'a>,
    },
    /// The answer was aborted. Terminal.
    Abort {
        reason: Option<Str<'a>>,
    },
}

impl Event<'_> {
    /// Finish, Error and Abort end a stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Finish { .. } | Event::Error { .. } | Event::Abort { .. }
        )
    }

    /// A copy that owns its data.
    pub fn into_owned(self) -> Event<'static> {
        fn s(v: Str<'_>) -> Str<'static> {
            Cow::Owned(v.into_owned())
        }
        fn j(v: Json<'_>) -> Json<'static> {
            v.into_owned()
        }
        match self {
            Event::Start {
                message_id,
                conversation_id,
            } => Event::Start {
                message_id: message_id.map(s),
                conversation_id: conversation_id.map(s),
            },
            Event::TextStart { id } => Event::TextStart { id: s(id) },
            Event::TextDelta { id, delta } => Event::TextDelta {
                id: s(id),
                delta: s(delta),
            },
            Event::TextEnd { id } => Event::TextEnd { id: s(id) },
            Event::ReasoningStart { id } => Event::ReasoningStart { id: s(id) },
            Event::ReasoningDelta { id, delta } => Event::ReasoningDelta {
                id: s(id),
                delta: s(delta),
            },
            Event::ReasoningEnd { id } => Event::ReasoningEnd { id: s(id) },
            Event::ToolInputStart { call_id, name } => Event::ToolInputStart {
                call_id: s(call_id),
                name: s(name),
            },
            Event::ToolInputDelta { call_id, delta } => Event::ToolInputDelta {
                call_id: s(call_id),
                delta: s(delta),
            },
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => Event::ToolInputAvailable {
                call_id: s(call_id),
                name: s(name),
                input: j(input),
            },
            Event::ToolOutput { call_id, output } => Event::ToolOutput {
                call_id: s(call_id),
                output: j(output),
            },
            Event::ToolError { call_id, error } => Event::ToolError {
                call_id: s(call_id),
                error: s(error),
            },
            Event::ToolInputError {
                call_id,
                name,
                input,
                error,
            } => Event::ToolInputError {
                call_id: s(call_id),
                name: s(name),
                input: j(input),
                error: s(error),
            },
            Event::ToolDenied { call_id } => Event::ToolDenied {
                call_id: s(call_id),
            },
            Event::StepStart => Event::StepStart,
            Event::StepFinish => Event::StepFinish,
            Event::ResetStep => Event::ResetStep,
            Event::Part { ty, chunk } => Event::Part {
                ty: s(ty),
                chunk: j(chunk),
            },
            Event::Metadata { metadata } => Event::Metadata {
                metadata: j(metadata),
            },
            Event::Finish {
                reason,
                usage,
                metadata,
            } => Event::Finish {
                reason,
                usage,
                metadata: metadata.map(j),
            },
            Event::Error { message } => Event::Error {
                message: s(message),
            },
            Event::Abort { reason } => Event::Abort {
                reason: reason.map(s),
            },
        }
    }
}

/// Why an answer finished (the AI SDK's `finishReason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
    Error,
    Interrupted,
    Other,
}

impl FinishReason {
    pub const ALL: [FinishReason; 7] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::ContentFilter,
        FinishReason::ToolCalls,
        FinishReason::Error,
        FinishReason::Interrupted,
        FinishReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content-filter",
            FinishReason::ToolCalls => "tool-calls",
            FinishReason::Error => "error",
            FinishReason::Interrupted => "interrupted",
            FinishReason::Other => "other",
        }
    }

    /// Parses a reason; anything unknown is `Other` (a reason is advisory, not structural).
    pub fn parse(s: &str) -> FinishReason {
        FinishReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(FinishReason::Other)
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What an answer cost, in credits, and the tokens the backend reported where its format
/// carries them (the OpenAI formats; 0 credits there when the backend reported only tokens).
/// The other formats write only `credits`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Usage {
    #[serde(serialize_with = "serialize_credits")]
    pub credits: f64,
    #[serde(skip)]
    pub input_tokens: Option<u64>,
    #[serde(skip)]
    pub output_tokens: Option<u64>,
}

impl Usage {
    /// Usage of `credits`, without token counts.
    pub fn credits(credits: f64) -> Usage {
        Usage {
            credits,
            ..Usage::default()
        }
    }
}

/// Writes whole credit amounts as integers (`2`, not `2.0`).
pub fn serialize_credits<S: Serializer>(credits: &f64, s: S) -> Result<S::Ok, S::Error> {
    if credits.fract() == 0.0 && credits.abs() < 9.0e15 {
        s.serialize_i64(*credits as i64)
    } else {
        s.serialize_f64(*credits)
    }
}

/// Deserialises a string borrowing from the input when it holds no escapes.
/// (`Option<Cow<str>>` with `#[serde(borrow)]` would always allocate.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// For `#[serde(borrow, default, deserialize_with = "present_raw")]` fields: any value that is
/// present, `null` included, is `Some` (a plain `Option<&RawValue>` reads `null` as `None`,
/// losing e.g. a tool's `null` output), and only an absent field is `None`.
pub(crate) fn present_raw<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// `{"credits": N}` as found in usage objects on the wire.
#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    pub credits: Option<f64>,
}

/// Reads `usage.credits` out of a metadata object, if it has one.
pub(crate) fn usage_in_metadata(metadata: &RawValue) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Meta {
        usage: Option<WireUsage>,
    }
    let meta: Meta = serde_json::from_str(metadata.get()).ok()?;
    let credits = meta.usage?.credits?;
    credits.is_finite().then_some(Usage::credits(credits))
}
