//! Deployments: opened by a profile download, continued by another download within an hour,
//! advanced by the device's events, failed when no event came for longer than their timeout.
//!
//! The device call does not write here itself: it buffers its downloads and
//! [`flush_downloads`] writes a whole batch with a few set-based statements.
//! Reads compute the timeout ([`EFFECTIVE_STATUS`]) so they are never stale between sweeps.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A profile download to record: the contact, and the deployment it opened or continued.
#[derive(Debug, Clone)]
pub struct Download {
    pub tenant_id: Uuid,
    pub device_id: Uuid,
    pub at: DateTime<Utc>,
    pub os_type: String,
    /// The downloaded profile's name (`enrollmentProfileName`); None when no profile applied.
    pub profile_name: Option<String>,
    /// The OS type or the profile name differ from what the device record holds: only then
    /// is the (wide) device row written; the contact time goes to its narrow row.
    pub facts_changed: bool,
    pub deployment: Option<DownloadDeployment>,
}

/// The deployment a download opened (`new`) or continued.
#[derive(Debug, Clone)]
pub struct DownloadDeployment {
    pub id: Uuid,
    pub new: bool,
    pub profile_id: Uuid,
    pub opened_at: DateTime<Utc>,
    pub timeout_at: DateTime<Utc>,
    pub timeout_minutes: i32,
}

/// Writes a batch of downloads in one transaction (the caller's): new deployments (and the
/// older open ones they supersede), the devices' contact times with the deployment each
/// download opened or continued (narrow rows of `device_contacts`: a continued deployment's
/// row is not written) and, where they changed, the device fields rules read. Downloads of
/// devices deleted meanwhile are skipped. The batch holds at most one download per device.
pub async fn flush_downloads(
    conn: &mut PgConnection,
    downloads: &[Download],
) -> Result<(), sqlx::Error> {
    // The shape of the statements below: the batch's rows (`UNNEST`) drive, and a `LATERAL`
    // subquery fenced with `OFFSET 0` finds each row's match by key, so the plan is a lookup
    // per batch row whatever the planner believes of the tables' sizes. Left to choose, it
    // hashed whole tables for every batch, or, with statistics taken while a table was small
    // (the first boot storm of an installation), rescanned it once per batch row. Updates
    // then address the rows found by `ctid`; a row another transaction changed meanwhile is
    // skipped (its new version has another `ctid`), which each statement says how it handles.
    let opened: Vec<_> = downloads
        .iter()
        .filter_map(|d| d.deployment.as_ref().map(|dep| (d, dep)))
        .filter(|(_, dep)| dep.new)
        .collect();
    if !opened.is_empty() {
        let tenants: Vec<Uuid> = opened.iter().map(|(d, _)| d.tenant_id).collect();
        let ids: Vec<Uuid> = opened.iter().map(|(_, x)| x.id).collect();
        let devices: Vec<Uuid> = opened.iter().map(|(d, _)| d.device_id).collect();
        let profiles: Vec<Uuid> = opened.iter().map(|(_, x)| x.profile_id).collect();
        let names: Vec<String> = opened
            .iter()
            .map(|(d, _)| d.profile_name.clone().unwrap_or_default())
            .collect();
        let opened_at: Vec<DateTime<Utc>> = opened.iter().map(|(_, x)| x.opened_at).collect();
        let at: Vec<DateTime<Utc>> = opened.iter().map(|(d, _)| d.at).collect();
        let timeouts: Vec<DateTime<Utc>> = opened.iter().map(|(_, x)| x.timeout_at).collect();
        let minutes: Vec<i32> = opened.iter().map(|(_, x)| x.timeout_minutes).collect();
        // A retried batch may meet its own rows: then they move on as continued ones do.
        sqlx::query!(
            "INSERT INTO deployments (tenant_id, id, device_id, profile_id, profile_name, opened_at,
                    last_download_at, timeout_at, timeout_minutes)
             SELECT u.tenant_id, u.id, u.device_id, u.profile_id, u.profile_name, u.opened_at,
                    u.at, u.timeout_at, u.timeout_minutes
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                         $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::int[])
                  AS u (tenant_id, id, device_id, profile_id, profile_name, opened_at, at,
                        timeout_at, timeout_minutes)
             CROSS JOIN LATERAL (SELECT 1 FROM devices d
                                 WHERE d.tenant_id = u.tenant_id AND d.id = u.device_id
                                 OFFSET 0) AS registered
             ORDER BY u.tenant_id, u.id
             ON CONFLICT (tenant_id, id) DO UPDATE
                 SET last_download_at = greatest(deployments.last_download_at, excluded.last_download_at),
                     timeout_at = greatest(deployments.timeout_at, excluded.timeout_at)
                 WHERE deployments.status = 'inProgress'",
            &tenants,
            &ids,
            &devices,
            &profiles,
            &names,
            &opened_at,
            &at,
            &timeouts,
            &minutes
        )
        .execute(&mut *conn)
        .await?;
        // A device that opens a deployment has given up on any older open one. (One that an
        // event changed at this very moment stays open, and times out or finishes.)
        sqlx::query!(
            "UPDATE deployments o
             SET status = 'failed', failure_reason = 'superseded', finished_at = s.opened_at
             FROM (SELECT older.row, u.opened_at
                   FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[])
                        AS u (tenant_id, id, device_id, opened_at)
                   CROSS JOIN LATERAL (
                       SELECT x.ctid AS row FROM deployments x
                       WHERE x.tenant_id = u.tenant_id AND x.device_id = u.device_id
                         AND x.status = 'inProgress' AND x.id <> u.id
                         AND x.opened_at < u.opened_at
                       OFFSET 0) AS older) s
             WHERE o.ctid = s.row AND o.status = 'inProgress'",
            &tenants,
            &ids,
            &devices,
            &opened_at
        )
        .execute(&mut *conn)
        .await?;
    }
    // Every download, continued deployments included, is one write of the device's contact
    // row. In a boot storm every device already has one: a plain update of the rows found by
    // key, nothing returned, is the whole write. When it updated fewer rows than the batch
    // holds (first contacts, rows another transaction changed under the update, which skips
    // them, their `ctid` having moved, or devices deleted meanwhile), an upsert goes over the
    // whole batch.
    let tenants: Vec<Uuid> = downloads.iter().map(|d| d.tenant_id).collect();
    let devices: Vec<Uuid> = downloads.iter().map(|d| d.device_id).collect();
    let at: Vec<DateTime<Utc>> = downloads.iter().map(|d| d.at).collect();
    let deployments: Vec<Option<Uuid>> = downloads
        .iter()
        .map(|d| d.deployment.as_ref().map(|x| x.id))
        .collect();
    let updated = sqlx::query!(
        "UPDATE device_contacts c
         SET last_contacted_at = greatest(c.last_contacted_at, s.at),
             last_download_deployment_id = CASE
                 WHEN s.deployment_id IS NOT NULL AND s.at >= coalesce(c.last_download_at, '-infinity')
                 THEN s.deployment_id ELSE c.last_download_deployment_id END,
             last_download_at = CASE
                 WHEN s.deployment_id IS NOT NULL AND s.at >= coalesce(c.last_download_at, '-infinity')
                 THEN s.at ELSE c.last_download_at END
         FROM (SELECT found.row, b.at, b.deployment_id
               FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[])
                    AS b (tenant_id, device_id, at, deployment_id)
               CROSS JOIN LATERAL (
                   SELECT x.ctid AS row FROM device_contacts x
                   WHERE x.tenant_id = b.tenant_id AND x.device_id = b.device_id
                   OFFSET 0) AS found) s
         WHERE c.ctid = s.row",
        &tenants,
        &devices,
        &at,
        &deployments as &[Option<Uuid>]
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if usize::try_from(updated).is_ok_and(|n| n < downloads.len()) {
        upsert_contacts(conn, &tenants, &devices, &at, &deployments).await?;
    }
    let changed: Vec<&Download> = downloads.iter().filter(|d| d.facts_changed).collect();
    if !changed.is_empty() {
        let tenants: Vec<Uuid> = changed.iter().map(|d| d.tenant_id).collect();
        let devices: Vec<Uuid> = changed.iter().map(|d| d.device_id).collect();
        let names: Vec<Option<String>> = changed.iter().map(|d| d.profile_name.clone()).collect();
        let os: Vec<String> = changed.iter().map(|d| d.os_type.clone()).collect();
        sqlx::query!(
            "UPDATE devices d
             SET enrollment_profile_name = coalesce(u.profile_name, d.enrollment_profile_name),
                 os_type = u.os_type
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[])
                  AS u (tenant_id, id, profile_name, os_type)
             WHERE d.tenant_id = u.tenant_id AND d.id = u.id",
            &tenants,
            &devices,
            &names as &[Option<String>],
            &os
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// The contact rows of a whole batch, whichever exist: first contacts inserted, existing rows
/// upserted (the later download wins; a row the update before wrote is written to the same
/// values), devices deleted meanwhile skipped.
async fn upsert_contacts(
    conn: &mut PgConnection,
    tenants: &[Uuid],
    devices: &[Uuid],
    at: &[DateTime<Utc>],
    deployments: &[Option<Uuid>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO device_contacts (tenant_id, device_id, last_contacted_at,
                                      last_download_deployment_id, last_download_at)
         SELECT b.tenant_id, b.device_id, b.at, b.deployment_id,
                CASE WHEN b.deployment_id IS NOT NULL THEN b.at END
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[])
              AS b (tenant_id, device_id, at, deployment_id)
         CROSS JOIN LATERAL (SELECT 1 FROM devices d
                             WHERE d.tenant_id = b.tenant_id AND d.id = b.device_id
                             OFFSET 0) AS registered
         ORDER BY b.tenant_id, b.device_id
         ON CONFLICT (tenant_id, device_id) DO UPDATE
             SET last_contacted_at = greatest(device_contacts.last_contacted_at,
                                              excluded.last_contacted_at),
                 last_download_deployment_id = CASE
                     WHEN excluded.last_download_deployment_id IS NOT NULL
                      AND excluded.last_download_at >= coalesce(device_contacts.last_download_at, '-infinity')
                     THEN excluded.last_download_deployment_id
                     ELSE device_contacts.last_download_deployment_id END,
                 last_download_at = CASE
                     WHEN excluded.last_download_deployment_id IS NOT NULL
                      AND excluded.last_download_at >= coalesce(device_contacts.last_download_at, '-infinity')
                     THEN excluded.last_download_at
                     ELSE device_contacts.last_download_at END",
        tenants,
        devices,
        at,
        deployments as &[Option<Uuid>]
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A deployment, locked for an event.
#[derive(Debug, Clone)]
pub struct Locked {
    pub device_id: Uuid,
    pub status: String,
    pub opened_at: DateTime<Utc>,
    /// Open, but past its timeout: it has failed, whether or not the sweep has said so yet.
    pub lapsed: bool,
}

pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as!(
        Locked,
        r#"SELECT device_id, status, opened_at,
                  (status = 'inProgress' AND timeout_at <= now()) AS "lapsed!"
           FROM deployments WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// After an event: the deployment's new state.
#[derive(Debug, Clone)]
pub struct Advanced {
    pub status: String,
    pub timeout_at: DateTime<Utc>,
}

/// Records that an event arrived: it pushes the timeout out, and `finish` (`succeeded` or
/// `failed`) ends the deployment.
pub async fn advance(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    phase: &str,
    finish: Option<&str>,
) -> Result<Advanced, sqlx::Error> {
    sqlx::query_as!(
        Advanced,
        "UPDATE deployments
         SET last_event_at = now(), last_phase = $3,
             timeout_at = greatest(timeout_at, now() + make_interval(mins => timeout_minutes)),
             status = coalesce($4, status),
             finished_at = CASE WHEN $4::text IS NULL THEN finished_at ELSE now() END,
             failure_reason = CASE WHEN $4 = 'failed' THEN 'event' ELSE failure_reason END
         WHERE tenant_id = $1 AND id = $2
         RETURNING status, timeout_at",
        tenant_id,
        id,
        phase,
        finish
    )
    .fetch_one(conn)
    .await
}

/// Fails one lapsed deployment now (an event came too late).
pub async fn fail_lapsed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE deployments SET status = 'failed', failure_reason = 'timeout', finished_at = timeout_at
         WHERE tenant_id = $1 AND id = $2 AND status = 'inProgress' AND timeout_at <= now()",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the device's `enrollmentState` from its deployment, unless a newer one was opened.
pub async fn set_enrollment_state(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
    opened_at: DateTime<Utc>,
    state: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE devices SET enrollment_state = $4
         WHERE tenant_id = $1 AND id = $2
           AND NOT EXISTS (SELECT 1 FROM deployments n
                           WHERE n.tenant_id = $1 AND n.device_id = $2 AND n.opened_at > $3)",
        tenant_id,
        device_id,
        opened_at,
        state
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The sweep: fails up to `limit` open deployments past their timeout, and their devices'
/// enrollment state when it was their latest. Returns the affected (tenant, device) pairs.
pub async fn fail_lapsed_batch(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH lapsed AS (
               UPDATE deployments SET status = 'failed', failure_reason = 'timeout',
                      finished_at = timeout_at
               WHERE (tenant_id, id) IN (
                   SELECT tenant_id, id FROM deployments
                   WHERE status = 'inProgress' AND timeout_at <= now()
                   LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING tenant_id, id, device_id, opened_at),
           devices_failed AS (
               UPDATE devices d SET enrollment_state = 'failed'
               FROM lapsed l
               WHERE d.tenant_id = l.tenant_id AND d.id = l.device_id
                 AND NOT EXISTS (SELECT 1 FROM deployments n
                                 WHERE n.tenant_id = l.tenant_id AND n.device_id = l.device_id
                                   AND n.opened_at > l.opened_at)
               RETURNING d.tenant_id)
           SELECT tenant_id AS "tenant_id!", device_id AS "device_id!" FROM lapsed"#,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.device_id))
        .collect())
}

/// A deployment as admins read it, with its timeout computed.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub id: Uuid,
    pub device_id: Uuid,
    pub serial_number: String,
    pub profile_id: Option<Uuid>,
    pub profile_name: Option<String>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub last_phase: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub last_download_at: DateTime<Utc>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub timeout_at: DateTime<Utc>,
}

/// The device's deployments, newest first (ids are time-ordered UUIDv7).
pub async fn of_device(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeploymentView>, sqlx::Error> {
    sqlx::query_as!(
        DeploymentView,
        r#"SELECT x.id, x.device_id, d.serial_number, x.profile_id, x.profile_name,
                  CASE WHEN x.status = 'inProgress' AND x.timeout_at <= now() THEN 'failed'
                       ELSE x.status END AS "status!",
                  CASE WHEN x.status = 'inProgress' AND x.timeout_at <= now() THEN 'timeout'
                       ELSE x.failure_reason END AS failure_reason,
                  x.last_phase, x.opened_at, greatest(x.last_download_at,
                      (SELECT c.last_download_at FROM device_contacts c
                       WHERE c.tenant_id = x.tenant_id AND c.device_id = x.device_id
                         AND c.last_download_deployment_id = x.id)) AS "last_download_at!", x.last_event_at,
                  CASE WHEN x.status = 'inProgress' AND x.timeout_at <= now() THEN x.timeout_at
                       ELSE x.finished_at END AS finished_at,
                  x.timeout_at
           FROM deployments x
           JOIN devices d ON d.tenant_id = x.tenant_id AND d.id = x.device_id
           WHERE x.tenant_id = $1 AND x.device_id = $2 AND ($3::uuid IS NULL OR x.id < $3)
           ORDER BY x.id DESC
           LIMIT $4"#,
        tenant_id,
        device_id,
        before,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Filters of the deployments report (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    /// `inProgress`, `succeeded` or `failed`, the timeout computed.
    pub status: Option<String>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Opened before.
    pub until: Option<DateTime<Utc>>,
    /// The device's serial number, case-insensitive.
    pub serial_number: Option<String>,
}

/// One page of the tenant's deployments, newest first.
pub async fn report(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    filter: &ReportFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeploymentView>, sqlx::Error> {
    sqlx::query_as!(
        DeploymentView,
        r#"SELECT x.id, x.device_id, d.serial_number, x.profile_id, x.profile_name,
                  x.effective_status AS "status!",
                  CASE WHEN x.lapsed THEN 'timeout' ELSE x.failure_reason END AS failure_reason,
                  x.last_phase, x.opened_at, greatest(x.last_download_at,
                      (SELECT c.last_download_at FROM device_contacts c
                       WHERE c.tenant_id = x.tenant_id AND c.device_id = x.device_id
                         AND c.last_download_deployment_id = x.id)) AS "last_download_at!", x.last_event_at,
                  CASE WHEN x.lapsed THEN x.timeout_at ELSE x.finished_at END AS finished_at,
                  x.timeout_at
           FROM (SELECT *, (status = 'inProgress' AND timeout_at <= now()) AS lapsed,
                        CASE WHEN status = 'inProgress' AND timeout_at <= now() THEN 'failed'
                             ELSE status END AS effective_status
                 FROM deployments WHERE tenant_id = $1) x
           JOIN devices d ON d.tenant_id = x.tenant_id AND d.id = x.device_id
           WHERE ($2::text IS NULL OR x.effective_status = $2)
             AND ($3::timestamptz IS NULL OR x.opened_at >= $3)
             AND ($4::timestamptz IS NULL OR x.opened_at < $4)
             AND ($5::text IS NULL OR lower(d.serial_number) = lower($5))
             AND ($6::uuid IS NULL OR x.id < $6)
           ORDER BY x.id DESC
           LIMIT $7"#,
        tenant_id,
        filter.status,
        filter.since,
        filter.until,
        filter.serial_number,
        before,
        limit
    )
    .fetch_all(conn)
    .await
}

/// How many deployments match the filter, by status (the timeout computed).
pub async fn summary(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    filter: &ReportFilter,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT x.effective_status AS "status!", count(*) AS "count!"
           FROM (SELECT *, CASE WHEN status = 'inProgress' AND timeout_at <= now() THEN 'failed'
                                ELSE status END AS effective_status
                 FROM deployments WHERE tenant_id = $1) x
           JOIN devices d ON d.tenant_id = x.tenant_id AND d.id = x.device_id
           WHERE ($2::text IS NULL OR x.effective_status = $2)
             AND ($3::timestamptz IS NULL OR x.opened_at >= $3)
             AND ($4::timestamptz IS NULL OR x.opened_at < $4)
             AND ($5::text IS NULL OR lower(d.serial_number) = lower($5))
           GROUP BY x.effective_status"#,
        tenant_id,
        filter.status,
        filter.since,
        filter.until,
        filter.serial_number
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}
