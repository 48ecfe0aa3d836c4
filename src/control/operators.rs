//! Revoking an operator or auditor: a key that may have leaked, a person who left.
//! The row stays with its public key, so what they signed before can still be
//! checked and the key cannot be registered again under another id; from then on
//! nothing they sign is accepted and the console lets them in no more.

use anyhow::bail;

use crate::platform::Platform;

/// What a revocation did.
#[derive(Debug)]
pub struct Revoked {
    /// RFC 3339, UTC.
    pub at: String,
    /// Tenants whose open decommissioning request the revoked operator signed and
    /// whose erasure has not begun: no erasure follows such a request (withdraw it
    /// and request again).
    pub open_requests: Vec<String>,
    /// Documents prepared for the revoked operator to sign (kind and tenant): they
    /// can no longer be signed. An erasure certificate among them stays unsigned.
    pub unsigned: Vec<(String, String)>,
}

/// Revokes `id`, in the name of `by` (a registered operator who is not revoked,
/// possibly `id` itself: someone who lost their key). Ends the id's console
/// sessions and forgets its console password and TOTP secret. Recorded in the
/// operation log with `actor`, in the same transaction.
pub async fn revoke(
    p: &Platform,
    actor: &str,
    id: &str,
    by: &str,
    reason: &str,
) -> anyhow::Result<Revoked> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        bail!("理由を1〜500文字で書いてください / give a reason of 1 to 500 characters (--reason)");
    }
    let mut c = p.catalog.client().await?;
    let tx = c.transaction().await?;
    tx.batch_execute("LOCK TABLE operators IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    let by_ok = tx
        .query_opt(
            "SELECT role = 'operator' AND revoked_at IS NULL FROM operators WHERE id = $1",
            &[&by],
        )
        .await?
        .map(|r| r.get::<_, bool>(0));
    match by_ok {
        None => bail!("オペレーター {by} は登録されていません / operator {by} is not registered"),
        Some(false) => bail!(
            "{by} は失効済みか監査人のため、失効させられません / {by} is revoked or an auditor and cannot revoke anyone"
        ),
        Some(true) => {}
    }
    let row = tx
        .query_opt(
            "UPDATE operators SET revoked_at = now(), revoked_by = $2, revoked_reason = $3,
                    password_hash = NULL, totp_wrapped = NULL
              WHERE id = $1 AND revoked_at IS NULL
             RETURNING to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[&id, &by, &reason],
        )
        .await?;
    let Some(row) = row else {
        let known = tx
            .query_opt("SELECT 1 FROM operators WHERE id = $1", &[&id])
            .await?
            .is_some();
        if known {
            bail!("{id} は失効済みです / {id} is already revoked");
        }
        bail!("オペレーター {id} は登録されていません / operator {id} is not registered");
    };
    tx.execute("DELETE FROM ops_sessions WHERE operator_id = $1", &[&id])
        .await?;
    let open_requests: Vec<String> = tx
        .query(
            "SELECT t.slug FROM decommissions d JOIN tenants t ON t.id = d.tenant_id
              WHERE d.requested_by = $1 AND d.state = 'requested' AND d.erasure_started_at IS NULL
              ORDER BY t.slug",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let unsigned: Vec<(String, String)> = tx
        .query(
            "SELECT s.kind, t.slug FROM pending_signatures s JOIN tenants t ON t.id = s.tenant_id
              WHERE s.operator_id = $1 ORDER BY s.created_at",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    super::oplog::append(
        &tx,
        actor,
        "operator.revoke",
        id,
        &serde_json::json!({ "by": by, "reason": reason, "open_requests": open_requests }),
    )
    .await?;
    tx.commit().await?;
    Ok(Revoked {
        at: row.get(0),
        open_requests,
        unsigned,
    })
}

/// The refusal for a revoked operator's signature or action.
pub fn refusal(id: &str, revocation: &crate::catalog::Revocation) -> anyhow::Error {
    anyhow::anyhow!(
        "オペレーター {id} は {} に失効しています（{}） / operator {id} was revoked at {} by {}: nothing they sign is accepted",
        revocation.at,
        revocation.reason,
        revocation.at,
        revocation.by
    )
}
