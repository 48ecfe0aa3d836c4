//! 鍵の更新: rotating a municipality's data key seals every value again under a new
//! version and computes the blind indexes again; the municipality works as before,
//! a rotation cut short keeps it closed until finished, and a copy restored from a
//! backup made before the rotation is brought under the new key.

use madoguchi::catalog::{TenantRecord, TenantState};
use madoguchi::control::backup::{self, DirStore};
use madoguchi::control::{data_key, tenant_admin};
use madoguchi::crypto::{DataKey, FieldCipher, FieldRef};
use madoguchi::tenant::staff::{now_unix, totp_code, Role};
use uuid::Uuid;

use crate::forms::{apply, browser, build_form, capture, dept_id, get, post, staff};
use crate::harness::{unique, url, TestEnv};

/// Every sealed value of the database as (`table.column`, row, value), the answers
/// one by one, in a fixed order.
const SEALED_SQL: &str = "
    SELECT 'staff.totp_secret', id::text, totp_secret FROM staff WHERE totp_secret IS NOT NULL
    UNION ALL SELECT 'citizen_drafts.inputs', id::text, inputs FROM citizen_drafts WHERE inputs IS NOT NULL
    UNION ALL SELECT 'submissions.answers', s.id || ':' || a.key, decode(a.value #>> '{}', 'base64') FROM submissions s, jsonb_each(s.answers) a
    UNION ALL SELECT 'submissions.return_reason', id::text, return_reason FROM submissions WHERE return_reason IS NOT NULL
    UNION ALL SELECT 'submission_events.comment', id::text, comment FROM submission_events WHERE comment IS NOT NULL
    UNION ALL SELECT 'submission_notes.body', id::text, body FROM submission_notes
    UNION ALL SELECT 'outbox.payload', id::text, payload FROM outbox WHERE length(payload) > 0
    UNION ALL SELECT 'attachments.content', id::text, content FROM attachments
    UNION ALL SELECT 'draft_identities.claims', draft_id::text, claims FROM draft_identities
    UNION ALL SELECT 'submission_identities.claims', submission_id::text, claims FROM submission_identities
    UNION ALL SELECT 'identity_provider.client_secret', id::text, client_secret FROM identity_provider
    ORDER BY 1, 2";

/// (`table.column`, key version, ciphertext) of every sealed value.
async fn sealed(db: &tokio_postgres::Client) -> Vec<(String, u32, Vec<u8>)> {
    db.query(SEALED_SQL, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let ct: Vec<u8> = r.get(2);
            let v = FieldCipher::version_of(&ct)
                .unwrap_or_else(|| panic!("{}: not a ciphertext", r.get::<_, String>(0)));
            (r.get(0), v, ct)
        })
        .collect()
}

fn versions(values: &[(String, u32, Vec<u8>)]) -> std::collections::BTreeSet<(String, u32)> {
    values.iter().map(|(c, v, _)| (c.clone(), *v)).collect()
}

/// The values no page of the service reads back in this test (an identity provider,
/// verified identities, an attached file), sealed as the service seals them.
async fn seal_the_rest(env: &TestEnv, t: &TenantRecord, submission: Uuid) -> Uuid {
    let cipher = tenant_admin::tenant_cipher(&env.platform, t).await.unwrap();
    let db = env.tenant_conn(t).await;
    let seal = |table: &str, column: &str, row: &str, plain: &[u8]| {
        cipher
            .encrypt(
                &FieldRef {
                    table,
                    column,
                    row_id: row,
                },
                plain,
            )
            .unwrap()
    };
    let secret = madoguchi::tenant::identity::seal_secret(&cipher, "client-secret-1").unwrap();
    db.client
        .execute(
            "INSERT INTO identity_provider (issuer, authorization_endpoint, token_endpoint, jwks_uri, token_auth, client_id, client_secret, scopes, label, updated_by)
             VALUES ('https://idp.example', 'https://idp.example/a', 'https://idp.example/t', 'https://idp.example/k', 'client_secret_basic', 'c', $1, 'openid', 'マイナンバーカード', 'test')",
            &[&secret],
        )
        .await
        .unwrap();
    let claims = br#"{"subject":"s-1","name":"\u8475\u897f \u82b1\u5b50"}"#;
    let draft: Uuid = db
        .client
        .query_one(
            "SELECT id FROM citizen_drafts WHERE inputs IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .execute(
            "INSERT INTO draft_identities (draft_id, issuer, claims, verified_at) VALUES ($1, 'https://idp.example', $2, now())",
            &[&draft, &seal("draft_identities", "claims", &draft.to_string(), claims)],
        )
        .await
        .unwrap();
    db.client
        .execute(
            "INSERT INTO submission_identities (submission_id, issuer, claims, verified_at) VALUES ($1, 'https://idp.example', $2, now())",
            &[&submission, &seal("submission_identities", "claims", &submission.to_string(), claims)],
        )
        .await
        .unwrap();
    let file = Uuid::new_v4();
    db.client
        .execute(
            "INSERT INTO attachments (id, form_id, field_id, submission_id, content, size)
             SELECT $1, form_id, 'file', id, $2, 4 FROM submissions WHERE id = $3",
            &[
                &file,
                &seal("attachments", "content", &file.to_string(), b"%PDF"),
                &submission,
            ],
        )
        .await
        .unwrap();
    file
}

async fn submission_id(db: &tokio_postgres::Client, receipt: &str) -> Uuid {
    db.query_one(
        "SELECT id FROM submissions WHERE receipt_number = $1",
        &[&receipt],
    )
    .await
    .unwrap()
    .get(0)
}

/// The applicant's status page for `receipt` at `host`, once the service has heard
/// of the municipality there (a restored copy is announced by the catalog).
async fn look_up(server: &madoguchi::front::Server, host: &str, receipt: &str) -> String {
    for _ in 0..100 {
        let (status, _, page) = post(
            &browser(server, &[host]),
            &url(server, host, "/status"),
            &[("receipt", receipt), ("email", "hanako.kasai@example.jp")],
        )
        .await;
        if status != 503 && status != 404 {
            assert_eq!(status, 200, "{page}");
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{host} does not answer");
}

/// The page at `u` once the service has heard that the municipality is open again.
async fn open_again(c: &reqwest::Client, u: &str) -> String {
    for _ in 0..100 {
        let (status, _, page) = get(c, u).await;
        if status != 503 {
            assert_eq!(status, 200, "{page}");
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{u} still answers 503");
}

/// A data-key version `version` of `t` made as a rotation makes it, with nothing sealed
/// with it yet: a rotation cut short.
pub(crate) async fn made_but_not_used(env: &TestEnv, t: &TenantRecord, version: u32) {
    let wrapped = DataKey::generate()
        .wrap(env.platform.keys.as_ref(), &t.id, version)
        .unwrap();
    env.platform
        .catalog
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO tenant_keys (tenant_id, purpose, version, wrapped, provider) VALUES ($1, 'data', $2, $3, 'test')",
            &[&t.id, &i32::try_from(version).unwrap(), &wrapped],
        )
        .await
        .unwrap();
}

/// Why resuming the suspended `t` is refused.
async fn resume_refused(env: &TestEnv, t: &TenantRecord) -> String {
    let err = tenant_admin::move_state(
        &env.platform,
        t,
        &[TenantState::Suspended],
        TenantState::Active,
    )
    .await
    .unwrap_err();
    format!("{err:#}")
}

async fn set_state(env: &TestEnv, t: &TenantRecord, from: TenantState, to: TenantState) {
    assert!(tenant_admin::move_state(&env.platform, t, &[from], to)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_data_key_seals_every_value_again_and_the_municipality_works_as_before() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("k"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let receipt = apply(&server, host, &public, "ソファ").await.unwrap();
    let db = env.tenant_conn(&t).await.client;
    let id = submission_id(&db, &receipt).await;
    let case = u(&format!("/admin/submissions/{id}"));
    for change in [
        &[
            ("from", "received"),
            ("to", "reviewing"),
            ("comment", "書類確認中"),
        ][..],
        &[
            ("from", "reviewing"),
            ("to", "returned"),
            ("reason", "品目の点数を記入してください"),
            ("deadline", "2031-08-31"),
        ][..],
    ] {
        let mut form = vec![("csrf", admin.csrf.as_str())];
        form.extend_from_slice(change);
        let (status, _, page) = post(&admin.client, &format!("{case}/status"), &form).await;
        assert_eq!(status, 303, "{page}");
    }
    let (status, _, _) = post(
        &admin.client,
        &format!("{case}/notes"),
        &[
            ("csrf", &admin.csrf),
            ("kind", "message"),
            ("body", "お電話でもご連絡しました。"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    // A citizen part-way through the form: a draft.
    let drafting = browser(&server, &[host]);
    let (_, _, page) = get(&drafting, &u(&public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let (status, _, _) = post(
        &drafting,
        &u(&public),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_nav", "next"),
            ("name.family", "東"),
            ("name.given", "一郎"),
            ("name.family_kana", "ひがし"),
            ("name.given_kana", "いちろう"),
            ("email", "ichiro.higashi@example.jp"),
            ("kind", "ソファ"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let file = seal_the_rest(&env, &t, id).await;

    let before = sealed(&db).await;
    let kinds: std::collections::BTreeSet<&str> =
        before.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(
        kinds.len(),
        11,
        "every sealed column holds a value: {kinds:?}"
    );
    assert!(
        before.iter().all(|(_, v, _)| *v == 1),
        "{:?}",
        versions(&before)
    );
    let index_before: Vec<u8> = db
        .query_one("SELECT email_index FROM submissions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let store = DirStore::new(env.state.path());
    let old_backup = backup::run(&env.platform, &store, &t).await.unwrap();

    // Refused while the municipality is open.
    let err = data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("先に一時停止してください"),
        "{err:#}"
    );

    set_state(&env, &t, TenantState::Active, TenantState::Suspended).await;
    let old_cipher = tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    let done = data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap();
    // A mail pass still holding the old key finds mail sealed with the new one: it
    // stops and leaves it for the next pass, it does not give it up as unreadable.
    let waiting =
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts = 0 AND last_error IS NULL";
    let before_pass: i64 = db.query_one(waiting, &[]).await.unwrap().get(0);
    assert!(before_pass >= 2, "{before_pass} mails waiting");
    let mailer =
        madoguchi::tenant::mail::Mailer::new(&crate::mail::relay("smtp://127.0.0.1:9")).unwrap();
    let head = madoguchi::tenant::mail::Letterhead {
        site: t.name.clone(),
        status_url: u("/status"),
    };
    let mut mail_db = env.tenant_conn(&t).await.client;
    let pass =
        madoguchi::tenant::mail::deliver_due(&mut mail_db, &old_cipher, &head, &mailer).await;
    assert!(pass.is_err(), "{pass:?}");
    drop(mail_db);
    let after_pass: i64 = db.query_one(waiting, &[]).await.unwrap().get(0);
    assert_eq!(after_pass, before_pass);
    assert!(done.new_key && done.catalog_backup.is_some());
    assert_eq!((done.rekeyed.from, done.rekeyed.to), (1, 2));
    // Each application's answers count once.
    let answers = before
        .iter()
        .filter(|(c, _, _)| c == "submissions.answers")
        .count();
    assert_eq!(
        done.rekeyed.values(),
        (before.len() - answers + 1) as u64,
        "{:?}",
        done.rekeyed
    );
    // One e-mail index per application, one per draft link mail (none here).
    assert_eq!(done.rekeyed.indexes, 1);

    let after = sealed(&db).await;
    assert_eq!(after.len(), before.len());
    assert!(
        after.iter().all(|(_, v, _)| *v == 2),
        "{:?}",
        versions(&after)
    );
    for ((_, _, old), (_, _, new)) in before.iter().zip(&after) {
        assert_ne!(old, new);
    }
    let index_after: Vec<u8> = db
        .query_one("SELECT email_index FROM submissions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        index_before, index_after,
        "the e-mail index was not computed again"
    );
    let cipher = tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    assert_eq!(cipher.current_version(), 2);
    let content: Vec<u8> = db
        .query_one("SELECT content FROM attachments WHERE id = $1", &[&file])
        .await
        .unwrap()
        .get(0);
    let opened = cipher
        .decrypt(
            &FieldRef {
                table: "attachments",
                column: "content",
                row_id: &file.to_string(),
            },
            &content,
        )
        .unwrap();
    assert_eq!(&opened[..], b"%PDF");
    let keys: i64 = env
        .platform
        .catalog
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1 AND purpose = 'data'",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2, "the old version stays for the backups made before");

    // Open again: staff find the case by address, read its comment, reason and
    // message, and sign in with their authenticator; the applicant looks it up.
    set_state(&env, &t, TenantState::Suspended, TenantState::Active).await;
    let inbox = open_again(
        &admin.client,
        &u("/admin/inbox?q=hanako.kasai%40example.jp"),
    )
    .await;
    assert!(
        inbox.contains(&receipt),
        "search by address after the rotation: {inbox}"
    );
    let (status, _, detail) = get(&admin.client, &case).await;
    assert_eq!(status, 200, "{detail}");
    for text in [
        "葛\u{E0100}西",
        "書類確認中",
        "品目の点数を記入してください",
        "お電話でもご連絡しました。",
    ] {
        assert!(detail.contains(text), "{text} not on the case page");
    }
    let fresh = browser(&server, &[host]);
    let (status, loc, body) = post(
        &fresh,
        &u("/admin/login"),
        &[
            ("email", &admin.email),
            ("password", &admin.password),
            ("code", &totp_code(&admin.secret, now_unix() + 30)),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/forms"), "{body}");
    let (status, _, page) = post(
        &browser(&server, &[host]),
        &u("/status"),
        &[
            ("receipt", receipt.as_str()),
            ("email", "hanako.kasai@example.jp"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("品目の点数を記入してください"), "{page}");
    let (status, _, page) = get(&drafting, &u(&format!("{public}?page=0"))).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("ichiro.higashi@example.jp"),
        "the draft: {page}"
    );

    // A rotation cut short after its key was made: the database is under version 2,
    // the catalog's newest is 3. The municipality is not opened until it is finished.
    set_state(&env, &t, TenantState::Active, TenantState::Suspended).await;
    made_but_not_used(&env, &t, 3).await;
    let err = resume_refused(&env, &t).await;
    assert!(err.contains("madoguchi tenant rotate-data-key"), "{err}");
    let done = data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap();
    // The key it made has no catalog backup yet: one is made before it is used.
    assert!(!done.new_key && done.catalog_backup.is_some());
    assert_eq!((done.rekeyed.from, done.rekeyed.to), (2, 3));
    assert!(sealed(&db).await.iter().all(|(_, v, _)| *v == 3));
    set_state(&env, &t, TenantState::Suspended, TenantState::Active).await;
    let inbox = open_again(
        &admin.client,
        &u("/admin/inbox?q=hanako.kasai%40example.jp"),
    )
    .await;
    assert!(inbox.contains(&receipt), "{inbox}");

    // A copy restored from the backup made before: under the newest key, found by
    // address.
    let slug = unique("kr");
    let copy_host = format!("{slug}.test");
    let copy = backup::restore(
        &env.platform,
        &store,
        &old_backup.file,
        &slug,
        std::slice::from_ref(&copy_host),
    )
    .await
    .unwrap();
    let copy_db = env.tenant_conn(&copy).await.client;
    let values = sealed(&copy_db).await;
    assert_eq!(values.len(), before.len());
    assert!(
        values.iter().all(|(_, v, _)| *v == 3),
        "{:?}",
        versions(&values)
    );
    let page = look_up(&server, &copy_host, &receipt).await;
    assert!(page.contains("品目の点数を記入してください"), "{page}");

    // After retention: a version no backup needs any more is deleted, none while the
    // backups are held; the erasure canary is under the newest.
    let catalog = env.platform.catalog.client().await.unwrap();
    let data_keys = || async {
        catalog
            .query(
                "SELECT version FROM tenant_keys WHERE tenant_id = $1 AND purpose = 'data' ORDER BY 1",
                &[&t.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(data_keys().await, [1, 2, 3]);
    backup::hold(&env.platform, &t.slug, "test", "監査のため")
        .await
        .unwrap();
    assert!(data_key::retire_unused(&env.platform, &t)
        .await
        .unwrap()
        .is_empty());
    backup::release(&env.platform, &t.slug, "test")
        .await
        .unwrap();
    // Not within a day of the rotation (a backup begun before it may still be running).
    assert!(data_key::retire_unused(&env.platform, &t)
        .await
        .unwrap()
        .is_empty());
    catalog
        .execute(
            "UPDATE tenant_keys SET created_at = created_at - interval '2 days' WHERE tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap();
    let retired = data_key::retire_unused(&env.platform, &t).await.unwrap();
    assert_eq!(
        retired,
        [2],
        "version 1 opens the backup made before the rotation"
    );
    backup::run(&env.platform, &store, &t).await.unwrap();
    let newest_only = backup::Retention {
        daily: 1,
        weekly: 0,
        monthly: 0,
    };
    assert_eq!(
        backup::prune(&env.platform, &store, &t.slug, &newest_only)
            .await
            .unwrap(),
        1
    );
    let retired = data_key::retire_unused(&env.platform, &t).await.unwrap();
    assert_eq!(retired, [1]);
    assert_eq!(data_keys().await, [3]);
    let canary: i32 = catalog
        .query_one(
            "SELECT canary_key_version FROM tenants WHERE id = $1",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(canary, 3);
    // The backup that is left restores, under the one key left.
    let latest = backup::list(&env.platform, Some(&t.slug)).await.unwrap();
    let slug = unique("kl");
    let host = format!("{slug}.test");
    backup::restore(
        &env.platform,
        &store,
        &latest[0].file,
        &slug,
        std::slice::from_ref(&host),
    )
    .await
    .unwrap();
    let page = look_up(&server, &host, &receipt).await;
    assert!(page.contains("品目の点数を記入してください"), "{page}");
    server.shutdown().await;
}

/// Every binary column of a municipality's schema is either covered by the rotation
/// (sealed with the data key, or a blind index keyed by it) or a plain hash named here:
/// a column added later with a sealed value fails this until the rotation covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_covers_every_sealed_column_of_the_schema() {
    // SHA-256 of tokens and links, and the operation log's chain: no key involved.
    const HASHES: [&str; 14] = [
        "staff_setup_tokens.token_hash",
        "citizen_sign_ins.key_hash",
        "citizen_sign_ins.session_hash",
        "citizen_sign_ins.claim_hash",
        "staff_sessions.id_hash",
        "citizen_drafts.token_hash",
        "citizen_drafts.resume_hash",
        "citizen_drafts.resume_claim",
        "citizen_drafts.moved_from",
        "api_tokens.token_hash",
        "identity_requests.state_hash",
        "audit_log.prev_hash",
        "audit_log.hash",
        "settings.audit_anchor_hash",
    ];
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("kc"), "千代田区", "131016").await;
    let db = env.tenant_conn(&t).await.client;
    let binary: std::collections::BTreeSet<String> = db
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns
              WHERE table_schema = 'public' AND data_type = 'bytea'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let covered: std::collections::BTreeSet<String> = madoguchi::tenant::rekey::covered_columns()
        .into_iter()
        .collect();
    let known: std::collections::BTreeSet<String> = covered
        .iter()
        .cloned()
        .chain(HASHES.map(String::from))
        .collect();
    let unknown: Vec<&String> = binary.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "binary columns neither covered nor a plain hash: {unknown:?}"
    );
    // And what the rotation names exists (a renamed column is not silently skipped).
    let answers = "submissions.answers".to_owned();
    let missing: Vec<&String> = covered
        .iter()
        .filter(|c| **c != answers && !binary.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "covered but not in the schema: {missing:?}"
    );
}

/// A rotated municipality whose older key version was retired is erased like any
/// other: the canary is under the version left, and no key opens it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_municipality_is_erased_with_every_check_passed() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("ke"), "夕張市", "012092").await;
    let server = env.serve().await;
    crate::forms::one_application(&env, &server, &t).await;
    server.shutdown().await;
    let store = DirStore::new(env.state.path());
    // A runtime built before the rotation (as a mail pass could while the tenant is
    // being suspended) holds only the old key: it is built again, not used.
    let pools = madoguchi::front::pools::TenantPools::new(
        madoguchi::config::PoolSettings::default(),
        env.platform.cluster.clone(),
        env.platform.catalog.clone(),
        std::sync::Arc::clone(&env.platform.keys),
    );
    let stale = pools.runtime(t.id).await.unwrap();
    assert_eq!(stale.cipher.current_version(), 1);
    set_state(&env, &t, TenantState::Active, TenantState::Suspended).await;
    // While a rotation holds its lock, the tenant is not resumed nor rotated again.
    let lock = data_key::key_lock(&env.platform, &t)
        .await
        .unwrap()
        .unwrap();
    let err = resume_refused(&env, &t).await;
    assert!(err.contains("鍵の更新が実行中です"), "{err}");
    let err = data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("実行中です"), "{err:#}");
    data_key::key_unlock(lock, &t).await;
    data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap();
    assert_eq!(
        pools.runtime(t.id).await.unwrap().cipher.current_version(),
        1
    );
    let t = env
        .platform
        .catalog
        .tenant_by_id(t.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.data_key, 2);
    // Cut short after the pass, before the erasure canary was made again: running
    // the command again makes the canary only, not one more key version.
    let catalog = env.platform.catalog.client().await.unwrap();
    catalog
        .execute(
            "UPDATE tenants SET canary_key_version = 1 WHERE id = $1",
            &[&t.id],
        )
        .await
        .unwrap();
    let again = data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap();
    assert!(
        !again.new_key && again.rekeyed.resealed.is_empty(),
        "{again:?}"
    );
    let (canary, newest): (i32, i32) = {
        let r = catalog
            .query_one(
                "SELECT canary_key_version, (SELECT max(version) FROM tenant_keys WHERE tenant_id = $1 AND purpose = 'data') FROM tenants WHERE id = $1",
                &[&t.id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((canary, newest), (2, 2));
    drop(catalog);
    // A control-plane command sealing values (the demo's seed) with a key older than
    // the database's refuses instead of leaving them under a replaced version.
    let db = env.tenant_conn(&t).await;
    db.client
        .execute("UPDATE settings SET data_key_version = 3", &[])
        .await
        .unwrap();
    let err = madoguchi::control::tenant_admin::seed_demo(&env.platform, &t)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("rotated meanwhile"), "{err:#}");
    db.client
        .execute("UPDATE settings SET data_key_version = 2", &[])
        .await
        .unwrap();
    madoguchi::control::tenant_admin::seed_demo(&env.platform, &t)
        .await
        .unwrap();
    drop(db);
    let current = pools.runtime_under(t.id, t.data_key).await.unwrap();
    assert_eq!(current.cipher.current_version(), 2);
    drop((stale, current, pools));
    env.platform
        .catalog
        .client()
        .await
        .unwrap()
        .execute(
            "UPDATE tenant_keys SET created_at = created_at - interval '2 days' WHERE tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(
        data_key::retire_unused(&env.platform, &t).await.unwrap(),
        [1],
        "no backup needs version 1"
    );
    set_state(&env, &t, TenantState::Suspended, TenantState::Active).await;
    let (alice, _) = crate::erasure::operator(&env, "alice", "山田 花子").await;
    let (bob, _) = crate::erasure::operator(&env, "bob", "佐藤 一郎").await;
    let (file, _) = crate::erasure::erase_tenant(&env, &t, ("alice", &alice), ("bob", &bob)).await;
    let v = &file.certificate.verification;
    assert!(v.passed, "{:?}", v.results);
    let canary = v
        .results
        .iter()
        .find(|c| c.check == "canary_undecryptable")
        .unwrap();
    assert!(
        canary.passed && canary.detail.contains("version 2"),
        "{canary:?}"
    );
}
