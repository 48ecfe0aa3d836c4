//! Staff accounts, the form builder and the citizen's flow, over HTTP against a real
//! server and database.

use std::time::Duration;

use madoguchi::catalog::TenantRecord;
use madoguchi::front::Server;
use madoguchi::tenant::staff::{now_unix, totp_code, totp_from_base32, Role};
use regex::Regex;

use crate::harness::{unique, url, TestEnv};

/// A browser-like client: cookies kept, redirects not followed (so each step is seen).
pub fn browser(server: &Server, hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    for h in hosts {
        b = b.resolve(h, server.bound.public);
    }
    b.build().unwrap()
}

pub fn capture(re: &str, body: &str) -> String {
    Regex::new(re)
        .unwrap()
        .captures(body)
        .unwrap_or_else(|| panic!("{re} not in\n{body}"))[1]
        .to_owned()
}

/// [`browser`] connecting from another loopback address, 127.0.0.`n` (its own
/// rate-limit bucket).
pub fn browser_from(server: &Server, hosts: &[&str], n: u8) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)));
    for h in hosts {
        b = b.resolve(h, server.bound.public);
    }
    b.build().unwrap()
}

pub async fn get(c: &reqwest::Client, u: &str) -> (u16, String, String) {
    seen(c.get(u).send().await.unwrap()).await
}

/// What a step shows: status, where it sends the browser on, and the page.
pub async fn seen(r: reqwest::Response) -> (u16, String, String) {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), loc, r.text().await.unwrap())
}

pub async fn post(c: &reqwest::Client, u: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    post_from(c, u, None, form).await
}

/// [`post`] as a browser sends it from a page of `origin` (its `Origin` header).
pub async fn post_from(
    c: &reqwest::Client,
    u: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, String, String) {
    seen(send_form(c, u, origin, form).await).await
}

/// A url-encoded POST from a page of `origin` (if given); the whole response.
pub async fn send_form(
    c: &reqwest::Client,
    u: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut r = c
        .post(u)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.body(body).send().await.unwrap()
}

/// A signed-in staff member.
pub struct Staff {
    pub client: reqwest::Client,
    pub csrf: String,
    pub email: String,
    pub password: String,
    pub secret: Vec<u8>,
}

/// Creates a staff member through the operator's path, completes the setup link
/// (password + TOTP) and signs in.
pub async fn staff(
    env: &TestEnv,
    server: &Server,
    t: &TenantRecord,
    role: Role,
    dept: Option<&str>,
) -> Staff {
    let host = t.hosts[0].as_str();
    let email = format!("{}@city.example.jp", unique("s"));
    let token = madoguchi::control::tenant_admin::add_staff(
        &env.platform,
        t,
        &email,
        "テスト職員",
        role,
        dept,
    )
    .await
    .unwrap();
    let client = browser(server, &[host]);
    let (status, _, page) = get(
        &client,
        &url(server, host, &format!("/admin/setup/{token}")),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let secret_b32 = capture(r#"name="totp_secret" value="([A-Z2-7=]+)""#, &page);
    let secret = totp_from_base32(&secret_b32).unwrap();
    let password = "correct horse battery staple";
    let code = totp_code(&secret, now_unix());
    let (status, loc, body) = post(
        &client,
        &url(server, host, &format!("/admin/setup/{token}")),
        &[
            ("totp_secret", &secret_b32),
            ("password", password),
            ("password2", password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/forms"), "{body}");
    let (status, _, page) = get(&client, &url(server, host, "/admin/forms")).await;
    assert_eq!(status, 200);
    let csrf = capture(r#"name="csrf" value="([^"]+)""#, &page);
    Staff {
        client,
        csrf,
        email,
        password: password.to_owned(),
        secret,
    }
}

/// Builds the two-page bulky-waste form through the builder's own endpoints and
/// publishes it; returns (form id, public path).
pub async fn build_form(
    s: &Staff,
    server: &Server,
    host: &str,
    dept_id: &str,
    capacity: &str,
) -> (String, String) {
    let u = |p: &str| url(server, host, p);
    let (status, loc, body) = post(
        &s.client,
        &u("/admin/forms"),
        &[
            ("csrf", &s.csrf),
            ("title", "粗大ごみ収集申込"),
            ("department", dept_id),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let id = loc.trim_start_matches("/admin/forms/").to_owned();
    let base = format!("/admin/forms/{id}");
    let fields = u(&format!("{base}/fields"));
    let add = |page: &'static str, ty: &'static str, label: &'static str| {
        add_field(s, &fields, page, ty, label)
    };
    let name = add("0", "name", "氏名").await;
    let email = add("0", "email", "メールアドレス").await;
    let kind = add("0", "choice", "品目").await;
    let (status, _, body) = post(
        &s.client,
        &u(&format!("{base}/fields/{name}")),
        &[
            ("csrf", &s.csrf),
            ("label", "氏名"),
            ("required", "yes"),
            ("furigana", "yes"),
            ("id", "name"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    post(
        &s.client,
        &u(&format!("{base}/fields/{email}")),
        &[
            ("csrf", &s.csrf),
            ("label", "メールアドレス"),
            ("required", "yes"),
            ("id", "email"),
        ],
    )
    .await;
    post(
        &s.client,
        &u(&format!("{base}/fields/{kind}")),
        &[
            ("csrf", &s.csrf),
            ("label", "品目"),
            ("required", "yes"),
            ("options", "ソファ\r\nその他"),
            ("id", "kind"),
        ],
    )
    .await;
    // Shown only when 品目 is その他.
    let other = add("0", "text", "その他の品目").await;
    post(
        &s.client,
        &u(&format!("{base}/fields/{other}")),
        &[
            ("csrf", &s.csrf),
            ("label", "その他の品目"),
            ("required", "yes"),
            ("id", "other"),
            ("cond_field", "kind"),
            ("cond_op", "equals"),
            ("cond_values", "その他"),
        ],
    )
    .await;
    let (status, _, _) = post(
        &s.client,
        &u(&format!("{base}/pages")),
        &[("csrf", &s.csrf), ("action", "add"), ("title", "希望日")],
    )
    .await;
    assert_eq!(status, 303);
    let date = add("1", "date", "収集希望日").await;
    post(
        &s.client,
        &u(&format!("{base}/fields/{date}")),
        &[
            ("csrf", &s.csrf),
            ("label", "収集希望日"),
            ("required", "yes"),
            ("id", "date"),
        ],
    )
    .await;
    post(
        &s.client,
        &u(&format!("{base}/settings")),
        &[
            ("csrf", &s.csrf),
            ("title", "粗大ごみ収集申込"),
            ("capacity", capacity),
            ("completion_message", "ありがとうございました"),
            ("department", dept_id),
        ],
    )
    .await;
    let (status, _, page) = post(
        &s.client,
        &u(&format!("{base}/publish")),
        &[("csrf", &s.csrf)],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("第1版を公開しました"), "{page}");
    let public = capture(r#"id="public-url">https?://[^/]+(/f/[a-z0-9]+)<"#, &page);
    (id, public)
}

/// A form's id from its public path (`/f/…`).
pub async fn form_id_of(db: &tokio_postgres::Client, public: &str) -> i64 {
    db.query_one(
        "SELECT id FROM forms WHERE public_id = $1",
        &[&public.trim_start_matches("/f/")],
    )
    .await
    .unwrap()
    .get(0)
}

/// Adds a field of type `ty` to page `page` through the builder (`fields`: the
/// form's `/fields` URL); returns its id.
pub async fn add_field(s: &Staff, fields: &str, page: &str, ty: &str, label: &str) -> String {
    let (status, loc, _) = post(
        &s.client,
        fields,
        &[
            ("csrf", &s.csrf),
            ("page", page),
            ("type", ty),
            ("label", label),
        ],
    )
    .await;
    assert_eq!(status, 303);
    loc.rsplit('/').next().unwrap().to_owned()
}

/// A citizen completes the form; returns the receipt number.
/// An administrator of `t` builds and publishes the sample form, and a citizen applies
/// to it once; returns the form's public id.
pub async fn one_application(env: &TestEnv, server: &Server, t: &TenantRecord) -> String {
    let host = &t.hosts[0];
    let admin = staff(env, server, t, Role::Admin, None).await;
    let dept = dept_id(env, t, "市民課").await;
    let (_, public) = build_form(&admin, server, host, &dept, "").await;
    apply(server, host, &public, "その他").await.unwrap();
    public
}

pub async fn apply(
    server: &Server,
    host: &str,
    public: &str,
    kind: &str,
) -> Result<String, (u16, String)> {
    apply_with(&browser(server, &[host]), server, host, public, kind).await
}

/// [`apply`] in a given browser (its cookies kept from earlier visits).
pub async fn apply_with(
    c: &reqwest::Client,
    server: &Server,
    host: &str,
    public: &str,
    kind: &str,
) -> Result<String, (u16, String)> {
    let token = fill_in(c, server, host, public, kind).await?;
    send(c, server, host, public, &token).await
}

/// [`apply_with`] up to the confirmation page (入力内容の確認); returns the page's token.
pub async fn fill_in(
    c: &reqwest::Client,
    server: &Server,
    host: &str,
    public: &str,
    kind: &str,
) -> Result<String, (u16, String)> {
    fill_in_as(c, server, host, public, kind, "hanako.kasai@example.jp").await
}

/// [`fill_in`] with another e-mail address.
pub async fn fill_in_as(
    c: &reqwest::Client,
    server: &Server,
    host: &str,
    public: &str,
    kind: &str,
    email: &str,
) -> Result<String, (u16, String)> {
    let c = c.clone();
    let u = |p: &str| url(server, host, p);
    let (status, _, page) = get(&c, &u(public)).await;
    if status != 200 || !page.contains("_token") {
        return Err((status, page));
    }
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let mut first = vec![
        ("_token", token.as_str()),
        ("_page", "0"),
        ("_nav", "next"),
        ("name.family", "葛\u{E0100}西"),
        ("name.given", "花子"),
        ("name.family_kana", "かさい"),
        ("name.given_kana", "ﾊﾅｺ"),
        ("email", email),
        ("email.confirm", email),
        ("kind", kind),
    ];
    if kind == "その他" {
        first.push(("other", "古いピアノ椅子"));
    }
    let (status, loc, body) = post(&c, &u(public), &first).await;
    if status != 303 {
        return Err((status, body));
    }
    assert!(loc.ends_with("?page=1"), "{loc}");
    let (status, loc, body) = post(
        &c,
        &u(public),
        &[
            ("_token", &token),
            ("_page", "1"),
            ("_nav", "next"),
            ("date", "2031-07-19"),
        ],
    )
    .await;
    if status != 303 {
        return Err((status, body));
    }
    assert!(loc.ends_with("/confirm"));
    let (status, _, confirm) = get(&c, &u(&loc)).await;
    if status != 200 || !confirm.contains("入力内容の確認") {
        // The form may have closed or filled up meanwhile.
        return Err((status, confirm));
    }
    assert!(
        confirm.contains("葛\u{E0100}西\u{3000}花子（カサイ\u{3000}ハナコ）"),
        "{confirm}"
    );
    assert!(confirm.contains("令和13年7月19日"));
    Ok(token)
}

/// [`apply_with`]'s last step: sends what [`fill_in`] left on the confirmation page
/// (twice, as a double tap would); returns the receipt number.
pub async fn send(
    c: &reqwest::Client,
    server: &Server,
    host: &str,
    public: &str,
    token: &str,
) -> Result<String, (u16, String)> {
    let u = |p: &str| url(server, host, p);
    let token = token.to_owned();
    let submit = format!("{public}/submit");
    let (status, loc, body) = post(c, &u(&submit), &[("_token", &token)]).await;
    if status != 303 {
        return Err((status, body));
    }
    // Sending again (double tap, reload) changes nothing.
    let (again, loc2, _) = post(c, &u(&submit), &[("_token", &token)]).await;
    assert_eq!((again, loc2.as_str()), (303, loc.as_str()));
    let (_, _, done) = get(c, &u(&loc)).await;
    Ok(capture(r#"id="receipt">([0-9A-Z-]+)<"#, &done))
}

/// A staff member's id by their e-mail address.
async fn staff_id(db: &tokio_postgres::Client, email: &str) -> i64 {
    db.query_one("SELECT id FROM staff WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0)
}

pub async fn dept_id(env: &TestEnv, t: &TenantRecord, name: &str) -> String {
    let conn = env.tenant_conn(t).await;
    madoguchi::tenant::staff::pages::ensure_department(&conn.client, name)
        .await
        .unwrap()
        .to_string()
}

/// Two sessions adding the same new department at once (two imports, two staff
/// members) both get it, and it is one department.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_added_twice_at_once_is_one_department() {
    use madoguchi::tenant::staff::pages::ensure_department;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("d"), "千代田区", "131016").await;
    let mut first = env.tenant_conn(&t).await;
    let second = env.tenant_conn(&t).await;
    let tx = first.client.transaction().await.unwrap();
    let added = ensure_department(&tx, "防災危機管理課").await.unwrap();
    // The second waits on the first's uncommitted row...
    let waiting = tokio::spawn(async move {
        let id = ensure_department(&second.client, "防災危機管理課").await;
        (id, second)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second did not wait for the first"
    );
    // ...and, once it commits, finds it.
    tx.commit().await.unwrap();
    let (found, _second) = waiting.await.unwrap();
    assert_eq!(found.unwrap(), added);
    let n: i64 = first
        .client
        .query_one(
            "SELECT count(*) FROM departments WHERE name = $1",
            &[&"防災危機管理課"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_builds_and_publishes_a_form_and_citizens_apply() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (id, public) = build_form(&admin, &server, host, &dept, "").await;

    // The home page lists it.
    let (_, _, home) = get(&browser(&server, &[host]), &url(&server, host, "/")).await;
    assert!(home.contains("粗大ごみ収集申込") && home.contains(&public));

    let receipt = apply(&server, host, &public, "その他").await.unwrap();
    assert!(
        madoguchi::domain::ReceiptNumber::parse(&receipt).is_ok(),
        "{receipt}"
    );
    let receipt2 = apply(&server, host, &public, "ソファ").await.unwrap();
    assert_ne!(receipt, receipt2);

    // Stored: one submission each, against version 1, the hidden field not stored.
    let conn = env.tenant_conn(&t).await;
    let rows = conn.client.query("SELECT id, form_version, answers, receipt_number FROM submissions ORDER BY submitted_at", &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
    let cipher = madoguchi::control::tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    for (row, has_other) in rows.iter().zip([true, false]) {
        assert_eq!(row.get::<_, i32>(1), 1);
        let answers =
            madoguchi::tenant::forms::citizen::decrypt_answers(&cipher, row.get(0), &row.get(2))
                .unwrap();
        assert_eq!(answers.contains_key("other"), has_other);
        assert!(
            answers["name"].display().starts_with("葛\u{E0100}西"),
            "IVS kept"
        );
        // With it, in the same statement: the case history's first row (受付, by the
        // applicant) and the applicant's e-mailed copy in the outbox.
        let events = conn
            .client
            .query(
                "SELECT actor_label, to_status FROM submission_events WHERE submission_id = $1",
                &[&row.get::<_, uuid::Uuid>(0)],
            )
            .await
            .unwrap();
        let events: Vec<(String, String)> = events.iter().map(|e| (e.get(0), e.get(1))).collect();
        assert_eq!(events, [("citizen".to_owned(), "received".to_owned())]);
        assert_eq!(
            receipt_mails(&env, &t, row.get(0)).await,
            [serde_json::json!({ "template": "received", "to": "hanako.kasai@example.jp" })]
        );
    }
    // Staff see who made the history row in words.
    let first: uuid::Uuid = rows[0].get(0);
    let (_, _, case) = get(
        &admin.client,
        &url(&server, host, &format!("/admin/submissions/{first}")),
    )
    .await;
    assert!(
        case.contains("<td>申請者</td><td>—</td><td>受付</td>"),
        "{case}"
    );

    // Editing the draft does not change what citizens see until it is published again.
    let base = format!("/admin/forms/{id}");
    post(
        &admin.client,
        &url(&server, host, &format!("{base}/settings")),
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込（改）"),
            ("department", &dept),
        ],
    )
    .await;
    let (_, _, page) = get(&browser(&server, &[host]), &url(&server, host, &public)).await;
    assert!(page.contains("<h1>粗大ごみ収集申込</h1>"));
    // A link changed on the way (`?page=` not a number) gets a page in Japanese
    // saying what to do, not a bare error.
    let (status, _, page) = get(
        &browser(&server, &[host]),
        &url(&server, host, &format!("{public}?page=2%29")),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        page.contains("<html lang=\"ja\"")
            && page.contains("アドレスの「?」から後が正しくありません"),
        "{page}"
    );
    let (_, _, page) = post(
        &admin.client,
        &url(&server, host, &format!("{base}/publish")),
        &[("csrf", &admin.csrf)],
    )
    .await;
    assert!(page.contains("第2版を公開しました"));
    apply(&server, host, &public, "ソファ").await.unwrap();
    let v: i32 = conn
        .client
        .query_one("SELECT max(form_version) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);

    // 公開履歴: both versions, newest first, when and by whom; each can be seen
    // and downloaded as it was published.
    let (_, _, page) = get(&admin.client, &url(&server, host, &base)).await;
    let history = page
        .split("id=\"versions\"")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no 公開履歴: {page}"));
    let second = history
        .find("第2版（現在の版）")
        .expect("version 2 listed as current");
    let first_row = history
        .find("第1版</td><td>粗大ごみ収集申込</td>")
        .expect("version 1 listed");
    assert!(second < first_row, "{history}");
    assert!(
        history.contains("粗大ごみ収集申込（改）")
            && history.contains("令和")
            && history.contains("テスト職員"),
        "{history}"
    );
    let (status, _, old) = get(
        &admin.client,
        &url(&server, host, &format!("{base}/preview?version=1")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        old.contains("<h1>粗大ごみ収集申込</h1>")
            && old.contains("（第1版）")
            && old.contains(r#"<input type="hidden" name="version" value="1">"#),
        "{old}"
    );
    let (status, _, json) = get(
        &admin.client,
        &url(&server, host, &format!("{base}/export?version=1")),
    )
    .await;
    assert_eq!(status, 200);
    let old = madoguchi::tenant::forms::definition::FormDefinition::from_json(&json).unwrap();
    assert_eq!(old.title, "粗大ごみ収集申込");
    for missing in ["version=3", "version=0", "version=x"] {
        let (status, _, body) = get(
            &admin.client,
            &url(&server, host, &format!("{base}/preview?{missing}")),
        )
        .await;
        assert_eq!(status, 404, "{missing}");
        assert!(body.contains("ページが見つかりません"), "{missing}: {body}");
    }
    // A page number typed wrong shows the first page rather than an error.
    let (status, _, first) = get(
        &admin.client,
        &url(&server, host, &format!("{base}/preview?page=x")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(first.contains("プレビュー"), "{first}");

    // Export, duplicate, preview, QR codes.
    let (status, _, json) = get(
        &admin.client,
        &url(&server, host, &format!("{base}/export")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(madoguchi::tenant::forms::definition::FormDefinition::from_json(&json).is_ok());
    let (status, loc, _) = post(
        &admin.client,
        &url(&server, host, &format!("{base}/duplicate")),
        &[("csrf", &admin.csrf)],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, copy) = get(&admin.client, &url(&server, host, &loc)).await;
    assert!(copy.contains("（コピー）") && copy.contains("下書き"));
    // Both the form and its copy were made by the administrator, as the log says.
    let made = log_rows(
        &conn.client,
        "SELECT actor, target, detail FROM audit_log WHERE action = 'form.create' ORDER BY seq",
    )
    .await;
    let copy_id = loc.trim_start_matches("/admin/forms/");
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made
        .iter()
        .all(|(actor, _, _)| actor.contains(&admin.email)));
    assert_eq!(made[0].1, format!("form:{id}"));
    assert_eq!(made[1].1, format!("form:{copy_id}"));
    assert!(made[1].2.contains(&format!("\"copy_of\":{id}")), "{made:?}");
    let (status, _, preview) = get(
        &admin.client,
        &url(&server, host, &format!("{base}/preview?page=1")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(preview.contains("プレビュー") && preview.contains("収集希望日"));
    let r = admin
        .client
        .get(url(&server, host, &format!("{base}/qr?format=png")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let (_, _, svg) = get(&admin.client, &url(&server, host, &format!("{base}/qr"))).await;
    assert!(svg.contains("<svg"));

    // Import: bad JSON is refused with a message and the draft is kept.
    let (status, _, page) = post(
        &admin.client,
        &url(&server, host, &format!("{base}/import")),
        &[("csrf", &admin.csrf), ("json", "{\"format\": 1}")],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("読み込めませんでした"));

    // Close: citizens are told, nothing is accepted.
    post(
        &admin.client,
        &url(&server, host, &format!("{base}/close")),
        &[("csrf", &admin.csrf), ("action", "close")],
    )
    .await;
    let err = apply(&server, host, &public, "ソファ").await.err().unwrap();
    assert!(err.1.contains("受付を停止しています"));
    server.shutdown().await;
}

/// The e-mailed copies (受付完了メール) queued for a submission, decrypted.
pub async fn receipt_mails(
    env: &TestEnv,
    t: &TenantRecord,
    submission: uuid::Uuid,
) -> Vec<serde_json::Value> {
    let cipher = madoguchi::control::tenant_admin::tenant_cipher(&env.platform, t)
        .await
        .unwrap();
    let conn = env.tenant_conn(t).await;
    let rows = conn
        .client
        .query(
            "SELECT payload FROM outbox WHERE submission_id = $1 AND kind = 'receipt' ORDER BY id",
            &[&submission],
        )
        .await
        .unwrap();
    let row_id = submission.to_string();
    let at = madoguchi::crypto::FieldRef {
        table: "outbox",
        column: "payload",
        row_id: &row_id,
    };
    rows.iter()
        .map(|r| serde_json::from_slice(&cipher.decrypt(&at, r.get(0)).unwrap()).unwrap())
        .collect()
}

/// Operation-log rows as three text columns, as `sql` selects them.
pub async fn log_rows(db: &tokio_postgres::Client, sql: &str) -> Vec<(String, String, String)> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// What an operator does to a tenant from the command line (a staff member, an
/// imported and published form, an API token) is in the tenant's operation log as
/// the operator's, in an intact chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_are_in_the_operation_log() {
    use madoguchi::control::tenant_admin;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("op"), "千代田区", "131016").await;
    tenant_admin::add_staff(
        &env.platform,
        &t,
        "kanri@example.jp",
        "管理 花子",
        Role::Admin,
        None,
    )
    .await
    .unwrap();
    let path = crate::harness::publish_sample(&env, &t).await;
    tenant_admin::api_token(
        &env.platform,
        &t,
        "基幹連携",
        &["forms:read".into()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let conn = env.tenant_conn(&t).await;
    let (form_id, staff_id): (i64, i64) = {
        let r = conn
            .client
            .query_one(
                "SELECT (SELECT id FROM forms WHERE public_id = $1), (SELECT id FROM staff WHERE email = 'kanri@example.jp')",
                &[&path.trim_start_matches("/f/")],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let log = log_rows(
        &conn.client,
        "SELECT actor, action, target FROM audit_log ORDER BY seq",
    )
    .await;
    let op =
        |action: &str, target: &str| ("operator".to_owned(), action.to_owned(), target.to_owned());
    assert_eq!(
        log,
        [
            op("staff.create", &staff_id.to_string()),
            op("form.create", &format!("form:{form_id}")),
            op("form.publish", &format!("form:{form_id}")),
            op("api_token.create", &log[3].2),
        ]
    );
    let detail: String = conn
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'form.create'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(detail.contains("\"imported\":true"), "{detail}");
    assert_eq!(
        madoguchi::tenant::audit::verify(&conn.client)
            .await
            .unwrap(),
        madoguchi::tenant::audit::Verdict::Intact(4)
    );
}

/// `madoguchi demo` seeds an administrator (new password and TOTP each time) and,
/// once, the sample form (its path printed each time); each seeding is in the
/// operation log as the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeding_is_repeatable_and_logged() {
    use madoguchi::control::tenant_admin::seed_demo;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("demo"), "千代田区", "131016").await;
    let first = seed_demo(&env.platform, &t).await.unwrap();
    let again = seed_demo(&env.platform, &t).await.unwrap();
    assert_eq!(first.email, again.email);
    assert_ne!(first.password, again.password);
    assert_ne!(first.totp_secret, again.totp_secret);
    assert!(first.form_path.is_some());
    assert_eq!(
        first.form_path, again.form_path,
        "the same sample form, not a second"
    );
    let conn = env.tenant_conn(&t).await;
    let r = conn
        .client
        .query_one(
            "SELECT (SELECT count(*) FROM forms WHERE current_version IS NOT NULL),
                    (SELECT id FROM staff WHERE email = $1 AND role = 'admin' AND totp_enabled)",
            &[&first.email],
        )
        .await
        .unwrap();
    let (forms, staff_id): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(forms, 1);
    let seeded = log_rows(
        &conn.client,
        "SELECT actor, action, target FROM audit_log WHERE action = 'demo.seed' ORDER BY seq",
    )
    .await;
    let entry = (
        "operator".to_owned(),
        "demo.seed".to_owned(),
        staff_id.to_string(),
    );
    assert_eq!(seeded, [entry.clone(), entry]);
    assert!(matches!(
        madoguchi::tenant::audit::verify(&conn.client)
            .await
            .unwrap(),
        madoguchi::tenant::audit::Verdict::Intact(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_under_concurrent_submits() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "子育て支援課").await;
    let (form_id, public) = build_form(&admin, &server, &host, &dept, "3").await;
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (server, host, public) = (server.clone(), host.clone(), public.clone());
        tasks.push(tokio::spawn(async move {
            apply(&server, &host, &public, "ソファ").await
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err((_, body)) if body.contains("定員に達しました") => refused += 1,
            Err((status, body)) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!((accepted, refused), (3, 9));
    let conn = env.tenant_conn(&t).await;
    let n: i64 = conn
        .client
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // Each accepted one (and none refused) has its 受付 row and e-mailed copy.
    let (events, mails): (i64, i64) = {
        let r = conn
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM submission_events WHERE to_status = 'received'),
                        (SELECT count(*) FROM outbox WHERE kind = 'receipt')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((events, mails), (3, 3));
    // And the form now says so on its first page.
    let (_, _, page) = get(&browser(&server, &[&host]), &url(&server, &host, &public)).await;
    assert!(page.contains("定員に達しました"));

    // An application withdrawn (取下げ) or rejected (却下) gives its place back, once;
    // one returned (差戻し) keeps it.
    let ids: Vec<uuid::Uuid> = conn
        .client
        .query("SELECT id FROM submissions ORDER BY submitted_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let change = |id: uuid::Uuid, from: &'static str, to: &'static str| {
        let (admin, server, host) = (&admin, &server, &host);
        async move {
            let (status, _, page) = post(
                &admin.client,
                &url(server, host, &format!("/admin/submissions/{id}/status")),
                &[
                    ("csrf", admin.csrf.as_str()),
                    ("from", from),
                    ("to", to),
                    ("reason", "記入漏れがあります"),
                    ("deadline", "2099-12-31"),
                ],
            )
            .await;
            assert_eq!(status, 303, "{from} → {to}: {page}");
        }
    };
    let full = |r: Result<String, (u16, String)>| matches!(&r, Err((_, body)) if body.contains("定員に達しました"));
    change(ids[0], "received", "returned").await;
    assert!(full(apply(&server, &host, &public, "ソファ").await));
    change(ids[0], "returned", "withdrawn").await;
    let fourth = apply(&server, &host, &public, "ソファ").await;
    assert!(fourth.is_ok(), "{fourth:?}");
    assert!(full(apply(&server, &host, &public, "ソファ").await));
    change(ids[1], "received", "reviewing").await;
    change(ids[1], "reviewing", "rejected").await;
    assert!(apply(&server, &host, &public, "ソファ").await.is_ok());
    let refused = apply(&server, &host, &public, "ソファ").await.unwrap_err();
    assert!(refused.1.contains("定員に達しました"), "{refused:?}");
    // Publishing again counts the same: 5 received, 2 of them given back, 3 held.
    let (status, _, page) = post(
        &admin.client,
        &url(&server, &host, &format!("/admin/forms/{form_id}/publish")),
        &[("csrf", &admin.csrf)],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (count, capacity): (i32, Option<i32>) = {
        let r = conn
            .client
            .query_one("SELECT accepted_count, capacity FROM forms", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((count, capacity), (3, Some(3)));
    assert!(full(apply(&server, &host, &public, "ソファ").await));
}

/// Backends of the tenant's database waiting for a lock. `db` must not be in a
/// transaction: PostgreSQL shows one snapshot of pg_stat_activity per transaction.
pub(crate) async fn lock_waiters(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits (up to 10 s) until `n` backends wait for a lock or `done` has finished.
pub(crate) async fn until_waiting<T>(
    db: &tokio_postgres::Client,
    n: i64,
    done: &tokio::task::JoinHandle<T>,
) {
    for _ in 0..200 {
        if lock_waiters(db).await >= n || done.is_finished() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{n} backends never waited for a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_given_capacity_while_applications_are_sent_counts_each_of_them() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = std::sync::Arc::new(env.serve().await);
    let host = t.hosts[0].clone();
    let admin = std::sync::Arc::new(staff(&env, &server, &t, Role::Admin, None).await);
    let dept = dept_id(&env, &t, "子育て支援課").await;
    let conn = env.tenant_conn(&t).await;
    let db = &conn.client;
    let blocker = env.tenant_conn(&t).await;
    // Staff give a published form without 定員 a limit of 5 and publish it.
    let limit = |form_id: String| {
        let (admin, server, host, dept) =
            (admin.clone(), server.clone(), host.clone(), dept.clone());
        tokio::spawn(async move {
            let u = |p: &str| url(&server, &host, &format!("/admin/forms/{form_id}{p}"));
            let (status, _, page) = post(
                &admin.client,
                &u("/settings"),
                &[
                    ("csrf", admin.csrf.as_str()),
                    ("title", "粗大ごみ収集申込"),
                    ("capacity", "5"),
                    ("completion_message", "ありがとうございました"),
                    ("department", &dept),
                ],
            )
            .await;
            assert!(status < 400, "{page}");
            let (status, _, page) =
                post(&admin.client, &u("/publish"), &[("csrf", &admin.csrf)]).await;
            assert_eq!(status, 200, "{page}");
        })
    };
    let counts = |form_id: String| async move {
        let id: i64 = form_id.parse().unwrap();
        let r = db
            .query_one(
                "SELECT accepted_count, capacity, (SELECT count(*)::int FROM submissions WHERE form_id = $1) FROM forms WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (
            r.get::<_, i32>(0),
            r.get::<_, Option<i32>>(1),
            r.get::<_, i32>(2),
        )
    };

    // 1. An application is being stored (its row written, not yet committed) when
    //    the publish counts: the publish waits for it and counts it.
    let (form_id, public) = build_form(&admin, &server, &host, &dept, "").await;
    let c = browser(&server, &[&host]);
    let token = fill_in(&c, &server, &host, &public, "ソファ")
        .await
        .unwrap();
    let draft: uuid::Uuid = db
        .query_one(
            "SELECT id FROM citizen_drafts WHERE submission_id IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    blocker.client.batch_execute("BEGIN").await.unwrap();
    blocker
        .client
        .execute(
            "SELECT 1 FROM citizen_drafts WHERE id = $1 FOR UPDATE",
            &[&draft],
        )
        .await
        .unwrap();
    let sending = {
        let (c, server, host, public) = (c.clone(), server.clone(), host.clone(), public.clone());
        tokio::spawn(async move { send(&c, &server, &host, &public, &token).await })
    };
    until_waiting(db, 1, &sending).await;
    assert!(
        !sending.is_finished(),
        "the send did not wait for the draft's row"
    );
    let publishing = limit(form_id.clone());
    until_waiting(db, 2, &publishing).await;
    blocker.client.batch_execute("COMMIT").await.unwrap();
    sending.await.unwrap().unwrap();
    publishing.await.unwrap();
    assert_eq!(counts(form_id).await, (1, Some(5), 1));

    // A send whose page was read before a publish of the form begins while the
    // publish is held (after its lock on submissions): it waits for it.
    let send_during_publish = |form_id: String, public: String| {
        let (server, host, blocker, limit) = (server.clone(), host.clone(), &blocker, &limit);
        async move {
            let c = browser(&server, &[&host]);
            let token = fill_in(&c, &server, &host, &public, "ソファ")
                .await
                .unwrap();
            blocker
                .client
                .batch_execute("BEGIN; LOCK TABLE form_versions IN EXCLUSIVE MODE")
                .await
                .unwrap();
            let publishing = limit(form_id);
            until_waiting(db, 1, &publishing).await;
            assert!(
                !publishing.is_finished(),
                "the publish did not wait for form_versions"
            );
            let sending =
                tokio::spawn(async move { send(&c, &server, &host, &public, &token).await });
            until_waiting(db, 2, &sending).await;
            assert!(
                !sending.is_finished(),
                "the send did not wait for the publish"
            );
            blocker.client.batch_execute("COMMIT").await.unwrap();
            publishing.await.unwrap();
            sending.await.unwrap().unwrap();
        }
    };

    // 2. The form had no 定員 when the page was read: the send sees it and counts
    //    itself.
    let (form_id, public) = build_form(&admin, &server, &host, &dept, "").await;
    send_during_publish(form_id.clone(), public.clone()).await;
    assert_eq!(counts(form_id.clone()).await, (1, Some(5), 1));

    // 3. The same with the form already limited: published again meanwhile, the
    //    application is counted under the new version, not turned away as full.
    send_during_publish(form_id.clone(), public).await;
    assert_eq!(counts(form_id).await, (2, Some(5), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_and_closing_times_are_enforced() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "市民課").await;
    let (id, public) = build_form(&admin, &server, host, &dept, "").await;
    let settings = url(&server, host, &format!("/admin/forms/{id}/settings"));
    let publish = url(&server, host, &format!("/admin/forms/{id}/publish"));
    post(
        &admin.client,
        &settings,
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("opens_at", "2099-04-01T09:00"),
            ("department", &dept),
        ],
    )
    .await;
    post(&admin.client, &publish, &[("csrf", &admin.csrf)]).await;
    let (_, _, page) = get(&browser(&server, &[host]), &url(&server, host, &public)).await;
    assert!(
        page.contains("受付開始前です") && page.contains("2099年4月1日") && page.contains("09:00"),
        "{page}"
    );
    assert!(!page.contains("_token"));
    post(
        &admin.client,
        &settings,
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("closes_at", "2020-04-01T09:00"),
            ("department", &dept),
        ],
    )
    .await;
    post(&admin.client, &publish, &[("csrf", &admin.csrf)]).await;
    let err = apply(&server, host, &public, "ソファ").await.err().unwrap();
    assert!(err.1.contains("受付は終了しました"));
    // A closing time before the opening time is a problem the builder shows, and it will not publish.
    post(
        &admin.client,
        &settings,
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("opens_at", "2030-04-01T09:00"),
            ("closes_at", "2030-03-01T09:00"),
            ("department", &dept),
        ],
    )
    .await;
    let (status, _, page) = post(&admin.client, &publish, &[("csrf", &admin.csrf)]).await;
    assert_eq!(status, 422);
    assert!(page.contains("受付終了日時は受付開始日時より後にしてください"));

    // Intake stopped by hand (受付を停止) stays stopped when a new version is
    // published, and the builder says so.
    post(
        &admin.client,
        &settings,
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("department", &dept),
        ],
    )
    .await;
    let close = url(&server, host, &format!("/admin/forms/{id}/close"));
    post(
        &admin.client,
        &close,
        &[("csrf", &admin.csrf), ("action", "close")],
    )
    .await;
    let (_, _, page) = post(&admin.client, &publish, &[("csrf", &admin.csrf)]).await;
    assert!(page.contains("受付は停止したままです"), "{page}");
    let err = apply(&server, host, &public, "ソファ").await.err().unwrap();
    assert!(err.1.contains("受付を停止しています"), "{}", err.1);
    post(
        &admin.client,
        &close,
        &[("csrf", &admin.csrf), ("action", "reopen")],
    )
    .await;
    assert!(apply(&server, host, &public, "ソファ").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_rules_roles_and_departments() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let server = env.serve().await;
    let (ha, hb) = (a.hosts[0].as_str(), b.hosts[0].as_str());
    let admin = staff(&env, &server, &a, Role::Admin, None).await;
    let env_dept = dept_id(&env, &a, "環境政策課").await;
    let (form_id, _) = build_form(&admin, &server, ha, &env_dept, "").await;
    let other = staff(&env, &server, &a, Role::Staff, Some("子育て支援課")).await;
    let viewer = staff(&env, &server, &a, Role::Viewer, Some("環境政策課")).await;
    let form_url = url(&server, ha, &format!("/admin/forms/{form_id}"));

    // Another department's staff: the form is not there for them, not listed, not editable.
    assert_eq!(get(&other.client, &form_url).await.0, 404);
    let (_, _, list) = get(&other.client, &url(&server, ha, "/admin/forms")).await;
    assert!(
        !list.contains(&format!("/admin/forms/{form_id}\"")),
        "another department's form is listed"
    );
    let (_, _, list) = get(&viewer.client, &url(&server, ha, "/admin/forms")).await;
    assert!(
        list.contains(&format!("/admin/forms/{form_id}\"")),
        "own department's form is missing"
    );
    let (status, _, _) = post(
        &other.client,
        &format!("{form_url}/publish"),
        &[("csrf", &other.csrf)],
    )
    .await;
    assert_eq!(status, 404);
    // The read-only user sees it but changes nothing.
    assert_eq!(get(&viewer.client, &form_url).await.0, 200);
    let (status, _, _) = post(
        &viewer.client,
        &format!("{form_url}/settings"),
        &[
            ("csrf", &viewer.csrf),
            ("title", "x"),
            ("department", &env_dept),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // Only administrators manage staff.
    assert_eq!(
        get(&other.client, &url(&server, ha, "/admin/staff"))
            .await
            .0,
        403
    );
    assert_eq!(
        get(&admin.client, &url(&server, ha, "/admin/staff"))
            .await
            .0,
        200
    );
    // An administrator's change to someone's role is in the operation log: who, whom, what.
    let conn = env.tenant_conn(&a).await;
    let viewer_id: i64 = conn
        .client
        .query_one("SELECT id FROM staff WHERE email = $1", &[&viewer.email])
        .await
        .unwrap()
        .get(0);
    let staff_url = url(&server, ha, &format!("/admin/staff/{viewer_id}"));
    let set_role = |role: &'static str| {
        let (client, csrf, dept) = (&admin.client, admin.csrf.as_str(), env_dept.as_str());
        let staff_url = staff_url.as_str();
        async move {
            let form = [("csrf", csrf), ("role", role), ("department", dept)];
            post(client, staff_url, &form).await.0
        }
    };
    assert_eq!(set_role("staff").await, 303);
    let logged = conn
        .client
        .query_one(
            "SELECT actor, detail FROM audit_log WHERE action = 'staff.update' AND target = $1",
            &[&viewer_id.to_string()],
        )
        .await
        .unwrap();
    let (actor, detail): (String, String) = (logged.get(0), logged.get(1));
    assert!(actor.contains(&admin.email), "{actor}");
    assert!(detail.contains("\"role\":\"staff\""), "{detail}");
    // A new department too.
    let (status, _, _) = post(
        &admin.client,
        &url(&server, ha, "/admin/departments"),
        &[("csrf", admin.csrf.as_str()), ("name", "防災危機管理課")],
    )
    .await;
    assert_eq!(status, 303);
    let created: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'department.create' AND target = '防災危機管理課'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 1);
    // (and back, so the checks below still see a read-only user)
    assert_eq!(set_role("viewer").await, 303);
    // A state-changing request without the CSRF token is refused.
    let (status, _, body) = post(&admin.client, &format!("{form_url}/publish"), &[]).await;
    assert_eq!(status, 403);
    assert!(body.contains("画面の有効期限が切れました"));
    // Not signed in: to the sign-in page.
    let anon = browser(&server, &[ha, hb]);
    let (status, loc, _) = get(&anon, &form_url).await;
    assert_eq!((status, loc.as_str()), (303, "/admin/login"));

    // Sign-in: password and TOTP; the same credentials mean nothing on another tenant.
    let login = |host: &str| url(&server, host, "/admin/login");
    let code = totp_code(&admin.secret, now_unix() + 30);
    let fresh = browser(&server, &[ha, hb]);
    let (status, _, body) = post(
        &fresh,
        &login(hb),
        &[
            ("email", &admin.email),
            ("password", &admin.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 401, "signed in on another tenant's host");
    assert!(body.contains("正しくありません"));
    let (status, loc, _) = post(
        &fresh,
        &login(ha),
        &[
            ("email", &admin.email),
            ("password", &admin.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/forms"));
    // The same code again (replay) is refused; so is a wrong one.
    let (status, _, _) = post(
        &browser(&server, &[ha]),
        &login(ha),
        &[
            ("email", &admin.email),
            ("password", &admin.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 401, "a TOTP code was accepted twice");
    // The session cookie of tenant A is not sent to, nor valid on, tenant B.
    assert_eq!(get(&fresh, &url(&server, hb, "/admin/forms")).await.0, 303);
    // Sign out everywhere ends every session of that person.
    let (status, _, _) = post(
        &admin.client,
        &url(&server, ha, "/admin/logout"),
        &[("csrf", &admin.csrf), ("everywhere", "yes")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(get(&fresh, &url(&server, ha, "/admin/forms")).await.0, 303);
    let signouts: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'signout' AND actor LIKE '%' || $1 || '%' AND detail LIKE '%\"everywhere\":true%'",
            &[&admin.email],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        signouts, 1,
        "sign-out everywhere is not in the operation log"
    );

    // Repeated failures lock the account, with a message, even for the right password.
    let c = browser(&server, &[ha]);
    for _ in 0..5 {
        post(
            &c,
            &login(ha),
            &[
                ("email", &other.email),
                ("password", "wrong password here"),
                ("code", ""),
            ],
        )
        .await;
    }
    let (status, _, body) = post(
        &c,
        &login(ha),
        &[
            ("email", &other.email),
            ("password", &other.password),
            ("code", ""),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("一時的にロックしています"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_plain_text_in_the_database() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    // Leave one application half-way too (a draft).
    apply(&server, host, &public, "その他").await.unwrap();
    let c = browser(&server, &[host]);
    let (_, _, page) = get(&c, &url(&server, host, &public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    post(
        &c,
        &url(&server, host, &public),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_nav", "next"),
            ("name.family", "下書太郎"),
            ("email", "draft.only@example.jp"),
        ],
    )
    .await;

    let bin = madoguchi::embedded_pg::find_bin_dir().unwrap();
    let url_admin = crate::harness::admin_url().replace("/postgres?", &format!("/{}?", t.database));
    let out = std::process::Command::new(bin.join("pg_dump"))
        .arg("--dbname")
        .arg(&url_admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("submissions") && dump.len() > 1000);
    for secret in [
        "花子",
        "カサイ",
        "hanako.kasai@example.jp",
        "古いピアノ椅子",
        "下書太郎",
        "draft.only@example.jp",
        "2031-07-19",
    ] {
        assert!(!dump.contains(secret), "{secret} in plain text in pg_dump");
    }
}

/// A 所属管理者 manages the accounts of their own department below administrator,
/// and nothing else: the list, additions, changes and new setup links; not another
/// department's accounts, not an administrator's (one of their department's
/// included), not their own, not departments; a link they were shown stops working
/// when an administrator changes the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_manager_manages_their_own_department_only() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("dm"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let manager = staff(&env, &server, &t, Role::DeptManager, Some("総務課")).await;
    let dept_admin = staff(&env, &server, &t, Role::Admin, Some("総務課")).await;
    let ours = staff(&env, &server, &t, Role::Staff, Some("総務課")).await;
    let theirs = staff(&env, &server, &t, Role::Staff, Some("税務課")).await;
    let (soumu, zeimu) = (
        dept_id(&env, &t, "総務課").await,
        dept_id(&env, &t, "税務課").await,
    );
    let conn = env.tenant_conn(&t).await;
    let dept_admin_id = staff_id(&conn.client, &dept_admin.email).await;
    let (ours_id, theirs_id, admin_id, manager_id) = (
        staff_id(&conn.client, &ours.email).await,
        staff_id(&conn.client, &theirs.email).await,
        staff_id(&conn.client, &admin.email).await,
        staff_id(&conn.client, &manager.email).await,
    );
    let role_of = |id: i64| {
        let conn = &conn;
        async move {
            let r = conn
                .client
                .query_one(
                    "SELECT role, department_id FROM staff WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, Option<i64>>(1))
        }
    };
    let m = |path: &str, form: Vec<(&'static str, String)>| {
        let (client, csrf, url) = (&manager.client, manager.csrf.clone(), u(path));
        async move {
            let mut all = vec![("csrf", csrf)];
            all.extend(form);
            let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(client, &url, &pairs).await
        }
    };

    // The list: their department's accounts below administrator, no departments.
    let (status, _, page) = get(&manager.client, &u("/admin/staff")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&ours.email) && page.contains(&manager.email));
    for hidden in [&theirs.email, &admin.email, &dept_admin.email] {
        assert!(!page.contains(hidden.as_str()), "{hidden} listed: {page}");
    }
    assert!(
        !page.contains("所属を追加") && !page.contains("value=\"admin\""),
        "{page}"
    );
    assert!(page.contains(r#"<a href="/admin/staff" aria-current="page">職員</a>"#));
    // Others without the role have no such screen.
    assert_eq!(get(&ours.client, &u("/admin/staff")).await.0, 403);

    // Additions: to their own department, below administrator.
    let new = |role: &'static str, dept: &str| {
        vec![
            ("email", format!("{}@city.example.jp", unique("n"))),
            ("display_name", "新任 職員".to_owned()),
            ("role", role.to_owned()),
            ("department", dept.to_owned()),
        ]
    };
    let (status, _, page) = m("/admin/staff", new("viewer", &soumu)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("設定用リンクを発行しました"), "{page}");
    let link = capture(r#"id="setup-link">[^<]*(/admin/setup/[^<]+)<"#, &page);
    assert_eq!(get(&browser(&server, &[host]), &u(&link)).await.0, 200);
    // An administrator makes the new account an administrator: the link the manager
    // was shown no longer opens it.
    let new_email = capture(r#"<p>([^ ]+@city\.example\.jp) さんに"#, &page);
    let new_id = staff_id(&conn.client, &new_email).await;
    let (status, _, _) = post(
        &admin.client,
        &u(&format!("/admin/staff/{new_id}")),
        &[
            ("csrf", admin.csrf.as_str()),
            ("role", "admin"),
            ("department", ""),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, page) = get(&browser(&server, &[host]), &u(&link)).await;
    assert_ne!(status, 200, "{page}");
    assert!(!page.contains("totp_secret"), "{page}");
    assert_eq!(m("/admin/staff", new("staff", &zeimu)).await.0, 403);
    assert_eq!(m("/admin/staff", new("admin", &soumu)).await.0, 403);
    assert_eq!(m("/admin/staff", new("admin", "")).await.0, 403);

    // Changes: within their department; not out of it, not up to administrator.
    let change = |role: &'static str, dept: &str| {
        vec![("role", role.to_owned()), ("department", dept.to_owned())]
    };
    let ours_url = format!("/admin/staff/{ours_id}");
    assert_eq!(m(&ours_url, change("viewer", &soumu)).await.0, 303);
    assert_eq!(role_of(ours_id).await.0, "viewer");
    assert_eq!(m(&ours_url, change("staff", &zeimu)).await.0, 403);
    assert_eq!(m(&ours_url, change("admin", &soumu)).await.0, 403);
    assert_eq!(m(&ours_url, change("admin", "")).await.0, 403);
    assert_eq!(
        role_of(ours_id).await,
        ("viewer".to_owned(), soumu.parse().ok())
    );
    // Another department's account and an administrator's are not theirs to see.
    for other in [theirs_id, admin_id, dept_admin_id] {
        let path = format!("/admin/staff/{other}");
        assert_eq!(m(&path, change("staff", &soumu)).await.0, 404);
        let reset = vec![("action", "reset".to_owned())];
        assert_eq!(m(&path, reset).await.0, 404);
    }
    assert_eq!(
        role_of(theirs_id).await,
        ("staff".to_owned(), zeimu.parse().ok())
    );
    assert_eq!(role_of(admin_id).await.0, "admin");
    assert_eq!(role_of(dept_admin_id).await.0, "admin");
    // Not their own account: an administrator changes that.
    let (status, _, page) = m(
        &format!("/admin/staff/{manager_id}"),
        change("dept_manager", &soumu),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("自分自身の権限・所属・状態は変更できません"),
        "{page}"
    );
    // A new setup link for one of theirs.
    let (status, _, page) = m(&ours_url, vec![("action", "reset".to_owned())]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/admin/setup/"), "{page}");
    // Disabling one of theirs ends that member's sessions.
    assert_eq!(get(&ours.client, &u("/admin/forms")).await.0, 200);
    let mut off = change("viewer", &soumu);
    off.push(("disabled", "yes".to_owned()));
    assert_eq!(m(&ours_url, off).await.0, 303);
    let (status, loc, _) = get(&ours.client, &u("/admin/forms")).await;
    assert_eq!((status, loc.as_str()), (303, "/admin/login"));
    // No departments.
    let dept = vec![("name", "新設課".to_owned())];
    assert_eq!(m("/admin/departments", dept).await.0, 403);

    // The operation log says who did each.
    let by_manager: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE actor LIKE '%' || $1
               AND action IN ('staff.create', 'staff.update', 'staff.setup_link')",
            &[&manager.email],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by_manager, 4);

    // Demoted, the manager no longer holds a working link they were shown; links an
    // administrator was shown for the same department stay.
    let (_, _, page) = m("/admin/staff", new("staff", &soumu)).await;
    let shown = capture(r#"id="setup-link">[^<]*(/admin/setup/[^<]+)<"#, &page);
    let a = |path: &str, form: &[(&str, &str)]| {
        let (client, url) = (&admin.client, u(path));
        let mut all = vec![("csrf", admin.csrf.as_str())];
        all.extend_from_slice(form);
        let all: Vec<(String, String)> = all
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let pairs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post(client, &url, &pairs).await
        }
    };
    let (_, _, page) = a(
        "/admin/staff",
        &[
            ("email", &format!("{}@city.example.jp", unique("n"))),
            ("display_name", "新任 職員"),
            ("role", "staff"),
            ("department", &soumu),
        ],
    )
    .await;
    let admins_link = capture(r#"id="setup-link">[^<]*(/admin/setup/[^<]+)<"#, &page);
    let opens = |link: String| {
        let (server, u) = (&server, u(&link));
        async move { get(&browser(server, &[host]), &u).await.0 }
    };
    assert_eq!(opens(shown.clone()).await, 200);
    let (status, _, _) = a(
        &format!("/admin/staff/{manager_id}"),
        &[("role", "staff"), ("department", &soumu)],
    )
    .await;
    assert_eq!(status, 303);
    assert_ne!(
        opens(shown).await,
        200,
        "a demoted manager's link still opens"
    );
    assert_eq!(opens(admins_link).await, 200);
    server.shutdown().await;
}

/// A staff member who signed in with a password alone and is then given a role that
/// needs TOTP loses that session; two sign-ins racing with one TOTP code get one
/// session; the operation log's filters and download stand odd input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_holds_under_promotion_races_and_odd_input() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let login = url(&server, host, "/admin/login");

    // A new municipality asks every member of staff for a code: a 職員's setup
    // without one is refused.
    let email = format!("{}@city.example.jp", unique("s"));
    let token = madoguchi::control::tenant_admin::add_staff(
        &env.platform,
        &t,
        &email,
        "テスト職員",
        Role::Staff,
        Some("環境政策課"),
    )
    .await
    .unwrap();
    let plain = browser(&server, &[host]);
    let password = "correct horse battery staple";
    let setup = url(&server, host, &format!("/admin/setup/{token}"));
    let (_, _, page) = get(&plain, &setup).await;
    assert!(page.contains("二要素認証（必須）"), "{page}");
    let (status, _, page) = post(
        &plain,
        &setup,
        &[
            ("password", password),
            ("password2", password),
            ("code", ""),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("確認コードが正しくありません"), "{page}");
    // Only an administrator changes the rule.
    let access = url(&server, host, "/admin/access");
    let rule = url(&server, host, "/admin/access/totp");
    let clerk = staff(&env, &server, &t, Role::DeptManager, Some("環境政策課")).await;
    let (status, _, _) = post(
        &clerk.client,
        &rule,
        &[("csrf", clerk.csrf.as_str()), ("staff_totp", "managers")],
    )
    .await;
    assert_eq!(status, 403);
    let set_rule = |to: &'static str| {
        let (c, csrf, rule) = (admin.client.clone(), admin.csrf.clone(), rule.clone());
        async move {
            post(&c, &rule, &[("csrf", csrf.as_str()), ("staff_totp", to)])
                .await
                .0
        }
    };
    assert_eq!(set_rule("managers").await, 303);
    let (_, _, page) = get(&admin.client, &access).await;
    assert!(
        page.contains(r#"id="totp-managers" name="staff_totp" value="managers" checked"#),
        "{page}"
    );

    // Then a 職員 may set up without TOTP, and is signed in by it.
    let (status, loc, body) = post(
        &plain,
        &url(&server, host, &format!("/admin/setup/{token}")),
        &[
            ("password", password),
            ("password2", password),
            ("code", ""),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/forms"), "{body}");
    assert_eq!(
        get(&plain, &url(&server, host, "/admin/forms")).await.0,
        200
    );
    // The administrator sees who has no code; required of all, that session ends
    // and a password alone no longer signs in.
    let (_, _, page) = get(&admin.client, &access).await;
    assert!(
        page.contains("二要素認証を設定していない職員が1人います"),
        "{page}"
    );
    assert_eq!(set_rule("all").await, 303);
    let (status, loc, _) = get(&plain, &url(&server, host, "/admin/forms")).await;
    assert_eq!((status, loc.as_str()), (303, "/admin/login"));
    let sessions: i64 = env
        .tenant_conn(&t)
        .await
        .client
        .query_one(
            "SELECT count(*) FROM staff_sessions s JOIN staff st ON st.id = s.staff_id WHERE st.email = $1",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sessions, 0,
        "the password-only session was ended, not kept aside"
    );
    let by_password = [
        ("email", email.as_str()),
        ("password", password),
        ("code", ""),
    ];
    let (status, _, page) = post(&plain, &login, &by_password).await;
    assert_eq!(status, 401, "{page}");
    assert!(
        page.contains("すべての職員に二要素認証（確認コード）が必要です"),
        "{page}"
    );
    let logged = crate::forms::log_rows(
        &env.tenant_conn(&t).await.client,
        "SELECT actor, action, detail FROM audit_log WHERE action = 'settings.totp' ORDER BY seq",
    )
    .await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        logged[1].2.contains(r#""staff_without_totp":1"#),
        "{logged:?}"
    );
    // Back to managers only: the password signs in again.
    assert_eq!(set_rule("managers").await, 303);
    let (status, _, page) = post(&plain, &login, &by_password).await;
    assert_eq!(status, 303, "{page}");
    // Made 管理者, that password-only session ends at once.
    let conn = env.tenant_conn(&t).await;
    let id: i64 = conn
        .client
        .query_one("SELECT id FROM staff WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0);
    let (status, _, _) = post(
        &admin.client,
        &url(&server, host, &format!("/admin/staff/{id}")),
        &[("csrf", admin.csrf.as_str()), ("role", "admin")],
    )
    .await;
    assert_eq!(status, 303);
    let (status, loc, _) = get(&plain, &url(&server, host, "/admin/staff")).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, "/admin/login"),
        "a promoted password-only session kept its rights"
    );

    // A new setup link (a forgotten password) replaces any earlier unused one.
    let earlier = madoguchi::tenant::staff::pages::new_setup_token(&conn.client, id, None)
        .await
        .unwrap();
    let newer = madoguchi::tenant::staff::pages::new_setup_token(&conn.client, id, None)
        .await
        .unwrap();
    let setup = |t: &str| url(&server, host, &format!("/admin/setup/{t}"));
    assert_ne!(
        get(&plain, &setup(&earlier)).await.0,
        200,
        "an older link still works"
    );
    assert_eq!(get(&plain, &setup(&newer)).await.0, 200);

    // One code, two sign-ins at once: exactly one gets a session. The staff row is
    // held locked until both have checked the password and code and wait to record
    // the code's use, so they race for certain.
    let code = totp_code(&admin.secret, now_unix() + 30);
    let mut holder = crate::harness::admin_client(&t.database).await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM staff WHERE email = $1 FOR UPDATE",
        &[&admin.email],
    )
    .await
    .unwrap();
    let watcher = crate::harness::admin_client(&t.database).await;
    let release = crate::harness::commit_when_two_wait(
        &watcher,
        hold,
        "UPDATE staff SET failed_attempts = 0",
    );
    let attempt = || {
        let c = browser(&server, &[host]);
        let (login, email, password, code) = (
            login.clone(),
            admin.email.clone(),
            admin.password.clone(),
            code.clone(),
        );
        async move {
            let form = [
                ("email", email.as_str()),
                ("password", password.as_str()),
                ("code", code.as_str()),
            ];
            post(&c, &login, &form).await.0
        }
    };
    let (a, b, raced) = tokio::join!(attempt(), attempt(), release);
    assert!(
        raced,
        "the two sign-ins did not both reach the code's record"
    );
    let mut got = [a, b];
    got.sort_unstable();
    assert_eq!(got, [303, 401], "one TOTP code signed in twice");

    // An e-mail address that a spreadsheet would run as a formula, typed at the
    // sign-in page, is in the operation log's download as text.
    let (status, _, _) = post(
        &browser(&server, &[host]),
        &login,
        &[("email", "=1+1@x"), ("password", "x"), ("code", "")],
    )
    .await;
    assert_eq!(status, 401);
    let r = admin
        .client
        .get(url(&server, host, "/admin/audit.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[3..]);
    let targets: Vec<String> = reader.records().map(|r| r.unwrap()[4].to_owned()).collect();
    assert!(targets.contains(&"'=1+1@x".to_owned()), "{targets:?}");
    assert!(!targets.contains(&"=1+1@x".to_owned()));
    // The download is in the log once it has ended, whole.
    let mut logged = String::new();
    for _ in 0..50 {
        if let Some(r) = conn
            .client
            .query_opt(
                "SELECT detail FROM audit_log WHERE action = 'audit.export' ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap()
        {
            logged = r.get(0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged.contains("\"complete\":true"), "{logged}");
    assert!(
        logged.contains(&format!("\"rows\":{}", targets.len())),
        "{logged}"
    );
    // Sessions that have ended are deleted by the daily housekeeping; live ones stay.
    conn.client
        .execute(
            "UPDATE staff_sessions SET last_seen_at = now() - interval '31 minutes' WHERE staff_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let live_before: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM staff_sessions WHERE staff_id <> $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(live_before > 0);
    let deleted = madoguchi::tenant::staff::purge_expired_sessions(&conn.client)
        .await
        .unwrap();
    assert!(deleted >= 1);
    let (ended, live): (i64, i64) = {
        let r = conn
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE staff_id = $1), count(*) FILTER (WHERE staff_id <> $1) FROM staff_sessions",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((ended, live), (0, live_before));
    // A date filter out of range is ignored, not a dropped connection.
    for q in ["from=-9999-01-01", "to=-9999-12-31", "from=0000-01-01"] {
        let (status, _, page) = get(
            &admin.client,
            &url(&server, host, &format!("/admin/audit?{q}")),
        )
        .await;
        assert_eq!(status, 200, "{q}: {page}");
    }
    server.shutdown().await;
}

/// Drafts: a second application from the same browser is a new one; a double tap on
/// the first 次へ and a draft expired under an open page are saved, not a 500; each
/// step moves the expiry; expired drafts are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_start_afresh_survive_double_taps_and_expire() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let conn = env.tenant_conn(&t).await;
    let count = |sql: &'static str| {
        let client = &conn.client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };

    // The same browser applies twice (for two households, or two people at one PC).
    let c = browser(&server, &[host]);
    let first = apply_with(&c, &server, host, &public, "ソファ")
        .await
        .unwrap();
    let second = apply_with(&c, &server, host, &public, "その他")
        .await
        .unwrap();
    assert_ne!(
        first, second,
        "the second application showed the first's receipt"
    );
    assert_eq!(count("SELECT count(*) FROM submissions").await, 2);

    // A double tap on the first 次へ: both taps land on the next page.
    let c = browser(&server, &[host]);
    let (_, _, page) = get(&c, &url(&server, host, &public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let first_page = [
        ("_token", token.as_str()),
        ("_page", "0"),
        ("_nav", "next"),
        ("name.family", "山田"),
        ("name.given", "太郎"),
        ("name.family_kana", "やまだ"),
        ("name.given_kana", "たろう"),
        ("email", "taro.yamada@example.jp"),
        ("kind", "ソファ"),
    ];
    let form_url = url(&server, host, &public);
    let (a, b) = tokio::join!(
        post(&c, &form_url, &first_page),
        post(&c, &form_url, &first_page)
    );
    assert_eq!((a.0, b.0), (303, 303), "{} / {}", a.2, b.2);
    let open = "SELECT count(*) FROM citizen_drafts WHERE submission_id IS NULL";
    assert_eq!(count(open).await, 1);

    // The draft expires under the open page: the next step saves it again, for
    // another full period from now.
    conn.client
        .execute(
            "UPDATE citizen_drafts SET expires_at = now() - interval '1 second' WHERE submission_id IS NULL",
            &[],
        )
        .await
        .unwrap();
    let (status, loc, body) = post(&c, &form_url, &first_page).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    assert_eq!(
        count("SELECT count(*) FROM citizen_drafts WHERE submission_id IS NULL AND expires_at > now() + interval '23 hours'").await,
        1
    );
    // What was typed is there on the next visit.
    let (_, _, page) = get(&c, &format!("{form_url}?page=0")).await;
    assert!(page.contains("taro.yamada@example.jp"), "{page}");

    // A page sent empty: every link of the error summary leads to an input on the
    // page (a radio group's to its first option).
    let c = browser(&server, &[host]);
    let (_, _, page) = get(&c, &form_url).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let (status, _, page) = post(
        &c,
        &form_url,
        &[("_token", token.as_str()), ("_page", "0"), ("_nav", "next")],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    let summary = &page[page.find("error-summary").unwrap()..];
    let summary = &summary[..summary.find("</ul>").unwrap()];
    let targets: Vec<String> = Regex::new(r##"href="#([^"]+)""##)
        .unwrap()
        .captures_iter(summary)
        .map(|m| m[1].to_owned())
        .collect();
    assert!(targets.len() >= 3, "{summary}");
    for id in &targets {
        assert!(
            page.contains(&format!("id=\"{id}\"")),
            "#{id} leads nowhere"
        );
    }

    // Expired drafts, sent or not, are deleted by the daily housekeeping.
    conn.client
        .execute(
            "UPDATE citizen_drafts SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let deleted = madoguchi::tenant::forms::citizen::purge_expired_drafts(&conn.client)
        .await
        .unwrap();
    assert_eq!(
        deleted, 4,
        "two sent, the double-tapped one, the empty page's"
    );
    assert_eq!(count("SELECT count(*) FROM citizen_drafts").await, 0);
    assert_eq!(count("SELECT count(*) FROM submissions").await, 2);

    // Two tabs opened before the first 次へ: the second replaced the cookie's token,
    // and the first tab's page (an older token) was refused, its page lost. Sent by
    // the browser from this site (its Origin), it is now saved under the cookie's
    // token; without an Origin it is still refused.
    let token_of = |page: &str| capture(r#"name="_token" value="([^"]+)""#, page);
    let origin = format!("http://{host}:{}", server.bound.public.port());
    let c = browser(&server, &[host]);
    let (_, _, one) = get(&c, &form_url).await;
    let (_, _, two) = get(&c, &form_url).await;
    let token = token_of(&one);
    assert_ne!(token, token_of(&two));
    let mut sent = first_page.to_vec();
    sent[0] = ("_token", token.as_str());
    let encoded = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let (status, _, _) = post(&c, &form_url, &sent).await;
    assert_eq!(status, 403, "an older token without an Origin");
    let r = c
        .post(&form_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &origin)
        .body(encoded(&sent))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.ends_with("?page=1"), "{loc}");
    let (_, _, page) = get(&c, &format!("{form_url}?page=0")).await;
    assert!(page.contains("taro.yamada@example.jp"), "{page}");
    assert_eq!(
        token_of(&page),
        token_of(&two),
        "saved under the cookie's token"
    );

    // A token planted in the browser by someone else (the city's site setting a
    // cookie for its sub-domains, say) is not taken up: the form gives its own, so
    // what the person types is never saved under a token another knows.
    let planted = "PlantedTokenKnownToSomeoneElse0123456789abc";
    let r = reqwest::Client::builder()
        .resolve(host, server.bound.public)
        .build()
        .unwrap()
        .get(&form_url)
        .header(
            "cookie",
            format!("md_f_{}={planted}", public.trim_start_matches("/f/")),
        )
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let page = r.text().await.unwrap();
    assert!(!set.contains(planted) && !page.contains(planted), "{set}");

    // The cookie gone (it lasts as long as the saved draft, 24 hours) under a page
    // left open, as phone tabs are: a page sent from this site keeps its answers under
    // a new token, and the person is told why to go through the form again. From
    // another site, or without saying where from: refused as before.
    let send = |origin: Option<String>| {
        let c = browser(&server, &[host]);
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&sent)
            .finish();
        let form_url = form_url.clone();
        async move {
            let mut r = c
                .post(&form_url)
                .header("content-type", "application/x-www-form-urlencoded");
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            let r = r.body(body).send().await.unwrap();
            let loc = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (c, r.status().as_u16(), loc)
        }
    };
    for origin in [None, Some("http://evil.example".to_owned())] {
        let (_, status, _) = send(origin.clone()).await;
        assert_eq!(status, 400, "{origin:?}");
    }
    let (c, status, loc) = send(Some(format!(
        "http://{host}:{}",
        server.bound.public.port()
    )))
    .await;
    assert_eq!(status, 303);
    assert!(loc.ends_with("?page=0&expired=1"), "{loc}");
    // A browser that keeps no cookie at all comes back without one: told so, not
    // sent round again.
    let no_cookies = reqwest::Client::builder()
        .resolve(host, server.bound.public)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_cookies
        .get(url(&server, host, &loc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Cookieが保存されていません"));
    // A correction's page sent so: not taken as a new application.
    let mut correcting = sent.clone();
    correcting.push(("_correction", "1"));
    let r = no_cookies
        .post(&form_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "origin",
            format!("http://{host}:{}", server.bound.public.port()),
        )
        .body(encoded(&correcting))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("状況照会"));
    let (status, _, page) = get(&c, &url(&server, host, &loc)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("保存期間") && page.contains("taro.yamada@example.jp"),
        "{page}"
    );
    let renewed = token_of(&page);
    let mut again = sent.clone();
    again[0] = ("_token", renewed.as_str());
    let (status, loc, body) = post(&c, &form_url, &again).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    server.shutdown().await;
}

/// Publishing checks the draft as it locks it: an edit saved after the builder's
/// own check (an empty title here) is not published unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_checks_the_draft_it_publishes() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("p"), "千代田区", "131016").await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "イベント申込",
      "pages": [ { "id": "p1", "fields": [ { "id": "memo", "type": "text", "label": "メモ" } ] } ] }"#;
    madoguchi::control::tenant_admin::import_form(&env.platform, &t, form, "総務課", false)
        .await
        .unwrap();
    let mut conn = env.tenant_conn(&t).await;
    let id: i64 = conn
        .client
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    conn.client
        .execute(
            "UPDATE forms SET draft = jsonb_set(draft, '{title}', '\"\"') WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let err = madoguchi::tenant::forms::store::publish(
        &mut conn.client,
        id,
        &madoguchi::tenant::audit::Actor::Operator,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, madoguchi::error::AppError::BadRequest(_)),
        "{err:?}"
    );
    let versions: i64 = conn
        .client
        .query_one("SELECT count(*) FROM form_versions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 0);
}

/// The builder keeps what staff did not touch and never edits the wrong thing:
/// saving a page's settings keeps its show/hide rule; a new field never takes the id
/// of one deleted after a version was published (answers are exported and totalled
/// by id); a field save refused after its id was changed still saves that field, not
/// the one whose id was typed; and a page older than the draft (someone else saved
/// meanwhile) is refused instead of undoing their change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_keeps_rules_ids_and_other_peoples_changes() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("bk"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (id, _) = build_form(&admin, &server, host, &dept, "").await;
    let u = |p: &str| url(&server, host, &format!("/admin/forms/{id}{p}"));
    let conn = env.tenant_conn(&t).await;
    let draft = || async {
        let v: serde_json::Value = conn
            .client
            .query_one(
                "SELECT draft FROM forms WHERE id = $1",
                &[&id.parse::<i64>().unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        v
    };
    let rev = |page: &str| capture(r#"name="rev" value="(-?\d+)""#, page);

    // A rule on page 2, then its settings saved as the page shows them, heading changed.
    let (status, _, body) = post(
        &admin.client,
        &u("/pages"),
        &[
            ("csrf", &admin.csrf),
            ("action", "update"),
            ("page", "1"),
            ("title", "希望日"),
            ("cond_field", "kind"),
            ("cond_op", "in"),
            ("cond_values", "ソファ\r\nその他"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&admin.client, &u("")).await;
    let settings = capture(
        r#"(?s)(<form method="post" action="/admin/forms/\d+/pages"><input type="hidden" name="rev"[^>]*>\s*<input type="hidden" name="csrf" value="[^"]*"><input type="hidden" name="page" value="1">.*?</form>)"#,
        &page,
    );
    let cond_field = capture(r#"<option value="([^"]+)" selected>"#, &settings);
    let cond_op = capture(
        r#"name="cond_op">.*?<option value="([a-z_]+)" selected>"#,
        &settings,
    );
    let cond_values = capture(
        r#"(?s)name="cond_values" rows="2">(.*?)</textarea>"#,
        &settings,
    );
    let (status, _, body) = post(
        &admin.client,
        &u("/pages"),
        &[
            ("csrf", &admin.csrf),
            ("rev", &rev(&settings)),
            ("action", "update"),
            ("page", "1"),
            ("title", "収集の希望日"),
            ("cond_field", &cond_field),
            ("cond_op", &cond_op),
            ("cond_values", &cond_values),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let d = draft().await;
    assert_eq!(d["pages"][1]["title"], "収集の希望日");
    assert_eq!(
        d["pages"][1]["show_if"],
        serde_json::json!({ "field": "kind", "op": "in", "values": ["ソファ", "その他"] })
    );

    // q1 published, then deleted: the next new field is not q1 again.
    let add = |label: &'static str| {
        let (c, csrf, target) = (admin.client.clone(), admin.csrf.clone(), u("/fields"));
        async move {
            let (status, loc, body) = post(
                &c,
                &target,
                &[
                    ("csrf", &csrf),
                    ("page", "0"),
                    ("type", "text"),
                    ("label", label),
                ],
            )
            .await;
            assert_eq!(status, 303, "{body}");
            loc.rsplit('/').next().unwrap().to_owned()
        }
    };
    assert_eq!(add("備考").await, "q1");
    let (_, _, page) = post(&admin.client, &u("/publish"), &[("csrf", &admin.csrf)]).await;
    assert!(page.contains("第2版を公開しました"), "{page}");
    post(
        &admin.client,
        &u("/fields/q1/move"),
        &[("csrf", &admin.csrf), ("action", "delete")],
    )
    .await;
    let phone = add("電話番号").await;
    assert_ne!(
        phone, "q1",
        "a new field took the id of one answered in version 2"
    );

    // Its id changed to one already taken: refused, and the page still saves this field.
    let (status, _, page) = post(
        &admin.client,
        &u(&format!("/fields/{phone}")),
        &[
            ("csrf", &admin.csrf),
            ("label", "電話番号"),
            ("id", "email"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains(&format!(r#"action="/admin/forms/{id}/fields/{phone}""#)),
        "the corrected save would go to another field: {page}"
    );
    let (status, _, body) = post(
        &admin.client,
        &u(&format!("/fields/{phone}")),
        &[
            ("csrf", &admin.csrf),
            ("rev", &rev(&page)),
            ("label", "電話番号"),
            ("id", "phone"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let d = draft().await;
    let ids: Vec<&str> = d["pages"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["name", "email", "kind", "other", "phone"]);
    assert_eq!(d["pages"][0]["fields"][1]["label"], "メールアドレス");
    // An id a published version gave to another kind of question (here by a rename;
    // an import could too) is refused when publishing: the answers would mix.
    let (status, loc, _) = post(
        &admin.client,
        &u("/fields"),
        &[
            ("csrf", &admin.csrf),
            ("page", "0"),
            ("type", "choice"),
            ("label", "区分"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let choice = loc.rsplit('/').next().unwrap().to_owned();
    let (status, _, body) = post(
        &admin.client,
        &u(&format!("/fields/{choice}")),
        &[
            ("csrf", &admin.csrf),
            ("label", "区分"),
            ("id", "q1"),
            ("options", "個人\r\n法人"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = post(&admin.client, &u("/publish"), &[("csrf", &admin.csrf)]).await;
    assert!(page.contains("第2版で別の種類の項目（「備考」）"), "{page}");
    post(
        &admin.client,
        &u("/fields/q1/move"),
        &[("csrf", &admin.csrf), ("action", "delete")],
    )
    .await;

    // Two people on the builder: the second save, from the older page, is refused.
    let (_, _, page) = get(&admin.client, &u("")).await;
    let seen = rev(&page);
    let settings = |title: &'static str, rev: String| {
        let (c, csrf, target, dept) = (
            admin.client.clone(),
            admin.csrf.clone(),
            u("/settings"),
            dept.clone(),
        );
        async move {
            post(
                &c,
                &target,
                &[
                    ("csrf", &csrf),
                    ("rev", &rev),
                    ("title", title),
                    ("department", &dept),
                    ("completion_message", "ありがとうございました"),
                ],
            )
            .await
        }
    };
    let (status, _, body) = settings("粗大ごみ収集申込（令和8年度）", seen.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = settings("粗大ごみ申込", seen.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("他の職員が変更しました"), "{body}");
    assert_eq!(draft().await["title"], "粗大ごみ収集申込（令和8年度）");
    let (status, _, body) = post(
        &admin.client,
        &u("/publish"),
        &[("csrf", &admin.csrf), ("rev", &seen)],
    )
    .await;
    assert_eq!(
        status, 409,
        "published a draft the page did not show: {body}"
    );
    server.shutdown().await;
}

/// A new version published while a citizen is part-way through: the page they send
/// (numbered in the version they saw) is not taken for another page of the new one.
/// What they typed is kept, and they go through the new version from its start, told
/// why. Before, page 2 of version 1 was read as page 2 of version 2 (here the old
/// first page): their name was dropped and an error shown on a page they never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_mid_way_loses_nothing_typed() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("nv"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (id, public) = build_form(&admin, &server, host, &dept, "").await;
    let u = |p: &str| url(&server, host, p);
    let c = browser(&server, &[host]);
    let (_, _, page) = get(&c, &u(&public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    assert!(page.contains(r#"name="_version" value="1""#), "{page}");
    let (status, loc, body) = post(
        &c,
        &u(&public),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_version", "1"),
            ("_nav", "next"),
            ("name.family", "葛西"),
            ("name.given", "花子"),
            ("name.family_kana", "カサイ"),
            ("name.given_kana", "ハナコ"),
            ("email", "hanako.kasai@example.jp"),
            ("kind", "ソファ"),
        ],
    )
    .await;
    assert_eq!((status, loc.ends_with("?page=1")), (303, true), "{body}");
    // Version 2: a consent page first.
    let conn = env.tenant_conn(&t).await;
    conn.client
        .execute(
            r#"UPDATE forms SET draft = jsonb_set(draft, '{pages}', jsonb_build_array(jsonb_build_object('id', 'p0', 'title', '同意',
                 'fields', jsonb_build_array(jsonb_build_object('id', 'agree', 'type', 'consent', 'label', '利用規約', 'required', true, 'statement', '規約に同意します')))) || (draft->'pages'))
               WHERE id = $1"#,
            &[&id.parse::<i64>().unwrap()],
        )
        .await
        .unwrap();
    let (_, _, page) = post(
        &admin.client,
        &u(&format!("/admin/forms/{id}/publish")),
        &[("csrf", &admin.csrf)],
    )
    .await;
    assert!(page.contains("第2版を公開しました"), "{page}");

    // The citizen sends page 2 as they saw it (the collection date).
    let (status, loc, body) = post(
        &c,
        &u(&public),
        &[
            ("_token", &token),
            ("_page", "1"),
            ("_version", "1"),
            ("_nav", "next"),
            ("date", "2031-07-19"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=0&updated=1"), "{loc}");
    let (_, _, page) = get(&c, &u(&loc)).await;
    assert!(page.contains("入力の途中で内容が更新されました"), "{page}");
    assert!(page.contains(r#"name="_version" value="2""#), "{page}");
    // Nothing typed was lost: through the new first page, the rest is filled in.
    let (status, loc, body) = post(
        &c,
        &u(&public),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_version", "2"),
            ("_nav", "next"),
            ("agree", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&c, &u(&loc)).await;
    assert!(
        page.contains(r#"value="葛西""#) && page.contains(r#"value="花子""#),
        "{page}"
    );
    let (status, _, body) = post(
        &c,
        &u(&public),
        &[
            ("_token", &token),
            ("_page", "1"),
            ("_version", "2"),
            ("_nav", "next"),
            ("name.family", "葛西"),
            ("name.given", "花子"),
            ("name.family_kana", "カサイ"),
            ("name.given_kana", "ハナコ"),
            ("email", "hanako.kasai@example.jp"),
            ("kind", "ソファ"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&c, &u(&format!("{public}?page=2"))).await;
    assert!(
        page.contains(r#"value="2031-07-19""#),
        "the date sent with the old page was lost: {page}"
    );
    server.shutdown().await;
}

/// Every text of a definition has a limit the builder shows, the whole draft stays
/// within what an import accepts, and a definition exported from the builder can be
/// imported again through it (its Japanese text, url-encoded, is up to 9 bytes a
/// character: it was refused as too large although within the 512 KB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_have_limits_and_round_trip_through_the_builder() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("lim"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (id, _) = build_form(&admin, &server, host, &dept, "").await;
    let u = |p: &str| url(&server, host, &format!("/admin/forms/{id}{p}"));
    let long_title = "見".repeat(300);
    let (status, _, body) = post(
        &admin.client,
        &u("/pages"),
        &[
            ("csrf", &admin.csrf),
            ("action", "update"),
            ("page", "1"),
            ("title", &long_title),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&admin.client, &u("")).await;
    assert!(page.contains("ページの見出しは200文字までです"), "{page}");
    let (_, _, page) = post(&admin.client, &u("/publish"), &[("csrf", &admin.csrf)]).await;
    assert!(page.contains("公開できません"), "{page}");
    // Beyond 512 KB a save is refused (each save within the body limit, the draft
    // growing field by field), and the draft is kept as it was.
    let title = "説".repeat(28_000);
    let mut refused = None;
    for n in 0..10 {
        let (status, _, body) = post(
            &admin.client,
            &u("/pages"),
            &[("csrf", &admin.csrf), ("action", "add"), ("title", &title)],
        )
        .await;
        if status != 303 {
            refused = Some((n, status, body));
            break;
        }
    }
    let (n, status, body) = refused.expect("a draft over 512 KB was saved");
    assert!(n >= 5, "refused after {n} saves");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("大きすぎるため保存していません"), "{body}");
    let conn = env.tenant_conn(&t).await;
    let form_id = id.parse::<i64>().unwrap();
    let size = || async {
        let v: serde_json::Value = conn
            .client
            .query_one("SELECT draft FROM forms WHERE id = $1", &[&form_id])
            .await
            .unwrap()
            .get(0);
        serde_json::to_string(&v).unwrap().len()
    };
    assert!(size().await <= 512 * 1024);
    // A draft already over it (stored before the limit) can still be made smaller a
    // step at a time, though not larger.
    conn.client
        .execute(
            "UPDATE forms SET draft = jsonb_set(draft, '{description}', to_jsonb(repeat('説', 100000))) WHERE id = $1",
            &[&form_id],
        )
        .await
        .unwrap();
    let over = size().await;
    assert!(over > 512 * 1024);
    let (status, _, body) = post(
        &admin.client,
        &u("/pages"),
        &[("csrf", &admin.csrf), ("action", "delete"), ("page", "2")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert!(size().await < over);
    // A valid form with three 10,000-character paragraphs, imported through the builder.
    let paragraph = "説".repeat(10_000);
    let json = serde_json::json!({
        "format": "madoguchi.form/1", "title": "長い説明のある申請",
        "pages": [ { "id": "p1", "title": "", "fields": [
            { "id": "a", "type": "paragraph", "label": "", "text": paragraph },
            { "id": "b", "type": "paragraph", "label": "", "text": paragraph },
            { "id": "c", "type": "paragraph", "label": "", "text": paragraph },
            { "id": "name", "type": "text", "label": "氏名", "required": true }
        ] } ]
    })
    .to_string();
    let (status, _, page) = post(
        &admin.client,
        &u("/import"),
        &[("csrf", &admin.csrf), ("json", &json)],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("フォーム定義を読み込みました"), "{page}");
    server.shutdown().await;
}

/// Staff pages are never kept by the browser (a shared PC's Back button after sign
/// out); sign-ins are logged with where they came from, and what an unknown address
/// typed is kept no longer than an address; an account change naming no such account
/// or department is refused as such (not a 500); and two administrators demoting each
/// other at the same moment leave the city one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_accounts_hold_under_odd_requests() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("acc"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let a = staff(&env, &server, &t, Role::Admin, None).await;
    let b = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let u = |p: &str| url(&server, host, p);
    let token = madoguchi::control::tenant_admin::add_staff(
        &env.platform,
        &t,
        &format!("{}@city.example.jp", unique("n")),
        "新任職員",
        Role::Staff,
        Some("環境政策課"),
    )
    .await
    .unwrap();
    for (client, path) in [
        (&a.client, "/admin/forms".to_owned()),
        (&a.client, "/admin/staff".to_owned()),
        (&a.client, "/admin/audit".to_owned()),
        (&browser(&server, &[host]), format!("/admin/setup/{token}")),
    ] {
        let r = client.get(u(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cache = r
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");
    }

    let code = totp_code(&a.secret, now_unix() + 30);
    let (status, _, body) = post(
        &browser(&server, &[host]),
        &u("/admin/login"),
        &[
            ("email", &a.email),
            ("password", &a.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let conn = env.tenant_conn(&t).await;
    let detail: String = conn
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'signin.success' AND target = $1",
            &[&a.email],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        detail.contains("\"ip\":\"127.0.0.1\"") && detail.contains("\"zone\":\"internet\""),
        "{detail}"
    );
    let typed = format!("{}@example.jp", "x".repeat(2000));
    post(
        &browser(&server, &[host]),
        &u("/admin/login"),
        &[("email", &typed), ("password", "x")],
    )
    .await;
    let longest: i32 = conn
        .client
        .query_one(
            "SELECT max(length(target)) FROM audit_log WHERE action = 'signin.failure'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(longest <= 254, "{longest}");

    let (status, _, _) = post(
        &a.client,
        &u("/admin/staff/999999"),
        &[("csrf", &a.csrf), ("action", "reset")],
    )
    .await;
    assert_eq!(status, 404);
    let (a_id, b_id) = (
        staff_id(&conn.client, &a.email).await,
        staff_id(&conn.client, &b.email).await,
    );
    let (status, _, page) = post(
        &a.client,
        &u(&format!("/admin/staff/{b_id}")),
        &[
            ("csrf", &a.csrf),
            ("role", "staff"),
            ("department", "999999"),
        ],
    )
    .await;
    assert!(
        status < 500 && page.contains("所属を選択してください"),
        "{status} {page}"
    );

    // Each demotes the other at once: one of them stays an administrator.
    let demote = |s: &Staff, other: i64| {
        let (c, csrf, target, dept) = (
            s.client.clone(),
            s.csrf.clone(),
            u(&format!("/admin/staff/{other}")),
            dept.clone(),
        );
        async move {
            post(
                &c,
                &target,
                &[("csrf", &csrf), ("role", "staff"), ("department", &dept)],
            )
            .await
        }
    };
    let (first, second) = tokio::join!(demote(&a, b_id), demote(&b, a_id));
    let admins: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM staff WHERE role = 'admin' AND NOT disabled",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 1, "{} / {}", first.0, second.0);
    server.shutdown().await;
}

/// Every `aria-describedby` of a page names an element the page has.
fn descriptions_lead_somewhere(page: &str) {
    let refs = Regex::new(r#"aria-describedby="([^"]+)""#).unwrap();
    let mut n = 0;
    for m in refs.captures_iter(page) {
        for id in m[1].split_whitespace() {
            n += 1;
            assert!(
                page.contains(&format!("id=\"{id}\"")),
                "aria-describedby names #{id}, which the page does not have"
            );
        }
    }
    assert!(n > 0, "no description at all");
}

/// What a screen reader and a phone are told about each field: errors, help, limits,
/// units and consent statements tied to their inputs (radio groups and a name's or
/// an address's parts included), a date's range for the picker; the confirmation
/// page's 変更 links land on the input; the 受付 page offers the status lookup only
/// where it can work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizen_pages_tie_every_message_to_its_input() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("aria"), "千代田区", "131016").await;
    let json = r#"{ "format": "madoguchi.form/1", "title": "説明確認", "pages": [
        { "id": "p1", "fields": [
          { "id": "nickname", "type": "text", "label": "呼び名", "help": "ひらがなで", "max_length": 20, "required": true },
          { "id": "count", "type": "number", "label": "人数", "unit": "人", "integer": true, "required": true },
          { "id": "day", "type": "date", "label": "希望日", "min": "2026-04-01", "max": "2027-03-31", "required": true },
          { "id": "kind", "type": "choice", "label": "種類", "options": ["大", "小"], "required": true },
          { "id": "extras", "type": "multi_choice", "label": "追加", "options": ["甲", "乙"], "help": "いくつでも" },
          { "id": "name", "type": "name", "label": "氏名", "required": true },
          { "id": "agree", "type": "consent", "label": "同意します", "statement": "個人情報の取扱いに同意してください。", "help": "必ずお読みください", "required": true }
        ] },
        { "id": "p2", "fields": [
          { "id": "home", "type": "address", "label": "住所", "required": true },
          { "id": "mail", "type": "email", "label": "メール", "required": true }
        ] } ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, json, "総務課", true)
            .await
            .unwrap();
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let c = browser(&server, &[host]);
    let form_url = url(&server, host, &public);
    let (_, _, page) = get(&c, &form_url).await;
    descriptions_lead_somewhere(&page);
    assert!(page.contains(r#"min="2026-04-01""#) && page.contains(r#"max="2027-03-31""#));
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);

    // Sent empty: each error is tied to its inputs, a radio group's options included.
    let (status, _, page) = post(
        &c,
        &form_url,
        &[("_token", token.as_str()), ("_page", "0"), ("_nav", "next")],
    )
    .await;
    assert_eq!(status, 422);
    descriptions_lead_somewhere(&page);
    for input in [
        "f-kind-0",
        "f-kind-1",
        "f-name-family",
        "f-agree",
        "f-nickname",
    ] {
        let tag = capture(&format!(r#"(<[a-z]+ [^>]*id="{input}"[^>]*>)"#), &page);
        assert!(
            tag.contains(r#"aria-invalid="true""#) && tag.contains("error-"),
            "{input}: {tag}"
        );
    }

    let first = [
        ("_token", token.as_str()),
        ("_page", "0"),
        ("_nav", "next"),
        ("nickname", "たろう"),
        ("count", "3"),
        ("day", "2026-05-01"),
        ("kind", "小"),
        ("extras", "乙"),
        ("name.family", "山田"),
        ("name.given", "太郎"),
        ("name.family_kana", "ヤマダ"),
        ("name.given_kana", "タロウ"),
        ("agree", "yes"),
    ];
    assert_eq!(post(&c, &form_url, &first).await.0, 303);
    let second = [
        ("_token", token.as_str()),
        ("_page", "1"),
        ("_nav", "next"),
        ("home.postal", "1028688"),
        ("home.address1", "東京都千代田区九段南1-2-1"),
        ("mail", "taro@example.jp"),
    ];
    let (status, loc, _) = post(&c, &form_url, &second).await;
    assert_eq!(status, 303);
    let (_, _, confirm) = get(&c, &url(&server, host, &loc)).await;
    // Each 変更 link lands on an input of the page it opens.
    let links: Vec<(String, String)> = Regex::new(r##"href="(/f/[^"?]+\?page=\d+)#([^"]+)""##)
        .unwrap()
        .captures_iter(&confirm)
        .map(|m| (m[1].to_owned(), m[2].to_owned()))
        .collect();
    assert_eq!(links.len(), 9, "{confirm}");
    for (target, anchor) in &links {
        let (_, _, page) = get(&c, &url(&server, host, target)).await;
        assert!(
            page.contains(&format!("id=\"{anchor}\"")),
            "{target}#{anchor} leads nowhere"
        );
    }
    // Sent: the 受付 page points to the status lookup (an e-mail address was given).
    let submit = url(&server, host, &format!("{public}/submit"));
    let (status, loc, _) = post(&c, &submit, &[("_token", token.as_str())]).await;
    assert_eq!(status, 303);
    let (_, _, done) = get(&c, &url(&server, host, &loc)).await;
    assert!(done.contains(r#"href="/status""#), "{done}");

    // A form without an e-mail question: its applications cannot be looked up, and
    // the 受付 page does not say they can.
    let json = r#"{ "format": "madoguchi.form/1", "title": "匿名アンケート", "pages": [
        { "id": "p1", "fields": [ { "id": "opinion", "type": "textarea", "label": "ご意見", "required": true } ] } ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, json, "総務課", true)
            .await
            .unwrap();
    let c = browser(&server, &[host]);
    let form_url = url(&server, host, &public);
    let (_, _, page) = get(&c, &form_url).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let answer = [
        ("_token", token.as_str()),
        ("_page", "0"),
        ("_nav", "next"),
        ("opinion", "特になし"),
    ];
    assert_eq!(post(&c, &form_url, &answer).await.0, 303);
    let submit = url(&server, host, &format!("{public}/submit"));
    let (status, loc, _) = post(&c, &submit, &[("_token", token.as_str())]).await;
    assert_eq!(status, 303);
    let (_, _, done) = get(&c, &url(&server, host, &loc)).await;
    assert!(
        done.contains("受付番号") && !done.contains("/status") && !done.contains("状況の確認"),
        "{done}"
    );
    server.shutdown().await;
}

/// 問い合わせ先: a 管理者 writes how citizens reach a department; citizens see it
/// with the department's forms, on the completion and status pages and in the guide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departments_contact_is_shown_to_citizens() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "子育て支援課").await;
    let (form_id, public) = build_form(&admin, &server, &host, &dept, "").await;
    let u = |p: &str| url(&server, &host, p);
    let citizen = browser(&server, &[&host]);
    let (_, _, page) = get(&citizen, &u(&public)).await;
    assert!(!page.contains("お問い合わせ先"), "none written yet: {page}");

    let save = |who: &Staff, text: String| {
        let (client, csrf, target) = (
            who.client.clone(),
            who.csrf.clone(),
            u(&format!("/admin/departments/{dept}/contact")),
        );
        async move { post(&client, &target, &[("csrf", &csrf), ("contact", &text)]).await }
    };
    let contact = "電話 03-0000-1234（平日 8:30〜17:15）\r\n区役所本庁舎 3階 12番窓口";
    // Not by other staff; not longer than 500 characters.
    let clerk = staff(&env, &server, &t, Role::Staff, Some("子育て支援課")).await;
    assert_eq!(save(&clerk, contact.into()).await.0, 403);
    let (_, _, page) = save(&admin, "あ".repeat(501)).await;
    assert!(
        page.contains("問い合わせ先は500文字までで入力してください（いま501文字）"),
        "{page}"
    );
    let (status, _, _) = save(&admin, contact.into()).await;
    assert_eq!(status, 303);
    let (_, _, page) = get(&admin.client, &u("/admin/staff")).await;
    assert!(
        page.contains("区役所本庁舎 3階 12番窓口</textarea>"),
        "{page}"
    );

    // The form's pages, the completion page, the status page and the guide.
    let shown = "<p class=\"contact-dept\">子育て支援課</p><p>電話 03-0000-1234（平日 8:30〜17:15）<br/>区役所本庁舎 3階 12番窓口</p>";
    let (_, _, page) = get(&citizen, &u(&public)).await;
    assert!(
        page.contains("お問い合わせ先") && page.contains(shown),
        "{page}"
    );
    let c = browser(&server, &[&host]);
    let receipt = apply_with(&c, &server, &host, &public, "ソファ")
        .await
        .unwrap();
    let (_, _, done) = get(&c, &u(&format!("{public}/done"))).await;
    assert!(done.contains(&receipt) && done.contains(shown), "{done}");
    let origin = u("");
    let (_, _, status) = post_from(
        &c,
        &u("/status"),
        Some(origin.trim_end_matches('/')),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert!(
        status.contains("現在の状況") && status.contains(shown),
        "{status}"
    );
    let (_, _, guide) = get(&c, &u("/help")).await;
    assert!(
        guide.contains("<dt>子育て支援課</dt><dd>電話 03-0000-1234（平日 8:30〜17:15）<br/>区役所本庁舎 3階 12番窓口</dd>"),
        "{guide}"
    );
    // Kept with each form (tenant migration V31): a form made since shows it; a form
    // moved to another department shows that one's (none here), and this one's again
    // when moved back.
    let (_, second) = build_form(&admin, &server, &host, &dept, "").await;
    let (_, _, page) = get(&citizen, &u(&second)).await;
    assert!(page.contains(shown), "{page}");
    let other = dept_id(&env, &t, "環境政策課").await;
    for (to, contact_shown) in [(&other, false), (&dept, true)] {
        let (status, _, answer) = post(
            &admin.client,
            &u(&format!("/admin/forms/{form_id}/settings")),
            &[
                ("csrf", admin.csrf.as_str()),
                ("title", "粗大ごみ収集申込"),
                ("department", to.as_str()),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert!(answer.contains("設定を保存しました"), "{answer}");
        let (_, _, page) = get(&citizen, &u(&public)).await;
        assert_eq!(page.contains(shown), contact_shown, "{page}");
        assert_eq!(page.contains("お問い合わせ先"), contact_shown, "{page}");
    }
    // The department's own 所属管理者 may change it too; another department's may not.
    let manager = staff(&env, &server, &t, Role::DeptManager, Some("子育て支援課")).await;
    let elsewhere = staff(&env, &server, &t, Role::DeptManager, Some("環境政策課")).await;
    let (_, _, page) = get(&manager.client, &u("/admin/staff")).await;
    assert!(
        page.contains(&format!("/admin/departments/{dept}/contact")),
        "{page}"
    );
    let (_, _, page) = get(&elsewhere.client, &u("/admin/staff")).await;
    assert!(
        !page.contains(&format!("/admin/departments/{dept}/contact")),
        "{page}"
    );
    assert_eq!(save(&elsewhere, contact.into()).await.0, 403);
    assert_eq!(save(&manager, contact.into()).await.0, 303);
    // In the operation log; emptied, it is no longer shown.
    let conn = env.tenant_conn(&t).await;
    let logged: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'department.contact' AND target = '子育て支援課'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 2);
    save(&admin, String::new()).await;
    let (_, _, page) = get(&citizen, &u(&public)).await;
    assert!(!page.contains("お問い合わせ先"), "{page}");
}

/// 代表の問い合わせ先: a 管理者 writes how citizens reach the municipality itself; it
/// is on the home page and in the guide, and stands in wherever a department wrote
/// no contact of its own (its forms, completion and status pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipalitys_contact_stands_in_where_a_department_wrote_none() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "子育て支援課").await;
    let (_, public) = build_form(&admin, &server, &host, &dept, "").await;
    let u = |p: &str| url(&server, &host, p);
    let citizen = browser(&server, &[&host]);
    let (_, _, home) = get(&citizen, &u("/")).await;
    assert!(!home.contains("お問い合わせ先"), "none written yet: {home}");

    let save = |who: &Staff, text: String| {
        let (client, csrf, target) = (who.client.clone(), who.csrf.clone(), u("/admin/contact"));
        async move { post(&client, &target, &[("csrf", &csrf), ("contact", &text)]).await }
    };
    let contact =
        "代表電話 03-0000-0000（平日 8:30〜17:15）\r\nオンライン申請の案内: 区役所1階 総合案内";
    // A 管理者's only: not a department's 所属管理者, nor other staff.
    let manager = staff(&env, &server, &t, Role::DeptManager, Some("子育て支援課")).await;
    let clerk = staff(&env, &server, &t, Role::Staff, Some("子育て支援課")).await;
    assert_eq!(save(&manager, contact.into()).await.0, 403);
    assert_eq!(save(&clerk, contact.into()).await.0, 403);
    let (_, _, page) = get(&manager.client, &u("/admin/staff")).await;
    assert!(!page.contains("/admin/contact\""), "{page}");
    let (status, _, page) = save(&admin, "い".repeat(501)).await;
    assert_eq!(status, 422);
    assert!(
        page.contains("問い合わせ先は500文字までで入力してください（いま501文字）"),
        "{page}"
    );
    assert_eq!(save(&admin, contact.into()).await.0, 303);
    let (_, _, page) = get(&admin.client, &u("/admin/staff")).await;
    assert!(
        page.contains("オンライン申請の案内: 区役所1階 総合案内</textarea>"),
        "{page}"
    );

    let text =
        "代表電話 03-0000-0000（平日 8:30〜17:15）<br/>オンライン申請の案内: 区役所1階 総合案内";
    let shown = format!("<p class=\"contact-dept\">千代田区</p><p>{text}</p>");
    let (_, _, home) = get(&citizen, &u("/")).await;
    assert!(home.contains(&shown), "{home}");
    let (_, _, guide) = get(&citizen, &u("/help")).await;
    assert!(
        guide.contains(&format!("<dt>千代田区</dt><dd>{text}</dd>")),
        "{guide}"
    );
    // The department wrote none: the form, completion and status pages show the 代表.
    let (_, _, page) = get(&citizen, &u(&public)).await;
    assert!(page.contains(&shown), "{page}");
    let c = browser(&server, &[&host]);
    let receipt = apply_with(&c, &server, &host, &public, "ソファ")
        .await
        .unwrap();
    let (_, _, done) = get(&c, &u(&format!("{public}/done"))).await;
    assert!(done.contains(&receipt) && done.contains(&shown), "{done}");
    let origin = u("");
    let status_page = |c: reqwest::Client| {
        let (target, origin, receipt) = (u("/status"), origin.clone(), receipt.clone());
        async move {
            post_from(
                &c,
                &target,
                Some(origin.trim_end_matches('/')),
                &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
            )
            .await
            .2
        }
    };
    let page = status_page(c.clone()).await;
    assert!(
        page.contains("現在の状況") && page.contains(&shown),
        "{page}"
    );

    // Once the department writes its own, that is shown instead (the home page keeps
    // the 代表).
    let (status, _, _) = post(
        &admin.client,
        &u(&format!("/admin/departments/{dept}/contact")),
        &[
            ("csrf", &admin.csrf),
            ("contact", "子育て支援課 電話 03-0000-1234"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    for page in [
        get(&citizen, &u(&public)).await.2,
        status_page(c.clone()).await,
    ] {
        assert!(
            page.contains(
                "<p class=\"contact-dept\">子育て支援課</p><p>子育て支援課 電話 03-0000-1234</p>"
            ) && !page.contains("代表電話"),
            "{page}"
        );
    }
    let (_, _, home) = get(&citizen, &u("/")).await;
    assert!(home.contains(&shown), "{home}");
    // The department's emptied: the 代表 stands in again.
    let (status, _, _) = post(
        &admin.client,
        &u(&format!("/admin/departments/{dept}/contact")),
        &[("csrf", &admin.csrf), ("contact", "")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, page) = get(&citizen, &u(&public)).await;
    assert!(page.contains(&shown), "{page}");

    // In the operation log; emptied, the home page shows none.
    let conn = env.tenant_conn(&t).await;
    let logged: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'settings.contact'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);
    assert_eq!(save(&admin, String::new()).await.0, 303);
    let (_, _, home) = get(&citizen, &u("/")).await;
    assert!(!home.contains("お問い合わせ先"), "{home}");
    server.shutdown().await;
}

/// 申請内容の控え: the completion page shows what was sent, to print or save, for
/// half an hour after sending, in the browser whose draft sent it only: a correction
/// sent from another browser is shown there, not in the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completion_page_shows_what_was_sent_for_half_an_hour() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "子育て支援課").await;
    let (_, public) = build_form(&admin, &server, &host, &dept, "").await;
    let u = |p: &str| url(&server, &host, p);
    let first = browser(&server, &[&host]);
    let receipt = apply_with(&first, &server, &host, &public, "その他")
        .await
        .unwrap();
    let done = u(&format!("{public}/done"));
    let (_, _, page) = get(&first, &done).await;
    assert!(page.contains("申請内容の控え"), "{page}");
    for shown in [
        format!("受付番号 {receipt}・送信日時 "),
        "<dd class=\"answer-value\">葛\u{E0100}西　花子（カサイ　ハナコ）</dd>".to_owned(),
        "<dd class=\"answer-value\">hanako.kasai@example.jp</dd>".to_owned(),
        "<dd class=\"answer-value\">古いピアノ椅子</dd>".to_owned(),
        "送信から30分のあいだ".to_owned(),
    ] {
        assert!(page.contains(&shown), "{shown}: {page}");
    }
    // Another browser is sent to the form, as before.
    let other = browser(&server, &[&host]);
    let (status, loc, _) = get(&other, &done).await;
    assert_eq!((status, loc.as_str()), (303, public.as_str()));

    // Returned for correction; corrected and sent from another browser (a phone).
    let conn = env.tenant_conn(&t).await;
    let id: uuid::Uuid = conn
        .client
        .query_one(
            "SELECT id FROM submissions WHERE receipt_number = $1",
            &[&receipt],
        )
        .await
        .unwrap()
        .get(0);
    conn.client
        .execute(
            "UPDATE submissions SET status = 'returned' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let phone = browser(&server, &[&host]);
    let origin = u("");
    let (status, loc, body) = post_from(
        &phone,
        &u("/status/resubmit"),
        Some(origin.trim_end_matches('/')),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&phone, &u(&loc)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    for (page, fields) in [
        (
            "0",
            vec![
                ("name.family", "葛西"),
                ("name.given", "花子"),
                ("name.family_kana", "カサイ"),
                ("name.given_kana", "ハナコ"),
                ("email", "hanako.kasai@example.jp"),
                ("kind", "ソファ"),
            ],
        ),
        ("1", vec![("date", "2031-08-20")]),
    ] {
        let mut form = vec![
            ("_token", token.as_str()),
            ("_page", page),
            ("_nav", "next"),
        ];
        form.extend(fields);
        let (status, _, body) = post(&phone, &u(&loc), &form).await;
        assert_eq!(status, 303, "{body}");
    }
    let (status, _, body) = post(&phone, &u(&format!("{loc}/submit")), &[("_token", &token)]).await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&phone, &done).await;
    assert!(
        page.contains("<dd class=\"answer-value\">ソファ</dd>") && !page.contains("古いピアノ椅子"),
        "{page}"
    );
    // The first browser still holds the application, but not the copy of what the
    // phone sent.
    let (_, _, page) = get(&first, &done).await;
    assert!(
        page.contains(&receipt)
            && page.contains("ここには表示していません")
            && !page.contains("<dd class=\"answer-value\">ソファ</dd>")
            && !page.contains("hanako.kasai@example.jp"),
        "{page}"
    );
    // Half an hour later the phone shows the receipt number only.
    conn.client
        .execute(
            "UPDATE citizen_drafts SET sent_at = sent_at - interval '31 minutes' WHERE submission_id = $1 AND sent_at IS NOT NULL",
            &[&id],
        )
        .await
        .unwrap();
    let (_, _, page) = get(&phone, &done).await;
    assert!(
        page.contains(&receipt)
            && page.contains("ここには表示していません")
            && !page.contains("hanako.kasai@example.jp"),
        "{page}"
    );
    server.shutdown().await;
}

/// The home page lists the procedures open now by department, with an index of the
/// departments, and finds them by title or department (width, case and kana folded);
/// a form not open yet is listed apart with when it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_lists_procedures_by_department_and_finds_them() {
    use madoguchi::control::tenant_admin::import_form;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let form = |title: &str, opens: &str| {
        format!(
            r#"{{ "format": "madoguchi.form/1", "title": "{title}", "settings": {{ "opens_at": {opens} }},
               "pages": [ {{ "id": "p1", "fields": [ {{ "id": "email", "type": "email", "label": "メールアドレス" }} ] }} ] }}"#
        )
    };
    for (title, dept, opens) in [
        ("児童手当の申請", "子育て支援課", "null"),
        ("粗大ゴミ収集申込", "環境政策課", "null"),
        ("保育所の入所申込", "子育て支援課", "null"),
        (
            "来年度の説明会",
            "子育て支援課",
            "\"2999-04-01T09:00:00+09:00\"",
        ),
        (
            "再来年度の説明会",
            "子育て支援課",
            "\"2999-03-01T13:30:00+09:00\"",
        ),
    ] {
        import_form(&env.platform, &t, &form(title, opens), dept, true)
            .await
            .unwrap();
    }
    // Neither an ended form, a closed one nor one published on LGWAN only is listed
    // on the internet.
    let hidden = [
        r#"{ "format": "madoguchi.form/1", "title": "終わった募集", "settings": { "opens_at": "2020-04-01T09:00:00+09:00", "closes_at": "2020-05-01T17:00:00+09:00" },
             "pages": [ { "id": "p1", "fields": [ { "id": "email", "type": "email", "label": "メールアドレス" } ] } ] }"#,
        r#"{ "format": "madoguchi.form/1", "title": "庁内向けの説明会", "settings": { "opens_at": "2999-04-01T09:00:00+09:00", "zones": ["lgwan"] },
             "pages": [ { "id": "p1", "fields": [ { "id": "email", "type": "email", "label": "メールアドレス" } ] } ] }"#,
    ];
    for def in hidden {
        import_form(&env.platform, &t, def, "子育て支援課", true)
            .await
            .unwrap();
    }
    import_form(
        &env.platform,
        &t,
        &form("停止した申込", "null"),
        "環境政策課",
        true,
    )
    .await
    .unwrap();
    env.tenant_conn(&t)
        .await
        .client
        .execute(
            "UPDATE forms SET closed = true WHERE draft->>'title' = '停止した申込'",
            &[],
        )
        .await
        .unwrap();
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let c = browser(&server, &[&host]);
    let home = |q: &str| {
        let (c, u) = (c.clone(), url(&server, &host, q));
        async move { get(&c, &u).await.2 }
    };
    let page = home("/").await;
    for shown in [
        "<a href=\"#dept-1\">子育て支援課（2）</a>",
        "<a href=\"#dept-2\">環境政策課（1）</a>",
        "<h3 id=\"dept-1\">子育て支援課</h3>",
        "児童手当の申請",
        "保育所の入所申込",
        "粗大ゴミ収集申込",
        "手続きを探す",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    // Not open yet: listed apart, with when it opens (JST, 和暦 beside 西暦).
    let upcoming = page
        .split("これから受付を始める手続き")
        .nth(1)
        .unwrap_or_else(|| panic!("no upcoming list: {page}"));
    let soon = "再来年度の説明会<span class=\"upcoming-meta\">子育て支援課・受付開始 2999年3月1日（令和981年3月1日） 13:30</span>";
    let later = "来年度の説明会<span class=\"upcoming-meta\">子育て支援課・受付開始 2999年4月1日（令和981年4月1日） 09:00</span>";
    assert!(
        upcoming.contains(soon)
            && upcoming.contains(later)
            && upcoming.find(soon) < upcoming.find(later),
        "soonest first: {upcoming}"
    );
    for title in ["終わった募集", "庁内向けの説明会", "停止した申込"] {
        assert!(!page.contains(title), "{title}: {page}");
    }
    assert!(
        !page
            .split("これから受付を始める手続き")
            .next()
            .unwrap()
            .contains("来年度の説明会"),
        "{page}"
    );
    // Found by a word of the title in hiragana or half-width kana, or the department.
    for q in ["/?q=%E3%81%94%E3%81%BF", "/?q=%EF%BD%BA%EF%BE%9E%EF%BE%90"] {
        let page = home(q).await;
        assert!(
            page.contains("件 <span class=\"en\" lang=\"en\">1 found</span>")
                && page.contains("粗大ゴミ収集申込")
                && !page.contains("児童手当の申請"),
            "{q}: {page}"
        );
    }
    let page = home("/?q=%E5%AD%90%E8%82%B2%E3%81%A6").await;
    assert!(
        page.contains("「子育て」: 4件")
            && page.contains("児童手当の申請")
            && page.contains("来年度の説明会<span")
            && !page.contains("粗大ゴミ収集申込"),
        "{page}"
    );
    // Nothing found: said so, with the way back; the words are shown escaped.
    let page = home("/?q=%3Cb%3E%E3%83%91%E3%82%B9%E3%83%9D%E3%83%BC%E3%83%88").await;
    assert!(
        page.contains("「&#60;b&#62;パスポート」に当てはまる手続きはありません")
            && !page.contains("<b>パスポート"),
        "{page}"
    );
    server.shutdown().await;
}

/// お知らせ: a 管理者 puts a notice at the top of the home page, shown until the end
/// of its last day (Japan time) when one is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_on_the_home_page_until_its_last_day() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let manager = staff(&env, &server, &t, Role::DeptManager, Some("子育て支援課")).await;
    let u = |p: &str| url(&server, &host, p);
    let save = |who: &Staff, notice: String, until: String| {
        let (client, csrf, target) = (who.client.clone(), who.csrf.clone(), u("/admin/notice"));
        async move {
            post(
                &client,
                &target,
                &[("csrf", &csrf), ("notice", &notice), ("until", &until)],
            )
            .await
        }
    };
    let text = "12月29日から1月3日までは、申請の審査を行いません。\r\n1月4日から順に処理します。";
    let today = madoguchi::ja::today();
    assert_eq!(save(&manager, text.into(), String::new()).await.0, 403);
    let (status, _, page) = save(&admin, text.into(), "12月28日".into()).await;
    assert!(
        status == 422
            && page.contains("お知らせの表示終了日を「2026-12-28」の形で入力してください"),
        "{page}"
    );
    let (status, _, page) = save(&admin, "お".repeat(501), String::new()).await;
    assert!(
        status == 422 && page.contains("お知らせは500文字までで入力してください（いま501文字）"),
        "{page}"
    );
    // Until today (typed in full width): shown, and kept on the staff page.
    let full_width: String = today
        .to_string()
        .chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 + 0xFEE0).unwrap(),
            '-' => '－',
            c => c,
        })
        .collect();
    assert_eq!(save(&admin, text.into(), full_width).await.0, 303);
    let c = browser(&server, &[&host]);
    let (_, _, home) = get(&c, &u("/")).await;
    assert!(
        home.contains("<h2 id=\"notice-h\">お知らせ")
            && home.contains(
                "12月29日から1月3日までは、申請の審査を行いません。<br/>1月4日から順に処理します。"
            ),
        "{home}"
    );
    let (_, _, page) = get(&admin.client, &u("/admin/staff")).await;
    assert!(
        page.contains(&format!("name=\"until\" value=\"{today}\"")),
        "{page}"
    );
    // Its last day past: no longer shown; without a last day: shown.
    let yesterday = today.previous_day().unwrap().to_string();
    assert_eq!(save(&admin, text.into(), yesterday).await.0, 303);
    let (_, _, home) = get(&c, &u("/")).await;
    assert!(!home.contains("お知らせ"), "{home}");
    assert_eq!(save(&admin, text.into(), String::new()).await.0, 303);
    let (_, _, home) = get(&c, &u("/")).await;
    assert!(home.contains("1月4日から順に処理します。"), "{home}");
    let logged: i64 = env
        .tenant_conn(&t)
        .await
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'settings.notice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 3);
    server.shutdown().await;
}

/// The list of forms, for a city with hundreds: narrowed by words of the title
/// (full-width or half-width alike), by department and by state; a department's
/// staff see their department's forms only, whatever they ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_of_forms_narrows_by_title_department_and_state() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("fl"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let form = |title: &str| {
        format!(
            r#"{{ "format": "madoguchi.form/1", "title": "{title}",
                 "pages": [ {{ "id": "p1", "fields": [ {{ "id": "name", "type": "text", "label": "氏名" }} ] }} ] }}"#
        )
    };
    for (title, dept) in [
        ("ＰＣ講座 受講申込", "生涯学習課"),
        ("犬の登録", "生活衛生課"),
        ("pc教室 アンケート", "生活衛生課"),
    ] {
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, &form(title), dept, true)
            .await
            .unwrap();
    }
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let learning = dept_id(&env, &t, "生涯学習課").await;
    let (status, _, _) = post(
        &admin.client,
        &u("/admin/forms"),
        &[
            ("csrf", admin.csrf.as_str()),
            ("title", "PC講座 講師募集"),
            ("department", &learning),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let titles = |page: &str| {
        let mut found: Vec<String> = regex::Regex::new(r#"<a href="/admin/forms/\d+">([^<]+)</a>"#)
            .unwrap()
            .captures_iter(page)
            .map(|c| c[1].to_owned())
            .collect();
        found.sort();
        found
    };
    let list = |c: &reqwest::Client, q: &str| {
        let (c, p) = (c.clone(), u(&format!("/admin/forms?{q}")));
        async move {
            let (status, _, page) = get(&c, &p).await;
            assert_eq!(status, 200, "{page}");
            page
        }
    };

    let page = list(&admin.client, "").await;
    assert_eq!(titles(&page).len(), 4, "{page}");
    assert!(!page.contains("id=\"forms-count\""), "{page}");
    // 「pc」 finds ＰＣ and PC alike; two words must both be in the title.
    let page = list(&admin.client, "q=pc").await;
    assert_eq!(
        titles(&page),
        ["PC講座 講師募集", "pc教室 アンケート", "ＰＣ講座 受講申込"],
        "{page}"
    );
    assert!(page.contains("4件中 3件"), "{page}");
    let page = list(&admin.client, "q=%EF%BD%90%EF%BD%83+%E8%AC%9B%E5%BA%A7").await;
    assert_eq!(
        titles(&page),
        ["PC講座 講師募集", "ＰＣ講座 受講申込"],
        "ｐｃ 講座: {page}"
    );
    let page = list(&admin.client, &format!("department={learning}&state=draft")).await;
    assert_eq!(titles(&page), ["PC講座 講師募集"], "{page}");
    assert!(
        page.contains(&format!(r#"<option value="{learning}" selected>"#)),
        "{page}"
    );
    assert!(
        page.contains(r#"<option value="draft" selected>下書き</option>"#),
        "{page}"
    );
    let page = list(&admin.client, &format!("department={learning}&state=open")).await;
    assert_eq!(titles(&page), ["ＰＣ講座 受講申込"], "{page}");
    let page = list(&admin.client, "q=%E7%8C%AB").await;
    assert!(
        titles(&page).is_empty() && page.contains("条件に合うフォームはありません"),
        "{page}"
    );

    // A department's staff: their own department's forms, even when asking for another's.
    let clerk = staff(&env, &server, &t, Role::Staff, Some("生活衛生課")).await;
    let page = list(&clerk.client, "").await;
    assert_eq!(titles(&page), ["pc教室 アンケート", "犬の登録"], "{page}");
    let page = list(&clerk.client, &format!("department={learning}")).await;
    assert!(titles(&page).is_empty(), "{page}");
    assert!(!page.contains("生涯学習課"), "{page}");
    server.shutdown().await;
}

/// The applicant's e-mail address is typed twice on the form's page (the copy of the
/// answers goes to it): a difference or a second box left empty is said on the page
/// with both as typed; full-width letters and a capitalised domain are the same
/// address; the way back shows the second box as typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_address_is_typed_twice() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("em"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let u = |p: &str| url(&server, host, p);
    let c = browser(&server, &[host]);
    let (status, _, page) = get(&c, &u(&public)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"<label for="f-email-confirm" class="confirm-label">メールアドレス（確認のため、もう一度入力してください）"#),
        "{page}"
    );
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let first = |again: &'static str| {
        vec![
            ("_token", token.clone()),
            ("_page", "0".into()),
            ("_nav", "next".into()),
            ("name.family", "葛西".into()),
            ("name.given", "花子".into()),
            ("name.family_kana", "カサイ".into()),
            ("name.given_kana", "ハナコ".into()),
            ("email", "hanako.kasai@example.jp".into()),
            ("email.confirm", again.to_owned()),
            ("kind", "ソファ".into()),
        ]
    };
    let send = |form: Vec<(&'static str, String)>| {
        let (c, p) = (c.clone(), u(&public));
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(&c, &p, &pairs).await
        }
    };
    // A letter wrong: said at the second box, both kept as typed.
    let (status, _, page) = send(first("hanako.kasai@exmaple.jp")).await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("メールアドレスと確認のための入力が一致しません"),
        "{page}"
    );
    assert!(page.contains(r##"href="#f-email-confirm""##), "{page}");
    assert!(
        page.contains(r#"name="email.confirm" value="hanako.kasai@exmaple.jp""#),
        "{page}"
    );
    assert!(
        page.contains(r#"name="email" value="hanako.kasai@example.jp""#),
        "{page}"
    );
    assert!(
        !page.contains(r#"autocomplete="email" aria-invalid="true""#),
        "the first box is not the one in error: {page}"
    );
    // Left empty: asked for.
    let (status, _, page) = send(first("")).await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("確認のため、メールアドレスをもう一度入力してください"),
        "{page}"
    );
    // Typed in the second box only: the first is asked for.
    let mut only_second = first("hanako.kasai@example.jp");
    only_second[7].1 = String::new();
    assert_eq!(only_second[7].0, "email");
    let (status, _, page) = send(only_second).await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("確認のための欄だけに入力されています"),
        "{page}"
    );
    // The same address in full-width letters with the domain in capitals: taken.
    let (status, loc, page) = send(first("hanako.kasai@ＥＸＡＭＰＬＥ．ＪＰ")).await;
    assert_eq!(status, 303, "{page}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    // Back to the first page: the second box holds it as typed.
    let (_, _, page) = get(&c, &u(&format!("{public}?page=0"))).await;
    assert!(
        page.contains(r#"name="email.confirm" value="hanako.kasai@ＥＸＡＭＰＬＥ．ＪＰ""#),
        "{page}"
    );
    server.shutdown().await;
}
