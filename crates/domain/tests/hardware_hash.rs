//! Hardware hash decoding, validation and building.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use unbox_domain::hardware_hash::{
    self, BuildError, HASH_BASE64_CHARS, HASH_BYTES, HashError, HashSpec, MAX_USED_LENGTH, OsType,
    build, build_bytes, decode, decode_bytes, encode_record, seal,
};
use unbox_domain::registration_csv::RegistrationCsvReader;
use uuid::Uuid;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn text(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Records 14, 16, 17 with the given values.
fn identity_records(serial: &str, manufacturer: &str, model: &str) -> Vec<u8> {
    let mut r = encode_record(14, &text(serial)).unwrap();
    r.extend(encode_record(16, &text(manufacturer)).unwrap());
    r.extend(encode_record(17, &text(model)).unwrap());
    r
}

fn sealed(records: &[u8]) -> Vec<u8> {
    seal(records).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Rewrites the checksum after a test changed bytes in [0, U).
fn reseal(bytes: &mut [u8]) {
    let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    if used + 36 <= bytes.len() {
        let d = Sha256::digest(&bytes[..used]);
        bytes[used + 4..used + 36].copy_from_slice(&d);
    }
}

fn set_used(bytes: &mut [u8], used: u16) {
    bytes[2..4].copy_from_slice(&used.to_le_bytes());
}

fn windows_spec() -> HashSpec {
    HashSpec {
        manufacturer: "Contoso Ltd.".into(),
        model: "Model X 13".into(),
        serial: "SYN-EXACT-001".into(),
        smbios_uuid: Some(Uuid::parse_str("4c4c4544-0042-3510-8052-b2c04f4e3732").unwrap()),
        macs: vec![
            [0xAA, 0xBB, 0xCC, 0x00, 0x11, 0x22],
            [0x02, 0x00, 0x5E, 0x10, 0x00, 0x01],
        ],
        ..HashSpec::default()
    }
}

#[test]
fn build_matches_the_reference_encoder_byte_for_byte() {
    let expected = String::from_utf8(fixture("hwhash-windows-plain.txt")).unwrap();
    assert_eq!(build(&windows_spec()).unwrap(), expected.trim());
}

#[test]
fn decodes_a_reference_hash_with_tpm_and_disk() {
    let text = String::from_utf8(fixture("hwhash-windows-tpm-disk.txt")).unwrap();
    let h = decode(&text).unwrap();
    assert_eq!(h.serial(), "SYN-TPM-002");
    assert_eq!(h.manufacturer(), "LENOVO");
    assert_eq!(h.model(), Some("21R3001BUK"));
    assert_eq!(
        h.smbios_uuid(),
        Some("ff437779-e1e9-528b-b1c1-d513165e34a6")
    );
    assert_eq!(h.macs(), ["00:1a:2b:3c:4d:5e"]);
    assert_eq!(h.network_adapters()[0].physical_medium, 14);
    assert_eq!(h.network_adapters()[0].bus.as_deref(), Some("PCI"));
    assert_eq!(h.disk_ids(), ["002538591b0c2a73"]);
    assert_eq!(
        h.tpm_ek_sha256(),
        Some("f279e51113da465e820a482dc8571cbf1eefc97aa02a747ba3457c3745cd2944")
    );
    assert_eq!(h.os_type(), OsType::Windows);
    assert_eq!(h.os_version(), Some("10.0.26100.2314"));
    assert_eq!(h.sku(), None);
    assert_eq!(h.normalized_base64(), text.trim());
    assert_eq!(h.normalized_base64().len(), HASH_BASE64_CHARS);
}

#[test]
fn every_row_of_the_fixture_files_decodes_to_its_serial() {
    for (file, rows) in [
        ("autopilot-utf16-3rows.csv", 3),
        ("autopilot-utf8-grouptag-5rows.csv", 5),
    ] {
        let data = fixture(file);
        let reader = RegistrationCsvReader::new(data.as_slice());
        let mut n = 0;
        for row in reader {
            let row = row.unwrap();
            let h = decode(row.hardware_hash.as_deref().unwrap()).unwrap();
            assert_eq!(Some(h.serial()), row.serial_number.as_deref(), "{file}");
            assert!(h.tpm_ek_sha256().is_some());
            assert!(h.smbios_uuid().is_some());
            assert_eq!(h.macs().len(), 1);
            assert_eq!(h.disk_ids().len(), 1);
            assert_eq!(h.disk_ids()[0].len(), 16);
            n += 1;
        }
        assert_eq!(n, rows, "{file}");
    }
    // An independent check of the UTF-8 file without the CSV reader.
    let data = String::from_utf8(fixture("autopilot-utf8-grouptag-5rows.csv")).unwrap();
    for line in data.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(decode(fields[2]).unwrap().serial(), fields[0]);
    }
}

#[test]
fn captures_differ_in_text_but_not_in_values() {
    let spec = windows_spec();
    let other = HashSpec {
        capture: 1,
        ..spec.clone()
    };
    let (a, b) = (build(&spec).unwrap(), build(&other).unwrap());
    assert_ne!(a, b);
    let (ha, hb) = (decode(&a).unwrap(), decode(&b).unwrap());
    assert_eq!(
        serde_json::to_value(&ha).unwrap(),
        serde_json::to_value(&hb).unwrap()
    );
}

#[test]
fn whitespace_anywhere_is_removed() {
    let text = build(&windows_spec()).unwrap();
    let mut messy = String::from("  \r\n");
    for (i, c) in text.chars().enumerate() {
        if i % 76 == 0 {
            messy.push_str("\r\n");
        }
        if i % 1000 == 7 {
            messy.push_str(" \t");
        }
        messy.push(c);
    }
    messy.push_str("\n\u{a0} ");
    let h = decode(&messy).unwrap();
    assert_eq!(h.normalized_base64(), text);
}

#[test]
fn padding_is_restored_or_tolerated() {
    let text = build(&windows_spec()).unwrap();
    // A valid hash with stray padding still decodes.
    assert!(decode(&format!("{text}==")).is_ok());
    // 2999 bytes need one '='; without it the length, not the base64, is the complaint.
    let short = b64(&sealed(&identity_records("S", "M", "P"))[..2999]);
    assert!(short.ends_with('='));
    let unpadded = short.trim_end_matches('=');
    assert_eq!(
        decode(unpadded).unwrap_err(),
        HashError::WrongLength { bytes: 2999 }
    );
    assert_eq!(
        decode(&format!("{text}===")).unwrap_err(),
        HashError::InvalidBase64 {
            reason: "3 '=' padding characters at the end (at most 2 are valid)".into()
        }
    );
}

#[test]
fn empty_and_blank_text_is_refused() {
    assert_eq!(decode("").unwrap_err(), HashError::Empty);
    assert_eq!(decode(" \r\n\t ").unwrap_err(), HashError::Empty);
}

#[test]
fn non_base64_is_refused() {
    let mut text = build(&windows_spec()).unwrap();
    text.replace_range(10..11, "!");
    match decode(&text).unwrap_err() {
        HashError::InvalidBase64 { reason } => assert!(reason.contains("'!' at position 11")),
        e => panic!("unexpected {e:?}"),
    }
    let mut url_safe = build(&windows_spec()).unwrap();
    url_safe.replace_range(0..1, "_");
    assert!(matches!(
        decode(&url_safe).unwrap_err(),
        HashError::InvalidBase64 { .. }
    ));
    assert!(matches!(
        decode("é").unwrap_err(),
        HashError::InvalidBase64 { .. }
    ));
}

#[test]
fn wrong_lengths_are_refused() {
    let bytes = sealed(&identity_records("S", "M", "P"));
    assert_eq!(
        decode(&b64(&bytes[..2997])).unwrap_err(),
        HashError::WrongLength { bytes: 2997 }
    );
    let mut long = bytes.clone();
    long.extend([0, 0, 0]);
    assert_eq!(
        decode(&b64(&long)).unwrap_err(),
        HashError::WrongLength { bytes: 3003 }
    );
    // A huge paste is refused without decoding it.
    let huge = "A".repeat(10_000_000);
    assert!(matches!(
        decode(&huge).unwrap_err(),
        HashError::WrongLength { .. }
    ));
    assert_eq!(
        decode_bytes(&bytes[..100]).unwrap_err(),
        HashError::WrongLength { bytes: 100 }
    );
}

#[test]
fn bad_magic_is_refused() {
    let mut bytes = sealed(&identity_records("S", "M", "P"));
    bytes[1] = b'B';
    assert_eq!(decode(&b64(&bytes)).unwrap_err(), HashError::BadMagic);
}

#[test]
fn used_length_out_of_range_is_refused() {
    let mut bytes = sealed(&identity_records("S", "M", "P"));
    set_used(&mut bytes, 3);
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::UsedLengthOutOfRange { used: 3 }
    );
    set_used(&mut bytes, (MAX_USED_LENGTH + 1) as u16);
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::UsedLengthOutOfRange {
            used: MAX_USED_LENGTH + 1
        }
    );
    set_used(&mut bytes, u16::MAX);
    assert!(matches!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::UsedLengthOutOfRange { .. }
    ));
}

#[test]
fn a_record_shorter_than_its_header_is_refused() {
    let mut records = identity_records("S", "M", "P");
    records.extend([99, 0, 2, 0]);
    assert_eq!(
        decode_bytes(&sealed(&records)).unwrap_err(),
        HashError::RecordTooShort {
            kind: 99,
            offset: 4 + records.len() - 4,
            length: 2
        }
    );
}

#[test]
fn a_record_overrunning_the_used_length_is_refused() {
    let records = identity_records("S", "M", "P");
    let mut bytes = sealed(&records);
    // Make the first record (14) claim more than there is.
    bytes[6..8].copy_from_slice(&2000u16.to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::RecordOverrun {
            kind: 14,
            offset: 4,
            length: 2000,
            used: 4 + records.len()
        }
    );
}

#[test]
fn records_not_landing_on_the_used_length_are_refused() {
    let mut records = identity_records("S", "M", "P");
    records.extend([0, 0]);
    assert_eq!(
        decode_bytes(&sealed(&records)).unwrap_err(),
        HashError::RecordsMisaligned {
            offset: 4 + records.len() - 2,
            left: 2,
            used: 4 + records.len()
        }
    );
}

#[test]
fn a_bad_trailer_is_refused() {
    let records = identity_records("S", "M", "P");
    let mut bytes = sealed(&records);
    let used = 4 + records.len();
    bytes[used + 2] = b'#';
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::BadTrailer { used }
    );
}

#[test]
fn a_bad_checksum_is_refused() {
    let mut bytes = sealed(&identity_records("SERIAL1", "M", "P"));
    // Change the serial without updating the checksum: the forgery a careless editor makes.
    bytes[8] = b'X';
    assert_eq!(
        decode_bytes(&bytes).unwrap_err(),
        HashError::ChecksumMismatch
    );
    reseal(&mut bytes);
    assert_eq!(decode_bytes(&bytes).unwrap().serial(), "XERIAL1");
}

#[test]
fn serial_and_manufacturer_are_required_and_non_empty() {
    let mut only_model = encode_record(17, &text("P")).unwrap();
    only_model.extend(encode_record(16, &text("M")).unwrap());
    assert_eq!(
        decode_bytes(&sealed(&only_model)).unwrap_err(),
        HashError::MissingField {
            field: "serial number",
            kind: 14
        }
    );
    let no_maker = encode_record(14, &text("S")).unwrap();
    assert_eq!(
        decode_bytes(&sealed(&no_maker)).unwrap_err(),
        HashError::MissingField {
            field: "manufacturer",
            kind: 16
        }
    );
    assert_eq!(
        decode_bytes(&sealed(&identity_records(" \t\0 ", "M", "P"))).unwrap_err(),
        HashError::EmptyField {
            field: "serial number",
            kind: 14
        }
    );
    assert_eq!(
        decode_bytes(&sealed(&identity_records("S", "\0\0\0", "P"))).unwrap_err(),
        HashError::EmptyField {
            field: "manufacturer",
            kind: 16
        }
    );
    let empty_record = [
        encode_record(14, &[]).unwrap(),
        identity_records("", "M", "P"),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&empty_record)).unwrap_err(),
        HashError::EmptyField { kind: 14, .. }
    ));
}

#[test]
fn text_values_are_trimmed_and_cut_at_nul() {
    let h = decode_bytes(&sealed(&identity_records(
        "  ABC123 \0junk",
        "\0 Dell Inc.  ",
        "Latitude\0",
    )))
    .unwrap();
    assert_eq!(h.serial(), "ABC123");
    assert_eq!(h.manufacturer(), "Dell Inc.");
    assert_eq!(h.model(), Some("Latitude"));
    let no_model = [
        encode_record(14, &text("S")).unwrap(),
        encode_record(16, &text("M")).unwrap(),
    ]
    .concat();
    assert_eq!(decode_bytes(&sealed(&no_model)).unwrap().model(), None);
}

#[test]
fn unknown_records_are_skipped() {
    let mut records = encode_record(27, &[1, 2, 3]).unwrap();
    records.extend(encode_record(200, &[]).unwrap());
    records.extend(identity_records("S", "M", "P"));
    records.extend(encode_record(37, &[0; 40]).unwrap());
    let h = decode_bytes(&sealed(&records)).unwrap();
    assert_eq!(h.serial(), "S");
}

#[test]
fn bytes_after_the_checksum_are_tolerated_and_zeroed() {
    let spec = windows_spec();
    let clean = build_bytes(&spec).unwrap();
    let mut dirty = clean.clone();
    dirty[HASH_BYTES - 1] = 0x55;
    let h = decode_bytes(&dirty).unwrap();
    assert_eq!(h.as_bytes(), clean.as_slice());
    assert_eq!(h.normalized_base64(), b64(&clean));
}

#[test]
fn malformed_identity_records_are_refused() {
    let bad_uuid = [
        identity_records("S", "M", "P"),
        encode_record(12, &[1; 15]).unwrap(),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&bad_uuid)).unwrap_err(),
        HashError::MalformedRecord { kind: 12, .. }
    ));
    let two_uuids = [
        identity_records("S", "M", "P"),
        encode_record(12, &[1; 16]).unwrap(),
        encode_record(12, &[2; 16]).unwrap(),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&two_uuids)).unwrap_err(),
        HashError::MalformedRecord { kind: 12, .. }
    ));
    let short_tpm = [
        identity_records("S", "M", "P"),
        encode_record(11, &[0, 0, 0, 0, 1, 0, 32, 0, 0, 0, 1, 2]).unwrap(),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&short_tpm)).unwrap_err(),
        HashError::MalformedRecord { kind: 11, .. }
    ));
    let mut odd_len = vec![0, 0, 0, 0, 1, 0, 20, 0, 0, 0];
    odd_len.extend([7; 20]);
    let odd = [
        identity_records("S", "M", "P"),
        encode_record(11, &odd_len).unwrap(),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&odd)).unwrap_err(),
        HashError::MalformedRecord { kind: 11, .. }
    ));
    let empty_ek = [
        identity_records("S", "M", "P"),
        encode_record(25, &[]).unwrap(),
    ]
    .concat();
    assert!(matches!(
        decode_bytes(&sealed(&empty_ek)).unwrap_err(),
        HashError::MalformedRecord { kind: 25, .. }
    ));
}

fn offline_id(kind: u8, digest: &[u8; 32]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0, kind, 0, 32, 0, 0, 0];
    p.extend_from_slice(digest);
    encode_record(11, &p).unwrap()
}

#[test]
fn tpm_digest_and_modulus() {
    let modulus = vec![0xC3; 256];
    let digest: [u8; 32] = Sha256::digest(&modulus).into();
    let hex_digest = hex::encode(digest);
    // Record 25 alone: the digest is derived.
    let only_ek = [
        identity_records("S", "M", "P"),
        encode_record(25, &modulus).unwrap(),
    ]
    .concat();
    assert_eq!(
        decode_bytes(&sealed(&only_ek)).unwrap().tpm_ek_sha256(),
        Some(hex_digest.as_str())
    );
    // Both, agreeing.
    let both = [only_ek.clone(), offline_id(1, &digest)].concat();
    assert_eq!(
        decode_bytes(&sealed(&both)).unwrap().tpm_ek_sha256(),
        Some(hex_digest.as_str())
    );
    // Both, disagreeing: refused.
    let mismatch = [only_ek, offline_id(1, &[9; 32])].concat();
    assert_eq!(
        decode_bytes(&sealed(&mismatch)).unwrap_err(),
        HashError::TpmDigestMismatch
    );
    // Two different record-11 digests: refused.
    let conflicting = [
        identity_records("S", "M", "P"),
        offline_id(1, &[1; 32]),
        offline_id(1, &[2; 32]),
    ]
    .concat();
    assert_eq!(
        decode_bytes(&sealed(&conflicting)).unwrap_err(),
        HashError::ConflictingTpmDigests
    );
    // An offline id of another type is not a TPM.
    let other = [identity_records("S", "M", "P"), offline_id(2, &[1; 32])].concat();
    assert_eq!(decode_bytes(&sealed(&other)).unwrap().tpm_ek_sha256(), None);
}

#[test]
fn disk_and_network_records() {
    let mut adapter = 9u32.to_le_bytes().to_vec();
    adapter.extend([0x00, 0x15, 0x5D, 0xAB, 0xCD, 0xEF]);
    adapter.extend(8u32.to_le_bytes());
    for u in "BTH\0".encode_utf16() {
        adapter.extend(u.to_le_bytes());
    }
    let mut zero_adapter = 14u32.to_le_bytes().to_vec();
    zero_adapter.extend([0; 6]);
    let records = [
        identity_records("S", "M", "P"),
        encode_record(8, &adapter).unwrap(),
        encode_record(8, &adapter).unwrap(),
        encode_record(8, &zero_adapter).unwrap(),
        encode_record(8, &[1, 2, 3]).unwrap(),
        encode_record(7, b"0025_3859_1B0C_2A73.|Samsung SSD 980|").unwrap(),
        encode_record(28, b"0025_3859_1B0C_2A73.|Samsung SSD 980|\0").unwrap(),
        encode_record(7, b"  WD-WX12A3456789.|WDC WD10EZEX|").unwrap(),
        encode_record(7, b"|nothing|").unwrap(),
    ]
    .concat();
    let h = decode_bytes(&sealed(&records)).unwrap();
    assert_eq!(h.macs(), ["00:15:5d:ab:cd:ef"]);
    assert_eq!(h.network_adapters().len(), 3);
    assert_eq!(h.network_adapters()[0].physical_medium, 9);
    assert_eq!(h.network_adapters()[0].bus.as_deref(), Some("BTH"));
    assert_eq!(h.network_adapters()[2].bus, None);
    assert_eq!(h.disk_ids(), ["002538591b0c2a73", "WD-WX12A3456789"]);
}

#[test]
fn version_record() {
    let spec = HashSpec {
        os_version: Some((10, 0, 22631, 4460)),
        ..windows_spec()
    };
    let h = decode(&build(&spec).unwrap()).unwrap();
    assert_eq!(h.os_version(), Some("10.0.22631.4460"));
    assert_eq!(h.os_type(), OsType::Windows);
    // A short record 1 leaves the defaults.
    let short = [
        encode_record(1, &[1, 2, 3]).unwrap(),
        identity_records("S", "M", "P"),
    ]
    .concat();
    let h = decode_bytes(&sealed(&short)).unwrap();
    assert_eq!((h.os_type(), h.os_version()), (OsType::Windows, None));
}

#[test]
fn linux_hash_round_trip() {
    let modulus: Vec<u8> = (0..=255u8).collect();
    let spec = HashSpec {
        manufacturer: "Framework".into(),
        model: "Laptop 13 (AMD Ryzen 7040Series)".into(),
        serial: "FRANDGCP1234567890".into(),
        smbios_uuid: Some(Uuid::parse_str("0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7").unwrap()),
        macs: vec![[0x9c, 0x6b, 0x00, 0x12, 0x34, 0x56]],
        disk_ids: vec![
            "eui.e8238fa6bf530001001b448b49f6fb64".into(),
            "S5P2NG0R123456".into(),
        ],
        tpm_ek_modulus: Some(modulus.clone()),
        os_type: OsType::Linux,
        sku: Some("FRANDGCP06".into()),
        system_family: Some("Laptop".into()),
        product_key_id: Some("3301234567890".into()),
        ..HashSpec::default()
    };
    let text = build(&spec).unwrap();
    let h = decode(&text).unwrap();
    assert_eq!(h.os_type(), OsType::Linux);
    assert_eq!(h.os_version(), None);
    assert_eq!(h.serial(), spec.serial);
    assert_eq!(h.manufacturer(), spec.manufacturer);
    assert_eq!(h.model(), Some(spec.model.as_str()));
    assert_eq!(
        h.smbios_uuid(),
        Some("0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7")
    );
    assert_eq!(h.macs(), ["9c:6b:00:12:34:56"]);
    assert_eq!(
        h.disk_ids(),
        ["e8238fa6bf530001001b448b49f6fb64", "S5P2NG0R123456"]
    );
    assert_eq!(
        h.tpm_ek_sha256(),
        Some(hex::encode(Sha256::digest(&modulus)).as_str())
    );
    assert_eq!(h.sku(), Some("FRANDGCP06"));
    assert_eq!(h.system_family(), Some("Laptop"));
    assert_eq!(h.product_key_id(), Some("3301234567890"));
    // Record order of an Unbox-made hash: 1, 14, 16, 17, (18, 19, 24), 12, 8, 7, 7, 25, 11.
    let bytes = h.as_bytes();
    let used = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    let mut kinds = Vec::new();
    let mut at = 4;
    while at < used {
        kinds.push(bytes[at]);
        at += usize::from(u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]));
    }
    assert_eq!(kinds, [1, 14, 16, 17, 18, 19, 24, 12, 8, 7, 7, 25, 11]);
    assert_eq!(bytes[4 + 4 + 21], 0x4C);
}

#[test]
fn digest_only_tpm_and_linux_version() {
    let spec = HashSpec {
        manufacturer: "QEMU".into(),
        model: "Standard PC (Q35 + ICH9, 2009)".into(),
        serial: "VM-0001".into(),
        tpm_ek_sha256: Some([0xAB; 32]),
        os_type: OsType::Linux,
        os_version: Some((6, 12, 48, 1)),
        ..HashSpec::default()
    };
    let h = decode(&build(&spec).unwrap()).unwrap();
    assert_eq!(h.tpm_ek_sha256(), Some("ab".repeat(32).as_str()));
    assert_eq!(h.os_version(), Some("6.12.48.1"));
    assert_eq!(h.smbios_uuid(), None);
}

#[test]
fn build_refuses_what_does_not_fit() {
    let spec = HashSpec {
        serial: "S".repeat(3000),
        manufacturer: "M".into(),
        ..HashSpec::default()
    };
    assert!(matches!(build(&spec), Err(BuildError::TooLarge { .. })));
    let spec = HashSpec {
        serial: "S".repeat(70_000),
        manufacturer: "M".into(),
        ..HashSpec::default()
    };
    assert!(matches!(
        build(&spec),
        Err(BuildError::RecordTooLong { kind: 14, .. })
    ));
}

#[test]
fn errors_have_clear_messages_and_code_802() {
    assert_eq!(HashError::CODE, 802);
    assert_eq!(HashError::NAME, "InvalidZtdHardwareHash");
    let samples = [
        HashError::Empty,
        HashError::WrongLength { bytes: 12 },
        HashError::BadMagic,
        HashError::UsedLengthOutOfRange { used: 2 },
        HashError::ChecksumMismatch,
        HashError::MissingField {
            field: "serial number",
            kind: 14,
        },
    ];
    for e in samples {
        let m = e.to_string();
        assert!(m.starts_with("the "), "{m}");
        assert!(m.len() > 20, "{m}");
    }
    assert_eq!(
        HashError::WrongLength { bytes: 12 }.to_string(),
        "the hardware hash decodes to 12 bytes; a Windows 4K hardware hash is exactly 3000 bytes (4000 base64 characters)"
    );
}

#[test]
fn serializes_camel_case_without_the_bytes() {
    let text = String::from_utf8(fixture("hwhash-windows-tpm-disk.txt")).unwrap();
    let v = serde_json::to_value(decode(&text).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "manufacturer",
        "model",
        "serial",
        "smbiosUuid",
        "macs",
        "networkAdapters",
        "diskIds",
        "tpmEkSha256",
        "osType",
        "osVersion",
        "sku",
        "systemFamily",
        "productKeyId",
    ] {
        assert!(keys.contains(&k), "{k} missing in {keys:?}");
    }
    assert!(!keys.contains(&"bytes"));
    assert_eq!(v["osType"], "Windows");
    assert_eq!(v["networkAdapters"][0]["physicalMedium"], 14);
    assert_eq!(hardware_hash::OsType::Linux.as_str(), "Linux");
}
