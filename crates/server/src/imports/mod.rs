//! Bulk registration: import jobs.
//!
//! A `POST /v1/imports` (or a partner's `POST /v1/partner/tenants/{id}/imports`) streams the
//! body to a file under `DATA_DIR/imports/` while a blocking thread reads it as it arrives
//! (`spool`): the CSV header or the JSON structure is checked, rows are counted against the
//! limit, the body is hashed for `Idempotency-Key` replays. Nothing is held whole in memory.
//! The job is then a row of `imports`, `queued`.
//!
//! A background worker (`worker`, spawned by `startup::serve`) takes queued and interrupted
//! jobs. Its claim on a job is a PostgreSQL session advisory lock held on the connection that
//! writes the job's chunks: it lasts exactly as long as that connection, so the job of an
//! instance that died is free at once, and no two workers ever write one job. A blocking
//! thread (`prepare`) reads the file, decodes and validates rows and runs the in-file
//! duplicate check, handing chunks of rows to the worker through a bounded channel; each
//! chunk is registered set-based in one transaction that also writes its items and moves the
//! job's checkpoint. A job killed mid-way resumes after its last committed row.

pub(crate) mod prepare;
pub(crate) mod spool;
pub mod worker;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unbox_db::imports::{ItemRow, JobRow};
use utoipa::ToSchema;
use uuid::Uuid;

/// Largest upload accepted, in bytes (1 GiB).
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Most data rows (CSV) or devices (JSON) in one upload.
pub const MAX_ROWS: u64 = 250_000;
/// Rows registered per transaction.
pub const CHUNK_ROWS: usize = 2_000;

/// What an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An Autopilot registration CSV, in any of the encodings people have.
    Csv,
    /// `{"devices": [...]}`, each item the body of `POST /v1/devices`.
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Where uploads are spooled.
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("imports")
}

/// The id of the storage that holds this data directory's spool files. Instances that share
/// a data directory share it (and process each other's uploads); an instance with a data
/// directory of its own processes only the uploads it received.
pub fn node_id(data_dir: &Path) -> std::io::Result<Uuid> {
    let dir = spool_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = text.trim().parse::<Uuid>()
    {
        return Ok(id);
    }
    // Written beside and linked into place, so that concurrent first starts agree on one id.
    let id = Uuid::new_v4();
    let partial = dir.join(format!("node-id.{id}.partial"));
    std::fs::write(&partial, format!("{id}\n"))?;
    let linked = std::fs::hard_link(&partial, &path);
    let _ = std::fs::remove_file(&partial);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)?
            .trim()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) => Err(e),
    }
}

/// Who submitted a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ImportSource {
    /// The tenant's own API client.
    Tenant,
    /// A partner the tenant authorized (`partnerId`).
    Partner,
}

/// An import job (`GET /v1/imports/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `queued`, `processing`, `complete` (no row failed), `partial` (some did) or `error`
    /// (every row did, or the job stopped: see `message`).
    pub status: String,
    /// Data rows in the upload (CSV lines that are not headers or blank; JSON `devices`).
    pub total: i64,
    /// Rows registered; in a dry run, rows that would be.
    pub succeeded: i64,
    /// Rows with an error (806 `ZtdDeviceAlreadyAssigned` included).
    pub failed: i64,
    /// `succeeded + failed`: rows whose result is final.
    pub processed: i64,
    /// True when nothing is registered: every row's outcome is reported only.
    pub dry_run: bool,
    /// `csv` or `json`.
    pub format: String,
    pub source: ImportSource,
    /// The partner that uploaded the batch, when `source` is `partner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<Uuid>,
    /// How the CSV file's text was read (`utf-8`, `utf-8-bom`, `utf-16le`, `utf-16be`,
    /// `windows-1252`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    pub byte_size: i64,
    /// File-level notes: unknown columns, the switch to Windows-1252, a changed header.
    pub warnings: Vec<String>,
    /// Why the job stopped early, or why it waits for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<JobRow> for ImportJob {
    fn from(row: JobRow) -> Self {
        ImportJob {
            id: row.id,
            tenant_id: row.tenant_id,
            status: row.status,
            total: row.total,
            succeeded: row.succeeded,
            failed: row.failed,
            processed: row.succeeded + row.failed,
            dry_run: row.dry_run,
            format: row.format,
            source: if row.partner_id.is_some() {
                ImportSource::Partner
            } else {
                ImportSource::Tenant
            },
            partner_id: row.partner_id,
            encoding: row.encoding,
            byte_size: row.byte_size,
            warnings: row.warnings,
            message: row.message,
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        }
    }
}

/// The result of one row of an import (`GET /v1/imports/{id}/items`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportItem {
    /// The physical line of the row in the file (1-based); for JSON, the index in `devices`.
    pub row: i64,
    /// The hash's serial when the hash decoded, else the file's.
    pub serial_number: Option<String>,
    /// `complete` (registered; in a dry run, would be) or `error`.
    pub status: String,
    /// Autopilot's code: 640, 801, 802, 803, 806 or 808; none for `ZtdDeviceDuplicated` and
    /// `ZtdDeviceNotFound`, which have no number.
    pub error_code: Option<i32>,
    /// Autopilot's name, e.g. `ZtdDeviceAlreadyAssigned`.
    pub error_name: Option<String>,
    pub message: Option<String>,
    /// Notes that did not stop the row (a CSV serial that differs from the hash's).
    pub warnings: Vec<String>,
    /// The device the row registered; for 806, the registration that already exists.
    pub device_id: Option<Uuid>,
}

impl From<ItemRow> for ImportItem {
    fn from(row: ItemRow) -> Self {
        ImportItem {
            row: row.line,
            serial_number: row.serial_number,
            status: row.status,
            error_code: row.error_code,
            error_name: row.error_name,
            message: row.message,
            warnings: row
                .warnings
                .and_then(|w| serde_json::from_value(w).ok())
                .unwrap_or_default(),
            device_id: row.device_id,
        }
    }
}

/// The JSON form of an upload (for the OpenAPI document; the body is read as a stream).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportBatch {
    /// Each item is the body of `POST /v1/devices`.
    pub devices: Vec<unbox_domain::api::DeviceCreate>,
}
