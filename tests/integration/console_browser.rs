//! The console in a real browser (headless Chromium through WebDriver), used as an operator
//! would: sign in, create a data connection (the allowlist checked as it is typed), read
//! its password once, see it gone on reload, delete it; and, on a phone-sized window, sign
//! in with a vault secret and filter the vault. Every page is photographed under
//! `target/tmp/screenshots/console-*.png`.

use fantoccini::Locator;
use reqwest::StatusCode;

use crate::common::browser::Browser;
use crate::common::{TEST_SECRET, TOKEN};
use crate::console::{seed_vault, start};

const ENTER: &str = "\u{E007}";

async fn find(browser: &Browser, css: &str) -> fantoccini::elements::Element {
    browser.client.find(Locator::Css(css)).await.unwrap()
}

async fn click_text(browser: &Browser, tag: &str, text: &str) {
    browser
        .client
        .find(Locator::XPath(&format!(
            r#"//{tag}[normalize-space()="{text}"]"#
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn sign_in(browser: &Browser, base: &str, credential: &str) {
    browser
        .client
        .goto(&format!("{base}/console/"))
        .await
        .unwrap();
    browser.wait_for_text("API token or vault secret").await;
    let field = find(browser, "#credential").await;
    // The field has the focus when the page opens.
    let focused = browser
        .client
        .execute("return document.activeElement.id;", vec![])
        .await
        .unwrap();
    assert_eq!(focused, "credential");
    field
        .send_keys(&format!("{credential}{ENTER}"))
        .await
        .unwrap();
}

async fn value_of(browser: &Browser, css: &str) -> String {
    find(browser, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_operator_makes_reads_once_and_deletes_a_data_connection_in_chromium() {
    let server = start().await;
    let browser = Browser::start_sized(1280, 900).await;
    browser
        .client
        .goto(&format!("{}/console/", server.base))
        .await
        .unwrap();
    browser.wait_for_text("Sign in").await;
    browser.screenshot("console-sign-in").await;
    sign_in(&browser, &server.base, TOKEN).await;
    browser.wait_for_text("No data connections yet.").await;
    browser.screenshot("console-data-connections-empty").await;

    click_text(&browser, "a", "New connection").await;
    browser.wait_for_text("New data connection").await;
    find(&browser, "#team-1234").await.click().await.unwrap();
    find(&browser, "#data_region")
        .await
        .select_by_value("local")
        .await
        .unwrap();
    let allowlist = find(&browser, "#ip_allowlist").await;
    allowlist.send_keys("127.0.0.1, 10.0.0.300").await.unwrap();
    // Checked as it is typed, before anything is sent.
    let live = browser
        .wait_for_text("'10.0.0.300' is not an IP address or CIDR range")
        .await;
    assert!(live.contains("New data connection"));
    let invalid = browser
        .client
        .execute(
            "return document.getElementById('ip_allowlist').matches(':invalid');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(invalid, serde_json::Value::Bool(true));
    browser.screenshot("console-create-invalid-allowlist").await;
    // The browser holds the form back while the field is invalid.
    click_text(&browser, "button", "Create connection").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/new")
    );
    allowlist.clear().await.unwrap();
    allowlist
        .send_keys("127.0.0.1\n203.0.113.0/24")
        .await
        .unwrap();
    // A date picker's typing is locale-bound; the value is what the picker would set.
    browser
        .client
        .execute(
            "document.getElementById('valid_until').value = '2099-06-01T12:30';",
            vec![],
        )
        .await
        .unwrap();
    find(&browser, "#note")
        .await
        .send_keys("browser made")
        .await
        .unwrap();
    browser.screenshot("console-create-form").await;
    click_text(&browser, "button", "Create connection").await;

    browser.wait_for_text("copy it now").await;
    let password = value_of(&browser, "#password").await;
    assert_eq!(password.len(), 64);
    let sample = value_of(&browser, "#sample_query").await;
    assert!(sample.contains(&password), "{sample}");
    // The copy button appears with the script and answers a click.
    let copy = find(&browser, "button[data-copy='password']").await;
    assert!(copy.is_displayed().await.unwrap());
    copy.click().await.unwrap();
    // The clipboard answers asynchronously; the button says how it went.
    let mut said = copy.text().await.unwrap();
    for _ in 0..100 {
        if said != "Copy" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        said = copy.text().await.unwrap();
    }
    assert!(
        said == "Copied" || said == "Press Ctrl+C to copy",
        "the copy button says {said}"
    );
    browser.screenshot("console-password-once").await;
    let url = browser.client.current_url().await.unwrap();
    let id = url.path().rsplit('/').next().unwrap().to_owned();

    // Reloaded: the password is gone for good.
    browser.client.refresh().await.unwrap();
    let text = browser.wait_for_text("Sample query").await;
    assert!(!text.contains("copy it now"));
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains(&password), "no trace of it in the page");
    assert!(
        value_of(&browser, "#sample_query")
            .await
            .contains("INSERT_PASSWORD")
    );
    browser.screenshot("console-connection-reloaded").await;

    click_text(&browser, "a", "Data connections").await;
    let list = browser.wait_for_text("browser made").await;
    assert!(list.contains("expires in") && list.contains("My Team"));
    browser.assert_fits_width().await;
    browser.screenshot("console-data-connections").await;

    click_text(&browser, "a", "browser made").await;
    browser.wait_for_text("Sample query").await;
    click_text(&browser, "a", "Delete this connection…").await;
    let confirm = browser.wait_for_text("cannot be undone").await;
    assert!(confirm.contains("Delete “browser made”"));
    browser.screenshot("console-delete-confirm").await;
    browser
        .client
        .find(Locator::Css("form button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("Connection {id} was deleted"))
        .await;
    browser.screenshot("console-deleted").await;
    let gone = server
        .get(&format!("/api/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    click_text(&browser, "a", "Tokens & secrets").await;
    browser.wait_for_text("New API token").await;
    browser.screenshot("console-tokens").await;
    click_text(&browser, "a", "Topology").await;
    browser.wait_for_text("Regions").await;
    browser.screenshot("console-topology").await;

    click_text(&browser, "button", "Sign out").await;
    browser.wait_for_text("API token or vault secret").await;
    browser
        .client
        .goto(&format!("{}/console/data-connections", server.base))
        .await
        .unwrap();
    browser.wait_for_text("API token or vault secret").await;
    browser.close().await;
}

#[tokio::test]
async fn the_vault_is_filtered_on_a_phone_in_chromium() {
    let server = start().await;
    seed_vault(&server).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server.base, TEST_SECRET).await;
    let all = browser.wait_for_text("carol's mail").await;
    assert!(all.contains("alice's mail") && all.contains("bob's mail"));
    browser.assert_fits_width().await;
    browser.screenshot("console-vault-phone").await;

    find(&browser, "#f-tags")
        .await
        .send_keys("eu")
        .await
        .unwrap();
    find(&browser, "#f-state")
        .await
        .select_by_value("unknown")
        .await
        .unwrap();
    click_text(&browser, "button", "Filter").await;
    let filtered = browser.wait_for_text("Page 1 of 1 · 1 in all").await;
    assert!(filtered.contains("alice's mail"));
    assert!(!filtered.contains("bob's mail") && !filtered.contains("carol's mail"));
    let url = browser.client.current_url().await.unwrap();
    assert!(url.query().unwrap().contains("tags=eu"), "{url}");
    assert_eq!(
        value_of(&browser, "#f-tags").await,
        "eu",
        "the filter stays filled in"
    );
    browser.assert_fits_width().await;
    browser.screenshot("console-vault-filtered-phone").await;

    click_text(&browser, "a", "alice's mail").await;
    browser.wait_for_text("Next refresh").await;
    browser.assert_fits_width().await;
    browser.screenshot("console-vault-connection-phone").await;

    // The data connection pages on the phone too.
    click_text(&browser, "button", "Sign out").await;
    browser.wait_for_text("API token or vault secret").await;
    sign_in(&browser, &server.base, TOKEN).await;
    browser.wait_for_text("No data connections yet.").await;
    browser.assert_fits_width().await;
    click_text(&browser, "a", "New connection").await;
    browser.wait_for_text("IP allowlist").await;
    browser.assert_fits_width().await;
    browser.screenshot("console-create-form-phone").await;
    browser.close().await;
}
