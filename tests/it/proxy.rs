//! 代理入力: staff enter an application received at the counter, by telephone or by
//! post. It is checked as an online one is (errors said, everything typed kept), read
//! back on a confirmation step, stored once however often it is sent, counted
//! against 定員, mailed to the applicant, and kept with how it came and who entered
//! it; a form outside its 受付期間 asks for a word first, a stopped one takes none.

use crate::forms::{apply, build_form, capture, dept_id, get, post, staff};
use crate::harness::{unique, url, TestEnv};
use madoguchi::tenant::staff::Role;

/// The entry page's key (the idempotency key of the application it will make).
fn key_of(page: &str) -> String {
    capture(r#"name="proxy:key" value="([^"]+)""#, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_enter_an_application_received_by_telephone_or_post() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("px"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "市民課").await;
    let (form_id, public) = build_form(&admin, &server, host, &dept, "2").await;
    let clerk = staff(&env, &server, &t, Role::Staff, Some("市民課")).await;
    let viewer = staff(&env, &server, &t, Role::Viewer, Some("市民課")).await;
    let elsewhere = staff(&env, &server, &t, Role::Staff, Some("税務課")).await;
    let db = env.tenant_conn(&t).await.client;
    let entry = u(&format!("/admin/forms/{form_id}/proxy"));

    // The form's page offers it; who may not change the department's cases may not
    // enter one, and another department's form is not there for them.
    let (_, _, page) = get(&clerk.client, &u(&format!("/admin/forms/{form_id}"))).await;
    assert!(
        page.contains(&format!("href=\"/admin/forms/{form_id}/proxy\"")),
        "{page}"
    );
    assert_eq!(get(&viewer.client, &entry).await.0, 403);
    assert_eq!(get(&elsewhere.client, &entry).await.0, 404);
    let (status, _, _) = post(&viewer.client, &entry, &[("csrf", &viewer.csrf)]).await;
    assert_eq!(status, 403);
    let (status, _, _) = post(&elsewhere.client, &entry, &[("csrf", &elsewhere.csrf)]).await;
    assert_eq!(status, 404);
    let (status, _, _) = post(&clerk.client, &entry, &[("proxy:step", "send")]).await;
    assert_eq!(status, 403, "no CSRF token");
    // A form never published takes none (its page says why).
    let (status, loc, _) = post(
        &admin.client,
        &u("/admin/forms"),
        &[
            ("csrf", &admin.csrf),
            ("title", "下書きのフォーム"),
            ("department", &dept),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, page) = get(&admin.client, &u(&format!("{loc}/proxy"))).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("まだ公開されていない"), "{page}");

    let (status, _, page) = get(&clerk.client, &entry).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("受付方法"), "{page}");
    assert!(
        page.contains("収集希望日"),
        "every page's questions on one: {page}"
    );
    let key = key_of(&page);
    let csrf = clerk.csrf.as_str();

    // Nothing chosen for 受付方法 and a name left out: both said, what was typed kept.
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[
            ("csrf", csrf),
            ("proxy:key", &key),
            ("proxy:step", "check"),
            ("email", "taro.kanda@example.jp"),
            ("kind", "ソファ"),
            ("date", "2031-07-19"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("受付方法を選んでください"), "{page}");
    assert!(page.contains("href=\"#proxy-channel\""), "{page}");
    assert!(page.contains("氏名（姓）を入力してください"), "{page}");
    assert!(page.contains("href=\"#f-name-family\""), "{page}");
    assert!(page.contains("value=\"taro.kanda@example.jp\""), "{page}");
    assert_eq!(key_of(&page), key, "the same application throughout");

    // Right: read back on the confirmation step, with every input carried over.
    let answers = [
        ("csrf", csrf),
        ("proxy:key", key.as_str()),
        ("proxy:channel", "phone"),
        ("name.family", "神田"),
        ("name.given", "太郎"),
        ("name.family_kana", "カンダ"),
        ("name.given_kana", "タロウ"),
        ("email", "taro.kanda@example.jp"),
        ("kind", "ソファ"),
        ("date", "2031-07-19"),
    ];
    let with = |step: &'static str| {
        let mut a = answers.to_vec();
        a.push(("proxy:step", step));
        a
    };
    let (status, _, page) = post(&clerk.client, &entry, &with("check")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("入力内容の確認"), "{page}");
    assert!(
        page.contains("神田\u{3000}太郎（カンダ\u{3000}タロウ）"),
        "{page}"
    );
    assert!(page.contains("令和13年7月19日"), "{page}");
    assert!(page.contains("id=\"confirm-channel\">電話<"), "{page}");
    assert!(
        page.contains("name=\"name.given_kana\" value=\"タロウ\""),
        "{page}"
    );
    let (status, _, page) = post(&clerk.client, &entry, &with("edit")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("value=\"神田\""),
        "修正する keeps the answers: {page}"
    );
    let stored = db
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(stored, 0, "nothing is stored before 登録");

    // 登録: a case entered by this member of staff, the receipt number to tell.
    let (status, loc, body) = post(&clerk.client, &entry, &with("send")).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?entered=1"), "{loc}");
    let case = loc
        .trim_start_matches("/admin/submissions/")
        .trim_end_matches("?entered=1")
        .to_owned();
    let (status, _, page) = get(&clerk.client, &u(&loc)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("代理入力で受け付けました"), "{page}");
    assert!(
        page.contains("<dd class=\"answer-value\">電話</dd>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("{}（", clerk.email)),
        "who entered it, and when: {page}"
    );
    let receipt = capture(r"<h1>受付番号 ([A-Z0-9-]+)</h1>", &page);

    // The inbox and the export say how it came (the export in its last column).
    let (_, _, inbox) = get(&clerk.client, &u("/admin/inbox")).await;
    assert!(inbox.contains("代理入力（電話）"), "{inbox}");
    let r = clerk
        .client
        .get(u(&format!("/admin/export.csv?form={form_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    assert!(lines.next().unwrap().ends_with(",受付方法"), "{csv}");
    assert!(
        lines.next().unwrap().ends_with(",代理入力（電話）"),
        "{csv}"
    );

    // Sent again (a double click, the browser's back and resend): the same case.
    let (status, again, _) = post(&clerk.client, &entry, &with("send")).await;
    assert_eq!(
        (status, again.as_str()),
        (303, format!("/admin/submissions/{case}").as_str())
    );
    let case_id: uuid::Uuid = case.parse().unwrap();
    let r = db
        .query_one(
            "SELECT s.receipt_number, p.channel, p.outside_period, st.email,
                    (SELECT st2.email FROM submission_events e JOIN staff st2 ON st2.id = e.actor_id
                      WHERE e.submission_id = s.id AND e.to_status = 'received'),
                    (SELECT count(*) FROM outbox o WHERE o.submission_id = s.id AND o.kind = 'receipt'),
                    (SELECT accepted_count FROM forms f WHERE f.id = s.form_id),
                    (SELECT count(*) FROM submissions)
               FROM submissions s JOIN proxy_entries p ON p.submission_id = s.id JOIN staff st ON st.id = p.staff_id
              WHERE s.id = $1",
            &[&case_id],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), receipt);
    assert_eq!(r.get::<_, String>(1), "phone");
    assert!(!r.get::<_, bool>(2));
    assert_eq!(r.get::<_, String>(3), clerk.email);
    assert_eq!(
        r.get::<_, String>(4),
        clerk.email,
        "the history's 受付 names them"
    );
    assert_eq!(r.get::<_, i64>(5), 1, "the applicant's copy is queued");
    assert_eq!(r.get::<_, i32>(6), 1, "counted against 定員");
    assert_eq!(r.get::<_, i64>(7), 1, "one application however often sent");
    let logged: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'submission.proxy_entry' AND target = $1
                AND detail::jsonb->>'channel' = 'phone'",
            &[&case],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);

    // A citizen applies online: the inbox tells the two apart by 受付方法, and the
    // export of one kind carries that kind only.
    let online = apply(&server, host, &public, "ソファ").await.unwrap();
    let inbox_of = |came: &str| {
        let c = &clerk.client;
        let p = u(&format!("/admin/inbox?came={came}"));
        async move { get(c, &p).await.2 }
    };
    for (came, has_phone, has_online) in [
        ("", true, true),
        ("online", false, true),
        ("entered", true, false),
        ("phone", true, false),
        ("post", false, false),
    ] {
        let page = inbox_of(came).await;
        assert_eq!(page.contains(&receipt), has_phone, "{came}: {page}");
        assert_eq!(page.contains(&online), has_online, "{came}: {page}");
    }
    let page = inbox_of("phone").await;
    assert!(
        page.contains(r#"<option value="phone" selected>代理入力（電話）</option>"#),
        "{page}"
    );
    assert!(page.contains("export.csv?came=phone"), "{page}");
    let r = clerk
        .client
        .get(u(&format!("/admin/export.csv?form={form_id}&came=online")))
        .send()
        .await
        .unwrap();
    let csv = r.text().await.unwrap();
    assert!(csv.contains(&online) && !csv.contains(&receipt), "{csv}");

    // 定員 (2) reached: the page says so and takes nothing.
    let (status, _, page) = get(&clerk.client, &entry).await;
    assert_eq!(status, 200);
    assert!(page.contains("定員に達しているため"), "{page}");
    let mut full = with("check");
    full[1] = ("proxy:key", "4b8a3f0e-0000-4000-8000-000000000001");
    let (status, _, page) = post(&clerk.client, &entry, &full).await;
    assert_eq!(status, 409, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_outside_the_period_is_confirmed_and_identity_documents_are_recorded() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("py"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let clerk = staff(&env, &server, &t, Role::Staff, Some("市民課")).await;
    // Ended yesterday; asks for 本人確認 and a file; a page shown only for one answer.
    let json = r#"{ "format": "madoguchi.form/1", "title": "住民票の写しの請求",
        "settings": { "identity": true, "closes_at": "2020-03-31T17:00:00+09:00" },
        "pages": [
          { "id": "p1", "fields": [
            { "id": "purpose", "type": "choice", "label": "使用目的", "required": true,
              "options": ["年金", "その他"], "limits": { "年金": 1 } },
            { "id": "copy", "type": "file", "label": "委任状", "required": true, "types": ["pdf"], "max_mb": 1 }
          ] },
          { "id": "p2", "title": "その他の目的",
            "show_if": { "field": "purpose", "op": "equals", "values": ["その他"] },
            "fields": [ { "id": "detail", "type": "text", "label": "目的の詳細", "required": true } ] }
        ] }"#;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, json, "市民課", true)
            .await
            .unwrap();
    let db = env.tenant_conn(&t).await.client;
    let form_id = crate::forms::form_id_of(&db, &public).await;
    let entry = u(&format!("/admin/forms/{form_id}/proxy"));
    let (status, _, page) = get(&clerk.client, &entry).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("受付期間を過ぎています"), "{page}");
    assert!(page.contains("本人確認で確かめた書類"), "{page}");
    assert!(page.contains("代理入力では添付できません"), "{page}");
    assert!(!page.contains("type=\"file\""), "no file input: {page}");
    assert!(
        page.contains(r#"data-show-field="purpose" data-show-op="equals" data-show-values="[&#34;その他&#34;]""#)
            || page.contains(r#"data-show-field="purpose" data-show-op="equals" data-show-values="[&quot;その他&quot;]""#),
        "the page's rule is the script's: {page}"
    );
    let key = key_of(&page);
    let csrf = clerk.csrf.as_str();

    // Without the word on the period and the document: both asked; the hidden page's
    // question is not asked while its page is not shown.
    let base = [
        ("csrf", csrf),
        ("proxy:key", key.as_str()),
        ("proxy:channel", "post"),
        ("purpose", "年金"),
    ];
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[base.as_slice(), &[("proxy:step", "check")]].concat(),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("期間内に受け付けた申請であることを確かめて"),
        "{page}"
    );
    assert!(
        page.contains("本人確認で確かめた書類を選んでください"),
        "{page}"
    );
    assert!(!page.contains("目的の詳細を入力"), "{page}");
    // A file named by hand is no answer.
    let sent = [
        base.as_slice(),
        &[
            ("proxy:outside", "yes"),
            ("proxy:document", "drivers_license"),
            (
                "copy",
                "00000000-0000-4000-8000-000000000000:x.pdf:application/pdf:10",
            ),
        ],
    ]
    .concat();
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[sent.as_slice(), &[("proxy:step", "check")]].concat(),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("運転免許証"), "{page}");
    assert!(!page.contains("name=\"copy\""), "{page}");
    let (status, loc, body) = post(
        &clerk.client,
        &entry,
        &[sent.as_slice(), &[("proxy:step", "send")]].concat(),
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&clerk.client, &u(&loc)).await;
    assert!(page.contains("職員が運転免許証で確認"), "{page}");
    assert!(
        page.contains("受付期間外に、期間内に受け付けた申請として入力"),
        "{page}"
    );
    assert!(!page.contains("本人確認の記録はありません"), "{page}");
    let r = db
        .query_one(
            "SELECT p.channel, p.identity_document, p.outside_period, s.form_id
               FROM proxy_entries p JOIN submissions s ON s.id = p.submission_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "post");
    assert_eq!(r.get::<_, &str>(1), "drivers_license");
    assert!(r.get::<_, bool>(2));
    assert_eq!(r.get::<_, i64>(3), form_id);
    let taken: i32 = db
        .query_one(
            "SELECT taken FROM option_places WHERE form_id = $1 AND option = '年金'",
            &[&form_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(taken, 1, "選択肢ごとの定員 counts it");

    // The same page sent again for another citizen (other answers): not taken as
    // that one's, and offered as a new application with what was typed.
    let next = [
        ("csrf", csrf),
        ("proxy:key", key.as_str()),
        ("proxy:channel", "counter"),
        ("proxy:outside", "yes"),
        ("proxy:document", "passport"),
        ("purpose", "その他"),
        ("detail", "相続の手続き"),
    ];
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[next.as_slice(), &[("proxy:step", "send")]].concat(),
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("この画面の申請は登録済みです"), "{page}");
    assert!(page.contains("value=\"相続の手続き\""), "{page}");
    let fresh = key_of(&page);
    assert_ne!(fresh, key);
    // 年金 has no place left: said on its question.
    let mut full = next.to_vec();
    full[1] = ("proxy:key", fresh.as_str());
    full[5] = ("purpose", "年金");
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[full.as_slice(), &[("proxy:step", "check")]].concat(),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("「年金」は定員に達しました"), "{page}");
    let mut second = next.to_vec();
    second[1] = ("proxy:key", fresh.as_str());
    let (status, second_case, body) = post(
        &clerk.client,
        &entry,
        &[second.as_slice(), &[("proxy:step", "send")]].concat(),
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_ne!(second_case, loc);

    // Stopped: the page says how to take applications again, and draws no form (sent
    // again, the application made before is still answered with its case).
    db.execute("UPDATE forms SET closed = true WHERE id = $1", &[&form_id])
        .await
        .unwrap();
    let (status, again, _) = post(
        &clerk.client,
        &entry,
        &[sent.as_slice(), &[("proxy:step", "send")]].concat(),
    )
    .await;
    assert_eq!(
        (status, again.as_str()),
        (303, loc.trim_end_matches("?entered=1"))
    );
    let (status, _, page) = get(&clerk.client, &entry).await;
    assert_eq!(status, 200);
    assert!(page.contains("受付を停止しているため"), "{page}");
    assert!(!page.contains("proxy-check"), "{page}");
    let mut other = sent.clone();
    other[1] = ("proxy:key", "4b8a3f0e-0000-4000-8000-000000000002");
    let (status, _, page) = post(
        &clerk.client,
        &entry,
        &[other.as_slice(), &[("proxy:step", "send")]].concat(),
    )
    .await;
    assert_eq!(status, 409, "{page}");
    let n: i64 = db
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // An application deleted takes its record of how it came with it.
    db.execute("DELETE FROM submissions", &[]).await.unwrap();
    let kept: i64 = db
        .query_one("SELECT count(*) FROM proxy_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);
}
