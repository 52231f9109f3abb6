//! Health, readiness, metrics, request ids and the JWKS.

use unbox_tests::TestApp;

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    assert_eq!(
        app.call(reqwest::Method::GET, "/healthz", None, None)
            .await
            .status,
        200
    );
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.body["status"], "ready");

    let traced = app
        .call_with(
            reqwest::Method::GET,
            "/v1/devices",
            Some(&tenant.token),
            None,
            &[("x-request-id", "trace-me-123")],
        )
        .await;
    assert_eq!(traced.header("x-request-id"), Some("trace-me-123"));
    let generated = app.get("/v1/devices", &tenant.token).await;
    assert_eq!(generated.header("x-request-id").unwrap().len(), 36);

    let metrics = app.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("http_requests_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains(r#"route="/v1/devices""#),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("http_request_duration_seconds"));
    assert!(metrics.text.contains("db_pool_connections"));

    let jwks = app
        .call(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let key = &jwks.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "never the private part");
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_gone_and_recovers() {
    let app = TestApp::spawn().await;
    let database = app.options.get_database().unwrap().to_owned();
    let admin = sqlx::PgPool::connect_with(app.options.clone().database("postgres"))
        .await
        .unwrap();
    // Nobody may connect, and every open connection is cut: the database is gone.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&database).execute(&admin).await.unwrap();
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    ready.assert_problem(503, "ServiceUnavailable");
    assert_eq!(
        app.call(reqwest::Method::GET, "/healthz", None, None)
            .await
            .status,
        200,
        "alive all the same"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    app.wait_ready().await;
}
