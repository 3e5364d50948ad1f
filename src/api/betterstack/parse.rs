//! Reading requests into domain types; every failure names its field, and a body's field
//! errors are all reported at once.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::domain::allowlist::{AllowEntry, IpAllowlist, MAX_ENTRIES as MAX_ALLOWLIST};
use crate::domain::audit::{AuditFilter, Outcome};
use crate::domain::data_connection::{ClientType, CreateDataConnection, FieldError, TeamSelector};
use crate::domain::echo::echo;
use crate::domain::pagination::PageRequest;
use crate::domain::ports::ConnectionUpdate;
use crate::domain::time::Timestamp;

pub const DEFAULT_PER_PAGE: u64 = 50;
pub const MAX_PER_PAGE: u64 = 250;

pub fn parse_list_query(query: Option<&str>) -> Result<PageRequest, ApiError> {
    let mut number = 1;
    let mut size = DEFAULT_PER_PAGE;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim();
        match key.as_ref() {
            "page" if !value.is_empty() => {
                number = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "page",
                            format!("page must be a positive integer, got '{}'", echo(value)),
                        )
                    })?;
            }
            "per_page" if !value.is_empty() => {
                size = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "per_page",
                            format!(
                                "per_page must be an integer from 1 to {MAX_PER_PAGE}, got '{}'",
                                echo(value)
                            ),
                        )
                    })?
                    .min(MAX_PER_PAGE);
            }
            _ => {}
        }
    }
    Ok(PageRequest { number, size })
}

/// At most this many messages about one field; the rest are counted.
const MESSAGES_PER_FIELD: usize = 5;
/// The most teams one connection names.
pub const MAX_TEAMS: usize = 100;

/// Collects every field error of a body, so one response lists them all (a few messages
/// per field, and how many more).
#[derive(Default)]
struct FieldErrors {
    messages: Vec<String>,
    fields: Vec<&'static str>,
    /// Per field: messages seen, and how many were left out.
    counts: Vec<(&'static str, usize)>,
}

impl FieldErrors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if !self.fields.contains(&field) {
            self.fields.push(field);
        }
        let count = match self.counts.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => n,
            None => {
                self.counts.push((field, 0));
                &mut self.counts.last_mut().expect("just pushed").1
            }
        };
        *count += 1;
        if *count <= MESSAGES_PER_FIELD {
            self.messages.push(message.into());
        }
    }

    fn into_result<T>(mut self, value: impl FnOnce() -> T) -> Result<T, ApiError> {
        if self.messages.is_empty() {
            return Ok(value());
        }
        for (field, n) in &self.counts {
            if *n > MESSAGES_PER_FIELD {
                self.messages
                    .push(format!("{field}: {} more problems", n - MESSAGES_PER_FIELD));
            }
        }
        Err(ApiError::Invalid {
            message: self.messages.join("; "),
            fields: self.fields,
        })
    }
}

/// A present, non-null field.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn string_field(
    body: &Map<String, Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<String> {
    match field(body, name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.add(name, format!("{name} must be a string"));
            None
        }
    }
}

fn string_array(
    body: &Map<String, Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Vec<String>> {
    let items = field(body, name)?;
    let parsed = items.as_array().and_then(|a| {
        a.iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    });
    if parsed.is_none() {
        errors.add(name, format!("{name} must be an array of strings"));
    }
    parsed
}

/// A create request as far as it parses; `client_type` is `None` only beside an error.
pub struct CreateDraft {
    client_type: Option<ClientType>,
    pub teams: TeamSelector,
    pub data_region: Option<String>,
    ip_allowlist: IpAllowlist,
    pub valid_until: Option<Timestamp>,
    pub note: Option<String>,
}

/// Parses a create body; when a field does not parse, `check` (the domain's rules) still
/// looks at the fields that did, so one 422 names every invalid field.
pub fn parse_create_checked(
    body: &Map<String, Value>,
    check: impl FnOnce(&CreateDraft) -> Vec<FieldError>,
) -> Result<CreateDataConnection, ApiError> {
    let (draft, mut errors) = parse_draft(body);
    if !errors.messages.is_empty() {
        for e in check(&draft) {
            errors.add(e.field, e.message);
        }
    }
    errors.into_result(|| CreateDataConnection {
        client_type: draft
            .client_type
            .expect("checked: no errors means client_type parsed"),
        teams: draft.teams,
        data_region: draft.data_region,
        ip_allowlist: draft.ip_allowlist,
        valid_until: draft.valid_until,
        note: draft.note,
    })
}

fn parse_draft(body: &Map<String, Value>) -> (CreateDraft, FieldErrors) {
    let mut errors = FieldErrors::default();

    let client_type = match field(body, "client_type") {
        None => {
            errors.add("client_type", "client_type is required; use \"clickhouse\"");
            None
        }
        Some(Value::String(s)) => {
            let parsed = ClientType::parse(s);
            if parsed.is_none() {
                errors.add(
                    "client_type",
                    format!(
                        "client_type '{}' is not supported; the only supported value is \"clickhouse\"",
                        echo(s)
                    ),
                );
            }
            parsed
        }
        Some(_) => {
            errors.add("client_type", "client_type must be a string");
            None
        }
    };

    let team_names = string_array(body, "team_names", &mut errors);
    let team_ids = field(body, "team_ids").and_then(|v| {
        let parsed = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>());
        if parsed.is_none() {
            errors.add("team_ids", "team_ids must be an array of integers");
        }
        parsed
    });
    let mut too_many = |name: &'static str, count: Option<usize>| {
        let over = count.is_some_and(|n| n > MAX_TEAMS);
        if over {
            errors.add(
                name,
                format!(
                    "{name} names at most {MAX_TEAMS} teams, got {}",
                    count.unwrap_or(0)
                ),
            );
        }
        over
    };
    // A list over the limit is not looked at further.
    let team_names = team_names.filter(|l| !too_many("team_names", Some(l.len())));
    let team_ids = team_ids.filter(|l| !too_many("team_ids", Some(l.len())));
    let teams = match (team_names, team_ids) {
        (Some(_), Some(_)) => {
            errors
                .messages
                .push("Cannot specify both team_names and team_ids".into());
            errors.fields.extend(["team_names", "team_ids"]);
            TeamSelector::Unspecified
        }
        (Some(names), None) => TeamSelector::Names(names),
        (None, Some(ids)) => TeamSelector::Ids(ids),
        (None, None) => TeamSelector::Unspecified,
    };

    let data_region = string_field(body, "data_region", &mut errors);

    let ip_allowlist = allowlist_field(body, &mut errors).unwrap_or_default();
    let valid_until = valid_until_field(body, &mut errors);
    let note = string_field(body, "note", &mut errors);

    let draft = CreateDraft {
        client_type,
        teams,
        data_region,
        ip_allowlist,
        valid_until,
        note,
    };
    (draft, errors)
}

/// `ip_allowlist` if present: every entry an address or CIDR range.
fn allowlist_field(body: &Map<String, Value>, errors: &mut FieldErrors) -> Option<IpAllowlist> {
    let allowlist = string_array(body, "ip_allowlist", errors)?;
    if allowlist.len() > MAX_ALLOWLIST {
        errors.add(
            "ip_allowlist",
            format!(
                "ip_allowlist holds at most {MAX_ALLOWLIST} entries, got {}",
                allowlist.len()
            ),
        );
    }
    let mut entries = Vec::new();
    for entry in allowlist.iter().take(MAX_ALLOWLIST) {
        match entry.parse::<AllowEntry>() {
            Ok(e) => entries.push(e),
            Err(e) => errors.add("ip_allowlist", format!("ip_allowlist: {e}")),
        }
    }
    Some(IpAllowlist::new(entries))
}

/// `valid_until` if present and not null: an ISO 8601 timestamp.
fn valid_until_field(body: &Map<String, Value>, errors: &mut FieldErrors) -> Option<Timestamp> {
    string_field(body, "valid_until", errors).and_then(|s| {
        let parsed = Timestamp::parse_iso8601(&s);
        if parsed.is_none() {
            errors.add(
                "valid_until",
                format!(
                    "valid_until: '{}' is not an ISO 8601 timestamp like 2025-12-02T00:00:00Z",
                    echo(&s)
                ),
            );
        }
        parsed
    })
}

/// Fields a connection keeps for life: a PATCH naming one is refused, naming it.
const IMMUTABLE: &[&str] = &["client_type", "team_ids", "team_names", "data_region"];
/// What a PATCH may change.
const MUTABLE: &[&str] = &["note", "valid_until", "ip_allowlist"];

/// A PATCH body: `note` and `valid_until` (null clears them), `ip_allowlist`.
pub fn parse_update(body: &Map<String, Value>) -> Result<ConnectionUpdate, ApiError> {
    let mut errors = FieldErrors::default();
    for (name, _) in body {
        if let Some(field) = IMMUTABLE.iter().find(|f| **f == name.as_str()) {
            errors.add(
                field,
                format!("{field} cannot be changed; create a new connection instead"),
            );
        } else if !MUTABLE.contains(&name.as_str()) {
            errors.add(
                "body",
                format!(
                    "'{}' is not a field that can be changed; use note, valid_until or ip_allowlist",
                    echo(name)
                ),
            );
        }
    }
    if body.keys().all(|k| !MUTABLE.contains(&k.as_str())) && errors.messages.is_empty() {
        errors.add(
            "body",
            "nothing to change: send note, valid_until or ip_allowlist",
        );
    }
    let null_or = |name: &str| body.get(name).map(Value::is_null);
    let update = ConnectionUpdate {
        note: match null_or("note") {
            None => None,
            Some(true) => Some(None),
            Some(false) => string_field(body, "note", &mut errors).map(Some),
        },
        valid_until: match null_or("valid_until") {
            None => None,
            Some(true) => Some(None),
            Some(false) => valid_until_field(body, &mut errors).map(Some),
        },
        ip_allowlist: if null_or("ip_allowlist") == Some(true) {
            errors.add(
                "ip_allowlist",
                "ip_allowlist must be an array of strings ([] allows any address)",
            );
            None
        } else {
            allowlist_field(body, &mut errors)
        },
    };
    errors.into_result(|| update)
}

/// A rotate-password body (none, or `{"overlap_seconds": N}`): how long the old password
/// keeps working.
pub fn parse_rotate(body: Option<&Map<String, Value>>) -> Result<std::time::Duration, ApiError> {
    let mut errors = FieldErrors::default();
    let mut overlap = std::time::Duration::ZERO;
    if let Some(body) = body {
        for (name, value) in body {
            match (name.as_str(), value) {
                ("overlap_seconds", Value::Null) => {}
                ("overlap_seconds", v) => match v.as_u64() {
                    Some(n) => overlap = std::time::Duration::from_secs(n),
                    None => errors.add(
                        "overlap_seconds",
                        "overlap_seconds must be a whole number of seconds, 0 or more",
                    ),
                },
                (other, _) => errors.add(
                    "body",
                    format!(
                        "'{}' is not a field of this call; use overlap_seconds",
                        echo(other)
                    ),
                ),
            }
        }
    }
    errors.into_result(|| overlap)
}

/// The audit listing's filters: `actor` (`api_token:3`, `cli`, an e-mail...), `action`,
/// `target`, `outcome`, and `since`/`until` (ISO 8601; `until` excluded).
pub fn parse_audit_filter(query: Option<&str>) -> Result<AuditFilter, ApiError> {
    let mut filter = AuditFilter::default();
    let mut errors = FieldErrors::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let moment = |name: &'static str, errors: &mut FieldErrors| {
            let parsed = Timestamp::parse_iso8601(value).map(|t| t.as_millis() * 1000);
            if parsed.is_none() {
                errors.add(
                    name,
                    format!(
                        "{name}: '{}' is not an ISO 8601 timestamp like 2025-12-02T00:00:00Z",
                        echo(value)
                    ),
                );
            }
            parsed
        };
        match key.as_ref() {
            "actor" => {
                if let Err(message) = filter.set_actor(value) {
                    errors.add("actor", message);
                }
            }
            "action" => filter.action = Some(value.to_owned()),
            "target" => filter.target = Some(value.to_owned()),
            "outcome" => match Outcome::parse(value) {
                Some(o) => filter.outcome = Some(o),
                None => errors.add(
                    "outcome",
                    format!(
                        "outcome must be success, refused, rejected or failed, not '{}'",
                        echo(value)
                    ),
                ),
            },
            "since" => filter.since = moment("since", &mut errors),
            "until" => filter.until = moment("until", &mut errors),
            _ => {}
        }
    }
    errors.into_result(|| filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parse alone, no domain rules.
    fn parse_create(body: &Map<String, Value>) -> Result<CreateDataConnection, ApiError> {
        parse_create_checked(body, |_| Vec::new())
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn invalid_fields(v: Value) -> Vec<&'static str> {
        match parse_create(&body(v)) {
            Err(ApiError::Invalid { fields, .. }) => fields,
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(invalid_fields(json!({})), ["client_type"]);
        assert_eq!(
            invalid_fields(json!({"client_type": "mysql"})),
            ["client_type"]
        );
        assert_eq!(invalid_fields(json!({"client_type": 1})), ["client_type"]);
        assert_eq!(
            invalid_fields(
                json!({"client_type": "clickhouse", "team_names": ["a"], "team_ids": [1]})
            ),
            ["team_names", "team_ids"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "team_ids": ["1"]})),
            ["team_ids"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "team_names": "a"})),
            ["team_names"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "ip_allowlist": ["10.0.0.1/33"]})),
            ["ip_allowlist"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "ip_allowlist": "10.0.0.1"})),
            ["ip_allowlist"]
        );
        assert_eq!(
            invalid_fields(
                json!({"client_type": "clickhouse", "valid_until": "2025-13-45T00:00:00Z"})
            ),
            ["valid_until"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "note": 5})),
            ["note"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "clickhouse", "data_region": []})),
            ["data_region"]
        );
        assert_eq!(
            invalid_fields(json!({"client_type": "x", "note": 5, "valid_until": "no"})),
            ["client_type", "valid_until", "note"]
        );
    }

    #[test]
    fn nulls_are_absent_fields() {
        let parsed = parse_create(&body(json!({
            "client_type": "clickhouse", "note": null, "team_ids": null, "team_names": ["A"],
            "ip_allowlist": null, "valid_until": null, "data_region": null
        })))
        .unwrap();
        assert_eq!(parsed.teams, TeamSelector::Names(vec!["A".into()]));
        assert!(parsed.note.is_none() && parsed.valid_until.is_none());
    }

    #[test]
    fn list_query_rules() {
        let p = |q: &str| parse_list_query(Some(q));
        assert_eq!(
            p("").unwrap(),
            PageRequest {
                number: 1,
                size: 50
            }
        );
        assert_eq!(
            p("page=3&per_page=1").unwrap(),
            PageRequest { number: 3, size: 1 }
        );
        assert_eq!(p("per_page=251").unwrap().size, 250);
        assert_eq!(p("per_page=250").unwrap().size, 250);
        for bad in [
            "per_page=0",
            "per_page=abc",
            "page=0",
            "page=-1",
            "page=abc",
            "per_page=1.5",
        ] {
            assert!(matches!(p(bad), Err(ApiError::Invalid { .. })), "{bad}");
        }
    }
}
