//! Property tests: decoding and reading never panic; build→decode round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use unbox_domain::hardware_hash::{
    HardwareHash, HashError, HashSpec, OsType, build, build_bytes, decode, decode_bytes,
    decode_for_lookup, encode_record, seal,
};
use unbox_domain::identity::{Identity, normalize_disk_id};
use unbox_domain::registration_csv::{CsvError, RegistrationCsvReader, validate_row};
use uuid::Uuid;

/// A trimmed value without NULs or record separators, as real SMBIOS strings are.
fn value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 .,()/_+-]{0,30}[A-Za-z0-9)]|[A-Za-z0-9]"
}

fn spec() -> impl Strategy<Value = HashSpec> {
    (
        (value(), value(), value()),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::collection::vec(any::<[u8; 6]>(), 0..4),
        proptest::collection::vec("[A-Z0-9][A-Z0-9_ -]{0,20}[A-Z0-9]", 0..4),
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..300)),
            proptest::option::of(any::<[u8; 32]>()),
        ),
        (
            prop_oneof![Just(OsType::Windows), Just(OsType::Linux)],
            proptest::option::of((1u16.., any::<u16>(), any::<u16>(), any::<u16>())),
        ),
        (
            proptest::option::of(value()),
            proptest::option::of(value()),
            proptest::option::of("[0-9]{13}"),
        ),
        any::<u32>(),
    )
        .prop_map(
            |(
                (manufacturer, model, serial),
                uuid,
                macs,
                disk_ids,
                (tpm_ek_modulus, tpm_ek_sha256),
                (os_type, os_version),
                (sku, system_family, product_key_id),
                capture,
            )| HashSpec {
                manufacturer,
                model,
                serial,
                smbios_uuid: uuid.map(Uuid::from_bytes),
                macs,
                disk_ids,
                tpm_ek_modulus,
                tpm_ek_sha256,
                os_type,
                os_version,
                sku,
                system_family,
                product_key_id,
                capture,
            },
        )
}

/// `spec`'s hash with `edits` (position, byte) made inside its checksummed part, resealed.
fn resealed(spec: &HashSpec, edits: &[(u16, u8)]) -> Vec<u8> {
    let mut bytes = build_bytes(spec).unwrap();
    let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    for &(at, b) in edits {
        let at = 4 + usize::from(at) % (used - 4);
        bytes[at] = b;
    }
    let d = Sha256::digest(&bytes[..used]);
    bytes[used + 4..used + 36].copy_from_slice(&d);
    bytes
}

/// The records (kind, payload), encoded one after another.
fn encoded(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, payload) in records {
        body.extend(encode_record(*kind, payload).unwrap());
    }
    body
}

/// The lookup decode accepts and refuses exactly what the full decode does, with the same
/// error, and finds the values the full decode holds.
/// The device call's lookup decode gives what the full decode gives (values or error), and
/// the identity built from it has the strong keys the registered hash's identity has.
fn lookup_agrees(text: &str) -> Result<(), TestCaseError> {
    let full = decode(text);
    let lookup = decode_for_lookup(text);
    prop_assert_eq!(
        &lookup,
        &full
            .as_ref()
            .map(HardwareHash::lookup_values)
            .map_err(HashError::clone)
    );
    if let (Ok(values), Ok(hash)) = (lookup, full) {
        prop_assert_eq!(
            Identity::from_lookup_values(values).strong_keys(),
            Identity::from_hash(&hash).strong_keys()
        );
    }
    Ok(())
}

fn dedup_in_order(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_never_panics_on_text(text in any::<String>()) {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_base64_like_text(text in "[A-Za-z0-9+/= \n]{3990,4010}") {
        let _ = decode(&text);
    }

    #[test]
    fn lookup_decode_agrees_on_text(text in any::<String>()) {
        lookup_agrees(&text)?;
    }

    #[test]
    fn lookup_decode_agrees_on_well_formed_hashes(spec in spec()) {
        lookup_agrees(&build(&spec).unwrap())?;
    }

    /// Mutations inside the checksummed part, resealed, reach every record's validation.
    #[test]
    fn lookup_decode_agrees_on_resealed_mutations(
        spec in spec(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..12),
    ) {
        lookup_agrees(&STANDARD.encode(resealed(&spec, &edits)))?;
    }

    #[test]
    fn lookup_decode_agrees_on_random_records(records in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..60)), 0..20)) {
        if let Ok(bytes) = seal(&encoded(&records)) {
            lookup_agrees(&STANDARD.encode(&bytes))?;
        }
    }

    #[test]
    fn decode_never_panics_on_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 3000), used in 0u16..3100) {
        bytes[0] = b'O';
        bytes[1] = b'A';
        bytes[2..4].copy_from_slice(&used.to_le_bytes());
        let _ = decode_bytes(&bytes);
        let _ = decode(&STANDARD.encode(&bytes));
    }

    /// Mutations inside the checksummed part, resealed, exercise the record walk itself.
    #[test]
    fn decode_never_panics_on_resealed_mutations(
        spec in spec(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..12),
    ) {
        let bytes = resealed(&spec, &edits);
        if let Ok(h) = decode_bytes(&bytes) {
            // Whatever decodes is self-consistent.
            let again = decode(&h.normalized_base64()).unwrap();
            prop_assert_eq!(again, h.clone());
            let _ = Identity::from_hash(&h).normalized();
        }
    }

    #[test]
    fn random_records_never_panic(records in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..60)), 0..20)) {
        if let Ok(bytes) = seal(&encoded(&records)) {
            let _ = decode_bytes(&bytes);
        }
    }

    /// The text path (which keeps the decoded buffer as the canonical bytes) and the byte path
    /// (which copies) decode the same hash, and both zero what lies past the checksum.
    #[test]
    fn text_and_byte_paths_agree_past_the_checksum(spec in spec(), tail in any::<u8>()) {
        let mut bytes = build_bytes(&spec).unwrap();
        let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        for b in &mut bytes[used + 36..] {
            *b = tail;
        }
        let from_bytes = decode_bytes(&bytes).unwrap();
        let from_text = decode(&STANDARD.encode(&bytes)).unwrap();
        prop_assert_eq!(&from_text, &from_bytes);
        let canonical = STANDARD.decode(from_text.normalized_base64()).unwrap();
        prop_assert!(canonical[used + 36..].iter().all(|b| *b == 0));
        prop_assert_eq!(&canonical[..used + 36], &bytes[..used + 36]);
    }

    #[test]
    fn build_decode_round_trip(spec in spec()) {
        let text = build(&spec).unwrap();
        prop_assert_eq!(text.len(), 4000);
        let h = decode(&text).unwrap();
        prop_assert_eq!(h.normalized_base64(), text);
        prop_assert_eq!(h.serial(), spec.serial.as_str());
        prop_assert_eq!(h.manufacturer(), spec.manufacturer.as_str());
        prop_assert_eq!(h.model(), Some(spec.model.as_str()));
        prop_assert_eq!(h.os_type(), spec.os_type);
        let expected_uuid = spec.smbios_uuid.map(|u| u.hyphenated().to_string());
        prop_assert_eq!(h.smbios_uuid(), expected_uuid.as_deref());
        let macs = dedup_in_order(spec.macs.iter()
            .filter(|m| **m != [0; 6] && **m != [0xff; 6])
            .map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")));
        prop_assert_eq!(h.macs(), macs.as_slice());
        prop_assert_eq!(h.network_adapters().len(), spec.macs.len());
        let disks = dedup_in_order(spec.disk_ids.iter().filter_map(|d| normalize_disk_id(d)));
        prop_assert_eq!(h.disk_ids(), disks.as_slice());
        let tpm = match (&spec.tpm_ek_modulus, spec.tpm_ek_sha256) {
            (Some(m), _) => Some(hex::encode(Sha256::digest(m))),
            (None, d) => d.map(hex::encode),
        };
        prop_assert_eq!(h.tpm_ek_sha256(), tpm.as_deref());
        let version = match (spec.os_version, spec.os_type) {
            (Some((a, b, c, d)), _) => Some(format!("{a}.{b}.{c}.{d}")),
            (None, OsType::Windows) => Some("10.0.26100.2314".to_owned()),
            (None, OsType::Linux) => None,
        };
        prop_assert_eq!(h.os_version(), version.as_deref());
        prop_assert_eq!(h.sku(), spec.sku.as_deref());
        prop_assert_eq!(h.system_family(), spec.system_family.as_deref());
        prop_assert_eq!(h.product_key_id(), spec.product_key_id.as_deref());
        // The identity of a hash is already normal.
        let id = Identity::from_hash(&h);
        prop_assert_eq!(id.normalized().unwrap(), id);
    }

    #[test]
    fn csv_reader_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        check_reader(&bytes)?;
    }

    #[test]
    fn csv_reader_never_panics_on_csv_like_input(parts in proptest::collection::vec(csv_piece(), 0..60), enc in 0u8..4) {
        let text: String = parts.concat();
        let bytes = match enc {
            0 => text.into_bytes(),
            1 => {
                let mut v = vec![0xFF, 0xFE];
                for u in text.encode_utf16() { v.extend(u.to_le_bytes()); }
                v
            }
            2 => {
                let mut v = vec![0xFE, 0xFF];
                for u in text.encode_utf16() { v.extend(u.to_be_bytes()); }
                v
            }
            _ => encoding_rs::WINDOWS_1252.encode(&text).0.into_owned(),
        };
        check_reader(&bytes)?;
    }
}

fn csv_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Device Serial Number,Windows Product ID,Hardware Hash".to_owned()),
        Just(
            "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User"
                .to_owned()
        ),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\r\n".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\0".to_owned()),
        Just("é".to_owned()),
        Just("T0FGAgEAHAAAAAoACgn0ZQAACgAKCfRlESIzRFUC".to_owned()),
        "[A-Za-z0-9 ]{0,12}",
    ]
}

/// Reads everything; row lines must strictly increase and stay within the lines read.
fn check_reader(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut reader = RegistrationCsvReader::new(bytes);
    let mut last = 0u64;
    let mut items = 0u64;
    let mut fatal = false;
    for item in reader.by_ref() {
        prop_assert!(!fatal, "an item after a fatal error");
        let line = match &item {
            Ok(row) => {
                let _ = validate_row(row);
                row.line
            }
            Err(CsvError::Row { line, .. }) => *line,
            Err(_) => {
                fatal = true;
                continue;
            }
        };
        items += 1;
        prop_assert!(line > last, "line {} after {}", line, last);
        last = line;
    }
    prop_assert_eq!(reader.rows_read(), items);
    prop_assert!(last <= reader.lines_read());
    Ok(())
}
