//! Proof of possession: devices registered with a key sign a single-use challenge nonce.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use reqwest::Method;
use serde_json::{Value, json};
use unbox_tests::{Answer, TestApp, TestTenant, hash};

async fn post(app: &TestApp, path: &str, body: Value) -> Answer {
    app.call(Method::POST, path, None, Some(body)).await
}

async fn nonce(app: &TestApp, machine: &str) -> String {
    let r = post(
        app,
        "/device/v1/challenge",
        json!({"hardwareHash": machine}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["expiresAt"].is_string());
    r.body["nonce"].as_str().unwrap().to_owned()
}

async fn setup(app: &TestApp) -> TestTenant {
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let profile = app
        .create_profile(
            &tenant,
            json!({"displayName": "Kiosk", "deploymentMode": "selfDeploying"}),
        )
        .await;
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    tenant
}

#[tokio::test]
async fn an_ed25519_device_proves_its_key_once_per_nonce() {
    let app = TestApp::spawn().await;
    let tenant = setup(&app).await;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())});
    let machine = hash("KEY-1", true, 0);
    let device = app
        .register(&tenant, &machine, json!({"devicePublicKey": jwk}))
        .await;

    post(&app, "/device/v1/profile", json!({"hardwareHash": machine}))
        .await
        .assert_problem(401, "ProofRequired");

    let n = nonce(&app, &machine).await;
    assert_eq!(app.count("SELECT count(*) FROM device_nonces").await, 1);
    let signature = URL_SAFE_NO_PAD.encode(key.sign(n.as_bytes()).to_bytes());
    let proven = post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": n, "signature": signature}}),
    )
    .await;
    assert_eq!(proven.status, 200, "{}", proven.text);
    assert_eq!(proven.body["profile"]["ZtdRegistrationId"], device.as_str());
    assert_eq!(
        app.count("SELECT count(*) FROM device_nonces").await,
        0,
        "consumed"
    );

    // Replayed: refused.
    post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": n, "signature": signature}}),
    )
    .await
    .assert_problem(401, "InvalidProof");

    // Signed by another key, or over another text: refused, and the nonce is spent.
    let n = nonce(&app, &machine).await;
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let wrong = URL_SAFE_NO_PAD.encode(stranger.sign(n.as_bytes()).to_bytes());
    post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": n, "signature": wrong}}),
    )
    .await
    .assert_problem(401, "InvalidProof");
    let right = URL_SAFE_NO_PAD.encode(key.sign(n.as_bytes()).to_bytes());
    post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": n, "signature": right}}),
    )
    .await
    .assert_problem(401, "InvalidProof");

    // A nonce handed out for another identity does not serve this one.
    let other = nonce(&app, &hash("SOMEONE-ELSE", true, 0)).await;
    let signed = URL_SAFE_NO_PAD.encode(key.sign(other.as_bytes()).to_bytes());
    post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": other, "signature": signed}}),
    )
    .await
    .assert_problem(401, "InvalidProof");

    // An expired nonce is refused.
    let n = nonce(&app, &machine).await;
    sqlx::query("UPDATE device_nonces SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let signed = URL_SAFE_NO_PAD.encode(key.sign(n.as_bytes()).to_bytes());
    post(
        &app,
        "/device/v1/profile",
        json!({"hardwareHash": machine, "proof": {"nonce": n, "signature": signed}}),
    )
    .await
    .assert_problem(401, "InvalidProof");
}

#[tokio::test]
async fn a_p256_device_signs_in_either_form() {
    use p256::ecdsa::signature::Signer as _;
    let app = TestApp::spawn().await;
    let tenant = setup(&app).await;
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = json!({"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())});
    let identity = json!({"manufacturer": "Acme", "model": "Kiosk", "serialNumber": "EC-1"});
    let r = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"identity": identity, "devicePublicKey": jwk}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["hasDeviceKey"], true);

    for der in [false, true] {
        let n = post(&app, "/device/v1/challenge", json!({"identity": identity})).await;
        let n = n.body["nonce"].as_str().unwrap().to_owned();
        let sig: p256::ecdsa::Signature = key.sign(n.as_bytes());
        let bytes = if der {
            sig.to_der().as_bytes().to_vec()
        } else {
            sig.to_bytes().to_vec()
        };
        let r = post(
            &app,
            "/device/v1/profile",
            json!({"identity": identity, "proof": {"nonce": n, "signature": URL_SAFE_NO_PAD.encode(bytes)}}),
        )
        .await;
        assert_eq!(r.status, 200, "der: {der}: {}", r.text);
    }
}

#[tokio::test]
async fn challenges_reveal_nothing_about_registration() {
    let app = TestApp::spawn().await;
    setup(&app).await;
    // Any well-formed identity gets a nonce, registered or not.
    let unknown = post(
        &app,
        "/device/v1/challenge",
        json!({"hardwareHash": hash("NOBODY", true, 0)}),
    )
    .await;
    assert_eq!(unknown.status, 200, "{}", unknown.text);
    let keys: Vec<&String> = unknown.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["expiresAt", "nonce"]);
    let placeholder = post(
        &app,
        "/device/v1/challenge",
        json!({"identity": {"serialNumber": "Default string"}}),
    )
    .await;
    assert_eq!(placeholder.status, 200);
    // Malformed is malformed, as for the profile call.
    post(
        &app,
        "/device/v1/challenge",
        json!({"hardwareHash": "T0FBQQ"}),
    )
    .await
    .assert_problem(422, "InvalidZtdHardwareHash");
    // Unknown devices keep getting the same 404, proof or not.
    let n = unknown.body["nonce"].as_str().unwrap();
    post(&app, "/device/v1/profile", json!({"hardwareHash": hash("NOBODY", true, 0), "proof": {"nonce": n, "signature": "AAAA"}}))
        .await
        .assert_problem(404, "DeviceNotRegistered");
}
