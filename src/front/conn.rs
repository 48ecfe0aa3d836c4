//! Accepting connections: plain or TLS, HTTP/1.1 and HTTP/2, with explicit limits
//! against slow and oversized clients, and a graceful stop that lets requests in
//! flight finish.
//!
//! Limits: the TLS handshake must finish within [`HANDSHAKE`]; request headers must
//! arrive within [`HEADER_READ`] and fit in [`MAX_HEADER_BYTES`] (larger: 431, from
//! hyper); idle HTTP/2 connections are pinged. Body sizes are limited per route and
//! whole requests by the request timeout (see `front::mod`).

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub const HANDSHAKE: Duration = Duration::from_secs(10);
pub const HEADER_READ: Duration = Duration::from_secs(10);
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// What hyper itself reads before refusing with a bare 431; between the two, the
/// front tier answers 431 with a Japanese page.
const HARD_HEADER_BYTES: usize = 64 * 1024;
/// How long a stop waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(30);

/// How the request reached us: over TLS or not, and from which zone's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub https: bool,
    pub zone: Zone,
}

/// The network a listener faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// The internet.
    Internet,
    /// 総合行政ネットワーク (LGWAN), the municipalities' closed network.
    Lgwan,
}

impl Zone {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internet => "internet",
            Self::Lgwan => "lgwan",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "internet" => Some(Self::Internet),
            "lgwan" => Some(Self::Lgwan),
            _ => None,
        }
    }
}

/// The client's address: the TCP peer's, or the one a trusted proxy reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Serves `router` on `listener` until `stop` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    zone: Zone,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .max_buf_size(HARD_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(HARD_HEADER_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let transport = Transport {
        https: tls.is_some(),
        zone,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(transport);
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let served = match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    watcher.watch(conn).await
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the drain period; closing them");
    }
}

/// Every `X-Forwarded-For` line of a request as one list, in order: a proxy that
/// appends its own line after the client's (HAProxy's `option forwardfor`) puts the
/// address it saw last, and reading the first line alone would take the client's
/// word for its address. A line that is not text ends the list there.
pub fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<String> {
    let mut lines = headers.get_all("x-forwarded-for").iter().peekable();
    lines.peek()?;
    let joined: Vec<&str> = lines.map(|v| v.to_str().unwrap_or("invalid")).collect();
    Some(joined.join(","))
}

/// The client address for a request: the socket peer, unless the peer is a trusted
/// proxy, in which case the right-most `X-Forwarded-For` address that is not itself
/// a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => last = ip,
            Ok(ip) => return ip,
            Err(_) => return last,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forwarded_for_line_is_read() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(forwarded_for(&headers), None);
        headers.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_static("192.0.2.10"),
        );
        headers.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_static("203.0.113.66, 10.0.0.7"),
        );
        let list = forwarded_for(&headers);
        assert_eq!(list.as_deref(), Some("192.0.2.10,203.0.113.66, 10.0.0.7"));
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), list.as_deref(), &trusted),
            ip("203.0.113.66")
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        // Through one trusted proxy.
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        // A client that sends its own X-Forwarded-For cannot choose its address.
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("1.2.3.4, 198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        // Through two trusted proxies.
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("198.51.100.1, 10.9.9.9"), &trusted),
            ip("198.51.100.1")
        );
        // Garbage stops the walk at the last trusted hop; no header: the peer.
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("nonsense"), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
    }
}
