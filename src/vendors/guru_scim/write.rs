//! The Guru SCIM writer: the shared SCIM writer ([`crate::vendors::scim::write`]) with Guru's
//! SCIM credentials ([`Config::auth`]: `scim_token` alone as a Bearer token, as Guru's API
//! document describes; or a SCIM username and token, sent as Basic (Okta, Nango) or as Bearer
//! `username:token` (OneLogin)), and Guru's base URL (`https://api.getguru.com/api/scim/v2`).

use std::sync::Arc;

use crate::http::Auth;
use crate::sink::{Sink, SinkContext, SinkError};
use crate::vendors::scim::write::build;

use super::config::Config;

/// Guru documents no rate limit: stay at 10 requests/s, as vendors.md's checklist advises for
/// vendors without figures (the HTTP engine still slows down on 429s).
pub const REQUESTS_PER_SECOND: f64 = 10.0;

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: Config = ctx.config.typed()?;
    build(
        "guru_scim",
        ctx,
        auth(&config)?,
        Some(REQUESTS_PER_SECOND),
        config.membership_chunk_size,
    )
}

/// How the SCIM credentials go on the wire (the tap's [`Config::auth`], with the token alone as
/// the reading of an unset scheme).
pub fn auth(config: &Config) -> Result<Auth, SinkError> {
    Ok(match config.auth()? {
        // Never comes out of `Config::auth`; the token alone is the safe reading.
        Auth::None => Auth::Bearer(config.scim_token.clone()),
        auth => auth,
    })
}
