-- The home page lists every open form with its title and settings (受付期間, 定員,
-- 公開先). Taken out of each published definition on every visit, each definition
-- was read whole (decompressed when large) to take them out, and the server parsed
-- the settings through a generic JSON value. Kept beside the definition instead,
-- computed by PostgreSQL when a version is stored.
ALTER TABLE form_versions
    ADD COLUMN title text GENERATED ALWAYS AS (definition->>'title') STORED,
    ADD COLUMN settings jsonb GENERATED ALWAYS AS (definition->'settings') STORED;
