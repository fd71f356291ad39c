//! Guru REST settings.

use serde::Deserialize;

use crate::config::{Kind, Secret, Setting};

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
];

/// Typed Guru config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The admin's email.
    pub username: String,
    /// The user token.
    pub api_token: Secret,
}
