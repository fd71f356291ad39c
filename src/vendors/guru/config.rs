//! Guru REST settings.

use serde::Deserialize;

use crate::config::{Applies, Kind, Secret, Setting};

/// Guru's own keys.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "username",
        Kind::String,
        "The Guru admin's email (Basic auth user)",
    )
    .required(),
    Setting::new(
        "api_token",
        Kind::String,
        "The admin's Guru user token (Settings → API Access)",
    )
    .secret()
    .required(),
    Setting::new(
        "team_member_type",
        Kind::Options(&["core", "light"]),
        "Invite new members as core or light (read-only) users when the record has no role; unset: Guru's default",
    )
    .only(Applies::Target),
    Setting::new(
        "inactive_users",
        Kind::Options(&["remove", "ignore"]),
        "A users record that is inactive (active false, or a status such as INACTIVE, deactivated, suspended) is never invited; remove: remove them from the Guru team when they are a member; ignore: leave Guru as it is",
    )
    .default("\"remove\"")
    .only(Applies::Target),
    Setting::new(
        "replace_verifier",
        Kind::Object,
        "When a member is removed, re-assign the cards they verify: collection id → the new verifier's email, or {\"type\": \"member\" or \"user-group\", \"id\": ...} (Guru's replaceverifier); unset: remove without re-assigning",
    )
    .only(Applies::Target),
    Setting::new(
        "group_map_file",
        Kind::Path,
        "A JSON file roster keeps of which Guru group each source group key is, so a group renamed at the source is renamed in Guru rather than created again in a later run; unset: kept for the run only",
    )
    .only(Applies::Target),
];

/// What happens to a users record that is inactive at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InactiveUsers {
    /// Remove them from the team when they are a member (the default: the source says they
    /// should not have access, and a Guru seat is paid).
    #[default]
    Remove,
    /// Leave Guru alone: never invite them, never remove them.
    Ignore,
}

/// Guru's two kinds of team member (`teamMemberType` of an invite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamMemberType {
    /// A full (core) user.
    Core,
    /// A light user: read-only, cannot be in groups.
    Light,
}

impl TeamMemberType {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TeamMemberType::Core => "core",
            TeamMemberType::Light => "light",
        }
    }
}

/// Typed Guru config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The admin's email.
    pub username: String,
    /// The user token.
    pub api_token: Secret,
    /// How new members are invited.
    #[serde(default)]
    pub team_member_type: Option<TeamMemberType>,
    /// What an inactive users record does.
    #[serde(default)]
    pub inactive_users: InactiveUsers,
    /// Collection id → new verifier, for removals.
    #[serde(default)]
    pub replace_verifier: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where the group map is kept.
    #[serde(default)]
    pub group_map_file: Option<std::path::PathBuf>,
}
