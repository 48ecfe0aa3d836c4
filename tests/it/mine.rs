//! 申請一覧: a citizen asks for a link by mail (through a real SMTP exchange) to the
//! address they applied with, opens it, and sees every application sent with that
//! address, and no other; nobody learns from asking whether an address applied.

use madoguchi::tenant::staff::Role;

use crate::forms::{
    apply_with, browser, browser_from, build_form, capture, dept_id, fill_in_as, get, post,
    post_from, send, staff,
};
use crate::harness::{unique, url, TestEnv};
use crate::mail::relay;
use crate::smtp::SmtpServer;

const HANAKO: &str = "hanako.kasai@example.jp";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applicants_see_their_applications_by_a_mailed_link() {
    let smtp = SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| s.mail = Some(relay(&relay_url))).await;
    let t = env.tenant(&unique("my"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let host = host.as_str();
    let u = |p: &str| url(&server, host, p);
    let origin = u("");
    let origin = origin.trim_end_matches('/');
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;

    // Hanako applied twice; somebody else once.
    let first = apply_with(&browser(&server, &[host]), &server, host, &public, "ソファ")
        .await
        .unwrap();
    let second = apply_with(&browser(&server, &[host]), &server, host, &public, "その他")
        .await
        .unwrap();
    let c = browser(&server, &[host]);
    let token = fill_in_as(&c, &server, host, &public, "ソファ", "taro.sato@example.jp")
        .await
        .unwrap();
    let others = send(&c, &server, host, &public, &token).await.unwrap();
    smtp.wait_for(3).await;

    // From the home page and the status page.
    let (_, _, home) = get(&c, &u("/")).await;
    assert!(home.contains(r#"href="/my""#), "{home}");
    let (_, _, status_page) = get(&c, &u("/status")).await;
    assert!(status_page.contains(r#"href="/my""#), "{status_page}");

    // A mistyped address is refused in Japanese.
    let phone = browser_from(&server, &[host], 3);
    let (status, _, page) = get(&phone, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(page.contains("リンクを受け取る"), "{page}");
    let (status, _, page) = post(&phone, &u("/my"), &[("email", " ")]).await;
    assert_eq!(status, 422);
    assert!(page.contains("メールアドレスを入力してください"), "{page}");
    let (status, _, page) = post(&phone, &u("/my"), &[("email", "hanako.kasai")]).await;
    assert_eq!(status, 422);
    assert!(
        page.contains("メールアドレスの形式が正しくありません"),
        "{page}"
    );

    // The same answer for an address that applied (typed in full width) and one
    // that did not: only the address differs.
    let (status, _, asked) = post(
        &phone,
        &u("/my"),
        &[("email", "ＨＡＮＡＫＯ．ＫＡＳＡＩ＠ＥＸＡＭＰＬＥ．ＪＰ")],
    )
    .await;
    assert_eq!(status, 200, "{asked}");
    assert!(asked.contains("メールをお送りしました"), "{asked}");
    let (status, _, stranger) = post(&phone, &u("/my"), &[("email", "jiro@example.jp")]).await;
    assert_eq!(status, 200);
    let typed = capture(r"<p>(\S+@\S+) あてに", &asked);
    assert_eq!(
        asked.replace(&typed, "@"),
        stranger.replace("jiro@example.jp", "@"),
        "the answers tell the addresses apart"
    );

    // The mails: a link to one, word that none was sent with it to the other;
    // nothing of any application in either.
    let mails = smtp.wait_for(5).await;
    let to = |who: &str| {
        mails[3..]
            .iter()
            .find(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(who)))
            .unwrap_or_else(|| panic!("no mail to {who}"))
            .clone()
    };
    let mail = to(HANAKO);
    assert_eq!(mail.header("Subject"), "【千代田区】申請一覧のご案内");
    let body = mail.body();
    let link = capture(r"(https?://\S+/my/open/\S+)", &body);
    assert!(link.starts_with(&u("/my/open/")), "{link}");
    assert!(body.contains("有効期限: "), "{body}");
    let none = to("jiro@example.jp").body();
    assert!(none.contains("見つかりませんでした"), "{none}");
    assert!(!none.contains("/my/open/"), "{none}");
    for b in [&body, &none] {
        for r in [&first, &second, &others] {
            assert!(!b.contains(r.as_str()), "{b}");
        }
    }
    // Only the address that applied has a link waiting.
    let waiting: i64 = db
        .query_one(
            "SELECT count(*) FROM citizen_sign_ins WHERE expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 1);

    // The link's page changes nothing (mail scanners fetch links) and tells only its
    // origin to what it loads.
    let pc = browser_from(&server, &[host], 4);
    for _ in 0..2 {
        let r = pc.get(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["referrer-policy"], "strict-origin");
        let page = r.text().await.unwrap();
        assert!(page.contains("申請一覧を開く"), "{page}");
    }
    let (status, _, page) = get(&pc, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(page.contains("リンクを受け取る"), "{page}");
    assert!(!page.contains(&first), "{page}");
    // Its button, from another site or from nowhere said, is refused.
    for from in [Some("https://evil.example"), None] {
        let (status, _, _) = post_from(&pc, &link, from, &[]).await;
        assert_eq!(status, 403, "{from:?}");
    }

    // Opened: a session for `/my` only, and the list of Hanako's applications.
    let r = crate::forms::send_form(&pc, &link, Some(origin), &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/my");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("md_my="), "{cookie}");
    assert!(
        cookie.contains("Path=/my; HttpOnly; SameSite=Lax; Max-Age=1800"),
        "{cookie}"
    );
    let (status, _, list) = get(&pc, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(list.contains(r#"id="applications""#), "{list}");
    for r in [&first, &second] {
        assert!(list.contains(r.as_str()), "{r} not listed: {list}");
    }
    assert!(!list.contains(&others), "{list}");
    assert!(list.contains("粗大ごみ収集申込"), "{list}");
    assert!(list.contains("<strong>受付</strong>"), "{list}");
    // Newest first.
    assert!(list.find(&second) < list.find(&first), "{list}");
    // The link works once: in another browser it is spent at once, its page too...
    let phone = browser_from(&server, &[host], 5);
    let (status, _, page) = get(&phone, &link).await;
    assert_eq!(status, 404, "{page}");
    let (status, _, page) = post_from(&phone, &link, Some(origin), &[]).await;
    assert_eq!(status, 404);
    assert!(page.contains("このリンクは使えません"), "{page}");
    // A claim of its own (as another link's page would give it) does not help.
    let r = phone
        .post(&link)
        .header("origin", origin)
        .header(
            "cookie",
            "md_my_claim=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // ...while the browser that opened it may press again for a short while (its
    // first answer lost on the way): a new session in place of the first.
    let (status, _, page) = get(&pc, &link).await;
    assert_eq!(status, 200);
    assert!(page.contains("もう一度押せます"), "{page}");
    let r = crate::forms::send_form(&pc, &link, Some(origin), &[]).await;
    assert_eq!(r.status(), 303);
    let again = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(again.starts_with("md_my=") && again != cookie, "{again}");
    let (_, _, list) = get(&pc, &u("/my")).await;
    assert!(list.contains(&first), "{list}");
    let sessions: i64 = db
        .query_one(
            "SELECT count(*) FROM citizen_sign_ins WHERE session_hash IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 1);
    // The first press's session is gone.
    let first_session = cookie.split(';').next().unwrap().to_owned();
    let r = crate::forms::browser(&server, &[host])
        .get(u("/my"))
        .header("cookie", &first_session)
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(
        page.contains("リンクを受け取る") && !page.contains(&first),
        "{page}"
    );
    // Past the window, in none.
    db.execute(
        "UPDATE citizen_sign_ins SET opened_at = opened_at - make_interval(secs => $1::float8 + 1)",
        &[&madoguchi::tenant::mine::SECOND_PRESS_SECS],
    )
    .await
    .unwrap();
    let (status, _, page) = post_from(&pc, &link, Some(origin), &[]).await;
    assert_eq!(status, 404);
    assert!(page.contains("このリンクは使えません"), "{page}");
    let (_, _, list) = get(&pc, &u("/my")).await;
    assert!(list.contains(&first), "the session still stands: {list}");
    // Logged as the citizen's, with how many applications it listed.
    let logged: Vec<(String, serde_json::Value)> = db
        .query(
            "SELECT actor, detail::jsonb FROM audit_log WHERE action = 'status.sign_in' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[0].0, "citizen", "{logged:?}");
    assert_eq!(
        (&logged[0].1["again"], &logged[1].1["again"]),
        (&serde_json::json!(false), &serde_json::json!(true)),
        "{logged:?}"
    );
    assert_eq!(logged[0].1["applications"], 2, "{logged:?}");
    assert_eq!(
        logged[0].1["receipts"],
        serde_json::json!([second, first]),
        "{logged:?}"
    );

    // 詳しく見る: the status page of that application, with what it can do there.
    let email = capture(r#"name="email" value="([^"]+)""#, &list);
    let (status, _, detail) = post_from(
        &pc,
        &u("/status"),
        Some(origin),
        &[("receipt", &second), ("email", &email)],
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert!(detail.contains(&format!("受付番号 {second}")), "{detail}");
    assert!(detail.contains(r#"id="withdraw""#), "{detail}");

    // A status that changes shows in the list.
    let (status, _, _) = post_from(
        &pc,
        &u("/status/withdraw"),
        Some(origin),
        &[("receipt", &second), ("email", &email), ("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, list) = get(&pc, &u("/my")).await;
    assert!(list.contains("<strong>取下げ</strong>"), "{list}");
    // A correction asked for (差戻し) stands out.
    let first_id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM submissions WHERE receipt_number = $1",
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    let case = u(&format!("/admin/submissions/{first_id}/status"));
    for step in [
        vec![("from", "received"), ("to", "reviewing")],
        vec![
            ("from", "reviewing"),
            ("to", "returned"),
            ("reason", "品目の点数を記入してください"),
            ("deadline", "2031-08-31"),
        ],
    ] {
        let mut form = vec![("csrf", admin.csrf.as_str())];
        form.extend(step);
        let (status, _, body) = post(&admin.client, &case, &form).await;
        assert_eq!(status, 303, "{body}");
    }
    let (_, _, list) = get(&pc, &u("/my")).await;
    assert!(
        list.contains(r#"<li class="returned">"#) && list.contains("修正をお願いしています"),
        "{list}"
    );

    // Another browser sees no list; signing out (from this site only) ends this one.
    let (status, _, page) = get(&phone, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(page.contains("リンクを受け取る"), "{page}");
    assert!(!page.contains(&first), "{page}");
    for from in [Some("https://evil.example"), None] {
        let (status, _, _) = post_from(&pc, &u("/my/sign-out"), from, &[]).await;
        assert_eq!(status, 403, "{from:?}");
    }
    let (status, _, page) = post_from(&pc, &u("/my/sign-out"), Some(origin), &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("申請一覧を閉じました"), "{page}");
    let (status, _, page) = get(&pc, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(page.contains("リンクを受け取る"), "{page}");
    assert!(!page.contains(&first), "{page}");
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM citizen_sign_ins WHERE opened_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the session was kept");

    // A link unopened for 30 minutes no longer opens; a session ends by itself;
    // both are deleted by the daily housekeeping.
    let (status, _, _) = post_from(&pc, &u("/my"), Some(origin), &[("email", HANAKO)]).await;
    assert_eq!(status, 200);
    let late = link_in(&smtp, &[&link]).await;
    db.execute(
        "UPDATE citizen_sign_ins SET expires_at = now() - interval '1 second' WHERE opened_at IS NULL",
        &[],
    )
    .await
    .unwrap();
    let (status, _, page) = get(&pc, &late).await;
    assert_eq!(status, 404);
    assert!(page.contains("このリンクは使えません"), "{page}");
    let (status, _, _) = post_from(&pc, &late, Some(origin), &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = post_from(&pc, &u("/my"), Some(origin), &[("email", HANAKO)]).await;
    assert_eq!(status, 200);
    let again = link_in(&smtp, &[&link, &late]).await;
    let (status, _, _) = post_from(&pc, &again, Some(origin), &[]).await;
    assert_eq!(status, 303);
    let (_, _, list) = get(&pc, &u("/my")).await;
    assert!(list.contains(&first), "{list}");
    db.execute(
        "UPDATE citizen_sign_ins SET expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let (status, _, page) = get(&pc, &u("/my")).await;
    assert_eq!(status, 200);
    assert!(!page.contains(&first), "{page}");
    assert!(page.contains("リンクを受け取る"), "{page}");
    madoguchi::tenant::forms::citizen::purge_expired_drafts(&db)
        .await
        .unwrap();
    let left: i64 = db
        .query_one("SELECT count(*) FROM citizen_sign_ins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "what ended was kept");

    // Another site's page cannot make the city mail anyone.
    let (status, _, _) = post_from(
        &phone,
        &u("/my"),
        Some("https://evil.example"),
        &[("email", "jiro@example.jp")],
    )
    .await;
    assert_eq!(status, 403);

    // A mailbox is sent 5 such mails a day, whether or not it applied, and
    // however it is written: Hanako has had 3, the stranger 1.
    let phone = browser_from(&server, &[host], 5);
    for email in ["Hanako.Kasai+list@example.jp", HANAKO] {
        let (status, _, page) = post(&phone, &u("/my"), &[("email", email)]).await;
        assert_eq!(status, 200, "{page}");
    }
    let (status, _, hanako_full) = post(&phone, &u("/my"), &[("email", HANAKO)]).await;
    assert_eq!(status, 422);
    assert!(hanako_full.contains("24時間に5通まで"), "{hanako_full}");
    assert!(!hanako_full.contains("aria-invalid"), "{hanako_full}");
    let phone = browser_from(&server, &[host], 6);
    for _ in 0..4 {
        let (status, _, page) = post(&phone, &u("/my"), &[("email", "jiro@example.jp")]).await;
        assert_eq!(status, 200, "{page}");
    }
    let (status, _, jiro_full) = post(&phone, &u("/my"), &[("email", "jiro@example.jp")]).await;
    assert_eq!(status, 422);
    assert_eq!(
        hanako_full.replace(HANAKO, "@"),
        jiro_full.replace("jiro@example.jp", "@"),
        "the refusals tell the addresses apart"
    );
}

/// A 申請一覧 link mailed other than those `seen`, once it has arrived (20 s at most).
async fn link_in(smtp: &SmtpServer, seen: &[&str]) -> String {
    for _ in 0..200 {
        let new = smtp
            .received()
            .iter()
            .filter(|m| m.body().contains("/my/open/"))
            .map(|m| capture(r"(https?://\S+/my/open/\S+)", &m.body()))
            .find(|l| !seen.contains(&l.as_str()));
        if let Some(link) = new {
            return link;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no new link arrived");
}

/// Without mail there is no 申請一覧: the status lookup is where to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mail_the_status_lookup_is_offered_instead() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("mn"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let c = browser(&server, &[host]);
    let (status, loc, _) = get(&c, &u("/my")).await;
    assert_eq!((status, loc.as_str()), (303, "/status"));
    let (status, loc, _) = post(&c, &u("/my"), &[("email", HANAKO)]).await;
    assert_eq!((status, loc.as_str()), (303, "/status"));
    for page in ["/", "/status"] {
        let (status, _, body) = get(&c, &u(page)).await;
        assert_eq!(status, 200);
        assert!(!body.contains(r#"href="/my""#), "{page}: {body}");
    }
    server.shutdown().await;
}
