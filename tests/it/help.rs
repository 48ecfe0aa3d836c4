//! The operating manuals (操作マニュアル): the citizens' guide and the staff's and
//! administrators' manual, served by every municipality under its own name, reached
//! from the pages people are on, with contents that lead to their sections.

use madoguchi::tenant::staff::Role;
use regex::Regex;

use crate::forms::{browser, get, staff};
use crate::harness::{unique, url, TestEnv};

/// Every link of the contents list lands on a section of the page; returns how many.
fn contents_lead_somewhere(page: &str) -> usize {
    let toc = Regex::new(r#"(?s)<nav aria-labelledby="toc" class="toc">(.*?)</nav>"#)
        .unwrap()
        .captures(page)
        .unwrap_or_else(|| panic!("no contents list in\n{page}"))[1]
        .to_owned();
    let links = Regex::new(r##"href="#([A-Za-z0-9_-]+)""##).unwrap();
    let mut n = 0;
    for m in links.captures_iter(&toc) {
        n += 1;
        assert!(
            page.contains(&format!("<section id=\"{}\"", &m[1])),
            "the contents name #{}, which is not a section of the page",
            &m[1]
        );
    }
    let ids = Regex::new(r#"id="([^"]+)""#).unwrap();
    let mut seen = std::collections::HashSet::new();
    for m in ids.captures_iter(page) {
        assert!(seen.insert(m[1].to_owned()), "id {} twice", &m[1]);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manuals_are_served_linked_and_lead_to_their_sections() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("help"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let citizen = browser(&server, &[host]);

    // Citizens: from the foot of every page, the guide under the municipality's name,
    // its durations and limits the ones the service applies.
    let (_, _, home) = get(&citizen, &u("/")).await;
    assert!(home.contains(r#"<a href="/help">ご利用ガイド"#), "{home}");
    let (status, _, guide) = get(&citizen, &u("/help")).await;
    assert_eq!(status, 200, "{guide}");
    assert!(guide.contains("<title>ご利用ガイド | 千代田区</title>"));
    assert!(guide.contains("千代田区のオンライン申請"));
    assert!(contents_lead_somewhere(&guide) >= 8);
    let draft_hours = format!(
        "最後の操作から{}時間以内なら",
        madoguchi::tenant::forms::citizen::DRAFT_HOURS
    );
    assert!(guide.contains(&draft_hours), "{guide}");
    let link_days = format!(
        "リンクの有効期限は{}日間です",
        madoguchi::tenant::forms::resume::LINK_DAYS
    );
    assert!(guide.contains(&link_days), "{guide}");
    let limits = format!(
        "1つの申請で{}通まで、1つのアドレスに24時間で{}通まで",
        madoguchi::tenant::forms::resume::MAX_LINKS,
        madoguchi::tenant::forms::resume::LINKS_PER_ADDRESS
    );
    assert!(guide.contains(&limits), "{guide}");
    let identity = format!(
        "同じブラウザで、{}分以内に終えてください",
        madoguchi::tenant::identity::REQUEST_MINUTES
    );
    assert!(guide.contains(&identity), "{guide}");

    // Staff: from the sign-in page, readable before signing in (it explains signing
    // in), without the menu.
    let (_, _, login) = get(&citizen, &u("/admin/login")).await;
    assert!(login.contains(r#"href="/admin/help#signin""#), "{login}");
    let (status, _, manual) = get(&citizen, &u("/admin/help")).await;
    assert_eq!(status, 200, "{manual}");
    assert!(manual.contains("<title>操作マニュアル | 千代田区 管理画面</title>"));
    assert!(!manual.contains("管理メニュー"), "a menu without a session");
    assert!(contents_lead_somewhere(&manual) >= 10);
    // No help desk configured: the manual says where its contact was given.
    assert!(
        manual.contains("ヘルプデスクの連絡先は、サービスの契約時にお知らせしています。"),
        "{manual}"
    );
    use madoguchi::tenant::staff::{ABSOLUTE_SECS, FREE_ATTEMPTS, IDLE_SECS};
    let rules = [
        format!("{FREE_ATTEMPTS}回続けて失敗すると"),
        format!(
            "操作しないまま{}分たつか、ログインから{}時間たつと",
            IDLE_SECS / 60,
            ABSOLUTE_SECS / 3600
        ),
        format!(
            "上限は{}ページ、{}項目です",
            madoguchi::tenant::forms::definition::MAX_PAGES,
            madoguchi::tenant::forms::definition::MAX_FIELDS
        ),
    ];
    for rule in rules {
        assert!(manual.contains(&rule), "{rule} not in\n{manual}");
    }

    // Signed in: in the menu of every screen, and marked as the current one there.
    let member = staff(&env, &server, &t, Role::Staff, Some("総務課")).await;
    let (_, _, forms) = get(&member.client, &u("/admin/forms")).await;
    assert!(
        forms.contains(r#"<a href="/admin/help">ヘルプ</a>"#),
        "{forms}"
    );
    let (status, _, manual) = get(&member.client, &u("/admin/help")).await;
    assert_eq!(status, 200);
    // No scanner here: the manual says files are not scanned.
    assert!(
        manual.contains(r#"id="help-unscanned""#) && !manual.contains("help-scanned"),
        "{manual}"
    );
    assert!(
        manual.contains(r#"<a href="/admin/help" aria-current="page">ヘルプ</a>"#),
        "{manual}"
    );
    assert!(
        manual.contains(&member.email),
        "signed in as {}",
        member.email
    );
    server.shutdown().await;
}
