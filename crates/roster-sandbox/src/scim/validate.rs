//! The rules a SCIM body must meet before it is stored (RFC 7643): `schemas`, `userName`
//! uniqueness, `active`, group members that are existing users, and the shapes of `name` and
//! `emails`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::ENTERPRISE;
use super::filter::find_key;
use super::store::{Kind, Store, user_name_key};
use crate::util;

/// RFC 7643 §3: `schemas` is required, holds the resource's core schema, and names every
/// schema the body uses (an extension's attributes need its URN listed); nothing is added for
/// a client that left it out.
pub(super) fn check_schemas(k: Kind, body: &Map<String, Value>) -> Result<(), String> {
    let Some(key) = find_key(body, "schemas") else {
        return Err(format!(
            "schemas is required (RFC 7643 §3) and must contain {}",
            k.schema()
        ));
    };
    let Value::Array(list) = &body[key] else {
        return Err("schemas must be an array of schema URIs".into());
    };
    let mut urns = Vec::new();
    for u in list {
        let Some(u) = u.as_str() else {
            return Err("schemas must be an array of schema URIs".into());
        };
        let known = u.eq_ignore_ascii_case(k.schema())
            || (k == Kind::User && u.eq_ignore_ascii_case(ENTERPRISE));
        if !known {
            return Err(format!(
                "schemas names {u:?}, which is not a schema of {}",
                k.resource_type()
            ));
        }
        urns.push(u.to_ascii_lowercase());
    }
    if !urns.contains(&k.schema().to_ascii_lowercase()) {
        return Err(format!("schemas must contain {}", k.schema()));
    }
    if k == Kind::User
        && find_key(body, ENTERPRISE).is_some()
        && !urns.contains(&ENTERPRISE.to_ascii_lowercase())
    {
        return Err(format!(
            "the body has {ENTERPRISE} attributes, so schemas must list {ENTERPRISE}"
        ));
    }
    Ok(())
}

/// RFC 7643 §4.1: `name` is a complex attribute of strings, `emails` a multi-valued complex
/// attribute (an array of objects with a string `value` and `type`, a boolean `primary`, and
/// at most one primary).
pub(super) fn check_user_shapes(body: &Map<String, Value>) -> Result<(), String> {
    if let Some(key) = find_key(body, "name") {
        match &body[key] {
            Value::Null => {}
            Value::Object(name) => {
                for (sub, v) in name {
                    if !matches!(v, Value::String(_) | Value::Null) {
                        return Err(format!(
                            "name.{sub} must be a string, got {}",
                            util::type_name(v)
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "name must be an object (givenName, familyName, ...), got {}",
                    util::type_name(other)
                ));
            }
        }
    }
    if let Some(key) = find_key(body, "emails") {
        let emails = match &body[key] {
            Value::Null => return Ok(()),
            Value::Array(a) => a,
            other => {
                return Err(format!(
                    "emails must be an array of objects with a value, got {}",
                    util::type_name(other)
                ));
            }
        };
        let mut primaries = 0;
        for (i, e) in emails.iter().enumerate() {
            let Value::Object(e) = e else {
                return Err(format!(
                    "emails[{i}] must be an object with a value, got {}",
                    util::type_name(e)
                ));
            };
            for (sub, v) in e {
                let ok = match sub.to_ascii_lowercase().as_str() {
                    "value" | "type" | "display" => matches!(v, Value::String(_)),
                    "primary" => matches!(v, Value::Bool(_)),
                    _ => true,
                };
                if !ok {
                    return Err(format!(
                        "emails[{i}].{sub} has the wrong type ({})",
                        util::type_name(v)
                    ));
                }
            }
            let value = find_key(e, "value").and_then(|k| e[k].as_str());
            if value.is_none_or(str::is_empty) {
                return Err(format!("emails[{i}] needs a non-empty string value"));
            }
            if find_key(e, "primary").is_some_and(|k| e[k] == json!(true)) {
                primaries += 1;
            }
        }
        if primaries > 1 {
            return Err("at most one of emails may be primary (RFC 7643 §2.4)".into());
        }
    }
    Ok(())
}

/// Why a body cannot be stored: the status, the `scimType` and the detail.
pub(super) type Refusal = (StatusCode, &'static str, String);

fn bad(scim_type: &'static str, detail: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, scim_type, detail.into())
}

impl Store {
    /// Checks and normalises a body about to be stored; `except` is the resource's own id.
    pub(super) fn validate(
        &self,
        k: Kind,
        body: &mut Map<String, Value>,
        except: Option<&str>,
    ) -> Result<(), Refusal> {
        match k {
            Kind::User => self.check_user(body, except)?,
            Kind::Group => self.check_group(body)?,
        }
        for ro in ["id", "meta"] {
            if let Some(k) = find_key(body, ro).cloned() {
                body.remove(&k);
            }
        }
        check_schemas(k, body).map_err(|d| bad("invalidSyntax", d))?;
        if k == Kind::User {
            check_user_shapes(body).map_err(|d| bad("invalidValue", d))?;
        }
        Ok(())
    }

    /// A user needs a `userName` no other user has (case-insensitive); `active` given as
    /// `"True"`/`"False"` becomes a boolean.
    fn check_user(
        &self,
        body: &mut Map<String, Value>,
        except: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(name) = user_name_key(body).filter(|n| !n.trim().is_empty()) else {
            return Err(bad(
                "invalidValue",
                "userName is required and must be a non-empty string",
            ));
        };
        if let Some(other) = self.user_names.get(&name)
            && Some(other.as_str()) != except
        {
            return Err((
                StatusCode::CONFLICT,
                "uniqueness",
                format!("userName '{name}' is already taken by user {other}"),
            ));
        }
        if let Some(key) = find_key(body, "active").cloned() {
            let v = body[&key].clone();
            body[&key] = match v {
                Value::Bool(_) | Value::Null => v,
                Value::String(s) if s.eq_ignore_ascii_case("true") => json!(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => json!(false),
                other => {
                    return Err(bad(
                        "invalidValue",
                        format!("active must be a boolean, got {}", util::type_name(&other)),
                    ));
                }
            };
        }
        Ok(())
    }

    /// A group needs a `displayName`; its members are kept as `{"value": id}` of existing
    /// users, each once.
    fn check_group(&self, body: &mut Map<String, Value>) -> Result<(), Refusal> {
        let ok = find_key(body, "displayName")
            .and_then(|k| body[k].as_str())
            .is_some_and(|s| !s.trim().is_empty());
        if !ok {
            return Err(bad(
                "invalidValue",
                "displayName is required and must be a non-empty string",
            ));
        }
        let Some(key) = find_key(body, "members").cloned() else {
            return Ok(());
        };
        let members = match &body[&key] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            _ => return Err(bad("invalidValue", "members must be an array")),
        };
        let mut clean: Vec<Value> = Vec::new();
        for m in members {
            let Some(uid) = m.get("value").and_then(Value::as_str) else {
                return Err(bad(
                    "invalidValue",
                    "every member needs a string value (a user id)",
                ));
            };
            if self.users.get(uid).is_none() {
                return Err(bad(
                    "invalidValue",
                    format!("member value '{uid}' is not the id of an existing user"),
                ));
            }
            let m = json!({"value": uid});
            if !clean.contains(&m) {
                clean.push(m);
            }
        }
        body.insert(key, Value::Array(clean));
        Ok(())
    }
}
