//! The Guru SCIM writer: the shared SCIM writer ([`crate::vendors::scim::writer`]) with Guru's
//! SCIM username and token, sent as Basic (Okta, Nango; the default) or as Bearer
//! `username:token` (OneLogin), and Guru's base URL (`https://api.getguru.com/api/scim/v2`).

use std::sync::Arc;

use crate::config::Secret;
use crate::vendors::scim::writer::build;
use crate::vendors::sink::{Sink, SinkContext, SinkError, WireAuth};

use super::config::{AuthScheme, Config};

/// Guru documents no rate limit: stay at 10 requests/s, as vendors.md's checklist advises for
/// vendors without figures (the HTTP engine still slows down on 429s).
pub const REQUESTS_PER_SECOND: f64 = 10.0;

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: Config = ctx.config.typed()?;
    build(
        "guru_scim",
        ctx,
        auth(&config),
        Some(REQUESTS_PER_SECOND),
        config.membership_chunk_size,
    )
}

/// How the SCIM credentials go on the wire.
pub fn auth(config: &Config) -> WireAuth {
    match config.auth_scheme {
        AuthScheme::Basic => WireAuth::Basic {
            username: config.scim_username.clone(),
            password: config.scim_token.clone(),
        },
        AuthScheme::Bearer => WireAuth::Bearer(Secret::new(format!(
            "{}:{}",
            config.scim_username,
            config.scim_token.expose()
        ))),
    }
}
