//! A citizen's page turned away at a peak keeps what was typed.
//!
//! A page of a form, its final submit or a 一時保存 link's request can be refused
//! before it is read: over the
//! client's or the municipality's rate limit (429), or with no turn or database
//! connection free in time (503). Those refusals were error pages, and going on meant
//! typing the page again (a phone's Back does not always keep it). The refusal now
//! carries the fields sent as hidden inputs of a form that posts them again to the
//! same address, so one press sends the page once the peak has passed.
//!
//! Only a page this site's own form sent is offered again (its `Origin` is the
//! address the request reached, or its token is the one the form's cookie holds,
//! which no other site knows): a page another site made a browser post would
//! otherwise come back on this site's origin, where one press would send it with
//! the citizen's cookie and pass the forms' check of where a page comes from. A
//! refusal stays cheap: a body of [`MAX_KEPT_FIELDS`] fields or more, or with a NUL
//! (which the form refuses), gets the plain page.

use askama::Template;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::web::{current_request_id, render};

/// Fields a kept page carries at most (a form has at most 200 questions; a name
/// takes four inputs, an address three).
pub const MAX_KEPT_FIELDS: usize = 2000;

/// A citizen's form POST read whole, to be offered again if it is refused.
#[derive(Debug)]
pub struct Resend {
    action: String,
    body: Bytes,
}

impl Resend {
    /// For a page of a citizen's form or its final submit, url-encoded, sent by a
    /// page of `origin` (`scheme://host[:port]`, the address the request reached),
    /// when its body was read whole (`body`); `None` for anything else.
    pub fn of(req: &Request, body: Option<&Bytes>, origin: &str) -> Option<Self> {
        let body = body?;
        if !Self::wanted(req) || body.iter().filter(|&&b| b == b'&').count() >= MAX_KEPT_FIELDS {
            return None;
        }
        let same_origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o.eq_ignore_ascii_case(origin));
        // Without an `Origin` that says so (some browsers' privacy settings drop it,
        // a proxy may name the port), a page whose token the form's cookie holds.
        let carries_token = || {
            let form = citizen_form(req.uri().path())?;
            let token = form_urlencoded::parse(body).find(|(k, _)| k == "_token")?.1;
            Some(crate::tenant::forms::citizen::carries_the_cookies_token(
                req.headers(),
                form,
                &token,
            ))
        };
        if !same_origin && !carries_token().unwrap_or(false) {
            return None;
        }
        let action = req.uri().path_and_query()?.as_str().to_owned();
        Some(Self {
            action,
            body: body.clone(),
        })
    }

    /// Whether `req` is a citizen's page or final submit, url-encoded (its body
    /// not yet read).
    pub fn wanted(req: &Request) -> bool {
        req.method() == Method::POST
            && citizen_form(req.uri().path()).is_some()
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(';').next().is_some_and(|m| {
                        m.trim()
                            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                    })
                })
    }

    /// `resp` unless it is a refusal to try again later (429 or 503); then the same
    /// refusal (status and headers: `Retry-After`, and the framing a municipality
    /// allows its forms) as a page that can send the fields again.
    pub fn refused(self, resp: Response, site: &str, tenant: &uuid::Uuid) -> Response {
        let status = resp.status();
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return resp;
        }
        let fields: Vec<(String, String)> =
            form_urlencoded::parse(&self.body).into_owned().collect();
        // A NUL would come back from the page as U+FFFD, past the form's check.
        if fields
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return resp;
        }
        let (mut parts, _) = resp.into_parts();
        let wait = parts
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(5)
            .max(1);
        let page = KeptPage {
            site: site.to_owned(),
            many: status == StatusCode::TOO_MANY_REQUESTS,
            wait,
            action: self.action,
            fields,
            status: status.as_u16(),
            request_id: current_request_id(),
        };
        let (rendered, body) = render(status, &page).into_parts();
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            match rendered.headers.get(&name) {
                Some(v) => parts.headers.insert(name, v.clone()),
                None => parts.headers.remove(name),
            };
        }
        parts.status = rendered.status;
        // A refusal of the front tier's own (the municipality's ceiling, no turn in
        // time) has not been through the forms' routes: the framing they allow.
        if !parts.headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            if let Some(v) = crate::tenant::admin::access::framed_csp_as_last_read(tenant) {
                parts.headers.insert(header::CONTENT_SECURITY_POLICY, v);
            }
        }
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Response::from_parts(parts, body)
    }
}

/// The form's public id in `/f/{form}`, `/f/{form}/submit` or `/f/{form}/save` (the
/// address a 一時保存 link is mailed to).
fn citizen_form(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/f/")?;
    let form = rest
        .strip_suffix("/submit")
        .or_else(|| rest.strip_suffix("/save"))
        .unwrap_or(rest);
    (!form.is_empty() && !form.contains('/')).then_some(form)
}

#[derive(Template)]
#[template(path = "citizen/kept.html")]
struct KeptPage {
    site: String,
    /// Refused by a rate limit (else: too busy to answer in time).
    many: bool,
    wait: u64,
    action: String,
    fields: Vec<(String, String)>,
    status: u16,
    request_id: Option<std::sync::Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    const ORIGIN: &str = "https://chiyoda.madoguchi.test";

    fn post(path: &str, content_type: &str) -> Request {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ORIGIN, ORIGIN)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_citizens_url_encoded_form_posts_are_kept() {
        let form = "application/x-www-form-urlencoded";
        assert!(Resend::wanted(&post("/f/abc", form)));
        assert!(Resend::wanted(&post("/f/abc/submit", form)));
        assert!(Resend::wanted(&post("/f/abc/save", form)));
        assert!(Resend::wanted(&post(
            "/f/abc?page=1",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        )));
        for path in [
            "/f/",
            "/f//submit",
            "/f/abc/confirm",
            "/f/abc/resume/key",
            "/status",
            "/admin/login",
        ] {
            assert!(!Resend::wanted(&post(path, form)), "{path}");
        }
        assert!(!Resend::wanted(&post("/f/abc", "application/json")));
        let mut get = post("/f/abc", form);
        *get.method_mut() = Method::GET;
        assert!(!Resend::wanted(&get));
        let body = Bytes::from_static(b"_token=t&a=1");
        assert!(Resend::of(&post("/f/abc", form), None, ORIGIN).is_none());
        assert!(Resend::of(&post("/f/abc", form), Some(&body), ORIGIN).is_some());
        assert!(Resend::of(&post("/f/abc/save", form), Some(&body), ORIGIN).is_some());
        // Only a page of this site: not one another site (or nobody) says it sent.
        let mut other = post("/f/abc", form);
        other.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(Resend::of(&other, Some(&body), ORIGIN).is_none());
        other.headers_mut().remove(header::ORIGIN);
        assert!(Resend::of(&other, Some(&body), ORIGIN).is_none());
        // Without an Origin, a page whose token the form's cookie holds is this site's.
        other
            .headers_mut()
            .insert(header::COOKIE, HeaderValue::from_static("md_f_abc=t"));
        assert!(Resend::of(&other, Some(&body), ORIGIN).is_some());
        let wrong = Bytes::from_static(b"_token=u&a=1");
        assert!(Resend::of(&other, Some(&wrong), ORIGIN).is_none());
        // Not a body of more fields than a form has.
        let many = Bytes::from("a=1&".repeat(MAX_KEPT_FIELDS));
        assert!(Resend::of(&post("/f/abc", form), Some(&many), ORIGIN).is_none());
    }

    #[tokio::test]
    async fn a_refusal_carries_the_fields_escaped_and_other_answers_pass() {
        let body = Bytes::from_static(
            "_token=t&name.family=%E8%91%9B%F3%A0%84%80%E8%A5%BF&note=%22%3E%3Cb%3E%0D%0A2&c=a&c=b"
                .as_bytes(),
        );
        let req = post("/f/abc?page=1", "application/x-www-form-urlencoded");
        let refused = |status: StatusCode| {
            let mut r = Response::new(Body::from("refused"));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'self' https://www.city.example"),
            );
            Resend::of(&req, Some(&body), ORIGIN)
                .unwrap_or_else(|| panic!("kept"))
                .refused(r, "千代田区", &uuid::Uuid::nil())
        };
        let text = |r: Response| async move {
            let b = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8(b.to_vec()).unwrap_or_else(|e| panic!("{e}"))
        };
        let ok = refused(StatusCode::SEE_OTHER);
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        assert_eq!(text(ok).await, "refused");
        let page = refused(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(page.headers()[header::RETRY_AFTER], "7");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
        // A form the municipality lets its own site frame is refused inside the frame.
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'self' https://www.city.example"
        );
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let html = text(page).await;
        assert!(
            html.contains(r#"<form method="post" action="/f/abc?page=1">"#),
            "{html}"
        );
        for input in [
            r#"name="_token" value="t""#,
            "name=\"name.family\" value=\"葛\u{E0100}西\"",
            r#"name="note" value="&#34;&#62;&#60;b&#62;"#,
            r#"name="c" value="a""#,
            r#"name="c" value="b""#,
        ] {
            assert!(html.contains(input), "{input} not in {html}");
        }
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("7秒"), "{html}");
        assert!(html.contains("千代田区"), "{html}");
        // What the form refuses anyway (a NUL) is not offered again.
        let nul = Bytes::from_static(b"_token=t&a=%00");
        let plain = Resend::of(&req, Some(&nul), ORIGIN)
            .unwrap_or_else(|| panic!("kept"))
            .refused(
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .body(Body::from("refused"))
                    .unwrap_or_else(|e| panic!("{e}")),
                "千代田区",
                &uuid::Uuid::nil(),
            );
        assert_eq!(text(plain).await, "refused");
        let busy = refused(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(text(busy).await.contains("混み合って"));
    }
}
