//! `agentgate serve`: run the gateway until SIGTERM/SIGINT, then drain; and the process setup
//! every long-running subcommand shares (the tokio runtime, logging).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, LogFormat};

/// The target of the binary's own log lines: `agentgate`, as when they were written in
/// `main.rs`, so log filters and JSON logs see what they saw before.
pub const LOG_TARGET: &str = "agentgate";

/// Runs the gateway on `config` (reloaded from `path` when given) until a shutdown signal.
pub async fn serve(config: Config, path: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    // Every connection is a file descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(target: LOG_TARGET, limit, "open file limit"),
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, error = %e, "cannot raise the open file limit")
        }
    }
    let watch = config.server().watch_config;
    let running = match crate::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(listen) = listen {
        running.reloader.set_listen_override(listen);
    }
    if let Some(path) = path {
        let path = std::path::absolute(&path).unwrap_or(path);
        running.reloader.set_path(path);
        if watch {
            tokio::spawn(running.reloader.clone().watch_file(stop.clone()));
        }
        // Replicas sharing a PostgreSQL store apply each other's config changes.
        if let Some(events) = running.policy.store.subscribe() {
            tokio::spawn(running.reloader.clone().follow_fleet(events, stop.clone()));
        }
    }
    #[cfg(unix)]
    running.reloader.clone().spawn_sighup(stop.clone());
    tracing::info!(
        target: LOG_TARGET,
        path = running.reloader.path().map(|p| p.display().to_string()),
        watch,
        "serving; SIGHUP reloads the config"
    );
    shutdown_signal().await;
    stop.cancel();
    tracing::info!(
        target: LOG_TARGET,
        "shutting down: no new connections; draining open streams"
    );
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// Logs to stdout, as text or JSON; with the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// spans are exported too (the returned guard flushes them when dropped).
pub fn init_tracing(format: LogFormat) -> Telemetry {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (json, text) = match format {
        LogFormat::Json => (Some(tracing_subscriber::fmt::layer().json()), None),
        LogFormat::Text => (None, Some(tracing_subscriber::fmt::layer())),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text);
    #[cfg(feature = "otlp")]
    {
        let (otel, guard) = crate::telemetry::layer();
        registry.with(otel).init();
        guard
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Telemetry
    }
}

#[cfg(feature = "otlp")]
pub type Telemetry = crate::telemetry::Guard;
/// Without the `otlp` feature there is nothing to flush at exit.
#[cfg(not(feature = "otlp"))]
pub struct Telemetry;
