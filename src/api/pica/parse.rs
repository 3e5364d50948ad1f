//! Reading requests into domain types; every failure names its field.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::error::PicaError;
use crate::domain::catalog::CatalogFilter;
use crate::domain::connect::NewSession;
use crate::domain::echo::echo;
use crate::domain::integration::{
    ConnectionState, CreateIntegration, IdentityType, ListFilter, MAX_LIST_LIMIT, Patch,
};

const DEFAULT_LIMIT: i64 = 20;
/// Enough for the whole built-in catalog on one page.
const DEFAULT_CATALOG_LIMIT: usize = 100;

/// The list call's parameters; others are ignored.
const FILTERS: &[&str] = &[
    "key",
    "keys",
    "platformVersion",
    "name",
    "identityType",
    "identity",
    "platform",
    "tags",
    "active",
    "state",
    "limit",
    "page",
    "skip",
];

/// `a, b,,c` as `[a, b, c]`.
pub(in crate::api) fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The filter, offset, limit and reported page of a list call.
pub fn parse_list(query: Option<&str>) -> Result<(ListFilter, i64, i64, u64), PicaError> {
    let mut filter = ListFilter {
        active: true,
        ..ListFilter::default()
    };
    let mut limit = DEFAULT_LIMIT;
    let mut page: Option<i64> = None;
    let mut skip: Option<i64> = None;
    let int = |name: &str, v: &str, min: i64| {
        v.parse::<i64>().ok().filter(|n| *n >= min).ok_or_else(|| {
            PicaError::invalid(
                name,
                format!(
                    "{name} must be an integer of at least {min}, got '{}'",
                    echo(v)
                ),
            )
        })
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        // No stored value holds a NUL (PostgreSQL's text cannot), so none can match one.
        if let Some(name) = FILTERS.iter().find(|f| **f == k.as_ref())
            && v.contains('\0')
        {
            return Err(PicaError::invalid(
                name,
                format!("{name} must not contain NUL characters"),
            ));
        }
        match k.as_ref() {
            "key" | "keys" => filter.keys.extend(comma_list(v)),
            "platformVersion" => filter.platform_version = Some(v.to_owned()),
            "name" => filter.name = Some(v.to_owned()),
            "identityType" => {
                filter.identity_type = Some(IdentityType::parse(v).ok_or_else(|| {
                    PicaError::invalid(
                        "identityType",
                        format!(
                            "identityType must be user, team, organization or project, got '{}'",
                            echo(v)
                        ),
                    )
                })?)
            }
            "identity" => filter.identity = Some(v.to_owned()),
            "platform" => filter.platform = Some(v.to_owned()),
            "tags" => filter.tags.extend(comma_list(v)),
            "active" => {
                filter.active = match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(PicaError::invalid(
                            "active",
                            format!("active must be true or false, got '{}'", echo(v)),
                        ));
                    }
                }
            }
            "state" => {
                filter.state = Some(ConnectionState::parse(v).ok_or_else(|| {
                    PicaError::invalid(
                        "state",
                        format!(
                            "state must be operational, degraded, failed or unknown, got '{}'",
                            echo(v)
                        ),
                    )
                })?)
            }
            "limit" => {
                limit = int("limit", v, 1)?;
                if limit > MAX_LIST_LIMIT {
                    return Err(PicaError::invalid(
                        "limit",
                        format!("limit must be at most {MAX_LIST_LIMIT}"),
                    ));
                }
            }
            "page" => page = Some(int("page", v, 1)?),
            "skip" => skip = Some(int("skip", v, 0)?),
            _ => {}
        }
    }
    let (offset, reported_page) = match (skip, page) {
        (Some(skip), _) => (skip, (skip / limit + 1) as u64),
        (None, Some(page)) => (page.saturating_sub(1).saturating_mul(limit), page as u64),
        (None, None) => (0, 1),
    };
    Ok((filter, offset, limit, reported_page))
}

fn credential_map(map: &Map<String, Value>) -> Result<BTreeMap<String, SecretString>, PicaError> {
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), SecretString::from(s.clone()))),
            Value::Number(n) => Ok((k.clone(), SecretString::from(n.to_string()))),
            _ => Err(PicaError::invalid(
                &format!("credentials.{}", echo(k)),
                format!("credentials.{} must be a string", echo(k)),
            )),
        })
        .collect()
}

pub fn parse_create(body: &Map<String, Value>) -> Result<CreateIntegration, PicaError> {
    let text = |name: &str| -> Result<Option<String>, PicaError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(PicaError::invalid(name, format!("{name} must be a string"))),
        }
    };
    let required = |name: &str| {
        text(name)?.ok_or_else(|| PicaError::invalid(name, format!("{name} is required")))
    };
    let identity_type = required("identityType")?;
    let tags = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| PicaError::invalid("tags", "tags must be an array of strings"))?,
    };
    let active = match body.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(PicaError::invalid("active", "active must be a boolean")),
    };
    let credentials = match body.get("credentials") {
        Some(Value::Object(map)) => credential_map(map)?,
        None | Some(Value::Null) => {
            return Err(PicaError::invalid("credentials", "credentials is required"));
        }
        Some(_) => {
            return Err(PicaError::invalid(
                "credentials",
                "credentials must be an object",
            ));
        }
    };
    Ok(CreateIntegration {
        platform: required("platform")?,
        identity: required("identity")?,
        identity_type: IdentityType::parse(&identity_type).ok_or_else(|| {
            PicaError::invalid(
                "identityType",
                "identityType must be user, team, organization or project",
            )
        })?,
        name: text("name")?,
        tags,
        active,
        credentials,
        state: ConnectionState::Unknown,
    })
}

/// A PATCH body: `tags` (replaces), `name`, `active`, `credentials` (replaces).
pub fn parse_patch(body: &Map<String, Value>) -> Result<Patch, PicaError> {
    let mut patch = Patch::default();
    for (k, v) in body {
        match (k.as_str(), v) {
            ("tags", Value::Array(items)) => {
                patch.tags = Some(
                    items
                        .iter()
                        .map(|t| t.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            PicaError::invalid("tags", "tags must be an array of strings")
                        })?,
                )
            }
            ("name", Value::String(n)) => patch.name = Some(Some(n.clone())),
            ("name", Value::Null) => patch.name = Some(None),
            ("active", Value::Bool(a)) => patch.active = Some(*a),
            ("credentials", Value::Object(map)) => patch.credentials = Some(credential_map(map)?),
            ("tags" | "name" | "active", _) => {
                return Err(PicaError::invalid(k, format!("{k} has the wrong type")));
            }
            _ => {
                let k = echo(k);
                return Err(PicaError::invalid(
                    &k,
                    format!("{k} cannot be changed; use tags, name, active or credentials"),
                ));
            }
        }
    }
    Ok(patch)
}

/// A connect session's create body. Pica's AuthKit names are accepted where they mean the
/// same: `group` for `identity`, `label` for `name`.
pub fn parse_new_session(body: &Map<String, Value>) -> Result<NewSession, PicaError> {
    const KNOWN: &[&str] = &[
        "identity",
        "group",
        "identityType",
        "platforms",
        "tags",
        "name",
        "label",
        "connectionKey",
        "returnUrl",
    ];
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(PicaError::invalid(
            &echo(unknown),
            format!(
                "unknown field '{}'; a session takes {}",
                echo(unknown),
                KNOWN.join(", ")
            ),
        ));
    }
    let text = |names: &[&str]| -> Result<Option<String>, PicaError> {
        for name in names {
            match body.get(*name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(_) => {
                    return Err(PicaError::invalid(name, format!("{name} must be a string")));
                }
            }
        }
        Ok(None)
    };
    let list = |name: &str| -> Result<Vec<String>, PicaError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        PicaError::invalid(name, format!("{name} must be an array of strings"))
                    })
                })
                .collect(),
            Some(_) => Err(PicaError::invalid(
                name,
                format!("{name} must be an array of strings"),
            )),
        }
    };
    let identity = text(&["identity", "group"])?
        .ok_or_else(|| PicaError::invalid("identity", "identity is required"))?;
    let identity_type = match text(&["identityType"])? {
        None => IdentityType::User,
        Some(t) => IdentityType::parse(&t).ok_or_else(|| {
            PicaError::invalid(
                "identityType",
                "identityType must be user, team, organization or project",
            )
        })?,
    };
    Ok(NewSession {
        identity,
        identity_type,
        platforms: list("platforms")?,
        tags: list("tags")?,
        name: text(&["name", "label"])?,
        reconnect_key: text(&["connectionKey"])?,
        return_url: text(&["returnUrl"])?,
    })
}

/// The catalog's filters and paging: the filter, offset, limit and reported page.
pub fn parse_catalog_query(
    query: Option<&str>,
) -> Result<(CatalogFilter, usize, usize, u64), PicaError> {
    let mut filter = CatalogFilter::default();
    let mut limit = DEFAULT_CATALOG_LIMIT;
    let mut page = 1;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let number = |name: &str| {
            v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                PicaError::invalid(
                    name,
                    format!("{name} must be an integer of at least 1, got '{}'", echo(v)),
                )
            })
        };
        match k.as_ref() {
            "platform" => filter.platform = Some(v.to_owned()),
            "key" => filter.key = Some(v.to_owned()),
            "name" => filter.name = Some(v.to_owned()),
            "category" => filter.category = Some(v.to_owned()),
            "authkit" => {
                filter.authkit = Some(match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(PicaError::invalid(
                            "authkit",
                            format!("authkit must be true or false, got '{}'", echo(v)),
                        ));
                    }
                })
            }
            "limit" => {
                limit = number("limit")?;
                if limit > MAX_LIST_LIMIT as usize {
                    return Err(PicaError::invalid(
                        "limit",
                        format!("limit must be at most {MAX_LIST_LIMIT}"),
                    ));
                }
            }
            "page" => page = number("page")?,
            _ => {}
        }
    }
    Ok((filter, (page - 1).saturating_mul(limit), limit, page as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_by_page_or_skip() {
        let (_, offset, limit, page) = parse_list(Some("limit=50&page=3")).unwrap();
        assert_eq!((offset, limit, page), (100, 50, 3));
        let (_, offset, _, page) = parse_list(Some("limit=50&skip=120")).unwrap();
        assert_eq!((offset, page), (120, 3));
        let (f, offset, limit, page) = parse_list(None).unwrap();
        assert_eq!((offset, limit, page, f.active), (0, 20, 1, true));
        for bad in [
            "limit=0",
            "limit=1001",
            "page=0",
            "skip=-1",
            "active=yes",
            "identityType=robot",
            "limit=x",
        ] {
            assert!(parse_list(Some(bad)).is_err(), "{bad}");
        }
        let (f, ..) = parse_list(Some("keys=a,b&key=c&tags=x,%20y&active=false")).unwrap();
        assert_eq!(f.keys, ["a", "b", "c"]);
        assert_eq!(f.tags, ["x", "y"]);
        assert!(!f.active);
    }
}
