//! 一時保存: a citizen saves a form part-way, gets a link by mail (through a real
//! SMTP exchange), and goes on from it in another browser; the link works for a
//! week, until it is opened (then two minutes more, in that browser only), and a
//! draft sends a few links at most.

use madoguchi::front::Server;
use madoguchi::tenant::staff::Role;

use crate::forms::{
    apply_with, browser, build_form, capture, dept_id, get, post, post_from, staff,
};
use crate::harness::{unique, url, TestEnv};
use crate::mail::relay;
use crate::smtp::SmtpServer;

/// A municipality with the two-page bulky-waste form published, its mail going to
/// an SMTP server in this process.
struct Site {
    smtp: SmtpServer,
    /// Kept for as long as the server runs.
    _env: TestEnv,
    server: Server,
    host: String,
    public: String,
    db: tokio_postgres::Client,
}

impl Site {
    async fn open() -> Self {
        let smtp = SmtpServer::start().await;
        let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
        let env = TestEnv::with(|s| s.mail = Some(relay(&relay_url))).await;
        let t = env.tenant(&unique("d"), "千代田区", "131016").await;
        let server = env.serve().await;
        let host = t.hosts[0].clone();
        let admin = staff(&env, &server, &t, Role::Admin, None).await;
        let dept = dept_id(&env, &t, "環境政策課").await;
        let (_, public) = build_form(&admin, &server, &host, &dept, "").await;
        let db = env.tenant_conn(&t).await.client;
        Self {
            smtp,
            _env: env,
            server,
            host,
            public,
            db,
        }
    }
}

/// Opens the form at `form` (a full URL) in `c` and sends its first page with
/// `_nav` and `fields`; returns the page's token, and the status, location and body
/// of the answer.
async fn first_page(
    c: &reqwest::Client,
    form: &str,
    nav: &str,
    fields: &[(&str, &str)],
) -> (String, (u16, String, String)) {
    let (_, _, page) = get(c, form).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let mut sent = vec![("_token", token.as_str()), ("_page", "0"), ("_nav", nav)];
    sent.extend_from_slice(fields);
    let answer = post(c, form, &sent).await;
    (token, answer)
}

/// Starts the form in a new browser and sends its first page with `_nav=save`
/// (with 品目, which is required, not chosen); returns the browser and its token.
async fn saved_part_way(server: &Server, host: &str, public: &str) -> (reqwest::Client, String) {
    let c = browser(server, &[host]);
    let (_, _, page) = get(&c, &url(server, host, public)).await;
    assert!(
        page.contains(r#"name="_nav" value="save""#),
        "the form has no 一時保存 button:\n{page}"
    );
    let (token, (status, loc, body)) = first_page(
        &c,
        &url(server, host, public),
        "save",
        &[
            ("name.family", "葛\u{E0100}西"),
            ("name.given", "花子"),
            ("name.family_kana", "かさい"),
            ("name.given_kana", "はなこ"),
            ("email", "hanako.kasai@example.jp"),
        ],
    )
    .await;
    assert_eq!(
        (status, loc.as_str()),
        (303, &*format!("{public}/save?page=0")),
        "{body}"
    );
    (c, token)
}

/// The link mail's row once the first column of `sql` (a query of it: a state, and
/// the payload's length) is true, waiting up to 20 s for the deliverer.
async fn link_mail_once(db: &tokio_postgres::Client, sql: &str) -> (bool, i32) {
    let mut row = (false, -1);
    for _ in 0..200 {
        let r = db.query_one(sql, &[]).await.unwrap();
        row = (r.get(0), r.get(1));
        if row.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    row
}

/// Asks for a link to `email`: the status and the page.
async fn send_link(
    c: &reqwest::Client,
    server: &Server,
    host: &str,
    public: &str,
    token: &str,
    email: &str,
) -> (u16, String) {
    let (status, _, page) = post(
        c,
        &url(server, host, &format!("{public}/save")),
        &[("_token", token), ("page", "0"), ("email", email)],
    )
    .await;
    (status, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_form_goes_on_from_a_mailed_link_in_another_browser() {
    let Site {
        smtp,
        _env,
        server,
        host,
        public,
        db,
    } = Site::open().await;
    let host = host.as_str();
    let u = |p: &str| url(&server, host, p);

    // On the phone: the first page, part-filled, saved. The page asking where to
    // send the link offers the address typed in the form.
    let (phone, token) = saved_part_way(&server, host, &public).await;
    let r = phone
        .get(u(&format!("{public}/save?page=0")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"value="hanako.kasai@example.jp""#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"href="{public}?page=0""#)),
        "{page}"
    );

    // A mistyped address is refused in Japanese; nothing saved is lost.
    let (status, page) = send_link(&phone, &server, host, &public, &token, "hanako.kasai").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("メールアドレスの形式が正しくありません"),
        "{page}"
    );
    assert!(page.contains(r#"aria-invalid="true""#), "{page}");
    let (status, page) = send_link(&phone, &server, host, &public, &token, " ").await;
    assert_eq!(status, 422);
    assert!(page.contains("メールアドレスを入力してください"), "{page}");
    let (_, _, form) = get(&phone, &u(&format!("{public}?page=0"))).await;
    assert!(form.contains(r#"value="花子""#), "{form}");

    // Typed in full width, it is taken as the address it is.
    let (status, page) = send_link(
        &phone,
        &server,
        host,
        &public,
        &token,
        "ｈａｎａｋｏ．ｋａｓａｉ＠ＥＸＡＭＰＬＥ．ＪＰ",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("続きのリンクを送りました"), "{page}");
    assert!(page.contains("hanako.kasai@example.jp"), "{page}");
    // The draft is now kept a week, not a day.
    let days: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(expires_at) - now())::float8 / 86400 FROM citizen_drafts WHERE resume_hash IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((6.99..=7.0).contains(&days), "kept {days} days");

    // The mail: the link, nothing typed but the address it goes to.
    let mails = smtp.wait_for(1).await;
    let mail = &mails[0];
    assert_eq!(mail.to, ["hanako.kasai@example.jp"]);
    assert_eq!(
        mail.header("Subject"),
        "【千代田区】粗大ごみ収集申込 入力の続きのご案内"
    );
    let body = mail.body();
    let link = capture(r"(https?://\S+/resume/\S+)", &body);
    assert!(link.starts_with(&u(&format!("{public}/resume/"))), "{link}");
    assert!(body.contains("有効期限: "), "{body}");
    assert!(!body.contains("花子"), "{body}");
    // Sent: the row keeps its time and loses the link (recorded just after the
    // relay's answer).
    let row = link_mail_once(
        &db,
        "SELECT sent_at IS NOT NULL, length(payload) FROM outbox WHERE kind = 'resume'",
    )
    .await;
    assert_eq!(row, (true, 0), "sent, payload length");

    // On a PC that has begun an application of its own: the link's page changes
    // nothing (mail scanners fetch links), tells only its origin to what it loads,
    // and says that opening replaces what the PC has begun.
    let pc = browser(&server, &[host]);
    let (_, (status, _, _)) = first_page(&pc, &u(&public), "next", &[("kind", "その他")]).await;
    assert_eq!(status, 422);
    let claim_name = format!("md_r_{}", public.trim_start_matches("/f/"));
    let mut claim = String::new();
    for _ in 0..2 {
        let r = pc.get(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["referrer-policy"], "strict-origin");
        // The page gives this browser a claim on the link, once.
        if let Some(set) = r.headers().get("set-cookie") {
            assert!(claim.is_empty(), "a second claim");
            claim = capture(&format!("{claim_name}=([^;]+)"), set.to_str().unwrap());
        }
        let page = r.text().await.unwrap();
        assert!(page.contains("続きから入力する"), "{page}");
        assert!(page.contains("保存した内容に置き換わります"), "{page}");
    }
    assert!(!claim.is_empty(), "no claim cookie");
    let unspent: i64 = db
        .query_one(
            "SELECT count(*) FROM citizen_drafts WHERE resume_hash IS NOT NULL AND resumed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unspent, 1, "fetching the link's page spent it");
    // Its button, from another site or from nowhere said, is refused.
    for from in [Some("https://evil.example"), None] {
        let (status, _, _) = post_from(&pc, &link, from, &[]).await;
        assert_eq!(status, 403, "{from:?}");
    }
    // From the page itself: the draft moves, to the page it was saved from. The
    // first answer is lost on the way (sent with the PC's claim from a client that
    // keeps nothing): pressed again at once, the PC gets the draft. Another
    // browser, meanwhile, gets neither the page nor the draft.
    let origin = u("");
    let origin = origin.trim_end_matches('/');
    let lost = browser(&server, &[host]);
    let r = lost
        .post(&link)
        .header("origin", origin)
        .header("cookie", format!("{claim_name}={claim}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let first = r.headers()["location"].to_str().unwrap().to_owned();
    let other = browser(&server, &[host]);
    let (status, _, _) = get(&other, &link).await;
    assert_eq!(status, 404);
    let (status, _, _) = post_from(&other, &link, Some(origin), &[]).await;
    assert_eq!(status, 404);
    let (status, loc, body) = post_from(&pc, &link, Some(origin), &[]).await;
    assert_eq!(
        (status, loc.as_str(), first.as_str()),
        (
            303,
            &*format!("{public}?page=0"),
            &*format!("{public}?page=0")
        ),
        "{body}"
    );
    let (_, _, form) = get(&pc, &u(&loc)).await;
    assert!(form.contains("葛\u{E0100}西"), "{form}");
    assert!(
        form.contains(r#"value="hanako.kasai@example.jp""#),
        "{form}"
    );

    // Moved, the draft is kept 24 hours from the last step again.
    let hours: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(expires_at) - now())::float8 / 3600 FROM citizen_drafts WHERE resumed_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((23.9..=24.0).contains(&hours), "kept {hours} hours");

    // Two minutes after it was opened, the link is spent.
    let (status, _, _) = get(&pc, &link).await;
    assert_eq!(status, 200, "a reload just after opening");
    db.execute(
        "UPDATE citizen_drafts SET resumed_at = resumed_at - interval '121 seconds' WHERE resumed_at IS NOT NULL",
        &[],
    )
    .await
    .unwrap();
    let (status, _, page) = get(&pc, &link).await;
    assert_eq!(status, 404);
    assert!(page.contains("このリンクは使えません"), "{page}");
    let (status, _, _) = post_from(&pc, &link, Some(origin), &[]).await;
    assert_eq!(status, 404);
    let (_, _, form) = get(&pc, &u(&format!("{public}?page=0"))).await;
    assert!(form.contains("葛\u{E0100}西"), "the PC lost it: {form}");

    // The phone is told where its draft went: a page sent from its open tab (with
    // its cookie, or after the cookie expired) is not taken as a new application,
    // and the form says why it starts afresh.
    let cookieless = browser(&server, &[host]);
    for from in [&cookieless, &phone] {
        let (status, _, page) = post_from(
            from,
            &u(&public),
            Some(origin),
            &[
                ("_token", &token),
                ("_page", "0"),
                ("_nav", "next"),
                ("kind", "ソファ"),
            ],
        )
        .await;
        assert_eq!(status, 409, "{page}");
        assert!(page.contains("入力内容は別の端末に移りました"), "{page}");
    }
    let (_, _, form) = get(&phone, &u(&public)).await;
    assert!(!form.contains("花子"), "{form}");
    assert!(
        form.contains("リンクを開いたブラウザに移りました"),
        "{form}"
    );
    let drafts: i64 = db
        .query_one("SELECT count(*) FROM citizen_drafts", &[])
        .await
        .unwrap()
        .get(0);
    // The moved one and the PC's own it replaced; none made of the phone's page.
    assert_eq!(drafts, 2, "a new draft was made of the phone's page");

    // Its open tab, older than the cookie the form page just gave it, is refused too.
    let (status, _, page) = post_from(
        &phone,
        &u(&public),
        Some(origin),
        &[("_token", &token), ("_page", "0"), ("_nav", "next")],
    )
    .await;
    assert_eq!(status, 409, "{page}");
    // A browser still holding the phone's cookie is told, until the PC sends it.
    let held = format!("md_f_{}={token}", public.trim_start_matches("/f/"));
    let told = || async {
        let r = cookieless
            .get(u(&public))
            .header("cookie", &held)
            .send()
            .await
            .unwrap();
        r.text()
            .await
            .unwrap()
            .contains("リンクを開いたブラウザに移りました")
    };
    assert!(told().await);

    // The PC goes on to a 受付番号.
    let receipt = apply_with(&pc, &server, host, &public, "ソファ")
        .await
        .unwrap_or_else(|(s, p)| panic!("{s}: {p}"));
    assert!(!receipt.is_empty());
    assert!(!told().await, "told after the moved draft was sent");
    let sent: i64 = db
        .query_one(
            "SELECT count(*) FROM citizen_drafts WHERE submission_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, 1);

    // A correction (差戻し) is reopened from the status page, not saved for later.
    db.execute(
        "UPDATE submissions SET status = 'returned', return_deadline = current_date + 7 WHERE receipt_number = $1",
        &[&receipt],
    )
    .await
    .unwrap();
    let (status, loc, _) = post(
        &pc,
        &u("/status/resubmit"),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, form) = get(&pc, &u(&loc)).await;
    assert!(form.contains(r#"name="_correction" value="1""#), "{form}");
    assert!(!form.contains(r#"value="save""#), "{form}");
    let (status, loc, _) = get(&pc, &u(&format!("{public}/save"))).await;
    assert_eq!((status, loc.as_str()), (303, public.as_str()));
}

/// Without a relay no mail goes out, so no link is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_relay_no_link_is_offered() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("d"), "千代田区", "131016").await;
    let public = crate::harness::publish_sample(&env, &t).await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let c = browser(&server, &[host]);
    let (status, _, form) = get(&c, &url(&server, host, &public)).await;
    assert_eq!(status, 200);
    assert!(form.contains("_token"), "{form}");
    assert!(!form.contains(r#"value="save""#), "{form}");
    let (status, loc, _) = get(&c, &url(&server, host, &format!("{public}/save"))).await;
    assert_eq!((status, loc.as_str()), (303, public.as_str()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_replaces_the_last_and_a_draft_sends_five_at_most() {
    let Site {
        smtp,
        _env,
        server,
        host,
        public,
        db,
    } = Site::open().await;
    let host = host.as_str();

    let (c, token) = saved_part_way(&server, host, &public).await;
    // Asked for from the 確認画面 (no page named), it leads back there.
    let (status, _, page) = get(&c, &url(&server, host, &format!("{public}/save"))).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(r#"href="{public}/confirm""#)),
        "{page}"
    );
    // One address is sent three a day (typed differently, or with a +tag, it is the
    // same mailbox).
    for to in [
        "hanako.kasai@example.jp",
        "Hanako.Kasai@EXAMPLE.JP",
        "hanako.kasai+save@example.jp",
        "ｈａｎａｋｏ．ｋａｓａｉ＠example.jp",
    ]
    .iter()
    .enumerate()
    {
        let (status, page) = send_link(&c, &server, host, &public, &token, to.1).await;
        if to.0 < 3 {
            assert_eq!(status, 200, "link {}: {page}", to.0);
        } else {
            assert_eq!(status, 422, "{page}");
            assert!(page.contains("24時間に3通まで"), "{page}");
        }
    }
    // Other addresses take the draft to its five.
    for to in ["taro@example.jp", "jiro@example.jp"] {
        let (status, page) = send_link(&c, &server, host, &public, &token, to).await;
        assert_eq!(status, 200, "{to}: {page}");
    }
    let mails = smtp.wait_for(5).await;
    let links: Vec<String> = mails
        .iter()
        .map(|m| capture(r"(https?://\S+/resume/\S+)", &m.body()))
        .collect();
    // Only the latest works.
    for old in &links[..4] {
        let (status, _, _) = get(&c, old).await;
        assert_eq!(status, 404, "{old}");
    }
    let (status, _, _) = get(&c, &links[4]).await;
    assert_eq!(status, 200);
    // A sixth is refused, in words; the draft and its link stay.
    let (status, page) = send_link(&c, &server, host, &public, &token, "saburo@example.jp").await;
    assert_eq!(status, 422);
    assert!(page.contains("5通まで"), "{page}");
    let (status, _, _) = get(&c, &links[4]).await;
    assert_eq!(status, 200);
    let queued: i64 = db
        .query_one("SELECT count(*) FROM outbox WHERE kind = 'resume'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 5);

    // Past its week, the link leads nowhere, and the daily purge takes the draft.
    db.execute(
        "UPDATE citizen_drafts SET expires_at = now() - interval '1 second' WHERE resume_hash IS NOT NULL",
        &[],
    )
    .await
    .unwrap();
    let (status, _, page) = get(&c, &links[4]).await;
    assert_eq!(status, 404);
    assert!(page.contains("有効期限が過ぎた"), "{page}");
    madoguchi::tenant::forms::citizen::purge_expired_drafts(&db)
        .await
        .unwrap();
    let left: i64 = db
        .query_one("SELECT count(*) FROM citizen_drafts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // The link mails go once they are a day old (their recipients no longer counted).
    db.execute(
        "UPDATE outbox SET created_at = created_at - interval '25 hours' WHERE kind = 'resume'",
        &[],
    )
    .await
    .unwrap();
    madoguchi::tenant::forms::citizen::purge_expired_drafts(&db)
        .await
        .unwrap();
    let mails: i64 = db
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mails, 0);
}

/// A form that asks for proof of work before its final submit asks for it before a
/// link is mailed too: without it, none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_from_a_form_with_proof_of_work_needs_it() {
    let smtp = SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| s.mail = Some(relay(&relay_url))).await;
    let t = env.tenant(&unique("d"), "千代田区", "131016").await;
    let form = r#"{ "format": "madoguchi.form/1", "title": "イベント申込", "settings": { "proof_of_work": true },
      "pages": [ { "id": "p1", "fields": [ { "id": "memo", "type": "text", "label": "メモ", "required": true } ] } ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, form, "総務課", true)
            .await
            .unwrap();
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let c = browser(&server, &[host]);
    let (token, (status, loc, _)) = first_page(&c, &u(&public), "save", &[("memo", "途中")]).await;
    assert_eq!(status, 303);
    let (_, _, page) = get(&c, &u(&loc)).await;
    assert!(page.contains("data-pow="), "{page}");
    let (status, page) = send_link(
        &c,
        &server,
        host,
        &public,
        &token,
        "hanako.kasai@example.jp",
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("自動確認"), "{page}");
    let db = env.tenant_conn(&t).await.client;
    let queued: i64 = db
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    server.shutdown().await;
}

/// A link the relay refuses for good is given up, and its key and recipient with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_given_up_keeps_nothing() {
    let Site {
        smtp,
        _env,
        server,
        host,
        public,
        db,
    } = Site::open().await;
    let (c, token) = saved_part_way(&server, &host, &public).await;
    smtp.refuse_next_for_good();
    let (status, page) = send_link(&c, &server, &host, &public, &token, "nobody@example.jp").await;
    assert_eq!(status, 200, "{page}");
    let row = link_mail_once(
        &db,
        "SELECT next_attempt_at = 'infinity', length(payload) FROM outbox WHERE kind = 'resume'",
    )
    .await;
    assert_eq!(row, (true, 0), "given up, payload length");
}

/// One municipality mails a bounded number of links a day, whatever the addresses:
/// the form is not a way to send mail in bulk. Past it, the refusal says what to do
/// and the draft stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_mails_a_bounded_number_of_links_a_day() {
    use madoguchi::tenant::forms::resume::LINKS_PER_DAY;
    let Site {
        smtp,
        _env,
        server,
        host,
        public,
        db,
    } = Site::open().await;
    let host = host.as_str();
    // The day's link mails so far, one short of the ceiling, each to its own address
    // (as the service keeps them: sent, a recipient's blind index for a day).
    db.execute(
        "INSERT INTO outbox (kind, payload, sent_at, recipient_index)
         SELECT 'resume', ''::bytea, now(), sha256(g::text::bytea) FROM generate_series(2, $1::bigint) g",
        &[&LINKS_PER_DAY],
    )
    .await
    .unwrap();
    let (c, token) = saved_part_way(&server, host, &public).await;
    let (status, page) = send_link(&c, &server, host, &public, &token, "taro@example.jp").await;
    assert_eq!(status, 200, "{page}");
    smtp.wait_for(1).await;
    let (status, page) = send_link(&c, &server, host, &public, &token, "jiro@example.jp").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("本日この自治体から送れるリンクの数が上限に達しました"),
        "{page}"
    );
    // A day later the oldest no longer count.
    db.execute(
        "UPDATE outbox SET created_at = now() - interval '25 hours' WHERE payload = ''::bytea AND kind = 'resume' AND id < (SELECT max(id) - 10 FROM outbox)",
        &[],
    )
    .await
    .unwrap();
    let (status, page) = send_link(&c, &server, host, &public, &token, "jiro@example.jp").await;
    assert_eq!(status, 200, "{page}");
}
