//! The end-to-end harness: a real unboxd (the library's router on a bound listener) on its own
//! fresh PostgreSQL database, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use unbox_domain::hardware_hash::{HashSpec, build};
use unbox_server::auth::tokens::{ExternalIssuerConfig, LocalKey, TokenService};
use unbox_server::state::{AppState, Services, Settings};

/// A running server and what tests need to talk to it and to look into its database.
pub struct TestApp {
    pub options: sqlx::postgres::PgConnectOptions,
    /// This instance's rule cache, to observe its notification connection.
    pub rules: std::sync::Arc<unbox_server::cache::RuleCache>,
    /// The device protocol's cache, batch and limits.
    pub device: std::sync::Arc<unbox_server::device::DeviceRuntime>,
    pub address: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub tokens: TokenService,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

/// A tenant made by `unboxd admin bootstrap`'s code, with a token holding every scope.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
}

/// An HTTP answer: status, headers and the body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "code; body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string());
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Settings::default()).await
    }

    /// Spawns with these settings; `data_dir` is replaced by a temp dir of the test's own.
    pub async fn spawn_with(settings: Settings) -> TestApp {
        Self::spawn_full(settings, None).await
    }

    /// Spawns accepting the tokens of an external issuer too.
    pub async fn spawn_with_external(external: ExternalIssuerConfig) -> TestApp {
        Self::spawn_full(Settings::default(), Some(external)).await
    }

    async fn spawn_full(settings: Settings, external: Option<ExternalIssuerConfig>) -> TestApp {
        let options = unbox_db::testing::fresh_database().await;
        Self::spawn_on(options, settings, external, None).await
    }

    /// A second instance on this one's database, sharing its signing key (as instances behind
    /// one load balancer do).
    pub async fn spawn_beside(&self) -> TestApp {
        let key = LocalKey::load(&self._data_dir.path().join("signing-key.pem")).expect("key");
        Self::spawn_on(self.options.clone(), Settings::default(), None, Some(key)).await
    }

    async fn spawn_on(
        options: sqlx::postgres::PgConnectOptions,
        mut settings: Settings,
        external: Option<ExternalIssuerConfig>,
        key: Option<LocalKey>,
    ) -> TestApp {
        let pool = unbox_db::connect(options.clone(), &unbox_db::PoolSettings::default())
            .await
            .expect("connecting");
        let data_dir = tempfile::tempdir().expect("temp dir");
        settings.data_dir = data_dir.path().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let address = listener.local_addr().expect("address");
        let base = format!("http://{address}");
        let key = match key {
            Some(key) => key,
            None => {
                LocalKey::load_or_generate(&data_dir.path().join("signing-key.pem")).expect("key")
            }
        };
        let tokens = TokenService::new(base.clone(), Duration::from_secs(3600), key, external);
        let rules: std::sync::Arc<unbox_server::cache::RuleCache> = std::sync::Arc::default();
        let device = unbox_server::device::DeviceRuntime::new(settings.device.clone());
        let state = AppState::from(Services {
            pool: pool.clone(),
            tokens: tokens.clone(),
            metrics: unbox_server::telemetry::metrics_handle(),
            rules: rules.clone(),
            device: device.clone(),
            settings: std::sync::Arc::new(settings),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(unbox_server::startup::serve(listener, state, async move {
            let _ = rx.await;
        }));
        let app = TestApp {
            options,
            rules,
            device,
            address,
            base,
            client: reqwest::Client::new(),
            pool,
            tokens,
            shutdown: Some(tx),
            _data_dir: data_dir,
        };
        app.wait_ready().await;
        app
    }

    /// Polls /readyz until it answers 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not become ready"
            );
            tokio::task::yield_now().await;
        }
    }

    pub async fn bootstrap(&self, name: &str, domain: &str) -> TestTenant {
        let made = unbox_server::startup::bootstrap(&self.pool, name, domain)
            .await
            .expect("bootstrap");
        let client_id = made.client_id.to_string();
        let token = self.token(&client_id, &made.client_secret, None).await;
        TestTenant {
            id: made.tenant_id.to_string(),
            client_id,
            client_secret: made.client_secret,
            token,
        }
    }

    /// A token for a client, optionally narrowed to `scope`.
    pub async fn token(&self, client_id: &str, secret: &str, scope: Option<&str>) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let r = self
            .client
            .post(format!("{}/oauth2/token", self.base))
            .form(&form)
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("token json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// The device call, as a booting device makes it.
    pub async fn device_profile(&self, hash: &str) -> Answer {
        self.call(
            Method::POST,
            "/device/v1/profile",
            None,
            Some(json!({ "hardwareHash": hash })),
        )
        .await
    }

    /// Registers a device by hash and returns its id.
    pub async fn register(&self, tenant: &TestTenant, hash: &str, extra: Value) -> String {
        let mut body = json!({ "hardwareHash": hash });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let r = self.post("/v1/devices", &tenant.token, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_profile(&self, tenant: &TestTenant, body: Value) -> String {
        let r = self.post("/v1/profiles", &tenant.token, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn assign(
        &self,
        tenant: &TestTenant,
        profile: &str,
        target: Value,
        mode: &str,
    ) -> Answer {
        self.post(
            &format!("/v1/profiles/{profile}/assignments"),
            &tenant.token,
            json!({ "target": target, "mode": mode }),
        )
        .await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A synthetic Windows hash of a machine (reference/hardware-hash.md), varied by `capture`.
pub fn hash(serial: &str, tpm: bool, capture: u32) -> String {
    let mut spec = HashSpec {
        manufacturer: "Dell Inc.".into(),
        model: "Latitude 7440".into(),
        serial: serial.into(),
        capture,
        ..HashSpec::default()
    };
    if tpm {
        spec.tpm_ek_modulus = Some(serial.bytes().cycle().take(256).collect());
    }
    build(&spec).expect("building a hash")
}

/// Bulk registration: raw bodies (CSV files in any encoding) and the data directory.
impl TestApp {
    /// The server's data directory (uploads are spooled under `imports/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// Sends raw bytes with a content type (None: no Content-Type header).
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Answer {
            status,
            headers,
            body,
            text,
        }
    }
}
