//! Witnessing each tenant's operation log from outside its database: the control
//! plane checks the chain from the head it saw last time, then keeps the new head in
//! the catalog (`audit_witness`). A log rewritten consistently inside the tenant's
//! database, or cut short, no longer reaches the witnessed entry; the check says so,
//! keeps the last good head, and the metric `madoguchi_audit_chain_ok` turns 0.

use crate::catalog::{Catalog, TenantRecord, TenantState};
use crate::platform::Platform;
use crate::tenant::audit::{verify_from, Head, Verdict};

/// Checks one tenant's log from its witnessed head (`full`: first from the log's
/// own beginning, every entry) and records the outcome.
pub async fn check(p: &Platform, rec: &TenantRecord, full: bool) -> anyhow::Result<Verdict> {
    let conn = p
        .cluster
        .connect_tenant(&p.catalog, p.keys.as_ref(), rec)
        .await?;
    check_on(&p.catalog, &conn.client, rec, full).await
}

/// [`check`] over a connection to the tenant's database the caller holds (the
/// service's daily housekeeping uses one from the tenant's pool).
pub async fn check_on(
    catalog: &Catalog,
    db: &tokio_postgres::Client,
    rec: &TenantRecord,
    full: bool,
) -> anyhow::Result<Verdict> {
    let c = catalog.client().await?;
    let witnessed: Option<Head> = c
        .query_opt(
            "SELECT seq, hash FROM audit_witness WHERE tenant_id = $1",
            &[&rec.id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));
    // One walk: from the witnessed entry, or (`full`) from the log's beginning after
    // checking that entry is still there unchanged.
    let (verdict, head) = verify_from(db, witnessed.as_ref(), full)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (ok, detail) = match &verdict {
        Verdict::Intact(_) => (true, String::new()),
        Verdict::Broken { seq, reason } => (false, format!("entry {seq}: {reason}")),
    };
    // A broken chain keeps the last good head: the next check fails the same way
    // until someone has looked.
    let (seq, hash) = head.or(witnessed).unwrap_or((0, Vec::new()));
    c.execute(
        "INSERT INTO audit_witness (tenant_id, seq, hash, ok, detail) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET seq = $2, hash = $3, ok = $4, detail = $5, checked_at = now()",
        &[&rec.id, &seq, &hash, &ok, &detail],
    )
    .await?;
    if !ok {
        tracing::error!(tenant = %rec.slug, %detail, "operation log chain broken");
    }
    Ok(verdict)
}

/// After a break was investigated: forgets the witnessed head and witnesses the log
/// as it is now, checked in full (a log broken within itself is still refused), and
/// records who did it and why in the control plane's log.
pub async fn rewitness(
    p: &Platform,
    rec: &TenantRecord,
    actor: &str,
    reason: &str,
) -> anyhow::Result<Verdict> {
    let reason = reason.trim();
    if reason.is_empty() {
        anyhow::bail!(
            "理由を書いてください / give the reason (--reason), e.g. the incident's reference"
        );
    }
    let c = p.catalog.client().await?;
    let before = c
        .query_opt(
            "DELETE FROM audit_witness WHERE tenant_id = $1 RETURNING seq, detail",
            &[&rec.id],
        )
        .await?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
    let verdict = check(p, rec, true).await?;
    super::oplog::record(
        &p.catalog,
        actor,
        "audit.rewitness",
        &rec.slug,
        serde_json::json!({
            "reason": reason,
            "witnessed_seq": before.as_ref().map(|b| b.0),
            "was": before.map(|b| b.1),
            "now": format!("{verdict:?}"),
        }),
    )
    .await?;
    if let Verdict::Broken { seq, reason } = &verdict {
        anyhow::bail!(
            "the log is broken within itself at entry {seq} ({reason}); nothing to witness"
        );
    }
    Ok(verdict)
}

/// Checks every active or suspended tenant; returns how many were intact and the
/// others (broken, or not checked) with why.
pub async fn check_all(p: &Platform) -> (usize, Vec<(String, String)>) {
    let tenants = match p.catalog.list_tenants().await {
        Ok(t) => t,
        Err(e) => return (0, vec![("*".into(), format!("{e:#}"))]),
    };
    let (mut intact, mut other) = (0, Vec::new());
    for t in tenants
        .iter()
        .filter(|t| matches!(t.state, TenantState::Active | TenantState::Suspended))
    {
        match check(p, t, false).await {
            Ok(Verdict::Intact(_)) => intact += 1,
            Ok(Verdict::Broken { seq, reason }) => {
                other.push((t.slug.clone(), format!("entry {seq}: {reason}")));
            }
            Err(e) => other.push((t.slug.clone(), format!("not checked: {e:#}"))),
        }
    }
    (intact, other)
}
