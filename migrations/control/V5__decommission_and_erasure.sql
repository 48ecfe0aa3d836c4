-- Decommissioning in two steps by two operators, erasure certificates, the canary
-- that proves a tenant's data key is gone, and operators' console accounts.

ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'suspended', 'decommissioning', 'erased'));

-- A value encrypted under the tenant's data key when it is made; after erasure no
-- key left anywhere decrypts it.
ALTER TABLE tenants ADD COLUMN canary bytea;
ALTER TABLE tenants ADD COLUMN canary_key_version integer;

-- A request to decommission a tenant, signed by the operator who made it; carried
-- out (erased) by another operator.
CREATE TABLE decommissions (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    requested_by    text NOT NULL REFERENCES operators (id),
    requested_at    timestamptz NOT NULL,
    -- The request as signed: RFC 8785 canonical JSON, kept byte for byte.
    request         text NOT NULL,
    signature       bytea NOT NULL CHECK (length(signature) = 64),
    -- The tenant's state before the request, restored if it is withdrawn.
    previous_state  text NOT NULL,
    state           text NOT NULL DEFAULT 'requested'
                    CHECK (state IN ('requested', 'withdrawn', 'erased')),
    certificate_id  uuid
);
CREATE UNIQUE INDEX decommissions_open ON decommissions (tenant_id) WHERE state = 'requested';

-- Issued erasure certificates (signed documents, no personal data) and their place
-- in the transparency log.
CREATE TABLE certificates (
    id              uuid PRIMARY KEY,
    tenant_slug     text NOT NULL,
    tenant_name     text NOT NULL,
    local_gov_code  char(6) NOT NULL,
    issued_at       timestamptz NOT NULL,
    tlog_seq        bigint NOT NULL UNIQUE REFERENCES tlog_entries (seq),
    sanitized_by    text NOT NULL,
    verified_by     text NOT NULL,
    verified        boolean NOT NULL,
    -- {"certificate": ..., "signatures": ...}, canonical: the log entry itself.
    document        text NOT NULL
);

-- Backups destroyed by an erasure stay listed (hashes, no data) with when.
ALTER TABLE backups ADD COLUMN destroyed_at timestamptz;

-- Operators' console accounts: auditors have no signing key.
ALTER TABLE operators ALTER COLUMN public_key DROP NOT NULL;
ALTER TABLE operators ADD COLUMN role text NOT NULL DEFAULT 'operator'
    CHECK (role IN ('operator', 'auditor'));
ALTER TABLE operators ADD CONSTRAINT operators_key_for_operators
    CHECK (role = 'auditor' OR public_key IS NOT NULL);
ALTER TABLE operators ADD COLUMN password_hash text;
-- TOTP secret wrapped by the master key.
ALTER TABLE operators ADD COLUMN totp_wrapped bytea;
ALTER TABLE operators ADD COLUMN totp_last_step bigint NOT NULL DEFAULT 0;
ALTER TABLE operators ADD COLUMN failed_logins integer NOT NULL DEFAULT 0;
ALTER TABLE operators ADD COLUMN locked_until timestamptz;

CREATE TABLE ops_sessions (
    token_hash      bytea PRIMARY KEY,
    operator_id     text NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now()
);

-- The control plane's own operation log, hash-chained like the tenants' logs.
CREATE TABLE ops_log (
    seq         bigint PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    detail      text NOT NULL DEFAULT '{}',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
