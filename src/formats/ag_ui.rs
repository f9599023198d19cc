//! `ag-ui`: the Agent–User Interaction protocol's SSE stream (`@ag-ui/core` 1.x; SPEC §9).
//!
//! One JSON event per `data:` line, `type` in AG-UI's upper-case names, no `[DONE]`: a run
//! is `RUN_STARTED` … `RUN_FINISHED` (or `RUN_ERROR`). The mapping to canonical events:
//!
//! | AG-UI | canonical |
//! |---|---|
//! | `RUN_STARTED {threadId, runId}` | start (conversation id, message id) |
//! | `TEXT_MESSAGE_START/CONTENT/END` (and `_CHUNK`, decoded) | text start/delta/end |
//! | `REASONING_MESSAGE_START/CONTENT/END` (and `_CHUNK`) | reasoning start/delta/end |
//! | `TOOL_CALL_START/ARGS/END` (and `_CHUNK`) | tool input start/delta/available |
//! | `TOOL_CALL_RESULT {content}` | tool output (tool errors and denials as their text) |
//! | `STEP_STARTED/FINISHED` | step start/finish |
//! | `RUN_FINISHED {result}` | finish (`result` holds the metadata, usage included) |
//! | `RUN_FINISHED {outcome: cancelled}` | abort |
//! | `RUN_ERROR {message}` | error |
//! | `STATE_*`, `MESSAGES_SNAPSHOT`, `ACTIVITY_*`, `CUSTOM`, `RAW`, others | data parts |
//!
//! The data parts are `data-ag-ui-<kind>` chunks `{"type": …, "data": <the AG-UI event>}`
//! (`state`, `messages`, `activity`, `custom`, `raw`, and `event` for the rest): a ui-message
//! client sees them as data parts, and the ag-ui encoder writes the event inside on unchanged.
//! Any other part (a ui-message `data-*`, source, file, …) becomes a `CUSTOM` event named
//! after its type, its value the chunk.
//!
//! The encoder writes what `@ag-ui/client` verifies: `RUN_STARTED` first, a start before
//! every content, everything open closed before `RUN_FINISHED`, and `\n` line ends. Message
//! ids are made from the run (`<runId>-<part id>`), so a backend that names every answer's
//! text `text-1` never makes a client see one message id in two runs; tool call ids pass
//! unchanged (the client answers a tool call by its id).

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::{present_raw, usage_in_metadata, CowStr, Event, FinishReason, Json, Str, Usage};
use super::{fast, DecodeError};
use crate::sse::{self, SseEvent};

/// The most tool call argument text the decoder holds (it parses the whole of it at
/// `TOOL_CALL_END`), over all open tool calls.
pub const MAX_TOOL_ARGS_BYTES: usize = 1 << 20;
/// The most tool calls open at once in a decoded stream.
const MAX_OPEN_TOOL_CALLS: usize = 64;

/// Every field the decoder reads, borrowed from the input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    thread_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    run_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    message_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    delta: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_call_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_call_name: Option<CowStr<'a>>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    content: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    outcome: Option<Outcome<'a>>,
    #[serde(borrow)]
    message: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct Outcome<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
}

fn required<'a>(
    v: Option<CowStr<'a>>,
    ty: &str,
    field: &'static str,
) -> Result<Str<'a>, DecodeError> {
    v.map(|s| s.0)
        .ok_or_else(|| DecodeError::Protocol(format!("`{ty}` event without `{field}`")))
}

/// The data part an AG-UI event with no canonical event of its own travels as.
fn part_type(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "STATE_SNAPSHOT" | "STATE_DELTA" => "data-ag-ui-state",
        "MESSAGES_SNAPSHOT" => "data-ag-ui-messages",
        "ACTIVITY_SNAPSHOT" | "ACTIVITY_DELTA" => "data-ag-ui-activity",
        "CUSTOM" => "data-ag-ui-custom",
        "RAW" => "data-ag-ui-raw",
        // The lifecycle and content events the encoder writes itself.
        "RUN_STARTED"
        | "RUN_FINISHED"
        | "RUN_ERROR"
        | "STEP_STARTED"
        | "STEP_FINISHED"
        | "TEXT_MESSAGE_START"
        | "TEXT_MESSAGE_CONTENT"
        | "TEXT_MESSAGE_END"
        | "TEXT_MESSAGE_CHUNK"
        | "TOOL_CALL_START"
        | "TOOL_CALL_ARGS"
        | "TOOL_CALL_END"
        | "TOOL_CALL_CHUNK"
        | "TOOL_CALL_RESULT"
        | "REASONING_START"
        | "REASONING_MESSAGE_START"
        | "REASONING_MESSAGE_CONTENT"
        | "REASONING_MESSAGE_END"
        | "REASONING_MESSAGE_CHUNK"
        | "REASONING_END"
        | "SUBAGENT_STARTED"
        | "SUBAGENT_FINISHED"
        | "SUBAGENT_ERROR" => return None,
        // `REASONING_ENCRYPTED_VALUE` and types newer than this code.
        _ => "data-ag-ui-event",
    })
}

/// A data part `{"type": part, "data": event}`.
#[derive(Serialize, Deserialize)]
struct DataPart<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A `*_CHUNK` stream open in the decoder (AG-UI's shorthand for start/content/end).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkKind {
    #[default]
    None,
    Text,
    Reasoning,
    Tool,
}

/// A tool call whose arguments are being streamed.
#[derive(Debug)]
struct OpenCall {
    id: String,
    name: String,
    args: String,
}

#[derive(Debug, Default)]
pub struct AgUiDecoder {
    started: bool,
    terminal: bool,
    /// The open `*_CHUNK` stream, and its message or tool call id.
    chunk: ChunkKind,
    chunk_id: String,
    calls: Vec<OpenCall>,
    args_bytes: usize,
}

impl AgUiDecoder {
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.terminal {
            return Ok(());
        }
        let data = sse.data.trim_ascii();
        if let Some(["TEXT_MESSAGE_CONTENT", id, delta]) =
            fast::plain_fields(data, ["type", "messageId", "delta"])
        {
            if self.chunk == ChunkKind::None {
                self.ensure_started(emit);
                emit(Event::TextDelta {
                    id: Cow::Borrowed(id),
                    delta: Cow::Borrowed(delta),
                });
                return Ok(());
            }
        }
        let raw: &RawValue = serde_json::from_str(data).map_err(DecodeError::json)?;
        // Events passed whole are not read further (their fields have shapes of their own,
        // e.g. `STATE_DELTA`'s `delta` is a JSON patch, not text).
        let typed: Typed<'_> = serde_json::from_str(raw.get()).map_err(DecodeError::json)?;
        if let Some(part) = part_type(super::event_type(&typed.ty, sse)?) {
            self.ensure_started(emit);
            let ty = super::event_type(&typed.ty, sse)?;
            // Passed-through events do not end a chunk stream (as in `@ag-ui/client`).
            if !matches!(
                ty,
                "RAW" | "ACTIVITY_SNAPSHOT" | "ACTIVITY_DELTA" | "REASONING_ENCRYPTED_VALUE"
            ) {
                self.close_chunk(emit)?;
            }
            // It needs its `type` in its JSON to be written on faithfully.
            if typed.ty.is_some() {
                let chunk = serde_json::value::to_raw_value(&DataPart {
                    ty: part,
                    data: raw,
                })
                .map_err(DecodeError::json)?;
                emit(Event::Part {
                    ty: Cow::Borrowed(part),
                    chunk: Json::owned(chunk),
                });
            }
            return Ok(());
        }
        let wire: Wire<'_> = serde_json::from_str(raw.get()).map_err(DecodeError::json)?;
        let ty = super::event_type(&wire.ty, sse)?;
        if ty == "RUN_STARTED" {
            if !self.started {
                self.started = true;
                emit(Event::Start {
                    message_id: wire.run_id.map(|s| s.0),
                    conversation_id: wire.thread_id.map(|s| s.0),
                });
            }
            return Ok(());
        }
        self.ensure_started(emit);
        let chunk_kind = match ty {
            "TEXT_MESSAGE_CHUNK" => ChunkKind::Text,
            "REASONING_MESSAGE_CHUNK" => ChunkKind::Reasoning,
            "TOOL_CALL_CHUNK" => ChunkKind::Tool,
            // Passed-through events do not end a chunk stream (as in `@ag-ui/client`).
            "RAW" | "ACTIVITY_SNAPSHOT" | "ACTIVITY_DELTA" | "REASONING_ENCRYPTED_VALUE" => {
                self.chunk
            }
            _ => ChunkKind::None,
        };
        if chunk_kind != ChunkKind::None {
            if ty.ends_with("_CHUNK") {
                return self.chunk_event(chunk_kind, wire, emit);
            }
        } else {
            self.close_chunk(emit)?;
        }
        let event = match ty {
            "TEXT_MESSAGE_START" => Event::TextStart {
                id: required(wire.message_id, ty, "messageId")?,
            },
            "TEXT_MESSAGE_CONTENT" => Event::TextDelta {
                id: required(wire.message_id, ty, "messageId")?,
                delta: required(wire.delta, ty, "delta")?,
            },
            "TEXT_MESSAGE_END" => Event::TextEnd {
                id: required(wire.message_id, ty, "messageId")?,
            },
            "REASONING_MESSAGE_START" => Event::ReasoningStart {
                id: required(wire.message_id, ty, "messageId")?,
            },
            "REASONING_MESSAGE_CONTENT" => Event::ReasoningDelta {
                id: required(wire.message_id, ty, "messageId")?,
                delta: required(wire.delta, ty, "delta")?,
            },
            "REASONING_MESSAGE_END" => Event::ReasoningEnd {
                id: required(wire.message_id, ty, "messageId")?,
            },
            // The span around reasoning messages has no event of its own.
            "REASONING_START" | "REASONING_END" => return Ok(()),
            "TOOL_CALL_START" => {
                let id = required(wire.tool_call_id, ty, "toolCallId")?;
                let name = required(wire.tool_call_name, ty, "toolCallName")?;
                self.open_call(&id, &name)?;
                Event::ToolInputStart { call_id: id, name }
            }
            "TOOL_CALL_ARGS" => {
                let id = required(wire.tool_call_id, ty, "toolCallId")?;
                let delta = required(wire.delta, ty, "delta")?;
                self.push_args(&id, &delta)?;
                Event::ToolInputDelta { call_id: id, delta }
            }
            "TOOL_CALL_END" => {
                let id = required(wire.tool_call_id, ty, "toolCallId")?;
                return self.end_call(&id, emit);
            }
            "TOOL_CALL_RESULT" => Event::ToolOutput {
                call_id: required(wire.tool_call_id, ty, "toolCallId")?,
                output: wire.content.map(Json::borrowed).ok_or_else(|| {
                    DecodeError::Protocol(format!("`{ty}` event without `content`"))
                })?,
            },
            "STEP_STARTED" => Event::StepStart,
            "STEP_FINISHED" => Event::StepFinish,
            "RUN_FINISHED" => {
                self.terminal = true;
                let outcome = wire.outcome.and_then(|o| o.ty).map(|t| t.0);
                match outcome.as_deref() {
                    Some("cancelled") => Event::Abort { reason: None },
                    other => {
                        let result = wire.result.filter(|r| r.get() != "null");
                        Event::Finish {
                            reason: (other == Some("interrupt")).then_some(FinishReason::Other),
                            usage: result.and_then(usage_in_metadata),
                            metadata: result.map(Json::borrowed),
                        }
                    }
                }
            }
            "RUN_ERROR" => {
                self.terminal = true;
                Event::Error {
                    message: required(wire.message, ty, "message")?,
                }
            }
            // Subagent events: no canonical event, and not passed on alone (their
            // messages are written as the parent's).
            _ => return Ok(()),
        };
        emit(event);
        Ok(())
    }

    /// The upstream closed the stream: fine after `RUN_FINISHED` or `RUN_ERROR`.
    pub fn end(&mut self) -> Result<(), DecodeError> {
        if self.terminal {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
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

    fn open_call(&mut self, id: &str, name: &str) -> Result<(), DecodeError> {
        if self.calls.iter().any(|c| c.id == id) {
            return Err(DecodeError::Protocol(format!(
                "tool call `{id}` started twice"
            )));
        }
        if self.calls.len() >= MAX_OPEN_TOOL_CALLS {
            return Err(DecodeError::Protocol(format!(
                "more than {MAX_OPEN_TOOL_CALLS} tool calls open at once"
            )));
        }
        self.calls.push(OpenCall {
            id: id.to_owned(),
            name: name.to_owned(),
            args: String::new(),
        });
        Ok(())
    }

    fn push_args(&mut self, id: &str, delta: &str) -> Result<(), DecodeError> {
        let call = self.calls.iter_mut().find(|c| c.id == id).ok_or_else(|| {
            DecodeError::Protocol(format!("arguments for tool call `{id}`, which is not open"))
        })?;
        self.args_bytes += delta.len();
        if self.args_bytes > MAX_TOOL_ARGS_BYTES {
            return Err(DecodeError::Protocol(format!(
                "tool call arguments over {MAX_TOOL_ARGS_BYTES} bytes"
            )));
        }
        call.args.push_str(delta);
        Ok(())
    }

    /// `TOOL_CALL_END`: the input is the arguments streamed, parsed (none: `{}`).
    fn end_call<F: FnMut(Event<'_>)>(&mut self, id: &str, emit: &mut F) -> Result<(), DecodeError> {
        let at = self.calls.iter().position(|c| c.id == id).ok_or_else(|| {
            DecodeError::Protocol(format!("end of tool call `{id}`, which is not open"))
        })?;
        let call = self.calls.swap_remove(at);
        self.args_bytes -= call.args.len();
        let call_id = Cow::Borrowed(id);
        let name = Cow::Owned(call.name);
        if call.args.trim().is_empty() {
            emit(Event::ToolInputAvailable {
                call_id,
                name,
                input: Json::owned(
                    RawValue::from_string("{}".to_owned()).map_err(DecodeError::json)?,
                ),
            });
            return Ok(());
        }
        match serde_json::from_str::<&RawValue>(&call.args) {
            Ok(input) => emit(Event::ToolInputAvailable {
                call_id,
                name,
                input: Json::borrowed(input),
            }),
            Err(e) => emit(Event::ToolInputError {
                call_id,
                name,
                input: Json::from_value(&call.args),
                error: Cow::Owned(format!("tool call arguments are not valid JSON: {e}")),
            }),
        }
        Ok(())
    }

    /// A `*_CHUNK` event: opens (or continues) its stream, closing any other first.
    fn chunk_event<F: FnMut(Event<'_>)>(
        &mut self,
        kind: ChunkKind,
        wire: Wire<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        let id = match kind {
            ChunkKind::Tool => wire.tool_call_id,
            _ => wire.message_id,
        };
        let continues = self.chunk == kind && id.as_ref().is_none_or(|id| id.0 == self.chunk_id);
        if !continues {
            self.close_chunk(emit)?;
            let Some(id) = id else {
                return Err(DecodeError::Protocol(
                    "the first event of a chunk stream has no id".into(),
                ));
            };
            match kind {
                ChunkKind::Text => emit(Event::TextStart { id: id.0.clone() }),
                ChunkKind::Reasoning => emit(Event::ReasoningStart { id: id.0.clone() }),
                ChunkKind::Tool => {
                    let name = required(wire.tool_call_name, "TOOL_CALL_CHUNK", "toolCallName")?;
                    self.open_call(&id.0, &name)?;
                    emit(Event::ToolInputStart {
                        call_id: id.0.clone(),
                        name,
                    });
                }
                ChunkKind::None => {}
            }
            self.chunk = kind;
            self.chunk_id.clear();
            self.chunk_id.push_str(&id.0);
        }
        let Some(delta) = wire.delta else {
            return Ok(());
        };
        if kind == ChunkKind::Tool {
            let id = std::mem::take(&mut self.chunk_id);
            let pushed = self.push_args(&id, &delta.0);
            if pushed.is_ok() {
                emit(Event::ToolInputDelta {
                    call_id: Cow::Borrowed(&id),
                    delta: delta.0,
                });
            }
            self.chunk_id = id;
            return pushed;
        }
        let id = Cow::Borrowed(self.chunk_id.as_str());
        match kind {
            ChunkKind::Text => emit(Event::TextDelta { id, delta: delta.0 }),
            ChunkKind::Reasoning => emit(Event::ReasoningDelta { id, delta: delta.0 }),
            ChunkKind::Tool | ChunkKind::None => {}
        }
        Ok(())
    }

    /// Ends the open `*_CHUNK` stream, if any.
    fn close_chunk<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) -> Result<(), DecodeError> {
        let kind = std::mem::take(&mut self.chunk);
        let id = std::mem::take(&mut self.chunk_id);
        match kind {
            ChunkKind::None => {}
            ChunkKind::Text => emit(Event::TextEnd {
                id: Cow::Borrowed(&id),
            }),
            ChunkKind::Reasoning => emit(Event::ReasoningEnd {
                id: Cow::Borrowed(&id),
            }),
            ChunkKind::Tool => {
                if self.calls.iter().any(|c| c.id == id) {
                    self.end_call(&id, emit)?;
                }
            }
        }
        self.chunk_id = id;
        self.chunk_id.clear();
        Ok(())
    }
}

/// One event as written (text deltas, the hot path, are written by hand). Absent optionals
/// are omitted, never `null` (AG-UI's schemas reject `null` for optional fields).
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
enum Out<'a> {
    RunStarted {
        thread_id: &'a str,
        run_id: &'a str,
    },
    RunFinished {
        thread_id: &'a str,
        run_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<OutOutcome>,
    },
    RunError {
        message: &'a str,
    },
    StepStarted {
        step_name: &'a str,
    },
    StepFinished {
        step_name: &'a str,
    },
    TextMessageStart {
        message_id: &'a str,
        role: &'static str,
    },
    TextMessageEnd {
        message_id: &'a str,
    },
    ReasoningStart {
        message_id: &'a str,
    },
    ReasoningMessageStart {
        message_id: &'a str,
        role: &'static str,
    },
    ReasoningMessageEnd {
        message_id: &'a str,
    },
    ReasoningEnd {
        message_id: &'a str,
    },
    ToolCallStart {
        tool_call_id: &'a str,
        tool_call_name: &'a str,
    },
    ToolCallArgs {
        tool_call_id: &'a str,
        delta: &'a str,
    },
    ToolCallEnd {
        tool_call_id: &'a str,
    },
    ToolCallResult {
        message_id: &'a str,
        tool_call_id: &'a str,
        content: &'a str,
        role: &'static str,
    },
    Custom {
        name: &'a str,
        value: &'a RawValue,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum OutOutcome {
    Cancelled,
}

/// A tool call the encoder has started and not yet ended.
#[derive(Debug)]
struct EncCall {
    id: String,
    /// Non-empty arguments were written for it.
    args: bool,
}

#[derive(Debug, Default)]
pub struct AgUiEncoder {
    started: bool,
    done: bool,
    thread_id: String,
    run_id: String,
    /// Canonical ids of open text and reasoning messages (written as `<runId>-<id>`).
    text: Vec<String>,
    reasoning: Vec<String>,
    calls: Vec<EncCall>,
    /// Names of the open steps, innermost last.
    steps: Vec<String>,
    step_count: u32,
    result_count: u32,
    /// A reused buffer for `<runId>-<id>`.
    scratch: String,
}

impl AgUiEncoder {
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn put(out: &mut BytesMut, event: &Out<'_>) {
        sse::write_json_event(out, None, event);
    }

    /// `<runId>-<id>`, in the scratch buffer.
    fn message_id(&mut self, id: &str) -> &str {
        self.scratch.clear();
        self.scratch.push_str(&self.run_id);
        self.scratch.push('-');
        self.scratch.push_str(id);
        &self.scratch
    }

    fn ensure_started(
        &mut self,
        out: &mut BytesMut,
        run_id: Option<&str>,
        thread_id: Option<&str>,
    ) {
        if self.started {
            return;
        }
        self.started = true;
        self.run_id = match run_id {
            Some(id) => id.to_owned(),
            None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
        };
        self.thread_id = match thread_id {
            Some(id) => id.to_owned(),
            None => format!("thread_{}", uuid::Uuid::new_v4().simple()),
        };
        Self::put(
            out,
            &Out::RunStarted {
                thread_id: &self.thread_id,
                run_id: &self.run_id,
            },
        );
    }

    fn open_text(&mut self, out: &mut BytesMut, id: &str) {
        if !self.text.iter().any(|x| x == id) {
            self.text.push(id.to_owned());
            let message_id = self.message_id(id);
            Self::put(
                out,
                &Out::TextMessageStart {
                    message_id,
                    role: "assistant",
                },
            );
        }
    }

    fn open_reasoning(&mut self, out: &mut BytesMut, id: &str) {
        if !self.reasoning.iter().any(|x| x == id) {
            self.reasoning.push(id.to_owned());
            let message_id = self.message_id(id);
            Self::put(out, &Out::ReasoningStart { message_id });
            Self::put(
                out,
                &Out::ReasoningMessageStart {
                    message_id,
                    role: "reasoning",
                },
            );
        }
    }

    fn end_text(&mut self, out: &mut BytesMut, at: usize) {
        let id = self.text.swap_remove(at);
        let message_id = self.message_id(&id);
        Self::put(out, &Out::TextMessageEnd { message_id });
    }

    fn end_reasoning(&mut self, out: &mut BytesMut, at: usize) {
        let id = self.reasoning.swap_remove(at);
        let message_id = self.message_id(&id);
        Self::put(out, &Out::ReasoningMessageEnd { message_id });
        Self::put(out, &Out::ReasoningEnd { message_id });
    }

    fn end_call(&mut self, out: &mut BytesMut, call_id: &str) {
        if let Some(at) = self.calls.iter().position(|c| c.id == call_id) {
            self.calls.swap_remove(at);
            Self::put(
                out,
                &Out::ToolCallEnd {
                    tool_call_id: call_id,
                },
            );
        }
    }

    /// Ends every open message and tool call (steps stay open).
    fn close_parts(&mut self, out: &mut BytesMut) {
        while !self.text.is_empty() {
            self.end_text(out, self.text.len() - 1);
        }
        while !self.reasoning.is_empty() {
            self.end_reasoning(out, self.reasoning.len() - 1);
        }
        for call in std::mem::take(&mut self.calls) {
            Self::put(
                out,
                &Out::ToolCallEnd {
                    tool_call_id: &call.id,
                },
            );
        }
    }

    /// Ends everything open, steps included, before `RUN_FINISHED`.
    fn close_all(&mut self, out: &mut BytesMut) {
        self.close_parts(out);
        while let Some(step_name) = self.steps.pop() {
            Self::put(
                out,
                &Out::StepFinished {
                    step_name: &step_name,
                },
            );
        }
    }

    fn result(&mut self, out: &mut BytesMut, call_id: &str, content: &str) {
        self.end_call(out, call_id);
        self.result_count += 1;
        let message_id = format!("{}-result-{}", self.run_id, self.result_count);
        Self::put(
            out,
            &Out::ToolCallResult {
                message_id: &message_id,
                tool_call_id: call_id,
                content,
                role: "tool",
            },
        );
    }

    fn finish(
        &mut self,
        out: &mut BytesMut,
        result: Option<&RawValue>,
        outcome: Option<OutOutcome>,
    ) {
        self.close_all(out);
        Self::put(
            out,
            &Out::RunFinished {
                thread_id: &self.thread_id,
                run_id: &self.run_id,
                result,
                outcome,
            },
        );
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let Event::Start {
            message_id,
            conversation_id,
        } = event
        {
            self.ensure_started(out, message_id.as_deref(), conversation_id.as_deref());
            return;
        }
        self.ensure_started(out, None, None);
        match event {
            Event::Start { .. } => {}
            Event::TextStart { id } => self.open_text(out, id),
            Event::TextDelta { id, delta } => {
                self.open_text(out, id);
                put_content(out, "TEXT_MESSAGE_CONTENT", self.message_id(id), delta);
            }
            Event::TextEnd { id } => {
                if let Some(at) = self.text.iter().position(|x| x == id) {
                    self.end_text(out, at);
                }
            }
            Event::ReasoningStart { id } => self.open_reasoning(out, id),
            Event::ReasoningDelta { id, delta } => {
                self.open_reasoning(out, id);
                put_content(out, "REASONING_MESSAGE_CONTENT", self.message_id(id), delta);
            }
            Event::ReasoningEnd { id } => {
                if let Some(at) = self.reasoning.iter().position(|x| x == id) {
                    self.end_reasoning(out, at);
                }
            }
            Event::ToolInputStart { call_id, name } => {
                if !self.calls.iter().any(|c| c.id == **call_id) {
                    self.calls.push(EncCall {
                        id: call_id.to_string(),
                        args: false,
                    });
                    Self::put(
                        out,
                        &Out::ToolCallStart {
                            tool_call_id: call_id,
                            tool_call_name: name,
                        },
                    );
                }
            }
            Event::ToolInputDelta { call_id, delta } => {
                // Without its start (which needs the tool's name) the complete input still
                // arrives with the end.
                if let Some(call) = self.calls.iter_mut().find(|c| c.id == **call_id) {
                    call.args |= !delta.is_empty();
                    Self::put(
                        out,
                        &Out::ToolCallArgs {
                            tool_call_id: call_id,
                            delta,
                        },
                    );
                }
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            }
            | Event::ToolInputError {
                call_id,
                name,
                input,
                ..
            } => {
                let streamed = match self.calls.iter().find(|c| c.id == **call_id) {
                    Some(call) => call.args,
                    None => {
                        self.calls.push(EncCall {
                            id: call_id.to_string(),
                            args: false,
                        });
                        Self::put(
                            out,
                            &Out::ToolCallStart {
                                tool_call_id: call_id,
                                tool_call_name: name,
                            },
                        );
                        false
                    }
                };
                if !streamed {
                    Self::put(
                        out,
                        &Out::ToolCallArgs {
                            tool_call_id: call_id,
                            delta: input.get(),
                        },
                    );
                }
                self.end_call(out, call_id);
                if let Event::ToolInputError { error, .. } = event {
                    self.result(out, call_id, error);
                }
            }
            Event::ToolOutput { call_id, output } => {
                // A string is the content as is; any other value its JSON text.
                let text: Option<String> = serde_json::from_str(output.get()).ok();
                self.result(out, call_id, text.as_deref().unwrap_or(output.get()));
            }
            Event::ToolError { call_id, error } => self.result(out, call_id, error),
            Event::ToolDenied { call_id } => {
                self.result(out, call_id, "The tool's execution was denied.")
            }
            Event::StepStart => {
                self.step_count += 1;
                let name = format!("step-{}", self.step_count);
                Self::put(out, &Out::StepStarted { step_name: &name });
                self.steps.push(name);
            }
            Event::StepFinish => {
                if let Some(step_name) = self.steps.pop() {
                    Self::put(
                        out,
                        &Out::StepFinished {
                            step_name: &step_name,
                        },
                    );
                }
            }
            // AG-UI cannot take text back: the step's open parts end, later ones are new.
            Event::ResetStep => self.close_parts(out),
            Event::Part { ty, chunk } => self.part(out, ty, chunk),
            // AG-UI has no metadata event; the finish's metadata travels in `result`.
            Event::Metadata { .. } => {}
            Event::Finish {
                usage, metadata, ..
            } => {
                let metadata = metadata.as_deref().filter(|m| m.get() != "null");
                let merged = match (metadata, usage) {
                    (Some(raw), Some(usage)) if usage_in_metadata(raw) != Some(*usage) => {
                        with_usage(raw, *usage)
                    }
                    (None, Some(usage)) => {
                        serde_json::value::to_raw_value(&serde_json::json!({ "usage": usage })).ok()
                    }
                    _ => None,
                };
                let result = merged.as_deref().or(metadata);
                self.finish(out, result, None);
            }
            Event::Abort { .. } => self.finish(out, None, Some(OutOutcome::Cancelled)),
            Event::Error { message } => {
                Self::put(out, &Out::RunError { message });
                self.done = true;
            }
        }
    }

    /// A data part: an AG-UI event carried in `data-ag-ui-*` is written on as it came; any
    /// other part becomes a `CUSTOM` event named after its type.
    fn part(&mut self, out: &mut BytesMut, ty: &str, chunk: &RawValue) {
        if ty.starts_with("data-ag-ui-") {
            if let Ok(part) = serde_json::from_str::<DataPart<'_>>(chunk.get()) {
                #[derive(Deserialize)]
                struct Typed<'a> {
                    #[serde(borrow, rename = "type")]
                    ty: CowStr<'a>,
                }
                if let Ok(event) = serde_json::from_str::<Typed<'_>>(part.data.get()) {
                    // Only events that carry no run structure: a lifecycle event inside a
                    // data part would end or corrupt the run the encoder writes.
                    if part_type(&event.ty.0).is_some() {
                        sse::write_event(out, None, part.data.get());
                        return;
                    }
                }
            }
        }
        Self::put(
            out,
            &Out::Custom {
                name: ty,
                value: chunk,
            },
        );
    }
}

/// `metadata` with `usage.credits` set to `usage` (other `usage` fields kept). `None` when
/// the metadata is not a JSON object, which cannot carry it.
fn with_usage(metadata: &RawValue, usage: Usage) -> Option<Box<RawValue>> {
    use serde_json::{Map, Value};
    let mut map: Map<String, Value> = serde_json::from_str(metadata.get()).ok()?;
    let credits = serde_json::to_value(usage).ok()?["credits"].take();
    match map.get_mut("usage") {
        Some(Value::Object(existing)) => {
            existing.insert("credits".into(), credits);
        }
        _ => {
            map.insert("usage".into(), serde_json::json!({ "credits": credits }));
        }
    }
    serde_json::value::to_raw_value(&map).ok()
}

/// A `TEXT_MESSAGE_CONTENT` or `REASONING_MESSAGE_CONTENT` event of `message_id`.
fn put_content(out: &mut BytesMut, ty: &str, message_id: &str, delta: &str) {
    sse::write_event_with(out, None, |out| {
        fast::write_fields(out, ty, &[("messageId", message_id), ("delta", delta)])
    });
}
