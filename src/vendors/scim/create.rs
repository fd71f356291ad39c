//! Creating a SCIM resource, never blindly: a `POST` whose answer was lost is sent again only
//! after a fresh listing shows it was not made; a `409` (or an unconfirmed `POST`) looks again
//! by every key the resource could clash on (`userName`, `externalId`, email; `displayName`)
//! and adopts the one match, and otherwise the record is rejected with the server's `detail`.

use serde_json::Value;

use crate::scim::types::id_of;
use crate::sink::{Method, PayloadHash, Refusal, SendError, SendFailure, SinkError, WireResponse};
use crate::vendors::patterns::{Created, Looked, create_once, unconfirmed};

use super::directory::{Attr, Found, Res};
use super::wire::{self, Change, GROUP_SCHEMA, USER_SCHEMA};
use super::write::{ChangesFor, Done, ScimSink, detail_of, rejected, with_body};

impl ScimSink {
    /// True when a fresh listing finds nothing under any of the keys a create could clash
    /// on: an unconfirmed create did not happen.
    async fn absent(&self, res: Res, adopt_by: &[(Attr, String)]) -> Result<bool, SinkError> {
        self.dir.refresh(res).await?;
        for (attr, value) in adopt_by {
            match self.dir.find(res, *attr, value).await? {
                Ok(found) if found.is_empty() => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// POSTs a new resource. A 409 (or an unconfirmed POST) looks again and adopts the one
    /// match; an unconfirmed POST that left nothing behind is sent again.
    pub(super) async fn create(
        &self,
        res: Res,
        key: &str,
        changes: &[Change],
        adopt_by: &[(Attr, String)],
        changes_for: &ChangesFor<'_>,
    ) -> Result<(Done, Option<PayloadHash>), SinkError> {
        let core = match res {
            Res::User => USER_SCHEMA,
            Res::Group => GROUP_SCHEMA,
        };
        let body = wire::create_body(core, changes);
        // A create is not repeated blindly: a lost answer may hide a created resource.
        let request =
            with_body(Method::Post, res.endpoint().to_string(), body.clone()).not_idempotent();
        let payload = request.payload_hash();
        // An unconfirmed POST that a fresh lookup shows never happened (the server failed
        // before creating anything) is sent again, as often as the engine would retry a
        // request that is safe to repeat; one that did happen is adopted below.
        let what = format!("{} {key:?}", res.noun());
        let look = |err: &SendError, can_resend: bool| {
            let conflict = err.status == Some(409);
            async move {
                if conflict || !can_resend {
                    return Ok(Looked::<()>::Unsure);
                }
                Ok(match self.absent(res, adopt_by).await? {
                    true => Looked::Absent,
                    false => Looked::Unsure,
                })
            }
        };
        let err =
            match create_once(self.vendor, self.transport.as_ref(), &request, &what, look).await? {
                Created::Answered(response) => {
                    self.created(res, key, &response, &body).await;
                    return Ok((Done::Accepted, payload));
                }
                Created::Found(()) => return Ok((Done::Accepted, payload)),
                Created::Failed(err) => err,
            };
        let conflict = err.status == Some(409);
        if !(conflict || unconfirmed(&err)) {
            return Ok((rejected(self.vendor, err)?, payload));
        }
        self.adopt(res, key, err, adopt_by, changes_for, payload)
            .await
    }

    /// Remembers what a create answered (its id; a dry run's stand-in).
    async fn created(&self, res: Res, key: &str, response: &WireResponse, body: &Value) {
        let created = response.json();
        let id = created
            .as_object()
            .and_then(id_of)
            .or_else(|| response.dry_run.then(|| self.dry_run_id(res, key)));
        match id {
            Some(id) => {
                let known = created
                    .as_object()
                    .filter(|o| !o.is_empty())
                    .or(body.as_object());
                self.dir.remember(res, key, &id, known).await;
            }
            None => tracing::warn!(
                "{}: the answer to creating {} {key:?} has no id; it will be looked up when needed",
                self.vendor,
                res.noun()
            ),
        }
    }

    /// Every resource any of `adopt_by` finds, after a fresh listing. `Err`: a lookup failed.
    async fn matching(
        &self,
        res: Res,
        adopt_by: &[(Attr, String)],
    ) -> Result<Result<Vec<Found>, SendError>, SinkError> {
        self.dir.refresh(res).await?;
        let mut ids: Vec<Found> = Vec::new();
        for (attr, value) in adopt_by {
            match self.dir.find(res, *attr, value).await? {
                Ok(found) => {
                    for f in found {
                        if !ids.iter().any(|i| i.id == f.id) {
                            ids.push(f);
                        }
                    }
                }
                Err(lookup) => return Ok(Err(lookup)),
            }
        }
        Ok(Ok(ids))
    }

    /// A create answered 409 (it exists) or was not confirmed (it may have just been made):
    /// find it by every key it could clash on, and adopt the one match.
    async fn adopt(
        &self,
        res: Res,
        key: &str,
        err: SendError,
        adopt_by: &[(Attr, String)],
        changes_for: &ChangesFor<'_>,
        payload: Option<PayloadHash>,
    ) -> Result<(Done, Option<PayloadHash>), SinkError> {
        let conflict = err.status == Some(409);
        let mut ids = match self.matching(res, adopt_by).await? {
            Ok(ids) => ids,
            Err(lookup) => {
                let mut refusal = Refusal::vendor(
                    format!(
                        "{} answered {} to creating {} {key:?}, and looking for the existing one failed: {}",
                        self.vendor,
                        err.status.map_or("nothing".to_string(), |s| s.to_string()),
                        res.noun(),
                        lookup.message
                    ),
                    err.status,
                    err.body_excerpt,
                );
                // A create and its lookup both failing past the budget is the vendor being
                // down: counted towards "unreachable" like any other exhausted request.
                refusal.transient = err.failure == SendFailure::Exhausted;
                return Ok((Done::Rejected(refusal), payload));
            }
        };
        if ids.len() == 1 {
            let found = ids.remove(0);
            tracing::info!(
                "{}: {} {key:?} exists as {} ({}); adopting it",
                self.vendor,
                res.noun(),
                found.id,
                if conflict {
                    "409"
                } else {
                    "unconfirmed create"
                }
            );
            self.dir
                .remember(res, key, &found.id, found.resource.as_ref())
                .await;
            let (done, update_payload) = self.update(res, key, found, changes_for).await?;
            let done = match done {
                Done::Skipped(_) => Done::Accepted,
                other => other,
            };
            return Ok((done, update_payload.or(payload)));
        }
        if !conflict {
            return Ok((rejected(self.vendor, err)?, payload));
        }
        Ok((self.conflict(res, key, &err, adopt_by, ids.len()), payload))
    }

    /// A 409 that matches no one resource: rejected with the server's `detail`.
    fn conflict(
        &self,
        res: Res,
        key: &str,
        err: &SendError,
        adopt_by: &[(Attr, String)],
        matches: usize,
    ) -> Done {
        let keys: Vec<String> = adopt_by
            .iter()
            .map(|(a, v)| format!("{} {v:?}", a.path()))
            .collect();
        Done::Rejected(Refusal::vendor(
            format!(
                "{} refused to create {} {key:?}: {} ({matches} existing {}s match {}, so none was adopted)",
                self.vendor,
                res.noun(),
                detail_of(err),
                res.noun(),
                keys.join(" or ")
            ),
            err.status,
            err.body_excerpt.clone(),
        ))
    }
}
