//! `session-delta`: `session` first, `delta` with the accumulated text, `tool`, `done` (seed 004).

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::{present_raw, CowStr, Event, FinishReason, Json, Str, Usage, WireUsage};
use super::{fast, DecodeError};
use crate::sse::{self, SseEvent};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    session_key: Option<CowStr<'a>>,
    #[serde(borrow)]
    text: Option<CowStr<'a>>,
    #[serde(borrow)]
    phase: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_call_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    name: Option<CowStr<'a>>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    input: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    output: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<CowStr<'a>>,
    denied: Option<bool>,
    #[serde(borrow)]
    message: Option<CowStr<'a>>,
    usage: Option<WireUsage>,
    #[serde(borrow)]
    finish_reason: Option<CowStr<'a>>,
}

#[derive(Debug, Default)]
pub struct SessionDeltaDecoder {
    started: bool,
    terminal: bool,
    /// The accumulated answer text seen so far.
    seen: String,
    /// Id of the open text part, if one is open.
    text_id: String,
    text_open: bool,
    parts: u32,
    /// `tool` starts seen so far.
    tools: u32,
    /// Call id of the latest `tool` start.
    tool_id: String,
}

impl SessionDeltaDecoder {
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.terminal {
            return Ok(());
        }
        if let Some(["delta", text]) = fast::plain_fields(sse.data, ["type", "text"]) {
            self.ensure_started(emit);
            return self.delta(text, emit);
        }
        let wire: Wire<'_> = serde_json::from_str(sse.data).map_err(DecodeError::json)?;
        let ty = super::event_type(&wire.ty, sse)?;
        if ty == "session" {
            if !self.started {
                self.started = true;
                emit(Event::Start {
                    message_id: None,
                    conversation_id: wire.session_key.map(|k| k.0),
                });
            }
            return Ok(());
        }
        self.ensure_started(emit);
        match ty {
            "delta" => {
                let text = wire
                    .text
                    .ok_or_else(|| DecodeError::Protocol("`delta` without `text`".into()))?;
                self.delta(&text.0, emit)?;
            }
            "tool" => {
                self.close_text(emit);
                let phase = wire.phase.as_ref().map(|p| &*p.0);
                // Seed 004 shows no `toolCallId`: a start without one gets `call-<n>`, and a
                // result without one belongs to the latest start.
                if phase == Some("start") {
                    self.tools += 1;
                    self.tool_id.clear();
                    match &wire.tool_call_id {
                        Some(id) => self.tool_id.push_str(&id.0),
                        None => {
                            let _ = write!(self.tool_id, "call-{}", self.tools);
                        }
                    }
                }
                let call_id: Str<'_> = match wire.tool_call_id {
                    Some(id) => id.0,
                    None if self.tools == 0 => {
                        return Err(DecodeError::Protocol(
                            "`tool` event without `toolCallId` before any `tool` start".into(),
                        ))
                    }
                    None => Cow::Borrowed(&self.tool_id),
                };
                match phase {
                    Some("start") => {
                        let name = wire.name.ok_or_else(|| {
                            DecodeError::Protocol("`tool` start without `name`".into())
                        })?;
                        let input = match wire.input {
                            Some(raw) => Json::borrowed(raw),
                            None => Json::from_value(&serde_json::Map::new()),
                        };
                        emit(Event::ToolInputAvailable {
                            call_id,
                            name: name.0,
                            input,
                        });
                    }
                    Some("result") => match (wire.error, wire.output) {
                        _ if wire.denied == Some(true) => emit(Event::ToolDenied { call_id }),
                        (Some(error), _) => emit(Event::ToolError {
                            call_id,
                            error: error.0,
                        }),
                        (None, output) => emit(Event::ToolOutput {
                            call_id,
                            output: Json::borrowed(output.unwrap_or(RawValue::NULL)),
                        }),
                    },
                    other => {
                        return Err(DecodeError::Protocol(format!(
                            "`tool` event with unknown phase {other:?}"
                        )))
                    }
                }
            }
            "done" => {
                self.close_text(emit);
                self.terminal = true;
                emit(Event::Finish {
                    reason: wire.finish_reason.map(|r| FinishReason::parse(&r.0)),
                    usage: wire
                        .usage
                        .and_then(|u| u.credits)
                        .filter(|c| c.is_finite())
                        .map(Usage::credits),
                    metadata: None,
                });
            }
            "error" => {
                self.terminal = true;
                let message = wire
                    .message
                    .or(wire.error)
                    .map(|m| m.0)
                    .unwrap_or(Cow::Borrowed("upstream error"));
                emit(Event::Error { message });
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        }
        Ok(())
    }

    fn ensure_started<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) {
        if !self.started {
            self.started = true;
            emit(Event::Start {
                message_id: None,
                conversation_id: None,
            });
        }
    }

    /// A `delta`: emits what `text` adds to the text seen so far.
    fn delta<F: FnMut(Event<'_>)>(&mut self, text: &str, emit: &mut F) -> Result<(), DecodeError> {
        if text.len() < self.seen.len() && self.seen.starts_with(text) {
            // The text taken back (an agentgate `reset-step`, SPEC §8): this format has no
            // steps, so the answer restarts with the text it keeps.
            self.close_text(emit);
            emit(Event::ResetStep);
            self.seen.clear();
        }
        let Some(suffix) = text.strip_prefix(self.seen.as_str()) else {
            return Err(DecodeError::Protocol(
                "`delta` text does not extend the text seen so far".into(),
            ));
        };
        if suffix.is_empty() {
            return Ok(());
        }
        if !self.text_open {
            self.text_open = true;
            self.parts += 1;
            self.text_id.clear();
            let _ = write!(self.text_id, "text-{}", self.parts);
            emit(Event::TextStart {
                id: Cow::Borrowed(&self.text_id),
            });
        }
        emit(Event::TextDelta {
            id: Cow::Borrowed(&self.text_id),
            delta: Cow::Borrowed(suffix),
        });
        self.seen.push_str(suffix);
        Ok(())
    }

    fn close_text<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) {
        if self.text_open {
            self.text_open = false;
            emit(Event::TextEnd {
                id: Cow::Borrowed(&self.text_id),
            });
        }
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
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
enum Out<'a> {
    Session {
        session_key: &'a str,
    },
    #[serde(rename = "tool")]
    ToolStart {
        phase: &'static str,
        tool_call_id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    #[serde(rename = "tool")]
    ToolResult {
        phase: &'static str,
        tool_call_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        denied: Option<bool>,
    },
    Done {
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        #[serde(skip_serializing_if = "Option::is_none")]
        finish_reason: Option<FinishReason>,
    },
    Error {
        message: &'a str,
    },
}

#[derive(Debug, Default)]
pub struct SessionDeltaEncoder {
    session_sent: bool,
    done: bool,
    /// The accumulated answer text: each `delta` event carries all of it.
    text: String,
    /// The length of `text` when the current step started (`reset-step` goes back to it).
    step_start: usize,
}

impl SessionDeltaEncoder {
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn ensure_session(&mut self, out: &mut BytesMut, key: Option<&str>) {
        if self.session_sent {
            return;
        }
        self.session_sent = true;
        let generated;
        let session_key = match key {
            Some(k) => k,
            None => {
                generated = format!("api:{}", uuid::Uuid::new_v4());
                &generated
            }
        };
        sse::write_json_event(out, Some("session"), &Out::Session { session_key });
    }

    fn done(&mut self, out: &mut BytesMut, usage: Option<Usage>, reason: Option<FinishReason>) {
        sse::write_json_event(
            out,
            Some("done"),
            &Out::Done {
                usage,
                finish_reason: reason,
            },
        );
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let Event::Start {
            conversation_id, ..
        } = event
        {
            self.ensure_session(out, conversation_id.as_deref());
            return;
        }
        self.ensure_session(out, None);
        match event {
            Event::TextDelta { delta, .. } => {
                if delta.is_empty() {
                    return;
                }
                self.text.push_str(delta);
                // The hot path, written by hand: the same bytes as `Out::Delta` would be.
                sse::write_event_with(out, Some("delta"), |out| {
                    fast::write_fields(out, "delta", &[("text", &self.text)])
                });
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => sse::write_json_event(
                out,
                Some("tool"),
                &Out::ToolStart {
                    phase: "start",
                    tool_call_id: call_id,
                    name,
                    input,
                },
            ),
            Event::ToolOutput { call_id, output } => sse::write_json_event(
                out,
                Some("tool"),
                &Out::ToolResult {
                    phase: "result",
                    tool_call_id: call_id,
                    output: Some(output),
                    error: None,
                    denied: None,
                },
            ),
            Event::ToolError { call_id, error } | Event::ToolInputError { call_id, error, .. } => {
                sse::write_json_event(
                    out,
                    Some("tool"),
                    &Out::ToolResult {
                        phase: "result",
                        tool_call_id: call_id,
                        output: None,
                        error: Some(error),
                        denied: None,
                    },
                )
            }
            Event::ToolDenied { call_id } => sse::write_json_event(
                out,
                Some("tool"),
                &Out::ToolResult {
                    phase: "result",
                    tool_call_id: call_id,
                    output: None,
                    error: None,
                    denied: Some(true),
                },
            ),
            Event::StepStart => self.step_start = self.text.len(),
            // A `delta` with the text taken back to before the reset step (SPEC §8).
            Event::ResetStep => {
                if self.step_start < self.text.len() {
                    self.text.truncate(self.step_start);
                    sse::write_event_with(out, Some("delta"), |out| {
                        fast::write_fields(out, "delta", &[("text", &self.text)])
                    });
                }
            }
            Event::Finish { reason, usage, .. } => self.done(out, *usage, *reason),
            Event::Error { message } => {
                sse::write_json_event(out, Some("error"), &Out::Error { message });
                self.done(out, None, Some(FinishReason::Error));
            }
            Event::Abort { .. } => self.done(out, None, Some(FinishReason::Interrupted)),
            // What this format cannot carry: part boundaries, reasoning, streamed tool
            // input, step ends, metadata, data parts, sources, files, approvals.
            Event::Start { .. }
            | Event::TextStart { .. }
            | Event::TextEnd { .. }
            | Event::ReasoningStart { .. }
            | Event::ReasoningDelta { .. }
            | Event::ReasoningEnd { .. }
            | Event::ToolInputStart { .. }
            | Event::ToolInputDelta { .. }
            | Event::StepFinish
            | Event::Part { .. }
            | Event::Metadata { .. } => {}
        }
    }
}
