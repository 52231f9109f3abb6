//! PostgreSQL access for Unbox: the pool, the migrator, the embedded-cluster launcher, and the
//! queries, one module per resource. Query functions take `&mut PgConnection` so that callers
//! compose them inside one transaction.

pub mod embedded;

pub mod assignments;
pub mod audit;
pub mod clients;
pub mod deployments;
pub mod device_events;
pub mod device_serving;
pub mod devices;
pub mod groups;
pub mod imports;
pub mod memberships;
pub mod nonces;
pub mod notify;
pub mod partners;
pub mod profiles;
pub mod tenants;

#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
pub use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Pool bounds: a fixed maximum and a bounded wait, so overload becomes errors, not a queue
/// that grows without end.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a pooled connection may sit unused before it is checked again when taken.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

pub async fn connect(
    options: PgConnectOptions,
    settings: &PoolSettings,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx pings every connection it hands out, a round trip before each use. A connection
        // in steady use was just checked when it came back (sqlx pings it on release), so only
        // one that sat idle (through a database restart, say) is pinged before it is used.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .idle_timeout(Duration::from_secs(300))
        .connect_with(options.application_name("unboxd"))
        .await
}

/// Applies pending migrations (a PostgreSQL advisory lock keeps concurrent instances apart).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when every embedded migration has been applied to the database.
pub async fn migrations_applied(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// Whether an error is a violation of the named unique constraint (or of any, with `None`).
pub fn is_unique_violation(error: &sqlx::Error, constraint: Option<&str>) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && constraint.is_none_or(|name| db.constraint() == Some(name))
        }
        _ => false,
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
