//! Training sites (研修用): between two sessions of 操作研修 the operator resets one,
//! and the next group finds no application, draft or form of the last, a setup link
//! for each seat and the practice forms published; a municipality's own site is
//! never reset, and no manifest turns one into a training site.

use crate::forms::{apply, build_form, dept_id, get, staff};
use crate::harness::{unique, url, TestEnv};
use madoguchi::control::provision::{provision, TenantSpec};
use madoguchi::control::training::{reset, seat_email};
use madoguchi::tenant::staff::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_site_is_reset_for_the_next_session() {
    let env = TestEnv::new().await;
    let p = &env.platform;
    // A municipality's site: refused, and no manifest makes it a training site.
    let city = env.tenant(&unique("tc"), "千代田区", "131016").await;
    let refused = reset(p, "test", &city, 20, "研修用", &[])
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("研修用ではありません"),
        "{refused:#}"
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("city.toml");
    std::fs::write(
        &manifest,
        format!(
            "slug = \"{}\"\nname = \"千代田区\"\ncode = \"131016\"\nhosts = [\"{}\"]\ntraining = true\n",
            city.slug, city.hosts[0]
        ),
    )
    .unwrap();
    let m = madoguchi::control::manifest::read(&manifest).unwrap();
    let e = madoguchi::control::manifest::apply(p, &m, Default::default())
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("training"), "{e:#}");
    // Nor does finishing a creation left half-way with the other flag.
    let catalog = p.catalog.client().await.unwrap();
    let set_state = |state: &'static str| {
        let (catalog, slug) = (&catalog, city.slug.clone());
        async move {
            catalog
                .execute(
                    "UPDATE tenants SET state = $1 WHERE slug = $2",
                    &[&state, &slug],
                )
                .await
                .unwrap();
        }
    };
    set_state("provisioning").await;
    let mut again = TenantSpec::parse(&city.slug, "千代田区", "131016", &city.hosts).unwrap();
    again.training = true;
    let e = provision(p, &again).await.unwrap_err();
    assert!(format!("{e:#}").contains("training = false"), "{e:#}");
    set_state("active").await;

    // A training site, used by a session: a form built, an application made.
    let slug = unique("tr");
    let mut spec = TenantSpec::parse(
        &slug,
        "千代田区（研修用）",
        "131016",
        &[format!("{slug}.test")],
    )
    .unwrap();
    spec.training = true;
    let t = provision(p, &spec).await.unwrap();
    assert!(t.training);
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |path: &str| url(&server, host, path);
    let first = reset(p, "test", &t, 2, "研修用", &[]).await.unwrap();
    assert_eq!(first.seats.len(), 2);
    assert_eq!(first.published.len(), 1, "the sample form");
    let instructor = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "市民課").await;
    let (_, public) = build_form(&instructor, &server, host, &dept, "").await;
    apply(&server, host, &public, "ソファ").await.unwrap();
    let db = env.tenant_conn(&t).await.client;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM submissions").await, 1);
    // The instructor's own setup link, not yet used, outlives the reset.
    let pending = madoguchi::control::tenant_admin::add_staff(
        p,
        &t,
        "koushi@city.example.jp",
        "講師",
        Role::Admin,
        None,
    )
    .await
    .unwrap();

    // The next session: three seats and a practice form of the city's own.
    let form = r#"{ "format": "madoguchi.form/1", "title": "研修用 イベント申込",
        "pages": [ { "id": "p1", "fields": [
          { "id": "memo", "type": "text", "label": "メモ", "required": true } ] } ] }"#;
    let next = reset(
        p,
        "test",
        &t,
        3,
        "研修用",
        &[("practice.json".to_owned(), form.to_owned())],
    )
    .await
    .unwrap();
    assert_eq!((next.applications, next.forms), (1, 2));
    for sql in [
        "SELECT count(*) FROM submissions",
        "SELECT count(*) FROM citizen_drafts",
        "SELECT count(*) FROM outbox",
        "SELECT count(*) FROM staff_sessions",
    ] {
        assert_eq!(count(sql).await, 0, "{sql}");
    }
    assert_eq!(count("SELECT count(*) FROM forms").await, 1);
    let (status, _, page) = get(&reqwest_for(&server, host), &u(&next.published[0])).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("研修用 イベント申込"), "{page}");
    // The instructor's session ended with the rest; the old form is gone.
    let (status, _, _) = get(&instructor.client, &u("/admin/forms")).await;
    assert_eq!(status, 303);
    let (status, _, _) = get(&reqwest_for(&server, host), &u(&public)).await;
    assert_eq!(status, 404);
    // Each seat sets up from its new link; the last session's links are spent.
    let emails: Vec<&str> = next.seats.iter().map(|s| s.email.as_str()).collect();
    assert_eq!(
        emails,
        (1..=3).map(|n| seat_email(&t.slug, n)).collect::<Vec<_>>()
    );
    for s in &next.seats {
        let (status, _, page) = get(
            &reqwest_for(&server, host),
            &u(&format!("/admin/setup/{}", s.setup_token)),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("totp_secret"), "{page}");
    }
    let (status, _, _) = get(
        &reqwest_for(&server, host),
        &u(&format!("/admin/setup/{}", first.seats[0].setup_token)),
    )
    .await;
    assert_ne!(status, 200);
    let (status, _, page) = get(
        &reqwest_for(&server, host),
        &u(&format!("/admin/setup/{pending}")),
    )
    .await;
    assert_eq!(status, 200, "{page}");

    // A smaller session closes the seats it does not use; the log keeps every reset.
    reset(p, "test", &t, 1, "研修用", &[]).await.unwrap();
    assert_eq!(
        count("SELECT count(*) FROM staff WHERE email LIKE 'trainee%' AND NOT disabled").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM audit_log WHERE action = 'training.reset'").await,
        3
    );
    let logged: i64 = catalog
        .query_one(
            "SELECT count(*) FROM ops_log WHERE action = 'tenant.training_reset' AND target = $1",
            &[&t.slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 3, "each reset in the operators' log");
    let verdict = madoguchi::control::audit_witness::check(p, &t, true)
        .await
        .unwrap();
    assert!(
        matches!(verdict, madoguchi::tenant::audit::Verdict::Intact(_)),
        "{verdict:?}"
    );
    server.shutdown().await;
}

fn reqwest_for(server: &madoguchi::front::Server, host: &str) -> reqwest::Client {
    crate::harness::client_for(server, &[host])
}
