//! SCIM PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove` on a copy of the resource.
//!
//! The caller applies every operation to a clone and keeps it only if all succeeded, so a
//! request is all-or-nothing. Lenient on input as real IdPs need: capitalised ops (Entra),
//! `"True"`/`"False"` for `active`, no-path add/replace with dotted or URN keys, and Entra's
//! legacy remove of members with a value list.

use serde_json::{Map, Value};

use super::filter::{self, Filter, find_key, split_path};

/// A failed operation: SCIM `scimType` and detail.
#[derive(Debug)]
pub(crate) struct PatchError {
    pub scim_type: &'static str,
    pub detail: String,
}

fn err(scim_type: &'static str, detail: impl Into<String>) -> PatchError {
    PatchError {
        scim_type,
        detail: detail.into(),
    }
}

/// `attr`, `attr.sub`, `urn:…:attr`, `attr[filter]`, `attr[filter].sub`.
#[derive(Debug)]
struct PatchPath {
    attr: Vec<String>,
    filter: Option<Filter>,
    sub: Option<String>,
}

fn parse_path(p: &str) -> Result<PatchPath, PatchError> {
    let p = p.trim();
    let inval = |e: String| err("invalidPath", e);
    if let Some(open) = p.find('[') {
        let close = p
            .rfind(']')
            .filter(|c| *c > open)
            .ok_or_else(|| err("invalidPath", format!("unbalanced '[' in path '{p}'")))?;
        let attr = split_path(&p[..open]).map_err(inval)?;
        let filter = filter::parse(&p[open + 1..close]).map_err(|e| err("invalidFilter", e))?;
        let rest = &p[close + 1..];
        let sub = match rest.strip_prefix('.') {
            Some(s) if !s.is_empty() => Some(s.to_owned()),
            None if rest.is_empty() => None,
            _ => return Err(err("invalidPath", format!("bad path '{p}'"))),
        };
        return Ok(PatchPath {
            attr,
            filter: Some(filter),
            sub,
        });
    }
    Ok(PatchPath {
        attr: split_path(p).map_err(inval)?,
        filter: None,
        sub: None,
    })
}

/// Attributes no client may write.
fn read_only(path: &PatchPath) -> bool {
    path.attr.len() == 1
        && ["id", "meta", "groups"]
            .iter()
            .any(|r| path.attr[0].eq_ignore_ascii_case(r))
}

/// Entra sends `"True"`/`"False"` for booleans.
fn coerce(attr: &[String], v: Value) -> Value {
    match (&v, attr.last()) {
        (Value::String(s), Some(a))
            if a.eq_ignore_ascii_case("active") || a.eq_ignore_ascii_case("primary") =>
        {
            match s.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => v,
            }
        }
        _ => v,
    }
}

/// The object holding the last segment, created on the way for add/replace.
fn container<'a>(
    root: &'a mut Map<String, Value>,
    attr: &[String],
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, PatchError> {
    let mut cur = root;
    for seg in &attr[..attr.len().saturating_sub(1)] {
        let key = match find_key(cur, seg) {
            Some(k) => k.clone(),
            None if create => {
                cur.insert(seg.clone(), Value::Object(Map::new()));
                seg.clone()
            }
            None => return Ok(None),
        };
        let reset = match cur.get(&key) {
            Some(Value::Object(_)) => false,
            Some(Value::Null) if create => true,
            _ => {
                return Err(err(
                    "invalidPath",
                    format!("'{seg}' is not a complex attribute"),
                ));
            }
        };
        if reset {
            cur.insert(key.clone(), Value::Object(Map::new()));
        }
        match cur.get_mut(&key) {
            Some(Value::Object(o)) => cur = o,
            _ => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn last_key(obj: &Map<String, Value>, name: &str) -> String {
    find_key(obj, name)
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

/// Equality for multi-valued elements: by `value` when both have one (members, emails).
fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Applies one operation to `res`.
pub(crate) fn apply_op(
    res: &mut Map<String, Value>,
    op: &str,
    path: Option<&str>,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let op = op.to_ascii_lowercase();
    match (op.as_str(), path) {
        ("add" | "replace", None | Some("")) => {
            let Some(Value::Object(obj)) = value else {
                return Err(err(
                    "invalidValue",
                    format!("{op} without a path needs an object value"),
                ));
            };
            for (k, v) in obj {
                let is_ext = k.len() > 4 && k[..4].eq_ignore_ascii_case("urn:") && v.is_object();
                if is_ext
                    && !k
                        .to_ascii_lowercase()
                        .starts_with("urn:ietf:params:scim:schemas:core:")
                {
                    // A whole extension object: apply its members one by one.
                    if let Value::Object(inner) = v {
                        for (ik, iv) in inner {
                            apply_op(res, &op, Some(&format!("{k}:{ik}")), Some(iv))?;
                        }
                    }
                    continue;
                }
                apply_op(res, &op, Some(&k), Some(v))?;
            }
            Ok(())
        }
        ("remove", None | Some("")) => Err(err("noTarget", "remove needs a path")),
        ("add" | "replace" | "remove", Some(p)) => {
            let path = parse_path(p)?;
            if read_only(&path) {
                return Err(err(
                    "mutability",
                    format!("'{}' is read-only", path.attr.join(".")),
                ));
            }
            match op.as_str() {
                "add" => add(res, &path, value),
                "replace" => replace(res, &path, value),
                _ => remove(res, &path, value),
            }
        }
        _ => Err(err(
            "invalidSyntax",
            format!("unknown op '{op}': expected add, replace or remove"),
        )),
    }
}

fn need_value(value: Option<Value>, op: &str) -> Result<Value, PatchError> {
    value.ok_or_else(|| err("invalidValue", format!("{op} needs a value")))
}

fn add(
    res: &mut Map<String, Value>,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let value = coerce(&path.attr, need_value(value, "add")?);
    let c = container(res, &path.attr, true)?.ok_or_else(|| err("invalidPath", "no target"))?;
    let key = last_key(c, path.attr.last().map_or("", String::as_str));
    if let Some(f) = &path.filter {
        return with_matches(c, &key, f, path.sub.as_deref(), Some(value), true);
    }
    match (c.get_mut(&key), value) {
        (Some(Value::Array(have)), Value::Array(new)) => {
            for v in new {
                if !have.iter().any(|h| same_element(h, &v)) {
                    have.push(v);
                }
            }
        }
        (Some(Value::Array(have)), v) => {
            if !have.iter().any(|h| same_element(h, &v)) {
                have.push(v);
            }
        }
        (Some(Value::Object(have)), Value::Object(new)) => {
            have.extend(new);
        }
        (_, v) => {
            c.insert(key, v);
        }
    }
    Ok(())
}

fn replace(
    res: &mut Map<String, Value>,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let value = coerce(&path.attr, need_value(value, "replace")?);
    let c = container(res, &path.attr, true)?.ok_or_else(|| err("invalidPath", "no target"))?;
    let key = last_key(c, path.attr.last().map_or("", String::as_str));
    if let Some(f) = &path.filter {
        return with_matches(c, &key, f, path.sub.as_deref(), Some(value), false);
    }
    c.insert(key, value);
    Ok(())
}

fn remove(
    res: &mut Map<String, Value>,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let Some(c) = container(res, &path.attr, false)? else {
        return Ok(());
    };
    let key = last_key(c, path.attr.last().map_or("", String::as_str));
    if let Some(f) = &path.filter {
        let Some(Value::Array(items)) = c.get_mut(&key) else {
            return Ok(());
        };
        match &path.sub {
            None => items.retain(|el| !filter::matches(f, el)),
            Some(sub) => {
                for el in items.iter_mut().filter(|el| filter::matches(f, el)) {
                    if let Value::Object(o) = el {
                        let k = last_key(o, sub);
                        o.remove(&k);
                    }
                }
            }
        }
        return Ok(());
    }
    match value {
        None => {
            c.remove(&key);
            Ok(())
        }
        // Entra's legacy form: {"op":"Remove","path":"members","value":[{"value":"id"}]}.
        Some(Value::Array(gone)) => {
            if let Some(Value::Array(items)) = c.get_mut(&key) {
                items.retain(|el| !gone.iter().any(|g| same_element(el, g)));
            }
            Ok(())
        }
        Some(_) => Err(err(
            "invalidValue",
            "a remove operation carries no value (except a list of values to remove)",
        )),
    }
}

/// add/replace on `attr[filter]` or `attr[filter].sub`.
fn with_matches(
    c: &mut Map<String, Value>,
    key: &str,
    f: &Filter,
    sub: Option<&str>,
    value: Option<Value>,
    create: bool,
) -> Result<(), PatchError> {
    let value = value.unwrap_or(Value::Null);
    let items = match c.get_mut(key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("invalidPath", format!("'{key}' is not multi-valued"))),
        None if create => {
            c.insert(key.to_owned(), Value::Array(Vec::new()));
            match c.get_mut(key) {
                Some(Value::Array(a)) => a,
                _ => return Err(err("invalidPath", "no target")),
            }
        }
        None => {
            return Err(err(
                "noTarget",
                format!("no '{key}' value matches the filter"),
            ));
        }
    };
    let mut hit = false;
    for el in items.iter_mut().filter(|el| filter::matches(f, el)) {
        hit = true;
        match (sub, el) {
            (Some(s), Value::Object(o)) => {
                let k = last_key(o, s);
                o.insert(k, value.clone());
            }
            (None, Value::Object(o)) if create => {
                if let Value::Object(new) = &value {
                    o.extend(new.clone());
                }
            }
            (None, el) => *el = value.clone(),
            _ => {}
        }
    }
    if !hit {
        // Entra adds `emails[type eq "work"].value` before any work email exists.
        if let (true, Some(s), Filter::Compare(p, filter::Op::Eq, want)) = (create, sub, f)
            && p.len() == 1
        {
            let mut o = Map::new();
            o.insert(p[0].clone(), want.clone());
            o.insert(s.to_owned(), value);
            items.push(Value::Object(o));
            return Ok(());
        }
        return Err(err(
            "noTarget",
            format!("no '{key}' value matches the filter"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn members_add_remove_replace() {
        let mut g = obj(json!({"displayName": "Eng", "members": [{"value": "u1"}]}));
        apply_op(
            &mut g,
            "add",
            Some("members"),
            Some(json!([{"value": "u2"}, {"value": "u1"}])),
        )
        .unwrap();
        assert_eq!(g["members"], json!([{"value": "u1"}, {"value": "u2"}]));
        apply_op(&mut g, "remove", Some(r#"members[value eq "u1"]"#), None).unwrap();
        assert_eq!(g["members"], json!([{"value": "u2"}]));
        apply_op(
            &mut g,
            "Remove",
            Some("members"),
            Some(json!([{"value": "u2"}])),
        )
        .unwrap();
        assert_eq!(g["members"], json!([]));
        apply_op(
            &mut g,
            "replace",
            Some("members"),
            Some(json!([{"value": "u3"}])),
        )
        .unwrap();
        assert_eq!(g["members"], json!([{"value": "u3"}]));
        apply_op(
            &mut g,
            "replace",
            None,
            Some(json!({"displayName": "Platform"})),
        )
        .unwrap();
        assert_eq!(g["displayName"], json!("Platform"));
    }

    #[test]
    fn user_paths() {
        let mut u = obj(
            json!({"userName": "a", "active": true, "emails": [{"value": "a@x", "type": "home"}]}),
        );
        apply_op(&mut u, "Replace", Some("active"), Some(json!("False"))).unwrap();
        assert_eq!(u["active"], json!(false));
        apply_op(
            &mut u,
            "add",
            Some(r#"emails[type eq "work"].value"#),
            Some(json!("a@work")),
        )
        .unwrap();
        assert_eq!(u["emails"][1], json!({"type": "work", "value": "a@work"}));
        apply_op(
            &mut u,
            "replace",
            Some(r#"emails[type eq "home"].value"#),
            Some(json!("b@x")),
        )
        .unwrap();
        assert_eq!(u["emails"][0]["value"], json!("b@x"));
        let e = apply_op(
            &mut u,
            "replace",
            Some(r#"emails[type eq "other"].value"#),
            Some(json!("c")),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, "noTarget");
        apply_op(&mut u, "add", Some("name.givenName"), Some(json!("Ann"))).unwrap();
        assert_eq!(u["name"], json!({"givenName": "Ann"}));
        apply_op(
            &mut u,
            "replace",
            None,
            Some(json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}, "name.familyName": "B"})),
        )
        .unwrap();
        assert_eq!(
            u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            json!("Eng")
        );
        assert_eq!(u["name"]["familyName"], json!("B"));
        assert_eq!(
            apply_op(&mut u, "replace", Some("id"), Some(json!("x")))
                .unwrap_err()
                .scim_type,
            "mutability"
        );
        assert_eq!(
            apply_op(&mut u, "remove", Some("active"), Some(json!(true)))
                .unwrap_err()
                .scim_type,
            "invalidValue"
        );
        assert_eq!(
            apply_op(&mut u, "remove", None, None)
                .unwrap_err()
                .scim_type,
            "noTarget"
        );
        assert_eq!(
            apply_op(&mut u, "move", Some("a"), None)
                .unwrap_err()
                .scim_type,
            "invalidSyntax"
        );
        apply_op(&mut u, "remove", Some("emails"), None).unwrap();
        assert!(!u.contains_key("emails"));
    }
}
