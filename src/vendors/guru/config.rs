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
        "Invite new members as core or light (read-only) users; unset: Guru's default",
    )
    .only(Applies::Target),
];

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
}
