//! Load generator for the citizen submit path: each worker plays a citizen who opens
//! a form, sends its one page, and submits from the 確認画面, as fast as it can.
//! Prints one JSON line of figures. Used by `ops/bench/run`; not part of the product.
//!
//! cargo run --release --example loadgen -- URL HOST SECONDS CONCURRENCY FIELDS...
//! where each FIELD is `name=value` (the form's inputs for its one page). URL and
//! HOST may be comma-separated lists of the same length (one form per tenant), or
//! `@FILE` with one item per line: worker i then plays citizens of tenants i,
//! i + CONCURRENCY, i + 2 × CONCURRENCY … (mod their number) in turn.
//!
//! cargo run --release --example loadgen -- api URL HOST TOKEN SECONDS CONCURRENCY FIELDS...
//! submits through the integration API instead: one POST of the answers as JSON
//! (bearer TOKEN, a fresh idempotency key each) per submission, as fast as answered.
//! URL is the form's `/api/v1/forms/{id}/submissions`; URL, HOST and TOKEN may be
//! lists of the same length, as above.
//!
//! cargo run --release --example loadgen -- paced URL HOST SECONDS RATE
//! plays a quiet tenant's visitors instead: GETs at a steady RATE per second, each
//! sent on schedule whether or not earlier ones have been answered (open loop, one
//! task per request). Latency is counted twice: from the moment the request was due
//! (`p50_ms`, `p99_ms`), which also counts how late this program's own timer woke
//! (tokio's timer has millisecond resolution, and on a busy machine the sender waits
//! for a core too), and from the moment it was handed to the HTTP client
//! (`sent_p50_ms`, `sent_p99_ms`): the server, the network and reading the answer.
//! With `PACED_TRACE=FILE` set, each request is also written to FILE as a line
//! "seconds-after-start from-due-ms from-sent-ms ok", to find when slow ones happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Timings {
    get: Vec<f64>,
    page: Vec<f64>,
    submit: Vec<f64>,
    errors: u64,
}

async fn citizen(
    client: &reqwest::Client,
    url: &str,
    host: &str,
    fields: &[(String, String)],
    t: &mut Timings,
) -> Option<()> {
    let started = Instant::now();
    let resp = client.get(url).header("host", host).send().await.ok()?;
    let cookie = resp
        .headers()
        .get("set-cookie")?
        .to_str()
        .ok()?
        .split(';')
        .next()?
        .to_owned();
    let body = resp.text().await.ok()?;
    let token = body
        .split("name=\"_token\" value=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_owned();
    t.get.push(started.elapsed().as_secs_f64());

    let mut form = vec![
        ("_token".to_owned(), token.clone()),
        ("_page".to_owned(), "0".to_owned()),
        ("_nav".to_owned(), "next".to_owned()),
    ];
    form.extend(fields.iter().cloned());
    let started = Instant::now();
    let resp = client
        .post(url)
        .header("host", host)
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .ok()?;
    if resp.status().as_u16() != 303 {
        return None;
    }
    t.page.push(started.elapsed().as_secs_f64());

    let started = Instant::now();
    let resp = client
        .post(format!("{url}/submit"))
        .header("host", host)
        .header("cookie", &cookie)
        .form(&[("_token", token.as_str())])
        .send()
        .await
        .ok()?;
    if resp.status().as_u16() != 303 {
        return None;
    }
    t.submit.push(started.elapsed().as_secs_f64());
    Some(())
}

/// One submission through the integration API: Some(()) when it was stored (201).
async fn api_submission(
    client: &reqwest::Client,
    url: &str,
    host: &str,
    token: &str,
    body: &serde_json::Value,
    t: &mut Timings,
) -> Option<()> {
    let mut body = body.clone();
    body["idempotency_key"] = serde_json::Value::String(uuid::Uuid::new_v4().to_string());
    let started = Instant::now();
    let resp = client
        .post(url)
        .header("host", host)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()?;
    let created = resp.status().as_u16() == 201;
    resp.bytes().await.ok()?;
    if !created {
        return None;
    }
    t.submit.push(started.elapsed().as_secs_f64());
    Some(())
}

async fn paced(args: &[String]) {
    let [url, host, seconds, rate] = [0, 1, 2, 3].map(|i| args.get(i).cloned().unwrap_or_default());
    let seconds: f64 = seconds.parse().unwrap_or(10.0);
    let rate: f64 = rate.parse().unwrap_or(50.0);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_default();
    let total = (seconds * rate) as u64;
    let every = Duration::from_secs_f64(1.0 / rate);
    // Connections are opened before the clock starts: a new client's first requests
    // would otherwise each wait for a TCP handshake and count among the slowest.
    for _ in 0..2 {
        let warm: Vec<_> = (0..8)
            .map(|_| {
                let request = client.get(&url).header("host", host.clone());
                tokio::spawn(async move {
                    if let Ok(r) = request.send().await {
                        let _ = r.bytes().await;
                    }
                })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }
    }
    let started = tokio::time::Instant::now();
    let mut sent = Vec::new();
    for i in 0..total {
        let due = started + every * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        let (client, url, host) = (client.clone(), url.clone(), host.clone());
        sent.push(tokio::spawn(async move {
            let at = tokio::time::Instant::now();
            let ok = match client.get(&url).header("host", host).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (due.elapsed().as_secs_f64(), at.elapsed().as_secs_f64(), ok)
        }));
    }
    let mut lat = Vec::new();
    let mut from_sent = Vec::new();
    let mut errors = 0u64;
    let trace_to = std::env::var("PACED_TRACE").ok();
    let mut trace = String::new();
    for (i, s) in sent.into_iter().enumerate() {
        let Ok((t, u, ok)) = s.await else {
            errors += 1;
            continue;
        };
        if trace_to.is_some() {
            let at = every.as_secs_f64() * i as f64;
            trace.push_str(&format!(
                "{at:.3} {:.3} {:.3} {ok}\n",
                t * 1000.0,
                u * 1000.0
            ));
        }
        if ok {
            lat.push(t);
            from_sent.push(u);
        } else {
            errors += 1;
        }
    }
    if let Some(path) = trace_to {
        if let Err(e) = std::fs::write(&path, trace) {
            eprintln!("{path}: {e}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    from_sent.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{{\"requests_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"sent_p50_ms\":{:.2},\"sent_p99_ms\":{:.2},\"errors\":{errors}}}",
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5) * 1000.0,
        percentile(&lat, 0.99) * 1000.0,
        percentile(&from_sent, 0.5) * 1000.0,
        percentile(&from_sent, 0.99) * 1000.0,
    );
}

/// A comma-separated list given in place, or `@FILE`: one item per line (for
/// thousands of tenants, past what one argument may hold).
fn list(arg: &str) -> String {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(","),
        None => arg.to_owned(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("paced") {
        paced(&args[1..]).await;
        return;
    }
    let api = args.first().map(String::as_str) == Some("api");
    let args = if api { &args[1..] } else { &args[..] };
    let (tokens, args) = if api {
        let mut rest = args.to_vec();
        let tokens = if rest.len() > 2 {
            rest.remove(2)
        } else {
            String::new()
        };
        (tokens, rest)
    } else {
        (String::new(), args.to_vec())
    };
    let [url, host, seconds, concurrency] =
        [0, 1, 2, 3].map(|i| args.get(i).cloned().unwrap_or_default());
    let seconds: u64 = seconds.parse().unwrap_or(10);
    let concurrency: usize = concurrency.parse().unwrap_or(16);
    let fields: Vec<(String, String)> = args
        .iter()
        .skip(4)
        .filter_map(|f| f.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    let (url, host, tokens) = (list(&url), list(&host), list(&tokens));
    let urls: Arc<Vec<String>> = Arc::new(url.split(',').map(str::to_owned).collect());
    let hosts: Arc<Vec<String>> = Arc::new(host.split(',').map(str::to_owned).collect());
    let tokens: Arc<Vec<String>> = Arc::new(tokens.split(',').map(str::to_owned).collect());
    let answers: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let body = serde_json::json!({ "answers": answers });
    for i in 0..concurrency {
        let (client, urls, hosts, tokens, fields, body, stop) = (
            client.clone(),
            Arc::clone(&urls),
            Arc::clone(&hosts),
            Arc::clone(&tokens),
            fields.clone(),
            body.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut t = Timings {
                get: Vec::new(),
                page: Vec::new(),
                submit: Vec::new(),
                errors: 0,
            };
            // Worker i takes tenants i, i + concurrency, i + 2 × concurrency … in
            // turn, so that every tenant gets flows however many there are.
            let mut next = i;
            while !stop.load(Ordering::Relaxed) {
                let tenant = next % urls.len();
                next += concurrency;
                let (url, host) = (&urls[tenant], &hosts[tenant % hosts.len()]);
                let done = if api {
                    let token = &tokens[tenant % tokens.len()];
                    api_submission(&client, url, host, token, &body, &mut t).await
                } else {
                    citizen(&client, url, host, &fields, &mut t).await
                };
                if done.is_none() {
                    t.errors += 1;
                }
            }
            t
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Timings {
        get: Vec::new(),
        page: Vec::new(),
        submit: Vec::new(),
        errors: 0,
    };
    for w in workers {
        if let Ok(t) = w.await {
            all.get.extend(t.get);
            all.page.extend(t.page);
            all.submit.extend(t.submit);
            all.errors += t.errors;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for v in [&mut all.get, &mut all.page, &mut all.submit] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1000.0;
    println!(
        "{{\"submissions\":{},\"seconds\":{elapsed:.2},\"submissions_per_s\":{:.1},\"requests_per_s\":{:.1},\"errors\":{},\
\"get_p50_ms\":{:.2},\"get_p99_ms\":{:.2},\"page_p50_ms\":{:.2},\"page_p99_ms\":{:.2},\"submit_p50_ms\":{:.2},\"submit_p99_ms\":{:.2},\"submit_p999_ms\":{:.2}}}",
        all.submit.len(),
        all.submit.len() as f64 / elapsed,
        (all.get.len() + all.page.len() + all.submit.len()) as f64 / elapsed,
        all.errors,
        ms(&all.get, 0.5),
        ms(&all.get, 0.99),
        ms(&all.page, 0.5),
        ms(&all.page, 0.99),
        ms(&all.submit, 0.5),
        ms(&all.submit, 0.99),
        ms(&all.submit, 0.999),
    );
}
