//! `unboxd`'s command line: flags with environment fallbacks, shared by every subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "unboxd",
    version,
    about = "Unbox: self-hostable zero-touch device provisioning"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(flatten)]
    pub serve: ServeOptions,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Administration; prints only JSON on stdout.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a tenant and an API client with every tenant scope; prints
    /// {"tenantId","clientId","clientSecret"}.
    Bootstrap {
        #[arg(long)]
        tenant_name: String,
        #[arg(long)]
        tenant_domain: String,
    },
    /// Partners (OEMs, resellers) that register devices into the tenants that authorize them.
    #[command(subcommand)]
    Partner(PartnerCommand),
}

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Create a partner and its API client (scope `partner.devices.write`); prints
    /// {"partnerId","clientId","clientSecret"}.
    Create {
        #[arg(long)]
        name: String,
    },
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Data directory: the embedded PostgreSQL cluster and the generated signing key live here.
    #[arg(long, env = "UNBOX_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; without it, unboxd runs a private cluster under the data directory.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most database connections this process opens.
    #[arg(
        long,
        env = "UNBOX_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
    /// Log format.
    #[arg(
        long,
        env = "UNBOX_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "UNBOX_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to listen on.
    #[arg(
        long,
        env = "UNBOX_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// The URL clients reach this service at; the `iss` of its tokens. Default: http://LISTEN.
    #[arg(long, env = "UNBOX_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Ed25519 PKCS#8 PEM key that signs tokens; share it between instances. Default: a key
    /// generated into DATA_DIR/signing-key.pem on first start.
    #[arg(long, env = "UNBOX_SIGNING_KEY_FILE", global = true)]
    pub signing_key_file: Option<PathBuf>,
    /// Lifetime of access tokens, in seconds.
    #[arg(
        long,
        env = "UNBOX_TOKEN_LIFETIME",
        default_value_t = 3600,
        global = true
    )]
    pub token_lifetime: u64,
    /// Accept tokens of this external issuer too (with --external-audience and a JWKS).
    #[arg(
        long,
        env = "UNBOX_EXTERNAL_ISSUER",
        global = true,
        requires = "external_audience"
    )]
    pub external_issuer: Option<String>,
    #[arg(long, env = "UNBOX_EXTERNAL_AUDIENCE", global = true)]
    pub external_audience: Option<String>,
    /// The external issuer's JWKS URL.
    #[arg(
        long,
        env = "UNBOX_EXTERNAL_JWKS_URL",
        global = true,
        conflicts_with = "external_jwks_file"
    )]
    pub external_jwks_url: Option<String>,
    /// The external issuer's JWKS as a file.
    #[arg(long, env = "UNBOX_EXTERNAL_JWKS_FILE", global = true)]
    pub external_jwks_file: Option<PathBuf>,
    /// Largest JSON request body, in bytes.
    #[arg(long, env = "UNBOX_MAX_JSON_BODY", default_value_t = 1024 * 1024, global = true)]
    pub max_json_body: usize,
    /// Rotated-out signing keys (PEM: the old private key file, or its public key), repeatable
    /// (comma-separated in the environment). They stay in the JWKS and keep verifying what
    /// they signed until it expires; drop them once that is past (at most 7 days: the longest
    /// deployment token).
    #[arg(
        long = "previous-signing-key-file",
        env = "UNBOX_PREVIOUS_SIGNING_KEY_FILES",
        value_delimiter = ',',
        global = true
    )]
    pub previous_signing_key_files: Vec<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Reloaded on SIGHUP and when
    /// the file changes. Without it, plain HTTP for a TLS-terminating proxy.
    #[arg(long, env = "UNBOX_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "UNBOX_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Device requests a minute per identity (its strong keys); 0 turns the limit off.
    #[arg(
        long,
        env = "UNBOX_DEVICE_RATE_PER_IDENTITY",
        default_value_t = 60,
        global = true
    )]
    pub device_rate_per_identity: u32,
    /// Device requests a minute per client address; 0 (the default) turns the limit off, since
    /// a whole office may boot behind one NAT address.
    #[arg(
        long,
        env = "UNBOX_DEVICE_RATE_PER_ADDRESS",
        default_value_t = 0,
        global = true
    )]
    pub device_rate_per_address: u32,
    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For` names the client address.
    #[arg(
        long,
        env = "UNBOX_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<crate::device::rate_limit::Cidr>,
    /// Devices the device call's cache holds at most (about 2.3 KiB each, so the default
    /// keeps unboxd under 200 MB however many devices are registered; raise it to the number
    /// of devices that boot at once).
    #[arg(
        long,
        env = "UNBOX_DEVICE_CACHE_ENTRIES",
        default_value_t = 64_000,
        global = true
    )]
    pub device_cache_entries: usize,
    /// Microseconds a runtime worker that ran out of work keeps the core (yielding it to
    /// anything runnable) before it sleeps; 0 sleeps at once. See `crate::runtime`.
    #[arg(
        long,
        env = "UNBOX_IDLE_SPIN_US",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(0..=10_000),
        global = true
    )]
    pub idle_spin_us: u64,
}

/// The database URL with its password replaced, for the start-up banner.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}
