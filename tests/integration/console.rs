//! The operator console over HTTP, as a browser without JavaScript uses it: sign-in and
//! the session cookie, CSRF and origin refusals, every page and form, a team token's
//! limits, revocation taking effect at once, and no secret on any page but the one that
//! shows it once. `console_browser` clicks the same pages in Chromium.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::common::{TEST_SECRET, TOKEN, TOPOLOGY, TestServer};

pub const PLATFORMS: &str = r#"
[[platforms]]
platform = "resend"
base_url = "http://127.0.0.1:9"
allow_private_network = true
"#;

pub async fn start() -> TestServer {
    TestServer::start(&format!("{TOPOLOGY}{PLATFORMS}")).await
}

/// A browser session: a cookie jar of one cookie, redirects shown, not followed.
pub struct Console<'a> {
    pub server: &'a TestServer,
    client: reqwest::Client,
    pub cookie: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the form field with this id (`<input id=... value=...>`).
    pub fn input_value(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let tag_start = self.body[..at].rfind('<')?;
        let tag = &self.body[tag_start..tag_start + self.body[tag_start..].find('>')?];
        let value = tag.split("value=\"").nth(1)?;
        Some(html_unescape(&value[..value.find('"')?]))
    }

    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        self.body[at..at + self.body[at..].find('"').unwrap()].to_owned()
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn read(resp: reqwest::Response) -> Page {
    Page {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// Posts a sign-in form; returns the answer.
pub async fn post_sign_in(server: &TestServer, credential: &str) -> Page {
    let resp = no_redirects()
        .post(server.url("/console/sign-in"))
        .form(&[("credential", credential)])
        .send()
        .await
        .unwrap();
    read(resp).await
}

impl<'a> Console<'a> {
    pub async fn sign_in(server: &'a TestServer, credential: &str) -> Self {
        let page = post_sign_in(server, credential).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let set = page.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        Self {
            server,
            client: no_redirects(),
            cookie,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let resp = self
            .client
            .get(self.server.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Posts `fields` with exactly the headers given (no CSRF token added).
    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .client
            .post(self.server.url(path))
            .header("cookie", &self.cookie)
            .form(fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.unwrap()).await
    }

    /// Posts a form as the console's own page does: with the session's CSRF token and
    /// the browser's same-origin headers.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get("/console/topology").await.csrf();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        let origin = self.server.base.clone();
        self.post_raw(
            path,
            &all,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await
    }
}

fn assert_page(page: &Page, status: StatusCode) {
    assert_eq!(page.status, status, "{}", page.body);
    let ct = page.headers.get("content-type").unwrap().to_str().unwrap();
    assert_eq!(ct, "text/html; charset=utf-8");
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(page.headers.get("referrer-policy").unwrap(), "same-origin");
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
}

#[tokio::test]
async fn signing_in_and_out() {
    let server = start().await;
    let anonymous = no_redirects();
    let home = read(anonymous.get(server.url("/console/")).send().await.unwrap()).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.location(), "/console/sign-in");
    let form = read(
        anonymous
            .get(server.url("/console/sign-in"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_page(&form, StatusCode::OK);
    assert!(form.body.contains(r#"<label for="credential">"#));

    let refused = post_sign_in(&server, "not-a-token-at-all").await;
    assert_page(&refused, StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .body
            .contains("not a valid API token or vault secret")
    );
    assert!(refused.headers.get(SET_COOKIE).is_none());

    let signed_in = post_sign_in(&server, TOKEN).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let cookie = signed_in.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{cookie} has {attribute}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    assert!(!cookie.contains(TOKEN), "the token is never the cookie");

    let console = Console::sign_in(&server, TOKEN).await;
    let home = console.get("/console/").await;
    assert_eq!(home.location(), "/console/data-connections");
    let list = console.get("/console/data-connections").await;
    assert_page(&list, StatusCode::OK);
    assert!(list.body.contains("Global token #"));
    assert!(!list.body.contains(TOKEN), "no page shows the token");

    // Sign-out is a form like any other: refused without the session's CSRF token.
    let forged = console.post_raw("/console/sign-out", &[], &[]).await;
    assert_page(&forged, StatusCode::FORBIDDEN);
    assert_eq!(
        console.get("/console/topology").await.status,
        StatusCode::OK
    );
    let out = console.post("/console/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers
            .get(SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = console.get("/console/data-connections").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session is gone");
    assert_eq!(after.location(), "/console/sign-in");

    // A vault secret opens the vault instead.
    let vault = Console::sign_in(&server, TEST_SECRET).await;
    assert_eq!(vault.get("/console/").await.location(), "/console/vault");
    assert_page(
        &vault.get("/console/data-connections").await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn forms_from_elsewhere_are_refused() {
    let server = start().await;
    let console = Console::sign_in(&server, TOKEN).await;
    let csrf = console.get("/console/topology").await.csrf();
    let create = [("note", "x"), ("csrf", csrf.as_str())];
    for (why, fields, headers) in [
        ("no token", &create[..1], vec![]),
        (
            "a wrong token",
            &[("note", "x"), ("csrf", "AAAA")][..],
            vec![],
        ),
        (
            "another site's origin",
            &create[..],
            vec![("origin", "https://evil.example")],
        ),
        (
            "a cross-site fetch",
            &create[..],
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        let page = console
            .post_raw("/console/data-connections", fields, &headers)
            .await;
        assert_page(&page, StatusCode::FORBIDDEN);
        assert!(!page.body.contains(&csrf), "{why}");
    }
    // Another session's token does not fit this session.
    let other = Console::sign_in(&server, TOKEN).await;
    let theirs = other.get("/console/topology").await.csrf();
    assert_ne!(theirs, csrf);
    let page = console
        .post_raw(
            "/console/data-connections",
            &[("note", "x"), ("csrf", &theirs)],
            &[],
        )
        .await;
    assert_page(&page, StatusCode::FORBIDDEN);
    assert_eq!(count_connections(&server).await, 0, "nothing was created");

    // Without a session, a post goes to sign in; unknown paths and methods are pages.
    let anonymous = no_redirects()
        .post(server.url("/console/data-connections"))
        .form(&[("note", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_page(
        &console.get("/console/nothing-here").await,
        StatusCode::NOT_FOUND,
    );
    let put = read(
        no_redirects()
            .put(server.url("/console/sign-in"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_page(&put, StatusCode::METHOD_NOT_ALLOWED);
}

/// How many data connections the API lists (the tests make fewer than a page).
async fn count_connections(server: &TestServer) -> usize {
    server.get_json("/api/v1/connections").await["data"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_data_connection_is_made_read_once_and_deleted() {
    let server = start().await;
    let console = Console::sign_in(&server, TOKEN).await;
    let form = console.get("/console/data-connections/new").await;
    assert_page(&form, StatusCode::OK);
    for offered in [
        "My Team",
        "Other Team",
        "germany",
        "local",
        r#"type="datetime-local""#,
    ] {
        assert!(form.body.contains(offered), "the form offers {offered}");
    }

    // Every wrong field at once, and the form comes back filled in.
    let refused = console
        .post(
            "/console/data-connections",
            &[
                ("team", "1234"),
                ("data_region", "mars"),
                ("ip_allowlist", "10.0.0.1/8, nonsense"),
                ("valid_until", "2001-01-01T00:00"),
                ("note", "keep me"),
            ],
        )
        .await;
    assert_page(&refused, StatusCode::BAD_REQUEST);
    for message in [
        "has host bits set; the range is 10.0.0.0/8",
        "'nonsense' is not an IP address",
        "data_region 'mars' is not a configured region",
        "valid_until",
    ] {
        assert!(
            refused.body.contains(message),
            "names {message}: {}",
            refused.body
        );
    }
    assert!(refused.body.contains(r#"value="keep me""#));
    assert_eq!(count_connections(&server).await, 0);

    let made = console
        .post(
            "/console/data-connections",
            &[
                ("team", "1234"),
                ("data_region", "local"),
                ("ip_allowlist", "127.0.0.1\n203.0.113.0/24"),
                ("valid_until", "2099-06-01T12:30"),
                ("note", "console test"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let at = made.location().to_owned();
    let id: i64 = at.rsplit('/').next().unwrap().parse().unwrap();

    let shown = console.get(&at).await;
    assert_page(&shown, StatusCode::OK);
    assert!(shown.body.contains("copy it now"));
    let password = shown.input_value("password").expect("the password, once");
    assert_eq!(password.len(), 64);
    let sample = shown.body.clone();
    assert!(
        sample.contains(&password),
        "the sample query carries it too"
    );

    let api: serde_json::Value = server.get_json(&format!("/api/v1/connections/{id}")).await;
    let a = &api["data"]["attributes"];
    assert_eq!(a["note"], "console test");
    assert_eq!(a["team_ids"], json!([1234]));
    assert_eq!(a["data_region"], "local-1");
    assert_eq!(a["ip_allowlist"], json!(["127.0.0.1", "203.0.113.0/24"]));
    assert_eq!(a["valid_until"], "2099-06-01T12:30:00.000Z");
    let username = a["username"].as_str().unwrap().to_owned();
    assert_eq!(
        server.gateway_verdict(&username, &password).await,
        "accepted",
        "the revealed password authenticates at the gateway"
    );
    assert_eq!(server.gateway_verdict(&username, "wrong").await, "refused");

    // Gone on reload, and on every other page.
    let again = console.get(&at).await;
    assert_page(&again, StatusCode::OK);
    assert!(again.input_value("password").is_none());
    assert!(!again.body.contains(&password));
    assert!(again.body.contains("INSERT_PASSWORD"), "{}", again.body);
    let list = console.get("/console/data-connections").await;
    assert!(!list.body.contains(&password));
    for shown in [
        "console test",
        &username,
        "My Team",
        "127.0.0.1, 203.0.113.0/24",
        "expires in",
    ] {
        assert!(list.body.contains(shown), "the list shows {shown}");
    }
    assert!(
        !server.logs().contains(&password),
        "no password in the logs"
    );

    // Delete names the connection, and asks first.
    let confirm = console
        .get(&format!("/console/data-connections/{id}/delete"))
        .await;
    assert_page(&confirm, StatusCode::OK);
    assert!(confirm.body.contains("Delete “console test”"));
    let deleted = console
        .post(&format!("/console/data-connections/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(
        deleted.location(),
        format!("/console/data-connections?deleted={id}")
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/connections/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.gateway_verdict(&username, &password).await,
        "refused",
        "its credentials stopped working"
    );
    assert_page(&console.get(&at).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_team_token_manages_only_its_team() {
    let server = start().await;
    let (ours, _, _) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1234], "note": "ours"}))
        .await;
    let (theirs, _, _) = server
        .create_connection(
            json!({"client_type": "clickhouse", "team_ids": [5678], "note": "theirs"}),
        )
        .await;
    let (shared, _, _) = server
        .create_connection(json!({"client_type": "clickhouse", "note": "everyone's"}))
        .await;
    let team_token = server
        .cli(&[
            "token",
            "create",
            "--team",
            "1234",
            "--email",
            "team@example.com",
        ])
        .trim()
        .to_owned();
    let console = Console::sign_in(&server, &team_token).await;
    let list = console.get("/console/data-connections").await;
    assert_page(&list, StatusCode::OK);
    assert!(list.body.contains("ours"));
    assert!(!list.body.contains("theirs") && !list.body.contains("everyone"));
    assert!(list.body.contains("Team 1234 token"));
    for other in [theirs, shared] {
        assert_page(
            &console
                .get(&format!("/console/data-connections/{other}"))
                .await,
            StatusCode::NOT_FOUND,
        );
        let delete = console
            .post(&format!("/console/data-connections/{other}/delete"), &[])
            .await;
        assert_page(&delete, StatusCode::NOT_FOUND);
    }
    assert_eq!(count_connections(&server).await, 3, "nothing was deleted");
    assert_page(
        &console
            .get(&format!("/console/data-connections/{ours}"))
            .await,
        StatusCode::OK,
    );

    // What it creates is its team's, whatever the form says.
    let made = console
        .post(
            "/console/data-connections",
            &[("team", "5678"), ("note", "made by the team")],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let id = made.location().rsplit('/').next().unwrap().to_owned();
    let api: serde_json::Value = server.get_json(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(api["data"]["attributes"]["team_ids"], json!([1234]));
    assert_eq!(
        api["data"]["attributes"]["created_by"]["email"],
        "team@example.com"
    );

    // Read-only for the rest: topology yes; tokens and the vault no.
    assert_page(&console.get("/console/topology").await, StatusCode::OK);
    assert_page(&console.get("/console/tokens").await, StatusCode::FORBIDDEN);
    assert_page(
        &console
            .post("/console/tokens", &[("scope", "global")])
            .await,
        StatusCode::FORBIDDEN,
    );
    assert_page(&console.get("/console/vault").await, StatusCode::FORBIDDEN);
    let nav = console.get("/console/topology").await;
    assert!(!nav.body.contains("href=\"/console/tokens\""));
}

#[tokio::test]
async fn tokens_and_secrets_are_shown_once_and_revoked_at_once() {
    let server = start().await;
    let console = Console::sign_in(&server, TOKEN).await;
    let page = console.get("/console/tokens").await;
    assert_page(&page, StatusCode::OK);
    assert!(page.body.contains("this session"));

    // The only global token cannot go.
    let bootstrap_id = {
        let at = page.body.find("/console/tokens/").unwrap() + 16;
        page.body[at..at + page.body[at..].find('/').unwrap()].to_owned()
    };
    let refused = console
        .post(&format!("/console/tokens/{bootstrap_id}/revoke"), &[])
        .await;
    assert_page(&refused, StatusCode::CONFLICT);
    assert!(refused.body.contains("last global token"));

    let made = console
        .post(
            "/console/tokens",
            &[("scope", "global"), ("email", "ops@example.com")],
        )
        .await;
    assert_eq!(made.location(), "/console/revealed");
    let shown = console.get("/console/revealed").await;
    assert_page(&shown, StatusCode::OK);
    let token = shown.input_value("secret").unwrap();
    assert_eq!(token.len(), 32);
    let again = console.get("/console/revealed").await;
    assert!(again.body.contains("Nothing to show") && !again.body.contains(&token));
    let listed = console.get("/console/tokens").await;
    assert!(listed.body.contains("ops@example.com") && !listed.body.contains(&token));

    // In use (so the token cache holds it), then revoked: refused on the very next call.
    let call = |t: String| {
        let server = &server;
        async move {
            server
                .client
                .get(server.url("/api/v1/connections"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(call(token.clone()).await, StatusCode::OK);
    assert_eq!(call(token.clone()).await, StatusCode::OK);
    let theirs = Console::sign_in(&server, &token).await;
    assert_eq!(theirs.get("/console/tokens").await.status, StatusCode::OK);
    let new_id = {
        let rows = console.get("/console/tokens").await.body;
        let at = rows.rfind("/console/tokens/").unwrap() + 16;
        rows[at..at + rows[at..].find('/').unwrap()].to_owned()
    };
    let revoked = console
        .post(&format!("/console/tokens/{new_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(call(token.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        theirs.get("/console/tokens").await.location(),
        "/console/sign-in",
        "its console sessions ended with it"
    );
    assert_page(
        &console
            .post(&format!("/console/tokens/{new_id}/revoke"), &[])
            .await,
        StatusCode::NOT_FOUND,
    );

    // Vault secrets the same way.
    let made = console
        .post("/console/secrets", &[("environment", "live")])
        .await;
    assert_eq!(made.location(), "/console/revealed");
    let secret = console
        .get("/console/revealed")
        .await
        .input_value("secret")
        .unwrap();
    assert!(secret.starts_with("sk_live_"));
    let vault_call = |s: String| {
        let server = &server;
        async move {
            server
                .client
                .get(server.url("/v1/vault/connections"))
                .header("x-pica-secret", s)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(vault_call(secret.clone()).await, StatusCode::OK);
    let rows = console.get("/console/tokens").await.body;
    let at = rows.rfind("/console/secrets/").unwrap() + 17;
    let secret_id = rows[at..at + rows[at..].find('/').unwrap()].to_owned();
    assert!(!rows.contains(&secret));
    let revoked = console
        .post(&format!("/console/secrets/{secret_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(vault_call(secret.clone()).await, StatusCode::UNAUTHORIZED);

    let logs = server.logs();
    assert!(!logs.contains(&token) && !logs.contains(&secret));
    assert!(!logs.contains(console.cookie.split('=').nth(1).unwrap()));
}

async fn create_integration(server: &TestServer, body: serde_json::Value) -> serde_json::Value {
    let resp = server
        .client
        .post(server.url("/v1/vault/connections"))
        .header("x-pica-secret", TEST_SECRET)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

pub async fn seed_vault(server: &TestServer) -> Vec<serde_json::Value> {
    let mut made = Vec::new();
    for (identity, tags) in [
        ("alice", vec!["crm", "eu"]),
        ("bob", vec!["crm"]),
        ("carol", vec![]),
    ] {
        made.push(
            create_integration(
                server,
                json!({"platform": "resend", "identity": identity, "identityType": "user",
                       "name": format!("{identity}'s mail"), "tags": tags,
                       "credentials": {"api_key": format!("re_key_of_{identity}")}}),
            )
            .await,
        );
    }
    made
}

#[tokio::test]
async fn the_vault_is_filtered_edited_and_linked() {
    let server = start().await;
    let made = seed_vault(&server).await;
    let console = Console::sign_in(&server, TEST_SECRET).await;
    let all = console.get("/console/vault").await;
    assert_page(&all, StatusCode::OK);
    for name in ["alice's mail", "bob's mail", "carol's mail"] {
        assert!(all.body.contains(&name.replace('\'', "&#39;")) || all.body.contains(name));
    }
    assert!(
        !all.body.contains("re_key_of_"),
        "no credential on any page"
    );
    let filtered = console.get("/console/vault?tags=crm,eu").await;
    assert!(filtered.body.contains("alice") && !filtered.body.contains("bob"));
    let by_identity = console.get("/console/vault?identity=carol").await;
    assert!(by_identity.body.contains("carol") && !by_identity.body.contains("alice"));
    let by_state = console.get("/console/vault?state=failed").await;
    assert!(by_state.body.contains("No connections match."));
    let unknown = console
        .get("/console/vault?state=unknown&platform=resend")
        .await;
    assert!(unknown.body.contains("alice") && unknown.body.contains("carol"));
    assert_page(
        &console.get("/console/vault?state=sideways").await,
        StatusCode::BAD_REQUEST,
    );

    // Edit: name, tags, inactive; then it is among the inactive ones.
    let id = made[1]["id"].as_str().unwrap();
    let page = console.get(&format!("/console/vault/{id}")).await;
    assert_page(&page, StatusCode::OK);
    assert!(page.body.contains(r#"name="version" value="1.0.0""#));
    assert_eq!(page.input_value("name").as_deref(), Some("bob's mail"));
    let stale = console
        .post(
            &format!("/console/vault/{id}"),
            &[("version", "0.0.1"), ("name", "x")],
        )
        .await;
    assert_page(&stale, StatusCode::CONFLICT);
    let saved = console
        .post(
            &format!("/console/vault/{id}"),
            &[
                ("version", "1.0.0"),
                ("name", "Bob's CRM mail"),
                ("tags", "crm, vip"),
            ],
        )
        .await;
    assert_page(&saved, StatusCode::OK);
    assert!(saved.body.contains("Saved."));
    let api = server
        .vault_json("/v1/vault/connections?identity=bob&active=false")
        .await;
    let row = &api["rows"][0];
    assert_eq!(row["name"], "Bob's CRM mail");
    assert_eq!(row["tags"], json!(["crm", "vip"]));
    assert_eq!(row["active"], false);
    assert!(
        console
            .get("/console/vault?active=false")
            .await
            .body
            .contains("Bob")
    );

    // Delete asks first, naming it.
    let carol = made[2]["id"].as_str().unwrap();
    let confirm = console.get(&format!("/console/vault/{carol}/delete")).await;
    assert!(confirm.body.contains("of carol?"));
    let gone = console
        .post(&format!("/console/vault/{carol}/delete"), &[])
        .await;
    assert_eq!(gone.location(), "/console/vault");
    assert_page(
        &console.get(&format!("/console/vault/{carol}")).await,
        StatusCode::NOT_FOUND,
    );

    // A connect link for an end user, shown once, that opens the connect page.
    let link = console
        .post(
            "/console/vault/connect-link",
            &[
                ("identity", "dave"),
                ("identity_type", "user"),
                ("platform", "resend"),
            ],
        )
        .await;
    assert_eq!(link.location(), "/console/revealed");
    let shown = console.get("/console/revealed").await;
    let url = shown.input_value("secret").unwrap();
    assert!(
        url.starts_with(&format!("{}/connect/", server.base)),
        "{url}"
    );
    let connect_page = reqwest::get(&url).await.unwrap();
    assert_eq!(connect_page.status(), StatusCode::OK);
    assert!(connect_page.text().await.unwrap().contains("Resend"));
    let refused = console
        .post("/console/vault/connect-link", &[("identity", "")])
        .await;
    assert_page(&refused, StatusCode::BAD_REQUEST);

    // Another environment's connection is not found.
    let live = Console::sign_in(&server, crate::common::LIVE_SECRET).await;
    assert_page(
        &live.get(&format!("/console/vault/{id}")).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn the_topology_shows_regions_nodes_and_teams() {
    let server = start().await;
    let console = Console::sign_in(&server, TOKEN).await;
    let page = console.get("/console/topology").await;
    assert_page(&page, StatusCode::OK);
    for shown in [
        "germany",
        "eu-nbg-2",
        "local-1",
        "http://127.0.0.1:9",
        "My Team",
        "Application example",
        "team_1234.app_logs",
        "Other Team",
        "team_5678.billing",
    ] {
        assert!(page.body.contains(shown), "shows {shown}");
    }
    // The upstream at port 9 never answers: once checked, it is shown unhealthy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let page = console.get("/console/topology").await;
        if page.body.contains("unhealthy") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The assets the pages load are served, with their types.
    let css = reqwest::get(server.url("/console/assets/console.css"))
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let js = reqwest::get(server.url("/console/assets/console.js"))
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn the_command_line_lists_and_revokes_tokens_and_secrets() {
    let server = start().await;
    let token = server.cli(&["token", "create", "--email", "cli@example.com"]);
    let token = token.trim();
    let call = || async {
        server
            .client
            .get(server.url("/api/v1/connections"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(call().await, StatusCode::OK);
    let listed = server.cli(&["token", "list"]);
    let line = listed
        .lines()
        .find(|l| l.contains("cli@example.com"))
        .expect("the new token is listed");
    assert!(!listed.contains(token), "never the value");
    let id = line.split('\t').next().unwrap();
    assert!(line.contains("\tglobal\t"));
    assert_eq!(
        server.cli(&["token", "revoke", id]).trim(),
        format!("revoked API token {id}")
    );
    // The server learns it from the change log (polled): refused within a second, though
    // the token was cached a moment ago.
    let start = std::time::Instant::now();
    while call().await != StatusCode::UNAUTHORIZED {
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = server
        .command()
        .args(["token", "revoke", id])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("no API token with id {id}")));

    let secrets = server.cli(&["secret", "list"]);
    assert!(secrets.lines().any(|l| l.contains("\ttest\t")), "{secrets}");
    assert!(!secrets.contains(TEST_SECRET));
    let id = secrets
        .lines()
        .find(|l| l.contains("\ttest\t"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    server.cli(&["secret", "revoke", &id]);
    let start = std::time::Instant::now();
    loop {
        let status = server
            .client
            .get(server.url("/v1/vault/connections"))
            .header("x-pica-secret", TEST_SECRET)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_data_connection_is_changed_from_its_page() {
    let server = start().await;
    let (id, user, password) = server
        .create_connection(json!({"client_type": "clickhouse", "team_ids": [1234], "note": "old note", "ip_allowlist": ["127.0.0.1"], "valid_until": "2099-06-01T12:30:00Z"}))
        .await;
    let console = Console::sign_in(&server, TOKEN).await;
    let page = console
        .get(&format!("/console/data-connections/{id}"))
        .await;
    assert_eq!(page.input_value("edit-note").as_deref(), Some("old note"));
    assert_eq!(
        page.input_value("edit-valid-until").as_deref(),
        Some("2099-06-01T12:30"),
        "the picker holds the expiry"
    );

    // The note and allowlist change; the expiry, left as shown, stays.
    let saved = console
        .post(
            &format!("/console/data-connections/{id}/edit"),
            &[
                ("note", "new note"),
                ("ip_allowlist", "203.0.113.0/24\n127.0.0.1"),
                ("valid_until", "2099-06-01T12:30"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let shown = console.get(saved.location()).await;
    assert!(shown.body.contains("Saved."));
    let a = server.connection(id).await;
    assert_eq!(a["note"], "new note");
    assert_eq!(a["ip_allowlist"], json!(["203.0.113.0/24", "127.0.0.1"]));
    assert_eq!(a["valid_until"], "2099-06-01T12:30:00.000Z");
    assert!(!shown.body.contains(&password));

    // A bad entry or a past expiry changes nothing and says why.
    for (fields, message) in [
        (
            vec![
                ("ip_allowlist", "10.0.0.1/8"),
                ("valid_until", "2099-06-01T12:30"),
            ],
            "host bits set",
        ),
        (
            vec![
                ("ip_allowlist", "127.0.0.1"),
                ("valid_until", "2001-01-01T00:00"),
            ],
            "valid_until must be in the future",
        ),
    ] {
        let refused = console
            .post(&format!("/console/data-connections/{id}/edit"), &fields)
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.body.contains(message), "{}", refused.body);
    }
    assert_eq!(server.connection(id).await["note"], "new note");

    // Emptied: never expires, any address; the gateway follows at once.
    let saved = console
        .post(
            &format!("/console/data-connections/{id}/edit"),
            &[("note", ""), ("ip_allowlist", ""), ("valid_until", "")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let a = server.connection(id).await;
    assert!(a["note"].is_null() && a["valid_until"].is_null());
    assert_eq!(a["ip_allowlist"], json!([]));
    assert_eq!(
        server.gateway_verdict(&user, &password).await,
        "accepted",
        "still authenticates"
    );
    let audit: serde_json::Value = server
        .get_json("/api/v1/audit-events?action=data_connection.update&outcome=success")
        .await;
    assert_eq!(
        audit["data"].as_array().unwrap().len(),
        2,
        "two changes saved"
    );
}
