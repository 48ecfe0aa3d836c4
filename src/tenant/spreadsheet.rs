//! CSV for spreadsheets: the writer the staff's downloads share, so that what a
//! citizen typed opens in Excel as text and never runs as a formula.

use std::borrow::Cow;

/// A CSV writer with CRLF line ends, after a UTF-8 byte-order mark when `bom` (so
/// Japanese Excel reads the file as UTF-8 rather than Shift_JIS).
pub fn writer(bom: bool) -> csv::Writer<Vec<u8>> {
    writer_with(bom, false)
}

/// [`writer`], its rows of any length (sections of a report, one under another).
pub fn sections_writer() -> csv::Writer<Vec<u8>> {
    writer_with(true, true)
}

fn writer_with(bom: bool, flexible: bool) -> csv::Writer<Vec<u8>> {
    let start = if bom {
        vec![0xEF, 0xBB, 0xBF]
    } else {
        Vec::new()
    };
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .flexible(flexible)
        .from_writer(start)
}

/// Writes one row with every cell made safe by [`cell`].
pub fn write_row<S: AsRef<str>>(
    w: &mut csv::Writer<Vec<u8>>,
    row: impl IntoIterator<Item = S>,
) -> csv::Result<()> {
    w.write_record(row.into_iter().map(|c| cell(c.as_ref()).into_owned()))
}

/// A cell that a spreadsheet would read as a formula (it begins with `=`, `+`,
/// `-`, `@`, a tab or a carriage return, full-width forms included, since Excel
/// accepts `＝`) gets a leading apostrophe, so it shows as the text it is (CWE-1236).
/// A plain signed number (`-5`, `+81`) is left alone: it is a number, not a formula.
pub fn cell(s: &str) -> Cow<'_, str> {
    let Some(first) = s.chars().next() else {
        return Cow::Borrowed(s);
    };
    let risky = matches!(
        first,
        '=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '＝' | '＋' | '－' | '＠'
    );
    if risky && !is_signed_number(s) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn is_signed_number(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(['+', '-']) else {
        return false;
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_become_text_and_numbers_stay_numbers() {
        for (input, out) in [
            (
                "=HYPERLINK(\"https://example.com/\",\"詳細\")",
                "'=HYPERLINK(\"https://example.com/\",\"詳細\")",
            ),
            ("+81 3-1234-5678", "'+81 3-1234-5678"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("＝1+1", "'＝1+1"),
            ("-", "'-"),
            ("-5", "-5"),
            ("+12.50", "+12.50"),
            ("3-1", "3-1"),
            ("山田 花子", "山田 花子"),
            ("", ""),
        ] {
            assert_eq!(cell(input), out, "{input:?}");
        }
    }

    #[test]
    fn rows_are_written_safe() {
        let mut w = super::writer(true);
        super::write_row(&mut w, ["=cmd|' /c calc'!a0", "ok"]).unwrap_or_else(|e| panic!("{e}"));
        let bytes = w.into_inner().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes, "\u{feff}'=cmd|' /c calc'!a0,ok\r\n".as_bytes());
    }
}
