use std::{ffi::OsString, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _, error::ErrorKind};
use handshake_user::cli::{Cli, Command};

/// Prints a clap error as one line (help and version as they are).
fn clap_exit(err: &clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = err.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("handshake-monitor: error: {first}");
    ExitCode::from(2)
}

fn fail(err: &anyhow::Error) -> ExitCode {
    // One line, no backtrace: the cause chain joined with ": ".
    eprintln!("handshake-monitor: error: {err:#}");
    ExitCode::FAILURE
}

/// Parses the command line; for `run --config FILE`, parses again with the
/// file's values added as flags for the options still at their defaults.
fn parse(args: &[OsString]) -> Result<Cli, ExitCode> {
    let command = Cli::command();
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| clap_exit(&e))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| clap_exit(&e))?;
    let Command::Run(run) = &cli.command else {
        return Ok(cli);
    };
    let Some(path) = &run.config else {
        return Ok(cli);
    };
    let (Some(run_matches), Some(run_command)) = (
        matches.subcommand_matches("run"),
        command.find_subcommand("run"),
    ) else {
        return Ok(cli);
    };
    // Every value of the file is checked, the ones a flag overrides too.
    let all = handshake_user::config::flags_for_defaults(path, run_command, None)
        .map_err(|e| fail(&e))?;
    let mut alone: Vec<OsString> =
        args[..=args.iter().position(|a| a == "run").unwrap_or(1)].to_vec();
    alone.extend(all);
    let in_file = |e: &clap::Error| {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        fail(&anyhow::anyhow!("config file {}: {first}", path.display()))
    };
    match Cli::try_parse_from_args(&alone) {
        Err(e) => return Err(in_file(&e)),
        Ok(Cli {
            command: Command::Run(file_args),
        }) => {
            handshake_user::run::thresholds(&file_args.detector, file_args.handshake_timeout)
                .map_err(|e| fail(&e.context(format!("config file {}", path.display()))))?;
        }
        Ok(_) => {}
    }
    let extra = handshake_user::config::flags_for_defaults(path, run_command, Some(run_matches))
        .map_err(|e| fail(&e))?;
    let at = args.iter().position(|a| a == "run").unwrap_or(1);
    let mut merged: Vec<OsString> = args[..=at].to_vec();
    merged.extend(extra);
    merged.extend_from_slice(&args[at + 1..]);
    Cli::try_parse_from_args(&merged).map_err(|e| in_file(&e))
}

trait TryParse: Sized {
    fn try_parse_from_args(args: &[OsString]) -> Result<Self, clap::Error>;
}

impl TryParse for Cli {
    fn try_parse_from_args(args: &[OsString]) -> Result<Self, clap::Error> {
        <Self as clap::Parser>::try_parse_from(args)
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (level, format) = match &cli.command {
        Command::Run(args) => (args.log.log_level, args.log.log_format),
        _ => (
            handshake_user::logging::Level::Info,
            handshake_user::logging::Format::Logfmt,
        ),
    };
    handshake_user::logging::init(level, format);
    let result = match cli.command {
        Command::Run(args) => handshake_user::run::run(*args),
        Command::Check(args) => match handshake_user::check::check(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Cleanup(args) => handshake_user::cleanup::cleanup(&args.pin_path),
        Command::Replay(args) => {
            // Its output may go to `head`: a closed pipe ends it quietly, as
            // any command-line filter (the server, `run`, keeps ignoring
            // SIGPIPE: its sockets report EPIPE instead).
            // SAFETY: restoring a signal's default disposition.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            handshake_user::replay::run(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}
