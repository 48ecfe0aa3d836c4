//! Mail to applicants through a real SMTP exchange (an SMTP server in this process):
//! the e-mailed copy of an application, a relay that refuses for now and then takes
//! it, staff's message about a case, a recipient refused for good, mail left queued
//! across a restart, a relay that is down, and relays reached over STARTTLS and TLS
//! whose certificate a private CA signed.

use std::time::Duration;

use madoguchi::config::MailSettings;
use madoguchi::front::Server;
use madoguchi::tenant::staff::Role;
use uuid::Uuid;

use crate::forms::{apply, build_form, dept_id, post, staff};
use crate::harness::{unique, url, TestEnv};
use crate::smtp::{Security, SmtpServer};

const FROM: &str = "noreply@madoguchi.example";

/// The outbox row of a submission's e-mailed copy: attempts, last error, sent, payload length.
async fn receipt_row(
    db: &tokio_postgres::Client,
    id: Uuid,
) -> (i32, Option<String>, bool, usize, bool) {
    let r = db
        .query_one(
            "SELECT attempts, last_error, sent_at IS NOT NULL, length(payload), next_attempt_at = 'infinity'
               FROM outbox WHERE submission_id = $1 AND kind = 'receipt'",
            &[&id],
        )
        .await
        .unwrap();
    (
        r.get(0),
        r.get(1),
        r.get(2),
        usize::try_from(r.get::<_, i32>(3)).unwrap(),
        r.get(4),
    )
}

/// Mail through the relay at `url` (plain SMTP), from [`FROM`].
pub fn relay(url: &str) -> MailSettings {
    MailSettings::relay(url, FROM, None)
}

/// The id of the submission with this receipt number.
async fn submission_id(db: &tokio_postgres::Client, receipt: &str) -> Uuid {
    db.query_one(
        "SELECT id FROM submissions WHERE receipt_number = $1",
        &[&receipt],
    )
    .await
    .unwrap()
    .get(0)
}

/// An application whose e-mailed copy the relay refuses for now: its receipt number
/// and id, once the server has tried the copy (the row then waits for a later try).
async fn refused_once(
    smtp: &SmtpServer,
    server: &Server,
    db: &tokio_postgres::Client,
    host: &str,
    public: &str,
) -> (String, Uuid) {
    smtp.refuse_next_for_now();
    let receipt = apply(server, host, public, "その他").await.unwrap();
    let id = submission_id(db, &receipt).await;
    tried(db, id, 1).await;
    (receipt, id)
}

/// Makes the submission's waiting copy due now.
async fn make_due(db: &tokio_postgres::Client, id: Uuid) {
    db.execute(
        "UPDATE outbox SET next_attempt_at = now() WHERE submission_id = $1",
        &[&id],
    )
    .await
    .unwrap();
}

/// Waits (up to 20 s) until the deliverer has tried the copy `tries` times.
async fn tried(db: &tokio_postgres::Client, id: Uuid, tries: i32) {
    for _ in 0..200 {
        if receipt_row(db, id).await.0 >= tries {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the e-mailed copy was not tried {tries} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applicants_get_their_copy_and_messages_by_mail() {
    let smtp = SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| {
        s.mail = Some(relay(&relay_url));
    })
    .await;
    let t = env.tenant(&unique("a"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (form_id, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;

    // The relay refuses the first try for now: the copy waits, with the reply code.
    let (receipt, id) = refused_once(&smtp, &server, &db, host, &public).await;
    let (attempts, error, sent, _, given_up) = receipt_row(&db, id).await;
    assert_eq!(
        (attempts, error.as_deref(), sent, given_up),
        (1, Some("smtp 451"), false, false)
    );
    assert!(smtp.received().is_empty());
    let wait: f64 = db
        .query_one(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM outbox WHERE submission_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!((30.0..=61.0).contains(&wait), "next try in {wait} s");

    // When it is due again it goes (here: made due now, and delivered directly).
    make_due(&db, id).await;
    let mailer = madoguchi::tenant::mail::Mailer::new(&relay(&relay_url)).unwrap();
    let cipher = madoguchi::control::tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    let status_url = url(&server, host, "/status");
    let head = madoguchi::tenant::mail::Letterhead {
        site: t.name.clone(),
        status_url: status_url.clone(),
    };
    let mut conn = env.tenant_conn(&t).await.client;
    let pass = madoguchi::tenant::mail::deliver_due(&mut conn, &cipher, &head, &mailer)
        .await
        .unwrap();
    assert_eq!(
        (pass.sent, pass.retrying, pass.given_up, pass.next_due),
        (1, 0, 0, None)
    );
    let mails = smtp.wait_for(1).await;
    let copy = &mails[0];
    assert_eq!(copy.to, ["hanako.kasai@example.jp"]);
    assert_eq!(copy.from, format!("<{FROM}>"));
    assert_eq!(
        copy.header("Subject"),
        format!("【千代田区】粗大ごみ収集申込 受付完了のお知らせ（受付番号 {receipt}）")
    );
    assert!(
        copy.header("From").contains("千代田区"),
        "{}",
        copy.header("From")
    );
    let body = copy.body();
    for part in [
        format!("受付番号: {receipt}"),
        "古いピアノ椅子".to_owned(),
        "収集希望日: 2031年7月19日（令和13年7月19日）".to_owned(),
        "葛\u{E0100}西".to_owned(),
        status_url.clone(),
        // 申請一覧, beside it.
        url(&server, host, "/my"),
    ] {
        assert!(body.contains(&part), "{part} missing from:\n{body}");
    }
    // No 問い合わせ先 written yet: none in the mail.
    assert!(!body.contains("お問い合わせ先"), "{body}");
    // Sent: the time is kept, the recipient and text are not.
    let (attempts, error, sent, payload, _) = receipt_row(&db, id).await;
    assert_eq!((attempts, error, sent, payload), (2, None, true, 0));
    // The municipality's 代表の問い合わせ先, written now, is in the mails that follow
    // (the sender takes no replies) while the department has none of its own.
    let (status, _, _) = post(
        &admin.client,
        &url(&server, host, "/admin/contact"),
        &[("csrf", &admin.csrf), ("contact", "代表電話 03-0000-0000")],
    )
    .await;
    assert_eq!(status, 303);

    // Staff write to the applicant: the server delivers it by itself.
    let case = url(&server, host, &format!("/admin/submissions/{id}"));
    let (status, _, _) = post(
        &admin.client,
        &format!("{case}/notes"),
        &[
            ("csrf", &admin.csrf),
            ("kind", "message"),
            ("body", "収集日を7月20日に変更しました。"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let mails = smtp.wait_for(2).await;
    let message = &mails[1];
    assert_eq!(message.to, ["hanako.kasai@example.jp"]);
    assert_eq!(
        message.header("Subject"),
        format!("【千代田区】粗大ごみ収集申込 についてのお知らせ（受付番号 {receipt}）")
    );
    assert!(message.body().contains("収集日を7月20日に変更しました。"));
    assert!(
        message
            .body()
            .replace("\r\n", "\n")
            .contains("― お問い合わせ先 ―\n千代田区\n代表電話 03-0000-0000\n"),
        "{}",
        message.body()
    );
    // The department's own, once written, instead.
    let (status, _, _) = post(
        &admin.client,
        &url(&server, host, &format!("/admin/departments/{dept}/contact")),
        &[
            ("csrf", &admin.csrf),
            ("contact", "電話 03-0000-5678（平日 9:00〜17:00）"),
        ],
    )
    .await;
    assert_eq!(status, 303);

    // A recipient refused for good is given up at once, and nothing else is held up.
    smtp.refuse_next_for_good();
    let refused = apply(&server, host, &public, "ソファ").await.unwrap();
    let refused = submission_id(&db, &refused).await;
    tried(&db, refused, 1).await;
    let (attempts, error, sent, _, given_up) = receipt_row(&db, refused).await;
    assert_eq!(
        (attempts, error.as_deref(), sent, given_up),
        (1, Some("smtp 550"), false, true)
    );
    let third = apply(&server, host, &public, "ソファ").await.unwrap();
    let mails = smtp.wait_for(3).await;
    let body = mails[2].body().replace("\r\n", "\n");
    assert!(body.contains(&format!("受付番号: {third}")), "{body}");
    assert!(
        body.contains("― お問い合わせ先 ―\n環境政策課\n電話 03-0000-5678（平日 9:00〜17:00）\n")
            && !body.contains("代表電話"),
        "{body}"
    );
    // A form whose answers should not travel by mail: the copy has the receipt number
    // and the link, not the answers (the builder's setting, in the next version).
    let base = url(&server, host, &format!("/admin/forms/{form_id}"));
    let (status, _, saved) = post(
        &admin.client,
        &format!("{base}/settings"),
        &[
            ("csrf", &admin.csrf),
            ("title", "粗大ごみ収集申込"),
            ("department", &dept),
            ("zones_shown", "1"),
            ("zone", "internet"),
            ("zone", "lgwan"),
            ("mail_without_answers", "yes"),
        ],
    )
    .await;
    assert!(
        status == 200
            && saved.contains("設定を保存しました")
            && saved.contains(r#"id="s-mail" name="mail_without_answers" value="yes" checked"#),
        "{saved}"
    );
    let (status, _, page) = post(
        &admin.client,
        &format!("{base}/publish"),
        &[("csrf", &admin.csrf)],
    )
    .await;
    assert!(
        status == 200 && page.contains("第2版を公開しました"),
        "{page}"
    );
    let fourth = apply(&server, host, &public, "その他").await.unwrap();
    let mails = smtp.wait_for(4).await;
    let body = mails[3].body();
    assert!(body.contains(&format!("受付番号: {fourth}")), "{body}");
    assert!(
        body.contains("申請内容は、このメールには記載していません。"),
        "{body}"
    );
    for answer in ["古いピアノ椅子", "花子", "2031年7月19日"] {
        assert!(!body.contains(answer), "{answer} in:\n{body}");
    }

    // Staff see on the case how its mail went.
    let (_, _, page) = crate::forms::get(
        &admin.client,
        &url(&server, host, &format!("/admin/submissions/{refused}")),
    )
    .await;
    assert!(
        page.contains("受付・修正受付の控え</td><td>送信できませんでした（smtp 550）"),
        "{page}"
    );
    let (_, _, page) = crate::forms::get(&admin.client, &case).await;
    assert!(page.contains("<td>送信済み "), "{page}");
    assert!(page.contains("メッセージ・差戻しの通知"), "{page}");
    // What the server itself tried is counted for the operators' monitoring (the
    // delivery made directly above is not the server's).
    let (_, _, metrics) = crate::forms::get(
        &reqwest::Client::new(),
        &crate::console::ops_url(&server, "/metrics"),
    )
    .await;
    for line in [
        r#"madoguchi_mail_attempts_total{outcome="sent"} 3"#,
        r#"madoguchi_mail_attempts_total{outcome="retrying"} 1"#,
        r#"madoguchi_mail_attempts_total{outcome="given_up"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    server.shutdown().await;
}

/// A municipality with a published form whose mail goes to a test relay, and whose
/// deliverer sweeps a second after a server starts (so a restart is quick to see).
struct Restartable {
    smtp: SmtpServer,
    relay_url: String,
    env: TestEnv,
    t: madoguchi::catalog::TenantRecord,
    server: Server,
    public: String,
    db: tokio_postgres::Client,
}

async fn restartable() -> Restartable {
    let smtp = SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| {
        s.mail = Some(relay(&relay_url));
        s.mail_sweep_after = Duration::from_secs(1);
    })
    .await;
    let t = env.tenant(&unique("r"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;
    Restartable {
        smtp,
        relay_url,
        env,
        t,
        server,
        public,
        db,
    }
}

/// Mail still queued when a server stops goes out from the next server's first
/// sweep, though no request tells that server about it; and a nudge that comes
/// before the deliverer's task first runs is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_left_queued_by_a_stopped_server_goes_out_after_a_restart() {
    let Restartable {
        smtp,
        relay_url,
        env,
        t,
        server,
        public,
        db,
    } = restartable().await;
    let host = t.hosts[0].as_str();

    // The relay refuses for now; the server stops before the copy's next try.
    let (receipt, id) = refused_once(&smtp, &server, &db, host, &public).await;
    server.shutdown().await;
    make_due(&db, id).await;
    assert!(smtp.received().is_empty());

    // A new server, sent no request at all, finds and delivers it.
    let server = env.serve().await;
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].header("Subject").contains(&receipt),
        "{}",
        mails[0].header("Subject")
    );
    tried(&db, id, 2).await;
    let (attempts, error, sent, payload, _) = receipt_row(&db, id).await;
    assert_eq!((attempts, error, sent, payload), (2, None, true, 0));

    // Another copy left behind, and a deliverer started by hand with its sweep an
    // hour away: a handler's nudge between `mail::run` and the task's first turn is
    // kept, so the copy goes at once.
    let (second, second_id) = refused_once(&smtp, &server, &db, host, &public).await;
    server.shutdown().await;
    make_due(&db, second_id).await;
    let app = madoguchi::front::App::new(&env.platform).unwrap();
    let deliverer = madoguchi::front::mail::run(
        std::sync::Arc::clone(&app),
        madoguchi::tenant::mail::Mailer::new(&relay(&relay_url)).unwrap(),
        madoguchi::front::mail::LinkBase {
            https: false,
            port: None,
        },
        Duration::from_secs(3600),
    );
    app.mail.queued(t.id);
    let task = tokio::spawn(deliverer);
    let mails = smtp.wait_for(2).await;
    assert!(
        mails[1].header("Subject").contains(&second),
        "{}",
        mails[1].header("Subject")
    );
    tried(&db, second_id, 2).await;
    task.abort();
    app.pools.close_all();
}

/// Each mail the relay accepts is recorded as sent before the next is sent, so a
/// restart (or a database error) in the middle of a pass sends none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_accepted_mail_is_recorded_before_the_next_is_sent() {
    let Restartable {
        smtp,
        relay_url: _,
        env,
        t,
        server,
        public,
        db,
    } = restartable().await;
    let host = t.hosts[0].as_str();
    // Two copies waiting, due together when a new server starts.
    let (_, first) = refused_once(&smtp, &server, &db, host, &public).await;
    let (_, second) = refused_once(&smtp, &server, &db, host, &public).await;
    server.shutdown().await;
    db.execute(
        "UPDATE outbox SET next_attempt_at = now() - interval '1 second' WHERE submission_id = ANY($1)",
        &[&vec![first, second]],
    )
    .await
    .unwrap();
    // The relay takes one mail, then holds the next.
    smtp.stall_after(1);
    let server = env.serve().await;
    smtp.wait_for(1).await;
    let mut recorded = false;
    for _ in 0..100 {
        let sent: i64 = db
            .query_one("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        if sent == 1 {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recorded,
        "a mail the relay accepted was not recorded while the next was sent"
    );
    smtp.release();
    smtp.wait_for(2).await;
    tried(&db, second, 2).await;
    assert_eq!(smtp.received().len(), 2);
    server.shutdown().await;
}

/// A relay that does not answer costs one try per pass, not one per mail: the first
/// row counts a failed try, the others wait as long without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_holds_the_whole_outbox_back() {
    // No relay set for the server: the test delivers by itself.
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("down"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    for _ in 0..3 {
        apply(&server, host, &public, "その他").await.unwrap();
    }
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mailer =
        madoguchi::tenant::mail::Mailer::new(&relay(&format!("smtp://127.0.0.1:{port}"))).unwrap();
    let cipher = madoguchi::control::tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    let head = madoguchi::tenant::mail::Letterhead {
        site: t.name.clone(),
        status_url: url(&server, host, "/status"),
    };
    let mut db = env.tenant_conn(&t).await.client;
    let pass = madoguchi::tenant::mail::deliver_due(&mut db, &cipher, &head, &mailer)
        .await
        .unwrap();
    assert_eq!((pass.sent, pass.retrying, pass.given_up), (0, 1, 0));
    let rows: Vec<(i32, Option<String>, f64)> = db
        .query(
            "SELECT attempts, last_error, extract(epoch FROM next_attempt_at - now())::float8 FROM outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].0, rows[0].1.as_deref()), (1, Some("connection")));
    for (attempts, error, wait) in &rows {
        assert!((30.0..=61.0).contains(wait), "{rows:?}");
        if error.is_none() {
            assert_eq!(*attempts, 0, "{rows:?}");
        }
    }
    assert!(pass.next_due.is_some());
    server.shutdown().await;
}

/// One delivery pass that must send the one copy due, over TLS, to `relay`.
struct SentOverTls<'a> {
    cipher: &'a madoguchi::crypto::FieldCipher,
    head: &'a madoguchi::tenant::mail::Letterhead,
}

impl SentOverTls<'_> {
    async fn check(
        &self,
        db: &mut tokio_postgres::Client,
        mailer: &madoguchi::tenant::mail::Mailer,
        relay: &SmtpServer,
        receipt: &str,
    ) {
        let pass = madoguchi::tenant::mail::deliver_due(db, self.cipher, self.head, mailer)
            .await
            .unwrap();
        assert_eq!((pass.sent, pass.retrying, pass.given_up), (1, 0, 0));
        let mails = relay.wait_for(1).await;
        assert!(mails[0].tls, "sent in clear");
        assert!(
            mails[0].header("Subject").contains(receipt),
            "{:?}",
            mails[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_tls_are_checked_against_the_system_and_the_given_ca() {
    // A private CA and a certificate for 127.0.0.1 that it signed; relays with
    // STARTTLS and with TLS from the start, both with that certificate.
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = crate::harness::loopback_tls(dir.path());
    let starttls = SmtpServer::start_with(Security::StartTls(acceptor.clone())).await;
    let wrapper = SmtpServer::start_with(Security::Wrapper(acceptor)).await;
    let starttls_url = format!("smtp://127.0.0.1:{}?tls=required", starttls.port);
    let mailer = |url: &str, ca: Option<&std::path::Path>| {
        madoguchi::tenant::mail::Mailer::new(&MailSettings::relay(
            url,
            FROM,
            ca.map(std::path::Path::to_path_buf),
        ))
    };

    // No relay set for the server: the test delivers by itself.
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("tls"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let cipher = madoguchi::control::tenant_admin::tenant_cipher(&env.platform, &t)
        .await
        .unwrap();
    let head = madoguchi::tenant::mail::Letterhead {
        site: t.name.clone(),
        status_url: url(&server, host, "/status"),
    };
    let mut db = env.tenant_conn(&t).await.client;
    let first = apply(&server, host, &public, "その他").await.unwrap();

    // Trusting only the system's store, the private CA's certificate is refused:
    // nothing is sent, the copy waits with the class of error.
    let plain_trust = mailer(&starttls_url, None).unwrap();
    let pass = madoguchi::tenant::mail::deliver_due(&mut db, &cipher, &head, &plain_trust)
        .await
        .unwrap();
    assert_eq!((pass.sent, pass.retrying, pass.given_up), (0, 1, 0));
    let error: Option<String> = db
        .query_one("SELECT last_error FROM outbox WHERE kind = 'receipt'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(error.as_deref(), Some("tls"));
    assert!(starttls.received().is_empty());

    // With the CA given, the copy goes over STARTTLS.
    db.execute("UPDATE outbox SET next_attempt_at = now()", &[])
        .await
        .unwrap();
    let trusting = mailer(&starttls_url, Some(&ca)).unwrap();
    let over_tls = SentOverTls {
        cipher: &cipher,
        head: &head,
    };
    over_tls.check(&mut db, &trusting, &starttls, &first).await;

    // And over TLS from the start (smtps://).
    let second = apply(&server, host, &public, "その他").await.unwrap();
    let smtps = mailer(&format!("smtps://127.0.0.1:{}", wrapper.port), Some(&ca)).unwrap();
    over_tls.check(&mut db, &smtps, &wrapper, &second).await;

    // A CA for a relay reached in clear is a mistake, and so is a file without one.
    let err = mailer(&format!("smtp://127.0.0.1:{}", starttls.port), Some(&ca)).unwrap_err();
    assert!(format!("{err:#}").contains("asks for no TLS"), "{err:#}");
    let not_pem = dir.path().join("server.key.txt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let err = mailer(&starttls_url, Some(&not_pem)).unwrap_err();
    assert!(
        format!("{err:#}").contains("holds no PEM certificate"),
        "{err:#}"
    );
    server.shutdown().await;
}

/// A correction's e-mailed copy says when the correction was received, not when the
/// application first was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrections_copy_gives_the_time_the_correction_was_received() {
    let Restartable {
        smtp,
        t,
        server,
        public,
        db,
        ..
    } = restartable().await;
    let host = t.hosts[0].as_str();
    let receipt = apply(&server, host, &public, "ソファ").await.unwrap();
    smtp.wait_for(1).await;
    let id = submission_id(&db, &receipt).await;
    // Applied for three days ago, returned for correction since.
    db.execute(
        "UPDATE submissions SET status = 'returned', submitted_at = submitted_at - interval '3 days' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let day = |t: time::OffsetDateTime| {
        let d = t.to_offset(time::macros::offset!(+9)).date();
        format!("{}年{}月{}日", d.year(), u8::from(d.month()), d.day())
    };
    let now = time::OffsetDateTime::now_utc();
    let c = crate::forms::browser(&server, &[host]);
    let u = |p: &str| url(&server, host, p);
    let (status, loc, body) = crate::forms::post(
        &c,
        &u("/status/resubmit"),
        &[("receipt", &receipt), ("email", "hanako.kasai@example.jp")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, page) = crate::forms::get(&c, &u(&loc)).await;
    let token = crate::forms::capture(r#"name="_token" value="([^"]+)""#, &page);
    for (page, fields) in [
        (
            "0",
            vec![
                ("name.family", "葛西"),
                ("name.given", "花子"),
                ("name.family_kana", "カサイ"),
                ("name.given_kana", "ハナコ"),
                ("email", "hanako.kasai@example.jp"),
                ("kind", "ソファ"),
            ],
        ),
        ("1", vec![("date", "2031-08-20")]),
    ] {
        let mut form = vec![
            ("_token", token.as_str()),
            ("_page", page),
            ("_nav", "next"),
        ];
        form.extend(fields);
        let (status, _, body) = crate::forms::post(&c, &u(&loc), &form).await;
        assert_eq!(status, 303, "{body}");
    }
    let (status, _, body) =
        crate::forms::post(&c, &u(&format!("{loc}/submit")), &[("_token", &token)]).await;
    assert_eq!(status, 303, "{body}");
    let mails = smtp.wait_for(2).await;
    let body = mails[1].body();
    assert!(body.contains("修正を受け付けました"), "{body}");
    assert!(
        body.contains(&format!("受付日時: {}", day(now))),
        "the correction's copy gives another time:\n{body}"
    );
    assert!(
        !body.contains(&day(now - time::Duration::days(3))),
        "{body}"
    );
    server.shutdown().await;
}

/// Staff tell the applicant of a new status when they tick the box (and only then);
/// a withdrawal from the status page is always confirmed by mail, so one made by
/// someone else who knew the receipt number and address does not go unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applicants_hear_of_a_new_status_when_staff_say_so_and_of_a_withdrawal() {
    let smtp = SmtpServer::start().await;
    let relay_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = TestEnv::with(|s| s.mail = Some(relay(&relay_url))).await;
    let t = env.tenant(&unique("n"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;
    let first = apply(&server, host, &public, "ソファ").await.unwrap();
    let first_id = submission_id(&db, &first).await;
    smtp.wait_for(1).await;
    let case = url(&server, host, &format!("/admin/submissions/{first_id}"));
    let change = |from: &'static str, to: &'static str, notify: bool| {
        let (case, admin) = (case.clone(), &admin);
        async move {
            let mut form = vec![("csrf", admin.csrf.as_str()), ("from", from), ("to", to)];
            if notify {
                form.push(("notify", "yes"));
            }
            let (status, loc, body) = post(&admin.client, &format!("{case}/status"), &form).await;
            assert_eq!(status, 303, "{body}");
            assert!(loc.ends_with(&first_id.to_string()));
        }
    };
    // Without the box: nothing is mailed.
    change("received", "reviewing", false).await;
    // With it: the new status, by mail, and as a message on the case.
    change("reviewing", "completed", true).await;
    let mails = smtp.wait_for(2).await;
    let notice = &mails[1];
    assert_eq!(notice.to, ["hanako.kasai@example.jp"]);
    assert_eq!(
        notice.header("Subject"),
        format!("【千代田区】粗大ごみ収集申込 についてのお知らせ（受付番号 {first}）")
    );
    assert!(
        notice
            .body()
            .contains("申請の状況が「完了」になりました。申請の手続きが完了しました。"),
        "{}",
        notice.body()
    );
    let (_, _, page) = crate::forms::get(&admin.client, &case).await;
    assert!(
        page.contains("申請の状況が「完了」になりました。"),
        "{page}"
    );

    // The applicant withdraws the second application from the status page.
    let second = apply(&server, host, &public, "ソファ").await.unwrap();
    smtp.wait_for(3).await;
    let c = crate::attacks::plain_from(&server, &[host], Some(7));
    let origin = url(&server, host, "");
    let (status, _, page) = crate::forms::post_from(
        &c,
        &url(&server, host, "/status/withdraw"),
        Some(origin.trim_end_matches('/')),
        &[
            ("receipt", second.as_str()),
            ("email", "hanako.kasai@example.jp"),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let mails = smtp.wait_for(4).await;
    assert!(
        mails[3].body().contains(&format!("受付番号 {second}"))
            && mails[3]
                .body()
                .contains("申請は取り下げられました。お心当たりがない場合は"),
        "{}",
        mails[3].body()
    );
    // The change to 審査中 without the box sent nothing: four mails in all, two of
    // them receipts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.received().len(), 4);
    server.shutdown().await;
}

/// Without a relay, mail can be written to a directory as `.eml` files and never
/// sent (the demo, a training site): the applicant's copy is there whole and its
/// row marked sent, the pages offer what needs mail (一時保存, 申請一覧), and only this
/// user may read the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_can_be_written_to_files_instead_of_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let env = TestEnv::with(|s| {
        s.mail = Some(MailSettings {
            way: madoguchi::config::MailWay::Files(mail_dir.clone()),
            from: FROM.into(),
        });
    })
    .await;
    let t = env.tenant(&unique("files"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    let (_, public) = build_form(&admin, &server, host, &dept, "").await;
    let db = env.tenant_conn(&t).await.client;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&mail_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let c = crate::forms::browser(&server, &[host]);
    let (_, _, page) = crate::forms::get(&c, &url(&server, host, &public)).await;
    assert!(
        page.contains(r#"name="_nav" value="save""#),
        "一時保存 is offered: {page}"
    );
    let (_, _, mine) = crate::forms::get(&c, &url(&server, host, "/my")).await;
    assert!(mine.contains("リンクを受け取る"), "{mine}");

    let receipt = apply(&server, host, &public, "その他").await.unwrap();
    let id = submission_id(&db, &receipt).await;
    tried(&db, id, 1).await;
    let (_, error, sent, _, _) = receipt_row(&db, id).await;
    assert_eq!((error, sent), (None, true));
    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let mail = crate::smtp::Received {
        from: String::new(),
        to: Vec::new(),
        data: std::fs::read_to_string(&files[0]).unwrap(),
        tls: false,
    };
    assert!(mail.header("Subject").contains(&receipt), "{}", mail.data);
    assert!(mail.header("To").contains("@example.jp"), "{}", mail.data);
    assert!(mail.header("From").contains(FROM), "{}", mail.data);
    assert!(mail.body().contains(&receipt), "{}", mail.body());
    server.shutdown().await;
}
