//! Guru REST (`/guru/api/v1`): team members and groups, keyed by email as Guru's SDK does.
//!
//! Lists are bare JSON arrays; the next page is only in a `Link: <…?token=…>; rel="next-page"`
//! header, with a server-chosen page size. Page tokens are signed, carry the listing they
//! belong to, and expire (after a TTL, or at once through the admin API), so the tap can
//! test its "stale token → restart the listing" path. Guru's tokens are opaque; by default one
//! continues after the last email served (keyset), and with `guru_offset_tokens` after a count
//! of members (offset), so members removed mid-listing shift unread ones past the token. Light users (ACCESS_TYPE READ_ONLY,
//! BILLING_TYPE FREE) cannot be put in groups, as Guru documents.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::seed::{self, World};
use super::state::Shared;
use super::{Vendor, reply, util};

const V: Vendor = Vendor::Guru;
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

#[derive(Debug, Clone)]
struct Member {
    email: String,
    first: String,
    last: String,
    status: &'static str,
    light: bool,
    created: DateTime<Utc>,
    groups: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
    created: DateTime<Utc>,
    /// "All Members" cannot be changed.
    modifiable: bool,
    members: BTreeSet<String>,
}

/// What the Guru team holds.
#[derive(Debug)]
pub(crate) struct Store {
    rng: StdRng,
    team_id: String,
    /// Lower-cased email → member.
    members: BTreeMap<String, Member>,
    groups: Vec<Group>,
    token_epoch: u64,
    secret: u64,
    /// Every `replaceverifier` removal: the member and the `collectionVerifiers` it named.
    replaced_verifiers: Vec<Value>,
}

fn key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    pub fn seeded(w: &World) -> Store {
        let mut rng = seed::rng(w.spec.seed, 5);
        let team_id = seed::uuid(&mut rng);
        let secret: u64 = rng.random();
        let all = Group {
            id: seed::uuid(&mut rng),
            name: "All Members".into(),
            created: w.teams.first().map_or_else(util::now, |t| t.created_at),
            modifiable: false,
            members: BTreeSet::new(),
        };
        let mut groups = vec![all];
        for t in &w.teams {
            groups.push(Group {
                id: seed::uuid(&mut rng),
                name: t.name.clone(),
                created: t.created_at,
                modifiable: true,
                members: BTreeSet::new(),
            });
        }
        let mut members = BTreeMap::new();
        for p in &w.people {
            members.insert(
                key(&p.email),
                Member {
                    email: p.email.clone(),
                    first: p.first.clone(),
                    last: p.last.clone(),
                    status: if p.pending { "PENDING" } else { "ACTIVE" },
                    light: p.light,
                    created: p.created_at,
                    groups: BTreeSet::new(),
                },
            );
        }
        for (pi, ti) in &w.team_members {
            let k = key(&w.people[*pi].email);
            let g = &mut groups[ti + 1];
            g.members.insert(k.clone());
            if let Some(m) = members.get_mut(&k) {
                m.groups.insert(g.id.clone());
            }
        }
        Store {
            rng,
            team_id,
            members,
            groups,
            token_epoch: 1,
            secret,
            replaced_verifiers: Vec::new(),
        }
    }

    pub fn expire_tokens(&mut self) {
        self.token_epoch += 1;
    }

    fn team(&self) -> Value {
        json!({"id": self.team_id, "name": "Sandbox Team", "status": "ACTIVE"})
    }

    fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    fn group_json(&self, g: &Group) -> Value {
        let n = if g.modifiable {
            g.members.len()
        } else {
            self.members.len()
        };
        json!({
            "id": g.id,
            "name": g.name,
            "groupIdentifier": g.name.to_lowercase().replace(' ', "-"),
            "dateCreated": util::iso(g.created),
            "modifiable": g.modifiable,
            "userModifiable": g.modifiable,
            "numberOfMembers": n,
            "team": self.team(),
        })
    }

    fn user_json(m: &Member) -> Value {
        json!({
            "email": m.email,
            "firstName": m.first,
            "lastName": m.last,
            "profilePicUrl": null,
            "status": m.status,
        })
    }

    /// A member as `GET /members` shows it: groups and user attributes included.
    fn member_json(&self, m: &Member) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|g| !g.modifiable || m.groups.contains(&g.id))
            .map(|g| self.group_json(g))
            .collect();
        let (access, billing) = if m.light {
            ("READ_ONLY", "FREE")
        } else {
            ("CORE", "CORE")
        };
        json!({
            "id": m.email,
            "dateCreated": util::iso(m.created),
            "user": Store::user_json(m),
            "groups": groups,
            "userAttributes": {"ACCESS_TYPE": access, "BILLING_TYPE": billing},
        })
    }

    /// A member as group listings show it.
    fn group_member_json(m: &Member) -> Value {
        json!({"id": m.email, "dateCreated": util::iso(m.created), "user": Store::user_json(m)})
    }

    pub fn dump(&self) -> Value {
        json!({
            "team": self.team(),
            "members": self.members.values().map(|m| self.member_json(m)).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|g| {
                let mut v = self.group_json(g);
                let emails: Vec<&String> = if g.modifiable {
                    g.members.iter().filter_map(|k| self.members.get(k).map(|m| &m.email)).collect()
                } else {
                    self.members.values().map(|m| &m.email).collect()
                };
                v["members"] = json!(emails);
                v
            }).collect::<Vec<_>>(),
            "replaced_verifiers": self.replaced_verifiers,
        })
    }

    fn mac(&self, payload: &str) -> u64 {
        let mut h = DefaultHasher::new();
        self.secret.hash(&mut h);
        payload.hash(&mut h);
        h.finish()
    }

    fn token(&self, scope: &str, after: &str) -> String {
        let payload = format!("{scope}\n{after}\n{}\n{}", self.token_epoch, now_ms());
        let mac = self.mac(&payload);
        URL_SAFE_NO_PAD.encode(format!("{payload}\n{mac:016x}"))
    }

    /// The key to continue after, if `token` is this store's, for `scope`, and still fresh.
    fn check_token(&self, token: &str, scope: &str, ttl_ms: u128) -> Result<String, &'static str> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("invalid page token")?;
        let (payload, mac) = raw.rsplit_once('\n').ok_or("invalid page token")?;
        if u64::from_str_radix(mac, 16).ok() != Some(self.mac(payload)) {
            return Err("invalid page token");
        }
        let parts: Vec<&str> = payload.split('\n').collect();
        let [s, after, epoch, issued] = parts.as_slice() else {
            return Err("invalid page token");
        };
        if *s != scope {
            return Err("the page token belongs to another listing");
        }
        let issued: u128 = issued.parse().map_err(|_| "invalid page token")?;
        if epoch.parse::<u64>().ok() != Some(self.token_epoch) || now_ms() > issued + ttl_ms {
            return Err("the page token has expired: restart the listing");
        }
        Ok((*after).to_owned())
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
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
    st.members.remove(&k);
    for g in &mut st.groups {
        g.members.remove(&k);
    }
    st.replaced_verifiers
        .push(json!({"email": email, "collectionVerifiers": verifiers}));
    StatusCode::OK.into_response()
}

impl Store {
    /// Removes a member from the team and its groups, as `DELETE /members/{email}` does.
    pub(crate) fn remove_member(&mut self, email: &str) -> bool {
        let k = key(email);
        if self.members.remove(&k).is_none() {
            return false;
        }
        for g in &mut self.groups {
            g.members.remove(&k);
        }
        true
    }
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
    let Some(g) = st.groups.iter_mut().find(|g| g.id == id) else {
        return reply::not_found(V, &format!("group {id} not found"));
    };
    if !g.modifiable {
        return bad("the All Members group cannot be changed");
    }
    g.name = name;
    let g = g.clone();
    reply::ok(&st.group_json(&g))
}

async fn delete_group(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = sh.guru.lock();
    match st.group(&id) {
        None => return reply::not_found(V, &format!("group {id} not found")),
        Some(g) if !g.modifiable => return bad("the All Members group cannot be deleted"),
        Some(_) => {}
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
    match st.group(&id) {
        None => return reply::not_found(V, &format!("group {id} not found")),
        Some(g) if !g.modifiable => return bad("the All Members group cannot be changed"),
        Some(_) => {}
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
    let Some(g) = st.groups.iter_mut().find(|g| g.id == id) else {
        return reply::not_found(V, &format!("group {id} not found"));
    };
    if !g.modifiable {
        return bad("the All Members group cannot be changed");
    }
    if !g.members.remove(&k) {
        return reply::not_found(V, &format!("{email} is not a member of group {id}"));
    }
    if let Some(m) = st.members.get_mut(&k) {
        m.groups.remove(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedSpec;

    #[test]
    fn tokens_verify_scope_and_expire() {
        let mut st = Store::seeded(&World::generate(SeedSpec::default()));
        let t = st.token("members:", "a@x.com");
        assert_eq!(st.check_token(&t, "members:", 60_000).unwrap(), "a@x.com");
        assert!(st.check_token(&t, "group:1", 60_000).is_err());
        assert!(st.check_token("garbage", "members:", 60_000).is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&t).unwrap();
        forged[10] ^= 1;
        assert!(
            st.check_token(&URL_SAFE_NO_PAD.encode(forged), "members:", 60_000)
                .is_err()
        );
        st.expire_tokens();
        assert!(
            st.check_token(&t, "members:", 60_000)
                .unwrap_err()
                .contains("expired")
        );
    }
}
