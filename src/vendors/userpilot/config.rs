//! Userpilot settings.

use serde::Deserialize;

use crate::config::{Kind, Secret, Setting};

/// Userpilot's own keys.
pub const SETTINGS: &[Setting] = &[Setting::new(
    "api_key",
    Kind::String,
    "Userpilot API key (Settings → Environment; not the app token), sent as `Token <key>`",
)
.secret()
.required()];

/// Typed Userpilot config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The API key.
    pub api_key: Secret,
}
