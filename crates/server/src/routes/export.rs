//! `GET /v1/devices/export`: the devices of the list's filters, with their hardware hashes, as
//! an Autopilot CSV file. Hashes are sensitive: the export needs `devices.export`, and every
//! export is in the audit log before its first byte leaves.
//!
//! The body is streamed: pages of devices are read by key from one read-only snapshot and
//! written out as they come, so a million devices never sit in memory. The snapshot is read
//! twice: first to count the rows (and the rows Intune could not take), so the audit entry
//! and the `Unbox-Skipped-Rows` header are exact before the body starts; then to write.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sqlx::{Postgres, Transaction};
use unbox_db::devices::{DeviceRow, ListFilter};
use unbox_domain::hardware_hash::{BuildError, HashSpec, OsType, build};
use unbox_domain::identity::{Identity, normalize_mac};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::routes::devices::DeviceListParams;
use crate::state::AppState;

/// The Autopilot header with Group Tag and Assigned User: the same for both formats (Intune's
/// exact header; reference/autopilot.md, "CSV files").
pub const HEADER: &str =
    "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User";
/// The response header counting the devices left out of an `intune-csv` export.
pub const SKIPPED_ROWS: &str = "unbox-skipped-rows";
/// The response header counting the rows written.
pub const ROW_COUNT: &str = "unbox-row-count";
/// Devices read per page.
const PAGE: i64 = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ExportParams {
    /// `csv` (default): UTF-8, quoted where needed. `intune-csv`: ASCII, no quotes, for
    /// Intune's importer; devices whose values are not plain ASCII are left out and counted in
    /// `Unbox-Skipped-Rows`.
    pub format: Option<String>,
    /// Exact serial number (case-insensitive).
    pub serial_number: Option<String>,
    /// Exact group tag (case-insensitive).
    pub group_tag: Option<String>,
    /// Exact assigned user (case-insensitive).
    pub user_principal_name: Option<String>,
    /// `assignedInSync` or `notAssigned`.
    pub profile_status: Option<String>,
    /// Free text over serial, manufacturer, model, tag, user and names.
    pub q: Option<String>,
}

impl ExportParams {
    /// The same filters as `GET /v1/devices`.
    fn list_params(&self) -> DeviceListParams {
        DeviceListParams {
            serial_number: self.serial_number.clone(),
            group_tag: self.group_tag.clone(),
            user_principal_name: self.user_principal_name.clone(),
            profile_status: self.profile_status.clone(),
            q: self.q.clone(),
            ..DeviceListParams::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    IntuneCsv,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::IntuneCsv => "intune-csv",
        }
    }
}

/// The values of a row, in header order (the hash apart).
fn values(row: &DeviceRow) -> [&str; 4] {
    [
        row.serial_number.as_str(),
        row.product_key.as_deref().unwrap_or_default(),
        row.group_tag.as_deref().unwrap_or_default(),
        row.user_principal_name.as_deref().unwrap_or_default(),
    ]
}

/// Whether Intune can take the row as it is: printable ASCII, nothing that needs quoting.
fn intune_plain(row: &DeviceRow) -> bool {
    values(row).iter().all(|v| {
        v.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b',' && b != b'"')
    })
}

/// RFC 4180 quoting, where needed.
fn push_field(out: &mut String, value: &str) {
    let needs = value.contains([',', '"', '\r', '\n'])
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace);
    if needs {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn push_row(out: &mut String, row: &DeviceRow, hash: &str) {
    let [serial, product_key, group_tag, user] = values(row);
    for (i, value) in [serial, product_key, hash, group_tag, user]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        push_field(out, value);
    }
    out.push_str("\r\n");
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let normal = normalize_mac(text)?;
    let bytes = hex::decode(normal.replace(':', "")).ok()?;
    bytes.try_into().ok()
}

/// The Unbox-made hash of a machine registered by its Linux identity
/// (reference/hardware-hash.md, "Linux identity"). When the identity does not fit in 3000
/// bytes, the weak keys (disks, then MACs, then the UUID) are left out: the strong ones are
/// what identifies it.
pub fn unbox_made_hash(identity: &serde_json::Value) -> Option<String> {
    let identity: Identity = serde_json::from_value(identity.clone()).ok()?;
    let mut spec = HashSpec {
        manufacturer: identity.manufacturer,
        model: identity.model,
        serial: identity.serial_number,
        smbios_uuid: identity
            .smbios_uuid
            .as_deref()
            .and_then(|u| Uuid::parse_str(u).ok()),
        macs: identity
            .mac_addresses
            .iter()
            .filter_map(|m| parse_mac(m))
            .collect(),
        disk_ids: identity.disk_ids,
        tpm_ek_sha256: identity
            .tpm_ek_sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok()),
        os_type: OsType::Linux,
        ..HashSpec::default()
    };
    loop {
        match build(&spec) {
            Ok(hash) => return Some(hash),
            Err(BuildError::TooLarge { .. } | BuildError::RecordTooLong { .. }) => {
                if !spec.disk_ids.is_empty() {
                    spec.disk_ids.clear();
                } else if !spec.macs.is_empty() {
                    spec.macs.clear();
                } else if spec.smbios_uuid.is_some() {
                    spec.smbios_uuid = None;
                } else {
                    return None;
                }
            }
        }
    }
}

/// A body fed by a channel.
struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Writes the rows of the snapshot into the channel, a page at a time.
async fn write_rows(
    mut tx: Transaction<'static, Postgres>,
    tenant_id: Uuid,
    filter: ListFilter,
    format: Format,
    out: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let written: Result<(), sqlx::Error> = async {
        let mut text = String::with_capacity(HEADER.len() + 2);
        text.push_str(HEADER);
        text.push_str("\r\n");
        let mut after = None;
        loop {
            let rows = unbox_db::devices::list(&mut tx, tenant_id, &filter, after, PAGE).await?;
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let facts: HashMap<Uuid, unbox_db::imports::ExportFacts> =
                unbox_db::imports::export_facts(&mut tx, tenant_id, &ids)
                    .await?
                    .into_iter()
                    .map(|f| (f.id, f))
                    .collect();
            for row in &rows {
                if format == Format::IntuneCsv && !intune_plain(row) {
                    continue;
                }
                let hash = facts.get(&row.id).and_then(|f| {
                    f.hardware_hash
                        .clone()
                        .or_else(|| unbox_made_hash(&f.identity))
                });
                push_row(&mut text, row, hash.as_deref().unwrap_or_default());
            }
            if out
                .send(Ok(Bytes::from(std::mem::take(&mut text))))
                .await
                .is_err()
            {
                // The client went away.
                return Ok(());
            }
            if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                return Ok(());
            }
            after = rows.last().map(|r| r.id);
        }
    }
    .await;
    if let Err(error) = written {
        tracing::error!(error = %error, "export: reading devices failed; the body is cut short");
        let _ = out
            .send(Err(std::io::Error::other(error.to_string())))
            .await;
    }
    let _ = tx.rollback().await;
}

/// Exports the devices of the list's filters, with their hardware hashes, as an Autopilot CSV
/// file: `Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User`.
#[utoipa::path(get, path = "/v1/devices/export", tag = "devices", security(("bearer" = ["devices.export"])),
    params(ExportParams),
    responses(
        (status = 200, description = "The CSV file; `Unbox-Row-Count` rows, `Unbox-Skipped-Rows` left out (intune-csv)", content_type = "text/csv", body = String),
        (status = 400, body = unbox_domain::api::Problem)))]
pub async fn export_devices(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesExport>,
    Query(params): Query<ExportParams>,
) -> ApiResult<Response> {
    let format = match params.format.as_deref() {
        None | Some("csv") => Format::Csv,
        Some("intune-csv") => Format::IntuneCsv,
        Some(other) => {
            return Err(ApiError::bad_request(
                "InvalidQueryParameter",
                format!("format `{other}` is not `csv` or `intune-csv`"),
            ));
        }
    };
    let filter = params.list_params().filter()?;

    let mut snapshot = state.pool.begin().await?;
    unbox_db::imports::snapshot(&mut snapshot).await?;
    let (mut rows, mut skipped) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page =
            unbox_db::devices::list(&mut snapshot, caller.tenant_id, &filter, after, PAGE).await?;
        for row in &page {
            if format == Format::IntuneCsv && !intune_plain(row) {
                skipped += 1;
            } else {
                rows += 1;
            }
        }
        if page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
        after = page.last().map(|r| r.id);
    }

    let mut audit_tx = state.pool.begin().await?;
    unbox_db::audit::record(
        &mut audit_tx,
        unbox_db::audit::NewEntry {
            tenant_id: caller.tenant_id,
            actor_kind: caller.actor_kind,
            actor_id: Some(caller.actor_id.clone()),
            action: "device.export",
            resource_type: "device",
            resource_id: None,
            before: None,
            after: Some(serde_json::json!({
                "format": format.as_str(),
                "filter": {
                    "serialNumber": filter.serial_number, "groupTag": filter.group_tag,
                    "userPrincipalName": filter.user_principal_name,
                    "profileStatus": params.profile_status, "q": filter.q,
                },
                "rowCount": rows,
                "skippedRows": skipped,
            })),
            request_id: crate::telemetry::current_request_id(),
        },
    )
    .await?;
    audit_tx.commit().await?;

    let (out, body) = tokio::sync::mpsc::channel(2);
    tokio::spawn(write_rows(snapshot, caller.tenant_id, filter, format, out));
    let (content_type, file_name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "unbox-devices.csv"),
        Format::IntuneCsv => ("text/csv; charset=us-ascii", "unbox-devices-intune.csv"),
    };
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(ChannelStream(body)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(SKIPPED_ROWS, HeaderValue::from(skipped));
    headers.insert(ROW_COUNT, HeaderValue::from(rows));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use unbox_domain::hardware_hash::decode;

    #[test]
    fn a_linux_identity_becomes_an_unbox_made_hash_that_decodes_to_it() {
        let identity = Identity {
            manufacturer: "LENOVO".into(),
            model: "20XW".into(),
            serial_number: "PF3ABCDE".into(),
            smbios_uuid: Some("4c4c4544-0042-3510-8052-b2c04f4e3732".into()),
            mac_addresses: vec!["aa:bb:cc:dd:ee:01".into()],
            disk_ids: vec!["0025385a1b2c3d4e".into()],
            tpm_ek_sha256: Some("ab".repeat(32)),
        };
        let hash = unbox_made_hash(&serde_json::to_value(&identity).unwrap()).unwrap();
        let decoded = decode(&hash).unwrap();
        assert_eq!(decoded.os_type(), OsType::Linux);
        assert_eq!(Identity::from_hash(&decoded), identity);
    }

    #[test]
    fn an_identity_too_large_for_a_hash_keeps_its_strong_keys() {
        let identity = Identity {
            manufacturer: "LENOVO".into(),
            model: "20XW".into(),
            serial_number: "PF3ABCDE".into(),
            disk_ids: (0..64).map(|i| format!("{i:0>200}")).collect(),
            tpm_ek_sha256: Some("cd".repeat(32)),
            ..Identity::default()
        };
        let hash = unbox_made_hash(&serde_json::to_value(&identity).unwrap()).unwrap();
        let decoded = Identity::from_hash(&decode(&hash).unwrap());
        assert_eq!(
            decoded.keys().strong_claims(),
            identity.keys().strong_claims()
        );
        assert!(decoded.disk_ids.is_empty());
    }

    #[test]
    fn quoting() {
        let mut out = String::new();
        push_field(&mut out, "plain");
        out.push('|');
        push_field(&mut out, "a,\"b\"");
        out.push('|');
        push_field(&mut out, " padded");
        assert_eq!(out, "plain|\"a,\"\"b\"\"\"|\" padded\"");
    }
}
