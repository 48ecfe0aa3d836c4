//! 本人確認 against a real OpenID Connect provider over TLS (an in-process one with
//! its own CA and ES256 key, speaking the code flow with PKCE): the administrator's
//! settings, a citizen's verification and submission, what staff see, and each way a
//! verification is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing;
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use madoguchi::catalog::TenantRecord;
use madoguchi::front::Server;
use madoguchi::tenant::staff::Role;
use sha2::{Digest, Sha256};

use crate::forms::{browser, capture, get as fetch, post, staff, Staff};
use crate::harness::{unique, url, TestEnv};

const CLIENT_ID: &str = "city-client";
/// A secret with characters Basic authentication must encode.
pub(crate) const SECRET: &str = "s3cret:with/odd chars+";
const NAME: &str = "葛\u{E0100}城 花子";

/// How the provider behaves on the next verification.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Honest,
    /// The person cancels at the provider.
    Cancel,
    /// The ID token is signed with a key not in the provider's key set.
    OtherKey,
    /// The ID token carries another nonce.
    OtherNonce,
    /// The ID token was issued for another client.
    OtherAudience,
    /// The key set is larger than anyone's (over the 256 KiB read).
    HugeKeys,
    /// The key set's address sends the client elsewhere (not followed).
    MovedKeys,
}

struct Issued {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct IdpState {
    issuer: String,
    /// The provider writes its issuer with a trailing slash and takes the client's
    /// secret in the body (client_secret_post), as some do.
    slash_and_post: bool,
    mode: Mode,
    key: EncodingKey,
    other_key: EncodingKey,
    jwks: serde_json::Value,
    codes: HashMap<String, Issued>,
    /// Token requests refused, with why.
    refused: Vec<String>,
}

type Shared = Arc<Mutex<IdpState>>;

/// The provider: an https URL on 127.0.0.1, and a client trusting its CA.
pub(crate) struct Idp {
    pub(crate) issuer: String,
    state: Shared,
    ca: std::path::PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn es256() -> (EncodingKey, serde_json::Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

/// The issuer as the provider writes it (in its discovery document and tokens).
fn written(st: &IdpState) -> String {
    if st.slash_and_post {
        format!("{}/", st.issuer)
    } else {
        st.issuer.clone()
    }
}

async fn discovery(State(s): State<Shared>) -> Json<serde_json::Value> {
    let (issuer, written, post) = {
        let st = s.lock().unwrap();
        (st.issuer.clone(), written(&st), st.slash_and_post)
    };
    let auth = if post {
        "client_secret_post"
    } else {
        "client_secret_basic"
    };
    Json(serde_json::json!({
        "issuer": written,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [auth],
    }))
}

/// Consents at once: back to the relying party with a code (or an error).
async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut st = s.lock().unwrap();
    let p = |k: &str| q.get(k).cloned().unwrap_or_default();
    assert_eq!(p("response_type"), "code");
    assert_eq!(p("client_id"), CLIENT_ID);
    assert_eq!(p("code_challenge_method"), "S256");
    assert_eq!(p("scope"), "openid profile address");
    let redirect = p("redirect_uri");
    let state = p("state");
    if st.mode == Mode::Cancel {
        return Redirect::to(&format!("{redirect}?error=access_denied&state={state}"))
            .into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    st.codes.insert(
        code.clone(),
        Issued {
            nonce: p("nonce"),
            challenge: p("code_challenge"),
            redirect_uri: redirect.clone(),
        },
    );
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    let p = |k: &str| f.get(k).cloned().unwrap_or_default();
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(CLIENT_ID),
            enc(SECRET)
        ))
    );
    let refuse = |st: &mut IdpState, why: &str| {
        st.refused.push(why.to_owned());
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": why })),
        )
            .into_response()
    };
    let authenticated = if st.slash_and_post {
        headers.get("authorization").is_none()
            && p("client_id") == CLIENT_ID
            && p("client_secret") == SECRET
    } else {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str())
    };
    if !authenticated {
        return refuse(&mut st, "invalid_client");
    }
    let Some(issued) = st.codes.remove(&p("code")) else {
        return refuse(&mut st, "invalid_grant");
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(p("code_verifier").as_bytes()));
    if p("grant_type") != "authorization_code"
        || challenge != issued.challenge
        || p("redirect_uri") != issued.redirect_uri
    {
        return refuse(&mut st, "invalid_grant");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = serde_json::json!({
        "iss": written(&st), "aud": CLIENT_ID, "sub": "pairwise-0001",
        "iat": now, "exp": now + 300, "nonce": issued.nonce,
        "name": NAME, "name#ja-Kana-JP": "カツラギ ハナコ",
        "birthdate": "1990-04-01", "gender": "female",
        "address": { "formatted": "東京都千代田区霞が関一丁目1番1号" },
    });
    match st.mode {
        Mode::OtherNonce => claims["nonce"] = "another".into(),
        Mode::OtherAudience => claims["aud"] = "other-client".into(),
        _ => {}
    }
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let key = if st.mode == Mode::OtherKey {
        &st.other_key
    } else {
        &st.key
    };
    let id_token = jsonwebtoken::encode(&h, &claims, key).unwrap();
    Json(serde_json::json!({ "access_token": "at", "token_type": "Bearer", "id_token": id_token }))
        .into_response()
}

async fn jwks(State(s): State<Shared>) -> Response {
    let st = s.lock().unwrap();
    match st.mode {
        Mode::HugeKeys => {
            let mut set = st.jwks.clone();
            set["padding"] = "x".repeat(300 * 1024).into();
            Json(set).into_response()
        }
        Mode::MovedKeys => Redirect::temporary(&format!("{}/elsewhere", st.issuer)).into_response(),
        _ => Json(st.jwks.clone()).into_response(),
    }
}

impl Idp {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca) = crate::harness::loopback_tls(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (key, jwk) = es256();
        let (other_key, _) = es256();
        let state: Shared = Arc::new(Mutex::new(IdpState {
            issuer: issuer.clone(),
            slash_and_post: false,
            mode: Mode::Honest,
            key,
            other_key,
            jwks: serde_json::json!({ "keys": [jwk] }),
            codes: HashMap::new(),
            refused: Vec::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", routing::get(discovery))
            .route("/authorize", routing::get(authorize))
            .route("/token", routing::post(token))
            .route("/jwks", routing::get(jwks))
            .with_state(Arc::clone(&state));
        // Served until the test's runtime ends.
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                    }
                });
            }
        });
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            issuer,
            state,
            ca,
            client,
            _dir: dir,
        }
    }

    fn mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = m;
    }

    /// The person at the provider: where it sends their browser back.
    async fn consent(&self, authorize: &str) -> String {
        let r = self.client.get(authorize).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{authorize}");
        r.headers()["location"].to_str().unwrap().to_owned()
    }
}

/// A municipality (on `<slug>.localhost`, which browsers send to this machine) whose
/// server trusts the provider's CA, with an administrator signed in.
pub(crate) struct Site {
    pub(crate) idp: Idp,
    env: TestEnv,
    t: TenantRecord,
    pub(crate) server: Server,
    pub(crate) host: String,
    admin: Staff,
}

pub(crate) async fn site() -> Site {
    let idp = Idp::start().await;
    let ca = idp.ca.clone();
    // The provider is on 127.0.0.1: private networks allowed, as for one inside LGWAN.
    let env = TestEnv::with(move |s| {
        s.identity_ca = Some(ca);
        s.identity_allow_private_networks = true;
    })
    .await;
    let slug = unique("idv");
    let spec = madoguchi::control::provision::TenantSpec::parse(
        &slug,
        "千代田区",
        "131016",
        &[format!("{slug}.localhost")],
    )
    .unwrap();
    let t = madoguchi::control::provision::provision(&env.platform, &spec)
        .await
        .unwrap();
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    Site {
        idp,
        env,
        t,
        server,
        host,
        admin,
    }
}

impl Site {
    fn u(&self, path: &str) -> String {
        url(&self.server, &self.host, path)
    }

    pub(crate) async fn configure(&self, issuer: &str, secret: &str) -> (u16, String, String) {
        post(
            &self.admin.client,
            &self.u("/admin/identity"),
            &[
                ("csrf", self.admin.csrf.as_str()),
                ("issuer", issuer),
                ("client_id", CLIENT_ID),
                ("client_secret", secret),
                ("scopes", "openid  profile address"),
                ("label", "テスト本人確認"),
            ],
        )
        .await
    }

    /// A one-page form asking for 本人確認, imported (unpublished); its public path
    /// and id.
    pub(crate) async fn form(&self) -> (String, i64) {
        let json = r#"{ "format": "madoguchi.form/1", "title": "住民票の写しの請求",
            "settings": { "identity": true },
            "pages": [ { "id": "p1", "fields": [
                { "id": "purpose", "type": "text", "label": "使用目的", "required": true }
            ] } ] }"#;
        let public = madoguchi::control::tenant_admin::import_form(
            &self.env.platform,
            &self.t,
            json,
            "市民課",
            false,
        )
        .await
        .unwrap();
        let id: i64 = self
            .db()
            .await
            .query_one(
                "SELECT id FROM forms WHERE public_id = $1",
                &[&public.trim_start_matches("/f/")],
            )
            .await
            .unwrap()
            .get(0);
        (public, id)
    }

    /// A file the administrator downloads.
    async fn download(&self, path: &str) -> Vec<u8> {
        let r = self.admin.client.get(self.u(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap().to_vec()
    }

    /// Publishes the form through the builder.
    pub(crate) async fn publish(&self, form_id: i64) {
        let (_, _, page) = post(
            &self.admin.client,
            &self.u(&format!("/admin/forms/{form_id}/publish")),
            &[("csrf", &self.admin.csrf)],
        )
        .await;
        assert!(page.contains("第1版を公開しました"), "{page}");
    }

    async fn db(&self) -> tokio_postgres::Client {
        self.env.tenant_conn(&self.t).await.client
    }

    /// A citizen fills in the form up to its confirmation page.
    async fn fill(&self, public: &str) -> (reqwest::Client, String) {
        let c = browser(&self.server, &[&self.host]);
        let (status, _, page) = fetch(&c, &self.u(public)).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains("送信の前に本人確認（マイナンバーカードなど）が必要です"),
            "{page}"
        );
        let token = capture(r#"name="_token" value="([^"]+)""#, &page);
        let (status, loc, body) = post(
            &c,
            &self.u(public),
            &[
                ("_token", &token),
                ("_page", "0"),
                ("_nav", "next"),
                ("purpose", "年金の手続き"),
            ],
        )
        .await;
        assert_eq!(
            (status, loc.as_str()),
            (303, format!("{public}/confirm").as_str()),
            "{body}"
        );
        (c, token)
    }

    /// From the confirmation page to the provider: its authorization URL.
    async fn start(&self, c: &reqwest::Client, public: &str) -> String {
        let (status, loc, body) = fetch(c, &self.u(&format!("{public}/identity"))).await;
        assert_eq!(status, 303, "{body}");
        assert!(
            loc.starts_with(&format!("{}/authorize?", self.idp.issuer)),
            "{loc}"
        );
        loc
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

/// The administrator sets the provider (checked against its discovery document),
/// a form asking for 本人確認 publishes only then, and a citizen verifies, sees who
/// was verified, and sends; staff see the verified identity with the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_verifies_before_sending_and_staff_see_who() {
    let s = site().await;
    let (public, form_id) = s.form().await;

    // Without a provider the form is not published.
    let (status, _, page) = post(
        &s.admin.client,
        &s.u(&format!("/admin/forms/{form_id}/publish")),
        &[("csrf", &s.admin.csrf)],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("本人確認サービスが設定されていません"),
        "{page}"
    );

    // The settings page names the redirect URI to register.
    let (status, _, page) = fetch(&s.admin.client, &s.u("/admin/identity")).await;
    assert_eq!(status, 200);
    assert!(page.contains(&s.u("/identity/callback")), "{page}");
    // What is not an https issuer, and an issuer whose discovery document is not
    // there, are refused with the reason; nothing is saved.
    let (status, _, page) = s.configure("http://127.0.0.1:9", SECRET).await;
    assert_eq!(status, 422);
    assert!(page.contains("https:// で始まる URL"), "{page}");
    let (status, _, page) = s
        .configure(&format!("{}/other", s.idp.issuer), SECRET)
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("応答が正しくありません（HTTP 404）"),
        "{page}"
    );
    assert_eq!(s.count("SELECT count(*) FROM identity_provider").await, 0);
    let (status, loc, page) = s.configure(&format!("{}/", s.idp.issuer), SECRET).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, "/admin/identity?saved=1"),
        "{page}"
    );
    let (_, _, page) = fetch(&s.admin.client, &s.u(&loc)).await;
    assert!(
        page.contains(&s.idp.issuer) && page.contains("client_secret_basic"),
        "{page}"
    );
    assert!(!page.contains(SECRET));
    // The secret is stored encrypted.
    let sealed: Vec<u8> = s
        .db()
        .await
        .query_one("SELECT client_secret FROM identity_provider", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!sealed.windows(6).any(|w| w == b"s3cret"));

    s.publish(form_id).await;

    // The citizen reaches the confirmation page: no 送信 until verified, and a
    // submit sent anyway stores nothing.
    let (c, token) = s.fill(&public).await;
    let (_, _, confirm) = fetch(&c, &s.u(&format!("{public}/confirm"))).await;
    assert!(
        confirm.contains("本人確認へ進む（テスト本人確認）"),
        "{confirm}"
    );
    assert!(!confirm.contains(">送信する<"), "{confirm}");
    let (status, loc, _) = post(&c, &s.u(&format!("{public}/submit")), &[("_token", &token)]).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{public}/confirm").as_str())
    );
    assert_eq!(s.count("SELECT count(*) FROM submissions").await, 0);

    // To the provider with PKCE, state and nonce; back with a code.
    let authorize = s.start(&c, &public).await;
    let q: HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["redirect_uri"], s.u("/identity/callback"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);
    let back = s.idp.consent(&authorize).await;
    let (status, loc, body) = fetch(&c, &back).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{public}/confirm").as_str()),
        "{body}"
    );
    let (_, _, confirm) = fetch(&c, &s.u(&loc)).await;
    assert!(confirm.contains("本人確認が済みました"), "{confirm}");
    assert!(
        confirm.contains(NAME),
        "the name as the provider sent it, variant selector kept"
    );
    assert!(confirm.contains("1990年4月1日（平成2年4月1日）"));
    assert!(confirm.contains(">送信する<"));
    // The provider's answer is used once.
    let (status, _, page) = fetch(&c, &back).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("本人確認の結果を受け取れませんでした"),
        "{page}"
    );

    // A page drawn before another tab verified again (someone else, perhaps) does
    // not send: the confirmation page shows who is verified now.
    let stamp = capture(r#"name="identity" value="([0-9]+)""#, &confirm);
    let again = s.idp.consent(&s.start(&c, &public).await).await;
    let (status, _, _) = fetch(&c, &again).await;
    assert_eq!(status, 303);
    let submit = s.u(&format!("{public}/submit"));
    for stale in [
        vec![("_token", token.as_str())],
        vec![("_token", token.as_str()), ("identity", stamp.as_str())],
    ] {
        let (status, loc, _) = post(&c, &submit, &stale).await;
        assert_eq!(
            (status, loc.as_str()),
            (303, format!("{public}/confirm").as_str())
        );
    }
    assert_eq!(s.count("SELECT count(*) FROM submissions").await, 0);
    let (_, _, confirm) = fetch(&c, &s.u(&format!("{public}/confirm"))).await;
    let stamp = capture(r#"name="identity" value="([0-9]+)""#, &confirm);
    let (status, loc, _) = post(&c, &submit, &[("_token", &token), ("identity", &stamp)]).await;
    assert_eq!(status, 303);
    let (_, _, done) = fetch(&c, &s.u(&loc)).await;
    let receipt = capture(r#"id="receipt">([0-9A-Z-]+)<"#, &done);

    // Kept with the submission, encrypted.
    let db = s.db().await;
    let row = db
        .query_one(
            "SELECT s.id, i.claims, i.issuer FROM submissions s JOIN submission_identities i ON i.submission_id = s.id WHERE s.receipt_number = $1",
            &[&receipt],
        )
        .await
        .unwrap();
    let id: uuid::Uuid = row.get(0);
    let claims: Vec<u8> = row.get(1);
    assert_eq!(row.get::<_, String>(2), s.idp.issuer);
    assert!(!String::from_utf8_lossy(&claims).contains("花子"));
    assert!(!claims.windows(8).any(|w| w == b"pairwise"));
    // The draft's copy went with the submission.
    assert_eq!(s.count("SELECT count(*) FROM draft_identities").await, 0);

    // Staff see who was verified, with the application.
    let (status, _, page) = fetch(&s.admin.client, &s.u(&format!("/admin/submissions/{id}"))).await;
    assert_eq!(status, 200);
    let section = capture(r#"(?s)id="identity">(.*?)</section>"#, &page);
    for shown in [
        NAME,
        "カツラギ ハナコ",
        "1990年4月1日（平成2年4月1日）",
        "女性",
        "東京都千代田区霞が関一丁目1番1号",
        s.idp.issuer.as_str(),
    ] {
        assert!(section.contains(shown), "{shown} not in {section}");
    }
    // In the exports, beside the answers: what the provider vouched for.
    let csv = String::from_utf8(
        s.download(&format!("/admin/export.csv?form={form_id}"))
            .await,
    )
    .unwrap();
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    let header = lines.next().unwrap();
    assert!(
        header.ends_with(",本人確認日時,本人確認: 発行者,本人確認: 氏名,本人確認: フリガナ,本人確認: 生年月日,本人確認: 性別,本人確認: 住所,受付方法"),
        "{header}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.ends_with(&format!(
            ",{},{NAME},カツラギ ハナコ,1990-04-01,女性,東京都千代田区霞が関一丁目1番1号,オンライン",
            s.idp.issuer
        )),
        "{row}"
    );
    let bytes = s
        .download(&format!("/admin/export.xlsx?form={form_id}"))
        .await;
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    let sheet = book.worksheet_range("申請一覧").unwrap();
    let rows: Vec<Vec<calamine::Data>> = sheet.rows().map(<[_]>::to_vec).collect();
    let col = |name: &str| rows[0].iter().position(|c| *c == name).unwrap();
    assert_eq!(rows[1][col("本人確認: 氏名")].to_string(), NAME);
    // The birth date is a date cell, so it sorts.
    assert!(
        matches!(
            rows[1][col("本人確認: 生年月日")],
            calamine::Data::DateTime(_)
        ),
        "{:?}",
        rows[1]
    );

    // Through the integration API, with the submission.
    let token = madoguchi::control::tenant_admin::api_token(
        &s.env.platform,
        &s.t,
        "基幹連携",
        &["submissions:read".to_owned()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let one: serde_json::Value = s
        .admin
        .client
        .get(s.u(&format!("/api/v1/submissions/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity = &one["identity"];
    assert_eq!(identity["name"], NAME, "{one}");
    assert_eq!(identity["subject"], "pairwise-0001");
    assert_eq!(identity["birthdate"], "1990-04-01");
    assert_eq!(identity["issuer"], s.idp.issuer.as_str());

    // Logged, without the person's data.
    let log = crate::forms::log_rows(
        &db,
        "SELECT actor, action, detail FROM audit_log WHERE action LIKE 'identity%' ORDER BY seq",
    )
    .await;
    let actions: Vec<&str> = log.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "identity_provider.save",
            "identity.verified",
            "identity.verified"
        ]
    );
    assert!(
        log.iter()
            .all(|(_, _, d)| !d.contains("花子") && !d.contains(SECRET)),
        "{log:?}"
    );
}

/// Each way a verification goes wrong leaves the draft unverified and says why:
/// another browser, a cancel at the provider, an expired request, a token signed
/// with another key, for another client or with another nonce, a wrong secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_are_refused_when_anything_does_not_match() {
    let s = site().await;
    let (public, form_id) = s.form().await;
    let (status, _, _) = s.configure(&s.idp.issuer, SECRET).await;
    assert_eq!(status, 303);
    s.publish(form_id).await;
    let (c, _) = s.fill(&public).await;
    let unverified = || async { s.count("SELECT count(*) FROM draft_identities").await == 0 };

    // Finished in a browser that did not start it (a link someone sent).
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    let other = browser(&s.server, &[&s.host]);
    let (status, _, page) = fetch(&other, &back).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("本人確認を始めたブラウザと異なります"),
        "{page}"
    );
    // ... and that used it up: the right browser cannot take it afterwards.
    let (status, _, _) = fetch(&c, &back).await;
    assert_eq!(status, 400);
    assert!(unverified().await);

    // Cancelled at the provider.
    s.idp.mode(Mode::Cancel);
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    let (status, _, page) = fetch(&c, &back).await;
    assert_eq!(status, 200);
    assert!(page.contains("本人確認は完了していません"), "{page}");
    assert!(page.contains(&format!("href=\"{public}/confirm\"")));

    // Too late: the request expired.
    s.idp.mode(Mode::Honest);
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    s.db()
        .await
        .execute(
            "UPDATE identity_requests SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let (status, _, page) = fetch(&c, &back).await;
    assert_eq!(status, 400);
    assert!(page.contains("有効期限が切れました"), "{page}");

    // The token's checks, and a key set too large to read or moved elsewhere (no
    // redirect is followed).
    for (mode, why) in [
        (Mode::OtherKey, "IDトークンを確認できませんでした（署名）"),
        (
            Mode::OtherAudience,
            "IDトークンを確認できませんでした（宛先）",
        ),
        (
            Mode::OtherNonce,
            "IDトークンを確認できませんでした（nonce）",
        ),
        (
            Mode::HugeKeys,
            "本人確認サービスの応答が正しくありません（262144 バイトを超えています）",
        ),
        (
            Mode::MovedKeys,
            "本人確認サービスの応答が正しくありません（HTTP 307）",
        ),
    ] {
        s.idp.mode(mode);
        let back = s.idp.consent(&s.start(&c, &public).await).await;
        let (status, _, page) = fetch(&c, &back).await;
        assert_eq!(status, 502, "{mode:?}");
        assert!(page.contains(why), "{mode:?}: {page}");
        assert!(unverified().await, "{mode:?}");
    }

    // A wrong client secret: the provider refuses the code.
    s.idp.mode(Mode::Honest);
    let (status, _, _) = s.configure(&s.idp.issuer, "wrong").await;
    assert_eq!(status, 303);
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    let (status, _, page) = fetch(&c, &back).await;
    assert_eq!(status, 502);
    assert!(
        page.contains("コードを受け付けませんでした（invalid_client）"),
        "{page}"
    );
    assert_eq!(s.idp.state.lock().unwrap().refused, ["invalid_client"]);
    assert!(unverified().await);

    // Saving again with the secret left empty keeps the one saved; then it works.
    let (status, _, _) = s.configure(&s.idp.issuer, SECRET).await;
    assert_eq!(status, 303);
    let (status, _, _) = s.configure(&s.idp.issuer, "").await;
    assert_eq!(status, 303);
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    let (status, _, _) = fetch(&c, &back).await;
    assert_eq!(status, 303);
    assert!(!unverified().await);

    let refused = s
        .count("SELECT count(*) FROM audit_log WHERE action = 'identity.refused'")
        .await;
    assert_eq!(refused, 6);
    // Nothing of a verification under way is left.
    assert_eq!(s.count("SELECT count(*) FROM identity_requests").await, 0);
}

/// A verification holds only where it was made: for its own form when two are under
/// way at once, not in a browser the draft is moved to by a mailed link, not after
/// the provider is removed or replaced; a framed page says to open the form on its
/// own; and the saved secret goes to no other issuer or client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_holds_only_where_it_was_made() {
    let s = site().await;
    let (status, _, _) = s.configure(&s.idp.issuer, SECRET).await;
    assert_eq!(status, 303);
    // The secret is asked for again for another issuer or client.
    for (issuer, client) in [
        (format!("{}/other", s.idp.issuer), CLIENT_ID),
        (s.idp.issuer.clone(), "another-client"),
    ] {
        let (status, _, page) = post(
            &s.admin.client,
            &s.u("/admin/identity"),
            &[
                ("csrf", s.admin.csrf.as_str()),
                ("issuer", &issuer),
                ("client_id", client),
                ("client_secret", ""),
                ("scopes", "openid"),
                ("label", "テスト本人確認"),
            ],
        )
        .await;
        assert_eq!(status, 422, "{issuer} {client}");
        assert!(
            page.contains("クライアントシークレットも入力してください"),
            "{page}"
        );
    }
    let (a, a_id) = s.form().await;
    let (b, b_id) = s.form().await;
    s.publish(a_id).await;
    s.publish(b_id).await;

    // Two forms verified at once in one browser: each keeps its own.
    let (c, _) = s.fill(&a).await;
    {
        let (_, _, page) = fetch(&c, &s.u(&b)).await;
        let token = capture(r#"name="_token" value="([^"]+)""#, &page);
        let (status, _, _) = post(
            &c,
            &s.u(&b),
            &[
                ("_token", &token),
                ("_page", "0"),
                ("_nav", "next"),
                ("purpose", "転居"),
            ],
        )
        .await;
        assert_eq!(status, 303);
    }
    let to_a = s.start(&c, &a).await;
    let to_b = s.start(&c, &b).await;
    for (to, public) in [(to_a, &a), (to_b, &b)] {
        let back = s.idp.consent(&to).await;
        let (status, loc, page) = fetch(&c, &back).await;
        assert_eq!(
            (status, loc.as_str()),
            (303, format!("{public}/confirm").as_str()),
            "{page}"
        );
    }
    assert_eq!(s.count("SELECT count(*) FROM draft_identities").await, 2);

    // A framed page cannot reach the provider, and says so.
    let framed_page = || async {
        c.get(s.u(&format!("{b}/confirm")))
            .header("sec-fetch-dest", "iframe")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let framed = framed_page().await;
    let db = s.db().await;
    db.execute("DELETE FROM draft_identities", &[])
        .await
        .unwrap();
    let framed_unverified = framed_page().await;
    assert!(framed.contains("本人確認が済みました"), "{framed}");
    assert!(
        framed_unverified.contains("ほかのサイトに埋め込まれた画面からは行えません")
            && !framed_unverified.contains("identity-start"),
        "{framed_unverified}"
    );

    // Verified, then moved by a mailed link to another browser: that browser
    // verifies again.
    let back = s.idp.consent(&s.start(&c, &a).await).await;
    assert_eq!(fetch(&c, &back).await.0, 303);
    let key = "resume-key-0123456789abcdefghijklmnopqrstuv";
    db.execute(
        "UPDATE citizen_drafts SET resume_hash = $1 WHERE id = (SELECT draft_id FROM draft_identities)",
        &[&Sha256::digest(key.as_bytes()).to_vec()],
    )
    .await
    .unwrap();
    let elsewhere = browser(&s.server, &[&s.host]);
    let origin = s.u("");
    let (status, loc, page) = crate::forms::post_from(
        &elsewhere,
        &s.u(&format!("{a}/resume/{key}")),
        Some(origin.trim_end_matches('/')),
        &[],
    )
    .await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{a}/confirm").as_str()),
        "{page}"
    );
    assert_eq!(s.count("SELECT count(*) FROM draft_identities").await, 0);
    let (_, _, confirm) = fetch(&elsewhere, &s.u(&loc)).await;
    assert!(confirm.contains("本人確認へ進む"), "{confirm}");
    assert!(!confirm.contains(NAME));

    // Verified, then the provider is replaced or removed: it no longer counts.
    let back = s.idp.consent(&s.start(&elsewhere, &a).await).await;
    assert_eq!(fetch(&elsewhere, &back).await.0, 303);
    db.execute(
        "UPDATE identity_provider SET issuer = 'https://replaced.example'",
        &[],
    )
    .await
    .unwrap();
    let (_, _, confirm) = fetch(&elsewhere, &s.u(&format!("{a}/confirm"))).await;
    assert!(!confirm.contains("本人確認が済みました"), "{confirm}");
    db.execute("UPDATE identity_provider SET issuer = $1", &[&s.idp.issuer])
        .await
        .unwrap();
    let (_, _, confirm) = fetch(&elsewhere, &s.u(&format!("{a}/confirm"))).await;
    let stamp = capture(r#"name="identity" value="([0-9]+)""#, &confirm);
    let token = capture(r#"name="_token" value="([^"]+)""#, &confirm);
    let (status, _, _) = post(
        &s.admin.client,
        &s.u("/admin/identity/remove"),
        &[("csrf", s.admin.csrf.as_str())],
    )
    .await;
    assert_eq!(status, 303);
    let (status, loc, _) = post(
        &elsewhere,
        &s.u(&format!("{a}/submit")),
        &[("_token", token.as_str()), ("identity", stamp.as_str())],
    )
    .await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{a}/confirm").as_str())
    );
    assert_eq!(s.count("SELECT count(*) FROM submissions").await, 0);
    let (_, _, confirm) = fetch(&elsewhere, &s.u(&loc)).await;
    assert!(
        confirm.contains("本人確認サービスの準備ができていない"),
        "{confirm}"
    );
}

/// A provider that writes its issuer with a trailing slash (tokens must name it so)
/// and takes the client's secret in the body: saved as its discovery document says,
/// and verifying works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_with_a_slashed_issuer_and_the_secret_in_the_body() {
    let s = site().await;
    s.idp.state.lock().unwrap().slash_and_post = true;
    let (status, _, page) = s.configure(&s.idp.issuer, SECRET).await;
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = fetch(&s.admin.client, &s.u("/admin/identity")).await;
    assert!(
        page.contains(&format!("{}/</dd>", s.idp.issuer)) && page.contains("client_secret_post"),
        "{page}"
    );
    let (public, form_id) = s.form().await;
    s.publish(form_id).await;
    let (c, _) = s.fill(&public).await;
    let back = s.idp.consent(&s.start(&c, &public).await).await;
    let (status, loc, page) = fetch(&c, &back).await;
    assert_eq!(
        (status, loc.as_str()),
        (303, format!("{public}/confirm").as_str()),
        "{page}"
    );
    assert!(s.idp.state.lock().unwrap().refused.is_empty());
    assert_eq!(s.count("SELECT count(*) FROM draft_identities").await, 1);
}
