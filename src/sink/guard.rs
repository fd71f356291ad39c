//! Guards every writer applies before a value goes into a URL, a list or a vendor that takes
//! only scalars: [`path_key`], [`path_keys`], [`single_email`], [`scalars_only`]. Each answers
//! with a [`Refusal`] (or its reason) naming the value, so the record is rejected before any
//! request.

use serde_json::Value;

use super::settle::Refusal;
use crate::model::{Item, PropKey};

/// Vendors that take only scalar values (string, number, boolean, null): the first value that
/// is an array or an object, named.
pub fn scalars_only<'a>(
    vendor: &str,
    what: &str,
    values: impl IntoIterator<Item = (&'a PropKey, &'a Value)>,
) -> Result<(), Refusal> {
    match values
        .into_iter()
        .find(|(_, v)| v.is_array() || v.is_object())
    {
        None => Ok(()),
        Some((key, value)) => Err(Refusal::new(format!(
            "{vendor} takes only strings, numbers, booleans and null as {what}, but {key:?} is {}",
            if value.is_array() {
                "an array"
            } else {
                "an object"
            }
        ))),
    }
}

/// Checks a key that a writer puts into a URL path as one segment ([`key_segment`](super::wire::key_segment)): `Err` says
/// why it cannot be one, naming `what` (`user key`, `group id`, ...).
///
/// Percent-encoding keeps `/`, `?`, `#` and `%` inside the segment, but not a key that *is* a
/// dot segment: URL parsers (the `url` crate that reqwest uses, and servers) resolve `.` and `..`
/// as "this" and "the parent" directory, so `/users/..` would become `/` (and `%2e%2e` is
/// resolved the same way by WHATWG parsers). An empty key would address the collection itself
/// (`DELETE /users/`). So these are refused before any request, with a reason.
pub fn path_key(what: &str, raw: &str) -> Result<(), Refusal> {
    let shown = excerpt(raw);
    if raw.is_empty() {
        return Err(Refusal::new(format!(
            "{what} is empty, and it goes into a url path"
        )));
    }
    if crate::http::is_dot_segment(raw) {
        return Err(Refusal::new(format!(
            "{what} {shown:?} is a dot segment, which a url path resolves as a directory step (it would address another resource), so it is not sent"
        )));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(Refusal::new(format!(
            "{what} {shown:?} contains the control character {c:?}, which no vendor key holds"
        )));
    }
    Ok(())
}

/// A value as a reason quotes it: at most 80 characters (a hostile key can be megabytes).
fn excerpt(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() > MAX {
        format!("{}…", raw.chars().take(MAX).collect::<String>())
    } else {
        raw.to_string()
    }
}

/// [`path_key`] for every key an item has (`id`, `user_id`, `group_id`), for a writer that puts
/// them into paths.
pub fn path_keys(item: &Item) -> Result<(), Refusal> {
    for (field, key) in [
        ("id", &item.id),
        ("user_id", &item.user_id),
        ("group_id", &item.group_id),
    ] {
        if let Some(key) = key {
            path_key(&format!("key {field}"), key)?;
        }
    }
    Ok(())
}

/// The characters that separate or wrap addresses in an email header or a list (RFC 5322
/// specials other than `@` and `.`), which one address in a list or a path never holds.
const EMAIL_SEPARATORS: &[char] = &[',', ';', '<', '>', '"', '(', ')', '[', ']', '\\', ':'];

/// The longest address RFC 5321 lets through (a 254-character path).
const MAX_EMAIL_LEN: usize = 254;

/// One email address, trimmed, for a writer to put into a list (Guru's comma-separated invite)
/// or a path: exactly one `@` with text on both sides, and no separator (`,` `;` `<` `>` `"`
/// `(` `)` `[` `]` `\` `:`), whitespace or control character. `Err` says what is wrong, quoting
/// the value (cut short), so the record is rejected before any request: a comma in an email must
/// never invite a second person.
pub fn single_email(raw: &str) -> Result<&str, String> {
    let email = raw.trim();
    let shown = excerpt(email);
    if email.is_empty() {
        return Err("is empty".into());
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(format!(
            "{shown:?} is not one email address: it is longer than {MAX_EMAIL_LEN} characters"
        ));
    }
    if let Some(c) = email
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || EMAIL_SEPARATORS.contains(c))
    {
        return Err(format!(
            "{shown:?} is not one email address: it contains {c:?}, which separates addresses in a list"
        ));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(format!(
            "{shown:?} is not one email address: it needs exactly one @ with text on both sides"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::wire::key_segment;

    #[test]
    fn dot_segment_and_empty_keys_cannot_go_into_a_path() {
        for bad in [
            ".", "..", "%2e%2e", "%2E.", ".%2e", "%2e", "", "a\nb", "\u{0}",
        ] {
            let err = path_key("user key", bad).unwrap_err();
            assert!(
                err.reason.starts_with("user key"),
                "{bad:?}: {}",
                err.reason
            );
        }
        for good in ["...", "a.b", "..a", "a/../b", "x%2fy", "ann@x.io", "u 1"] {
            assert!(path_key("user key", good).is_ok(), "{good:?}");
        }
        // What reqwest's url crate does with them, which is why they are refused.
        let mut url = url::Url::parse("https://api.example.com/v1").unwrap();
        url.set_path("/v1/users/..");
        assert_eq!(url.path(), "/v1/");
        url.set_path("/v1/users/%2e%2E");
        assert_eq!(url.path(), "/v1/");
        url.set_path(&format!("/v1/users/{}", key_segment("a/../b")));
        assert_eq!(url.path(), "/v1/users/a%2F..%2Fb");
    }

    #[test]
    fn an_email_in_a_list_or_a_path_is_exactly_one_address() {
        assert_eq!(single_email("  ann@x.io "), Ok("ann@x.io"));
        assert_eq!(
            single_email("o'brien+tag@x.co.uk"),
            Ok("o'brien+tag@x.co.uk")
        );
        for bad in [
            "alice@example.com,mallory@evil.example",
            "alice@example.com;mallory@evil.example",
            "alice@example.com mallory@evil.example",
            "Alice <alice@example.com>",
            "alice@example.com\tmallory@evil.example",
            "alice@example.com\u{0}",
            "alice@example.com\u{2028}mallory@evil.example",
            "\"a,b\"@example.com",
            "alice@@example.com",
            "a@b@example.com",
            "@example.com",
            "alice@",
            "alice",
            "",
        ] {
            assert!(single_email(bad).is_err(), "{bad:?}");
        }
        let err = single_email("a@x.io,m@evil.example").unwrap_err();
        assert!(err.contains("contains ','"), "{err}");
    }
}
