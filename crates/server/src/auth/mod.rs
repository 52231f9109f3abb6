//! Who is calling: the `Caller` extractor verifies the bearer token, and every handler states
//! the scope it needs with `caller.tenant(Scope::…)?` (or `caller.partner(…)`).

pub mod secrets;
pub mod tokens;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use tokens::Issuer;

/// The scopes of design.md ("Security model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "tenant.read")]
    TenantRead,
    #[serde(rename = "tenant.write")]
    TenantWrite,
    #[serde(rename = "clients.write")]
    ClientsWrite,
    #[serde(rename = "devices.read")]
    DevicesRead,
    #[serde(rename = "devices.write")]
    DevicesWrite,
    #[serde(rename = "devices.export")]
    DevicesExport,
    #[serde(rename = "imports.read")]
    ImportsRead,
    #[serde(rename = "imports.write")]
    ImportsWrite,
    #[serde(rename = "profiles.read")]
    ProfilesRead,
    #[serde(rename = "profiles.write")]
    ProfilesWrite,
    #[serde(rename = "groups.read")]
    GroupsRead,
    #[serde(rename = "groups.write")]
    GroupsWrite,
    #[serde(rename = "deployments.read")]
    DeploymentsRead,
    #[serde(rename = "audit.read")]
    AuditRead,
    #[serde(rename = "partner.devices.write")]
    PartnerDevicesWrite,
}

impl Scope {
    pub const TENANT: [Scope; 14] = [
        Scope::TenantRead,
        Scope::TenantWrite,
        Scope::ClientsWrite,
        Scope::DevicesRead,
        Scope::DevicesWrite,
        Scope::DevicesExport,
        Scope::ImportsRead,
        Scope::ImportsWrite,
        Scope::ProfilesRead,
        Scope::ProfilesWrite,
        Scope::GroupsRead,
        Scope::GroupsWrite,
        Scope::DeploymentsRead,
        Scope::AuditRead,
    ];
    pub const PARTNER: [Scope; 1] = [Scope::PartnerDevicesWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TenantRead => "tenant.read",
            Scope::TenantWrite => "tenant.write",
            Scope::ClientsWrite => "clients.write",
            Scope::DevicesRead => "devices.read",
            Scope::DevicesWrite => "devices.write",
            Scope::DevicesExport => "devices.export",
            Scope::ImportsRead => "imports.read",
            Scope::ImportsWrite => "imports.write",
            Scope::ProfilesRead => "profiles.read",
            Scope::ProfilesWrite => "profiles.write",
            Scope::GroupsRead => "groups.read",
            Scope::GroupsWrite => "groups.write",
            Scope::DeploymentsRead => "deployments.read",
            Scope::AuditRead => "audit.read",
            Scope::PartnerDevicesWrite => "partner.devices.write",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::TENANT
            .into_iter()
            .chain(Scope::PARTNER)
            .find(|s| s.as_str() == text)
    }

    pub fn all_tenant_strings() -> Vec<String> {
        Scope::TENANT
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub tenant_id: Option<Uuid>,
    pub partner_id: Option<Uuid>,
    pub scopes: Vec<String>,
    pub issuer: Issuer,
}

/// A caller acting in its tenant, with the scope it needed.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant_id: Uuid,
    pub actor_kind: &'static str,
    pub actor_id: String,
}

/// A partner caller, with the scope it needed.
#[derive(Debug, Clone)]
pub struct PartnerCaller {
    pub partner_id: Uuid,
    /// The token's subject: the partner's API client.
    pub client_id: String,
}

impl Caller {
    fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s == scope.as_str())
    }

    /// The caller's tenant, if it is a tenant caller holding `scope`.
    pub fn tenant(&self, scope: Scope) -> Result<TenantCaller, ApiError> {
        let Some(tenant_id) = self.tenant_id else {
            return Err(ApiError::forbidden(
                "TenantTokenRequired",
                "this endpoint needs a tenant's token (with a `tid` claim)",
            ));
        };
        if !self.has(scope) {
            return Err(ApiError::forbidden(
                "InsufficientScope",
                format!("this operation needs the `{}` scope", scope.as_str()),
            )
            .with("requiredScope", scope.as_str()));
        }
        Ok(TenantCaller {
            tenant_id,
            actor_kind: match self.issuer {
                Issuer::Unbox => "client",
                Issuer::External => "external",
            },
            actor_id: self.subject.clone(),
        })
    }

    /// The caller's partner, if it is a partner caller holding `scope`.
    pub fn partner(&self, scope: Scope) -> Result<PartnerCaller, ApiError> {
        let Some(partner_id) = self.partner_id else {
            return Err(ApiError::forbidden(
                "PartnerTokenRequired",
                "this endpoint needs a partner's token (with a `pid` claim)",
            ));
        };
        if !self.has(scope) {
            return Err(ApiError::forbidden(
                "InsufficientScope",
                format!("this operation needs the `{}` scope", scope.as_str()),
            )
            .with("requiredScope", scope.as_str()));
        }
        Ok(PartnerCaller {
            partner_id,
            client_id: self.subject.clone(),
        })
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        let (claims, issuer) = state
            .tokens
            .verify(token)
            .await
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        if claims.tid.is_some() == claims.pid.is_some() {
            return Err(ApiError::unauthorized(
                "the token must name exactly one of a tenant (`tid`) or a partner (`pid`)",
            ));
        }
        // A deleted client's tokens stop working at once, not when they expire.
        if issuer == Issuer::Unbox
            && let (Some(tenant_id), Ok(client_id)) = (claims.tid, claims.sub.parse::<Uuid>())
        {
            let mut conn = state.pool.acquire().await?;
            if !unbox_db::clients::exists(&mut conn, tenant_id, client_id).await? {
                return Err(ApiError::unauthorized(
                    "the client of this token was deleted",
                ));
            }
        }
        if issuer == Issuer::Unbox
            && let (Some(partner_id), Ok(client_id)) = (claims.pid, claims.sub.parse::<Uuid>())
        {
            let mut conn = state.pool.acquire().await?;
            if !unbox_db::partners::client_exists(&mut conn, partner_id, client_id).await? {
                return Err(ApiError::unauthorized(
                    "the client of this token was deleted",
                ));
            }
        }
        Ok(Caller {
            subject: claims.sub,
            tenant_id: claims.tid,
            partner_id: claims.pid,
            scopes: claims.scp.split_whitespace().map(str::to_owned).collect(),
            issuer,
        })
    }
}

/// A scope a handler requires, as a type: `Authorized<scope::DevicesRead>`.
pub trait RequiredScope {
    const SCOPE: Scope;
}

/// One type per scope, for [`Authorized`].
pub mod scope {
    use super::{RequiredScope, Scope};

    macro_rules! scopes {
        ($($name:ident),* $(,)?) => {$(
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }

    scopes!(
        TenantRead,
        TenantWrite,
        ClientsWrite,
        DevicesRead,
        DevicesWrite,
        DevicesExport,
        ImportsRead,
        ImportsWrite,
        ProfilesRead,
        ProfilesWrite,
        GroupsRead,
        GroupsWrite,
        DeploymentsRead,
        AuditRead,
    );
}

/// A tenant caller holding scope `S`, checked before the request body is read: an extractor
/// whose type states what the handler needs. Derefs to the [`TenantCaller`].
#[derive(Debug, Clone)]
pub struct Authorized<S>(TenantCaller, std::marker::PhantomData<S>);

impl<S> std::ops::Deref for Authorized<S> {
    type Target = TenantCaller;

    fn deref(&self) -> &TenantCaller {
        &self.0
    }
}

impl<S, St> FromRequestParts<St> for Authorized<S>
where
    S: RequiredScope + Send + Sync,
    AppState: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Authorized(
            caller.tenant(S::SCOPE)?,
            std::marker::PhantomData,
        ))
    }
}
