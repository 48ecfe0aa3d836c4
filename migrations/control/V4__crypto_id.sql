-- The identity bound into a tenant's ciphertexts. A tenant restored from another's
-- backup keeps the source's, with its own wrapped copy of the source's data keys.
ALTER TABLE tenants ADD COLUMN crypto_id uuid;
UPDATE tenants SET crypto_id = id;
ALTER TABLE tenants ALTER COLUMN crypto_id SET NOT NULL;
