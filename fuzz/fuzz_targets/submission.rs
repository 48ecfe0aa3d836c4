//! A citizen's submission: arbitrary `application/x-www-form-urlencoded` bodies,
//! parsed exactly as `FormData` does (src/tenant/http.rs), checked against valid
//! definitions (the shipped bulky-waste sample and one with every field type).
//! First byte: which definition; the rest: the body.
//!
//! Besides "never panics": `check_all` agrees with checking page by page, an
//! accepted answer is accepted again, unchanged, from the inputs `to_raw` gives
//! back (reopening a submission for correction), and answers survive the JSON
//! they are stored as.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use madoguchi::ja;
use madoguchi::tenant::forms::answers::{
    check_all, check_field, check_page, field_visible, page_inputs, page_visible, to_raw, Answer,
    Answers, Raw, MAX_INPUT,
};
use madoguchi::tenant::forms::definition::{Field, FieldKind, FormDefinition};

fn forms() -> &'static [FormDefinition] {
    static FORMS: OnceLock<Vec<FormDefinition>> = OnceLock::new();
    FORMS.get_or_init(|| {
        [
            include_str!("../../src/control/samples/bulky-waste.json"),
            include_str!("../forms/all-types.json"),
        ]
        .iter()
        .map(|text| FormDefinition::from_json(text).expect("seed definition is valid"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let forms = forms();
    let def = &forms[usize::from(which) % forms.len()];
    let mut raw = Raw::new();
    for (k, v) in form_urlencoded::parse(body) {
        raw.entry(k.into_owned()).or_default().push(v.into_owned());
    }

    let all = check_all(def, &raw);

    // Page by page, as the citizen's pages go, and from the inputs a draft keeps.
    // A draft keeps at most 100 values of MAX_INPUT characters per input.
    let few_values = raw
        .values()
        .all(|v| v.len() <= 100 && v.iter().all(|s| s.chars().count() <= MAX_INPUT));
    let mut before = Answers::new();
    for page in &def.pages {
        let kept = page_inputs(page, &raw);
        if !page_visible(page, &before) {
            continue;
        }
        for f in &page.fields {
            let _ = field_visible(f, &before);
        }
        let (answers, errors) = check_page(page, &raw, &before);
        if few_values {
            let (from_draft, draft_errors) = check_page(page, &kept, &before);
            assert_eq!(from_draft, answers, "a draft's inputs give other answers");
            assert_eq!(draft_errors, errors, "a draft's inputs give other errors");
        }
        before.extend(answers);
    }
    match &all {
        Ok(answers) => assert_eq!(answers, &before, "check_all and check_page disagree"),
        Err(errors) => assert!(!errors.is_empty()),
    }

    if let Ok(answers) = &all {
        // Reopened for correction and sent again unchanged: the same answers.
        let again = check_all(def, &to_raw(answers));
        assert_eq!(again.as_ref(), Ok(answers), "reopened answers changed");
        // Stored as JSON (encrypted) and read back.
        let json = serde_json::to_vec(answers).expect("answers serialise");
        let back: Answers = serde_json::from_slice(&json).expect("answers deserialise");
        assert_eq!(&back, answers);
    }

    // Field by field, visible or not: what one field accepts, it accepts again.
    for f in def.fields() {
        if let Ok(Some(a)) = check_field(f, &raw) {
            let _ = a.display();
            let one = Answers::from([(f.id.clone(), a.clone())]);
            let again = check_field(f, &to_raw(&one));
            assert_eq!(again, Ok(Some(a.clone())), "field {} not idempotent", f.id);
            if let Answer::Text(s) = &a {
                assert!(!s.is_empty());
            }
        }
    }
});
