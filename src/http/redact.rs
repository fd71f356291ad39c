//! Keeping credentials out of everything the engine prints: URLs lose their userinfo and
//! secret-looking query values, body excerpts are short, single-line and scrubbed of the client's
//! own credentials.

use url::Url;

/// How many characters of a response body an error message shows.
pub const BODY_EXCERPT_CHARS: usize = 300;

/// Query parameter names whose values are hidden in printed URLs (API keys passed in the query).
const SECRET_QUERY_HINTS: &[&str] = &[
    "key",
    "secret",
    "password",
    "passwd",
    "access_token",
    "auth",
    "signature",
    "sig",
];

/// The URL as it may appear in logs and errors: no username/password, secret-looking query
/// values replaced by `redacted`.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    // Both only fail for cannot-be-a-base URLs, which have no userinfo to strip.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                if SECRET_QUERY_HINTS.iter().any(|h| lower.contains(h)) {
                    (k.into_owned(), "redacted".to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        if pairs.iter().any(|(_, v)| v == "redacted") {
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    u.to_string()
}

/// Replaces every occurrence of a known secret with `**redacted**`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), crate::config::REDACTED);
        }
    }
    out
}

/// A short, single-line, scrubbed excerpt of a body: lossy UTF-8, control characters escaped,
/// cut at [`BODY_EXCERPT_CHARS`] characters with an ellipsis.
pub fn excerpt(body: &[u8], secrets: &[String]) -> String {
    // Look at a bounded prefix only: bodies can be megabytes.
    let prefix = &body[..body.len().min(BODY_EXCERPT_CHARS * 4 + 64)];
    let text = String::from_utf8_lossy(prefix);
    let text = scrub(&text, secrets);
    let chars: Vec<char> = text.chars().collect();
    let truncated = chars.len() > BODY_EXCERPT_CHARS || prefix.len() < body.len();
    let mut out = String::new();
    for c in chars.into_iter().take(BODY_EXCERPT_CHARS) {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    let mut out = out.trim().to_owned();
    if truncated {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_userinfo_and_secret_query_values() {
        let u =
            Url::parse("https://me:pw@api.x.com/v1/users?api_key=zzz&limit=5&token=abc").unwrap();
        let s = display_url(&u);
        assert!(!s.contains("me:"), "{s}");
        assert!(!s.contains("pw"), "{s}");
        assert!(!s.contains("zzz"), "{s}");
        // Guru's page token is a cursor, not a credential: kept for debugging.
        assert!(s.contains("token=abc"), "{s}");
        assert!(s.contains("limit=5"), "{s}");
        let plain = Url::parse("https://api.x.com/v1/users?limit=5").unwrap();
        assert_eq!(display_url(&plain), "https://api.x.com/v1/users?limit=5");
    }

    #[test]
    fn excerpts_are_short_single_line_and_scrubbed() {
        let secrets = vec!["s3cr3t-value".to_owned()];
        let e = excerpt(b"{\"error\":\n\"bad s3cr3t-value\"}", &secrets);
        assert_eq!(e, "{\"error\": \"bad **redacted**\"}");
        let long = vec![b'a'; 5000];
        let e = excerpt(&long, &secrets);
        assert_eq!(e.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        let e = excerpt(&[0xff, 0xfe, b'o', b'k', 0x07], &secrets);
        assert!(e.contains("ok"));
        assert!(!e.contains('\u{7}'));
        assert_eq!(excerpt(b"", &secrets), "");
    }
}
