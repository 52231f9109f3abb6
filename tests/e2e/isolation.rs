//! Tenant isolation on every endpoint: another tenant's resource is 404, never its data, and
//! writes through a foreign id change nothing.

use reqwest::Method;
use serde_json::json;
use unbox_tests::{TestApp, hash};

#[tokio::test]
async fn another_tenants_resources_are_404_everywhere() {
    let app = TestApp::spawn().await;
    let a = app.bootstrap("Contoso", "contoso.com").await;
    let b = app.bootstrap("Fabrikam", "fabrikam.com").await;

    let device = app.register(&a, &hash("ISO-1", false, 0), json!({})).await;
    let profile = app
        .create_profile(&a, json!({"displayName": "A profile"}))
        .await;
    let group = app
        .post("/v1/groups", &a.token, json!({"displayName": "A group"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!("/v1/groups/{group}/members"),
        &a.token,
        json!({"deviceIds": [device]}),
    )
    .await;
    let assignment = app
        .assign(
            &a,
            &profile,
            json!({"kind": "group", "groupId": group}),
            "include",
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = app
        .post(
            "/v1/clients",
            &a.token,
            json!({"displayName": "ci", "scopes": ["devices.read"]}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.count("SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM profiles) + (SELECT count(*) FROM groups) + (SELECT count(*) FROM group_members) + (SELECT count(*) FROM profile_assignments) + (SELECT count(*) FROM api_clients)").await;

    let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/v1/devices/{device}"), None),
        (
            Method::PATCH,
            format!("/v1/devices/{device}"),
            Some(json!({"groupTag": "stolen"})),
        ),
        (Method::DELETE, format!("/v1/devices/{device}"), None),
        (
            Method::GET,
            format!("/v1/devices/{device}/assignment"),
            None,
        ),
        (Method::GET, format!("/v1/profiles/{profile}"), None),
        (
            Method::PATCH,
            format!("/v1/profiles/{profile}"),
            Some(json!({"displayName": "stolen"})),
        ),
        (Method::DELETE, format!("/v1/profiles/{profile}"), None),
        (
            Method::GET,
            format!("/v1/profiles/{profile}/assignments"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/profiles/{profile}/assignments"),
            Some(json!({"target": {"kind": "allDevices"}, "mode": "include"})),
        ),
        (
            Method::DELETE,
            format!("/v1/profiles/{profile}/assignments/{assignment}"),
            None,
        ),
        (Method::GET, format!("/v1/profiles/{profile}/devices"), None),
        (
            Method::GET,
            format!("/v1/profiles/{profile}/offline-configuration"),
            None,
        ),
        (Method::GET, format!("/v1/groups/{group}"), None),
        (
            Method::PATCH,
            format!("/v1/groups/{group}"),
            Some(json!({"displayName": "stolen"})),
        ),
        (Method::DELETE, format!("/v1/groups/{group}"), None),
        (Method::GET, format!("/v1/groups/{group}/members"), None),
        (
            Method::POST,
            format!("/v1/groups/{group}/members"),
            Some(json!({"deviceIds": [device]})),
        ),
        (
            Method::DELETE,
            format!("/v1/groups/{group}/members/{device}"),
            None,
        ),
        (Method::DELETE, format!("/v1/clients/{client}"), None),
    ];
    for (method, path, body) in cases {
        let r = app.call(method.clone(), &path, Some(&b.token), body).await;
        assert_eq!(
            r.status, 404,
            "{method} {path} as another tenant: {}",
            r.text
        );
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(
            !r.text.contains("ISO-1")
                && !r.text.contains("A profile")
                && !r.text.contains("A group")
        );
    }
    // B's own resources cannot reach A's either.
    let b_profile = app
        .create_profile(&b, json!({"displayName": "B profile"}))
        .await;
    let cross = app
        .assign(
            &b,
            &b_profile,
            json!({"kind": "device", "deviceId": device}),
            "include",
        )
        .await;
    cross.assert_problem(422, "ValidationFailed");
    let cross = app
        .assign(
            &b,
            &b_profile,
            json!({"kind": "group", "groupId": group}),
            "include",
        )
        .await;
    cross.assert_problem(422, "ValidationFailed");
    let b_group = app
        .post("/v1/groups", &b.token, json!({"displayName": "B group"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cross = app
        .post(
            &format!("/v1/groups/{b_group}/members"),
            &b.token,
            json!({"deviceIds": [device]}),
        )
        .await;
    cross.assert_problem(422, "ValidationFailed");

    // Lists show only the caller's own.
    for list in ["/v1/devices", "/v1/groups", "/v1/clients", "/v1/audit-log"] {
        let r = app.get(list, &b.token).await;
        assert_eq!(r.status, 200);
        assert!(
            !r.text.contains(&device) && !r.text.contains(&group) && !r.text.contains(&client),
            "{list}: {}",
            r.text
        );
    }
    let profiles = app.get("/v1/profiles", &b.token).await;
    assert_eq!(profiles.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/v1/tenant", &b.token).await.body["domain"],
        "fabrikam.com"
    );

    let after = app.count("SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM profiles) + (SELECT count(*) FROM groups) + (SELECT count(*) FROM group_members) + (SELECT count(*) FROM profile_assignments) + (SELECT count(*) FROM api_clients)").await;
    assert_eq!(
        after,
        before + 2,
        "only B's own profile and group were added"
    );
    assert_eq!(
        app.get(&format!("/v1/devices/{device}"), &a.token)
            .await
            .body["groupTag"],
        serde_json::Value::Null
    );
}
