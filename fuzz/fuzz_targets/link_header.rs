//! The `Link` header parser (Guru REST paging) over arbitrary text, alone and through a header
//! map, resolved against a fixed base.
//!
//! Oracles besides "never panics": every parsed target is non-empty and trimmed; the next link,
//! when there is one, is http(s) and was one of the parsed targets; its `token` is non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::http::paginate::link;
use roster::http::{HeaderMap, HeaderValue};
use url::Url;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let links = link::parse(&text);
    for l in &links {
        assert!(!l.target.is_empty(), "empty target from {text:?}");
        assert_eq!(l.target.trim(), l.target, "untrimmed target from {text:?}");
        assert!(l.rels.iter().all(|r| *r == r.to_ascii_lowercase()));
    }
    if let Some(next) = link::pick_next(&links) {
        assert!(links.contains(next));
    }

    let base = Url::parse("https://api.getguru.com/api/v1/members?token=abc").expect("base");
    let mut headers = HeaderMap::new();
    // Several Link headers: split the input at NUL bytes.
    for part in data.split(|b| *b == 0) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append("link", value);
        }
    }
    if let Some(url) = link::next_link(&headers, &base) {
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        if let Some(token) = link::token(&url) {
            assert!(!token.is_empty());
        }
    }
});
