//! 代理入力: staff enter an application a citizen made at the counter, by telephone
//! or by post into the form as published. It is checked as an online one is, read
//! back on a confirmation step, gets a receipt number and the applicant's mailed copy
//! (when an address was given), counts against 定員 and 選択肢ごとの定員, and is kept
//! with how it came, who entered it and, for a form that asks for 本人確認, the kind
//! of document seen (never its number). Outside the 受付期間 (a letter posted in time)
//! it is taken only when the person says so; a form stopped or full takes none.

use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::answers::{check_all, page_inputs, Answers, FieldError, Raw};
use super::citizen::{jst, store_submission, Stored};
use super::definition::FormDefinition;
use super::store::{self, Availability, Published};
use super::view::{field_view, input_id, mark_places, show_rule, FieldView};
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit::{self, Actor};
use crate::tenant::http::{see_other, FormData};
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::render;

/// How the application reached the municipality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Counter,
    Phone,
    Post,
    Fax,
    Other,
}

impl Channel {
    pub const ALL: [Self; 5] = [
        Self::Counter,
        Self::Phone,
        Self::Post,
        Self::Fax,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Phone => "phone",
            Self::Post => "post",
            Self::Fax => "fax",
            Self::Other => "other",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Counter => "窓口",
            Self::Phone => "電話",
            Self::Post => "郵送",
            Self::Fax => "FAX",
            Self::Other => "その他",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The kind of identity document staff saw (本人確認), for forms that ask for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    MyNumberCard,
    DriversLicense,
    Passport,
    ResidenceCard,
    TwoDocuments,
    CopyByPost,
    Other,
}

impl Document {
    pub const ALL: [Self; 7] = [
        Self::MyNumberCard,
        Self::DriversLicense,
        Self::Passport,
        Self::ResidenceCard,
        Self::TwoDocuments,
        Self::CopyByPost,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MyNumberCard => "my_number_card",
            Self::DriversLicense => "drivers_license",
            Self::Passport => "passport",
            Self::ResidenceCard => "residence_card",
            Self::TwoDocuments => "two_documents",
            Self::CopyByPost => "copy_by_post",
            Self::Other => "other",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::MyNumberCard => "マイナンバーカード",
            Self::DriversLicense => "運転免許証",
            Self::Passport => "パスポート",
            Self::ResidenceCard => "在留カード・特別永住者証明書",
            Self::TwoDocuments => "健康保険の資格確認書など2点",
            Self::CopyByPost => "本人確認書類の写し（郵送）",
            Self::Other => "その他の書類",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// What staff say of an application they enter, beside its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub channel: Channel,
    pub document: Option<Document>,
    /// Entered while the form was not open (before or after its 受付期間).
    pub outside_period: bool,
}

/// The page's own inputs: named with a colon, which no field id or part has.
const CHANNEL: &str = "proxy:channel";
const DOCUMENT: &str = "proxy:document";
const OUTSIDE: &str = "proxy:outside";
const KEY: &str = "proxy:key";
const STEP: &str = "proxy:step";

/// Keeps how a submission came, with its operation-log entry, in the submission's
/// own transaction (called by [`store_submission`]).
pub(super) async fn keep(
    tx: &tokio_postgres::Transaction<'_>,
    actor: &Actor,
    submission: Uuid,
    form: i64,
    entry: &Entry,
) -> Result<(), AppError> {
    let staff = actor.staff_id().ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!("代理入力 by an actor who is not staff"))
    })?;
    tx.execute(
        "INSERT INTO proxy_entries (submission_id, channel, staff_id, identity_document, outside_period)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &submission,
            &entry.channel.as_str(),
            &staff,
            &entry.document.map(Document::as_str),
            &entry.outside_period,
        ],
    )
    .await?;
    audit::append(
        tx,
        actor,
        "submission.proxy_entry",
        &submission.to_string(),
        serde_json::json!({
            "form": form,
            "channel": entry.channel.as_str(),
            "identity_document": entry.document.map(Document::as_str),
            "outside_period": entry.outside_period,
        }),
    )
    .await
}

/// How a case entered by staff came.
#[derive(Debug, Clone)]
pub struct Kept {
    pub channel: Channel,
    pub document: Option<Document>,
    /// The member of staff who entered it (their address).
    pub by: String,
    pub at: time::OffsetDateTime,
    pub outside_period: bool,
}

/// [`Kept`] as the case page shows it.
pub struct Shown {
    pub channel: &'static str,
    pub by: String,
    pub at: String,
    pub document: Option<&'static str>,
    pub outside_period: bool,
}

impl Kept {
    pub fn shown(&self) -> Shown {
        Shown {
            channel: self.channel.label(),
            by: self.by.clone(),
            at: jst(self.at),
            document: self.document.map(Document::label),
            outside_period: self.outside_period,
        }
    }
}

/// [`Kept`] for a submission, `None` when it was sent online.
pub async fn of_submission(db: &impl GenericClient, id: Uuid) -> Result<Option<Kept>, AppError> {
    let Some(r) = db
        .query_opt(
            "SELECT p.channel, st.email, p.entered_at, p.identity_document, p.outside_period
               FROM proxy_entries p JOIN staff st ON st.id = p.staff_id WHERE p.submission_id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let channel = Channel::parse(r.get(0))
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("proxy_entries: an unknown channel")))?;
    Ok(Some(Kept {
        channel,
        by: r.get(1),
        at: r.get(2),
        document: r.get::<_, Option<&str>>(3).and_then(Document::parse),
        outside_period: r.get(4),
    }))
}

/// The definition as staff fill it in: files cannot be attached on a citizen's
/// behalf (the papers are kept at the office), so no file question is required.
fn for_staff(def: &FormDefinition) -> FormDefinition {
    let mut def = def.clone();
    for f in def.pages.iter_mut().flat_map(|p| p.fields.iter_mut()) {
        if f.kind.is_file() {
            f.required = false;
        }
    }
    def
}

/// The answers' inputs of a posted page: the page's own inputs, the session's token
/// and any file input (a file cannot be named here) left out.
fn answer_inputs(def: &FormDefinition, body: &FormData) -> Raw {
    def.pages
        .iter()
        .flat_map(|p| page_inputs(p, &body.0))
        .collect()
}

/// Whether a form takes 代理入力 now: after its 受付期間 only when the person says
/// the application was received in time; before it, stopped or full, not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Yes,
    AfterPeriod,
    No(&'static str),
}

const FULL: &str = "このフォームは定員に達しているため、代理入力もできません。";
const CLOSED: &str = "このフォームは受付を停止しているため、代理入力もできません。受け付ける場合は、フォームの画面で受付を再開してください。";
const NOT_YET: &str =
    "このフォームは受付期間の前のため、代理入力もできません。受付開始の日時から入力できます。";

/// The published form and whether it takes an entry now.
struct Target {
    form: Published,
    open: Open,
}

/// The published form `id` for a member of staff who may enter applications to it.
async fn form_for(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    user: &StaffUser,
    id: i64,
) -> Result<Target, AppError> {
    let row = store::get(db, id).await?;
    if !user.can_see(row.department_id) {
        return Err(AppError::NotFound);
    }
    if !user.can_edit(row.department_id) {
        return Err(AppError::Forbidden);
    }
    if row.current_version.is_none() {
        return Err(AppError::Conflict(
            "このフォームはまだ公開されていないため、代理入力はできません。公開してから入力してください。".into(),
        ));
    }
    let form = store::published(ctx.id, db, &row.public_id).await?;
    let open = match form.availability {
        Availability::Open => Open::Yes,
        Availability::NotYetOpen => Open::No(NOT_YET),
        // Past its period a form may be full too (the period is said first to
        // citizens): 定員 holds all the same.
        Availability::Ended => {
            let full: bool = db
                .query_one(
                    "SELECT capacity IS NOT NULL AND accepted_count >= capacity FROM forms WHERE id = $1",
                    &[&form.id],
                )
                .await?
                .get(0);
            if full {
                Open::No(FULL)
            } else {
                Open::AfterPeriod
            }
        }
        Availability::Full => Open::No(FULL),
        Availability::Closed => Open::No(CLOSED),
    };
    Ok(Target { form, open })
}

struct PageView {
    title: String,
    show_field: String,
    show_op: &'static str,
    show_values: String,
    fields: Vec<FieldView>,
}

struct Pick {
    value: &'static str,
    label: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "admin/proxy.html")]
struct ProxyPage {
    site: String,
    nav: Option<Nav>,
    csrf: String,
    form_id: i64,
    title: String,
    key: String,
    channels: Vec<Pick>,
    /// The kinds of identity document, when the form asks for 本人確認.
    documents: Vec<Pick>,
    /// Past its 受付期間: the person says the application was received in time.
    after_period: bool,
    outside_checked: bool,
    /// The form has file questions (not attached here).
    files: bool,
    pages: Vec<PageView>,
    errors: Vec<(String, String)>,
    /// Errors of the entry's own questions, shown beside them.
    channel_error: Option<String>,
    document_error: Option<String>,
    outside_error: Option<String>,
    refusal: Option<&'static str>,
    notice: Option<String>,
    /// The confirmation step: the answers as they will be kept, and every input
    /// carried over unchanged.
    confirm: bool,
    answers: Vec<(String, String)>,
    hidden: Vec<(String, String)>,
    channel: &'static str,
    document: &'static str,
}

/// What the page was sent with, read leniently (errors are said on the page).
struct Sent {
    key: Uuid,
    channel: Option<Channel>,
    document: Option<Document>,
    outside: bool,
    raw: Raw,
}

impl Sent {
    fn fresh() -> Self {
        Self {
            key: Uuid::new_v4(),
            channel: None,
            document: None,
            outside: false,
            raw: Raw::new(),
        }
    }

    fn read(def: &FormDefinition, body: &FormData) -> Result<Self, AppError> {
        let key = Uuid::parse_str(body.get(KEY)).map_err(|_| {
            AppError::BadRequest(
                "画面の情報が足りません。代理入力の画面を開き直してください。".into(),
            )
        })?;
        Ok(Self {
            key,
            channel: Channel::parse(body.get(CHANNEL)),
            document: Document::parse(body.get(DOCUMENT)),
            outside: body.get(OUTSIDE) == "yes",
            raw: answer_inputs(def, body),
        })
    }

    /// What is missing of the entry's own questions.
    fn errors(&self, t: &Target) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut missing = |input: &str, message: &str| {
            errors.push(FieldError {
                field: input.to_owned(),
                input: input.to_owned(),
                message: message.to_owned(),
            });
        };
        if self.channel.is_none() {
            missing(CHANNEL, "受付方法を選んでください");
        }
        if t.form.def.settings.identity && self.document.is_none() {
            missing(DOCUMENT, "本人確認で確かめた書類を選んでください");
        }
        if t.open == Open::AfterPeriod && !self.outside {
            missing(
                OUTSIDE,
                "受付期間外の入力です。期間内に受け付けた申請であることを確かめて、チェックを入れてください",
            );
        }
        errors
    }

    fn entry(&self, t: &Target) -> Option<Entry> {
        Some(Entry {
            channel: self.channel?,
            document: self.document.filter(|_| t.form.def.settings.identity),
            outside_period: t.open == Open::AfterPeriod,
        })
    }
}

/// Where an error's link goes: the entry's own question, the part of a name or an
/// address that is wrong, or the question's first input.
fn error_href(pages: &[PageView], e: &FieldError) -> String {
    if let Some(own) = e.input.strip_prefix("proxy:") {
        return format!("#proxy-{own}");
    }
    if e.input != e.field {
        return format!("#{}", input_id(&e.input));
    }
    pages
        .iter()
        .flat_map(|p| &p.fields)
        .find(|f| f.id == e.field)
        .map_or_else(
            || format!("#{}", input_id(&e.input)),
            |f| format!("#{}", f.input_id),
        )
}

fn own_error(errors: &[FieldError], input: &str) -> Option<String> {
    errors
        .iter()
        .find(|e| e.input == input)
        .map(|e| e.message.clone())
}

/// What the page says beside the form, if anything.
enum Said {
    Nothing,
    /// The form takes no entry now (the form is not drawn).
    Refused(&'static str),
    /// A word above the form, which is drawn with what was typed.
    Notice(String),
}

#[allow(clippy::too_many_arguments)]
fn page(
    ctx: &TenantCtx,
    user: &StaffUser,
    form_id: i64,
    t: &Target,
    sent: &Sent,
    errors: &[FieldError],
    said: Said,
    confirm: Option<&Answers>,
) -> ProxyPage {
    let form = &t.form;
    let def = for_staff(&form.def);
    let pages: Vec<PageView> = def
        .pages
        .iter()
        .map(|p| {
            let (show_field, show_op, show_values) =
                p.show_if.as_ref().map(show_rule).unwrap_or_default();
            let mut fields: Vec<FieldView> = p
                .fields
                .iter()
                .filter(|f| !f.kind.is_file())
                .map(|f| field_view(f, &sent.raw, errors))
                .collect();
            mark_places(&mut fields, &form.places);
            // A counter's computer serves one citizen after another: the browser is
            // not to remember one's name or address and offer it for the next.
            for f in &mut fields {
                f.autocomplete = "off";
                for part in &mut f.parts {
                    part.autocomplete = "off";
                }
            }
            PageView {
                title: p.title.clone(),
                show_field,
                show_op,
                show_values,
                fields,
            }
        })
        .collect();
    let answers = confirm.map_or_else(Vec::new, |a| {
        def.fields()
            .filter_map(|f| a.get(&f.id).map(|v| (f.label.clone(), v.display())))
            .collect()
    });
    let links = errors
        .iter()
        .map(|e| (error_href(&pages, e), e.message.clone()))
        .collect();
    let hidden = sent
        .raw
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect();
    let (refusal, notice) = match said {
        Said::Nothing => (None, None),
        Said::Refused(why) => (Some(why), None),
        Said::Notice(text) => (None, Some(text)),
    };
    ProxyPage {
        site: ctx.name.to_string(),
        nav: Some(Nav::new(user, "forms")),
        csrf: user.csrf.clone(),
        form_id,
        title: form.def.title.clone(),
        key: sent.key.to_string(),
        channels: Channel::ALL
            .iter()
            .map(|c| Pick {
                value: c.as_str(),
                label: c.label(),
                checked: sent.channel == Some(*c),
            })
            .collect(),
        documents: if form.def.settings.identity {
            Document::ALL
                .iter()
                .map(|d| Pick {
                    value: d.as_str(),
                    label: d.label(),
                    checked: sent.document == Some(*d),
                })
                .collect()
        } else {
            Vec::new()
        },
        after_period: t.open == Open::AfterPeriod,
        outside_checked: sent.outside,
        files: form.def.fields().any(|f| f.kind.is_file()),
        pages,
        errors: links,
        channel_error: own_error(errors, CHANNEL),
        document_error: own_error(errors, DOCUMENT),
        outside_error: own_error(errors, OUTSIDE),
        refusal,
        notice,
        confirm: confirm.is_some(),
        answers,
        hidden,
        channel: sent.channel.map_or("", Channel::label),
        document: sent.document.map_or("", Document::label),
    }
}

/// The entry page of a published form (代理入力).
pub async fn show(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let t = form_for(&ctx, &db, &user, id).await?;
    let said = match t.open {
        Open::No(why) => Said::Refused(why),
        _ => Said::Nothing,
    };
    Ok(render(
        StatusCode::OK,
        &page(&ctx, &user, id, &t, &Sent::fresh(), &[], said, None),
    ))
}

/// The application an entry page's key made already, if any: its id, receipt number
/// and answers.
async fn made_before(
    ctx: &TenantCtx,
    db: &deadpool_postgres::ClientWrapper,
    form: i64,
    key: Uuid,
) -> Result<Option<(Uuid, String, Answers)>, AppError> {
    let Some(r) = db
        .query_opt(
            "SELECT id, receipt_number, answers FROM submissions WHERE idempotency_key = $1 AND form_id = $2",
            &[&key, &form],
        )
        .await?
    else {
        return Ok(None);
    };
    let id: Uuid = r.get(0);
    let answers = super::citizen::decrypt_answers(ctx.cipher(), id, &r.get(2))?;
    Ok(Some((id, r.get(1), answers)))
}

/// The entry page sent: to the confirmation step (`check`), back to the answers
/// (`edit`), or stored (`send`).
pub async fn post(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    body: FormData,
) -> Result<Response, AppError> {
    user.check_csrf(&body)?;
    let mut db = ctx.db().await?;
    let t = form_for(&ctx, &db, &user, id).await?;
    let def = for_staff(&t.form.def);
    let mut sent = Sent::read(&def, &body)?;
    let step = body.get(STEP);
    if step == "edit" {
        return Ok(render(
            StatusCode::OK,
            &page(&ctx, &user, id, &t, &sent, &[], Said::Nothing, None),
        ));
    }
    let mut errors = sent.errors(&t);
    let answers = match check_all(&def, &sent.raw) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    // This page's application was stored already. The same answers sent again (a
    // double click, a resend): its case, even if that filled the form. Other answers
    // (the page reused for the next citizen): not taken for that one, and offered
    // as a new application with what was typed.
    if let Some((case, receipt, kept)) = made_before(&ctx, &db, t.form.id, sent.key).await? {
        if step == "send" && answers.as_ref() == Some(&kept) {
            return Ok(see_other(&format!("/admin/submissions/{case}")));
        }
        sent.key = Uuid::new_v4();
        let said = Said::Notice(format!(
            "この画面の申請は登録済みです（受付番号 {receipt}）。いま入力されている内容は登録していません。別の申請として登録する場合は、内容を確かめて「確認画面へ」を押してください。"
        ));
        return Ok(render(
            StatusCode::CONFLICT,
            &page(&ctx, &user, id, &t, &sent, &[], said, None),
        ));
    }
    if let Open::No(why) = t.open {
        return Ok(render(
            StatusCode::CONFLICT,
            &page(&ctx, &user, id, &t, &sent, &[], Said::Refused(why), None),
        ));
    }
    if let Some(a) = &answers {
        errors.extend(super::places::full(&**db, t.form.id, &def, a, None).await?);
    }
    let (Some(answers), Some(entry), true) = (answers, sent.entry(&t), errors.is_empty()) else {
        return Ok(render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &page(&ctx, &user, id, &t, &sent, &errors, Said::Nothing, None),
        ));
    };
    if step != "send" {
        return Ok(render(
            StatusCode::OK,
            &page(
                &ctx,
                &user,
                id,
                &t,
                &sent,
                &[],
                Said::Nothing,
                Some(&answers),
            ),
        ));
    }
    let stored = store_submission(
        &ctx,
        &mut db,
        &t.form,
        &answers,
        sent.key,
        None,
        &user.actor(),
        None,
        Some(&entry),
    )
    .await?;
    match stored {
        Stored::Accepted { id: case, .. } => {
            ctx.mail_queued();
            Ok(see_other(&format!("/admin/submissions/{case}?entered=1")))
        }
        // Stored by a send of this page running at the same time.
        Stored::Existing { id: case, .. } => Ok(see_other(&format!("/admin/submissions/{case}"))),
        Stored::Full => Ok(render(
            StatusCode::CONFLICT,
            &page(&ctx, &user, id, &t, &sent, &[], Said::Refused(FULL), None),
        )),
        Stored::OptionsFull(full) => {
            let t = Target {
                form: Published {
                    places: super::places::now(&**db, t.form.id).await?,
                    ..t.form.clone()
                },
                open: t.open,
            };
            let errors = super::places::errors(full);
            Ok(render(
                StatusCode::CONFLICT,
                &page(&ctx, &user, id, &t, &sent, &errors, Said::Nothing, None),
            ))
        }
    }
}
