//! The README walkthrough, step by step: bootstrap → token → device → profile → assignment →
//! the device receives its profile.

use serde_json::json;
use unbox_tests::{TestApp, hash};

#[tokio::test]
async fn a_device_receives_its_profile() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;

    let me = app.get("/v1/tenant", &tenant.token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["domain"], "contoso.com");
    let branded = app
        .patch(
            "/v1/tenant",
            &tenant.token,
            json!({"branding": {"displayName": "Contoso IT", "signInText": "Welcome"}}),
        )
        .await;
    assert_eq!(branded.status, 200, "{}", branded.text);

    let machine = hash("7XK2Q93", true, 0);
    let device = app
        .register(&tenant, &machine, json!({"groupTag": "Sales"}))
        .await;
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert_eq!(shown.body["serialNumber"], "7XK2Q93");
    assert_eq!(
        shown.body["deploymentProfileAssignmentStatus"],
        "notAssigned"
    );
    assert!(shown.body.get("hardwareHash").is_none());

    // Before any profile: the device is known but gets nothing.
    let early = app.device_profile(&machine).await;
    early.assert_problem(404, "NoProfileAssigned");

    let profile = app
        .create_profile(
            &tenant,
            json!({
                "displayName": "Sales Autopilot",
                "deviceNameTemplate": "SALES-%SERIAL%",
                "oobe": {"hideEula": true, "hidePrivacySettings": true, "userType": "standard"},
                "enrollmentStatusPage": {"enabled": true, "timeoutMinutes": 90}
            }),
        )
        .await;
    let assigned = app
        .assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    assert_eq!(assigned.status, 201, "{}", assigned.text);

    // The very next read sees the assignment.
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert_eq!(
        shown.body["deploymentProfileAssignmentStatus"],
        "assignedInSync"
    );
    assert_eq!(shown.body["deploymentProfileId"], profile.as_str());

    // A new capture of the same machine (different base64) is the same device.
    let recaptured = hash("7XK2Q93", true, 1);
    assert_ne!(recaptured, machine);
    let got = app.device_profile(&recaptured).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let doc = &got.body["profile"];
    assert_eq!(doc["Version"], 2049);
    assert_eq!(doc["CloudAssignedTenantId"], tenant.id.as_str());
    assert_eq!(doc["CloudAssignedTenantDomain"], "contoso.com");
    assert_eq!(doc["CloudAssignedOobeConfig"], 286);
    assert_eq!(doc["CloudAssignedDomainJoinMethod"], 0);
    assert_eq!(doc["CloudAssignedDeviceName"], "SALES-7XK2Q93");
    assert_eq!(doc["ZtdRegistrationId"], device.as_str());
    assert_eq!(doc["DeploymentProfileName"], "Sales Autopilot");
    assert_eq!(doc["ZtdCorrelationId"], got.body["deployment"]["id"]);
    assert!(got.body["deployment"]["token"].as_str().unwrap().len() > 20);
    assert_eq!(got.body["branding"]["displayName"], "Contoso IT");
    assert_eq!(got.body["enrollmentStatusPage"]["timeoutMinutes"], 90);

    // A retry within the hour continues the same deployment and keeps the name.
    let again = app.device_profile(&machine).await;
    assert_eq!(again.body["deployment"]["id"], got.body["deployment"]["id"]);
    assert_eq!(
        again.body["profile"]["CloudAssignedDeviceName"],
        "SALES-7XK2Q93"
    );

    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert!(shown.body["lastContactedAt"].is_string());
    assert_eq!(shown.body["enrollmentProfileName"], "Sales Autopilot");
    assert_eq!(shown.body["assignedDeviceName"], "SALES-7XK2Q93");
    assert_eq!(app.count("SELECT count(*) FROM deployments").await, 1);

    let offline = app
        .get(
            &format!("/v1/profiles/{profile}/offline-configuration"),
            &tenant.token,
        )
        .await;
    assert_eq!(offline.status, 200);
    assert!(offline.text.is_ascii());
    assert_eq!(offline.body["CloudAssignedDeviceName"], "SALES-%SERIAL%");
    assert_eq!(offline.body["ZtdCorrelationId"], profile.as_str());

    let audit = app.get("/v1/audit-log", &tenant.token).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "assignment.create",
            "profile.create",
            "device.create",
            "tenant.update",
            "tenant.create"
        ]
    );
}

#[tokio::test]
async fn unknown_devices_get_device_not_registered() {
    let app = TestApp::spawn().await;
    app.bootstrap("Contoso", "contoso.com").await;
    let r = app.device_profile(&hash("NOBODY1", false, 0)).await;
    r.assert_problem(404, "DeviceNotRegistered");
}

#[tokio::test]
async fn device_names_stay_unique_in_a_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let profile = app
        .create_profile(
            &tenant,
            json!({"displayName": "Kiosk", "deviceNameTemplate": "KIOSK-%SERIAL%"}),
        )
        .await;
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    // Serials that differ only in characters the name cannot hold.
    let first = hash("AB_12", false, 0);
    app.register(&tenant, &first, json!({})).await;
    app.register(&tenant, &hash("AB.12", false, 0), json!({}))
        .await;
    let a = app.device_profile(&first).await;
    let b = app.device_profile(&hash("AB.12", false, 0)).await;
    assert_eq!(a.body["profile"]["CloudAssignedDeviceName"], "KIOSK-AB12");
    assert_eq!(b.body["profile"]["CloudAssignedDeviceName"], "KIOSK-AB12-2");
}
