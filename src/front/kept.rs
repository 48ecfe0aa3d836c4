//! A citizen's page turned away at a peak keeps what was typed.
//!
//! A page of a form or its final submit can be refused before it is read: over the
//! client's or the municipality's rate limit (429), or with no turn or database
//! connection free in time (503). Those refusals were error pages, and going on meant
//! typing the page again (a phone's Back does not always keep it). The refusal now
//! carries the fields sent as hidden inputs of a form that posts them again to the
//! same address, so one press sends the page once the peak has passed.

use askama::Template;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::web::{current_request_id, render};

/// A citizen's form POST read whole, to be offered again if it is refused.
#[derive(Debug)]
pub struct Resend {
    action: String,
    body: Bytes,
}

impl Resend {
    /// For a page of a citizen's form or its final submit, url-encoded, when its
    /// body was read whole (`body`); `None` for anything else.
    pub fn of(req: &Request, body: Option<&Bytes>) -> Option<Self> {
        let body = body?;
        if !Self::wanted(req) {
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
            && is_citizen_post(req.uri().path())
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
    /// refusal (status and `Retry-After`) as a page that can send the fields again.
    pub fn refused(self, resp: Response, site: &str) -> Response {
        let status = resp.status();
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return resp;
        }
        let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
        let wait = retry_after
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(5)
            .max(1);
        let page = KeptPage {
            site: site.to_owned(),
            many: status == StatusCode::TOO_MANY_REQUESTS,
            wait,
            action: self.action,
            fields: form_urlencoded::parse(&self.body).into_owned().collect(),
            status: status.as_u16(),
            request_id: current_request_id(),
        };
        let mut out = render(status, &page);
        let h = out.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = retry_after {
            h.insert(header::RETRY_AFTER, v);
        }
        out
    }
}

/// `/f/{form}` (a page) or `/f/{form}/submit`.
fn is_citizen_post(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/f/") else {
        return false;
    };
    let form = rest.strip_suffix("/submit").unwrap_or(rest);
    !form.is_empty() && !form.contains('/')
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

    fn post(path: &str, content_type: &str) -> Request {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_citizens_url_encoded_form_posts_are_kept() {
        let form = "application/x-www-form-urlencoded";
        assert!(Resend::wanted(&post("/f/abc", form)));
        assert!(Resend::wanted(&post("/f/abc/submit", form)));
        assert!(Resend::wanted(&post(
            "/f/abc?page=1",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        )));
        for path in [
            "/f/",
            "/f//submit",
            "/f/abc/confirm",
            "/status",
            "/admin/login",
        ] {
            assert!(!Resend::wanted(&post(path, form)), "{path}");
        }
        assert!(!Resend::wanted(&post("/f/abc", "application/json")));
        let mut get = post("/f/abc", form);
        *get.method_mut() = Method::GET;
        assert!(!Resend::wanted(&get));
        assert!(Resend::of(&post("/f/abc", form), None).is_none());
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
            Resend::of(&req, Some(&body))
                .unwrap_or_else(|| panic!("kept"))
                .refused(r, "千代田区")
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
        let busy = refused(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(text(busy).await.contains("混み合って"));
    }
}
