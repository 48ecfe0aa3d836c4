//! An external cluster whose admin role is not a superuser, only CREATEDB and
//! CREATEROLE as the README asks: a tenant's whole life works under it, from
//! provisioning through a submission, a backup, its drill and a restore, to the
//! erasure and its certificate.

use madoguchi::control::backup::{self, DirStore};

use crate::erasure::{erase_sharing, erase_tenant, operator};
use crate::harness::{admin_client, admin_url, unique, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_whole_life_under_an_admin_role_that_is_not_a_superuser() {
    let role = unique("ext_admin_");
    let password = unique("pw");
    admin_client("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN CREATEDB CREATEROLE NOSUPERUSER PASSWORD '{password}'"
        ))
        .await
        .unwrap();
    let base = admin_url();
    let (scheme, rest) = base.split_once("://").unwrap();
    let (_, place) = rest.split_once('@').unwrap();
    let env = TestEnv::external(format!("{scheme}://{role}:{password}@{place}"), None)
        .await
        .unwrap_or_else(|e| panic!("opening the platform as {role}: {e:#}"));

    let t = env.tenant(&unique("ext"), "小樽市", "012033").await;
    let server = env.serve().await;
    crate::forms::one_application(&env, &server, &t).await;

    // A database named as restore-drill copies once were, made by another role (as
    // another platform on the same cluster might): not this platform's to drop, and
    // its admin role may not. The drill and the erasure leave it alone.
    let foreign = format!("drill_{}", uuid::Uuid::new_v4().simple());
    let stranger = unique("stranger_");
    let su = admin_client("postgres").await;
    for sql in [
        format!("CREATE ROLE {stranger} NOLOGIN"),
        format!("CREATE DATABASE {foreign} OWNER {stranger}"),
    ] {
        su.batch_execute(&sql).await.unwrap();
    }
    let store = DirStore::new(env.state.path());
    backup::run(&env.platform, &store, &t)
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"));
    let drill = backup::drill(&env.platform, &store, &t)
        .await
        .unwrap_or_else(|e| panic!("drill: {e:#}"));
    assert!(drill.ok, "{:?}", drill.tables);
    let latest = backup::list(&env.platform, Some(&t.slug))
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let copy = unique("extcopy");
    backup::restore(
        &env.platform,
        &store,
        &latest.file,
        &copy,
        &[format!("{copy}.test")],
    )
    .await
    .unwrap_or_else(|e| panic!("restore: {e:#}"));
    server.shutdown().await;

    // The erasure finishes; the certificate says the checkpoint was not allowed,
    // rather than the erasure stopping after the keys were gone.
    let (requester, _) = operator(&env, "ext-requester", "申請 太郎").await;
    let (verifier, _) = operator(&env, "ext-verifier", "確認 花子").await;
    let copy = env
        .platform
        .catalog
        .tenant_by_slug(&copy)
        .await
        .unwrap()
        .unwrap();
    // The copy first (it shares the keys of the tenant it came from), then the
    // tenant, each with its certificate.
    let (file, _) = erase_sharing(
        &env,
        &copy,
        ("ext-requester", &requester),
        ("ext-verifier", &verifier),
        true,
    )
    .await;
    let keys = |file: &madoguchi::control::certificate::CertificateFile| {
        file.certificate
            .steps
            .iter()
            .find(|s| s.step == "destroy_keys")
            .map(|s| s.detail.clone())
            .unwrap_or_default()
    };
    assert!(keys(&file).contains("pg_checkpoint"), "{}", keys(&file));
    let (file, _) = erase_tenant(
        &env,
        &t,
        ("ext-requester", &requester),
        ("ext-verifier", &verifier),
    )
    .await;
    assert!(
        file.certificate.verification.passed,
        "{:#?}",
        file.certificate.verification
    );
    assert!(keys(&file).contains("pg_checkpoint"), "{}", keys(&file));
    let left: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&foreign],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "another role's database was dropped");
    for sql in [
        format!("DROP DATABASE {foreign}"),
        format!("DROP ROLE {stranger}"),
    ] {
        su.batch_execute(&sql).await.unwrap();
    }
}
