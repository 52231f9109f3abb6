//! Dynamic groups with zero assignment latency: every change shows on the very next device
//! request; the stored membership follows in the background with a visible status.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use unbox_tests::{TestApp, TestTenant, hash};

async fn dynamic_group(app: &TestApp, tenant: &TestTenant, name: &str, rule: &str) -> String {
    let r = app
        .post(
            "/v1/groups",
            &tenant.token,
            json!({"displayName": name, "membershipType": "dynamic", "membershipRule": rule}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn served(app: &TestApp, machine: &str) -> Option<String> {
    let r = app.device_profile(machine).await;
    match r.status.as_u16() {
        200 => Some(
            r.body["profile"]["DeploymentProfileName"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
        404 => None,
        _ => panic!("unexpected answer: {}", r.text),
    }
}

/// Polls until the group's stored membership is complete, and returns the group.
async fn settled(app: &TestApp, tenant: &TestTenant, group: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = app.get(&format!("/v1/groups/{group}"), &tenant.token).await;
        if g.body["processingStatus"]["status"] == "updateComplete" {
            return g.body;
        }
        assert!(
            Instant::now() < deadline,
            "membership never settled: {}",
            g.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until no re-evaluation is pending for the tenant.
async fn drained(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .count("SELECT count(*) FROM membership_dirty_devices")
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "queued devices were never re-evaluated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_change_shows_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let sales = dynamic_group(
        &app,
        &tenant,
        "Sales devices",
        r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#,
    )
    .await;
    let profile = app
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    app.assign(
        &tenant,
        &profile,
        json!({"kind": "group", "groupId": sales}),
        "include",
    )
    .await;

    // Register with a matching tag: served at once.
    let machine = hash("DYN-1", true, 0);
    let device = app
        .register(&tenant, &machine, json!({"groupTag": "Sales"}))
        .await;
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Sales"));
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert_eq!(
        shown.body["deploymentProfileId"],
        profile.as_str(),
        "the record agrees with the device call"
    );

    // Change the tag.
    app.patch(
        &format!("/v1/devices/{device}"),
        &tenant.token,
        json!({"groupTag": "Lab"}),
    )
    .await;
    assert_eq!(served(&app, &machine).await, None);
    let shown = app
        .get(&format!("/v1/devices/{device}"), &tenant.token)
        .await;
    assert_eq!(
        shown.body["deploymentProfileAssignmentStatus"],
        "notAssigned"
    );

    // Change the rule.
    let r = app
        .patch(
            &format!("/v1/groups/{sales}"),
            &tenant.token,
            json!({"membershipRule": r#"device.groupTag -in ["Sales", "Lab"]"#}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Sales"));

    // Pause the rule: the stored membership (now settled, holding the device) keeps serving,
    // even after a change that the rule would refuse.
    settled(&app, &tenant, &sales).await;
    drained(&app).await;
    let paused = app
        .patch(
            &format!("/v1/groups/{sales}"),
            &tenant.token,
            json!({"membershipRuleProcessingState": "paused"}),
        )
        .await;
    assert_eq!(paused.body["processingStatus"]["status"], "paused");
    app.patch(
        &format!("/v1/devices/{device}"),
        &tenant.token,
        json!({"groupTag": "Elsewhere"}),
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Sales"),
        "paused keeps the last stored membership"
    );
    let explained = app
        .get(&format!("/v1/devices/{device}/assignment"), &tenant.token)
        .await;
    assert_eq!(
        explained.body["groups"][0]["reason"]["kind"],
        "pausedRuleMember"
    );
    // Resumed, the rule decides again.
    app.patch(
        &format!("/v1/groups/{sales}"),
        &tenant.token,
        json!({"membershipRuleProcessingState": "on"}),
    )
    .await;
    assert_eq!(served(&app, &machine).await, None);
    app.patch(
        &format!("/v1/devices/{device}"),
        &tenant.token,
        json!({"groupTag": "Sales"}),
    )
    .await;
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Sales"));

    // Add an exclusion.
    let vip = dynamic_group(
        &app,
        &tenant,
        "VIP",
        r#"device.serialNumber -startsWith "DYN""#,
    )
    .await;
    let exclusion = app
        .assign(
            &tenant,
            &profile,
            json!({"kind": "group", "groupId": vip}),
            "exclude",
        )
        .await;
    assert_eq!(served(&app, &machine).await, None);
    // A direct assignment: the first tier, but exclusions still apply to it.
    let direct = app
        .create_profile(&tenant, json!({"displayName": "Just this one"}))
        .await;
    app.assign(
        &tenant,
        &direct,
        json!({"kind": "device", "deviceId": device}),
        "include",
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Just this one")
    );
    let explained = app
        .get(&format!("/v1/devices/{device}/assignment"), &tenant.token)
        .await;
    assert_eq!(explained.body["winner"]["tier"], "device");
    let exclusion = exclusion.body["id"].as_str().unwrap();
    app.delete(
        &format!("/v1/profiles/{profile}/assignments/{exclusion}"),
        &tenant.token,
    )
    .await;
    assert_eq!(
        served(&app, &machine).await.as_deref(),
        Some("Just this one"),
        "the device tier beats groups"
    );

    // Delete the profile, then the group.
    assert_eq!(
        app.delete(&format!("/v1/profiles/{direct}"), &tenant.token)
            .await
            .status,
        204
    );
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Sales"));
    assert_eq!(
        app.delete(&format!("/v1/groups/{sales}"), &tenant.token)
            .await
            .status,
        204
    );
    assert_eq!(served(&app, &machine).await, None);
}

#[tokio::test]
async fn stored_membership_follows_in_the_background_with_its_status() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let mut devices = Vec::new();
    for i in 0..6 {
        let tag = if i < 4 { "Sales" } else { "Lab" };
        devices.push(
            app.register(
                &tenant,
                &hash(&format!("BG-{i}"), false, 0),
                json!({"groupTag": tag}),
            )
            .await,
        );
    }
    let group = dynamic_group(&app, &tenant, "Sales", r#"device.groupTag -eq "sales""#).await;
    let body = settled(&app, &tenant, &group).await;
    assert_eq!(body["processingStatus"]["memberCount"], 4);
    assert!(body["processingStatus"]["asOf"].is_string());
    let members = app
        .get(&format!("/v1/groups/{group}/members"), &tenant.token)
        .await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 4);
    assert_eq!(members.body["processingStatus"]["status"], "updateComplete");
    assert_eq!(
        app.count("SELECT count(*) FROM dynamic_group_members")
            .await,
        4
    );

    // A device change is re-evaluated from the queue.
    app.patch(
        &format!("/v1/devices/{}", devices[5]),
        &tenant.token,
        json!({"groupTag": "Sales"}),
    )
    .await;
    drained(&app).await;
    assert_eq!(
        app.get(&format!("/v1/groups/{group}"), &tenant.token)
            .await
            .body["processingStatus"]["memberCount"],
        5
    );

    // Lists over many devices follow it, and say how fresh they are.
    let profile = app
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    app.assign(
        &tenant,
        &profile,
        json!({"kind": "group", "groupId": group}),
        "include",
    )
    .await;
    let listed = app
        .get(&format!("/v1/profiles/{profile}/devices"), &tenant.token)
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(
        listed.header("unbox-membership-status"),
        Some("updateComplete")
    );
    assert!(listed.header("unbox-membership-as-of").is_some());
    let assigned = app
        .get("/v1/devices?profileStatus=assignedInSync", &tenant.token)
        .await;
    assert_eq!(assigned.body["items"].as_array().unwrap().len(), 5);

    // A rule change recomputes it.
    app.patch(
        &format!("/v1/groups/{group}"),
        &tenant.token,
        json!({"membershipRule": r#"device.groupTag -eq "Lab""#}),
    )
    .await;
    let body = settled(&app, &tenant, &group).await;
    assert_eq!(body["processingStatus"]["memberCount"], 1);
    let members: Vec<String> = app
        .get(&format!("/v1/groups/{group}/members"), &tenant.token)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members, [devices[4].clone()]);

    // Dynamic groups refuse hand-made membership.
    let add = app
        .post(
            &format!("/v1/groups/{group}/members"),
            &tenant.token,
            json!({"deviceIds": [devices[0]]}),
        )
        .await;
    add.assert_problem(422, "DynamicGroupMembership");
    let remove = app
        .delete(
            &format!("/v1/groups/{group}/members/{}", devices[4]),
            &tenant.token,
        )
        .await;
    remove.assert_problem(422, "DynamicGroupMembership");
}

#[tokio::test]
async fn a_recompute_resumes_from_its_cursor_and_ends_right() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    for i in 0..5 {
        app.register(
            &tenant,
            &hash(&format!("RS-{i}"), false, 0),
            json!({"groupTag": "Sales"}),
        )
        .await;
    }
    let group = dynamic_group(&app, &tenant, "Sales", r#"device.groupTag -eq "Sales""#).await;
    settled(&app, &tenant, &group).await;
    // Simulate a crash mid-recompute of a new rule that matches nothing: the first device's
    // range was committed (its membership removed, the cursor moved past it, in one
    // transaction), the others still hold the old membership, and the lease has lapsed.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE groups SET membership_rule = 'device.groupTag -eq \"Nobody\"', rule_revision = rule_revision + 1,
                 membership_started_at = now(), membership_cursor = (SELECT id FROM devices ORDER BY id LIMIT 1),
                 membership_lease_until = now() - interval '1 minute'")
        .execute(&mut *tx).await.unwrap();
    sqlx::query("DELETE FROM dynamic_group_members WHERE device_id = (SELECT id FROM devices ORDER BY id LIMIT 1)")
        .execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM dynamic_group_members")
            .await,
        4
    );
    let body = settled(&app, &tenant, &group).await;
    assert_eq!(body["processingStatus"]["memberCount"], 0);
    assert_eq!(
        app.count("SELECT count(*) FROM dynamic_group_members")
            .await,
        0,
        "never wrong after completion"
    );
}

#[tokio::test]
async fn invalid_rules_are_refused_with_their_diagnostics() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let bad = app.post("/v1/groups", &tenant.token,
        json!({"displayName": "Bad", "membershipType": "dynamic", "membershipRule": "device.colour -eq \"red\""})).await;
    bad.assert_problem(422, "InvalidMembershipRule");
    assert!(
        bad.body["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Attribute not supported")
    );
    assert!(bad.body["diagnostics"][0]["start"].is_number());
    let none = app
        .post(
            "/v1/groups",
            &tenant.token,
            json!({"displayName": "None", "membershipType": "dynamic"}),
        )
        .await;
    none.assert_problem(422, "ValidationFailed");
    let group = dynamic_group(&app, &tenant, "Good", r#"device.groupTag -eq "x""#).await;
    let r = app
        .patch(
            &format!("/v1/groups/{group}"),
            &tenant.token,
            json!({"membershipRule": "device.groupTag -eq"}),
        )
        .await;
    r.assert_problem(422, "InvalidMembershipRule");
    assert_eq!(
        app.get(&format!("/v1/groups/{group}"), &tenant.token)
            .await
            .body["membershipRule"],
        r#"device.groupTag -eq "x""#
    );
    assert_eq!(app.count("SELECT count(*) FROM groups").await, 1);
}

#[tokio::test]
async fn rules_reading_the_enrollment_profile_name_warn_when_targeted() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let group = dynamic_group(
        &app,
        &tenant,
        "Had Sales",
        r#"device.enrollmentProfileName -eq "Sales""#,
    )
    .await;
    let profile = app
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    let r = app
        .assign(
            &tenant,
            &profile,
            json!({"kind": "group", "groupId": group}),
            "include",
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(
        r.body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("enrollmentProfileName")
    );

    // enrollmentProfileName is what the device last downloaded.
    let machine = hash("EPN-1", false, 0);
    let device = app.register(&tenant, &machine, json!({})).await;
    let all = app
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    app.assign(
        &tenant,
        &all,
        json!({"kind": "device", "deviceId": device}),
        "include",
    )
    .await;
    assert_eq!(served(&app, &machine).await.as_deref(), Some("Sales"));
    // Downloads are recorded in batches: visible to rules within a second.
    let downloaded = Instant::now();
    loop {
        let evaluated = app.post("/v1/groups/evaluate-dynamic-membership", &tenant.token,
            json!({"membershipRule": r#"device.enrollmentProfileName -eq "Sales""#, "deviceId": device})).await;
        if evaluated.body["membershipRuleEvaluationResult"] == true {
            break;
        }
        assert!(
            downloaded.elapsed() < Duration::from_secs(1),
            "not visible within 1 s: {}",
            evaluated.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "enrollmentProfileName visible to rules {} ms after the download",
        downloaded.elapsed().as_millis()
    );
}

#[tokio::test]
async fn rule_endpoints_validate_and_evaluate() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let ok = app
        .post(
            "/v1/groups/validate-rule",
            &tenant.token,
            json!({"membershipRule": "device.groupTag –eq \"x\""}),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["valid"], true);
    assert_eq!(
        ok.body["diagnostics"][0]["severity"], "warning",
        "the en dash warns"
    );
    let bad = app
        .post(
            "/v1/groups/validate-rule",
            &tenant.token,
            json!({"membershipRule": "device.groupTag -like \"x\""}),
        )
        .await;
    assert_eq!(bad.body["valid"], false);
    assert_eq!(bad.body["diagnostics"][0]["severity"], "error");

    let what_if = app.post("/v1/groups/evaluate-dynamic-membership", &tenant.token, json!({
        "membershipRule": r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales")) -and device.accountEnabled -eq true"#,
        "device": {"devicePhysicalIds": ["[OrderID]:Sales"], "accountEnabled": true}
    })).await;
    assert_eq!(what_if.status, 200, "{}", what_if.text);
    assert_eq!(what_if.body["membershipRuleEvaluationResult"], true);
    assert!(
        what_if.body["membershipRuleEvaluationDetails"]["expressionEvaluationDetails"].is_array()
    );

    let invalid = app
        .post(
            "/v1/groups/evaluate-dynamic-membership",
            &tenant.token,
            json!({"membershipRule": "device.nope -eq 1", "device": {}}),
        )
        .await;
    invalid.assert_problem(400, "InvalidMembershipRule");
    assert!(invalid.body["diagnostics"].is_array());
    let unknown = app.post("/v1/groups/evaluate-dynamic-membership", &tenant.token,
        json!({"membershipRule": "device.groupTag -eq \"x\"", "deviceId": uuid::Uuid::new_v4()})).await;
    unknown.assert_problem(404, "NotFound");
}

#[tokio::test]
async fn a_second_instance_learns_of_changes_through_notifications() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside().await;
    let tenant = a.bootstrap("Contoso", "contoso.com").await;
    let group = dynamic_group(&a, &tenant, "Sales", r#"device.groupTag -eq "Sales""#).await;
    let profile = a
        .create_profile(&tenant, json!({"displayName": "Sales"}))
        .await;
    a.assign(
        &tenant,
        &profile,
        json!({"kind": "group", "groupId": group}),
        "include",
    )
    .await;
    let machine = hash("TWO-1", false, 0);
    a.register(&tenant, &machine, json!({"groupTag": "Lab"}))
        .await;
    // Both instances listen before the test goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.rules.is_trusted() && b.rules.is_trusted()) {
        assert!(Instant::now() < deadline, "instances never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served(&b, &machine).await,
        None,
        "B has the tenant's rules cached now"
    );

    // A change through A is served by B shortly after (design target: 100 ms).
    a.patch(
        &format!("/v1/groups/{group}"),
        &tenant.token,
        json!({"membershipRule": r#"device.groupTag -eq "Lab""#}),
    )
    .await;
    let changed = Instant::now();
    while served(&b, &machine).await.is_none() {
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "B never learnt of the change"
        );
    }
    eprintln!(
        "instance B served the change {} ms after A committed it",
        changed.elapsed().as_millis()
    );

    // Cut B's notification connection: B stops serving from its cache until it is back. A
    // change made behind its back (no notification at all) is then still seen by B.
    let connections = b.rules.connections();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%unbox_invalidate%' AND datname = current_database()")
        .execute(&a.pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.rules.is_trusted() && b.rules.connections() == connections {
        assert!(
            Instant::now() < deadline,
            "B never noticed the lost connection"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::query("UPDATE groups SET membership_rule = 'device.groupTag -eq \"Nobody\"'")
        .execute(&a.pool)
        .await
        .unwrap();
    assert_eq!(
        served(&b, &machine).await,
        None,
        "B did not serve its stale cache"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.rules.connections() == connections {
        assert!(Instant::now() < deadline, "B never reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.rules.is_trusted());
}
