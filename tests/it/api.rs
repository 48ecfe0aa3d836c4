//! The integration API over HTTP: tokens and scopes, forms, submissions, status,
//! RFC 9457 problems, and the OpenAPI document as a snapshot.

use serde_json::{json, Value};

use crate::harness::{client_for, unique, url, TestEnv};

async fn token(env: &TestEnv, t: &madoguchi::catalog::TenantRecord, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    madoguchi::control::tenant_admin::api_token(
        &env.platform,
        t,
        "基幹連携",
        &scopes,
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap()
}

const FORM: &str = r#"{ "format": "madoguchi.form/1", "title": "犬の登録", "pages": [ { "id": "p1", "fields": [
    { "id": "owner", "type": "name", "label": "飼い主", "required": true },
    { "id": "email", "type": "email", "label": "メールアドレス", "required": true },
    { "id": "breeds", "type": "multi_choice", "label": "犬種", "options": ["柴犬", "秋田犬", "その他"], "required": true }
] } ] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_end_to_end() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &a, FORM, "生活衛生課", true)
            .await
            .unwrap();
    let form = public.trim_start_matches("/f/").to_owned();
    let server = env.serve().await;
    let (ha, hb) = (a.hosts[0].as_str(), b.hosts[0].as_str());
    let c = client_for(&server, &[ha, hb]);
    let full = token(
        &env,
        &a,
        &[
            "forms:read",
            "submissions:read",
            "submissions:write",
            "submissions:submit",
        ],
    )
    .await;
    let read_only = token(&env, &a, &["forms:read"]).await;
    let api = |host: &str, path: &str| url(&server, host, &format!("/api/v1{path}"));

    // No token, a wrong token, another tenant's token: 401 problem documents.
    let r = c.get(api(ha, "/forms")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 401);
    assert!(p["type"].as_str().unwrap().starts_with("https://"));
    assert_eq!(
        c.get(api(hb, "/forms"))
            .bearer_auth(&full)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "tenant A's token on tenant B"
    );

    // Forms.
    let forms: Value = c
        .get(api(ha, "/forms"))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forms[0]["id"], form.as_str());
    assert_eq!(forms[0]["availability"], "open");
    let def: Value = c
        .get(api(ha, &format!("/forms/{form}")))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(def["format"], "madoguchi.form/1");

    // Submit: scope checked, answers checked, idempotent.
    let body = json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": {
        "owner.family": "山田", "owner.given": "花子", "owner.family_kana": "ヤマダ", "owner.given_kana": "ハナコ",
        "email": "yamada@example.jp", "breeds": ["柴犬", "その他"] } });
    let r = c
        .post(api(ha, &format!("/forms/{form}/submissions")))
        .bearer_auth(&read_only)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(api(ha, &format!("/forms/{form}/submissions")))
        .bearer_auth(&full)
        .json(&json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": { "email": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["owner", "email", "breeds"]);
    let r = c
        .post(api(ha, &format!("/forms/{form}/submissions")))
        .bearer_auth(&full)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let again: Value = c
        .post(api(ha, &format!("/forms/{form}/submissions")))
        .bearer_auth(&full)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["receipt_number"].clone(), again["created"].clone()),
        (created["receipt_number"].clone(), json!(false))
    );
    // Requests that do not parse get problem documents too.
    for (r, status) in [
        (
            c.post(api(ha, &format!("/forms/{form}/submissions")))
                .bearer_auth(&full)
                .json(&json!({})),
            422,
        ),
        (
            c.post(api(ha, &format!("/forms/{form}/submissions")))
                .bearer_auth(&full)
                .body("not json")
                .header("content-type", "application/json"),
            400,
        ),
        (
            c.get(api(ha, "/submissions/not-a-uuid")).bearer_auth(&full),
            400,
        ),
        (
            c.get(api(ha, "/submissions?limit=many")).bearer_auth(&full),
            400,
        ),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status);
        assert!(
            p["detail"].as_str().unwrap().contains("正しくありません")
                || p["detail"].as_str().unwrap().contains("読み取れません"),
            "{p}"
        );
    }
    // An address under /api/ that names nothing is a problem document too, not the
    // citizens' HTML page; elsewhere the page stays.
    let r = c
        .get(api(ha, "/nothing-here"))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"].as_str().unwrap().ends_with("/problems/not-found"),
        "{p}"
    );
    let r = c
        .get(url(&server, ha, "/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // A retry is answered as such even after the form closed (or filled up), and a
    // key used for one form is refused on another.
    let db = env.tenant_conn(&a).await;
    db.client
        .execute("UPDATE forms SET closed = true", &[])
        .await
        .unwrap();
    let r = c
        .post(api(ha, &format!("/forms/{form}/submissions")))
        .bearer_auth(&full)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a stored application retried after closing was refused"
    );
    let retried: Value = r.json().await.unwrap();
    assert_eq!(retried["receipt_number"], created["receipt_number"]);
    db.client
        .execute("UPDATE forms SET closed = false", &[])
        .await
        .unwrap();
    let other = madoguchi::control::tenant_admin::import_form(
        &env.platform,
        &a,
        &FORM.replace("犬の登録", "犬の登録（変更）"),
        "生活衛生課",
        true,
    )
    .await
    .unwrap();
    let other = other.trim_start_matches("/f/").to_owned();
    let r = c
        .post(api(ha, &format!("/forms/{other}/submissions")))
        .bearer_auth(&full)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused"),
        "{p}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    // One submission for the two requests: its history starts with 受付 by the
    // integration, and one e-mailed copy waits in the outbox.
    let uid: uuid::Uuid = id.parse().unwrap();
    let events = db
        .client
        .query(
            "SELECT actor_label, from_status, to_status FROM submission_events WHERE submission_id = $1",
            &[&uid],
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].get::<_, &str>(0).ends_with(":基幹連携"));
    assert_eq!(
        (
            events[0].get::<_, Option<&str>>(1),
            events[0].get::<_, &str>(2)
        ),
        (None, "received")
    );
    let mails = crate::forms::receipt_mails(&env, &a, uid).await;
    assert_eq!(
        mails,
        [json!({ "template": "received", "to": "yamada@example.jp" })]
    );
    let second = json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": {
        "owner.family": "佐藤", "owner.given": "一郎", "owner.family_kana": "サトウ", "owner.given_kana": "イチロウ",
        "email": "sato@example.jp", "breeds": "秋田犬" } });
    assert_eq!(
        c.post(api(ha, &format!("/forms/{form}/submissions")))
            .bearer_auth(&full)
            .json(&second)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    // List with cursor pagination; get one with its answers.
    let page1: Value = c
        .get(api(ha, "/submissions?limit=1"))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page1["items"].as_array().unwrap().len(), 1);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: Value = c
        .get(api(ha, &format!("/submissions?limit=1&cursor={cursor}")))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
    assert!(page2["next_cursor"].is_null());
    assert!(
        page1["items"][0].get("answers").is_none(),
        "lists carry no answers"
    );
    let one: Value = c
        .get(api(ha, &format!("/submissions/{id}")))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        one["answers"]["owner"]["value"],
        "山田\u{3000}花子（ヤマダ\u{3000}ハナコ）"
    );
    assert_eq!(
        one["answers"]["breeds"]["answer"]["v"],
        json!(["柴犬", "その他"])
    );
    assert_eq!(
        c.get(api(ha, &format!("/submissions/{id}")))
            .bearer_auth(&read_only)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // Status: within the workflow only.
    let r = c
        .post(api(ha, &format!("/submissions/{id}/status")))
        .bearer_auth(&full)
        .json(&json!({ "to": "completed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"]
        .as_str()
        .unwrap()
        .contains("「受付」から「完了」には変更できません"));
    let r = c
        .post(api(ha, &format!("/submissions/{id}/status")))
        .bearer_auth(&full)
        .json(&json!({ "to": "reviewing", "from": "received", "notify": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["status"], "reviewing");
    let filtered: Value = c
        .get(api(ha, "/submissions?status=reviewing"))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    // A 差戻し by the integration: its message to the applicant is shown to staff as
    // the integration's, not the applicant's.
    let r = c
        .post(api(ha, &format!("/submissions/{id}/status")))
        .bearer_auth(&full)
        .json(&json!({ "to": "returned", "from": "reviewing", "reason": "写真を添付してください", "deadline": "2031-08-31" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = crate::forms::staff(
        &env,
        &server,
        &a,
        madoguchi::tenant::staff::Role::Admin,
        None,
    )
    .await;
    let (_, _, case) = crate::forms::get(
        &admin.client,
        &url(&server, ha, &format!("/admin/submissions/{id}")),
    )
    .await;
    assert!(
        case.contains("・API（基幹連携）・申請者へのメッセージ"),
        "{case}"
    );
    assert!(!case.contains("・申請者・申請者へのメッセージ"), "{case}");
    // Asked to (`notify`), the integration's change to 審査中 told the applicant too.
    assert!(
        case.contains("申請の状況が「審査中」になりました。申請の審査を始めました。"),
        "{case}"
    );

    // Every token use is in the operation log.
    let conn = env.tenant_conn(&a).await;
    let uses: i64 = conn
        .client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'api.use'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(uses >= 12, "{uses}");
    // Last use is kept (to the minute), for the token list.
    let used: Vec<(String, bool)> = conn
        .client
        .query(
            "SELECT name, last_used_at IS NOT NULL AND last_used_at > now() - interval '2 minutes' FROM api_tokens ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(used.iter().any(|(_, recent)| *recent), "{used:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn openapi_document_is_the_published_interface() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let c = client_for(&server, &[&a.hosts[0]]);
    let doc: Value = c
        .get(url(&server, &a.hosts[0], "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // Every operation declares the errors any request can meet, and every error
    // is a problem document, as the handlers send them.
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for code in ["400", "401", "403", "503"] {
                assert!(responses.contains_key(code), "{method} {path} lacks {code}");
            }
            for (code, r) in responses {
                if !code.starts_with('2') {
                    assert!(
                        r["content"].get("application/problem+json").is_some(),
                        "{method} {path} {code} is not a problem document"
                    );
                }
            }
        }
    }
    // A change to the interface shows up here (cargo insta review).
    insta::assert_json_snapshot!("openapi", doc);
    server.shutdown().await;
}

/// Paging never passes a change still being made: a status change that started
/// before a later submission but commits after it is not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_does_not_pass_a_change_still_being_made() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("pg"), "千代田区", "131016").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &a, FORM, "生活衛生課", true)
            .await
            .unwrap();
    let form = public.trim_start_matches("/f/").to_owned();
    let server = env.serve().await;
    let h = a.hosts[0].as_str();
    let c = client_for(&server, &[h]);
    let tok = token(&env, &a, &["submissions:read", "submissions:submit"]).await;
    let submit = |n: u32| {
        let r = c
            .post(url(&server, h, &format!("/api/v1/forms/{form}/submissions")))
            .bearer_auth(&tok)
            .json(&json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": {
                "owner.family": "山田", "owner.given": format!("{n}郎"), "owner.family_kana": "ヤマダ",
                "owner.given_kana": "タロウ", "email": "yamada@example.jp", "breeds": "柴犬" } }))
            .send();
        async move {
            r.await.unwrap().json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let list = |cursor: Option<String>| {
        let mut u = url(&server, h, "/api/v1/submissions?limit=100");
        if let Some(c) = cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let r = c.get(u).bearer_auth(&tok).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = submit(1).await;
    // A change to the first begins (its row will carry this moment) ...
    let mut conn = env.tenant_conn(&a).await;
    let tx = conn.client.transaction().await.unwrap();
    let id: uuid::Uuid = first.parse().unwrap();
    tx.execute(
        "UPDATE submissions SET status = 'reviewing', updated_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ... a second application is stored meanwhile, and a client pages to the end.
    let second = submit(2).await;
    let mut seen: Vec<String> = Vec::new();
    let page = list(None).await;
    for item in page["items"].as_array().unwrap() {
        seen.push(item["id"].as_str().unwrap().to_owned());
    }
    let last = page["items"].as_array().unwrap().last().map(|i| {
        (
            i["updated_at"].as_str().unwrap().to_owned(),
            i["id"].as_str().unwrap().to_owned(),
        )
    });
    tx.commit().await.unwrap();
    // Resuming after the last item seen, the client now gets both changes.
    let (at, last_id) = last.unwrap();
    let at =
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).unwrap();
    use base64::Engine;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}_{last_id}", at.unix_timestamp_nanos() / 1000));
    let page = list(Some(cursor)).await;
    let later: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        later.contains(&first.as_str()),
        "the first's change was skipped: {seen:?} then {later:?}"
    );
    assert!(seen.contains(&second) || later.contains(&second.as_str()));

    // The same when the change's transaction reads first and writes only after the
    // client paged: while the client read, it had no transaction id yet.
    let tx = conn.client.transaction().await.unwrap();
    tx.query_one("SELECT status FROM submissions WHERE id = $1", &[&id])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let third = submit(3).await;
    let page = list(None).await;
    let items = page["items"].as_array().unwrap();
    let seen: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let last = items.last().unwrap();
    let at = time::OffsetDateTime::parse(
        last["updated_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}_{}",
        at.unix_timestamp_nanos() / 1000,
        last["id"].as_str().unwrap()
    ));
    tx.execute(
        "UPDATE submissions SET status = 'completed', updated_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let page = list(Some(cursor)).await;
    let later: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        later.contains(&first.as_str()),
        "the change of a transaction that read first was skipped: {seen:?} then {later:?}"
    );
    assert!(seen.contains(&third.as_str()) || later.contains(&third.as_str()));

    // A transaction the service leaves open and idle (a bug, a hung client) ends on
    // its own, so none holds paging back for long.
    let p = &env.platform;
    let pw = madoguchi::control::cluster::tenant_password(&p.catalog, p.keys.as_ref(), &a)
        .await
        .unwrap();
    let service = p
        .cluster
        .connect(&p.cluster.tenant_config(&a, &pw))
        .await
        .unwrap();
    let idle: String = service
        .client
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle, madoguchi::control::cluster::IDLE_IN_TRANSACTION);
    server.shutdown().await;
}

/// An idempotency key answers only its own retry: the same form, the same token, the
/// same answers. Another token using the key (another system of the city, with fewer
/// rights perhaps) learns nothing of the application it made, and other answers under
/// a used key are refused instead of being answered with an application that is not
/// theirs; the same holds when the two requests arrive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_only_its_own_retry() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("idem"), "千代田区", "131016").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &a, FORM, "生活衛生課", true)
            .await
            .unwrap();
    let form = public.trim_start_matches("/f/").to_owned();
    let server = env.serve().await;
    let host = a.hosts[0].as_str();
    let c = client_for(&server, &[host]);
    let first = token(&env, &a, &["submissions:submit"]).await;
    let second = token(&env, &a, &["submissions:submit"]).await;
    let submissions = url(&server, host, &format!("/api/v1/forms/{form}/submissions"));
    let body = |key: uuid::Uuid, email: &str| {
        json!({ "idempotency_key": key, "answers": {
            "owner.family": "鈴木", "owner.given": "一郎", "owner.family_kana": "スズキ", "owner.given_kana": "イチロウ",
            "email": email, "breeds": ["秋田犬"] } })
    };
    let send = |token: &str, body: Value| {
        let r = c.post(&submissions).bearer_auth(token).json(&body).send();
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };

    let key = uuid::Uuid::new_v4();
    let (status, made) = send(&first, body(key, "suzuki@example.jp")).await;
    assert_eq!(status, 201, "{made}");
    let made: Value = serde_json::from_str(&made).unwrap();
    let receipt = made["receipt_number"].as_str().unwrap();

    // The same key from another token: refused, without the application's number.
    let (status, refused) = send(&second, body(key, "suzuki@example.jp")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("idempotency-key-reused"), "{refused}");
    assert!(refused.contains("別の連携"), "{refused}");
    assert!(!refused.contains(receipt), "{refused}");
    assert!(!refused.contains(made["id"].as_str().unwrap()), "{refused}");
    // The same token, the same key, other answers: refused.
    let (status, refused) = send(&first, body(key, "ichiro@example.jp")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("別の内容の申請"), "{refused}");
    // The real retry is answered with the application it stored.
    let (status, again) = send(&first, body(key, "suzuki@example.jp")).await;
    assert_eq!(status, 200, "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        (&again["receipt_number"], &again["created"]),
        (&made["receipt_number"], &json!(false))
    );

    // Two tokens sending one key at the same moment: one application, for one of
    // them; the other is refused and not told its number.
    for _ in 0..5 {
        let key = uuid::Uuid::new_v4();
        let (one, two) = tokio::join!(
            send(&first, body(key, "suzuki@example.jp")),
            send(&second, body(key, "suzuki@example.jp")),
        );
        let mut statuses = [one.0, two.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{one:?} {two:?}");
        let (made, refused) = if one.0 == 201 {
            (one.1, two.1)
        } else {
            (two.1, one.1)
        };
        let made: Value = serde_json::from_str(&made).unwrap();
        assert!(
            !refused.contains(made["receipt_number"].as_str().unwrap()),
            "{refused}"
        );
    }
    let db = env.tenant_conn(&a).await;
    let stored: i64 = db
        .client
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 6);
    server.shutdown().await;
}

/// Deleted applications (申請の削除, 保存期間) leave the list of submissions and appear
/// in `/api/v1/deletions`, oldest first, a page at a time, with only what identifies
/// them, so a connected system deletes its copies too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_listed_for_connected_systems() {
    use madoguchi::tenant::cases::retention;
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &a, FORM, "生活衛生課", true)
            .await
            .unwrap();
    let form = public.trim_start_matches("/f/").to_owned();
    let server = env.serve().await;
    let host = a.hosts[0].as_str();
    let c = client_for(&server, &[host]);
    let full = token(
        &env,
        &a,
        &[
            "submissions:read",
            "submissions:write",
            "submissions:submit",
        ],
    )
    .await;
    let forms_only = token(&env, &a, &["forms:read"]).await;
    let api = |path: &str| url(&server, host, &format!("/api/v1{path}"));
    let get = |path: String, bearer: String| {
        let (c, u) = (c.clone(), api(&path));
        async move {
            let r = c.get(u).bearer_auth(bearer).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let mut made = Vec::new();
    let mut sent = Vec::new();
    let submit = |body: Value| {
        let (c, u, bearer) = (
            c.clone(),
            api(&format!("/forms/{form}/submissions")),
            full.clone(),
        );
        async move {
            c.post(u)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for n in 0..3 {
        let body = json!({ "idempotency_key": uuid::Uuid::new_v4(), "answers": {
                "owner.family": "山田", "owner.given": format!("花子{n}"), "owner.family_kana": "ヤマダ",
                "owner.given_kana": "ハナコ", "email": "yamada@example.jp", "breeds": ["柴犬"] } });
        sent.push(body.clone());
        let r = submit(body).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let id: uuid::Uuid = v["id"].as_str().unwrap().parse().unwrap();
        for (from, to) in [("received", "reviewing"), ("reviewing", "completed")] {
            let r = c
                .post(api(&format!("/submissions/{id}/status")))
                .bearer_auth(&full)
                .json(&json!({ "from": from, "to": to }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        made.push((id, v["receipt_number"].as_str().unwrap().to_owned()));
    }
    let (status, page) = get("/deletions".into(), full.clone()).await;
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 0));

    // One deleted by staff; one past its form's 保存期間.
    let mut conn = env.tenant_conn(&a).await;
    let staff = madoguchi::tenant::audit::Actor::Staff {
        id: 1,
        email: "kanri@city.example.jp".into(),
    };
    retention::delete_one(
        &mut conn.client,
        &staff,
        made[0].0,
        &made[0].1,
        retention::Reason::Test,
    )
    .await
    .unwrap()
    .unwrap();
    conn.client
        .execute(
            "UPDATE form_versions SET definition = jsonb_set(definition, '{settings}', coalesce(definition->'settings', '{}') || '{\"retention_years\": 1}')",
            &[],
        )
        .await
        .unwrap();
    conn.client
        .execute(
            "UPDATE submission_events SET at = '2020-06-01T09:00:00+09:00' WHERE submission_id = $1",
            &[&made[1].0],
        )
        .await
        .unwrap();
    assert_eq!(
        retention::purge_expired(&mut conn.client, time::OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );

    // Listed in the order they were deleted, a page at a time; gone from the list of
    // submissions; nothing of their content.
    let (_, first) = get("/deletions?limit=1".into(), full.clone()).await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], made[0].0.to_string());
    assert_eq!(items[0]["receipt_number"], made[0].1.as_str());
    assert_eq!(items[0]["form"], form.as_str());
    assert_eq!(items[0]["cause"], "staff");
    assert_eq!(
        items[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cause", "deleted_at", "form", "id", "receipt_number"]
    );
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = get(format!("/deletions?limit=1&cursor={cursor}"), full.clone()).await;
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], made[1].0.to_string());
    assert_eq!(items[0]["cause"], "retention");
    assert!(second["next_cursor"].is_null(), "{second}");
    let (_, left) = get("/submissions".into(), full.clone()).await;
    let ids: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [made[2].0.to_string()]);
    let (status, _) = get(format!("/submissions/{}", made[0].0), full.clone()).await;
    assert_eq!(status, 404);
    // A retry with a deleted application's idempotency key is told so, and makes no
    // second application; the one left is still answered as a retry.
    for gone in &sent[..2] {
        let r = submit(gone.clone()).await;
        assert_eq!(r.status(), 409);
        let p: Value = r.json().await.unwrap();
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .ends_with("idempotency-key-deleted")
                && p["detail"].as_str().unwrap().contains("削除されています"),
            "{p}"
        );
    }
    let r = submit(sent[2].clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], made[2].0.to_string());
    let (_, left) = get("/submissions".into(), full.clone()).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 1, "{left}");
    // Another system's token learns nothing of it: the key is free for it.
    let other = token(&env, &a, &["submissions:submit"]).await;
    let r = c
        .post(api(&format!("/forms/{form}/submissions")))
        .bearer_auth(&other)
        .json(&sent[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // `since` after both: none. A bad cursor or time: 400. Without the scope: 403.
    let (_, none) = get("/deletions?since=2999-01-01T00:00:00Z".into(), full.clone()).await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    for bad in ["/deletions?cursor=xyz", "/deletions?since=yesterday"] {
        let (status, p) = get(bad.into(), full.clone()).await;
        assert_eq!(status, 400, "{bad}: {p}");
    }
    let (status, _) = get("/deletions".into(), forms_only).await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

/// Where a token may be used from: by default the admin screen's network rule (its
/// address ranges and zones, as they are at each use); or only its own address
/// ranges; or anywhere. A refusal says why, is logged (once a minute per address)
/// and is not counted as the token's last use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_used_only_from_where_it_may_be() {
    use madoguchi::tenant::api::tokens::TokenNetwork;
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = a.hosts[0].as_str();
    let c = client_for(&server, &[host]);
    let made = |name: &'static str, network: TokenNetwork| {
        let (env, a) = (&env, &a);
        async move {
            madoguchi::control::tenant_admin::api_token(
                &env.platform,
                a,
                name,
                &["forms:read".to_owned()],
                &network,
            )
            .await
            .unwrap()
        }
    };
    let admin_rule = made("管理画面と同じ", TokenNetwork::Admin).await;
    let here = made(
        "この端末",
        TokenNetwork::parse("listed", "１２７．０．０．１\n192.0.2.0/24").unwrap(),
    )
    .await;
    let elsewhere = made(
        "別の端末",
        TokenNetwork::parse("listed", "192.0.2.0/24, 2001:db8::/32").unwrap(),
    )
    .await;
    let anywhere = made("どこでも", TokenNetwork::parse("any", "").unwrap()).await;
    for (choice, ranges) in [
        ("listed", ""),
        ("listed", "192.0.2.0/33"),
        ("somewhere", ""),
    ] {
        assert!(
            TokenNetwork::parse(choice, ranges).is_err(),
            "{choice} {ranges}"
        );
    }
    let forms = url(&server, host, "/api/v1/forms");
    let status_of = |token: String| {
        let (c, forms) = (c.clone(), forms.clone());
        async move {
            let r = c.get(forms).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // The admin rule allows any address of either zone: all but the other address.
    for (token, expected) in [
        (&admin_rule, 200),
        (&here, 200),
        (&elsewhere, 403),
        (&anywhere, 200),
    ] {
        let (status, body) = status_of(token.clone()).await;
        assert_eq!(status, expected, "{body}");
    }
    let (_, refused) = status_of(elsewhere.clone()).await;
    assert!(
        refused.contains("network-refused")
            && refused.contains(
                "このAPIトークンは、このネットワーク（127.0.0.1、internet）からは使えません"
            ),
        "{refused}"
    );
    // The admin rule narrowed to other addresses, then to LGWAN only: the token that
    // follows it is refused at once; the others are not.
    let conn = env.tenant_conn(&a).await;
    for sql in [
        "UPDATE settings SET admin_cidrs = '{198.51.100.0/24}'",
        "UPDATE settings SET admin_cidrs = '{}', admin_zones = '{lgwan}'",
    ] {
        conn.client.execute(sql, &[]).await.unwrap();
        for (token, expected) in [(&admin_rule, 403), (&here, 200), (&anywhere, 200)] {
            let (status, body) = status_of(token.clone()).await;
            assert_eq!(status, expected, "{sql}: {body}");
        }
    }
    conn.client
        .execute(
            "UPDATE settings SET admin_cidrs = '{127.0.0.0/8}', admin_zones = '{internet}'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status_of(admin_rule.clone()).await.0, 200);
    // Refusals: logged once a minute per address and token (each of the two refused
    // twice), never a last use.
    let refused: Vec<(String, String)> = conn
        .client
        .query(
            "SELECT actor, detail FROM audit_log WHERE action = 'api.refused' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].0.contains("別の端末")
            && refused[1].0.contains("管理画面と同じ")
            && refused.iter().all(|r| r.1.contains("\"ip\":\"127.0.0.1\"")),
        "{refused:?}"
    );
    let unused: Option<time::OffsetDateTime> = conn
        .client
        .query_one(
            "SELECT last_used_at FROM api_tokens WHERE name = '別の端末'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unused, None);
    // The admin screen: the rule by default, a list refused when malformed, and the
    // list shows where each token may be used from.
    let admin = crate::forms::staff(
        &env,
        &server,
        &a,
        madoguchi::tenant::staff::Role::Admin,
        None,
    )
    .await;
    let screen = url(&server, host, "/admin/api-tokens");
    let (_, _, page) = crate::forms::get(&admin.client, &screen).await;
    assert!(
        page.contains(r#"name="network" value="admin" checked"#),
        "{page}"
    );
    // The network page says which tokens its rule reaches (one follows it).
    let (_, _, access) =
        crate::forms::get(&admin.client, &url(&server, host, "/admin/access")).await;
    assert!(
        access.contains("有効なAPIトークン（1件）にも、保存したときからかかります"),
        "{access}"
    );
    let (status, _, page) = crate::forms::post(
        &admin.client,
        &screen,
        &[
            ("csrf", admin.csrf.as_str()),
            ("name", "文書管理"),
            ("scopes", "forms:read"),
            ("network", "listed"),
            ("cidrs", "庁内"),
        ],
    )
    .await;
    assert!(
        status == 422 && page.contains("アドレス範囲の形式が正しくありません: 庁内"),
        "{page}"
    );
    let (status, _, page) = crate::forms::post(
        &admin.client,
        &screen,
        &[
            ("csrf", admin.csrf.as_str()),
            ("name", "文書管理"),
            ("scopes", "forms:read"),
            ("network", "listed"),
            ("cidrs", "10.1.2.3\r\n10.20.0.0/16"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    for shown in [
        "次のアドレスのみ: 10.1.2.3/32, 10.20.0.0/16",
        "次のアドレスのみ: 127.0.0.1/32, 192.0.2.0/24",
        "管理画面と同じネットワーク制限",
        "制限なし（どこからでも）",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    server.shutdown().await;
}
