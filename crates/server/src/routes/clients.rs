//! `/v1/clients`: the tenant's API clients. A secret is shown once, at creation.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use unbox_db::clients::ClientRow;
use unbox_domain::api::{Client, ClientCreate, ClientCreated, FieldError, Page};
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, Scope, scope, secrets};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

fn to_api(row: ClientRow) -> Client {
    Client {
        id: row.id,
        display_name: row.display_name,
        scopes: row.scopes,
        created_at: row.created_at,
    }
}

/// Creates an API client with a set of tenant scopes, and shows its secret once.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = ["clients.write"])),
    request_body = ClientCreate,
    responses((status = 201, body = ClientCreated), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Authorized<scope::ClientsWrite>,
    Json(body): Json<ClientCreate>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    if body.display_name.trim().is_empty() || body.display_name.chars().count() > 200 {
        errors.push(FieldError::new(
            "displayName",
            "must be 1 to 200 characters",
        ));
    }
    if body.scopes.is_empty() {
        errors.push(FieldError::new("scopes", "name at least one scope"));
    }
    for scope in &body.scopes {
        if !Scope::TENANT.iter().any(|s| s.as_str() == scope) {
            errors.push(FieldError::new(
                "scopes",
                format!("`{scope}` is not a tenant scope"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let mut scopes = body.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let secret = secrets::generate_secret();
    let hash = secrets::hash(secret.clone()).await?;
    let mut tx = state.pool.begin().await?;
    let row = unbox_db::clients::insert(
        &mut tx,
        caller.tenant_id,
        Uuid::now_v7(),
        body.display_name.trim(),
        &scopes,
        &hash,
    )
    .await?;
    let client = to_api(row);
    audit::record(
        &mut tx,
        &caller,
        "client.create",
        "client",
        client.id,
        None,
        audit::snapshot(&client),
    )
    .await?;
    tx.commit().await?;
    let location = format!("/v1/clients/{}", client.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ClientCreated {
            client,
            client_secret: secret,
        }),
    ))
}

/// The tenant's API clients (never their secrets).
#[utoipa::path(get, path = "/v1/clients", tag = "clients", security(("bearer" = ["clients.write"])),
    params(PageParams),
    responses((status = 200, body = Page<Client>)))]
pub async fn list_clients(
    State(state): State<AppState>,
    caller: Authorized<scope::ClientsWrite>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<Client>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let rows =
        unbox_db::clients::list(&mut conn, caller.tenant_id, params.after()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, to_api)))
}

/// Deletes a client; its tokens stop working at once.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = ["clients.write"])),
    params(("id" = Uuid, Path, description = "The client id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn delete_client(
    State(state): State<AppState>,
    caller: Authorized<scope::ClientsWrite>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let row = unbox_db::clients::delete(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("client"))?;
    audit::record(
        &mut tx,
        &caller,
        "client.delete",
        "client",
        id,
        audit::snapshot(&to_api(row)),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
