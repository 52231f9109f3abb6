//! The HTTP client of the Unbox API: client-credentials tokens (fetched once and reused while
//! valid), JSON and file bodies, and problem documents turned into [`CliError`]s with the exit
//! code their status means.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use unbox_domain::api::{Problem, TokenResponse};

use crate::config::{self, Config, StoredToken};
use crate::error::{CliError, one_line};

/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN_SECS: i64 = 60;
/// A 429's `Retry-After` is honoured when at most this long, this many times.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_RETRIES: usize = 3;

/// An API client's id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Empty,
    Json(&'a Value),
    /// A file, streamed (opened again if the request is retried).
    File {
        path: &'a Path,
        content_type: &'a str,
    },
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value, CliError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::failure(format!(
                "the server's answer is not JSON ({e}): {}",
                preview(&self.body)
            ))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds the HTTP client: rustls, the web PKI roots plus the CA certificates of `ca_cert`.
pub fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, CliError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("unbox/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(300));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            CliError::failure(format!(
                "cannot read the CA certificate {}: {e}",
                path.display()
            ))
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            CliError::failure(format!(
                "{} is not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
        if certificates.is_empty() {
            return Err(CliError::failure(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| CliError::failure(format!("cannot set up HTTPS: {}", chain(&e))))
}

/// An error and its causes on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        short.push('…');
    }
    one_line(&short)
}

/// The error for an answer that is not a success.
pub fn error_for(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => CliError::from_problem(status.as_u16(), &problem),
        Err(_) => {
            let reason = status.canonical_reason().unwrap_or("error");
            let mut line = format!("HTTP {} {reason}", status.as_u16());
            if !body.is_empty() {
                line.push_str(": ");
                line.push_str(&preview(body));
            }
            CliError::new(CliError::code_for_status(status.as_u16()), line)
        }
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Where the access token is kept between runs.
#[derive(Debug)]
struct TokenCache {
    path: PathBuf,
    config: Config,
}

/// A client of one Unbox server.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    token: Option<StoredToken>,
    cache: Option<TokenCache>,
    /// Where the missing-credentials error points the user.
    login_hint: &'static str,
}

impl Api {
    /// A client without credentials (the device calls, and `login` before it has any).
    pub fn anonymous(http: reqwest::Client, server: &str) -> Api {
        Api {
            http,
            base: config::canonical_server(server),
            credentials: None,
            token: None,
            cache: None,
            login_hint: "pass --client-id and --client-secret (or UNBOX_CLIENT_ID and UNBOX_CLIENT_SECRET), or run `unbox login`",
        }
    }

    /// A client with credentials; tokens stay in memory.
    pub fn with_credentials(http: reqwest::Client, server: &str, credentials: Credentials) -> Api {
        Api {
            credentials: Some(credentials),
            ..Api::anonymous(http, server)
        }
    }

    /// A client of a saved login: the token is also saved, and reused by later runs.
    pub fn from_login(http: reqwest::Client, path: PathBuf, config: Config) -> Api {
        let credentials = Credentials {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        };
        let server = config.server.clone();
        Api {
            token: config.token.clone(),
            cache: Some(TokenCache { path, config }),
            ..Api::with_credentials(http, &server, credentials)
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<url::Url, CliError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CliError::usage(format!("`{}` is not a server URL: {e}", self.base)))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        CliError::failure(format!("cannot reach {}: {}", self.base, chain(error)))
    }

    /// Exchanges the client's credentials for a token (`POST /oauth2/token`).
    pub async fn fetch_token(&mut self) -> Result<TokenResponse, CliError> {
        let Some(credentials) = self.credentials.clone() else {
            return Err(CliError::unauthorized(format!(
                "not logged in: {}",
                self.login_hint
            )));
        };
        let url = self.url("/oauth2/token", &[])?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", credentials.client_id.as_str()),
            ("client_secret", credentials.client_secret.as_str()),
        ];
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(error_for(status, &body));
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            CliError::failure(format!("the token endpoint's answer is not a token: {e}"))
        })?;
        let expires_in = i64::try_from(token.expires_in).unwrap_or(i64::MAX / 2);
        let stored = StoredToken {
            access_token: token.access_token.clone(),
            expires_at: now_secs().saturating_add(expires_in),
        };
        self.token = Some(stored.clone());
        if let Some(cache) = &mut self.cache {
            cache.config.token = Some(stored);
            // The cache is an optimisation: failing to write it fails nothing.
            let _ = config::save(&cache.path, &cache.config);
        }
        Ok(token)
    }

    /// A valid token: the one held, else a new one. The flag says whether it was fetched now.
    async fn bearer(&mut self) -> Result<(String, bool), CliError> {
        if let Some(token) = &self.token
            && token.expires_at - TOKEN_MARGIN_SECS > now_secs()
        {
            return Ok((token.access_token.clone(), false));
        }
        let token = self.fetch_token().await?;
        Ok((token.access_token, true))
    }

    /// Sends a request and returns the answer when it is a success, else the error its
    /// problem document describes. `auth` adds the bearer token (fetched when needed; a 401 with
    /// a token from before this request fetches a new one and retries once).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        payload: Payload<'_>,
        headers: &[(&str, String)],
        auth: bool,
    ) -> Result<Answer, CliError> {
        let url = self.url(path, query)?;
        let mut retried_auth = false;
        let mut retries = 0;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            let mut fresh = false;
            if auth {
                let (token, fetched) = self.bearer().await?;
                fresh = fetched;
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                let value = HeaderValue::from_str(value).map_err(|_| {
                    CliError::usage(format!("the {name} header value is not valid"))
                })?;
                request = request.header(*name, value);
            }
            request = match payload {
                Payload::Empty => request,
                Payload::Json(value) => request.json(value),
                Payload::File { path, content_type } => {
                    let file = tokio::fs::File::open(path).await.map_err(|e| {
                        CliError::failure(format!("cannot read {}: {e}", path.display()))
                    })?;
                    let length = file.metadata().await.map(|m| m.len()).ok();
                    let request = request
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(reqwest::Body::from(file));
                    match length {
                        Some(length) => request.header(reqwest::header::CONTENT_LENGTH, length),
                        None => request,
                    }
                }
            };
            let response = request.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            let response_headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.unreachable(&e))?
                .to_vec();
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers: response_headers,
                    body,
                });
            }
            if status == StatusCode::UNAUTHORIZED && auth && !fresh && !retried_auth {
                // The saved token was revoked or the server's key changed: get a new one.
                retried_auth = true;
                self.token = None;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS
                && retries < MAX_RETRIES
                && let Some(wait) = retry_after(&response_headers)
            {
                retries += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(error_for(status, &body));
        }
    }

    /// `GET` with the token, as JSON.
    pub async fn get(&mut self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.send(Method::GET, path, query, Payload::Empty, &[], true)
            .await?
            .json()
    }

    /// A JSON request with the token; the answer as JSON (`null` for 204).
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let payload = body.map_or(Payload::Empty, Payload::Json);
        self.send(method, path, &[], payload, &[], true)
            .await?
            .json()
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wait = Duration::from_secs(seconds.max(1));
    (wait <= MAX_RETRY_AFTER).then_some(wait)
}
