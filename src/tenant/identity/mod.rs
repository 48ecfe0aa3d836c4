//! 本人確認 (identity verification): a municipality's OpenID Connect provider (a My
//! Number card service, or another provider it contracts), set by an administrator
//! ([`admin`]), and the identities it vouches for, kept with a citizen's draft and
//! then with the submission, encrypted with the municipality's key. A form asks for
//! it in its settings; the steps a citizen takes are in `forms::verify`.

pub mod admin;
pub mod oidc;

use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{FieldCipher, FieldRef};
use crate::error::AppError;
use crate::tenant::TenantCtx;
use oidc::{Endpoints, Identity, Provider};

/// Where the provider sends the citizen back, on the host they came from.
pub const CALLBACK_PATH: &str = "/identity/callback";
/// How long a verification started may take to come back.
pub const REQUEST_MINUTES: i32 = 10;

pub fn redirect_uri(ctx: &TenantCtx) -> String {
    format!("{}{CALLBACK_PATH}", ctx.base_url)
}

/// The provider's row is a single one; its secret is sealed to that.
const SECRET_AT: FieldRef<'static> = FieldRef {
    table: "identity_provider",
    column: "client_secret",
    row_id: "provider",
};

pub fn seal_secret(cipher: &FieldCipher, secret: &str) -> Result<Vec<u8>, AppError> {
    cipher
        .encrypt(&SECRET_AT, secret.as_bytes())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("sealing the client secret: {e}")))
}

const PROVIDER_SQL: &str = "SELECT issuer, authorization_endpoint, token_endpoint, jwks_uri, token_auth, client_id, client_secret, scopes, label FROM identity_provider";

/// The municipality's provider, if one is set.
pub async fn provider(
    ctx: &TenantCtx,
    db: &impl GenericClient,
) -> Result<Option<Provider>, AppError> {
    let Some(r) = db.query_opt(PROVIDER_SQL, &[]).await? else {
        return Ok(None);
    };
    let secret = ctx
        .cipher()
        .decrypt(&SECRET_AT, &r.get::<_, Vec<u8>>(6))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("opening the client secret: {e}")))?;
    let secret = Zeroizing::new(secret);
    Ok(Some(Provider {
        issuer: r.get(0),
        endpoints: Endpoints {
            authorization: r.get(1),
            token: r.get(2),
            jwks: r.get(3),
            token_auth: r.get(4),
        },
        client_id: r.get(5),
        client_secret: Zeroizing::new(String::from_utf8_lossy(&secret).into_owned()),
        scopes: r.get(7),
        label: r.get(8),
    }))
}

/// The name citizens see for the provider, if one is set.
pub async fn provider_label(db: &impl GenericClient) -> Result<Option<String>, AppError> {
    Ok(db
        .query_opt("SELECT label FROM identity_provider", &[])
        .await?
        .map(|r| r.get(0)))
}

/// An identity a provider vouched for, and when.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub at: OffsetDateTime,
    pub who: Identity,
}

impl Verified {
    /// Names this verification on a confirmation page, so that a submit from a page
    /// drawn before another tab verified someone else is told apart.
    pub fn stamp(&self) -> String {
        self.at.unix_timestamp_nanos().to_string()
    }
}

fn seal(cipher: &FieldCipher, table: &str, row: Uuid, who: &Identity) -> Result<Vec<u8>, AppError> {
    let plain = Zeroizing::new(serde_json::to_vec(who).map_err(|e| AppError::Internal(e.into()))?);
    let row = row.to_string();
    cipher
        .encrypt(
            &FieldRef {
                table,
                column: "claims",
                row_id: &row,
            },
            &plain,
        )
        .map_err(|e| AppError::Internal(anyhow::anyhow!("sealing an identity: {e}")))
}

fn open(cipher: &FieldCipher, table: &str, row: Uuid, sealed: &[u8]) -> Result<Identity, AppError> {
    let row_id = row.to_string();
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &FieldRef {
                    table,
                    column: "claims",
                    row_id: &row_id,
                },
                sealed,
            )
            .map_err(|e| AppError::Internal(anyhow::anyhow!("opening an identity: {e}")))?,
    );
    // serde's message would quote the claims: only the table is named.
    serde_json::from_slice(&plain)
        .map_err(|_| AppError::Internal(anyhow::anyhow!("{table}: the stored identity is not one")))
}

async fn read(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    table: &'static str,
    sql: &str,
    row: Uuid,
) -> Result<Option<Verified>, AppError> {
    match db.query_opt(sql, &[&row]).await? {
        None => Ok(None),
        Some(r) => Ok(Some(Verified {
            issuer: r.get(0),
            at: r.get(2),
            who: open(ctx.cipher(), table, row, &r.get::<_, Vec<u8>>(1))?,
        })),
    }
}

/// The identity verified for a draft by the provider set now, if any: one that a
/// provider since removed or replaced vouched for does not count.
pub async fn of_draft(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    draft: Uuid,
) -> Result<Option<Verified>, AppError> {
    read(
        ctx,
        db,
        "draft_identities",
        "SELECT i.issuer, i.claims, i.verified_at FROM draft_identities i
           JOIN identity_provider p ON p.issuer = i.issuer WHERE i.draft_id = $1",
        draft,
    )
    .await
}

/// The identity a submission was sent with, if any.
pub async fn of_submission(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    submission: Uuid,
) -> Result<Option<Verified>, AppError> {
    read(
        ctx,
        db,
        "submission_identities",
        "SELECT issuer, claims, verified_at FROM submission_identities WHERE submission_id = $1",
        submission,
    )
    .await
}

/// The identities these submissions were sent with (those that have one).
pub async fn of_submissions(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Verified>, AppError> {
    let rows = db
        .query(
            "SELECT submission_id, issuer, claims, verified_at FROM submission_identities WHERE submission_id = ANY($1)",
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            let who = open(
                ctx.cipher(),
                "submission_identities",
                id,
                &r.get::<_, Vec<u8>>(2),
            )?;
            Ok((
                id,
                Verified {
                    issuer: r.get(1),
                    at: r.get(3),
                    who,
                },
            ))
        })
        .collect()
}

/// Keeps a verified identity with its draft (replacing one verified before).
pub async fn keep_with_draft(
    ctx: &TenantCtx,
    db: &impl GenericClient,
    draft: Uuid,
    v: &Verified,
) -> Result<(), AppError> {
    let sealed = seal(ctx.cipher(), "draft_identities", draft, &v.who)?;
    db.execute(
        "INSERT INTO draft_identities (draft_id, issuer, claims, verified_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (draft_id) DO UPDATE SET issuer = EXCLUDED.issuer, claims = EXCLUDED.claims, verified_at = EXCLUDED.verified_at",
        &[&draft, &v.issuer, &sealed, &v.at],
    )
    .await?;
    Ok(())
}

/// Keeps a verified identity with a new submission (in its transaction).
pub async fn keep_with_submission(
    cipher: &FieldCipher,
    db: &impl GenericClient,
    submission: Uuid,
    v: &Verified,
) -> Result<(), AppError> {
    let sealed = seal(cipher, "submission_identities", submission, &v.who)?;
    db.execute(
        "INSERT INTO submission_identities (submission_id, issuer, claims, verified_at) VALUES ($1, $2, $3, $4)",
        &[&submission, &v.issuer, &sealed, &v.at],
    )
    .await?;
    Ok(())
}

/// One line of a verified identity, as pages show it.
pub struct Line {
    pub label: &'static str,
    pub value: String,
}

/// A gender claim in Japanese (OpenID Connect's `male` and `female`; any other
/// value as sent).
pub fn gender_label(g: &str) -> String {
    match g {
        "male" => "男性".to_owned(),
        "female" => "女性".to_owned(),
        other => other.to_owned(),
    }
}

/// A verified identity as pages show it: 和暦 beside the birth date's 西暦.
pub fn lines(who: &Identity) -> Vec<Line> {
    let birth = who
        .birthdate
        .as_deref()
        .map(|b| crate::tenant::http::date(b).map_or_else(|| b.to_owned(), crate::ja::date_both));
    let gender = who.gender.as_deref().map(gender_label);
    [
        ("氏名", who.name.clone()),
        ("フリガナ", who.name_kana.clone()),
        ("生年月日", birth),
        ("性別", gender),
        ("住所", who.address.clone()),
    ]
    .into_iter()
    .filter_map(|(label, v)| v.map(|value| Line { label, value }))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_wareki_beside_seireki_and_skip_what_was_not_given() {
        let who = Identity {
            subject: "s".into(),
            name: Some("窓口 花子".into()),
            birthdate: Some("1990-04-01".into()),
            gender: Some("female".into()),
            ..Identity::default()
        };
        let shown: Vec<(&str, String)> = lines(&who)
            .into_iter()
            .map(|l| (l.label, l.value))
            .collect();
        assert_eq!(
            shown,
            [
                ("氏名", "窓口 花子".to_owned()),
                ("生年月日", "1990年4月1日（平成2年4月1日）".to_owned()),
                ("性別", "女性".to_owned()),
            ]
        );
    }
}
