//! Sign-in, account setup, sign-out, and the administrators' staff and department
//! screens.

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio_postgres::Client;

use super::{
    hash_password, new_totp_secret, now_unix, otpauth_uri, password_problem, qr_svg, totp_base32,
    totp_from_base32, totp_step, verify_password, void_links_issued_by, void_setup_links, Role,
    StaffUser, TotpRule, ABSOLUTE_SECS, FREE_ATTEMPTS, SESSION_COOKIE,
};
use crate::crypto::{random_token, FieldCipher, FieldRef};
use crate::error::AppError;
use crate::tenant::admin::Nav;
use crate::tenant::audit::{self, Actor};
use crate::tenant::http::{see_other, set_cookie, token_hash, FormData};
use crate::tenant::TenantCtx;
use crate::web::render;

/// Setup links expire after this.
pub const SETUP_LINK_HOURS: i64 = 24;

/// A hash that takes as long to check as a real one, for unknown accounts, so the
/// answer time does not tell which e-mail addresses have an account.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_token(16)).unwrap_or_default())
}

/// Creates a staff member (and the department, when named and new) and returns the
/// one-time setup token. Used by the admin screen and by `madoguchi tenant add-staff`.
pub async fn create_staff(
    db: &mut Client,
    actor: &Actor,
    email: &str,
    display_name: &str,
    role: Role,
    department: Option<&str>,
) -> Result<(i64, String), AppError> {
    let email = crate::ja::nfkc(email.trim()).to_lowercase();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(AppError::BadRequest(format!(
            "メールアドレス「{email}」の形式が正しくありません"
        )));
    }
    let tx = db.transaction().await?;
    let dept = match department.map(str::trim).filter(|d| !d.is_empty()) {
        Some(name) => Some(ensure_department(&tx, name).await?),
        None => None,
    };
    let row = tx
        .query_opt(
            "INSERT INTO staff (email, display_name, role, department_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (email) DO NOTHING RETURNING id",
            &[&email, &display_name, &role.as_str(), &dept],
        )
        .await?;
    let Some(row) = row else {
        return Err(AppError::BadRequest(format!(
            "メールアドレス「{email}」の職員は既に登録されています"
        )));
    };
    let id: i64 = row.get(0);
    let issuer = match actor {
        Actor::Staff { id, .. } => Some(*id),
        _ => None,
    };
    let token = new_setup_token(&tx, id, issuer).await?;
    audit::append(
        &tx,
        actor,
        "staff.create",
        &id.to_string(),
        serde_json::json!({ "role": role.as_str(), "department": dept }),
    )
    .await?;
    tx.commit().await?;
    Ok((id, token))
}

/// The id of the department with this name, created if new.
pub async fn ensure_department(
    db: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<i64, AppError> {
    // Two callers adding the same new name at once: the second's insert waits for
    // the first and does nothing, and its statement's snapshot, taken before the
    // first committed, does not see the row either. The next statement does.
    for _ in 0..2 {
        let row = db
            .query_opt(
                "WITH ins AS (INSERT INTO departments (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id)
                 SELECT id FROM ins UNION ALL SELECT id FROM departments WHERE name = $1 LIMIT 1",
                &[&name],
            )
            .await?;
        if let Some(row) = row {
            return Ok(row.get(0));
        }
    }
    Err(AppError::Internal(anyhow::anyhow!(
        "department neither added nor found"
    )))
}

/// A new setup link for an existing staff member (e.g. a forgotten password),
/// shown to `issued_by` (None: an operator).
pub async fn new_setup_token(
    db: &impl tokio_postgres::GenericClient,
    staff_id: i64,
    issued_by: Option<i64>,
) -> Result<String, AppError> {
    let token = random_token(32);
    // A new link replaces any earlier one not yet used: only the newest works.
    void_setup_links(db, staff_id).await?;
    db.execute(
        "INSERT INTO staff_setup_tokens (token_hash, staff_id, expires_at, issued_by) VALUES ($1, $2, now() + make_interval(hours => $3), $4)",
        &[&token_hash(&token), &staff_id, &(SETUP_LINK_HOURS as i32), &issued_by],
    )
    .await?;
    Ok(token)
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    site: String,
    nav: Option<Nav>,
    email: String,
    error: Option<String>,
}

pub async fn login_form(ctx: TenantCtx) -> Response {
    render(
        StatusCode::OK,
        &LoginPage {
            site: ctx.name.to_string(),
            nav: None,
            email: String::new(),
            error: None,
        },
    )
}

pub async fn login(ctx: TenantCtx, form: FormData) -> Result<Response, AppError> {
    // A place per address taken before anything is checked; kept only when wrong.
    let attempt = match ctx.sign_ins.begin(ctx.id, ctx.client_ip) {
        Ok(a) => a,
        Err(too_many) => return Ok(*too_many),
    };
    let email = crate::ja::nfkc(form.get("email").trim()).to_lowercase();
    let fail = |msg: &str| {
        render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                site: ctx.name.to_string(),
                nav: None,
                email: email.clone(),
                error: Some(msg.to_owned()),
            },
        )
    };
    const GENERIC: &str = "メールアドレス、パスワードまたは確認コードが正しくありません。";
    // Where each attempt came from, for the operation log (an auditor following a
    // sign-in needs it as much as for a refused access).
    let from = serde_json::json!({
        "ip": ctx.client_ip.map(|i| i.to_string()),
        "zone": ctx.zone.as_str(),
    });
    let mut db = ctx.db().await?;
    let row = db
        .query_opt(
            "SELECT id, password_hash, role, totp_secret, totp_enabled, totp_last_step, disabled,
                    ceil(extract(epoch FROM locked_until - now()))::bigint, coalesce((SELECT staff_totp FROM settings), 'all')
               FROM staff WHERE email = $1",
            &[&email],
        )
        .await?;
    let Some(row) = row else {
        let _ = verify_password(form.get("password"), dummy_hash());
        attempt.was_wrong();
        // What was typed is kept as long as an address can be (254), no longer: a
        // password typed into the wrong box is not kept for years in full.
        let typed: String = email.chars().take(254).collect();
        audit::record(
            &mut db,
            &Actor::Anonymous,
            "signin.failure",
            &typed,
            serde_json::json!({ "reason": "unknown account", "from": from }),
        )
        .await?;
        return Ok(fail(GENERIC));
    };
    let id: i64 = row.get(0);
    let hash: Option<String> = row.get(1);
    let locked_secs: Option<i64> = row.get(7);
    if let Some(secs) = locked_secs.filter(|s| *s > 0) {
        attempt.was_wrong();
        let minutes = (secs + 59) / 60;
        signin_failure(&mut db, id, &email, "locked", &from).await?;
        return Ok(fail(&format!("サインインの失敗が続いたため、一時的にロックしています。{minutes}分後にもう一度お試しください。")));
    }
    let disabled: bool = row.get(6);
    // An account whose setup is not finished has no password: checked against the
    // dummy all the same, so that it takes as long to refuse as any other.
    let password_ok = verify_password(
        form.get("password"),
        hash.as_deref().unwrap_or(dummy_hash()),
    ) && hash.is_some()
        && !disabled;
    let role = Role::parse(row.get::<_, &str>(2)).unwrap_or(Role::Viewer);
    let totp_enabled: bool = row.get(4);
    let mut step = None;
    if password_ok && totp_enabled {
        let secret: Option<Vec<u8>> = row.get(3);
        let secret = secret.map(|s| {
            ctx.cipher().decrypt(
                &FieldRef {
                    table: "staff",
                    column: "totp_secret",
                    row_id: &id.to_string(),
                },
                &s,
            )
        });
        if let Some(Ok(secret)) = secret {
            step = totp_step(&secret, form.get("code"), now_unix())
                .filter(|s| *s > row.get::<_, i64>(5));
        }
    }
    let ok = password_ok && (!totp_enabled || step.is_some());
    if !ok {
        attempt.was_wrong();
        db.execute(
            "UPDATE staff SET failed_attempts = failed_attempts + 1,
                    locked_until = CASE WHEN failed_attempts + 1 >= $2
                        THEN now() + least(interval '30 seconds' * power(2, failed_attempts + 1 - $2), interval '1 hour') END
              WHERE id = $1",
            &[&id, &FREE_ATTEMPTS],
        )
        .await?;
        let reason = if password_ok {
            "wrong code"
        } else {
            "wrong password"
        };
        signin_failure(&mut db, id, &email, reason, &from).await?;
        return Ok(fail(GENERIC));
    }
    // The password (and code) were right: not a guess.
    attempt.was_right();
    if !totp_enabled {
        if role.needs_totp() {
            return Ok(fail("この権限では二要素認証（確認コード）の設定が必要です。管理者に設定用リンクの再発行を依頼してください。"));
        }
        if TotpRule::parse(row.get(8)) == TotpRule::All {
            return Ok(fail("この団体では、すべての職員に二要素認証（確認コード）が必要です。管理者に設定用リンクの再発行を依頼し、認証アプリを設定してください。"));
        }
    }
    // The code's time step is taken only if no sign-in took it (or a later one)
    // first: two sign-ins racing with one code get one session (a code is accepted
    // once, SECURITY.md).
    let taken = db
        .execute(
            "UPDATE staff SET failed_attempts = 0, locked_until = NULL,
                    totp_last_step = coalesce($2, totp_last_step)
              WHERE id = $1 AND ($2::bigint IS NULL OR totp_last_step < $2)",
            &[&id, &step],
        )
        .await?;
    if taken == 0 {
        signin_failure(&mut db, id, &email, "code used", &from).await?;
        return Ok(fail(GENERIC));
    }
    audit::record(
        &mut db,
        &Actor::Staff {
            id,
            email: email.clone(),
        },
        "signin.success",
        &email,
        serde_json::json!({ "from": from }),
    )
    .await?;
    start_session(&ctx, &db, id).await
}

/// A refused sign-in of a known account, in the operation log with why.
async fn signin_failure(
    db: &mut Client,
    id: i64,
    email: &str,
    reason: &str,
    from: &serde_json::Value,
) -> Result<(), AppError> {
    audit::record(
        db,
        &Actor::Staff {
            id,
            email: email.to_owned(),
        },
        "signin.failure",
        email,
        serde_json::json!({ "reason": reason, "from": from }),
    )
    .await
}

async fn start_session(ctx: &TenantCtx, db: &Client, staff_id: i64) -> Result<Response, AppError> {
    let token = random_token(32);
    db.execute(
        "INSERT INTO staff_sessions (id_hash, staff_id, csrf_token, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        &[&token_hash(&token), &staff_id, &random_token(24), &(ABSOLUTE_SECS as f64)],
    )
    .await?;
    let mut resp = see_other("/admin/forms");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, "/admin", None, ctx.secure_cookies),
    );
    Ok(resp)
}

fn clear_session_cookie(ctx: &TenantCtx) -> HeaderValue {
    set_cookie(SESSION_COOKIE, "", "/admin", Some(0), ctx.secure_cookies)
}

pub async fn logout(ctx: TenantCtx, user: StaffUser, form: FormData) -> Result<Response, AppError> {
    user.check_csrf(&form)?;
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let everywhere = form.get("everywhere") == "yes";
    if everywhere {
        tx.execute(
            "DELETE FROM staff_sessions WHERE staff_id = $1",
            &[&user.id],
        )
        .await?;
    } else {
        tx.execute(
            "DELETE FROM staff_sessions WHERE id_hash = $1",
            &[&user.session_hash()],
        )
        .await?;
    }
    audit::append(
        &tx,
        &user.actor(),
        "signout",
        "",
        serde_json::json!({ "everywhere": everywhere }),
    )
    .await?;
    tx.commit().await?;
    let mut resp = see_other("/admin/login");
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie(&ctx));
    Ok(resp)
}

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    site: String,
    nav: Option<Nav>,
    email: String,
    role: String,
    totp_required: bool,
    secret_b32: String,
    otpauth: String,
    qr: String,
    errors: Vec<String>,
}

struct SetupTarget {
    staff_id: i64,
    email: String,
    role: Role,
    /// Whether this account must enrol TOTP (its role, or the municipality's rule).
    totp_required: bool,
}

async fn setup_target(db: &Client, token: &str) -> Result<SetupTarget, AppError> {
    let row = db
        .query_opt(
            "SELECT s.id, s.email, s.role, coalesce((SELECT staff_totp FROM settings), 'all')
               FROM staff_setup_tokens t JOIN staff s ON s.id = t.staff_id
              WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() AND NOT s.disabled",
            &[&token_hash(token)],
        )
        .await?;
    let Some(r) = row else {
        return Err(AppError::BadRequest(
            "この設定用リンクは無効か、有効期限（24時間）が切れています。管理者に再発行を依頼してください。".into(),
        ));
    };
    let role = Role::parse(r.get::<_, &str>(2)).unwrap_or(Role::Viewer);
    Ok(SetupTarget {
        staff_id: r.get(0),
        email: r.get(1),
        role,
        totp_required: TotpRule::parse(r.get(3)).requires(role),
    })
}

fn setup_page(ctx: &TenantCtx, t: &SetupTarget, secret: &[u8], errors: Vec<String>) -> Response {
    let issuer = format!("Madoguchi {}", ctx.name);
    let otpauth = otpauth_uri(secret, &issuer, &t.email);
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(
        status,
        &SetupPage {
            site: ctx.name.to_string(),
            nav: None,
            email: t.email.clone(),
            role: t.role.label().to_owned(),
            totp_required: t.totp_required,
            secret_b32: totp_base32(secret),
            qr: qr_svg(&otpauth).unwrap_or_default(),
            otpauth,
            errors,
        },
    )
}

pub async fn setup_form(ctx: TenantCtx, Path(token): Path<String>) -> Result<Response, AppError> {
    let db = ctx.db().await?;
    let target = setup_target(&db, &token).await?;
    Ok(setup_page(&ctx, &target, &new_totp_secret(), Vec::new()))
}

pub async fn setup(
    ctx: TenantCtx,
    Path(token): Path<String>,
    form: FormData,
) -> Result<Response, AppError> {
    // Only a link that is not (or no longer) valid counts against the address.
    let attempt = match ctx.setups.begin(ctx.id, ctx.client_ip) {
        Ok(a) => a,
        Err(too_many) => return Ok(*too_many),
    };
    let mut db = ctx.db().await?;
    let target = match setup_target(&db, &token).await {
        Ok(t) => t,
        Err(e) => {
            if matches!(e, AppError::BadRequest(_)) {
                attempt.was_wrong();
            }
            return Err(e);
        }
    };
    attempt.was_right();
    let secret = totp_from_base32(form.get("totp_secret")).unwrap_or_else(new_totp_secret);
    let mut errors = Vec::new();
    let password = form.get("password");
    if let Some(p) = password_problem(password, &target.email) {
        errors.push(p);
    } else if password != form.get("password2") {
        errors.push("確認用のパスワードが一致しません".into());
    }
    let code = form.get("code").trim();
    let wants_totp = target.totp_required || !code.is_empty();
    let step = if wants_totp {
        totp_step(&secret, code, now_unix())
    } else {
        None
    };
    if wants_totp && step.is_none() {
        errors.push(
            "確認コードが正しくありません。認証アプリに表示されている6桁の数字を入力してください"
                .into(),
        );
    }
    if !errors.is_empty() {
        return Ok(setup_page(&ctx, &target, &secret, errors));
    }
    let hash = hash_password(password)?;
    let encrypted = if wants_totp {
        Some(encrypt_totp(ctx.cipher(), target.staff_id, &secret)?)
    } else {
        None
    };
    let tx = db.transaction().await?;
    let used = tx
        .execute("UPDATE staff_setup_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL", &[&token_hash(&token)])
        .await?;
    if used != 1 {
        return Err(AppError::BadRequest(
            "この設定用リンクは既に使用されています。".into(),
        ));
    }
    tx.execute(
        "UPDATE staff SET password_hash = $2, totp_secret = $3, totp_enabled = $4, totp_last_step = coalesce($5::bigint, 0),
                failed_attempts = 0, locked_until = NULL, updated_at = now() WHERE id = $1",
        &[&target.staff_id, &hash, &encrypted, &wants_totp, &step],
    )
    .await?;
    // A new password ends every earlier session.
    tx.execute(
        "DELETE FROM staff_sessions WHERE staff_id = $1",
        &[&target.staff_id],
    )
    .await?;
    tx.commit().await?;
    audit::record(
        &mut db,
        &Actor::Staff {
            id: target.staff_id,
            email: target.email.clone(),
        },
        "staff.setup",
        &target.email,
        serde_json::json!({ "totp": wants_totp }),
    )
    .await?;
    start_session(&ctx, &db, target.staff_id).await
}

pub fn encrypt_totp(
    cipher: &FieldCipher,
    staff_id: i64,
    secret: &[u8],
) -> Result<Vec<u8>, AppError> {
    cipher
        .encrypt(
            &FieldRef {
                table: "staff",
                column: "totp_secret",
                row_id: &staff_id.to_string(),
            },
            secret,
        )
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encrypting a TOTP secret: {e}")))
}

pub struct StaffRow {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub department: String,
    pub department_id: Option<i64>,
    pub disabled: bool,
    pub totp: bool,
    pub set_up: bool,
}

impl StaffRow {
    pub fn in_department(&self, id: impl std::borrow::Borrow<i64>) -> bool {
        self.department_id == Some(*id.borrow())
    }
}

pub struct Department {
    pub id: i64,
    pub name: String,
    /// 問い合わせ先, shown to citizens with the department's forms.
    pub contact: String,
}

pub async fn departments(db: &Client) -> Result<Vec<Department>, AppError> {
    let rows = db
        .query(
            "SELECT id, name, contact FROM departments ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Department {
            id: r.get(0),
            name: r.get(1),
            contact: r.get(2),
        })
        .collect())
}

/// The longest 問い合わせ先, in characters.
pub const MAX_CONTACT: usize = 500;

#[derive(Template)]
#[template(path = "admin/staff.html")]
struct StaffPage {
    site: String,
    nav: Option<Nav>,
    staff: Vec<StaffRow>,
    departments: Vec<Department>,
    roles: Vec<(&'static str, &'static str)>,
    new_link: Option<(String, String)>,
    error: Option<String>,
    csrf: String,
    /// Administrators see every account and the departments; a 所属管理者 their own
    /// department's accounts below administrator.
    is_admin: bool,
    max_contact: usize,
    /// The municipality's 代表の問い合わせ先 (administrators only).
    site_contact: String,
    /// The home page's お知らせ and its last day (administrators only).
    site_notice: String,
    notice_until: String,
}

async fn staff_page(
    ctx: &TenantCtx,
    user: &StaffUser,
    new_link: Option<(String, String)>,
    error: Option<String>,
) -> Result<Response, AppError> {
    user.require_staff_manager()?;
    let db = ctx.db().await?;
    let managed = user.managed_department();
    let rows = db
        .query(
            "SELECT s.id, s.email, s.display_name, s.role, coalesce(d.name, ''), s.department_id, s.disabled, s.totp_enabled,
                    s.password_hash IS NOT NULL
               FROM staff s LEFT JOIN departments d ON d.id = s.department_id
              WHERE $1::bigint IS NULL OR (s.department_id = $1 AND s.role <> 'admin')
              ORDER BY s.email",
            &[&managed],
        )
        .await?;
    let staff = rows
        .iter()
        .map(|r| StaffRow {
            id: r.get(0),
            email: r.get(1),
            display_name: r.get(2),
            role: Role::parse(r.get::<_, &str>(3)).unwrap_or(Role::Viewer),
            department: r.get(4),
            department_id: r.get(5),
            disabled: r.get(6),
            totp: r.get(7),
            set_up: r.get(8),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    // The municipality's own settings, for administrators.
    let settings: (String, String, String) = if user.is_admin() {
        db.query_opt("SELECT contact, notice, notice_until FROM settings", &[])
            .await?
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get::<_, Option<time::Date>>(2)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                )
            })
            .unwrap_or_default()
    } else {
        Default::default()
    };
    Ok(render(
        status,
        &StaffPage {
            max_contact: MAX_CONTACT,
            site_contact: settings.0,
            site_notice: settings.1,
            notice_until: settings.2,
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "staff")),
            staff,
            departments: departments(&db)
                .await?
                .into_iter()
                .filter(|d| managed.is_none_or(|m| m == d.id))
                .collect(),
            roles: Role::ALL
                .iter()
                .filter(|r| user.may_manage(**r, user.department_id))
                .map(|r| (r.as_str(), r.label()))
                .collect(),
            new_link,
            error,
            csrf: user.csrf.clone(),
            is_admin: user.is_admin(),
        },
    ))
}

pub async fn staff_list(ctx: TenantCtx, user: StaffUser) -> Result<Response, AppError> {
    user.require_staff_manager()?;
    staff_page(&ctx, &user, None, None).await
}

fn setup_url(host: &str, token: &str) -> String {
    format!("{host}/admin/setup/{token}")
}

pub async fn staff_add(
    ctx: TenantCtx,
    user: StaffUser,
    form: FormData,
) -> Result<Response, AppError> {
    user.require_staff_manager()?;
    user.check_csrf(&form)?;
    let Some(role) = Role::parse(form.get("role")) else {
        return staff_page(&ctx, &user, None, Some("権限を選択してください".into())).await;
    };
    let dept_id: Option<i64> = form.get("department").parse().ok();
    let mut db = ctx.db().await?;
    let dept_name: Option<String> = match dept_id {
        Some(id) => db
            .query_opt("SELECT name FROM departments WHERE id = $1", &[&id])
            .await?
            .map(|r| r.get(0)),
        None => None,
    };
    // A 所属管理者 adds accounts to their own department only, below administrator
    // (the page offers nothing else).
    if !user.may_manage(role, dept_id) {
        return Err(AppError::Forbidden);
    }
    if role != Role::Admin && dept_name.is_none() {
        return staff_page(
            &ctx,
            &user,
            None,
            Some("管理者以外は所属を選択してください".into()),
        )
        .await;
    }
    match create_staff(
        &mut db,
        &user.actor(),
        form.get("email"),
        form.get("display_name").trim(),
        role,
        dept_name.as_deref(),
    )
    .await
    {
        Ok((id, token)) => {
            let email: String = db
                .query_one("SELECT email FROM staff WHERE id = $1", &[&id])
                .await?
                .get(0);
            drop(db);
            staff_page(
                &ctx,
                &user,
                Some((email, setup_url(&ctx.base_url, &token))),
                None,
            )
            .await
        }
        Err(AppError::BadRequest(msg)) => {
            drop(db);
            staff_page(&ctx, &user, None, Some(msg)).await
        }
        Err(e) => Err(e),
    }
}

pub async fn staff_update(
    ctx: TenantCtx,
    user: StaffUser,
    Path(id): Path<i64>,
    form: FormData,
) -> Result<Response, AppError> {
    user.require_staff_manager()?;
    user.check_csrf(&form)?;
    let mut db = ctx.db().await?;
    if form.get("action") == "reset" {
        let client: &mut tokio_postgres::Client = &mut db;
        let tx = client.transaction().await?;
        let email = managed_account(&tx, &user, id).await?.email;
        let token = new_setup_token(&tx, id, Some(user.id)).await?;
        audit::append(
            &tx,
            &user.actor(),
            "staff.setup_link",
            &id.to_string(),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        drop(db);
        return staff_page(
            &ctx,
            &user,
            Some((email, setup_url(&ctx.base_url, &token))),
            None,
        )
        .await;
    }
    let role = Role::parse(form.get("role"))
        .ok_or_else(|| AppError::BadRequest("権限を選択してください".into()))?;
    let dept: Option<i64> = form.get("department").parse().ok();
    let disabled = form.get("disabled") == "yes";
    let dept_exists = match dept {
        Some(d) => db
            .query_opt("SELECT 1 FROM departments WHERE id = $1", &[&d])
            .await?
            .is_some(),
        None => false,
    };
    // A department that exists, or none for an administrator.
    if !(dept_exists || dept.is_none() && role == Role::Admin) {
        drop(db);
        return staff_page(
            &ctx,
            &user,
            None,
            Some("管理者以外は所属を選択してください（一覧にある所属）".into()),
        )
        .await;
    }
    if id == user.id && (role != Role::Admin || disabled) {
        drop(db);
        let why = if user.is_admin() {
            "自分自身の管理者権限は外せません"
        } else {
            "自分自身の権限・所属・状態は変更できません。管理者に依頼してください"
        };
        return staff_page(&ctx, &user, None, Some(why.into())).await;
    }
    // A 所属管理者 keeps the account in their department, below administrator (the
    // page offers nothing else).
    if !user.may_manage(role, dept) {
        return Err(AppError::Forbidden);
    }
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    // The administrators, locked: two admins demoting each other at the same moment
    // would otherwise leave the city with none.
    tx.query(
        "SELECT id FROM staff WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE",
        &[],
    )
    .await?;
    let was = managed_account(&tx, &user, id).await?;
    // A link issued for the account as it was (by a 所属管理者, say) must not open it
    // as it becomes: an administrator, or a member of another department.
    if (was.role, was.department_id, was.disabled) != (role, dept, disabled) {
        void_setup_links(&tx, id).await?;
        // And the links this account was shown as a manager: they were for managing
        // the accounts it may manage no longer.
        if matches!(was.role, Role::Admin | Role::DeptManager) {
            void_links_issued_by(&tx, id).await?;
        }
    }
    let n = tx
        .execute(
            "UPDATE staff SET role = $2, department_id = $3, disabled = $4, updated_at = now() WHERE id = $1",
            &[&id, &role.as_str(), &dept, &disabled],
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound);
    }
    let admins: i64 = tx
        .query_one(
            "SELECT count(*) FROM staff WHERE role = 'admin' AND NOT disabled",
            &[],
        )
        .await?
        .get(0);
    if admins == 0 {
        drop(tx);
        drop(db);
        return staff_page(
            &ctx,
            &user,
            None,
            Some("管理者が一人もいなくなるため、この変更はできません".into()),
        )
        .await;
    }
    if disabled {
        tx.execute("DELETE FROM staff_sessions WHERE staff_id = $1", &[&id])
            .await?;
    }
    // Who changed whose role, department or access, in the same transaction.
    audit::append(
        &tx,
        &user.actor(),
        "staff.update",
        &id.to_string(),
        serde_json::json!({ "role": role.as_str(), "department": dept, "disabled": disabled }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/staff"))
}

/// An account as it is.
struct Account {
    email: String,
    role: Role,
    department_id: Option<i64>,
    disabled: bool,
}

/// Account `id`, locked for the transaction, if `user` manages it as it is now; else
/// not found (an account outside a 所属管理者's department is not theirs to see).
async fn managed_account(
    tx: &tokio_postgres::Transaction<'_>,
    user: &StaffUser,
    id: i64,
) -> Result<Account, AppError> {
    let row = tx
        .query_opt(
            "SELECT email, role, department_id, disabled FROM staff WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let account = Account {
        email: row.get(0),
        role: Role::parse(row.get::<_, &str>(1)).unwrap_or(Role::Admin),
        department_id: row.get(2),
        disabled: row.get(3),
    };
    if user.may_manage(account.role, account.department_id) {
        Ok(account)
    } else {
        Err(AppError::NotFound)
    }
}

/// A department's 問い合わせ先 (a 管理者, or the department's own 所属管理者): shown
/// to citizens with its forms, on the completion and status pages, in the citizens'
/// guide and in their mails; empty: none shown.
pub async fn department_contact(
    ctx: TenantCtx,
    user: StaffUser,
    axum::extract::Path(id): axum::extract::Path<i64>,
    form: FormData,
) -> Result<Response, AppError> {
    if !(user.is_admin()
        || user.role == crate::tenant::staff::Role::DeptManager && user.department_id == Some(id))
    {
        return Err(AppError::Forbidden);
    }
    user.check_csrf(&form)?;
    let text = match short_text(&form, "contact", "問い合わせ先") {
        Ok(t) => t,
        Err(e) => return staff_page(&ctx, &user, None, Some(e)).await,
    };
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let name: String = tx
        .query_opt(
            "UPDATE departments SET contact = $2 WHERE id = $1 RETURNING name",
            &[&id, &text],
        )
        .await?
        .ok_or(AppError::NotFound)?
        .get(0);
    audit::append(
        &tx,
        &user.actor(),
        "department.contact",
        &name,
        serde_json::json!({ "length": text.chars().count() }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/staff"))
}

/// A text for citizens (問い合わせ先, お知らせ: `what`) as typed in `input`, trimmed,
/// line breaks as `\n`, at most [`MAX_CONTACT`] characters; or why it is refused.
fn short_text(form: &FormData, input: &str, what: &str) -> Result<String, String> {
    let text = form.get(input).trim().replace("\r\n", "\n");
    let n = text.chars().count();
    if n > MAX_CONTACT {
        return Err(format!(
            "{what}は{MAX_CONTACT}文字までで入力してください（いま{n}文字）"
        ));
    }
    Ok(text)
}

/// The municipality's 代表の問い合わせ先 (a 管理者 only): shown on the home page and
/// in the citizens' guide, and wherever a department wrote no contact of its own.
pub async fn site_contact(
    ctx: TenantCtx,
    user: StaffUser,
    form: FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let text = match short_text(&form, "contact", "問い合わせ先") {
        Ok(t) => t,
        Err(e) => return staff_page(&ctx, &user, None, Some(e)).await,
    };
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE settings SET contact = $1, updated_at = now()",
            &[&text],
        )
        .await?;
    if n != 1 {
        return Err(AppError::NotFound);
    }
    audit::append(
        &tx,
        &user.actor(),
        "settings.contact",
        "代表",
        serde_json::json!({ "length": text.chars().count() }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/staff"))
}

/// The home page's お知らせ (a 管理者 only): a text of [`MAX_CONTACT`] characters,
/// shown until the end of `until` (Japan time) when given; empty: none shown.
pub async fn site_notice(
    ctx: TenantCtx,
    user: StaffUser,
    form: FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let until_text = crate::ja::nfkc(form.get("until").trim());
    let until = crate::tenant::http::date(&until_text);
    let checked = match short_text(&form, "notice", "お知らせ") {
        Ok(_) if until.is_none() && !until_text.is_empty() => Err(format!(
            "お知らせの表示終了日を「2026-12-28」の形で入力してください（いま「{}」）",
            until_text.chars().take(20).collect::<String>()
        )),
        other => other,
    };
    let text = match checked {
        Ok(t) => t,
        Err(e) => return staff_page(&ctx, &user, None, Some(e)).await,
    };
    let n = text.chars().count();
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE settings SET notice = $1, notice_until = $2, updated_at = now()",
        &[&text, &until],
    )
    .await?;
    audit::append(
        &tx,
        &user.actor(),
        "settings.notice",
        "トップページ",
        serde_json::json!({ "length": n, "until": until.map(|d| d.to_string()) }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/staff"))
}

pub async fn department_add(
    ctx: TenantCtx,
    user: StaffUser,
    form: FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&form)?;
    let name = form.get("name").trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return staff_page(
            &ctx,
            &user,
            None,
            Some("所属名を1〜100文字で入力してください".into()),
        )
        .await;
    }
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let added = tx
        .execute(
            "INSERT INTO departments (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .await?;
    if added > 0 {
        audit::append(
            &tx,
            &user.actor(),
            "department.create",
            &name,
            serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(see_other("/admin/staff"))
}
