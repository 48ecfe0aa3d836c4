//! Rate limits (tower-governor) keyed by (tenant host, client IP), with a Japanese
//! 429 page and `Retry-After`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::domain::HostName;
use crate::web::ErrorPage;

/// POSTs allowed at once per tenant and client address, before the steady rate
/// (given where each limit is applied) takes over.
pub const SIGN_IN_BURST: u32 = 10;
pub const SETUP_BURST: u32 = 5;

/// The tenant (by host) and the client's address.
#[derive(Debug, Clone, Copy)]
pub struct TenantIp;

impl KeyExtractor for TenantIp {
    type Key = (String, IpAddr);

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(HostName::lookup_key)
            .unwrap_or_default();
        // The address a trusted proxy reported, else the socket's.
        let ip = match req.extensions().get::<super::conn::ClientIp>() {
            Some(c) => c.0,
            None => req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        };
        Ok((host, ip))
    }
}

/// A limit on POSTs: `burst` at once, then one every `every`.
pub fn post_limit(
    every: Duration,
    burst: u32,
) -> GovernorLayer<TenantIp, NoOpMiddleware<governor::clock::QuantaInstant>, Body> {
    let mut builder = GovernorConfigBuilder::default().key_extractor(TenantIp);
    builder
        .period(every.max(Duration::from_millis(1)))
        .burst_size(burst.max(1))
        .methods(vec![Method::POST]);
    let config = match builder.finish() {
        Some(c) => c,
        None => unreachable!("a period and a burst of at least 1 always make a valid limit"),
    };
    GovernorLayer::new(Arc::new(config)).error_handler(too_many)
}

fn too_many(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let mut r = ErrorPage::new(
                StatusCode::TOO_MANY_REQUESTS,
                "操作の回数が多すぎます",
                "Too many requests",
                &format!("短い時間に多くの操作が行われました。{wait_time}秒ほど待ってから、もう一度お試しください。"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait_time.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        other => {
            tracing::warn!(error = %other, "rate limiter");
            ErrorPage::new(
                StatusCode::BAD_REQUEST,
                "リクエストを処理できません",
                "Bad request",
                "もう一度お試しください。",
            )
            .into_response()
        }
    }
}
