//! `ui-message`: the Vercel AI SDK UIMessage stream (seed 002; the `ai` npm package).

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::{present_raw, usage_in_metadata, CowStr, Event, FinishReason, Json, Str, Usage};
use super::{fast, DecodeError};
use crate::sse::{self, SseEvent};

/// One chunk as it arrives: every field any chunk type uses, borrowed from the input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    id: Option<CowStr<'a>>,
    #[serde(borrow)]
    delta: Option<CowStr<'a>>,
    #[serde(borrow)]
    message_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_call_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_name: Option<CowStr<'a>>,
    #[serde(borrow)]
    input_text_delta: Option<CowStr<'a>>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    input: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    output: Option<&'a RawValue>,
    #[serde(borrow)]
    error_text: Option<CowStr<'a>>,
    #[serde(borrow)]
    finish_reason: Option<CowStr<'a>>,
    #[serde(borrow)]
    message_metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    reason: Option<CowStr<'a>>,
}

fn required<'a>(
    v: Option<CowStr<'a>>,
    ty: &str,
    field: &'static str,
) -> Result<Str<'a>, DecodeError> {
    v.map(|s| s.0)
        .ok_or_else(|| DecodeError::Protocol(format!("`{ty}` chunk without `{field}`")))
}

fn required_json<'a>(
    v: Option<&'a RawValue>,
    ty: &str,
    field: &'static str,
) -> Result<Json<'a>, DecodeError> {
    v.map(Json::borrowed)
        .ok_or_else(|| DecodeError::Protocol(format!("`{ty}` chunk without `{field}`")))
}

#[derive(Debug, Default)]
pub struct UiDecoder {
    started: bool,
    terminal: bool,
    done: bool,
}

impl UiDecoder {
    /// Decodes one chunk; `emit` gets each event with the chunk it was read from (its JSON
    /// value, for lossless ui-message output), or `None` for an event made up here or read
    /// on the fast path (whose typed form writes the same JSON value).
    pub fn decode<F: FnMut(Event<'_>, Option<&RawValue>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        let data = sse.data.trim_ascii();
        if data == "[DONE]" {
            if !self.terminal {
                self.ensure_started(emit);
                emit(
                    Event::Finish {
                        reason: None,
                        usage: None,
                        metadata: None,
                    },
                    None,
                );
            }
            self.terminal = true;
            self.done = true;
            return Ok(());
        }
        if self.terminal {
            return Ok(());
        }
        if let Some([ty, id, delta]) = fast::plain_fields(data, ["type", "id", "delta"]) {
            let (id, delta) = (Cow::Borrowed(id), Cow::Borrowed(delta));
            let event = match ty {
                "text-delta" => Some(Event::TextDelta { id, delta }),
                "reasoning-delta" => Some(Event::ReasoningDelta { id, delta }),
                _ => None,
            };
            if let Some(event) = event {
                self.ensure_started(emit);
                emit(event, None);
                return Ok(());
            }
        }
        let raw: &RawValue = serde_json::from_str(data).map_err(DecodeError::json)?;
        let chunk: Chunk<'_> = serde_json::from_str(raw.get()).map_err(DecodeError::json)?;
        let ty = super::event_type(&chunk.ty, sse)?;
        // A chunk typed only by its `event:` line (seed 002) is written anew from its event.
        let raw = chunk.ty.is_some().then_some(raw);
        if ty == "start" || ty == "message-start" {
            if !self.started {
                self.started = true;
                emit(
                    Event::Start {
                        message_id: chunk.message_id.map(|s| s.0),
                        conversation_id: None,
                    },
                    raw,
                );
            }
            if let Some(metadata) = chunk.message_metadata {
                // Written as part of its `start` chunk (see the encoder).
                emit(
                    Event::Metadata {
                        metadata: Json::borrowed(metadata),
                    },
                    raw,
                );
            }
            return Ok(());
        }
        self.ensure_started(emit);
        let event = match ty {
            "text-start" => Event::TextStart {
                id: required(chunk.id, ty, "id")?,
            },
            "text-delta" => Event::TextDelta {
                id: required(chunk.id, ty, "id")?,
                delta: required(chunk.delta, ty, "delta")?,
            },
            "text-end" => Event::TextEnd {
                id: required(chunk.id, ty, "id")?,
            },
            "reasoning-start" => Event::ReasoningStart {
                id: required(chunk.id, ty, "id")?,
            },
            "reasoning-delta" => Event::ReasoningDelta {
                id: required(chunk.id, ty, "id")?,
                delta: required(chunk.delta, ty, "delta")?,
            },
            "reasoning-end" => Event::ReasoningEnd {
                id: required(chunk.id, ty, "id")?,
            },
            "tool-input-start" => Event::ToolInputStart {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                name: required(chunk.tool_name, ty, "toolName")?,
            },
            "tool-input-delta" => Event::ToolInputDelta {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                delta: required(chunk.input_text_delta, ty, "inputTextDelta")?,
            },
            "tool-input-available" => Event::ToolInputAvailable {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                name: required(chunk.tool_name, ty, "toolName")?,
                input: required_json(chunk.input, ty, "input")?,
            },
            "tool-input-error" => Event::ToolInputError {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                name: required(chunk.tool_name, ty, "toolName")?,
                input: Json::borrowed(chunk.input.unwrap_or(RawValue::NULL)),
                error: required(chunk.error_text, ty, "errorText")?,
            },
            "tool-output-available" => Event::ToolOutput {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                output: required_json(chunk.output, ty, "output")?,
            },
            "tool-output-error" => Event::ToolError {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
                error: required(chunk.error_text, ty, "errorText")?,
            },
            "tool-output-denied" => Event::ToolDenied {
                call_id: required(chunk.tool_call_id, ty, "toolCallId")?,
            },
            "start-step" => Event::StepStart,
            "finish-step" => Event::StepFinish,
            "reset-step" => Event::ResetStep,
            "message-metadata" => Event::Metadata {
                metadata: required_json(chunk.message_metadata, ty, "messageMetadata")?,
            },
            "finish" => {
                self.terminal = true;
                Event::Finish {
                    reason: chunk.finish_reason.map(|r| FinishReason::parse(&r.0)),
                    usage: chunk.message_metadata.and_then(usage_in_metadata),
                    metadata: chunk.message_metadata.map(Json::borrowed),
                }
            }
            "error" => {
                self.terminal = true;
                Event::Error {
                    message: required(chunk.error_text, ty, "errorText")?,
                }
            }
            "abort" => {
                self.terminal = true;
                Event::Abort {
                    reason: chunk.reason.map(|r| r.0),
                }
            }
            // Everything else (data parts, sources, files, approvals, custom, steering
            // messages, and types newer than this code) passes whole, never an error.
            _ => match (chunk.ty, raw) {
                (Some(ty), Some(raw)) => Event::Part {
                    ty: ty.0,
                    chunk: Json::borrowed(raw),
                },
                // Without a `type` in its JSON there is no faithful way to write it on.
                _ => return Ok(()),
            },
        };
        emit(event, raw);
        Ok(())
    }

    /// The upstream closed the stream: fine after a terminal chunk, an error before one.
    pub fn end(&mut self) -> Result<(), DecodeError> {
        if self.terminal {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }

    fn ensure_started<F: FnMut(Event<'_>, Option<&RawValue>)>(&mut self, emit: &mut F) {
        if !self.started {
            self.started = true;
            emit(
                Event::Start {
                    message_id: None,
                    conversation_id: None,
                },
                None,
            );
        }
    }
}

/// One chunk as written (text and reasoning deltas, the hot path, are written by hand in
/// `put_delta`). Field names follow the AI SDK; absent optionals are omitted, never
/// `null` (the SDK's schema rejects `null` for optional fields).
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum Out<'a> {
    Start {
        message_id: &'a str,
    },
    TextStart {
        id: &'a str,
    },
    TextEnd {
        id: &'a str,
    },
    ReasoningStart {
        id: &'a str,
    },
    ReasoningEnd {
        id: &'a str,
    },
    ToolInputStart {
        tool_call_id: &'a str,
        tool_name: &'a str,
    },
    ToolInputDelta {
        tool_call_id: &'a str,
        input_text_delta: &'a str,
    },
    ToolInputAvailable {
        tool_call_id: &'a str,
        tool_name: &'a str,
        input: &'a RawValue,
    },
    ToolOutputAvailable {
        tool_call_id: &'a str,
        output: &'a RawValue,
    },
    ToolOutputError {
        tool_call_id: &'a str,
        error_text: &'a str,
    },
    ToolInputError {
        tool_call_id: &'a str,
        tool_name: &'a str,
        input: &'a RawValue,
        error_text: &'a str,
    },
    ToolOutputDenied {
        tool_call_id: &'a str,
    },
    StartStep,
    FinishStep,
    ResetStep,
    MessageMetadata {
        message_metadata: &'a RawValue,
    },
    Finish {
        #[serde(skip_serializing_if = "Option::is_none")]
        finish_reason: Option<FinishReason>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_metadata: Option<Metadata<'a>>,
    },
    Error {
        error_text: &'a str,
    },
    Abort {
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
}

impl Out<'_> {
    fn name(&self) -> &'static str {
        match self {
            Out::Start { .. } => "start",
            Out::TextStart { .. } => "text-start",
            Out::TextEnd { .. } => "text-end",
            Out::ReasoningStart { .. } => "reasoning-start",
            Out::ReasoningEnd { .. } => "reasoning-end",
            Out::ToolInputStart { .. } => "tool-input-start",
            Out::ToolInputDelta { .. } => "tool-input-delta",
            Out::ToolInputAvailable { .. } => "tool-input-available",
            Out::ToolOutputAvailable { .. } => "tool-output-available",
            Out::ToolOutputError { .. } => "tool-output-error",
            Out::ToolInputError { .. } => "tool-input-error",
            Out::ToolOutputDenied { .. } => "tool-output-denied",
            Out::StartStep => "start-step",
            Out::FinishStep => "finish-step",
            Out::ResetStep => "reset-step",
            Out::MessageMetadata { .. } => "message-metadata",
            Out::Finish { .. } => "finish",
            Out::Error { .. } => "error",
            Out::Abort { .. } => "abort",
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Metadata<'a> {
    Raw(&'a RawValue),
    Usage { usage: Usage },
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

/// Open parts, by id. A handful at most, so a vector beats a map; the strings are reused.
#[derive(Debug, Default)]
struct OpenSet {
    ids: Vec<String>,
    len: usize,
}

impl OpenSet {
    fn contains(&self, id: &str) -> bool {
        self.ids[..self.len].iter().any(|x| x == id)
    }
    fn insert(&mut self, id: &str) {
        if self.len == self.ids.len() {
            self.ids.push(String::new());
        }
        let slot = &mut self.ids[self.len];
        slot.clear();
        slot.push_str(id);
        self.len += 1;
    }
    fn remove(&mut self, id: &str) -> bool {
        match self.ids[..self.len].iter().position(|x| x == id) {
            Some(i) => {
                self.ids[i..self.len].rotate_left(1);
                self.len -= 1;
                true
            }
            None => false,
        }
    }
    fn drain(&mut self) -> impl Iterator<Item = &str> {
        let n = std::mem::take(&mut self.len);
        self.ids[..n].iter().map(String::as_str)
    }
}

#[derive(Debug, Default)]
pub struct UiEncoder {
    event_lines: bool,
    started: bool,
    done: bool,
    text: OpenSet,
    reasoning: OpenSet,
    tool_inputs: OpenSet,
}

impl UiEncoder {
    pub fn new(event_lines: bool) -> Self {
        UiEncoder {
            event_lines,
            ..Default::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn put(&self, out: &mut BytesMut, chunk: &Out<'_>) {
        let name = self.event_lines.then(|| chunk.name());
        sse::write_json_event(out, name, chunk);
    }

    /// A delta chunk, written by hand (the hot path); same bytes as `put`.
    fn put_delta(&self, out: &mut BytesMut, ty: &'static str, id: &str, delta: &str) {
        let name = self.event_lines.then_some(ty);
        sse::write_event_with(out, name, |out| {
            fast::write_fields(out, ty, &[("id", id), ("delta", delta)])
        });
    }

    /// Writes the `start` chunk once: the upstream's own (`chunk`) with `messageId` added
    /// where it has none, else a new one.
    fn ensure_started(
        &mut self,
        out: &mut BytesMut,
        message_id: Option<&str>,
        chunk: Option<&RawValue>,
    ) {
        use serde_json::{Map, Value};
        if self.started {
            return;
        }
        self.started = true;
        let generated;
        let message_id = match message_id {
            Some(id) => id,
            None => {
                generated = format!("msg_{}", uuid::Uuid::now_v7().simple());
                &generated
            }
        };
        // The common case, read without building a map: a `start` that has its `messageId`.
        if let Some(raw) = chunk.filter(|raw| is_complete_start(raw)) {
            return self.put_raw(out, "start", raw);
        }
        let upstream = chunk.and_then(|raw| {
            let map = serde_json::from_str::<Map<String, Value>>(raw.get()).ok()?;
            Some((raw, map))
        });
        match upstream {
            // As it came when it needs nothing.
            Some((raw, map))
                if map.get("type") == Some(&Value::from("start"))
                    && map.contains_key("messageId") =>
            {
                self.put_raw(out, "start", raw)
            }
            Some((_, mut map)) => {
                // Seed 002's `message-start` is the AI SDK's `start`.
                map.insert("type".into(), Value::from("start"));
                map.entry("messageId")
                    .or_insert_with(|| Value::from(message_id));
                self.put_value(out, "start", &map);
            }
            None => self.put(out, &Out::Start { message_id }),
        }
    }

    /// `chunk` as it came when there is one, else `typed`.
    fn put_or(&self, out: &mut BytesMut, chunk: Option<&RawValue>, typed: &Out<'_>) {
        match chunk {
            Some(raw) => self.put_raw(out, typed.name(), raw),
            None => self.put(out, typed),
        }
    }

    /// A chunk as it came. Whitespace between its tokens may hold line breaks: `write_event`
    /// puts each line on a `data:` line of its own, which a client joins back. A type that
    /// holds a line break (an unknown chunk's, as the backend wrote it) gets no `event:` line:
    /// it would end that line and inject fields of its own.
    fn put_raw(&self, out: &mut BytesMut, ty: &str, raw: &RawValue) {
        let name = self
            .event_lines
            .then_some(ty)
            .filter(|ty| !ty.contains(['\n', '\r']));
        sse::write_event(out, name, raw.get());
    }

    fn put_value<T: Serialize>(&self, out: &mut BytesMut, ty: &str, value: &T) {
        sse::write_json_event(out, self.event_lines.then_some(ty), value);
    }

    fn close_parts(&mut self, out: &mut BytesMut) {
        let event_lines = self.event_lines;
        for id in self.text.drain() {
            let chunk = Out::TextEnd { id };
            sse::write_json_event(out, event_lines.then(|| chunk.name()), &chunk);
        }
        for id in self.reasoning.drain() {
            let chunk = Out::ReasoningEnd { id };
            sse::write_json_event(out, event_lines.then(|| chunk.name()), &chunk);
        }
        self.tool_inputs.drain().for_each(drop);
    }

    fn end(&mut self, out: &mut BytesMut) {
        sse::write_raw_data_event(out, "[DONE]");
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        self.encode_chunk(event, None, out);
    }

    /// Writes `event`; `chunk`, the ui-message chunk it was read from, is written as it came
    /// (SPEC §8: lossless), but for what agentgate adds to `start` and `finish`.
    pub fn encode_chunk(
        &mut self,
        event: &Event<'_>,
        chunk: Option<&RawValue>,
        out: &mut BytesMut,
    ) {
        if self.done {
            return;
        }
        if let Event::Start { message_id, .. } = event {
            self.ensure_started(out, message_id.as_deref(), chunk);
            return;
        }
        self.ensure_started(out, None, None);
        match event {
            Event::Start { .. } => {}
            Event::TextStart { id } => {
                if !self.text.contains(id) {
                    self.text.insert(id);
                    self.put_or(out, chunk, &Out::TextStart { id });
                }
            }
            Event::TextDelta { id, delta } => {
                if !self.text.contains(id) {
                    self.text.insert(id);
                    self.put(out, &Out::TextStart { id });
                }
                match chunk {
                    Some(raw) => self.put_raw(out, "text-delta", raw),
                    None => self.put_delta(out, "text-delta", id, delta),
                }
            }
            Event::TextEnd { id } => {
                if self.text.remove(id) {
                    self.put_or(out, chunk, &Out::TextEnd { id });
                }
            }
            Event::ReasoningStart { id } => {
                if !self.reasoning.contains(id) {
                    self.reasoning.insert(id);
                    self.put_or(out, chunk, &Out::ReasoningStart { id });
                }
            }
            Event::ReasoningDelta { id, delta } => {
                if !self.reasoning.contains(id) {
                    self.reasoning.insert(id);
                    self.put(out, &Out::ReasoningStart { id });
                }
                match chunk {
                    Some(raw) => self.put_raw(out, "reasoning-delta", raw),
                    None => self.put_delta(out, "reasoning-delta", id, delta),
                }
            }
            Event::ReasoningEnd { id } => {
                if self.reasoning.remove(id) {
                    self.put_or(out, chunk, &Out::ReasoningEnd { id });
                }
            }
            Event::ToolInputStart { call_id, name } => {
                if !self.tool_inputs.contains(call_id) {
                    self.tool_inputs.insert(call_id);
                    self.put_or(
                        out,
                        chunk,
                        &Out::ToolInputStart {
                            tool_call_id: call_id,
                            tool_name: name,
                        },
                    );
                }
            }
            Event::ToolInputDelta { call_id, delta } => {
                // A delta needs its start, and a start needs the tool's name: without one, the
                // complete input still arrives with `tool-input-available`.
                if self.tool_inputs.contains(call_id) {
                    self.put_or(
                        out,
                        chunk,
                        &Out::ToolInputDelta {
                            tool_call_id: call_id,
                            input_text_delta: delta,
                        },
                    );
                }
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => {
                self.tool_inputs.remove(call_id);
                self.put_or(
                    out,
                    chunk,
                    &Out::ToolInputAvailable {
                        tool_call_id: call_id,
                        tool_name: name,
                        input,
                    },
                );
            }
            Event::ToolInputError {
                call_id,
                name,
                input,
                error,
            } => {
                self.tool_inputs.remove(call_id);
                self.put_or(
                    out,
                    chunk,
                    &Out::ToolInputError {
                        tool_call_id: call_id,
                        tool_name: name,
                        input,
                        error_text: error,
                    },
                );
            }
            Event::ToolOutput { call_id, output } => self.put_or(
                out,
                chunk,
                &Out::ToolOutputAvailable {
                    tool_call_id: call_id,
                    output,
                },
            ),
            Event::ToolError { call_id, error } => self.put_or(
                out,
                chunk,
                &Out::ToolOutputError {
                    tool_call_id: call_id,
                    error_text: error,
                },
            ),
            Event::ToolDenied { call_id } => self.put_or(
                out,
                chunk,
                &Out::ToolOutputDenied {
                    tool_call_id: call_id,
                },
            ),
            Event::StepStart => self.put_or(out, chunk, &Out::StartStep),
            Event::StepFinish => {
                // The SDK forgets open parts at a step's end: close them first.
                self.close_parts(out);
                self.put_or(out, chunk, &Out::FinishStep);
            }
            Event::ResetStep => {
                // The SDK forgets the step's open parts with it.
                self.text.drain().for_each(drop);
                self.reasoning.drain().for_each(drop);
                self.tool_inputs.drain().for_each(drop);
                self.put_or(out, chunk, &Out::ResetStep);
            }
            Event::Part { ty, chunk: part } => self.put_raw(out, ty, part),
            Event::Metadata { metadata } => {
                // Metadata read from a `start` chunk went out with that chunk.
                if chunk.is_some_and(|raw| chunk_type(raw).is_some_and(is_start)) {
                    return;
                }
                self.put_or(
                    out,
                    chunk,
                    &Out::MessageMetadata {
                        message_metadata: metadata,
                    },
                )
            }
            Event::Finish {
                reason,
                usage,
                metadata,
            } => {
                self.close_parts(out);
                // The usage to report (what the meter decided) wins over an upstream's own.
                let merged = match (metadata, usage) {
                    (Some(raw), Some(usage)) if usage_in_metadata(raw) != Some(*usage) => {
                        with_usage(raw, *usage)
                    }
                    _ => None,
                };
                let message_metadata = match (merged.as_deref(), metadata.as_deref(), usage) {
                    (Some(raw), _, _) | (None, Some(raw), _) => Some(Metadata::Raw(raw)),
                    (None, None, Some(usage)) => Some(Metadata::Usage { usage: *usage }),
                    (None, None, None) => None,
                };
                let finish = Out::Finish {
                    finish_reason: *reason,
                    message_metadata,
                };
                // The upstream's own fields are kept; agentgate's are written over them.
                let own_fields = chunk.filter(|raw| !typed_finish_says_all(raw, &finish));
                match own_fields.and_then(|raw| with_fields_of(raw, &finish)) {
                    Some(map) => self.put_value(out, "finish", &map),
                    None => self.put(out, &finish),
                }
                self.end(out);
            }
            Event::Error { message } => {
                self.close_parts(out);
                self.put_or(
                    out,
                    chunk,
                    &Out::Error {
                        error_text: message,
                    },
                );
                self.end(out);
            }
            Event::Abort { reason } => {
                self.close_parts(out);
                self.put_or(
                    out,
                    chunk,
                    &Out::Abort {
                        reason: reason.as_deref(),
                    },
                );
                self.end(out);
            }
        }
    }
}

/// The `type` of a chunk, if it is an object with a string `type`.
fn chunk_type(raw: &RawValue) -> Option<CowStr<'_>> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        ty: Option<CowStr<'a>>,
    }
    serde_json::from_str::<Typed<'_>>(raw.get()).ok()?.ty
}

/// True when `raw` is a `start` chunk with a `messageId` (of any value), so it goes out as it
/// came. Read with one borrowing pass, no map.
fn is_complete_start(raw: &RawValue) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Start<'a> {
        #[serde(borrow, rename = "type")]
        ty: Option<CowStr<'a>>,
        #[serde(borrow, default, deserialize_with = "present_raw")]
        message_id: Option<&'a RawValue>,
    }
    // (A struct also reads from an array: only an object is a chunk.)
    is_object(raw)
        && serde_json::from_str::<Start<'_>>(raw.get())
            .is_ok_and(|s| s.message_id.is_some() && s.ty.is_some_and(|ty| ty.0 == "start"))
}

/// True when the upstream's `finish` chunk `raw` has no field that `typed` does not write
/// (then [`with_fields_of`] has nothing to keep). Read with one borrowing pass, no map; any
/// other field makes it `false`, and the caller merges in full.
fn typed_finish_says_all(raw: &RawValue, typed: &Out<'_>) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Finish<'a> {
        #[serde(borrow, rename = "type")]
        _ty: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present_raw")]
        finish_reason: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present_raw")]
        message_metadata: Option<&'a RawValue>,
    }
    let Out::Finish {
        finish_reason,
        message_metadata,
    } = typed
    else {
        return false;
    };
    is_object(raw)
        && serde_json::from_str::<Finish<'_>>(raw.get()).is_ok_and(|f| {
            (f.finish_reason.is_none() || finish_reason.is_some())
                && (f.message_metadata.is_none() || message_metadata.is_some())
        })
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

fn is_start(ty: CowStr<'_>) -> bool {
    ty.0 == "start" || ty.0 == "message-start"
}

/// The object `raw` with the fields of `typed` written over it; `None` when `raw` is not an
/// object or has no field `typed` lacks.
fn with_fields_of<T: Serialize>(
    raw: &RawValue,
    typed: &T,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use serde_json::{Map, Value};
    let mut map: Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
    let Ok(Value::Object(fields)) = serde_json::to_value(typed) else {
        return None;
    };
    // Nothing of the upstream's own to keep: the typed form says it all.
    if map.keys().all(|k| fields.contains_key(k)) {
        return None;
    }
    map.extend(fields);
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Json;

    fn finish_chunk(usage: Option<f64>, metadata: Option<&str>) -> String {
        let raw = metadata.map(|m| RawValue::from_string(m.to_owned()).unwrap());
        let mut enc = UiEncoder::new(false);
        let mut out = BytesMut::new();
        enc.encode(
            &Event::Finish {
                reason: None,
                usage: usage.map(Usage::credits),
                metadata: raw.map(Json::owned),
            },
            &mut out,
        );
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.lines()
            .find(|l| l.contains("\"finish\""))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_finish_and_start_fast_paths_agree_with_the_full_merge() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let metadata = raw(r#"{"usage":{"credits":1}}"#);
        let typed = [
            Out::Finish {
                finish_reason: None,
                message_metadata: None,
            },
            Out::Finish {
                finish_reason: Some(FinishReason::Stop),
                message_metadata: Some(Metadata::Raw(&metadata)),
            },
        ];
        let chunks = [
            r#"{"type":"finish"}"#,
            r#"{"type":"finish","finishReason":"stop"}"#,
            r#"{"type":"finish","finishReason":null}"#,
            r#"{"type":"finish","messageMetadata":{"a":1}}"#,
            r#"{"type":"finish","finishReason":"stop","messageMetadata":{"a":1}}"#,
            r#"{"type":"finish","finishReason":"stop","extra":true}"#,
            r#"{"type":"finish","type":"finish"}"#,
            r#"{"extra":1}"#,
            r#"[1]"#,
            r#"["finish",null,null]"#,
        ];
        let mut fast = 0;
        for chunk in chunks {
            for typed in &typed {
                let chunk = raw(chunk);
                if typed_finish_says_all(&chunk, typed) {
                    fast += 1;
                    assert!(with_fields_of(&chunk, typed).is_none(), "{chunk}");
                }
            }
        }
        // Both typed forms for the bare finish, the full one for each of the next four.
        assert_eq!(fast, 6);
        assert!(is_complete_start(&raw(
            r#"{"type":"start","messageId":"m"}"#
        )));
        assert!(is_complete_start(&raw(
            r#"{"messageId":null,"type":"start","x":1}"#
        )));
        for not in [
            r#"{"type":"start"}"#,
            r#"{"type":"message-start","messageId":"m"}"#,
            r#"{"type":7,"messageId":"m"}"#,
            r#"["start"]"#,
            r#"["start","m"]"#,
        ] {
            assert!(!is_complete_start(&raw(not)), "{not}");
        }
    }

    #[test]
    fn a_null_tool_input_or_output_is_a_value_not_a_missing_field() {
        let mut d = UiDecoder::default();
        let mut got = Vec::new();
        for data in [
            r#"{"type":"tool-input-available","toolCallId":"c","toolName":"t","input":null}"#,
            r#"{"type":"tool-output-available","toolCallId":"c","output":null}"#,
        ] {
            let sse = SseEvent {
                event: "message",
                data,
                id: None,
                retry: None,
            };
            d.decode(&sse, &mut |e, _| got.push(e.into_owned()))
                .unwrap();
        }
        assert!(
            matches!(&got[1], Event::ToolInputAvailable { input, .. } if input.get() == "null")
        );
        assert!(matches!(&got[2], Event::ToolOutput { output, .. } if output.get() == "null"));
        let sse = SseEvent {
            event: "message",
            data: r#"{"type":"tool-output-available","toolCallId":"c"}"#,
            id: None,
            retry: None,
        };
        assert!(d.decode(&sse, &mut |_, _| {}).is_err());
    }

    #[test]
    fn finish_usage_is_written_into_the_metadata() {
        // Metadata without usage: usage added, other fields kept.
        assert_eq!(
            finish_chunk(Some(3.0), Some(r#"{"conversationId":"c"}"#)),
            r#"data: {"type":"finish","messageMetadata":{"conversationId":"c","usage":{"credits":3}}}"#
        );
        // The upstream's usage differs (the meter changed it): ours wins, other usage fields stay.
        assert_eq!(
            finish_chunk(Some(2.5), Some(r#"{"usage":{"credits":9,"tokens":7}}"#)),
            r#"data: {"type":"finish","messageMetadata":{"usage":{"credits":2.5,"tokens":7}}}"#
        );
        // Same usage: the upstream's metadata passes verbatim.
        assert_eq!(
            finish_chunk(Some(1.0), Some(r#"{"z":1,"usage":{"credits":1}}"#)),
            r#"data: {"type":"finish","messageMetadata":{"z":1,"usage":{"credits":1}}}"#
        );
        // Metadata that is not an object cannot carry usage; it passes as is.
        assert_eq!(
            finish_chunk(Some(1.0), Some(r#""note""#)),
            r#"data: {"type":"finish","messageMetadata":"note"}"#
        );
        assert_eq!(
            finish_chunk(Some(4.0), None),
            r#"data: {"type":"finish","messageMetadata":{"usage":{"credits":4}}}"#
        );
        assert_eq!(finish_chunk(None, None), r#"data: {"type":"finish"}"#);
    }
}
