//! What the tap reads from Guru SCIM: the generic SCIM reader
//! ([`crate::vendors::scim::read::ScimSource`]) with Guru's SCIM credentials
//! ([`Config::auth`]: the token alone as a Bearer token, or a username and token as Basic or
//! `Bearer username:token`).

use super::config::Config;
use crate::config::Resolved;
use crate::http::{ClientConfig, ClientSpec, HttpClient};
use crate::vendors::scim::read::ScimSource;
use crate::vendors::source::{Source, SourceError};

/// Builds the Guru SCIM source (the registry's `source`).
pub fn source(config: &Resolved) -> Result<Box<dyn Source>, SourceError> {
    let typed: Config = config.typed()?;
    let auth = typed.auth()?;
    // Each listing reads one page at a time: no initial burst for a cautious start to soften.
    let client = HttpClient::new(
        ClientConfig::for_vendor(config, ClientSpec::new(auth))?.without_cautious_start(),
    )?;
    Ok(Box::new(ScimSource::new(client)))
}
