//! Partners (OEMs, resellers), their API clients, and the tenants' consent to them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct PartnerRow {
    pub id: Uuid,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

/// What the token endpoint needs to check a partner client's secret.
#[derive(Debug, Clone)]
pub struct PartnerCredentials {
    pub partner_id: Uuid,
    pub id: Uuid,
    pub scopes: Vec<String>,
    pub secret_hash: String,
}

/// A tenant's consent to a partner.
#[derive(Debug, Clone)]
pub struct AuthorizationRow {
    pub tenant_id: Uuid,
    pub partner_id: Uuid,
    pub partner_name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    display_name: &str,
) -> Result<PartnerRow, sqlx::Error> {
    sqlx::query_as!(
        PartnerRow,
        "INSERT INTO partners (id, display_name) VALUES ($1, $2)
         RETURNING id, display_name, created_at",
        id,
        display_name
    )
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<PartnerRow>, sqlx::Error> {
    sqlx::query_as!(
        PartnerRow,
        "SELECT id, display_name, created_at FROM partners WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

pub async fn insert_client(
    conn: &mut PgConnection,
    partner_id: Uuid,
    id: Uuid,
    display_name: &str,
    scopes: &[String],
    secret_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO partner_clients (partner_id, id, display_name, scopes, secret_hash)
         VALUES ($1, $2, $3, $4, $5)",
        partner_id,
        id,
        display_name,
        scopes,
        secret_hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn credentials(
    conn: &mut PgConnection,
    client_id: Uuid,
) -> Result<Option<PartnerCredentials>, sqlx::Error> {
    sqlx::query_as!(
        PartnerCredentials,
        "SELECT partner_id, id, scopes, secret_hash FROM partner_clients WHERE id = $1",
        client_id
    )
    .fetch_optional(conn)
    .await
}

/// Whether the partner client still exists (tokens of a deleted client stop working).
pub async fn client_exists(
    conn: &mut PgConnection,
    partner_id: Uuid,
    client_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM partner_clients WHERE partner_id = $1 AND id = $2)",
        partner_id,
        client_id
    )
    .fetch_one(conn)
    .await?;
    Ok(found.unwrap_or(false))
}

/// Records the tenant's consent; None when it was already given.
pub async fn authorize(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_id: Uuid,
) -> Result<Option<AuthorizationRow>, sqlx::Error> {
    sqlx::query_as!(
        AuthorizationRow,
        r#"WITH added AS (
             INSERT INTO partner_authorizations (tenant_id, partner_id) VALUES ($1, $2)
             ON CONFLICT (tenant_id, partner_id) DO NOTHING
             RETURNING tenant_id, partner_id, created_at)
           SELECT a.tenant_id AS "tenant_id!", a.partner_id AS "partner_id!",
                  p.display_name AS "partner_name!", a.created_at AS "created_at!"
           FROM added a JOIN partners p ON p.id = a.partner_id"#,
        tenant_id,
        partner_id
    )
    .fetch_optional(conn)
    .await
}

pub async fn authorization(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_id: Uuid,
) -> Result<Option<AuthorizationRow>, sqlx::Error> {
    sqlx::query_as!(
        AuthorizationRow,
        r#"SELECT a.tenant_id, a.partner_id, p.display_name AS partner_name, a.created_at
           FROM partner_authorizations a JOIN partners p ON p.id = a.partner_id
           WHERE a.tenant_id = $1 AND a.partner_id = $2"#,
        tenant_id,
        partner_id
    )
    .fetch_optional(conn)
    .await
}

/// Whether the tenant authorized the partner. With `hold`, the consent row is locked (FOR
/// SHARE) until the transaction ends, so a revocation waits for the work done under it.
pub async fn is_authorized(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_id: Uuid,
    hold: bool,
) -> Result<bool, sqlx::Error> {
    let found = if hold {
        sqlx::query_scalar!(
            "SELECT 1 AS one FROM partner_authorizations
             WHERE tenant_id = $1 AND partner_id = $2 FOR SHARE",
            tenant_id,
            partner_id
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_scalar!(
            "SELECT 1 AS one FROM partner_authorizations WHERE tenant_id = $1 AND partner_id = $2",
            tenant_id,
            partner_id
        )
        .fetch_optional(conn)
        .await?
    };
    Ok(found.is_some())
}

pub async fn list_authorizations(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuthorizationRow>, sqlx::Error> {
    sqlx::query_as!(
        AuthorizationRow,
        r#"SELECT a.tenant_id, a.partner_id, p.display_name AS partner_name, a.created_at
           FROM partner_authorizations a JOIN partners p ON p.id = a.partner_id
           WHERE a.tenant_id = $1 AND ($2::uuid IS NULL OR a.partner_id > $2)
           ORDER BY a.partner_id LIMIT $3"#,
        tenant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Withdraws the consent; None when there was none.
pub async fn revoke(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_id: Uuid,
) -> Result<Option<AuthorizationRow>, sqlx::Error> {
    sqlx::query_as!(
        AuthorizationRow,
        r#"WITH gone AS (
             DELETE FROM partner_authorizations WHERE tenant_id = $1 AND partner_id = $2
             RETURNING tenant_id, partner_id, created_at)
           SELECT g.tenant_id AS "tenant_id!", g.partner_id AS "partner_id!",
                  p.display_name AS "partner_name!", g.created_at AS "created_at!"
           FROM gone g JOIN partners p ON p.id = g.partner_id"#,
        tenant_id,
        partner_id
    )
    .fetch_optional(conn)
    .await
}
