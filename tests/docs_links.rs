//! The README and `docs/`: every relative link resolves to a file (and an `#anchor` to a heading
//! of it), every document in `docs/` is linked from the README, the README stays short and its
//! first two commands are the quick start and the tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files checked: the README and every `docs/*.md`.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("readable docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds no markdown file");
    files.extend(docs);
    files
}

/// The text outside fenced code blocks and inline code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        // Drop inline code spans (`…`), which may hold `](` without being links.
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Every inline link target `[text](target)` of `text`.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut found = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        found.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut set = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            set.insert(slug(line.trim_start_matches('#')));
        }
    }
    set
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|p| target.starts_with(p))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = read(&file);
        let dir = file.parent().expect("a file has a directory");
        for target in links(&text) {
            if is_external(&target) {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_md = resolved.extension().is_some_and(|e| e == "md");
                if is_md && !anchors(&read(&resolved)).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} relative links found: is the parser broken?"
    );
}

#[test]
fn every_doc_is_linked_from_the_readme() {
    let readme = read(&root().join("README.md"));
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap_or_default().to_owned())
        .collect();
    for doc in documents().into_iter().skip(1) {
        let name = doc.file_name().expect("a name").to_string_lossy();
        let target = format!("docs/{name}");
        assert!(linked.contains(&target), "README.md does not link {target}");
    }
}

#[test]
fn the_readme_is_short_and_starts_with_the_two_commands() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 350,
        "README.md has {lines} lines; the depth goes to docs/"
    );
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("cargo ") || l.starts_with("agentgate "))
        .take(2)
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(commands, ["cargo run --release -- serve", "cargo test"]);
}

#[test]
fn the_link_parser_sees_links_and_skips_code() {
    let text = "See [a](docs/a.md) and `[b](docs/b.md)`.\n```\n[c](docs/c.md)\n```\n[d](#x)\n";
    assert_eq!(links(text), ["docs/a.md", "#x"]);
    assert_eq!(
        slug("The ledger in SQLite or PostgreSQL, per request or leased"),
        "the-ledger-in-sqlite-or-postgresql-per-request-or-leased"
    );
    assert_eq!(
        slug("End to end: direct against through agentgate"),
        "end-to-end-direct-against-through-agentgate"
    );
}
