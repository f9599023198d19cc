//! Shared by the integration tests: the stream fixtures and what each one carries.
#![allow(dead_code)] // each test binary uses a part

pub mod node;

use std::path::{Path, PathBuf};

use agentgate::formats::Format;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One `tests/fixtures/streams/<case>.<format>.sse`.
pub struct Fixture {
    pub case: String,
    pub format: Format,
    pub bytes: Vec<u8>,
}

impl Fixture {
    pub fn name(&self) -> String {
        format!("{}.{}", self.case, self.format)
    }
}

/// Every stream fixture, sorted by file name.
pub fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir().join("streams");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sse"))
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let mut parts = name.split('.');
            let case = parts.next().unwrap().to_owned();
            let format: Format = parts.next().unwrap().parse().unwrap();
            Fixture {
                case,
                format,
                bytes: std::fs::read(p).unwrap(),
            }
        })
        .collect();
    assert!(
        fixtures.len() >= 10,
        "fixtures missing in {}",
        dir.display()
    );
    fixtures
}

pub fn fixture(case: &str, format: Format) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.case == case && f.format == format)
        .unwrap_or_else(|| panic!("no fixture {case}.{format}"))
}

/// The text parts each case carries, written out by hand (independent of the decoders).
/// A text-done stream has one text part: these joined.
pub fn expected_text_parts(case: &str) -> &'static [&'static str] {
    match case {
        "plain" => &["Hello! Here is a \"quoted\" word,\nand a second line — done."],
        "reasoning" => &["17 × 23 = **391**."],
        "tool" => &["It is 24 °C and clear in Madrid."],
        "steps" => &[
            "Let me look that up.\n\n",
            "The install guide says: run `agentgate serve` with a config file.",
        ],
        "state" => &["Here is a plan for Lisbon.", "Booked 4 nights."],
        // The reset step's text ("DISCARDED draft") is not a part.
        "parts" => &["Here is what I found.", " Two sources."],
        "utf8" => &["Café crème, s'il vous plaît. 日本語のテキスト。👋🏽 👩\u{200d}👩\u{200d}👧\u{200d}👦 🏳\u{fe0f}\u{200d}🌈 ✓ Ünïcödé 😀"],
        other => panic!("no expected text for case {other}"),
    }
}

/// An upstream stream that goes wrong after some text: the output must carry that text,
/// then an error event whose message contains `needle`, then the output format's proper end.
pub struct BadInput {
    pub name: &'static str,
    pub format: Format,
    pub bytes: Vec<u8>,
    pub max_event: usize,
    pub needle: &'static str,
}

/// The text every [`BadInput`] sends before it goes wrong.
pub const PARTIAL: &str = "Partial answer";

pub fn bad_inputs() -> Vec<BadInput> {
    use agentgate::sse::DEFAULT_MAX_EVENT_BYTES as MAX;
    const UI_HEAD: &str = "data: {\"type\":\"start\",\"messageId\":\"msg_bad\"}\n\n\
        data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n\
        data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"Partial answer\"}\n\n";
    const SD_HEAD: &str =
        "event: session\ndata: {\"type\":\"session\",\"sessionKey\":\"api:bad\"}\n\n\
        event: delta\ndata: {\"type\":\"delta\",\"text\":\"Partial answer\"}\n\n";
    const TD_HEAD: &str = "data: {\"type\":\"text\",\"content\":\"Partial answer\"}\n\n";
    const AG_HEAD: &str =
        "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"thread_bad\",\"runId\":\"run_bad\"}\n\n\
        data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"m1\",\"role\":\"assistant\"}\n\n\
        data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"Partial answer\"}\n\n";
    const OC_HEAD: &str = "data: {\"id\":\"chatcmpl-bad\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Partial answer\"},\"finish_reason\":null}]}\n\n";
    const OR_HEAD: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_bad\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]},\"sequence_number\":0}\n\n\
        event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Partial answer\",\"sequence_number\":1}\n\n";
    let big = "x".repeat(4096);
    let case = |name, format, head: &str, tail: &str, max_event, needle| BadInput {
        name,
        format,
        bytes: format!("{head}{tail}").into_bytes(),
        max_event,
        needle,
    };
    vec![
        case(
            "malformed-json",
            Format::UiMessage,
            UI_HEAD,
            "data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"oops}\n\n",
            MAX,
            "malformed JSON",
        ),
        case(
            "malformed-json",
            Format::SessionDelta,
            SD_HEAD,
            "event: delta\ndata: {\"type\":\"delta\",\"text\":\n\n",
            MAX,
            "malformed JSON",
        ),
        case(
            "malformed-json",
            Format::TextDone,
            TD_HEAD,
            "data: not json\n\n",
            MAX,
            "malformed JSON",
        ),
        // An unknown ui-message chunk type is not bad input: it passes on (SPEC §8,
        // tests/ui_chunks.rs).
        case(
            "unknown-type",
            Format::SessionDelta,
            SD_HEAD,
            "event: thinking\ndata: {\"type\":\"thinking\",\"text\":\"hm\"}\n\n",
            MAX,
            "unknown event type `thinking`",
        ),
        case(
            "unknown-type",
            Format::TextDone,
            TD_HEAD,
            "data: {\"type\":\"image\",\"url\":\"https://example.com/a.png\"}\n\n",
            MAX,
            "unknown event type `image`",
        ),
        case(
            "missing-field",
            Format::UiMessage,
            UI_HEAD,
            "data: {\"type\":\"text-delta\",\"id\":\"t1\"}\n\n",
            MAX,
            "without `delta`",
        ),
        case(
            "delta-not-extending",
            Format::SessionDelta,
            SD_HEAD,
            "event: delta\ndata: {\"type\":\"delta\",\"text\":\"Another answer\"}\n\n",
            MAX,
            "does not extend",
        ),
        case(
            "too-large",
            Format::UiMessage,
            UI_HEAD,
            &format!("data: {{\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"{big}\"}}\n\n"),
            1024,
            "larger than 1024 bytes",
        ),
        case(
            "too-large",
            Format::SessionDelta,
            SD_HEAD,
            &format!(
                "event: delta\ndata: {{\"type\":\"delta\",\"text\":\"Partial answer{big}\"}}\n\n"
            ),
            1024,
            "larger than 1024 bytes",
        ),
        case(
            "too-large",
            Format::TextDone,
            TD_HEAD,
            &format!(": {big}\n\n"),
            1024,
            "larger than 1024 bytes",
        ),
        case(
            "upstream-error",
            Format::UiMessage,
            UI_HEAD,
            "data: {\"type\":\"error\",\"errorText\":\"model overloaded\"}\n\ndata: [DONE]\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "upstream-error",
            Format::SessionDelta,
            SD_HEAD,
            "event: error\ndata: {\"type\":\"error\",\"message\":\"model overloaded\"}\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "upstream-error",
            Format::TextDone,
            TD_HEAD,
            "data: {\"type\":\"error\",\"content\":\"model overloaded\"}\n\ndata: [DONE]\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "truncated",
            Format::UiMessage,
            UI_HEAD,
            "data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\" and the rest",
            MAX,
            "before it finished",
        ),
        case(
            "truncated",
            Format::SessionDelta,
            SD_HEAD,
            "event: del",
            MAX,
            "before it finished",
        ),
        case(
            "truncated",
            Format::TextDone,
            TD_HEAD,
            "",
            MAX,
            "before it finished",
        ),
        case(
            "malformed-json",
            Format::AgUi,
            AG_HEAD,
            "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"oops}\n\n",
            MAX,
            "malformed JSON",
        ),
        case(
            "missing-field",
            Format::AgUi,
            AG_HEAD,
            "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\"}\n\n",
            MAX,
            "without `delta`",
        ),
        case(
            "missing-field",
            Format::AgUi,
            AG_HEAD,
            "data: {\"type\":\"TOOL_CALL_ARGS\",\"toolCallId\":\"never-started\",\"delta\":\"{}\"}\n\n",
            MAX,
            "not open",
        ),
        case(
            "too-large",
            Format::AgUi,
            AG_HEAD,
            &format!(
                "data: {{\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"{big}\"}}\n\n"
            ),
            1024,
            "larger than 1024 bytes",
        ),
        case(
            "upstream-error",
            Format::AgUi,
            AG_HEAD,
            "data: {\"type\":\"RUN_ERROR\",\"message\":\"model overloaded\",\"code\":\"overloaded\"}\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "truncated",
            Format::AgUi,
            AG_HEAD,
            "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\" and the rest",
            MAX,
            "before it finished",
        ),
        case(
            "malformed-json",
            Format::OpenAiChat,
            OC_HEAD,
            "data: {\"id\":\"chatcmpl-bad\",\"choices\":[\n\n",
            MAX,
            "malformed JSON",
        ),
        case(
            "malformed-json",
            Format::OpenAiResponses,
            OR_HEAD,
            "event: response.output_text.delta\ndata: {\"type\":\n\n",
            MAX,
            "malformed JSON",
        ),
        case(
            "unknown-type",
            Format::OpenAiResponses,
            OR_HEAD,
            "event: thread.message\ndata: {\"type\":\"thread.message\"}\n\n",
            MAX,
            "unknown event type `thread.message`",
        ),
        case(
            "missing-field",
            Format::OpenAiResponses,
            OR_HEAD,
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":1,\"sequence_number\":2}\n\n",
            MAX,
            "without `item`",
        ),
        case(
            "upstream-error",
            Format::OpenAiChat,
            OC_HEAD,
            "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "upstream-error",
            Format::OpenAiResponses,
            OR_HEAD,
            "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"model overloaded\",\"param\":null,\"sequence_number\":2}\n\n",
            MAX,
            "model overloaded",
        ),
        case(
            "too-large",
            Format::OpenAiChat,
            OC_HEAD,
            &format!(": {big}\n\n"),
            1024,
            "larger than 1024 bytes",
        ),
        case(
            "truncated",
            Format::OpenAiChat,
            OC_HEAD,
            "data: {\"id\":\"chatcmpl-bad\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            MAX,
            "before it finished",
        ),
        case(
            "truncated",
            Format::OpenAiResponses,
            OR_HEAD,
            "event: response.output_text.done\ndata: {\"type\":\"response.output_te",
            MAX,
            "before it finished",
        ),
    ]
}
