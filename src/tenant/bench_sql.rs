//! The benchmark's pgbench scripts (`ops/bench/*.sql`) send the server's own
//! statements, so that "PostgreSQL's limit for this work" stays this work. Each
//! statement there must be one of the server's below, with its parameters given
//! the pgbench expressions listed beside it: a change to a statement here that the
//! scripts do not follow fails this test.

use super::api::{BY_KEY_SQL, TOKEN_SQL};
use super::audit::{APPEND_SQL, AUDIT_LOCK, END_SQL, LOCK_SQL};
use super::forms::citizen::{LOAD_DRAFT_SQL, RECEIPT_MAIL, SAVE_DRAFT_SQL, STORE_SQL};
use super::forms::store::PUBLISHED_SQL;

/// One statement: the server's text and what stands for `$1`, `$2`, … in pgbench.
struct Sent<'a> {
    sql: &'a str,
    params: Vec<String>,
}

fn sent<'a>(sql: &'a str, params: &[&str]) -> Sent<'a> {
    Sent {
        sql,
        params: params.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// A statement's text without comments and with one way of spacing.
fn normalised(sql: &str) -> String {
    let words: Vec<&str> = sql
        .lines()
        .map(|l| l.find("--").map_or(l, |i| &l[..i]))
        .flat_map(str::split_whitespace)
        .collect();
    words.join(" ").replace("( ", "(").replace(" )", ")")
}

/// The server's statement as pgbench sends it.
fn rendered(s: &Sent) -> String {
    let mut sql = s.sql.to_owned();
    // $12 before $1.
    for (i, p) in s.params.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", i + 1), p);
    }
    assert!(
        !sql.contains('$'),
        "a parameter has no pgbench expression: {sql}"
    );
    normalised(&sql)
}

/// A pgbench script's SQL statements, without its meta-commands (`\set`) and with
/// `\gset` as their end.
fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("--") || (current.is_empty() && t.starts_with('\\')) {
            continue;
        }
        let (body, ended) = match (t.strip_suffix(';'), t.find(" \\gset")) {
            (_, Some(i)) => (&t[..i], true),
            (Some(b), None) => (b, true),
            (None, None) => (t, false),
        };
        current.push_str(body);
        current.push('\n');
        if ended {
            out.push(normalised(&current));
            current.clear();
        }
    }
    assert!(current.is_empty(), "a statement without its end: {current}");
    out
}

fn check(file: &str, script: &str, expected: &[Sent]) {
    let ours: Vec<String> = expected.iter().map(rendered).collect();
    let theirs = statements(script);
    assert_eq!(
        theirs.len(),
        ours.len(),
        "{file}: {} statements, the server sends {}",
        theirs.len(),
        ours.len()
    );
    for (k, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(t, o, "{file}, statement {}: not the server's", k + 1);
    }
}

/// The submission's statement, with what the server makes in Rust made by
/// PostgreSQL from the random `:n` (`prefix` keeps the scripts' receipt numbers apart).
fn store<'a>(prefix: &str, form: &str, version: &str, draft: &str, by: &str) -> Sent<'a> {
    let receipt = format!("'{prefix}' || :n");
    let kind = format!("'{RECEIPT_MAIL}'");
    sent(
        STORE_SQL,
        &[
            "gen_random_uuid()",
            form,
            version,
            &receipt,
            ":answers",
            "sha256(('e' || :n)::bytea)",
            "sha256(('p' || :n)::bytea)",
            "gen_random_uuid()",
            draft,
            by,
            &kind,
            ":mail",
        ],
    )
}

#[test]
fn the_citizen_flow_script_sends_the_servers_statements() {
    let token = "sha256(:n::text::bytea)";
    let published = || sent(PUBLISHED_SQL, &[":pid"]);
    let load = || sent(LOAD_DRAFT_SQL, &[token, ":f_id"]);
    let save = sent(
        SAVE_DRAFT_SQL,
        &[
            "gen_random_uuid()",
            token,
            ":f_id",
            ":f_current_version",
            ":inputs::bytea",
            "24",
            "NULL",
        ],
    );
    check(
        "ops/bench/flow.sql",
        include_str!("../../ops/bench/flow.sql"),
        &[
            // form page GET
            published(),
            // page POST
            published(),
            load(),
            save,
            // submit POST
            published(),
            load(),
            store("B", ":f_id", ":f_current_version", ":d_id", "'citizen'"),
        ],
    );
}

#[test]
fn the_submission_alone_script_sends_the_servers_statement() {
    check(
        "ops/bench/submit.sql",
        include_str!("../../ops/bench/submit.sql"),
        &[store("S", ":f_id", ":f_version", "NULL::uuid", "'citizen'")],
    );
}

#[test]
fn the_integration_api_script_sends_the_servers_statements() {
    let lock = AUDIT_LOCK.to_string();
    check(
        "ops/bench/api.sql",
        include_str!("../../ops/bench/api.sql"),
        &[
            sent(TOKEN_SQL, &[":tokhash::bytea", "'127.0.0.1'", "'internet'"]),
            // The operation log's api.use, its own transaction.
            sent("BEGIN", &[]),
            sent(LOCK_SQL, &[&lock]),
            sent(END_SQL, &[]),
            sent(
                APPEND_SQL,
                &[
                    ":last_seq + 1",
                    "now()",
                    ":actor",
                    "'api.use'",
                    "'POST /api/v1/forms/' || :pid || '/submissions'",
                    "'{}'",
                    ":last_hash::bytea",
                    "sha256(:last_hash::bytea || convert_to(:actor || :n, 'UTF8'))",
                ],
            ),
            sent("COMMIT", &[]),
            sent(PUBLISHED_SQL, &[":pid"]),
            sent(BY_KEY_SQL, &["md5(:key::text)::uuid"]),
            store("A", ":f_id", ":f_current_version", "NULL::uuid", ":actor"),
        ],
    );
}

#[test]
fn a_statement_changed_on_one_side_is_found() {
    let script = "\\set n random(1, 9)\nSELECT id, public_id, current_version, closed, accepted_count, capacity FROM forms WHERE public_id = :pid \\gset f_\n";
    let theirs = statements(script);
    assert_ne!(theirs, vec![rendered(&sent(PUBLISHED_SQL, &[":pid"]))]);
    let same = format!(
        "-- a comment\n{} \\gset f_\n",
        rendered(&sent(PUBLISHED_SQL, &[":pid"]))
    );
    assert_eq!(
        statements(&same),
        vec![rendered(&sent(PUBLISHED_SQL, &[":pid"]))]
    );
}
