//! Validating `[[platforms]]`: additions to the connector catalog and overrides of built-in
//! platforms' fields.

use anyhow::{Context, bail};
use url::Url;

use super::raw::RawPlatform;
use super::validate::read_secret_file;
use crate::domain::catalog::{AuthMethod, Catalog, ClientAuth, Platform, builtin_platforms};

pub fn validate_platforms(raw: Vec<RawPlatform>) -> anyhow::Result<Catalog> {
    let mut platforms = builtin_platforms();
    for r in raw {
        let at = format!("[[platforms]] platform = \"{}\"", r.platform);
        if r.platform.is_empty()
            || !r
                .platform
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            bail!("{at}: the platform key must be lowercase letters, digits, '-' or '_'");
        }
        let existing = platforms.iter().position(|p| p.key == r.platform);
        let base = match (existing, &r.base_url) {
            (Some(i), _) => platforms[i].clone(),
            (None, Some(url)) => Platform {
                key: r.platform.clone(),
                name: r.platform.clone(),
                description: String::new(),
                base_url: Url::parse(url)
                    .with_context(|| format!("{at}: base_url \"{url}\" is not a URL"))?,
                auth: AuthMethod::Bearer,
                version: "1.0.0".into(),
                allow_private_network: false,
                category: "Other".into(),
                image: None,
            },
            (None, None) => bail!("{at}: a new platform needs base_url (and auth)"),
        };
        let mut p = base;
        if let Some(name) = r.name {
            p.name = name;
        }
        if let Some(d) = r.description {
            p.description = d;
        }
        if let Some(url) = &r.base_url {
            p.base_url = Url::parse(url)
                .with_context(|| format!("{at}: base_url \"{url}\" is not a URL"))?;
            if !matches!(p.base_url.scheme(), "http" | "https") {
                bail!("{at}: base_url must be http:// or https://");
            }
        }
        if let Some(v) = r.version {
            p.version = v;
        }
        if let Some(category) = r.category {
            p.category = category;
        }
        if let Some(image) = r.image {
            p.image = Some(image);
        }
        if let Some(allow) = r.allow_private_network {
            p.allow_private_network = allow;
        }
        if let Some(auth) = r.auth.as_deref() {
            p.auth = match auth {
                "bearer" => AuthMethod::Bearer,
                "header" => {
                    let name = r.header_name.as_deref().unwrap_or("x-api-key");
                    AuthMethod::Header {
                        name: axum::http::HeaderName::from_bytes(name.as_bytes()).with_context(
                            || format!("{at}: header_name \"{name}\" is not an HTTP header name"),
                        )?,
                    }
                }
                "query" => AuthMethod::Query {
                    param: r.query_param.clone().unwrap_or_else(|| "api_key".into()),
                },
                "basic" => AuthMethod::Basic,
                "oauth2" => {
                    let token_url = r
                        .token_url
                        .as_deref()
                        .with_context(|| format!("{at}: auth = \"oauth2\" needs token_url"))?;
                    AuthMethod::OAuth2 {
                        token_url: Url::parse(token_url).with_context(|| {
                            format!("{at}: token_url \"{token_url}\" is not a URL")
                        })?,
                        client_id: r
                            .client_id
                            .clone()
                            .with_context(|| format!("{at}: auth = \"oauth2\" needs client_id"))?,
                        client_secret: r
                            .client_secret_file
                            .as_deref()
                            .map(|f| read_secret_file(&format!("{at}: client_secret_file"), f))
                            .transpose()?,
                        scopes: r.scopes.clone(),
                        authorize_url: r
                            .authorize_url
                            .as_deref()
                            .map(|u| {
                                let url = Url::parse(u).with_context(|| {
                                    format!("{at}: authorize_url \"{u}\" is not a URL")
                                })?;
                                if !matches!(url.scheme(), "http" | "https") {
                                    bail!("{at}: authorize_url must be http:// or https://");
                                }
                                Ok(url)
                            })
                            .transpose()?,
                        extra_authorize_params: r
                            .extra_authorize_params
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        scope_separator: r.scope_separator.clone().unwrap_or_else(|| " ".into()),
                        client_auth: match r.token_auth.as_deref() {
                            None | Some("client_secret_post") => ClientAuth::SecretPost,
                            Some("client_secret_basic") => ClientAuth::SecretBasic,
                            Some(other) => bail!(
                                "{at}: token_auth = \"{other}\" is not client_secret_post or client_secret_basic"
                            ),
                        },
                    }
                }
                other => bail!(
                    "{at}: auth = \"{other}\" is not one of bearer, header, query, basic, oauth2"
                ),
            };
        }
        let oauth_only = [
            ("authorize_url", r.authorize_url.is_some()),
            (
                "extra_authorize_params",
                !r.extra_authorize_params.is_empty(),
            ),
            ("scope_separator", r.scope_separator.is_some()),
            ("token_auth", r.token_auth.is_some()),
        ];
        if let Some((key, _)) = oauth_only.iter().find(|(_, set)| *set)
            && !p.auth.is_oauth2()
        {
            bail!("{at}: {key} applies to auth = \"oauth2\" only");
        }
        // The flow's own parameters are not the operator's to set.
        const FLOW_PARAMS: [&str; 7] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "code_challenge",
            "code_challenge_method",
        ];
        if let Some(name) = r
            .extra_authorize_params
            .keys()
            .find(|k| FLOW_PARAMS.contains(&k.as_str()))
        {
            bail!("{at}: extra_authorize_params may not set {name}; it is part of the flow");
        }
        match existing {
            Some(i) => platforms[i] = p,
            None => platforms.push(p),
        }
    }
    Ok(Catalog::new(platforms))
}
