//! A request's URL parameters, read once: what the gateway itself looks at, and the query
//! string it forwards (every other parameter byte for byte).

use std::borrow::Cow;

#[derive(Debug, Default)]
pub struct QueryParams {
    /// A `query` parameter is present (`GET /` without one is a liveness probe).
    pub has_query: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub session_id: Option<String>,
    pub quota_key: Option<String>,
    /// The query string for the upstream: without the client's credentials, and without
    /// `quota_key` (sent as a header instead).
    pub upstream: String,
}

fn decoded(raw: &str) -> Cow<'_, str> {
    if raw.contains(['%', '+']) {
        url::form_urlencoded::parse(format!("x={raw}").as_bytes())
            .next()
            .map_or(Cow::Borrowed(""), |(_, v)| Cow::Owned(v.into_owned()))
    } else {
        Cow::Borrowed(raw)
    }
}

impl QueryParams {
    pub fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        let Some(query) = query else {
            return params;
        };
        params.upstream.reserve(query.len());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match &*decoded(key) {
                "user" => &mut params.user,
                "password" => &mut params.password,
                "quota_key" => &mut params.quota_key,
                name => {
                    match name {
                        "query" => params.has_query = true,
                        "database" => params.database = Some(decoded(value).into_owned()),
                        "session_id" => params.session_id = Some(decoded(value).into_owned()),
                        _ => {}
                    }
                    if !params.upstream.is_empty() {
                        params.upstream.push('&');
                    }
                    params.upstream.push_str(pair);
                    continue;
                }
            };
            *slot = Some(decoded(value).into_owned());
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_the_query_and_the_rest_kept_verbatim() {
        let p = QueryParams::parse(Some(
            "user=u&query=SELECT%201&password=p&database=db&default_format=JSONEachRow",
        ));
        assert_eq!(
            p.upstream,
            "query=SELECT%201&database=db&default_format=JSONEachRow"
        );
        assert_eq!(
            (p.user.as_deref(), p.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert!(p.has_query);
        assert_eq!(p.database.as_deref(), Some("db"));
        let p = QueryParams::parse(Some("us%65r=u&x=1&quota_key=k%20q&session_id=s+1"));
        assert_eq!(
            p.upstream, "x=1&session_id=s+1",
            "encoded names are decoded first"
        );
        assert_eq!(p.user.as_deref(), Some("u"));
        assert_eq!(p.quota_key.as_deref(), Some("k q"));
        assert_eq!(p.session_id.as_deref(), Some("s 1"));
        assert_eq!(QueryParams::parse(None).upstream, "");
        assert!(!QueryParams::parse(Some("database=x")).has_query);
    }
}
