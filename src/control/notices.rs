//! Notices operators post to every municipality's pages: a planned stop for
//! maintenance, an outage under way. Each is shown on citizens' and staff pages
//! between its `shown_from` and `shown_until`; the front tier keeps a copy with the
//! host table (reloaded when the catalog announces a change), so a notice appears
//! and ends on time without a restart.

use time::OffsetDateTime;

use crate::platform::Platform;

/// The longest notice, in characters (a line or two on a phone).
pub const MAX_CHARS: usize = 500;

/// One notice as the front tier and `notice list` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: i64,
    pub shown_from: OffsetDateTime,
    pub shown_until: OffsetDateTime,
    pub body: String,
}

impl Notice {
    /// Whether it is to be shown at `at`.
    pub fn shown_at(&self, at: OffsetDateTime) -> bool {
        self.shown_from <= at && at < self.shown_until
    }
}

/// Notices not yet over, soonest first (what the front tier keeps).
pub const CURRENT_SQL: &str = "SELECT id, shown_from, shown_until, body FROM notices
  WHERE shown_until > now() ORDER BY shown_from, id";

pub fn from_row(r: &tokio_postgres::Row) -> Notice {
    Notice {
        id: r.get(0),
        shown_from: r.get(1),
        shown_until: r.get(2),
        body: r.get(3),
    }
}

/// Posts a notice; returns its id. Logged in the operators' log.
pub async fn add(
    p: &Platform,
    by: &str,
    shown_from: OffsetDateTime,
    shown_until: OffsetDateTime,
    body: &str,
) -> anyhow::Result<i64> {
    let body = body.trim();
    anyhow::ensure!(
        !body.is_empty(),
        "お知らせの本文が空です / the notice's text is empty"
    );
    anyhow::ensure!(
        body.chars().count() <= MAX_CHARS,
        "お知らせは{MAX_CHARS}文字までです / a notice is at most {MAX_CHARS} characters"
    );
    anyhow::ensure!(
        shown_until > shown_from,
        "表示の終わりは始まりより後にしてください / --until must be after --from"
    );
    anyhow::ensure!(
        shown_until > OffsetDateTime::now_utc(),
        "表示の終わりが過ぎています / --until is in the past"
    );
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO notices (shown_from, shown_until, body, created_by) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&shown_from, &shown_until, &body, &by],
        )
        .await?
        .get(0);
    crate::control::oplog::append(
        &tx,
        by,
        "notice.add",
        &id.to_string(),
        &serde_json::json!({ "from": rfc3339(shown_from), "until": rfc3339(shown_until), "text": body }),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Takes a notice down at once; whether there was one. Logged.
pub async fn remove(p: &Platform, by: &str, id: i64) -> anyhow::Result<bool> {
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    let gone = tx
        .execute("DELETE FROM notices WHERE id = $1", &[&id])
        .await?;
    if gone > 0 {
        crate::control::oplog::append(
            &tx,
            by,
            "notice.remove",
            &id.to_string(),
            &serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(gone > 0)
}

/// Notices not yet over (the past ones are not kept for display; the operators' log
/// keeps what each said).
pub async fn current(p: &Platform) -> anyhow::Result<Vec<Notice>> {
    let c = p.catalog.client().await?;
    Ok(c.query(CURRENT_SQL, &[])
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// `html` with a banner for each of `bodies` put at the start of its main content
/// (after the `<main …>` tag every page layout has); unchanged without one.
pub fn insert_banner(html: &str, bodies: &[String]) -> Option<String> {
    let start = html.find("<main")?;
    let end = start + html[start..].find('>')? + 1;
    let mut banner = String::new();
    for b in bodies {
        banner.push_str(
            "<div class=\"platform-notice\" role=\"note\"><p><strong>システムからのお知らせ</strong> ",
        );
        banner.push_str(&escape(b));
        banner.push_str("</p></div>");
    }
    Some(format!("{}{banner}{}", &html[..end], &html[end..]))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_goes_first_in_the_main_content_escaped() {
        let page = "<body><a href=\"#main\">skip</a><main id=\"main\" class=\"wrap\"><h1>申請</h1></main></body>";
        let out = insert_banner(page, &["12月5日 22:00〜24:00 <停止> & 点検".to_owned()]);
        assert_eq!(
            out.as_deref(),
            Some("<body><a href=\"#main\">skip</a><main id=\"main\" class=\"wrap\"><div class=\"platform-notice\" role=\"note\"><p><strong>システムからのお知らせ</strong> 12月5日 22:00〜24:00 &lt;停止&gt; &amp; 点検</p></div><h1>申請</h1></main></body>")
        );
        assert_eq!(insert_banner("<p>no main</p>", &["x".to_owned()]), None);
    }

    #[test]
    fn a_notice_is_shown_from_its_start_until_before_its_end() {
        let at = time::macros::datetime!(2026-12-05 22:00 +9);
        let n = Notice {
            id: 1,
            shown_from: at,
            shown_until: at + time::Duration::hours(2),
            body: "点検".into(),
        };
        assert!(!n.shown_at(at - time::Duration::seconds(1)));
        assert!(n.shown_at(at));
        assert!(n.shown_at(at + time::Duration::minutes(119)));
        assert!(!n.shown_at(at + time::Duration::hours(2)));
    }
}
