//! 郵便番号 → 住所: Japan Post's postal codes with their prefecture, city and town,
//! carried in the binary (`src/data/postal-codes.tsv.gz`, written by
//! `ops/data/postal-codes`; Japan Post distributes the data for free use) and read
//! on first use. A citizen's form fills the address line from it as the postal code
//! is typed (`/postal/{code}`, `src/web/static/forms.js`).

use std::io::Read;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// The place a postal code stands for. `town` is empty where Japan Post names no
/// single place (a code for the rest of a city: 「以下に掲載がない場合」; a list or a
/// range of areas; see `ops/data/postal-codes`). A floor of a high-rise building
/// has its town, without the building's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    pub postal_code: String,
    pub prefecture: &'static str,
    pub city: &'static str,
    pub town: &'static str,
}

struct Table {
    /// Prefecture and city, by the index the codes refer to.
    cities: Vec<(&'static str, &'static str)>,
    /// Postal code (as a number), city index and town, in order of code.
    codes: Vec<(u32, u16, &'static str)>,
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// The table, read once; lives as long as the process (its text is kept, and every
/// entry points into it).
fn table() -> &'static Table {
    TABLE.get_or_init(|| {
        const GZ: &[u8] = include_bytes!("data/postal-codes.tsv.gz");
        let mut text = String::new();
        if let Err(e) = flate2::read::GzDecoder::new(GZ).read_to_string(&mut text) {
            tracing::error!(error = %e, "the postal-code table could not be read");
            text.clear();
        }
        parse(Box::leak(text.into_boxed_str()))
    })
}

fn parse(text: &'static str) -> Table {
    let (head, body) = text.split_once("\n\n").unwrap_or(("", ""));
    let mut index = std::collections::HashMap::new();
    let mut cities = Vec::new();
    for line in head.lines() {
        let mut f = line.split('\t');
        if let (Some(code), Some(pref), Some(city)) = (f.next(), f.next(), f.next()) {
            if let Ok(i) = u16::try_from(cities.len()) {
                index.insert(code, i);
                cities.push((pref, city));
            }
        }
    }
    let mut codes = Vec::with_capacity(body.len() / 24);
    for line in body.lines() {
        let mut f = line.split('\t');
        if let (Some(pc), Some(code), Some(town)) = (f.next(), f.next(), f.next()) {
            if let (Ok(pc), Some(&i)) = (pc.parse::<u32>(), index.get(code)) {
                codes.push((pc, i, town));
            }
        }
    }
    codes.sort_unstable_by_key(|c| c.0);
    Table { cities, codes }
}

/// Not seven digits, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAPostalCode;

/// The place of a postal code as typed (full-width digits, 〒 and hyphens allowed):
/// `Ok(None)` when Japan Post has no such code.
pub fn lookup(typed: &str) -> Result<Option<Place>, NotAPostalCode> {
    let digits = crate::ja::postal_digits(typed.trim());
    if digits.len() != 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotAPostalCode);
    }
    let n: u32 = digits.parse().map_err(|_| NotAPostalCode)?;
    let t = table();
    Ok(t.codes
        .binary_search_by_key(&n, |c| c.0)
        .ok()
        .and_then(|i| {
            let (_, city, town) = t.codes[i];
            let (prefecture, city) = *t.cities.get(usize::from(city))?;
            Some(Place {
                postal_code: digits,
                prefecture,
                city,
                town,
            })
        }))
}

/// `GET /postal/{code}`: the place as JSON; 404 for a code Japan Post does not have,
/// 400 for one that is not seven digits (each with a message in Japanese and English).
/// The same for every municipality and without personal data, so it may be cached.
pub async fn show(Path(code): Path<String>) -> Response {
    // The first lookup reads the table (about 3 MB of text): off the async workers.
    let found = if code.len() > 64 {
        Err(NotAPostalCode)
    } else if TABLE.get().is_some() {
        lookup(&code)
    } else {
        match tokio::task::spawn_blocking(move || lookup(&code)).await {
            Ok(r) => r,
            Err(_) => Err(NotAPostalCode),
        }
    };
    let (status, body) = match found {
        Ok(Some(place)) => (StatusCode::OK, serde_json::json!(place)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "この郵便番号は見つかりません / No such postal code" }),
        ),
        Err(NotAPostalCode) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "郵便番号は7桁の数字で入力してください / A postal code has seven digits" }),
        ),
    };
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_postal_code_is_carried_and_found_as_typed() {
        let t = table();
        assert_eq!(t.cities.len(), 1892);
        assert_eq!(t.codes.len(), 120_720);
        let place = |typed: &str| {
            lookup(typed)
                .unwrap_or_else(|_| panic!("{typed} refused"))
                .map(|p| format!("{} {}{}{}", p.postal_code, p.prefecture, p.city, p.town))
        };
        assert_eq!(
            place("0600042").as_deref(),
            Some("0600042 北海道札幌市中央区大通西")
        );
        for typed in ["〒100-0001", "１００－０００１", "100ー0001", " 100 0001 "] {
            assert_eq!(
                place(typed).as_deref(),
                Some("1000001 東京都千代田区千代田"),
                "{typed}"
            );
        }
        // A code for the rest of a city has no town; nor has one whose 町域 is a list
        // or a range of areas, or a note on the numbers that follow.
        for (typed, want) in [
            ("0010000", "0010000 北海道札幌市北区"),
            ("0295502", "0295502 岩手県和賀郡西和賀町"),
            ("4090142", "4090142 山梨県北都留郡小菅村"),
            // A floor of a high-rise building: its town, not the building's name.
            ("1006001", "1006001 東京都千代田区霞が関"),
            ("1636090", "1636090 東京都新宿区西新宿"),
            // A town whose name begins with another's is itself.
            ("0395204", "0395204 青森県むつ市川内町蛎崎"),
        ] {
            assert_eq!(place(typed).as_deref(), Some(want));
        }
        // The first and last codes of the table (its ends are read right).
        let (first, last) = (t.codes[0].0, t.codes[t.codes.len() - 1].0);
        assert!(place(&format!("{first:07}")).is_some());
        assert!(place(&format!("{last:07}")).is_some());
        assert_eq!(place("0000000"), None);
        for bad in ["", "123456", "12345678", "１２３４５６x", "abcdefg"] {
            assert!(lookup(bad).is_err(), "{bad}");
        }
    }
}
