//! The device call: signed profiles, Linux identities and Windows hashes of one machine,
//! collisions, and the per-instance cache kept right on this instance and across instances.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use unbox_domain::hardware_hash::{HashSpec, OsType, build};
use unbox_tests::{Answer, TestApp, TestTenant, hash};
use uuid::Uuid;

const TPM: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async fn device(app: &TestApp, body: Value) -> Answer {
    app.call(Method::POST, "/device/v1/profile", None, Some(body))
        .await
}

async fn with_default_profile(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let profile = app.create_profile(tenant, body).await;
    let r = app
        .assign(tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    profile
}

fn tpm_bytes(hex_digest: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_digest[i * 2..i * 2 + 2], 16).unwrap();
    }
    out
}

#[tokio::test]
async fn signed_profiles_verify_with_the_published_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    with_default_profile(
        &app,
        &tenant,
        json!({"displayName": "Signed", "oobe": {"hideEula": true}}),
    )
    .await;
    let machine = hash("JWS-1", true, 0);
    let id = app.register(&tenant, &machine, json!({})).await;

    let signed = app
        .call_with(
            Method::POST,
            "/device/v1/profile",
            None,
            Some(json!({"hardwareHash": machine})),
            &[("accept", "application/jose")],
        )
        .await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert_eq!(signed.header("content-type"), Some("application/jose"));
    assert_eq!(signed.text.split('.').count(), 3, "a compact JWS");

    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.body).unwrap();
    let header = jsonwebtoken::decode_header(&signed.text).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let payload: Value = jsonwebtoken::decode(&signed.text, &key, &validation)
        .unwrap()
        .claims;

    // The same JSON as the plain answer (the retry continues the same deployment).
    let plain = app.device_profile(&machine).await;
    assert_eq!(plain.status, 200);
    assert_eq!(payload["profile"]["ZtdRegistrationId"], id.as_str());
    assert_eq!(payload["profile"]["CloudAssignedOobeConfig"], 8 + 16 + 256);
    assert_eq!(payload["deployment"]["id"], plain.body["deployment"]["id"]);
    assert_eq!(
        payload["profile"]["ZtdCorrelationId"],
        plain.body["deployment"]["id"]
    );
    assert_eq!(payload["branding"], plain.body["branding"]);
    assert_eq!(
        payload["enrollmentStatusPage"],
        plain.body["enrollmentStatusPage"]
    );

    // A changed payload does not verify.
    let mut parts: Vec<&str> = signed.text.split('.').collect();
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&json!({"profile": {}})).unwrap(),
    );
    parts[1] = &forged;
    assert!(jsonwebtoken::decode::<Value>(&parts.join("."), &key, &validation).is_err());
}

#[tokio::test]
async fn a_linux_identity_and_a_windows_hash_of_one_machine_are_one_device() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    with_default_profile(&app, &tenant, json!({"displayName": "Linux and Windows"})).await;

    let linux = json!({
        "manufacturer": "Dell Inc.", "model": "Latitude 7440", "serialNumber": "LNX-7",
        "tpmEkSha256": TPM, "macAddresses": ["AA-BB-CC-DD-EE-01"],
        "diskIds": ["00 25 38 59 1b 0c 2a 73"], "smbiosUuid": "4C4C4544-0042-3510-8052-B2C04F4E3732"
    });
    let r = app
        .post("/v1/devices", &tenant.token, json!({"identity": linux}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["deviceOSType"], "Linux");
    let stored: Value = sqlx::query_scalar("SELECT identity FROM devices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored["macAddresses"], json!(["aa:bb:cc:dd:ee:01"]));
    assert_eq!(stored["diskIds"], json!(["002538591b0c2a73"]));

    // The same machine's Windows hash (same TPM digest in record 11) is 806, naming it.
    let windows = build(&HashSpec {
        manufacturer: "Dell Inc.".into(),
        model: "Latitude 7440".into(),
        serial: "LNX-7".into(),
        tpm_ek_sha256: Some(tpm_bytes(TPM)),
        ..HashSpec::default()
    })
    .unwrap();
    let again = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"hardwareHash": windows}),
        )
        .await;
    again.assert_problem(409, "ZtdDeviceAlreadyAssigned");
    assert_eq!(again.body["deviceId"], id.as_str());
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 1);

    // Either presentation gets the profile; deviceOSType follows the latest request.
    let got = app.device_profile(&windows).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["profile"]["ZtdRegistrationId"], id.as_str());
    let shown = app.get(&format!("/v1/devices/{id}"), &tenant.token).await;
    assert_eq!(shown.body["deviceOSType"], "Windows");

    // Normalised alike: other case, separators and surrounding whitespace.
    let relabelled = json!({
        "manufacturer": " DELL INC. ", "model": "latitude 7440", "serialNumber": "lnx-7\u{0}",
        "tpmEkSha256": TPM.to_uppercase(), "macAddresses": ["aabbccddee01"]
    });
    let got = device(&app, json!({"identity": relabelled})).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["profile"]["ZtdRegistrationId"], id.as_str());
    let shown = app.get(&format!("/v1/devices/{id}"), &tenant.token).await;
    assert_eq!(shown.body["deviceOSType"], "Linux");

    // A registration holding a TPM digest matches only requests carrying it: the tuple alone
    // (a forgeable serial) does not.
    let forged =
        json!({"manufacturer": "Dell Inc.", "model": "Latitude 7440", "serialNumber": "LNX-7"});
    device(&app, json!({"identity": forged}))
        .await
        .assert_problem(404, "DeviceNotRegistered");
    // The digest alone does (`unbox hwid` on a machine whose serial is unreadable).
    let digest_only = device(&app, json!({"identity": {"tpmEkSha256": TPM}})).await;
    assert_eq!(digest_only.status, 200, "{}", digest_only.text);
}

#[tokio::test]
async fn an_unbox_made_linux_hash_and_tuples_match_across_systems() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    with_default_profile(&app, &tenant, json!({"displayName": "Fleet"})).await;

    // The Unbox-made hash a Linux machine puts in a CSV (record 1 says `L`).
    let linux_hash = build(&HashSpec {
        manufacturer: "Lenovo".into(),
        model: "ThinkPad X1".into(),
        serial: "PF-1234".into(),
        macs: vec![[0x02, 0, 0, 0, 0, 0x11]],
        tpm_ek_modulus: Some(vec![7u8; 256]),
        os_type: OsType::Linux,
        ..HashSpec::default()
    })
    .unwrap();
    let r = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"hardwareHash": linux_hash}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["deviceOSType"], "Linux");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let digest = sqlx::query_scalar::<_, String>("SELECT tpm_ek_sha256 FROM devices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let got = device(&app, json!({"identity": {"tpmEkSha256": digest}})).await;
    assert_eq!(
        got.body["profile"]["ZtdRegistrationId"],
        id.as_str(),
        "{}",
        got.text
    );

    // Without TPMs, the tuple makes a Linux identity and a Windows hash one machine.
    let r = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"identity": {"manufacturer": "Dell Inc.", "model": "Latitude 7440", "serialNumber": "TUPLE-9"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tuple_id = r.body["id"].as_str().unwrap().to_owned();
    let again = app
        .post(
            "/v1/devices",
            &tenant.token,
            json!({"hardwareHash": hash("TUPLE-9", false, 0)}),
        )
        .await;
    again.assert_problem(409, "ZtdDeviceAlreadyAssigned");
    assert_eq!(again.body["deviceId"], tuple_id.as_str());
    let got = app.device_profile(&hash("TUPLE-9", false, 3)).await;
    assert_eq!(got.body["profile"]["ZtdRegistrationId"], tuple_id.as_str());
}

#[tokio::test]
async fn keys_that_point_at_two_registrations_are_a_reported_collision() {
    let app = TestApp::spawn().await;
    let first = app.bootstrap("Contoso", "contoso.com").await;
    let second = app.bootstrap("Fabrikam", "fabrikam.com").await;
    with_default_profile(&app, &first, json!({"displayName": "A"})).await;
    with_default_profile(&app, &second, json!({"displayName": "B"})).await;
    // Device A holds a TPM digest; device B (another tenant) only its tuple.
    let a = app
        .post(
            "/v1/devices",
            &first.token,
            json!({"identity": {"manufacturer": "Acme", "model": "M1", "serialNumber": "A-1", "tpmEkSha256": TPM}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let b = app
        .post(
            "/v1/devices",
            &second.token,
            json!({"identity": {"manufacturer": "Acme", "model": "M1", "serialNumber": "B-2"}}),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.text);

    // A's digest with B's tuple: both registrations match. Never a pick.
    let ambiguous = json!({"identity": {"manufacturer": "Acme", "model": "M1", "serialNumber": "B-2", "tpmEkSha256": TPM}});
    let r = device(&app, ambiguous.clone()).await;
    r.assert_problem(409, "AmbiguousIdentity");
    assert!(!r.text.contains(a.body["id"].as_str().unwrap()));
    assert!(!r.text.contains(b.body["id"].as_str().unwrap()));
    // The same answer again, from the cache this time (both devices are cached by now).
    let both = device(&app, json!({"identity": {"tpmEkSha256": TPM}})).await;
    assert_eq!(both.status, 200);
    device(&app, ambiguous)
        .await
        .assert_problem(409, "AmbiguousIdentity");

    for (tenant, device_id) in [(&first, &a.body["id"]), (&second, &b.body["id"])] {
        let log = app.get("/v1/audit-log", &tenant.token).await;
        let entry = log.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "device.identityCollision")
            .expect("a collision entry in each affected tenant's log")
            .clone();
        assert_eq!(entry["actorKind"], "device");
        assert_eq!(entry["resourceId"], *device_id);
        assert_eq!(entry["after"]["otherTenants"], 1);
        assert!(!entry.to_string().contains(if tenant.id == first.id {
            b.body["id"].as_str().unwrap()
        } else {
            a.body["id"].as_str().unwrap()
        }));
    }
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'device.identityCollision'")
            .await,
        4
    );
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.text.contains("device_identity_collisions_total"));
}

async fn served_name(app: &TestApp, machine: &str) -> Option<String> {
    let r = app.device_profile(machine).await;
    (r.status == 200).then(|| {
        r.body["profile"]["CloudAssignedDeviceName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

#[tokio::test]
async fn cached_devices_follow_writes_here_at_once_and_elsewhere_shortly() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside().await;
    let tenant = a.bootstrap("Contoso", "contoso.com").await;
    with_default_profile(
        &a,
        &tenant,
        json!({"displayName": "Kiosk", "deviceNameTemplate": "KIOSK-%SERIAL%"}),
    )
    .await;
    let machine = hash("CACHE-1", true, 0);
    let id = a.register(&tenant, &machine, json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.device.cache.is_trusted() && b.device.cache.is_trusted()) {
        assert!(Instant::now() < deadline, "the caches never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served_name(&a, &machine).await.as_deref(),
        Some("KIOSK-CACHE-1")
    );
    assert_eq!(
        served_name(&b, &machine).await.as_deref(),
        Some("KIOSK-CACHE-1")
    );

    // Instance A took the write: its very next answer follows it.
    let patched = a
        .patch(
            &format!("/v1/devices/{id}"),
            &tenant.token,
            json!({"displayName": "FRONT-DESK"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(
        served_name(&a, &machine).await.as_deref(),
        Some("FRONT-DESK")
    );
    // Instance B learns of it through the notification.
    let changed = Instant::now();
    while served_name(&b, &machine).await.as_deref() != Some("FRONT-DESK") {
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "B kept serving the old name"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A profile change behind both instances' backs (plain SQL) reaches them by the triggers.
    sqlx::query("UPDATE tenants SET domain = 'contoso.example'")
        .execute(&a.pool)
        .await
        .unwrap();
    let changed = Instant::now();
    loop {
        let r = b.device_profile(&machine).await;
        if r.body["profile"]["CloudAssignedTenantDomain"] == "contoso.example" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "B kept the old domain"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Deregistered on A: A answers 404 at once, B shortly.
    assert_eq!(
        a.delete(&format!("/v1/devices/{id}"), &tenant.token)
            .await
            .status,
        204
    );
    a.device_profile(&machine)
        .await
        .assert_problem(404, "DeviceNotRegistered");
    let deleted = Instant::now();
    while b.device_profile(&machine).await.status != 404 {
        assert!(
            deleted.elapsed() < Duration::from_secs(2),
            "B kept serving a deleted device"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The cache's notification connection drops (as in a database restart) while a device
/// changes: once it is back, the instance replays what it missed from the journal, so the
/// changed device is read again and the one that did not change is still served from memory.
#[tokio::test]
async fn a_lost_notification_connection_replays_what_it_missed() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    with_default_profile(&app, &tenant, json!({"displayName": "Standard"})).await;
    let changed = hash("REPLAY-1", true, 0);
    let kept = hash("REPLAY-2", true, 0);
    let changed_id: Uuid = app
        .register(&tenant, &changed, json!({}))
        .await
        .parse()
        .unwrap();
    let kept_id: Uuid = app
        .register(&tenant, &kept, json!({}))
        .await
        .parse()
        .unwrap();
    for machine in [&changed, &kept] {
        let r = app.device_profile(machine).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let tenant_id: Uuid = tenant.id.parse().unwrap();
    let cache = &app.device.cache;
    assert!(cache.device(tenant_id, changed_id).is_some());
    assert!(cache.device(tenant_id, kept_id).is_some());
    let connections = cache.connections();

    // The connection is cut and, in the same transaction, a device renamed behind the
    // instance's back: its notification goes out before the instance can listen again.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query ILIKE 'LISTEN%unbox_device_changed%' AND datname = current_database()",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE devices SET display_name = 'RENAMED-1' WHERE id = $1")
        .bind(changed_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while !(cache.connections() > connections && cache.is_trusted()) {
        assert!(Instant::now() < deadline, "the connection never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        cache.device(tenant_id, changed_id).is_none(),
        "the missed change was replayed"
    );
    assert!(
        cache.device(tenant_id, kept_id).is_some(),
        "what did not change stayed cached"
    );
    let r = app.device_profile(&changed).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["profile"]["CloudAssignedDeviceName"], "RENAMED-1");
}
