//! Staff accounts of a municipality: roles and departments, argon2id passwords,
//! TOTP, sessions in the tenant database, CSRF tokens.

pub mod pages;

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use totp_rs::{Algorithm, Secret, TOTP};

use super::http::{cookie, same_secret, see_other, token_hash, FormData};
use super::TenantCtx;
use crate::error::AppError;

/// Session cookie (host-scoped: no Domain attribute, so it never reaches another tenant).
pub const SESSION_COOKIE: &str = "md_staff";
/// Idle timeout and absolute lifetime of a staff session.
pub const IDLE_SECS: i64 = 30 * 60;
/// The signed-in member of staff by the hash of their session cookie; the session's
/// last activity is written at most every `$3` seconds. The role is read live, and a
/// role that needs TOTP ([`Role::needs_totp`], or every role under the municipality's
/// [`TotpRule::All`]) held without TOTP enrolled ends the session: a staff member
/// promoted after signing in with a password alone, or whose municipality has just
/// required TOTP of everyone, signs in again, and is refused until they enrol.
pub const SESSION_SQL: &str = "WITH s AS (
                    SELECT staff_id, csrf_token, last_seen_at FROM staff_sessions
                     WHERE id_hash = $1 AND last_seen_at > now() - make_interval(secs => $2) AND expires_at > now()),
                 touched AS (
                    UPDATE staff_sessions SET last_seen_at = now()
                     WHERE id_hash = $1 AND last_seen_at < now() - make_interval(secs => $3)
                       AND EXISTS (SELECT 1 FROM s))
                 SELECT st.id, st.email, st.display_name, st.role, st.department_id, s.csrf_token
                   FROM s JOIN staff st ON st.id = s.staff_id
                  WHERE NOT st.disabled
                    AND (st.totp_enabled OR (st.role NOT IN ('admin', 'dept_manager')
                         AND (SELECT staff_totp FROM settings WHERE id = true) = 'managers'))";

/// Ends every setup link of `staff_id` not yet used.
pub async fn void_setup_links(
    db: &impl tokio_postgres::GenericClient,
    staff_id: i64,
) -> Result<(), AppError> {
    db.execute(
        "UPDATE staff_setup_tokens SET expires_at = least(expires_at, now())
          WHERE staff_id = $1 AND used_at IS NULL",
        &[&staff_id],
    )
    .await?;
    Ok(())
}

/// Ends every setup link not yet used that `issuer` was shown.
pub async fn void_links_issued_by(
    db: &impl tokio_postgres::GenericClient,
    issuer: i64,
) -> Result<u64, AppError> {
    Ok(db
        .execute(
            "UPDATE staff_setup_tokens SET expires_at = least(expires_at, now())
              WHERE issued_by = $1 AND used_at IS NULL",
            &[&issuer],
        )
        .await?)
}

/// Deletes sessions past their absolute lifetime or idle for longer than
/// [`IDLE_SECS`]: they no longer sign anyone in. Run daily by the server.
pub async fn purge_expired_sessions(db: &tokio_postgres::Client) -> Result<u64, AppError> {
    Ok(db
        .execute(
            "DELETE FROM staff_sessions
              WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)",
            &[&(IDLE_SECS as f64)],
        )
        .await?)
}

/// How often a session's last activity is written at most (seconds).
const TOUCH_SECS: f64 = 30.0;
pub const ABSOLUTE_SECS: i64 = 12 * 60 * 60;
/// Failed sign-ins allowed before the account is locked for a while.
pub const FREE_ATTEMPTS: i32 = 5;
pub const MIN_PASSWORD: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// 管理者
    Admin,
    /// 所属管理者
    DeptManager,
    /// 職員
    Staff,
    /// 閲覧者
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::DeptManager, Role::Staff, Role::Viewer];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "dept_manager" => Self::DeptManager,
            "staff" => Self::Staff,
            "viewer" => Self::Viewer,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::DeptManager => "dept_manager",
            Self::Staff => "staff",
            Self::Viewer => "viewer",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "管理者",
            Self::DeptManager => "所属管理者",
            Self::Staff => "職員",
            Self::Viewer => "閲覧者",
        }
    }
    /// Administrators and department managers must use TOTP.
    pub fn needs_totp(self) -> bool {
        matches!(self, Self::Admin | Self::DeptManager)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Who must sign in with a TOTP code besides the password (the municipality's choice,
/// on the ネットワーク制限 page; `settings.staff_totp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpRule {
    /// 管理者 and 所属管理者 only ([`Role::needs_totp`]).
    Managers,
    /// Every member of staff (new municipalities start so).
    All,
}

impl TotpRule {
    /// The stored value; anything else is read as the stricter rule.
    pub fn parse(s: &str) -> Self {
        match s {
            "managers" => Self::Managers,
            _ => Self::All,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managers => "managers",
            Self::All => "all",
        }
    }

    /// Whether someone of `role` must use TOTP under this rule.
    pub fn requires(self, role: Role) -> bool {
        role.needs_totp() || self == Self::All
    }
}

/// The signed-in staff member of the current request.
#[derive(Debug, Clone)]
pub struct StaffUser {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub department_id: Option<i64>,
    pub csrf: String,
    session_hash: Vec<u8>,
}

impl StaffUser {
    /// This staff member as the actor of an operation-log entry.
    pub fn actor(&self) -> crate::tenant::audit::Actor {
        crate::tenant::audit::Actor::Staff {
            id: self.id,
            email: self.email.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Administrators manage every account; a 所属管理者 those of their own department
    /// below administrator.
    pub fn manages_staff(&self) -> bool {
        self.is_admin() || self.role == Role::DeptManager && self.department_id.is_some()
    }

    /// Whether this member of staff may manage an account with `role` in `department`
    /// (checked for the account as it is and as it would become).
    pub fn may_manage(&self, role: Role, department: Option<i64>) -> bool {
        match self.role {
            Role::Admin => true,
            Role::DeptManager => {
                role != Role::Admin && department.is_some() && department == self.department_id
            }
            Role::Staff | Role::Viewer => false,
        }
    }

    /// The department whose accounts this member manages: `None` for an
    /// administrator (every account).
    pub fn managed_department(&self) -> Option<i64> {
        if self.is_admin() {
            None
        } else {
            self.department_id
        }
    }

    pub fn require_staff_manager(&self) -> Result<(), AppError> {
        if self.manages_staff() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Staff see their own department's forms; administrators see all.
    pub fn can_see(&self, department_id: i64) -> bool {
        self.is_admin() || self.department_id == Some(department_id)
    }

    /// Deleting a finished application (申請の削除): a 管理者, or the 所属管理者 of
    /// the form's department.
    pub fn can_delete_cases(&self, department_id: i64) -> bool {
        self.is_admin()
            || self.role == Role::DeptManager && self.department_id == Some(department_id)
    }

    /// Read-only users change nothing.
    pub fn can_edit(&self, department_id: i64) -> bool {
        self.role != Role::Viewer && self.can_see(department_id)
    }

    /// Every state-changing request carries the session's CSRF token.
    pub fn check_csrf(&self, form: &FormData) -> Result<(), AppError> {
        if same_secret(form.get("csrf"), &self.csrf) {
            Ok(())
        } else {
            Err(AppError::Csrf)
        }
    }

    pub fn session_hash(&self) -> &[u8] {
        &self.session_hash
    }
}

/// Without a valid session: to the sign-in page.
pub struct SignInRequired;

impl IntoResponse for SignInRequired {
    fn into_response(self) -> Response {
        see_other("/admin/login")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StaffUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let ctx = TenantCtx::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(SignInRequired.into_response());
        };
        let hash = token_hash(&token);
        let db = ctx.db().await.map_err(IntoResponse::into_response)?;
        // The session's last activity is written at most every TOUCH_SECS, so most
        // page views of a signed-in member of staff write nothing (no commit to wait
        // for); the idle limit is kept to within that much.
        let stmt = db
            .prepare_cached(SESSION_SQL)
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        let row = db
            .query_opt(&stmt, &[&hash, &(IDLE_SECS as f64), &TOUCH_SECS])
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        let Some(r) = row else {
            return Err(SignInRequired.into_response());
        };
        let role: String = r.get(3);
        Ok(StaffUser {
            id: r.get(0),
            email: r.get(1),
            display_name: r.get(2),
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            department_id: r.get(4),
            csrf: r.get(5),
            session_hash: hash,
        })
    }
}

/// Passwords people must not use, whatever their length.
const COMMON_PASSWORDS: &[&str] = &[
    "password1234",
    "password12345",
    "password123456",
    "123456789012",
    "1234567890123",
    "12345678901234",
    "qwertyuiop12",
    "qwertyuiopasdf",
    "aaaaaaaaaaaa",
    "abcdefghijkl",
    "abc123456789",
    "passw0rd1234",
    "iloveyou1234",
    "welcome12345",
    "letmein12345",
    "administrator",
    "admin1234567",
    "changeme1234",
    "p@ssw0rd1234",
    "qazwsxedcrfv",
    "1qaz2wsx3edc",
    "zaq12wsxcde3",
    "asdfghjkl123",
    "monkey123456",
    "football1234",
    "baseball1234",
    "sunshine1234",
    "princess1234",
    "dragon123456",
    "trustno11234",
];

/// Checks a new password: at least 12 characters, not a common one, not the e-mail.
pub fn password_problem(password: &str, email: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Some(format!(
            "パスワードは{MIN_PASSWORD}文字以上にしてください（現在{n}文字）"
        ));
    }
    if n > 256 {
        return Some("パスワードは256文字以内にしてください".into());
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) || lower.chars().all(|c| lower.starts_with(c)) {
        return Some(
            "このパスワードはよく使われていて危険です。別のパスワードにしてください".into(),
        );
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Some("パスワードにメールアドレスを含めないでください".into());
    }
    None
}

/// argon2id with the crate's default (OWASP) parameters.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing a password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A fresh 160-bit TOTP secret.
pub fn new_totp_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut s = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

pub fn totp_base32(secret: &[u8]) -> String {
    match &Secret::Raw(secret.to_vec()).to_encoded() {
        Secret::Encoded(s) => s.clone(),
        Secret::Raw(_) => String::new(),
    }
}

pub fn totp_from_base32(s: &str) -> Option<Vec<u8>> {
    Secret::Encoded(s.trim().to_uppercase())
        .to_bytes()
        .ok()
        .filter(|b| b.len() >= 16)
}

fn totp(secret: &[u8]) -> Option<TOTP> {
    TOTP::new(Algorithm::SHA1, 6, 1, 30, secret.to_vec()).ok()
}

/// The RFC 6238 code for a time (seconds since the epoch).
pub fn totp_code(secret: &[u8], unix: u64) -> String {
    totp(secret).map(|t| t.generate(unix)).unwrap_or_default()
}

/// Checks a code against the previous, current and next 30-second step, and returns
/// the step it matched, so a code can be refused when used twice.
pub fn totp_step(secret: &[u8], code: &str, unix: u64) -> Option<i64> {
    let code: String = crate::ja::nfkc(code)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let t = totp(secret)?;
    let now_step = unix / 30;
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        if same_secret(&t.generate(step * 30), &code) {
            return i64::try_from(step).ok();
        }
    }
    None
}

/// `otpauth://` URI for authenticator apps.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(account),
        totp_base32(secret),
        enc(issuer)
    )
}

/// A QR code as inline SVG (for a page) or `None` if the text is too long.
pub fn qr_svg(text: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_query_names_the_roles_that_need_totp() {
        for role in Role::ALL {
            let named = SESSION_SQL.contains(&format!("'{}'", role.as_str()));
            assert_eq!(named, role.needs_totp(), "{role:?}");
        }
    }

    #[test]
    fn password_policy() {
        assert!(password_problem("short", "a@b.jp").is_some_and(|m| m.contains("12文字以上")));
        assert!(
            password_problem("Password1234", "a@b.jp").is_some_and(|m| m.contains("よく使われて"))
        );
        assert!(password_problem("yamada-taro-2026", "yamada-taro@city.jp").is_some());
        assert_eq!(password_problem("correct horse battery", "a@b.jp"), None);
        let h = hash_password("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
    }

    #[test]
    fn totp_rfc6238_vectors_and_steps() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", 8 digits there; 6 here.
        let secret = b"12345678901234567890";
        assert_eq!(totp_code(secret, 59), "287082");
        assert_eq!(totp_code(secret, 1_111_111_109), "081804");
        assert_eq!(totp_code(secret, 2_000_000_000), "279037");
        assert_eq!(totp_step(secret, "081804", 1_111_111_109), Some(37_037_036));
        assert_eq!(
            totp_step(secret, "０８１８０４", 1_111_111_109 + 30),
            Some(37_037_036),
            "one step late is fine"
        );
        assert_eq!(
            totp_step(secret, "081804", 1_111_111_109 + 90),
            None,
            "three steps late is not"
        );
        let b32 = totp_base32(secret);
        assert_eq!(totp_from_base32(&b32).as_deref(), Some(&secret[..]));
        assert!(otpauth_uri(secret, "Madoguchi 千代田区", "a@b.jp")
            .starts_with("otpauth://totp/Madoguchi%20"));
        assert!(qr_svg("otpauth://totp/x").is_some_and(|s| s.contains("<svg")));
    }
}
