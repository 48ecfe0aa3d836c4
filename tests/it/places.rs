//! 選択肢ごとの定員: an option with a limit is offered with its places left, refused
//! once full (on the page, at the send, through the API), given back by 却下 and
//! 取下げ, moved by a correction, and counted again from the applications (which
//! are read back from their sealed answers) at every publish.

use crate::forms::{
    apply, browser, build_form, capture, dept_id, fill_in, get, post, send, staff, until_waiting,
};
use crate::harness::{admin_client, client_for, unique, url, TestEnv};
use madoguchi::tenant::staff::Role;
use serde_json::{json, Value};

/// (taken, capacity) of an option, from the municipality's database.
async fn places(db: &tokio_postgres::Client, field: &str, option: &str) -> Option<(i32, i32)> {
    db.query_opt(
        "SELECT taken, capacity FROM option_places WHERE field_id = $1 AND option = $2",
        &[&field, &option],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_full_is_offered_no_more_until_a_place_is_given_back() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("op"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "市民課").await;
    let (form_id, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;
    // One application before any limit: the publish that sets one reads it back.
    let first = apply(&server, host, &public, "ソファ").await.unwrap();

    // The builder takes a line 「選択肢=人数」 each (full-width accepted) and says
    // what it cannot read.
    let field = u(&format!("/admin/forms/{form_id}/fields/kind"));
    let kind = |limits: &'static str| {
        let (client, csrf, field) = (&admin.client, admin.csrf.as_str(), field.clone());
        async move {
            post(
                client,
                &field,
                &[
                    ("csrf", csrf),
                    ("label", "品目"),
                    ("required", "yes"),
                    ("options", "ソファ\r\nその他"),
                    ("limits", limits),
                    ("id", "kind"),
                ],
            )
            .await
        }
    };
    let (status, _, page) = kind("ソファ=二").await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("「ソファ」の人数は数字で入力してください"),
        "{page}"
    );
    let (status, _, page) = kind("ソファ").await;
    assert_eq!(status, 422);
    assert!(page.contains("「選択肢=人数」の形で"), "{page}");
    let (status, _, body) = kind("ソファ＝２").await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = get(&admin.client, &field).await;
    assert!(page.contains(">ソファ=2</textarea>"), "{page}");
    let publish = || {
        let (client, csrf, u) = (
            &admin.client,
            admin.csrf.as_str(),
            u(&format!("/admin/forms/{form_id}/publish")),
        );
        async move { post(client, &u, &[("csrf", csrf)]).await }
    };
    let (status, _, page) = publish().await;
    assert_eq!(status, 200);
    assert!(page.contains("第2版を公開しました"), "{page}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((1, 2)));
    assert_eq!(places(&db, "kind", "その他").await, None);

    // The page says how many places are left.
    let (_, _, page) = get(&browser(&server, &[host]), &u(&public)).await;
    assert!(
        page.contains("ソファ <span class=\"places\">（残り1）</span>"),
        "{page}"
    );

    // Two send at once for the last place: both were told it was free, both wait at
    // the option's row, one gets it and the other is shown the question again with
    // what it typed.
    let (c1, c2) = (browser(&server, &[host]), browser(&server, &[host]));
    let t1 = fill_in(&c1, &server, host, &public, "ソファ")
        .await
        .unwrap();
    let t2 = fill_in(&c2, &server, host, &public, "ソファ")
        .await
        .unwrap();
    let holder = admin_client(&t.database).await;
    let watch = admin_client(&t.database).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE option_places IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let submit = u(&format!("{public}/submit"));
    let sending = |c: reqwest::Client, token: String| {
        let submit = submit.clone();
        tokio::spawn(async move { post(&c, &submit, &[("_token", &token)]).await })
    };
    let s1 = sending(c1.clone(), t1);
    until_waiting(&watch, 1, &s1).await;
    let s2 = sending(c2.clone(), t2);
    until_waiting(&watch, 2, &s2).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let (r1, r2) = (s1.await.unwrap(), s2.await.unwrap());
    let mut outcomes = [r1.0, r2.0];
    outcomes.sort_unstable();
    assert_eq!(outcomes, [303, 409], "{r1:?} {r2:?}");
    let refused = if r1.0 == 409 { &r1.2 } else { &r2.2 };
    assert!(
        refused.contains("「ソファ」は定員に達しました。別の選択肢を選んでください")
            && refused.contains("value=\"花子\"")
            && refused.contains("ソファ <span class=\"places\">（満員）</span>"),
        "{refused}"
    );
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));
    // Staff see it on the form's page.
    let (_, _, page) = get(&admin.client, &u(&format!("/admin/forms/{form_id}"))).await;
    assert!(page.contains("品目「ソファ」 2/2（満員）"), "{page}");
    // And beside the totals (as the places stand, whatever the totals' filters).
    let (_, _, page) = get(
        &admin.client,
        &u(&format!("/admin/forms/{form_id}/totals?status=completed")),
    )
    .await;
    assert!(
        page.contains(
            "<td>ソファ</td><td>0</td><td>0.0</td><td class=\"places-cell\">2/2（満員）</td>"
        ),
        "{page}"
    );
    let r = admin
        .client
        .get(u(&format!("/admin/forms/{form_id}/totals.csv")))
        .send()
        .await
        .unwrap();
    let csv = r.text().await.unwrap();
    assert!(csv.contains(",定員（いまの受付済み/定員）\r\n"), "{csv}");
    assert!(
        csv.contains("品目,ソファ,2,100.0,2,2/2（満員）\r\n"),
        "{csv}"
    );
    let held: i64 = db
        .query_one(
            "SELECT count(*) FROM submission_places WHERE option = 'ソファ'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 2);

    // Full: shown so and not offered; one who chooses it all the same is told at
    // the confirmation step, and the other option still takes applications.
    let (_, _, page) = get(&browser(&server, &[host]), &u(&public)).await;
    assert!(
        page.contains("ソファ <span class=\"places\">（満員）</span>")
            && page.contains(r#"value="ソファ" disabled"#),
        "{page}"
    );
    let (status, page) = fill_in(&browser(&server, &[host]), &server, host, &public, "ソファ")
        .await
        .unwrap_err();
    assert_eq!(status, 422);
    assert!(page.contains("「ソファ」は定員に達しました"), "{page}");
    apply(&server, host, &public, "その他").await.unwrap();

    // Through the API the same: 409 with the question named.
    let token = madoguchi::control::tenant_admin::api_token(
        &env.platform,
        &t,
        "基幹連携",
        &["submissions:submit".to_owned()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let form: String = db
        .query_one(
            "SELECT public_id FROM forms WHERE id = $1",
            &[&form_id.parse::<i64>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let r = client_for(&server, &[host])
        .post(u(&format!("/api/v1/forms/{form}/submissions")))
        .bearer_auth(&token)
        .json(&json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": {
            "name.family": "窓口", "name.given": "一郎", "name.family_kana": "マドグチ", "name.given_kana": "イチロウ",
            "email": "ichiro@example.jp", "kind": "ソファ", "date": "2031-07-19" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("/option-full"), "{p}");
    assert_eq!(p["errors"][0]["field"], "kind", "{p}");

    // 却下 gives the place back.
    let first_id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM submissions WHERE receipt_number = $1",
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    let status_change = |id: uuid::Uuid, from: &'static str, to: &'static str| {
        let (client, csrf) = (&admin.client, admin.csrf.as_str());
        let u = u(&format!("/admin/submissions/{id}/status"));
        async move {
            post(
                client,
                &u,
                &[
                    ("csrf", csrf),
                    ("from", from),
                    ("to", to),
                    ("reason", "品目の写真を添えてください"),
                    ("deadline", "2099-12-31"),
                ],
            )
            .await
        }
    };
    let (status, _, body) = status_change(first_id, "received", "reviewing").await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));
    let (status, _, body) = status_change(first_id, "reviewing", "rejected").await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((1, 2)));
    let (_, _, page) = get(&browser(&server, &[host]), &u(&public)).await;
    assert!(page.contains("（残り1）"), "{page}");

    // A correction moves the place. ソファ full again, the application holding one of
    // its places is returned (差戻し): its page keeps ソファ chosen and open to it;
    // corrected to その他, ソファ has a place again; corrected back, it takes it.
    apply(&server, host, &public, "ソファ").await.unwrap();
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));
    let second_id: uuid::Uuid = db
        .query_one(
            "SELECT p.submission_id FROM submission_places p JOIN submissions s ON s.id = p.submission_id
              WHERE p.option = 'ソファ' ORDER BY s.submitted_at LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let second: String = db
        .query_one(
            "SELECT receipt_number FROM submissions WHERE id = $1",
            &[&second_id],
        )
        .await
        .unwrap()
        .get(0);
    let correct = |held: &'static str, choice: &'static str| {
        let second = second.clone();
        let (server, u) = (&server, &u);
        async move {
            let citizen = browser(server, &[host]);
            let (status, loc, body) = post(
                &citizen,
                &u("/status/resubmit"),
                &[("receipt", &second), ("email", "hanako.kasai@example.jp")],
            )
            .await;
            assert_eq!(status, 303, "{body}");
            let (_, _, form) = get(&citizen, &u(&loc)).await;
            // Its own place is its own: its choice is not taken from it.
            assert!(
                !form.contains("disabled")
                    && form.contains(&format!(r#"value="{held}" checked><label"#)),
                "{form}"
            );
            let token = capture(r#"name="_token" value="([^"]+)""#, &form);
            let (status, _, body) = post(
                &citizen,
                &u(&loc),
                &[
                    ("_token", token.as_str()),
                    ("_page", "0"),
                    ("_nav", "next"),
                    ("name.family", "葛西"),
                    ("name.given", "花子"),
                    ("name.family_kana", "カサイ"),
                    ("name.given_kana", "ハナコ"),
                    ("email", "hanako.kasai@example.jp"),
                    ("kind", choice),
                    ("other", "古いピアノ椅子"),
                ],
            )
            .await;
            assert_eq!(status, 303, "{body}");
            let (status, _, body) = post(
                &citizen,
                &u(&loc),
                &[
                    ("_token", token.as_str()),
                    ("_page", "1"),
                    ("_nav", "next"),
                    ("date", "2031-07-20"),
                ],
            )
            .await;
            assert_eq!(status, 303, "{body}");
            send(&citizen, server, host, &loc, &token).await.unwrap()
        }
    };
    let (status, _, body) = status_change(second_id, "received", "reviewing").await;
    assert_eq!(status, 303, "{body}");
    let (status, _, body) = status_change(second_id, "reviewing", "returned").await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(correct("ソファ", "その他").await, second);
    assert_eq!(places(&db, "kind", "ソファ").await, Some((1, 2)));
    let (status, _, body) = status_change(second_id, "received", "reviewing").await;
    assert_eq!(status, 303, "{body}");
    let (status, _, body) = status_change(second_id, "reviewing", "returned").await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(correct("その他", "ソファ").await, second);
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));

    // A finished application deleted (削除) gives its place back too.
    let (status, _, body) = status_change(second_id, "received", "reviewing").await;
    assert_eq!(status, 303, "{body}");
    let (status, _, body) = status_change(second_id, "reviewing", "completed").await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));
    let (status, _, body) = post(
        &admin.client,
        &u(&format!("/admin/submissions/{second_id}/delete")),
        &[
            ("csrf", &admin.csrf),
            ("reason", "test"),
            ("receipt", &second),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((1, 2)));
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM submission_places WHERE submission_id = $1",
            &[&second_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a deleted application's places are listed no more");

    // Publishing counts again from the applications (the rejected one holds none);
    // a limit below what is taken is refused.
    db.execute("UPDATE option_places SET taken = 0", &[])
        .await
        .unwrap();
    let (status, _, page) = publish().await;
    assert_eq!(status, 200);
    assert!(page.contains("第3版を公開しました"), "{page}");
    assert_eq!(places(&db, "kind", "ソファ").await, Some((1, 2)));
    apply(&server, host, &public, "ソファ").await.unwrap();
    let (status, _, _) = kind("ソファ=1\r\nその他=5").await;
    assert_eq!(status, 303);
    let (_, _, page) = publish().await;
    assert!(
        page.contains("選択肢「ソファ」の定員を、既にこの選択肢を選んだ申請の件数（2件）より少なくすることはできません"),
        "{page}"
    );
    assert_eq!(places(&db, "kind", "ソファ").await, Some((2, 2)));
    assert_eq!(places(&db, "kind", "その他").await, None);

    // A publish that reads the applications again (その他 newly limited) while a
    // member of staff holds one of them for a status change: neither waits for the
    // other in a circle (40P01 for one of them).
    let (status, _, _) = kind("ソファ=5\r\nその他=5").await;
    assert_eq!(status, 303);
    let staff_change = admin_client(&t.database).await;
    let held_case: uuid::Uuid = db
        .query_one(
            "SELECT submission_id FROM submission_places WHERE option = 'ソファ' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    staff_change.batch_execute("BEGIN").await.unwrap();
    staff_change
        .execute(
            "SELECT status FROM submissions WHERE id = $1 FOR UPDATE",
            &[&held_case],
        )
        .await
        .unwrap();
    let publishing = {
        let (client, csrf, u) = (
            admin.client.clone(),
            admin.csrf.clone(),
            u(&format!("/admin/forms/{form_id}/publish")),
        );
        tokio::spawn(async move { post(&client, &u, &[("csrf", &csrf)]).await })
    };
    until_waiting(&watch, 1, &publishing).await;
    let updated = tokio::spawn(async move {
        staff_change
            .execute(
                "UPDATE submissions SET updated_at = now() WHERE id = $1",
                &[&held_case],
            )
            .await?;
        staff_change.batch_execute("COMMIT").await
    });
    let (status, _, page) = publishing.await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("第4版を公開しました"), "{page}");
    updated.await.unwrap().unwrap();
    assert_eq!(places(&db, "kind", "その他").await, Some((1, 5)));
    server.shutdown().await;
}
