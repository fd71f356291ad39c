//! UserGuiding settings.

use serde::Deserialize;

use crate::config::{Kind, Secret, Setting};

/// UserGuiding's own keys.
pub const SETTINGS: &[Setting] = &[Setting::new(
    "api_key",
    Kind::String,
    "UserGuiding API token (Settings → Integrations → API), sent as a Bearer token",
)
.secret()
.required()];

/// Typed UserGuiding config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The API token.
    pub api_key: Secret,
}
