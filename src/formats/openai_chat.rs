//! `openai-chat`: OpenAI Chat Completions streaming (`chat.completion.chunk` objects in `data:`
//! lines, ending `data: [DONE]`), and the non-stream `chat.completion` body (SPEC §10).
//!
//! Decoding reads choice 0: `content` → text, `reasoning_content` / `reasoning` (vLLM,
//! DeepSeek, Ollama) → reasoning, `tool_calls` deltas → tool input start / deltas, and at the
//! `finish_reason` the whole arguments → tool input available. The answer finishes at
//! `[DONE]`, after the usage chunk (`choices: []`) an upstream sends with
//! `stream_options.include_usage`; `{"error":{…}}` → error.
//!
//! Encoding writes what the official clients accept: one `id` (EncodeOptions `response_id`,
//! else a generated `chatcmpl-<32 hex>`), `object`, `created` (EncodeOptions `created`, else
//! now), `model` (EncodeOptions `model`, else `agentgate`), the role in the first delta, the
//! `finish_reason` chunk, the usage chunk (`choices: []`, with the extra field `credits`) when
//! EncodeOptions `include_usage` is set, then `[DONE]`. An error is `{"error":{…}}` then
//! `[DONE]` (the official clients throw it). Tool results, data parts and steps have no place
//! in this format and are left out.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::aggregate::Aggregate;
use super::event::{CowStr, Event, FinishReason, Json, Usage};
use super::{DecodeError, EncodeOptions, SyncContext};
use crate::sse::{self, SseEvent};

/// Most tool calls one answer may stream, and most bytes of arguments one call may hold
/// while they stream (the decoder keeps them until the call ends): bounded memory.
pub(crate) const MAX_TOOL_CALLS: usize = 256;
pub(crate) const MAX_TOOL_ARGUMENT_BYTES: usize = 1 << 20;

/// `model` when the encoder is given none.
pub(crate) const DEFAULT_MODEL: &str = "agentgate";

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `prefix` + 32 hex digits.
pub(crate) fn generated_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The wire's `finish_reason` for a canonical reason (`tools`: the answer made tool calls).
fn wire_finish_reason(reason: Option<FinishReason>, tools: bool) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ContentFilter) => "content_filter",
        Some(FinishReason::ToolCalls) => "tool_calls",
        None if tools => "tool_calls",
        _ => "stop",
    }
}

fn canonical_finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

// ---------------------------------------------------------------------------------------
// Decoder

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(borrow)]
    id: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    choices: FirstChoice<'a>,
    usage: Option<WireTokens>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// The choice with index 0 of a `choices` array (the others are read and dropped), without
/// allocating a vector per chunk.
#[derive(Default)]
struct FirstChoice<'a>(Option<WireChoice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FirstChoice<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(FirstChoice(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut first = None;
                while let Some(choice) = seq.next_element::<WireChoice<'de>>()? {
                    if first.is_none() && choice.index.unwrap_or(0) == 0 {
                        first = Some(choice);
                    }
                }
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(borrow)]
    content: Option<CowStr<'a>>,
    #[serde(borrow)]
    refusal: Option<CowStr<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<CowStr<'a>>,
    #[serde(borrow)]
    reasoning: Option<CowStr<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Deserialize)]
struct WireToolCall<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<CowStr<'a>>,
    #[serde(borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Deserialize)]
struct WireFunction<'a> {
    #[serde(borrow)]
    name: Option<CowStr<'a>>,
    #[serde(borrow)]
    arguments: Option<CowStr<'a>>,
}

/// OpenAI's usage objects, Chat Completions' and Responses' names both.
#[derive(Deserialize)]
pub(crate) struct WireTokens {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<f64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<f64>,
    credits: Option<f64>,
}

impl WireTokens {
    pub(crate) fn usage(&self) -> Usage {
        fn tokens(n: Option<f64>) -> Option<u64> {
            n.filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u64)
        }
        Usage {
            credits: self.credits.filter(|c| c.is_finite()).unwrap_or(0.0),
            input_tokens: tokens(self.prompt_tokens),
            output_tokens: tokens(self.completion_tokens),
        }
    }
}

/// The message of an OpenAI error object (`{"message":…}`), else its raw text.
pub(crate) fn error_message(raw: &RawValue) -> Cow<'_, str> {
    #[derive(Deserialize)]
    struct E<'a> {
        #[serde(borrow)]
        message: Option<CowStr<'a>>,
    }
    match serde_json::from_str::<E<'_>>(raw.get()) {
        Ok(E { message: Some(m) }) => m.0,
        _ => match serde_json::from_str::<CowStr<'_>>(raw.get()) {
            Ok(s) => s.0,
            Err(_) => Cow::Borrowed(raw.get()),
        },
    }
}

#[derive(Debug)]
struct ToolState {
    index: u64,
    call_id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
pub struct OpenAiChatDecoder {
    started: bool,
    terminal: bool,
    done: bool,
    /// `text-<n>` / `reasoning-<n>` of the open part.
    text_id: Option<String>,
    reasoning_id: Option<String>,
    parts: u32,
    /// Tool calls streaming now (ended at the `finish_reason`).
    tools: Vec<ToolState>,
    tools_total: usize,
    reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl OpenAiChatDecoder {
    pub fn decode<F: FnMut(Event<'_>)>(
        &mut self,
        sse: &SseEvent<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        let data = sse.data.trim_ascii();
        if data == "[DONE]" {
            self.ensure_started(None, emit);
            if !self.terminal {
                self.end_parts(emit)?;
                self.terminal = true;
                emit(Event::Finish {
                    reason: self.reason,
                    usage: self.usage,
                    metadata: None,
                });
            }
            self.done = true;
            return Ok(());
        }
        if self.terminal {
            return Ok(());
        }
        let chunk: WireChunk<'_> = serde_json::from_str(data).map_err(DecodeError::json)?;
        self.ensure_started(chunk.id.as_ref().map(|id| &*id.0), emit);
        if let Some(error) = chunk.error {
            self.terminal = true;
            emit(Event::Error {
                message: error_message(error),
            });
            return Ok(());
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.usage());
        }
        if let Some(choice) = chunk.choices.0 {
            if let Some(delta) = choice.delta {
                self.delta(delta, emit)?;
            }
            if let Some(reason) = choice.finish_reason {
                self.end_parts(emit)?;
                self.reason = Some(canonical_finish_reason(&reason.0));
            }
        }
        Ok(())
    }

    fn ensure_started<F: FnMut(Event<'_>)>(&mut self, id: Option<&str>, emit: &mut F) {
        if !self.started {
            self.started = true;
            emit(Event::Start {
                message_id: id.map(Cow::Borrowed),
                conversation_id: None,
            });
        }
    }

    fn delta<F: FnMut(Event<'_>)>(
        &mut self,
        delta: WireDelta<'_>,
        emit: &mut F,
    ) -> Result<(), DecodeError> {
        if let Some(r) = delta.reasoning_content.or(delta.reasoning) {
            if !r.0.is_empty() {
                self.close_text(emit);
                let id = open_part(&mut self.reasoning_id, &mut self.parts, "reasoning");
                if let Some(id) = id {
                    emit(Event::ReasoningStart {
                        id: Cow::Borrowed(id),
                    });
                }
                emit(Event::ReasoningDelta {
                    id: Cow::Borrowed(self.reasoning_id.as_deref().unwrap_or_default()),
                    delta: r.0,
                });
            }
        }
        if let Some(t) = delta.content.or(delta.refusal) {
            if !t.0.is_empty() {
                self.close_reasoning(emit);
                if let Some(id) = open_part(&mut self.text_id, &mut self.parts, "text") {
                    emit(Event::TextStart {
                        id: Cow::Borrowed(id),
                    });
                }
                emit(Event::TextDelta {
                    id: Cow::Borrowed(self.text_id.as_deref().unwrap_or_default()),
                    delta: t.0,
                });
            }
        }
        for call in delta.tool_calls.into_iter().flatten() {
            self.close_text(emit);
            self.close_reasoning(emit);
            let index = call.index.unwrap_or(0);
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            let at = match self.tools.iter().position(|t| t.index == index) {
                Some(at) => at,
                None => {
                    if self.tools_total >= MAX_TOOL_CALLS {
                        return Err(DecodeError::Protocol("too many tool calls".into()));
                    }
                    self.tools_total += 1;
                    let call_id = match &call.id {
                        Some(id) => id.0.to_string(),
                        None => format!("call_{}", self.tools_total),
                    };
                    let name = name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    emit(Event::ToolInputStart {
                        call_id: Cow::Borrowed(&call_id),
                        name: Cow::Borrowed(&name),
                    });
                    self.tools.push(ToolState {
                        index,
                        call_id,
                        name,
                        arguments: String::new(),
                    });
                    self.tools.len() - 1
                }
            };
            let tool = &mut self.tools[at];
            if let Some(args) = arguments.filter(|a| !a.0.is_empty()) {
                if tool.arguments.len() + args.0.len() > MAX_TOOL_ARGUMENT_BYTES {
                    return Err(DecodeError::Protocol("tool call arguments too long".into()));
                }
                tool.arguments.push_str(&args.0);
                emit(Event::ToolInputDelta {
                    call_id: Cow::Borrowed(&tool.call_id),
                    delta: args.0,
                });
            }
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

    /// Ends the open text and reasoning, and every streaming tool call with its arguments.
    fn end_parts<F: FnMut(Event<'_>)>(&mut self, emit: &mut F) -> Result<(), DecodeError> {
        self.close_text(emit);
        self.close_reasoning(emit);
        for tool in self.tools.drain(..) {
            emit(tool_input(
                Cow::Owned(tool.call_id),
                Cow::Owned(tool.name),
                &tool.arguments,
            ));
        }
        Ok(())
    }

    pub fn end(&mut self) -> Result<(), DecodeError> {
        if self.terminal {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

/// Opens a part if none is open; returns the new id then.
fn open_part<'s>(slot: &'s mut Option<String>, parts: &mut u32, kind: &str) -> Option<&'s str> {
    if slot.is_some() {
        return None;
    }
    *parts += 1;
    let mut id = String::with_capacity(kind.len() + 4);
    let _ = write!(id, "{kind}-{parts}");
    Some(slot.insert(id).as_str())
}

/// A tool call whose arguments (a JSON text, OpenAI's way) are complete: input available,
/// or an input error when they are not JSON. Empty arguments are `{}`.
pub(crate) fn tool_input<'a>(
    call_id: Cow<'a, str>,
    name: Cow<'a, str>,
    arguments: &str,
) -> Event<'a> {
    if arguments.trim().is_empty() {
        return Event::ToolInputAvailable {
            call_id,
            name,
            input: Json::from_value(&serde_json::Map::new()),
        };
    }
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) => Event::ToolInputAvailable {
            call_id,
            name,
            input: Json::owned(raw.to_owned()),
        },
        Err(e) => Event::ToolInputError {
            call_id,
            name,
            input: Json::from_value(arguments),
            error: Cow::Owned(format!("tool call arguments are not JSON: {e}")),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Encoder

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

/// Chat Completions' `usage`, with the credits charged as an extra field.
#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(serialize_with = "super::serialize_credits")]
    credits: f64,
}

impl UsageOut {
    fn new(usage: Option<Usage>, credits: Option<f64>) -> UsageOut {
        let u = usage.unwrap_or_default();
        let (input, output) = (u.input_tokens.unwrap_or(0), u.output_tokens.unwrap_or(0));
        UsageOut {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: input.saturating_add(output),
            credits: credits.unwrap_or(u.credits),
        }
    }
}

#[derive(Debug)]
struct ToolOut {
    call_id: String,
    /// Arguments were streamed as deltas.
    streamed: bool,
}

#[derive(Debug)]
pub struct OpenAiChatEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    done: bool,
    tools: Vec<ToolOut>,
}

impl OpenAiChatEncoder {
    pub fn new(options: &EncodeOptions) -> Self {
        OpenAiChatEncoder {
            id: options
                .response_id
                .as_deref()
                .map_or_else(|| generated_id("chatcmpl-"), str::to_owned),
            created: options.created.unwrap_or_else(now_secs),
            model: options.model.as_deref().unwrap_or(DEFAULT_MODEL).to_owned(),
            include_usage: options.include_usage,
            role_sent: false,
            done: false,
            tools: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&mut self, out: &mut BytesMut, mut delta: DeltaOut<'_>, finish: Option<&'static str>) {
        if !self.role_sent {
            self.role_sent = true;
            delta.role = Some("assistant");
        }
        let choices = [ChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        sse::write_json_event(
            out,
            None,
            &ChunkOut {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &choices,
                usage: None,
            },
        );
    }

    fn tool_index(&self, call_id: &str) -> Option<usize> {
        self.tools.iter().position(|t| t.call_id == call_id)
    }

    fn tool_start(&mut self, out: &mut BytesMut, call_id: &str, name: &str, args: Option<&str>) {
        if self.tools.len() >= MAX_TOOL_CALLS {
            return;
        }
        let index = self.tools.len();
        self.tools.push(ToolOut {
            call_id: call_id.to_owned(),
            streamed: false,
        });
        let delta = DeltaOut {
            tool_calls: Some([ToolCallOut {
                index,
                id: Some(call_id),
                ty: Some("function"),
                function: FunctionOut {
                    name: Some(name),
                    arguments: Some(args.unwrap_or("")),
                },
            }]),
            ..Default::default()
        };
        self.chunk(out, delta, None);
    }

    fn tool_arguments(&mut self, out: &mut BytesMut, index: usize, args: &str) {
        self.tools[index].streamed = true;
        let delta = DeltaOut {
            tool_calls: Some([ToolCallOut {
                index,
                id: None,
                ty: None,
                function: FunctionOut {
                    name: None,
                    arguments: Some(args),
                },
            }]),
            ..Default::default()
        };
        self.chunk(out, delta, None);
    }

    fn finish(&mut self, out: &mut BytesMut, reason: Option<FinishReason>, usage: Option<Usage>) {
        let reason = wire_finish_reason(reason, !self.tools.is_empty());
        self.chunk(out, DeltaOut::default(), Some(reason));
        if self.include_usage {
            sse::write_json_event(
                out,
                None,
                &ChunkOut {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(UsageOut::new(usage, None)),
                },
            );
        }
        sse::write_raw_data_event(out, "[DONE]");
        self.done = true;
    }

    pub fn encode(&mut self, event: &Event<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            Event::Start { .. } if !self.role_sent => {
                let delta = DeltaOut {
                    content: Some(""),
                    ..Default::default()
                };
                self.chunk(out, delta, None);
            }
            Event::TextDelta { delta, .. } if !delta.is_empty() => {
                let delta = DeltaOut {
                    content: Some(delta),
                    ..Default::default()
                };
                self.chunk(out, delta, None);
            }
            Event::ReasoningDelta { delta, .. } if !delta.is_empty() => {
                let delta = DeltaOut {
                    reasoning_content: Some(delta),
                    ..Default::default()
                };
                self.chunk(out, delta, None);
            }
            Event::ToolInputStart { call_id, name } if self.tool_index(call_id).is_none() => {
                self.tool_start(out, call_id, name, None);
            }
            Event::ToolInputDelta { call_id, delta } if !delta.is_empty() => {
                if let Some(index) = self.tool_index(call_id) {
                    self.tool_arguments(out, index, delta);
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
            } => match self.tool_index(call_id) {
                None => self.tool_start(out, call_id, name, Some(input.get())),
                Some(index) if !self.tools[index].streamed => {
                    self.tool_arguments(out, index, input.get())
                }
                Some(_) => {}
            },
            Event::Finish { reason, usage, .. } => self.finish(out, *reason, *usage),
            Event::Error { message } => {
                #[derive(Serialize)]
                struct ErrorOut<'a> {
                    error: ErrorBody<'a>,
                }
                sse::write_json_event(
                    out,
                    None,
                    &ErrorOut {
                        error: ErrorBody {
                            message,
                            ty: "server_error",
                            param: None,
                            code: None,
                        },
                    },
                );
                sse::write_raw_data_event(out, "[DONE]");
                self.done = true;
            }
            Event::Abort { .. } => self.finish(out, Some(FinishReason::Interrupted), None),
            _ => {}
        }
    }
}

/// OpenAI's error object (`{"error": …}` holds one).
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub ty: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------
// Non-stream body

/// The `chat.completion` object for a whole answer (a sync call). `options` gives `id`,
/// `model` and `created` as for the encoder; `ctx.credits` (the credits charged) overrides the
/// stream's in `usage.credits`.
pub fn chat_completion_body(
    aggregate: &Aggregate,
    options: &EncodeOptions,
    ctx: &SyncContext,
) -> Value {
    let tools = !aggregate.tool_calls.is_empty();
    let content = if aggregate.text.is_empty() && tools {
        Value::Null
    } else {
        Value::from(aggregate.text.as_str())
    };
    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    if !aggregate.reasoning.is_empty() {
        message["reasoning_content"] = Value::from(aggregate.reasoning.as_str());
    }
    if tools {
        message["tool_calls"] = aggregate
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.input.to_string() },
                })
            })
            .collect();
    }
    let usage = UsageOut::new(Some(aggregate.usage()), ctx.credits);
    json!({
        "id": options.response_id.as_deref().map_or_else(|| generated_id("chatcmpl-"), str::to_owned),
        "object": "chat.completion",
        "created": options.created.unwrap_or_else(now_secs),
        "model": options.model.as_deref().unwrap_or(DEFAULT_MODEL),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": wire_finish_reason(aggregate.finish_reason, tools),
        }],
        "usage": usage,
    })
}
