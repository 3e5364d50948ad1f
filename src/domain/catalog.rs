//! The connector catalog: the platforms integration connections can be made for, and how
//! each expects its credential.

use secrecy::SecretString;
use url::Url;

/// How a platform's credential is presented on a call.
// The catalog holds a few dozen of these, built once: the OAuth2 variant's size is nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AuthMethod {
    /// `Authorization: Bearer <api_key>`
    Bearer,
    /// `<header>: <api_key>`
    Header { name: axum::http::HeaderName },
    /// `?<param>=<api_key>`
    Query { param: String },
    /// HTTP Basic with `username` and `password`.
    Basic,
    /// A bearer access token kept fresh with a refresh token.
    OAuth2 {
        token_url: Url,
        client_id: String,
        client_secret: Option<SecretString>,
        scopes: Vec<String>,
        /// Where an end user consents (RFC 6749 section 4.1); without it, connect sessions
        /// cannot link this platform, and connections are made with tokens got elsewhere.
        authorize_url: Option<Url>,
        /// Added to the authorization request as they are (say, `access_type=offline`).
        extra_authorize_params: Vec<(String, String)>,
        /// Between scopes in the `scope` parameter: a space, unless the provider wants
        /// otherwise.
        scope_separator: String,
        client_auth: ClientAuth,
    },
}

/// How the client authenticates to the token endpoint (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    SecretPost,
    /// HTTP Basic with the form-encoded `client_id` and `client_secret`.
    SecretBasic,
}

impl AuthMethod {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Header { .. } => "header",
            Self::Query { .. } => "query",
            Self::Basic => "basic",
            Self::OAuth2 { .. } => "oauth2",
        }
    }

    /// Tokens that expire and are refreshed (see `domain::oauth`).
    pub fn is_oauth2(&self) -> bool {
        matches!(self, Self::OAuth2 { .. })
    }

    /// The credential fields a connection of this method must be created with.
    pub fn credential_fields(&self) -> &'static [&'static str] {
        match self {
            Self::Bearer | Self::Header { .. } | Self::Query { .. } => &["api_key"],
            Self::Basic => &["username", "password"],
            Self::OAuth2 { .. } => &["access_token", "refresh_token", "expires_at"],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Platform {
    /// The platform key, e.g. `resend`.
    pub key: String,
    pub name: String,
    pub description: String,
    pub base_url: Url,
    pub auth: AuthMethod,
    pub version: String,
    /// Lifts the passthrough's guard against private and loopback addresses.
    pub allow_private_network: bool,
    pub category: String,
    /// An image URL the operator configured, for the catalog's `image`.
    pub image: Option<String>,
}

fn builtin(key: &str, name: &str, description: &str, base_url: &str, auth: AuthMethod) -> Platform {
    Platform {
        key: key.into(),
        name: name.into(),
        description: description.into(),
        base_url: Url::parse(base_url).expect("built-in URLs parse"),
        auth,
        version: "1.0.0".into(),
        allow_private_network: false,
        category: category_of(key).into(),
        image: None,
    }
}

/// The built-in platforms' categories, as Pica's catalog groups them.
fn category_of(key: &str) -> &'static str {
    match key {
        "stripe" => "Payments",
        "resend" | "sendgrid" | "mailchimp" => "Email",
        "github" | "linear" => "Developer Tools",
        "slack" | "twilio" => "Communication",
        "openai" | "anthropic" | "exa" => "AI",
        "notion" | "airtable" => "Productivity",
        "hubspot" => "CRM",
        _ => "Other",
    }
}

fn header(name: &'static str) -> AuthMethod {
    AuthMethod::Header {
        name: axum::http::HeaderName::from_static(name),
    }
}

/// Real platforms with their real API base URLs and authentication.
pub fn builtin_platforms() -> Vec<Platform> {
    use AuthMethod::{Basic, Bearer};
    vec![
        builtin(
            "stripe",
            "Stripe",
            "Online payment processing for internet businesses",
            "https://api.stripe.com",
            Bearer,
        ),
        builtin(
            "resend",
            "Resend",
            "Email API for developers",
            "https://api.resend.com",
            Bearer,
        ),
        builtin(
            "github",
            "GitHub",
            "Where the world builds software",
            "https://api.github.com",
            Bearer,
        ),
        builtin(
            "slack",
            "Slack",
            "Messaging and collaboration for teams",
            "https://slack.com/api",
            Bearer,
        ),
        builtin(
            "openai",
            "OpenAI",
            "Models for text, images and audio",
            "https://api.openai.com",
            Bearer,
        ),
        builtin(
            "notion",
            "Notion",
            "The connected workspace for docs and wikis",
            "https://api.notion.com",
            Bearer,
        ),
        builtin(
            "hubspot",
            "HubSpot",
            "CRM platform for marketing, sales and service",
            "https://api.hubapi.com",
            Bearer,
        ),
        builtin(
            "sendgrid",
            "SendGrid",
            "Email delivery service",
            "https://api.sendgrid.com",
            Bearer,
        ),
        builtin(
            "twilio",
            "Twilio",
            "Communications APIs for SMS, voice and video",
            "https://api.twilio.com",
            Basic,
        ),
        builtin(
            "linear",
            "Linear",
            "Issue tracking for software teams",
            "https://api.linear.app",
            header("authorization"),
        ),
        builtin(
            "anthropic",
            "Anthropic",
            "Claude models through an API",
            "https://api.anthropic.com",
            header("x-api-key"),
        ),
        builtin(
            "exa",
            "Exa",
            "Web search API for AI",
            "https://api.exa.ai",
            header("x-api-key"),
        ),
        builtin(
            "mailchimp",
            "Mailchimp",
            "Email marketing platform",
            "https://us1.api.mailchimp.com",
            Basic,
        ),
        builtin(
            "airtable",
            "Airtable",
            "Low-code platform for building apps on tables",
            "https://api.airtable.com",
            Bearer,
        ),
    ]
}

/// The catalog in use: built-ins with the operator's `[[platforms]]` applied.
#[derive(Debug, Clone)]
pub struct Catalog {
    platforms: Vec<Platform>,
}

impl Catalog {
    pub fn new(platforms: Vec<Platform>) -> Self {
        let mut platforms = platforms;
        platforms.sort_by(|a, b| a.key.cmp(&b.key));
        Self { platforms }
    }

    pub fn platforms(&self) -> &[Platform] {
        &self.platforms
    }

    pub fn get(&self, key: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.key == key)
    }

    /// The platforms `filter` keeps, in key order.
    pub fn find<'a>(&'a self, filter: &'a CatalogFilter) -> impl Iterator<Item = &'a Platform> {
        self.platforms.iter().filter(move |p| filter.keeps(p))
    }
}

impl Platform {
    /// The connector's key as Pica spells it: `api::stripe::v1`.
    pub fn connector_key(&self) -> String {
        format!("api::{}::v1", self.key)
    }

    /// Whether an end user can link it through a connect session: a form for a key, or
    /// an OAuth2 sign-in the operator configured.
    pub fn linkable(&self) -> bool {
        match &self.auth {
            AuthMethod::OAuth2 { authorize_url, .. } => authorize_url.is_some(),
            _ => true,
        }
    }
}

/// The catalog's filters (`GET /v1/available-connectors`), parsed at the edge.
#[derive(Debug, Default, Clone)]
pub struct CatalogFilter {
    pub platform: Option<String>,
    /// `api::stripe::v1`.
    pub key: Option<String>,
    /// Part of the name, in any case.
    pub name: Option<String>,
    /// The category, in any case.
    pub category: Option<String>,
    /// Whether the platform can be linked through a connect session.
    pub authkit: Option<bool>,
}

impl CatalogFilter {
    fn keeps(&self, p: &Platform) -> bool {
        self.platform.as_ref().is_none_or(|k| *k == p.key)
            && self.key.as_ref().is_none_or(|k| *k == p.connector_key())
            && self
                .name
                .as_ref()
                .is_none_or(|n| p.name.to_lowercase().contains(&n.to_lowercase()))
            && self
                .category
                .as_ref()
                .is_none_or(|c| c.eq_ignore_ascii_case(&p.category))
            && self.authkit.is_none_or(|a| a == p.linkable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_unique_and_use_https() {
        let platforms = builtin_platforms();
        assert!(platforms.len() >= 10);
        let mut keys: Vec<_> = platforms.iter().map(|p| p.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), platforms.len());
        assert!(platforms.iter().all(|p| p.base_url.scheme() == "https"));
    }
}
