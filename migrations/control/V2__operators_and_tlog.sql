-- Platform operators (who request and who carry out erasures) and the transparency
-- log that certificates are appended to.

CREATE TABLE operators (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{1,39}$'),
    name        text NOT NULL,
    title       text NOT NULL,
    -- Ed25519 public key (32 bytes).
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tlog_entries (
    seq         bigint PRIMARY KEY CHECK (seq >= 0),
    entry       bytea NOT NULL,
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    added_at    timestamptz NOT NULL DEFAULT now()
);
