//! The form builder: works without JavaScript (every change is a plain form post),
//! edits a draft, and publishes immutable versions.

use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::Nav;
use crate::error::AppError;
use crate::tenant::forms::citizen::preview;
use crate::tenant::forms::definition::{
    ChoiceDisplay, Condition, ConditionOp, Field, FieldKind, FileType, FormDefinition, Limits,
    Page, FIELD_TYPES, MAX_DOCUMENT,
};
use crate::tenant::forms::store::{self, FormRow};
use crate::tenant::http::{see_other, FormData, Query};
use crate::tenant::staff::pages::{departments, Department};
use crate::tenant::staff::{qr_svg, StaffUser};
use crate::tenant::TenantCtx;
use crate::web::render;

/// The departments whose forms this person sees (`None`: every department).
fn scope(user: &StaffUser) -> Option<Vec<i64>> {
    if user.is_admin() {
        None
    } else {
        Some(user.department_id.into_iter().collect())
    }
}

async fn load(db: &tokio_postgres::Client, user: &StaffUser, id: i64) -> Result<FormRow, AppError> {
    let form = store::get(db, id).await?;
    if !user.can_see(form.department_id) {
        // Another department's form does not exist for this person.
        return Err(AppError::NotFound);
    }
    Ok(form)
}

async fn load_for_edit(
    db: &tokio_postgres::Client,
    user: &StaffUser,
    id: i64,
    body: &FormData,
) -> Result<FormRow, AppError> {
    user.check_csrf(body)?;
    let form = load(db, user, id).await?;
    if !user.can_edit(form.department_id) {
        return Err(AppError::Forbidden);
    }
    Ok(form)
}

/// [`load_for_edit`] for a change to the draft: also refused (409) when the page
/// the person edited on shows an older draft than the stored one (its `rev`). Every
/// builder page sends `rev`; a post without one (a page cached from before pages
/// carried it) is still kept from overwriting a save made while it is handled
/// ([`store::save_draft`]).
async fn load_for_change(
    db: &tokio_postgres::Client,
    user: &StaffUser,
    id: i64,
    body: &FormData,
) -> Result<FormRow, AppError> {
    let form = load_for_edit(db, user, id, body).await?;
    match seen_revision(body) {
        Some(seen) if seen != form.revision => Err(AppError::Conflict(store::STALE_DRAFT.into())),
        _ => Ok(form),
    }
}

/// The draft revision the page showed, if it says.
fn seen_revision(body: &FormData) -> Option<i64> {
    match body.get("rev") {
        "" => None,
        // Unreadable: as stale as can be.
        r => Some(r.parse().unwrap_or(-1)),
    }
}

pub struct FormListRow {
    pub id: i64,
    pub title: String,
    pub department: String,
    pub status: String,
    pub accepted: i32,
}

#[derive(Template)]
#[template(path = "admin/forms.html")]
struct FormsPage {
    site: String,
    nav: Option<Nav>,
    forms: Vec<FormListRow>,
    departments: Vec<Department>,
    can_create: bool,
    error: Option<String>,
    /// The list's filters as asked, and how many forms there are before them.
    filter: FormFilter,
    total: usize,
}

/// What the list of forms is narrowed to: words of the title, a department, a state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FormFilter {
    pub q: String,
    pub department: Option<i64>,
    /// `draft`, `open`, `closed` or `changed` (公開中で未公開の変更あり).
    pub state: String,
}

impl FormFilter {
    pub fn parse(query: Option<&str>) -> Self {
        let mut f = Self::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "q" => f.q = v.trim().chars().take(100).collect(),
                "department" => f.department = v.parse().ok(),
                "state" if matches!(&*v, "draft" | "open" | "closed" | "changed") => {
                    f.state = v.into_owned()
                }
                _ => {}
            }
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `f` is one of the forms asked for. The title matches each word typed,
    /// full-width or half-width, upper or lower case alike.
    pub fn keeps(&self, f: &store::ListedForm) -> bool {
        let title = crate::ja::nfkc(&f.title).to_lowercase();
        let words = crate::ja::nfkc(&self.q).to_lowercase();
        words.split_whitespace().all(|w| title.contains(w))
            && self.department.is_none_or(|d| d == f.department_id)
            && match self.state.as_str() {
                "draft" => f.current_version.is_none(),
                "open" => f.current_version.is_some() && !f.closed,
                "closed" => f.current_version.is_some() && f.closed,
                "changed" => f.current_version.is_some() && !f.closed && f.unpublished_changes,
                _ => true,
            }
    }
}

/// A form's state as the list and its page say it.
fn status_label(current_version: Option<i32>, closed: bool, unpublished_changes: bool) -> String {
    match (current_version, closed) {
        (None, _) => "下書き".into(),
        (Some(v), true) => format!("停止中（第{v}版）"),
        (Some(v), false) if unpublished_changes => format!("公開中（第{v}版）・未公開の変更あり"),
        (Some(v), false) => format!("公開中（第{v}版）"),
    }
}

async fn forms_page(
    ctx: &TenantCtx,
    user: &StaffUser,
    filter: FormFilter,
    error: Option<String>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let scope = scope(user);
    let forms = store::list(&db, scope.as_deref()).await?;
    let mut depts = departments(&db).await?;
    if let Some(s) = &scope {
        depts.retain(|d| s.contains(&d.id));
    }
    let total = forms.len();
    let rows = forms
        .iter()
        .filter(|f| filter.keeps(f))
        .map(|f| FormListRow {
            id: f.id,
            title: f.title.clone(),
            department: f.department.clone(),
            status: status_label(f.current_version, f.closed, f.unpublished_changes),
            accepted: f.accepted,
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        &FormsPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "forms")),
            forms: rows,
            can_create: user.role != crate::tenant::staff::Role::Viewer && !depts.is_empty(),
            departments: depts,
            error,
            filter,
            total,
        },
    ))
}

pub async fn list(
    ctx: TenantCtx,
    user: StaffUser,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    forms_page(&ctx, &user, FormFilter::parse(query.as_deref()), None).await
}

pub async fn create(ctx: TenantCtx, user: StaffUser, body: FormData) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let title = body.get("title").trim();
    let Ok(dept) = body.get("department").parse::<i64>() else {
        return forms_page(
            &ctx,
            &user,
            FormFilter::default(),
            Some("所属を選択してください".into()),
        )
        .await;
    };
    if !user.can_edit(dept) {
        return Err(AppError::Forbidden);
    }
    if title.is_empty() || title.chars().count() > 200 {
        return forms_page(
            &ctx,
            &user,
            FormFilter::default(),
            Some("題名を1〜200文字で入力してください".into()),
        )
        .await;
    }
    let mut db = ctx.db().await?;
    let id = store::create(
        &mut db,
        &user.actor(),
        dept,
        &FormDefinition::new(title),
        serde_json::json!({}),
    )
    .await?;
    Ok(see_other(&format!("/admin/forms/{id}")))
}

pub struct FieldRow {
    pub id: String,
    pub label: String,
    pub type_label: &'static str,
    pub required: bool,
    pub condition: String,
}

pub struct PageRow {
    pub index: usize,
    pub title: String,
    pub condition: String,
    /// The page's show/hide rule as its settings form shows it, so that saving the
    /// settings keeps it: the field (one of `earlier`), the operator and the values.
    pub cond_field: String,
    pub cond_op: &'static str,
    pub cond_values: String,
    /// Fields of earlier pages, which a page's rule may refer to.
    pub earlier: Vec<EarlierField>,
    /// The rule names a field not among them (shown, so that saving keeps it).
    pub cond_missing: bool,
    pub fields: Vec<FieldRow>,
}

#[derive(Template)]
#[template(path = "admin/form.html")]
struct BuilderPage {
    site: String,
    nav: Option<Nav>,
    id: i64,
    title: String,
    description: String,
    opens_at: String,
    closes_at: String,
    capacity: String,
    /// 保存期間: (years, label, selected), "定めない" first.
    retention: Vec<(String, String, bool)>,
    completion_message: String,
    zone_internet: bool,
    zone_lgwan: bool,
    proof_of_work: bool,
    mail_without_answers: bool,
    identity: bool,
    summary_choices: Vec<(String, String, bool)>,
    department_id: i64,
    departments: Vec<Department>,
    pages: Vec<PageRow>,
    field_types: Vec<(&'static str, &'static str)>,
    problems: Vec<String>,
    status: String,
    published: bool,
    closed: bool,
    can_edit: bool,
    public_url: String,
    qr: String,
    message: Option<String>,
    csrf: String,
    /// The draft's revision, sent back with every change ([`load_for_change`]).
    rev: i64,
    json: String,
    accepted: i32,
    /// 選択肢ごとの定員 as published, taken of each: 「品目「ソファ」 18/20」.
    places: Vec<String>,
    /// 公開履歴: each published version, newest first.
    versions: Vec<VersionView>,
}

/// One row of a form's 公開履歴.
struct VersionView {
    version: i32,
    title: String,
    published_at: String,
    published_by: String,
    current: bool,
}

fn type_label(kind: &FieldKind) -> &'static str {
    FIELD_TYPES
        .iter()
        .find(|(t, _, _)| *t == kind.type_name())
        .map_or("", |(_, ja, _)| ja)
}

fn condition_text(def: &FormDefinition, c: &Option<Condition>) -> String {
    let Some(c) = c else { return String::new() };
    let label = def
        .field(&c.field)
        .map_or(c.field.as_str(), |f| f.label.as_str());
    match c.op {
        ConditionOp::NotEmpty => format!("「{label}」に回答があるとき表示"),
        ConditionOp::Equals => format!("「{label}」が「{}」のとき表示", c.values.join("")),
        ConditionOp::In => format!(
            "「{label}」が「{}」のいずれかのとき表示",
            c.values.join("」「")
        ),
    }
}

/// `2026-12-01T09:00` for a datetime-local input, in Asia/Tokyo.
fn local_input(t: Option<OffsetDateTime>) -> String {
    t.map(|t| {
        let t = t.to_offset(time::macros::offset!(+9));
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    })
    .unwrap_or_default()
}

fn parse_local(s: &str) -> Result<Option<OffsetDateTime>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    PrimitiveDateTime::parse(s, &fmt)
        .map(|p| Some(p.assume_offset(time::macros::offset!(+9))))
        .map_err(|_| format!("日時「{s}」を読み取れません（例: 2026-12-01T09:00）"))
}

async fn builder(
    ctx: &TenantCtx,
    user: &StaffUser,
    id: i64,
    message: Option<String>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load(&db, user, id).await?;
    let def = &form.draft;
    let places = crate::tenant::forms::places::now(&**db, id)
        .await?
        .into_iter()
        .map(|p| {
            let label = def
                .field(&p.field)
                .map_or(p.field.as_str(), |f| f.label.as_str());
            format!(
                "{label}「{}」 {}/{}{}",
                p.option,
                p.taken,
                p.capacity,
                if p.left() == 0 { "（満員）" } else { "" }
            )
        })
        .collect();
    let pages = def
        .pages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (cond_field, cond_op, cond_values) = condition_inputs(&p.show_if);
            let earlier: Vec<EarlierField> = def.pages[..i]
                .iter()
                .flat_map(|p| &p.fields)
                .filter(|f| f.kind.takes_answer())
                .map(|f| EarlierField {
                    id: f.id.clone(),
                    label: f.label.clone(),
                })
                .collect();
            let cond_missing =
                !cond_field.is_empty() && !earlier.iter().any(|e| e.id == cond_field);
            PageRow {
                index: i,
                title: p.title.clone(),
                condition: condition_text(def, &p.show_if),
                cond_field,
                cond_op,
                cond_values,
                earlier,
                cond_missing,
                fields: p
                    .fields
                    .iter()
                    .map(|f| FieldRow {
                        id: f.id.clone(),
                        label: if f.label.is_empty() {
                            "（項目名なし）".into()
                        } else {
                            f.label.clone()
                        },
                        type_label: type_label(&f.kind),
                        required: f.required,
                        condition: condition_text(def, &f.show_if),
                    })
                    .collect(),
            }
        })
        .collect();
    let public_url = format!("{}/f/{}", ctx.base_url, form.public_id);
    let status = if message.as_deref().is_some_and(|m| m.starts_with('!')) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        &BuilderPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "forms")),
            id,
            title: def.title.clone(),
            description: def.description.clone(),
            opens_at: local_input(def.settings.opens_at),
            closes_at: local_input(def.settings.closes_at),
            capacity: def
                .settings
                .capacity
                .map(|c| c.to_string())
                .unwrap_or_default(),
            retention: std::iter::once(None)
                .chain(crate::tenant::cases::retention::YEARS.map(Some))
                .map(|y| {
                    (
                        y.map(|y| y.to_string()).unwrap_or_default(),
                        y.map_or_else(
                            || "定めない（職員が削除するまで保存）".to_owned(),
                            |y| format!("{y}年"),
                        ),
                        y == def.settings.retention_years,
                    )
                })
                .collect(),
            completion_message: def.settings.completion_message.clone(),
            zone_internet: def
                .settings
                .published_in(crate::front::conn::Zone::Internet),
            zone_lgwan: def.settings.published_in(crate::front::conn::Zone::Lgwan),
            proof_of_work: def.settings.proof_of_work,
            mail_without_answers: def.settings.mail_without_answers,
            identity: def.settings.identity,
            summary_choices: def
                .fields()
                .filter(|f| f.kind.takes_answer())
                .map(|f| {
                    (
                        f.id.clone(),
                        f.label.clone(),
                        form.summary_field.as_deref() == Some(f.id.as_str()),
                    )
                })
                .collect(),
            department_id: form.department_id,
            departments: departments(&db)
                .await?
                .into_iter()
                .filter(|d| user.can_see(d.id))
                .collect(),
            pages,
            field_types: FIELD_TYPES.iter().map(|(t, ja, _)| (*t, *ja)).collect(),
            problems: def.check().into_iter().map(|p| p.ja).collect(),
            status: status_label(form.current_version, form.closed, form.unpublished_changes),
            published: form.current_version.is_some(),
            closed: form.closed,
            can_edit: user.can_edit(form.department_id),
            qr: if form.current_version.is_some() {
                qr_svg(&public_url).unwrap_or_default()
            } else {
                String::new()
            },
            public_url,
            message: message.map(|m| m.trim_start_matches('!').to_owned()),
            csrf: user.csrf.clone(),
            rev: form.revision,
            json: serde_json::to_string_pretty(def).unwrap_or_default(),
            accepted: form.accepted,
            places,
            versions: store::versions(&db, id)
                .await?
                .into_iter()
                .map(|v| VersionView {
                    version: v.version,
                    title: v.title,
                    published_at: crate::ja::jst_seconds(v.published_at),
                    published_by: v
                        .published_by
                        .unwrap_or_else(|| "運用者（取り込み） / operator".to_owned()),
                    current: form.current_version == Some(v.version),
                })
                .collect(),
        },
    ))
}

pub async fn show(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    builder(&ctx, &user, id, None).await
}

pub async fn save_settings(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let form = load_for_change(&db, &user, id, &body).await?;
    let revision = form.revision;
    let mut def = form.draft;
    def.title = body.get("title").trim().to_owned();
    def.description = body.get("description").trim().replace("\r\n", "\n");
    def.settings.completion_message = body.get("completion_message").trim().replace("\r\n", "\n");
    // The checkboxes (sent with a marker, so a request without them keeps the settings).
    if body.get("zones_shown") == "1" {
        def.settings.proof_of_work = body.get("proof_of_work") == "yes";
        def.settings.mail_without_answers = body.get("mail_without_answers") == "yes";
        def.settings.identity = body.get("identity") == "yes";
        let years = body.get("retention_years");
        def.settings.retention_years = if years.is_empty() {
            None
        } else {
            match years.parse::<u8>() {
                Ok(y) if crate::tenant::cases::retention::YEARS.contains(&y) => Some(y),
                _ => {
                    drop(db);
                    return builder(
                        &ctx,
                        &user,
                        id,
                        Some("!保存期間は一覧から選んでください".into()),
                    )
                    .await;
                }
            }
        };
    }
    if body.get("zones_shown") == "1" {
        use crate::front::conn::Zone;
        let zones: Vec<Zone> = body
            .all("zone")
            .iter()
            .filter_map(|z| Zone::parse(z))
            .collect();
        if zones.is_empty() {
            return builder(
                &ctx,
                &user,
                id,
                Some(
                    "!公開先のネットワークを1つ以上選んでください（インターネット、LGWAN）".into(),
                ),
            )
            .await;
        }
        // Both: stored as "everywhere".
        def.settings.zones = if zones.contains(&Zone::Internet) && zones.contains(&Zone::Lgwan) {
            Vec::new()
        } else {
            zones
        };
    }
    let opens = parse_local(body.get("opens_at"));
    let closes = parse_local(body.get("closes_at"));
    let capacity = crate::ja::nfkc(body.get("capacity").trim());
    let capacity: Result<Option<u32>, String> = if capacity.is_empty() {
        Ok(None)
    } else {
        capacity
            .parse()
            .map(Some)
            .map_err(|_| "定員は数字で入力してください（定員なしは空欄）".into())
    };
    match (opens, closes, capacity) {
        (Ok(o), Ok(c), Ok(cap)) => {
            def.settings.opens_at = o;
            def.settings.closes_at = c;
            def.settings.capacity = cap;
        }
        (o, c, cap) => {
            let msg = [o.err(), c.err(), cap.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("。");
            drop(db);
            return builder(&ctx, &user, id, Some(format!("!{msg}"))).await;
        }
    }
    if let Ok(dept) = body.get("department").parse::<i64>() {
        if dept != form.department_id {
            if !user.can_edit(dept) {
                return Err(AppError::Forbidden);
            }
            store::set_department(&mut db, id, dept, &user.actor()).await?;
        }
    }
    let summary = body.get("summary_field");
    let summary = def
        .field(summary)
        .filter(|f| f.kind.takes_answer())
        .map(|f| f.id.clone());
    // The draft first: a save refused (stale page, too large) changes nothing.
    store::save_draft(&db, id, &def, revision).await?;
    store::set_summary_field(&db, id, summary.as_deref()).await?;
    drop(db);
    builder(
        &ctx,
        &user,
        id,
        Some("設定を保存しました（公開中の版は、公開するまで変わりません）".into()),
    )
    .await
}

/// The first `qN` not used by the draft nor by any published version: answers are
/// kept, exported and totalled by field id across versions, so a new field must not
/// take the id of one deleted after it was answered.
fn next_field_id(def: &FormDefinition, published: &std::collections::HashSet<String>) -> String {
    (1..)
        .map(|n| format!("q{n}"))
        .find(|id| def.field(id).is_none() && !published.contains(id))
        .unwrap_or_else(|| "q".into())
}

pub async fn add_field(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load_for_change(&db, &user, id, &body).await?;
    let (mut def, revision) = (form.draft, form.revision);
    let page: usize = body.get("page").parse().unwrap_or(0);
    let kind = FieldKind::new_of(body.get("type"))
        .ok_or_else(|| AppError::BadRequest("項目の種類を選択してください".into()))?;
    let label = body.get("label").trim();
    let label = if label.is_empty() {
        type_label(&kind).to_owned()
    } else {
        label.to_owned()
    };
    let fid = next_field_id(&def, &store::published_field_ids(&db, id).await?);
    let p = def.pages.get_mut(page).ok_or(AppError::NotFound)?;
    p.fields.push(Field {
        id: fid.clone(),
        label,
        help: String::new(),
        required: false,
        placeholder: String::new(),
        show_if: None,
        kind,
    });
    store::save_draft(&db, id, &def, revision).await?;
    Ok(see_other(&format!("/admin/forms/{id}/fields/{fid}")))
}

fn find_field(def: &mut FormDefinition, fid: &str) -> Option<(usize, usize)> {
    def.pages
        .iter()
        .enumerate()
        .find_map(|(pi, p)| p.fields.iter().position(|f| f.id == fid).map(|fi| (pi, fi)))
}

pub async fn move_field(
    ctx: TenantCtx,
    user: StaffUser,
    Path((id, fid)): Path<(i64, String)>,
    body: FormData,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load_for_change(&db, &user, id, &body).await?;
    let (mut def, revision) = (form.draft, form.revision);
    let (pi, fi) = find_field(&mut def, &fid).ok_or(AppError::NotFound)?;
    match body.get("action") {
        "up" if fi > 0 => def.pages[pi].fields.swap(fi, fi - 1),
        "down" if fi + 1 < def.pages[pi].fields.len() => def.pages[pi].fields.swap(fi, fi + 1),
        "up" if pi > 0 => {
            let f = def.pages[pi].fields.remove(fi);
            def.pages[pi - 1].fields.push(f);
        }
        "down" if pi + 1 < def.pages.len() => {
            let f = def.pages[pi].fields.remove(fi);
            def.pages[pi + 1].fields.insert(0, f);
        }
        "delete" => {
            def.pages[pi].fields.remove(fi);
        }
        _ => {}
    }
    store::save_draft(&db, id, &def, revision).await?;
    Ok(see_other(&format!("/admin/forms/{id}#page-{pi}")))
}

pub async fn pages(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load_for_change(&db, &user, id, &body).await?;
    let (mut def, revision) = (form.draft, form.revision);
    let index: usize = body.get("page").parse().unwrap_or(usize::MAX);
    match body.get("action") {
        "add" => {
            let n = (1..)
                .map(|n| format!("p{n}"))
                .find(|pid| !def.pages.iter().any(|p| &p.id == pid))
                .unwrap_or_default();
            def.pages.push(Page {
                id: n,
                title: body.get("title").trim().to_owned(),
                show_if: None,
                fields: Vec::new(),
            });
        }
        "update" => {
            let cond = condition_from(&body);
            let p = def.pages.get_mut(index).ok_or(AppError::NotFound)?;
            p.title = body.get("title").trim().to_owned();
            p.show_if = cond;
        }
        "delete"
            if def.pages.len() > 1 && def.pages.get(index).is_some_and(|p| p.fields.is_empty()) =>
        {
            def.pages.remove(index);
        }
        "delete" => {
            drop(db);
            return builder(
                &ctx,
                &user,
                id,
                Some("!項目が残っているページと、最後の1ページは削除できません".into()),
            )
            .await;
        }
        _ => return Err(AppError::BadRequest("操作が正しくありません".into())),
    }
    store::save_draft(&db, id, &def, revision).await?;
    Ok(see_other(&format!("/admin/forms/{id}")))
}

fn condition_from(body: &FormData) -> Option<Condition> {
    let field = body.get("cond_field").trim();
    if field.is_empty() {
        return None;
    }
    let op = match body.get("cond_op") {
        "in" => ConditionOp::In,
        "not_empty" => ConditionOp::NotEmpty,
        _ => ConditionOp::Equals,
    };
    let values = lines(body.get("cond_values"));
    Some(Condition {
        field: field.to_owned(),
        op,
        values,
    })
}

/// A rule as the settings forms show it: field id, operator, values one per line.
fn condition_inputs(c: &Option<Condition>) -> (String, &'static str, String) {
    match c {
        Some(c) => (
            c.field.clone(),
            match c.op {
                ConditionOp::Equals => "equals",
                ConditionOp::In => "in",
                ConditionOp::NotEmpty => "not_empty",
            },
            c.values.join("\n"),
        ),
        None => (String::new(), "equals", String::new()),
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// 選択肢ごとの定員 as the builder shows them: a line 「選択肢=人数」 each, in the
/// options' order, then any naming no option (the check's problem points at them).
fn limits_text(limits: &Limits, options: &[String]) -> String {
    let offered = options
        .iter()
        .filter_map(|o| limits.get(o).map(|n| format!("{o}={n}")));
    let unknown = limits
        .iter()
        .filter(|(o, _)| !options.contains(o))
        .map(|(o, n)| format!("{o}={n}"));
    offered.chain(unknown).collect::<Vec<_>>().join("\n")
}

/// Reads 選択肢ごとの定員 as typed: a line 「選択肢=人数」 each (the last `=` or `＝`
/// divides; the number may be full-width and end in 人 or 名); blank lines are
/// skipped. Whether each names an option is checked with the rest of the definition.
fn limits_from(text: &str) -> Result<Limits, String> {
    let mut out = Limits::new();
    for line in lines(text) {
        let line = line.replace('＝', "=");
        let Some((option, n)) = line.rsplit_once('=') else {
            return Err(format!(
                "選択肢ごとの定員の「{line}」は「選択肢=人数」の形で入力してください"
            ));
        };
        let option = option.trim();
        let n = crate::ja::nfkc(n.trim());
        let n: u32 = n
            .trim_end_matches(['人', '名'])
            .trim_end()
            .parse()
            .map_err(|_| format!("選択肢ごとの定員の「{option}」の人数は数字で入力してください"))?;
        if out.insert(option.to_owned(), n).is_some() {
            return Err(format!("選択肢ごとの定員に「{option}」が2回あります"));
        }
    }
    Ok(out)
}

pub struct EarlierField {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "admin/field.html")]
struct FieldPage {
    site: String,
    nav: Option<Nav>,
    form_id: i64,
    form_title: String,
    /// The id the field is stored under, which the form posts to: after a refused
    /// save that also changed the id, `f.id` is the new one, not yet stored.
    stored_id: String,
    f: Field,
    kind: &'static str,
    type_label: &'static str,
    earlier: Vec<EarlierField>,
    cond_field: String,
    cond_op: &'static str,
    cond_values: String,
    options: String,
    /// 選択肢ごとの定員, a line 「選択肢=人数」 each.
    limits: String,
    select: bool,
    min_length: String,
    max_length: String,
    pattern: String,
    pattern_message: String,
    min: String,
    max: String,
    unit: String,
    integer: bool,
    furigana: bool,
    text: String,
    /// 添付ファイル: each kind (value, label) and whether the field takes it.
    file_types: Vec<(&'static str, &'static str, bool)>,
    error: Option<String>,
    csrf: String,
    rev: i64,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn field_page(
    ctx: &TenantCtx,
    user: &StaffUser,
    form: &FormRow,
    fid: &str,
    stored_id: &str,
    error: Option<String>,
) -> Result<Response, AppError> {
    let def = &form.draft;
    let mut earlier = Vec::new();
    let mut found = None;
    'pages: for p in &def.pages {
        for f in &p.fields {
            if f.id == fid {
                found = Some(f.clone());
                break 'pages;
            }
            if f.kind.takes_answer() {
                earlier.push(EarlierField {
                    id: f.id.clone(),
                    label: f.label.clone(),
                });
            }
        }
    }
    let f = found.ok_or(AppError::NotFound)?;
    let (cond_field, cond_op, cond_values) = condition_inputs(&f.show_if);
    let mut page = FieldPage {
        site: ctx.name.to_string(),
        nav: Some(Nav::new(user, "forms")),
        form_id: form.id,
        form_title: def.title.clone(),
        stored_id: stored_id.to_owned(),
        kind: f.kind.type_name(),
        type_label: type_label(&f.kind),
        earlier,
        cond_field,
        cond_op,
        cond_values,
        options: String::new(),
        limits: String::new(),
        select: false,
        min_length: String::new(),
        max_length: String::new(),
        pattern: String::new(),
        pattern_message: String::new(),
        min: String::new(),
        max: String::new(),
        unit: String::new(),
        integer: false,
        furigana: true,
        text: String::new(),
        file_types: Vec::new(),
        error,
        csrf: user.csrf.clone(),
        rev: form.revision,
        f: f.clone(),
    };
    match &f.kind {
        FieldKind::Text {
            min_length,
            max_length,
            pattern,
            pattern_message,
        } => {
            page.min_length = opt(*min_length);
            page.max_length = opt(*max_length);
            page.pattern = pattern.clone().unwrap_or_default();
            page.pattern_message = pattern_message.clone().unwrap_or_default();
        }
        FieldKind::Textarea {
            min_length,
            max_length,
        } => {
            page.min_length = opt(*min_length);
            page.max_length = opt(*max_length);
        }
        FieldKind::Number {
            min,
            max,
            unit,
            integer,
        } => {
            page.min = opt(*min);
            page.max = opt(*max);
            page.unit = unit.clone();
            page.integer = *integer;
        }
        FieldKind::Date { min, max } => {
            page.min = opt(*min);
            page.max = opt(*max);
        }
        FieldKind::Choice {
            options,
            display,
            limits,
        } => {
            page.options = options.join("\n");
            page.limits = limits_text(limits, options);
            page.select = *display == ChoiceDisplay::Select;
        }
        FieldKind::MultiChoice {
            options,
            min_selected,
            max_selected,
            limits,
        } => {
            page.options = options.join("\n");
            page.limits = limits_text(limits, options);
            page.min = opt(*min_selected);
            page.max = opt(*max_selected);
        }
        FieldKind::Name { furigana } => page.furigana = *furigana,
        FieldKind::Consent { statement } | FieldKind::Paragraph { text: statement } => {
            page.text = statement.clone()
        }
        FieldKind::File { types, max_mb } => {
            page.max = opt(*max_mb);
            page.file_types = FileType::ALL
                .iter()
                .map(|t| (t.as_str(), t.label(), types.contains(t)))
                .collect();
        }
        FieldKind::Email {} | FieldKind::Tel {} | FieldKind::Address {} | FieldKind::Heading {} => {
        }
    }
    let status = if page.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(status, &page))
}

pub async fn edit_field(
    ctx: TenantCtx,
    user: StaffUser,
    Path((id, fid)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load(&db, &user, id).await?;
    field_page(&ctx, &user, &form, &fid, &fid, None)
}

fn num<T: std::str::FromStr>(body: &FormData, name: &str, what: &str) -> Result<Option<T>, String> {
    let v = crate::ja::nfkc(body.get(name).trim());
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{what}は数字で入力してください"))
}

fn field_from(body: &FormData, old: &Field) -> Result<Field, String> {
    let date = |name: &str| -> Result<Option<time::Date>, String> {
        let v = body.get(name).trim();
        if v.is_empty() {
            return Ok(None);
        }
        time::Date::parse(
            v,
            &time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map(Some)
        .map_err(|_| format!("日付「{v}」を読み取れません（例: 2026-12-01）"))
    };
    let kind = match &old.kind {
        FieldKind::Text { .. } => FieldKind::Text {
            min_length: num(body, "min_length", "最小文字数")?,
            max_length: num(body, "max_length", "最大文字数")?,
            pattern: Some(body.get("pattern").trim().to_owned()).filter(|p| !p.is_empty()),
            pattern_message: Some(body.get("pattern_message").trim().to_owned())
                .filter(|p| !p.is_empty()),
        },
        FieldKind::Textarea { .. } => FieldKind::Textarea {
            min_length: num(body, "min_length", "最小文字数")?,
            max_length: num(body, "max_length", "最大文字数")?,
        },
        FieldKind::Number { .. } => FieldKind::Number {
            min: num(body, "min", "最小値")?,
            max: num(body, "max", "最大値")?,
            unit: body.get("unit").trim().to_owned(),
            integer: body.get("integer") == "yes",
        },
        FieldKind::Date { .. } => FieldKind::Date {
            min: date("min")?,
            max: date("max")?,
        },
        FieldKind::Choice { .. } => FieldKind::Choice {
            options: lines(body.get("options")),
            display: if body.get("display") == "select" {
                ChoiceDisplay::Select
            } else {
                ChoiceDisplay::Radio
            },
            limits: limits_from(body.get("limits"))?,
        },
        FieldKind::MultiChoice { .. } => FieldKind::MultiChoice {
            options: lines(body.get("options")),
            min_selected: num(body, "min", "最小選択数")?,
            max_selected: num(body, "max", "最大選択数")?,
            limits: limits_from(body.get("limits"))?,
        },
        FieldKind::Name { .. } => FieldKind::Name {
            furigana: body.get("furigana") == "yes",
        },
        FieldKind::File { .. } => FieldKind::File {
            types: FileType::ALL
                .into_iter()
                .filter(|t| body.all("types").iter().any(|v| v == t.as_str()))
                .collect(),
            max_mb: num(body, "max", "ファイルの上限")?,
        },
        FieldKind::Consent { .. } => FieldKind::Consent {
            statement: body.get("text").trim().replace("\r\n", "\n"),
        },
        FieldKind::Paragraph { .. } => FieldKind::Paragraph {
            text: body.get("text").trim().replace("\r\n", "\n"),
        },
        other => other.clone(),
    };
    let new_id = body.get("id").trim();
    Ok(Field {
        id: if new_id.is_empty() {
            old.id.clone()
        } else {
            new_id.to_owned()
        },
        label: body.get("label").trim().to_owned(),
        help: body.get("help").trim().replace("\r\n", "\n"),
        required: body.get("required") == "yes",
        placeholder: body.get("placeholder").trim().to_owned(),
        show_if: condition_from(body),
        kind,
    })
}

pub async fn save_field(
    ctx: TenantCtx,
    user: StaffUser,
    Path((id, fid)): Path<(i64, String)>,
    body: FormData,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let mut form = load_for_change(&db, &user, id, &body).await?;
    let revision = form.revision;
    let (pi, fi) = find_field(&mut form.draft, &fid).ok_or(AppError::NotFound)?;
    let old = form.draft.pages[pi].fields[fi].clone();
    let new = match field_from(&body, &old) {
        Ok(f) => f,
        Err(msg) => return field_page(&ctx, &user, &form, &fid, &fid, Some(msg)),
    };
    let new_id = new.id.clone();
    let mut def = form.draft.clone();
    def.pages[pi].fields[fi] = new;
    if new_id != fid {
        // Rules that pointed at the old id follow the rename.
        for p in &mut def.pages {
            for c in p
                .show_if
                .iter_mut()
                .chain(p.fields.iter_mut().filter_map(|f| f.show_if.as_mut()))
            {
                if c.field == fid {
                    c.field.clone_from(&new_id);
                }
            }
        }
    }
    // Problems of this field are shown here; the rest of the form is the builder's business.
    let label = def.pages[pi].fields[fi].label.clone();
    let mine: Vec<String> = def
        .check()
        .into_iter()
        .map(|p| p.ja)
        .filter(|p| p.contains(&format!("「{label}」")) || p.contains(&format!("「{new_id}」")))
        .collect();
    if !mine.is_empty() {
        form.draft = def;
        return field_page(&ctx, &user, &form, &new_id, &fid, Some(mine.join("。")));
    }
    store::save_draft(&db, id, &def, revision).await?;
    Ok(see_other(&format!("/admin/forms/{id}#field-{new_id}")))
}

pub async fn publish(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let form = load_for_change(&db, &user, id, &body).await?;
    let problems = form.draft.check();
    if !problems.is_empty() {
        drop(db);
        return builder(
            &ctx,
            &user,
            id,
            Some("!公開できません。下の「確認が必要な点」を直してください".into()),
        )
        .await;
    }
    if form.draft.settings.identity
        && crate::tenant::identity::provider_label(&**db)
            .await?
            .is_none()
    {
        drop(db);
        return builder(
            &ctx,
            &user,
            id,
            Some("!公開できません。このフォームは本人確認を求めていますが、本人確認サービスが設定されていません（管理者が「本人確認」の画面で設定します）".into()),
        )
        .await;
    }
    let may_shorten = user.can_delete_cases(form.department_id);
    let published = store::publish_as(
        &mut db,
        Some(ctx.cipher()),
        id,
        &user.actor(),
        seen_revision(&body),
        may_shorten,
    )
    .await;
    let msg = match published {
        // Publishing changes what is asked, not whether applications are taken: a
        // form whose intake was stopped stays stopped.
        Ok(v) if store::is_closed(&db, id).await? => format!(
            "第{v}版を公開しました。受付は停止したままです（再開するには「受付を再開」を押してください）"
        ),
        Ok(v) => format!("第{v}版を公開しました"),
        Err(AppError::BadRequest(m)) => format!("!{m}"),
        Err(e) => return Err(e),
    };
    // Said at once: what the new 保存期間 deletes at the next daily run.
    let msg = match form.draft.settings.retention_years {
        Some(years) if !msg.starts_with('!') => {
            let due = crate::tenant::cases::retention::due(
                &db,
                id,
                years,
                time::OffsetDateTime::now_utc(),
            )
            .await?;
            if due > 0 {
                format!("{msg}。保存期間（{years}年）を過ぎた完了・却下・取下げの申請{due}件は、次の毎日の自動削除で削除されます")
            } else {
                msg
            }
        }
        _ => msg,
    };
    drop(db);
    builder(&ctx, &user, id, Some(msg)).await
}

pub async fn close(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    load_for_edit(&db, &user, id, &body).await?;
    let closed = body.get("action") != "reopen";
    store::set_closed(&mut db, id, closed, &user.actor()).await?;
    drop(db);
    builder(
        &ctx,
        &user,
        id,
        Some(if closed {
            "受付を停止しました".into()
        } else {
            "受付を再開しました".into()
        }),
    )
    .await
}

pub async fn duplicate(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let mut db = ctx.db().await?;
    let form = load_for_edit(&db, &user, id, &body).await?;
    let mut def = form.draft;
    def.title = format!("{}（コピー）", def.title)
        .chars()
        .take(200)
        .collect();
    let new_id = store::create(
        &mut db,
        &user.actor(),
        form.department_id,
        &def,
        serde_json::json!({ "copy_of": id }),
    )
    .await?;
    Ok(see_other(&format!("/admin/forms/{new_id}")))
}

/// `?version=N`: a published version of the form (its 公開履歴), not the draft.
/// Taken as text, so that an address typed wrong gets the 404 page, not a bare 400.
#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

/// The version a `version` parameter names (404 when it is not a number).
fn version_param(v: Option<&str>) -> Result<Option<i32>, AppError> {
    v.map(|v| v.trim().parse().map_err(|_| AppError::NotFound))
        .transpose()
}

/// The draft, or the published version `version` asks for (404 if it has none).
async fn draft_or_version(
    db: &tokio_postgres::Client,
    form: FormRow,
    version: Option<i32>,
) -> Result<FormDefinition, AppError> {
    match version {
        None => Ok(form.draft),
        Some(v) => store::version(db, form.id, v).await,
    }
}

pub async fn export(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load(&db, &user, id).await?;
    let version = version_param(q.version.as_deref())?;
    let def = draft_or_version(&db, form, version).await?;
    let json = serde_json::to_string_pretty(&def).map_err(|e| AppError::Internal(e.into()))?;
    let filename = match version {
        Some(v) => format!("form-{id}-v{v}.json"),
        None => format!("form-{id}.json"),
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        json,
    )
        .into_response())
}

pub async fn import(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let revision = load_for_change(&db, &user, id, &body).await?.revision;
    let text = body.get("json");
    if text.len() > MAX_DOCUMENT * 2 {
        drop(db);
        return builder(&ctx, &user, id, Some("!フォーム定義が大きすぎます".into())).await;
    }
    match FormDefinition::from_json(text) {
        Ok(def) => {
            store::save_draft(&db, id, &def, revision).await?;
            drop(db);
            builder(
                &ctx,
                &user,
                id,
                Some("フォーム定義を読み込みました（下書き）".into()),
            )
            .await
        }
        Err(problems) => {
            drop(db);
            let msg = problems
                .into_iter()
                .map(|p| p.ja)
                .collect::<Vec<_>>()
                .join("。");
            builder(
                &ctx,
                &user,
                id,
                Some(format!("!読み込めませんでした: {msg}")),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    page: Option<String>,
    /// A published version (公開履歴) instead of the draft.
    version: Option<String>,
}

pub async fn preview_page(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load(&db, &user, id).await?;
    let version = version_param(q.version.as_deref())?;
    let def = draft_or_version(&db, form, version).await?;
    // A page number out of range or not a number shows the first page.
    let page = q.page.and_then(|p| p.trim().parse().ok()).unwrap_or(0);
    Ok(preview(&ctx, &def, id, page, version))
}

/// The public URL as a QR code, for posters and 広報誌: SVG, or PNG with `?format=png`.
pub async fn qr(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    Query(q): Query<QrQuery>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let form = load(&db, &user, id).await?;
    let url = format!("{}/f/{}", ctx.base_url, form.public_id);
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("qr: {e}")))?;
    let disposition = |ext: &str| {
        HeaderValue::from_str(&format!("attachment; filename=\"form-{id}-qr.{ext}\""))
            .unwrap_or(HeaderValue::from_static("attachment"))
    };
    if q.format.as_deref() == Some("png") {
        let png = qr_png(&code, 8).map_err(|e| AppError::Internal(anyhow::anyhow!("png: {e}")))?;
        return Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                (header::CONTENT_DISPOSITION, disposition("png")),
            ],
            png,
        )
            .into_response());
    }
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(400, 400)
        .quiet_zone(true)
        .build();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (header::CONTENT_DISPOSITION, disposition("svg")),
        ],
        svg,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct QrQuery {
    format: Option<String>,
}

/// A black-and-white PNG of a QR code, `scale` pixels per module, 4-module quiet zone.
fn qr_png(code: &qrcode::QrCode, scale: usize) -> Result<Vec<u8>, png::EncodingError> {
    let w = code.width();
    let size = (w + 8) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; size * size];
    for y in 0..w {
        for x in 0..w {
            if colors[y * w + x] == qrcode::Color::Dark {
                for dy in 0..scale {
                    let row = (y + 4) * scale + dy;
                    let start = row * size + (x + 4) * scale;
                    pixels[start..start + scale].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(size).unwrap_or(u32::MAX);
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

#[cfg(test)]
mod limits_tests {
    use super::{limits_from, limits_text};

    #[test]
    fn option_limits_are_read_as_staff_type_them() {
        let read = limits_from("午前の部=20\r\n\r\n午後の部＝１５人\n夜 = 5名")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.get("午前の部"), Some(&20));
        assert_eq!(read.get("午後の部"), Some(&15));
        assert_eq!(read.get("夜"), Some(&5));
        // An option with = in it: the last one divides.
        let odd = limits_from("A=B=3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(odd.get("A=B"), Some(&3));
        assert!(limits_from("午前の部").is_err());
        assert!(limits_from("午前の部=二十").is_err());
        assert!(limits_from("午前=1\n午前=2").is_err());
        // Shown back in the options' order, one naming no option after them.
        let options = ["午前の部".to_owned(), "午後の部".to_owned()];
        assert_eq!(
            limits_text(&read, &options),
            "午前の部=20\n午後の部=15\n夜=5"
        );
    }
}
