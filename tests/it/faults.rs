//! Faults lose nothing acknowledged: PostgreSQL restarted under load (the service
//! recovers by itself, `/readyz` shows the outage, requests meanwhile get 503), the
//! service killed with SIGKILL and started again (clients retrying with the same
//! idempotency keys get exactly one submission each), SIGTERM draining a request in
//! flight, and a read-only tenant database answering 503 with an alert metric.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{madoguchi, Serving, StateDir};

const FORM: &str = r#"{ "format": "madoguchi.form/1", "title": "犬の登録", "pages": [ { "id": "p1", "fields": [
    { "id": "owner", "type": "name", "label": "飼い主", "required": true },
    { "id": "email", "type": "email", "label": "メールアドレス", "required": true }
] } ] }"#;
const HOST: &str = "faults.test";

fn body(key: uuid::Uuid) -> serde_json::Value {
    json!({ "idempotency_key": key, "answers": {
        "owner.family": "障害", "owner.given": "試験", "owner.family_kana": "ショウガイ", "owner.given_kana": "シケン",
        "email": "fault@example.jp" } })
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    acked: HashSet<uuid::Uuid>,
    statuses: HashMap<u16, u32>,
    transport_errors: u32,
}

/// Sends submissions one after another, each retried with its key until
/// acknowledged (201, or 200 "already submitted"): `n` of them, and more until
/// `until` turns true.
async fn submit_all(
    addr: Arc<Mutex<String>>,
    form: String,
    token: String,
    n: usize,
    until: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut sent = 0;
    while sent < n || !until.load(Ordering::SeqCst) {
        sent += 1;
        let key = uuid::Uuid::new_v4();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(
                Instant::now() < deadline,
                "submission {key} never acknowledged"
            );
            let url = format!(
                "http://{}/api/v1/forms/{form}/submissions",
                addr.lock().unwrap()
            );
            let r = c
                .post(url)
                .header("host", HOST)
                .bearer_auth(&token)
                .json(&body(key))
                .send()
                .await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    *seen.lock().unwrap().statuses.entry(status).or_default() += 1;
                    if status == 201 || status == 200 {
                        seen.lock().unwrap().acked.insert(key);
                        break;
                    }
                }
                Err(_) => seen.lock().unwrap().transport_errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pg_ctl(dir: &std::path::Path, args: &[&str]) {
    let bin = madoguchi::embedded_pg::find_bin_dir().unwrap();
    // The server's output goes to its log file: a pipe would be held open by the
    // postmaster and never reach its end.
    let status = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("pg_ctl"))
        .args(args)
        .arg("-l")
        .arg(dir.join("pg/server.log"))
        .arg("-D")
        .arg(dir.join("pg/data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {args:?} failed");
}

async fn tenant_db(dir: &std::path::Path) -> tokio_postgres::Client {
    let (ok, url, err) = madoguchi(dir, &["db", "url", "--reason", "試験"]);
    assert!(ok, "{err}");
    let (ok, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    assert!(ok);
    let tenants: serde_json::Value = serde_json::from_str(&list).unwrap();
    let db = tenants[0]["database"].as_str().unwrap().to_owned();
    let mut cfg: tokio_postgres::Config = url.trim().parse().unwrap();
    cfg.dbname(&db);
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_kills_lose_no_acknowledged_submission() {
    let state = StateDir::new();
    let dir = state.0.clone();
    let form_file = dir.join("form.json");
    std::fs::write(&form_file, FORM).unwrap();
    let run = |args: &[&str]| {
        let (ok, out, err) = madoguchi(&dir, args);
        assert!(ok, "{args:?}: {err}");
        out.trim().to_owned()
    };
    run(&[
        "tenant",
        "create",
        "--slug",
        "faults",
        "--name",
        "千代田区",
        "--code",
        "131016",
        "--host",
        HOST,
    ]);
    let path = run(&[
        "tenant",
        "import-form",
        "faults",
        form_file.to_str().unwrap(),
        "--publish",
    ]);
    let form = path.trim_start_matches("/f/").to_owned();
    let token = run(&[
        "tenant",
        "api-token",
        "faults",
        "--name",
        "faults",
        "--scopes",
        "submissions:submit",
    ]);

    let serving = Serving::start(&dir, &["serve", "--backup-interval-hours", "0"]);
    let addr = Arc::new(Mutex::new(serving.public.clone()));
    let seen = Arc::new(Mutex::new(Seen::default()));

    // 1. PostgreSQL restarts while submissions are being sent (they go on until it
    // is back: on a busy machine, a fixed number could all be sent before it stops).
    let restarted = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(submit_all(
        Arc::clone(&addr),
        form.clone(),
        token.clone(),
        60,
        Arc::clone(&restarted),
        Arc::clone(&seen),
    ));
    while seen.lock().unwrap().acked.len() < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_url = format!("http://{}/readyz", serving.ops);
    let readiness = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let mut seen: Vec<u16> = Vec::new();
        // 8 s at least, then until it answers 200 again (a slow restart, a loaded
        // machine), up to a minute.
        let until = Instant::now() + Duration::from_secs(8);
        let latest = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until || (Instant::now() < latest && seen.last() != Some(&200)) {
            if let Ok(r) = c
                .get(&ready_url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                seen.push(r.status().as_u16());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `restart` keeps the options the cluster was started with (socket, port).
    pg_ctl(&dir, &["restart", "-m", "fast", "-w"]);
    restarted.store(true, Ordering::SeqCst);
    clients.await.unwrap();
    let ready = readiness.await.unwrap();
    assert!(
        ready.contains(&503),
        "/readyz never showed the outage: {ready:?}"
    );
    assert_eq!(
        ready.last(),
        Some(&200),
        "/readyz did not recover: {ready:?}"
    );
    {
        let s = seen.lock().unwrap();
        assert!(s.acked.len() >= 60, "{}", s.acked.len());
        assert!(
            s.statuses.get(&503).copied().unwrap_or(0) > 0,
            "no request saw the outage: {:?}",
            s.statuses
        );
        assert_eq!(
            s.statuses.get(&500),
            None,
            "a 500 during the outage: {:?}",
            s.statuses
        );
        assert_eq!(s.transport_errors, 0, "the service itself stayed up");
    }

    // 2. SIGKILL under load, then a new process on the same state directory.
    let before = seen.lock().unwrap().acked.len();
    let clients = tokio::spawn(submit_all(
        Arc::clone(&addr),
        form.clone(),
        token.clone(),
        40,
        Arc::new(AtomicBool::new(true)),
        Arc::clone(&seen),
    ));
    while seen.lock().unwrap().acked.len() < before + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = serving;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serving = Serving::start(&dir, &["serve", "--backup-interval-hours", "0"]);
    *addr.lock().unwrap() = serving.public.clone();
    clients.await.unwrap();
    assert_eq!(seen.lock().unwrap().acked.len(), before + 40);

    // Exactly one row per acknowledged key, and nothing else.
    let db = tenant_db(&dir).await;
    let rows = db
        .query(
            "SELECT idempotency_key, count(*) FROM submissions GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let stored: HashMap<uuid::Uuid, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let acked = seen.lock().unwrap().acked.clone();
    assert!(stored.values().all(|&n| n == 1), "a key stored twice");
    assert_eq!(
        stored.keys().copied().collect::<HashSet<_>>(),
        acked,
        "stored and acknowledged submissions differ"
    );

    // 3. A read-only tenant database: 503 and the alert metric, not 500.
    let (_, list, _) = madoguchi(&dir, &["tenant", "list", "--json"]);
    let tenants: serde_json::Value = serde_json::from_str(&list).unwrap();
    let tdb = tenants[0]["database"].as_str().unwrap().to_owned();
    db.batch_execute(&format!(
        "ALTER DATABASE \"{tdb}\" SET default_transaction_read_only = on"
    ))
    .await
    .unwrap();
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&tdb],
    )
    .await
    .unwrap();
    let c = reqwest::Client::new();
    let mut last = 0;
    for _ in 0..20 {
        let r = c
            .post(format!(
                "http://{}/api/v1/forms/{form}/submissions",
                serving.public
            ))
            .header("host", HOST)
            .bearer_auth(&token)
            .json(&body(uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        assert_ne!(last, 500);
        if last == 503 {
            assert!(r.headers().get("retry-after").is_some());
            // A connection the termination cut may answer first (503 as well, as
            // unreachable); the read-only refusal follows on a fresh connection.
            let metrics = crate::harness::ops_metrics(&serving.ops).await;
            if metrics.contains("madoguchi_db_errors_total{reason=\"read_only\"}") {
                break;
            }
        }
    }
    assert_eq!(
        last, 503,
        "a read-only database was not reported as unavailable"
    );
    let metrics = crate::harness::ops_metrics(&serving.ops).await;
    assert!(
        metrics.contains("madoguchi_db_errors_total{reason=\"read_only\"}"),
        "{metrics}"
    );
    db.batch_execute(&format!(
        "ALTER DATABASE \"{tdb}\" RESET default_transaction_read_only"
    ))
    .await
    .unwrap();

    // 4. SIGTERM while a request is half sent: it is finished, then the process exits.
    let mut sock = std::net::TcpStream::connect(&serving.public).unwrap();
    let payload = body(uuid::Uuid::new_v4()).to_string();
    let head = format!(
        "POST /api/v1/forms/{form}/submissions HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&payload.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = serving.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    sock.write_all(&payload.as_bytes()[10..]).unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let mut serving = serving;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(state);
}

/// A full disk under a tenant's tables: 503 with `Retry-After` and the alert metric,
/// never 500, and nothing half-stored. (The tables are moved to a tablespace on a
/// small tmpfs, which needs root to mount; other users skip this one test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_counts() {
    use crate::harness::{admin_client, unique, TestEnv};
    // /proc/self belongs to the process's effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("full"), "千代田区", "131016").await;
    let public =
        madoguchi::control::tenant_admin::import_form(&env.platform, &t, FORM, "総務課", true)
            .await
            .unwrap();
    let form = public.trim_start_matches("/f/").to_owned();
    let token = madoguchi::control::tenant_admin::api_token(
        &env.platform,
        &t,
        "disk",
        &["submissions:submit".to_owned()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mount = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap()
            .success()
    };
    let path = dir.path().to_str().unwrap().to_owned();
    assert!(
        mount(&["mount", "-t", "tmpfs", "-o", "size=6M", "tmpfs", &path]),
        "mount"
    );
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(path.clone());
    // The cluster runs as postgres when started by root.
    let _ = std::process::Command::new("chown")
        .args(["postgres:postgres", &path])
        .status();
    let space = unique("full_");
    let maintenance = admin_client("postgres").await;
    maintenance
        .batch_execute(&format!("CREATE TABLESPACE {space} LOCATION '{path}'"))
        .await
        .unwrap();
    let db = admin_client(&t.database).await;
    db.batch_execute(&format!(
        "ALTER TABLE submissions SET TABLESPACE {space}; CREATE TABLE filler (b text) TABLESPACE {space}; ALTER TABLE filler ALTER COLUMN b SET STORAGE EXTERNAL"
    ))
    .await
    .unwrap();
    // Fill the disk.
    let mut full = false;
    for _ in 0..400 {
        if let Err(e) = db
            .execute(
                "INSERT INTO filler SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2000)",
                &[],
            )
            .await
        {
            assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::DISK_FULL), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the tablespace never filled up");

    let server = env.serve().await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!(
            "http://{}/api/v1/forms/{form}/submissions",
            server.bound.public
        ))
        .header("host", &t.hosts[0])
        .bearer_auth(&token)
        .json(&body(uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    assert!(r.headers().get("retry-after").is_some());
    let metrics = crate::harness::ops_metrics(server.bound.ops).await;
    assert!(
        metrics.contains("madoguchi_db_errors_total{reason=\"disk_full_or_resources\"}"),
        "{metrics}"
    );
    server.shutdown().await;
    let n: i64 = db
        .query_one("SELECT count(*) FROM submissions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing half-stored");
    db.batch_execute("DROP TABLE filler; ALTER TABLE submissions SET TABLESPACE pg_default")
        .await
        .unwrap();
    drop(db);
    let _ = maintenance
        .batch_execute(&format!("DROP TABLESPACE {space}"))
        .await;
}

/// A query asking for the wrong thing (a row that is not there) is this code's fault:
/// a 500, not "database unavailable", and the tenant's pool is not closed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_mistake_is_not_taken_for_a_database_outage() {
    use madoguchi::error::{AppError, DB_TROUBLE};
    let client = crate::harness::admin_client("postgres").await;
    let (mistake, trouble) = DB_TROUBLE
        .scope(std::cell::Cell::new(false), async {
            let e = client
                .query_one("SELECT 1 WHERE false", &[])
                .await
                .unwrap_err();
            let mistake = AppError::from(e);
            (mistake, DB_TROUBLE.with(std::cell::Cell::get))
        })
        .await;
    assert!(matches!(mistake, AppError::Internal(_)), "{mistake:?}");
    assert!(!trouble, "the pool would be closed for a caller's mistake");
    // A connection that is gone is still an outage.
    let gone = crate::harness::admin_client("postgres").await;
    let pid: i32 = gone
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (outage, trouble) = DB_TROUBLE
        .scope(std::cell::Cell::new(false), async {
            let e = gone.query_one("SELECT 1", &[]).await.unwrap_err();
            (AppError::from(e), DB_TROUBLE.with(std::cell::Cell::get))
        })
        .await;
    assert!(matches!(outage, AppError::Unavailable { .. }), "{outage:?}");
    assert!(trouble);
}
