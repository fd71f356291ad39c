//! Guru SCIM settings.

use serde::Deserialize;

use crate::config::{Kind, Secret, Setting};

/// Guru SCIM's own keys.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "scim_username",
        Kind::String,
        "Guru SCIM username (Settings → Apps & Integrations → SSO/SCIM)",
    )
    .required(),
    Setting::new(
        "scim_token",
        Kind::String,
        "Guru SCIM token (separate from REST tokens)",
    )
    .secret()
    .required(),
    Setting::new(
        "auth_scheme",
        Kind::Options(&["basic", "bearer"]),
        "basic: Basic username:token (Okta); bearer: Bearer username:token (OneLogin)",
    )
    .default("\"basic\""),
    crate::vendors::scim::config::MEMBERSHIP_CHUNK_SIZE,
];

/// How the SCIM credentials are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// `Authorization: Basic base64(username:token)`.
    #[default]
    Basic,
    /// `Authorization: Bearer username:token`.
    Bearer,
}

/// Typed Guru SCIM config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The SCIM username.
    pub scim_username: String,
    /// The SCIM token.
    pub scim_token: Secret,
    /// How to send them.
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    /// Membership changes per PATCH.
    #[serde(default)]
    pub membership_chunk_size: Option<usize>,
}
