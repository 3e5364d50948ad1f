//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::pica;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "Data connections (Better Stack dialect) and integration connections (Pica dialect)."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "connections", description = "ClickHouse data connections (Better Stack dialect)"),
        (name = "vault", description = "Integration connections (Pica dialect)"),
        (name = "connect", description = "Connect sessions: links end users follow to link an account"),
        (name = "audit", description = "The audit log: changes and refused authentications"),
        (name = "operations", description = "Health and service documents"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "pica_secret",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new(pica::SECRET_HEADER),
            )),
        );
    }
}

/// The document as served: axum spells a catch-all segment `{*name}`, OpenAPI knows only
/// `{name}`.
pub fn render(mut openapi: utoipa::openapi::OpenApi) -> String {
    openapi.paths.paths = std::mem::take(&mut openapi.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    openapi
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
