//! Databases for tests: each test gets a fresh database, cloned from a migrated template.
//!
//! The server is the one at `DATABASE_URL` when set (CI sets it); otherwise a private cluster
//! that the harness starts under the system's temp directory with the embedded launcher, and
//! leaves running for the next test process to reuse.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use tokio::sync::OnceCell;

use crate::embedded::{ClusterRole, EmbeddedCluster};

/// The server tests run against: connect options of its `postgres` database.
async fn server() -> &'static PgConnectOptions {
    static SERVER: OnceCell<PgConnectOptions> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return PgConnectOptions::from_str(&url)
                    .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"))
                    .database("postgres");
            }
            let dir = std::env::temp_dir().join("unbox-test-cluster");
            let cluster = EmbeddedCluster::start(&dir, ClusterRole::Guest)
                .await
                .unwrap_or_else(|e| {
                    panic!("no DATABASE_URL, and the private test cluster failed: {e}")
                });
            let options = cluster.connect_options("postgres");
            // Left running on purpose: the next test process reuses it.
            std::mem::forget(cluster);
            options
        })
        .await
}

async fn admin_connection() -> PgConnection {
    server()
        .await
        .clone()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"))
}

/// The name of a template database with every migration applied, made once per schema.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let fingerprint = crate::MIGRATOR.iter().fold(0u64, |acc, m| {
                acc.rotate_left(7)
                    ^ u64::from_le_bytes(m.checksum[..8].try_into().unwrap_or([0; 8]))
            });
            let name = format!("unbox_test_template_{fingerprint:016x}");
            let mut admin = admin_connection().await;
            // Serialise template creation between concurrent test processes.
            sqlx::query("SELECT pg_advisory_lock(7171)")
                .execute(&mut admin)
                .await
                .ok();
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap_or(false);
            if !exists {
                let building = format!("{name}_building");
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {building}"
                )))
                .execute(&mut admin)
                .await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("creating the template database: {e}"));
                let mut conn = server()
                    .await
                    .clone()
                    .database(&building)
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("connecting to the template database: {e}"));
                crate::MIGRATOR
                    .run(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("migrating the template database: {e}"));
                conn.close().await.ok();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {building} RENAME TO {name}"
                )))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("naming the template database: {e}"));
            }
            drop_stale_databases(&mut admin).await;
            sqlx::query("SELECT pg_advisory_unlock(7171)")
                .execute(&mut admin)
                .await
                .ok();
            admin.close().await.ok();
            name
        })
        .await
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Test databases are left behind for a failed test to be looked at; the next test process
/// drops those older than two hours (named `unbox_test_<unix seconds>_<uuid>`, or the older
/// form without the time). One still in use is skipped: `DROP DATABASE` refuses while anyone
/// is connected.
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'unbox\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_seconds().saturating_sub(2 * 60 * 60);
    for name in names {
        let rest = &name["unbox_test_".len()..];
        // Templates stay: another checkout's tests may be cloning theirs right now.
        let stale = !rest.starts_with("template_")
            && match rest.split_once('_') {
                Some((seconds, _)) => seconds.parse::<u64>().is_ok_and(|s| s < cutoff),
                // The older form, from before names carried their time.
                None => rest.len() == 32,
            };
        if stale && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// A new, migrated, empty database of its own for one test.
pub async fn fresh_database() -> PgConnectOptions {
    let template = template().await;
    let name = format!(
        "unbox_test_{}_{}",
        unix_seconds(),
        uuid::Uuid::new_v4().simple()
    );
    let mut admin = admin_connection().await;
    // Concurrent clones of one template can collide on its lock briefly: retry.
    let mut attempt = 0;
    loop {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut admin)
        .await;
        match created {
            Ok(_) => break,
            Err(e) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(error = %e, "retrying CREATE DATABASE");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => panic!("creating a test database: {e}"),
        }
    }
    admin.close().await.ok();
    server().await.clone().database(&name)
}

/// Drops a database made by [`fresh_database`] (benchmarks fill theirs with gigabytes; tests
/// leave theirs for inspection, and a later run drops them).
pub async fn drop_database(options: &PgConnectOptions) {
    let Some(name) = options.get_database() else {
        return;
    };
    let mut admin = admin_connection().await;
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    )))
    .execute(&mut admin)
    .await
    {
        tracing::warn!(error = %e, database = name, "dropping a test database failed");
    }
    admin.close().await.ok();
}

/// The URL form of connect options made by [`fresh_database`] (for child processes).
pub fn url_of(options: &PgConnectOptions) -> String {
    let user = options.get_username();
    let database = options.get_database().unwrap_or("postgres");
    let port = options.get_port();
    match options.get_socket() {
        // The socket directory as the URL's host, percent-encoded.
        Some(socket) => {
            let dir = socket
                .to_string_lossy()
                .replace('%', "%25")
                .replace('/', "%2F");
            format!("postgres://{user}@{dir}:{port}/{database}")
        }
        None => format!("postgres://{user}@{}:{port}/{database}", options.get_host()),
    }
}
