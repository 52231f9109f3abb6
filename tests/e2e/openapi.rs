//! The committed `openapi/openapi.json` is exactly what the server serves. To refresh it after
//! changing the API: `UPDATE_OPENAPI=1 cargo test -p unbox-tests openapi`.

use unbox_tests::TestApp;

#[tokio::test]
async fn the_committed_spec_is_what_the_server_serves() {
    let app = TestApp::spawn().await;
    let served = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &served).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == served,
        "openapi/openapi.json differs from what the server serves; run `UPDATE_OPENAPI=1 cargo test -p unbox-tests openapi` and commit it"
    );
    let spec: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/v1/devices",
        "/v1/devices/{id}",
        "/device/v1/profile",
        "/oauth2/token",
        "/v1/profiles/{id}/assignments",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    let docs = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
}
