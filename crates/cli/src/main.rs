//! `unbox`: the command-line client for admins, partners and devices.
//!
//! Each top-level subcommand lives in its own module under `commands/`, with its clap
//! arguments and its `run`; `main` only dispatches and turns errors into exit code 1.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "unbox",
    version,
    about = "The command-line client of Unbox, the self-hostable zero-touch provisioning service",
    after_help = "Exit status: 0 on success, 1 on an error (the message is on stderr), \
                  2 on invalid arguments or an invalid rule."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and evaluate device membership rules, offline.
    Rules(commands::rules::RulesCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Rules(command) => command.run(),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` puts the whole context chain on one line.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
