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
use crate::tenant::staff::StaffUser;
use crate::tenant::TenantCtx;
use crate::web::{render, ErrorPage};

/// The tenant's rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub cidrs: Vec<ipnet::IpNet>,
    pub zones: Vec<Zone>,
}

impl Access {
    pub fn allows(&self, ip: Option<IpAddr>, zone: Zone) -> bool {
        let ip_ok = self.cidrs.is_empty()
            || ip.is_some_and(|ip| self.cidrs.iter().any(|n| n.contains(&ip)));
        ip_ok && self.zones.contains(&zone)
    }
}

async fn load(db: &tokio_postgres::Client) -> Result<Access, AppError> {
    let r = db
        .query_one("SELECT admin_cidrs, admin_zones FROM settings", &[])
        .await?;
    let cidrs: Vec<String> = r.get(0);
    let zones: Vec<String> = r.get(1);
    Ok(Access {
        cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        zones: zones.iter().filter_map(|z| Zone::parse(z)).collect(),
    })
}

fn should_log(tenant: uuid::Uuid, ip: Option<IpAddr>) -> bool {
    static SEEN: Mutex<Option<HashMap<(uuid::Uuid, Option<IpAddr>), Instant>>> = Mutex::new(None);
    let Ok(mut guard) = SEEN.lock() else {
        return false;
    };
    let seen = guard.get_or_insert_with(HashMap::new);
    if seen.len() > 10_000 {
        seen.clear();
    }
    let now = Instant::now();
    match seen.get(&(tenant, ip)) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
        _ => {
            seen.insert((tenant, ip), now);
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
            if should_log(ctx.id, ctx.client_ip) {
                if let Ok(mut db) = ctx.db().await {
                    let _ = audit::record(
                        &mut db,
                        &Actor::Anonymous,
                        "access.refused",
                        req.uri().path(),
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
    internet: bool,
    lgwan: bool,
    your_ip: String,
    your_zone: &'static str,
    error: Option<String>,
}

fn page(
    ctx: &TenantCtx,
    user: &StaffUser,
    a: &Access,
    cidrs: String,
    error: Option<String>,
) -> Response {
    render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &AccessPage {
            site: ctx.name.to_string(),
            nav: Some(Nav::new(user, "access")),
            cidrs,
            internet: a.zones.contains(&Zone::Internet),
            lgwan: a.zones.contains(&Zone::Lgwan),
            your_ip: ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            your_zone: ctx.zone.as_str(),
            error,
        },
    )
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
    Ok(page(&ctx, &user, &a, cidrs, None))
}

pub async fn save(ctx: TenantCtx, user: StaffUser, body: FormData) -> Result<Response, AppError> {
    user.require_admin()?;
    user.check_csrf(&body)?;
    let text = body.get("cidrs").to_owned();
    let mut cidrs = Vec::new();
    let mut bad = Vec::new();
    for line in text
        .lines()
        .map(|l| crate::ja::nfkc(l.trim()))
        .filter(|l| !l.is_empty())
    {
        match line
            .parse::<ipnet::IpNet>()
            .or_else(|_| line.parse::<IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(n) => cidrs.push(n.trunc()),
            Err(_) => bad.push(line),
        }
    }
    let zones: Vec<Zone> = body
        .all("zone")
        .iter()
        .filter_map(|z| Zone::parse(z))
        .collect();
    let a = Access { cidrs, zones };
    let error = if !bad.is_empty() {
        Some(format!(
            "アドレスの形式が正しくありません: {}（例: 192.0.2.0/24）",
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
        return Ok(page(&ctx, &user, &a, text, Some(e)));
    }
    let cidr_text: Vec<String> = a.cidrs.iter().map(ToString::to_string).collect();
    let zone_text: Vec<String> = a.zones.iter().map(|z| z.as_str().to_owned()).collect();
    let mut db = ctx.db().await?;
    let client: &mut tokio_postgres::Client = &mut db;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE settings SET admin_cidrs = $1, admin_zones = $2",
        &[&cidr_text, &zone_text],
    )
    .await?;
    audit::append(
        &tx,
        &Actor::Staff {
            id: user.id,
            email: user.email.clone(),
        },
        "settings.access",
        "",
        serde_json::json!({ "cidrs": cidr_text, "zones": zone_text }),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/admin/access"))
}
