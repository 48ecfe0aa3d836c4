//! The form definition: a documented, versioned JSON document (`madoguchi.form/1`)
//! that the builder edits, publishing freezes, and municipalities can exchange.
//!
//! ```json
//! { "format": "madoguchi.form/1", "title": "粗大ごみ収集申込", "description": "…",
//!   "settings": { "opens_at": "2026-12-01T09:00:00+09:00", "closes_at": null,
//!                 "capacity": 100, "completion_message": "…" },
//!   "pages": [ { "id": "p1", "title": "申込者", "show_if": null,
//!                "fields": [ { "id": "name", "type": "name", "label": "氏名", "required": true } ] } ] }
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// 選択肢ごとの定員: option → the applications that may choose it.
pub type Limits = std::collections::BTreeMap<String, u32>;

/// The largest 選択肢ごとの定員.
pub const MAX_OPTION_LIMIT: u32 = 1_000_000;

/// The one format this version reads and writes.
pub const FORMAT: &str = "madoguchi.form/1";

/// Limits on a definition, so a form stays usable and a stored one stays small.
pub const MAX_PAGES: usize = 30;
pub const MAX_FIELDS: usize = 200;
pub const MAX_OPTIONS: usize = 100;
pub const MAX_LABEL: usize = 200;
pub const MAX_TEXT: usize = 2000;
/// Largest accepted definition document, in bytes.
pub const MAX_DOCUMENT: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormDefinition {
    pub format: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: FormSettings,
    pub pages: Vec<Page>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormSettings {
    /// 受付開始 (RFC 3339; the builder works in Asia/Tokyo).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub opens_at: Option<OffsetDateTime>,
    /// 受付終了.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closes_at: Option<OffsetDateTime>,
    /// 定員: accepted submissions never exceed it.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Shown on the completion page with the receipt number.
    #[serde(default)]
    pub completion_message: String,
    /// A proof of work (about a second in the browser) before the final submit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proof_of_work: bool,
    /// The applicant's e-mailed copy carries only the receipt number and the
    /// status-lookup link, not the answers (for forms whose answers should not travel
    /// by e-mail).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mail_without_answers: bool,
    /// 本人確認: a new application is sent only after the municipality's identity
    /// provider (a My Number card service) vouched for the applicant, whose verified
    /// name, birth date and address are kept with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub identity: bool,
    /// Networks the form is published to (internet, LGWAN); empty: both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<crate::front::conn::Zone>,
    /// 保存期間 in years: finished applications are deleted from 1 April after that
    /// many fiscal years (`cases::retention`); none: kept until deleted by staff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_years: Option<u8>,
}

impl FormSettings {
    /// Whether the form may be used through a listener of `zone`.
    pub fn published_in(&self, zone: crate::front::conn::Zone) -> bool {
        self.zones.is_empty() || self.zones.contains(&zone)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub show_if: Option<Condition>,
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub placeholder: String,
    #[serde(default)]
    pub show_if: Option<Condition>,
    #[serde(flatten)]
    pub kind: FieldKind,
}

/// Field types. Each has its own rules; `heading` and `paragraph` take no answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldKind {
    /// 1行テキスト
    Text {
        #[serde(default)]
        min_length: Option<u32>,
        #[serde(default)]
        max_length: Option<u32>,
        /// A regular expression the whole answer must match.
        #[serde(default)]
        pattern: Option<String>,
        /// Shown when the pattern does not match.
        #[serde(default)]
        pattern_message: Option<String>,
    },
    /// 複数行テキスト
    Textarea {
        #[serde(default)]
        min_length: Option<u32>,
        #[serde(default)]
        max_length: Option<u32>,
    },
    /// 数値 (with unit, min/max)
    Number {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
        #[serde(default)]
        unit: String,
        #[serde(default)]
        integer: bool,
    },
    Email {},
    /// 電話番号
    Tel {},
    /// 日付 (shown as 和暦 beside 西暦)
    Date {
        #[serde(default, with = "iso_date")]
        min: Option<time::Date>,
        #[serde(default, with = "iso_date")]
        max: Option<time::Date>,
    },
    /// 単一選択
    Choice {
        options: Vec<String>,
        #[serde(default)]
        display: ChoiceDisplay,
        /// 選択肢ごとの定員: applications that may choose an option (`places`).
        #[serde(default, skip_serializing_if = "Limits::is_empty")]
        limits: Limits,
    },
    /// 複数選択
    MultiChoice {
        options: Vec<String>,
        #[serde(default)]
        min_selected: Option<u32>,
        #[serde(default)]
        max_selected: Option<u32>,
        /// 選択肢ごとの定員, as for [`FieldKind::Choice`]; each option chosen takes a place.
        #[serde(default, skip_serializing_if = "Limits::is_empty")]
        limits: Limits,
    },
    /// 郵便番号と住所
    Address {},
    /// 氏名 (漢字 and フリガナ)
    Name {
        #[serde(default = "yes")]
        furigana: bool,
    },
    /// 添付ファイル: one document or photo of one of `types`, at most `max_mb` MB
    /// (at most [`MAX_FILE_MB`]; none set: that).
    File {
        #[serde(default = "all_file_types")]
        types: Vec<FileType>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_mb: Option<u32>,
    },
    /// 同意 (yes/no)
    Consent {
        statement: String,
    },
    /// 見出し (no answer)
    Heading {},
    /// 説明文 (no answer)
    Paragraph {
        text: String,
    },
}

fn yes() -> bool {
    true
}

fn all_file_types() -> Vec<FileType> {
    FileType::ALL.to_vec()
}

/// The largest file a 添付ファイル field takes, in MB (MiB).
pub const MAX_FILE_MB: u32 = 10;
/// The 添付ファイル fields of one page together take at most this many MB: what one
/// page's request may carry (see `attachments::MAX_PAGE_BODY`).
pub const MAX_PAGE_FILES_MB: u32 = 20;
/// 添付ファイル fields in one form.
pub const MAX_FILE_FIELDS: usize = 5;

/// A kind of file a 添付ファイル field takes, known by its first bytes (not by its
/// name or by what the browser says it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Pdf,
    Jpeg,
    Png,
}

impl FileType {
    pub const ALL: [Self; 3] = [Self::Pdf, Self::Jpeg, Self::Png];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Jpeg => "jpeg",
            Self::Png => "png",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// As people name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pdf => "PDF",
            Self::Jpeg => "JPEG",
            Self::Png => "PNG",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    /// File name extensions of this kind, in lower case.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Pdf => &["pdf"],
            Self::Jpeg => &["jpg", "jpeg"],
            Self::Png => &["png"],
        }
    }

    /// The file name extension a file of this kind is saved with.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }

    /// The kind of a file by its first bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"%PDF-") {
            Some(Self::Pdf)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else {
            None
        }
    }
}

/// A date in a definition, written `"2026-04-01"` (ISO 8601), as a person editing an
/// exported form expects. Definitions saved before were written `[2026, 91]` (year
/// and day of the year): those are still read.
mod iso_date {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<time::Date>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Iso(String),
        YearDay(i32, u16),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<time::Date>, D::Error> {
        use serde::de::Error;
        let format = time::macros::format_description!("[year]-[month]-[day]");
        match Option::<Written>::deserialize(d)? {
            None => Ok(None),
            Some(Written::Iso(text)) => time::Date::parse(text.trim(), &format)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("{text:?} is not a date (YYYY-MM-DD)"))),
            Some(Written::YearDay(year, day)) => time::Date::from_ordinal_date(year, day)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceDisplay {
    #[default]
    Radio,
    Select,
}

/// Show a page or field when an earlier answer matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    pub op: ConditionOp,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOp {
    /// The answer equals `values[0]` (for multiple choice: includes it).
    Equals,
    /// The answer is one of `values` (for multiple choice: includes any).
    In,
    /// The field has an answer.
    NotEmpty,
}

impl FieldKind {
    /// A 添付ファイル field's largest file, in MB; `None` for other fields.
    pub fn file_limit_mb(&self) -> Option<u32> {
        match self {
            Self::File { max_mb, .. } => Some(max_mb.unwrap_or(MAX_FILE_MB)),
            _ => None,
        }
    }

    /// Whether the field is a 添付ファイル.
    /// 選択肢ごとの定員 of a choice question (empty for every other kind).
    pub fn limits(&self) -> &Limits {
        static NONE: Limits = Limits::new();
        match self {
            Self::Choice { limits, .. } | Self::MultiChoice { limits, .. } => limits,
            _ => &NONE,
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self, Self::File { .. })
    }

    /// Whether the field takes an answer.
    pub fn takes_answer(&self) -> bool {
        !matches!(self, Self::Heading {} | Self::Paragraph { .. })
    }

    /// The builder's name for the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Textarea { .. } => "textarea",
            Self::Number { .. } => "number",
            Self::Email {} => "email",
            Self::Tel {} => "tel",
            Self::Date { .. } => "date",
            Self::Choice { .. } => "choice",
            Self::MultiChoice { .. } => "multi_choice",
            Self::Address {} => "address",
            Self::Name { .. } => "name",
            Self::File { .. } => "file",
            Self::Consent { .. } => "consent",
            Self::Heading {} => "heading",
            Self::Paragraph { .. } => "paragraph",
        }
    }

    /// A new field of the named type with empty settings.
    pub fn new_of(type_name: &str) -> Option<Self> {
        Some(match type_name {
            "text" => Self::Text {
                min_length: None,
                max_length: None,
                pattern: None,
                pattern_message: None,
            },
            "textarea" => Self::Textarea {
                min_length: None,
                max_length: None,
            },
            "number" => Self::Number {
                min: None,
                max: None,
                unit: String::new(),
                integer: false,
            },
            "email" => Self::Email {},
            "tel" => Self::Tel {},
            "date" => Self::Date {
                min: None,
                max: None,
            },
            "choice" => Self::Choice {
                options: vec!["選択肢1".into(), "選択肢2".into()],
                display: ChoiceDisplay::Radio,
                limits: Limits::new(),
            },
            "multi_choice" => Self::MultiChoice {
                options: vec!["選択肢1".into(), "選択肢2".into()],
                min_selected: None,
                max_selected: None,
                limits: Limits::new(),
            },
            "address" => Self::Address {},
            "name" => Self::Name { furigana: true },
            "file" => Self::File {
                types: all_file_types(),
                max_mb: None,
            },
            "consent" => Self::Consent {
                statement: "内容に同意します".into(),
            },
            "heading" => Self::Heading {},
            "paragraph" => Self::Paragraph {
                text: String::new(),
            },
            _ => return None,
        })
    }
}

/// Every field type, with its Japanese and English names, for the builder.
pub const FIELD_TYPES: &[(&str, &str, &str)] = &[
    ("text", "1行テキスト", "Single-line text"),
    ("textarea", "複数行テキスト", "Multi-line text"),
    ("number", "数値", "Number"),
    ("email", "メールアドレス", "Email"),
    ("tel", "電話番号", "Telephone"),
    ("date", "日付", "Date"),
    ("choice", "単一選択", "Single choice"),
    ("multi_choice", "複数選択", "Multiple choice"),
    ("address", "郵便番号・住所", "Postal code and address"),
    ("name", "氏名（フリガナ付き）", "Name with furigana"),
    ("file", "添付ファイル", "File attachment"),
    ("consent", "同意", "Consent"),
    ("heading", "見出し", "Heading"),
    ("paragraph", "説明文", "Explanatory text"),
];

/// A problem found in a definition, in Japanese (for the builder) and English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub ja: String,
    pub en: String,
}

fn problem(ja: String, en: String) -> Problem {
    Problem { ja, en }
}

fn valid_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl FormDefinition {
    /// An empty form with one page.
    pub fn new(title: &str) -> Self {
        Self {
            format: FORMAT.to_owned(),
            title: title.to_owned(),
            description: String::new(),
            settings: FormSettings::default(),
            pages: vec![Page {
                id: "p1".into(),
                title: String::new(),
                show_if: None,
                fields: Vec::new(),
            }],
        }
    }

    /// Parses a JSON document and checks it; returns every problem found. The limit
    /// is on the definition ([`MAX_DOCUMENT`], compact, as [`Self::check`] measures
    /// it); the text may be indented as exports are, so it may be up to twice that.
    pub fn from_json(text: &str) -> Result<Self, Vec<Problem>> {
        if text.len() > MAX_DOCUMENT * 2 {
            return Err(vec![problem(
                format!(
                    "フォーム定義が大きすぎます（{} KB まで）",
                    MAX_DOCUMENT / 1024
                ),
                "definition too large".into(),
            )]);
        }
        let def: Self = serde_json::from_str(text).map_err(|e| {
            vec![problem(
                format!("フォーム定義の JSON を読み取れません: {e}"),
                format!("cannot read the definition JSON: {e}"),
            )]
        })?;
        let problems = def.check();
        if problems.is_empty() {
            Ok(def)
        } else {
            Err(problems)
        }
    }

    /// Whether any question has 選択肢ごとの定員.
    pub fn has_limits(&self) -> bool {
        self.fields().any(|f| !f.kind.limits().is_empty())
    }

    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.pages.iter().flat_map(|p| p.fields.iter())
    }

    pub fn field(&self, id: &str) -> Option<&Field> {
        self.fields().find(|f| f.id == id)
    }

    /// Every rule a publishable definition must meet. An empty list means it is fine.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.format != FORMAT {
            out.push(problem(
                format!("形式「{}」には対応していません（{FORMAT}）", self.format),
                format!("unsupported format {:?}", self.format),
            ));
        }
        if self.title.trim().is_empty() || self.title.chars().count() > MAX_LABEL {
            out.push(problem(
                "フォームの題名を1〜200文字で入力してください".into(),
                "title must be 1-200 characters".into(),
            ));
        }
        if self.description.chars().count() > MAX_TEXT * 5 {
            out.push(problem(
                "説明が長すぎます".into(),
                "description too long".into(),
            ));
        }
        if self.pages.is_empty() || self.pages.len() > MAX_PAGES {
            out.push(problem(
                format!("ページは1〜{MAX_PAGES}個にしてください"),
                "1-30 pages".into(),
            ));
        }
        if self.fields().count() > MAX_FIELDS {
            out.push(problem(
                format!("項目は{MAX_FIELDS}個までです"),
                "too many fields".into(),
            ));
        }
        if let (Some(o), Some(c)) = (self.settings.opens_at, self.settings.closes_at) {
            if c <= o {
                out.push(problem(
                    "受付終了日時は受付開始日時より後にしてください".into(),
                    "closes_at must be after opens_at".into(),
                ));
            }
        }
        if self
            .settings
            .retention_years
            .is_some_and(|y| !crate::tenant::cases::retention::YEARS.contains(&y))
        {
            out.push(problem(
                "保存期間は1年・3年・5年・10年・30年のいずれかにしてください".into(),
                "retention_years must be 1, 3, 5, 10 or 30".into(),
            ));
        }
        if self.settings.completion_message.chars().count() > MAX_TEXT * 5 {
            out.push(problem(
                "完了メッセージが長すぎます".into(),
                "completion message too long".into(),
            ));
        }
        // Whatever is built a field at a time, the whole stays within what an import
        // accepts (and so can be exported and imported again).
        if serde_json::to_string(self).map_or(0, |j| j.len()) > MAX_DOCUMENT {
            out.push(problem(
                format!(
                    "フォーム定義が大きすぎます（{} KB まで）",
                    MAX_DOCUMENT / 1024
                ),
                "definition too large".into(),
            ));
        }
        if self.settings.capacity == Some(0) {
            out.push(problem(
                "定員は1以上にしてください（定員なしは空欄）".into(),
                "capacity must be at least 1".into(),
            ));
        }
        if self
            .fields()
            .filter(|f| matches!(f.kind, FieldKind::File { .. }))
            .count()
            > MAX_FILE_FIELDS
        {
            out.push(problem(
                format!("添付ファイルの項目は1つのフォームに{MAX_FILE_FIELDS}個までです"),
                format!("at most {MAX_FILE_FIELDS} file fields"),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut page_ids: Vec<&str> = Vec::new();
        for page in &self.pages {
            if !valid_id(&page.id) || page_ids.contains(&page.id.as_str()) {
                out.push(problem(
                    format!("ページID「{}」が不正か重複しています", page.id),
                    format!("bad or duplicate page id {:?}", page.id),
                ));
            }
            page_ids.push(&page.id);
            if page.title.chars().count() > MAX_LABEL {
                out.push(problem(
                    format!("ページの見出しは{MAX_LABEL}文字までです"),
                    "page title too long".into(),
                ));
            }
            if let Some(c) = &page.show_if {
                self.check_condition(c, &seen, &format!("ページ「{}」", page.title), &mut out);
            }
            let page_mb: u32 = page
                .fields
                .iter()
                .filter_map(|f| f.kind.file_limit_mb())
                .sum();
            if page_mb > MAX_PAGE_FILES_MB {
                out.push(problem(
                    format!(
                        "1ページの添付ファイルの上限は合計{MAX_PAGE_FILES_MB}MBまでです（ページ「{}」は{page_mb}MB）。添付ファイルの項目を別のページに分けるか、上限を小さくしてください",
                        page.title
                    ),
                    format!("file fields of page {} allow {page_mb} MB together, at most {MAX_PAGE_FILES_MB}", page.id),
                ));
            }
            for f in &page.fields {
                let name = if f.label.is_empty() {
                    f.id.clone()
                } else {
                    f.label.clone()
                };
                if !valid_id(&f.id) || seen.contains(&f.id.as_str()) {
                    out.push(problem(
                        format!("項目ID「{}」が不正か重複しています（英小文字・数字・_・- の40文字まで）", f.id),
                        format!("bad or duplicate field id {:?}", f.id),
                    ));
                }
                if let Some(c) = &f.show_if {
                    self.check_condition(c, &seen, &format!("項目「{name}」"), &mut out);
                }
                if f.kind.takes_answer() && f.label.trim().is_empty() {
                    out.push(problem(
                        format!("項目「{}」に項目名を入力してください", f.id),
                        format!("field {} needs a label", f.id),
                    ));
                }
                if f.label.chars().count() > MAX_LABEL
                    || f.placeholder.chars().count() > MAX_LABEL
                    || f.help.chars().count() > MAX_TEXT
                {
                    out.push(problem(
                        format!("項目「{name}」の項目名・説明が長すぎます"),
                        format!("field {} texts too long", f.id),
                    ));
                }
                check_kind(&name, &f.kind, &mut out);
                seen.push(&f.id);
            }
        }
        out
    }

    fn check_condition(&self, c: &Condition, earlier: &[&str], what: &str, out: &mut Vec<Problem>) {
        if !earlier.contains(&c.field.as_str()) {
            out.push(problem(
                format!(
                    "{what}の表示条件は、それより前の項目を参照してください（「{}」）",
                    c.field
                ),
                format!(
                    "condition of {what} must refer to an earlier field, not {:?}",
                    c.field
                ),
            ));
        } else if self.field(&c.field).is_some_and(|f| !f.kind.takes_answer()) {
            out.push(problem(
                format!("{what}の表示条件が回答のない項目を参照しています"),
                "condition refers to a field without answer".into(),
            ));
        }
        if c.values.len() > MAX_OPTIONS || c.values.iter().any(|v| v.chars().count() > MAX_LABEL) {
            out.push(problem(
                format!("{what}の表示条件の値は{MAX_OPTIONS}個まで、各{MAX_LABEL}文字までです"),
                "condition values too many or too long".into(),
            ));
        }
        if c.op != ConditionOp::NotEmpty
            && self
                .field(&c.field)
                .is_some_and(|f| matches!(f.kind, FieldKind::File { .. }))
        {
            out.push(problem(
                format!("{what}の表示条件: 添付ファイルの項目には「回答がある」だけを使えます"),
                "a condition on a file field can only be not_empty".into(),
            ));
        }
        if matches!(c.op, ConditionOp::Equals | ConditionOp::In) && c.values.is_empty() {
            out.push(problem(
                format!("{what}の表示条件に値を指定してください"),
                "condition needs a value".into(),
            ));
        }
        // A value no answer can have never shows what depends on it (an option
        // renamed after the rule was written, a typo).
        if matches!(c.op, ConditionOp::Equals | ConditionOp::In) {
            let possible: Option<Vec<&str>> = self.field(&c.field).and_then(|f| match &f.kind {
                FieldKind::Choice { options, .. } | FieldKind::MultiChoice { options, .. } => {
                    Some(options.iter().map(String::as_str).collect())
                }
                FieldKind::Consent { .. } => Some(vec!["yes", "no"]),
                _ => None,
            });
            if let Some(possible) = possible {
                for v in c.values.iter().filter(|v| !possible.contains(&v.as_str())) {
                    out.push(problem(
                        format!(
                            "{what}の表示条件の値「{v}」は、「{}」の選択肢にありません",
                            c.field
                        ),
                        format!("condition value {v:?} is not an option of {:?}", c.field),
                    ));
                }
            }
        }
    }
}

/// Length rules a text answer can meet: the lower bound at most the upper one and at
/// most the longest answer kept ([`super::answers::MAX_INPUT`]), the upper above 0.
fn check_lengths(name: &str, min: Option<u32>, max: Option<u32>, out: &mut Vec<Problem>) {
    if matches!((min, max), (Some(a), Some(b)) if a > b) {
        out.push(problem(
            format!("項目「{name}」の文字数の下限が上限を超えています"),
            "min_length > max_length".into(),
        ));
    }
    if max == Some(0) {
        out.push(problem(
            format!("項目「{name}」の文字数の上限は1以上にしてください"),
            "max_length 0".into(),
        ));
    }
    let most = super::answers::MAX_INPUT;
    if min.is_some_and(|m| m as usize > most) {
        out.push(problem(
            format!(
                "項目「{name}」の文字数の下限は{most}以下にしてください（回答は{most}文字まで）"
            ),
            format!("min_length above {most}"),
        ));
    }
}

fn check_kind(name: &str, kind: &FieldKind, out: &mut Vec<Problem>) {
    let bad_range =
        |min: Option<u32>, max: Option<u32>| matches!((min, max), (Some(a), Some(b)) if a > b);
    match kind {
        FieldKind::Text {
            min_length,
            max_length,
            pattern,
            pattern_message,
        } => {
            check_lengths(name, *min_length, *max_length, out);
            if pattern_message
                .as_ref()
                .is_some_and(|m| m.chars().count() > MAX_LABEL)
            {
                out.push(problem(
                    format!("項目「{name}」の入力パターンのメッセージが長すぎます"),
                    "pattern message too long".into(),
                ));
            }
            if let Some(p) = pattern {
                if p.len() > 500
                    || regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .is_err()
                    || regex::RegexBuilder::new(&format!("^(?:{p})$"))
                        .size_limit(1 << 20)
                        .build()
                        .is_err()
                {
                    out.push(problem(
                        format!("項目「{name}」の入力パターン（正規表現）が正しくありません"),
                        "invalid pattern".into(),
                    ));
                }
            }
        }
        FieldKind::Textarea {
            min_length,
            max_length,
        } => check_lengths(name, *min_length, *max_length, out),
        FieldKind::Number { min, max, unit, .. } => {
            if unit.chars().count() > MAX_LABEL {
                out.push(problem(
                    format!("項目「{name}」の単位が長すぎます"),
                    "unit too long".into(),
                ));
            }
            if matches!((min, max), (Some(a), Some(b)) if a > b) {
                out.push(problem(
                    format!("項目「{name}」の最小値が最大値を超えています"),
                    "min > max".into(),
                ));
            }
        }
        FieldKind::Date { min, max } => {
            if matches!((min, max), (Some(a), Some(b)) if a > b) {
                out.push(problem(
                    format!("項目「{name}」の日付の範囲が正しくありません"),
                    "min > max".into(),
                ));
            }
        }
        FieldKind::Choice { options, .. } | FieldKind::MultiChoice { options, .. } => {
            let mut sorted: Vec<&String> = options.iter().collect();
            sorted.sort();
            sorted.dedup();
            if options.is_empty() || options.len() > MAX_OPTIONS || sorted.len() != options.len() {
                out.push(problem(
                    format!(
                        "項目「{name}」の選択肢は1〜{MAX_OPTIONS}個の重複しない値にしてください"
                    ),
                    "1-100 distinct options".into(),
                ));
            }
            if options
                .iter()
                .any(|o| o.trim().is_empty() || o.chars().count() > MAX_LABEL)
            {
                out.push(problem(
                    format!("項目「{name}」に空の、または長すぎる選択肢があります"),
                    "empty or long option".into(),
                ));
            }
            let limits = kind.limits();
            if let Some(o) = limits.keys().find(|o| !options.contains(o)) {
                out.push(problem(
                    format!("項目「{name}」の定員の「{o}」は選択肢にありません"),
                    format!("limit for an option that is not offered: {o}"),
                ));
            }
            if limits.values().any(|n| *n == 0 || *n > MAX_OPTION_LIMIT) {
                out.push(problem(
                    format!(
                        "項目「{name}」の選択肢ごとの定員は1〜{MAX_OPTION_LIMIT}にしてください"
                    ),
                    format!("option limits must be 1-{MAX_OPTION_LIMIT}"),
                ));
            }
            if let FieldKind::MultiChoice {
                min_selected,
                max_selected,
                ..
            } = kind
            {
                if bad_range(*min_selected, *max_selected)
                    || max_selected.is_some_and(|m| m == 0 || m as usize > options.len())
                    || min_selected.is_some_and(|m| m as usize > options.len())
                {
                    out.push(problem(
                        format!("項目「{name}」の選択数の範囲が正しくありません"),
                        "bad selection range".into(),
                    ));
                }
            }
        }
        FieldKind::Consent { statement } | FieldKind::Paragraph { text: statement } => {
            if statement.chars().count() > MAX_TEXT * 5 {
                out.push(problem(
                    format!("項目「{name}」の文章が長すぎます"),
                    "text too long".into(),
                ));
            }
        }
        FieldKind::File { types, max_mb } => {
            let mut distinct = types.clone();
            distinct.sort_by_key(|t| t.as_str());
            distinct.dedup();
            if types.is_empty() || distinct.len() != types.len() {
                out.push(problem(
                    format!("項目「{name}」で受け付けるファイルの形式を1つ以上選んでください"),
                    "file types: one or more, each once".into(),
                ));
            }
            if max_mb.is_some_and(|m| !(1..=MAX_FILE_MB).contains(&m)) {
                out.push(problem(
                    format!("項目「{name}」のファイルの上限は1〜{MAX_FILE_MB}MBにしてください"),
                    format!("max_mb must be 1-{MAX_FILE_MB}"),
                ));
            }
        }
        FieldKind::Email {}
        | FieldKind::Tel {}
        | FieldKind::Address {}
        | FieldKind::Name { .. }
        | FieldKind::Heading {} => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{FieldKind, FormDefinition};

    fn with_fields(fields: &str) -> Vec<String> {
        let json = format!(
            r#"{{ "format": "madoguchi.form/1", "title": "添付", "pages": [ {{ "id": "p1", "fields": [ {fields} ] }} ] }}"#
        );
        match FormDefinition::from_json(&json) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.ja).collect(),
        }
    }

    #[test]
    fn option_limits_name_offered_options_with_at_least_one_place() {
        let choice = |kind: &str, limits: &str| {
            format!(
                r#"{{ "id": "session", "type": "{kind}", "label": "回", "options": ["午前", "午後"], "limits": {limits} }}"#
            )
        };
        assert!(with_fields(&choice("choice", r#"{"午前": 20}"#)).is_empty());
        assert!(with_fields(&choice("multi_choice", r#"{"午前": 1, "午後": 2}"#)).is_empty());
        let unknown = with_fields(&choice("choice", r#"{"夜": 5}"#)).join("");
        assert!(
            unknown.contains("定員の「夜」は選択肢にありません"),
            "{unknown}"
        );
        let zero = with_fields(&choice("choice", r#"{"午前": 0}"#)).join("");
        assert!(zero.contains("1〜1000000"), "{zero}");
        // Written only when set: a definition without limits reads and writes as before.
        let def = FormDefinition::from_json(&format!(
            r#"{{ "format": "madoguchi.form/1", "title": "t", "pages": [ {{ "id": "p1", "fields": [ {} ] }} ] }}"#,
            choice("choice", "{}")
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!def.has_limits());
        let json = serde_json::to_string(&def).unwrap_or_default();
        assert!(!json.contains("limits"), "{json}");
    }

    #[test]
    fn file_fields_have_their_own_rules() {
        let file = |id: &str, extra: &str| {
            format!(r#"{{ "id": "{id}", "type": "file", "label": "書類{id}" {extra} }}"#)
        };
        // Every kind by default, 10 MB.
        assert!(with_fields(&file("a", "")).is_empty());
        let problems = with_fields(&file("a", r#", "types": [], "max_mb": 11"#)).join("\n");
        assert!(problems.contains("形式を1つ以上"), "{problems}");
        assert!(problems.contains("1〜10MB"), "{problems}");
        let twice = with_fields(&file("a", r#", "types": ["pdf", "pdf"]"#));
        assert_eq!(twice.len(), 1, "{twice:?}");
        // Two 10 MB fields fit a page; three do not; six do not fit a form.
        let two = [file("a", ""), file("b", "")].join(",");
        assert!(with_fields(&two).is_empty());
        let three = [file("a", ""), file("b", ""), file("c", r#", "max_mb": 1"#)].join(",");
        assert!(with_fields(&three).join("").contains("合計20MBまで"));
        let six: Vec<String> = (0..6)
            .map(|i| file(&format!("f{i}"), r#", "max_mb": 1"#))
            .collect();
        assert!(with_fields(&six.join(",")).join("").contains("5個まで"));
        // A rule on a file field asks whether one is attached, nothing else.
        let rule = |op: &str| {
            format!(
                r#"{}, {{ "id": "note", "type": "text", "label": "備考", "show_if": {{ "field": "a", "op": "{op}", "values": ["x"] }} }}"#,
                file("a", "")
            )
        };
        assert!(with_fields(&rule("not_empty")).is_empty());
        assert!(with_fields(&rule("equals"))
            .join("")
            .contains("「回答がある」だけ"));
    }

    #[test]
    fn a_dates_range_is_written_as_iso_dates_and_read_in_the_earlier_form_too() {
        let written: FieldKind =
            serde_json::from_str(r#"{ "type": "date", "min": "2026-04-01", "max": null }"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let earlier: FieldKind = serde_json::from_str(r#"{ "type": "date", "min": [2026, 91] }"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let april = time::macros::date!(2026 - 04 - 01);
        for kind in [&written, &earlier] {
            assert_eq!(
                kind,
                &FieldKind::Date {
                    min: Some(april),
                    max: None
                }
            );
        }
        let out = serde_json::to_value(&earlier).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out["min"], "2026-04-01");
        assert!(out["max"].is_null());
        let wrong = serde_json::from_str::<FieldKind>(r#"{ "type": "date", "min": "4月1日" }"#);
        assert!(wrong.is_err_and(|e| e.to_string().contains("YYYY-MM-DD")));
    }
}
