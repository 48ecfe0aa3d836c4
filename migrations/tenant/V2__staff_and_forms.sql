-- Staff, their sessions, departments, forms and their published versions,
-- citizens' drafts and submissions. Personal data is stored encrypted by the
-- application (bytea columns); lookups on it use blind indexes.

CREATE TABLE departments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Staff e-mail addresses are work addresses, kept in clear for sign-in.
CREATE TABLE staff (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000) PRIMARY KEY,
    email           text NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name    text NOT NULL DEFAULT '',
    role            text NOT NULL CHECK (role IN ('admin', 'dept_manager', 'staff', 'viewer')),
    department_id   bigint REFERENCES departments (id),
    password_hash   text,
    -- TOTP secret, encrypted with the tenant key (table staff, column totp_secret, row id).
    totp_secret     bytea,
    totp_enabled    boolean NOT NULL DEFAULT false,
    totp_last_step  bigint NOT NULL DEFAULT 0,
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE staff_setup_tokens (
    token_hash  bytea PRIMARY KEY,
    staff_id    bigint NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE staff_sessions (
    id_hash         bytea PRIMARY KEY,
    staff_id        bigint NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

CREATE TABLE forms (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 2000) PRIMARY KEY,
    public_id       text NOT NULL UNIQUE,
    department_id   bigint NOT NULL REFERENCES departments (id),
    draft           jsonb NOT NULL,
    draft_updated_at timestamptz NOT NULL DEFAULT now(),
    current_version integer,
    closed          boolean NOT NULL DEFAULT false,
    -- Copied from the published version, so the submit path reads one row.
    capacity        integer,
    accepted_count  integer NOT NULL DEFAULT 0,
    created_by      bigint REFERENCES staff (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (capacity IS NULL OR accepted_count <= capacity)
);

CREATE TABLE form_versions (
    form_id         bigint NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version > 0),
    definition      jsonb NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    published_by    bigint REFERENCES staff (id),
    PRIMARY KEY (form_id, version)
);

-- A citizen's answers between pages, encrypted; found by the hash of a random token
-- held in a cookie.
CREATE TABLE citizen_drafts (
    id              uuid PRIMARY KEY,
    token_hash      bytea NOT NULL UNIQUE,
    form_id         bigint NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    form_version    integer NOT NULL,
    inputs          bytea,
    submission_id   uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX citizen_drafts_expiry ON citizen_drafts (expires_at);

CREATE TABLE submissions (
    id              uuid PRIMARY KEY,
    form_id         bigint NOT NULL REFERENCES forms (id),
    form_version    integer NOT NULL,
    receipt_number  text NOT NULL UNIQUE,
    -- Answers: a JSON object field id -> ciphertext (base64), each encrypted with
    -- column "answer:<field id>" and this row's id bound in.
    answers         jsonb NOT NULL,
    email_index     bytea,
    phone_index     bytea,
    status          text NOT NULL DEFAULT 'received',
    idempotency_key uuid NOT NULL UNIQUE,
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (form_id, form_version) REFERENCES form_versions (form_id, version)
);
CREATE INDEX submissions_form ON submissions (form_id, submitted_at DESC);
CREATE INDEX submissions_email ON submissions (email_index) WHERE email_index IS NOT NULL;
CREATE INDEX submissions_phone ON submissions (phone_index) WHERE phone_index IS NOT NULL;
