-- Where the admin screen may be used from: client address ranges (empty: any) and
-- network zones of the listener the request came through.
ALTER TABLE settings ADD COLUMN admin_cidrs text[] NOT NULL DEFAULT '{}';
ALTER TABLE settings ADD COLUMN admin_zones text[] NOT NULL DEFAULT '{internet,lgwan}';
