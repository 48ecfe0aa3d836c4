-- 申請一覧: the browser that opened a link may press its button again for a short
-- while (its first answer lost on the way); SHA-256 of the claim cookie the link's
-- page gave that browser, NULL when it had none (then the link works only once).
ALTER TABLE citizen_sign_ins ADD COLUMN claim_hash bytea;
