//! What the tap reads from Guru SCIM: the generic SCIM reader
//! ([`crate::vendors::scim::streams::ScimSource`]) with Guru's SCIM username and token, sent as
//! Basic (Okta's way, the default) or as `Bearer username:token` (OneLogin's way).

use super::config::{AuthScheme, Config};
use crate::config::Secret;
use crate::http::{Auth, HttpClient};
use crate::vendors::Resolved;
use crate::vendors::scim::streams::ScimSource;
use crate::vendors::source::{Source, SourceError, client_config};

/// Builds the Guru SCIM source (the registry's `source`).
pub fn source(config: &Resolved) -> Result<Box<dyn Source>, SourceError> {
    let typed: Config = config.typed()?;
    let auth = match typed.auth_scheme {
        AuthScheme::Basic => Auth::Basic {
            username: typed.scim_username,
            password: typed.scim_token,
        },
        AuthScheme::Bearer => Auth::Bearer(Secret::new(format!(
            "{}:{}",
            typed.scim_username,
            typed.scim_token.expose()
        ))),
    };
    let client = HttpClient::new(client_config(config, auth)?)?;
    Ok(Box::new(ScimSource::new(client)))
}
