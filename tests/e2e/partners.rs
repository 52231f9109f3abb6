//! Partners (OEMs, resellers): their tokens, the tenant's consent and its revocation, and
//! the imports they make into consenting tenants.

use serde_json::json;
use sqlx::Connection;
use unbox_tests::{TestApp, hash};

use crate::imports::{HEADER, all_items, upload, wait_job};

/// A partner made by `unboxd admin partner create`'s code, with a token.
struct TestPartner {
    id: String,
    client_id: String,
    client_secret: String,
    token: String,
}

async fn partner(app: &TestApp, name: &str) -> TestPartner {
    let made = unbox_server::startup::create_partner(&app.pool, name)
        .await
        .expect("partner");
    let client_id = made.client_id.to_string();
    let token = app.token(&client_id, &made.client_secret, None).await;
    TestPartner {
        id: made.partner_id.to_string(),
        client_id,
        client_secret: made.client_secret,
        token,
    }
}

fn csv(serials: &[&str]) -> Vec<u8> {
    let mut text = format!("{HEADER}\r\n");
    for serial in serials {
        text.push_str(&format!("{serial},,{}\r\n", hash(serial, true, 0)));
    }
    text.into_bytes()
}

#[tokio::test]
async fn partner_tokens_carry_pid_and_only_the_partner_scope() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let oem = partner(&app, "Dell OEM").await;
    let r = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", oem.client_id.as_str()),
            ("client_secret", oem.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "partner.devices.write");
    let (claims, _) = app.tokens.verify(&oem.token).await.unwrap();
    assert_eq!(claims.pid.map(|p| p.to_string()), Some(oem.id.clone()));
    assert!(claims.tid.is_none());
    // A partner may not ask for tenant scopes, nor act as a tenant.
    let r = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", oem.client_id.as_str()),
            ("client_secret", oem.client_secret.as_str()),
            ("scope", "devices.write"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.get("/v1/devices", &oem.token)
        .await
        .assert_problem(403, "TenantTokenRequired");
    app.get("/v1/imports", &oem.token)
        .await
        .assert_problem(403, "TenantTokenRequired");
    // And a tenant is not a partner.
    upload(
        &app,
        &tenant.token,
        &format!("/v1/partner/tenants/{}/imports", tenant.id),
        "text/csv",
        csv(&["T-1"]),
        &[],
    )
    .await
    .assert_problem(403, "PartnerTokenRequired");
    // A wrong secret is refused like an unknown client.
    let wrong = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", oem.client_id.as_str()),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn partners_import_only_with_the_tenants_consent() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let oem = partner(&app, "Dell OEM").await;
    let reseller = partner(&app, "Reseller").await;
    let into_contoso = format!("/v1/partner/tenants/{}/imports", contoso.id);

    // Before consent: 403, and nothing is created.
    let before = app
        .count("SELECT (SELECT count(*) FROM imports) + (SELECT count(*) FROM devices) + (SELECT count(*) FROM audit_log)")
        .await;
    upload(
        &app,
        &oem.token,
        &into_contoso,
        "text/csv",
        csv(&["P-1"]),
        &[],
    )
    .await
    .assert_problem(403, "PartnerNotAuthorized");
    // An unknown tenant looks the same.
    upload(
        &app,
        &oem.token,
        &format!("/v1/partner/tenants/{}/imports", uuid::Uuid::now_v7()),
        "text/csv",
        csv(&["P-1"]),
        &[],
    )
    .await
    .assert_problem(403, "PartnerNotAuthorized");
    assert_eq!(
        app.count("SELECT (SELECT count(*) FROM imports) + (SELECT count(*) FROM devices) + (SELECT count(*) FROM audit_log)")
            .await,
        before
    );

    // Consent: tenant.write to give it, tenant.read to list it.
    let reader = app
        .token(
            &contoso.client_id,
            &contoso.client_secret,
            Some("tenant.read"),
        )
        .await;
    app.post(
        "/v1/partner-authorizations",
        &reader,
        json!({"partnerId": oem.id}),
    )
    .await
    .assert_problem(403, "InsufficientScope");
    app.post(
        "/v1/partner-authorizations",
        &contoso.token,
        json!({"partnerId": uuid::Uuid::now_v7()}),
    )
    .await
    .assert_problem(422, "ValidationFailed");
    let given = app
        .post(
            "/v1/partner-authorizations",
            &contoso.token,
            json!({"partnerId": oem.id}),
        )
        .await;
    assert_eq!(given.status, 201, "{}", given.text);
    assert_eq!(given.body["partnerName"], "Dell OEM");
    let again = app
        .post(
            "/v1/partner-authorizations",
            &contoso.token,
            json!({"partnerId": oem.id}),
        )
        .await;
    assert_eq!(again.status, 200);
    let listed = app.get("/v1/partner-authorizations", &reader).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["items"][0]["partnerId"], oem.id.as_str());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM partner_authorizations WHERE tenant_id = '{}'",
            contoso.id
        ))
        .await,
        1
    );

    // The partner imports into the consenting tenant, and only into it.
    let r = upload(
        &app,
        &oem.token,
        &into_contoso,
        "text/csv",
        csv(&["P-1", "P-2"]),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/partner/imports/{id}").as_str())
    );
    assert_eq!(r.body["source"], "partner");
    assert_eq!(r.body["partnerId"], oem.id.as_str());
    let job = wait_job(&app, &oem.token, &format!("/v1/partner/imports/{id}")).await;
    assert_eq!(job["status"], "complete");
    assert_eq!(job["tenantId"], contoso.id.as_str());
    let items = all_items(&app, &oem.token, &format!("/v1/partner/imports/{id}")).await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["status"] == "complete"));
    upload(
        &app,
        &oem.token,
        &format!("/v1/partner/tenants/{}/imports", fabrikam.id),
        "text/csv",
        csv(&["P-3"]),
        &[],
    )
    .await
    .assert_problem(403, "PartnerNotAuthorized");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM devices WHERE tenant_id = '{}'",
            contoso.id
        ))
        .await,
        2
    );

    // The tenant sees the partner's job, and its audit log names the partner.
    let seen = app.get(&format!("/v1/imports/{id}"), &contoso.token).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["source"], "partner");
    assert_eq!(
        all_items(&app, &contoso.token, &format!("/v1/imports/{id}"))
            .await
            .len(),
        2
    );
    let log = app.get("/v1/audit-log", &contoso.token).await;
    let entries = log.body["items"].as_array().unwrap();
    let created = entries
        .iter()
        .find(|e| e["action"] == "import.create")
        .expect("import.create");
    assert_eq!(created["actorKind"], "partner");
    assert_eq!(created["actorId"], oem.id.as_str());
    assert_eq!(created["resourceId"], id.as_str());
    assert_eq!(created["after"]["clientId"], oem.client_id.as_str());
    let finished = entries
        .iter()
        .find(|e| e["action"] == "import.finish")
        .expect("import.finish");
    assert_eq!(finished["actorKind"], "partner");
    assert!(entries.iter().any(|e| e["action"] == "partner.authorize"));

    // Partners see only their own jobs; other tenants do not see it.
    app.get(&format!("/v1/partner/imports/{id}"), &reseller.token)
        .await
        .assert_problem(404, "NotFound");
    app.get(&format!("/v1/partner/imports/{id}/items"), &reseller.token)
        .await
        .assert_problem(404, "NotFound");
    app.get(&format!("/v1/imports/{id}"), &fabrikam.token)
        .await
        .assert_problem(404, "NotFound");
    app.get(&format!("/v1/partner/imports/{id}"), &contoso.token)
        .await
        .assert_problem(403, "PartnerTokenRequired");

    // Revocation: audited, and the partner's uploads are refused from then on.
    let revoked = app
        .delete(
            &format!("/v1/partner-authorizations/{}", oem.id),
            &contoso.token,
        )
        .await;
    assert_eq!(revoked.status, 204);
    app.delete(
        &format!("/v1/partner-authorizations/{}", oem.id),
        &contoso.token,
    )
    .await
    .assert_problem(404, "NotFound");
    let log = app.get("/v1/audit-log", &contoso.token).await;
    assert_eq!(log.body["items"][0]["action"], "partner.revoke");
    assert_eq!(log.body["items"][0]["before"]["partnerId"], oem.id.as_str());
    upload(
        &app,
        &oem.token,
        &into_contoso,
        "text/csv",
        csv(&["P-4"]),
        &[],
    )
    .await
    .assert_problem(403, "PartnerNotAuthorized");
    assert!(
        app.get("/v1/partner-authorizations", &contoso.token)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Its past job stays readable by it.
    assert_eq!(
        app.get(&format!("/v1/partner/imports/{id}"), &oem.token)
            .await
            .status,
        200
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM imports WHERE tenant_id = '{}'",
            contoso.id
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_partner_job_stops_when_consent_is_revoked_before_it_runs() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let oem = partner(&app, "Dell OEM").await;
    app.post(
        "/v1/partner-authorizations",
        &contoso.token,
        json!({"partnerId": oem.id}),
    )
    .await;
    // A job queued while consent held, with the worker unable to take it yet: its lock is
    // held here.
    let mut holder = sqlx::PgConnection::connect_with(&app.options)
        .await
        .unwrap();
    let r = upload(
        &app,
        &oem.token,
        &format!("/v1/partner/tenants/{}/imports", contoso.id),
        "text/csv",
        csv(&["R-1", "R-2"]),
        &[],
    )
    .await;
    assert_eq!(r.status, 202);
    let id: uuid::Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    // The worker may have taken it already: then it may also have finished it.
    if unbox_db::imports::try_lock(&mut holder, id).await.unwrap() {
        let revoked = app
            .delete(
                &format!("/v1/partner-authorizations/{}", oem.id),
                &contoso.token,
            )
            .await;
        assert_eq!(revoked.status, 204);
        unbox_db::imports::unlock(&mut holder, id).await.unwrap();
        let job = wait_job(&app, &oem.token, &format!("/v1/partner/imports/{id}")).await;
        if job["processed"] == 0 {
            assert_eq!(job["status"], "error");
            assert!(
                job["message"].as_str().unwrap().contains("revoked"),
                "{job}"
            );
            assert_eq!(app.count("SELECT count(*) FROM devices").await, 0);
        } else {
            assert_eq!(job["status"], "complete");
        }
    }
    holder.close().await.unwrap();
}
