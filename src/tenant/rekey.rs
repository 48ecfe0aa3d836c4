//! 鍵の更新 inside a municipality's database: every value sealed with one of its data
//! keys is opened and sealed again with the newest, and the blind indexes (the
//! applications' e-mail and telephone, the link mails' recipients) are computed again
//! under the newest key.
//!
//! One transaction, with every table that holds a sealed value locked against writes:
//! the database holds either its values as they were or all of them under the newest
//! version, and `settings.data_key_version` says which key its blind indexes are
//! keyed by. The control plane runs it on a suspended municipality only
//! (`crate::control::data_key`), so the service reads nothing half done.

use std::collections::HashMap;

use anyhow::Context;
use tokio_postgres::{Client, GenericClient, Transaction};
use uuid::Uuid;

use crate::crypto::{FieldCipher, FieldRef};
use crate::tenant::forms::citizen::{blind_indexes, decrypt_answers, encrypt_answers};
use crate::tenant::forms::definition::FormDefinition;
use crate::tenant::forms::resume::mailbox;

/// Every table with a sealed value or a blind index, locked against writes for the
/// pass (no statement, lock or value waits long on a suspended tenant's database).
const LOCK_SQL: &str = "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10s';
     LOCK TABLE settings, staff, citizen_drafts, submissions, submission_events, submission_notes,
                outbox, attachments, draft_identities, submission_identities, identity_provider,
                citizen_sign_ins
     IN EXCLUSIVE MODE";

/// A sealed column (other than the applications' answers): the table and column its
/// ciphertexts are bound to, a cursor over each row's key, the row id bound into the
/// ciphertext and the value, how many rows it fetches at once, and the update taking
/// keys (`$1`) and values (`$2`). Whole statements: no SQL is put together at run time.
struct Column {
    table: &'static str,
    column: &'static str,
    declare: &'static str,
    update: &'static str,
    /// Rows per round trip (attachments are up to 10 MB each).
    fetch: &'static str,
}

const COLUMNS: [Column; 11] = [
    Column {
        table: "staff",
        column: "totp_secret",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, totp_secret FROM staff WHERE totp_secret IS NOT NULL",
        update: "UPDATE staff t SET totp_secret = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::bigint",
        fetch: "FETCH 500 FROM rekey",
    },
    Column {
        table: "citizen_drafts",
        column: "inputs",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, inputs FROM citizen_drafts WHERE inputs IS NOT NULL",
        update: "UPDATE citizen_drafts t SET inputs = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::uuid",
        fetch: "FETCH 500 FROM rekey",
    },
    Column {
        table: "submissions",
        column: "return_reason",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, return_reason FROM submissions WHERE return_reason IS NOT NULL",
        update: "UPDATE submissions t SET return_reason = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::uuid",
        fetch: "FETCH 500 FROM rekey",
    },
    // A status change's comment is bound to its application, not to the event.
    Column {
        table: "submission_events",
        column: "comment",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, submission_id::text, comment FROM submission_events WHERE comment IS NOT NULL",
        update: "UPDATE submission_events t SET comment = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::bigint",
        fetch: "FETCH 500 FROM rekey",
    },
    Column {
        table: "submission_notes",
        column: "body",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, body FROM submission_notes",
        update: "UPDATE submission_notes t SET body = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::bigint",
        fetch: "FETCH 500 FROM rekey",
    },
    // Receipts are bound to their application (`citizen::RECEIPT_MAIL`), the rest of
    // the mail to its own row (`mail::queue`).
    Column {
        table: "outbox",
        column: "payload",
        // A sent mail's payload is emptied (`mail::deliver_due`): nothing to seal.
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, CASE WHEN kind = 'receipt' THEN submission_id::text ELSE id::text END, payload FROM outbox WHERE length(payload) > 0",
        update: "UPDATE outbox t SET payload = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::bigint",
        fetch: "FETCH 500 FROM rekey",
    },
    Column {
        table: "attachments",
        column: "content",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, content FROM attachments",
        update: "UPDATE attachments t SET content = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::uuid",
        fetch: "FETCH 8 FROM rekey",
    },
    Column {
        table: "draft_identities",
        column: "claims",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT draft_id::text, draft_id::text, claims FROM draft_identities",
        update: "UPDATE draft_identities t SET claims = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.draft_id = u.k::uuid",
        fetch: "FETCH 500 FROM rekey",
    },
    Column {
        table: "submission_identities",
        column: "claims",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT submission_id::text, submission_id::text, claims FROM submission_identities",
        update: "UPDATE submission_identities t SET claims = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.submission_id = u.k::uuid",
        fetch: "FETCH 500 FROM rekey",
    },
    // 申請一覧's links and sessions: the address each was asked for.
    Column {
        table: "citizen_sign_ins",
        column: "email",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, id::text, email FROM citizen_sign_ins",
        update: "UPDATE citizen_sign_ins t SET email = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::uuid",
        fetch: "FETCH 500 FROM rekey",
    },
    // The single provider row's secret is bound to the name "provider".
    Column {
        table: "identity_provider",
        column: "client_secret",
        declare: "DECLARE rekey NO SCROLL CURSOR FOR SELECT id::text, 'provider', client_secret FROM identity_provider",
        update: "UPDATE identity_provider t SET client_secret = u.v FROM unnest($1::text[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k::boolean",
        fetch: "FETCH 1 FROM rekey",
    },
];

/// Every column a pass covers, as `table.column` of the schema: the sealed ones, the
/// answers (a JSON object of sealed values) and the blind indexes.
pub fn covered_columns() -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| format!("{}.{}", c.table, c.column))
        .chain(
            [
                "submissions.answers",
                "submissions.email_index",
                "submissions.phone_index",
                "outbox.recipient_index",
            ]
            .map(String::from),
        )
        .collect()
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// The key version the blind indexes were keyed by before, and are now.
    pub from: u32,
    pub to: u32,
    /// Values sealed again, per `table.column` (applications' answers as one value each).
    pub resealed: Vec<(String, u64)>,
    /// Blind indexes computed again.
    pub indexes: u64,
}

impl Rekeyed {
    pub fn values(&self) -> u64 {
        self.resealed.iter().map(|(_, n)| n).sum()
    }
}

/// The data-key version the database's blind indexes are keyed by (every value is
/// sealed with it or an older one).
pub async fn index_version(db: &impl GenericClient) -> anyhow::Result<u32> {
    let v: Option<i32> = db
        .query_opt("SELECT data_key_version FROM settings", &[])
        .await?
        .map(|r| r.get(0));
    // A database whose settings row is not written yet holds no sealed value.
    Ok(u32::try_from(v.unwrap_or(1))?)
}

/// [`index_version`], holding the settings row against a rotation until the
/// caller's transaction ends (the rotation locks the table first): values sealed in
/// that transaction are either sealed again by the rotation or were sealed after it.
pub async fn index_version_locked(db: &impl GenericClient) -> anyhow::Result<u32> {
    let v: Option<i32> = db
        .query_opt("SELECT data_key_version FROM settings FOR SHARE", &[])
        .await?
        .map(|r| r.get(0));
    Ok(u32::try_from(v.unwrap_or(1))?)
}

/// Seals every value again under `cipher`'s newest key and computes the blind indexes
/// again, in one transaction. Values already under the newest key are left as they are
/// (a pass run again after one that committed changes nothing but the indexes).
pub async fn rekey(db: &mut Client, cipher: &FieldCipher) -> anyhow::Result<Rekeyed> {
    let tx = db.transaction().await?;
    tx.batch_execute(LOCK_SQL)
        .await
        .context("locking the tables against writes")?;
    let from = index_version(&tx).await?;
    let to = cipher.current_version();
    let mut done = Rekeyed {
        from,
        to,
        ..Rekeyed::default()
    };
    let (answers, indexes) = answers(&tx, cipher).await?;
    done.resealed
        .push(("submissions.answers".to_owned(), answers));
    done.indexes += indexes;
    for col in &COLUMNS {
        let n = reseal(&tx, cipher, col)
            .await
            .with_context(|| format!("{}.{}", col.table, col.column))?;
        done.resealed
            .push((format!("{}.{}", col.table, col.column), n));
    }
    done.indexes += recipients(&tx, cipher).await?;
    tx.execute(
        "UPDATE settings SET data_key_version = $1, updated_at = now()",
        &[&i32::try_from(to)?],
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

async fn reseal(tx: &Transaction<'_>, cipher: &FieldCipher, col: &Column) -> anyhow::Result<u64> {
    tx.batch_execute(col.declare).await?;
    let mut n = 0u64;
    loop {
        let rows = tx.query(col.fetch, &[]).await?;
        if rows.is_empty() {
            break;
        }
        let mut keys = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        for r in &rows {
            let key: String = r.get(0);
            let sealed: &[u8] = r.get(2);
            if FieldCipher::version_of(sealed) == Some(cipher.current_version()) {
                continue;
            }
            let row: String = r.get(1);
            let at = FieldRef {
                table: col.table,
                column: col.column,
                row_id: &row,
            };
            let plain = cipher
                .decrypt(&at, sealed)
                .map_err(|e| anyhow::anyhow!("row {key}: {e}"))?;
            values.push(
                cipher
                    .encrypt(&at, &plain)
                    .map_err(|e| anyhow::anyhow!("row {key}: {e}"))?,
            );
            keys.push(key);
        }
        if !keys.is_empty() {
            tx.execute(col.update, &[&keys, &values]).await?;
            n += keys.len() as u64;
        }
    }
    tx.batch_execute("CLOSE rekey").await?;
    Ok(n)
}

/// The applications' answers (each sealed on its own, bound to the application and its
/// field) and their e-mail and telephone indexes, which need the form version's
/// definition (the first field of each kind).
async fn answers(tx: &Transaction<'_>, cipher: &FieldCipher) -> anyhow::Result<(u64, u64)> {
    tx.batch_execute(
        "DECLARE rekey NO SCROLL CURSOR FOR SELECT id, form_id, form_version, answers FROM submissions",
    )
    .await?;
    let mut definitions: HashMap<(i64, i32), FormDefinition> = HashMap::new();
    let (mut n, mut indexed) = (0u64, 0u64);
    loop {
        let rows = tx.query("FETCH 500 FROM rekey", &[]).await?;
        if rows.is_empty() {
            break;
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(rows.len());
        let mut sealed = Vec::with_capacity(rows.len());
        let mut emails: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows.len());
        let mut phones: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = r.get(0);
            let form = (r.get::<_, i64>(1), r.get::<_, i32>(2));
            let def = match definitions.entry(form) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let row = tx
                        .query_one(
                            "SELECT definition FROM form_versions WHERE form_id = $1 AND version = $2",
                            &[&form.0, &form.1],
                        )
                        .await?;
                    e.insert(
                        serde_json::from_value(row.get(0))
                            .with_context(|| format!("form {} version {}", form.0, form.1))?,
                    )
                }
            };
            let answers = decrypt_answers(cipher, id, &r.get(3))
                .map_err(|e| anyhow::anyhow!("answers of application {id}: {e}"))?;
            sealed.push(
                encrypt_answers(cipher, id, &answers)
                    .map_err(|e| anyhow::anyhow!("answers of application {id}: {e}"))?,
            );
            let (email, phone) = blind_indexes(cipher, def, &answers);
            indexed += u64::from(email.is_some()) + u64::from(phone.is_some());
            emails.push(email);
            phones.push(phone);
            ids.push(id);
        }
        tx.execute(
            "UPDATE submissions t SET answers = u.a, email_index = u.e, phone_index = u.p
               FROM unnest($1::uuid[], $2::jsonb[], $3::bytea[], $4::bytea[]) AS u(k, a, e, p)
              WHERE t.id = u.k",
            &[&ids, &sealed, &emails, &phones],
        )
        .await?;
        n += ids.len() as u64;
    }
    tx.batch_execute("CLOSE rekey").await?;
    Ok((n, indexed))
}

/// The link mails' recipient indexes (kept a day, for the per-address limit), from
/// the address in each mail not sent yet, now sealed under the newest key. A sent
/// mail's address is gone with its payload: its old index stays, still counted in
/// the municipality's daily ceiling, no longer matching its address, so that address
/// may be sent a few links more on the day of the rotation.
async fn recipients(tx: &Transaction<'_>, cipher: &FieldCipher) -> anyhow::Result<u64> {
    let rows = tx
        .query(
            "SELECT id, payload FROM outbox WHERE recipient_index IS NOT NULL AND length(payload) > 0",
            &[],
        )
        .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut indexes = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.get(0);
        let row = id.to_string();
        let plain = cipher
            .decrypt(
                &FieldRef {
                    table: "outbox",
                    column: "payload",
                    row_id: &row,
                },
                r.get(1),
            )
            .map_err(|e| anyhow::anyhow!("outbox row {id}: {e}"))?;
        // serde's message would quote the payload: only the row is named.
        let payload: serde_json::Value = serde_json::from_slice(&plain)
            .map_err(|_| anyhow::anyhow!("outbox row {id}: the payload is not JSON"))?;
        let to = payload
            .get("to")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        ids.push(id);
        indexes.push(
            cipher
                .blind_index("outbox", "recipient", &mailbox(to))
                .to_vec(),
        );
    }
    tx.execute(
        "UPDATE outbox t SET recipient_index = u.v FROM unnest($1::bigint[], $2::bytea[]) AS u(k, v) WHERE t.id = u.k",
        &[&ids, &indexes],
    )
    .await?;
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    /// The outbox query names the receipts' kind as a literal.
    #[test]
    fn receipts_are_named_as_the_mail_queue_names_them() {
        assert_eq!(crate::tenant::forms::citizen::RECEIPT_MAIL, "receipt");
        assert!(super::COLUMNS[5].declare.contains("kind = 'receipt'"));
    }
}
