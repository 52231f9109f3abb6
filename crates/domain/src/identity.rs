//! Hardware identities, their keys, and the matching rule of the device call.
//!
//! Keys (see `shared/reference/hardware-hash.md` and `shared/design.md`):
//! - strong: the (manufacturer, model, serial) tuple unless the serial is a placeholder, and
//!   the SHA-256 of the TPM endorsement-key modulus. Strong keys identify a machine and are
//!   claimed globally (one tenant per identity).
//! - medium: the SMBIOS UUID (VM clones and OEM placeholder UUIDs exist).
//! - weak: permanent MAC addresses and disk ids (docks, disk swaps). They corroborate only.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::hardware_hash::{HardwareHash, IdentityParts, LookupValues, trim_value};

/// Separator of the tuple key's parts. It is a control character, and control characters are
/// replaced in the parts, so it cannot occur inside one.
const TUPLE_SEPARATOR: char = '\u{1f}';
/// Longest manufacturer, model or serial accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest disk id accepted, in characters.
pub const MAX_DISK_ID_CHARS: usize = 256;
/// Most MAC addresses or disk ids accepted in one identity.
pub const MAX_LIST_ITEMS: usize = 64;

/// A machine's hardware identity: the `identity` object of the API (Linux devices and
/// `unbox hwid --format json`), or what a decoded hardware hash says.
///
/// Every field may be absent in a request: a Linux identity with only `tpmEkSha256` is valid
/// and matches the same machine's Windows hash through its record 11.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// SMBIOS system manufacturer (`sys_vendor`).
    #[serde(default)]
    pub manufacturer: String,
    /// SMBIOS product name (`product_name`).
    #[serde(default)]
    pub model: String,
    /// SMBIOS system serial number (`product_serial`).
    #[serde(default)]
    pub serial_number: String,
    /// SMBIOS UUID, lowercase hyphenated, first three fields little-endian as displayed by
    /// Windows and Linux `product_uuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios_uuid: Option<String>,
    /// Permanent MAC addresses, lowercase `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac_addresses: Vec<String>,
    /// Disk ids: NVMe EUI-64/NGUID as lowercase hex, other disks' serials trimmed.
    #[serde(default)]
    pub disk_ids: Vec<String>,
    /// SHA-256 of the TPM endorsement-key modulus, lowercase hex (64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_ek_sha256: Option<String>,
}

/// Why an identity value was refused. Messages name the field and are fit for an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A text field is longer than allowed.
    #[error("{field} is longer than {max} characters")]
    TooLong {
        /// API field name.
        field: &'static str,
        /// Maximum length in characters.
        max: usize,
    },
    /// A text field contains a control character.
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// API field name.
        field: &'static str,
    },
    /// Not a MAC address.
    #[error(
        "macAddresses[{index}] ({value:?}) is not a MAC address; expected six hex pairs such as aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabbccddeeff"
    )]
    InvalidMac {
        /// Position in the list.
        index: usize,
        /// The value (shortened).
        value: String,
    },
    /// A disk id that is empty or malformed.
    #[error("diskIds[{index}] {reason}")]
    InvalidDiskId {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Not a UUID.
    #[error(
        "smbiosUuid ({value:?}) is not a UUID; expected e.g. 4c4c4544-0042-3510-8052-b2c04f4e3732"
    )]
    InvalidUuid {
        /// The value (shortened).
        value: String,
    },
    /// Not a SHA-256 hex digest.
    #[error("tpmEkSha256 must be 64 hexadecimal characters (the SHA-256 of the TPM EK modulus)")]
    InvalidTpmDigest,
    /// Too many list items.
    #[error("{field} has more than {max} items")]
    TooMany {
        /// API field name.
        field: &'static str,
        /// Maximum item count.
        max: usize,
    },
}

/// Shortens a user-supplied value for an error message.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

fn normalize_text(field: &'static str, value: &str) -> Result<String, IdentityError> {
    let v = trim_value(value);
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err(IdentityError::TooLong {
            field,
            max: MAX_TEXT_CHARS,
        });
    }
    if v.chars().any(char::is_control) {
        return Err(IdentityError::ControlCharacter { field });
    }
    Ok(v.to_owned())
}

/// Normalises a MAC address given as `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`,
/// `aabbccddeeff` or `aabb.ccdd.eeff` to lowercase colon-separated pairs.
pub fn normalize_mac(value: &str) -> Option<String> {
    let v = trim_value(value);
    let groups: Vec<&str> = if v.contains(':') {
        v.split(':').collect()
    } else if v.contains('-') {
        v.split('-').collect()
    } else if v.contains('.') {
        v.split('.').collect()
    } else {
        vec![v]
    };
    // One separator kind, and groups of equal size: 6×2, 3×4 (Cisco style) or 1×12.
    let size = groups.first().map_or(0, |g| g.len());
    let shape_ok = matches!((groups.len(), size), (6, 2) | (3, 4) | (1, 12));
    if !shape_ok
        || groups
            .iter()
            .any(|g| g.len() != size || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex: String = groups.concat().to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).filter_map(|i| hex.get(i * 2..i * 2 + 2)).collect();
    Some(pairs.join(":"))
}

/// Addresses that no adapter has as its permanent address.
fn is_useless_mac(mac: &str) -> bool {
    mac == "00:00:00:00:00:00" || mac == "ff:ff:ff:ff:ff:ff"
}

/// Normalises a disk id. NVMe EUI-64 (16 hex digits) and NGUID (32) in any of their written
/// forms — the hash's `0025_3859_1b0c_2a73.`, sysfs `eui`'s `00 25 38 59 1b 0c 2a 73`, sysfs
/// `nguid`'s UUID-like form, `eui.0025385…` from `wwid` — become lowercase hex without
/// separators. Any other disk id is its serial, trimmed of whitespace and NULs (case kept).
/// Returns None for an empty id.
pub fn normalize_disk_id(value: &str) -> Option<String> {
    let v = trim_value(value);
    if v.is_empty() {
        return None;
    }
    if let Some(hex) = nvme_hex(v) {
        return Some(hex);
    }
    Some(v.to_owned())
}

/// The lowercase hex of an NVMe EUI-64/NGUID text, or None when it is not one.
fn nvme_hex(v: &str) -> Option<String> {
    let lower = v.to_ascii_lowercase();
    // `eui.` (and `nguid.`) prefixed ids come from sysfs `wwid` and are unambiguous.
    for prefix in ["eui.", "nguid."] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            let rest = rest.trim_end_matches('.');
            if matches!(rest.len(), 16 | 32) && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(rest.to_owned());
            }
            return None;
        }
    }
    // Windows writes NVMe serials with a trailing '.'.
    let body = lower.strip_suffix('.').unwrap_or(&lower);
    // Without a separator a hex string may well be an ordinary serial: leave it alone.
    let sep = [b'_', b' ', b'-', b':']
        .into_iter()
        .find(|s| body.as_bytes().contains(s))?;
    let groups: Vec<&str> = body.split(char::from(sep)).collect();
    if groups.len() < 2
        || groups
            .iter()
            .any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex = groups.concat();
    matches!(hex.len(), 16 | 32).then_some(hex)
}

/// Normalises a TPM EK digest: 64 hex characters, lowercased.
pub fn normalize_tpm_digest(value: &str) -> Option<String> {
    let v = trim_value(value);
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

/// Normalises an SMBIOS UUID to lowercase hyphenated text. The text is taken as displayed
/// (Windows and Linux already show the first three fields little-endian), so no byte swapping
/// happens here. Nil and all-ones UUIDs are not identities: Ok(None).
pub fn normalize_uuid(value: &str) -> Result<Option<String>, IdentityError> {
    let v = trim_value(value);
    if v.is_empty() {
        return Ok(None);
    }
    let u = Uuid::parse_str(v).map_err(|_| IdentityError::InvalidUuid { value: shorten(v) })?;
    if u.is_nil() || u.is_max() {
        return Ok(None);
    }
    Ok(Some(u.hyphenated().to_string()))
}

/// Serial numbers that firmware writes when the OEM did not set one. Compared trimmed and
/// case-insensitively.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "default string",
    "to be filled by o.e.m.",
    "to be filled by oem",
    "system serial number",
    "chassis serial number",
    "base board serial number",
    "serial number",
    "serialnumber",
    "none",
    "null",
    "n/a",
    "na",
    "not specified",
    "not applicable",
    "not available",
    "unknown",
    "invalid",
    "default",
    "empty",
    "oem",
    "o.e.m.",
    "123456789",
    "1234567890",
    "0123456789",
    "12345678",
];

/// True when a serial number is not an identity: empty, a known OEM placeholder
/// (`Default string`, `To be filled by O.E.M.`, `System Serial Number`, `Not Specified`, …),
/// a counting sequence, or only zeros (or only `x`, `f`, `*`, `#`) with separators.
pub fn is_placeholder_serial(serial: &str) -> bool {
    let s = trim_value(serial).to_lowercase();
    if s.is_empty() || PLACEHOLDER_SERIALS.contains(&s.as_str()) {
        return true;
    }
    let significant: Vec<char> = s
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_' | '.' | ':' | '/'))
        .collect();
    match significant.first() {
        None => true,
        Some(&first) => {
            matches!(first, '0' | 'x' | 'f' | '*' | '#' | '?')
                && significant.iter().all(|&c| c == first)
        }
    }
}

/// Kinds of globally claimed (strong) keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimKind {
    /// The (manufacturer, model, serial) tuple.
    Tuple,
    /// The TPM EK digest.
    Tpm,
}

impl ClaimKind {
    /// Stable text stored in the claims table: `tuple` or `tpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Tuple => "tuple",
            ClaimKind::Tpm => "tpm",
        }
    }
}

/// The keys an identity is looked up and matched by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityKeys {
    /// Strong: `manufacturer␟model␟serial`, each trimmed and lowercased; None when the serial
    /// is a placeholder or the manufacturer is unknown.
    pub tuple: Option<String>,
    /// Strong: TPM EK digest, lowercase hex.
    pub tpm: Option<String>,
    /// Medium: SMBIOS UUID, lowercase hyphenated.
    pub smbios_uuid: Option<String>,
    /// Weak: permanent MACs.
    pub macs: Vec<String>,
    /// Weak: disk ids.
    pub disks: Vec<String>,
}

impl IdentityKeys {
    /// True when there is a tuple or a TPM digest: only such identities can be registered
    /// and found by the device call.
    pub fn has_strong_key(&self) -> bool {
        self.tuple.is_some() || self.tpm.is_some()
    }

    /// The strong keys as (kind, value) pairs, the rows of the global claims table.
    pub fn strong_claims(&self) -> Vec<(ClaimKind, String)> {
        self.strong_claim_refs()
            .map(|(kind, key)| (kind, key.to_owned()))
            .collect()
    }

    /// [`Self::strong_claims`], borrowed: the tuple first, then the TPM digest.
    pub fn strong_claim_refs(&self) -> impl Iterator<Item = (ClaimKind, &str)> {
        [
            (ClaimKind::Tuple, self.tuple.as_deref()),
            (ClaimKind::Tpm, self.tpm.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, key)| Some((kind, key?)))
    }

    /// How many weak or medium keys (UUID, MACs, disks) the two share: corroboration only,
    /// never a reason to match.
    pub fn corroboration(&self, other: &IdentityKeys) -> usize {
        let uuid = usize::from(self.smbios_uuid.is_some() && self.smbios_uuid == other.smbios_uuid);
        let macs = self.macs.iter().filter(|m| other.macs.contains(m)).count();
        let disks = self
            .disks
            .iter()
            .filter(|d| other.disks.contains(d))
            .count();
        uuid + macs + disks
    }
}

/// Appends [`tuple_part`] of `s`, without allocating for the usual ASCII value.
fn push_tuple_part(out: &mut String, s: &str) {
    let v = trim_value(s);
    if v.is_ascii() {
        // ASCII control characters are exactly those `char::is_control` names in that range.
        out.extend(v.bytes().map(|b| {
            if b.is_ascii_control() {
                '\u{fffd}'
            } else {
                char::from(b.to_ascii_lowercase())
            }
        }));
    } else {
        out.push_str(&tuple_part(s));
    }
}

/// One part of the tuple key: trimmed, control characters replaced (so the separator cannot
/// occur), lowercased.
fn tuple_part(s: &str) -> String {
    trim_value(s)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect::<String>()
        .to_lowercase()
}

impl Identity {
    /// The identity a decoded hash describes, already normalised (values are kept as the hash
    /// holds them, so there is no need, nor any use, to call [`Identity::normalized`] on it).
    pub fn from_hash(hash: &HardwareHash) -> Identity {
        Self::from_hash_parts(hash.identity_parts())
    }

    /// The part of [`Identity::from_hash`] a lookup needs, from [`decode_for_lookup`]'s values:
    /// manufacturer, model, serial and TPM digest (so the same strong keys), nothing else.
    ///
    /// [`decode_for_lookup`]: crate::hardware_hash::decode_for_lookup
    pub fn from_lookup_values(values: LookupValues) -> Identity {
        Identity {
            manufacturer: values.manufacturer,
            model: values.model.unwrap_or_default(),
            serial_number: values.serial,
            tpm_ek_sha256: values.tpm_ek_sha256,
            ..Identity::default()
        }
    }

    fn from_hash_parts(parts: IdentityParts) -> Identity {
        let IdentityParts {
            manufacturer,
            model,
            serial,
            smbios_uuid,
            mut macs,
            disk_ids: mut disks,
            tpm_ek_sha256,
        } = parts;
        macs.sort();
        macs.dedup();
        disks.sort();
        disks.dedup();
        Identity {
            manufacturer,
            model: model.unwrap_or_default(),
            serial_number: serial,
            // Nil and all-ones UUIDs are placeholders, as in `normalize_uuid`.
            smbios_uuid: smbios_uuid
                .filter(|u| Uuid::parse_str(u).is_ok_and(|u| !u.is_nil() && !u.is_max())),
            mac_addresses: macs,
            disk_ids: disks,
            tpm_ek_sha256,
        }
    }

    /// The normal form of every value (reference/hardware-hash.md, "Normalisation"), or an
    /// error naming the first malformed one. Lists are sorted and deduplicated; all-zero and
    /// broadcast MACs and nil UUIDs are dropped as carrying no identity.
    pub fn normalized(&self) -> Result<Identity, IdentityError> {
        if self.mac_addresses.len() > MAX_LIST_ITEMS {
            return Err(IdentityError::TooMany {
                field: "macAddresses",
                max: MAX_LIST_ITEMS,
            });
        }
        if self.disk_ids.len() > MAX_LIST_ITEMS {
            return Err(IdentityError::TooMany {
                field: "diskIds",
                max: MAX_LIST_ITEMS,
            });
        }
        let mut macs = BTreeSet::new();
        for (index, m) in self.mac_addresses.iter().enumerate() {
            let n = normalize_mac(m).ok_or_else(|| IdentityError::InvalidMac {
                index,
                value: shorten(m),
            })?;
            if !is_useless_mac(&n) {
                macs.insert(n);
            }
        }
        let mut disks = BTreeSet::new();
        for (index, d) in self.disk_ids.iter().enumerate() {
            if trim_value(d).chars().count() > MAX_DISK_ID_CHARS {
                return Err(IdentityError::InvalidDiskId {
                    index,
                    reason: format!("is longer than {MAX_DISK_ID_CHARS} characters"),
                });
            }
            if trim_value(d).chars().any(char::is_control) {
                return Err(IdentityError::InvalidDiskId {
                    index,
                    reason: "contains a control character".to_owned(),
                });
            }
            let n = normalize_disk_id(d).ok_or_else(|| IdentityError::InvalidDiskId {
                index,
                reason: "is empty".to_owned(),
            })?;
            disks.insert(n);
        }
        let tpm = match &self.tpm_ek_sha256 {
            None => None,
            Some(t) if trim_value(t).is_empty() => None,
            Some(t) => Some(normalize_tpm_digest(t).ok_or(IdentityError::InvalidTpmDigest)?),
        };
        let smbios_uuid = match &self.smbios_uuid {
            None => None,
            Some(u) => normalize_uuid(u)?,
        };
        Ok(Identity {
            manufacturer: normalize_text("manufacturer", &self.manufacturer)?,
            model: normalize_text("model", &self.model)?,
            serial_number: normalize_text("serialNumber", &self.serial_number)?,
            smbios_uuid,
            mac_addresses: macs.into_iter().collect(),
            disk_ids: disks.into_iter().collect(),
            tpm_ek_sha256: tpm,
        })
    }

    /// The identity's keys. Values are normalised on the way (best effort: a malformed MAC,
    /// UUID or digest is left out), so this is safe on an identity that was not normalised.
    pub fn keys(&self) -> IdentityKeys {
        let mut macs: Vec<String> = self
            .mac_addresses
            .iter()
            .filter_map(|m| normalize_mac(m))
            .filter(|m| !is_useless_mac(m))
            .collect();
        macs.sort();
        macs.dedup();
        let mut disks: Vec<String> = self
            .disk_ids
            .iter()
            .filter_map(|d| normalize_disk_id(d))
            .collect();
        disks.sort();
        disks.dedup();
        IdentityKeys {
            smbios_uuid: self
                .smbios_uuid
                .as_deref()
                .and_then(|u| normalize_uuid(u).ok().flatten()),
            macs,
            disks,
            ..self.strong_keys()
        }
    }

    /// The strong keys alone (the tuple and the TPM digest; the medium and weak ones left
    /// empty): all that looking up and matching a device needs, without normalising its lists.
    pub fn strong_keys(&self) -> IdentityKeys {
        let tuple = (!is_placeholder_serial(&self.serial_number)).then(|| {
            let mut t = String::with_capacity(
                self.manufacturer.len() + self.model.len() + self.serial_number.len() + 6,
            );
            push_tuple_part(&mut t, &self.manufacturer);
            let manufacturer_known = !t.is_empty();
            t.push(TUPLE_SEPARATOR);
            push_tuple_part(&mut t, &self.model);
            t.push(TUPLE_SEPARATOR);
            push_tuple_part(&mut t, &self.serial_number);
            manufacturer_known.then_some(t)
        });
        IdentityKeys {
            tuple: tuple.flatten(),
            tpm: self.tpm_ek_sha256.as_deref().and_then(normalize_tpm_digest),
            ..IdentityKeys::default()
        }
    }

    /// The strong keys to claim globally: the tuple (unless the serial is a placeholder) and
    /// the TPM digest.
    pub fn strong_claims(&self) -> Vec<(ClaimKind, String)> {
        self.keys().strong_claims()
    }
}

/// The matching rule of the device call, for one candidate registration:
///
/// 1. A registration that holds a TPM digest matches only a request carrying the same digest.
///    A tuple alone never matches it: hashes can be forged from a serial, TPM digests cannot be
///    presented without knowing the machine's EK (design.md, "Threat model").
/// 2. Otherwise the tuple must be present on both sides and equal. A request's TPM digest does
///    not stop it from matching a registration made without one.
///
/// Weak and medium keys never decide a match; see [`IdentityKeys::corroboration`].
pub fn matches(request: &IdentityKeys, registration: &IdentityKeys) -> bool {
    if let Some(registered) = &registration.tpm {
        return request.tpm.as_ref() == Some(registered);
    }
    match (&request.tuple, &registration.tuple) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tuple_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The allocation-free path builds exactly the tuple part the general one does.
        #[test]
        fn pushing_a_tuple_part_matches_making_one(s in "\\PC*|[\\x00-\\x7f]{0,40}|[ \\tA-Z\\x01\\x7fΣσİ]{0,20}") {
            let mut pushed = String::new();
            push_tuple_part(&mut pushed, &s);
            prop_assert_eq!(pushed, tuple_part(&s));
        }
    }
}
