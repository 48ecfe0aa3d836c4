-- The head of each tenant's operation log (操作ログ) as the control plane last
-- checked it. The log is hash-chained inside the tenant's own database; someone
-- able to write there could rewrite the whole chain consistently. A witnessed head
-- kept here, outside that database, makes such a rewrite (or a cut tail) show at
-- the next check. `ok` false keeps the last good head and says why.
CREATE TABLE audit_witness (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    hash        bytea NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
