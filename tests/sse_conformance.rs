//! SSE conformance vectors for [`agentgate::sse::Parser`], ported from two public suites:
//!
//! - the `eventsource-parser` npm package (rexxars/eventsource-parser, `test/parse.test.ts` with
//!   its stream builders in `test/fixtures.ts`): basic unnamed events, `time` event names,
//!   identified events + retry, heartbeat comments, multi-line data, multi-byte events (and
//!   with empty lines), leading BOM, BOM in several places, CR / LF / CRLF line ends, odd
//!   comments, more odd comments (NUL in a comment, 2 KiB comments split over chunks, last
//!   event unterminated), empty `event` field, empty `retry`, oddly shaped `data` fields,
//!   CR at a chunk end + LF at the next start, partially incorrect and incorrect `retry`, `id`
//!   with NUL ignored, `id` from a block without data, `id` with CR/CRLF ends, unknown fields,
//!   invalid (non-SSE) bodies with and without a newline, every "discarded line" CR/CRLF
//!   case, `data` with no colon ended by CR at a chunk boundary, a blank CR line at a chunk
//!   end, and (as our bound, [`SseError::EventTooLarge`]) the `maxBufferSize` cases. The
//!   10 MB "huge data" case is ported at 256 KiB.
//! - the WHATWG HTML standard's event-stream examples (§ "Interpreting an event stream"):
//!   the stock ticker (`YHOO`/`+2`/`10`), the four-block "test stream" (comment, `id: 1`,
//!   empty `id`, two leading spaces), `data` / `data`+`data` / unterminated `data:`,
//!   `data:test` vs `data: test`, and the `add`/`remove` named events.
//!
//! Not ported: callbacks our API does not have (`onComment`, `onError` for unknown fields,
//! `reset()`, `onId` — the id is checked on the next event instead, where it persists).
//! Each vector runs whole, in 1-byte and 2-byte chunks, and in the chunks the suite used.

use agentgate::sse::{Parser, SseError, DEFAULT_MAX_EVENT_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    event: String,
    data: String,
    id: Option<String>,
    retry: Option<u64>,
}

fn ev(data: &str) -> Ev {
    Ev {
        event: "message".into(),
        data: data.into(),
        id: None,
        retry: None,
    }
}

impl Ev {
    fn event(mut self, e: &str) -> Self {
        self.event = e.into();
        self
    }
    fn id(mut self, id: &str) -> Self {
        self.id = Some(id.into());
        self
    }
    fn retry(mut self, ms: u64) -> Self {
        self.retry = Some(ms);
        self
    }
}

fn done() -> Ev {
    ev("✔").event("done")
}

struct Vector {
    name: &'static str,
    /// The input as the suite fed it (concatenated for the whole-input run).
    chunks: Vec<Vec<u8>>,
    expected: Vec<Ev>,
}

fn v(name: &'static str, chunks: &[&str], expected: Vec<Ev>) -> Vector {
    Vector {
        name,
        chunks: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
        expected,
    }
}

fn parse(max: usize, chunks: &[&[u8]]) -> Result<Vec<Ev>, SseError> {
    let mut parser = Parser::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed::<SseError, _>(chunk, |e| {
            out.push(Ev {
                event: e.event.into(),
                data: e.data.into(),
                id: e.id.map(Into::into),
                retry: e.retry,
            });
            Ok(())
        })?;
    }
    Ok(out)
}

/// The chunkings every vector runs under.
fn chunkings(v: &Vector) -> Vec<(String, Vec<Vec<u8>>)> {
    let whole = v.chunks.concat();
    vec![
        ("whole".into(), vec![whole.clone()]),
        (
            "1-byte".into(),
            whole.chunks(1).map(<[u8]>::to_vec).collect(),
        ),
        (
            "2-byte".into(),
            whole.chunks(2).map(<[u8]>::to_vec).collect(),
        ),
        ("as the suite fed it".into(), v.chunks.clone()),
    ]
}

fn run(vectors: Vec<Vector>) {
    for vector in &vectors {
        for (how, chunks) in chunkings(vector) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let got = parse(DEFAULT_MAX_EVENT_BYTES, &refs)
                .unwrap_or_else(|e| panic!("{} ({how}): {e}", vector.name));
            assert_eq!(got, vector.expected, "{} ({how})", vector.name);
        }
    }
}

const BOM: &str = "\u{FEFF}";

#[test]
fn eventsource_parser_suite() {
    let multibyte_lines = [
        "我現在都看實況不玩遊戲",
        "Привет, мир — 🦄🌈",
        "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👋🏽 wave",
        "日本語 ✓ ünïcödé",
    ];
    let mut multibyte_chunks: Vec<String> = Vec::new();
    let mut multibyte_expected = Vec::new();
    for (i, line) in multibyte_lines.iter().enumerate() {
        multibyte_chunks.push(format!("id: {i}\n"));
        if i % 2 == 0 {
            // Split into two data lines after 5 characters, as the suite does.
            let at = line.char_indices().nth(5).unwrap().0;
            multibyte_chunks.push(format!("data:{}\n", &line[..at]));
            multibyte_chunks.push(format!("data:{}\n\n", &line[at..]));
            multibyte_expected
                .push(ev(&format!("{}\n{}", &line[..at], &line[at..])).id(&i.to_string()));
        } else {
            multibyte_chunks.push(format!("data:{line}\n\n"));
            multibyte_expected.push(ev(line).id(&i.to_string()));
        }
    }
    multibyte_chunks.push("event: done\ndata: ✔\n\n".into());
    multibyte_expected.push(done().id("3"));
    let multibyte_refs: Vec<&str> = multibyte_chunks.iter().map(String::as_str).collect();

    let x2049 = "x".repeat(2 * 1024 + 1);
    let emojis = "🦄 🌈 👋🏽 👩‍👩‍👧‍👦 🏳️‍🌈 ".repeat(20);
    let colons = ":".repeat(300);
    let comment_emojis = format!(": {emojis} :");
    let comments: Vec<&str> = [
        &[
            ": Hello\n\n",
            &colons,
            "\n",
            "data: First\n\n",
            ": Первый",
            ": 第二",
            "\n",
        ][..],
        &["data: Second\n\n"],
        &[": Moop \n"; 10],
        &[
            ": ثالث",
            "\n",
            "data: Third\n\n",
            ":നാലാമത്തെ",
            "\n",
            "data: Fourth\n\n",
        ],
        &[
            &comment_emojis,
            "\n",
            "data: Fifth\n\n",
            "event: done\ndata: ✔\n\n",
        ],
    ]
    .concat();
    let mixed_1 = format!("\rdata:3\n\n:data:fail\r:{x2049}");

    run(vec![
        v(
            "basic unnamed events stream",
            &["data: 0\n\n", "data: 1\n\n", "data: 2\n\n", "data: 3\n\n", "data: 4\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("0"), ev("1"), ev("2"), ev("3"), ev("4"), done()],
        ),
        v(
            "stream of `time` event name",
            &[
                "event: time\ndata: 2024-05-01T10:00:00.000Z\n\n",
                "event: time\ndata: 2024-05-01T10:00:00.250Z\n\n",
                "event: done\ndata: ✔\n\n",
            ],
            vec![
                ev("2024-05-01T10:00:00.000Z").event("time"),
                ev("2024-05-01T10:00:00.250Z").event("time"),
                done(),
            ],
        ),
        v(
            "stream of `time` event names, unbalanced chunks",
            &["id: 8812", "3\nevent: time\ndata: 2024-05-01T10:", "00:00.000Z\n\nid: 5\nev", "ent: time\ndata: 2024-05-01T10:00:00.030Z\n", "\n"],
            vec![
                ev("2024-05-01T10:00:00.000Z").event("time").id("88123"),
                ev("2024-05-01T10:00:00.030Z").event("time").id("5"),
            ],
        ),
        v(
            "stream of identified messages + retry interval",
            &[
                "event: tick\nid: 1337\nretry: 50\ndata: 1337\n\n",
                "event: tick\nid: 1338\nretry: 50\ndata: 1338\n\n",
            ],
            vec![
                ev("1337").event("tick").id("1337").retry(50),
                ev("1338").event("tick").id("1338").retry(50),
            ],
        ),
        v(
            "stream of heartbeat comments, unnamed events",
            &[
                ": ♥\n", "data: A\n\n", ": ♥\n", "data: B\n\n", ": ♥\n", "data: C\n\n",
                ": ♥\n", "data: D\n\n", ": ♥\n", "data: E\n\n", "event: done\ndata: ✔\n\n",
            ],
            vec![ev("A"), ev("B"), ev("C"), ev("D"), ev("E"), done()],
        ),
        v(
            "stream of multi-line data events",
            &[
                "event: stock\n", "data: YHOO\n", "data: +2\n", "data: 10\n\n",
                "event: stock\n", "data: GOOG\n", "data: -8\n", "data: 1881\n\n",
                "event: done\ndata: ✔\n\n",
            ],
            vec![
                ev("YHOO\n+2\n10").event("stock"),
                ev("GOOG\n-8\n1881").event("stock"),
                done(),
            ],
        ),
        v("stream of multi-byte events", &multibyte_refs, multibyte_expected),
        v(
            "stream of multi-byte events with some empty lines thrown in",
            &["\n\n\n\nid: 1\ndata: 我現在都看實況不玩遊戲\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("我現在都看實況不玩遊戲").id("1"), done().id("1")],
        ),
        v(
            "stream of leading bom",
            &[&format!("{BOM}data: bomful 1\n\n"), "data: bomless 2\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("bomful 1"), ev("bomless 2"), done()],
        ),
        v(
            "stream containing byte-order mark (multiple places)",
            &[
                &format!("{BOM}data: bomful 1\n\n"),
                &format!("{BOM}data: bomful 2\n\n"),
                "data: bomless 3\n\n",
                "event: done\ndata: ✔\n\n",
            ],
            vec![ev("bomful 1"), ev("bomless 3"), done()],
        ),
        v(
            "stream using carriage returns",
            &["data: dog\r", "data: bark\r\r", "data: cat\r", "data: meow\r\r", "event: done\ndata: ✔\n\n"],
            vec![ev("dog\nbark"), ev("cat\nmeow"), done()],
        ),
        v(
            "stream using line feeds",
            &["data: cow\n", "data: moo\n\n", "data: horse\n", "data: neigh\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("cow\nmoo"), ev("horse\nneigh"), done()],
        ),
        v(
            "stream using carriage returns and line feeds",
            &["data: sheep\r\n", "data: bleat\r\n\r\n", "data: pig\r\n", "data: oink\r\n\r\n", "event: done\ndata: ✔\n\n"],
            vec![ev("sheep\nbleat"), ev("pig\noink"), done()],
        ),
        v(
            "stream with varying odd uses of comments",
            &comments,
            vec![ev("First"), ev("Second"), ev("Third"), ev("Fourth"), ev("Fifth"), done()],
        ),
        v(
            "stream with even more odd uses of comments",
            &["data:1\r\r:\0\n:\r\ndata:2\n\n:", &x2049, &mixed_1, &x2049, "\ndata:4\n\n", "data:5"],
            vec![ev("1"), ev("2"), ev("3"), ev("4")], // 5 has no blank line: not dispatched
        ),
        v(
            "stream with empty `event` field",
            &["event:\ndata: Hello 1\n\n", "event:\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("Hello 1"), done()],
        ),
        v(
            "stream with empty `retry` field",
            &["id: 1\nretry: 500\ndata: 🥌\n\n", "id:2\nretry:\ndata:🧹\n\n", "id: 3\ndata: ✅\n\n"],
            vec![
                ev("🥌").id("1").retry(500),
                ev("🧹").id("2").retry(500), // an empty retry is ignored
                ev("✅").id("3").retry(500),
            ],
        ),
        v(
            "stream with oddly shaped data field",
            &["data:\n\ndata\ndata\n\ndata:test\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev(""), ev("\n"), ev("test"), done()],
        ),
        v(
            "stream with cr separating chunks of same event",
            &["data: A\r\n", "data: B\r", "\n", "data: C\r\n", "\n"],
            vec![ev("A\nB\nC")],
        ),
        v(
            "stream with partially incorrect retry fields",
            &["retry:1000\nretry:2000x\ndata:x\n\n"],
            vec![ev("x").retry(1000)],
        ),
        v(
            "stream with `id` field containing a NULL character",
            &["id: 123\nid: bad\0id\ndata: hello\n\n"],
            vec![ev("hello").id("123")],
        ),
        v(
            "an `id` from a block without data persists (and a NUL id is ignored, an empty one kept)",
            &["id: 42\n", "\n", "data: a\n\n", "id: bad\0id\n\n", "data: b\n\n", "id:\n\n", "data: c\n\n"],
            vec![ev("a").id("42"), ev("b").id("42"), ev("c").id("")],
        ),
        v(
            "an `id` from a block using CR line endings",
            &["id: 42\r\r", "data: z\r\r"],
            vec![ev("z").id("42")],
        ),
        v(
            "an `id` from a block using CRLF line endings",
            &["id: 42\r\n\r\n", "data: z\r\n\r\n"],
            vec![ev("z").id("42")],
        ),
        v(
            "stream with incorrect retry fields",
            &["\nretry: 500\n\ndata: first\n\nretry: 50x\n\ndata: second\n\n"],
            vec![ev("first").retry(500), ev("second").retry(500)],
        ),
        v(
            "stream with unknown fields in the stream",
            &["data:abc\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:123\n\n", "event: done\ndata: ✔\n\n"],
            vec![ev("abc\n\n123"), done()],
        ),
        v(
            "an invalid body without a newline dispatches nothing",
            &[r#"{"error":"Internal Server Error","message":"The server could not process your request"}"#],
            vec![],
        ),
        v(
            "an invalid body with a newline dispatches nothing",
            &["{\"error\":\"Internal Server Error\",\"message\":\"The server could not process your request\"}\n\n"],
            vec![],
        ),
        v(
            "a line with no field separator is a field name",
            &["Well, this is not what I expected\n\n"],
            vec![],
        ),
        v(
            "discarded lines consume a crlf split across chunks as one line terminator",
            &["data: one\n:", "ignored\r", "\ndata: two\n\n"],
            vec![ev("one\ntwo")],
        ),
        v(
            "discarded comments consume crlf as one line terminator",
            &["data: one\n:", "ignored\r\ndata: two\n\n"],
            vec![ev("one\ntwo")],
        ),
        v(
            "discarded lines terminated by a bare cr resume parsing on the next chunk",
            &["data: one\n:", "ignored\r", "data: two\n\n"],
            vec![ev("one\ntwo")],
        ),
        v(
            "discarded lines arriving with their own bare cr terminator do not swallow the next line",
            &["data: one\n:ignored\r", "data: two\n\n"],
            vec![ev("one\ntwo")],
        ),
        v(
            "discarded lines arriving with a trailing cr consume a following lf as one terminator",
            &["data: one\n:ignored\r", "\ndata: two\n\n"],
            vec![ev("one\ntwo")],
        ),
        v(
            "bare field lines terminated by a cr at a chunk boundary are processed",
            &["data: one\ndata\r", "\ndata: two\n\n"],
            vec![ev("one\n\ntwo")],
        ),
        v(
            "unknown field lines completed by a cr at a chunk boundary are ignored",
            &["garbage\r", "data: ok\n\n"],
            vec![ev("ok")],
        ),
        v(
            "a blank cr line ending a chunk dispatches the pending event exactly once",
            &["data: one\r", "\r", "\n"],
            vec![ev("one")],
        ),
        v(
            "unknown, unterminated fields are discarded",
            &["unknown-field", ": this content is ignored even without a terminator", "\ndata: ok\n\n"],
            vec![ev("ok")],
        ),
        v(
            "a valid field name split across chunks",
            &["da", "ta\n\n"],
            vec![ev("")],
        ),
    ]);
}

/// `maxBufferSize` cases: ours is a bound on one event ([`SseError::EventTooLarge`]), checked
/// the same way under every chunking.
#[test]
fn eventsource_parser_suite_buffer_bounds() {
    let whole = |input: &str| input.as_bytes().to_vec();
    let cases: Vec<(&str, usize, Vec<u8>, bool)> = vec![
        (
            "a pending fragment past the bound",
            24,
            whole("data: short and now too long"),
            true,
        ),
        (
            "a data buffer past the bound (no blank line)",
            32,
            (0..50)
                .flat_map(|i| format!("data: chunk-{i}\n").into_bytes())
                .collect(),
            true,
        ),
        (
            "events dispatched within the bound",
            64,
            (0..100)
                .flat_map(|i| format!("data: {i}\n\n").into_bytes())
                .collect(),
            false,
        ),
        (
            "an over-long comment",
            16,
            whole(&format!("{}\ndata: ok\n\n", ":".repeat(64))),
            true,
        ),
    ];
    for (name, max, input, too_large) in cases {
        for size in [input.len(), 1, 2] {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let got = parse(max, &chunks);
            assert_eq!(
                got.is_err(),
                too_large,
                "{name} in {size}-byte chunks: {got:?}"
            );
            if too_large {
                assert_eq!(got, Err(SseError::EventTooLarge { max }), "{name}");
            }
        }
    }
}

/// The suite's "huge data chunks" case, at 256 KiB of multi-byte data (the default bound is
/// 1 MiB): one event, intact.
#[test]
fn eventsource_parser_suite_huge_event() {
    let line = "我現在都看實況不玩遊戲 🦄🌈👩‍👩‍👧‍👦 ünïcödé ".repeat(3400);
    assert!(line.len() > 256 * 1024);
    let input = format!(": hello\n\ndata: {line}\n\n: END-OF-STREAM\n\nevent: done\ndata: ✔\n\n");
    for size in [input.len(), 1, 2, 4093] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
        let got = parse(DEFAULT_MAX_EVENT_BYTES, &chunks).unwrap();
        assert_eq!(got, vec![ev(&line), done()], "{size}-byte chunks");
    }
}

#[test]
fn whatwg_event_stream_examples() {
    run(vec![
        v(
            "stock ticker: three data lines, one event",
            &["data: YHOO\ndata: +2\ndata: 10\n\n"],
            vec![ev("YHOO\n+2\n10")],
        ),
        v(
            "test stream: a comment block, `id: 1`, an empty `id`, two leading spaces",
            &[": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"],
            vec![
                ev("first event").id("1"),
                ev("second event").id(""),
                ev(" third event").id(""),
            ],
        ),
        v(
            "empty data, a single newline, and an unterminated last block",
            &["data\n\ndata\ndata\n\ndata:"],
            vec![ev(""), ev("\n")],
        ),
        v(
            "the space after the colon is optional",
            &["data:test\n\ndata: test\n\n"],
            vec![ev("test"), ev("test")],
        ),
        v(
            "named events",
            &["event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"],
            vec![
                ev("73857293").event("add"),
                ev("2153").event("remove"),
                ev("113411").event("add"),
            ],
        ),
    ]);
}

/// Beyond the suites: a BOM split across chunks at every offset, and a `\r` chunk end before
/// a `\n` chunk start in every position of a CRLF stream.
#[test]
fn bom_and_crlf_split_at_every_offset() {
    let input = format!("{BOM}data: a\r\ndata: b\r\n\r\nid: 7\r\nevent: x\r\ndata: c\r\n\r\n");
    let expected = vec![ev("a\nb"), ev("c").event("x").id("7")];
    let bytes = input.as_bytes();
    for at in 0..=bytes.len() {
        for at2 in at..=bytes.len().min(at + 4) {
            let got = parse(
                DEFAULT_MAX_EVENT_BYTES,
                &[&bytes[..at], &bytes[at..at2], &bytes[at2..]],
            )
            .unwrap();
            assert_eq!(got, expected, "split at {at} and {at2}");
        }
    }
}
