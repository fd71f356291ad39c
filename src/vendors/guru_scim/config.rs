//! Guru SCIM settings.

use serde::Deserialize;

use crate::config::{ConfigError, Kind, Secret, Setting};
use crate::http::Auth;

/// Guru SCIM's own keys.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "scim_username",
        Kind::String,
        "Guru SCIM username (Settings → Apps & Integrations → SSO/SCIM); leave it out to send scim_token alone as a Bearer token, as Guru's API document describes",
    ),
    Setting::new(
        "scim_token",
        Kind::String,
        "Guru SCIM token (separate from REST tokens); alone it is sent as a Bearer token (Authorization: Bearer TOKEN)",
    )
    .secret()
    .required(),
    Setting::new(
        "auth_scheme",
        Kind::Options(&["basic", "bearer"]),
        "basic: Basic scim_username:scim_token (Okta); bearer: Bearer scim_username:scim_token (OneLogin), or Bearer scim_token when there is no scim_username; unset: basic with a scim_username, bearer without",
    ),
    crate::vendors::scim::config::MEMBERSHIP_CHUNK_SIZE,
];

/// How the SCIM credentials are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// `Authorization: Basic base64(username:token)`.
    Basic,
    /// `Authorization: Bearer username:token`, or `Bearer token` without a username.
    Bearer,
}

/// Typed Guru SCIM config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The SCIM username (absent: the token alone, as a Bearer token).
    #[serde(default)]
    pub scim_username: Option<String>,
    /// The SCIM token.
    pub scim_token: Secret,
    /// How to send them (absent: Basic with a username, Bearer without).
    #[serde(default)]
    pub auth_scheme: Option<AuthScheme>,
    /// Membership changes per PATCH.
    #[serde(default)]
    pub membership_chunk_size: Option<usize>,
}

impl Config {
    /// The `Authorization` the tap and the target send:
    /// - `scim_token` alone (the form Guru's API document describes): `Bearer <token>`;
    /// - with `scim_username`: Basic `username:token` (Okta, Nango; the default), or
    ///   `Bearer username:token` under `auth_scheme: bearer` (OneLogin).
    ///
    /// `auth_scheme: basic` without a `scim_username` is a config error.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        let username = self
            .scim_username
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        match (username, self.auth_scheme) {
            (None, Some(AuthScheme::Basic)) => Err(ConfigError::Invalid {
                key: "scim_username".into(),
                problem: "is required with auth_scheme \"basic\" (leave auth_scheme out, or set it to \"bearer\", to send scim_token alone as a Bearer token)".into(),
            }),
            (None, _) => Ok(Auth::Bearer(self.scim_token.clone())),
            (Some(username), None | Some(AuthScheme::Basic)) => Ok(Auth::Basic {
                username: username.to_string(),
                password: self.scim_token.clone(),
            }),
            (Some(username), Some(AuthScheme::Bearer)) => Ok(Auth::Bearer(Secret::new(format!(
                "{username}:{}",
                self.scim_token.expose()
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Config {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_token_alone_is_a_bearer_token_and_a_username_makes_it_basic() {
        let auth = config(json!({"scim_token": "t0k"})).auth().unwrap();
        assert!(
            matches!(&auth, Auth::Bearer(t) if t.expose() == "t0k"),
            "{auth:?}"
        );
        let auth = config(json!({"scim_token": "t0k", "auth_scheme": "bearer"}))
            .auth()
            .unwrap();
        assert!(
            matches!(&auth, Auth::Bearer(t) if t.expose() == "t0k"),
            "{auth:?}"
        );
        let auth = config(json!({"scim_username": "u", "scim_token": "t0k"}))
            .auth()
            .unwrap();
        assert!(
            matches!(&auth, Auth::Basic { username, password } if username == "u" && password.expose() == "t0k"),
            "{auth:?}"
        );
        let auth =
            config(json!({"scim_username": "u", "scim_token": "t0k", "auth_scheme": "bearer"}))
                .auth()
                .unwrap();
        assert!(
            matches!(&auth, Auth::Bearer(t) if t.expose() == "u:t0k"),
            "{auth:?}"
        );
        let err = config(json!({"scim_token": "t0k", "auth_scheme": "basic"}))
            .auth()
            .unwrap_err()
            .to_string();
        assert!(err.contains("scim_username"), "{err}");
        assert!(!err.contains("t0k"), "{err}");
    }
}
