//! The last minute of traffic per tenant (request rate, error rate, p99) for the ops
//! console, kept in six ten-second slots. Prometheus keeps the long history; this is
//! what an operator sees at a glance without one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SLOTS: usize = 6;
const SLOT_SECS: u64 = 10;
/// Upper bounds of the latency buckets, in milliseconds (the last is "slower").
const BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3000, 5000, 10000,
];

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    count: u64,
    errors: u64,
    buckets: [u64; BOUNDS_MS.len() + 1],
}

/// What the console shows for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub requests_per_sec: f64,
    /// Share of 5xx answers, 0.0–1.0.
    pub error_rate: f64,
    /// Upper bound of the bucket holding the 99th percentile; `None` without traffic.
    pub p99: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Recent {
    tenants: Mutex<HashMap<String, [Slot; SLOTS]>>,
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / SLOT_SECS)
}

impl Recent {
    /// One answer: whether it was a failure (a 5xx other than a maintenance page),
    /// and how long it took.
    pub fn observe(&self, tenant: &str, failed: bool, elapsed: Duration) {
        self.observe_at(epoch_now(), tenant, failed, elapsed);
    }

    fn observe_at(&self, epoch: u64, tenant: &str, failed: bool, elapsed: Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let b = BOUNDS_MS
            .iter()
            .position(|&bound| ms < bound)
            .unwrap_or(BOUNDS_MS.len());
        let Ok(mut map) = self.tenants.lock() else {
            return;
        };
        let slots = match map.get_mut(tenant) {
            Some(s) => s,
            None => map.entry(tenant.to_owned()).or_default(),
        };
        let slot = &mut slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot.count += 1;
        slot.errors += u64::from(failed);
        slot.buckets[b] += 1;
    }

    pub fn summary(&self, tenant: &str) -> Summary {
        self.summary_at(epoch_now(), tenant)
    }

    fn summary_at(&self, epoch: u64, tenant: &str) -> Summary {
        let Ok(map) = self.tenants.lock() else {
            return Summary::default();
        };
        let Some(slots) = map.get(tenant) else {
            return Summary::default();
        };
        let live = slots
            .iter()
            .filter(|s| s.count > 0 && s.epoch + SLOTS as u64 > epoch && s.epoch <= epoch);
        let (mut count, mut errors) = (0u64, 0u64);
        let mut buckets = [0u64; BOUNDS_MS.len() + 1];
        for s in live {
            count += s.count;
            errors += s.errors;
            for (t, v) in buckets.iter_mut().zip(s.buckets) {
                *t += v;
            }
        }
        if count == 0 {
            return Summary::default();
        }
        let want = count - count / 100;
        let mut seen = 0;
        let mut p99 = None;
        for (i, n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                p99 = Some(Duration::from_millis(
                    BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX / 1000),
                ));
                break;
            }
        }
        Summary {
            requests_per_sec: count as f64 / (SLOTS as u64 * SLOT_SECS) as f64,
            error_rate: errors as f64 / count as f64,
            p99,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_rates_errors_and_p99() {
        let r = Recent::default();
        for i in 0..600u64 {
            // 1 % take 800 ms, 2 % fail, the rest take 3 ms.
            let (status, ms) = match i % 100 {
                0 => (200, 800),
                1 | 2 => (503, 3),
                _ => (200, 3),
            };
            r.observe_at(100 + i / 100, "a", status >= 500, Duration::from_millis(ms));
        }
        let s = r.summary_at(105, "a");
        assert!((s.requests_per_sec - 10.0).abs() < 1e-9, "{s:?}");
        assert!((s.error_rate - 0.02).abs() < 1e-9, "{s:?}");
        assert_eq!(s.p99, Some(Duration::from_millis(5)));
        // With 2 % slow, the p99 is in the slow bucket.
        r.observe_at(105, "a", false, Duration::from_millis(800));
        for _ in 0..10 {
            r.observe_at(105, "a", false, Duration::from_millis(800));
        }
        assert_eq!(
            r.summary_at(105, "a").p99,
            Some(Duration::from_millis(1000))
        );
        // A minute later the old slots no longer count; other tenants are separate.
        assert_eq!(r.summary_at(112, "a"), Summary::default());
        assert_eq!(r.summary_at(105, "b"), Summary::default());
    }
}
