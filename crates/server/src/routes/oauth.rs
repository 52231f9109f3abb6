//! `POST /oauth2/token`: the client-credentials grant.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::Deserialize;
use unbox_domain::api::TokenResponse;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Scope, secrets};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Form, Json};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// May instead come as HTTP Basic authentication.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Space-separated scopes to narrow the token to; default: all of the client's.
    pub scope: Option<String>,
}

/// A tenant's or a partner's client, as the token endpoint checks it.
struct StoredClient {
    id: Uuid,
    tenant_id: Option<Uuid>,
    partner_id: Option<Uuid>,
    scopes: Vec<String>,
    secret_hash: String,
}

fn invalid_client() -> ApiError {
    ApiError::unauthorized("the client id or secret is wrong").title("Invalid client")
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Exchanges a client's id and secret for an access token.
#[utoipa::path(post, path = "/oauth2/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "An access token", body = TokenResponse),
        (status = 400, description = "Unsupported grant or scope", body = unbox_domain::api::Problem),
        (status = 401, description = "Wrong client id or secret", body = unbox_domain::api::Problem)))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    if request.grant_type != "client_credentials" {
        return Err(ApiError::bad_request(
            "UnsupportedGrantType",
            "only grant_type=client_credentials is supported",
        ));
    }
    let (client_id, secret) = match (request.client_id, request.client_secret) {
        (Some(id), Some(secret)) => (id, secret),
        _ => basic_credentials(&headers).ok_or_else(invalid_client)?,
    };
    let stored = match client_id.parse::<Uuid>() {
        Ok(id) => {
            let mut conn = state.pool.acquire().await?;
            match unbox_db::clients::credentials(&mut conn, id).await? {
                Some(c) => Some(StoredClient {
                    id: c.id,
                    tenant_id: Some(c.tenant_id),
                    partner_id: None,
                    scopes: c.scopes,
                    secret_hash: c.secret_hash,
                }),
                // Partners' clients (OEMs, resellers) get tokens with `pid`.
                None => unbox_db::partners::credentials(&mut conn, id)
                    .await?
                    .map(|c| StoredClient {
                        id: c.id,
                        tenant_id: None,
                        partner_id: Some(c.partner_id),
                        scopes: c.scopes,
                        secret_hash: c.secret_hash,
                    }),
            }
        }
        Err(_) => None,
    };
    let verified = secrets::verify(secret, stored.as_ref().map(|c| c.secret_hash.clone())).await?;
    let client = match (verified, stored) {
        (true, Some(client)) => client,
        _ => return Err(invalid_client()),
    };
    let scopes = match request.scope.as_deref().map(str::split_whitespace) {
        None => client.scopes.clone(),
        Some(asked) => {
            let asked: Vec<String> = asked.map(str::to_owned).collect();
            if let Some(extra) = asked.iter().find(|s| !client.scopes.contains(s)) {
                return Err(ApiError::bad_request(
                    "InvalidScope",
                    format!("the client may not have the scope `{extra}`"),
                ));
            }
            asked
        }
    };
    debug_assert!(scopes.iter().all(|s| Scope::parse(s).is_some()));
    let token = state
        .tokens
        .issue(client.id, client.tenant_id, client.partner_id, &scopes)
        .map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "Bearer".to_owned(),
        expires_in: state.tokens.lifetime().as_secs(),
        scope: scopes.join(" "),
    }))
}
