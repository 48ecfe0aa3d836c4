-- Backups kept for an incident or an inquiry: while a tenant's (or the catalog's,
-- `_catalog`) backups are held, retention deletes none of them and no erasure of the
-- tenant begins (an erasure deletes its backups and every catalog backup).
CREATE TABLE backup_holds (
    tenant_slug text PRIMARY KEY,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    held_by     text NOT NULL,
    held_at     timestamptz NOT NULL DEFAULT now()
);
