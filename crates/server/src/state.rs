//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::tokens::TokenService;

#[derive(Clone, Debug)]
pub struct AppState {
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
