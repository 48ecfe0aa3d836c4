//! Decommissioning and erasure: two operators, a closed site, a final export, then
//! nothing left (database, role, backups, keys), a backup copied aside that nobody can
//! decrypt, and a certificate that verifies offline and fails when anything changes.

use std::path::{Path, PathBuf};

use madoguchi::catalog::{Operator, TenantRecord};
use madoguchi::control::backup::{self, BackupStore, DirStore};
use madoguchi::control::certificate::{self, Trust};
use madoguchi::control::erase::{self, DecommissionArgs, EraseArgs, Quiet};
use madoguchi::control::keys::platform_signer;
use madoguchi::crypto::note::NoteSigner;

use crate::harness::{admin_client, get_with_host, unique, TestEnv};

/// Registers an operator and writes their private key file.
pub(crate) async fn operator(env: &TestEnv, id: &str, name: &str) -> (PathBuf, [u8; 32]) {
    let signer = NoteSigner::generate(id).unwrap();
    let path = env.state.path().join(format!("{id}.key"));
    use base64::Engine;
    madoguchi::control::keys::write_secret(
        &path,
        &base64::engine::general_purpose::STANDARD.encode(*signer.seed()),
    )
    .unwrap();
    let public = *signer.public_key().as_bytes();
    env.platform
        .catalog
        .add_operator(&Operator {
            id: id.into(),
            name: name.into(),
            title: "基盤運用担当".into(),
            role: "operator".into(),
            public_key: public.to_vec(),
            revoked: None,
        })
        .await
        .unwrap();
    (path, public)
}

/// Registers an operator's key again under another id: refused, and why.
async fn register_again(env: &TestEnv, id: &str, public: &[u8; 32]) -> anyhow::Error {
    env.platform
        .catalog
        .add_operator(&Operator {
            id: id.into(),
            name: "山田 花子".into(),
            title: "基盤運用担当".into(),
            role: "operator".into(),
            public_key: public.to_vec(),
            revoked: None,
        })
        .await
        .unwrap_err()
}

async fn count(db: &str, sql: &str, arg: &str) -> i64 {
    admin_client(db)
        .await
        .query_one(sql, &[&arg])
        .await
        .unwrap()
        .get(0)
}

pub(crate) async fn erase_tenant(
    env: &TestEnv,
    t: &TenantRecord,
    requester: (&str, &Path),
    verifier: (&str, &Path),
) -> (certificate::CertificateFile, PathBuf) {
    erase_sharing(env, t, requester, verifier, false).await
}

/// [`erase_tenant`], allowing (or not) another tenant to hold copies of its keys.
pub(crate) async fn erase_sharing(
    env: &TestEnv,
    t: &TenantRecord,
    requester: (&str, &Path),
    verifier: (&str, &Path),
    allow_shared_keys: bool,
) -> (certificate::CertificateFile, PathBuf) {
    erase::decommission(
        &env.platform,
        &DecommissionArgs {
            slug: &t.slug,
            operator: requester.0,
            key: requester.1,
            reason: "契約終了",
            final_export: false,
        },
    )
    .await
    .unwrap();
    let store = DirStore::new(env.state.path());
    erase::erase(
        &env.platform,
        &store,
        &EraseArgs {
            slug: &t.slug,
            verifier: verifier.0,
            allow_shared_keys,
        },
        verifier.1,
        &Quiet,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_erase_a_tenant_and_the_certificate_verifies_offline() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("gone"), "夕張市", "012092").await;
    let keep = env.tenant(&unique("stay"), "三笠市", "012220").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    crate::forms::one_application(&env, &server, &t).await;

    // Backups of the tenant and of the catalog (which holds its wrapped keys); one
    // copied aside, as someone might.
    let store = DirStore::new(env.state.path());
    let m = backup::run(&env.platform, &store, &t).await.unwrap();
    backup::run_catalog(&env.platform, &store).await.unwrap();
    // Its last restore drill failed: the alert's series is there until the erasure.
    env.platform
        .catalog
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO drills (tenant_id, tenant_slug, backup_id, ok, seconds, detail) VALUES ($1, $2, $3, false, 1, '{}')",
            &[&t.id, &t.slug, &m.id],
        )
        .await
        .unwrap();
    let drill_series = |metrics: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("madoguchi_drill_ok") && l.contains(&format!("\"{}\"", t.slug)))
    };
    assert!(drill_series(
        &crate::harness::ops_metrics(server.bound.ops).await
    ));
    let aside = env.state.path().join("aside.mdgbak");
    std::fs::copy(store.path(&m.file), &aside).unwrap();

    let (alice_key, alice_pub) = operator(&env, "alice", "山田 花子").await;
    let (bob_key, bob_pub) = operator(&env, "bob", "佐藤 一郎").await;

    // Step 1: alice requests, with a final export; the site closes at once.
    let req = erase::decommission(
        &env.platform,
        &DecommissionArgs {
            slug: &t.slug,
            operator: "alice",
            key: &alice_key,
            reason: "契約終了",
            final_export: true,
        },
    )
    .await
    .unwrap();
    let export = req.final_export.clone().unwrap();
    let csv = export
        .files
        .iter()
        .find(|f| f.name.starts_with("submissions-"))
        .unwrap();
    let text = std::fs::read_to_string(Path::new(&export.directory).join(&csv.name)).unwrap();
    assert!(text.contains("古いピアノ椅子"), "{text}");
    assert!(text.contains("葛\u{E0100}西"), "IVS kept: {text}");
    assert!(text.starts_with('\u{feff}'));
    // How each application came: the last columns (this one was sent online).
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with(",受付方法,代理入力した職員,代理入力の本人確認書類,受付期間外の代理入力"),
        "{text}"
    );
    assert!(lines.next().unwrap().ends_with(",オンライン,,,"), "{text}");
    // The export lists every file's hash for `sha256sum -c`, and a copy of it is
    // checked against the signed request: whole, then with a file changed and one gone.
    let dir = Path::new(&export.directory);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), export.files.len() - 1);
    assert!(
        sums.contains(&format!("{}  {}\n", csv.sha256, csv.name)),
        "{sums}"
    );
    let compare = || madoguchi::control::final_export::compare(&env.platform, &t.slug, dir);
    let whole = compare().await.unwrap();
    assert_eq!(
        (whole.matching, whole.missing.len(), whole.differing.len()),
        (export.files.len(), 0, 0)
    );
    let copy = tempfile::tempdir().unwrap();
    for f in &export.files {
        let to = copy.path().join(&f.name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(dir.join(&f.name), &to).unwrap();
    }
    std::fs::write(copy.path().join(&csv.name), "書き換えた").unwrap();
    std::fs::remove_file(copy.path().join("forms.json")).unwrap();
    let changed = madoguchi::control::final_export::compare(&env.platform, &t.slug, copy.path())
        .await
        .unwrap();
    assert_eq!(changed.differing, vec![csv.name.clone()]);
    assert_eq!(changed.missing, vec!["forms.json".to_owned()]);
    assert_eq!(changed.matching, export.files.len() - 2);
    // Routing follows the catalog through LISTEN/NOTIFY; give it a moment.
    let mut closed = (0, String::new());
    for _ in 0..50 {
        closed = get_with_host(&server, &host, "/").await;
        if closed.0 == 410 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(closed.0, 410, "{}", closed.1);
    assert!(closed.1.contains("このサービスは終了しました"));
    // The other tenant is untouched.
    assert_eq!(get_with_host(&server, &keep.hosts[0], "/").await.0, 200);
    // A second request for the same tenant is refused.
    assert!(erase::decommission(
        &env.platform,
        &DecommissionArgs {
            slug: &t.slug,
            operator: "bob",
            key: &bob_key,
            reason: "",
            final_export: false,
        },
    )
    .await
    .is_err());

    // One person cannot do both, nor sign with another's key.
    let erase_as = |who: &'static str, key: PathBuf| {
        let env = &env;
        let store = store.clone();
        let slug = t.slug.clone();
        async move {
            erase::erase(
                &env.platform,
                &store,
                &EraseArgs {
                    slug: &slug,
                    verifier: who,
                    allow_shared_keys: false,
                },
                &key,
                &Quiet,
            )
            .await
        }
    };
    let err = format!(
        "{:#}",
        erase_as("alice", alice_key.clone()).await.unwrap_err()
    );
    assert!(err.contains("other than alice"), "{err}");
    let err = format!(
        "{:#}",
        erase_as("bob", alice_key.clone()).await.unwrap_err()
    );
    assert!(
        err.contains("not the registered key of operator bob"),
        "{err}"
    );
    // A platform key handed out and then lost stops the erasure before anything is
    // destroyed, not after.
    let platform_key = env.state.path().join("platform.key");
    madoguchi::control::keys::platform_signer(&env.platform)
        .await
        .unwrap();
    std::fs::rename(&platform_key, env.state.path().join("kept")).unwrap();
    let err = format!("{:#}", erase_as("bob", bob_key.clone()).await.unwrap_err());
    assert!(err.contains("restore it from escrow"), "{err}");
    std::fs::rename(env.state.path().join("kept"), &platform_key).unwrap();
    assert_eq!(
        count(
            &t.database,
            "SELECT count(*) FROM submissions WHERE receipt_number <> $1",
            ""
        )
        .await,
        1,
        "refused attempts destroy nothing"
    );

    // A restore drill cut short left a copy of the tenant behind.
    let admin = admin_client("postgres").await;
    let drill_copy = format!("{}1234abcd", backup::drill_prefix(&t));
    // (and one named as drills named their copies before, which may be this tenant's)
    let legacy_copy = format!("drill_{}", uuid::Uuid::new_v4().simple());
    for name in [&drill_copy, &legacy_copy] {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
    }

    // The final export is personal data in clear on this server: the erasure waits
    // until it has been handed over and deleted.
    let err = format!("{:#}", erase_as("bob", bob_key.clone()).await.unwrap_err());
    assert!(
        err.contains("final export is still on this server"),
        "{err}"
    );
    assert!(err.contains(&export.directory), "{err}");
    std::fs::remove_dir_all(&export.directory).unwrap();

    // Step 2: bob erases, once: a second erasure at the same time is refused.
    let (first, second) = tokio::join!(
        erase_as("bob", bob_key.clone()),
        erase_as("bob", bob_key.clone())
    );
    let (file, path, other) = match (first, second) {
        (Ok((f, p)), Err(e)) | (Err(e), Ok((f, p))) => (f, p, e),
        (a, b) => panic!("expected one erasure and one refusal: {a:?} / {b:?}"),
    };
    let other = format!("{other:#}");
    assert!(other.contains("another erasure"), "{other}");
    // Nor can a finished one be withdrawn.
    let err = format!(
        "{:#}",
        erase::withdraw(&env.platform, &t.slug, "alice")
            .await
            .unwrap_err()
    );
    assert!(err.contains("no open decommissioning request"), "{err}");
    for name in [&drill_copy, &legacy_copy] {
        assert_eq!(
            count(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                name
            )
            .await,
            0,
            "the interrupted drill's copy {name} survived the erasure"
        );
    }
    assert!(path.starts_with(env.state.path().join("certificates")));
    assert!(
        file.certificate.verification.passed,
        "{:#?}",
        file.certificate.verification
    );
    let steps: Vec<&str> = file
        .certificate
        .steps
        .iter()
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "terminate_connections",
            "drop_database",
            "drop_role",
            "destroy_backups",
            "destroy_keys",
            "destroy_catalog_backups",
            "new_catalog_backup"
        ]
    );
    // `backup list` no longer shows the deleted catalog backups, only the one made
    // after the erasure.
    let catalog_backups = backup::list(&env.platform, Some(backup::CATALOG))
        .await
        .unwrap();
    assert_eq!(catalog_backups.len(), 1, "{catalog_backups:?}");
    assert!(store.exists(&catalog_backups[0].file));
    assert_eq!(file.certificate.organization.local_gov_code, "012092");
    assert_eq!(file.certificate.sanitization.method, "Purge");
    assert_eq!(file.certificate.media.backups.len(), 1);
    assert_eq!(file.certificate.media.backups[0].sha256, m.sha256);
    assert!(file
        .certificate
        .media
        .keys
        .iter()
        .any(|k| k.purpose == "data"));
    assert!(file
        .certificate
        .media
        .keys
        .iter()
        .any(|k| k.purpose == "db_password"));

    // No alert left behind for a tenant that is gone.
    assert!(!drill_series(
        &crate::harness::ops_metrics(server.bound.ops).await
    ));

    // Nothing is left, checked independently of the erasure's own checks.
    assert_eq!(
        count(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &t.database
        )
        .await,
        0
    );
    assert_eq!(
        count(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &t.role
        )
        .await,
        0
    );
    let cat = &env.platform.settings.catalog_db;
    assert_eq!(
        count(
            cat,
            "SELECT count(*) FROM tenant_keys WHERE tenant_id::text = $1",
            &t.id.to_string()
        )
        .await,
        0
    );
    assert_eq!(
        count(
            cat,
            "SELECT count(*) FROM tenant_hosts WHERE tenant_id::text = $1",
            &t.id.to_string()
        )
        .await,
        0
    );
    assert!(!store.path(&m.file).exists());
    assert!(store.list(&t.slug).unwrap().is_empty());
    // Only the catalog backup made after the keys were destroyed remains.
    assert_eq!(
        count(
            cat,
            "SELECT count(*) FROM backups WHERE tenant_slug = $1 AND destroyed_at IS NULL",
            "_catalog"
        )
        .await,
        1
    );
    // The copy set aside cannot be decrypted: no key for it exists any more.
    let back = DirStore::new(env.state.path()).path(&m.file);
    std::fs::create_dir_all(back.parent().unwrap()).unwrap();
    std::fs::copy(&aside, &back).unwrap();
    let out = env.state.path().join("restored.dump");
    let err = backup::decrypt(
        &env.platform,
        &store,
        &m.file,
        std::fs::File::create(&out).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("no longer"), "{err:#}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
    // The other tenant still works.
    assert_eq!(get_with_host(&server, &keep.hosts[0], "/").await.0, 200);
    server.shutdown().await;

    // Offline verification.
    let platform_key = platform_signer(&env.platform).await.unwrap().verifier_key();
    let text = std::fs::read_to_string(&path).unwrap();
    let trust = Trust {
        platform_key: &platform_key,
        ..Trust::default()
    };
    let v = certificate::verify(&text, &trust);
    assert!(v.ok(), "{}", v.report());
    let ops = vec![("alice".to_owned(), alice_pub), ("bob".to_owned(), bob_pub)];
    let v = certificate::verify(
        &text,
        &Trust {
            platform_key: &platform_key,
            operators: Some(&ops),
            older_checkpoint: None,
        },
    );
    assert!(v.ok(), "{}", v.report());
    // Any change is caught.
    let forged = text.replacen("山田 花子", "山田 花代", 1);
    assert!(!certificate::verify(&forged, &trust).ok());
    let forged = text.replacen("\"passed\": true", "\"passed\": false", 1);
    assert!(!certificate::verify(&forged, &trust).ok());
    let other = NoteSigner::generate("madoguchi-platform")
        .unwrap()
        .verifier_key();
    let v = certificate::verify(
        &text,
        &Trust {
            platform_key: &other,
            ..Trust::default()
        },
    );
    assert!(!v.ok());
    assert!(
        v.report().contains("FAIL  signed by the platform key"),
        "{}",
        v.report()
    );
    let only_alice = vec![("alice".to_owned(), alice_pub)];
    assert!(!certificate::verify(
        &text,
        &Trust {
            platform_key: &platform_key,
            operators: Some(&only_alice),
            older_checkpoint: None,
        },
    )
    .ok());
    let mallory = vec![
        ("alice".to_owned(), alice_pub),
        (
            "bob".to_owned(),
            *NoteSigner::generate("bob").unwrap().public_key().as_bytes(),
        ),
    ];
    assert!(!certificate::verify(
        &text,
        &Trust {
            platform_key: &platform_key,
            operators: Some(&mallory),
            older_checkpoint: None,
        },
    )
    .ok());

    // A second erasure grows the log; the first certificate's checkpoint is now an
    // older one, and a fresh export proves the log only grew by appending.
    // (It also sets autovacuum_naptime for the databases left, outside the steps.)
    crate::budget::naptime_set_by_hand().await;
    let before = crate::budget::naptime_for_databases(crate::budget::STRAY).await;
    let (second, _) = erase_tenant(&env, &keep, ("bob", &bob_key), ("alice", &alice_key)).await;
    let seen = crate::budget::naptime_once_changed().await;
    let after = crate::budget::naptime_for_databases(-crate::budget::STRAY).await;
    assert!(
        before.min(after) <= seen && seen <= before.max(after),
        "after an erasure: autovacuum_naptime {seen}s, expected between {after}s and {before}s"
    );
    assert_eq!(second.transparency.log_index, 1);
    let older = file.transparency.checkpoint.clone();
    let fresh = erase::export_certificate(&env.platform, file.certificate.id, &[1])
        .await
        .unwrap();
    let fresh_text = serde_json::to_string(&fresh).unwrap();
    let v = certificate::verify(
        &fresh_text,
        &Trust {
            platform_key: &platform_key,
            operators: None,
            older_checkpoint: Some(&older),
        },
    );
    assert!(v.ok(), "{}", v.report());
    assert!(v.report().contains("size 1 → 2"), "{}", v.report());
    // Without the proof in the file, the verdict says how to get one.
    let v = certificate::verify(
        &serde_json::to_string(&certificate::CertificateFile {
            transparency: certificate::Transparency {
                consistency: Vec::new(),
                ..fresh.transparency.clone()
            },
            ..fresh.clone()
        })
        .unwrap(),
        &Trust {
            platform_key: &platform_key,
            operators: None,
            older_checkpoint: Some(&older),
        },
    );
    assert!(!v.ok());
    assert!(v.report().contains("--since 1"), "{}", v.report());
    // A wrong consistency proof is refused.
    let mut rewritten = fresh.clone();
    rewritten.transparency.consistency[0].proof[0] =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
    assert!(!certificate::verify(
        &serde_json::to_string(&rewritten).unwrap(),
        &Trust {
            platform_key: &platform_key,
            operators: None,
            older_checkpoint: Some(&older),
        },
    )
    .ok());

    // The operation log holds both requests and both erasures, chained.
    let n = madoguchi::control::oplog::verify(&env.platform.catalog)
        .await
        .unwrap();
    assert!(n >= 4, "{n}");
    admin_client(cat)
        .await
        .execute(
            "UPDATE ops_log SET target = 'someone-else' WHERE seq = 1",
            &[],
        )
        .await
        .unwrap();
    let err = madoguchi::control::oplog::verify(&env.platform.catalog)
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("entry 1 was edited"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_request_reopens_the_tenant() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("back"), "夕張市", "012092").await;
    let (alice_key, alice_pub) = operator(&env, "alice", "山田 花子").await;
    // One key is one person: it cannot be registered again under another id (which
    // would let one person both request and erase).
    let err = register_again(&env, "alice2", &alice_pub).await;
    assert!(
        format!("{err:#}").contains("already registered to operator alice"),
        "{err:#}"
    );
    let args = DecommissionArgs {
        slug: &t.slug,
        operator: "alice",
        key: &alice_key,
        reason: "誤り",
        final_export: false,
    };
    erase::decommission(&env.platform, &args).await.unwrap();
    let state = |env: &TestEnv| {
        let slug = t.slug.clone();
        let p = std::sync::Arc::clone(&env.platform);
        async move {
            p.catalog
                .tenant_by_slug(&slug)
                .await
                .unwrap()
                .unwrap()
                .state
        }
    };
    assert_eq!(
        state(&env).await,
        madoguchi::catalog::TenantState::Decommissioning
    );
    // A resume (or a manifest) that read the tenant as open a moment before does not
    // reopen it now.
    use madoguchi::catalog::TenantState::{Active, Suspended};
    assert!(!env
        .platform
        .catalog
        .move_state(t.id, &[Active, Suspended], Active)
        .await
        .unwrap());
    assert_eq!(
        state(&env).await,
        madoguchi::catalog::TenantState::Decommissioning
    );
    erase::withdraw(&env.platform, &t.slug, "alice")
        .await
        .unwrap();
    assert_eq!(state(&env).await, madoguchi::catalog::TenantState::Active);
    assert!(
        erase::withdraw(&env.platform, &t.slug, "alice")
            .await
            .is_err(),
        "nothing left to withdraw"
    );
    // A new request can be made, and the database was never touched.
    erase::decommission(&env.platform, &args).await.unwrap();
    assert_eq!(
        count(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &t.database
        )
        .await,
        1
    );
    // Only a registered operator withdraws.
    let err = format!(
        "{:#}",
        erase::withdraw(&env.platform, &t.slug, "mallory")
            .await
            .unwrap_err()
    );
    assert!(err.contains("mallory"), "{err}");
    // An erasure that began (and was cut short) is finished, never withdrawn: the
    // tenant's database may already be gone.
    admin_client(&env.platform.settings.catalog_db)
        .await
        .execute(
            "UPDATE decommissions SET erasure_started_at = now(), erasure_started_by = 'bob' WHERE tenant_id = $1 AND state = 'requested'",
            &[&t.id],
        )
        .await
        .unwrap();
    let err = format!(
        "{:#}",
        erase::withdraw(&env.platform, &t.slug, "alice")
            .await
            .unwrap_err()
    );
    assert!(err.contains("begun by bob"), "{err}");
    assert_eq!(
        state(&env).await,
        madoguchi::catalog::TenantState::Decommissioning
    );
    // A catalog from before keys were checked may hold one key under two ids: the
    // erasure refuses that pair before it destroys anything.
    admin_client(&env.platform.settings.catalog_db)
        .await
        .execute(
            "INSERT INTO operators (id, name, title, role, public_key) VALUES ('alice2', '山田 花子', '基盤運用担当', 'operator', $1)",
            &[&alice_pub.to_vec()],
        )
        .await
        .unwrap();
    let store = DirStore::new(env.state.path());
    let err = erase::execute(
        &env.platform,
        &store,
        &EraseArgs {
            slug: &t.slug,
            verifier: "alice2",
            allow_shared_keys: false,
        },
        &Quiet,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("hold the same key"), "{err:#}");
    assert_eq!(
        count(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &t.database
        )
        .await,
        1
    );
}

/// Revoking an operator: nothing they sign afterwards is accepted, a request they
/// signed before erases nothing until it is withdrawn and made again by someone else,
/// and their key cannot come back under another id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_operators_signature_is_refused() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("rvk"), "夕張市", "012092").await;
    let u = env.tenant(&unique("rvk"), "歌志内市", "012271").await;
    let (alice_key, alice_pub) = operator(&env, "alice", "山田 花子").await;
    let (bob_key, _) = operator(&env, "bob", "佐藤 一郎").await;
    let (carol_key, _) = operator(&env, "carol", "鈴木 次郎").await;
    let decommission = |slug: String, op: &'static str, key: PathBuf| {
        let p = std::sync::Arc::clone(&env.platform);
        async move {
            erase::decommission(
                &p,
                &DecommissionArgs {
                    slug: &slug,
                    operator: op,
                    key: &key,
                    reason: "契約終了",
                    final_export: false,
                },
            )
            .await
            .map(|_| ())
        }
    };
    let store = DirStore::new(env.state.path());
    let erase_by = |slug: String, verifier: &'static str| {
        let p = std::sync::Arc::clone(&env.platform);
        let store = &store;
        async move {
            erase::execute(
                &p,
                store,
                &EraseArgs {
                    slug: &slug,
                    verifier,
                    allow_shared_keys: false,
                },
                &Quiet,
            )
            .await
            .map(|_| ())
        }
    };
    let databases = |name: String| async move {
        count(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &name,
        )
        .await
    };
    decommission(t.slug.clone(), "alice", alice_key.clone())
        .await
        .unwrap();

    // Alice lost her key; Bob revokes it. The open request she signed is named.
    let done = madoguchi::control::operators::revoke(
        &env.platform,
        "cli:test",
        "alice",
        "bob",
        "鍵の紛失",
    )
    .await
    .unwrap();
    assert_eq!(done.open_requests, vec![t.slug.clone()]);
    let revoke = |id: &'static str, by: &'static str| {
        let p = std::sync::Arc::clone(&env.platform);
        async move {
            let r = madoguchi::control::operators::revoke(&p, "cli:test", id, by, "テスト").await;
            format!("{:#}", r.map(|_| ()).unwrap_err())
        }
    };
    assert!(revoke("alice", "bob").await.contains("already revoked"));
    assert!(revoke("carol", "alice").await.contains("cannot revoke"));
    assert!(revoke("mallory", "bob").await.contains("not registered"));
    let no_reason =
        madoguchi::control::operators::revoke(&env.platform, "cli:test", "carol", "bob", " ")
            .await
            .map(|_| ())
            .unwrap_err();
    assert!(format!("{no_reason:#}").contains("give a reason"));

    // Her request erases nothing, and nothing was destroyed.
    let err = format!("{:#}", erase_by(t.slug.clone(), "bob").await.unwrap_err());
    assert!(err.contains("revoked") && err.contains("withdraw"), "{err}");
    assert_eq!(databases(t.database.clone()).await, 1);
    // She can neither request nor withdraw any more.
    let err = format!(
        "{:#}",
        decommission(u.slug.clone(), "alice", alice_key.clone())
            .await
            .unwrap_err()
    );
    assert!(err.contains("was revoked"), "{err}");
    assert!(format!(
        "{:#}",
        erase::withdraw(&env.platform, &t.slug, "alice")
            .await
            .unwrap_err()
    )
    .contains("was revoked"));
    // Another operator withdraws it and requests again; a third erases.
    erase::withdraw(&env.platform, &t.slug, "bob")
        .await
        .unwrap();
    decommission(t.slug.clone(), "bob", bob_key.clone())
        .await
        .unwrap();

    // A verifier revoked (here by herself) erases nothing either.
    madoguchi::control::operators::revoke(
        &env.platform,
        "cli:test",
        "carol",
        "carol",
        "端末の盗難",
    )
    .await
    .unwrap();
    // The whole erasure, signed with the verifier's key file.
    let erase_signed = |verifier: &'static str, key: &PathBuf| {
        let (p, store, slug, key) = (&env.platform, &store, t.slug.clone(), key.clone());
        async move {
            erase::erase(
                p,
                store,
                &EraseArgs {
                    slug: &slug,
                    verifier,
                    allow_shared_keys: false,
                },
                &key,
                &Quiet,
            )
            .await
            .map(|_| ())
        }
    };
    let err = format!("{:#}", erase_by(t.slug.clone(), "carol").await.unwrap_err());
    assert!(err.contains("was revoked"), "{err}");
    assert_eq!(databases(t.database.clone()).await, 1);
    let err = format!("{:#}", erase_signed("carol", &carol_key).await.unwrap_err());
    assert!(err.contains("was revoked"), "{err}");
    let (dave_key, _) = operator(&env, "dave", "高橋 三郎").await;
    // Catalog backups held for an inquiry: no erasure begins (it would delete them).
    madoguchi::control::backup::hold(&env.platform, "_catalog", "cli:test", "照会 2026-11")
        .await
        .unwrap();
    let err = format!("{:#}", erase_signed("dave", &dave_key).await.unwrap_err());
    assert!(
        err.contains("are held") && err.contains("照会 2026-11"),
        "{err}"
    );
    assert_eq!(databases(t.database.clone()).await, 1);
    madoguchi::control::backup::release(&env.platform, "_catalog", "cli:test")
        .await
        .unwrap();
    erase_signed("dave", &dave_key).await.unwrap();
    assert_eq!(databases(t.database.clone()).await, 0);

    // The rows stay, with who revoked and why; the key cannot return under a new id.
    let ops = env.platform.catalog.operators().await.unwrap();
    let alice = ops.iter().find(|o| o.id == "alice").unwrap();
    let r = alice.revoked.as_ref().unwrap();
    assert_eq!((r.by.as_str(), r.reason.as_str()), ("bob", "鍵の紛失"));
    assert!(ops
        .iter()
        .find(|o| o.id == "bob")
        .unwrap()
        .revoked
        .is_none());
    let err = register_again(&env, "alice2", &alice_pub).await;
    assert!(format!("{err:#}").contains("already registered to operator alice"));
    // Each revocation is in the chained operation log.
    let logged = count(
        &env.platform.settings.catalog_db,
        "SELECT count(*) FROM ops_log WHERE action = 'operator.revoke' AND detail::jsonb ->> 'by' = $1",
        "bob",
    )
    .await;
    assert_eq!(logged, 1);
}

/// A final export is everything the tenant ever stored: a request routed before the
/// closure that reaches the database only after the export's snapshot cannot store
/// anything (it would be acknowledged, then erased unexported). Sessions opened
/// before are ended and new ones of the tenant's role cannot write, while the
/// control plane still can; withdrawing the request opens the tenant to writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_stored_after_the_final_exports_snapshot() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("late"), "夕張市", "012092").await;
    madoguchi::control::tenant_admin::import_form(
        &env.platform,
        &t,
        include_str!("../../src/control/samples/bulky-waste.json"),
        "環境課",
        true,
    )
    .await
    .unwrap();
    let (alice_key, _) = operator(&env, "alice", "山田 花子").await;
    let password = madoguchi::control::cluster::tenant_password(
        &env.platform.catalog,
        env.platform.keys.as_ref(),
        &t,
    )
    .await
    .unwrap();
    // As the servers' pools connect.
    let as_requests = || {
        let config = env.platform.cluster.tenant_config(&t, &password);
        let cluster = env.platform.cluster.clone();
        async move { cluster.connect(&config).await.unwrap() }
    };
    let write = "UPDATE forms SET closed = closed";
    let pooled = as_requests().await;
    pooled.client.execute(write, &[]).await.unwrap();

    let args = DecommissionArgs {
        slug: &t.slug,
        operator: "alice",
        key: &alice_key,
        reason: "契約終了",
        final_export: true,
    };
    let req = erase::decommission(&env.platform, &args).await.unwrap();
    assert!(req.final_export.is_some());

    // The session a request held from before: ended.
    assert!(pooled.client.execute(write, &[]).await.is_err());
    // A session opened now, as a late request's: read-only.
    let late = as_requests().await;
    let err = late.client.execute(write, &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err}"
    );
    // The control plane (migrations, tokens) still writes.
    let control = env.tenant_conn(&t).await;
    control.client.execute(write, &[]).await.unwrap();

    erase::withdraw(&env.platform, &t.slug, "alice")
        .await
        .unwrap();
    as_requests()
        .await
        .client
        .execute(write, &[])
        .await
        .unwrap();
    // A request prepared (the export made) and never signed leaves the tenant closed
    // to writes; a manifest that opens it again opens it to writes too.
    for dir in
        madoguchi::control::final_export::left_on_disk(&env.platform.settings.state_dir, &t.slug)
    {
        std::fs::remove_dir_all(dir).unwrap();
    }
    erase::prepare_decommission(&env.platform, &t.slug, "alice", "契約終了", true)
        .await
        .unwrap();
    assert!(as_requests()
        .await
        .client
        .execute(write, &[])
        .await
        .is_err());
    let manifest = env.state.path().join("late.toml");
    std::fs::write(
        &manifest,
        format!(
            "slug = \"{}\"\nname = \"夕張市\"\ncode = \"012092\"\nhosts = [\"{}\"]\nstate = \"active\"\n",
            t.slug, t.hosts[0]
        ),
    )
    .unwrap();
    let m = madoguchi::control::manifest::read(&manifest).unwrap();
    madoguchi::control::manifest::apply(
        &env.platform,
        &m,
        madoguchi::control::migrate::SchemaTarget::Newest,
    )
    .await
    .unwrap();
    as_requests()
        .await
        .client
        .execute(write, &[])
        .await
        .unwrap();
    for dir in
        madoguchi::control::final_export::left_on_disk(&env.platform.settings.state_dir, &t.slug)
    {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Verifies a certificate file against a platform key; the report on failure.
fn verdict(
    file: &certificate::CertificateFile,
    platform_key: &str,
    older: Option<&str>,
) -> certificate::Verdict {
    certificate::verify(
        &serde_json::to_string(file).unwrap(),
        &Trust {
            platform_key,
            operators: None,
            older_checkpoint: older,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_platform_and_log_keys_leave_every_certificate_verifiable() {
    use madoguchi::control::key_transition::{Role, Transition};
    use madoguchi::control::keys::{log_signer, rotate_signer};
    let env = TestEnv::new().await;
    let p = &env.platform;
    let first = env.tenant(&unique("first"), "夕張市", "012092").await;
    let second = env.tenant(&unique("second"), "三笠市", "012220").await;
    let third = env.tenant(&unique("third"), "歌志内市", "012271").await;
    let fourth = env.tenant(&unique("fourth"), "赤平市", "012181").await;
    let (alice, _) = operator(&env, "alice", "山田 花子").await;
    let (bob, _) = operator(&env, "bob", "佐藤 一郎").await;
    let p0 = platform_signer(p).await.unwrap().verifier_key();
    let l0 = log_signer(p).await.unwrap().verifier_key();
    let (cert1, _) = erase_tenant(&env, &first, ("alice", &alice), ("bob", &bob)).await;
    let kept_checkpoint = cert1.transparency.checkpoint.clone();

    // An open decommissioning request names no key yet, but its certificate will
    // name the current platform key: the platform key waits, the log key does not.
    erase::decommission(
        p,
        &DecommissionArgs {
            slug: &second.slug,
            operator: "alice",
            key: &alice,
            reason: "契約終了",
            final_export: false,
        },
    )
    .await
    .unwrap();
    let err = rotate_signer(p, Role::Platform, "ops").await.unwrap_err();
    assert!(
        format!("{err:#}").contains("decommissioning request"),
        "{err:#}"
    );
    assert_eq!(platform_signer(p).await.unwrap().verifier_key(), p0);
    let log = rotate_signer(p, Role::Log, "ops").await.unwrap().remove(0);
    assert_eq!(
        (log.old.as_str(), log.new.as_str()),
        (
            l0.as_str(),
            log_signer(p).await.unwrap().verifier_key().as_str()
        )
    );
    let store = DirStore::new(env.state.path());
    let (cert2, _) = erase::erase(
        p,
        &store,
        &EraseArgs {
            slug: &second.slug,
            verifier: "bob",
            allow_shared_keys: false,
        },
        &bob,
        &Quiet,
    )
    .await
    .unwrap();
    // Named the new log key; verifies against the platform key handed out.
    assert_eq!(cert2.certificate.transparency_log.verifier_key, log.new);
    let v = verdict(&cert2, &p0, None);
    assert!(v.ok(), "{}", v.report());

    // Now the platform key: the old file is kept aside under its hash, nothing is
    // left half-done, and the operation log has it.
    // The log key is replaced first, in the same command: the platform key's
    // transition names a fresh log key, not one retired with it.
    let mut both = rotate_signer(p, Role::Platform, "ops").await.unwrap();
    let rotated = both.pop().unwrap();
    let log2 = both.pop().unwrap();
    assert_eq!(
        (log2.role, log2.old.as_str()),
        (Role::Log, log.new.as_str())
    );
    let p1 = platform_signer(p).await.unwrap().verifier_key();
    assert_eq!(
        (rotated.old.as_str(), rotated.new.as_str()),
        (p0.as_str(), p1.as_str())
    );
    assert_ne!(p0, p1);
    let dir = env.state.path();
    let kept = madoguchi::control::keys::load_signer(&rotated.retired, "madoguchi-platform", false)
        .unwrap();
    assert_eq!(kept.verifier_key(), p0);
    assert!(!dir.join("platform.key.new").exists());
    let t = Transition::open(&rotated.statement).unwrap();
    assert_eq!(
        (t.role, t.from.as_str(), t.to.as_str()),
        (Role::Platform, p0.as_str(), p1.as_str())
    );
    assert_eq!(t.log, Some((log2.new.clone(), 2)));
    let c = p.catalog.client().await.unwrap();
    let actions: Vec<String> = c
        .query(
            "SELECT action FROM ops_log WHERE action LIKE 'keys.rotate_%' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        ["keys.rotate_log", "keys.rotate_log", "keys.rotate_platform"]
    );

    // A certificate made after: signed by the new platform key, verified against the
    // old one (it replaced it) and the new one.
    let (cert3, _) = erase_tenant(&env, &third, ("bob", &bob), ("alice", &alice)).await;
    assert_eq!(cert3.certificate.platform_key, p1);
    assert_eq!(cert3.key_transitions.len(), 3);
    for key in [&p0, &p1] {
        let v = verdict(&cert3, key, None);
        assert!(v.ok(), "{}", v.report());
    }
    assert!(verdict(&cert3, &p0, None)
        .report()
        .contains("which replaced the key given by 1"));
    // The first certificate, exported now: its checkpoint is signed by the new log
    // key, linked to the one it names; it verifies against either platform key, and
    // the auditor's checkpoint from before both rotations still proves the log only
    // grew.
    let fresh1 = erase::export_certificate(p, cert1.certificate.id, &[1])
        .await
        .unwrap();
    for key in [&p0, &p1] {
        let v = verdict(&fresh1, key, Some(&kept_checkpoint));
        assert!(v.ok(), "{}", v.report());
        assert!(
            v.report()
                .contains("that replaced the one the certificate names"),
            "{}",
            v.report()
        );
        assert!(v.report().contains("size 1 → 3"), "{}", v.report());
    }
    assert!(verdict(&fresh1, &p1, None)
        .report()
        .contains("replaced by the key given by 1"));
    // The third certificate with the oldest checkpoint, signed by a log key from
    // before the one it names.
    let fresh3 = erase::export_certificate(p, cert3.certificate.id, &[1])
        .await
        .unwrap();
    let v = verdict(&fresh3, &p0, Some(&kept_checkpoint));
    assert!(v.ok(), "{}", v.report());

    // Without the transitions, or with one signed by one key only, it fails.
    let bare = certificate::CertificateFile {
        key_transitions: Vec::new(),
        ..fresh3.clone()
    };
    assert!(!verdict(&bare, &p0, None).ok());
    assert!(!verdict(
        &certificate::CertificateFile {
            key_transitions: Vec::new(),
            ..fresh1.clone()
        },
        &p0,
        None
    )
    .ok());
    let mut one_signature = fresh3.clone();
    let note = &one_signature.key_transitions[1];
    let last_line = note.trim_end().rsplit('\n').next().unwrap().to_owned();
    one_signature.key_transitions[1] = note.replacen(&format!("{last_line}\n"), "", 1);
    let v = verdict(&one_signature, &p0, None);
    assert!(
        !v.ok() && v.report().contains("not signed by both keys"),
        "{}",
        v.report()
    );
    // An unrelated key is still refused.
    let stranger = NoteSigner::generate("madoguchi-platform")
        .unwrap()
        .verifier_key();
    assert!(!verdict(&fresh3, &stranger, None).ok());
    // A checkpoint signed by the log key the certificate's replaced (someone may hold
    // it since) does not prove inclusion. Nor, for a certificate signed by the
    // replaced platform key, one signed by the log key retired in the same command
    // (both may have leaked together): checked against the new platform key, only
    // the log key its transition names counts.
    let old_log = |retired: &Path| {
        madoguchi::control::keys::load_signer(retired, "madoguchi.erasure-log", false).unwrap()
    };
    assert_eq!(old_log(&log.retired).verifier_key(), l0);
    for (file, signer) in [
        (&fresh3, old_log(&log.retired)),
        (&fresh1, old_log(&log2.retired)),
    ] {
        let body = file
            .transparency
            .checkpoint
            .split("\n\n")
            .next()
            .unwrap()
            .to_owned()
            + "\n";
        let mut resigned = file.clone();
        resigned.transparency.checkpoint = signer.sign_note(&body).unwrap();
        let v = verdict(&resigned, &p1, None);
        assert!(
            !v.ok()
                && v.report()
                    .contains("the checkpoint is not signed by the log key"),
            "{}",
            v.report()
        );
    }
    // The key kept aside is a copy: destroying it leaves the live key alone.
    use std::os::unix::fs::MetadataExt;
    let ino = |path: &Path| std::fs::metadata(path).unwrap().ino();
    assert_ne!(ino(&rotated.retired), ino(&dir.join("platform.key")));
    // One rotation at a time.
    let holder = p.catalog.client().await.unwrap();
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('madoguchi.signing-keys', 0))",
            &[],
        )
        .await
        .unwrap();
    let err = rotate_signer(p, Role::Log, "ops").await.unwrap_err();
    assert!(
        format!("{err:#}").contains("another signing-key rotation"),
        "{err:#}"
    );
    holder
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('madoguchi.signing-keys', 0))",
            &[],
        )
        .await
        .unwrap();
    drop(holder);

    // A rotation cut short after its commit (the new file not yet in place) is
    // finished by the next use of the key; one that never committed leaves the key
    // as it is, and the next rotation clears its file.
    let current = std::fs::read(dir.join("platform.key")).unwrap();
    std::fs::rename(dir.join("platform.key"), dir.join("platform.key.new")).unwrap();
    std::fs::copy(&rotated.retired, dir.join("platform.key")).unwrap();
    assert_eq!(platform_signer(p).await.unwrap().verifier_key(), p1);
    assert_eq!(std::fs::read(dir.join("platform.key")).unwrap(), current);
    assert!(!dir.join("platform.key.new").exists());
    let stray = NoteSigner::generate("madoguchi-platform").unwrap();
    use base64::Engine;
    madoguchi::control::keys::write_secret(
        &dir.join("platform.key.new"),
        &base64::engine::general_purpose::STANDARD.encode(*stray.seed()),
    )
    .unwrap();
    assert_eq!(platform_signer(p).await.unwrap().verifier_key(), p1);
    let again = rotate_signer(p, Role::Platform, "ops")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_ne!(again.new, stray.verifier_key());
    assert_eq!(platform_signer(p).await.unwrap().verifier_key(), again.new);
    // Two transitions now chain the first key to the newest.
    let newest_export = erase::export_certificate(p, cert1.certificate.id, &[])
        .await
        .unwrap();
    let v = verdict(&newest_export, &again.new, None);
    assert!(
        v.ok() && v.report().contains("replaced by the key given by 2"),
        "{}",
        v.report()
    );
    // The catalog restored from before the rotations names the old key: the error
    // says where the rotation kept it.
    c.execute(
        "UPDATE platform_keys SET verifier = $1 WHERE file = 'platform.key'",
        &[&p0],
    )
    .await
    .unwrap();
    let err = platform_signer(p).await.unwrap_err();
    assert!(
        format!("{err}").contains(&rotated.retired.display().to_string()),
        "{err}"
    );
    // Whoever holds that replaced key (here: the platform made to use it again) signs
    // a certificate that the log holds after the newer key took over: against the
    // newer key it fails, as a forgery made with a leaked key would.
    std::fs::copy(&rotated.retired, dir.join("platform.key")).unwrap();
    assert_eq!(platform_signer(p).await.unwrap().verifier_key(), p0);
    let (cert4, _) = erase_tenant(&env, &fourth, ("alice", &alice), ("bob", &bob)).await;
    assert_eq!(
        (
            cert4.certificate.platform_key.as_str(),
            cert4.transparency.log_index
        ),
        (p0.as_str(), 3)
    );
    let v = verdict(&cert4, &p1, None);
    assert!(!v.ok(), "{}", v.report());
    assert!(
        v.report().contains(
            "FAIL  in the log before the key given took over (index 3 of the 2 entries then)"
        ),
        "{}",
        v.report()
    );
    let v = verdict(&cert4, &p0, None);
    assert!(v.ok(), "{}", v.report());
}
