//! Per-tenant compiled membership rules, cached per instance and kept right across instances
//! by PostgreSQL LISTEN/NOTIFY: a write notifies `unbox_invalidate` with the tenant id inside
//! its transaction; every instance drops that tenant's entry when the notification arrives.
//! While the notification connection is down, nothing is served from the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use unbox_rules::CompiledRule;
use uuid::Uuid;

/// A live (not paused) dynamic group, its rule compiled.
#[derive(Debug, Clone)]
pub struct LiveGroup {
    pub group_id: Uuid,
    pub name: String,
    pub rule: CompiledRule,
}

/// What resolution needs of a tenant's rules.
#[derive(Debug, Default)]
pub struct TenantRules {
    pub live: Vec<LiveGroup>,
}

/// Bounded: past this many tenants the cache starts over (the working set of a large
/// multi-tenant deployment refills it in milliseconds).
const MAX_TENANTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct RuleCache {
    entries: RwLock<HashMap<Uuid, Arc<TenantRules>>>,
    /// Bumped by every invalidation, so that a load that raced one is not cached.
    epoch: AtomicU64,
    /// True only while the notification connection is up.
    trusted: AtomicBool,
    /// How many times the notification connection has been (re)established.
    connections: AtomicU64,
}

pub fn compile(rows: Vec<unbox_db::groups::DynamicRule>) -> TenantRules {
    let live = rows
        .into_iter()
        .filter(|row| row.processing_state == "on")
        .filter_map(|row| match unbox_rules::check(&row.membership_rule).rule {
            Some(rule) => Some(LiveGroup { group_id: row.group_id, name: row.display_name, rule }),
            None => {
                // Stored rules were checked when written; a rule the language no longer accepts
                // matches nothing rather than failing every request of the tenant.
                tracing::error!(group_id = %row.group_id, "a stored membership rule no longer compiles");
                None
            }
        })
        .collect();
    TenantRules { live }
}

impl RuleCache {
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// How many times the notification connection has been (re)established.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// The tenant's rules: from the cache when it can be trusted, else from the database.
    pub async fn get(
        &self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
    ) -> Result<Arc<TenantRules>, sqlx::Error> {
        if self.is_trusted()
            && let Some(found) = self
                .entries
                .read()
                .ok()
                .and_then(|e| e.get(&tenant_id).cloned())
        {
            return Ok(found);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let rows = unbox_db::groups::dynamic_rules(conn, tenant_id).await?;
        let rules = Arc::new(compile(rows));
        if self.is_trusted()
            && self.epoch.load(Ordering::Acquire) == epoch
            && let Ok(mut entries) = self.entries.write()
        {
            if entries.len() >= MAX_TENANTS {
                entries.clear();
            }
            // Checked again under the lock: an invalidation may have landed meanwhile.
            if self.epoch.load(Ordering::Acquire) == epoch {
                entries.insert(tenant_id, rules.clone());
            }
        }
        Ok(rules)
    }

    pub fn invalidate(&self, tenant_id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&tenant_id);
        }
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Release);
        metrics::gauge!("unbox_cache_notifications_connected").set(if trusted { 1.0 } else { 0.0 });
    }
}

/// Keeps a LISTEN connection open for as long as the process runs: trusts the cache only while
/// it is up, and starts the cache over whenever it (re)connects, since notifications may have
/// been missed meanwhile.
pub fn spawn_listener(
    pool: PgPool,
    cache: Arc<RuleCache>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.ignore_pool_close_event(false);
                // Report a lost connection at once (and stop trusting the cache), rather than
                // after reconnecting, which waits for the database to come back.
                listener.eager_reconnect(false);
                listener.listen(unbox_db::notify::TENANT_CHANGED).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let listener = tokio::select! {
                result = connected => result,
                _ = shutdown.changed() => return,
            };
            match listener {
                Ok(mut listener) => {
                    cache.invalidate_all();
                    cache.connections.fetch_add(1, Ordering::AcqRel);
                    cache.set_trusted(true);
                    backoff = Duration::from_millis(100);
                    tracing::info!("listening for cache invalidations");
                    loop {
                        let next = tokio::select! {
                            next = listener.try_recv() => next,
                            _ = shutdown.changed() => return,
                        };
                        match next {
                            Ok(Some(notification)) => {
                                match notification.payload().parse::<Uuid>() {
                                    Ok(tenant_id) => cache.invalidate(tenant_id),
                                    Err(_) => cache.invalidate_all(),
                                }
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                    tracing::warn!(
                        "the cache-invalidation connection was lost; serving without the cache until it is back"
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for cache invalidations; serving without the cache");
                }
            }
            cache.set_trusted(false);
            cache.invalidate_all();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// Commits a write that changes what the tenant's devices resolve to, telling every instance
/// (by NOTIFY, delivered at commit) and this one (at once, so its very next request sees it).
pub async fn commit_tenant_change(
    state: &crate::state::AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
) -> Result<(), sqlx::Error> {
    unbox_db::notify::tenant_changed(&mut tx, tenant_id).await?;
    tx.commit().await?;
    state.rules.invalidate(tenant_id);
    Ok(())
}
