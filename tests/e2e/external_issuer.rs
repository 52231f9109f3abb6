//! Tokens of an external identity provider, configured by issuer, audience and a JWKS file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use unbox_server::auth::tokens::{ExternalIssuerConfig, JwksSource, LocalKey};
use unbox_tests::TestApp;

/// An identity provider of the test's own: an Ed25519 key whose public half is in a JWKS file.
struct Provider {
    key: LocalKey,
    jwks_file: tempfile::NamedTempFile,
}

impl Provider {
    fn new() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let key = LocalKey::load_or_generate(&dir.path().join("idp.pem")).unwrap();
        // The JWKS an IdP would publish, built the way Unbox publishes its own.
        let jwks = unbox_server::auth::tokens::TokenService::new(
            "https://idp.example".into(),
            std::time::Duration::from_secs(60),
            LocalKey::load(&dir.path().join("idp.pem")).unwrap(),
            None,
        )
        .jwks();
        let jwks_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(jwks_file.path(), jwks.to_string()).unwrap();
        Provider { key, jwks_file }
    }

    fn token(&self, claims: serde_json::Value) -> String {
        self.key.sign(&claims).unwrap()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn external_tokens_are_accepted_only_as_configured() {
    let idp = Provider::new();
    let app = TestApp::spawn_with_external(ExternalIssuerConfig {
        issuer: "https://idp.example".into(),
        audience: "api://unbox".into(),
        jwks: JwksSource::File(idp.jwks_file.path().to_owned()),
    })
    .await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let good = json!({"iss": "https://idp.example", "aud": "api://unbox", "exp": now() + 600,
                      "sub": "alice@contoso.com", "tid": tenant.id, "scp": "devices.read profiles.write"});
    let token = idp.token(good.clone());
    assert_eq!(app.get("/v1/devices", &token).await.status, 200);
    app.get("/v1/audit-log", &token)
        .await
        .assert_problem(403, "InsufficientScope");
    let created = app
        .post(
            "/v1/profiles",
            &token,
            json!({"displayName": "From the IdP"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let audit = app.get("/v1/audit-log", &tenant.token).await;
    assert_eq!(audit.body["items"][0]["actorKind"], "external");
    assert_eq!(audit.body["items"][0]["actorId"], "alice@contoso.com");

    for (name, change) in [
        ("wrong issuer", json!({"iss": "https://evil.example"})),
        ("wrong audience", json!({"aud": "unbox"})),
        ("expired", json!({"exp": now() - 3600})),
    ] {
        let mut claims = good.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let r = app.get("/v1/devices", &idp.token(claims)).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text);
    }
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        app.get("/v1/devices", &idp.token(no_exp)).await.status,
        401,
        "exp is required"
    );

    // An unsigned token naming the IdP's key id is refused (the algorithm is pinned).
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": idp.key.kid()}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    assert_eq!(
        app.get("/v1/devices", &format!("{header}.{payload}."))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn without_configuration_external_tokens_are_refused() {
    let idp = Provider::new();
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let token = idp.token(
        json!({"iss": "https://idp.example", "aud": "api://unbox", "exp": now() + 600,
                                 "tid": tenant.id, "scp": "devices.read"}),
    );
    app.get("/v1/devices", &token)
        .await
        .assert_problem(401, "Unauthorized");
}
