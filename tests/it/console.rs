//! The operators' console on the ops listener: password + TOTP, roles (operator,
//! auditor), actions in the chained operation log, and decommissioning and erasure
//! by two people with signatures made on their side.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use madoguchi::catalog::Operator;
use madoguchi::control::certificate::{self, Trust};
use madoguchi::crypto::note::NoteSigner;
use madoguchi::front::Server;
use madoguchi::tenant::staff::{now_unix, totp_code};

use crate::forms::{capture, get, post};
use crate::harness::{admin_client, unique, TestEnv};

pub struct Account {
    pub id: String,
    pub password: String,
    pub totp: Vec<u8>,
    pub signer: Option<NoteSigner>,
}

/// Registers an operator (with a key) or an auditor, with console credentials.
pub async fn account(env: &TestEnv, id: &str, auditor: bool) -> Account {
    let signer = (!auditor).then(|| NoteSigner::generate(id).unwrap());
    env.platform
        .catalog
        .add_operator(&Operator {
            id: id.into(),
            name: format!("{id} 担当"),
            title: if auditor { "監査人" } else { "運用担当" }.into(),
            role: if auditor { "auditor" } else { "operator" }.into(),
            public_key: signer
                .as_ref()
                .map(|s| s.public_key().as_bytes().to_vec())
                .unwrap_or_default(),
            revoked: None,
        })
        .await
        .unwrap();
    let password = "correct horse battery staple 窓口".to_owned();
    let totp = madoguchi::ops::set_credentials(&env.platform, id, &password)
        .await
        .unwrap();
    Account {
        id: id.into(),
        password,
        totp,
        signer,
    }
}

pub fn ops_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn ops_url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.bound.ops)
}

/// Signs in; the code is for the step `offset` steps from now (each code works once).
pub async fn sign_in(server: &Server, a: &Account, offset: i64) -> reqwest::Client {
    let code = totp_code(&a.totp, (now_unix() as i64 + offset * 30) as u64);
    sign_in_with(server, a, &code).await
}

/// [`sign_in`] with a given code.
pub async fn sign_in_with(server: &Server, a: &Account, code: &str) -> reqwest::Client {
    let c = ops_client();
    let (status, loc, body) = post(
        &c,
        &ops_url(server, "/login"),
        &[("id", &a.id), ("password", &a.password), ("code", code)],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/"), "{body}");
    c
}

async fn csrf(c: &reqwest::Client, server: &Server, path: &str) -> String {
    let (status, _, page) = get(c, &ops_url(server, path)).await;
    assert_eq!(status, 200, "{page}");
    capture(r#"name="csrf" value="([^"]+)""#, &page)
}

async fn sign_pending(
    c: &reqwest::Client,
    server: &Server,
    location: &str,
    signer: &NoteSigner,
) -> (u16, String, String) {
    let (status, _, page) = get(c, &ops_url(server, location)).await;
    assert_eq!(status, 200, "{page}");
    let message = B64
        .decode(capture(r#"data-message="([^"]+)""#, &page))
        .unwrap();
    let token = capture(r#"name="csrf" value="([^"]+)""#, &page);
    let signature = B64.encode(signer.sign_bytes(&message));
    post(
        c,
        &ops_url(server, location),
        &[("csrf", &token), ("signature", &signature)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_auditors_on_the_console() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("ops"), "夕張市", "012092").await;
    let alice = account(&env, "alice", false).await;
    let bob = account(&env, "bob", false).await;
    let kansa = account(&env, "kansa", true).await;
    let server = env.serve().await;

    // Without a session: to the sign-in page. Wrong code: refused, and logged.
    let anon = ops_client();
    let (status, loc, _) = get(&anon, &ops_url(&server, "/")).await;
    assert_eq!((status, loc.as_str()), (303, "/login"));
    let (status, _, page) = post(
        &anon,
        &ops_url(&server, "/login"),
        &[
            ("id", "alice"),
            ("password", &alice.password),
            ("code", "000000"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.contains("正しくありません"), "{page}");
    // Its forms are small: a sign-in of a megabyte is refused unread.
    let big = "x".repeat(1024 * 1024);
    let r = anon
        .post(ops_url(&server, "/login"))
        .form(&[
            ("id", "alice"),
            ("password", big.as_str()),
            ("code", "000000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The rest of the body is left unread and the connection closed: the client is
    // told not to send its next request on it.
    assert_eq!(r.headers()["connection"], "close");
    // /metrics and health stay open to the monitoring system.
    assert_eq!(get(&anon, &ops_url(&server, "/metrics")).await.0, 200);

    // The same code cannot be used twice (the very code: one made again after the
    // sign-in could belong to the next 30 s step).
    let code = totp_code(&alice.totp, now_unix());
    let a = sign_in_with(&server, &alice, &code).await;
    let (status, _, _) = post(
        &ops_client(),
        &ops_url(&server, "/login"),
        &[
            ("id", "alice"),
            ("password", &alice.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 401, "replayed code");

    let (status, _, page) = get(&a, &ops_url(&server, "/")).await;
    assert_eq!(status, 200);
    assert!(page.contains(&t.slug) && page.contains("稼働中"), "{page}");
    assert!(
        page.contains("KiB") || page.contains("MiB"),
        "database size: {page}"
    );
    let token = capture(r#"name="csrf" value="([^"]+)""#, &page);

    // Actions need the CSRF token.
    let backup_url = ops_url(&server, &format!("/tenants/{}/backup", t.slug));
    assert_eq!(post(&a, &backup_url, &[("csrf", "wrong")]).await.0, 403);
    let (status, _, page) = post(&a, &backup_url, &[("csrf", &token)]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("バックアップしました"), "{page}");
    let (status, _, page) = post(
        &a,
        &ops_url(&server, &format!("/tenants/{}/drill", t.slug)),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("一致 / match"), "{page}");
    let (_, _, page) = get(&a, &ops_url(&server, "/")).await;
    assert!(
        page.contains("分前") && page.contains("一致 ("),
        "backup age and drill: {page}"
    );
    // A data-key rotation cut short after its key was made: the console's resume is
    // refused with the reason (not a system error) until the rotation is finished.
    let action = |a: &'static str| ops_url(&server, &format!("/tenants/{}/{a}", t.slug));
    let (status, _, page) = post(&a, &action("suspend"), &[("csrf", &token)]).await;
    assert_eq!(status, 200, "{page}");
    crate::data_key::made_but_not_used(&env, &t, 2).await;
    let (status, _, page) = post(&a, &action("resume"), &[("csrf", &token)]).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("鍵の更新が終わっていません"), "{page}");
    let store = madoguchi::control::backup::DirStore::new(env.state.path());
    madoguchi::control::data_key::rotate(&env.platform, &store, &t.slug, "test")
        .await
        .unwrap();
    let (status, _, page) = post(&a, &action("resume"), &[("csrf", &token)]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("稼働中です"), "{page}");
    // Provisioning from the console.
    let new_slug = unique("new");
    let (status, _, page) = post(
        &a,
        &ops_url(&server, "/tenants"),
        &[
            ("csrf", &token),
            ("slug", &new_slug),
            ("name", "三笠市"),
            ("code", "012220"),
            ("host", &format!("{new_slug}.test")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("テナントを作成しました"), "{page}");

    // The auditor reads certificates and the log, and may not act.
    let k = sign_in(&server, &kansa, 0).await;
    let (status, loc, _) = get(&k, &ops_url(&server, "/")).await;
    assert_eq!((status, loc.as_str()), (303, "/certificates"));
    let k_token = csrf(&k, &server, "/certificates").await;
    assert_eq!(post(&k, &backup_url, &[("csrf", &k_token)]).await.0, 403);

    // Decommissioning: alice prepares and signs with her key (as her browser would).
    let (status, loc, page) = post(
        &a,
        &ops_url(&server, &format!("/tenants/{}/decommission", t.slug)),
        &[
            ("csrf", &token),
            ("reason", "契約終了"),
            ("final_export", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    assert!(loc.starts_with("/sign/"), "{loc}");
    // Bob cannot sign alice's request; a signature by the wrong key is refused.
    let b = sign_in(&server, &bob, 0).await;
    assert_eq!(get(&b, &ops_url(&server, &loc)).await.0, 403);
    let (status, _, page) = sign_pending(&a, &server, &loc, bob.signer.as_ref().unwrap()).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("一致しません"), "{page}");
    let (status, _, page) = sign_pending(&a, &server, &loc, alice.signer.as_ref().unwrap()).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("廃止を依頼しました"), "{page}");
    let state: String = admin_client(&env.platform.settings.catalog_db)
        .await
        .query_one("SELECT state FROM tenants WHERE id = $1", &[&t.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "decommissioning");

    // Alice cannot erase what she requested.
    let erase_url = ops_url(&server, &format!("/tenants/{}/erase", t.slug));
    let (_, _, page) = get(&a, &ops_url(&server, "/")).await;
    assert!(page.contains("消去は別のオペレーターが行います"), "{page}");
    let (status, _, page) = post(&a, &erase_url, &[("csrf", &token), ("confirm", &t.slug)]).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("other than alice"), "{page}");
    // The final export is handed over and deleted before the erasure.
    for dir in
        madoguchi::control::final_export::left_on_disk(&env.platform.settings.state_dir, &t.slug)
    {
        std::fs::remove_dir_all(dir).unwrap();
    }
    // Bob must type the slug, then erases and signs the certificate.
    let b_token = csrf(&b, &server, "/").await;
    let (status, _, _) = post(&b, &erase_url, &[("csrf", &b_token), ("confirm", "wrong")]).await;
    assert_eq!(status, 422);
    let (status, loc, page) =
        post(&b, &erase_url, &[("csrf", &b_token), ("confirm", &t.slug)]).await;
    assert_eq!(status, 303, "{page}");
    assert!(loc.starts_with("/sign/"));
    let (_, _, page) = get(&b, &ops_url(&server, &loc)).await;
    assert!(
        page.contains("canary_undecryptable") && page.contains("✔"),
        "{page}"
    );
    // Until it is signed, `cert list --pending` names it (for `cert sign` without the
    // console).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_madoguchi"))
        .arg("--state-dir")
        .arg(env.state.path())
        .args(["cert", "list", "--pending"])
        .env(
            "MADOGUCHI_DATABASE_URL",
            env.platform.settings.database_url.as_deref().unwrap(),
        )
        .env("MADOGUCHI_CATALOG_DB", &env.platform.settings.catalog_db)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && listed.contains(loc.trim_start_matches("/sign/"))
            && listed.contains(&t.slug)
            && listed.contains("bob"),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, cert_loc, page) =
        sign_pending(&b, &server, &loc, bob.signer.as_ref().unwrap()).await;
    assert_eq!(status, 303, "{page}");
    assert!(cert_loc.starts_with("/certificates/"), "{cert_loc}");

    // The auditor sees the certificate, its steps and checks, and downloads it and
    // the checkpoint; it verifies offline.
    let (status, _, page) = get(&k, &ops_url(&server, "/certificates")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("夕張市") && page.contains("alice / bob") && page.contains("✔ 合格"),
        "{page}"
    );
    let (status, _, page) = get(&k, &ops_url(&server, &cert_loc)).await;
    assert_eq!(status, 200);
    for step in [
        "drop_database",
        "destroy_keys",
        "keys_absent",
        "database_absent",
    ] {
        assert!(page.contains(step), "{step}: {page}");
    }
    // A document to print and keep: the request and its reason, the keys and
    // backups destroyed, Japan time with 和暦 to the second, the three signers'
    // keys and the command that checks it offline.
    let cert_id = cert_loc.trim_start_matches("/certificates/");
    for part in [
        "データ消去証明書",
        "契約終了",
        "データ鍵 / data key",
        "<td>テナント / tenant</td>",
        "<td>カタログ / catalog</td>",
        "JST",
        "data-print",
        &format!("madoguchi cert verify erasure-certificate-{cert_id}.json"),
    ] {
        assert!(page.contains(part), "{part}: {page}");
    }
    assert!(
        regex::Regex::new(
            r"\d{4}年\d{1,2}月\d{1,2}日（令和\d+年\d{1,2}月\d{1,2}日） \d{2}:\d{2}:\d{2} JST"
        )
        .unwrap()
        .is_match(&page),
        "{page}"
    );
    let cert_page = page.clone();
    let r = k
        .get(ops_url(&server, &format!("{cert_loc}.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("attachment")));
    let file = r.text().await.unwrap();
    let platform_key = madoguchi::control::keys::platform_signer(&env.platform)
        .await
        .unwrap()
        .verifier_key();
    assert!(
        cert_page.contains(&platform_key),
        "{platform_key}: {cert_page}"
    );
    let checkpoint = get(&k, &ops_url(&server, "/checkpoint")).await.2;
    let v = certificate::verify(
        &file,
        &Trust {
            platform_key: &platform_key,
            operators: None,
            older_checkpoint: Some(&checkpoint),
        },
    );
    assert!(v.ok(), "{}", v.report());

    // Every action is in the operation log, whose chain is intact.
    let (status, _, page) = get(&k, &ops_url(&server, "/log")).await;
    assert_eq!(status, 200);
    assert!(page.contains("chain intact"), "{page}");
    for action in [
        "console.login_failed",
        "console.login",
        "tenant.backup",
        "tenant.drill",
        "tenant.create",
        "tenant.decommission",
        "tenant.erase",
        "certificate.issue",
        "certificate.download",
    ] {
        assert!(page.contains(action), "{action} missing from the log");
    }

    // Five failures lock the account for a while, even with the right code next.
    for _ in 0..5 {
        post(
            &anon,
            &ops_url(&server, "/login"),
            &[
                ("id", "kansa"),
                ("password", "wrong password!"),
                ("code", "123456"),
            ],
        )
        .await;
    }
    let code = totp_code(&kansa.totp, now_unix() + 30);
    let (status, _, page) = post(
        &anon,
        &ops_url(&server, "/login"),
        &[
            ("id", "kansa"),
            ("password", &kansa.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.contains("ロック"), "{page}");
    server.shutdown().await;
}

/// Console sign-in under attack: failures sent at once all count toward the lock,
/// and two sign-ins racing with one TOTP code get one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_holds_under_concurrency() {
    let env = TestEnv::new().await;
    let server = env.serve().await;
    let carol = account(&env, "carol", false).await;
    let dave = account(&env, "dave", false).await;
    let catalog = admin_client(&env.platform.settings.catalog_db).await;
    let login = ops_url(&server, "/login");

    // Four wrong passwords at once: four failures.
    let wrong = || {
        let (c, login, id) = (ops_client(), login.clone(), carol.id.clone());
        async move {
            post(
                &c,
                &login,
                &[
                    ("id", &id),
                    ("password", "wrong password"),
                    ("code", "000000"),
                ],
            )
            .await
            .0
        }
    };
    let _ = tokio::join!(wrong(), wrong(), wrong(), wrong());
    let failures: i32 = catalog
        .query_one(
            "SELECT failed_logins FROM operators WHERE id = 'carol'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 4, "failures sent at once were lost");

    // One code, two sign-ins: the operator's row is held until both wait to record
    // the code's use.
    let code = totp_code(&dave.totp, now_unix() + 30);
    let mut holder = admin_client(&env.platform.settings.catalog_db).await;
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM operators WHERE id = 'dave' FOR UPDATE", &[])
        .await
        .unwrap();
    let attempt = || {
        let (c, login, id, password, code) = (
            ops_client(),
            login.clone(),
            dave.id.clone(),
            dave.password.clone(),
            code.clone(),
        );
        async move {
            post(
                &c,
                &login,
                &[("id", &id), ("password", &password), ("code", &code)],
            )
            .await
            .0
        }
    };
    let release = crate::harness::commit_when_two_wait(
        &catalog,
        hold,
        "UPDATE operators SET failed_logins = 0",
    );
    let (a, b, raced) = tokio::join!(attempt(), attempt(), release);
    assert!(
        raced,
        "the two sign-ins did not both reach the code's record"
    );
    let mut got = [a, b];
    got.sort_unstable();
    assert_eq!(got[0], 303, "{got:?}");
    assert_ne!(got[1], 303, "one TOTP code opened two console sessions");
    server.shutdown().await;
}

/// A revoked operator's session ends at once and the right password and code no
/// longer open the console (refused like a wrong password, telling nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_operator_is_signed_out_and_cannot_sign_in() {
    let env = TestEnv::new().await;
    let server = env.serve().await;
    let erin = account(&env, "erin", false).await;
    account(&env, "frank", false).await;
    let c = sign_in(&server, &erin, 0).await;
    let (status, _, page) = get(&c, &ops_url(&server, "/")).await;
    assert_eq!(status, 200, "{page}");

    let done =
        madoguchi::control::operators::revoke(&env.platform, "cli:test", "erin", "frank", "退職")
            .await
            .unwrap();
    assert!(done.open_requests.is_empty() && done.unsigned.is_empty());
    let (status, loc, _) = get(&c, &ops_url(&server, "/")).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, "/login"),
        "the session lives on"
    );
    let code = totp_code(&erin.totp, now_unix() + 30);
    let (status, _, page) = post(
        &ops_client(),
        &ops_url(&server, "/login"),
        &[
            ("id", "erin"),
            ("password", &erin.password),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("正しくありません"), "{page}");
    // No new password brings the id back.
    let err = madoguchi::ops::set_credentials(&env.platform, "erin", &erin.password)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("was revoked"), "{err:#}");
    // The password and TOTP secret are gone from the catalog.
    let row = admin_client(&env.platform.settings.catalog_db)
        .await
        .query_one(
            "SELECT password_hash IS NULL AND totp_wrapped IS NULL, revoked_by, revoked_reason FROM operators WHERE id = 'erin'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(
        (row.get::<_, String>(1), row.get::<_, String>(2)),
        ("frank".to_owned(), "退職".to_owned())
    );
    server.shutdown().await;
}

/// A master-key rotation re-wraps operators' TOTP secrets: the console still signs
/// them in. It waits for every other process on the catalog to be gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_after_a_master_key_rotation() {
    use madoguchi::platform::Platform;
    let env = TestEnv::new().await;
    let gina = account(&env, "gina", false).await;
    let settings = env.platform.settings.clone();
    let second = Platform::open(settings.clone()).await.unwrap();
    let err = madoguchi::control::master_key::rotate(&second, "cli:test")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another Madoguchi process"),
        "{err:#}"
    );
    second.close().unwrap();
    env.platform.close().unwrap();

    let rotating = Platform::open(settings.clone()).await.unwrap();
    let done = madoguchi::control::master_key::rotate(&rotating, "cli:test")
        .await
        .unwrap();
    assert_eq!((done.tenant_keys, done.totp_secrets), (0, 1));
    rotating.close().unwrap();
    let after = std::sync::Arc::new(Platform::open(settings).await.unwrap());
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(&after, any, any).await.unwrap();
    let c = sign_in(&server, &gina, 1).await;
    let (status, _, page) = get(&c, &ops_url(&server, "/")).await;
    assert_eq!(status, 200, "{page}");
    server.shutdown().await;
    after.close().unwrap();
}
