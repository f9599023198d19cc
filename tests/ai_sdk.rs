//! The real client: every `ui-message` output we write — each fixture transcoded from its
//! format, the bad-input outputs and the outputs of a stream failed mid-way — is fed to the
//! Vercel AI SDK's own parser and message assembler (`tests/js/check-ui-stream.mjs`: the `ai`
//! package's `parseJsonEventStream` + `uiMessageChunkSchema`, then `readUIMessageStream`).
//! It must be accepted (`ok`), end with `[DONE]` (`done`), and the assembled message's text
//! parts must be the text the input carries. Both with and without `event:` lines.
//!
//! Needs `node`; `tests/js` is installed with `npm` on first use. Without them the test says
//! so and passes, except under `CI=true`, where it fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agentgate::formats::{EncodeOptions, Format};
use agentgate::fuzzing::transcode_chunks;
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;
use agentgate::transcode::Transcoder;
use bytes::BytesMut;
use serde_json::Value;

use common::{bad_inputs, expected_text_parts, fixtures, PARTIAL};

/// The harness script, or `None` (with the reason printed) when it cannot run here; `npm ci`
/// runs on first use, and under `CI=true` a missing `node`/`npm` fails the test.
fn harness() -> Option<PathBuf> {
    match common::node::node_harness() {
        Ok(js) => Some(js.join("check-ui-stream.mjs")),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// One body for the SDK and what the assembled message must hold.
struct Case {
    name: String,
    body: Vec<u8>,
    texts: Vec<String>,
    /// The error chunk's text must contain this (and there must be exactly one), or no error.
    error: Option<&'static str>,
    tools: usize,
}

fn check(script: &Path, case: &Case) -> Result<(), String> {
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning node: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&case.body)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
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
        Err(e) => return fail(format!("harness printed no JSON ({e})")),
    };
    if result["ok"] != true || !out.status.success() {
        return fail(format!("the AI SDK rejected it: {}", result["error"]));
    }
    if result["done"] != true {
        return fail("no `data: [DONE]`".into());
    }
    let parts = result["message"]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let texts: Vec<String> = parts
        .iter()
        .filter(|p| p["type"] == "text")
        .map(|p| p["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    if texts != case.texts {
        return fail(format!("text parts {texts:?}, expected {:?}", case.texts));
    }
    let tools = parts
        .iter()
        .filter(|p| {
            p["type"].as_str().is_some_and(|t| t.starts_with("tool-"))
                && p["state"] == "output-available"
        })
        .count();
    if tools != case.tools {
        return fail(format!(
            "{tools} finished tool parts, expected {}",
            case.tools
        ));
    }
    let errors: Vec<&str> = result["errorChunks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["errorText"].as_str()).collect())
        .unwrap_or_default();
    match case.error {
        None if !errors.is_empty() => fail(format!("unexpected error chunks {errors:?}")),
        Some(needle) if errors.len() != 1 || !errors[0].contains(needle) => fail(format!(
            "error chunks {errors:?}, expected one with {needle:?}"
        )),
        _ => Ok(()),
    }
}

/// Runs every case (a few node processes at a time) and reports every failure at once.
fn check_all(script: &Path, cases: &[Case]) {
    common::node::check_all("AI SDK", cases, |c| c.name.clone(), |_, c| check(script, c));
}

const OPTIONS: [EncodeOptions; 2] = [
    EncodeOptions {
        event_lines: false,
        tools_as_text: false,
        include_usage: false,
        model: None,
        response_id: None,
        created: None,
    },
    EncodeOptions {
        event_lines: true,
        tools_as_text: false,
        include_usage: false,
        model: None,
        response_id: None,
        created: None,
    },
];

#[test]
fn every_fixture_as_ui_message_is_accepted_by_the_ai_sdk() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for f in fixtures() {
        let parts = expected_text_parts(&f.case);
        let texts = match f.format {
            Format::TextDone => vec![parts.concat()],
            _ => parts.iter().map(|s| s.to_string()).collect(),
        };
        let tools = match (f.case.as_str(), f.format) {
            // text-done has no tool events; OpenAI's streams carry the model's tool calls but
            // never their results (the client runs the tool and sends the output back).
            (_, Format::TextDone | Format::OpenAiChat | Format::OpenAiResponses) => 0,
            ("tool" | "parts" | "state", _) => 1,
            ("steps", _) => 2,
            _ => 0,
        };
        for options in OPTIONS {
            cases.push(Case {
                name: format!("{} (event_lines: {})", f.name(), options.event_lines),
                body: transcode_chunks(
                    f.format,
                    Format::UiMessage,
                    options,
                    DEFAULT_MAX_EVENT_BYTES,
                    [&f.bytes[..]],
                ),
                texts: texts.clone(),
                error: None,
                tools,
            });
        }
    }
    check_all(&script, &cases);
}

#[test]
fn bad_input_and_failed_streams_as_ui_message_are_accepted_by_the_ai_sdk() {
    let Some(script) = harness() else { return };
    let mut cases = Vec::new();
    for (i, bad) in bad_inputs().into_iter().enumerate() {
        cases.push(Case {
            name: format!("bad input {} {}", bad.name, bad.format),
            body: transcode_chunks(
                bad.format,
                Format::UiMessage,
                OPTIONS[i % 2].clone(),
                bad.max_event,
                [&bad.bytes[..]],
            ),
            texts: vec![PARTIAL.to_owned()],
            error: Some(bad.needle),
            tools: 0,
        });
    }
    // An upstream that times out mid-stream, inside a text part, a reasoning part and a tool
    // call's streamed input.
    for f in fixtures()
        .into_iter()
        .filter(|f| f.format == Format::UiMessage)
    {
        for options in OPTIONS {
            let marker: &[u8] = match f.case.as_str() {
                "reasoning" => b"reasoning-delta",
                "tool" | "steps" => b"tool-input-delta",
                _ => b"text-delta",
            };
            let at = f
                .bytes
                .windows(marker.len())
                .position(|w| w == marker)
                .unwrap()
                + 200;
            let mut t = Transcoder::new(f.format, Format::UiMessage, options.clone(), ());
            let mut out = BytesMut::new();
            t.feed(&f.bytes[..at.min(f.bytes.len())], &mut out);
            t.fail("upstream timed out", &mut out);
            // What text the SDK shows is what arrived before the cut: take it from our own
            // output (its parts are checked against the fixtures above).
            let (texts, tools) = texts_and_tools_in(&out);
            cases.push(Case {
                name: format!(
                    "{} failed mid-stream (event_lines: {})",
                    f.name(),
                    options.event_lines
                ),
                body: out.to_vec(),
                texts,
                error: Some("upstream timed out"),
                tools,
            });
        }
    }
    check_all(&script, &cases);
}

/// The text parts of a ui-message body (by part id, in order of first appearance) and how
/// many tool calls have an output.
fn texts_and_tools_in(body: &[u8]) -> (Vec<String>, usize) {
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut tools: Vec<String> = Vec::new();
    for e in agentgate::fuzzing::parse_sse(body) {
        let Ok(c) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        match c["type"].as_str() {
            Some("text-start") => parts.push((id, String::new())),
            Some("text-delta") => {
                if let Some(p) = parts.iter_mut().rev().find(|p| p.0 == id) {
                    p.1.push_str(c["delta"].as_str().unwrap_or_default());
                }
            }
            // One tool part per call, however many (preliminary) outputs it had.
            Some("tool-output-available") => {
                let call = c["toolCallId"].as_str().unwrap_or_default().to_owned();
                if !tools.contains(&call) {
                    tools.push(call);
                }
            }
            _ => {}
        }
    }
    (parts.into_iter().map(|p| p.1).collect(), tools.len())
}

/// The check can fail: the harness's known-invalid samples (`message-start`, a `null`
/// optional field, a delta before its start) are rejected, and a wrong text is caught.
#[test]
fn the_check_rejects_what_the_ai_sdk_rejects() {
    let Some(script) = harness() else { return };
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/samples");
    for name in [
        "invalid-message-start.sse",
        "invalid-null-optional.sse",
        "invalid-delta-before-start.sse",
    ] {
        let case = Case {
            name: name.into(),
            body: std::fs::read(samples.join(name)).unwrap(),
            texts: vec![],
            error: None,
            tools: 0,
        };
        assert!(check(&script, &case).is_err(), "{name} passed the check");
    }
    let f = common::fixture("plain", Format::UiMessage);
    let case = Case {
        name: "wrong text".into(),
        body: f.bytes.clone(),
        texts: vec!["something else".into()],
        error: None,
        tools: 0,
    };
    assert!(check(&script, &case).is_err());
}

/// `cargo test` alone installs the harness: from a copy of `tests/js` without
/// `node_modules`, three callers at once (as test binaries starting together) get it
/// installed once and working — the SDK then parses a stream.
#[test]
fn the_harness_installs_itself_once_for_concurrent_callers() {
    if !common::node::runs("node") || !common::node::runs("npm") {
        assert!(
            std::env::var("CI").is_err(),
            "CI is set and node or npm is missing"
        );
        eprintln!("SKIPPED: node or npm is not on PATH");
        return;
    }
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let copy = tempfile::tempdir().expect("temp dir");
    for file in [
        "package.json",
        "package-lock.json",
        "check-ui-stream.mjs",
        "lib.mjs",
    ] {
        std::fs::copy(js.join(file), copy.path().join(file)).expect("copy tests/js");
    }
    assert!(!copy.path().join("node_modules").exists());
    let results: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..3)
            .map(|_| s.spawn(|| common::node::prepare(copy.path())))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("no panic"))
            .collect()
    });
    for result in results {
        assert_eq!(result.as_deref(), Ok(copy.path()));
    }
    assert!(!copy.path().join(".npm-install.lock").exists(), "lock left");
    let case = Case {
        name: "installed copy".into(),
        body: b"data: {\"type\":\"start\"}\n\ndata: {\"type\":\"text-start\",\"id\":\"t\"}\n\ndata: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"hi\"}\n\ndata: {\"type\":\"text-end\",\"id\":\"t\"}\n\ndata: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n".to_vec(),
        texts: vec!["hi".into()],
        error: None,
        tools: 0,
    };
    check(&copy.path().join("check-ui-stream.mjs"), &case).expect("the installed SDK parses");
}
