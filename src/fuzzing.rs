//! Checks shared by the fuzz target (`fuzz/fuzz_targets/transcode.rs`) and the tests that run
//! its corpus and the fixtures: what every transcoder output must satisfy, whatever the input.
//!
//! Not part of the gateway's API; public only so that `fuzz/` and `tests/` call the same code.

use bytes::BytesMut;

use crate::formats::{EncodeOptions, Event, Format};
use crate::sse::{self, SseError};
use crate::transcode::{decode_all, Transcoder};

/// How [`check_transcode`] cuts its input into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    Whole,
    /// Every chunk this many bytes (the last one shorter).
    Every(usize),
    /// Sizes 1, 2, 3, … 13, then 1 again: chunk ends fall on every kind of boundary.
    Growing,
}

impl Chunking {
    /// The chunks of `input`.
    pub fn split(self, input: &[u8]) -> Vec<&[u8]> {
        match self {
            Chunking::Whole => vec![input],
            Chunking::Every(n) => input.chunks(n.max(1)).collect(),
            Chunking::Growing => {
                let mut out = Vec::new();
                let mut rest = input;
                let mut n = 1;
                while !rest.is_empty() {
                    let (a, b) = rest.split_at(n.min(rest.len()));
                    out.push(a);
                    rest = b;
                    n = n % 13 + 1;
                }
                out
            }
        }
    }
}

/// Runs one transcoder over `chunks` the way the gateway does: one reused output buffer,
/// cleared after each chunk, then `finish`. Returns everything written.
pub fn transcode_chunks<'a>(
    from: Format,
    to: Format,
    options: EncodeOptions,
    max_event_bytes: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut transcoder = Transcoder::with_max_event(from, to, options, (), max_event_bytes);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        transcoder.feed(chunk, &mut buf);
        out.extend_from_slice(&buf);
        buf.clear();
    }
    transcoder.finish(&mut buf);
    out.extend_from_slice(&buf);
    assert!(transcoder.is_done(), "transcoder not done after finish");
    out
}

/// Replaces the ids an encoder makes up (`msg_<32 hex>`, `thread_<32 hex>`, `api:<uuid>`,
/// `chatcmpl-<32 hex>`, `resp_<32 hex>`) by fixed text, so two runs over the same input
/// compare equal. Ids that occur in `input` are left alone: those
/// came from the upstream and must pass through unchanged.
pub fn normalise_generated_ids(output: &[u8], input: &[u8]) -> Vec<u8> {
    fn is_hex(b: u8) -> bool {
        b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
    }
    fn hex_run(s: &[u8], n: usize) -> bool {
        s.len() >= n && s[..n].iter().copied().all(is_hex)
    }
    fn is_uuid(s: &[u8]) -> bool {
        s.len() >= 36
            && [(0, 8), (9, 4), (14, 4), (19, 4), (24, 12)]
                .iter()
                .all(|&(at, n)| hex_run(&s[at..], n))
            && [8, 13, 18, 23].iter().all(|&at| s[at] == b'-')
    }
    let contains = |needle: &[u8]| input.windows(needle.len()).any(|w| w == needle);
    let mut out = Vec::with_capacity(output.len());
    let mut i = 0;
    while i < output.len() {
        let rest = &output[i..];
        let generated = if rest.starts_with(b"msg_") && hex_run(&rest[4..], 32) {
            Some((36, &b"msg_GENERATED"[..]))
        } else if rest.starts_with(b"thread_") && hex_run(&rest[7..], 32) {
            Some((39, &b"thread_GENERATED"[..]))
        } else if rest.starts_with(b"api:") && is_uuid(&rest[4..]) {
            Some((40, &b"api:GENERATED"[..]))
        } else if rest.starts_with(b"chatcmpl-") && hex_run(&rest[9..], 32) {
            Some((41, &b"chatcmpl-GENERATED"[..]))
        } else if rest.starts_with(b"resp_") && hex_run(&rest[5..], 32) {
            Some((37, &b"resp_GENERATED"[..]))
        } else {
            None
        };
        match generated {
            Some((len, with)) if !contains(&rest[..len]) => {
                out.extend_from_slice(with);
                i += len;
            }
            _ => {
                out.push(output[i]);
                i += 1;
            }
        }
    }
    out
}

/// One event of an output stream, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSse {
    pub event: String,
    pub data: String,
}

/// Parses a whole SSE body (as a client would), panicking on a parse error.
pub fn parse_sse(body: &[u8]) -> Vec<OwnedSse> {
    let mut events = Vec::new();
    sse::Parser::new(usize::MAX)
        .feed::<SseError, _>(body, |e| {
            events.push(OwnedSse {
                event: e.event.to_owned(),
                data: e.data.to_owned(),
            });
            Ok(())
        })
        .expect("output is not valid SSE");
    events
}

/// Asserts that `output` is a complete, well-formed stream in `format`: only `event:`/`data:`
/// lines ended by `\n`, every event terminated, one terminal event at the very end (ui-message
/// and text-done: then `data: [DONE]`; session-delta: `session` first, `done` last), and our
/// own decoder for `format` reads it back without error. The OpenAI formats: see
/// [`assert_openai_well_formed`].
pub fn assert_well_formed(format: Format, output: &[u8]) {
    let text = std::str::from_utf8(output).expect("output is not UTF-8");
    assert!(
        text.ends_with("\n\n"),
        "output does not end with a complete event: {text:?}"
    );
    assert!(!text.contains('\r'), "output holds a CR: {text:?}");
    for line in text.split('\n') {
        assert!(
            line.is_empty() || line.starts_with("data: ") || line.starts_with("event: "),
            "unexpected output line {line:?}"
        );
    }
    let events = parse_sse(output);
    if matches!(format, Format::OpenAiChat | Format::OpenAiResponses) {
        assert_openai_well_formed(format, &events);
    } else {
        assert_typed_well_formed(format, &events);
    }
    let decoded = decode_all(format, output)
        .unwrap_or_else(|e| panic!("our {format} decoder rejects our {format} output: {e}"));
    let terminals = decoded.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminals, 1, "{decoded:?}");
    assert!(
        decoded.last().is_some_and(Event::is_terminal),
        "{decoded:?}"
    );
}

/// openai-chat: `chat.completion.chunk` objects with one `id`, `created` and `model`, the
/// role in the first chunk's delta, one chunk with a `finish_reason` (then at most the usage
/// chunk, `choices: []`) or one `{"error":…}`, then `data: [DONE]` once, last.
/// openai-responses: `event:` lines equal to `type`, `sequence_number` 0, 1, 2, …,
/// `response.created` first, and one `response.completed` / `.incomplete` / `.failed`, last.
fn assert_openai_well_formed(format: Format, events: &[OwnedSse]) {
    use serde_json::Value;
    assert!(!events.is_empty(), "empty output");
    let parse = |e: &OwnedSse| -> Value {
        serde_json::from_str(&e.data)
            .unwrap_or_else(|err| panic!("data is not JSON ({err}): {:?}", e.data))
    };
    if format == Format::OpenAiChat {
        let (last, body) = events.split_last().unwrap_or_else(|| unreachable!());
        assert_eq!(last.data, "[DONE]", "{events:?}");
        let chunks: Vec<Value> = body.iter().map(parse).collect();
        assert!(!chunks.is_empty(), "{events:?}");
        let mut ends = 0;
        for (i, c) in chunks.iter().enumerate() {
            if c.get("error").is_some() {
                assert_eq!(i, chunks.len() - 1, "error not last: {events:?}");
                assert!(c["error"]["message"].is_string(), "{c}");
                ends += 1;
                continue;
            }
            assert_eq!(c["object"], "chat.completion.chunk", "{c}");
            for key in ["id", "model"] {
                assert!(c[key].is_string(), "{key}: {c}");
                assert_eq!(c[key], chunks[0][key], "{key} changes: {c}");
            }
            assert!(c["created"].is_u64(), "{c}");
            let choices = c["choices"].as_array().expect("choices");
            if choices.is_empty() {
                assert!(c["usage"]["total_tokens"].is_u64(), "{c}");
                assert_eq!(ends, 1, "usage chunk before the finish: {events:?}");
                continue;
            }
            assert_eq!(ends, 0, "chunk after the end: {events:?}");
            assert_eq!(choices.len(), 1, "{c}");
            assert_eq!(choices[0]["index"], 0, "{c}");
            assert!(choices[0]["delta"].is_object(), "{c}");
            assert_eq!(
                choices[0]["delta"].get("role").is_some(),
                i == 0,
                "role not (only) in the first delta: {c}"
            );
            if !choices[0]["finish_reason"].is_null() {
                ends += 1;
            }
        }
        assert_eq!(ends, 1, "{events:?}");
    } else {
        let typed: Vec<Value> = events.iter().map(parse).collect();
        for (i, (e, v)) in events.iter().zip(&typed).enumerate() {
            let ty = v["type"].as_str().expect("type");
            assert_eq!(e.event, ty, "`event:` line disagrees with `type`");
            assert_eq!(v["sequence_number"], i, "{v}");
        }
        assert_eq!(typed[0]["type"], "response.created", "{events:?}");
        let terminal = [
            "response.completed",
            "response.incomplete",
            "response.failed",
        ];
        let ends = typed
            .iter()
            .filter(|v| terminal.iter().any(|t| v["type"] == *t))
            .count();
        assert_eq!(ends, 1, "{events:?}");
        let last = &typed[typed.len() - 1];
        assert!(terminal.iter().any(|t| last["type"] == *t), "{events:?}");
        assert_eq!(last["response"]["id"], typed[0]["response"]["id"]);
    }
}

fn assert_typed_well_formed(format: Format, events: &[OwnedSse]) {
    let types: Vec<String> = events
        .iter()
        .map(|e| {
            if e.data == "[DONE]" {
                return "[DONE]".to_owned();
            }
            // A JSON object with a string `type`. The other fields are only checked for
            // syntax (JSON numbers have no range: `1e400` is valid, JSON.parse reads it as
            // Infinity, though serde_json's Value cannot hold it).
            #[derive(serde::Deserialize)]
            struct Typed {
                #[serde(rename = "type")]
                ty: String,
            }
            let typed: Typed = serde_json::from_str(&e.data).unwrap_or_else(|err| {
                panic!(
                    "data is not a JSON object with a `type` ({err}): {:?}",
                    e.data
                )
            });
            if e.event != "message" {
                assert_eq!(e.event, typed.ty, "`event:` line disagrees with `type`");
            }
            typed.ty
        })
        .collect();
    let t: Vec<&str> = types.iter().map(String::as_str).collect();
    let terminal: &[&str] = match format {
        Format::UiMessage => &["finish", "error", "abort"],
        Format::AgUi => &["RUN_FINISHED", "RUN_ERROR"],
        _ => &["done"],
    };
    match format {
        Format::UiMessage | Format::TextDone => {
            assert!(t.len() >= 2, "too short: {t:?}");
            assert_eq!(t[t.len() - 1], "[DONE]", "{t:?}");
            assert!(terminal.contains(&t[t.len() - 2]), "{t:?}");
            assert_eq!(t.iter().filter(|x| **x == "[DONE]").count(), 1, "{t:?}");
            let ends = t[..t.len() - 1].iter().filter(|x| terminal.contains(x));
            assert_eq!(ends.count(), 1, "{t:?}");
            if format == Format::UiMessage {
                assert_eq!(t[0], "start", "{t:?}");
            }
        }
        Format::AgUi => {
            assert_eq!(t.first(), Some(&"RUN_STARTED"), "{t:?}");
            assert!(t.last().is_some_and(|x| terminal.contains(x)), "{t:?}");
            let ends = t.iter().filter(|x| terminal.contains(x));
            assert_eq!(ends.count(), 1, "{t:?}");
            assert_eq!(
                t.iter().filter(|x| **x == "RUN_STARTED").count(),
                1,
                "{t:?}"
            );
            assert!(!t.contains(&"[DONE]"), "{t:?}");
        }
        _ => {
            assert_eq!(t.first(), Some(&"session"), "{t:?}");
            assert_eq!(t.last(), Some(&"done"), "{t:?}");
            assert_eq!(t.iter().filter(|x| **x == "done").count(), 1, "{t:?}");
            assert_eq!(t.iter().filter(|x| **x == "session").count(), 1, "{t:?}");
        }
    }
}

/// The fuzz target's body. `data[0]` picks the input format (`% 6`), the output format
/// (`/ 6 % 6`), and from `data[0] / 36` (0..=7) the chunking, the flags (ui-message `event:`
/// lines and the openai-chat usage chunk) and a small (256-byte) event bound:
///
/// | `/ 36` | chunking | flags | bound |
/// |---|---|---|---|
/// | 0 | 1 byte | | |
/// | 1 | 2 bytes | yes | |
/// | 2 | 2 bytes | | 256 |
/// | 3 | 7 bytes | yes | 256 |
/// | 4 | 64 bytes | | |
/// | 5 | growing | | |
/// | 6 | whole | | |
/// | 7 (`252..=255` only) | 1 byte | yes | 256 |
///
/// The rest is upstream bytes. Checks that the output is well formed
/// ([`assert_well_formed`]) and that it does not depend on how the input was cut into chunks.
pub fn check_transcode(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let n = Format::ALL.len() as u8;
    let from = Format::ALL[usize::from(selector % n)];
    let to = Format::ALL[usize::from(selector / n % n)];
    let (chunking, flags, bound) = match selector / (n * n) {
        0 => (Chunking::Every(1), false, false),
        1 => (Chunking::Every(2), true, false),
        2 => (Chunking::Every(2), false, true),
        3 => (Chunking::Every(7), true, true),
        4 => (Chunking::Every(64), false, false),
        5 => (Chunking::Growing, false, false),
        6 => (Chunking::Whole, false, false),
        _ => (Chunking::Every(1), true, true),
    };
    let options = EncodeOptions {
        event_lines: flags,
        include_usage: flags,
        // A fixed clock: whole and chunked runs must compare equal.
        created: Some(1_700_000_000),
        ..Default::default()
    };
    let max_event = if bound {
        256
    } else {
        sse::DEFAULT_MAX_EVENT_BYTES
    };
    let whole = transcode_chunks(from, to, options.clone(), max_event, [input]);
    assert_well_formed(to, &whole);
    if chunking != Chunking::Whole {
        let chunked = transcode_chunks(from, to, options, max_event, chunking.split(input));
        assert_eq!(
            String::from_utf8_lossy(&normalise_generated_ids(&chunked, input)),
            String::from_utf8_lossy(&normalise_generated_ids(&whole, input)),
            "output depends on chunking ({chunking:?})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_normalised_but_upstream_ids_kept() {
        let out = b"msg_0123456789abcdef0123456789abcdef api:550e8400-e29b-41d4-a716-446655440000 \
                    msg_ffffffffffffffffffffffffffffffff";
        let input = b"x msg_ffffffffffffffffffffffffffffffff";
        let got = normalise_generated_ids(out, input);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "msg_GENERATED api:GENERATED msg_ffffffffffffffffffffffffffffffff"
        );
    }

    #[test]
    fn chunkings_cover_the_input() {
        let input: Vec<u8> = (0..100).collect();
        for c in [
            Chunking::Whole,
            Chunking::Every(1),
            Chunking::Every(7),
            Chunking::Growing,
        ] {
            assert_eq!(c.split(&input).concat(), input, "{c:?}");
        }
    }

    #[test]
    #[should_panic(expected = "[DONE]")]
    fn a_ui_stream_without_done_is_rejected() {
        assert_well_formed(
            Format::UiMessage,
            b"data: {\"type\":\"start\",\"messageId\":\"m\"}\n\ndata: {\"type\":\"finish\"}\n\n",
        );
    }
}
