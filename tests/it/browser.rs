//! Browser tests in headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver: a staff member signs in with TOTP, builds a two-page form
//! with a show/hide rule and publishes it; a citizen on a 390×844 phone completes it
//! through the 確認画面 and gets a receipt number. axe-core runs on every citizen
//! page; screenshots are saved under `target/screenshots/`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use madoguchi::tenant::staff::{now_unix, totp_code, totp_from_base32, Role};
use serde_json::json;

use crate::harness::{unique, TestEnv};

/// A chromedriver on a free port, in its own process group: dropping it stops the
/// driver and every browser it started, even when a test fails half-way, and removes
/// their profiles.
struct Driver {
    child: Child,
    port: u16,
    profiles: std::sync::Mutex<Vec<PathBuf>>,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: install Debian's chromium-driver (ops/test does)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            profiles: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn session(&self, phone: bool) -> Client {
        self.session_with(phone, &[]).await
    }

    /// A session with more command-line switches for Chromium.
    async fn session_with(&self, phone: bool, extra: &[&str]) -> Client {
        let profile = std::env::temp_dir().join(unique("madoguchi-chromium-"));
        self.profiles.lock().unwrap().push(profile.clone());
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--lang=ja".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut options = json!({ "args": [] });
        if phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 3.0, "touch": true },
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
            });
        } else {
            args.push("--window-size=1280,1000".to_owned());
        }
        options["args"] = json!(args);
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("starting a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        for p in self.profiles.lock().map(|p| p.clone()).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Runs axe-core (WCAG 2.1 A/AA rules) and returns the serious and critical violations.
async fn axe(c: &Client) -> Vec<String> {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/node_modules/axe-core/axe.min.js"
    ))
    .expect("axe-core not installed: run `npm ci --prefix tests/browser` (ops/test does)");
    c.execute(&format!("{source}\nreturn true;"), vec![])
        .await
        .unwrap();
    let result = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
               .then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(result).unwrap()
}

async fn check_page(c: &Client, name: &str) {
    shot(c, name).await;
    let violations = axe(c).await;
    assert!(
        violations.is_empty(),
        "{name}: accessibility violations:\n{}",
        violations.join("\n")
    );
}

async fn fill(c: &Client, css: &str, text: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

/// Clicks something that loads a new page, and waits until the new page is there.
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    // The old document's root goes stale once the next page has replaced it.
    while old.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "clicking {css} loaded no new page"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = "return document.readyState === 'complete';";
    while c.execute(ready, vec![]).await.ok() != Some(serde_json::Value::Bool(true)) {
        assert!(
            Instant::now() < deadline,
            "the page after {css} did not finish loading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clicks something on the page itself (a radio button's label).
async fn tap(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn select(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn body(c: &Client) -> String {
    c.source().await.unwrap()
}

/// Adds a field on the builder page and lands in its editor.
async fn add_field(c: &Client, page: usize, ty: &str, label: &str) {
    select(c, &format!("#type-{page}"), ty).await;
    fill(c, &format!("#label-{page}"), label).await;
    click(
        c,
        &format!("#page-{page} form.add-field button[type=submit]"),
    )
    .await;
    assert!(body(c).await.contains("項目の編集"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_builds_a_form_and_a_citizen_applies_on_a_phone() {
    let env = TestEnv::new().await;
    let slug = unique("br");
    let host = format!("{slug}.localhost");
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &slug,
        "千代田区",
        "131016",
        std::slice::from_ref(&host),
    )
    .unwrap();
    let t = madoguchi::control::provision::provision(&env.platform, &spec)
        .await
        .unwrap();
    let server = env.serve().await;
    let base = format!("http://{host}:{}", server.bound.public.port());
    let driver = Driver::start();

    // Staff: the setup link, a password and TOTP.
    let token = madoguchi::control::tenant_admin::add_staff(
        &env.platform,
        &t,
        "kanri@city.example.jp",
        "管理 花子",
        Role::Admin,
        None,
    )
    .await
    .unwrap();
    let staff = driver.session(false).await;
    staff
        .goto(&format!("{base}/admin/setup/{token}"))
        .await
        .unwrap();
    let secret = totp_from_base32(&text(&staff, "#totp-secret").await).unwrap();
    fill(&staff, "#password", "correct horse battery staple").await;
    fill(&staff, "#password2", "correct horse battery staple").await;
    fill(&staff, "#code", &totp_code(&secret, now_unix())).await;
    click(&staff, "form button.primary").await;
    // Sign out and in again, as on any other day.
    click(&staff, ".admin-nav form.inline button").await;
    assert!(staff
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/admin/login"));
    fill(&staff, "#email", "kanri@city.example.jp").await;
    fill(&staff, "#password", "correct horse battery staple").await;
    fill(&staff, "#code", &totp_code(&secret, now_unix() + 30)).await;
    click(&staff, "form button.primary").await;
    assert!(
        staff
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/admin/forms"),
        "sign-in with TOTP failed"
    );

    // A department, then the form.
    staff.goto(&format!("{base}/admin/staff")).await.unwrap();
    fill(&staff, "#dept-name", "子育て支援課").await;
    click(&staff, "form[action='/admin/departments'] button").await;
    staff.goto(&format!("{base}/admin/forms")).await.unwrap();
    fill(&staff, "#new-title", "子育て支援アンケート").await;
    click(&staff, "form[action='/admin/forms'] button.primary").await;
    add_field(&staff, 0, "name", "氏名").await;
    tap(&staff, "input[name=required]").await;
    click(&staff, "form button.primary").await;
    add_field(&staff, 0, "email", "メールアドレス").await;
    tap(&staff, "input[name=required]").await;
    click(&staff, "form button.primary").await;
    add_field(&staff, 0, "choice", "お子さんの有無").await;
    fill(&staff, "#options", "いる\nいない").await;
    tap(&staff, "input[name=required]").await;
    fill(&staff, "#id", "has_children").await;
    click(&staff, "form button.primary").await;
    // Page 2, with a field shown only to those who have children.
    fill(&staff, "#new-page", "お子さんについて").await;
    click(&staff, "form.add-page button").await;
    add_field(&staff, 1, "number", "お子さんの人数").await;
    fill(&staff, "#unit", "人").await;
    fill(&staff, "#min", "1").await;
    tap(&staff, "input[name=required]").await;
    select(&staff, "#cond_field", "has_children").await;
    select(&staff, "#cond_op", "equals").await;
    fill(&staff, "#cond_values", "いる").await;
    click(&staff, "form button.primary").await;
    add_field(&staff, 1, "textarea", "ご意見").await;
    click(&staff, "form button.primary").await;
    let page = body(&staff).await;
    assert!(
        page.contains("「お子さんの有無」が「いる」のとき表示"),
        "the rule is not shown in the builder"
    );
    click(&staff, "#publish").await;
    assert!(text(&staff, "#form-status").await.starts_with("公開中"));
    shot(&staff, "admin-builder").await;
    let public = staff
        .find(Locator::Css("#public-url"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();

    // Citizen, on a phone: finds the procedure from the home page by a word typed in
    // hiragana, and opens it.
    let phone = driver.session(true).await;
    phone.goto(&format!("{base}/")).await.unwrap();
    fill(&phone, "#q", "あんけーと").await;
    click(&phone, ".search button[type=submit]").await;
    check_page(&phone, "citizen-0-home-search").await;
    let found = body(&phone).await;
    assert!(
        found.contains("1件") && found.contains("子育て支援課"),
        "{found}"
    );
    click(&phone, ".form-list a").await;
    assert_eq!(phone.current_url().await.unwrap().as_str(), public);
    let width: f64 = serde_json::from_value(
        phone
            .execute("return window.innerWidth;", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    assert!((380.0..=400.0).contains(&width), "viewport {width}");
    check_page(&phone, "citizen-1-page1").await;
    // Sent empty: errors at the top and beside the fields, in Japanese.
    click(&phone, "button[value=next]").await;
    let page = body(&phone).await;
    assert!(
        page.contains("入力内容に誤りがあります") && page.contains("氏名（姓）を入力してください")
    );
    check_page(&phone, "citizen-2-errors").await;
    fill(&phone, "#f-q1-family", "千代田").await;
    fill(&phone, "#f-q1-given", "花子").await;
    fill(&phone, "#f-q1-family_kana", "ちよだ").await;
    fill(&phone, "#f-q1-given_kana", "はなこ").await;
    fill(&phone, "#f-q2", "chiyoda.hanako@example.jp").await;
    fill(&phone, "#f-q2-confirm", "chiyoda.hanako@example.jp").await;
    tap(&phone, "label[for='f-has_children-0']").await;
    click(&phone, "button[value=next]").await;
    assert!(
        body(&phone).await.contains("お子さんの人数"),
        "the field shown by the rule is missing"
    );
    check_page(&phone, "citizen-3-page2").await;
    fill(&phone, "#f-q3", "２").await;
    fill(
        &phone,
        "#f-q4",
        "保育園の入園手続きをオンラインでできるようにしてください。",
    )
    .await;
    // 戻る keeps what was typed on both pages.
    click(&phone, "button[value=back]").await;
    assert_eq!(
        phone
            .find(Locator::Css("#f-q1-family"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("千代田")
    );
    click(&phone, "button[value=next]").await;
    assert_eq!(
        phone
            .find(Locator::Css("#f-q3"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("２"),
        "kept as typed"
    );
    click(&phone, "button[value=next]").await;
    let page = body(&phone).await;
    assert!(
        page.contains("入力内容の確認")
            && page.contains("千代田　花子（チヨダ　ハナコ）")
            && page.contains("2")
    );
    check_page(&phone, "citizen-4-confirm").await;
    click(&phone, "form button.primary").await;
    let receipt = text(&phone, "#receipt").await;
    assert!(
        madoguchi::domain::ReceiptNumber::parse(&receipt).is_ok(),
        "receipt {receipt}"
    );
    check_page(&phone, "citizen-5-done").await;

    // Staff opens the case from the inbox and returns it (差戻し) with a reason.
    staff.goto(&format!("{base}/admin/inbox")).await.unwrap();
    // A bulk change that would mail applicants asks first, saying to how many;
    // declining sends nothing.
    tap(&staff, "input[name=ids]").await;
    tap(&staff, "#b-notify").await;
    tap(&staff, "button[data-confirm-notify]").await;
    let asked = staff.get_alert_text().await.unwrap();
    assert!(asked.contains("選択した1件の申請者"), "{asked}");
    staff.dismiss_alert().await.unwrap();
    assert!(staff
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/admin/inbox"));
    click(&staff, "a[href^='/admin/submissions/']").await;
    assert!(body(&staff).await.contains(&receipt));
    select(&staff, "#to", "returned").await;
    fill(
        &staff,
        "#reason",
        "お子さんの人数の欄に、年齢も書き添えてください。",
    )
    .await;
    staff
        .execute(
            "document.getElementById('deadline').value = '2031-08-31';",
            vec![],
        )
        .await
        .unwrap();
    click(&staff, "form[action$='/status'] button").await;
    assert_eq!(text(&staff, "#status").await, "差戻し");
    shot(&staff, "admin-returned").await;
    // The manual, from the menu.
    click(&staff, ".admin-nav a[href='/admin/help']").await;
    assert!(text(&staff, "h1").await.starts_with("操作マニュアル"));
    check_page(&staff, "admin-help").await;
    // The identity provider's settings.
    click(&staff, ".admin-nav a[href='/admin/identity']").await;
    assert!(text(&staff, "#redirect-uri")
        .await
        .ends_with("/identity/callback"));
    check_page(&staff, "admin-identity").await;
    staff.close().await.unwrap();

    // The citizen's status lookup shows it.
    phone.goto(&format!("{base}/status")).await.unwrap();
    check_page(&phone, "citizen-6-status-form").await;
    fill(&phone, "#receipt", &receipt.to_lowercase()).await;
    fill(&phone, "#email", "chiyoda.hanako@example.jp").await;
    click(&phone, "form button.primary").await;
    assert_eq!(text(&phone, "#status").await, "差戻し");
    assert!(text(&phone, "#return-reason")
        .await
        .contains("年齢も書き添えてください"));
    assert!(
        !body(&phone).await.contains("保育園の入園手続き"),
        "the answers are never shown"
    );
    check_page(&phone, "citizen-7-status-returned").await;
    // Withdrawing asks first; going back leaves it as it was.
    click(&phone, "#withdraw").await;
    check_page(&phone, "citizen-8-withdraw-confirm").await;
    click(&phone, "form[action='/status'] button").await;
    assert_eq!(text(&phone, "#status").await, "差戻し");
    // The guide, from the foot of the page, and a section from its contents.
    click(&phone, ".site-footer a[href='/help']").await;
    check_page(&phone, "citizen-9-help").await;
    tap(&phone, ".toc a[href='#status']").await;
    assert_eq!(
        phone.current_url().await.unwrap().fragment(),
        Some("status")
    );
    phone.close().await.unwrap();

    let conn = env.tenant_conn(&t).await;
    let stored: String = conn
        .client
        .query_one("SELECT receipt_number FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, receipt);
    server.shutdown().await;
}

/// An operator signs in to the console and signs a decommissioning request with the
/// key file she selects: the signature is made by the browser (WebCrypto Ed25519) and
/// checked by the control plane against her registered key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_with_her_key_file_in_the_browser() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("sig"), "三笠市", "012220").await;
    let alice = crate::console::account(&env, "alice", false).await;
    let key_file = env.state.path().join("alice.key");
    madoguchi::control::keys::write_secret(
        &key_file,
        &base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            *alice.signer.as_ref().unwrap().seed(),
        ),
    )
    .unwrap();
    let server = env.serve().await;
    let base = format!("http://127.0.0.1:{}", server.bound.ops.port());
    let driver = Driver::start();
    let c = driver.session(false).await;

    c.goto(&format!("{base}/login")).await.unwrap();
    check_page(&c, "ops-login").await;
    fill(&c, "#id", "alice").await;
    fill(&c, "#password", &alice.password).await;
    fill(&c, "#code", &totp_code(&alice.totp, now_unix())).await;
    click(&c, "button.primary").await;
    assert!(body(&c).await.contains(&t.slug));
    shot(&c, "ops-tenants").await;

    c.goto(&format!("{base}/tenants/{}/decommission", t.slug))
        .await
        .unwrap();
    check_page(&c, "ops-decommission").await;
    click(&c, "button.primary").await;
    assert!(body(&c).await.contains("廃止依頼への署名"));
    check_page(&c, "ops-sign").await;
    c.find(Locator::Id("keyfile"))
        .await
        .unwrap()
        .send_keys(key_file.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Id("sign-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = body(&c).await;
        if page.contains("廃止を依頼しました") {
            break;
        }
        assert!(Instant::now() < deadline, "not signed: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(&c, "ops-signed").await;
    let state: String = crate::harness::admin_client(&env.platform.settings.catalog_db)
        .await
        .query_one("SELECT state FROM tenants WHERE id = $1", &[&t.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "decommissioning");
    c.close().await.unwrap();
    server.shutdown().await;
}

/// A municipality at `<prefix…>.localhost` (browsers send it to this machine) with
/// one published form: the form's path, the server, and the site's base URL.
async fn one_form_site(
    env: &TestEnv,
    prefix: &str,
    form: &str,
) -> (String, madoguchi::front::Server, String) {
    let (_, public, server, base) = one_form_tenant(env, prefix, form).await;
    (public, server, base)
}

/// [`one_form_site`] with the tenant's record.
async fn one_form_tenant(
    env: &TestEnv,
    prefix: &str,
    form: &str,
) -> (
    madoguchi::catalog::TenantRecord,
    String,
    madoguchi::front::Server,
    String,
) {
    let slug = unique(prefix);
    let host = format!("{slug}.localhost");
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &slug,
        "千代田区",
        "131016",
        std::slice::from_ref(&host),
    )
    .unwrap();
    let t = madoguchi::control::provision::provision(&env.platform, &spec)
        .await
        .unwrap();
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, form, "総務課", true)
            .await
            .unwrap();
    let server = env.serve().await;
    let base = format!("http://{host}:{}", server.bound.public.port());
    (t, public, server, base)
}

/// A form with proof of work: the confirmation page's script solves the challenge in
/// the browser (WebCrypto SHA-256) before sending, and the application is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_of_work_is_solved_by_the_browser() {
    let env = TestEnv::new().await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "イベント申込", "settings": { "proof_of_work": true },
      "pages": [ { "id": "p1", "fields": [ { "id": "memo", "type": "text", "label": "メモ", "required": true } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "pw", form).await;
    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    fill(&c, "#f-memo", "よろしくお願いします").await;
    click(&c, "button.primary").await;
    assert!(body(&c).await.contains("入力内容の確認"));
    check_page(&c, "pow-confirm").await;
    click(&c, "button.primary").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = body(&c).await;
        if page.contains("受付番号") {
            break;
        }
        assert!(Instant::now() < deadline, "not accepted: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&c, "pow-done").await;
    c.close().await.unwrap();
    server.shutdown().await;
}

/// Show/hide rules on one page: the script compares a number as the server does
/// (「３人」 is 3), and an unticked box is no answer; the page sent as the person saw
/// it is accepted; a length limit counts characters as the server does (𠮷 is one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_page_rules_agree_with_the_server() {
    let env = TestEnv::new().await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "施設予約",
      "pages": [ { "id": "p1", "fields": [
        { "id": "people", "type": "number", "label": "人数", "required": true, "unit": "人", "integer": true },
        { "id": "room", "type": "text", "label": "部屋の希望", "required": true,
          "show_if": { "field": "people", "op": "in", "values": ["2", "3"] } },
        { "id": "room_note", "type": "text", "label": "部屋についての要望", "required": true,
          "show_if": { "field": "room", "op": "not_empty" } },
        { "id": "shop", "type": "text", "label": "店名", "max_length": 3 },
        { "id": "agent", "type": "consent", "label": "代理申請", "statement": "代理人が申請します" },
        { "id": "agent_name", "type": "text", "label": "代理人の氏名", "required": true,
          "show_if": { "field": "agent", "op": "not_empty" } },
        { "id": "self_check", "type": "text", "label": "本人確認の方法", "required": true,
          "show_if": { "field": "agent", "op": "equals", "values": ["no"] } },
        { "id": "proxy", "type": "name", "label": "同行者", "furigana": false },
        { "id": "relation", "type": "text", "label": "同行者との続柄", "required": true,
          "show_if": { "field": "proxy", "op": "not_empty" } },
        { "id": "mail", "type": "email", "label": "連絡先メール" },
        { "id": "mail_when", "type": "text", "label": "連絡してよい時間帯",
          "show_if": { "field": "mail", "op": "not_empty" } } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "sr", form).await;
    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    let hidden = |id: &'static str| {
        let c = c.clone();
        async move {
            c.execute(
                &format!("return document.getElementById('field-{id}').hidden;"),
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap()
        }
    };
    assert!(hidden("room").await && hidden("agent_name").await && hidden("relation").await);
    assert!(
        !hidden("self_check").await,
        "an unticked 同意 is 「no」 to the server: its dependant is required"
    );
    // The address typed again is not the address: a rule on it waits for the first box.
    fill(&c, "#f-mail-confirm", "hanako@example.jp").await;
    assert!(
        hidden("mail_when").await,
        "the second box answered the question"
    );
    fill(&c, "#f-mail", "hanako@example.jp").await;
    assert!(!hidden("mail_when").await);
    fill(&c, "#f-people", "３人").await;
    assert!(
        !hidden("room").await,
        "「３人」 did not show the field the server requires"
    );
    assert!(
        hidden("agent_name").await,
        "an unticked box showed its dependant"
    );
    fill(&c, "#f-room", "和室").await;
    assert!(!hidden("room_note").await);
    // A chain: a question hidden by its rule is no answer to the next rule, though
    // it still holds what was typed (the server leaves it out too).
    fill(&c, "#f-people", "1").await;
    assert!(hidden("room").await);
    assert!(
        hidden("room_note").await,
        "a rule on a hidden question saw its answer"
    );
    fill(&c, "#f-people", "2").await;
    assert!(!hidden("room").await && !hidden("room_note").await);
    fill(&c, "#f-room_note", "窓側").await;
    fill(&c, "#f-self_check", "運転免許証").await;
    // A name is answered once any part of it is filled in.
    fill(&c, "#f-proxy-family", "葛西").await;
    assert!(
        !hidden("relation").await,
        "a filled-in name left hidden a field the server requires"
    );
    fill(&c, "#f-proxy-given", "太郎").await;
    fill(&c, "#f-relation", "夫").await;
    // Three characters by the server's count, four UTF-16 units by a browser's.
    fill(&c, "#f-shop", "𠮷野家").await;
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(
        page.contains("和室") && !page.contains("代理人の氏名"),
        "{page}"
    );
    assert!(page.contains("運転免許証") && page.contains("夫"), "{page}");
    assert!(page.contains("窓側"), "{page}");
    assert!(
        page.contains("𠮷野家"),
        "the browser cut a valid name: {page}"
    );
    c.close().await.unwrap();
    server.shutdown().await;
}

/// A page of another site (`parent….localhost`) framing `form`, served over plain
/// HTTP until the returned sender is dropped; returns its address.
async fn framing_site(form: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "http://{}.localhost:{}",
        unique("parent"),
        listener.local_addr().unwrap().port()
    );
    let html = format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>市のサイト</title></head>\
         <body><h1>市のサイト</h1><iframe src=\"{form}\" title=\"申請フォーム\" width=\"800\" height=\"900\"></iframe></body></html>"
    );
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = tokio::select! {
                c = listener.accept() => match c { Ok(c) => c, Err(_) => return },
                _ = &mut stopped => return,
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(html.as_bytes()).await;
            });
        }
    });
    (origin, stop)
}

/// A form embedded in the municipality's own site, another site than the form's
/// (the city's pages at one address, the forms at ours), over HTTPS: what is typed
/// survives each 次へ inside the frame, through to the receipt number. A form
/// cookie limited to its own site (`SameSite=Lax`) is neither stored nor sent there,
/// so every step started afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_framed_on_the_citys_own_site_keeps_what_is_typed() {
    use madoguchi::front::tls::local_ca;
    use madoguchi::front::{Listeners, Server};
    let env = TestEnv::new().await;
    let slug = unique("embed");
    let host = format!("{slug}.localhost");
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &slug,
        "千代田区",
        "131016",
        std::slice::from_ref(&host),
    )
    .unwrap();
    let t = madoguchi::control::provision::provision(&env.platform, &spec)
        .await
        .unwrap();
    let form = r#"{ "format": "madoguchi.form/1", "title": "講座申込",
      "pages": [ { "id": "p1", "fields": [ { "id": "memo", "type": "text", "label": "メモ", "required": true } ] },
                 { "id": "p2", "fields": [ { "id": "note", "type": "text", "label": "連絡事項" } ] } ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, form, "総務課", true)
            .await
            .unwrap();
    let dir = env.state.path().join("tls");
    let files = local_ca(&dir, std::slice::from_ref(&host)).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::start_with(
        &env.platform,
        Listeners {
            public: any,
            ops: any,
            tls: Some((files, any)),
            lgwan: None,
        },
    )
    .await
    .unwrap();
    let form_url = format!(
        "https://{host}:{}{public}",
        server.bound.https.unwrap().port()
    );
    let (parent, stop) = framing_site(&form_url).await;
    crate::harness::admin_client(&t.database)
        .await
        .execute("UPDATE settings SET embed_origins = ARRAY[$1]", &[&parent])
        .await
        .unwrap();

    let driver = Driver::start();
    let c = driver
        .session_with(false, &["--ignore-certificate-errors"])
        .await;
    c.goto(&format!("{parent}/")).await.unwrap();
    c.wait().for_element(Locator::Css("iframe")).await.unwrap();
    c.enter_frame(0).await.unwrap();
    c.wait().for_element(Locator::Css("#f-memo")).await.unwrap();
    fill(&c, "#f-memo", "枠の中から").await;
    click(&c, "button.primary").await;
    c.wait()
        .for_element(Locator::Css("#f-note"))
        .await
        .unwrap_or_else(|e| panic!("the second page did not come: {e}"));
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(
        page.contains("入力内容の確認") && page.contains("枠の中から"),
        "{page}"
    );
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("受付番号"), "{page}");
    c.close().await.unwrap();
    drop(stop);
    server.shutdown().await;
}

/// A page turned away by the rate limit comes back with what was typed (a textarea's
/// lines and a variant selector included) on a page that sends it again with one
/// press; the confirmation step then shows it as typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_refused_at_a_peak_is_sent_again_with_one_press() {
    let env = TestEnv::with(|s| {
        s.limits.submit_per_minute = 12;
        s.limits.submit_burst = 1;
    })
    .await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "意見募集",
      "pages": [ { "id": "p1", "fields": [
        { "id": "who", "type": "text", "label": "お名前", "required": true },
        { "id": "memo", "type": "textarea", "label": "ご意見", "required": true } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "kept", form).await;
    let host = base.trim_start_matches("http://").to_owned();
    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    fill(&c, "#f-who", "葛\u{E0100}西 花子").await;
    fill(&c, "#f-memo", "一行目\n二行目").await;
    // Another POST from this address just before takes the one the limit allows.
    let r = reqwest::Client::new()
        .post(format!("http://{}{public}", server.bound.public))
        .header("host", &host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_page=0")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429);
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("入力した内容は消えていません"), "{page}");
    check_page(&c, "kept-refused").await;
    let wait: u64 = regex::Regex::new(r"(\d+)秒ほど待ってから")
        .unwrap()
        .captures(&page)
        .unwrap_or_else(|| panic!("no wait in {page}"))[1]
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(page.contains("葛\u{E0100}西 花子"), "{page}");
    let memo = text(&c, "main").await;
    assert!(memo.contains("一行目\n二行目"), "{memo}");
    c.close().await.unwrap();
    server.shutdown().await;
}

/// 郵便番号 → 住所 on a phone: seven digits typed (full-width here) fill the empty
/// address line and say so; an address line the person has written is not replaced,
/// only the code's place is said; the page goes on with what is in the boxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postal_code_fills_the_address_line() {
    let env = TestEnv::new().await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "転入届の予約",
      "pages": [ { "id": "p1", "fields": [
        { "id": "home", "type": "address", "label": "新しい住所", "required": true } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "postal", form).await;
    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    let line_value = "return document.getElementById('f-home-address1').value;";
    let said = "return document.getElementById('postal-home').textContent;";
    let wait_for = |script: &'static str, want: &'static str| {
        let c = c.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = c.execute(script, vec![]).await.unwrap();
                if got.as_str().is_some_and(|s| s.contains(want)) {
                    return;
                }
                assert!(Instant::now() < deadline, "{script}: {got} lacks {want}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    fill(&c, "#f-home-postal", "０６０－００４２").await;
    wait_for(line_value, "北海道札幌市中央区大通西").await;
    wait_for(said, "続けて番地を入力してください").await;
    check_page(&c, "postal-filled").await;
    // The person writes the rest; another code then does not replace the line.
    c.find(Locator::Css("#f-home-address1"))
        .await
        .unwrap()
        .send_keys("1丁目")
        .await
        .unwrap();
    fill(&c, "#f-home-postal", "1000001").await;
    wait_for(
        said,
        "郵便番号 1000001 の住所は「東京都千代田区千代田」です",
    )
    .await;
    let line = c.execute(line_value, vec![]).await.unwrap();
    assert_eq!(line, "北海道札幌市中央区大通西1丁目");
    // A code Japan Post does not have is said so (and accepted: codes are added).
    fill(&c, "#f-home-postal", "0000000").await;
    wait_for(said, "郵便番号 0000000 の住所は見つかりませんでした").await;
    fill(&c, "#f-home-postal", "100-0001").await;
    wait_for(
        said,
        "郵便番号 1000001 の住所は「東京都千代田区千代田」です",
    )
    .await;
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(page.contains("〒100-0001"), "{page}");
    assert!(page.contains("北海道札幌市中央区大通西1丁目"), "{page}");
    c.close().await.unwrap();
    server.shutdown().await;
}

/// 一時保存 on a phone, then on with it on a PC: the link comes by mail (a real SMTP
/// exchange), its page moves what was typed into the PC's browser, and the
/// application goes on from there. Then 申請一覧 on the phone: the address asked
/// for, the link mailed, opened, the application listed and its status shown.
/// axe-core runs on the pages this adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_saved_on_a_phone_goes_on_on_a_pc() {
    let smtp = crate::smtp::SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| s.mail = Some(crate::mail::relay(&relay_url))).await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "意見募集",
      "pages": [ { "id": "p1", "fields": [
        { "id": "who", "type": "text", "label": "お名前", "required": true },
        { "id": "memo", "type": "textarea", "label": "ご意見", "required": true },
        { "id": "mail", "type": "email", "label": "メールアドレス" } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "save", form).await;
    let driver = Driver::start();
    let phone = driver.session(true).await;
    phone.goto(&format!("{base}{public}")).await.unwrap();
    fill(&phone, "#f-who", "葛\u{E0100}西 花子").await;
    click(&phone, "button[value=save]").await;
    assert!(body(&phone)
        .await
        .contains("続きから始めるためのリンクをメールでお送りします"));
    check_page(&phone, "save-ask").await;
    fill(&phone, "#email", "hanako.kasai@example.jp").await;
    click(&phone, "button.primary").await;
    assert!(body(&phone).await.contains("続きのリンクを送りました"));
    check_page(&phone, "save-sent").await;

    let mails = smtp.wait_for(1).await;
    let link = crate::forms::capture(r"(https?://\S+/resume/\S+)", &mails[0].body());
    let pc = driver.session(false).await;
    pc.goto(&link).await.unwrap();
    check_page(&pc, "resume-link").await;
    click(&pc, "button.primary").await;
    let page = body(&pc).await;
    assert!(page.contains("1 / 1 ページ"), "{page}");
    let who = pc
        .execute("return document.getElementById('f-who').value;", vec![])
        .await
        .unwrap();
    assert_eq!(who, "葛\u{E0100}西 花子");
    fill(&pc, "#f-memo", "続きはパソコンで書きました").await;
    fill(&pc, "#f-mail", "hanako.kasai@example.jp").await;
    fill(&pc, "#f-mail-confirm", "hanako.kasai@example.jp").await;
    click(&pc, "button.primary").await;
    let page = body(&pc).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(page.contains("続きはパソコンで書きました"), "{page}");
    click(&pc, "button.primary").await;
    let receipt = crate::forms::capture(r#"id="receipt">([0-9A-Z-]+)<"#, &body(&pc).await);

    // 申請一覧 on the phone, from the home page.
    phone.goto(&format!("{base}/")).await.unwrap();
    click(&phone, "#mine-link").await;
    check_page(&phone, "mine-ask").await;
    fill(&phone, "#email", "hanako.kasai@example.jp").await;
    click(&phone, "button.primary").await;
    assert!(body(&phone).await.contains("メールをお送りしました"));
    check_page(&phone, "mine-sent").await;
    let mails = smtp.wait_for(3).await;
    let link = mails
        .iter()
        .find(|m| m.body().contains("/my/open/"))
        .map(|m| crate::forms::capture(r"(https?://\S+/my/open/\S+)", &m.body()))
        .unwrap();
    phone.goto(&link).await.unwrap();
    check_page(&phone, "mine-open").await;
    click(&phone, "button.primary").await;
    let page = body(&phone).await;
    assert!(page.contains(&receipt), "{page}");
    assert!(page.contains("意見募集"), "{page}");
    check_page(&phone, "mine-list").await;
    click(&phone, "#applications button").await;
    let page = body(&phone).await;
    assert!(page.contains(&format!("受付番号 {receipt}")), "{page}");
    assert!(page.contains("申請一覧へ"), "{page}");
    for c in [phone, pc] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

/// 本人確認 in a real browser: from the confirmation page to the provider (another
/// site, over TLS) and back, the browser-binding cookie (SameSite=Lax) comes back
/// with the provider's redirect, the verified identity is shown, and the application
/// is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_verifies_identity_in_the_browser() {
    let s = crate::identity::site().await;
    let (status, _, _) = s.configure(&s.idp.issuer, crate::identity::SECRET).await;
    assert_eq!(status, 303);
    let (public, form_id) = s.form().await;
    s.publish(form_id).await;
    let base = format!("http://{}:{}", s.host, s.server.bound.public.port());
    let driver = Driver::start();
    // The provider's certificate is from the test's own CA, which this profile does
    // not know.
    let c = driver
        .session_with(true, &["--ignore-certificate-errors"])
        .await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    fill(&c, "#f-purpose", "年金の手続き").await;
    click(&c, "button.primary").await;
    assert!(body(&c).await.contains("本人確認へ進む"));
    check_page(&c, "identity-1-confirm").await;
    click(&c, "#identity-start").await;
    // Through the provider and back, on the confirmation page.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !body(&c).await.contains("本人確認が済みました") {
        assert!(
            Instant::now() < deadline,
            "not verified: {} {}",
            c.current_url().await.unwrap(),
            body(&c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.current_url().await.unwrap().path().ends_with("/confirm"));
    assert!(body(&c).await.contains("1990年4月1日（平成2年4月1日）"));
    check_page(&c, "identity-2-verified").await;
    click(&c, "button.primary").await;
    assert!(body(&c).await.contains("受付番号"));
    c.close().await.unwrap();
    s.server.shutdown().await;
}

/// 添付ファイル from a phone: a file too large is said at once and not sent; the
/// photo chosen travels with the page, is shown as attached when the person comes
/// back, and reaches the 確認画面 and the 受付番号.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_is_attached_from_a_phone() {
    let env = TestEnv::new().await;
    let (public, server, base) = one_form_site(&env, "attach", crate::attachments::FORM).await;
    let files = tempfile::tempdir().unwrap();
    let photo = files.path().join("道路の写真.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(30_000, 5);
    std::fs::write(&photo, &png).unwrap();
    let big = files.path().join("big.png");
    let mut large = b"\x89PNG\r\n\x1a\n".to_vec();
    large.resize(1024 * 1024 + 1, 5);
    std::fs::write(&big, &large).unwrap();

    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    fill(&c, "#f-applicant", "神田太郎").await;
    fill(&c, "#f-email", "taro.kanda@example.jp").await;
    fill(&c, "#f-email-confirm", "taro.kanda@example.jp").await;
    let input = c.find(Locator::Css("#f-photo")).await.unwrap();
    input.send_keys(&big.display().to_string()).await.unwrap();
    let warning = "return document.getElementById('warning-photo').textContent;";
    let said = c.execute(warning, vec![]).await.unwrap();
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("大きすぎるため、添付されません（1MBまで）")),
        "{said}"
    );
    let chosen = "return document.getElementById('f-photo').files.length;";
    assert_eq!(c.execute(chosen, vec![]).await.unwrap(), json!(0));
    input.send_keys(&photo.display().to_string()).await.unwrap();
    assert_eq!(c.execute(warning, vec![]).await.unwrap(), json!(""));
    check_page(&c, "attach-chosen").await;
    click(&c, "button.primary").await;
    // Back to the first page: the photo is attached, and kept when sent again.
    click(&c, "button[value=back]").await;
    let page = body(&c).await;
    assert!(page.contains("添付済み: 道路の写真.png（30 KB）"), "{page}");
    check_page(&c, "attach-attached").await;
    click(&c, "button.primary").await;
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(page.contains("道路の写真.png（30 KB）"), "{page}");
    check_page(&c, "attach-confirm").await;
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("受付番号"), "{page}");
    c.close().await.unwrap();
    server.shutdown().await;
}

/// A show/hide rule on a file field (「回答がある」): the page's script shows the
/// question when a file is chosen, keeps it for a file attached before, hides it
/// when that file is to be removed or the choice is cleared, and the server, which
/// decides the same, requires it only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_shows_when_a_file_is_attached() {
    let env = TestEnv::new().await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "道路占用許可申請",
      "pages": [ { "id": "p1", "fields": [
        { "id": "applicant", "type": "text", "label": "申請者名", "required": true },
        { "id": "plan", "type": "file", "label": "図面", "types": ["pdf", "png"], "max_mb": 1 },
        { "id": "plan_note", "type": "text", "label": "図面の説明", "required": true,
          "show_if": { "field": "plan", "op": "not_empty" } } ] },
        { "id": "p2", "fields": [ { "id": "memo", "type": "textarea", "label": "備考" } ] } ] }"#;
    let (public, server, base) = one_form_site(&env, "fr", form).await;
    let files = tempfile::tempdir().unwrap();
    let plan = files.path().join("図面.pdf");
    std::fs::write(&plan, b"%PDF-1.4\n% fictional plan\n%%EOF\n").unwrap();

    let driver = Driver::start();
    let c = driver.session(true).await;
    c.goto(&format!("{base}{public}")).await.unwrap();
    let hidden = || {
        let c = c.clone();
        async move {
            c.execute(
                "return document.getElementById('field-plan_note').hidden;",
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap()
        }
    };
    assert!(hidden().await, "shown before any file was chosen");
    fill(&c, "#f-applicant", "神田太郎").await;
    let input = c.find(Locator::Css("#f-plan")).await.unwrap();
    input.send_keys(&plan.display().to_string()).await.unwrap();
    assert!(!hidden().await, "a chosen file did not show its question");
    // The choice cleared: hidden again.
    c.execute(
        "var f = document.getElementById('f-plan'); f.value = ''; f.dispatchEvent(new Event('change', { bubbles: true }));",
        vec![],
    )
    .await
    .unwrap();
    assert!(hidden().await, "a cleared choice left the question shown");
    // Without a file the server does not require it either.
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(page.contains("備考"), "{page}");
    click(&c, "button[value=back]").await;

    // Attached: the question is required and shown on the way back.
    let input = c.find(Locator::Css("#f-plan")).await.unwrap();
    input.send_keys(&plan.display().to_string()).await.unwrap();
    click(&c, "button.primary").await;
    let page = body(&c).await;
    assert!(
        page.contains("図面の説明"),
        "the server did not require it: {page}"
    );
    fill(&c, "#f-plan_note", "北側の歩道").await;
    click(&c, "button.primary").await;
    click(&c, "button[value=back]").await;
    let page = body(&c).await;
    assert!(page.contains("添付済み: 図面.pdf"), "{page}");
    assert!(!hidden().await, "an attached file left its question hidden");
    check_page(&c, "file-rule-attached").await;
    // Ticking 「…の添付済みのファイルを削除する」 hides it; unticking shows it again.
    tap(&c, "#f-plan-remove").await;
    assert!(
        hidden().await,
        "a file to be removed kept its question shown"
    );
    tap(&c, "#f-plan-remove").await;
    assert!(!hidden().await);
    c.close().await.unwrap();
    server.shutdown().await;
}

/// 代理入力 in the browser: a clerk takes an application by telephone. Every page of
/// the form is on one screen; a page shown only for one answer appears when that
/// answer is chosen (the form's own rule, run by the same script); the entry and its
/// confirmation pass axe; the case opens with its receipt number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_enters_an_application_taken_by_telephone() {
    let env = TestEnv::new().await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "犬の登録申請",
      "pages": [
        { "id": "p1", "fields": [
          { "id": "owner", "type": "name", "label": "飼い主の氏名", "required": true, "furigana": true },
          { "id": "kind", "type": "choice", "label": "届出の種類", "required": true, "options": ["新規登録", "その他"] } ] },
        { "id": "p2", "title": "その他の届出",
          "show_if": { "field": "kind", "op": "equals", "values": ["その他"] },
          "fields": [ { "id": "detail", "type": "textarea", "label": "届出の内容", "required": true } ] } ] }"#;
    let (t, public, server, base) = one_form_tenant(&env, "pxb", form).await;
    let token = madoguchi::control::tenant_admin::add_staff(
        &env.platform,
        &t,
        "madoguchi@city.example.jp",
        "窓口 一郎",
        Role::Staff,
        Some("総務課"),
    )
    .await
    .unwrap();
    let db = env.tenant_conn(&t).await.client;
    let form_id = crate::forms::form_id_of(&db, &public).await;
    let driver = Driver::start();
    let c = driver.session(false).await;
    c.goto(&format!("{base}/admin/setup/{token}"))
        .await
        .unwrap();
    let secret = totp_from_base32(&text(&c, "#totp-secret").await).unwrap();
    fill(&c, "#password", "correct horse battery staple").await;
    fill(&c, "#password2", "correct horse battery staple").await;
    fill(&c, "#code", &totp_code(&secret, now_unix())).await;
    click(&c, "form button.primary").await;

    c.goto(&format!("{base}/admin/forms/{form_id}"))
        .await
        .unwrap();
    click(&c, "#proxy-entry").await;
    let hidden = || {
        let c = c.clone();
        async move {
            c.execute(
                "return document.querySelector('section.proxy-page[data-show-field]').hidden;",
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap()
        }
    };
    assert!(
        hidden().await,
        "the page for その他 shows before it is chosen"
    );
    tap(&c, "label[for='f-kind-1']").await;
    assert!(!hidden().await, "choosing その他 did not show its page");
    check_page(&c, "proxy-entry").await;
    tap(&c, "label[for='proxy-channel-phone']").await;
    fill(&c, "#f-owner-family", "葛\u{E0100}西").await;
    fill(&c, "#f-owner-given", "一郎").await;
    fill(&c, "#f-owner-family_kana", "カサイ").await;
    fill(&c, "#f-owner-given_kana", "イチロウ").await;
    fill(&c, "#f-detail", "飼い主の住所が変わりました").await;
    click(&c, "#proxy-check").await;
    let page = body(&c).await;
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(
        page.contains("葛\u{E0100}西\u{3000}一郎（カサイ\u{3000}イチロウ）"),
        "{page}"
    );
    assert!(page.contains("飼い主の住所が変わりました"), "{page}");
    check_page(&c, "proxy-confirm").await;
    click(&c, "#proxy-send").await;
    let page = body(&c).await;
    assert!(page.contains("代理入力で受け付けました"), "{page}");
    assert!(page.contains("受付番号"), "{page}");
    shot(&c, "proxy-case").await;
    c.close().await.unwrap();
    server.shutdown().await;
}
