//! The operation log (操作ログ): every sign-in, publish, view, export, status change,
//! staff change and API use, appended in the same transaction as the act itself.
//! Each row's hash covers the previous row's hash and its own content, so editing or
//! deleting a row breaks the chain, and `madoguchi audit verify SLUG` names the first
//! broken row.

pub mod pages;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::crypto::aad;
use crate::error::AppError;

/// Advisory lock that serialises appends within one tenant database.
pub(crate) const AUDIT_LOCK: i64 = i64::from_be_bytes(*b"\0madoaud");
/// Holds the chain's end for the transaction ($1 [`AUDIT_LOCK`]).
pub(crate) const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";
/// The chain's end: its last entry's number and hash.
pub(crate) const END_SQL: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
/// One entry ($1 seq, $2 at, $3 actor, $4 action, $5 target, $6 detail, $7 the
/// previous entry's hash, $8 its own).
pub(crate) const APPEND_SQL: &str = "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Who did something.
#[derive(Debug, Clone)]
pub enum Actor {
    Staff {
        id: i64,
        email: String,
    },
    Api {
        token_id: i64,
        name: String,
    },
    Citizen,
    Operator,
    /// The service on its own schedule (the applications' 保存期間).
    System,
    /// An attempt by someone not (yet) known, e.g. a failed sign-in.
    Anonymous,
}

impl Actor {
    /// The staff member's id, when the actor is one.
    pub fn staff_id(&self) -> Option<i64> {
        match self {
            Self::Staff { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Staff { id, email } => format!("staff:{id}:{email}"),
            Self::Api { token_id, name } => format!("api:{token_id}:{name}"),
            Self::Citizen => "citizen".into(),
            Self::Operator => "operator".into(),
            Self::System => "system".into(),
            Self::Anonymous => "anonymous".into(),
        }
    }
}

/// The hash of a row: SHA-256 over the previous hash and the row's fields, each
/// length-prefixed.
pub fn row_hash(
    prev: &[u8],
    seq: i64,
    at_micros: i128,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Vec<u8> {
    let content = aad(&[
        prev,
        &seq.to_be_bytes(),
        &at_micros.to_be_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        detail.as_bytes(),
    ]);
    Sha256::digest(&content).to_vec()
}

/// Microseconds since the epoch: the precision PostgreSQL stores, so what is hashed.
pub fn micros(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1000
}

/// Appends one entry. Call inside the transaction of the act it records, so that
/// either both are stored or neither.
pub async fn append(
    db: &impl GenericClient,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AppError> {
    // Three statements, two round trips: the lock and the read of the chain's end are
    // sent together (the server runs them in order, so the read sees every append
    // committed before the lock was granted), each in one message with its types
    // (no separate round trip to prepare).
    let lock = db.execute_typed(LOCK_SQL, &[(&AUDIT_LOCK, Type::INT8)]);
    let last = db.query_typed_opt(END_SQL, &[]);
    let (_, last) = tokio::try_join!(biased; lock, last)?;
    let (prev_seq, prev_hash): (i64, Vec<u8>) = match last {
        Some(r) => (r.get(0), r.get(1)),
        None => {
            let r = db
                .query_one(
                    "SELECT audit_anchor_seq, audit_anchor_hash FROM settings",
                    &[],
                )
                .await?;
            (r.get(0), r.get(1))
        }
    };
    let seq = prev_seq + 1;
    // Stored with microsecond precision, so hash exactly that.
    let now = OffsetDateTime::now_utc();
    let at = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let actor = actor.label();
    let detail = detail.to_string();
    let hash = row_hash(&prev_hash, seq, micros(at), &actor, action, target, &detail);
    db.execute_typed(
        APPEND_SQL,
        &[
            (&seq, Type::INT8),
            (&at, Type::TIMESTAMPTZ),
            (&actor, Type::TEXT),
            (&action, Type::TEXT),
            (&target, Type::TEXT),
            (&detail, Type::TEXT),
            (&prev_hash, Type::BYTEA),
            (&hash, Type::BYTEA),
        ],
    )
    .await?;
    Ok(())
}

/// Appends an entry in a transaction of its own (for acts that are reads, like a view).
pub async fn record(
    db: &mut tokio_postgres::Client,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AppError> {
    let tx = db.transaction().await?;
    append(&tx, actor, action, target, detail).await?;
    tx.commit().await?;
    Ok(())
}

/// The outcome of checking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every row checked; the number of rows.
    Intact(u64),
    /// The first row whose hash, predecessor or sequence does not fit, and why.
    Broken { seq: i64, reason: String },
}

/// Walks the whole log in order, recomputing every hash.
pub async fn verify(db: &tokio_postgres::Client) -> Result<Verdict, AppError> {
    Ok(verify_from(db, None, true).await?.0)
}

/// A log entry as seen from outside the tenant's database: its sequence and hash.
pub type Head = (i64, Vec<u8>);

/// Checks the log against `witnessed` (a head seen before, kept outside the tenant's
/// database): that entry must still be there unchanged, and every later one must
/// chain on from it. The walk starts there, or from the log's own anchor when there
/// is no witness, when pruning has since passed it, or when `whole` asks for every
/// entry. Returns the verdict and the head now (when intact).
pub async fn verify_from(
    db: &tokio_postgres::Client,
    witnessed: Option<&Head>,
    whole: bool,
) -> Result<(Verdict, Option<Head>), AppError> {
    let anchor = db
        .query_one(
            "SELECT audit_anchor_seq, audit_anchor_hash FROM settings",
            &[],
        )
        .await?;
    let (anchor_seq, anchor_hash): (i64, Vec<u8>) = (anchor.get(0), anchor.get(1));
    let (start_seq, start_hash) = match witnessed {
        Some((seq, hash)) if *seq > anchor_seq => {
            let row = db
                .query_opt("SELECT hash FROM audit_log WHERE seq = $1", &[seq])
                .await?;
            match row.map(|r| r.get::<_, Vec<u8>>(0)) {
                None => {
                    return Ok((
                        Verdict::Broken {
                            seq: *seq,
                            reason:
                                "the entry last witnessed by the platform is gone (entries removed)"
                                    .into(),
                        },
                        None,
                    ))
                }
                Some(h) if h != *hash => {
                    return Ok((
                        Verdict::Broken {
                            seq: *seq,
                            reason: "the entry last witnessed by the platform was rewritten".into(),
                        },
                        None,
                    ))
                }
                Some(_) if whole => (anchor_seq, anchor_hash),
                Some(_) => (*seq, hash.clone()),
            }
        }
        Some((seq, hash)) if *seq == anchor_seq && *hash != anchor_hash => {
            return Ok((
                Verdict::Broken {
                    seq: *seq,
                    reason: "the log's anchor is not the entry the platform witnessed".into(),
                },
                None,
            ))
        }
        _ => (anchor_seq, anchor_hash),
    };
    let (mut expect_seq, mut prev) = (start_seq + 1, start_hash);
    let mut n = 0u64;
    let mut after = start_seq;
    loop {
        let rows = db
            .query(
                "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 5000",
                &[&after],
            )
            .await?;
        if rows.is_empty() {
            return Ok((Verdict::Intact(n), Some((after, prev))));
        }
        for r in &rows {
            let seq: i64 = r.get(0);
            if seq != expect_seq {
                return Ok((
                    Verdict::Broken {
                        seq,
                        reason: format!("row {expect_seq} is missing (next is {seq})"),
                    },
                    None,
                ));
            }
            let stored_prev: Vec<u8> = r.get(6);
            if stored_prev != prev {
                return Ok((
                    Verdict::Broken {
                        seq,
                        reason: "its previous-hash does not match the row before it".into(),
                    },
                    None,
                ));
            }
            let at: OffsetDateTime = r.get(1);
            let hash = row_hash(
                &prev,
                seq,
                micros(at),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
            );
            let stored: Vec<u8> = r.get(7);
            if stored != hash {
                return Ok((
                    Verdict::Broken {
                        seq,
                        reason: "its content does not match its hash (edited)".into(),
                    },
                    None,
                ));
            }
            prev = stored;
            expect_seq += 1;
            after = seq;
            n += 1;
        }
    }
}

/// Deletes entries older than the retention period, keeping the chain verifiable
/// from the first kept row, and records that it did.
pub async fn prune(db: &mut tokio_postgres::Client) -> Result<u64, AppError> {
    let tx = db.transaction().await?;
    tx.execute(LOCK_SQL, &[&AUDIT_LOCK]).await?;
    let last_old = tx
        .query_opt(
            "SELECT seq, hash FROM audit_log WHERE at < now() - make_interval(days => (SELECT audit_retention_days FROM settings))
              ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let Some(r) = last_old else { return Ok(0) };
    let (seq, hash): (i64, Vec<u8>) = (r.get(0), r.get(1));
    let n = tx
        .execute("DELETE FROM audit_log WHERE seq <= $1", &[&seq])
        .await?;
    tx.execute(
        "UPDATE settings SET audit_anchor_seq = $1, audit_anchor_hash = $2",
        &[&seq, &hash],
    )
    .await?;
    tx.commit().await?;
    record(
        db,
        &Actor::Operator,
        "audit.prune",
        "",
        serde_json::json!({ "deleted": n, "through_seq": seq }),
    )
    .await?;
    Ok(n)
}
