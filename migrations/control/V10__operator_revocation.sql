-- Revoking an operator (or auditor): from then on their key signs nothing the
-- platform accepts and they cannot sign in to the console. The row stays, with its
-- public key, so signatures made before the revocation can still be checked, and so
-- the same key cannot be registered again under another id.
ALTER TABLE operators ADD COLUMN revoked_at timestamptz;
ALTER TABLE operators ADD COLUMN revoked_by text REFERENCES operators (id);
ALTER TABLE operators ADD COLUMN revoked_reason text;
ALTER TABLE operators ADD CONSTRAINT operators_revocation_whole
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)
       AND (revoked_at IS NULL) = (revoked_reason IS NULL));
