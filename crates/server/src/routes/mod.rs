//! The HTTP routes, one module per resource. Each handler declares its OpenAPI operation next
//! to its code; `api_router` joins them into the router and the document at once.

pub mod audit_log;
pub mod clients;
pub mod deployments;
pub mod device_api;
pub mod devices;
pub mod export;
pub mod groups;
pub mod imports;
pub mod oauth;
pub mod ops;
pub mod partners;
pub mod profiles;
pub mod rules;
pub mod tenant;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Every documented route, with the OpenAPI document built from the same declarations.
pub fn api_router() -> OpenApiRouter<AppState> {
    admin_router().merge(edge_router())
}

/// The calls that are not the admin API: devices', the token endpoint, health, metrics and
/// keys. They skip the admin API's read-your-downloads layer (`crate::device::consistency`).
pub fn edge_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::jwks))
        .routes(routes!(oauth::token))
        .routes(routes!(device_api::fetch_profile))
        .routes(routes!(device_api::challenge))
        .routes(routes!(device_api::post_event))
}

/// The admin API, `/v1/…`.
pub fn admin_router() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tenant::get_tenant, tenant::patch_tenant))
        .routes(routes!(clients::create_client, clients::list_clients))
        .routes(routes!(clients::delete_client))
        .routes(routes!(devices::create_device, devices::list_devices))
        .routes(routes!(export::export_devices))
        .routes(routes!(
            devices::get_device,
            devices::patch_device,
            devices::delete_device
        ))
        .routes(routes!(devices::explain_assignment))
        .routes(routes!(profiles::create_profile, profiles::list_profiles))
        .routes(routes!(
            profiles::get_profile,
            profiles::patch_profile,
            profiles::delete_profile
        ))
        .routes(routes!(
            profiles::list_assignments,
            profiles::create_assignment
        ))
        .routes(routes!(profiles::delete_assignment))
        .routes(routes!(profiles::profile_devices))
        .routes(routes!(profiles::offline_configuration))
        .routes(routes!(rules::validate_rule))
        .routes(routes!(rules::evaluate_rule))
        .routes(routes!(groups::create_group, groups::list_groups))
        .routes(routes!(
            groups::get_group,
            groups::patch_group,
            groups::delete_group
        ))
        .routes(routes!(groups::list_members, groups::add_members))
        .routes(routes!(groups::remove_member))
        .routes(routes!(audit_log::list_audit_log))
        .routes(routes!(imports::create_import, imports::list_imports))
        .routes(routes!(imports::get_import))
        .routes(routes!(imports::list_items))
        .routes(routes!(imports::create_partner_import))
        .routes(routes!(imports::get_partner_import))
        .routes(routes!(imports::list_partner_items))
        .routes(routes!(
            partners::authorize_partner,
            partners::list_partner_authorizations
        ))
        .routes(routes!(partners::revoke_partner))
        .routes(routes!(deployments::device_timeline))
        .routes(routes!(deployments::report))
}
