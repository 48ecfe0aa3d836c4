//! Rate limits keyed by (tenant, client address), with a Japanese 429 page and
//! `Retry-After`: tower-governor's on requests, and [`Attempts`] on wrong guesses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::{GovernorConfigBuilder, SharedRateLimiter};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use uuid::Uuid;

use crate::tenant::TenantCtx;
use crate::web::ErrorPage;

/// Wrong staff sign-ins allowed at once per tenant and client address, then one
/// every [`SIGN_IN_EVERY`] ([`Attempts`]: right ones cost nothing).
pub const SIGN_IN_BURST: u32 = 10;
pub const SIGN_IN_EVERY: Duration = Duration::from_secs(6);
/// Posts of a setup link that is not (or no longer) valid, alike.
pub const SETUP_BURST: u32 = 5;
pub const SETUP_EVERY: Duration = Duration::from_secs(12);

/// The tenant and the client: its address, or for IPv6 its /64 (one subscriber's
/// network, whose addresses it can change at will).
#[derive(Debug, Clone, Copy)]
pub struct TenantIp;

impl KeyExtractor for TenantIp {
    type Key = (Uuid, IpAddr);

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        // The tenant the front tier resolved (by Host, or by :authority over HTTP/2,
        // and the same for every host name of one municipality).
        let tenant = req
            .extensions()
            .get::<TenantCtx>()
            .map_or(Uuid::nil(), |c| c.id);
        // The address a trusted proxy reported, else the socket's.
        let ip = match req.extensions().get::<super::conn::ClientIp>() {
            Some(c) => c.0,
            None => req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        };
        Ok((tenant, client_network(ip)))
    }
}

/// The address a limit counts by: IPv4 as it is, IPv6 cut to its /64.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

type PostLimiter =
    SharedRateLimiter<(Uuid, IpAddr), NoOpMiddleware<governor::clock::QuantaInstant>>;

/// Every POST limit made in this process, so their state for clients not seen for a
/// while can be dropped ([`forget_quiet_clients`]); a limiter keeps one entry per
/// key until told.
static POST_LIMITERS: Mutex<Vec<Weak<<PostLimiter as std::ops::Deref>::Target>>> =
    Mutex::new(Vec::new());

/// Drops the state of clients whose limit has fully recovered, in every POST limit
/// still in use (the server calls this every few seconds); returns the keys kept.
pub fn forget_quiet_clients() -> usize {
    match POST_LIMITERS.lock() {
        Ok(mut all) => forget_in(&mut all),
        Err(_) => 0,
    }
}

fn forget_in(all: &mut Vec<Weak<<PostLimiter as std::ops::Deref>::Target>>) -> usize {
    let mut kept = 0;
    all.retain(|w| match w.upgrade() {
        Some(l) => {
            l.retain_recent();
            l.shrink_to_fit();
            kept += l.len();
            true
        }
        None => false,
    });
    kept
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
    if let Ok(mut all) = POST_LIMITERS.lock() {
        all.push(Arc::downgrade(config.limiter()));
    }
    GovernorLayer::new(Arc::new(config)).error_handler(too_many)
}

/// Citizens' form POSTs: `per_minute` after `burst`, per tenant and client; `None` when off.
pub fn submit_limit(
    limits: &crate::config::RateLimits,
) -> Option<GovernorLayer<TenantIp, NoOpMiddleware<governor::clock::QuantaInstant>, Body>> {
    (limits.submit_per_minute > 0).then(|| {
        post_limit(
            Duration::from_secs(60) / limits.submit_per_minute,
            limits.submit_burst,
        )
    })
}

/// Wrong guesses allowed per tenant and client network: `burst` at once, then one
/// every `every`, while right ones cost nothing.
///
/// Staff sign in from the city's offices, and over LGWAN a whole office (up to some
/// 200 people) reaches us from one address: a limit on every sign-in would keep most
/// of them waiting each morning. Each attempt takes its place before it is checked
/// (so that guesses sent together cannot pass the limit together) and gives it back
/// when it proves right. While an address is over its limit, every attempt from it
/// waits, a right one too: that is what stops a guesser, and an office reaches it
/// only by many wrong guesses in a row.
pub struct Attempts {
    every: Duration,
    burst: u32,
    /// Per key, the moment its places are all free again (the theoretical arrival
    /// time of the generic cell rate algorithm); keys at or before now are free.
    free_at: Mutex<HashMap<(Uuid, IpAddr), Instant>>,
}

/// One attempt's place: kept when [`Attempt::was_wrong`] says so, given back
/// otherwise, when right or when the attempt ended without a verdict (the database
/// failed, the request ran out of time): such an answer tells a guesser nothing.
pub struct Attempt {
    of: Arc<Attempts>,
    key: (Uuid, IpAddr),
    wrong: bool,
}

impl Attempts {
    pub fn new(every: Duration, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            every: every.max(Duration::from_millis(1)),
            burst: burst.max(1),
            free_at: Mutex::new(HashMap::new()),
        })
    }

    fn places(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, IpAddr), Instant>> {
        // The map holds only instants, each written whole: usable after a panic.
        self.free_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for an attempt from `client` to `tenant`, or the 429 page saying how
    /// long to wait (boxed, as [`TenantCeiling::check`]'s).
    pub fn begin(
        self: &Arc<Self>,
        tenant: Uuid,
        client: Option<IpAddr>,
    ) -> Result<Attempt, Box<Response<Body>>> {
        let key = (
            tenant,
            client_network(client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        );
        let now = Instant::now();
        let mut places = self.places();
        let from = places
            .get(&key)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        let next = from + self.every;
        let window = self.every * self.burst;
        let ahead = next.duration_since(now);
        if ahead > window {
            let wait = (ahead - window).as_secs();
            return Err(Box::new(too_many(GovernorError::TooManyRequests {
                wait_time: wait,
                headers: None,
            })));
        }
        places.insert(key, next);
        Ok(Attempt {
            of: Arc::clone(self),
            key,
            wrong: false,
        })
    }

    /// Forgets the clients whose places are all free; returns those kept.
    pub fn forget_quiet(&self) -> usize {
        let now = Instant::now();
        let mut places = self.places();
        places.retain(|_, t| *t > now);
        places.shrink_to_fit();
        places.len()
    }
}

impl Attempt {
    /// The attempt was wrong: its place stays taken until it wears off. Called as
    /// soon as the verdict is known, before anything else is awaited.
    pub fn was_wrong(mut self) {
        self.wrong = true;
    }

    /// The attempt was right: its place is given back.
    pub fn was_right(self) {}
}

impl Drop for Attempt {
    /// Gives the place back unless the attempt was wrong: every place after it moves
    /// one step earlier. (Places taken behind it while it ran gain at most that
    /// while, which only a right attempt, with a real account, gives.)
    fn drop(&mut self) {
        if self.wrong {
            return;
        }
        let now = Instant::now();
        let mut places = self.of.places();
        if let Some(t) = places.get_mut(&self.key) {
            match t.checked_sub(self.of.every).filter(|t| *t > now) {
                Some(earlier) => *t = earlier,
                None => {
                    places.remove(&self.key);
                }
            }
        }
    }
}

/// Refusals held at once (all tenants together); beyond this they are sent at once.
pub const HELD_REFUSALS: usize = 1024;

/// The per-tenant ceiling: requests per second to one tenant from everyone together.
///
/// A refusal costs almost nothing, so a client that repeats at once would be refused
/// as fast as it can send, and the refusals alone would take the CPU from other
/// municipalities. Each refusal is therefore held for `delay` before it is sent (at
/// most [`HELD_REFUSALS`] at a time, so held refusals cannot pile up without bound):
/// a client flooding over C connections gets at most C refusals per `delay`, and
/// nothing runs while they wait.
pub struct TenantCeiling {
    limiter: Option<governor::DefaultKeyedRateLimiter<uuid::Uuid>>,
    delay: Duration,
    held: tokio::sync::Semaphore,
}

impl TenantCeiling {
    pub fn new(per_second: u32, delay: Duration) -> Self {
        let limiter = std::num::NonZeroU32::new(per_second).map(|rate| {
            let burst = std::num::NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            delay,
            held: tokio::sync::Semaphore::new(HELD_REFUSALS),
        }
    }

    /// How long a refusal is held.
    pub fn hold(&self) -> Duration {
        self.delay
    }

    /// A place among the refusals held (see the type's documentation), for as long
    /// as it is kept; `None` when refusals are not held or [`HELD_REFUSALS`] already
    /// are: the refusal is then sent at once.
    pub fn try_hold(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if self.delay.is_zero() {
            return None;
        }
        self.held.try_acquire().ok()
    }

    /// `Err(429 page)` when the tenant is over its ceiling (boxed: the refusal is the
    /// rare case, and a `Response` is large to carry on every check).
    pub fn check(&self, tenant: &uuid::Uuid) -> Result<(), Box<Response<Body>>> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        match l.check_key(tenant) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ))
                    .as_secs();
                Err(Box::new(too_many(GovernorError::TooManyRequests {
                    wait_time: wait,
                    headers: None,
                })))
            }
        }
    }

    /// Forgets tenants that have been quiet (bounded memory with many tenants).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
        }
    }
}

/// The 429 page. `wait_time` is the whole seconds of the wait, rounded down (as
/// tower-governor gives it); the page and `Retry-After` say one more, so a client
/// that waits as told is not refused again.
fn too_many(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let wait_time = wait_time.saturating_add(1);
            let mut r = ErrorPage::new(
                StatusCode::TOO_MANY_REQUESTS,
                "操作の回数が多すぎます",
                "Too many requests",
                &format!("短い時間に多くの操作が行われました。{wait_time}秒ほど待ってから、もう一度お試しください。"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait_time.to_string()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client_network(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(
            client_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_network(ip("::ffff:198.51.100.7")),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn only_wrong_attempts_use_up_an_address() {
        let attempts = Attempts::new(Duration::from_secs(60), 3);
        let (city, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let office = Some(IpAddr::from([198, 51, 100, 7]));
        let status = |r: &Result<Attempt, Box<Response<Body>>>| match r {
            Ok(_) => 200,
            Err(page) => page.status().as_u16(),
        };
        // Any number of right attempts, one after another.
        for _ in 0..50 {
            match attempts.begin(city, office) {
                Ok(a) => a.was_right(),
                Err(_) => panic!("a right attempt was refused"),
            }
        }
        assert_eq!(attempts.forget_quiet(), 0, "right attempts leave nothing");
        // Attempts in flight together hold their places: three, not more.
        let held: Vec<_> = (0..5).map(|_| attempts.begin(city, office)).collect();
        assert_eq!(
            held.iter().map(status).collect::<Vec<_>>(),
            [200, 200, 200, 429, 429]
        );
        // One of them proves right, one ends without a verdict: both places are free
        // for the next.
        let mut held = held.into_iter().flatten();
        if let Some(a) = held.next() {
            a.was_right();
        }
        drop(held.next());
        let next: Vec<_> = (0..2).map(|_| attempts.begin(city, office)).collect();
        assert_eq!(next.iter().map(status).collect::<Vec<_>>(), [200, 200]);
        // All were wrong: the address waits, a right attempt too, and is told how
        // long (the page adds a second to the rounded-down wait).
        for a in held.chain(next.into_iter().flatten()) {
            a.was_wrong();
        }
        let refused = attempts.begin(city, office);
        assert_eq!(status(&refused), 429);
        if let Err(page) = refused {
            let wait = page
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(matches!(wait, Some(1..=61)), "{wait:?}");
        }
        // Another address, another municipality, an IPv6 network: each its own.
        let elsewhere = attempts.begin(city, Some(IpAddr::from([198, 51, 100, 8])));
        let other_city = attempts.begin(other, office);
        assert_eq!((status(&elsewhere), status(&other_city)), (200, 200));
        for a in [elsewhere, other_city].into_iter().flatten() {
            a.was_wrong();
        }
        let v6 = |s: &str| s.parse::<IpAddr>().ok();
        for _ in 0..3 {
            attempts
                .begin(city, v6("2001:db8:1:2::1"))
                .map(Attempt::was_wrong)
                .ok();
        }
        assert_eq!(status(&attempts.begin(city, v6("2001:db8:1:2::99"))), 429);
        assert_eq!(
            attempts.forget_quiet(),
            4,
            "addresses still waiting are kept"
        );
        // Places come free with time, and free addresses are forgotten.
        let quick = Attempts::new(Duration::from_millis(5), 2);
        for _ in 0..2 {
            quick.begin(city, office).map(Attempt::was_wrong).ok();
        }
        assert_eq!(status(&quick.begin(city, office)), 429);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(quick.forget_quiet(), 0);
        assert_eq!(status(&quick.begin(city, office)), 200);
    }

    #[test]
    fn quiet_clients_are_forgotten_and_dropped_limits_let_go() {
        let Some(quota) = governor::Quota::with_period(Duration::from_millis(1)) else {
            panic!("a 1 ms period is a valid quota")
        };
        let limiter: PostLimiter = Arc::new(governor::RateLimiter::keyed(quota));
        for n in 0..100u32 {
            let _ = limiter.check_key(&(Uuid::nil(), IpAddr::from(n.to_be_bytes())));
        }
        assert_eq!(limiter.len(), 100);
        let gone: PostLimiter = Arc::new(governor::RateLimiter::keyed(quota));
        let mut all = vec![Arc::downgrade(&limiter), Arc::downgrade(&gone)];
        drop(gone);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(forget_in(&mut all), 0);
        assert_eq!(limiter.len(), 0);
        assert_eq!(all.len(), 1, "a dropped limit is still listed");
        // A limit made for a route is listed.
        let before = POST_LIMITERS.lock().map(|l| l.len()).unwrap_or(0);
        let _layer = post_limit(Duration::from_secs(1), 1);
        assert_eq!(
            POST_LIMITERS.lock().map(|l| l.len()).unwrap_or(0),
            before + 1
        );
    }
}
