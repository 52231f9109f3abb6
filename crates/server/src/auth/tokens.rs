//! Access tokens: Unbox signs its own (EdDSA, Ed25519), publishes the public keys as a JWKS,
//! and verifies its own tokens and, when configured, those of one external issuer.
//! Validation pins the algorithm per key and requires `iss`, `aud` and `exp`.
//!
//! Keys rotate: one current key signs; previous keys (their public halves) stay in the JWKS and
//! keep verifying what they signed until it expires. The same keys sign deployment tokens and
//! signed profiles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use uuid::Uuid;

pub const AUDIENCE: &str = "unbox";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    #[serde(default)]
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    /// Tenant of a tenant client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Uuid>,
    /// Partner of a partner client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Uuid>,
    /// Space-separated scopes (also accepted as `scope`, as some providers name it).
    #[serde(default, alias = "scope")]
    pub scp: String,
}

/// Whose key verified a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    Unbox,
    External,
}

/// Unbox's own signing key.
pub struct LocalKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_x: String,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LocalKey {
    fn from_signing_key(key: &SigningKey) -> anyhow::Result<Self> {
        let der = key
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        // RFC 7638 thumbprint: the required members, lexicographic order, no whitespace.
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_components(&x)?,
            public_x: x,
        })
    }

    /// Loads the PKCS#8 PEM key at `path`, or creates one there (mode 0600) when absent.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
        // Write beside and rename, so that two instances starting at once never read half a key.
        let partial = path.with_extension("partial");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(pem.as_bytes())?;
            file.sync_all()?;
        }
        match std::fs::hard_link(&partial, path) {
            Ok(()) => {}
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let _ = std::fs::remove_file(&partial);
        tracing::info!(path = %path.display(), "generated a new token-signing key");
        Self::load(path)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the signing key {}: {e}", path.display()))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key: {e}", path.display())
        })?;
        Self::from_signing_key(&key)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": self.public_x,
            "kid": self.kid, "alg": "EdDSA", "use": "sig",
        })
    }

    /// The public half, to keep verifying (and publishing) after the key is rotated out.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            decoding: self.decoding.clone(),
            public_x: self.public_x.clone(),
        }
    }

    /// Signs any serialisable payload as a compact JWS with this key.
    pub fn sign<T: Serialize>(&self, payload: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, payload, &self.encoding)
    }
}

/// A previous signing key: it verifies and is published, it no longer signs.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    decoding: DecodingKey,
    public_x: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Loads a previous key from a PEM file: the old PKCS#8 private key file as it was, or its
    /// public key (SPKI, `-----BEGIN PUBLIC KEY-----`).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use ed25519_dalek::pkcs8::DecodePublicKey;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the previous key {}: {e}", path.display()))?;
        if let Ok(key) = SigningKey::from_pkcs8_pem(&pem) {
            return Ok(LocalKey::from_signing_key(&key)?.public());
        }
        let verifying = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{} is neither an Ed25519 PKCS#8 private key nor an Ed25519 public key (PEM): {e}",
                path.display()
            )
        })?;
        let x = URL_SAFE_NO_PAD.encode(verifying.as_bytes());
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        Ok(PublicKey {
            kid: URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes())),
            decoding: DecodingKey::from_ed_components(&x)?,
            public_x: x,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": self.public_x,
            "kid": self.kid, "alg": "EdDSA", "use": "sig",
        })
    }
}

/// Where the external issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ExternalIssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
}

/// Keys by `kid`, and when they were last fetched.
type KeyCache = (HashMap<String, (DecodingKey, Algorithm)>, Option<Instant>);

struct ExternalIssuer {
    config: ExternalIssuerConfig,
    keys: RwLock<KeyCache>,
    http: reqwest::Client,
}

/// Refetch the external JWKS for an unknown `kid` at most this often.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

impl ExternalIssuer {
    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        Ok(match &self.config.jwks {
            JwksSource::Url(url) => {
                self.http
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?
            }
            JwksSource::File(path) => serde_json::from_slice(&tokio::fs::read(path).await?)?,
        })
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let set = self.fetch().await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // The algorithm follows from the key type: never from the token's header alone.
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        *self.keys.write().await = (keys, Some(Instant::now()));
        Ok(())
    }

    async fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(found) = self.keys.read().await.0.get(kid) {
            return Some(found.clone());
        }
        let stale = self
            .keys
            .read()
            .await
            .1
            .is_none_or(|at| at.elapsed() > JWKS_REFRESH_INTERVAL);
        if stale && let Err(error) = self.refresh().await {
            tracing::warn!(error = %error, "could not fetch the external issuer's JWKS");
        }
        self.keys.read().await.0.get(kid).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed by a key this server does not know")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Issues and verifies access tokens.
#[derive(Clone)]
pub struct TokenService {
    issuer: Arc<str>,
    lifetime: Duration,
    key: Arc<LocalKey>,
    /// Rotated-out keys, still verifying and published.
    previous: Arc<Vec<PublicKey>>,
    external: Option<Arc<ExternalIssuer>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenService {
    pub fn new(
        issuer: String,
        lifetime: Duration,
        key: LocalKey,
        external: Option<ExternalIssuerConfig>,
    ) -> Self {
        let external = external.map(|config| {
            Arc::new(ExternalIssuer {
                config,
                keys: RwLock::new((HashMap::new(), None)),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
            })
        });
        Self {
            issuer: Arc::from(issuer),
            lifetime,
            key: Arc::new(key),
            previous: Arc::new(Vec::new()),
            external,
        }
    }

    /// Keeps these rotated-out keys verifying and published (the current key is left out).
    pub fn with_previous_keys(mut self, keys: Vec<PublicKey>) -> Self {
        let current = self.key.kid.clone();
        self.previous = Arc::new(keys.into_iter().filter(|k| k.kid != current).collect());
        self
    }

    /// The decoding key of one of our own keys, current or previous.
    fn own_key(&self, kid: &str) -> Option<&DecodingKey> {
        if kid == self.key.kid {
            return Some(&self.key.decoding);
        }
        self.previous
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }

    /// Verifies a token this service signed for `audience` (not the admin audience): a
    /// deployment token, say. Pins EdDSA and our keys; requires `iss`, `aud` and `exp`.
    pub fn verify_own<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.own_key(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&*self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<T>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn local_key(&self) -> &LocalKey {
        &self.key
    }

    /// Loads the external issuer's keys at start, so that a bad configuration shows at once.
    pub async fn prefetch_external_keys(&self) -> anyhow::Result<()> {
        if let Some(external) = &self.external {
            external.refresh().await?;
        }
        Ok(())
    }

    pub fn jwks(&self) -> serde_json::Value {
        let mut keys = vec![self.key.jwk()];
        keys.extend(self.previous.iter().map(PublicKey::jwk));
        serde_json::json!({ "keys": keys })
    }

    pub fn issue(
        &self,
        subject: Uuid,
        tenant: Option<Uuid>,
        partner: Option<Uuid>,
        scopes: &[String],
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.to_string(),
            aud: AUDIENCE.to_owned(),
            sub: subject.to_string(),
            exp: now + self.lifetime.as_secs(),
            iat: now,
            jti: Uuid::new_v4().to_string(),
            tid: tenant,
            pid: partner,
            scp: scopes.join(" "),
        };
        self.key.sign(&claims)
    }

    pub async fn verify(&self, token: &str) -> Result<(Claims, Issuer), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (key, algorithm, issuer, audience, source) = if let Some(own) = self.own_key(&kid) {
            (
                own.clone(),
                Algorithm::EdDSA,
                &*self.issuer,
                AUDIENCE,
                Issuer::Unbox,
            )
        } else if let Some(external) = &self.external {
            let (key, alg) = external.key(&kid).await.ok_or(TokenError::UnknownKey)?;
            (
                key,
                alg,
                external.config.issuer.as_str(),
                external.config.audience.as_str(),
                Issuer::External,
            )
        } else {
            return Err(TokenError::UnknownKey);
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((data.claims, source))
    }
}

#[cfg(test)]
mod rotation_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Payload {
        iss: String,
        aud: String,
        exp: u64,
    }

    #[tokio::test]
    async fn previous_keys_keep_verifying_and_stay_published() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.pem");
        let old = TokenService::new(
            "https://u".into(),
            Duration::from_secs(60),
            LocalKey::load_or_generate(&old_path).unwrap(),
            None,
        );
        let admin = old
            .issue(Uuid::now_v7(), Some(Uuid::now_v7()), None, &[])
            .unwrap();
        let device = old
            .local_key()
            .sign(&Payload {
                iss: "https://u".into(),
                aud: "unbox-device".into(),
                exp: now_secs() + 60,
            })
            .unwrap();

        let rotated = TokenService::new(
            "https://u".into(),
            Duration::from_secs(60),
            LocalKey::load_or_generate(&dir.path().join("new.pem")).unwrap(),
            None,
        )
        .with_previous_keys(vec![PublicKey::load(&old_path).unwrap()]);
        assert_eq!(rotated.verify(&admin).await.unwrap().1, Issuer::Unbox);
        assert!(
            rotated
                .verify_own::<Payload>(&device, "unbox-device")
                .is_ok()
        );
        assert!(rotated.verify_own::<Payload>(&device, "unbox").is_err());
        let kids: Vec<String> = rotated.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, [rotated.local_key().kid(), old.local_key().kid()]);

        // Without the previous key, what it signed is refused.
        let forgetful = TokenService::new(
            "https://u".into(),
            Duration::from_secs(60),
            LocalKey::load(&dir.path().join("new.pem")).unwrap(),
            None,
        );
        assert!(matches!(
            forgetful.verify(&admin).await,
            Err(TokenError::UnknownKey)
        ));

        // The previous key may be given as its public half.
        let public_pem = {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            let pem = std::fs::read_to_string(&old_path).unwrap();
            SigningKey::from_pkcs8_pem(&pem)
                .unwrap()
                .verifying_key()
                .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .unwrap()
        };
        let public_path = dir.path().join("old.pub.pem");
        std::fs::write(&public_path, public_pem).unwrap();
        assert_eq!(
            PublicKey::load(&public_path).unwrap().kid(),
            old.local_key().kid()
        );
    }
}
