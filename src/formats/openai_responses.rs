//! `openai-responses`: OpenAI Responses streaming events (`event: <type>` + `data:` JSON with
//! `type` and `sequence_number`), and the non-stream Response object (SPEC §10).
//!
//! Decoding: `response.created` → start (the response id as message id);
//! `response.output_text.delta` (and `response.refusal.delta`) → text;
//! `response.reasoning_text.delta` / `response.reasoning_summary_text.delta` → reasoning;
//! a `function_call` item → tool input start, `response.function_call_arguments.delta` → tool
//! input deltas, its `response.output_item.done` → tool input available;
//! `response.completed` → finish (with `usage` tokens and `credits`), `response.incomplete` →
//! finish `length` / `content-filter` (abort for other reasons), `response.failed` and `error` →
//! error. Other `response.*` events are read and skipped.
//!
//! Encoding: `response.created` and `response.in_progress` with the whole Response object
//! (EncodeOptions `response_id`, else `resp_<32 hex>`; `model`; `created` → `created_at`),
//! one output item per text, reasoning and tool call with consistent `output_index`,
//! `content_index` and `item_id`, their added / delta / done events, and the final
//! `response.completed` (or `.incomplete`, `.failed`) holding every output item and `usage`
//! (tokens and the extra field `credits`). `sequence_number` counts up from 0.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::aggregate::Aggregate;
use super::event::{CowStr, Event, FinishReason, Usage};
use super::openai_chat::{
    error_message, generated_id, now_secs, tool_input, WireTokens, DEFAULT_MODEL,
    MAX_TOOL_ARGUMENT_BYTES, MAX_TOOL_CALLS,
};
use super::{DecodeError, EncodeOptions, SyncContext};
use crate::sse::{self, SseEvent};

// ---------------------------------------------------------------------------------------
// Decoder

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    item_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    delta: Option<CowStr<'a>>,
    #[serde(borrow)]
    arguments: Option<CowStr<'a>>,
    #[serde(borrow)]
    item: Option<WireItem<'a>>,
    #[serde(borrow)]
    response: Option<WireResponse<'a>>,
    #[serde(borrow)]
    message: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct WireItem<'a> {
    #[serde(borrow)]
    id: Option<CowStr<'a>>,
    #[serde(borrow, rename = "type")]
    ty: Option<CowStr<'a>>,
    #[serde(borrow)]
    call_id: Option<CowStr<'a>>,
    #[serde(borrow)]
    name: Option<CowStr<'a>>,
    #[serde(borrow)]
    arguments: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(borrow)]
    id: Option<CowStr<'a>>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    incomplete_details: Option<WireIncomplete<'a>>,
    usage: Option<WireTokens>,
}

#[derive(Deserialize)]
struct WireIncomplete<'a> {
    #[serde(borrow)]
    reason: Option<CowStr<'a>>,
}

#[derive(Debug)]
struct Call {
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
pub struct OpenAiResponsesDecoder {
    started: bool,
    terminal: bool,
    /// Item id of the open text / reasoning part.
    text_id: Option<String>,
    reasoning_id: Option<String>,
    /// Function calls whose item has not ended.
    calls: Vec<Call>,
    calls_total: usize,
    /// The last item that ended was a function call (the answer stops for its result).
    ended_on_call: bool,
}

impl OpenAiResponsesDecoder {
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.terminal {
            return Ok(());
        }
        let wire: Wire<'_> = serde_json::from_str(sse.data).map_err(DecodeError::json)?;
        let ty = super::event_type(&wire.ty, sse)?;
        if !self.started {
            self.started = true;
            let id = match (ty, &wire.response) {
                ("response.created", Some(r)) => r.id.as_ref().map(|id| Cow::Borrowed(&*id.0)),
                _ => None,
            };
            emit(Event::Start {
                message_id: id,
                conversation_id: None,
            });
        }
        let item_id = wire.item_id.as_ref().map_or("", |id| &*id.0);
        match ty {
            "response.output_text.delta" | "response.refusal.delta" => {
                let delta = wire.delta.map(|d| d.0).unwrap_or_default();
                if delta.is_empty() {
                    return Ok(());
                }
                self.close_reasoning(emit);
                if self.text_id.as_deref() != Some(item_id) {
                    self.close_text(emit);
                    self.text_id = Some(item_id.to_owned());
                    emit(Event::TextStart {
                        id: Cow::Borrowed(item_id),
                    });
                }
                emit(Event::TextDelta {
                    id: Cow::Borrowed(item_id),
                    delta,
                });
            }
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                let delta = wire.delta.map(|d| d.0).unwrap_or_default();
                if delta.is_empty() {
                    return Ok(());
                }
                self.close_text(emit);
                if self.reasoning_id.as_deref() != Some(item_id) {
                    self.close_reasoning(emit);
                    self.reasoning_id = Some(item_id.to_owned());
                    emit(Event::ReasoningStart {
                        id: Cow::Borrowed(item_id),
                    });
                }
                emit(Event::ReasoningDelta {
                    id: Cow::Borrowed(item_id),
                    delta,
                });
            }
            "response.output_item.added" => {
                let Some(item) = wire.item else {
                    return Err(DecodeError::Protocol(format!("`{ty}` without `item`")));
                };
                if item.ty.as_ref().is_some_and(|t| t.0 == "function_call") {
                    self.close_text(emit);
                    self.close_reasoning(emit);
                    if self.calls_total >= MAX_TOOL_CALLS {
                        return Err(DecodeError::Protocol("too many tool calls".into()));
                    }
                    self.calls_total += 1;
                    let item_id = item.id.map(|i| i.0.into_owned()).unwrap_or_default();
                    let call_id = item
                        .call_id
                        .map(|i| i.0.into_owned())
                        .unwrap_or_else(|| item_id.clone());
                    let name = item.name.map(|n| n.0.into_owned()).unwrap_or_default();
                    emit(Event::ToolInputStart {
                        call_id: Cow::Borrowed(&call_id),
                        name: Cow::Borrowed(&name),
                    });
                    self.calls.push(Call {
                        item_id,
                        call_id,
                        name,
                        arguments: String::new(),
                    });
                }
            }
            "response.function_call_arguments.delta" => {
                let delta = wire.delta.map(|d| d.0).unwrap_or_default();
                let Some(call) = self.calls.iter_mut().find(|c| c.item_id == item_id) else {
                    return Err(DecodeError::Protocol(format!(
                        "`{ty}` for an unknown item `{item_id}`"
                    )));
                };
                if delta.is_empty() {
                    return Ok(());
                }
                if call.arguments.len() + delta.len() > MAX_TOOL_ARGUMENT_BYTES {
                    return Err(DecodeError::Protocol("tool call arguments too long".into()));
                }
                call.arguments.push_str(&delta);
                emit(Event::ToolInputDelta {
                    call_id: Cow::Borrowed(&call.call_id),
                    delta,
                });
            }
            "response.function_call_arguments.done" => {
                if let (Some(call), Some(args)) = (
                    self.calls.iter_mut().find(|c| c.item_id == item_id),
                    wire.arguments,
                ) {
                    if args.0.len() > MAX_TOOL_ARGUMENT_BYTES {
                        return Err(DecodeError::Protocol("tool call arguments too long".into()));
                    }
                    call.arguments.clear();
                    call.arguments.push_str(&args.0);
                }
            }
            "response.output_item.done" => {
                let Some(item) = wire.item else {
                    return Err(DecodeError::Protocol(format!("`{ty}` without `item`")));
                };
                let id = item.id.as_ref().map_or("", |i| &*i.0);
                match item.ty.as_ref().map(|t| &*t.0) {
                    Some("function_call") => {
                        self.ended_on_call = true;
                        if let Some(at) = self.calls.iter().position(|c| c.item_id == id) {
                            let call = self.calls.remove(at);
                            let arguments = match &item.arguments {
                                Some(a) => &*a.0,
                                None => call.arguments.as_str(),
                            };
                            emit(tool_input(
                                Cow::Owned(call.call_id),
                                Cow::Owned(call.name),
                                arguments,
                            ));
                        }
                    }
                    Some("message") => {
                        self.ended_on_call = false;
                        if self.text_id.as_deref() == Some(id) {
                            self.close_text(emit);
                        }
                    }
                    Some("reasoning") if self.reasoning_id.as_deref() == Some(id) => {
                        self.close_reasoning(emit);
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                self.end_parts(emit);
                self.terminal = true;
                let response = wire.response;
                let usage = response
                    .as_ref()
                    .and_then(|r| r.usage.as_ref())
                    .map(WireTokens::usage);
                let reason = if ty == "response.completed" {
                    Some(if self.ended_on_call {
                        FinishReason::ToolCalls
                    } else {
                        FinishReason::Stop
                    })
                } else {
                    let why = response
                        .as_ref()
                        .and_then(|r| r.incomplete_details.as_ref())
                        .and_then(|d| d.reason.as_ref())
                        .map(|r| &*r.0);
                    match why {
                        Some("max_output_tokens") => Some(FinishReason::Length),
                        Some("content_filter") => Some(FinishReason::ContentFilter),
                        _ => {
                            emit(Event::Abort { reason: None });
                            return Ok(());
                        }
                    }
                };
                emit(Event::Finish {
                    reason,
                    usage,
                    metadata: None,
                });
            }
            "response.failed" => {
                self.end_parts(emit);
                self.terminal = true;
                let message = match wire.response.as_ref().and_then(|r| r.error) {
                    Some(e) if e.get() != "null" => Cow::Owned(error_message(e).into_owned()),
                    _ => Cow::Borrowed("response failed"),
                };
                emit(Event::Error { message });
            }
            "error" => {
                self.end_parts(emit);
                self.terminal = true;
                emit(Event::Error {
                    message: wire
                        .message
                        .map(|m| m.0)
                        .unwrap_or(Cow::Borrowed("upstream error")),
                });
            }
            other if other.starts_with("response.") => {}
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        }
        Ok(())
    }

    fn close_text<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) {
        if let Some(id) = self.text_id.take() {
            emit(Event::TextEnd { id: Cow::Owned(id) });
        }
    }

    fn close_reasoning<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) {
        if let Some(id) = self.reasoning_id.take() {
            emit(Event::ReasoningEnd { id: Cow::Owned(id) });
        }
    }

    fn end_parts<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) {
        self.close_text(emit);
        self.close_reasoning(emit);
        for call in self.calls.drain(..) {
            emit(tool_input(
                Cow::Owned(call.call_id),
                Cow::Owned(call.name),
                &call.arguments,
            ));
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

// ---------------------------------------------------------------------------------------
// Encoder

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
    FunctionCall,
}

/// One output item, kept whole for its `.done` events and the final Response object.
#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    /// Message / reasoning text, or function call arguments.
    text: String,
    call_id: String,
    name: String,
    /// Function call arguments were streamed as deltas.
    streamed: bool,
    open: bool,
}

impl Item {
    fn json(&self) -> Value {
        let status = if self.open {
            "in_progress"
        } else {
            "completed"
        };
        match self.kind {
            Kind::Message => json!({
                "id": self.id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": if self.open { json!([]) } else { json!([output_text(&self.text)]) },
            }),
            Kind::Reasoning => json!({
                "id": self.id,
                "type": "reasoning",
                "status": status,
                "summary": [],
                "content": if self.open { json!([]) } else { json!([{"type": "reasoning_text", "text": self.text}]) },
            }),
            Kind::FunctionCall => json!({
                "id": self.id,
                "type": "function_call",
                "status": status,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text,
            }),
        }
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The hot path: a text or reasoning delta.
#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
    sequence_number: u64,
}

/// The Response object's fields that do not change within one answer.
#[derive(Debug, Clone)]
struct ResponseHead {
    id: String,
    created: u64,
    model: String,
}

impl ResponseHead {
    fn new(options: &EncodeOptions) -> Self {
        ResponseHead {
            id: options
                .response_id
                .as_deref()
                .map_or_else(|| generated_id("resp_"), str::to_owned),
            created: options.created.unwrap_or_else(now_secs),
            model: options.model.as_deref().unwrap_or(DEFAULT_MODEL).to_owned(),
        }
    }

    /// The whole Response object, with every field the API reference marks required.
    fn response(&self, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "temperature": null,
            "top_p": null,
            "metadata": {},
            "usage": usage,
        })
    }
}

/// Responses' `usage`, with the credits charged as an extra field.
fn usage_json(usage: Usage, credits: Option<f64>) -> Value {
    let (input, output) = (
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0),
    );
    let mut v = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input.saturating_add(output),
    });
    v["credits"] =
        serde_json::to_value(Credits(credits.unwrap_or(usage.credits))).unwrap_or(Value::Null);
    v
}

struct Credits(f64);

impl Serialize for Credits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_credits(&self.0, s)
    }
}

#[derive(Debug)]
pub struct OpenAiResponsesEncoder {
    head: ResponseHead,
    started: bool,
    done: bool,
    seq: u64,
    items: Vec<Item>,
    /// Index of the open item, if one is open.
    open: Option<usize>,
}

impl OpenAiResponsesEncoder {
    pub fn new(options: &EncodeOptions) -> Self {
        OpenAiResponsesEncoder {
            head: ResponseHead::new(options),
            started: false,
            done: false,
            seq: 0,
            items: Vec::new(),
            open: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn next_seq(&mut self) -> u64 {
        let n = self.seq;
        self.seq += 1;
        n
    }

    /// Writes `{"type": ty, …fields, "sequence_number"}`.
    fn put(&mut self, out: &mut BytesMut, ty: &str, mut fields: Value) {
        fields["type"] = Value::from(ty);
        fields["sequence_number"] = Value::from(self.next_seq());
        sse::write_json_event(out, Some(ty), &fields);
    }

    fn ensure_started(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.head.response("in_progress", Vec::new(), None);
        self.put(out, "response.created", json!({ "response": response }));
        self.put(out, "response.in_progress", json!({ "response": response }));
    }

    /// The open item if it is of `kind` (and, for a call, `call_id`), else a new one.
    fn item(&mut self, out: &mut BytesMut, kind: Kind, call: Option<(&str, &str)>) -> usize {
        if let Some(at) = self.open {
            let it = &self.items[at];
            if it.kind == kind && call.is_none_or(|(id, _)| it.call_id == id) {
                return at;
            }
            self.close(out);
        }
        let at = self.items.len();
        let prefix = match kind {
            Kind::Message => "msg",
            Kind::Reasoning => "rs",
            Kind::FunctionCall => "fc",
        };
        let (call_id, name) = call.unwrap_or(("", ""));
        self.items.push(Item {
            kind,
            id: format!("{prefix}_{at}_{}", self.head.id),
            text: String::new(),
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            streamed: false,
            open: true,
        });
        self.open = Some(at);
        let item = self.items[at].json();
        self.put(
            out,
            "response.output_item.added",
            json!({ "output_index": at, "item": item }),
        );
        let id = self.items[at].id.clone();
        match kind {
            Kind::Message => self.put(
                out,
                "response.content_part.added",
                json!({ "item_id": id, "output_index": at, "content_index": 0, "part": output_text("") }),
            ),
            Kind::Reasoning => self.put(
                out,
                "response.content_part.added",
                json!({ "item_id": id, "output_index": at, "content_index": 0,
                        "part": {"type": "reasoning_text", "text": ""} }),
            ),
            Kind::FunctionCall => {}
        }
        at
    }

    fn delta(&mut self, out: &mut BytesMut, at: usize, ty: &'static str, delta: &str) {
        let sequence_number = self.next_seq();
        let item = &mut self.items[at];
        item.text.push_str(delta);
        let logprobs = (item.kind == Kind::Message).then_some([]);
        sse::write_json_event(
            out,
            Some(ty),
            &DeltaOut {
                ty,
                item_id: &item.id,
                output_index: at,
                content_index: 0,
                delta,
                logprobs,
                sequence_number,
            },
        );
    }

    /// Ends the open item: its `.done` events.
    fn close(&mut self, out: &mut BytesMut) {
        let Some(at) = self.open.take() else {
            return;
        };
        self.items[at].open = false;
        let (id, text) = (self.items[at].id.clone(), self.items[at].text.clone());
        match self.items[at].kind {
            Kind::Message => {
                self.put(
                    out,
                    "response.output_text.done",
                    json!({ "item_id": id, "output_index": at, "content_index": 0, "text": text, "logprobs": [] }),
                );
                self.put(
                    out,
                    "response.content_part.done",
                    json!({ "item_id": id, "output_index": at, "content_index": 0, "part": output_text(&text) }),
                );
            }
            Kind::Reasoning => {
                self.put(
                    out,
                    "response.reasoning_text.done",
                    json!({ "item_id": id, "output_index": at, "content_index": 0, "text": text }),
                );
                self.put(
                    out,
                    "response.content_part.done",
                    json!({ "item_id": id, "output_index": at, "content_index": 0,
                            "part": {"type": "reasoning_text", "text": text} }),
                );
            }
            Kind::FunctionCall => {
                let name = self.items[at].name.clone();
                self.put(
                    out,
                    "response.function_call_arguments.done",
                    json!({ "item_id": id, "output_index": at, "name": name, "arguments": text }),
                );
            }
        }
        let item = self.items[at].json();
        self.put(
            out,
            "response.output_item.done",
            json!({ "output_index": at, "item": item }),
        );
    }

    fn call_item(&self, call_id: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.kind == Kind::FunctionCall && i.call_id == call_id)
    }

    fn end(
        &mut self,
        out: &mut BytesMut,
        ty: &str,
        status: &str,
        usage: Option<Usage>,
        extra: Value,
    ) {
        self.close(out);
        let output = self.items.iter().map(Item::json).collect();
        let mut response = self
            .head
            .response(status, output, usage.map(|u| usage_json(u, None)));
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                response[k] = v;
            }
        }
        self.put(out, ty, json!({ "response": response }));
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.ensure_started(out);
        match event {
            Event::TextDelta { delta, .. } if !delta.is_empty() => {
                let at = self.item(out, Kind::Message, None);
                self.delta(out, at, "response.output_text.delta", delta);
            }
            Event::ReasoningDelta { delta, .. } if !delta.is_empty() => {
                let at = self.item(out, Kind::Reasoning, None);
                self.delta(out, at, "response.reasoning_text.delta", delta);
            }
            Event::TextEnd { .. } | Event::ReasoningEnd { .. } => self.close(out),
            Event::ToolInputStart { call_id, name }
                if self.call_item(call_id).is_none() && self.items.len() < MAX_TOOL_CALLS * 4 =>
            {
                self.item(out, Kind::FunctionCall, Some((&**call_id, &**name)));
            }
            Event::ToolInputDelta { call_id, delta } if !delta.is_empty() => {
                if let Some(at) = self.call_item(call_id).filter(|&at| self.open == Some(at)) {
                    self.items[at].streamed = true;
                    self.delta(out, at, "response.function_call_arguments.delta", delta);
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
                let at = match self.call_item(call_id) {
                    Some(at) if self.open != Some(at) => return, // already ended
                    Some(at) => at,
                    None if self.items.len() >= MAX_TOOL_CALLS * 4 => return,
                    None => self.item(out, Kind::FunctionCall, Some((&**call_id, &**name))),
                };
                if !self.items[at].streamed {
                    self.delta(
                        out,
                        at,
                        "response.function_call_arguments.delta",
                        input.get(),
                    );
                }
                // The complete input is the call's arguments, whatever the deltas said.
                let item = &mut self.items[at];
                item.text.clear();
                item.text.push_str(input.get());
                self.close(out);
            }
            Event::Finish { reason, usage, .. } => {
                let usage = Some(usage.unwrap_or_default());
                match reason {
                    Some(FinishReason::Length) => self.end(
                        out,
                        "response.incomplete",
                        "incomplete",
                        usage,
                        json!({"incomplete_details": {"reason": "max_output_tokens"}}),
                    ),
                    Some(FinishReason::ContentFilter) => self.end(
                        out,
                        "response.incomplete",
                        "incomplete",
                        usage,
                        json!({"incomplete_details": {"reason": "content_filter"}}),
                    ),
                    _ => self.end(out, "response.completed", "completed", usage, json!({})),
                }
            }
            Event::Error { message } => self.end(
                out,
                "response.failed",
                "failed",
                None,
                json!({"error": {"code": "server_error", "message": message}}),
            ),
            Event::Abort { .. } => self.end(
                out,
                "response.incomplete",
                "incomplete",
                Some(Usage::default()),
                json!({}),
            ),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Non-stream body

/// The Response object for a whole answer (a sync call): status `completed` (`incomplete`
/// for a length or content-filter finish, `failed` with `error` for an error), every output
/// item, `usage` with the credits charged (`ctx.credits`, else the stream's). `options` gives
/// `id`, `model` and `created_at` as for the encoder.
pub fn response_body(aggregate: &Aggregate, options: &EncodeOptions, ctx: &SyncContext) -> Value {
    let head = ResponseHead::new(options);
    let mut output = Vec::new();
    if !aggregate.reasoning.is_empty() {
        output.push(json!({
            "id": format!("rs_0_{}", head.id), "type": "reasoning", "status": "completed", "summary": [],
            "content": [{"type": "reasoning_text", "text": aggregate.reasoning}],
        }));
    }
    for c in &aggregate.tool_calls {
        output.push(json!({
            "id": format!("fc_{}_{}", output.len(), head.id), "type": "function_call", "status": "completed",
            "call_id": c.id, "name": c.name, "arguments": c.input.to_string(),
        }));
    }
    if !aggregate.text.is_empty() || output.is_empty() {
        output.push(json!({
            "id": format!("msg_{}_{}", output.len(), head.id), "type": "message", "status": "completed",
            "role": "assistant", "content": [output_text(&aggregate.text)],
        }));
    }
    let (status, extra) = match (&aggregate.error, aggregate.finish_reason) {
        (Some(e), _) => (
            "failed",
            json!({"error": {"code": "server_error", "message": e}}),
        ),
        (None, Some(FinishReason::Length)) => (
            "incomplete",
            json!({"incomplete_details": {"reason": "max_output_tokens"}}),
        ),
        (None, Some(FinishReason::ContentFilter)) => (
            "incomplete",
            json!({"incomplete_details": {"reason": "content_filter"}}),
        ),
        _ => ("completed", json!({})),
    };
    let mut body = head.response(
        status,
        output,
        Some(usage_json(aggregate.usage(), ctx.credits)),
    );
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}
