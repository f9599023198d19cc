//! The `agentgate` binary: everything it does lives in [`agentgate::cli`].

fn main() -> std::process::ExitCode {
    agentgate::cli::run()
}
