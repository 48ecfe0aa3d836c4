//! Mail to applicants from the outbox: the e-mailed copy of an application
//! (受付完了メール, kind `receipt`), staff's messages about a case (kind `mail`) and
//! the link to go on with a saved form (一時保存, kind `resume`) and the link to the
//! list of one's applications (申請一覧, kind `sign_in`).
//!
//! Rows are written in the same transaction as what caused them; here they are sent
//! through the platform's SMTP relay, one tenant database at a time, oldest first.
//! A sent row keeps its time and loses its payload (recipient and text: personal
//! data that has done its job). A refused row is tried again later, at growing
//! intervals, and given up after [`MAX_ATTEMPTS`] or at once when the relay refuses
//! it for good (5xx); what is kept of a failure is the SMTP reply code or a class of
//! error, never the server's text, which may name the recipient.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::cases::{open_text, seal};
use super::forms::answers::Answers;
use super::forms::citizen::{decrypt_answers, jst, RECEIPT_MAIL};
use super::forms::definition::{FieldKind, FormDefinition};
use super::forms::resume::RESUME_MAIL;
use super::mine::SIGN_IN_MAIL;
use crate::config::{MailSettings, MailWay};
use crate::crypto::FieldCipher;
use crate::error::AppError;

/// Tries before a row is given up.
pub const MAX_ATTEMPTS: i32 = 12;
/// Rows taken per transaction: one, so each mail the relay accepted is recorded as
/// sent at once (committed before the next is sent). A restart or a database error
/// then sends again at most the one mail that was in flight, never a batch.
const BATCH: i64 = 1;

/// The rows due now, oldest first ($1: how many). SKIP LOCKED: a second server
/// delivering from the same outbox takes other rows.
pub const DUE_SQL: &str = "SELECT id, kind, submission_id, payload, attempts FROM outbox
  WHERE sent_at IS NULL AND next_attempt_at <= now()
  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// The platform's way out: an SMTP relay and the sender address.
pub struct Mailer {
    transport: Transport,
    from: Address,
}

enum Transport {
    Relay(AsyncSmtpTransport<Tokio1Executor>),
    /// Written as files, never sent ([`MailWay::Files`]).
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(s: &MailSettings) -> anyhow::Result<Self> {
        let from: Address = s
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("the sender address {:?}: {e}", s.from))?;
        let transport = match &s.way {
            MailWay::Relay { url, ca } => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("the SMTP URL: {e}"))?
                    .timeout(Some(Duration::from_secs(30)));
                if let Some(ca) = ca {
                    builder = builder.tls(tls_trusting(url, ca)?);
                }
                if let Some(host) = plain_remote(url) {
                    tracing::warn!(
                        host,
                        "mail to the SMTP relay is not encrypted: use smtps:// or ?tls=required unless the relay is on this host or a private segment"
                    );
                }
                Transport::Relay(builder.build())
            }
            MailWay::Files(dir) => {
                // Only this user reads what is written there (it names applicants).
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("the mail directory {}: {e}", dir.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                        |e| anyhow::anyhow!("the mail directory {}: {e}", dir.display()),
                    )?;
                }
                tracing::warn!(
                    dir = %dir.display(),
                    "mail is written to files and never sent (demo or training)"
                );
                Transport::Files(AsyncFileTransport::new(dir))
            }
        };
        Ok(Self { transport, from })
    }
}

/// The URL's TLS mode (as lettre reads it), with the CA certificates of `ca_file`
/// trusted besides the system's store.
fn tls_trusting(url: &str, ca_file: &std::path::Path) -> anyhow::Result<Tls> {
    let url = url::Url::parse(url).map_err(|e| anyhow::anyhow!("the SMTP URL: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let pem = std::fs::read(ca_file)
        .map_err(|e| anyhow::anyhow!("the relay's CA file {}: {e}", ca_file.display()))?;
    let cert = Certificate::from_pem(&pem)
        .ok()
        .filter(|_| pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the relay's CA file {} holds no PEM certificate",
                ca_file.display()
            )
        })?;
    let params = TlsParameters::builder(host)
        .add_root_certificate(cert)
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("TLS to the relay: {e}"))?;
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (url.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(params)),
        _ => anyhow::bail!(
            "a CA file for the relay is given, but its URL asks for no TLS: use smtps:// or ?tls=required"
        ),
    }
}

/// The relay's host when mail would travel to it in clear over the network: a
/// plain `smtp://` URL without `tls=`, to a host other than this one.
fn plain_remote(url: &str) -> Option<String> {
    let rest = url.strip_prefix("smtp://")?;
    if url.contains("tls=") {
        return None;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!local).then(|| host.to_owned())
}

/// What a municipality's mail says about itself.
#[derive(Debug, Clone)]
pub struct Letterhead {
    /// The municipality's name: the sender's display name and the signature.
    pub site: String,
    /// Where applicants look an application up (状況照会).
    pub status_url: String,
}

impl Letterhead {
    /// 申請一覧, beside the status lookup.
    fn list_url(&self) -> Option<String> {
        self.status_url
            .strip_suffix("/status")
            .map(|base| format!("{base}/my"))
    }
}

/// One mail, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// What one pass over a tenant's outbox did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    /// Refused for now: to be tried again.
    pub retrying: usize,
    /// Refused for good, or out of tries.
    pub given_up: usize,
    /// When the earliest row left is due, if any is.
    pub next_due: Option<OffsetDateTime>,
}

/// Sends every row of this tenant's outbox that is due now.
pub async fn deliver_due(
    db: &mut tokio_postgres::Client,
    cipher: &FieldCipher,
    head: &Letterhead,
    mailer: &Mailer,
) -> Result<Pass, AppError> {
    let mut pass = Pass::default();
    let mut relay_down = false;
    loop {
        let tx = db.transaction().await?;
        let rows = tx.query(DUE_SQL, &[&BATCH]).await?;
        for r in &rows {
            let (id, kind, submission, payload, attempts): (
                i64,
                String,
                Option<Uuid>,
                Vec<u8>,
                i32,
            ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            // Sealed with a newer data key than this pass holds (a rotation since it
            // began): not unreadable, only early; the next pass takes the new key.
            if FieldCipher::version_of(&payload).is_some_and(|v| v > cipher.current_version()) {
                return Err(AppError::Unavailable {
                    retry_after_secs: 5,
                });
            }
            let outcome = match compose(&tx, cipher, head, id, &kind, submission, &payload).await {
                Ok(letter) => send(mailer, &head.site, &letter).await,
                // Out of date before it could go (a link expired): given up as that.
                Err(AppError::Conflict(why)) => {
                    tracing::info!(outbox = id, reason = %why, "mail out of date; given up");
                    Err(Refused::ForGood(why))
                }
                Err(e) => {
                    tracing::warn!(outbox = id, error = %e, "mail cannot be composed; given up");
                    Err(Refused::ForGood("unreadable".into()))
                }
            };
            match outcome {
                Ok(()) => {
                    tx.execute(
                        "UPDATE outbox SET sent_at = now(), payload = ''::bytea, last_error = NULL, attempts = attempts + 1 WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                    pass.sent += 1;
                }
                Err(refused) => {
                    let (why, retry) = match &refused {
                        Refused::ForGood(why) => (why.as_str(), None),
                        Refused::ForNow(why) | Refused::RelayDown(why) => {
                            (why.as_str(), retry_after(attempts + 1))
                        }
                    };
                    if retry.is_none() {
                        tracing::warn!(outbox = id, reason = why, "mail given up");
                        pass.given_up += 1;
                    } else {
                        pass.retrying += 1;
                    }
                    let secs = retry.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                    // A link (to a saved form, or to the list of applications) given
                    // up loses its key and recipient: nothing can send it any more.
                    tx.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                                next_attempt_at = CASE WHEN $3::bigint IS NULL THEN 'infinity'::timestamptz
                                                       ELSE now() + make_interval(secs => $3::bigint) END,
                                payload = CASE WHEN $3::bigint IS NULL AND kind = ANY($4) THEN ''::bytea ELSE payload END
                          WHERE id = $1",
                        &[&id, &why, &secs, &[RESUME_MAIL, SIGN_IN_MAIL].as_slice()],
                    )
                    .await?;
                    if let (Refused::RelayDown(_), Some(wait)) = (&refused, retry) {
                        // The rest of the due rows wait as long (no try counted), so a
                        // relay that is down costs one timeout per tenant, not one per row.
                        let secs = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
                        tx.execute(
                            "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $1::bigint)
                              WHERE sent_at IS NULL AND next_attempt_at <= now()",
                            &[&secs],
                        )
                        .await?;
                        relay_down = true;
                        break;
                    }
                }
            }
        }
        tx.commit().await?;
        if relay_down || i64::try_from(rows.len()).unwrap_or(0) < BATCH {
            break;
        }
    }
    pass.next_due = db
        .query_one(
            "SELECT min(next_attempt_at) FROM outbox WHERE sent_at IS NULL AND next_attempt_at < 'infinity'",
            &[],
        )
        .await?
        .get(0);
    Ok(pass)
}

/// Queues a mail in the caller's transaction, its payload sealed to the row's own id
/// (drawn first); returns the id.
pub(crate) async fn queue(
    tx: &impl GenericClient,
    cipher: &FieldCipher,
    kind: &str,
    submission: Option<Uuid>,
    payload: &str,
) -> Result<i64, AppError> {
    let id: i64 = tx
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('outbox', 'id'))",
            &[],
        )
        .await?
        .get(0);
    let sealed = seal(cipher, "outbox", "payload", &id.to_string(), payload)?;
    tx.execute(
        "INSERT INTO outbox (id, kind, submission_id, payload) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4)",
        &[&id, &kind, &submission, &sealed],
    )
    .await?;
    Ok(id)
}

/// Link mails of a kind ($2) one mailbox ($1, its blind index) was sent in the last
/// 24 hours.
pub const LINKS_TO_SQL: &str = "SELECT count(*) FROM outbox
  WHERE recipient_index = $1 AND kind = $2 AND created_at > now() - interval '1 day'";
/// Link mails of a kind ($1) the municipality sent in the last 24 hours (each keeps
/// its recipient's blind index for a day).
const LINKS_TODAY_SQL: &str = "SELECT count(*) FROM outbox
  WHERE recipient_index IS NOT NULL AND kind = $1 AND created_at > now() - interval '1 day'";

/// Whether a link mail (一時保存, 申請一覧) may go now.
pub(crate) enum Quota {
    /// It may: the recipient's mailbox as a blind index, for [`queue_link`].
    Open(Vec<u8>),
    /// The mailbox was sent its share of this kind in the last 24 hours.
    AddressFull,
    /// The municipality mailed its share of this kind in the last 24 hours.
    MunicipalityFull,
}

/// Counts the link mails of `kind` to `to`'s mailbox (at most `per_address`) and the
/// municipality's (at most `per_day`), in the caller's transaction, which holds the
/// mailbox's lock until it ends: two requests for one address at once are counted
/// one after the other. The municipality's count takes no lock of its own: two
/// requests at the same moment may pass its ceiling by one.
pub(crate) async fn link_quota(
    tx: &impl GenericClient,
    cipher: &FieldCipher,
    kind: &str,
    to: &str,
    per_address: i64,
    per_day: i64,
) -> Result<Quota, AppError> {
    let recipient = cipher
        .blind_index("outbox", "recipient", &super::forms::resume::mailbox(to))
        .to_vec();
    let lock = i64::from_be_bytes(recipient[..8].try_into().unwrap_or_default());
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await?;
    let sent: i64 = tx
        .query_one(LINKS_TO_SQL, &[&recipient, &kind])
        .await?
        .get(0);
    if sent >= per_address {
        return Ok(Quota::AddressFull);
    }
    let all_today: i64 = tx.query_one(LINKS_TODAY_SQL, &[&kind]).await?.get(0);
    if all_today >= per_day {
        tracing::warn!(
            kind,
            limit = per_day,
            "link mails: the municipality's daily ceiling is reached"
        );
        return Ok(Quota::MunicipalityFull);
    }
    Ok(Quota::Open(recipient))
}

/// Queues a link mail ([`queue`]) keeping its recipient's blind index (from
/// [`link_quota`]) for the counts; such rows are deleted a day after they are done.
pub(crate) async fn queue_link(
    tx: &impl GenericClient,
    cipher: &FieldCipher,
    kind: &str,
    payload: &str,
    recipient: &[u8],
) -> Result<(), AppError> {
    let out = queue(tx, cipher, kind, None, payload).await?;
    tx.execute(
        "UPDATE outbox SET recipient_index = $2 WHERE id = $1",
        &[&out, &recipient],
    )
    .await?;
    Ok(())
}

/// How long to wait before try number `attempt` (2, 3, …): a minute, doubling, at
/// most six hours; `None` once [`MAX_ATTEMPTS`] are spent (about 20 hours after the first).
pub fn retry_after(attempt: i32) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let doublings = u32::try_from(attempt.max(1) - 1).unwrap_or(0).min(16);
    Some(Duration::from_secs((60u64 << doublings).min(6 * 3600)))
}

enum Refused {
    /// 4xx from the relay: worth trying again.
    ForNow(String),
    /// No answer at all (connection refused or lost, a timeout, TLS): the relay is
    /// down, so the other rows would only wait for the same failure.
    RelayDown(String),
    /// 5xx or an address no server would take.
    ForGood(String),
}

/// The longest one mail's SMTP exchange may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(90);

async fn send(mailer: &Mailer, site: &str, letter: &Letter) -> Result<(), Refused> {
    let to: Mailbox = letter
        .to
        .parse()
        .map_err(|_| Refused::ForGood("invalid recipient address".into()))?;
    let message = Message::builder()
        .from(Mailbox::new(Some(site.to_owned()), mailer.from.clone()))
        .to(to)
        .subject(&letter.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(
            Body::new_with_encoding(letter.body.clone(), ContentTransferEncoding::Base64)
                .map_err(|_| Refused::ForGood("body".into()))?,
        )
        .map_err(|e| Refused::ForGood(format!("message: {e}")))?;
    // The whole exchange is bounded (lettre's timeout is per read or write): it runs
    // inside the outbox's transaction.
    let relay = match &mailer.transport {
        Transport::Relay(relay) => relay,
        Transport::Files(files) => {
            return match files.send(message).await {
                Ok(_) => Ok(()),
                // The directory gone or full: as a relay that does not answer.
                Err(_) => Err(Refused::RelayDown("file".into())),
            };
        }
    };
    let sent = tokio::time::timeout(SEND_TIMEOUT, relay.send(message))
        .await
        .map_err(|_| Refused::RelayDown("timeout".into()))?;
    match sent {
        Ok(_) => Ok(()),
        Err(e) => match e.status() {
            Some(code) if e.is_permanent() => Err(Refused::ForGood(format!("smtp {code}"))),
            Some(code) => Err(Refused::ForNow(format!("smtp {code}"))),
            None if e.is_timeout() => Err(Refused::RelayDown("timeout".into())),
            None if e.is_tls() || tls_failed(&e) => Err(Refused::RelayDown("tls".into())),
            None => Err(Refused::RelayDown("connection".into())),
        },
    }
}

/// Whether a failure came from TLS (the relay's certificate not trusted, a failed
/// handshake), which lettre reports as a connection error around rustls's.
fn tls_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let io_inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        if c.is::<rustls::Error>() || io_inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Makes the mail an outbox row stands for, from its payload and the submission.
async fn compose(
    db: &impl GenericClient,
    cipher: &FieldCipher,
    head: &Letterhead,
    id: i64,
    kind: &str,
    submission: Option<Uuid>,
    payload: &[u8],
) -> Result<Letter, AppError> {
    if kind == RESUME_MAIL {
        return resume_letter(cipher, head, id, payload);
    }
    if kind == SIGN_IN_MAIL {
        return sign_in_letter(cipher, head, id, payload);
    }
    let submission = submission.ok_or(AppError::NotFound)?;
    // Receipts are sealed to their submission (see `RECEIPT_MAIL`), the rest to their own row.
    let bound = if kind == RECEIPT_MAIL {
        submission.to_string()
    } else {
        id.to_string()
    };
    let payload: serde_json::Value =
        serde_json::from_str(&open_text(cipher, "outbox", "payload", &bound, payload)?)
            .map_err(|e| AppError::Internal(e.into()))?;
    let field = |k: &str| payload.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let s = db
        .query_opt(
            "SELECT s.receipt_number, s.submitted_at, s.answers, v.definition,
                    (SELECT o.created_at FROM outbox o WHERE o.id = $2), f.contact_name, f.contact
               FROM submissions s
               JOIN form_versions v ON v.form_id = s.form_id AND v.version = s.form_version
               JOIN forms f ON f.id = s.form_id
              WHERE s.id = $1",
            &[&submission, &id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let (receipt, at): (String, OffsetDateTime) = (s.get(0), s.get(1));
    let def: FormDefinition = serde_json::from_value(s.get(3))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored form definition: {e}")))?;
    let answers = decrypt_answers(cipher, submission, &s.get(2))?;
    // The department's 問い合わせ先, else the municipality's: this address takes no replies.
    let contact = contact_block(s.get(5), s.get(6));
    let letter = match field("template") {
        t @ ("received" | "resubmitted") => Letter {
            to: field("to").to_owned(),
            subject: format!(
                "【{}】{} {}のお知らせ（受付番号 {receipt}）",
                head.site,
                def.title,
                if t == "received" { "受付完了" } else { "修正受付" }
            ),
            // A correction's copy gives when the correction was received (its mail
            // was queued in the same transaction), not the first application's time.
            body: receipt_body(
                head,
                &def,
                &answers,
                &receipt,
                if t == "resubmitted" {
                    s.get::<_, Option<OffsetDateTime>>(4).unwrap_or(at)
                } else {
                    at
                },
                t == "resubmitted",
                &contact,
            ),
        },
        "case_message" => Letter {
            to: first_email(&def, &answers).ok_or(AppError::NotFound)?,
            subject: format!("【{}】{} についてのお知らせ（受付番号 {receipt}）", head.site, def.title),
            body: format!(
                "{title}（受付番号 {receipt}）について、担当からのお知らせです。\n\n{text}\n\n\
                 申請の状況とこれまでのお知らせは、受付番号とメールアドレスで次のページから確認できます。\n{url}\n\n{contact}{foot}",
                title = def.title,
                text = field("body"),
                url = head.status_url,
                foot = footer(&head.site),
            ),
        },
        other => {
            return Err(AppError::Internal(anyhow::anyhow!(
                "unknown mail template {other:?}"
            )))
        }
    };
    if letter.to.is_empty() {
        return Err(AppError::NotFound);
    }
    Ok(letter)
}

/// The link to go on with a saved form (一時保存). Nothing the person typed is in
/// it: only the form's title, the link and until when it works.
fn resume_letter(
    cipher: &FieldCipher,
    head: &Letterhead,
    id: i64,
    payload: &[u8],
) -> Result<Letter, AppError> {
    let payload = LinkPayload::open(cipher, id, payload)?;
    let field = |k| payload.text(k);
    let (to, title, url, until) = (field("to"), field("title"), field("url"), field("until"));
    Ok(Letter {
        to: to.to_owned(),
        subject: format!("【{}】{title} 入力の続きのご案内", head.site),
        body: format!(
            "{title} の入力内容を一時保存しました。\n\
             次のリンクを開くと、続きから入力できます。スマートフォンでもパソコンでも開けます。\n\n\
             {url}\n\n\
             有効期限: {until}\n\n\
             ・まだ申請は完了していません。最後に「送信する」を押すと申請になります。\n\
             ・このリンクを知っている人は、入力内容を見ることができます。他の人に転送しないでください。\n\
             ・リンクを開いて続きを始めると、このリンクは使えなくなります。\n\n{foot}",
            foot = footer(&head.site),
        ),
    })
}

/// A link mail's payload (一時保存, 申請一覧), sealed to its own outbox row, as JSON.
struct LinkPayload(serde_json::Value);

impl LinkPayload {
    /// Opened; `NotFound` without a recipient or a link (nothing to send).
    fn open(cipher: &FieldCipher, id: i64, sealed: &[u8]) -> Result<Self, AppError> {
        let json = open_text(cipher, "outbox", "payload", &id.to_string(), sealed)?;
        let payload = Self(serde_json::from_str(&json).map_err(|e| AppError::Internal(e.into()))?);
        if payload.text("to").is_empty() || payload.text("url").is_empty() {
            return Err(AppError::NotFound);
        }
        Ok(payload)
    }

    /// A text field, or "" when missing.
    fn text(&self, key: &str) -> &str {
        self.0.get(key).and_then(|v| v.as_str()).unwrap_or_default()
    }
}

/// 申請一覧: the link to see the applications sent with this address, or, to an
/// address no application was sent with, that none was (and where to look one up by
/// its receipt number). Nothing about any application is in it.
fn sign_in_letter(
    cipher: &FieldCipher,
    head: &Letterhead,
    id: i64,
    payload: &[u8],
) -> Result<Letter, AppError> {
    let payload = LinkPayload::open(cipher, id, payload)?;
    let field = |k| payload.text(k);
    let (to, url, until) = (field("to"), field("url"), field("until"));
    let payload = &payload.0;
    // A link that could not go out before it expired would only disappoint.
    let expires = payload.get("expires").and_then(serde_json::Value::as_i64);
    if expires.is_some_and(|e| e <= OffsetDateTime::now_utc().unix_timestamp()) {
        return Err(AppError::Conflict("expired".into()));
    }
    let foot = footer(&head.site);
    let body = if payload
        .get("none")
        .is_some_and(|v| v.as_bool() == Some(true))
    {
        format!(
            "申請一覧を見るためのリンクのご依頼を受け付けましたが、このメールアドレスで受け付けた申請は見つかりませんでした。\n\n\
             ・申請のときに別のメールアドレスを入力した可能性があります。そのアドレスでもう一度お試しください。\n\
             ・受付番号がわかる場合は、次のページから状況を確認できます。\n{url}\n\n{foot}"
        )
    } else {
        format!(
            "このメールアドレスで受け付けた申請の一覧を見るためのリンクです。\n\
             次のリンクを開き、「申請一覧を開く」を押してください。\n\n\
             {url}\n\n\
             有効期限: {until}（1回だけ使えます）\n\n\
             ・このリンクを知っている人は、申請の一覧と状況を見ることができます。他の人に転送しないでください。\n\
             ・お心当たりのない場合は、リンクを開かずにこのメールを破棄してください。\n\n{foot}"
        )
    };
    Ok(Letter {
        to: to.to_owned(),
        subject: format!("【{}】申請一覧のご案内", head.site),
        body,
    })
}

fn first_email(def: &FormDefinition, answers: &Answers) -> Option<String> {
    def.fields()
        .filter(|f| matches!(f.kind, FieldKind::Email {}))
        .find_map(|f| answers.get(&f.id).map(|a| a.display()))
}

/// The applicant's copy: receipt number, time (和暦 and 西暦), every answer.
fn receipt_body(
    head: &Letterhead,
    def: &FormDefinition,
    answers: &Answers,
    receipt: &str,
    at: OffsetDateTime,
    corrected: bool,
    contact: &str,
) -> String {
    let mut body = if corrected {
        format!("「{}」の修正を受け付けました。\n", def.title)
    } else {
        format!("「{}」のお申し込みを受け付けました。\n", def.title)
    };
    body.push_str("このメールは申請の控えです。大切に保管してください。\n\n");
    body.push_str(&format!("受付番号: {receipt}\n受付日時: {}\n\n", jst(at)));
    if def.settings.mail_without_answers {
        body.push_str("申請内容は、このメールには記載していません。\n");
    } else {
        body.push_str("― 申請内容 ―\n");
        for f in def.fields() {
            if let Some(a) = answers.get(&f.id) {
                let label = if f.label.is_empty() { &f.id } else { &f.label };
                body.push_str(&format!("{label}: {}\n", a.display()));
            }
        }
    }
    body.push_str(&format!(
        "\n申請の状況は、受付番号とこのメールアドレスで次のページから確認できます。\n{}\n",
        head.status_url,
    ));
    if let Some(list) = head.list_url() {
        body.push_str(&format!(
            "このメールアドレスで受け付けた申請の一覧は、次のページから確認できます。\n{list}\n"
        ));
    }
    body.push_str(&format!("\n{contact}{}", footer(&head.site)));
    body
}

/// 問い合わせ先 as a mail paragraph (empty when neither the department nor the
/// municipality wrote one).
fn contact_block(department: String, text: String) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("― お問い合わせ先 ―\n{department}\n{}\n\n", text.trim())
    }
}

fn footer(site: &str) -> String {
    format!(
        "このメールは送信専用のアドレスからお送りしています。ご返信いただいてもお答えできません。\n\
         お心当たりのない場合は、このメールを破棄してください。\n\n{site}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 申請一覧's mail: the link while it works, given up (`expired`) once it has
    /// expired, and to an address without applications, word that none was found.
    #[test]
    fn a_list_link_goes_out_only_while_it_works() {
        let cipher = FieldCipher::new(
            Uuid::new_v4(),
            vec![(1, crate::crypto::DataKey::generate())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let head = Letterhead {
            site: "千代田区".into(),
            status_url: "https://chiyoda.example.jp/status".into(),
        };
        let sealed = |id: i64, payload: serde_json::Value| {
            seal(
                &cipher,
                "outbox",
                "payload",
                &id.to_string(),
                &payload.to_string(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let link = "https://chiyoda.example.jp/my/open/KEY";
        let live = sealed(
            1,
            serde_json::json!({ "to": "a@example.jp", "url": link, "until": "…", "expires": now + 600 }),
        );
        let letter = sign_in_letter(&cipher, &head, 1, &live).ok();
        assert!(
            letter.as_ref().is_some_and(|l| l.to == "a@example.jp"
                && l.subject == "【千代田区】申請一覧のご案内"
                && l.body.contains(link)),
            "{letter:?}"
        );
        let late = sealed(
            2,
            serde_json::json!({ "to": "a@example.jp", "url": link, "until": "…", "expires": now - 1 }),
        );
        assert!(matches!(
            sign_in_letter(&cipher, &head, 2, &late),
            Err(AppError::Conflict(why)) if why == "expired"
        ));
        let none = sealed(
            3,
            serde_json::json!({ "to": "b@example.jp", "url": head.status_url, "none": true }),
        );
        let letter = sign_in_letter(&cipher, &head, 3, &none).ok();
        assert!(
            letter.as_ref().is_some_and(
                |l| l.body.contains("見つかりませんでした") && !l.body.contains("/my/open/")
            ),
            "{letter:?}"
        );
        // Sealed to its own row: another row's id does not open it.
        assert!(sign_in_letter(&cipher, &head, 4, &live).is_err());
    }

    #[test]
    fn plain_mail_to_another_host_is_noticed() {
        assert_eq!(
            plain_remote("smtp://relay.city.lg.jp:25").as_deref(),
            Some("relay.city.lg.jp")
        );
        assert_eq!(
            plain_remote("smtp://user:p%40ss@10.0.0.5").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(plain_remote("smtp://127.0.0.1:2525"), None);
        assert_eq!(plain_remote("smtp://[::1]:25"), None);
        assert_eq!(plain_remote("smtp://localhost"), None);
        assert_eq!(plain_remote("smtp://relay.example:587?tls=required"), None);
        assert_eq!(plain_remote("smtps://relay.example"), None);
    }

    #[test]
    fn retries_double_from_a_minute_to_six_hours_then_stop() {
        let waits: Vec<Option<u64>> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_after(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            waits,
            [
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(960),
                Some(1920),
                Some(3840),
                Some(7680),
                Some(15360),
                Some(21600),
                Some(21600),
                None
            ]
        );
    }
}
