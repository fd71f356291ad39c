//! Where a request goes: [`resolve`] joins a path (or a next-page URL) onto the vendor's base
//! URL, keeping its prefix, and refuses what would leave the vendor or address another
//! resource.

use std::borrow::Cow;

use url::Url;

use super::client::shorten;

/// See [`crate::http::HttpClient::url`].
pub(crate) fn resolve(base: &Url, input: &str) -> Result<Url, String> {
    let s = input.trim();
    if s.starts_with("//") {
        return Err("protocol-relative urls are not accepted".to_owned());
    }
    if let Ok(abs) = Url::parse(s) {
        if matches!(abs.scheme(), "http" | "https") {
            if abs.origin() != base.origin() {
                return Err(format!(
                    "absolute urls must stay on {}, so credentials never go to another host",
                    base.origin().ascii_serialization()
                ));
            }
            if !abs.username().is_empty() || abs.password().is_some() {
                return Err("urls with embedded credentials are not accepted".to_owned());
            }
            let mut abs = abs;
            abs.set_fragment(None);
            return Ok(abs);
        }
        // `bulk:jobs:1` parses as a URL with scheme `bulk`; it is a relative path here.
    }
    let without_fragment = s.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    // A dot segment (a key `..` put into `/users/{key}`) would be resolved away and address
    // another resource: refuse it rather than send the request somewhere else.
    if path.split('/').any(super::is_dot_segment) {
        return Err(format!(
            "the path {:?} has a . or .. segment, which would address another resource",
            shorten(path)
        ));
    }
    let prefix = base.path().trim_end_matches('/');
    let full = if path.is_empty() {
        base.path().to_owned()
    } else {
        let path = if path.starts_with('/') {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("/{path}"))
        };
        let already_prefixed = !prefix.is_empty()
            && (path.as_ref() == prefix || path.starts_with(&format!("{prefix}/")));
        if already_prefixed {
            path.into_owned()
        } else {
            format!("{prefix}{path}")
        }
    };
    let mut url = base.clone();
    url.set_path(&full);
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_keeping_the_prefix() {
        let base = Url::parse("https://api.getguru.com/api/v1").unwrap();
        let slash = Url::parse("https://api.getguru.com/api/v1/").unwrap();
        let bare = Url::parse("https://api.userflow.com").unwrap();
        for (b, input, want) in [
            (&base, "/members", "https://api.getguru.com/api/v1/members"),
            (&base, "members", "https://api.getguru.com/api/v1/members"),
            (&slash, "/members", "https://api.getguru.com/api/v1/members"),
            (
                &base,
                "/members?token=a%20b",
                "https://api.getguru.com/api/v1/members?token=a%20b",
            ),
            (
                &base,
                "/api/v1/members?token=x",
                "https://api.getguru.com/api/v1/members?token=x",
            ),
            (
                &base,
                "/api/v10/x",
                "https://api.getguru.com/api/v1/api/v10/x",
            ),
            (&base, "", "https://api.getguru.com/api/v1"),
            (
                &base,
                "/members#frag",
                "https://api.getguru.com/api/v1/members",
            ),
            (
                &base,
                "https://api.getguru.com/api/v1/members?token=t",
                "https://api.getguru.com/api/v1/members?token=t",
            ),
            (
                &bare,
                "/users?limit=1&starting_after=u9",
                "https://api.userflow.com/users?limit=1&starting_after=u9",
            ),
            (
                &bare,
                "/v1/background_jobs/bulk:jobs:NX-1",
                "https://api.userflow.com/v1/background_jobs/bulk:jobs:NX-1",
            ),
            (&bare, "bulk:jobs:1", "https://api.userflow.com/bulk:jobs:1"),
        ] {
            assert_eq!(resolve(b, input).unwrap().as_str(), want, "{b} + {input}");
        }
    }

    #[test]
    fn refuses_other_origins_and_credentials() {
        let base = Url::parse("https://api.getguru.com/api/v1").unwrap();
        for input in [
            "https://evil.example.com/api/v1/members",
            "http://api.getguru.com/api/v1/members",
            "https://api.getguru.com:8443/api/v1/members",
            "//evil.example.com/x",
            "https://u:p@api.getguru.com/api/v1/members",
        ] {
            assert!(resolve(&base, input).is_err(), "{input}");
        }
    }

    #[test]
    fn refuses_dot_segments_that_would_address_another_resource() {
        let base = Url::parse("https://api.userflow.com").unwrap();
        for input in [
            "/users/..",
            "/users/.",
            "/users/%2e%2e",
            "/users/.%2E/x",
            "/groups/../members",
            "/v2/accounts/1/users/../profile?x=1",
        ] {
            let err = resolve(&base, input).unwrap_err();
            assert!(err.contains(". or .. segment"), "{input}: {err}");
        }
        // Dots inside a segment, or an encoded slash around them, are one segment.
        for input in [
            "/users/...",
            "/users/a.b",
            "/users/a%2F..%2Fb",
            "/users/x?q=..",
        ] {
            assert!(resolve(&base, input).is_ok(), "{input}");
        }
    }
}
