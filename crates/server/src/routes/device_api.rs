//! `/device/v1/…`: the calls a booting device makes, identified by its hardware identity.
//!
//! The profile call is served from the instance's memory when it can (see `crate::device`):
//! the claim keys, the device, its resolved profile, the profile and the tenant are cached, and
//! the download (contact time, deployment opened or continued) goes into the write batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use unbox_db::deployments::{Download, DownloadDeployment};
use unbox_db::devices::{Claim, ClaimOwner};
use unbox_domain::api::{DeviceProfileRequest, DeviceProfileResponse};
use unbox_domain::device_name;
use unbox_domain::identity::{Identity, IdentityKeys, matches};
use unbox_domain::profile::{DeploymentMode, JoinType, ProfileSettings};
use unbox_domain::profile_document::OnlineFacts;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::tokens::TokenService;
use crate::device::answer::{self, AnswerTemplate};
use crate::device::cache::{
    CachedProfile, DeviceEntry, DeviceState, OpenDeployment, Resolved, TenantFacts,
};
use crate::device::proof::{self, DeviceKey};
use crate::device::rate_limit::ClientAddress;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::presented_identity::{self, Presented};
use crate::resolve;
use crate::routes::profiles;
use crate::state::AppState;

/// The audience of deployment tokens: they are good for a deployment's events, nothing else.
pub const DEPLOYMENT_AUDIENCE: &str = "unbox-device";
/// The media type of a signed profile (a compact JWS).
pub const JOSE: &str = "application/jose";

/// The claims of a deployment token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentClaims {
    pub iss: String,
    pub aud: String,
    /// The deployment.
    pub sub: Uuid,
    pub tid: Uuid,
    /// The device.
    pub did: Uuid,
    pub iat: i64,
    pub exp: i64,
}

/// Signs a deployment token valid until `expires_at` (the deployment's timeout: it is renewed
/// by every event, as the timeout is pushed out).
pub fn deployment_token(
    tokens: &TokenService,
    tenant_id: Uuid,
    device_id: Uuid,
    deployment_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<String, ApiError> {
    tokens
        .local_key()
        .sign(&DeploymentClaims {
            iss: tokens.issuer().to_owned(),
            aud: DEPLOYMENT_AUDIENCE.to_owned(),
            sub: deployment_id,
            tid: tenant_id,
            did: device_id,
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
        })
        .map_err(ApiError::internal)
}

fn not_registered() -> ApiError {
    ApiError::not_found("device")
        .title("Device not registered")
        .with_code("DeviceNotRegistered")
}

fn unauthorized(code: &str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

fn poisoned() -> ApiError {
    ApiError::internal(anyhow::anyhow!("a device-cache lock was poisoned"))
}

/// The registrations the presented keys match, per the threat model: a registration holding a
/// TPM digest matches only a request with that digest. More than one is a collision.
fn matching_devices(request: &IdentityKeys, owners: &[ClaimOwner]) -> Vec<(Uuid, Uuid)> {
    let devices: BTreeSet<(Uuid, Uuid)> =
        owners.iter().map(|o| (o.tenant_id, o.device_id)).collect();
    devices
        .into_iter()
        .filter(|(tenant_id, device_id)| {
            let mine = owners
                .iter()
                .filter(|o| o.tenant_id == *tenant_id && o.device_id == *device_id);
            let mut registration = IdentityKeys::default();
            for owner in mine {
                registration.tpm.clone_from(&owner.tpm_ek_sha256);
                if owner.kind == "tuple" {
                    registration.tuple = Some(owner.key.clone());
                }
            }
            matches(request, &registration)
        })
        .collect()
}

/// The request's database connection, taken from the pool on first use and kept to the end: a
/// request the cache answers takes none, one that misses takes one, not one per lookup (each
/// take and return costs the pool a round trip to the server).
struct Db<'a> {
    pool: &'a sqlx::PgPool,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl<'a> Db<'a> {
    fn new(pool: &'a sqlx::PgPool) -> Self {
        Self { pool, conn: None }
    }

    async fn conn(&mut self) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }
}

/// The cache's key (`kind:key`) of each of `presented.claims()`, in their order, without
/// building the claims.
fn claim_keys(presented: &Presented) -> Vec<String> {
    presented
        .keys
        .strong_claim_refs()
        .map(|(kind, key)| {
            let kind = kind.as_str();
            let mut text = String::with_capacity(kind.len() + 1 + key.len());
            text.push_str(kind);
            text.push(':');
            text.push_str(key);
            text
        })
        .collect()
}

/// The device when the cache answers outright: every presented key names one and the same
/// cached device, and [`matches`] accepts it. Anything else (a key not cached, keys naming
/// several devices, no match) takes the careful path through [`claim_owners`].
fn cached_device(
    state: &AppState,
    presented: &Presented,
    keys: &[String],
) -> Option<Arc<DeviceEntry>> {
    let cache = &state.device.cache;
    let owners = cache.owners(keys)?;
    let first = *owners.first()?;
    if owners.iter().any(|o| *o != first) {
        return None;
    }
    let entry = cache.device(first.tenant_id, first.device_id)?;
    // The registration as `matches` sees it: the device's TPM digest, and the presented tuple
    // (a key of its own when presented, and every key named this device).
    let registration = IdentityKeys {
        tpm: entry.tpm_ek_sha256.clone(),
        tuple: presented.keys.tuple.clone(),
        ..IdentityKeys::default()
    };
    matches(&presented.keys, &registration).then_some(entry)
}

/// The device the presented keys name when [`cached_device`] cannot tell: the owners of the
/// keys (from the cache or the database), one match, its entry.
async fn uncached_device(
    state: &AppState,
    db: &mut Db<'_>,
    presented: &Presented,
    keys: &[String],
) -> ApiResult<Arc<DeviceEntry>> {
    let claims = presented.claims();
    let owners = claim_owners(state, db, &claims, keys).await?;
    let (tenant_id, device_id) = match matching_devices(&presented.keys, &owners).as_slice() {
        [] => return Err(not_registered()),
        [one] => *one,
        many => return Err(collision(state, presented, many).await),
    };
    device_entry(state, db, tenant_id, device_id)
        .await?
        .ok_or_else(not_registered)
}

/// The owners of the presented keys: from the cache when it holds every key and its device,
/// else from the database.
async fn claim_owners(
    state: &AppState,
    db: &mut Db<'_>,
    claims: &[Claim],
    keys: &[String],
) -> ApiResult<Vec<ClaimOwner>> {
    let cache = &state.device.cache;
    if let Some(owners) = cache.owners(keys) {
        let mut found = Vec::with_capacity(owners.len());
        for (claim, owner) in claims.iter().zip(owners) {
            let Some(entry) = cache.device(owner.tenant_id, owner.device_id) else {
                found.clear();
                break;
            };
            found.push(ClaimOwner {
                kind: claim.kind.clone(),
                key: claim.key.clone(),
                tenant_id: owner.tenant_id,
                device_id: owner.device_id,
                tpm_ek_sha256: entry.tpm_ek_sha256.clone(),
            });
        }
        if found.len() == claims.len() {
            return Ok(found);
        }
    }
    Ok(unbox_db::devices::claim_owners(db.conn().await?, claims).await?)
}

/// A request whose keys point at several registrations: reported in each tenant's audit log
/// and counted, never resolved by a pick.
async fn collision(state: &AppState, presented: &Presented, devices: &[(Uuid, Uuid)]) -> ApiError {
    metrics::counter!("device_identity_collisions_total").increment(1);
    let mut by_tenant: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for (tenant_id, device_id) in devices {
        by_tenant.entry(*tenant_id).or_default().push(*device_id);
    }
    let tenants = by_tenant.len();
    let recorded = async {
        let mut tx = state.pool.begin().await?;
        for (tenant_id, ids) in &by_tenant {
            unbox_db::audit::record(
                &mut tx,
                unbox_db::audit::NewEntry {
                    tenant_id: *tenant_id,
                    actor_kind: "device",
                    actor_id: None,
                    action: "device.identityCollision",
                    resource_type: "device",
                    resource_id: ids.first().map(Uuid::to_string),
                    before: None,
                    // Another tenant's devices are counted, never named.
                    after: Some(serde_json::json!({
                        "matchedDevices": ids,
                        "otherTenants": tenants - 1,
                        "serialNumber": presented.identity.serial_number,
                        "hasTpm": presented.keys.tpm.is_some(),
                    })),
                    request_id: crate::telemetry::current_request_id(),
                },
            )
            .await?;
        }
        tx.commit().await
    };
    if let Err(error) = recorded.await {
        tracing::error!(error = %error, "recording an identity collision in the audit log failed");
    }
    ApiError::conflict(
        "AmbiguousIdentity",
        "this hardware identity matches more than one registration; an administrator must resolve it",
    )
}

/// The device from the cache, or loaded (with a download still in the write batch applied).
async fn device_entry(
    state: &AppState,
    db: &mut Db<'_>,
    tenant_id: Uuid,
    device_id: Uuid,
) -> ApiResult<Option<Arc<DeviceEntry>>> {
    let cache = &state.device.cache;
    if let Some(entry) = cache.device(tenant_id, device_id) {
        return Ok(Some(entry));
    }
    let epoch = cache.epoch(tenant_id, device_id);
    let Some(row) = unbox_db::device_serving::get(db.conn().await?, tenant_id, device_id).await?
    else {
        return Ok(None);
    };
    let mut device_state = DeviceState {
        assigned_name: row.assigned_name,
        assigned_name_profile_id: row.assigned_name_profile_id,
        os_type: row.os_type,
        enrollment_profile_name: row.enrollment_profile_name,
        open: match (
            row.open_id,
            row.open_profile_id,
            row.open_opened_at,
            row.open_last_download_at,
            row.open_timeout_at,
            row.open_timeout_minutes,
        ) {
            (
                Some(id),
                Some(profile_id),
                Some(opened_at),
                Some(last_download_at),
                Some(timeout_at),
                Some(timeout_minutes),
            ) => Some(OpenDeployment {
                id,
                profile_id,
                opened_at,
                last_download_at,
                timeout_at,
                timeout_minutes,
                new: false,
                token: None,
            }),
            _ => None,
        },
        resolved: None,
        refresh_after_write: false,
    };
    if let Some(pending) = state.device.batch.pending_for(tenant_id, device_id) {
        device_state.os_type = pending.os_type;
        if pending.profile_name.is_some() {
            device_state.enrollment_profile_name = pending.profile_name;
        }
        if let Some(d) = pending.deployment {
            device_state.open = Some(OpenDeployment {
                id: d.id,
                profile_id: d.profile_id,
                opened_at: d.opened_at,
                last_download_at: pending.at,
                timeout_at: d.timeout_at,
                timeout_minutes: d.timeout_minutes,
                new: d.new,
                token: None,
            });
        }
    }
    let entry = Arc::new(DeviceEntry {
        tenant_id,
        id: device_id,
        serial_number: row.serial_number,
        display_name: row.display_name,
        tpm_ek_sha256: row.tpm_ek_sha256,
        requires_proof: row.device_public_key.is_some(),
        key: row.device_public_key.as_ref().and_then(DeviceKey::from_jwk),
        claims: row
            .claims
            .iter()
            .map(|c| crate::device::cache::claim_digest(c))
            .collect(),
        state: std::sync::Mutex::new(device_state),
    });
    cache.put_device(epoch, entry.clone());
    Ok(Some(entry))
}

/// Proof of possession of the device's key: a nonce from `POST /device/v1/challenge` for this
/// identity, consumed here, signed with the key.
async fn check_proof(
    db: &mut Db<'_>,
    entry: &DeviceEntry,
    body: &DeviceProfileRequest,
    keys: &[String],
) -> ApiResult<()> {
    if !entry.requires_proof {
        return Ok(());
    }
    // Boxed, as every database path of the device call: the call's own future stays small,
    // which the answers from memory move and copy less of.
    Box::pin(verify_proof(db, entry, body, keys)).await
}

async fn verify_proof(
    db: &mut Db<'_>,
    entry: &DeviceEntry,
    body: &DeviceProfileRequest,
    keys: &[String],
) -> ApiResult<()> {
    let Some(proof) = &body.proof else {
        return Err(unauthorized(
            "ProofRequired",
            "this device registered a key: ask POST /device/v1/challenge for a nonce and send `proof` {nonce, signature}",
        ));
    };
    let invalid = || {
        unauthorized(
            "InvalidProof",
            "the proof is not a signature of a live nonce of this device's challenge by its registered key",
        )
    };
    if proof.nonce.len() > 128 {
        return Err(invalid());
    }
    let subject = unbox_db::nonces::consume(db.conn().await?, &proof.nonce).await?;
    let signed = entry
        .key
        .as_ref()
        .is_some_and(|key| key.verify(proof.nonce.as_bytes(), &proof.signature));
    if subject.as_deref() == Some(proof::subject(keys).as_str()) && signed {
        Ok(())
    } else {
        metrics::counter!("device_proof_failures_total").increment(1);
        Err(invalid())
    }
}

/// The device's effective profile: cached until its tenant changes, else resolved now.
async fn effective_profile(
    state: &AppState,
    db: &mut Db<'_>,
    entry: &DeviceEntry,
) -> ApiResult<Option<Uuid>> {
    let cache = &state.device.cache;
    let generation = cache.generation(entry.tenant_id);
    let cached = entry
        .state
        .lock()
        .map_err(|_| poisoned())?
        .resolved
        .filter(|r| r.generation == generation && cache.is_trusted());
    if let Some(resolved) = cached {
        return Ok(resolved.profile_id);
    }
    Box::pin(resolve_effective_profile(state, db, entry, generation)).await
}

async fn resolve_effective_profile(
    state: &AppState,
    db: &mut Db<'_>,
    entry: &DeviceEntry,
    generation: u64,
) -> ApiResult<Option<Uuid>> {
    let conn = db.conn().await?;
    let row = unbox_db::devices::get(conn, entry.tenant_id, entry.id)
        .await?
        .ok_or_else(not_registered)?;
    let resolution = resolve::device(state, conn, &row, resolve::Detail::Brief).await?;
    let profile_id = resolution.winner.map(|w| w.profile_id);
    let rules = state.rules.get(conn, entry.tenant_id).await?;
    let reads_download_facts = rules.live.iter().any(|group| {
        let source = group.rule.source().to_ascii_lowercase();
        source.contains("enrollmentprofilename") || source.contains("deviceostype")
    });
    entry.state.lock().map_err(|_| poisoned())?.resolved = Some(Resolved {
        generation,
        profile_id,
        reads_download_facts,
    });
    Ok(profile_id)
}

/// A profile the cache does not hold, loaded and cached.
async fn load_profile(
    state: &AppState,
    db: &mut Db<'_>,
    tenant_id: Uuid,
    profile_id: Uuid,
) -> ApiResult<Arc<CachedProfile>> {
    let cache = &state.device.cache;
    let generation = cache.generation(tenant_id);
    let row = profiles::load(db.conn().await?, tenant_id, profile_id).await?;
    let loaded = Arc::new(CachedProfile {
        id: profile_id,
        settings: profiles::settings_of(&row)?,
        answer: std::sync::OnceLock::new(),
    });
    cache.put_profile(tenant_id, generation, loaded.clone());
    Ok(loaded)
}

/// A tenant's facts the cache does not hold, loaded and cached.
async fn load_tenant(
    state: &AppState,
    db: &mut Db<'_>,
    tenant_id: Uuid,
) -> ApiResult<Arc<TenantFacts>> {
    let cache = &state.device.cache;
    let generation = cache.generation(tenant_id);
    let row = unbox_db::tenants::get(db.conn().await?, tenant_id)
        .await?
        .ok_or_else(not_registered)?;
    let facts = Arc::new(TenantFacts {
        id: row.id,
        domain: row.domain,
        branding: serde_json::from_value(row.branding).unwrap_or_default(),
    });
    cache.put_tenant_facts(generation, facts.clone());
    Ok(facts)
}

/// Gives the device a computer name under this profile: its own `displayName`, else the name
/// it already got under this profile, else a fresh expansion of the template, unique in the
/// tenant. Hybrid join sends no name.
async fn device_name_for(
    db: &mut Db<'_>,
    entry: &DeviceEntry,
    profile_id: Uuid,
    settings: &ProfileSettings,
) -> ApiResult<Option<String>> {
    if settings.join_type == JoinType::Hybrid {
        return Ok(None);
    }
    if let Some(name) = &entry.display_name {
        return Ok(Some(name.clone()));
    }
    {
        let device_state = entry.state.lock().map_err(|_| poisoned())?;
        if device_state.assigned_name_profile_id == Some(profile_id)
            && let Some(name) = &device_state.assigned_name
        {
            return Ok(Some(name.clone()));
        }
    }
    let Some(template) = &settings.device_name_template else {
        return Ok(None);
    };
    Box::pin(assign_device_name(db, entry, profile_id, template)).await
}

/// A fresh expansion of `template`, unique in the tenant, given to the device.
async fn assign_device_name(
    db: &mut Db<'_>,
    entry: &DeviceEntry,
    profile_id: Uuid,
    template: &str,
) -> ApiResult<Option<String>> {
    let candidates = {
        let mut rng = rand::thread_rng();
        device_name::candidates(template, &entry.serial_number, &mut rng)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("device-name template: {e}")))?
    };
    let conn = db.conn().await?;
    for candidate in candidates {
        // One statement, no notification: another instance that still thinks the device
        // unnamed gets the name given here back, rather than giving another.
        let named =
            unbox_db::devices::assign_name(conn, entry.tenant_id, entry.id, &candidate, profile_id)
                .await?;
        let Some(name) = named else {
            // Taken by another device: the next candidate.
            continue;
        };
        let mut device_state = entry.state.lock().map_err(|_| poisoned())?;
        device_state.assigned_name = Some(name.clone());
        device_state.assigned_name_profile_id = Some(profile_id);
        return Ok(Some(name));
    }
    Err(ApiError::conflict(
        "DeviceNameExhausted",
        "no unique device name is left for this template",
    ))
}

/// How long a deployment under this profile may go without an event: 7 days for
/// pre-provisioning (a technician phase and a user phase days apart), else the enrollment
/// status page's timeout when the page is on, else 24 hours.
fn timeout_minutes(settings: &ProfileSettings) -> i32 {
    if settings.deployment_mode == DeploymentMode::PreProvisioned {
        7 * 24 * 60
    } else if settings.enrollment_status_page.enabled {
        i32::try_from(settings.enrollment_status_page.timeout_minutes).unwrap_or(24 * 60)
    } else {
        24 * 60
    }
}

/// Whether the device asked for a signed profile (`Accept: application/jose`). An extractor of
/// its own: taking the whole `HeaderMap` would copy every header of every request.
pub struct WantsJose(bool);

impl<S: Send + Sync> FromRequestParts<S> for WantsJose {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(WantsJose(wants_jose(&parts.headers)))
    }
}

fn wants_jose(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(JOSE))
        })
}

fn batch_full() -> ApiError {
    ApiError::unavailable("the service cannot record downloads right now; retry shortly")
}

/// A booting device fetches its profile by presenting its hardware identity.
///
/// With `Accept: application/jose` the same JSON comes as a compact JWS (EdDSA), signed with a
/// key published at `/.well-known/jwks.json` (the header's `kid` names it).
#[utoipa::path(post, path = "/device/v1/profile", tag = "device",
    request_body = DeviceProfileRequest,
    responses(
        (status = 200, description = "The profile document and a deployment; a compact JWS of it with `Accept: application/jose`",
            content((DeviceProfileResponse = "application/json"), (String = "application/jose"))),
        (status = 401, description = "`ProofRequired` or `InvalidProof`: the device registered a key", body = unbox_domain::api::Problem),
        (status = 404, description = "`DeviceNotRegistered`, or `NoProfileAssigned`", body = unbox_domain::api::Problem),
        (status = 409, description = "`AmbiguousIdentity`: the identity's keys point at several registrations", body = unbox_domain::api::Problem),
        (status = 422, description = "A malformed hash or identity", body = unbox_domain::api::Problem),
        (status = 429, description = "`RateLimited`, with `Retry-After`", body = unbox_domain::api::Problem)))]
pub async fn fetch_profile(
    State(state): State<AppState>,
    client: ClientAddress,
    WantsJose(jose): WantsJose,
    Json(body): Json<DeviceProfileRequest>,
) -> ApiResult<Response> {
    state.device.limits.check_address(&client)?;
    let presented =
        presented_identity::for_lookup(body.hardware_hash.as_deref(), body.identity.as_ref())?;
    let keys = claim_keys(&presented);
    if keys.is_empty() {
        return Err(not_registered());
    }
    state.device.limits.check_identity(&keys)?;

    let mut db = Db::new(&state.pool);
    let entry = match cached_device(&state, &presented, &keys) {
        Some(entry) => entry,
        None => Box::pin(uncached_device(&state, &mut db, &presented, &keys)).await?,
    };
    let (tenant_id, device_id) = (entry.tenant_id, entry.id);
    check_proof(&mut db, &entry, &body, &keys).await?;

    let now = Utc::now();
    let Some(profile_id) = effective_profile(&state, &mut db, &entry).await? else {
        record_contact(&state, &entry, &presented, now, None)?;
        return Err(ApiError::not_found("profile")
            .title("No profile assigned")
            .with_code("NoProfileAssigned"));
    };
    let cache = &state.device.cache;
    let profile = match cache.profile(tenant_id, profile_id) {
        Some(profile) => profile,
        None => Box::pin(load_profile(&state, &mut db, tenant_id, profile_id)).await?,
    };
    let settings = &profile.settings;
    let tenant = match cache.tenant_facts(tenant_id) {
        Some(tenant) => tenant,
        None => Box::pin(load_tenant(&state, &mut db, tenant_id)).await?,
    };
    let name = device_name_for(&mut db, &entry, profile_id, settings).await?;
    // Back to the pool before the answer is rendered.
    drop(db);
    let open = record_contact(
        &state,
        &entry,
        &presented,
        now,
        Some((profile_id, settings)),
    )?
    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a download opened no deployment")))?;

    let token: Arc<str> = match &open.token {
        Some(token) => token.clone(),
        None => {
            let token: Arc<str> = Arc::from(deployment_token(
                &state.tokens,
                tenant_id,
                device_id,
                open.id,
                open.timeout_at,
            )?);
            if let Ok(mut device_state) = entry.state.lock()
                && let Some(current) = device_state.open.as_mut()
                && current.id == open.id
                && current.timeout_at == open.timeout_at
            {
                current.token = Some(token.clone());
            }
            token
        }
    };
    let download = answer::Download {
        facts: OnlineFacts {
            deployment_id: open.id,
            device_id,
            device_name: name.as_deref(),
            downloaded_at: now,
        },
        token: &token,
    };
    if jose {
        let jws = state
            .tokens
            .local_key()
            .sign(&answer::body(profile_id, settings, &tenant, download))
            .map_err(ApiError::internal)?;
        return Ok((
            [(header::CONTENT_TYPE, HeaderValue::from_static(JOSE))],
            jws,
        )
            .into_response());
    }
    // The profile and tenant's answer, rendered once, with this download's values put in.
    let template = profile
        .answer
        .get_or_init(|| AnswerTemplate::new(profile_id, settings, &tenant));
    // A document is some 2 KB: one allocation instead of a growing buffer's several.
    let mut bytes = Vec::with_capacity(4096);
    template.render(&download, &mut bytes);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// Records a download in memory and in the write batch: contact time, OS type, and with a
/// profile the deployment it opens or continues (an open one of the same profile, downloaded
/// within the hour and not timed out).
fn record_contact(
    state: &AppState,
    entry: &DeviceEntry,
    presented: &Presented,
    now: DateTime<Utc>,
    profile: Option<(Uuid, &ProfileSettings)>,
) -> ApiResult<Option<OpenDeployment>> {
    let mut device_state = entry.state.lock().map_err(|_| poisoned())?;
    let open = profile.map(|(profile_id, settings)| {
        let minutes = timeout_minutes(settings);
        let window = Duration::minutes(i64::from(minutes));
        let continued = device_state.open.clone().filter(|o| {
            o.profile_id == profile_id
                && o.last_download_at > now - Duration::hours(1)
                && o.timeout_at > now
        });
        // A retry is not an event: the timeout (and so the token) stays as it was.
        match continued {
            Some(mut o) => {
                o.last_download_at = now;
                o
            }
            None => OpenDeployment {
                id: Uuid::now_v7(),
                profile_id,
                opened_at: now,
                last_download_at: now,
                timeout_at: now + window,
                timeout_minutes: minutes,
                new: true,
                token: None,
            },
        }
    });
    let profile_name = profile.map(|(_, s)| s.display_name.clone());
    let facts_changed = device_state.os_type != presented.os_type
        || (profile_name.is_some() && device_state.enrollment_profile_name != profile_name);
    state
        .device
        .batch
        .push(Download {
            tenant_id: entry.tenant_id,
            device_id: entry.id,
            at: now,
            os_type: presented.os_type.to_owned(),
            profile_name: profile_name.clone(),
            facts_changed,
            deployment: open.as_ref().map(|o| DownloadDeployment {
                id: o.id,
                new: o.new,
                profile_id: o.profile_id,
                opened_at: o.opened_at,
                timeout_at: o.timeout_at,
                timeout_minutes: o.timeout_minutes,
            }),
        })
        .map_err(|_| batch_full())?;
    // Rules may read the OS type and the downloaded profile's name: when the tenant's do, and
    // they changed, the device resolves again once the batch holding the change is written.
    let reads = device_state.resolved.is_none_or(|r| r.reads_download_facts);
    if reads && facts_changed {
        device_state.refresh_after_write = true;
    }
    presented.os_type.clone_into(&mut device_state.os_type);
    if profile_name.is_some() {
        device_state.enrollment_profile_name = profile_name;
    }
    if open.is_some() {
        device_state.open.clone_from(&open);
    }
    Ok(open)
}

/// `POST /device/v1/challenge`: the identity of the device asking.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceChallengeRequest {
    pub hardware_hash: Option<String>,
    pub identity: Option<Identity>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceChallenge {
    /// Sign its UTF-8 bytes with the device's key; good for one profile request.
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// A nonce for proof of possession. Answered for any well-formed identity, registered or not,
/// so that it reveals nothing.
#[utoipa::path(post, path = "/device/v1/challenge", tag = "device",
    request_body = DeviceChallengeRequest,
    responses(
        (status = 200, description = "A single-use nonce", body = DeviceChallenge),
        (status = 422, description = "A malformed hash or identity", body = unbox_domain::api::Problem),
        (status = 429, description = "`RateLimited`, with `Retry-After`", body = unbox_domain::api::Problem)))]
pub async fn challenge(
    State(state): State<AppState>,
    client: ClientAddress,
    Json(body): Json<DeviceChallengeRequest>,
) -> ApiResult<Json<DeviceChallenge>> {
    state.device.limits.check_address(&client)?;
    let presented =
        presented_identity::for_lookup(body.hardware_hash.as_deref(), body.identity.as_ref())?;
    let keys = claim_keys(&presented);
    state.device.limits.check_identity(&keys)?;
    let nonce = proof::nonce();
    let lifetime = state.device.settings.nonce_lifetime;
    let seconds = i32::try_from(lifetime.as_secs()).unwrap_or(300);
    let mut conn = state.pool.acquire().await?;
    unbox_db::nonces::insert(&mut conn, &nonce, &proof::subject(&keys), seconds).await?;
    Ok(Json(DeviceChallenge {
        nonce,
        expires_at: Utc::now() + Duration::seconds(i64::from(seconds)),
    }))
}

/// The deployment a deployment token is for.
#[derive(Debug, Clone)]
pub struct DeploymentCaller(pub DeploymentClaims);

impl<S> FromRequestParts<S> for DeploymentCaller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("send `Authorization: Bearer <deployment token>`")
                    .with_code("InvalidDeploymentToken")
            })?;
        let claims = state
            .tokens
            .verify_own::<DeploymentClaims>(token, DEPLOYMENT_AUDIENCE)
            .map_err(|e| {
                ApiError::unauthorized(format!("the deployment token is not valid: {e}"))
                    .with_code("InvalidDeploymentToken")
            })?;
        Ok(DeploymentCaller(claims))
    }
}

/// A deployment phase a device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeploymentPhase {
    ProfileApplied,
    DeviceSetup,
    AccountSetup,
    Completed,
}

impl DeploymentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProfileApplied => "profileApplied",
            Self::DeviceSetup => "deviceSetup",
            Self::AccountSetup => "accountSetup",
            Self::Completed => "completed",
        }
    }
}

/// The status of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PhaseStatus {
    InProgress,
    Succeeded,
    Failed,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "inProgress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// `POST /device/v1/events`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentEventRequest {
    pub phase: DeploymentPhase,
    pub status: PhaseStatus,
    #[serde(default)]
    pub message: Option<String>,
}

/// Longest event message kept, in characters.
pub const MAX_EVENT_MESSAGE_CHARS: usize = 2000;

/// The deployment after an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEventAnswer {
    pub deployment_id: Uuid,
    /// The deployment's status: `inProgress`, `succeeded` or `failed`.
    pub status: String,
    /// True when this event (phase and status) had been recorded before: nothing changed.
    pub duplicate: bool,
    /// While the deployment is open: a renewed deployment token, valid until `timeoutAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<DateTime<Utc>>,
}

fn finished(status: &str) -> ApiError {
    ApiError::conflict(
        "DeploymentFinished",
        format!(
            "the deployment has finished ({status}); download the profile again to start a new one"
        ),
    )
    .with("deploymentStatus", status)
}

/// The device reports a deployment phase. Any `failed` status fails the deployment, `completed`
/// `succeeded` succeeds it, and every event pushes its timeout out. The same phase and status
/// again is a repeat and changes nothing (200, `duplicate`); a new event for a finished
/// deployment is a 409.
#[utoipa::path(post, path = "/device/v1/events", tag = "device",
    request_body = DeploymentEventRequest,
    security(("deploymentToken" = [])),
    responses(
        (status = 200, description = "Recorded (or a repeat)", body = DeploymentEventAnswer),
        (status = 401, description = "`InvalidDeploymentToken`: missing, wrong or expired", body = unbox_domain::api::Problem),
        (status = 404, description = "`DeploymentNotFound`", body = unbox_domain::api::Problem),
        (status = 409, description = "`DeploymentFinished`: it succeeded, failed or timed out", body = unbox_domain::api::Problem),
        (status = 422, description = "Invalid message", body = unbox_domain::api::Problem),
        (status = 429, description = "`RateLimited`, with `Retry-After`", body = unbox_domain::api::Problem)))]
pub async fn post_event(
    State(state): State<AppState>,
    DeploymentCaller(claims): DeploymentCaller,
    client: ClientAddress,
    Json(body): Json<DeploymentEventRequest>,
) -> ApiResult<Json<DeploymentEventAnswer>> {
    state.device.limits.check_address(&client)?;
    state
        .device
        .limits
        .check_identity(&[format!("deployment:{}", claims.sub)])?;
    if let Some(message) = &body.message
        && (message.chars().count() > MAX_EVENT_MESSAGE_CHARS
            || message
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(ApiError::invalid_field(
            "message",
            format!(
                "must be at most {MAX_EVENT_MESSAGE_CHARS} characters, without control characters"
            ),
        ));
    }
    let (tenant_id, device_id, deployment_id) = (claims.tid, claims.did, claims.sub);
    // The deployment may still be in the write batch, or being written (at once when neither).
    if !state
        .device
        .batch
        .flush(std::time::Duration::from_secs(2))
        .await
    {
        return Err(ApiError::unavailable(
            "the database is unavailable; retry shortly",
        ));
    }
    let (phase, status) = (body.phase.as_str(), body.status.as_str());
    let mut tx = state.pool.begin().await?;
    let locked = unbox_db::deployments::lock(&mut tx, tenant_id, deployment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment").with_code("DeploymentNotFound"))?;
    let current = if locked.lapsed {
        "failed"
    } else {
        locked.status.as_str()
    };
    if unbox_db::device_events::find(&mut tx, tenant_id, deployment_id, phase, status)
        .await?
        .is_some()
    {
        return Ok(Json(DeploymentEventAnswer {
            deployment_id,
            status: current.to_owned(),
            duplicate: true,
            token: None,
            timeout_at: None,
        }));
    }
    if locked.lapsed {
        unbox_db::deployments::fail_lapsed(&mut tx, tenant_id, deployment_id).await?;
        unbox_db::deployments::set_enrollment_state(
            &mut tx,
            tenant_id,
            device_id,
            locked.opened_at,
            "failed",
        )
        .await?;
        tx.commit().await?;
        forget_open(&state, tenant_id, device_id, deployment_id);
        return Err(finished("failed"));
    }
    if locked.status != "inProgress" {
        return Err(finished(&locked.status));
    }
    unbox_db::device_events::insert(
        &mut tx,
        tenant_id,
        deployment_id,
        phase,
        status,
        body.message.as_deref(),
    )
    .await?;
    let finish = match (body.phase, body.status) {
        (_, PhaseStatus::Failed) => Some("failed"),
        (DeploymentPhase::Completed, PhaseStatus::Succeeded) => Some("succeeded"),
        _ => None,
    };
    let advanced =
        unbox_db::deployments::advance(&mut tx, tenant_id, deployment_id, phase, finish).await?;
    if let Some(finish) = finish {
        let enrollment = if finish == "succeeded" {
            "enrolled"
        } else {
            "failed"
        };
        unbox_db::deployments::set_enrollment_state(
            &mut tx,
            tenant_id,
            device_id,
            locked.opened_at,
            enrollment,
        )
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("device_deployment_events_total", "phase" => phase, "status" => status)
        .increment(1);
    if finish.is_some() {
        forget_open(&state, tenant_id, device_id, deployment_id);
        return Ok(Json(DeploymentEventAnswer {
            deployment_id,
            status: advanced.status,
            duplicate: false,
            token: None,
            timeout_at: None,
        }));
    }
    if let Some(entry) = state.device.cache.device(tenant_id, device_id)
        && let Ok(mut device_state) = entry.state.lock()
        && let Some(open) = device_state.open.as_mut()
        && open.id == deployment_id
    {
        open.timeout_at = advanced.timeout_at;
        open.token = None;
    }
    let token = deployment_token(
        &state.tokens,
        tenant_id,
        device_id,
        deployment_id,
        advanced.timeout_at,
    )?;
    Ok(Json(DeploymentEventAnswer {
        deployment_id,
        status: advanced.status,
        duplicate: false,
        token: Some(token),
        timeout_at: Some(advanced.timeout_at),
    }))
}

/// The deployment has finished: the device's next download opens a new one.
fn forget_open(state: &AppState, tenant_id: Uuid, device_id: Uuid, deployment_id: Uuid) {
    if let Some(entry) = state.device.cache.device(tenant_id, device_id)
        && let Ok(mut device_state) = entry.state.lock()
        && device_state
            .open
            .as_ref()
            .is_some_and(|o| o.id == deployment_id)
    {
        device_state.open = None;
    }
}
