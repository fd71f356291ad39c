//! Userflow settings.

use serde::Deserialize;

use crate::config::{Kind, Secret, Setting};

/// Userflow's own keys.
pub const SETTINGS: &[Setting] = &[Setting::new(
    "api_key",
    Kind::String,
    "Userflow API key of the environment (Settings → API), sent as a Bearer token",
)
.secret()
.required()];

/// Typed Userflow config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The API key.
    pub api_key: Secret,
}
