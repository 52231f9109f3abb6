//! Bulk registration: CSV files as people really have them, JSON batches, every per-row
//! error, idempotency, dry runs, concurrent imports, and uploads that are refused.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use unbox_domain::hardware_hash::{HashSpec, OsType, build};
use unbox_tests::{Answer, TestApp, TestTenant, hash};

pub const HEADER: &str = "Device Serial Number,Windows Product ID,Hardware Hash";

/// The encodings the files people have come in.
#[derive(Debug, Clone, Copy)]
pub enum Enc {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    Cp1252,
}

/// Our own encoder: the bytes each tool writes (BOM included).
pub fn encode(text: &str, enc: Enc) -> Vec<u8> {
    match enc {
        Enc::Utf8 => text.as_bytes().to_vec(),
        Enc::Utf8Bom => [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
        Enc::Utf16Le => {
            let mut out = vec![0xFF, 0xFE];
            for unit in text.encode_utf16() {
                out.extend(unit.to_le_bytes());
            }
            out
        }
        Enc::Utf16Be => {
            let mut out = vec![0xFE, 0xFF];
            for unit in text.encode_utf16() {
                out.extend(unit.to_be_bytes());
            }
            out
        }
        Enc::Cp1252 => text
            .chars()
            .map(|c| match c {
                '\u{20ac}' => 0x80,
                c if (c as u32) < 0x80 || (0xA0..=0xFF).contains(&(c as u32)) => c as u8,
                c => panic!("{c:?} is not in this test's Windows-1252 subset"),
            })
            .collect(),
    }
}

/// The physical line (1-based) where `needle` starts: line breaks before it are CRLF, LF or CR.
pub fn line_of(text: &str, needle: &str) -> i64 {
    let at = text.find(needle).expect("needle in text");
    let before = &text[..at];
    let crlf = before.matches("\r\n").count();
    let cr = before.matches('\r').count() - crlf;
    let lf = before.matches('\n').count() - crlf;
    1 + (crlf + cr + lf) as i64
}

/// An Unbox-made hash of a Linux machine (OS type byte `L`).
pub fn linux_hash(serial: &str) -> String {
    build(&HashSpec {
        manufacturer: "LENOVO".into(),
        model: "ThinkPad X1".into(),
        serial: serial.into(),
        macs: vec![[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]],
        os_type: OsType::Linux,
        ..HashSpec::default()
    })
    .expect("hash")
}

pub async fn upload(
    app: &TestApp,
    token: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    app.send_bytes(
        Method::POST,
        path,
        Some(token),
        Some(content_type),
        body,
        headers,
    )
    .await
}

/// Polls the job until it is finished (with a deadline; never a fixed wait).
pub async fn wait_job(app: &TestApp, token: &str, location: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let r = app.get(location, token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if matches!(
            r.body["status"].as_str(),
            Some("complete" | "partial" | "error")
        ) {
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import did not finish: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every item of a job, page by page.
pub async fn all_items(app: &TestApp, token: &str, location: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut path = format!("{location}/items?limit=1000");
    loop {
        let page = app.get(&path, token).await;
        assert_eq!(page.status, 200, "{}", page.text);
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("{location}/items?limit=1000&cursor={cursor}"),
            None => return items,
        }
    }
}

/// Uploads a CSV file as the tenant and waits for the job: (job, items).
pub async fn import_csv(app: &TestApp, tenant: &TestTenant, bytes: Vec<u8>) -> (Value, Vec<Value>) {
    let r = upload(app, &tenant.token, "/v1/imports", "text/csv", bytes, &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("/v1/imports/{}", r.body["id"].as_str().unwrap())
    );
    let job = wait_job(app, &tenant.token, &location).await;
    let items = all_items(app, &tenant.token, &location).await;
    (job, items)
}

fn rows_of(items: &[Value]) -> Vec<i64> {
    items.iter().map(|i| i["row"].as_i64().unwrap()).collect()
}

fn by_row(items: &[Value], row: i64) -> &Value {
    items
        .iter()
        .find(|i| i["row"] == row)
        .unwrap_or_else(|| panic!("no item for row {row}: {items:?}"))
}

#[track_caller]
fn assert_error(items: &[Value], row: i64, code: Option<i64>, name: &str) {
    let item = by_row(items, row);
    assert_eq!(item["status"], "error", "row {row}: {item}");
    assert_eq!(item["errorName"], name, "row {row}: {item}");
    match code {
        Some(code) => assert_eq!(item["errorCode"], code, "row {row}: {item}"),
        None => assert!(item["errorCode"].is_null(), "row {row}: {item}"),
    }
    assert!(item["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn every_encoding_and_line_ending() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let mut n = 0;
    for (enc, name) in [
        (Enc::Utf16Le, "utf-16le"),
        (Enc::Utf16Be, "utf-16be"),
        (Enc::Utf8, "utf-8"),
        (Enc::Utf8Bom, "utf-8-bom"),
        (Enc::Cp1252, "windows-1252"),
    ] {
        for eol in ["\r\n", "\n", "\r"] {
            n += 1;
            let (a, b) = (format!("ENC{n}-A"), format!("ENC{n}-B"));
            // Windows-1252 is recognised by its bytes that are not UTF-8: give it an é.
            let tag = if matches!(enc, Enc::Cp1252) {
                format!("Caf\u{e9} {n}")
            } else {
                format!("Caf\u{e9} \u{1F600} {n}")
            };
            let text = format!(
                "{HEADER},Group Tag,Assigned User{eol}{a},,{},{tag},user{n}@contoso.com{eol}{b},,{},Lab,{eol}",
                hash(&a, false, 0),
                hash(&b, true, 0)
            );
            let (job, items) = import_csv(&app, &tenant, encode(&text, enc)).await;
            assert_eq!(job["status"], "complete", "{enc:?} {eol:?}: {job}");
            assert_eq!(job["encoding"], name);
            assert_eq!(
                (
                    job["total"].as_i64(),
                    job["succeeded"].as_i64(),
                    job["failed"].as_i64()
                ),
                (Some(2), Some(2), Some(0))
            );
            assert!(job["finishedAt"].is_string() && job["createdAt"].is_string());
            assert_eq!(rows_of(&items), [2, 3], "{enc:?} {eol:?}");
            assert!(items.iter().all(|i| i["status"] == "complete"
                && i["deviceId"].is_string()
                && i["errorCode"].is_null()));
            assert_eq!(items[0]["serialNumber"], a.as_str());
            let row: (String, String, String) = sqlx::query_as(
                "SELECT group_tag, user_principal_name, os_type FROM devices WHERE serial_number = $1",
            )
            .bind(&a)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            assert_eq!(
                row,
                (
                    tag.clone(),
                    format!("user{n}@contoso.com"),
                    "Windows".to_owned()
                )
            );
            let device = app
                .get(
                    &format!("/v1/devices/{}", items[1]["deviceId"].as_str().unwrap()),
                    &tenant.token,
                )
                .await;
            assert_eq!(device.body["serialNumber"], b.as_str());
            assert_eq!(device.body["groupTag"], "Lab");
            assert!(device.body["userPrincipalName"].is_null());
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 30);
    assert_eq!(app.count("SELECT count(*) FROM identity_claims").await, 45);
    // Every finished job's upload is gone from the data directory.
    let left: Vec<String> = std::fs::read_dir(app.data_dir().join("imports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "node-id")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn excel_quotes_blank_lines_and_concatenated_files() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    // A hash copied with line breaks and spaces inside (quoted, as Excel writes it), its
    // padding gone.
    let wrapped: String = hash("XL-2", false, 0)
        .trim_end_matches('=')
        .chars()
        .enumerate()
        .flat_map(|(i, c)| match i % 100 {
            99 => vec![c, '\r', '\n'],
            49 => vec![c, ' '],
            _ => vec![c],
        })
        .collect();
    let first_file = format!(
        "{HEADER},Group Tag,Assigned User\r\n\
         \"XL-1\",\"\",\"{}\",\"Sales, EMEA\",\"ann@contoso.com\"\r\n\
         \r\n\
         \"XL-2\",,\"{wrapped}\",\"say \"\"hi\"\"\",\r\n\
         ,,\r\n",
        hash("XL-1", false, 0)
    );
    // A second export appended, BOM and header included, with other columns.
    let second_file = format!(
        "\u{feff}{HEADER}\r\nXL-3,,{}\r\n\r\n\r\n\u{feff}{HEADER}\r\nXL-4,,{}\r\n",
        hash("XL-3", false, 0),
        hash("XL-4", false, 0)
    );
    let text = format!("{first_file}{second_file}");
    let (job, items) = import_csv(&app, &tenant, encode(&text, Enc::Utf8Bom)).await;
    assert_eq!(job["status"], "complete", "{job} {items:?}");
    assert_eq!(job["total"], 4);
    let expected: Vec<i64> = ["\"XL-1\"", "\"XL-2\"", "XL-3,", "XL-4,"]
        .iter()
        .map(|needle| line_of(&text, needle))
        .collect();
    assert_eq!(rows_of(&items), expected);
    assert!(
        expected[1] + 2 < expected[2],
        "line breaks inside the quoted hash count"
    );
    let tags: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT serial_number, group_tag FROM devices ORDER BY serial_number")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        tags,
        [
            ("XL-1".to_owned(), Some("Sales, EMEA".to_owned())),
            ("XL-2".to_owned(), Some("say \"hi\"".to_owned())),
            ("XL-3".to_owned(), None),
            ("XL-4".to_owned(), None),
        ]
    );
    // The stored hash is the canonical text, whatever the file held.
    let stored: String =
        sqlx::query_scalar("SELECT hardware_hash FROM devices WHERE serial_number = 'XL-2'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, hash("XL-2", false, 0));
}

#[tokio::test]
async fn partner_center_and_alias_headers_and_linux_hashes() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    // Partner Center's header, with the hash's manufacturer and model.
    let text = format!(
        "Device Serial Number,Windows Product ID,Hardware Hash,Manufacturer name,Device model\n\
         PC-1,,{},Dell Inc.,Latitude 7440\n",
        hash("PC-1", false, 0)
    );
    let (job, items) = import_csv(&app, &tenant, text.into_bytes()).await;
    assert_eq!(job["status"], "complete", "{items:?}");
    assert!(by_row(&items, 2)["warnings"].as_array().unwrap().is_empty());

    // OrderID names the group tag; header names are case-insensitive.
    let text = format!(
        "device serial number,WINDOWS PRODUCT ID,hardware hash,OrderID\r\nOID-1,,{},PO-4711\r\n",
        hash("OID-1", false, 0)
    );
    let (job, _) = import_csv(&app, &tenant, encode(&text, Enc::Utf16Le)).await;
    assert_eq!(job["status"], "complete");
    let tag: String =
        sqlx::query_scalar("SELECT group_tag FROM devices WHERE serial_number = 'OID-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(tag, "PO-4711");

    // A Linux machine's Unbox-made hash registers as a Linux device; a CSV serial that
    // differs from the hash's is a warning, and the hash's serial is stored.
    let text = format!(
        "{HEADER}\nLNX-1,,{}\nTYPO-9,,{}\n",
        linux_hash("LNX-1"),
        hash("REAL-9", false, 0)
    );
    let (job, items) = import_csv(&app, &tenant, text.into_bytes()).await;
    assert_eq!(job["status"], "complete", "{items:?}");
    let linux = app
        .get(
            &format!(
                "/v1/devices/{}",
                by_row(&items, 2)["deviceId"].as_str().unwrap()
            ),
            &tenant.token,
        )
        .await;
    assert_eq!(linux.body["deviceOSType"], "Linux");
    assert_eq!(linux.body["manufacturer"], "LENOVO");
    let warned = by_row(&items, 3);
    assert_eq!(warned["status"], "complete");
    assert_eq!(warned["serialNumber"], "REAL-9");
    let warnings = warned["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warned}");
    assert!(warnings[0].as_str().unwrap().contains("TYPO-9"));
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial_number = 'REAL-9'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial_number = 'TYPO-9'")
            .await,
        0
    );
}

#[tokio::test]
async fn every_error_is_reported_on_its_row() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let taken = app
        .register(&contoso, &hash("TAKEN-1", true, 0), json!({}))
        .await;
    let taken_2 = app
        .register(&contoso, &hash("TAKEN-2", false, 0), json!({}))
        .await;
    app.register(&fabrikam, &hash("OTHER-1", false, 0), json!({}))
        .await;
    let audit_before = app.count("SELECT count(*) FROM audit_log").await;

    let header = format!("{HEADER},Manufacturer name,Device model");
    let lines = [
        format!("OK-1,,{},,", hash("OK-1", false, 0)),
        "BAD-1,,NOT-BASE64!!,,".to_owned(),
        ",,,Dell Inc.,Latitude 7440".to_owned(),
        format!("TAKEN-1,,{},,", hash("TAKEN-1", true, 7)),
        format!("OTHER-1,,{},,", hash("OTHER-1", false, 3)),
        format!("OK-1,,{},,", hash("OK-1", false, 9)),
        "GHOST-1,,,Dell Inc.,Latitude 7440".to_owned(),
        "TAKEN-2,,,Dell Inc.,Latitude 7440".to_owned(),
        format!("OK-2,,{},,,surplus", hash("OK-2", false, 0)),
        format!("PH-1,,{},,", hash("To be filled by O.E.M.", false, 0)),
        "SERIAL-ONLY,,,,".to_owned(),
    ];
    let text = format!("{header}\r\n{}\r\n", lines.join("\r\n"));
    let (job, items) = import_csv(&app, &contoso, text.into_bytes()).await;
    assert_eq!(job["status"], "partial", "{job}");
    assert_eq!(job["total"], 11);
    assert_eq!(job["succeeded"], 1);
    assert_eq!(job["failed"], 10);
    assert_eq!(rows_of(&items), (2..=12).collect::<Vec<i64>>());
    assert_eq!(by_row(&items, 2)["status"], "complete");
    assert_error(&items, 3, Some(802), "InvalidZtdHardwareHash");
    assert_error(&items, 4, Some(803), "MissingZtdSerialNumberAndProductKey");
    assert_error(&items, 5, Some(806), "ZtdDeviceAlreadyAssigned");
    assert_eq!(by_row(&items, 5)["deviceId"], taken.as_str());
    assert_error(&items, 6, Some(808), "ZtdDeviceAssignedToOtherTenant");
    assert!(by_row(&items, 6)["deviceId"].is_null());
    assert!(!by_row(&items, 6).to_string().contains(&fabrikam.id));
    assert_error(&items, 7, None, "ZtdDeviceDuplicated");
    assert!(
        by_row(&items, 7)["message"]
            .as_str()
            .unwrap()
            .contains("row 2")
    );
    assert_error(&items, 8, None, "ZtdDeviceNotFound");
    assert_error(&items, 9, Some(806), "ZtdDeviceAlreadyAssigned");
    assert_eq!(by_row(&items, 9)["deviceId"], taken_2.as_str());
    assert_error(&items, 10, Some(801), "InvalidZtdRequestBody");
    assert_error(&items, 11, Some(802), "InvalidZtdHardwareHash");
    assert_error(&items, 12, Some(801), "InvalidZtdRequestBody");

    // Only OK-1 was registered; every claim belongs to exactly one device.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM devices WHERE tenant_id = '{}'",
            contoso.id
        ))
        .await,
        3
    );
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 4);
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial_number = 'OK-1'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM identity_claims c LEFT JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id WHERE d.id IS NULL").await,
        0
    );
    // The import is in the audit log: its upload and its end.
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log").await,
        audit_before + 2
    );
    let log = app.get("/v1/audit-log", &contoso.token).await;
    assert_eq!(log.body["items"][0]["action"], "import.finish");
    assert_eq!(log.body["items"][0]["after"]["status"], "partial");
    assert_eq!(log.body["items"][1]["action"], "import.create");
    assert_eq!(log.body["items"][1]["actorKind"], "client");

    // Errors only; a filter on the items.
    let errors = app
        .get(
            &format!(
                "/v1/imports/{}/items?status=error",
                job["id"].as_str().unwrap()
            ),
            &contoso.token,
        )
        .await;
    assert_eq!(errors.body["items"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn a_job_whose_rows_all_fail_is_an_error_and_an_empty_one_is_complete() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let text = format!("{HEADER}\nA,,AAAA\nB,,BBBB\n");
    let (job, items) = import_csv(&app, &tenant, text.into_bytes()).await;
    assert_eq!(job["status"], "error");
    assert_eq!(
        (job["succeeded"].as_i64(), job["failed"].as_i64()),
        (Some(0), Some(2))
    );
    assert_eq!(items.len(), 2);
    let (job, items) = import_csv(&app, &tenant, format!("{HEADER}\r\n\r\n").into_bytes()).await;
    assert_eq!(job["status"], "complete");
    assert_eq!(job["total"], 0);
    assert!(items.is_empty());
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 0);
}

#[tokio::test]
async fn json_batches_report_rows_by_index() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let batch = json!({"devices": [
        {"hardwareHash": hash("J-1", false, 0), "groupTag": "Json", "purchaseOrderId": "PO-1", "displayName": "KIOSK-1"},
        {"identity": {"manufacturer": "LENOVO", "model": "20XW", "serialNumber": "LNX-J", "tpmEkSha256": "ab".repeat(32)}},
        {"hardwareHash": "AAAA"},
        {"hardwareHash": hash("J-2", false, 0), "colour": "red"},
        "not an object",
        {"hardwareHash": hash("J-1", false, 5)},
        {"hardwareHash": hash("J-3", false, 0), "userPrincipalName": "nobody"},
        {},
        {"hardwareHash": hash("J-4", false, 0), "serialNumber": "WRONG-4"},
        {"hardwareHash": hash("J-5", false, 0), "identity": {"serialNumber": "x"}}
    ]});
    let r = upload(
        &app,
        &tenant.token,
        "/v1/imports",
        "application/json",
        batch.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["format"], "json");
    assert_eq!(r.body["total"], 10);
    let location = r.header("location").unwrap().to_owned();
    let job = wait_job(&app, &tenant.token, &location).await;
    let items = all_items(&app, &tenant.token, &location).await;
    assert_eq!(job["status"], "partial", "{items:?}");
    assert_eq!(
        (job["succeeded"].as_i64(), job["failed"].as_i64()),
        (Some(3), Some(7))
    );
    assert_eq!(rows_of(&items), (0..10).collect::<Vec<i64>>());
    assert_eq!(by_row(&items, 0)["status"], "complete");
    assert_eq!(by_row(&items, 1)["status"], "complete");
    assert_error(&items, 2, Some(802), "InvalidZtdHardwareHash");
    assert_error(&items, 3, Some(801), "InvalidZtdRequestBody");
    assert!(
        by_row(&items, 3)["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    assert_error(&items, 4, Some(801), "InvalidZtdRequestBody");
    assert_error(&items, 5, None, "ZtdDeviceDuplicated");
    assert_error(&items, 6, Some(801), "InvalidZtdRequestBody");
    assert!(
        by_row(&items, 6)["message"]
            .as_str()
            .unwrap()
            .contains("userPrincipalName")
    );
    assert_error(&items, 7, Some(803), "MissingZtdSerialNumberAndProductKey");
    assert_eq!(by_row(&items, 8)["status"], "complete");
    assert_eq!(by_row(&items, 8)["serialNumber"], "J-4");
    assert_eq!(by_row(&items, 8)["warnings"].as_array().unwrap().len(), 1);
    assert_error(&items, 9, Some(801), "InvalidZtdRequestBody");

    let first = app
        .get(
            &format!(
                "/v1/devices/{}",
                by_row(&items, 0)["deviceId"].as_str().unwrap()
            ),
            &tenant.token,
        )
        .await;
    assert_eq!(first.body["groupTag"], "Json");
    assert_eq!(first.body["purchaseOrderId"], "PO-1");
    assert_eq!(first.body["displayName"], "KIOSK-1");
    let linux = app
        .get(
            &format!(
                "/v1/devices/{}",
                by_row(&items, 1)["deviceId"].as_str().unwrap()
            ),
            &tenant.token,
        )
        .await;
    assert_eq!(linux.body["deviceOSType"], "Linux");
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE hardware_hash IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn the_same_key_and_body_give_the_same_job() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let file = format!("{HEADER}\nIDEM-1,,{}\n", hash("IDEM-1", false, 0)).into_bytes();
    let key = [("idempotency-key", "batch-2026-11-22")];
    let first = upload(
        &app,
        &tenant.token,
        "/v1/imports",
        "text/csv",
        file.clone(),
        &key,
    )
    .await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.body["idempotencyKey"], "batch-2026-11-22");
    let location = first.header("location").unwrap().to_owned();
    wait_job(&app, &tenant.token, &location).await;
    let again = upload(
        &app,
        &tenant.token,
        "/v1/imports",
        "text/csv",
        file.clone(),
        &key,
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.header("location"), Some(location.as_str()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["status"], "complete");

    let other = format!("{HEADER}\nIDEM-2,,{}\n", hash("IDEM-2", false, 0)).into_bytes();
    let reused = upload(&app, &tenant.token, "/v1/imports", "text/csv", other, &key).await;
    reused.assert_problem(422, "IdempotencyKeyReused");
    assert_eq!(reused.body["importId"], first.body["id"]);
    // A dry run of the same body is another request too.
    let dry = upload(
        &app,
        &tenant.token,
        "/v1/imports?dryRun=true",
        "text/csv",
        file.clone(),
        &key,
    )
    .await;
    dry.assert_problem(422, "IdempotencyKeyReused");
    // Another tenant's key space is its own.
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let theirs = upload(&app, &fabrikam.token, "/v1/imports", "text/csv", file, &key).await;
    assert_eq!(theirs.status, 202);
    assert_ne!(theirs.body["id"], first.body["id"]);
    wait_job(&app, &fabrikam.token, theirs.header("location").unwrap()).await;

    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM imports WHERE tenant_id = '{}'",
            tenant.id
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial_number = 'IDEM-1'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial_number = 'IDEM-2'")
            .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM audit_log WHERE tenant_id = '{}' AND action = 'import.create'",
            tenant.id
        ))
        .await,
        1
    );
    let bad_key = upload(
        &app,
        &tenant.token,
        "/v1/imports",
        "text/csv",
        b"x".to_vec(),
        &[("idempotency-key", "")],
    )
    .await;
    bad_key.assert_problem(400, "InvalidIdempotencyKey");
}

#[tokio::test]
async fn a_dry_run_reports_every_row_and_registers_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let existing = app
        .register(&tenant, &hash("DRY-0", false, 0), json!({}))
        .await;
    let text = format!(
        "{HEADER}\nDRY-1,,{}\nDRY-2,,{}\nDRY-0,,{}\nDRY-1,,{}\nBAD,,AAAA\n",
        hash("DRY-1", false, 0),
        hash("DRY-2", true, 0),
        hash("DRY-0", false, 1),
        hash("DRY-1", false, 1),
    );
    let claims_before = app.count("SELECT count(*) FROM identity_claims").await;
    let r = upload(
        &app,
        &tenant.token,
        "/v1/imports?dryRun=true",
        "text/csv",
        text.into_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["dryRun"], true);
    let location = r.header("location").unwrap().to_owned();
    let job = wait_job(&app, &tenant.token, &location).await;
    let items = all_items(&app, &tenant.token, &location).await;
    assert_eq!(job["status"], "partial");
    assert_eq!(
        (
            job["total"].as_i64(),
            job["succeeded"].as_i64(),
            job["failed"].as_i64()
        ),
        (Some(5), Some(2), Some(3))
    );
    assert_eq!(by_row(&items, 2)["status"], "complete");
    assert!(by_row(&items, 2)["deviceId"].is_null());
    assert_eq!(by_row(&items, 3)["status"], "complete");
    assert_error(&items, 4, Some(806), "ZtdDeviceAlreadyAssigned");
    assert_eq!(by_row(&items, 4)["deviceId"], existing.as_str());
    assert_error(&items, 5, None, "ZtdDeviceDuplicated");
    assert_error(&items, 6, Some(802), "InvalidZtdHardwareHash");
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM identity_claims").await,
        claims_before
    );
    // The same file for real registers what the dry run said.
    let text = format!(
        "{HEADER}\nDRY-1,,{}\nDRY-2,,{}\n",
        hash("DRY-1", false, 0),
        hash("DRY-2", true, 0)
    );
    let (job, _) = import_csv(&app, &tenant, text.into_bytes()).await;
    assert_eq!(job["succeeded"], 2);
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 3);
}

async fn totals(app: &TestApp) -> i64 {
    app.count("SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM imports) + (SELECT count(*) FROM import_items) + (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM identity_claims)").await
}

fn spool_files(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.data_dir().join("imports")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "node-id")
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn bad_uploads_are_problems_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let before = totals(&app).await;
    let t = tenant.token.as_str();
    let csv = format!("{HEADER}\nX-1,,{}\n", hash("X-1", false, 0)).into_bytes();

    // Neither CSV nor JSON; no content type; compressed.
    for content_type in [
        Some("application/xml"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let r = app
            .send_bytes(
                Method::POST,
                "/v1/imports",
                Some(t),
                content_type,
                csv.clone(),
                &[],
            )
            .await;
        r.assert_problem(415, "UnsupportedMediaType");
    }
    upload(
        &app,
        t,
        "/v1/imports",
        "text/csv",
        csv.clone(),
        &[("content-encoding", "gzip")],
    )
    .await
    .assert_problem(415, "UnsupportedMediaType");

    // Files that are not registration CSVs: one clear error, at upload.
    for not_csv in [
        b"name,age\nbob,42\n".to_vec(),
        b"".to_vec(),
        b"%PDF-1.7\n\x00\x01\x02".to_vec(),
        b"\n\n\n".to_vec(),
    ] {
        let r = upload(&app, t, "/v1/imports", "text/csv", not_csv, &[]).await;
        r.assert_problem(422, "NotARegistrationCsv");
        assert!(
            r.body["detail"].as_str().unwrap().contains("Hardware Hash"),
            "{}",
            r.text
        );
    }
    // JSON that is not a batch.
    for not_batch in [
        &b"{\"devices\": [1,"[..],
        b"[]",
        b"{\"devices\": {}}",
        b"{\"items\": []}",
    ] {
        upload(
            &app,
            t,
            "/v1/imports",
            "application/json",
            not_batch.to_vec(),
            &[],
        )
        .await
        .assert_problem(400, "InvalidBody");
    }
    // More rows than allowed: refused while the upload streams.
    let mut many = format!("{HEADER}\n").into_bytes();
    many.extend(b"S,,\n".repeat(250_001));
    let r = upload(&app, t, "/v1/imports", "text/csv", many, &[]).await;
    r.assert_problem(413, "PayloadTooLarge");
    assert_eq!(r.body["maxRows"], 250_000);
    let mut many_json = b"{\"devices\":[".to_vec();
    many_json.extend(b"{},".repeat(250_000));
    many_json.extend(b"{}]}");
    upload(&app, t, "/v1/imports", "application/json", many_json, &[])
        .await
        .assert_problem(413, "PayloadTooLarge");
    // A declared size over 1 GiB is refused before a byte of the body is read.
    let too_big = raw_post(&app, t, "/v1/imports", 1_073_741_825).await;
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
    assert!(too_big.contains("PayloadTooLarge"), "{too_big}");
    // Bad parameters and scopes.
    upload(
        &app,
        t,
        "/v1/imports?dryRun=maybe",
        "text/csv",
        csv.clone(),
        &[],
    )
    .await
    .assert_problem(400, "InvalidQueryParameter");
    let reader = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("imports.read"),
        )
        .await;
    upload(&app, &reader, "/v1/imports", "text/csv", csv.clone(), &[])
        .await
        .assert_problem(403, "InsufficientScope");
    app.call(Method::POST, "/v1/imports", None, None)
        .await
        .assert_problem(401, "Unauthorized");

    assert_eq!(totals(&app).await, before);
    assert!(spool_files(&app).is_empty(), "{:?}", spool_files(&app));
}

/// A POST with a declared Content-Length and no body, on a raw socket: the answer.
async fn raw_post(app: &TestApp, token: &str, path: &str, length: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: text/csv\r\nContent-Length: {length}\r\n\r\nDevice Serial Number",
        app.address
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .expect("an answer before the body")
            .unwrap();
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
            return text.into_owned();
        }
    }
}

#[tokio::test]
async fn items_paginate_scopes_apply_and_tenants_are_apart() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let mut text = format!("{HEADER}\n");
    for i in 0..5 {
        text.push_str(&format!("PG-{i},,{}\n", hash(&format!("PG-{i}"), false, 0)));
    }
    text.push_str("BAD,,AAAA\n");
    let (job, _) = import_csv(&app, &tenant, text.into_bytes()).await;
    let location = format!("/v1/imports/{}", job["id"].as_str().unwrap());
    let mut seen = Vec::new();
    let mut path = format!("{location}/items?limit=2");
    loop {
        let page = app.get(&path, &tenant.token).await;
        assert_eq!(page.status, 200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["row"].as_i64().unwrap()));
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("{location}/items?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [2, 3, 4, 5, 6, 7]);
    let clamped = app
        .get(&format!("{location}/items?limit=100000"), &tenant.token)
        .await;
    assert_eq!(clamped.status, 200);
    assert_eq!(clamped.body["items"].as_array().unwrap().len(), 6);
    let errors = app
        .get(&format!("{location}/items?status=error"), &tenant.token)
        .await;
    assert_eq!(errors.body["items"].as_array().unwrap().len(), 1);
    app.get(&format!("{location}/items?status=weird"), &tenant.token)
        .await
        .assert_problem(400, "InvalidQueryParameter");
    app.get(&format!("{location}/items?cursor=%%%"), &tenant.token)
        .await
        .assert_problem(400, "InvalidCursor");
    let list = app.get("/v1/imports", &tenant.token).await;
    assert_eq!(list.body["items"][0]["id"], job["id"]);

    // Reading needs imports.read; writing alone does not give it.
    let writer = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("imports.write"),
        )
        .await;
    app.get(&location, &writer)
        .await
        .assert_problem(403, "InsufficientScope");
    let reader = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("imports.read"),
        )
        .await;
    assert_eq!(app.get(&location, &reader).await.status, 200);

    // Another tenant sees nothing of it.
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    app.get(&location, &fabrikam.token)
        .await
        .assert_problem(404, "NotFound");
    app.get(&format!("{location}/items"), &fabrikam.token)
        .await
        .assert_problem(404, "NotFound");
    assert!(
        app.get("/v1/imports", &fabrikam.token).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.get("/v1/imports/not-a-uuid", &tenant.token)
        .await
        .assert_problem(400, "InvalidPathParameter");
}

/// A file of `count` machines `PREFIX-<i>` starting at `from`.
fn machines(prefix: &str, from: usize, count: usize) -> String {
    let mut text = format!("{HEADER}\r\n");
    for i in from..from + count {
        let serial = format!("{prefix}-{i}");
        text.push_str(&format!("{serial},,{}\r\n", hash(&serial, i % 3 == 0, 0)));
    }
    text
}

#[tokio::test]
async fn concurrent_imports_claim_each_machine_once() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    // Two uploads into one tenant that share 1,500 machines, and one into another tenant
    // that shares 1,500 more, all at once.
    let a = machines("CC", 0, 3_000);
    let b = machines("CC", 1_500, 3_000);
    let c = machines("CC", 3_000, 3_000);
    let (ra, rb, rc) = tokio::join!(
        upload(
            &app,
            &contoso.token,
            "/v1/imports",
            "text/csv",
            encode(&a, Enc::Utf16Le),
            &[]
        ),
        upload(
            &app,
            &contoso.token,
            "/v1/imports",
            "text/csv",
            b.into_bytes(),
            &[]
        ),
        upload(
            &app,
            &fabrikam.token,
            "/v1/imports",
            "text/csv",
            c.into_bytes(),
            &[]
        ),
    );
    for r in [&ra, &rb, &rc] {
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let (la, lb, lc) = (
        ra.header("location").unwrap().to_owned(),
        rb.header("location").unwrap().to_owned(),
        rc.header("location").unwrap().to_owned(),
    );
    let (ja, jb, jc) = tokio::join!(
        wait_job(&app, &contoso.token, &la),
        wait_job(&app, &contoso.token, &lb),
        wait_job(&app, &fabrikam.token, &lc),
    );
    let (ia, ib, ic) = tokio::join!(
        all_items(&app, &contoso.token, &la),
        all_items(&app, &contoso.token, &lb),
        all_items(&app, &fabrikam.token, &lc),
    );
    for (job, items) in [(&ja, &ia), (&jb, &ib), (&jc, &ic)] {
        assert_eq!(job["total"], 3_000);
        assert_eq!(items.len(), 3_000);
        assert_eq!(
            job["succeeded"].as_i64().unwrap() + job["failed"].as_i64().unwrap(),
            3_000
        );
    }
    // 6,000 machines in all; each registered exactly once, in one tenant.
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 6_000);
    assert_eq!(
        app.count("SELECT count(DISTINCT serial_number) FROM devices")
            .await,
        6_000
    );
    assert_eq!(
        app.count("SELECT count(*) FROM identity_claims WHERE kind = 'tuple'")
            .await,
        6_000
    );
    assert_eq!(
        app.count("SELECT count(*) FROM identity_claims WHERE kind = 'tpm'")
            .await,
        2_000
    );
    let successes = [&ia, &ib, &ic]
        .iter()
        .flat_map(|items| items.iter())
        .filter(|i| i["status"] == "complete")
        .count();
    assert_eq!(successes, 6_000);
    // Every machine of both contoso files that was not registered by one is 806 in the other,
    // naming the device the other registered; fabrikam's overlap is 808 on one side.
    let mut device_of = std::collections::HashMap::new();
    for item in ia.iter().chain(&ib).chain(&ic) {
        if item["status"] == "complete" {
            let old = device_of.insert(
                item["serialNumber"].as_str().unwrap().to_owned(),
                item["deviceId"].clone(),
            );
            assert!(old.is_none(), "registered twice: {item}");
        }
    }
    for item in ia.iter().chain(&ib).chain(&ic) {
        if item["status"] == "error" {
            let name = item["errorName"].as_str().unwrap();
            assert!(
                name == "ZtdDeviceAlreadyAssigned" || name == "ZtdDeviceAssignedToOtherTenant",
                "{item}"
            );
            if name == "ZtdDeviceAlreadyAssigned" {
                assert_eq!(
                    item["deviceId"],
                    device_of[item["serialNumber"].as_str().unwrap()]
                );
            }
        }
    }
    let failed: i64 = [&ja, &jb, &jc]
        .iter()
        .map(|j| j["failed"].as_i64().unwrap())
        .sum();
    assert_eq!(failed, 3_000);
}
