//! The registration CSV reader and row validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

use unbox_domain::hardware_hash::{HashSpec, build};
use unbox_domain::identity::ClaimKind;
use unbox_domain::registration_csv::{
    Column, CsvError, CsvRow, DuplicateTracker, MAX_FIELD_BYTES, RegistrationCsvReader, RowOutcome,
    RowProblem, TextEncoding, validate_row,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const HEADER: &str = "Device Serial Number,Windows Product ID,Hardware Hash";

#[derive(Clone, Copy)]
enum Enc {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    Cp1252,
}

/// Encodes test text the way the tools that write these files do (BOM included).
fn encode(text: &str, enc: Enc) -> Vec<u8> {
    match enc {
        Enc::Utf8 => text.as_bytes().to_vec(),
        Enc::Utf8Bom => [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
        Enc::Utf16Le => {
            let mut v = vec![0xFF, 0xFE];
            for u in text.encode_utf16() {
                v.extend(u.to_le_bytes());
            }
            v
        }
        Enc::Utf16Be => {
            let mut v = vec![0xFE, 0xFF];
            for u in text.encode_utf16() {
                v.extend(u.to_be_bytes());
            }
            v
        }
        Enc::Cp1252 => {
            let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
            assert!(!unmappable);
            bytes.into_owned()
        }
    }
}

fn hash(serial: &str) -> String {
    build(&HashSpec {
        manufacturer: "Dell Inc.".into(),
        model: "Latitude 7440".into(),
        serial: serial.into(),
        macs: vec![[0x10, 0x20, 0x30, 0x40, 0x50, 0x60]],
        ..HashSpec::default()
    })
    .unwrap()
}

/// All items of a file.
fn read_all(bytes: &[u8]) -> Vec<Result<CsvRow, CsvError>> {
    RegistrationCsvReader::new(bytes).collect()
}

fn rows(bytes: &[u8]) -> Vec<CsvRow> {
    read_all(bytes).into_iter().map(Result::unwrap).collect()
}

fn lines(rows: &[CsvRow]) -> Vec<u64> {
    rows.iter().map(|r| r.line).collect()
}

fn serials(rows: &[CsvRow]) -> Vec<&str> {
    rows.iter()
        .map(|r| r.serial_number.as_deref().unwrap_or(""))
        .collect()
}

/// A Read that hands out one byte per call, to cross every chunk boundary.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn three_rows(eol: &str) -> String {
    let mut s = format!("{HEADER}{eol}");
    for serial in ["SER-1", "SER-2", "SER-3"] {
        s.push_str(&format!("{serial},,{}{eol}", hash(serial)));
    }
    s
}

#[test]
fn every_encoding_and_line_ending() {
    for (enc, expected) in [
        (Enc::Utf16Le, TextEncoding::Utf16Le),
        (Enc::Utf16Be, TextEncoding::Utf16Be),
        (Enc::Utf8, TextEncoding::Utf8),
        (Enc::Utf8Bom, TextEncoding::Utf8Bom),
        (Enc::Cp1252, TextEncoding::Utf8),
    ] {
        for eol in ["\r\n", "\n", "\r"] {
            let bytes = encode(&three_rows(eol), enc);
            let mut reader = RegistrationCsvReader::new(bytes.as_slice());
            let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
            assert_eq!(serials(&got), ["SER-1", "SER-2", "SER-3"]);
            assert_eq!(lines(&got), [2, 3, 4], "{eol:?}");
            assert_eq!(reader.encoding(), Some(expected));
            assert_eq!(reader.rows_read(), 3);
            for r in &got {
                assert!(matches!(validate_row(r), RowOutcome::Valid(_)));
            }
            // The same bytes one at a time.
            let trickled: Vec<CsvRow> = RegistrationCsvReader::new(Trickle(&bytes))
                .map(Result::unwrap)
                .collect();
            assert_eq!(trickled, got);
        }
    }
}

#[test]
fn utf16_without_bom_is_recognised() {
    let mut bytes = Vec::new();
    for u in three_rows("\r\n").encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    let mut reader = RegistrationCsvReader::new(bytes.as_slice());
    assert_eq!(reader.by_ref().count(), 3);
    assert_eq!(reader.encoding(), Some(TextEncoding::Utf16Le));
}

#[test]
fn the_fixture_files() {
    let utf16 = std::fs::read(format!("{FIXTURES}/autopilot-utf16-3rows.csv")).unwrap();
    let mut reader = RegistrationCsvReader::new(utf16.as_slice());
    let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(reader.encoding(), Some(TextEncoding::Utf16Le));
    assert_eq!(lines(&got), [2, 3, 4]);
    assert_eq!(
        serials(&got),
        ["SYNVUYCBYWB6", "SYN1VLUCZEJX", "SYNR6JQ410DD"]
    );
    assert!(reader.warnings().is_empty());

    let utf8 = std::fs::read(format!("{FIXTURES}/autopilot-utf8-grouptag-5rows.csv")).unwrap();
    let got = rows(&utf8);
    assert_eq!(lines(&got), [2, 3, 4, 5, 6]);
    assert!(got.iter().all(|r| r.group_tag.as_deref() == Some("Sales")));
    for r in &got {
        match validate_row(r) {
            RowOutcome::Valid(v) => {
                assert!(v.warnings.is_empty());
                assert_eq!(Some(v.serial_number.as_str()), r.serial_number.as_deref());
                assert_eq!(v.group_tag.as_deref(), Some("Sales"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn windows_1252_group_tag() {
    let text = format!(
        "{HEADER},Group Tag\r\nSER-1,,{},Équipe Café\r\n",
        hash("SER-1")
    );
    let bytes = encode(&text, Enc::Cp1252);
    let mut reader = RegistrationCsvReader::new(bytes.as_slice());
    let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got[0].group_tag.as_deref(), Some("Équipe Café"));
    assert_eq!(reader.encoding(), Some(TextEncoding::Windows1252));
    let warnings = reader.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("Windows-1252"), "{warnings:?}");

    // The same text in UTF-8 stays UTF-8, without a warning.
    let mut reader = RegistrationCsvReader::new(text.as_bytes());
    let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got[0].group_tag.as_deref(), Some("Équipe Café"));
    assert_eq!(reader.encoding(), Some(TextEncoding::Utf8));
    assert!(reader.warnings().is_empty());

    // cp1252 bytes split across reads.
    let trickled: Vec<CsvRow> = RegistrationCsvReader::new(Trickle(&bytes))
        .map(Result::unwrap)
        .collect();
    assert_eq!(trickled[0].group_tag.as_deref(), Some("Équipe Café"));
}

#[test]
fn quoting() {
    let h = hash("SER,1");
    let text = format!(
        "\"Device Serial Number\",\"Windows Product ID\",\"Hardware Hash\",\"Group Tag\"\r\n\
         \"SER,1\",\"\",\"{h}\",\"Tag \"\"A\"\", B\"\r\n\
         SER2,,{h},\"multi\r\nline\"\r\n\
         SER3,,{h},plain\"quote\r\n\
         SER4,,{h},\"closed\"tail\r\n"
    );
    let got = rows(text.as_bytes());
    assert_eq!(serials(&got), ["SER,1", "SER2", "SER3", "SER4"]);
    assert_eq!(got[0].group_tag.as_deref(), Some("Tag \"A\", B"));
    assert_eq!(got[0].product_key, None);
    assert_eq!(got[1].group_tag.as_deref(), Some("multi\nline"));
    assert_eq!(got[2].group_tag.as_deref(), Some("plain\"quote"));
    assert_eq!(got[3].group_tag.as_deref(), Some("closedtail"));
    // SER2 spans lines 3 and 4.
    assert_eq!(lines(&got), [2, 3, 5, 6]);
}

#[test]
fn a_hash_wrapped_inside_quotes_still_decodes() {
    let h = hash("WRAP-1");
    let wrapped: Vec<String> = h
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let text = format!(
        "{HEADER}\nWRAP-1,,\"{}\"\nNEXT,,{}\n",
        wrapped.join("\r\n"),
        hash("NEXT")
    );
    let got = rows(text.as_bytes());
    assert_eq!(lines(&got), [2, 2 + wrapped.len() as u64]);
    assert!(matches!(validate_row(&got[0]), RowOutcome::Valid(_)));
}

#[test]
fn repeated_headers_and_boms_mid_file() {
    for enc in [Enc::Utf8Bom, Enc::Utf16Le, Enc::Utf16Be] {
        let first = encode(&three_rows("\r\n"), enc);
        let second = encode(
            &format!("{HEADER},Group Tag\r\nSER-4,,{},Tag4\r\n", hash("SER-4")),
            enc,
        );
        let bytes = [first, second].concat();
        let mut reader = RegistrationCsvReader::new(bytes.as_slice());
        let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(serials(&got), ["SER-1", "SER-2", "SER-3", "SER-4"]);
        assert_eq!(lines(&got), [2, 3, 4, 6]);
        assert_eq!(got[3].group_tag.as_deref(), Some("Tag4"));
        assert_eq!(reader.rows_read(), 4);
        // The header change is reported once.
        assert_eq!(reader.warnings().len(), 1, "{:?}", reader.warnings());
    }
    // An identical repeated header is silent.
    let text = format!("{}{}", three_rows("\n"), three_rows("\n"));
    let mut reader = RegistrationCsvReader::new(text.as_bytes());
    assert_eq!(
        lines(&reader.by_ref().map(Result::unwrap).collect::<Vec<_>>()),
        [2, 3, 4, 6, 7, 8]
    );
    assert!(reader.warnings().is_empty());
}

#[test]
fn a_utf8_bom_mid_file_of_a_windows_1252_file_is_dropped() {
    let first = encode(
        &format!("{HEADER},Group Tag\r\nA1,,{},Café\r\n", hash("A1")),
        Enc::Cp1252,
    );
    let second = encode(&format!("{HEADER}\r\nA2,,{}\r\n", hash("A2")), Enc::Utf8Bom);
    let got = rows(&[first, second].concat());
    assert_eq!(serials(&got), ["A1", "A2"]);
    assert_eq!(lines(&got), [2, 4]);
}

#[test]
fn blank_lines_are_skipped_and_counted() {
    let text = format!(
        "\r\n  \r\n{HEADER}\r\n\r\nSER-1,,{}\r\n,,\r\n \t \r\nSER-2,,{}\r\n\r\n\r\n",
        hash("SER-1"),
        hash("SER-2")
    );
    let mut reader = RegistrationCsvReader::new(text.as_bytes());
    let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(lines(&got), [5, 8]);
    assert_eq!(reader.rows_read(), 2);
    assert_eq!(reader.lines_read(), 11);
}

#[test]
fn partner_center_tuple_upload() {
    let text = "Device Serial Number,Windows Product ID,Hardware Hash,Manufacturer name,Device model\r\n\
                PF3ABCDE,,,LENOVO,21R3001BUK\r\n\
                PF3ABCDF,,,LENOVO,\r\n\
                ,3301234567890,,,\r\n\
                ,,,,\r\n\
                ,,,LENOVO,21R3001BUK\r\n";
    let got = rows(text.as_bytes());
    assert_eq!(lines(&got), [2, 3, 4, 6]);
    assert_eq!(got[0].manufacturer.as_deref(), Some("LENOVO"));
    assert_eq!(got[0].model.as_deref(), Some("21R3001BUK"));
    match validate_row(&got[0]) {
        RowOutcome::TupleOnly(t) => {
            assert_eq!(t.identity.serial_number, "PF3ABCDE");
            assert!(t.identity.keys().tuple.is_some());
        }
        other => panic!("{other:?}"),
    }
    let RowOutcome::Invalid(e) = validate_row(&got[1]) else {
        panic!()
    };
    assert_eq!((e.code, e.name), (801, "InvalidZtdRequestBody"));
    let RowOutcome::Invalid(e) = validate_row(&got[2]) else {
        panic!()
    };
    assert_eq!(e.code, 801, "a product key alone is not a tuple");
    let RowOutcome::Invalid(e) = validate_row(&got[3]) else {
        panic!()
    };
    assert_eq!(
        (e.code, e.name),
        (803, "MissingZtdSerialNumberAndProductKey")
    );
}

#[test]
fn header_aliases_and_extra_columns() {
    let h = hash("ALIAS-1");
    let text = format!(
        "serialnumber,PRODUCTKEY,Notes,hardwarehash,OrderID,upn,Notes\n\
         ALIAS-1,pk1,whatever,{h},PO-77,user@contoso.com,x\n"
    );
    let mut reader = RegistrationCsvReader::new(text.as_bytes());
    let got: Vec<CsvRow> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got[0].serial_number.as_deref(), Some("ALIAS-1"));
    assert_eq!(got[0].product_key.as_deref(), Some("pk1"));
    assert_eq!(got[0].group_tag.as_deref(), Some("PO-77"));
    assert_eq!(got[0].assigned_user.as_deref(), Some("user@contoso.com"));
    assert_eq!(got[0].hardware_hash.as_deref(), Some(h.as_str()));
    let warnings = reader.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("\"Notes\""));
    assert_eq!(
        reader.columns(),
        [
            Some(Column::SerialNumber),
            Some(Column::ProductKey),
            None,
            Some(Column::HardwareHash),
            Some(Column::GroupTag),
            Some(Column::AssignedUser),
            None
        ]
    );
    for (name, column) in [
        ("Device Serial Number", Column::SerialNumber),
        ("Serial Number", Column::SerialNumber),
        ("Windows Product ID", Column::ProductKey),
        ("Product ID", Column::ProductKey),
        ("Hardware Hash", Column::HardwareHash),
        ("HASH", Column::HardwareHash),
        ("Group Tag", Column::GroupTag),
        ("GroupTag", Column::GroupTag),
        ("Order ID", Column::GroupTag),
        ("Assigned User", Column::AssignedUser),
        ("AssignedUser", Column::AssignedUser),
        ("User", Column::AssignedUser),
        ("Manufacturer name", Column::Manufacturer),
        ("Device model", Column::Model),
    ] {
        assert_eq!(Column::from_header(name), Some(column), "{name}");
    }
}

#[test]
fn files_that_are_not_registration_csvs() {
    let png = [
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R',
    ];
    let mut binary = png.to_vec();
    binary.extend((0..200_000u32).map(|i| (i * 7919 % 251) as u8));
    let samples: Vec<Vec<u8>> = vec![
        png.to_vec(),
        binary,
        b"Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit\n".to_vec(),
        b"Name,Email,Phone\nAlice,a@example.com,1\n".to_vec(),
        b"".to_vec(),
        b"\r\n\r\n   \r\n".to_vec(),
        vec![b'x'; 1_000_000],
        b"\"Device Serial Number,Hardware Hash".to_vec(),
    ];
    for (i, bytes) in samples.iter().enumerate() {
        let mut reader = RegistrationCsvReader::new(bytes.as_slice());
        match reader.next() {
            Some(Err(CsvError::NotARegistrationCsv(m))) => {
                assert!(m.contains("Device Serial Number"), "{i}: {m}");
                assert!(!m.contains('\u{1a}'), "control characters are not echoed");
            }
            other => panic!("sample {i}: {other:?}"),
        }
        assert!(reader.next().is_none(), "sample {i}");
        assert!(reader.bytes_read() <= 200_000, "sample {i} read too far");
    }
    // A header with only a serial column is a registration CSV (no hash: tuple rows).
    let got = read_all(b"Serial Number\nABC\n");
    assert_eq!(got.len(), 1);
}

fn row_problem(item: &Result<CsvRow, CsvError>) -> (u64, RowProblem) {
    match item {
        Err(CsvError::Row { line, problem }) => (*line, problem.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_rows_do_not_fail_the_file() {
    let h = hash("OK");
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let text = format!(
        "{HEADER},Group Tag\n\
         A,,{h},tag,extra,more\n\
         B,,{h},tag,,\n\
         C,,{h},{long}\n\
         D,\n\
         E,,{h}\n\
         F,,\"{h}\n\
         G,,{h}\n"
    );
    let items = read_all(text.as_bytes());
    // F's quote never closes, so G is inside it: six items.
    assert_eq!(items.len(), 6);
    assert_eq!(
        row_problem(&items[0]),
        (
            2,
            RowProblem::TooManyFields {
                found: 6,
                expected: 4
            }
        )
    );
    // Empty extra fields (Excel's trailing commas) are fine.
    assert_eq!(
        items[1].as_ref().unwrap().serial_number.as_deref(),
        Some("B")
    );
    assert_eq!(
        row_problem(&items[2]),
        (4, RowProblem::FieldTooLong { column: 4 })
    );
    assert_eq!(
        row_problem(&items[3]),
        (
            5,
            RowProblem::MissingHashColumn {
                found: 2,
                hash_column: 3
            }
        )
    );
    // A missing trailing optional column reads as empty.
    assert_eq!(items[4].as_ref().unwrap().group_tag, None);
    // An unterminated quote swallows the rest of the file but is reported at its line.
    assert_eq!(
        row_problem(&items[5]),
        (7, RowProblem::UnterminatedQuote { column: 3 })
    );
    let CsvError::Row { .. } = items[5].as_ref().unwrap_err() else {
        panic!()
    };
    assert!(
        items[5]
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("line 7: a quoted field")
    );
    let e = row_problem(&items[0]).1.to_row_error();
    assert_eq!((e.code, e.name), (801, "InvalidZtdRequestBody"));
}

#[test]
fn a_runaway_quote_resynchronises_at_the_next_line() {
    let h = hash("OK");
    let filler = "y".repeat(MAX_FIELD_BYTES + 10);
    let text = format!("{HEADER}\nA,\"{filler}\nB,,{h}\nC,,{h}\n");
    let items = read_all(text.as_bytes());
    assert_eq!(
        row_problem(&items[0]),
        (2, RowProblem::UnterminatedQuote { column: 2 })
    );
    let good: Vec<&CsvRow> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(good.len(), 2);
    assert_eq!(good[0].serial_number.as_deref(), Some("B"));
    assert_eq!(good[0].line, 3);
}

#[test]
fn validation_outcomes() {
    let h = hash("0123456");
    // Excel dropped the leading zero: warned, the hash's serial is stored.
    let row = CsvRow {
        line: 7,
        serial_number: Some("123456".into()),
        hardware_hash: Some(h.clone()),
        group_tag: Some("Sales".into()),
        assigned_user: Some("ada@contoso.com".into()),
        manufacturer: Some("dell inc.".into()),
        model: Some("Other model".into()),
        ..CsvRow::default()
    };
    let RowOutcome::Valid(v) = validate_row(&row) else {
        panic!()
    };
    assert_eq!(v.line, 7);
    assert_eq!(v.serial_number, "0123456");
    assert_eq!(v.identity.serial_number, "0123456");
    assert_eq!(v.group_tag.as_deref(), Some("Sales"));
    assert_eq!(v.assigned_user.as_deref(), Some("ada@contoso.com"));
    assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
    assert_eq!(
        v.warnings[0],
        "CSV serial \"123456\" differs from the hash's serial \"0123456\"; the hash's serial is stored"
    );
    assert!(v.warnings[1].contains("model"));

    let bad = CsvRow {
        hardware_hash: Some(format!("{}AAAA", &h[..3000])),
        ..row.clone()
    };
    let RowOutcome::Invalid(e) = validate_row(&bad) else {
        panic!()
    };
    assert_eq!((e.code, e.name), (802, "InvalidZtdHardwareHash"));
    assert!(e.message.contains("2253 bytes"), "{}", e.message);

    let placeholder = CsvRow {
        hardware_hash: Some(
            build(&HashSpec {
                manufacturer: "ASRock".into(),
                model: "B650".into(),
                serial: "To Be Filled By O.E.M.".into(),
                ..HashSpec::default()
            })
            .unwrap(),
        ),
        serial_number: None,
        ..row.clone()
    };
    let RowOutcome::Invalid(e) = validate_row(&placeholder) else {
        panic!()
    };
    assert_eq!(e.code, 802);
    assert!(e.message.contains("placeholder"));
    // The same placeholder with a TPM is fine.
    let with_tpm = CsvRow {
        hardware_hash: Some(
            build(&HashSpec {
                manufacturer: "ASRock".into(),
                model: "B650".into(),
                serial: "To Be Filled By O.E.M.".into(),
                tpm_ek_sha256: Some([7; 32]),
                ..HashSpec::default()
            })
            .unwrap(),
        ),
        serial_number: None,
        manufacturer: None,
        model: None,
        ..row.clone()
    };
    let RowOutcome::Valid(v) = validate_row(&with_tpm) else {
        panic!()
    };
    assert!(v.warnings.is_empty());

    for (field, value) in [("group", "a\u{7}b".to_owned()), ("user", "u".repeat(300))] {
        let mut r = row.clone();
        if field == "group" {
            r.group_tag = Some(value);
        } else {
            r.assigned_user = Some(value);
        }
        let RowOutcome::Invalid(e) = validate_row(&r) else {
            panic!()
        };
        assert_eq!(e.code, 801, "{field}");
    }

    let nothing = CsvRow {
        line: 2,
        ..CsvRow::default()
    };
    let RowOutcome::Invalid(e) = validate_row(&nothing) else {
        panic!()
    };
    assert_eq!(e.code, 803);
}

#[test]
fn duplicates_within_a_file() {
    let spec = HashSpec {
        manufacturer: "HP".into(),
        model: "EliteBook".into(),
        serial: "5CG1".into(),
        tpm_ek_sha256: Some([3; 32]),
        ..HashSpec::default()
    };
    let first = build(&spec).unwrap();
    let second_capture = build(&HashSpec {
        capture: 9,
        ..spec.clone()
    })
    .unwrap();
    // Same TPM, serial retyped after a board repair: still the same machine.
    let reserialised = build(&HashSpec {
        serial: "5CG2".into(),
        ..spec.clone()
    })
    .unwrap();
    let other = build(&HashSpec {
        serial: "5CG3".into(),
        tpm_ek_sha256: Some([4; 32]),
        ..spec.clone()
    })
    .unwrap();
    let text = format!(
        "{HEADER}\n5CG1,,{first}\n5CG1,,{second_capture}\n5CG2,,{reserialised}\n5CG3,,{other}\n"
    );
    let mut tracker = DuplicateTracker::new();
    let mut verdicts = Vec::new();
    for row in rows(text.as_bytes()) {
        let RowOutcome::Valid(v) = validate_row(&row) else {
            panic!()
        };
        verdicts.push(tracker.check(row.line, &v.identity.strong_claims()));
    }
    assert_eq!(verdicts, [None, Some(2), Some(2), None]);
    assert_eq!(tracker.len(), 4);
    assert!(!tracker.is_empty());
    let claims = [(ClaimKind::Tpm, "x".to_owned())];
    assert_eq!(tracker.check(99, &claims), None);
    assert_eq!(tracker.check(100, &claims), Some(99));
}

/// Generates a large CSV lazily, so the test never holds the file.
struct Generated {
    rows: u64,
    next: u64,
    pending: Vec<u8>,
    at: usize,
    hash: String,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            if self.next > self.rows {
                return Ok(0);
            }
            self.pending = if self.next == 0 {
                format!("{HEADER}\r\n").into_bytes()
            } else {
                format!("SER-{},,{}\r\n", self.next, self.hash).into_bytes()
            };
            self.next += 1;
            self.at = 0;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn streams_many_rows() {
    let source = Generated {
        rows: 3_000,
        next: 0,
        pending: Vec::new(),
        at: 0,
        hash: hash("SER-X"),
    };
    let mut reader = RegistrationCsvReader::new(source);
    let mut last = 0;
    for item in reader.by_ref() {
        let row = item.unwrap();
        assert_eq!(row.line, last + 1 + u64::from(last == 0));
        last = row.line;
    }
    assert_eq!(last, 3_001);
    assert_eq!(reader.rows_read(), 3_000);
    assert!(reader.bytes_read() > 12_000_000);
}
