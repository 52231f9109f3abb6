//! Deployments: opened by downloads, advanced by events under a deployment token, failed by
//! a failed event or the timeout, reported per device and across devices.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};
use unbox_server::state::Settings;
use unbox_tests::{Answer, TestApp, TestTenant, hash};
use uuid::Uuid;

async fn event(app: &TestApp, token: Option<&str>, body: Value) -> Answer {
    app.call(Method::POST, "/device/v1/events", token, Some(body))
        .await
}

async fn setup(app: &TestApp) -> TestTenant {
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let profile = app
        .create_profile(
            &tenant,
            json!({"displayName": "Standard", "enrollmentStatusPage": {"enabled": true, "timeoutMinutes": 90}}),
        )
        .await;
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    tenant
}

async fn download(app: &TestApp, machine: &str) -> (String, String) {
    let r = app.device_profile(machine).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.body["deployment"]["id"].as_str().unwrap().to_owned(),
        r.body["deployment"]["token"].as_str().unwrap().to_owned(),
    )
}

async fn db_status(app: &TestApp, deployment: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, failure_reason FROM deployments WHERE id = $1")
        .bind(Uuid::parse_str(deployment).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_advance_a_deployment_to_success_idempotently() {
    let app = TestApp::spawn().await;
    let tenant = setup(&app).await;
    let machine = hash("DEP-1", true, 0);
    let device = app.register(&tenant, &machine, json!({})).await;
    let (deployment, token) = download(&app, &machine).await;

    // Reads see the download within the second (here: at once, the read waits for the batch).
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert!(shown.body["lastContactedAt"].is_string(), "{}", shown.text);
    let (status, _) = db_status(&app, &deployment).await;
    assert_eq!(status, "inProgress");
    let timeout_minutes: i32 = sqlx::query_scalar("SELECT timeout_minutes FROM deployments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(timeout_minutes, 90, "the enrollment status page's timeout");

    let first = event(
        &app,
        Some(&token),
        json!({"phase": "profileApplied", "status": "succeeded"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["status"], "inProgress");
    assert_eq!(first.body["duplicate"], false);
    let renewed = first.body["token"].as_str().unwrap().to_owned();
    // The same event again changes nothing.
    let repeat = event(
        &app,
        Some(&renewed),
        json!({"phase": "profileApplied", "status": "succeeded", "message": "again"}),
    )
    .await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.body["duplicate"], true);
    assert_eq!(app.count("SELECT count(*) FROM deployment_events").await, 1);

    for (phase, status) in [
        ("deviceSetup", "inProgress"),
        ("deviceSetup", "succeeded"),
        ("accountSetup", "succeeded"),
    ] {
        let r = event(
            &app,
            Some(&token),
            json!({"phase": phase, "status": status, "message": format!("{phase} {status}")}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["status"], "inProgress");
    }
    let done = event(
        &app,
        Some(&token),
        json!({"phase": "completed", "status": "succeeded"}),
    )
    .await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.text);
    assert!(done.body.get("token").is_none());
    assert_eq!(db_status(&app, &deployment).await.0, "succeeded");
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert_eq!(shown.body["enrollmentState"], "enrolled");

    // After the end: a repeat is still a repeat, anything new is refused.
    let repeat = event(
        &app,
        Some(&token),
        json!({"phase": "completed", "status": "succeeded"}),
    )
    .await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.body["duplicate"], true);
    event(
        &app,
        Some(&token),
        json!({"phase": "accountSetup", "status": "failed"}),
    )
    .await
    .assert_problem(409, "DeploymentFinished");
    assert_eq!(app.count("SELECT count(*) FROM deployment_events").await, 5);

    // The timeline: newest first, events oldest first.
    let (second, _) = download(&app, &machine).await;
    assert_ne!(second, deployment, "a finished deployment is not continued");
    let timeline = app
        .get(&format!("/v1/devices/{device}/deployments"), &tenant.token)
        .await;
    assert_eq!(timeline.status, 200, "{}", timeline.text);
    let items = timeline.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], second.as_str());
    assert_eq!(items[0]["status"], "inProgress");
    assert_eq!(items[0]["events"], json!([]));
    assert_eq!(items[1]["id"], deployment.as_str());
    assert_eq!(items[1]["status"], "succeeded");
    assert_eq!(items[1]["lastPhase"], "completed");
    let phases: Vec<(&str, &str)> = items[1]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["phase"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("profileApplied", "succeeded"),
            ("deviceSetup", "inProgress"),
            ("deviceSetup", "succeeded"),
            ("accountSetup", "succeeded"),
            ("completed", "succeeded")
        ]
    );
    assert_eq!(items[1]["events"][1]["message"], "deviceSetup inProgress");
    assert_eq!(items[1]["serialNumber"], "DEP-1");

    // Another tenant's device is 404; the scope is checked.
    let other = app.bootstrap("Fabrikam", "fabrikam.com").await;
    app.get(&format!("/v1/devices/{device}/deployments"), &other.token)
        .await
        .assert_problem(404, "NotFound");
    let narrow = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("devices.read"),
        )
        .await;
    app.get("/v1/deployments", &narrow)
        .await
        .assert_problem(403, "InsufficientScope");
}

#[tokio::test]
async fn deployment_tokens_are_checked() {
    let app = TestApp::spawn().await;
    let tenant = setup(&app).await;
    let machine = hash("TOK-1", false, 0);
    let device = app.register(&tenant, &machine, json!({})).await;
    let (deployment, token) = download(&app, &machine).await;
    let body = json!({"phase": "profileApplied", "status": "inProgress"});

    event(&app, None, body.clone())
        .await
        .assert_problem(401, "InvalidDeploymentToken");
    event(&app, Some("not.a.token"), body.clone())
        .await
        .assert_problem(401, "InvalidDeploymentToken");
    // An admin token is not a deployment token (another audience).
    event(&app, Some(&tenant.token), body.clone())
        .await
        .assert_problem(401, "InvalidDeploymentToken");
    // A token signed by a key we do not know.
    let stranger = unbox_server::auth::tokens::LocalKey::load_or_generate(
        &tempfile::tempdir().unwrap().path().join("k.pem"),
    )
    .unwrap();
    let foreign = unbox_server::auth::tokens::TokenService::new(
        app.base.clone(),
        Duration::from_secs(60),
        stranger,
        None,
    );
    let ids = (
        Uuid::parse_str(&tenant.id).unwrap(),
        Uuid::parse_str(&device).unwrap(),
        Uuid::parse_str(&deployment).unwrap(),
    );
    let forged = unbox_server::routes::device_api::deployment_token(
        &foreign,
        ids.0,
        ids.1,
        ids.2,
        Utc::now() + chrono::Duration::hours(1),
    )
    .unwrap();
    event(&app, Some(&forged), body.clone())
        .await
        .assert_problem(401, "InvalidDeploymentToken");
    // An expired token, from the same signing code.
    let expired = unbox_server::routes::device_api::deployment_token(
        &app.tokens,
        ids.0,
        ids.1,
        ids.2,
        Utc::now() - chrono::Duration::minutes(5),
    )
    .unwrap();
    event(&app, Some(&expired), body.clone())
        .await
        .assert_problem(401, "InvalidDeploymentToken");
    assert_eq!(app.count("SELECT count(*) FROM deployment_events").await, 0);

    // Malformed events.
    let bad = event(
        &app,
        Some(&token),
        json!({"phase": "bogus", "status": "inProgress"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    event(
        &app,
        Some(&token),
        json!({"phase": "deviceSetup", "status": "inProgress", "message": "x".repeat(2001)}),
    )
    .await
    .assert_problem(422, "ValidationFailed");
    assert_eq!(event(&app, Some(&token), body).await.status, 200);
}

#[tokio::test]
async fn failures_and_timeouts_fail_deployments() {
    let mut settings = Settings::default();
    settings.device.sweep_interval = Duration::from_millis(100);
    let app = TestApp::spawn_with(settings).await;
    let tenant = setup(&app).await;

    // A failed status fails the deployment and the device's enrollment.
    let machine = hash("FAIL-1", false, 0);
    let failing = app.register(&tenant, &machine, json!({})).await;
    let (deployment, token) = download(&app, &machine).await;
    let r = event(
        &app,
        Some(&token),
        json!({"phase": "deviceSetup", "status": "failed", "message": "disk full"}),
    )
    .await;
    assert_eq!(r.body["status"], "failed", "{}", r.text);
    assert_eq!(
        db_status(&app, &deployment).await,
        ("failed".to_owned(), Some("event".to_owned()))
    );
    let shown = app
        .get(&format!("/v1/devices/{failing}"), &tenant.token)
        .await;
    assert_eq!(shown.body["enrollmentState"], "failed");

    // No event for longer than the timeout: reads say failed at once, the sweep writes it.
    let machine = hash("LATE-1", false, 0);
    let late = app.register(&tenant, &machine, json!({})).await;
    let (deployment, token) = download(&app, &machine).await;
    app.get(&format!("/v1/devices/{late}"), &tenant.token).await;
    // Stop the sweep from getting there first: move the deadline into the past and read.
    sqlx::query("UPDATE deployments SET timeout_at = now() - interval '1 minute' WHERE id = $1")
        .bind(Uuid::parse_str(&deployment).unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let timeline = app
        .get(&format!("/v1/devices/{late}/deployments"), &tenant.token)
        .await;
    assert_eq!(
        timeline.body["items"][0]["status"], "failed",
        "{}",
        timeline.text
    );
    assert_eq!(timeline.body["items"][0]["failureReason"], "timeout");
    // An event after the timeout is refused, even with a token that has not expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reason) = db_status(&app, &deployment).await;
        if status == "failed" {
            assert_eq!(reason.as_deref(), Some("timeout"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never failed the lapsed deployment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    event(
        &app,
        Some(&token),
        json!({"phase": "completed", "status": "succeeded"}),
    )
    .await
    .assert_problem(409, "DeploymentFinished");
    let shown = app.get(&format!("/v1/devices/{late}"), &tenant.token).await;
    assert_eq!(shown.body["enrollmentState"], "failed");

    // Pre-provisioned profiles give deployments 7 days.
    let pre = app
        .create_profile(&tenant, json!({"displayName": "Pre", "deploymentMode": "preProvisioned", "preprovisioningAllowed": true}))
        .await;
    let machine = hash("PRE-1", false, 0);
    let device = app.register(&tenant, &machine, json!({})).await;
    app.assign(
        &tenant,
        &pre,
        json!({"kind": "device", "deviceId": device}),
        "include",
    )
    .await;
    let (deployment, _) = download(&app, &machine).await;
    app.get("/v1/deployments", &tenant.token).await;
    let minutes: i32 = sqlx::query_scalar("SELECT timeout_minutes FROM deployments WHERE id = $1")
        .bind(Uuid::parse_str(&deployment).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(minutes, 7 * 24 * 60);
}

#[tokio::test]
async fn the_report_filters_counts_and_pages() {
    let app = TestApp::spawn().await;
    let tenant = setup(&app).await;
    let mut tokens = Vec::new();
    for serial in ["R-1", "R-2", "R-3", "R-4"] {
        let machine = hash(serial, false, 0);
        app.register(&tenant, &machine, json!({})).await;
        tokens.push(download(&app, &machine).await);
    }
    event(
        &app,
        Some(&tokens[0].1),
        json!({"phase": "completed", "status": "succeeded"}),
    )
    .await;
    event(
        &app,
        Some(&tokens[1].1),
        json!({"phase": "accountSetup", "status": "failed"}),
    )
    .await;
    // An admin read waits for the write batch: the deployments are in the database after it.
    app.get("/v1/deployments", &tenant.token).await;
    sqlx::query("UPDATE deployments SET timeout_at = now() - interval '1 second' WHERE id = $1")
        .bind(Uuid::parse_str(&tokens[2].0).unwrap())
        .execute(&app.pool)
        .await
        .unwrap();

    let all = app.get("/v1/deployments", &tenant.token).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        all.body["summary"],
        json!({"total": 4, "inProgress": 1, "succeeded": 1, "failed": 2})
    );
    let ids: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = tokens.iter().rev().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, newest_first);

    let failed = app
        .get("/v1/deployments?status=failed", &tenant.token)
        .await;
    assert_eq!(failed.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(failed.body["summary"]["total"], 2);
    let one = app
        .get("/v1/deployments?serialNumber=r-2", &tenant.token)
        .await;
    assert_eq!(one.body["items"][0]["id"], tokens[1].0.as_str());
    assert_eq!(one.body["items"][0]["failureReason"], "event");
    let future = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = app
        .get(&format!("/v1/deployments?since={future}"), &tenant.token)
        .await;
    assert_eq!(none.body["summary"]["total"], 0, "{}", none.text);
    let until = app
        .get(&format!("/v1/deployments?until={future}"), &tenant.token)
        .await;
    assert_eq!(until.body["summary"]["total"], 4);
    app.get("/v1/deployments?status=weird", &tenant.token)
        .await
        .assert_problem(400, "InvalidQueryParameter");

    // Cursor pagination, with the counts of the whole filter on every page.
    let mut seen = Vec::new();
    let mut path = "/v1/deployments?limit=3".to_owned();
    loop {
        let page = app.get(&path, &tenant.token).await;
        assert_eq!(page.body["summary"]["total"], 4);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/v1/deployments?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    // Another tenant sees none of them.
    let other = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let theirs = app.get("/v1/deployments", &other.token).await;
    assert_eq!(theirs.body["summary"]["total"], 0);
}

/// A re-download within the hour continues the deployment, on any instance. The batch records
/// it on the device's contact row, not the deployment row; reads and other instances see the
/// later download all the same.
#[tokio::test]
async fn re_downloads_continue_the_deployment_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside().await;
    let tenant = setup(&a).await;
    let machine = hash("DEP-CONT", true, 0);
    let device = a.register(&tenant, &machine, json!({})).await;
    let timeline = async |app: &TestApp| {
        let r = app
            .get(&format!("/v1/devices/{device}/deployments"), &tenant.token)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["items"].as_array().unwrap().clone()
    };
    let (first, token) = download(&a, &machine).await;
    let opened = timeline(&a).await;
    let at = |item: &Value| {
        chrono::DateTime::parse_from_rfc3339(item["lastDownloadAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let first_download = at(&opened[0]);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (again, same_token) = download(&a, &machine).await;
    assert_eq!(again, first, "continued");
    assert_eq!(same_token, token, "a retry is no event: the same token");
    let items = timeline(&a).await;
    assert_eq!(items.len(), 1);
    let moved = at(&items[0]);
    assert!(moved > first_download, "{moved} after {first_download}");
    // The deployment row keeps its opening download; the contact row holds the later one.
    let (row, contact): (chrono::DateTime<Utc>, Option<Uuid>) = sqlx::query_as(
        "SELECT x.last_download_at, c.last_download_deployment_id
         FROM deployments x JOIN device_contacts c USING (tenant_id, device_id)",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!(row, first_download);
    assert_eq!(contact, Some(Uuid::parse_str(&first).unwrap()));

    // Another instance, which never saw the device, continues it too.
    let (on_b, _) = download(&b, &machine).await;
    assert_eq!(on_b, first);
    // B writes its batch within the second; A's reads then show B's download.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let items = timeline(&a).await;
        assert_eq!(items.len(), 1, "{items:?}");
        if at(&items[0]) > moved {
            break;
        }
        assert!(Instant::now() < deadline, "B's download never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.count("SELECT count(*) FROM deployments WHERE status = 'inProgress'")
            .await,
        1
    );
}

/// One batch holds downloads of devices that have a contact row (updated in place), that have
/// none yet (inserted) and that were deleted meanwhile (skipped); the later download wins
/// whichever order batches come in, and whether the update alone wrote the batch or the
/// upsert that follows it when some rows were missing.
#[tokio::test]
async fn a_batch_updates_inserts_and_skips_contact_rows() {
    use unbox_db::deployments::{Download, DownloadDeployment, flush_downloads};

    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let first: Uuid = app
        .register(&tenant, &hash("CONTACT-1", true, 1), json!({}))
        .await
        .parse()
        .unwrap();
    let second: Uuid = app
        .register(&tenant, &hash("CONTACT-2", true, 1), json!({}))
        .await
        .parse()
        .unwrap();
    let tenant_id: Uuid = tenant.id.parse().unwrap();
    // Whole microseconds, as PostgreSQL keeps them.
    let t0 = chrono::DateTime::from_timestamp_micros(
        (Utc::now() - chrono::Duration::minutes(10)).timestamp_micros(),
    )
    .unwrap();
    let download = |device_id: Uuid, minutes: i64, deployment: Uuid| Download {
        tenant_id,
        device_id,
        at: t0 + chrono::Duration::minutes(minutes),
        os_type: "Windows".to_owned(),
        profile_name: None,
        facts_changed: false,
        deployment: Some(DownloadDeployment {
            id: deployment,
            new: false,
            profile_id: Uuid::new_v4(),
            opened_at: t0,
            timeout_at: t0 + chrono::Duration::hours(2),
            timeout_minutes: 120,
        }),
    };
    let flush = async |batch: &[Download]| {
        let mut tx = app.pool.begin().await.unwrap();
        flush_downloads(&mut tx, batch).await.unwrap();
        tx.commit().await.unwrap();
    };
    let contact = async |device_id: Uuid| {
        sqlx::query_as::<_, (chrono::DateTime<Utc>, Option<Uuid>)>(
            "SELECT last_contacted_at, last_download_deployment_id FROM device_contacts
             WHERE tenant_id = $1 AND device_id = $2",
        )
        .bind(tenant_id)
        .bind(device_id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    };
    let (d1, d2, d3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let at = |minutes| t0 + chrono::Duration::minutes(minutes);

    flush(&[download(first, 1, d1)]).await;
    assert_eq!(contact(first).await, Some((at(1), Some(d1))));
    assert_eq!(contact(second).await, None);

    // The first device's row is updated, the second's inserted, the unknown device skipped;
    // then an older batch written late changes nothing, on either path.
    let ghost = Uuid::new_v4();
    let newer = [
        download(first, 5, d2),
        download(second, 4, d3),
        download(ghost, 4, d3),
    ];
    for batch in [
        &newer[..],
        &[download(first, 2, d1), download(second, 3, d1)],
    ] {
        flush(batch).await;
        assert_eq!(contact(first).await, Some((at(5), Some(d2))));
        assert_eq!(contact(second).await, Some((at(4), Some(d3))));
        assert_eq!(contact(ghost).await, None);
        assert_eq!(app.count("SELECT count(*) FROM device_contacts").await, 2);
    }

    // A batch of devices that all have a row is written by the update alone: newer downloads
    // move both rows, one without a deployment keeps the deployment of the download before.
    let mut without_deployment = download(second, 7, d1);
    without_deployment.deployment = None;
    flush(&[download(first, 6, d3), without_deployment]).await;
    assert_eq!(contact(first).await, Some((at(6), Some(d3))));
    assert_eq!(contact(second).await, Some((at(7), Some(d3))));
    assert_eq!(app.count("SELECT count(*) FROM device_contacts").await, 2);
}
