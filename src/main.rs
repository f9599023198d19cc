//! The `agentgate` binary: parse arguments, run the chosen subcommand, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agentgate::cli::transcode::{self, Target};
use agentgate::formats::{EncodeOptions, Format};

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
    /// Transcode an SSE stream on stdin into another format on stdout, as it arrives.
    Transcode {
        /// Input format: ui-message, session-delta or text-done.
        #[arg(long)]
        from: Format,
        /// Output: a stream format, or json:<api> (pharen, chatbase, agents, guayaba) for
        /// that API's sync body.
        #[arg(long)]
        to: Target,
        /// ui-message output: also write `event: <type>` lines (seed 002 style).
        #[arg(long)]
        event_lines: bool,
        /// text-done output: render tool calls and reasoning as text.
        #[arg(long)]
        tools_as_text: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Transcode {
            from,
            to,
            event_lines,
            tools_as_text,
        } => {
            let options = EncodeOptions {
                event_lines,
                tools_as_text,
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
