//! The Guru REST writer's team members: invites in batches (a status per email), the member
//! type set by upgrade or downgrade, and removals from the team (`DELETE /members/{email}`, or
//! `/replaceverifier` so their cards keep a verifier). See [`super::write`] for the rules.

use std::collections::HashSet;

use serde_json::json;

use crate::sink::{
    Acks, Method, Op, PayloadHash, Refusal, SinkError, WireRequest, WireResponse, key_segment,
};
use crate::vendors::patterns::{self, Deleted, reject_all};

use super::config::{InactiveUsers, TeamMemberType};
use super::wire::{self, InviteStatus};
use super::write::{ALREADY_ON_TEAM, GuruSink, VENDOR, user_email};

/// The emails of an invite batch: each distinct one once (in order), and each record's.
struct Invitees {
    wanted: Vec<String>,
    of_record: Vec<(usize, String)>,
}

impl GuruSink {
    /// Invites a batch of users records.
    pub(super) async fn invite(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let invitees = invitees(batch, acks);
        if invitees.wanted.is_empty() {
            return Ok(());
        }
        // Every email was checked to be one address, so joining them cannot add anyone.
        let mut body = json!({"emails": invitees.wanted.join(",")});
        // One partition per member type, so the first record's is the batch's.
        let member_type = batch.first().and_then(|op| self.invite_type(&op.item));
        if let Some(t) = member_type {
            body["teamMemberType"] = json!(t.as_str().to_ascii_uppercase());
        }
        // Idempotent in effect: whoever an earlier attempt reached is "already a part of the
        // team" on the next, which counts as invited.
        let request = WireRequest::new(Method::Post, "/members/invite")
            .json(body)
            .idempotent();
        let payload = request.payload_hash();
        let response = match self.transport.send(request).await {
            Ok(response) => response,
            Err(err) => {
                let refusal = patterns::refusal(VENDOR, err)?;
                let ops = invitees.of_record.iter().map(|(i, _)| &batch[*i]);
                reject_all(ops, &refusal, payload, acks);
                return Ok(());
            }
        };
        let statuses = wire::invite_statuses(&response.json());
        for (i, email) in &invitees.of_record {
            let status = statuses
                .iter()
                .find(|s| s.email.eq_ignore_ascii_case(email));
            self.invited(&batch[*i], email, status, &response, payload, acks)
                .await?;
        }
        Ok(())
    }

    /// Settles one invited record by its email's status in the invite's answer.
    async fn invited(
        &self,
        op: &Op,
        email: &str,
        status: Option<&InviteStatus>,
        response: &WireResponse,
        payload: Option<PayloadHash>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        match status {
            Some(InviteStatus { error: None, .. }) => acks.accepted(op, payload),
            Some(InviteStatus {
                error: Some(error), ..
            }) if error.to_ascii_lowercase().contains(ALREADY_ON_TEAM) => {
                // A member already: bring their type in line with the record's role.
                match self.record_member_type(&op.item) {
                    Some(t) => self.set_member_type(op, email, t, acks).await?,
                    None => acks.accepted(op, payload),
                }
            }
            Some(InviteStatus {
                error: Some(error), ..
            }) => acks.rejected(
                op,
                Refusal::vendor(
                    format!("guru did not invite {email}: {error}"),
                    Some(response.status),
                    Some(error.clone()),
                ),
                payload,
            ),
            None if response.dry_run => acks.accepted(op, payload),
            None => acks.rejected(
                op,
                Refusal::vendor(
                    format!("guru's invite answer has no status for {email}"),
                    Some(response.status),
                    Some(
                        String::from_utf8_lossy(&response.body)
                            .chars()
                            .take(500)
                            .collect(),
                    ),
                ),
                payload,
            ),
        }
        Ok(())
    }

    /// Makes an existing member core or light (`POST /members/{email}/upgrade` or `/downgrade`,
    /// Guru's only team-level role change; the vendor's API document's `PUT /members/{id}
    /// {"role"}` is not in Guru's API).
    async fn set_member_type(
        &self,
        op: &Op,
        email: &str,
        member_type: TeamMemberType,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let call = match member_type {
            TeamMemberType::Core => "upgrade",
            TeamMemberType::Light => "downgrade",
        };
        let request = WireRequest::new(
            Method::Post,
            format!("/members/{}/{call}", key_segment(email)),
        )
        .json(json!({}))
        // Making a core member core again changes nothing.
        .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => acks.accepted(op, payload),
            Err(err) => {
                let refusal = patterns::refusal(VENDOR, err)?;
                let refusal = Refusal {
                    reason: format!(
                        "{email} is on the guru team, but making them a {} member failed: {}",
                        member_type.as_str(),
                        refusal.reason
                    ),
                    ..refusal
                };
                acks.rejected(op, refusal, payload);
            }
        }
        Ok(())
    }

    /// The email a users delete (or an inactive users record) removes.
    fn email_to_remove(&self, op: &Op) -> Result<Option<String>, Refusal> {
        if let Some(email) = user_email(&op.item)? {
            return Ok(Some(email));
        }
        match op.item.id.as_deref() {
            Some(id) => self.member_email(id),
            None => Ok(None),
        }
    }

    /// A users record that is inactive at the source: never invited; removed from the team
    /// when Guru has them (`inactive_users: remove`), else left alone.
    pub(super) async fn inactive_user(
        &self,
        op: &Op,
        why: &str,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        if self.inactive_users == InactiveUsers::Ignore {
            acks.skipped(
                op,
                format!("inactive at the source ({why}): not invited, and guru is left as it is (inactive_users: ignore)"),
            );
            return Ok(());
        }
        self.remove_member(op, Some(why), acks).await
    }

    /// Removes a member from the team (`DELETE /members/{email}`, or with `replace_verifier`
    /// `DELETE /members/{email}/replaceverifier` so their cards keep a verifier). `inactive`
    /// says why an upsert removes them.
    pub(super) async fn remove_member(
        &self,
        op: &Op,
        inactive: Option<&str>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let email = match self.email_to_remove(op) {
            Ok(Some(email)) => email,
            Ok(None) => {
                acks.rejected(
                    op,
                    Refusal::new("a guru member is removed by email, and this record has none"),
                    None,
                );
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let request = match &self.replace_verifier {
            None => WireRequest::new(Method::Delete, format!("/members/{}", key_segment(&email))),
            Some(body) => WireRequest::new(
                Method::Delete,
                format!("/members/{}/replaceverifier", key_segment(&email)),
            )
            .json(body.clone()),
        };
        let absent = || match inactive {
            Some(why) => format!(
                "inactive at the source ({why}): not invited, and {email} is not on the guru team"
            ),
            None => format!("{email} is not on the guru team"),
        };
        let _: Deleted =
            patterns::delete(VENDOR, self.transport.as_ref(), op, request, acks, absent).await?;
        Ok(())
    }
}

/// The emails of an invite batch; records without one (or with one that is not one address)
/// are rejected here.
fn invitees(batch: &[Op], acks: &Acks) -> Invitees {
    let mut wanted: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut of_record: Vec<(usize, String)> = Vec::new();
    for (i, op) in batch.iter().enumerate() {
        match user_email(&op.item) {
            Ok(Some(email)) => {
                if seen.insert(email.to_lowercase()) {
                    wanted.push(email.clone());
                }
                of_record.push((i, email));
            }
            Ok(None) => acks.rejected(op, Refusal::new("a guru member needs an email"), None),
            Err(refusal) => acks.rejected(op, refusal, None),
        }
    }
    Invitees { wanted, of_record }
}
