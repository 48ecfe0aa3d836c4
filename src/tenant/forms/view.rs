//! What a form page shows: fields turned into view models the templates render,
//! with the values typed so far and the errors beside them.

use super::answers::{file_types_label, Answer, FieldError, FileRef, Raw, MAX_INPUT};
use super::definition::{ChoiceDisplay, Condition, ConditionOp, Field, FieldKind, FileType, Page};
use uuid::Uuid;

pub struct OptionView {
    pub value: String,
    pub input_id: String,
    pub checked: bool,
    /// 選択肢ごとの定員: the places left (「残り3」, 「満員」), or empty.
    pub note: String,
    /// Full, and not the person's choice already (a choice that filled up since is
    /// left as it is, and the send says so).
    pub disabled: bool,
}

/// A sub-input of a composite field (address, name).
pub struct PartView {
    pub name: String,
    pub id: String,
    pub label: String,
    pub value: String,
    pub autocomplete: &'static str,
    pub inputmode: &'static str,
    pub error: bool,
    pub size_class: &'static str,
}

pub struct FieldView {
    pub id: String,
    /// The element the label points at and the error summary links to.
    pub input_id: String,
    pub kind: &'static str,
    pub label: String,
    pub help: String,
    pub required: bool,
    pub placeholder: String,
    pub value: String,
    pub options: Vec<OptionView>,
    pub select: bool,
    pub parts: Vec<PartView>,
    pub text: String,
    pub unit: String,
    pub input_type: &'static str,
    pub inputmode: &'static str,
    pub autocomplete: &'static str,
    pub error: Option<String>,
    pub maxlength: Option<u32>,
    /// A date's earliest and latest (ISO), for the browser's date picker.
    pub min: String,
    pub max: String,
    /// The ids of what describes the input, for `aria-describedby`: its error, help,
    /// length limit, unit or consent statement, in the order the page shows them.
    pub described_by: String,
    /// A show/hide rule on another field of the same page, for the script.
    pub show_field: String,
    pub show_op: &'static str,
    pub show_values: String,
    /// 添付ファイル: the kinds the browser offers (`accept`), the largest file in
    /// bytes (the page's script warns before sending a larger one), and the file
    /// attached so far, as shown.
    pub accept: String,
    pub max_bytes: u64,
    pub attached: Option<String>,
    /// The attached file itself, for the citizen to check (set by the page).
    pub attached_id: Option<Uuid>,
    pub attached_href: Option<String>,
    /// An e-mail address's second input (typed again): its value and whether the
    /// error is about it.
    pub confirm: Option<(String, bool)>,
}

fn first(raw: &Raw, name: &str) -> String {
    raw.get(name)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

/// HTML ids: field ids are `[a-z0-9_-]`, so this is safe and unique per page.
pub fn input_id(name: &str) -> String {
    format!("f-{}", name.replace('.', "-"))
}

/// A show/hide rule as the page's script reads it (`data-show-field`, `-op`,
/// `-values`).
pub fn show_rule(c: &Condition) -> (String, &'static str, String) {
    let op = match c.op {
        ConditionOp::Equals => "equals",
        ConditionOp::In => "in",
        ConditionOp::NotEmpty => "not_empty",
    };
    let values: Vec<&String> = if c.op == ConditionOp::Equals {
        c.values.iter().take(1).collect()
    } else {
        c.values.iter().collect()
    };
    (
        c.field.clone(),
        op,
        serde_json::to_string(&values).unwrap_or_default(),
    )
}

impl FieldView {
    /// The error is about the address typed again, not the first box.
    pub fn confirm_is_wrong(&self) -> bool {
        matches!(self.confirm, Some((_, true)))
    }
}

pub fn field_view(f: &Field, raw: &Raw, errors: &[FieldError]) -> FieldView {
    let error = errors.iter().find(|e| e.field == f.id);
    let err_input = error.map(|e| e.input.clone()).unwrap_or_default();
    let mut v = FieldView {
        id: f.id.clone(),
        input_id: input_id(&f.id),
        kind: f.kind.type_name(),
        label: f.label.clone(),
        help: f.help.clone(),
        required: f.required,
        placeholder: f.placeholder.clone(),
        value: first(raw, &f.id),
        options: Vec::new(),
        select: false,
        parts: Vec::new(),
        text: String::new(),
        unit: String::new(),
        input_type: "text",
        inputmode: "",
        autocomplete: "",
        error: error.map(|e| e.message.clone()),
        maxlength: None,
        min: String::new(),
        max: String::new(),
        described_by: String::new(),
        show_field: String::new(),
        show_op: "",
        show_values: String::new(),
        accept: String::new(),
        max_bytes: 0,
        attached: None,
        attached_id: None,
        attached_href: None,
        confirm: None,
    };
    if let Some(c) = &f.show_if {
        (v.show_field, v.show_op, v.show_values) = show_rule(c);
    }
    let part = |name: &str,
                label: &str,
                autocomplete: &'static str,
                inputmode: &'static str,
                size_class: &'static str| PartView {
        name: format!("{}.{name}", f.id),
        id: input_id(&format!("{}.{name}", f.id)),
        label: label.to_owned(),
        value: first(raw, &format!("{}.{name}", f.id)),
        autocomplete,
        inputmode,
        error: err_input == format!("{}.{name}", f.id),
        size_class,
    };
    match &f.kind {
        // The limit the server applies: the field's own, at most MAX_INPUT.
        FieldKind::Text { max_length, .. } | FieldKind::Textarea { max_length, .. } => {
            let most = u32::try_from(MAX_INPUT).unwrap_or(u32::MAX);
            v.maxlength = max_length.map(|m| m.min(most));
        }
        FieldKind::Number { unit, integer, .. } => {
            v.unit = unit.clone();
            v.inputmode = if *integer { "numeric" } else { "decimal" };
        }
        FieldKind::Email {} => {
            v.input_type = "email";
            v.autocomplete = "email";
            v.inputmode = "email";
            // As typed; the address itself where the page is drawn from what was
            // kept (a draft, the way back from the confirmation step).
            let name = format!("{}.confirm", f.id);
            let again = raw
                .get(&name)
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_else(|| v.value.clone());
            v.confirm = Some((again, err_input == name));
        }
        FieldKind::Tel {} => {
            v.input_type = "tel";
            v.autocomplete = "tel";
            v.inputmode = "tel";
        }
        FieldKind::Date { min, max } => {
            v.input_type = "date";
            v.min = min.map(|d| d.to_string()).unwrap_or_default();
            v.max = max.map(|d| d.to_string()).unwrap_or_default();
        }
        FieldKind::Choice {
            options, display, ..
        } => {
            v.select = *display == ChoiceDisplay::Select;
            v.options = options
                .iter()
                .enumerate()
                .map(|(i, o)| OptionView {
                    value: o.clone(),
                    input_id: format!("{}-{i}", v.input_id),
                    checked: v.value == *o,
                    note: String::new(),
                    disabled: false,
                })
                .collect();
            if !v.select {
                v.input_id = format!("{}-0", v.input_id);
            }
        }
        FieldKind::MultiChoice { options, .. } => {
            let chosen = raw.get(&f.id).cloned().unwrap_or_default();
            v.options = options
                .iter()
                .enumerate()
                .map(|(i, o)| OptionView {
                    value: o.clone(),
                    input_id: format!("{}-{i}", v.input_id),
                    checked: chosen.contains(o),
                    note: String::new(),
                    disabled: false,
                })
                .collect();
            v.input_id = format!("{}-0", v.input_id);
        }
        FieldKind::Address {} => {
            v.parts = vec![
                part(
                    "postal",
                    "郵便番号（例: 1028688、ハイフンなしで可）",
                    "postal-code",
                    "numeric",
                    "short",
                ),
                part(
                    "address1",
                    "住所（都道府県・市区町村・番地）",
                    "street-address",
                    "",
                    "long",
                ),
                part("address2", "建物名・部屋番号", "", "", "long"),
            ];
        }
        FieldKind::Name { furigana } => {
            v.parts = vec![
                part("family", "姓", "family-name", "", "mid"),
                part("given", "名", "given-name", "", "mid"),
            ];
            if *furigana {
                v.parts
                    .push(part("family_kana", "セイ（カタカナ）", "", "", "mid"));
                v.parts
                    .push(part("given_kana", "メイ（カタカナ）", "", "", "mid"));
            }
        }
        FieldKind::File { types, .. } => {
            v.input_type = "file";
            v.value.clear();
            let mb = f.kind.file_limit_mb().unwrap_or(0);
            v.max_bytes = u64::from(mb) * 1024 * 1024;
            v.accept = types
                .iter()
                .flat_map(|t| match t {
                    FileType::Pdf => vec!["application/pdf", ".pdf"],
                    FileType::Jpeg => vec!["image/jpeg", ".jpg", ".jpeg"],
                    FileType::Png => vec!["image/png", ".png"],
                })
                .collect::<Vec<_>>()
                .join(",");
            v.text = format!("{}、{mb}MBまで", file_types_label(types));
            let file = raw
                .get(&f.id)
                .and_then(|vs| vs.first())
                .and_then(|s| FileRef::from_input(s));
            v.attached_id = file.as_ref().map(|r| r.id);
            v.attached = file.map(|r| Answer::File(r).display());
        }
        FieldKind::Consent { statement } => v.text = statement.clone(),
        FieldKind::Paragraph { text } => v.text = text.clone(),
        FieldKind::Heading {} => {}
    }
    let described: [(bool, &str); 6] = [
        (v.error.is_some(), "error"),
        (!v.help.is_empty(), "help"),
        (v.maxlength.is_some() || v.max_bytes > 0, "limit"),
        (v.attached.is_some(), "attached"),
        (!v.unit.is_empty(), "unit"),
        (matches!(f.kind, FieldKind::Consent { .. }), "statement"),
    ];
    v.described_by = described
        .iter()
        .filter(|(shown, _)| *shown)
        .map(|(_, what)| format!("{what}-{}", f.id))
        .collect::<Vec<_>>()
        .join(" ");
    if !v.parts.is_empty() {
        let target = if err_input.is_empty() {
            v.parts[0].name.clone()
        } else {
            err_input
        };
        v.input_id = input_id(&target);
    }
    v
}

pub fn page_views(
    page: &Page,
    raw: &Raw,
    errors: &[FieldError],
    visible: impl Fn(&Field) -> bool,
) -> Vec<FieldView> {
    page.fields
        .iter()
        .filter(|f| visible(f))
        .map(|f| field_view(f, raw, errors))
        .collect()
}

/// Marks each option of the page's choice questions that has 選択肢ごとの定員 with
/// the places left, and disables the full ones the person has not chosen.
pub fn mark_places(fields: &mut [FieldView], places: &[super::places::Place]) {
    for f in fields {
        for o in &mut f.options {
            let Some(p) = places
                .iter()
                .find(|p| p.field == f.id && p.option == o.value)
            else {
                continue;
            };
            if p.left() == 0 {
                o.note = "満員".into();
                o.disabled = !o.checked;
            } else {
                o.note = format!("残り{}", p.left());
            }
        }
    }
}
