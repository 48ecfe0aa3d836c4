//! Value types that parse on construction, so an invalid slug, code or host name
//! cannot travel past the edge of the program.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Why a value was refused, in Japanese first and English second.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ja} / {en}")]
pub struct Invalid {
    pub ja: String,
    pub en: String,
}

fn invalid(ja: impl Into<String>, en: impl Into<String>) -> Invalid {
    Invalid {
        ja: ja.into(),
        en: en.into(),
    }
}

/// A tenant's short name: lower-case ASCII letters, digits and hyphens, 2–40 long,
/// starting with a letter (it appears in URLs, file names and log lines).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok_len = (2..=40).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_start = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let ok_end = !s.ends_with('-');
        if ok_len && ok_chars && ok_start && ok_end {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid(
                format!("スラッグ「{s}」は使えません（英小文字で始まる2〜40文字の英小文字・数字・ハイフン）"),
                format!("slug {s:?} must be 2-40 lower-case letters, digits or hyphens, starting with a letter"),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}
impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the list of Japanese local governments shipped with the binary.
#[derive(Debug, Clone)]
pub struct LocalGov {
    pub code: String,
    pub prefecture: String,
    pub name: String,
    pub kind: String,
}

/// All 1,788 local governments (47 prefectures and 1,741 municipalities), keyed by code.
pub fn local_governments() -> &'static HashMap<String, LocalGov> {
    static LIST: OnceLock<HashMap<String, LocalGov>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut out = HashMap::new();
        let mut rdr =
            csv::Reader::from_reader(include_str!("data/local-governments.csv").as_bytes());
        for rec in rdr.records().flatten() {
            let field = |i: usize| rec.get(i).unwrap_or_default().to_owned();
            out.insert(
                field(0),
                LocalGov {
                    code: field(0),
                    prefecture: field(1),
                    name: field(2),
                    kind: field(4),
                },
            );
        }
        out
    })
}

/// 全国地方公共団体コード: five digits of JIS X 0402 plus a check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalGovCode(String);

impl LocalGovCode {
    /// Accepts a six-digit code (full-width digits too) whose check digit is right and
    /// which names a local government that exists.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let digits: String = s
            .trim()
            .chars()
            .map(|c| match c {
                '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
                _ => c,
            })
            .collect();
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                format!("地方公共団体コード「{s}」は6桁の数字で入力してください"),
                format!("local government code {s:?} must be six digits"),
            ));
        }
        let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d
            .iter()
            .take(5)
            .zip([6, 5, 4, 3, 2])
            .map(|(a, w)| a * w)
            .sum();
        let check = (11 - sum % 11) % 10;
        if check != d[5] {
            return Err(invalid(
                format!("地方公共団体コード「{s}」の検査数字が正しくありません"),
                format!("local government code {s:?} has a wrong check digit"),
            ));
        }
        if !local_governments().contains_key(&digits) {
            return Err(invalid(
                format!("地方公共団体コード「{s}」に該当する団体がありません"),
                format!("no local government has code {s:?}"),
            ));
        }
        Ok(Self(digits))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn local_gov(&self) -> Option<&'static LocalGov> {
        local_governments().get(&self.0)
    }
}

impl TryFrom<String> for LocalGovCode {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<LocalGovCode> for String {
    fn from(c: LocalGovCode) -> String {
        c.0
    }
}
impl fmt::Display for LocalGovCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host name a tenant is served on, as the front tier compares it: ASCII,
/// lower-case, no port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let h = s.trim().to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.len() <= 253 && h.split('.').all(label_ok) {
            Ok(Self(h))
        } else {
            Err(invalid(
                format!("ホスト名「{s}」は使えません（英数字・ハイフン・ドットのみ、国際化ドメイン名は xn-- 形式で）"),
                format!("host name {s:?} is not valid (ASCII letters, digits, hyphens and dots; IDNs in xn-- form)"),
            ))
        }
    }

    /// The lookup key of a `Host` header or request authority, or `None` when it is
    /// not a host name or an IPv6 literal (with an optional numeric port).
    pub fn request_key(header: &str) -> Option<String> {
        let h = header.trim();
        if h.is_empty() || h.len() > 300 {
            return None;
        }
        let (name, port) = match h.strip_prefix('[') {
            Some(rest) => {
                let (inner, after) = rest.split_once(']')?;
                inner.parse::<std::net::Ipv6Addr>().ok()?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if after.is_empty() => None,
                    None => return None,
                };
                (inner, port)
            }
            None => match h.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (h, None),
            },
        };
        if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let ipv6 = h.starts_with('[');
        if !ipv6
            && (name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'))
        {
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    /// The key the front tier looks a request up by: the `Host` header lower-cased
    /// with its port removed. Anything else is compared as it came, so tricks such as
    /// a trailing dot simply do not match.
    pub fn lookup_key(header: &str) -> String {
        let h = header.trim();
        let without_port = if let Some(rest) = h.strip_prefix('[') {
            // IPv6 literal: keep the brackets' content.
            rest.split(']').next().unwrap_or_default()
        } else {
            match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            }
        };
        without_port.to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}
impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn request_keys_are_strict() {
        let k = HostName::request_key;
        assert_eq!(
            k("City.Example.jp:8080").as_deref(),
            Some("city.example.jp")
        );
        assert_eq!(k("city.example.jp.").as_deref(), Some("city.example.jp."));
        assert_eq!(k("[::1]:80").as_deref(), Some("::1"));
        for bad in [
            "",
            "[a.test]",
            "[a.test]:80",
            "[::1]b.test",
            "a.test:",
            "a.test:x",
            "b.test:a.test",
            "evil@a.test",
            "a b",
            "а.test",
            "a.test/x",
        ] {
            assert_eq!(k(bad), None, "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn slug_rules() {
        assert!(Slug::parse("chiyoda").is_ok());
        assert!(Slug::parse("minami-alps2").is_ok());
        for bad in ["", "a", "Chiyoda", "1abc", "abc-", "ab_c", "千代田"] {
            assert!(Slug::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn local_gov_codes_check_digit_and_existence() {
        let c = LocalGovCode::parse("131016").map(|c| c.local_gov().map(|g| g.name.clone()));
        assert_eq!(c, Ok(Some("千代田区".to_owned())));
        assert_eq!(
            LocalGovCode::parse("０１１００２").map(|c| c.to_string()),
            Ok("011002".into())
        );
        assert!(LocalGovCode::parse("131017").is_err(), "wrong check digit");
        assert!(LocalGovCode::parse("13101").is_err());
        // Right check digit, but no such government: 99999 -> check digit computed here.
        let sum: u32 = [9, 9, 9, 9, 9]
            .iter()
            .zip([6, 5, 4, 3, 2])
            .map(|(a, w)| a * w)
            .sum();
        let code = format!("99999{}", (11 - sum % 11) % 10);
        let err = LocalGovCode::parse(&code).err().map(|e| e.ja);
        assert!(err.is_some_and(|m| m.contains("該当する団体がありません")));
        assert_eq!(local_governments().len(), 1788);
    }

    #[test]
    fn host_lookup_key() {
        assert_eq!(
            HostName::lookup_key("Chiyoda.Localhost:8080"),
            "chiyoda.localhost"
        );
        assert_eq!(
            HostName::lookup_key("chiyoda.localhost."),
            "chiyoda.localhost."
        );
        assert_eq!(HostName::lookup_key("[::1]:80"), "::1");
        assert!(HostName::parse("chiyoda.localhost").is_ok());
        assert!(HostName::parse("千代田.jp").is_err());
        assert!(HostName::parse("a..b").is_err());
    }
}

/// 受付番号: seven random symbols and a check symbol from the 32-symbol Crockford
/// alphabet (no I, L, O, U), shown as `XXXX-XXXX`. Readable aloud, and typed back
/// without ambiguity: lower case, full width, O for 0 and I/L for 1 are accepted,
/// and a single mistyped symbol or swapped neighbours fail the check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReceiptNumber(String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn crockford_value(c: char) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    CROCKFORD
        .iter()
        .position(|&b| char::from(b) == c)
        .and_then(|p| u32::try_from(p).ok())
}

/// Luhn mod N over the 32 symbols.
fn luhn32(values: &[u32]) -> u32 {
    let mut sum = 0;
    for (i, v) in values.iter().rev().enumerate() {
        let mut x = if i % 2 == 0 { v * 2 } else { *v };
        x = x / 32 + x % 32;
        sum += x;
    }
    (32 - sum % 32) % 32
}

impl ReceiptNumber {
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rngs::OsRng;
        let values: Vec<u32> = (0..7).map(|_| rng.gen_range(0..32)).collect();
        Self::from_values(&values)
    }

    fn from_values(values: &[u32]) -> Self {
        let check = luhn32(values);
        let mut s = String::with_capacity(9);
        for (i, v) in values.iter().chain(std::iter::once(&check)).enumerate() {
            if i == 4 {
                s.push('-');
            }
            s.push(char::from(CROCKFORD[*v as usize]));
        }
        Self(s)
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || {
            invalid(
                format!("受付番号「{s}」が正しくありません（例: 4K7M-9XPQ）"),
                format!("receipt number {s:?} is not valid (e.g. 4K7M-9XPQ)"),
            )
        };
        let cleaned: String = crate::ja::nfkc(s)
            .chars()
            .filter(|c| !matches!(c, '-' | ' ' | '‐' | 'ー' | '−'))
            .collect();
        let values: Vec<u32> = cleaned
            .chars()
            .map(crockford_value)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if values.len() != 8 || luhn32(&values[..7]) != values[7] {
            return Err(bad());
        }
        Ok(Self::from_values(&values[..7]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReceiptNumber {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<ReceiptNumber> for String {
    fn from(r: ReceiptNumber) -> String {
        r.0
    }
}
impl fmt::Display for ReceiptNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod receipt_tests {
    use super::*;

    #[test]
    fn receipt_numbers_round_trip_and_catch_typos() {
        for _ in 0..200 {
            let r = ReceiptNumber::generate();
            assert_eq!(r.as_str().len(), 9);
            assert_eq!(ReceiptNumber::parse(r.as_str()).as_ref(), Ok(&r));
            assert_eq!(
                ReceiptNumber::parse(&r.as_str().to_lowercase()).as_ref(),
                Ok(&r)
            );
            let bytes: Vec<char> = r.as_str().chars().filter(|c| *c != '-').collect();
            // Every single-symbol substitution is caught.
            for i in 0..8 {
                for &b in CROCKFORD {
                    let c = char::from(b);
                    if c == bytes[i] {
                        continue;
                    }
                    let mut t = bytes.clone();
                    t[i] = c;
                    let s: String = t.into_iter().collect();
                    assert!(ReceiptNumber::parse(&s).is_err(), "{s} accepted for {r}");
                }
            }
            // Swapped neighbours are caught unless equal.
            for i in 0..7 {
                let mut t = bytes.clone();
                t.swap(i, i + 1);
                if t != bytes {
                    let s: String = t.into_iter().collect();
                    let ok = ReceiptNumber::parse(&s).is_ok();
                    // Luhn mod N misses only the pair of symbols worth 0 and N-1.
                    let pair = [bytes[i], bytes[i + 1]];
                    assert!(
                        !ok || (pair.contains(&'0') && pair.contains(&'Z')),
                        "{s} accepted for {r}"
                    );
                }
            }
        }
        let r = ReceiptNumber::generate();
        let fullwidth: String = r
            .as_str()
            .chars()
            .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c))
            .collect();
        assert_eq!(ReceiptNumber::parse(&fullwidth).as_ref(), Ok(&r));
        assert!(ReceiptNumber::parse("ABC").is_err());
    }
}
