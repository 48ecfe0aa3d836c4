//! Operators' notices (a planned stop, an outage): shown at the top of every
//! municipality's citizens' and staff pages while their time lasts, escaped, gone
//! when taken down or over, without a restart; other answers untouched.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::forms::{browser, get};
use crate::harness::{publish_sample, unique, url, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_on_every_municipalitys_pages_while_it_lasts() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("na"), "千代田区", "131016").await;
    let b = env.tenant(&unique("nb"), "札幌市", "011002").await;
    let form = publish_sample(&env, &a).await;
    let server = env.serve().await;
    let c = browser(&server, &[&a.hosts[0], &b.hosts[0]]);
    let pages = [
        url(&server, &a.hosts[0], &form),
        url(&server, &a.hosts[0], "/admin/login"),
        url(&server, &b.hosts[0], "/"),
    ];
    let text = "12月5日（土）22:00〜24:00 は点検のため停止します <予定>";
    let shown = "12月5日（土）22:00〜24:00 は点検のため停止します &lt;予定&gt;";
    // Until every page shows (or no longer shows) the text: the front tier reloads
    // when the catalog announces the change.
    let until_all = |want: bool| {
        let (c, pages) = (c.clone(), pages.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut all = true;
                for p in &pages {
                    let (status, _, body) = get(&c, p).await;
                    assert_eq!(status, 200, "{p}: {body}");
                    all &= body.contains(shown) == want;
                }
                if all {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the notice never {}",
                    if want { "appeared" } else { "went" }
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let now = OffsetDateTime::now_utc();
    let by = "cli:test";
    // Refused: empty, too long, ending before it starts or already over.
    let add = |from: OffsetDateTime, until: OffsetDateTime, body: String| {
        let p = env.platform.clone();
        async move { madoguchi::control::notices::add(&p, by, from, until, &body).await }
    };
    let hour = time::Duration::hours(1);
    assert!(add(now, now + hour, "  ".into()).await.is_err());
    assert!(add(now, now + hour, "あ".repeat(501)).await.is_err());
    assert!(add(now, now - hour, "x".into()).await.is_err());
    assert!(add(now - 2 * hour, now - hour, "x".into()).await.is_err());

    // One later (not shown yet), one now.
    add(now + 24 * hour, now + 26 * hour, "明日の点検".into())
        .await
        .unwrap();
    let id = add(now - time::Duration::minutes(1), now + hour, text.into())
        .await
        .unwrap();
    until_all(true).await;
    let (_, _, page) = get(&c, &pages[0]).await;
    assert!(
        page.contains(r#"<main id="main" class="wrap"><div class="platform-notice" role="note">"#),
        "first in the main content: {page}"
    );
    assert!(!page.contains("明日の点検"), "{page}");
    // Pages the routing answers itself carry it too (here: a host no municipality has).
    let unknown = reqwest::Client::new()
        .get(format!("http://{}/", server.bound.public))
        .header("host", "nosuch.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body = unknown.text().await.unwrap();
    assert!(body.contains(shown), "{body}");
    // Not on what is not a page (the stylesheet, a health check).
    let css = c
        .get(url(&server, &a.hosts[0], "/static/app.css"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!css.contains("点検"));
    let listed = madoguchi::control::notices::current(&env.platform)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Taken down: gone from every page; the operators' log has both acts.
    assert!(madoguchi::control::notices::remove(&env.platform, by, id)
        .await
        .unwrap());
    assert!(!madoguchi::control::notices::remove(&env.platform, by, id)
        .await
        .unwrap());
    until_all(false).await;
    let log = madoguchi::control::oplog::recent(&env.platform.catalog, 20)
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|e| e.action == "notice.add" && e.target == id.to_string())
            && log
                .iter()
                .any(|e| e.action == "notice.remove" && e.target == id.to_string()),
        "{log:?}"
    );
    server.shutdown().await;
}
