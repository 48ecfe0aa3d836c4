//! Survey totals (集計) of a form: counts and percentages per option for choice
//! fields, min/median/mean/max for number fields, with SVG bar charts that print;
//! over every application but the withdrawn, or those of one status and of a period
//! (受付日, Japan time) as the inbox filters them.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use uuid::Uuid;

use super::Status;
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit;
use crate::tenant::forms::answers::Answer;
use crate::tenant::forms::citizen::decrypt_answers;
use crate::tenant::forms::definition::{FieldKind, FormDefinition};
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

pub struct Bar {
    pub label: String,
    pub count: u64,
    pub percent: String,
    /// Bar width in the chart, 0–100.
    pub width: f64,
    pub y: u32,
    /// 選択肢ごとの定員 as it stands now, whatever the filters: 「2/5」, 「5/5（満員）」;
    /// empty for an option without one.
    pub places: String,
}

pub struct ChoiceTotal {
    pub label: String,
    pub answered: u64,
    pub multiple: bool,
    /// Some option has 選択肢ごとの定員 (the table gets its column).
    pub limited: bool,
    pub bars: Vec<Bar>,
    pub height: u32,
}

pub struct NumberTotal {
    pub label: String,
    pub unit: String,
    pub count: usize,
    pub min: String,
    pub median: String,
    pub mean: String,
    pub max: String,
}

#[derive(Template)]
#[template(path = "admin/totals.html")]
struct TotalsPage {
    site: String,
    nav: Option<Nav>,
    form_id: i64,
    title: String,
    submissions: u64,
    choices: Vec<ChoiceTotal>,
    numbers: Vec<NumberTotal>,
    /// The conditions, for the form that changes them.
    statuses: Vec<super::pages::Choice>,
    from: String,
    to: String,
    /// What was counted, in words (「取下げを除く」, a status, a period).
    scope: String,
    /// The inbox with the same conditions.
    inbox: String,
    /// Conditions not used, and why.
    notices: Vec<String>,
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The median of sorted values.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub async fn show(
    ctx: TenantCtx,
    user: StaffUser,
    Path(form_id): Path<i64>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, AppError> {
    let page = totals(&ctx, user, form_id, raw.as_deref(), "html").await?;
    Ok(render(StatusCode::OK, &page))
}

/// The same totals as CSV (UTF-8 with BOM, CRLF, as the exports): the form, what was
/// counted, then a section for the choices (項目・選択肢・件数・割合) and one for the
/// numbers (項目・回答数・最小・中央値・平均・最大), for a report.
pub async fn csv(
    ctx: TenantCtx,
    user: StaffUser,
    Path(form_id): Path<i64>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, AppError> {
    let page = totals(&ctx, user, form_id, raw.as_deref(), "csv").await?;
    let mut w = crate::tenant::spreadsheet::sections_writer();
    let mut rows: Vec<Vec<String>> = vec![
        vec!["フォーム".into(), page.title.clone()],
        vec![
            "対象".into(),
            format!("{}件（{}）", page.submissions, page.scope),
        ],
    ];
    if !page.choices.is_empty() {
        rows.push(Vec::new());
        // 選択肢ごとの定員, when the form has any: one more column, as it stands now.
        let limited = page.choices.iter().any(|c| c.limited);
        let mut header = ["項目", "選択肢", "件数", "割合（%）", "回答数"]
            .map(String::from)
            .to_vec();
        if limited {
            header.push("定員（いまの受付済み/定員）".into());
        }
        rows.push(header);
        for c in &page.choices {
            for b in &c.bars {
                let mut row = vec![
                    c.label.clone(),
                    b.label.clone(),
                    b.count.to_string(),
                    b.percent.clone(),
                    c.answered.to_string(),
                ];
                if limited {
                    row.push(b.places.clone());
                }
                rows.push(row);
            }
        }
    }
    if !page.numbers.is_empty() {
        rows.push(Vec::new());
        rows.push(
            ["項目", "単位", "回答数", "最小", "中央値", "平均", "最大"]
                .map(String::from)
                .to_vec(),
        );
        for n in &page.numbers {
            rows.push(vec![
                n.label.clone(),
                n.unit.clone(),
                n.count.to_string(),
                n.min.clone(),
                n.median.clone(),
                n.mean.clone(),
                n.max.clone(),
            ]);
        }
    }
    for r in &rows {
        // An empty row parts the sections (the writer wants one field at least).
        let r: &[String] = if r.is_empty() { &[String::new()] } else { r };
        crate::tenant::spreadsheet::write_row(&mut w, r)
            .map_err(|e| AppError::Internal(e.into()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| AppError::Internal(anyhow::anyhow!("writing the totals: {e}")))?;
    Ok(super::export::download(
        "text/csv; charset=utf-8",
        &format!("totals-{form_id}.csv"),
        axum::body::Body::from(bytes),
    ))
}

/// The totals of a form the user may see, logged (`form.totals`, with its conditions
/// and `format`).
async fn totals(
    ctx: &TenantCtx,
    user: StaffUser,
    form_id: i64,
    raw: Option<&str>,
    format: &str,
) -> Result<TotalsPage, AppError> {
    // Only the status and the period of the inbox's filters count here.
    let asked = super::pages::Filters::parse(raw);
    let filters = super::pages::Filters {
        form: Some(form_id),
        status: asked.status,
        from: asked.from,
        to: asked.to,
        ..Default::default()
    };
    let (since, before) = filters.period();
    // A condition given but not read (a mistyped date or status) is said, not silently
    // dropped; so is a period that ends before it begins.
    let mut notices: Vec<String> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(k, v)| {
            !v.is_empty()
                && match &**k {
                    "status" => asked.status.is_none(),
                    "from" => asked.from.is_none(),
                    "to" => asked.to.is_none(),
                    _ => false,
                }
        })
        .map(|(k, v)| {
            let name = match &*k {
                "status" => "状態",
                "from" => "受付日（から）",
                _ => "受付日（まで）",
            };
            format!(
                "{name}「{}」は読み取れないため、使っていません",
                v.chars().take(40).collect::<String>()
            )
        })
        .collect();
    if let (Some(f), Some(t)) = (filters.from, filters.to) {
        if f > t {
            notices.push("受付日の「から」が「まで」より後のため、対象はありません".to_owned());
        }
    }
    let status = filters.status.map(Status::as_str);
    let mut db = ctx.db().await?;
    let row = db
        .query_opt(
            "SELECT department_id, draft FROM forms WHERE id = $1",
            &[&form_id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    if !user.can_see(row.get(0)) {
        return Err(AppError::NotFound);
    }
    // Every field of every version, the newest's first: a question dropped in a later
    // version still has its answers counted and shown, marked with its last version.
    let mut versions: Vec<(i32, FormDefinition)> = Vec::new();
    for r in db
        .query(
            "SELECT version, definition FROM form_versions WHERE form_id = $1 ORDER BY version DESC",
            &[&form_id],
        )
        .await?
    {
        versions.push((
            r.get(0),
            serde_json::from_value(r.get(1)).map_err(|e| AppError::Internal(e.into()))?,
        ));
    }
    if versions.is_empty() {
        versions.push((
            0,
            serde_json::from_value(row.get(1)).map_err(|e| AppError::Internal(e.into()))?,
        ));
    }
    let newest = versions[0].0;
    let mut fields: Vec<(crate::tenant::forms::definition::Field, Option<i32>)> = Vec::new();
    for (version, def) in &versions {
        for f in def.fields() {
            if !fields.iter().any(|(seen, _)| seen.id == f.id) {
                fields.push((f.clone(), (*version != newest).then_some(*version)));
            }
        }
    }
    // Only the answers counted here are read and decrypted (choices and numbers),
    // not every answer of every application.
    let counted: Vec<String> = fields
        .iter()
        .filter(|(f, _)| {
            matches!(
                f.kind,
                FieldKind::Choice { .. } | FieldKind::MultiChoice { .. } | FieldKind::Number { .. }
            )
        })
        .map(|(f, _)| f.id.clone())
        .collect();
    // Counts by field id over every version; labels and options of the newest
    // version that has the field.
    let mut choice_counts: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut numbers: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut submissions = 0u64;
    let mut after: Option<Uuid> = None;
    loop {
        let rows = db
            .query(
                "SELECT id, (SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(answers) WHERE key = ANY($3))
                   FROM submissions
                  WHERE form_id = $1 AND ($2::uuid IS NULL OR id > $2)
                    AND CASE WHEN $4::text IS NULL THEN status <> 'withdrawn' ELSE status = $4 END
                    AND ($5::timestamptz IS NULL OR submitted_at >= $5)
                    AND ($6::timestamptz IS NULL OR submitted_at < $6)
                  ORDER BY id LIMIT 1000",
                &[&form_id, &after, &counted, &status, &since, &before],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.get(0));
        for r in &rows {
            submissions += 1;
            let answers = decrypt_answers(ctx.cipher(), r.get(0), &r.get(1))?;
            for (field, a) in answers {
                match a {
                    Answer::Choice(v) => {
                        let e = choice_counts.entry(field).or_default();
                        e.0 += 1;
                        *e.1.entry(v).or_default() += 1;
                    }
                    Answer::Multi(vs) => {
                        let e = choice_counts.entry(field).or_default();
                        e.0 += 1;
                        for v in vs {
                            *e.1.entry(v).or_default() += 1;
                        }
                    }
                    Answer::Number(n) => {
                        if let Ok(v) = n.parse::<f64>() {
                            numbers.entry(field).or_default().push(v);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // 選択肢ごとの定員 as they stand (none read for a form that never had any).
    let places = if versions.iter().any(|(_, d)| d.has_limits()) {
        crate::tenant::forms::places::now(&**db, form_id).await?
    } else {
        Vec::new()
    };
    let mut choices = Vec::new();
    let mut number_totals = Vec::new();
    for (f, until) in &fields {
        let label = match until {
            Some(v) => format!("{}（第{v}版まで）", f.label),
            None => f.label.clone(),
        };
        match &f.kind {
            FieldKind::Choice { options, .. } | FieldKind::MultiChoice { options, .. } => {
                let (answered, counts) = choice_counts.remove(&f.id).unwrap_or_default();
                let max = counts.values().copied().max().unwrap_or(0).max(1);
                // Answers naming an option the newest version no longer offers
                // (renamed or dropped) keep their own bar, marked with the last
                // version that offered it, as a dropped question is.
                let offered_until = |answer: &str| {
                    versions.iter().find_map(|(v, def)| {
                        def.fields()
                            .filter(|g| g.id == f.id)
                            .any(|g| match &g.kind {
                                FieldKind::Choice { options, .. }
                                | FieldKind::MultiChoice { options, .. } => {
                                    options.iter().any(|o| o == answer)
                                }
                                _ => false,
                            })
                            .then_some(*v)
                    })
                };
                let mut labels: Vec<(String, String)> =
                    options.iter().map(|o| (o.clone(), o.clone())).collect();
                labels.extend(counts.keys().filter(|k| !options.contains(k)).map(|k| {
                    let shown = match offered_until(k) {
                        Some(v) if v > 0 => format!("{k}（第{v}版まで）"),
                        _ => k.clone(),
                    };
                    (k.clone(), shown)
                }));
                let bars: Vec<Bar> = labels
                    .into_iter()
                    .enumerate()
                    .map(|(i, (answer, label))| {
                        let count = counts.get(&answer).copied().unwrap_or(0);
                        let pct = if answered == 0 {
                            0.0
                        } else {
                            count as f64 * 100.0 / answered as f64
                        };
                        let place = places
                            .iter()
                            .find(|p| p.field == f.id && p.option == answer);
                        Bar {
                            label,
                            count,
                            percent: format!("{pct:.1}"),
                            width: count as f64 * 100.0 / max as f64,
                            y: u32::try_from(i).unwrap_or(0) * 32,
                            places: place.map_or_else(String::new, |p| {
                                let full = if p.left() == 0 { "（満員）" } else { "" };
                                format!("{}/{}{full}", p.taken, p.capacity)
                            }),
                        }
                    })
                    .collect();
                let height = u32::try_from(bars.len()).unwrap_or(0) * 32;
                choices.push(ChoiceTotal {
                    label: label.clone(),
                    answered,
                    multiple: matches!(f.kind, FieldKind::MultiChoice { .. }),
                    limited: bars.iter().any(|b| !b.places.is_empty()),
                    bars,
                    height,
                });
            }
            FieldKind::Number { unit, .. } => {
                let mut v = numbers.remove(&f.id).unwrap_or_default();
                v.sort_by(f64::total_cmp);
                let mean = if v.is_empty() {
                    None
                } else {
                    Some(v.iter().sum::<f64>() / v.len() as f64)
                };
                let show = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "—".into());
                number_totals.push(NumberTotal {
                    label,
                    unit: unit.clone(),
                    count: v.len(),
                    min: show(v.first().copied()),
                    median: show(median(&v)),
                    mean: show(mean),
                    max: show(v.last().copied()),
                });
            }
            _ => {}
        }
    }
    audit::record(
        &mut db,
        &user.actor(),
        "form.totals",
        &format!("form:{form_id}"),
        serde_json::json!({
            "status": status,
            "from": filters.from.map(|d| d.to_string()),
            "to": filters.to.map(|d| d.to_string()),
            "format": format,
        }),
    )
    .await?;
    let scope = {
        let mut parts = vec![match filters.status {
            Some(s) => format!("状態が「{}」", s.label()),
            None => "取下げを除く".to_owned(),
        }];
        match (filters.from, filters.to) {
            (None, None) => {}
            (from, to) => parts.push(format!(
                "受付日 {}〜{}",
                from.map(crate::ja::date_both).unwrap_or_default(),
                to.map(crate::ja::date_both).unwrap_or_default()
            )),
        }
        parts.join("、")
    };
    Ok(TotalsPage {
        site: ctx.name.to_string(),
        nav: Some(Nav::new(&user, "inbox")),
        form_id,
        title: versions[0].1.title.clone(),
        submissions,
        choices,
        numbers: number_totals,
        statuses: Status::ALL
            .iter()
            .map(|s| super::pages::Choice {
                value: s.as_str().into(),
                label: s.label().into(),
                selected: filters.status == Some(*s),
            })
            .collect(),
        from: filters.from.map(|d| d.to_string()).unwrap_or_default(),
        to: filters.to.map(|d| d.to_string()).unwrap_or_default(),
        scope,
        inbox: filters.query(),
        notices,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(super::median(&[]), None);
        assert_eq!(super::median(&[1.0, 3.0, 10.0]), Some(3.0));
        assert_eq!(super::median(&[1.0, 2.0, 3.0, 10.0]), Some(2.5));
    }
}
