//! The `officer` binary: parses arguments, sets up logging, and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use officer::cli::bench::BenchArgs;
use officer::cli::serve::{self, DaemonArgs, RunArgs, StartArgs};

#[derive(Parser)]
#[command(name = "officer", version, about = "A fast, fair, observable distributed lock server")]
#[command(disable_help_flag = true, disable_help_subcommand = true)]
struct Cli {
    #[arg(long, action = clap::ArgAction::Help, global = true, help = "Print help")]
    help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (as under systemd).
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Start the server in the background (pid file, output file).
    #[command(disable_help_flag = true)]
    Start(StartArgs),
    /// Stop a background server: SIGTERM, then SIGKILL after --timeout.
    #[command(disable_help_flag = true)]
    Stop(DaemonArgs),
    /// Stop, then start a background server.
    #[command(disable_help_flag = true)]
    Restart(StartArgs),
    /// Say whether a background server runs (exit 0 running, 1 stale pid file, 3 stopped).
    #[command(disable_help_flag = true)]
    Status(DaemonArgs),
    /// Load generator: lock/unlock cycles (or pings) from many connections on one event loop.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    #[command(flatten)]
    Client(officer::cli::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(original_style_args(std::env::args_os().collect()));
    let code = match cli.command {
        Command::Run(args) => serve::run(args),
        Command::Start(args) => serve::start(args),
        Command::Stop(args) => serve::stop(&args),
        Command::Status(args) => serve::status(&args),
        Command::Restart(args) => serve::restart(args),
        Command::Bench(args) => officer::cli::bench::run(args),
        Command::Client(cmd) => officer::cli::run(cmd),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The original took server flags after `--` (`officer start -- -p 9999`); accept that form
/// by dropping the separator for the server subcommands, where it carries no meaning.
fn original_style_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_server =
        args.get(1).and_then(|a| a.to_str()).is_some_and(|a| ["run", "start", "restart"].contains(&a));
    if is_server {
        if let Some(pos) = args.iter().position(|a| a == "--") {
            args.remove(pos);
        }
    }
    args
}
