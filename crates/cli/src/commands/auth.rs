//! `unbox login` and `unbox logout`: the saved server and credentials.

use std::io::BufRead as _;

use clap::Args;
use serde_json::json;

use crate::Ctx;
use crate::client::{self, Api, Credentials};
use crate::config::{self, Config, StoredToken};
use crate::error::{CliError, CmdResult, exit};

#[derive(Debug, Args)]
#[command(
    after_help = "Checks the credentials by getting a token, then writes the server, the client id \
                        and secret, and --ca-cert to the login file (mode 0600): by default \
                        unbox/config.json in $XDG_CONFIG_HOME or ~/.config, or --config FILE. Give the \
                        secret with UNBOX_CLIENT_SECRET or --client-secret-stdin rather than on the \
                        command line."
)]
pub struct LoginArgs {
    /// Read the client secret from the first line of standard input.
    #[arg(long)]
    client_secret_stdin: bool,
}

pub async fn login(args: LoginArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let server = ctx
        .global
        .server
        .as_deref()
        .map(config::canonical_server)
        .ok_or_else(|| CliError::usage("login needs --server URL (or UNBOX_SERVER)"))?;
    let client_id = ctx
        .global
        .client_id
        .clone()
        .ok_or_else(|| CliError::usage("login needs --client-id (or UNBOX_CLIENT_ID)"))?;
    let client_secret = if args.client_secret_stdin {
        let mut line = String::new();
        std::io::BufReader::new(ctx.io.input())
            .read_line(&mut line)
            .map_err(|e| CliError::failure(format!("cannot read standard input: {e}")))?;
        line.trim().to_owned()
    } else {
        ctx.global.client_secret.clone().ok_or_else(|| {
            CliError::usage(
                "login needs the client secret: UNBOX_CLIENT_SECRET, --client-secret-stdin or --client-secret",
            )
        })?
    };
    if client_secret.is_empty() {
        return Err(CliError::usage("the client secret is empty"));
    }
    let ca_cert =
        match &ctx.global.ca_cert {
            Some(path) => Some(std::path::absolute(path).map_err(|e| {
                CliError::failure(format!("cannot resolve {}: {e}", path.display()))
            })?),
            None => None,
        };
    let http = client::http_client(ca_cert.as_deref())?;
    let credentials = Credentials {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
    };
    let mut api = Api::with_credentials(http, &server, credentials);
    let token = api.fetch_token().await?;
    let path = ctx.config_path()?;
    let expires_in = i64::try_from(token.expires_in).unwrap_or(0);
    config::save(
        &path,
        &Config {
            server: server.clone(),
            client_id: client_id.clone(),
            client_secret,
            ca_cert,
            token: Some(StoredToken {
                access_token: token.access_token,
                expires_at: chrono::Utc::now().timestamp().saturating_add(expires_in),
            }),
        },
    )?;
    super::done(
        ctx,
        &format!(
            "Logged in to {server} as client {client_id} (scopes: {}); saved to {}",
            token.scope,
            path.display()
        ),
        &json!({
            "server": server, "clientId": client_id, "scope": token.scope,
            "config": path.display().to_string(),
        }),
    )
}

pub fn logout(ctx: &mut Ctx<'_>) -> CmdResult {
    let path = ctx.config_path()?;
    let removed = config::remove(&path)?;
    let message = if removed {
        format!("Logged out: removed {}", path.display())
    } else {
        format!("Not logged in: there is no {}", path.display())
    };
    super::done(
        ctx,
        &message,
        &json!({"removed": removed, "config": path.display().to_string()}),
    )?;
    Ok(exit::OK)
}
