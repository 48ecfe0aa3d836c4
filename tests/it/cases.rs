//! Case processing: inbox, workflow, permissions, exports, the operation log and the
//! citizen's status lookup.

use std::sync::Arc;

use madoguchi::catalog::TenantRecord;
use madoguchi::front::Server;
use madoguchi::tenant::audit::{Actor, Verdict};
use madoguchi::tenant::cases::{change_status, Change, Refusal, Status};
use madoguchi::tenant::staff::Role;
use uuid::Uuid;

use crate::forms::{
    apply, browser, build_form, capture, dept_id, get, post, post_from, staff, Staff,
};
use crate::harness::{unique, url, TestEnv};

/// A one-page form with free text, imported as an operator would; returns its public path.
async fn text_form(env: &TestEnv, t: &TenantRecord, dept: &str) -> String {
    let json = r#"{ "format": "madoguchi.form/1", "title": "ご意見募集", "pages": [ { "id": "p1", "fields": [
        { "id": "name", "type": "text", "label": "お名前", "required": true },
        { "id": "email", "type": "email", "label": "メールアドレス", "required": true },
        { "id": "phone", "type": "tel", "label": "電話番号" },
        { "id": "opinion", "type": "textarea", "label": "ご意見", "required": true },
        { "id": "topic", "type": "choice", "label": "分野", "options": ["子育て", "ごみ", "道路"], "required": true },
        { "id": "age", "type": "number", "label": "年齢", "unit": "歳", "integer": true }
    ] } ] }"#;
    madoguchi::control::tenant_admin::import_form(&env.platform, t, json, dept, true)
        .await
        .unwrap()
}

/// A citizen sends a one-page form with the given inputs; returns the receipt number.
async fn submit(server: &Server, host: &str, public: &str, fields: &[(&str, &str)]) -> String {
    let c = browser(server, &[host]);
    let (_, _, page) = get(&c, &url(server, host, public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let mut form = vec![("_token", token.as_str()), ("_page", "0"), ("_nav", "next")];
    form.extend_from_slice(fields);
    let (status, loc, body) = post(&c, &url(server, host, public), &form).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("/confirm"));
    let (status, loc, _) = post(
        &c,
        &url(server, host, &format!("{public}/submit")),
        &[("_token", &token)],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, done) = get(&c, &url(server, host, &loc)).await;
    capture(r#"id="receipt">([0-9A-Z-]+)<"#, &done)
}

async fn id_of(env: &TestEnv, t: &TenantRecord, receipt: &str) -> Uuid {
    env.tenant_conn(t)
        .await
        .client
        .query_one(
            "SELECT id FROM submissions WHERE receipt_number = $1",
            &[&receipt],
        )
        .await
        .unwrap()
        .get(0)
}

struct Setup {
    env: TestEnv,
    t: TenantRecord,
    server: Server,
    host: String,
    admin: Staff,
    dept: String,
}

async fn setup() -> Setup {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    }
}

/// 自分の操作ログ: a member of staff reads and downloads their own entries and no
/// one else's, whatever they ask; administrators read everyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_read_their_own_operation_log() {
    let s = setup().await;
    let u = |p: &str| url(&s.server, &s.host, p);
    let member = staff(&s.env, &s.server, &s.t, Role::Staff, Some("環境政策課")).await;
    let other = staff(&s.env, &s.server, &s.t, Role::Staff, Some("環境政策課")).await;
    let (status, _, page) = get(&member.client, &u("/admin/audit")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<h1>自分の操作ログ"), "{page}");
    assert!(page.contains(r#"aria-current="page">自分の操作ログ</a>"#));
    assert!(
        page.contains(&member.email) && page.contains("staff.setup"),
        "{page}"
    );
    for someone in [&other.email, &s.admin.email] {
        assert!(!page.contains(someone.as_str()), "{someone} shown: {page}");
    }
    assert!(!page.contains("保存期間"), "the retention setting: {page}");
    // Asking for someone else's changes nothing.
    let (_, _, page) = get(
        &member.client,
        &u(&format!("/admin/audit?actor={}", s.admin.email)),
    )
    .await;
    assert!(
        page.contains(&member.email) && !page.contains(&s.admin.email),
        "{page}"
    );
    let csv = get(&member.client, &u("/admin/audit.csv")).await.2;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{csv}");
    assert!(rows.iter().all(|r| r.contains(&member.email)), "{csv}");
    let (status, _, _) = post(
        &member.client,
        &u("/admin/audit/retention"),
        &[("csrf", member.csrf.as_str()), ("days", "30")],
    )
    .await;
    assert_eq!(status, 403);
    // An administrator reads everyone's, the member's download among them.
    let (_, _, page) = get(&s.admin.client, &u("/admin/audit")).await;
    assert!(page.contains("<h1>操作ログ"), "{page}");
    for someone in [&member.email, &other.email, &s.admin.email] {
        assert!(page.contains(someone.as_str()), "{someone} missing: {page}");
    }
    let db = s.env.tenant_conn(&s.t).await;
    let export: String = db
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'audit.export' AND actor LIKE '%' || $1",
            &[&member.email],
        )
        .await
        .unwrap()
        .get(0);
    assert!(export.contains(r#""own":true"#), "{export}");
    s.server.shutdown().await;
}

/// The applicant withdraws an application from the status page: in two steps, only
/// from the municipality's own pages, only before review (受付 or 差戻し). Its place
/// of a 定員 goes back, and staff see the change in its history as the applicant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applicant_withdraws_from_the_status_page() {
    let s = setup().await;
    let (_, public) = build_form(&s.admin, &s.server, &s.host, &s.dept, "1").await;
    let receipt = apply(&s.server, &s.host, &public, "ソファ").await.unwrap();
    assert!(
        apply(&s.server, &s.host, &public, "ソファ").await.is_err(),
        "full"
    );
    let id = id_of(&s.env, &s.t, &receipt).await;
    let db = s.env.tenant_conn(&s.t).await;
    let status_of = |id: Uuid| {
        let db = &db;
        async move {
            db.client
                .query_one("SELECT status FROM submissions WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    // Three addresses, each within the lookups' burst.
    let client = |n: u8| crate::attacks::plain_from(&s.server, &[&s.host], Some(n));
    let (c, probe, reviewer) = (client(1), client(2), client(3));
    let u = |p: &str| url(&s.server, &s.host, p);
    let origin = u("");
    let origin = Some(origin.trim_end_matches('/'));
    let who = [
        ("receipt", receipt.as_str()),
        ("email", "hanako.kasai@example.jp"),
    ];
    let sure = [who[0], who[1], ("confirm", "yes")];

    // The status page offers it.
    let (_, _, page) = post_from(&c, &u("/status"), origin, &who).await;
    assert!(page.contains(r#"action="/status/withdraw""#), "{page}");
    // Not from another site's page, nor without an Origin unless the question's token
    // comes with it.
    for from in [Some("https://elsewhere.example"), None] {
        let (status, _, _) = post_from(&probe, &u("/status/withdraw"), from, &sure).await;
        assert_eq!(status, 403, "from {from:?}");
    }
    // Nor with another address: the same answer as an unknown receipt number.
    let wrong = [
        who[0],
        ("email", "someone.else@example.jp"),
        ("confirm", "yes"),
    ];
    let (status, _, page) = post_from(&probe, &u("/status/withdraw"), origin, &wrong).await;
    assert_eq!(status, 404);
    assert!(page.contains("該当する申請が見つかりません"), "{page}");
    // The first press asks and changes nothing.
    let (status, _, page) = post_from(&c, &u("/status/withdraw"), origin, &who).await;
    assert_eq!(status, 200);
    assert!(page.contains("この申請を取り下げますか"), "{page}");
    assert_eq!(status_of(id).await, "received");
    // Each step that shows the application is logged as a lookup is.
    let lookups: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'status.lookup' AND target = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lookups, 2, "the status page and the question");
    // A browser that sends no Origin confirms with the question's token; another
    // site cannot use it, and no other token does.
    let token = capture(r#"name="token" value="([0-9a-f]+)""#, &page);
    let foreign = Some("https://elsewhere.example");
    let withdraw = u("/status/withdraw");
    let stranger = client(5);
    let with = |email: &'static str, t: &str| {
        [
            ("receipt", receipt.clone()),
            ("email", email.to_owned()),
            ("confirm", "yes".to_owned()),
            ("token", t.to_owned()),
        ]
    };
    let send = |from: Option<&'static str>, form: [(&'static str, String); 4]| {
        let (stranger, withdraw) = (&stranger, &withdraw);
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_from(stranger, withdraw, from, &pairs).await.0
        }
    };
    let mine = "hanako.kasai@example.jp";
    assert_eq!(send(foreign, with(mine, &token)).await, 403);
    assert_eq!(send(None, with(mine, "00ff")).await, 403);
    assert_eq!(
        send(None, with("hanako.kasai+x@example.jp", &token)).await,
        403,
        "a token for another address"
    );
    assert_eq!(status_of(id).await, "received");
    // The confirmation withdraws it (here from the browser without Origin).
    let confirmed = with(mine, &token);
    let confirmed: Vec<(&str, &str)> = confirmed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, page) = post_from(&c, &withdraw, None, &confirmed).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("申請を取り下げました"), "{page}");
    assert!(
        page.contains(r#"<strong id="status">取下げ</strong>"#),
        "{page}"
    );
    assert!(
        !page.contains(r#"action="/status/withdraw""#),
        "offered again"
    );
    assert_eq!(status_of(id).await, "withdrawn");
    let (by, to): (String, String) = {
        let r = db
            .client
            .query_one(
                "SELECT actor_label, to_status FROM submission_events WHERE submission_id = $1 ORDER BY id DESC LIMIT 1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((by.as_str(), to.as_str()), ("citizen", "withdrawn"));
    // Its place of the 定員 is free again.
    let second = apply(&s.server, &s.host, &public, "ソファ").await.unwrap();
    // Withdrawn already: a second confirmation changes nothing and says so.
    let (status, _, page) = post_from(&c, &u("/status/withdraw"), origin, &sure).await;
    assert_eq!(status, 409);
    assert!(page.contains("オンラインで取り下げられません"), "{page}");

    // Under review: not here; the page says whom to ask.
    let second_id = id_of(&s.env, &s.t, &second).await;
    let (status, _, _) = post(
        &s.admin.client,
        &u(&format!("/admin/submissions/{second_id}/status")),
        &[
            ("csrf", s.admin.csrf.as_str()),
            ("from", "received"),
            ("to", "reviewing"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let who = [
        ("receipt", second.as_str()),
        ("email", "hanako.kasai@example.jp"),
    ];
    let (_, _, page) = post_from(&reviewer, &u("/status"), origin, &who).await;
    assert!(!page.contains(r#"action="/status/withdraw""#), "{page}");
    assert!(page.contains("審査中の申請を取り下げるときは"), "{page}");
    let sure = [who[0], who[1], ("confirm", "yes")];
    let (status, _, _) = post_from(&reviewer, &u("/status/withdraw"), origin, &sure).await;
    assert_eq!(status, 409);
    assert_eq!(status_of(second_id).await, "reviewing");

    // Withdrawing shares the lookups' rate limit: guessing receipt numbers there is
    // no faster than on the status page.
    let guesser = client(4);
    let guess = [
        ("receipt", "AAAA-AAAA"),
        ("email", "hanako.kasai@example.jp"),
    ];
    let mut answers = Vec::new();
    for _ in 0..=madoguchi::tenant::status::LOOKUP_BURST {
        answers.push(
            post_from(&guesser, &u("/status/withdraw"), origin, &guess)
                .await
                .0,
        );
    }
    let (last, first) = answers.split_last().unwrap();
    assert!(first.iter().all(|s| *s == 404), "{answers:?}");
    assert_eq!(*last, 429, "{answers:?}");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_through_the_admin_screen_and_the_status_lookup() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    let host = host.as_str();
    let (form_id, public) = build_form(&admin, &server, host, &dept, "").await;
    let receipt = apply(&server, host, &public, "ソファ").await.unwrap();
    let id = id_of(&env, &t, &receipt).await;
    let case = url(&server, host, &format!("/admin/submissions/{id}"));
    // The inbox's summary column shows the answer chosen per form.
    post(
        &admin.client,
        &url(&server, host, &format!("/admin/forms/{form_id}/settings")),
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("department", &dept),
            ("summary_field", "email"),
        ],
    )
    .await;
    let (_, _, inbox) = get(&admin.client, &url(&server, host, "/admin/inbox")).await;
    assert!(
        inbox.contains("<td>hanako.kasai@example.jp</td>"),
        "summary column: {}",
        &inbox[inbox.find("<tbody>").unwrap_or(0)..]
    );
    // A summary field this case did not answer (shown only for その他): an empty
    // cell, not a failed inbox. (The draft renamed meanwhile, unpublished: the inbox
    // keeps the published title.)
    post(
        &admin.client,
        &url(&server, host, &format!("/admin/forms/{form_id}/settings")),
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込（改訂中）"),
            ("department", &dept),
            ("summary_field", "other"),
        ],
    )
    .await;
    let (status, _, inbox) = get(&admin.client, &url(&server, host, "/admin/inbox")).await;
    assert_eq!(status, 200, "{inbox}");
    assert!(inbox.contains(&receipt), "{inbox}");
    assert!(
        inbox.contains("<td>粗大ごみ収集申込</td>")
            && !inbox.contains("<td>粗大ごみ収集申込（改訂中）</td>"),
        "{inbox}"
    );
    // Staff are told which export Excel reads without changing answers.
    assert!(
        inbox.contains("Excel で開くときは Excel（XLSX）を使ってください"),
        "{inbox}"
    );

    // The inbox lists it; the detail shows every answer with the version's labels.
    let (_, _, inbox) = get(&admin.client, &url(&server, host, "/admin/inbox")).await;
    assert!(inbox.contains(&receipt) && inbox.contains("受付"));
    let (status, _, detail) = get(&admin.client, &case).await;
    assert_eq!(status, 200);
    assert!(
        detail.contains("葛\u{E0100}西")
            && detail.contains("hanako.kasai@example.jp")
            && detail.contains("令和13年7月19日")
    );

    // 受付 -> 完了 is refused; 受付 -> 審査中 -> 差戻し with reason and deadline works.
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "received"),
            ("to", "completed"),
        ],
    )
    .await;
    assert_eq!(status, 409);
    assert!(page.contains("「受付」から「完了」には変更できません"));
    let (status, _, _) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "received"),
            ("to", "reviewing"),
            ("comment", "書類確認中"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "reviewing"),
            ("to", "returned"),
        ],
    )
    .await;
    assert_eq!(status, 409, "a return without reason was accepted");
    assert!(page.contains("理由と期限が必要"));
    // A deadline already past would leave the applicant no way to correct.
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "reviewing"),
            ("to", "returned"),
            ("reason", "品目の点数を記入してください"),
            ("deadline", "2020-01-31"),
        ],
    )
    .await;
    assert_eq!(status, 409, "a past deadline was accepted");
    assert!(page.contains("今日以降の日付"), "{page}");
    let (status, _, _) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "reviewing"),
            ("to", "returned"),
            ("reason", "品目の点数を記入してください"),
            ("deadline", "2031-08-31"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    // A stale form (status seen before the change) is refused, not applied twice.
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "reviewing"),
            ("to", "withdrawn"),
        ],
    )
    .await;
    assert_eq!(status, 409);
    assert!(page.contains("他の職員が先に状態を変更しました"));
    let (_, _, detail) = get(&admin.client, &case).await;
    assert!(detail.contains("書類確認中") && detail.contains("品目の点数を記入してください"));

    // A message to the applicant goes to the outbox in the same transaction.
    post(
        &admin.client,
        &format!("{case}/notes"),
        &[
            ("csrf", &admin.csrf),
            ("kind", "message"),
            ("body", "お電話でもご連絡しました。"),
        ],
    )
    .await;
    post(
        &admin.client,
        &format!("{case}/notes"),
        &[
            ("csrf", &admin.csrf),
            ("kind", "comment"),
            ("body", "内部メモ: 要確認"),
        ],
    )
    .await;
    let db = env.tenant_conn(&t).await;
    let outbox: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM outbox WHERE submission_id = $1 AND kind = 'mail'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        outbox, 2,
        "the return and the message are both queued for mail"
    );

    // The citizen looks it up: status, reason and messages; never the answers or comments.
    let citizen = browser(&server, &[host]);
    let status_url = url(&server, host, "/status");
    let (status, _, page) = post(
        &citizen,
        &status_url,
        &[
            ("receipt", &receipt.to_lowercase().replace('-', "")),
            ("email", "taro@example.jp"),
        ],
    )
    .await;
    assert_eq!(status, 404, "another address");
    assert!(page.contains("該当する申請が見つかりません"));
    // Found whatever the case the address is typed in (a phone keyboard capitalises
    // its first letter).
    let (status, _, page) = post(
        &citizen,
        &status_url,
        &[
            ("receipt", &receipt.to_lowercase().replace('-', "")),
            ("email", "Hanako.Kasai@EXAMPLE.JP"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("差戻し")
            && page.contains("品目の点数を記入してください")
            && page.contains("お電話でもご連絡しました")
    );
    assert!(
        !page.contains("葛\u{E0100}西")
            && !page.contains("内部メモ")
            && !page.contains("2031-07-19")
            && !page.contains("令和13年7月19日")
    );

    // The form closes meanwhile: new applications are refused, the correction is not.
    post(
        &admin.client,
        &url(&server, host, &format!("/admin/forms/{form_id}/close")),
        &[("csrf", &admin.csrf), ("action", "close")],
    )
    .await;
    let (_, _, closed) = get(&browser(&server, &[host]), &url(&server, host, &public)).await;
    assert!(closed.contains("受付を停止しています"));
    // Past the deadline for the correction (the day before, in Japan), the status
    // page says so and offers no correction; the correction itself is refused.
    let set_deadline = |days: i64| {
        let (env, t, id) = (&env, &t, id);
        async move {
            env.tenant_conn(t)
                .await
                .client
                .execute(
                    "UPDATE submissions SET return_deadline = (now() AT TIME ZONE 'Asia/Tokyo')::date + $2::int WHERE id = $1",
                    &[&id, &(days as i32)],
                )
                .await
                .unwrap()
        }
    };
    set_deadline(-1).await;
    let lookup = [
        ("receipt", receipt.as_str()),
        ("email", "hanako.kasai@example.jp"),
    ];
    let (_, _, page) = post(&citizen, &status_url, &lookup).await;
    assert!(
        page.contains("id=\"late\"") && !page.contains("/status/resubmit"),
        "{page}"
    );
    let (status, _, page) = post(&citizen, &url(&server, host, "/status/resubmit"), &lookup).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("修正の期限"), "{page}");
    // The deadline day itself still counts.
    set_deadline(0).await;
    // Corrected and sent again: back to 受付, same receipt, new answers.
    let (status, loc, _) = post(
        &citizen,
        &url(&server, host, "/status/resubmit"),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, form) = get(&citizen, &url(&server, host, &loc)).await;
    assert!(
        form.contains("value=\"花子\""),
        "earlier answers are filled in"
    );
    assert!(
        form.contains(r#"name="_correction" value="1""#),
        "a correction's page says so"
    );
    let token = capture(r#"name="_token" value="([^"]+)""#, &form);
    // A correction left past the draft's 24 hours does not become a new
    // application when its page is sent: the person is sent back to the lookup.
    let correction_page = [
        ("_token", token.as_str()),
        ("_page", "0"),
        ("_nav", "next"),
        ("name.family", "葛西"),
        ("name.given", "花子"),
        ("name.family_kana", "カサイ"),
        ("name.given_kana", "ハナコ"),
        ("email", "hanako.kasai@example.jp"),
        ("kind", "その他"),
        ("other", "ソファ 2点"),
    ];
    let set_closed = |action: &'static str| {
        let (client, csrf) = (&admin.client, admin.csrf.as_str());
        let u = url(&server, host, &format!("/admin/forms/{form_id}/close"));
        async move { post(client, &u, &[("csrf", csrf), ("action", action)]).await }
    };
    set_closed("reopen").await;
    let drafts = env.tenant_conn(&t).await;
    drafts
        .client
        .execute(
            "UPDATE citizen_drafts SET expires_at = now() - interval '1 second' WHERE resubmit_of IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let (status, _, page) = post(&citizen, &url(&server, host, &loc), &correction_page).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("状況照会"), "{page}");
    let stored: i64 = drafts
        .client
        .query_one("SELECT count(*) FROM citizen_drafts WHERE resubmit_of IS NULL AND submission_id IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "the correction became a plain draft");
    set_closed("close").await;
    // (Its time given back, the correction goes on below.)
    drafts
        .client
        .execute(
            "UPDATE citizen_drafts SET expires_at = now() + interval '1 hour' WHERE resubmit_of IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let next = post(
        &citizen,
        &url(&server, host, &loc),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_nav", "next"),
            ("name.family", "葛西"),
            ("name.given", "花子"),
            ("name.family_kana", "カサイ"),
            ("name.given_kana", "ハナコ"),
            ("email", "hanako.kasai@example.jp"),
            ("kind", "その他"),
            ("other", "ソファ 2点"),
        ],
    )
    .await;
    assert_eq!(next.0, 303);
    post(
        &citizen,
        &url(&server, host, &loc),
        &[
            ("_token", &token),
            ("_page", "1"),
            ("_nav", "next"),
            ("date", "2031-08-20"),
        ],
    )
    .await;
    // The same correction opened in a second browser before the first sends it
    // (after the lookup limit gives one more: this address has used its burst).
    tokio::time::sleep(std::time::Duration::from_secs(
        madoguchi::tenant::status::LOOKUP_EVERY_SECS,
    ))
    .await;
    let other_browser = crate::forms::browser(&server, &[host]);
    let (status, other_loc, _) = post(
        &other_browser,
        &url(&server, host, "/status/resubmit"),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, other_form) = get(&other_browser, &url(&server, host, &other_loc)).await;
    let other_token = capture(r#"name="_token" value="([^"]+)""#, &other_form);
    // A double tap: both sends wait on the application's row (held here); one
    // stores the correction, and the other gets the same 受付 page, not a refusal.
    let hold = env.tenant_conn(&t).await;
    hold.client.batch_execute("BEGIN").await.unwrap();
    hold.client
        .query("SELECT 1 FROM submissions WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();
    let submit_url = url(&server, host, &format!("{loc}/submit"));
    let tap = [("_token", token.as_str())];
    let send = || post(&citizen, &submit_url, &tap);
    let (taps, ()) = tokio::join!(async { tokio::join!(send(), send()) }, async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        hold.client.batch_execute("COMMIT").await.unwrap();
    });
    let ((first, done, first_page), (second, second_done, second_page)) = taps;
    assert_eq!((first, second), (303, 303), "{first_page}{second_page}");
    assert_eq!(done, second_done);
    let (_, _, page) = get(&citizen, &url(&server, host, &done)).await;
    assert!(page.contains(&receipt), "the same receipt number");
    let row = db
        .client
        .query_one(
            "SELECT status, (SELECT count(*) FROM submissions) FROM submissions WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("received".to_owned(), 1)
    );
    let (_, _, detail) = get(&admin.client, &case).await;
    assert!(detail.contains("ソファ 2点") && detail.contains("令和13年8月20日"));
    // Returned once more, the correction left open in the second browser (the first
    // answers) does not replace the one sent: it was closed when that was sent.
    db.client
        .execute(
            "UPDATE submissions SET status = 'returned' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (status, _, page) = post(
        &other_browser,
        &url(&server, host, &format!("{other_loc}/submit")),
        &[("_token", &other_token)],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let (_, _, detail) = get(&admin.client, &case).await;
    assert!(
        detail.contains("ソファ 2点"),
        "an older correction replaced the newer one"
    );
    assert_eq!(
        db.client
            .query_one("SELECT status FROM submissions WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get::<_, String>(0),
        "returned"
    );
    db.client
        .execute(
            "UPDATE submissions SET status = 'received' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    // The applicant gets an e-mailed copy of the first application and of the correction.
    let to = "hanako.kasai@example.jp";
    assert_eq!(
        crate::forms::receipt_mails(&env, &t, id).await,
        [
            serde_json::json!({ "template": "received", "to": to }),
            serde_json::json!({ "template": "resubmitted", "to": to })
        ]
    );

    // Every act is in the operation log, and the chain is intact.
    let actions: Vec<String> = db
        .client
        .query("SELECT action FROM audit_log ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for a in [
        "staff.setup",
        "form.create",
        "form.publish",
        "submission.view",
        "submission.status",
        "submission.message",
        "status.lookup",
        "status.resubmit_open",
        "submission.resubmit",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    assert!(
        matches!(madoguchi::tenant::audit::verify(&db.client).await.unwrap(), Verdict::Intact(n) if n as usize == actions.len())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_changes_do_not_lose_one() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    let (_, public) = build_form(&admin, &server, &host, &dept, "").await;
    let receipt = apply(&server, &host, &public, "ソファ").await.unwrap();
    let id = id_of(&env, &t, &receipt).await;
    let cipher = Arc::new(
        madoguchi::control::tenant_admin::tenant_cipher(&env.platform, &t)
            .await
            .unwrap(),
    );
    let actor = Actor::Operator;
    let mut tasks = Vec::new();
    for to in [
        Status::Reviewing,
        Status::Withdrawn,
        Status::Returned,
        Status::Reviewing,
    ] {
        let (env_db, cipher, actor) = (env.tenant_conn(&t).await, cipher.clone(), actor.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = env_db.client;
            let change = Change {
                to,
                comment: String::new(),
                reason: "理由".into(),
                deadline: Some(time::macros::date!(2031 - 01 - 01)),
                notify: false,
            };
            change_status(
                &mut client,
                &cipher,
                &actor,
                None,
                id,
                Some(Status::Received),
                &change,
            )
            .await
            .unwrap()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(from) => {
                assert_eq!(from, Status::Received);
                ok += 1;
            }
            Err(Refusal::Conflict { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        ok, 1,
        "exactly one of the concurrent changes from 受付 wins"
    );
    let db = env.tenant_conn(&t).await;
    let events: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM submission_events WHERE submission_id = $1 AND from_status IS NOT NULL",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        events, 1,
        "the history holds exactly the change that happened"
    );
    // Without an expected status, sequential changes all land, each recorded.
    let mut client = env.tenant_conn(&t).await.client;
    let now: String = db
        .client
        .query_one("SELECT status FROM submissions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    if now == "reviewing" {
        let c = Change {
            to: Status::Completed,
            comment: String::new(),
            reason: String::new(),
            deadline: None,
            notify: false,
        };
        assert!(
            change_status(&mut client, &cipher, &actor, None, id, None, &c)
                .await
                .unwrap()
                .is_ok()
        );
        let c = Change {
            to: Status::Reviewing,
            comment: String::new(),
            reason: String::new(),
            deadline: None,
            notify: false,
        };
        assert_eq!(
            change_status(&mut client, &cipher, &actor, None, id, None, &c)
                .await
                .unwrap(),
            Err(Refusal::NotAllowed {
                from: Status::Completed,
                to: Status::Reviewing
            })
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_on_cases() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    let h = host.as_str();
    let (_, public) = build_form(&admin, &server, h, &dept, "").await;
    let receipt = apply(&server, h, &public, "ソファ").await.unwrap();
    let id = id_of(&env, &t, &receipt).await;
    let case = url(&server, h, &format!("/admin/submissions/{id}"));
    let other = staff(&env, &server, &t, Role::Staff, Some("子育て支援課")).await;
    let viewer = staff(&env, &server, &t, Role::Viewer, Some("環境政策課")).await;
    let colleague = staff(&env, &server, &t, Role::Staff, Some("環境政策課")).await;

    assert_eq!(
        get(&other.client, &case).await.0,
        404,
        "another department's case is not there"
    );
    let (_, _, inbox) = get(&other.client, &url(&server, h, "/admin/inbox")).await;
    assert!(!inbox.contains(&receipt));
    let (status, _, _) = post(
        &other.client,
        &format!("{case}/status"),
        &[("csrf", &other.csrf), ("to", "reviewing")],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = get(
        &other.client,
        &url(
            &server,
            h,
            &format!("/admin/export.csv?form={}", form_of(&env, &t, id).await),
        ),
    )
    .await;
    assert_eq!(status, 404, "another department's export");

    assert_eq!(
        get(&viewer.client, &case).await.0,
        200,
        "the read-only user may read"
    );
    let (status, _, _) = post(
        &viewer.client,
        &format!("{case}/status"),
        &[("csrf", &viewer.csrf), ("to", "reviewing")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = post(
        &viewer.client,
        &format!("{case}/notes"),
        &[("csrf", &viewer.csrf), ("kind", "comment"), ("body", "x")],
    )
    .await;
    assert_eq!(status, 403);
    // Only administrators read everyone's operation log; a viewer reads their own.
    let (status, _, log) = get(&viewer.client, &url(&server, h, "/admin/audit")).await;
    assert_eq!(status, 200);
    assert!(
        log.contains("<h1>自分の操作ログ") && !log.contains(&admin.email),
        "{log}"
    );
    // The bulk form checks each row as its own page does: neither another
    // department's staff nor a read-only user changes the case that way.
    for who in [&other, &viewer] {
        let (status, _, page) = post(
            &who.client,
            &url(&server, h, "/admin/inbox/bulk"),
            &[
                ("csrf", &who.csrf),
                ("ids", &format!("{id}:received")),
                ("action", "status"),
                ("to", "reviewing"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            page.contains("0件を変更しました。1件は変更できませんでした"),
            "{page}"
        );
    }
    let status_now = || async {
        env.tenant_conn(&t)
            .await
            .client
            .query_one("SELECT status FROM submissions WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(status_now().await, "received");

    // Assignment: only to staff of the form's department.
    let other_id: i64 = env
        .tenant_conn(&t)
        .await
        .client
        .query_one("SELECT id FROM staff WHERE email = $1", &[&other.email])
        .await
        .unwrap()
        .get(0);
    let colleague_id: i64 = env
        .tenant_conn(&t)
        .await
        .client
        .query_one("SELECT id FROM staff WHERE email = $1", &[&colleague.email])
        .await
        .unwrap()
        .get(0);
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/assign"),
        &[("csrf", &admin.csrf), ("assignee", &other_id.to_string())],
    )
    .await;
    assert_eq!(status, 409);
    assert!(page.contains("所属の職員から選んで"));
    let (status, _, _) = post(
        &admin.client,
        &format!("{case}/assign"),
        &[
            ("csrf", &admin.csrf),
            ("assignee", &colleague_id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 303);
    // Bulk: status change on a selection, including one that cannot move.
    let receipt2 = apply(&server, h, &public, "ソファ").await.unwrap();
    let id2 = id_of(&env, &t, &receipt2).await;
    let (status, _, page) = post(
        &colleague.client,
        &url(&server, h, "/admin/inbox/bulk"),
        &[
            ("csrf", &colleague.csrf),
            ("ids", &format!("{id}:received")),
            ("ids", &format!("{id2}:received")),
            ("action", "status"),
            ("to", "reviewing"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("2件を変更しました"), "{page}");
    let (_, _, page) = post(
        &colleague.client,
        &url(&server, h, "/admin/inbox/bulk"),
        &[
            ("csrf", &colleague.csrf),
            ("ids", &format!("{id}:received")),
            ("ids", &format!("{id2}:received")),
            ("action", "status"),
            ("to", "reviewing"),
        ],
    )
    .await;
    assert!(page.contains("2件は変更できませんでした"));
    // A row ticked on a page drawn before someone else changed it carries the
    // status it showed, and is refused rather than changed again.
    let (_, _, page) = get(&colleague.client, &url(&server, h, "/admin/inbox")).await;
    assert!(
        page.contains(&format!("value=\"{id}:reviewing\"")),
        "{page}"
    );
    let (_, _, page) = post(
        &colleague.client,
        &url(&server, h, "/admin/inbox/bulk"),
        &[
            ("csrf", &colleague.csrf),
            ("ids", &format!("{id}:received")),
            ("action", "status"),
            ("to", "rejected"),
        ],
    )
    .await;
    assert!(
        page.contains("0件を変更しました。1件は変更できませんでした"),
        "{page}"
    );
    assert_eq!(status_now().await, "reviewing");
    // Told by mail when asked: a message on the case, queued for the applicant; the
    // page says how many were told.
    let (_, _, page) = post(
        &colleague.client,
        &url(&server, h, "/admin/inbox/bulk"),
        &[
            ("csrf", &colleague.csrf),
            ("ids", &format!("{id2}:reviewing")),
            ("action", "status"),
            ("to", "completed"),
            ("notify", "yes"),
        ],
    )
    .await;
    assert!(
        page.contains("1件を変更しました（1件の申請者にメールで知らせました）"),
        "{page}"
    );
    let db = env.tenant_conn(&t).await.client;
    let messages = |id: Uuid| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT count(*) FROM submission_notes WHERE submission_id = $1 AND kind = 'message'",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(
        (messages(id).await, messages(id2).await),
        (0, 1),
        "only the one asked for"
    );
    // The inbox filters by assignee and status, and finds by e-mail or phone exactly.
    let (_, _, page) = get(
        &colleague.client,
        &url(&server, h, &format!("/admin/inbox?assignee={colleague_id}")),
    )
    .await;
    assert!(page.contains(&receipt) && !page.contains(&receipt2));
    let (_, _, page) = get(
        &colleague.client,
        &url(&server, h, "/admin/inbox?q=Hanako.KASAI%40example.jp"),
    )
    .await;
    assert!(page.contains(&receipt) && page.contains(&receipt2));
    let (_, _, page) = get(
        &colleague.client,
        &url(&server, h, "/admin/inbox?q=nobody%40example.jp"),
    )
    .await;
    assert!(!page.contains(&receipt));
    let (_, _, page) = get(
        &colleague.client,
        &url(
            &server,
            h,
            &format!("/admin/inbox?q={}", receipt2.to_lowercase()),
        ),
    )
    .await;
    assert!(page.contains(&receipt2) && !page.contains(&format!(">{receipt}<")));
    // Moving the form to another department moves who may read its cases, and is
    // in the operation log with where it came from.
    let form_id = form_of(&env, &t, id).await;
    let childcare = dept_id(&env, &t, "子育て支援課").await;
    let (status, _, _) = post(
        &admin.client,
        &url(&server, h, &format!("/admin/forms/{form_id}/settings")),
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("department", &childcare),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&other.client, &case).await.0, 200);
    assert_eq!(get(&colleague.client, &case).await.0, 404);
    let detail: String = env
        .tenant_conn(&t)
        .await
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'form.department' AND target = $1",
            &[&format!("form:{form_id}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detail, format!("{{\"from\":{dept},\"to\":{childcare}}}"));
    // An applicant who gave no address is not told, and the page says how many.
    let db = env.tenant_conn(&t).await.client;
    db.execute(
        "UPDATE submissions SET email_index = NULL WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let (_, _, page) = post(
        &admin.client,
        &url(&server, h, "/admin/inbox/bulk"),
        &[
            ("csrf", &admin.csrf),
            ("ids", &format!("{id}:reviewing")),
            ("action", "status"),
            ("to", "completed"),
            ("notify", "yes"),
        ],
    )
    .await;
    assert!(
        page.contains("1件を変更しました（0件の申請者にメールで知らせました。1件はメールアドレスの回答がないため、知らせていません）"),
        "{page}"
    );
    server.shutdown().await;
}

async fn form_of(env: &TestEnv, t: &TenantRecord, id: Uuid) -> i64 {
    env.tenant_conn(t)
        .await
        .client
        .query_one("SELECT form_id FROM submissions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_round_trip_and_are_logged() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        ..
    } = setup().await;
    let h = host.as_str();
    let public = text_form(&env, &t, "環境政策課").await;
    let tricky = "カンマ, \"引用\"\n改行あり😀 と 葛\u{E0100}飾区";
    let receipts = [
        submit(
            &server,
            h,
            &public,
            &[
                ("name", "山田, 太郎"),
                ("email", "a@example.jp"),
                ("opinion", tricky),
                ("topic", "ごみ"),
                ("age", "41"),
            ],
        )
        .await,
        submit(
            &server,
            h,
            &public,
            &[
                ("name", "佐藤 \"花\""),
                ("email", "b@example.jp"),
                ("phone", "090-1234-5678"),
                ("opinion", "=HYPERLINK(\"https://example.com/\",\"詳細\")"),
                ("topic", "子育て"),
            ],
        )
        .await,
    ];
    let form_id: i64 = env
        .tenant_conn(&t)
        .await
        .client
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);

    let r = admin
        .client
        .get(url(
            &server,
            h,
            &format!("/admin/export.csv?form={form_id}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]), "BOM");
    let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[3..]);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(&header[..4], ["受付番号", "受付日時", "フォーム", "版"]);
    assert!(header.contains(&"ご意見".to_owned()) && header.contains(&"年齢".to_owned()));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let yamada = rows.iter().find(|r| &r[0] == receipts[0].as_str()).unwrap();
    assert_eq!(&yamada[col("ご意見")], tricky);
    assert_eq!(&yamada[col("お名前")], "山田, 太郎");
    let sato = rows.iter().find(|r| &r[0] == receipts[1].as_str()).unwrap();
    assert_eq!(&sato[col("お名前")], "佐藤 \"花\"");
    // An answer that a spreadsheet would run as a formula is written as text.
    assert_eq!(
        &sato[col("ご意見")],
        "'=HYPERLINK(\"https://example.com/\",\"詳細\")"
    );
    assert!(
        String::from_utf8_lossy(&bytes).contains("\r\n"),
        "RFC 4180 line ends"
    );
    // The time a case was sent is written as a time (Japan time, to the second), not
    // as Japanese text that sorts wrongly and other systems cannot read.
    let sent: time::OffsetDateTime = env
        .tenant_conn(&t)
        .await
        .client
        .query_one(
            "SELECT submitted_at FROM submissions WHERE receipt_number = $1",
            &[&receipts[0]],
        )
        .await
        .unwrap()
        .get(0);
    let sent = sent.to_offset(time::macros::offset!(+9));
    assert_eq!(
        &yamada[col("受付日時")],
        format!(
            "{} {:02}:{:02}:{:02}",
            sent.date(),
            sent.hour(),
            sent.minute(),
            sent.second()
        )
    );

    let r = admin
        .client
        .get(url(
            &server,
            h,
            &format!("/admin/export.xlsx?form={form_id}&status=received"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap().to_vec();
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    let range = book.worksheet_range("申請一覧").unwrap();
    let cells: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(cells.len(), 3);
    let yamada = cells.iter().find(|r| r[0] == receipts[0]).unwrap();
    assert_eq!(yamada[col("ご意見")], tricky);
    // In the workbook the time is a date cell (Excel's serial day number, Japan time)
    // and a number answer a number, so both sort and add up.
    let at = cells.iter().position(|r| r[0] == receipts[0]).unwrap();
    let serial = (sent.date() - time::macros::date!(1899 - 12 - 30)).whole_days() as f64
        + f64::from(
            u32::from(sent.hour()) * 3600
                + u32::from(sent.minute()) * 60
                + u32::from(sent.second()),
        ) / 86400.0;
    match range.get((at, col("受付日時"))) {
        Some(calamine::Data::DateTime(d)) => {
            assert!(
                (d.as_f64() - serial).abs() < 1e-6,
                "{} != {serial}",
                d.as_f64()
            )
        }
        other => panic!("受付日時 is {other:?}"),
    }
    assert_eq!(
        range.get((at, col("年齢"))),
        Some(&calamine::Data::Float(41.0))
    );
    // The answer starts before the workbook is built (a large one takes longer than a
    // request may before answering): here the rows cannot be read until a lock is
    // released, and the headers come first all the same.
    let lock = crate::harness::admin_client(&t.database).await;
    lock.batch_execute("BEGIN; LOCK TABLE submissions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        admin
            .client
            .get(url(
                &server,
                h,
                &format!("/admin/export.xlsx?form={form_id}"),
            ))
            .send(),
    )
    .await
    .expect("the answer waited for the whole workbook")
    .unwrap();
    assert_eq!(r.status(), 200);
    lock.batch_execute("COMMIT").await.unwrap();
    let bytes = r.bytes().await.unwrap().to_vec();
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(book.worksheet_range("申請一覧").unwrap().rows().count(), 3);
    // Left before the workbook came: its building stops, logged as handing nothing out.
    lock.batch_execute("BEGIN; LOCK TABLE submissions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r = admin
        .client
        .get(url(
            &server,
            h,
            &format!("/admin/export.xlsx?form={form_id}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    // Time for the server to notice the connection closed (longer on a loaded machine).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    lock.batch_execute("COMMIT").await.unwrap();
    let abandoned = "SELECT count(*) FROM audit_log WHERE action = 'submission.export'
                       AND detail LIKE '%\"complete\":false%' AND detail LIKE '%\"rows\":0%'";
    let conn = env.tenant_conn(&t).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while conn
        .client
        .query_one(abandoned, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned export was not logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let db = env.tenant_conn(&t).await;
    let logged: Vec<String> = db
        .client
        .query(
            "SELECT detail FROM audit_log WHERE action = 'submission.export' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 4, "the CSV and the three workbooks");
    assert!(logged[0].contains("\"rows\":2") && logged[0].contains("csv"));
    // The CSV export is on record from its start too (a restart during a long one
    // would otherwise leave no trace of the rows already handed out).
    let started: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'submission.export_start' AND detail LIKE '%\"format\":\"csv\"%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, 1);
    assert!(logged[0].contains("\"complete\":true"), "{}", logged[0]);
    assert!(logged[1].contains("\"rows\":2") && logged[1].contains("xlsx"));
    assert!(logged[2].contains("\"rows\":2") && logged[2].contains("\"complete\":true"));

    // An export found by a person's e-mail address or telephone number (written the
    // international way, with the trunk 0): the log says how it was searched, not for
    // whom.
    for (q, hidden) in [
        ("b%40example.jp", "example.jp"),
        ("%2B81%20(0)90-1234-5678", "1234"),
    ] {
        let r = admin
            .client
            .get(url(&server, h, &format!("/admin/export.csv?q={q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let exported = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
        assert!(
            exported.contains(receipts[1].as_str()) && !exported.contains(receipts[0].as_str()),
            "{q}"
        );
        let detail: String = db
            .client
            .query_one(
                "SELECT detail FROM audit_log WHERE action = 'submission.export' ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!detail.contains(hidden), "{detail}");
        assert!(detail.contains("\"rows\":1"), "{detail}");
    }

    // Totals: counts per option and number statistics, with a chart.
    let (status, _, page) = get(
        &admin.client,
        &url(&server, h, &format!("/admin/forms/{form_id}/totals")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<svg")
            && page.contains("<td>ごみ</td><td>1</td><td>50.0</td>")
            && page.contains("<td>道路</td><td>0</td>")
    );
    assert!(
        page.contains("<td>1</td><td>41</td><td>41</td><td>41</td><td>41</td>"),
        "{page}"
    );
    assert!(page.contains("対象: 2件（取下げを除く）"), "{page}");
    // Of one status and a period (受付日, Japan time), as the inbox filters them: one
    // application sent at 23:30 on 31 October, the other at 00:30 on 1 November.
    for (at, receipt) in [
        ("2026-10-31T23:30:00+09:00", &receipts[0]),
        ("2026-11-01T00:30:00+09:00", &receipts[1]),
    ] {
        db.client
            .execute(
                "UPDATE submissions SET submitted_at = $1::text::timestamptz WHERE receipt_number = $2",
                &[&at, receipt],
            )
            .await
            .unwrap();
    }
    for (query, scope) in [
        ("status=received", "対象: 2件（状態が「受付」）"),
        ("status=completed", "対象: 0件（状態が「完了」）"),
        (
            "to=2026-10-31",
            "対象: 1件（取下げを除く、受付日 〜2026年10月31日",
        ),
        (
            "from=2026-11-01",
            "対象: 1件（取下げを除く、受付日 2026年11月1日",
        ),
        ("from=2026-11-01&to=2026-11-01", "対象: 1件（"),
        ("from=2026-10-31&to=2026-11-01", "対象: 2件（"),
        (
            "status=received&from=2026-11-02",
            "対象: 0件（状態が「受付」、受付日 2026年11月2日",
        ),
        // Unreadable conditions are said and not used; a period backwards finds none.
        ("status=bogus&from=2026-02-30", "対象: 2件（取下げを除く）"),
        ("from=2026-11-02&to=2026-11-01", "対象: 0件（"),
    ] {
        let (status, _, page) = get(
            &admin.client,
            &url(
                &server,
                h,
                &format!("/admin/forms/{form_id}/totals?{query}"),
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains(scope), "{query}: {page}");
    }
    for (query, notice) in [
        (
            "status=bogus&from=2026-02-30",
            "状態「bogus」は読み取れないため、使っていません",
        ),
        (
            "status=bogus&from=2026-02-30",
            "受付日（から）「2026-02-30」は読み取れないため、使っていません",
        ),
        (
            "from=2026-11-02&to=2026-11-01",
            "受付日の「から」が「まで」より後のため、対象はありません",
        ),
    ] {
        let (_, _, page) = get(
            &admin.client,
            &url(
                &server,
                h,
                &format!("/admin/forms/{form_id}/totals?{query}"),
            ),
        )
        .await;
        assert!(page.contains(notice), "{notice}: {page}");
    }
    // The same totals as CSV, for a report (the conditions of the page).
    let r = admin
        .client
        .get(url(
            &server,
            h,
            &format!("/admin/forms/{form_id}/totals.csv?status=received"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
    let text = String::from_utf8_lossy(&bytes[3..]).into_owned();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[1], "対象,2件（状態が「受付」）", "{text}");
    for line in [
        "項目,選択肢,件数,割合（%）,回答数",
        "分野,ごみ,1,50.0,2",
        "分野,道路,0,0.0,2",
    ] {
        assert!(lines.contains(&line), "{line} not in\n{text}");
    }
    assert!(
        lines.iter().any(|l| l.ends_with(",1,41,41,41,41")),
        "{text}"
    );
    // The inbox's 集計 carries its status and period, not its assignee or search.
    let (_, _, page) = get(
        &admin.client,
        &url(
            &server,
            h,
            &format!("/admin/inbox?form={form_id}&status=received&from=2026-10-01&to=2026-11-30&assignee=0&q=x"),
        ),
    )
    .await;
    assert!(
        page.contains(&format!(
            "/admin/forms/{form_id}/totals?status=received&#38;from=2026-10-01&#38;to=2026-11-30\""
        )),
        "{page}"
    );
    let detail: String = db
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'form.totals' ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(detail.contains("\"format\":\"csv\""), "{detail}");
    // A version without the 分野 question: its answers are still counted, under its
    // label marked with the last version that asked it.
    let mut conn = env.tenant_conn(&t).await;
    let form_id: i64 = conn
        .client
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    conn.client
        .execute(
            "UPDATE forms SET draft = jsonb_set(draft, '{pages,0,fields}',
               (SELECT jsonb_agg(f) FROM jsonb_array_elements(draft->'pages'->0->'fields') f WHERE f->>'id' <> 'topic'))",
            &[],
        )
        .await
        .unwrap();
    madoguchi::tenant::forms::store::publish(
        &mut conn.client,
        form_id,
        &madoguchi::tenant::audit::Actor::Operator,
        None,
    )
    .await
    .unwrap();
    let (status, _, page) = get(
        &admin.client,
        &url(&server, h, &format!("/admin/forms/{form_id}/totals")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("分野（第1版まで）") && page.contains("<td>ごみ</td><td>1</td><td>50.0</td>"),
        "{page}"
    );
    // One version's export has that version's cases and questions only.
    let third = submit(
        &server,
        h,
        &public,
        &[
            ("name", "鈴木 一郎"),
            ("email", "c@example.jp"),
            ("opinion", "第2版から"),
        ],
    )
    .await;
    for (version, expected, asks_topic) in [
        (1, vec![receipts[0].as_str(), receipts[1].as_str()], true),
        (2, vec![third.as_str()], false),
    ] {
        let r = admin
            .client
            .get(url(
                &server,
                h,
                &format!("/admin/export.csv?form={form_id}&version={version}"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[3..]);
        let header = reader.headers().unwrap().clone();
        assert_eq!(
            header.iter().any(|h| h == "分野"),
            asks_topic,
            "version {version}"
        );
        let mut got: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_owned()).collect();
        got.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(got, expected, "version {version}");
    }
    // The question back in a third version, one option renamed: the answers naming
    // the old option keep their bar, marked with the last version that offered it.
    conn.client
        .execute(
            r#"UPDATE forms SET draft = jsonb_set(draft, '{pages,0,fields}',
                 (draft->'pages'->0->'fields') || '[{"id": "topic", "type": "choice", "label": "分野", "options": ["子育て", "ごみ・リサイクル", "道路"]}]'::jsonb)"#,
            &[],
        )
        .await
        .unwrap();
    madoguchi::tenant::forms::store::publish(
        &mut conn.client,
        form_id,
        &madoguchi::tenant::audit::Actor::Operator,
        None,
    )
    .await
    .unwrap();
    let (status, _, page) = get(
        &admin.client,
        &url(&server, h, &format!("/admin/forms/{form_id}/totals")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<td>ごみ・リサイクル</td><td>0</td>")
            && page.contains("<td>ごみ（第1版まで）</td><td>1</td>")
            && !page.contains("分野（第"),
        "{page}"
    );
    // Two workbooks are built at once on the server; a third waits its turn, then
    // comes whole.
    let lock = crate::harness::admin_client(&t.database).await;
    lock.batch_execute("BEGIN; LOCK TABLE submissions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut pending = Vec::new();
    for _ in 0..3 {
        let r = admin
            .client
            .get(url(
                &server,
                h,
                &format!("/admin/export.xlsx?form={form_id}"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        pending.push(r);
    }
    // Looked at from another session: inside the lock's transaction PostgreSQL would
    // show the same snapshot of pg_stat_activity at every look.
    let watch = crate::harness::admin_client(&t.database).await;
    let waiting = || crate::forms::lock_waiters(&watch);
    // (The two places are this server's: no other test's workbook holds one.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while waiting().await < 2 {
        assert!(std::time::Instant::now() < deadline, "no workbook started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(waiting().await, 2, "more than two workbooks built at once");
    lock.batch_execute("COMMIT").await.unwrap();
    for r in pending {
        let bytes = r.bytes().await.unwrap().to_vec();
        let mut book: calamine::Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(book.worksheet_range("申請一覧").unwrap().rows().count(), 4);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_one_unbroken_chain() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    // Eight connections, each appending ten entries as fast as it can.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let mut conn = env.tenant_conn(&t).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                madoguchi::tenant::audit::record(
                    &mut conn.client,
                    &Actor::Operator,
                    "test.append",
                    &format!("{c}/{i}"),
                    serde_json::json!({}),
                )
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let db = env.tenant_conn(&t).await;
    let n: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'test.append'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 80);
    let Verdict::Intact(all) = madoguchi::tenant::audit::verify(&db.client).await.unwrap() else {
        panic!("concurrent appends broke the chain")
    };
    assert!(all >= 80);
}

/// Someone with the admin role edits entry 2 of a tenant's operation log; their
/// connection, for more.
async fn edit_entry_2(database: &str) -> tokio_postgres::Client {
    let admin_db = crate::harness::admin_client(database).await;
    admin_db
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2",
            &[],
        )
        .await
        .unwrap();
    admin_db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_operation_log_is_detected() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    let (_, public) = build_form(&admin, &server, &host, &dept, "").await;
    let receipt = apply(&server, &host, &public, "ソファ").await.unwrap();
    let id = id_of(&env, &t, &receipt).await;
    for _ in 0..2 {
        get(
            &admin.client,
            &url(&server, &host, &format!("/admin/submissions/{id}")),
        )
        .await;
    }
    let db = env.tenant_conn(&t).await;
    let Verdict::Intact(n) = madoguchi::tenant::audit::verify(&db.client).await.unwrap() else {
        panic!("chain broken before tampering")
    };
    assert!(n >= 3);
    let admin_db = edit_entry_2(&t.database).await;
    assert_eq!(
        madoguchi::tenant::audit::verify(&db.client).await.unwrap(),
        Verdict::Broken {
            seq: 2,
            reason: "its content does not match its hash (edited)".into()
        }
    );
    admin_db.execute("UPDATE audit_log SET actor = (SELECT actor FROM audit_log WHERE seq = 3) WHERE seq = 2", &[]).await.unwrap();
    // Deleting a row is found too.
    let (db2, _) = (env.tenant_conn(&t).await, ());
    admin_db
        .execute("DELETE FROM audit_log WHERE seq = 3", &[])
        .await
        .unwrap();
    match madoguchi::tenant::audit::verify(&db2.client).await.unwrap() {
        Verdict::Broken { seq, .. } => assert!(seq <= 4, "broken at {seq}"),
        Verdict::Intact(_) => panic!("a deleted row went unnoticed"),
    }
    server.shutdown().await;
}

/// Someone able to write in a tenant's database can rewrite its whole log so that
/// it chains again, or cut its newest entries: the head the platform witnessed (kept
/// in the catalog) no longer matches, the check says so and keeps saying so, and the
/// metric behind the alert turns 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_or_cut_log_misses_the_head_the_platform_witnessed() {
    use madoguchi::control::audit_witness::check;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("w"), "千代田区", "131016").await;
    let u = env.tenant(&unique("w"), "札幌市", "011002").await;
    let p = &env.platform;
    let write = |rec: TenantRecord, n: usize| {
        let env = &env;
        async move {
            let mut db = env.tenant_conn(&rec).await;
            for i in 0..n {
                madoguchi::tenant::audit::record(
                    &mut db.client,
                    &Actor::Operator,
                    "test.append",
                    &i.to_string(),
                    serde_json::json!({}),
                )
                .await
                .unwrap();
            }
        }
    };
    write(t.clone(), 4).await;
    assert!(matches!(check(p, &t, false).await.unwrap(), Verdict::Intact(n) if n >= 4));
    write(t.clone(), 2).await;
    // Only what was written since the last check is walked.
    assert_eq!(check(p, &t, false).await.unwrap(), Verdict::Intact(2));

    // The whole chain rewritten from entry 2 on, every hash recomputed: the log alone
    // verifies, the witnessed head does not.
    let admin_db = edit_entry_2(&t.database).await;
    let rows = admin_db
        .query(
            "SELECT seq, at, actor, action, target, detail FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let mut prev: Vec<u8> = admin_db
        .query_one("SELECT audit_anchor_hash FROM settings", &[])
        .await
        .unwrap()
        .get(0);
    for r in &rows {
        let seq: i64 = r.get(0);
        let hash = madoguchi::tenant::audit::row_hash(
            &prev,
            seq,
            madoguchi::tenant::audit::micros(r.get(1)),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
        );
        admin_db
            .execute(
                "UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE seq = $1",
                &[&seq, &prev, &hash],
            )
            .await
            .unwrap();
        prev = hash;
    }
    let db = env.tenant_conn(&t).await;
    assert!(matches!(
        madoguchi::tenant::audit::verify(&db.client).await.unwrap(),
        Verdict::Intact(_)
    ));
    for full in [false, true, false] {
        match check(p, &t, full).await.unwrap() {
            Verdict::Broken { reason, .. } => assert!(reason.contains("rewritten"), "{reason}"),
            Verdict::Intact(_) => panic!("a rewritten log passed (full: {full})"),
        }
    }
    // Once investigated, it is witnessed anew, with a reason, in the control log.
    use madoguchi::control::audit_witness::rewitness;
    assert!(rewitness(p, &t, "cli:test", " ").await.is_err());
    assert!(matches!(
        rewitness(p, &t, "cli:test", "INC-2026-11").await.unwrap(),
        Verdict::Intact(_)
    ));
    assert_eq!(check(p, &t, false).await.unwrap(), Verdict::Intact(0));
    let logged: i64 = crate::harness::admin_client(&p.settings.catalog_db)
        .await
        .query_one(
            "SELECT count(*) FROM ops_log WHERE action = 'audit.rewitness' AND detail LIKE '%INC-2026-11%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);

    // The newest entries cut: the witnessed one is gone.
    write(u.clone(), 3).await;
    assert!(matches!(
        check(p, &u, false).await.unwrap(),
        Verdict::Intact(_)
    ));
    crate::harness::admin_client(&u.database)
        .await
        .execute(
            "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
            &[],
        )
        .await
        .unwrap();
    match check(p, &u, false).await.unwrap() {
        Verdict::Broken { reason, .. } => assert!(reason.contains("gone"), "{reason}"),
        Verdict::Intact(_) => panic!("a cut log passed"),
    }

    // What the alert reads.
    let v = env.tenant(&unique("w"), "函館市", "012025").await;
    assert!(matches!(
        check(p, &v, false).await.unwrap(),
        Verdict::Intact(_)
    ));
    let server = env.serve().await;
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    for (slug, ok) in [(&t.slug, 1), (&u.slug, 0), (&v.slug, 1)] {
        assert!(
            metrics.contains(&format!(
                "madoguchi_audit_chain_ok{{tenant=\"{slug}\"}} {ok}"
            )),
            "{metrics}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lookup_is_rate_limited() {
    let Setup { server, host, .. } = setup().await;
    let c = browser(&server, &[&host]);
    let lookup = url(&server, &host, "/status");
    let mut limited = None;
    for i in 0..12 {
        let r = c
            .post(&lookup)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("receipt=0000-0000&email=x%40example.jp")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some((
                i,
                r.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                r.text().await.unwrap(),
            ));
            break;
        }
    }
    let (after, retry, body) = limited.expect("twelve lookups in a row were all answered");
    assert!(
        after >= madoguchi::tenant::status::LOOKUP_BURST as usize,
        "limited after {after}"
    );
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert!(body.contains("操作の回数が多すぎます"));
    // The page itself (GET) is not limited.
    assert_eq!(c.get(&lookup).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_entries_and_the_chain_still_verifies() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    build_form(&admin, &server, &host, &dept, "").await;
    // The administrator sets the retention; out-of-range values are refused.
    let (status, _, _) = post(
        &admin.client,
        &url(&server, &host, "/admin/audit/retention"),
        &[("csrf", &admin.csrf), ("days", "5")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = post(
        &admin.client,
        &url(&server, &host, "/admin/audit/retention"),
        &[("csrf", &admin.csrf), ("days", "３０")],
    )
    .await;
    assert_eq!(status, 303);
    let mut db = env.tenant_conn(&t).await;
    let before: i64 = db
        .client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    // Age the first two entries past the retention period (as if written 40 days ago).
    crate::harness::admin_client(&t.database)
        .await
        .execute(
            "UPDATE audit_log SET at = at - interval '40 days' WHERE seq <= 2",
            &[],
        )
        .await
        .unwrap();
    let deleted = madoguchi::tenant::audit::prune(&mut db.client)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let after: i64 = db
        .client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        after,
        before - 2 + 1,
        "two deleted, the pruning itself recorded"
    );
    assert!(
        matches!(madoguchi::tenant::audit::verify(&db.client).await.unwrap(), Verdict::Intact(n) if n as i64 == after)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_rate_limited_per_tenant_and_address() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let server = env.serve().await;
    let c = browser(&server, &[&a.hosts[0], &b.hosts[0]]);
    let mut limited_after = None;
    for i in 0..20 {
        let (status, _, body) = post(
            &c,
            &url(&server, &a.hosts[0], "/admin/login"),
            &[
                ("email", "x@example.jp"),
                ("password", "wrong wrong wrong"),
                ("code", ""),
            ],
        )
        .await;
        if status == 429 {
            assert!(body.contains("操作の回数が多すぎます"));
            limited_after = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    assert_eq!(
        limited_after,
        Some(madoguchi::front::limits::SIGN_IN_BURST as usize)
    );
    // Another municipality's sign-in page is not affected by this tenant's limit.
    let (status, _, _) = post(
        &c,
        &url(&server, &b.hosts[0], "/admin/login"),
        &[
            ("email", "x@example.jp"),
            ("password", "wrong wrong wrong"),
            ("code", ""),
        ],
    )
    .await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

/// Over LGWAN a whole office reaches the service from one address: all its staff
/// set up their accounts and sign in however many they are; only wrong guesses use
/// the address up, guesses sent together cannot pass the limit together, and an
/// address over its limit leaves the office's own untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_behind_one_address_signs_all_its_staff_in() {
    use madoguchi::tenant::staff::{now_unix, totp_code};
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("office"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let burst = madoguchi::front::limits::SIGN_IN_BURST as usize;
    // Far more accounts set up from this one address than the limit on setup links
    // (each set-up signs its browser in)...
    let mut people = Vec::new();
    for _ in 0..(2 * burst + 2) {
        people.push(staff(&env, &server, &t, Role::Staff, None).await);
    }
    let last = people.pop().unwrap();
    let sign_in = |c: reqwest::Client, email: String, password: String, code: String| {
        let u = url(&server, host, "/admin/login");
        async move {
            post(
                &c,
                &u,
                &[
                    ("email", email.as_str()),
                    ("password", password.as_str()),
                    ("code", code.as_str()),
                ],
            )
            .await
        }
    };
    // ...and as many sign-ins again, each from a new browser at that address.
    for p in &people {
        let code = totp_code(&p.secret, now_unix() + 30);
        let (status, loc, body) = sign_in(
            browser(&server, &[host]),
            p.email.clone(),
            p.password.clone(),
            code,
        )
        .await;
        assert_eq!((status, loc.as_str()), (303, "/admin/forms"), "{body}");
    }
    // Twice the limit of wrong guesses at once from another address: only the
    // limit's worth are checked (401), the rest refused unchecked (429).
    let guesser = crate::forms::browser_from(&server, &[host], 9);
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..2 * burst).map(|i| {
        sign_in(
            guesser.clone(),
            format!("nobody{i}@example.jp"),
            "wrong wrong wrong".into(),
            "123456".into(),
        )
    }))
    .await;
    // A place comes free every SIGN_IN_EVERY: one more may have been checked if the
    // guesses took that long.
    let refilled = (started.elapsed().as_secs_f64()
        / madoguchi::front::limits::SIGN_IN_EVERY.as_secs_f64()) as usize;
    let checked = answers.iter().filter(|(s, _, _)| *s == 401).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(checked + refused.len(), 2 * burst, "{answers:?}");
    assert!(
        (burst..=burst + refilled).contains(&checked),
        "{checked} guesses checked"
    );
    assert!(refused
        .iter()
        .all(|(_, _, page)| page.contains("操作の回数が多すぎます")));
    // Guesses at a real account count alike: a wrong password, the right one with a
    // wrong code, and (after five) the locked account's refusals.
    let other = crate::forms::browser_from(&server, &[host], 10);
    let target = &people[0];
    let mut statuses = Vec::new();
    for i in 0..=burst {
        let password = if i % 2 == 0 {
            "wrong wrong wrong".to_owned()
        } else {
            target.password.clone()
        };
        let (status, _, _) = sign_in(
            other.clone(),
            target.email.clone(),
            password,
            "000000".into(),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses[..burst].iter().all(|s| *s == 401), "{statuses:?}");
    // Over its limit, the guessing address waits even with the right password...
    let code = totp_code(&last.secret, now_unix() + 30);
    let (status, _, _) = sign_in(
        guesser.clone(),
        last.email.clone(),
        last.password.clone(),
        code.clone(),
    )
    .await;
    assert_eq!(status, 429);
    // ...while the office's address signs its people in as before.
    let (status, loc, body) =
        sign_in(browser(&server, &[host]), last.email, last.password, code).await;
    assert_eq!((status, loc.as_str()), (303, "/admin/forms"), "{body}");
    // A setup link that is not valid counts against the address it came from.
    let mut setup_answers = Vec::new();
    for _ in 0..(madoguchi::front::limits::SETUP_BURST + 1) {
        let (status, _, _) = post(
            &guesser,
            &url(&server, host, "/admin/setup/not-a-setup-link"),
            &[("password", "x"), ("password2", "x"), ("code", "")],
        )
        .await;
        setup_answers.push(status);
    }
    assert_eq!(setup_answers.last(), Some(&429), "{setup_answers:?}");
    assert!(!setup_answers[..setup_answers.len() - 1].contains(&429));
    server.shutdown().await;
}

/// 差戻し asks the applicant to correct online, which needs their e-mail address
/// (the message goes there, and the status lookup asks for it): an application
/// without one is refused a 差戻し with a reason, instead of being stranded in it with
/// a message that can never be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_needs_an_address_to_reach_the_applicant() {
    let Setup {
        env,
        t,
        server,
        host,
        admin,
        dept,
    } = setup().await;
    let host = host.as_str();
    let json = r#"{ "format": "madoguchi.form/1", "title": "ご意見", "pages": [ { "id": "p1", "fields": [
        { "id": "name", "type": "text", "label": "お名前", "required": true },
        { "id": "email", "type": "email", "label": "メールアドレス" }
    ] } ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, json, &dept, true)
            .await
            .unwrap();
    let to_returned = |receipt: String| {
        let (env, t, admin, server) = (&env, &t, &admin, &server);
        async move {
            let id = id_of(env, t, &receipt).await;
            let case = url(server, host, &format!("/admin/submissions/{id}"));
            let (status, _, _) = post(
                &admin.client,
                &format!("{case}/status"),
                &[
                    ("csrf", &admin.csrf),
                    ("from", "received"),
                    ("to", "reviewing"),
                ],
            )
            .await;
            assert_eq!(status, 303);
            let (status, _, page) = post(
                &admin.client,
                &format!("{case}/status"),
                &[
                    ("csrf", &admin.csrf),
                    ("from", "reviewing"),
                    ("to", "returned"),
                    ("reason", "ご意見の内容を確認させてください"),
                    ("deadline", "2031-08-31"),
                ],
            )
            .await;
            (id, status, page)
        }
    };
    let without = submit(&server, host, &public, &[("name", "匿名希望")]).await;
    let (id, status, page) = to_returned(without).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("メールアドレスの回答がない"), "{page}");
    let db = env.tenant_conn(&t).await;
    let row = db
        .client
        .query_one(
            "SELECT status, (SELECT count(*) FROM outbox WHERE submission_id = $1 AND kind = 'mail') FROM submissions WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("reviewing".to_owned(), 0)
    );
    let with = submit(
        &server,
        host,
        &public,
        &[("name", "葛西 花子"), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    let (id, status, page) = to_returned(with.clone()).await;
    assert_eq!(status, 303, "{page}");

    // The applicant opens the correction; meanwhile it is settled by telephone and
    // staff take the case back to 審査中: the correction asked for is closed (reason
    // and deadline gone), and the correction page left open is refused.
    let citizen = browser(&server, &[host]);
    let lookup = [
        ("receipt", with.as_str()),
        ("email", "hanako.kasai@example.jp"),
    ];
    let (status, loc, _) = post(&citizen, &url(&server, host, "/status/resubmit"), &lookup).await;
    assert_eq!(status, 303);
    let (_, _, form) = get(&citizen, &url(&server, host, &loc)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &form);
    let case = url(&server, host, &format!("/admin/submissions/{id}"));
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "returned"),
            ("to", "reviewing"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let cleared: bool = db
        .client
        .query_one(
            "SELECT return_reason IS NULL AND return_deadline IS NULL FROM submissions WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(cleared);
    let (_, _, page) = post(&citizen, &url(&server, host, "/status"), &lookup).await;
    assert!(
        page.contains("審査中") && !page.contains("/status/resubmit"),
        "{page}"
    );
    let correction = url(&server, host, &loc);
    let (status, _, _) = post(
        &citizen,
        &correction,
        &[
            ("_token", token.as_str()),
            ("_page", "0"),
            ("_nav", "next"),
            ("name", "葛西 花子"),
            ("email", "hanako.kasai@example.jp"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, page) = post(
        &citizen,
        &url(
            &server,
            host,
            &format!("{}/submit", loc.split('?').next().unwrap()),
        ),
        &[("_token", token.as_str())],
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("修正を受け付けていません"), "{page}");
    // Returned again, and the deadline passes without a correction: 却下.
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "reviewing"),
            ("to", "returned"),
            ("reason", "ご意見の内容を確認させてください"),
            ("deadline", "2031-08-31"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let (status, _, page) = post(
        &admin.client,
        &format!("{case}/status"),
        &[
            ("csrf", &admin.csrf),
            ("from", "returned"),
            ("to", "rejected"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    server.shutdown().await;
}

/// Applications whose e-mail index was taken before addresses were lower-cased for
/// it (of the address as typed, lower case after `@` only) are still found by the
/// address as typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_application_is_found_by_its_address_as_typed() {
    let Setup {
        env,
        t,
        server,
        host,
        ..
    } = setup().await;
    let h = host.as_str();
    let public = text_form(&env, &t, "環境政策課").await;
    let receipt = submit(
        &server,
        h,
        &public,
        &[
            ("name", "葛西 花子"),
            ("email", "Hanako.Kasai@example.jp"),
            ("opinion", "以前の申請"),
            ("topic", "ごみ"),
        ],
    )
    .await;
    let rt = server.app.pools.runtime(t.id).await.unwrap();
    let earlier = rt
        .cipher
        .blind_index("submissions", "email", "Hanako.Kasai@example.jp")
        .to_vec();
    env.tenant_conn(&t)
        .await
        .client
        .execute(
            "UPDATE submissions SET email_index = $2 WHERE receipt_number = $1",
            &[&receipt, &earlier],
        )
        .await
        .unwrap();
    let citizen = browser(&server, &[h]);
    let (status, _, page) = post(
        &citizen,
        &url(&server, h, "/status"),
        &[
            ("receipt", receipt.as_str()),
            ("email", "Hanako.Kasai@EXAMPLE.jp"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("受付"), "{page}");
    server.shutdown().await;
}

/// Full-width form of an ASCII string, as a phone's Japanese keyboard may type it.
fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// 申請の削除と保存期間: a finished application deleted with all kept with it by a
/// 管理者 (not by staff, not while under way, not without the receipt number typed),
/// its place given back; and finished applications past their form's retention
/// deleted by the daily purge, the others kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_applications_are_deleted_by_hand_or_after_their_retention() {
    use madoguchi::tenant::cases::retention;
    let s = setup().await;
    let u = |p: &str| url(&s.server, &s.host, p);
    let (form_id, public) = build_form(&s.admin, &s.server, &s.host, &s.dept, "3").await;
    let settings = |years: &'static str| {
        let (admin, dept, u, form_id) = (&s.admin, &s.dept, &u, &form_id);
        async move {
            post(
                &admin.client,
                &u(&format!("/admin/forms/{form_id}/settings")),
                &[
                    ("csrf", admin.csrf.as_str()),
                    ("title", "粗大ごみ収集申込"),
                    ("capacity", "3"),
                    ("completion_message", "ありがとうございました"),
                    ("department", dept),
                    ("zones_shown", "1"),
                    ("zone", "internet"),
                    ("zone", "lgwan"),
                    ("retention_years", years),
                ],
            )
            .await
        }
    };
    let publish = |who: &Staff| {
        let (client, csrf, u, form_id) = (who.client.clone(), who.csrf.clone(), &u, &form_id);
        async move {
            post(
                &client,
                &u(&format!("/admin/forms/{form_id}/publish")),
                &[("csrf", csrf.as_str())],
            )
            .await
        }
    };
    let (_, _, page) = settings("2").await;
    assert!(page.contains("保存期間は一覧から選んでください"), "{page}");
    let (status, _, page) = settings("3").await;
    assert!(
        status < 400 && page.contains(r#"<option value="3" selected>3年</option>"#),
        "{page}"
    );
    let (status, _, page) = publish(&s.admin).await;
    assert_eq!(status, 200, "{page}");
    // Staff of the department edit the form, but a shorter 保存期間 (it deletes
    // applications sooner) is published only by a 管理者 or 所属管理者.
    let clerk = staff(&s.env, &s.server, &s.t, Role::Staff, Some("環境政策課")).await;
    let (status, _, _) = post(
        &clerk.client,
        &u(&format!("/admin/forms/{form_id}/settings")),
        &[
            ("csrf", clerk.csrf.as_str()),
            ("title", "粗大ごみ収集申込"),
            ("capacity", "3"),
            ("department", &s.dept),
            ("zones_shown", "1"),
            ("zone", "internet"),
            ("zone", "lgwan"),
            ("retention_years", "1"),
        ],
    )
    .await;
    assert!(status < 400);
    let (_, _, page) = publish(&clerk).await;
    assert!(
        page.contains("保存期間を短くする（または新たに定める）公開は"),
        "{page}"
    );
    let (_, _, page) = publish(&s.admin).await;
    assert!(page.contains("第3版を公開しました"), "{page}");
    let detail: String = s
        .env
        .tenant_conn(&s.t)
        .await
        .client
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'form.publish' ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        detail.contains("\"previous_retention_years\":3")
            && detail.contains("\"retention_years\":1"),
        "{detail}"
    );
    let mut receipts = Vec::new();
    for _ in 0..3 {
        receipts.push(apply(&s.server, &s.host, &public, "ソファ").await.unwrap());
    }
    assert!(
        apply(&s.server, &s.host, &public, "ソファ").await.is_err(),
        "full"
    );
    let ids = [
        id_of(&s.env, &s.t, &receipts[0]).await,
        id_of(&s.env, &s.t, &receipts[1]).await,
        id_of(&s.env, &s.t, &receipts[2]).await,
    ];
    let conn = s.env.tenant_conn(&s.t).await;
    let db = &conn.client;
    let count = |sql: &'static str, id: Uuid| async move {
        db.query_one(sql, &[&id]).await.unwrap().get::<_, i64>(0)
    };
    let change = |id: Uuid, from: &'static str, to: &'static str| {
        let (admin, u) = (&s.admin, &u);
        async move {
            let (status, _, page) = post(
                &admin.client,
                &u(&format!("/admin/submissions/{id}/status")),
                &[("csrf", admin.csrf.as_str()), ("from", from), ("to", to)],
            )
            .await;
            assert_eq!(status, 303, "{from} → {to}: {page}");
        }
    };
    let delete = |who: &Staff, id: Uuid, reason: &'static str, typed: String| {
        let u = &u;
        let (client, csrf) = (who.client.clone(), who.csrf.clone());
        async move {
            post(
                &client,
                &u(&format!("/admin/submissions/{id}/delete")),
                &[
                    ("csrf", csrf.as_str()),
                    ("reason", reason),
                    ("receipt", &typed),
                ],
            )
            .await
        }
    };

    // Under way (受付): the page states the retention and offers no deletion, and a
    // deletion sent anyway is refused.
    let (_, _, page) = get(
        &s.admin.client,
        &u(&format!("/admin/submissions/{}", ids[0])),
    )
    .await;
    assert!(
        page.contains("保存期間: 1年（完了・却下・取下げになった年度"),
        "{page}"
    );
    assert!(!page.contains("この申請を削除する"), "{page}");
    let (status, _, page) = delete(&s.admin, ids[0], "test", receipts[0].clone()).await;
    assert_eq!(status, 409);
    assert!(
        page.contains("受付・審査中・差戻しの申請は削除できません"),
        "{page}"
    );

    // 完了: the page says when it goes, and offers the deletion to the 管理者.
    change(ids[0], "received", "reviewing").await;
    change(ids[0], "reviewing", "completed").await;
    let (status, _, _) = post(
        &s.admin.client,
        &u(&format!("/admin/submissions/{}/notes", ids[0])),
        &[
            ("csrf", s.admin.csrf.as_str()),
            ("kind", "message"),
            ("body", "収集日が決まりました"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, page) = get(
        &s.admin.client,
        &u(&format!("/admin/submissions/{}", ids[0])),
    )
    .await;
    let finished: time::OffsetDateTime = db
        .query_one(
            "SELECT max(at) FROM submission_events WHERE submission_id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    let goes = retention::deleted_from(finished, 1).unwrap();
    let goes = madoguchi::ja::date_both(goes.to_offset(time::macros::offset!(+9)).date());
    assert!(
        page.contains(&format!("{goes}以降、毎日の自動削除で削除されます")),
        "{page}"
    );
    assert!(
        page.contains("この申請を削除する") && page.contains("試験のための申請"),
        "{page}"
    );
    // Not by staff of the department, who see no such form either.
    let (_, _, page) = get(&clerk.client, &u(&format!("/admin/submissions/{}", ids[0]))).await;
    assert!(
        page.contains("保存期間") && !page.contains("この申請を削除する"),
        "{page}"
    );
    let (status, _, _) = delete(&clerk, ids[0], "test", receipts[0].clone()).await;
    assert_eq!(status, 403);
    // Not without a reason, nor with another receipt number.
    let (status, _, page) = delete(&s.admin, ids[0], "", receipts[0].clone()).await;
    assert!(
        status == 409 && page.contains("削除する理由を選んでください"),
        "{page}"
    );
    let (status, _, page) = delete(&s.admin, ids[0], "test", receipts[1].clone()).await;
    assert!(status == 409 && page.contains("一致しません"), "{page}");
    assert_eq!(
        count("SELECT count(*) FROM submissions WHERE id = $1", ids[0]).await,
        1
    );
    // Typed on a phone, full width and lower case: deleted with all kept with it.
    let typed = full_width(&receipts[0].to_lowercase());
    let (status, loc, page) = delete(&s.admin, ids[0], "test", typed).await;
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = get(&s.admin.client, &u(&loc)).await;
    assert!(
        page.contains(&format!("受付番号 {} の申請を", receipts[0])),
        "{page}"
    );
    // A link naming an application that was not deleted tells nothing of the kind.
    let made_up = loc.replace(&receipts[0], &receipts[1]);
    assert_ne!(made_up, loc);
    let (status, _, page) = get(&s.admin.client, &u(&made_up)).await;
    assert!(status == 200 && !page.contains("削除しました"), "{page}");
    // Nor does the real one tell staff who may not delete it.
    let (status, _, page) = get(&clerk.client, &u(&loc)).await;
    assert!(status == 200 && !page.contains("削除しました"), "{page}");
    for sql in [
        "SELECT count(*) FROM submissions WHERE id = $1",
        "SELECT count(*) FROM submission_events WHERE submission_id = $1",
        "SELECT count(*) FROM submission_notes WHERE submission_id = $1",
        "SELECT count(*) FROM outbox WHERE submission_id = $1",
        "SELECT count(*) FROM citizen_drafts WHERE submission_id = $1",
    ] {
        assert_eq!(count(sql, ids[0]).await, 0, "{sql}");
    }
    let (status, _, _) = get(
        &s.admin.client,
        &u(&format!("/admin/submissions/{}", ids[0])),
    )
    .await;
    assert_eq!(status, 404);
    // Its place is free again; the operation log names it, the reason and who.
    let fourth = apply(&s.server, &s.host, &public, "ソファ").await.unwrap();
    let (actor, detail): (String, String) = {
        let r = db
            .query_one(
                "SELECT actor, detail FROM audit_log WHERE action = 'submission.delete' AND target = $1",
                &[&ids[0].to_string()],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(actor.contains(&s.admin.email), "{actor}");
    assert!(
        detail.contains(&receipts[0]) && detail.contains("\"reason\":\"test\""),
        "{detail}"
    );

    // Retention: withdrawn long ago (gone), completed just now (kept), under review
    // since long ago (kept), and one of a form without retention withdrawn long ago
    // (kept).
    change(ids[1], "received", "withdrawn").await;
    change(ids[2], "received", "reviewing").await;
    // The department's 所属管理者 may delete too.
    let manager = staff(
        &s.env,
        &s.server,
        &s.t,
        Role::DeptManager,
        Some("環境政策課"),
    )
    .await;
    let (_, _, page) = get(
        &manager.client,
        &u(&format!("/admin/submissions/{}", ids[1])),
    )
    .await;
    assert!(page.contains("この申請を削除する"), "{page}");
    let (_, other) = build_form(&s.admin, &s.server, &s.host, &s.dept, "").await;
    let kept = apply(&s.server, &s.host, &other, "ソファ").await.unwrap();
    let kept = id_of(&s.env, &s.t, &kept).await;
    change(kept, "received", "withdrawn").await;
    let newest = id_of(&s.env, &s.t, &fourth).await;
    change(newest, "received", "reviewing").await;
    change(newest, "reviewing", "completed").await;
    for id in [ids[1], ids[2], kept] {
        db.execute(
            "UPDATE submission_events SET at = '2020-05-01T10:00:00+09:00' WHERE submission_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    }
    // Publishing again says what the next daily run deletes.
    let (_, _, page) = publish(&s.admin).await;
    assert!(
        page.contains("保存期間（1年）を過ぎた完了・却下・取下げの申請1件は、次の毎日の自動削除で削除されます"),
        "{page}"
    );
    let mut purge = s.env.tenant_conn(&s.t).await;
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        retention::purge_expired(&mut purge.client, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM submissions WHERE id = $1", ids[1]).await,
        0
    );
    for id in [ids[2], kept, newest] {
        assert_eq!(
            count("SELECT count(*) FROM submissions WHERE id = $1", id).await,
            1
        );
    }
    let (actor, detail): (String, String) = {
        let r = db
            .query_one(
                "SELECT actor, detail FROM audit_log WHERE action = 'submission.retention_delete'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(actor, "system");
    assert!(
        detail.contains(&receipts[1]) && !detail.contains(&receipts[2]),
        "{detail}"
    );
    // Nothing more to do the next day; the chain of the log still verifies.
    assert_eq!(
        retention::purge_expired(&mut purge.client, now)
            .await
            .unwrap(),
        0
    );
    let verdict = madoguchi::tenant::audit::verify(&purge.client)
        .await
        .unwrap();
    assert!(matches!(verdict, Verdict::Intact(_)), "{verdict:?}");
}
