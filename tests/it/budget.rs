//! The global connection budget: many tenants, many concurrent requests, never more
//! connections than the budget; shares of it between busy tenants; 503 when spent.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{admin_client, client_for, unique, url, TestEnv};

/// Backends the cluster has open to any of `databases`.
/// Client connections to these databases (an autovacuum worker visiting one is the
/// cluster's own, not a connection of the budget).
async fn connections_to(admin: &tokio_postgres::Client, databases: &[String]) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1) AND backend_type = 'client backend'",
            &[&databases],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_tenants_with_concurrent_traffic_stay_within_the_budget_and_are_all_answered() {
    use futures::StreamExt;
    const BUDGET: usize = 40;
    const TENANTS: usize = 200;
    let env = TestEnv::with(|s| {
        s.pool.budget = BUDGET;
        s.pool.per_tenant = 3;
        // Generous: every request is to be answered, none turned away.
        s.pool.wait = Duration::from_secs(20);
    })
    .await;
    let codes = ["131016", "011002", "012025", "012033"];
    let tenants: Vec<_> = futures::stream::iter(0..TENANTS)
        .map(|i| {
            let env = &env;
            async move {
                env.tenant(
                    &unique(&format!("b{i}x")),
                    "テスト市",
                    codes[i % codes.len()],
                )
                .await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let server = env.serve().await;
    let hosts: Vec<&str> = tenants.iter().map(|t| t.hosts[0].as_str()).collect();
    let client = client_for(&server, &hosts);
    let databases: Vec<String> = tenants.iter().map(|t| t.database.clone()).collect();

    // Provisioning's own connections (as the admin role) must be gone before the
    // count starts: a backend can outlive its client's close by a moment.
    {
        let admin = admin_client("postgres").await;
        for _ in 0..200 {
            if connections_to(&admin, &databases).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Watch the cluster itself while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        tokio::spawn(async move {
            let admin = admin_client("postgres").await;
            while !stop.load(Ordering::Relaxed) {
                let n = connections_to(&admin, &databases).await;
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Three requests to every tenant, all at once, in an order that keeps each
    // tenant's three apart.
    let mut handles = Vec::new();
    for i in 0..3 * TENANTS {
        let client = client.clone();
        let target = url(&server, hosts[i % hosts.len()], "/");
        handles.push(tokio::spawn(async move {
            client.get(target).send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(200) => ok += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("budget test: {ok} served, peak {peak} connections of {BUDGET}");
    assert!(
        peak as usize <= BUDGET,
        "{peak} connections open, budget {BUDGET}"
    );
    assert!(peak > 0, "the watcher saw no tenant connection at all");
    assert_eq!(ok, 3 * TENANTS);
    assert!(server.app.pools.budget_in_use() <= BUDGET);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_answers_503_with_retry_after_never_an_extra_connection() {
    let env = TestEnv::with(|s| {
        s.pool.budget = 1;
        s.pool.per_tenant = 1;
        s.pool.wait = Duration::from_millis(300);
    })
    .await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("b"), "札幌市", "011002").await;
    let server = env.serve().await;
    let client = client_for(&server, &[&a.hosts[0], &b.hosts[0]]);
    assert_eq!(
        client
            .get(url(&server, &a.hosts[0], "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Tenant A's one connection is busy: B cannot have one.
    let held = server
        .app
        .pools
        .runtime(a.id)
        .await
        .unwrap()
        .pool
        .get()
        .await
        .unwrap();
    let resp = client
        .get(url(&server, &b.hosts[0], "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("ただいま混み合っています"));
    assert_eq!(server.app.pools.budget_in_use(), 1);

    // Once it is idle again, B takes it over (A's idle connection is closed for it).
    // Closing one and opening another may take longer than the 300 ms wait on a
    // loaded machine: then B is told to retry, as any client would be.
    drop(held);
    let mut status = 0;
    for _ in 0..20 {
        status = client
            .get(url(&server, &b.hosts[0], "/"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(server.app.pools.budget_in_use(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_and_pools_are_closed() {
    let env = TestEnv::with(|s| s.pool.idle = Duration::from_millis(300)).await;
    let a = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let client = client_for(&server, &[&a.hosts[0]]);
    assert_eq!(
        client
            .get(url(&server, &a.hosts[0], "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.app.pools.stats().len(), 1);
    assert_eq!(server.app.pools.budget_in_use(), 1);
    // The sweeper runs every second at most; idle limit 300 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (!server.app.pools.stats().is_empty() || server.app.pools.budget_in_use() > 0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.app.pools.stats().is_empty(), "idle pool still open");
    assert_eq!(
        server.app.pools.budget_in_use(),
        0,
        "idle connection still open"
    );
    // The server side of the closed connection is gone too (its backend may take a moment to exit).
    let admin = admin_client("postgres").await;
    let mut n: i64 = -1;
    for _ in 0..50 {
        n = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&a.database],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(n, 0, "backends still connected to the idle tenant");
    // And the tenant still answers: the pool is made again on demand.
    assert_eq!(
        client
            .get(url(&server, &a.hosts[0], "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_shared_between_the_tenants_being_served() {
    let env = TestEnv::with(|s| {
        s.pool.budget = 12;
        s.pool.per_tenant = 8;
        s.pool.tenant_active = 4;
    })
    .await;
    let mut tenants = Vec::new();
    for i in 0..6 {
        tenants.push(
            env.tenant(&unique(&format!("s{i}x")), "テスト市", "131016")
                .await,
        );
    }
    let server = env.serve().await;
    let pools = &server.app.pools;
    let wait = Duration::from_millis(200);

    // Alone, a tenant has all its turns.
    let first = pools.runtime(tenants[0].id).await.unwrap();
    assert_eq!(first.turns(), 4);

    // Six tenants served at once: 12 ÷ 6 = 2 turns (so connections in use) each.
    let mut runtimes = Vec::new();
    for t in &tenants {
        runtimes.push(pools.runtime(t.id).await.unwrap());
    }
    // What the server's background task does every second.
    pools.rebalance();
    for rt in &runtimes {
        assert_eq!(rt.turns(), 2, "{}", rt.slug);
    }
    // A tenant's third request waits for one of its two turns.
    let a = runtimes[0].turn(wait).await.unwrap();
    let b = runtimes[0].turn(wait).await.unwrap();
    assert!(runtimes[0].turn(wait).await.is_none());
    assert!(runtimes[1].turn(wait).await.is_some());
    drop((a, b));
    assert!(runtimes[0].turn(wait).await.is_some());

    server.shutdown().await;
}

/// With a database per municipality, autovacuum's round grows with their number: the
/// control plane sets `autovacuum_naptime` for the databases the cluster holds.
/// The `autovacuum_naptime` (s) the control plane chooses for the databases there
/// are now, `more` added (negative: fewer). Other tests create and drop databases
/// (a catalog each, tenants, erasures) while one reads the count before and after a
/// change, and the count between may stray past both reads: bounds take
/// [`STRAY`] fewer and more, or a step at 180, 360 or 900 crossed meanwhile fails
/// the test.
pub async fn naptime_for_databases(more: i64) -> u64 {
    let n: i64 = admin_client("postgres")
        .await
        .query_one("SELECT count(*) FROM pg_database", &[])
        .await
        .unwrap()
        .get(0);
    madoguchi::control::cluster::autovacuum_naptime_secs(u64::try_from((n + more).max(0)).unwrap())
}

/// How far the number of databases may stray between reads (see [`naptime_for_databases`]).
pub const STRAY: i64 = 20;

/// `autovacuum_naptime` (s) as the cluster has it now (a fresh connection each time,
/// which sees the reloaded configuration).
async fn naptime() -> u64 {
    let v: String = admin_client("postgres")
        .await
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    v.parse::<u64>().unwrap()
}

/// Sets it by hand to 17 s, a value that fits no cluster size, and waits until it
/// reads so. (A server starting in another test at this moment may set it back already.)
pub async fn naptime_set_by_hand() {
    let admin = admin_client("postgres").await;
    for sql in [
        "ALTER SYSTEM SET autovacuum_naptime = '17s'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    for _ in 0..50 {
        if naptime().await == 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value once it is no longer the hand-set one (waiting up to 5 s).
pub async fn naptime_once_changed() -> u64 {
    let mut seen = 17;
    for _ in 0..50 {
        seen = naptime().await;
        if seen != 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autovacuum_round_follows_the_number_of_databases() {
    let env = TestEnv::new().await;
    naptime_set_by_hand().await;
    // Provisioning a municipality sets it for the databases there are (other tests
    // may provision at the same time, so the count is read before and after).
    let low = naptime_for_databases(-STRAY).await;
    env.tenant(&unique("nap"), "千代田区", "131016").await;
    let high = naptime_for_databases(STRAY).await;
    let seen = naptime_once_changed().await;
    assert!(
        low <= seen && seen <= high,
        "autovacuum_naptime {seen}s, expected between {low}s and {high}s"
    );
    // A server starting on a cluster set otherwise (by hand, or by an older version)
    // sets it too.
    naptime_set_by_hand().await;
    let low = naptime_for_databases(-STRAY).await;
    let server = env.serve().await;
    let seen = naptime_once_changed().await;
    let high = naptime_for_databases(STRAY).await;
    assert!(
        low <= seen && seen <= high,
        "after serve started: autovacuum_naptime {seen}s, expected between {low}s and {high}s"
    );
    server.shutdown().await;
}
