//! Proof of work before a citizen's final submit (the ALTCHA protocol, self-hosted:
//! the server signs a challenge, the browser finds the number whose SHA-256 it names,
//! the server checks signature, expiry and that the solution was not used before).
//! On for a form when its builder says so, and by itself for ten minutes when a
//! form's submissions spike; it costs a person about a second and a bot the same
//! for every submission.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::error::AppError;
use crate::tenant::TenantCtx;

/// Numbers to search: about half a second to a second in a phone's browser.
const MAX_NUMBER: u64 = 50_000;
/// How long a challenge may be answered.
const VALID_MINUTES: i64 = 10;
/// Submissions a minute to one form above which proof of work switches itself on
/// (the default of `RateLimits::pow_spike_per_minute`; 0 turns the switch off).
pub const SPIKE_PER_MINUTE: u32 = 120;
static SPIKE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(SPIKE_PER_MINUTE);

/// Sets the spike threshold (from the settings, when the front tier starts).
pub fn set_spike_per_minute(n: u32) {
    SPIKE.store(n, std::sync::atomic::Ordering::Relaxed);
}
const SPIKE_HOLD: Duration = Duration::from_secs(600);

fn key(ctx: &TenantCtx) -> String {
    hex::encode(ctx.cipher().blind_index("pow", "hmac", "altcha-v1"))
}

type Rates = HashMap<(uuid::Uuid, i64), (Instant, u32, Option<Instant>)>;
static RATES: Mutex<Option<Rates>> = Mutex::new(None);

/// Counts an accepted submission; a spike turns proof of work on for a while.
pub fn count_submit(tenant: uuid::Uuid, form: i64) {
    let Ok(mut g) = RATES.lock() else { return };
    let map = g.get_or_insert_with(HashMap::new);
    if map.len() > 20_000 {
        map.clear();
    }
    let now = Instant::now();
    let e = map.entry((tenant, form)).or_insert((now, 0, None));
    if now.duration_since(e.0) > Duration::from_secs(60) {
        *e = (now, 0, e.2);
    }
    e.1 += 1;
    let limit = SPIKE.load(std::sync::atomic::Ordering::Relaxed);
    if limit > 0 && e.1 > limit {
        e.2 = Some(now);
    }
}

fn spiking(tenant: uuid::Uuid, form: i64) -> bool {
    RATES
        .lock()
        .ok()
        .and_then(|g| g.as_ref()?.get(&(tenant, form)).and_then(|e| e.2))
        .is_some_and(|since| since.elapsed() < SPIKE_HOLD)
}

/// Whether this form's final submit needs a solution now.
pub fn required(ctx: &TenantCtx, form_id: i64, always: bool) -> bool {
    always || spiking(ctx.id, form_id)
}

/// A challenge for a page whose form needs a solution now ([`required`]), if it does.
pub fn challenge_if_required(
    ctx: &TenantCtx,
    form_id: i64,
    always: bool,
) -> Result<Option<String>, AppError> {
    if required(ctx, form_id, always) {
        challenge(ctx).map(Some)
    } else {
        Ok(None)
    }
}

/// A signed challenge (JSON) for the confirmation page.
pub fn challenge(ctx: &TenantCtx) -> Result<String, AppError> {
    let key = key(ctx);
    let c = altcha_lib_rs::create_challenge(altcha_lib_rs::ChallengeOptions {
        hmac_key: &key,
        max_number: Some(MAX_NUMBER),
        expires: Some(chrono::Utc::now() + chrono::Duration::minutes(VALID_MINUTES)),
        ..Default::default()
    })
    .map_err(|e| AppError::Internal(anyhow::anyhow!("proof-of-work challenge: {e:?}")))?;
    serde_json::to_string(&c).map_err(|e| AppError::Internal(e.into()))
}

fn refused() -> AppError {
    AppError::BadRequest(
        "送信前の自動確認ができませんでした。JavaScript を有効にして、確認画面からもう一度「送信する」を押してください。".into(),
    )
}

/// Checks a solution (base64 JSON, as the page sends it) and records it as used.
/// Whether a solution (valid or not) names a salt already spent: the mark of a second
/// send of one solution.
pub async fn already_used(db: &tokio_postgres::Client, solution: &str) -> Result<bool, AppError> {
    let Some(payload) = base64::engine::general_purpose::STANDARD
        .decode(solution.trim())
        .ok()
        .and_then(|b| serde_json::from_slice::<altcha_lib_rs::Payload>(&b).ok())
    else {
        return Ok(false);
    };
    Ok(db
        .query_opt("SELECT 1 FROM pow_used WHERE salt = $1", &[&payload.salt])
        .await?
        .is_some())
}

pub async fn check(
    ctx: &TenantCtx,
    db: &tokio_postgres::Client,
    solution: &str,
) -> Result<(), AppError> {
    let payload: altcha_lib_rs::Payload = base64::engine::general_purpose::STANDARD
        .decode(solution.trim())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(refused)?;
    if payload.salt.len() > 512 {
        return Err(refused());
    }
    altcha_lib_rs::verify_solution(&payload, &key(ctx), true).map_err(|_| refused())?;
    let fresh = db
        .execute(
            "INSERT INTO pow_used (salt, expires_at) VALUES ($1, now() + make_interval(mins => $2)) ON CONFLICT DO NOTHING",
            &[&payload.salt, &(VALID_MINUTES as i32 + 5)],
        )
        .await?;
    if fresh == 0 {
        return Err(refused());
    }
    // Now and then, forget solutions that can no longer be replayed anyway.
    if rand::random::<u8>() == 0 {
        db.execute("DELETE FROM pow_used WHERE expires_at < now()", &[])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_switches_proof_of_work_on_for_that_form_only() {
        let (tenant, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for _ in 0..SPIKE_PER_MINUTE {
            count_submit(tenant, 1);
        }
        assert!(!spiking(tenant, 1), "at the threshold: still off");
        count_submit(tenant, 1);
        assert!(spiking(tenant, 1));
        assert!(!spiking(tenant, 2), "another form");
        assert!(!spiking(other, 1), "another tenant");
    }
}
