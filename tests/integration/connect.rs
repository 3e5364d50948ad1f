//! Connect sessions end to end over HTTP, with a local OAuth2 provider playing the
//! authorization server (an authorize endpoint that consents or refuses, a token endpoint
//! that checks the PKCE verifier, the client's authentication and the redirect URI) and
//! the platform (it accepts only tokens it issued). The browser's part is played by
//! following the redirects by hand; `connect_browser` clicks the same pages in Chromium.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::{LIVE_SECRET, TEST_SECRET, TestServer};

#[derive(Clone, Copy, PartialEq)]
pub enum Consent {
    Grant,
    Deny,
}

/// A code the authorize endpoint issued, and what it was issued for.
struct Issued {
    challenge: String,
    redirect_uri: String,
    client_id: String,
}

pub struct Provider {
    pub consent: Mutex<Consent>,
    codes: Mutex<HashMap<String, Issued>>,
    next: AtomicU64,
    /// Access tokens the platform accepts.
    valid: Mutex<Vec<String>>,
    /// Why the token endpoint refused, per refusal.
    pub refusals: Mutex<Vec<String>>,
    /// Every authorize request's query.
    pub authorize_queries: Mutex<Vec<HashMap<String, String>>>,
    /// How the token endpoint expects the client to authenticate.
    basic_auth: bool,
    /// Refresh tokens the token endpoint refuses with invalid_grant.
    pub revoked_refresh: Mutex<Vec<String>>,
    pub base: String,
}

pub const CLIENT_ID: &str = "switchboard-client";
pub const CLIENT_SECRET: &str = "client-secret-xyz";

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

impl Provider {
    pub async fn start(basic_auth: bool) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = Arc::new(Self {
            consent: Mutex::new(Consent::Grant),
            codes: Mutex::default(),
            next: AtomicU64::new(1),
            valid: Mutex::default(),
            refusals: Mutex::default(),
            authorize_queries: Mutex::default(),
            basic_auth,
            revoked_refresh: Mutex::default(),
            base: format!("http://{}", listener.local_addr().unwrap()),
        });
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .fallback(platform)
            .with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        provider
    }

    /// The `[[platforms]]` entry for this provider, as `acme`.
    pub fn platform_config(&self, secret_file: &std::path::Path) -> String {
        let base = &self.base;
        let token_auth = if self.basic_auth {
            "client_secret_basic"
        } else {
            "client_secret_post"
        };
        format!(
            r#"
[[platforms]]
platform = "acme"
name = "Acme"
description = "Acme CRM"
category = "CRM"
base_url = "{base}"
auth = "oauth2"
authorize_url = "{base}/oauth/authorize?tenant=t1"
token_url = "{base}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret_file = "{}"
scopes = ["read", "write"]
token_auth = "{token_auth}"
extra_authorize_params = {{ access_type = "offline" }}
allow_private_network = true
"#,
            secret_file.display()
        )
    }

    fn refuse(&self, why: &str) -> Response {
        self.refusals.lock().unwrap().push(why.to_owned());
        (
            AxumStatus::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    }

    fn grant(&self) -> Response {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let access = format!("at-{n}");
        self.valid.lock().unwrap().push(access.clone());
        axum::Json(json!({
            "access_token": access, "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": format!("rt-{n}"),
        }))
        .into_response()
    }
}

async fn authorize(State(p): State<Arc<Provider>>, RawQuery(query): RawQuery) -> Response {
    let q = query_map(query.as_deref());
    p.authorize_queries.lock().unwrap().push(q.clone());
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    if *p.consent.lock().unwrap() == Consent::Deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user said no")
            .append_pair("state", &state);
        return Redirect::to(back.as_str()).into_response();
    }
    let code = format!("code-{}", p.next.fetch_add(1, Ordering::SeqCst));
    p.codes.lock().unwrap().insert(
        code.clone(),
        Issued {
            challenge: q.get("code_challenge").cloned().unwrap_or_default(),
            redirect_uri,
            client_id: q.get("client_id").cloned().unwrap_or_default(),
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    Redirect::to(back.as_str()).into_response()
}

async fn token(State(p): State<Arc<Provider>>, request: Request) -> Response {
    let basic = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    // The client's authentication, as configured.
    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authenticated = if p.basic_auth {
        basic.as_deref() == Some(expected_basic.as_str()) && !form.contains_key("client_secret")
    } else {
        basic.is_none()
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
    };
    if !authenticated {
        return p.refuse("client authentication failed");
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            // A code works once.
            let Some(issued) = p.codes.lock().unwrap().remove(&code) else {
                return p.refuse("unknown or used code");
            };
            if issued.client_id != CLIENT_ID {
                return p.refuse("code issued to another client");
            }
            if form.get("redirect_uri") != Some(&issued.redirect_uri) {
                return p.refuse("redirect_uri differs from the authorization request's");
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if verifier.len() < 43 || challenge != issued.challenge {
                return p.refuse("PKCE verifier does not match the challenge");
            }
            p.grant()
        }
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").cloned().unwrap_or_default();
            if p.revoked_refresh.lock().unwrap().contains(&refresh) {
                return p.refuse("refresh token revoked");
            }
            p.grant()
        }
        _ => p.refuse("unsupported grant_type"),
    }
}

async fn platform(State(p): State<Arc<Provider>>, request: Request) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let key = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if p.valid.lock().unwrap().contains(&token) || key.is_some() {
        axum::Json(json!({"token": token, "x-api-key": key})).into_response()
    } else {
        (AxumStatus::UNAUTHORIZED, "token expired").into_response()
    }
}

pub struct Setup {
    pub server: TestServer,
    pub provider: Arc<Provider>,
    _secret: tempfile::TempDir,
}

/// A server with `acme` (OAuth2 through the provider) and `keyed` (an API key in a
/// header, at the same local platform).
pub async fn setup(basic_auth: bool, extra: &str) -> Setup {
    let provider = Provider::start(basic_auth).await;
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("acme_client_secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let config = format!(
        r#"
[connect]
allowed_return_origins = ["https://app.example.com"]
{extra}
{}
[[platforms]]
platform = "keyed"
name = "Keyed"
description = "A platform that takes an API key"
image = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0naHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmcnIHZpZXdCb3g9JzAgMCA0MCA0MCc+PHJlY3Qgd2lkdGg9JzQwJyBoZWlnaHQ9JzQwJyByeD0nOCcgZmlsbD0nIzBhN2YzZicvPjxwYXRoIGQ9J00xMiAxMHYyME0xMiAyMGwxNC0xME0xNiAxOGwxMCAxMicgc3Ryb2tlPScjZmZmJyBzdHJva2Utd2lkdGg9JzQnIGZpbGw9J25vbmUnLz48L3N2Zz4="
base_url = "{}"
auth = "header"
header_name = "x-api-key"
allow_private_network = true
"#,
        provider.platform_config(&secret_file),
        provider.base
    );
    let server = TestServer::start(&config).await;
    Setup {
        server,
        provider,
        _secret: secret,
    }
}

/// A client that shows redirects instead of following them.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn create_session(server: &TestServer, body: Value) -> Value {
    let resp = server
        .post_json("/v1/connect/sessions", &body)
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", server.logs());
    resp.json().await.unwrap()
}

/// A platform call through the passthrough with `key`: its status, and its JSON body
/// (`null` when it is not JSON).
pub async fn platform_call(server: &TestServer, key: &str) -> (StatusCode, Value) {
    let resp = crate::passthrough::call(server, reqwest::Method::GET, "me", key)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn status(server: &TestServer, token: &str) -> Value {
    let resp = server
        .get(&format!("/v1/connect/sessions/{token}"))
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn connections(server: &TestServer) -> Vec<Value> {
    let resp = server
        .get("/v1/vault/connections?limit=100")
        .header("x-pica-secret", TEST_SECRET)
        .send()
        .await
        .unwrap();
    let page: Value = resp.json().await.unwrap();
    page["rows"].as_array().unwrap().clone()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

/// Presses the page's sign-in button: the provider's authorization URL.
pub async fn sign_in(link: &str) -> url::Url {
    let resp = browser()
        .post(format!("{link}/oauth"))
        .form(&[("platform", "acme")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    url::Url::parse(&location(&resp)).unwrap()
}

/// Follows `url` (the provider's consent) to the callback; returns the callback's answer.
pub async fn consent_and_return(authorize: &url::Url) -> reqwest::Response {
    let resp = browser().get(authorize.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    browser().get(location(&resp)).send().await.unwrap()
}

fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_oauth2_session_completes_and_the_connection_carries_the_new_token() {
    for basic_auth in [false, true] {
        let Setup {
            server, provider, ..
        } = setup(basic_auth, "").await;
        let session = create_session(
            &server,
            json!({"identity": "user-1", "identityType": "user", "platforms": ["acme"],
                   "tags": ["crm"], "name": "Acme for user 1"}),
        )
        .await;
        let token = session["token"].as_str().unwrap();
        let link = session["url"].as_str().unwrap();
        assert_eq!(link, server.url(&format!("/connect/{token}")));
        assert!(session["expiresAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(status(&server, token).await["status"], "pending");

        // The page offers the button, and is safe to show.
        let page = browser().get(link).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert!(
            page.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        let html = page.text().await.unwrap();
        assert!(html.contains("Sign in with Acme"), "{html}");

        let authorize = sign_in(link).await;
        assert!(
            authorize
                .as_str()
                .starts_with(&format!("{}/oauth/authorize", provider.base))
        );
        assert_eq!(param(&authorize, "tenant"), "t1");
        assert_eq!(param(&authorize, "response_type"), "code");
        assert_eq!(param(&authorize, "client_id"), CLIENT_ID);
        assert_eq!(
            param(&authorize, "redirect_uri"),
            server.url("/v1/connect/callback")
        );
        assert_eq!(param(&authorize, "scope"), "read write");
        assert_eq!(param(&authorize, "code_challenge_method"), "S256");
        assert_eq!(param(&authorize, "access_type"), "offline");
        assert_eq!(param(&authorize, "code_challenge").len(), 43);
        assert!(param(&authorize, "state").len() > 60);

        let done = consent_and_return(&authorize).await;
        assert_eq!(done.status(), StatusCode::OK, "{}", server.logs());
        assert!(done.text().await.unwrap().contains("Acme is connected"));
        assert!(provider.refusals.lock().unwrap().is_empty());

        let finished = status(&server, token).await;
        assert_eq!(finished["status"], "completed", "{finished}");
        let key = finished["connectionKey"].as_str().unwrap();
        let rows = connections(&server).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["key"], key);
        assert_eq!(rows[0]["state"], "operational");
        assert_eq!(rows[0]["identity"], "user-1");
        assert_eq!(rows[0]["name"], "Acme for user 1");
        assert_eq!(rows[0]["tags"], json!(["crm"]));
        let (called, echoed) = platform_call(&server, key).await;
        assert_eq!(called, StatusCode::OK);
        assert!(
            echoed["token"].as_str().unwrap().starts_with("at-"),
            "{echoed}"
        );

        // Spent: the link and the state work once; nothing more is stored.
        let again = browser().get(link).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::CONFLICT);
        let replay = browser()
            .get(server.url(&format!(
                "/v1/connect/callback?code=code-1&state={}",
                param(&authorize, "state")
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::CONFLICT);
        assert!(
            replay
                .text()
                .await
                .unwrap()
                .contains("Each link works once")
        );
        assert_eq!(connections(&server).await.len(), 1);

        // Neither the link's token, the state, nor the code reach the log.
        let logs = server.logs();
        assert!(!logs.contains(token), "{logs}");
        assert!(!logs.contains(&param(&authorize, "state")[37..]));
        assert!(!logs.contains("code-"));
        assert!(logs.contains("/connect/{token}"), "{logs}");
    }
}

#[tokio::test]
async fn every_broken_sign_in_ends_on_a_clear_page_with_nothing_stored() {
    let Setup {
        server, provider, ..
    } = setup(false, "").await;
    let new_session = || create_session(&server, json!({"identity": "u", "platforms": ["acme"]}));

    // An altered state: the session's id with another secret.
    let session = new_session().await;
    let authorize = sign_in(session["url"].as_str().unwrap()).await;
    let state = param(&authorize, "state");
    let altered = format!("{}xyz", &state[..state.len() - 3]);
    let resp = browser()
        .get(server.url(&format!("/v1/connect/callback?code=c&state={altered}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("did not match"));
    let ended = status(&server, session["token"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "failed");
    assert!(
        ended["error"].as_str().unwrap().contains("state"),
        "{ended}"
    );
    // And the genuine state cannot finish it afterwards.
    let late = consent_and_return(&authorize).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);

    // A state naming no session, and none at all.
    for query in [
        format!("code=c&state={}.abc", uuid::Uuid::new_v4()),
        "code=c".to_owned(),
    ] {
        let resp = browser()
            .get(server.url(&format!("/v1/connect/callback?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    // A wrong verifier: the challenge the provider saw is not the one we made.
    let session = new_session().await;
    let mut authorize = sign_in(session["url"].as_str().unwrap()).await;
    let pairs: Vec<(String, String)> = authorize
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code_challenge" {
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    authorize.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = consent_and_return(&authorize).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("did not accept"));
    assert!(provider.refusals.lock().unwrap()[0].contains("PKCE"));
    assert_eq!(
        status(&server, session["token"].as_str().unwrap()).await["status"],
        "failed"
    );

    // The user refuses.
    *provider.consent.lock().unwrap() = Consent::Deny;
    let session = new_session().await;
    let resp = consent_and_return(&sign_in(session["url"].as_str().unwrap()).await).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("access_denied"));
    let ended = status(&server, session["token"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "failed");
    assert!(ended["error"].as_str().unwrap().contains("access_denied"));
    *provider.consent.lock().unwrap() = Consent::Grant;

    assert!(connections(&server).await.is_empty());
}

#[tokio::test]
async fn sessions_expire() {
    let Setup { server, .. } = setup(false, "session_ttl_seconds = 1").await;
    let unused = create_session(&server, json!({"identity": "u"})).await;
    let started = create_session(&server, json!({"identity": "u", "platforms": ["acme"]})).await;
    let authorize = sign_in(started["url"].as_str().unwrap()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    assert_eq!(
        status(&server, unused["token"].as_str().unwrap()).await["status"],
        "expired"
    );
    let page = browser()
        .get(unused["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    assert!(page.text().await.unwrap().contains("expired"));
    // A consent that comes back too late fails the session.
    let late = consent_and_return(&authorize).await;
    assert_eq!(late.status(), StatusCode::GONE);
    assert_eq!(
        status(&server, started["token"].as_str().unwrap()).await["status"],
        "failed"
    );
    assert!(connections(&server).await.is_empty());
}

#[tokio::test]
async fn an_api_key_form_stores_exactly_its_fields_and_a_typo_leaves_the_link_usable() {
    let Setup { server, .. } = setup(false, "").await;
    let session = create_session(
        &server,
        json!({"group": "org-7", "identityType": "organization", "label": "Keyed",
               "platforms": ["keyed"], "returnUrl": "https://app.example.com/done?x=1"}),
    )
    .await;
    let link = session["url"].as_str().unwrap();
    let html = browser()
        .get(link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("API key (sent as x-api-key)"), "{html}");
    assert!(html.contains(r#"type="password""#));
    assert!(
        html.contains(r#"class="logo" src="data:image/svg+xml;base64,"#),
        "{html}"
    );
    assert!(!html.contains("Sign in with"));

    // An empty key: the form again, saying so; the session still pending.
    let resp = browser()
        .post(format!("{link}/credentials"))
        .form(&[("platform", "keyed")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("missing api_key"));
    assert_eq!(
        status(&server, session["token"].as_str().unwrap()).await["status"],
        "pending"
    );

    let resp = browser()
        .post(format!("{link}/credentials"))
        .form(&[("platform", "keyed"), ("api_key", "kk_live_123")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let back = url::Url::parse(&location(&resp)).unwrap();
    assert_eq!(
        back.origin().ascii_serialization(),
        "https://app.example.com"
    );
    assert_eq!(param(&back, "x"), "1");
    assert_eq!(param(&back, "status"), "completed");
    let key = param(&back, "connectionKey");

    let rows = connections(&server).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], key.as_str());
    assert_eq!(rows[0]["identity"], "org-7");
    assert_eq!(rows[0]["identityType"], "organization");
    assert_eq!(rows[0]["name"], "Keyed");
    let (called, echoed) = platform_call(&server, &key).await;
    assert_eq!(called, StatusCode::OK);
    assert_eq!(echoed["x-api-key"], "kk_live_123");
    // Once only.
    let resp = browser()
        .post(format!("{link}/credentials"))
        .form(&[("platform", "keyed"), ("api_key", "again")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(connections(&server).await.len(), 1);
    assert!(!server.logs().contains("kk_live_123"));
}

#[tokio::test]
async fn a_session_is_refused_what_it_cannot_do() {
    let Setup { server, .. } = setup(false, "").await;
    let refused = |body: Value| {
        let request = server
            .post_json("/v1/connect/sessions", &body)
            .header("x-pica-secret", TEST_SECRET);
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
            let error: Value = resp.json().await.unwrap();
            error["fields"][0].as_str().unwrap().to_owned()
        }
    };
    for (body, field) in [
        (json!({}), "identity"),
        (json!({"identity": "u", "platforms": ["nope"]}), "platforms"),
        (
            json!({"identity": "u", "returnUrl": "https://evil.example.com/"}),
            "returnUrl",
        ),
        (
            json!({"identity": "u", "connectionKey": "test::acme::default::x"}),
            "connectionKey",
        ),
        (json!({"identity": "u", "colour": "red"}), "colour"),
        (
            json!({"identity": "u", "identityType": "robot"}),
            "identityType",
        ),
    ] {
        assert_eq!(refused(body).await, field);
    }

    // A session belongs to its environment; an unknown token is a 404 in the dialect's shape.
    let session = create_session(&server, json!({"identity": "u"})).await;
    for (secret, token) in [
        (LIVE_SECRET, session["token"].as_str().unwrap()),
        (TEST_SECRET, "cs_unknown"),
    ] {
        let resp = server
            .get(&format!("/v1/connect/sessions/{token}"))
            .header("x-pica-secret", secret)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 404);
    }
    let resp = server
        .post_json("/v1/connect/sessions", &json!({"identity": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A platform the session does not offer, through the page.
    let only_keyed =
        create_session(&server, json!({"identity": "u", "platforms": ["keyed"]})).await;
    let resp = browser()
        .post(format!("{}/oauth", only_keyed["url"].as_str().unwrap()))
        .form(&[("platform", "acme")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let unknown = browser()
        .get(server.url("/connect/cs_nosuchlink"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().await.unwrap().contains("not valid"));
}

#[tokio::test]
async fn reconnect_brings_a_failed_connection_back_in_place() {
    let Setup {
        server, provider, ..
    } = setup(true, "").await;
    // A connection whose refresh token the provider has revoked, with an expired token.
    provider
        .revoked_refresh
        .lock()
        .unwrap()
        .push("rt-dead".into());
    let created = crate::passthrough::connect(
        &server,
        "acme",
        json!({"access_token": "old", "refresh_token": "rt-dead", "expires_at": "1"}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(platform_call(&server, key).await.0, StatusCode::FORBIDDEN);
    assert_eq!(connections(&server).await[0]["state"], "failed");

    let session = create_session(&server, json!({"identity": "u", "connectionKey": key})).await;
    let html = browser()
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Reconnect your account"));
    let done = consent_and_return(&sign_in(session["url"].as_str().unwrap()).await).await;
    assert_eq!(done.status(), StatusCode::OK, "{}", server.logs());
    assert_eq!(
        status(&server, session["token"].as_str().unwrap()).await["connectionKey"],
        key
    );

    let rows = connections(&server).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], created["id"]);
    assert_eq!(rows[0]["key"], key);
    assert_eq!(rows[0]["state"], "operational");
    assert_eq!(rows[0]["version"], "1.0.1");
    assert_eq!(rows[0]["health"]["consecutiveFailures"], 0);
    assert_eq!(platform_call(&server, key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_catalog_is_filtered_and_paged_as_pica_serves_it() {
    let Setup { server, .. } = setup(false, "").await;
    let get = |query: &str| {
        let request = server
            .get(&format!("/v1/available-connectors{query}"))
            .header("x-pica-secret", TEST_SECRET);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, all) = get("").await;
    assert_eq!(status, StatusCode::OK);
    let rows = all["rows"].as_array().unwrap();
    assert_eq!(all["total"], rows.len());
    let acme = rows.iter().find(|r| r["platform"] == "acme").unwrap();
    for field in [
        "id",
        "key",
        "platform",
        "platformVersion",
        "name",
        "description",
        "category",
        "image",
        "tags",
        "oauth",
        "status",
        "version",
        "active",
    ] {
        assert!(acme.get(field).is_some(), "{field} missing: {acme}");
    }
    assert_eq!(acme["key"], "api::acme::v1");
    assert_eq!(acme["category"], "CRM");
    assert_eq!(acme["oauth"], true);
    assert_eq!(acme["authkit"], true);
    // Stable ids.
    assert_eq!(get("").await.1["rows"], all["rows"]);

    assert_eq!(
        get("?platform=stripe").await.1["rows"][0]["key"],
        "api::stripe::v1"
    );
    assert_eq!(get("?key=api::stripe::v1").await.1["total"], 1);
    assert_eq!(get("?name=STRI").await.1["rows"][0]["platform"], "stripe");
    let email = get("?category=email").await.1;
    assert!(
        email["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["category"] == "Email")
    );
    assert!(email["total"].as_u64().unwrap() >= 2);
    let oauth_only = get("?authkit=false").await.1;
    assert_eq!(oauth_only["total"], 0, "{oauth_only}");

    let (_, first) = get("?limit=5&page=1").await;
    let (_, second) = get("?limit=5&page=2").await;
    assert_eq!(first["rows"].as_array().unwrap().len(), 5);
    assert_eq!(first["pages"], all["total"].as_u64().unwrap().div_ceil(5));
    assert_eq!(second["page"], 2);
    assert_eq!(second["rows"][0], all["rows"][5]);
    for bad in ["?limit=0", "?page=x", "?authkit=maybe", "?limit=5000"] {
        let (status, body) = get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["code"], 400);
    }
}

#[tokio::test]
async fn every_answer_under_the_connect_pages_is_a_page() {
    let Setup { server, .. } = setup(false, "").await;
    let session = create_session(&server, json!({"identity": "u"})).await;
    let link = session["url"].as_str().unwrap();
    for request in [
        browser().get(server.url("/connect/")),
        browser().get(server.url("/connect/cs_x/nowhere")),
        browser().delete(link),
        browser().post(server.url("/v1/connect/callback")),
    ] {
        let resp = request.send().await.unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{:?}",
            resp.headers()
        );
        assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    }
    // A body declared too large is refused before it is sent (a raw request: a client
    // that writes the body anyway races the server's answer).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(link).unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let head = format!(
        "POST {}/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 2097152\r\nConnection: close\r\n\r\n",
        url.path()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("content-type: text/html"), "{answer}");
}
