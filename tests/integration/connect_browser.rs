//! The connect page in a real browser (headless Chromium through WebDriver, phone-sized),
//! clicked and typed into as a person would: one OAuth2 sign-in and one API key, each
//! page photographed under `target/tmp/screenshots/`.

use fantoccini::Locator;
use serde_json::json;

use crate::common::browser::Browser;
use crate::connect::{Setup, create_session, platform_call, setup, status};

const ENTER: &str = "\u{E007}";
const TAB: &str = "\u{E004}";

/// The button whose text is `text`.
async fn button(browser: &Browser, text: &str) -> fantoccini::elements::Element {
    browser
        .client
        .find(Locator::XPath(&format!(
            "//button[normalize-space()='{text}']"
        )))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_signs_in_with_oauth2_in_chromium() {
    let Setup { server, .. } = setup(false, "").await;
    let session = create_session(
        &server,
        json!({"identity": "u", "platforms": ["acme", "keyed"]}),
    )
    .await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(session["url"].as_str().unwrap())
        .await
        .unwrap();
    browser.wait_for_text("Choose the service to link").await;
    browser.assert_fits_width().await;
    browser.screenshot("connect-oauth-page").await;

    let button = button(&browser, "Sign in with Acme").await;
    button.click().await.unwrap();
    // The provider consents and sends the browser back to the callback.
    let text = browser.wait_for_text("Acme is connected").await;
    assert!(text.contains("You can close this window"));
    let url = browser.client.current_url().await.unwrap();
    assert!(url.path().ends_with("/v1/connect/callback"), "{url}");
    browser.assert_fits_width().await;
    browser.screenshot("connect-oauth-done").await;

    let status = status(&server, session["token"].as_str().unwrap()).await;
    assert_eq!(status["status"], "completed", "{status}");
    // Back to the link: spent.
    browser
        .client
        .goto(session["url"].as_str().unwrap())
        .await
        .unwrap();
    browser.wait_for_text("This link has been used").await;
    browser.screenshot("connect-used").await;
    browser.close().await;
}

#[tokio::test]
async fn a_person_types_an_api_key_with_the_keyboard_in_chromium() {
    let Setup { server, .. } = setup(false, "").await;
    let session = create_session(&server, json!({"identity": "u", "platforms": ["keyed"]})).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(session["url"].as_str().unwrap())
        .await
        .unwrap();
    browser.wait_for_text("Link your Keyed account").await;
    browser.assert_fits_width().await;

    // An empty key is not sent: the browser holds the form back.
    let submit = button(&browser, "Connect Keyed").await;
    submit.click().await.unwrap();
    assert_eq!(
        browser.client.current_url().await.unwrap().as_str(),
        session["url"].as_str().unwrap()
    );

    let input = browser
        .client
        .find(Locator::Id("keyed-api_key"))
        .await
        .unwrap();
    // Its label names it, so a screen reader says what to type.
    let label = browser
        .client
        .find(Locator::Css("label[for='keyed-api_key']"))
        .await
        .unwrap();
    assert_eq!(label.text().await.unwrap(), "API key (sent as x-api-key)");
    input.click().await.unwrap();
    input.send_keys("kk_browser_1").await.unwrap();
    browser.screenshot("connect-key-typed").await;
    // Tab reaches the button; Enter presses it.
    input.send_keys(TAB).await.unwrap();
    let focused = browser
        .client
        .execute("return document.activeElement.textContent.trim();", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("Connect Keyed"));
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys(ENTER)
        .await
        .unwrap();
    browser.wait_for_text("Keyed is connected").await;
    browser.screenshot("connect-key-done").await;
    // What was typed is not on the page afterwards.
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("kk_browser_1"));

    let status = status(&server, session["token"].as_str().unwrap()).await;
    assert_eq!(status["status"], "completed", "{status}");
    let key = status["connectionKey"].as_str().unwrap();
    let (called, echoed) = platform_call(&server, key).await;
    assert_eq!(called, reqwest::StatusCode::OK);
    assert_eq!(echoed["x-api-key"], "kk_browser_1");
    browser.close().await;
}
