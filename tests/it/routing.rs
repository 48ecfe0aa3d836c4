//! Layer 1: the Host header picks the tenant, from a cache kept fresh by the catalog.

use std::time::{Duration, Instant};

use madoguchi::catalog::TenantState;

use crate::harness::{get_with_host, unique, TestEnv};

/// Polls until `host` answers `status`, up to `limit`; returns the last answer.
async fn wait_for(
    server: &madoguchi::front::Server,
    host: &str,
    status: u16,
    limit: Duration,
) -> (u16, String) {
    let deadline = Instant::now() + limit;
    loop {
        let got = get_with_host(server, host, "/").await;
        if got.0 == status || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_host_reaches_its_own_tenant() {
    // A long timer: only LISTEN/NOTIFY can make changes visible within the test.
    let env = TestEnv::with(|s| s.cache_refresh = Duration::from_secs(600)).await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let server = env.serve().await;
    let host_a = &a.hosts[0];
    let host_b = &b.hosts[0];

    let (status, body) = get_with_host(&server, host_a, "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("千代田区のオンライン申請") && !body.contains("札幌市"),
        "{body}"
    );
    let (status, body) = get_with_host(&server, host_b, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("札幌市のオンライン申請") && !body.contains("千代田区"));

    // Case and port do not matter; anything else must match exactly.
    let (status, body) =
        get_with_host(&server, &format!("{}:8080", host_a.to_uppercase()), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("千代田区"));
    for unknown in [
        "unknown.test",
        &format!("{host_a}."),
        &format!("x.{host_a}"),
        "127.0.0.1",
    ] {
        let (status, body) = get_with_host(&server, unknown, "/").await;
        assert_eq!(status, 404, "{unknown}");
        assert!(body.contains("このアドレスでは提供していません"));
        assert!(!body.contains("千代田区") && !body.contains("札幌市"));
    }
    // Unknown paths of a known tenant: the tenant's 404 page, in Japanese.
    let (status, body) = get_with_host(&server, host_a, "/no/such/page").await;
    assert_eq!(status, 404);
    assert!(body.contains("ページが見つかりません"));

    // A published form's definition is cached while the tenant is active...
    let form = crate::harness::publish_sample(&env, &a).await;
    assert_eq!(get_with_host(&server, host_a, &form).await.0, 200);
    assert_eq!(
        madoguchi::tenant::forms::store::cached_definitions(&a.id),
        1
    );
    // ...and the operator sees how much is kept against the budget, and how often a
    // definition had to be read from the database.
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("madoguchi_form_definitions_kept_bytes") > 0.0);
    assert_eq!(
        value("madoguchi_form_definitions_budget_bytes"),
        madoguchi::tenant::forms::kept::BUDGET_BYTES as f64
    );
    assert!(value("madoguchi_form_definitions_read_from_database_total") >= 1.0);

    // Suspended: 503 with a maintenance page; resumed: back.
    env.platform
        .catalog
        .set_state(a.id, TenantState::Suspended)
        .await
        .unwrap();
    let (status, body) = wait_for(&server, host_a, 503, Duration::from_secs(5)).await;
    assert_eq!(status, 503);
    assert!(body.contains("ただいまご利用いただけません"), "{body}");
    assert_eq!(
        get_with_host(&server, host_b, "/").await.0,
        200,
        "the other tenant is unaffected"
    );
    // A maintenance page is not an error: counted apart, so the error-rate alert
    // does not fire for a tenant suspended on purpose.
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    let counted = |status: &str| {
        metrics.lines().any(|l| {
            l.starts_with(&format!(
                "madoguchi_http_requests_total{{tenant=\"{}\",status=\"{status}\"}}",
                a.slug
            ))
        })
    };
    assert!(counted("maintenance") && !counted("5xx"), "{metrics}");
    // ...and dropped from memory when it is suspended (or leaves).
    let deadline = Instant::now() + Duration::from_secs(5);
    while madoguchi::tenant::forms::store::cached_definitions(&a.id) > 0 {
        assert!(
            Instant::now() < deadline,
            "the suspended tenant's form stayed cached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.platform
        .catalog
        .set_state(a.id, TenantState::Active)
        .await
        .unwrap();
    assert_eq!(
        wait_for(&server, host_a, 200, Duration::from_secs(5))
            .await
            .0,
        200
    );

    // A tenant created while serving is reachable without a restart.
    let c = env.tenant(&unique("c"), "函館市", "012025").await;
    let started = Instant::now();
    let (status, body) = wait_for(&server, &c.hosts[0], 200, Duration::from_secs(5)).await;
    assert_eq!(
        status,
        200,
        "new tenant not reachable after {:?}",
        started.elapsed()
    );
    assert!(body.contains("函館市"));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_host_touches_no_tenant_database() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    for _ in 0..20 {
        assert_eq!(get_with_host(&server, "nobody.test", "/").await.0, 404);
    }
    assert!(
        server.app.pools.stats().is_empty(),
        "a pool was opened for an unknown host"
    );
    assert_eq!(server.app.pools.budget_in_use(), 0);
    assert_eq!(get_with_host(&server, &a.hosts[0], "/").await.0, 200);
    assert_eq!(server.app.pools.stats().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_request_ids() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let c = reqwest::Client::new();
    for addr in [server.bound.public, server.bound.ops] {
        for path in ["/healthz", "/readyz"] {
            let r = c.get(format!("http://{addr}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{addr}{path}");
        }
    }
    let r = c
        .get(format!("http://{}/", server.bound.public))
        .header("host", &a.hosts[0])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-request-id").is_some());
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    for needle in [
        format!(
            "madoguchi_http_requests_total{{tenant=\"{}\",status=\"2xx\"}} 1",
            a.slug
        ),
        format!(
            "madoguchi_http_request_duration_seconds_count{{tenant=\"{}\"}} 1",
            a.slug
        ),
        format!(
            "madoguchi_tenant_pool_connections{{tenant=\"{}\",state=\"idle\"}} 1",
            a.slug
        ),
        "madoguchi_db_budget_in_use 1".to_owned(),
        "madoguchi_db_budget_limit 60".to_owned(),
        "madoguchi_tenants{state=\"active\"} 1".to_owned(),
    ] {
        assert!(metrics.contains(&needle), "missing {needle} in\n{metrics}");
    }
    // Monitoring of the control plane: before the first backup (and drill), when the
    // tenant was provisioned (so a new tenant is not an old backup: no alert for 26
    // hours); after one, its time.
    let figure = |metrics: &str, metric: &str, tenant: &str| -> i64 {
        let name = format!("madoguchi_{metric}{{tenant=\"{tenant}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .unwrap_or_else(|| panic!("{tenant} not watched: {metrics}"))
            .parse()
            .unwrap()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for tenant in [a.slug.as_str(), "_catalog"] {
        let at = figure(&metrics, "backup_last_success_timestamp_seconds", tenant);
        assert!((now - at).abs() < 600, "{tenant}: {at}");
    }
    let undrilled = figure(&metrics, "drill_last_timestamp_seconds", &a.slug);
    assert!((now - undrilled).abs() < 600, "{undrilled}");
    assert!(metrics.contains("madoguchi_tlog_size 0"));
    let store = madoguchi::control::backup::DirStore::new(env.state.path());
    madoguchi::control::backup::run(&env.platform, &store, &a)
        .await
        .unwrap();
    madoguchi::control::backup::run_catalog(&env.platform, &store)
        .await
        .unwrap();
    madoguchi::control::backup::drill(&env.platform, &store, &a)
        .await
        .unwrap();
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "madoguchi_backup_last_success_timestamp_seconds{{tenant=\"{}\"}}",
                a.slug
            ))
        })
        .unwrap();
    let at: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (at - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 600,
        "{line}"
    );
    assert!(
        !metrics.contains("madoguchi_backup_last_success_timestamp_seconds{tenant=\"_catalog\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("madoguchi_drill_ok{{tenant=\"{}\"}} 1", a.slug)),
        "{metrics}"
    );
    // After a drill, its time (as the catalog records it), no longer the provisioning's.
    let drilled: i64 = crate::harness::admin_client(&env.platform.settings.catalog_db)
        .await
        .query_one(
            "SELECT extract(epoch FROM max(at))::bigint FROM drills WHERE tenant_slug = $1",
            &[&a.slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        figure(&metrics, "drill_last_timestamp_seconds", &a.slug),
        drilled
    );
    assert!(drilled >= undrilled);
    // Error pages carry the request id; the console lists the tenant.
    let (_, body) = get_with_host(&server, &a.hosts[0], "/missing").await;
    assert!(body.contains("受付ID"));
    // The console asks operators to sign in (its pages are tested in console.rs).
    let console = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/", server.bound.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 303);
    assert_eq!(
        console
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/login")
    );
    assert!(
        metrics.contains(&format!(
            "madoguchi_tenant_database_size_bytes{{tenant=\"{}\"}}",
            a.slug
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("madoguchi_erasure_certificates 0"),
        "{metrics}"
    );
    server.shutdown().await;
}

/// 郵便番号 → 住所 for the citizens' forms: the same for every municipality, found as
/// typed (full-width, with 〒 and a hyphen), and refused with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postal_codes_are_looked_up_for_every_municipality() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("pc"), "札幌市", "011002").await;
    let server = env.serve().await;
    let json = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let (status, body) = get_with_host(&server, &t.hosts[0], "/postal/0600042").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({ "postal_code": "0600042", "prefecture": "北海道",
                            "city": "札幌市中央区", "town": "大通西" })
    );
    let typed = "/postal/%E3%80%92%EF%BC%91%EF%BC%90%EF%BC%90-%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%91";
    let (status, body) = get_with_host(&server, &t.hosts[0], typed).await;
    assert_eq!(
        (status, json(&body)["city"].clone()),
        (200, "千代田区".into())
    );
    let (status, body) = get_with_host(&server, &t.hosts[0], "/postal/0000000").await;
    assert_eq!(status, 404);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("見つかりません"));
    let (status, body) = get_with_host(&server, &t.hosts[0], "/postal/12345").await;
    assert_eq!(status, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("7桁"));
    let r = reqwest::Client::new()
        .get(format!("http://{}/postal/0600042", server.bound.public))
        .header("host", &t.hosts[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=86400");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    server.shutdown().await;
}
