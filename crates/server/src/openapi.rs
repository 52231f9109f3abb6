//! The OpenAPI document: its frame here, its operations from the handlers' declarations.
//! `openapi/openapi.json` is this document, committed; a test fails when they differ.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Unbox",
        description = "Self-hostable zero-touch device provisioning: register devices by hardware identity, describe deployments with profiles and groups, and serve booting devices their profile.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, metrics and keys"),
        (name = "auth", description = "Access tokens"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "clients", description = "API clients"),
        (name = "devices", description = "The device registry"),
        (name = "profiles", description = "Deployment profiles and their assignments"),
        (name = "groups", description = "Device groups"),
        (name = "audit", description = "The audit log"),
        (name = "device", description = "Calls made by booting devices")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token from POST /oauth2/token"))
                    .build(),
            ),
        );
    }
}

/// The document this server serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = crate::routes::api_router().split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api
}

/// The document as pretty JSON with a final newline, as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document().to_pretty_json().unwrap_or_default();
        text.push('\n');
        text
    })
    .clone()
}
