//! The tap's state: one bookmark per stream, plus the stream being synced.
//!
//! ```json
//! {"bookmarks": {"users": {"next_page": "u_123"}, "groups": {"completed_at": "2026-11-23T10:00:00Z"}},
//!  "currently_syncing": "users"}
//! ```
//! `next_page` is whatever the vendor pages by (a Userflow id, a Guru next-page URL, a SCIM
//! startIndex). A finished stream drops its `next_page` and records `completed_at`.
//!
//! A FULL_TABLE pass carries its `version` (the `ACTIVATE_VERSION` of classic Singer taps) while
//! it is under way, so a resumed pass continues the same version; the pass's end drops it. An
//! INCREMENTAL stream keeps `replication_key` and `replication_key_value` (the highest value of
//! the last finished pass: the next pass reads what changed after it) and, during a pass,
//! `progress_value` (the highest value seen so far, which becomes `replication_key_value` only
//! when the pass finishes: a listing filtered by modification time is not ordered by it, so an
//! interrupted pass must not move the bookmark). While a
//! run is under way `sync_started_at` holds its start, and the run's last STATE sets it back to
//! `null`: a state that still carries it comes from an interrupted run, whose streams completed
//! since that instant need no second read. Unknown keys are kept, so a state written by a newer
//! roster survives a round trip.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The tap's whole state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TapState {
    /// One bookmark per stream.
    #[serde(default)]
    pub bookmarks: BTreeMap<String, Bookmark>,
    /// The stream being synced when the state was written, if any.
    #[serde(default)]
    pub currently_syncing: Option<String>,
    /// When the run that wrote this state started (RFC 3339), while it is under way; `null`
    /// once it finished.
    #[serde(default)]
    pub sync_started_at: Option<String>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where one stream stands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Bookmark {
    /// Where the next page starts. Absent when the stream is not mid-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<Value>,
    /// When the stream last finished a full pass (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The version of the FULL_TABLE pass under way (its RECORDs' `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// INCREMENTAL: the field the bookmark is kept by (`updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_key: Option<String>,
    /// INCREMENTAL: the highest replication key value of the last finished pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_key_value: Option<String>,
    /// INCREMENTAL: the highest replication key value seen so far in the pass under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_value: Option<String>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state is not an object with the expected shape.
    #[error("state is not a roster tap state: {0}")]
    Shape(#[source] serde_json::Error),
}

impl TapState {
    /// Reads a state value leniently: the bare value, or one wrapped the way other tools store
    /// it (`{"type": "STATE", "value": …}`, Meltano's `{"singer_state": …}`). An empty object or
    /// `null` is an empty state.
    pub fn from_value(value: Value) -> Result<Self, StateError> {
        let value = unwrap_state(value);
        if value.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(value).map_err(StateError::Shape)
    }

    /// The bookmark of a stream that is mid-way, if any.
    pub fn resume_point(&self, stream: &str) -> Option<&Value> {
        self.bookmarks.get(stream)?.next_page.as_ref()
    }

    /// Records that `stream` will continue at `next_page`.
    pub fn set_next_page(&mut self, stream: &str, next_page: Value) {
        self.bookmarks
            .entry(stream.to_string())
            .or_default()
            .next_page = Some(next_page);
        self.currently_syncing = Some(stream.to_string());
    }

    /// The bookmark of `stream`, created empty if it has none.
    pub fn bookmark_mut(&mut self, stream: &str) -> &mut Bookmark {
        self.bookmarks.entry(stream.to_string()).or_default()
    }

    /// Records that `stream` finished a full pass at `completed_at`: the pass's version ends and
    /// the highest replication key value seen becomes the bookmark.
    pub fn complete(&mut self, stream: &str, completed_at: String) {
        let bookmark = self.bookmarks.entry(stream.to_string()).or_default();
        bookmark.next_page = None;
        bookmark.completed_at = Some(completed_at);
        bookmark.version = None;
        if let Some(progress) = bookmark.progress_value.take() {
            bookmark.replication_key_value = Some(progress);
        }
        if self.currently_syncing.as_deref() == Some(stream) {
            self.currently_syncing = None;
        }
    }

    /// Starts a run at `now`: a fresh one, or the continuation of the interrupted run this
    /// state comes from (which keeps its start). True when it continues one.
    pub fn begin_run(&mut self, now: DateTime<Utc>) -> bool {
        if self.run_start().is_some() {
            return true;
        }
        self.sync_started_at = Some(timestamp(now));
        false
    }

    /// Marks the run finished: the next run reads every stream again.
    pub fn end_run(&mut self) {
        self.sync_started_at = None;
    }

    /// True when `stream` finished its pass within the interrupted run this state continues.
    pub fn finished_in_this_run(&self, stream: &str) -> bool {
        let (Some(start), Some(bookmark)) = (self.run_start(), self.bookmarks.get(stream)) else {
            return false;
        };
        bookmark.next_page.is_none()
            && bookmark
                .completed_at
                .as_deref()
                .and_then(parse_time)
                .is_some_and(|done| done >= start)
    }

    fn run_start(&self) -> Option<DateTime<Utc>> {
        self.sync_started_at.as_deref().and_then(parse_time)
    }

    /// The state as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Bookmark {
    /// Notes a replication key value seen in the pass under way: kept when it is the highest.
    pub fn note_progress(&mut self, value: &str) {
        if self
            .progress_value
            .as_deref()
            .is_none_or(|best| is_later(value, best))
        {
            self.progress_value = Some(value.to_string());
        }
    }
}

/// True when replication key value `a` comes after `b`: compared as instants when both are
/// RFC 3339 date-times (`…Z` and `…+00:00` and any precision compare right), else as text.
pub fn is_later(a: &str, b: &str) -> bool {
    match (parse_time(a), parse_time(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a > b,
    }
}

/// A state timestamp: RFC 3339 in UTC with milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn unwrap_state(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            if map.len() == 1 && map.contains_key("singer_state") {
                return unwrap_state(map.remove("singer_state").unwrap_or(Value::Null));
            }
            let is_message = map
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("STATE"));
            if is_message && map.contains_key("value") {
                return unwrap_state(map.remove("value").unwrap_or(Value::Null));
            }
            Value::Object(map)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_keeps_unknown_keys() {
        let value = json!({
            "bookmarks": {"users": {"next_page": "u_9", "future": 1}, "groups": {"completed_at": "2026-01-01T00:00:00Z"}},
            "currently_syncing": "users",
            "other": true
        });
        let state = TapState::from_value(value.clone()).unwrap();
        assert_eq!(state.resume_point("users"), Some(&json!("u_9")));
        assert_eq!(state.resume_point("groups"), None);
        let mut expected = value;
        expected["sync_started_at"] = Value::Null;
        assert_eq!(state.to_value(), expected);
    }

    #[test]
    fn accepts_wrapped_and_empty_states() {
        let bare = json!({"bookmarks": {"users": {"next_page": 101}}});
        for wrapped in [
            json!({"type": "STATE", "value": bare}),
            json!({"singer_state": bare}),
            json!({"singer_state": {"type": "STATE", "value": bare}}),
        ] {
            assert_eq!(
                TapState::from_value(wrapped).unwrap().resume_point("users"),
                Some(&json!(101))
            );
        }
        assert_eq!(
            TapState::from_value(json!({})).unwrap(),
            TapState::default()
        );
        assert_eq!(
            TapState::from_value(Value::Null).unwrap(),
            TapState::default()
        );
        assert!(TapState::from_value(json!({"bookmarks": []})).is_err());
    }

    #[test]
    fn a_finished_pass_drops_its_version_and_moves_the_replication_key_value() {
        let mut state = TapState::default();
        let users = state.bookmark_mut("users");
        users.version = Some(7);
        users.replication_key_value = Some("2026-01-01T00:00:00Z".into());
        users.note_progress("2026-03-01T00:00:00.000Z");
        users.note_progress("2026-02-01T00:00:00+00:00");
        users.note_progress("2026-03-01T00:00:00.5Z");
        assert_eq!(
            users.progress_value.as_deref(),
            Some("2026-03-01T00:00:00.5Z")
        );
        // Mid-pass the bookmark stays where the last finished pass left it.
        let mid = TapState::from_value(state.to_value()).unwrap();
        assert_eq!(mid.bookmarks["users"].version, Some(7));
        assert_eq!(
            mid.bookmarks["users"].replication_key_value.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        state.complete("users", "2026-11-23T00:00:00Z".into());
        let users = &state.bookmarks["users"];
        assert_eq!(users.version, None);
        assert_eq!(users.progress_value, None);
        assert_eq!(
            users.replication_key_value.as_deref(),
            Some("2026-03-01T00:00:00.5Z")
        );
        assert!(is_later(
            "2026-01-01T00:00:01+01:00",
            "2025-12-31T22:00:00Z"
        ));
        assert!(!is_later(
            "2026-01-01T00:00:00+01:00",
            "2025-12-31T23:00:00Z"
        ));
    }

    #[test]
    fn completing_a_stream_clears_its_cursor() {
        let mut state = TapState::default();
        state.set_next_page("users", json!("u_1"));
        assert_eq!(state.currently_syncing.as_deref(), Some("users"));
        state.complete("users", "2026-11-23T00:00:00Z".into());
        assert_eq!(state.currently_syncing, None);
        assert_eq!(
            state.to_value(),
            json!({"bookmarks": {"users": {"completed_at": "2026-11-23T00:00:00Z"}}, "currently_syncing": null, "sync_started_at": null})
        );
    }

    #[test]
    fn a_run_under_way_knows_which_streams_it_finished() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // A state from a finished run: every stream is read again.
        let mut state = TapState::from_value(json!({
            "bookmarks": {"users": {"completed_at": "2026-11-23T10:00:00.000Z"}},
            "currently_syncing": null, "sync_started_at": null
        }))
        .unwrap();
        assert!(!state.begin_run(at("2026-11-24T09:00:00Z")));
        assert_eq!(
            state.sync_started_at.as_deref(),
            Some("2026-11-24T09:00:00.000Z")
        );
        assert!(!state.finished_in_this_run("users"));
        state.complete("groups", timestamp(at("2026-11-24T09:00:01Z")));
        state.set_next_page("memberships", json!("g1"));
        // Killed here: the next run continues this one.
        let mut resumed = TapState::from_value(state.to_value()).unwrap();
        assert!(resumed.begin_run(at("2026-11-24T09:05:00Z")));
        assert_eq!(
            resumed.sync_started_at.as_deref(),
            Some("2026-11-24T09:00:00.000Z")
        );
        assert!(resumed.finished_in_this_run("groups"));
        assert!(
            !resumed.finished_in_this_run("users"),
            "finished in an earlier run"
        );
        assert!(!resumed.finished_in_this_run("memberships"), "mid-way");
        assert!(!resumed.finished_in_this_run("unknown"));
        resumed.end_run();
        assert_eq!(resumed.to_value()["sync_started_at"], Value::Null);
        assert!(!resumed.finished_in_this_run("groups"));
    }
}
