//! `unboxd`: serve the API, apply migrations, or run an admin command.

use std::process::ExitCode;

use clap::Parser;
use unbox_db::embedded::ClusterRole;
use unbox_server::config::{AdminCommand, Cli, Command, PartnerCommand, redact_url};
use unbox_server::startup::{self, Database};
use unbox_server::telemetry;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.global.log_format, &cli.global.log);
    let runtime = match unbox_server::runtime::build(std::time::Duration::from_micros(
        cli.serve.idle_spin_us,
    )) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("unboxd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("unboxd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn banner(cli: &Cli) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cli.global.data_dir.display(),
        database = %cli.global.database_url.as_deref().map_or_else(|| "embedded".to_owned(), redact_url),
        listen = %cli.serve.listen,
        public_url = cli.serve.public_url.as_deref().unwrap_or("(http://LISTEN)"),
        signing_key = %cli.serve.signing_key_file.as_ref().map_or_else(|| "DATA_DIR/signing-key.pem".to_owned(), |p| p.display().to_string()),
        external_issuer = cli.serve.external_issuer.as_deref().unwrap_or("(none)"),
        previous_signing_keys = cli.serve.previous_signing_key_files.len(),
        tls_cert = %cli.serve.tls_cert.as_ref().map_or_else(|| "(none: plain HTTP)".to_owned(), |p| p.display().to_string()),
        device_rate_per_identity = cli.serve.device_rate_per_identity,
        device_rate_per_address = cli.serve.device_rate_per_address,
        idle_spin_us = cli.serve.idle_spin_us,
        trusted_proxies = ?cli.serve.trusted_proxies,
        "unboxd configuration"
    );
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    banner(&cli);
    match &cli.command {
        None | Some(Command::Serve) => serve(cli).await,
        Some(Command::Migrate) => {
            let database = Database::open(&cli.global, ClusterRole::Guest).await?;
            tracing::info!("migrations applied");
            database.close().await;
            Ok(())
        }
        Some(Command::Admin(AdminCommand::Bootstrap {
            tenant_name,
            tenant_domain,
        })) => {
            let database = Database::open(&cli.global, ClusterRole::Guest).await?;
            let result = startup::bootstrap(&database.pool, tenant_name, tenant_domain).await;
            database.close().await;
            println!("{}", serde_json::to_string(&result?)?);
            Ok(())
        }
        Some(Command::Admin(AdminCommand::Partner(PartnerCommand::Create { name }))) => {
            let database = Database::open(&cli.global, ClusterRole::Guest).await?;
            let result = startup::create_partner(&database.pool, name).await;
            database.close().await;
            println!("{}", serde_json::to_string(&result?)?);
            Ok(())
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let database = Database::open(&cli.global, ClusterRole::Owner).await?;
    let listener = match tokio::net::TcpListener::bind(cli.serve.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            database.close().await;
            anyhow::bail!("cannot listen on {}: {error}", cli.serve.listen);
        }
    };
    let bound = listener.local_addr()?;
    let issuer = startup::public_url(&cli.serve, bound);
    let tokens = match startup::token_service(&cli.global, &cli.serve, issuer) {
        Ok(tokens) => tokens,
        Err(error) => {
            database.close().await;
            return Err(error);
        }
    };
    if let Err(error) = tokens.prefetch_external_keys().await {
        tracing::warn!(error = %error, "the external issuer's keys could not be loaded yet; will retry on use");
    }
    let tls = match (&cli.serve.tls_cert, &cli.serve.tls_key) {
        (Some(cert), Some(key)) => {
            match unbox_server::device::tls::Tls::new(unbox_server::device::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }) {
                Ok(tls) => Some(tls),
                Err(error) => {
                    database.close().await;
                    return Err(error);
                }
            }
        }
        _ => None,
    };
    let state = startup::app_state(database.pool.clone(), tokens, &cli.global, &cli.serve);
    tracing::info!(address = %bound, tls = tls.is_some(), "serving");
    let served = match tls {
        Some(tls) => startup::serve_tls(listener, tls, state, startup::shutdown_signal()).await,
        None => startup::serve(listener, state, startup::shutdown_signal()).await,
    };
    database.close().await;
    tracing::info!("stopped");
    Ok(served?)
}
