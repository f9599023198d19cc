//! Sync bodies: a canonical event sequence gathered into each chat API's JSON answer (SPEC §1).

use serde_json::{json, Map, Value};

use super::event::{Event, FinishReason, Usage};
use crate::fronts::Api;

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

    /// The answer as `api`'s sync JSON body.
    pub fn body(&self, api: Api, ctx: &SyncContext) -> Value {
        let conversation_id = ctx
            .conversation_id
            .clone()
            .or_else(|| self.conversation_id.clone());
        let message_id = ctx.message_id.clone().or_else(|| self.message_id.clone());
        let credits = ctx.credits.or(self.credits).unwrap_or(0.0);
        let usage = json!({ "credits": Credits(credits) });
        match api {
            // pharen and agents bodies also carry `usage`: what the answer was charged.
            Api::Pharen => json!({
                "message": self.text,
                "conversation_id": conversation_id,
                "run_id": ctx.run_id.clone().or(message_id),
                "usage": usage,
            }),
            Api::Chatbase => json!({
                "messageId": message_id,
                "userMessageId": ctx.user_message_id,
                "conversationId": conversation_id,
                "userId": ctx.user_id,
                "usage": usage,
                "text": self.text,
            }),
            Api::Agents => json!({
                "response": self.text,
                "agent_id": ctx.agent_id,
                "agent_name": ctx.agent_name,
                "conversation_id": conversation_id,
                "usage": usage,
            }),
            Api::Guayaba => json!({
                "sessionKey": conversation_id,
                "response": self.text,
                "toolCalls": self.tool_calls.iter().map(|c| {
                    let mut o = json!({ "toolCallId": c.id, "name": c.name, "input": c.input });
                    if let Some(out) = &c.output { o["output"] = out.clone(); }
                    if let Some(err) = &c.error { o["error"] = json!(err); }
                    o
                }).collect::<Vec<_>>(),
                "usage": usage,
            }),
        }
    }
}

/// Credits, written as an integer when whole.
struct Credits(f64);

impl serde::Serialize for Credits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_credits(&self.0, s)
    }
}
