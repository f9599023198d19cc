//! The official `openai` Node client (pinned in `tests/js/package-lock.json`) reads what the
//! OpenAI encoders write: every fixture transcoded into `openai-chat` (with the usage chunk)
//! and `openai-responses`, and its non-stream `chat.completion` and Response bodies, is served
//! over loopback HTTP to `tests/js/check-openai-stream.mjs`, which consumes it with
//! `client.chat.completions.create({stream})` / `client.responses.create({stream})`, the SDK's
//! accumulating stream helpers, and the non-stream calls. The text, tool calls, finish and
//! usage the client sees must be what the fixture carries. Errors too: an upstream error
//! becomes an error the client throws (Chat Completions) or a `failed` response.
//!
//! Needs `node`; `tests/js` is installed with `npm` on first use. Without them the test says
//! so and passes, except under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agentgate::cli::transcode::{run, Target};
use agentgate::formats::{EncodeOptions, Format};
use agentgate::fuzzing::transcode_chunks;
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;
use serde_json::Value;

use common::{bad_inputs, expected_text_parts, fixtures, Fixture};

fn harness() -> Option<PathBuf> {
    match common::node::node_harness() {
        Ok(js) => Some(js.join("check-openai-stream.mjs")),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn options() -> EncodeOptions {
    EncodeOptions {
        include_usage: true,
        model: Some("agent-1".into()),
        ..Default::default()
    }
}

/// What the client must have seen.
type Check = Box<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// One body for the client, and what it must see.
struct Case {
    name: String,
    kind: &'static str,
    body: Vec<u8>,
    check: Check,
}

fn check(script: &Path, dir: &Path, i: usize, case: &Case) -> Result<(), String> {
    let path = dir.join(format!("{i}.body"));
    std::fs::write(&path, &case.body).map_err(|e| e.to_string())?;
    let out = Command::new("node")
        .arg(script)
        .arg(case.kind)
        .arg(&path)
        .output()
        .map_err(|e| format!("spawning node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fail = |why: String| {
        Err(format!(
            "{why}\n  stdout: {stdout}\n  stderr: {}\n  body:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&case.body)
        ))
    };
    let result: Value = match serde_json::from_str(stdout.trim()) {
        Ok(v) => v,
        Err(e) => return fail(format!("the check printed no JSON ({e})")),
    };
    match (case.check)(&result) {
        Ok(()) => Ok(()),
        Err(why) => fail(why),
    }
}

/// Runs every case (a few node processes at a time) and reports every failure at once.
fn check_all(script: &Path, cases: &[Case]) {
    // Each test gets its own directory: the tests of this binary run side by side.
    let tmp = tempfile::tempdir().unwrap();
    common::node::check_all(
        "openai client",
        cases,
        |c| format!("{} ({})", c.name, c.kind),
        |i, c| check(script, tmp.path(), i, c),
    );
}

/// What a fixture's answer holds: its text and how many tool calls.
/// `parts` holds five tool calls (searched, denied, failed, input error, and one in the step
/// that `reset-step` discards): a stream has already sent the discarded one and cannot take it
/// back; a JSON body is assembled after the reset and leaves it out.
fn expected(f: &Fixture, json: bool) -> (Vec<&'static str>, usize) {
    let tools = match (f.case.as_str(), f.format) {
        (_, Format::TextDone) => 0,
        ("tool" | "state", _) => 1,
        ("steps", _) => 2,
        ("parts", _) if json => 4,
        ("parts", _) => 5,
        _ => 0,
    };
    (expected_text_parts(&f.case).to_vec(), tools)
}

/// The client's text holds the parts in order (all of it but for `parts`, whose reset step's
/// text OpenAI's formats cannot take back).
fn text_matches(case: &str, text: &str, parts: &[&str]) -> Result<(), String> {
    if case != "parts" {
        return if text == parts.concat() {
            Ok(())
        } else {
            Err(format!("text {text:?}, expected {:?}", parts.concat()))
        };
    }
    let mut rest = text;
    for p in parts {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return Err(format!("text {text:?} lacks {p:?}")),
        }
    }
    Ok(())
}

fn answer_check(f: &Fixture, to: Format, json: bool) -> Check {
    let (parts, tools) = expected(f, json);
    let case = f.case.clone();
    Box::new(move |r: &Value| {
        if r["ok"] != true {
            return Err(format!("the openai client rejected it: {}", r["error"]));
        }
        text_matches(&case, r["text"].as_str().unwrap_or_default(), &parts)?;
        let calls = r["toolCalls"].as_array().map_or(0, Vec::len);
        if calls != tools {
            return Err(format!("{calls} tool calls, expected {tools}"));
        }
        for call in r["toolCalls"].as_array().into_iter().flatten() {
            let args = call["arguments"].as_str().unwrap_or_default();
            serde_json::from_str::<Value>(args)
                .map_err(|e| format!("tool call arguments {args:?} are not JSON: {e}"))?;
            if call["id"].as_str().is_none_or(str::is_empty) || call["name"].as_str().is_none() {
                return Err(format!("tool call without id or name: {call}"));
            }
        }
        match to {
            Format::OpenAiChat => {
                // `tool_calls` only where the upstream gave no reason and there were calls.
                let reason = &r["finishReason"];
                if !(reason == "stop" || (tools > 0 && reason == "tool_calls")) {
                    return Err(format!("finish_reason {reason}"));
                }
                if !r["usage"]["total_tokens"].is_u64() || !r["usage"]["credits"].is_number() {
                    return Err(format!("usage {}", r["usage"]));
                }
            }
            _ => {
                if r["status"] != "completed" {
                    return Err(format!("status {}", r["status"]));
                }
                if !r["usage"]["output_tokens"].is_u64() || !r["usage"]["credits"].is_number() {
                    return Err(format!("usage {}", r["usage"]));
                }
            }
        }
        Ok(())
    })
}

fn f_has_reasoning(r: &Value) -> bool {
    r["reasoning"].as_str().is_some_and(|s| s.contains("391"))
}

#[test]
fn every_fixture_in_both_openai_formats_is_read_by_the_official_client() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for f in fixtures() {
        for (to, stream_kind, json_kind) in [
            (Format::OpenAiChat, "chat-stream", "chat-json"),
            (
                Format::OpenAiResponses,
                "responses-stream",
                "responses-json",
            ),
        ] {
            let body = transcode_chunks(
                f.format,
                to,
                options(),
                DEFAULT_MAX_EVENT_BYTES,
                [&f.bytes[..]],
            );
            cases.push(Case {
                name: format!("{} → {to}", f.name()),
                kind: stream_kind,
                body,
                check: answer_check(&f, to, false),
            });
            let mut json = Vec::new();
            let err = run(
                f.format,
                Target::OpenAiJson(to),
                options(),
                &f.bytes[..],
                &mut json,
            )
            .unwrap();
            assert!(err.is_none(), "{}: {err:?}", f.name());
            cases.push(Case {
                name: format!("{} → json:{to}", f.name()),
                kind: json_kind,
                body: json,
                check: answer_check(&f, to, true),
            });
        }
    }
    check_all(&script, &cases);
}

/// Reasoning reaches the client: `reasoning_content` deltas, a Responses reasoning item.
#[test]
fn reasoning_reaches_the_official_client() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for f in fixtures().into_iter().filter(|f| f.case == "reasoning") {
        for (to, kind) in [
            (Format::OpenAiChat, "chat-stream"),
            (Format::OpenAiResponses, "responses-stream"),
        ] {
            cases.push(Case {
                name: format!("{} → {to}", f.name()),
                kind,
                body: transcode_chunks(
                    f.format,
                    to,
                    options(),
                    DEFAULT_MAX_EVENT_BYTES,
                    [&f.bytes[..]],
                ),
                check: Box::new(|r: &Value| {
                    if f_has_reasoning(r) {
                        Ok(())
                    } else {
                        Err(format!("reasoning {}", r["reasoning"]))
                    }
                }),
            });
        }
    }
    check_all(&script, &cases);
}

/// An upstream error or bad input: the Chat Completions client throws the error's message
/// (after the partial answer); the Responses stream ends in a `failed` response.
#[test]
fn failed_streams_reach_the_official_client_as_errors() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for bad in bad_inputs() {
        for (to, kind) in [
            (Format::OpenAiChat, "chat-stream"),
            (Format::OpenAiResponses, "responses-stream"),
        ] {
            let needle = bad.needle;
            cases.push(Case {
                name: format!("bad input {} {} → {to}", bad.name, bad.format),
                kind,
                body: transcode_chunks(bad.format, to, options(), bad.max_event, [&bad.bytes[..]]),
                check: Box::new(move |r: &Value| {
                    let ok = match to {
                        Format::OpenAiChat => {
                            r["ok"] == false
                                && r["error"].as_str().is_some_and(|e| e.contains(needle))
                        }
                        _ => {
                            r["ok"] == true
                                && r["status"] == "failed"
                                && r["text"] == common::PARTIAL
                        }
                    };
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("expected the error {needle:?}"))
                    }
                }),
            });
        }
    }
    check_all(&script, &cases);
}
