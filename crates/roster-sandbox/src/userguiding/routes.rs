//! UserGuiding's one route, `POST /identify`, and the checks on its body.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::V;
use crate::state::Shared;
use crate::{reply, util};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/identify", post(identify))
}

fn scalar_attributes(field: &str, v: Option<&Value>) -> Result<Map<String, Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => {
            if let Some((k, bad)) = o.iter().find(|(_, v)| !util::is_scalar(v)) {
                return Err(format!(
                    "{field}.{k}: attribute values must be strings, numbers or booleans, got {}",
                    util::type_name(bad)
                ));
            }
            Ok(o.clone())
        }
        Some(other) => Err(format!(
            "{field}: must be an object, got {}",
            util::type_name(other)
        )),
    }
}

/// A parsed identify: user id, user attributes, and the optional company with its attributes.
type Identify = (
    String,
    Map<String, Value>,
    Option<(String, Map<String, Value>)>,
);

fn parse(body: &[u8]) -> Result<Identify, String> {
    let v: Value = util::parse_json(body)?;
    let Value::Object(o) = v else {
        return Err("the body must be a JSON object".into());
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "userId" | "attributes" | "company"))
    {
        return Err(format!(
            "unknown field '{k}': expected userId, attributes and company"
        ));
    }
    let user_id = match o.get("userId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("userId is required and must be a non-empty string".into()),
    };
    let attributes = scalar_attributes("attributes", o.get("attributes"))?;
    let company = match o.get("company") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            if let Some(k) = c
                .keys()
                .find(|k| !matches!(k.as_str(), "companyId" | "attributes"))
            {
                return Err(format!(
                    "company: unknown field '{k}': expected companyId and attributes"
                ));
            }
            let id = c
                .get("companyId")
                .and_then(util::id_string)
                .ok_or("company.companyId is required and must be a non-empty string")?;
            Some((
                id,
                scalar_attributes("company.attributes", c.get("attributes"))?,
            ))
        }
        Some(other) => {
            return Err(format!(
                "company: must be an object, got {}",
                util::type_name(other)
            ));
        }
    };
    Ok((user_id, attributes, company))
}

async fn identify(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let (user_id, attributes, company) = match parse(&body) {
        Ok(p) => p,
        Err(e) => return reply::bad_request(V, &e),
    };
    sh.userguiding.lock().identify(user_id, attributes, company);
    reply::ok(&json!({"success": true}))
}
