-- Backups of tenant databases (and of the catalog itself, tenant_id NULL).
CREATE TABLE backups (
    id              uuid PRIMARY KEY,
    tenant_id       uuid REFERENCES tenants (id) ON DELETE SET NULL,
    tenant_slug     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    file            text NOT NULL,
    size            bigint NOT NULL,
    sha256          bytea NOT NULL,
    schema_version  integer NOT NULL,
    key_version     integer NOT NULL
);
CREATE INDEX backups_tenant ON backups (tenant_slug, created_at DESC);
