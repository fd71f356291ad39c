//! Updating a SCIM resource that exists: only what differs from the server's copy is sent
//! (`PATCH`), or, on servers without PATCH, the whole resource read, merged and `PUT` back with
//! `If-Match` when the server has ETags, read and merged again after a `412`. A resource that
//! disappeared meanwhile is forgotten and its record rejected, so a replay creates it.

use serde_json::{Map, Value};

use crate::scim::patch::{self, Operation};
use crate::sink::{Method, PayloadHash, Refusal, SinkError, key_segment};
use crate::vendors::patterns::{self, Attempt};

use super::directory::{Found, Res};
use super::members::version_of;
use super::wire::{self, Change};
use super::write::{Done, ScimSink, rejected, with_body};

impl ScimSink {
    /// Brings a found resource in line with `changes` (computed against its current state).
    /// Looked-up resources come with their state; mapped or indexed ones are read first when
    /// the changes depend on it (`emails`) or the server lacks PATCH.
    pub(super) async fn update<F>(
        &self,
        res: Res,
        key: &str,
        found: Found,
        changes_for: F,
    ) -> Result<(Done, Option<PayloadHash>), SinkError>
    where
        F: Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync,
    {
        let patch_ok = self.spc().await.patch;
        if !patch_ok {
            return self.put_merged(res, key, &found.id, &changes_for).await;
        }
        let mut current = found.resource;
        if current.is_none()
            && changes_for(None)
                .iter()
                .any(|c| c.path.patch_path() == "emails")
        {
            match self.read(res, &found.id).await? {
                Ok(Some((resource, false))) => current = Some(resource),
                Ok(Some((_, true))) => {}
                Ok(None) => return self.gone(res, key, &found.id).await,
                Err(err) => return Ok((rejected(self.vendor, err)?, None)),
            }
        }
        let changes = changes_for(current.as_ref());
        let todo: Vec<&Change> = match &current {
            Some(resource) => wire::pending(&changes, resource),
            None => changes.iter().collect(),
        };
        if todo.is_empty() {
            return Ok((Done::Skipped(format!("unchanged at {}", self.vendor)), None));
        }
        let operations: Vec<Operation> = todo
            .iter()
            .map(|c| match &c.value {
                Some(value) => Operation::replace(c.path.patch_path(), value.clone()),
                None => Operation::remove(c.path.patch_path()),
            })
            .collect();
        let request = with_body(
            Method::Patch,
            format!("{}/{}", res.endpoint(), key_segment(&found.id)),
            patch::body(&operations),
        )
        // Replacing values with the same values again changes nothing.
        .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => {
                if let Some(resource) = &current {
                    let merged = wire::merged(resource, &todo);
                    self.dir
                        .remember(res, key, &found.id, merged.as_object())
                        .await;
                }
                Ok((Done::Accepted, payload))
            }
            Err(err) if err.status == Some(404) => self.gone(res, key, &found.id).await,
            Err(err) => Ok((rejected(self.vendor, err)?, payload)),
        }
    }

    /// A mapped resource answered 404: forget it; the record is rejected so a replay creates it.
    pub(super) async fn gone(
        &self,
        res: Res,
        key: &str,
        id: &str,
    ) -> Result<(Done, Option<PayloadHash>), SinkError> {
        self.dir.forget(res, key, id).await;
        Ok((
            Done::Rejected(Refusal::vendor(
                format!(
                    "{} {} {id} (key {key:?}) disappeared from {} while roster was writing it; replay the record to create it again",
                    res.noun(),
                    id,
                    self.vendor
                ),
                Some(404),
                None,
            )),
            None,
        ))
    }

    /// GET, merge, PUT the whole resource (servers without PATCH), with `If-Match` when the
    /// server has ETags, and once more after a 412.
    async fn put_merged<F>(
        &self,
        res: Res,
        key: &str,
        id: &str,
        changes_for: &F,
    ) -> Result<(Done, Option<PayloadHash>), SinkError>
    where
        F: Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync,
    {
        patterns::reread_on_412(
            || self.put_merged_once(res, key, id, changes_for),
            |err, payload| Ok((rejected(self.vendor, err)?, payload)),
        )
        .await
    }

    /// One GET, merge and PUT of a resource.
    async fn put_merged_once<F>(
        &self,
        res: Res,
        key: &str,
        id: &str,
        changes_for: &F,
    ) -> Result<Attempt<(Done, Option<PayloadHash>)>, SinkError>
    where
        F: Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync,
    {
        let etag = self.spc().await.etag;
        let (resource, dry_run) = match self.read(res, id).await? {
            Ok(Some(read)) => read,
            Ok(None) => return self.gone(res, key, id).await.map(Attempt::Done),
            Err(err) => return Ok(Attempt::Done((rejected(self.vendor, err)?, None))),
        };
        let changes = changes_for((!dry_run).then_some(&resource));
        let todo: Vec<&Change> = if dry_run {
            changes.iter().collect()
        } else {
            wire::pending(&changes, &resource)
        };
        if todo.is_empty() {
            let unchanged = Done::Skipped(format!("unchanged at {}", self.vendor));
            return Ok(Attempt::Done((unchanged, None)));
        }
        let body = wire::merged(&resource, &todo);
        let mut request = with_body(
            Method::Put,
            format!("{}/{}", res.endpoint(), key_segment(id)),
            body.clone(),
        );
        if etag && let Some(version) = version_of(&resource) {
            request = request.header("if-match", version);
        }
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => {
                self.dir.remember(res, key, id, body.as_object()).await;
                Ok(Attempt::Done((Done::Accepted, payload)))
            }
            // Someone changed it between our read and our write: read and merge again.
            Err(err) if patterns::stale(&err) => Ok(Attempt::Stale(err, payload)),
            Err(err) if err.status == Some(404) => self.gone(res, key, id).await.map(Attempt::Done),
            Err(err) => Ok(Attempt::Done((rejected(self.vendor, err)?, payload))),
        }
    }
}
