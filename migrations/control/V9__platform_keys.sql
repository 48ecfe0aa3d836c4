-- The public forms of the platform's signing keys (platform.key, tlog.key), recorded
-- when each is first made or read: from then on a missing key file is refused
-- (restore it from escrow) and so is a file holding another key, instead of a new key
-- that would leave certificates and checkpoints unverifiable against the public key
-- handed out.
CREATE TABLE platform_keys (
    file        text PRIMARY KEY,
    verifier    text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
