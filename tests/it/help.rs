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

/// Every link of `page` into `base` (`href="/admin/help#id"`) lands on an id of
/// `target`, the page it names; returns how many.
fn links_land(page: &str, base: &str, target: &str) -> usize {
    let links = Regex::new(&format!(
        r#"href="{}#([A-Za-z0-9_-]+)""#,
        regex::escape(base)
    ))
    .unwrap();
    let mut n = 0;
    for m in links.captures_iter(page) {
        n += 1;
        assert!(
            target.contains(&format!("id=\"{}\"", &m[1])),
            "a link to {base}#{}, which is not on that page",
            &m[1]
        );
    }
    n
}

/// The training text (操作研修テキスト) and the interface guide (連携APIインターフェース
///仕様) are linked from the manual, lead into it where they say so, and the guide
/// names every operation of the published OpenAPI document, no other, and the
/// workflow as the service applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_text_and_the_interface_guide_match_the_service() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("text"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let reader = browser(&server, &[host]);
    let (_, _, manual) = get(&reader, &u("/admin/help")).await;
    let (_, _, guide) = get(&reader, &u("/help")).await;
    assert!(
        manual.contains(r#"href="/admin/help/training""#),
        "{manual}"
    );
    assert!(manual.contains(r#"href="/admin/help/api""#), "{manual}");

    let (status, _, text) = get(&reader, &u("/admin/help/training")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("<title>操作研修テキスト | 千代田区 管理画面</title>"));
    assert!(contents_lead_somewhere(&text) >= 12);
    assert!(links_land(&text, "/admin/help", &manual) >= 20);
    assert!(links_land(&text, "/help", &guide) >= 2);

    let (status, _, api) = get(&reader, &u("/admin/help/api")).await;
    assert_eq!(status, 200, "{api}");
    assert!(api.contains("<title>連携APIインターフェース仕様 | 千代田区 管理画面</title>"));
    assert!(contents_lead_somewhere(&api) >= 10);
    assert!(links_land(&api, "/admin/help", &manual) >= 1);
    // The operations table against the document the service publishes.
    let (_, _, doc) = get(&reader, &u("/api/v1/openapi.json")).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let mut published = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            published.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(published.len() >= 8, "{published:?}");
    let table = Regex::new(r#"(?s)id="operation-table">(.*?)</table>"#)
        .unwrap()
        .captures(&api)
        .unwrap_or_else(|| panic!("no operations table in\n{api}"))[1]
        .to_owned();
    let listed: std::collections::BTreeSet<String> =
        Regex::new(r#"<th scope="row"><code>((?:GET|POST|PUT|PATCH|DELETE) /api/v1/[^<]*)</code>"#)
            .unwrap()
            .captures_iter(&table)
            .map(|m| m[1].to_owned())
            .collect();
    assert_eq!(
        listed, published,
        "the guide's operations and the OpenAPI document's"
    );
    for scope in madoguchi::tenant::api::SCOPES {
        assert!(
            api.contains(&format!("<code>{scope}</code>")),
            "{scope} not in the guide"
        );
    }
    // The workflow as the service applies it: a final status has no next one, and
    // the guide's limits are the code's.
    use madoguchi::tenant::cases::Status;
    for s in Status::ALL {
        let next = s
            .staff_next()
            .iter()
            .map(|n| format!("<code>{}</code>", n.as_str()))
            .collect::<Vec<_>>()
            .join("、");
        let row = format!(
            "<code>{}</code></th><td>{}</td><td>{}</td>",
            s.as_str(),
            s.label(),
            if next.is_empty() {
                "（変えられません）".to_owned()
            } else {
                next
            }
        );
        assert!(api.contains(&row), "{row} not in\n{api}");
    }
    assert!(api.contains(&format!(
        "1回に返す件数（1〜{}、既定{}。",
        madoguchi::tenant::api::PAGE_MAX,
        madoguchi::tenant::api::PAGE_DEFAULT
    )));
    assert!(api.contains(&format!(
        "要求の本文は{}KBまでです",
        madoguchi::tenant::http::MAX_FORM_BODY / 1024
    )));

    // Signed in, the token screen leads to the guide.
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let (_, _, tokens) = get(&admin.client, &u("/admin/api-tokens")).await;
    assert!(tokens.contains(r#"href="/admin/help/api""#), "{tokens}");
    server.shutdown().await;
}
