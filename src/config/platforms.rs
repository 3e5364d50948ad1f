//! Validating `[[platforms]]`: additions to the connector catalog and overrides of built-in
//! platforms' fields.

use anyhow::{Context, bail};
use url::Url;

use super::raw::RawPlatform;
use super::validate::read_secret_file;
use crate::domain::catalog::{AuthMethod, Catalog, Platform, builtin_platforms};

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
        if let Some(allow) = r.allow_private_network {
            p.allow_private_network = allow;
        }
        if let Some(auth) = r.auth.as_deref() {
            p.auth = match auth {
                "bearer" => AuthMethod::Bearer,
                "header" => AuthMethod::Header {
                    name: r.header_name.clone().unwrap_or_else(|| "x-api-key".into()),
                },
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
                    }
                }
                other => bail!(
                    "{at}: auth = \"{other}\" is not one of bearer, header, query, basic, oauth2"
                ),
            };
        }
        match existing {
            Some(i) => platforms[i] = p,
            None => platforms.push(p),
        }
    }
    Ok(Catalog::new(platforms))
}
