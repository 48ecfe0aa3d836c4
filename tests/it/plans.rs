//! The hot paths are served by indexes, at any size: with sequential scans priced
//! out (`enable_seqscan = off`), no plan of the citizen form, the staff session or
//! any shape of the staff inbox reads a whole table. A table without a usable index
//! would still show a sequential scan, so each plan proves its index exists.

use madoguchi::tenant::cases::pages::{inbox_sql, Filters};
use madoguchi::tenant::cases::Status;
use tokio_postgres::types::ToSql;

use crate::harness::{admin_client, publish_sample, unique, TestEnv};

async fn plan(db: &tokio_postgres::Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
    db.query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_indexed(what: &str, plan: &str) {
    assert!(
        !plan.contains("Seq Scan"),
        "{what} reads a whole table:\n{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_queries_are_served_by_indexes() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("plans"), "千代田区", "131016").await;
    let public_id = publish_sample(&env, &t).await;
    let public_id = public_id.trim_start_matches("/f/").to_owned();
    let server = env.serve().await;
    let rt = server.app.pools.runtime(t.id).await.unwrap();
    let db = admin_client(&t.database).await;
    // Enough rows for realistic statistics, shaped like a real inbox: the newest are
    // received or under review, the older completed, and a few returned among them
    // (a status no recent submission has: read in order from its own index, not
    // found by walking every submission newest first).
    // Spread over five forms of one department, as a department's inbox is.
    db.batch_execute(&format!(
        "INSERT INTO forms (public_id, department_id, draft, current_version)
           SELECT 'plans' || g, f.department_id, '{{}}', 1 FROM generate_series(1, 4) g, forms f
            WHERE f.public_id = '{public_id}';
         INSERT INTO form_versions (form_id, version, definition)
           SELECT id, 1, '{{}}' FROM forms WHERE public_id LIKE 'plans%';
         INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, idempotency_key, submitted_at, status)
           SELECT gen_random_uuid(), (ARRAY(SELECT id FROM forms ORDER BY id))[1 + g % 5], 1,
                  'P' || lpad(g::text, 8, '0'), '{{}}'::jsonb, gen_random_uuid(),
                  now() - g * interval '1 minute',
                  CASE WHEN g % 97 = 0 THEN 'returned' WHEN g < 2000 THEN 'received' WHEN g < 4000 THEN 'reviewing' ELSE 'completed' END
             FROM generate_series(1, 20000) g;
         INSERT INTO staff (email, display_name, role) VALUES ('plans@example.jp', '計画', 'admin');
         INSERT INTO proxy_entries (submission_id, channel, staff_id)
           SELECT s.id, (ARRAY['counter', 'phone', 'post'])[1 + (row_number() OVER ()) % 3], st.id
             FROM submissions s, staff st
            WHERE st.email = 'plans@example.jp' AND s.receipt_number LIKE '%00';
         ANALYZE;
         SET enable_seqscan = off;"
    ))
    .await
    .unwrap();
    let form_id: i64 = db
        .query_one("SELECT id FROM forms WHERE public_id = $1", &[&public_id])
        .await
        .unwrap()
        .get(0);
    let department: i64 = db
        .query_one("SELECT department_id FROM forms WHERE id = $1", &[&form_id])
        .await
        .unwrap()
        .get(0);
    let receipt = madoguchi::domain::ReceiptNumber::generate();

    // Every shape of the inbox: each filter alone, some together, the next page,
    // as an administrator (all departments) and as a department's staff.
    let at = time::OffsetDateTime::now_utc();
    let shapes: Vec<(&str, Filters)> = vec![
        ("no filter", Filters::default()),
        (
            "status",
            Filters {
                status: Some(Status::Returned),
                ..Default::default()
            },
        ),
        (
            "form",
            Filters {
                form: Some(form_id),
                ..Default::default()
            },
        ),
        (
            "form and status",
            Filters {
                form: Some(form_id),
                status: Some(Status::Received),
                ..Default::default()
            },
        ),
        (
            "dates",
            Filters::parse(Some("from=2026-01-01&to=2026-12-31")),
        ),
        (
            "unassigned",
            Filters {
                assignee: Some(0),
                ..Default::default()
            },
        ),
        (
            "assignee",
            Filters {
                assignee: Some(2000),
                ..Default::default()
            },
        ),
        (
            "e-mail search",
            Filters {
                q: "taro@example.jp".into(),
                ..Default::default()
            },
        ),
        (
            "telephone search",
            Filters {
                q: "03-1234-5678".into(),
                ..Default::default()
            },
        ),
        (
            "receipt search",
            Filters {
                q: receipt.as_str().to_owned(),
                ..Default::default()
            },
        ),
        ("sent online", Filters::parse(Some("came=online"))),
        // Read from the entered applications' own table (few beside those sent online).
        ("entered by staff", Filters::parse(Some("came=entered"))),
        ("entered by telephone", Filters::parse(Some("came=phone"))),
        (
            "next page",
            Filters {
                after: Some((at, uuid::Uuid::new_v4())),
                ..Default::default()
            },
        ),
    ];
    // Statements are prepared once per connection, so PostgreSQL may switch to a
    // generic plan that does not know the status asked for: both kinds must hold.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        db.batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        for (name, filters) in &shapes {
            for (who, scope) in [("administrator", None), ("department", Some(department))] {
                let (sql, params) = inbox_sql(&rt.cipher, scope, filters, 51, false);
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let shown = plan(&db, &sql, &refs).await;
                assert_indexed(&format!("inbox ({name}, {who})"), &shown);
                // Filtered by status alone, the first page is read in order from the
                // status index, not by walking all submissions and discarding the rest.
                // A status no recent submission has would otherwise mean reading them all.
                let wanted = match *name {
                    "status" if scope.is_none() => Some("submissions_status"),
                    "form and status" => Some("submissions_form_status"),
                    _ => None,
                };
                // A department's staff without a filter that picks the rows read each
                // of the department's forms from its own index, never the tenant-wide
                // walk newest first that keeps only the department's rows.
                let per_form = scope.is_some()
                    && matches!(
                        *name,
                        "no filter"
                            | "status"
                            | "dates"
                            | "unassigned"
                            | "next page"
                            | "sent online"
                    );
                if per_form {
                    assert!(
                        shown.contains("forms_department")
                            && !shown.contains("submissions_inbox")
                            && !shown.contains("submissions_status "),
                        "inbox ({name}, {who}, {mode}) walks the tenant's submissions:\n{shown}"
                    );
                }
                // Entered applications are found from their own table, not by walking
                // the tenant's submissions newest first.
                if name.starts_with("entered") {
                    assert!(
                        shown.contains("proxy_entries") && !shown.contains("submissions_inbox"),
                        "inbox ({name}, {who}, {mode}) walks the tenant's submissions:\n{shown}"
                    );
                }
                if let Some(index) = wanted {
                    assert!(
                        shown.contains(index) && !shown.contains("Sort"),
                        "inbox ({name}, {who}, {mode}) is not read in order from {index}:\n{shown}"
                    );
                }
            }
        }
    }
    db.batch_execute("RESET plan_cache_mode").await.unwrap();

    // The citizen side and the staff session.
    let token = vec![0u8; 32];
    assert_indexed(
        "published form",
        &plan(
            &db,
            madoguchi::tenant::forms::store::PUBLISHED_SQL,
            &[&public_id],
        )
        .await,
    );
    assert_indexed(
        "citizen draft",
        &plan(
            &db,
            madoguchi::tenant::forms::citizen::LOAD_DRAFT_SQL,
            &[&token, &form_id],
        )
        .await,
    );
    // Mail: the rows due for delivery, and a case's mail on its staff page.
    db.batch_execute(
        "INSERT INTO outbox (kind, submission_id, payload, sent_at)
           SELECT 'receipt', id, ''::bytea, now() FROM submissions;
         ANALYZE outbox;",
    )
    .await
    .unwrap();
    assert_indexed(
        "mail due",
        &plan(&db, madoguchi::tenant::mail::DUE_SQL, &[&20i64]).await,
    );
    let any: uuid::Uuid = db
        .query_one("SELECT id FROM submissions LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    // 一時保存: the links mailed to an address today (among every receipt), a link's
    // draft, and a draft moved away from this browser.
    assert_indexed(
        "links mailed to an address",
        &plan(
            &db,
            madoguchi::tenant::mail::LINKS_TO_SQL,
            &[&token, &madoguchi::tenant::forms::resume::RESUME_MAIL],
        )
        .await,
    );
    assert_indexed(
        "a mailed link's draft",
        &plan(
            &db,
            madoguchi::tenant::forms::resume::LINKED_DRAFT_SQL,
            &[&token, &form_id, &120.0f64, &token],
        )
        .await,
    );
    assert_indexed(
        "a draft moved away",
        &plan(
            &db,
            madoguchi::tenant::forms::citizen::MOVED_AWAY_SQL,
            &[&vec![token.clone()], &form_id],
        )
        .await,
    );
    // 自分の操作ログ: a member of staff's own entries, newest first, among many of
    // others' (the integration API's above all).
    db.batch_execute(
        "SET enable_seqscan = on;
         INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash)
           SELECT m.seq + g, now(), CASE WHEN g % 50 = 0 THEN 'staff:' || g % 7 || ':s@city.example.jp' ELSE 'api:1:bench' END,
                  'api.use', '', '{}', ''::bytea, ''::bytea
             FROM generate_series(1, 20000) g, (SELECT coalesce(max(seq), 0) AS seq FROM audit_log) m;
         ANALYZE audit_log;
         SET enable_seqscan = off;",
    )
    .await
    .unwrap();
    let no_text: Option<String> = None;
    let no_time: Option<time::OffsetDateTime> = None;
    let no_seq: Option<i64> = None;
    let own = plan(
        &db,
        madoguchi::tenant::audit::pages::OWN_SQL,
        &[
            &no_text,
            &"staff:3:s@city.example.jp",
            &no_time,
            &no_time,
            &no_seq,
            &101i64,
        ],
    )
    .await;
    // Not the whole log walked newest first and filtered: the index of staff's entries.
    assert!(own.contains("audit_log_staff_actor"), "{own}");
    // Every save of a draft looks for a draft moved away from its token.
    assert_indexed(
        "saving a draft",
        &plan(
            &db,
            madoguchi::tenant::forms::citizen::SAVE_DRAFT_SQL,
            &[
                &uuid::Uuid::new_v4(),
                &token,
                &form_id,
                &1i32,
                &token,
                &24i32,
                &None::<uuid::Uuid>,
            ],
        )
        .await,
    );
    assert_indexed(
        "a case's mail",
        &plan(
            &db,
            madoguchi::tenant::cases::pages::CASE_MAILS_SQL,
            &[&any],
        )
        .await,
    );
    assert_indexed(
        "staff session",
        &plan(
            &db,
            madoguchi::tenant::staff::SESSION_SQL,
            &[&token, &1800.0f64, &30.0f64],
        )
        .await,
    );
    server.shutdown().await;
}

/// The inbox's rows for `scope` and `filters`, every page followed by its cursor.
async fn every_page(
    db: &tokio_postgres::Client,
    cipher: &madoguchi::crypto::FieldCipher,
    scope: Option<i64>,
    filters: &Filters,
) -> Vec<uuid::Uuid> {
    let mut filters = filters.clone();
    let mut ids = Vec::new();
    loop {
        let (sql, params) = inbox_sql(cipher, scope, &filters, 7, false);
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = db
            .query(&sql, &refs)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let Some(last) = rows.last() else {
            return ids;
        };
        filters.after = Some((last.get(2), last.get(0)));
        ids.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
    }
}

/// Both shapes of the inbox list the same cases in the same order, page after page: a
/// department's, merged from its forms, matches the plain query, for each filter,
/// with cases sent in the same second told apart by their id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departments_inbox_merges_its_forms_in_order() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("merge"), "千代田区", "131016").await;
    let server = env.serve().await;
    let rt = server.app.pools.runtime(t.id).await.unwrap();
    let db = admin_client(&t.database).await;
    // Two departments of three forms each (one never used), a hundred cases each,
    // some sharing a second, some assigned.
    db.batch_execute(
        "INSERT INTO departments (name) VALUES ('市民課'), ('福祉課'), ('空の課');
         INSERT INTO staff (email, role) VALUES ('merge@example.jp', 'staff');
         INSERT INTO forms (public_id, department_id, draft, current_version)
           SELECT 'merge' || g || '-' || d.id, d.id, '{}', 1
             FROM generate_series(1, 3) g, departments d WHERE d.name IN ('市民課', '福祉課');
         INSERT INTO form_versions (form_id, version, definition)
           SELECT id, 1, '{}' FROM forms WHERE public_id LIKE 'merge%';
         INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, idempotency_key, submitted_at, status, assignee_id)
           SELECT gen_random_uuid(), f.id, 1, 'M' || lpad((f.id * 1000 + g)::text, 9, '0'), '{}'::jsonb, gen_random_uuid(),
                  timestamptz '2026-06-01 12:00+09' - ((g * 7 + f.id) % 40) * interval '1 day',
                  (ARRAY['received','reviewing','completed','returned'])[1 + (g + f.id) % 4],
                  CASE WHEN g % 3 = 0 THEN (SELECT id FROM staff WHERE email = 'merge@example.jp') END
             FROM generate_series(1, 100) g, forms f WHERE f.public_id LIKE 'merge1-%' OR f.public_id LIKE 'merge2-%';
         ANALYZE;",
    )
    .await
    .unwrap();
    let departments: Vec<(String, i64)> = db
        .query("SELECT name, id FROM departments WHERE name IN ('市民課', '福祉課', '空の課') ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let shapes: Vec<(&str, Filters, &str)> = vec![
        ("no filter", Filters::default(), "true"),
        (
            "status",
            Filters {
                status: Some(Status::Returned),
                ..Default::default()
            },
            "s.status = 'returned'",
        ),
        (
            "unassigned",
            Filters {
                assignee: Some(0),
                ..Default::default()
            },
            "s.assignee_id IS NULL",
        ),
        (
            "dates",
            Filters::parse(Some("from=2026-05-01&to=2026-05-20")),
            "s.submitted_at >= '2026-05-01 00:00+09' AND s.submitted_at < '2026-05-21 00:00+09'",
        ),
    ];
    for (name, filters, condition) in &shapes {
        for (department, id) in &departments {
            let expected: Vec<uuid::Uuid> = db
                .query(
                    &format!(
                        "SELECT s.id FROM submissions s JOIN forms f ON f.id = s.form_id
                          WHERE f.department_id = $1 AND {condition}
                          ORDER BY s.submitted_at DESC, s.id DESC"
                    ),
                    &[id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if department != "空の課" {
                assert!(expected.len() > 20, "{name} {department}: too few to page");
            }
            let shown = every_page(&db, &rt.cipher, Some(*id), filters).await;
            assert_eq!(shown, expected, "inbox ({name}) of {department}");
        }
        // An administrator's list (the tenant-wide shape) has both departments' cases,
        // in the same order.
        let all: Vec<uuid::Uuid> = db
            .query(
                &format!(
                    "SELECT s.id FROM submissions s WHERE {condition} ORDER BY s.submitted_at DESC, s.id DESC"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            every_page(&db, &rt.cipher, None, filters).await,
            all,
            "inbox ({name}) of an administrator"
        );
    }
    server.shutdown().await;
}
