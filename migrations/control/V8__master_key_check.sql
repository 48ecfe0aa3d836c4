-- A random value wrapped by the master key when the catalog first met it. A process
-- started with another master key (a wrong --state-dir, a key file restored from the
-- wrong machine) is refused before it wraps anything under that key.
CREATE TABLE master_key_check (
    id          integer PRIMARY KEY CHECK (id = 1),
    wrapped     bytea NOT NULL,
    provider    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
