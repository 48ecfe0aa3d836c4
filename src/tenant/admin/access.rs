//! Where the admin screen may be used from (ネットワーク制限): client address ranges
//! and the network zones (internet, LGWAN) of the listener a request came through.
//! Checked on every `/admin` request before sign-in; refusals go to the operation log
//! (at most once a minute per address, so a flood cannot fill it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Nav;
use crate::error::AppError;
use crate::front::conn::Zone;
use crate::tenant::audit::{self, Actor};
use crate::tenant::http::{see_other, FormData};
use crate::tenant::staff::{StaffUser, TotpRule};
use crate::tenant::TenantCtx;
use crate::web::{render, ErrorPage};

/// The tenant's rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub cidrs: Vec<ipnet::IpNet>,
    pub zones: Vec<Zone>,
    /// Origins that may frame citizen forms (`https://www.city.example.lg.jp`).
    pub embed: Vec<String>,
}

/// `scheme://host[:port]` with https (http only for localhost), nothing more.
pub fn parse_origin(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = s.split_once("://")?;
    let host = rest.rsplit_once(':').map_or(rest, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() {
            h
        } else {
            rest
        }
    });
    let local = host == "localhost" || host.ends_with(".localhost");
    let ok_scheme = scheme == "https" || (scheme == "http" && local);
    let ok_host = !host.is_empty()
        && host.contains('.') | local
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    (ok_scheme && ok_host && !rest.contains('/')).then_some(s)
}

/// The frame-ancestors list for citizen pages, cached for half a minute per tenant
/// (read on every citizen page, changed rarely).
type EmbedCache = HashMap<uuid::Uuid, (Instant, Vec<String>)>;
static EMBED_CACHE: Mutex<Option<EmbedCache>> = Mutex::new(None);

pub async fn embed_origins(ctx: &TenantCtx) -> Vec<String> {
    let mut stale = None;
    if let Ok(mut g) = EMBED_CACHE.lock() {
        if let Some((at, v)) = g.get_or_insert_with(HashMap::new).get(&ctx.id) {
            if at.elapsed() < Duration::from_secs(30) {
                return v.clone();
            }
            stale = Some(v.clone());
        }
    }
    // A database that cannot answer leaves the list as it was last read: the page
    // telling of the outage still shows inside the municipality's frame.
    let read = match ctx.db().await {
        Ok(db) => db
            .query_one("SELECT embed_origins FROM settings", &[])
            .await
            .ok()
            .map(|r| r.get::<_, Vec<String>>(0)),
        Err(_) => None,
    };
    let Some(v) = read else {
        return stale.unwrap_or_default();
    };
    if let Ok(mut g) = EMBED_CACHE.lock() {
        let map = g.get_or_insert_with(HashMap::new);
        if map.len() > 5000 {
            map.clear();
        }
        map.insert(ctx.id, (Instant::now(), v.clone()));
    }
    v
}

/// The CSP of a citizen form that `origins` may frame (`None` when none may).
fn framed_csp(origins: &[String]) -> Option<axum::http::HeaderValue> {
    if origins.is_empty() {
        return None;
    }
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self' {}",
        origins.join(" ")
    );
    axum::http::HeaderValue::from_str(&csp).ok()
}

/// For a refusal the front tier sends before the tenant's routes run (over the
/// municipality's ceiling, no turn or runtime in time): the form's CSP from the
/// list as last read, without waiting for the database.
pub fn framed_csp_as_last_read(tenant: &uuid::Uuid) -> Option<axum::http::HeaderValue> {
    let g = EMBED_CACHE.lock().ok()?;
    framed_csp(&g.as_ref()?.get(tenant)?.1)
}

/// On citizen pages: let the tenant's own sites frame them, if it chose any.
pub async fn embed_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // The forms, and the status page's way into a correction (it sets the form's
    // cookie, which must then be the same kind as the form's own).
    let form = path.starts_with("/f/");
    let ctx = (form || path.starts_with("/status"))
        .then(|| req.extensions().get::<TenantCtx>().cloned())
        .flatten();
    let mut resp = next.run(req).await;
    if let Some(ctx) = ctx {
        let origins = embed_origins(&ctx).await;
        if !origins.is_empty() && !form {
            if ctx.secure_cookies {
                crate::tenant::http::embeddable_cookies(resp.headers_mut());
            }
        } else if let Some(v) = framed_csp(&origins) {
            resp.headers_mut()
                .insert(axum::http::header::CONTENT_SECURITY_POLICY, v);
            if ctx.secure_cookies {
                crate::tenant::http::embeddable_cookies(resp.headers_mut());
            }
        }
    }
    resp
}

/// Address ranges as typed, one a line or comma-separated (full width accepted; a
/// single address is a range of one), each cut to its network; IPv4 written as IPv6
/// (`::ffff:192.0.2.0/120`) as IPv4, since client addresses are compared so. Returns
/// the ranges and what did not parse.
pub fn parse_cidrs(text: &str) -> (Vec<ipnet::IpNet>, Vec<String>) {
    let mut cidrs = Vec::new();
    let mut bad = Vec::new();
    for part in crate::ja::nfkc(text)
        .split(['\n', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part
            .parse::<ipnet::IpNet>()
            .or_else(|_| part.parse::<IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(ipnet::IpNet::V6(n))
                if n.prefix_len() >= 96 && n.addr().to_ipv4_mapped().is_some() =>
            {
                let v4 = n.addr().to_ipv4_mapped().map(|a| {
                    ipnet::Ipv4Net::new(a, n.prefix_len() - 96).map(|n| ipnet::IpNet::V4(n.trunc()))
                });
                match v4 {
                    Some(Ok(n)) => cidrs.push(n),
                    _ => bad.push(part.to_owned()),
                }
            }
            Ok(n) => cidrs.push(n.trunc()),
            Err(_) => bad.push(part.to_owned()),
        }
    }
    (cidrs, bad)
}

impl Access {
    pub fn allows(&self, ip: Option<IpAddr>, zone: Zone) -> bool {
        let ip_ok = self.cidrs.is_empty()
            || ip.is_some_and(|ip| self.cidrs.iter().any(|n| n.contains(&ip.to_canonical())));
        ip_ok && self.zones.contains(&zone)
    }
}

async fn load(db: &deadpool_postgres::ClientWrapper) -> Result<Access, AppError> {
    let stmt = db
        .prepare_cached("SELECT admin_cidrs, admin_zones, embed_origins FROM settings")
        .await?;
    let r = db.query_one(&stmt, &[]).await?;
    let cidrs: Vec<String> = r.get(0);
    let zones: Vec<String> = r.get(1);
    Ok(Access {
        cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        zones: zones.iter().filter_map(|z| Zone::parse(z)).collect(),
        embed: r.get(2),
    })
}

/// Whether a refusal from `ip` is logged now: at most once a minute per address, and
/// per API token (`token`; `None` for the admin screen), so refusals of one kind never
/// keep another's out of the log.
pub(crate) fn should_log(tenant: uuid::Uuid, ip: Option<IpAddr>, token: Option<i64>) -> bool {
    type Seen = HashMap<(uuid::Uuid, Option<IpAddr>, Option<i64>), Instant>;
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let Ok(mut guard) = SEEN.lock() else {
        return false;
    };
    let seen = guard.get_or_insert_with(HashMap::new);
    if seen.len() > 10_000 {
        seen.clear();
    }
    let now = Instant::now();
    match seen.get(&(tenant, ip, token)) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
        _ => {
            seen.insert((tenant, ip, token), now);
            true
        }
    }
}

/// The middleware on `/admin`.
pub async fn guard(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    let Some(ctx) = req.extensions().get::<TenantCtx>().cloned() else {
        return next.run(req).await;
    };
    let access = match ctx.db().await {
        Ok(db) => load(&db).await,
        Err(e) => Err(e),
    };
    match access {
        Ok(a) if a.allows(ctx.client_ip, ctx.zone) => next.run(req).await,
        Ok(_) => {
            if should_log(ctx.id, ctx.client_ip, None) {
                if let Ok(mut db) = ctx.db().await {
                    let _ = audit::record(
                        &mut db,
                        &Actor::Anonymous,
                        "access.refused",
                        // A setup link's token is a secret: not kept for years.
                        &crate::front::loggable_path(req.uri().path()),
                        serde_json::json!({
                            "ip": ctx.client_ip.map(|i| i.to_string()),
                            "zone": ctx.zone.as_str(),
                        }),
                    )
                    .await;
                }
            }
            ErrorPage::new(
                StatusCode::FORBIDDEN,
                "このネットワークからは利用できません",
                "Not available from this network",
                "管理画面は、団体が許可したネットワーク（庁内・LGWAN など）からのみ利用できます。",
            )
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "admin/access.html")]
struct AccessPage {
    site: String,
    nav: Option<Nav>,
    cidrs: String,
    embed: String,
    internet: bool,
    lgwan: bool,
    your_ip: String,
    your_zone: &'static str,
    error: Option<String>,
    /// Valid API tokens that follow this rule (利用元「管理画面と同じ」).
    following_tokens: i64,
    /// Every member of staff must use TOTP ([`TotpRule::All`]).
    totp_all: bool,
    /// Active staff who signed in with a password alone (no TOTP enrolled).
    without_totp: i64,
}

/// How many active staff, other than 管理者 and 所属管理者 (who cannot sign in
/// without it), signed up with a password alone: those a rule of all would lock out.
macro_rules! without_totp {
    () => {
        "SELECT count(*) FROM staff WHERE NOT disabled AND password_hash IS NOT NULL AND NOT totp_enabled
            AND role NOT IN ('admin', 'dept_manager')"
    };
}

async fn page(
    ctx: &TenantCtx,
    user: &StaffUser,
    a: &Access,
    cidrs: String,
    embed: String,
    error: Option<String>,
) -> Result<Response, AppError> {
    let counts = ctx
        .db()
        .await?
        .query_one(
            concat!(
                "SELECT (SELECT count(*) FROM api_tokens WHERE network = 'admin' AND revoked_at IS NULL),
                        coalesce((SELECT staff_totp FROM settings), 'all'), (",
                without_totp!(),
                ")"
            ),
            &[],
        )
        .await?;
    let following_tokens: i64 = counts.get(0);
    Ok(render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &AccessPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "access")),
            cidrs,
            embed,
            internet: a.zones.contains(&Zone::Internet),
            lgwan: a.zones.contains(&Zone::Lgwan),
            your_ip: ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            your_zone: ctx.zone.as_str(),
            error,
            following_tokens,
            totp_all: TotpRule::parse(counts.get(1)) == TotpRule::All,
            without_totp: counts.get(2),
        },
    ))
}

/// 二要素認証: whether every member of staff must use TOTP, or 管理者 and 所属管理者
/// only. Required of all, the sessions of staff without TOTP are deleted at once (and
/// [`crate::tenant::staff::SESSION_SQL`] refuses any that remain), and they are
/// refused at sign-in until they enrol through a new setup link.
pub async fn save_totp(
    ctx: TenantCtx,
    user: StaffUser,
    body: FormData,
) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let rule = match body.get("staff_totp") {
        "all" => TotpRule::All,
        "managers" => TotpRule::Managers,
        _ => {
            return Err(AppError::BadRequest(
                "二要素認証を必須にする範囲を選んでください".into(),
            ))
        }
    };
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    let without: i64 = tx.query_one(without_totp!(), &[]).await?.get(0);
    let changed = tx
        .execute(
            "UPDATE settings SET staff_totp = $1 WHERE staff_totp <> $1",
            &[&rule.as_str()],
        )
        .await?;
    if changed > 0 && rule == TotpRule::All {
        // Their sessions end now (not merely refused until the rule is changed back).
        tx.execute(
            "DELETE FROM staff_sessions WHERE staff_id IN
               (SELECT id FROM staff WHERE NOT totp_enabled AND role NOT IN ('admin', 'dept_manager'))",
            &[],
        )
        .await?;
    }
    if changed > 0 {
        audit::append(
            &tx,
            &user.actor(),
            "settings.totp",
            "",
            serde_json::json!({
                "staff_totp": rule.as_str(),
                // Staff whose sessions end and who must enrol (for an 'all').
                "staff_without_totp": (rule == TotpRule::All).then_some(without),
            }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(see_other("/admin/access#totp"))
}

pub async fn show(ctx: TenantCtx, user: StaffUser) -> Result<Response, AppError> {
    user.require_admin()?;
    let db = ctx.db().await?;
    let a = load(&db).await?;
    let cidrs = a
        .cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let embed = a.embed.join("\n");
    drop(db);
    page(&ctx, &user, &a, cidrs, embed, None).await
}

pub async fn save(ctx: TenantCtx, user: StaffUser, body: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let text = body.get("cidrs").to_owned();
    let (cidrs, mut bad) = parse_cidrs(&text);
    let zones: Vec<Zone> = body
        .all("zone")
        .iter()
        .filter_map(|z| Zone::parse(z))
        .collect();
    let embed_text = body.get("embed").to_owned();
    let mut embed = Vec::new();
    for line in embed_text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match parse_origin(line) {
            Some(o) => embed.push(o),
            None => bad.push(line.to_owned()),
        }
    }
    let a = Access {
        cidrs,
        zones,
        embed,
    };
    let error = if !bad.is_empty() {
        Some(format!(
            "形式が正しくありません: {}（アドレス範囲の例: 192.0.2.0/24、埋め込みを許可するサイトの例: https://www.city.example.lg.jp）",
            bad.join(", ")
        ))
    } else if a.zones.is_empty() {
        Some("利用を許可するネットワークを1つ以上選んでください".to_owned())
    } else if a.cidrs.len() > 200 {
        Some("アドレス範囲は200件までです".to_owned())
    } else if !a.allows(ctx.client_ip, ctx.zone) {
        Some(format!(
            "この設定では、いま操作しているあなた（{}、{}）も利用できなくなります。設定を見直してください",
            ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            ctx.zone.as_str()
        ))
    } else {
        None
    };
    if let Some(e) = error {
        return page(&ctx, &user, &a, text, embed_text, Some(e)).await;
    }
    let cidr_text: Vec<String> = a.cidrs.iter().map(ToString::to_string).collect();
    let zone_text: Vec<String> = a.zones.iter().map(|z| z.as_str().to_owned()).collect();
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE settings SET admin_cidrs = $1, admin_zones = $2, embed_origins = $3",
        &[&cidr_text, &zone_text, &a.embed],
    )
    .await?;
    audit::append(
        &tx,
        &user.actor(),
        "settings.access",
        "",
        serde_json::json!({ "cidrs": cidr_text, "zones": zone_text, "embed": a.embed }),
    )
    .await?;
    tx.commit().await?;
    if let Ok(mut g) = EMBED_CACHE.lock() {
        if let Some(map) = g.as_mut() {
            map.remove(&ctx.id);
        }
    }
    Ok(see_other("/admin/access"))
}

#[cfg(test)]
mod tests {
    use super::parse_cidrs;

    #[test]
    fn ranges_are_read_as_typed_and_ipv4_written_as_ipv6_is_ipv4() {
        let (cidrs, bad) = parse_cidrs(
            "192.0.2.7\n１９８．５１．１００．０／２４, 2001:db8::1/32\n::ffff:203.0.113.0/120\n\n庁内\n::ffff:0.0.0.0/90",
        );
        let shown: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "192.0.2.7/32",
                "198.51.100.0/24",
                "2001:db8::/32",
                "203.0.113.0/24",
                "::ffc0:0:0/90"
            ]
        );
        assert_eq!(bad, ["庁内"]);
    }
}
