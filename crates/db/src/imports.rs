//! Bulk registration: import jobs, their per-row items, the set-based writes that register a
//! chunk of rows, and the reads of the export (its inverse).
//!
//! Every write of a chunk takes arrays (`UNNEST`), never a round trip per row.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// An import job.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub format: String,
    pub dry_run: bool,
    pub status: String,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub spool_file: String,
    pub spool_node: Uuid,
    pub byte_size: i64,
    pub encoding: Option<String>,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub checkpoint_row: Option<i64>,
    pub attempts: i32,
    pub warnings: Vec<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub format: String,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub spool_file: String,
    pub spool_node: Uuid,
    pub byte_size: i64,
    pub encoding: Option<String>,
    pub total: i64,
    pub warnings: Vec<String>,
    pub request_id: Option<String>,
}

/// Creates the job; None when the tenant (and partner) already used its idempotency key.
/// A notification on `unbox_imports` wakes the workers when the transaction commits.
pub async fn insert(conn: &mut PgConnection, job: &NewJob) -> Result<Option<JobRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"INSERT INTO imports (tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                warnings, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (tenant_id, partner_id, idempotency_key)
               WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at"#,
        job.tenant_id,
        job.id,
        job.partner_id,
        job.actor_kind,
        job.actor_id,
        job.format,
        job.dry_run,
        job.idempotency_key,
        job.fingerprint,
        job.spool_file,
        job.spool_node,
        job.byte_size,
        job.encoding,
        job.total,
        &job.warnings,
        job.request_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_some() {
        sqlx::query!("SELECT pg_notify('unbox_imports', $1)", job.id.to_string())
            .execute(conn)
            .await?;
    }
    Ok(row)
}

/// The job that used this idempotency key (`partner_id` None: the tenant's own).
pub async fn by_idempotency_key(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_id: Option<Uuid>,
    key: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at
           FROM imports
           WHERE tenant_id = $1 AND partner_id IS NOT DISTINCT FROM $2 AND idempotency_key = $3"#,
        tenant_id,
        partner_id,
        key
    )
    .fetch_optional(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at
           FROM imports WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// A partner's own job, whatever the tenant.
pub async fn get_for_partner(
    conn: &mut PgConnection,
    partner_id: Uuid,
    id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at
           FROM imports WHERE partner_id = $1 AND id = $2"#,
        partner_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// The tenant's jobs, newest first; `before` is the cursor (jobs with a smaller id).
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at
           FROM imports WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3"#,
        tenant_id,
        before,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Jobs waiting for a worker whose upload is on `node`'s storage, oldest first.
pub async fn pending(
    conn: &mut PgConnection,
    node: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT tenant_id, id FROM imports
         WHERE status IN ('queued', 'processing') AND spool_node = $1
         ORDER BY created_at LIMIT $2",
        node,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.tenant_id, r.id)).collect())
}

/// Spool files of the node whose jobs are still to be processed (the others may go).
pub async fn live_spool_files(
    conn: &mut PgConnection,
    node: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT spool_file FROM imports
         WHERE status IN ('queued', 'processing') AND spool_node = $1",
        node
    )
    .fetch_all(conn)
    .await
}

/// Takes the job's session-level advisory lock on this connection, if free. The lock is the
/// worker's claim on the job: it lasts until released or until the connection ends, so a
/// crashed instance's jobs are free again at once.
pub async fn try_lock(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended($1::text, 5175)) AS "locked!""#,
        id.to_string()
    )
    .fetch_one(conn)
    .await?;
    Ok(locked)
}

pub async fn unlock(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT pg_advisory_unlock(hashtextextended($1::text, 5175)) AS "unlocked!""#,
        id.to_string()
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Marks the job as being processed (one more attempt); None when it is already finished.
pub async fn start(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"UPDATE imports SET status = 'processing', started_at = coalesce(started_at, now()),
                attempts = attempts + 1, updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'processing')
           RETURNING tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Records why the job is waiting (a transient failure); it stays `processing`.
pub async fn note(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE imports SET message = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id,
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the job's row for the rest of the transaction if its checkpoint is still `from`
/// (and it is processing): a chunk's transaction takes it before it moves the checkpoint, so
/// two workers can never both commit the same chunk. (`NO KEY UPDATE`: the chunk after,
/// whose items' foreign keys hold a key-share lock on the row, does not block it.)
pub async fn lock_at(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    from: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT 1 AS one FROM imports
         WHERE tenant_id = $1 AND id = $2 AND status = 'processing'
           AND checkpoint_row IS NOT DISTINCT FROM $3
         FOR NO KEY UPDATE",
        tenant_id,
        id,
        from
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// Moves the checkpoint from `from` to `to` and adds the chunk's counts, in the chunk's
/// transaction. False when the checkpoint is no longer `from` (another worker got there
/// first): the caller rolls the chunk back.
pub async fn advance(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    from: Option<i64>,
    to: i64,
    succeeded: i64,
    failed: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE imports SET checkpoint_row = $4, succeeded = succeeded + $5, failed = failed + $6,
                attempts = 0, message = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status = 'processing'
           AND checkpoint_row IS NOT DISTINCT FROM $3",
        tenant_id,
        id,
        from,
        to,
        succeeded,
        failed
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the job: `error` when `stopped` says why it ended early; else by its counts
/// (`complete` when no row failed, `error` when every row did, `partial` otherwise).
pub async fn finish(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    stopped: Option<&str>,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"UPDATE imports SET
                status = CASE WHEN $3::text IS NOT NULL THEN 'error'
                              WHEN failed = 0 THEN 'complete'
                              WHEN succeeded = 0 THEN 'error'
                              ELSE 'partial' END,
                message = $3, finished_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'processing')
           RETURNING tenant_id, id, partner_id, actor_kind, actor_id, format, dry_run, status,
                idempotency_key, fingerprint, spool_file, spool_node, byte_size, encoding, total,
                succeeded, failed, checkpoint_row, attempts, warnings, message, request_id,
                created_at, started_at, finished_at, updated_at"#,
        tenant_id,
        id,
        stopped
    )
    .fetch_optional(conn)
    .await
}

/// One row's result, as written.
#[derive(Debug, Clone, Default)]
pub struct NewItem {
    pub line: i64,
    pub serial_number: Option<String>,
    /// `complete` or `error`.
    pub status: &'static str,
    pub error_code: Option<i32>,
    pub error_name: Option<String>,
    pub message: Option<String>,
    pub warnings: Vec<String>,
    pub device_id: Option<Uuid>,
    pub tuple_key: Option<String>,
    pub tpm_key: Option<String>,
}

pub async fn insert_items(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    import_id: Uuid,
    items: &[NewItem],
) -> Result<(), sqlx::Error> {
    let n = items.len();
    let mut lines = Vec::with_capacity(n);
    let mut serials = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut warnings = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    let mut tuples = Vec::with_capacity(n);
    let mut tpms = Vec::with_capacity(n);
    for item in items {
        lines.push(item.line);
        serials.push(item.serial_number.clone());
        statuses.push(item.status.to_owned());
        codes.push(item.error_code);
        names.push(item.error_name.clone());
        messages.push(item.message.clone());
        warnings.push(if item.warnings.is_empty() {
            None
        } else {
            serde_json::to_string(&item.warnings).ok()
        });
        devices.push(item.device_id);
        tuples.push(item.tuple_key.clone());
        tpms.push(item.tpm_key.clone());
    }
    sqlx::query!(
        "INSERT INTO import_items (tenant_id, import_id, line, serial_number, status, error_code,
                error_name, message, warnings, device_id, tuple_key, tpm_key)
         SELECT $1, $2, i.line, i.serial, i.status, i.code, i.name, i.message, i.warnings::jsonb,
                i.device, i.tuple_key, i.tpm_key
         FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[],
                     $9::text[], $10::uuid[], $11::text[], $12::text[])
              AS i (line, serial, status, code, name, message, warnings, device, tuple_key, tpm_key)",
        tenant_id,
        import_id,
        &lines,
        &serials as &[Option<String>],
        &statuses,
        &codes as &[Option<i32>],
        &names as &[Option<String>],
        &messages as &[Option<String>],
        &warnings as &[Option<String>],
        &devices as &[Option<Uuid>],
        &tuples as &[Option<String>],
        &tpms as &[Option<String>]
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One item as the API shows it.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub line: i64,
    pub serial_number: Option<String>,
    pub status: String,
    pub error_code: Option<i32>,
    pub error_name: Option<String>,
    pub message: Option<String>,
    pub warnings: Option<serde_json::Value>,
    pub device_id: Option<Uuid>,
}

/// A page of a job's items by row; `status` filters (`complete`, `error`).
pub async fn items(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    import_id: Uuid,
    status: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<ItemRow>, sqlx::Error> {
    sqlx::query_as!(
        ItemRow,
        "SELECT line, serial_number, status, error_code, error_name, message, warnings, device_id
         FROM import_items
         WHERE tenant_id = $1 AND import_id = $2 AND ($3::text IS NULL OR status = $3)
           AND ($4::bigint IS NULL OR line > $4)
         ORDER BY line LIMIT $5",
        tenant_id,
        import_id,
        status,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// The strong keys the in-file duplicate check recorded, in row order, to rebuild it when a
/// job resumes.
#[derive(Debug, Clone)]
pub struct RecordedKeys {
    pub line: i64,
    pub tuple_key: Option<String>,
    pub tpm_key: Option<String>,
}

/// The keys of rows that registered a device are that device's claims (they are not stored
/// twice); the other rows' are on their items.
pub async fn recorded_keys(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    import_id: Uuid,
) -> Result<Vec<RecordedKeys>, sqlx::Error> {
    sqlx::query_as!(
        RecordedKeys,
        r#"SELECT line AS "line!", tuple_key, tpm_key FROM import_items
           WHERE tenant_id = $1 AND import_id = $2
             AND (tuple_key IS NOT NULL OR tpm_key IS NOT NULL)
           UNION ALL
           SELECT i.line, max(c.key) FILTER (WHERE c.kind = 'tuple'),
                  max(c.key) FILTER (WHERE c.kind = 'tpm')
           FROM import_items i
           JOIN identity_claims c ON c.tenant_id = i.tenant_id AND c.device_id = i.device_id
           WHERE i.tenant_id = $1 AND i.import_id = $2 AND i.status = 'complete'
           GROUP BY i.line
           ORDER BY 1"#,
        tenant_id,
        import_id
    )
    .fetch_all(conn)
    .await
}

/// Inserts devices of one tenant with one binary `COPY` (cheaper for the server than parsing
/// arrays or text), sent in pieces of a reused buffer. Triggers fire as for an `INSERT`.
pub async fn copy_devices(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    devices: &[&crate::devices::NewDevice],
) -> Result<u64, sqlx::Error> {
    const PIECE: usize = 256 * 1024;
    fn field(data: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                data.extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_be_bytes());
                data.extend_from_slice(b);
            }
        }
    }
    fn jsonb(data: &mut Vec<u8>, value: &serde_json::Value) {
        let json = value.to_string();
        data.extend_from_slice(
            &i32::try_from(json.len() + 1)
                .unwrap_or(i32::MAX)
                .to_be_bytes(),
        );
        data.push(1);
        data.extend_from_slice(json.as_bytes());
    }
    fn text(v: &Option<String>) -> Option<&[u8]> {
        v.as_deref().map(str::as_bytes)
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY devices (tenant_id, id, serial_number, manufacturer, model, product_key,
                group_tag, purchase_order_id, user_principal_name, display_name, os_type,
                os_version, hardware_hash, identity, tpm_ek_sha256, device_public_key)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let mut data = Vec::with_capacity(PIECE + 16 * 1024);
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    for d in devices {
        data.extend_from_slice(&16i16.to_be_bytes());
        field(&mut data, Some(tenant_id.as_bytes()));
        field(&mut data, Some(d.id.as_bytes()));
        field(&mut data, Some(d.serial_number.as_bytes()));
        field(&mut data, text(&d.manufacturer));
        field(&mut data, text(&d.model));
        field(&mut data, text(&d.product_key));
        field(&mut data, text(&d.group_tag));
        field(&mut data, text(&d.purchase_order_id));
        field(&mut data, text(&d.user_principal_name));
        field(&mut data, text(&d.display_name));
        field(&mut data, Some(d.os_type.as_bytes()));
        field(&mut data, text(&d.os_version));
        field(&mut data, text(&d.hardware_hash));
        jsonb(&mut data, &d.identity);
        field(&mut data, text(&d.tpm_ek_sha256));
        match &d.device_public_key {
            Some(key) => jsonb(&mut data, key),
            None => field(&mut data, None),
        }
        if data.len() >= PIECE {
            copy.send(data.as_slice()).await?;
            data.clear();
        }
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(data.as_slice()).await?;
    copy.finish().await
}

/// Claims keys for many devices of one tenant in one statement: `(device, kind, key)` triples.
/// Returns the device of every claim made; a key another device holds is not claimed (the
/// caller undoes that device and reports the owner). Keys are taken in (kind, key) order, so
/// two concurrent bulk claims never wait on each other in a cycle.
pub async fn claim_many(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    devices: &[Uuid],
    kinds: &[String],
    keys: &[String],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO identity_claims (kind, key, tenant_id, device_id)
           SELECT c.kind, c.key, $1, c.device_id
           FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS c (device_id, kind, key)
           ORDER BY c.kind, c.key
           ON CONFLICT (kind, key) DO NOTHING
           RETURNING device_id"#,
        tenant_id,
        devices,
        kinds,
        keys
    )
    .fetch_all(conn)
    .await
}

/// As [`claim_many`], for keys the caller found free: a plain insert, cheaper than
/// `ON CONFLICT`. A key taken in the meantime fails it with a unique violation of
/// `identity_claims_pkey` (run it in a savepoint, and fall back to [`claim_many`]).
pub async fn claim_free(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    devices: &[Uuid],
    kinds: &[String],
    keys: &[String],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO identity_claims (kind, key, tenant_id, device_id)
         SELECT c.kind, c.key, $1, c.device_id
         FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS c (device_id, kind, key)
         ORDER BY c.kind, c.key",
        tenant_id,
        devices,
        kinds,
        keys
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Settings of a chunk's transaction: its commit need not wait for the WAL flush (a chunk
/// lost with a crash of PostgreSQL is lost whole, checkpoint included, and is written again
/// on resume), and a lock wait longer than `lock_timeout_ms` fails it (it is retried), which
/// also breaks waits that run through the worker's own ordering of commits.
pub async fn tune_chunk_transaction(
    conn: &mut PgConnection,
    lock_timeout_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"SELECT set_config('synchronous_commit', 'off', true) AS "a!",
                  set_config('lock_timeout', $1, true) AS "b!""#,
        format!("{lock_timeout_ms}ms")
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Deletes devices of one tenant (their claims go with them).
pub async fn delete_devices(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM devices WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        ids
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Makes the current transaction a read-only snapshot: every later statement of an export
/// sees the same devices.
pub async fn snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(conn)
        .await?;
    Ok(())
}

/// What the export writes of a device besides its listed fields.
#[derive(Debug, Clone)]
pub struct ExportFacts {
    pub id: Uuid,
    pub hardware_hash: Option<String>,
    pub identity: serde_json::Value,
}

pub async fn export_facts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<ExportFacts>, sqlx::Error> {
    sqlx::query_as!(
        ExportFacts,
        "SELECT id, hardware_hash, identity FROM devices WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        ids
    )
    .fetch_all(conn)
    .await
}
