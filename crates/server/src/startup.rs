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

use crate::auth::tokens::{ExternalIssuerConfig, JwksSource, LocalKey, TokenService};
use crate::auth::{Scope, secrets};
use crate::config::{GlobalOptions, ServeOptions, redact_url};
use crate::state::{AppState, Settings};

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
    Ok(TokenService::new(
        issuer,
        Duration::from_secs(serve.token_lifetime.max(60)),
        key,
        external,
    ))
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
    AppState {
        pool,
        tokens,
        metrics: crate::telemetry::metrics_handle(),
        settings: Arc::new(Settings {
            max_json_body: serve.max_json_body,
            data_dir: global.data_dir.clone(),
        }),
    }
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, crate::app(state))
        .with_graceful_shutdown(shutdown)
        .await
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
