//! What the device protocol keeps per instance: the device cache, the write batch, the rate
//! limits; the background tasks beside them (batch writer, cache listener, deployment-timeout
//! and nonce sweep); and the middleware that keeps admin reads and writes consistent with them.

pub mod answer;
pub mod batch;
pub mod cache;
mod clock_map;
pub mod proof;
pub mod rate_limit;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::AppState;

/// How the device protocol runs.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Device requests a minute per identity (per strong claim key); 0: no limit.
    pub rate_per_identity: u32,
    /// Device requests a minute per client address; 0: no limit.
    pub rate_per_address: u32,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<rate_limit::Cidr>,
    /// Devices the cache holds at most.
    pub cache_entries: usize,
    /// How often the write batch is written.
    pub flush_interval: Duration,
    /// A batch this large is written at once.
    pub flush_items: usize,
    /// Devices the batch holds at most while the database is away.
    pub max_pending: usize,
    /// How long a challenge nonce lives.
    pub nonce_lifetime: Duration,
    /// How often lapsed deployments and expired nonces are swept.
    pub sweep_interval: Duration,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            rate_per_identity: 60,
            rate_per_address: 0,
            trusted_proxies: Vec::new(),
            cache_entries: 64_000,
            flush_interval: Duration::from_millis(200),
            flush_items: 2_000,
            max_pending: 200_000,
            nonce_lifetime: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// The device protocol's per-instance state.
#[derive(Debug)]
pub struct DeviceRuntime {
    pub settings: DeviceSettings,
    pub cache: Arc<cache::DeviceCache>,
    pub batch: Arc<batch::WriteBatch>,
    pub limits: rate_limit::Limiter,
    /// This instance, in the notifications it causes.
    pub origin: String,
}

impl DeviceRuntime {
    pub fn new(settings: DeviceSettings) -> Arc<DeviceRuntime> {
        Arc::new(DeviceRuntime {
            cache: Arc::new(cache::DeviceCache::new(settings.cache_entries)),
            batch: Arc::new(batch::WriteBatch::new(
                settings.flush_interval,
                settings.flush_items,
                settings.max_pending,
            )),
            limits: rate_limit::Limiter::new(
                settings.rate_per_identity,
                settings.rate_per_address,
                settings.trusted_proxies.clone(),
            ),
            origin: Uuid::new_v4().simple().to_string(),
            settings,
        })
    }

    /// Starts the background tasks; they stop with `shutdown`.
    pub fn spawn(self: &Arc<Self>, pool: &PgPool, shutdown: tokio::sync::watch::Receiver<bool>) {
        cache::spawn_listener(
            pool.clone(),
            self.cache.clone(),
            self.origin.clone(),
            shutdown.clone(),
        );
        self.batch.clone().spawn(
            pool.clone(),
            self.cache.clone(),
            self.origin.clone(),
            shutdown.clone(),
        );
        spawn_sweep(pool.clone(), self.clone(), shutdown);
    }

    /// Writes what the batch still holds (after serving stopped).
    pub async fn drain(&self, pool: &PgPool) {
        self.batch.drain(pool, &self.cache, &self.origin).await;
    }
}

/// Fails lapsed deployments, deletes expired nonces and forgets idle rate-limit keys, every
/// sweep interval.
fn spawn_sweep(
    pool: PgPool,
    runtime: Arc<DeviceRuntime>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(runtime.settings.sweep_interval) => {}
                _ = shutdown.changed() => return,
            }
            runtime.limits.sweep();
            if let Err(error) = sweep_once(&pool, &runtime.cache).await {
                tracing::warn!(error = %error, "the deployment sweep failed; will retry");
            }
        }
    });
}

/// One sweep: lapsed deployments fail (in batches), expired nonces go.
pub async fn sweep_once(pool: &PgPool, cache: &cache::DeviceCache) -> Result<(), sqlx::Error> {
    const BATCH: i64 = 10_000;
    let mut conn = pool.acquire().await?;
    loop {
        let failed = unbox_db::deployments::fail_lapsed_batch(&mut conn, BATCH).await?;
        for (tenant_id, device_id) in &failed {
            cache.invalidate_device(*tenant_id, *device_id);
        }
        metrics::counter!("unbox_deployments_timed_out_total").increment(failed.len() as u64);
        if (failed.len() as i64) < BATCH {
            break;
        }
    }
    unbox_db::nonces::delete_expired(&mut conn).await?;
    Ok(())
}

/// The tenant a bearer token names (`tid`), read without verifying it: used only to decide
/// what to invalidate, where a forged token can cost nothing but a cache refill.
fn token_tenant(request: &Request) -> Option<Uuid> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("tid")?.as_str()?.parse().ok()
}

/// Keeps admin requests consistent with the device call's memory (the layer wraps the admin
/// API's routes only, see `crate::app`):
/// - a read (`GET /v1/…`) first waits for the write batch, so it sees every download that was
///   answered before it (at most a second; then it reads what is there);
/// - a write that succeeded invalidates, before its response leaves, what it may have changed
///   in this instance's device cache: its tenant (and the device it names), so the very next
///   device request sees it. Other instances learn of it through the triggers' notifications.
pub async fn consistency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let method = request.method().clone();
    if method == Method::GET || method == Method::HEAD {
        if !state.device.batch.flush(Duration::from_secs(1)).await {
            tracing::warn!("reading before the device batch could be written");
        }
        return next.run(request).await;
    }
    let tenant = token_tenant(&request);
    let device = path
        .strip_prefix("/v1/devices/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse::<Uuid>().ok());
    let response = next.run(request).await;
    if response.status().is_success() {
        let cache = &state.device.cache;
        match tenant {
            Some(tenant) => {
                cache.invalidate_tenant(tenant);
                if let Some(device) = device {
                    cache.invalidate_device(tenant, device);
                }
            }
            // Partners' writes and the like: not worth being precise about.
            None => cache.invalidate_all(),
        }
    }
    response
}
