//! Japanese text: 和暦 dates, full-width/half-width normalisation, katakana checks,
//! and character counting that never penalises variation selectors (IVS).

use time::{Date, Month};
use unicode_normalization::UnicodeNormalization;

/// Eras by first day, newest first.
const ERAS: &[(&str, i32, Month, u8)] = &[
    ("令和", 2019, Month::May, 1),
    ("平成", 1989, Month::January, 8),
    ("昭和", 1926, Month::December, 25),
    ("大正", 1912, Month::July, 30),
    ("明治", 1868, Month::October, 23),
];

/// `令和8年11月25日` for 2026-11-25 (first years as 元年). `None` before 明治.
pub fn wareki(d: Date) -> Option<String> {
    for (name, y, m, day) in ERAS {
        let start = Date::from_calendar_date(*y, *m, *day).ok()?;
        if d >= start {
            let n = d.year() - y + 1;
            let year = if n == 1 {
                "元".to_owned()
            } else {
                n.to_string()
            };
            return Some(format!(
                "{name}{year}年{}月{}日",
                u8::from(d.month()),
                d.day()
            ));
        }
    }
    None
}

/// Today's date in Japan (deadlines are whole days there, whatever the server's zone).
pub fn today() -> Date {
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+9))
        .date()
}

/// `2026年11月25日（令和8年11月25日）`: 西暦 with 和暦 beside it.
pub fn date_both(d: Date) -> String {
    let seireki = format!("{}年{}月{}日", d.year(), u8::from(d.month()), d.day());
    match wareki(d) {
        Some(w) => format!("{seireki}（{w}）"),
        None => seireki,
    }
}

/// `2026年11月25日（令和8年11月25日）14:03:09`: a time in Japan, to the second.
pub fn jst_seconds(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::macros::offset!(+9));
    format!(
        "{} {:02}:{:02}:{:02}",
        date_both(t.date()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// NFKC: full-width digits and letters to ASCII, half-width katakana to full-width.
/// For codes, numbers, e-mail addresses and kana; never for names in kanji, where
/// it would replace compatibility ideographs people rely on.
pub fn nfkc(s: &str) -> String {
    s.nfkc().collect()
}

/// What an e-mail address is found by (its blind index's input): NFKC and lower case
/// throughout. The part before `@` may in theory differ by case, but no mail service
/// here treats it so, while phone keyboards capitalise its first letter: an applicant
/// who typed `Taro@…` and looks it up as `taro@…` must find the application.
pub fn email_key(address: &str) -> String {
    nfkc(address.trim()).to_lowercase()
}

/// The keys to look an address up by: [`email_key`], and the key applications sent
/// before it was used had (lower case after `@` only), while such applications exist.
pub fn email_lookup_keys(address: &str) -> Vec<String> {
    let address = nfkc(address.trim());
    let earlier = match address.split_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => address.clone(),
    };
    let mut keys = vec![email_key(&address), earlier];
    keys.dedup();
    keys
}

/// A telephone number in domestic form: NFKC, separators (hyphens, spaces,
/// parentheses, 長音) dropped, and +81 (Japan's country code) turned back into the
/// trunk 0, also when that 0 is still written after it ("+81 (0)3-1234-5678").
/// Anything else is kept, so that a caller can refuse it.
pub fn phone_digits(v: &str) -> String {
    let digits: String = nfkc(v)
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '(' | ')' | '‐' | 'ー' | '−'))
        .collect();
    match digits.strip_prefix("+81") {
        Some(rest) => format!("0{}", rest.strip_prefix('0').unwrap_or(rest)),
        None => digits,
    }
}

/// A postal code as typed, reduced to what is checked: NFKC, and the mark 〒,
/// hyphens (the 長音 a phone's kana keyboard offers included) and spaces dropped.
/// Anything else is kept, so that a caller can refuse it.
pub fn postal_digits(v: &str) -> String {
    nfkc(v)
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '〒' | '‐' | 'ー' | '−'))
        .collect()
}

/// Characters as a person counts them: variation selectors (IVS, U+FE00–FE0F,
/// U+E0100–E01EF) and zero-width joiners do not count.
pub fn char_count(s: &str) -> usize {
    s.chars()
        .filter(|c| !matches!(*c as u32, 0xFE00..=0xFE0F | 0xE0100..=0xE01EF | 0x200D))
        .count()
}

/// What a search compares: NFKC (full-width letters and digits to ASCII, half-width
/// kana to full-width), lower case, hiragana as katakana, without spaces. So 「ごみ」
/// finds 「粗大ゴミ」 and 「ｺﾞﾐ」 too; kanji are left as they are.
pub fn search_key(s: &str) -> String {
    nfkc(s)
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ぁ'..='ゖ' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// Furigana as katakana: NFKC (half-width to full-width), hiragana to katakana,
/// spaces to one ideographic space. `None` if anything but kana remains.
pub fn to_katakana(s: &str) -> Option<String> {
    let mut out = String::new();
    for c in nfkc(s.trim()).chars() {
        let c = match c {
            'ぁ'..='ゖ' => char::from_u32(c as u32 + 0x60)?,
            ' ' | '\u{3000}' => '\u{3000}',
            _ => c,
        };
        let ok = matches!(c, 'ァ'..='ヺ' | 'ー' | '・' | 'ヽ' | 'ヾ' | '\u{3000}');
        if !ok {
            return None;
        }
        if c == '\u{3000}' && out.ends_with('\u{3000}') {
            continue;
        }
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn e_mail_addresses_are_found_whatever_their_case() {
        use super::{email_key, email_lookup_keys};
        assert_eq!(
            email_key("Taro.Yamada@Example.JP"),
            "taro.yamada@example.jp"
        );
        assert_eq!(email_key(" ｔａｒｏ＠example.jp "), "taro@example.jp");
        assert_eq!(
            email_lookup_keys("Taro@Example.jp"),
            ["taro@example.jp", "Taro@example.jp"]
        );
        assert_eq!(email_lookup_keys("taro@example.jp"), ["taro@example.jp"]);
    }

    use super::*;
    use time::macros::date;

    #[test]
    fn wareki_dates() {
        assert_eq!(
            wareki(date!(2026 - 11 - 25)).as_deref(),
            Some("令和8年11月25日")
        );
        assert_eq!(
            wareki(date!(2019 - 05 - 01)).as_deref(),
            Some("令和元年5月1日")
        );
        assert_eq!(
            wareki(date!(2019 - 04 - 30)).as_deref(),
            Some("平成31年4月30日")
        );
        assert_eq!(
            wareki(date!(1989 - 01 - 07)).as_deref(),
            Some("昭和64年1月7日")
        );
        assert_eq!(
            wareki(date!(1989 - 01 - 08)).as_deref(),
            Some("平成元年1月8日")
        );
        assert_eq!(wareki(date!(1800 - 01 - 01)), None);
        assert_eq!(
            date_both(date!(2026 - 11 - 25)),
            "2026年11月25日（令和8年11月25日）"
        );
    }

    #[test]
    fn telephone_numbers_in_domestic_form() {
        for written in [
            "03-1234-5678",
            "０３－１２３４－５６７８",
            "(03) 1234 5678",
            "+81 3-1234-5678",
            "+81 (0)3-1234-5678",
            "＋８１（０）３‐１２３４‐５６７８",
        ] {
            assert_eq!(phone_digits(written), "0312345678", "{written}");
        }
        // Not a Japanese number with its country code: left as written.
        assert_eq!(phone_digits("8131234567"), "8131234567");
        assert_eq!(phone_digits("TEL 03"), "TEL03");
    }

    #[test]
    fn searches_fold_width_case_and_kana() {
        assert_eq!(search_key("粗大 ゴミ"), "粗大ゴミ");
        assert!(search_key("粗大ゴミ収集").contains(&search_key("ごみ")));
        assert!(search_key("粗大ゴミ収集").contains(&search_key("ｺﾞﾐ")));
        assert!(search_key("ＰＴＡ申込").contains(&search_key("pta")));
        assert_eq!(search_key("　"), "");
    }

    #[test]
    fn kana_and_counting() {
        assert_eq!(
            to_katakana("やまだ　たろう").as_deref(),
            Some("ヤマダ\u{3000}タロウ")
        );
        assert_eq!(to_katakana("ﾔﾏﾀﾞ").as_deref(), Some("ヤマダ"));
        assert_eq!(to_katakana("山田"), None);
        assert_eq!(to_katakana("yamada"), None);
        // 葛 with an IVS selector counts as one character.
        assert_eq!(char_count("葛\u{E0100}飾"), 2);
        assert_eq!(nfkc("１２３－４５６７"), "123-4567");
    }
}
