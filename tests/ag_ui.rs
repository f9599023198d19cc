//! The `ag-ui` format (SPEC §9) against the real client: every `ag-ui` stream we write — each
//! fixture transcoded from its format, the bad-input outputs, upstreams that die mid-stream
//! or stop short, and a credit cut-off — is read by `@ag-ui/client`'s `HttpAgent` (its SSE
//! parser, schema enforcement, chunk expansion, `verifyEvents` order rules and message
//! assembly; `tests/js/check-ag-ui-stream.mjs`). It must be accepted with no client warning,
//! end with `RUN_FINISHED` or `RUN_ERROR`, and the assembled assistant messages must hold the
//! text the input carries.
//!
//! Then, without node: the encoder's promises (thread id echoed, message ids made from the
//! run, data events passed through unchanged, data parts for ui-message) and the CLI.
//!
//! Needs `node` for the client tests; `tests/js` is installed with `npm` on first use. Without
//! them those tests say so and pass, except under `CI=true`, where they fail.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agentgate::formats::{EncodeOptions, Event, FinishReason, Format, Json, Usage};
use agentgate::fuzzing::{assert_well_formed, parse_sse, transcode_chunks};
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;
use agentgate::transcode::{encode_all, EventTap, Flow, Transcoder};
use bytes::BytesMut;
use serde_json::{json, Value};

use common::{bad_inputs, expected_text_parts, fixture, fixtures, PARTIAL};

fn harness() -> Option<PathBuf> {
    match common::node::node_harness() {
        Ok(js) => Some(js.join("check-ag-ui-stream.mjs")),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// One body for the client and what it must make of it.
struct Case {
    name: String,
    body: Vec<u8>,
    /// The assistant messages' text, in order.
    texts: Vec<String>,
    /// `RUN_ERROR`'s message must contain this, or the run must finish.
    error: Option<&'static str>,
    /// Tool results the client must have assembled (`None`: not checked).
    tool_results: Option<usize>,
    thread_id: Option<String>,
}

fn run_check(script: &Path, body: &[u8], thread_id: Option<&str>) -> (bool, Value, String) {
    let mut cmd = Command::new("node");
    cmd.arg(script);
    if let Some(id) = thread_id {
        cmd.args(["-", "--thread-id", id]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning node");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let result = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    let ok = out.status.success() && result["ok"] == true;
    (
        ok,
        result,
        format!(
            "{stdout}\n  stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check(script: &Path, case: &Case) -> Result<(), String> {
    let (ok, result, output) = run_check(script, &case.body, case.thread_id.as_deref());
    let fail = |why: String| {
        Err(format!(
            "{why}\n  output: {output}\n  body:\n{}",
            String::from_utf8_lossy(&case.body)
        ))
    };
    if !ok {
        return fail(format!("@ag-ui/client rejected it: {}", result["error"]));
    }
    let texts: Vec<String> = result["texts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if texts != case.texts {
        return fail(format!("texts {texts:?}, expected {:?}", case.texts));
    }
    if let Some(n) = case.tool_results {
        let got = result["toolResults"].as_array().map_or(0, Vec::len);
        if got != n {
            return fail(format!("{got} tool results, expected {n}"));
        }
    }
    match (case.error, result["runError"]["message"].as_str()) {
        (None, None) => Ok(()),
        (Some(needle), Some(message)) if message.contains(needle) => Ok(()),
        (want, got) => fail(format!("RUN_ERROR {got:?}, expected {want:?}")),
    }
}

/// Runs every case (a few node processes at a time) and reports every failure at once.
fn check_all(script: &Path, cases: &[Case]) {
    common::node::check_all(
        "@ag-ui/client",
        cases,
        |c| c.name.clone(),
        |_, c| check(script, c),
    );
}

fn to_ag_ui(from: Format, bytes: &[u8], max_event: usize) -> Vec<u8> {
    transcode_chunks(
        from,
        Format::AgUi,
        EncodeOptions::default(),
        max_event,
        [bytes],
    )
}

/// The `threadId` of an ag-ui body's `RUN_STARTED`.
fn thread_of(body: &[u8]) -> String {
    let first: Value = serde_json::from_str(&parse_sse(body)[0].data).unwrap();
    assert_eq!(first["type"], "RUN_STARTED");
    first["threadId"].as_str().unwrap().to_owned()
}

/// The text messages of an ag-ui body (by message id, in order of first appearance).
fn texts_in(body: &[u8]) -> Vec<String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for e in parse_sse(body) {
        let c: Value = serde_json::from_str(&e.data).unwrap();
        let id = c["messageId"].as_str().unwrap_or_default().to_owned();
        match c["type"].as_str() {
            Some("TEXT_MESSAGE_START") => parts.push((id, String::new())),
            Some("TEXT_MESSAGE_CONTENT") => {
                if let Some(p) = parts.iter_mut().find(|p| p.0 == id) {
                    p.1.push_str(c["delta"].as_str().unwrap());
                }
            }
            _ => {}
        }
    }
    parts
        .into_iter()
        .map(|p| p.1)
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn every_fixture_as_ag_ui_is_accepted_by_the_ag_ui_client() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for f in fixtures() {
        let parts = expected_text_parts(&f.case);
        let mut texts: Vec<String> = match f.format {
            Format::TextDone => vec![parts.concat()],
            _ => parts.iter().map(|s| s.to_string()).collect(),
        };
        if f.case == "parts" {
            // AG-UI cannot take text back: the reset step's text stays (SPEC §8 says the
            // same of text-done), a message of its own between the two kept ones.
            texts.insert(1, "DISCARDED draft".into());
        }
        let tool_results = match (f.case.as_str(), f.format) {
            // text-done drops tools; the OpenAI streams carry calls but no tool results.
            (_, Format::TextDone | Format::OpenAiChat | Format::OpenAiResponses) => Some(0),
            ("tool", _) => Some(1),
            ("steps", _) => Some(2),
            // `parts` ends tools in every way; `state`'s messages snapshot replaces them.
            _ => None,
        };
        let body = to_ag_ui(f.format, &f.bytes, DEFAULT_MAX_EVENT_BYTES);
        // An ag-ui upstream's thread is echoed; the others have none, and one is made up.
        let thread_id = (f.format == Format::AgUi).then(|| thread_of(&f.bytes));
        cases.push(Case {
            name: format!("{} → ag-ui", f.name()),
            body,
            texts,
            error: None,
            tool_results,
            thread_id,
        });
    }
    check_all(&script, &cases);
}

/// Bad input, an upstream that dies mid-stream (inside a text message, a reasoning message
/// and a tool call), one that just stops, and a credit cut-off: each ends properly.
#[test]
fn errored_truncated_and_cut_off_streams_as_ag_ui_are_accepted_by_the_ag_ui_client() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for bad in bad_inputs() {
        cases.push(Case {
            name: format!("bad input {} {}", bad.name, bad.format),
            body: to_ag_ui(bad.format, &bad.bytes, bad.max_event),
            texts: vec![PARTIAL.to_owned()],
            error: Some(bad.needle),
            tool_results: None,
            thread_id: None,
        });
    }
    for f in fixtures() {
        let marker: &[u8] = match (f.case.as_str(), f.format) {
            ("reasoning", Format::UiMessage) => b"reasoning-delta",
            ("reasoning", Format::AgUi) => b"REASONING_MESSAGE_CONTENT",
            ("tool" | "steps", Format::UiMessage) => b"tool-input-delta",
            ("tool" | "steps", Format::AgUi) => b"TOOL_CALL_ARGS",
            (_, Format::UiMessage) => b"text-delta",
            (_, Format::AgUi) => b"TEXT_MESSAGE_",
            (_, Format::SessionDelta) => b"\"delta\"",
            (_, Format::TextDone) => b"\"text\"",
            ("reasoning", Format::OpenAiChat) => b"reasoning_content",
            ("tool", Format::OpenAiChat) => b"\"tool_calls\"",
            (_, Format::OpenAiChat) => b"\"content\":\"",
            ("reasoning", Format::OpenAiResponses) => b"response.reasoning_summary_text.delta",
            ("tool", Format::OpenAiResponses) => b"response.function_call_arguments.delta",
            (_, Format::OpenAiResponses) => b"response.output_text.delta",
        };
        let at = f
            .bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap_or_else(|| panic!("{}: no {marker:?}", f.name()))
            + 60;
        let prefix = &f.bytes[..at.min(f.bytes.len())];
        // Dies: the gateway fails the stream (a timeout, a reset).
        let mut t = Transcoder::new(f.format, Format::AgUi, EncodeOptions::default(), ());
        let mut out = BytesMut::new();
        t.feed(prefix, &mut out);
        t.fail("upstream timed out", &mut out);
        let died = out.to_vec();
        // Stops: the upstream closes the connection early.
        let stopped = transcode_chunks(
            f.format,
            Format::AgUi,
            EncodeOptions::default(),
            DEFAULT_MAX_EVENT_BYTES,
            [prefix],
        );
        for (how, body, needle) in [
            ("died", died, "upstream timed out"),
            ("stopped", stopped, "before it finished"),
        ] {
            cases.push(Case {
                name: format!("{} {how} mid-stream", f.name()),
                texts: texts_in(&body),
                body,
                error: Some(needle),
                tool_results: None,
                thread_id: None,
            });
        }
        // The meter's credit cut-off: a finish (reason `length`) after the first delta,
        // whatever is open then.
        let mut t = Transcoder::new(f.format, Format::AgUi, EncodeOptions::default(), CutOff);
        let mut out = BytesMut::new();
        t.feed(&f.bytes, &mut out);
        t.finish(&mut out);
        let body = out.to_vec();
        assert_well_formed(Format::AgUi, &body);
        let last: Value = serde_json::from_str(&parse_sse(&body).last().unwrap().data).unwrap();
        assert_eq!(last["type"], "RUN_FINISHED", "{}", f.name());
        assert_eq!(last["result"]["usage"]["credits"], 2, "{}", f.name());
        cases.push(Case {
            name: format!("{} cut off by the meter", f.name()),
            texts: texts_in(&body),
            body,
            error: None,
            tool_results: None,
            thread_id: Some("conv_cut".into()),
        });
    }
    check_all(&script, &cases);
}

/// Like the gateway's meter when credits run out: the ids of the exchange on start, then a
/// finish with reason `length` after the first text or reasoning delta.
struct CutOff;

impl EventTap for CutOff {
    fn on_event(&mut self, event: &mut Event<'_>, _: Option<&serde_json::value::RawValue>) -> Flow {
        match event {
            Event::Start {
                message_id,
                conversation_id,
            } => {
                *message_id = Some("msg_cut".into());
                *conversation_id = Some("conv_cut".into());
                Flow::Continue
            }
            Event::TextDelta { .. } | Event::ReasoningDelta { .. } => Flow::Stop(Event::Finish {
                reason: Some(FinishReason::Length),
                usage: Some(Usage::credits(2.0)),
                metadata: Some(Json::from_value(&json!({ "conversationId": "conv_cut" }))),
            }),
            _ => Flow::Continue,
        }
    }
}

/// The check can fail: what `@ag-ui/client` rejects, and a stream that just stops.
#[test]
fn the_check_rejects_what_the_ag_ui_client_rejects() {
    let Some(script) = harness() else { return };
    let start = "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n";
    let text =
        "data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"m\",\"role\":\"assistant\"}\n\n\
                data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m\",\"delta\":\"hi\"}\n\n";
    let end = "data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n";
    for (why, body) in [
        ("content before its start", format!("{start}data: {{\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m\",\"delta\":\"hi\"}}\n\n{end}")),
        ("a message open at RUN_FINISHED", format!("{start}{text}{end}")),
        ("no RUN_STARTED", format!("{text}data: {{\"type\":\"TEXT_MESSAGE_END\",\"messageId\":\"m\"}}\n\n{end}")),
        ("a stream that stops", format!("{start}{text}")),
        ("a null optional field", format!("{start}data: {{\"type\":\"STEP_STARTED\",\"stepName\":\"s\",\"timestamp\":null}}\n\n{end}")),
        ("an unknown event the client drops", format!("{start}data: {{\"type\":\"NOT_AN_EVENT\"}}\n\n{end}")),
        ("RUN_FINISHED with another thread", format!("{start}data: {{\"type\":\"RUN_FINISHED\",\"threadId\":\"other\",\"runId\":\"r\"}}\n\n")),
    ] {
        let (ok, result, output) = run_check(&script, body.as_bytes(), None);
        assert!(!ok, "{why}: passed the check: {output}");
        assert!(result["error"].is_string(), "{why}: {output}");
    }
    let (ok, _, output) = run_check(
        &script,
        format!("{start}{end}").as_bytes(),
        Some("another-thread"),
    );
    assert!(!ok, "a wrong thread passed: {output}");
    let (ok, _, output) = run_check(&script, format!("{start}{end}").as_bytes(), Some("t"));
    assert!(ok, "a valid empty run failed: {output}");
}

// ---------- without node ----------

fn events_of(body: &[u8]) -> Vec<Value> {
    assert_well_formed(Format::AgUi, body);
    parse_sse(body)
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[test]
fn run_started_and_run_finished_echo_the_thread_and_run() {
    let events = [
        Event::Start {
            message_id: Some("msg_7".into()),
            conversation_id: Some("conv_42".into()),
        },
        Event::StepStart,
        Event::TextDelta {
            id: "t".into(),
            delta: "hi".into(),
        },
        Event::Finish {
            reason: Some(FinishReason::Stop),
            usage: Some(Usage::credits(3.0)),
            metadata: None,
        },
    ];
    let out = events_of(&encode_all(Format::AgUi, EncodeOptions::default(), &events));
    let types: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "RUN_STARTED",
            "STEP_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "STEP_FINISHED",
            "RUN_FINISHED"
        ]
    );
    for e in [&out[0], &out[6]] {
        assert_eq!(e["threadId"], "conv_42");
        assert_eq!(e["runId"], "msg_7");
    }
    assert_eq!(out[6]["result"], json!({"usage": {"credits": 3}}));
    assert_eq!(out[1]["stepName"], out[5]["stepName"]);
}

/// A backend that calls every answer's text `text-1` (or an AG-UI backend with a fixed
/// message id): each run's messages get ids of their own, made from the run.
#[test]
fn message_ids_are_made_from_the_run_never_reused_across_runs() {
    let f = fixture("plain", Format::AgUi);
    let ids = |run: &'static str| -> Vec<String> {
        let mut t = Transcoder::new(
            f.format,
            Format::AgUi,
            EncodeOptions::default(),
            RunIds(run),
        );
        let mut out = BytesMut::new();
        t.feed(&f.bytes, &mut out);
        t.finish(&mut out);
        events_of(&out)
            .iter()
            .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
            .collect()
    };
    let (a, b) = (ids("msg_run_a"), ids("msg_run_b"));
    assert!(!a.is_empty());
    assert!(a.iter().all(|id| id == "msg_run_a-msg-1"), "{a:?}");
    assert!(b.iter().all(|id| id == "msg_run_b-msg-1"), "{b:?}");
}

struct RunIds(&'static str);

impl EventTap for RunIds {
    fn on_event(&mut self, event: &mut Event<'_>, _: Option<&serde_json::value::RawValue>) -> Flow {
        if let Event::Start { message_id, .. } = event {
            *message_id = Some(self.0.into());
        }
        Flow::Continue
    }
}

/// The events without a canonical event of their own: ag-ui → ag-ui writes each on as it
/// came (same JSON text), ag-ui → ui-message carries each as a `data-ag-ui-*` part holding it.
#[test]
fn state_messages_activity_custom_and_raw_pass_through_and_become_data_parts() {
    let f = fixture("state", Format::AgUi);
    let passed = [
        "STATE_SNAPSHOT",
        "STATE_DELTA",
        "MESSAGES_SNAPSHOT",
        "ACTIVITY_SNAPSHOT",
        "ACTIVITY_DELTA",
        "CUSTOM",
        "RAW",
        "REASONING_ENCRYPTED_VALUE",
    ];
    let is_passed = |data: &str| {
        let v: Value = serde_json::from_str(data).unwrap();
        passed.contains(&v["type"].as_str().unwrap())
    };
    let input: Vec<String> = parse_sse(&f.bytes)
        .into_iter()
        .map(|e| e.data)
        .filter(|d| is_passed(d))
        .collect();
    assert_eq!(input.len(), passed.len());
    let out = to_ag_ui(f.format, &f.bytes, DEFAULT_MAX_EVENT_BYTES);
    let output: Vec<String> = parse_sse(&out)
        .into_iter()
        .map(|e| e.data)
        .filter(|d| is_passed(d))
        .collect();
    assert_eq!(
        output, input,
        "ag-ui → ag-ui changed a passed-through event"
    );

    let ui = transcode_chunks(
        f.format,
        Format::UiMessage,
        EncodeOptions::default(),
        DEFAULT_MAX_EVENT_BYTES,
        [&f.bytes[..]],
    );
    assert_well_formed(Format::UiMessage, &ui);
    let parts: Vec<Value> = parse_sse(&ui)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter(|c| c["type"].as_str().unwrap().starts_with("data-ag-ui-"))
        .collect();
    let input: Vec<Value> = input
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        parts.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(),
        input
    );
    let kinds: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "data-ag-ui-state",
            "data-ag-ui-activity",
            "data-ag-ui-raw",
            "data-ag-ui-state",
            "data-ag-ui-activity",
            "data-ag-ui-event",
            "data-ag-ui-custom",
            "data-ag-ui-messages",
        ]
    );
    // And back: ui-message → ag-ui writes the AG-UI events inside the parts on unchanged.
    let back = to_ag_ui(Format::UiMessage, &ui, DEFAULT_MAX_EVENT_BYTES);
    let back: Vec<Value> = events_of(&back)
        .into_iter()
        .filter(|e| passed.contains(&e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(back, input);
}

/// Other ui-message parts become `CUSTOM` events; a lifecycle event smuggled into a
/// `data-ag-ui-*` part cannot end or corrupt the run.
#[test]
fn other_parts_become_custom_events_and_cannot_inject_lifecycle_events() {
    let input = b"data: {\"type\":\"start\",\"messageId\":\"m\"}\n\n\
        data: {\"type\":\"data-weather\",\"data\":{\"tempC\":24}}\n\n\
        data: {\"type\":\"data-ag-ui-state\",\"data\":{\"type\":\"RUN_FINISHED\",\"threadId\":\"x\",\"runId\":\"y\"}}\n\n\
        data: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n";
    let out = events_of(&to_ag_ui(Format::UiMessage, input, DEFAULT_MAX_EVENT_BYTES));
    let types: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["RUN_STARTED", "CUSTOM", "CUSTOM", "RUN_FINISHED"]);
    assert_eq!(out[1]["name"], "data-weather");
    assert_eq!(out[1]["value"]["data"], json!({"tempC": 24}));
    assert_eq!(out[2]["name"], "data-ag-ui-state");
}

/// Tool calls: streamed arguments pass as they come, a result's content is text, chunk
/// events are read like their start/args/end, and arguments that are not JSON are a tool
/// input error, not a broken stream.
#[test]
fn tool_calls_map_both_ways() {
    let f = fixture("tool", Format::UiMessage);
    let out = events_of(&to_ag_ui(f.format, &f.bytes, DEFAULT_MAX_EVENT_BYTES));
    let tool: Vec<&Value> = out
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("TOOL_CALL_"))
        .collect();
    assert_eq!(tool[0]["type"], "TOOL_CALL_START");
    assert_eq!(tool[0]["toolCallId"], "call_w1");
    assert_eq!(tool[0]["toolCallName"], "get_weather");
    let args: String = tool
        .iter()
        .filter(|e| e["type"] == "TOOL_CALL_ARGS")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\":\"Madrid\",\"unit\":\"C\"}");
    let result = tool.last().unwrap();
    assert_eq!(result["type"], "TOOL_CALL_RESULT");
    assert_eq!(result["content"], "{\"tempC\":24,\"sky\":\"clear\"}");
    assert_eq!(result["role"], "tool");

    let input = b"data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n\
        data: {\"type\":\"TOOL_CALL_CHUNK\",\"toolCallId\":\"c1\",\"toolCallName\":\"f\",\"delta\":\"{\\\"a\\\":\"}\n\n\
        data: {\"type\":\"TOOL_CALL_CHUNK\",\"delta\":\"1}\"}\n\n\
        data: {\"type\":\"TOOL_CALL_START\",\"toolCallId\":\"c2\",\"toolCallName\":\"g\"}\n\n\
        data: {\"type\":\"TOOL_CALL_ARGS\",\"toolCallId\":\"c2\",\"delta\":\"{nope\"}\n\n\
        data: {\"type\":\"TOOL_CALL_END\",\"toolCallId\":\"c2\"}\n\n\
        data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n";
    let ui = transcode_chunks(
        Format::AgUi,
        Format::UiMessage,
        EncodeOptions::default(),
        DEFAULT_MAX_EVENT_BYTES,
        [&input[..]],
    );
    assert_well_formed(Format::UiMessage, &ui);
    let chunks: Vec<Value> = parse_sse(&ui)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let available = chunks
        .iter()
        .find(|c| c["type"] == "tool-input-available")
        .unwrap();
    assert_eq!(available["toolCallId"], "c1");
    assert_eq!(available["input"], json!({"a": 1}));
    let error = chunks
        .iter()
        .find(|c| c["type"] == "tool-input-error")
        .unwrap();
    assert_eq!(error["toolCallId"], "c2");
    assert_eq!(error["input"], "{nope");
    assert_eq!(chunks.last().unwrap()["type"], "finish");
}

/// `RUN_FINISHED` with a cancelled outcome is an abort; an abort is written as one.
#[test]
fn a_cancelled_run_is_an_abort_both_ways() {
    let input = b"data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n\
        data: {\"type\":\"TEXT_MESSAGE_CHUNK\",\"messageId\":\"m\",\"delta\":\"Hi\"}\n\n\
        data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\",\"outcome\":{\"type\":\"cancelled\"}}\n\n";
    let ui = transcode_chunks(
        Format::AgUi,
        Format::UiMessage,
        EncodeOptions::default(),
        DEFAULT_MAX_EVENT_BYTES,
        [&input[..]],
    );
    assert!(
        String::from_utf8_lossy(&ui).contains("{\"type\":\"abort\"}"),
        "{}",
        String::from_utf8_lossy(&ui)
    );
    let back = events_of(&to_ag_ui(Format::UiMessage, &ui, DEFAULT_MAX_EVENT_BYTES));
    let last = back.last().unwrap();
    assert_eq!(last["outcome"], json!({"type": "cancelled"}));
    assert_eq!(back[back.len() - 2]["type"], "TEXT_MESSAGE_END");
}

/// `agentgate transcode --from ag-ui` and `--to ag-ui`.
#[test]
fn cli_transcodes_from_and_to_ag_ui() {
    let bin = env!("CARGO_BIN_EXE_agentgate");
    let f = fixture("tool", Format::AgUi);
    let run = |from: &str, to: &str, input: &[u8]| -> Vec<u8> {
        let mut child = Command::new(bin)
            .args(["transcode", "--from", from, "--to", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let ui = run("ag-ui", "ui-message", &f.bytes);
    assert_well_formed(Format::UiMessage, &ui);
    let back = run("ui-message", "ag-ui", &ui);
    assert_eq!(texts_in(&back), ["It is 24 °C and clear in Madrid."]);
    let json = run("ag-ui", "json:pharen", &f.bytes);
    let body: Value = serde_json::from_slice(&json).unwrap();
    assert!(
        body.to_string()
            .contains("It is 24 °C and clear in Madrid."),
        "{body}"
    );
}
