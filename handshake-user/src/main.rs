use std::process::ExitCode;

use clap::Parser as _;
use handshake_user::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Run(args) => handshake_user::run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, no backtrace: the cause chain joined with ": ".
            eprintln!("handshake-monitor: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
