//! Challenge nonces for proof of possession: single use, short-lived, stored here so that any
//! instance can verify what another handed out.

use sqlx::PgConnection;

pub async fn insert(
    conn: &mut PgConnection,
    nonce: &str,
    subject: &str,
    lifetime_secs: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO device_nonces (nonce, subject, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
        nonce,
        subject,
        f64::from(lifetime_secs)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes a nonce: returns its subject if it existed and had not expired. Atomic, so a nonce
/// is good for one request on one instance only.
pub async fn consume(conn: &mut PgConnection, nonce: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query!(
        r#"DELETE FROM device_nonces WHERE nonce = $1
           RETURNING subject, expires_at > now() AS "live!""#,
        nonce
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.filter(|r| r.live).map(|r| r.subject))
}

/// Deletes expired nonces; returns how many.
pub async fn delete_expired(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM device_nonces WHERE expires_at <= now()")
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
