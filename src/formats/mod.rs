//! Stream formats: canonical agent events and one decoder and one encoder per wire format.

use std::fmt;
use std::str::FromStr;

/// One of the agent stream formats agentgate speaks (SPEC §2, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Vercel AI SDK UIMessage stream (`data:` JSON chunks, `[DONE]`).
    UiMessage,
    /// `session` / `delta` (accumulated text) / `tool` / `done` (seed 004).
    SessionDelta,
    /// `text` / `done` / `[DONE]` (seed 003).
    TextDone,
    /// AG-UI events (`RUN_STARTED` … `RUN_FINISHED`; SPEC §9).
    AgUi,
    /// OpenAI Chat Completions `chat.completion.chunk` stream (SPEC §10).
    OpenAiChat,
    /// OpenAI Responses streaming events (SPEC §10).
    OpenAiResponses,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::UiMessage,
        Format::SessionDelta,
        Format::TextDone,
        Format::AgUi,
        Format::OpenAiChat,
        Format::OpenAiResponses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::UiMessage => "ui-message",
            Format::SessionDelta => "session-delta",
            Format::TextDone => "text-done",
            Format::AgUi => "ag-ui",
            Format::OpenAiChat => "openai-chat",
            Format::OpenAiResponses => "openai-responses",
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
            "ag-ui" => Ok(Format::AgUi),
            "openai-chat" => Ok(Format::OpenAiChat),
            "openai-responses" => Ok(Format::OpenAiResponses),
            other => Err(format!(
                "unknown stream format `{other}` (expected ui-message, session-delta, text-done, \
                 ag-ui, openai-chat or openai-responses)"
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

mod ag_ui;
mod aggregate;
mod event;
mod fast;
mod openai_chat;
mod openai_responses;
mod parts;
mod session_delta;
mod text_done;
mod ui;

pub use ag_ui::{AgUiDecoder, AgUiEncoder};
pub use aggregate::{Aggregate, SyncContext, ToolCall};
pub use event::{serialize_credits, CowStr, Event, FinishReason, Json, Str, Usage};
pub use openai_chat::{chat_completion_body, OpenAiChatDecoder, OpenAiChatEncoder};
pub use openai_responses::{response_body, OpenAiResponsesDecoder, OpenAiResponsesEncoder};
pub use parts::UiParts;
pub use session_delta::{SessionDeltaDecoder, SessionDeltaEncoder};
pub use text_done::{TextDoneDecoder, TextDoneEncoder};
pub use ui::{UiDecoder, UiEncoder};

use bytes::BytesMut;
use serde_json::value::RawValue;

use crate::sse::{SseError, SseEvent};

/// Why an upstream stream could not be decoded. Each becomes an error event downstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed server-sent events: {0}")]
    Sse(#[from] SseError),
    #[error("malformed JSON in event: {0}")]
    Json(String),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("upstream ended the stream before it finished")]
    Truncated,
}

impl DecodeError {
    pub(crate) fn json(e: serde_json::Error) -> Self {
        DecodeError::Json(e.to_string())
    }

    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Sse(_) => "sse",
            DecodeError::Json(_) => "json",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Protocol(_) => "protocol",
            DecodeError::Truncated => "truncated",
        }
    }
}

/// An event's type: its JSON `type` field, else the SSE `event:` name (seed 002 style).
fn event_type<'s>(
    ty: &'s Option<CowStr<'_>>,
    sse: &'s SseEvent<'_>,
) -> Result<&'s str, DecodeError> {
    match ty {
        Some(t) => Ok(&t.0),
        None if sse.event != "message" => Ok(sse.event),
        None => Err(DecodeError::Protocol("event without `type`".into())),
    }
}

/// Turns one format's SSE events into canonical events.
#[derive(Debug)]
pub enum Decoder {
    Ui(UiDecoder),
    SessionDelta(SessionDeltaDecoder),
    TextDone(TextDoneDecoder),
    AgUi(AgUiDecoder),
    OpenAiChat(OpenAiChatDecoder),
    OpenAiResponses(OpenAiResponsesDecoder),
}

impl Decoder {
    pub fn new(format: Format) -> Self {
        match format {
            Format::UiMessage => Decoder::Ui(UiDecoder::default()),
            Format::SessionDelta => Decoder::SessionDelta(SessionDeltaDecoder::default()),
            Format::TextDone => Decoder::TextDone(TextDoneDecoder::default()),
            Format::AgUi => Decoder::AgUi(AgUiDecoder::default()),
            Format::OpenAiChat => Decoder::OpenAiChat(OpenAiChatDecoder::default()),
            Format::OpenAiResponses => Decoder::OpenAiResponses(OpenAiResponsesDecoder::default()),
        }
    }

    /// Decodes one SSE event, calling `emit` for each canonical event it yields.
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        self.decode_chunks(sse, &mut |event, _| emit(event))
    }

    /// [`decode`](Self::decode), also giving `emit` the ui-message chunk each event was read
    /// from (its JSON value), which a ui-message encoder writes on unchanged (SPEC §8).
    pub fn decode_chunks<F: FnMut(Event<'_>, Option<&RawValue>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        match self {
            Decoder::Ui(d) => d.decode(sse, emit),
            Decoder::SessionDelta(d) => d.decode(sse, &mut |event| emit(event, None)),
            Decoder::TextDone(d) => d.decode(sse, &mut |event| emit(event, None)),
            Decoder::AgUi(d) => d.decode(sse, &mut |event| emit(event, None)),
            Decoder::OpenAiChat(d) => d.decode(sse, &mut |event| emit(event, None)),
            Decoder::OpenAiResponses(d) => d.decode(sse, &mut |event| emit(event, None)),
        }
    }

    /// The upstream closed its stream. An error when no terminal event came first.
    pub fn end(&mut self) -> Result<(), DecodeError> {
        match self {
            Decoder::Ui(d) => d.end(),
            Decoder::SessionDelta(d) => d.end(),
            Decoder::TextDone(d) => d.end(),
            Decoder::AgUi(d) => d.end(),
            Decoder::OpenAiChat(d) => d.end(),
            Decoder::OpenAiResponses(d) => d.end(),
        }
    }
}

/// Encoder settings a front may choose (SPEC §2, §6, §10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// ui-message: write an `event: <type>` line before each `data:` line (seed 002 style).
    pub event_lines: bool,
    /// text-done: render tool calls and reasoning as text rather than dropping them.
    pub tools_as_text: bool,
    /// openai-chat: write the usage chunk (`choices: []`) before `[DONE]`
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// openai-chat / openai-responses: `model` (default `agentgate`).
    pub model: Option<std::sync::Arc<str>>,
    /// openai-chat / openai-responses: the completion's / response's `id` (default: generated,
    /// `chatcmpl-<32 hex>` / `resp_<32 hex>`).
    pub response_id: Option<std::sync::Arc<str>>,
    /// openai-chat / openai-responses: `created` / `created_at`, Unix seconds (default: now).
    pub created: Option<u64>,
}

/// Turns canonical events into one format's SSE bytes, filling in what the format needs.
#[derive(Debug)]
pub enum Encoder {
    Ui(UiEncoder),
    SessionDelta(SessionDeltaEncoder),
    TextDone(TextDoneEncoder),
    AgUi(AgUiEncoder),
    OpenAiChat(OpenAiChatEncoder),
    OpenAiResponses(OpenAiResponsesEncoder),
}

impl Encoder {
    pub fn new(format: Format, options: EncodeOptions) -> Self {
        match format {
            Format::UiMessage => Encoder::Ui(UiEncoder::new(options.event_lines)),
            Format::SessionDelta => Encoder::SessionDelta(SessionDeltaEncoder::default()),
            Format::TextDone => Encoder::TextDone(TextDoneEncoder::new(options.tools_as_text)),
            Format::AgUi => Encoder::AgUi(AgUiEncoder::default()),
            Format::OpenAiChat => Encoder::OpenAiChat(OpenAiChatEncoder::new(&options)),
            Format::OpenAiResponses => {
                Encoder::OpenAiResponses(OpenAiResponsesEncoder::new(&options))
            }
        }
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        self.encode_chunk(event, None, out);
    }

    /// [`encode`](Self::encode) an event read from the ui-message chunk `chunk`.
    pub fn encode_chunk(
        &mut self,
        event: &Event<'_>,
        chunk: Option<&RawValue>,
        out: &mut BytesMut,
    ) {
        match self {
            Encoder::Ui(e) => e.encode_chunk(event, chunk, out),
            Encoder::SessionDelta(e) => e.encode(event, out),
            Encoder::TextDone(e) => e.encode(event, out),
            Encoder::AgUi(e) => e.encode(event, out),
            Encoder::OpenAiChat(e) => e.encode(event, out),
            Encoder::OpenAiResponses(e) => e.encode(event, out),
        }
    }

    /// True once the stream has been ended (finish, error or abort written).
    pub fn is_done(&self) -> bool {
        match self {
            Encoder::Ui(e) => e.is_done(),
            Encoder::SessionDelta(e) => e.is_done(),
            Encoder::TextDone(e) => e.is_done(),
            Encoder::AgUi(e) => e.is_done(),
            Encoder::OpenAiChat(e) => e.is_done(),
            Encoder::OpenAiResponses(e) => e.is_done(),
        }
    }

    /// Ends the stream with an error event and the format's proper end, unless already ended.
    pub fn fail(&mut self, message: &str, out: &mut BytesMut) {
        self.encode(
            &Event::Error {
                message: std::borrow::Cow::Borrowed(message),
            },
            out,
        );
    }
}
