//! Host names (src/domain.rs): `HostName::parse` on what an operator types,
//! `HostName::lookup_key` and `HostName::request_key` on any `Host` header. The
//! other value types of that file that parse untrusted text (slug, 地方公共団体
//! コード, 受付番号) ride along.
//!
//! Besides "never panics": a parsed host is ASCII lower case without port or
//! trailing dot, parses again to itself, and is found by the lookup key of itself,
//! of itself with a port and of itself in upper case; lookup keys are lower case;
//! where the strict `request_key` accepts a header, it gives the same key as
//! `lookup_key`, and accepts that key again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use madoguchi::domain::{HostName, LocalGovCode, ReceiptNumber, Slug};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    let key = HostName::lookup_key(s);
    assert_eq!(key, key.to_ascii_lowercase(), "lookup key not lower case");

    // The strict key agrees with the lenient one wherever it accepts the header.
    if let Some(strict) = HostName::request_key(s) {
        assert_eq!(strict, key, "request_key and lookup_key disagree");
        assert_eq!(strict, strict.to_ascii_lowercase());
        if !strict.contains(':') {
            assert_eq!(HostName::request_key(&strict).as_ref(), Some(&strict));
            // (request_key refuses headers over 300 bytes.)
            if strict.len() + 3 <= 300 {
                assert_eq!(
                    HostName::request_key(&format!("{strict}:80")).as_ref(),
                    Some(&strict)
                );
            }
        }
    }

    if let Ok(h) = HostName::parse(s) {
        let name = h.as_str();
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        assert!(!name.starts_with('.') && !name.ends_with('.') && !name.contains(".."));
        assert_eq!(HostName::parse(name).as_ref(), Ok(&h));
        assert_eq!(HostName::lookup_key(name), name);
        assert_eq!(HostName::lookup_key(&format!("{name}:8443")), name);
        assert_eq!(HostName::lookup_key(&name.to_ascii_uppercase()), name);
        assert_eq!(HostName::lookup_key(&format!(" {name}\t")), name);
        assert_eq!(HostName::request_key(name).as_deref(), Some(name));
        assert_eq!(
            HostName::request_key(&format!("{name}:8443")).as_deref(),
            Some(name)
        );
        // A trailing dot is another host as far as the front tier is concerned.
        assert_ne!(HostName::lookup_key(&format!("{name}.")), name);
        let json = serde_json::to_string(&h).expect("host serialises");
        assert_eq!(
            serde_json::from_str::<HostName>(&json).ok().as_ref(),
            Some(&h)
        );
    }

    if let Ok(slug) = Slug::parse(s) {
        assert_eq!(slug.as_str(), s);
        assert_eq!(Slug::parse(slug.as_str()).as_ref(), Ok(&slug));
    }

    if let Ok(code) = LocalGovCode::parse(s) {
        assert_eq!(code.as_str().len(), 6);
        assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
        assert!(code.local_gov().is_some());
        assert_eq!(LocalGovCode::parse(code.as_str()).as_ref(), Ok(&code));
    }

    if let Ok(r) = ReceiptNumber::parse(s) {
        let text = r.as_str();
        assert_eq!(text.len(), 9);
        assert_eq!(text.as_bytes()[4], b'-');
        assert_eq!(ReceiptNumber::parse(text).as_ref(), Ok(&r));
        assert_eq!(ReceiptNumber::parse(&text.to_lowercase()).as_ref(), Ok(&r));
    }
});
