//! The `madoguchi` command line: parse, then call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use madoguchi::catalog::TenantState;
use madoguchi::config::{FileSettings, Settings};
use madoguchi::control::manifest::{self, Applied};
use madoguchi::control::migrate::{migrate_many, SchemaTarget};
use madoguchi::control::progress::with_spinner;
use madoguchi::control::provision::{provision, TenantSpec};
use madoguchi::front::Server;
use madoguchi::platform::Platform;

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers on whichever worker thread runs it, where glibc's malloc spent about an
/// eighth of the server's time on the submit path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "madoguchi",
    version,
    about = "窓口 Madoguchi: online applications for Japanese municipalities"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// State directory: master key, embedded PostgreSQL cluster, settings file.
    #[arg(
        long,
        global = true,
        env = "MADOGUCHI_STATE_DIR",
        default_value = "./var"
    )]
    state_dir: PathBuf,
    /// Admin URL of an external PostgreSQL cluster (role with CREATEDB and CREATEROLE).
    #[arg(
        long,
        global = true,
        env = "MADOGUCHI_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// PEM file of CA certificates to trust for the cluster of `--database-url`
    /// besides the system's (a managed database's own CA); with `sslmode=require`.
    #[arg(
        long,
        global = true,
        env = "MADOGUCHI_DATABASE_CA",
        value_name = "FILE"
    )]
    database_ca: Option<PathBuf>,
    /// Name of the catalog database.
    #[arg(long, global = true, env = "MADOGUCHI_CATALOG_DB")]
    catalog_db: Option<String>,
    /// Connections all tenant pools may hold together.
    #[arg(long, global = true, env = "MADOGUCHI_POOL_BUDGET")]
    pool_budget: Option<usize>,
    /// Connections one tenant's pool may hold.
    #[arg(long, global = true, env = "MADOGUCHI_POOL_PER_TENANT")]
    pool_per_tenant: Option<usize>,
    /// Requests one tenant may have in progress at once (default: the core count).
    #[arg(long, global = true, env = "MADOGUCHI_TENANT_ACTIVE")]
    tenant_active: Option<usize>,
    /// Milliseconds a request waits for a connection before 503.
    #[arg(long, global = true, env = "MADOGUCHI_POOL_WAIT_MS")]
    pool_wait_ms: Option<u64>,
    /// Seconds after which idle connections and pools are closed.
    #[arg(long, global = true, env = "MADOGUCHI_POOL_IDLE_SECS")]
    pool_idle_secs: Option<u64>,
    /// A reverse proxy (address or CIDR) whose X-Forwarded-For and X-Forwarded-Proto
    /// are believed; repeatable.
    #[arg(
        long = "trusted-proxy",
        global = true,
        env = "MADOGUCHI_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// Citizens' form POSTs per minute per tenant and client address (0: no limit).
    #[arg(long, global = true, env = "MADOGUCHI_SUBMIT_PER_MINUTE")]
    submit_per_minute: Option<u32>,
    /// Requests per second one tenant may receive in all (0: no ceiling).
    #[arg(long, global = true, env = "MADOGUCHI_TENANT_PER_SECOND")]
    tenant_per_second: Option<u32>,
    /// Submissions a minute to one form above which proof of work switches itself on (0: never).
    #[arg(long, global = true, env = "MADOGUCHI_POW_SPIKE_PER_MINUTE")]
    pow_spike_per_minute: Option<u32>,
    /// SMTP relay for mail to applicants: smtp://host:25, smtp://user:pass@host:587?tls=required
    /// or smtps://user:pass@host:465. Without it mail waits in each tenant's outbox.
    #[arg(
        long,
        global = true,
        env = "MADOGUCHI_SMTP_URL",
        hide_env_values = true
    )]
    smtp_url: Option<String>,
    /// The sender address of that mail (the display name is the municipality's).
    #[arg(long, global = true, env = "MADOGUCHI_MAIL_FROM")]
    mail_from: Option<String>,
    /// PEM file of CA certificates to trust for the relay besides the system's (a
    /// relay inside LGWAN or a city's network often has a private CA's certificate).
    #[arg(long, global = true, env = "MADOGUCHI_SMTP_CA", value_name = "FILE")]
    smtp_ca: Option<PathBuf>,
    /// Instead of a relay: write each mail to DIR as a .eml file and never send it
    /// (the demo, a training site). `demo` without --smtp-url uses STATE_DIR/mail.
    #[arg(long, global = true, env = "MADOGUCHI_MAIL_DIR", value_name = "DIR")]
    mail_dir: Option<PathBuf>,
    /// PEM file of CA certificates to trust for identity providers (本人確認)
    /// besides the system's.
    #[arg(
        long,
        global = true,
        env = "MADOGUCHI_IDENTITY_CA",
        value_name = "FILE"
    )]
    identity_ca: Option<PathBuf>,
    /// Let identity providers be on loopback or private addresses (a provider inside
    /// LGWAN or the city's network); by default only internet addresses are reached.
    #[arg(long, global = true, env = "MADOGUCHI_IDENTITY_ALLOW_PRIVATE_NETWORKS")]
    identity_allow_private_networks: bool,
    /// The help desk (ヘルプデスク) municipalities' administrators call: telephone,
    /// hours, address; shown in the staff manual (`\n` for a new line).
    #[arg(long, global = true, env = "MADOGUCHI_HELPDESK")]
    helpdesk: Option<String>,
    /// ClamAV's daemon, to scan attached files with: its socket path
    /// (/run/clamav/clamd.ctl) or tcp://HOST:PORT.
    #[arg(long, global = true, env = "MADOGUCHI_CLAMD")]
    clamd: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Citizens' and staff's listener.
    #[arg(long, env = "MADOGUCHI_LISTEN")]
    listen: Option<SocketAddr>,
    /// Operators' listener (console, /metrics).
    #[arg(long, env = "MADOGUCHI_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Hours between scheduled backups of every tenant (0: no schedule; at most 8760).
    #[arg(
        long,
        env = "MADOGUCHI_BACKUP_INTERVAL_HOURS",
        default_value_t = 24,
        value_parser = clap::value_parser!(u64).range(0..=8760)
    )]
    backup_interval_hours: u64,
    /// Days within which every tenant's latest backup is restored and checked by a
    /// scheduled drill, after the scheduled backups (0: no drill is scheduled).
    #[arg(
        long,
        env = "MADOGUCHI_DRILL_INTERVAL_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(0..=3650)
    )]
    drill_interval_days: u32,
    /// Certificate chain (PEM) for HTTPS; with it, --listen only redirects to HTTPS.
    #[arg(long, env = "MADOGUCHI_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    #[arg(long, env = "MADOGUCHI_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTPS listener (default 127.0.0.1:8443).
    #[arg(long, env = "MADOGUCHI_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// A listener facing LGWAN (zone lgwan); the others face the internet.
    #[arg(long, env = "MADOGUCHI_LGWAN_LISTEN")]
    lgwan_listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Apply every manifest in tenants/, print each tenant's URL, then serve.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Directory of tenant manifests.
        #[arg(long, default_value = "tenants")]
        tenants: PathBuf,
        /// Serve HTTPS too, with a local CA made under DIR/tls (trust DIR/tls/ca.pem).
        #[arg(long)]
        tls: bool,
    },
    /// Manage tenants (municipalities).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Apply catalog and tenant migrations.
    Migrate {
        /// Every tenant.
        #[arg(long, conflicts_with = "slug")]
        all: bool,
        /// One tenant.
        slug: Option<String>,
        /// Tenants migrated at the same time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Stop after this tenant schema version (default: the newest this binary has).
        #[arg(long, value_name = "VERSION")]
        to: Option<u32>,
    },
    /// The database cluster in use.
    #[command(subcommand)]
    Db(DbCmd),
    /// A tenant's operation log (操作ログ).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Encrypted backups of tenant databases.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Platform operators and their Ed25519 keys.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// The master key.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print the platform's public key (verifier form), which co-signs erasure certificates.
    PlatformKey {
        #[command(subcommand)]
        cmd: Option<SigningKeyCmd>,
    },
    /// The transparency log of erasure certificates.
    #[command(subcommand)]
    Tlog(TlogCmd),
    /// Erasure certificates: verify offline, export, list.
    #[command(subcommand)]
    Cert(CertCmd),
    /// The control plane's own operation log.
    #[command(subcommand)]
    OpsLog(OpsLogCmd),
    /// Notices on every municipality's pages (a planned stop, an outage).
    #[command(subcommand)]
    Notice(NoticeCmd),
}

#[derive(Subcommand, Debug)]
enum NoticeCmd {
    /// Post a notice, shown on citizens' and staff pages of every municipality from
    /// --from until --until (times with their offset, e.g. 2026-12-05T18:00:00+09:00).
    Add {
        #[arg(long, value_parser = rfc3339)]
        from: time::OffsetDateTime,
        #[arg(long, value_parser = rfc3339)]
        until: time::OffsetDateTime,
        /// The text, in Japanese first (at most 500 characters).
        #[arg(long)]
        text: String,
    },
    /// Notices not yet over.
    List,
    /// Take a notice down at once.
    Remove { id: i64 },
}

fn rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).map_err(|_| {
        format!("日時は 2026-12-05T18:00:00+09:00 の形で書いてください / write a time as 2026-12-05T18:00:00+09:00, not {s}")
    })
}

#[derive(Subcommand, Debug)]
enum CertCmd {
    /// Check a certificate offline: three signatures, inclusion in the log, the
    /// checkpoint's signature and (given an older checkpoint) consistency.
    Verify {
        cert: PathBuf,
        /// The platform key (verifier form, as printed by `madoguchi platform-key`), or a file holding it.
        #[arg(long)]
        platform_key: String,
        /// Registered operators' public keys (`ID ed25519 BASE64` lines).
        #[arg(long)]
        operators: Option<PathBuf>,
        /// An older checkpoint kept by the auditor.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Print a certificate with a current checkpoint and proofs (JSON).
    Export {
        id: uuid::Uuid,
        /// Add a consistency proof from this older tree size (repeatable).
        #[arg(long)]
        since: Vec<u64>,
    },
    /// Issued certificates, newest first.
    List {
        /// Instead: certificates awaiting their verifier's signature (`cert sign ID`).
        #[arg(long)]
        pending: bool,
    },
    /// Sign a certificate that awaits its verifier's signature (after an erasure
    /// started from the console) and issue it.
    Sign {
        id: uuid::Uuid,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum OpsLogCmd {
    /// Check the hash chain; exits non-zero at the first broken entry.
    Verify,
    /// The newest entries.
    Show {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCmd {
    /// Provision a municipality: its key, role, database and schema.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        /// 全国地方公共団体コード (six digits).
        #[arg(long)]
        code: String,
        #[arg(long = "host", required = true, num_args = 1..)]
        hosts: Vec<String>,
        /// A training site (研修用): `tenant training-reset` may delete its
        /// applications and forms between sessions. Fixed at creation.
        #[arg(long)]
        training: bool,
    },
    /// Apply a manifest file, or every *.toml in a directory (idempotent).
    Apply {
        path: PathBuf,
        /// Give the tenants this creates an older schema version, to rehearse the
        /// `migrate --all` a newer one needs (`serve` wants the newest).
        #[arg(long, value_name = "VERSION")]
        schema_version: Option<u32>,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Suspend a tenant: its sites answer 503 with a maintenance page.
    Suspend { slug: String },
    /// Resume a suspended tenant.
    Resume { slug: String },
    /// Open a tenant's admin screen to every network again (clears its address
    /// rules, allows both zones): when its administrators have shut themselves out.
    AccessReset { slug: String },
    /// Request decommissioning (step 1 of 2): the tenant closes at once, an optional
    /// final export is made, and the request is signed with the operator's key.
    Decommission {
        slug: String,
        /// The requesting operator's id.
        #[arg(long)]
        operator: String,
        /// The requesting operator's private key file (from `operator keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "契約終了 / end of contract")]
        reason: String,
        /// First export every form and submission for the municipality (DIR/exports/).
        #[arg(long)]
        final_export: bool,
    },
    /// Compare a copy of a tenant's final export (the platform's folder, the medium
    /// handed over, the municipality's copy) with the files its decommissioning
    /// request recorded and signed: name, size and SHA-256. Fails when any differs.
    VerifyExport {
        slug: String,
        /// The copy's folder (holding forms.json, the CSVs, files-*/ and SHA256SUMS).
        dir: std::path::PathBuf,
    },
    /// Give a tenant's database role a new random password (stored wrapped in the
    /// catalog; the running service picks it up by itself).
    RotatePassword {
        slug: String,
        /// Also end every open session of the role (a password that may have leaked);
        /// the service's requests on them fail once and it reconnects.
        #[arg(long)]
        end_sessions: bool,
    },
    /// Rotate a suspended tenant's data key (鍵の更新): a new version, escrowed by a
    /// catalog backup, then every value in its database sealed again with it and its
    /// blind indexes computed again, in one transaction. Older versions stay for the
    /// backups made before. Run it again to finish one cut short.
    RotateDataKey { slug: String },
    /// Withdraw an open decommissioning request; the tenant returns to its former state.
    WithdrawDecommission {
        slug: String,
        #[arg(long)]
        operator: String,
    },
    /// Erase a decommissioned tenant (step 2 of 2, by another operator): destroy its
    /// database, role, backups and keys, verify, and write a signed certificate.
    Erase {
        slug: String,
        /// The verifying operator's id (not the one who requested it).
        #[arg(long)]
        verifier: String,
        /// The verifying operator's private key file.
        #[arg(long)]
        key: PathBuf,
        /// Go on although another tenant restored from this one's backups holds its keys.
        #[arg(long)]
        allow_shared_keys: bool,
    },
    /// Create an API token for the integration API (/api/v1) and print it once.
    ApiToken {
        slug: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: forms:read, submissions:read, submissions:write, submissions:submit.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Where it may be used from: `admin` (the admin screen's network rule, the
        /// default), `any`, or address ranges (`192.0.2.0/24,198.51.100.7`).
        #[arg(long, default_value = "admin")]
        network: String,
    },
    /// Incident response: revoke every valid API token of a tenant (also while it is
    /// suspended); prints how many.
    RevokeApiTokens { slug: String },
    /// ウイルスチェック of stored files with clamd (--clamd): those kept before a
    /// scanner was set, or with --again every file with today's signatures. A file
    /// found infected is no longer handed out; each find is logged. Prints the finds.
    ScanFiles {
        /// The tenant (or --all for every active one).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        slug: Option<String>,
        #[arg(long)]
        all: bool,
        /// Also the files not scanned in the last day (a re-run the same day goes on).
        #[arg(long)]
        again: bool,
        /// Leave what the run came to for node_exporter's textfile collector in this
        /// directory (madoguchi_scan_files.prom), for the alerts.
        #[arg(long, value_name = "DIR")]
        metrics_dir: Option<PathBuf>,
    },
    /// Incident response: disable a staff account, end its sessions and unused setup
    /// links (also while the tenant is suspended, and an administrator's too).
    DisableStaff {
        slug: String,
        #[arg(long)]
        email: String,
    },
    /// Import a form definition (madoguchi.form/1 JSON) and print its public path.
    ImportForm {
        slug: String,
        file: PathBuf,
        /// Department (所属) that owns the form; created if new.
        #[arg(long, default_value = "総務課")]
        department: String,
        /// Publish it at once.
        #[arg(long)]
        publish: bool,
    },
    /// Add a staff member and print a one-time setup link (valid 24 hours).
    AddStaff {
        slug: String,
        #[arg(long)]
        email: String,
        /// admin, dept_manager, staff or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Department (所属); created if new. Required except for administrators.
        #[arg(long)]
        department: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// How the tenant's site is reached, for the printed link.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Between two sessions of 操作研修 on a training site: deletes every
    /// application, draft, form, session and setup link, opens the trainees' seats
    /// with a new setup link each (printed) and publishes the practice forms again.
    TrainingReset {
        slug: String,
        /// Trainees' accounts (trainee01@SLUG.training.invalid …), 1 to 100.
        #[arg(long, default_value_t = 20)]
        seats: u32,
        /// Their department (所属), created if new.
        #[arg(long, default_value = "研修用")]
        department: String,
        /// The practice forms: every *.json (madoguchi.form/1) in DIR; without it,
        /// the sample 粗大ごみ収集申込.
        #[arg(long, value_name = "DIR")]
        forms: Option<PathBuf>,
        /// How the site is reached, for the printed links.
        #[arg(long)]
        base_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCmd {
    /// Back up one tenant, the catalog (--catalog), or every active tenant and the catalog (--all).
    Run {
        #[arg(conflicts_with_all = ["all", "catalog"])]
        slug: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, conflicts_with = "all")]
        catalog: bool,
    },
    /// Backups recorded in the catalog, newest first.
    List { slug: Option<String> },
    /// Restore the latest backup into a scratch database and compare it with the tenant.
    Drill { slug: String },
    /// Restore a backup (path under DIR/backups) into a new tenant.
    Restore {
        file: String,
        #[arg(long)]
        into: String,
        #[arg(long = "host", required = true, num_args = 1..)]
        hosts: Vec<String>,
        /// Leave the copy suspended (503 on its hosts until `tenant resume`): a copy
        /// to examine, not to serve.
        #[arg(long)]
        suspended: bool,
        /// Why (the municipality's request or approval, an incident's reference):
        /// written with the act in the municipality's operation log and the operators'.
        #[arg(long)]
        reason: String,
        /// The municipality's database is lost or unreachable, so its operation log
        /// cannot be written: go on, the operators' log saying so (tell the municipality).
        #[arg(long)]
        without_city_log: bool,
    },
    /// Hold a tenant's backups (or the catalog's: _catalog) for an incident or an
    /// inquiry: retention deletes none of them and no erasure of the tenant begins.
    Hold {
        slug: String,
        /// Why (the incident's or inquiry's reference).
        #[arg(long)]
        reason: String,
    },
    /// End a hold.
    Release { slug: String },
    /// Replace a lost or damaged catalog with one of its backups (path under
    /// DIR/backups/_catalog), with the service stopped. The replaced catalog is kept
    /// renamed; what differs from the cluster and the certificates on disk is listed.
    RestoreCatalog { file: String },
    /// Decrypt a backup file (path under DIR/backups) to a pg_dump archive, checking every byte.
    Decrypt {
        file: String,
        #[arg(long)]
        out: PathBuf,
        /// Why (the municipality's request or approval, an incident's reference):
        /// written with the act in the municipality's operation log and the operators'.
        #[arg(long)]
        reason: String,
        /// The municipality's database is lost or unreachable, so its operation log
        /// cannot be written: go on, the operators' log saying so (tell the municipality).
        #[arg(long)]
        without_city_log: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OperatorCmd {
    /// Write a new key pair: FILE (secret, 0600) and FILE.pub (`ID ed25519 BASE64`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Operator id written in FILE.pub (default: the file name).
        #[arg(long)]
        id: Option<String>,
    },
    /// Register an operator with the public key from a .pub file (auditors need none).
    Add {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        title: String,
        #[arg(long, required_unless_present = "auditor")]
        public_key: Option<PathBuf>,
        /// A read-only auditor of erasure certificates on the ops console.
        #[arg(long)]
        auditor: bool,
    },
    /// List registered operators (a revoked one with when, by whom and why).
    List,
    /// Revoke an operator or auditor for good (a key that may have leaked, a person
    /// who left): nothing they sign is accepted afterwards and their console access
    /// ends. What they signed before stays checkable. The person gets a new id.
    Revoke {
        id: String,
        /// The operator revoking (may be ID itself, e.g. after losing their key).
        #[arg(long)]
        by: String,
        /// Why, recorded with the revocation and in the operation log.
        #[arg(long)]
        reason: String,
    },
    /// Set an operator's (or auditor's) console password and a new TOTP secret. The
    /// password is read from MADOGUCHI_OPERATOR_PASSWORD or the first line of stdin.
    SetPassword { id: String },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Replace the master key: everything the catalog holds wrapped by it is re-wrapped
    /// under a new one in one transaction, the old file is kept as
    /// master.key.retired-<time>, and a catalog backup is made under the new key.
    /// Refused while `serve` or another command runs on this catalog.
    RotateMaster,
}

#[derive(Subcommand, Debug)]
enum SigningKeyCmd {
    /// Replace the key: a new key file, and a transition statement signed by the old
    /// key and the new one, kept in the catalog and carried in certificate files (so
    /// certificates verify against either key); then a catalog backup. Runs beside
    /// `serve`. The platform key is refused while a decommissioning request or a
    /// certificate awaiting its signature is open; its rotation replaces the log key
    /// first.
    Rotate,
    /// Print the key's signed transitions, oldest first (signed notes).
    Transitions,
}

#[derive(Subcommand, Debug)]
enum TlogCmd {
    /// Print the current checkpoint, signed by the log key.
    Checkpoint,
    /// Print the log key (verifier form) that signs checkpoints.
    Key {
        #[command(subcommand)]
        cmd: Option<SigningKeyCmd>,
    },
    /// Print the consistency proof from an earlier size to the current tree (base64, one hash per line).
    Consistency { old_size: u64 },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check the hash chain from the entry the platform last witnessed (kept in the
    /// catalog), then witness the new head; names the first broken row and exits
    /// non-zero if any. --full: every entry from the log's beginning as well.
    Verify {
        slug: String,
        #[arg(long)]
        full: bool,
    },
    /// Delete entries older than the tenant's retention period (default 5 years).
    Prune { slug: String },
    /// After an investigated break: forget the head the platform witnessed and witness
    /// the log as it is now (checked in full), recorded in the control plane's log.
    Rewitness {
        slug: String,
        /// Why (the incident's reference), recorded with it.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum DbCmd {
    /// Print the admin connection URL (it holds the admin password: prefer `db psql`).
    Url {
        /// Why (the municipality's request or approval, an incident's reference):
        /// written with the act in the operators' log.
        #[arg(long)]
        reason: String,
    },
    /// Run psql on the catalog as the admin role, the password passed in the
    /// environment (PGPASSWORD), not on the command line where `ps` shows it.
    Psql {
        /// Why (the municipality's request or approval, an incident's reference):
        /// written with the act in the operators' log.
        #[arg(long)]
        reason: String,

        /// Arguments for psql (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The sender of mail written to files when none is given (`.invalid`: never a
/// real domain).
const FILED_MAIL_FROM: &str = "no-reply@madoguchi.invalid";

fn settings(c: &Common) -> anyhow::Result<(Settings, FileSettings)> {
    let file = FileSettings::load(&c.state_dir)?;
    let mut s = Settings::new(c.state_dir.clone());
    s.database_url = c.database_url.clone().or_else(|| file.database_url.clone());
    s.database_ca = c.database_ca.clone().or_else(|| file.database_ca.clone());
    if let Some(db) = c.catalog_db.clone().or_else(|| file.catalog_db.clone()) {
        s.catalog_db = db;
    }
    if let Some(v) = c.pool_budget.or(file.pool_budget) {
        s.pool.budget = v.max(1);
    }
    if let Some(v) = c.pool_per_tenant.or(file.pool_per_tenant) {
        s.pool.per_tenant = v.max(1);
    }
    if let Some(v) = c.tenant_active.or(file.tenant_active) {
        s.pool.tenant_active = v.max(1);
    }
    if let Some(v) = c.pool_wait_ms.or(file.pool_wait_ms) {
        s.pool.wait = Duration::from_millis(v);
    }
    if let Some(v) = c.pool_idle_secs.or(file.pool_idle_secs) {
        s.pool.idle = Duration::from_secs(v);
    }
    if let Some(v) = c.submit_per_minute.or(file.submit_per_minute) {
        s.limits.submit_per_minute = v;
    }
    if let Some(v) = file.submit_burst {
        s.limits.submit_burst = v.max(1);
    }
    if let Some(v) = file.lgwan_submit_per_minute {
        s.limits.lgwan_submit_per_minute = v;
    }
    if let Some(v) = c.tenant_per_second.or(file.tenant_per_second) {
        s.limits.tenant_per_second = v;
    }
    if let Some(v) = c.pow_spike_per_minute.or(file.pow_spike_per_minute) {
        s.limits.pow_spike_per_minute = v;
    }
    let smtp_url = c.smtp_url.clone().or_else(|| file.smtp_url.clone());
    let mail_from = c.mail_from.clone().or_else(|| file.mail_from.clone());
    let smtp_ca = c.smtp_ca.clone().or_else(|| file.smtp_ca.clone());
    s.identity_ca = c.identity_ca.clone().or_else(|| file.identity_ca.clone());
    s.identity_allow_private_networks =
        c.identity_allow_private_networks || file.identity_allow_private_networks == Some(true);
    s.helpdesk = c
        .helpdesk
        .clone()
        .or_else(|| file.helpdesk.clone())
        .map(|h| h.replace("\\n", "\n").trim().to_owned())
        .filter(|h| !h.is_empty())
        .map(std::sync::Arc::from);
    if s.helpdesk
        .as_ref()
        .is_some_and(|h| h.chars().count() > 1000)
    {
        anyhow::bail!(
            "the help desk (--helpdesk, MADOGUCHI_HELPDESK or helpdesk in madoguchi.toml): at most 1,000 characters"
        );
    }
    s.clamd = c
        .clamd
        .clone()
        .or_else(|| file.clamd.clone())
        .map(|v| madoguchi::scan::Clamd::parse(&v))
        .transpose()?;
    let mail_dir = c.mail_dir.clone().or_else(|| file.mail_dir.clone());
    s.mail = match (smtp_url, mail_dir, mail_from) {
        (Some(_), Some(_), _) => {
            anyhow::bail!("--smtp-url and --mail-dir: mail is sent through a relay or written to files, not both")
        }
        (Some(url), None, Some(from)) => {
            Some(madoguchi::config::MailSettings::relay(&url, &from, smtp_ca))
        }
        (Some(_), None, None) => {
            anyhow::bail!("--smtp-url needs --mail-from (MADOGUCHI_MAIL_FROM): the sender address")
        }
        (None, Some(dir), from) => Some(madoguchi::config::MailSettings {
            way: madoguchi::config::MailWay::Files(dir),
            from: from.unwrap_or_else(|| FILED_MAIL_FROM.to_owned()),
        }),
        (None, None, _) => None,
    };
    if let Some(v) = file.connection_idle_secs {
        s.connection_idle = Duration::from_secs(v.clamp(1, 3600));
    }
    if let Some(v) = file.ceiling_delay_ms {
        s.limits.ceiling_delay = std::time::Duration::from_millis(v.min(10_000));
    }
    s.trusted_proxies = if c.trusted_proxies.is_empty() {
        file.trusted_proxies
            .iter()
            .flatten()
            .map(|t| madoguchi::config::proxy_net(t, "trusted_proxies in madoguchi.toml:"))
            .collect::<anyhow::Result<_>>()?
    } else {
        c.trusted_proxies
            .iter()
            .map(|t| madoguchi::config::proxy_net(t, "--trusted-proxy"))
            .collect::<anyhow::Result<_>>()?
    };
    Ok((s, file))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MADOGUCHI_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,refinery_core=warn,tokio_postgres=warn")
        });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // MADOGUCHI_LOG_FORMAT=json: one JSON object per line, for log collectors.
    if std::env::var("MADOGUCHI_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Making an operator's key pair needs no platform at all.
    if let Command::Operator(OperatorCmd::Keygen { out, id }) = &cli.command {
        let id = id
            .clone()
            .or_else(|| out.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .context("--id is needed")?;
        let signer = madoguchi::crypto::note::NoteSigner::generate(&id)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        use base64::Engine;
        madoguchi::control::keys::write_secret(
            out,
            &base64::engine::general_purpose::STANDARD.encode(*signer.seed()),
        )?;
        let public = out.with_extension(
            out.extension()
                .map_or("pub".to_owned(), |e| format!("{}.pub", e.to_string_lossy())),
        );
        std::fs::write(
            &public,
            madoguchi::control::keys::public_line(&id, signer.public_key().as_bytes()) + "\n",
        )?;
        println!("{}\n{}", out.display(), public.display());
        return Ok(ExitCode::SUCCESS);
    }
    // Verifying a certificate is offline: no catalog, no cluster.
    if let Command::Cert(CertCmd::Verify {
        cert,
        platform_key,
        operators,
        checkpoint,
    }) = &cli.command
    {
        return cert_verify(
            cert,
            platform_key,
            operators.as_deref(),
            checkpoint.as_deref(),
        );
    }
    let (mut settings, file) = settings(&cli.common)?;
    // The demo shows every mail (receipts, 一時保存 and 申請一覧 links) without a relay.
    if matches!(cli.command, Command::Demo { .. }) && settings.mail.is_none() {
        settings.mail = Some(madoguchi::config::MailSettings {
            way: madoguchi::config::MailWay::Files(settings.state_dir.join("mail")),
            from: FILED_MAIL_FROM.to_owned(),
        });
    }
    if let Command::Keys(KeysCmd::RotateMaster) = &cli.command {
        return rotate_master(settings).await;
    }
    if let Command::Backup(BackupCmd::RestoreCatalog { file }) = &cli.command {
        return restore_catalog(settings, file).await;
    }
    let platform = Platform::open(settings).await?;
    let result = dispatch(&platform, &file, cli.command).await;
    let closed = platform.close();
    let code = result?;
    closed?;
    Ok(code)
}

async fn dispatch(p: &Platform, file: &FileSettings, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve_with(p, file, &args, &[]).await,
        Command::Demo {
            serve: mut args,
            tenants,
            tls,
        } => {
            for path in manifest::paths(&tenants)? {
                let m = manifest::read(&path)?;
                let applied = manifest::apply(p, &m, SchemaTarget::Newest)
                    .await
                    .with_context(|| format!("applying {}", path.display()))?;
                eprintln!("{}: {}", m.slug, describe(&applied));
            }
            // The demo's tenants follow the binary's schema, whatever ran before.
            let report =
                migrate_many(p, p.catalog.list_tenants().await?, SchemaTarget::Newest, 4).await;
            for (slug, err) in &report.failed {
                eprintln!("{slug}: migration failed: {err}");
            }
            let mut accounts = Vec::new();
            for t in p.catalog.list_tenants().await? {
                if t.state == TenantState::Active {
                    let account = madoguchi::control::tenant_admin::seed_demo(p, &t)
                        .await
                        .with_context(|| format!("seeding demo data of {}", t.slug))?;
                    accounts.push((t, account));
                }
            }
            if tls && args.tls_cert.is_none() {
                let mut hosts: Vec<String> =
                    accounts.iter().flat_map(|(t, _)| t.hosts.clone()).collect();
                hosts.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
                let dir = p.settings.state_dir.join("tls");
                let files = madoguchi::front::tls::local_ca(&dir, &hosts)?;
                eprintln!(
                    "TLS: a local CA made for the demo; trust {} in the browser (or curl --cacert)",
                    dir.join("ca.pem").display()
                );
                args.tls_cert = Some(files.cert);
                args.tls_key = Some(files.key);
            }
            serve_with(p, file, &args, &accounts).await
        }
        Command::Tenant(cmd) => tenant(p, cmd).await,
        Command::Cert(cmd) => cert_cmd(p, cmd).await,
        Command::Notice(NoticeCmd::Add { from, until, text }) => {
            let id = madoguchi::control::notices::add(p, &cli_actor(), from, until, &text).await?;
            let rfc = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            };
            println!(
                "notice {id} posted: shown from {} until {}",
                rfc(from),
                rfc(until)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Notice(NoticeCmd::List) => {
            let jst = time::macros::offset!(+9);
            let shown = |t: time::OffsetDateTime| {
                t.to_offset(jst)
                    .format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute] JST"
                    ))
                    .unwrap_or_default()
            };
            println!("ID\tFROM\tUNTIL\tTEXT");
            for n in madoguchi::control::notices::current(p).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    n.id,
                    shown(n.shown_from),
                    shown(n.shown_until),
                    n.body
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notice(NoticeCmd::Remove { id }) => {
            if madoguchi::control::notices::remove(p, &cli_actor(), id).await? {
                println!("notice {id} removed");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("お知らせ {id} はありません / no notice {id}")
            }
        }
        Command::OpsLog(OpsLogCmd::Verify) => {
            let n = madoguchi::control::oplog::verify(&p.catalog).await?;
            println!("operation log intact: {n} entries");
            Ok(ExitCode::SUCCESS)
        }
        Command::OpsLog(OpsLogCmd::Show { limit }) => {
            for e in madoguchi::control::oplog::recent(&p.catalog, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.seq,
                    e.at.format(&time::format_description::well_known::Rfc3339)?,
                    e.actor,
                    e.action,
                    e.target,
                    e.detail
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            all,
            slug,
            parallel,
            to,
        } => {
            let target = to.map_or(Ok(SchemaTarget::Newest), SchemaTarget::version)?;
            let tenants = match (all, slug) {
                (_, Some(slug)) => {
                    vec![named_tenant(p, &slug).await?]
                }
                (true, None) => p.catalog.list_tenants().await?,
                (false, None) => {
                    println!(
                        "catalog: schema version {}",
                        madoguchi::catalog::Catalog::latest_version()
                    );
                    println!("name a tenant or pass --all to migrate tenant databases");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let report = migrate_many(p, tenants, target, parallel).await;
            let versions: Vec<String> = report
                .versions
                .iter()
                .map(|(version, n)| format!("{n} at {version}"))
                .collect();
            println!(
                "catalog: schema version {}; tenants migrated: {} (schema version {}), failed: {}, skipped: {}",
                madoguchi::catalog::Catalog::latest_version(),
                report.migrated(),
                versions.join(", "),
                report.failed.len(),
                report.skipped.len()
            );
            for (slug, err) in &report.failed {
                eprintln!("  {slug}: {err}");
            }
            for (slug, what) in &report.skipped {
                eprintln!("  {slug}: 未移行 / not migrated: {what}");
            }
            // A tenant named and not migrated is a failure; skipped among all, a note.
            Ok(
                if report.failed.is_empty() && (all || report.skipped.is_empty()) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Audit(cmd) => {
            let slug = match &cmd {
                AuditCmd::Verify { slug, .. }
                | AuditCmd::Prune { slug }
                | AuditCmd::Rewitness { slug, .. } => slug.clone(),
            };
            let rec = named_tenant(p, &slug).await?;
            let mut conn = p
                .cluster
                .connect_tenant(&p.catalog, p.keys.as_ref(), &rec)
                .await?;
            match cmd {
                AuditCmd::Verify { full, .. } => {
                    drop(conn);
                    // From the head the platform witnessed last, which it then moves on.
                    match madoguchi::control::audit_witness::check(p, &rec, full).await? {
                        madoguchi::tenant::audit::Verdict::Intact(n) => {
                            let since = if full { "" } else { " since the last check" };
                            println!("OK: operation log of {slug} intact ({n} entries{since})");
                            Ok(ExitCode::SUCCESS)
                        }
                        madoguchi::tenant::audit::Verdict::Broken { seq, reason } => {
                            println!("BROKEN: operation log of {slug}: first broken entry {seq}: {reason}");
                            Ok(ExitCode::FAILURE)
                        }
                    }
                }
                AuditCmd::Rewitness { reason, .. } => {
                    drop(conn);
                    let verdict = madoguchi::control::audit_witness::rewitness(
                        p,
                        &rec,
                        &cli_actor(),
                        &reason,
                    )
                    .await?;
                    println!("{slug}: the operation log is witnessed anew ({verdict:?})");
                    Ok(ExitCode::SUCCESS)
                }
                AuditCmd::Prune { .. } => {
                    let n = madoguchi::tenant::audit::prune(&mut conn.client)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("deleted {n} entries older than the retention period");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Backup(cmd) => {
            let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
            match cmd {
                // Handled before the platform is opened for the command.
                BackupCmd::RestoreCatalog { .. } => Ok(ExitCode::SUCCESS),
                BackupCmd::Hold { slug, reason } => {
                    madoguchi::control::backup::hold(p, &slug, &cli_actor(), &reason).await?;
                    println!("the backups of {slug} are held: retention deletes none and no erasure begins until `backup release {slug}`");
                    Ok(ExitCode::SUCCESS)
                }
                BackupCmd::Release { slug } => {
                    madoguchi::control::backup::release(p, &slug, &cli_actor()).await?;
                    println!("the backups of {slug} are no longer held");
                    Ok(ExitCode::SUCCESS)
                }
                BackupCmd::Run { slug, all, catalog } => {
                    if catalog || all {
                        let m = with_spinner(
                            "backup _catalog",
                            madoguchi::control::backup::run_catalog(p, &store),
                        )
                        .await?;
                        println!(
                            "catalog: {} ({} bytes, sha256 {})",
                            m.file, m.size, m.sha256
                        );
                        if catalog {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    let tenants = match (slug, all) {
                        (Some(s), _) => {
                            vec![named_tenant(p, &s).await?]
                        }
                        (None, true) => p
                            .catalog
                            .list_tenants()
                            .await?
                            .into_iter()
                            .filter(|t| t.state.backed_up())
                            .collect(),
                        (None, false) => anyhow::bail!("name a tenant or pass --all"),
                    };
                    let bar = indicatif::ProgressBar::new(tenants.len() as u64);
                    let mut failed = 0;
                    for t in &tenants {
                        bar.set_message(t.slug.clone());
                        match with_spinner(
                            &format!("backup {}", t.slug),
                            madoguchi::control::backup::run(p, &store, t),
                        )
                        .await
                        {
                            Ok(m) => {
                                bar.println(format!(
                                    "{}: {} ({} bytes, sha256 {})",
                                    t.slug, m.file, m.size, m.sha256
                                ));
                                madoguchi::control::oplog::record(
                                    &p.catalog,
                                    &cli_actor(),
                                    "tenant.backup",
                                    &t.slug,
                                    serde_json::json!({ "file": m.file, "sha256": m.sha256 }),
                                )
                                .await?;
                                if all {
                                    let kept = madoguchi::control::backup::Retention::default();
                                    match madoguchi::control::backup::prune(
                                        p, &store, &t.slug, &kept,
                                    )
                                    .await
                                    {
                                        Ok(n) => {
                                            if n > 0 {
                                                bar.println(format!("{}: {n} old backup(s) removed (retention 7 daily, 4 weekly, 12 monthly)", t.slug));
                                            }
                                            match madoguchi::control::data_key::retire_unused(p, t).await {
                                                Ok(v) if v.is_empty() => {}
                                                Ok(v) => bar.println(format!("{}: data-key version(s) {v:?} deleted (no backup needs them)", t.slug)),
                                                Err(e) => {
                                                    failed += 1;
                                                    bar.println(format!("{}: retiring data keys FAILED: {e:#}", t.slug));
                                                }
                                            }
                                        }
                                        Err(e) => {
                                            failed += 1;
                                            bar.println(format!(
                                                "{}: pruning FAILED: {e:#}",
                                                t.slug
                                            ));
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                failed += 1;
                                bar.println(format!("{}: FAILED: {e:#}", t.slug));
                            }
                        }
                        bar.inc(1);
                    }
                    bar.finish_and_clear();
                    Ok(if failed == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                BackupCmd::List { slug } => {
                    for m in madoguchi::control::backup::list(p, slug.as_deref()).await? {
                        println!(
                            "{}\t{}\t{}\t{}\tschema {}\tkey v{}\t{}",
                            m.created_at,
                            m.tenant,
                            m.file,
                            m.size,
                            m.schema_version,
                            m.key_version,
                            m.sha256
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                BackupCmd::Drill { slug } => {
                    let rec = named_tenant(p, &slug).await?;
                    let report = with_spinner(
                        &format!("drill {slug}"),
                        madoguchi::control::backup::drill(p, &store, &rec),
                    )
                    .await?;
                    madoguchi::control::oplog::record(
                        &p.catalog,
                        &cli_actor(),
                        "tenant.drill",
                        &slug,
                        serde_json::json!({ "ok": report.ok, "seconds": report.seconds }),
                    )
                    .await?;
                    for t in &report.tables {
                        println!(
                            "{}\t{}\t{}\t{}",
                            if t.same { "same" } else { "DIFFERENT" },
                            t.table,
                            t.source_rows,
                            t.restored_rows
                        );
                    }
                    println!(
                        "{}: drill of backup {} {} in {:.1} s",
                        report.tenant,
                        report.backup,
                        if report.ok { "OK" } else { "FAILED" },
                        report.seconds
                    );
                    Ok(if report.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                BackupCmd::Restore {
                    file,
                    into,
                    hosts,
                    suspended,
                    reason,
                    without_city_log,
                } => {
                    let source = madoguchi::control::backup::backup_tenant(&store, &file)?;
                    // What can be refused before anything is made is checked before the
                    // act goes into the city's log (the file against the catalog, the
                    // new slug and hosts as written).
                    madoguchi::control::backup::check_against_record(p, &store, &file).await?;
                    madoguchi::domain::Slug::parse(&into)?;
                    for h in &hosts {
                        madoguchi::domain::HostName::parse(h)?;
                    }
                    log_reach(
                        p,
                        Reach {
                            tenant: source,
                            action: "operator.backup_restore",
                            target: &file,
                            reason: &reason,
                            without_city_log,
                            detail: serde_json::json!({ "into": into, "hosts": hosts }),
                        },
                    )
                    .await?;
                    let restored = with_spinner(
                        &format!("restore into {into}"),
                        madoguchi::control::backup::restore_as(
                            p, &store, &file, &into, &hosts, suspended,
                        ),
                    )
                    .await;
                    let rec = match restored {
                        Ok(rec) => rec,
                        Err(e) => {
                            // The city's log said it would happen: it says it did not.
                            if let Ok(Some(src)) = p.catalog.tenant_by_id(source).await {
                                let _ = madoguchi::control::tenant_admin::record_operator_act(
                                    p,
                                    &src,
                                    &cli_actor(),
                                    "operator.backup_restore_failed",
                                    &file,
                                    &reason,
                                    serde_json::json!({ "into": into, "error": format!("{e:#}") }),
                                )
                                .await;
                            }
                            return Err(e);
                        }
                    };
                    madoguchi::control::oplog::record(
                        &p.catalog,
                        &cli_actor(),
                        "backup.restore",
                        &rec.slug,
                        serde_json::json!({ "file": file, "suspended": suspended }),
                    )
                    .await?;
                    println!(
                        "restored into {} (database {}, hosts {}, {})",
                        rec.slug,
                        rec.database,
                        rec.hosts.join(","),
                        rec.state.as_str()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                BackupCmd::Decrypt {
                    file,
                    out,
                    reason,
                    without_city_log,
                } => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let whose = madoguchi::control::backup::backup_tenant(&store, &file)?;
                    madoguchi::control::tenant_admin::reason(&reason)?;
                    // The file is made before the act is logged: a log entry says it
                    // happened, so what can fail first fails before it.
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&out)
                        .with_context(|| format!("creating {}", out.display()))?;
                    let logged = log_reach(
                        p,
                        Reach {
                            tenant: whose,
                            action: "operator.backup_decrypt",
                            target: &file,
                            reason: &reason,
                            without_city_log,
                            detail: serde_json::json!({ "out": out.display().to_string() }),
                        },
                    )
                    .await;
                    if let Err(e) = logged {
                        let _ = std::fs::remove_file(&out);
                        return Err(e);
                    }
                    if let Err(e) = madoguchi::control::backup::decrypt(
                        p,
                        &store,
                        &file,
                        std::io::BufWriter::new(f),
                    )
                    .await
                    {
                        let _ = std::fs::remove_file(&out);
                        return Err(e);
                    }
                    println!("{}", out.display());
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Operator(OperatorCmd::Keygen { .. }) | Command::Keys(_) => Ok(ExitCode::SUCCESS),
        Command::Operator(OperatorCmd::Add {
            id,
            name,
            title,
            public_key,
            auditor,
        }) => {
            let key = match (&public_key, auditor) {
                (Some(path), false) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let keys = madoguchi::control::keys::parse_public_lines(&text)?;
                    keys.iter()
                        .find(|(kid, _)| *kid == id)
                        .with_context(|| format!("{} holds no key for {id}", path.display()))?
                        .1
                        .to_vec()
                }
                (Some(_), true) => anyhow::bail!("auditors do not sign; leave out --public-key"),
                (None, _) => Vec::new(),
            };
            let role = if auditor { "auditor" } else { "operator" };
            p.catalog
                .add_operator(&madoguchi::catalog::Operator {
                    id: id.clone(),
                    name,
                    title,
                    role: role.to_owned(),
                    public_key: key,
                    revoked: None,
                })
                .await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "operator.add",
                &id,
                serde_json::json!({ "role": role }),
            )
            .await?;
            println!("registered {role} {id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator(OperatorCmd::List) => {
            for o in p.catalog.operators().await? {
                let key: [u8; 32] = o.public_key.clone().try_into().unwrap_or([0; 32]);
                let key = if o.role == "auditor" {
                    "auditor (no signing key)".to_owned()
                } else {
                    madoguchi::control::keys::public_line(&o.id, &key)
                };
                let revoked = o.revoked.map_or(String::new(), |r| {
                    format!("\trevoked {} by {}: {}", r.at, r.by, r.reason)
                });
                println!("{}\t{}\t{}\t{key}{revoked}", o.id, o.name, o.title);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator(OperatorCmd::Revoke { id, by, reason }) => {
            let done =
                madoguchi::control::operators::revoke(p, &cli_actor(), &id, &by, &reason).await?;
            println!(
                "revoked {id} at {}; their console sessions are ended",
                done.at
            );
            for slug in &done.open_requests {
                println!(
                    "warning: {id} signed the open decommissioning request of {slug}; no erasure follows it. Withdraw it (madoguchi tenant withdraw-decommission {slug} --operator YOURID) and, if still wanted, request again"
                );
            }
            for (kind, slug) in &done.unsigned {
                println!(
                    "warning: a {kind} of {slug} waits for {id}'s signature and can no longer be signed{}",
                    if kind == "erasure_certificate" {
                        ": the erasure is done but its certificate stays unsigned; escalate (ops/runbooks/keys.md)"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator(OperatorCmd::SetPassword { id }) => {
            let password = match std::env::var("MADOGUCHI_OPERATOR_PASSWORD") {
                Ok(p) => zeroize::Zeroizing::new(p),
                Err(_) => {
                    eprintln!(
                        "パスワードを入力してください（12文字以上） / Password (12+ characters):"
                    );
                    let mut line = zeroize::Zeroizing::new(String::new());
                    std::io::stdin().read_line(&mut line)?;
                    zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
                }
            };
            let secret = madoguchi::ops::set_credentials(p, &id, &password).await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "operator.set_password",
                &id,
                serde_json::json!({}),
            )
            .await?;
            println!(
                "TOTP secret (add it to an authenticator app): {}\n{}",
                madoguchi::tenant::staff::totp_base32(&secret),
                madoguchi::tenant::staff::otpauth_uri(&secret, "Madoguchi ops", &id)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::PlatformKey { cmd } => {
            signing_key(p, madoguchi::control::key_transition::Role::Platform, cmd).await
        }
        Command::Tlog(TlogCmd::Key { cmd }) => {
            signing_key(p, madoguchi::control::key_transition::Role::Log, cmd).await
        }
        Command::Tlog(cmd) => {
            let signer = madoguchi::control::keys::log_signer(p).await?;
            let leaves = p.catalog.tlog_leaves().await?;
            match cmd {
                TlogCmd::Key { .. } => println!("{}", signer.verifier_key()),
                TlogCmd::Checkpoint => {
                    let root = madoguchi::crypto::tlog::root(&leaves);
                    let text = madoguchi::crypto::note::checkpoint_text(
                        signer.name(),
                        leaves.len() as u64,
                        &root,
                    );
                    print!(
                        "{}",
                        signer
                            .sign_note(&text)
                            .map_err(|e| anyhow::anyhow!("{e}"))?
                    );
                }
                TlogCmd::Consistency { old_size } => {
                    let old = usize::try_from(old_size)?;
                    if old == 0 || old > leaves.len() {
                        anyhow::bail!(
                            "OLD_SIZE must be between 1 and the current size {}",
                            leaves.len()
                        );
                    }
                    use base64::Engine;
                    for h in madoguchi::crypto::tlog::consistency_proof(&leaves, old) {
                        println!("{}", base64::engine::general_purpose::STANDARD.encode(h));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCmd::Url { reason }) => {
            log_admin_use(p, "db.url", &reason).await?;
            // For libpq: with TLS, the certificate and the host name checked against
            // the CA the service trusts (the stored sslmode=require would check neither).
            let url = p.admin_url().to_owned();
            let url = match p
                .cluster
                .tls()
                .client_env()
                .iter()
                .find(|(k, _)| *k == "PGSSLROOTCERT")
            {
                Some((_, root)) => format!(
                    "{}&sslrootcert={}",
                    url.replace("sslmode=require", "sslmode=verify-full"),
                    form_urlencoded::byte_serialize(root.as_bytes()).collect::<String>()
                ),
                None => url,
            };
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCmd::Psql { args, reason }) => {
            log_admin_use(p, "db.psql", &reason).await?;
            let (url, password) = without_password(p.admin_url())?;
            let mut cmd = std::process::Command::new("psql");
            // The URL's own sslmode (require) would not check the server's name.
            let url = if p.cluster.tls().is_tls() {
                url.replace("sslmode=require", "sslmode=verify-full")
            } else {
                url
            };
            cmd.arg(url).args(&args).envs(p.cluster.tls().client_env());
            if let Some(pw) = password {
                cmd.env("PGPASSWORD", pw.as_str());
            }
            let status = cmd.status().context("running psql")?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The URL without its password, and the password (decoded), so the password can
/// travel in the environment rather than in a process's arguments.
fn without_password(url: &str) -> anyhow::Result<(String, Option<zeroize::Zeroizing<String>>)> {
    let cfg: tokio_postgres::Config = url.parse().context("the admin URL does not parse")?;
    let password = cfg
        .get_password()
        .map(|p| zeroize::Zeroizing::new(String::from_utf8_lossy(p).into_owned()));
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key=value string: every word but the password.
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|w| !w.starts_with("password="))
            .collect();
        return Ok((kept.join(" "), password));
    };
    // The authority ends at the first '/' after the user info (a password may hold
    // '?' or '#'), or where the query begins when there is no path.
    let after_at = rest.rfind('@').map_or(0, |at| at + 1);
    let end = rest[after_at..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| after_at + i);
    let (authority, tail) = rest.split_at(end);
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let mut stripped = format!("{scheme}://{authority}{path}");
    // `?password=…` among the parameters is a password too.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("password="))
        .collect();
    if !kept.is_empty() {
        stripped.push('?');
        stripped.push_str(&kept.join("&"));
    }
    Ok((stripped, password))
}

/// Who ran a command, for the operation log.
/// `keys rotate-master`, then a catalog backup under the new key (from a platform
/// opened anew, which loads it).
async fn rotate_master(settings: madoguchi::config::Settings) -> anyhow::Result<ExitCode> {
    let p = Platform::open(settings.clone()).await?;
    let rotated = madoguchi::control::master_key::rotate(&p, &cli_actor()).await;
    p.close()?;
    let rotated = rotated?;
    println!(
        "the master key is new: {} tenant keys and {} operators' TOTP secrets re-wrapped\nthe old key is kept as {} (it opens the {} catalog backups made before now): escrow the new master.key, then keep or destroy the old one as your key policy says (ops/runbooks/keys.md)",
        rotated.tenant_keys,
        rotated.totp_secrets,
        rotated.retired.display(),
        rotated.old_catalog_backups
    );
    let p = Platform::open(settings).await?;
    let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
    let backup = madoguchi::control::backup::run_catalog(&p, &store).await;
    p.close()?;
    let m = backup.context("the key is rotated, but the catalog backup under the new key failed: run `madoguchi backup run --catalog`")?;
    println!(
        "catalog backup under the new key: {} ({} bytes)",
        m.file, m.size
    );
    Ok(ExitCode::SUCCESS)
}

/// `platform-key` and `tlog key`: print, rotate, or list the transitions.
async fn signing_key(
    p: &Platform,
    role: madoguchi::control::key_transition::Role,
    cmd: Option<SigningKeyCmd>,
) -> anyhow::Result<ExitCode> {
    use madoguchi::control::key_transition::{Role, Transition};
    use madoguchi::control::keys;
    match cmd {
        None => {
            let signer = match role {
                Role::Platform => keys::platform_signer(p).await?,
                Role::Log => keys::log_signer(p).await?,
            };
            println!("{}", signer.verifier_key());
        }
        Some(SigningKeyCmd::Transitions) => {
            for note in p.catalog.key_transitions().await? {
                if Transition::open(&note).is_some_and(|t| t.role == role) {
                    print!("{note}");
                }
            }
        }
        Some(SigningKeyCmd::Rotate) => {
            for done in keys::rotate_signer(p, role, &cli_actor()).await? {
                let (file, _) = keys::file_and_name(done.role);
                println!(
                    "{file}: new key {}\n  replaces {} (kept as {}: destroy it once the new key is escrowed, see ops/runbooks/keys.md)\n  transition signed by both keys:\n{}",
                    done.new,
                    done.old,
                    done.retired.display(),
                    done.statement
                );
            }
            let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
            let m = madoguchi::control::backup::run_catalog(p, &store).await.context(
                "the key is rotated, but the catalog backup holding its transition failed: run `madoguchi backup run --catalog`",
            )?;
            println!(
                "catalog backup with the transition: {} ({} bytes)",
                m.file, m.size
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup restore-catalog`, then the platform opened on the restored catalog (which
/// migrates it if it is older), and the restore recorded in its operation log.
async fn restore_catalog(
    settings: madoguchi::config::Settings,
    file: &str,
) -> anyhow::Result<ExitCode> {
    let p = Platform::open(settings.clone()).await?;
    let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
    let restored = madoguchi::control::catalog_restore::restore(&p, &store, file).await;
    p.close()?;
    let r = restored?;
    let p = Platform::open(settings).await?;
    let logged = madoguchi::control::oplog::record(
        &p.catalog,
        &cli_actor(),
        "catalog.restore",
        file,
        serde_json::json!({
            "replaced": r.replaced,
            "missing_databases": r.missing_databases,
            "unknown_databases": r.unknown_databases,
            "unlogged_certificates": r.unlogged_certificates,
        }),
    )
    .await;
    p.close()?;
    logged?;
    println!(
        "the catalog is restored from {file}: {} tenants. The catalog it replaced is kept as database {} (drop it once all is well)",
        r.tenants, r.replaced
    );
    for slug in &r.missing_databases {
        println!("warning: tenant {slug}: its database is not in the cluster (erased or lost since the backup); see ops/runbooks/backup-and-restore.md");
    }
    for db in &r.unknown_databases {
        println!("warning: database {db} is in the cluster but not in the restored catalog (made since the backup): its keys are lost, so its data cannot be read; keep it and escalate");
    }
    for cert in &r.unlogged_certificates {
        println!("warning: certificate {cert} (DIR/certificates) is not in the restored transparency log: keep the file; escalate before issuing checkpoints");
    }
    Ok(ExitCode::SUCCESS)
}

/// The tenant a command names, or an error saying there is none.
async fn named_tenant(
    p: &Platform,
    slug: &str,
) -> anyhow::Result<madoguchi::catalog::TenantRecord> {
    p.catalog
        .tenant_by_slug(slug)
        .await?
        .with_context(|| format!("テナント「{slug}」はありません / no tenant {slug}"))
}

/// Where a tenant's site is reached, for links a command prints: `--base-url`, else
/// its first host on the default port; without a trailing slash.
fn site_base(rec: &madoguchi::catalog::TenantRecord, base_url: Option<String>) -> String {
    let base = base_url.unwrap_or_else(|| {
        format!(
            "http://{}:8080",
            rec.hosts.first().map_or("localhost", String::as_str)
        )
    });
    base.trim_end_matches('/').to_owned()
}

/// A use of the cluster's admin role (`db psql`, `db url`), with its reason, in the
/// operators' log.
async fn log_admin_use(p: &Platform, action: &str, reason: &str) -> anyhow::Result<()> {
    let reason = madoguchi::control::tenant_admin::reason(reason)?;
    madoguchi::control::oplog::record(
        &p.catalog,
        &cli_actor(),
        action,
        "admin",
        serde_json::json!({ "reason": reason }),
    )
    .await
}

/// An operator's reach into data held for a municipality (see [`log_reach`]).
struct Reach<'a> {
    /// Whose data: the tenant's id (nil: the catalog's own backup).
    tenant: uuid::Uuid,
    action: &'a str,
    target: &'a str,
    reason: &'a str,
    without_city_log: bool,
    detail: serde_json::Value,
}

/// Before an operator reaches into a municipality's data: the act, who and why in
/// the municipality's own operation log (its administrators read it) and in the
/// operators' log. Refused when the municipality's log cannot be written, unless
/// `without_city_log` (its database lost), which the operators' log then records
/// with the error. The catalog's own backups concern no one municipality: the
/// operators' log alone.
async fn log_reach(p: &Platform, r: Reach<'_>) -> anyhow::Result<()> {
    let reason = madoguchi::control::tenant_admin::reason(r.reason)?;
    let by = cli_actor();
    let rec = if r.tenant.is_nil() {
        None
    } else {
        p.catalog.tenant_by_id(r.tenant).await?
    };
    let city_log = match &rec {
        None if r.tenant.is_nil() => "none (the catalog's own)".to_owned(),
        None => "none (the municipality is no longer in the catalog)".to_owned(),
        Some(rec) => match madoguchi::control::tenant_admin::record_operator_act(
            p,
            rec,
            &by,
            r.action,
            r.target,
            &reason,
            r.detail.clone(),
        )
        .await
        {
            Ok(()) => "written".to_owned(),
            Err(e) if r.without_city_log => format!("not written: {e:#}"),
            Err(e) => anyhow::bail!(
                "{}の操作ログに記録できないため中止しました / stopped: the act cannot be written in {}'s operation log: {e:#}\n(its database lost? add --without-city-log to go on, recorded in the operators' log, and tell the municipality)",
                rec.name,
                rec.slug
            ),
        },
    };
    let mut detail = r.detail;
    if let Some(d) = detail.as_object_mut() {
        d.insert("reason".into(), reason.into());
        d.insert("city_log".into(), city_log.into());
    }
    let target = rec.as_ref().map_or_else(
        || r.target.to_owned(),
        |t| format!("{}:{}", t.slug, r.target),
    );
    madoguchi::control::oplog::record(&p.catalog, &by, r.action, &target, detail).await
}

fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn cert_verify(
    cert: &std::path::Path,
    platform_key: &str,
    operators: Option<&std::path::Path>,
    checkpoint: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let platform_key = if std::path::Path::new(platform_key).is_file() {
        read_text(std::path::Path::new(platform_key))?
    } else {
        platform_key.to_owned()
    };
    let ops = operators
        .map(|p| madoguchi::control::keys::parse_public_lines(&read_text(p)?))
        .transpose()?;
    let older = checkpoint.map(read_text).transpose()?;
    let verdict = madoguchi::control::certificate::verify(
        &read_text(cert)?,
        &madoguchi::control::certificate::Trust {
            platform_key: platform_key.trim(),
            operators: ops.as_deref(),
            older_checkpoint: older.as_deref(),
        },
    );
    print!("{}", verdict.report());
    Ok(if verdict.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each erasure step as it finishes.
struct PrintSteps;
impl madoguchi::control::erase::Progress for PrintSteps {
    fn step(&self, n: usize, total: usize, s: &madoguchi::control::certificate::Step) {
        eprintln!("[{n}/{total}] {}: {} ({})", s.step, s.detail, s.finished_at);
    }
}

async fn cert_cmd(p: &Platform, cmd: CertCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCmd::Verify { .. } => Ok(ExitCode::SUCCESS),
        CertCmd::Export { id, since } => {
            let file = madoguchi::control::erase::export_certificate(p, id, &since).await?;
            println!("{}", serde_json::to_string_pretty(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        CertCmd::Sign { id, key } => {
            let certificate = madoguchi::control::erase::pending_certificate(p, id).await?;
            let signer = madoguchi::control::keys::load_signer(
                &key,
                &certificate.verified_by.operator_id,
                false,
            )?;
            let msg = madoguchi::control::certificate::certificate_message(&certificate)?;
            let (_, path) =
                madoguchi::control::erase::issue(p, id, &signer.sign_bytes(&msg)).await?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        CertCmd::List { pending: true } => {
            for (id, slug, verifier) in madoguchi::control::erase::pending_certificates(p).await? {
                println!(
                    "{id}\t{slug}\tawaits the signature of {verifier} (cert sign {id} --key FILE)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCmd::List { pending: false } => {
            for c in madoguchi::control::erase::issued(p).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\tlog #{}\t{} / {}\t{}",
                    c.id,
                    c.issued_at
                        .format(&time::format_description::well_known::Rfc3339)?,
                    c.tenant_slug,
                    c.tenant_name,
                    c.local_gov_code,
                    c.tlog_index,
                    c.sanitized_by,
                    c.verified_by,
                    if c.verified {
                        "verified"
                    } else {
                        "VERIFICATION FAILED"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe(a: &Applied) -> String {
    match a {
        Applied::Created => "created".into(),
        Applied::Unchanged => "unchanged".into(),
        Applied::Updated(changes) => format!("updated ({})", changes.join("; ")),
    }
}

async fn tenant(p: &Platform, cmd: TenantCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCmd::Create {
            slug,
            name,
            code,
            hosts,
            training,
        } => {
            let mut spec = TenantSpec::parse(&slug, &name, &code, &hosts)?;
            spec.training = training;
            let rec = provision(p, &spec).await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.create",
                &rec.slug,
                serde_json::json!({ "code": rec.code, "hosts": rec.hosts }),
            )
            .await?;
            println!(
                "created {} ({} {}) database {} hosts {}",
                rec.slug,
                rec.name,
                rec.code,
                rec.database,
                rec.hosts.join(",")
            );
        }
        TenantCmd::Apply {
            path,
            schema_version,
        } => {
            let schema = schema_version.map_or(Ok(SchemaTarget::Newest), SchemaTarget::version)?;
            for path in manifest::paths(&path)? {
                let m = manifest::read(&path)?;
                let started = std::time::Instant::now();
                let applied = manifest::apply(p, &m, schema)
                    .await
                    .with_context(|| format!("applying {}", path.display()))?;
                if !matches!(applied, Applied::Unchanged) {
                    madoguchi::control::oplog::record(
                        &p.catalog,
                        &cli_actor(),
                        "tenant.apply",
                        &m.slug,
                        serde_json::json!({ "result": describe(&applied) }),
                    )
                    .await?;
                }
                println!(
                    "{}: {} ({} ms)",
                    m.slug,
                    describe(&applied),
                    started.elapsed().as_millis()
                );
            }
        }
        TenantCmd::List { json } => {
            let tenants = p.catalog.list_tenants().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                println!(
                    "{:<16} {:<12} {:<7} {:<12} {:<6} {:<35} HOSTS",
                    "SLUG", "NAME", "CODE", "STATE", "SCHEMA", "DATABASE"
                );
                for t in tenants {
                    println!(
                        "{:<16} {:<12} {:<7} {:<12} {:<6} {:<35} {}",
                        t.slug,
                        t.name,
                        t.code,
                        t.state,
                        t.schema_version,
                        t.database,
                        t.hosts.join(",")
                    );
                }
            }
        }
        TenantCmd::AddStaff {
            slug,
            email,
            role,
            department,
            name,
            base_url,
        } => {
            let rec = named_tenant(p, &slug).await?;
            let role = madoguchi::tenant::staff::Role::parse(&role)
                .with_context(|| format!("権限「{role}」はありません（admin, dept_manager, staff, viewer） / unknown role {role:?}"))?;
            if role != madoguchi::tenant::staff::Role::Admin && department.is_none() {
                anyhow::bail!("管理者以外は --department が必要です / --department is required for roles other than admin");
            }
            let token = madoguchi::control::tenant_admin::add_staff(
                p,
                &rec,
                &email,
                &name,
                role,
                department.as_deref(),
            )
            .await?;
            println!("{}/admin/setup/{token}", site_base(&rec, base_url));
            eprintln!(
                "one-time setup link for {email} ({}), valid 24 hours",
                role.label()
            );
        }
        TenantCmd::TrainingReset {
            slug,
            seats,
            department,
            forms,
            base_url,
        } => {
            let rec = named_tenant(p, &slug).await?;
            let documents = match forms {
                None => Vec::new(),
                Some(dir) => {
                    let mut files = Vec::new();
                    for entry in std::fs::read_dir(&dir)
                        .with_context(|| format!("reading {}", dir.display()))?
                    {
                        let path = entry
                            .with_context(|| format!("reading {}", dir.display()))?
                            .path();
                        if path
                            .extension()
                            .is_some_and(|x| x.eq_ignore_ascii_case("json"))
                        {
                            files.push(path);
                        }
                    }
                    files.sort();
                    if files.is_empty() {
                        anyhow::bail!(
                            "{} に *.json のフォームがありません / no *.json form in {}",
                            dir.display(),
                            dir.display()
                        );
                    }
                    files
                        .iter()
                        .map(|f| {
                            std::fs::read_to_string(f)
                                .with_context(|| format!("reading {}", f.display()))
                                .map(|json| (f.display().to_string(), json))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?
                }
            };
            let done = madoguchi::control::training::reset(
                p,
                &cli_actor(),
                &rec,
                seats,
                &department,
                &documents,
            )
            .await?;
            let base = site_base(&rec, base_url);
            eprintln!(
                "申請{}件とフォーム{}件を削除しました。各席の設定用リンクの有効期限は24時間です / deleted {} applications and {} forms; each seat's setup link is valid 24 hours",
                done.applications, done.forms, done.applications, done.forms
            );
            for s in &done.seats {
                println!("{}\t{base}/admin/setup/{}", s.email, s.setup_token);
            }
            for f in &done.published {
                println!("form\t{base}{f}");
            }
        }
        TenantCmd::ApiToken {
            slug,
            name,
            scopes,
            network,
        } => {
            use madoguchi::tenant::api::tokens::TokenNetwork;
            let network = match network.as_str() {
                "admin" | "any" => TokenNetwork::parse(&network, ""),
                ranges => TokenNetwork::parse("listed", ranges),
            }
            .map_err(|e| anyhow::anyhow!("{}", madoguchi::control::tenant_admin::describe(e)))?;
            let rec = named_tenant(p, &slug).await?;
            let token =
                madoguchi::control::tenant_admin::api_token(p, &rec, &name, &scopes, &network)
                    .await?;
            println!("{token}");
            eprintln!(
                "API token {name:?} for {slug} ({}); it is not shown again",
                scopes.join(", ")
            );
        }
        TenantCmd::ScanFiles {
            slug,
            all,
            again,
            metrics_dir,
        } => {
            // The metrics speak of a whole run.
            if metrics_dir.is_some() && !all {
                anyhow::bail!("--metrics-dir は --all と使います / --metrics-dir goes with --all");
            }
            let clamd = p.settings.clamd.clone().context(
                "ウイルスチェックには --clamd（MADOGUCHI_CLAMD）が必要です / set --clamd (MADOGUCHI_CLAMD) to scan",
            )?;
            let tenants: Vec<_> = match slug {
                Some(slug) if !all => {
                    vec![named_tenant(p, &slug).await?]
                }
                _ => p.catalog.list_tenants().await?,
            }
            .into_iter()
            // A suspended one may be in a key rotation or a decommissioning.
            .filter(|t| t.state == TenantState::Active)
            .collect();
            if tenants.is_empty() {
                anyhow::bail!(
                    "検査できる（稼働中の）テナントがありません / no active tenant to scan"
                );
            }
            // Municipalities scanned whole, and files found in all.
            let (mut whole, mut found) = (0, 0);
            for rec in &tenants {
                let done =
                    match madoguchi::control::scan_files::scan_files(p, rec, &clamd, again).await {
                        Ok(done) => done,
                        Err(e) => {
                            eprintln!("{}: 検査できませんでした / not scanned: {e:#}", rec.slug);
                            continue;
                        }
                    };
                madoguchi::control::oplog::record(
                    &p.catalog,
                    &cli_actor(),
                    "tenant.scan_files",
                    &rec.slug,
                    serde_json::json!({
                        "files": done.files, "found": done.found.len(), "errors": done.errors,
                        "unreadable": done.unreadable, "stopped": done.stopped, "again": again,
                    }),
                )
                .await?;
                for f in &done.found {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        rec.slug,
                        f.receipt.as_deref().unwrap_or("-"),
                        f.field,
                        f.file,
                        f.signature
                    );
                }
                eprintln!(
                    "{}: {}件を検査し、{}件から不正なプログラムが見つかりました / {} files scanned, {} found{}{}",
                    rec.slug,
                    done.files,
                    done.found.len(),
                    done.files,
                    done.found.len(),
                    match (done.errors, done.unreadable) {
                        (0, 0) => String::new(),
                        (e, 0) => format!("; {e} not scanned (clamd)"),
                        (e, u) => format!("; {e} not scanned (clamd); {u} cannot be opened with the municipality's keys (see the log)"),
                    },
                    done.stopped
                        .as_deref()
                        .map(|why| format!("; stopped: {why}"))
                        .unwrap_or_default(),
                );
                found += done.found.len();
                if done.errors == 0 && done.unreadable == 0 && done.stopped.is_none() {
                    whole += 1;
                }
                // clamd is down: the next municipality would wait for it as long.
                if done.clamd_down {
                    eprintln!("clamd が応答しないため、残りのテナントは検査しません / clamd is down: the other tenants are left for the next run");
                    break;
                }
            }
            let unfinished = tenants.len() - whole;
            if found > 0 {
                eprintln!("見つかったファイルは取り出せなくなりました。各自治体に知らせてください / files found are no longer handed out; tell the municipalities");
            }
            if let Some(dir) = metrics_dir {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if let Err(e) = madoguchi::control::scan_files::write_metrics(
                    &dir,
                    found,
                    unfinished,
                    unfinished == 0,
                    now,
                ) {
                    eprintln!("{}: the metrics were not written: {e}", dir.display());
                }
            }
            // 3: something found (whether or not all was scanned); 1: not all scanned,
            // nothing found (run again); 0: all scanned, nothing found.
            return Ok(if found > 0 {
                ExitCode::from(3)
            } else if unfinished > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        TenantCmd::RevokeApiTokens { slug } => {
            let rec = named_tenant(p, &slug).await?;
            let n = madoguchi::control::tenant_admin::revoke_api_tokens(p, &rec).await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.revoke_api_tokens",
                &slug,
                serde_json::json!({ "revoked": n }),
            )
            .await?;
            println!("{n}");
            eprintln!("{slug}: APIトークンを{n}件失効させました / {n} API tokens revoked");
        }
        TenantCmd::DisableStaff { slug, email } => {
            let rec = named_tenant(p, &slug).await?;
            let done = madoguchi::control::tenant_admin::disable_staff(p, &rec, &email).await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.disable_staff",
                &slug,
                serde_json::json!({ "staff_id": done.staff_id, "changed": done.changed }),
            )
            .await?;
            println!(
                "{slug}: {email} を無効にし、セッションとパスワード・認証アプリの登録を消しました（再び有効にしたら新しい設定用リンクを発行してください） / disabled, sessions ended, password and TOTP cleared (enabled again, it needs a new setup link){}",
                if done.changed { "" } else { " (already disabled)" }
            );
            if done.admins_left == 0 {
                eprintln!("{slug}: 有効な管理者がいません。`tenant add-staff {slug} --email …` で作成してください / no administrator left: make one with `tenant add-staff`");
            }
        }
        TenantCmd::ImportForm {
            slug,
            file,
            department,
            publish,
        } => {
            let rec = named_tenant(p, &slug).await?;
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let path =
                madoguchi::control::tenant_admin::import_form(p, &rec, &json, &department, publish)
                    .await?;
            println!("{path}");
        }
        TenantCmd::Suspend { slug } | TenantCmd::Resume { slug }
            if p.catalog.tenant_by_slug(&slug).await?.is_none() =>
        {
            anyhow::bail!("テナント「{slug}」はありません / no tenant {slug}");
        }
        TenantCmd::AccessReset { slug } => {
            let rec = named_tenant(p, &slug).await?;
            madoguchi::control::tenant_admin::reset_access(p, &rec).await?;
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.access_reset",
                &slug,
                serde_json::json!({}),
            )
            .await?;
            println!("{slug}: 管理画面はすべてのネットワークから利用できます / the admin screen is open to every network again");
        }
        TenantCmd::Suspend { slug } => {
            let rec = p
                .catalog
                .tenant_by_slug(&slug)
                .await?
                .context("no such tenant")?;
            if !matches!(rec.state, TenantState::Active | TenantState::Suspended) {
                anyhow::bail!(
                    "tenant {slug} is {}; only an active tenant can be suspended",
                    rec.state
                );
            }
            let open = [TenantState::Active, TenantState::Suspended];
            if !p
                .catalog
                .move_state(rec.id, &open, TenantState::Suspended)
                .await?
            {
                anyhow::bail!("tenant {slug} changed state meanwhile; not suspended");
            }
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.suspend",
                &slug,
                serde_json::json!({}),
            )
            .await?;
            println!("suspended {slug}");
        }
        TenantCmd::Resume { slug } => {
            let rec = p
                .catalog
                .tenant_by_slug(&slug)
                .await?
                .context("no such tenant")?;
            match rec.state {
                TenantState::Provisioning => anyhow::bail!("tenant {slug} is still being provisioned; run `madoguchi tenant create` again to finish it"),
                TenantState::Decommissioning => anyhow::bail!("tenant {slug} is being decommissioned; withdraw the request first (madoguchi tenant withdraw-decommission)"),
                TenantState::Erased => anyhow::bail!("tenant {slug} has been erased"),
                TenantState::Active | TenantState::Suspended => {}
            }
            let open = [TenantState::Active, TenantState::Suspended];
            if !madoguchi::control::tenant_admin::move_state(p, &rec, &open, TenantState::Active)
                .await?
            {
                anyhow::bail!("tenant {slug} changed state meanwhile; not resumed");
            }
            madoguchi::control::oplog::record(
                &p.catalog,
                &cli_actor(),
                "tenant.resume",
                &slug,
                serde_json::json!({}),
            )
            .await?;
            println!("resumed {slug}");
        }
        TenantCmd::Decommission {
            slug,
            operator,
            key,
            reason,
            final_export,
        } => {
            let req = with_spinner(
                &format!("decommission {slug}"),
                madoguchi::control::erase::decommission(
                    p,
                    &madoguchi::control::erase::DecommissionArgs {
                        slug: &slug,
                        operator: &operator,
                        key: &key,
                        reason: &reason,
                        final_export,
                    },
                ),
            )
            .await?;
            if let Some(export) = &req.final_export {
                println!(
                    "final export: {} ({} files)",
                    export.directory,
                    export.files.len()
                );
            }
            println!("decommissioning of {slug} requested by {operator} (request {}); the tenant is closed.\nAnother operator completes it with: madoguchi tenant erase {slug} --verifier ID --key FILE", req.id);
        }
        TenantCmd::VerifyExport { slug, dir } => {
            let c = madoguchi::control::final_export::compare(p, &slug, &dir).await?;
            for name in &c.missing {
                println!("missing: {name}");
            }
            for name in &c.differing {
                println!("differs: {name}");
            }
            if !c.missing.is_empty() || !c.differing.is_empty() {
                anyhow::bail!(
                    "最終エクスポートの写しが署名された記録と一致しません / the copy does not match the signed request: {} match, {} missing, {} differ",
                    c.matching,
                    c.missing.len(),
                    c.differing.len()
                );
            }
            println!(
                "all {} files match the signed decommissioning request (name, size, SHA-256)",
                c.matching
            );
        }
        TenantCmd::RotatePassword { slug, end_sessions } => {
            let done = madoguchi::control::provision::rotate_password(
                p,
                &slug,
                end_sessions,
                &cli_actor(),
            )
            .await?;
            println!(
                "tenant {slug}: new database password (version {}); {} open sessions ended",
                done.version, done.ended
            );
        }
        TenantCmd::RotateDataKey { slug } => {
            let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
            let done = with_spinner(
                &format!("rotate the data key of {slug}"),
                madoguchi::control::data_key::rotate(p, &store, &slug, &cli_actor()),
            )
            .await?;
            let r = &done.rekeyed;
            if !done.new_key && r.resealed.is_empty() {
                println!(
                    "tenant {slug}: rotation to data key version {} finished (only the erasure canary was left to make); resume with: madoguchi tenant resume {slug}",
                    r.to
                );
                return Ok(ExitCode::SUCCESS);
            }
            if done.new_key {
                println!("tenant {slug}: new data key version {}", r.to);
            } else {
                println!(
                    "tenant {slug}: rotation to data key version {} finished",
                    r.to
                );
            }
            if let Some(file) = &done.catalog_backup {
                println!("  catalog backup {file} (holds the new key)");
            }
            for (column, n) in &r.resealed {
                println!("  {column}: {n}");
            }
            println!(
                "  {} values sealed again, {} blind indexes computed again; resume with: madoguchi tenant resume {slug}",
                r.values(),
                r.indexes
            );
        }
        TenantCmd::WithdrawDecommission { slug, operator } => {
            madoguchi::control::erase::withdraw(p, &slug, &operator).await?;
            println!("decommissioning of {slug} withdrawn");
        }
        TenantCmd::Erase {
            slug,
            verifier,
            key,
            allow_shared_keys,
        } => {
            let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
            let (file, path) = with_spinner(
                &format!("erase {slug}"),
                madoguchi::control::erase::erase(
                    p,
                    &store,
                    &madoguchi::control::erase::EraseArgs {
                        slug: &slug,
                        verifier: &verifier,
                        allow_shared_keys,
                    },
                    &key,
                    &PrintSteps,
                ),
            )
            .await?;
            for c in &file.certificate.verification.results {
                eprintln!(
                    "  {} {}: {}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.check,
                    c.detail
                );
            }
            println!("{}", path.display());
            if !file.certificate.verification.passed {
                eprintln!("error: the erasure's verification failed; the certificate records it");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve_with(
    p: &Platform,
    file: &FileSettings,
    args: &ServeArgs,
    demo: &[(
        madoguchi::catalog::TenantRecord,
        madoguchi::control::tenant_admin::DemoAccount,
    )],
) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let ops = args
        .ops_listen
        .or(file.ops_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let tls = match (
        args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
        args.tls_key.clone().or_else(|| file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some((
            madoguchi::front::tls::TlsFiles { cert, key },
            args.tls_listen
                .or(file.tls_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
        )),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both a certificate and its key"),
    };
    let server = Server::start_with(
        p,
        madoguchi::front::Listeners {
            public: listen,
            ops,
            tls,
            lgwan: args.lgwan_listen.or(file.lgwan_listen),
        },
    )
    .await?;
    let (scheme, port) = match server.bound.https {
        Some(https) => ("https", https.port()),
        None => ("http", server.bound.public.port()),
    };
    println!("listening: http://{}", server.bound.public);
    if let Some(https) = server.bound.https {
        println!("https: https://{https} (plain HTTP now redirects here)");
    }
    if let Some(lgwan) = server.bound.lgwan {
        println!("lgwan: http://{lgwan}");
    }
    println!("ops: http://{}", server.bound.ops);
    if let Some(madoguchi::config::MailSettings {
        way: madoguchi::config::MailWay::Files(dir),
        ..
    }) = &p.settings.mail
    {
        println!(
            "mail: written to {} as .eml files, never sent / メールは送信せず、ここに書き出します",
            dir.display()
        );
    }
    for (t, a) in demo {
        let host = t.hosts.first().map_or("localhost", String::as_str);
        println!("{} {}: {scheme}://{host}:{port}/", t.slug, t.name);
        if let Some(path) = &a.form_path {
            println!("  sample form: {scheme}://{host}:{port}{path}");
        }
        println!(
            "  admin: {scheme}://{host}:{port}/admin/login  email {}  password {}  TOTP secret {}",
            a.email, a.password, a.totp_secret
        );
    }
    println!("ready (Ctrl-C to stop)");
    tokio::select! {
        () = wait_for_signal() => {}
        () = backup_schedule(p, args.backup_interval_hours, args.drill_interval_days) => {}
    }
    eprintln!("shutting down: draining requests");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Backs up every tenant every `hours` (the first run one interval after start) and
/// applies the retention policy (7 daily, 4 weekly, 12 monthly); then runs the restore
/// drills due, so that every tenant is drilled within `drill_days`. Never returns.
async fn backup_schedule(p: &Platform, hours: u64, drill_days: u32) {
    if hours == 0 {
        return std::future::pending().await;
    }
    let store = madoguchi::control::backup::DirStore::new(&p.settings.state_dir);
    let every = Duration::from_secs(hours * 3600);
    // How many rounds the drill interval holds, to spread the drills over them.
    let rounds = u32::try_from(u64::from(drill_days) * 24 / hours.max(1))
        .unwrap_or(u32::MAX)
        .max(1);
    // At a fixed rate: a round's backups and drills do not push the next one later
    // (each tenant's backup age stays near the interval, under its alert).
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tenants whose drill could not even begin (no drill recorded: its erasure held
    // the lock, the admin connection failed): left out until the drill interval has
    // passed, so that one of them does not take the round's place every time.
    let mut not_begun: std::collections::HashMap<String, tokio::time::Instant> =
        std::collections::HashMap::new();
    let drill_every = Duration::from_secs(u64::from(drill_days) * 86_400);
    loop {
        ticks.tick().await;
        let (ok, failed) = madoguchi::control::backup::run_all(
            p,
            &store,
            &madoguchi::control::backup::Retention::default(),
        )
        .await;
        tracing::info!(backed_up = ok, failed = failed.len(), "scheduled backups");
        for (slug, err) in failed {
            tracing::error!(tenant = %slug, error = %err, "scheduled backup failed");
        }
        if drill_days > 0 {
            not_begun.retain(|_, at| at.elapsed() < drill_every);
            let skip: Vec<String> = not_begun.keys().cloned().collect();
            let (passed, failed) =
                madoguchi::control::backup::drill_due(p, &store, drill_days, rounds, &skip).await;
            for (slug, _) in &failed {
                not_begun.insert(slug.clone(), tokio::time::Instant::now());
            }
            tracing::info!(
                passed = passed.len(),
                failed = failed.len(),
                "scheduled restore drills"
            );
            for (slug, err) in failed {
                // Up to PostgreSQL's own error text, which may quote a value of a row:
                // the whole message is in the drill's record (console, `backup drill`).
                let first = err.lines().next().unwrap_or_default();
                let first = first.split(" ERROR:").next().unwrap_or_default();
                tracing::error!(tenant = %slug, error = %first, "scheduled restore drill failed");
            }
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn the_password_leaves_the_url_wherever_it_was() {
        for (url, want) in [
            (
                "postgresql://adm:s3cret@db/postgres",
                "postgresql://adm@db/postgres",
            ),
            (
                "postgresql://adm@db/postgres?password=s3cret",
                "postgresql://adm@db/postgres",
            ),
            (
                "postgresql://adm:pa?s3cret@db/postgres",
                "postgresql://adm@db/postgres",
            ),
            ("postgresql://adm:s3cret@db", "postgresql://adm@db"),
            (
                "postgresql:///postgres?host=/run/pg&password=s3cret&sslmode=disable",
                "postgresql:///postgres?host=/run/pg&sslmode=disable",
            ),
            (
                "host=/run/pg user=adm password=s3cret dbname=postgres",
                "host=/run/pg user=adm dbname=postgres",
            ),
        ] {
            let (stripped, password) = without_password(url).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stripped, want);
            assert!(
                password.as_deref().is_some_and(|p| p.ends_with("s3cret")),
                "{url}"
            );
        }
    }
}
