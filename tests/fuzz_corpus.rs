//! The fuzz target's checks as ordinary tests: every file of its seed corpus
//! (`fuzz/corpus/transcode/`: each fixture under several selectors, plus nasty inputs) goes
//! through `agentgate::fuzzing::check_transcode`, the same function the cargo-fuzz target
//! calls. Then a short randomized run on stable (proptest): arbitrary bytes, and fixtures
//! with random bytes flipped, inserted or removed, under random selectors.

mod common;

use std::path::Path;

use agentgate::fuzzing::check_transcode;
use proptest::prelude::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/transcode");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_passes_the_fuzz_check() {
    let files = corpus();
    assert!(files.len() > 100, "corpus missing: {} files", files.len());
    let mut failures = Vec::new();
    for (name, data) in &files {
        if let Err(panic) = std::panic::catch_unwind(|| check_transcode(data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A seed is named `<fixture>.<from>.to.<to>.<options>` or `nasty-<what>.to.<to>`: its
/// selector byte must pick that pair (`% 6`, `/ 6 % 6`), else a change of the selector
/// silently turned it into another test.
#[test]
fn every_corpus_name_agrees_with_its_selector() {
    use agentgate::formats::Format;
    let n = Format::ALL.len();
    for (name, data) in corpus() {
        let selector = usize::from(data[0]);
        let (head, tail) = name
            .split_once(".to.")
            .unwrap_or_else(|| panic!("{name}: no `.to.`"));
        let to = tail.split('.').next().unwrap();
        assert_eq!(Format::ALL[selector / n % n].as_str(), to, "{name}");
        if let Some((_, from)) = head.split_once('.') {
            assert_eq!(Format::ALL[selector % n].as_str(), from, "{name}");
        }
    }
}

#[test]
fn every_fixture_seeds_the_corpus() {
    let files = corpus();
    for f in common::fixtures() {
        assert!(
            files
                .iter()
                .any(|(_, data)| data.get(1..) == Some(&f.bytes[..])),
            "fixture {} is not in fuzz/corpus/transcode",
            f.name()
        );
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"\n\r:{}\",[] \\".to_vec()),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_pass_the_fuzz_check(data in prop::collection::vec(any::<u8>(), 0..400)) {
        check_transcode(&data);
    }

    #[test]
    fn mutated_fixtures_pass_the_fuzz_check(
        which in any::<prop::sample::Index>(),
        selector in any::<u8>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let fixtures = common::fixtures();
        let f = which.get(&fixtures);
        // Keep the selector's input format that of the fixture, most of the time.
        let from = agentgate::formats::Format::ALL.iter().position(|x| *x == f.format).unwrap() as u8;
        let n = agentgate::formats::Format::ALL.len() as u8;
        let selector = if selector % 4 == 0 { selector } else { selector / n % (256 / n as u16) as u8 * n + from };
        let mut data = vec![selector];
        data.extend_from_slice(&f.bytes);
        for e in edits {
            let len = data.len();
            match e {
                Edit::Flip(at, b) => data[1 + at % (len - 1)] = b,
                Edit::Insert(at, b) => data.insert(1 + at % len, b),
                Edit::Remove(at) if len > 1 => {
                    data.remove(1 + at % (len - 1));
                }
                Edit::Remove(_) => {}
            }
        }
        check_transcode(&data);
    }
}
