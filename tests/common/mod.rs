//! Shared by the integration tests: the stream fixtures and what each one carries.
#![allow(dead_code)] // each test binary uses a part

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
        "utf8" => &["Café crème, s'il vous plaît. 日本語のテキスト。👋🏽 👩\u{200d}👩\u{200d}👧\u{200d}👦 🏳\u{fe0f}\u{200d}🌈 ✓ Ünïcödé 😀"],
        other => panic!("no expected text for case {other}"),
    }
}
