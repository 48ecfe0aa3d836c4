-- pgbench: the database work of one integration-API submission, without the HTTP
-- server in between. The same statements, in the same order, as the server sends for
-- POST /api/v1/forms/{id}/submissions:
--   api::TOKEN_SQL                  (the bearer token, its last use once a minute)
--   audit::record of api.use        (its own transaction: the chain's lock, its end
--                                    read, the row hashed onto it; the server sends
--                                    the lock and the read together, here they are
--                                    two round trips)
--   store::PUBLISHED_SQL
--   api::BY_KEY_SQL, the look-up of the idempotency key (a retry is answered first)
--   citizen::STORE_SQL (no draft)
-- Each statement is the server's own text, with pgbench expressions for its
-- parameters; `cargo test` checks that (src/tenant/bench_sql.rs), so a change to the
-- server's statement that is not made here too fails the tests.
-- Given with -D: tokhash (the token's stored hash), actor (its operation-log label),
-- pid, answers and mail (as for flow.sql). ops/bench/run counts the work per
-- submission of both, side by side in the report.
\set n random(1, 9000000000000000)
WITH t AS (SELECT a.id, a.name, a.scopes, a.last_used_at, coalesce(CASE a.network WHEN 'any' THEN true WHEN 'listed' THEN '127.0.0.1'::inet <<= ANY (a.cidrs::inet[]) ELSE 'internet' = ANY (s.admin_zones) AND (cardinality(s.admin_cidrs) = 0 OR '127.0.0.1'::inet <<= ANY (s.admin_cidrs::inet[])) END, false) AS allowed FROM api_tokens a LEFT JOIN settings s ON s.id WHERE a.token_hash = :tokhash::bytea AND a.revoked_at IS NULL), touched AS (UPDATE api_tokens a SET last_used_at = now() FROM t WHERE a.id = t.id AND t.allowed AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')) SELECT id, name, scopes, allowed FROM t;
BEGIN;
SELECT pg_advisory_xact_lock(30787856454743396);
SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1 \gset last_
INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES (:last_seq + 1, now(), :actor, 'api.use', 'POST /api/v1/forms/' || :pid || '/submissions', '{}', :last_hash::bytea, sha256(:last_hash::bytea || convert_to(:actor || :n, 'UTF8')));
COMMIT;
SELECT id, public_id, current_version, closed, accepted_count, capacity, contact_name, contact FROM forms WHERE public_id = :pid AND current_version IS NOT NULL \gset f_
\set key random(1, 9000000000000000)
SELECT s.id, s.receipt_number, s.form_id, s.form_version, s.answers, (SELECT e.actor_label FROM submission_events e WHERE e.submission_id = s.id ORDER BY e.id LIMIT 1), (SELECT d.made_by FROM submission_deletions d WHERE d.idempotency_key = k.key LIMIT 1) FROM (SELECT md5(:key::text)::uuid::uuid AS key) k LEFT JOIN submissions s ON s.idempotency_key = k.key;
WITH ins AS (INSERT INTO submissions (id, form_id, form_version, receipt_number, answers, email_index, phone_index, idempotency_key) SELECT gen_random_uuid(), :f_id, :f_current_version, 'A' || :n, :answers, sha256(('e' || :n)::bytea), sha256(('p' || :n)::bytea), gen_random_uuid() WHERE NOT EXISTS (SELECT 1 FROM forms WHERE id = :f_id AND capacity IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM option_places WHERE form_id = :f_id) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), closed AS (UPDATE citizen_drafts d SET submission_id = ins.id, inputs = NULL, updated_at = now(), sent_at = now() FROM ins WHERE d.id = NULL::uuid), received AS (INSERT INTO submission_events (submission_id, actor_label, to_status) SELECT id, :actor, 'received' FROM ins), mailed AS (INSERT INTO outbox (kind, submission_id, payload) SELECT 'receipt', id, :mail FROM ins WHERE :mail::bytea IS NOT NULL) SELECT id FROM ins;
