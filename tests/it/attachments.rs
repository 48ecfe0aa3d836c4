//! 添付ファイル over HTTP against a real server and database: a citizen attaches,
//! replaces and removes a file; staff, the API and the final export get it back as
//! sent; refusals say why and lose nothing; a file is never taken from what a browser
//! or a client names.

use madoguchi::tenant::staff::Role;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::forms::{browser, capture, get, post, staff};
use crate::harness::{unique, url, TestEnv};

pub(crate) const FORM: &str = r#"{ "format": "madoguchi.form/1", "title": "道路占用許可申請",
  "pages": [
    { "id": "p1", "title": "申請者", "fields": [
      { "id": "applicant", "type": "text", "label": "申請者名", "required": true },
      { "id": "email", "type": "email", "label": "メールアドレス", "required": true },
      { "id": "photo", "type": "file", "label": "現況写真", "required": true, "types": ["png", "pdf"], "max_mb": 1 }
    ] },
    { "id": "p2", "title": "備考", "fields": [
      { "id": "memo", "type": "textarea", "label": "備考" }
    ] }
  ] }"#;

/// A PNG's signature and some bytes: what the server checks is the signature.
fn png(fill: u8, len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.resize(len, fill);
    v
}

/// One part of a multipart body.
pub enum Part<'a> {
    Text(&'a str, &'a str),
    /// Input name, file name, content.
    File(&'a str, &'a str, &'a [u8]),
}

/// A `multipart/form-data` body as a browser sends it; its content type and bytes.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("----madoguchi{}", unique("b"));
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match p {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, file, data) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A page sent as multipart: status, location and page.
pub async fn send_parts(c: &reqwest::Client, u: &str, parts: &[Part<'_>]) -> (u16, String, String) {
    let (ct, body) = multipart(parts);
    let r = c
        .post(u)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    crate::forms::seen(r).await
}

struct Site {
    env: TestEnv,
    t: madoguchi::catalog::TenantRecord,
    server: madoguchi::front::Server,
    host: String,
    public: String,
}

impl Site {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut madoguchi::config::Settings)) -> Self {
        let env = TestEnv::with(tweak).await;
        let t = env.tenant(&unique("att"), "千代田区", "131016").await;
        let public =
            madoguchi::control::tenant_admin::import_form(&env.platform, &t, FORM, "道路課", true)
                .await
                .unwrap();
        let server = env.serve().await;
        let host = t.hosts[0].clone();
        Self {
            env,
            t,
            server,
            host,
            public,
        }
    }

    fn u(&self, path: &str) -> String {
        url(&self.server, &self.host, path)
    }

    async fn db(&self) -> tokio_postgres::Client {
        self.env.tenant_conn(&self.t).await.client
    }

    /// A citizen on the form's first page: their browser and the page's token.
    async fn open(&self) -> (reqwest::Client, String, String) {
        let c = browser(&self.server, &[&self.host]);
        let (status, _, page) = get(&c, &self.u(&self.public)).await;
        assert_eq!(status, 200, "{page}");
        let token = capture(r#"name="_token" value="([^"]+)""#, &page);
        (c, token, page)
    }

    /// The first page, sent with `extra` parts after the text inputs.
    async fn first_page(
        &self,
        c: &reqwest::Client,
        token: &str,
        applicant: &str,
        extra: &[Part<'_>],
    ) -> (u16, String, String) {
        let mut parts = vec![
            Part::Text("_token", token),
            Part::Text("_page", "0"),
            Part::Text("_version", "1"),
            Part::Text("_nav", "next"),
            Part::Text("applicant", applicant),
            Part::Text("email", "taro.kanda@example.jp"),
        ];
        for p in extra {
            parts.push(match p {
                Part::Text(n, v) => Part::Text(n, v),
                Part::File(n, f, d) => Part::File(n, f, d),
            });
        }
        send_parts(c, &self.u(&self.public), &parts).await
    }

    /// The first page with one file, which the server takes.
    async fn attach(
        &self,
        c: &reqwest::Client,
        token: &str,
        applicant: &str,
        name: &str,
        data: &[u8],
    ) {
        let (status, _, page) = self
            .first_page(c, token, applicant, &[Part::File("photo", name, data)])
            .await;
        assert_eq!(status, 303, "{page}");
    }

    /// 送信 from the draft under `token`: where the browser goes next.
    async fn submit(&self, c: &reqwest::Client, token: &str) -> String {
        let (status, loc, body) = post(
            c,
            &self.u(&format!("{}/submit", self.public)),
            &[("_token", token)],
        )
        .await;
        assert_eq!(status, 303, "{body}");
        loc
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_attached_by_a_citizen_reaches_staff_the_api_and_the_final_export_as_sent() {
    let site = Site::new().await;
    let photo = png(7, 40_000);
    let (c, token, page) = site.open().await;
    assert!(page.contains(r#"enctype="multipart/form-data""#), "{page}");
    assert!(
        page.contains(r#"accept="image/png,.png,application/pdf,.pdf""#),
        "{page}"
    );
    assert!(page.contains("PNG・PDF、1MBまで"), "{page}");

    // Some browsers send a path; the name kept is the file's own.
    let (status, loc, body) = site
        .first_page(
            &c,
            &token,
            "神田太郎",
            &[Part::File("photo", "C:\\fakepath\\現況写真.png", &photo)],
        )
        .await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{}?page=1", site.public).as_str()),
        "{body}"
    );
    let db = site.db().await;
    let row = db
        .query_one(
            "SELECT content, size, draft_id IS NOT NULL, submission_id IS NULL FROM attachments",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<u8> = row.get(0);
    assert_eq!(row.get::<_, i64>(1), 40_000);
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3));
    // Encrypted: neither the signature nor the content is in the database.
    assert!(!stored.windows(8).any(|w| w == &photo[..8]));
    assert!(!stored.windows(64).any(|w| w == &photo[100..164]));

    // Back on the page, the file is said to be attached; sending the page again
    // without choosing a file keeps it.
    let (_, _, again) = get(&c, &site.u(&format!("{}?page=0", site.public))).await;
    assert!(again.contains("添付済み: 現況写真.png（40 KB）"), "{again}");
    // The citizen can open what they attached, and nobody else can.
    let own = capture(r#"href="(/f/[^"]+/files/[0-9a-f-]+)" download"#, &again);
    let fetch = |c: reqwest::Client, path: String| {
        let u = site.u(&path);
        async move {
            let r = c.get(u).send().await.unwrap();
            let h = r.headers().clone();
            (r.status().as_u16(), h, r.bytes().await.unwrap().to_vec())
        }
    };
    let (status, h, bytes) = fetch(c.clone(), own.clone()).await;
    assert_eq!(status, 200);
    assert!(bytes == photo, "not the file sent");
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert!(header("content-disposition").starts_with("attachment;"));
    assert_eq!(header("cache-control"), "no-store, private");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let (status, _, bytes) = fetch(browser(&site.server, &[&site.host]), own.clone()).await;
    assert!(status == 303 && bytes.is_empty(), "a stranger got {status}");
    let other = format!("{}/files/{}", site.public, uuid::Uuid::new_v4());
    assert_eq!(fetch(c.clone(), other).await.0, 404);
    assert_eq!(
        fetch(c.clone(), format!("{}/files/..", site.public))
            .await
            .0,
        404
    );
    let (status, _, body) = site
        .first_page(&c, &token, "神田 太郎", &[Part::File("photo", "", b"")])
        .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 1);

    let (status, loc, body) = send_parts(
        &c,
        &site.u(&site.public),
        &[
            Part::Text("_token", &token),
            Part::Text("_page", "1"),
            Part::Text("_version", "1"),
            Part::Text("_nav", "next"),
            Part::Text("memo", "歩道の一部を使います"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, confirm) = get(&c, &site.u(&loc)).await;
    assert!(confirm.contains("現況写真.png（40 KB）"), "{confirm}");
    assert!(
        confirm.contains(&format!(r#"href="{own}" download"#)),
        "{confirm}"
    );
    let (status, loc, body) = post(
        &c,
        &site.u(&format!("{}/submit", site.public)),
        &[("_token", &token)],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, done) = get(&c, &site.u(&loc)).await;
    let receipt = capture(r#"id="receipt">([0-9A-Z-]+)<"#, &done);
    // Once sent, the draft's link leads to the receipt, not the file.
    assert_eq!(fetch(c.clone(), own.clone()).await.0, 303);
    let row = db
        .query_one(
            "SELECT a.draft_id IS NULL, s.id FROM attachments a JOIN submissions s ON s.id = a.submission_id",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the file still held by the sent draft"
    );
    let sub: uuid::Uuid = row.get(1);

    // Staff: a link on the case page, the file as sent, each download logged.
    let admin = staff(&site.env, &site.server, &site.t, Role::Admin, None).await;
    let (status, _, case) = get(&admin.client, &site.u(&format!("/admin/submissions/{sub}"))).await;
    assert_eq!(status, 200);
    let href = capture(
        r#"<a href="(/admin/submissions/[^"]+/files/[^"]+)" download>現況写真.png"#,
        &case,
    );
    let r = admin.client.get(site.u(&href)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    let disposition = h["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''%E7%8F%BE%E6%B3%81%E5%86%99%E7%9C%9F.png"),
        "{disposition}"
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), photo);
    let logged = crate::forms::log_rows(
        &db,
        "SELECT actor, target, detail FROM audit_log WHERE action = 'attachment.download'",
    )
    .await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].1, sub.to_string());
    // Which field, never the file's name (it may name a person).
    assert!(logged[0].2.contains(r#""field":"photo""#), "{logged:?}");
    assert!(!logged[0].2.contains("現況写真"), "{logged:?}");
    // Another file id under this case, or this file under another path: not found.
    let other = href.replace(&href[href.len() - 36..], &uuid::Uuid::new_v4().to_string());
    assert_eq!(
        admin
            .client
            .get(site.u(&other))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The form's files at once, from the inbox: a folder per 受付番号.
    let form_id: i64 = db
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    let (_, _, inbox) = get(
        &admin.client,
        &site.u(&format!("/admin/inbox?form={form_id}")),
    )
    .await;
    assert!(inbox.contains("添付ファイル（ZIP）"), "{inbox}");
    let r = admin
        .client
        .get(site.u(&format!("/admin/export.zip?form={form_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let zipped = r.bytes().await.unwrap().to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    assert_eq!(archive.len(), 1);
    let mut entry = archive.by_index(0).unwrap();
    assert_eq!(entry.name(), format!("{receipt}/現況写真_現況写真.png"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut unzipped).unwrap();
    assert_eq!(unzipped, photo);
    drop(entry);
    // Its ending is logged once the last bytes have gone.
    let mut exported = Vec::new();
    for _ in 0..50 {
        exported = crate::forms::log_rows(
            &db,
            "SELECT actor, target, detail FROM audit_log WHERE action = 'submission.export'",
        )
        .await;
        if !exported.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert!(exported[0].2.contains(r#""format":"zip""#), "{exported:?}");
    assert!(exported[0].2.contains(r#""rows":1"#), "{exported:?}");
    // Without a form there is nothing to put in it.
    let r = admin
        .client
        .get(site.u("/admin/export.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The API: the answer names the file with its hash, and the file comes back.
    let token_api = madoguchi::control::tenant_admin::api_token(
        &site.env.platform,
        &site.t,
        "文書管理",
        &[
            "submissions:read".to_owned(),
            "submissions:submit".to_owned(),
        ],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let api = crate::harness::client_for(&site.server, &[&site.host]);
    let one: Value = api
        .get(site.u(&format!("/api/v1/submissions/{sub}")))
        .bearer_auth(&token_api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = &one["answers"]["photo"];
    assert_eq!(answer["answer"]["t"], "file");
    assert_eq!(answer["answer"]["v"]["name"], "現況写真.png");
    assert_eq!(answer["answer"]["v"]["type"], "png");
    assert_eq!(answer["answer"]["v"]["size"], 40_000);
    assert_eq!(
        answer["answer"]["v"]["sha256"],
        hex::encode(Sha256::digest(&photo))
    );
    let download = answer["download"].as_str().unwrap();
    let r = api
        .get(site.u(download))
        .bearer_auth(&token_api)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), photo);

    // A client cannot name a file in its answers (it would be someone else's).
    let stolen = answer["answer"]["v"].to_string();
    let r = api
        .post(site.u(&format!(
            "/api/v1/forms{}/submissions",
            // `/f/<id>` less `/f` (a public id may itself begin with `f`).
            site.public.strip_prefix("/f").unwrap_or_default()
        )))
        .bearer_auth(&token_api)
        .json(&serde_json::json!({
            "idempotency_key": uuid::Uuid::new_v4(),
            "answers": { "applicant": "API", "email": "api@example.jp", "photo": stolen },
        }))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let headers = format!("{:?}", r.headers());
    let text = r.text().await.unwrap_or_default();
    let p: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{st} {headers}: {text}"));
    assert_eq!(st, 422, "{p}");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("APIでは送信できません"),
        "{p}"
    );

    // Nor can a browser: a page naming the file in a plain input is not taken.
    let (c2, token2, _) = site.open().await;
    let (status, _, page) = post(
        &c2,
        &site.u(&site.public),
        &[
            ("_token", &token2),
            ("_page", "0"),
            ("_version", "1"),
            ("_nav", "next"),
            ("applicant", "他人"),
            ("email", "other@example.jp"),
            ("photo", &stolen),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("現況写真を添付してください"), "{page}");

    // The final export handed over at decommissioning carries the file, hashed.
    let export = madoguchi::control::final_export::export(&site.env.platform, &site.t)
        .await
        .unwrap();
    let name = format!(
        "files-{}/{receipt}_photo.png",
        site.public.trim_start_matches("/f/")
    );
    let listed = export
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in {:?}", export.files));
    assert_eq!(listed.sha256, hex::encode(Sha256::digest(&photo)));
    let on_disk = std::fs::read(std::path::Path::new(&export.directory).join(&name)).unwrap();
    assert_eq!(on_disk, photo);
    madoguchi::control::final_export::reopen_writes(&site.env.platform, &site.t)
        .await
        .unwrap();
    site.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_says_why_and_loses_nothing() {
    let site = Site::new().await;
    let (c, token, _) = site.open().await;

    // Too large for the field (1 MB): said, with what was typed kept.
    let big = png(1, 1024 * 1024 + 1);
    let (status, _, page) = site
        .first_page(
            &c,
            &token,
            "神田太郎",
            &[Part::File("photo", "big.png", &big)],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("現況写真のファイルが大きすぎます（1MBまで。選ばれたファイルは1.1 MB）"),
        "{page}"
    );
    assert!(page.contains(r#"value="神田太郎""#), "{page}");
    let (_, _, kept) = get(&c, &site.u(&format!("{}?page=0", site.public))).await;
    assert!(
        kept.contains(r#"value="神田太郎""#),
        "typed text lost: {kept}"
    );

    // Not a kind the field takes (known by content, whatever its name says).
    let (status, _, page) = site
        .first_page(
            &c,
            &token,
            "神田太郎",
            &[Part::File("photo", "photo.png", b"MZ\x90\0program")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("現況写真にはPNG・PDFのファイルを添付してください"),
        "{page}"
    );
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 0);

    // Attached, then replaced: the first file goes once the page is saved.
    let first = png(1, 2000);
    let second = b"%PDF-1.7\n%second".to_vec();
    for (name, data) in [("a.png", &first), ("b.pdf", &second)] {
        site.attach(&c, &token, "神田太郎", name, data).await;
    }
    let db = site.db().await;
    let left = db
        .query_one("SELECT size FROM attachments", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, second.len() as i64);
    let (_, _, page) = get(&c, &site.u(&format!("{}?page=0", site.public))).await;
    assert!(page.contains("添付済み: b.pdf"), "{page}");

    // Removed: the file goes, and the field is required again.
    let (status, _, page) = site
        .first_page(&c, &token, "神田太郎", &[Part::Text("photo.remove", "1")])
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("現況写真を添付してください"), "{page}");
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 0);

    // A request larger than a page may send: a page that says so, in Japanese.
    let huge = png(2, 21 * 1024 * 1024);
    let (status, _, page) = site
        .first_page(
            &c,
            &token,
            "神田太郎",
            &[Part::File("photo", "huge.png", &huge)],
        )
        .await;
    assert_eq!(status, 413);
    assert!(page.contains("送信内容が大きすぎます"), "{page}");

    // A file whose name says another kind keeps its own kind's extension, so that
    // opening it on a PC never runs it.
    site.attach(&c, &token, "神田太郎", "手順.bat", &first)
        .await;
    let (_, _, page) = get(&c, &site.u(&format!("{}?page=0", site.public))).await;
    assert!(page.contains("添付済み: 手順.bat.png"), "{page}");

    // A page of an earlier version keeps the file it carried.
    let later = b"%PDF-1.4\n%later".to_vec();
    let (status, loc, page) = send_parts(
        &c,
        &site.u(&site.public),
        &[
            Part::Text("_token", &token),
            Part::Text("_page", "0"),
            Part::Text("_version", "0"),
            Part::Text("_nav", "next"),
            Part::File("photo", "later.pdf", &later),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    assert!(loc.contains("updated=1"), "{loc}");
    let (_, _, page) = get(&c, &site.u(&loc)).await;
    assert!(page.contains("添付済み: later.pdf"), "{page}");

    // A page with files from elsewhere, without the form's cookie or this site's
    // Origin, is refused before its body is read.
    let stranger = browser(&site.server, &[&site.host]);
    let (status, _, _) = send_parts(
        &stranger,
        &site.u(&site.public),
        &[
            Part::Text("_token", "x"),
            Part::File("photo", "x.png", &first),
        ],
    )
    .await;
    assert_eq!(status, 403);

    // Files no open draft holds go with the daily purge (an hour's grace).
    let form_id: i64 = db
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    let before = site.count("SELECT count(*) FROM attachments").await;
    db.execute(
        "INSERT INTO attachments (id, form_id, field_id, draft_id, content, size, created_at)
         VALUES (gen_random_uuid(), $1, 'orphan', gen_random_uuid(), '\\x00', 1, now() - interval '2 hours'),
                (gen_random_uuid(), $1, 'fresh', gen_random_uuid(), '\\x00', 1, now())",
        &[&form_id],
    )
    .await
    .unwrap();
    madoguchi::tenant::forms::citizen::purge_expired_drafts(&db)
        .await
        .unwrap();
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE field_id IN ('orphan', 'fresh')")
            .await,
        1
    );
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE field_id = 'fresh'")
            .await,
        1
    );
    // The open draft's files are left.
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE field_id = 'photo'")
            .await,
        before
    );
    site.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_keeps_or_replaces_the_applications_file() {
    let site = Site::new().await;
    let db = site.db().await;
    let (c, token, _) = site.open().await;
    let photo = png(3, 3000);
    site.attach(&c, &token, "神田太郎", "before.png", &photo)
        .await;
    let loc = site.submit(&c, &token).await;
    let (_, _, done) = get(&c, &site.u(&loc)).await;
    let receipt = capture(r#"id="receipt">([0-9A-Z-]+)<"#, &done);

    let reopen = || async {
        db.execute(
            "UPDATE submissions SET status = 'returned', return_deadline = current_date + 7 WHERE receipt_number = $1",
            &[&receipt],
        )
        .await
        .unwrap();
        let (status, loc, body) = post(
            &c,
            &site.u("/status/resubmit"),
            &[("receipt", &receipt), ("email", "taro.kanda@example.jp")],
        )
        .await;
        assert_eq!(status, 303, "{body}");
        let (_, _, form) = get(&c, &site.u(&loc)).await;
        assert!(form.contains("添付済み: before.png"), "{form}");
        // The application's file opens from the correction's page.
        let own = capture(r#"href="(/f/[^"]+/files/[0-9a-f-]+)" download"#, &form);
        let r = c.get(site.u(&own)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().to_vec() == photo);
        capture(r#"name="_token" value="([^"]+)""#, &form)
    };
    let file_of = || async {
        db.query_one(
            "SELECT a.size, a.draft_id IS NULL FROM attachments a JOIN submissions s ON s.id = a.submission_id WHERE s.receipt_number = $1",
            &[&receipt],
        )
        .await
        .unwrap()
    };

    // Corrected without touching the file: the application keeps it.
    let token = reopen().await;
    let (status, _, page) = site.first_page(&c, &token, "神田 太郎", &[]).await;
    assert_eq!(status, 303, "{page}");
    site.submit(&c, &token).await;
    assert_eq!(file_of().await.get::<_, i64>(0), 3000);
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 1);

    // Corrected with a new file: the new one replaces it, and the old one goes.
    let token = reopen().await;
    let newer = png(4, 5000);
    site.attach(&c, &token, "神田 太郎", "after.png", &newer)
        .await;
    // Until it is sent, staff still see the application's own file.
    assert_eq!(file_of().await.get::<_, i64>(0), 3000);
    site.submit(&c, &token).await;
    let row = file_of().await;
    assert_eq!(row.get::<_, i64>(0), 5000);
    assert!(row.get::<_, bool>(1));
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 1);
    site.server.shutdown().await;
}

/// The builder: a 添付ファイル field's kinds and limit are set without code, with
/// the reason when they cannot be; a page whose files could pass 20 MB together is
/// not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_sets_what_a_file_field_takes() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("attb"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let u = |p: &str| url(&server, host, p);
    let s = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = crate::forms::dept_id(&env, &t, "道路課").await;
    let (status, loc, _) = post(
        &s.client,
        &u("/admin/forms"),
        &[
            ("csrf", &s.csrf),
            ("title", "道路占用許可申請"),
            ("department", &dept),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let base = loc.clone();
    let fields = u(&format!("{base}/fields"));
    let add = |label: &'static str| crate::forms::add_field(&s, &fields, "0", "file", label);
    let plan = add("平面図").await;
    let field = u(&format!("{base}/fields/{plan}"));
    let (status, _, page) = get(&s.client, &field).await;
    assert_eq!(status, 200);
    for kind in ["pdf", "jpeg", "png"] {
        assert!(
            page.contains(&format!(r#"name="types" value="{kind}" checked"#)),
            "{kind} not offered ticked: {page}"
        );
    }
    let save = |types: &'static [&'static str], max: &'static str| {
        let (c, csrf, target) = (s.client.clone(), s.csrf.clone(), field.clone());
        async move {
            let mut form = vec![
                ("csrf", csrf.as_str()),
                ("label", "平面図"),
                ("required", "yes"),
                ("id", "plan"),
                ("max", max),
            ];
            form.extend(types.iter().map(|t| ("types", *t)));
            post(&c, &target, &form).await
        }
    };
    let (status, _, page) = save(&["pdf"], "30").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("ファイルの上限は1〜10MBにしてください"),
        "{page}"
    );
    let (status, _, page) = save(&[], "5").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("受け付けるファイルの形式を1つ以上選んでください"),
        "{page}"
    );
    let (status, _, page) = save(&["pdf", "jpeg"], "５").await;
    assert_eq!(status, 303, "{page}");
    let (_, _, exported) = get(&s.client, &u(&format!("{base}/export"))).await;
    let def: Value = serde_json::from_str(&exported).unwrap();
    let stored = &def["pages"][0]["fields"][0];
    assert_eq!(stored["type"], "file");
    assert_eq!(stored["types"], serde_json::json!(["pdf", "jpeg"]));
    assert_eq!(stored["max_mb"], 5);

    // 5 MB + 10 MB + 10 MB on one page: more than a page may carry.
    add("写真1").await;
    add("写真2").await;
    let (status, _, page) = post(
        &s.client,
        &u(&format!("{base}/publish")),
        &[("csrf", &s.csrf)],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("公開できません"), "{page}");
    assert!(
        page.contains("1ページの添付ファイルの上限は合計20MBまでです"),
        "{page}"
    );
    server.shutdown().await;
}

/// An application with a file takes the path of its own transaction: sent while the
/// form is published with 定員, it is counted as one sent on the one-statement path
/// is (`forms::a_form_given_capacity_while_applications_are_sent_counts_each_of_them`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_with_a_file_sent_while_capacity_is_published_is_counted() {
    let site = Site::new().await;
    let db = site.db().await;
    let (c, token, _) = site.open().await;
    site.attach(&c, &token, "神田太郎", "a.png", &png(5, 2000))
        .await;
    let form_id: i64 = db
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    db.execute(
        "UPDATE forms SET draft = jsonb_set(draft, '{settings}', coalesce(draft->'settings', '{}') || '{\"capacity\": 5}')",
        &[],
    )
    .await
    .unwrap();
    // The publish is held up after taking its lock; the send begins meanwhile.
    let blocker = site.db().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE form_versions IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let publishing = {
        let mut conn = site.env.tenant_conn(&site.t).await;
        tokio::spawn(async move {
            madoguchi::tenant::forms::store::publish(
                &mut conn.client,
                form_id,
                &madoguchi::tenant::audit::Actor::Operator,
                None,
            )
            .await
            .map_err(|e| format!("{e:?}"))
        })
    };
    crate::forms::until_waiting(&db, 1, &publishing).await;
    assert!(!publishing.is_finished(), "the publish did not wait");
    let sending = {
        let (c, u, token) = (
            c.clone(),
            site.u(&format!("{}/submit", site.public)),
            token.clone(),
        );
        tokio::spawn(async move { post(&c, &u, &[("_token", &token)]).await })
    };
    crate::forms::until_waiting(&db, 2, &sending).await;
    assert!(
        !sending.is_finished(),
        "the send did not wait for the publish"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(publishing.await.unwrap(), Ok(2));
    let (status, _, body) = sending.await.unwrap();
    assert_eq!(status, 303, "{body}");
    let r = db
        .query_one(
            "SELECT accepted_count, capacity, (SELECT count(*)::int FROM submissions) FROM forms",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i32>(0),
            r.get::<_, Option<i32>>(1),
            r.get::<_, i32>(2)
        ),
        (1, Some(5), 1)
    );
    // Behind a long writer, a publish gives up after a few seconds (the others
    // queued behind its wait go on) and says so; the draft stays as it was.
    blocker
        .batch_execute("BEGIN; LOCK TABLE submissions IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut conn = site.env.tenant_conn(&site.t).await;
    let err = madoguchi::tenant::forms::store::publish(
        &mut conn.client,
        form_id,
        &madoguchi::tenant::audit::Actor::Operator,
        None,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("混み合っていた"), "{err:?}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
}

/// ClamAV's daemon, started for a test with a signature database of its own (the
/// EICAR test string), on a Unix socket in a temporary directory; stopped on drop.
struct ClamdServer {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl ClamdServer {
    /// The EICAR test string, put together at run time (so that no antivirus on a
    /// developer's machine quarantines this source or the test binary).
    fn eicar() -> Vec<u8> {
        [
            &br"X5O!P%@AP[4\PZX54(P^)7CC)7}$"[..],
            b"EICAR-STANDARD-ANTIVIRUS",
            b"-TEST-FILE!$H+H*",
        ]
        .concat()
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let hex: String = Self::eicar().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            db.join("test.ndb"),
            format!("MadoguchiTest.EICAR:0:*:{hex}\n"),
        )
        .unwrap();
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "LocalSocket {sock}\nDatabaseDirectory {db}\nForeground yes\nLogFile {dir}/clamd.log\nPidFile {dir}/clamd.pid\n",
                sock = dir.path().join("clamd.sock").display(),
                db = db.display(),
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        let bin = if std::path::Path::new("/usr/sbin/clamd").exists() {
            "/usr/sbin/clamd"
        } else {
            "clamd"
        };
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("clamd not installed (ops/test installs clamav-daemon)");
        let server = Self { child, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !server.answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "clamd did not start: {}",
                std::fs::read_to_string(server.dir.path().join("clamd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("clamd.sock")
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut reply = [0u8; 5];
        s.write_all(b"zPING\0").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"PONG\0"
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ClamdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ウイルスチェック: with clamd set, an attached file it finds something in is refused
/// with the reason (what was typed is kept, nothing of the file is stored; the find is
/// in the operation log and the metrics); a clean one is kept; while clamd cannot
/// answer, files are refused and the citizen is asked to attach again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_files_are_scanned_by_clamd_when_set() {
    let mut clamd = ClamdServer::start();
    let socket = clamd.socket();
    let site = Site::with(move |s| s.clamd = Some(madoguchi::scan::Clamd::Unix(socket))).await;
    // The string past the first 64 KiB chunk of the stream, in a file near the field's
    // 1 MB limit.
    let mut infected = b"%PDF-1.4\n".to_vec();
    infected.resize(100_000, b' ');
    infected.extend_from_slice(&ClamdServer::eicar());
    infected.resize(1_000_000, b' ');
    infected.extend_from_slice(b"\n%%EOF\n");
    let (c, token, _) = site.open().await;
    let (status, _, page) = site
        .first_page(
            &c,
            &token,
            "神田太郎",
            &[Part::File("photo", "申請書.pdf", &infected)],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("現況写真のファイルからウイルスなどの不正なプログラムが見つかったため、受け付けられません")
            && page.contains("value=\"神田太郎\""),
        "{page}"
    );
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 0);
    let db = site.db().await;
    let logged: String = db
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'attachment.infected'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        logged.contains("MadoguchiTest.EICAR")
            && logged.contains("photo")
            && !logged.contains("申請書"),
        "{logged}"
    );
    // Sent from a page of an earlier version, the refused file is said so on the page
    // the citizen is sent back to.
    let (c3, token3, _) = site.open().await;
    let (status, loc, page) = send_parts(
        &c3,
        &site.u(&site.public),
        &[
            Part::Text("_token", &token3),
            Part::Text("_page", "0"),
            Part::Text("_version", "0"),
            Part::Text("_nav", "next"),
            Part::Text("applicant", "神田次郎"),
            Part::File("photo", "申請書.pdf", &infected),
        ],
    )
    .await;
    assert!(
        status == 303 && loc.contains("updated=1") && loc.contains("refused=1"),
        "{loc} {page}"
    );
    let (_, _, page) = get(&c3, &site.u(&loc)).await;
    assert!(
        page.contains("受け付けられなかったものがあります") && page.contains("value=\"神田次郎\""),
        "{page}"
    );
    let finds: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'attachment.infected'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(finds, 2);
    // A clean file is kept.
    site.attach(&c, &token, "神田太郎", "現況.png", &png(3, 5_000))
        .await;
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 1);
    // The staff manual says files are scanned, and what a find later means.
    let admin = staff(&site.env, &site.server, &site.t, Role::Admin, None).await;
    let (_, _, manual) = get(&admin.client, &site.u("/admin/help")).await;
    assert!(
        manual.contains(r#"id="help-scanned""#) && !manual.contains("help-unscanned"),
        "{manual}"
    );
    // Marked as scanned (`tenant scan-files` leaves it, unless asked to scan again).
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE scanned_at IS NOT NULL")
            .await,
        1
    );
    let metrics = reqwest::get(format!("http://{}/metrics", site.server.bound.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "madoguchi_attachment_scans_total{outcome=\"found\"} 2",
        "madoguchi_attachment_scans_total{outcome=\"clean\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    // clamd down: refused, to be attached again later; the file kept before stays.
    clamd.stop();
    let (c2, token2, _) = site.open().await;
    let (status, _, page) = site
        .first_page(
            &c2,
            &token2,
            "神田花子",
            &[Part::File("photo", "現況.png", &png(4, 5_000))],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("いまは安全か確認できないため受け付けられません。しばらくしてから、もう一度添付してください")
            && page.contains("value=\"神田花子\""),
        "{page}"
    );
    assert_eq!(site.count("SELECT count(*) FROM attachments").await, 1);
}

/// Files stored before a scanner was set are scanned later (`tenant scan-files`):
/// one found infected is marked, logged and no longer handed out (staff, the ZIP
/// export); the clean one stays as it was; a second run has nothing left, and
/// `again` scans the clean one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_files_are_scanned_later_and_an_infected_one_is_withheld() {
    let clamd = ClamdServer::start();
    let site = Site::new().await;
    let mut infected = b"%PDF-1.4\n".to_vec();
    infected.extend_from_slice(&ClamdServer::eicar());
    infected.extend_from_slice(b"\n%%EOF\n");
    // Without a scanner both files are kept.
    let mut receipts = Vec::new();
    for (who, name, data) in [
        ("神田太郎", "申請書.pdf", infected.clone()),
        ("神田花子", "現況.png", png(5, 5_000)),
    ] {
        let (c, token, _) = site.open().await;
        site.attach(&c, &token, who, name, &data).await;
        let done = site.submit(&c, &token).await;
        let (_, _, page) = get(&c, &site.u(&done)).await;
        receipts.push(capture(r#"id="receipt">([0-9A-Z-]+)<"#, &page));
    }
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE scanned_at IS NULL")
            .await,
        2
    );

    let clamd_at = madoguchi::scan::Clamd::Unix(clamd.socket());
    let run = |again| {
        madoguchi::control::scan_files::scan_files(&site.env.platform, &site.t, &clamd_at, again)
    };
    let done = run(false).await.unwrap();
    assert_eq!(done.files, 2);
    assert_eq!(done.found.len(), 1, "{done:?}");
    let found = &done.found[0];
    assert_eq!(found.receipt.as_deref(), Some(receipts[0].as_str()));
    assert_eq!(
        (found.field.as_str(), found.signature.as_str()),
        ("photo", "MadoguchiTest.EICAR.UNOFFICIAL")
    );
    let db = site.db().await;
    let logged = crate::forms::log_rows(
        &db,
        "SELECT actor, target, detail FROM audit_log WHERE action = 'attachment.infected'",
    )
    .await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].0 == "operator"
            && logged[0].2.contains("MadoguchiTest.EICAR")
            && !logged[0].2.contains("申請書"),
        "{logged:?}"
    );

    // Staff see why, and get no link; the file's address answers the same.
    let admin = staff(&site.env, &site.server, &site.t, Role::Admin, None).await;
    let sub: uuid::Uuid = db
        .query_one(
            "SELECT id FROM submissions WHERE receipt_number = $1",
            &[&receipts[0]],
        )
        .await
        .unwrap()
        .get(0);
    let (_, _, case) = get(&admin.client, &site.u(&format!("/admin/submissions/{sub}"))).await;
    assert!(
        case.contains("保存後のウイルスチェックで不正なプログラム（MadoguchiTest.EICAR.UNOFFICIAL）が見つかったため、取り出せません"),
        "{case}"
    );
    assert!(!case.contains("/files/"), "{case}");
    let file = found.file;
    let (status, _, page) = get(
        &admin.client,
        &site.u(&format!("/admin/submissions/{sub}/files/{file}")),
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("取り出せません"), "{page}");
    // The API says so instead of offering it, and refuses it (409) by its address.
    let token_api = madoguchi::control::tenant_admin::api_token(
        &site.env.platform,
        &site.t,
        "文書管理",
        &["submissions:read".to_owned()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Any,
    )
    .await
    .unwrap();
    let api = crate::harness::client_for(&site.server, &[&site.host]);
    let one: Value = api
        .get(site.u(&format!("/api/v1/submissions/{sub}")))
        .bearer_auth(&token_api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = &one["answers"]["photo"];
    assert!(
        answer["withheld"] == "MadoguchiTest.EICAR.UNOFFICIAL" && answer["download"].is_null(),
        "{answer}"
    );
    let r = api
        .get(site.u(&format!("/api/v1/submissions/{sub}/files/{file}")))
        .bearer_auth(&token_api)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("取り出せません"),
        "{problem}"
    );
    // The ZIP export has a note in its place, and the clean file as it was.
    let form_id: i64 = db
        .query_one("SELECT id FROM forms", &[])
        .await
        .unwrap()
        .get(0);
    let r = admin
        .client
        .get(site.u(&format!("/admin/export.zip?form={form_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let zipped = r.bytes().await.unwrap().to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    assert!(
        names.contains(&format!(
            "{}/現況写真_取り出せないファイル.txt",
            receipts[0]
        )) && names.contains(&format!("{}/現況写真_現況.png", receipts[1]))
            && names.len() == 2,
        "{names:?}"
    );
    let mut note = String::new();
    std::io::Read::read_to_string(
        &mut archive
            .by_name(&format!(
                "{}/現況写真_取り出せないファイル.txt",
                receipts[0]
            ))
            .unwrap(),
        &mut note,
    )
    .unwrap();
    assert!(note.contains("MadoguchiTest.EICAR"), "{note}");
    assert!(!note.contains("EICAR-STANDARD"), "{note}");

    // Nothing left to scan. `again` takes the files not scanned in the last day: none
    // yet (a run started again the same day goes on where it stopped); a week on, the
    // clean file (not the one found).
    assert_eq!(run(false).await.unwrap().files, 0);
    assert_eq!(run(true).await.unwrap().files, 0);
    db.execute(
        "UPDATE attachments SET scanned_at = scanned_at - interval '7 days'",
        &[],
    )
    .await
    .unwrap();
    let again = run(true).await.unwrap();
    assert_eq!((again.files, again.found.len(), again.errors), (1, 0, 0));

    // A draft's file found infected after it was attached: the citizen can neither
    // open it again nor send it, and is asked for another on its field.
    let (c, token, _) = site.open().await;
    site.attach(&c, &token, "神田五郎", "申請書.pdf", &infected)
        .await;
    let marked = run(false).await.unwrap();
    assert_eq!((marked.files, marked.found.len()), (1, 1), "{marked:?}");
    assert_eq!(marked.found[0].receipt, None);
    let file = marked.found[0].file;
    let (status, _, page) = get(&c, &site.u(&format!("{}/files/{file}", site.public))).await;
    assert_eq!(status, 409, "{page}");
    assert!(
        page.contains("別のファイルを添付し直してください"),
        "{page}"
    );
    let sent_before = site.count("SELECT count(*) FROM submissions").await;
    let (status, _, page) = get(&c, &site.u(&format!("{}/confirm", site.public))).await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains(madoguchi::tenant::forms::attachments::FOUND_SINCE),
        "{page}"
    );
    let (status, _, page) = post(
        &c,
        &site.u(&format!("{}/submit", site.public)),
        &[("_token", token.as_str())],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains(madoguchi::tenant::forms::attachments::FOUND_SINCE),
        "{page}"
    );
    let to = capture(r##"<li><a href="#([^"]+)">このファイルは、添付後"##, &page);
    assert!(
        page.contains(&format!(r#"id="{to}""#)) && to.contains("photo"),
        "the error leads to its field: {page}"
    );
    assert_eq!(
        site.count("SELECT count(*) FROM submissions").await,
        sent_before
    );
    // Another file on that field, and the application goes.
    site.attach(&c, &token, "神田五郎", "現況.png", &png(8, 5_000))
        .await;
    let done = site.submit(&c, &token).await;
    assert!(done.ends_with("/done"), "{done}");
    assert_eq!(
        site.count("SELECT count(*) FROM submissions").await,
        sent_before + 1
    );

    // clamd gone: three files it cannot answer for end the run, which says why and
    // leaves them for the next.
    db.execute(
        "UPDATE attachments SET scanned_at = NULL WHERE infected IS NULL",
        &[],
    )
    .await
    .unwrap();
    for who in ["神田次郎", "神田三郎", "神田四郎"] {
        let (c, token, _) = site.open().await;
        site.attach(&c, &token, who, "現況.png", &png(6, 5_000))
            .await;
        site.submit(&c, &token).await;
    }
    drop(clamd);
    let cut = run(false).await.unwrap();
    assert_eq!(
        (cut.files, cut.errors, cut.clamd_down),
        (0, 3, true),
        "{cut:?}"
    );
    assert!(
        cut.stopped
            .as_deref()
            .is_some_and(|w| w.contains("clamd failed 3 times")),
        "{cut:?}"
    );
    assert_eq!(
        site.count("SELECT count(*) FROM attachments WHERE scanned_at IS NULL")
            .await,
        5
    );
    // A suspended municipality (a key rotation, a decommissioning) is not scanned.
    let clamd = ClamdServer::start();
    let clamd_at = madoguchi::scan::Clamd::Unix(clamd.socket());
    site.env
        .platform
        .catalog
        .set_state(site.t.id, madoguchi::catalog::TenantState::Suspended)
        .await
        .unwrap();
    let held =
        madoguchi::control::scan_files::scan_files(&site.env.platform, &site.t, &clamd_at, false)
            .await
            .unwrap();
    assert_eq!(held.files, 0);
    assert!(held.stopped.is_some(), "{held:?}");
}
