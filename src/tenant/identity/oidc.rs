//! OpenID Connect as a relying party: the provider's discovery document, the
//! authorization request (code flow with PKCE S256, `state` and `nonce`), the code's
//! exchange at the token endpoint and the ID token's checks (signature by a key of
//! the provider's JWKS, issuer, audience, expiry, nonce).
//!
//! Every call to the provider is HTTPS only (the system's CA certificates and an
//! optional private CA), goes only to public addresses unless the operator allows
//! private networks, follows no redirects, takes at most [`TIMEOUT`] and reads at
//! most [`BODY_LIMIT`] bytes.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// One call to the provider, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document, key set or token response read.
pub const BODY_LIMIT: usize = 256 * 1024;
/// Clock difference allowed between the provider and us, for `exp` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The longest claim kept (a name, an address).
pub const CLAIM_CHARS: usize = 500;
/// Signature algorithms accepted for ID tokens (never `none`, never HMAC).
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// What went wrong with the provider, in words for the administrator or citizen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error(
        "発行者（issuer）は https:// で始まる URL で入力してください（クエリや # は付けません）"
    )]
    IssuerUrl,
    #[error("本人確認サービスに接続できませんでした（{0}）")]
    Unreachable(String),
    #[error("本人確認サービスの応答が正しくありません（{0}）")]
    BadResponse(String),
    #[error("ディスカバリー文書の issuer（{found}）が入力した発行者と一致しません")]
    IssuerMismatch { found: String },
    #[error("本人確認サービスがコードを受け付けませんでした（{0}）")]
    TokenRefused(String),
    #[error("IDトークンを確認できませんでした（{0}）")]
    Token(&'static str),
    #[error("本人確認サービスのアドレスがインターネット上のものではありません（LGWAN など内部のネットワークにある本人確認サービスは、運用者が許可した場合にだけ使えます）")]
    Private,
}

/// Text from the provider, cut to `n` characters (never inside one).
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Whether an address is on the internet: not loopback, private, link-local (cloud
/// metadata services among them), shared (100.64/10), reserved, documentation,
/// multicast or unspecified; IPv6 unique-local, link-local, NAT64 and IPv4-mapped
/// addresses judged as such.
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_unspecified()
                || a.is_multicast()
                || o0 == 0
                || o0 >= 240
                || (o0 == 100 && (o1 & 0xc0) == 64)
                || (o0 == 192 && o1 == 0 && o2 == 0)
                || (o0 == 198 && (o1 & 0xfe) == 18))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return public_address(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0064 && s[1] == 0xff9b))
        }
    }
}

/// Resolves host names to their public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| public_address(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("no public address".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The way to identity providers: an HTTPS client, and whether private networks
/// may be reached (the operator's `identity_allow_private_networks`).
#[derive(Clone)]
pub struct Idp {
    http: reqwest::Client,
    allow_private: bool,
}

impl Idp {
    pub fn new(extra_ca: Option<&Path>, allow_private: bool) -> anyhow::Result<Self> {
        Ok(Self {
            http: http_client(extra_ca, allow_private)?,
            allow_private,
        })
    }

    /// An https URL this client may call: a host name (resolved to public addresses
    /// unless private networks are allowed) or an address allowed as it stands.
    fn check(&self, url: &str, what: &str) -> Result<reqwest::Url, Problem> {
        let u = reqwest::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "https")
            .ok_or_else(|| {
                Problem::BadResponse(format!("{what} が https の URL ではありません"))
            })?;
        let literal = match u.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Problem::BadResponse(format!("{what} にホストがありません"))),
        };
        if literal.is_some_and(|ip| !public_address(ip)) && !self.allow_private {
            return Err(Problem::Private);
        }
        Ok(u)
    }
}

/// The HTTP client for identity providers.
fn http_client(extra_ca: Option<&Path>, allow_private: bool) -> anyhow::Result<reqwest::Client> {
    let roots = crate::tls_client::roots(extra_ca, "the identity CA file")?;
    let tls = crate::tls_client::config(roots)?;
    let mut b = reqwest::Client::builder();
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    Ok(b.use_preconfigured_tls(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("madoguchi/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// An issuer as entered: an https URL without query, fragment or credentials, with
/// no trailing slash (the discovery document says how the provider writes it).
pub fn issuer_url(entered: &str) -> Result<String, Problem> {
    let s = entered.trim().trim_end_matches('/');
    let url = url::Url::parse(s).map_err(|_| Problem::IssuerUrl)?;
    if url.scheme() != "https"
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(Problem::IssuerUrl);
    }
    Ok(s.to_owned())
}

/// The endpoints a provider's discovery document names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    /// `client_secret_basic` or `client_secret_post`.
    pub token_auth: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

/// What discovery found: the issuer exactly as the provider writes it (tokens must
/// name it so) and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub issuer: String,
    pub endpoints: Endpoints,
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, Problem> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Problem::Unreachable(short(e)))?
    {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(Problem::BadResponse(format!(
                "{} バイトを超えています",
                BODY_LIMIT
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error without the URL's query (a code must not reach a log or a page).
fn short(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        "時間切れ".into()
    } else if e.is_connect() {
        "接続できません".into()
    } else {
        clip(&e.to_string(), 200)
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    idp: &Idp,
    url: &str,
    what: &str,
) -> Result<T, Problem> {
    let url = idp.check(url, what)?;
    let resp = idp
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Problem::Unreachable(short(e)))?;
    if !resp.status().is_success() {
        return Err(Problem::BadResponse(format!(
            "HTTP {}",
            resp.status().as_u16()
        )));
    }
    let body = read_limited(resp).await?;
    serde_json::from_slice(&body).map_err(|e| Problem::BadResponse(format!("JSON: {e}")))
}

/// Reads `{issuer}/.well-known/openid-configuration` and checks it names this issuer,
/// https endpoints this client may reach, and PKCE with S256 where it says which
/// methods it takes.
pub async fn discover(idp: &Idp, issuer: &str) -> Result<Discovered, Problem> {
    let d: Discovery = get_json(
        idp,
        &format!("{issuer}/.well-known/openid-configuration"),
        "issuer",
    )
    .await?;
    if d.issuer.trim_end_matches('/') != issuer {
        return Err(Problem::IssuerMismatch {
            found: clip(&d.issuer, 200),
        });
    }
    idp.check(&d.authorization_endpoint, "authorization_endpoint")?;
    idp.check(&d.token_endpoint, "token_endpoint")?;
    idp.check(&d.jwks_uri, "jwks_uri")?;
    if !d.code_challenge_methods_supported.is_empty()
        && !d
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return Err(Problem::BadResponse(
            "PKCE（S256）に対応していません".into(),
        ));
    }
    let methods = &d.token_endpoint_auth_methods_supported;
    let token_auth = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
        "client_secret_basic"
    } else if methods.iter().any(|m| m == "client_secret_post") {
        "client_secret_post"
    } else {
        return Err(Problem::BadResponse(
            "client_secret_basic にも client_secret_post にも対応していません".into(),
        ));
    };
    Ok(Discovered {
        issuer: d.issuer,
        endpoints: Endpoints {
            authorization: d.authorization_endpoint,
            token: d.token_endpoint,
            jwks: d.jwks_uri,
            token_auth: token_auth.into(),
        },
    })
}

/// A municipality's provider, its secret in the clear while it is held.
pub struct Provider {
    pub issuer: String,
    pub endpoints: Endpoints,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub scopes: String,
    pub label: String,
}

/// A verification's secrets: `state` (also kept in the browser's cookie), `nonce`
/// (comes back inside the ID token) and the PKCE verifier (sent only to the token
/// endpoint).
pub struct Request {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Request {
    pub fn new() -> Self {
        Self {
            state: crate::crypto::random_token(32),
            nonce: crate::crypto::random_token(32),
            // 64 bytes: 86 characters of base64url, within PKCE's 43 to 128.
            verifier: crate::crypto::random_token(64),
        }
    }
}

impl Default for Request {
    fn default() -> Self {
        Self::new()
    }
}

/// PKCE's S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Where the browser goes to verify.
pub fn authorization_url(p: &Provider, r: &Request, redirect_uri: &str) -> Result<String, Problem> {
    let mut url = url::Url::parse(&p.endpoints.authorization)
        .map_err(|_| Problem::BadResponse("authorization_endpoint".into()))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &p.scopes)
        .append_pair("state", &r.state)
        .append_pair("nonce", &r.nonce)
        .append_pair("code_challenge", &challenge(&r.verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    error: Option<String>,
}

/// Exchanges the code for the ID token.
pub async fn exchange(
    idp: &Idp,
    p: &Provider,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<String, Problem> {
    let post = p.endpoints.token_auth == "client_secret_post";
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier);
        if post {
            form.append_pair("client_id", &p.client_id)
                .append_pair("client_secret", &p.client_secret);
        }
        Zeroizing::new(form.finish())
    };
    let url = idp.check(&p.endpoints.token, "token_endpoint")?;
    let mut req = idp
        .http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if !post {
        // RFC 6749 §2.3.1: each part form-urlencoded before Basic.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = Zeroizing::new(format!("{}:{}", enc(&p.client_id), enc(&p.client_secret)));
        let value = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(basic.as_bytes())
        ));
        let mut header = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| Problem::BadResponse("client_id".into()))?;
        header.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, header);
    }
    // The request takes the body itself: no copy of the secret is left here.
    let mut body = body;
    let resp = req
        .body(std::mem::take(&mut *body))
        .send()
        .await
        .map_err(|e| Problem::Unreachable(short(e)))?;
    let status = resp.status();
    let bytes = read_limited(resp).await?;
    let t: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|_| Problem::BadResponse(format!("HTTP {}", status.as_u16())))?;
    if let Some(e) = t.error {
        return Err(Problem::TokenRefused(clip(&e, 100)));
    }
    if !status.is_success() {
        return Err(Problem::TokenRefused(format!("HTTP {}", status.as_u16())));
    }
    t.id_token
        .ok_or(Problem::BadResponse("id_token がありません".into()))
}

/// The provider's signing keys.
pub async fn keys(idp: &Idp, p: &Provider) -> Result<jsonwebtoken::jwk::JwkSet, Problem> {
    get_json(idp, &p.endpoints.jwks, "jwks_uri").await
}

/// Who the provider says the citizen is: what is kept with the application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's identifier for this person (`sub`).
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// フリガナ (`name#ja-Kana-JP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_kana: Option<String>,
    /// `YYYY-MM-DD` as the provider gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Deserialize)]
struct TokenClaims {
    // One issuer, as a string (jsonwebtoken would take a list too).
    #[allow(dead_code)]
    iss: String,
    iat: Option<i64>,
    sub: String,
    aud: serde_json::Value,
    azp: Option<String>,
    nonce: Option<String>,
    name: Option<serde_json::Value>,
    #[serde(rename = "name#ja-Kana-JP")]
    name_kana: Option<serde_json::Value>,
    birthdate: Option<serde_json::Value>,
    gender: Option<serde_json::Value>,
    address: Option<serde_json::Value>,
}

/// A claim as text, as sent (never normalised: a name keeps its variant
/// selectors), cut to [`CLAIM_CHARS`].
fn text(v: Option<&serde_json::Value>) -> Option<String> {
    let s = v?.as_str()?.trim();
    (!s.is_empty()).then(|| s.chars().take(CLAIM_CHARS).collect())
}

/// Checks an ID token against the provider's keys and this request's nonce.
pub fn verify(
    id_token: &str,
    keys: &jsonwebtoken::jwk::JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Identity, Problem> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|_| Problem::Token("形式"))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Problem::Token("署名方式"));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // Without a key id, the provider must have a single key.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(Problem::Token("署名の鍵"))?;
    // A key the provider marks for encryption, or for another algorithm, is not used.
    use jsonwebtoken::jwk::{KeyAlgorithm as KA, PublicKeyUse};
    let for_signing = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| *u == PublicKeyUse::Signature);
    let for_this_alg = jwk.common.key_algorithm.is_none_or(|k| {
        matches!(
            (k, header.alg),
            (KA::RS256, Algorithm::RS256)
                | (KA::PS256, Algorithm::PS256)
                | (KA::ES256, Algorithm::ES256)
                | (KA::EdDSA, Algorithm::EdDSA)
        )
    });
    if !for_signing || !for_this_alg {
        return Err(Problem::Token("署名の鍵"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Problem::Token("署名の鍵"))?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<TokenClaims>(id_token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        Problem::Token(match e.kind() {
            K::InvalidSignature => "署名",
            K::ExpiredSignature => "有効期限",
            K::InvalidIssuer => "発行者",
            K::InvalidAudience => "宛先",
            K::MissingRequiredClaim(_) => "必須の項目",
            K::InvalidAlgorithm => "署名方式",
            _ => "形式",
        })
    })?;
    let c = data.claims;
    // More than one audience: the token must have been issued to us (azp); an azp
    // given must name us in any case.
    if (c.aud.as_array().is_some_and(|a| a.len() > 1) && c.azp.is_none())
        || c.azp.as_deref().is_some_and(|azp| azp != client_id)
    {
        return Err(Problem::Token("宛先"));
    }
    // Issued for this request: not in the future, not before the request could have
    // started (jsonwebtoken does not check iat).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(60);
    let oldest = now - i64::from(super::REQUEST_MINUTES) * 60 - leeway;
    match c.iat {
        Some(iat) if (oldest..=now + leeway).contains(&iat) => {}
        _ => return Err(Problem::Token("発行時刻")),
    }
    match c.nonce {
        Some(n) if crate::tenant::http::same_secret(&n, nonce) => {}
        _ => return Err(Problem::Token("nonce")),
    }
    if c.sub.is_empty() || c.sub.len() > 255 {
        return Err(Problem::Token("sub"));
    }
    let address = match &c.address {
        Some(serde_json::Value::Object(a)) => text(a.get("formatted")),
        other => text(other.as_ref()),
    };
    Ok(Identity {
        subject: c.sub,
        name: text(c.name.as_ref()),
        name_kana: text(c.name_kana.as_ref()),
        birthdate: text(c.birthdate.as_ref()),
        gender: text(c.gender.as_ref()),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const ISSUER: &str = "https://idp.example.jp";

    struct Signer {
        key: EncodingKey,
        jwks: jsonwebtoken::jwk::JwkSet,
    }

    /// An ES256 key (made by rcgen with ring) and its JWKS entry under `kid`.
    fn signer(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::from_value(serde_json::json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]}))
        .unwrap_or_else(|e| panic!("{e}"));
        Signer {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwks,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "aud": "city-client", "sub": "pairwise-0001",
            "iat": now(), "exp": now() + 300, "nonce": "n-123",
            "name": "窓口 花子", "name#ja-Kana-JP": "マドグチ ハナコ",
            "birthdate": "1990-04-01", "gender": "female",
            "address": { "formatted": "東京都千代田区霞が関一丁目1番1号" },
        })
    }

    fn sign(s: &Signer, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &s.key).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_good_token_gives_the_claims_as_sent() {
        let s = signer("k1");
        let mut c = claims();
        // A name with an ideographic variation sequence (葛 + VS17) is kept as sent.
        c["name"] = serde_json::json!("葛\u{E0100}城 花子");
        let id = verify(
            &sign(&s, Some("k1"), &c),
            &s.jwks,
            ISSUER,
            "city-client",
            "n-123",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.subject, "pairwise-0001");
        assert_eq!(id.name.as_deref(), Some("葛\u{E0100}城 花子"));
        assert_eq!(id.name_kana.as_deref(), Some("マドグチ ハナコ"));
        assert_eq!(id.birthdate.as_deref(), Some("1990-04-01"));
        assert_eq!(
            id.address.as_deref(),
            Some("東京都千代田区霞が関一丁目1番1号")
        );
    }

    #[test]
    fn each_check_refuses_what_it_should() {
        let s = signer("k1");
        let other = signer("k1");
        let good = claims();
        let check = |token: &str| verify(token, &s.jwks, ISSUER, "city-client", "n-123");
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            sign(&s, Some("k1"), &c)
        };
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "another key's signature",
                sign(&other, Some("k1"), &good),
                "署名",
            ),
            ("an unknown key id", sign(&s, Some("k9"), &good), "署名の鍵"),
            (
                "expired",
                with("exp", serde_json::json!(now() - 3600)),
                "有効期限",
            ),
            (
                "another issuer",
                with("iss", serde_json::json!("https://evil.example")),
                "発行者",
            ),
            (
                "another client",
                with("aud", serde_json::json!("other-client")),
                "宛先",
            ),
            (
                "several audiences without azp",
                with("aud", serde_json::json!(["city-client", "other"])),
                "宛先",
            ),
            (
                "another nonce",
                with("nonce", serde_json::json!("n-999")),
                "nonce",
            ),
            ("no nonce", with("nonce", serde_json::Value::Null), "nonce"),
            (
                "issued in the future",
                with("iat", serde_json::json!(now() + 600)),
                "発行時刻",
            ),
            (
                "issued long ago",
                with("iat", serde_json::json!(now() - 3600)),
                "発行時刻",
            ),
            ("no iat", with("iat", serde_json::Value::Null), "発行時刻"),
            (
                "azp naming another client",
                with("azp", serde_json::json!("other")),
                "宛先",
            ),
            (
                "a list of issuers",
                with("iss", serde_json::json!([ISSUER, "https://evil.example"])),
                "形式",
            ),
        ];
        for (what, token, why) in cases {
            assert_eq!(check(&token), Err(Problem::Token(why)), "{what}");
        }
        // A key the provider marks for encryption, or for another algorithm, is not
        // used even if it would verify.
        for (field, value) in [("use", "enc"), ("alg", "RS256")] {
            let mut marked = serde_json::to_value(&s.jwks).unwrap_or_default();
            marked["keys"][0][field] = serde_json::json!(value);
            let marked: jsonwebtoken::jwk::JwkSet =
                serde_json::from_value(marked).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                verify(
                    &sign(&s, Some("k1"), &good),
                    &marked,
                    ISSUER,
                    "city-client",
                    "n-123"
                ),
                Err(Problem::Token("署名の鍵")),
                "{field}: {value}"
            );
        }
        // Unsigned (alg none) and HMAC with the public key as secret are refused.
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","kid":"k1"}"#),
            b64(good.to_string().as_bytes())
        );
        assert_eq!(check(&none), Err(Problem::Token("形式")));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check(&hs), Err(Problem::Token("署名方式")));
        // Several audiences with azp naming us are accepted.
        let mut c = good.clone();
        c["aud"] = serde_json::json!(["city-client", "other"]);
        c["azp"] = serde_json::json!("city-client");
        assert!(check(&sign(&s, Some("k1"), &c)).is_ok());
    }

    #[test]
    fn issuers_must_be_https_urls() {
        assert_eq!(
            issuer_url(" https://idp.example.jp/ "),
            Ok("https://idp.example.jp".into())
        );
        assert_eq!(
            issuer_url("https://idp.example.jp/realms/city"),
            Ok("https://idp.example.jp/realms/city".into())
        );
        for bad in [
            "http://idp.example.jp",
            "https://idp.example.jp/?x=1",
            "idp.example.jp",
            "https://u:p@idp.example.jp",
            "https://:p@idp.example.jp",
            "",
        ] {
            assert_eq!(issuer_url(bad), Err(Problem::IssuerUrl), "{bad}");
        }
    }

    #[test]
    fn only_internet_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = private.parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(!public_address(ip), "{private}");
        }
        for public in ["8.8.8.8", "133.1.2.3", "2400:4050::1", "::ffff:8.8.8.8"] {
            let ip: IpAddr = public.parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(public_address(ip), "{public}");
        }
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let strict = Idp::new(None, false).unwrap_or_else(|e| panic!("{e}"));
        let open = Idp::new(None, true).unwrap_or_else(|e| panic!("{e}"));
        for url in [
            "https://127.0.0.1:8443/token",
            "https://[::1]/jwks",
            "https://169.254.169.254/",
        ] {
            assert_eq!(
                strict.check(url, "x").err(),
                Some(Problem::Private),
                "{url}"
            );
            assert!(open.check(url, "x").is_ok(), "{url}");
        }
        assert!(strict.check("https://idp.example.jp/token", "x").is_ok());
        assert!(matches!(
            strict.check("http://idp.example.jp/", "x"),
            Err(Problem::BadResponse(_))
        ));
    }

    #[tokio::test]
    async fn host_names_resolve_to_public_addresses_only() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            PublicOnly.resolve(name).await.is_err(),
            "localhost is not public"
        );
    }

    #[test]
    fn provider_text_is_cut_between_characters() {
        assert_eq!(clip("あいうえお", 3), "あいう");
        assert_eq!(clip("ab", 5), "ab");
    }

    #[test]
    fn the_challenge_is_rfc7636s() {
        // RFC 7636, Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let r = Request::new();
        assert!((43..=128).contains(&r.verifier.len()));
    }
}
