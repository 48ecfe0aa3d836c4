//! Layer 2 and 3 of the isolation: each tenant's own database, role and key.

use madoguchi::control::cluster::tenant_password;
use tokio_postgres::error::SqlState;

use crate::harness::{admin_client, unique, TestEnv};

#[tokio::test]
async fn provisioning_gives_each_tenant_its_own_database_and_role() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let admin = admin_client("postgres").await;

    for t in [&a, &b] {
        assert_eq!(
            t.schema_version,
            madoguchi::control::migrate::latest_tenant_version()
        );
        let row = admin
            .query_one(
                "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT'),
                        has_database_privilege('public', datname, 'TEMPORARY'),
                        (SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = $2)
                   FROM pg_database WHERE datname = $1",
                &[&t.database, &t.role],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), t.role, "owned by its own role");
        assert!(
            !row.get::<_, bool>(1),
            "PUBLIC may not connect to {}",
            t.database
        );
        assert!(
            !row.get::<_, bool>(2),
            "PUBLIC may not create temp tables in {}",
            t.database
        );
        assert!(!row.get::<_, bool>(3), "tenant role has no special rights");
    }

    // Tenant A's role, with its real password, is refused by tenant B's database and by the catalog.
    let p = &env.platform;
    let pw_a = tenant_password(&p.catalog, p.keys.as_ref(), &a)
        .await
        .unwrap();
    let mut into_b = p.cluster.tenant_config(&a, &pw_a);
    into_b.dbname(&b.database);
    let err = p
        .cluster
        .connect(&into_b)
        .await
        .err()
        .expect("A's role connected to B's database");
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code().cloned());
    assert_eq!(code, Some(SqlState::INSUFFICIENT_PRIVILEGE), "{err:#}");
    let mut into_catalog = p.cluster.tenant_config(&a, &pw_a);
    into_catalog.dbname(&p.settings.catalog_db);
    assert!(
        p.cluster.connect(&into_catalog).await.is_err(),
        "A's role connected to the catalog"
    );

    // And it does reach its own.
    let own = p
        .cluster
        .connect(&p.cluster.tenant_config(&a, &pw_a))
        .await
        .unwrap();
    let name: String = own
        .client
        .query_one("SELECT name FROM settings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "千代田区");

    // A wrong password is refused: the cluster really authenticates (scram, not trust).
    let wrong = p.cluster.tenant_config(&a, "not-the-password");
    assert!(
        p.cluster.connect(&wrong).await.is_err(),
        "wrong password accepted"
    );
}

#[tokio::test]
async fn keys_are_wrapped_and_bound_to_their_tenant() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let p = &env.platform;
    let ka = p.catalog.keys(a.id, "data").await.unwrap();
    let kb = p.catalog.keys(b.id, "data").await.unwrap();
    assert_eq!(ka.len(), 1);
    // The catalog holds only wrapped keys, which unwrap only for their own tenant.
    use madoguchi::crypto::DataKey;
    assert!(DataKey::unwrap(p.keys.as_ref(), &ka[0].wrapped, &a.id, 1).is_ok());
    assert!(DataKey::unwrap(p.keys.as_ref(), &ka[0].wrapped, &b.id, 1).is_err());
    assert!(DataKey::unwrap(p.keys.as_ref(), &kb[0].wrapped, &a.id, 1).is_err());

    // A value encrypted by tenant A's cipher does not decrypt with B's, even at the same place.
    let ca = cipher(p, a.id).await;
    let cb = cipher(p, b.id).await;
    let at = madoguchi::crypto::FieldRef {
        table: "submissions",
        column: "answers",
        row_id: "1",
    };
    let ct = ca
        .encrypt(&at, "東京都千代田区九段南1-2-1".as_bytes())
        .unwrap();
    assert!(ca.decrypt(&at, &ct).is_ok());
    assert!(cb.decrypt(&at, &ct).is_err());

    // Another master key cannot unwrap anything of this platform.
    let other =
        madoguchi::crypto::FileKeyProvider::load_or_create(&env.state.path().join("other.key"))
            .unwrap();
    assert!(DataKey::unwrap(&other, &ka[0].wrapped, &a.id, 1).is_err());
}

async fn cipher(
    p: &madoguchi::platform::Platform,
    tenant: uuid::Uuid,
) -> madoguchi::crypto::FieldCipher {
    use madoguchi::crypto::DataKey;
    let keys = p
        .catalog
        .keys(tenant, "data")
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            (
                k.version,
                DataKey::unwrap(p.keys.as_ref(), &k.wrapped, &tenant, k.version).unwrap(),
            )
        })
        .collect();
    madoguchi::crypto::FieldCipher::new(tenant, keys).unwrap()
}

#[tokio::test]
async fn a_half_made_tenant_is_finished_by_running_again_and_duplicates_are_refused() {
    let env = TestEnv::new().await;
    let slug = unique("h");
    let a = env.tenant(&slug, "千代田区", "131016").await;
    // Simulate a crash after the database was made: back to 'provisioning', database dropped.
    let p = &env.platform;
    p.catalog
        .set_state(a.id, madoguchi::catalog::TenantState::Provisioning)
        .await
        .unwrap();
    let admin = admin_client("postgres").await;
    admin
        .batch_execute(&format!(
            "DROP DATABASE {}",
            madoguchi::catalog::quote_ident(&a.database)
        ))
        .await
        .unwrap();
    let again = env.tenant(&slug, "千代田区", "131016").await;
    assert_eq!(again.id, a.id);
    assert_eq!(again.state, madoguchi::catalog::TenantState::Active);

    // Now it exists: creating it again is refused with a clear message, and so is a host in use.
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &slug,
        "千代田区",
        "131016",
        &[format!("{slug}.test")],
    )
    .unwrap();
    let err = madoguchi::control::provision::provision(p, &spec)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("既に存在します"), "{err}");
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &unique("x"),
        "札幌市",
        "011002",
        &[format!("{slug}.test")],
    )
    .unwrap();
    let err = format!(
        "{:#}",
        madoguchi::control::provision::provision(p, &spec)
            .await
            .err()
            .unwrap()
    );
    assert!(err.contains("別のテナントが使用しています"), "{err}");
    // The refused tenant left nothing behind.
    assert!(p
        .catalog
        .tenant_by_slug(spec.slug.as_str())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message() {
    use madoguchi::control::provision::TenantSpec;
    let hosts = ["x.test".to_owned()];
    for (slug, name, code, hosts, expect) in [
        ("Bad Slug", "千代田区", "131016", &hosts[..], "スラッグ"),
        ("good", "千代田区", "131017", &hosts[..], "検査数字"),
        ("good", "", "131016", &hosts[..], "団体名"),
        ("good", "千代田区", "131016", &[][..], "ホスト名"),
        (
            "good",
            "千代田区",
            "131016",
            &["bad host".to_owned()][..],
            "ホスト名",
        ),
    ] {
        let err = TenantSpec::parse(slug, name, code, hosts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expect), "{slug} {code}: {err}");
    }
}

/// A tenant role's new password: the old one is refused at once, the running service
/// reads the new one when a new connection is refused with the old, and with
/// `end_sessions` nobody stays connected on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_database_password_is_rotated_while_it_is_served() {
    use madoguchi::control::provision::rotate_password;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("pw"), "釧路市", "012068").await;
    let public = crate::harness::publish_sample(&env, &t).await;
    let host = format!("{}.test", t.slug);
    let server = env.serve().await;
    let c = crate::harness::client_for(&server, &[&host]);
    let page = crate::harness::url(&server, &host, &public);
    let status = || async { crate::forms::get(&c, &page).await.0 };
    assert_eq!(status().await, 200);
    let p = &env.platform;
    let old = tenant_password(&p.catalog, p.keys.as_ref(), &t)
        .await
        .unwrap();

    let done = rotate_password(p, &t.slug, false, "cli:test")
        .await
        .unwrap();
    assert_eq!((done.version, done.ended), (2, 0));
    let refused = p
        .cluster
        .tenant_config(&t, &old)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .and_then(|e| e.code().cloned());
    assert_eq!(refused, Some(SqlState::INVALID_PASSWORD));
    let versions: Vec<u32> = p
        .catalog
        .keys(t.id, "db_password")
        .await
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, vec![2], "the old password is kept");
    // The service's open connection goes on.
    assert_eq!(status().await, 200);

    // Ending the role's sessions: the service reconnects, reading the new password.
    let done = rotate_password(p, &t.slug, true, "cli:test").await.unwrap();
    assert!(done.version == 3 && done.ended >= 1, "{done:?}");
    let mut last = 0;
    for _ in 0..5 {
        last = status().await;
        assert!(last == 200 || last == 503, "{last}");
        if last == 200 {
            break;
        }
    }
    assert_eq!(
        last, 200,
        "the service did not reconnect with the new password"
    );
    let now = tenant_password(&p.catalog, p.keys.as_ref(), &t)
        .await
        .unwrap();
    assert!(p
        .cluster
        .tenant_config(&t, &now)
        .connect(tokio_postgres::NoTls)
        .await
        .is_ok());
    let err = rotate_password(p, "no-such-town", false, "cli:test")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no tenant"));
    server.shutdown().await;
}
