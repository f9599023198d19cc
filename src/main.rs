//! The `agentgate` binary: parse arguments, run the chosen subcommand, map errors to exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use agentgate::cli::transcode::{self, Target};
use agentgate::config::{Config, LogFormat};
use agentgate::demo::DemoAgent;
use agentgate::formats::{EncodeOptions, Format};
use agentgate::fronts::Api;

use agentgate::admin::cli::DEFAULT_CONFIG_PATH as DEFAULT_CONFIG;

#[derive(Parser)]
#[command(
    name = "agentgate",
    version,
    about = "A gateway for AI agent chat APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. When the default is absent, the embedded quick-start config is used.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Main listener `IP:PORT`, instead of the config's `[server] listen` (fronts served
        /// there move with it); e.g. `0.0.0.0:8080` in a container.
        #[arg(long, env = "AGENTGATE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file: every error names the file, line and reason.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run an echo backend speaking one chat API (for the quick start and tests).
    DemoAgent {
        /// pharen, chatbase, agents or guayaba.
        #[arg(long)]
        api: Api,
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// Pause between streamed words, in milliseconds.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
    },
    /// Create, list and revoke API keys (on the store of a running server too).
    Keys(agentgate::admin::cli::KeysArgs),
    /// Grant credits to an account; show its balance.
    Credits(agentgate::admin::cli::CreditsArgs),
    /// Credits used, per account, key or agent, over a time range (table, JSON or CSV).
    Usage(agentgate::admin::cli::UsageArgs),
    /// Transcode an SSE stream on stdin into another format on stdout, as it arrives.
    Transcode {
        /// Input format: ui-message, session-delta, text-done, openai-chat or openai-responses.
        #[arg(long)]
        from: Format,
        /// Output: a stream format, or json:<api> (pharen, chatbase, agents, guayaba,
        /// openai-chat, openai-responses) for that API's sync body.
        #[arg(long)]
        to: Target,
        /// ui-message output: also write `event: <type>` lines (seed 002 style).
        #[arg(long)]
        event_lines: bool,
        /// text-done output: render tool calls and reasoning as text.
        #[arg(long)]
        tools_as_text: bool,
        /// openai-chat output: write the usage chunk (`stream_options.include_usage`).
        #[arg(long)]
        include_usage: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => {
            let config_path = config;
            let config = match load_config(&config_path) {
                Ok(c) => match listen {
                    Some(listen) => c.with_listen(listen),
                    None => c,
                },
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let _telemetry = init_tracing(config.server().log_format);
            // The embedded quick start has no file to reload.
            let path = config_path.exists().then_some(config_path);
            runtime().block_on(serve(config, path, listen))
        }
        Command::Keys(args) => admin_exit(runtime().block_on(agentgate::admin::cli::run_keys(
            args,
            &mut std::io::stdout(),
        ))),
        Command::Credits(args) => admin_exit(runtime().block_on(
            agentgate::admin::cli::run_credits(args, &mut std::io::stdout()),
        )),
        Command::Usage(args) => admin_exit(runtime().block_on(agentgate::admin::cli::run_usage(
            args,
            &mut std::io::stdout(),
        ))),
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} fronts, {} agents, {} teams)",
                    config.display(),
                    c.fronts().len(),
                    c.agents().len(),
                    c.teams().len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::DemoAgent {
            api,
            listen,
            delay_ms,
        } => {
            let _telemetry = init_tracing(LogFormat::Text);
            runtime().block_on(async move {
                let agent = DemoAgent::new(api, Duration::from_millis(delay_ms));
                match agent.spawn(listen).await {
                    Ok(addr) => {
                        tracing::info!(%addr, api = api.as_str(), "demo agent listening");
                        let _ = tokio::signal::ctrl_c().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("demo-agent: cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Transcode {
            from,
            to,
            event_lines,
            tools_as_text,
            include_usage,
        } => {
            let options = EncodeOptions {
                event_lines,
                tools_as_text,
                include_usage,
                ..Default::default()
            };
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            match transcode::run(from, to, options, stdin, stdout) {
                Ok(None) => ExitCode::SUCCESS,
                Ok(Some(e)) => {
                    eprintln!("agentgate transcode: bad input: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("agentgate transcode: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The config at `path`; the embedded quick start when `path` is the default and absent.
fn load_config(path: &Path) -> Result<Config, agentgate::config::ConfigError> {
    Config::load_or_embedded(path)
}

/// The exit code of an admin subcommand.
fn admin_exit(result: Result<(), agentgate::admin::AdminError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, path: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    // Every connection is a file descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let watch = config.server().watch_config;
    let running = match agentgate::server::start(config).await {
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
        path = running.reloader.path().map(|p| p.display().to_string()),
        watch,
        "serving; SIGHUP reloads the config"
    );
    shutdown_signal().await;
    stop.cancel();
    tracing::info!("shutting down: no new connections; draining open streams");
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// Logs to stdout, as text or JSON; with the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// spans are exported too (the returned guard flushes them when dropped).
fn init_tracing(format: LogFormat) -> Telemetry {
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
        let (otel, guard) = agentgate::telemetry::layer();
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
type Telemetry = agentgate::telemetry::Guard;
/// Without the `otlp` feature there is nothing to flush at exit.
#[cfg(not(feature = "otlp"))]
struct Telemetry;
