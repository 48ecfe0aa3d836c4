//! Accepting connections: plain or TLS, HTTP/1.1 and HTTP/2, with explicit limits
//! against slow and oversized clients, and a graceful stop that lets requests in
//! flight finish.
//!
//! Limits: the TLS handshake must finish within [`HANDSHAKE`]; request headers must
//! arrive within [`HEADER_READ`] and fit in [`MAX_HEADER_BYTES`] (larger: 431, from
//! hyper); idle HTTP/2 connections are pinged. A connection with no request in
//! progress for the idle limit (`Settings::connection_idle`) is closed gracefully, and
//! dropped if it has not gone [`idle_grace`] later: HTTP/2 has no header timeout of
//! its own, and hyper waits for a connection's first bytes without one, so this is
//! what ends a connection that never sends a request or dribbles its headers. Body
//! sizes are limited per route and whole requests by the request timeout (see
//! `front::mod`).

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
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
/// Without a request in progress for this long, a connection is closed (the
/// default of `Settings::connection_idle`).
pub const IDLE: Duration = Duration::from_secs(60);

/// How long a connection being closed for idleness (or for a stop) may take to go
/// while no request is in progress on it: a request in progress finishes, but a
/// client holding half a request's headers is not waited for.
pub fn idle_grace(idle: Duration) -> Duration {
    idle.min(Duration::from_secs(5))
}

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

/// Serves `router` on `listener` until `stop` turns true, then drains; connections
/// without a request in progress for `idle` are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    zone: Zone,
    router: Router,
    idle: Duration,
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
        // Held until the connection ends: the drain at a stop waits for it.
        let watcher = graceful.watcher();
        let stop = stop.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            let svc = {
                let activity = Arc::clone(&activity);
                hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    // Counted from here until the response's body is dropped.
                    let in_flight = activity.begin();
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(transport);
                    let router = router.clone();
                    async move {
                        let response = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                        Ok::<_, Infallible>(response.map(|body| {
                            axum::body::Body::new(Tracked {
                                body,
                                _in_flight: in_flight,
                            })
                        }))
                    }
                })
            };
            let served = match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    drive(&builder, stream, svc, &activity, idle, stop).await
                }
                None => drive(&builder, stream, svc, &activity, idle, stop).await,
            };
            drop(watcher);
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

type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one connection to its end: closes it gracefully at a stop or once no request
/// has been in progress for `idle`, and drops it if, with no request in progress, it
/// has not gone [`idle_grace`] after that.
async fn drive<S, Svc>(
    builder: &Builder<TokioExecutor>,
    stream: S,
    svc: Svc,
    activity: &Activity,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<axum::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let grace = idle_grace(idle);
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let check = match (closing, activity.idle_since()) {
            // Busy: nothing to decide until it is idle, and at least `idle` after that.
            (_, None) => now + idle.min(grace),
            (None, Some(since)) => since + idle,
            (Some(at), Some(since)) => at.max(since) + grace,
        };
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = stop.wait_for(|s| *s), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            () = tokio::time::sleep_until(check.into()) => match (closing, activity.idle_since()) {
                (None, Some(since)) if since.elapsed() >= idle => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                (Some(at), Some(since)) if at.max(since).elapsed() >= grace => return Ok(()),
                _ => {}
            },
        }
    }
}

/// Requests in progress on one connection, and since when it has had none.
struct Activity(Mutex<(usize, Instant)>);

impl Activity {
    fn new() -> Self {
        Self(Mutex::new((0, Instant::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.lock().0 += 1;
        InFlight(Arc::clone(self))
    }

    /// When the last request ended (or the connection opened), if none is in progress.
    fn idle_since(&self) -> Option<Instant> {
        let state = self.lock();
        (state.0 == 0).then_some(state.1)
    }
}

/// One request in progress; ends when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 = state.0.saturating_sub(1);
        state.1 = Instant::now();
    }
}

/// A response body that keeps its request counted as in progress until it is sent
/// or abandoned (a streamed export is not idle).
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl axum::body::HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
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
///
/// Addresses are canonical: an IPv4 client reaching a dual-stack listener (`[::]`)
/// arrives as `::ffff:a.b.c.d`, which no IPv4 network contains, so trusted proxies,
/// the admin allow-list and the limits would not recognise it.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
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

    /// An IPv4 client on a dual-stack listener arrives as `::ffff:a.b.c.d`: it is
    /// still the IPv4 address for trusted proxies, the allow-list and the limits.
    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.5"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), None, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("::ffff:198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        let access = crate::tenant::admin::access::Access {
            cidrs: vec!["192.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}"))],
            zones: vec![Zone::Internet],
            embed: Vec::new(),
        };
        assert!(access.allows(Some(ip("::ffff:192.0.2.5")), Zone::Internet));
        assert!(!access.allows(Some(ip("::ffff:198.51.100.5")), Zone::Internet));
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
