//! Every configuration file shipped under `config/` and `deploy/` is valid, and so is the
//! embedded default.

use std::path::{Path, PathBuf};

use agentgate::config::{Config, DEFAULT_CONFIG};

/// Stands in for every `${NAME}` the files reference.
fn dummy_env(_name: &str) -> Option<String> {
    Some("dummy-value-for-tests-0123456789".to_owned())
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            toml_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            found.push(path);
        }
    }
    Ok(())
}

#[test]
fn every_shipped_config_is_valid() -> std::io::Result<()> {
    let mut files = Vec::new();
    toml_files(&config_dir(), &mut files)?;
    // The Kubernetes ConfigMap's file too.
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
        &mut files,
    )?;
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the shipped configs, found {files:?}"
    );

    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| Config::load_with_env(path, &dummy_env).err())
        .map(|error| error.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "invalid configs:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn embedded_default_is_the_shipped_quick_start() -> std::io::Result<()> {
    let shipped = std::fs::read_to_string(config_dir().join("agentgate.toml"))?;
    assert_eq!(DEFAULT_CONFIG, shipped);
    let config = Config::embedded().unwrap_or_else(|e| panic!("embedded config:\n{e}"));
    // Six fronts (the APIs clients speak), seven demo agents (the APIs backends speak).
    assert_eq!(config.fronts().len(), 6);
    assert_eq!(config.agents().len(), 7);
    assert!(config
        .agent("00000000-0000-4000-8000-000000000001")
        .is_some());
    Ok(())
}

#[test]
fn examples_resolve_paths_against_their_directory() {
    let path = config_dir().join("examples/production.toml");
    let config = Config::load_with_env(&path, &dummy_env)
        .unwrap_or_else(|e| panic!("production example:\n{e}"));
    let tls = config.server().tls.as_ref().map(|tls| tls.cert.clone());
    assert_eq!(tls, Some(config_dir().join("examples/tls/fullchain.pem")));
    assert!(config.server().admin.is_some());
}
