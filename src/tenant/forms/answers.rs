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

use super::definition::{Condition, ConditionOp, Field, FieldKind, FileType, FormDefinition, Page};
use crate::ja;

/// The longest single input accepted, whatever the field's own limit (characters).
pub const MAX_INPUT: usize = 10_000;

/// Raw inputs: name → values (several for multiple choice).
pub type Raw = BTreeMap<String, Vec<String>>;

/// An e-mail address as stored (`v` already NFKC): the domain in lower case, or
/// `None` when it is not the shape of an address.
pub fn email_address(v: &str) -> Option<String> {
    let ok = v.len() <= 254
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    let (local, domain) = v.split_once('@').filter(|_| ok)?;
    // Lower case first, then NFKC, so the stored address is NFKC too.
    Some(format!(
        "{local}@{}",
        ja::nfkc(&domain.to_ascii_lowercase())
    ))
}

/// A checked answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Answer {
    Text(String),
    Number(String),
    Date(Date),
    Choice(String),
    Multi(Vec<String>),
    Address {
        postal_code: String,
        address1: String,
        address2: String,
    },
    Name {
        family: String,
        given: String,
        family_kana: String,
        given_kana: String,
    },
    Consent(bool),
    /// 添付ファイル: the file is kept beside the answers (table `attachments`).
    File(FileRef),
}

/// An attached file as the answers name it. Set by the server when a file is
/// uploaded (see `attachments`), never taken from what a browser or a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub id: uuid::Uuid,
    /// The file's name as the applicant's device gave it (cleaned: no path, no
    /// control characters, NFC).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

impl FileRef {
    /// The draft's input that names this file.
    pub fn to_input(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_input(v: &str) -> Option<Self> {
        serde_json::from_str(v).ok()
    }
}

/// A size for people: 980 B, 340 KB, 2.4 MB (1 KB = 1,024 bytes).
pub fn size_label(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes < KIB {
        format!("{bytes} B")
    } else if bytes < KIB * KIB {
        format!("{} KB", bytes.div_ceil(KIB))
    } else {
        let tenths = (bytes * 10).div_ceil(KIB * KIB);
        format!("{}.{} MB", tenths / 10, tenths % 10)
    }
}

pub type Answers = BTreeMap<String, Answer>;

impl Answer {
    /// The answer as shown on the confirmation page and to staff.
    pub fn display(&self) -> String {
        match self {
            Self::Text(s) | Self::Choice(s) | Self::Number(s) => s.clone(),
            Self::Date(d) => ja::date_both(*d),
            Self::Multi(v) => v.join("、"),
            Self::Address {
                postal_code,
                address1,
                address2,
            } => {
                let pc = if postal_code.len() == 7 {
                    format!("〒{}-{}", &postal_code[..3], &postal_code[3..])
                } else {
                    postal_code.clone()
                };
                format!("{pc} {address1} {address2}").trim().to_owned()
            }
            Self::Name {
                family,
                given,
                family_kana,
                given_kana,
            } => {
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
            Self::File(f) => format!("{}（{}）", f.name, size_label(f.size)),
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

/// The inputs that would give these answers: to open a submitted application again
/// for correction.
pub fn to_raw(answers: &Answers) -> Raw {
    let mut raw = Raw::new();
    for (id, a) in answers {
        let mut put = |name: String, v: String| raw.entry(name).or_default().push(v);
        match a {
            Answer::Text(v) | Answer::Number(v) | Answer::Choice(v) => put(id.clone(), v.clone()),
            Answer::Date(d) => put(id.clone(), d.to_string()),
            Answer::Multi(vs) => vs.iter().for_each(|v| put(id.clone(), v.clone())),
            Answer::Consent(yes) => {
                put(id.clone(), if *yes { "yes".into() } else { String::new() })
            }
            Answer::File(f) => put(id.clone(), f.to_input()),
            Answer::Address {
                postal_code,
                address1,
                address2,
            } => {
                put(format!("{id}.postal"), postal_code.clone());
                put(format!("{id}.address1"), address1.clone());
                put(format!("{id}.address2"), address2.clone());
            }
            Answer::Name {
                family,
                given,
                family_kana,
                given_kana,
            } => {
                put(format!("{id}.family"), family.clone());
                put(format!("{id}.given"), given.clone());
                put(format!("{id}.family_kana"), family_kana.clone());
                put(format!("{id}.given_kana"), given_kana.clone());
            }
        }
    }
    raw
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
    let Some(a) = answers.get(&c.field) else {
        return false;
    };
    let values = a.values();
    match c.op {
        // An unticked box is not an answer (as the page's script sees it too), though
        // it is stored as 同意しない and compares equal to "no".
        ConditionOp::NotEmpty => {
            !matches!(a, Answer::Consent(false)) && values.iter().any(|v| !v.is_empty())
        }
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
    raw.get(name)
        .and_then(|v| v.first())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
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

/// The inputs of one page, to keep in a draft: only the names the page uses. A
/// 添付ファイル field's input is the server's own (see `attachments`) and is never
/// taken from what was sent.
pub fn page_inputs(page: &Page, raw: &Raw) -> Raw {
    let mut out = Raw::new();
    for f in page.fields.iter().filter(|f| !f.kind.is_file()) {
        for name in input_names(f) {
            if let Some(v) = raw.get(&name) {
                let v: Vec<String> = v
                    .iter()
                    .take(MAX_OPTIONS_INPUT)
                    .map(|s| s.chars().take(KEPT_INPUT).collect())
                    .collect();
                out.insert(name, v);
            }
        }
    }
    out
}

const MAX_OPTIONS_INPUT: usize = 100;
/// Characters of one input kept in a draft: more than any field accepts
/// ([`MAX_INPUT`]), so an answer that is too long is refused with its length, not
/// cut short and accepted.
const KEPT_INPUT: usize = 2 * MAX_INPUT;

/// Input names a field uses.
pub fn input_names(f: &Field) -> Vec<String> {
    match f.kind {
        FieldKind::Address {} => vec![
            format!("{}.postal", f.id),
            format!("{}.address1", f.id),
            format!("{}.address2", f.id),
        ],
        FieldKind::Name { .. } => ["family", "given", "family_kana", "given_kana"]
            .iter()
            .map(|p| format!("{}.{p}", f.id))
            .collect(),
        // The address and the same typed again (checked to agree, never stored as
        // an answer).
        FieldKind::Email {} => vec![f.id.clone(), format!("{}.confirm", f.id)],
        _ if f.kind.takes_answer() => vec![f.id.clone()],
        _ => Vec::new(),
    }
}

fn err(f: &Field, input: &str, message: String) -> FieldError {
    FieldError {
        field: f.id.clone(),
        input: input.to_owned(),
        message,
    }
}

fn check_length(f: &Field, v: &str, min: Option<u32>, max: Option<u32>) -> Result<(), FieldError> {
    let n = ja::char_count(v);
    let max = max.map_or(MAX_INPUT, |m| (m as usize).min(MAX_INPUT));
    if n > max {
        return Err(err(
            f,
            &f.id,
            format!(
                "{}は{max}文字以内で入力してください（現在{n}文字）",
                f.label
            ),
        ));
    }
    if let Some(min) = min {
        if n < min as usize {
            return Err(err(
                f,
                &f.id,
                format!("{}は{min}文字以上で入力してください", f.label),
            ));
        }
    }
    Ok(())
}

/// Checks one field; `Ok(None)` for an optional field left empty.
pub fn check_field(f: &Field, raw: &Raw) -> Result<Option<Answer>, FieldError> {
    let label = &f.label;
    let required = |input: &str| err(f, input, format!("{label}を入力してください"));
    match &f.kind {
        FieldKind::Text {
            min_length,
            max_length,
            pattern,
            pattern_message,
        } => {
            let v = first(raw, &f.id);
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
            }
            if v.contains(['\n', '\r']) {
                return Err(err(f, &f.id, format!("{label}は1行で入力してください")));
            }
            check_length(f, &v, *min_length, *max_length)?;
            if let Some(p) = pattern {
                if !anchored(p).is_some_and(|re| re.is_match(&v)) {
                    let msg = pattern_message
                        .clone()
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| format!("{label}の形式が正しくありません"));
                    return Err(err(f, &f.id, msg));
                }
            }
            Ok(Some(Answer::Text(v)))
        }
        FieldKind::Textarea {
            min_length,
            max_length,
        } => {
            let v = first(raw, &f.id).replace("\r\n", "\n").replace('\r', "\n");
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
            }
            check_length(f, &v, *min_length, *max_length)?;
            Ok(Some(Answer::Text(v)))
        }
        FieldKind::Number {
            min,
            max,
            unit,
            integer,
        } => {
            let v: String = ja::nfkc(&first(raw, &f.id))
                .chars()
                .filter(|c| *c != ',' && !c.is_whitespace())
                .collect();
            // The input is NFKC-normalised, so the unit is compared the same way (㎡ → m2).
            let unit_nfkc = ja::nfkc(unit);
            let v = v
                .strip_suffix(unit_nfkc.as_str())
                .filter(|_| !unit_nfkc.is_empty())
                .map(str::to_owned)
                .unwrap_or(v);
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
            }
            let ok_chars = v
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && c == '-'));
            let n: Option<f64> = if ok_chars && v.len() <= 30 {
                v.parse().ok().filter(|n: &f64| n.is_finite())
            } else {
                None
            };
            let Some(n) = n else {
                return Err(err(f, &f.id, format!("{label}は数字で入力してください")));
            };
            if *integer && v.contains('.') {
                return Err(err(f, &f.id, format!("{label}は整数で入力してください")));
            }
            let unit_sfx = if unit.is_empty() {
                String::new()
            } else {
                unit.clone()
            };
            if let Some(min) = min.filter(|m| n < *m) {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は{min}{unit_sfx}以上で入力してください"),
                ));
            }
            if let Some(max) = max.filter(|m| n > *m) {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は{max}{unit_sfx}以下で入力してください"),
                ));
            }
            Ok(Some(Answer::Number(v)))
        }
        FieldKind::Email {} => {
            let v = ja::nfkc(&first(raw, &f.id));
            let confirm = format!("{}.confirm", f.id);
            if v.is_empty() && !first(raw, &confirm).is_empty() {
                // Typed in the second box only: no copy would be sent, unnoticed.
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}を入力してください（確認のための欄だけに入力されています）"),
                ));
            }
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
            }
            let Some(a) = email_address(&v) else {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}の形式が正しくありません（例: yamada@example.jp）"),
                ));
            };
            // Typed twice where the page asks it twice (a mistyped address would send
            // the applicant's answers to a stranger); a caller without the second
            // input (the API, a page of an earlier version) is not asked.
            if raw.contains_key(&confirm) {
                let again = ja::nfkc(&first(raw, &confirm));
                if again.is_empty() {
                    return Err(err(
                        f,
                        &confirm,
                        format!("確認のため、{label}をもう一度入力してください"),
                    ));
                }
                if email_address(&again).as_deref() != Some(a.as_str()) {
                    return Err(err(
                        f,
                        &confirm,
                        format!(
                            "{label}と確認のための入力が一致しません。もう一度確かめてください"
                        ),
                    ));
                }
            }
            Ok(Some(Answer::Text(a)))
        }
        FieldKind::Tel {} => {
            let v = ja::nfkc(&first(raw, &f.id));
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
            }
            let digits = ja::phone_digits(&v);
            if !(digits.starts_with('0')
                && (10..=11).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(err(f, &f.id, format!("{label}は市外局番から10桁または11桁の数字で入力してください（例: 03-1234-5678）")));
            }
            Ok(Some(Answer::Text(digits)))
        }
        FieldKind::Date { min, max } => {
            let v = ja::nfkc(&first(raw, &f.id)).replace('/', "-");
            if v.is_empty() {
                return if f.required {
                    Err(required(&f.id))
                } else {
                    Ok(None)
                };
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
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は正しい日付で入力してください（例: 2026-11-25）"),
                ));
            };
            if let Some(min) = min.filter(|m| d < *m) {
                return Err(err(
                    f,
                    &f.id,
                    format!(
                        "{label}は{}以降の日付を入力してください",
                        ja::date_both(min)
                    ),
                ));
            }
            if let Some(max) = max.filter(|m| d > *m) {
                return Err(err(
                    f,
                    &f.id,
                    format!(
                        "{label}は{}以前の日付を入力してください",
                        ja::date_both(max)
                    ),
                ));
            }
            Ok(Some(Answer::Date(d)))
        }
        FieldKind::Choice { options, .. } => {
            let v = first(raw, &f.id);
            if v.is_empty() {
                return if f.required {
                    Err(err(f, &f.id, format!("{label}を選択してください")))
                } else {
                    Ok(None)
                };
            }
            if !options.contains(&v) {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は表示されている選択肢から選んでください"),
                ));
            }
            Ok(Some(Answer::Choice(v)))
        }
        FieldKind::MultiChoice {
            options,
            min_selected,
            max_selected,
            ..
        } => {
            let chosen: Vec<String> = raw
                .get(&f.id)
                .map(|v| v.iter().filter(|s| !s.is_empty()).cloned().collect())
                .unwrap_or_default();
            if chosen.is_empty() {
                return if f.required {
                    Err(err(f, &f.id, format!("{label}を選択してください")))
                } else {
                    Ok(None)
                };
            }
            if chosen.iter().any(|c| !options.contains(c)) {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は表示されている選択肢から選んでください"),
                ));
            }
            // Keep the definition's order, once each.
            let chosen: Vec<String> = options
                .iter()
                .filter(|o| chosen.contains(o))
                .cloned()
                .collect();
            if let Some(min) = min_selected.filter(|m| chosen.len() < *m as usize) {
                return Err(err(
                    f,
                    &f.id,
                    format!("{label}は{min}個以上選択してください"),
                ));
            }
            if let Some(max) = max_selected.filter(|m| chosen.len() > *m as usize) {
                return Err(err(f, &f.id, format!("{label}は{max}個まで選択できます")));
            }
            Ok(Some(Answer::Multi(chosen)))
        }
        FieldKind::Address {} => {
            let (pc_name, a1_name, a2_name) = (
                format!("{}.postal", f.id),
                format!("{}.address1", f.id),
                format!("{}.address2", f.id),
            );
            let pc = ja::postal_digits(&first(raw, &pc_name));
            let a1 = first(raw, &a1_name);
            let a2 = first(raw, &a2_name);
            if pc.is_empty() && a1.is_empty() && a2.is_empty() {
                return if f.required {
                    Err(err(
                        f,
                        &pc_name,
                        format!("{label}の郵便番号を入力してください"),
                    ))
                } else {
                    Ok(None)
                };
            }
            if pc.len() != 7 || !pc.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    f,
                    &pc_name,
                    format!("{label}の郵便番号は7桁の数字で入力してください（例: 102-8688）"),
                ));
            }
            if a1.is_empty() {
                return Err(err(f, &a1_name, format!("{label}の住所を入力してください")));
            }
            for (name, v) in [(&a1_name, &a1), (&a2_name, &a2)] {
                if ja::char_count(v) > 200 {
                    return Err(err(
                        f,
                        name,
                        format!("{label}の住所は200文字以内で入力してください"),
                    ));
                }
            }
            Ok(Some(Answer::Address {
                postal_code: pc,
                address1: a1,
                address2: a2,
            }))
        }
        FieldKind::Name { furigana } => {
            let names: Vec<String> = ["family", "given", "family_kana", "given_kana"]
                .iter()
                .map(|p| format!("{}.{p}", f.id))
                .collect();
            let [family, given, fk, gk]: [String; 4] = [0, 1, 2, 3].map(|i| first(raw, &names[i]));
            if family.is_empty() && given.is_empty() && fk.is_empty() && gk.is_empty() {
                return if f.required {
                    Err(err(
                        f,
                        &names[0],
                        format!("{label}（姓）を入力してください"),
                    ))
                } else {
                    Ok(None)
                };
            }
            if family.is_empty() {
                return Err(err(
                    f,
                    &names[0],
                    format!("{label}（姓）を入力してください"),
                ));
            }
            for (name, v) in [(&names[0], &family), (&names[1], &given)] {
                if ja::char_count(v) > 50 {
                    return Err(err(
                        f,
                        name,
                        format!("{label}は50文字以内で入力してください"),
                    ));
                }
            }
            let (mut family_kana, mut given_kana) = (String::new(), String::new());
            if *furigana {
                if fk.is_empty() {
                    return Err(err(
                        f,
                        &names[2],
                        format!("{label}のフリガナ（セイ）を入力してください"),
                    ));
                }
                for (name, v, slot) in [
                    (&names[2], &fk, &mut family_kana),
                    (&names[3], &gk, &mut given_kana),
                ] {
                    match ja::to_katakana(v) {
                        Some(k) if ja::char_count(&k) <= 50 => *slot = k,
                        _ => {
                            return Err(err(
                                f,
                                name,
                                format!("{label}のフリガナはカタカナで入力してください"),
                            ))
                        }
                    }
                }
            }
            Ok(Some(Answer::Name {
                family,
                given,
                family_kana,
                given_kana,
            }))
        }
        FieldKind::File { types, .. } => {
            let Some(file) = raw
                .get(&f.id)
                .and_then(|v| v.first())
                .and_then(|v| FileRef::from_input(v))
            else {
                return if f.required {
                    Err(err(f, &f.id, format!("{label}を添付してください")))
                } else {
                    Ok(None)
                };
            };
            // Attached before a new version narrowed what the field takes.
            let most = u64::from(f.kind.file_limit_mb().unwrap_or(0)) * 1024 * 1024;
            if !types.contains(&file.kind) || file.size > most {
                return Err(err(
                    f,
                    &f.id,
                    format!(
                        "{label}の受け付けるファイルが変わりました（{}、{}MBまで）。添付し直してください",
                        file_types_label(types),
                        most / (1024 * 1024)
                    ),
                ));
            }
            Ok(Some(Answer::File(file)))
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

/// The kinds a 添付ファイル field takes, for people: 「PDF・JPEG・PNG」.
pub fn file_types_label(types: &[FileType]) -> String {
    types
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join("・")
}

/// A text field's pattern compiled to match the whole answer, or None if it does not
/// compile. Compiled once per pattern text and kept (a form's patterns are few and
/// fixed per published version); the cache is emptied when it reaches
/// `PATTERN_CACHE` entries, so no sequence of forms makes it grow without bound.
fn anchored(p: &str) -> Option<std::sync::Arc<regex::Regex>> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    const PATTERN_CACHE: usize = 4096;
    type Cache = Mutex<HashMap<String, Option<Arc<regex::Regex>>>>;
    static CACHE: LazyLock<Cache> = LazyLock::new(|| Mutex::new(HashMap::new()));
    if let Some(hit) = CACHE.lock().ok().and_then(|c| c.get(p).cloned()) {
        return hit;
    }
    // The pattern must stand on its own, so it cannot close the anchoring group.
    let re = regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .and_then(|_| {
            regex::RegexBuilder::new(&format!("^(?:{p})$"))
                .size_limit(1 << 20)
                .build()
        })
        .ok()
        .map(Arc::new);
    if let Ok(mut c) = CACHE.lock() {
        if c.len() >= PATTERN_CACHE {
            c.clear();
        }
        c.insert(p.to_owned(), re.clone());
    }
    re
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::forms::definition::{
        ChoiceDisplay, Condition, ConditionOp, FormDefinition, Page,
    };

    fn field(id: &str, required: bool, kind: FieldKind) -> Field {
        Field {
            id: id.into(),
            label: id.to_uppercase(),
            help: String::new(),
            required,
            placeholder: String::new(),
            show_if: None,
            kind,
        }
    }

    fn raw(pairs: &[(&str, &str)]) -> Raw {
        let mut r = Raw::new();
        for (k, v) in pairs {
            r.entry((*k).to_owned()).or_default().push((*v).to_owned());
        }
        r
    }

    fn one(f: &Field, pairs: &[(&str, &str)]) -> Result<Option<Answer>, String> {
        check_field(f, &raw(pairs)).map_err(|e| e.message)
    }

    #[test]
    fn text_rules() {
        let f = field(
            "t",
            true,
            FieldKind::Text {
                min_length: Some(2),
                max_length: Some(5),
                pattern: None,
                pattern_message: None,
            },
        );
        assert_eq!(one(&f, &[]), Err("Tを入力してください".into()));
        assert_eq!(
            one(&f, &[("t", "  あいう  ")]),
            Ok(Some(Answer::Text("あいう".into())))
        );
        assert!(one(&f, &[("t", "あ")]).is_err_and(|m| m.contains("2文字以上")));
        assert!(one(&f, &[("t", "あいうえおか")]).is_err_and(|m| m.contains("5文字以内")));
        assert!(one(&f, &[("t", "あ\nい")]).is_err_and(|m| m.contains("1行")));
        // An IVS sequence is one character and is kept as typed.
        assert_eq!(
            one(&f, &[("t", "葛\u{E0100}飾区")]),
            Ok(Some(Answer::Text("葛\u{E0100}飾区".into())))
        );
        let p = field(
            "p",
            false,
            FieldKind::Text {
                min_length: None,
                max_length: None,
                pattern: Some("[A-Z]{2}[0-9]+".into()),
                pattern_message: Some("英大文字2字と数字".into()),
            },
        );
        assert_eq!(one(&p, &[]), Ok(None));
        assert_eq!(
            one(&p, &[("p", "AB12")]),
            Ok(Some(Answer::Text("AB12".into())))
        );
        assert_eq!(one(&p, &[("p", "AB12x")]), Err("英大文字2字と数字".into()));
        let long = "あ".repeat(MAX_INPUT + 1);
        let t = field(
            "t",
            false,
            FieldKind::Textarea {
                min_length: None,
                max_length: None,
            },
        );
        assert!(one(&t, &[("t", &long)]).is_err());
        assert_eq!(
            one(&t, &[("t", "一行目\r\n二行目")]),
            Ok(Some(Answer::Text("一行目\n二行目".into())))
        );
    }

    #[test]
    fn numbers_emails_phones_dates() {
        let n = field(
            "n",
            true,
            FieldKind::Number {
                min: Some(1.0),
                max: Some(10.0),
                unit: "個".into(),
                integer: true,
            },
        );
        assert_eq!(
            one(&n, &[("n", "３")]),
            Ok(Some(Answer::Number("3".into())))
        );
        assert_eq!(
            one(&n, &[("n", "3個")]),
            Ok(Some(Answer::Number("3".into())))
        );
        assert!(one(&n, &[("n", "2.5")]).is_err_and(|m| m.contains("整数")));
        assert!(one(&n, &[("n", "11")]).is_err_and(|m| m.contains("10個以下")));
        assert!(one(&n, &[("n", "0")]).is_err_and(|m| m.contains("1個以上")));
        assert!(one(&n, &[("n", "abc")]).is_err_and(|m| m.contains("数字")));
        assert!(one(&n, &[("n", "1e3")]).is_err());

        let e = field("e", true, FieldKind::Email {});
        assert_eq!(
            one(&e, &[("e", "ｙａｍａｄａ＠Example.JP")]),
            Ok(Some(Answer::Text("yamada@example.jp".into())))
        );
        for bad in ["yamada", "a@b", "a@@b.jp", "a b@c.jp", "@c.jp", "a@.jp"] {
            assert!(one(&e, &[("e", bad)]).is_err(), "{bad}");
        }

        let t = field("t", true, FieldKind::Tel {});
        assert_eq!(
            one(&t, &[("t", "０３－１２３４－５６７８")]),
            Ok(Some(Answer::Text("0312345678".into())))
        );
        assert_eq!(
            one(&t, &[("t", "+81 90 1234 5678")]),
            Ok(Some(Answer::Text("09012345678".into())))
        );
        assert_eq!(
            one(&t, &[("t", "+81 (0)3-1234-5678")]),
            Ok(Some(Answer::Text("0312345678".into())))
        );
        assert!(one(&t, &[("t", "12345")]).is_err());

        let d = field(
            "d",
            true,
            FieldKind::Date {
                min: Some(time::macros::date!(2026 - 01 - 01)),
                max: None,
            },
        );
        assert_eq!(
            one(&d, &[("d", "2026/11/25")]),
            Ok(Some(Answer::Date(time::macros::date!(2026 - 11 - 25))))
        );
        assert!(one(&d, &[("d", "2026-02-30")]).is_err_and(|m| m.contains("正しい日付")));
        assert!(one(&d, &[("d", "2025-12-31")]).is_err_and(|m| m.contains("令和8年1月1日")));
        assert_eq!(
            Answer::Date(time::macros::date!(2026 - 11 - 25)).display(),
            "2026年11月25日（令和8年11月25日）"
        );
    }

    #[test]
    fn choices_address_name_consent() {
        let c = field(
            "c",
            true,
            FieldKind::Choice {
                options: vec!["はい".into(), "いいえ".into()],
                display: ChoiceDisplay::Radio,
                limits: Default::default(),
            },
        );
        assert_eq!(
            one(&c, &[("c", "はい")]),
            Ok(Some(Answer::Choice("はい".into())))
        );
        assert!(one(&c, &[("c", "たぶん")]).is_err());
        assert_eq!(one(&c, &[]), Err("Cを選択してください".into()));

        let m = field(
            "m",
            false,
            FieldKind::MultiChoice {
                options: vec!["A".into(), "B".into(), "C".into()],
                min_selected: Some(2),
                max_selected: Some(2),
                limits: Default::default(),
            },
        );
        assert_eq!(
            one(&m, &[("m", "C"), ("m", "A")]),
            Ok(Some(Answer::Multi(vec!["A".into(), "C".into()])))
        );
        assert!(one(&m, &[("m", "A")]).is_err_and(|e| e.contains("2個以上")));
        assert!(
            one(&m, &[("m", "A"), ("m", "B"), ("m", "C")]).is_err_and(|e| e.contains("2個まで"))
        );
        assert!(one(&m, &[("m", "A"), ("m", "Z")]).is_err());
        assert_eq!(one(&m, &[]), Ok(None));

        let a = field("a", true, FieldKind::Address {});
        assert_eq!(
            one(
                &a,
                &[
                    ("a.postal", "〒１０２－８６８８"),
                    ("a.address1", "東京都千代田区九段南1-2-1"),
                    ("a.address2", "")
                ]
            ),
            Ok(Some(Answer::Address {
                postal_code: "1028688".into(),
                address1: "東京都千代田区九段南1-2-1".into(),
                address2: String::new()
            }))
        );
        let e = check_field(&a, &raw(&[("a.postal", "12345"), ("a.address1", "x")])).err();
        assert_eq!(e.map(|e| e.input), Some("a.postal".to_owned()));
        let e = check_field(&a, &raw(&[("a.postal", "1028688")])).err();
        assert_eq!(e.map(|e| e.input), Some("a.address1".to_owned()));

        let n = field("n", true, FieldKind::Name { furigana: true });
        let ok = one(
            &n,
            &[
                ("n.family", "山田"),
                ("n.given", "太郎"),
                ("n.family_kana", "やまだ"),
                ("n.given_kana", "ﾀﾛｳ"),
            ],
        );
        assert_eq!(
            ok,
            Ok(Some(Answer::Name {
                family: "山田".into(),
                given: "太郎".into(),
                family_kana: "ヤマダ".into(),
                given_kana: "タロウ".into()
            }))
        );
        let e = check_field(
            &n,
            &raw(&[("n.family", "山田"), ("n.family_kana", "yamada")]),
        )
        .err();
        assert_eq!(
            e.map(|e| (e.input, e.message.contains("カタカナ"))),
            Some(("n.family_kana".to_owned(), true))
        );
        // 𠮷 (outside the BMP) and 髙 are kept exactly.
        let kept = one(
            &n,
            &[
                ("n.family", "𠮷髙"),
                ("n.given", "花子"),
                ("n.family_kana", "ヨシタカ"),
                ("n.given_kana", "ハナコ"),
            ],
        );
        assert!(matches!(kept, Ok(Some(Answer::Name { ref family, .. })) if family == "𠮷髙"));

        let k = field(
            "k",
            true,
            FieldKind::Consent {
                statement: "同意します".into(),
            },
        );
        assert_eq!(one(&k, &[("k", "yes")]), Ok(Some(Answer::Consent(true))));
        assert!(one(&k, &[]).is_err_and(|m| m.contains("同意が必要")));
    }

    fn two_page_form() -> FormDefinition {
        let mut def = FormDefinition::new("粗大ごみ");
        let mut has_items = field(
            "has",
            true,
            FieldKind::Choice {
                options: vec!["ある".into(), "ない".into()],
                display: ChoiceDisplay::Radio,
                limits: Default::default(),
            },
        );
        has_items.label = "品目".into();
        let mut detail = field(
            "detail",
            true,
            FieldKind::Text {
                min_length: None,
                max_length: None,
                pattern: None,
                pattern_message: None,
            },
        );
        detail.show_if = Some(Condition {
            field: "has".into(),
            op: ConditionOp::Equals,
            values: vec!["ある".into()],
        });
        def.pages[0].fields = vec![has_items, detail];
        def.pages.push(Page {
            id: "p2".into(),
            title: "品目".into(),
            show_if: Some(Condition {
                field: "has".into(),
                op: ConditionOp::In,
                values: vec!["ある".into()],
            }),
            fields: vec![field(
                "count",
                true,
                FieldKind::Number {
                    min: None,
                    max: None,
                    unit: String::new(),
                    integer: true,
                },
            )],
        });
        def
    }

    #[test]
    fn show_hide_rules() {
        let def = two_page_form();
        assert_eq!(def.check(), Vec::new());
        // Hidden: neither required nor stored, even if sent.
        let a = check_all(
            &def,
            &raw(&[("has", "ない"), ("detail", "こっそり"), ("count", "x")]),
        );
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 1);
        assert!(!a.contains_key("detail") && !a.contains_key("count"));
        // Shown: required.
        let e = check_all(&def, &raw(&[("has", "ある")]))
            .err()
            .unwrap_or_default();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["detail", "count"]);
        let a = check_all(
            &def,
            &raw(&[("has", "ある"), ("detail", "ソファ"), ("count", "2")]),
        )
        .unwrap_or_default();
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn an_unticked_box_does_not_show_what_needs_an_answer() {
        let mut def = two_page_form();
        let agent = field(
            "agent",
            false,
            FieldKind::Consent {
                statement: "代理人が申請します".into(),
            },
        );
        let mut agent_name = field(
            "agent_name",
            true,
            FieldKind::Text {
                min_length: None,
                max_length: None,
                pattern: None,
                pattern_message: None,
            },
        );
        agent_name.show_if = Some(Condition {
            field: "agent".into(),
            op: ConditionOp::NotEmpty,
            values: vec![],
        });
        def.pages[0].fields = vec![agent, agent_name];
        def.pages.truncate(1);
        let a = check_all(&def, &raw(&[])).unwrap_or_default();
        assert_eq!(a.get("agent"), Some(&Answer::Consent(false)));
        assert!(!a.contains_key("agent_name"));
        let e = check_all(&def, &raw(&[("agent", "yes")]))
            .err()
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "agent_name");
    }

    #[test]
    fn an_answer_too_long_is_refused_not_cut_short() {
        let t = field(
            "t",
            false,
            FieldKind::Textarea {
                min_length: None,
                max_length: Some(20_000),
            },
        );
        let page = Page {
            id: "p".into(),
            title: String::new(),
            show_if: None,
            fields: vec![t.clone()],
        };
        let kept = page_inputs(&page, &raw(&[("t", &"意".repeat(MAX_INPUT + 5))]));
        let e = check_field(&t, &kept).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("Tは10000文字以内で入力してください（現在10005文字）")
        );
    }

    #[test]
    fn definition_problems_are_reported() {
        let mut def = two_page_form();
        def.pages[0].fields[1].show_if = Some(Condition {
            field: "count".into(),
            op: ConditionOp::NotEmpty,
            values: vec![],
        });
        def.pages[1]
            .fields
            .push(field("count", false, FieldKind::Tel {}));
        def.settings.capacity = Some(0);
        let problems: Vec<String> = def.check().into_iter().map(|p| p.ja).collect();
        assert!(
            problems.iter().any(|p| p.contains("前の項目を参照")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("重複")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("定員")), "{problems:?}");
        // Round trip through JSON, and bad JSON gets a message.
        let def = two_page_form();
        let json = serde_json::to_string_pretty(&def).unwrap_or_default();
        assert_eq!(FormDefinition::from_json(&json).ok(), Some(def));
        assert!(FormDefinition::from_json("{").is_err_and(|p| p[0].ja.contains("JSON")));
        assert!(FormDefinition::from_json(&json.replace("madoguchi.form/1", "other/9")).is_err());
    }

    /// A definition within the limit imports again when exported indented (the
    /// builder's export and its JSON box), though the indented text is larger.
    #[test]
    fn an_indented_export_within_the_limit_imports_again() {
        let mut def = two_page_form();
        let options: Vec<String> = (0..100).map(|n| format!("選択肢{n}")).collect();
        for n in 0..190 {
            def.pages[0].fields.push(field(
                &format!("m{n}"),
                false,
                FieldKind::MultiChoice {
                    options: options.clone(),
                    min_selected: None,
                    max_selected: None,
                    limits: Default::default(),
                },
            ));
        }
        let compact = serde_json::to_string(&def).unwrap_or_default();
        let pretty = serde_json::to_string_pretty(&def).unwrap_or_default();
        let most = crate::tenant::forms::definition::MAX_DOCUMENT;
        assert!(
            compact.len() <= most && pretty.len() > most,
            "{} / {}",
            compact.len(),
            pretty.len()
        );
        assert_eq!(FormDefinition::from_json(&pretty).ok(), Some(def));
    }

    /// Rules no answer can meet are problems the builder shows (and publishing
    /// refuses): a required field with one would make the form impossible to send, a
    /// rule value that is no option would never show what depends on it.
    #[test]
    fn rules_no_answer_can_meet_are_problems() {
        let text = |min: Option<u32>, max: Option<u32>| FieldKind::Text {
            min_length: min,
            max_length: max,
            pattern: None,
            pattern_message: None,
        };
        let multi = |min: Option<u32>, max: Option<u32>| FieldKind::MultiChoice {
            options: vec!["柴犬".into(), "秋田犬".into()],
            min_selected: min,
            max_selected: max,
            limits: Default::default(),
        };
        for (kind, want) in [
            (text(None, Some(0)), "上限は1以上"),
            (text(Some(15_000), Some(20_000)), "下限は10000以下"),
            (
                FieldKind::Textarea {
                    min_length: Some(10_001),
                    max_length: None,
                },
                "下限は10000以下",
            ),
            (multi(Some(3), None), "選択数の範囲"),
            (multi(None, Some(0)), "選択数の範囲"),
        ] {
            let mut def = two_page_form();
            def.pages[0].fields.push(field("x", true, kind));
            let problems: Vec<String> = def.check().into_iter().map(|p| p.ja).collect();
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want}: {problems:?}"
            );
        }
        // Still fine: limits an answer can meet.
        let mut def = two_page_form();
        def.pages[0]
            .fields
            .push(field("x", true, text(Some(1), Some(10_000))));
        def.pages[0]
            .fields
            .push(field("y", true, multi(Some(2), Some(2))));
        assert_eq!(def.check(), Vec::new());
        // A rule on a choice whose value is not an option (renamed since).
        let mut def = two_page_form();
        def.pages[0].fields.push(field(
            "breed",
            true,
            FieldKind::Choice {
                options: vec!["柴犬".into(), "その他".into()],
                display: ChoiceDisplay::Radio,
                limits: Default::default(),
            },
        ));
        let mut dependent = field("breed_other", true, text(None, None));
        dependent.show_if = Some(Condition {
            field: "breed".into(),
            op: ConditionOp::Equals,
            values: vec!["そのほか".into()],
        });
        def.pages[1].fields.push(dependent);
        let problems: Vec<String> = def.check().into_iter().map(|p| p.ja).collect();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("「そのほか」は、「breed」の選択肢にありません")),
            "{problems:?}"
        );
        def.pages[1].fields[1].show_if = Some(Condition {
            field: "breed".into(),
            op: ConditionOp::Equals,
            values: vec!["その他".into()],
        });
        assert_eq!(def.check(), Vec::new());
    }
}
