//! Small HTTP pieces the tenant app shares: cookies, url-encoded forms with repeated
//! keys, redirects, constant-time token comparison.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::forms::answers::Raw;
use crate::error::AppError;

/// Largest url-encoded form body accepted (bytes).
pub const MAX_FORM_BODY: usize = 256 * 1024;

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies(headers, name).into_iter().next()
}

/// Every value sent under `name`, in the order sent. A browser may send two: one
/// kept for a site framing the page (partitioned) and one kept for the page's own.
pub fn cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
    let mut values: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .collect();
    values.dedup();
    values.truncate(4);
    values
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure over TLS.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: Option<u64>,
    secure: bool,
) -> HeaderValue {
    let mut s = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_secs {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        s.push_str("; Secure");
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Rewrites the `SameSite=Lax; Secure` cookies [`set_cookie`] made to
/// `SameSite=None; Secure; Partitioned`, for a form shown in a frame on the
/// municipality's own site (another site than the form's): a `Lax` cookie is neither
/// stored nor sent in a frame of another site, so every 次へ started afresh.
/// Partitioned cookies are kept apart for each site the form is framed in, never
/// shared between sites; over plain HTTP (no `Secure`) cookies stay as they are. The
/// form's token in each page still guards against requests made by another site.
pub fn embeddable_cookies(headers: &mut axum::http::HeaderMap) {
    use axum::http::{header::SET_COOKIE, HeaderValue};
    let cookies: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(SET_COOKIE);
    for c in cookies {
        let changed = c
            .to_str()
            .ok()
            .filter(|s| s.contains("; SameSite=Lax") && s.contains("; Secure"))
            .map(|s| {
                format!(
                    "{}; Partitioned",
                    s.replace("; SameSite=Lax", "; SameSite=None")
                )
            })
            .and_then(|s| HeaderValue::from_str(&s).ok());
        headers.append(SET_COOKIE, changed.unwrap_or(c));
    }
}

/// 303 See Other to `to`, with extra headers.
/// A date typed or sent as `YYYY-MM-DD`, in years 1 to 9999 only: a year such as
/// `-9999` parses, but its midnight in JST cannot be sent to PostgreSQL as UTC.
pub fn date(s: &str) -> Option<time::Date> {
    time::Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
    .filter(|d| (1..=9999).contains(&d.year()))
}

pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// SHA-256 of a token: what the database stores instead of the token itself.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A url-encoded form body, with repeated keys kept (multiple choice).
#[derive(Debug, Default)]
pub struct FormData(pub Raw);

impl FormData {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .get(name)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// A query string read into `T`. One that does not fit (a link cut short or
/// changed on the way: `?page=abc`) gets the 400 page in Japanese, not axum's bare
/// English text.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|_| {
                AppError::BadRequest(
                    "アドレスの「?」から後が正しくありません。リンクを開き直すか、最初のページからやり直してください。 / The address is not valid after “?”."
                        .into(),
                )
            })
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(AppError::BadRequest(
                "フォームの送信形式が正しくありません。".into(),
            ));
        }
        // Limited by the route's `DefaultBodyLimit` (every tenant route has one:
        // `MAX_FORM_BODY`, less for sign-in and lookups, more for importing a form).
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|_| AppError::PayloadTooLarge)?;
        let mut raw = Raw::new();
        for (k, v) in form_urlencoded::parse(&body) {
            if k.contains('\0') || v.contains('\0') {
                return Err(AppError::BadRequest(
                    "入力に使用できない文字（NUL）が含まれています。".into(),
                ));
            }
            raw.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Ok(Self(raw))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cookies_of_an_embeddable_form_can_live_in_a_frame_over_https() {
        use axum::http::{header::SET_COOKIE, HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static(
                "md_f_x=t; Path=/f/x; HttpOnly; SameSite=Lax; Max-Age=86400; Secure",
            ),
        );
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("plain=t; Path=/; HttpOnly; SameSite=Lax"),
        );
        super::embeddable_cookies(&mut h);
        let got: Vec<&str> = h
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            got,
            [
                "md_f_x=t; Path=/f/x; HttpOnly; SameSite=None; Max-Age=86400; Secure; Partitioned",
                "plain=t; Path=/; HttpOnly; SameSite=Lax"
            ]
        );
    }
}
