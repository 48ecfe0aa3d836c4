//! Abuse and fairness: citizens' form POSTs are limited per municipality and client
//! before any other work; each municipality has a ceiling of its own; one flooded
//! municipality does not starve another.

use std::time::{Duration, Instant};

use crate::forms::{browser, capture, get, post, post_from, send_form};
use crate::harness::{get_with_host, publish_sample as publish, unique, url, TestEnv};

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

/// The city's own site, which may frame its forms.
const CITY_SITE: &str = "https://www.city.example";

/// A refusal as the citizen's browser gets it: status, body, and whether the city's
/// site may frame it.
async fn refusal(r: reqwest::Response) -> (u16, String, bool) {
    let framed = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(&format!("frame-ancestors 'self' {CITY_SITE}")));
    (r.status().as_u16(), r.text().await.unwrap(), framed)
}

/// A citizen with the sample form open, in a browser of their own.
struct Opened {
    t: madoguchi::catalog::TenantRecord,
    server: madoguchi::front::Server,
    client: reqwest::Client,
    /// The site as its pages name their origin (`http://host:port`).
    origin: String,
    /// The form's path (`/f/…`) and full address.
    public: String,
    form: String,
    token: String,
}

impl Opened {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

async fn open_sample(env: &TestEnv, prefix: &str) -> Opened {
    let t = env.tenant(&unique(prefix), "千代田区", "131016").await;
    let public = publish(env, &t).await;
    // The city lets its own site frame the forms: refusals show inside the frame.
    crate::harness::admin_client(&t.database)
        .await
        .execute(
            "UPDATE settings SET embed_origins = ARRAY[$1]",
            &[&CITY_SITE],
        )
        .await
        .unwrap();
    let server = env.serve().await;
    let client = browser(&server, &[&t.hosts[0]]);
    let origin = url(&server, &t.hosts[0], "");
    let form = format!("{origin}{public}");
    let (_, _, page) = get(&client, &form).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    Opened {
        t,
        server,
        client,
        origin,
        public,
        form,
        token,
    }
}

/// The sample form's first page as a citizen types it.
fn first_page(token: &str) -> Vec<(&str, &str)> {
    vec![
        ("_token", token),
        ("_page", "0"),
        ("_nav", "next"),
        ("name.family", "葛\u{E0100}西"),
        ("name.given", "花子"),
        ("name.family_kana", "かさい"),
        ("name.given_kana", "はなこ"),
        ("email", "hanako.kasai@example.jp"),
        ("address.postal", "1000001"),
        ("address.address1", "東京都千代田区千代田1-1"),
        ("address.address2", "架空ハイツ101"),
        ("phone", "03-1234-5678"),
    ]
}

/// Fields as a request takes them.
fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// What a refusal that kept the page `typed` (sent to `public`) would send again:
/// its hidden fields, in order, checked to be exactly what was typed.
fn kept_fields(refused: &str, public: &str, typed: &[(&str, &str)]) -> Vec<(String, String)> {
    assert!(
        refused.contains("入力した内容は消えていません"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!(r#"<form method="post" action="{public}">"#)),
        "{refused}"
    );
    let fields: Vec<(String, String)> =
        regex::Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)">"#)
            .unwrap()
            .captures_iter(refused)
            .map(|m| (m[1].to_owned(), m[2].to_owned()))
            .collect();
    let expected: Vec<(String, String)> = typed
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(fields, expected);
    fields
}

/// A citizen's page turned away by a limit comes back with what was typed, as a page
/// that sends it again with one press; the application then goes on as if the first
/// press had been taken.
async fn a_refused_page_is_sent_again_as_typed(env: TestEnv) {
    let o = open_sample(&env, "kp").await;
    let (c, form, here, token) = (
        &o.client,
        o.form.as_str(),
        Some(o.origin.as_str()),
        &o.token,
    );
    let typed = first_page(token);
    // A page another site made the browser post (the same fields) is refused plainly:
    // offered again on this site, one press would pass the forms' check of origin.
    let mut forged = typed.clone();
    forged[0].1 = "forged";
    let mut refused = None;
    for _ in 0..50 {
        let (status, _, body) = post_from(c, form, Some("https://evil.example"), &forged).await;
        if status == 429 {
            refused = Some(body);
            break;
        }
        assert_ne!(status, 303, "{body}");
    }
    let refused = refused.unwrap_or_else(|| panic!("no page was turned away"));
    assert!(refused.contains("操作の回数が多すぎます"), "{refused}");
    assert!(!refused.contains("type=\"hidden\""), "{refused}");
    // The citizen's own page, sent at once, again and again, until the limit turns
    // one away (each one taken only saves the same page again).
    let mut refused = None;
    for _ in 0..50 {
        let (status, body, framed) = refusal(send_form(c, form, here, &typed).await).await;
        if status == 429 {
            assert!(framed, "the refusal cannot show in the city's frame");
            refused = Some(body);
            break;
        }
        assert_eq!(status, 303, "{body}");
    }
    let refused = refused.unwrap_or_else(|| panic!("no page was turned away"));
    let wait: u64 = capture(r"(\d+)秒ほど待ってから", &refused).parse().unwrap();
    let fields = kept_fields(&refused, &o.public, &typed);
    // A page sent without an Origin (a browser's privacy setting drops it) whose token
    // the form's cookie holds is kept as well (or taken, if the limit had room again).
    let (status, _, body) = post(c, form, &typed).await;
    match status {
        429 => drop(kept_fields(&body, &o.public, &typed)),
        _ => assert_eq!(status, 303, "{body}"),
    }
    // Pressed once the wait it names has passed: it is taken (the wait is not
    // rounded down).
    let sent = pairs(&fields);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, loc, body) = post_from(c, form, here, &sent).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    // The page was saved as typed: the next page follows, and its answers are shown
    // back on the confirmation step (after the limit has room for two more requests).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, loc, body) = post(
        c,
        form,
        &[
            ("_token", token),
            ("_page", "1"),
            ("_nav", "next"),
            ("items", "ソファ"),
            ("count", "1"),
            ("date", "2031-07-19"),
            ("place", "玄関前"),
            ("consent", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, confirm) = get(c, &o.at(&loc)).await;
    assert!(
        confirm.contains("葛\u{E0100}西\u{3000}花子（カサイ\u{3000}ハナコ）"),
        "{confirm}"
    );
    o.server.shutdown().await;
}

/// A page met by a database that cannot take it (here: read-only) is answered 503
/// with what was typed, and sent again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_met_by_a_database_outage_keeps_what_was_typed() {
    let env = TestEnv::new().await;
    let o = open_sample(&env, "ko").await;
    let (c, form, here, token, t) = (
        &o.client,
        o.form.as_str(),
        Some(o.origin.as_str()),
        &o.token,
        &o.t,
    );
    let typed = first_page(token);
    let admin = crate::harness::admin_client("postgres").await;
    let set = |sql: String| {
        let admin = &admin;
        let db = t.database.clone();
        async move {
            admin.batch_execute(&sql).await.unwrap();
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    &[&db],
                )
                .await
                .unwrap();
        }
    };
    set(format!(
        "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
        t.database
    ))
    .await;
    let (status, refused, framed) = refusal(send_form(c, form, here, &typed).await).await;
    assert_eq!(status, 503, "{refused}");
    assert!(framed, "the refusal cannot show in the city's frame");
    assert!(refused.contains("ただいま混み合っているため"), "{refused}");
    let fields = kept_fields(&refused, &o.public, &typed);
    set(format!(
        "ALTER DATABASE \"{}\" RESET default_transaction_read_only",
        t.database
    ))
    .await;
    let sent = pairs(&fields);
    // The tenant's pool reconnects after the outage (a connection the termination
    // cut may answer 503 once more).
    let mut answer = (0, String::new(), String::new());
    for _ in 0..20 {
        answer = post_from(c, form, here, &sent).await;
        if answer.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, loc, body) = answer;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    o.server.shutdown().await;
}

/// The backends a role has open in the database `db` is connected to.
async fn service_pids(db: &tokio_postgres::Client, role: &str) -> std::collections::BTreeSet<i32> {
    db.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = $1",
        &[&role],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A page that runs out of time (here: its draft's table locked for longer than the
/// 30 s a request may take) is answered 503 just before the limit, with what was
/// typed, and sent again once the lock is gone. Takes 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_runs_out_of_time_keeps_what_was_typed() {
    let env = TestEnv::new().await;
    let o = open_sample(&env, "kt").await;
    let (c, form, here, token) = (
        &o.client,
        o.form.as_str(),
        Some(o.origin.as_str()),
        &o.token,
    );
    let typed = first_page(token);
    let locker = crate::harness::admin_client(&o.t.database).await;
    // Backends are looked at from another session: inside the locker's transaction
    // PostgreSQL would show the same snapshot of pg_stat_activity at every look.
    let watch = crate::harness::admin_client(&o.t.database).await;
    // The municipality's pool holds a few connections (pages read at once)...
    let pages = (0..8).map(|_| {
        let other = crate::forms::browser(&o.server, &[&o.t.hosts[0]]);
        let u = url(&o.server, &o.t.hosts[0], &o.public);
        async move { get(&other, &u).await.0 }
    });
    assert!(futures::future::join_all(pages)
        .await
        .iter()
        .all(|s| *s == 200));
    let before = service_pids(&watch, &o.t.role).await;
    assert!(before.len() >= 2, "{before:?}");
    locker
        .batch_execute("BEGIN; LOCK TABLE citizen_drafts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&typed)
        .finish();
    let started = Instant::now();
    let r = c
        .post(form)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", o.origin.as_str())
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let (status, refused, _) = refusal(r).await;
    assert_eq!(status, 503, "{refused}");
    assert!(took >= Duration::from_secs(29), "answered after {took:?}");
    let fields = kept_fields(&refused, &o.public, &typed);
    // The statement it was waiting on is cancelled, not left waiting on the lock in a
    // connection that would go back to the pool busy (the lock is still held here).
    let mut waiting = -1i64;
    for _ in 0..50 {
        waiting = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        waiting, 0,
        "the timed-out statement still waits on the lock"
    );
    // ...of which only the one that ran out of time is closed: the others go on
    // serving (no pool opened afresh for one slow page).
    let mut after = service_pids(&watch, &o.t.role).await;
    for _ in 0..50 {
        if after.len() < before.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = service_pids(&watch, &o.t.role).await;
    }
    let kept = before.intersection(&after).count();
    assert_eq!(kept, before.len() - 1, "before {before:?}, after {after:?}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (status, loc, body) = post_from(c, form, here, &pairs(&fields)).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("?page=1"), "{loc}");
    o.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_over_the_clients_limit_keeps_what_was_typed() {
    a_refused_page_is_sent_again_as_typed(
        TestEnv::with(|s| {
            s.limits.submit_per_minute = 30;
            s.limits.submit_burst = 2;
        })
        .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_over_the_municipalitys_ceiling_keeps_what_was_typed() {
    a_refused_page_is_sent_again_as_typed(
        TestEnv::with(|s| {
            s.limits.tenant_per_second = 2;
            // Held long enough for the page's body to be read while it waits.
            s.limits.ceiling_delay = Duration::from_millis(300);
        })
        .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_has_a_ceiling_of_its_own() {
    let env = TestEnv::with(|s| {
        s.limits.tenant_per_second = 5;
        s.limits.ceiling_delay = Duration::from_millis(20);
    })
    .await;
    let a = env.tenant(&unique("ca"), "千代田区", "131016").await;
    let b = env.tenant(&unique("cb"), "札幌市", "011002").await;
    let server = env.serve().await;
    // Sent together: one after another on a loaded machine, the ceiling's refills
    // (one each 200 ms) would let through as many as the machine is slow.
    let answers =
        futures::future::join_all((0..30).map(|_| get_with_host(&server, &a.hosts[0], "/"))).await;
    let mut limited = 0;
    for (status, body) in answers {
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
async fn refusals_over_the_ceiling_are_held_so_a_flood_slows_down() {
    let hold = Duration::from_millis(500);
    let env = TestEnv::with(|s| {
        s.limits.tenant_per_second = 5;
        s.limits.ceiling_delay = hold;
    })
    .await;
    let a = env.tenant(&unique("ha"), "千代田区", "131016").await;
    let b = env.tenant(&unique("hb"), "札幌市", "011002").await;
    let server = std::sync::Arc::new(env.serve().await);
    // The other municipality's pool is opened first: what is timed below is waiting
    // behind the flood, not opening a database connection on a loaded machine.
    assert_eq!(get_with_host(&server, &b.hosts[0], "/").await.0, 200);
    // Eight clients, each sending its next request as soon as it is answered, for 2 s.
    let clients = 8u32;
    let started = Instant::now();
    let stop = started + Duration::from_secs(2);
    let mut flood = Vec::new();
    for _ in 0..clients {
        let server = std::sync::Arc::clone(&server);
        let host = a.hosts[0].clone();
        flood.push(tokio::spawn(async move {
            let (mut refused, mut quickest) = (0u32, Duration::MAX);
            while Instant::now() < stop {
                let t = Instant::now();
                let (status, body) = get_with_host(&server, &host, "/").await;
                if status == 429 {
                    assert!(body.contains("操作の回数が多すぎます"));
                    refused += 1;
                    quickest = quickest.min(t.elapsed());
                }
            }
            (refused, quickest)
        }));
    }
    // Meanwhile another municipality is answered at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    assert_eq!(get_with_host(&server, &b.hosts[0], "/").await.0, 200);
    assert!(
        t.elapsed() < hold,
        "the other tenant waited {:?}",
        t.elapsed()
    );
    let (mut refused, mut quickest) = (0, Duration::MAX);
    for f in flood {
        let (r, q) = f.await.unwrap();
        refused += r;
        quickest = quickest.min(q);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Each refusal took the hold, so eight clients got at most eight per hold; sent at
    // once, they would have been refused thousands of times.
    assert!(refused > 0, "the ceiling never refused");
    assert!(quickest >= hold, "a refusal came after {quickest:?}");
    let most = f64::from(clients) * (elapsed / hold.as_secs_f64() + 1.0);
    assert!(
        f64::from(refused) <= most,
        "{refused} refusals in {elapsed:.1} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_tenant_does_not_starve_a_quiet_one() {
    let env = TestEnv::with(|s| {
        s.pool.budget = 6;
        s.pool.per_tenant = 3;
        s.pool.tenant_active = 2;
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
    // The flooded tenant runs at most two requests at once; the rest wait their turn.
    let (mut most_running, mut most_waiting) = (0, 0);
    let noisy_gauge = |text: &str, state: &str| -> i64 {
        let key = format!(
            "madoguchi_tenant_requests{{tenant=\"{}\",state=\"{state}\"}} ",
            noisy.slug
        );
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    for _ in 0..15 {
        let t = Instant::now();
        let (status, body) = get_with_host(&server, &quiet.hosts[0], &pq).await;
        assert_eq!(status, 200, "{body}");
        worst = worst.max(t.elapsed());
        let text = crate::harness::ops_metrics(server.bound.ops).await;
        most_running = most_running.max(noisy_gauge(&text, "running"));
        most_waiting = most_waiting.max(noisy_gauge(&text, "waiting"));
    }
    assert!(
        (1..=2).contains(&most_running),
        "the flooded tenant ran {most_running} requests at once"
    );
    assert!(most_waiting > 0, "no request of the flood ever waited");
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
    // So do the status lookup and the opening of a correction.
    for path in ["/status", "/status/resubmit"] {
        let body = format!("receipt=A&email={}", "x".repeat(20 * 1024));
        let r = c
            .post(format!("http://{}{path}", server.bound.public))
            .header("host", &t.hosts[0])
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
    }
    server.shutdown().await;
}

const POW_FORM: &str = r#"{ "format": "madoguchi.form/1", "title": "イベント申込", "settings": { "proof_of_work": true },
  "pages": [ { "id": "p1", "fields": [ { "id": "memo", "type": "text", "label": "メモ", "required": true } ] } ] }"#;

/// Opens the form, answers and reaches the confirmation page; returns (client, token, challenge JSON).
/// The proof-of-work challenge (JSON) of a confirmation page.
fn challenge_of(page: &str) -> String {
    crate::forms::capture(r#"data-pow="([^"]+)""#, page)
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#38;", "&")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

async fn to_confirm(
    server: &madoguchi::front::Server,
    host: &str,
    public: &str,
) -> (reqwest::Client, String, String) {
    use crate::forms::{browser, capture, get, post};
    let c = browser(server, &[host]);
    let u = |p: &str| crate::harness::url(server, host, p);
    let (_, _, page) = get(&c, &u(public)).await;
    let token = capture(r#"name="_token" value="([^"]+)""#, &page);
    let (status, loc, body) = post(
        &c,
        &u(public),
        &[
            ("_token", &token),
            ("_page", "0"),
            ("_nav", "next"),
            ("memo", "よろしく"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (status, _, confirm) = get(&c, &u(&loc)).await;
    assert_eq!(status, 200);
    let challenge = challenge_of(&confirm);
    (c, token, challenge)
}

fn solve(challenge: &str) -> String {
    use base64::Engine;
    let c: serde_json::Value = serde_json::from_str(challenge).unwrap();
    let n = altcha_lib_rs::solve_challenge(
        c["challenge"].as_str().unwrap(),
        c["salt"].as_str().unwrap(),
        None,
        c["maxnumber"].as_u64(),
        0,
    )
    .unwrap();
    let payload = serde_json::json!({ "algorithm": c["algorithm"], "challenge": c["challenge"], "number": n,
        "salt": c["salt"], "signature": c["signature"] });
    base64::engine::general_purpose::STANDARD.encode(payload.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_of_work_before_the_final_submit_once_per_solution() {
    use crate::forms::post;
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("pow"), "千代田区", "131016").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, POW_FORM, "総務課", true)
            .await
            .unwrap();
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let submit = crate::harness::url(&server, host, &format!("{public}/submit"));
    let (c, token, challenge) = to_confirm(&server, host, &public).await;
    // Without a solution, or with a wrong one: not sent; the confirmation page is
    // drawn again with a fresh challenge and a word on why (the check may have been
    // switched on after the page was drawn, or have expired), answers kept.
    let retry = |status: u16, loc: &str| status == 303 && loc.ends_with("/confirm?retry=1");
    let (status, loc, page) = post(&c, &submit, &[("_token", &token)]).await;
    assert!(retry(status, &loc), "{status} {loc} {page}");
    let (status, _, again) = crate::forms::get(&c, &crate::harness::url(&server, host, &loc)).await;
    assert_eq!(status, 200);
    assert!(
        again.contains("自動確認をやり直す") && again.contains("よろしく"),
        "{again}"
    );
    let fresh = challenge_of(&again);
    assert!(fresh.contains("salt") && fresh != challenge, "{fresh}");
    let mut wrong: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            solve(&challenge),
        )
        .unwrap(),
    )
    .unwrap();
    wrong["number"] = serde_json::json!(wrong["number"].as_u64().unwrap() + 1);
    let wrong = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        wrong.to_string(),
    );
    let (status, loc, _) = post(&c, &submit, &[("_token", &token), ("pow", &wrong)]).await;
    assert!(retry(status, &loc), "{status} {loc}");
    // Solved: accepted.
    let solution = solve(&challenge);
    let (status, loc, body) = post(&c, &submit, &[("_token", &token), ("pow", &solution)]).await;
    assert_eq!(status, 303, "{body}");
    assert!(loc.ends_with("/done"));
    // A double tap sends one solution twice at once: both get the 受付 page (the
    // second was refused as a replay before).
    let (c3, token3, challenge3) = to_confirm(&server, host, &public).await;
    let solution3 = solve(&challenge3);
    let tap = [("_token", token3.as_str()), ("pow", solution3.as_str())];
    // The draft held here a moment, so that the two sends overlap for sure.
    let hold = crate::harness::admin_client(&t.database).await;
    hold.batch_execute("BEGIN").await.unwrap();
    hold.query(
        "SELECT 1 FROM citizen_drafts WHERE submission_id IS NULL FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let ((one, two), ()) = tokio::join!(
        async { tokio::join!(post(&c3, &submit, &tap), post(&c3, &submit, &tap)) },
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            hold.batch_execute("COMMIT").await.unwrap();
        }
    );
    assert_eq!((one.0, two.0), (303, 303), "{} {}", one.2, two.2);
    assert!(one.1.ends_with("/done") && two.1.ends_with("/done"));
    // The same solution cannot be used for another application.
    let (c2, token2, _) = to_confirm(&server, host, &public).await;
    let (status, loc, _) = post(&c2, &submit, &[("_token", &token2), ("pow", &solution)]).await;
    assert!(retry(status, &loc), "{status} {loc}");
    let n: i64 = crate::harness::admin_client(&t.database)
        .await
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "one application each, the double tap's included");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_a_body_do_not_hold_the_tenants_turns() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::with(|s| s.pool.tenant_active = 1).await;
    let t = env.tenant(&unique("slowbody"), "千代田区", "131016").await;
    let path = publish(&env, &t).await;
    let server = env.serve().await;
    // Three clients send a form POST's head and a little of its body, then stall.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(server.bound.public)
            .await
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n_token=abc",
            t.hosts[0]
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The tenant's only turn is free for everyone else.
    for _ in 0..3 {
        let t0 = Instant::now();
        let (status, body) = get_with_host(&server, &t.hosts[0], &path).await;
        assert_eq!(status, 200, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    drop(stalled);
    server.shutdown().await;
}

/// Reads until the server closes the connection; panics if it is still open after
/// `limit`. Returns how long it took and what the server sent.
async fn closed_within(mut s: tokio::net::TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let t = Instant::now();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match tokio::time::timeout_at((t + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return (t.elapsed(), seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The types of the HTTP/2 frames in what a server sent.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// A connection with no request in progress is closed after the idle limit, whatever
/// the client left it in: nothing sent at all, half a request's headers (HTTP/1.1), an
/// HTTP/2 stream whose headers never end. Before, hyper waited for a connection's
/// first bytes without a limit, and HTTP/2 had no header timeout: such connections
/// stayed open for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_are_closed() {
    use tokio::io::AsyncWriteExt;
    let idle = Duration::from_secs(1);
    let env = TestEnv::with(|s| s.connection_idle = idle).await;
    let t = env.tenant(&unique("idle"), "千代田区", "131016").await;
    let server = env.serve().await;
    let limit = idle + madoguchi::front::conn::idle_grace(idle) + Duration::from_secs(1);
    let connect = || tokio::net::TcpStream::connect(server.bound.public);

    let silent = connect().await.unwrap();
    let mut half_h1 = connect().await.unwrap();
    half_h1
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nAccept: text/html",
                t.hosts[0]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut half_h2 = connect().await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
                                                           // HEADERS on stream 1 without END_HEADERS: a CONTINUATION that never comes.
    hello.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]);
    half_h2.write_all(&hello).await.unwrap();

    let (silent, h1, h2) = tokio::join!(
        closed_within(silent, limit),
        closed_within(half_h1, limit),
        closed_within(half_h2, limit),
    );
    for (what, (after, _)) in [
        ("silent", &silent),
        ("half HTTP/1.1", &h1),
        ("half HTTP/2", &h2),
    ] {
        assert!(
            *after >= idle - Duration::from_millis(100),
            "{what}: closed after {after:?}"
        );
    }
    // The HTTP/2 client was told first (GOAWAY), then dropped.
    assert!(
        h2_frame_types(&h2.1).contains(&7),
        "no GOAWAY: {:?}",
        h2_frame_types(&h2.1)
    );
    server.shutdown().await;
}

/// Idleness counts from the end of the last request: a connection used more often
/// than the limit stays open, a request answered after longer than the limit (a
/// refusal held over the tenant's ceiling) is not cut, and the connection closes
/// once it has really been idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_use_are_kept_and_closed_once_idle() {
    let idle = Duration::from_secs(2);
    let hold = Duration::from_millis(3000);
    let env = TestEnv::with(|s| {
        s.connection_idle = idle;
        s.limits.tenant_per_second = 2;
        s.limits.ceiling_delay = hold;
    })
    .await;
    let t = env.tenant(&unique("busy"), "千代田区", "131016").await;
    let server = env.serve().await;
    for version in ["HTTP/1.1", "HTTP/2"] {
        let tcp = tokio::net::TcpStream::connect(server.bound.public)
            .await
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(tcp);
        type Send = Box<
            dyn Fn(
                    hyper::Request<axum::body::Body>,
                ) -> std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = hyper::Result<hyper::Response<hyper::body::Incoming>>,
                            > + std::marker::Send,
                    >,
                > + std::marker::Send
                + Sync,
        >;
        let (send, conn): (Send, tokio::task::JoinHandle<hyper::Result<()>>) =
            if version == "HTTP/2" {
                let (tx, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .unwrap();
                (
                    Box::new(move |r| {
                        let mut tx = tx.clone();
                        Box::pin(async move { tx.send_request(r).await })
                    }),
                    tokio::spawn(conn),
                )
            } else {
                let (tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                let tx = std::sync::Arc::new(tokio::sync::Mutex::new(tx));
                (
                    Box::new(move |r| {
                        let tx = std::sync::Arc::clone(&tx);
                        Box::pin(async move {
                            let mut tx = tx.lock().await;
                            tx.ready().await?;
                            tx.send_request(r).await
                        })
                    }),
                    tokio::spawn(conn),
                )
            };
        let get = |host: &str| {
            hyper::Request::get(format!("http://{host}/"))
                .header("host", host)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        // Used every 0.5 s for 3 s: more than the limit in all, never idle for a
        // quarter of it.
        for _ in 0..6 {
            let r = send(get(&t.hosts[0]))
                .await
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(r.status(), 200, "{version}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Over the ceiling (2 a second, a burst of 4 used up above and refilled at
        // 2 a second): refusals held 2.5 s each, longer than the limit.
        let started = Instant::now();
        let mut held = false;
        for _ in 0..8 {
            let r = send(get(&t.hosts[0]))
                .await
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            if r.status() == 429 {
                assert!(started.elapsed() >= hold, "{version}");
                held = true;
                break;
            }
        }
        assert!(held, "{version}: never over the ceiling");
        // Still open after the held answer: the next request goes on this connection.
        let r = send(get(&t.hosts[0]))
            .await
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!([200, 429].contains(&r.status().as_u16()), "{version}");
        // Then nothing: the server closes it.
        let closed = tokio::time::timeout(idle + Duration::from_secs(2), conn).await;
        assert!(closed.is_ok(), "{version}: still open");
        tokio::time::sleep(hold).await;
    }
    server.shutdown().await;
}
