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
        (name = "webhooks", description = "Webhook endpoints and deliveries. Each event is POSTed as JSON `{\"type\", \"timestamp\", \"data\"}` with the Standard Webhooks headers `webhook-id` (the same on every attempt: drop repeats), `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature: v1,<base64 of HMAC-SHA256(key, \"{webhook-id}.{webhook-timestamp}.{body}\")>`, where the key is the base64 after `whsec_` in the endpoint's secret. Types: data_connection.created, data_connection.updated, data_connection.deleted, data_connection.password_rotated, data_connection.expiring, data_connection.expired, integration.created, integration.updated, integration.deleted, integration.state_changed, integration.refresh_failed, connect_session.completed, connect_session.failed. A 2xx answer delivers; anything else is retried with exponential backoff and jitter until the horizon (`[webhook_delivery]`)."),
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
