//! A fixed amount of transcoding work, for instruction counts: the `transcode` bench's
//! ui-message input (50 × 16-byte text deltas) transcoded `N` times into one format. Timings
//! on a shared machine move ±15 % run to run; instructions under callgrind do not, so this is
//! how two builds are compared (docs/benchmarks.md, "The stream core"):
//!
//! ```text
//! cargo bench --bench transcode_work --no-run
//! valgrind --tool=callgrind target/release/deps/transcode_work-* text-done 2000
//! ```
//!
//! Arguments: the output format (default `text-done`), the number of streams (default 2000)
//! and, optionally, `<format>:<file>`: another input (e.g. the same stream as ag-ui, made with
//! `agentgate transcode --from ui-message --to ag-ui`); cargo's own `--bench` flag is ignored.

use agentgate::formats::{EncodeOptions, Format};
use agentgate::transcode::Transcoder;
use bytes::BytesMut;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let to: Format = match args.next() {
        Some(format) => format.parse().expect("an output format"),
        None => Format::TextDone,
    };
    let streams: usize = args.next().map_or(2000, |n| n.parse().expect("a count"));
    let (from, input) = match args.next() {
        Some(arg) => {
            let (format, path) = arg.split_once(':').expect("<format>:<file>");
            let format: Format = format.parse().expect("an input format");
            (format, std::fs::read(path).expect("the input file"))
        }
        None => (Format::UiMessage, ui_input().into_bytes()),
    };
    let mut out = BytesMut::with_capacity(1 << 16);
    let mut written = 0;
    for _ in 0..streams {
        out.clear();
        let mut t = Transcoder::new(from, to, EncodeOptions::default(), ());
        t.feed(std::hint::black_box(&input), &mut out);
        t.finish(&mut out);
        written += out.len();
    }
    println!("{streams} streams {from} → {to}: {written} bytes written");
}

/// The `transcode` bench's ui-message input: 50 × 16-byte text deltas.
fn ui_input() -> String {
    let mut input = String::new();
    input.push_str("data: {\"type\":\"start\",\"messageId\":\"msg_1\"}\n\n");
    input.push_str("data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n");
    for _ in 0..50 {
        input.push_str(
            "data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"héllo wörld, h\"}\n\n",
        );
    }
    input.push_str("data: {\"type\":\"text-end\",\"id\":\"t1\"}\n\n");
    input.push_str("data: {\"type\":\"finish\",\"finishReason\":\"stop\",\"messageMetadata\":{\"usage\":{\"credits\":1}}}\n\n");
    input.push_str("data: [DONE]\n\n");
    input
}
