//! Forms in the tenant database: drafts, published versions, and what the citizen
//! side needs to know about a form right now.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use super::definition::{FormDefinition, FormSettings};
use super::kept;
use crate::error::AppError;
use crate::tenant::audit::{self, Actor};
use crate::tenant::cases::Status;

/// A form as the builder sees it.
#[derive(Debug, Clone)]
pub struct FormRow {
    pub id: i64,
    pub public_id: String,
    pub department_id: i64,
    pub department: String,
    pub draft: FormDefinition,
    pub current_version: Option<i32>,
    pub closed: bool,
    pub accepted: i32,
    /// Whether the draft differs from the published version.
    pub unpublished_changes: bool,
    /// The answer the inbox shows beside each submission.
    pub summary_field: Option<String>,
    /// When the draft was last saved (µs): the builder's pages carry it, and a save
    /// from a page older than the draft is refused ([`save_draft`]).
    pub revision: i64,
}

/// Where a published form stands for citizens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Open,
    NotYetOpen,
    Ended,
    Full,
    Closed,
}

/// A published form, for the citizen side.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: i64,
    pub public_id: String,
    pub version: i32,
    pub def: Arc<FormDefinition>,
    pub availability: Availability,
    /// 定員, if the published version sets one.
    pub capacity: Option<i32>,
    /// 選択肢ごとの定員 as they stand (read only for a version that sets some).
    pub places: Vec<super::places::Place>,
    /// The owning department's 問い合わせ先 (its name and contact text), else the
    /// municipality's (代表), if either wrote one.
    pub contact: Option<Contact>,
}

/// How citizens reach a department (問い合わせ先).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub department: String,
    pub text: String,
}

impl Contact {
    /// A department's contact, when it wrote one.
    pub fn of(department: String, text: String) -> Option<Self> {
        (!text.trim().is_empty()).then_some(Self { department, text })
    }
}

pub fn new_public_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    (0..10)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn parse_def(v: serde_json::Value) -> Result<FormDefinition, AppError> {
    serde_json::from_value(v)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored form definition unreadable: {e}")))
}

fn to_json(def: &FormDefinition) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(def).map_err(|e| AppError::Internal(e.into()))
}

const FORM_COLUMNS: &str = "f.id, f.public_id, f.department_id, d.name, f.draft, f.current_version, f.closed, (SELECT count(*)::int FROM submissions s WHERE s.form_id = f.id),
     f.current_version IS NULL OR f.draft IS DISTINCT FROM (SELECT v.definition FROM form_versions v WHERE v.form_id = f.id AND v.version = f.current_version),
     f.summary_field, (extract(epoch FROM f.draft_updated_at) * 1000000)::bigint";

fn row_to_form(r: &tokio_postgres::Row) -> Result<FormRow, AppError> {
    Ok(FormRow {
        id: r.get(0),
        public_id: r.get(1),
        department_id: r.get(2),
        department: r.get(3),
        draft: parse_def(r.get(4))?,
        current_version: r.get(5),
        closed: r.get(6),
        accepted: r.get(7),
        unpublished_changes: r.get(8),
        summary_field: r.get(9),
        revision: r.get(10),
    })
}

/// A form as the list of forms shows it: no definition read (a city has hundreds).
pub struct ListedForm {
    pub id: i64,
    pub title: String,
    pub department_id: i64,
    pub department: String,
    pub current_version: Option<i32>,
    pub closed: bool,
    pub accepted: i32,
    pub unpublished_changes: bool,
}

/// [`ListedForm`]s of the given departments (`None`: all), newest first.
pub async fn list(db: &Client, departments: Option<&[i64]>) -> Result<Vec<ListedForm>, AppError> {
    let rows = db
        .query(
            "SELECT f.id, coalesce(f.draft->>'title', ''), f.department_id, d.name, f.current_version, f.closed,
                    (SELECT count(*)::int FROM submissions s WHERE s.form_id = f.id),
                    f.current_version IS NULL OR f.draft IS DISTINCT FROM
                      (SELECT v.definition FROM form_versions v WHERE v.form_id = f.id AND v.version = f.current_version)
               FROM forms f JOIN departments d ON d.id = f.department_id
              WHERE $1::bigint[] IS NULL OR f.department_id = ANY($1)
              ORDER BY f.id DESC",
            &[&departments],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ListedForm {
            id: r.get(0),
            title: r.get(1),
            department_id: r.get(2),
            department: r.get(3),
            current_version: r.get(4),
            closed: r.get(5),
            accepted: r.get(6),
            unpublished_changes: r.get(7),
        })
        .collect())
}

pub async fn get(db: &Client, id: i64) -> Result<FormRow, AppError> {
    let row = db
        .query_opt(&format!("SELECT {FORM_COLUMNS} FROM forms f JOIN departments d ON d.id = f.department_id WHERE f.id = $1"), &[&id])
        .await?
        .ok_or(AppError::NotFound)?;
    row_to_form(&row)
}

/// Creates a form from `def` as a draft, with its `form.create` entry in the
/// operation log (in the same transaction); `detail` says how it came (new, a copy,
/// an import). Returns its id.
pub async fn create(
    db: &mut Client,
    actor: &Actor,
    department_id: i64,
    def: &FormDefinition,
    detail: serde_json::Value,
) -> Result<i64, AppError> {
    let created_by = actor.staff_id();
    let tx = db.transaction().await?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO forms (public_id, department_id, draft, created_by) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&new_public_id(), &department_id, &to_json(def)?, &created_by],
        )
        .await?
        .get(0);
    let mut detail = detail;
    if let Some(map) = detail.as_object_mut() {
        map.insert("department".into(), department_id.into());
    }
    audit::append(&tx, actor, "form.create", &format!("form:{id}"), detail).await?;
    tx.commit().await?;
    Ok(id)
}

/// Every field id of every published version of a form.
pub async fn published_field_ids(
    db: &Client,
    id: i64,
) -> Result<std::collections::HashSet<String>, AppError> {
    let rows = db
        .query(
            "SELECT DISTINCT jsonb_path_query(definition, '$.pages[*].fields[*].id') #>> '{}'
               FROM form_versions WHERE form_id = $1",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect())
}

/// What staff are told when the draft they edited was saved by someone else since
/// they opened it.
pub const STALE_DRAFT: &str = "このフォームは、あなたが画面を開いた後に他の職員が変更しました。変更は保存していません。フォームの画面を開き直して最新の内容を確かめてから、もう一度操作してください。";

/// Saves the draft if it is still at `revision` (the [`FormRow::revision`] the
/// person edited): two staff editing one form never overwrite each other's changes
/// unseen; the second is told ([`STALE_DRAFT`]).
pub async fn save_draft(
    db: &Client,
    id: i64,
    def: &FormDefinition,
    revision: i64,
) -> Result<(), AppError> {
    let size = serde_json::to_string(def).map_or(usize::MAX, |j| j.len());
    // Over the limit, a save may still make the draft smaller (one stored before
    // the limit can be brought under it a step at a time); it may not make it grow.
    let before = if size > super::definition::MAX_DOCUMENT {
        db.query_opt("SELECT draft FROM forms WHERE id = $1", &[&id])
            .await?
            .map_or(0, |r| {
                serde_json::to_string(&r.get::<_, serde_json::Value>(0)).map_or(0, |j| j.len())
            })
    } else {
        0
    };
    if size > super::definition::MAX_DOCUMENT && size >= before {
        return Err(AppError::BadRequest(format!(
            "フォーム定義が大きすぎるため保存していません（{} KB まで）。項目や文章を減らしてください。",
            super::definition::MAX_DOCUMENT / 1024
        )));
    }
    let saved = db
        .execute(
            "UPDATE forms SET draft = $2, draft_updated_at = clock_timestamp()
              WHERE id = $1 AND (extract(epoch FROM draft_updated_at) * 1000000)::bigint = $3",
            &[&id, &to_json(def)?, &revision],
        )
        .await?;
    if saved == 0 {
        return Err(AppError::Conflict(STALE_DRAFT.into()));
    }
    Ok(())
}

/// Moves the form (and so who may read its submissions) to another department,
/// with its `form.department` entry in the operation log in the same transaction.
pub async fn set_department(
    db: &mut Client,
    id: i64,
    department_id: i64,
    actor: &Actor,
) -> Result<(), AppError> {
    let tx = db.transaction().await?;
    let from: i64 = tx
        .query_opt(
            "SELECT department_id FROM forms WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?
        .get(0);
    tx.execute(
        "UPDATE forms SET department_id = $2 WHERE id = $1",
        &[&id, &department_id],
    )
    .await?;
    audit::append(
        &tx,
        actor,
        "form.department",
        &format!("form:{id}"),
        serde_json::json!({ "from": from, "to": department_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Freezes the draft as the next version, with its `form.publish` entry in the
/// operation log (in the same transaction); returns the version. The caller has
/// checked the draft; `seen`, the revision the person saw, if they saw one: a draft
/// saved by someone else since is not published (409).
pub async fn publish(
    db: &mut Client,
    id: i64,
    actor: &Actor,
    seen: Option<i64>,
) -> Result<i32, AppError> {
    publish_as(db, None, id, actor, seen, true).await
}

/// Said when a publish that shortens 保存期間 is not this person's to make.
pub const RETENTION_NOT_YOURS: &str = "保存期間を短くする（または新たに定める）公開は、管理者またはこのフォームの所属の所属管理者が行ってください。保存期間を過ぎた申請は自動で削除されるためです";

/// Said when the publish could not have submissions to itself for its count.
pub const PUBLISH_BUSY: &str = "申請の処理が混み合っていたため公開できませんでした。少し待ってから、もう一度「公開する」を押してください（編集中の内容はそのままです）";

/// [`publish`], by someone who may (or may not) shorten the form's 保存期間: a
/// shorter one (or a first one) deletes finished applications sooner, so it takes
/// the right to delete them. 選択肢ごとの定員 are counted again from the
/// applications, read with `cipher` (without it, a form with such limits and
/// applications is refused).
pub async fn publish_as(
    db: &mut Client,
    cipher: Option<&crate::crypto::field::FieldCipher>,
    id: i64,
    actor: &Actor,
    seen: Option<i64>,
    may_shorten_retention: bool,
) -> Result<i32, AppError> {
    let staff_id = actor.staff_id();
    let tx = db.transaction().await?;
    // 定員 is counted below with submissions locked against writes (first, before the
    // form's row, the order submitting and status changes take them in): one stored
    // meanwhile without a count (the form had no 定員 when it began) is in the count,
    // and one beginning after sees the new 定員 and counts itself. Submissions to
    // the municipality's other forms wait for this transaction too (milliseconds; a
    // publish that limits an option anew reads the form's applications again, which
    // takes longer on a form with many).
    // Not behind a long writer for long: others queue behind a waiting lock.
    tx.batch_execute(
        "SET LOCAL lock_timeout = '5s'; LOCK TABLE submissions IN SHARE MODE;
         SET LOCAL lock_timeout TO DEFAULT",
    )
    .await
    .map_err(|e| match e.code() {
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            AppError::BadRequest(PUBLISH_BUSY.into())
        }
        _ => e.into(),
    })?;
    let row = tx
        .query_one(
            "SELECT draft, coalesce(current_version, 0), (extract(epoch FROM draft_updated_at) * 1000000)::bigint
               FROM forms WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    if seen.is_some_and(|seen| seen != row.get::<_, i64>(2)) {
        return Err(AppError::Conflict(STALE_DRAFT.into()));
    }
    let draft: serde_json::Value = row.get(0);
    let def = parse_def(draft.clone())?;
    // Checked again as locked: an edit saved since the caller's check must not be
    // published unchecked.
    if !def.check().is_empty() {
        return Err(AppError::BadRequest(
            "公開できません。編集中の内容が変わりました。下の「確認が必要な点」を直してください"
                .into(),
        ));
    }
    // Answers are kept, exported and totalled by field id across versions: an id an
    // earlier version gave to another kind of question (a field deleted, its id then
    // reused by a rename or an import) would mix the two.
    let earlier = tx
        .query(
            "SELECT version, definition FROM form_versions WHERE form_id = $1 ORDER BY version DESC",
            &[&id],
        )
        .await?;
    let previous_retention = earlier
        .first()
        .and_then(|r| serde_json::from_value::<FormDefinition>(r.get(1)).ok())
        .and_then(|d| d.settings.retention_years);
    let retention = def.settings.retention_years;
    let shortened = match (previous_retention, retention) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(now)) => now < before,
    };
    if shortened && !may_shorten_retention {
        return Err(AppError::BadRequest(RETENTION_NOT_YOURS.into()));
    }
    for f in def.fields().filter(|f| f.kind.takes_answer()) {
        let before = earlier.iter().find_map(|r| {
            let old: FormDefinition = serde_json::from_value(r.get(1)).ok()?;
            let field = old.field(&f.id)?.clone();
            Some((r.get::<_, i32>(0), field))
        });
        if let Some((v, old)) = before {
            if old.kind.type_name() != f.kind.type_name() {
                return Err(AppError::BadRequest(format!(
                    "公開できません。項目ID「{}」は第{v}版で別の種類の項目（「{}」）に使われていました。回答が混ざるため、この項目には別の項目IDを付けてください",
                    f.id, old.label
                )));
            }
        }
    }
    let version: i32 = row.get::<_, i32>(1) + 1;
    tx.execute(
        "INSERT INTO form_versions (form_id, version, definition, published_by) VALUES ($1, $2, $3, $4)",
        &[&id, &version, &draft, &staff_id],
    )
    .await?;
    let capacity = def
        .settings
        .capacity
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX));
    let freed: &[&str] = &Status::PLACE_FREED;
    let updated = tx
        .execute(
            "WITH n AS (SELECT count(*)::int AS n FROM submissions WHERE form_id = $1 AND status <> ALL($4))
             UPDATE forms SET current_version = $2, capacity = $3, accepted_count = (SELECT n FROM n)
              WHERE id = $1 AND ($3::int IS NULL OR (SELECT n FROM n) <= $3)",
            &[&id, &version, &capacity, &freed],
        )
        .await?;
    if updated == 0 {
        return Err(AppError::BadRequest(
            "定員を、既に受け付けた件数より少なくすることはできません。".into(),
        ));
    }
    super::places::recount(&tx, cipher, id, &def, freed).await?;
    audit::append(
        &tx,
        actor,
        "form.publish",
        &format!("form:{id}"),
        if retention == previous_retention {
            serde_json::json!({ "version": version })
        } else {
            serde_json::json!({
                "version": version,
                "retention_years": retention,
                "previous_retention_years": previous_retention,
            })
        },
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

/// Whether the form's intake is stopped (受付停止).
pub async fn is_closed(db: &tokio_postgres::Client, id: i64) -> Result<bool, AppError> {
    Ok(db
        .query_opt("SELECT closed FROM forms WHERE id = $1", &[&id])
        .await?
        .is_some_and(|r| r.get(0)))
}

/// Stops or reopens acceptance, with its `form.close` / `form.reopen` entry in the
/// operation log in the same transaction.
pub async fn set_closed(
    db: &mut Client,
    id: i64,
    closed: bool,
    actor: &Actor,
) -> Result<(), AppError> {
    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE forms SET closed = $2 WHERE id = $1",
        &[&id, &closed],
    )
    .await?;
    audit::append(
        &tx,
        actor,
        if closed { "form.close" } else { "form.reopen" },
        &format!("form:{id}"),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn availability(
    settings: &FormSettings,
    closed: bool,
    accepted: i32,
    capacity: Option<i32>,
    now: OffsetDateTime,
) -> Availability {
    if closed {
        Availability::Closed
    } else if settings.opens_at.is_some_and(|o| now < o) {
        Availability::NotYetOpen
    } else if settings.closes_at.is_some_and(|c| now >= c) {
        Availability::Ended
    } else if capacity.is_some_and(|c| accepted >= c) {
        Availability::Full
    } else {
        Availability::Open
    }
}

/// Published versions are immutable, so their parsed definitions are kept in
/// memory, shared by every municipality of the process and bounded by weight
/// (`kept`): a form page or submit reads only the form's row, not its definition.
pub fn definitions() -> &'static kept::Definitions {
    static KEPT: std::sync::OnceLock<kept::Definitions> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| kept::Definitions::new(kept::BUDGET_BYTES))
}

/// Drops the kept definitions of every tenant `keep` refuses (suspended, leaving or
/// erased municipalities: nothing of theirs stays in memory).
pub fn forget_definitions(keep: impl Fn(&Uuid) -> bool) {
    definitions().retain(keep);
}

/// The 保存期間 (years) of a form's published version, if it sets one.
pub async fn current_retention(
    db: &tokio_postgres::Client,
    form_id: i64,
) -> Result<Option<u8>, AppError> {
    let years: Option<i32> = db
        .query_opt(
            "SELECT (v.definition->'settings'->>'retention_years')::int
               FROM forms f JOIN form_versions v ON v.form_id = f.id AND v.version = f.current_version
              WHERE f.id = $1 AND jsonb_typeof(v.definition->'settings'->'retention_years') = 'number'",
            &[&form_id],
        )
        .await?
        .map(|r| r.get(0));
    Ok(years.and_then(|y| u8::try_from(y).ok()))
}

/// How many of `tenant`'s published definitions are kept in memory.
pub fn cached_definitions(tenant: &Uuid) -> usize {
    definitions().count(tenant)
}

/// A published form's row by its public id (its definition is cached), with the
/// contact citizens see with it (kept on the row by tenant migration V31).
pub const PUBLISHED_SQL: &str =
    "SELECT id, public_id, current_version, closed, accepted_count, capacity, contact_name, contact
   FROM forms WHERE public_id = $1 AND current_version IS NOT NULL";

/// The published version of a form of `tenant` by its public id.
pub async fn published(
    tenant: Uuid,
    db: &deadpool_postgres::ClientWrapper,
    public_id: &str,
) -> Result<Published, AppError> {
    let stmt = db.prepare_cached(PUBLISHED_SQL).await?;
    let r = db
        .query_opt(&stmt, &[&public_id])
        .await?
        .ok_or(AppError::NotFound)?;
    let (id, version): (i64, i32) = (r.get(0), r.get(2));
    let def = match definitions().get(&(tenant, id, version)) {
        Some(d) => d,
        None => {
            let stmt = db
                .prepare_cached(
                    "SELECT definition, octet_length(definition::text)::int8
                       FROM form_versions WHERE form_id = $1 AND version = $2",
                )
                .await?;
            let v = db
                .query_opt(&stmt, &[&id, &version])
                .await?
                .ok_or(AppError::NotFound)?;
            let d = Arc::new(parse_def(v.get(0))?);
            let bytes: i64 = v.get(1);
            definitions().insert(
                (tenant, id, version),
                Arc::clone(&d),
                u64::try_from(bytes).unwrap_or(u64::MAX),
            );
            d
        }
    };
    let availability = availability(
        &def.settings,
        r.get(3),
        r.get(4),
        r.get(5),
        OffsetDateTime::now_utc(),
    );
    let places = if def.has_limits() {
        super::places::now(&**db, id).await?
    } else {
        Vec::new()
    };
    Ok(Published {
        id,
        public_id: r.get(1),
        version,
        def,
        availability,
        capacity: r.get(5),
        places,
        contact: Contact::of(r.get(6), r.get(7)),
    })
}

/// A published version as the form's 公開履歴 lists it.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i32,
    pub title: String,
    pub published_at: OffsetDateTime,
    /// The staff member who published it; `None` when an operator imported it.
    pub published_by: Option<String>,
}

/// Every published version of a form, newest first.
pub async fn versions(db: &Client, form_id: i64) -> Result<Vec<VersionRow>, AppError> {
    Ok(db
        .query(
            "SELECT v.version, v.title, v.published_at, coalesce(nullif(s.display_name, ''), s.email)
               FROM form_versions v LEFT JOIN staff s ON s.id = v.published_by
              WHERE v.form_id = $1 ORDER BY v.version DESC",
            &[&form_id],
        )
        .await?
        .into_iter()
        .map(|r| VersionRow {
            version: r.get(0),
            title: r.get(1),
            published_at: r.get(2),
            published_by: r.get(3),
        })
        .collect())
}

/// A specific version (what a submission was made against).
pub async fn version(db: &Client, form_id: i64, version: i32) -> Result<FormDefinition, AppError> {
    let r = db
        .query_opt(
            "SELECT definition FROM form_versions WHERE form_id = $1 AND version = $2",
            &[&form_id, &version],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    parse_def(r.get(0))
}

/// A form open now or opening later, for the home page.
#[derive(Debug, Clone)]
pub struct OpenForm {
    pub public_id: String,
    pub title: String,
    pub department: String,
    /// When it opens, for one not open yet (受付開始前); `None` when open now.
    pub opens_at: Option<OffsetDateTime>,
}

/// The forms open now or not yet through `zone`, by department (name order), then as
/// created.
/// Only each version's title and settings are read (kept beside its definition by
/// tenant migration V32), not its fields.
pub async fn open_forms(
    db: &deadpool_postgres::ClientWrapper,
    zone: crate::front::conn::Zone,
) -> Result<Vec<OpenForm>, AppError> {
    let stmt = db
        .prepare_cached(
            "SELECT f.public_id, v.title, v.settings, f.closed, f.accepted_count, f.capacity, d.name
               FROM forms f JOIN form_versions v ON v.form_id = f.id AND v.version = f.current_version
               JOIN departments d ON d.id = f.department_id
              WHERE NOT f.closed ORDER BY d.name, f.id",
        )
        .await?;
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for r in db.query(&stmt, &[]).await? {
        let settings: FormSettings = r
            .try_get::<_, Option<tokio_postgres::types::Json<FormSettings>>>(2)
            .map_err(|e| {
                AppError::Internal(anyhow::anyhow!("stored form settings unreadable: {e}"))
            })?
            .map(|j| j.0)
            .unwrap_or_default();
        let opens_at = match availability(&settings, r.get(3), r.get(4), r.get(5), now) {
            Availability::Open => None,
            Availability::NotYetOpen => settings.opens_at,
            _ => continue,
        };
        if settings.published_in(zone) {
            out.push(OpenForm {
                public_id: r.get(0),
                title: r.get::<_, Option<String>>(1).unwrap_or_default(),
                department: r.get(6),
                opens_at,
            });
        }
    }
    Ok(out)
}

pub async fn set_summary_field(db: &Client, id: i64, field: Option<&str>) -> Result<(), AppError> {
    db.execute(
        "UPDATE forms SET summary_field = $2 WHERE id = $1",
        &[&id, &field],
    )
    .await?;
    Ok(())
}

/// Form ids and titles of the given departments (`None`: all), for pickers.
pub async fn titles(
    db: &deadpool_postgres::ClientWrapper,
    departments: Option<&[i64]>,
) -> Result<Vec<(i64, String)>, AppError> {
    let rows = match departments {
        None => {
            let stmt = db
                .prepare_cached("SELECT id, draft->>'title' FROM forms ORDER BY id DESC")
                .await?;
            db.query(&stmt, &[]).await?
        }
        Some(ids) => {
            let stmt = db
                .prepare_cached("SELECT id, draft->>'title' FROM forms WHERE department_id = ANY($1) ORDER BY id DESC")
                .await?;
            db.query(&stmt, &[&ids]).await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect())
}
