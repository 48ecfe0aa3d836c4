-- 自分の操作ログ: each member of staff reads their own entries, newest first. Only
-- staff's entries are indexed (their label begins 'staff:'), so the integration
-- API's and citizens' entries, the most numerous, cost no more to write.
CREATE INDEX audit_log_staff_actor ON audit_log (actor, seq) WHERE actor LIKE 'staff:%';
