//! Profiles, static groups, assignments and which profile wins.

use serde_json::json;
use unbox_tests::{TestApp, TestTenant, hash};

async fn group_with(app: &TestApp, tenant: &TestTenant, name: &str, devices: &[&str]) -> String {
    let g = app
        .post("/v1/groups", &tenant.token, json!({"displayName": name}))
        .await;
    assert_eq!(g.status, 201, "{}", g.text);
    let id = g.body["id"].as_str().unwrap().to_owned();
    if !devices.is_empty() {
        let r = app
            .post(
                &format!("/v1/groups/{id}/members"),
                &tenant.token,
                json!({"deviceIds": devices}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    id
}

async fn served(app: &TestApp, machine: &str) -> Option<String> {
    let r = app.device_profile(machine).await;
    (r.status == 200).then(|| {
        r.body["profile"]["DeploymentProfileName"]
            .as_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test]
async fn resolution_follows_tiers_age_and_exclusions_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let machine = hash("RES-1", true, 0);
    let device = app.register(&tenant, &machine, json!({})).await;
    let sales = group_with(&app, &tenant, "Sales", &[&device]).await;
    let lab = group_with(&app, &tenant, "Lab", &[]).await;

    let default = app
        .create_profile(&tenant, json!({"displayName": "Default"}))
        .await;
    let older = app
        .create_profile(&tenant, json!({"displayName": "Older"}))
        .await;
    let newer = app
        .create_profile(&tenant, json!({"displayName": "Newer"}))
        .await;

    assert_eq!(served(&app, &machine).await, None);
    app.assign(&tenant, &default, json!({"kind": "allDevices"}), "include")
        .await;
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Default"));
    app.assign(
        &tenant,
        &newer,
        json!({"kind": "group", "groupId": sales}),
        "include",
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Newer"),
        "the group tier beats all devices"
    );
    app.assign(
        &tenant,
        &older,
        json!({"kind": "group", "groupId": sales}),
        "include",
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Older"),
        "oldest-created wins within a tier"
    );
    let exclusion = app
        .assign(
            &tenant,
            &older,
            json!({"kind": "group", "groupId": sales}),
            "exclude",
        )
        .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Newer"),
        "exclusion removes a profile"
    );
    app.assign(
        &tenant,
        &default,
        json!({"kind": "device", "deviceId": device}),
        "exclude",
    )
    .await;
    app.assign(
        &tenant,
        &newer,
        json!({"kind": "group", "groupId": sales}),
        "exclude",
    )
    .await;
    assert_eq!(
        served(&app, &machine).await,
        None,
        "exclusions apply to the all-devices tier too"
    );

    let explained = app
        .get(&format!("/v1/devices/{device}/assignment"), &tenant.token)
        .await;
    assert_eq!(explained.status, 200);
    assert!(explained.body["winner"].is_null());
    assert_eq!(explained.body["groups"][0]["groupName"], "Sales");
    assert_eq!(
        explained.body["groups"][0]["reason"]["kind"],
        "staticMember"
    );
    let outcomes: Vec<&str> = explained.body["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["excluded", "excluded", "excluded"]);

    // Removing the exclusion, deleting a group, removing a member: each shows on the next request.
    let exclusion_id = exclusion.body["id"].as_str().unwrap();
    let removed = app
        .delete(
            &format!("/v1/profiles/{older}/assignments/{exclusion_id}"),
            &tenant.token,
        )
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Older"));
    let explained = app
        .get(&format!("/v1/devices/{device}/assignment"), &tenant.token)
        .await;
    assert_eq!(explained.body["winner"]["profileName"], "Older");
    assert_eq!(explained.body["winner"]["tier"], "group");
    let left = app
        .delete(
            &format!("/v1/groups/{sales}/members/{device}"),
            &tenant.token,
        )
        .await;
    assert_eq!(left.status, 204);
    assert_eq!(served(&app, &machine).await, None);
    app.post(
        &format!("/v1/groups/{lab}/members"),
        &tenant.token,
        json!({"deviceIds": [device]}),
    )
    .await;
    app.assign(
        &tenant,
        &newer,
        json!({"kind": "group", "groupId": lab}),
        "include",
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Newer"),
        "Sales' exclusion no longer applies once the device left it"
    );
}

#[tokio::test]
async fn profile_fields_round_trip_and_patch_merges() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let full = json!({
        "displayName": "Hybrid laptops",
        "description": "Joined on premises",
        "deploymentMode": "preProvisioned",
        "joinType": "hybrid",
        "hybridSkipConnectivityCheck": true,
        "locale": "en-GB",
        "oobe": {"hideEula": true, "hidePrivacySettings": true, "hideChangeAccountOptions": true, "userType": "standard", "skipKeyboardSelection": true},
        "preprovisioningAllowed": true,
        "enrollmentStatusPage": {"enabled": true, "timeoutMinutes": 120, "allowRetry": true, "allowReset": true, "allowUseOnFailure": false, "customErrorMessage": "Call IT"},
        "domainJoin": {"domainName": "corp.contoso.com", "organizationalUnit": "OU=Laptops,DC=corp,DC=contoso,DC=com", "computerNamePrefix": "CORP-"}
    });
    let created = app.post("/v1/profiles", &tenant.token, full.clone()).await;
    assert_eq!(created.status, 201, "{}", created.text);
    for (key, value) in full.as_object().unwrap() {
        assert_eq!(&created.body[key], value, "{key}");
    }
    let id = created.body["id"].as_str().unwrap();
    let patched = app
        .patch(
            &format!("/v1/profiles/{id}"),
            &tenant.token,
            json!({"oobe": {"userType": "administrator"}, "description": null}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["oobe"]["userType"], "administrator");
    assert_eq!(
        patched.body["oobe"]["hideEula"], true,
        "merge keeps siblings"
    );
    assert!(patched.body["description"].is_null());

    let machine = hash("HYB-1", false, 0);
    app.register(&tenant, &machine, json!({})).await;
    app.assign(&tenant, id, json!({"kind": "allDevices"}), "include")
        .await;
    let got = app.device_profile(&machine).await;
    let doc = &got.body["profile"];
    assert_eq!(doc["CloudAssignedDomainJoinMethod"], 1);
    assert_eq!(doc["HybridJoinSkipDCConnectivityCheck"], 1);
    assert!(doc.get("CloudAssignedDeviceName").is_none());
    assert_eq!(doc["CloudAssignedOobeConfig"], 4 + 8 + 16 + 256 + 1024);
    assert_eq!(doc["CloudAssignedLanguage"], "en-GB");
    assert_eq!(doc["CloudAssignedForcedEnrollment"], 1);
    assert_eq!(got.body["domainJoin"]["computerNamePrefix"], "CORP-");

    let invalid = app
        .patch(
            &format!("/v1/profiles/{id}"),
            &tenant.token,
            json!({"deviceNameTemplate": "X-%SERIAL%"}),
        )
        .await;
    invalid.assert_problem(422, "ValidationFailed");
}

#[tokio::test]
async fn a_tenant_holds_at_most_350_profiles() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    sqlx::query(
        "INSERT INTO profiles (tenant_id, id, display_name, settings)
         SELECT $1::uuid, gen_random_uuid(), 'P' || n, jsonb_build_object('displayName', 'P' || n)
         FROM generate_series(1, 349) AS n",
    )
    .bind(uuid::Uuid::parse_str(&tenant.id).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    app.create_profile(&tenant, json!({"displayName": "the 350th"}))
        .await;
    let refused = app
        .post(
            "/v1/profiles",
            &tenant.token,
            json!({"displayName": "the 351st"}),
        )
        .await;
    refused.assert_problem(422, "ProfileLimitReached");
    assert_eq!(app.count("SELECT count(*) FROM profiles").await, 350);
}

#[tokio::test]
async fn static_groups_hold_members_and_report_them() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let a = app
        .register(&tenant, &hash("GRP-A", false, 0), json!({}))
        .await;
    let b = app
        .register(&tenant, &hash("GRP-B", false, 0), json!({}))
        .await;
    let group = group_with(&app, &tenant, "Pilot", &[&a, &b, &a]).await;
    let shown = app.get(&format!("/v1/groups/{group}"), &tenant.token).await;
    assert_eq!(shown.body["membershipType"], "static");
    assert_eq!(shown.body["processingStatus"]["memberCount"], 2);
    let members = app
        .get(&format!("/v1/groups/{group}/members"), &tenant.token)
        .await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 2);
    let unknown = app
        .post(
            &format!("/v1/groups/{group}/members"),
            &tenant.token,
            json!({"deviceIds": [uuid::Uuid::new_v4()]}),
        )
        .await;
    unknown.assert_problem(422, "ValidationFailed");
    let renamed = app
        .patch(
            &format!("/v1/groups/{group}"),
            &tenant.token,
            json!({"displayName": "Pilot 2"}),
        )
        .await;
    assert_eq!(renamed.body["displayName"], "Pilot 2");
    // Deleting a device removes it from its groups.
    app.delete(&format!("/v1/devices/{a}"), &tenant.token).await;
    assert_eq!(
        app.get(&format!("/v1/groups/{group}"), &tenant.token)
            .await
            .body["processingStatus"]["memberCount"],
        1
    );
    assert_eq!(
        app.delete(&format!("/v1/groups/{group}"), &tenant.token)
            .await
            .status,
        204
    );
    assert_eq!(app.count("SELECT count(*) FROM group_members").await, 0);
}
