-- 本人確認 (identity verification): the municipality's OpenID Connect provider (a
-- My Number card service or another identity provider it contracts), a citizen's
-- verification under way, and its result, kept with the draft and then with the
-- submission. Claims are personal data: encrypted with the municipality's key.

CREATE TABLE identity_provider (
    id                      boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- The provider's issuer URL and the endpoints its discovery document names.
    issuer                  text NOT NULL,
    authorization_endpoint  text NOT NULL,
    token_endpoint          text NOT NULL,
    jwks_uri                text NOT NULL,
    -- How the token endpoint takes the client's secret: client_secret_basic or
    -- client_secret_post.
    token_auth              text NOT NULL,
    client_id               text NOT NULL,
    -- The client secret, encrypted (table identity_provider, column client_secret).
    client_secret           bytea NOT NULL,
    scopes                  text NOT NULL,
    -- The name citizens see on the button (e.g. マイナンバーカード).
    label                   text NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    updated_by              text NOT NULL
);

-- A verification started from a draft's confirmation page: the SHA-256 of its
-- `state`, its nonce and PKCE verifier, for ten minutes and one use.
CREATE TABLE identity_requests (
    state_hash      bytea PRIMARY KEY,
    draft_id        uuid NOT NULL REFERENCES citizen_drafts (id) ON DELETE CASCADE,
    nonce           text NOT NULL,
    verifier        text NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX identity_requests_draft ON identity_requests (draft_id);
CREATE INDEX identity_requests_expiry ON identity_requests (expires_at);

-- A draft's verified identity (claims encrypted, bound to the draft's id).
CREATE TABLE draft_identities (
    draft_id        uuid PRIMARY KEY REFERENCES citizen_drafts (id) ON DELETE CASCADE,
    issuer          text NOT NULL,
    claims          bytea NOT NULL,
    verified_at     timestamptz NOT NULL
);

-- A submission's verified identity (claims encrypted, bound to the submission's id),
-- written in the submission's transaction.
CREATE TABLE submission_identities (
    submission_id   uuid PRIMARY KEY REFERENCES submissions (id) ON DELETE CASCADE,
    issuer          text NOT NULL,
    claims          bytea NOT NULL,
    verified_at     timestamptz NOT NULL
);
