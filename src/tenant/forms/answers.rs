//! Answers: what a citizen typed (raw form inputs), checked against a form
//! definition into typed answers, with errors in plain Japanese.
//!
//! Input names: a field's id; for composite fields `<id>.postal`, `<id>.address1`,
//! `<id>.address2`, and `<id>.family`, `<id>.given`, `<id>.family_kana`,
//! `<id>.given_kana`. Hidden fields (their show/hide rule does not match) are neither
//! required nor stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::Date;

use super::definition::{Condition, ConditionOp, Field, FieldKind, FormDefinition, Page};
use crate::ja;

/// The longest single input accepted, whatever the field's own limit (characters).
pub const MAX_INPUT: usize = 10_000;

/// Raw inputs: name → values (several for multiple choice).
pub type Raw = BTreeMap<String, Vec<String>>;

/// A checked answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Answer {
    Text(String),
    Number(String),
    Date(Date),
    Choice(String),
    Multi(Vec<String>),
    Address { postal_code: String, address1: String, address2: String },
    Name { family: String, given: String, family_kana: String, given_kana: String },
    Consent(bool),
}

pub type Answers = BTreeMap<String, Answer>;

impl Answer {
    /// The answer as shown on the confirmation page and to staff.
    pub fn display(&self) -> String {
        match self {
            Self::Text(s) | Self::Choice(s) | Self::Number(s) => s.clone(),
            Self::Date(d) => ja::date_both(*d),
            Self::Multi(v) => v.join("、"),
            Self::Address { postal_code, address1, address2 } => {
                let pc = if postal_code.len() == 7 { format!("〒{}-{}", &postal_code[..3], &postal_code[3..]) } else { postal_code.clone() };
                format!("{pc} {address1} {address2}").trim().to_owned()
            }
            Self::Name { family, given, family_kana, given_kana } => {
                let kana = format!("{family_kana}\u{3000}{given_kana}");
                let kana = kana.trim_matches('\u{3000}');
                if kana.is_empty() {
                    format!("{family}\u{3000}{given}")
                } else {
                    format!("{family}\u{3000}{given}（{kana}）")
                }
            }
            Self::Consent(true) => "同意する".into(),
            Self::Consent(false) => "同意しない".into(),
        }
    }

    /// Values a show/hide rule compares against.
    fn values(&self) -> Vec<String> {
        match self {
            Self::Multi(v) => v.clone(),
            Self::Consent(b) => vec![if *b { "yes".into() } else { "no".into() }],
            Self::Date(d) => vec![d.to_string()],
            other => vec![other.display()],
        }
    }
}

/// One error, tied to the input it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    /// The input to focus (the error summary links to it).
    pub input: String,
    pub message: String,
}

fn matches(c: &Condition, answers: &Answers) -> bool {
    let Some(a) = answers.get(&c.field) else { return false };
    let values = a.values();
    match c.op {
        ConditionOp::NotEmpty => values.iter().any(|v| !v.is_empty()),
        ConditionOp::Equals => c.values.first().is_some_and(|want| values.contains(want)),
        ConditionOp::In => c.values.iter().any(|want| values.contains(want)),
    }
}

/// Whether a page is shown, given the answers so far.
pub fn page_visible(page: &Page, answers: &Answers) -> bool {
    page.show_if.as_ref().is_none_or(|c| matches(c, answers))
}

/// Whether a field is shown, given the answers so far.
pub fn field_visible(field: &Field, answers: &Answers) -> bool {
    field.show_if.as_ref().is_none_or(|c| matches(c, answers))
}

fn first(raw: &Raw, name: &str) -> String {
    raw.get(name).and_then(|v| v.first()).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Checks one page's inputs. `before` holds the answers of earlier pages (for
/// show/hide rules); the page's own answers are added to it as they are checked.
pub fn check_page(page: &Page, raw: &Raw, before: &Answers) -> (Answers, Vec<FieldError>) {
    let mut known = before.clone();
    let mut out = Answers::new();
    let mut errors = Vec::new();
    for field in &page.fields {
        if !field.kind.takes_answer() || !field_visible(field, &known) {
            continue;
        }
        match check_field(field, raw) {
            Ok(Some(a)) => {
                known.insert(field.id.clone(), a.clone());
                out.insert(field.id.clone(), a);
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

/// Checks every visible page of the definition: what a submission is validated with.
pub fn check_all(def: &FormDefinition, raw: &Raw) -> Result<Answers, Vec<FieldError>> {
    let mut answers = Answers::new();
    let mut errors = Vec::new();
    for page in &def.pages {
        if !page_visible(page, &answers) {
            continue;
        }
        let (a, e) = check_page(page, raw, &answers);
        answers.extend(a);
        errors.extend(e);
    }
    if errors.is_empty() {
        Ok(answers)
    } else {
        Err(errors)
    }
}

/// The inputs of one page, to keep in a draft: only the names the page uses.
pub fn page_inputs(page: &Page, raw: &Raw) -> Raw {
    let mut out = Raw::new();
    for f in &page.fields {
        for name in input_names(f) {
            if let Some(v) = raw.get(&name) {
                let v: Vec<String> = v.iter().take(MAX_OPTIONS_INPUT).map(|s| s.chars().take(MAX_INPUT).collect()).collect();
                out.insert(name, v);
            }
        }
    }
    out
}

const MAX_OPTIONS_INPUT: usize = 100;

/// Input names a field uses.
pub fn input_names(f: &Field) -> Vec<String> {
    match f.kind {
        FieldKind::Address {} => vec![format!("{}.postal", f.id), format!("{}.address1", f.id), format!("{}.address2", f.id)],
        FieldKind::Name { .. } => ["family", "given", "family_kana", "given_kana"].iter().map(|p| format!("{}.{p}", f.id)).collect(),
        _ if f.kind.takes_answer() => vec![f.id.clone()],
        _ => Vec::new(),
    }
}

fn err(f: &Field, input: &str, message: String) -> FieldError {
    FieldError { field: f.id.clone(), input: input.to_owned(), message }
}

fn check_length(f: &Field, v: &str, min: Option<u32>, max: Option<u32>) -> Result<(), FieldError> {
    let n = ja::char_count(v);
    let max = max.map_or(MAX_INPUT, |m| m as usize);
    if n > max {
        return Err(err(f, &f.id, format!("{}は{max}文字以内で入力してください（現在{n}文字）", f.label)));
    }
    if let Some(min) = min {
        if n < min as usize {
            return Err(err(f, &f.id, format!("{}は{min}文字以上で入力してください", f.label)));
        }
    }
    Ok(())
}

/// Checks one field; `Ok(None)` for an optional field left empty.
pub fn check_field(f: &Field, raw: &Raw) -> Result<Option<Answer>, FieldError> {
    let label = &f.label;
    let required = |input: &str| err(f, input, format!("{label}を入力してください"));
    match &f.kind {
        FieldKind::Text { min_length, max_length, pattern, pattern_message } => {
            let v = first(raw, &f.id);
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            if v.contains(['\n', '\r']) {
                return Err(err(f, &f.id, format!("{label}は1行で入力してください")));
            }
            check_length(f, &v, *min_length, *max_length)?;
            if let Some(p) = pattern {
                let re = regex::RegexBuilder::new(&format!("^(?:{p})$")).size_limit(1 << 20).build();
                if !re.is_ok_and(|re| re.is_match(&v)) {
                    let msg = pattern_message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| format!("{label}の形式が正しくありません"));
                    return Err(err(f, &f.id, msg));
                }
            }
            Ok(Some(Answer::Text(v)))
        }
        FieldKind::Textarea { min_length, max_length } => {
            let v = first(raw, &f.id).replace("\r\n", "\n");
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            check_length(f, &v, *min_length, *max_length)?;
            Ok(Some(Answer::Text(v)))
        }
        FieldKind::Number { min, max, unit, integer } => {
            let v: String = ja::nfkc(&first(raw, &f.id)).chars().filter(|c| *c != ',' && !c.is_whitespace()).collect();
            let v = v.strip_suffix(unit.as_str()).filter(|_| !unit.is_empty()).map(str::to_owned).unwrap_or(v);
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            let ok_chars = v.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && c == '-'));
            let n: Option<f64> = if ok_chars && v.len() <= 30 { v.parse().ok().filter(|n: &f64| n.is_finite()) } else { None };
            let Some(n) = n else {
                return Err(err(f, &f.id, format!("{label}は数字で入力してください")));
            };
            if *integer && v.contains('.') {
                return Err(err(f, &f.id, format!("{label}は整数で入力してください")));
            }
            let unit_sfx = if unit.is_empty() { String::new() } else { unit.clone() };
            if let Some(min) = min.filter(|m| n < *m) {
                return Err(err(f, &f.id, format!("{label}は{min}{unit_sfx}以上で入力してください")));
            }
            if let Some(max) = max.filter(|m| n > *m) {
                return Err(err(f, &f.id, format!("{label}は{max}{unit_sfx}以下で入力してください")));
            }
            Ok(Some(Answer::Number(v)))
        }
        FieldKind::Email {} => {
            let v = ja::nfkc(&first(raw, &f.id));
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            let ok = v.len() <= 254
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
                && v.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && local.len() <= 64 && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains("..")
                });
            if !ok {
                return Err(err(f, &f.id, format!("{label}の形式が正しくありません（例: yamada@example.jp）")));
            }
            let (local, domain) = v.split_once('@').unwrap_or_default();
            Ok(Some(Answer::Text(format!("{local}@{}", domain.to_ascii_lowercase()))))
        }
        FieldKind::Tel {} => {
            let v = ja::nfkc(&first(raw, &f.id));
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            let digits: String = v.chars().filter(|c| !matches!(c, '-' | ' ' | '(' | ')' | '‐' | 'ー' | '−')).collect();
            let digits = match digits.strip_prefix("+81") {
                Some(rest) => format!("0{rest}"),
                None => digits,
            };
            if !(digits.starts_with('0') && (10..=11).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())) {
                return Err(err(f, &f.id, format!("{label}は市外局番から10桁または11桁の数字で入力してください（例: 03-1234-5678）")));
            }
            Ok(Some(Answer::Text(digits)))
        }
        FieldKind::Date { min, max } => {
            let v = ja::nfkc(&first(raw, &f.id)).replace('/', "-");
            if v.is_empty() {
                return if f.required { Err(required(&f.id)) } else { Ok(None) };
            }
            let parts: Vec<&str> = v.split('-').collect();
            let d = (parts.len() == 3)
                .then(|| {
                    let y: i32 = parts[0].parse().ok()?;
                    let m: u8 = parts[1].parse().ok()?;
                    let d: u8 = parts[2].parse().ok()?;
                    Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
                })
                .flatten();
            let Some(d) = d else {
                return Err(err(f, &f.id, format!("{label}は正しい日付で入力してください（例: 2026-11-25）")));
            };
            if let Some(min) = min.filter(|m| d < *m) {
                return Err(err(f, &f.id, format!("{label}は{}以降の日付を入力してください", ja::date_both(min))));
            }
            if let Some(max) = max.filter(|m| d > *m) {
                return Err(err(f, &f.id, format!("{label}は{}以前の日付を入力してください", ja::date_both(max))));
            }
            Ok(Some(Answer::Date(d)))
        }
        FieldKind::Choice { options, .. } => {
            let v = first(raw, &f.id);
            if v.is_empty() {
                return if f.required { Err(err(f, &f.id, format!("{label}を選択してください"))) } else { Ok(None) };
            }
            if !options.contains(&v) {
                return Err(err(f, &f.id, format!("{label}は表示されている選択肢から選んでください")));
            }
            Ok(Some(Answer::Choice(v)))
        }
        FieldKind::MultiChoice { options, min_selected, max_selected } => {
            let chosen: Vec<String> = raw.get(&f.id).map(|v| v.iter().filter(|s| !s.is_empty()).cloned().collect()).unwrap_or_default();
            if chosen.is_empty() {
                return if f.required { Err(err(f, &f.id, format!("{label}を選択してください"))) } else { Ok(None) };
            }
            if chosen.iter().any(|c| !options.contains(c)) {
                return Err(err(f, &f.id, format!("{label}は表示されている選択肢から選んでください")));
            }
            // Keep the definition's order, once each.
            let chosen: Vec<String> = options.iter().filter(|o| chosen.contains(o)).cloned().collect();
            if let Some(min) = min_selected.filter(|m| chosen.len() < *m as usize) {
                return Err(err(f, &f.id, format!("{label}は{min}個以上選択してください")));
            }
            if let Some(max) = max_selected.filter(|m| chosen.len() > *m as usize) {
                return Err(err(f, &f.id, format!("{label}は{max}個まで選択できます")));
            }
            Ok(Some(Answer::Multi(chosen)))
        }
        FieldKind::Address {} => {
            let (pc_name, a1_name, a2_name) = (format!("{}.postal", f.id), format!("{}.address1", f.id), format!("{}.address2", f.id));
            let pc: String = ja::nfkc(&first(raw, &pc_name)).chars().filter(|c| !matches!(c, '-' | ' ' | '〒' | '‐' | 'ー' | '−')).collect();
            let a1 = first(raw, &a1_name);
            let a2 = first(raw, &a2_name);
            if pc.is_empty() && a1.is_empty() && a2.is_empty() {
                return if f.required { Err(err(f, &pc_name, format!("{label}の郵便番号を入力してください"))) } else { Ok(None) };
            }
            if pc.len() != 7 || !pc.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(f, &pc_name, format!("{label}の郵便番号は7桁の数字で入力してください（例: 102-8688）")));
            }
            if a1.is_empty() {
                return Err(err(f, &a1_name, format!("{label}の住所を入力してください")));
            }
            for (name, v) in [(&a1_name, &a1), (&a2_name, &a2)] {
                if ja::char_count(v) > 200 {
                    return Err(err(f, name, format!("{label}の住所は200文字以内で入力してください")));
                }
            }
            Ok(Some(Answer::Address { postal_code: pc, address1: a1, address2: a2 }))
        }
        FieldKind::Name { furigana } => {
            let names: Vec<String> = ["family", "given", "family_kana", "given_kana"].iter().map(|p| format!("{}.{p}", f.id)).collect();
            let [family, given, fk, gk]: [String; 4] = [0, 1, 2, 3].map(|i| first(raw, &names[i]));
            if family.is_empty() && given.is_empty() && fk.is_empty() && gk.is_empty() {
                return if f.required { Err(err(f, &names[0], format!("{label}（姓）を入力してください"))) } else { Ok(None) };
            }
            if family.is_empty() {
                return Err(err(f, &names[0], format!("{label}（姓）を入力してください")));
            }
            for (name, v) in [(&names[0], &family), (&names[1], &given)] {
                if ja::char_count(v) > 50 {
                    return Err(err(f, name, format!("{label}は50文字以内で入力してください")));
                }
            }
            let (mut family_kana, mut given_kana) = (String::new(), String::new());
            if *furigana {
                if fk.is_empty() {
                    return Err(err(f, &names[2], format!("{label}のフリガナ（セイ）を入力してください")));
                }
                for (name, v, slot) in [(&names[2], &fk, &mut family_kana), (&names[3], &gk, &mut given_kana)] {
                    match ja::to_katakana(v) {
                        Some(k) if ja::char_count(&k) <= 50 => *slot = k,
                        _ => return Err(err(f, name, format!("{label}のフリガナはカタカナで入力してください"))),
                    }
                }
            }
            Ok(Some(Answer::Name { family, given, family_kana, given_kana }))
        }
        FieldKind::Consent { .. } => {
            let yes = first(raw, &f.id) == "yes";
            if f.required && !yes {
                return Err(err(f, &f.id, format!("{label}への同意が必要です")));
            }
            Ok(Some(Answer::Consent(yes)))
        }
        FieldKind::Heading {} | FieldKind::Paragraph { .. } => Ok(None),
    }
}
