//! Golden tests: every fixture (`tests/fixtures/streams/<case>.<format>.sse`) transcoded into
//! every format (5 × 5 pairs where the fixture exists; the OpenAI outputs with a fixed `created`
//! and the usage chunk) and into the sync JSON bodies, compared
//! with `tests/fixtures/golden/`. Then every fixture is re-run split at every byte offset and fed
//! one byte at a time: the output must not change.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the goldens; review them before committing.
//! Generated ids (`msg_<32 hex>`, `api:<uuid>`, `chatcmpl-<32 hex>`, `resp_<32 hex>` not present
//! in the input) are normalised.

mod common;

use std::io::Read;
use std::path::PathBuf;

use agentgate::cli::transcode::{run, Target};
use agentgate::formats::{EncodeOptions, Format};
use agentgate::fronts::Api;
use agentgate::fuzzing::{assert_well_formed, normalise_generated_ids, transcode_chunks};
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;

use common::{fixture, fixtures, fixtures_dir, Fixture};

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

fn golden_path(name: &str) -> PathBuf {
    fixtures_dir().join("golden").join(name)
}

/// Compares `actual` with the golden file `name` (or writes it under `UPDATE_GOLDEN`).
/// Returns a description of the mismatch, so that one run reports every failing golden.
fn check_golden(name: &str, actual: &[u8]) -> Option<String> {
    let path = golden_path(name);
    if update() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Some(format!("{name}: {e} (run with UPDATE_GOLDEN=1)")),
    };
    if expected == actual {
        return None;
    }
    let (exp, act) = (
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual),
    );
    let line = exp
        .lines()
        .zip(act.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| exp.lines().count().min(act.lines().count()));
    Some(format!(
        "{name}: differs from line {}\n  expected: {:?}\n  actual:   {:?}",
        line + 1,
        exp.lines().nth(line).unwrap_or("<end>"),
        act.lines().nth(line).unwrap_or("<end>"),
    ))
}

/// The options the goldens are written with: a fixed `created` (the OpenAI outputs' only
/// clock-dependent field) and the openai-chat usage chunk.
fn golden_options() -> EncodeOptions {
    EncodeOptions {
        include_usage: true,
        created: Some(1_700_000_000),
        ..Default::default()
    }
}

fn transcode(f: &Fixture, to: Format, options: EncodeOptions, chunks: Vec<&[u8]>) -> Vec<u8> {
    let out = transcode_chunks(f.format, to, options, DEFAULT_MAX_EVENT_BYTES, chunks);
    normalise_generated_ids(&out, &f.bytes)
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_into_every_format_matches_its_golden() {
    let mut failures = Vec::new();
    for f in fixtures() {
        for to in Format::ALL {
            let out = transcode(&f, to, golden_options(), vec![&f.bytes]);
            assert_well_formed(to, &out);
            failures.extend(check_golden(
                &format!("{}.{}.to.{}.sse", f.case, f.format, to),
                &out,
            ));
        }
    }
    report(failures);
}

#[test]
fn ui_message_with_event_lines_matches_its_golden() {
    let options = EncodeOptions {
        event_lines: true,
        ..Default::default()
    };
    let mut failures = Vec::new();
    for f in [
        fixture("steps", Format::UiMessage),
        fixture("utf8", Format::SessionDelta),
    ] {
        let out = transcode(&f, Format::UiMessage, options.clone(), vec![&f.bytes]);
        assert_well_formed(Format::UiMessage, &out);
        failures.extend(check_golden(
            &format!("{}.{}.to.ui-message.event-lines.sse", f.case, f.format),
            &out,
        ));
    }
    report(failures);
}

/// Two chunks split at every offset, and one byte at a time (also with ui-message `event:`
/// lines), give the whole-input output.
#[test]
fn every_split_gives_the_same_output() {
    let event_lines = EncodeOptions {
        event_lines: true,
        ..Default::default()
    };
    for f in fixtures() {
        for to in Format::ALL {
            let options = golden_options();
            let whole = transcode(&f, to, options.clone(), vec![&f.bytes]);
            for at in 0..=f.bytes.len() {
                let (a, b) = f.bytes.split_at(at);
                let split = transcode(&f, to, options.clone(), vec![a, b]);
                assert!(
                    split == whole,
                    "{} → {to} split at byte {at} differs:\n{}\n---- whole:\n{}",
                    f.name(),
                    String::from_utf8_lossy(&split),
                    String::from_utf8_lossy(&whole)
                );
            }
            let mut runs = vec![(options, whole)];
            if to == Format::UiMessage {
                let el = transcode(&f, to, event_lines.clone(), vec![&f.bytes]);
                runs.push((event_lines.clone(), el));
            }
            for (options, whole) in runs {
                let bytewise = transcode(&f, to, options.clone(), f.bytes.chunks(1).collect());
                assert!(
                    bytewise == whole,
                    "{} → {to} ({options:?}) fed one byte at a time differs:\n{}",
                    f.name(),
                    String::from_utf8_lossy(&bytewise)
                );
            }
        }
    }
}

/// Reads one byte per `read` call, like the slowest possible upstream.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// `agentgate transcode --to json:<api>` on the tool, UTF-8 and parts fixtures, whole and
/// trickled.
#[test]
fn sync_bodies_match_their_golden() {
    let mut failures = Vec::new();
    for f in fixtures()
        .into_iter()
        .filter(|f| ["tool", "utf8", "parts"].contains(&f.case.as_str()))
    {
        // The fronts' bodies (an upstream-only API's is the `json:openai-*` one below, which
        // the `openai` front's endpoints answer with).
        for api in Api::fronts().filter(|api| *api != Api::OpenAi) {
            let mut whole = Vec::new();
            let err = run(
                f.format,
                Target::Json(api),
                EncodeOptions::default(),
                &f.bytes[..],
                &mut whole,
            )
            .unwrap();
            assert!(err.is_none(), "{}: {err:?}", f.name());
            let mut trickled = Vec::new();
            run(
                f.format,
                Target::Json(api),
                EncodeOptions::default(),
                Trickle(&f.bytes),
                &mut trickled,
            )
            .unwrap();
            assert_eq!(whole, trickled, "{} → json:{api}", f.name());
            failures.extend(check_golden(
                &format!("{}.{}.to.json-{api}.json", f.case, f.format),
                &whole,
            ));
        }
    }
    report(failures);
}

/// `agentgate transcode --to json:openai-chat|json:openai-responses` (the non-stream
/// `chat.completion` and Response objects) on every fixture with a tool call, reasoning or
/// multi-byte text, whole and trickled.
#[test]
fn openai_sync_bodies_match_their_golden() {
    let mut failures = Vec::new();
    for f in fixtures()
        .into_iter()
        .filter(|f| ["tool", "utf8", "reasoning"].contains(&f.case.as_str()))
    {
        for to in [Format::OpenAiChat, Format::OpenAiResponses] {
            let mut whole = Vec::new();
            let target = Target::OpenAiJson(to);
            let err = run(f.format, target, golden_options(), &f.bytes[..], &mut whole).unwrap();
            assert!(err.is_none(), "{}: {err:?}", f.name());
            let mut trickled = Vec::new();
            run(
                f.format,
                target,
                golden_options(),
                Trickle(&f.bytes),
                &mut trickled,
            )
            .unwrap();
            let (whole, trickled) = (
                normalise_generated_ids(&whole, &f.bytes),
                normalise_generated_ids(&trickled, &f.bytes),
            );
            assert_eq!(whole, trickled, "{} → json:{to}", f.name());
            failures.extend(check_golden(
                &format!("{}.{}.to.json-{to}.json", f.case, f.format),
                &whole,
            ));
        }
    }
    report(failures);
}

/// The binary itself (`agentgate transcode`) gives the golden output and exit code 0.
#[test]
fn cli_binary_writes_the_golden_output() {
    for (f, to) in [
        (fixture("steps", Format::UiMessage), "session-delta"),
        (fixture("utf8", Format::TextDone), "ui-message"),
        (fixture("tool", Format::OpenAiChat), "session-delta"),
        (fixture("tool", Format::OpenAiResponses), "ui-message"),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args(["transcode", "--from", f.format.as_str(), "--to", to])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&f.bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{} → {to}: {:?}",
            f.name(),
            out.status
        );
        let golden = std::fs::read(golden_path(&format!("{}.to.{to}.sse", f.name()))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&normalise_generated_ids(&out.stdout, &f.bytes)),
            String::from_utf8_lossy(&golden),
            "{} → {to}",
            f.name()
        );
    }
}

/// Every file in `golden/` belongs to a case above (no stale goldens).
#[test]
fn no_stale_goldens() {
    let names: Vec<String> = fixtures().iter().map(Fixture::name).collect();
    let dir = fixtures_dir().join("golden");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let source = file.split(".to.").next().unwrap();
        assert!(
            names.iter().any(|n| n == source),
            "{file}: no fixture {source}"
        );
    }
}
