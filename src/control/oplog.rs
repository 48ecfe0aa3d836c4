//! The control plane's own operation log: every operator action (from the command
//! line or the console) in a SHA-256 chain kept in the catalog, hashed exactly like
//! the tenants' logs (see `tenant::audit::row_hash`).

use serde::Serialize;
use time::OffsetDateTime;

use crate::tenant::audit::{micros, row_hash};

/// Advisory lock under which entries are appended ("mdgoplog").
const OPLOG_LOCK: i64 = i64::from_be_bytes(*b"mdgoplog");

/// Appends one entry (inside the caller's transaction, if it has one).
pub async fn append(
    db: &impl deadpool_postgres::GenericClient,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> anyhow::Result<()> {
    db.execute("SELECT pg_advisory_xact_lock($1)", &[&OPLOG_LOCK])
        .await?;
    let last = db
        .query_opt(
            "SELECT seq, hash FROM ops_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let (prev_seq, prev_hash): (i64, Vec<u8>) = match last {
        Some(r) => (r.get(0), r.get(1)),
        None => (0, vec![0u8; 32]),
    };
    let seq = prev_seq + 1;
    let now = OffsetDateTime::now_utc();
    let at = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let detail = detail.to_string();
    let hash = row_hash(&prev_hash, seq, micros(at), actor, action, target, &detail);
    db.execute(
        "INSERT INTO ops_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&seq, &at, &actor, &action, &target, &detail, &prev_hash, &hash],
    )
    .await?;
    Ok(())
}

/// Appends one entry in a transaction of its own.
pub async fn record(
    catalog: &crate::catalog::Catalog,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let mut c = catalog.client().await?;
    let tx = c.transaction().await?;
    append(&tx, actor, action, target, &detail).await?;
    tx.commit().await?;
    Ok(())
}

/// One entry, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// The newest entries first.
pub async fn recent(catalog: &crate::catalog::Catalog, limit: i64) -> anyhow::Result<Vec<Entry>> {
    let c = catalog.client().await?;
    let rows = c
        .query(
            "SELECT seq, at, actor, action, target, detail FROM ops_log ORDER BY seq DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

/// Walks the whole chain; `Err` names the first entry that does not fit.
pub async fn verify(catalog: &crate::catalog::Catalog) -> anyhow::Result<i64> {
    let c = catalog.client().await?;
    let rows = c
        .query(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM ops_log ORDER BY seq",
            &[],
        )
        .await?;
    let mut prev = vec![0u8; 32];
    let mut expect = 1i64;
    for r in &rows {
        let seq: i64 = r.get(0);
        let at: OffsetDateTime = r.get(1);
        let stored_prev: Vec<u8> = r.get(6);
        let stored: Vec<u8> = r.get(7);
        if seq != expect {
            anyhow::bail!("operation log: entry {expect} is missing (found {seq})");
        }
        if stored_prev != prev {
            anyhow::bail!("operation log: entry {seq} does not follow the one before it");
        }
        let hash = row_hash(
            &prev,
            seq,
            micros(at),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
        );
        if hash != stored {
            anyhow::bail!("operation log: entry {seq} was edited (its hash does not match)");
        }
        prev = stored;
        expect += 1;
    }
    Ok(expect - 1)
}
