-- When an erasure began and who began it: from then on the request can no longer be
-- withdrawn (the tenant's database may already be gone), only the erasure finished.
ALTER TABLE decommissions
    ADD COLUMN erasure_started_at timestamptz,
    ADD COLUMN erasure_started_by text;
