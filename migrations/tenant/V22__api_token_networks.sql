-- Where an API token may be used from: 'admin', the admin screen's network rule
-- (its address ranges and zones); 'listed', only the token's own address ranges;
-- 'any', anywhere. Tokens issued before this version keep working from anywhere, as
-- they did; new ones follow the admin screen's rule unless told otherwise.
ALTER TABLE api_tokens
    ADD COLUMN network text NOT NULL DEFAULT 'any' CHECK (network IN ('admin', 'listed', 'any')),
    ADD COLUMN cidrs text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT api_tokens_listed_has_cidrs CHECK (network <> 'listed' OR cardinality(cidrs) BETWEEN 1 AND 200);
ALTER TABLE api_tokens ALTER COLUMN network SET DEFAULT 'admin';
