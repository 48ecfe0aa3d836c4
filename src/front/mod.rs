//! The front tier: listeners, host → tenant routing, per-tenant pools under the
//! global budget, request ids and metrics. Tenant handlers get a `TenantCtx` and
//! nothing else.

pub mod conn;
pub mod kept;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod pools;
pub mod recent;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tenant::forms::attachments as upload;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::catalog::{Catalog, TenantState};
use crate::domain::HostName;
use crate::platform::Platform;
use crate::tenant::TenantCtx;
use crate::web::{ErrorPage, REQUEST_ID};
use metrics::{Metrics, PoolLabels, StateLabels};
use pools::TenantPools;
use routes::HostCache;

/// Shared state of the front tier.
pub struct App {
    pub catalog: Catalog,
    pub hosts: Arc<HostCache>,
    pub pools: TenantPools,
    pub metrics: Metrics,
    next_request: AtomicU64,
    instance: String,
    trusted_proxies: Vec<ipnet::IpNet>,
    rates: crate::config::RateLimits,
    ceiling: limits::TenantCeiling,
    /// Tenants whose outbox has new mail, for the deliverer.
    pub mail: Arc<mail::MailQueue>,
    /// The way to identity providers (本人確認).
    idp: crate::tenant::identity::oidc::Idp,
    /// The operator's help desk, for the staff manual.
    helpdesk: Option<Arc<str>>,
    /// ClamAV's daemon, for attached files.
    clamd: Option<Arc<crate::scan::Clamd>>,
    /// Places for workbooks built at once, for all municipalities together.
    workbooks: Arc<tokio::sync::Semaphore>,
    /// Staff sign-ins and setup-link posts, for all municipalities together.
    sign_ins: Arc<limits::Attempts>,
    setups: Arc<limits::Attempts>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(p: &Platform) -> anyhow::Result<AppState> {
        let pools = TenantPools::new(
            p.settings.pool.clone(),
            p.cluster.clone(),
            p.catalog.clone(),
            Arc::clone(&p.keys),
        );
        let metrics = Metrics::new();
        metrics
            .budget_limit
            .set(i64::try_from(p.settings.pool.budget).unwrap_or(i64::MAX));
        Ok(Arc::new(Self {
            catalog: p.catalog.clone(),
            hosts: Arc::new(HostCache::default()),
            pools,
            metrics,
            next_request: AtomicU64::new(1),
            instance: crate::crypto::random_token(3),
            trusted_proxies: p.settings.trusted_proxies.clone(),
            rates: p.settings.limits,
            ceiling: {
                crate::tenant::forms::pow::set_spike_per_minute(
                    p.settings.limits.pow_spike_per_minute,
                );
                limits::TenantCeiling::new(
                    p.settings.limits.tenant_per_second,
                    p.settings.limits.ceiling_delay,
                )
            },
            mail: Arc::default(),
            idp: crate::tenant::identity::oidc::Idp::new(
                p.settings.identity_ca.as_deref(),
                p.settings.identity_allow_private_networks,
            )?,
            helpdesk: p.settings.helpdesk.clone(),
            clamd: p.settings.clamd.clone().map(Arc::new),
            workbooks: Arc::new(tokio::sync::Semaphore::new(
                crate::tenant::cases::export::WORKBOOKS_AT_ONCE,
            )),
            sign_ins: limits::Attempts::new(limits::SIGN_IN_EVERY, limits::SIGN_IN_BURST),
            setups: limits::Attempts::new(limits::SETUP_EVERY, limits::SETUP_BURST),
        }))
    }

    fn request_id(&self) -> Arc<str> {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{n:06}", self.instance))
    }
}

/// Citizens' and staff's listener of a zone: health checks, static assets, and
/// everything else routed by host name to a tenant. Over LGWAN, citizens' form posts
/// have a limit of their own ([`crate::config::RateLimits::lgwan_submit_per_minute`]).
pub fn public_router(app: AppState, zone: conn::Zone) -> Router {
    let rates = match zone {
        conn::Zone::Lgwan => crate::config::RateLimits {
            submit_per_minute: app.rates.lgwan_submit_per_minute,
            ..app.rates
        },
        conn::Zone::Internet => app.rates,
    };
    // The notice outside the routing, so that pages the routing answers itself (a
    // municipality's database unreachable, too many requests) carry it too.
    let tenant = crate::tenant::router(&rates)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            route_to_tenant,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            platform_notice,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/static/app.css", get(crate::web::stylesheet))
        .route("/static/forms.js", get(crate::web::forms_js))
        .route("/static/admin.js", get(crate::web::admin_js))
        .route("/postal/{code}", get(crate::postal::show))
        .fallback_service(tenant)
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn(header_limit))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            request_context,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), client))
        .with_state(app)
}

/// The operators' notices of the moment, at the top of every municipality's HTML page
/// (citizens' and staff's, and the pages the routing answers itself); other answers,
/// and HEAD requests (no body to put it in), pass untouched.
async fn platform_notice(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let head = req.method() == axum::http::Method::HEAD;
    let res = next.run(req).await;
    if head {
        return res;
    }
    let notices = app.hosts.notices_now();
    let html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if notices.is_empty() || !html {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // Pages are rendered whole in memory; nothing this large is a page.
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let page = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| crate::control::notices::insert_banner(t, &notices))
    {
        Some(p) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            axum::body::Body::from(p)
        }
        None => axum::body::Body::from(bytes),
    };
    Response::from_parts(parts, page)
}

/// With TLS on, the plain listener only sends people to HTTPS (health checks stay),
/// with the same security headers as every other response.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(move |req: Request| async move { to_https(&req, https_port) })
        .layer(middleware::from_fn(security_headers))
}

fn to_https(req: &Request, https_port: u16) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(HostName::lookup_key)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        });
    let Some(host) = host else {
        return ErrorPage::unknown_host().into_response();
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Works out who the client is and whether they came over HTTPS: from the socket,
/// or from a trusted proxy's `X-Forwarded-For` / `X-Forwarded-Proto`.
async fn client(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let xff = conn::forwarded_for(req.headers());
        let ip = conn::client_ip(peer, xff.as_deref(), &app.trusted_proxies);
        req.extensions_mut().insert(conn::ClientIp(ip));
        let from_proxy = app.trusted_proxies.iter().any(|n| n.contains(&peer));
        let proto_https = req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        if from_proxy && proto_https {
            if let Some(t) = req.extensions_mut().get_mut::<conn::Transport>() {
                t.https = true;
            }
        }
    }
    next.run(req).await
}

/// Operators' listener: console, metrics, health checks.
pub fn ops_router(app: AppState, platform: Platform) -> Router {
    let console = crate::ops::router(Arc::clone(&app), platform);
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&app))
        .merge(console)
        // The console's forms (sign-in included, before anyone is known) are small.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::tenant::http::MAX_FORM_BODY,
        ))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(app, request_context))
}

/// Gives each request an id (response header `X-Request-Id`, every log line, error
/// pages) and logs one line per request, without query strings (they may hold
/// personal data).
async fn request_context(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let id = app.request_id();
    let span = tracing::info_span!("request", id = %id, tenant = tracing::field::Empty);
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    let started = Instant::now();
    let mut resp = REQUEST_ID
        .scope(Arc::clone(&id), next.run(req))
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::info!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "served");
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Security headers on every response: a CSP without inline script or style, no
/// framing, no MIME sniffing, no referrer to other sites, no powerful features.
async fn security_headers(req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<conn::Transport>()
        .is_some_and(|t| t.https);
    let http1 = req.version() <= axum::http::Version::HTTP_11;
    let mut resp = next.run(req).await;
    // A body refused unread (too large) leaves the rest of it on the connection,
    // which is then closed: the client is told, rather than sending its next request
    // on a connection about to go (it failed as an incomplete answer).
    if http1 && resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let h = resp.headers_mut();
    if https {
        // Two years; sub-domains are the municipality's business, not ours.
        h.entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=63072000"));
    }
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    // Pages a tenant lets its own sites frame say so in their CSP; others are never framed.
    let framable = h
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.contains("frame-ancestors 'none'"));
    if !framable {
        set(h, "x-frame-options", "DENY");
    }
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    );
    set(h, "cross-origin-opener-policy", "same-origin");
    resp
}

/// Resolves the tenant from the `Host` header before any tenant code runs.
async fn route_to_tenant(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // A NUL byte has no business in a path; refuse it before anything reads it.
    if req.uri().path().to_ascii_lowercase().contains("%00") {
        return bad_request();
    }
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(()) => return bad_request(),
    };
    let Some(route) = host.as_ref().and_then(|(k, _)| app.hosts.lookup(k)) else {
        return ErrorPage::unknown_host().into_response();
    };
    tracing::Span::current().record("tenant", &*route.slug);
    let started = Instant::now();
    let https = req
        .extensions()
        .get::<conn::Transport>()
        .is_some_and(|t| t.https);
    // The address the request reached, as a page of this site names its origin.
    let base_url = format!(
        "{}://{}",
        if https { "https" } else { "http" },
        host.as_ref().map_or("", |(_, raw)| raw.as_str())
    );
    // The tenant's ceiling comes before any other work, the database included.
    if let Err(r) = app.ceiling.check(&route.id) {
        let r = over_ceiling(&app, req, *r, &route, &base_url).await;
        app.metrics
            .observe(&route.slug, r.status().as_u16(), started.elapsed());
        return r;
    }
    // A citizen's page or submit, to offer again if it is refused below.
    let mut resend = None;
    let resp = match route.state {
        TenantState::Active => {
            // The body is read first: before taking a turn (a client trickling its
            // body must not hold one of the tenant's few turns while it does), and
            // for a citizen's page to be offered again if it is refused below. A page
            // carrying files is read whole, within the uploads' memory budget, whose
            // room it holds until it is answered.
            let mut _room = None;
            let mut req = if upload::is_page_upload(&req) {
                match upload::read_ahead(req, &base_url).await {
                    Ok((req, room)) => {
                        _room = room;
                        req
                    }
                    Err(refused) => {
                        app.metrics.observe(
                            &route.slug,
                            refused.status().as_u16(),
                            started.elapsed(),
                        );
                        return refused;
                    }
                }
            } else {
                let (req, body) = read_body_first(req).await;
                resend = kept::Resend::of(&req, body.as_ref(), &base_url);
                req
            };
            // Out of time just before the request's limit: answered here, where a
            // citizen's page is kept, not by the limit outside, which would lose it.
            let deadline = req
                .extensions()
                .get::<Deadline>()
                .map(|d| d.0.checked_sub(DEADLINE_MARGIN).unwrap_or(d.0));
            // The connections the request holds, and the way to cancel what they run,
            // for when it runs out of time.
            let held = Arc::new(crate::tenant::Held::default());
            let cancel_way = std::sync::OnceLock::new();
            let run = async {
                match app.pools.runtime_under(route.id, route.data_key).await {
                    Ok(rt) => 'run: {
                        let _ = cancel_way.set(Arc::clone(&rt.cancel));
                        // One tenant's requests take turns beyond a few at once, so a flood
                        // at one municipality queues here, cheaply, instead of on the CPU.
                        let Some(_turn) = rt.turn(app.pools.settings().wait).await else {
                            break 'run crate::error::AppError::Unavailable {
                                retry_after_secs: 1,
                            }
                            .into_response();
                        };
                        let mut ctx = TenantCtx::new(
                            route.id,
                            Arc::clone(&route.slug),
                            Arc::clone(&route.name),
                            base_url,
                            https,
                            rt.pool.clone(),
                            app.pools.settings().wait,
                            Arc::clone(&rt.cipher),
                            Arc::clone(&app.mail),
                            app.idp.clone(),
                            Arc::clone(&held),
                        );
                        ctx.client_ip = req.extensions().get::<conn::ClientIp>().map(|c| c.0);
                        ctx.helpdesk.clone_from(&app.helpdesk);
                        ctx.clamd.clone_from(&app.clamd);
                        ctx.workbooks = Arc::clone(&app.workbooks);
                        ctx.sign_ins = Arc::clone(&app.sign_ins);
                        ctx.setups = Arc::clone(&app.setups);
                        ctx.zone = req
                            .extensions()
                            .get::<conn::Transport>()
                            .map_or(conn::Zone::Internet, |t| t.zone);
                        req.extensions_mut().insert(ctx);
                        let (resp, trouble) = crate::error::DB_TROUBLE
                            .scope(std::cell::Cell::new(false), async {
                                let resp = next.run(req).await;
                                (resp, crate::error::DB_TROUBLE.with(std::cell::Cell::get))
                            })
                            .await;
                        if trouble {
                            tracing::warn!("closing the tenant's pool after a database failure");
                            app.pools.reset(&route.id);
                        }
                        resp
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "tenant runtime unavailable");
                        crate::error::AppError::Unavailable {
                            retry_after_secs: 5,
                        }
                        .into_response()
                    }
                }
            };
            match deadline {
                Some(at) => {
                    tokio::pin!(run);
                    tokio::select! {
                        biased;
                        resp = &mut run => resp,
                        () = tokio::time::sleep_until(at) => {
                            // Dropping the request does not stop what the server runs
                            // for it: its connections must not go back to the pool busy.
                            // Taken off the request's list, they are closed as it lets
                            // go of them (`tenant::Db`), and their statements cancelled;
                            // the pool's other connections go on serving.
                            let stuck = held.take();
                            if let Some(way) = cancel_way.get() {
                                for token in stuck {
                                    tokio::spawn(way.cancel(token));
                                }
                            }
                            timed_out()
                        }
                    }
                }
                None => run.await,
            }
        }
        TenantState::Suspended | TenantState::Provisioning => {
            let mut r = ErrorPage::maintenance(&route.name).into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
            app.metrics
                .observe_maintenance(&route.slug, started.elapsed());
            return r;
        }
        TenantState::Decommissioning | TenantState::Erased => {
            ErrorPage::closed(&route.name).into_response()
        }
    };
    app.metrics
        .observe(&route.slug, resp.status().as_u16(), started.elapsed());
    match resend {
        Some(k) => k.refused(resp, &route.name, &route.id),
        None => resp,
    }
}

/// The refusal of a request over the municipality's ceiling, held (see
/// [`limits::TenantCeiling`]). A citizen's page is refused with what was typed when
/// the refusal is held: its body is read meanwhile (a body not in by the end of the
/// hold gets the plain refusal), so a kept refusal takes no longer than a plain one.
async fn over_ceiling(
    app: &App,
    req: Request,
    refusal: Response,
    route: &routes::Route,
    base_url: &str,
) -> Response {
    let Some(_held) = app.ceiling.try_hold() else {
        return refusal;
    };
    let keep = async {
        if !kept::Resend::wanted(&req) {
            return None;
        }
        let read = tokio::time::timeout(app.ceiling.hold(), read_body_first(req));
        let (req, body) = read.await.ok()?;
        kept::Resend::of(&req, body.as_ref(), base_url)
    };
    match tokio::join!(keep, tokio::time::sleep(app.ceiling.hold())).0 {
        Some(k) => k.refused(refusal, &route.name, &route.id),
        None => refusal,
    }
}

/// Warns when the cluster accepts fewer connections than the tenant pools' budget
/// plus what the control plane needs: the budget would then promise connections the
/// cluster refuses.
async fn warn_if_cluster_too_small(p: &Platform) {
    let Ok(admin) = p.cluster.admin().await else {
        return;
    };
    let max: Option<i64> = admin
        .client
        .query_one("SELECT current_setting('max_connections')::bigint", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    let want = p
        .settings
        .pool
        .budget
        .saturating_add(crate::embedded_pg::RESERVED_CONNECTIONS);
    if let Some(max) = max.filter(|m| usize::try_from(*m).unwrap_or(0) < want) {
        tracing::warn!(
            max_connections = max,
            budget = p.settings.pool.budget,
            "PostgreSQL's max_connections is below the pool budget plus {} reserved; lower --pool-budget or raise max_connections",
            crate::embedded_pg::RESERVED_CONNECTIONS
        );
    }
}

/// Reads a request's body into memory, up to the largest body any tenant route
/// takes, and returns it beside the request when it was read whole. A larger body is
/// passed on as it comes (what was read, then the rest), for the route's own limit to
/// refuse with its own page.
async fn read_body_first(req: Request) -> (Request, Option<axum::body::Bytes>) {
    use axum::body::{Body, Bytes};
    use futures::StreamExt;
    if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        return (req, Some(Bytes::new()));
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                read.extend_from_slice(&c);
                if read.len() > crate::tenant::http::MAX_FORM_BODY {
                    let head = futures::stream::once(async move { Ok(Bytes::from(read)) });
                    let rest = Body::from_stream(head.chain(stream));
                    return (Request::from_parts(parts, rest), None);
                }
            }
            Err(e) => {
                let failed = futures::stream::once(async move { Err::<Bytes, _>(e) });
                return (Request::from_parts(parts, Body::from_stream(failed)), None);
            }
        }
    }
    let read = Bytes::from(read);
    (
        Request::from_parts(parts, Body::from(read.clone())),
        Some(read),
    )
}

/// How long a request may take until its response starts (a streamed export then
/// goes on as long as it needs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers over `conn::MAX_HEADER_BYTES`: 431 with a Japanese page.
async fn header_limit(req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if size > conn::MAX_HEADER_BYTES {
        return ErrorPage::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "リクエストが大きすぎます",
            "Request headers too large",
            "アドレス（URL）またはCookieが長すぎます。ブラウザのCookieを削除してから、もう一度お試しください。",
        )
        .into_response();
    }
    next.run(req).await
}

/// When a request's time is up ([`request_timeout`]), for the tenant routing inside
/// it to answer a moment before, with what the citizen typed kept.
#[derive(Debug, Clone, Copy)]
struct Deadline(tokio::time::Instant);

/// How long before the deadline the tenant routing gives up, to render its answer.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

async fn request_timeout(mut req: Request, next: Next) -> Response {
    // A page carrying files (添付ファイル) from a phone on a slow network takes longer.
    let limit = if upload::is_page_upload(&req) {
        upload::UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    let deadline = tokio::time::Instant::now() + limit;
    req.extensions_mut().insert(Deadline(deadline));
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => timed_out(),
    }
}

/// 503 for a request whose time ran out.
fn timed_out() -> Response {
    tracing::warn!("request timed out");
    let mut r = ErrorPage::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "処理に時間がかかりすぎました",
        "Request timed out",
        "ただいま処理に時間がかかっています。入力内容は送信されていない可能性があります。少し待ってから、もう一度お試しください。",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

fn bad_request() -> Response {
    ErrorPage::new(
        StatusCode::BAD_REQUEST,
        "リクエストの形式が正しくありません",
        "Bad request",
        "アドレス（URL）を確認して、もう一度お試しください。",
    )
    .into_response()
}

/// The host a request names: its one `Host` header, or for HTTP/2 its authority.
/// Two `Host` headers, a malformed one, a `Host` that disagrees with an absolute
/// request target, or none at all in HTTP/1.1 are refused (RFC 9112 §3.2).
fn request_host(req: &Request) -> Result<Option<(String, String)>, ()> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(()),
        (Some(h), None) => Some(h.to_str().map_err(|_| ())?),
        (None, _) => None,
    };
    // (lookup key, the host as sent, port included, for links)
    let key = |s: &str| {
        HostName::request_key(s)
            .map(|k| (k, s.trim().to_owned()))
            .ok_or(())
    };
    match (header, req.uri().authority().map(|a| a.as_str())) {
        (Some(h), Some(a)) => {
            let (h, a) = (key(h)?, key(a)?);
            if h.0 == a.0 {
                Ok(Some(h))
            } else {
                Err(())
            }
        }
        (Some(h), None) => Ok(Some(key(h)?)),
        (None, Some(a)) if req.version() >= axum::http::Version::HTTP_2 => Ok(Some(key(a)?)),
        (None, _) if req.version() >= axum::http::Version::HTTP_11 => Err(()),
        (None, _) => Ok(None),
    }
}

/// The path as logged: secrets that travel in a path (setup tokens, mailed links' keys) and a citizen's
/// postal code (part of an address) are cut off.
pub fn loggable_path(path: &str) -> String {
    for cut in ["/admin/setup/", "/postal/", "/my/open/"] {
        if path.starts_with(cut) {
            return format!("{cut}…");
        }
    }
    // A mailed link's key (一時保存): /f/{form}/resume/{key}.
    if let Some(at) = path
        .strip_prefix("/f/")
        .and_then(|rest| rest.find("/resume/"))
    {
        return format!("{}/resume/…", &path[..at + 3]);
    }
    path.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_logged_without_tokens_or_postal_codes() {
        use super::loggable_path as logged;
        assert_eq!(logged("/admin/setup/Zm9vYmFy"), "/admin/setup/…");
        assert_eq!(logged("/postal/0600042"), "/postal/…");
        assert_eq!(logged("/f/abc/confirm"), "/f/abc/confirm");
        assert_eq!(logged("/f/abc/resume/S2V5a2V5"), "/f/abc/resume/…");
        assert_eq!(logged("/my/open/S2V5a2V5"), "/my/open/…");
        assert_eq!(logged(&"/f/".repeat(100)).chars().count(), 200);
    }

    /// A citizen's page carrying files may take [`super::upload::UPLOAD_TIMEOUT`]
    /// (120 s); any other request [`super::REQUEST_TIMEOUT`] (30 s). Time is paused
    /// and jumps ahead when every task waits.
    #[tokio::test(start_paused = true)]
    async fn a_page_with_files_has_longer_than_other_requests() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/f/{form}",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    let secs = headers
                        .get("x-takes")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                    "sent"
                }),
            )
            .layer(axum::middleware::from_fn(super::request_timeout));
        let send = |content_type: &str, secs: u64| {
            let req = Request::post("/f/abc123")
                .header("content-type", content_type)
                .header("x-takes", secs.to_string())
                .body(Body::empty())
                .unwrap_or_else(|e| panic!("{e}"));
            app.clone().oneshot(req)
        };
        let status = |r: Result<axum::response::Response, std::convert::Infallible>| {
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        };
        let upload = "multipart/form-data; boundary=x";
        let plain = "application/x-www-form-urlencoded";
        assert_eq!(status(send(upload, 100).await), 200);
        assert_eq!(status(send(upload, 121).await), 503);
        assert_eq!(status(send(plain, 29).await), 200);
        assert_eq!(status(send(plain, 31).await), 503);
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.catalog.ping().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "catalog unreachable\n").into_response()
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    let m = &app.metrics;
    let up = app.catalog.ping().await;
    m.catalog_up.set(i64::from(up));
    m.budget_in_use
        .set(i64::try_from(app.pools.budget_in_use()).unwrap_or(i64::MAX));
    let kept = crate::tenant::forms::store::definitions();
    m.definitions_kept
        .set(i64::try_from(kept.weight()).unwrap_or(i64::MAX));
    m.definitions_budget
        .set(i64::try_from(kept.budget()).unwrap_or(i64::MAX));
    m.pool_connections.clear();
    m.tenant_requests.clear();
    for s in app.pools.stats() {
        let idle = i64::try_from(s.idle).unwrap_or(0);
        let size = i64::try_from(s.size).unwrap_or(0);
        m.pool_connections
            .get_or_create(&PoolLabels {
                tenant: s.slug.to_string(),
                state: "idle".into(),
            })
            .set(idle);
        m.pool_connections
            .get_or_create(&PoolLabels {
                tenant: s.slug.to_string(),
                state: "in_use".into(),
            })
            .set(size - idle);
        for (state, n) in [("running", s.running), ("waiting", s.waiting)] {
            m.tenant_requests
                .get_or_create(&PoolLabels {
                    tenant: s.slug.to_string(),
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    // A catalog down (or hanging) has no figures to give: the scrape answers at once
    // with catalog_up 0 rather than waiting on it twice more.
    let figures = if up {
        tokio::time::timeout(Duration::from_secs(3), app.catalog.control_figures())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
    } else {
        Err(anyhow::anyhow!("catalog down"))
    };
    match figures {
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "control-plane figures unavailable"
        ),
        Ok(f) => {
            m.backup_last.clear();
            for (slug, at) in f.backups {
                m.backup_last
                    .get_or_create(&metrics::TenantLabels { tenant: slug })
                    .set(at);
            }
            m.drill_last.clear();
            for (slug, at) in f.drill_last {
                m.drill_last
                    .get_or_create(&metrics::TenantLabels { tenant: slug })
                    .set(at);
            }
            m.drill_ok.clear();
            m.drill_seconds.clear();
            for (slug, ok, secs) in f.drills {
                m.drill_ok
                    .get_or_create(&metrics::TenantLabels {
                        tenant: slug.clone(),
                    })
                    .set(i64::from(ok));
                m.drill_seconds
                    .get_or_create(&metrics::TenantLabels { tenant: slug })
                    .set(secs);
            }
            m.audit_ok.clear();
            m.audit_checked.clear();
            for (slug, ok, at) in f.audit {
                m.audit_ok
                    .get_or_create(&metrics::TenantLabels {
                        tenant: slug.clone(),
                    })
                    .set(i64::from(ok));
                m.audit_checked
                    .get_or_create(&metrics::TenantLabels { tenant: slug })
                    .set(at);
            }
            m.tlog_size.set(f.tlog_size);
            m.erasure_certificates.set(f.certificates);
            m.database_size.clear();
            for (slug, bytes) in f.database_sizes {
                m.database_size
                    .get_or_create(&metrics::TenantLabels { tenant: slug })
                    .set(bytes);
            }
        }
    }
    let counts = if up {
        tokio::time::timeout(Duration::from_secs(3), app.catalog.counts_by_state())
            .await
            .ok()
    } else {
        None
    };
    if let Some(Ok(counts)) = counts {
        m.tenants.clear();
        for state in [
            "provisioning",
            "active",
            "suspended",
            "decommissioning",
            "erased",
        ] {
            m.tenants
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(0);
        }
        for (state, n) in counts {
            m.tenants.get_or_create(&StateLabels { state }).set(n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        m.encode(),
    )
        .into_response()
}

/// Once a day, in each tenant: deletes operation-log entries past the retention
/// period, citizens' drafts past their expiry, staff sessions that have ended and
/// finished applications past their form's 保存期間, then checks the operation log's chain from the head the platform witnessed.
async fn housekeeping_daily(catalog: Catalog, pools: TenantPools) {
    // Not at start-up: a restart should not open a connection to every tenant at
    // once. The connections come from the tenants' pools, inside the budget.
    let day = Duration::from_secs(24 * 3600);
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(600), day);
    loop {
        every.tick().await;
        let tenants = match catalog.list_tenants().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "audit pruning: cannot list tenants"
                );
                continue;
            }
        };
        for t in tenants.iter().filter(|t| t.state == TenantState::Active) {
            let result = async {
                let rt = pools.runtime_under(t.id, t.data_key).await?;
                let mut db = pools.background_connection(&rt).await?;
                let entries = crate::tenant::audit::prune(&mut db)
                    .await
                    .map_err(|e| anyhow::anyhow!("operation log: {e}"))?;
                let drafts = crate::tenant::forms::citizen::purge_expired_drafts(&db)
                    .await
                    .map_err(|e| anyhow::anyhow!("drafts: {e}"))?;
                let sessions = crate::tenant::staff::purge_expired_sessions(&db)
                    .await
                    .map_err(|e| anyhow::anyhow!("sessions: {e}"))?;
                // After the pruning, which moves the log's anchor.
                crate::control::audit_witness::check_on(&catalog, &db, t, false)
                    .await
                    .map_err(|e| anyhow::anyhow!("operation log check: {e:#}"))?;
                // Last: a failure here leaves the checks above done.
                let expired = crate::tenant::cases::retention::purge_expired(
                    &mut db,
                    time::OffsetDateTime::now_utc(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("applications past retention: {e}"))?;
                anyhow::Ok((entries, drafts, sessions, expired))
            }
            .await;
            match result {
                Ok((0, 0, 0, 0)) => {}
                Ok((entries, drafts, sessions, applications)) => tracing::info!(
                    tenant = %t.slug,
                    entries,
                    drafts,
                    sessions,
                    applications,
                    "operation log pruned, expired drafts (and link mails done with), sessions and applications past their retention deleted"
                ),
                Err(e) => {
                    tracing::warn!(tenant = %t.slug, error = format!("{e:#}"), "daily housekeeping failed")
                }
            }
        }
    }
}

/// Addresses the server actually bound (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Citizens' and staff's plain listener (with TLS on: redirects to HTTPS).
    pub public: SocketAddr,
    pub ops: SocketAddr,
    /// The HTTPS listener, when TLS is on.
    pub https: Option<SocketAddr>,
    /// The LGWAN-zone listener, if any.
    pub lgwan: Option<SocketAddr>,
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub public: SocketAddr,
    pub ops: SocketAddr,
    /// Certificate files and the HTTPS address.
    pub tls: Option<(tls::TlsFiles, SocketAddr)>,
    /// A listener facing LGWAN (zone `lgwan`); the others face the internet.
    pub lgwan: Option<SocketAddr>,
}

/// A running front tier.
pub struct Server {
    pub bound: Bound,
    pub app: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds both listeners, loads the host table and starts serving.
    pub async fn start(p: &Platform, public: SocketAddr, ops: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(
            p,
            Listeners {
                public,
                ops,
                tls: None,
                lgwan: None,
            },
        )
        .await
    }

    /// Binds every listener, loads the host table and starts serving.
    pub async fn start_with(p: &Platform, l: Listeners) -> anyhow::Result<Self> {
        let app = App::new(p)?;
        app.hosts.reload(&app.catalog).await?;
        warn_if_cluster_too_small(p).await;
        let latest = crate::control::migrate::latest_tenant_version();
        for t in app.catalog.list_tenants().await? {
            if t.state == TenantState::Active && t.schema_version < latest {
                tracing::warn!(tenant = %t.slug, schema = t.schema_version, latest, "tenant database is behind this binary's schema; run `madoguchi migrate --all`");
            }
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
        };
        let public_l = bind(l.public).await?;
        let ops_l = bind(l.ops).await?;
        let tls = match &l.tls {
            Some((files, addr)) => {
                let cert =
                    tls::ReloadingCert::new(files.clone(), app.metrics.tls_not_after.clone())?;
                let config = tls::server_config(std::sync::Arc::clone(&cert))?;
                Some((
                    cert,
                    tokio_rustls::TlsAcceptor::from(config),
                    bind(*addr).await?,
                ))
            }
            None => None,
        };
        let lgwan_l = match l.lgwan {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let bound = Bound {
            public: public_l.local_addr()?,
            ops: ops_l.local_addr()?,
            https: tls.as_ref().map(|t| t.2.local_addr()).transpose()?,
            lgwan: lgwan_l.as_ref().map(TcpListener::local_addr).transpose()?,
        };
        let (shutdown, rx) = watch::channel(false);

        let mut background = Vec::new();
        // A cluster made or grown by another version gets its autovacuum round here.
        let cluster = p.cluster.clone();
        background.push(tokio::spawn(async move { cluster.tune_autovacuum().await }));
        let mut listen_cfg = p.cluster.admin_config(&p.settings.catalog_db);
        // Named, so a master-key rotation sees a running service even if its presence
        // connection was cut (the listener reconnects).
        listen_cfg.application_name(format!("madoguchi-listen/{}", std::process::id()));
        let pools = app.pools.clone();
        background.push(tokio::spawn(routes::keep_fresh(
            Arc::clone(&app.hosts),
            app.catalog.clone(),
            listen_cfg,
            p.cluster.tls().clone(),
            p.settings.cache_refresh,
            move |map| {
                let active: std::collections::HashSet<uuid::Uuid> = map
                    .values()
                    .filter(|r| r.state == TenantState::Active)
                    .map(|r| r.id)
                    .collect();
                pools.retain_tenants(|id| active.contains(id));
                crate::tenant::forms::store::forget_definitions(|id| active.contains(id));
            },
        )));
        let pools = app.pools.clone();
        let app_for_ceiling = Arc::clone(&app);
        let every =
            (p.settings.pool.idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let shares = app.pools.clone();
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shares.rebalance();
            }
        }));
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                pools.evict_idle();
                app_for_ceiling.ceiling.retain_recent();
                app_for_ceiling.sign_ins.forget_quiet();
                app_for_ceiling.setups.forget_quiet();
                limits::forget_quiet_clients();
            }
        }));

        background.push(tokio::spawn(housekeeping_daily(
            p.catalog.clone(),
            app.pools.clone(),
        )));
        match &p.settings.mail {
            Some(m) => {
                let mailer = crate::tenant::mail::Mailer::new(m)?;
                let port = |a: SocketAddr, default: u16| Some(a.port()).filter(|p| *p != default);
                // Links in mail: how people reach us. Behind a trusted proxy that is
                // its HTTPS; with our own TLS, our HTTPS port; otherwise the plain port.
                let links = match bound.https {
                    Some(a) => mail::LinkBase { https: true, port: port(a, 443) },
                    None if !p.settings.trusted_proxies.is_empty() => mail::LinkBase { https: true, port: None },
                    None => mail::LinkBase { https: false, port: port(bound.public, 80) },
                };
                background.push(tokio::spawn(mail::run(
                    Arc::clone(&app),
                    mailer,
                    links,
                    p.settings.mail_sweep_after,
                )));
            }
            None => tracing::info!("no SMTP relay set (MADOGUCHI_SMTP_URL): mail to applicants waits in each tenant's outbox"),
        }

        let mut tasks = Vec::new();
        let public = public_router(Arc::clone(&app), conn::Zone::Internet);
        let mut listeners: Vec<(
            TcpListener,
            Option<tokio_rustls::TlsAcceptor>,
            conn::Zone,
            Router,
        )> = Vec::new();
        match tls {
            Some((cert, acceptor, https_l)) => {
                background.push(tokio::spawn(tls::watch(cert, Duration::from_secs(5))));
                let port = bound.https.map_or(443, |a| a.port());
                listeners.push((public_l, None, conn::Zone::Internet, redirect_router(port)));
                listeners.push((
                    https_l,
                    Some(acceptor),
                    conn::Zone::Internet,
                    public.clone(),
                ));
            }
            None => listeners.push((public_l, None, conn::Zone::Internet, public)),
        }
        if let Some(l) = lgwan_l {
            let lgwan = public_router(Arc::clone(&app), conn::Zone::Lgwan);
            listeners.push((l, None, conn::Zone::Lgwan, lgwan));
        }
        listeners.push((
            ops_l,
            None,
            conn::Zone::Internet,
            ops_router(Arc::clone(&app), p.handle()),
        ));
        for (listener, acceptor, zone, router) in listeners {
            tasks.push(tokio::spawn(conn::serve(
                listener,
                acceptor,
                zone,
                router,
                p.settings.connection_idle,
                rx.clone(),
            )));
        }
        Ok(Self {
            bound,
            app,
            shutdown,
            tasks,
            background,
        })
    }

    /// Stops accepting, lets in-flight requests finish, closes every pool.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.background {
            t.abort();
        }
        self.app.pools.close_all();
    }
}
