-- The catalog: which municipalities exist, where their databases are, and their
-- keys, wrapped by the master key (which never enters a database).

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    slug            text NOT NULL UNIQUE,
    name            text NOT NULL,
    local_gov_code  char(6) NOT NULL,
    state           text NOT NULL DEFAULT 'provisioning'
                    CHECK (state IN ('provisioning', 'active', 'suspended')),
    db_name         text NOT NULL UNIQUE,
    role_name       text NOT NULL UNIQUE,
    schema_version  integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_hosts (
    host        text PRIMARY KEY CHECK (host = lower(host)),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX tenant_hosts_tenant ON tenant_hosts (tenant_id);

-- purpose 'data' is the tenant's data key; 'db_password' its database role's password.
CREATE TABLE tenant_keys (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('data', 'db_password')),
    version     integer NOT NULL CHECK (version > 0),
    wrapped     bytea NOT NULL,
    provider    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, purpose, version)
);

-- The front tier keeps an in-memory copy of tenants and hosts; tell it when they change.
CREATE FUNCTION notify_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('madoguchi_catalog', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_changed();
CREATE TRIGGER tenant_hosts_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_hosts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_changed();
