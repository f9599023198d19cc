//! A canonical event sequence gathered into one answer, for the sync bodies of the chat APIs
//! (SPEC §1; each API writes its own body from it, see `crate::apis::ChatApi::sync_body`).

use serde_json::{Map, Value};

use super::event::{Event, FinishReason, Usage};

/// One tool call seen in an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// The whole answer, gathered from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub credits: Option<f64>,
    /// Tokens the backend reported (OpenAI formats).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub finish_reason: Option<FinishReason>,
    /// Set when the answer ended in an error instead of a finish.
    pub error: Option<String>,
    /// The answer ended: a finish, or an abort (SPEC §8: what was said is the answer).
    pub finished: bool,
    /// Lengths of `text`, `reasoning` and `tool_calls` when the current step started.
    step: (usize, usize, usize),
}

/// Identifiers the gateway owns and puts into a sync body; `None` falls back to the stream's.
#[derive(Debug, Clone, Default)]
pub struct SyncContext {
    pub conversation_id: Option<String>,
    pub message_id: Option<String>,
    pub user_message_id: Option<String>,
    pub run_id: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    /// Credits charged (what the client sees as usage); overrides the stream's usage.
    pub credits: Option<f64>,
}

impl Aggregate {
    pub fn push(&mut self, event: &Event<'_>) {
        match event {
            Event::Start {
                message_id,
                conversation_id,
            } => {
                if let Some(id) = message_id {
                    self.message_id = Some(id.to_string());
                }
                if let Some(id) = conversation_id {
                    self.conversation_id = Some(id.to_string());
                }
            }
            Event::TextDelta { delta, .. } => self.text.push_str(delta),
            Event::ReasoningDelta { delta, .. } => self.reasoning.push_str(delta),
            Event::ToolInputStart { call_id, name } => {
                self.tool(call_id).name = name.to_string();
            }
            Event::ToolInputAvailable {
                call_id,
                name,
                input,
            } => {
                let call = self.tool(call_id);
                call.name = name.to_string();
                call.input = serde_json::from_str(input.get()).unwrap_or(Value::Null);
            }
            Event::ToolOutput { call_id, output } => {
                self.tool(call_id).output = serde_json::from_str(output.get()).ok();
            }
            Event::ToolError { call_id, error } => {
                self.tool(call_id).error = Some(error.to_string());
            }
            Event::Finish { reason, usage, .. } => {
                self.finish_reason = *reason;
                self.credits = usage.map(|u| u.credits);
                self.input_tokens = usage.and_then(|u| u.input_tokens);
                self.output_tokens = usage.and_then(|u| u.output_tokens);
                self.finished = true;
            }
            Event::ToolInputError {
                call_id,
                name,
                input,
                error,
            } => {
                let call = self.tool(call_id);
                call.name = name.to_string();
                call.input = serde_json::from_str(input.get()).unwrap_or(Value::Null);
                call.error = Some(error.to_string());
            }
            Event::ToolDenied { call_id } => {
                self.tool(call_id).error = Some("denied".into());
            }
            Event::StepStart => {
                self.step = (self.text.len(), self.reasoning.len(), self.tool_calls.len());
            }
            Event::ResetStep => {
                let (text, reasoning, tools) = self.step;
                self.text.truncate(text);
                self.reasoning.truncate(reasoning);
                self.tool_calls.truncate(tools);
            }
            Event::Error { message } => self.error = Some(message.to_string()),
            Event::Abort { .. } => {
                self.finish_reason = Some(FinishReason::Interrupted);
                self.finished = true;
            }
            _ => {}
        }
    }

    /// The answer's usage: its credits (0 when none) and token counts.
    pub fn usage(&self) -> Usage {
        Usage {
            credits: self.credits.unwrap_or(0.0),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        }
    }

    fn tool(&mut self, call_id: &str) -> &mut ToolCall {
        match self.tool_calls.iter().position(|c| c.id == call_id) {
            Some(i) => &mut self.tool_calls[i],
            None => {
                self.tool_calls.push(ToolCall {
                    id: call_id.to_string(),
                    name: String::new(),
                    input: Value::Object(Map::new()),
                    output: None,
                    error: None,
                });
                self.tool_calls.last_mut().unwrap_or_else(|| unreachable!())
            }
        }
    }
}
