//! The benchmark's pgbench scripts (`ops/bench/*.sql`) run on a real tenant
//! database with the variables `ops/bench/run` gives them: every variable they use
//! is set, every statement runs, and each transaction writes the rows it stands for.
//! (`src/tenant/bench_sql.rs` checks that their statements are the server's.)

use std::process::Command;

use madoguchi::tenant::staff::Role;

use crate::forms::{apply, build_form, dept_id, staff};
use crate::harness::{admin_client, admin_url, unique, TestEnv};

/// Rows in the tables the scripts write, and drafts closed by a submission (an
/// undefined pgbench variable is sent as NULL, and a NULL draft id closes nothing).
async fn written(db: &tokio_postgres::Client) -> [i64; 6] {
    let r = db
        .query_one(
            "SELECT (SELECT count(*) FROM submissions), (SELECT count(*) FROM submission_events),
                    (SELECT count(*) FROM outbox), (SELECT count(*) FROM citizen_drafts),
                    (SELECT count(*) FROM audit_log),
                    (SELECT count(*) FROM citizen_drafts WHERE submission_id IS NOT NULL)",
            &[],
        )
        .await
        .unwrap();
    [r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmarks_pgbench_scripts_run_on_a_tenant_database() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("pgb"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].clone();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let dept = dept_id(&env, &t, "環境政策課").await;
    // A form without 定員 and one application to it, for encrypted values of the
    // real sizes; an API token for the integration API's script.
    let (form_id, public) = build_form(&admin, &server, &host, &dept, "").await;
    apply(&server, &host, &public, "ソファ").await.unwrap();
    madoguchi::control::tenant_admin::api_token(
        &env.platform,
        &t,
        "bench",
        &["submissions:submit".to_owned()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let db = admin_client(&t.database).await;
    let one = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    let answers = one("SELECT answers::text FROM submissions LIMIT 1").await;
    let mail =
        one("SELECT '\\x' || encode(payload, 'hex') FROM outbox WHERE kind = 'receipt' LIMIT 1")
            .await;
    let tokhash = one("SELECT '\\x' || encode(token_hash, 'hex') FROM api_tokens").await;
    let actor = one("SELECT 'api:' || id || ':' || name FROM api_tokens").await;
    let version = one("SELECT current_version::text FROM forms WHERE public_id IS NOT NULL AND current_version IS NOT NULL").await;
    let pid = public.trim_start_matches("/f/").to_owned();
    let inputs = format!("\\x{}", "ab".repeat(600));
    let url = admin_url().replacen("/postgres?", &format!("/{}?", t.database), 1);
    let pgbench = madoguchi::embedded_pg::find_bin_dir()
        .unwrap()
        .join("pgbench");
    let common = [
        format!("pid={pid}"),
        format!("answers={answers}"),
        format!("mail={mail}"),
    ];
    // (script, its own variables, rows each transaction adds to each table)
    let scripts: [(&str, Vec<String>, [i64; 6]); 3] = [
        // the submission, its history's first row, its e-mailed copy, a draft
        // closed by it
        ("flow", vec![format!("inputs={inputs}")], [1, 1, 1, 1, 0, 1]),
        // and the token's use in the operation log
        (
            "api",
            vec![format!("tokhash={tokhash}"), format!("actor={actor}")],
            [1, 1, 1, 0, 1, 0],
        ),
        (
            "submit",
            vec![format!("f_id={form_id}"), format!("f_version={version}")],
            [1, 1, 1, 0, 0, 0],
        ),
    ];
    for (script, vars, per) in scripts {
        let before = written(&db).await;
        let mut cmd = Command::new(&pgbench);
        cmd.args(["-n", "-M", "prepared", "-t", "3", "-f"])
            .arg(format!(
                "{}/ops/bench/{script}.sql",
                env!("CARGO_MANIFEST_DIR")
            ));
        for v in common.iter().chain(&vars) {
            cmd.arg("-D").arg(v);
        }
        let out = cmd.arg(&url).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{script}.sql: {said}");
        assert!(
            said.contains("number of transactions actually processed: 3/3")
                && said.contains("number of failed transactions: 0 "),
            "{script}.sql: {said}"
        );
        let after = written(&db).await;
        let added: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let expected: Vec<i64> = per.iter().map(|n| n * 3).collect();
        assert_eq!(added, expected, "{script}.sql: rows added per table");
    }
    server.shutdown().await;
}
