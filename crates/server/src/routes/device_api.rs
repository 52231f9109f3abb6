//! `/device/v1/…`: the calls a booting device makes, identified by its hardware identity.

use std::collections::BTreeSet;

use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use unbox_db::devices::{ClaimOwner, DeviceRow};
use unbox_domain::api::{Branding, DeploymentHandle, DeviceProfileRequest, DeviceProfileResponse};
use unbox_domain::device_name;
use unbox_domain::identity::{IdentityKeys, matches};
use unbox_domain::profile::{DeploymentMode, JoinType, ProfileSettings};
use unbox_domain::profile_document::{OnlineFacts, TenantFacts, render_online};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::presented_identity;
use crate::resolve;
use crate::routes::profiles;
use crate::state::AppState;

/// The audience of deployment tokens: they are good for a deployment's events, nothing else.
pub const DEPLOYMENT_AUDIENCE: &str = "unbox-device";

#[derive(Debug, Serialize)]
struct DeploymentClaims {
    iss: String,
    aud: &'static str,
    sub: String,
    tid: Uuid,
    did: Uuid,
    iat: i64,
    exp: i64,
}

fn not_registered() -> ApiError {
    ApiError::not_found("device")
        .title("Device not registered")
        .with_code("DeviceNotRegistered")
}

/// The one registration the presented keys match, per the threat model: a registration
/// holding a TPM digest matches only a request with that digest.
fn matching_device(
    request: &IdentityKeys,
    owners: &[ClaimOwner],
) -> Result<Option<(Uuid, Uuid)>, ApiError> {
    let devices: BTreeSet<(Uuid, Uuid)> =
        owners.iter().map(|o| (o.tenant_id, o.device_id)).collect();
    let matched: Vec<(Uuid, Uuid)> = devices
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
        .collect();
    match matched.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => {
            metrics::counter!("device_identity_collisions_total").increment(1);
            Err(ApiError::conflict(
                "AmbiguousIdentity",
                "this hardware identity matches more than one registration; an administrator must resolve it",
            ))
        }
    }
}

/// Gives the device a computer name under this profile: its own `displayName`, else the name
/// it already got under this profile, else a fresh expansion of the template, unique in the
/// tenant. Hybrid join sends no name.
async fn device_name_for(
    state: &AppState,
    device: &DeviceRow,
    profile_id: Uuid,
    settings: &ProfileSettings,
) -> ApiResult<Option<String>> {
    if settings.join_type == JoinType::Hybrid {
        return Ok(None);
    }
    if let Some(name) = &device.display_name {
        return Ok(Some(name.clone()));
    }
    if device.assigned_name_profile_id == Some(profile_id)
        && let Some(name) = &device.assigned_name
    {
        return Ok(Some(name.clone()));
    }
    let Some(template) = &settings.device_name_template else {
        return Ok(None);
    };
    let candidates = {
        let mut rng = rand::thread_rng();
        device_name::candidates(template, &device.serial_number, &mut rng)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("device-name template: {e}")))?
    };
    let mut conn = state.pool.acquire().await?;
    for name in candidates {
        if unbox_db::devices::set_assigned_name(
            &mut conn,
            device.tenant_id,
            device.id,
            &name,
            profile_id,
        )
        .await?
        {
            return Ok(Some(name));
        }
    }
    Err(ApiError::conflict(
        "DeviceNameExhausted",
        "no unique device name is left for this template",
    ))
}

/// A booting device fetches its profile by presenting its hardware identity.
#[utoipa::path(post, path = "/device/v1/profile", tag = "device",
    request_body = DeviceProfileRequest,
    responses(
        (status = 200, description = "The profile document and a deployment", body = DeviceProfileResponse),
        (status = 404, description = "`DeviceNotRegistered`, or `NoProfileAssigned`", body = unbox_domain::api::Problem),
        (status = 409, description = "`AmbiguousIdentity`", body = unbox_domain::api::Problem)))]
pub async fn fetch_profile(
    State(state): State<AppState>,
    Json(body): Json<DeviceProfileRequest>,
) -> ApiResult<Json<DeviceProfileResponse>> {
    let presented =
        presented_identity::from_request(body.hardware_hash.as_deref(), body.identity.as_ref())
            .map_err(|e| {
                if e.status().is_client_error() {
                    e
                } else {
                    not_registered()
                }
            })?;
    let claims = presented.claims();
    if claims.is_empty() {
        return Err(not_registered());
    }
    let mut conn = state.pool.acquire().await?;
    let owners = unbox_db::devices::claim_owners(&mut conn, &claims).await?;
    let Some((tenant_id, device_id)) = matching_device(&presented.keys, &owners)? else {
        return Err(not_registered());
    };
    let device = unbox_db::devices::get(&mut conn, tenant_id, device_id)
        .await?
        .ok_or_else(not_registered)?;
    let tenant = unbox_db::tenants::get(&mut conn, tenant_id)
        .await?
        .ok_or_else(not_registered)?;
    let resolution = resolve::device(&mut conn, tenant_id, device_id).await?;
    drop(conn);
    let Some(winner) = resolution.winner else {
        let mut conn = state.pool.acquire().await?;
        unbox_db::devices::record_download(
            &mut conn,
            tenant_id,
            device_id,
            None,
            presented.os_type,
        )
        .await?;
        return Err(ApiError::not_found("profile")
            .title("No profile assigned")
            .with_code("NoProfileAssigned"));
    };
    let mut conn = state.pool.acquire().await?;
    let profile_row = profiles::load(&mut conn, tenant_id, winner.profile_id).await?;
    drop(conn);
    let settings = profiles::settings_of(&profile_row)?;
    let name = device_name_for(&state, &device, winner.profile_id, &settings).await?;

    let timeout_minutes = if settings.enrollment_status_page.enabled {
        i32::try_from(settings.enrollment_status_page.timeout_minutes).unwrap_or(60)
    } else if settings.deployment_mode == DeploymentMode::PreProvisioned {
        7 * 24 * 60
    } else {
        24 * 60
    };
    let mut tx = state.pool.begin().await?;
    let deployment = unbox_db::deployments::open_or_continue(
        &mut tx,
        tenant_id,
        device_id,
        Uuid::now_v7(),
        winner.profile_id,
        &settings.display_name,
        timeout_minutes,
    )
    .await?;
    unbox_db::devices::record_download(
        &mut tx,
        tenant_id,
        device_id,
        Some(&settings.display_name),
        presented.os_type,
    )
    .await?;
    tx.commit().await?;

    let now = Utc::now();
    let token = state
        .tokens
        .local_key()
        .sign(&DeploymentClaims {
            iss: state.tokens.issuer().to_owned(),
            aud: DEPLOYMENT_AUDIENCE,
            sub: deployment.id.to_string(),
            tid: tenant_id,
            did: device_id,
            iat: now.timestamp(),
            exp: deployment.timeout_at.timestamp(),
        })
        .map_err(ApiError::internal)?;
    let document = render_online(
        winner.profile_id,
        &settings,
        TenantFacts {
            id: tenant.id,
            domain: &tenant.domain,
        },
        OnlineFacts {
            deployment_id: deployment.id,
            device_id,
            device_name: name.as_deref(),
            downloaded_at: now,
        },
    );
    let branding: Branding = serde_json::from_value(tenant.branding).unwrap_or_default();
    Ok(Json(DeviceProfileResponse {
        profile: document,
        deployment: DeploymentHandle {
            id: deployment.id,
            token,
        },
        branding,
        enrollment_status_page: settings.enrollment_status_page.clone(),
        domain_join: if settings.join_type == JoinType::Hybrid {
            settings.domain_join.clone()
        } else {
            None
        },
    }))
}
