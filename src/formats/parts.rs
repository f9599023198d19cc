//! An answer's parts in the AI SDK `UIMessage` form, as `readUIMessageStream` (the `ai`
//! package's `processUIMessageStream`) assembles them from the ui-message chunks the client
//! gets (SPEC §8: history keeps the parts). Fed the canonical events with, where the upstream
//! speaks ui-message, the chunk each came from, so the optional fields the SDK copies into
//! its parts (`providerMetadata`, `title`, `toolMetadata`, …) are kept too.

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::event::Event;

/// Builds the parts of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UiParts {
    parts: Vec<Value>,
    /// Open text and reasoning parts: chunk id → index in `parts`.
    text: Vec<(String, usize)>,
    reasoning: Vec<(String, usize)>,
    /// Tool inputs being streamed: call id → the input text so far.
    partial: Vec<(String, String)>,
}

/// What a tool part becomes (the SDK's `updateToolPart` options). `None` fields are left out
/// of the part (JavaScript's `undefined`).
#[derive(Default)]
struct ToolUpdate {
    state: &'static str,
    input: Option<Value>,
    output: Option<Value>,
    error_text: Option<Value>,
    raw_input: Option<Value>,
    input_encoding: Option<Value>,
    preliminary: Option<Value>,
    title: Option<Value>,
    tool_metadata: Option<Value>,
    provider_executed: Option<Value>,
    provider_metadata: Option<Value>,
}

impl UiParts {
    /// The parts so far.
    pub fn parts(&self) -> &[Value] {
        &self.parts
    }

    pub fn into_parts(self) -> Vec<Value> {
        self.parts
    }

    /// Takes one event; `chunk` is the ui-message chunk it was read from, if any.
    pub fn push(&mut self, event: &Event<'_>, chunk: Option<&RawValue>) {
        let fields = || -> Map<String, Value> {
            chunk
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default()
        };
        match event {
            Event::TextStart { id } => {
                if !self.text.iter().any(|(open, _)| open == id.as_ref()) {
                    let mut part = json!({ "type": "text", "text": "", "state": "streaming" });
                    copy(&fields(), &mut part, &["providerMetadata"]);
                    self.text.push((id.to_string(), self.parts.len()));
                    self.parts.push(part);
                }
            }
            Event::TextDelta { id, delta } => {
                let at = self.open_text(id);
                append_text(&mut self.parts[at], delta);
                copy(&fields(), &mut self.parts[at], &["providerMetadata"]);
            }
            Event::TextEnd { id } => {
                if let Some(at) = take(&mut self.text, id) {
                    let part = &mut self.parts[at];
                    part["state"] = json!("done");
                    copy(&fields(), part, &["citations", "providerMetadata"]);
                }
            }
            Event::ReasoningStart { id } => {
                if !self.reasoning.iter().any(|(open, _)| open == id.as_ref()) {
                    let mut part =
                        json!({ "type": "reasoning", "id": id, "text": "", "state": "streaming" });
                    copy(&fields(), &mut part, &["providerMetadata"]);
                    self.reasoning.push((id.to_string(), self.parts.len()));
                    self.parts.push(part);
                }
            }
            Event::ReasoningDelta { id, delta } => {
                let at = self.open_reasoning(id);
                append_text(&mut self.parts[at], delta);
                copy(&fields(), &mut self.parts[at], &["providerMetadata"]);
            }
            Event::ReasoningEnd { id } => {
                if let Some(at) = take(&mut self.reasoning, id) {
                    let part = &mut self.parts[at];
                    part["state"] = json!("done");
                    copy(&fields(), part, &["providerMetadata"]);
                }
            }
            Event::ToolInputStart { call_id, name } => {
                let f = fields();
                match self
                    .partial
                    .iter_mut()
                    .find(|(id, _)| id == call_id.as_ref())
                {
                    Some((_, text)) => text.clear(),
                    None => self.partial.push((call_id.to_string(), String::new())),
                }
                self.update_tool(
                    call_id,
                    name,
                    is_true(&f, "dynamic"),
                    ToolUpdate {
                        state: "input-streaming",
                        input_encoding: f.get("inputEncoding").cloned(),
                        provider_executed: f.get("providerExecuted").cloned(),
                        title: f.get("title").cloned(),
                        tool_metadata: f.get("toolMetadata").cloned(),
                        provider_metadata: f.get("providerMetadata").cloned(),
                        ..Default::default()
                    },
                );
            }
            Event::ToolInputDelta { call_id, delta } => {
                let Some((_, text)) = self
                    .partial
                    .iter_mut()
                    .find(|(id, _)| id == call_id.as_ref())
                else {
                    return;
                };
                text.push_str(delta);
                let text = text.clone();
                let Some(at) = self.find_tool(call_id) else {
                    return;
                };
                let (name, dynamic) = tool_name(&self.parts[at]);
                let part = &self.parts[at];
                let mut update = ToolUpdate {
                    state: "input-streaming",
                    input_encoding: part.get("inputEncoding").cloned(),
                    title: part.get("title").cloned(),
                    tool_metadata: part.get("toolMetadata").cloned(),
                    ..Default::default()
                };
                // The SDK parses partial JSON as it streams; the complete input follows in
                // `tool-input-available`, which is what a finished message holds.
                update.input = match update.input_encoding.as_ref().and_then(Value::as_str) {
                    Some("text") => Some(json!(text)),
                    _ => serde_json::from_str(&text).ok(),
                };
                update.raw_input = Some(json!(text));
                self.update_tool(call_id, &name, dynamic, update);
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => {
                let f = fields();
                self.update_tool(
                    call_id,
                    name,
                    is_true(&f, "dynamic"),
                    ToolUpdate {
                        state: "input-available",
                        input: Some(parse(input.get())),
                        provider_executed: f.get("providerExecuted").cloned(),
                        provider_metadata: f.get("providerMetadata").cloned(),
                        title: f.get("title").cloned(),
                        tool_metadata: f.get("toolMetadata").cloned(),
                        ..Default::default()
                    },
                );
            }
            Event::ToolInputError {
                call_id,
                name,
                input,
                error,
            } => {
                let f = fields();
                let dynamic = match self.find_in_step(call_id) {
                    Some(at) => self.parts[at]["type"] == "dynamic-tool",
                    None => is_true(&f, "dynamic"),
                };
                self.update_tool(
                    call_id,
                    name,
                    dynamic,
                    ToolUpdate {
                        state: "output-error",
                        input: Some(parse(input.get())),
                        error_text: Some(json!(error)),
                        provider_executed: f.get("providerExecuted").cloned(),
                        provider_metadata: f.get("providerMetadata").cloned(),
                        tool_metadata: f.get("toolMetadata").cloned(),
                        ..Default::default()
                    },
                );
            }
            Event::ToolOutput { call_id, output } => {
                let f = fields();
                self.finish_tool(
                    call_id,
                    &f,
                    ToolUpdate {
                        state: "output-available",
                        output: Some(parse(output.get())),
                        preliminary: f.get("preliminary").cloned(),
                        ..Default::default()
                    },
                );
            }
            Event::ToolError { call_id, error } => {
                let f = fields();
                self.finish_tool(
                    call_id,
                    &f,
                    ToolUpdate {
                        state: "output-error",
                        error_text: Some(json!(error)),
                        ..Default::default()
                    },
                );
            }
            Event::ToolDenied { call_id } => {
                if let Some(at) = self.find_tool(call_id) {
                    self.parts[at]["state"] = json!("output-denied");
                }
            }
            Event::StepStart => self.parts.push(json!({ "type": "step-start" })),
            Event::ResetStep => {
                let from = self.step_start();
                self.parts.truncate(from);
                self.text.clear();
                self.reasoning.clear();
                self.partial.clear();
            }
            Event::Part { ty, chunk } => {
                if let Ok(Value::Object(fields)) = serde_json::from_str(chunk.get()) {
                    self.part(ty, fields);
                }
            }
            // The ui-message encoder closes open parts at a step's and at the answer's end.
            Event::StepFinish
            | Event::Finish { .. }
            | Event::Error { .. }
            | Event::Abort { .. } => {
                for (_, at) in self.text.drain(..).chain(self.reasoning.drain(..)) {
                    self.parts[at]["state"] = json!("done");
                }
            }
            Event::Start { .. } | Event::Metadata { .. } => {}
        }
    }

    /// A chunk with no event of its own.
    fn part(&mut self, ty: &str, mut f: Map<String, Value>) {
        let get = |f: &Map<String, Value>, k: &str| f.get(k).cloned();
        match ty {
            "file" | "reasoning-file" => {
                let mut part =
                    json!({ "type": ty, "mediaType": get(&f, "mediaType"), "url": get(&f, "url") });
                copy(&f, &mut part, &["providerMetadata"]);
                self.parts.push(part);
            }
            "source-url" => {
                let mut part = json!({ "type": ty });
                copy(
                    &f,
                    &mut part,
                    &["sourceId", "url", "title", "providerMetadata"],
                );
                self.parts.push(part);
            }
            "source-document" => {
                let mut part = json!({ "type": ty });
                copy(
                    &f,
                    &mut part,
                    &[
                        "sourceId",
                        "mediaType",
                        "title",
                        "filename",
                        "providerMetadata",
                    ],
                );
                self.parts.push(part);
            }
            "custom" => {
                let mut part = json!({ "type": ty });
                copy(&f, &mut part, &["kind", "providerMetadata"]);
                self.parts.push(part);
            }
            "steering-message" => {
                let mut part = json!({ "type": ty });
                copy(&f, &mut part, &["id", "parts"]);
                self.parts.push(part);
            }
            "tool-approval-request" => {
                let Some(at) = f
                    .get("toolCallId")
                    .and_then(Value::as_str)
                    .and_then(|id| self.find_tool(id))
                else {
                    return;
                };
                let mut approval = json!({ "id": get(&f, "approvalId") });
                copy(&f, &mut approval, &["inputSchemaInput", "signature"]);
                if let Some(v) = f.get("approvalDescriptor").filter(|v| !v.is_null()) {
                    approval["descriptor"] = v.clone();
                }
                if let Some(v) = f.get("reason").filter(|v| !v.is_null()) {
                    approval["requestReason"] = v.clone();
                }
                if is_true(&f, "isAutomatic") {
                    approval["isAutomatic"] = json!(true);
                }
                let part = &mut self.parts[at];
                part["state"] = json!("approval-requested");
                part["approval"] = approval;
            }
            "tool-approval-response" => {
                let id = get(&f, "approvalId");
                let Some(part) = self
                    .parts
                    .iter_mut()
                    .filter(|p| is_tool(p))
                    .find(|p| p.get("approval").and_then(|a| a.get("id")) == id.as_ref())
                else {
                    return;
                };
                let mut approval = match part.get("approval") {
                    Some(Value::Object(a)) => a.clone(),
                    _ => Map::new(),
                };
                approval.insert("id".into(), id.unwrap_or(Value::Null));
                approval.insert(
                    "approved".into(),
                    get(&f, "approved").unwrap_or(Value::Null),
                );
                if let Some(reason) = f.get("reason").filter(|v| !v.is_null()) {
                    approval.insert("reason".into(), reason.clone());
                }
                part["state"] = json!("approval-responded");
                part["approval"] = Value::Object(approval);
                if let Some(v) = f.get("providerExecuted").filter(|v| !v.is_null()) {
                    part["providerExecuted"] = v.clone();
                }
                if let Some(v) = f.get("providerMetadata").filter(|v| !v.is_null()) {
                    part["callProviderMetadata"] = v.clone();
                }
            }
            data if data.starts_with("data-") => {
                if is_true(&f, "transient") {
                    return;
                }
                let id = f.get("id").filter(|v| !v.is_null()).cloned();
                let existing = id.as_ref().and_then(|id| {
                    self.parts
                        .iter_mut()
                        .find(|p| p["type"] == data && p.get("id") == Some(id))
                });
                match existing {
                    Some(part) => part["data"] = f.remove("data").unwrap_or(Value::Null),
                    None => self.parts.push(Value::Object(f)),
                }
            }
            // A type this version does not know: no part.
            _ => {}
        }
    }

    /// Index of the first part of the current step (after its `step-start`).
    fn step_start(&self) -> usize {
        self.parts
            .iter()
            .rposition(|p| p["type"] == "step-start")
            .map_or(0, |i| i + 1)
    }

    /// The tool part of `call_id` in the current step.
    fn find_in_step(&self, call_id: &str) -> Option<usize> {
        let from = self.step_start();
        self.parts[from..]
            .iter()
            .position(|p| is_tool(p) && p["toolCallId"] == call_id)
            .map(|i| from + i)
    }

    /// The tool part of `call_id`: in the current step, else the latest anywhere.
    fn find_tool(&self, call_id: &str) -> Option<usize> {
        self.find_in_step(call_id).or_else(|| {
            self.parts
                .iter()
                .rposition(|p| is_tool(p) && p["toolCallId"] == call_id)
        })
    }

    /// A tool's output or error: the part keeps its input, name and title.
    fn finish_tool(&mut self, call_id: &str, f: &Map<String, Value>, mut update: ToolUpdate) {
        let Some(at) = self.find_tool(call_id) else {
            return;
        };
        let part = &self.parts[at];
        let (name, dynamic) = tool_name(part);
        update.input = part.get("input").cloned();
        if !dynamic && update.state == "output-error" {
            update.raw_input = part.get("rawInput").cloned();
        }
        update.title = part.get("title").cloned();
        update.tool_metadata = f
            .get("toolMetadata")
            .or_else(|| part.get("toolMetadata"))
            .cloned();
        update.provider_executed = f.get("providerExecuted").cloned();
        update.provider_metadata = f.get("providerMetadata").cloned();
        self.write_tool(at, &name, dynamic, update);
    }

    /// The SDK's `updateToolPart` / `updateDynamicToolPart`: the part of `call_id` in the
    /// current step updated, or a new one.
    fn update_tool(&mut self, call_id: &str, name: &str, dynamic: bool, update: ToolUpdate) {
        let from = self.step_start();
        let found = self.parts[from..]
            .iter()
            .position(|p| match dynamic {
                true => p["type"] == "dynamic-tool",
                false => is_static_tool(p),
            } && p["toolCallId"] == call_id);
        match found {
            Some(i) => self.write_tool(from + i, name, dynamic, update),
            None => {
                let mut part = Map::new();
                match dynamic {
                    true => {
                        part.insert("type".into(), json!("dynamic-tool"));
                        part.insert("toolName".into(), json!(name));
                    }
                    false => {
                        part.insert("type".into(), json!(format!("tool-{name}")));
                    }
                }
                part.insert("toolCallId".into(), json!(call_id));
                self.parts.push(Value::Object(part));
                let at = self.parts.len() - 1;
                self.write_tool(at, name, dynamic, update);
            }
        }
    }

    fn write_tool(&mut self, at: usize, name: &str, dynamic: bool, u: ToolUpdate) {
        let Value::Object(part) = &mut self.parts[at] else {
            return;
        };
        let mut set = |key: &str, value: Option<Value>| match value {
            Some(v) if !v.is_null() || key == "input" || key == "output" => {
                part.insert(key.into(), v);
            }
            _ => {
                part.remove(key);
            }
        };
        match dynamic {
            true => set("toolName", Some(json!(name))),
            false => set("type", Some(json!(format!("tool-{name}")))),
        }
        set("state", Some(json!(u.state)));
        set("input", u.input);
        set("output", u.output);
        set("errorText", u.error_text);
        set("rawInput", u.raw_input);
        set("inputEncoding", u.input_encoding);
        set("preliminary", u.preliminary);
        if u.title.is_some() {
            set("title", u.title);
        }
        if u.tool_metadata.is_some() {
            set("toolMetadata", u.tool_metadata);
        }
        if let Some(executed) = u.provider_executed.filter(|v| !v.is_null()) {
            part.insert("providerExecuted".into(), executed);
        }
        if let Some(meta) = u.provider_metadata.filter(|v| !v.is_null()) {
            let key = match u.state {
                "output-available" | "output-error" => "resultProviderMetadata",
                _ => "callProviderMetadata",
            };
            part.insert(key.into(), meta);
        }
    }

    fn open_text(&mut self, id: &str) -> usize {
        if let Some((_, at)) = self.text.iter().find(|(open, _)| open == id) {
            return *at;
        }
        // The ui-message encoder writes a `text-start` before a first delta.
        self.text.push((id.to_owned(), self.parts.len()));
        self.parts
            .push(json!({ "type": "text", "text": "", "state": "streaming" }));
        self.parts.len() - 1
    }

    fn open_reasoning(&mut self, id: &str) -> usize {
        if let Some((_, at)) = self.reasoning.iter().find(|(open, _)| open == id) {
            return *at;
        }
        self.reasoning.push((id.to_owned(), self.parts.len()));
        self.parts
            .push(json!({ "type": "reasoning", "id": id, "text": "", "state": "streaming" }));
        self.parts.len() - 1
    }
}

fn take(open: &mut Vec<(String, usize)>, id: &str) -> Option<usize> {
    let i = open.iter().position(|(open, _)| open == id)?;
    Some(open.remove(i).1)
}

fn append_text(part: &mut Value, delta: &str) {
    if let Some(Value::String(text)) = part.get_mut("text") {
        text.push_str(delta);
    }
}

/// Copies the present, non-null `keys` of `from` into `to`.
fn copy(from: &Map<String, Value>, to: &mut Value, keys: &[&str]) {
    for key in keys {
        if let Some(v) = from.get(*key).filter(|v| !v.is_null()) {
            to[*key] = v.clone();
        }
    }
}

fn is_true(f: &Map<String, Value>, key: &str) -> bool {
    f.get(key) == Some(&Value::Bool(true))
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

fn is_static_tool(p: &Value) -> bool {
    p["type"].as_str().is_some_and(|t| t.starts_with("tool-"))
}

fn is_tool(p: &Value) -> bool {
    is_static_tool(p) || p["type"] == "dynamic-tool"
}

/// A tool part's tool name, and whether it is a dynamic tool.
fn tool_name(p: &Value) -> (String, bool) {
    match p["type"].as_str() {
        Some("dynamic-tool") => (p["toolName"].as_str().unwrap_or_default().to_owned(), true),
        Some(t) => (t.strip_prefix("tool-").unwrap_or(t).to_owned(), false),
        None => (String::new(), false),
    }
}
