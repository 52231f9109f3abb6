//! The Windows 4K hardware hash: decoding, validation and an encoder of our own.
//!
//! The "hash" is base64 of a 3000-byte structure (see `shared/reference/hardware-hash.md`):
//! `OA`, a u16 LE used length U, type/length records up to offset U, then `CS$\0`, the
//! SHA-256 of bytes `[0, U)`, and zeros to the end. The checksum has no key, so a valid hash
//! proves integrity, never origin.
//!
//! Decisions where the reference is silent:
//! - Bytes after the checksum should be zeros. Decoding is lenient (they are outside the
//!   checksum, so nothing trustworthy can be read from them) and [`HardwareHash::normalized_base64`]
//!   zeroes them, so the stored text is canonical and carries no unverified bytes.
//! - Records that feed strong or medium identity keys are validated strictly: a malformed
//!   record 11 (TPM EK digest), 12 (SMBIOS UUID) or 25 (EK modulus) is an error. Records that
//!   only feed weak keys (7, 8, 28) or descriptive fields (1) are read leniently: a record
//!   too short to hold its value is skipped.
//! - When record 25 (the EK modulus) is present, its SHA-256 must equal record 11's digest;
//!   a mismatch is an error, because the two disagree about which TPM this is. With record 25
//!   and no record 11 the digest is derived from the modulus.
//! - Text records are UTF-8; invalid bytes become U+FFFD rather than failing the hash.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::identity::normalize_disk_id;

/// Size in bytes of a decoded hardware hash.
pub const HASH_BYTES: usize = 3000;
/// Length of the canonical base64 text (3000 bytes, no padding needed).
pub const HASH_BASE64_CHARS: usize = 4000;
/// Size of the trailer at the used length: `CS$\0` and a SHA-256 digest.
const TRAILER_BYTES: usize = 4 + 32;
/// The largest used length that still leaves room for the trailer.
pub const MAX_USED_LENGTH: usize = HASH_BYTES - TRAILER_BYTES;
const MAGIC: &[u8; 2] = b"OA";
const TRAILER_MAGIC: &[u8; 4] = b"CS$\0";
/// OS type byte of record 1 written by Unbox for Linux machines ("L").
const OS_TYPE_LINUX: u8 = 0x4C;
/// OS type byte hwhash.py and Windows captures carry.
const OS_TYPE_WINDOWS: u8 = 2;
/// Architecture byte for x64.
const ARCH_X64: u8 = 9;
/// Format version byte seen in hwhash.py's and Windows' captures.
const FORMAT_VERSION: u8 = 9;
/// The OS version hwhash.py writes when none is given: (major, minor, build, revision).
const DEFAULT_WINDOWS_VERSION: (u16, u16, u16, u16) = (10, 0, 26100, 2314);

/// Record types this module reads or writes.
mod kind {
    pub const VERSION: u8 = 1;
    pub const PROCESSOR: u8 = 2;
    pub const DISK_SERIAL: u8 = 7;
    pub const NETWORK_ADAPTER: u8 = 8;
    pub const OFFLINE_DEVICE_ID: u8 = 11;
    pub const SMBIOS_UUID: u8 = 12;
    pub const TPM_VERSION: u8 = 13;
    pub const SERIAL: u8 = 14;
    pub const MANUFACTURER: u8 = 16;
    pub const MODEL: u8 = 17;
    pub const SKU: u8 = 18;
    pub const SYSTEM_FAMILY: u8 = 19;
    pub const PRODUCT_KEY_ID: u8 = 24;
    pub const TPM_EK: u8 = 25;
    pub const DISK_SERIAL_KERNEL: u8 = 28;
}

/// Why a hardware hash was refused. Each message is fit to show to an admin as the detail of
/// a 422 `InvalidZtdHardwareHash` (802).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Nothing but whitespace.
    #[error("the hardware hash is empty")]
    Empty,
    /// The text is not standard base64.
    #[error("the hardware hash is not valid base64: {reason}")]
    InvalidBase64 {
        /// What the base64 decoder objected to.
        reason: String,
    },
    /// The decoded size is not 3000 bytes.
    #[error(
        "the hardware hash decodes to {bytes} bytes; a Windows 4K hardware hash is exactly 3000 bytes (4000 base64 characters)"
    )]
    WrongLength {
        /// The decoded size, or a lower bound of it when the text was far too long to decode.
        bytes: usize,
    },
    /// The first two bytes are not `OA`.
    #[error(
        "the hardware hash does not start with the \"OA\" signature (its base64 text should start with \"T0\")"
    )]
    BadMagic,
    /// The used length in bytes 2–3 cannot be right.
    #[error(
        "the hardware hash declares a used length of {used} bytes; it must be between 4 and {max}",
        max = MAX_USED_LENGTH
    )]
    UsedLengthOutOfRange {
        /// The declared used length.
        used: usize,
    },
    /// A record declares a length smaller than its own header.
    #[error(
        "record type {kind} at offset {offset} declares a length of {length} bytes, less than its 4-byte header"
    )]
    RecordTooShort {
        /// Record type.
        kind: u8,
        /// Byte offset of the record.
        offset: usize,
        /// Declared length.
        length: usize,
    },
    /// A record runs past the used length.
    #[error(
        "record type {kind} at offset {offset} (length {length}) runs past the used length {used}"
    )]
    RecordOverrun {
        /// Record type.
        kind: u8,
        /// Byte offset of the record.
        offset: usize,
        /// Declared length.
        length: usize,
        /// Used length of the hash.
        used: usize,
    },
    /// The records stop short of the used length with less than a record header left.
    #[error(
        "the records do not end exactly at the used length {used}: {left} stray byte(s) at offset {offset}"
    )]
    RecordsMisaligned {
        /// Where the stray bytes start.
        offset: usize,
        /// How many bytes are left before the used length.
        left: usize,
        /// Used length of the hash.
        used: usize,
    },
    /// `CS$\0` is missing at the used length.
    #[error("the checksum trailer \"CS$\\0\" is missing at offset {used} (the used length)")]
    BadTrailer {
        /// Used length of the hash.
        used: usize,
    },
    /// The SHA-256 after the trailer does not match the content.
    #[error(
        "the hardware hash's checksum does not match its content: it was altered or damaged after capture"
    )]
    ChecksumMismatch,
    /// A record this module must interpret has the wrong shape.
    #[error("record type {kind} ({what}) is malformed: {reason}")]
    MalformedRecord {
        /// Record type.
        kind: u8,
        /// What the record holds.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Record 25's SHA-256 differs from record 11's digest.
    #[error(
        "the TPM endorsement key (record 25) does not match the TPM digest (record 11): the hash is inconsistent"
    )]
    TpmDigestMismatch,
    /// Two records 11 name different TPMs.
    #[error("the hardware hash holds two different TPM endorsement-key digests")]
    ConflictingTpmDigests,
    /// A required record is absent.
    #[error(
        "the hardware hash has no {field} (record {kind}); a hash without it cannot be registered"
    )]
    MissingField {
        /// Human name of the field.
        field: &'static str,
        /// Record type.
        kind: u8,
    },
    /// A required record is present but blank.
    #[error(
        "the hardware hash's {field} (record {kind}) is empty; a hash without it cannot be registered"
    )]
    EmptyField {
        /// Human name of the field.
        field: &'static str,
        /// Record type.
        kind: u8,
    },
}

impl HashError {
    /// The Autopilot error code for every hash error (802).
    pub const CODE: u16 = 802;
    /// The Autopilot error name for every hash error.
    pub const NAME: &'static str = "InvalidZtdHardwareHash";
}

/// The operating system a hash was captured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OsType {
    /// A Windows capture (any OS type byte other than `L`).
    #[default]
    Windows,
    /// An Unbox-made hash of a Linux machine (OS type byte 0x4C, `L`).
    Linux,
}

impl OsType {
    /// The `deviceOSType` text: `Windows` or `Linux`.
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Windows => "Windows",
            OsType::Linux => "Linux",
        }
    }
}

/// One network adapter (record 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAdapter {
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// NDIS physical medium: 14 Ethernet, 9 Wi-Fi, 10 Bluetooth.
    pub physical_medium: u32,
    /// Bus name, e.g. `PCI` or `BTH`, when present.
    pub bus: Option<String>,
}

/// A decoded and validated hardware hash. Only [`decode`] makes one, so holding one means
/// the envelope, records and checksum were valid and serial and manufacturer are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareHash {
    manufacturer: String,
    model: Option<String>,
    serial: String,
    smbios_uuid: Option<String>,
    macs: Vec<String>,
    network_adapters: Vec<NetworkAdapter>,
    disk_ids: Vec<String>,
    tpm_ek_sha256: Option<String>,
    os_type: OsType,
    os_version: Option<String>,
    sku: Option<String>,
    system_family: Option<String>,
    product_key_id: Option<String>,
    /// The 3000 bytes with everything after the checksum zeroed.
    #[serde(skip)]
    bytes: Vec<u8>,
}

/// What a device is looked up by: the values its strong keys are made of, and its OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupValues {
    pub manufacturer: String,
    pub model: Option<String>,
    pub serial: String,
    pub tpm_ek_sha256: Option<String>,
    pub os_type: OsType,
}

/// The values of a hash that make up its [`crate::identity::Identity`].
pub(crate) struct IdentityParts {
    pub manufacturer: String,
    pub model: Option<String>,
    pub serial: String,
    pub smbios_uuid: Option<String>,
    pub macs: Vec<String>,
    pub disk_ids: Vec<String>,
    pub tpm_ek_sha256: Option<String>,
}

impl HardwareHash {
    /// Its identity's values, copied.
    pub(crate) fn identity_parts(&self) -> IdentityParts {
        IdentityParts {
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            serial: self.serial.clone(),
            smbios_uuid: self.smbios_uuid.clone(),
            macs: self.macs.clone(),
            disk_ids: self.disk_ids.clone(),
            tpm_ek_sha256: self.tpm_ek_sha256.clone(),
        }
    }

    /// What the device call would look it up by: [`decode_for_lookup`] of its text.
    pub fn lookup_values(&self) -> LookupValues {
        LookupValues {
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            serial: self.serial.clone(),
            tpm_ek_sha256: self.tpm_ek_sha256.clone(),
            os_type: self.os_type,
        }
    }
}

impl HardwareHash {
    /// SMBIOS system manufacturer (record 16), trimmed; never empty.
    pub fn manufacturer(&self) -> &str {
        &self.manufacturer
    }
    /// SMBIOS product name (record 17), trimmed, when present and non-empty.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// SMBIOS system serial number (record 14), trimmed; never empty.
    pub fn serial(&self) -> &str {
        &self.serial
    }
    /// SMBIOS UUID (record 12), lowercase hyphenated, first three fields little-endian.
    pub fn smbios_uuid(&self) -> Option<&str> {
        self.smbios_uuid.as_deref()
    }
    /// Distinct MAC addresses of the adapters (record 8), lowercase `aa:bb:..`, in record
    /// order; all-zero and broadcast addresses are left out.
    pub fn macs(&self) -> &[String] {
        &self.macs
    }
    /// Every network adapter record as found.
    pub fn network_adapters(&self) -> &[NetworkAdapter] {
        &self.network_adapters
    }
    /// Distinct normalised disk ids (records 7 and 28).
    pub fn disk_ids(&self) -> &[String] {
        &self.disk_ids
    }
    /// SHA-256 of the TPM EK modulus, lowercase hex (record 11 with id type 1, or derived
    /// from record 25).
    pub fn tpm_ek_sha256(&self) -> Option<&str> {
        self.tpm_ek_sha256.as_deref()
    }
    /// Windows, unless record 1 carries the Linux OS type byte.
    pub fn os_type(&self) -> OsType {
        self.os_type
    }
    /// OS build from record 1 as `major.minor.build.revision`; None when absent or zero.
    pub fn os_version(&self) -> Option<&str> {
        self.os_version.as_deref()
    }
    /// SKU number (record 18).
    pub fn sku(&self) -> Option<&str> {
        self.sku.as_deref()
    }
    /// System family (record 19).
    pub fn system_family(&self) -> Option<&str> {
        self.system_family.as_deref()
    }
    /// OEM product key id (record 24).
    pub fn product_key_id(&self) -> Option<&str> {
        self.product_key_id.as_deref()
    }
    /// The canonical 4000-character base64 text to store: no whitespace, standard alphabet,
    /// bytes after the checksum zeroed.
    pub fn normalized_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }
    /// The 3000 decoded bytes (canonical: bytes after the checksum zeroed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Standard alphabet; padding optional, since copied hashes often lose it.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes and validates a hardware hash given as base64 text.
///
/// Whitespace anywhere is removed and missing `=` padding is tolerated before decoding.
pub fn decode(text: &str) -> Result<HardwareHash, HashError> {
    let bytes = decode_base64(text)?;
    let mut hash = read(&bytes, Wanted::Everything)?;
    // The decoded buffer becomes the canonical bytes: no copy.
    hash.bytes = canonical(bytes);
    Ok(hash)
}

/// [`decode`] for a device looking itself up, on every profile request: it accepts and refuses
/// exactly what [`decode`] does, with the same errors (every record is validated as before),
/// but builds only the values the lookup needs. Adapters, disks, the UUID, the OS version and
/// the canonical bytes are not made, which saves most for the hashes of machines with several
/// adapters and disks (`benches/hash_decode.rs` compares the two).
pub fn decode_for_lookup(text: &str) -> Result<LookupValues, HashError> {
    let bytes = decode_base64(text)?;
    let hash = read(&bytes, Wanted::LookupValues)?;
    Ok(LookupValues {
        manufacturer: hash.manufacturer,
        model: hash.model,
        serial: hash.serial,
        tpm_ek_sha256: hash.tpm_ek_sha256,
        os_type: hash.os_type,
    })
}

/// What [`read`] builds: every value, or only [`LookupValues`]'s (the rest left empty).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Everything,
    LookupValues,
}

/// Base64 step of [`decode`], bounded so that a huge input is refused before decoding.
fn decode_base64(text: &str) -> Result<Vec<u8>, HashError> {
    // The common case, first: exactly 4000 characters are exactly 3000 bytes (no padding, no
    // partial group), so a strict decoder accepts exactly what the lenient path below would.
    // Anything it refuses goes that way, for the precise error.
    if text.len() == HASH_BASE64_CHARS
        && let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text.as_bytes())
        && bytes.len() == HASH_BYTES
    {
        return Ok(bytes);
    }
    decode_base64_lenient(text)
}

/// Base64 as admins paste it: whitespace anywhere, padding optional; precise errors.
fn decode_base64_lenient(text: &str) -> Result<Vec<u8>, HashError> {
    // Nearly every hash arrives as plain ASCII with no whitespace: decode it in place.
    let plain = text.is_ascii() && !text.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b);
    // Count first: a many-megabyte paste must not be copied or decoded.
    let significant = if plain {
        text.len()
    } else {
        text.chars().filter(|c| !c.is_whitespace()).count()
    };
    if significant == 0 {
        return Err(HashError::Empty);
    }
    // 4000 characters plus a little room for stray padding; beyond that it cannot be right.
    if significant > HASH_BASE64_CHARS + 8 {
        return Err(HashError::WrongLength {
            bytes: significant / 4 * 3,
        });
    }
    let compact: std::borrow::Cow<'_, str> = if plain {
        std::borrow::Cow::Borrowed(text)
    } else {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    };
    // Restoring padding is what Indifferent does; excess '=' is still an error.
    let unpadded = compact.trim_end_matches('=');
    let pad = compact.len() - unpadded.len();
    if pad > 2 {
        return Err(HashError::InvalidBase64 {
            reason: format!("{pad} '=' padding characters at the end (at most 2 are valid)"),
        });
    }
    let bytes = LENIENT_STANDARD
        .decode(unpadded)
        .map_err(|e| HashError::InvalidBase64 {
            reason: describe_base64_error(&e, unpadded),
        })?;
    if bytes.len() != HASH_BYTES {
        return Err(HashError::WrongLength { bytes: bytes.len() });
    }
    Ok(bytes)
}

fn describe_base64_error(e: &base64::DecodeError, text: &str) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) => {
            let c = text.get(*at..).and_then(|s| s.chars().next());
            match c {
                Some(c) if c.is_ascii_graphic() => {
                    format!(
                        "character '{c}' at position {} is not in the base64 alphabet",
                        at + 1
                    )
                }
                Some(c) => format!(
                    "character U+{:04X} at position {} is not in the base64 alphabet",
                    c as u32,
                    at + 1
                ),
                None => format!("invalid character at position {}", at + 1),
            }
        }
        base64::DecodeError::InvalidLength(_) => {
            "the number of base64 characters is not possible for any byte length".to_owned()
        }
        base64::DecodeError::InvalidLastSymbol(at, _) => {
            format!(
                "the last character (position {}) has stray bits set",
                at + 1
            )
        }
        base64::DecodeError::InvalidPadding => "misplaced '=' padding".to_owned(),
    }
}

/// One record as found while walking.
struct RawRecord<'a> {
    kind: u8,
    payload: &'a [u8],
}

/// Validates the envelope and returns the records between offset 4 and U.
fn walk(bytes: &[u8]) -> Result<Vec<RawRecord<'_>>, HashError> {
    if bytes.len() != HASH_BYTES {
        return Err(HashError::WrongLength { bytes: bytes.len() });
    }
    if &bytes[0..2] != MAGIC {
        return Err(HashError::BadMagic);
    }
    let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    if !(4..=MAX_USED_LENGTH).contains(&used) {
        return Err(HashError::UsedLengthOutOfRange { used });
    }
    // A machine's hash holds some twenty records: one allocation for all of them.
    let mut records = Vec::with_capacity(32);
    let mut offset = 4usize;
    while offset < used {
        if used - offset < 4 {
            return Err(HashError::RecordsMisaligned {
                offset,
                left: used - offset,
                used,
            });
        }
        let kind = bytes[offset];
        let length = usize::from(u16::from_le_bytes([bytes[offset + 2], bytes[offset + 3]]));
        if length < 4 {
            return Err(HashError::RecordTooShort {
                kind,
                offset,
                length,
            });
        }
        if offset + length > used {
            return Err(HashError::RecordOverrun {
                kind,
                offset,
                length,
                used,
            });
        }
        records.push(RawRecord {
            kind,
            payload: &bytes[offset + 4..offset + length],
        });
        offset += length;
    }
    if &bytes[used..used + 4] != TRAILER_MAGIC {
        return Err(HashError::BadTrailer { used });
    }
    let digest = Sha256::digest(&bytes[..used]);
    if bytes[used + 4..used + TRAILER_BYTES] != digest[..] {
        return Err(HashError::ChecksumMismatch);
    }
    Ok(records)
}

/// Decodes and validates the 3000 raw bytes of a hardware hash.
pub fn decode_bytes(bytes: &[u8]) -> Result<HardwareHash, HashError> {
    let mut hash = read(bytes, Wanted::Everything)?;
    hash.bytes = canonical(bytes.to_vec());
    Ok(hash)
}

/// The hash's bytes with everything past the checksum zeroed (its normal form). Only called on
/// bytes [`read`] accepted, so the used length is in range.
fn canonical(mut bytes: Vec<u8>) -> Vec<u8> {
    let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    for b in &mut bytes[used + TRAILER_BYTES..] {
        *b = 0;
    }
    bytes
}

/// [`decode_bytes`] but for the canonical bytes, left empty; with [`Wanted::LookupValues`],
/// the values outside [`LookupValues`] are left empty too, after the same validation.
fn read(bytes: &[u8], wanted: Wanted) -> Result<HardwareHash, HashError> {
    let everything = wanted == Wanted::Everything;
    let records = walk(bytes)?;
    let mut serial: Option<String> = None;
    let mut manufacturer: Option<String> = None;
    let mut model = None;
    let mut sku = None;
    let mut system_family = None;
    let mut product_key_id = None;
    let mut smbios_uuid: Option<[u8; 16]> = None;
    let mut network_adapters = Vec::new();
    let mut disk_ids: Vec<String> = Vec::new();
    let mut tpm_digest: Option<[u8; 32]> = None;
    let mut ek_digest: Option<[u8; 32]> = None;
    let mut os_type = OsType::Windows;
    let mut os_version = None;
    let mut seen_version = false;

    for record in &records {
        let p = record.payload;
        match record.kind {
            kind::VERSION if !seen_version => {
                seen_version = true;
                os_type = parse_os_type(p);
                if everything {
                    os_version = parse_os_version(p);
                }
            }
            kind::SERIAL if serial.is_none() => serial = Some(record_text(p)),
            kind::MANUFACTURER if manufacturer.is_none() => manufacturer = Some(record_text(p)),
            kind::MODEL if model.is_none() => model = Some(record_text(p)),
            // Neither these nor adapters and disks can refuse a hash: a lookup skips them.
            kind::SKU if everything && sku.is_none() => sku = Some(record_text(p)),
            kind::SYSTEM_FAMILY if everything && system_family.is_none() => {
                system_family = Some(record_text(p));
            }
            kind::PRODUCT_KEY_ID if everything && product_key_id.is_none() => {
                product_key_id = Some(record_text(p));
            }
            kind::SMBIOS_UUID => {
                let raw: [u8; 16] = p.try_into().map_err(|_| HashError::MalformedRecord {
                    kind: kind::SMBIOS_UUID,
                    what: "SMBIOS UUID",
                    reason: format!("{} bytes instead of 16", p.len()),
                })?;
                match smbios_uuid {
                    None => smbios_uuid = Some(raw),
                    Some(first) if first == raw => {}
                    Some(_) => {
                        return Err(HashError::MalformedRecord {
                            kind: kind::SMBIOS_UUID,
                            what: "SMBIOS UUID",
                            reason: "two records hold different UUIDs".to_owned(),
                        });
                    }
                }
            }
            kind::NETWORK_ADAPTER if everything => {
                if let Some(adapter) = parse_adapter(p) {
                    network_adapters.push(adapter);
                }
            }
            kind::DISK_SERIAL | kind::DISK_SERIAL_KERNEL if everything => {
                if let Some(id) = parse_disk(p)
                    && !disk_ids.contains(&id)
                {
                    disk_ids.push(id);
                }
            }
            kind::OFFLINE_DEVICE_ID => {
                if let Some(d) = parse_offline_id(p)? {
                    match tpm_digest {
                        None => tpm_digest = Some(d),
                        Some(first) if first == d => {}
                        Some(_) => return Err(HashError::ConflictingTpmDigests),
                    }
                }
            }
            kind::TPM_EK => {
                if p.is_empty() {
                    return Err(HashError::MalformedRecord {
                        kind: kind::TPM_EK,
                        what: "TPM endorsement key",
                        reason: "it is empty".to_owned(),
                    });
                }
                let d: [u8; 32] = Sha256::digest(p).into();
                match ek_digest {
                    None => ek_digest = Some(d),
                    Some(first) if first == d => {}
                    Some(_) => return Err(HashError::ConflictingTpmDigests),
                }
            }
            // Unknown and undocumented records (and repeats of single-valued ones) are skipped.
            _ => {}
        }
    }

    let serial = required(serial, "serial number", kind::SERIAL)?;
    let manufacturer = required(manufacturer, "manufacturer", kind::MANUFACTURER)?;
    let tpm = match (tpm_digest, ek_digest) {
        (Some(t), Some(e)) if t != e => return Err(HashError::TpmDigestMismatch),
        (Some(t), _) => Some(t),
        (None, e) => e,
    };
    let macs = distinct_macs(&network_adapters);
    Ok(HardwareHash {
        manufacturer,
        model: non_empty(model),
        serial,
        smbios_uuid: smbios_uuid.map(|raw| Uuid::from_bytes_le(raw).hyphenated().to_string()),
        macs,
        network_adapters,
        disk_ids,
        tpm_ek_sha256: tpm.map(|digest| hex_lower(&digest)),
        os_type,
        os_version,
        sku: non_empty(sku),
        system_family: non_empty(system_family),
        product_key_id: non_empty(product_key_id),
        bytes: Vec::new(),
    })
}

/// Lowercase hex, as `hex::encode` writes it, a byte at a time rather than a character.
fn hex_lower(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex_lower(&mut text, bytes);
    text
}

fn push_hex_lower(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn required(value: Option<String>, field: &'static str, kind: u8) -> Result<String, HashError> {
    match value {
        None => Err(HashError::MissingField { field, kind }),
        Some(v) if v.is_empty() => Err(HashError::EmptyField { field, kind }),
        Some(v) => Ok(v),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Trims whitespace and NULs from both ends, the way identity values are normalised.
pub(crate) fn trim_value(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// A UTF-8, NUL-terminated text record: cut at the first NUL after trimming, lossy UTF-8.
fn record_text(p: &[u8]) -> String {
    let text = String::from_utf8_lossy(p);
    let trimmed = trim_value(&text);
    // A NUL inside means the C string ended there; what follows is not part of the value.
    let cut = trimmed.split('\0').next().unwrap_or_default();
    trim_value(cut).to_owned()
}

/// Record 1's OS type. Lenient: a short record means Windows.
fn parse_os_type(p: &[u8]) -> OsType {
    match p.get(21) {
        Some(&OS_TYPE_LINUX) => OsType::Linux,
        _ => OsType::Windows,
    }
}

/// Record 1's OS version. Lenient: a short record has none.
fn parse_os_version(p: &[u8]) -> Option<String> {
    // The second quad, packed as {minor, major, revision, build}.
    p.get(8..16).and_then(|q| {
        let w = |i: usize| u16::from_le_bytes([q[i], q[i + 1]]);
        let (minor, major, revision, build) = (w(0), w(2), w(4), w(6));
        if (minor, major, revision, build) == (0, 0, 0, 0) {
            None
        } else {
            Some(dotted_version([major, minor, build, revision]))
        }
    })
}

/// `a.b.c.d`, as `format!("{a}.{b}.{c}.{d}")` writes it, without the formatting machinery: every
/// device request decodes a hash, and `format!` was a sixth of reading one.
fn dotted_version(parts: [u16; 4]) -> String {
    let mut text = String::with_capacity(4 * 6);
    let mut digits = itoa::Buffer::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(part));
    }
    text
}

/// Record 8: u32 medium, 6-byte MAC, u32, UTF-16LE bus. Too short to hold a MAC: skipped.
fn parse_adapter(p: &[u8]) -> Option<NetworkAdapter> {
    let medium = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let mac: [u8; 6] = p.get(4..10)?.try_into().ok()?;
    let bus = p.get(14..).and_then(|rest| {
        let units = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0);
        // As `String::from_utf16_lossy`, without the intermediate buffer.
        let s: String = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        let trimmed = trim_value(&s);
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == s.len() {
            Some(s)
        } else {
            Some(trimmed.to_owned())
        }
    });
    Some(NetworkAdapter {
        mac: format_mac(&mac),
        physical_medium: medium,
        bus,
    })
}

/// Lowercase colon-separated MAC text.
pub(crate) fn format_mac(mac: &[u8; 6]) -> String {
    let mut text = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        push_hex_lower(&mut text, &[*byte]);
    }
    text
}

fn distinct_macs(adapters: &[NetworkAdapter]) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for a in adapters {
        if a.mac == "00:00:00:00:00:00" || a.mac == "ff:ff:ff:ff:ff:ff" {
            continue;
        }
        if !macs.contains(&a.mac) {
            macs.push(a.mac.clone());
        }
    }
    macs
}

/// Records 7 and 28: `<serial>.|<model>|`; the id is the serial part, normalised.
fn parse_disk(p: &[u8]) -> Option<String> {
    let text = record_text(p);
    let serial = match text.find(".|") {
        Some(at) => &text[..at],
        None => text.split('|').next().unwrap_or_default(),
    };
    normalize_disk_id(serial)
}

/// Record 11: 4 zero bytes, id type, u8, u16 digest length, 2 zero bytes, digest. Returns the
/// digest when the id type is 1 (TPM EK); other id types are not identities we know.
fn parse_offline_id(p: &[u8]) -> Result<Option<[u8; 32]>, HashError> {
    let malformed = |reason: String| HashError::MalformedRecord {
        kind: kind::OFFLINE_DEVICE_ID,
        what: "offline device id",
        reason,
    };
    if p.len() < 10 {
        return Err(malformed(format!(
            "{} bytes, too short for its 10-byte header",
            p.len()
        )));
    }
    if p[4] != 1 {
        return Ok(None);
    }
    let declared = usize::from(u16::from_le_bytes([p[6], p[7]]));
    if declared != 32 {
        return Err(malformed(format!(
            "the TPM digest length is {declared}, not 32"
        )));
    }
    let digest: [u8; 32] = p
        .get(10..42)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| malformed(format!("{} bytes, too short for a 32-byte digest", p.len())))?;
    Ok(Some(digest))
}

/// What [`build`] writes. Strings are written as given (trim them first if a round trip
/// must compare equal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashSpec {
    /// Record 16.
    pub manufacturer: String,
    /// Record 17.
    pub model: String,
    /// Record 14.
    pub serial: String,
    /// Record 12, when known.
    pub smbios_uuid: Option<Uuid>,
    /// One record 8 (Ethernet, PCI) per permanent MAC.
    pub macs: Vec<[u8; 6]>,
    /// One record 7 per disk id (written as `<id>.||`).
    pub disk_ids: Vec<String>,
    /// Record 25 (and record 11 derived from it).
    pub tpm_ek_modulus: Option<Vec<u8>>,
    /// Record 11 when only the digest is known. Ignored when `tpm_ek_modulus` is set, because
    /// the digest is then derived from the modulus.
    pub tpm_ek_sha256: Option<[u8; 32]>,
    /// OS type byte of record 1.
    pub os_type: OsType,
    /// OS build as (major, minor, build, revision). Windows specs default to
    /// 10.0.26100.2314 like hwhash.py; Linux specs write zeros (no version).
    pub os_version: Option<(u16, u16, u16, u16)>,
    /// Record 18.
    pub sku: Option<String>,
    /// Record 19.
    pub system_family: Option<String>,
    /// Record 24.
    pub product_key_id: Option<String>,
    /// Varies the five bytes that differ between two captures of the same machine.
    pub capture: u32,
}

/// Why [`build`] could not produce a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The records do not fit in 3000 bytes.
    #[error(
        "the records need {used} bytes, more than the {max} a 3000-byte hardware hash can hold",
        max = MAX_USED_LENGTH
    )]
    TooLarge {
        /// Used length the records would need.
        used: usize,
    },
    /// One record's payload exceeds what a u16 length can describe.
    #[error("record type {kind} is {len} bytes, too long for a record")]
    RecordTooLong {
        /// Record type.
        kind: u8,
        /// Payload length.
        len: usize,
    },
}

fn push_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> Result<(), BuildError> {
    let len = u16::try_from(payload.len() + 4).map_err(|_| BuildError::RecordTooLong {
        kind,
        len: payload.len(),
    })?;
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn text_payload(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn version_payload(spec: &HashSpec, os_byte: u8) -> Vec<u8> {
    let version = match (spec.os_version, spec.os_type) {
        (Some(v), _) => v,
        (None, OsType::Windows) => DEFAULT_WINDOWS_VERSION,
        (None, OsType::Linux) => (0, 0, 0, 0),
    };
    let (major, minor, build, revision) = version;
    let mut quad = Vec::with_capacity(8);
    for w in [minor, major, revision, build] {
        quad.extend_from_slice(&w.to_le_bytes());
    }
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&quad);
    p.extend_from_slice(&quad);
    // Same derivation as hwhash.py, so equal specs give equal bytes in both encoders.
    let varying = Sha256::digest(format!("{}/{}", spec.serial, spec.capture).as_bytes());
    p.extend_from_slice(&varying[..5]);
    p.extend_from_slice(&[os_byte, ARCH_X64, FORMAT_VERSION]);
    p
}

fn adapter_payload(mac: &[u8; 6]) -> Vec<u8> {
    let mut p = Vec::with_capacity(22);
    p.extend_from_slice(&14u32.to_le_bytes());
    p.extend_from_slice(mac);
    p.extend_from_slice(&8u32.to_le_bytes());
    for u in "PCI\0".encode_utf16() {
        p.extend_from_slice(&u.to_le_bytes());
    }
    p
}

fn offline_id_payload(digest: &[u8; 32]) -> Vec<u8> {
    let mut p = vec![0u8, 0, 0, 0, 1, 0];
    p.extend_from_slice(&32u16.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(digest);
    p
}

/// Builds a hardware hash (canonical base64 text) from a spec.
///
/// Windows specs follow `shared/tools/hwhash.py` record for record (1, 2, 8…, 7…, 13/25/11,
/// 12, 14, 16, 17), so a spec with the same values yields byte-identical output when it has no
/// TPM, disk or extra fields. Linux specs are the "Unbox-made hash": record 1 with OS type `L`,
/// then 14, 16, 17, 12, 8 per MAC, 7 per disk, and 25 + 11 (or 11 alone).
pub fn build(spec: &HashSpec) -> Result<String, BuildError> {
    let bytes = build_bytes(spec)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// As [`build`], returning the 3000 raw bytes.
pub fn build_bytes(spec: &HashSpec) -> Result<Vec<u8>, BuildError> {
    let tpm_digest: Option<[u8; 32]> = match &spec.tpm_ek_modulus {
        Some(m) => Some(Sha256::digest(m).into()),
        None => spec.tpm_ek_sha256,
    };
    let mut body = Vec::new();
    let disk_payload = |id: &String| format!("{id}.||").into_bytes();
    let extras = |body: &mut Vec<u8>| -> Result<(), BuildError> {
        for (k, v) in [
            (kind::SKU, &spec.sku),
            (kind::SYSTEM_FAMILY, &spec.system_family),
            (kind::PRODUCT_KEY_ID, &spec.product_key_id),
        ] {
            if let Some(v) = v {
                push_record(body, k, &text_payload(v))?;
            }
        }
        Ok(())
    };
    match spec.os_type {
        OsType::Windows => {
            push_record(
                &mut body,
                kind::VERSION,
                &version_payload(spec, OS_TYPE_WINDOWS),
            )?;
            let mut cpu = Vec::new();
            for w in [9u16, 1, 8, 16, 1, 0] {
                cpu.extend_from_slice(&w.to_le_bytes());
            }
            push_record(&mut body, kind::PROCESSOR, &cpu)?;
            for mac in &spec.macs {
                push_record(&mut body, kind::NETWORK_ADAPTER, &adapter_payload(mac))?;
            }
            for id in &spec.disk_ids {
                push_record(&mut body, kind::DISK_SERIAL, &disk_payload(id))?;
            }
            if let Some(modulus) = &spec.tpm_ek_modulus {
                push_record(
                    &mut body,
                    kind::TPM_VERSION,
                    &text_payload(
                        "TPM-Version:2.0 -Level:0-Revision:1.59-VendorID:'SYN '-Firmware:1.0",
                    ),
                )?;
                push_record(&mut body, kind::TPM_EK, modulus)?;
            }
            if let Some(d) = &tpm_digest {
                push_record(&mut body, kind::OFFLINE_DEVICE_ID, &offline_id_payload(d))?;
            }
            if let Some(u) = spec.smbios_uuid {
                push_record(&mut body, kind::SMBIOS_UUID, &u.to_bytes_le())?;
            }
            push_record(&mut body, kind::SERIAL, &text_payload(&spec.serial))?;
            push_record(
                &mut body,
                kind::MANUFACTURER,
                &text_payload(&spec.manufacturer),
            )?;
            push_record(&mut body, kind::MODEL, &text_payload(&spec.model))?;
            extras(&mut body)?;
        }
        OsType::Linux => {
            push_record(
                &mut body,
                kind::VERSION,
                &version_payload(spec, OS_TYPE_LINUX),
            )?;
            push_record(&mut body, kind::SERIAL, &text_payload(&spec.serial))?;
            push_record(
                &mut body,
                kind::MANUFACTURER,
                &text_payload(&spec.manufacturer),
            )?;
            push_record(&mut body, kind::MODEL, &text_payload(&spec.model))?;
            extras(&mut body)?;
            if let Some(u) = spec.smbios_uuid {
                push_record(&mut body, kind::SMBIOS_UUID, &u.to_bytes_le())?;
            }
            for mac in &spec.macs {
                push_record(&mut body, kind::NETWORK_ADAPTER, &adapter_payload(mac))?;
            }
            for id in &spec.disk_ids {
                push_record(&mut body, kind::DISK_SERIAL, &disk_payload(id))?;
            }
            if let Some(modulus) = &spec.tpm_ek_modulus {
                push_record(&mut body, kind::TPM_EK, modulus)?;
            }
            if let Some(d) = &tpm_digest {
                push_record(&mut body, kind::OFFLINE_DEVICE_ID, &offline_id_payload(d))?;
            }
        }
    }
    seal(&body)
}

/// Wraps record bytes into the 3000-byte envelope: `OA`, used length, records, `CS$\0`,
/// SHA-256, zeros.
pub fn seal(records: &[u8]) -> Result<Vec<u8>, BuildError> {
    let used = 4 + records.len();
    if used > MAX_USED_LENGTH {
        return Err(BuildError::TooLarge { used });
    }
    let used16 = u16::try_from(used).map_err(|_| BuildError::TooLarge { used })?;
    let mut out = Vec::with_capacity(HASH_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&used16.to_le_bytes());
    out.extend_from_slice(records);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(TRAILER_MAGIC);
    out.extend_from_slice(&digest);
    out.resize(HASH_BYTES, 0);
    Ok(out)
}

/// Encodes one record (type, reserved 0, u16 LE length including the header, payload), for
/// callers that assemble records themselves before [`seal`].
pub fn encode_record(kind: u8, payload: &[u8]) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    push_record(&mut out, kind, payload)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use proptest::prelude::*;

    proptest! {
        /// The OS version text is what `format!` writes, for every quad.
        #[test]
        fn dotted_version_writes_what_format_writes(parts in any::<[u16; 4]>()) {
            let [a, b, c, d] = parts;
            prop_assert_eq!(super::dotted_version(parts), format!("{a}.{b}.{c}.{d}"));
        }

        /// The MAC text is what formatting each byte and joining them writes.
        #[test]
        fn format_mac_writes_what_format_and_join_write(mac in any::<[u8; 6]>()) {
            let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(super::format_mac(&mac), parts.join(":"));
        }

        /// An adapter's bus text is `String::from_utf16_lossy` of its units up to the first
        /// NUL, trimmed: unpaired surrogates, whitespace and all.
        #[test]
        fn adapter_bus_is_the_lossy_utf16_text_trimmed(
            units in proptest::collection::vec(
                prop_oneof![Just(0u16), Just(0x20), Just(0xd800), Just(0xdc00), any::<u16>(), 0x41u16..0x7a],
                0..24,
            ),
            odd_byte in proptest::option::of(any::<u8>()),
        ) {
            let mut payload = vec![1, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0, 0, 0];
            for u in &units {
                payload.extend_from_slice(&u.to_le_bytes());
            }
            payload.extend(odd_byte);
            let before_nul: Vec<u16> = units.iter().copied().take_while(|&u| u != 0).collect();
            let text = String::from_utf16_lossy(&before_nul);
            let expected = Some(super::trim_value(&text).to_owned()).filter(|s| !s.is_empty());
            let adapter = super::parse_adapter(&payload).unwrap();
            prop_assert_eq!(adapter.bus, expected);
            prop_assert_eq!(adapter.mac, "aa:bb:cc:dd:ee:ff");
        }
    }

    /// The fast path and the lenient one agree on every 4000-character text: valid hashes,
    /// and texts with padding, whitespace or characters outside the alphabet.
    #[test]
    fn both_base64_paths_agree() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let junk = ["=", " ", "\n", "-", "_", "*", "é"];
        let mut compared = 0;
        for round in 0..2000 {
            let bytes: Vec<u8> = (0..super::HASH_BYTES).map(|_| next() as u8).collect();
            let mut text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            if round % 2 == 1 {
                let at = usize::try_from(next() % 3999).unwrap();
                let with = junk[usize::try_from(next() % 7).unwrap()];
                text.replace_range(at..=at, with);
            }
            if text.len() == super::HASH_BASE64_CHARS {
                assert_eq!(
                    super::decode_base64(&text),
                    super::decode_base64_lenient(&text),
                    "round {round}"
                );
                compared += 1;
            }
        }
        assert!(compared > 1500);
    }
}
