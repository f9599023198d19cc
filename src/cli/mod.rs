//! The `agentgate` binary's command line: every subcommand's arguments and what it runs.
//! `main.rs` only calls [`run`].
//!
//! - `serve` ([`serve`]), `check`, `demo-agent`: here.
//! - `keys`, `credits`, `usage` ([`admin`]): the operator's store operations.
//! - `transcode` ([`transcode`]): SSE on stdin into another format on stdout.

pub mod admin;
pub mod serve;
pub mod transcode;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use crate::demo::DemoAgent;
use crate::formats::{EncodeOptions, Format};
use crate::fronts::Api;
use transcode::Target;

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
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Main listener `IP:PORT`, instead of the config's `[server] listen` (fronts served
        /// there move with it); e.g. `0.0.0.0:8080` in a container.
        #[arg(long, env = "AGENTGATE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file: every error names the file, line and reason.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run an echo backend speaking one chat API (for the quick start and tests).
    DemoAgent {
        /// The API it speaks: pharen, chatbase, agents, guayaba, ag-ui, openai-chat or
        /// openai-responses.
        #[arg(long, value_parser = upstream_api)]
        api: Api,
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// Pause between streamed words, in milliseconds.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
    },
    /// Create, list and revoke API keys (on the store of a running server too).
    Keys(admin::KeysArgs),
    /// Grant credits to an account; show its balance.
    Credits(admin::CreditsArgs),
    /// Credits used, per account, key or agent, over a time range (table, JSON or CSV).
    Usage(admin::UsageArgs),
    /// Transcode an SSE stream on stdin into another format on stdout, as it arrives.
    Transcode {
        /// Input format: ui-message, session-delta, text-done, ag-ui, openai-chat or
        /// openai-responses.
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

/// Parses the command line and runs the chosen subcommand; its exit code.
pub fn run() -> ExitCode {
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
            let _telemetry = serve::init_tracing(config.server().log_format);
            // The embedded quick start has no file to reload.
            let path = config_path.exists().then_some(config_path);
            serve::runtime().block_on(serve::serve(config, path, listen))
        }
        Command::Keys(args) => {
            admin_exit(serve::runtime().block_on(admin::run_keys(args, &mut std::io::stdout())))
        }
        Command::Credits(args) => {
            admin_exit(serve::runtime().block_on(admin::run_credits(args, &mut std::io::stdout())))
        }
        Command::Usage(args) => {
            admin_exit(serve::runtime().block_on(admin::run_usage(args, &mut std::io::stdout())))
        }
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
            let _telemetry = serve::init_tracing(LogFormat::Text);
            serve::runtime().block_on(async move {
                let agent = DemoAgent::new(api, Duration::from_millis(delay_ms));
                match agent.spawn(listen).await {
                    Ok(addr) => {
                        tracing::info!(
                            target: serve::LOG_TARGET,
                            %addr,
                            api = api.as_str(),
                            "demo agent listening"
                        );
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
fn load_config(path: &Path) -> Result<Config, crate::config::ConfigError> {
    Config::load_or_embedded(path)
}

/// The exit code of an admin subcommand.
fn admin_exit(result: Result<(), crate::admin::AdminError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An API a backend may speak (`demo-agent --api`).
fn upstream_api(s: &str) -> Result<Api, String> {
    let api: Api = s.parse()?;
    match api.is_upstream() {
        true => Ok(api),
        false => Err(format!(
            "`{api}` is a front only, not an API a backend speaks"
        )),
    }
}
