//! `unbox`: the command-line client of Unbox for admins, partners and devices.
//!
//! The binary is [`run`] on the process's arguments and streams; tests call [`run`] with their
//! own arguments and an [`Io`] that captures the output. Each area of commands lives in
//! `commands/`, with its clap arguments and its `run`; [`client`] talks to the API and turns
//! problem documents into errors with exit codes ([`error::exit`]).

pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod hwid;
pub mod io;
pub mod output;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::{Api, Credentials};
use crate::error::{CliError, EXIT_CODES_HELP, exit, one_line};
pub use crate::io::{Captured, Io};
use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "unbox",
    version,
    about = "The command-line client of Unbox, the self-hostable zero-touch provisioning service",
    long_about = "The command-line client of Unbox, the self-hostable zero-touch provisioning service: \
                  manage devices, imports, profiles, groups and deployments; register devices as a partner; \
                  read this Linux machine's hardware identity; and play a booting device.\n\n\
                  Admin commands need the server and an API client's credentials: --server, --client-id and \
                  --client-secret (or UNBOX_SERVER, UNBOX_CLIENT_ID, UNBOX_CLIENT_SECRET), or a saved \
                  `unbox login`.",
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The Unbox server, e.g. https://unbox.example.com (default: the saved login's).
    #[arg(long, global = true, env = "UNBOX_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// The API client's id (default: the saved login's).
    #[arg(
        long,
        global = true,
        env = "UNBOX_CLIENT_ID",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    pub client_id: Option<String>,

    /// The API client's secret. Prefer the environment variable: arguments are visible to other
    /// users of the machine.
    #[arg(
        long,
        global = true,
        env = "UNBOX_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        allow_hyphen_values = true
    )]
    pub client_secret: Option<String>,

    /// Trust the CA certificates in this PEM file (for a server with a private CA).
    #[arg(long, global = true, env = "UNBOX_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Output format of results.
    #[arg(
        short,
        long,
        global = true,
        env = "UNBOX_OUTPUT",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,

    /// The saved login's file (default: unbox/config.json in the user's config directory,
    /// $XDG_CONFIG_HOME or ~/.config).
    #[arg(long, global = true, env = "UNBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save the server and an API client's credentials for the commands that follow.
    Login(commands::auth::LoginArgs),
    /// Remove the saved login.
    Logout,
    /// List, show, register, update, delete devices, and explain their profile assignment.
    #[command(subcommand)]
    Devices(commands::devices::DevicesCommand),
    /// Upload an Autopilot CSV file or a JSON batch of devices and wait for the result.
    Import(commands::imports::ImportArgs),
    /// List and inspect import jobs.
    #[command(subcommand)]
    Imports(commands::imports::ImportsCommand),
    /// Deployment profiles: list, show, create, update, delete, assign, offline configuration.
    #[command(subcommand)]
    Profiles(commands::profiles::ProfilesCommand),
    /// Static and dynamic device groups, their members and membership rules.
    #[command(subcommand)]
    Groups(commands::groups::GroupsCommand),
    /// Deployments across devices, and one device's timeline.
    #[command(subcommand)]
    Deployments(commands::deployments::DeploymentsCommand),
    /// Commands for partners (OEMs, resellers) registering devices into their customers' tenants.
    #[command(subcommand)]
    Partner(commands::partner::PartnerCommand),
    /// Check and evaluate device membership rules, offline.
    Rules(commands::rules::RulesCommand),
    /// Print this Linux machine's hardware identity (JSON) or an Autopilot CSV row (CSV).
    Hwid(commands::hwid::HwidArgs),
    /// Act as a booting device: fetch and verify the signed profile, report the phases.
    #[command(subcommand)]
    Device(commands::device::DeviceCommand),
}

/// What every command gets: the streams and the global options.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub io: &'a mut Io,
    pub global: &'a GlobalArgs,
}

impl Ctx<'_> {
    pub fn json_output(&self) -> bool {
        self.global.output == Format::Json
    }

    fn config_path(&self) -> Result<PathBuf, CliError> {
        config::path(self.global.config.as_deref())
    }

    /// The saved login, when it is for the server the command talks to.
    fn login(&self) -> Result<Option<(PathBuf, config::Config)>, CliError> {
        let path = self.config_path()?;
        let Some(saved) = config::load(&path)? else {
            return Ok(None);
        };
        let applies = self.global.server.as_deref().is_none_or(|server| {
            config::canonical_server(server) == config::canonical_server(&saved.server)
        });
        Ok(applies.then_some((path, saved)))
    }

    /// The server: `--server`, else the saved login's.
    pub fn server(&self) -> Result<String, CliError> {
        if let Some(server) = self.global.server.as_deref() {
            return Ok(config::canonical_server(server));
        }
        match self.login()? {
            Some((_, saved)) => Ok(config::canonical_server(&saved.server)),
            None => Err(CliError::usage(
                "no server: pass --server URL (or set UNBOX_SERVER), or run `unbox login`",
            )),
        }
    }

    fn flag_credentials(&self) -> Result<Option<Credentials>, CliError> {
        match (&self.global.client_id, &self.global.client_secret) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                client_id: id.clone(),
                client_secret: secret.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(CliError::usage(
                "--client-id needs --client-secret (or UNBOX_CLIENT_SECRET)",
            )),
            (None, Some(_)) => Err(CliError::usage(
                "--client-secret needs --client-id (or UNBOX_CLIENT_ID)",
            )),
        }
    }

    /// An HTTP client trusting `--ca-cert`, else the saved login's CA certificate.
    fn http(&self, saved_ca: Option<&std::path::Path>) -> Result<reqwest::Client, CliError> {
        client::http_client(self.global.ca_cert.as_deref().or(saved_ca))
    }

    /// A client of the server with credentials: the flags', else the saved login's.
    pub fn api(&self) -> Result<Api, CliError> {
        let login = self.login()?;
        let saved_ca = login.as_ref().and_then(|(_, c)| c.ca_cert.clone());
        let http = self.http(saved_ca.as_deref())?;
        if let Some(credentials) = self.flag_credentials()? {
            return Ok(Api::with_credentials(http, &self.server()?, credentials));
        }
        match login {
            Some((path, saved)) => Ok(Api::from_login(http, path, saved)),
            // Without credentials the first request says how to give them (exit 4).
            None => Ok(Api::anonymous(http, &self.server()?)),
        }
    }

    /// A client of the server without credentials (the device calls).
    pub fn anonymous_api(&self) -> Result<Api, CliError> {
        let login = self.login()?;
        let saved_ca = login.as_ref().and_then(|(_, c)| c.ca_cert.clone());
        let http = self.http(saved_ca.as_deref())?;
        Ok(Api::anonymous(http, &self.server()?))
    }
}

/// Runs `unbox` with these arguments (the first is the program name) and returns its exit
/// code. Results go to `io`'s stdout; errors, notes and progress to its stderr.
pub async fn run<I, T>(args: I, io: &mut Io) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(run_code(args, io).await)
}

/// As [`run`], with the exit code as a number.
pub async fn run_code<I, T>(args: I, io: &mut Io) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let text = error.render().to_string();
            let code = u8::try_from(error.exit_code()).unwrap_or(exit::USAGE);
            if error.use_stderr() {
                let mut err = io.err();
                let _ = std::io::Write::write_all(&mut err, text.as_bytes());
            } else {
                let _ = std::io::Write::write_all(io.out(), text.as_bytes());
            }
            return code;
        }
    };
    let global = cli.global.clone();
    let mut ctx = Ctx {
        io,
        global: &global,
    };
    let outcome = dispatch(cli.command, &mut ctx).await;
    let _ = ctx.io.out().flush();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            ctx.io.note(&format!("error: {}", one_line(&error.message)));
            error.code
        }
    }
}

async fn dispatch(command: Command, ctx: &mut Ctx<'_>) -> error::CmdResult {
    match command {
        Command::Login(args) => commands::auth::login(args, ctx).await,
        Command::Logout => commands::auth::logout(ctx),
        Command::Devices(command) => command.run(ctx).await,
        Command::Import(args) => commands::imports::import(args, ctx).await,
        Command::Imports(command) => command.run(ctx).await,
        Command::Profiles(command) => command.run(ctx).await,
        Command::Groups(command) => command.run(ctx).await,
        Command::Deployments(command) => command.run(ctx).await,
        Command::Partner(command) => command.run(ctx).await,
        Command::Rules(command) => command.run(ctx),
        Command::Hwid(args) => commands::hwid::run(args, ctx),
        Command::Device(command) => command.run(ctx).await,
    }
}
