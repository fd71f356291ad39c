//! Finding SCIM resources for the writer, and the run's map from source keys to SCIM ids.
//!
//! - **The map.** Every user and group the writer creates, adopts or finds is remembered by its
//!   source key for the rest of the run, so memberships name server ids without a lookup.
//! - **Lookups** are a single `attr eq "value"` filter ([`crate::scim::filter`]) while the
//!   server takes filters. The answer is checked again on the client (a server that ignores
//!   the filter and lists everything must not make roster adopt a stranger), comparing as the
//!   attribute's `caseExact` says: `externalId` exactly, `userName`, emails and `displayName`
//!   ignoring case.
//! - **Without filters** (the ServiceProviderConfig says `filter.supported: false`, or the
//!   server refuses a filter with `invalidFilter`), the first lookup lists the whole resource
//!   type once into an index of its keys, which the writer keeps current. The listing pages
//!   the way the tap's does ([`crate::scim::list`]: one set of paging rules).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::http::paginate::scim::{self as paging, FIRST_INDEX};
use crate::model::lenient_bool;
use crate::scim::error::ScimError;
use crate::scim::filter;
use crate::scim::list::{self, ListQuery, ListedPage, PassError};
use crate::scim::types::{get, id_of};
use crate::sink::{Method, SendError, SendFailure, SinkError, Transport, WireRequest, fatal_or};

/// Resources per page when the index lists a resource type (what Okta asks for).
pub const INDEX_PAGE_SIZE: u64 = list::PAGE_SIZE;

/// Users or Groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl Res {
    /// The endpoint.
    pub fn endpoint(self) -> &'static str {
        match self {
            Res::User => "/Users",
            Res::Group => "/Groups",
        }
    }

    /// The word for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Res::User => "user",
            Res::Group => "group",
        }
    }

    fn slot(self) -> usize {
        match self {
            Res::User => 0,
            Res::Group => 1,
        }
    }
}

/// Attributes the writer looks resources up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    /// `externalId` (caseExact).
    ExternalId,
    /// `userName` (case-insensitive).
    UserName,
    /// `emails.value` (case-insensitive).
    Email,
    /// `displayName` (case-insensitive).
    DisplayName,
}

impl Attr {
    /// The filter's attribute path.
    pub fn path(self) -> &'static str {
        match self {
            Attr::ExternalId => "externalId",
            Attr::UserName => "userName",
            Attr::Email => "emails.value",
            Attr::DisplayName => "displayName",
        }
    }

    fn normalize(self, value: &str) -> String {
        match self {
            Attr::ExternalId => value.to_string(),
            _ => value.to_lowercase(),
        }
    }

    /// The values of this attribute in `resource`, normalised.
    fn values(self, resource: &Map<String, Value>) -> Vec<String> {
        let text = |v: &Value| v.as_str().map(|s| self.normalize(s));
        match self {
            Attr::ExternalId => get(resource, "externalId")
                .and_then(text)
                .into_iter()
                .collect(),
            Attr::UserName => get(resource, "userName")
                .and_then(text)
                .into_iter()
                .collect(),
            Attr::DisplayName => get(resource, "displayName")
                .and_then(text)
                .into_iter()
                .collect(),
            Attr::Email => match get(resource, "emails") {
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(|e| e.as_object().and_then(|e| get(e, "value")).and_then(text))
                    .collect(),
                _ => Vec::new(),
            },
        }
    }

    const ALL: [Attr; 4] = [
        Attr::ExternalId,
        Attr::UserName,
        Attr::Email,
        Attr::DisplayName,
    ];
}

/// A resource found at the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its server id.
    pub id: String,
    /// The resource as the server sent it, when the lookup returned it (not from the run's
    /// map or the index).
    pub resource: Option<Map<String, Value>>,
}

/// The keys of the resources of one type, for servers without filters.
#[derive(Debug, Default)]
struct Index {
    by: HashMap<(Attr, String), BTreeSet<String>>,
    keys: HashMap<String, Vec<(Attr, String)>>,
}

impl Index {
    fn put(&mut self, id: &str, resource: &Map<String, Value>) {
        self.drop_id(id);
        let mut keys = Vec::new();
        for attr in Attr::ALL {
            for value in attr.values(resource) {
                self.by
                    .entry((attr, value.clone()))
                    .or_default()
                    .insert(id.to_string());
                keys.push((attr, value));
            }
        }
        self.keys.insert(id.to_string(), keys);
    }

    fn drop_id(&mut self, id: &str) {
        for key in self.keys.remove(id).unwrap_or_default() {
            if let Some(ids) = self.by.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by.remove(&key);
                }
            }
        }
    }

    fn find(&self, attr: Attr, value: &str) -> Vec<String> {
        self.by
            .get(&(attr, attr.normalize(value)))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Lookups and the run's key → id maps of one SCIM server.
#[derive(Debug)]
pub struct Directory {
    vendor: &'static str,
    transport: Arc<dyn Transport>,
    filters: AtomicBool,
    page_size: parking_lot::RwLock<u64>,
    mapped: [Mutex<HashMap<String, String>>; 2],
    indexes: [tokio::sync::Mutex<Option<Index>>; 2],
}

/// Why a lookup failed: the request's error (the record is rejected with it).
pub type LookupError = SendError;

impl Directory {
    /// A directory over `transport`.
    pub fn new(vendor: &'static str, transport: Arc<dyn Transport>) -> Self {
        Directory {
            vendor,
            transport,
            filters: AtomicBool::new(true),
            page_size: parking_lot::RwLock::new(INDEX_PAGE_SIZE),
            mapped: Default::default(),
            indexes: Default::default(),
        }
    }

    /// Stops using filters (the server does not take them); lookups go through the index.
    pub fn disable_filters(&self) {
        if self.filters.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "{} does not take filters: looking resources up in a listing of each type instead",
                self.vendor
            );
        }
    }

    /// True while lookups use filters.
    pub fn uses_filters(&self) -> bool {
        self.filters.load(Ordering::Relaxed)
    }

    /// The page size the index lists with (the server's `maxPageSize` may lower it).
    pub fn set_page_size(&self, size: u64) {
        *self.page_size.write() = size.max(1);
    }

    /// The server id this run knows for a source key.
    pub fn mapped(&self, res: Res, key: &str) -> Option<String> {
        self.mapped[res.slot()].lock().get(key).cloned()
    }

    /// Remembers a source key's server id, and the resource's keys for the index.
    pub async fn remember(
        &self,
        res: Res,
        key: &str,
        id: &str,
        resource: Option<&Map<String, Value>>,
    ) {
        self.mapped[res.slot()]
            .lock()
            .insert(key.to_string(), id.to_string());
        if let Some(resource) = resource
            && let Some(index) = self.indexes[res.slot()].lock().await.as_mut()
        {
            index.put(id, resource);
        }
    }

    /// Forgets a resource that is gone (deleted, or a 404 on a mapped id).
    pub async fn forget(&self, res: Res, key: &str, id: &str) {
        self.mapped[res.slot()].lock().remove(key);
        if let Some(index) = self.indexes[res.slot()].lock().await.as_mut() {
            index.drop_id(id);
        }
    }

    /// Resources whose `attr` equals `value`. `Err(Ok)` is a failed request (reject the record
    /// with it); `Err(Err)` is fatal.
    pub async fn find(
        &self,
        res: Res,
        attr: Attr,
        value: &str,
    ) -> Result<Result<Vec<Found>, LookupError>, SinkError> {
        if self.uses_filters() {
            let path = format!("{}?{}", res.endpoint(), filter::query(attr.path(), value));
            match self
                .transport
                .send(WireRequest::new(Method::Get, path))
                .await
            {
                Ok(response) => {
                    let resources = paging::from_value(response.json())
                        .map(|page| page.resources)
                        .unwrap_or_default();
                    let want = attr.normalize(value);
                    return Ok(Ok(resources
                        .into_iter()
                        .filter_map(|r| match r {
                            Value::Object(o) => Some(o),
                            _ => None,
                        })
                        // The server may ignore a filter it does not know: check again.
                        .filter(|r| attr.values(r).contains(&want))
                        .filter_map(|r| {
                            Some(Found {
                                id: id_of(&r)?,
                                resource: Some(r),
                            })
                        })
                        .collect()));
                }
                Err(err) => {
                    let err = fatal_or(self.vendor, err)?;
                    let refused_filter = err.status == Some(501)
                        || (err.status == Some(400)
                            && err
                                .body_excerpt
                                .as_deref()
                                .and_then(ScimError::parse)
                                .is_some_and(|e| e.is("invalidFilter")));
                    if !refused_filter {
                        return Ok(Err(err));
                    }
                    self.disable_filters();
                }
            }
        }
        let mut slot = self.indexes[res.slot()].lock().await;
        if slot.is_none() {
            match self.list_all(res).await? {
                Ok(index) => *slot = Some(index),
                Err(err) => return Ok(Err(err)),
            }
        }
        let ids = slot
            .as_ref()
            .map(|i| i.find(attr, value))
            .unwrap_or_default();
        Ok(Ok(ids
            .into_iter()
            .map(|id| Found { id, resource: None })
            .collect()))
    }

    /// Lists the index again (after a 409 the index did not explain). Does nothing while
    /// filters are in use.
    pub async fn refresh(&self, res: Res) -> Result<(), SinkError> {
        if self.uses_filters() {
            return Ok(());
        }
        let mut slot = self.indexes[res.slot()].lock().await;
        if let Ok(index) = self.list_all(res).await? {
            *slot = Some(index);
        }
        Ok(())
    }

    /// Lists every resource of a type into an index, through the same paging as the tap
    /// ([`list::read_all`]: the overlap, the anchors, deduplication and fill passes), so a
    /// resource deleted or created while the listing is read hides no other one.
    ///
    /// A listing that stays short of `totalResults` after the fill passes is kept, with a
    /// warning, as it always was: lookups may then miss what is there, and only the server's
    /// 409 on a create stands between roster and a duplicate (seen with scim2-server when its
    /// `filter.maxResults` is 0: `totalResults: 3` and no resources). A server that ignores
    /// `startIndex` stops the run: no lookup could be trusted.
    async fn list_all(&self, res: Res) -> Result<Result<Index, LookupError>, SinkError> {
        let mut index = Index::default();
        let query = ListQuery {
            path: res.endpoint(),
            start: FIRST_INDEX,
            count: *self.page_size.read(),
            filter: None,
            // Members are not needed to find a group, and make pages large.
            excluded: (res == Res::Group).then_some("members"),
        };
        let read = list::read_all(
            self.vendor,
            query,
            |asked| self.list_page(asked),
            |resource| {
                if let Some(object) = resource.as_object()
                    && let Some(id) = id_of(object)
                {
                    index.put(&id, object);
                }
            },
        )
        .await;
        match read {
            Err(err) => return Ok(Err(fatal_or(self.vendor, err)?)),
            Ok(Ok(_)) => {}
            Ok(Err(PassError::Short { seen, total, .. })) => tracing::warn!(
                "{}: the server says it has {total} {}s but listed {seen}; lookups without filters may miss existing ones (check the server's paging or maxResults)",
                self.vendor,
                res.noun()
            ),
            Ok(Err(err @ PassError::IgnoresStartIndex { .. })) => {
                return Err(SinkError::Vendor {
                    vendor: self.vendor,
                    detail: format!("listing {}: {err}", res.endpoint()),
                });
            }
        }
        tracing::debug!(
            "{}: indexed {} {}s",
            self.vendor,
            index.keys.len(),
            res.noun()
        );
        Ok(Ok(index))
    }

    /// One page of a listing through the writer's transport. A dry run's stand-in answer
    /// ends the listing (nothing was read).
    async fn list_page(&self, query: ListQuery<'_>) -> Result<ListedPage, SendError> {
        let request = WireRequest::new(Method::Get, query.path_and_query());
        let response = self.transport.send(request).await?;
        if response.dry_run {
            return Ok(ListedPage::empty());
        }
        match paging::from_value(response.json()) {
            Ok(page) => Ok(ListedPage::from_scim(query.start, page)),
            Err(err) => Err(SendError {
                failure: SendFailure::Refused,
                status: Some(response.status),
                body_excerpt: None,
                message: format!(
                    "{}: GET {} answered something that is not a SCIM ListResponse ({err}), so resources cannot be looked up in it",
                    self.vendor, query.path
                ),
                maybe_processed: false,
            }),
        }
    }
}

/// True when `resource` says it is inactive (`active: false`, `"False"`).
pub fn is_inactive(resource: &Map<String, Value>) -> bool {
    get(resource, "active").and_then(lenient_bool) == Some(false)
}

/// The member ids of a Group resource; `None` when the server left `members` out.
pub fn member_ids(resource: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match get(resource, "members")? {
        Value::Array(list) => Some(
            list.iter()
                .filter_map(|m| m.as_object().and_then(|m| get(m, "value")))
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        Value::Null => Some(BTreeSet::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ScriptedTransport, SendFailure, WireResponse};
    use serde_json::json;

    fn page(resources: Value) -> WireResponse {
        let n = resources.as_array().map_or(0, Vec::len);
        WireResponse::ok(
            json!({"totalResults": n, "startIndex": 1, "itemsPerPage": n, "Resources": resources}),
        )
    }

    #[tokio::test]
    async fn filtered_lookups_are_checked_again_on_the_client() {
        // A server that ignores the filter and lists everyone.
        let transport = Arc::new(ScriptedTransport::new(|_| {
            Ok(page(json!([
                {"id": "1", "userName": "bob@x.io", "externalId": "B"},
                {"id": "2", "userName": "ALICE@x.io", "externalId": "a", "emails": [{"value": "Al@x.io"}]},
            ])))
        }));
        let dir = Directory::new("scim", transport.clone());
        let found = dir
            .find(Res::User, Attr::UserName, "alice@X.io")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "2");
        assert!(
            dir.find(Res::User, Attr::ExternalId, "A")
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            dir.find(Res::User, Attr::Email, "al@x.io")
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            transport.requests()[0].path,
            "/Users?filter=userName%20eq%20%22alice%40X.io%22"
        );
    }

    /// The `startIndex` a listing request asked for.
    fn start_of(path: &str) -> usize {
        path.split("startIndex=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn refuse_filters(r: &WireRequest) -> Option<Result<WireResponse, SendError>> {
        r.path.contains("filter=").then(|| {
            Err(SendError {
                failure: SendFailure::Refused,
                status: Some(400),
                body_excerpt: Some(
                    r#"{"status":"400","scimType":"invalidFilter","detail":"no filters here"}"#
                        .into(),
                ),
                message: "GET answered 400".into(),
                maybe_processed: false,
            })
        })
    }

    /// A server without filters whose `/Users` listing serves `dir` in pages of at most `cap`
    /// (whatever `count` was asked), calling `change` with the number of pages served so far
    /// after each one.
    fn short_page_server(
        dir: Vec<Value>,
        cap: usize,
        change: impl Fn(usize, &mut Vec<Value>) + Send + Sync + 'static,
    ) -> Arc<ScriptedTransport> {
        let dir = Mutex::new((dir, 0usize));
        Arc::new(ScriptedTransport::new(move |r| {
            if let Some(refused) = refuse_filters(r) {
                return refused;
            }
            let mut guard = dir.lock();
            let (users, served) = &mut *guard;
            let start = start_of(&r.path);
            let resources: Vec<Value> = users.iter().skip(start - 1).take(cap).cloned().collect();
            let total = users.len();
            *served += 1;
            change(*served, users);
            Ok(WireResponse::ok(
                json!({"totalResults": total, "startIndex": start, "Resources": resources}),
            ))
        }))
    }

    fn paths(transport: &ScriptedTransport) -> Vec<String> {
        transport
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    #[tokio::test]
    async fn without_filters_one_listing_feeds_every_lookup() {
        // Three users, two per page whatever count was asked.
        let transport = short_page_server(
            vec![
                json!({"id": "1", "userName": "bob@x.io", "externalId": "B", "displayName": "Bob"}),
                json!({"id": "2", "userName": "alice@x.io", "externalId": "a"}),
                json!({"id": "3", "userName": "dan@x.io", "externalId": "d"}),
            ],
            2,
            |_, _| {},
        );
        let dir = Directory::new("scim", transport.clone());
        let found = dir
            .find(Res::User, Attr::ExternalId, "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            found,
            vec![Found {
                id: "2".into(),
                resource: None
            }]
        );
        assert!(!dir.uses_filters());
        assert_eq!(
            dir.find(Res::User, Attr::UserName, "BOB@x.io")
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            dir.find(Res::User, Attr::ExternalId, "d")
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        // One listing for every lookup. The page after a short one starts one early (the
        // tap's overlap) and finds the last user read in it, so it reads on, not again.
        assert_eq!(
            paths(&transport),
            vec![
                "/Users?filter=externalId%20eq%20%22a%22",
                "/Users?startIndex=1&count=100",
                "/Users?startIndex=2&count=100",
            ]
        );
        // What the writer creates is indexed too.
        let created = json!({"id": "4", "userName": "carol@x.io", "externalId": "c"});
        dir.remember(Res::User, "c", "4", created.as_object()).await;
        assert_eq!(
            dir.find(Res::User, Attr::UserName, "carol@x.io")
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(dir.mapped(Res::User, "c").as_deref(), Some("4"));
        dir.forget(Res::User, "c", "4").await;
        assert!(
            dir.find(Res::User, Attr::UserName, "carol@x.io")
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    fn users(n: usize) -> Vec<Value> {
        (1..=n)
            .map(|i| json!({"id": format!("id{i}"), "externalId": format!("u{i}")}))
            .collect()
    }

    /// Deletions while the index is listed shift the pages under it, as they do under the tap:
    /// the old loop went on at the index after the page read, which then held a later user, and
    /// never indexed the ones in between (a lookup then missed them and the writer created
    /// duplicates). Every user still held is found; the deleted ones may be (they were read).
    #[tokio::test]
    async fn a_listing_misses_no_user_when_users_are_deleted_mid_listing() {
        // (what, users, page cap, after which page, how many deleted, from which position)
        for (what, n, cap, after, deleted, from) in [
            ("7 of 50 at the start, pages of 10", 50, 10, 1, 7, 0),
            ("1 behind the index, pages of 10", 50, 10, 2, 1, 5),
            (
                "25 of 100 behind the index, short pages of 3",
                100,
                3,
                3,
                25,
                0,
            ),
        ] {
            let all = users(n);
            let transport = short_page_server(all.clone(), cap, move |served, dir| {
                if served == after {
                    dir.drain(from..from + deleted);
                }
            });
            let dir = Directory::new("scim", transport.clone());
            dir.disable_filters();
            dir.set_page_size(10);
            for (i, user) in all.iter().enumerate() {
                let key = user["externalId"].as_str().unwrap();
                let found = dir
                    .find(Res::User, Attr::ExternalId, key)
                    .await
                    .unwrap()
                    .unwrap();
                if !(from..from + deleted).contains(&i) {
                    assert_eq!(found.len(), 1, "{what}: live user {key} not found");
                    assert_eq!(Some(found[0].id.as_str()), user["id"].as_str(), "{what}");
                }
            }
        }
    }

    /// scim2-server with `filter.maxResults: 0` says `totalResults: 3` and lists nothing. The
    /// writer goes on as it always did (lookups find nothing; the server's 409 on a create is
    /// what stops a duplicate), after reading the listing again as the tap's fill passes do.
    #[tokio::test]
    async fn a_listing_short_of_its_total_is_kept_with_a_warning() {
        let transport = Arc::new(ScriptedTransport::new(|r| {
            refuse_filters(r).unwrap_or_else(|| {
                Ok(WireResponse::ok(
                    json!({"totalResults": 3, "startIndex": 1, "Resources": []}),
                ))
            })
        }));
        let dir = Directory::new("scim", transport.clone());
        dir.disable_filters();
        for key in ["a", "b"] {
            assert!(
                dir.find(Res::User, Attr::ExternalId, key)
                    .await
                    .unwrap()
                    .unwrap()
                    .is_empty()
            );
        }
        // The first pass and two fill passes, once for both lookups.
        assert_eq!(paths(&transport).len(), 1 + list::MAX_FILL_PASSES as usize);
    }

    /// A server that answers every `startIndex` with the first page: the old loop indexed the
    /// first page only and looked complete; now the run stops, naming it.
    #[tokio::test]
    async fn a_server_that_ignores_start_index_stops_the_run() {
        let all = users(30);
        let transport = Arc::new(ScriptedTransport::new(move |_| {
            Ok(WireResponse::ok(
                json!({"totalResults": 30, "Resources": all[..10].to_vec()}),
            ))
        }));
        let dir = Directory::new("scim", transport);
        dir.disable_filters();
        dir.set_page_size(10);
        let err = dir
            .find(Res::User, Attr::ExternalId, "u25")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ignores startIndex"), "{err}");
    }

    /// A listing answer that is not a `ListResponse` rejects the lookup with the reason (the
    /// old loop took it for the end of the listing and looked nothing up in an empty index).
    #[tokio::test]
    async fn a_listing_that_is_not_a_list_response_rejects_the_lookup() {
        let transport = Arc::new(ScriptedTransport::new(|_| {
            Ok(WireResponse::ok(json!(["not", "a", "list", "response"])))
        }));
        let dir = Directory::new("scim", transport);
        dir.disable_filters();
        let err = dir
            .find(Res::User, Attr::ExternalId, "u1")
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.message.contains("not a SCIM ListResponse"), "{err}");
    }

    #[test]
    fn members_and_activity_are_read_leniently() {
        let g = json!({"members": [{"value": "u1"}, {"value": 7}, {"display": "x"}]});
        assert_eq!(
            member_ids(g.as_object().unwrap()),
            Some(["u1".to_string(), "7".to_string()].into_iter().collect())
        );
        assert_eq!(member_ids(json!({}).as_object().unwrap()), None);
        assert!(is_inactive(json!({"Active": "False"}).as_object().unwrap()));
        assert!(!is_inactive(json!({}).as_object().unwrap()));
    }
}
