//! A municipality's home page: its name, the procedures open now by department, a
//! search over them, and its 代表の問い合わせ先.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::forms::store::OpenForm;
use super::TenantCtx;
use crate::error::AppError;
use crate::web::render;

pub struct FormLink {
    pub title: String,
    pub url: String,
}

/// The open procedures of one department.
pub struct Group {
    pub department: String,
    /// The section's anchor.
    pub anchor: String,
    pub forms: Vec<FormLink>,
}

/// A procedure not open yet (受付開始前), with when it opens.
pub struct Upcoming {
    pub title: String,
    pub url: String,
    pub department: String,
    /// 受付開始, JST, 和暦 beside 西暦.
    pub opens: String,
}

/// The longest search kept, in characters (longer is cut).
const MAX_QUERY: usize = 100;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    site: String,
    code: String,
    groups: Vec<Group>,
    /// Those not open yet, the soonest first.
    upcoming: Vec<Upcoming>,
    /// How many procedures are listed in all (open now or not yet).
    listed: usize,
    /// The search as typed ("" for none).
    query: String,
    /// How many the search found.
    found: usize,
    /// The municipality's 代表の問い合わせ先, if it wrote one.
    contact: Option<String>,
    /// お知らせ, while it is shown.
    notice: Option<String>,
    /// 申請一覧 is offered (mail is delivered).
    mine: bool,
}

/// The forms `query` finds: every word of it in the title or the department (width,
/// case and kana folded).
fn found(forms: Vec<OpenForm>, query: &str) -> Vec<OpenForm> {
    // NFKC first, so an ideographic space separates words too.
    let words: Vec<String> = crate::ja::nfkc(query)
        .split_whitespace()
        .map(crate::ja::search_key)
        .collect();
    // No search (the usual home page): nothing to fold.
    if words.is_empty() {
        return forms;
    }
    forms
        .into_iter()
        .filter(|f| {
            let (title, department) = (
                crate::ja::search_key(&f.title),
                crate::ja::search_key(&f.department),
            );
            words
                .iter()
                .all(|w| title.contains(w.as_str()) || department.contains(w.as_str()))
        })
        .collect()
}

/// Forms grouped by department in the order given.
fn grouped(forms: Vec<OpenForm>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for f in forms {
        let link = FormLink {
            url: format!("/f/{}", f.public_id),
            title: f.title,
        };
        match groups.last_mut() {
            Some(g) if g.department == f.department => g.forms.push(link),
            _ => groups.push(Group {
                anchor: format!("dept-{}", groups.len() + 1),
                department: f.department,
                forms: vec![link],
            }),
        }
    }
    groups
}

pub async fn show(
    ctx: TenantCtx,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, AppError> {
    let query: String = form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().chars().take(MAX_QUERY).collect())
        .unwrap_or_default();
    let db = ctx.db().await?;
    let stmt = db
        .prepare_cached(
            "SELECT name, local_gov_code, contact,
                    CASE WHEN notice_until IS NULL OR notice_until >= $1 THEN notice END
               FROM settings",
        )
        .await?;
    let row = db
        .query_opt(&stmt, &[&crate::ja::today()])
        .await?
        .ok_or(AppError::NotFound)?;
    let forms = super::forms::store::open_forms(&db, ctx.zone).await?;
    drop(db);
    let listed = forms.len();
    let (mut later, now): (Vec<OpenForm>, Vec<OpenForm>) = found(forms, &query)
        .into_iter()
        .partition(|f| f.opens_at.is_some());
    later.sort_by_key(|f| f.opens_at);
    let upcoming: Vec<Upcoming> = later
        .into_iter()
        .map(|f| Upcoming {
            url: format!("/f/{}", f.public_id),
            opens: f
                .opens_at
                .map(super::forms::citizen::jst)
                .unwrap_or_default(),
            title: f.title,
            department: f.department,
        })
        .collect();
    let groups = grouped(now);
    let page = HomePage {
        site: row.get(0),
        code: row.get(1),
        contact: Some(row.get::<_, String>(2)).filter(|c| !c.trim().is_empty()),
        notice: row
            .get::<_, Option<String>>(3)
            .filter(|n| !n.trim().is_empty()),
        listed,
        found: groups.iter().map(|g| g.forms.len()).sum::<usize>() + upcoming.len(),
        groups,
        upcoming,
        query,
        mine: ctx.mail_on(),
    };
    Ok(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(title: &str, department: &str) -> OpenForm {
        OpenForm {
            public_id: "abc".into(),
            title: title.into(),
            department: department.into(),
            opens_at: None,
        }
    }

    fn grouped(forms: Vec<OpenForm>, query: &str) -> Vec<Group> {
        super::grouped(found(forms, query))
    }

    #[test]
    fn forms_are_grouped_by_department_and_found_by_title_or_department() {
        let forms = || {
            vec![
                form("児童手当の申請", "子育て支援課"),
                form("保育所の入所申込", "子育て支援課"),
                form("粗大ゴミ収集申込", "環境政策課"),
            ]
        };
        let shape = |groups: Vec<Group>| {
            groups
                .into_iter()
                .map(|g| {
                    (
                        g.department,
                        g.anchor,
                        g.forms.into_iter().map(|f| f.title).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shape(grouped(forms(), "")),
            [
                (
                    "子育て支援課".to_owned(),
                    "dept-1".to_owned(),
                    vec!["児童手当の申請".to_owned(), "保育所の入所申込".to_owned()]
                ),
                (
                    "環境政策課".to_owned(),
                    "dept-2".to_owned(),
                    vec!["粗大ゴミ収集申込".to_owned()]
                ),
            ]
        );
        assert_eq!(
            shape(grouped(forms(), " ごみ ")),
            [(
                "環境政策課".to_owned(),
                "dept-1".to_owned(),
                vec!["粗大ゴミ収集申込".to_owned()]
            )]
        );
        assert_eq!(shape(grouped(forms(), "子育て")).len(), 1);
        // Every word, in the title or the department; an ideographic space parts them.
        assert_eq!(
            shape(grouped(forms(), "児童手当　申請"))[0].2,
            ["児童手当の申請"]
        );
        assert_eq!(
            shape(grouped(forms(), "子育て 保育"))[0].2,
            ["保育所の入所申込"]
        );
        assert!(grouped(forms(), "児童手当 ごみ").is_empty());
        assert!(grouped(forms(), "パスポート").is_empty());
    }
}
