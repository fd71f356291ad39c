//! Users pages in Userflow's usual shape, decoded borrowed and written straight as RECORD text.

use super::*;

/// A users page in the common shape.
#[derive(Deserialize)]
pub(super) struct FastPage<'a> {
    #[serde(borrow)]
    data: Vec<FastUser<'a>>,
}

/// A user in the common shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FastUser<'a> {
    #[serde(default, rename = "object")]
    _object: IgnoredAny,
    id: &'a str,
    #[serde(borrow)]
    attributes: Scalars<'a>,
    created_at: &'a str,
    updated_at: &'a str,
    #[serde(borrow, default)]
    memberships: Option<Vec<FastMembership<'a>>>,
    #[serde(default, rename = "groups")]
    _groups: IgnoredAny,
}

/// An expanded membership in the common shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FastMembership<'a> {
    #[serde(default, rename = "object")]
    _object: IgnoredAny,
    #[serde(borrow)]
    attributes: Scalars<'a>,
    #[serde(borrow, default)]
    created_at: Present<'a>,
    group_id: &'a str,
    user_id: &'a str,
    #[serde(default, rename = "group")]
    _group: IgnoredAny,
    #[serde(default, rename = "user")]
    _user: IgnoredAny,
}

/// A JSON scalar, strings borrowed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(&'a str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON scalar")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'a>, E> {
                serde_json::Number::from_f64(v)
                    .map(Scalar::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(v))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A scalar that may be missing (`null` is a value here, unlike with `Option`).
#[derive(Default)]
pub(super) enum Present<'a> {
    #[default]
    Absent,
    Is(Scalar<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Scalar::deserialize(deserializer).map(Present::Is)
    }
}

/// An object of scalars, in order, each key once (a repeated key falls back).
pub(super) struct Scalars<'a>(Vec<(&'a str, Scalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalars<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalars<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of scalars")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalars<'a>, A::Error> {
                let mut out: Vec<(&'a str, Scalar<'a>)> = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<&'a str>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom("a repeated key"));
                    }
                    out.push((key, map.next_value()?));
                }
                Ok(Scalars(out))
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

impl Scalars<'_> {
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == key)
    }
}

/// Appends a JSON string, escaped as serde_json escapes it.
pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's own escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends a scalar as JSON.
pub(super) fn put_scalar(out: &mut Vec<u8>, value: &Scalar<'_>) {
    match value {
        Scalar::Null => out.extend_from_slice(b"null"),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Scalar::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Scalar::Str(s) => put_str(out, s),
    }
}

/// Appends a standard string field's value: a string as is, a number or boolean as its text
/// (as `model::typed` makes them).
pub(super) fn put_string_field(out: &mut Vec<u8>, value: &Scalar<'_>) {
    match value {
        Scalar::Null | Scalar::Str(_) => put_scalar(out, value),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"\"true\"" } else { b"\"false\"" }),
        Scalar::Number(n) => put_str(out, &n.to_string()),
    }
}

/// An RFC 3339 date-time as `model::date_time` keeps it (trimmed), if it is one.
pub(super) fn rfc3339(s: &str) -> Option<&str> {
    let s = s.trim();
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|_| s)
}

/// A non-blank key, as `model::key_text` takes it.
pub(super) fn key(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// Renders a page in the common shape into `page`; `None` (and `page` untouched) when it is
/// not in that shape.
pub(super) fn fast_users_page(
    body: &[u8],
    fresh: &[bool],
    memberships: bool,
    page: &mut Page,
) -> Option<()> {
    let list: FastPage<'_> = serde_json::from_slice(body).ok()?;
    if list.data.len() != fresh.len() {
        return None;
    }
    let mut text: Vec<u8> = Vec::with_capacity(body.len());
    let mut records = Vec::with_capacity(list.data.len() * 2);
    let mut duplicates = 0;
    for (user, fresh) in list.data.iter().zip(fresh) {
        if !*fresh {
            duplicates += 1;
            continue;
        }
        let id = key(user.id)?;
        let start = text.len();
        text.extend_from_slice(b"{\"id\":");
        put_str(&mut text, id);
        for field in ["email", "name", "first_name", "last_name"] {
            if let Some((_, value)) = user.attributes.0.iter().find(|(k, _)| *k == field) {
                text.extend_from_slice(b",\"");
                text.extend_from_slice(field.as_bytes());
                text.extend_from_slice(b"\":");
                put_string_field(&mut text, value);
            }
        }
        text.extend_from_slice(b",\"created_at\":");
        put_str(&mut text, rfc3339(user.created_at)?);
        text.extend_from_slice(b",\"updated_at\":");
        put_str(&mut text, rfc3339(user.updated_at)?);
        text.extend_from_slice(b",\"attributes\":{");
        let mut first = true;
        for (name, value) in &user.attributes.0 {
            if ["email", "name", "first_name", "last_name"].contains(name) {
                continue;
            }
            if !first {
                text.push(b',');
            }
            first = false;
            put_str(&mut text, name);
            text.push(b':');
            put_scalar(&mut text, value);
        }
        text.extend_from_slice(b"}}");
        records.push(rendered(USERS, start, text.len()));
        if !memberships {
            continue;
        }
        render_memberships(&mut text, user, &mut records)?;
    }
    page.records = records;
    page.duplicates += duplicates;
    page.rendered = text;
    Some(())
}

/// A user's expanded memberships, rendered into the page's text after the user.
fn render_memberships(
    text: &mut Vec<u8>,
    user: &FastUser<'_>,
    records: &mut Vec<Emit>,
) -> Option<()> {
    for m in user.memberships.iter().flatten() {
        let group_id = key(m.group_id)?;
        let user_id = key(m.user_id)?;
        if m.attributes.has("created_at") {
            return None;
        }
        let start = text.len();
        text.extend_from_slice(b"{\"group_id\":");
        put_str(text, group_id);
        text.extend_from_slice(b",\"user_id\":");
        put_str(text, user_id);
        text.extend_from_slice(b",\"attributes\":{");
        let mut first = true;
        for (name, value) in &m.attributes.0 {
            if !first {
                text.push(b',');
            }
            first = false;
            put_str(text, name);
            text.push(b':');
            put_scalar(text, value);
        }
        if let Present::Is(created) = &m.created_at {
            if !first {
                text.push(b',');
            }
            text.extend_from_slice(b"\"created_at\":");
            put_scalar(text, created);
        }
        text.extend_from_slice(b"}}");
        records.push(rendered(MEMBERSHIPS, start, text.len()));
    }
    Some(())
}

/// A record rendered into the page's text at `start..end`.
pub(super) fn rendered(stream: &'static str, start: usize, end: usize) -> Emit {
    Emit {
        stream,
        record: Map::new(),
        rendered: Some(start..end),
    }
}
