//! Bad upstream input: malformed SSE (an event past the size bound), malformed JSON, unknown
//! event types, missing fields, a session-delta `delta` that does not extend the text, upstream
//! error events and truncated streams. Whatever goes wrong, the output keeps what came before,
//! then has an error event in its own format, then that format's proper end — under every
//! chunking — and nothing panics.

mod common;

use agentgate::formats::{EncodeOptions, Format};
use agentgate::fuzzing::{
    assert_well_formed, normalise_generated_ids, parse_sse, transcode_chunks, OwnedSse,
};
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;
use agentgate::transcode::Transcoder;
use bytes::BytesMut;
use serde_json::Value;

use common::{bad_inputs, fixtures, PARTIAL};

fn json(e: &OwnedSse) -> Value {
    serde_json::from_str(&e.data).unwrap_or(Value::Null)
}

/// The output ends with an error event whose message contains `needle`, then the format's
/// proper end. Returns the text that the output carried before it.
fn assert_error_then_end(to: Format, out: &[u8], needle: &str) -> String {
    assert_well_formed(to, out);
    let events = parse_sse(out);
    let n = events.len();
    let (error, text) = match to {
        Format::UiMessage => {
            let e = json(&events[n - 2]);
            assert_eq!(e["type"], "error", "{events:?}");
            let text: String = events
                .iter()
                .map(json)
                .filter(|c| c["type"] == "text-delta")
                .map(|c| c["delta"].as_str().unwrap().to_owned())
                .collect();
            (e["errorText"].as_str().unwrap().to_owned(), text)
        }
        Format::SessionDelta => {
            assert_eq!(events[n - 2].event, "error", "{events:?}");
            let e = json(&events[n - 2]);
            let done = json(&events[n - 1]);
            assert_eq!(done["finishReason"], "error", "{events:?}");
            let text = events
                .iter()
                .rev()
                .map(json)
                .find(|c| c["type"] == "delta")
                .map(|c| c["text"].as_str().unwrap().to_owned())
                .unwrap_or_default();
            (e["message"].as_str().unwrap().to_owned(), text)
        }
        Format::TextDone => {
            let e = json(&events[n - 3]);
            assert_eq!(e["type"], "error", "{events:?}");
            assert_eq!(json(&events[n - 2])["finishReason"], "error");
            let text: String = events
                .iter()
                .map(json)
                .filter(|c| c["type"] == "text")
                .map(|c| c["content"].as_str().unwrap().to_owned())
                .collect();
            (e["content"].as_str().unwrap().to_owned(), text)
        }
        Format::AgUi => {
            let e = json(&events[n - 1]);
            assert_eq!(e["type"], "RUN_ERROR", "{events:?}");
            let text: String = events
                .iter()
                .map(json)
                .filter(|c| c["type"] == "TEXT_MESSAGE_CONTENT")
                .map(|c| c["delta"].as_str().unwrap().to_owned())
                .collect();
            (e["message"].as_str().unwrap().to_owned(), text)
        }
        Format::OpenAiChat => {
            assert_eq!(events[n - 1].data, "[DONE]", "{events:?}");
            let e = json(&events[n - 2]);
            let text: String = events
                .iter()
                .map(json)
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            (e["error"]["message"].as_str().unwrap().to_owned(), text)
        }
        Format::OpenAiResponses => {
            let e = json(&events[n - 1]);
            assert_eq!(e["type"], "response.failed", "{events:?}");
            assert_eq!(e["response"]["status"], "failed", "{events:?}");
            let text: String = events
                .iter()
                .map(json)
                .filter(|c| c["type"] == "response.output_text.delta")
                .map(|c| c["delta"].as_str().unwrap().to_owned())
                .collect();
            (
                e["response"]["error"]["message"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                text,
            )
        }
    };
    assert!(
        error.contains(needle),
        "error {error:?} does not mention {needle:?}"
    );
    text
}

#[test]
fn bad_input_gives_an_error_event_then_a_proper_end_in_every_format() {
    for bad in bad_inputs() {
        for to in Format::ALL {
            let whole = transcode_chunks(
                bad.format,
                to,
                fixed_clock(),
                bad.max_event,
                [&bad.bytes[..]],
            );
            let text = assert_error_then_end(to, &whole, bad.needle);
            assert_eq!(text, PARTIAL, "{} {} → {to}", bad.name, bad.format);
            let expected = normalise_generated_ids(&whole, &bad.bytes);
            for at in 0..=bad.bytes.len() {
                let (a, b) = bad.bytes.split_at(at);
                let split = transcode_chunks(bad.format, to, fixed_clock(), bad.max_event, [a, b]);
                assert_eq!(
                    String::from_utf8_lossy(&normalise_generated_ids(&split, &bad.bytes)),
                    String::from_utf8_lossy(&expected),
                    "{} {} → {to}: split at {at}",
                    bad.name,
                    bad.format
                );
            }
        }
    }
}

#[test]
fn the_transcoder_reports_which_decode_error_ended_the_stream() {
    for bad in bad_inputs() {
        let mut t = Transcoder::with_max_event(
            bad.format,
            Format::UiMessage,
            fixed_clock(),
            (),
            bad.max_event,
        );
        let mut out = BytesMut::new();
        t.feed(&bad.bytes, &mut out);
        t.finish(&mut out);
        let kind = t.error().map(|e| e.kind());
        let expected = match bad.name {
            "malformed-json" => Some("json"),
            "unknown-type" => Some("unknown_type"),
            "missing-field" | "delta-not-extending" => Some("protocol"),
            "too-large" => Some("sse"),
            "truncated" => Some("truncated"),
            "upstream-error" => None, // the upstream said so itself: not a decode error
            other => panic!("unclassified case {other}"),
        };
        assert_eq!(kind, expected, "{} {}", bad.name, bad.format);
    }
}

/// Finds where the fixture's terminal event (`finish`, or `done`) is dispatched: just past
/// the first byte of the blank line that ends it. Cut before that, the upstream is truncated.
fn terminal_end(bytes: &[u8], format: Format) -> usize {
    let marker: &[u8] = match format {
        Format::UiMessage => b"{\"type\":\"finish\"",
        Format::AgUi => b"{\"type\":\"RUN_FINISHED\"",
        // The answer finishes at `[DONE]` (a usage chunk may follow the finish reason).
        Format::OpenAiChat => b"data: [DONE]",
        Format::OpenAiResponses => b"{\"type\":\"response.completed\"",
        _ => b"{\"type\":\"done\"",
    };
    let start = bytes
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("fixture without a terminal event");
    let line_end = start
        + bytes[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .unwrap();
    let blank = if bytes[line_end..].starts_with(b"\r\n") {
        line_end + 2
    } else {
        line_end + 1
    };
    blank + 1
}

/// An upstream that stops at any byte: the output always ends properly; before the terminal
/// event it ends with the truncation error, from it on it is the whole stream's output.
#[test]
fn a_fixture_cut_at_every_offset_always_ends_properly() {
    for f in fixtures() {
        let end = terminal_end(&f.bytes, f.format);
        for to in Format::ALL {
            let whole = normalise_generated_ids(
                &transcode_chunks(
                    f.format,
                    to,
                    fixed_clock(),
                    DEFAULT_MAX_EVENT_BYTES,
                    [&f.bytes[..]],
                ),
                &f.bytes,
            );
            for cut in 0..f.bytes.len() {
                let prefix = &f.bytes[..cut];
                let out = transcode_chunks(
                    f.format,
                    to,
                    fixed_clock(),
                    DEFAULT_MAX_EVENT_BYTES,
                    [prefix],
                );
                if cut < end {
                    assert_error_then_end(to, &out, "before it finished");
                } else {
                    assert_eq!(
                        String::from_utf8_lossy(&normalise_generated_ids(&out, &f.bytes)),
                        String::from_utf8_lossy(&whole),
                        "{} → {to} cut at {cut} (terminal event ends at {end})",
                        f.name()
                    );
                }
            }
        }
    }
}

/// `fail` (e.g. an upstream timeout) mid-stream ends every output format properly; after the
/// end, further input and failures write nothing.
#[test]
fn fail_mid_stream_ends_properly_and_then_nothing_more_is_written() {
    for f in fixtures() {
        for to in Format::ALL {
            let mut t = Transcoder::new(f.format, to, fixed_clock(), ());
            let mut out = BytesMut::new();
            t.feed(&f.bytes[..f.bytes.len() / 3], &mut out);
            t.fail("upstream timed out after 30 s", &mut out);
            assert_error_then_end(to, &out, "upstream timed out");
            let len = out.len();
            t.feed(&f.bytes[f.bytes.len() / 3..], &mut out);
            t.fail("again", &mut out);
            t.finish(&mut out);
            assert_eq!(out.len(), len, "{} → {to}: wrote after the end", f.name());
        }
    }
}

/// An upstream `abort` (ui-message) ends every output format properly, without an error.
#[test]
fn an_upstream_abort_ends_every_format_properly() {
    let input = b"data: {\"type\":\"start\",\"messageId\":\"m1\"}\n\n\
        data: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"Hi\"}\n\n\
        data: {\"type\":\"abort\",\"reason\":\"user stopped\"}\n\ndata: [DONE]\n\n";
    for to in Format::ALL {
        let out = transcode_chunks(
            Format::UiMessage,
            to,
            fixed_clock(),
            DEFAULT_MAX_EVENT_BYTES,
            [&input[..]],
        );
        assert_well_formed(to, &out);
        let last: Vec<Value> = parse_sse(&out).iter().map(json).collect();
        let terminal = match to {
            Format::UiMessage => &last[last.len() - 2],
            Format::SessionDelta => &last[last.len() - 1],
            Format::TextDone => &last[last.len() - 2],
            Format::AgUi => &last[last.len() - 1],
            Format::OpenAiChat => &last[last.len() - 2],
            Format::OpenAiResponses => &last[last.len() - 1],
        };
        match to {
            Format::UiMessage => assert_eq!(terminal["type"], "abort"),
            Format::AgUi => {
                assert_eq!(terminal["type"], "RUN_FINISHED");
                assert_eq!(terminal["outcome"]["type"], "cancelled");
            }
            // No abort in Chat Completions: the answer stops.
            Format::OpenAiChat => assert_eq!(terminal["choices"][0]["finish_reason"], "stop"),
            Format::OpenAiResponses => {
                assert_eq!(terminal["type"], "response.incomplete");
                assert_eq!(terminal["response"]["status"], "incomplete");
            }
            _ => assert_eq!(terminal["finishReason"], "interrupted"),
        }
    }
}

/// Seed 004 does not show a `toolCallId`: a `tool` result without one belongs to the `tool`
/// start before it (not to a call of its own).
#[test]
fn session_delta_tool_events_without_ids_pair_start_and_result() {
    let input = b"event: session\ndata: {\"type\":\"session\",\"sessionKey\":\"api:k\"}\n\n\
        event: tool\ndata: {\"type\":\"tool\",\"phase\":\"start\",\"name\":\"search\",\"input\":{\"q\":\"a\"}}\n\n\
        event: tool\ndata: {\"type\":\"tool\",\"phase\":\"result\",\"output\":[1]}\n\n\
        event: tool\ndata: {\"type\":\"tool\",\"phase\":\"start\",\"name\":\"fetch\",\"input\":{}}\n\n\
        event: tool\ndata: {\"type\":\"tool\",\"phase\":\"result\",\"output\":[2]}\n\n\
        event: done\ndata: {\"type\":\"done\"}\n\n";
    let out = transcode_chunks(
        Format::SessionDelta,
        Format::UiMessage,
        fixed_clock(),
        DEFAULT_MAX_EVENT_BYTES,
        [&input[..]],
    );
    assert_well_formed(Format::UiMessage, &out);
    let chunks: Vec<Value> = parse_sse(&out).iter().map(json).collect();
    let ids = |ty: &str| -> Vec<String> {
        chunks
            .iter()
            .filter(|c| c["type"] == ty)
            .map(|c| c["toolCallId"].as_str().unwrap().to_owned())
            .collect()
    };
    let starts = ids("tool-input-available");
    assert_eq!(starts.len(), 2);
    assert_ne!(starts[0], starts[1]);
    assert_eq!(ids("tool-output-available"), starts);
}

/// The binary: bad input is a clear message on stderr and a non-zero exit, after a properly
/// ended output; bad arguments too.
#[test]
fn cli_reports_bad_input_and_bad_arguments() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_agentgate");
    let mut child = Command::new(bin)
        .args(["transcode", "--from", "text-done", "--to", "ui-message"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"data: {\"type\":\"text\",\"content\":\"Hi\"}\n\ndata: {oops\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_error_then_end(Format::UiMessage, &out.stdout, "malformed JSON");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad input: malformed JSON"), "{stderr}");

    let out = Command::new(bin)
        .args(["transcode", "--from", "ui-message", "--to", "json:soap"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown API `soap`"), "{stderr}");
}

/// Default options with a fixed `created` (the OpenAI encoders' clock), so that two runs
/// compare equal.
fn fixed_clock() -> EncodeOptions {
    EncodeOptions {
        created: Some(1_700_000_000),
        ..Default::default()
    }
}
