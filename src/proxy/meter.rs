//! The gateway's [`EventTap`]: gives the client agentgate's ids, meters output as it passes,
//! cuts the stream off when the reservation is used up, and writes the charge into the
//! finish event, so what the client sees as usage is what is charged.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::config::AgentCredits;
use crate::credits::{from_milli, to_milli};
use crate::formats::{Aggregate, Event, FinishReason, Json, UiParts, Usage};
use crate::fronts::Api;
use crate::transcode::{EventTap, Flow};

/// The ids the client sees in this answer.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub conversation_id: String,
    pub message_id: String,
    pub user_message_id: String,
    pub user_id: Option<String>,
}

impl Ids {
    /// The ids, as a chat API's finish metadata and encoder options read them.
    pub fn finish_ids(&self) -> crate::apis::FinishIds<'_> {
        crate::apis::FinishIds {
            conversation_id: &self.conversation_id,
            message_id: &self.message_id,
            user_message_id: &self.user_message_id,
            user_id: self.user_id.as_deref(),
        }
    }
}

/// Meters one chat answer as it passes (the [`EventTap`] of a chat's transcoder): its ids,
/// usage and charge, and its transcript when the exchange is recorded.
#[derive(Debug)]
pub struct ChatMeter {
    front: Api,
    ids: Ids,
    pricing: AgentCredits,
    output_chars: u64,
    reported: Option<f64>,
    /// The token counts the backend reported with its usage (input, output).
    reported_tokens: (Option<u64>, Option<u64>),
    /// The backend's own conversation id, once it reveals it.
    pub backend_conversation: Option<String>,
    /// The answer's own id (its start's message id) continues the conversation
    /// (openai-responses' `previous_response_id`).
    answer_id_continues: bool,
    finished: bool,
    cut_off: bool,
    failure: Option<String>,
    charged: Option<f64>,
    /// The answer as the client gets it, kept when the exchange is to be recorded.
    transcript: Option<Box<(Aggregate, UiParts)>>,
    /// The most answer bytes the transcript keeps (`[server] max_answer_bytes`).
    transcript_limit: usize,
    /// Answer bytes in the transcript so far (see [`answer_bytes`]).
    transcript_bytes: usize,
    /// The transcript stopped at `transcript_limit`; the stream went on.
    truncated: bool,
}

/// Bytes an event adds to a kept answer (its text, tool inputs and outputs, parts), with a
/// fixed allowance for each event but the once-only ones, so that many tiny ones are counted too.
pub fn answer_bytes(event: &Event<'_>) -> usize {
    const EVENT: usize = 64;
    match event {
        Event::Start { .. } | Event::Finish { .. } | Event::Error { .. } | Event::Abort { .. } => 0,
        Event::TextDelta { delta, .. } | Event::ReasoningDelta { delta, .. } => delta.len(),
        Event::ToolInputDelta { call_id, delta } => call_id.len() + delta.len(),
        Event::ToolInputStart { call_id, name } => EVENT + call_id.len() + name.len(),
        Event::ToolInputAvailable {
            call_id,
            name,
            input,
        } => EVENT + call_id.len() + name.len() + input.get().len(),
        Event::ToolInputError {
            call_id,
            name,
            input,
            error,
        } => EVENT + call_id.len() + name.len() + input.get().len() + error.len(),
        Event::ToolOutput { call_id, output } => EVENT + call_id.len() + output.get().len(),
        Event::ToolError { call_id, error } => EVENT + call_id.len() + error.len(),
        Event::Part { ty, chunk } => EVENT + ty.len() + chunk.get().len(),
        Event::Metadata { metadata } => EVENT + metadata.get().len(),
        Event::TextStart { id }
        | Event::TextEnd { id }
        | Event::ReasoningStart { id }
        | Event::ReasoningEnd { id } => EVENT + id.len(),
        Event::ToolDenied { call_id } => EVENT + call_id.len(),
        Event::StepStart | Event::StepFinish | Event::ResetStep => EVENT,
    }
}

impl ChatMeter {
    pub fn new(front: Api, ids: Ids, pricing: AgentCredits) -> Self {
        ChatMeter {
            front,
            ids,
            pricing,
            output_chars: 0,
            reported: None,
            reported_tokens: (None, None),
            backend_conversation: None,
            answer_id_continues: false,
            finished: false,
            cut_off: false,
            failure: None,
            charged: None,
            transcript: None,
            transcript_limit: 0,
            transcript_bytes: 0,
            truncated: false,
        }
    }

    /// Keeps the answer (text, tool calls and results) for the conversation's transcript, up
    /// to `limit` answer bytes: past it the transcript is cut (at an event) and marked
    /// truncated while the stream goes on, so what is kept stays bounded.
    pub fn keep_transcript(mut self, limit: usize) -> Self {
        self.transcript = Some(Box::default());
        self.transcript_limit = limit;
        self
    }

    /// The backend continues a conversation from its last answer's id
    /// ([`crate::apis::ChatApi::upstream_continues_from_answer_id`]): that id, reported at the
    /// start of each answer, becomes the backend conversation id.
    pub fn answer_id_continues(mut self, yes: bool) -> Self {
        self.answer_id_continues = yes;
        self
    }

    /// True when the transcript was cut at its limit.
    pub fn transcript_truncated(&self) -> bool {
        self.truncated
    }

    /// The answer so far, when [`keep_transcript`](Self::keep_transcript) was asked for.
    pub fn transcript(&self) -> Option<&Aggregate> {
        self.transcript.as_deref().map(|(answer, _)| answer)
    }

    /// The answer's parts in the AI SDK `UIMessage` form, with the transcript.
    pub fn parts(&self) -> Option<&UiParts> {
        self.transcript.as_deref().map(|(_, parts)| parts)
    }

    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Credits for the output metered so far, before the cap: its characters, and its tokens
    /// as estimated from them ([`estimated_tokens`]) until the backend reports its own count.
    fn output_cost(&self) -> f64 {
        let tokens = self
            .reported_tokens
            .1
            .unwrap_or_else(|| estimated_tokens(self.output_chars));
        self.output_chars as f64 / 1000.0 * self.pricing.per_1k_output_chars
            + tokens as f64 / 1000.0 * self.pricing.per_1k_output_tokens
    }

    /// Credits for the input tokens the backend reported (none reported: nothing).
    fn input_cost(&self) -> f64 {
        self.reported_tokens.0.unwrap_or(0) as f64 / 1000.0 * self.pricing.per_1k_input_tokens
    }

    /// Whether the output is priced as it streams (by characters, or by tokens estimated
    /// from them), so that the reservation can run out mid-stream.
    fn output_priced(&self) -> bool {
        self.pricing.per_1k_output_chars > 0.0 || self.pricing.per_1k_output_tokens > 0.0
    }

    /// What the answer costs: base + usage (reported credits + priced tokens + metered
    /// output), usage clamped to [0, cap]. Backend-reported usage is untrusted input. Rounded
    /// to the millicredit, the ledger's unit, so that the usage a stream shows is exactly what
    /// is charged.
    pub fn charge(&self) -> f64 {
        let usage = self.reported.unwrap_or(0.0) + self.input_cost() + self.output_cost();
        let charge = self.pricing.per_message + usage.clamp(0.0, self.pricing.max_usage);
        from_milli(to_milli(charge))
    }

    /// What the answer is charged: what the client was shown. A finished answer, the usage in
    /// its finish; an answer that ended with an error (whatever failed), nothing; an answer the
    /// client left mid-stream, what it was sent (base cost plus priced output).
    pub fn final_charge(&self) -> f64 {
        match (self.charged, &self.failure) {
            (Some(charged), _) => charged,
            (None, Some(_)) => 0.0,
            (None, None) => self.charge(),
        }
    }

    /// The finish was metered but never reached the client (its exchange could not be made
    /// durable): the answer is charged as one that failed.
    pub fn withdraw_finish(&mut self) {
        self.finished = false;
        self.charged = None;
        self.reported = None;
        self.reported_tokens = (None, None);
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn cut_off(&self) -> bool {
        self.cut_off
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn output_chars(&self) -> u64 {
        self.output_chars
    }

    fn note_backend_conversation(&mut self, metadata: &Json<'_>) {
        #[derive(Deserialize)]
        struct Meta {
            #[serde(rename = "conversationId")]
            camel: Option<String>,
            conversation_id: Option<String>,
        }
        if let Ok(m) = serde_json::from_str::<Meta>(metadata.get()) {
            if let Some(id) = m.camel.or(m.conversation_id) {
                self.note_backend_id(&id);
            }
        }
    }

    /// The backend's own conversation id, kept (and stored, and sent back next turn) only when
    /// it is at most [`MAX_BACKEND_ID_LEN`] bytes: a backend cannot make every conversation row
    /// and request carry a megabyte. A longer one is ignored (and logged): that backend then
    /// starts afresh next turn.
    fn note_backend_id(&mut self, id: &str) {
        if id.len() <= MAX_BACKEND_ID_LEN {
            self.backend_conversation = Some(id.to_owned());
        } else {
            tracing::warn!(
                len = id.len(),
                "the backend's conversation id is longer than {MAX_BACKEND_ID_LEN} bytes; ignored"
            );
        }
    }

    fn finish_metadata(&self, credits: f64) -> Option<Json<'static>> {
        let usage = Usage::credits(credits);
        let mut meta = self
            .front
            .finish_metadata(&self.ids.finish_ids(), json!(usage))?;
        if self.cut_off {
            meta["creditsExhausted"] = json!(true);
            meta["stopReason"] = json!("credit limit reached");
        }
        Some(Json::from_value(&meta))
    }
}

/// The backend's finish metadata with agentgate's keys (`ours`) written over it; the backend's
/// other keys are kept (SPEC §8), but for its own conversation id, which agentgate maps and the
/// client never sees. Metadata that is not an object cannot be merged: ours wins.
fn merge_metadata(theirs: Option<Json<'_>>, ours: Option<Json<'static>>) -> Option<Json<'static>> {
    use serde_json::{Map, Value};
    let Some(theirs) = theirs else {
        return ours;
    };
    let object = |raw: &Json<'_>| serde_json::from_str::<Map<String, Value>>(raw.get()).ok();
    let Some(mut merged) = object(&theirs) else {
        return ours.or_else(|| Some(theirs.into_owned()));
    };
    merged.remove("conversationId");
    merged.remove("conversation_id");
    if let Some(ours) = ours.as_ref().and_then(object) {
        merged.extend(ours);
    }
    Some(Json::from_value(&merged))
}

/// The longest backend conversation id agentgate keeps (ids seen in practice are UUIDs or
/// `resp_…`/`thread_…` strings well under 100 bytes).
pub const MAX_BACKEND_ID_LEN: usize = 1024;

/// The tokens of `chars` characters of output, by OpenAI's rule of thumb of one token per
/// four characters (rounded up): how output is priced per token while it streams, and when
/// the backend reports no token count.
pub fn estimated_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

impl EventTap for ChatMeter {
    fn on_event(&mut self, event: &mut Event<'_>, chunk: Option<&RawValue>) -> Flow {
        let flow = self.meter_event(event);
        if let Some((answer, parts)) = self.transcript.as_deref_mut() {
            let bytes = answer_bytes(event);
            if bytes == 0
                || (!self.truncated && self.transcript_bytes + bytes <= self.transcript_limit)
            {
                self.transcript_bytes += bytes;
                answer.push(event);
                parts.push(event, chunk);
            } else {
                self.truncated = true;
            }
        }
        flow
    }
}

impl ChatMeter {
    fn meter_event(&mut self, event: &mut Event<'_>) -> Flow {
        match event {
            Event::TextDelta { delta, .. } | Event::ReasoningDelta { delta, .. } => {
                self.output_chars += delta.chars().count() as u64;
                if self.output_priced()
                    && self.pricing.per_message + self.output_cost() >= self.pricing.reservation()
                {
                    self.cut_off = true;
                    return Flow::Stop(Event::Finish {
                        reason: Some(FinishReason::Length),
                        usage: None,
                        metadata: None,
                    });
                }
            }
            Event::Start {
                message_id,
                conversation_id,
            } => {
                if let Some(id) = conversation_id.take() {
                    self.note_backend_id(&id);
                }
                if let Some(id) = message_id.as_ref().filter(|_| self.answer_id_continues) {
                    self.note_backend_id(id);
                }
                *message_id = Some(self.ids.message_id.clone().into());
                *conversation_id = Some(self.ids.conversation_id.clone().into());
            }
            Event::Metadata { metadata } => {
                let metadata = metadata.clone();
                self.note_backend_conversation(&metadata);
            }
            Event::Finish {
                usage, metadata, ..
            } => {
                if let Some(m) = metadata.as_ref() {
                    let m = m.clone();
                    self.note_backend_conversation(&m);
                }
                if let Some(u) = usage {
                    if !u.credits.is_finite()
                        || u.credits < 0.0
                        || u.credits > self.pricing.max_usage
                    {
                        tracing::warn!(
                            reported = u.credits,
                            cap = self.pricing.max_usage,
                            "backend reported usage outside [0, cap]; clamped"
                        );
                    }
                    self.reported = Some(if u.credits.is_finite() {
                        u.credits
                    } else {
                        0.0
                    });
                    self.reported_tokens = (u.input_tokens, u.output_tokens);
                }
                let charged = self.charge();
                self.charged = Some(charged);
                self.finished = true;
                // The backend's token counts stay for the formats that carry them.
                *usage = Some(Usage {
                    credits: charged,
                    ..usage.unwrap_or_default()
                });
                // agentgate's keys over the backend's, which are kept (SPEC §8).
                *metadata = merge_metadata(metadata.take(), self.finish_metadata(charged));
            }
            Event::Error { message } => self.failure = Some(message.to_string()),
            // An abort ends the answer with what was said: charged and recorded as such
            // (SPEC §8).
            Event::Abort { .. } => {
                self.charged = Some(self.charge());
                self.finished = true;
            }
            _ => {}
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_backend_conversation_id_is_not_kept() {
        let mut m = ChatMeter::new(Api::Agents, Ids::default(), pricing(1.0));
        let start = |id: String| Event::Start {
            message_id: None,
            conversation_id: Some(id.into()),
        };
        m.on_event(&mut start("b".repeat(MAX_BACKEND_ID_LEN)), None);
        assert_eq!(
            m.backend_conversation.as_deref().map(str::len),
            Some(MAX_BACKEND_ID_LEN)
        );
        m.on_event(&mut start("x".repeat(MAX_BACKEND_ID_LEN + 1)), None);
        assert_eq!(
            m.backend_conversation.as_deref().map(str::len),
            Some(MAX_BACKEND_ID_LEN)
        );
        let meta = Json::from_value(&serde_json::json!({ "conversationId": "y".repeat(5000) }));
        m.on_event(&mut Event::Metadata { metadata: meta }, None);
        assert!(m
            .backend_conversation
            .as_deref()
            .is_some_and(|id| id.starts_with('b')));
    }

    fn pricing(max_usage: f64) -> AgentCredits {
        AgentCredits {
            per_message: 1.0,
            max_usage,
            per_1k_input_tokens: 0.5,
            per_1k_output_tokens: 2.0,
            ..AgentCredits::FREE
        }
    }

    fn run(meter: &mut ChatMeter, mut events: Vec<Event<'static>>) -> Vec<Flow> {
        events.iter_mut().map(|e| meter.on_event(e, None)).collect()
    }

    fn delta(text: &str) -> Event<'static> {
        Event::TextDelta {
            id: "t".into(),
            delta: text.to_owned().into(),
        }
    }

    fn finish(input: Option<u64>, output: Option<u64>) -> Event<'static> {
        Event::Finish {
            reason: Some(FinishReason::Stop),
            usage: Some(Usage {
                credits: 0.0,
                input_tokens: input,
                output_tokens: output,
            }),
            metadata: None,
        }
    }

    #[test]
    fn reported_tokens_are_priced_within_the_cap() {
        let mut m = ChatMeter::new(Api::Agents, Ids::default(), pricing(100.0));
        run(&mut m, vec![delta("hello"), finish(Some(1200), Some(3000))]);
        // 1 + 1.2 × 0.5 + 3 × 2
        assert_eq!(m.final_charge(), 7.6);
        let mut capped = ChatMeter::new(Api::Agents, Ids::default(), pricing(5.0));
        run(&mut capped, vec![finish(Some(1200), Some(3000))]);
        assert_eq!(capped.final_charge(), 6.0);
    }

    #[test]
    fn unreported_output_tokens_are_estimated_from_characters() {
        let mut m = ChatMeter::new(Api::Agents, Ids::default(), pricing(100.0));
        // 9 characters: ⌈9 / 4⌉ = 3 tokens.
        run(
            &mut m,
            vec![delta("héllo "), delta("✓✓✓"), finish(None, None)],
        );
        assert_eq!(estimated_tokens(9), 3);
        assert_eq!(m.final_charge(), 1.006);
    }

    #[test]
    fn estimated_output_tokens_stop_the_stream_at_the_reservation() {
        let mut m = ChatMeter::new(
            Api::Agents,
            Ids::default(),
            AgentCredits {
                per_1k_output_tokens: 1000.0,
                ..pricing(5.0)
            },
        );
        let flows = run(&mut m, vec![delta("abcdefghij"), delta("abcdefghij")]);
        assert!(matches!(flows[0], Flow::Continue));
        assert!(matches!(flows[1], Flow::Stop(_)), "5 tokens reach the cap");
        assert!(m.cut_off());
    }

    #[test]
    fn the_answer_id_continues_the_conversation_when_the_backend_says_so() {
        let start = || Event::Start {
            message_id: Some("resp_2".into()),
            conversation_id: None,
        };
        let mut m =
            ChatMeter::new(Api::Agents, Ids::default(), pricing(1.0)).answer_id_continues(true);
        run(&mut m, vec![start()]);
        assert_eq!(m.backend_conversation.as_deref(), Some("resp_2"));
        let mut other = ChatMeter::new(Api::Agents, Ids::default(), pricing(1.0));
        run(&mut other, vec![start()]);
        assert_eq!(other.backend_conversation, None);
    }
}
