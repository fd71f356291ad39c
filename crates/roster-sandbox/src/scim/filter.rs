//! SCIM filters (RFC 7644 §3.4.2.2): parsing and evaluation over stored JSON resources.
//!
//! Supported: `eq ne co sw ew gt ge lt le pr`, `and`/`or`/`not`, parentheses, value paths
//! (`emails[type eq "work"]`), dotted sub-attributes (`emails.value`, `name.givenName`) and
//! extension URNs. Attribute names are case-insensitive; string values compare
//! case-insensitively except `id` and `externalId`, which are caseExact (RFC 7643 §3.1, §7).

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// The core User/Group schema URNs: a path qualified with one of them means the bare attribute.
const CORE_URNS: [&str; 2] = [
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare(Vec<String>, Op, Value),
    Present(Vec<String>),
    /// `attr[filter]`: some element of the multi-valued `attr` matches.
    ValuePath(Vec<String>, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Word(String),
    Str(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated string in filter".into());
                }
                i += 1;
                let raw: String = chars[start..i].iter().collect();
                let v: String = serde_json::from_str(&raw)
                    .map_err(|e| format!("bad string {raw} in filter: {e}"))?;
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()[]\"".contains(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

/// Splits an attribute path into segments: `name.givenName` → [name, givenName];
/// `urn:…:enterprise:2.0:User:manager.value` → [urn:…:User, manager, value]; a core-schema URN
/// prefix is dropped.
pub(crate) fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty attribute path".into());
    }
    if path.len() > 4 && path[..4].eq_ignore_ascii_case("urn:") {
        let Some(pos) = path.rfind(':') else {
            return Err(format!("bad attribute path '{path}'"));
        };
        let (urn, rest) = (&path[..pos], &path[pos + 1..]);
        let mut segs: Vec<String> = Vec::new();
        if !CORE_URNS.iter().any(|c| c.eq_ignore_ascii_case(urn)) {
            segs.push(urn.to_owned());
        }
        segs.extend(rest.split('.').map(str::to_owned));
        if segs.iter().any(String::is_empty) {
            return Err(format!("bad attribute path '{path}'"));
        }
        return Ok(segs);
    }
    let segs: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segs.iter().any(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    }) {
        return Err(format!("bad attribute path '{path}'"));
    }
    Ok(segs)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }
    fn expect(&mut self, t: &Tok) -> Result<(), String> {
        match self.next() {
            Some(ref x) if x == t => Ok(()),
            other => Err(format!("expected {t:?} in filter, found {other:?}")),
        }
    }
    fn or(&mut self) -> Result<Filter, String> {
        let mut l = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            let r = self.and()?;
            l = Filter::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Filter, String> {
        let mut l = self.not()?;
        while self.peek_word("and") {
            self.pos += 1;
            let r = self.not()?;
            l = Filter::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Filter, String> {
        if self.peek_word("not") {
            self.pos += 1;
            self.expect(&Tok::LParen)?;
            let e = self.or()?;
            self.expect(&Tok::RParen)?;
            return Ok(Filter::Not(Box::new(e)));
        }
        self.atom()
    }
    fn atom(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Word(attr)) => {
                let path = split_path(&attr)?;
                if self.peek() == Some(&Tok::LBracket) {
                    self.pos += 1;
                    let inner = self.or()?;
                    self.expect(&Tok::RBracket)?;
                    return Ok(Filter::ValuePath(path, Box::new(inner)));
                }
                let op = match self.next() {
                    Some(Tok::Word(op)) => op.to_ascii_lowercase(),
                    other => {
                        return Err(format!(
                            "expected an operator after {attr}, found {other:?}"
                        ));
                    }
                };
                if op == "pr" {
                    return Ok(Filter::Present(path));
                }
                let op = match op.as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "co" => Op::Co,
                    "sw" => Op::Sw,
                    "ew" => Op::Ew,
                    "gt" => Op::Gt,
                    "ge" => Op::Ge,
                    "lt" => Op::Lt,
                    "le" => Op::Le,
                    other => return Err(format!("unknown filter operator '{other}'")),
                };
                let value = match self.next() {
                    Some(Tok::Str(s)) => Value::String(s),
                    Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        "null" => Value::Null,
                        _ => serde_json::from_str::<serde_json::Number>(&w)
                            .map(Value::Number)
                            .map_err(|_| format!("bad comparison value '{w}' in filter"))?,
                    },
                    other => return Err(format!("expected a value after {op:?}, found {other:?}")),
                };
                Ok(Filter::Compare(path, op, value))
            }
            other => Err(format!("unexpected {other:?} in filter")),
        }
    }
}

/// Parses a whole filter expression.
pub(crate) fn parse(s: &str) -> Result<Filter, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected trailing input in filter '{s}'"));
    }
    Ok(f)
}

/// A key of `obj` equal to `name` ignoring case.
pub(crate) fn find_key<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a String> {
    obj.keys().find(|k| k.eq_ignore_ascii_case(name))
}

/// Every value at `path` under `v`, arrays flattened.
pub(crate) fn resolve<'a>(v: &'a Value, path: &[String]) -> Vec<&'a Value> {
    let mut cur: Vec<&Value> = vec![v];
    for seg in path {
        let mut next = Vec::new();
        for c in cur {
            let items: Vec<&Value> = match c {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for it in items {
                if let Value::Object(o) = it
                    && let Some(k) = find_key(o, seg)
                {
                    next.push(&o[k]);
                }
            }
        }
        cur = next;
    }
    cur.into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .collect()
}

fn case_exact(path: &[String]) -> bool {
    path.len() == 1
        && (path[0].eq_ignore_ascii_case("id") || path[0].eq_ignore_ascii_case("externalId"))
        || path.last().is_some_and(|s| s == "$ref")
}

fn is_instant(s: &str) -> bool {
    s.len() >= 20 && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn compare(have: &Value, op: Op, want: &Value, exact: bool) -> bool {
    match (have, want) {
        // dateTime attributes compare as instants (RFC 7644 §3.4.2.2), whatever the precision.
        (Value::String(h), Value::String(w))
            if !matches!(op, Op::Co | Op::Sw | Op::Ew) && is_instant(h) && is_instant(w) =>
        {
            let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            ord_matches(at(h).cmp(&at(w)), op)
        }
        (Value::String(h), Value::String(w)) => {
            let (h, w) = if exact {
                (h.clone(), w.clone())
            } else {
                (h.to_lowercase(), w.to_lowercase())
            };
            match op {
                Op::Eq => h == w,
                Op::Ne => h != w,
                Op::Co => h.contains(&w),
                Op::Sw => h.starts_with(&w),
                Op::Ew => h.ends_with(&w),
                Op::Gt => h > w,
                Op::Ge => h >= w,
                Op::Lt => h < w,
                Op::Le => h <= w,
            }
        }
        (Value::Number(h), Value::Number(w)) => {
            let (h, w) = (h.as_f64().unwrap_or(0.0), w.as_f64().unwrap_or(0.0));
            let ord = h.partial_cmp(&w).unwrap_or(Ordering::Equal);
            ord_matches(ord, op)
        }
        (Value::Bool(h), Value::Bool(w)) => match op {
            Op::Eq => h == w,
            Op::Ne => h != w,
            _ => false,
        },
        // Stored "True"/"False" strings (Entra-style input) still match a boolean filter.
        (Value::String(h), Value::Bool(w)) => {
            let eq = h.eq_ignore_ascii_case(if *w { "true" } else { "false" });
            match op {
                Op::Eq => eq,
                Op::Ne => !eq,
                _ => false,
            }
        }
        _ => false,
    }
}

fn ord_matches(ord: Ordering, op: Op) -> bool {
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

/// Does `v` match `f`?
pub(crate) fn matches(f: &Filter, v: &Value) -> bool {
    eval(f, &|p: &[String]| resolve(v, p))
}

/// Does `f` read the resource's `meta` (`meta.created`, `meta.lastModified`, ...)?
pub(crate) fn mentions_meta(f: &Filter) -> bool {
    let meta = |p: &[String]| p.first().is_some_and(|a| a.eq_ignore_ascii_case("meta"));
    match f {
        Filter::And(a, b) | Filter::Or(a, b) => mentions_meta(a) || mentions_meta(b),
        Filter::Not(a) => mentions_meta(a),
        Filter::Compare(p, _, _) | Filter::Present(p) => meta(p),
        Filter::ValuePath(p, inner) => meta(p) || mentions_meta(inner),
    }
}

/// Does the stored resource `o` match `f`? (No copy of the resource is made.)
pub(crate) fn matches_obj(f: &Filter, o: &Map<String, Value>) -> bool {
    eval(f, &|p: &[String]| match p.split_first() {
        Some((first, rest)) => find_key(o, first).map_or_else(Vec::new, |k| resolve(&o[k], rest)),
        None => Vec::new(),
    })
}

/// Does the stored resource `o`, whose `meta` the server keeps apart, match `f`? So
/// `meta.lastModified gt "…"` (an incremental read) and `meta.created` filter as RFC 7644 says.
pub(crate) fn matches_with_meta(f: &Filter, o: &Map<String, Value>, meta: &Value) -> bool {
    eval(f, &|p: &[String]| match p.split_first() {
        Some((first, rest)) if first.eq_ignore_ascii_case("meta") => resolve(meta, rest),
        Some((first, rest)) => find_key(o, first).map_or_else(Vec::new, |k| resolve(&o[k], rest)),
        None => Vec::new(),
    })
}

/// The `userName` a filter pins down exactly (`userName eq "…"`), for an index lookup.
pub(crate) fn user_name_eq(f: &Filter) -> Option<&str> {
    match f {
        Filter::Compare(p, Op::Eq, Value::String(s))
            if p.len() == 1 && p[0].eq_ignore_ascii_case("userName") =>
        {
            Some(s)
        }
        _ => None,
    }
}

fn eval<'a>(f: &Filter, get: &dyn Fn(&[String]) -> Vec<&'a Value>) -> bool {
    match f {
        Filter::And(a, b) => eval(a, get) && eval(b, get),
        Filter::Or(a, b) => eval(a, get) || eval(b, get),
        Filter::Not(a) => !eval(a, get),
        Filter::Present(p) => get(p)
            .iter()
            .any(|x| !x.is_null() && x.as_str() != Some("")),
        Filter::Compare(p, op, want) => {
            let have = get(p);
            if want.is_null() {
                return match op {
                    Op::Eq => have.iter().all(|x| x.is_null()),
                    Op::Ne => have.iter().any(|x| !x.is_null()),
                    _ => false,
                };
            }
            let exact = case_exact(p);
            if *op == Op::Ne {
                return !have.iter().any(|h| compare(h, Op::Eq, want, exact));
            }
            have.iter().any(|h| compare(h, *op, want, exact))
        }
        Filter::ValuePath(p, inner) => get(p).iter().any(|el| matches(inner, el)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "userName": "Alice@Example.com", "externalId": "okta-00u1", "active": true,
            "name": {"givenName": "Alice"},
            "emails": [{"value": "alice@work.example", "type": "work"}, {"value": "a@home.example", "type": "home"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}
        })
    }

    fn m(f: &str) -> bool {
        let f = parse(f).unwrap();
        let u = user();
        let by_value = matches(&f, &u);
        assert_eq!(by_value, matches_obj(&f, u.as_object().unwrap()));
        by_value
    }

    #[test]
    fn eq_case_rules() {
        assert!(m(r#"userName eq "alice@example.com""#));
        assert!(m(r#"USERNAME EQ "ALICE@EXAMPLE.COM""#));
        assert!(m(r#"externalId eq "okta-00u1""#));
        assert!(!m(r#"externalId eq "OKTA-00U1""#));
        assert!(m(r#"emails.value eq "A@HOME.example""#));
        assert!(m(r#"emails[type eq "work" and value co "work"]"#));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Eng""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "alice""#
        ));
        assert!(m(r#"active eq true and not (name.givenName eq "Bob")"#));
        assert!(m(r#"title pr or userName ew ".com""#));
        assert!(!m(r#"title pr"#));
        assert_eq!(
            user_name_eq(&parse(r#"USERNAME eq "A@x""#).unwrap()),
            Some("A@x")
        );
        assert_eq!(user_name_eq(&parse(r#"userName co "A""#).unwrap()), None);
    }

    #[test]
    fn meta_filters_compare_instants() {
        let meta = json!({"created": "2026-01-01T00:00:00.000Z", "lastModified": "2026-03-01T10:00:00.250Z"});
        let f = |s: &str| matches_with_meta(&parse(s).unwrap(), user().as_object().unwrap(), &meta);
        assert!(f(r#"meta.lastModified gt "2026-03-01T10:00:00Z""#));
        assert!(f(r#"meta.lastModified gt "2026-03-01T11:00:00+02:00""#));
        assert!(!f(r#"meta.lastModified gt "2026-03-01T10:00:00.250Z""#));
        assert!(f(
            r#"meta.lastModified ge "2026-03-01T10:00:00.25Z" and userName sw "alice""#
        ));
        assert!(!f(r#"meta.created gt "2026-01-01T00:00:00Z""#));
    }

    #[test]
    fn escapes_and_errors() {
        let v = json!({"userName": "o\"brien\\x"});
        assert!(matches(&parse(r#"userName eq "o\"brien\\x""#).unwrap(), &v));
        assert!(parse("userName eq").is_err());
        assert!(parse(r#"userName zz "a""#).is_err());
        assert!(parse(r#"(userName eq "a""#).is_err());
        assert!(parse(r#"userName eq "a" extra"#).is_err());
    }
}
