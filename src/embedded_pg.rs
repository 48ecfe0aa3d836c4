//! A private PostgreSQL cluster under the state directory, for development, the
//! demo and tests, used when no external cluster is configured.
//!
//! Layout: `DIR/pg` holds the unix socket and the server log, `DIR/pg/data` the
//! cluster. Authentication is `scram-sha-256` for every connection (never `trust`),
//! so tenant roles really are separated; the admin password is `DIR/pg-admin.password`
//! (0600). When the program runs as root, PostgreSQL runs as user `postgres` via
//! `runuser`, because it refuses to run as root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::crypto::random_token;

/// The superuser the embedded cluster is created with.
pub const ADMIN_USER: &str = "madoguchi_admin";
/// Port number only names the socket file (`.s.PGSQL.5432`); there is no TCP listener.
pub const PORT: u16 = 5432;

/// Extra `postgresql.conf` lines for a new cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Development/test only: turns off fsync and synchronous commit.
    pub unsafe_fast: bool,
    /// `max_connections` (set at creation and at every start); 200 when `None`.
    pub max_connections: Option<u32>,
    /// `shared_buffers` in MiB (set at every start); PostgreSQL's default when `None`.
    pub shared_buffers_mib: Option<u32>,
}

/// Connections the embedded cluster keeps beyond the tenant pools' budget: the
/// catalog pool, control-plane commands, backups and an operator's `psql`.
pub const RESERVED_CONNECTIONS: usize = 40;

/// Shared buffers per pooled connection: about what one busy tenant keeps hot on the
/// citizens' path (its forms, the last pages of its submissions, drafts and outbox,
/// and their indexes). With 1,788 tenants at 128 MiB (PostgreSQL's default) the
/// citizens' flow spread over all of them read about 35 blocks per submission from
/// the operating system and ran ~20 % slower than at 1 GiB (see `ops/bench`).
pub const SHARED_BUFFERS_KIB_PER_CONNECTION: u64 = 512;
/// PostgreSQL's own default, the least the embedded cluster is given.
const SHARED_BUFFERS_MIN_MIB: u64 = 128;

impl ClusterOptions {
    /// Options for a cluster whose tenant pools may hold `budget` connections:
    /// `max_connections` covers the budget and the reserve, and `shared_buffers`
    /// grows with it (half a MiB per connection, at least 128 MiB, at most a quarter
    /// of the machine's memory).
    pub fn for_budget(budget: usize) -> Self {
        let n = budget.saturating_add(RESERVED_CONNECTIONS).max(200);
        Self {
            unsafe_fast: false,
            max_connections: Some(u32::try_from(n).unwrap_or(u32::MAX)),
            shared_buffers_mib: Some(shared_buffers_mib(budget, memory_mib())),
        }
    }
}

/// `shared_buffers` (MiB) for a pool budget on a machine with `memory_mib` of memory
/// (unknown: no upper bound but the budget's own).
pub fn shared_buffers_mib(budget: usize, memory_mib: Option<u64>) -> u32 {
    let wanted = (budget as u64)
        .saturating_mul(SHARED_BUFFERS_KIB_PER_CONNECTION)
        .div_ceil(1024)
        .max(SHARED_BUFFERS_MIN_MIB);
    let most = memory_mib.map_or(u64::MAX, |m| (m / 4).max(SHARED_BUFFERS_MIN_MIB));
    u32::try_from(wanted.min(most)).unwrap_or(u32::MAX)
}

/// The machine's memory in MiB (`MemTotal` of `/proc/meminfo`), if it can be read.
fn memory_mib() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPg {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    started_here: bool,
    password: Zeroizing<String>,
    /// A shared lock on `pg/users.lock`, held while this process uses the cluster:
    /// the last process to let go stops it ([`EmbeddedPg::stop_if_last`]).
    users: Option<fs::File>,
}

/// Present while the cluster runs because a Madoguchi process started it (one
/// started by hand is never stopped by Madoguchi).
const STARTED_MARKER: &str = "started-by-madoguchi";

impl EmbeddedPg {
    /// Creates the cluster on first use, starts it unless it is already running
    /// (for example under a `serve` on the same state directory), and returns it.
    pub fn ensure(state_dir: &Path, opts: &ClusterOptions) -> anyhow::Result<Self> {
        let state_dir = absolute(state_dir)?;
        let root = state_dir.join("pg");
        let data = root.join("data");
        let bin = find_bin_dir()?;
        let as_postgres = running_as_root();
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let password = admin_password(&state_dir)?;
        if as_postgres {
            // The postgres user must be able to reach the socket directory.
            fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o711))?;
            chown_to_postgres(&root)?;
            check_reachable_by_postgres(&root)?;
        }
        // Taken before the cluster is looked at: a process stopping it holds the lock
        // exclusively until it has stopped, so this one then finds it stopped and
        // starts it, rather than joining a cluster about to go.
        let users = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(root.join("users.lock"))
            .with_context(|| format!("opening {}", root.join("users.lock").display()))?;
        users
            .lock_shared()
            .with_context(|| format!("locking {}", root.join("users.lock").display()))?;
        let mut pg = Self {
            root,
            data,
            bin,
            as_postgres,
            started_here: false,
            password,
            users: Some(users),
        };
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb(opts)?;
        }
        if !pg.is_running() {
            pg.start(opts)?;
            pg.started_here = true;
            fs::write(pg.root.join(STARTED_MARKER), b"")
                .with_context(|| format!("writing {}", pg.root.join(STARTED_MARKER).display()))?;
        }
        pg.wait_ready()?;
        Ok(pg)
    }

    /// Waits until the postmaster accepts connections. A cluster that another
    /// process is starting at this moment counts as running (its postmaster.pid
    /// exists) before its socket does; the status line of postmaster.pid, which
    /// `pg_ctl -w` reads too, says when it is ready.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let pid_file = self.data.join("postmaster.pid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let pid = fs::read_to_string(&pid_file).unwrap_or_default();
            if matches!(pid.lines().nth(7).map(str::trim), Some("ready" | "standby")) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not become ready within 60 s; see {}",
                    self.root.join("server.log").display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Directory of the unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether this process started the cluster (and so should stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Admin connection settings for database `dbname`.
    pub fn admin_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.root)
            .port(PORT)
            .user(ADMIN_USER)
            .password(self.password.as_bytes())
            .dbname(dbname);
        c
    }

    /// A URL that `psql` and libpq accept.
    pub fn admin_url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{ADMIN_USER}:{}@/{dbname}?host={}&port={PORT}",
            self.password.as_str(),
            percent_encode(&self.root.to_string_lossy())
        )
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn initdb(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let pwfile = self.root.join(".initdb-pw");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pwfile)?;
            f.write_all(self.password.as_bytes())?;
        }
        if self.as_postgres {
            chown_to_postgres(&pwfile)?;
        }
        let out = self
            .pg_command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                ADMIN_USER,
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut conf = format!(
            "\n# Madoguchi embedded cluster\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {PORT}\npassword_encryption = 'scram-sha-256'\nmax_connections = {}\n",
            self.root.display().to_string().replace('\'', "''"),
            opts.max_connections.unwrap_or(200),
        );
        if opts.unsafe_fast {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?
            .write_all(conf.as_bytes())?;
        Ok(())
    }

    /// Whether a postmaster serves the data directory.
    pub fn is_running(&self) -> bool {
        self.pg_command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let log = self.root.join("server.log");
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log);
        // The connection limit follows the settings of the command that starts the
        // cluster (the pool budget, for `serve`), not only those it was created with.
        let mut settings = Vec::new();
        if let Some(n) = opts.max_connections {
            settings.push(format!("-c max_connections={n}"));
        }
        if let Some(mib) = opts.shared_buffers_mib {
            settings.push(format!("-c shared_buffers={mib}MB"));
        }
        if !settings.is_empty() {
            cmd.arg("-o").arg(settings.join(" "));
        }
        let out = cmd
            .args(["-w", "-t", "60", "-s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            // Another process may have started it at the same moment.
            if self.is_running() {
                return Ok(());
            }
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!(
                "PostgreSQL did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Stops the cluster (fast shutdown: sessions are ended, nothing committed is lost).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            self.started_here = false;
            return Ok(());
        }
        let out = self
            .pg_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "-s"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() && self.is_running() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.started_here = false;
        Ok(())
    }

    /// Stops the cluster if no other Madoguchi process on this state directory uses
    /// it and a Madoguchi process started it. A command that started the cluster while
    /// `serve` was down leaves it running for a `serve` started meanwhile (stopping it
    /// took every municipality offline), and that `serve` stops it when it ends.
    pub fn stop_if_last(&mut self) -> anyhow::Result<()> {
        drop(self.users.take());
        let path = self.root.join("users.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {
                let marker = self.root.join(STARTED_MARKER);
                if self.started_here || marker.exists() {
                    self.stop()?;
                    let _ = fs::remove_file(marker);
                }
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!("the embedded cluster is left running: another madoguchi process on this state directory is using it");
                Ok(())
            }
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Directory with `pg_ctl` and `initdb`: from `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin` with version 15 or later.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("pg_ctl").is_file() && dir.join("initdb").is_file() {
                let dir = fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
                return Ok(dir);
            }
        }
    }
    match newest_with(Path::new(DEBIAN_ROOT), "pg_ctl") {
        Some(bin) => Ok(bin),
        None => bail!(
            "PostgreSQL server programs (initdb, pg_ctl) were not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL 15 or later (Debian: apt-get install postgresql) or set MADOGUCHI_DATABASE_URL"
        ),
    }
}

/// Where Debian installs each PostgreSQL version's programs (`VERSION/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The `bin` directory of the newest PostgreSQL (15 or later) under `root` that has
/// `program`.
fn newest_with(root: &Path, program: &str) -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in fs::read_dir(root).ok()?.flatten() {
        let v: Option<u32> = e.file_name().to_str().and_then(|s| s.parse().ok());
        let bin = e.path().join("bin");
        if let Some(v) = v.filter(|v| *v >= 15) {
            if bin.join(program).is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, bin));
            }
        }
    }
    best.map(|(_, bin)| bin)
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`): beside the server programs
/// where they are installed (the private cluster's own version), else the newest
/// installed version's, else on `PATH`. A host whose database is elsewhere may
/// have only the client programs.
pub fn find_client_program(program: &str) -> anyhow::Result<PathBuf> {
    let server = find_bin_dir().ok();
    client_program_in(
        program,
        server.as_deref(),
        Path::new(DEBIAN_ROOT),
        std::env::var_os("PATH"),
    )
}

fn client_program_in(
    program: &str,
    server_bin: Option<&Path>,
    versions: &Path,
    path: Option<std::ffi::OsString>,
) -> anyhow::Result<PathBuf> {
    let beside_server = server_bin.map(|b| b.join(program));
    let versioned = newest_with(versions, program).map(|b| b.join(program));
    let on_path = path.and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    });
    [beside_server, versioned, on_path]
        .into_iter()
        .flatten()
        .find(|f| f.is_file())
        .with_context(|| {
            format!(
                "{program} was not found beside the PostgreSQL server programs, in {DEBIAN_ROOT}/*/bin or on PATH; install the PostgreSQL client programs, version 15 or later (Debian: apt-get install postgresql-client)"
            )
        })
}

/// Whether this process runs as root. `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("running as root, but there is no 'postgres' user to run PostgreSQL as")
}

fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

fn check_reachable_by_postgres(dir: &Path) -> anyhow::Result<()> {
    let ok = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "the 'postgres' user cannot reach {} (a parent directory is private); choose a --state-dir it can reach",
            dir.display()
        );
    }
    Ok(())
}

fn admin_password(state_dir: &Path) -> anyhow::Result<Zeroizing<String>> {
    let path = state_dir.join("pg-admin.password");
    match fs::read_to_string(&path) {
        Ok(s) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok(Zeroizing::new(s.trim().to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = Zeroizing::new(random_token(32));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(pw.as_bytes())?;
            Ok(pw)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{client_program_in, shared_buffers_mib};
    use std::path::Path;

    #[test]
    fn client_programs_are_found_without_the_server_programs() {
        let root = std::env::temp_dir().join(format!("madoguchi-bins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let make = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap_or(p)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(p, b"").unwrap_or_else(|e| panic!("{e}"));
        };
        // Client programs only (no pg_ctl), of two versions and on PATH.
        make(&root.join("versions/15/bin/pg_dump"));
        make(&root.join("versions/17/bin/pg_dump"));
        make(&root.join("versions/17/bin/psql"));
        make(&root.join("path/pg_dump"));
        make(&root.join("path/pg_restore"));
        make(&root.join("server/pg_dump"));
        let versions = root.join("versions");
        let path = Some(root.join("path").into_os_string());
        let found = |program, server: Option<&Path>| {
            client_program_in(program, server, &versions, path.clone())
        };
        // The newest installed version's, then PATH's.
        assert_eq!(
            found("pg_dump", None).ok(),
            Some(root.join("versions/17/bin/pg_dump"))
        );
        assert_eq!(
            found("pg_restore", None).ok(),
            Some(root.join("path/pg_restore"))
        );
        // Beside the server programs first (the private cluster's version).
        assert_eq!(
            found("pg_dump", Some(&root.join("server"))).ok(),
            Some(root.join("server/pg_dump"))
        );
        let missing = match found("pg_dumpall", None) {
            Ok(p) => panic!("found {}", p.display()),
            Err(e) => e.to_string(),
        };
        assert!(missing.contains("postgresql-client"), "{missing}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn shared_buffers_follow_the_budget_within_the_machine() {
        // Half a MiB per connection, PostgreSQL's default at the least.
        assert_eq!(shared_buffers_mib(60, Some(24_000)), 128);
        assert_eq!(shared_buffers_mib(300, Some(24_000)), 150);
        assert_eq!(shared_buffers_mib(1897, Some(24_000)), 949);
        // Never more than a quarter of the machine's memory, never below the default.
        assert_eq!(shared_buffers_mib(1897, Some(2_048)), 512);
        assert_eq!(shared_buffers_mib(1897, Some(256)), 128);
        assert_eq!(shared_buffers_mib(100_000, None), 50_000);
    }
}
