//! `unbox device`: play a booting device (`boot`), and make its key (`keygen`).
//!
//! `boot` presents the machine's identity (read as `unbox hwid` reads it), proves possession of
//! its key when one is given (challenge nonce, signed), fetches the signed profile
//! (`Accept: application/jose`), verifies the signature against the server's JWKS with the
//! algorithm pinned by the key's type, prints the profile, and reports the deployment's phases.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand, ValueEnum};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use super::hwid::{HwidArgs, read_usable};
use crate::Ctx;
use crate::client::{Api, Payload};
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, field};

/// The media type of a signed profile.
const JOSE: &str = "application/jose";

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Boot as this machine (or the sysfs tree under --root): fetch, verify and print the
    /// profile, then report profileApplied, deviceSetup, accountSetup and completed.
    #[command(
        after_help = "Needs --server (UNBOX_SERVER); no admin credentials.\n\n\
                            Exit status: 0 when the profile was fetched, verified and the phases \
                            reported; 3 when the device is not registered (or has no profile); 2 when \
                            the machine has no usable identity; 4 when its key's proof is refused; 1 \
                            when the signature does not verify."
    )]
    Boot(BootArgs),
    /// Make a device key (PKCS#8 PEM, mode 0600) and print its public JWK, to register as the
    /// device's `devicePublicKey` (`unbox devices register --public-key`).
    Keygen(KeygenArgs),
    /// Print the public JWK of a device key.
    PublicKey {
        /// The private key (PKCS#8 PEM, Ed25519 or P-256; SEC1 `EC PRIVATE KEY` also read).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum Phase {
    ProfileApplied,
    DeviceSetup,
    AccountSetup,
    Completed,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::ProfileApplied,
        Phase::DeviceSetup,
        Phase::AccountSetup,
        Phase::Completed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::ProfileApplied => "profileApplied",
            Self::DeviceSetup => "deviceSetup",
            Self::AccountSetup => "accountSetup",
            Self::Completed => "completed",
        }
    }
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Read the identity from the sysfs tree under DIR instead of / (as `unbox hwid --root`).
    #[arg(long, value_name = "DIR", conflicts_with = "identity")]
    root: Option<PathBuf>,
    /// Present this identity (the JSON of `unbox hwid`) instead of reading one.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The device's private key (PKCS#8 PEM, Ed25519 or P-256): answer the server's challenge.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The TPM endorsement key's public part (as `unbox hwid --tpm-ek-modulus-file`).
    #[arg(long, value_name = "FILE")]
    tpm_ek_modulus_file: Option<PathBuf>,
    /// Do not read the TPM.
    #[arg(long, conflicts_with = "tpm_ek_modulus_file")]
    no_tpm: bool,
    /// Verify the profile with the keys of this JWKS file instead of the server's
    /// /.well-known/jwks.json (pins the signing keys in the device image).
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// Fetch and verify the profile only; report no phase.
    #[arg(long, conflicts_with = "fail_phase")]
    no_events: bool,
    /// Report this phase as failed (and the ones before it as succeeded), as a device whose
    /// setup fails would.
    #[arg(long, value_enum, value_name = "PHASE")]
    fail_phase: Option<Phase>,
    /// The message sent with the failed phase.
    #[arg(
        long,
        requires = "fail_phase",
        allow_hyphen_values = true,
        default_value = "failed (reported by unbox device boot)"
    )]
    fail_message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    Ed25519,
    P256,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The key type.
    #[arg(long = "type", value_enum, default_value_t = KeyType::Ed25519)]
    key_type: KeyType,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

impl DeviceCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::Boot(args) => boot(ctx, args).await,
            Self::Keygen(args) => keygen(ctx, &args),
            Self::PublicKey { key } => {
                let key = DeviceKey::load(&key)?;
                output::json(ctx.io.out(), &key.public_jwk())?;
                Ok(exit::OK)
            }
        }
    }
}

/// A device's private key.
pub enum DeviceKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ed25519(_) => "DeviceKey::Ed25519",
            Self::P256(_) => "DeviceKey::P256",
        })
    }
}

impl DeviceKey {
    pub fn generate(kind: KeyType) -> DeviceKey {
        let mut rng = rand::rngs::OsRng;
        match kind {
            KeyType::Ed25519 => DeviceKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            KeyType::P256 => DeviceKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// Reads a PKCS#8 PEM (Ed25519 or P-256), or a SEC1 P-256 PEM.
    pub fn load(path: &Path) -> Result<DeviceKey, CliError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let pem = std::fs::read_to_string(path).map_err(|e| {
            CliError::failure(format!("cannot read the key {}: {e}", path.display()))
        })?;
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
            return Ok(DeviceKey::Ed25519(key));
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_pem(&pem) {
            return Ok(DeviceKey::P256(key.into()));
        }
        if let Ok(key) = p256::SecretKey::from_sec1_pem(&pem) {
            return Ok(DeviceKey::P256(key.into()));
        }
        Err(CliError::failure(format!(
            "{} is not an Ed25519 or P-256 private key in PKCS#8 PEM",
            path.display()
        )))
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, CliError> {
        let pem = match self {
            DeviceKey::Ed25519(key) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                key.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                    .map(|p| p.to_string())
            }
            DeviceKey::P256(key) => {
                use p256::pkcs8::EncodePrivateKey as _;
                key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                    .map(|p| p.to_string())
            }
        };
        pem.map_err(|e| CliError::failure(format!("cannot encode the key: {e}")))
    }

    /// The public key as a JWK, as `devicePublicKey` takes it.
    pub fn public_jwk(&self) -> Value {
        match self {
            DeviceKey::Ed25519(key) => json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            }),
            DeviceKey::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": point.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
                    "y": point.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
                })
            }
        }
    }

    /// The signature of `message`, base64url: Ed25519's 64 bytes, or P-256 ECDSA (SHA-256) as
    /// `r || s`.
    pub fn sign(&self, message: &[u8]) -> String {
        match self {
            DeviceKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                URL_SAFE_NO_PAD.encode(key.sign(message).to_bytes())
            }
            DeviceKey::P256(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(message);
                URL_SAFE_NO_PAD.encode(signature.to_bytes())
            }
        }
    }
}

fn keygen(ctx: &mut Ctx<'_>, args: &KeygenArgs) -> CmdResult {
    let key = DeviceKey::generate(args.key_type);
    let pem = key.to_pem()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&args.out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::usage(format!(
                "{} exists: pass --force to replace it",
                args.out.display()
            ))
        } else {
            CliError::failure(format!("cannot write {}: {e}", args.out.display()))
        }
    })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", args.out.display())))?;
    ctx.io.note(&format!(
        "wrote the private key to {}; register the public key below as the device's devicePublicKey",
        args.out.display()
    ));
    output::json(ctx.io.out(), &key.public_jwk())?;
    Ok(exit::OK)
}

/// The key of a JWKS that signed a JWS, and the algorithm its type allows.
fn pick_key(
    keys: &JwkSet,
    kid: Option<&str>,
) -> Result<(DecodingKey, Algorithm, String), CliError> {
    let jwk: &Jwk = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| {
                CliError::failure(format!(
                    "the profile is signed with key {kid}, which the server's JWKS does not hold"
                ))
            })?,
        None => match keys.keys.as_slice() {
            [only] => only,
            _ => {
                return Err(CliError::failure(
                    "the signed profile names no key (kid) and the JWKS holds several",
                ));
            }
        },
    };
    // The algorithm follows from the key's type, never from the JWS header alone.
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => {
            return Err(CliError::failure(
                "the signing key's type is not one a profile may be signed with",
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| CliError::failure(format!("the signing key is not usable: {e}")))?;
    Ok((key, alg, jwk.common.key_id.clone().unwrap_or_default()))
}

/// Verifies a compact JWS with the JWKS and returns its payload.
pub fn verify_profile(jws: &str, keys: &JwkSet) -> Result<(Value, Algorithm, String), CliError> {
    let header = jsonwebtoken::decode_header(jws)
        .map_err(|e| CliError::failure(format!("the signed profile is not a JWS: {e}")))?;
    let (key, alg, kid) = pick_key(keys, header.kid.as_deref())?;
    if header.alg != alg {
        return Err(CliError::failure(format!(
            "the signed profile says it is signed with {:?}, but key {kid} is for {alg:?}",
            header.alg
        )));
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(jws, &key, &validation).map_err(|e| {
        CliError::failure(format!(
            "the profile's signature does not verify with key {kid}: {e}"
        ))
    })?;
    Ok((data.claims, alg, kid))
}

async fn jwks(ctx: &mut Ctx<'_>, api: &mut Api, file: Option<&Path>) -> Result<JwkSet, CliError> {
    let value = match file {
        Some(path) => super::read_json(ctx, path)?,
        None => api
            .send(
                Method::GET,
                "/.well-known/jwks.json",
                &[],
                Payload::Empty,
                &[],
                false,
            )
            .await?
            .json()?,
    };
    serde_json::from_value(value)
        .map_err(|e| CliError::failure(format!("the JWKS is not a JSON Web Key Set: {e}")))
}

async fn boot(ctx: &mut Ctx<'_>, args: BootArgs) -> CmdResult {
    let identity = match &args.identity {
        Some(path) => super::read_json(ctx, path)?,
        None => {
            let options = HwidArgs::options(
                args.root.clone(),
                args.tpm_ek_modulus_file.clone(),
                args.no_tpm,
            );
            let facts = read_usable(ctx, &options, false)?;
            serde_json::to_value(&facts.identity)?
        }
    };
    let key = args.key.as_deref().map(DeviceKey::load).transpose()?;
    let mut api = ctx.anonymous_api()?;

    let mut request = json!({"identity": identity});
    if let Some(key) = &key {
        let challenge = api
            .send(
                Method::POST,
                "/device/v1/challenge",
                &[],
                Payload::Json(&json!({"identity": identity})),
                &[],
                false,
            )
            .await?
            .json()?;
        let nonce = challenge
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| CliError::failure("the challenge holds no nonce"))?;
        request["proof"] = json!({"nonce": nonce, "signature": key.sign(nonce.as_bytes())});
    }

    let answer = api
        .send(
            Method::POST,
            "/device/v1/profile",
            &[],
            Payload::Json(&request),
            &[("accept", JOSE.to_owned())],
            false,
        )
        .await?;
    let media = answer
        .header("content-type")
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media != JOSE {
        return Err(CliError::failure(format!(
            "the server answered the profile as {media:?}, not signed ({JOSE})"
        )));
    }
    let jws = answer.text();
    let keys = jwks(ctx, &mut api, args.jwks.as_deref()).await?;
    let (response, alg, kid) = verify_profile(jws.trim(), &keys)?;

    let mut token = response
        .pointer("/deployment/token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CliError::failure("the profile holds no deployment token"))?;
    if !ctx.json_output() {
        print_profile(ctx, &response, alg, &kid)?;
    }

    let mut events = Vec::new();
    let mut status = "inProgress".to_owned();
    if !args.no_events {
        for phase in Phase::ALL {
            let failed = args.fail_phase == Some(phase);
            let mut body = json!({
                "phase": phase.as_str(),
                "status": if failed { "failed" } else { "succeeded" },
            });
            if failed {
                body["message"] = json!(args.fail_message);
            }
            let answer = report(&mut api, &body, &token)
                .await
                .map_err(|e| CliError {
                    message: format!("reporting {}: {}", phase.as_str(), e.message),
                    ..e
                })?;
            if let Some(renewed) = answer.get("token").and_then(Value::as_str) {
                renewed.clone_into(&mut token);
            }
            status = field(&answer, "/status");
            if !ctx.json_output() {
                writeln!(
                    ctx.io.out(),
                    "Reported {}: {}",
                    phase.as_str(),
                    field(&body, "/status")
                )?;
            }
            events.push(json!({"request": body, "answer": answer}));
            if failed {
                break;
            }
        }
    }

    if ctx.json_output() {
        output::json(
            ctx.io.out(),
            &json!({
                "signedBy": {"kid": kid, "alg": format!("{alg:?}")},
                "response": response,
                "events": events,
                "deploymentStatus": status,
            }),
        )?;
    } else if !args.no_events {
        writeln!(
            ctx.io.out(),
            "Deployment {}: {status}",
            field(&response, "/deployment/id")
        )?;
    }
    Ok(exit::OK)
}

/// How long a new deployment may take to become visible to the events endpoint (downloads are
/// written in batches).
const DEPLOYMENT_VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Posts one event with the deployment token. A deployment the server does not know yet is
/// asked about again for a few seconds: the download that opened it may still be on its way to
/// the database.
async fn report(api: &mut Api, body: &Value, token: &str) -> Result<Value, CliError> {
    let deadline = tokio::time::Instant::now() + DEPLOYMENT_VISIBLE_WITHIN;
    loop {
        let sent = api
            .send(
                Method::POST,
                "/device/v1/events",
                &[],
                Payload::Json(body),
                &[("authorization", format!("Bearer {token}"))],
                false,
            )
            .await;
        match sent {
            Ok(answer) => return answer.json(),
            Err(error)
                if error.problem.as_deref() == Some("DeploymentNotFound")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

fn print_profile(
    ctx: &mut Ctx<'_>,
    response: &Value,
    alg: Algorithm,
    kid: &str,
) -> Result<(), CliError> {
    let profile = response.get("profile").unwrap_or(&Value::Null);
    let join = match profile
        .get("CloudAssignedDomainJoinMethod")
        .and_then(Value::as_i64)
    {
        Some(0) => "Entra join (0)".to_owned(),
        Some(1) => "hybrid join (1)".to_owned(),
        _ => field(profile, "/CloudAssignedDomainJoinMethod"),
    };
    writeln!(
        ctx.io.out(),
        "Profile \"{}\" for device {}: signature verified ({alg:?}, key {kid})",
        field(profile, "/DeploymentProfileName"),
        field(profile, "/ZtdRegistrationId"),
    )?;
    output::fields(
        ctx.io.out(),
        &[
            ("  Device name", field(profile, "/CloudAssignedDeviceName")),
            (
                "  Tenant",
                format!(
                    "{} ({})",
                    field(profile, "/CloudAssignedTenantDomain"),
                    field(profile, "/CloudAssignedTenantId")
                ),
            ),
            ("  Join", join),
            ("  OOBE config", field(profile, "/CloudAssignedOobeConfig")),
            ("  Language", field(profile, "/CloudAssignedLanguage")),
            ("  Sign-in name", field(response, "/branding/displayName")),
            ("  Deployment", field(response, "/deployment/id")),
        ],
    )?;
    Ok(())
}
