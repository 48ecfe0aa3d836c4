-- pgbench: the submission's own statement alone, the least any submit path can do
-- with the rows the benchmark's issue names: the submission (encrypted answers), the
-- case history's first row and the outbox row for the e-mailed copy, in one
-- transaction: citizen::STORE_SQL, as the integration API sends it (no draft).
-- Nothing else: no form or token read, no draft, no operation log, no HTTP, no
-- encryption.
-- Each statement is the server's own text, with pgbench expressions for its
-- parameters; `cargo test` checks that (src/tenant/bench_sql.rs), so a change to the
-- server's statement that is not made here too fails the tests.
-- Given with -D: f_id, f_version (the form's id and published version), answers
-- and mail (as for flow.sql).
\set n random(1, 9000000000000000)
WITH ins AS (INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, email_index, phone_index, idempotency_key) SELECT gen_random_uuid(), :f_id, :f_version, 'S' || :n, :answers, sha256(('e' || :n)::bytea), sha256(('p' || :n)::bytea), gen_random_uuid() WHERE NOT EXISTS (SELECT 1 FROM forms WHERE id = :f_id AND capacity IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM option_places WHERE form_id = :f_id) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), closed AS (UPDATE citizen_drafts d SET submission_id = ins.id, inputs = NULL, updated_at = now(), sent_at = now() FROM ins WHERE d.id = NULL::uuid), received AS (INSERT INTO submission_events (submission_id, actor_label, to_status) SELECT id, 'citizen', 'received' FROM ins), mailed AS (INSERT INTO outbox (kind, submission_id, payload) SELECT 'receipt', id, :mail FROM ins WHERE :mail::bytea IS NOT NULL) SELECT id FROM ins;
