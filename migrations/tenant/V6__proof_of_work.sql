-- Proof-of-work solutions already used (replay protection), kept until they expire.
CREATE TABLE pow_used (
    salt        text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX pow_used_expiry ON pow_used (expires_at);
