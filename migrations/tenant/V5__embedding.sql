-- Sites allowed to show this municipality's citizen forms in a frame (e.g. its own
-- web site); empty: no framing at all.
ALTER TABLE settings ADD COLUMN embed_origins text[] NOT NULL DEFAULT '{}';
