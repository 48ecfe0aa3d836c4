-- 申請一覧: a citizen asks for a link by mail to the address they applied with,
-- opens it in a browser, and for half an hour sees there every application sent
-- with that address. One row is first the link (until it is opened or expires),
-- then the browser's session (until it ends); rows past `expires_at` are deleted.
CREATE TABLE citizen_sign_ins (
    id           uuid PRIMARY KEY,
    -- SHA-256 of the mailed link's key: the link works once.
    key_hash     bytea NOT NULL UNIQUE,
    -- The address as given (NFKC), sealed with the data key to the row's id: the
    -- applications are found by its blind indexes, and a detail is looked up with it.
    email        bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The link's expiry, then the session's once opened.
    expires_at   timestamptz NOT NULL,
    opened_at    timestamptz,
    -- SHA-256 of the session cookie given to the browser that opened the link.
    session_hash bytea UNIQUE
);
CREATE INDEX citizen_sign_ins_expiry ON citizen_sign_ins (expires_at);
