//! From the rows of a spooled upload to registrations ready to write: decoding, validation,
//! and the in-file duplicate check. Runs on a blocking thread (decoding 4K hashes is CPU
//! work) and hands chunks of rows to the worker through a bounded channel, so reading the
//! file runs ahead of the database by at most one chunk.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use unbox_db::devices::{Claim, NewDevice};
use unbox_domain::api::DeviceCreate;
use unbox_domain::hardware_hash;
use unbox_domain::identity::ClaimKind;
use unbox_domain::registration_csv::{
    CsvError, CsvRow, DuplicateTracker, RegistrationCsvReader, RowOutcome, validate_row,
};
use uuid::Uuid;

use crate::presented_identity::Presented;
use crate::routes::devices::{ClaimConflict, field_errors, new_device, no_strong_key};

/// Why one row was not registered: Autopilot's code (when it has one) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    pub code: Option<u16>,
    pub name: &'static str,
    pub message: String,
}

impl RowFailure {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        RowFailure {
            code: Some(801),
            name: "InvalidZtdRequestBody",
            message: message.into(),
        }
    }

    pub fn invalid_hash(message: impl Into<String>) -> Self {
        RowFailure {
            code: Some(hardware_hash::HashError::CODE),
            name: hardware_hash::HashError::NAME,
            message: message.into(),
        }
    }

    pub fn duplicated(first: i64) -> Self {
        RowFailure {
            code: None,
            name: "ZtdDeviceDuplicated",
            message: format!(
                "the same machine as row {first} of this upload, which is the row processed"
            ),
        }
    }

    pub fn not_found() -> Self {
        RowFailure {
            code: None,
            name: "ZtdDeviceNotFound",
            message: "no hardware hash of this machine is on record; a row without a Hardware Hash can only name a machine already registered".to_owned(),
        }
    }

    pub fn conflict(conflict: ClaimConflict) -> Self {
        RowFailure {
            code: Some(conflict.code()),
            name: conflict.name(),
            message: conflict.message(),
        }
    }

    /// 640: a transient failure; importing the row again will work.
    pub fn storage(message: impl Into<String>) -> Self {
        RowFailure {
            code: Some(640),
            name: "StorageError",
            message: message.into(),
        }
    }
}

/// What to do with a row.
#[derive(Debug)]
pub enum Outcome {
    /// Register this device (unless the machine's keys are taken).
    Register(Box<NewDevice>),
    /// A row with no hash but a full (manufacturer, model, serial) tuple: it can only name a
    /// machine already registered (806, 808), else `ZtdDeviceNotFound`.
    TupleOnly,
    /// The row cannot be imported.
    Failed(RowFailure),
}

/// One row, prepared.
#[derive(Debug)]
pub struct PreparedRow {
    /// Physical line (CSV) or index (JSON).
    pub row: i64,
    pub serial: Option<String>,
    pub warnings: Vec<String>,
    /// The machine's strong keys (for `Register` and `TupleOnly`): what the duplicate check
    /// recorded, and what the identity claims are checked against.
    pub claims: Vec<Claim>,
    pub outcome: Outcome,
}

impl PreparedRow {
    fn failed(row: i64, serial: Option<String>, warnings: Vec<String>, f: RowFailure) -> Self {
        PreparedRow {
            row,
            serial,
            warnings,
            claims: Vec::new(),
            outcome: Outcome::Failed(f),
        }
    }

    /// The (tuple, tpm) keys to store with the item, so a resumed job can rebuild the
    /// duplicate check.
    pub fn recorded_keys(&self) -> (Option<String>, Option<String>) {
        let key = |kind: ClaimKind| {
            self.claims
                .iter()
                .find(|c| c.kind == kind.as_str())
                .map(|c| c.key.clone())
        };
        (key(ClaimKind::Tuple), key(ClaimKind::Tpm))
    }
}

/// Rows handed to the worker at once.
#[derive(Debug)]
pub struct Chunk {
    pub rows: Vec<PreparedRow>,
    /// The last row read (the checkpoint once this chunk is committed).
    pub last_row: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The worker stopped taking chunks.
    #[error("stopped")]
    Stopped,
    #[error("reading the spooled upload failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file is no longer what the upload check accepted (it was changed on disk).
    #[error("the spooled upload cannot be read: {0}")]
    Unreadable(String),
}

/// Prepares rows and sends them in chunks.
pub struct Producer {
    tenant_id: Uuid,
    tracker: DuplicateTracker,
    /// Rows up to this one are done; they are read past.
    checkpoint: Option<i64>,
    chunk_rows: usize,
    chunk: Vec<PreparedRow>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
}

impl Producer {
    pub fn new(
        tenant_id: Uuid,
        tracker: DuplicateTracker,
        checkpoint: Option<i64>,
        chunk_rows: usize,
        tx: tokio::sync::mpsc::Sender<Chunk>,
    ) -> Self {
        Producer {
            tenant_id,
            tracker,
            checkpoint,
            chunk_rows: chunk_rows.max(1),
            chunk: Vec::new(),
            tx,
        }
    }

    fn done(&self, row: i64) -> bool {
        self.checkpoint.is_some_and(|c| row <= c)
    }

    fn push(&mut self, row: PreparedRow) -> Result<(), ProduceError> {
        self.chunk.push(row);
        if self.chunk.len() >= self.chunk_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProduceError> {
        let Some(last_row) = self.chunk.last().map(|r| r.row) else {
            return Ok(());
        };
        let rows = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.chunk_rows));
        self.tx
            .blocking_send(Chunk { rows, last_row })
            .map_err(|_| ProduceError::Stopped)
    }

    /// A machine that may be registered: checks its keys against the rows before it.
    fn register(
        &mut self,
        row: i64,
        serial: Option<String>,
        warnings: Vec<String>,
        presented: &Presented,
        body: &DeviceCreate,
    ) -> PreparedRow {
        if !presented.keys.has_strong_key() {
            return PreparedRow::failed(
                row,
                serial,
                warnings,
                RowFailure::invalid_hash(no_strong_key(presented)),
            );
        }
        let pairs = presented.keys.strong_claims();
        if let Some(first) = self.tracker.check(row.unsigned_abs(), &pairs) {
            return PreparedRow::failed(
                row,
                serial,
                warnings,
                RowFailure::duplicated(i64::try_from(first).unwrap_or(i64::MAX)),
            );
        }
        let claims = to_claims(&pairs);
        let device = match new_device(self.tenant_id, Uuid::now_v7(), presented, body) {
            Ok(device) => device,
            Err(e) => {
                return PreparedRow {
                    row,
                    serial,
                    warnings,
                    claims,
                    outcome: Outcome::Failed(RowFailure::storage(e.to_string())),
                };
            }
        };
        let outcome = if holds_nul(presented) {
            Outcome::Failed(RowFailure::invalid_hash(
                "a value of the machine's identity contains a NUL character",
            ))
        } else {
            Outcome::Register(Box::new(device))
        };
        PreparedRow {
            row,
            serial,
            warnings,
            claims,
            outcome,
        }
    }

    fn csv_row(&mut self, row: CsvRow) -> PreparedRow {
        let line = i64::try_from(row.line).unwrap_or(i64::MAX);
        match validate_row(&row) {
            RowOutcome::Invalid(e) => PreparedRow::failed(
                line,
                row.serial_number,
                Vec::new(),
                RowFailure {
                    code: Some(e.code),
                    name: e.name,
                    message: e.message,
                },
            ),
            RowOutcome::Valid(v) => {
                let v = *v;
                let body = DeviceCreate {
                    product_key: v.product_key,
                    group_tag: v.group_tag,
                    user_principal_name: v.assigned_user,
                    ..DeviceCreate::default()
                };
                let serial = Some(v.serial_number);
                let errors = field_errors(&body);
                if !errors.is_empty() {
                    return PreparedRow::failed(
                        line,
                        serial,
                        v.warnings,
                        RowFailure::invalid_request(csv_field_message(&errors)),
                    );
                }
                let presented = Presented {
                    os_type: v.hash.os_type().as_str(),
                    os_version: v.hash.os_version().map(str::to_owned),
                    keys: v.identity.strong_keys(),
                    identity: v.identity,
                    hash: Some(v.hash),
                };
                self.register(line, serial, v.warnings, &presented, &body)
            }
            RowOutcome::TupleOnly(t) => {
                let serial = Some(t.identity.serial_number.clone());
                let pairs = t.identity.strong_claims();
                if let Some(first) = self.tracker.check(row.line, &pairs) {
                    return PreparedRow::failed(
                        line,
                        serial,
                        Vec::new(),
                        RowFailure::duplicated(i64::try_from(first).unwrap_or(i64::MAX)),
                    );
                }
                PreparedRow {
                    row: line,
                    serial,
                    warnings: Vec::new(),
                    claims: to_claims(&pairs),
                    outcome: Outcome::TupleOnly,
                }
            }
        }
    }

    fn json_row(&mut self, index: i64, value: serde_json::Value) -> PreparedRow {
        let hinted_serial = value
            .get("serialNumber")
            .and_then(serde_json::Value::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let body: DeviceCreate = match serde_json::from_value(value) {
            Ok(body) => body,
            Err(e) => {
                return PreparedRow::failed(
                    index,
                    hinted_serial,
                    Vec::new(),
                    RowFailure::invalid_request(format!("devices[{index}]: {e}")),
                );
            }
        };
        let presented = match presented_item(&body) {
            Ok(p) => p,
            Err(f) => return PreparedRow::failed(index, hinted_serial, Vec::new(), f),
        };
        let serial = Some(presented.identity.serial_number.clone()).filter(|s| !s.is_empty());
        let mut warnings = Vec::new();
        if let (Some(given), Some(hash)) = (&hinted_serial, &presented.hash)
            && given.to_lowercase() != hash.serial().to_lowercase()
        {
            warnings.push(format!(
                "serialNumber {given:?} differs from the hash's serial {:?}; the hash's serial is stored",
                hash.serial()
            ));
        }
        let errors = field_errors(&body);
        if !errors.is_empty() {
            let text: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            return PreparedRow::failed(
                index,
                serial,
                warnings,
                RowFailure::invalid_request(text.join("; ")),
            );
        }
        self.register(index, serial, warnings, &presented, &body)
    }
}

fn to_claims(pairs: &[(ClaimKind, String)]) -> Vec<Claim> {
    pairs
        .iter()
        .map(|(kind, key)| Claim {
            kind: kind.as_str().to_owned(),
            key: key.clone(),
        })
        .collect()
}

/// PostgreSQL text cannot hold NUL, nor jsonb `\u0000`.
fn holds_nul(presented: &Presented) -> bool {
    let i = &presented.identity;
    [&i.manufacturer, &i.model, &i.serial_number]
        .into_iter()
        .chain(&i.mac_addresses)
        .chain(&i.disk_ids)
        .chain(&i.smbios_uuid)
        .chain(&i.tpm_ek_sha256)
        .chain(&presented.os_version)
        .any(|t| t.contains('\0'))
}

/// Field errors in the CSV's column names.
fn csv_field_message(errors: &[unbox_domain::api::FieldError]) -> String {
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            let column = match e.field.as_str() {
                "userPrincipalName" => "Assigned User",
                "groupTag" => "Group Tag",
                "productKey" => "Windows Product ID",
                other => other,
            };
            format!("{column}: {}", e.message)
        })
        .collect();
    text.join("; ")
}

/// The identity a JSON item presents, as `POST /v1/devices` reads it, with row errors.
fn presented_item(body: &DeviceCreate) -> Result<Presented, RowFailure> {
    match (body.hardware_hash.as_deref(), body.identity.as_ref()) {
        (Some(text), None) => {
            let hash =
                hardware_hash::decode(text).map_err(|e| RowFailure::invalid_hash(e.to_string()))?;
            let identity = unbox_domain::identity::Identity::from_hash(&hash);
            Ok(Presented {
                os_type: hash.os_type().as_str(),
                os_version: hash.os_version().map(str::to_owned),
                keys: identity.strong_keys(),
                identity,
                hash: Some(hash),
            })
        }
        (None, Some(identity)) => {
            let identity = identity
                .normalized()
                .map_err(|e| RowFailure::invalid_request(e.to_string()))?;
            Ok(Presented {
                keys: identity.strong_keys(),
                identity,
                hash: None,
                os_type: "Linux",
                os_version: None,
            })
        }
        (Some(_), Some(_)) => Err(RowFailure::invalid_request(
            "give either hardwareHash or identity, not both",
        )),
        (None, None) if body.serial_number.is_none() && body.product_key.is_none() => {
            Err(RowFailure {
                code: Some(803),
                name: "MissingZtdSerialNumberAndProductKey",
                message:
                    "the item has no hardwareHash, no identity, no serialNumber and no productKey"
                        .to_owned(),
            })
        }
        (None, None) => Err(RowFailure::invalid_request(
            "give the device's hardwareHash (base64) or its identity",
        )),
    }
}

/// Rebuilds the duplicate check of a resumed job from the keys its items recorded.
pub fn rebuild_tracker(recorded: &[unbox_db::imports::RecordedKeys]) -> DuplicateTracker {
    let mut tracker = DuplicateTracker::new();
    for r in recorded {
        let mut pairs = Vec::with_capacity(2);
        if let Some(k) = &r.tuple_key {
            pairs.push((ClaimKind::Tuple, k.clone()));
        }
        if let Some(k) = &r.tpm_key {
            pairs.push((ClaimKind::Tpm, k.clone()));
        }
        tracker.check(r.line.unsigned_abs(), &pairs);
    }
    tracker
}

/// Reads a spooled CSV upload and sends its rows after the checkpoint, prepared.
pub fn produce_csv(path: &Path, producer: &mut Producer) -> Result<(), ProduceError> {
    let file = File::open(path)?;
    let mut reader = RegistrationCsvReader::new(file);
    for item in reader.by_ref() {
        let prepared = match item {
            Ok(row) => {
                if producer.done(i64::try_from(row.line).unwrap_or(i64::MAX)) {
                    continue;
                }
                producer.csv_row(row)
            }
            Err(CsvError::Row { line, problem }) => {
                let line = i64::try_from(line).unwrap_or(i64::MAX);
                if producer.done(line) {
                    continue;
                }
                let e = problem.to_row_error();
                PreparedRow::failed(
                    line,
                    None,
                    Vec::new(),
                    RowFailure {
                        code: Some(e.code),
                        name: e.name,
                        message: e.message,
                    },
                )
            }
            Err(CsvError::Io(e)) => return Err(ProduceError::Io(e)),
            Err(e) => return Err(ProduceError::Unreadable(e.to_string())),
        };
        producer.push(prepared)?;
    }
    producer.flush()
}

/// Reads a spooled JSON upload and sends its items after the checkpoint, prepared.
pub fn produce_json(path: &Path, producer: &mut Producer) -> Result<(), ProduceError> {
    let file = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let skip_through = producer.checkpoint;
    let mut failure: Option<ProduceError> = None;
    let result = read_batch(file, skip_through, |index, value| {
        let Some(value) = value else {
            return Ok(());
        };
        let prepared = producer.json_row(index, value);
        producer.push(prepared).map_err(|e| {
            failure = Some(e);
            "stopped".to_owned()
        })
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    match result {
        Ok(_) => producer.flush(),
        Err(e) if e.is_io() => Err(ProduceError::Io(std::io::Error::other(e.to_string()))),
        Err(e) => Err(ProduceError::Unreadable(e.to_string())),
    }
}

/// Reads `{"devices": [...]}` as a stream, calling `on_item` with each item's index and, for
/// items after `skip_through` (all when None), its value. Returns the number of items.
/// `on_item` may stop the reading with an error message.
pub fn read_batch<R: Read>(
    source: R,
    skip_through: Option<i64>,
    on_item: impl FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
) -> Result<i64, serde_json::Error> {
    read_batch_with(source, Skip::Through(skip_through), on_item)
}

/// As [`read_batch`], reading no item's value (for counting).
pub fn count_batch<R: Read>(
    source: R,
    on_item: impl FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
) -> Result<i64, serde_json::Error> {
    read_batch_with(source, Skip::All, on_item)
}

#[derive(Clone, Copy)]
enum Skip {
    All,
    Through(Option<i64>),
}

impl Skip {
    fn skips(self, index: i64) -> bool {
        match self {
            Skip::All => true,
            Skip::Through(through) => through.is_some_and(|t| index <= t),
        }
    }
}

fn read_batch_with<R: Read, F>(
    source: R,
    skip: Skip,
    mut on_item: F,
) -> Result<i64, serde_json::Error>
where
    F: FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
{
    let mut de = serde_json::Deserializer::from_reader(source);
    let count = (&mut de).deserialize_map(BatchVisitor {
        skip,
        on_item: &mut on_item,
    })?;
    de.end()?;
    Ok(count)
}

struct BatchVisitor<'a, F> {
    skip: Skip,
    on_item: &'a mut F,
}

impl<'de, F> Visitor<'de> for BatchVisitor<'_, F>
where
    F: FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
{
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object {\"devices\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<i64, A::Error> {
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "devices" if count.is_none() => {
                    count = Some(map.next_value_seed(ItemsSeed {
                        skip: self.skip,
                        on_item: &mut *self.on_item,
                    })?);
                }
                "devices" => return Err(A::Error::duplicate_field("devices")),
                other => return Err(A::Error::unknown_field(other, &["devices"])),
            }
        }
        count.ok_or_else(|| A::Error::missing_field("devices"))
    }
}

struct ItemsSeed<'a, F> {
    skip: Skip,
    on_item: &'a mut F,
}

impl<'de, F> DeserializeSeed<'de> for ItemsSeed<'_, F>
where
    F: FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
{
    type Value = i64;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F> Visitor<'de> for ItemsSeed<'_, F>
where
    F: FnMut(i64, Option<serde_json::Value>) -> Result<(), String>,
{
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of devices")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<i64, A::Error> {
        let mut index = 0i64;
        loop {
            let value = if self.skip.skips(index) {
                match seq.next_element::<IgnoredAny>()? {
                    None => break,
                    Some(_) => None,
                }
            } else {
                match seq.next_element::<serde_json::Value>()? {
                    None => break,
                    Some(v) => Some(v),
                }
            };
            (self.on_item)(index, value).map_err(A::Error::custom)?;
            index += 1;
        }
        Ok(index)
    }
}
