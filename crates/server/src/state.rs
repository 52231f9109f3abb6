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
    pub settings: Arc<Settings>,
}

/// Settings handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest JSON body accepted, in bytes.
    pub max_json_body: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_json_body: 1024 * 1024,
        }
    }
}
