-- One Ed25519 key, one person: the two-person rule of erasure compares operators,
-- so one key must not be registered under two operator ids.
CREATE UNIQUE INDEX operators_public_key_once ON operators (public_key);
