-- pgbench: the database work of one citizen flow, without the HTTP server in between.
-- The same seven statements, in the same order and each in its own transaction, as
-- the server sends for form page GET + page POST + submit POST (a form without 定員):
--   store::PUBLISHED_SQL            (each of the three requests)
--   citizen::LOAD_DRAFT_SQL         (page POST and submit POST)
--   citizen::SAVE_DRAFT_SQL         (page POST)
--   citizen::STORE_SQL              (submit POST)
-- Each statement is the server's own text, with pgbench expressions for its
-- parameters; `cargo test` checks that (src/tenant/bench_sql.rs), so a change to the
-- server's statement that is not made here too fails the tests.
-- Values the server makes in Rust (ids, receipt number, blind indexes) are made here
-- by PostgreSQL from one random number; the encrypted values are given with -D:
--   pid (the form's public id), answers (a stored submission's encrypted answers),
--   mail (a stored outbox payload), inputs (random bytes as long as a sealed draft).
-- ops/bench/run checks that both do the same work: transactions and rows written per
-- flow, from pg_stat_database, side by side in the report.
\set n random(1, 9000000000000000)
-- form page GET
SELECT id, public_id, current_version, closed, accepted_count, capacity, contact_name, contact FROM forms WHERE public_id = :pid AND current_version IS NOT NULL \gset f_
-- page POST
SELECT id, public_id, current_version, closed, accepted_count, capacity, contact_name, contact FROM forms WHERE public_id = :pid AND current_version IS NOT NULL;
SELECT id, inputs, submission_id, resubmit_of FROM citizen_drafts WHERE token_hash = sha256(:n::text::bytea) AND form_id = :f_id AND expires_at > now();
INSERT INTO citizen_drafts (id, token_hash, form_id, form_version, inputs, resubmit_of, expires_at) SELECT gen_random_uuid()::uuid, sha256(:n::text::bytea)::bytea, :f_id::bigint, :f_current_version::integer, :inputs::bytea::bytea, NULL::uuid, now() + make_interval(hours => 24::integer) WHERE NOT EXISTS (SELECT 1 FROM citizen_drafts m WHERE m.moved_from = sha256(:n::text::bytea) AND m.moved_from IS NOT NULL AND m.submission_id IS NULL AND m.expires_at > now()) ON CONFLICT (token_hash) DO UPDATE SET id = excluded.id, form_version = excluded.form_version, inputs = excluded.inputs, expires_at = greatest(citizen_drafts.expires_at, excluded.expires_at), updated_at = now(), resume_hash = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_hash END, resume_mails = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_mails ELSE 0 END, resume_page = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.resume_page END, moved_from = CASE WHEN citizen_drafts.id = excluded.id THEN citizen_drafts.moved_from END WHERE citizen_drafts.submission_id IS NULL AND citizen_drafts.form_id = excluded.form_id AND citizen_drafts.resubmit_of IS NOT DISTINCT FROM excluded.resubmit_of;
-- submit POST
SELECT id, public_id, current_version, closed, accepted_count, capacity, contact_name, contact FROM forms WHERE public_id = :pid AND current_version IS NOT NULL;
SELECT id, inputs, submission_id, resubmit_of FROM citizen_drafts WHERE token_hash = sha256(:n::text::bytea) AND form_id = :f_id AND expires_at > now() \gset d_
WITH ins AS (INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, email_index, phone_index, idempotency_key) SELECT gen_random_uuid(), :f_id, :f_current_version, 'B' || :n, :answers, sha256(('e' || :n)::bytea), sha256(('p' || :n)::bytea), gen_random_uuid() WHERE NOT EXISTS (SELECT 1 FROM forms WHERE id = :f_id AND capacity IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM option_places WHERE form_id = :f_id) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), closed AS (UPDATE citizen_drafts d SET submission_id = ins.id, inputs = NULL, updated_at = now(), sent_at = now() FROM ins WHERE d.id = :d_id), received AS (INSERT INTO submission_events (submission_id, actor_label, to_status) SELECT id, 'citizen', 'received' FROM ins), mailed AS (INSERT INTO outbox (kind, submission_id, payload) SELECT 'receipt', id, :mail FROM ins WHERE :mail::bytea IS NOT NULL) SELECT id FROM ins;
