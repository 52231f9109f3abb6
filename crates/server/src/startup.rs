//! Bringing the service up and down: the database (a server at DATABASE_URL, or the embedded
//! cluster), migrations, keys, the listener, graceful shutdown; and `unboxd admin` commands.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use unbox_db::embedded::{ClusterRole, EmbeddedCluster};
use uuid::Uuid;

use crate::auth::tokens::{ExternalIssuerConfig, JwksSource, LocalKey, PublicKey, TokenService};
use crate::auth::{Scope, secrets};
use crate::config::{GlobalOptions, ServeOptions, redact_url};
use crate::state::{AppState, Services, Settings};

/// The name of the database unboxd creates in its embedded cluster.
pub const EMBEDDED_DATABASE: &str = "unbox";

/// An open database, and the embedded cluster behind it if there is one.
pub struct Database {
    pub pool: PgPool,
    pub cluster: Option<EmbeddedCluster>,
}

impl Database {
    /// Connects (creating the database if needed) and applies migrations.
    pub async fn open(global: &GlobalOptions, role: ClusterRole) -> anyhow::Result<Database> {
        let settings = unbox_db::PoolSettings {
            max_connections: global.db_max_connections.max(2),
            ..Default::default()
        };
        let (options, cluster) = match &global.database_url {
            Some(url) => {
                tracing::info!(database = %redact_url(url), "using the PostgreSQL server of DATABASE_URL");
                let options = PgConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a PostgreSQL URL")?;
                let name = options.get_database().unwrap_or("postgres").to_owned();
                if name != "postgres" {
                    unbox_db::embedded::ensure_database(
                        &options.clone().database("postgres"),
                        &name,
                    )
                    .await
                    .with_context(|| format!("creating database `{name}`"))?;
                }
                (options, None)
            }
            None => {
                let cluster = EmbeddedCluster::start(&global.data_dir, role).await?;
                unbox_db::embedded::ensure_database(
                    &cluster.connect_options("postgres"),
                    EMBEDDED_DATABASE,
                )
                .await
                .context("creating the embedded database")?;
                (cluster.connect_options(EMBEDDED_DATABASE), Some(cluster))
            }
        };
        let pool = unbox_db::connect(options, &settings)
            .await
            .context("connecting to PostgreSQL")?;
        unbox_db::migrate(&pool)
            .await
            .context("applying migrations")?;
        Ok(Database { pool, cluster })
    }

    /// Closes the pool, then stops the embedded cluster if this process is responsible for it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(cluster) = self.cluster
            && let Err(error) = cluster.stop().await
        {
            tracing::error!(error = %error, "stopping the embedded PostgreSQL cluster");
        }
    }
}

/// The token service from the options: the signing key from its file, or generated into the
/// data directory; and the external issuer if configured.
pub fn token_service(
    global: &GlobalOptions,
    serve: &ServeOptions,
    issuer: String,
) -> anyhow::Result<TokenService> {
    let key = match &serve.signing_key_file {
        Some(path) => LocalKey::load(path)?,
        None => LocalKey::load_or_generate(&global.data_dir.join("signing-key.pem"))?,
    };
    let external = match (&serve.external_issuer, &serve.external_audience) {
        (Some(issuer), Some(audience)) => {
            let jwks = match (&serve.external_jwks_url, &serve.external_jwks_file) {
                (Some(url), _) => JwksSource::Url(url.clone()),
                (None, Some(file)) => JwksSource::File(file.clone()),
                (None, None) => anyhow::bail!(
                    "--external-issuer needs --external-jwks-url or --external-jwks-file"
                ),
            };
            Some(ExternalIssuerConfig {
                issuer: issuer.clone(),
                audience: audience.clone(),
                jwks,
            })
        }
        _ => None,
    };
    let previous = serve
        .previous_signing_key_files
        .iter()
        .map(|path| PublicKey::load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TokenService::new(
        issuer,
        Duration::from_secs(serve.token_lifetime.max(60)),
        key,
        external,
    )
    .with_previous_keys(previous))
}

/// The device protocol's settings from the options.
pub fn device_settings(serve: &ServeOptions) -> crate::device::DeviceSettings {
    crate::device::DeviceSettings {
        rate_per_identity: serve.device_rate_per_identity,
        rate_per_address: serve.device_rate_per_address,
        trusted_proxies: serve.trusted_proxies.clone(),
        cache_entries: serve.device_cache_entries.max(1),
        ..Default::default()
    }
}

pub fn public_url(serve: &ServeOptions, bound: std::net::SocketAddr) -> String {
    serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"))
        .trim_end_matches('/')
        .to_owned()
}

pub fn app_state(
    pool: PgPool,
    tokens: TokenService,
    global: &GlobalOptions,
    serve: &ServeOptions,
) -> AppState {
    AppState::from(Services {
        pool,
        tokens,
        metrics: crate::telemetry::metrics_handle(),
        rules: Arc::default(),
        device: crate::device::DeviceRuntime::new(device_settings(serve)),
        settings: Arc::new(Settings {
            max_json_body: serve.max_json_body,
            data_dir: global.data_dir.clone(),
            device: device_settings(serve),
        }),
    })
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, state, None, shutdown).await
}

/// Serves HTTPS until `shutdown` completes, then finishes in-flight requests. The certificate
/// is reloaded on SIGHUP and when its files change.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: crate::device::tls::Tls,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::device::tls::TlsListener::new(listener, &tls)?;
    serve_on(listener, state, Some(tls), shutdown).await
}

async fn serve_on<L>(
    listener: L,
    state: AppState,
    tls: Option<crate::device::tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    crate::device::rate_limit::PeerAddr:
        for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    // Background tasks stop when serving stops.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    spawn_background(&state, stopped.clone());
    if let Some(tls) = &tls {
        tls.spawn_reloader(stopped);
    }
    let pool = state.pool.clone();
    let device = state.device.clone();
    let served = axum::serve(
        listener,
        crate::app(state)
            .into_make_service_with_connect_info::<crate::device::rate_limit::PeerAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop.send(true);
    })
    .await;
    // Downloads answered before the end are written before the process goes.
    device.drain(&pool).await;
    served
}

/// The tasks that run beside the HTTP server.
fn spawn_background(state: &AppState, stopped: tokio::sync::watch::Receiver<bool>) {
    crate::telemetry::spawn_metrics_upkeep(state.metrics.clone(), stopped.clone());
    crate::cache::spawn_listener(state.pool.clone(), state.rules.clone(), stopped.clone());
    crate::membership::spawn_worker(state.pool.clone(), stopped.clone());
    state.device.spawn(&state.pool, stopped.clone());
    crate::imports::worker::spawn(state.clone(), stopped);
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// What `unboxd admin bootstrap` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrapped {
    pub tenant_id: Uuid,
    pub client_id: Uuid,
    pub client_secret: String,
}

/// Creates a tenant and an admin client with every tenant scope.
pub async fn bootstrap(pool: &PgPool, name: &str, domain: &str) -> anyhow::Result<Bootstrapped> {
    let errors = crate::routes::tenant::validate(name, domain, &Default::default());
    if !errors.is_empty() {
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        anyhow::bail!("invalid tenant: {}", text.join("; "));
    }
    let secret = secrets::generate_secret();
    let hash = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || secrets::hash_blocking(&secret)).await??
    };
    let tenant_id = Uuid::now_v7();
    let client_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    unbox_db::tenants::insert(&mut tx, tenant_id, name, domain).await?;
    unbox_db::clients::insert(
        &mut tx,
        tenant_id,
        client_id,
        "bootstrap admin",
        &Scope::all_tenant_strings(),
        &hash,
    )
    .await?;
    unbox_db::audit::record(
        &mut tx,
        unbox_db::audit::NewEntry {
            tenant_id,
            actor_kind: "system",
            actor_id: Some("unboxd admin bootstrap".to_owned()),
            action: "tenant.create",
            resource_type: "tenant",
            resource_id: Some(tenant_id.to_string()),
            before: None,
            after: Some(serde_json::json!({ "displayName": name, "domain": domain, "adminClientId": client_id })),
            request_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Bootstrapped {
        tenant_id,
        client_id,
        client_secret: secret,
    })
}

/// What `unboxd admin partner create` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnerCreated {
    pub partner_id: Uuid,
    pub client_id: Uuid,
    pub client_secret: String,
}

/// Creates a partner (an OEM or reseller) and its API client with the partner scope. Tenants
/// then authorize it with `POST /v1/partner-authorizations`.
pub async fn create_partner(pool: &PgPool, name: &str) -> anyhow::Result<PartnerCreated> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        anyhow::bail!(
            "invalid partner name: it must be 1 to 200 characters, without control characters"
        );
    }
    let secret = secrets::generate_secret();
    let hash = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || secrets::hash_blocking(&secret)).await??
    };
    let partner_id = Uuid::now_v7();
    let client_id = Uuid::now_v7();
    let scopes: Vec<String> = Scope::PARTNER
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let mut tx = pool.begin().await?;
    unbox_db::partners::insert(&mut tx, partner_id, name).await?;
    unbox_db::partners::insert_client(
        &mut tx,
        partner_id,
        client_id,
        "partner admin",
        &scopes,
        &hash,
    )
    .await?;
    tx.commit().await?;
    Ok(PartnerCreated {
        partner_id,
        client_id,
        client_secret: secret,
    })
}
