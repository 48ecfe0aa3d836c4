//! Abuse and fairness: citizens' form POSTs are limited per municipality and client
//! before any other work; each municipality has a ceiling of its own; one flooded
//! municipality does not starve another.

use std::time::{Duration, Instant};

use crate::harness::{get_with_host, unique, TestEnv};

const FORM: &str = include_str!("../../src/control/samples/bulky-waste.json");

async fn publish(env: &TestEnv, t: &madoguchi::catalog::TenantRecord) -> String {
    madoguchi::control::tenant_admin::import_form(&env.platform, t, FORM, "環境課", true)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_are_limited_per_tenant_and_client_before_anything_else() {
    let env = TestEnv::with(|s| {
        s.limits.submit_per_minute = 6;
        s.limits.submit_burst = 3;
    })
    .await;
    let a = env.tenant(&unique("ra"), "千代田区", "131016").await;
    let b = env.tenant(&unique("rb"), "札幌市", "011002").await;
    let (pa, pb) = (publish(&env, &a).await, publish(&env, &b).await);
    let server = env.serve().await;
    let c = reqwest::Client::new();
    let post = |host: &str, path: &str| {
        c.post(format!("http://{}{path}", server.bound.public))
            .header("host", host)
            .header("content-type", "application/x-www-form-urlencoded")
            // No token: without a limit this is refused by the CSRF check.
            .body("_page=0&_nav=next")
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post(&a.hosts[0], &pa).await.unwrap().status().as_u16());
    }
    assert!(statuses[..3].iter().all(|&s| s != 429), "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    let r = post(&a.hosts[0], &format!("{pa}/submit")).await.unwrap();
    assert_eq!(r.status(), 429, "the final submit shares the quota");
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.text().await.unwrap().contains("操作の回数が多すぎます"));
    // Another municipality is counted separately.
    assert_ne!(post(&b.hosts[0], &pb).await.unwrap().status(), 429);
    // Reading the form is not limited.
    assert_eq!(get_with_host(&server, &a.hosts[0], &pa).await.0, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_has_a_ceiling_of_its_own() {
    let env = TestEnv::with(|s| s.limits.tenant_per_second = 5).await;
    let a = env.tenant(&unique("ca"), "千代田区", "131016").await;
    let b = env.tenant(&unique("cb"), "札幌市", "011002").await;
    let server = env.serve().await;
    let mut limited = 0;
    for _ in 0..30 {
        let (status, body) = get_with_host(&server, &a.hosts[0], "/").await;
        if status == 429 {
            limited += 1;
            assert!(body.contains("操作の回数が多すぎます"));
        }
    }
    assert!(limited >= 15, "only {limited} of 30 were turned away");
    assert_eq!(get_with_host(&server, &b.hosts[0], "/").await.0, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_tenant_does_not_starve_a_quiet_one() {
    let env = TestEnv::with(|s| {
        s.pool.budget = 6;
        s.pool.per_tenant = 3;
    })
    .await;
    let noisy = env.tenant(&unique("noisy"), "千代田区", "131016").await;
    let quiet = env.tenant(&unique("quiet"), "札幌市", "011002").await;
    let (pn, pq) = (publish(&env, &noisy).await, publish(&env, &quiet).await);
    let server = std::sync::Arc::new(env.serve().await);
    let stop = Instant::now() + Duration::from_secs(3);
    let mut flood = Vec::new();
    for _ in 0..24 {
        let server = std::sync::Arc::clone(&server);
        let (host, path) = (noisy.hosts[0].clone(), pn.clone());
        flood.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                get_with_host(&server, &host, &path).await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..15 {
        let t = Instant::now();
        let (status, body) = get_with_host(&server, &quiet.hosts[0], &pq).await;
        assert_eq!(status, 200, "{body}");
        worst = worst.max(t.elapsed());
    }
    let mut sent = 0;
    for f in flood {
        sent += f.await.unwrap();
    }
    assert!(sent > 24, "the flood did not run ({sent})");
    // Generous: the point is that the quiet tenant is served at all, promptly.
    assert!(
        worst < Duration::from_secs(2),
        "quiet tenant waited {worst:?}"
    );
    if let Ok(s) = std::sync::Arc::try_unwrap(server) {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_bodies_get_a_japanese_page() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("big"), "千代田区", "131016").await;
    let server = env.serve().await;
    let c = reqwest::Client::new();
    // Headers over 32 KiB (but under hyper's own limit): 431 with a page.
    let r = c
        .get(format!("http://{}/", server.bound.public))
        .header("host", &t.hosts[0])
        .header("cookie", format!("x={}", "a".repeat(40 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert!(r.text().await.unwrap().contains("リクエストが大きすぎます"));
    // Sign-in takes 16 KiB at most; a citizen form page up to 256 KiB.
    let body = format!("email=a%40example.jp&password={}", "x".repeat(20 * 1024));
    let r = c
        .post(format!("http://{}/admin/login", server.bound.public))
        .header("host", &t.hosts[0])
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("送信内容が大きすぎます"));
    server.shutdown().await;
}
