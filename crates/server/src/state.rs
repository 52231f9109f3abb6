//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::tokens::TokenService;

/// The handlers' shared state: cloned for every request (by the router and by extractors), so
/// it is one reference-counted pointer to [`Services`].
#[derive(Clone, Debug)]
pub struct AppState(Arc<Services>);

impl From<Services> for AppState {
    fn from(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What every handler uses.
#[derive(Debug)]
pub struct Services {
    pub pool: PgPool,
    pub tokens: TokenService,
    pub metrics: PrometheusHandle,
    /// Compiled membership rules per tenant.
    pub rules: Arc<crate::cache::RuleCache>,
    pub settings: Arc<Settings>,
    /// The device protocol's cache, write batch and rate limits.
    pub device: Arc<crate::device::DeviceRuntime>,
}

/// Settings handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest JSON body accepted, in bytes.
    pub max_json_body: usize,
    /// The data directory: uploads are spooled under it.
    pub data_dir: std::path::PathBuf,
    /// The device protocol's settings, for the harness to vary (unboxd builds its runtime from
    /// its options).
    pub device: crate::device::DeviceSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_json_body: 1024 * 1024,
            data_dir: std::path::PathBuf::from("./data"),
            device: crate::device::DeviceSettings::default(),
        }
    }
}
