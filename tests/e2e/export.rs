//! The export of devices with their hashes: both formats, the filters, the audit entry.

use serde_json::json;
use unbox_domain::hardware_hash::{OsType, decode};
use unbox_domain::identity::Identity;
use unbox_tests::{TestApp, TestTenant, hash};

use crate::imports::import_csv;

const EXPORT_HEADER: &str =
    "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User";

async fn export(app: &TestApp, tenant: &TestTenant, query: &str) -> unbox_tests::Answer {
    app.get(&format!("/v1/devices/export?{query}"), &tenant.token)
        .await
}

/// Splits a CSV body the way its writer wrote it: CRLF lines, RFC 4180 quotes.
fn parse(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "the body ends with CRLF"
    );
    rows
}

async fn setup(app: &TestApp) -> (TestTenant, String, String) {
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    app.register(
        &tenant,
        &hash("EXP-1", true, 0),
        json!({"groupTag": "Sales", "userPrincipalName": "ann@contoso.com", "productKey": "12345"}),
    )
    .await;
    app.register(
        &tenant,
        &hash("EXP-2", false, 0),
        json!({"groupTag": "Vente, Société"}),
    )
    .await;
    app.register(
        &tenant,
        &hash("EXP-3", false, 0),
        json!({"groupTag": "Sales"}),
    )
    .await;
    // A Linux machine registered by its identity: no hash on record.
    let identity = json!({"manufacturer": "LENOVO", "model": "20XW", "serialNumber": "LNX-EXP",
        "smbiosUuid": "4c4c4544-0042-3510-8052-b2c04f4e3732", "macAddresses": ["AA-BB-CC-DD-EE-01"],
        "tpmEkSha256": "ab".repeat(32)});
    let linux = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"identity": identity, "groupTag": "Sales"}),
        )
        .await;
    assert_eq!(linux.status, 201, "{}", linux.text);
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT identity FROM devices WHERE serial_number = 'LNX-EXP'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    (
        tenant,
        linux.body["id"].as_str().unwrap().to_owned(),
        stored.to_string(),
    )
}

#[tokio::test]
async fn csv_export_writes_every_device_with_its_hash_and_is_audited() {
    let app = TestApp::spawn().await;
    let (tenant, _, stored_identity) = setup(&app).await;
    let r = export(&app, &tenant, "format=csv").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        r.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(r.header("unbox-row-count"), Some("4"));
    assert_eq!(r.header("unbox-skipped-rows"), Some("0"));
    let rows = parse(&r.text);
    assert_eq!(rows[0].join(","), EXPORT_HEADER);
    assert!(r.text.starts_with(EXPORT_HEADER));
    assert_eq!(rows.len(), 5);
    let by_serial = |serial: &str| rows.iter().find(|r| r[0] == serial).unwrap().clone();
    assert_eq!(
        by_serial("EXP-1"),
        [
            "EXP-1",
            "12345",
            hash("EXP-1", true, 0).as_str(),
            "Sales",
            "ann@contoso.com"
        ]
    );
    // Quoted where needed, UTF-8 kept.
    assert_eq!(by_serial("EXP-2")[3], "Vente, Société");
    assert!(r.text.contains("\"Vente, Société\""));
    // The Linux identity's Unbox-made hash decodes to the stored identity.
    let linux = by_serial("LNX-EXP");
    let decoded = decode(&linux[2]).unwrap();
    assert_eq!(decoded.os_type(), OsType::Linux);
    let stored: Identity = serde_json::from_str(&stored_identity).unwrap();
    assert_eq!(Identity::from_hash(&decoded), stored);

    // The export is in the audit log, with its filter and row count.
    let log = app.get("/v1/audit-log", &tenant.token).await;
    let entry = &log.body["items"][0];
    assert_eq!(entry["action"], "device.export");
    assert_eq!(entry["actorKind"], "client");
    assert_eq!(entry["after"]["format"], "csv");
    assert_eq!(entry["after"]["rowCount"], 4);
    assert_eq!(entry["after"]["skippedRows"], 0);

    // Filters are the list's.
    let sales = export(&app, &tenant, "format=csv&groupTag=sales").await;
    assert_eq!(sales.header("unbox-row-count"), Some("3"));
    assert_eq!(parse(&sales.text).len(), 4);
    let log = app.get("/v1/audit-log", &tenant.token).await;
    assert_eq!(log.body["items"][0]["after"]["filter"]["groupTag"], "sales");
    assert_eq!(log.body["items"][0]["after"]["rowCount"], 3);
    let one = export(&app, &tenant, "serialNumber=exp-3").await;
    assert_eq!(parse(&one.text).len(), 2, "csv is the default format");

    // The file imports again: deregister everything, import the export.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM devices")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for id in ids {
        assert_eq!(
            app.delete(&format!("/v1/devices/{id}"), &tenant.token)
                .await
                .status,
            204
        );
    }
    let (job, items) = import_csv(&app, &tenant, r.text.clone().into_bytes()).await;
    assert_eq!(job["status"], "complete", "{items:?}");
    assert_eq!(job["succeeded"], 4);
    let tags: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT serial_number, group_tag, os_type FROM devices ORDER BY serial_number",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        tags[1],
        (
            "EXP-2".to_owned(),
            Some("Vente, Société".to_owned()),
            "Windows".to_owned()
        )
    );
    assert_eq!(
        tags[3],
        (
            "LNX-EXP".to_owned(),
            Some("Sales".to_owned()),
            "Linux".to_owned()
        )
    );
}

#[tokio::test]
async fn intune_csv_is_ascii_without_quotes_and_counts_what_it_leaves_out() {
    let app = TestApp::spawn().await;
    let (tenant, _, _) = setup(&app).await;
    app.register(
        &tenant,
        &hash("EXP-4", false, 0),
        json!({"userPrincipalName": "zoë@contoso.com"}),
    )
    .await;
    let r = export(&app, &tenant, "format=intune-csv").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=us-ascii"));
    assert_eq!(r.header("unbox-skipped-rows"), Some("2"));
    assert_eq!(r.header("unbox-row-count"), Some("3"));
    assert!(r.text.is_ascii());
    assert!(!r.text.contains('"'));
    let lines: Vec<&str> = r.text.split("\r\n").collect();
    assert_eq!(lines[0], EXPORT_HEADER);
    assert_eq!(lines.len(), 5, "header, three rows, and the final CRLF");
    assert_eq!(lines[4], "");
    for line in &lines[1..4] {
        assert_eq!(line.split(',').count(), 5, "{line}");
    }
    let serials: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert!(!serials.contains(&"EXP-2") && !serials.contains(&"EXP-4"));
    let log = app.get("/v1/audit-log", &tenant.token).await;
    let entry = &log.body["items"][0];
    assert_eq!(entry["action"], "device.export");
    assert_eq!(entry["after"]["format"], "intune-csv");
    assert_eq!(entry["after"]["rowCount"], 3);
    assert_eq!(entry["after"]["skippedRows"], 2);
}

#[tokio::test]
async fn the_export_needs_its_scope_and_a_known_format() {
    let app = TestApp::spawn().await;
    let (tenant, _, _) = setup(&app).await;
    let audit_before = app.count("SELECT count(*) FROM audit_log").await;
    let reader = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("devices.read"),
        )
        .await;
    app.get("/v1/devices/export?format=csv", &reader)
        .await
        .assert_problem(403, "InsufficientScope");
    export(&app, &tenant, "format=xlsx")
        .await
        .assert_problem(400, "InvalidQueryParameter");
    export(&app, &tenant, "profileStatus=sometimes")
        .await
        .assert_problem(400, "InvalidQueryParameter");
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log").await,
        audit_before
    );
    // Another tenant exports only its own devices (none).
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let theirs = export(&app, &fabrikam, "format=csv").await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.text, format!("{EXPORT_HEADER}\r\n"));
    assert_eq!(theirs.header("unbox-row-count"), Some("0"));
}
