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

-- Restore drills: the latest backup restored into a scratch database and compared.
CREATE TABLE drills (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE SET NULL,
    tenant_slug text NOT NULL,
    backup_id   uuid REFERENCES backups (id) ON DELETE SET NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    seconds     double precision NOT NULL,
    detail      jsonb NOT NULL
);
CREATE INDEX drills_tenant ON drills (tenant_slug, at DESC);
