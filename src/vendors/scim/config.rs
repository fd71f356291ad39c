//! Generic SCIM settings: a Bearer token, or a username and password.

use serde::Deserialize;

use crate::config::{Applies, ConfigError, Kind, Secret, Setting};
use crate::http::Auth;

/// SCIM's own keys. `base_url` (a common key) is required for this vendor.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "bearer_token",
        Kind::String,
        "Bearer token of the SCIM service provider",
    )
    .secret(),
    Setting::new(
        "username",
        Kind::String,
        "Basic auth user, with password (instead of bearer_token)",
    ),
    Setting::new(
        "password",
        Kind::String,
        "Basic auth password, with username",
    )
    .secret(),
    MEMBERSHIP_CHUNK_SIZE,
];

/// `membership_chunk_size`, shared with Guru SCIM.
pub const MEMBERSHIP_CHUNK_SIZE: Setting = Setting::new(
    "membership_chunk_size",
    Kind::Integer,
    "Group membership changes per SCIM PATCH (halved when the server answers 400 or 413; 1 for strict servers)",
)
.default("100")
.range(1.0, 10_000.0)
.only(Applies::Target);

/// Typed SCIM config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// A Bearer token.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A Basic user.
    #[serde(default)]
    pub username: Option<String>,
    /// A Basic password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Membership changes per PATCH.
    #[serde(default)]
    pub membership_chunk_size: Option<usize>,
}

impl Config {
    /// Exactly one way to authenticate.
    pub fn credentials(&self) -> Result<Auth, ConfigError> {
        match (&self.bearer_token, &self.username, &self.password) {
            (Some(token), None, None) => Ok(Auth::Bearer(token.clone())),
            (None, Some(username), Some(password)) => Ok(Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            (None, None, None) => Err(ConfigError::Missing {
                vendor: "scim".into(),
                missing: vec!["bearer_token (or username and password)".into()],
            }),
            _ => Err(ConfigError::Invalid {
                key: "bearer_token".into(),
                problem: "give either bearer_token, or username and password, not a mix".into(),
            }),
        }
    }
}
