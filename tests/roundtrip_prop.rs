//! Property: an arbitrary well-formed canonical event sequence, encoded into a format and
//! decoded back, equals `normalise(format, events)` — the sequence less what that format
//! cannot carry:
//!
//! - **ui-message** carries everything except the start's conversation id; a missing message
//!   id is generated (`msg_<32 hex>`); the finish's usage travels inside `messageMetadata`
//!   (so the decoded metadata holds `usage`, merged into any other metadata); parts still open
//!   at an error are closed before it.
//! - **session-delta** drops reasoning, part ids and boundaries (consecutive text parts merge
//!   into one part `text-<n>`, and a tool event ends it), streamed tool input (start and
//!   deltas: the complete input arrives with the `tool` start), steps, metadata, the message
//!   id and empty deltas; a missing conversation id becomes a generated `api:<uuid>` session
//!   key; an abort becomes a finish with reason `interrupted`; the finish keeps only reason
//!   and usage.
//! - **text-done** keeps only text (merged into one part `text-1`), usage and finish reason,
//!   plus the conversation id, which comes back as a `{"conversation_id"}` metadata event at
//!   the end; an abort becomes a finish with reason `interrupted`.
//!
//! - **ag-ui** carries text, reasoning, tool calls, steps and the finish's metadata (with its
//!   usage merged in, as ui-message does) but not the finish reason or metadata events; a
//!   missing message (run) id is generated (`msg_<32 hex>`), a missing conversation (thread)
//!   id too (`thread_<32 hex>`); part ids come back prefixed with the run id (`<run>-<id>`);
//!   tool input always streams (a tool whose input arrives whole gets one delta holding it,
//!   and the input read back is the streamed text parsed: `{}` when blank, a
//!   `ToolInputError` when it is not JSON); a tool's output comes back as its text content
//!   (a string as is, any other value as its JSON text), a tool error as its message; an
//!   abort loses its reason.
//! - **openai-chat** (with the usage chunk) keeps text, reasoning and tool calls: runs of
//!   text or reasoning become parts `text-<n>` / `reasoning-<n>` (one counter), a tool call
//!   closes them; every call is a start, its argument deltas (the whole input as one delta
//!   when it was not streamed) and, at the finish, its input; tool results, steps, metadata,
//!   the conversation id and empty deltas are dropped; the message id is the generated
//!   `chatcmpl-<32 hex>`; the finish reason is stop / length / content-filter / tool-calls
//!   (none: tool-calls after a tool call, else stop; the others stop), its usage carries
//!   0 tokens; an abort is a finish `stop`; an error ends the stream where it is.
//!   Streamed tool input deltas are the input's JSON text cut in pieces (as on the wire).
//! - **openai-responses** keeps text, reasoning and tool calls as output items (ids
//!   `msg_<n>_…`, `rs_<n>_…`, `fc_<n>_…` of the generated `resp_<32 hex>`); a call is a start,
//!   its deltas (the whole input when not streamed) and its input; the finish reason is
//!   tool-calls when the last item was a call, else stop, or length / content-filter; an
//!   abort stays an abort (no reason); an error or abort first ends the open item.
//!
//! JSON values are compared as parsed values.

use agentgate::formats::{EncodeOptions, Event, FinishReason, Format, Json, Usage};
use agentgate::fuzzing::assert_well_formed;
use agentgate::transcode::{decode_all, encode_all};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::borrow::Cow;

type Ev = Event<'static>;

// ---------- generators ----------

/// Text with multi-byte characters, grapheme clusters and characters JSON must escape.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-zA-Z ]{1,6}",
        1 => Just("é".to_owned()),
        1 => Just("日本語".to_owned()),
        1 => Just("👋🏽".to_owned()),
        1 => Just("👩\u{200d}👩\u{200d}👧".to_owned()),
        1 => Just("\u{200d}".to_owned()),
        1 => Just("\"".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just("\u{0}\u{1f}\u{7f}".to_owned()),
        1 => Just("\u{2028}\u{2029}".to_owned()),
        1 => Just("\u{feff}".to_owned()),
        1 => Just("data: [DONE]\n\n".to_owned()),
        2 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1000i32..1000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Metadata objects (never with a `usage` key: usage is the finish's own field).
fn metadata() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().filter(|(k, _)| k != "usage").collect()))
}

#[derive(Debug, Clone)]
enum Item {
    Text(Vec<String>),
    Reasoning(Vec<String>),
    Tool {
        name: String,
        /// Streamed input deltas (`None`: the input arrives whole).
        streamed: Option<Vec<String>>,
        input: Value,
        result: Result<Value, String>,
    },
    Metadata(Value),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => prop::collection::vec(text(), 1..5).prop_map(Item::Text),
        1 => prop::collection::vec(text(), 1..4).prop_map(Item::Reasoning),
        2 => (
            "[a-z_]{1,12}",
            prop::option::of(prop::collection::vec(text(), 0..4)),
            json_value(),
            prop_oneof![3 => json_value().prop_map(Ok), 1 => text().prop_map(Err)],
        )
            .prop_map(|(name, streamed, input, result)| Item::Tool {
                name,
                streamed,
                input,
                result,
            }),
        1 => metadata().prop_map(Item::Metadata),
    ]
}

#[derive(Debug, Clone)]
enum End {
    Finish {
        reason: Option<FinishReason>,
        usage: Option<f64>,
        metadata: Option<Value>,
    },
    /// An error, possibly while a text part is still open.
    Error {
        open_text: Option<Vec<String>>,
        message: String,
    },
    Abort {
        reason: Option<String>,
    },
}

fn credits() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u32..10_000).prop_map(f64::from),
        (0u64..10_000_000).prop_map(|n| n as f64 / 1000.0),
        (1u64..9).prop_map(|n| n as f64 * 1e16),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        6 => (
            prop::option::of(prop::sample::select(FinishReason::ALL.to_vec())),
            prop::option::of(credits()),
            prop::option::of(metadata()),
        )
            .prop_map(|(reason, usage, metadata)| End::Finish {
                reason,
                usage,
                metadata,
            }),
        1 => (prop::option::of(prop::collection::vec(text(), 1..3)), text())
            .prop_map(|(open_text, message)| End::Error { open_text, message }),
        1 => prop::option::of(text()).prop_map(|reason| End::Abort { reason }),
    ]
}

#[derive(Debug, Clone)]
struct Message {
    message_id: Option<String>,
    conversation_id: Option<String>,
    /// Each step: whether it is marked with start-step/finish-step, and its items.
    steps: Vec<(bool, Vec<Item>)>,
    end: End,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop::option::of("msg_[a-zA-Z0-9]{1,10}"),
        prop::option::of("(api:)?[a-z0-9-]{1,12}"),
        prop::collection::vec((any::<bool>(), prop::collection::vec(item(), 0..4)), 0..4),
        end(),
    )
        .prop_map(|(message_id, conversation_id, steps, end)| Message {
            message_id,
            conversation_id,
            steps,
            end,
        })
}

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_owned())
}

fn j(v: &Value) -> Json<'static> {
    Json::from_value(v)
}

/// The canonical events of a message, with unique part and call ids.
fn events(m: &Message) -> Vec<Ev> {
    let mut out = vec![Event::Start {
        message_id: m.message_id.as_deref().map(s),
        conversation_id: m.conversation_id.as_deref().map(s),
    }];
    let mut n = 0;
    let mut next = |prefix: &str| {
        n += 1;
        format!("{prefix}{n}")
    };
    for (marked, items) in &m.steps {
        if *marked {
            out.push(Event::StepStart);
        }
        for item in items {
            match item {
                Item::Text(deltas) => {
                    let id = s(&next("txt-"));
                    out.push(Event::TextStart { id: id.clone() });
                    for d in deltas {
                        out.push(Event::TextDelta {
                            id: id.clone(),
                            delta: s(d),
                        });
                    }
                    out.push(Event::TextEnd { id });
                }
                Item::Reasoning(deltas) => {
                    let id = s(&next("rs-ü"));
                    out.push(Event::ReasoningStart { id: id.clone() });
                    for d in deltas {
                        out.push(Event::ReasoningDelta {
                            id: id.clone(),
                            delta: s(d),
                        });
                    }
                    out.push(Event::ReasoningEnd { id });
                }
                Item::Tool {
                    name,
                    streamed,
                    input,
                    result,
                } => {
                    let call_id = s(&next("call_"));
                    if let Some(deltas) = streamed {
                        out.push(Event::ToolInputStart {
                            call_id: call_id.clone(),
                            name: s(name),
                        });
                        for d in deltas {
                            out.push(Event::ToolInputDelta {
                                call_id: call_id.clone(),
                                delta: s(d),
                            });
                        }
                    }
                    out.push(Event::ToolInputAvailable {
                        call_id: call_id.clone(),
                        name: s(name),
                        input: j(input),
                    });
                    out.push(match result {
                        Ok(output) => Event::ToolOutput {
                            call_id,
                            output: j(output),
                        },
                        Err(error) => Event::ToolError {
                            call_id,
                            error: s(error),
                        },
                    });
                }
                Item::Metadata(v) => out.push(Event::Metadata { metadata: j(v) }),
            }
        }
        if *marked {
            out.push(Event::StepFinish);
        }
    }
    match &m.end {
        End::Finish {
            reason,
            usage,
            metadata,
        } => out.push(Event::Finish {
            reason: *reason,
            usage: usage.map(Usage::credits),
            metadata: metadata.as_ref().map(j),
        }),
        End::Error { open_text, message } => {
            if let Some(deltas) = open_text {
                let id = s(&next("txt-"));
                out.push(Event::TextStart { id: id.clone() });
                for d in deltas {
                    out.push(Event::TextDelta {
                        id: id.clone(),
                        delta: s(d),
                    });
                }
            }
            out.push(Event::Error {
                message: s(message),
            });
        }
        End::Abort { reason } => out.push(Event::Abort {
            reason: reason.as_deref().map(s),
        }),
    }
    out
}

// ---------- what each format keeps ----------

const GENERATED: &str = "<generated>";

fn usage_in(metadata: &Json<'_>) -> Option<Usage> {
    let v: Value = serde_json::from_str(metadata.get()).ok()?;
    v["usage"]["credits"].as_f64().map(Usage::credits)
}

fn normalise(format: Format, events: &[Ev]) -> Vec<Ev> {
    let mut out = Vec::new();
    let Some(Event::Start {
        message_id,
        conversation_id,
    }) = events.first()
    else {
        panic!("a sequence starts with Start");
    };
    match format {
        Format::UiMessage => {
            out.push(Event::Start {
                message_id: Some(message_id.clone().unwrap_or(s(GENERATED))),
                conversation_id: None,
            });
            let mut open: Vec<Cow<'static, str>> = Vec::new();
            for e in &events[1..] {
                match e {
                    Event::TextStart { id } => open.push(id.clone()),
                    Event::TextEnd { id } => open.retain(|x| x != id),
                    Event::Error { .. } | Event::Abort { .. } => {
                        out.extend(open.drain(..).map(|id| Event::TextEnd { id }))
                    }
                    _ => {}
                }
                out.push(match e {
                    Event::Finish {
                        reason,
                        usage,
                        metadata,
                    } => {
                        let metadata = match (metadata, usage) {
                            (Some(m), Some(u)) => {
                                let mut v: Value = serde_json::from_str(m.get()).unwrap();
                                v["usage"] = serde_json::to_value(u).unwrap();
                                Some(j(&v))
                            }
                            (Some(m), None) => Some(m.clone()),
                            (None, Some(u)) => Some(j(&json!({ "usage": u }))),
                            (None, None) => None,
                        };
                        Event::Finish {
                            reason: *reason,
                            usage: usage.or_else(|| metadata.as_ref().and_then(usage_in)),
                            metadata,
                        }
                    }
                    other => other.clone(),
                });
            }
        }
        Format::SessionDelta => {
            out.push(Event::Start {
                message_id: None,
                conversation_id: Some(conversation_id.clone().unwrap_or(s(GENERATED))),
            });
            let mut parts = 0;
            let mut open: Option<Cow<'static, str>> = None;
            let close = |out: &mut Vec<Ev>, open: &mut Option<Cow<'static, str>>| {
                if let Some(id) = open.take() {
                    out.push(Event::TextEnd { id });
                }
            };
            for e in &events[1..] {
                match e {
                    Event::TextDelta { delta, .. } if !delta.is_empty() => {
                        let id = open
                            .get_or_insert_with(|| {
                                parts += 1;
                                let id = s(&format!("text-{parts}"));
                                out.push(Event::TextStart { id: id.clone() });
                                id
                            })
                            .clone();
                        out.push(Event::TextDelta {
                            id,
                            delta: delta.clone(),
                        });
                    }
                    Event::ToolInputAvailable { .. }
                    | Event::ToolOutput { .. }
                    | Event::ToolError { .. } => {
                        close(&mut out, &mut open);
                        out.push(e.clone());
                    }
                    Event::Finish { reason, usage, .. } => {
                        close(&mut out, &mut open);
                        out.push(Event::Finish {
                            reason: *reason,
                            usage: *usage,
                            metadata: None,
                        });
                    }
                    Event::Abort { .. } => {
                        close(&mut out, &mut open);
                        out.push(Event::Finish {
                            reason: Some(FinishReason::Interrupted),
                            usage: None,
                            metadata: None,
                        });
                    }
                    Event::Error { .. } => out.push(e.clone()),
                    _ => {}
                }
            }
        }
        Format::TextDone => {
            out.push(Event::Start {
                message_id: None,
                conversation_id: None,
            });
            let id = s("text-1");
            let mut open = false;
            for e in &events[1..] {
                let finish = |reason, usage, out: &mut Vec<Ev>| {
                    if let Some(c) = conversation_id {
                        out.push(Event::Metadata {
                            metadata: j(&json!({ "conversation_id": c })),
                        });
                    }
                    if open {
                        out.push(Event::TextEnd { id: id.clone() });
                    }
                    out.push(Event::Finish {
                        reason,
                        usage,
                        metadata: None,
                    });
                };
                match e {
                    Event::TextDelta { delta, .. } if !delta.is_empty() => {
                        if !open {
                            open = true;
                            out.push(Event::TextStart { id: id.clone() });
                        }
                        out.push(Event::TextDelta {
                            id: id.clone(),
                            delta: delta.clone(),
                        });
                    }
                    Event::Finish { reason, usage, .. } => finish(*reason, *usage, &mut out),
                    Event::Abort { .. } => finish(Some(FinishReason::Interrupted), None, &mut out),
                    Event::Error { .. } => out.push(e.clone()),
                    _ => {}
                }
            }
        }
        Format::AgUi => {
            out.push(Event::Start {
                message_id: Some(message_id.clone().unwrap_or(s(GENERATED))),
                conversation_id: Some(conversation_id.clone().unwrap_or(s(GENERATED))),
            });
            // Per streamed tool call: its deltas, joined.
            let mut streamed: Vec<(Cow<'static, str>, String)> = Vec::new();
            for e in &events[1..] {
                match e {
                    Event::ToolInputStart { call_id, .. } => {
                        streamed.push((call_id.clone(), String::new()));
                        out.push(e.clone());
                    }
                    Event::ToolInputDelta { call_id, delta } => {
                        if let Some((_, args)) = streamed.iter_mut().find(|(c, _)| c == call_id) {
                            args.push_str(delta);
                        }
                        out.push(e.clone());
                    }
                    Event::ToolInputAvailable {
                        call_id,
                        name,
                        input,
                    } => {
                        let args = match streamed.iter().find(|(c, _)| c == call_id) {
                            Some((_, args)) if !args.is_empty() => args.clone(),
                            Some(_) => {
                                out.push(Event::ToolInputDelta {
                                    call_id: call_id.clone(),
                                    delta: s(input.get()),
                                });
                                input.get().to_owned()
                            }
                            None => {
                                out.push(Event::ToolInputStart {
                                    call_id: call_id.clone(),
                                    name: name.clone(),
                                });
                                out.push(Event::ToolInputDelta {
                                    call_id: call_id.clone(),
                                    delta: s(input.get()),
                                });
                                input.get().to_owned()
                            }
                        };
                        out.push(if args.trim().is_empty() {
                            Event::ToolInputAvailable {
                                call_id: call_id.clone(),
                                name: name.clone(),
                                input: j(&json!({})),
                            }
                        } else {
                            match serde_json::from_str::<&serde_json::value::RawValue>(&args) {
                                Ok(raw) => Event::ToolInputAvailable {
                                    call_id: call_id.clone(),
                                    name: name.clone(),
                                    input: Json::owned(raw.to_owned()),
                                },
                                Err(err) => Event::ToolInputError {
                                    call_id: call_id.clone(),
                                    name: name.clone(),
                                    input: j(&Value::from(args.clone())),
                                    error: s(&format!(
                                        "tool call arguments are not valid JSON: {err}"
                                    )),
                                },
                            }
                        });
                    }
                    Event::ToolOutput { call_id, output } => {
                        let text = serde_json::from_str::<String>(output.get())
                            .unwrap_or_else(|_| output.get().to_owned());
                        out.push(Event::ToolOutput {
                            call_id: call_id.clone(),
                            output: j(&Value::from(text)),
                        });
                    }
                    Event::ToolError { call_id, error } => out.push(Event::ToolOutput {
                        call_id: call_id.clone(),
                        output: j(&Value::from(error.to_string())),
                    }),
                    Event::Metadata { .. } => {}
                    Event::Finish {
                        usage, metadata, ..
                    } => {
                        let metadata = match (metadata, usage) {
                            (Some(m), Some(u)) => {
                                let mut v: Value = serde_json::from_str(m.get()).unwrap();
                                v["usage"] = serde_json::to_value(u).unwrap();
                                Some(j(&v))
                            }
                            (Some(m), None) => Some(m.clone()),
                            (None, Some(u)) => Some(j(&json!({ "usage": u }))),
                            (None, None) => None,
                        };
                        out.push(Event::Finish {
                            reason: None,
                            usage: usage.or_else(|| metadata.as_ref().and_then(usage_in)),
                            metadata,
                        });
                    }
                    Event::Abort { .. } => out.push(Event::Abort { reason: None }),
                    other => out.push(other.clone()),
                }
            }
        }
        Format::OpenAiChat => return normalise_openai_chat(events),
        Format::OpenAiResponses => return normalise_openai_responses(events),
    }
    out.into_iter().map(canonical_json).collect()
}

/// The usage an OpenAI format gives back: the credits, and 0 tokens (the encoder's).
fn openai_usage(usage: Option<Usage>) -> Option<Usage> {
    Some(Usage {
        credits: usage.map_or(0.0, |u| u.credits),
        input_tokens: Some(0),
        output_tokens: Some(0),
    })
}

fn normalise_openai_chat(events: &[Ev]) -> Vec<Ev> {
    let mut out = vec![Event::Start {
        message_id: Some(s(GENERATED)),
        conversation_id: None,
    }];
    let mut parts = 0;
    let mut text: Option<Cow<'static, str>> = None;
    let mut reasoning: Option<Cow<'static, str>> = None;
    // Calls in order: (call id, name, input text).
    let mut calls: Vec<(Cow<'static, str>, Cow<'static, str>, String, bool)> = Vec::new();
    fn close(out: &mut Vec<Ev>, slot: &mut Option<Cow<'static, str>>, text: bool) {
        if let Some(id) = slot.take() {
            out.push(if text {
                Event::TextEnd { id }
            } else {
                Event::ReasoningEnd { id }
            });
        }
    }
    for e in &events[1..] {
        match e {
            Event::TextDelta { delta, .. } if !delta.is_empty() => {
                close(&mut out, &mut reasoning, false);
                let id = text
                    .get_or_insert_with(|| {
                        parts += 1;
                        let id = s(&format!("text-{parts}"));
                        out.push(Event::TextStart { id: id.clone() });
                        id
                    })
                    .clone();
                out.push(Event::TextDelta {
                    id,
                    delta: delta.clone(),
                });
            }
            Event::ReasoningDelta { delta, .. } if !delta.is_empty() => {
                close(&mut out, &mut text, true);
                let id = reasoning
                    .get_or_insert_with(|| {
                        parts += 1;
                        let id = s(&format!("reasoning-{parts}"));
                        out.push(Event::ReasoningStart { id: id.clone() });
                        id
                    })
                    .clone();
                out.push(Event::ReasoningDelta {
                    id,
                    delta: delta.clone(),
                });
            }
            Event::ToolInputStart { call_id, name } => {
                close(&mut out, &mut text, true);
                close(&mut out, &mut reasoning, false);
                out.push(e.clone());
                calls.push((call_id.clone(), name.clone(), String::new(), true));
            }
            Event::ToolInputDelta { call_id, delta } if !delta.is_empty() => {
                close(&mut out, &mut text, true);
                close(&mut out, &mut reasoning, false);
                out.push(e.clone());
                if let Some(c) = calls.iter_mut().find(|c| c.0 == *call_id) {
                    c.2.push_str(delta);
                }
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => {
                if !calls.iter().any(|c| c.0 == *call_id) {
                    close(&mut out, &mut text, true);
                    close(&mut out, &mut reasoning, false);
                    out.push(Event::ToolInputStart {
                        call_id: call_id.clone(),
                        name: name.clone(),
                    });
                    out.push(Event::ToolInputDelta {
                        call_id: call_id.clone(),
                        delta: s(input.get()),
                    });
                    calls.push((call_id.clone(), name.clone(), input.get().to_owned(), false));
                } else if let Some(c) = calls.iter_mut().find(|c| c.0 == *call_id) {
                    if c.2.is_empty() {
                        out.push(Event::ToolInputDelta {
                            call_id: call_id.clone(),
                            delta: s(input.get()),
                        });
                        c.2 = input.get().to_owned();
                    }
                }
            }
            Event::Finish { .. } | Event::Abort { .. } => {
                close(&mut out, &mut text, true);
                close(&mut out, &mut reasoning, false);
                for (call_id, name, input, _) in calls.drain(..) {
                    let input = if input.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        input
                    };
                    out.push(Event::ToolInputAvailable {
                        call_id,
                        name,
                        input: j(&serde_json::from_str::<Value>(&input).unwrap()),
                    });
                }
                let (reason, usage) = match e {
                    Event::Finish { reason, usage, .. } => (*reason, *usage),
                    _ => (Some(FinishReason::Interrupted), None),
                };
                let tools = out
                    .iter()
                    .any(|e| matches!(e, Event::ToolInputStart { .. }));
                let reason = match reason {
                    Some(
                        r @ (FinishReason::Length
                        | FinishReason::ContentFilter
                        | FinishReason::ToolCalls),
                    ) => r,
                    None if tools => FinishReason::ToolCalls,
                    _ => FinishReason::Stop,
                };
                out.push(Event::Finish {
                    reason: Some(reason),
                    usage: openai_usage(usage),
                    metadata: None,
                });
            }
            Event::Error { .. } => out.push(e.clone()),
            _ => {}
        }
    }
    out.into_iter().map(canonical_json).collect()
}

fn normalise_openai_responses(events: &[Ev]) -> Vec<Ev> {
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Text,
        Reasoning,
        Call,
    }
    /// The open item: its kind, id, for a call (call id, name), and its arguments so far.
    type OpenItem = (
        Kind,
        Cow<'static, str>,
        Option<(Cow<'static, str>, Cow<'static, str>)>,
        String,
    );
    let mut out = vec![Event::Start {
        message_id: Some(s(GENERATED)),
        conversation_id: None,
    }];
    let mut items = 0;
    // The open item: its kind, id, and for a call (call id, name, arguments streamed).
    let mut open: Option<OpenItem> = None;
    let mut called: Vec<Cow<'static, str>> = Vec::new();
    let mut ended_on_call = false;
    let close = |out: &mut Vec<Ev>, open: &mut Option<OpenItem>, ended_on_call: &mut bool| {
        if let Some((kind, id, call, args)) = open.take() {
            match kind {
                Kind::Text => {
                    *ended_on_call = false;
                    out.push(Event::TextEnd { id })
                }
                Kind::Reasoning => out.push(Event::ReasoningEnd { id }),
                Kind::Call => {
                    *ended_on_call = true;
                    let (call_id, name) = call.unwrap();
                    let input = if args.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        args
                    };
                    out.push(match serde_json::from_str::<Value>(&input) {
                        Ok(v) => Event::ToolInputAvailable {
                            call_id,
                            name,
                            input: j(&v),
                        },
                        Err(_) => panic!("generated arguments are JSON"),
                    });
                }
            }
        }
    };
    let mut new_item = |kind: Kind| {
        let prefix = match kind {
            Kind::Text => "msg",
            Kind::Reasoning => "rs",
            Kind::Call => "fc",
        };
        let id = s(&format!("{prefix}_{items}_{GENERATED}"));
        items += 1;
        id
    };
    for e in &events[1..] {
        match e {
            Event::TextDelta { delta, .. } | Event::ReasoningDelta { delta, .. }
                if !delta.is_empty() =>
            {
                let kind = if matches!(e, Event::TextDelta { .. }) {
                    Kind::Text
                } else {
                    Kind::Reasoning
                };
                if open.as_ref().is_some_and(|o| o.0 != kind) {
                    close(&mut out, &mut open, &mut ended_on_call);
                }
                let id = match &open {
                    Some(o) => o.1.clone(),
                    None => {
                        let id = new_item(kind);
                        open = Some((kind, id.clone(), None, String::new()));
                        out.push(if kind == Kind::Text {
                            Event::TextStart { id: id.clone() }
                        } else {
                            Event::ReasoningStart { id: id.clone() }
                        });
                        id
                    }
                };
                out.push(if kind == Kind::Text {
                    Event::TextDelta {
                        id,
                        delta: delta.clone(),
                    }
                } else {
                    Event::ReasoningDelta {
                        id,
                        delta: delta.clone(),
                    }
                });
            }
            Event::TextEnd { .. } | Event::ReasoningEnd { .. } => {
                close(&mut out, &mut open, &mut ended_on_call)
            }
            Event::ToolInputStart { call_id, name } if !called.contains(call_id) => {
                close(&mut out, &mut open, &mut ended_on_call);
                called.push(call_id.clone());
                let id = new_item(Kind::Call);
                open = Some((
                    Kind::Call,
                    id,
                    Some((call_id.clone(), name.clone())),
                    String::new(),
                ));
                out.push(e.clone());
            }
            Event::ToolInputDelta { call_id, delta } if !delta.is_empty() => {
                if let Some((Kind::Call, _, Some((id, _)), args)) = &mut open {
                    if id == call_id {
                        args.push_str(delta);
                        out.push(e.clone());
                    }
                }
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => {
                let is_open =
                    matches!(&open, Some((Kind::Call, _, Some((id, _)), _)) if id == call_id);
                if called.contains(call_id) && !is_open {
                    continue;
                }
                if !is_open {
                    close(&mut out, &mut open, &mut ended_on_call);
                    called.push(call_id.clone());
                    let id = new_item(Kind::Call);
                    open = Some((
                        Kind::Call,
                        id,
                        Some((call_id.clone(), name.clone())),
                        String::new(),
                    ));
                    out.push(Event::ToolInputStart {
                        call_id: call_id.clone(),
                        name: name.clone(),
                    });
                }
                if let Some((_, _, _, args)) = &mut open {
                    if args.is_empty() {
                        out.push(Event::ToolInputDelta {
                            call_id: call_id.clone(),
                            delta: s(input.get()),
                        });
                    }
                    *args = input.get().to_owned();
                }
                close(&mut out, &mut open, &mut ended_on_call);
            }
            Event::Finish { reason, usage, .. } => {
                close(&mut out, &mut open, &mut ended_on_call);
                let reason = match reason {
                    Some(r @ (FinishReason::Length | FinishReason::ContentFilter)) => *r,
                    _ if ended_on_call => FinishReason::ToolCalls,
                    _ => FinishReason::Stop,
                };
                out.push(Event::Finish {
                    reason: Some(reason),
                    usage: openai_usage(*usage),
                    metadata: None,
                });
            }
            Event::Abort { .. } => {
                close(&mut out, &mut open, &mut ended_on_call);
                out.push(Event::Abort { reason: None });
            }
            Event::Error { .. } => {
                close(&mut out, &mut open, &mut ended_on_call);
                out.push(e.clone());
            }
            _ => {}
        }
    }
    out.into_iter().map(canonical_json).collect()
}

/// openai-chat carries a tool call's input only as its streamed arguments: make streamed
/// deltas the input's JSON text cut in as many pieces (as a real server streams them).
fn with_consistent_tool_deltas(events: &[Ev]) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        if let Event::ToolInputStart { call_id, .. } = &events[i] {
            let mut k = i + 1;
            while matches!(&events[k], Event::ToolInputDelta { .. }) {
                k += 1;
            }
            let Event::ToolInputAvailable { input, .. } = &events[k] else {
                unreachable!("a streamed call ends with its input")
            };
            out.push(events[i].clone());
            let text = input.get().to_owned();
            let pieces = k - i - 1;
            let chars: Vec<char> = text.chars().collect();
            for p in 0..pieces {
                let (a, b) = (chars.len() * p / pieces, chars.len() * (p + 1) / pieces);
                out.push(Event::ToolInputDelta {
                    call_id: call_id.clone(),
                    delta: s(&chars[a..b].iter().collect::<String>()),
                });
            }
            i = k;
            continue;
        }
        out.push(events[i].clone());
        i += 1;
    }
    out
}

/// JSON fields re-serialised from their parsed value, so that equal values compare equal.
fn canonical_json(e: Ev) -> Ev {
    let c = |v: Json<'static>| -> Json<'static> {
        let value: Value = serde_json::from_str(v.get()).expect("valid JSON");
        j(&value)
    };
    match e {
        Event::ToolInputAvailable {
            call_id,
            name,
            input,
        } => Event::ToolInputAvailable {
            call_id,
            name,
            input: c(input),
        },
        Event::ToolOutput { call_id, output } => Event::ToolOutput {
            call_id,
            output: c(output),
        },
        Event::Metadata { metadata } => Event::Metadata {
            metadata: c(metadata),
        },
        Event::Finish {
            reason,
            usage,
            metadata,
        } => Event::Finish {
            reason,
            usage,
            metadata: metadata.map(c),
        },
        other => other,
    }
}

/// The decoded events with generated ids replaced by [`GENERATED`] (after checking their form).
fn project(format: Format, original: &[Ev], decoded: Vec<Ev>) -> Vec<Ev> {
    let Some(Event::Start {
        message_id,
        conversation_id,
    }) = original.first()
    else {
        unreachable!()
    };
    // ag-ui: part ids come back as `<run>-<id>`.
    let run = match decoded.first() {
        Some(Event::Start {
            message_id: Some(run),
            ..
        }) if format == Format::AgUi => format!("{run}-"),
        _ => String::new(),
    };
    let unprefix = |id: Cow<'static, str>| -> Cow<'static, str> {
        match id.strip_prefix(run.as_str()) {
            Some(rest) => s(rest),
            None => panic!("part id {id:?} does not start with the run id {run:?}"),
        }
    };
    let mut generated: Option<String> = None;
    decoded
        .into_iter()
        .map(|e| match e {
            Event::Start {
                message_id: Some(m),
                conversation_id: Some(c),
            } if format == Format::AgUi => {
                let generated = |id: Cow<'static, str>, prefix: &str, given: bool| {
                    if given {
                        return id;
                    }
                    let hex = id.strip_prefix(prefix).unwrap_or_default();
                    assert!(
                        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{id}"
                    );
                    s(GENERATED)
                };
                Event::Start {
                    message_id: Some(generated(m, "msg_", message_id.is_some())),
                    conversation_id: Some(generated(c, "thread_", conversation_id.is_some())),
                }
            }
            Event::TextStart { id } if format == Format::AgUi => {
                Event::TextStart { id: unprefix(id) }
            }
            Event::TextDelta { id, delta } if format == Format::AgUi => Event::TextDelta {
                id: unprefix(id),
                delta,
            },
            Event::TextEnd { id } if format == Format::AgUi => Event::TextEnd { id: unprefix(id) },
            Event::ReasoningStart { id } if format == Format::AgUi => {
                Event::ReasoningStart { id: unprefix(id) }
            }
            Event::ReasoningDelta { id, delta } if format == Format::AgUi => {
                Event::ReasoningDelta {
                    id: unprefix(id),
                    delta,
                }
            }
            Event::ReasoningEnd { id } if format == Format::AgUi => {
                Event::ReasoningEnd { id: unprefix(id) }
            }
            Event::Start {
                message_id: Some(id),
                conversation_id: c,
            } if format == Format::UiMessage && message_id.is_none() => {
                let hex = id.strip_prefix("msg_").unwrap_or_default();
                assert!(
                    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{id}"
                );
                Event::Start {
                    message_id: Some(s(GENERATED)),
                    conversation_id: c,
                }
            }
            Event::Start {
                message_id: m,
                conversation_id: Some(key),
            } if format == Format::SessionDelta && conversation_id.is_none() => {
                let uuid = key.strip_prefix("api:").unwrap_or_default();
                assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{key}");
                Event::Start {
                    message_id: m,
                    conversation_id: Some(s(GENERATED)),
                }
            }
            Event::Start {
                message_id: Some(id),
                conversation_id: c,
            } if matches!(format, Format::OpenAiChat | Format::OpenAiResponses) => {
                let prefix = if format == Format::OpenAiChat {
                    "chatcmpl-"
                } else {
                    "resp_"
                };
                let hex = id.strip_prefix(prefix).unwrap_or_default();
                assert!(
                    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{id}"
                );
                generated = Some(id.into_owned());
                Event::Start {
                    message_id: Some(s(GENERATED)),
                    conversation_id: c,
                }
            }
            other => canonical_json(match &generated {
                Some(g) => replace_ids(other, g),
                None => other,
            }),
        })
        .collect()
}

/// `e` with `generated` in its part id replaced by [`GENERATED`] (openai-responses item ids).
fn replace_ids(e: Ev, generated: &str) -> Ev {
    let r = |id: Cow<'static, str>| -> Cow<'static, str> {
        if id.contains(generated) {
            s(&id.replace(generated, GENERATED))
        } else {
            id
        }
    };
    match e {
        Event::TextStart { id } => Event::TextStart { id: r(id) },
        Event::TextDelta { id, delta } => Event::TextDelta { id: r(id), delta },
        Event::TextEnd { id } => Event::TextEnd { id: r(id) },
        Event::ReasoningStart { id } => Event::ReasoningStart { id: r(id) },
        Event::ReasoningDelta { id, delta } => Event::ReasoningDelta { id: r(id), delta },
        Event::ReasoningEnd { id } => Event::ReasoningEnd { id: r(id) },
        other => other,
    }
}

fn roundtrip(format: Format, options: EncodeOptions, evs: &[Ev]) -> Result<(), TestCaseError> {
    let bytes = encode_all(format, options.clone(), evs);
    assert_well_formed(format, &bytes);
    let decoded = decode_all(format, &bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "{format}: decoding our own output failed: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    let got = project(format, evs, decoded);
    let want = normalise(format, evs);
    prop_assert_eq!(
        &got,
        &want,
        "{} ({:?}) wire:\n{}",
        format,
        options,
        String::from_utf8_lossy(&bytes)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_the_events_less_what_the_format_cannot_carry(m in message()) {
        let evs = events(&m);
        for format in [Format::UiMessage, Format::SessionDelta, Format::TextDone] {
            roundtrip(format, EncodeOptions::default(), &evs)?;
        }
        let with_usage = EncodeOptions { include_usage: true, ..Default::default() };
        let consistent = with_consistent_tool_deltas(&evs);
        roundtrip(Format::OpenAiChat, with_usage.clone(), &consistent)?;
        roundtrip(Format::OpenAiResponses, EncodeOptions::default(), &consistent)?;
        roundtrip(
            Format::UiMessage,
            EncodeOptions { event_lines: true, ..Default::default() },
            &evs,
        )?;
    }
}

/// The normalisation is not vacuous: a sequence with everything in it loses what the doc says.
#[test]
fn normalise_drops_what_each_format_cannot_carry() {
    let m = Message {
        message_id: Some("msg_1".into()),
        conversation_id: Some("conv".into()),
        steps: vec![(
            true,
            vec![
                Item::Reasoning(vec!["think".into()]),
                Item::Text(vec!["a".into()]),
                Item::Text(vec!["b".into()]),
                Item::Tool {
                    name: "t".into(),
                    streamed: Some(vec!["{".into()]),
                    input: json!({}),
                    result: Ok(json!(1)),
                },
                Item::Metadata(json!({"k": 1})),
            ],
        )],
        end: End::Finish {
            reason: Some(FinishReason::Stop),
            usage: Some(2.0),
            metadata: None,
        },
    };
    let evs = events(&m);
    let kinds = |f| -> Vec<String> {
        normalise(f, &evs)
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(evs.len(), 18);
    assert_eq!(kinds(Format::UiMessage).len(), 18);
    assert_eq!(
        kinds(Format::SessionDelta),
        [
            "Start",
            "TextStart",
            "TextDelta",
            "TextDelta",
            "TextEnd",
            "ToolInputAvailable",
            "ToolOutput",
            "Finish"
        ]
    );
    assert_eq!(
        kinds(Format::TextDone),
        [
            "Start",
            "TextStart",
            "TextDelta",
            "TextDelta",
            "Metadata",
            "TextEnd",
            "Finish"
        ]
    );
}
