//! The device registry: registration, identity rules, lists, edits, deletion.

use serde_json::json;
use unbox_tests::{TestApp, hash};

#[tokio::test]
async fn the_same_machine_is_806_in_its_tenant_and_808_elsewhere() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let device = app
        .register(&contoso, &hash("SER-1", true, 0), json!({}))
        .await;

    let again = app
        .post(
            "/v1/devices",
            &contoso.token,
            json!({"hardwareHash": hash("SER-1", true, 3)}),
        )
        .await;
    again.assert_problem(409, "ZtdDeviceAlreadyAssigned");
    assert_eq!(again.body["deviceId"], device.as_str());
    assert_eq!(again.body["errorCode"], 806);

    let other = app
        .post(
            "/v1/devices",
            &fabrikam.token,
            json!({"hardwareHash": hash("SER-1", true, 0)}),
        )
        .await;
    other.assert_problem(409, "ZtdDeviceAssignedToOtherTenant");
    assert_eq!(other.body["errorCode"], 808);
    assert!(other.body.get("deviceId").is_none());
    assert!(
        !other.text.contains(&contoso.id),
        "reveals nothing about the other tenant"
    );
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 1);

    // Deleting frees the identity for any tenant.
    let deleted = app
        .delete(&format!("/v1/devices/{device}"), &contoso.token)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.count("SELECT count(*) FROM identity_claims").await, 0);
    app.register(&fabrikam, &hash("SER-1", true, 0), json!({}))
        .await;
}

#[tokio::test]
async fn a_registration_with_a_tpm_matches_only_requests_with_that_tpm() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let profile = app
        .create_profile(&tenant, json!({"displayName": "Default"}))
        .await;
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    app.register(&tenant, &hash("TPM-1", true, 0), json!({}))
        .await;
    // A forged hash with the same serial but no TPM does not get the profile.
    app.device_profile(&hash("TPM-1", false, 0))
        .await
        .assert_problem(404, "DeviceNotRegistered");
    assert_eq!(
        app.device_profile(&hash("TPM-1", true, 5)).await.status,
        200
    );
    // A registration without a TPM is matched by its tuple.
    app.register(&tenant, &hash("NOTPM-1", false, 0), json!({}))
        .await;
    assert_eq!(
        app.device_profile(&hash("NOTPM-1", false, 2)).await.status,
        200
    );
}

#[tokio::test]
async fn placeholder_serials_without_tpm_cannot_be_registered() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let r = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"hardwareHash": hash("To be filled by O.E.M.", false, 0)}),
        )
        .await;
    r.assert_problem(422, "InvalidZtdHardwareHash");
    assert!(r.body["detail"].as_str().unwrap().contains("placeholder"));
    // With a TPM the same machine is fine.
    app.register(&tenant, &hash("To be filled by O.E.M.", true, 0), json!({}))
        .await;
}

#[tokio::test]
async fn hashes_with_whitespace_and_without_padding_are_repaired() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let clean = hash("WS-1", false, 0);
    let messy: String = clean
        .trim_end_matches('=')
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            if i % 76 == 75 {
                vec![c, '\r', '\n']
            } else {
                vec![c]
            }
        })
        .collect();
    app.register(&tenant, &messy, json!({})).await;
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    for i in 0..5 {
        let tag = if i % 2 == 0 { "Sales" } else { "Lab" };
        app.register(
            &tenant,
            &hash(&format!("LIST-{i}"), false, 0),
            json!({"groupTag": tag, "userPrincipalName": format!("u{i}@contoso.com")}),
        )
        .await;
    }
    let sales = app.get("/v1/devices?groupTag=sales", &tenant.token).await;
    assert_eq!(sales.body["items"].as_array().unwrap().len(), 3);
    let by_serial = app
        .get("/v1/devices?serialNumber=list-3", &tenant.token)
        .await;
    assert_eq!(by_serial.body["items"][0]["serialNumber"], "LIST-3");
    let by_user = app
        .get(
            "/v1/devices?userPrincipalName=U4@contoso.com",
            &tenant.token,
        )
        .await;
    assert_eq!(by_user.body["items"][0]["serialNumber"], "LIST-4");
    let q = app.get("/v1/devices?q=ST-1", &tenant.token).await;
    assert_eq!(q.body["items"].as_array().unwrap().len(), 1);
    let q_wild = app.get("/v1/devices?q=%25", &tenant.token).await;
    assert_eq!(
        q_wild.body["items"].as_array().unwrap().len(),
        0,
        "% is literal in q"
    );

    let mut seen = Vec::new();
    let mut path = "/v1/devices?limit=2".to_owned();
    loop {
        let page = app.get(&path, &tenant.token).await;
        assert_eq!(page.status, 200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|d| d["serialNumber"].as_str().unwrap().to_owned()),
        );
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/v1/devices?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["LIST-0", "LIST-1", "LIST-2", "LIST-3", "LIST-4"]);
    let clamped = app.get("/v1/devices?limit=100000", &tenant.token).await;
    assert_eq!(clamped.status, 200);
    assert_eq!(clamped.body["items"].as_array().unwrap().len(), 5);

    let profile = app
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    let group = app
        .post("/v1/groups", &tenant.token, json!({"displayName": "Sales"}))
        .await;
    let group = group.body["id"].as_str().unwrap().to_owned();
    let first = sales.body["items"][0]["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/v1/groups/{group}/members"),
        &tenant.token,
        json!({"deviceIds": [first]}),
    )
    .await;
    app.assign(
        &tenant,
        &profile,
        json!({"kind": "group", "groupId": group}),
        "include",
    )
    .await;
    let assigned = app
        .get("/v1/devices?profileStatus=assignedInSync", &tenant.token)
        .await;
    assert_eq!(assigned.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        assigned.body["items"][0]["deploymentProfileId"],
        profile.as_str()
    );
    let unassigned = app
        .get("/v1/devices?profileStatus=notAssigned", &tenant.token)
        .await;
    assert_eq!(unassigned.body["items"].as_array().unwrap().len(), 4);
    let of_profile = app
        .get(&format!("/v1/profiles/{profile}/devices"), &tenant.token)
        .await;
    assert_eq!(of_profile.body["items"][0]["id"], first.as_str());
}

#[tokio::test]
async fn patch_honours_if_match_and_validates() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let id = app
        .register(
            &tenant,
            &hash("PATCH-1", false, 0),
            json!({"groupTag": "Old"}),
        )
        .await;
    let path = format!("/v1/devices/{id}");
    let read = app.get(&path, &tenant.token).await;
    let etag = read.header("etag").unwrap().to_owned();

    let ok = app
        .call_with(
            reqwest::Method::PATCH,
            &path,
            Some(&tenant.token),
            Some(
                json!({"groupTag": "New", "extensionAttributes": {"extensionAttribute3": "emea"}}),
            ),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["groupTag"], "New");
    assert_eq!(
        ok.body["extensionAttributes"]["extensionAttribute3"],
        "emea"
    );
    assert_ne!(ok.header("etag").unwrap(), etag);

    let stale = app
        .call_with(
            reqwest::Method::PATCH,
            &path,
            Some(&tenant.token),
            Some(json!({"groupTag": "Lost"})),
            &[("if-match", &etag)],
        )
        .await;
    stale.assert_problem(412, "PreconditionFailed");

    let cleared = app
        .patch(&path, &tenant.token, json!({"groupTag": null}))
        .await;
    assert!(cleared.body["groupTag"].is_null());

    let bad = app.patch(&path, &tenant.token, json!({"deviceOwnership": "Mine", "extensionAttributes": {"extensionAttribute16": "x"}, "displayName": "12345"})).await;
    bad.assert_problem(422, "ValidationFailed");
    assert_eq!(
        bad.body["errors"].as_array().unwrap().len(),
        3,
        "{}",
        bad.text
    );
    let unchanged = app.get(&path, &tenant.token).await;
    assert!(unchanged.body["groupTag"].is_null());
    assert_eq!(unchanged.body["deviceOwnership"], "Company");
}
