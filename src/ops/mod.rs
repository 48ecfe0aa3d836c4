//! The operators' console on the ops listener (separate from citizens' and staff's):
//! sign-in with password and TOTP, tenants at a glance with their backups, drills,
//! traffic and pools, the control plane's actions (each in the catalog's chained
//! operation log), and erasure certificates for auditors.
//!
//! Signatures are made where the keys are: the console prepares the exact bytes, the
//! operator's browser signs them with the key file they select (WebCrypto Ed25519;
//! the key never leaves their machine), and the control plane checks the signature
//! against the registered public key.

pub mod pages;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use time::OffsetDateTime;

use crate::error::AppError;
use crate::front::AppState;
use crate::platform::Platform;
use crate::tenant::http::{cookie, same_secret, see_other, token_hash, FormData};
use crate::tenant::staff::{hash_password, password_problem, totp_step, verify_password};

pub const SESSION_COOKIE: &str = "mdg_ops";
/// Sessions end after 30 minutes without a request, and after 12 hours in any case.
const IDLE_SECS: f64 = 30.0 * 60.0;
const ABSOLUTE_SECS: f64 = 12.0 * 3600.0;
/// Failures before an account is locked (30 s, doubling up to an hour).
const MAX_FAILURES: i32 = 5;

/// What the console's handlers share.
pub struct Ops {
    pub app: AppState,
    pub platform: Platform,
}

pub type OpsState = Arc<Ops>;

/// Console sign-ins allowed at once per client address (then one every 3 s): a
/// bound on the password hashing anyone can make the server do; each account also
/// locks after [`MAX_FAILURES`].
pub const OPS_SIGN_IN_BURST: u32 = 20;

pub fn router(app: AppState, platform: Platform) -> Router<()> {
    let state = Arc::new(Ops { app, platform });
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/login",
            get(pages::login_form)
                .post(login)
                .layer(crate::front::limits::post_limit(
                    std::time::Duration::from_secs(3),
                    OPS_SIGN_IN_BURST,
                )),
        )
        .route("/logout", post(logout))
        .route("/tenants", post(pages::provision))
        .route("/tenants/{slug}/{action}", post(pages::tenant_action))
        .route(
            "/tenants/{slug}/decommission",
            get(pages::decommission_form).post(pages::decommission_submit),
        )
        .route("/sign/{id}", get(pages::sign_form).post(pages::sign))
        .route("/certificates", get(pages::certificates))
        .route("/certificates/{id}", get(pages::certificate))
        .route("/checkpoint", get(pages::checkpoint))
        .route("/log", get(pages::log))
        .route("/static/ops.js", get(ops_js))
        .route("/static/app.css", get(crate::web::stylesheet))
        .with_state(state)
}

async fn ops_js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("../web/static/ops.js"),
    )
        .into_response()
}

/// Sets an operator's console password and a new TOTP secret (wrapped by the master
/// key); returns the secret for their authenticator app.
pub async fn set_credentials(p: &Platform, id: &str, password: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(problem) = password_problem(password, id) {
        anyhow::bail!("{problem}");
    }
    let hash = hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = crate::tenant::staff::new_totp_secret();
    let wrapped = p.keys.wrap(&secret, &totp_aad(id))?;
    let c = p.catalog.client().await?;
    let n = c
        .execute(
            "UPDATE operators SET password_hash = $2, totp_wrapped = $3, totp_last_step = 0, failed_logins = 0, locked_until = NULL WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &hash, &wrapped],
        )
        .await?;
    if n == 0 {
        if let Some(r) = p
            .catalog
            .operators()
            .await?
            .into_iter()
            .find(|o| o.id == id)
            .and_then(|o| o.revoked)
        {
            return Err(crate::control::operators::refusal(id, &r));
        }
        anyhow::bail!("オペレーター {id} は登録されていません / operator {id} is not registered");
    }
    c.execute("DELETE FROM ops_sessions WHERE operator_id = $1", &[&id])
        .await?;
    Ok(secret)
}

fn totp_aad(id: &str) -> Vec<u8> {
    crate::crypto::operator_totp_aad(id)
}

/// A signed-in operator or auditor.
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: String,
    pub name: String,
    pub role: String,
    pub csrf: String,
}

impl Operator {
    pub fn is_operator(&self) -> bool {
        self.role == "operator"
    }

    /// Operators only (auditors read).
    pub fn require_operator(&self) -> Result<(), AppError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    pub fn check_csrf(&self, form: &FormData) -> Result<(), AppError> {
        if same_secret(form.get("csrf"), &self.csrf) {
            Ok(())
        } else {
            Err(AppError::Csrf)
        }
    }
}

impl FromRequestParts<OpsState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &OpsState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(see_other("/login"));
        };
        let c = state
            .platform
            .catalog
            .client()
            .await
            .map_err(|e| AppError::Internal(e).into_response())?;
        let row = c
            .query_opt(
                "WITH s AS (
                    UPDATE ops_sessions SET last_seen = now()
                     WHERE token_hash = $1 AND last_seen > now() - make_interval(secs => $2)
                       AND created_at > now() - make_interval(secs => $3)
                    RETURNING operator_id, csrf)
                 SELECT o.id, o.name, o.role, s.csrf FROM s JOIN operators o ON o.id = s.operator_id
                  WHERE o.revoked_at IS NULL",
                &[&token_hash(&token), &IDLE_SECS, &ABSOLUTE_SECS],
            )
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        match row {
            Some(r) => Ok(Operator {
                id: r.get(0),
                name: r.get(1),
                role: r.get(2),
                csrf: r.get(3),
            }),
            None => Err(see_other("/login")),
        }
    }
}

fn session_cookie(value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut s = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A real argon2id hash to check unknown ids against.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("madoguchi-no-such-operator").unwrap_or_default())
}

/// Why a sign-in was refused (never which part was wrong).
const REFUSED: &str =
    "ID、パスワードまたは確認コードが正しくありません / Wrong id, password or code";

async fn login(State(s): State<OpsState>, form: FormData) -> Result<Response, AppError> {
    let id = form.get("id").trim().to_lowercase();
    let password = form.get("password").to_owned();
    let code = form.get("code").to_owned();
    let p = &s.platform;
    let c = p.catalog.client().await?;
    let row = c
        .query_opt(
            "SELECT password_hash, totp_wrapped, totp_last_step, failed_logins, locked_until > now() FROM operators WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    let refuse = |msg: &str| pages::login_page(&id, Some(msg));
    let Some(r) = row else {
        // As slow as a real check, so unknown (or revoked) ids cannot be told apart.
        let _ = tokio::task::spawn_blocking(move || verify_password(&password, dummy_hash())).await;
        return Ok(refuse(REFUSED));
    };
    let hash: Option<String> = r.get(0);
    let wrapped: Option<Vec<u8>> = r.get(1);
    let last_step: i64 = r.get(2);
    let failures: i32 = r.get(3);
    if r.get::<_, Option<bool>>(4) == Some(true) {
        return Ok(refuse(
            "試行回数が多すぎるため、しばらくロックされています。時間をおいてから再度お試しください / Locked for a while after too many attempts",
        ));
    }
    let (Some(hash), Some(wrapped)) = (hash, wrapped) else {
        return Ok(refuse(
            "このIDにはまだパスワードが設定されていません（madoguchi operator set-password） / No password set yet",
        ));
    };
    let pw_ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let step = if pw_ok {
        p.keys
            .unwrap(&wrapped, &totp_aad(&id))
            .ok()
            .and_then(|secret| totp_step(&secret, &code, crate::tenant::staff::now_unix()))
            .filter(|&step| step > last_step)
    } else {
        None
    };
    let Some(step) = step else {
        // Counted in the statement, so failures sent at once all count.
        let n: i32 = c
            .query_opt(
                "UPDATE operators SET failed_logins = failed_logins + 1,
                        locked_until = CASE WHEN failed_logins + 1 >= $2::int
                            THEN now() + make_interval(secs => least(3600, 30 * power(2, failed_logins + 1 - $2::int))) END
                  WHERE id = $1 RETURNING failed_logins",
                &[&id, &MAX_FAILURES],
            )
            .await?
            .map_or(failures + 1, |r| r.get(0));
        crate::control::oplog::record(
            &p.catalog,
            &id,
            "console.login_failed",
            "",
            serde_json::json!({ "failures": n }),
        )
        .await?;
        return Ok(refuse(REFUSED));
    };
    let token = crate::crypto::random_token(32);
    let csrf = crate::crypto::random_token(24);
    // The code's time step is taken only if no other sign-in took it first: two
    // sign-ins racing with one code get one session.
    let taken = c
        .execute(
            "UPDATE operators SET failed_logins = 0, locked_until = NULL, totp_last_step = $2
              WHERE id = $1 AND totp_last_step < $2",
            &[&id, &step],
        )
        .await?;
    if taken == 0 {
        return Ok(refuse(REFUSED));
    }
    c.execute(
        "INSERT INTO ops_sessions (token_hash, operator_id, csrf) VALUES ($1, $2, $3)",
        &[&token_hash(&token), &id, &csrf],
    )
    .await?;
    crate::control::oplog::record(&p.catalog, &id, "console.login", "", serde_json::json!({}))
        .await?;
    let mut resp = see_other("/");
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&token, None));
    Ok(resp)
}

async fn logout(
    State(s): State<OpsState>,
    op: Operator,
    form: FormData,
) -> Result<Response, AppError> {
    op.check_csrf(&form)?;
    let c = s.platform.catalog.client().await?;
    c.execute(
        "DELETE FROM ops_sessions WHERE operator_id = $1 AND csrf = $2",
        &[&op.id, &op.csrf],
    )
    .await?;
    crate::control::oplog::record(
        &s.platform.catalog,
        &op.id,
        "console.logout",
        "",
        serde_json::json!({}),
    )
    .await?;
    let mut resp = see_other("/login");
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", Some(0)));
    Ok(resp)
}

/// Times for people: JST with both calendars.
pub fn jst(t: OffsetDateTime) -> String {
    crate::tenant::forms::citizen::jst(t)
}
