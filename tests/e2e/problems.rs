//! Bad input gets a problem document with a stable code, and changes nothing.

use reqwest::Method;
use serde_json::json;
use unbox_server::state::Settings;
use unbox_tests::TestApp;

async fn totals(app: &TestApp) -> i64 {
    app.count("SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM profiles) + (SELECT count(*) FROM groups) + (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM profile_assignments)").await
}

#[tokio::test]
async fn malformed_requests_are_problems_and_change_nothing() {
    let app = TestApp::spawn_with(Settings {
        max_json_body: 64 * 1024,
        ..Settings::default()
    })
    .await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let before = totals(&app).await;
    let t = Some(tenant.token.as_str());

    // Bad JSON, wrong types, unknown fields.
    let raw = app
        .client
        .post(format!("{}/v1/devices", app.base))
        .bearer_auth(&tenant.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(raw.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["code"], "InvalidBody");
    app.call(
        Method::POST,
        "/v1/profiles",
        t,
        Some(json!({"displayName": 5})),
    )
    .await
    .assert_problem(400, "InvalidBody");
    app.call(
        Method::POST,
        "/v1/profiles",
        t,
        Some(json!({"displayName": "x", "colour": "red"})),
    )
    .await
    .assert_problem(400, "InvalidBody");
    let no_type = app
        .client
        .post(format!("{}/v1/profiles", app.base))
        .bearer_auth(&tenant.token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), 415);

    // Invalid values name their fields.
    let invalid = app
        .call(
            Method::POST,
            "/v1/profiles",
            t,
            Some(json!({"displayName": "", "locale": "klingon"})),
        )
        .await;
    invalid.assert_problem(422, "ValidationFailed");
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["displayName", "locale"]);

    // Hashes.
    let bad_hash = app
        .call(
            Method::POST,
            "/v1/devices",
            t,
            Some(json!({"hardwareHash": "T0FGAgEA"})),
        )
        .await;
    bad_hash.assert_problem(422, "InvalidZtdHardwareHash");
    assert_eq!(bad_hash.body["errorCode"], 802);
    app.call(Method::POST, "/v1/devices", t, Some(json!({})))
        .await
        .assert_problem(422, "InvalidZtdRequestBody");

    // Unknown ids, malformed ids, unknown routes, bad cursors.
    let missing = uuid::Uuid::new_v4();
    app.call(Method::GET, &format!("/v1/devices/{missing}"), t, None)
        .await
        .assert_problem(404, "NotFound");
    app.call(Method::DELETE, &format!("/v1/profiles/{missing}"), t, None)
        .await
        .assert_problem(404, "NotFound");
    app.call(Method::GET, "/v1/devices/not-a-uuid", t, None)
        .await
        .assert_problem(400, "InvalidPathParameter");
    app.call(Method::GET, "/v1/nothing-here", t, None)
        .await
        .assert_problem(404, "RouteNotFound");
    app.call(Method::PUT, "/v1/tenant", t, None)
        .await
        .assert_problem(405, "MethodNotAllowed");
    app.call(Method::GET, "/v1/devices?cursor=%%%", t, None)
        .await
        .assert_problem(400, "InvalidCursor");
    app.call(Method::GET, "/v1/devices?limit=-1", t, None)
        .await
        .assert_problem(400, "InvalidQueryParameter");
    app.call(Method::GET, "/v1/devices?profileStatus=maybe", t, None)
        .await
        .assert_problem(400, "InvalidQueryParameter");

    // Oversize bodies.
    let huge = json!({"hardwareHash": "A".repeat(100 * 1024)});
    app.call(Method::POST, "/v1/devices", t, Some(huge))
        .await
        .assert_problem(413, "PayloadTooLarge");

    // Exclude with all devices.
    let profile = app
        .create_profile(&tenant, json!({"displayName": "P"}))
        .await;
    let before = before + 2; // the profile and its audit entry
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "exclude")
        .await
        .assert_problem(422, "ExcludeAllDevicesNotAllowed");
    app.assign(&tenant, &profile, json!({"kind": "everything"}), "include")
        .await
        .assert_problem(400, "InvalidBody");

    assert_eq!(totals(&app).await, before);
}

#[tokio::test]
async fn tokens_and_scopes_are_checked_on_every_endpoint() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let before = totals(&app).await;

    let endpoints = [
        (Method::GET, "/v1/tenant"),
        (Method::PATCH, "/v1/tenant"),
        (Method::GET, "/v1/clients"),
        (Method::POST, "/v1/clients"),
        (Method::GET, "/v1/devices"),
        (Method::POST, "/v1/devices"),
        (Method::GET, "/v1/profiles"),
        (Method::POST, "/v1/profiles"),
        (Method::GET, "/v1/groups"),
        (Method::POST, "/v1/groups"),
        (Method::GET, "/v1/audit-log"),
    ];
    for (method, path) in &endpoints {
        let none = app.call(method.clone(), path, None, Some(json!({}))).await;
        none.assert_problem(401, "Unauthorized");
        assert!(
            none.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
        app.call(method.clone(), path, Some("not.a.token"), Some(json!({})))
            .await
            .assert_problem(401, "Unauthorized");
    }
    // A token signed by a key the server does not know.
    let other = TestApp::spawn().await;
    let foreign = other.bootstrap("Other", "other.com").await;
    app.call(Method::GET, "/v1/devices", Some(&foreign.token), None)
        .await
        .assert_problem(401, "Unauthorized");

    // A token narrowed to one scope reaches that scope only.
    let narrow = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("devices.read"),
        )
        .await;
    assert_eq!(
        app.call(Method::GET, "/v1/devices", Some(&narrow), None)
            .await
            .status,
        200
    );
    for (method, path) in &endpoints {
        if *path == "/v1/devices" && *method == Method::GET {
            continue;
        }
        let r = app
            .call(method.clone(), path, Some(&narrow), Some(json!({})))
            .await;
        r.assert_problem(403, "InsufficientScope");
    }
    // Asking for a scope the client lacks, a wrong secret, an unknown grant.
    let reader = app
        .post(
            "/v1/clients",
            &tenant.token,
            json!({"displayName": "reader", "scopes": ["devices.read"]}),
        )
        .await;
    assert_eq!(reader.status, 201);
    let r = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", reader.body["id"].as_str().unwrap()),
            (
                "client_secret",
                reader.body["clientSecret"].as_str().unwrap(),
            ),
            ("scope", "devices.write"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", tenant.client_id.as_str()),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Deleting a client revokes its tokens at once.
    let reader_id = reader.body["id"].as_str().unwrap();
    let reader_token = app
        .token(
            reader_id,
            reader.body["clientSecret"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(app.get("/v1/devices", &reader_token).await.status, 200);
    assert_eq!(
        app.delete(&format!("/v1/clients/{reader_id}"), &tenant.token)
            .await
            .status,
        204
    );
    app.get("/v1/devices", &reader_token)
        .await
        .assert_problem(401, "Unauthorized");

    // Only the client's creation and deletion were written.
    assert_eq!(totals(&app).await, before + 2);
}
