//! The `madoguchi` binary as an operator uses it: its own embedded cluster under a
//! state directory, commands while `serve` runs, and a restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

const BIN: &str = env!("CARGO_BIN_EXE_madoguchi");

pub(crate) struct StateDir(pub(crate) PathBuf);

impl StateDir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::harness::unique("madoguchi-cli-"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // Stop the embedded cluster if a failed test left it running.
        if self.0.join("pg/data/postmaster.pid").exists() {
            let bin = madoguchi::embedded_pg::find_bin_dir().unwrap();
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.0.join("pg/data"))
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn madoguchi(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("MADOGUCHI_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `db psql -At -c SQL` on the catalog.
fn psql(dir: &Path, sql: &str) -> (bool, String, String) {
    madoguchi(
        dir,
        &["db", "psql", "--reason", "試験", "--", "-At", "-c", sql],
    )
}

/// `db psql -At` on one tenant's database (`\c` to it from the catalog).
fn tenant_sql(dir: &Path, database: &str, sql: &str) -> (bool, String, String) {
    let connect = format!("\\c \"{database}\"");
    madoguchi(
        dir,
        &[
            "db", "psql", "--reason", "試験", "--", "-At", "-c", &connect, "-c", sql,
        ],
    )
}

/// `tenant create` from the command line; the test stops if it fails.
fn create_tenant(dir: &Path, slug: &str, name: &str, code: &str, host: &str) {
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "tenant", "create", "--slug", slug, "--name", name, "--code", code, "--host", host,
        ],
    );
    assert!(ok, "{out}{err}");
}

pub(crate) struct Serving {
    pub(crate) child: Child,
    pub(crate) public: String,
    pub(crate) ops: String,
    /// What it printed up to `ready`.
    pub(crate) printed: Vec<String>,
}

/// A failed test must not leave the service running.
impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Serving {
    pub(crate) fn start(state: &Path, sub: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("--state-dir")
            .arg(state)
            .args(sub)
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .env_remove("MADOGUCHI_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut public = String::new();
        let mut ops = String::new();
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(addr) = line.strip_prefix("listening: http://") {
                public = addr.to_owned();
            }
            if let Some(addr) = line.strip_prefix("ops: http://") {
                ops = addr.to_owned();
            }
            let done = line.starts_with("ready");
            seen.push(line);
            if done {
                break;
            }
        }
        assert!(!public.is_empty(), "serve printed no address: {seen:?}");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            public,
            ops,
            printed: seen,
        }
    }

    fn get(&self, host: &str) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://{}/", self.public))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    }

    /// A page's text.
    fn body(&self, host: &str, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-s", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://{}{path}", self.public))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, host: &str, status: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.get(host);
            if got == status || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A command run without the settings of a deployment on an external database (its
/// state directory holds the master key) stops, rather than making an empty private
/// cluster there that shows no tenants and would take new ones.
#[test]
fn a_command_without_the_external_databases_settings_makes_no_cluster() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    std::fs::write(dir.join("master.key"), [7u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (ok, out, err) = madoguchi(dir, &["tenant", "list"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("no private PostgreSQL cluster") && err.contains("database_url"),
        "{err}"
    );
    assert!(!dir.join("pg").exists(), "a cluster was made");
}

/// The demo, without a relay, writes its mail to `STATE_DIR/mail` (readable by this
/// user only) and so offers what needs mail; a relay and a directory at once are
/// refused.
#[test]
fn the_demo_writes_its_mail_to_files() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    let elsewhere = dir.join("elsewhere");
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "--smtp-url",
            "smtp://127.0.0.1:2525",
            "--mail-from",
            "noreply@city.example.jp",
            "--mail-dir",
            elsewhere.to_str().unwrap(),
            "tenant",
            "list",
        ],
    );
    assert!(!ok && err.contains("not both"), "{err}");
    let serving = Serving::start(dir, &["demo", "--backup-interval-hours", "0"]);
    let mail = dir.join("mail");
    assert!(
        serving
            .printed
            .iter()
            .any(|l| l.starts_with(&format!("mail: written to {} ", mail.display()))),
        "{:?}",
        serving.printed
    );
    let mode = std::fs::metadata(&mail)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o700));
    let page = serving.body("chiyoda.localhost", "/my");
    assert!(page.contains("リンクを受け取る"), "{page}");
    serving.stop();
}

#[test]
fn serve_restart_and_commands_on_the_same_state_dir() {
    let state = StateDir::new();
    let dir = state.0.as_path();

    // A command on a fresh state dir makes everything, and leaves no cluster running.
    create_tenant(dir, "chiyoda", "千代田区", "131016", "chiyoda.localhost");
    assert!(
        !dir.join("pg/data/postmaster.pid").exists(),
        "the command left the cluster running"
    );
    let key_mode = std::fs::metadata(dir.join("master.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(key_mode.ok(), Some(0o600));
    let conf = std::fs::read_to_string(dir.join("pg/data/pg_hba.conf")).unwrap();
    assert!(
        !conf
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("trust")),
        "trust auth in pg_hba.conf"
    );

    // The help desk, from the settings file (at most 1,000 characters).
    let toml = dir.join("madoguchi.toml");
    let mut conf = std::fs::read_to_string(&toml).unwrap_or_default();
    conf.push_str(
        "helpdesk = \"窓口ヘルプデスク 電話 03-0000-9999\\n平日 9:00〜17:00（年末年始を除く）\"\n",
    );
    std::fs::write(&toml, conf).unwrap();
    let (ok, _, err) = madoguchi(dir, &["--helpdesk", &"あ".repeat(1001), "tenant", "list"]);
    assert!(!ok && err.contains("at most 1,000 characters"), "{err}");

    let serving = Serving::start(dir, &["serve"]);
    assert_eq!(serving.get("chiyoda.localhost"), 200);
    assert_eq!(serving.get("sapporo.localhost"), 404);
    let manual = serving.body("chiyoda.localhost", "/admin/help");
    assert!(
        manual.contains(
            "<p id=\"helpdesk-text\">窓口ヘルプデスク 電話 03-0000-9999<br/>平日 9:00〜17:00（年末年始を除く）</p>"
        ),
        "{manual}"
    );

    // Commands work while serve runs; changes reach it without a restart.
    create_tenant(dir, "sapporo", "札幌市", "011002", "sapporo.localhost");
    assert_eq!(serving.wait_for("sapporo.localhost", 200), 200);
    let (ok, _, _) = madoguchi(dir, &["tenant", "suspend", "sapporo"]);
    assert!(ok);
    assert_eq!(serving.wait_for("sapporo.localhost", 503), 503);
    assert!(
        dir.join("pg/data/postmaster.pid").exists(),
        "a command stopped the cluster serve uses"
    );

    let (ok, out, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["slug"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("chiyoda", "active"), ("sapporo", "suspended")]);
    for field in ["name", "code", "hosts", "database", "schema_version"] {
        assert!(!list[0][field].is_null(), "tenant list lacks {field}");
    }

    // `db url` gives a URL psql can use.
    let (ok, url, _) = madoguchi(dir, &["db", "url", "--reason", "試験"]);
    assert!(ok);
    let out = Command::new("psql")
        .arg(url.trim())
        .args(["-At", "-c", "SELECT count(*) FROM tenants"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `db psql` runs psql with the password in its environment, not its arguments.
    let (ok, out, err) = psql(dir, "SELECT count(*) FROM tenants");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");

    serving.stop();
    assert!(
        !dir.join("pg/data/postmaster.pid").exists(),
        "serve left the cluster running"
    );

    // Second start reuses everything: same tenants, same keys; the embedded cluster
    // takes as many connections as the pool budget asks for, plus the reserve.
    // The help desk given as a flag (`\n` typed for a new line; 1,000 characters is
    // the most) goes before the file's.
    let desk = format!("代表ヘルプデスク\\n{}", "あ".repeat(991));
    assert_eq!(desk.chars().count(), 1001);
    let serving = Serving::start(dir, &["--pool-budget", "300", "--helpdesk", &desk, "serve"]);
    assert_eq!(serving.get("chiyoda.localhost"), 200);
    let manual = serving.body("chiyoda.localhost", "/admin/help");
    assert!(
        manual.contains(&format!(
            "<p id=\"helpdesk-text\">代表ヘルプデスク<br/>{}</p>",
            "あ".repeat(991)
        )),
        "{manual}"
    );
    let out = Command::new("psql")
        .arg(url.trim())
        .args(["-At", "-c", "SHOW max_connections"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (300 + madoguchi::embedded_pg::RESERVED_CONNECTIONS).to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // shared_buffers follows the budget too: half a MiB per connection.
    let out = Command::new("psql")
        .arg(url.trim())
        .args(["-At", "-c", "SHOW shared_buffers"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "150MB");
    assert_eq!(serving.get("sapporo.localhost"), 503);
    // As a final export leaves a tenant whose decommissioning was never signed: its
    // requests may not write. Resuming it lets them again.
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(url.trim())
            .args(["-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let role = psql("SELECT role_name FROM tenants WHERE slug = 'sapporo'");
    psql(&format!(
        "ALTER ROLE \"{role}\" SET default_transaction_read_only = on"
    ));
    // Incident response works on the suspended tenant: its API tokens revoked, a
    // staff account disabled (the last administrator too, with a word on it).
    let token = |network: &str| {
        madoguchi(
            dir,
            &[
                "tenant",
                "api-token",
                "sapporo",
                "--name",
                "基幹連携",
                "--scopes",
                "forms:read",
                "--network",
                network,
            ],
        )
    };
    let (ok, _, err) = token("192.0.2.0/33");
    assert!(
        !ok && err.contains("アドレス範囲の形式が正しくありません: 192.0.2.0/33"),
        "{err}"
    );
    let (ok, _, err) = token("192.0.2.0/24,198.51.100.7");
    assert!(ok, "{err}");
    let (ok, out, err) = madoguchi(dir, &["tenant", "revoke-api-tokens", "sapporo"]);
    assert!(ok && out.trim() == "1", "{out}{err}");
    let (ok, out, _) = madoguchi(dir, &["tenant", "revoke-api-tokens", "sapporo"]);
    assert!(ok && out.trim() == "0", "{out}");
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "tenant",
            "add-staff",
            "sapporo",
            "--email",
            "kanri@city.example.jp",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "tenant",
            "disable-staff",
            "sapporo",
            "--email",
            "kanri@city.example.jp",
        ],
    );
    assert!(ok && out.contains("disabled, sessions ended"), "{out}{err}");
    assert!(err.contains("no administrator left"), "{err}");
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "tenant",
            "disable-staff",
            "sapporo",
            "--email",
            "nobody@city.example.jp",
        ],
    );
    assert!(!ok && err.contains("no staff account"), "{err}");
    // 鍵の更新: only a suspended tenant's, while serve runs.
    let (ok, _, err) = madoguchi(dir, &["tenant", "rotate-data-key", "chiyoda"]);
    assert!(!ok && err.contains("先に一時停止してください"), "{err}");
    let (ok, out, err) = madoguchi(dir, &["tenant", "rotate-data-key", "sapporo"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("new data key version 2\n  catalog backup ")
            && out.contains("resume with: madoguchi tenant resume sapporo"),
        "{out}"
    );
    let (ok, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(
        ok && out.contains("tenant.revoke_api_tokens")
            && out.contains("tenant.disable_staff")
            && out.contains("tenant.rotate_data_key"),
        "{out}"
    );
    let (ok, _, _) = madoguchi(dir, &["tenant", "resume", "sapporo"]);
    assert!(ok);
    assert_eq!(serving.wait_for("sapporo.localhost", 200), 200);
    // Stored files are scanned only with a scanner to scan them with.
    let (ok, _, err) = madoguchi(dir, &["tenant", "scan-files", "--all"]);
    assert!(!ok && err.contains("--clamd"), "{err}");
    // Its metrics speak of a whole run.
    let (ok, _, err) = madoguchi(
        dir,
        &["tenant", "scan-files", "sapporo", "--metrics-dir", "/tmp"],
    );
    assert!(
        !ok && err.contains("--metrics-dir goes with --all"),
        "{err}"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}' AND rolconfig IS NOT NULL"
        )),
        "0"
    );
    // A training site is reset between sessions, printing each seat's setup link;
    // a municipality's own site is not.
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "tenant",
            "create",
            "--slug",
            "kenshu",
            "--name",
            "千代田区（研修用）",
            "--code",
            "131016",
            "--host",
            "kenshu.localhost",
            "--training",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = madoguchi(dir, &["tenant", "training-reset", "kenshu", "--seats", "2"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "trainee02@kenshu.training.invalid\thttp://kenshu.localhost:8080/admin/setup/"
        ),
        "{out}"
    );
    assert!(
        out.contains("form\thttp://kenshu.localhost:8080/f/"),
        "{out}"
    );
    let (ok, _, err) = madoguchi(dir, &["tenant", "training-reset", "chiyoda"]);
    assert!(!ok && err.contains("研修用ではありません"), "{err}");
    let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let training: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap(),
                t["training"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(training.contains(&("kenshu", true)) && training.contains(&("chiyoda", false)));
    serving.stop();
}

#[test]
fn manifests_apply_idempotently_and_migrate_reports() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let file = manifests.join("hakodate.toml");
    std::fs::write(&file, "slug = \"hakodate\"\nname = \"函館市\"\ncode = \"012025\"\nhosts = [\"hakodate.localhost\"]\n").unwrap();
    let path = manifests.to_str().unwrap();
    let (ok, out, err) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok, "{err}");
    assert!(out.starts_with("hakodate: created ("), "{out}");
    let (ok, out, _) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok);
    assert!(out.starts_with("hakodate: unchanged ("), "{out}");
    std::fs::write(&file, "slug = \"hakodate\"\nname = \"函館市\"\ncode = \"012025\"\nhosts = [\"hakodate.localhost\", \"www.hakodate.localhost\"]\n").unwrap();
    let (ok, out, _) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok);
    assert!(out.starts_with("hakodate: updated (hosts:"), "{out}");
    let (ok, out, _) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok);
    assert!(out.starts_with("hakodate: unchanged ("), "{out}");
    // A tenant suspended by hand (an incident, say) stays suspended when the
    // manifests are applied again, unless one says `state = "active"`.
    let (ok, _, _) = madoguchi(dir, &["tenant", "suspend", "hakodate"]);
    assert!(ok);
    let (ok, out, _) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok && out.starts_with("hakodate: unchanged ("), "{out}");
    let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    assert!(list.contains("\"suspended\""), "{list}");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}state = \"active\"\n")).unwrap();
    let (ok, out, _) = madoguchi(dir, &["tenant", "apply", path]);
    assert!(ok && out.contains("state: suspended -> active"), "{out}");

    // A bad manifest says what is wrong, in Japanese first.
    std::fs::write(
        manifests.join("bad.toml"),
        "slug = \"bad\"\nname = \"x\"\ncode = \"123456\"\nhosts = [\"bad.localhost\"]\n",
    )
    .unwrap();
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "tenant",
            "apply",
            manifests.join("bad.toml").to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("地方公共団体コード"), "{err}");

    // The operation log of a new tenant verifies (and the command says so).
    let (ok, out, err) = madoguchi(dir, &["audit", "verify", "hakodate"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("OK:") && out.contains("intact"), "{out}");

    let (ok, out, err) = madoguchi(dir, &["migrate", "--all"]);
    assert!(ok, "{err}");
    assert!(out.contains("tenants migrated: 1"), "{out}");
    let (ok, out, _) = madoguchi(dir, &["migrate", "hakodate"]);
    assert!(ok);
    assert!(out.contains("failed: 0"), "{out}");

    // A rehearsal of a new schema version: a tenant made at the version before the
    // newest, then `migrate --all` applying the newest to it (the benchmark's figure).
    let newest = madoguchi::control::migrate::latest_tenant_version();
    let older = (newest - 1).to_string();
    let otaru = dir.join("otaru.toml");
    std::fs::write(
        &otaru,
        "slug = \"otaru\"\nname = \"小樽市\"\ncode = \"012033\"\nhosts = [\"otaru.localhost\"]\n",
    )
    .unwrap();
    let otaru = otaru.to_str().unwrap();
    for bad in ["0", &(newest + 1).to_string()] {
        let (ok, _, err) = madoguchi(dir, &["tenant", "apply", otaru, "--schema-version", bad]);
        assert!(!ok);
        assert!(err.contains("スキーマのバージョン"), "{err}");
    }
    let (ok, out, err) = madoguchi(dir, &["tenant", "apply", otaru, "--schema-version", &older]);
    assert!(ok, "{err}");
    assert!(out.starts_with("otaru: created ("), "{out}");
    let schema_of = |slug: &str| {
        let (ok, out, _) = madoguchi(dir, &["tenant", "list", "--json"]);
        assert!(ok);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .map(|t| t["schema_version"].as_i64().unwrap())
            .unwrap()
    };
    assert_eq!(schema_of("otaru"), i64::from(newest - 1));
    let otaru_db = {
        let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == "otaru")
            .unwrap()["database"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Forms and contacts made before tenant migration V31 (which keeps the contact
    // with each form): one department wrote its own, the other none (the 代表's); and
    // a published version before V32 (which keeps its title and settings beside it).
    let (ok, _, err) = tenant_sql(
        dir,
        &otaru_db,
        "UPDATE settings SET contact = '代表 0134-00-0001';
         WITH d AS (INSERT INTO departments (name, contact) VALUES ('市民課', '電話 0134-00-0002'), ('観光課', '') RETURNING id, name)
         INSERT INTO forms (public_id, department_id, draft)
         SELECT CASE name WHEN '市民課' THEN 'v31own' ELSE 'v31main' END, id, '{}' FROM d;
         INSERT INTO form_versions (form_id, version, definition)
         SELECT id, 1, '{\"title\": \"住民票の写しの交付申請\", \"settings\": {\"capacity\": 5}}' FROM forms WHERE public_id = 'v31own'",
    );
    assert!(ok, "{err}");
    // Migrating only to that version leaves both where they are: nothing goes back.
    let (ok, out, err) = madoguchi(dir, &["migrate", "--all", "--to", &older]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "tenants migrated: 2 (schema version 1 at {older}, 1 at {newest})"
        )),
        "{out}"
    );
    let (ok, out, err) = madoguchi(dir, &["migrate", "--all"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "tenants migrated: 2 (schema version 2 at {newest}), failed: 0, skipped: 0"
        )),
        "{out}"
    );
    // Tenant migration V30: a municipality that existed before it keeps TOTP required
    // of managers only; one created since starts with it required of all.
    let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    for (slug, made_at) in [("hakodate", newest), ("otaru", newest - 1)] {
        let database = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .unwrap()["database"]
            .as_str()
            .unwrap()
            .to_owned();
        let (ok, out, err) =
            tenant_sql(dir, &database, "SELECT 'rule=' || staff_totp FROM settings");
        assert!(ok, "{err}");
        let wanted = if made_at < 30 { "managers" } else { "all" };
        assert!(out.contains(&format!("rule={wanted}")), "{slug}: {out}");
    }
    let (ok, out, err) = tenant_sql(
        dir,
        &otaru_db,
        "SELECT public_id || '=' || contact_name || ':' || contact FROM forms ORDER BY public_id",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains('=')).collect::<Vec<_>>(),
        [
            "v31main=小樽市:代表 0134-00-0001",
            "v31own=市民課:電話 0134-00-0002"
        ],
        "{out}"
    );
    let (ok, out, err) = tenant_sql(
        dir,
        &otaru_db,
        "SELECT 'version=' || title || '|' || (settings->>'capacity') FROM form_versions",
    );
    assert!(ok, "{err}");
    assert!(out.contains("version=住民票の写しの交付申請|5"), "{out}");
    // A tenant left half-provisioned is not migrated, and the report says so: a
    // failure when it was the one named, a line among all.
    let psql = |sql: &str| {
        let (ok, _, err) = psql(dir, sql);
        assert!(ok, "{err}");
    };
    psql("UPDATE tenants SET state = 'provisioning' WHERE slug = 'otaru'");
    let (ok, out, err) = madoguchi(dir, &["migrate", "otaru"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("skipped: 1") && err.contains("otaru: 未移行"),
        "{out}{err}"
    );
    let (ok, out, err) = madoguchi(dir, &["migrate", "--all"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("skipped: 1") && err.contains("otaru: 未移行"),
        "{out}{err}"
    );
    psql("UPDATE tenants SET state = 'active' WHERE slug = 'otaru'");
    assert_eq!(schema_of("otaru"), i64::from(newest));
}

#[test]
fn operators_platform_key_and_transparency_log() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    // Key pairs are made without any platform; the public file is one `ID ed25519 BASE64` line.
    let key = dir.join("sato.key");
    let (ok, out, err) = madoguchi(dir, &["operator", "keygen", "--out", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("sato.key.pub"));
    let mode = std::fs::metadata(&key)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(dir.join("sato.key.pub")).unwrap();
    let keys = madoguchi::control::keys::parse_public_lines(&public).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].0, "sato");
    let (ok, _, _) = madoguchi(
        dir,
        &[
            "operator",
            "keygen",
            "--out",
            dir.join("suzuki.key").to_str().unwrap(),
            "--id",
            "suzuki",
        ],
    );
    assert!(ok);

    // Registering: several keys may share one file; each id once.
    let both = format!(
        "{public}{}",
        std::fs::read_to_string(dir.join("suzuki.key.pub")).unwrap()
    );
    std::fs::write(dir.join("all.pub"), both).unwrap();
    for (id, name) in [("sato", "佐藤 一郎"), ("suzuki", "鈴木 花子")] {
        let (ok, out, err) = madoguchi(
            dir,
            &[
                "operator",
                "add",
                id,
                "--name",
                name,
                "--title",
                "運用担当",
                "--public-key",
                dir.join("all.pub").to_str().unwrap(),
            ],
        );
        assert!(ok, "{out}{err}");
    }
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "operator",
            "add",
            "sato",
            "--name",
            "x",
            "--title",
            "x",
            "--public-key",
            dir.join("all.pub").to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("already registered"), "{err}");
    let (ok, out, _) = madoguchi(dir, &["operator", "list"]);
    assert!(ok && out.contains("佐藤 一郎") && out.contains("鈴木 花子"));

    // The platform key is stable across runs and parses as a verifier key.
    let (ok, key1, _) = madoguchi(dir, &["platform-key"]);
    let (_, key2, _) = madoguchi(dir, &["platform-key"]);
    assert!(ok);
    assert_eq!(key1, key2);
    assert!(madoguchi::crypto::note::NoteVerifier::parse(&key1).is_ok());
    // Once its public form was printed (handed out), a missing key file is refused,
    // even before anything was signed, and so is a file holding another key.
    let platform_key = dir.join("platform.key");
    let kept = dir.join("platform.key.kept");
    std::fs::rename(&platform_key, &kept).unwrap();
    let (ok, _, err) = madoguchi(dir, &["platform-key"]);
    assert!(!ok && err.contains("restore it from escrow"), "{err}");
    assert!(!platform_key.exists(), "made anew");
    madoguchi::control::keys::write_secret(
        &platform_key,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let (ok, _, err) = madoguchi(dir, &["platform-key"]);
    assert!(!ok && err.contains("is not the key recorded"), "{err}");
    std::fs::remove_file(&platform_key).unwrap();
    std::fs::rename(&kept, &platform_key).unwrap();
    let (ok, key2, _) = madoguchi(dir, &["platform-key"]);
    assert!(ok && key2 == key1);

    // The checkpoint of the (empty) log is signed by the log key.
    let (ok, log_key, _) = madoguchi(dir, &["tlog", "key"]);
    assert!(ok);
    let (ok, note, err) = madoguchi(dir, &["tlog", "checkpoint"]);
    assert!(ok, "{err}");
    let verifier = madoguchi::crypto::note::NoteVerifier::parse(&log_key).unwrap();
    let text = verifier.open(&note).unwrap();
    let (origin, size, root) = madoguchi::crypto::note::parse_checkpoint(text).unwrap();
    assert_eq!((origin.as_str(), size), ("madoguchi.erasure-log", 0));
    assert_eq!(root, madoguchi::crypto::tlog::root(&[]));
    let (ok, _, err) = madoguchi(dir, &["tlog", "consistency", "1"]);
    assert!(!ok && err.contains("OLD_SIZE"));

    // Decommissioning by one, erasure by the other; the certificate verifies offline.
    create_tenant(dir, "yubari", "夕張市", "012092", "yubari.test");
    let sato_key = dir.join("sato.key");
    let suzuki_key = dir.join("suzuki.key");
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "tenant",
            "decommission",
            "yubari",
            "--operator",
            "sato",
            "--key",
            sato_key.to_str().unwrap(),
            "--final-export",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("tenant erase yubari"), "{out}");
    // The copy handed over is checked against the signed request, then the server's
    // folder is deleted, as the erasure requires.
    let export = Regex::new(r"final export: (\S+) \((\d+) files\)")
        .unwrap()
        .captures(&out)
        .unwrap_or_else(|| panic!("{out}"))[1]
        .to_owned();
    let copy = dir.join("handed-over");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&export).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let copy_arg = copy.to_str().unwrap();
    let (ok, out, err) = madoguchi(dir, &["tenant", "verify-export", "yubari", copy_arg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("files match the signed decommissioning request"),
        "{out}"
    );
    std::fs::write(copy.join("forms.json"), "[\"書き換えた\"]").unwrap();
    let (ok, out, err) = madoguchi(dir, &["tenant", "verify-export", "yubari", copy_arg]);
    assert!(!ok && out.contains("differs: forms.json"), "{out}{err}");
    assert!(err.contains("does not match the signed request"), "{err}");
    std::fs::remove_dir_all(&export).unwrap();
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "tenant",
            "erase",
            "yubari",
            "--verifier",
            "sato",
            "--key",
            sato_key.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("other than sato"), "{err}");
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "tenant",
            "erase",
            "yubari",
            "--verifier",
            "suzuki",
            "--key",
            suzuki_key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("[7/7] new_catalog_backup"), "{err}");
    let cert = out.trim().to_owned();
    assert!(
        cert.ends_with(".json") && Path::new(&cert).exists(),
        "{out}"
    );
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "cert",
            "verify",
            &cert,
            "--platform-key",
            key1.trim(),
            "--operators",
            dir.join("all.pub").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("VERIFIED") && !out.contains("FAIL"), "{out}");
    // The platform key may also be given as a file; the log now holds one entry.
    std::fs::write(dir.join("platform.pub"), &key1).unwrap();
    let (ok, note, _) = madoguchi(dir, &["tlog", "checkpoint"]);
    assert!(ok);
    std::fs::write(dir.join("old.checkpoint"), &note).unwrap();
    let (ok, out, _) = madoguchi(
        dir,
        &[
            "cert",
            "verify",
            &cert,
            "--platform-key",
            dir.join("platform.pub").to_str().unwrap(),
            "--checkpoint",
            dir.join("old.checkpoint").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let tampered = std::fs::read_to_string(&cert)
        .unwrap()
        .replacen("夕張市", "夕張町", 1);
    std::fs::write(dir.join("tampered.json"), tampered).unwrap();
    let (ok, out, _) = madoguchi(
        dir,
        &[
            "cert",
            "verify",
            dir.join("tampered.json").to_str().unwrap(),
            "--platform-key",
            key1.trim(),
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("NOT VERIFIED") && out.contains("FAIL"),
        "{out}"
    );
    // Once something is signed, a missing key file is refused, not replaced by a new
    // key that would leave the certificate unverifiable; put back, it works again.
    for (file, cmd) in [("platform.key", "platform-key"), ("tlog.key", "tlog")] {
        let kept = dir.join(format!("{file}.kept"));
        std::fs::rename(dir.join(file), &kept).unwrap();
        let args: &[&str] = if cmd == "tlog" {
            &["tlog", "key"]
        } else {
            &[cmd]
        };
        let (ok, _, err) = madoguchi(dir, args);
        assert!(
            !ok && err.contains("restore it from escrow"),
            "{file}: {err}"
        );
        assert!(!dir.join(file).exists(), "{file} was made anew");
        std::fs::rename(&kept, dir.join(file)).unwrap();
    }
    let (ok, key3, _) = madoguchi(dir, &["platform-key"]);
    assert!(ok && key3 == key1);

    // Both signing keys replaced: each transition is printed, signed by both keys,
    // and a fresh export of the certificate verifies against the old platform key
    // and the new one (its checkpoint is signed by the new log key).
    let (ok, out, err) = madoguchi(dir, &["platform-key", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("catalog backup with the transition"), "{out}");
    let (ok, out, err) = madoguchi(dir, &["tlog", "key", "rotate"]);
    assert!(ok && out.contains("tlog.key: new key"), "{out}{err}");
    let (_, key4, _) = madoguchi(dir, &["platform-key"]);
    assert_ne!(key4, key1);
    let (ok, notes, _) = madoguchi(dir, &["platform-key", "transitions"]);
    let t = madoguchi::control::key_transition::Transition::open(&notes).unwrap();
    assert!(
        ok && t.from == key1.trim() && t.to == key4.trim(),
        "{notes}"
    );
    let (ok, notes, _) = madoguchi(dir, &["tlog", "key", "transitions"]);
    assert!(
        ok && notes.contains("\nlog\n") && !notes.contains("\nplatform\n"),
        "{notes}"
    );
    let id = Path::new(&cert)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (ok, fresh, err) = madoguchi(dir, &["cert", "export", &id]);
    assert!(ok, "{err}");
    std::fs::write(dir.join("fresh.json"), &fresh).unwrap();
    for key in [&key1, &key4] {
        let (ok, out, _) = madoguchi(
            dir,
            &[
                "cert",
                "verify",
                dir.join("fresh.json").to_str().unwrap(),
                "--platform-key",
                key.trim(),
                "--checkpoint",
                dir.join("old.checkpoint").to_str().unwrap(),
            ],
        );
        assert!(
            ok && out.contains("that replaced the one the certificate names"),
            "{out}"
        );
    }
    let (ok, out, _) = madoguchi(dir, &["cert", "list"]);
    assert!(
        ok && out.contains("yubari") && out.contains("sato / suzuki"),
        "{out}"
    );
    let (ok, out, _) = madoguchi(dir, &["tenant", "list"]);
    assert!(ok && out.contains("erased"), "{out}");
    // Auditors register without a key; every operator action is in the chained log.
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "operator",
            "add",
            "kansa",
            "--name",
            "監査 太郎",
            "--title",
            "監査人",
            "--auditor",
        ],
    );
    assert!(ok, "{err}");
    // The auditor leaves: revoked by an operator, listed with when, by whom and why.
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "operator", "revoke", "kansa", "--by", "kansa", "--reason", "異動",
        ],
    );
    assert!(!ok && err.contains("cannot revoke"), "{err}");
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "operator", "revoke", "kansa", "--by", "sato", "--reason", "異動",
        ],
    );
    assert!(ok && out.contains("revoked kansa at"), "{out}{err}");
    let (ok, out, _) = madoguchi(dir, &["operator", "list"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("kansa\t"))
        .unwrap_or_default();
    assert!(
        ok && line.contains("revoked 20") && line.ends_with("by sato: 異動"),
        "{out}"
    );
    assert!(!out
        .lines()
        .find(|l| l.starts_with("sato\t"))
        .unwrap_or_default()
        .contains("revoked"));
    let (ok, out, err) = madoguchi(dir, &["ops-log", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("intact"), "{out}");
    let (ok, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(
        ok && out.contains("tenant.erase")
            && out.contains("tenant.decommission")
            && out.contains("operator.add")
            && out.contains("operator.revoke"),
        "{out}"
    );
}

/// A command that started the embedded cluster while `serve` was down leaves it
/// running for a `serve` started meanwhile (stopping it took every municipality
/// offline until someone restarted `serve`), and that `serve` stops it when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_leaves_the_cluster_to_a_serve_started_meanwhile() {
    let state = StateDir::new();
    let dir = state.0.clone();
    let pid = dir.join("pg/data/postmaster.pid");
    // The command: this process, starting the cluster.
    let platform =
        madoguchi::platform::Platform::open(madoguchi::config::Settings::new(dir.clone()))
            .await
            .unwrap();
    assert!(pid.exists());
    let serving = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            Serving::start(&dir, &["serve", "--backup-interval-hours", "0"])
        })
        .await
        .unwrap()
    };
    platform.close().unwrap();
    assert!(
        pid.exists(),
        "the command stopped the cluster serve had joined"
    );
    let ready = reqwest::get(format!("http://{}/readyz", serving.ops))
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 200);
    tokio::task::spawn_blocking(move || serving.stop())
        .await
        .unwrap();
    assert!(!pid.exists(), "serve left the cluster running");
}

/// Commands started at the same moment on one state directory (an operator's
/// script importing forms two at a time) all succeed: each starts or joins the
/// cluster and checks the catalog's database, and the first to need a new
/// department adds it for all.
#[test]
fn commands_started_at_once_all_succeed() {
    let state = StateDir::new();
    let dir = state.0.clone();
    create_tenant(&dir, "kofu", "甲府市", "192015", "kofu.localhost");
    let form = dir.join("form.json");
    std::fs::write(
        &form,
        r#"{ "format": "madoguchi.form/1", "title": "同時取込", "pages": [ { "id": "p1", "fields": [
            { "id": "name", "type": "name", "label": "氏名", "required": true } ] } ] }"#,
    )
    .unwrap();
    let imports: Vec<_> = (0..6)
        .map(|_| {
            let (dir, form) = (dir.clone(), form.clone());
            std::thread::spawn(move || {
                madoguchi(
                    &dir,
                    &[
                        "tenant",
                        "import-form",
                        "kofu",
                        form.to_str().unwrap(),
                        "--department",
                        "観光課",
                        "--publish",
                    ],
                )
            })
        })
        .collect();
    let mut paths = std::collections::HashSet::new();
    for import in imports {
        let (ok, out, err) = import.join().unwrap();
        assert!(ok, "{out}{err}");
        assert!(paths.insert(out.trim().to_owned()), "{out}");
    }
    let (ok, out, err) = psql(
        &dir,
        "SELECT has_database_privilege('public', current_database(), 'CONNECT')",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "f", "PUBLIC may connect to the catalog");
    assert!(
        !dir.join("pg/data/postmaster.pid").exists(),
        "the commands left the cluster running"
    );
}

/// `keys rotate-master`: refused while `serve` runs; afterwards the tenants open with
/// the new key, the old one is kept for the catalog backups made before, and a
/// rotation cut short between the catalog's commit and the files' swap is finished by
/// the next command.
#[test]
fn the_master_key_is_rotated_while_the_service_is_stopped() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    create_tenant(dir, "kushiro", "釧路市", "012068", "kushiro.localhost");
    let (ok, out, err) = madoguchi(dir, &["backup", "run", "--catalog"]);
    assert!(ok, "{out}{err}");
    let old_backup = Regex::new(r"catalog: (\S+)")
        .unwrap()
        .captures(&out)
        .unwrap()[1]
        .to_owned();
    let key = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
    let first = key("master.key");

    let serving = Serving::start(dir, &["serve"]);
    assert_eq!(serving.get("kushiro.localhost"), 200);
    let (ok, _, err) = madoguchi(dir, &["keys", "rotate-master"]);
    assert!(!ok && err.contains("stop the service"), "{err}");
    assert_eq!(key("master.key"), first, "refused, yet the key changed");
    // Even with its presence connection cut (as by a restarted cluster), the running
    // service is seen by its other catalog connections.
    let (ok, out, err) = psql(
        dir,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'madoguchi-presence/%'",
    );
    assert!(ok && out.trim() != "0", "{out}{err}");
    let (ok, _, err) = madoguchi(dir, &["keys", "rotate-master"]);
    assert!(!ok && err.contains("stop the service"), "{err}");
    assert_eq!(key("master.key"), first, "refused, yet the key changed");
    serving.stop();

    let (ok, out, err) = madoguchi(dir, &["keys", "rotate-master"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("2 tenant keys") && out.contains("catalog backup under the new key"),
        "{out}"
    );
    let second = key("master.key");
    assert!(second.len() == 32 && second != first);
    let retired: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("master.key.retired-"))
        .collect();
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(std::fs::read(&retired[0]).unwrap(), first);
    let mode = std::fs::metadata(&retired[0])
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    // The catalog backup made before opens with the retired key, and only with it.
    let decrypt = |file: &str, out: &str| {
        let out = dir.join(out);
        madoguchi(
            dir,
            &[
                "backup",
                "decrypt",
                file,
                "--out",
                out.to_str().unwrap(),
                "--reason",
                "鍵の入れ替えの確認",
            ],
        )
    };
    let (ok, _, err) = decrypt(&old_backup, "a.dump");
    assert!(ok, "{err}");
    let aside = dir.join("retired.aside");
    std::fs::rename(&retired[0], &aside).unwrap();
    let (ok, _, err) = decrypt(&old_backup, "b.dump");
    assert!(!ok && err.contains("retired"), "{err}");
    std::fs::rename(&aside, &retired[0]).unwrap();

    // A rotation cut short after the commit: the old key is still master.key and the
    // new one master.key.new. The next command finishes the swap.
    let (ok, out, err) = madoguchi(dir, &["keys", "rotate-master"]);
    assert!(ok, "{out}{err}");
    let third = key("master.key");
    std::fs::rename(dir.join("master.key"), dir.join("master.key.new")).unwrap();
    let newest_retired = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read(p).ok().as_deref() == Some(&second[..])
                && p.to_string_lossy().contains("retired")
        })
        .unwrap();
    std::fs::rename(&newest_retired, dir.join("master.key")).unwrap();
    let (ok, out, err) = madoguchi(dir, &["tenant", "list"]);
    assert!(ok && out.contains("kushiro"), "{out}{err}");
    assert_eq!(key("master.key"), third);
    assert!(!dir.join("master.key.new").exists());
    // A master.key.new that no commit took is dropped.
    std::fs::write(dir.join("master.key.new"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        dir.join("master.key.new"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (ok, _, err) = madoguchi(dir, &["tenant", "list"]);
    assert!(ok, "{err}");
    assert!(!dir.join("master.key.new").exists());
    assert_eq!(key("master.key"), third);

    // The tenant role's password too can be new (wrapped under the new master key).
    let (ok, out, err) = madoguchi(dir, &["tenant", "rotate-password", "kushiro"]);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    // The municipality is served with its keys under the new master key, and the
    // rotations are in the operation log.
    let serving = Serving::start(dir, &["serve"]);
    assert_eq!(serving.get("kushiro.localhost"), 200);
    serving.stop();
    let (ok, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(
        ok && out.matches("keys.rotate_master").count() == 2
            && out.contains("tenant.rotate_password"),
        "{out}"
    );
}

/// `backup restore-catalog`: a catalog whose rows were lost comes back from its
/// backup, with the service stopped; what the backup cannot know (a tenant made
/// since, a certificate issued since) is named, and the replaced catalog is kept.
#[test]
fn the_catalog_is_restored_from_its_backup() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    create_tenant(dir, "nemuro", "根室市", "012238", "nemuro.localhost");
    create_tenant(dir, "rumoi", "留萌市", "012122", "rumoi.localhost");
    let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rumoi_db = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "rumoi")
        .unwrap()["database"]
        .as_str()
        .unwrap()
        .to_owned();
    let backup_file = |out: &str, what: &str| {
        Regex::new(&format!(r"{what}: (\S+)"))
            .unwrap()
            .captures(out)
            .unwrap_or_else(|| panic!("{out}"))[1]
            .to_owned()
    };
    let (ok, out, err) = madoguchi(dir, &["backup", "run", "--catalog"]);
    assert!(ok, "{out}{err}");
    let catalog_backup = backup_file(&out, "catalog");
    let (ok, out, err) = madoguchi(dir, &["backup", "run", "nemuro"]);
    assert!(ok, "{out}{err}");
    let tenant_backup = std::fs::read_dir(dir.join("backups/nemuro"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.ends_with(".mdgbak"))
        .map(|n| format!("nemuro/{n}"))
        .unwrap();
    // Made after the backup: the restored catalog cannot know it.
    create_tenant(dir, "wakkanai", "稚内市", "012149", "wakkanai.localhost");
    let certificates = dir.join("certificates");
    std::fs::create_dir_all(&certificates).unwrap();
    let stray = format!("{}.json", uuid::Uuid::new_v4());
    std::fs::write(certificates.join(&stray), "{}").unwrap();

    // The catalog loses its tenants, and one tenant's database is lost too.
    for sql in [
        "TRUNCATE tenants CASCADE".to_owned(),
        format!("DROP DATABASE \"{rumoi_db}\""),
    ] {
        let (ok, out, err) = psql(dir, &sql);
        assert!(ok, "{out}{err}");
    }
    let (_, out, _) = madoguchi(dir, &["tenant", "list"]);
    assert!(!out.contains("nemuro"), "{out}");

    let (ok, _, err) = madoguchi(dir, &["backup", "restore-catalog", &tenant_backup]);
    assert!(!ok && err.contains("not the catalog's"), "{err}");
    let serving = Serving::start(dir, &["serve"]);
    let (ok, _, err) = madoguchi(dir, &["backup", "restore-catalog", &catalog_backup]);
    assert!(!ok && err.contains("stop the service"), "{err}");
    serving.stop();

    let (ok, out, err) = madoguchi(dir, &["backup", "restore-catalog", &catalog_backup]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 tenants"), "{out}");
    assert!(
        out.contains("tenant rumoi: its database is not in the cluster"),
        "{out}"
    );
    assert!(out.contains("but not in the restored catalog"), "{out}");
    assert!(out.contains(&stray), "{out}");
    let replaced = Regex::new(r"kept as database (\S+)")
        .unwrap()
        .captures(&out)
        .unwrap_or_else(|| panic!("{out}"))[1]
        .to_owned();
    let (ok, out, _) = psql(
        dir,
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{replaced}'"),
    );
    assert!(
        ok && out.trim() == "1",
        "the replaced catalog is gone: {out}"
    );

    let (ok, out, _) = madoguchi(dir, &["tenant", "list"]);
    assert!(
        ok && out.contains("nemuro") && !out.contains("wakkanai"),
        "{out}"
    );
    let serving = Serving::start(dir, &["serve"]);
    assert_eq!(serving.get("nemuro.localhost"), 200);
    serving.stop();
    let (ok, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(ok && out.contains("catalog.restore"), "{out}");
}

/// An operator reaching a municipality's data (`backup decrypt`, `backup restore`)
/// says why, and the act is in the municipality's own operation log before it runs,
/// with the Unix user and the reason; when that log cannot be written the command
/// stops, unless told to go on, which the operators' log then records. `db psql`
/// and `db url` say why too, in the operators' log.
#[test]
fn an_operators_reach_into_a_citys_data_is_in_its_own_log() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    create_tenant(dir, "nayoro", "名寄市", "012211", "nayoro.localhost");
    let (_, list, _) = madoguchi(dir, &["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let database = list[0]["database"].as_str().unwrap().to_owned();
    let (ok, out, err) = madoguchi(dir, &["backup", "run", "nayoro"]);
    assert!(ok, "{out}{err}");
    let file = std::fs::read_dir(dir.join("backups/nayoro"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.ends_with(".mdgbak"))
        .map(|n| format!("nayoro/{n}"))
        .unwrap();
    let dump = dir.join("nayoro.dump");
    let decrypt = |extra: &[&str]| {
        let mut args = vec!["backup", "decrypt", &file, "--out", dump.to_str().unwrap()];
        args.extend_from_slice(extra);
        madoguchi(dir, &args)
    };
    // The city's log: (actor, action, detail) of the operators' entries.
    let city_log = || {
        let (ok, out, err) = tenant_sql(
            dir,
            &database,
            "SELECT actor || '|' || action || '|' || detail FROM audit_log WHERE action LIKE 'operator.%' ORDER BY seq",
        );
        assert!(ok, "{out}{err}");
        out.lines()
            .filter(|l| l.contains('|'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // Without a reason, or with a blank one: nothing is decrypted.
    let (ok, _, err) = decrypt(&[]);
    assert!(!ok && err.contains("--reason"), "{err}");
    let (ok, _, err) = decrypt(&["--reason", "  "]);
    assert!(!ok && err.contains("理由を書いてください"), "{err}");
    assert!(!dump.exists());
    assert!(city_log().is_empty());

    // With one: in the city's log first, then done.
    let (ok, _, err) = decrypt(&["--reason", "名寄市からの依頼 第12号"]);
    assert!(ok, "{err}");
    assert!(dump.exists());
    // Refused before it is logged (the output file exists), so the log holds no act
    // that did not happen.
    let (ok, _, err) = decrypt(&["--reason", "名寄市からの依頼 第12号"]);
    assert!(!ok && err.contains("creating"), "{err}");
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "backup",
            "restore",
            &file,
            "--into",
            "nayoro-copy",
            "--host",
            "nayoro-copy.localhost",
            "--suspended",
            "--reason",
            "復元訓練（名寄市承認 第13号）",
        ],
    );
    assert!(ok, "{out}{err}");
    let logged = city_log();
    assert_eq!(logged.len(), 2, "{logged:?}");
    let entry = |line: &str| {
        let mut parts = line.splitn(3, '|');
        let (actor, action) = (parts.next().unwrap(), parts.next().unwrap());
        let detail: serde_json::Value = serde_json::from_str(parts.next().unwrap()).unwrap();
        (actor.to_owned(), action.to_owned(), detail)
    };
    let (actor, action, detail) = entry(&logged[0]);
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("operator", "operator.backup_decrypt")
    );
    assert_eq!(detail["reason"], "名寄市からの依頼 第12号");
    assert!(
        detail["by"].as_str().unwrap().starts_with("cli:"),
        "{detail}"
    );
    let (_, action, detail) = entry(&logged[1]);
    assert_eq!(action, "operator.backup_restore");
    assert_eq!(detail["into"], "nayoro-copy");
    assert_eq!(detail["reason"], "復元訓練（名寄市承認 第13号）");

    // The city's database lost: its log cannot be written, so the command stops...
    std::fs::remove_file(&dump).unwrap();
    let (ok, out, err) = psql(dir, &format!("DROP DATABASE \"{database}\""));
    assert!(ok, "{out}{err}");
    let (ok, _, err) = decrypt(&["--reason", "障害対応 INC-7"]);
    assert!(
        !ok && err.contains("操作ログに記録できないため中止しました")
            && err.contains("--without-city-log"),
        "{err}"
    );
    assert!(!dump.exists());
    // ...unless told to go on, which the operators' log records.
    let (ok, _, err) = decrypt(&["--reason", "障害対応 INC-7", "--without-city-log"]);
    assert!(ok, "{err}");
    assert!(dump.exists());
    let (ok, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(ok);
    assert_eq!(out.matches("operator.backup_decrypt").count(), 2, "{out}");
    assert!(out.contains("operator.backup_restore"), "{out}");
    assert!(
        out.contains("障害対応 INC-7") && out.contains("not written"),
        "{out}"
    );
    assert!(
        out.contains("db.psql") && out.contains(r#"{"reason":"試験"}"#),
        "{out}"
    );
}

/// `notice add|list|remove` from the command line: times read with their offset (a
/// time without one is refused with the form to use), listed in Japan time.
#[test]
fn notices_are_posted_listed_and_removed_from_the_command_line() {
    let state = StateDir::new();
    let dir = state.0.as_path();
    let (ok, _, err) = madoguchi(
        dir,
        &[
            "notice",
            "add",
            "--from",
            "2030-12-05 18:00",
            "--until",
            "2030-12-06T00:00:00+09:00",
            "--text",
            "点検",
        ],
    );
    assert!(
        !ok && err.contains("2026-12-05T18:00:00+09:00 の形で"),
        "{err}"
    );
    let (ok, out, err) = madoguchi(
        dir,
        &[
            "notice",
            "add",
            "--from",
            "2030-12-05T09:00:00Z",
            "--until",
            "2030-12-06T00:00:00+09:00",
            "--text",
            "12月5日（木）22:00〜24:00 は点検のため停止します",
        ],
    );
    assert!(ok, "{out}{err}");
    let id = Regex::new(r"notice (\d+) posted")
        .unwrap()
        .captures(&out)
        .unwrap()[1]
        .to_owned();
    let (ok, out, _) = madoguchi(dir, &["notice", "list"]);
    assert!(ok);
    assert!(
        out.contains(&format!("{id}\t2030-12-05 18:00 JST\t2030-12-06 00:00 JST\t12月5日（木）22:00〜24:00 は点検のため停止します")),
        "{out}"
    );
    let (ok, out, _) = madoguchi(dir, &["notice", "remove", &id]);
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, _, err) = madoguchi(dir, &["notice", "remove", &id]);
    assert!(!ok && err.contains("はありません"), "{err}");
    let (_, out, _) = madoguchi(dir, &["ops-log", "show"]);
    assert!(
        out.contains("notice.add") && out.contains("notice.remove"),
        "{out}"
    );
}
