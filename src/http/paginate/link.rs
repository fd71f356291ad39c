//! Next-page URLs in `Link` headers (RFC 8288), read leniently as Guru's clients do: the text
//! between `<` and `>` (trimmed, spaces inside tolerated), `rel="next-page"` preferred, then
//! `rel="next"`, then a link with no `rel` at all; other rels (`prev`, `first`, `last`) are ignored.
//! Several links in one header or several headers both work; garbage yields `None`, never a panic.

use reqwest::header::{HeaderMap, LINK};
use url::Url;

/// One link of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The target as written (trimmed), possibly relative.
    pub target: String,
    /// The `rel` values, lowercased; empty when there was no `rel`.
    pub rels: Vec<String>,
}

/// Every link in one header value.
pub fn parse(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    if !rest.contains('<') {
        // No angle brackets at all: a bare URL, possibly followed by parameters.
        let (target, params) = rest.split_once(';').unwrap_or((rest, ""));
        let target = target.trim().trim_matches(',').trim();
        if !target.is_empty() && !target.contains(char::is_whitespace) {
            links.push(Link {
                target: target.to_owned(),
                rels: rels(params),
            });
        }
        return links;
    }
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = after[..close].trim();
        let tail = &after[close + 1..];
        let params_end = tail.find('<').unwrap_or(tail.len());
        let params = &tail[..params_end];
        if !target.is_empty() && !target.contains('<') {
            links.push(Link {
                target: target.to_owned(),
                rels: rels(params),
            });
        }
        rest = &tail[params_end..];
    }
    links
}

/// The `rel` values in a link's parameter text.
fn rels(params: &str) -> Vec<String> {
    for param in params.split(';') {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("rel") {
            continue;
        }
        let value = value.trim().trim_end_matches(',').trim();
        let value = value.trim_matches('"').trim_matches('\'');
        return value
            .split_whitespace()
            .map(|r| r.trim_matches(',').to_ascii_lowercase())
            .collect();
    }
    Vec::new()
}

/// The next-page target among `links`: `next-page`, else `next`, else the first link without rel.
pub fn pick_next(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .find(|l| l.rels.iter().any(|r| r == "next-page"))
        .or_else(|| links.iter().find(|l| l.rels.iter().any(|r| r == "next")))
        .or_else(|| links.iter().find(|l| l.rels.is_empty()))
}

/// The next page from every `Link` header of a response, resolved against `base` (the URL that
/// was requested). Origin checks happen when the URL is requested through the client.
pub fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let links: Vec<Link> = headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse)
        .collect();
    let next = pick_next(&links)?;
    let url = base.join(&next.target).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// The `token` query parameter of a next-page URL (Guru's opaque page token).
pub fn token(url: &Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn base() -> Url {
        Url::parse("https://api.getguru.com/api/v1/members").unwrap()
    }

    fn next_of(values: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, HeaderValue::from_str(v).unwrap());
        }
        next_link(&h, &base()).map(|u| u.to_string())
    }

    #[test]
    fn table() {
        let g = "https://api.getguru.com/api/v1/members?token=XYZ";
        for (name, values, want) in [
            (
                "guru docs",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"next-page\""],
                Some(g),
            ),
            (
                "sdk fixture: spaces, no rel",
                vec!["< https://api.getguru.com/api/v1/members?token=XYZ >"],
                Some(g),
            ),
            (
                "rel next",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ>; rel=next"],
                Some(g),
            ),
            (
                "rel unquoted with spaces",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ> ;  rel = next-page "],
                Some(g),
            ),
            (
                "prev and next in one header",
                vec![
                    "<https://api.getguru.com/api/v1/members?token=P>; rel=\"prev\", <https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"next\"",
                ],
                Some(g),
            ),
            (
                "next-page beats next",
                vec![
                    "<https://api.getguru.com/api/v1/members?token=N>; rel=\"next\", <https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"next-page\"",
                ],
                Some(g),
            ),
            (
                "two headers",
                vec![
                    "<https://api.getguru.com/api/v1/members?token=F>; rel=\"first\"",
                    "<https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"next-page\"",
                ],
                Some(g),
            ),
            (
                "multiple rels",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"last next\""],
                Some(g),
            ),
            (
                "relative target",
                vec!["</api/v1/members?token=XYZ>; rel=\"next-page\""],
                Some(g),
            ),
            (
                "bare url",
                vec!["https://api.getguru.com/api/v1/members?token=XYZ"],
                Some(g),
            ),
            (
                "rel case",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ>; REL=\"Next-Page\""],
                Some(g),
            ),
            (
                "only prev",
                vec!["<https://api.getguru.com/api/v1/members?token=P>; rel=\"prev\""],
                None,
            ),
            ("empty", vec![""], None),
            ("empty brackets", vec!["<>; rel=\"next\""], None),
            (
                "unclosed",
                vec!["<https://api.getguru.com/api/v1/members?token=XYZ; rel=next"],
                None,
            ),
            ("garbage", vec![";;;,,,<<<>>>"], None),
            (
                "non-http scheme",
                vec!["<javascript:alert(1)>; rel=next"],
                None,
            ),
            (
                "commas inside the url",
                vec!["<https://api.getguru.com/api/v1/members?token=a,b>; rel=\"next\""],
                Some("https://api.getguru.com/api/v1/members?token=a,b"),
            ),
        ] {
            assert_eq!(next_of(&values).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(
            token(&Url::parse("https://x/api/v1/members?token=a%2Bb").unwrap()).as_deref(),
            Some("a+b")
        );
        assert_eq!(
            token(&Url::parse("https://x/api/v1/members?x=1").unwrap()),
            None
        );
        assert_eq!(
            token(&Url::parse("https://x/api/v1/members?token=").unwrap()),
            None
        );
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let samples = [
            "<",
            ">",
            "<>",
            "><",
            "<a>;rel",
            "<a>;rel=",
            "<a>;=",
            "<a>; rel=\"",
            "\u{1F600}<\u{1F600}>;rel=\u{1F600}",
            "<a><b><c>",
            ";rel=next",
        ];
        for s in samples {
            let _ = parse(s);
            let _ = pick_next(&parse(s));
        }
        // Every prefix of a valid header.
        let full =
            "<https://api.getguru.com/api/v1/members?token=XYZ>; rel=\"next-page\", <x>; rel=prev";
        for i in 0..=full.len() {
            if full.is_char_boundary(i) {
                let _ = parse(&full[..i]);
            }
        }
    }
}
