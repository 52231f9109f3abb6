//! Rate limits of the device endpoints: per identity, per client address, behind proxies.

use reqwest::Method;
use serde_json::{Value, json};
use unbox_server::state::Settings;
use unbox_tests::{Answer, TestApp, hash};

async fn profile(app: &TestApp, machine: &str, forwarded: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = forwarded
        .map(|f| ("x-forwarded-for", f))
        .into_iter()
        .collect();
    app.call_with(
        Method::POST,
        "/device/v1/profile",
        None,
        Some(json!({"hardwareHash": machine})),
        &headers,
    )
    .await
}

fn assert_limited(r: &Answer) {
    r.assert_problem(429, "RateLimited");
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "Retry-After {after}");
    assert_eq!(r.body["retryAfter"], Value::from(after as f64));
}

#[tokio::test]
async fn each_identity_has_its_own_budget() {
    let mut settings = Settings::default();
    settings.device.rate_per_identity = 3;
    let app = TestApp::spawn_with(settings).await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    app.register(&tenant, &hash("RL-1", true, 0), json!({}))
        .await;
    for capture in 0..3 {
        // Another capture of the same machine is the same identity.
        profile(&app, &hash("RL-1", true, capture), None)
            .await
            .assert_problem(404, "NoProfileAssigned");
    }
    assert_limited(&profile(&app, &hash("RL-1", true, 9), None).await);
    // Its TPM digest alone is the same identity too; the challenge shares the budget.
    let r = app
        .call(
            Method::POST,
            "/device/v1/challenge",
            None,
            Some(json!({"hardwareHash": hash("RL-1", true, 0)})),
        )
        .await;
    assert_limited(&r);
    // Another machine is not affected, nor is the same address.
    profile(&app, &hash("RL-2", true, 0), None)
        .await
        .assert_problem(404, "DeviceNotRegistered");
}

#[tokio::test]
async fn addresses_are_limited_only_when_asked_and_proxies_only_when_trusted() {
    let mut settings = Settings::default();
    settings.device.rate_per_identity = 0;
    settings.device.rate_per_address = 2;
    settings.device.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    app.bootstrap("Contoso", "contoso.com").await;
    // Behind the trusted proxy (the test client on 127.0.0.1), clients are told apart by
    // X-Forwarded-For; the identity limit is off.
    for i in 0..2 {
        profile(
            &app,
            &hash(&format!("A-{i}"), false, 0),
            Some("203.0.113.7"),
        )
        .await
        .assert_problem(404, "DeviceNotRegistered");
    }
    assert_limited(
        &profile(
            &app,
            &hash("A-9", false, 0),
            Some("198.51.100.1, 203.0.113.7"),
        )
        .await,
    );
    profile(&app, &hash("B-1", false, 0), Some("203.0.113.8"))
        .await
        .assert_problem(404, "DeviceNotRegistered");

    // Not trusted: the header is ignored and the peer address counts.
    let mut settings = Settings::default();
    settings.device.rate_per_identity = 0;
    settings.device.rate_per_address = 2;
    let app = TestApp::spawn_with(settings).await;
    for forwarded in ["203.0.113.1", "203.0.113.2"] {
        profile(&app, &hash(forwarded, false, 0), Some(forwarded))
            .await
            .assert_problem(404, "DeviceNotRegistered");
    }
    assert_limited(&profile(&app, &hash("C-1", false, 0), Some("203.0.113.3")).await);

    // Both off: no limit.
    let mut settings = Settings::default();
    settings.device.rate_per_identity = 0;
    let app = TestApp::spawn_with(settings).await;
    for _ in 0..100 {
        profile(&app, &hash("SAME", false, 0), None)
            .await
            .assert_problem(404, "DeviceNotRegistered");
    }
}
