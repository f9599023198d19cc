//! `text-done`: `{"type":"text","content"}` … `{"type":"done"}` then `[DONE]` (seed 003).

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::event::{CowStr, Event, FinishReason, Json, Usage, WireUsage};
use super::{fast, DecodeError};
use crate::sse::{self, SseEvent};

/// The single text part id this format implies.
const TEXT_ID: &str = "text-1";

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    content: Option<CowStr<'a>>,
    #[serde(borrow)]
    message: Option<CowStr<'a>>,
    #[serde(borrow)]
    conversation_id: Option<CowStr<'a>>,
    usage: Option<WireUsage>,
    #[serde(borrow, rename = "finishReason")]
    finish_reason: Option<CowStr<'a>>,
}

#[derive(Debug, Default)]
pub struct TextDoneDecoder {
    started: bool,
    text_open: bool,
    terminal: bool,
    done: bool,
}

impl TextDoneDecoder {
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            emit(Event::Start {
                message_id: None,
                conversation_id: None,
            });
        }
        if sse.data.trim_ascii() == "[DONE]" {
            if !self.terminal {
                self.finish(emit, None, None);
            }
            self.done = true;
            return Ok(());
        }
        if self.terminal {
            return Ok(());
        }
        if let Some(["text", content]) = fast::plain_fields(sse.data, ["type", "content"]) {
            self.text(Cow::Borrowed(content), emit);
            return Ok(());
        }
        let wire: Wire<'_> = serde_json::from_str(sse.data).map_err(DecodeError::json)?;
        let ty = super::event_type(&wire.ty, sse)?;
        match ty {
            "text" => {
                let content = wire
                    .content
                    .ok_or_else(|| DecodeError::Protocol("`text` without `content`".into()))?;
                self.text(content.0, emit);
            }
            "done" => {
                let usage = wire
                    .usage
                    .and_then(|u| u.credits)
                    .filter(|c| c.is_finite())
                    .map(Usage::credits);
                let reason = wire.finish_reason.map(|r| FinishReason::parse(&r.0));
                if let Some(id) = wire.conversation_id {
                    // The backend reveals its conversation id here; pass it on as metadata.
                    emit(Event::Metadata {
                        metadata: Json::from_value(&serde_json::json!({ "conversation_id": id.0 })),
                    });
                }
                self.finish(emit, usage, reason);
            }
            "error" => {
                self.terminal = true;
                let message = wire
                    .content
                    .or(wire.message)
                    .map(|m| m.0)
                    .unwrap_or(Cow::Borrowed("upstream error"));
                emit(Event::Error { message });
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        }
        Ok(())
    }

    fn text<F: FnMut(Event<'_>)>(&mut self, content: Cow<'_, str>, emit: &mut F) {
        if content.is_empty() {
            return;
        }
        if !self.text_open {
            self.text_open = true;
            emit(Event::TextStart {
                id: Cow::Borrowed(TEXT_ID),
            });
        }
        emit(Event::TextDelta {
            id: Cow::Borrowed(TEXT_ID),
            delta: content,
        });
    }

    fn finish<F: FnMut(Event<'_>)>(
        &mut self,
        emit: &mut F,
        usage: Option<Usage>,
        reason: Option<FinishReason>,
    ) {
        if self.text_open {
            self.text_open = false;
            emit(Event::TextEnd {
                id: Cow::Borrowed(TEXT_ID),
            });
        }
        self.terminal = true;
        emit(Event::Finish {
            reason,
            usage,
            metadata: None,
        });
    }

    pub fn end(&mut self) -> Result<(), DecodeError> {
        if self.terminal {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    // `{"type":"text","content"}`, the hot path, is written by hand in `text`.
    Done {
        content: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        #[serde(rename = "finishReason", skip_serializing_if = "Option::is_none")]
        finish_reason: Option<FinishReason>,
    },
    Error {
        content: &'a str,
    },
}

#[derive(Debug, Default)]
pub struct TextDoneEncoder {
    /// Render tool calls and reasoning as text instead of dropping them (a front setting).
    tools_as_text: bool,
    conversation_id: Option<String>,
    done: bool,
    scratch: String,
}

impl TextDoneEncoder {
    pub fn new(tools_as_text: bool) -> Self {
        TextDoneEncoder {
            tools_as_text,
            ..Default::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn text(&mut self, out: &mut BytesMut, content: &str) {
        if !content.is_empty() {
            // The hot path, written by hand: the same bytes as `Out::Text`.
            sse::write_event_with(out, None, |out| {
                fast::write_fields(out, "text", &[("content", content)])
            });
        }
    }

    fn done(&mut self, out: &mut BytesMut, usage: Option<Usage>, reason: Option<FinishReason>) {
        sse::write_json_event(
            out,
            None,
            &Out::Done {
                content: "",
                conversation_id: self.conversation_id.as_deref(),
                usage,
                finish_reason: reason,
            },
        );
        sse::write_raw_data_event(out, "[DONE]");
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            Event::Start {
                conversation_id, ..
            } => self.conversation_id = conversation_id.as_deref().map(str::to_owned),
            Event::TextDelta { delta, .. } => self.text(out, delta),
            Event::ReasoningDelta { delta, .. } if self.tools_as_text => self.text(out, delta),
            Event::ToolInputAvailable { name, input, .. } if self.tools_as_text => {
                let mut s = std::mem::take(&mut self.scratch);
                s.clear();
                s.push_str("\n[tool ");
                s.push_str(name);
                s.push(' ');
                s.push_str(input.get());
                s.push_str("]\n");
                self.text(out, &s);
                self.scratch = s;
            }
            Event::ToolOutput { output, .. } if self.tools_as_text => {
                let mut s = std::mem::take(&mut self.scratch);
                s.clear();
                s.push_str("\n[result ");
                s.push_str(output.get());
                s.push_str("]\n");
                self.text(out, &s);
                self.scratch = s;
            }
            Event::Finish { reason, usage, .. } => self.done(out, *usage, *reason),
            Event::Error { message } => {
                sse::write_json_event(out, None, &Out::Error { content: message });
                self.done(out, None, Some(FinishReason::Error));
            }
            Event::Abort { .. } => self.done(out, None, Some(FinishReason::Interrupted)),
            _ => {}
        }
    }
}
