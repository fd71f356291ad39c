//! Guru's routes: members (invite, remove, upgrade, downgrade), groups and their members, and
//! the `Link`-header paging of its lists.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::V;
use super::store::{Group, Member, Store, key};
use crate::seed;
use crate::state::Shared;
use crate::{reply, util};

/// Most emails `POST /groups/{id}/members` takes at once (Guru help card).
const MAX_GROUP_ADD: usize = 100;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/members", get(list_members))
        .route("/members/invite", post(invite))
        .route("/members/{email}", delete(remove_member))
        .route(
            "/members/{email}/replaceverifier",
            delete(remove_member_replacing_verifier),
        )
        .route("/members/{email}/upgrade", post(upgrade))
        .route("/members/{email}/downgrade", post(downgrade))
        .route("/groups", get(list_groups).post(create_group))
        .route(
            "/groups/{id}",
            get(get_group).put(rename_group).delete(delete_group),
        )
        .route(
            "/groups/{id}/members",
            get(list_group_members).post(add_group_members),
        )
        .route("/groups/{id}/members/{email}", delete(remove_group_member))
}

fn bad(msg: &str) -> Response {
    reply::bad_request(V, msg)
}

/// A bare-array page, with `Link` when more follows.
fn paged(items: Vec<Value>, next: Option<String>) -> Response {
    let mut r = reply::ok(&Value::Array(items));
    if let Some(url) = next
        && let Ok(h) = HeaderValue::from_str(&format!("<{url}>; rel=\"next-page\""))
    {
        r.headers_mut().insert(header::LINK, h);
    }
    r
}

fn next_url(headers: &HeaderMap, path: &str, token: &str, search: Option<&str>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    if let Some(s) = search {
        ser.append_pair("search", s);
    }
    ser.append_pair("token", token);
    format!(
        "{}{}{path}?{}",
        util::origin(headers),
        V.prefix(),
        ser.finish()
    )
}

/// One page of `keys` (sorted) after the token's key, or (`offset`) after the token's count of
/// keys, which is how a position-based token behaves when keys before it are removed.
fn page_keys<'a>(
    st: &Store,
    keys: impl Iterator<Item = &'a String>,
    scope: &str,
    token: Option<&str>,
    ttl_ms: u128,
    size: usize,
    offset: bool,
) -> Result<(Vec<&'a String>, Option<String>), Response> {
    let after = match token {
        None => None,
        Some(t) => match st.check_token(t, scope, ttl_ms) {
            Ok(a) => Some(a),
            Err(e) => return Err(bad(e)),
        },
    };
    let (mut page, skip): (Vec<&String>, usize) = if offset {
        let skip = match after.as_deref().map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(bad("invalid page token")),
        };
        (keys.skip(skip).take(size + 1).collect(), skip)
    } else {
        let page = keys
            .filter(|k| after.as_deref().is_none_or(|a| k.as_str() > a))
            .take(size + 1)
            .collect();
        (page, 0)
    };
    let more = page.len() > size;
    page.truncate(size);
    let next = if !more {
        None
    } else if offset {
        Some(st.token(scope, &(skip + page.len()).to_string()))
    } else {
        page.last().map(|k| st.token(scope, k))
    };
    Ok((page, next))
}

async fn whoami(State(sh): State<Arc<Shared>>) -> Response {
    let st = sh.guru.lock();
    reply::ok(&json!({
        "team": st.team(),
        "user": {"email": sh.settings.credentials.guru_username, "firstName": "Sandbox", "lastName": "Admin"},
        "role": "ADMIN",
    }))
}

async fn list_members(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = util::query_pairs(q.as_deref());
    let search = util::first(&pairs, "search").map(str::to_owned);
    let needle = search.as_deref().map(str::to_lowercase);
    let token = util::first(&pairs, "token");
    let ttl = sh.settings.guru_token_ttl.as_millis();
    let st = sh.guru.lock();
    let keys = st.members.iter().filter(|(_, m)| {
        needle.as_deref().is_none_or(|n| {
            m.email.to_lowercase().contains(n)
                || m.first.to_lowercase().contains(n)
                || m.last.to_lowercase().contains(n)
        })
    });
    let scope = format!("members:{}", search.as_deref().unwrap_or(""));
    let (page, next) = match page_keys(
        &st,
        keys.map(|(k, _)| k),
        &scope,
        token,
        ttl,
        sh.settings.guru_page_size,
        sh.settings.guru_offset_tokens,
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = page
        .iter()
        .filter_map(|k| st.members.get(*k).map(|m| st.member_json(m)))
        .collect();
    paged(
        items,
        next.map(|t| next_url(&headers, "/members", &t, search.as_deref())),
    )
}

async fn list_group_members(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = util::query_pairs(q.as_deref());
    let token = util::first(&pairs, "token");
    let ttl = sh.settings.guru_token_ttl.as_millis();
    let st = sh.guru.lock();
    let Some(g) = st.group(&id) else {
        return reply::not_found(V, &format!("group {id} not found"));
    };
    let scope = format!("group:{id}");
    let keys: Box<dyn Iterator<Item = &String>> = if g.modifiable {
        Box::new(g.members.iter())
    } else {
        Box::new(st.members.keys())
    };
    let (page, next) = match page_keys(
        &st,
        keys,
        &scope,
        token,
        ttl,
        sh.settings.guru_page_size,
        sh.settings.guru_offset_tokens,
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = page
        .iter()
        .filter_map(|k| st.members.get(*k).map(Store::group_member_json))
        .collect();
    paged(
        items,
        next.map(|t| next_url(&headers, &format!("/groups/{id}/members"), &t, None)),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InviteReq {
    emails: Value,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    team_member_type: Option<String>,
}

fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !e.contains(char::is_whitespace)
}

async fn invite(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: InviteReq = match util::parse_json(&body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let Value::String(list) = &req.emails else {
        return bad("emails must be a comma-separated string of email addresses");
    };
    let emails: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if emails.is_empty() {
        return bad("At least one email is required");
    }
    let light = match req.team_member_type.as_deref() {
        None | Some("CORE") => false,
        Some("LIGHT") => true,
        Some(other) => {
            return bad(&format!(
                "teamMemberType must be CORE or LIGHT, got {other}"
            ));
        }
    };
    let mut st = sh.guru.lock();
    let group = match &req.group_id {
        None => None,
        Some(gid) => match st.group(gid) {
            Some(g) if g.modifiable => Some(gid.clone()),
            Some(_) => return bad("the All Members group cannot be changed"),
            None => return reply::not_found(V, &format!("group {gid} not found")),
        },
    };
    let now = util::now();
    let mut statuses = Vec::new();
    for email in emails {
        let k = key(&email);
        if !plausible_email(&email) {
            statuses
                .push(json!({"email": email, "errored": true, "error": "Invalid email address"}));
            continue;
        }
        if st.members.contains_key(&k) {
            statuses.push(json!({"email": email, "errored": true, "error": "This user is already a part of the team"}));
            continue;
        }
        let local = email.split('@').next().unwrap_or_default().to_owned();
        let mut m = Member {
            email: email.clone(),
            first: local,
            last: String::new(),
            status: "PENDING",
            light,
            created: now,
            groups: BTreeSet::new(),
        };
        let mut entry = json!({"email": email});
        if let Some(gid) = &group {
            if light {
                entry = json!({"email": email, "errored": true, "error": "Light users cannot be added to groups; the user was invited without the group"});
            } else {
                m.groups.insert(gid.clone());
                if let Some(g) = st.groups.iter_mut().find(|g| &g.id == gid) {
                    g.members.insert(k.clone());
                }
            }
        }
        st.members.insert(k, m);
        statuses.push(entry);
    }
    reply::ok(&json!({"statuses": statuses}))
}

async fn remove_member(State(sh): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    if !sh.guru.lock().remove_member(&email) {
        return reply::not_found(V, &format!("{email} is not a member of the team"));
    }
    StatusCode::OK.into_response()
}

/// `DELETE /members/{email}/replaceverifier {"collectionVerifiers": {"<collection id>":
/// {"type": "member" | "user-group", "id"}}}`: removes the member and re-assigns their
/// verifications (Guru's help card; the SDK sends `{}` for the map). A verifier must be another
/// member of the team, or a group.
async fn remove_member_replacing_verifier(
    State(sh): State<Arc<Shared>>,
    Path(email): Path<String>,
    body: Bytes,
) -> Response {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match util::parse_json(&body) {
            Ok(v) => v,
            Err(e) => return bad(&e),
        }
    };
    let verifiers = match req.get("collectionVerifiers") {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return bad("collectionVerifiers must be an object of collection ids"),
    };
    let mut st = sh.guru.lock();
    let k = key(&email);
    if !st.members.contains_key(&k) {
        return reply::not_found(V, &format!("{email} is not a member of the team"));
    }
    for (collection, verifier) in &verifiers {
        let kind = verifier.get("type").and_then(Value::as_str);
        let id = verifier
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ok = match kind {
            Some("member") => key(id) != k && st.members.contains_key(&key(id)),
            Some("user-group") => st.group(id).is_some(),
            _ => false,
        };
        if !ok {
            return bad(&format!(
                "invalid verifier for collection {collection}: {verifier}"
            ));
        }
    }
    st.remove_member(&email);
    st.replaced_verifiers
        .push(json!({"email": email, "collectionVerifiers": verifiers}));
    StatusCode::OK.into_response()
}

fn set_light(sh: &Shared, email: &str, light: bool) -> Response {
    let mut st = sh.guru.lock();
    let k = key(email);
    let Some(m) = st.members.get_mut(&k) else {
        return reply::not_found(V, &format!("{email} is not a member of the team"));
    };
    m.light = light;
    if light {
        // Light users cannot be in groups.
        let gone: Vec<String> = std::mem::take(&mut m.groups).into_iter().collect();
        for g in st.groups.iter_mut().filter(|g| gone.contains(&g.id)) {
            g.members.remove(&k);
        }
    }
    match st.members.get(&k) {
        Some(m) => reply::ok(&st.member_json(m)),
        None => reply::not_found(V, email),
    }
}

async fn upgrade(State(sh): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    set_light(&sh, &email, false)
}

async fn downgrade(State(sh): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    set_light(&sh, &email, true)
}

async fn list_groups(State(sh): State<Arc<Shared>>) -> Response {
    let st = sh.guru.lock();
    reply::ok(&Value::Array(
        st.groups.iter().map(|g| st.group_json(g)).collect(),
    ))
}

async fn get_group(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let st = sh.guru.lock();
    match st.group(&id) {
        Some(g) => reply::ok(&st.group_json(g)),
        None => reply::not_found(V, &format!("group {id} not found")),
    }
}

/// The group `id` when it can be changed: 404 when there is none, 400 for All Members.
fn changeable_group<'a>(
    st: &'a mut Store,
    id: &str,
    verb: &str,
) -> Result<&'a mut Group, Response> {
    match st.groups.iter_mut().find(|g| g.id == id) {
        None => Err(reply::not_found(V, &format!("group {id} not found"))),
        Some(g) if !g.modifiable => Err(bad(&format!("the All Members group cannot be {verb}"))),
        Some(g) => Ok(g),
    }
}

/// The trimmed, non-empty `name` of a group body (create and rename take the same object).
fn group_name_in(body: &[u8]) -> Result<String, Response> {
    let req: Value = util::parse_json(body).map_err(|e| bad(&e))?;
    req.get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad("name is required"))
}

async fn create_group(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let name = match group_name_in(&body) {
        Ok(name) => name,
        Err(r) => return r,
    };
    let mut st = sh.guru.lock();
    // Guru does not deduplicate group names (its SDK checks first).
    let g = Group {
        id: seed::uuid(&mut st.rng),
        name,
        created: util::now(),
        modifiable: true,
        members: BTreeSet::new(),
    };
    let v = st.group_json(&g);
    st.groups.push(g);
    reply::ok(&v)
}

/// `PUT /groups/{id} {"id", "name"}`: renames a group (Guru's web app renames groups; the
/// vendor's API document lists no rename, so this is the group object PUT back, as the
/// create takes it).
async fn rename_group(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let name = match group_name_in(&body) {
        Ok(name) => name,
        Err(r) => return r,
    };
    let mut st = sh.guru.lock();
    let g = match changeable_group(&mut st, &id, "changed") {
        Ok(g) => g,
        Err(r) => return r,
    };
    g.name = name;
    let g = g.clone();
    reply::ok(&st.group_json(&g))
}

async fn delete_group(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = sh.guru.lock();
    if let Err(r) = changeable_group(&mut st, &id, "deleted") {
        return r;
    }
    st.groups.retain(|g| g.id != id);
    for m in st.members.values_mut() {
        m.groups.remove(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn add_group_members(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let emails: Vec<String> = match util::parse_json::<Value>(&body) {
        Ok(Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                match v {
                    Value::String(s) => out.push(s),
                    _ => return bad("the body must be a JSON array of email strings"),
                }
            }
            out
        }
        Ok(_) => return bad("the body must be a JSON array of email strings"),
        Err(e) => return bad(&e),
    };
    if emails.is_empty() {
        return bad("At least one member is required");
    }
    if emails.len() > MAX_GROUP_ADD {
        return bad(&format!(
            "At most {MAX_GROUP_ADD} members can be added per request, got {}",
            emails.len()
        ));
    }
    let mut st = sh.guru.lock();
    if let Err(r) = changeable_group(&mut st, &id, "changed") {
        return r;
    }
    // All or nothing: check every email before changing anything.
    for e in &emails {
        match st.members.get(&key(e)) {
            None => return bad(&format!("User must be a team member: {e}")),
            Some(m) if m.light => {
                return bad(&format!(
                    "Light users cannot be added to groups: {e} (ACCESS_TYPE READ_ONLY)"
                ));
            }
            Some(_) => {}
        }
    }
    let mut out = Vec::new();
    for e in &emails {
        let k = key(e);
        if let Some(g) = st.groups.iter_mut().find(|g| g.id == id) {
            g.members.insert(k.clone());
        }
        if let Some(m) = st.members.get_mut(&k) {
            m.groups.insert(id.clone());
            out.push(Store::group_member_json(m));
        }
    }
    reply::ok(&Value::Array(out))
}

async fn remove_group_member(
    State(sh): State<Arc<Shared>>,
    Path((id, email)): Path<(String, String)>,
) -> Response {
    let mut st = sh.guru.lock();
    let k = key(&email);
    let g = match changeable_group(&mut st, &id, "changed") {
        Ok(g) => g,
        Err(r) => return r,
    };
    if !g.members.remove(&k) {
        return reply::not_found(V, &format!("{email} is not a member of group {id}"));
    }
    if let Some(m) = st.members.get_mut(&k) {
        m.groups.remove(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}
