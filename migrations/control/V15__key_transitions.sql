-- Rotations of the platform's signing keys (platform.key, tlog.key): each a
-- statement naming the replaced key and its replacement, signed by both
-- (a C2SP signed note), so certificates and checkpoints signed by either key verify
-- against the other. platform_keys keeps the current key of each file.
CREATE TABLE key_transitions (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file          text NOT NULL,
    from_verifier text NOT NULL,
    to_verifier   text NOT NULL,
    statement     text NOT NULL,
    made_by       text NOT NULL,
    made_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file, from_verifier)
);
