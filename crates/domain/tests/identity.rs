//! Identity normalisation, keys and the matching rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use unbox_domain::hardware_hash::{HashSpec, OsType, build, decode};
use unbox_domain::identity::{
    ClaimKind, Identity, IdentityError, IdentityKeys, is_placeholder_serial, matches,
    normalize_disk_id, normalize_mac, normalize_tpm_digest, normalize_uuid,
};
use uuid::Uuid;

const DIGEST: &str = "f279e51113da465e820a482dc8571cbf1eefc97aa02a747ba3457c3745cd2944";

fn identity(manufacturer: &str, model: &str, serial: &str) -> Identity {
    Identity {
        manufacturer: manufacturer.into(),
        model: model.into(),
        serial_number: serial.into(),
        ..Identity::default()
    }
}

#[test]
fn text_fields_are_trimmed_of_whitespace_and_nuls() {
    let n = identity(" Dell Inc.\0", "\tLatitude 7440 ", "\0 ABC123\n")
        .normalized()
        .unwrap();
    assert_eq!(
        (
            n.manufacturer.as_str(),
            n.model.as_str(),
            n.serial_number.as_str()
        ),
        ("Dell Inc.", "Latitude 7440", "ABC123")
    );
    assert_eq!(
        identity("M", "P", "A\u{7}B").normalized().unwrap_err(),
        IdentityError::ControlCharacter {
            field: "serialNumber"
        }
    );
    assert_eq!(
        identity(&"m".repeat(300), "P", "S")
            .normalized()
            .unwrap_err(),
        IdentityError::TooLong {
            field: "manufacturer",
            max: 256
        }
    );
}

#[test]
fn mac_forms() {
    for form in [
        "AA:BB:CC:DD:EE:0F",
        "aa-bb-cc-dd-ee-0f",
        "AABBCCDDEE0F",
        "aabb.ccdd.ee0f",
        " aa:bb:cc:dd:ee:0f\0",
    ] {
        assert_eq!(
            normalize_mac(form).as_deref(),
            Some("aa:bb:cc:dd:ee:0f"),
            "{form}"
        );
    }
    for bad in [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aabbccddeeg0",
        "a:bb:cc:dd:ee:fff",
        "aa:bb-cc:dd:ee:ff",
        "aabbccddeeff00",
    ] {
        assert_eq!(normalize_mac(bad), None, "{bad}");
    }
    let mut id = identity("M", "P", "S");
    id.mac_addresses = vec![
        "AA-BB-CC-DD-EE-FF".into(),
        "aa:bb:cc:dd:ee:ff".into(),
        "00:00:00:00:00:00".into(),
        "11:22:33:44:55:66".into(),
    ];
    assert_eq!(
        id.normalized().unwrap().mac_addresses,
        ["11:22:33:44:55:66", "aa:bb:cc:dd:ee:ff"]
    );
    id.mac_addresses.push("nonsense".into());
    let e = id.normalized().unwrap_err();
    assert_eq!(
        e,
        IdentityError::InvalidMac {
            index: 4,
            value: "nonsense".into()
        }
    );
    assert!(e.to_string().starts_with("macAddresses[4]"));
}

#[test]
fn disk_id_forms() {
    let eui = "002538591b0c2a73";
    for form in [
        "0025_3859_1B0C_2A73.",
        "0025_3859_1B0C_2A73",
        "00 25 38 59 1b 0c 2a 73",
        "eui.002538591B0C2A73",
        "EUI.002538591b0c2a73",
    ] {
        assert_eq!(normalize_disk_id(form).as_deref(), Some(eui), "{form}");
    }
    let nguid = "e8238fa6bf530001001b448b49f6fb64";
    for form in [
        "E823_8FA6_BF53_0001_001B_448B_49F6_FB64.",
        "e8238fa6-bf53-0001-001b-448b49f6fb64",
        "e8 23 8f a6 bf 53 00 01 00 1b 44 8b 49 f6 fb 64",
        "eui.e8238fa6bf530001001b448b49f6fb64",
        "nguid.e8238fa6bf530001001b448b49f6fb64",
    ] {
        assert_eq!(normalize_disk_id(form).as_deref(), Some(nguid), "{form}");
    }
    // Other disks: the serial, trimmed, case kept.
    assert_eq!(
        normalize_disk_id("  WD-WX12A3456789 ").as_deref(),
        Some("WD-WX12A3456789")
    );
    assert_eq!(
        normalize_disk_id("S5P2NG0R123456").as_deref(),
        Some("S5P2NG0R123456")
    );
    // Plain hex without separators may be an ordinary serial: left alone.
    assert_eq!(
        normalize_disk_id("0025385A91B01234").as_deref(),
        Some("0025385A91B01234")
    );
    // Groups that do not add up to 16 or 32 digits are not NVMe ids.
    assert_eq!(normalize_disk_id("0025_3859").as_deref(), Some("0025_3859"));
    assert_eq!(normalize_disk_id(" \0 "), None);

    let mut id = identity("M", "P", "S");
    id.disk_ids = vec![
        "0025_3859_1B0C_2A73.".into(),
        "00 25 38 59 1b 0c 2a 73".into(),
    ];
    assert_eq!(id.normalized().unwrap().disk_ids, [eui]);
    id.disk_ids.push("A\0B".into());
    assert_eq!(
        id.normalized().unwrap_err(),
        IdentityError::InvalidDiskId {
            index: 2,
            reason: "contains a control character".into()
        }
    );
    id.disk_ids.pop();
    id.disk_ids.push("  ".into());
    assert_eq!(
        id.normalized().unwrap_err(),
        IdentityError::InvalidDiskId {
            index: 2,
            reason: "is empty".into()
        }
    );
}

#[test]
fn tpm_digest_forms() {
    assert_eq!(
        normalize_tpm_digest(&DIGEST.to_uppercase()).as_deref(),
        Some(DIGEST)
    );
    assert_eq!(normalize_tpm_digest(&DIGEST[..63]), None);
    assert_eq!(normalize_tpm_digest(&format!("{}g", &DIGEST[..63])), None);
    let mut id = identity("", "", "");
    id.tpm_ek_sha256 = Some(format!(" {} ", DIGEST.to_uppercase()));
    assert_eq!(
        id.normalized().unwrap().tpm_ek_sha256.as_deref(),
        Some(DIGEST)
    );
    id.tpm_ek_sha256 = Some("abc".into());
    assert_eq!(
        id.normalized().unwrap_err(),
        IdentityError::InvalidTpmDigest
    );
}

#[test]
fn uuid_forms() {
    let want = "4c4c4544-0042-3510-8052-b2c04f4e3732";
    for form in [
        "4C4C4544-0042-3510-8052-B2C04F4E3732",
        "{4c4c4544-0042-3510-8052-b2c04f4e3732}",
        "4c4c454400423510 8052b2c04f4e3732"
            .replace(' ', "")
            .as_str(),
        " 4c4c4544-0042-3510-8052-b2c04f4e3732\n",
    ] {
        assert_eq!(
            normalize_uuid(form).unwrap().as_deref(),
            Some(want),
            "{form}"
        );
    }
    assert_eq!(
        normalize_uuid("00000000-0000-0000-0000-000000000000").unwrap(),
        None
    );
    assert_eq!(
        normalize_uuid("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF").unwrap(),
        None
    );
    assert!(matches!(
        normalize_uuid("not-a-uuid"),
        Err(IdentityError::InvalidUuid { .. })
    ));
}

#[test]
fn uuid_from_a_hash_is_displayed_little_endian_like_windows_and_linux() {
    // The same machine's UUID as Linux `product_uuid` shows it must equal the hash's.
    let shown = Uuid::parse_str("4c4c4544-0042-3510-8052-b2c04f4e3732").unwrap();
    let spec = HashSpec {
        manufacturer: "Dell Inc.".into(),
        model: "Latitude".into(),
        serial: "ABC1234".into(),
        smbios_uuid: Some(shown),
        ..HashSpec::default()
    };
    let from_hash = Identity::from_hash(&decode(&build(&spec).unwrap()).unwrap());
    let mut linux = identity("Dell Inc.", "Latitude", "ABC1234");
    linux.smbios_uuid = Some("4C4C4544-0042-3510-8052-B2C04F4E3732".into());
    assert_eq!(
        from_hash.keys().smbios_uuid,
        linux.normalized().unwrap().keys().smbios_uuid
    );
    // And the raw record holds the first three fields little-endian.
    let h = decode(&build(&spec).unwrap()).unwrap();
    let raw = h.as_bytes();
    let at = raw.windows(16).position(|w| w == shown.to_bytes_le());
    assert!(at.is_some());
}

#[test]
fn placeholder_serials() {
    for p in [
        "",
        "   ",
        "\0",
        "Default string",
        "DEFAULT STRING",
        "To be filled by O.E.M.",
        " to be filled by o.e.m. ",
        "0",
        "00000000",
        "0000-0000-0000-0000",
        "System Serial Number",
        "None",
        "Not Specified",
        "Not Applicable",
        "123456789",
        "1234567890",
        "N/A",
        "Chassis Serial Number",
        "XXXXXXXX",
        "FFFFFFFF",
        "********",
    ] {
        assert!(is_placeholder_serial(p), "{p:?}");
    }
    for real in [
        "ABC1234",
        "5CG1234XYZ",
        "PF3ABCDE",
        "0123456789AB",
        "VMware-56 4d 2a 15 8b 2e 9c 3f-a8 7d 19 2c 4b 6e 10 77",
        "1",
        "00000001",
        "SYNHZN9Q0PWH",
    ] {
        assert!(!is_placeholder_serial(real), "{real:?}");
    }
}

#[test]
fn keys_and_claims() {
    let mut id = identity(" Dell Inc. ", "Latitude 7440", "ABC1234");
    id.tpm_ek_sha256 = Some(DIGEST.to_uppercase());
    id.mac_addresses = vec!["AA-BB-CC-DD-EE-FF".into(), "junk".into()];
    id.disk_ids = vec!["0025_3859_1B0C_2A73.".into()];
    id.smbios_uuid = Some("4C4C4544-0042-3510-8052-B2C04F4E3732".into());
    let k = id.keys();
    assert_eq!(
        k.tuple.as_deref(),
        Some("dell inc.\u{1f}latitude 7440\u{1f}abc1234")
    );
    assert_eq!(k.tpm.as_deref(), Some(DIGEST));
    assert_eq!(
        k.smbios_uuid.as_deref(),
        Some("4c4c4544-0042-3510-8052-b2c04f4e3732")
    );
    assert_eq!(k.macs, ["aa:bb:cc:dd:ee:ff"]);
    assert_eq!(k.disks, ["002538591b0c2a73"]);
    assert!(k.has_strong_key());
    assert_eq!(
        id.strong_claims(),
        [
            (
                ClaimKind::Tuple,
                "dell inc.\u{1f}latitude 7440\u{1f}abc1234".to_owned()
            ),
            (ClaimKind::Tpm, DIGEST.to_owned()),
        ]
    );
    assert_eq!(ClaimKind::Tuple.as_str(), "tuple");
    assert_eq!(ClaimKind::Tpm.as_str(), "tpm");

    // Case and surrounding whitespace do not change the tuple.
    assert_eq!(
        identity("DELL INC.", " latitude 7440", "abc1234\0")
            .keys()
            .tuple,
        k.tuple
    );
    // A placeholder serial gives no tuple; without a TPM there is no strong key.
    let placeholder = identity("ASRock", "B650", "To Be Filled By O.E.M.").keys();
    assert_eq!(placeholder.tuple, None);
    assert!(!placeholder.has_strong_key());
    assert!(placeholder.strong_claims().is_empty());
    // A TPM with a placeholder serial is still a usable identity.
    let mut tpm_only = identity("ASRock", "B650", "Default string");
    tpm_only.tpm_ek_sha256 = Some(DIGEST.into());
    assert_eq!(
        tpm_only.strong_claims(),
        [(ClaimKind::Tpm, DIGEST.to_owned())]
    );
    // No manufacturer: no tuple.
    assert_eq!(identity("", "P", "ABC1234").keys().tuple, None);
    // The separator cannot be smuggled into a part.
    let a = identity("a\u{1f}b", "c", "SER1").keys().tuple.unwrap();
    assert_eq!(a.matches('\u{1f}').count(), 2);
}

#[test]
fn from_hash_gives_a_normalised_identity() {
    let spec = HashSpec {
        manufacturer: "LENOVO".into(),
        model: "21R3001BUK".into(),
        serial: "PF3ABCDE".into(),
        smbios_uuid: Some(Uuid::nil()),
        macs: vec![[0xB0, 0x0C, 0xD1, 0x00, 0x00, 0x02], [0x00; 6]],
        disk_ids: vec!["0025_3859_1B0C_2A73".into()],
        tpm_ek_modulus: Some(vec![0x80; 256]),
        ..HashSpec::default()
    };
    let id = Identity::from_hash(&decode(&build(&spec).unwrap()).unwrap());
    assert_eq!(id.normalized().unwrap(), id);
    assert_eq!(id.smbios_uuid, None, "a nil UUID is no identity");
    assert_eq!(id.mac_addresses, ["b0:0c:d1:00:00:02"]);
    assert_eq!(id.disk_ids, ["002538591b0c2a73"]);
    assert_eq!(id.tpm_ek_sha256.as_ref().map(String::len), Some(64));
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["serialNumber"], "PF3ABCDE");
    assert_eq!(json["macAddresses"][0], "b0:0c:d1:00:00:02");
    assert!(json.get("tpmEkSha256").is_some());
    assert!(json.get("smbiosUuid").is_none());
}

#[test]
fn a_linux_identity_with_only_a_tpm_digest_matches_the_windows_hash() {
    let modulus = vec![0x9D; 256];
    let spec = HashSpec {
        manufacturer: "HP".into(),
        model: "HP EliteBook 840 G8 Notebook PC".into(),
        serial: "5CG1234XYZ".into(),
        tpm_ek_modulus: Some(modulus),
        os_type: OsType::Windows,
        ..HashSpec::default()
    };
    let registration = Identity::from_hash(&decode(&build(&spec).unwrap()).unwrap()).keys();
    let request: Identity = serde_json::from_str(&format!(
        r#"{{"tpmEkSha256": "{}"}}"#,
        registration.tpm.clone().unwrap().to_uppercase()
    ))
    .unwrap();
    let request = request.normalized().unwrap().keys();
    assert!(matches(&request, &registration));
}

fn keys(tuple: Option<&str>, tpm: Option<&str>) -> IdentityKeys {
    IdentityKeys {
        tuple: tuple.map(str::to_owned),
        tpm: tpm.map(str::to_owned),
        ..IdentityKeys::default()
    }
}

#[test]
fn matching_truth_table() {
    let (t1, t2) = (Some("m\u{1f}p\u{1f}s1"), Some("m\u{1f}p\u{1f}s2"));
    let (k1, k2) = (Some("aa"), Some("bb"));
    // (request, registration, expected)
    let table = [
        // Registration holds a TPM: only the same digest matches; a tuple alone never does.
        (keys(t1, None), keys(t1, k1), false),
        (keys(t1, k1), keys(t1, k1), true),
        (keys(None, k1), keys(t1, k1), true),
        (keys(t2, k1), keys(t1, k1), true),
        (keys(t1, k2), keys(t1, k1), false),
        (keys(None, None), keys(t1, k1), false),
        // Registration without a TPM: the tuple decides.
        (keys(t1, None), keys(t1, None), true),
        (keys(t1, k1), keys(t1, None), true),
        (keys(t2, None), keys(t1, None), false),
        (keys(None, k1), keys(t1, None), false),
        (keys(None, None), keys(None, None), false),
        (keys(t1, None), keys(None, None), false),
        // A TPM-only registration.
        (keys(None, k1), keys(None, k1), true),
        (keys(t1, None), keys(None, k1), false),
    ];
    for (i, (request, registration, expected)) in table.iter().enumerate() {
        assert_eq!(matches(request, registration), *expected, "row {i}");
    }
    // Weak keys never make a match, they only corroborate.
    let mut a = keys(None, None);
    a.macs = vec!["aa:bb:cc:dd:ee:ff".into()];
    a.smbios_uuid = Some("4c4c4544-0042-3510-8052-b2c04f4e3732".into());
    let b = a.clone();
    assert!(!matches(&a, &b));
    assert_eq!(a.corroboration(&b), 2);
}

#[test]
fn identity_json_shape() {
    let id: Identity = serde_json::from_str(
        r#"{"manufacturer":"Framework","model":"Laptop 13","serialNumber":"FRA123",
            "smbiosUuid":"0E1F2A3B-4C5D-6E7F-8091-A2B3C4D5E6F7",
            "macAddresses":["9C-6B-00-12-34-56"],"diskIds":["eui.e8238fa6bf530001001b448b49f6fb64"]}"#,
    )
    .unwrap();
    let n = id.normalized().unwrap();
    assert_eq!(
        n.smbios_uuid.as_deref(),
        Some("0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7")
    );
    assert_eq!(n.mac_addresses, ["9c:6b:00:12:34:56"]);
    assert_eq!(n.disk_ids, ["e8238fa6bf530001001b448b49f6fb64"]);
    assert_eq!(n.tpm_ek_sha256, None);
    let too_many = Identity {
        mac_addresses: vec!["aa:bb:cc:dd:ee:ff".into(); 65],
        ..Identity::default()
    };
    assert_eq!(
        too_many.normalized().unwrap_err(),
        IdentityError::TooMany {
            field: "macAddresses",
            max: 64
        }
    );
}
