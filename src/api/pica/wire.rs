//! The dialect's wire types: connection rows (Pica's fields, plus Switchboard's `health`),
//! pages of them, and the connector catalog.

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::domain::integration::{IntegrationConnection, iso_micros};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    id: String,
    platform_version: String,
    name: Option<String>,
    #[serde(rename = "type")]
    #[schema(example = "api")]
    kind: &'static str,
    key: String,
    environment: &'static str,
    platform: String,
    identity: String,
    identity_type: &'static str,
    description: String,
    state: &'static str,
    tags: Vec<String>,
    version: String,
    active: bool,
    #[schema(example = "2025-07-19T16:19:29.702632Z")]
    created_at: String,
    /// Switchboard's own: how the credential has fared (not in Pica's API).
    health: HealthView,
    /// Switchboard's own: the last passthrough call (added in batches, seconds behind).
    last_used_at: Option<String>,
}

/// Refresh attempts and the last error of a connection; times in ISO 8601.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// Token requests made for this connection (OAuth2), successful or not.
    refresh_attempts: i64,
    /// Failed refreshes since the last success or the last new credential.
    consecutive_failures: i64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    last_refresh_at: Option<String>,
    /// When the OAuth2 access token expires.
    access_token_expires_at: Option<String>,
    /// When the token will be refreshed next (ahead of expiry, or a retry).
    next_refresh_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    pub rows: Vec<ConnectionRow>,
    pub total: u64,
    pub pages: u64,
    pub page: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    /// Stable for a platform key.
    pub id: String,
    #[schema(example = "api::stripe::v1")]
    pub key: String,
    pub platform: String,
    pub platform_version: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub image: Option<String>,
    pub tags: Vec<String>,
    /// Linked with an OAuth2 sign-in.
    pub oauth: bool,
    #[schema(example = "GA")]
    pub status: &'static str,
    pub version: String,
    pub active: bool,
    /// Switchboard's own: bearer, header, query, basic or oauth2.
    pub auth_method: &'static str,
    /// Switchboard's own: an end user can link it through a connect session.
    pub authkit: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectorPage {
    pub rows: Vec<Connector>,
    pub total: u64,
    pub pages: u64,
    pub page: u64,
}

pub fn row(state: &AppState, c: IntegrationConnection) -> ConnectionRow {
    let description = state
        .services
        .integrations
        .platform(&c.platform)
        .map(|p| p.description.clone())
        .unwrap_or_default();
    let next_refresh_at = state
        .services
        .integrations
        .oauth()
        .next_refresh_at(&c)
        .map(iso_micros);
    let h = &c.health;
    let health = HealthView {
        refresh_attempts: h.refresh_attempts,
        consecutive_failures: h.consecutive_failures,
        last_error: h.last_error.clone(),
        last_error_at: h.last_error_at.map(iso_micros),
        last_refresh_at: h.last_refresh_at.map(iso_micros),
        access_token_expires_at: h.expires_at.map(iso_micros),
        next_refresh_at,
    };
    ConnectionRow {
        last_used_at: h.last_used_at.map(iso_micros),
        health,
        created_at: c.created_at_iso(),
        id: c.id,
        platform_version: c.platform_version,
        name: c.name,
        kind: "api",
        key: c.key,
        environment: c.environment.as_str(),
        platform: c.platform,
        identity: c.identity,
        identity_type: c.identity_type.as_str(),
        description,
        state: c.state.as_str(),
        tags: c.tags,
        version: c.version,
        active: c.active,
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListParams {
    /// Comma-separated connection keys (`keys` is accepted too).
    key: Option<String>,
    platformVersion: Option<String>,
    name: Option<String>,
    /// user | team | organization | project
    identityType: Option<String>,
    identity: Option<String>,
    platform: Option<String>,
    /// Comma-separated; a row must carry every one.
    tags: Option<String>,
    /// Default true.
    active: Option<bool>,
    /// A Switchboard extension: operational | degraded | failed | unknown.
    state: Option<String>,
    /// Default 20, at most 1000.
    limit: Option<i64>,
    /// From 1; default 1.
    page: Option<i64>,
    /// An offset, instead of `page`.
    skip: Option<i64>,
}

/// A connect session just made: `url` is the link to hand to the end user.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSessionBody {
    /// Shown once; the link carries it.
    pub token: String,
    #[schema(example = "https://switchboard.example.com/connect/cs_...")]
    pub url: String,
    #[schema(example = "2025-07-19T16:49:29.702632Z")]
    pub expires_at: String,
}

/// Where a connect session stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatusBody {
    #[schema(example = "pending")]
    pub status: &'static str,
    /// The connection made or renewed, once `completed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_key: Option<String>,
    /// Why it failed, once `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub expires_at: String,
}
