-- 選択肢ごとの定員: places per option of a question (e.g. each session of a class),
-- counted as the form's 定員 is. Rebuilt from the applications at every publish;
-- kept by submitting, correcting, withdrawing, rejecting and deleting meanwhile.
CREATE TABLE option_places (
    form_id   bigint  NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    field_id  text    NOT NULL,
    option    text    NOT NULL,
    capacity  integer NOT NULL CHECK (capacity > 0),
    taken     integer NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= capacity),
    PRIMARY KEY (form_id, field_id, option)
);

-- The places each application holds: only options with a limit are named here (in
-- clear, as the form definition names them); other answers stay sealed. No foreign
-- key to submissions: a publish writes these rows with submissions locked in SHARE
-- mode, and the key check's row locks would deadlock with a status change holding
-- its application's row; deleting an application deletes its rows in the same
-- statement (`cases::retention`).
CREATE TABLE submission_places (
    submission_id uuid   NOT NULL,
    form_id       bigint NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    field_id      text   NOT NULL,
    option        text   NOT NULL,
    PRIMARY KEY (submission_id, field_id, option)
);
CREATE INDEX submission_places_form ON submission_places (form_id);
