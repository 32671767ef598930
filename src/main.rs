//! The `officer` binary: parses arguments, sets up logging, and calls the library. Also the
//! generators that need the whole clap definition: shell completions and the man page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use officer::cli::bench::BenchArgs;
use officer::cli::serve::{self, DaemonArgs, RunArgs, StartArgs};
use officer::cli::{EXIT_USAGE, TOP_LEVEL_HELP};

#[derive(Parser)]
#[command(name = "officer", version, about = "A fast, fair, observable distributed lock server")]
#[command(after_long_help = TOP_LEVEL_HELP)]
#[command(disable_help_flag = true)]
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
    ///
    /// Takes every flag of `start`, also after `--` (`officer stop -- -d DIR`), as the original's
    /// daemons gem did; only -d, --name and --log-dir say which server.
    #[command(disable_help_flag = true)]
    Stop(DaemonArgs),
    /// Stop, then start a background server.
    ///
    /// Takes every flag of `start`, also after `--` (`officer restart -d DIR -- -p 9999`).
    #[command(disable_help_flag = true)]
    Restart(DaemonArgs),
    /// Say whether a background server runs (exit 0 running, 1 stale pid file, 3 stopped).
    ///
    /// Takes every flag of `start`, also after `--` (`officer status -- -d DIR`), as the
    /// original's daemons gem did; only -d, --name and --log-dir say which server.
    #[command(disable_help_flag = true)]
    Status(DaemonArgs),
    /// Load generator: lock/unlock cycles (or pings) from many connections on one event loop.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    #[command(flatten)]
    Client(officer::cli::ClientCommand),
    /// Print a shell completion script (e.g. `officer completions bash > /etc/bash_completion.d/officer`).
    #[command(disable_help_flag = true)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (`officer man | man -l -`), or write one page per subcommand with --dir.
    #[command(disable_help_flag = true)]
    Man {
        /// Write officer.1 and officer-SUBCOMMAND.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(original_style_args(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(&e)),
    };
    let code = match cli.command {
        Command::Run(args) => serve::run(args),
        Command::Start(args) => serve::start(args),
        Command::Stop(args) => serve::stop(&args),
        Command::Status(args) => serve::status(&args),
        Command::Restart(args) => serve::restart(args),
        Command::Bench(args) => officer::cli::bench::run(args),
        Command::Client(cmd) => officer::cli::run(cmd),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Prints clap's message; `--help` and `--version` exit 0, every real usage error 64
/// (EX_USAGE, as flock(1) does) instead of clap's 2.
fn usage_error(e: &clap::Error) -> u8 {
    let _ = e.print();
    if e.use_stderr() {
        EXIT_USAGE as u8
    } else {
        0
    }
}

/// The original took its flags after `--` for every daemons-gem command (`officer start -- -p
/// 9999`, `officer stop -- -d /tmp`); accept that form by dropping the separator for the server
/// subcommands, where it carries no meaning. `officer lock NAME -- COMMAND` keeps its `--`.
fn original_style_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SERVER: [&str; 5] = ["run", "start", "stop", "restart", "status"];
    let is_server = args.get(1).and_then(|a| a.to_str()).is_some_and(|a| SERVER.contains(&a));
    if is_server {
        if let Some(pos) = args.iter().position(|a| a == "--") {
            args.remove(pos);
        }
    }
    args
}

fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(shell, &mut Cli::command(), "officer", &mut std::io::stdout());
    0
}

fn man(dir: Option<PathBuf>) -> i32 {
    let cmd = Cli::command();
    let result = match &dir {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)),
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => 0,
        // `officer man | head` closed the pipe: nothing went wrong.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("officer: cannot write the man page: {e}");
            1
        }
    }
}
