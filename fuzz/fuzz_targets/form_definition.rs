//! Arbitrary bytes as a `madoguchi.form/1` definition document: parsing and the
//! publish checks never panic, and a definition they accept survives a JSON round
//! trip unchanged (what the builder stores and what municipalities exchange).
#![no_main]

use libfuzzer_sys::fuzz_target;
use madoguchi::tenant::forms::answers::{check_field, input_names, Raw};
use madoguchi::tenant::forms::definition::{FieldKind, FormDefinition, FORMAT};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let def = match FormDefinition::from_json(text) {
        Ok(def) => def,
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason");
            // The builder shows every problem: each has both languages.
            for p in &problems {
                assert!(!p.ja.is_empty() && !p.en.is_empty());
            }
            return;
        }
    };
    assert_eq!(def.format, FORMAT);
    assert!(def.check().is_empty());

    // Stored and exchanged as JSON: the same definition comes back.
    let json = serde_json::to_string(&def).expect("an accepted definition serialises");
    let again = FormDefinition::from_json(&json)
        .unwrap_or_else(|p| panic!("re-serialised definition refused: {p:?}\n{json}"));
    assert_eq!(again, def, "JSON round trip changed the definition");

    // The helpers the builder and the citizen pages call on any published form.
    let mut ids = Vec::new();
    for f in def.fields() {
        assert!(def.field(&f.id).is_some());
        assert!(FieldKind::new_of(f.kind.type_name()).is_some());
        assert_eq!(input_names(f).is_empty(), !f.kind.takes_answer());
        ids.push(f.id.clone());
        // An empty submission is checked without panicking.
        let _ = check_field(f, &Raw::new());
    }
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate field ids passed the checks");
});
